//! The controller driven by a simulated clock and scripted answers.

use super::*;
use crate::envelope::{open, seal, Export};
use std::collections::HashMap;

const CFG1: &str =
    r#"{"revision":"r1","routes":[{"name":"echo","paths":["/echo"],"upstream":"echo_service"}]}"#;
const CFG2: &str =
    r#"{"revision":"r2","routes":[{"name":"v2","paths":["/v2"],"upstream":"echo_service"}]}"#;

fn settings(import: bool, export: bool, delay_s: u64) -> Settings {
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

fn at(secs: u64) -> Timestamp {
    Timestamp::from_secs(1_800_000_000 + secs)
}

fn resp(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

fn cp_ok(body: &str, etag: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("etag".into(), etag.into())],
        body: body.as_bytes().to_vec(),
    }
}

fn envelope_for(config: &str, revision: &str, version: &str) -> String {
    String::from_utf8(
        seal(Export {
            config: config.as_bytes(),
            revision,
            version,
            exporter: "exp",
            exported_at: at(0),
            term: 1,
        })
        .unwrap(),
    )
    .unwrap()
}

/// Splits actions into sends, publishes and log lines for assertions.
#[derive(Default, Debug)]
struct Out {
    sends: Vec<(Token, HttpRequest)>,
    publishes: Vec<(Meta, Vec<u8>)>,
    marked: bool,
    logs: Vec<(Level, String)>,
    metrics: Vec<Metric>,
}

fn split(actions: Vec<Action>) -> Out {
    let mut o = Out::default();
    for a in actions {
        match a {
            Action::Send { token, request } => o.sends.push((token, request)),
            Action::Publish { meta, config } => o.publishes.push((meta, config)),
            Action::MarkImportAttempted => o.marked = true,
            Action::Log { level, message } => o.logs.push((level, message)),
            Action::Metric(m) => o.metrics.push(m),
        }
    }
    o
}

/// A successful PUT, with the new ETag as S3 sends it.
fn put_ok() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("etag".into(), "\"written\"".into())],
        body: vec![],
    }
}

fn is_lease(r: &HttpRequest) -> bool {
    r.path.ends_with("/election/lease.json")
}

/// Plays a store in which this node is the only exporter: answers its
/// lease requests (absent, then every conditional write succeeds) and
/// returns everything else the controller did meanwhile.
fn lead(c: &mut Controller, mut o: Out, now: Timestamp) -> Out {
    while let Some(i) = o.sends.iter().position(|(_, r)| is_lease(r)) {
        let (t, r) = o.sends.remove(i);
        let answer = match r.method.as_str() {
            "GET" => resp(404, "<Error><Code>NoSuchKey</Code></Error>"),
            _ => HttpResponse {
                status: 200,
                headers: vec![("etag".into(), "\"lease\"".into())],
                body: vec![],
            },
        };
        let more = split(c.on_response(t, answer, now));
        o.sends.extend(more.sends);
        o.publishes.extend(more.publishes);
        o.logs.extend(more.logs);
        o.metrics.extend(more.metrics);
    }
    o
}

/// The controller of a sole exporter, its lease requests answered.
trait SoleExporter {
    fn tick_led(&mut self, now: Timestamp) -> Out;
    fn respond_led(&mut self, token: Token, response: HttpResponse, now: Timestamp) -> Out;
}

impl SoleExporter for Controller {
    fn tick_led(&mut self, now: Timestamp) -> Out {
        let o = split(self.tick(now));
        lead(self, o, now)
    }

    fn respond_led(&mut self, token: Token, response: HttpResponse, now: Timestamp) -> Out {
        let o = split(self.on_response(token, response, now));
        lead(self, o, now)
    }
}

impl Out {
    fn one_send(&self) -> (Token, &HttpRequest) {
        assert_eq!(self.sends.len(), 1, "expected one request: {self:?}");
        (self.sends[0].0, &self.sends[0].1)
    }

    fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|(_, m)| m.contains(needle))
    }
}

fn is_cp(r: &HttpRequest) -> bool {
    r.cluster == "control_plane"
}

fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn polls_the_cp_at_once_then_every_interval() {
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let o = split(c.tick(at(0)));
    let (t, r) = o.one_send();
    assert!(is_cp(r));
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.authority.as_str()),
        ("GET", "/v1/config", "control_plane")
    );
    assert_eq!(header(r, "if-none-match"), None);
    let o = split(c.on_response(t, cp_ok(&format!("  {CFG1}\n"), "\"e1\""), at(0)));
    assert!(o.sends.is_empty());
    assert_eq!(o.publishes.len(), 1);
    let (meta, bytes) = &o.publishes[0];
    assert_eq!(
        (meta.generation, meta.source, meta.revision.as_str()),
        (1, Source::ControlPlane, "r1")
    );
    assert_eq!(
        bytes,
        CFG1.as_bytes(),
        "surrounding whitespace trimmed, nothing else"
    );
    assert!(o.logged("CP fetched revision r1"));
    // Not before the interval.
    assert!(split(c.tick(at(4))).sends.is_empty());
    let o = split(c.tick(at(5)));
    let (t, r) = o.one_send();
    assert_eq!(header(r, "if-none-match"), Some("\"e1\""));
    let o = split(c.on_response(t, resp(304, ""), at(5)));
    assert!(o.publishes.is_empty() && o.sends.is_empty());
    // A new revision is applied with the next generation.
    let (t, _) = split(c.tick(at(10))).sends[0].clone();
    let o = split(c.on_response(t, cp_ok(CFG2, "\"e2\""), at(10)));
    assert_eq!(o.publishes[0].0.generation, 2);
    assert_eq!(o.publishes[0].0.revision, "r2");
    // Same content under a new ETag: nothing to apply.
    let (t, _) = split(c.tick(at(15))).sends[0].clone();
    let o = split(c.on_response(t, cp_ok(CFG2, "\"e3\""), at(15)));
    assert!(o.publishes.is_empty());
}

#[test]
fn no_overlapping_polls() {
    let mut c = Controller::new(&settings(false, false, 0), "n".into());
    let o = split(c.tick(at(0)));
    assert_eq!(o.sends.len(), 1);
    // Still waiting for the answer at the next due time: no second poll.
    assert!(split(c.tick(at(5))).sends.is_empty());
}

#[test]
fn imports_once_when_the_cp_is_down_at_start() {
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    let o = split(c.on_response(t, resp(503, "upstream connect error"), at(0)));
    assert!(o.logged("CP unavailable"));
    assert!(o.marked);
    let (t, r) = o.one_send();
    assert_eq!(
        (r.cluster.as_str(), r.method.as_str()),
        ("object_storage", "GET")
    );
    assert_eq!(r.path, format!("/bkt/pre/{VERSION}/config.json"));
    assert!(header(r, "authorization").is_some());
    assert!(o.logged(&format!(
        "importing fallback config from s3://bkt/pre/{VERSION}/config.json"
    )));
    let o = split(c.on_response(t, resp(200, &envelope_for(CFG1, "r1", VERSION)), at(1)));
    assert_eq!(o.publishes.len(), 1);
    assert_eq!(o.publishes[0].0.source, Source::Storage);
    assert_eq!(o.publishes[0].1, CFG1.as_bytes());
    assert!(o.logged("imported revision r1"));
    // The CP stays down: it is polled again, storage never again.
    for i in 1..10 {
        let o = split(c.tick(at(5 * i)));
        let (t, r) = o.one_send();
        assert!(is_cp(r));
        let o = split(c.on_response(t, resp(504, "upstream request timeout"), at(5 * i)));
        assert!(o.sends.is_empty() && o.publishes.is_empty() && !o.marked);
    }
    // The CP comes back: its config replaces the imported one.
    let (t, _) = split(c.tick(at(50))).sends[0].clone();
    let o = split(c.on_response(t, cp_ok(CFG2, "\"e\""), at(50)));
    assert_eq!(o.publishes.len(), 1);
    assert_eq!(
        (o.publishes[0].0.source, o.publishes[0].0.generation),
        (Source::ControlPlane, 2)
    );
    assert!(o.sends.is_empty());
}

#[test]
fn cp_config_identical_to_imported_one_is_still_marked_as_cp() {
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    let (t2, _) = split(c.on_response(t, resp(503, ""), at(0))).sends[0].clone();
    split(c.on_response(t2, resp(200, &envelope_for(CFG1, "r1", VERSION)), at(0)));
    let (t, _) = split(c.tick(at(5))).sends[0].clone();
    let o = split(c.on_response(t, cp_ok(CFG1, "\"e\""), at(5)));
    assert_eq!(o.publishes[0].0.source, Source::ControlPlane);
}

