//! Leader election among exporters, through one object in the store.
//!
//! The lease is `<prefix>/<version>/election/lease.json`:
//! `{"holder", "term", "renewals", "ttl_ms", "renewed_at"}`. Every write
//! is conditional, so the store serialises all contenders:
//!
//! ```text
//!  follower ──GET lease (every renew interval)──▶ store
//!     │  absent:                 PUT If-None-Match: *   term 1
//!     │  older than its ttl:     PUT If-Match: <etag>   term + 1
//!     ▼  (412: someone else won; read again)
//!  leader ──PUT If-Match: <etag> (every renew interval)──▶ store
//!        412, or no successful renewal for ttl − margin: not leader
//! ```
//!
//! The lease's age is judged by the store's clock (`Date` − `Last-Modified`
//! of the GET), so clock skew between nodes does not matter; a follower
//! also counts, by its own clock, how long it has seen the same ETag, which
//! covers stores without those headers. A leader considers itself leader
//! only until `sent_at + ttl − margin` of its last successful renewal,
//! measured from when it *sent* that renewal.
//!
//! Leadership alone never authorises a write of `config.json`: that write
//! is itself conditional on the ETag the leader last read or wrote, and
//! carries the leader's term (see [`crate::controller::exporter`]), which fences out
//! a stale leader that has not noticed it lost the lease.

use crate::clock::{Instant, Now};
use crate::event::{Event, LossReason};
use crate::json::{self, Reader};
use crate::settings::ElectionSettings;
use crate::storage::{Object, PutMode, StorageError};
use std::time::Duration;

/// The lease object, relative to `<prefix>/<version>/`.
pub const LEASE_OBJECT: &str = "election/lease.json";

/// Time a leader gives up before its lease could be judged expired by
/// others: covers the 1-second resolution of HTTP dates and tick delays.
const MAX_MARGIN: Duration = Duration::from_secs(2);
/// See [`Election::margin`].
const MIN_MARGIN: Duration = Duration::from_millis(1200);

/// The stored lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub term: u64,
    /// Grows with every renewal, so every write changes the object (stores
    /// such as s3s-fs derive the ETag from the content).
    pub renewals: u64,
    pub ttl_ms: u64,
    /// By the holder's clock; for people reading the object.
    pub renewed_at: String,
}

impl LeaseRecord {
    /// A JSON object with the fields in this order (the bytes serde's
    /// derive wrote, which other builds of the fleet read).
    pub fn encode(&self) -> Vec<u8> {
        json::Object::new()
            .string("holder", &self.holder)
            .u64("term", self.term)
            .u64("renewals", self.renewals)
            .u64("ttl_ms", self.ttl_ms)
            .string("renewed_at", &self.renewed_at)
            .finish()
    }

    /// `None` unless every field is there, once, with its type; other
    /// fields are ignored.
    pub fn decode(bytes: &[u8]) -> Option<LeaseRecord> {
        Self::read(bytes).ok()
    }

    fn read(bytes: &[u8]) -> Result<LeaseRecord, json::Error> {
        let mut r = Reader::new(bytes);
        let (mut holder, mut term, mut renewals, mut ttl_ms, mut renewed_at) =
            (None, None, None, None, None);
        r.object()?;
        while let Some(key) = r.next_key()? {
            match &*key {
                "holder" => r.once(&mut holder, "holder", Reader::owned_string)?,
                "term" => r.once(&mut term, "term", Reader::u64)?,
                "renewals" => r.once(&mut renewals, "renewals", Reader::u64)?,
                "ttl_ms" => r.once(&mut ttl_ms, "ttl_ms", Reader::u64)?,
                "renewed_at" => r.once(&mut renewed_at, "renewed_at", Reader::owned_string)?,
                _ => r.skip()?,
            }
        }
        let record = LeaseRecord {
            holder: r.required(holder, "holder")?,
            term: r.required(term, "term")?,
            renewals: r.required(renewals, "renewals")?,
            ttl_ms: r.required(ttl_ms, "ttl_ms")?,
            renewed_at: r.required(renewed_at, "renewed_at")?,
        };
        r.end()?;
        Ok(record)
    }
}

