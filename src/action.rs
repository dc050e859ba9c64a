//! What the core asks of the host, besides logging: the leaf vocabulary
//! shared by the state machines, the router and the shell.

use crate::http::HttpRequest;

/// Identifies an outbound call between the core and the shell.
pub type Token = u64;

/// What a call is for. The router keeps it per token; tests and the
/// simulator classify requests by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    CpPoll,
    Import,
    /// The exporter reading `config.json` before it writes.
    ExportRead,
    ExportWrite,
    LeaseRead,
    LeaseWrite,
    /// An access token for the store.
    Credential,
}

impl CallKind {
    /// Whether the call goes to the object store (counted in
    /// `storage_requests_total`).
    pub fn is_storage(self) -> bool {
        !matches!(self, CallKind::CpPoll | CallKind::Credential)
    }
}

/// A call to dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub token: Token,
    pub kind: CallKind,
    pub request: HttpRequest,
}

/// Observable counters and gauges (Envoy: in its stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A `config.json` write succeeded (counter).
    ExportWritten,
    /// A request to the store was sent (counter).
    StorageRequest,
    /// This node leads in `Some(term)`, or does not (gauges).
    Leader(Option<u64>),
    /// Where the applied config came from: 0 none, 1 CP, 2 storage.
    ConfigSource(u64),
    /// How old the applied config is, in seconds.
    ConfigAge(u64),
    /// An import attempt went out (counter).
    ImportAttempt,
    /// An import attempt applied nothing (counter).
    ImportFailure,
    /// 1 while the CP answers, 0 while it does not.
    CpReachable(bool),
}
