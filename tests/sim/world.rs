//! A deterministic simulation of a fleet: several proxy processes, each
//! with several root contexts (one per thread, as in Envoy) plus a canary,
//! all running the real [`Root`] core, against a simulated store and CP.
//!
//! Everything is driven by one seeded event queue. Each hostcall a root
//! makes is its own step, so another root's steps (and faults) can fall
//! between any two of them, as between threads of a real process.
//! Invariants are checked after every step ([`super::checks`]).

use super::checks::Checker;
use super::host::{Cp, SharedData, Store, TokenServer};
use fallback_config::action::{CallKind, Token};
use fallback_config::clock::HostTime;
use fallback_config::event::Event;
use fallback_config::http::{HttpRequest, HttpResponse};
use fallback_config::process::{SharedOp, WriteResult};
use fallback_config::published::{CONFIG_KEY, DRIVER_KEY, GENERATION_KEY};
use fallback_config::rng::Rng;
use fallback_config::root::{Action, Root};
use fallback_config::time::Timestamp;
use fallback_config::worker::WorkerCache;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;

pub const TICK_MS: u64 = 200;
pub const THREADS: usize = 3;

/// How a process is configured.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub import: bool,
    pub export: bool,
    /// `None`: the default (per process).
    pub node_id: Option<String>,
    /// The host answers the WASI monotonic clock.
    pub monotonic: bool,
    /// GCS (an access token from a token endpoint) instead of S3.
    pub gcs: bool,
    pub storage_timeout_ms: u64,
    /// Signs and encrypts snapshots, and requires signatures (the keys of
    /// [`super::host::snapshot_env`]); a fleet is protected or not as a
    /// whole.
    pub protected: bool,
    /// A bootstrap service drives (plugin `role` `driver`, on its own
    /// thread, [`SERVICE_THREAD`]); the filter's roots are `worker`s.
    pub service: bool,
}

/// The thread of a process's bootstrap service (the main thread): no
/// request reaches it.
pub const SERVICE_THREAD: usize = THREADS;

impl NodeSpec {
    /// The plugin JSON of a root on `thread`.
    pub fn plugin(&self, thread: usize) -> String {
        let role = match (self.service, thread == SERVICE_THREAD) {
            (false, _) => "any",
            (true, true) => "driver",
            (true, false) => "worker",
        };
        let node = self
            .node_id
            .as_ref()
            .map(|n| format!(r#","node_id":"{n}""#))
            .unwrap_or_default();
        let (url, endpoint) = match self.gcs {
            true => ("gs://bkt/pre", "http://gcs:9000"),
            false => ("s3://bkt/pre", "http://store:9000"),
        };
        format!(
            r#"{{"cluster_fallback_config_import":{},"cluster_fallback_config_export":{},
            "cluster_fallback_config_storage":"{url}"{node},
            "storage":{{"endpoint":"{endpoint}","timeout_ms":{}}},
            "control_plane":{{"timeout_ms":1000,"poll_interval_ms":500}},
            "import":{{"retry_initial_ms":200,"retry_max_ms":2000}},
            "election":{{"lease_ttl_ms":3000,"renew_interval_ms":1000}},
            "role":"{role}"}}"#,
            self.import, self.export, self.storage_timeout_ms
        )
    }
}

/// A host callback waiting for its thread.
#[derive(Debug)]
pub enum Callback {
    Tick,
    Response(Token, HttpResponse),
    Done,
}

/// A call the host has dispatched and not yet answered.
#[derive(Clone, Debug)]
pub struct InFlight {
    pub token: Token,
    pub kind: CallKind,
}

