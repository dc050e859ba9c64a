//! Self-tests of the fault front ([`envoy_test::faults`]), WITHOUT the wasm
//! filter: each fault through a plain HTTP client against a front backed by
//! a real store (which still verifies signatures), and one real Envoy whose
//! `object_storage` cluster points at the front. Needs S3S_FS_BIN,
//! AZURITE_BIN, GCS_EMULATOR_BIN and ENVOY_BIN (no wasm).

use envoy_test::faults::{Fault, FaultFront};
use envoy_test::http;
use envoy_test::stack::{Stack, BUCKET};
use envoy_test::store::{StoreKind, STORAGE_CLUSTER};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A stored object of exactly `n` bytes (valid JSON).
fn object_of(n: usize) -> Vec<u8> {
    let mut v = b"{\"pad\":\"".to_vec();
    while v.len() + 2 < n {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v.extend_from_slice(b"\"}");
    v
}

/// Sends a raw GET and reads until the peer closes: (bytes read, how the
/// read ended).
fn raw_get(port: u16, path: &str, read_timeout: Duration) -> (Vec<u8>, std::io::Result<()>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(read_timeout)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

fn split_head(raw: &[u8]) -> (String, &[u8]) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    (
        String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase(),
        &raw[at + 4..],
    )
}

/// Forwarded requests reach the real store unchanged (the store verifies
/// the signature), unsigned ones are still refused, and the log says so.
fn front_forwards_signed_requests_unchanged(kind: StoreKind) {
    let stack = Stack::without_wasm_with_faults(kind, "faults-forward", true);
    let front = stack.faults();
    assert_eq!(front.backend_port(), stack.store_port());
    let body = object_of(1500);
    stack.write_object(&body);

    let r = stack.signed_object_get(front.port()).unwrap();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.body, body);
    // Twice: a second request on a fresh connection works the same.
    assert_eq!(stack.signed_object_get(front.port()).unwrap().body, body);

    // An unsigned (or unauthenticated) request is refused by the store.
    let refused = match kind {
        StoreKind::S3 => http::get(
            front.port(),
            &format!("/{BUCKET}/{}", stack.object_key()),
            &[],
        ),
        StoreKind::Azure => http::get(
            front.port(),
            &format!("/devstoreaccount1/{BUCKET}/{}", stack.object_key()),
            &[],
        ),
        StoreKind::Gcs => http::get(
            front.port(),
            &format!(
                "/storage/v1/b/{BUCKET}/o/{}?alt=media",
                envoy_test::envoy::percent_encode(&stack.object_key())
            ),
            &[],
        ),
    }
    .unwrap();
    assert!(
        [401, 403, 404].contains(&refused.status),
        "{}",
        refused.summary()
    );

    let log = front.log();
    assert_eq!(log.len(), 3, "{}", front.log_text());
    assert!(log
        .iter()
        .all(|r| r.fault.is_none() && r.reached_backend && r.complete));
    assert_eq!(log[0].status, Some(200));
    assert_eq!(log[0].body_sent, body.len() as u64);
    assert_eq!(log[2].status, Some(refused.status));
    assert_eq!(front.backend_count(), 3);
    assert_eq!(front.faulted_count(), 0);
    assert_eq!(log[0].action(), "forwarded");
}
envoy_test::on_every_store!(front_forwards_signed_requests_unchanged);

/// `Status` faults are answered by the front, one request each, FIFO, and
/// only for requests whose path matches; the store never sees them.
#[test]
fn status_faults_are_answered_by_the_front_in_order() {
    let stack = Stack::without_wasm_with_faults(StoreKind::S3, "faults-status", true);
    let front = stack.faults();
    let body = object_of(300);
    stack.write_object(&body);

    front.push_for("config.json", Fault::unavailable());
    front.push_for(
        "config.json",
        Fault::s3_error(403, "AccessDenied", "Access Denied"),
    );
    front.push_for("config.json", Fault::html_200());
    assert_eq!(front.pending(), 3);

    // A request the filters do not match goes through untouched.
    let other = stack
        .signed_get(
            &format!("{}/other.json", envoy_test::stack::PREFIX),
            front.port(),
        )
        .unwrap();
    assert_eq!(other.status, 404, "{}", other.summary());
    assert_eq!(front.pending(), 3);

    let r = stack.signed_object_get(front.port()).unwrap();
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("<Code>SlowDown</Code>"),
        "{}",
        r.summary()
    );
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert_eq!(r.header("connection"), Some("close"));
    let r = stack.signed_object_get(front.port()).unwrap();
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("<Code>AccessDenied</Code>"),
        "{}",
        r.summary()
    );
    let r = stack.signed_object_get(front.port()).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().starts_with("<!DOCTYPE html>"));
    assert_eq!(front.pending(), 0);
    // Queue empty: forwarded again.
    let r = stack.signed_object_get(front.port()).unwrap();
    assert_eq!((r.status, r.body), (200, body));

    // An unfiltered fault applies to the next request, whatever its path.
    front.push(Fault::status(500, "text/plain", "boom"));
    let r = http::get(front.port(), "/anything", &[]).unwrap();
    assert_eq!((r.status, r.text()), (500, "boom".to_string()));

    let actions: Vec<String> = front.log().iter().map(|r| r.action()).collect();
    assert_eq!(
        actions,
        [
            "forwarded",
            "status 503",
            "status 403",
            "status 200",
            "forwarded",
            "status 500"
        ],
        "{}",
        front.log_text()
    );
    assert_eq!(front.backend_count(), 2);
    assert_eq!(front.requests_for("config.json").len(), 4);
    assert_eq!(front.clear(), 0);
}