#[test]
fn refused_imports_apply_nothing_and_are_not_retried() {
    let wrong_version = envelope_for(CFG1, "r1", "9.9.9");
    let tampered = envelope_for(CFG1, "r1", VERSION).replace("/echo", "/evil");
    let cases: [(HttpResponse, &str); 5] = [
        (
            resp(404, "<Error><Code>NoSuchKey</Code></Error>"),
            "not found",
        ),
        (resp(200, "{not json"), "does not parse"),
        (resp(200, &wrong_version), "version mismatch"),
        (resp(200, &tampered), "sha256 mismatch"),
        (
            resp(
                403,
                "<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
            ),
            "403 AccessDenied",
        ),
    ];
    for (answer, reason) in cases {
        let mut c = Controller::new(&settings(true, false, 0), "n".into());
        let (t, _) = split(c.tick(at(0))).sends[0].clone();
        let (t, _) = split(c.on_response(t, resp(503, ""), at(0))).sends[0].clone();
        let o = split(c.on_response(t, answer, at(1)));
        assert!(o.publishes.is_empty(), "{reason}");
        assert!(
            o.logged("import failed:") && o.logged(reason),
            "{reason}: {:?}",
            o.logs
        );
        assert!(o.logs.iter().any(|(l, _)| *l == Level::Error));
        for i in 1..5 {
            let o = split(c.tick(at(5 * i)));
            let (t, r) = o.one_send();
            assert!(is_cp(r));
            assert!(split(c.on_response(t, resp(503, ""), at(5 * i)))
                .sends
                .is_empty());
        }
        // The CP still wins later.
        let (t, _) = split(c.tick(at(30))).sends[0].clone();
        assert_eq!(
            split(c.on_response(t, cp_ok(CFG1, "e"), at(30)))
                .publishes
                .len(),
            1
        );
    }
}

#[test]
fn cp_answer_during_import_wins() {
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    let (import, _) = split(c.on_response(t, resp(503, ""), at(0))).sends[0].clone();
    let (t, _) = split(c.tick(at(5))).sends[0].clone();
    assert_eq!(
        split(c.on_response(t, cp_ok(CFG2, "e"), at(5)))
            .publishes
            .len(),
        1
    );
    let o = split(c.on_response(import, resp(200, &envelope_for(CFG1, "r1", VERSION)), at(6)));
    assert!(o.publishes.is_empty());
    assert!(o.logged("discarded"));
    assert_eq!(c.current().unwrap().revision, "r2");
}

#[test]
fn no_import_when_cp_answered_first_or_import_off_or_already_attempted() {
    // CP up at start: later outages never import.
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    split(c.on_response(t, cp_ok(CFG1, "e"), at(0)));
    let (t, _) = split(c.tick(at(5))).sends[0].clone();
    assert!(split(c.on_response(t, resp(503, ""), at(5)))
        .sends
        .is_empty());
    // Import off.
    let mut c = Controller::new(&settings(false, false, 0), "n".into());
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    assert!(split(c.on_response(t, resp(503, ""), at(0)))
        .sends
        .is_empty());
    // Another driver of this process already used the import.
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    c.adopt(
        Inherited {
            published: None,
            import_attempted: true,
        },
        at(0),
    );
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    assert!(split(c.on_response(t, resp(503, ""), at(0)))
        .sends
        .is_empty());
}

