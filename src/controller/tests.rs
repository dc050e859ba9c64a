//! The controller driven by a simulated clock and scripted answers.
//! Assertions are on typed [`Event`]s and [`Output`]s; only
//! `documented_log_lines_keep_their_wording` looks at rendered lines.

use super::*;
use crate::action::{Call, CallKind, Metric, Token};
use crate::clock::Now;
use crate::election::LeaseRecord;
use crate::envelope::{open, seal, sha256_hex, EnvelopeError, Export};
use crate::event::{CpFailure, Event, ImportFailure, Level, LossReason};
use crate::http::{HttpRequest, HttpResponse};
use crate::process::{ImportRefusal, PublishJob};
use crate::published::{Meta, Source};
use crate::settings::Settings;
use crate::storage::StorageError;
use crate::time::Timestamp;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const CFG1: &str =
    r#"{"revision":"r1","routes":[{"name":"echo","paths":["/echo"],"upstream":"echo_service"}]}"#;
const CFG2: &str =
    r#"{"revision":"r2","routes":[{"name":"v2","paths":["/v2"],"upstream":"echo_service"}]}"#;
const NO_SUCH_KEY: &str = "<Error><Code>NoSuchKey</Code></Error>";
const BAD_SIGNATURE: &str =
    "<Error><Code>SignatureDoesNotMatch</Code><Message>nope</Message></Error>";

// ---- settings ----

fn s3_settings(import: bool, export: bool, delay_s: u64) -> Settings {
    let json = format!(
        r#"{{"cluster_fallback_config_import":{import},"cluster_fallback_config_export":{export},
            "cluster_fallback_config_storage":"s3://bkt/pre","cluster_fallback_config_export_delay":{delay_s},
            "storage":{{"endpoint":"http://127.0.0.1:9000","timeout_ms":1000}},
            "control_plane":{{"timeout_ms":1000,"poll_interval_ms":5000}}}}"#
    );
    let env: HashMap<&str, &str> =
        [("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")].into();
    Settings::parse(json.as_bytes(), &|k| env.get(k).map(|v| v.to_string())).unwrap()
}

/// GCS with a service account: every storage request needs an access token.
fn gcs_settings(import: bool, export: bool) -> Settings {
    let json = format!(
        r#"{{"cluster_fallback_config_import":{import},"cluster_fallback_config_export":{export},
            "cluster_fallback_config_storage":"gcs://bkt/pre",
            "storage":{{"endpoint":"http://127.0.0.1:9023","token_cluster":"oauth","timeout_ms":1000}},
            "control_plane":{{"timeout_ms":1000,"poll_interval_ms":5000}}}}"#
    );
    let account = crate::storage::gcp_auth::tests::account_json(
        crate::storage::gcp_auth::tests::TEST_KEY_PKCS8,
    );
    Settings::parse(json.as_bytes(), &|k| {
        (k == "GCP_SERVICE_ACCOUNT").then(|| account.clone())
    })
    .unwrap()
}

fn config_url() -> String {
    format!("s3://bkt/pre/{VERSION}/config.json")
}

fn config_path() -> String {
    format!("/bkt/pre/{VERSION}/config.json")
}

// ---- answers ----

fn resp(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

fn with_etag(status: u16, body: &str, etag: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("etag".into(), etag.into())],
        body: body.as_bytes().to_vec(),
    }
}

fn cp_ok(body: &str, etag: &str) -> HttpResponse {
    with_etag(200, body, etag)
}

fn not_modified() -> HttpResponse {
    resp(304, "")
}

fn cp_down() -> HttpResponse {
    resp(503, "upstream connect error")
}

/// A successful PUT with the new ETag, as S3 sends it.
fn put_ok(etag: &str) -> HttpResponse {
    with_etag(200, "", etag)
}

fn token_ok(token: &str) -> HttpResponse {
    resp(
        200,
        &format!(r#"{{"access_token":"{token}","expires_in":3600,"token_type":"Bearer"}}"#),
    )
}

fn exported_at() -> Timestamp {
    Timestamp::from_secs(1_800_000_000)
}

fn envelope_for(config: &str, revision: &str, version: &str, term: u64) -> String {
    String::from_utf8(
        seal(Export {
            config: config.as_bytes(),
            revision,
            version,
            exporter: "exp",
            exported_at: exported_at(),
            term,
        })
        .unwrap(),
    )
    .unwrap()
}

/// A read of `config.json` holding `config` written in `term`.
fn stored(config: &str, revision: &str, term: u64, etag: Option<&str>) -> HttpResponse {
    let body = envelope_for(config, revision, VERSION, term);
    match etag {
        Some(etag) => with_etag(200, &body, etag),
        None => resp(200, &body),
    }
}

fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn job(config: &str, revision: &str, source: Source) -> PublishJob {
    PublishJob {
        source,
        revision: revision.into(),
        sha256: sha256_hex(config.as_bytes()),
        config: config.as_bytes().to_vec(),
    }
}

/// What a previous driver left in shared data: `config` published from
/// `source`.
fn inherited(config: &str, revision: &str, source: Source) -> Inherited {
    Inherited {
        published: Some((
            Meta {
                generation: 3,
                source,
                revision: revision.into(),
                sha256: sha256_hex(config.as_bytes()),
            },
            config.as_bytes().to_vec(),
        )),
        cp_answered: source == Source::ControlPlane,
        import_attempts: u32::from(source == Source::Storage),
    }
}

// ---- the harness ----

/// How the harness answers lease calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lease {
    /// Leaves them to the test, like every other call.
    Manual,
    /// This node is the only exporter: a lease read finds nothing (or, the
    /// first time, `own_lease_term`'s lease of this very node), every
    /// acquisition succeeds, renewals succeed unless `renewals_fail`.
    Sole,
}

/// A controller, a clock, the calls it has out, and everything it said.
struct Sim {
    c: Controller,
    node: String,
    now: u64,
    lease: Lease,
    own_lease_term: Option<u64>,
    renewals_fail: bool,
    lease_writes: u64,
    /// Sent and not answered yet (lease calls only under `Lease::Manual`).
    pending: Vec<Call>,
    /// Every output, in order.
    log: Vec<Output>,
    /// Events not yet collected by [`Sim::events`].
    events: Vec<Event>,
    /// Every event, in order.
    all_events: Vec<Event>,
}

impl Sim {
    fn new(settings: &Settings) -> Sim {
        Sim::build(settings, "n", Inherited::default(), 1, Lease::Sole)
    }

    fn build(
        settings: &Settings,
        node: &str,
        inherited: Inherited,
        first_token: Token,
        lease: Lease,
    ) -> Sim {
        Sim {
            c: Controller::new(
                settings,
                node.into(),
                inherited,
                first_token,
                Now::at_millis(0),
            ),
            node: node.into(),
            now: 0,
            lease,
            own_lease_term: None,
            renewals_fail: false,
            lease_writes: 0,
            pending: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            all_events: Vec::new(),
        }
    }

    fn at(&self) -> Now {
        Now::at_millis(self.now)
    }

    fn tick(&mut self, ms: u64) {
        assert!(ms >= self.now, "time goes forward");
        self.now = ms;
        self.c.tick(self.at());
        self.pump();
    }

    fn answer(&mut self, token: Token, response: HttpResponse) {
        self.c.on_response(token, response, self.at());
        self.pump();
    }

    fn answer_at(&mut self, ms: u64, token: Token, response: HttpResponse) {
        assert!(ms >= self.now, "time goes forward");
        self.now = ms;
        self.answer(token, response);
    }

    fn send_failed(&mut self, token: Token, reason: &str) {
        self.c.on_send_failed(token, reason, self.at());
        self.pump();
    }

    fn grant(&mut self) {
        self.c.import_granted(self.at());
        self.pump();
    }

    fn refuse(&mut self, refusal: ImportRefusal) {
        self.c.import_refused(refusal);
        self.pump();
    }

    fn resign(&mut self) {
        self.c.resign();
        self.pump();
    }

    /// Collects outputs and events, answering lease calls under `Sole`.
    fn pump(&mut self) {
        loop {
            let events = self.c.take_events();
            self.all_events.extend(events.iter().cloned());
            self.events.extend(events);
            let outputs = self.c.take_outputs();
            if outputs.is_empty() {
                return;
            }
            let mut auto = Vec::new();
            for output in outputs {
                if let Output::Send(call) = &output {
                    let lease_call =
                        matches!(call.kind, CallKind::LeaseRead | CallKind::LeaseWrite);
                    if lease_call && self.lease == Lease::Sole {
                        auto.push(call.clone());
                    } else {
                        self.pending.push(call.clone());
                    }
                }
                self.log.push(output);
            }
            for call in auto {
                let answer = self.lease_answer(&call);
                self.c.on_response(call.token, answer, self.at());
            }
        }
    }

