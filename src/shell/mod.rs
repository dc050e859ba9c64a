//! The proxy-wasm shell: the only code that calls the host.
//!
//! It turns host callbacks into calls on the sans-IO core and carries out
//! what the core returns. No decisions live here:
//! - [`root`]: one root context per VM thread. On every tick it asks
//!   [`crate::driver`] whether it drives this process; the driver runs the
//!   [`crate::controller::Controller`] and executes its actions.
//! - [`filter`]: per request, refreshes the worker's parsed config when the
//!   published generation changed and applies the [`crate::worker`] verdict.
//! - [`host`]: `Result`-returning wrappers over `proxy_wasm::hostcalls`
//!   (the SDK's convenience methods panic on unexpected host statuses).

mod filter;
mod host;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
