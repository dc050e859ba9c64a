//! Process coordination: which root context drives the process, the
//! process-wide generation counter, and the publish protocol.
//!
//! Envoy runs one long-lived root context per thread (main + each worker,
//! each in its own VM) plus a throwaway canary; all share proxy-wasm shared
//! data. The product promises one CP poll per interval, one import per
//! process and one config every worker agrees on, so exactly one root, the
//! *driver*, runs the [`crate::controller::Controller`].
//!
//! Everything process-wide lives in one [`DriverRecord`] under
//! [`DRIVER_KEY`], and every change of it is a compare-and-swap of the
//! whole record by the root that holds it:
//!
//! ```text
//!  follower: read ─ absent ──────────▶ create (CAS that only an absent key passes)
//!              ├─ released ─────────▶ CAS claim (epoch + 1)
//!              └─ unchanged for TTL ─▶ CAS claim (epoch + 1)      (by its own clock)
//!  driver:   read ─ not what I wrote ─▶ lost
//!              └─ mine ─▶ CAS {renew | generation + 1 | import attempt | released}
//!  publish:  CAS generation + 1 on the record ─▶ CONFIG_KEY if its generation is lower (CAS)
//!            ─▶ GENERATION_KEY if lower (CAS)
//! ```
//!
//! Why this holds:
//! - A root recognises its lease by the record it last wrote (owner,
//!   epoch, renewals): any other root's write changes it. So a root that
//!   lost the lease learns it at its next read, and its next CAS fails.
//! - Generations are handed out only by a successful CAS on the record,
//!   so they are unique and only a lease holder ever gets one; records and
//!   the counter only ever move to a higher generation (read, compare,
//!   CAS), so a stalled publisher can never put an older record back.
//! - The CP-answered flag and the import attempts change by the same CAS,
//!   so they are ordered with everything else: after a CP answer was
//!   published no root can be granted an import.
//! - A follower takes over only after it saw the same record for the whole
//!   lease TTL by its own monotonic clock; the holder stops acting
//!   [`LEASE_MARGIN`] earlier by its own clock, and re-validates (read +
//!   CAS) before it handles anything after that. No wall clock is read.
//!
//! Proxy-wasm ignores the CAS of a write to a key that does not exist, and
//! has no "create if absent". Envoy checks a CAS only against an existing
//! key's CAS, so a write with [`CREATE_CAS`], a CAS no existing key holds
//! (Envoy hands out CAS values in order from 1), succeeds only on an
//! absent key. A host that refuses it on an absent key too is detected
//! (the key still reads absent) and gets a plain write.
//!
//! Sans-IO: [`Coordinator::poll_shared`] says which shared-data call to
//! make next, [`Coordinator::handle_read`] / [`Coordinator::handle_write`]
//! take its result, and [`Coordinator::poll_outcome`] reports what came of
//! it. Calls are made one at a time, in order.

use crate::clock::{Instant, Now};
use crate::event::{DriverLoss, Event, HostRefusal};
use crate::published::{
    self, DriverRecord, Meta, Source, CONFIG_KEY, DRIVER_KEY, GENERATION_KEY, STATUS_KEY,
};
use std::collections::VecDeque;
use std::time::Duration;

/// How often every root context wakes up (the shell's tick period).
pub const TICK: Duration = Duration::from_millis(200);

/// The first tick comes this soon after configuration: nothing can go out
/// at configure time (Envoy's canary VM is configured and thrown away
/// without ticking), and waiting a whole [`TICK`] for the first CP request
/// would delay every start, and an import with the CP down, by 200 ms.
pub const FIRST_TICK: Duration = Duration::from_millis(10);

/// The tick of a root that never drives ([`crate::role::Role::Worker`]):
/// its ticks only look for a new config (one small shared-data read), so
/// they can come often, and a new config reaches every worker this soon.
pub const WORKER_TICK: Duration = Duration::from_millis(50);

/// A driver that stops renewing (its thread stuck, its root gone) is
/// taken over after its record stayed unchanged this long.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// The driver stops acting this long before a follower could take over:
/// two ticks of scheduling delay on a busy machine.
pub const LEASE_MARGIN: Duration = Duration::from_millis(500);

/// The CAS that creates a key only if it is absent (see the module doc).
pub const CREATE_CAS: u32 = u32::MAX;

