//! Host calls that cannot panic.

use crate::controller::{Level, Metric};
use crate::http::{HttpRequest, HttpResponse};
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

/// The host's wall clock; the epoch if the host cannot tell (then timers
/// simply fire late, nothing breaks).
pub fn now() -> Timestamp {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(Timestamp(0), |d| {
            Timestamp(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        })
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

/// A shared-data value and its CAS.
pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    hostcalls::set_shared_data(key, Some(value), cas)
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
/// arrive as a status (Envoy: 503 connect error, 504 timeout); a missing
/// `:status` is reported as 0.
pub fn call_response(body_size: usize) -> HttpResponse {
    // The byte variant: the text one panics on a non-UTF-8 value.
    let all: Vec<(String, String)> = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let status = all
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
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

/// A request header as text (lossy: the text hostcall panics on non-UTF-8).
pub fn request_header(name: &str) -> String {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
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

/// The filter's metrics (Envoy shows them in its stats).
pub struct Metrics {
    exports: Option<u32>,
    storage_requests: Option<u32>,
    is_leader: Option<u32>,
    leader_term: Option<u32>,
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
        };
    }

    fn increment(&self, id: Option<u32>) -> Result<(), Status> {
        id.map_or(Ok(()), |id| hostcalls::increment_metric(id, 1))
    }

    fn set(&self, id: Option<u32>, value: u64) -> Result<(), Status> {
        id.map_or(Ok(()), |id| hostcalls::record_metric(id, value))
    }
}
