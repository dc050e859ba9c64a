//! The controller driven by a simulated clock and scripted answers.
//! Assertions are on typed [`Event`]s and [`Output`]s; only
//! `documented_log_lines_keep_their_wording` looks at rendered lines.

use super::*;
use crate::action::{Call, CallKind, Metric, Token};
use crate::clock::Now;
use crate::election::LeaseRecord;
use crate::envelope::{open, seal, sha256_hex, EnvelopeError, Export, Protection, Trust};
use crate::event::{CpFailure, Event, ImportFailure, Level, LossReason};
use crate::gateway::GatewayConfig;
use crate::http::{HttpRequest, HttpResponse, TransportError};
use crate::process::{ImportRefusal, PublishJob};
use crate::published::{Meta, Source};
use crate::rng::NonceSource;
use crate::settings::Settings;
use crate::status::{ConfigSource, State, StatusRecord};
use crate::storage::StorageError;
use crate::time::Timestamp;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const CFG1: &str =
    r#"{"revision":"r1","routes":[{"name":"echo","paths":["/echo"],"upstream":"echo_service"}]}"#;
const CFG2: &str =
    r#"{"revision":"r2","routes":[{"name":"v2","paths":["/v2"],"upstream":"echo_service"}]}"#;
/// The controller's seed (the import backoff's jitter).
const SEED: u64 = 7;
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

/// S3 with import on and export off, plus `import` (the policy object),
/// extra `storage` and extra `control_plane` fields (each a JSON object's
/// inside, possibly empty).
fn s3_import_settings(import: &str, storage: &str, control_plane: &str) -> Settings {
    let comma = |extra: &str| match extra {
        "" => String::new(),
        e => format!(",{e}"),
    };
    let json = format!(
        r#"{{"cluster_fallback_config_import":true,
            "cluster_fallback_config_storage":"s3://bkt/pre",
            "import":{{{import}}},
            "storage":{{"endpoint":"http://127.0.0.1:9000","timeout_ms":1000{}}},
            "control_plane":{{"timeout_ms":1000,"poll_interval_ms":5000{}}}}}"#,
        comma(storage),
        comma(control_plane)
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

fn version_url(version: &str) -> String {
    format!("s3://bkt/pre/{version}/config.json")
}

fn version_path(version: &str) -> String {
    format!("/bkt/pre/{version}/config.json")
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
        seal(
            Export {
                config: config.as_bytes(),
                revision,
                version,
                exporter: "exp",
                exported_at: exported_at(),
                term,
            },
            Protection::NONE,
        )
        .unwrap(),
    )
    .unwrap()
}

/// An envelope of `version` exported at `at` (by wall clock).
fn envelope_at(config: &str, revision: &str, version: &str, at: Timestamp) -> String {
    String::from_utf8(
        seal(
            Export {
                config: config.as_bytes(),
                revision,
                version,
                exporter: "exp",
                exported_at: at,
                term: 1,
            },
            Protection::NONE,
        )
        .unwrap(),
    )
    .unwrap()
}

/// A read of `version`'s snapshot holding `config`.
fn snapshot(config: &str, revision: &str, version: &str) -> HttpResponse {
    resp(200, &envelope_for(config, revision, version, 1))
}

/// An S3 ListObjectsV2 answer (delimiter `/`) listing these version
/// folders under `pre/`, with the next page's token if any. Its root
/// element has no attributes (see `listing_with_namespace`).
fn listing(versions: &[&str], next: Option<&str>) -> HttpResponse {
    listing_under("<ListBucketResult>", versions, next)
}

/// The same as S3 (and MinIO) send it: the root element names its XML
/// namespace.
fn listing_with_namespace(versions: &[&str]) -> HttpResponse {
    listing_under(
        r#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
        versions,
        None,
    )
}

fn listing_under(root: &str, versions: &[&str], next: Option<&str>) -> HttpResponse {
    let prefixes: String = versions
        .iter()
        .map(|v| format!("<CommonPrefixes><Prefix>pre/{v}/</Prefix></CommonPrefixes>"))
        .collect();
    let more = match next {
        Some(t) => format!(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>{t}</NextContinuationToken>"
        ),
        None => "<IsTruncated>false</IsTruncated>".to_string(),
    };
    resp(
        200,
        &format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>{root}<Name>bkt</Name><Prefix>pre/</Prefix><Delimiter>/</Delimiter>{more}{prefixes}</ListBucketResult>"#
        ),
    )
}