/// How often one step retries a lost CAS on the config keys before it
/// gives up (only another driver writes them, and then it is superseded).
const MAX_CAS_RETRIES: u32 = 4;

/// A value read from shared data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedValue {
    pub bytes: Option<Vec<u8>>,
    pub cas: Option<u32>,
}

/// The shared-data call to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedOp {
    Read {
        key: &'static str,
    },
    /// Write `value`; `cas: None` writes unconditionally.
    Write {
        key: &'static str,
        value: Vec<u8>,
        cas: Option<u32>,
    },
}

/// What the host answered to a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Done,
    CasMismatch,
    /// Any other failure, as the shell names the host's status.
    Refused(String),
}

/// A config to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishJob {
    pub source: Source,
    pub revision: String,
    pub sha256: String,
    /// The config as served (JSON).
    pub config: Vec<u8>,
    /// Its compiled route table
    /// ([`RouteTable::encoded`](crate::route_table::RouteTable::encoded)),
    /// what workers load.
    pub routes: Vec<u8>,
}

impl PublishJob {
    /// The job for `config` (as served) that parsed into `parsed`.
    pub fn new(
        source: Source,
        revision: String,
        sha256: String,
        config: Vec<u8>,
        parsed: &crate::gateway::GatewayConfig,
    ) -> Self {
        PublishJob {
            source,
            revision,
            sha256,
            config,
            routes: parsed.table().encoded().to_vec(),
        }
    }
}

/// Why the process refused an import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportRefusal {
    CpAnswered,
    /// The process used up its attempts.
    Exhausted,
}

/// What came of the coordinator's work, for the root to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This root drives now; `published` is the config record found in
    /// shared data (meta and bytes), for the new controller to inherit.
    Took {
        record: DriverRecord,
        published: Option<(Meta, Vec<u8>)>,
        /// The status the earlier driver published (bytes).
        status: Option<Vec<u8>>,
    },
    /// The lease is still this root's: it may act.
    Renewed,
    /// A tick found the lease held by another root: nothing to do.
    Following,
    /// This root no longer drives.
    Lost(DriverLoss),
    /// The process's `attempt`-th import may go out.
    ImportGranted {
        attempt: u32,
    },
    ImportRefused(ImportRefusal),
    Published(Meta),
    /// A newer generation was published first.
    Superseded(Meta),
    /// The host refused a write; the job is lost.
    PublishFailed(PublishJob),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Follower {
        /// The record as last seen, and since when (by this root's clock).
        observed: Option<(Vec<u8>, Instant)>,
    },
    Driver {
        /// The record as this root last wrote it.
        mine: DriverRecord,
        /// Acting is allowed until then; after it, re-validate first.
        valid_until: Instant,
        /// No generation at or below this is handed out (what the config
        /// keys held when this root took over).
        floor: u64,
    },
}

/// A unit of work, done as a sequence of shared-data calls.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    /// A tick: renew (driver) or observe and maybe claim (follower).
    Tick,
    /// Before acting after the validity ran out: renew or learn the loss.
    Revalidate,
    Publish(PublishJob),
    BeginImport {
        max_attempts: Option<u32>,
    },
    /// The attempt finished: clear `import_in_flight`.
    EndImport,
    /// Write the driver's status for readiness probes.
    Status(Vec<u8>),
    Release,
}

/// Where the current op stands: the call it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    ReadDriver,
    WriteDriver {
        record: DriverRecord,
        /// The claim came from the follower path (epoch changed).
        claim: bool,
        /// The write created the key with [`CREATE_CAS`].
        creating: bool,
    },
    /// After a claim: reading the published record to inherit it.
    ReadInherit {
        record: DriverRecord,
    },
    /// Then the status.
    ReadInheritStatus {
        record: DriverRecord,
        published: Option<(Meta, Vec<u8>)>,
    },
    ReadConfig {
        meta: Meta,
        attempt: u32,
    },
    WriteConfig {
        meta: Meta,
        attempt: u32,
    },
    ReadGeneration {
        meta: Meta,
        attempt: u32,
    },
    WriteGeneration {
        meta: Meta,
        attempt: u32,
    },
    WriteStatus,
}

