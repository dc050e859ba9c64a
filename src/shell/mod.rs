//! The proxy-wasm shell: the only code that calls the host.
//!
//! It turns host callbacks into calls on the sans-IO core and carries out
//! what the core returns; it decides nothing:
//! - [`root`]: one root context per VM thread; every callback goes to
//!   [`crate::root::Root`] with the host's time, and its actions become
//!   shared-data calls, dispatched calls and metrics.
//! - [`filter`]: per request, reads what [`crate::worker::WorkerCache`]
//!   asks for and applies its verdict.
//! - [`host`]: `Result`-returning wrappers over `proxy_wasm::hostcalls`
//!   and WASI (the SDK's convenience methods panic on unexpected host
//!   statuses).

mod filter;
mod host;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::RootShell::new(context_id))
    });
}}