#[test]
fn unusable_cp_config_counts_as_cp_unavailable() {
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    let o = split(c.on_response(
        t,
        cp_ok(r#"{"revision":"r1","routes":[{"name":"x"}]}"#, "e"),
        at(0),
    ));
    assert!(o.publishes.is_empty());
    assert!(o.logged("CP unavailable: it sent an unusable config"));
    assert_eq!(o.sends.len(), 1, "import starts");
}

#[test]
fn adopted_state_continues_generations() {
    let mut c = Controller::new(&settings(false, false, 0), "n".into());
    c.adopt(
        Inherited {
            published: Some((
                Meta {
                    generation: 7,
                    source: Source::ControlPlane,
                    revision: "r1".into(),
                    sha256: sha256_hex(CFG1.as_bytes()),
                },
                CFG1.as_bytes().to_vec(),
            )),
            import_attempted: false,
        },
        at(0),
    );
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    assert!(
        split(c.on_response(t, cp_ok(CFG1, "e"), at(0)))
            .publishes
            .is_empty(),
        "same content"
    );
    let (t, _) = split(c.tick(at(5))).sends[0].clone();
    assert_eq!(
        split(c.on_response(t, cp_ok(CFG2, "e2"), at(5))).publishes[0]
            .0
            .generation,
        8
    );
}

#[test]
fn lost_answers_are_given_up_on() {
    let mut c = Controller::new(&settings(false, false, 0), "n".into());
    let o = split(c.tick(at(0)));
    assert_eq!(o.sends.len(), 1);
    // Timeout 1 s + 5 s grace: at 6 s the poll is declared lost and redone.
    let o = split(c.tick(at(6)));
    assert!(o.logged("CP unavailable: no answer"));
    assert_eq!(o.sends.len(), 1);
    assert!(is_cp(&o.sends[0].1));
    // A late answer to the lost call is ignored.
    assert!(split(c.on_response(1, cp_ok(CFG1, "e"), at(7)))
        .publishes
        .is_empty());
}

#[test]
fn send_failures_count_as_cp_unavailable() {
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let (t, _) = split(c.tick(at(0))).sends[0].clone();
    let o = split(c.on_send_failed(t, "BadArgument", at(0)));
    assert!(o.logged("CP unavailable: not sent: BadArgument"));
    assert_eq!(o.sends.len(), 1, "import starts");
}

/// Drives an exporter to its first PUT and returns the controller, the
/// PUT's token and its request.
fn exporter_at_first_put(delay_s: u64) -> (Controller, Token, HttpRequest) {
    let mut c = Controller::new(&settings(false, true, delay_s), "node-7".into());
    let (t, _) = (c.tick_led(at(0))).sends[0].clone();
    let mut o = c.respond_led(t, cp_ok(CFG1, "e1"), at(0));
    assert_eq!(o.publishes.len(), 1);
    if delay_s > 0 {
        assert!(o.sends.is_empty(), "export waits for the delay");
        assert!((c.tick_led(at(delay_s) - Duration::from_millis(1)))
            .sends
            .iter()
            .all(|(_, r)| is_cp(r)));
        o = c.tick_led(at(delay_s));
    }
    let check = o
        .sends
        .iter()
        .find(|(_, r)| !is_cp(r))
        .cloned()
        .expect("existence check");
    assert_eq!(
        (check.1.method.as_str(), check.1.path.as_str()),
        ("GET", format!("/bkt/pre/{VERSION}/config.json").as_str())
    );
    let o = c.respond_led(
        check.0,
        resp(404, "<Error><Code>NoSuchKey</Code></Error>"),
        at(delay_s),
    );
    let (t, r) = o.one_send();
    assert_eq!(r.method, "PUT");
    (c, t, r.clone())
}

#[test]
fn exports_new_revisions_with_a_valid_envelope() {
    let (mut c, t, put) = exporter_at_first_put(0);
    assert_eq!(put.path, format!("/bkt/pre/{VERSION}/config.json"));
    assert_eq!(header(&put, "content-type"), Some("application/json"));
    assert!(header(&put, "authorization").is_some());
    let opened = open(put.body.as_deref().unwrap(), VERSION).unwrap();
    assert_eq!(opened.config_bytes, CFG1.as_bytes());
    assert_eq!(opened.exporter, "node-7");
    let o = c.respond_led(t, put_ok(), at(0));
    assert!(o.logged(&format!(
        "exported revision r1 to s3://bkt/pre/{VERSION}/config.json"
    )));
    // Next revision: PUT straight away (the store was checked already).
    let (t, _) = (c.tick_led(at(5))).sends[0].clone();
    let o = c.respond_led(t, cp_ok(CFG2, "e2"), at(5));
    let (t, r) = o.one_send();
    assert_eq!(r.method, "PUT");
    assert_eq!(
        open(r.body.as_deref().unwrap(), VERSION).unwrap().revision,
        "r2"
    );
    (c.respond_led(t, put_ok(), at(5)));
    // The CP serves the same content again (new ETag): no request at all.
    let (t, _) = (c.tick_led(at(10))).sends[0].clone();
    assert!((c.respond_led(t, cp_ok(CFG2, "e3"), at(10)))
        .sends
        .is_empty());
    // Back to r1 content: exported again (it differs from what is stored).
    let (t, _) = (c.tick_led(at(15))).sends[0].clone();
    let o = c.respond_led(t, cp_ok(CFG1, "e4"), at(15));
    assert_eq!(o.one_send().1.method, "PUT");
}

#[test]
fn unchanged_stored_content_is_not_written_again() {
    // A restarted exporter finds its config already stored.
    let mut c = Controller::new(&settings(false, true, 0), "n".into());
    let (t, _) = (c.tick_led(at(0))).sends[0].clone();
    let (t, r) = (c.respond_led(t, cp_ok(CFG1, "e1"), at(0))).sends[0].clone();
    assert_eq!(r.method, "GET");
    let o = c.respond_led(t, resp(200, &envelope_for(CFG1, "r1", VERSION)), at(0));
    assert!(o.sends.is_empty(), "{o:?}");
    assert!(o.logged("skipped"));
}

#[test]
fn export_delay_keeps_only_the_newest_revision_and_the_first_due_time() {
    let mut c = Controller::new(&settings(false, true, 10), "n".into());
    let (t, _) = (c.tick_led(at(0))).sends[0].clone();
    assert!((c.respond_led(t, cp_ok(CFG1, "e1"), at(0)))
        .sends
        .is_empty());
    let (t, _) = (c.tick_led(at(5))).sends[0].clone();
    assert!((c.respond_led(t, cp_ok(CFG2, "e2"), at(5)))
        .sends
        .is_empty());
    // r2 replaced r1 but keeps r1's due time (10 s), so a CP changing
    // faster than the delay cannot starve the export.
    let early = c.tick_led(at(10) - Duration::from_millis(1));
    assert!(early.sends.iter().all(|(_, r)| is_cp(r)));
    let o = c.tick_led(at(10));
    let (t, _) = o.sends.iter().find(|(_, r)| !is_cp(r)).cloned().unwrap();
    for (cp, _) in o.sends.iter().filter(|(_, r)| is_cp(r)) {
        (c.respond_led(*cp, resp(304, ""), at(10)));
    }
    let (t, put) = (c.respond_led(t, resp(404, ""), at(10))).sends[0].clone();
    assert_eq!(
        open(put.body.as_deref().unwrap(), VERSION)
            .unwrap()
            .revision,
        "r2"
    );
    assert!((c.respond_led(t, put_ok(), at(10))).logged("exported revision r2"));
}

#[test]
fn access_denied_on_the_existence_check_still_writes() {
    let mut c = Controller::new(&settings(false, true, 0), "n".into());
    let (t, _) = (c.tick_led(at(0))).sends[0].clone();
    let (t, r) = (c.respond_led(t, cp_ok(CFG1, "e1"), at(0))).sends[0].clone();
    assert_eq!(r.method, "GET");
    let denied = resp(
        403,
        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    );
    let o = c.respond_led(t, denied, at(0));
    assert_eq!(o.one_send().1.method, "PUT");
    // A bad signature is a failure, not "absent".
    let mut c = Controller::new(&settings(false, true, 0), "n".into());
    let (t, _) = (c.tick_led(at(0))).sends[0].clone();
    let (t, _) = (c.respond_led(t, cp_ok(CFG1, "e1"), at(0))).sends[0].clone();
    let bad = resp(403, "<Error><Code>SignatureDoesNotMatch</Code></Error>");
    let o = c.respond_led(t, bad, at(0));
    assert!(o.sends.is_empty() && o.logged("SignatureDoesNotMatch"));
}

fn inherited(source: Source, generation: u64, attempted: bool) -> Inherited {
    let meta = Meta {
        generation,
        source,
        revision: "r1".into(),
        sha256: sha256_hex(CFG1.as_bytes()),
    };
    Inherited {
        published: Some((meta, CFG1.as_bytes().to_vec())),
        import_attempted: attempted,
    }
}

#[test]
fn a_new_driver_exports_what_the_old_one_published() {
    let mut c = Controller::new(&settings(false, true, 0), "n".into());
    c.adopt(inherited(Source::ControlPlane, 3, false), at(0));
    let o = c.tick_led(at(0));
    let check = o
        .sends
        .iter()
        .find(|(_, r)| !is_cp(r))
        .cloned()
        .expect("existence check");
    let (t, put) = (c.respond_led(check.0, resp(404, ""), at(0))).sends[0].clone();
    let opened = open(put.body.as_deref().unwrap(), VERSION).unwrap();
    assert_eq!(opened.config_bytes, CFG1.as_bytes());
    assert!((c.respond_led(t, put_ok(), at(0))).logged("exported revision r1"));
    // An imported config is not exported.
    let mut c = Controller::new(&settings(true, true, 0), "n".into());
    c.adopt(inherited(Source::Storage, 1, true), at(0));
    assert!((c.tick_led(at(0))).sends.iter().all(|(_, r)| is_cp(r)));
}

#[test]
fn a_demoted_controller_ignores_late_answers() {
    let mut c = Controller::new(&settings(true, false, 0), "n".into());
    let (t, _) = (c.tick_led(at(0))).sends[0].clone();
    assert!(c.demote().is_empty());
    assert!((c.respond_led(t, cp_ok(CFG1, "e"), at(0)))
        .publishes
        .is_empty());
    // Driving again starts over with a fresh poll.
    let o = c.tick_led(at(1));
    assert!(is_cp(o.one_send().1));
}

#[test]
fn a_failed_publish_is_retried_with_the_next_answer() {
    let mut c = Controller::new(&settings(false, false, 0), "n".into());
    let (t, _) = (c.tick_led(at(0))).sends[0].clone();
    assert_eq!(
        (c.respond_led(t, cp_ok(CFG1, "e1"), at(0))).publishes.len(),
        1
    );
    c.publish_failed();
    let o = c.tick_led(at(5));
    let (t, r) = o.one_send();
    assert_eq!(header(r, "if-none-match"), None);
    assert_eq!(
        (c.respond_led(t, cp_ok(CFG1, "e1"), at(5))).publishes.len(),
        1
    );
}

#[test]
fn a_clock_set_back_does_not_stall_polling() {
    let mut c = Controller::new(&settings(false, false, 0), "n".into());
    let (t, _) = (c.tick_led(at(3600))).sends[0].clone();
    (c.respond_led(t, resp(304, ""), at(3600)));
    // The clock goes back an hour: the next poll is still 5 s away, not 1 h.
    let o = c.tick_led(at(1));
    assert!(o.sends.is_empty() && o.logged("clock went back"));
    assert!(is_cp((c.tick_led(at(6))).one_send().1));
}

#[test]
fn export_failures_are_logged_with_the_code_and_retried_with_backoff() {
    let (mut c, t, _) = exporter_at_first_put(0);
    let denied = "<Error><Code>SignatureDoesNotMatch</Code><Message>nope</Message></Error>";
    let o = c.respond_led(t, resp(403, denied), at(0));
    assert!(
        o.logged("export of revision r1 failed: storage answered 403 SignatureDoesNotMatch"),
        "{:?}",
        o.logs
    );
    assert!(o.sends.is_empty());
    // Retries at +1 s, then +2 s, +4 s ...
    let mut now = 0;
    for wait in [1u64, 2, 4, 8] {
        let before = c.tick_led(at(now + wait) - Duration::from_millis(1));
        assert!(
            before.sends.iter().all(|(_, r)| is_cp(r)),
            "too early at {now}+{wait}"
        );
        for (t, _) in before.sends {
            (c.respond_led(t, resp(304, ""), at(now)));
        }
        now += wait;
        let o = c.tick_led(at(now));
        let (t, r) = o
            .sends
            .iter()
            .find(|(_, r)| !is_cp(r))
            .cloned()
            .expect("retry");
        assert_eq!(r.method, "PUT");
        for (cp, _) in o.sends.iter().filter(|(_, r)| is_cp(r)) {
            (c.respond_led(*cp, resp(304, ""), at(now)));
        }
        (c.respond_led(t, resp(403, denied), at(now)));
    }
    assert_eq!(backoff(30), MAX_BACKOFF);
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0 - d.as_millis() as u64)
    }
}

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