pub struct SimRoot {
    pub uid: u32,
    pub context_id: u32,
    pub thread: usize,
    pub canary: bool,
    pub alive: bool,
    pub core: Root,
    /// A callback is being carried out (its hostcalls are steps).
    busy: bool,
    queue: VecDeque<Callback>,
    /// Host token → the call.
    pub calls: HashMap<u32, InFlight>,
    pub worker: WorkerCache,
    pub events: Vec<Event>,
    /// `on_done` is under way: the root dies when it finishes.
    dying: bool,
    /// Its thread is stuck until then.
    pub stalled_until: u64,
    /// Shared-data writes it made.
    pub writes: u32,
    /// Calls it sent: (kind, at).
    pub sent: Vec<(CallKind, u64)>,
    /// The tick period the core asked for (`Root::tick_period`, then
    /// `Action::SetTickPeriod`), in ms.
    pub tick_ms: u64,
}

pub struct Proc {
    pub index: usize,
    /// Grows at every restart: events of a dead incarnation are dropped.
    pub incarnation: u32,
    pub alive: bool,
    pub spec: NodeSpec,
    pub shared: SharedData,
    pub roots: Vec<SimRoot>,
    /// Wall clock = simulated time + this.
    pub wall_offset_ms: i64,
    /// Nothing of this process runs before this instant (SIGSTOP).
    pub paused_until: u64,
    next_host_token: u32,
    next_context: u32,
    pub started_at: u64,
}

impl Proc {
    pub fn id(&self) -> String {
        format!("p{}.{}", self.index, self.incarnation)
    }

    /// The newest live non-canary root of a thread.
    pub fn current_root(&self, thread: usize) -> Option<usize> {
        self.roots
            .iter()
            .rposition(|r| r.alive && !r.dying && !r.canary && r.thread == thread)
    }
}

#[derive(Debug)]
enum Ev {
    Tick {
        p: usize,
        inc: u32,
        uid: u32,
    },
    Step {
        p: usize,
        inc: u32,
        uid: u32,
    },
    Run {
        p: usize,
        inc: u32,
        uid: u32,
    },
    Arrive(Box<Arrival>),
    Deliver {
        p: usize,
        inc: u32,
        uid: u32,
        host_token: u32,
        response: HttpResponse,
    },
    Request {
        p: usize,
        inc: u32,
        thread: usize,
    },
    Restart {
        p: usize,
    },
    Fault,
}

#[derive(Debug)]
struct Arrival {
    p: usize,
    inc: u32,
    uid: u32,
    host_token: u32,
    request: HttpRequest,
    duplicate: bool,
    answer_lost: bool,
}

/// Fault probabilities and the chaos period.
#[derive(Clone, Debug)]
pub struct Chaos {
    /// Faults happen only before this instant; after it the world heals.
    pub until_ms: u64,
    pub mean_fault_gap_ms: u64,
    pub loss: f64,
    pub duplicate: f64,
    pub slow: f64,
    /// A hostcall step is followed by a long stall of its thread.
    pub stall: f64,
}

impl Default for Chaos {
    fn default() -> Self {
        Chaos {
            until_ms: 35_000,
            mean_fault_gap_ms: 1_500,
            loss: 0.05,
            duplicate: 0.03,
            slow: 0.05,
            stall: 0.002,
        }
    }
}

pub struct World {
    pub now: u64,
    pub rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    pub procs: Vec<Proc>,
    pub store: Store,
    pub cp: Cp,
    pub tokens: TokenServer,
    pub chaos: Chaos,
    pub checker: Checker,
    next_uid: u32,
    /// The last lines of what happened, for a failure report.
    pub trace: VecDeque<String>,
    /// How many lines of trace to keep (`SIM_TRACE`, default 400).
    pub trace_cap: usize,
    pub steps: u64,
}

