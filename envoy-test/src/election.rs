//! Leader election between several exporters: the lease object, the
//! filter's Envoy stats (also the import and readiness ones,
//! [`ImportStats`]) and its log lines, as the scenarios read them.
//!
//! Election state is one object, `<prefix>/0.1.0/election/lease.json`:
//!
//! ```json
//! {"holder":"backup-1","term":3,"renewals":12,"ttl_ms":3000,"renewed_at":"..."}
//! ```
//!
//! The filter defines proxy-wasm metrics; Envoy 1.40 puts them in the
//! `wasmcustom.` namespace of admin `/stats` (the Prometheus output drops
//! that prefix). They are process-wide: every VM of one Envoy that defines
//! the same name shares one stat.

use crate::envoy::Envoy;

/// Successful `config.json` PUTs by this process (counter).
pub const EXPORTS_TOTAL: &str = "wasmcustom.fallback_config.exports_total";
/// Every storage request this process sent (counter).
pub const STORAGE_REQUESTS_TOTAL: &str = "wasmcustom.fallback_config.storage_requests_total";
/// 1 while this process is the leader, else 0 (gauge).
pub const IS_LEADER: &str = "wasmcustom.fallback_config.is_leader";
/// The term this process last led (gauge).
pub const LEADER_TERM: &str = "wasmcustom.fallback_config.leader_term";
/// Where the applied config came from: 0 none, 1 CP, 2 storage (gauge).
pub const CONFIG_SOURCE: &str = "wasmcustom.fallback_config.config_source";
/// Age of the applied config in seconds (gauge).
pub const CONFIG_AGE_SECONDS: &str = "wasmcustom.fallback_config.config_age_seconds";
/// Import attempts sent (counter).
pub const IMPORT_ATTEMPTS_TOTAL: &str = "wasmcustom.fallback_config.import_attempts_total";
/// Import attempts that applied nothing (counter).
pub const IMPORT_FAILURES_TOTAL: &str = "wasmcustom.fallback_config.import_failures_total";
/// 1 while the CP answers, else 0 (gauge).
pub const CP_REACHABLE: &str = "wasmcustom.fallback_config.cp_reachable";
/// Envoy's own count of requests sent to the storage cluster: an
/// independent check of [`STORAGE_REQUESTS_TOTAL`].
pub const STORAGE_CLUSTER_RQ_TOTAL: &str = "cluster.object_storage.upstream_rq_total";

/// Log line of a node that won the lease: `became leader (term N)`.
pub const BECAME_LEADER: &str = "became leader (term ";
/// Log line of a leader that found it lost the lease.
pub const LOST_LEADERSHIP: &str = "lost leadership";
/// Log line of a leader that stopped writing on a failed precondition or
/// a newer term.
pub const STOOD_DOWN: &str = "stood down";

/// The lease object key under the storage prefix `prefix`.
pub fn lease_key(prefix: &str) -> String {
    format!("{prefix}/{}/election/lease.json", crate::envelope::VERSION)
}

/// The stored lease, as read back.
#[derive(Clone, Debug)]
pub struct Lease {
    pub holder: String,
    pub term: u64,
    pub renewals: u64,
    pub ttl_ms: u64,
    /// Kept as JSON: the scenarios only check it is there.
    pub renewed_at: serde_json::Value,
}

/// Parses `lease.json`; `Err` names what is missing or mistyped.
pub fn parse_lease(bytes: &[u8]) -> Result<Lease, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "lease is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })?;
    let uint = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| format!("lease field {k:?} is not a non-negative integer: {v}"))
    };
    Ok(Lease {
        holder: v["holder"]
            .as_str()
            .ok_or_else(|| format!("lease field \"holder\" is not a string: {v}"))?
            .to_string(),
        term: uint("term")?,
        renewals: uint("renewals")?,
        ttl_ms: uint("ttl_ms")?,
        renewed_at: match v.get("renewed_at") {
            Some(t) if !t.is_null() => t.clone(),
            _ => return Err(format!("lease has no \"renewed_at\": {v}")),
        },
    })
}

/// The filter's stats of one Envoy, read in one admin request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterStats {
    pub exports_total: u64,
    pub storage_requests_total: u64,
    pub is_leader: u64,
    pub leader_term: u64,
    /// [`STORAGE_CLUSTER_RQ_TOTAL`] (Envoy's count, not the filter's).
    pub storage_cluster_rq_total: u64,
}