/// Envoy's answer when it cannot connect to the upstream.
const CONNECT_ERROR: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";

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
    let parsed = GatewayConfig::parse(config.as_bytes()).unwrap();
    PublishJob::new(
        source,
        revision.into(),
        sha256_hex(config.as_bytes()),
        config.as_bytes().to_vec(),
        &parsed,
    )
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
        import_in_flight: false,
        status: None,
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
    /// The process's import attempts granted so far (the next grant is
    /// attempt `attempts + 1`).
    attempts: u32,
    /// Sent and not answered yet (lease calls only under `Lease::Manual`).
    pending: Vec<Call>,
    /// Every output, in order.
    log: Vec<Output>,
    /// Events not yet collected by [`Sim::events`].
    events: Vec<Event>,
    /// Every event, in order.
    all_events: Vec<Event>,
    /// The events of `Controller::new`.
    startup: Vec<Event>,
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
        Sim::seeded(settings, node, inherited, first_token, lease, SEED)
    }

    fn seeded(
        settings: &Settings,
        node: &str,
        inherited: Inherited,
        first_token: Token,
        lease: Lease,
        seed: u64,
    ) -> Sim {
        let attempts = inherited.import_attempts;
        let mut c = Controller::new(
            settings,
            node.into(),
            inherited,
            first_token,
            seed,
            Some(NonceSource::new([9; 32])),
            Now::at_millis(0),
        );
        // What a driver says when it starts (the credential source, ...),
        // kept apart so that tests see the events of what they do.
        let startup = c.take_events();
        Sim {
            c,
            startup: startup.clone(),
            node: node.into(),
            now: 0,
            lease,
            own_lease_term: None,
            renewals_fail: false,
            lease_writes: 0,
            attempts,
            pending: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            all_events: startup,
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

    /// Ticks every 200 ms, as a root does, from the next tick after now
    /// up to (not including) `ms`: decisions that wait for ticks as well
    /// as time (a call given up as lost) need them.
    fn ticks_until(&mut self, ms: u64) {
        let mut t = self.now - self.now % 200 + 200;
        while t < ms {
            self.tick(t);
            t += 200;
        }
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

    /// The process grants its next import attempt.
    fn grant(&mut self) {
        self.attempts += 1;
        self.c.import_granted(self.attempts, self.at());
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
                    let body = String::from_utf8(record.encode()).unwrap();
                    with_etag(200, &body, "\"lease-0\"")
                }
                None => resp(404, NO_SUCH_KEY),
            };
        }
        let record = LeaseRecord::decode(call.request.body.as_deref().unwrap()).unwrap();
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

fn import_requests(out: &[Output]) -> Vec<Option<u32>> {
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

fn statuses(out: &[Output]) -> Vec<StatusRecord> {
    out.iter()
        .filter_map(|o| match o {
            Output::Status(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn end_imports(out: &[Output]) -> usize {
    out.iter().filter(|o| **o == Output::EndImport).count()
}

fn metric_count(out: &[Output], metric: Metric) -> usize {
    metrics(out).iter().filter(|m| **m == metric).count()
}

/// The import failures reported, with their waits.
fn import_failures(events: &[Event]) -> Vec<(ImportFailure, Option<Duration>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ImportFailed {
                error, retry_in, ..
            } => Some((error.clone(), *retry_in)),
            _ => None,
        })
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap()
}

/// Whether `wait` lies in the upper half of `full`, as equal jitter puts it.
fn jittered(wait: Duration, full: Duration) -> bool {
    wait >= full / 2 && wait <= full
}

/// CP down at start; the first attempt is granted and its read of this
/// version's `config.json` is pending. Events so far are collected.
fn import_pending(settings: &Settings) -> (Sim, Call) {
    let mut s = Sim::new(settings);
    s.tick_cp(0, cp_down());
    assert_eq!(import_requests(&s.log).len(), 1);
    s.grant();
    let get = s.take(CallKind::Import);
    assert_eq!(get.request.path, config_path());
    s.events();
    (s, get)
}

/// Answers the pending import read at `ms` with `answer`, expects the one
/// attempt failure, and returns its error and wait.
fn fail_import(s: &mut Sim, ms: u64, get: Call, answer: HttpResponse) -> (ImportFailure, Duration) {
    s.answer_at(ms, get.token, answer);
    let events = s.events();
    match import_failures(&events).as_slice() {
        [(error, Some(wait))] => (error.clone(), *wait),
        _ => panic!("{events:?}"),
    }
}

/// Ticks (answering CP polls with 503) up to `due`: nothing is asked
/// before it, the next attempt at it. Returns with that request logged.
fn retry_at(s: &mut Sim, due: u64) {
    let asked = import_requests(&s.log).len();
    s.tick_cp(due - 1, cp_down());
    assert_eq!(
        import_requests(&s.log).len(),
        asked,
        "no retry before {due} ms"
    );
    s.tick_cp(due, cp_down());
    assert_eq!(
        import_requests(&s.log).len(),
        asked + 1,
        "the retry is asked for at {due} ms"
    );
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
    // 304: nothing to do but note the CP answered and the config is fresh.
    assert!(sends(s.since(mark)).is_empty() && publishes(s.since(mark)).is_empty());
    // The age gauge follows the status' new freshness at once.
    assert_eq!(
        metrics(s.since(mark)),
        vec![Metric::CpReachable(true), Metric::ConfigAge(0)]
    );
    assert_eq!(
        statuses(s.since(mark))
            .iter()
            .map(|r| r.fresh_at_ms)
            .collect::<Vec<_>>(),
        vec![Some(Now::at_millis(5_000).wall.as_millis())]
    );
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
    // Envoy's connect errors and timeouts are named, not bare statuses.
    assert_eq!(
        events[1..],
        [
            Event::CpUnavailable {
                reason: CpFailure::Transport(TransportError::Unreachable(
                    "upstream connect error".into()
                )),
                again: false
            },
            Event::CpUnavailable {
                reason: CpFailure::Transport(TransportError::Timeout),
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
    assert_eq!(import_requests(&s.log), vec![None], "unlimited by default");
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
    assert_eq!(
        import_requests(&s.log),
        vec![None],
        "the import is asked for"
    );
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
            reason: CpFailure::Transport(TransportError::NoAnswer("not sent: BadArgument".into())),
            again: false
        }]
    );
    assert_eq!(
        import_requests(&s.log),
        vec![None],
        "the import is asked for"
    );
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
    s.ticks_until(5_999);
    s.tick(5_999);
    assert!(s.events().is_empty() && s.pending.is_empty());
    // At 6 s the poll is declared lost and the overdue one goes out.
    s.tick(6_000);
    assert_eq!(
        s.events(),
        vec![Event::CpUnavailable {
            reason: CpFailure::Transport(TransportError::NoAnswer(
                "no answer from the proxy".into()
            )),
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
    assert_eq!(import_requests(&s.log), vec![None]);
    assert!(s.pending.is_empty());
    let mark = s.mark();
    s.grant();
    assert_eq!(s.events(), vec![Event::ImportStarted { url: config_url() }]);
    assert_eq!(
        metrics(s.since(mark)),
        vec![Metric::ImportAttempt, Metric::StorageRequest]
    );
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
            version: VERSION.into(),
            url: config_url(),
            exported_at: exported_at().rfc3339(),
            exporter: "exp".into(),
            signed_by: None,
            encrypted_with: None,
        }]
    );
    assert_eq!(end_imports(s.since(mark)), 1, "the grant is given back");
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
        assert_eq!(import_requests(&s.log), vec![None]);
        s.events();
        s.refuse(refusal);
        let expected = match refusal {
            ImportRefusal::CpAnswered => vec![Event::ImportCancelled],
            // The process used up its attempts (in an earlier driver).
            ImportRefusal::Exhausted => vec![Event::ImportGaveUp { attempts: 0 }],
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
fn refused_imports_apply_nothing_and_are_retried_with_backoff() {
    let wrong_version = envelope_for(CFG1, "r1", "9.9.9", 1);
    let tampered = envelope_for(CFG1, "r1", VERSION, 1).replace("/echo", "/evil");
    type Check = fn(&ImportFailure) -> bool;
    let cases: [(HttpResponse, Check); 6] = [
        // Without older versions a missing snapshot is the end of the
        // attempt (with them, see `a_missing_snapshot_falls_back_...`).
        (resp(404, NO_SUCH_KEY), |e| {
            *e == ImportFailure::NotFound {
                version: VERSION.into(),
            }
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
        // A server error that is not the proxy's: a status, retried too.
        (
            resp(
                503,
                "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            ),
            |e| {
                matches!(
                    e,
                    ImportFailure::Storage(StorageError::Status { status: 503, code: Some(c), .. })
                        if c == "SlowDown"
                )
            },
        ),
    ];
    let settings = s3_import_settings(r#""older_versions":false"#, "", "");
    for (i, (answer, check)) in cases.into_iter().enumerate() {
        let (mut s, get) = import_pending(&settings);
        let mark = s.mark();
        s.answer_at(1_000, get.token, answer);
        assert!(publishes(&s.log).is_empty(), "case {i}");
        assert!(!s.c.has_config(), "case {i}");
        let events = s.events();
        let wait = match events.as_slice() {
            [e @ Event::ImportFailed {
                url,
                error,
                retry_in: Some(wait),
            }] => {
                assert_eq!(url, &config_url(), "case {i}");
                assert!(check(error), "case {i}: {error:?}");
                assert_eq!(e.level(), Level::Error, "case {i}");
                *wait
            }
            other => panic!("case {i}: {other:?}"),
        };
        assert!(
            jittered(wait, Duration::from_secs(1)),
            "case {i}: the first wait is within [0.5 s, 1 s]: {wait:?}"
        );
        assert_eq!(end_imports(s.since(mark)), 1, "case {i}");
        assert_eq!(
            metric_count(s.since(mark), Metric::ImportFailure),
            1,
            "case {i}"
        );
        // Retried after the wait, with a new grant.
        retry_at(&mut s, 1_000 + millis(wait));
        assert_eq!(sends_of(&s.log, CallKind::Import).len(), 1, "case {i}");
        s.grant();
        let get = s.take(CallKind::Import);
        assert_eq!(get.request.path, config_path(), "case {i}");
        // The CP still wins over an attempt that is out.
        s.tick_cp(5_000, cp_ok(CFG1, "\"e\""));
        s.answer(get.token, stored(CFG2, "r2", 1, Some("\"s\"")));
        assert_eq!(
            publishes(&s.log),
            vec![job(CFG1, "r1", Source::ControlPlane)],
            "case {i}"
        );
        assert_eq!(end_imports(&s.log), 2, "case {i}");
    }
}

#[test]
fn a_lost_import_answer_is_retried() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.events();
    // Storage timeout 1 s + 5 s grace; the CP poll due at 5 s is answered.
    s.ticks_until(5_000);
    s.tick_cp(5_000, cp_down());
    s.ticks_until(6_000);
    s.events();
    let mark = s.mark();
    s.tick(6_000);
    let events = s.events();
    let wait = match import_failures(&events).as_slice() {
        [(
            ImportFailure::Storage(StorageError::Transport(TransportError::NoAnswer(why))),
            Some(wait),
        )] => {
            assert_eq!(why, "no answer from the proxy");
            *wait
        }
        _ => panic!("the lost answer is an import failure: {events:?}"),
    };
    assert_eq!(end_imports(s.since(mark)), 1);
    let mark = s.mark();
    s.answer(get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert!(s.since(mark).is_empty(), "its late answer is ignored");
    assert!(!s.c.has_config());
    // The retry reads again and applies.
    retry_at(&mut s, 6_000 + millis(wait));
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer(get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert_eq!(publishes(&s.log), vec![job(CFG1, "r1", Source::Storage)]);
    for i in 2..5 {
        s.tick_cp(5_000 * i, cp_down());
    }
    assert_eq!(import_requests(&s.log).len(), 2);
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
    assert_eq!(import_requests(&s.log), vec![None]);
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
    let cases: [(&str, Settings, Inherited, bool); 6] = [
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
                cp_answered: true,
                ..Inherited::default()
            },
            false,
        ),
        (
            "the process used its attempts",
            s3_import_settings(r#""max_attempts":2"#, "", ""),
            Inherited {
                import_attempts: 2,
                ..Inherited::default()
            },
            false,
        ),
        (
            "the process's CP answered while an attempt was out",
            settings.clone(),
            Inherited {
                cp_answered: true,
                import_attempts: 1,
                import_in_flight: true,
                ..Inherited::default()
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
    assert_eq!(import_requests(&s.log), vec![None]);
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
fn gcs_import_fails_clearly_when_no_token_can_be_had_and_retries_once_one_can() {
    let mut s = Sim::new(&gcs_settings(true, false));
    s.tick(0);
    let token = s.take(CallKind::Credential);
    s.answer_cp(cp_down());
    s.events();
    let refused = resp(
        400,
        r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    );
    let mark = s.mark();
    s.answer_at(1_000, token.token, refused);
    let events = s.events();
    match events.as_slice() {
        [Event::CredentialsFailed { error }, Event::ImportFailed {
            url,
            error: ImportFailure::Credentials(same),
            retry_in: Some(wait),
        }] => {
            assert!(matches!(error, StorageError::Credentials(_)), "{error:?}");
            assert_eq!(error, same);
            assert!(url.ends_with("/config.json"), "{url}");
            assert!(jittered(*wait, Duration::from_secs(1)), "{wait:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(publishes(&s.log).is_empty() && import_requests(&s.log).is_empty());
    // No grant was held: none is given back, and no attempt went out to
    // fail (import_failures_total counts attempts that applied nothing).
    assert_eq!(end_imports(s.since(mark)), 0);
    assert_eq!(metric_count(s.since(mark), Metric::ImportFailure), 0);
    assert_eq!(
        statuses(s.since(mark)).last().map(|r| r.state),
        Some(State::ImportFailed)
    );
    // The token is retried; once one arrives, the import asks again. No
    // storage request goes out before the grant.
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
    assert_eq!(import_requests(&s.log), vec![None]);
    assert!(sends(&s.log).iter().all(|c| !c.kind.is_storage()));
    s.grant();
    let get = s.take(CallKind::Import);
    assert_eq!(
        header(&get.request, "authorization"),
        Some("Bearer ya29.tok")
    );
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
    let opened = open(r.body.as_deref().unwrap(), VERSION, &Trust::NONE).unwrap();
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
        open(put.request.body.as_deref().unwrap(), VERSION, &Trust::NONE)
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
        open(put.request.body.as_deref().unwrap(), VERSION, &Trust::NONE)
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
        open(put.request.body.as_deref().unwrap(), VERSION, &Trust::NONE)
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
    s.ticks_until(5_000);
    s.tick_cp(5_000, not_modified());
    s.ticks_until(6_000);
    s.events();
    s.tick_cp(6_000, not_modified());
    assert!(!s
        .events()
        .iter()
        .any(|e| matches!(e, Event::ExportFailed { .. })));
    s.tick_cp(6_001, not_modified());
    assert!(matches!(
        s.events().as_slice(),
        [Event::ExportFailed {
            error: StorageError::Transport(TransportError::NoAnswer(_)),
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
    let opened = open(put.request.body.as_deref().unwrap(), VERSION, &Trust::NONE).unwrap();
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
    leader_of_term_2_after_a_412_with(&s3_settings(false, true, 0))
}

fn leader_of_term_2_after_a_412_with(settings: &Settings) -> (Sim, Call) {
    let mut s = Sim::build(settings, "node-7", Inherited::default(), 1, Lease::Sole);
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
        let opened = open(put.request.body.as_deref().unwrap(), VERSION, &Trust::NONE).unwrap();
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

/// Someone with write access to the bucket stores a huge term to make
/// every exporter stand down for good: a leader that can verify
/// signatures obeys only a signed term, and replaces the forgery.
#[test]
fn a_signing_leader_obeys_only_a_signed_term() {
    let settings = protected_settings(false, true, Some(("s1", 1)), &[], &[("e1", 2)]);
    let forged = |term: u64| {
        let mut v: serde_json::Value =
            serde_json::from_str(&protected_envelope_in_term(&settings, CFG2, "r2", 1)).unwrap();
        v["term"] = term.into();
        v.to_string()
    };
    let by_other_key = protected_envelope_in_term(
        &protected_settings(false, true, Some(("s1", 5)), &[], &[("e1", 2)]),
        CFG2,
        "r2",
        u64::MAX,
    );
    let unsigned = envelope_for(CFG2, "r2", VERSION, u64::MAX);
    for (case, body) in [
        ("edited term", forged(u64::MAX)),
        ("another key", by_other_key),
        ("unsigned", unsigned),
    ] {
        let (mut s, reread) = leader_of_term_2_after_a_412_with(&settings);
        s.answer(reread.token, with_etag(200, &body, "\"forged\""));
        let events = s.events();
        assert!(
            !events.iter().any(|e| matches!(e, Event::StoodDown { .. })),
            "{case}: {events:?}"
        );
        s.tick_cp(2, not_modified());
        let put = s.take(CallKind::ExportWrite);
        assert_eq!(
            header(&put.request, "if-match"),
            Some("\"forged\""),
            "{case}"
        );
        let opened = open(
            put.request.body.as_deref().unwrap(),
            VERSION,
            &trust_of(&settings),
        )
        .unwrap();
        assert_eq!((opened.revision.as_str(), opened.term), ("r1", 2), "{case}");
    }
    // A genuinely newer leader (signed, term 3) still fences it.
    let (mut s, reread) = leader_of_term_2_after_a_412_with(&settings);
    let newer = protected_envelope_in_term(&settings, CFG2, "r2", 3);
    s.answer(reread.token, with_etag(200, &newer, "\"newer\""));
    assert!(s.events().contains(&Event::StoodDown {
        term: 2,
        node: "node-7".into(),
        stored_term: 3
    }));
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

    // No snapshot of this version: an older one, after a skipped one.
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer(get.token, resp(404, NO_SUCH_KEY));
    let list = s.take(CallKind::Import);
    s.answer(list.token, listing(&["0.0.8", "0.0.9"], None));
    let get = s.take(CallKind::Import);
    s.answer(get.token, resp(404, NO_SUCH_KEY));
    let get = s.take(CallKind::Import);
    s.answer(get.token, snapshot(CFG1, "r1", "0.0.8"));
    lines.extend(s.all_events.iter().cloned());
    // Out of attempts; a snapshot too old; a listing refused.
    let settings = s3_import_settings(r#""max_attempts":1,"max_age_s":3600"#, "", "");
    let (mut s, get) = import_pending(&settings);
    s.answer_at(
        1_000,
        get.token,
        resp(
            200,
            &envelope_at(
                CFG1,
                "r1",
                VERSION,
                Timestamp::from_secs(1_800_000_000 - 7_299),
            ),
        ),
    );
    lines.extend(s.all_events.iter().cloned());
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    s.answer(get.token, resp(404, NO_SUCH_KEY));
    let list = s.take(CallKind::Import);
    s.answer(
        list.token,
        resp(
            403,
            "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        ),
    );
    lines.extend(s.all_events.iter().cloned());

    let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let url = config_url();
    let has = |prefix: &str, suffix: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.ends_with(suffix))
    };
    for (prefix, suffix) in [
        (
            format!(
                "import failed: version mismatch: exported by version 9.9.9, this is version {VERSION} ({url}); nothing applied, retrying in "
            ),
            " ms, still polling the CP".to_string(),
        ),
        (
            "import failed: cannot list the versions under the prefix: storage answered 403 AccessDenied".to_string(),
            " ms, still polling the CP".to_string(),
        ),
    ] {
        assert!(has(&prefix, &suffix), "{prefix}...{suffix}\nnot in {lines:#?}");
    }
    for expected in [
        // The transport error's own wording is pinned in `http`.
        format!(
            "CP unavailable: {}",
            TransportError::Unreachable("upstream connect error".into())
        ),
        format!("importing fallback config from {url}"),
        "CP fetched revision r1; applying it".to_string(),
        format!(
            "imported revision r1 (version {VERSION}) from {url} (exported at {} by exp, unsigned)",
            exported_at().rfc3339()
        ),
        "no snapshot for this version; looking for older versions under s3://bkt/pre/".to_string(),
        "snapshot of version 0.0.9 skipped: not found (404 NoSuchKey)".to_string(),
        format!(
            "imported revision r1 (version 0.0.8) from {} (exported at {} by exp, unsigned)",
            version_url("0.0.8"),
            exported_at().rfc3339()
        ),
        format!(
            "import failed: the snapshot is 7300 s old, over import.max_age_s (3600 s) ({url}); nothing applied, no more attempts, still polling the CP"
        ),
        "import given up after 1 attempts (import.max_attempts); serving nothing until the CP answers".to_string(),
        "became leader (term 1) node=node-7".to_string(),
        "export of revision r1 waits for a CP answer newer than the stored config".to_string(),
        "export of revision r1 failed: storage answered 403 SignatureDoesNotMatch: nope; retrying in 1000 ms".to_string(),
        format!("exported revision r1 to {url}"),
        "lost leadership (term 1) node=node-7: this root context no longer drives the process"
            .to_string(),
        "waiting for the store's credentials before importing".to_string(),
        "storage credentials: static keys (AWS_ACCESS_KEY_ID)".to_string(),
    ] {
        assert!(lines.contains(&expected), "{expected}\nnot in {lines:#?}");
    }
    assert!(
        lines.iter().any(|l| l
            .starts_with("import failed: cannot get credentials: token endpoint answered 400")
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

// ---- import retries ----

#[test]
fn a_503_once_then_ok_the_second_attempt_applies() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let mark = s.mark();
    let (error, wait) = fail_import(&mut s, 100, get, resp(503, CONNECT_ERROR));
    assert_eq!(
        error,
        ImportFailure::Storage(StorageError::Transport(TransportError::Unreachable(
            CONNECT_ERROR.into()
        )))
    );
    assert!(jittered(wait, Duration::from_secs(1)), "{wait:?}");
    assert_eq!(end_imports(s.since(mark)), 1, "the grant is given back");
    assert!(publishes(&s.log).is_empty());
    // The retry asks the process for a new grant.
    retry_at(&mut s, 100 + millis(wait));
    assert_eq!(import_requests(&s.log), vec![None, None]);
    assert_eq!(sends_of(&s.log, CallKind::Import).len(), 1, "not before it");
    let mark = s.mark();
    s.grant();
    assert_eq!(s.events(), vec![Event::ImportStarted { url: config_url() }]);
    let get = s.take(CallKind::Import);
    assert_eq!(
        (get.request.method.as_str(), get.request.path.clone()),
        ("GET", config_path())
    );
    s.answer(get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert_eq!(
        publishes(s.since(mark)),
        vec![job(CFG1, "r1", Source::Storage)]
    );
    assert!(
        matches!(
            s.events().as_slice(),
            [Event::Imported { revision, version, url, .. }]
                if revision == "r1" && version == VERSION && *url == config_url()
        ),
        "{:?}",
        s.all_events
    );
    assert_eq!(end_imports(s.since(mark)), 1);
    // Applied: the CP staying down brings no more attempts.
    for i in 1..8 {
        s.tick_cp(5_000 * i, cp_down());
    }
    assert_eq!(import_requests(&s.log).len(), 2);
    assert_eq!(sends_of(&s.log, CallKind::Import).len(), 2);
}

#[test]
fn retry_waits_double_within_equal_jitter_and_are_capped_at_retry_max() {
    let settings = s3_import_settings(r#""retry_initial_ms":1000,"retry_max_ms":8000"#, "", "");
    let (mut s, mut get) = import_pending(&settings);
    let full: [u64; 7] = [1, 2, 4, 8, 8, 8, 8];
    let mut waits = Vec::new();
    let mut now = 10;
    for (i, f) in full.iter().enumerate() {
        let (error, wait) = fail_import(&mut s, now, get, resp(504, "upstream request timeout"));
        assert_eq!(
            error,
            ImportFailure::Storage(StorageError::Transport(TransportError::Timeout))
        );
        assert!(
            jittered(wait, Duration::from_secs(*f)),
            "attempt {}: {wait:?} not in [{f}/2 s, {f} s]",
            i + 1
        );
        waits.push(wait);
        let due = now + millis(wait);
        retry_at(&mut s, due);
        s.grant();
        get = s.take(CallKind::Import);
        s.events();
        now = due + 10;
    }
    // Jittered: the waits are not all at the same point of their range.
    let fractions: HashSet<u64> = waits
        .iter()
        .zip(full)
        .map(|(w, f)| millis(*w) * 100 / (f * 1000))
        .collect();
    assert!(fractions.len() > 1, "{waits:?}");
    assert_eq!(metric_count(&s.log, Metric::ImportAttempt), full.len() + 1);
    assert_eq!(metric_count(&s.log, Metric::ImportFailure), full.len());
    assert_eq!(end_imports(&s.log), full.len());
}

#[test]
fn the_backoff_is_the_same_for_the_same_seed_and_differs_between_seeds() {
    let waits = |seed: u64| {
        let settings = s3_settings(true, false, 0);
        let mut s = Sim::seeded(&settings, "n", Inherited::default(), 1, Lease::Sole, seed);
        s.tick_cp(0, cp_down());
        s.grant();
        let get = s.take(CallKind::Import);
        fail_import(&mut s, 10, get, resp(503, CONNECT_ERROR)).1
    };
    assert_eq!(waits(SEED), waits(SEED));
    let all: HashSet<Duration> = (1..6).map(waits).collect();
    assert!(all.len() > 1, "a fleet does not retry in step: {all:?}");
}

#[test]
fn max_attempts_ends_the_retries_with_import_gave_up() {
    let settings = s3_import_settings(r#""max_attempts":3"#, "", "");
    let (mut s, mut get) = import_pending(&settings);
    assert_eq!(
        import_requests(&s.log),
        vec![Some(3)],
        "the policy is passed on"
    );
    let mut now = 10;
    for _ in 0..2 {
        let (_, wait) = fail_import(&mut s, now, get, resp(504, "upstream request timeout"));
        now += millis(wait);
        retry_at(&mut s, now);
        s.grant();
        get = s.take(CallKind::Import);
        s.events();
        now += 10;
    }
    let mark = s.mark();
    s.answer_at(now, get.token, resp(504, "upstream request timeout"));
    let events = s.events();
    assert_eq!(
        events,
        vec![
            Event::ImportFailed {
                url: config_url(),
                error: ImportFailure::Storage(StorageError::Transport(TransportError::Timeout)),
                retry_in: None
            },
            Event::ImportGaveUp { attempts: 3 }
        ]
    );
    assert_eq!(events[1].level(), Level::Error);
    assert_eq!(end_imports(s.since(mark)), 1);
    // No more, however long the CP stays down.
    for i in 1..20 {
        s.tick_cp(now + 5_000 * i, cp_down());
    }
    assert_eq!(import_requests(&s.log), vec![Some(3); 3]);
    assert_eq!(sends_of(&s.log, CallKind::Import).len(), 3);
    assert_eq!(metric_count(&s.log, Metric::ImportAttempt), 3);
    assert_eq!(
        statuses(&s.log).last().map(|r| r.state),
        Some(State::ImportFailed)
    );
    // The CP still wins.
    s.tick_cp(now + 100_000, cp_ok(CFG1, "\"e\""));
    assert_eq!(
        publishes(&s.log),
        vec![job(CFG1, "r1", Source::ControlPlane)]
    );
}

#[test]
fn the_cp_answer_cancels_pending_retries() {
    let settings = s3_import_settings(r#""retry_initial_ms":10000,"retry_max_ms":60000"#, "", "");
    let (mut s, get) = import_pending(&settings);
    let (_, wait) = fail_import(&mut s, 100, get, resp(503, CONNECT_ERROR));
    assert!(
        100 + millis(wait) > 5_000,
        "the retry is due after the next poll"
    );
    // The CP answers at 5 s, before the retry is due.
    let mark = s.mark();
    s.tick_cp(5_000, cp_ok(CFG1, "\"e1\""));
    assert_eq!(
        s.events(),
        vec![
            Event::ImportCancelled,
            Event::CpFetched {
                revision: "r1".into()
            }
        ]
    );
    // Later outages never bring an import: no grant asked for, no read.
    for i in 2..30 {
        s.tick_cp(5_000 * i, cp_down());
    }
    assert!(
        import_requests(s.since(mark)).is_empty(),
        "{:?}",
        s.since(mark)
    );
    assert!(sends_of(s.since(mark), CallKind::Import).is_empty());
    // A grant arriving anyway sends nothing and is given back.
    let mark = s.mark();
    s.grant();
    assert!(sends(s.since(mark)).is_empty());
    assert_eq!(end_imports(s.since(mark)), 1);
    assert_eq!(
        publishes(&s.log),
        vec![job(CFG1, "r1", Source::ControlPlane)]
    );
}

#[test]
fn the_cp_answer_while_a_retry_waits_for_its_grant_cancels_it() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let (_, wait) = fail_import(&mut s, 100, get, resp(503, CONNECT_ERROR));
    retry_at(&mut s, 100 + millis(wait));
    s.events();
    s.tick_cp(5_000, cp_ok(CFG1, "\"e1\""));
    assert!(s.events().contains(&Event::ImportCancelled));
    let mark = s.mark();
    s.grant();
    assert!(sends(s.since(mark)).is_empty());
    assert_eq!(end_imports(s.since(mark)), 1);
    assert_eq!(sends_of(&s.log, CallKind::Import).len(), 1);
}

// ---- older versions ----

/// The version names below are chosen around this build's version.
fn assert_version_0_1_0() {
    assert_eq!(VERSION, "0.1.0", "update the version names of this test");
}

/// The listing request of an attempt whose own read was answered 404;
/// checks it and its event.
fn listing_after_404(s: &mut Sim, get: Call) -> Call {
    s.answer(get.token, resp(404, NO_SUCH_KEY));
    assert_eq!(
        s.events(),
        vec![Event::ImportListing {
            url: "s3://bkt/pre/".into()
        }]
    );
    s.take(CallKind::Import)
}

#[test]
fn a_missing_snapshot_falls_back_to_the_newest_older_version() {
    assert_version_0_1_0();
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let mark = s.mark();
    let list = listing_after_404(&mut s, get);
    // S3 ListObjectsV2 of the folders under the prefix, signed.
    let r = &list.request;
    let (path, query) = r.path.split_once('?').unwrap();
    assert_eq!(
        (r.cluster.as_str(), r.method.as_str(), path),
        ("object_storage", "GET", "/bkt")
    );
    let params: HashSet<&str> = query.split('&').collect();
    assert_eq!(
        params,
        HashSet::from(["list-type=2", "delimiter=%2F", "prefix=pre%2F"])
    );
    assert!(header(r, "authorization").is_some());
    let newer = ["0.2.0", "1.0.0", "0.1.1-rc.1"];
    s.answer(
        list.token,
        listing(
            &[
                "0.0.9",
                "0.2.0",
                VERSION,
                "0.0.10",
                "junk",
                "1.0.0",
                "0.1.1-rc.1",
                "0.1.0-rc.2",
            ],
            None,
        ),
    );
    // The newest older one by semver: a pre-release of this version.
    let read = s.take(CallKind::Import);
    assert_eq!(read.request.path, version_path("0.1.0-rc.2"));
    s.answer(read.token, snapshot(CFG1, "r1", "0.1.0-rc.2"));
    assert_eq!(
        s.events(),
        vec![Event::Imported {
            revision: "r1".into(),
            version: "0.1.0-rc.2".into(),
            url: version_url("0.1.0-rc.2"),
            exported_at: exported_at().rfc3339(),
            exporter: "exp".into(),
            signed_by: None,
            encrypted_with: None,
        }]
    );
    assert_eq!(
        publishes(s.since(mark)),
        vec![job(CFG1, "r1", Source::Storage)]
    );
    // One attempt: one grant, given back once, whatever it read.
    assert_eq!(end_imports(&s.log), 1);
    assert_eq!(metric_count(&s.log, Metric::ImportAttempt), 1);
    assert_eq!(metric_count(&s.log, Metric::StorageRequest), 3);
    let paths: Vec<String> = sends_of(&s.log, CallKind::Import)
        .iter()
        .map(|c| c.request.path.clone())
        .collect();
    for v in newer {
        assert!(!paths.contains(&version_path(v)), "{v} read: {paths:?}");
    }
    assert_eq!(paths.len(), 3);
    assert_eq!(
        statuses(&s.log).last().and_then(|r| r.version.clone()),
        Some("0.1.0-rc.2".into())
    );
}

#[test]
fn unusable_older_snapshots_are_skipped_for_even_older_ones() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let list = listing_after_404(&mut s, get);
    s.answer(
        list.token,
        listing(&["0.0.7", "0.0.8", "0.0.9", "0.0.6"], None),
    );
    let tampered = envelope_for(CFG1, "r1", "0.0.9", 1).replace("/echo", "/evil");
    let answers = [
        ("0.0.9", resp(200, &tampered)),
        ("0.0.8", resp(404, NO_SUCH_KEY)),
        // The 0.0.7 folder holds a snapshot of another version.
        ("0.0.7", snapshot(CFG1, "r1", "0.0.6")),
    ];
    for (version, answer) in answers {
        let read = s.take(CallKind::Import);
        assert_eq!(read.request.path, version_path(version));
        s.answer(read.token, answer);
    }
    let events = s.events();
    match events.as_slice() {
        [Event::ImportVersionSkipped {
            version: v9,
            error: ImportFailure::Envelope(EnvelopeError::Sha256Mismatch { .. }),
        }, Event::ImportVersionSkipped {
            version: v8,
            error: ImportFailure::Storage(StorageError::NotFound { .. }),
        }, e @ Event::ImportVersionSkipped {
            version: v7,
            error: ImportFailure::Envelope(EnvelopeError::VersionMismatch { found, expected }),
        }] => {
            assert_eq!(
                (v9.as_str(), v8.as_str(), v7.as_str()),
                ("0.0.9", "0.0.8", "0.0.7")
            );
            assert_eq!((found.as_str(), expected.as_str()), ("0.0.6", "0.0.7"));
            assert_eq!(e.level(), Level::Warn);
        }
        other => panic!("{other:?}"),
    }
    assert!(publishes(&s.log).is_empty());
    let read = s.take(CallKind::Import);
    assert_eq!(read.request.path, version_path("0.0.6"));
    s.answer(read.token, snapshot(CFG2, "r2", "0.0.6"));
    assert!(matches!(
        s.events().as_slice(),
        [Event::Imported { version, revision, .. }] if version == "0.0.6" && revision == "r2"
    ));
    assert_eq!(publishes(&s.log), vec![job(CFG2, "r2", Source::Storage)]);
    assert_eq!(end_imports(&s.log), 1);
    assert_eq!(metric_count(&s.log, Metric::ImportFailure), 0);
}

#[test]
fn when_no_older_snapshot_can_be_used_the_attempt_fails_and_is_retried() {
    assert_version_0_1_0();
    // Every older one unusable.
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let list = listing_after_404(&mut s, get);
    s.answer(list.token, listing(&["0.0.9", "0.0.8"], None));
    for _ in 0..2 {
        let read = s.take(CallKind::Import);
        s.answer(read.token, resp(404, NO_SUCH_KEY));
    }
    let events = s.events();
    assert_eq!(
        count(&events, |e| matches!(e, Event::ImportVersionSkipped { .. })),
        2
    );
    let failures = import_failures(&events);
    let wait = match failures.as_slice() {
        [(
            ImportFailure::NoSnapshot {
                version,
                older_tried: 2,
            },
            Some(wait),
        )] => {
            assert_eq!(version, VERSION);
            *wait
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(end_imports(&s.log), 1);
    let due = s.now + millis(wait);
    retry_at(&mut s, due);
    s.grant();
    // The retry starts over with this version's own snapshot.
    assert_eq!(s.take(CallKind::Import).request.path, config_path());

    // Only newer versions (and this one) listed: none is ever read.
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let list = listing_after_404(&mut s, get);
    s.answer(
        list.token,
        listing(&["0.2.0", VERSION, "1.0.0", "0.1.1"], None),
    );
    let events = s.events();
    assert!(
        matches!(
            import_failures(&events).as_slice(),
            [(ImportFailure::NoSnapshot { older_tried: 0, .. }, Some(_))]
        ),
        "{events:?}"
    );
    assert!(!s.has_pending(CallKind::Import));
    assert_eq!(
        sends_of(&s.log, CallKind::Import).len(),
        2,
        "own read and listing"
    );
}

#[test]
fn a_refused_listing_is_list_failed_and_retried() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let list = listing_after_404(&mut s, get);
    let mark = s.mark();
    s.answer_at(
        100,
        list.token,
        resp(
            403,
            "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        ),
    );
    let events = s.events();
    let wait = match import_failures(&events).as_slice() {
        [(
            ImportFailure::ListFailed(StorageError::Status {
                status: 403,
                code: Some(code),
                ..
            }),
            Some(wait),
        )] => {
            assert_eq!(code, "AccessDenied");
            *wait
        }
        _ => panic!("{events:?}"),
    };
    assert!(
        events[0].to_string().contains("s3:ListBucket"),
        "{}",
        events[0]
    );
    assert_eq!(end_imports(s.since(mark)), 1);
    assert_eq!(metric_count(s.since(mark), Metric::ImportFailure), 1);
    retry_at(&mut s, 100 + millis(wait));
    s.grant();
    let get = s.take(CallKind::Import);
    assert_eq!(get.request.path, config_path());
    assert_eq!(s.events(), vec![Event::ImportStarted { url: config_url() }]);
    // This time the listing works.
    let list = listing_after_404(&mut s, get);
    s.answer(list.token, listing(&["0.0.9"], None));
    let read = s.take(CallKind::Import);
    s.answer(read.token, snapshot(CFG1, "r1", "0.0.9"));
    assert_eq!(publishes(&s.log), vec![job(CFG1, "r1", Source::Storage)]);
}

#[test]
fn without_older_versions_a_missing_snapshot_is_not_looked_for_elsewhere() {
    let settings = s3_import_settings(r#""older_versions":false"#, "", "");
    let (mut s, get) = import_pending(&settings);
    let (error, _) = fail_import(&mut s, 100, get, resp(404, NO_SUCH_KEY));
    assert_eq!(
        error,
        ImportFailure::NotFound {
            version: VERSION.into(),
        }
    );
    assert!(!s
        .all_events
        .iter()
        .any(|e| matches!(e, Event::ImportListing { .. })));
    assert!(!s.has_pending(CallKind::Import));
    assert_eq!(sends_of(&s.log, CallKind::Import).len(), 1);
}

#[test]
fn a_listing_is_followed_to_its_next_page() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let list = listing_after_404(&mut s, get);
    assert!(!list.request.path.contains("continuation-token"));
    s.answer(list.token, listing(&["0.0.5"], Some("tok/1=")));
    let next = s.take(CallKind::Import);
    assert!(
        next.request
            .path
            .split(['?', '&'])
            .any(|p| p == "continuation-token=tok%2F1%3D"),
        "{}",
        next.request.path
    );
    s.answer(next.token, listing(&["0.0.9"], None));
    // The newest older version of both pages.
    let read = s.take(CallKind::Import);
    assert_eq!(read.request.path, version_path("0.0.9"));
}

#[test]
fn a_listing_as_s3_sends_it_with_its_namespace_is_read() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let list = listing_after_404(&mut s, get);
    s.answer(list.token, listing_with_namespace(&["0.0.9"]));
    let events = s.events();
    assert!(import_failures(&events).is_empty(), "{events:?}");
    let read = s.take(CallKind::Import);
    assert_eq!(read.request.path, version_path("0.0.9"));
}

#[test]
fn a_transient_failure_reading_an_older_version_fails_the_attempt() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let list = listing_after_404(&mut s, get);
    s.answer(list.token, listing(&["0.0.8", "0.0.9"], None));
    let read = s.take(CallKind::Import);
    assert_eq!(read.request.path, version_path("0.0.9"));
    s.answer(read.token, resp(504, "upstream request timeout"));
    // 0.0.9 may well be usable: 0.0.8 is not read instead ...
    assert!(!s.has_pending(CallKind::Import), "{:?}", s.pending);
    // ... the attempt fails, and is retried.
    let events = s.events();
    assert!(
        matches!(
            import_failures(&events).as_slice(),
            [(
                ImportFailure::Storage(StorageError::Transport(TransportError::Timeout)),
                Some(_)
            )]
        ),
        "{events:?}"
    );
}

// ---- what an attempt refuses ----

#[test]
fn a_snapshot_older_than_max_age_is_refused_and_retried() {
    let settings = s3_import_settings(r#""max_age_s":3600"#, "", "");
    let (mut s, get) = import_pending(&settings);
    // Exported 7199 s before 0 ms: 7200 s old when answered at 1 s.
    let old = Timestamp::from_secs(1_800_000_000 - 7_199);
    let (error, wait) = fail_import(
        &mut s,
        1_000,
        get,
        resp(200, &envelope_at(CFG1, "r1", VERSION, old)),
    );
    assert_eq!(
        error,
        ImportFailure::TooOld {
            age_s: 7_200,
            limit_s: 3_600
        }
    );
    assert!(publishes(&s.log).is_empty());
    // A fresher one may appear: the retry applies it.
    retry_at(&mut s, 1_000 + millis(wait));
    s.grant();
    let get = s.take(CallKind::Import);
    let fresh = Timestamp::from_secs(1_800_000_000 - 600);
    s.answer(
        get.token,
        resp(200, &envelope_at(CFG2, "r2", VERSION, fresh)),
    );
    assert_eq!(publishes(&s.log), vec![job(CFG2, "r2", Source::Storage)]);
    let status = statuses(&s.log).last().cloned().unwrap();
    assert_eq!(
        (status.exported_at, status.fresh_at_ms),
        (Some(fresh.rfc3339()), Some(fresh.as_millis()))
    );

    // An older version's snapshot that is too old is skipped.
    let (mut s, get) = import_pending(&settings);
    let list = listing_after_404(&mut s, get);
    s.answer(list.token, listing(&["0.0.9", "0.0.8"], None));
    let read = s.take(CallKind::Import);
    s.answer(
        read.token,
        resp(200, &envelope_at(CFG1, "r1", "0.0.9", old)),
    );
    let read = s.take(CallKind::Import);
    s.answer(
        read.token,
        resp(200, &envelope_at(CFG2, "r2", "0.0.8", fresh)),
    );
    let events = s.events();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::ImportVersionSkipped {
                    error: ImportFailure::TooOld { limit_s: 3_600, .. },
                    ..
                },
                Event::Imported { .. }
            ]
        ),
        "{events:?}"
    );
}

#[test]
fn a_non_json_answer_is_named_by_its_content_type_and_first_bytes() {
    let page = format!(
        "<!DOCTYPE html><html><head><title>Sign in</title></head><body>{}</body></html>",
        "x".repeat(200)
    );
    let captive = HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
        body: page.clone().into_bytes(),
    };
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let (error, _) = fail_import(&mut s, 100, get, captive);
    let expected = format!("text/html; charset=utf-8: {:?}", &page[..80]);
    assert_eq!(
        error,
        ImportFailure::NotJson {
            description: expected.clone()
        }
    );
    assert!(error.to_string().contains(&expected), "{error}");
    assert!(publishes(&s.log).is_empty());
    // Without a content type, and empty.
    for (body, expected) in [
        ("plain text", r#"no content type: "plain text""#),
        ("", r#"no content type: """#),
    ] {
        let (mut s, get) = import_pending(&s3_settings(true, false, 0));
        let (error, wait) = fail_import(&mut s, 100, get, resp(200, body));
        assert_eq!(
            error,
            ImportFailure::NotJson {
                description: expected.into()
            }
        );
        assert!(wait > Duration::ZERO, "retried");
    }
}

#[test]
fn import_transport_failures_are_named_and_retried() {
    let body = envelope_for(CFG1, "r1", VERSION, 1);
    let truncated = HttpResponse {
        status: 200,
        headers: vec![("content-length".into(), (body.len() + 100).to_string())],
        body: body.clone().into_bytes(),
    };
    let cases: [(&str, HttpResponse, TransportError); 4] = [
        (
            "timeout",
            resp(504, "upstream request timeout"),
            TransportError::Timeout,
        ),
        (
            "unreachable",
            resp(503, CONNECT_ERROR),
            TransportError::Unreachable(CONNECT_ERROR.into()),
        ),
        (
            "reset",
            HttpResponse::reset("connection reset by peer"),
            TransportError::Reset("connection reset by peer".into()),
        ),
        (
            "truncated",
            truncated,
            TransportError::Truncated {
                got: body.len(),
                expected: body.len() + 100,
            },
        ),
    ];
    for (case, answer, expected) in cases {
        let (mut s, get) = import_pending(&s3_settings(true, false, 0));
        let (error, wait) = fail_import(&mut s, 100, get, answer);
        assert_eq!(
            error,
            ImportFailure::Storage(StorageError::Transport(expected.clone())),
            "{case}"
        );
        assert!(
            error.to_string().contains(&expected.to_string()),
            "{case}: {error}"
        );
        assert!(publishes(&s.log).is_empty(), "{case}");
        retry_at(&mut s, 100 + millis(wait));
    }
}

#[test]
fn an_import_body_over_max_object_bytes_is_too_large() {
    let settings = s3_import_settings("", r#""max_object_bytes":100"#, "");
    let (mut s, get) = import_pending(&settings);
    let answer = stored(CFG1, "r1", 1, Some("\"s\""));
    let size = answer.body.len();
    assert!(size > 100);
    let (error, wait) = fail_import(&mut s, 100, get, answer);
    assert_eq!(
        error,
        ImportFailure::Storage(StorageError::Transport(TransportError::TooLarge {
            size,
            limit: 100
        }))
    );
    assert!(
        error.to_string().contains(&format!(
            "body of {size} bytes is over the limit of 100 bytes"
        )),
        "{error}"
    );
    assert!(publishes(&s.log).is_empty());
    retry_at(&mut s, 100 + millis(wait));
}

#[test]
fn a_cp_body_over_max_config_bytes_is_too_large() {
    let settings = s3_import_settings("", "", r#""max_config_bytes":64"#);
    assert!(CFG1.len() > 64);
    let mut s = Sim::new(&settings);
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    assert_eq!(
        s.events(),
        vec![Event::CpUnavailable {
            reason: CpFailure::Transport(TransportError::TooLarge {
                size: CFG1.len(),
                limit: 64
            }),
            again: false
        }]
    );
    assert!(publishes(&s.log).is_empty() && !s.c.has_config());
    assert_eq!(metrics(&s.log), vec![Metric::CpReachable(false)]);
    assert_eq!(
        import_requests(&s.log),
        vec![None],
        "the import is asked for"
    );
    // Its ETag is not taken.
    s.tick(5_000);
    assert_eq!(
        header(&s.take(CallKind::CpPoll).request, "if-none-match"),
        None
    );
}

// ---- a new driver ----

#[test]
fn an_attempt_an_earlier_driver_may_have_out_delays_the_first_one() {
    let in_flight = Inherited {
        import_attempts: 1,
        import_in_flight: true,
        ..Inherited::default()
    };
    let mut s = Sim::build(
        &s3_settings(true, false, 0),
        "n",
        in_flight.clone(),
        1,
        Lease::Sole,
    );
    s.tick_cp(0, cp_down());
    assert!(import_requests(&s.log).is_empty(), "it may still be out");
    // Storage timeout 1 s + 1 s.
    s.ticks_until(1_999);
    s.tick(1_999);
    assert!(import_requests(&s.log).is_empty());
    s.tick(2_000);
    assert_eq!(import_requests(&s.log), vec![None]);
    s.grant();
    assert_eq!(s.attempts, 2);
    let get = s.take(CallKind::Import);
    assert_eq!(get.request.path, config_path());

    // The CP answering meanwhile: no import at all.
    let mut s = Sim::build(&s3_settings(true, false, 0), "n", in_flight, 1, Lease::Sole);
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    for i in 1..5 {
        s.tick_cp(5_000 * i, cp_down());
    }
    assert!(import_requests(&s.log).is_empty());
    assert!(sends_of(&s.log, CallKind::Import).is_empty());
}

#[test]
fn an_inherited_status_does_not_claim_a_leadership_this_driver_does_not_hold() {
    let earlier = StatusRecord {
        state: State::Serving,
        source: Some(ConfigSource::ControlPlane),
        revision: Some("r1".into()),
        version: Some(VERSION.into()),
        exported_at: None,
        fresh_at_ms: Some(Now::at_millis(0).wall.as_millis()),
        leader: true,
        term: Some(3),
    };
    let inherited = Inherited {
        status: Some(earlier),
        ..inherited(CFG1, "r1", Source::ControlPlane)
    };
    // A config update turned export off: this driver runs no election.
    let mut s = Sim::build(
        &s3_settings(false, false, 0),
        "n",
        inherited.clone(),
        1,
        Lease::Sole,
    );
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    s.tick_cp(5_000, cp_ok(CFG2, "\"e2\""));
    let last = statuses(&s.log).last().cloned().unwrap();
    assert_eq!((last.leader, last.term), (false, None), "{last:?}");

    // An exporter that finds another node's lease: a follower.
    let mut s = Sim::build(
        &s3_settings(false, true, 0),
        "n",
        inherited,
        1,
        Lease::Manual,
    );
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::LeaseRead);
    let other = LeaseRecord {
        holder: "other".into(),
        term: 4,
        renewals: 0,
        ttl_ms: 30_000,
        renewed_at: "now".into(),
    };
    s.answer(
        read.token,
        with_etag(200, &String::from_utf8(other.encode()).unwrap(), "\"l\""),
    );
    s.tick_cp(5_000, cp_ok(CFG2, "\"e2\""));
    assert!(!s
        .all_events
        .iter()
        .any(|e| matches!(e, Event::BecameLeader { .. })));
    let last = statuses(&s.log).last().cloned().unwrap();
    assert_eq!((last.leader, last.term), (false, None), "{last:?}");
}

#[test]
fn poll_timeout_includes_a_due_import_retry() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    let (_, wait) = fail_import(&mut s, 100, get, resp(503, CONNECT_ERROR));
    let due = Instant::from_millis(100 + millis(wait));
    let next = s.c.poll_timeout();
    assert!(
        next.is_some_and(|t| t <= due),
        "{next:?} is later than the retry at {due:?}"
    );
}

// ---- readiness status ----

#[test]
fn status_goes_from_waiting_to_import_failed_to_serving_from_storage() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    assert!(statuses(&s.log).is_empty(), "waiting, as it started");
    let (_, wait) = fail_import(&mut s, 100, get, resp(503, CONNECT_ERROR));
    assert_eq!(
        statuses(&s.log),
        vec![StatusRecord {
            state: State::ImportFailed,
            ..StatusRecord::default()
        }]
    );
    let mut now = 100 + millis(wait);
    retry_at(&mut s, now);
    s.grant();
    let get = s.take(CallKind::Import);
    // A second failure changes nothing.
    let (_, wait) = fail_import(&mut s, now + 10, get, resp(503, CONNECT_ERROR));
    assert_eq!(statuses(&s.log).len(), 1);
    now += 10 + millis(wait);
    retry_at(&mut s, now);
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer_at(now + 10, get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert_eq!(
        statuses(&s.log).last(),
        Some(&StatusRecord {
            state: State::Serving,
            source: Some(ConfigSource::Storage),
            revision: Some("r1".into()),
            version: Some(VERSION.into()),
            exported_at: Some(exported_at().rfc3339()),
            fresh_at_ms: Some(exported_at().as_millis()),
            leader: false,
            term: None,
        })
    );
    assert_eq!(statuses(&s.log).len(), 2);
    // The CP answers: its config, fresh as of its answer.
    s.tick_cp(10_000, cp_ok(CFG2, "\"e2\""));
    assert_eq!(
        statuses(&s.log).last(),
        Some(&StatusRecord {
            state: State::Serving,
            source: Some(ConfigSource::ControlPlane),
            revision: Some("r2".into()),
            version: Some(VERSION.into()),
            exported_at: None,
            fresh_at_ms: Some(Now::at_millis(10_000).wall.as_millis()),
            leader: false,
            term: None,
        })
    );
    // A failed poll later keeps it serving, its age counting on.
    let n = statuses(&s.log).len();
    s.tick_cp(15_000, cp_down());
    assert_eq!(statuses(&s.log).len(), n);
}

#[test]
fn status_serves_the_cp_config_and_names_the_leadership() {
    let mut s = Sim::new(&s3_settings(false, false, 0));
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    assert_eq!(
        statuses(&s.log),
        vec![StatusRecord {
            state: State::Serving,
            source: Some(ConfigSource::ControlPlane),
            revision: Some("r1".into()),
            version: Some(VERSION.into()),
            exported_at: None,
            fresh_at_ms: Some(Now::at_millis(0).wall.as_millis()),
            leader: false,
            term: None,
        }]
    );

    // An exporter: serving the CP's config, then leading in term 1.
    let (s, _) = exporter_at_first_put();
    let all = statuses(&s.log);
    assert_eq!(
        all.first().map(|r| (r.state, r.source, r.leader)),
        Some((State::Serving, Some(ConfigSource::ControlPlane), false))
    );
    let leading: Vec<&StatusRecord> = all.iter().filter(|r| r.leader).collect();
    assert!(!leading.is_empty(), "{all:?}");
    assert!(leading.iter().all(|r| r.term == Some(1)), "{all:?}");
    assert_eq!(
        all.last().map(|r| (r.leader, r.term)),
        Some((true, Some(1)))
    );

    // Standing down clears them.
    let (mut s, reread) = leader_of_term_2_after_a_412();
    assert_eq!(
        statuses(&s.log).last().map(|r| (r.leader, r.term)),
        Some((true, Some(2)))
    );
    s.answer(reread.token, stored(CFG2, "r2", 3, Some("\"other\"")));
    assert_eq!(
        statuses(&s.log).last().map(|r| (r.leader, r.term)),
        Some((false, None))
    );
}

// ---- metrics of the import and the CP ----

#[test]
fn metrics_count_import_attempts_and_failures() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    assert_eq!(
        metrics(&s.log),
        vec![
            Metric::CpReachable(false),
            Metric::ImportAttempt,
            Metric::StorageRequest
        ]
    );
    let mark = s.mark();
    let (_, wait) = fail_import(&mut s, 100, get, resp(503, CONNECT_ERROR));
    assert_eq!(metrics(s.since(mark)), vec![Metric::ImportFailure]);
    let mut now = 100 + millis(wait);
    retry_at(&mut s, now);
    s.grant();
    let get = s.take(CallKind::Import);
    let (_, wait) = fail_import(&mut s, now + 10, get, HttpResponse::reset("x"));
    now += 10 + millis(wait);
    retry_at(&mut s, now);
    let mark = s.mark();
    s.grant();
    let get = s.take(CallKind::Import);
    s.answer_at(now + 10, get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert_eq!(
        metrics(s.since(mark)),
        vec![
            Metric::ImportAttempt,
            Metric::StorageRequest,
            Metric::ConfigAge(2),
            Metric::ConfigSource(2)
        ]
    );
    assert_eq!(metric_count(&s.log, Metric::ImportAttempt), 3);
    assert_eq!(metric_count(&s.log, Metric::ImportFailure), 2);
    // A grant that sends nothing is no attempt.
    let mark = s.mark();
    s.grant();
    assert!(metrics(s.since(mark)).is_empty());
}

#[test]
fn metrics_follow_the_cp_and_the_config_age() {
    let (mut s, get) = import_pending(&s3_settings(true, false, 0));
    s.answer_at(1_000, get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    // Exported at 0 ms: its age counts from there.
    let mark = s.mark();
    s.tick(3_000);
    s.tick(3_500);
    s.tick_cp(5_000, cp_down());
    s.tick_cp(10_000, cp_ok(CFG2, "\"e2\""));
    // The CP's config is as fresh as its last answer.
    s.tick(12_000);
    s.tick_cp(15_000, not_modified());
    s.tick(15_500);
    let m = metrics(s.since(mark));
    let ages: Vec<u64> = m
        .iter()
        .filter_map(|m| match m {
            Metric::ConfigAge(a) => Some(*a),
            _ => None,
        })
        .collect();
    // The gauge changes with the status at once (0 as the CP answers),
    // then tick by tick.
    assert_eq!(ages, vec![3, 5, 10, 0, 2, 5, 0]);
    let reachable: Vec<bool> = m
        .iter()
        .filter_map(|m| match m {
            Metric::CpReachable(r) => Some(*r),
            _ => None,
        })
        .collect();
    assert_eq!(reachable, vec![false, true, true]);
    let sources: Vec<u64> = metrics(&s.log)
        .iter()
        .filter_map(|m| match m {
            Metric::ConfigSource(g) => Some(*g),
            _ => None,
        })
        .collect();
    assert_eq!(sources, vec![2, 1]);
}

/// A derived clock counts a wall jump forward as time passed; a call the
/// host still has out is not given up on for it (ticks count too), so no
/// second import goes out beside it.
#[test]
fn a_clock_jumping_forward_does_not_give_up_on_a_call_still_out() {
    let mut s = Sim::new(&s3_settings(true, false, 0));
    s.tick_cp(0, cp_down());
    s.grant();
    let get = s.take(CallKind::Import);
    s.events();
    // One tick, an hour later by the clock.
    s.tick(3_600_000);
    assert!(import_failures(&s.events()).is_empty());
    assert!(!s.has_pending(CallKind::Import));
    s.answer(get.token, stored(CFG1, "r1", 1, Some("\"s\"")));
    assert!(s
        .events()
        .iter()
        .any(|e| matches!(e, Event::Imported { .. })));
}

// ---- signed and encrypted snapshots ----

/// 32 bytes of `byte`, base64.
fn key_b64(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// S3 settings with snapshot keys from the environment: `signer` signs
/// (its id and seed byte), `trusted` are trusted (id, seed byte of the
/// matching signer), `enc` encrypt (the first) and decrypt (all).
fn protected_settings(
    import: bool,
    export: bool,
    signer: Option<(&str, u8)>,
    trusted: &[(&str, u8)],
    enc: &[(&str, u8)],
) -> Settings {
    use crate::keys::{env, SigningKey};
    let json = format!(
        r#"{{"cluster_fallback_config_import":{import},"cluster_fallback_config_export":{export},
            "cluster_fallback_config_storage":"s3://bkt/pre",
            "storage":{{"endpoint":"http://127.0.0.1:9000","timeout_ms":1000}},
            "control_plane":{{"timeout_ms":1000,"poll_interval_ms":5000}}}}"#
    );
    let mut vars: HashMap<&str, String> = [
        ("AWS_ACCESS_KEY_ID", "AK".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "SK".to_string()),
    ]
    .into();
    if let Some((id, b)) = signer {
        vars.insert(env::SIGNING_KEY, format!("{id}:{}", key_b64(b)));
    }
    let publics: Vec<String> = trusted
        .iter()
        .map(|(id, b)| {
            SigningKey::parse(&format!("{id}:{}", key_b64(*b)))
                .unwrap()
                .public_entry()
        })
        .collect();
    if !publics.is_empty() {
        vars.insert(env::TRUSTED_KEYS, publics.join(","));
    }
    let encs: Vec<String> = enc
        .iter()
        .map(|(id, b)| format!("{id}:{}", key_b64(*b)))
        .collect();
    if !encs.is_empty() {
        vars.insert(env::ENCRYPTION_KEYS, encs.join(","));
    }
    Settings::parse(json.as_bytes(), &|k| vars.get(k).cloned()).unwrap()
}

/// `config` sealed as an exporter with these settings' keys would.
fn protected_envelope(settings: &Settings, config: &str, revision: &str) -> String {
    protected_envelope_in_term(settings, config, revision, 1)
}

fn protected_envelope_in_term(
    settings: &Settings,
    config: &str,
    revision: &str,
    term: u64,
) -> String {
    let keys = &settings.snapshot;
    let bytes = seal(
        Export {
            config: config.as_bytes(),
            revision,
            version: VERSION,
            exporter: "exp",
            exported_at: exported_at(),
            term,
        },
        Protection {
            signing: keys.signing.as_ref(),
            encryption: keys.encrypting().map(|k| (k, [4; 24])),
        },
    )
    .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn trust_of(settings: &Settings) -> Trust<'_> {
    Trust {
        require_signature: true,
        require_encryption: false,
        trusted: &settings.snapshot.trusted,
        decryption: &settings.snapshot.encryption,
    }
}

/// A protected exporter's first PUT (as `exporter_at_first_put`, after
/// reading `stored_answer`).
fn protected_first_put(settings: &Settings, stored_answer: HttpResponse) -> (Sim, Option<Call>) {
    let mut s = Sim::new(settings);
    s.tick_cp(0, cp_ok(CFG1, "\"e1\""));
    let read = s.take(CallKind::ExportRead);
    s.events();
    s.answer(read.token, stored_answer);
    if s.events().contains(&Event::ExportSkipped {
        revision: "r1".into(),
    }) {
        return (s, None);
    }
    s.tick(1);
    let poll = s.take(CallKind::CpPoll);
    s.answer(poll.token, not_modified());
    let put = s.take(CallKind::ExportWrite);
    (s, Some(put))
}

#[test]
fn a_protected_exporter_signs_and_encrypts_and_rewrites_what_is_not_its_own() {
    let settings = protected_settings(false, true, Some(("s1", 1)), &[], &[("e1", 2)]);
    // The same config stored unsigned and in clear: rewritten, not skipped.
    let (mut s, put) = protected_first_put(&settings, stored(CFG1, "r1", 1, Some("\"s0\"")));
    let put = put.expect("an unsigned snapshot of the same config is replaced");
    assert_eq!(header(&put.request, "if-match"), Some("\"s0\""));
    let body = put.request.body.clone().unwrap();
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(
        !text.contains("/echo") && !text.contains("routes"),
        "{text}"
    );
    let opened = open(&body, VERSION, &trust_of(&settings)).unwrap();
    assert_eq!(opened.config_bytes, CFG1.as_bytes());
    assert_eq!(opened.signed_by.as_deref(), Some("s1"));
    assert_eq!(opened.encrypted_with.as_deref(), Some("e1"));
    // Its own write is current: the same config again is skipped.
    s.answer(put.token, put_ok("\"w1\""));
    s.events();
    s.tick_cp(5_000, cp_ok(CFG1, "\"e2\""));
    assert!(s.events().contains(&Event::ExportSkipped {
        revision: "r1".into()
    }));
    // The next export draws a fresh nonce.
    s.tick_cp(10_000, cp_ok(CFG2, "\"e3\""));
    let put2 = s.take(CallKind::ExportWrite);
    let nonce = |b: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        v["encryption"]["nonce"].as_str().unwrap().to_string()
    };
    assert_ne!(nonce(&body), nonce(put2.request.body.as_deref().unwrap()));

    // A restarted exporter that reads its own snapshot skips it ...
    let (_, put) = protected_first_put(&settings, with_etag(200, &text, "\"w1\""));
    assert!(put.is_none(), "its own current snapshot is not rewritten");
    // ... but not after its signing or encryption key changed (rotation):
    // the stored snapshot must move to the new keys.
    for rotated in [
        protected_settings(false, true, Some(("s2", 3)), &[("s1", 1)], &[("e1", 2)]),
        protected_settings(false, true, Some(("s1", 1)), &[], &[("e2", 4), ("e1", 2)]),
    ] {
        let (_, put) = protected_first_put(&rotated, with_etag(200, &text, "\"w1\""));
        let put = put.expect("a snapshot under the old key is rewritten");
        let o = open(
            put.request.body.as_deref().unwrap(),
            VERSION,
            &trust_of(&rotated),
        )
        .unwrap();
        assert_eq!(
            (o.signed_by, o.encrypted_with),
            (
                rotated
                    .snapshot
                    .signing
                    .as_ref()
                    .map(|k| k.id().to_string()),
                rotated.snapshot.encrypting().map(|k| k.id().to_string())
            )
        );
    }
    // A forgery of the same config, signed under the same key id by
    // another key, is replaced too.
    let impostor = protected_settings(false, true, Some(("s1", 5)), &[], &[("e1", 2)]);
    let forged = protected_envelope(&impostor, CFG1, "r1");
    assert!(matches!(
        open(forged.as_bytes(), VERSION, &trust_of(&settings)),
        Err(EnvelopeError::BadSignature { .. })
    ));
    let (_, put) = protected_first_put(&settings, with_etag(200, &forged, "\"f1\""));
    let put = put.expect("a snapshot whose signature fails is rewritten");
    assert_eq!(header(&put.request, "if-match"), Some("\"f1\""));
}

/// Signatures do not stop a replay of an old genuine snapshot: a driver
/// that requires them without an age limit says so, once.
#[test]
fn requiring_signatures_without_an_age_limit_is_warned_about() {
    let importer = protected_settings(true, false, None, &[("s1", 1)], &[]);
    let warned = |settings: &Settings| Sim::new(settings).startup.contains(&Event::ReplayUnbounded);
    assert!(warned(&importer));
    assert_eq!(Event::ReplayUnbounded.level(), crate::event::Level::Warn);
    let mut limited = importer.clone();
    limited.import_policy.max_age = Some(Duration::from_secs(3600));
    assert!(!warned(&limited));
    assert!(!warned(&s3_settings(true, false, 0)), "nothing required");
}

#[test]
fn a_protected_importer_refuses_what_it_cannot_trust_and_retries() {
    let importer = protected_settings(true, false, None, &[("s1", 1)], &[("e1", 2)]);
    let good = protected_envelope(&importer_peer(), CFG1, "r1");
    // Forged: routes rewritten, sha256 recomputed, signature kept.
    let forged = {
        let other = protected_settings(false, true, None, &[], &[("e1", 2)]);
        let mut v: serde_json::Value =
            serde_json::from_str(&protected_envelope(&other, CFG2, "r1")).unwrap();
        let good_v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v["signature"] = good_v["signature"].clone();
        v.to_string()
    };
    let untrusted = protected_envelope(
        &protected_settings(false, true, Some(("k9", 9)), &[], &[("e1", 2)]),
        CFG1,
        "r1",
    );
    let other_enc = protected_envelope(
        &protected_settings(false, true, Some(("s1", 1)), &[], &[("k2", 7)]),
        CFG1,
        "r1",
    );
    // Signed by the trusted key but in clear, where encryption is on.
    let signed_plain = protected_envelope(
        &protected_settings(false, true, Some(("s1", 1)), &[], &[]),
        CFG1,
        "r1",
    );
    let cases = [
        (
            envelope_for(CFG1, "r1", VERSION, 1),
            EnvelopeError::Unsigned,
        ),
        (
            forged,
            EnvelopeError::BadSignature {
                key_id: "s1".into(),
            },
        ),
        (
            untrusted,
            EnvelopeError::UntrustedKey {
                key_id: "k9".into(),
            },
        ),
        (
            other_enc,
            EnvelopeError::NoDecryptionKey {
                key_id: "k2".into(),
            },
        ),
        (signed_plain, EnvelopeError::Unencrypted),
    ];
    let (mut s, mut get) = import_pending(&importer);
    let mut at = 0;
    for (body, expected) in cases {
        let (error, wait) = fail_import(&mut s, at + 10, get, resp(200, &body));
        assert_eq!(error, ImportFailure::Envelope(expected));
        assert!(publishes(&s.log).is_empty(), "nothing is applied");
        at += 10 + millis(wait);
        retry_at(&mut s, at);
        s.grant();
        get = s.take(CallKind::Import);
    }
    s.answer_at(at + 10, get.token, resp(200, &good));
    let events = s.events();
    assert!(
        events.iter().any(|e| matches!(e, Event::Imported {
            signed_by: Some(k), encrypted_with: Some(e), ..
        } if k == "s1" && e == "e1")),
        "{events:?}"
    );
    assert_eq!(publishes(&s.log), vec![job(CFG1, "r1", Source::Storage)]);
}

/// The exporter matching `a_protected_importer_...`'s importer.
fn importer_peer() -> Settings {
    protected_settings(false, true, Some(("s1", 1)), &[], &[("e1", 2)])
}