impl World {
    pub fn new(seed: u64, specs: Vec<NodeSpec>, chaos: Chaos) -> World {
        let mut w = World {
            now: 0,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            procs: Vec::new(),
            store: Store::protected(specs.iter().any(|s| s.protected)),
            cp: Cp {
                up: true,
                revision: 1,
            },
            tokens: TokenServer {
                lifetime_s: 60,
                ..TokenServer::default()
            },
            chaos,
            checker: Checker::default(),
            next_uid: 1,
            trace: VecDeque::new(),
            trace_cap: std::env::var("SIM_TRACE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(400),
            steps: 0,
        };
        for (index, spec) in specs.into_iter().enumerate() {
            w.procs.push(Proc {
                index,
                incarnation: 0,
                alive: false,
                spec,
                shared: SharedData::default(),
                roots: Vec::new(),
                wall_offset_ms: 0,
                paused_until: 0,
                next_host_token: 1,
                next_context: 1,
                started_at: 0,
            });
            w.start_proc(index);
        }
        if w.chaos.until_ms > 0 {
            let gap = w.chaos.mean_fault_gap_ms;
            let at = w.rand_range(0, gap * 2);
            w.schedule(at, Ev::Fault);
        }
        w
    }

    pub fn rand(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn rand_range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.next_u64() % (hi - lo + 1).max(1)
    }

    pub fn note(&mut self, line: String) {
        if self.trace.len() >= self.trace_cap {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>7} {line}", self.now));
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn host_time(&self, p: usize) -> HostTime {
        let proc = &self.procs[p];
        let wall = 1_800_000_000_000 + self.now as i64 + proc.wall_offset_ms;
        HostTime {
            monotonic_ns: proc
                .spec
                .monotonic
                .then_some((self.now + 1_000_000) * 1_000_000),
            wall: Timestamp::from_millis(wall as u64),
        }
    }

    /// Starts (or restarts) a process: fresh shared data, a canary that
    /// is configured and thrown away, and one root per thread.
    pub fn start_proc(&mut self, p: usize) {
        let now = self.now;
        {
            let proc = &mut self.procs[p];
            proc.incarnation += 1;
            proc.alive = true;
            proc.shared = SharedData::default();
            proc.roots.clear();
            proc.paused_until = 0;
            proc.started_at = now;
        }
        self.checker.reset_proc(p);
        self.note(format!("start {}", self.procs[p].id()));
        self.add_root(p, 0, true);
        for thread in 0..THREADS {
            self.add_root(p, thread, false);
        }
        if self.procs[p].spec.service {
            self.add_root(p, SERVICE_THREAD, false);
        }
        let inc = self.procs[p].incarnation;
        for thread in 0..THREADS {
            let at = now + self.rand_range(50, 400);
            self.schedule(at, Ev::Request { p, inc, thread });
        }
    }

    /// A new root context on `thread`, configured now; it ticks from one
    /// tick period later (unless it is the canary).
    pub fn add_root(&mut self, p: usize, thread: usize, canary: bool) -> u32 {
        let uid = self.next_uid;
        self.next_uid += 1;
        let random = self.rng.next_u64();
        // 32 bytes of the host's randomness, each word drawn afresh.
        let mut entropy = [0u8; 32];
        for chunk in entropy.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let time = self.host_time(p);
        let proc = &mut self.procs[p];
        let context_id = proc.next_context;
        proc.next_context += 1;
        let mut core = Root::new(context_id);
        let plugin = proc.spec.plugin(thread);
        let protected = proc.spec.protected;
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
            "GCP_SERVICE_ACCOUNT" => Some(super::host::service_account_json()),
            _ if protected => super::host::snapshot_env(k),
            _ => None,
        };
        if let Err(e) = core.configure(plugin.as_bytes(), &env, None, random, Some(entropy), time) {
            panic!("configure: {e}");
        }
        let worker = core.worker_cache();
        let mut root = SimRoot {
            uid,
            context_id,
            thread,
            canary,
            alive: true,
            core,
            busy: false,
            queue: VecDeque::new(),
            calls: HashMap::new(),
            worker,
            events: Vec::new(),
            dying: false,
            stalled_until: 0,
            writes: 0,
            sent: Vec::new(),
            tick_ms: 0,
        };
        root.tick_ms = root.core.tick_period().as_millis() as u64;
        let first_tick_ms = root.tick_ms;
        while let Some(e) = root.core.poll_event() {
            root.events.push(e);
        }
        let inc = proc.incarnation;
        proc.roots.push(root);
        if canary {
            // Envoy destroys the canary after configuring it.
            let at = self.now + 1;
            self.enqueue_at(p, uid, Callback::Done, at);
        } else {
            let at = self.now + first_tick_ms + self.rand_range(0, 20);
            self.schedule(at, Ev::Tick { p, inc, uid });
        }
        uid
    }

    fn root_index(&self, p: usize, uid: u32) -> Option<usize> {
        self.procs[p].roots.iter().position(|r| r.uid == uid)
    }

    fn enqueue_at(&mut self, p: usize, uid: u32, cb: Callback, at: u64) {
        let Some(i) = self.root_index(p, uid) else {
            return;
        };
        self.procs[p].roots[i].queue.push_back(cb);
        let inc = self.procs[p].incarnation;
        self.schedule(at, Ev::Run { p, inc, uid });
    }

    /// Runs until simulated time `until` (ms).
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.now = at;
            self.steps += 1;
            self.handle(ev);
            let mut checker = std::mem::take(&mut self.checker);
            let report = checker.check(self);
            self.checker = checker;
            if let Err(violation) = report {
                self.fail(&violation);
            }
        }
        self.now = self.now.max(until);
    }

    /// Reports a violated invariant with the last events, and stops.
    pub fn fail(&self, violation: &str) -> ! {
        let mut msg = format!(
            "invariant violated at {} ms: {violation}\nlast events:\n",
            self.now
        );
        for line in &self.trace {
            let _ = writeln!(msg, "  {line}");
        }
        panic!("{msg}");
    }

    fn live(&self, p: usize, inc: u32) -> bool {
        self.procs[p].alive && self.procs[p].incarnation == inc
    }

    /// Defers an event of a paused process to its resumption.
    fn paused(&mut self, p: usize, ev: Ev) -> Option<Ev> {
        let until = self.procs[p].paused_until;
        if self.now < until {
            let at = until + self.rand_range(0, 5);
            self.schedule(at, ev);
            return None;
        }
        Some(ev)
    }

    /// Defers an event of a stalled root (its thread is stuck).
    fn stalled(&mut self, p: usize, ev: Ev) -> Option<Ev> {
        let uid = match &ev {
            Ev::Run { uid, .. } | Ev::Step { uid, .. } => *uid,
            _ => return Some(ev),
        };
        let until = self
            .root_index(p, uid)
            .map_or(0, |i| self.procs[p].roots[i].stalled_until);
        if self.now < until {
            self.schedule(until, ev);
            return None;
        }
        Some(ev)
    }

    /// Stalls one root's thread until `until`: no callback or hostcall of
    /// it runs before (ticks and answers queue up).
    pub fn stall_root(&mut self, p: usize, uid: u32, until: u64) {
        if let Some(i) = self.root_index(p, uid) {
            self.procs[p].roots[i].stalled_until = until;
        }
    }

    /// Shuts a root down (`on_done`), as Envoy does when it replaces it.
    pub fn shutdown_root(&mut self, p: usize, uid: u32) {
        let now = self.now;
        self.enqueue_at(p, uid, Callback::Done, now);
    }

    /// The uid of the root that drives process `p`, if any.
    pub fn driver(&self, p: usize) -> Option<u32> {
        self.procs[p]
            .roots
            .iter()
            .find(|r| r.alive && r.core.is_driver())
            .map(|r| r.uid)
    }

    /// Every event of process `p`'s roots so far, with the root's uid.
    pub fn events(&self, p: usize) -> Vec<(u32, &Event)> {
        self.procs[p]
            .roots
            .iter()
            .flat_map(|r| r.events.iter().map(move |e| (r.uid, e)))
            .collect()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { p, inc, uid } => {
                if !self.live(p, inc) {
                    return;
                }
                let Some(ev) = self.paused(p, Ev::Tick { p, inc, uid }) else {
                    return;
                };
                let _ = ev;
                let Some(i) = self.root_index(p, uid) else {
                    return;
                };
                if !self.procs[p].roots[i].alive || self.procs[p].roots[i].dying {
                    return;
                }
                // Envoy does not queue ticks: one pending at most.
                let pending = self.procs[p].roots[i]
                    .queue
                    .iter()
                    .any(|c| matches!(c, Callback::Tick));
                if !pending {
                    let now = self.now;
                    self.enqueue_at(p, uid, Callback::Tick, now);
                }
                let at = self.now + self.procs[p].roots[i].tick_ms;
                self.schedule(at, Ev::Tick { p, inc, uid });
            }
            Ev::Run { p, inc, uid } => {
                if !self.live(p, inc) {
                    return;
                }
                let Some(_) = self.paused(p, Ev::Run { p, inc, uid }) else {
                    return;
                };
                let Some(_) = self.stalled(p, Ev::Run { p, inc, uid }) else {
                    return;
                };
                self.run_callback(p, uid);
            }
            Ev::Step { p, inc, uid } => {
                if !self.live(p, inc) {
                    return;
                }
                let Some(_) = self.paused(p, Ev::Step { p, inc, uid }) else {
                    return;
                };
                let Some(_) = self.stalled(p, Ev::Step { p, inc, uid }) else {
                    return;
                };
                self.step(p, uid);
            }
            Ev::Arrive(a) => self.arrive(*a),
            Ev::Deliver {
                p,
                inc,
                uid,
                host_token,
                response,
            } => {
                if !self.live(p, inc) {
                    return;
                }
                let Some(i) = self.root_index(p, uid) else {
                    return;
                };
                let root = &mut self.procs[p].roots[i];
                if !root.alive {
                    return;
                }
                // Exactly one callback per call: the answer or the timeout.
                let Some(call) = root.calls.remove(&host_token) else {
                    return;
                };
                let now = self.now;
                self.enqueue_at(p, uid, Callback::Response(call.token, response), now);
            }
            Ev::Request { p, inc, thread } => {
                if !self.live(p, inc) {
                    return;
                }
                if let Some(i) = self.procs[p].current_root(thread) {
                    if self.now >= self.procs[p].paused_until {
                        let proc = &mut self.procs[p];
                        let root = &mut proc.roots[i];
                        root.worker.begin("/e1");
                        while let Some(key) = root.worker.poll_read() {
                            root.worker
                                .handle_read(proc.shared.bytes(key).map(<[u8]>::to_vec));
                        }
                        if let Some(e) = root.worker.take_event() {
                            root.events.push(e);
                        }
                    }
                }
                let at = self.now + self.rand_range(100, 800);
                self.schedule(at, Ev::Request { p, inc, thread });
            }
            Ev::Restart { p } => {
                if !self.procs[p].alive {
                    self.start_proc(p);
                }
            }
            Ev::Fault => self.fault(),
        }
    }

    /// Starts the next queued callback of a root whose thread is free.
    fn run_callback(&mut self, p: usize, uid: u32) {
        let Some(i) = self.root_index(p, uid) else {
            return;
        };
        let time = self.host_time(p);
        let proc = &mut self.procs[p];
        let root = &mut proc.roots[i];
        if !root.alive || root.busy {
            return;
        }
        let Some(cb) = root.queue.pop_front() else {
            return;
        };
        let what = match &cb {
            Callback::Tick => "tick".to_string(),
            Callback::Response(t, r) => format!("answer token {t} status {}", r.status),
            Callback::Done => "on_done".to_string(),
        };
        match cb {
            Callback::Tick => {
                root.core.handle_tick(time);
                // As the shell does after each tick: the worker looks for
                // a new generation outside any request.
                root.worker.begin_tick();
                while let Some(key) = root.worker.poll_read() {
                    root.worker
                        .handle_read(proc.shared.bytes(key).map(<[u8]>::to_vec));
                }
            }
            Callback::Response(token, response) => {
                root.core.handle_http_response(token, response, time)
            }
            Callback::Done => {
                root.dying = true;
                root.core.handle_done(time);
            }
        }
        root.busy = true;
        let ctx = root.context_id;
        let id = self.procs[p].id();
        self.note(format!("{id} root {ctx}: {what}"));
        let inc = self.procs[p].incarnation;
        let at = self.now + self.rand_range(0, 2);
        self.schedule(at, Ev::Step { p, inc, uid });
    }

    /// One hostcall of a busy root.
    fn step(&mut self, p: usize, uid: u32) {
        let Some(i) = self.root_index(p, uid) else {
            return;
        };
        if !self.procs[p].roots[i].alive {
            return;
        }
        let time = self.host_time(p);
        let action = self.procs[p].roots[i].core.poll_action(time);
        let inc = self.procs[p].incarnation;
        let Some(action) = action else {
            // The callback is over.
            let id = self.procs[p].id();
            let mut lines = Vec::new();
            let proc = &mut self.procs[p];
            let root = &mut proc.roots[i];
            while let Some(e) = root.core.poll_event() {
                lines.push(format!("{id} root {}: {e}", root.context_id));
                root.events.push(e);
            }
            for line in lines {
                self.note(line);
            }
            let proc = &mut self.procs[p];
            let root = &mut proc.roots[i];
            root.busy = false;
            if root.dying {
                // The host cancels the calls of a destroyed context.
                root.alive = false;
                root.calls.clear();
                return;
            }
            if !root.queue.is_empty() {
                let now = self.now;
                self.schedule(now, Ev::Run { p, inc, uid });
            }
            return;
        };
        match action {
            Action::Shared(op) => {
                // The renewal right before a dispatch and the dispatch are
                // two adjacent hostcalls: no stall is modelled between them
                // (the one window no protocol can close, see root.rs).
                let renewal = matches!(&op, SharedOp::Write { key, .. } if *key == DRIVER_KEY);
                self.shared(p, i, op);
                if renewal {
                    let at = self.now;
                    self.schedule(at, Ev::Step { p, inc, uid });
                    return;
                }
            }
            Action::Send(call) => {
                let host_token = self.procs[p].next_host_token;
                self.procs[p].next_host_token += 1;
                let timeout = u64::try_from(call.request.timeout.as_millis()).unwrap_or(1000);
                let root = &mut self.procs[p].roots[i];
                root.calls.insert(
                    host_token,
                    InFlight {
                        token: call.token,
                        kind: call.kind,
                    },
                );
                let ctx = root.context_id;
                root.sent.push((call.kind, self.now));
                let id = self.procs[p].id();
                self.note(format!(
                    "{id} root {ctx}: send {:?} {} {} (token {})",
                    call.kind, call.request.method, call.request.path, call.token
                ));
                if let Err(v) = self.checker.on_send(p, call.kind, &self.procs[p]) {
                    self.fail(&v);
                }
                // The host's timeout always answers, if nothing else does.
                let timeout_answer = HttpResponse {
                    status: 504,
                    headers: vec![],
                    body: b"upstream request timeout".to_vec(),
                };
                let at = self.now + timeout;
                self.schedule(
                    at,
                    Ev::Deliver {
                        p,
                        inc,
                        uid,
                        host_token,
                        response: timeout_answer,
                    },
                );
                let chaos = self.now < self.chaos.until_ms;
                let lost = chaos && self.rand() < self.chaos.loss;
                if !lost {
                    let latency = self.latency(chaos);
                    let duplicate = chaos && self.rand() < self.chaos.duplicate;
                    let answer_lost = chaos && self.rand() < self.chaos.loss;
                    let at = self.now + latency;
                    self.schedule(
                        at,
                        Ev::Arrive(Box::new(Arrival {
                            p,
                            inc,
                            uid,
                            host_token,
                            request: call.request,
                            duplicate,
                            answer_lost,
                        })),
                    );
                }
            }
            Action::Metric(_) => {}
            Action::SetTickPeriod(period) => {
                if let Some(i) = self.root_index(p, uid) {
                    self.procs[p].roots[i].tick_ms = period.as_millis() as u64;
                }
            }
        }
        let chaos = self.now < self.chaos.until_ms;
        let stall = chaos && self.rand() < self.chaos.stall;
        let delay = if stall {
            let d = self.rand_range(500, 5_000);
            let id = self.procs[p].id();
            self.note(format!("{id}: a thread stalls for {d} ms mid-callback"));
            d
        } else {
            self.rand_range(0, 1)
        };
        let at = self.now + delay;
        self.schedule(at, Ev::Step { p, inc, uid });
    }

    fn latency(&mut self, chaos: bool) -> u64 {
        if chaos && self.rand() < self.chaos.slow {
            self.rand_range(300, 1_500)
        } else {
            self.rand_range(1, 40)
        }
    }

    fn shared(&mut self, p: usize, i: usize, op: SharedOp) {
        let uid = self.procs[p].roots[i].uid;
        match op {
            SharedOp::Read { key } => {
                let value = self.procs[p].shared.get(key);
                self.procs[p].roots[i].core.handle_shared_read(value);
            }
            SharedOp::Write { key, value, cas } => {
                self.procs[p].roots[i].writes += 1;
                if std::env::var("SIM_SHARED").is_ok() {
                    let id = self.procs[p].id();
                    let ctx = self.procs[p].roots[i].context_id;
                    let shown =
                        String::from_utf8_lossy(&value[..value.len().min(120)]).into_owned();
                    self.note(format!("{id} root {ctx}: set {key} cas {cas:?} {shown}"));
                }
                let before = self.procs[p].shared.bytes(key).map(<[u8]>::to_vec);
                let result = self.procs[p].shared.set(key, &value, cas);
                if result == WriteResult::Done {
                    let owner = self.procs[p].roots[i]
                        .core
                        .owner()
                        .unwrap_or_default()
                        .to_string();
                    if let Err(v) =
                        self.checker
                            .on_shared_write(p, key, before.as_deref(), &value, &owner, uid)
                    {
                        self.fail(&v);
                    }
                    if key == CONFIG_KEY || key == GENERATION_KEY {
                        let id = self.procs[p].id();
                        let shown =
                            String::from_utf8_lossy(&value[..value.len().min(40)]).into_owned();
                        self.note(format!("{id}: {key} = {shown}"));
                    }
                }
                self.procs[p].roots[i].core.handle_shared_write(result);
            }
        }
    }

    fn arrive(&mut self, a: Arrival) {
        let writer = format!("p{}.{}/{}", a.p, a.inc, a.uid);
        let to_store = a.request.cluster == "object_storage";
        let gcs = a.request.authority == "gcs:9000";
        let mut response = match a.request.cluster.as_str() {
            "control_plane" => self.cp.handle(&a.request),
            "gcp_oauth" => self.tokens.handle(&a.request, self.now),
            _ => {
                let tokens = gcs.then_some(&self.tokens.issued);
                self.store.handle(&a.request, self.now, &writer, tokens)
            }
        };
        if a.duplicate && to_store {
            // The request reached the store twice; the second answer wins.
            let tokens = gcs.then_some(&self.tokens.issued);
            response = self.store.handle(&a.request, self.now + 1, &writer, tokens);
        }
        if a.answer_lost {
            return;
        }
        let chaos = self.now < self.chaos.until_ms;
        let at = self.now + self.latency(chaos);
        self.schedule(
            at,
            Ev::Deliver {
                p: a.p,
                inc: a.inc,
                uid: a.uid,
                host_token: a.host_token,
                response,
            },
        );
    }

    /// One random fault, then the next one.
    fn fault(&mut self) {
        if self.now >= self.chaos.until_ms {
            return;
        }
        let n = self.procs.len();
        let p = (self.rng.next_u64() % n as u64) as usize;
        let kind = self.rng.next_u64() % 10;
        let id = self.procs[p].id();
        match kind {
            0 if self.procs[p].alive => {
                self.note(format!("FAULT kill {id}"));
                self.checker.on_kill(p);
                self.procs[p].alive = false;
                let at = self.now + self.rand_range(500, 6_000);
                self.schedule_restart(p, at);
            }
            1 => {
                let d = self.rand_range(500, 8_000);
                self.note(format!("FAULT pause {id} for {d} ms"));
                self.procs[p].paused_until = self.now.max(self.procs[p].paused_until) + d;
            }
            2 => {
                let by: i64 = if self.rng.next_u64().is_multiple_of(2) {
                    3_600_000
                } else {
                    -3_600_000
                };
                self.note(format!("FAULT wall clock of {id} jumps {by} ms"));
                self.procs[p].wall_offset_ms += by;
            }
            3 if self.procs[p].alive => {
                self.note(format!("FAULT config update (ECDS) on {id}"));
                self.reconfigure(p);
            }
            4 => {
                self.cp.up = !self.cp.up;
                self.note(format!(
                    "FAULT CP {}",
                    if self.cp.up { "up" } else { "down" }
                ));
            }
            5 | 6 => {
                self.cp.revision += 1;
                let r = self.cp.revision;
                self.note(format!("CP serves r{r}"));
            }
            8 => {
                self.tokens.down = !self.tokens.down;
                let down = self.tokens.down;
                self.note(format!("FAULT token endpoint down: {down}"));
            }
            7 => {
                self.store.omit_etags = !self.store.omit_etags;
                let on = self.store.omit_etags;
                self.note(format!("FAULT store omits ETags: {on}"));
            }
            _ => {}
        }
        let gap = self.chaos.mean_fault_gap_ms;
        let at = self.now + self.rand_range(1, gap * 2);
        self.schedule(at, Ev::Fault);
    }

    fn schedule_restart(&mut self, p: usize, at: u64) {
        self.schedule(at, Ev::Restart { p });
    }

    /// ECDS: every thread gets a new root context; the old ones get
    /// `on_done`. Shared data stays. A bootstrap service is not the
    /// filter's: it stays.
    pub fn reconfigure(&mut self, p: usize) {
        let old: Vec<u32> = self.procs[p]
            .roots
            .iter()
            .filter(|r| r.alive && !r.canary && !r.dying && r.thread != SERVICE_THREAD)
            .map(|r| r.uid)
            .collect();
        self.add_root(p, 0, true);
        for thread in 0..THREADS {
            self.add_root(p, thread, false);
        }
        for uid in old {
            let at = self.now + self.rand_range(1, 30);
            self.enqueue_at(p, uid, Callback::Done, at);
        }
    }

    /// Puts snapshots of an older version (usable) and of a newer one
    /// (never to be read) in the store, as an upgrade leaves them.
    pub fn seed_other_versions(&mut self) {
        let stamp = Timestamp::from_secs(1_800_000_000);
        for (version, revision) in [("0.0.9", 0u32), ("9.9.9", 99)] {
            let keys = super::host::snapshot_keys();
            let protection = match self.store.protected {
                true => fallback_config::envelope::Protection {
                    signing: keys.signing.as_ref(),
                    encryption: keys.encryption.first().map(|k| (k, [revision as u8; 24])),
                },
                false => fallback_config::envelope::Protection::NONE,
            };
            let body = fallback_config::envelope::seal(
                fallback_config::envelope::Export {
                    config: super::host::cp_config(revision).as_bytes(),
                    revision: &format!("r{revision}"),
                    version,
                    exporter: "an-earlier-fleet",
                    exported_at: stamp,
                    term: 1,
                },
                protection,
            )
            .unwrap_or_default();
            self.store.objects.insert(
                format!("pre/{version}/config.json"),
                super::host::Stored {
                    body,
                    etag: format!("\"seed-{version}\""),
                    modified: stamp,
                },
            );
        }
    }

    /// Heals everything but the CP, which stays as `cp_up` says: the
    /// chaos is over.
    pub fn heal(&mut self, cp_up: bool) {
        self.cp.up = cp_up;
        self.store.omit_etags = false;
        self.tokens.down = false;
        for p in 0..self.procs.len() {
            self.procs[p].paused_until = self.procs[p].paused_until.min(self.now);
            if !self.procs[p].alive {
                self.start_proc(p);
            }
        }
    }
}