    fn lease_answer(&mut self, call: &Call) -> HttpResponse {
        if call.kind == CallKind::LeaseRead {
            return match self.own_lease_term.take() {
                Some(term) => {
                    let record = LeaseRecord {
                        holder: self.node.clone(),
                        term,
                        renewals: 3,
                        ttl_ms: 30_000,
                        renewed_at: "earlier".into(),
                    };
                    let body = serde_json::to_string(&record).unwrap();
                    with_etag(200, &body, "\"lease-0\"")
                }
                None => resp(404, NO_SUCH_KEY),
            };
        }
        let record: LeaseRecord =
            serde_json::from_slice(call.request.body.as_deref().unwrap()).unwrap();
        assert_eq!(record.holder, self.node);
        assert!(
            header(&call.request, "if-match").is_some()
                || header(&call.request, "if-none-match") == Some("*"),
            "lease writes are conditional: {:?}",
            call.request
        );
        if record.renewals > 0 && self.renewals_fail {
            return resp(503, "upstream connect error");
        }
        self.lease_writes += 1;
        let etag = format!("\"lease-{}\"", self.lease_writes);
        HttpResponse {
            status: 200,
            headers: vec![
                ("etag".into(), etag),
                ("x-goog-generation".into(), self.lease_writes.to_string()),
            ],
            body: vec![],
        }
    }

    /// Removes and returns the one pending call of this kind.
    fn take(&mut self, kind: CallKind) -> Call {
        let at: Vec<usize> = (0..self.pending.len())
            .filter(|i| self.pending[*i].kind == kind)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "expected one pending {kind:?} at {} ms: {:?}",
            self.now,
            self.pending
        );
        self.pending.remove(at[0])
    }

    fn has_pending(&self, kind: CallKind) -> bool {
        self.pending.iter().any(|c| c.kind == kind)
    }

    /// Answers the pending CP poll, if there is one.
    fn answer_cp(&mut self, response: HttpResponse) -> bool {
        if !self.has_pending(CallKind::CpPoll) {
            return false;
        }
        let poll = self.take(CallKind::CpPoll);
        self.answer(poll.token, response);
        true
    }

    /// Ticks at `ms` and answers the CP poll it sends, if any.
    fn tick_cp(&mut self, ms: u64, response: HttpResponse) {
        self.tick(ms);
        self.answer_cp(response);
    }

    fn events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn mark(&self) -> usize {
        self.log.len()
    }

    fn since(&self, mark: usize) -> &[Output] {
        &self.log[mark..]
    }
}

fn publishes(out: &[Output]) -> Vec<PublishJob> {
    out.iter()
        .filter_map(|o| match o {
            Output::Publish(job) => Some(job.clone()),
            _ => None,
        })
        .collect()
}

fn sends(out: &[Output]) -> Vec<Call> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(call) => Some(call.clone()),
            _ => None,
        })
        .collect()
}

fn sends_of(out: &[Output], kind: CallKind) -> Vec<Call> {
    sends(out).into_iter().filter(|c| c.kind == kind).collect()
}

fn metrics(out: &[Output]) -> Vec<Metric> {
    out.iter()
        .filter_map(|o| match o {
            Output::Metric(m) => Some(*m),
            _ => None,
        })
        .collect()
}

fn import_requests(out: &[Output]) -> Vec<u32> {
    out.iter()
        .filter_map(|o| match o {
            Output::RequestImport { max_attempts } => Some(*max_attempts),
            _ => None,
        })
        .collect()
}

fn count(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

/// A sole exporter ("node-7", S3, no export delay) that applied CFG1 from
/// its first poll, leads in term 1, found `config.json` absent and got a
/// CP answer fetched after that read: its first PUT is pending.
fn exporter_at_first_put() -> (Sim, Call) {
    let mut s = Sim::build(
        &s3_settings(false, true, 0),
        "node-7",
        Inherited::default(),
        1,
        Lease::Sole,
    );
    s.tick(0);
    s.answer_cp(cp_ok(CFG1, "\"e1\""));
    let events = s.events();
    assert!(
        events.contains(&Event::BecameLeader {
            term: 1,
            node: "node-7".into()
        }),
        "{events:?}"
    );
    assert_eq!(publishes(&s.log).len(), 1);
    let read = s.take(CallKind::ExportRead);
    assert_eq!(
        (read.request.method.as_str(), read.request.path.clone()),
        ("GET", config_path())
    );
    s.answer(read.token, resp(404, NO_SUCH_KEY));
    // The poll that brought CFG1 was sent before the read: it cannot tell
    // that CFG1 is newer than what was stored; wait for a fresher answer.
    assert!(!s.has_pending(CallKind::ExportWrite));
    assert!(s.events().contains(&Event::ExportAwaitsFresherCp {
        revision: "r1".into()
    }));
    // That fresher poll goes out at the next tick, not a poll interval later.
    s.tick(1);
    let poll = s.take(CallKind::CpPoll);
    assert_eq!(header(&poll.request, "if-none-match"), Some("\"e1\""));
    s.answer(poll.token, not_modified());
    let put = s.take(CallKind::ExportWrite);
    (s, put)
}

// ---- control plane ----

#[test]
fn polls_the_cp_at_once_then_every_interval() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick(0);
    let poll = s.take(CallKind::CpPoll);
    let r = &poll.request;
    assert_eq!(
        (
            r.cluster.as_str(),
            r.method.as_str(),
            r.path.as_str(),
            r.authority.as_str()
        ),
        ("control_plane", "GET", "/v1/config", "control_plane")
    );
    assert_eq!(header(r, "if-none-match"), None);
    assert_eq!(r.timeout, Duration::from_secs(1));
    let mark = s.mark();
    s.answer(poll.token, cp_ok(&format!("  {CFG1}\n"), "\"e1\""));
    assert_eq!(
        publishes(s.since(mark)),
        vec![job(CFG1, "r1", Source::ControlPlane)],
        "surrounding whitespace trimmed, nothing else"
    );
    assert!(s.c.has_config());
    assert_eq!(
        s.events(),
        vec![Event::CpFetched {
            revision: "r1".into()
        }]
    );
    // Not before the interval.
    s.tick(4_999);
    assert!(s.pending.is_empty());
    s.tick(5_000);
    let poll = s.take(CallKind::CpPoll);
    assert_eq!(header(&poll.request, "if-none-match"), Some("\"e1\""));
    let mark = s.mark();
    s.answer(poll.token, not_modified());
    assert!(s.since(mark).is_empty(), "304: nothing to do");
    assert!(s.events().is_empty(), "the CP was up already");
    // A new revision is applied.
    s.tick(10_000);
    let mark = s.mark();
    s.answer_cp(cp_ok(CFG2, "\"e2\""));
    assert_eq!(
        publishes(s.since(mark)),
        vec![job(CFG2, "r2", Source::ControlPlane)]
    );
    // Same content under a new ETag: not published again, but the new
    // ETag is what the next poll sends.
    s.tick(15_000);
    let mark = s.mark();
    s.events();
    s.answer_cp(cp_ok(CFG2, "\"e3\""));
    assert!(publishes(s.since(mark)).is_empty());
    assert_eq!(
        s.events(),
        vec![Event::CpUnchanged {
            revision: "r2".into()
        }]
    );
    s.tick(20_000);
    let poll = s.take(CallKind::CpPoll);
    assert_eq!(header(&poll.request, "if-none-match"), Some("\"e3\""));
    assert_eq!(
        sends(&s.log)
            .iter()
            .filter(|c| c.kind != CallKind::CpPoll)
            .count(),
        0,
        "nothing but CP polls"
    );
}

#[test]
fn a_304_is_the_applied_config_confirmed_and_reports_the_cp_back() {
    let mut s = Sim::new(&s3_settings(false, false, 0));
    s.tick(0);
    s.answer_cp(cp_ok(CFG1, "\"e1\""));
    s.tick_cp(5_000, cp_down());
    s.tick_cp(10_000, resp(504, "upstream request timeout"));
    let events = s.events();
    assert_eq!(
        events[1..],
        [
            Event::CpUnavailable {
                reason: CpFailure::Status {
                    status: 503,
                    excerpt: "upstream connect error".into()
                },
                again: false
            },
            Event::CpUnavailable {
                reason: CpFailure::Status {
                    status: 504,
                    excerpt: "upstream request timeout".into()
                },
                again: true
            }
        ]
    );
    assert_eq!(events[1].level(), Level::Info);
    assert_eq!(
        events[2].level(),
        Level::Debug,
        "an outage is reported once"
    );
    let mark = s.mark();
    s.tick_cp(15_000, not_modified());
    assert_eq!(s.events(), vec![Event::CpBack]);
    assert!(publishes(s.since(mark)).is_empty());

    // Without an applied config a 304 means nothing: the CP is unavailable.
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, not_modified());
    assert!(s.events().iter().any(|e| matches!(
        e,
        Event::CpUnavailable {
            reason: CpFailure::Status { status: 304, .. },
            ..
        }
    )));
    assert_eq!(import_requests(&s.log), vec![IMPORT_ATTEMPTS]);
}