/// One root's side of the process protocol.
#[derive(Debug)]
pub struct Coordinator {
    context_id: u32,
    /// Unique per root context: the driver record's `owner`.
    me: String,
    /// The node id this root would give the process if it creates the
    /// record.
    proposed_node_id: String,
    role: Role,
    ops: VecDeque<Op>,
    current: Option<(Op, Step)>,
    /// The call handed out by `poll_shared`, not yet answered.
    waiting: bool,
    /// The write the current step makes, built by the read before it.
    pending_write: Option<SharedOp>,
    /// The job being published (kept across its steps).
    job: Option<PublishJob>,
    /// The last read of a key during a create, to detect hosts that
    /// refuse CAS on absent keys.
    create_refused: bool,
    reported_create_refusal: bool,
    outcomes: VecDeque<Outcome>,
    events: Vec<Event>,
    now: Now,
}

impl Coordinator {
    /// `me` must be unique per root context (random); `proposed_node_id`
    /// is used only if this root creates the process's record.
    pub fn new(context_id: u32, me: String, proposed_node_id: String) -> Self {
        Coordinator {
            context_id,
            me,
            proposed_node_id,
            role: Role::Follower { observed: None },
            ops: VecDeque::new(),
            current: None,
            waiting: false,
            pending_write: None,
            job: None,
            create_refused: false,
            reported_create_refusal: false,
            outcomes: VecDeque::new(),
            events: Vec::new(),
            now: Now::at_millis(0),
        }
    }

    pub fn owner(&self) -> &str {
        &self.me
    }

    /// Whether this root drives the process and may act at `now` without
    /// re-validating.
    pub fn may_act(&self, now: Instant) -> bool {
        matches!(self.role, Role::Driver { valid_until, .. } if now < valid_until)
    }

    pub fn is_driver(&self) -> bool {
        matches!(self.role, Role::Driver { .. })
    }

    pub fn tick(&mut self, now: Now) {
        self.enqueue(Op::Tick, now);
    }

    /// Renews before acting, once the validity ran out.
    pub fn revalidate(&mut self, now: Now) {
        if !self.ops.contains(&Op::Revalidate) {
            self.enqueue(Op::Revalidate, now);
        }
    }

    pub fn publish(&mut self, job: PublishJob, now: Now) {
        self.enqueue(Op::Publish(job), now);
    }

    /// Asks for the process's import; `max_attempts` is the import policy.
    pub fn begin_import(&mut self, max_attempts: Option<u32>, now: Now) {
        self.enqueue(Op::BeginImport { max_attempts }, now);
    }

    /// The granted attempt is over.
    pub fn end_import(&mut self, now: Now) {
        self.enqueue(Op::EndImport, now);
    }

    /// Publishes the driver's status (see [`crate::status`]).
    pub fn status(&mut self, bytes: Vec<u8>, now: Now) {
        // Only the newest matters.
        self.ops.retain(|op| !matches!(op, Op::Status(_)));
        self.enqueue(Op::Status(bytes), now);
    }

    /// The root is shutting down: hand the lease over at once.
    pub fn release(&mut self, now: Now) {
        self.ops.clear();
        self.enqueue(Op::Release, now);
    }

    fn enqueue(&mut self, op: Op, now: Now) {
        self.now = now;
        self.ops.push_back(op);
    }

    /// The next shared-data call, if any. Each must be answered (with
    /// [`Self::handle_read`] or [`Self::handle_write`]) before the next.
    pub fn poll_shared(&mut self) -> Option<SharedOp> {
        if self.waiting {
            return None;
        }
        loop {
            if self.current.is_none() {
                let op = self.ops.pop_front()?;
                match self.start(op) {
                    Some(step) => self.current = Some(step),
                    None => continue,
                }
            }
            let (_, step) = self.current.as_ref()?;
            let call = match step {
                Step::ReadDriver => SharedOp::Read { key: DRIVER_KEY },
                Step::ReadInherit { .. } | Step::ReadConfig { .. } => {
                    SharedOp::Read { key: CONFIG_KEY }
                }
                Step::ReadGeneration { .. } => SharedOp::Read {
                    key: GENERATION_KEY,
                },
                Step::ReadInheritStatus { .. } => SharedOp::Read { key: STATUS_KEY },
                // Writes are produced together with their CAS by the read
                // before them, see `pending_write`.
                _ => self.pending_write.take()?,
            };
            self.waiting = true;
            return Some(call);
        }
    }

