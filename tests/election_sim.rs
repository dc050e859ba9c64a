//! Leader election among exporters, driven through the public sans-IO API:
//! several controllers, a simulated clock, a simulated object store with
//! real conditional-write semantics and its own clock, and a fake CP.
//! Faults are scripted: killed nodes, paused nodes (a stale leader), lost
//! answers, skewed local clocks. Every scenario checks the fencing
//! invariants on the history of `config.json` writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fallback_config::action::{Metric, Token};
use fallback_config::clock::{Instant, Now};
use fallback_config::controller::{Controller, Inherited, Output};
use fallback_config::envelope;
use fallback_config::http::{HttpRequest, HttpResponse};
use fallback_config::settings::Settings;
use fallback_config::time::Timestamp;
use std::collections::HashMap;
use std::time::Duration;

const STEP: Duration = Duration::from_millis(100);
const TTL_MS: u64 = 3000;
const RENEW_MS: u64 = 1000;
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn settings() -> Settings {
    settings_with(TTL_MS, RENEW_MS)
}

fn settings_with(ttl_ms: u64, renew_ms: u64) -> Settings {
    let json = format!(
        r#"{{"cluster_fallback_config_export":true,
            "cluster_fallback_config_storage":"s3://bkt/pre",
            "storage":{{"endpoint":"http://store:9000","timeout_ms":1000}},
            "control_plane":{{"timeout_ms":1000,"poll_interval_ms":500}},
            "election":{{"lease_ttl_ms":{ttl_ms},"renew_interval_ms":{renew_ms}}}}}"#
    );
    let env: HashMap<&str, &str> =
        [("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")].into();
    Settings::parse(json.as_bytes(), &|k| env.get(k).map(|v| v.to_string())).unwrap()
}

/// The store's clock at the start of every scenario.
const START: Timestamp = Timestamp::from_secs(1_800_000_000);

fn controller(settings: &Settings, id: &str) -> Controller {
    Controller::new(
        settings,
        id.to_string(),
        Inherited::default(),
        1,
        7,
        None,
        Now::at_millis(0),
    )
}

fn cp_config(n: u32) -> String {
    format!(r#"{{"revision":"r{n}","routes":[{{"name":"e","paths":["/e{n}"],"upstream":"u"}}]}}"#)
}

/// One stored object.
#[derive(Clone)]
struct Stored {
    body: Vec<u8>,
    etag: String,
    modified: Timestamp,
}

/// A `config.json` write that the store accepted.
#[derive(Clone, Debug)]
struct Write {
    node: String,
    term: u64,
    revision: u32,
}

/// An S3-like store: conditional PUTs (412), Last-Modified and Date by
/// its own clock, content-derived ETags like s3s-fs.
#[derive(Default)]
struct Store {
    objects: HashMap<String, Stored>,
    config_writes: Vec<Write>,
    next_etag: u64,
}

impl Store {
    fn handle(&mut self, req: &HttpRequest, now: Timestamp) -> HttpResponse {
        let header = |n: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        let date = ("date".to_string(), now.http_date());
        match req.method.as_str() {
            "GET" => match self.objects.get(&req.path) {
                Some(o) => HttpResponse {
                    status: 200,
                    headers: vec![
                        ("etag".into(), o.etag.clone()),
                        ("last-modified".into(), o.modified.http_date()),
                        date,
                    ],
                    body: o.body.clone(),
                },
                None => status(404, "<Error><Code>NoSuchKey</Code></Error>", date),
            },
            "PUT" => {
                let existing = self.objects.get(&req.path).map(|o| o.etag.clone());
                let ok = match (header("if-none-match"), header("if-match")) {
                    (Some("*"), _) => existing.is_none(),
                    (_, Some(tag)) => existing.as_deref() == Some(tag),
                    _ => true,
                };
                if !ok {
                    return status(412, "<Error><Code>PreconditionFailed</Code></Error>", date);
                }
                let body = req.body.clone().unwrap_or_default();
                self.next_etag += 1;
                let etag = format!("\"{}\"", self.next_etag);
                if req.path.ends_with("/config.json") {
                    let opened = envelope::open(&body, VERSION, &envelope::Trust::NONE)
                        .expect("a valid envelope");
                    self.config_writes.push(Write {
                        node: opened.exporter,
                        term: opened.term,
                        revision: opened.revision[1..].parse().unwrap(),
                    });
                }
                self.objects.insert(
                    req.path.clone(),
                    Stored {
                        body,
                        etag: etag.clone(),
                        modified: now,
                    },
                );
                HttpResponse {
                    status: 200,
                    headers: vec![("etag".into(), etag), date],
                    body: vec![],
                }
            }
            other => panic!("unexpected method {other}"),
        }
    }
}

fn status(status: u16, body: &str, date: (String, String)) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![date],
        body: body.as_bytes().to_vec(),
    }
}

