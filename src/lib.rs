//! fallback-config: keep a gateway fleet serving through a control-plane
//! outage.
//!
//! The crate is split in two. Everything outside `shell` is a sans-IO
//! core: it never reads a clock, the network or shared memory. The shell
//! (compiled only for `wasm32`) turns proxy-wasm callbacks into calls on
//! the [`controller::Controller`] (`tick(now)`, `on_response(token, ..)`)
//! and carries out the [`controller::Action`]s it returns: dispatch an
//! HTTP call, publish a config to shared data, log a line. Request
//! handling reads the published config through [`worker::WorkerCache`].

pub mod controller;
pub mod driver;
pub mod election;
pub mod envelope;
pub mod gateway;
pub mod http;
pub mod published;
pub mod secret;
pub mod settings;
pub mod sigv4;
pub mod storage;
pub mod time;
pub mod worker;

#[cfg(target_arch = "wasm32")]
mod shell;