/// What the election wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Read,
    Write { mode: PutMode, record: LeaseRecord },
}

/// Why a write was sent, to interpret its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Acquire { term: u64 },
    Renew { term: u64 },
}

/// What the controller learns from the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    BecameLeader {
        term: u64,
    },
    LostLeadership {
        term: u64,
    },
    /// A lease request failed (not a lost race): exporting is blocked
    /// until a retry in `retry_in` succeeds. `doing` says which request.
    Failed {
        doing: &'static str,
        error: StorageError,
        retry_in: Duration,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Follower,
    Leader {
        term: u64,
        /// `None` after a renewal whose answer had no ETag: read to learn it.
        etag: Option<String>,
        renewals: u64,
        valid_until: Instant,
    },
}

/// The lease as last seen by a follower.
#[derive(Clone, Debug)]
struct Observed {
    etag: String,
    first_seen: Instant,
}

#[derive(Debug)]
pub struct Election {
    settings: ElectionSettings,
    node_id: String,
    role: Role,
    next_at: Instant,
    in_flight: bool,
    observed: Option<Observed>,
    /// Terms at or below this are known to be used: never acquire them.
    min_term: u64,
    /// Until the first read: a lease naming this node is a previous
    /// incarnation of it (a restart) and may be taken over at once.
    fresh: bool,
    /// Role changes not yet collected by [`Election::take_changes`].
    changes: Vec<Change>,
    /// Consecutive failed lease requests, for the retry backoff.
    failures: u32,
}

impl Election {
    pub fn new(settings: ElectionSettings, node_id: String) -> Self {
        Election {
            settings,
            node_id,
            role: Role::Follower,
            next_at: Instant::ZERO,
            in_flight: false,
            observed: None,
            min_term: 0,
            fresh: true,
            changes: Vec::new(),
            failures: 0,
        }
    }

    /// The term of the leadership this node holds or last held without
    /// hearing it was lost, valid or not.
    pub fn held_term(&self) -> Option<u64> {
        match &self.role {
            Role::Leader { term, .. } => Some(*term),
            Role::Follower => None,
        }
    }

    /// The term this node leads in, if it may act as leader at `now`.
    pub fn leader_term(&self, now: Instant) -> Option<u64> {
        match &self.role {
            Role::Leader {
                term, valid_until, ..
            } if now < *valid_until => Some(*term),
            _ => None,
        }
    }

    /// When [`Election::poll`] next has work (or a lease validity runs out).
    pub fn next_due(&self) -> Instant {
        match self.role {
            Role::Leader { valid_until, .. } => self.next_at.min(valid_until),
            Role::Follower => self.next_at,
        }
    }

    /// The request to send now, if any. At most one is in flight.
    pub fn poll(&mut self, now: Now, out: &mut Vec<Event>) -> Option<(Step, Option<WriteKind>)> {
        self.expire(now.mono, out);
        if self.in_flight || now.mono < self.next_at {
            return None;
        }
        self.next_at = now.mono.plus(match self.role {
            Role::Leader { .. } => self.leader_renew_interval(),
            Role::Follower => self.settings.renew_interval,
        });
        self.in_flight = true;
        Some(match &self.role {
            Role::Leader {
                term,
                etag: Some(etag),
                renewals,
                ..
            } => (
                Step::Write {
                    mode: PutMode::Update { etag: etag.clone() },
                    record: self.record(*term, renewals + 1, now),
                },
                Some(WriteKind::Renew { term: *term }),
            ),
            _ => (Step::Read, None),
        })
    }

