//! Runs the official AWS SigV4 test suite (header signing) against
//! `fallback_config::sigv4`.
//!
//! The suite lives outside the repository (it is third-party data, see
//! `shared/aws-signing-test-suite/README.md`): it is read from
//! `$SIGV4_TEST_SUITE`, or `../shared/aws-signing-test-suite/v4` next to
//! the crate. A missing suite fails the test: a signer that silently went
//! unchecked is worse than a red build.
//!
//! Each case folder holds `request.txt` (an HTTP/1.1 request), a
//! `context.json` and the expected `header-canonical-request.txt`,
//! `header-string-to-sign.txt`, `header-signature.txt` and
//! `header-signed-request.txt`. All cases are run and every mismatch is
//! reported at once.

use std::fs;
use std::path::{Path, PathBuf};

use fallback_config::secret::Secret;
use fallback_config::sigv4::{
    sign, ContentSha256Header, Credentials, PathNormalization, PayloadHash, SignableRequest,
    SigningParams, UriEncoding,
};
use fallback_config::time::Timestamp;
use serde::Deserialize;

/// Number of case folders in the suite (aws-c-auth commit 495329c).
const EXPECTED_CASES: usize = 38;

#[derive(Deserialize)]
struct Context {
    credentials: ContextCredentials,
    region: String,
    service: String,
    timestamp: String,
    normalize: bool,
    /// True when the signer must hash the body and send it as
    /// `x-amz-content-sha256` (and so sign that header). The expected
    /// canonical requests of the two `sign_body` cases carry the header;
    /// none of the others does.
    sign_body: bool,
    /// True when the session token is added after signing, not signed.
    #[serde(default)]
    omit_session_token: bool,
}

#[derive(Deserialize)]
struct ContextCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
}

/// `request.txt`, parsed.
struct ParsedRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn suite_dir() -> (PathBuf, &'static str) {
    match std::env::var_os("SIGV4_TEST_SUITE") {
        Some(dir) => (PathBuf::from(dir), "$SIGV4_TEST_SUITE"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/aws-signing-test-suite/v4"),
            "the default location",
        ),
    }
}

