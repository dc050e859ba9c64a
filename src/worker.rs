//! The request path: a per-worker cache of the parsed config and the
//! routing verdict for one request.
//!
//! The cache is keyed by the published generation: the shell reads the
//! small generation counter on each request and hands the full record to
//! [`WorkerCache::refresh`] only when it changed, so a worker parses each
//! revision once.

use crate::gateway::{GatewayConfig, RequestInfo};
use crate::published;
use std::fmt;

/// Body of the 503 sent while no config is available.
pub const NO_CONFIG_BODY: &str = r#"{"message": "no configuration available"}"#;
/// Body of the 404 sent when no route matches.
pub const NO_ROUTE_BODY: &str = r#"{"message": "no Route matched with those values"}"#;

/// Body of the 500 sent when the chosen upstream cannot be set on the
/// request (the request must not continue with a client-chosen upstream).
pub const INTERNAL_ERROR_BODY: &str = r#"{"message": "An unexpected error occurred"}"#;

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Set the upstream header to this cluster and continue.
    Forward { upstream: &'a str },
    /// Answer locally.
    Reply { status: u32, body: &'static str },
}

/// Why a published record could not be loaded.
#[derive(Debug)]
pub enum RefreshError {
    Record(published::MalformedRecord),
    Config(crate::gateway::GatewayConfigError),
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefreshError::Record(e) => e.fmt(f),
            RefreshError::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RefreshError {}

/// One worker's view of the published config.
#[derive(Debug, Default)]
pub struct WorkerCache {
    generation: Option<u64>,
    config: Option<GatewayConfig>,
}

impl WorkerCache {
    /// Whether the record for `generation` must be loaded.
    pub fn is_stale(&self, generation: Option<u64>) -> bool {
        generation.is_some() && generation != self.generation
    }

    /// Loads a published record. On error the previous config stays (it was
    /// valid), so a bad record never takes routing down.
    pub fn refresh(&mut self, record: &[u8]) -> Result<u64, RefreshError> {
        let (meta, bytes) = published::decode(record).map_err(RefreshError::Record)?;
        let config = GatewayConfig::parse(bytes).map_err(RefreshError::Config)?;
        self.generation = Some(meta.generation);
        self.config = Some(config);
        Ok(meta.generation)
    }

    pub fn decide(&self, req: RequestInfo<'_>) -> Verdict<'_> {
        match &self.config {
            None => Verdict::Reply {
                status: 503,
                body: NO_CONFIG_BODY,
            },
            Some(config) => match config.route(req) {
                Some(route) => Verdict::Forward {
                    upstream: &route.upstream,
                },
                None => Verdict::Reply {
                    status: 404,
                    body: NO_ROUTE_BODY,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::published::{encode, Meta, Source};

    fn record(generation: u64, config: &str) -> Vec<u8> {
        let meta = Meta {
            generation,
            source: Source::ControlPlane,
            revision: "r".into(),
            sha256: "x".into(),
        };
        encode(&meta, config.as_bytes())
    }

    const REQ: RequestInfo<'static> = RequestInfo {
        method: "GET",
        host: "h",
        path: "/echo/1",
    };

    #[test]
    fn no_config_then_routes() {
        let mut c = WorkerCache::default();
        assert!(!c.is_stale(None));
        assert_eq!(
            c.decide(REQ),
            Verdict::Reply {
                status: 503,
                body: NO_CONFIG_BODY
            }
        );
        assert!(c.is_stale(Some(1)));
        let cfg = r#"{"revision":"r","routes":[{"name":"e","paths":["/echo"],"upstream":"echo_service"}]}"#;
        assert_eq!(c.refresh(&record(1, cfg)).unwrap(), 1);
        assert!(!c.is_stale(Some(1)));
        assert_eq!(
            c.decide(REQ),
            Verdict::Forward {
                upstream: "echo_service"
            }
        );
        let other = RequestInfo {
            path: "/nope",
            ..REQ
        };
        assert_eq!(
            c.decide(other),
            Verdict::Reply {
                status: 404,
                body: NO_ROUTE_BODY
            }
        );
        let v: serde_json::Value = serde_json::from_str(NO_ROUTE_BODY).unwrap();
        assert_eq!(v["message"], "no Route matched with those values");
    }

    #[test]
    fn bad_record_keeps_previous_config() {
        let mut c = WorkerCache::default();
        let cfg = r#"{"revision":"r","routes":[{"name":"e","paths":["/echo"],"upstream":"u"}]}"#;
        c.refresh(&record(1, cfg)).unwrap();
        assert!(c.refresh(&record(2, "{")).is_err());
        assert!(c.refresh(b"junk").is_err());
        assert_eq!(c.decide(REQ), Verdict::Forward { upstream: "u" });
        assert!(c.is_stale(Some(2)));
    }
}