    /// The answer to a read. May return a write to send at once (an
    /// acquisition).
    pub fn on_read(
        &mut self,
        result: Result<Object, StorageError>,
        now: Now,
        out: &mut Vec<Event>,
    ) -> Option<(Step, Option<WriteKind>)> {
        self.in_flight = false;
        let fresh = std::mem::replace(&mut self.fresh, false);
        let object = match result {
            Ok(o) => o,
            Err(StorageError::NotFound { .. }) => {
                if matches!(self.role, Role::Leader { .. }) {
                    self.lose(LossReason::LeaseDisappeared, out);
                }
                return self.acquire(PutMode::Create, now, out);
            }
            Err(e) => {
                self.failed("reading the election lease", e, now);
                return None;
            }
        };
        self.failures = 0;
        let record = LeaseRecord::decode(&object.body);
        // A leader that lost track of its lease's ETag learns it here.
        if let Role::Leader { term, .. } = self.role {
            let still_mine = record
                .as_ref()
                .is_some_and(|r| r.holder == self.node_id && r.term == term);
            if still_mine {
                if let Role::Leader { etag: mine, .. } = &mut self.role {
                    *mine = object.etag.clone();
                }
                return None;
            }
            self.lose(LossReason::OtherHolder, out);
        }
        let Some(etag) = object.etag.clone() else {
            // Without an ETag no write of the lease could be conditional:
            // taking it over would overwrite it blindly.
            self.failed("reading the election lease", StorageError::MissingEtag, now);
            return None;
        };
        let Some(record) = record else {
            out.push(Event::LeaseUnparseable);
            return self.acquire(PutMode::Update { etag }, now, out);
        };
        self.min_term = self.min_term.max(record.term);
        if fresh && record.holder == self.node_id {
            // This node restarted: its old lease is its own to replace.
            return self.acquire(PutMode::Update { etag }, now, out);
        }
        let seen_since = match &self.observed {
            Some(o) if o.etag == etag => o.first_seen,
            _ => {
                self.observed = Some(Observed {
                    etag: etag.clone(),
                    first_seen: now.mono,
                });
                now.mono
            }
        };
        let ttl = match record.ttl_ms {
            0 => self.settings.lease_ttl,
            ms => Duration::from_millis(ms),
        };
        let server_age = match (object.date, object.last_modified) {
            (Some(date), Some(modified)) => Some(date.since(modified)),
            _ => None,
        };
        // Expired by the store's clock, or unchanged for ttl plus a renew
        // interval by ours (stores without Date/Last-Modified).
        let expired = server_age.is_some_and(|age| age >= ttl)
            || now.mono.since(seen_since) >= ttl + self.settings.renew_interval;
        if !expired {
            return None;
        }
        out.push(Event::LeaseExpired {
            holder: record.holder,
            term: record.term,
        });
        self.acquire(PutMode::Update { etag }, now, out)
    }

    /// The answer to a write sent at `sent_at`.
    pub fn on_write(
        &mut self,
        kind: WriteKind,
        result: Result<Option<String>, StorageError>,
        sent_at: Instant,
        now: Now,
        out: &mut Vec<Event>,
    ) {
        self.in_flight = false;
        let valid_until = sent_at.plus(self.settings.lease_ttl - self.margin());
        match (kind, result) {
            (WriteKind::Acquire { term }, Ok(etag)) => {
                self.failures = 0;
                self.min_term = self.min_term.max(term);
                self.role = Role::Leader {
                    term,
                    etag,
                    renewals: 0,
                    valid_until,
                };
                self.observed = None;
                self.next_at = now.mono.plus(self.leader_renew_interval());
                out.push(Event::BecameLeader {
                    term,
                    node: self.node_id.clone(),
                });
                self.changes.push(Change::BecameLeader { term });
            }
            (WriteKind::Acquire { term }, Err(e)) => {
                self.min_term = self.min_term.max(term);
                if e == StorageError::PreconditionFailed {
                    // Another node won this term; look again at once.
                    out.push(Event::LostRace { term });
                    self.next_at = now.mono;
                } else {
                    self.failed("taking the election lease", e, now);
                }
            }
            (WriteKind::Renew { term }, Ok(etag)) => {
                self.failures = 0;
                if let Role::Leader {
                    term: t,
                    etag: e,
                    renewals,
                    valid_until: v,
                } = &mut self.role
                {
                    if *t == term {
                        *e = etag;
                        *renewals += 1;
                        *v = valid_until;
                    }
                }
            }
            (WriteKind::Renew { .. }, Err(StorageError::PreconditionFailed)) => {
                self.lose(LossReason::TakenOver, out);
                self.next_at = now.mono;
            }
            (WriteKind::Renew { .. }, Err(e)) => {
                self.failed("renewing the election lease", e, now);
            }
        }
    }