/// `Hang`: nothing is answered for the whole period, then the connection
/// closes without a byte; the store is not asked.
#[test]
fn hang_answers_nothing_then_closes() {
    let stack = Stack::without_wasm_with_faults(StoreKind::S3, "faults-hang", true);
    let front = stack.faults();
    front.push(Fault::hang(Duration::from_millis(400)));
    front.push(Fault::hang(Duration::from_millis(1500)));

    // A client that gives up first sees a read timeout.
    let (got, end) = raw_get(front.port(), "/a", Duration::from_millis(200));
    assert!(got.is_empty());
    let e = end.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e:?}"
    );
    // A patient one sees the close after the period, with nothing read.
    let t = Instant::now();
    let (got, end) = raw_get(front.port(), "/b", Duration::from_secs(10));
    let waited = t.elapsed();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(end.is_ok(), "{end:?}");
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let log = front.wait_finished("/", 2, Duration::from_secs(5)).unwrap();
    assert!(log
        .iter()
        .all(|r| r.action() == "hang" && r.status.is_none() && !r.reached_backend));
    assert_eq!(front.backend_count(), 0);
}

/// `SlowBody`: the store's answer, dripped in chunks, still complete.
#[test]
fn slow_body_drips_the_stores_answer() {
    let stack = Stack::without_wasm_with_faults(StoreKind::S3, "faults-slow", true);
    let front = stack.faults();
    let body = object_of(1000);
    stack.write_object(&body);
    front.push_for(
        "config.json",
        Fault::slow_body(100, Duration::from_millis(60)),
    );
    let t = Instant::now();
    let r = stack.signed_object_get(front.port()).unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.body, body);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("connection"), Some("close"));
    // 10 chunks, 60 ms before each.
    assert!(took >= Duration::from_millis(550), "{took:?}");
    let log = front.log();
    assert_eq!(log[0].action(), "slow_body");
    assert!(log[0].reached_backend && log[0].complete);
    assert_eq!(log[0].body_sent, 1000);
}

/// `Truncate`: the store's headers (real Content-Length) and the first
/// bytes of its body, then the connection closes.
#[test]
fn truncate_cuts_the_body_short() {
    let stack = Stack::without_wasm_with_faults(StoreKind::S3, "faults-truncate", true);
    let front = stack.faults();
    let body = object_of(1000);
    stack.write_object(&body);
    front.push_for("config.json", Fault::truncate(100));
    front.push_for("config.json", Fault::truncate(100));

    // The harness client notices the short body.
    let e = stack.signed_object_get(front.port()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e:?}");

    // Raw: exactly the head and 100 body bytes, then EOF. Signed requests
    // need the store's own client: send the signed request by hand.
    let mut s = TcpStream::connect(("127.0.0.1", front.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = signed_request_bytes(&stack);
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let (head, got) = split_head(&raw);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1000"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(got, &body[..100]);

    let log = front.log();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.action() == "truncate"
        && r.reached_backend
        && !r.complete
        && r.body_sent == 100));
}

/// The raw bytes of the signed object GET ([`Stack::signed_object_get`]'s
/// request), captured by a one-shot listener.
fn signed_request_bytes(stack: &Stack) -> Vec<u8> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        got
    });
    let _ = stack.signed_object_get(port);
    t.join().unwrap()
}

/// `Reset`: the connection is reset (RST) right after the request.
#[test]
fn reset_resets_the_connection() {
    let stack = Stack::without_wasm_with_faults(StoreKind::S3, "faults-reset", true);
    let front = stack.faults();
    front.push(Fault::reset());
    let (got, end) = raw_get(front.port(), "/x", Duration::from_secs(5));
    assert!(got.is_empty());
    let e = end.expect_err("a RST, not a clean close");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e:?}");
    let log = front
        .wait_finished("/x", 1, Duration::from_secs(5))
        .unwrap();
    assert_eq!(log[0].action(), "reset");
    assert_eq!(log[0].status, None);
    assert_eq!(log[0].error, None, "SO_LINGER 0 should be set on Linux");
    assert_eq!(front.backend_count(), 0);
}