fn token_ok() -> HttpResponse {
    resp(
        200,
        r#"{"access_token":"ya29.tok","expires_in":3600,"token_type":"Bearer"}"#,
    )
}

#[test]
fn gcs_import_waits_for_the_access_token() {
    let mut c = Controller::new(&gcs_settings(true, false), "n".into());
    let o = split(c.tick(at(0)));
    // The token is fetched at once, beside the first CP poll.
    let token = o
        .sends
        .iter()
        .find(|(_, r)| r.cluster == "oauth")
        .cloned()
        .expect("token request");
    assert_eq!(
        (token.1.method.as_str(), token.1.path.as_str()),
        ("POST", "/oauth2/token")
    );
    let (cp, _) = o.sends.iter().find(|(_, r)| is_cp(r)).cloned().unwrap();
    let o = split(c.on_response(cp, resp(503, ""), at(0)));
    assert!(o.sends.is_empty() && o.logged("waiting for the store's access token"));
    let o = split(c.on_response(token.0, token_ok(), at(1)));
    assert!(o.marked);
    let (_, get) = o.one_send();
    assert_eq!(get.cluster, "object_storage");
    assert_eq!(
        get.path,
        format!("/storage/v1/b/bkt/o/pre%2F{VERSION}%2Fconfig.json?alt=media")
    );
    assert_eq!(header(get, "authorization"), Some("Bearer ya29.tok"));
    assert!(!format!("{get:?}").contains("ya29.tok"));
}