    /// An op begins by reading the driver record, unless it has nothing
    /// to do in this role.
    fn start(&mut self, op: Op) -> Option<(Op, Step)> {
        let driving = self.is_driver();
        let needed = match &op {
            Op::Tick => true,
            Op::Revalidate | Op::Release => driving,
            Op::Publish(job) => {
                if !driving {
                    self.outcomes.push_back(Outcome::PublishFailed(job.clone()));
                }
                driving
            }
            Op::BeginImport { .. } | Op::EndImport => driving,
            Op::Status(bytes) => {
                // Informational: a plain write, by the driver only.
                if driving {
                    self.pending_write = Some(SharedOp::Write {
                        key: STATUS_KEY,
                        value: bytes.clone(),
                        cas: None,
                    });
                    return Some((op, Step::WriteStatus));
                }
                false
            }
        };
        needed.then_some((op, Step::ReadDriver))
    }

    pub fn handle_read(&mut self, value: SharedValue, now: Now) {
        self.now = now;
        self.waiting = false;
        let Some((op, step)) = self.current.take() else {
            return;
        };
        match step {
            Step::ReadDriver => self.on_driver_read(op, value),
            Step::ReadInherit { record } => {
                let published = value.bytes.and_then(|bytes| {
                    let record = published::decode(&bytes).ok()?;
                    Some((record.meta, record.config.to_vec()))
                });
                if let Role::Driver { floor, .. } = &mut self.role {
                    *floor = published.as_ref().map_or(0, |(m, _)| m.generation);
                }
                self.current = Some((op, Step::ReadInheritStatus { record, published }));
            }
            Step::ReadInheritStatus { record, published } => {
                self.outcomes.push_back(Outcome::Took {
                    record,
                    published,
                    status: value.bytes,
                });
            }
            Step::ReadConfig { meta, attempt } => {
                self.write_if_newer(op, CONFIG_KEY, meta, attempt, &value)
            }
            Step::ReadGeneration { meta, attempt } => {
                self.write_if_newer(op, GENERATION_KEY, meta, attempt, &value)
            }
            // A read answer while a write was expected: ignore it.
            other => self.current = Some((op, other)),
        }
    }

    pub fn handle_write(&mut self, result: WriteResult, now: Now) {
        self.now = now;
        self.waiting = false;
        let Some((op, step)) = self.current.take() else {
            return;
        };
        if let WriteResult::Refused(status) = &result {
            let key = match &step {
                Step::WriteConfig { .. } => CONFIG_KEY,
                Step::WriteGeneration { .. } => GENERATION_KEY,
                Step::WriteStatus => STATUS_KEY,
                _ => DRIVER_KEY,
            };
            self.events.push(Event::SharedDataRefused(HostRefusal {
                key,
                status: status.clone(),
            }));
        }
        match step {
            Step::WriteDriver {
                record,
                claim,
                creating,
            } => self.on_driver_written(op, record, claim, creating, result),
            Step::WriteConfig { meta, attempt } => match result {
                WriteResult::Done => {
                    self.current = Some((op, Step::ReadGeneration { meta, attempt: 0 }));
                }
                WriteResult::CasMismatch if attempt < MAX_CAS_RETRIES => {
                    let attempt = attempt + 1;
                    self.current = Some((op, Step::ReadConfig { meta, attempt }));
                }
                _ => self.publish_failed(),
            },
            Step::WriteGeneration { meta, attempt } => match result {
                WriteResult::Done => {
                    self.job = None;
                    self.events.push(Event::Published {
                        generation: meta.generation,
                        revision: meta.revision.clone(),
                        source: meta.source,
                    });
                    self.outcomes.push_back(Outcome::Published(meta));
                }
                WriteResult::CasMismatch if attempt < MAX_CAS_RETRIES => {
                    let attempt = attempt + 1;
                    self.current = Some((op, Step::ReadGeneration { meta, attempt }));
                }
                _ => self.publish_failed(),
            },
            Step::WriteStatus => {}
            other => self.current = Some((op, other)),
        }
    }

    /// What came of the work so far, oldest first.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    // ---- the driver record ----

