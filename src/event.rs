//! What the core reports: typed events, each with its log level and the
//! log line it renders to.
//!
//! Every state machine pushes [`Event`]s; the shell only logs
//! `event.to_string()` at `event.level()`, and tests assert on the events
//! themselves. A leaf module: it names the error types of the modules
//! below it and is imported by every machine above it.

use crate::clock::ClockSource;
use crate::envelope::EnvelopeError;
use crate::gateway::GatewayConfigError;
use crate::http::TransportError;
use crate::published::{LoadError, Source};
use crate::storage::StorageError;
use std::fmt;
use std::time::Duration;

/// Log severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Why the CP did not give a usable config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpFailure {
    /// An error status, with the start of its body (Envoy reports connect
    /// errors as 503 and timeouts as 504).
    Status { status: u16, excerpt: String },
    /// A 200 whose body is not a valid gateway config.
    Unusable(GatewayConfigError),
    /// The call failed on the way (timeout, unreachable, reset,
    /// truncated, over `control_plane.max_config_bytes`).
    Transport(TransportError),
}

impl fmt::Display for CpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpFailure::Status { status, excerpt } => write!(f, "status {status}: {excerpt}"),
            CpFailure::Unusable(e) => write!(f, "it sent an unusable config: {e}"),
            CpFailure::Transport(e) => e.fmt(f),
        }
    }
}

/// Why an import applied nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum ImportFailure {
    /// The store's answer (or no answer).
    Storage(StorageError),
    /// The object was read but cannot be trusted or used.
    Envelope(EnvelopeError),
    /// The object is not JSON at all: its content type and first bytes.
    NotJson { description: String },
    /// The snapshot was exported longer ago than `import.max_age_s`.
    TooOld { age_s: u64, limit_s: u64 },
    /// No credentials could be had to ask the store.
    Credentials(StorageError),
    /// The version folders could not be listed.
    ListFailed(StorageError),
    /// No snapshot for this version, and none older that opened.
    NoSnapshot { version: String, older_tried: usize },
    /// No snapshot for this version; older ones not looked for
    /// (`import.older_versions` is off).
    NotFound { version: String },
}

impl fmt::Display for ImportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportFailure::Storage(e) | ImportFailure::Credentials(e) => e.fmt(f),
            ImportFailure::Envelope(e) => e.fmt(f),
            ImportFailure::NotJson { description } => {
                write!(f, "the stored object is not JSON ({description})")
            }
            ImportFailure::TooOld { age_s, limit_s } => write!(
                f,
                "the snapshot is {age_s} s old, over import.max_age_s ({limit_s} s)"
            ),
            ImportFailure::ListFailed(e) => write!(
                f,
                "cannot list the versions under the prefix: {e} (listing needs s3:ListBucket, \
                 storage.objects.list or the List permission)"
            ),
            ImportFailure::NotFound { version } => write!(
                f,
                "no snapshot for version {version} (older versions not looked for: import.older_versions is off)"
            ),
            ImportFailure::NoSnapshot {
                version,
                older_tried: 0,
            } => write!(f, "no snapshot for version {version}, and none for an older version"),
            ImportFailure::NoSnapshot {
                version,
                older_tried,
            } => write!(
                f,
                "no snapshot for version {version}, and none of the {older_tried} older versions could be used"
            ),
        }
    }
}

/// Why a leader stopped leading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    LeaseDisappeared,
    OtherHolder,
    TakenOver,
    NotRenewed,
    /// The root context stopped driving its process.
    NoLongerDriving,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossReason::LeaseDisappeared => "the lease object disappeared",
            LossReason::OtherHolder => "the lease names another holder",
            LossReason::TakenOver => "the lease was taken over",
            LossReason::NotRenewed => "no successful renewal within the lease ttl",
            LossReason::NoLongerDriving => "this root context no longer drives the process",
        })
    }
}

/// Why a root stopped driving its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverLoss {
    /// Another root holds the driver record now.
    TakenOver,
    /// The root is shutting down and released the lease.
    Released,
}