#[test]
fn gcs_import_fails_clearly_when_no_token_can_be_had() {
    let mut c = Controller::new(&gcs_settings(true, false), "n".into());
    let o = split(c.tick(at(0)));
    let (token, _) = o
        .sends
        .iter()
        .find(|(_, r)| r.cluster == "oauth")
        .cloned()
        .unwrap();
    let (cp, _) = o.sends.iter().find(|(_, r)| is_cp(r)).cloned().unwrap();
    split(c.on_response(cp, resp(503, ""), at(0)));
    let refused = resp(
        400,
        r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    );
    let o = split(c.on_response(token, refused, at(1)));
    assert!(
        o.logged("import failed:") && o.logged("invalid_grant"),
        "{:?}",
        o.logs
    );
    assert!(o.sends.is_empty() && o.publishes.is_empty());
    // Never a storage GET afterwards, even once a token arrives.
    for i in 1..5 {
        let o = split(c.tick(at(5 * i)));
        assert!(
            o.sends.iter().all(|(_, r)| r.cluster != "object_storage"),
            "{o:?}"
        );
        for (t, r) in o.sends {
            let answer = if r.cluster == "oauth" {
                token_ok()
            } else {
                resp(503, "")
            };
            assert!(split(c.on_response(t, answer, at(5 * i)))
                .sends
                .iter()
                .all(|(_, r)| r.cluster != "object_storage"));
        }
    }
}

