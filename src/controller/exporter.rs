//! The exporter: which CP config to write to `config.json`, when, and
//! under which precondition.
//!
//! Two rules make the stored snapshot safe with several exporters:
//! - **Never unconditional.** A write carries `If-Match` on the ETag this
//!   node last read or wrote, or `If-None-Match: *` when it saw the object
//!   absent. A read that came back without an ETag gives no precondition,
//!   so no write follows it ([`Event::ExportRefusedNoEtag`]).
//! - **Never older than what it replaces.** A candidate may replace the
//!   object only if its CP poll was *sent after* this node learnt the
//!   object's current state (the answer to its read, or its own write of
//!   an earlier candidate). The object was written from a CP answer
//!   received before that, so, with a CP that serves revisions in order,
//!   the stored revision never goes back, whichever exporter led when.
//!   A candidate too old for that waits for the next CP answer.
//!
//! Order is measured in [`Seq`], the router's count of sends and answers,
//! not in time: it needs no clock.

use crate::action::{CallKind, Metric};
use crate::clock::{Instant, Now};
use crate::envelope::{self, EnvelopeError, Protection, Trust};
use crate::event::Event;
use crate::http::{HttpRequest, HttpResponse};
use crate::keys::{EncryptionKey, SigningKey, SnapshotKeys};
use crate::rng::NonceSource;
use crate::storage::{ObjectStore, PutMode, StorageError};
use std::time::Duration;

/// A position in the router's order of sends and answers.
pub type Seq = u64;

/// Longest wait between export retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A revision waiting to be exported. `Debug` leaves the config out: it
/// is what encryption hides.
#[derive(Clone, PartialEq, Eq)]
pub struct Candidate {
    pub revision: String,
    pub config: Vec<u8>,
    pub sha256: String,
    /// Not written before this.
    pub due: Instant,
    /// When the CP poll that brought it was sent (0: unknown, e.g.
    /// inherited from an earlier driver).
    pub fetched: Seq,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("revision", &self.revision)
            .field("config", &format_args!("({} bytes)", self.config.len()))
            .field("sha256", &self.sha256)
            .field("due", &self.due)
            .field("fetched", &self.fetched)
            .finish()
    }
}

/// What this node knows of `config.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stored {
    /// Read before writing.
    Unknown,
    /// Absent when last seen: the next write is `If-None-Match: *`.
    Absent { seen: Seq },
    /// Present with this ETag, and this content digest when it holds what
    /// this exporter would write for that config now (opened, signed by
    /// its key, encrypted with its current key): otherwise it is
    /// rewritten even for the same config, so a key rotation reaches the
    /// stored snapshot and a forged one is replaced.
    Present {
        etag: String,
        sha256: Option<String>,
        seen: Seq,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Work {
    Idle,
    Reading,
    Writing(Candidate),
}

/// What [`Exporter::drive`] wants done.
#[derive(Debug)]
pub enum ExportStep {
    Send(CallKind, HttpRequest),
    /// The queued candidate is older than the stored object's state:
    /// poll the CP soon.
    NeedFresherCp,
}

/// What a read of `config.json` showed about leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadVerdict {
    Continue,
    /// A newer leader wrote it in this term: stand down.
    NewerTerm(u64),
}

#[derive(Debug)]
pub struct Exporter {
    key: String,
    url: String,
    version: String,
    node_id: String,
    queued: Option<Candidate>,
    /// The newest CP config, which a follower keeps ready to write the
    /// moment it leads.
    latest: Option<Candidate>,
    stored: Stored,
    work: Work,
    failures: u32,
    retry_at: Instant,
    /// The candidate already reported as waiting for a fresher CP answer.
    awaiting_cp: Option<Seq>,
    keys: SnapshotKeys,
    /// `None`: the host gave no randomness, so nothing can be encrypted.
    nonces: Option<NonceSource>,
}

impl Exporter {
    pub fn new(
        store: &ObjectStore,
        version: &str,
        node_id: &str,
        keys: SnapshotKeys,
        nonces: Option<NonceSource>,
    ) -> Self {
        let key = store.key(version, crate::controller::CONFIG_OBJECT);
        Exporter {
            url: store.url(&key),
            key,
            version: version.to_string(),
            node_id: node_id.to_string(),
            queued: None,
            latest: None,
            stored: Stored::Unknown,
            work: Work::Idle,
            failures: 0,
            retry_at: Instant::ZERO,
            awaiting_cp: None,
            keys,
            nonces,
        }
    }

    /// The digest of a stored `config.json` if it is what this exporter
    /// would write for that config now (see [`Stored::Present`]).
    fn current_digest(&self, body: &[u8]) -> Option<String> {
        let trust = Trust {
            require_signature: false,
            require_encryption: false,
            trusted: &self.keys.trusted,
            decryption: &self.keys.encryption,
        };
        let signer = self.keys.signing.as_ref().map(SigningKey::id);
        let encrypter = self.keys.encrypting().map(EncryptionKey::id);
        envelope::open(body, &self.version, &trust)
            .ok()
            .filter(|o| {
                o.format == envelope::FORMAT
                    && o.signed_by.as_deref() == signer
                    && o.encrypted_with.as_deref() == encrypter
            })
            .map(|o| o.sha256)
    }