    fn on_driver_read(&mut self, op: Op, value: SharedValue) {
        let now = self.now.mono;
        let bytes = value.bytes.clone();
        if self.create_refused && bytes.is_none() && !self.reported_create_refusal {
            // The create failed its CAS, yet the key is still absent: this
            // host checks a CAS against absent keys too.
            self.reported_create_refusal = true;
            self.events.push(Event::CreateCasRefused);
        }
        let record = bytes.as_deref().and_then(DriverRecord::decode);
        if bytes.is_some() && record.is_none() {
            self.events.push(Event::DriverRecordUnreadable);
        }
        match self.role.clone() {
            Role::Driver { mine, .. } => {
                if record.as_ref() != Some(&mine) {
                    self.lose(DriverLoss::TakenOver);
                    if let Op::Publish(job) = op {
                        self.outcomes.push_back(Outcome::PublishFailed(job));
                    }
                    return;
                }
                // Counters read from shared data never overflow: any
                // bytes there may be decoded (a corrupted record, another
                // build), and an overflow would panic the VM.
                let mut next = mine.clone();
                next.renewals = next.renewals.wrapping_add(1);
                match &op {
                    Op::Tick | Op::Revalidate => {}
                    Op::Release => next.released = true,
                    Op::Publish(job) => {
                        let floor = match self.role {
                            Role::Driver { floor, .. } => floor,
                            Role::Follower { .. } => 0,
                        };
                        let Some(generation) = next.generation.max(floor).checked_add(1) else {
                            // No generation is left to hand out: never reuse one.
                            if let Op::Publish(job) = op {
                                self.outcomes.push_back(Outcome::PublishFailed(job));
                            }
                            return;
                        };
                        next.generation = generation;
                        if job.source == Source::ControlPlane {
                            next.cp_answered = true;
                        }
                    }
                    Op::BeginImport { max_attempts } => {
                        let refusal = if mine.cp_answered {
                            Some(ImportRefusal::CpAnswered)
                        } else if max_attempts.is_some_and(|m| mine.import_attempts >= m) {
                            Some(ImportRefusal::Exhausted)
                        } else {
                            None
                        };
                        if let Some(r) = refusal {
                            self.outcomes.push_back(Outcome::ImportRefused(r));
                            return;
                        }
                        next.import_attempts = next.import_attempts.saturating_add(1);
                        next.import_in_flight = true;
                    }
                    Op::EndImport => next.import_in_flight = false,
                    Op::Status(_) => {}
                }
                let step = Step::WriteDriver {
                    record: next.clone(),
                    claim: false,
                    creating: false,
                };
                self.write((op, step), DRIVER_KEY, next.encode(), &value);
            }
            Role::Follower { observed } => {
                let claim = match (&bytes, &record) {
                    (None, _) => Some(DriverRecord {
                        owner: self.me.clone(),
                        epoch: 1,
                        renewals: 0,
                        released: false,
                        node_id: self.proposed_node_id.clone(),
                        generation: 0,
                        cp_answered: false,
                        import_attempts: 0,
                        import_in_flight: false,
                    }),
                    (Some(b), r) => {
                        let expired = match &observed {
                            Some((seen, since)) if seen == b => now.since(*since) >= LEASE_TTL,
                            _ => {
                                self.role = Role::Follower {
                                    observed: Some((b.clone(), now)),
                                };
                                false
                            }
                        };
                        let takeable = match r {
                            // Unreadable: nobody can be holding it.
                            None => true,
                            Some(r) => r.released || r.owner == self.me || expired,
                        };
                        takeable.then(|| {
                            let old = r.clone().unwrap_or_else(|| DriverRecord {
                                owner: String::new(),
                                epoch: 0,
                                renewals: 0,
                                released: true,
                                node_id: self.proposed_node_id.clone(),
                                generation: 0,
                                cp_answered: false,
                                import_attempts: 0,
                                import_in_flight: false,
                            });
                            DriverRecord {
                                owner: self.me.clone(),
                                epoch: old.epoch.wrapping_add(1),
                                renewals: 0,
                                released: false,
                                ..old
                            }
                        })
                    }
                };
                let Some(record) = claim else {
                    self.outcomes.push_back(Outcome::Following);
                    return;
                };
                let creating = bytes.is_none();
                let step = Step::WriteDriver {
                    record: record.clone(),
                    claim: true,
                    creating,
                };
                // A claim is the follower's tick; other ops wait for it.
                self.write((Op::Tick, step), DRIVER_KEY, record.encode(), &value);
            }
        }
    }