    /// Stops acting as leader because `config.json` holds a newer term
    /// (`stored_term`): a newer leader exists.
    pub fn stand_down(&mut self, stored_term: u64, out: &mut Vec<Event>) {
        self.min_term = self.min_term.max(stored_term);
        if let Role::Leader { term, .. } = self.role {
            out.push(Event::StoodDown {
                term,
                node: self.node_id.clone(),
                stored_term,
            });
            self.role = Role::Follower;
            self.changes.push(Change::LostLeadership { term });
        }
    }

    /// A leader that has not renewed in time is no longer leader.
    fn expire(&mut self, now: Instant, out: &mut Vec<Event>) {
        match self.role {
            Role::Leader {
                term, valid_until, ..
            } if now >= valid_until => {
                out.push(Event::LostLeadership {
                    term,
                    node: self.node_id.clone(),
                    reason: LossReason::NotRenewed,
                });
                self.role = Role::Follower;
                self.next_at = now;
                self.changes.push(Change::LostLeadership { term });
            }
            _ => {}
        }
    }

    fn lose(&mut self, reason: LossReason, out: &mut Vec<Event>) {
        if let Role::Leader { term, .. } = self.role {
            out.push(Event::LostLeadership {
                term,
                node: self.node_id.clone(),
                reason,
            });
            self.role = Role::Follower;
            self.changes.push(Change::LostLeadership { term });
        }
    }

    /// A write taking the lease with the first term above every term
    /// known to be used. There is none above `u64::MAX`: such a lease
    /// (only a hand-written or corrupted one gets there) is never taken
    /// over, since wrapping to term 0 would pass every fence.
    fn acquire(
        &mut self,
        mode: PutMode,
        now: Now,
        out: &mut Vec<Event>,
    ) -> Option<(Step, Option<WriteKind>)> {
        let Some(term) = self.min_term.checked_add(1) else {
            out.push(Event::LeaseTermsExhausted {
                term: self.min_term,
            });
            return None;
        };
        self.in_flight = true;
        Some((
            Step::Write {
                mode,
                record: self.record(term, 0, now),
            },
            Some(WriteKind::Acquire { term }),
        ))
    }

    fn record(&self, term: u64, renewals: u64, now: Now) -> LeaseRecord {
        LeaseRecord {
            holder: self.node_id.clone(),
            term,
            renewals,
            ttl_ms: u64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            renewed_at: now.wall.rfc3339(),
        }
    }

    /// Retries sooner than the renew interval after a failure (1 s, 2 s,
    /// 4 s, ... up to the interval), so a fixed credential or a store
    /// back up is noticed quickly.
    fn failed(&mut self, doing: &'static str, error: StorageError, now: Now) {
        let retry_in =
            Duration::from_secs(1u64 << self.failures.min(16)).min(self.settings.renew_interval);
        self.failures = self.failures.saturating_add(1);
        self.next_at = now.mono.plus(retry_in);
        self.changes.push(Change::Failed {
            doing,
            error,
            retry_in,
        });
    }

    /// How long before its lease could look expired to others a leader
    /// stops acting: a quarter of the TTL, at least [`MIN_MARGIN`] (HTTP
    /// dates have whole seconds, so a follower may judge the lease up to
    /// 1 s older than it is; plus a tick), at most [`MAX_MARGIN`], and never
    /// more than half the TTL.
    fn margin(&self) -> Duration {
        let ttl = self.settings.lease_ttl;
        (ttl / 4).max(MIN_MARGIN).min(MAX_MARGIN).min(ttl / 2)
    }

    /// The leader renews at the configured interval, or sooner when that
    /// would not leave its validity (`ttl - margin`) room for one lost
    /// renewal: any `renew_interval < lease_ttl` keeps a healthy leader.
    fn leader_renew_interval(&self) -> Duration {
        let valid_for = self.settings.lease_ttl - self.margin();
        self.settings.renew_interval.min(valid_for * 3 / 4)
    }