/// Parses an HTTP/1.1 request as the suite writes it: request line,
/// `Name:value` header lines where a line starting with whitespace
/// continues the previous value (obs-fold), a blank line, then the body.
fn parse_request(text: &str) -> Result<ParsedRequest, String> {
    let (head, body) = match text.find("\n\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => (text.strip_suffix('\n').unwrap_or(text), ""),
    };
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or("empty request.txt")?;
    // The target may contain spaces (get-space-*): method is the first
    // word, the version the last, the target everything between.
    let (method, rest) = request_line
        .split_once(' ')
        .ok_or_else(|| format!("bad request line {request_line:?}"))?;
    let (target, _version) = rest
        .rsplit_once(' ')
        .ok_or_else(|| format!("bad request line {request_line:?}"))?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers
                .last_mut()
                .ok_or_else(|| format!("continuation line before any header: {line:?}"))?;
            last.1.push('\n');
            last.1.push_str(line);
        } else {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header line without ':': {line:?}"))?;
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(ParsedRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: body.as_bytes().to_vec(),
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` to a [`Timestamp`] (days-from-civil, Howard
/// Hinnant). Checked by formatting it back.
fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    let bad = || format!("unsupported timestamp {s:?}");
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(range).and_then(|p| p.parse().ok()).ok_or_else(bad)
    };
    if s.len() != 20 {
        return Err(bad());
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).map_err(|_| bad())?;
    let t = Timestamp::from_secs(secs);
    if t.rfc3339() != s {
        return Err(format!("timestamp {s:?} parsed as {}", t.rfc3339()));
    }
    Ok(t)
}

/// Headers of `header-signed-request.txt` that are not in `request.txt`:
/// what the signer is expected to add, as sorted (lowercase name, value).
fn expected_added_headers(
    signed: &ParsedRequest,
    original: &ParsedRequest,
) -> Vec<(String, String)> {
    let lower = |h: &[(String, String)]| -> Vec<(String, String)> {
        h.iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    let mut remaining = lower(&original.headers);
    let mut added = Vec::new();
    for h in lower(&signed.headers) {
        match remaining.iter().position(|r| *r == h) {
            Some(i) => {
                remaining.remove(i);
            }
            None => added.push(h),
        }
    }
    added.sort();
    added
}

fn read(dir: &Path, name: &str) -> Result<String, String> {
    fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
}

/// Runs one case; `Err` carries every mismatch found in it.
fn run_case(dir: &Path) -> Result<(), Vec<String>> {
    let prepare = || -> Result<_, String> {
        let context: Context = serde_json::from_str(&read(dir, "context.json")?)
            .map_err(|e| format!("context.json: {e}"))?;
        let request = parse_request(&read(dir, "request.txt")?)?;
        let signed_request = parse_request(&read(dir, "header-signed-request.txt")?)?;
        let expected = [
            read(dir, "header-canonical-request.txt")?,
            read(dir, "header-string-to-sign.txt")?,
            read(dir, "header-signature.txt")?,
        ];
        Ok((context, request, signed_request, expected))
    };
    let (context, request, signed_request, expected) = prepare().map_err(|e| vec![e])?;

    let mut credentials = Credentials::new(
        context.credentials.access_key_id.clone(),
        Secret::new(context.credentials.secret_access_key.clone()),
    );
    if let Some(token) = &context.credentials.token {
        credentials = credentials.with_session_token(Secret::new(token.clone()));
    }
    let time = parse_rfc3339(&context.timestamp).map_err(|e| vec![e])?;
    let params = SigningParams {
        credentials: &credentials,
        region: &context.region,
        service: &context.service,
        time,
        uri_encoding: UriEncoding::Double,
        normalization: if context.normalize {
            PathNormalization::Enabled
        } else {
            PathNormalization::Disabled
        },
        payload: PayloadHash::Body(&request.body),
        content_sha256: if context.sign_body {
            ContentSha256Header::Add
        } else {
            ContentSha256Header::Omit
        },
        session_token_in_signature: !context.omit_session_token,
    };
    let signable = SignableRequest {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &request.headers,
    };
    let output = sign(&signable, &params).map_err(|e| vec![format!("sign failed: {e}")])?;

    let mut failures = Vec::new();
    let actual = [
        &output.canonical_request,
        &output.string_to_sign,
        &output.signature,
    ];
    let labels = ["canonical request", "string to sign", "signature"];
    for ((label, want), got) in labels.iter().zip(&expected).zip(actual) {
        // The expected files carry no trailing newline; tolerate one in
        // case a checkout adds it.
        let want = want.trim_end_matches(['\r', '\n']);
        if want != got {
            failures.push(format!(
                "{label} differs\n--- expected\n{want}\n--- got\n{got}"
            ));
        }
    }

    let mut got_added: Vec<(String, String)> = output.headers.clone();
    got_added.sort();
    let want_added = expected_added_headers(&signed_request, &request);
    if got_added != want_added {
        failures.push(format!(
            "added headers differ\n--- expected\n{want_added:#?}\n--- got\n{got_added:#?}"
        ));
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[test]
fn official_sigv4_suite_header_signing() {
    let (dir, source) = suite_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!(
            "AWS SigV4 test suite not found at {} ({source}): {e}.\n\
             Set SIGV4_TEST_SUITE to the suite's v4 folder (the one holding get-vanilla/, \
             post-vanilla/, ...), e.g. SIGV4_TEST_SUITE=/path/to/aws-signing-test-suite/v4 cargo test. \
             The suite is not vendored in this repository.",
            dir.display()
        ),
    };
    let mut cases: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= EXPECTED_CASES,
        "expected {EXPECTED_CASES} case folders in {}, found {}",
        dir.display(),
        cases.len()
    );

    let mut ran = 0;
    let mut failed_cases = 0;
    let mut report = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ran += 1;
        if let Err(failures) = run_case(case) {
            failed_cases += 1;
            for failure in failures {
                report.push(format!("[{name}] {failure}"));
            }
        }
    }
    assert!(
        report.is_empty(),
        "{failed_cases} of {ran} suite cases failed:\n\n{}",
        report.join("\n\n")
    );
    assert_eq!(
        ran, EXPECTED_CASES,
        "ran {ran} suite cases, expected exactly {EXPECTED_CASES}"
    );
}

#[test]
fn request_parser_handles_folds_spaces_and_bodies() {
    let parsed = parse_request(
        "GET /example space/?a=1 HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1\n  value2\n\nbody\n",
    )
    .unwrap();
    assert_eq!(parsed.method, "GET");
    assert_eq!(parsed.path, "/example space/");
    assert_eq!(parsed.query, "a=1");
    assert_eq!(
        parsed.headers,
        vec![
            ("Host".to_owned(), "example.amazonaws.com".to_owned()),
            ("My-Header1".to_owned(), "value1\n  value2".to_owned()),
        ]
    );
    assert_eq!(parsed.body, b"body\n");
    assert_eq!(
        parse_rfc3339("2015-08-30T12:36:00Z").unwrap(),
        Timestamp::from_secs(1_440_938_160)
    );
}