    fn on_driver_written(
        &mut self,
        op: Op,
        record: DriverRecord,
        claim: bool,
        creating: bool,
        result: WriteResult,
    ) {
        let now = self.now.mono;
        match result {
            WriteResult::Done => {
                self.create_refused = false;
                let valid_until = now.plus(LEASE_TTL - LEASE_MARGIN);
                if claim {
                    self.role = Role::Driver {
                        mine: record.clone(),
                        valid_until,
                        floor: 0,
                    };
                    self.current = Some((op, Step::ReadInherit { record }));
                    return;
                }
                if let Role::Driver {
                    mine,
                    valid_until: v,
                    ..
                } = &mut self.role
                {
                    *mine = record.clone();
                    *v = valid_until;
                }
                match op {
                    Op::Tick | Op::Revalidate => self.outcomes.push_back(Outcome::Renewed),
                    Op::Release => {
                        self.role = Role::Follower { observed: None };
                        self.events.push(Event::DriverLost {
                            root: self.context_id,
                            reason: DriverLoss::Released,
                        });
                        self.outcomes.push_back(Outcome::Lost(DriverLoss::Released));
                    }
                    Op::BeginImport { .. } => self.outcomes.push_back(Outcome::ImportGranted {
                        attempt: record.import_attempts,
                    }),
                    Op::EndImport | Op::Status(_) => {}
                    Op::Publish(job) => {
                        let meta = Meta {
                            generation: record.generation,
                            source: job.source,
                            revision: job.revision.clone(),
                            sha256: job.sha256.clone(),
                        };
                        self.job = Some(job.clone());
                        self.current =
                            Some((Op::Publish(job), Step::ReadConfig { meta, attempt: 0 }));
                    }
                }
            }
            WriteResult::CasMismatch if creating && !self.create_refused => {
                // Someone created the key first, or the host refuses a CAS
                // on an absent key: the next read tells which.
                self.create_refused = true;
                self.current = Some((op, Step::ReadDriver));
            }
            WriteResult::CasMismatch | WriteResult::Refused(_) => {
                if claim {
                    // Another root won the race: observe afresh.
                    self.role = Role::Follower { observed: None };
                    self.outcomes.push_back(Outcome::Following);
                    return;
                }
                // Only another root's write changes the record under us.
                self.lose(DriverLoss::TakenOver);
                if let Op::Publish(job) = op {
                    self.outcomes.push_back(Outcome::PublishFailed(job));
                }
            }
        }
    }

    /// Prepares the write for `step`, with the CAS of what was just read:
    /// [`CREATE_CAS`] for an absent key (a plain write if the host refused
    /// that once already).
    fn write(
        &mut self,
        (op, step): (Op, Step),
        key: &'static str,
        value: Vec<u8>,
        read: &SharedValue,
    ) {
        let cas = match (&read.bytes, read.cas) {
            (Some(_), Some(cas)) => Some(cas),
            (Some(_), None) => None,
            (None, _) if self.create_refused => None,
            (None, _) => Some(CREATE_CAS),
        };
        self.pending_write = Some(SharedOp::Write { key, value, cas });
        self.current = Some((op, step));
    }

    /// A publish step on the config record or the counter: write
    /// `meta`'s generation there unless a newer one is already stored.
    fn write_if_newer(
        &mut self,
        op: Op,
        key: &'static str,
        meta: Meta,
        attempt: u32,
        read: &SharedValue,
    ) {
        let stored = read.bytes.as_deref().and_then(|b| match key {
            CONFIG_KEY => published::record_generation(b),
            _ => published::decode_generation(b),
        });
        if let Some(newer) = stored.filter(|g| *g >= meta.generation) {
            return self.superseded(meta, newer);
        }
        let (bytes, step) = match (key, &self.job) {
            (CONFIG_KEY, Some(job)) => (
                published::encode(&meta, &job.config, &job.routes),
                Step::WriteConfig { meta, attempt },
            ),
            (CONFIG_KEY, None) => return,
            _ => (
                published::encode_generation(meta.generation),
                Step::WriteGeneration { meta, attempt },
            ),
        };
        self.write((op, step), key, bytes, read);
    }

    fn lose(&mut self, reason: DriverLoss) {
        if self.is_driver() {
            self.events.push(Event::DriverLost {
                root: self.context_id,
                reason,
            });
            self.outcomes.push_back(Outcome::Lost(reason));
        }
        self.role = Role::Follower { observed: None };
        self.job = None;
        // Nothing queued may act on the strength of the lost lease.
        for op in std::mem::take(&mut self.ops) {
            if let Op::Publish(job) = op {
                self.outcomes.push_back(Outcome::PublishFailed(job));
            }
        }
    }

