//! Host calls that cannot panic (the SDK's convenience methods panic on
//! unexpected host statuses), each mapped to and from the core's types.

use crate::action::Metric;
use crate::clock::HostTime;
use crate::event::{Event, Level};
use crate::http::{HttpRequest, HttpResponse};
use crate::process::{SharedOp, SharedValue, WriteResult};
use crate::time::Timestamp;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};
use std::time::UNIX_EPOCH;

pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    // Nowhere to report a failing log call.
    let _ = hostcalls::log(level, message);
}

pub fn log_event(event: &Event) {
    log(event.level(), &event.to_string());
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI `clock_time_get`; Envoy answers the monotonic id (1) with its
    /// steady clock, shared by every thread of the process.
    fn clock_time_get(id: u32, precision: u64, time: *mut u64) -> i32;
    /// WASI `random_get`: Envoy fills it from its random generator.
    fn random_get(buf: *mut u8, len: usize) -> i32;
}

const WASI_CLOCK_MONOTONIC: u32 = 1;

/// What the host says the time is: its monotonic clock (if it answers)
/// and its wall clock (the epoch if it cannot tell).
pub fn time() -> HostTime {
    let mut ns: u64 = 0;
    // SAFETY: `ns` is a valid, writable u64 for the duration of the call.
    let status = unsafe { clock_time_get(WASI_CLOCK_MONOTONIC, 1, &mut ns) };
    let wall = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(Timestamp(0), |d| {
            Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
    HostTime {
        monotonic_ns: wasi_result(status).ok().map(|()| ns),
        wall,
    }
}

/// A WASI errno as a `Result` (0 is success).
fn wasi_result(errno: i32) -> Result<(), i32> {
    (errno == 0).then_some(()).ok_or(errno)
}

/// 64 random bits from the host, mixed with the wall clock and a counter
/// if the host refuses (ids then stay unique enough within a process).
pub fn random(salt: u32) -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is valid and writable for its 8 bytes.
    let status = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
    wasi_result(status)
        .map(|()| u64::from_le_bytes(buf))
        .unwrap_or_else(|_| time().wall.as_millis() ^ (u64::from(salt) << 40))
}

/// 32 bytes of the host's randomness, the seed of encryption nonces;
/// `None` if the host refuses (then the core encrypts nothing).
pub fn random_seed() -> Option<[u8; 32]> {
    let mut buf = [0u8; 32];
    // SAFETY: `buf` is valid and writable for its 32 bytes.
    let status = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
    wasi_result(status).ok().map(|()| buf)
}

pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A host property as UTF-8 text (`["node", "id"]`).
pub fn property(path: Vec<&str>) -> Option<String> {
    let bytes = hostcalls::get_property(path).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

pub fn shared_get(key: &str) -> SharedValue {
    let (bytes, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
    SharedValue { bytes, cas }
}

/// Carries out a shared-data write.
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> WriteResult {
    match hostcalls::set_shared_data(key, Some(value), cas) {
        Ok(()) => WriteResult::Done,
        Err(Status::CasMismatch) => WriteResult::CasMismatch,
        Err(status) => WriteResult::Refused(format!("{status:?}")),
    }
}

/// A shared-data call the core asked for, with its answer.
pub enum SharedAnswer {
    Read(SharedValue),
    Write(WriteResult),
}

pub fn shared(op: &SharedOp) -> SharedAnswer {
    match op {
        SharedOp::Read { key } => SharedAnswer::Read(shared_get(key)),
        SharedOp::Write { key, value, cas } => SharedAnswer::Write(shared_set(key, value, *cas)),
    }
}

/// Dispatches a call; the answer arrives in `on_http_call_response` with
/// the returned token.
pub fn dispatch(request: &HttpRequest) -> Result<u32, Status> {
    let length = request.body.as_ref().map(|b| b.len().to_string());
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", &request.method),
        (":path", &request.path),
        (":authority", &request.authority),
    ];
    headers.extend(
        request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if let Some(length) = &length {
        headers.push(("content-length", length));
    }
    hostcalls::dispatch_http_call(
        &request.cluster,
        headers,
        request.body.as_deref(),
        Vec::new(),
        request.timeout,
    )
}

/// The answer of the call whose callback is running. Transport failures
/// arrive as a status (Envoy: 503 connect error or a reset before the
/// headers, 504 timeout before the headers); an answer without `:status`
/// (Envoy reports a failure with no headers: the connection broke or
/// timed out after the headers, or the body exceeded the async client's
/// buffer) becomes [`HttpResponse::reset`] with the host's message
/// (`proxy_get_status`; its code stays at the last failure's, so only the
/// message is read).
pub fn call_response(body_size: usize) -> HttpResponse {
    // The byte variant: the text one panics on a non-UTF-8 value.
    let all: Vec<(String, String)> = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let Some(status) = all
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse().ok())
    else {
        let reason = hostcalls::get_grpc_status()
            .ok()
            .and_then(|(_, message)| message)
            .unwrap_or_else(|| "no status".to_string());
        return HttpResponse::reset(&reason);
    };
    let headers = all
        .into_iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .collect();
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// A request header as text: the host's copy itself when it is UTF-8
/// (as it nearly always is), else a lossy one (the text hostcall panics on
/// non-UTF-8).
pub fn request_header(name: &str) -> String {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|v| {
            String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
        .unwrap_or_default()
}

pub fn set_request_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
}

pub fn send_local_reply(status: u32, body: &str) -> Result<(), Status> {
    hostcalls::send_http_response(
        status,
        vec![("content-type", "application/json")],
        Some(body.as_bytes()),
    )
}

pub fn set_tick_period(period: std::time::Duration) -> Result<(), Status> {
    hostcalls::set_tick_period(period)
}

/// The filter's metrics (Envoy shows them in its stats).
pub struct Metrics {
    exports: Option<u32>,
    storage_requests: Option<u32>,
    is_leader: Option<u32>,
    leader_term: Option<u32>,
    config_source: Option<u32>,
    config_age: Option<u32>,
    import_attempts: Option<u32>,
    import_failures: Option<u32>,
    cp_reachable: Option<u32>,
}

impl Metrics {
    pub fn define() -> Metrics {
        let define = |t, name: &str| hostcalls::define_metric(t, name).ok();
        Metrics {
            exports: define(MetricType::Counter, "fallback_config.exports_total"),
            storage_requests: define(
                MetricType::Counter,
                "fallback_config.storage_requests_total",
            ),
            is_leader: define(MetricType::Gauge, "fallback_config.is_leader"),
            leader_term: define(MetricType::Gauge, "fallback_config.leader_term"),
            config_source: define(MetricType::Gauge, "fallback_config.config_source"),
            config_age: define(MetricType::Gauge, "fallback_config.config_age_seconds"),
            import_attempts: define(MetricType::Counter, "fallback_config.import_attempts_total"),
            import_failures: define(MetricType::Counter, "fallback_config.import_failures_total"),
            cp_reachable: define(MetricType::Gauge, "fallback_config.cp_reachable"),
        }
    }

    pub fn record(&self, metric: Metric) {
        // Metrics are best effort: a failing host call changes nothing else.
        let _ = match metric {
            Metric::ExportWritten => self.increment(self.exports),
            Metric::StorageRequest => self.increment(self.storage_requests),
            Metric::Leader(term) => {
                let _ = self.set(self.is_leader, u64::from(term.is_some()));
                self.set(self.leader_term, term.unwrap_or(0))
            }
            Metric::ConfigSource(n) => self.set(self.config_source, n),
            Metric::ConfigAge(s) => self.set(self.config_age, s),
            Metric::ImportAttempt => self.increment(self.import_attempts),
            Metric::ImportFailure => self.increment(self.import_failures),
            Metric::CpReachable(up) => self.set(self.cp_reachable, u64::from(up)),
        };
    }

    fn increment(&self, id: Option<u32>) -> Result<(), Status> {
        id.map_or(Ok(()), |id| hostcalls::increment_metric(id, 1))
    }

    fn set(&self, id: Option<u32>, value: u64) -> Result<(), Status> {
        id.map_or(Ok(()), |id| hostcalls::record_metric(id, value))
    }
}