    /// Role changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn at(secs: u64) -> Now {
        Now {
            mono: Instant::ZERO.plus(Duration::from_secs(secs)),
            wall: Timestamp::from_secs(1_800_000_000 + secs),
        }
    }

    /// The layout serde's derive wrote and read before `encode`.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct SerdeLease {
        holder: String,
        term: u64,
        renewals: u64,
        ttl_ms: u64,
        renewed_at: String,
    }

    #[test]
    fn lease_records_are_the_bytes_serde_wrote() {
        for holder in ["node-a", "n\"\\\u{7}\u{7f}é😀"] {
            let r = LeaseRecord {
                holder: holder.into(),
                term: u64::MAX,
                renewals: 3,
                ttl_ms: 30_000,
                renewed_at: "2027-01-15T08:00:00Z".into(),
            };
            let theirs = SerdeLease {
                holder: r.holder.clone(),
                term: r.term,
                renewals: r.renewals,
                ttl_ms: r.ttl_ms,
                renewed_at: r.renewed_at.clone(),
            };
            let bytes = r.encode();
            assert_eq!(bytes, serde_json::to_vec(&theirs).unwrap());
            assert_eq!(LeaseRecord::decode(&bytes), Some(r));
        }
        // Read as serde read it: what it accepted and what it refused.
        let base = r#""holder":"h","term":1,"renewals":0,"ttl_ms":5,"renewed_at":"""#;
        let with = |from: &str, to: &str| format!("{{{}}}", base.replace(from, to));
        for (text, ok) in [
            (format!("{{{base}}}"), true),
            (format!(r#"{{"x":{{"y":[null]}},{base}}}"#), true),
            (format!(r#"{{{base},"term":2}}"#), false),
            (with(r#""term":1,"#, ""), false),
            (with(r#""term":1"#, r#""term":-1"#), false),
            (with(r#""term":1"#, r#""term":1.0"#), false),
            (with(r#""h""#, "null"), false),
            (format!("{{{base}}}}}"), false),
        ] {
            let theirs = serde_json::from_str::<SerdeLease>(&text).ok();
            assert_eq!(theirs.is_some(), ok, "{text}");
            assert_eq!(LeaseRecord::decode(text.as_bytes()).is_some(), ok, "{text}");
        }
    }

    fn lease(term: u64, age_s: u64, now: Now) -> Result<Object, StorageError> {
        let record = LeaseRecord {
            holder: "node-b".into(),
            term,
            renewals: 0,
            ttl_ms: 30_000,
            renewed_at: String::new(),
        };
        Ok(Object {
            body: record.encode(),
            etag: Some("\"e\"".into()),
            date: Some(now.wall),
            last_modified: Some(Timestamp::from_secs(now.wall.as_secs() - age_s)),
            content_type: None,
        })
    }

    fn election() -> Election {
        let settings = ElectionSettings {
            lease_ttl: Duration::from_secs(30),
            renew_interval: Duration::from_secs(10),
        };
        Election::new(settings, "node-a".into())
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_the_next_term() {
        let mut e = election();
        let mut out = Vec::new();
        assert!(matches!(e.poll(at(0), &mut out), Some((Step::Read, None))));
        let step = e.on_read(lease(7, 3600, at(0)), at(0), &mut out);
        assert!(matches!(
            step,
            Some((_, Some(WriteKind::Acquire { term: 8 })))
        ));
    }

    /// Found by fuzzing: `min_term + 1` overflowed on a lease holding
    /// `u64::MAX` (a panic in debug builds, term 0 in release, below every
    /// fence). No higher term exists, so the lease is left alone and the
    /// operator is told.
    #[test]
    fn a_lease_with_the_last_term_is_never_taken_over() {
        let mut e = election();
        let mut out = Vec::new();
        for round in 0..3 {
            let now = at(round * 45);
            if e.poll(now, &mut out).is_some() {
                assert_eq!(e.on_read(lease(u64::MAX, 3600, now), now, &mut out), None);
            }
        }
        assert_eq!(e.held_term(), None);
        assert!(out.contains(&Event::LeaseTermsExhausted { term: u64::MAX }));
    }
}