#[test]
fn no_overlapping_polls() {
    let mut s = Sim::new(&s3_settings(false, false, 0));
    s.tick(0);
    assert_eq!(sends(&s.log).len(), 1);
    // Still waiting for the answer at the next due time: no second poll.
    s.tick(5_000);
    s.tick(5_400);
    assert_eq!(sends(&s.log).len(), 1);
    assert_eq!(s.c.poll_timeout(), Some(Instant::from_millis(6_000)));
    // The answer comes late: the overdue poll goes out at the next tick.
    let poll = s.take(CallKind::CpPoll);
    s.answer_at(5_500, poll.token, cp_ok(CFG1, "\"e1\""));
    s.tick(5_500);
    assert_eq!(sends(&s.log).len(), 2);
}

#[test]
fn the_poll_schedule_keeps_its_rhythm_and_restarts_after_a_gap() {
    // Replaces the old wall-clock test: timers run on the monotonic clock,
    // which never goes back; what remains is how late ticks are handled.
    let mut s = Sim::new(&s3_settings(false, false, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    // A late tick does not stretch the interval...
    s.tick_cp(5_100, not_modified());
    s.tick(9_999);
    assert!(s.pending.is_empty());
    s.tick_cp(10_000, not_modified());
    // ...and a long gap gives one poll, not a burst of catch-up polls.
    s.tick_cp(60_000, not_modified());
    s.tick(60_200);
    s.tick(64_999);
    assert!(s.pending.is_empty());
    s.tick(65_000);
    assert!(s.has_pending(CallKind::CpPoll));
    assert_eq!(sends_of(&s.log, CallKind::CpPoll).len(), 5);
}

#[test]
fn an_inherited_cp_config_is_not_republished_but_a_new_one_is() {
    let mut s = Sim::build(
        &s3_settings(false, false, 0),
        "n",
        inherited(CFG1, "r1", Source::ControlPlane),
        1,
        Lease::Sole,
    );
    assert!(s.c.has_config());
    s.tick(0);
    let poll = s.take(CallKind::CpPoll);
    assert_eq!(
        header(&poll.request, "if-none-match"),
        None,
        "a new driver knows no ETag"
    );
    s.answer(poll.token, cp_ok(CFG1, "\"e1\""));
    assert!(publishes(&s.log).is_empty(), "same content");
    assert_eq!(
        s.events(),
        vec![Event::CpUnchanged {
            revision: "r1".into()
        }]
    );
    s.tick_cp(5_000, cp_ok(CFG2, "\"e2\""));
    assert_eq!(
        publishes(&s.log),
        vec![job(CFG2, "r2", Source::ControlPlane)]
    );
}

#[test]
fn unusable_cp_config_counts_as_cp_unavailable() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(
        0,
        cp_ok(r#"{"revision":"r1","routes":[{"name":"x"}]}"#, "\"bad\""),
    );
    assert!(publishes(&s.log).is_empty());
    assert!(!s.c.has_config());
    let events = s.events();
    assert!(
        matches!(
            events.as_slice(),
            [Event::CpUnavailable {
                reason: CpFailure::Unusable(_),
                again: false
            }]
        ),
        "{events:?}"
    );
    assert_eq!(import_requests(&s.log), vec![1], "the import is asked for");
    // Its ETag is not taken: the next poll asks for a full config.
    s.tick(5_000);
    assert_eq!(
        header(&s.take(CallKind::CpPoll).request, "if-none-match"),
        None
    );
}

#[test]
fn send_failures_count_as_cp_unavailable() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick(0);
    let poll = s.take(CallKind::CpPoll);
    s.send_failed(poll.token, "BadArgument");
    assert_eq!(
        s.events(),
        vec![Event::CpUnavailable {
            reason: CpFailure::NoAnswer {
                detail: "not sent: BadArgument".into()
            },
            again: false
        }]
    );
    assert_eq!(import_requests(&s.log), vec![1], "the import is asked for");
    // The failed call is done with: an answer for it later is ignored.
    let mark = s.mark();
    s.answer(poll.token, cp_ok(CFG1, "\"e\""));
    assert!(s.since(mark).is_empty() && s.events().is_empty());
}

#[test]
fn lost_answers_are_given_up_on() {
    let mut s = Sim::new(&s3_settings(false, false, 0));
    s.tick(0);
    let lost = s.take(CallKind::CpPoll);
    // Timeout 1 s + 5 s grace.
    assert_eq!(s.c.poll_timeout(), Some(Instant::from_millis(6_000)));
    s.tick(5_999);
    assert!(s.events().is_empty() && s.pending.is_empty());
    // At 6 s the poll is declared lost and the overdue one goes out.
    s.tick(6_000);
    assert_eq!(
        s.events(),
        vec![Event::CpUnavailable {
            reason: CpFailure::NoAnswer {
                detail: "no answer from the proxy".into()
            },
            again: false
        }]
    );
    let poll = s.take(CallKind::CpPoll);
    assert_ne!(poll.token, lost.token);
    // A late answer to the lost call is ignored.
    let mark = s.mark();
    s.answer_at(7_000, lost.token, cp_ok(CFG1, "\"e\""));
    assert!(s.since(mark).is_empty() && s.events().is_empty());
    assert!(!s.c.has_config());
    // The new one still counts.
    s.answer(poll.token, cp_ok(CFG1, "\"e\""));
    assert_eq!(publishes(&s.log).len(), 1);
}

#[test]
fn a_failed_publish_is_retried_with_the_next_answer() {
    let mut s = Sim::new(&s3_settings(false, false, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let published = publishes(&s.log);
    assert_eq!(published.len(), 1);
    // A failed job that is not the applied one changes nothing.
    s.c.publish_failed(&job(CFG2, "r2", Source::ControlPlane));
    assert!(s.c.has_config());
    s.tick(5_000);
    let poll = s.take(CallKind::CpPoll);
    assert_eq!(header(&poll.request, "if-none-match"), Some("\"e1\""));
    s.answer(poll.token, not_modified());
    // The applied one failed: forgotten, and the ETag with it.
    s.c.publish_failed(&published[0]);
    assert!(!s.c.has_config());
    s.tick(10_000);
    let poll = s.take(CallKind::CpPoll);
    assert_eq!(header(&poll.request, "if-none-match"), None);
    let mark = s.mark();
    s.answer(poll.token, cp_ok(CFG1, "\"e1\""));
    assert_eq!(publishes(s.since(mark)), published);
}

// ---- import ----

#[test]
fn imports_once_when_the_cp_is_down_at_start() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    assert!(s
        .events()
        .iter()
        .any(|e| matches!(e, Event::CpUnavailable { again: false, .. })));
    // The process is asked first; nothing goes to the store before its grant.
    assert_eq!(import_requests(&s.log), vec![1]);
    assert!(s.pending.is_empty());
    let mark = s.mark();
    s.grant();
    assert_eq!(s.events(), vec![Event::ImportStarted { url: config_url() }]);
    assert_eq!(metrics(s.since(mark)), vec![Metric::StorageRequest]);
    let get = s.take(CallKind::Import);
    let r = &get.request;
    assert_eq!(
        (r.cluster.as_str(), r.method.as_str(), r.path.clone()),
        ("object_storage", "GET", config_path())
    );
    assert!(header(r, "authorization").is_some());
    let mark = s.mark();
    s.answer_at(1_000, get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert_eq!(
        publishes(s.since(mark)),
        vec![job(CFG1, "r1", Source::Storage)]
    );
    assert_eq!(
        s.events(),
        vec![Event::Imported {
            revision: "r1".into(),
            url: config_url(),
            exported_at: exported_at().rfc3339(),
            exporter: "exp".into()
        }]
    );
    // The CP stays down: it is polled again, the store never again.
    let mark = s.mark();
    for i in 1..10 {
        s.tick_cp(5_000 * i, resp(504, "upstream request timeout"));
    }
    assert!(sends(s.since(mark))
        .iter()
        .all(|c| c.kind == CallKind::CpPoll));
    assert_eq!(sends(s.since(mark)).len(), 9);
    assert!(import_requests(s.since(mark)).is_empty());
    assert!(publishes(s.since(mark)).is_empty());
    // The CP comes back: its config replaces the imported one.
    let mark = s.mark();
    s.tick_cp(50_000, cp_ok(CFG2, "\"e\""));
    assert_eq!(
        publishes(s.since(mark)),
        vec![job(CFG2, "r2", Source::ControlPlane)]
    );
}

#[test]
fn a_refused_import_sends_nothing() {
    for refusal in [ImportRefusal::Exhausted, ImportRefusal::CpAnswered] {
        let mut s = Sim::new(&s3_settings(true, false, 0));
        s.tick_cp(0, cp_down());
        assert_eq!(import_requests(&s.log), vec![1]);
        s.events();
        s.refuse(refusal);
        let expected = match refusal {
            ImportRefusal::CpAnswered => vec![Event::ImportCancelled],
            ImportRefusal::Exhausted => vec![],
        };
        assert_eq!(s.events(), expected, "{refusal:?}");
        // A grant arriving anyway, and later outages, send nothing.
        s.grant();
        for i in 1..5 {
            s.tick_cp(5_000 * i, cp_down());
        }
        assert!(
            sends(&s.log).iter().all(|c| c.kind == CallKind::CpPoll),
            "{refusal:?}"
        );
        assert_eq!(import_requests(&s.log).len(), 1, "{refusal:?}");
    }
}

#[test]
fn refused_imports_apply_nothing_and_are_not_retried() {
    let wrong_version = envelope_for(CFG1, "r1", "9.9.9", 1);
    let tampered = envelope_for(CFG1, "r1", VERSION, 1).replace("/echo", "/evil");
    type Check = fn(&ImportFailure) -> bool;
    let cases: [(HttpResponse, Check); 5] = [
        (resp(404, NO_SUCH_KEY), |e| {
            *e == ImportFailure::Storage(StorageError::NotFound {
                code: Some("NoSuchKey".into()),
            })
        }),
        (resp(200, "{not json"), |e| {
            matches!(e, ImportFailure::Envelope(EnvelopeError::Parse(_)))
        }),
        (resp(200, &wrong_version), |e| {
            *e == ImportFailure::Envelope(EnvelopeError::VersionMismatch {
                found: "9.9.9".into(),
                expected: VERSION.into(),
            })
        }),
        (resp(200, &tampered), |e| {
            matches!(
                e,
                ImportFailure::Envelope(EnvelopeError::Sha256Mismatch { .. })
            )
        }),
        (
            resp(
                403,
                "<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
            ),
            |e| {
                matches!(
                    e,
                    ImportFailure::Storage(StorageError::Status { status: 403, code: Some(c), .. })
                        if c == "AccessDenied"
                )
            },
        ),
    ];
    for (i, (answer, check)) in cases.into_iter().enumerate() {
        let mut s = Sim::new(&s3_settings(true, false, 0));
        s.tick_cp(0, cp_down());
        s.grant();
        let get = s.take(CallKind::Import);
        s.events();
        s.answer_at(1_000, get.token, answer);
        assert!(publishes(&s.log).is_empty(), "case {i}");
        assert!(!s.c.has_config(), "case {i}");
        let events = s.events();
        match events.as_slice() {
            [e @ Event::ImportFailed { url, error }] => {
                assert_eq!(url, &config_url(), "case {i}");
                assert!(check(error), "case {i}: {error:?}");
                assert_eq!(e.level(), Level::Error, "case {i}");
            }
            other => panic!("case {i}: {other:?}"),
        }
        // Not retried, however long the CP stays down.
        for j in 1..5 {
            s.tick_cp(5_000 * j, cp_down());
        }
        assert_eq!(import_requests(&s.log).len(), 1, "case {i}");
        assert_eq!(sends_of(&s.log, CallKind::Import).len(), 1, "case {i}");
        // The CP still wins later.
        s.tick_cp(30_000, cp_ok(CFG1, "\"e\""));
        assert_eq!(
            publishes(&s.log),
            vec![job(CFG1, "r1", Source::ControlPlane)],
            "case {i}"
        );
    }
}

#[test]
fn a_lost_import_answer_fails_the_import_for_good() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.events();
    // Storage timeout 1 s + 5 s grace; the CP poll due at 5 s is answered.
    s.tick_cp(5_000, cp_down());
    s.events();
    s.tick(6_000);
    assert!(
        s.events().iter().any(|e| matches!(
            e,
            Event::ImportFailed {
                error: ImportFailure::Storage(StorageError::Status { status: 0, .. }),
                ..
            }
        )),
        "the lost answer is an import failure"
    );
    let mark = s.mark();
    s.answer(get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert!(s.since(mark).is_empty(), "its late answer is ignored");
    for i in 2..5 {
        s.tick_cp(5_000 * i, cp_down());
    }
    assert_eq!(import_requests(&s.log).len(), 1);
    assert!(!s.c.has_config());
}

#[test]
fn cp_answer_during_import_wins() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.tick_cp(5_000, cp_ok(CFG2, "\"e\""));
    assert_eq!(
        publishes(&s.log),
        vec![job(CFG2, "r2", Source::ControlPlane)]
    );
    s.events();
    let mark = s.mark();
    s.answer_at(6_000, get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert!(publishes(s.since(mark)).is_empty());
    assert_eq!(
        s.events(),
        vec![Event::ImportDiscarded {
            revision: "r1".into()
        }]
    );
    // And the CP config stays the applied one: the same content again is
    // unchanged, not a republish.
    s.tick_cp(10_000, cp_ok(CFG2, "\"e\""));
    assert_eq!(publishes(&s.log).len(), 1);
}

#[test]
fn a_cp_answer_before_the_grant_cancels_the_import() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    assert_eq!(import_requests(&s.log), vec![1]);
    s.events();
    s.tick_cp(5_000, cp_ok(CFG1, "\"e\""));
    assert_eq!(
        s.events(),
        vec![
            Event::ImportCancelled,
            Event::CpFetched {
                revision: "r1".into()
            }
        ]
    );
    // The grant comes too late: nothing is sent.
    s.grant();
    assert!(!s.has_pending(CallKind::Import));
    assert!(sends(&s.log).iter().all(|c| c.kind == CallKind::CpPoll));
}

#[test]
fn no_import_when_cp_answered_first_or_import_off_or_already_used() {
    let settings = s3_settings(true, false, 0);
    let cases: [(&str, Settings, Inherited, bool); 5] = [
        (
            "CP answered first",
            settings.clone(),
            Inherited::default(),
            true,
        ),
        (
            "import off",
            s3_settings(false, false, 0),
            Inherited::default(),
            false,
        ),
        (
            "the process's CP answered",
            settings.clone(),
            Inherited {
                published: None,
                cp_answered: true,
                import_attempts: 0,
            },
            false,
        ),
        (
            "the process imported",
            settings.clone(),
            Inherited {
                published: None,
                cp_answered: false,
                import_attempts: IMPORT_ATTEMPTS,
            },
            false,
        ),
        (
            "an imported config is published",
            settings.clone(),
            inherited(CFG1, "r1", Source::Storage),
            false,
        ),
    ];
    for (case, settings, inherited, cp_first) in cases {
        let mut s = Sim::build(&settings, "n", inherited, 1, Lease::Sole);
        if cp_first {
            s.tick_cp(0, cp_ok(CFG1, "\"e\""));
        }
        for i in 1..6 {
            s.tick_cp(5_000 * i, cp_down());
        }
        s.grant();
        assert!(import_requests(&s.log).is_empty(), "{case}");
        assert!(
            sends(&s.log).iter().all(|c| c.kind == CallKind::CpPoll),
            "{case}: {:?}",
            s.log
        );
        assert_eq!(sends(&s.log).len(), if cp_first { 6 } else { 5 }, "{case}");
    }
}

#[test]
fn cp_config_identical_to_the_imported_one_is_published_as_cp() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer(get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    s.events();
    let mark = s.mark();
    s.tick_cp(5_000, cp_ok(CFG1, "\"e\""));
    assert_eq!(
        publishes(s.since(mark)),
        vec![job(CFG1, "r1", Source::ControlPlane)]
    );
    assert_eq!(
        s.events(),
        vec![Event::CpFetched {
            revision: "r1".into()
        }]
    );
}

// ---- GCS credentials ----

#[test]
fn gcs_import_waits_for_the_access_token() {
    let mut s = Sim::new(&gcs_settings(true, false));
    s.tick(0);
    // The token is fetched at once, beside the first CP poll.
    let token = s.take(CallKind::Credential);
    assert_eq!(
        (
            token.request.cluster.as_str(),
            token.request.method.as_str(),
            token.request.path.as_str()
        ),
        ("oauth", "POST", "/oauth2/token")
    );
    s.answer_cp(cp_down());
    let events = s.events();
    assert_eq!(events.last(), Some(&Event::ImportWaitingForCredentials));
    assert!(import_requests(&s.log).is_empty(), "no grant asked yet");
    assert!(s.pending.is_empty());
    s.answer_at(1_000, token.token, token_ok("ya29.tok"));
    assert_eq!(import_requests(&s.log), vec![1]);
    assert!(s.pending.is_empty(), "still waiting for the grant");
    s.grant();
    let get = s.take(CallKind::Import);
    assert_eq!(get.request.cluster, "object_storage");
    assert_eq!(
        get.request.path,
        format!("/storage/v1/b/bkt/o/pre%2F{VERSION}%2Fconfig.json?alt=media")
    );
    assert_eq!(
        header(&get.request, "authorization"),
        Some("Bearer ya29.tok")
    );
    assert!(!format!("{get:?}").contains("ya29.tok"), "Debug masks it");
}

#[test]
fn gcs_import_fails_clearly_when_no_token_can_be_had() {
    let mut s = Sim::new(&gcs_settings(true, false));
    s.tick(0);
    let token = s.take(CallKind::Credential);
    s.answer_cp(cp_down());
    s.events();
    let refused = resp(
        400,
        r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    );
    s.answer_at(1_000, token.token, refused);
    let events = s.events();
    match events.as_slice() {
        [Event::CredentialsFailed { error }, Event::ImportFailed {
            url,
            error: ImportFailure::Credentials(same),
        }] => {
            assert!(matches!(error, StorageError::Token(_)), "{error:?}");
            assert_eq!(error, same);
            assert!(url.ends_with("/config.json"), "{url}");
        }
        other => panic!("{other:?}"),
    }
    assert!(publishes(&s.log).is_empty() && import_requests(&s.log).is_empty());
    // Never a storage request afterwards, even once a token arrives.
    for i in 1..8 {
        s.tick(2_000 * i);
        while let Some(call) = s.pending.first().cloned() {
            s.pending.remove(0);
            let answer = match call.kind {
                CallKind::Credential => token_ok("ya29.tok"),
                _ => cp_down(),
            };
            s.answer(call.token, answer);
        }
    }
    assert!(
        sends_of(&s.log, CallKind::Credential).len() >= 2,
        "the token is retried"
    );
    assert!(import_requests(&s.log).is_empty());
    assert!(sends(&s.log).iter().all(|c| !c.kind.is_storage()));
}

#[test]
fn gcs_cp_answer_while_the_import_waits_for_its_token_cancels_it() {
    let mut s = Sim::new(&gcs_settings(true, false));
    s.tick(0);
    let token = s.take(CallKind::Credential);
    s.answer_cp(cp_down());
    assert_eq!(s.events().last(), Some(&Event::ImportWaitingForCredentials));
    // The CP answers while the token request is still out.
    s.tick_cp(5_000, cp_ok(CFG1, "\"e\""));
    let events = s.events();
    assert!(events.contains(&Event::ImportCancelled), "{events:?}");
    assert_eq!(
        publishes(&s.log),
        vec![job(CFG1, "r1", Source::ControlPlane)]
    );
    // The token arrives: no import is asked for, or sent, ever.
    s.answer_at(5_500, token.token, token_ok("ya29.tok"));
    s.grant();
    for i in 2..6 {
        s.tick_cp(5_000 * i, cp_down());
    }
    assert!(import_requests(&s.log).is_empty(), "{:?}", s.log);
    assert!(sends_of(&s.log, CallKind::Import).is_empty());
    assert_eq!(
        count(&s.all_events, |e| matches!(e, Event::ImportStarted { .. })),
        0
    );
}

#[test]
fn a_401_from_gcs_fetches_a_new_token() {
    let mut s = Sim::build(
        &gcs_settings(false, true),
        "n",
        Inherited::default(),
        1,
        Lease::Manual,
    );
    s.tick(0);
    let token = s.take(CallKind::Credential);
    s.answer(token.token, token_ok("ya29.tok"));
    // The CP answers; the election's first lease read is refused with 401.
    s.answer_cp(cp_ok(CFG1, "\"e1\""));
    let lease = s.take(CallKind::LeaseRead);
    assert_eq!(
        header(&lease.request, "authorization"),
        Some("Bearer ya29.tok")
    );
    let unauthorized = resp(
        401,
        r#"{"error":{"code":401,"message":"Invalid Credentials","errors":[{"reason":"authError"}]}}"#,
    );
    let mark = s.mark();
    s.answer_at(1_000, lease.token, unauthorized);
    assert!(s.events().iter().any(|e| matches!(
        e,
        Event::ElectionFailed {
            error: StorageError::Status { status: 401, .. },
            ..
        }
    )));
    // A new token is asked for at once, and nothing reaches the store
    // before it arrives.
    let renewal = s.take(CallKind::Credential);
    assert!(sends(s.since(mark)).iter().all(|c| !c.kind.is_storage()));
    s.tick(3_000);
    assert!(sends(s.since(mark)).iter().all(|c| !c.kind.is_storage()));
    s.answer(renewal.token, token_ok("ya29.tok2"));
    s.tick(3_100);
    let lease = s.take(CallKind::LeaseRead);
    assert_eq!(
        header(&lease.request, "authorization"),
        Some("Bearer ya29.tok2")
    );
}

// ---- export ----

#[test]
fn exports_new_revisions_with_a_valid_envelope() {
    let (mut s, put) = exporter_at_first_put();
    let r = &put.request;
    assert_eq!((r.method.as_str(), r.path.clone()), ("PUT", config_path()));
    assert_eq!(header(r, "content-type"), Some("application/json"));
    assert_eq!(
        header(r, "if-none-match"),
        Some("*"),
        "the object was absent"
    );
    assert_eq!(header(r, "if-match"), None);
    assert!(header(r, "authorization").is_some());
    let opened = open(r.body.as_deref().unwrap(), VERSION).unwrap();
    assert_eq!(opened.config_bytes, CFG1.as_bytes());
    assert_eq!(opened.revision, "r1");
    assert_eq!(opened.exporter, "node-7");
    assert_eq!(opened.term, 1);
    assert_eq!(opened.exported_at, Now::at_millis(1).wall.rfc3339());
    s.events();
    let mark = s.mark();
    s.answer(put.token, put_ok("\"w1\""));
    assert_eq!(
        s.events(),
        vec![Event::Exported {
            revision: "r1".into(),
            url: config_url()
        }]
    );
    assert_eq!(metrics(s.since(mark)), vec![Metric::ExportWritten]);
    // Next revision: PUT straight away, on the ETag of its own write.
    s.tick_cp(5_000, cp_ok(CFG2, "\"e2\""));
    assert!(!s.has_pending(CallKind::ExportRead));
    let put = s.take(CallKind::ExportWrite);
    assert_eq!(header(&put.request, "if-match"), Some("\"w1\""));
    assert_eq!(
        open(put.request.body.as_deref().unwrap(), VERSION)
            .unwrap()
            .revision,
        "r2"
    );
    s.answer(put.token, put_ok("\"w2\""));
    // The CP serves the same content again (new ETag): skipped.
    s.events();
    s.tick_cp(10_000, cp_ok(CFG2, "\"e3\""));
    assert!(s.events().contains(&Event::ExportSkipped {
        revision: "r2".into()
    }));
    assert!(s.pending.is_empty(), "{:?}", s.pending);
    // Back to r1's content: exported again (it differs from what is stored).
    s.tick_cp(15_000, cp_ok(CFG1, "\"e4\""));
    let put = s.take(CallKind::ExportWrite);
    assert_eq!(header(&put.request, "if-match"), Some("\"w2\""));
    assert_eq!(
        open(put.request.body.as_deref().unwrap(), VERSION)
            .unwrap()
            .revision,
        "r1"
    );
}

#[test]
fn content_already_stored_is_not_written_again() {
    // A restarted exporter finds its config already stored.
    let mut s = Sim::new(&s3_settings(false, true, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::ExportRead);
    s.events();
    s.answer(read.token, stored(CFG1, "r1", 1, Some("\"s1\"")));
    assert_eq!(
        s.events(),
        vec![Event::ExportSkipped {
            revision: "r1".into()
        }]
    );
    // Not later either, fresh CP answers or not.
    for i in 1..4 {
        s.tick_cp(5_000 * i, not_modified());
    }
    s.tick_cp(20_000, cp_ok(CFG1, "\"e2\""));
    assert!(sends_of(&s.log, CallKind::ExportWrite).is_empty());
}

#[test]
fn export_delay_keeps_only_the_newest_revision_and_the_first_due_time() {
    let mut s = Sim::new(&s3_settings(false, true, 10));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    s.tick_cp(5_000, cp_ok(CFG2, "\"e2\""));
    assert!(s.events().contains(&Event::ExportReplaced {
        revision: "r2".into(),
        replaced: "r1".into()
    }));
    // r2 replaced r1 but keeps r1's due time (10 s), so a CP changing
    // faster than the delay cannot starve the export.
    s.tick(9_999);
    assert!(s.pending.is_empty());
    s.tick(10_000);
    let read = s.take(CallKind::ExportRead);
    // The poll of this tick went out before the read: it does not count.
    s.answer(read.token, resp(404, NO_SUCH_KEY));
    s.answer_cp(not_modified());
    assert!(!s.has_pending(CallKind::ExportWrite));
    s.tick_cp(10_100, not_modified());
    let put = s.take(CallKind::ExportWrite);
    assert_eq!(
        open(put.request.body.as_deref().unwrap(), VERSION)
            .unwrap()
            .revision,
        "r2"
    );
    s.answer(put.token, put_ok("\"w\""));
    assert!(s.events().contains(&Event::Exported {
        revision: "r2".into(),
        url: config_url()
    }));
    assert_eq!(sends_of(&s.log, CallKind::ExportWrite).len(), 1, "r1 never");
}

#[test]
fn access_denied_on_the_check_still_writes_with_if_none_match() {
    let mut s = Sim::new(&s3_settings(false, true, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::ExportRead);
    s.events();
    let denied = resp(
        403,
        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    );
    s.answer(read.token, denied);
    let events = s.events();
    assert_eq!(
        events[..2],
        [
            Event::ExportCheckForbidden,
            Event::ExportAwaitsFresherCp {
                revision: "r1".into()
            }
        ]
    );
    s.tick_cp(1, not_modified());
    let put = s.take(CallKind::ExportWrite);
    assert_eq!(header(&put.request, "if-none-match"), Some("*"));
    assert_eq!(header(&put.request, "if-match"), None);

    // A bad signature is a failure, not "absent": no write, a re-read later.
    let mut s = Sim::new(&s3_settings(false, true, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::ExportRead);
    s.events();
    s.answer(read.token, resp(403, BAD_SIGNATURE));
    assert_eq!(
        s.events(),
        vec![Event::ExportFailed {
            revision: "r1".into(),
            error: StorageError::Status {
                status: 403,
                code: Some("SignatureDoesNotMatch".into()),
                message: Some("nope".into())
            },
            retry_in: Duration::from_secs(1)
        }]
    );
    s.tick(999);
    assert!(s.pending.is_empty());
    s.tick(1_000);
    s.take(CallKind::ExportRead);
    assert!(sends_of(&s.log, CallKind::ExportWrite).is_empty());
}

#[test]
fn export_failures_are_retried_with_backoff() {
    let (mut s, put) = exporter_at_first_put();
    let precondition = header(&put.request, "if-none-match").map(str::to_string);
    s.events();
    s.answer(put.token, resp(403, BAD_SIGNATURE));
    let mut waits = Vec::new();
    let mut now = s.now;
    for _ in 0..5 {
        let events = s.events();
        let retry_in = match events.as_slice() {
            [Event::ExportFailed {
                revision,
                error: StorageError::Status { status: 403, .. },
                retry_in,
            }] => {
                assert_eq!(revision, "r1");
                *retry_in
            }
            other => panic!("{other:?}"),
        };
        waits.push(retry_in.as_secs());
        let due = now + u64::try_from(retry_in.as_millis()).unwrap();
        s.tick_cp(due - 1, not_modified());
        assert!(!s.has_pending(CallKind::ExportWrite), "too early at {due}");
        s.events();
        s.tick_cp(due, not_modified());
        let put = s.take(CallKind::ExportWrite);
        assert_eq!(
            header(&put.request, "if-none-match").map(str::to_string),
            precondition,
            "the same precondition"
        );
        s.events();
        now = due;
        s.answer(put.token, resp(403, BAD_SIGNATURE));
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 16]);
    assert!(matches!(
        s.events().as_slice(),
        [Event::ExportFailed { retry_in, .. }] if *retry_in == Duration::from_secs(32)
    ));
    // Ticks in between (which keep the lease renewed) do not retry early.
    for wait in [10_000, 20_000, 30_000, 31_999] {
        s.tick_cp(now + wait, not_modified());
        assert!(
            !s.has_pending(CallKind::ExportWrite),
            "too early at +{wait}"
        );
    }
    // Success resets the backoff.
    s.tick_cp(now + 32_000, not_modified());
    let put = s.take(CallKind::ExportWrite);
    s.answer(put.token, put_ok("\"w\""));
    assert!(s
        .events()
        .iter()
        .any(|e| matches!(e, Event::Exported { .. })));
    s.tick_cp(now + 35_000, cp_ok(CFG2, "\"e2\""));
    let put = s.take(CallKind::ExportWrite);
    s.events();
    s.answer(put.token, resp(403, BAD_SIGNATURE));
    assert!(matches!(
        s.events().as_slice(),
        [Event::ExportFailed { retry_in, .. }] if *retry_in == Duration::from_secs(1)
    ));
}

#[test]
fn a_write_whose_answer_is_lost_is_read_back_before_the_next_one() {
    let (mut s, put) = exporter_at_first_put();
    s.events();
    // Storage timeout 1 s + 5 s grace after the PUT sent at 1 ms.
    s.tick_cp(6_000, not_modified());
    assert!(!s
        .events()
        .iter()
        .any(|e| matches!(e, Event::ExportFailed { .. })));
    s.tick_cp(6_001, not_modified());
    assert!(matches!(
        s.events().as_slice(),
        [Event::ExportFailed {
            error: StorageError::Status { status: 0, .. },
            retry_in,
            ..
        }] if *retry_in == Duration::from_secs(1)
    ));
    // The write may have happened: the retry reads first, and finds it.
    s.tick_cp(7_001, not_modified());
    assert!(!s.has_pending(CallKind::ExportWrite));
    let read = s.take(CallKind::ExportRead);
    s.answer(read.token, stored(CFG1, "r1", 1, Some("\"w\"")));
    assert_eq!(
        s.events(),
        vec![Event::ExportSkipped {
            revision: "r1".into()
        }]
    );
    // Its late answer changes nothing.
    let mark = s.mark();
    s.answer(put.token, put_ok("\"w\""));
    assert!(s.since(mark).is_empty() && s.events().is_empty());
    assert_eq!(sends_of(&s.log, CallKind::ExportWrite).len(), 1);
}

#[test]
fn a_new_driver_exports_what_the_old_one_published_after_a_fresh_cp_answer() {
    let mut s = Sim::build(
        &s3_settings(false, true, 0),
        "n",
        inherited(CFG1, "r1", Source::ControlPlane),
        1,
        Lease::Sole,
    );
    s.tick(0);
    // Its lease is taken before the CP answered: the old driver's CP answer
    // counts for the election. The poll went out before the read.
    let first_poll = s.take(CallKind::CpPoll);
    let read = s.take(CallKind::ExportRead);
    s.answer(read.token, resp(404, NO_SUCH_KEY));
    assert!(s.events().contains(&Event::ExportAwaitsFresherCp {
        revision: "r1".into()
    }));
    // An answer to a poll sent before the read does not tell.
    s.answer(first_poll.token, cp_ok(CFG1, "\"e1\""));
    assert!(!s.has_pending(CallKind::ExportWrite));
    assert!(publishes(&s.log).is_empty(), "inherited, unchanged");
    // One sent after it does.
    s.tick_cp(1, not_modified());
    let put = s.take(CallKind::ExportWrite);
    let opened = open(put.request.body.as_deref().unwrap(), VERSION).unwrap();
    assert_eq!(opened.config_bytes, CFG1.as_bytes());
    assert_eq!(opened.revision, "r1");
    s.answer(put.token, put_ok("\"w\""));
    assert!(s.events().contains(&Event::Exported {
        revision: "r1".into(),
        url: config_url()
    }));
    assert!(import_requests(&s.log).is_empty());

    // An imported config is not exported, and its driver does not run the
    // election (it has nothing of the CP's).
    let mut s = Sim::build(
        &s3_settings(true, true, 0),
        "n",
        inherited(CFG1, "r1", Source::Storage),
        1,
        Lease::Sole,
    );
    for i in 0..4 {
        s.tick_cp(5_000 * i, cp_down());
    }
    assert!(sends(&s.log).iter().all(|c| c.kind == CallKind::CpPoll));
}

#[test]
fn a_read_without_an_etag_never_leads_to_an_unconditional_write() {
    let mut s = Sim::new(&s3_settings(false, true, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::ExportRead);
    s.events();
    // Another config is stored, but the store sent no ETag.
    s.answer(read.token, stored(CFG2, "r2", 1, None));
    assert_eq!(
        s.events(),
        vec![Event::ExportRefusedNoEtag {
            revision: "r1".into(),
            retry_in: Duration::from_secs(1)
        }]
    );
    // Fresh CP answers do not make it write.
    s.tick_cp(1, not_modified());
    s.tick(999);
    assert!(s.pending.is_empty(), "{:?}", s.pending);
    // It reads again after the backoff; still no ETag: a longer backoff.
    s.tick(1_000);
    let read = s.take(CallKind::ExportRead);
    s.answer(read.token, stored(CFG2, "r2", 1, None));
    assert_eq!(
        s.events(),
        vec![Event::ExportRefusedNoEtag {
            revision: "r1".into(),
            retry_in: Duration::from_secs(2)
        }]
    );
    s.tick(2_999);
    assert!(s.pending.is_empty());
    s.tick(3_000);
    let read = s.take(CallKind::ExportRead);
    s.answer(read.token, stored(CFG2, "r2", 1, Some("\"s1\"")));
    s.tick_cp(3_100, not_modified());
    let put = s.take(CallKind::ExportWrite);
    assert_eq!(header(&put.request, "if-match"), Some("\"s1\""));
    // No write of config.json (or of the lease) was ever unconditional.
    for call in sends(&s.log) {
        if call.request.method == "PUT" {
            assert!(
                header(&call.request, "if-match").is_some_and(|e| !e.is_empty())
                    || header(&call.request, "if-none-match") == Some("*"),
                "{call:?}"
            );
        }
    }
}

/// A sole exporter that leads in term 2 (it finds its own lease of term 1
/// from before a restart), wrote nothing yet, and got 412 on its first
/// PUT: its re-read is pending.
fn leader_of_term_2_after_a_412() -> (Sim, Call) {
    let mut s = Sim::build(
        &s3_settings(false, true, 0),
        "node-7",
        Inherited::default(),
        1,
        Lease::Sole,
    );
    s.own_lease_term = Some(1);
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    assert!(s.events().contains(&Event::BecameLeader {
        term: 2,
        node: "node-7".into()
    }));
    assert!(metrics(&s.log).contains(&Metric::Leader(Some(2))));
    let read = s.take(CallKind::ExportRead);
    s.answer(read.token, resp(404, NO_SUCH_KEY));
    s.tick_cp(1, not_modified());
    let put = s.take(CallKind::ExportWrite);
    assert_eq!(header(&put.request, "if-none-match"), Some("*"));
    s.events();
    s.answer(
        put.token,
        resp(412, "<Error><Code>PreconditionFailed</Code></Error>"),
    );
    assert!(
        s.events()
            .iter()
            .all(|e| !matches!(e, Event::ExportFailed { .. } | Event::StoodDown { .. })),
        "a lost precondition is not a failure"
    );
    let reread = s.take(CallKind::ExportRead);
    (s, reread)
}

#[test]
fn a_412_rereads_and_a_stored_term_not_above_the_leaders_writes_again() {
    for stored_term in [1, 2] {
        let (mut s, reread) = leader_of_term_2_after_a_412();
        s.answer(
            reread.token,
            stored(CFG2, "r2", stored_term, Some("\"other\"")),
        );
        let events = s.events();
        assert!(
            !events.iter().any(|e| matches!(e, Event::StoodDown { .. })),
            "{stored_term}: {events:?}"
        );
        assert!(!metrics(&s.log).contains(&Metric::Leader(None)));
        // It read after its candidate's poll: a fresher answer first.
        assert!(!s.has_pending(CallKind::ExportWrite));
        s.tick_cp(2, not_modified());
        let put = s.take(CallKind::ExportWrite);
        assert_eq!(
            header(&put.request, "if-match"),
            Some("\"other\""),
            "{stored_term}"
        );
        let opened = open(put.request.body.as_deref().unwrap(), VERSION).unwrap();
        assert_eq!((opened.revision.as_str(), opened.term), ("r1", 2));
    }
}

#[test]
fn a_412_rereads_and_a_higher_stored_term_stands_the_leader_down() {
    let (mut s, reread) = leader_of_term_2_after_a_412();
    let mark = s.mark();
    s.answer(reread.token, stored(CFG2, "r2", 3, Some("\"other\"")));
    assert!(s.events().contains(&Event::StoodDown {
        term: 2,
        node: "node-7".into(),
        stored_term: 3
    }));
    assert_eq!(metrics(s.since(mark)), vec![Metric::Leader(None)]);
    // No write, however fresh the CP answers, until it leads again.
    s.tick_cp(2, not_modified());
    s.tick_cp(5_000, not_modified());
    s.tick_cp(9_000, cp_ok(CFG2, "\"e2\""));
    assert!(sends_of(s.since(mark), CallKind::ExportWrite).is_empty());
    assert!(sends_of(s.since(mark), CallKind::ExportRead).is_empty());
}

#[test]
fn the_stored_revision_never_goes_back() {
    let mut s = Sim::new(&s3_settings(false, true, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::ExportRead);
    // A poll goes out while the read is out.
    s.tick(5_000);
    let stale_poll = s.take(CallKind::CpPoll);
    s.events();
    // Another leader stored r2, newer than this node's r1.
    s.answer(read.token, stored(CFG2, "r2", 1, Some("\"s2\"")));
    assert_eq!(
        s.events(),
        vec![Event::ExportAwaitsFresherCp {
            revision: "r1".into()
        }]
    );
    // The answer to the poll sent before the read (a lagging CP replica
    // still serving r1) does not let r1 replace r2.
    s.answer(stale_poll.token, cp_ok(CFG1, "\"e1\""));
    assert!(!s.has_pending(CallKind::ExportWrite));
    // The next poll is hurried; it brings r2: nothing to write.
    s.tick(5_001);
    let poll = s.take(CallKind::CpPoll);
    s.answer(poll.token, cp_ok(CFG2, "\"e2\""));
    assert!(s.events().contains(&Event::ExportSkipped {
        revision: "r2".into()
    }));
    assert!(sends_of(&s.log, CallKind::ExportWrite).is_empty());
}

// ---- election and driving ----

#[test]
fn resign_of_a_leader_reports_the_loss() {
    let (mut s, put) = exporter_at_first_put();
    s.events();
    let mark = s.mark();
    s.resign();
    assert_eq!(
        s.events(),
        vec![Event::LostLeadership {
            term: 1,
            node: "node-7".into(),
            reason: LossReason::NoLongerDriving
        }]
    );
    assert_eq!(s.since(mark), [Output::Metric(Metric::Leader(None))]);
    // Its calls are forgotten: their late answers do nothing.
    let mark = s.mark();
    s.answer(put.token, put_ok("\"w\""));
    assert!(s.since(mark).is_empty() && s.events().is_empty());
    assert!(!s
        .all_events
        .iter()
        .any(|e| matches!(e, Event::Exported { .. })));

    // Even when its lease's validity ran out unnoticed: whoever drives next
    // takes the lease again, so the loss is reported now.
    let (mut s, _) = exporter_at_first_put();
    s.events();
    s.now = 60_000;
    s.resign();
    assert!(matches!(
        s.events().as_slice(),
        [Event::LostLeadership {
            term: 1,
            reason: LossReason::NoLongerDriving,
            ..
        }]
    ));

    // A follower has nothing to report.
    let mut s = Sim::new(&s3_settings(false, true, 0));
    s.tick(0);
    let mark = s.mark();
    s.resign();
    assert!(s.since(mark).is_empty() && s.events().is_empty());
}

#[test]
fn a_resigned_controller_ignores_late_answers_and_its_successor_polls_at_once() {
    let settings = s3_settings(true, false, 0);
    let mut s = Sim::new(&settings);
    s.tick(0);
    let poll = s.take(CallKind::CpPoll);
    s.resign();
    let mark = s.mark();
    s.answer(poll.token, cp_ok(CFG1, "\"e\""));
    assert!(s.since(mark).is_empty() && s.events().is_empty());
    assert!(!s.c.has_config());
    // A new driver starts over: its first tick polls.
    let first = s.c.next_token();
    let mut next = Sim::build(&settings, "n", Inherited::default(), first, Lease::Sole);
    next.tick(1);
    let poll = next.take(CallKind::CpPoll);
    assert_eq!(poll.token, first);
}

// ---- metrics and tokens ----

#[test]
fn metrics_count_storage_requests_exports_and_leadership() {
    let (mut s, put) = exporter_at_first_put();
    s.answer(put.token, put_ok("\"w1\""));
    s.tick_cp(5_000, cp_ok(CFG2, "\"e2\""));
    let put = s.take(CallKind::ExportWrite);
    s.answer(put.token, put_ok("\"w2\""));
    s.tick_cp(10_000, not_modified());
    s.tick_cp(20_000, not_modified());
    let log = &s.log;
    // One StorageRequest right before every storage call, none otherwise.
    for (i, output) in log.iter().enumerate() {
        match output {
            Output::Metric(Metric::StorageRequest) => assert!(
                matches!(log.get(i + 1), Some(Output::Send(c)) if c.kind.is_storage()),
                "{i}: {log:?}"
            ),
            Output::Send(c) if c.kind.is_storage() => assert!(
                matches!(
                    i.checked_sub(1).map(|j| &log[j]),
                    Some(Output::Metric(Metric::StorageRequest))
                ),
                "{i}: {log:?}"
            ),
            _ => {}
        }
    }
    let storage = sends(log).iter().filter(|c| c.kind.is_storage()).count();
    let m = metrics(log);
    assert_eq!(
        m.iter().filter(|m| **m == Metric::StorageRequest).count(),
        storage
    );
    // Lease read + acquire + renewals at 10 s and 20 s, read, two writes.
    assert_eq!(storage, 7);
    assert!(sends_of(log, CallKind::CpPoll).len() >= 5);
    assert_eq!(m.iter().filter(|m| **m == Metric::ExportWritten).count(), 2);
    assert_eq!(
        m.iter()
            .filter(|m| matches!(m, Metric::Leader(_)))
            .collect::<Vec<_>>(),
        vec![&Metric::Leader(Some(1))]
    );

    // Credentials and CP polls are not storage requests.
    let mut s = Sim::new(&gcs_settings(false, true));
    s.tick(0);
    assert_eq!(sends(&s.log).len(), 2);
    assert!(metrics(&s.log).is_empty());
}

#[test]
fn tokens_start_at_first_token_are_unique_and_unknown_ones_are_ignored() {
    let mut s = Sim::build(
        &s3_settings(true, true, 0),
        "n",
        Inherited::default(),
        1_000,
        Lease::Sole,
    );
    assert_eq!(s.c.next_token(), 1_000);
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer(get.token, resp(404, NO_SUCH_KEY));
    s.tick_cp(5_000, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::ExportRead);
    s.answer(read.token, resp(404, NO_SUCH_KEY));
    s.tick_cp(5_001, not_modified());
    let put = s.take(CallKind::ExportWrite);
    s.answer(put.token, put_ok("\"w\""));
    let tokens: Vec<Token> = sends(&s.log).iter().map(|c| c.token).collect();
    assert!(tokens.len() >= 8, "{tokens:?}");
    assert_eq!(tokens[0], 1_000);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(tokens.iter().collect::<HashSet<_>>().len(), tokens.len());
    assert_eq!(s.c.next_token(), tokens[tokens.len() - 1] + 1);
    // Unknown tokens, and answers already given, are ignored.
    s.events();
    let mark = s.mark();
    for token in [
        1,
        999,
        s.c.next_token(),
        s.c.next_token() + 7,
        put.token,
        get.token,
    ] {
        s.answer(token, cp_ok(CFG2, "\"e2\""));
        s.answer(token, resp(404, NO_SUCH_KEY));
    }
    assert!(s.since(mark).is_empty() && s.events().is_empty());
}

// ---- log lines ----

#[test]
fn documented_log_lines_keep_their_wording() {
    let mut lines = Vec::new();
    // CP down at start, an import refused for its version, the CP back.
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer(get.token, resp(200, &envelope_for(CFG1, "r1", "9.9.9", 1)));
    s.tick_cp(5_000, cp_ok(CFG1, "\"e\""));
    lines.extend(s.all_events.iter().cloned());
    // A successful import.
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer(get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    lines.extend(s.all_events.iter().cloned());
    // An exporter: leads, fails once, writes, resigns.
    let (mut s, put) = exporter_at_first_put();
    s.answer(put.token, resp(403, BAD_SIGNATURE));
    s.tick_cp(1_001, not_modified());
    let put = s.take(CallKind::ExportWrite);
    s.answer(put.token, put_ok("\"w\""));
    s.resign();
    lines.extend(s.all_events.iter().cloned());
    // GCS without a token.
    let mut s = Sim::new(&gcs_settings(true, false));
    s.tick(0);
    let token = s.take(CallKind::Credential);
    s.answer_cp(cp_down());
    s.answer(
        token.token,
        resp(
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        ),
    );
    lines.extend(s.all_events.iter().cloned());

    let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let url = config_url();
    for expected in [
        "CP unavailable: status 503: upstream connect error".to_string(),
        format!("importing fallback config from {url}"),
        format!(
            "import failed: version mismatch: exported by version 9.9.9, this is version {VERSION} ({url}); nothing applied, still polling the CP"
        ),
        "CP fetched revision r1; applying it".to_string(),
        format!(
            "imported revision r1 from {url} (exported at {} by exp)",
            exported_at().rfc3339()
        ),
        "became leader (term 1) node=node-7".to_string(),
        "export of revision r1 waits for a CP answer newer than the stored config".to_string(),
        "export of revision r1 failed: storage answered 403 SignatureDoesNotMatch: nope; retrying in 1000 ms".to_string(),
        format!("exported revision r1 to {url}"),
        "lost leadership (term 1) node=node-7: this root context no longer drives the process"
            .to_string(),
        "waiting for the store's access token before importing".to_string(),
    ] {
        assert!(lines.contains(&expected), "{expected}\nnot in {lines:#?}");
    }
    assert!(
        lines.iter().any(|l| l
            .starts_with("import failed: cannot get an access token: token endpoint answered 400")
            && l.contains("invalid_grant")),
        "{lines:#?}"
    );
}

// ---- found by review, fixed ----

#[test]
fn a_waiting_exporter_does_not_poll_a_down_cp_on_every_tick() {
    // A new driver inherits a CP config while the CP is down: its export
    // waits for a CP answer newer than its read of config.json.
    let mut s = Sim::build(
        &s3_settings(false, true, 0),
        "n",
        inherited(CFG1, "r1", Source::ControlPlane),
        1,
        Lease::Sole,
    );
    s.tick(0);
    s.answer_cp(cp_down());
    let read = s.take(CallKind::ExportRead);
    s.answer(read.token, resp(404, NO_SUCH_KEY));
    // The root ticks every 200 ms; the CP stays down for 10 s.
    for ms in (200..=10_000).step_by(200) {
        s.tick_cp(ms, cp_down());
    }
    let polls = sends_of(&s.log, CallKind::CpPoll).len();
    // At 0, 5 and 10 s, plus at most one hurried poll.
    assert!(polls <= 4, "{polls} CP polls in 10 s");
    assert!(sends_of(&s.log, CallKind::ExportWrite).is_empty());
}

#[test]
fn a_read_answered_after_the_lease_ran_out_is_not_a_newer_term() {
    // Export delay 27 s; the lease (ttl 30 s, margin 2 s) is valid until
    // 28 s unless renewed, and its renewals fail.
    let mut s = Sim::build(
        &s3_settings(false, true, 27),
        "n",
        Inherited::default(),
        1,
        Lease::Sole,
    );
    s.renewals_fail = true;
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    s.tick_cp(27_000, not_modified());
    let read = s.take(CallKind::ExportRead);
    s.events();
    // The read comes back at 28 s: config.json holds this leader's own
    // term 1, which is not newer than term 1.
    s.answer_at(28_000, read.token, stored(CFG2, "r2", 1, Some("\"s\"")));
    let events = s.events();
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::StoodDown { term, stored_term, .. } if stored_term <= term
        )),
        "{events:?}"
    );
    assert!(
        events.contains(&Event::LostLeadership {
            term: 1,
            node: "n".into(),
            reason: LossReason::NotRenewed
        }),
        "{events:?}"
    );
}