impl FilterStats {
    /// Reads them from `envoy`'s admin. `Err` when admin does not answer or
    /// a stat is missing (the message lists what the filter did define).
    /// Never call it on a paused (SIGSTOP) Envoy: admin would not answer.
    pub fn read(envoy: &Envoy) -> Result<FilterStats, String> {
        let stats =
            envoy.stats_matching(r"^(wasmcustom\.|cluster\.object_storage\.upstream_rq_total$)")?;
        let get = |name: &str| {
            stats.get(name).copied().ok_or_else(|| {
                format!(
                    "Envoy {} has no stat {name}; wasmcustom/storage stats present: {stats:?}",
                    envoy.name()
                )
            })
        };
        Ok(FilterStats {
            exports_total: get(EXPORTS_TOTAL)?,
            storage_requests_total: get(STORAGE_REQUESTS_TOTAL)?,
            is_leader: get(IS_LEADER)?,
            leader_term: get(LEADER_TERM)?,
            storage_cluster_rq_total: get(STORAGE_CLUSTER_RQ_TOTAL)?,
        })
    }
}

/// The filter's import and readiness stats of one Envoy, with Envoy's
/// own count of storage requests, read in one admin request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportStats {
    pub config_source: u64,
    pub config_age_seconds: u64,
    pub import_attempts_total: u64,
    pub import_failures_total: u64,
    pub cp_reachable: u64,
    /// [`STORAGE_CLUSTER_RQ_TOTAL`] (Envoy's count, not the filter's).
    pub storage_cluster_rq_total: u64,
}

impl ImportStats {
    /// Reads them from `envoy`'s admin; `Err` when admin does not answer
    /// or a stat is missing (the message lists what the filter defined).
    pub fn read(envoy: &Envoy) -> Result<ImportStats, String> {
        let stats =
            envoy.stats_matching(r"^(wasmcustom\.|cluster\.object_storage\.upstream_rq_total$)")?;
        let get = |name: &str| {
            stats.get(name).copied().ok_or_else(|| {
                format!(
                    "Envoy {} has no stat {name}; wasmcustom/storage stats present: {stats:?}",
                    envoy.name()
                )
            })
        };
        Ok(ImportStats {
            config_source: get(CONFIG_SOURCE)?,
            config_age_seconds: get(CONFIG_AGE_SECONDS)?,
            import_attempts_total: get(IMPORT_ATTEMPTS_TOTAL)?,
            import_failures_total: get(IMPORT_FAILURES_TOTAL)?,
            cp_reachable: get(CP_REACHABLE)?,
            storage_cluster_rq_total: get(STORAGE_CLUSTER_RQ_TOTAL)?,
        })
    }
}

/// The number after `prefix` in `line` (e.g. the N of
/// `became leader (term N)`).
pub fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_parses_and_names_bad_fields() {
        let l = parse_lease(
            br#"{"holder":"backup-2","term":3,"renewals":9,"ttl_ms":3000,"renewed_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (l.holder.as_str(), l.term, l.renewals, l.ttl_ms),
            ("backup-2", 3, 9, 3000)
        );
        let e = parse_lease(br#"{"holder":"a","term":"3","renewals":1,"ttl_ms":1,"renewed_at":1}"#)
            .unwrap_err();
        assert!(e.contains("\"term\""), "{e}");
        let e = parse_lease(br#"{"holder":"a","term":3,"renewals":1,"ttl_ms":1}"#).unwrap_err();
        assert!(e.contains("renewed_at"), "{e}");
        assert!(parse_lease(b"nope").is_err());
        assert_eq!(lease_key("p/q"), "p/q/0.1.0/election/lease.json");
    }

    #[test]
    fn numbers_after_a_prefix() {
        let l = "[2026-11-27 01:56:57.547][1][info][wasm] wasm log: node backup-1 became leader (term 12)";
        assert_eq!(number_after(l, BECAME_LEADER), Some(12));
        assert_eq!(number_after(l, "lost leadership (term "), None);
        assert_eq!(number_after("became leader (term x)", BECAME_LEADER), None);
    }
}