impl fmt::Display for DriverLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DriverLoss::TakenOver => "another root context took the driver lease",
            DriverLoss::Released => "it is shutting down and handed the lease over",
        })
    }
}

/// A shared-data write the host refused for another reason than a lost
/// compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRefusal {
    pub key: &'static str,
    /// The host's status, as the shell named it.
    pub status: String,
}

/// Everything the core reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    // ---- process ----
    /// What the storage endpoint's scheme says about the connection, once
    /// per driver.
    StorageTransport {
        endpoint: String,
        cluster: String,
        tls: bool,
        loopback: bool,
    },
    /// Where storage credentials come from, once per driver.
    CredentialSource {
        source: String,
    },
    /// Fetched credentials arrived (first or renewed).
    CredentialsObtained {
        expires_at: crate::time::Timestamp,
    },
    /// Signatures are required but `import.max_age_s` is unset: any old
    /// validly signed snapshot in the bucket would be imported.
    ReplayUnbounded,
    Configured {
        import: bool,
        export: bool,
        storage: String,
        /// `None`: chosen per process by the first driver.
        node_id: Option<String>,
    },
    ClockChosen(ClockSource),
    WallClockJumped {
        by_ms: i64,
    },
    DriverTaken {
        root: u32,
        epoch: u64,
        node_id: String,
        clock: ClockSource,
    },
    DriverLost {
        root: u32,
        reason: DriverLoss,
    },
    Published {
        generation: u64,
        revision: String,
        source: Source,
    },
    /// A newer generation was published first: this one is not.
    PublishSuperseded {
        generation: u64,
        newer: u64,
    },
    SharedDataRefused(HostRefusal),
    /// The driver record in shared data does not parse: it is replaced.
    DriverRecordUnreadable,
    /// The host refused a write with [`crate::process::CREATE_CAS`] to an
    /// absent key (Envoy accepts it): the record is created by a plain
    /// write, which two roots starting at once could both make.
    CreateCasRefused,

    // ---- request path ----
    RecordUnusable {
        generation: u64,
        error: LoadError,
    },
    /// A `role: worker` root found no driver record in shared data this
    /// long after it started: nothing in this process drives, so nothing
    /// will ever be published for it to serve.
    NoDriver {
        waited: std::time::Duration,
    },

    // ---- control plane ----
    CpFetched {
        revision: String,
    },
    CpUnchanged {
        revision: String,
    },
    CpBack,
    CpUnavailable {
        reason: CpFailure,
        /// The CP was already unavailable at the previous poll.
        again: bool,
    },
    ExportReplaced {
        revision: String,
        replaced: String,
    },

    // ---- import ----
    ImportWaitingForCredentials,
    ImportStarted {
        url: String,
    },
    /// This version has no snapshot: looking for older ones.
    ImportListing {
        url: String,
    },
    /// An older version's snapshot cannot be used; the next is tried.
    ImportVersionSkipped {
        version: String,
        error: ImportFailure,
    },
    Imported {
        revision: String,
        version: String,
        url: String,
        exported_at: String,
        exporter: String,
        /// The trusted key whose signature verified.
        signed_by: Option<String>,
        /// The key it was decrypted with.
        encrypted_with: Option<String>,
    },
    ImportFailed {
        url: String,
        error: ImportFailure,
        /// `None`: no more attempts.
        retry_in: Option<Duration>,
    },
    /// `import.max_attempts` attempts failed: no more.
    ImportGaveUp {
        attempts: u32,
    },
    ImportDiscarded {
        revision: String,
    },
    /// The CP answered before the import was sent: it never will be.
    ImportCancelled,

    // ---- export ----
    ExportSkipped {
        revision: String,
    },
    Exported {
        revision: String,
        url: String,
    },
    ExportFailed {
        revision: String,
        error: StorageError,
        retry_in: Duration,
    },
    /// `config.json` came back without an ETag/generation: no write can
    /// be conditional on it, so none is made.
    ExportRefusedNoEtag {
        revision: String,
        retry_in: Duration,
    },
    ExportCheckForbidden,
    /// The candidate was fetched from the CP before the stored object was
    /// last seen: the export waits for a newer CP answer.
    ExportAwaitsFresherCp {
        revision: String,
    },
    ExportUnbuildable {
        revision: String,
        error: EnvelopeError,
    },

    // ---- election ----
    BecameLeader {
        term: u64,
        node: String,
    },
    LostLeadership {
        term: u64,
        node: String,
        reason: LossReason,
    },
    StoodDown {
        term: u64,
        node: String,
        stored_term: u64,
    },
    LeaseExpired {
        holder: String,
        term: u64,
    },
    LostRace {
        term: u64,
    },
    LeaseUnparseable,
    /// The lease or `config.json` holds the last term (`u64::MAX`): no
    /// higher one can fence it, so nobody takes over until an operator
    /// deletes the election objects.
    LeaseTermsExhausted {
        term: u64,
    },
    ElectionFailed {
        /// The revision waiting for export, if any.
        revision: Option<String>,
        error: StorageError,
        doing: &'static str,
        retry_in: Duration,
    },

    // ---- credentials ----
    CredentialsFailed {
        error: StorageError,
    },
}