    /// A new CP config. A newer revision replaces the pending one but
    /// keeps its due time: a CP changing faster than the delay still gets
    /// exported.
    pub fn offer(&mut self, mut c: Candidate, events: &mut Vec<Event>) {
        self.latest = Some(c.clone());
        if let Some(pending) = self.queued.take() {
            c.due = c.due.min(pending.due);
            events.push(Event::ExportReplaced {
                revision: c.revision.clone(),
                replaced: pending.revision,
            });
        }
        self.queued = Some(c);
    }

    /// The CP answered 304 to a poll sent at `fetched`: the newest config
    /// is still current as of then.
    pub fn confirm(&mut self, fetched: Seq) {
        let Some(latest) = self.latest.as_mut() else {
            return;
        };
        latest.fetched = latest.fetched.max(fetched);
        if let Some(q) = self.queued.as_mut().filter(|q| q.sha256 == latest.sha256) {
            q.fetched = q.fetched.max(fetched);
        }
    }

    /// The earliest instant at which [`Exporter::drive`] may act.
    pub fn next_due(&self) -> Option<Instant> {
        if self.work != Work::Idle {
            return None;
        }
        self.queued.as_ref().map(|c| c.due.max(self.retry_at))
    }

    /// This node became leader: re-read `config.json` before writing, and
    /// write the newest CP config it has.
    pub fn became_leader(&mut self, now: Instant) {
        self.stored = Stored::Unknown;
        self.failures = 0;
        self.retry_at = now;
        if self.queued.is_none() {
            self.queued = self.latest.clone().map(|mut c| {
                c.due = now;
                c
            });
        }
    }

    pub fn lost_leadership(&mut self) {
        self.stored = Stored::Unknown;
    }

    /// The request to send now, if any. Only a leader (`term`) writes.
    pub fn drive(
        &mut self,
        store: &ObjectStore,
        term: u64,
        now: Now,
        events: &mut Vec<Event>,
    ) -> Option<ExportStep> {
        if self.work != Work::Idle || now.mono < self.retry_at {
            return None;
        }
        let c = self.queued.take_if(|c| now.mono >= c.due)?;
        let (mode, seen) = match &self.stored {
            Stored::Unknown => {
                self.queued = Some(c);
                return self.send(store.get(&self.key, now), Work::Reading, now, events);
            }
            Stored::Present {
                sha256: Some(s), ..
            } if *s == c.sha256 => {
                events.push(Event::ExportSkipped {
                    revision: c.revision,
                });
                return None;
            }
            Stored::Absent { seen } => (PutMode::Create, *seen),
            Stored::Present { etag, seen, .. } => (PutMode::Update { etag: etag.clone() }, *seen),
        };
        if c.fetched <= seen {
            // Ask for a sooner poll once per candidate: a CP that is down
            // must not be polled on every tick while the export waits.
            let first = self.awaiting_cp != Some(c.fetched);
            if first {
                self.awaiting_cp = Some(c.fetched);
                events.push(Event::ExportAwaitsFresherCp {
                    revision: c.revision.clone(),
                });
            }
            self.queued = Some(c);
            return first.then_some(ExportStep::NeedFresherCp);
        }
        let encryption = match (self.keys.encrypting(), self.nonces.as_mut()) {
            (None, _) => Ok(None),
            (Some(key), Some(nonces)) => Ok(Some((key, nonces.next_nonce()))),
            (Some(_), None) => Err(EnvelopeError::NoRandomness),
        };
        let body = encryption.and_then(|encryption| {
            envelope::seal(
                envelope::Export {
                    config: &c.config,
                    revision: &c.revision,
                    version: &self.version,
                    exporter: &self.node_id,
                    exported_at: now.wall,
                    term,
                },
                Protection {
                    signing: self.keys.signing.as_ref(),
                    encryption,
                },
            )
        });
        match body {
            Ok(body) => {
                let request = store.put(&self.key, body, &mode, now);
                self.send(request, Work::Writing(c), now, events)
            }
            // Cannot happen for a config we validated; never retry it.
            Err(error) => {
                events.push(Event::ExportUnbuildable {
                    revision: c.revision,
                    error,
                });
                None
            }
        }
    }

    fn send(
        &mut self,
        request: Result<HttpRequest, StorageError>,
        work: Work,
        now: Now,
        events: &mut Vec<Event>,
    ) -> Option<ExportStep> {
        let kind = match work {
            Work::Writing(_) => CallKind::ExportWrite,
            _ => CallKind::ExportRead,
        };
        match request {
            Ok(request) => {
                self.work = work;
                Some(ExportStep::Send(kind, request))
            }
            Err(e) => {
                if let Work::Writing(c) = work {
                    self.requeue(c);
                }
                self.failed(&e, now.mono, events);
                None
            }
        }
    }