#[test]
fn demoting_a_leader_whose_lease_looks_expired_still_reports_the_loss() {
    let mut c = Controller::new(&settings(false, true, 0), "n".into());
    let (t, _) = c.tick_led(at(0)).sends[0].clone();
    let o = c.respond_led(t, cp_ok(CFG1, "e1"), at(0));
    assert!(o.logged("became leader (term 1)"));
    // Its lease's validity is irrelevant: whoever drives next re-takes it.
    let o = split(c.demote());
    assert!(o.logged("lost leadership (term 1)"), "{:?}", o.logs);
    assert_eq!(o.metrics, vec![Metric::Leader(None)]);
}

#[test]
fn a_401_from_gcs_fetches_a_new_token() {
    let mut c = Controller::new(&gcs_settings(false, true), "n".into());
    let o = split(c.tick(at(0)));
    let (token, _) = o
        .sends
        .iter()
        .find(|(_, r)| r.cluster == "oauth")
        .cloned()
        .unwrap();
    let (cp, _) = o.sends.iter().find(|(_, r)| is_cp(r)).cloned().unwrap();
    split(c.on_response(token, token_ok(), at(0)));
    // The CP answers; the election's first lease read is refused with 401.
    let o = split(c.on_response(cp, cp_ok(CFG1, "e1"), at(0)));
    let (lease, _) = o
        .sends
        .iter()
        .find(|(_, r)| r.cluster == "object_storage")
        .cloned()
        .expect("lease read");
    let unauthorized = resp(
        401,
        r#"{"error":{"code":401,"message":"Invalid Credentials","errors":[{"reason":"authError"}]}}"#,
    );
    let o = split(c.on_response(lease, unauthorized, at(1)));
    assert!(o.logged("401"), "{:?}", o.logs);
    // The next tick asks for a new token before anything else reaches the store.
    let o = split(c.tick(at(2)));
    assert!(o.sends.iter().any(|(_, r)| r.cluster == "oauth"), "{o:?}");
    assert!(
        o.sends.iter().all(|(_, r)| r.cluster != "object_storage"),
        "{o:?}"
    );
}