impl Event {
    pub fn level(&self) -> Level {
        use Event::*;
        match self {
            Configured { .. }
            | StorageTransport {
                tls: false,
                loopback: true,
                ..
            }
            | CredentialsObtained { .. }
            | ClockChosen(_)
            | Published { .. }
            | PublishSuperseded { .. }
            | CpUnchanged { .. }
            | ExportReplaced { .. }
            | ImportCancelled
            | ExportCheckForbidden
            | ExportAwaitsFresherCp { .. }
            | LostRace { .. } => Level::Debug,
            CpUnavailable { again: true, .. } => Level::Debug,
            DriverTaken { .. }
            | CredentialSource { .. }
            | StorageTransport { tls: true, .. }
            | DriverLost { .. }
            | CpFetched { .. }
            | CpBack
            | CpUnavailable { again: false, .. }
            | ImportWaitingForCredentials
            | ImportStarted { .. }
            | ImportListing { .. }
            | Imported { .. }
            | ImportDiscarded { .. }
            | ExportSkipped { .. }
            | Exported { .. }
            | BecameLeader { .. }
            | LostLeadership { .. }
            | StoodDown { .. }
            | LeaseExpired { .. } => Level::Info,
            WallClockJumped { .. }
            | CreateCasRefused
            | DriverRecordUnreadable
            | RecordUnusable { .. }
            | NoDriver { .. }
            | ExportFailed { .. }
            | ExportRefusedNoEtag { .. }
            | LeaseUnparseable
            | ImportVersionSkipped { .. }
            | ReplayUnbounded
            | StorageTransport {
                tls: false,
                loopback: false,
                ..
            }
            | ElectionFailed { .. }
            | CredentialsFailed { .. } => Level::Warn,
            LeaseTermsExhausted { .. }
            | SharedDataRefused(_)
            | ImportFailed { .. }
            | ImportGaveUp { .. }
            | ExportUnbuildable { .. } => Level::Error,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event::*;
        match self {
            Configured {
                import,
                export,
                storage,
                node_id,
            } => {
                let node = node_id.as_deref().unwrap_or("(per process)");
                write!(
                    f,
                    "configured: import={import} export={export} storage={storage} node_id={node}"
                )
            }
            CredentialSource { source } => write!(f, "storage credentials: {source}"),
            StorageTransport {
                endpoint,
                cluster,
                tls: true,
                ..
            } => write!(
                f,
                "storage endpoint {endpoint} through cluster {cluster}: TLS and certificate validation are that cluster's transport socket (the filter cannot see it; README: TLS to storage)"
            ),
            StorageTransport {
                endpoint,
                cluster,
                tls: false,
                ..
            } => write!(
                f,
                "storage endpoint {endpoint} is http://: snapshots, signatures and tokens travel in clear text unless cluster {cluster} adds TLS; use https:// and a TLS cluster"
            ),
            CredentialsObtained { expires_at } => write!(
                f,
                "storage credentials obtained, valid until {}",
                expires_at.rfc3339()
            ),
            ReplayUnbounded => f.write_str(
                "import.max_age_s is not set: an importer would apply any validly signed snapshot, however old (someone with write access to the bucket can put back an old one); set it to bound that",
            ),
            ClockChosen(source) => write!(f, "timers run on the {}", source.as_str()),
            WallClockJumped { by_ms } => write!(
                f,
                "the wall clock jumped by {by_ms} ms; timers run on the monotonic clock and are unaffected"
            ),
            DriverTaken {
                root,
                epoch,
                node_id,
                clock,
            } => write!(
                f,
                "root context {root} now drives this process (driver epoch {epoch}, node_id={node_id}, timers on the {})",
                clock.as_str()
            ),
            DriverLost { root, reason } => {
                write!(f, "root context {root} no longer drives this process: {reason}")
            }
            Published {
                generation,
                revision,
                source,
            } => write!(
                f,
                "published revision {revision} from {} as generation {generation}",
                source.describe()
            ),
            PublishSuperseded { generation, newer } => write!(
                f,
                "generation {generation} not published: generation {newer} is newer"
            ),
            SharedDataRefused(HostRefusal { key, status }) => {
                write!(f, "the host refused to write shared data `{key}`: {status}")
            }
            CreateCasRefused => f.write_str(
                "this host checks a shared-data CAS against absent keys too; creating the driver record with a plain write",
            ),
            DriverRecordUnreadable => {
                f.write_str("the driver record in shared data does not parse; replacing it")
            }
            RecordUnusable { generation, error } => write!(
                f,
                "cannot load the published config (generation {generation}): {error}"
            ),
            NoDriver { waited } => write!(
                f,
                "role \"worker\": no driver in this Envoy {} s after start (no driver record in shared data), so there is no config to serve; run the filter module as an envoy.bootstrap.wasm service with {{\"role\": \"driver\"}} and the filter's vm_id (see wasm/envoy.yaml), or give the filter role \"any\"",
                waited.as_secs()
            ),
            CpFetched { revision } => write!(f, "CP fetched revision {revision}; applying it"),
            CpUnchanged { revision } => write!(f, "CP config unchanged (revision {revision})"),
            CpBack => f.write_str("CP available again; config unchanged"),
            CpUnavailable { reason, .. } => write!(f, "CP unavailable: {reason}"),
            ExportReplaced { revision, replaced } => write!(
                f,
                "revision {revision} replaces revision {replaced} awaiting export"
            ),
            ImportWaitingForCredentials => {
                f.write_str("waiting for the store's credentials before importing")
            }
            ImportStarted { url } => write!(f, "importing fallback config from {url}"),
            ImportListing { url } => write!(
                f,
                "no snapshot for this version; looking for older versions under {url}"
            ),
            ImportVersionSkipped { version, error } => {
                write!(f, "snapshot of version {version} skipped: {error}")
            }
            Imported {
                revision,
                version,
                url,
                exported_at,
                exporter,
                signed_by,
                encrypted_with,
            } => {
                write!(
                    f,
                    "imported revision {revision} (version {version}) from {url} (exported at {exported_at} by {exporter}"
                )?;
                match signed_by {
                    Some(k) => write!(f, ", signed by key \"{k}\"")?,
                    None => f.write_str(", unsigned")?,
                }
                if let Some(k) = encrypted_with {
                    write!(f, ", encrypted with key \"{k}\"")?;
                }
                f.write_str(")")
            }
            ImportFailed {
                url,
                error,
                retry_in: Some(retry),
            } => write!(
                f,
                "import failed: {error} ({url}); nothing applied, retrying in {} ms, still polling the CP",
                retry.as_millis()
            ),
            ImportFailed {
                url,
                error,
                retry_in: None,
            } => write!(
                f,
                "import failed: {error} ({url}); nothing applied, no more attempts, still polling the CP"
            ),
            ImportGaveUp { attempts } => write!(
                f,
                "import given up after {attempts} attempts (import.max_attempts); serving nothing until the CP answers"
            ),
            ImportDiscarded { revision } => write!(
                f,
                "imported revision {revision} discarded: the CP answered first"
            ),
            ImportCancelled => f.write_str("import not sent: the CP answered first"),
            ExportSkipped { revision } => write!(
                f,
                "export of revision {revision} skipped: the same config is already stored"
            ),
            Exported { revision, url } => write!(f, "exported revision {revision} to {url}"),
            ExportFailed {
                revision,
                error,
                retry_in,
            } => write!(
                f,
                "export of revision {revision} failed: {error}; retrying in {} ms",
                retry_in.as_millis()
            ),
            ExportRefusedNoEtag { revision, retry_in } => write!(
                f,
                "export of revision {revision} refused: the store sent no ETag for config.json, \
                 so the write cannot be made conditional (it would overwrite blindly); \
                 reading again in {} ms",
                retry_in.as_millis()
            ),
            ExportCheckForbidden => {
                f.write_str("cannot read the stored config (403 AccessDenied); writing it")
            }
            ExportAwaitsFresherCp { revision } => write!(
                f,
                "export of revision {revision} waits for a CP answer newer than the stored config"
            ),
            ExportUnbuildable { revision, error } => {
                write!(f, "export of revision {revision} failed: {error}")
            }
            BecameLeader { term, node } => write!(f, "became leader (term {term}) node={node}"),
            LostLeadership { term, node, reason } => {
                write!(f, "lost leadership (term {term}) node={node}: {reason}")
            }
            StoodDown {
                term,
                node,
                stored_term,
            } => write!(
                f,
                "stood down (term {term}) node={node}: config.json holds term {stored_term}, newer than term {term}"
            ),
            LeaseExpired { holder, term } => write!(
                f,
                "election: lease of {holder} (term {term}) expired; trying to take over"
            ),
            LostRace { term } => write!(f, "election: lost the race for term {term}"),
            LeaseUnparseable => {
                f.write_str("election: the lease object does not parse; taking it over")
            }
            LeaseTermsExhausted { term } => write!(
                f,
                "election: a stored lease or config.json holds term {term}, the last one; no node can take over with a higher term until an operator deletes that version's election/lease.json and config.json"
            ),
            ElectionFailed {
                revision,
                error,
                doing,
                retry_in,
            } => {
                match revision {
                    Some(r) => write!(f, "export of revision {r} failed")?,
                    None => f.write_str("election failed")?,
                }
                write!(
                    f,
                    ": {error} ({doing}); retrying in {} ms",
                    retry_in.as_millis()
                )
            }
            CredentialsFailed { error } => {
                write!(f, "{error}; retrying with backoff")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_the_documented_wording() {
        let e = Event::BecameLeader {
            term: 3,
            node: "backup-2".into(),
        };
        assert_eq!(e.to_string(), "became leader (term 3) node=backup-2");
        assert_eq!(e.level(), Level::Info);
        let e = Event::CpUnavailable {
            reason: CpFailure::Status {
                status: 503,
                excerpt: "upstream connect error".into(),
            },
            again: true,
        };
        assert_eq!(
            e.to_string(),
            "CP unavailable: status 503: upstream connect error"
        );
        assert_eq!(e.level(), Level::Debug);
        let e = Event::StoodDown {
            term: 3,
            node: "n".into(),
            stored_term: 4,
        };
        assert_eq!(
            e.to_string(),
            "stood down (term 3) node=n: config.json holds term 4, newer than term 3"
        );
        let e = Event::ExportRefusedNoEtag {
            revision: "r1".into(),
            retry_in: Duration::from_secs(1),
        };
        assert!(e.to_string().contains("no ETag"));
        assert_eq!(e.level(), Level::Warn);
    }
}