    fn superseded(&mut self, meta: Meta, newer: u64) {
        self.job = None;
        self.events.push(Event::PublishSuperseded {
            generation: meta.generation,
            newer,
        });
        self.outcomes.push_back(Outcome::Superseded(meta));
    }

    fn publish_failed(&mut self) {
        if let Some(job) = self.job.take() {
            self.outcomes.push_back(Outcome::PublishFailed(job));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Shared data with Envoy's CAS rules; `refuse` makes the next write
    /// to that key fail as the host would.
    #[derive(Default)]
    struct Shared {
        map: HashMap<&'static str, (Vec<u8>, u32)>,
        cas: u32,
        refuse: Option<&'static str>,
    }

    impl Shared {
        /// Runs a coordinator's calls until it has none.
        fn run(&mut self, c: &mut Coordinator, now: Now) -> Vec<Outcome> {
            while let Some(op) = c.poll_shared() {
                match op {
                    SharedOp::Read { key } => {
                        let value = match self.map.get(key) {
                            Some((v, cas)) => SharedValue {
                                bytes: Some(v.clone()),
                                cas: Some(*cas),
                            },
                            None => SharedValue::default(),
                        };
                        c.handle_read(value, now);
                    }
                    SharedOp::Write { key, value, cas } => {
                        let result = if self.refuse.take_if(|k| *k == key).is_some() {
                            WriteResult::Refused("InternalFailure".into())
                        } else {
                            match (self.map.get(key), cas) {
                                (Some((_, stored)), Some(cas)) if cas != *stored => {
                                    WriteResult::CasMismatch
                                }
                                _ => {
                                    self.cas += 1;
                                    self.map.insert(key, (value, self.cas));
                                    WriteResult::Done
                                }
                            }
                        };
                        c.handle_write(result, now);
                    }
                }
            }
            std::iter::from_fn(|| c.poll_outcome()).collect()
        }

        fn generation(&self) -> Option<u64> {
            self.map
                .get(GENERATION_KEY)
                .and_then(|(v, _)| published::decode_generation(v))
        }
    }

    fn job(revision: &str) -> PublishJob {
        PublishJob {
            source: Source::ControlPlane,
            revision: revision.into(),
            sha256: format!("sha-{revision}"),
            config: br#"{"revision":"r","routes":[]}"#.to_vec(),
            routes: b"FCRT".to_vec(),
        }
    }

    fn root(n: u32) -> Coordinator {
        Coordinator::new(n, format!("root-{n}"), format!("node-{n}"))
    }

    fn driving(shared: &mut Shared, n: u32, now: Now) -> Coordinator {
        let mut c = root(n);
        c.tick(now);
        let out = shared.run(&mut c, now);
        assert!(matches!(out[..], [Outcome::Took { .. }]), "{out:?}");
        c
    }

    /// A publish the host refused never gives its generation to another
    /// record (the old driver reset its count to 1 and could reuse it).
    #[test]
    fn a_failed_publish_never_reuses_its_generation() {
        let mut shared = Shared::default();
        let now = Now::at_millis(0);
        let mut c = driving(&mut shared, 1, now);
        shared.refuse = Some(CONFIG_KEY);
        c.publish(job("r1"), now);
        let out = shared.run(&mut c, now);
        assert!(matches!(&out[..], [Outcome::PublishFailed(j)] if j.revision == "r1"));
        c.publish(job("r2"), now);
        let out = shared.run(&mut c, now);
        assert!(
            matches!(&out[..], [Outcome::Published(m)] if m.generation == 2 && m.revision == "r2"),
            "{out:?}"
        );
        assert_eq!(shared.generation(), Some(2));
    }

    /// Generations are handed out process-wide: a new driver continues
    /// after the last one, never from 1.
    #[test]
    fn a_new_driver_continues_the_generations() {
        let mut shared = Shared::default();
        let t0 = Now::at_millis(0);
        let mut a = driving(&mut shared, 1, t0);
        a.publish(job("r1"), t0);
        shared.run(&mut a, t0);
        a.release(t0);
        let out = shared.run(&mut a, t0);
        assert_eq!(out, vec![Outcome::Lost(DriverLoss::Released)]);
        let t1 = Now::at_millis(200);
        let mut b = root(2);
        b.tick(t1);
        let out = shared.run(&mut b, t1);
        let Outcome::Took {
            record, published, ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!(record.node_id, "node-1", "the process keeps its node id");
        assert_eq!(published.as_ref().map(|(m, _)| m.generation), Some(1));
        b.publish(job("r2"), t1);
        let out = shared.run(&mut b, t1);
        assert!(matches!(&out[..], [Outcome::Published(m)] if m.generation == 2));
    }

    /// A root whose record was taken over learns it at its next read and
    /// publishes nothing; the record holder is not disturbed.
    #[test]
    fn a_root_that_lost_the_lease_never_publishes() {
        let mut shared = Shared::default();
        let t0 = Now::at_millis(0);
        let mut a = driving(&mut shared, 1, t0);
        // B sees the record unchanged for the TTL and takes it.
        let mut b = root(2);
        b.tick(t0);
        assert_eq!(shared.run(&mut b, t0), vec![Outcome::Following]);
        let later = Now::at_millis(2_000);
        b.tick(later);
        assert!(matches!(
            shared.run(&mut b, later)[..],
            [Outcome::Took { .. }]
        ));
        // A, stalled all along, now tries to publish.
        a.publish(job("late"), later);
        let out = shared.run(&mut a, later);
        assert!(
            out.contains(&Outcome::Lost(DriverLoss::TakenOver)),
            "{out:?}"
        );
        assert!(
            matches!(out.last(), Some(Outcome::PublishFailed(_))),
            "{out:?}"
        );
        assert_eq!(shared.generation(), None);
        assert!(!a.is_driver() && b.is_driver());
    }

    /// A follower does not take a record that keeps changing, however
    /// long it watches; it takes a released one at once.
    #[test]
    fn followers_wait_for_a_silent_holder_and_take_a_released_one_at_once() {
        let mut shared = Shared::default();
        let mut a = driving(&mut shared, 1, Now::at_millis(0));
        let mut b = root(2);
        for ms in (0..10_000).step_by(200) {
            let now = Now::at_millis(ms);
            a.tick(now);
            assert_eq!(shared.run(&mut a, now), vec![Outcome::Renewed]);
            b.tick(now);
            assert_eq!(shared.run(&mut b, now), vec![Outcome::Following]);
        }
        let now = Now::at_millis(10_000);
        a.release(now);
        shared.run(&mut a, now);
        b.tick(now);
        assert!(matches!(
            shared.run(&mut b, now)[..],
            [Outcome::Took { .. }]
        ));
    }

    /// The import is granted once per process, and never after a CP
    /// config was published.
    #[test]
    fn imports_are_granted_once_and_never_after_the_cp_answered() {
        let mut shared = Shared::default();
        let now = Now::at_millis(0);
        let mut a = driving(&mut shared, 1, now);
        a.begin_import(Some(1), now);
        assert_eq!(
            shared.run(&mut a, now),
            vec![Outcome::ImportGranted { attempt: 1 }]
        );
        a.begin_import(Some(1), now);
        assert_eq!(
            shared.run(&mut a, now),
            vec![Outcome::ImportRefused(ImportRefusal::Exhausted)]
        );
        let mut shared = Shared::default();
        let mut b = driving(&mut shared, 2, now);
        b.publish(job("r1"), now);
        shared.run(&mut b, now);
        b.begin_import(Some(1), now);
        assert_eq!(
            shared.run(&mut b, now),
            vec![Outcome::ImportRefused(ImportRefusal::CpAnswered)]
        );
    }

    /// Two roots creating the record at once: the CAS that only an absent
    /// key passes lets exactly one of them drive.
    #[test]
    fn only_one_of_two_creators_drives() {
        let mut shared = Shared::default();
        let now = Now::at_millis(0);
        let (mut a, mut b) = (root(1), root(2));
        a.tick(now);
        b.tick(now);
        // Both read the key absent before either writes.
        let (Some(ra), Some(rb)) = (a.poll_shared(), b.poll_shared()) else {
            panic!("reads")
        };
        assert_eq!((&ra, &rb), (&SharedOp::Read { key: DRIVER_KEY }, &ra));
        a.handle_read(SharedValue::default(), now);
        b.handle_read(SharedValue::default(), now);
        let out_a = shared.run(&mut a, now);
        let out_b = shared.run(&mut b, now);
        let took = |o: &[Outcome]| o.iter().any(|o| matches!(o, Outcome::Took { .. }));
        assert!(took(&out_a) != took(&out_b), "{out_a:?} {out_b:?}");
    }
}
