//! The readiness status: what the driver reports about the config it
//! applied, and the answer a worker gives on `status_path`.
//!
//! The driver writes a [`StatusRecord`] to shared data
//! ([`crate::published::STATUS_KEY`]) whenever it changes; a worker reads
//! it only for a request of exactly `status_path`, and answers it itself,
//! `200` once it serves a config, `503` before, never routing it upstream.

use crate::published::Source;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Where the process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing applied yet; the CP has not answered and no import failed.
    Waiting,
    /// Nothing applied; the last import attempt failed (retries go on).
    ImportFailed,
    /// A config is applied.
    Serving,
}

/// Where the applied config came from, as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    ControlPlane,
    Storage,
}

impl From<Source> for ConfigSource {
    fn from(s: Source) -> Self {
        match s {
            Source::ControlPlane => ConfigSource::ControlPlane,
            Source::Storage => ConfigSource::Storage,
        }
    }
}

impl ConfigSource {
    /// The `config_source` gauge: 1 control plane, 2 storage (0: none).
    pub fn gauge(self) -> u64 {
        match self {
            ConfigSource::ControlPlane => 1,
            ConfigSource::Storage => 2,
        }
    }
}

/// What the driver knows, as it writes it to shared data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub state: State,
    pub source: Option<ConfigSource>,
    pub revision: Option<String>,
    /// The snapshot's version (an import may apply an older one), or this
    /// build's for a CP config.
    pub version: Option<String>,
    /// When the imported snapshot was exported (RFC 3339).
    pub exported_at: Option<String>,
    /// Wall-clock milliseconds the config's age counts from: the export,
    /// or the CP's last answer confirming it.
    pub fresh_at_ms: Option<u64>,
    pub leader: bool,
    pub term: Option<u64>,
}

impl Default for StatusRecord {
    fn default() -> Self {
        StatusRecord {
            state: State::Waiting,
            source: None,
            revision: None,
            version: None,
            exported_at: None,
            fresh_at_ms: None,
            leader: false,
            term: None,
        }
    }
}

impl StatusRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<StatusRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The config's age at `now`, in whole seconds.
    pub fn age_s(&self, now: Timestamp) -> Option<u64> {
        self.fresh_at_ms
            .map(|t| now.as_millis().saturating_sub(t) / 1000)
    }
}

/// The answer body's shape.
#[derive(Serialize)]
struct Answer<'a> {
    state: State,
    source: Option<ConfigSource>,
    revision: Option<&'a str>,
    version: Option<&'a str>,
    exported_at: Option<&'a str>,
    age_s: Option<u64>,
    leader: bool,
    term: Option<u64>,
}

/// The answer to a request for `status_path`: `200` when this worker
/// serves a config, else `503`; the JSON body is the same shape either
/// way. `record` is what the driver last wrote (absent before its first).
pub fn answer(record: Option<&[u8]>, serving: bool, now: Timestamp) -> (u32, String) {
    let r = record.and_then(StatusRecord::decode).unwrap_or_default();
    let state = match (serving, r.state) {
        (true, _) => State::Serving,
        // The driver applied one this worker has not loaded yet.
        (false, State::Serving) => State::Waiting,
        (false, s) => s,
    };
    let body = Answer {
        state,
        source: r.source.filter(|_| serving),
        revision: r.revision.as_deref().filter(|_| serving),
        version: r.version.as_deref().filter(|_| serving),
        exported_at: r.exported_at.as_deref().filter(|_| serving),
        age_s: r.age_s(now).filter(|_| serving),
        leader: r.leader,
        term: r.term,
    };
    let code = if serving { 200 } else { 503 };
    (code, serde_json::to_string(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn ready_only_when_serving_with_the_same_shape_before() {
        let now = Timestamp::from_secs(1_800_000_100);
        let (code, body) = answer(None, false, now);
        assert_eq!(code, 503);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["state"], "waiting");
        for k in [
            "source",
            "revision",
            "version",
            "exported_at",
            "age_s",
            "leader",
            "term",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {body}");
        }
        let r = StatusRecord {
            state: State::Serving,
            source: Some(ConfigSource::Storage),
            revision: Some("r7".into()),
            version: Some("0.0.9".into()),
            exported_at: Some("2027-01-15T08:00:00Z".into()),
            fresh_at_ms: Some(1_800_000_000_000),
            leader: true,
            term: Some(3),
        };
        let (code, body) = answer(Some(&r.encode()), true, now);
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (
                v["state"].as_str(),
                v["source"].as_str(),
                v["revision"].as_str()
            ),
            (Some("serving"), Some("storage"), Some("r7"))
        );
        assert_eq!(
            (v["age_s"].as_u64(), v["term"].as_u64()),
            (Some(100), Some(3))
        );
        assert_eq!(v["version"], "0.0.9");
        // The driver applied it, this worker not yet: not ready.
        let (code, body) = answer(Some(&r.encode()), false, now);
        assert_eq!(code, 503);
        assert!(body.contains(r#""state":"waiting""#), "{body}");
        let failed = StatusRecord {
            state: State::ImportFailed,
            ..StatusRecord::default()
        };
        let (code, body) = answer(Some(&failed.encode()), false, now);
        assert_eq!(code, 503);
        assert!(body.contains(r#""state":"import_failed""#), "{body}");
    }
}