    /// The answer to the read of `config.json`, received at `seq`.
    pub fn on_read(
        &mut self,
        result: Result<crate::storage::Object, StorageError>,
        my_term: u64,
        seq: Seq,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> ReadVerdict {
        self.work = Work::Idle;
        match result {
            Ok(object) => {
                // The fence: a config.json written in a newer term means a
                // newer leader exists, whatever this node believes. A node
                // that signs has peers that sign: only a term signed by a
                // trusted key counts. One that does not sign cannot tell its
                // unsigned peers from a forger, and obeys any stated term.
                let fence_keys: &[_] = match self.keys.signing {
                    Some(_) => &self.keys.trusted,
                    None => &[],
                };
                let stored_term = envelope::fence_term(&object.body, fence_keys);
                if stored_term > my_term {
                    self.stored = Stored::Unknown;
                    return ReadVerdict::NewerTerm(stored_term);
                }
                match object.etag {
                    Some(etag) => {
                        self.failures = 0;
                        self.stored = Stored::Present {
                            etag,
                            sha256: self.current_digest(&object.body),
                            seen: seq,
                        };
                    }
                    None => {
                        self.stored = Stored::Unknown;
                        let retry_in = self.backoff(now);
                        let revision = self.pending_revision();
                        events.push(Event::ExportRefusedNoEtag { revision, retry_in });
                    }
                }
            }
            Err(StorageError::NotFound { .. }) => {
                self.failures = 0;
                self.stored = Stored::Absent { seen: seq };
            }
            // Without s3:ListBucket, S3 answers a missing key with 403
            // AccessDenied: the exporter cannot tell whether the object
            // exists. It writes `If-None-Match: *`: right when absent (the
            // case without ListBucket), and a refused precondition rather
            // than a blind overwrite when it exists but cannot be read.
            Err(StorageError::Status {
                status: 403,
                code: Some(code),
                ..
            }) if code == "AccessDenied" => {
                events.push(Event::ExportCheckForbidden);
                self.stored = Stored::Absent { seen: seq };
            }
            Err(e) => self.failed(&e, now, events),
        }
        ReadVerdict::Continue
    }

    /// The answer to the write.
    pub fn on_write(
        &mut self,
        store: &ObjectStore,
        response: &HttpResponse,
        now: Instant,
        events: &mut Vec<Event>,
        metrics: &mut Vec<Metric>,
    ) {
        let Work::Writing(c) = std::mem::replace(&mut self.work, Work::Idle) else {
            return;
        };
        match store.write_result(response) {
            Ok(etag) => {
                self.failures = 0;
                events.push(Event::Exported {
                    revision: c.revision.clone(),
                    url: self.url.clone(),
                });
                metrics.push(Metric::ExportWritten);
                // Without the new ETag the next write must read first.
                self.stored = match etag {
                    Some(etag) => Stored::Present {
                        etag,
                        sha256: Some(c.sha256),
                        seen: c.fetched,
                    },
                    None => Stored::Unknown,
                };
            }
            Err(StorageError::PreconditionFailed) => {
                // Someone wrote since this node looked: read again; the
                // read decides whether a newer leader exists.
                self.stored = Stored::Unknown;
                self.requeue(c);
            }
            Err(e) => {
                self.requeue(c);
                self.failed(&e, now, events);
            }
        }
    }

    /// An answer that never came (or a request the host refused).
    pub fn abandoned(&mut self, now: Instant, error: StorageError, events: &mut Vec<Event>) {
        if let Work::Writing(c) = std::mem::replace(&mut self.work, Work::Idle) {
            // The write may have happened: read before the next one.
            self.stored = Stored::Unknown;
            self.requeue(c);
        }
        self.failed(&error, now, events);
    }

    /// Puts a candidate back unless a newer revision took its place.
    fn requeue(&mut self, c: Candidate) {
        if self.queued.is_none() {
            self.queued = Some(c);
        }
    }

    /// The newest CP revision this exporter holds, for log lines.
    pub fn latest_revision(&self) -> Option<String> {
        self.latest.as_ref().map(|c| c.revision.clone())
    }

    fn pending_revision(&self) -> String {
        self.queued
            .as_ref()
            .or(self.latest.as_ref())
            .map_or_else(String::new, |c| c.revision.clone())
    }

    fn failed(&mut self, error: &StorageError, now: Instant, events: &mut Vec<Event>) {
        let retry_in = self.backoff(now);
        events.push(Event::ExportFailed {
            revision: self.pending_revision(),
            error: error.clone(),
            retry_in,
        });
    }

    /// 1 s, 2 s, 4 s, ... capped at [`MAX_BACKOFF`]; sets the retry time.
    fn backoff(&mut self, now: Instant) -> Duration {
        let delay = Duration::from_secs(1u64 << self.failures.min(6)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = now.plus(delay);
        delay
    }
}