struct Node {
    id: String,
    c: Controller,
    /// Local clock = store clock + skew.
    skew_ms: i64,
    alive: bool,
    paused: bool,
    /// Answers waiting to be delivered: (deliver at, token, answer).
    inbox: Vec<(Timestamp, Token, HttpResponse)>,
    exports: u32,
    storage_requests: u32,
    logs: Vec<String>,
}

impl Node {
    /// The node's time: its monotonic clock counts from the start of the
    /// simulation, its wall clock is the store's plus the skew.
    fn local(&self, server: Timestamp) -> Now {
        Now {
            mono: Instant::from_millis(server.as_millis() - START.as_millis()),
            wall: Timestamp((server.as_millis() as i64 + self.skew_ms) as u64),
        }
    }

    fn is_leader(&self) -> bool {
        let became = self.logs.iter().rposition(|l| l.contains("became leader"));
        let lost = self
            .logs
            .iter()
            .rposition(|l| l.contains("lost leadership") || l.contains("stood down"));
        match (became, lost) {
            (Some(b), Some(l)) => b > l,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

struct World {
    now: Timestamp,
    store: Store,
    nodes: Vec<Node>,
    cp_revision: u32,
    /// Drop the answer to every n-th storage request (0: never).
    drop_every: u64,
    sent: u64,
}

impl World {
    fn new(skews_ms: &[i64]) -> World {
        let nodes = skews_ms
            .iter()
            .enumerate()
            .map(|(i, &skew_ms)| {
                let id = format!("backup-{}", i + 1);
                Node {
                    c: controller(&settings(), &id),
                    id,
                    skew_ms,
                    alive: true,
                    paused: false,
                    inbox: Vec::new(),
                    exports: 0,
                    storage_requests: 0,
                    logs: Vec::new(),
                }
            })
            .collect();
        World {
            now: START,
            store: Store::default(),
            nodes,
            cp_revision: 1,
            drop_every: 0,
            sent: 0,
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now.plus(d);
        while self.now < end {
            self.step();
        }
    }

    fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now.since(start) <= limit {
            if done(self) {
                return Some(self.now.since(start));
            }
            self.step();
        }
        None
    }

    fn step(&mut self) {
        self.now = self.now.plus(STEP);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive || self.nodes[i].paused {
                continue;
            }
            let local = self.nodes[i].local(self.now);
            let (due, later): (Vec<_>, Vec<_>) = self.nodes[i]
                .inbox
                .drain(..)
                .partition(|(at, _, _)| *at <= self.now);
            self.nodes[i].inbox = later;
            for (_, token, answer) in due {
                self.nodes[i].c.on_response(token, answer, local);
                self.apply(i);
            }
            self.nodes[i].c.tick(local);
            self.apply(i);
        }
    }

    fn apply(&mut self, i: usize) {
        let events = self.nodes[i].c.take_events();
        self.nodes[i]
            .logs
            .extend(events.iter().map(ToString::to_string));
        for output in self.nodes[i].c.take_outputs() {
            match output {
                Output::Send(call) => {
                    let (token, request) = (call.token, call.request);
                    let answer = if request.cluster == "control_plane" {
                        let etag = format!("\"cp{}\"", self.cp_revision);
                        let matches = request
                            .headers
                            .iter()
                            .any(|(k, v)| k == "if-none-match" && *v == etag);
                        if matches {
                            HttpResponse {
                                status: 304,
                                headers: vec![],
                                body: vec![],
                            }
                        } else {
                            HttpResponse {
                                status: 200,
                                headers: vec![("etag".into(), etag)],
                                body: cp_config(self.cp_revision).into_bytes(),
                            }
                        }
                    } else {
                        self.nodes[i].storage_requests += 1;
                        self.sent += 1;
                        let answer = self.store.handle(&request, self.now);
                        if self.drop_every > 0 && self.sent.is_multiple_of(self.drop_every) {
                            continue; // the store acted, the answer is lost
                        }
                        answer
                    };
                    self.nodes[i]
                        .inbox
                        .push((self.now.plus(STEP), token, answer));
                }
                Output::Metric(Metric::ExportWritten) => self.nodes[i].exports += 1,
                Output::Metric(_)
                | Output::Publish(_)
                | Output::RequestImport { .. }
                | Output::EndImport
                | Output::Status(_) => {}
            }
        }
    }

    fn leaders(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.alive && !n.paused && n.is_leader())
            .map(|n| n.id.as_str())
            .collect()
    }

    fn stored(&self) -> Option<envelope::Opened> {
        let o = self
            .store
            .objects
            .get(&format!("/bkt/pre/{VERSION}/config.json"))?;
        Some(envelope::open(&o.body, VERSION, &envelope::Trust::NONE).unwrap())
    }

    fn stored_revision(&self) -> Option<String> {
        self.stored().map(|o| o.revision)
    }

    /// The fencing invariants over every accepted config.json write.
    fn check_fencing(&self) {
        let w = &self.store.config_writes;
        for pair in w.windows(2) {
            assert!(
                pair[1].term >= pair[0].term,
                "config.json term went back: {:?} then {:?}",
                pair[0],
                pair[1]
            );
            // Revisions only mean order when both came from the CP.
            let real = pair.iter().all(|w| w.node != "intruder");
            assert!(
                !real || pair[1].revision >= pair[0].revision,
                "config.json revision went back: {:?} then {:?}",
                pair[0],
                pair[1]
            );
            if pair[1].term == pair[0].term {
                assert_eq!(
                    pair[1].node, pair[0].node,
                    "two writers in term {}",
                    pair[0].term
                );
            }
        }
    }
}

#[test]
fn three_nodes_elect_exactly_one_writer() {
    let mut w = World::new(&[0, 0, 0]);
    w.run(Duration::from_secs(5));
    assert_eq!(w.leaders().len(), 1, "leaders: {:?}", w.leaders());
    assert_eq!(w.stored_revision().as_deref(), Some("r1"));
    let writers: Vec<_> = w
        .nodes
        .iter()
        .filter(|n| n.exports > 0)
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(writers.len(), 1, "writers: {writers:?}");
    assert_eq!(w.stored().unwrap().exporter, writers[0]);
    // Steady state: at most 2 storage requests per node per renew interval.
    let before: Vec<u32> = w.nodes.iter().map(|n| n.storage_requests).collect();
    let intervals = 10;
    w.run(Duration::from_millis(RENEW_MS * intervals));
    for (n, b) in w.nodes.iter().zip(before) {
        let per_interval = f64::from(n.storage_requests - b) / intervals as f64;
        assert!(
            per_interval <= 2.0,
            "{} made {per_interval} requests per interval",
            n.id
        );
        assert!(
            per_interval >= 0.9,
            "{} is not taking part ({per_interval})",
            n.id
        );
    }
    // New revisions are written by the leader only.
    w.cp_revision = 2;
    w.run(Duration::from_secs(2));
    assert_eq!(w.stored_revision().as_deref(), Some("r2"));
    assert_eq!(w.nodes.iter().filter(|n| n.exports > 0).count(), 1);
    w.check_fencing();
}

#[test]
fn a_killed_leader_is_replaced_within_ttl_plus_one_renew_interval() {
    let mut w = World::new(&[0, 0, 0]);
    w.run(Duration::from_secs(5));
    let leader = w.leaders()[0].to_string();
    let old_term = w.stored().unwrap().term;
    let idx = w.nodes.iter().position(|n| n.id == leader).unwrap();
    w.nodes[idx].alive = false;
    w.cp_revision = 2;
    let took = w
        .run_until(Duration::from_secs(10), |w| {
            w.stored_revision().as_deref() == Some("r2")
        })
        .expect("no failover");
    // TTL + one renew interval, plus one second for the resolution of HTTP
    // dates (Last-Modified and Date are whole seconds).
    assert!(
        took <= Duration::from_millis(TTL_MS + RENEW_MS + 1000),
        "failover took {took:?}"
    );
    let stored = w.stored().unwrap();
    assert_ne!(stored.exporter, leader);
    assert!(stored.term > old_term);
    assert_eq!(w.leaders().len(), 1);
    w.check_fencing();
}

#[test]
fn a_paused_leader_never_overwrites_a_newer_config() {
    let mut w = World::new(&[0, 0, 0]);
    w.run(Duration::from_secs(5));
    let leader = w.leaders()[0].to_string();
    let idx = w.nodes.iter().position(|n| n.id == leader).unwrap();
    // Freeze the leader (SIGSTOP): no ticks, no answers.
    w.nodes[idx].paused = true;
    w.cp_revision = 2;
    w.run_until(Duration::from_secs(10), |w| {
        w.stored_revision().as_deref() == Some("r2")
    })
    .expect("no takeover");
    let newer = w.stored().unwrap();
    assert_ne!(newer.exporter, leader);
    // Resume it: its clock jumped, its lease is gone, config.json moved on.
    let exports_before = w.nodes[idx].exports;
    w.nodes[idx].paused = false;
    w.run(Duration::from_secs(6));
    assert_eq!(
        w.nodes[idx].exports, exports_before,
        "the stale leader wrote"
    );
    let now_stored = w.stored().unwrap();
    assert!(now_stored.term >= newer.term);
    assert_eq!(now_stored.revision, "r2");
    assert!(!w.nodes[idx].is_leader() || now_stored.exporter == leader);
    assert!(
        w.nodes[idx]
            .logs
            .iter()
            .any(|l| l.contains("lost leadership") || l.contains("stood down")),
        "{:?}",
        w.nodes[idx].logs
    );
    assert_eq!(w.leaders().len(), 1);
    w.check_fencing();
}

#[test]
fn a_stale_leader_with_an_old_revision_is_fenced_by_the_stored_term() {
    // The paused leader resumes and the CP it polls still serves an older
    // revision than the one stored (a lagging CP replica): the fence (term
    // in config.json) stops it even before its own lease checks would.
    let mut w = World::new(&[0, 0]);
    w.run(Duration::from_secs(5));
    let leader = w.leaders()[0].to_string();
    let idx = w.nodes.iter().position(|n| n.id == leader).unwrap();
    w.nodes[idx].paused = true;
    w.cp_revision = 3;
    w.run_until(Duration::from_secs(10), |w| {
        w.stored_revision().as_deref() == Some("r3")
    })
    .expect("no takeover");
    w.nodes[idx].paused = false;
    w.run(Duration::from_secs(8));
    assert_eq!(w.stored_revision().as_deref(), Some("r3"));
    w.check_fencing();
}

#[test]
fn skewed_clocks_do_not_change_the_outcome() {
    // Local clocks an hour apart; lease age comes from the store's clock.
    let mut w = World::new(&[-3_600_000, 0, 3_600_000]);
    w.run(Duration::from_secs(5));
    assert_eq!(w.leaders().len(), 1);
    let leader = w.leaders()[0].to_string();
    // No premature takeover while the leader renews.
    let terms_before = w.store.config_writes.last().unwrap().term;
    w.run(Duration::from_secs(10));
    assert_eq!(w.leaders(), vec![leader.as_str()]);
    assert_eq!(w.stored().unwrap().term, terms_before);
    // Failover still happens in time.
    let idx = w.nodes.iter().position(|n| n.id == leader).unwrap();
    w.nodes[idx].alive = false;
    w.cp_revision = 2;
    let took = w
        .run_until(Duration::from_secs(10), |w| {
            w.stored_revision().as_deref() == Some("r2")
        })
        .expect("no failover");
    assert!(
        took <= Duration::from_millis(TTL_MS + RENEW_MS + 1000),
        "failover took {took:?}"
    );
    w.check_fencing();
}

#[test]
fn lost_answers_never_break_fencing() {
    for drop_every in [2, 3, 5, 7] {
        let mut w = World::new(&[0, 250, -250]);
        w.drop_every = drop_every;
        for revision in 2..=6 {
            w.run(Duration::from_secs(4));
            w.cp_revision = revision;
            if revision == 4 {
                // Kill whoever leads now.
                if let Some(l) = w.leaders().first().map(|s| s.to_string()) {
                    let idx = w.nodes.iter().position(|n| n.id == l).unwrap();
                    w.nodes[idx].alive = false;
                }
            }
        }
        w.drop_every = 0;
        w.run_until(Duration::from_secs(30), |w| {
            w.stored_revision().as_deref() == Some("r6")
        })
        .unwrap_or_else(|| {
            panic!(
                "drop_every {drop_every}: r6 never stored, {:?}",
                w.stored_revision()
            )
        });
        w.check_fencing();
        assert!(
            w.leaders().len() <= 1,
            "drop_every {drop_every}: {:?}",
            w.leaders()
        );
    }
}

#[test]
fn a_restarted_node_takes_its_own_lease_back_at_once() {
    let mut w = World::new(&[0]);
    w.run(Duration::from_secs(3));
    assert_eq!(w.leaders(), vec!["backup-1"]);
    let term = w.stored().unwrap().term;
    // Same node id, new process: it need not wait for its own lease to expire.
    w.nodes[0].c = controller(&settings(), "backup-1");
    w.nodes[0].inbox.clear();
    w.cp_revision = 2;
    let took = w
        .run_until(Duration::from_secs(10), |w| {
            w.stored_revision().as_deref() == Some("r2")
        })
        .expect("no export after restart");
    assert!(
        took < Duration::from_millis(TTL_MS),
        "waited {took:?} for its own lease"
    );
    assert!(w.stored().unwrap().term > term);
    w.check_fencing();
}

#[test]
fn a_lease_that_is_not_renewed_is_not_taken_before_its_ttl() {
    // Two nodes; the leader stops renewing at a known instant: the other
    // must not take over before TTL has passed by the store's clock.
    let mut w = World::new(&[0, 0]);
    w.run(Duration::from_secs(4));
    let leader = w.leaders()[0].to_string();
    let idx = w.nodes.iter().position(|n| n.id == leader).unwrap();
    let lease = w
        .store
        .objects
        .get(&format!("/bkt/pre/{VERSION}/election/lease.json"))
        .unwrap()
        .modified;
    w.nodes[idx].alive = false;
    let other = 1 - idx;
    let took = w
        .run_until(Duration::from_secs(10), |w| w.nodes[other].is_leader())
        .expect("no takeover");
    let since_last_renewal = w.now.since(lease);
    assert!(
        since_last_renewal >= Duration::from_millis(TTL_MS - 1000),
        "took over {since_last_renewal:?} after the last renewal ({took:?} after the kill)"
    );
}

#[test]
fn a_leader_whose_lease_still_looks_valid_is_fenced_by_config_json() {
    // Another writer with a newer term replaced config.json behind the
    // leader's back (say the leader's clock runs slow, so it still believes
    // in its lease). Its next write must fail its precondition, not win.
    let mut w = World::new(&[0, 0]);
    w.run(Duration::from_secs(4));
    let leader = w.leaders()[0].to_string();
    let idx = w.nodes.iter().position(|n| n.id == leader).unwrap();
    let term = w.stored().unwrap().term;
    let intruder = envelope::seal(
        envelope::Export {
            config: cp_config(9).as_bytes(),
            revision: "r9",
            version: VERSION,
            exporter: "intruder",
            exported_at: w.now,
            term: term + 5,
        },
        envelope::Protection::NONE,
    )
    .unwrap();
    let put = HttpRequest {
        cluster: "object_storage".into(),
        method: "PUT".into(),
        path: format!("/bkt/pre/{VERSION}/config.json"),
        authority: "store".into(),
        headers: vec![],
        body: Some(intruder),
        timeout: Duration::from_secs(1),
    };
    let now = w.now;
    assert_eq!(w.store.handle(&put, now).status, 200);
    let exports = w.nodes[idx].exports;
    w.cp_revision = 2;
    w.run(Duration::from_secs(2));
    assert_eq!(w.nodes[idx].exports, exports, "the fenced leader wrote");
    assert_eq!(w.stored().unwrap().exporter, "intruder");
    assert!(
        w.nodes[idx].logs.iter().any(|l| l.contains("stood down")),
        "{:?}",
        w.nodes[idx].logs
    );
    // It re-reads, and later writes again only with a term above the fence.
    w.run(Duration::from_secs(10));
    w.check_fencing();
}

#[test]
fn a_renew_interval_close_to_the_ttl_still_keeps_a_healthy_leader() {
    // renew 3.5 s with a 4 s TTL: the leader's own validity (ttl - margin)
    // is shorter than the interval, so it must renew sooner than asked.
    for (ttl, renew) in [(4000, 3500), (3000, 2900), (30_000, 29_000)] {
        let mut w = World::new(&[0, 0]);
        for n in &mut w.nodes {
            n.c = controller(&settings_with(ttl, renew), &n.id);
        }
        w.run(Duration::from_millis(ttl * 8));
        for n in &w.nodes {
            assert!(
                !n.logs.iter().any(|l| l.contains("lost leadership")),
                "ttl {ttl} renew {renew}: {} {:?}",
                n.id,
                n.logs
            );
        }
        assert_eq!(w.leaders().len(), 1);
        w.check_fencing();
    }
}
