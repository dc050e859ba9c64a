//! fallback-config: keep a gateway fleet serving through a control-plane
//! outage.
//!
//! The crate is split in two. Everything outside `shell` is a sans-IO
//! core: it never reads a clock, the network or shared memory; time and
//! randomness are inputs. The shell (compiled only for `wasm32`) turns
//! proxy-wasm callbacks into calls on the core and carries out what the
//! core returns.
//!
//! # Control flow
//!
//! ```text
//!  host callback ──▶ shell ──handle_*(raw time)──▶ root::Root ── clock::Clock: one monotonic Now
//!                                                    │
//!          ┌─────────────────────────────────────────┤
//!          ▼                                         ▼
//!  process::Coordinator                       controller::Controller  (only while driving)
//!   driver record in shared data:              router + token table
//!   lease, generations, CP-answered,           ├─ cp::CpPoller      GET /v1/config
//!   import attempts; publish protocol          ├─ importer::Importer one import per process
//!          │  SharedOp (read / CAS write)      ├─ exporter::Exporter fenced config.json writes
//!          │                                   ├─ election::Election lease object in the store
//!          │                                   └─ store credentials  (GCS access token)
//!          ▼                                         │ Call (dispatch) / Publish / RequestImport
//!  root::Action ◀────────────────────────────────────┘
//!     │ Shared / Send / Metric                    event::Event ──▶ log lines
//!     ▼
//!  shell: hostcalls        worker::WorkerCache (per request: counter, record once per generation)
//! ```
//!
//! - Every decision is in the core: which root drives (leases in shared
//!   data, [`process`]), what to poll, import, export and publish
//!   ([`controller`]), who writes the store ([`election`]), what a request
//!   gets ([`worker`]).
//! - Outputs are pulled: [`root::Root::poll_action`] and
//!   [`root::Root::poll_event`]; inputs carry the host's time, from which
//!   [`clock::Clock`] derives the one monotonic clock every timer uses.
//! - [`event::Event`] is typed: tests assert on events, the shell logs
//!   their `Display`.

pub mod action;
pub mod clock;
pub mod controller;
pub mod election;
pub mod envelope;
pub mod event;
pub mod gateway;
pub mod http;
pub mod json;
pub mod keys;
pub mod process;
pub mod published;
mod radix;
pub mod rng;
pub mod role;
pub mod root;
mod route_index;
pub mod route_table;
pub mod secret;
pub mod settings;
pub mod sigv4;
mod sort;
pub mod status;
pub mod storage;
pub mod time;
pub mod version;
pub mod worker;

#[cfg(target_arch = "wasm32")]
mod shell;