/// `Oversize`: a 50 MB JSON-looking 200 from the front itself.
#[test]
fn oversize_streams_a_large_json_body() {
    let stack = Stack::without_wasm_with_faults(StoreKind::S3, "faults-oversize", true);
    let front = stack.faults();
    let bytes = 50_000_000u64;
    front.push_for("config.json", Fault::oversize(bytes));
    let r = stack.signed_object_get(front.port()).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), Some("50000000"));
    assert_eq!(r.body.len() as u64, bytes);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("valid JSON");
    assert_eq!(
        v["filler"].as_str().map(str::len),
        Some(bytes as usize - 13)
    );
    let log = front.log();
    assert_eq!(log[0].action(), "oversize");
    assert!(log[0].complete && !log[0].reached_backend);
    assert_eq!(log[0].body_sent, bytes);
}

/// A front over a backend that is down answers 502 and says why.
#[test]
fn unreachable_backend_is_a_502() {
    let front = FaultFront::start(envoy_test::ports::free_port()).unwrap();
    let r = http::get(front.port(), "/x", &[]).unwrap();
    assert_eq!(r.status, 502, "{}", r.summary());
    let log = front.log();
    assert!(log[0]
        .error
        .as_deref()
        .unwrap_or("")
        .contains("unreachable"));
    assert!(!log[0].reached_backend);
}

/// A real Envoy (no filter) whose `object_storage` cluster points at the
/// front: signed requests routed there reach the store, and each fault
/// shows up as Envoy relays it.
fn envoy_object_storage_goes_through_the_front(kind: StoreKind) {
    let stack = Stack::without_wasm_with_faults(kind, "faults-envoy", true);
    let front = stack.faults();
    let body = object_of(800);
    stack.write_object(&body);
    let cfg = stack.envoy_config(&stack.plugin());
    let storage = cfg
        .clusters
        .iter()
        .find(|c| c.name == STORAGE_CLUSTER)
        .unwrap();
    assert_eq!(storage.port, front.port());
    let envoy = stack.start_envoy_config("faults", cfg, &stack.store_env());

    // Through Envoy: the signed request with the store's Host, routed by
    // the cluster header (Envoy keeps Host, so the signature holds).
    let via_envoy = || {
        let captured = signed_request_bytes(&stack);
        let mut s = TcpStream::connect(("127.0.0.1", envoy.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let text = String::from_utf8(captured).unwrap();
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        let mut req = String::new();
        for line in head.split("\r\n") {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                req.push_str(line);
                req.push_str("\r\n");
            }
        }
        req.push_str(&format!(
            "x-fallback-upstream: {STORAGE_CLUSTER}\r\nconnection: close\r\n\r\n"
        ));
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let end = s.read_to_end(&mut raw);
        (raw, end)
    };
    let status_of = |raw: &[u8]| -> u16 {
        let (head, _) = split_head(raw);
        head.split_whitespace().nth(1).unwrap().parse().unwrap()
    };

    let (raw, _) = via_envoy();
    assert_eq!(status_of(&raw), 200, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(split_head(&raw).1, &body[..]);

    front.push_for("config.json", Fault::unavailable());
    let (raw, _) = via_envoy();
    assert_eq!(status_of(&raw), 503);
    assert!(String::from_utf8_lossy(&raw).contains("SlowDown"));

    front.push_for("config.json", Fault::reset());
    let (raw, _) = via_envoy();
    let text = String::from_utf8_lossy(&raw).to_string();
    assert_eq!(status_of(&raw), 503, "{text}");
    assert!(
        text.contains("upstream connect error or disconnect/reset before headers"),
        "{text}"
    );

    front.push_for("config.json", Fault::truncate(10));
    let (raw, _) = via_envoy();
    let (head, got) = split_head(&raw);
    assert!(head.contains("content-length: 800"), "{head}");
    assert!(
        got.len() < body.len(),
        "Envoy must not complete a truncated body"
    );

    let (raw, _) = via_envoy();
    assert_eq!(status_of(&raw), 200);

    let log = front.log();
    let actions: Vec<String> = log.iter().map(|r| r.action()).collect();
    assert_eq!(
        actions,
        ["forwarded", "status 503", "reset", "truncate", "forwarded"],
        "{}",
        front.log_text()
    );
    assert_eq!(front.backend_count(), 3);
    assert_eq!(envoy.upstream_rq_total(STORAGE_CLUSTER), 5);
}
envoy_test::on_every_store!(envoy_object_storage_goes_through_the_front);
