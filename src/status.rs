//! The readiness status: what the driver reports about the config it
//! applied, and the answer a worker gives on `status_path`.
//!
//! The driver writes a [`StatusRecord`] to shared data
//! ([`crate::published::STATUS_KEY`]) whenever it changes; a worker reads
//! it only for a request of exactly `status_path`, and answers it itself,
//! `200` once it serves a config, `503` before, never routing it upstream.

use crate::json::{self, Value};
use crate::published::Source;
use crate::time::Timestamp;

/// Where the process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing applied yet; the CP has not answered and no import failed.
    Waiting,
    /// Nothing applied; the last import attempt failed (retries go on).
    ImportFailed,
    /// A config is applied.
    Serving,
}

/// Where the applied config came from, as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl State {
    /// The name in JSON.
    pub fn name(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::ImportFailed => "import_failed",
            State::Serving => "serving",
        }
    }

    fn from_name(name: &str) -> Option<State> {
        [State::Waiting, State::ImportFailed, State::Serving]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

impl ConfigSource {
    /// The name in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::ControlPlane => "control_plane",
            ConfigSource::Storage => "storage",
        }
    }

    fn from_name(name: &str) -> Option<ConfigSource> {
        [ConfigSource::ControlPlane, ConfigSource::Storage]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// The `config_source` gauge: 1 control plane, 2 storage (0: none).
    pub fn gauge(self) -> u64 {
        match self {
            ConfigSource::ControlPlane => 1,
            ConfigSource::Storage => 2,
        }
    }
}

/// What the driver knows, as it writes it to shared data (a JSON object
/// with these fields, in this order).
#[derive(Clone, Debug, PartialEq, Eq)]
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
        json::Object::new()
            .string("state", self.state.name())
            .opt_string("source", self.source.map(ConfigSource::name))
            .opt_string("revision", self.revision.as_deref())
            .opt_string("version", self.version.as_deref())
            .opt_string("exported_at", self.exported_at.as_deref())
            .opt_u64("fresh_at_ms", self.fresh_at_ms)
            .bool("leader", self.leader)
            .opt_u64("term", self.term)
            .finish()
    }

    /// `None` unless `bytes` is an object with `state` and `leader`, and
    /// every field present has its type (`null` for an absent option;
    /// other fields are ignored).
    pub fn decode(bytes: &[u8]) -> Option<StatusRecord> {
        let Ok(Value::Object(fields)) = json::parse(bytes) else {
            return None;
        };
        let text = |name: &str| match fields.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => None,
        };
        let number = |name: &str| match fields.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_u64().map(Some),
        };
        Some(StatusRecord {
            state: State::from_name(fields.get("state")?.as_str()?)?,
            source: match text("source")? {
                None => None,
                Some(name) => Some(ConfigSource::from_name(&name)?),
            },
            revision: text("revision")?,
            version: text("version")?,
            exported_at: text("exported_at")?,
            fresh_at_ms: number("fresh_at_ms")?,
            leader: fields.get("leader")?.as_bool()?,
            term: number("term")?,
        })
    }

    /// The config's age at `now`, in whole seconds.
    pub fn age_s(&self, now: Timestamp) -> Option<u64> {
        self.fresh_at_ms
            .map(|t| now.as_millis().saturating_sub(t) / 1000)
    }
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
    let body = json::Object::new()
        .string("state", state.name())
        .opt_string(
            "source",
            r.source.map(ConfigSource::name).filter(|_| serving),
        )
        .opt_string("revision", r.revision.as_deref().filter(|_| serving))
        .opt_string("version", r.version.as_deref().filter(|_| serving))
        .opt_string("exported_at", r.exported_at.as_deref().filter(|_| serving))
        .opt_u64("age_s", r.age_s(now).filter(|_| serving))
        .bool("leader", r.leader)
        .opt_u64("term", r.term)
        .finish();
    let code = if serving { 200 } else { 503 };
    (code, String::from_utf8(body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn records_round_trip_in_the_layout_serde_wrote() {
        let full = StatusRecord {
            state: State::ImportFailed,
            source: Some(ConfigSource::ControlPlane),
            revision: Some("r\"1".into()),
            version: Some("0.0.9".into()),
            exported_at: Some("2027-01-15T08:00:00Z".into()),
            fresh_at_ms: Some(1_800_000_000_000),
            leader: true,
            term: Some(3),
        };
        assert_eq!(
            String::from_utf8(full.encode()).unwrap(),
            r#"{"state":"import_failed","source":"control_plane","revision":"r\"1","version":"0.0.9","exported_at":"2027-01-15T08:00:00Z","fresh_at_ms":1800000000000,"leader":true,"term":3}"#
        );
        assert_eq!(
            String::from_utf8(StatusRecord::default().encode()).unwrap(),
            r#"{"state":"waiting","source":null,"revision":null,"version":null,"exported_at":null,"fresh_at_ms":null,"leader":false,"term":null}"#
        );
        for r in [full, StatusRecord::default()] {
            assert_eq!(StatusRecord::decode(&r.encode()), Some(r));
        }
        // Absent options are `None`, unknown fields ignored.
        assert_eq!(
            StatusRecord::decode(br#"{"state":"serving","leader":false,"x":[1]}"#),
            Some(StatusRecord {
                state: State::Serving,
                ..StatusRecord::default()
            })
        );
        for bad in [
            &br#"{"leader":false}"#[..],
            br#"{"state":"serving"}"#,
            br#"{"state":"busy","leader":false}"#,
            br#"{"state":"serving","leader":0}"#,
            br#"{"state":"serving","leader":false,"term":-1}"#,
            br#"{"state":"serving","leader":false,"term":"3"}"#,
            br#"{"state":"serving","leader":false,"source":"cp"}"#,
            br#"{"state":"serving","leader":false,"revision":7}"#,
            br#"["serving"]"#,
            b"",
        ] {
            assert_eq!(
                StatusRecord::decode(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

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
