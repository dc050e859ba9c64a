//! AWS credentials without static keys, end to end: a real Envoy with the
//! filter gets its S3 credentials from the harness's fake EC2 instance
//! metadata service (IMDSv2) or ECS/EKS container credentials endpoint
//! (`envoy_test::identity`), which hand out real STS AssumeRole
//! credentials from moto; moto's S3 (auth mode) verifies each request's
//! SigV4 signature AND its session token. The object traffic goes through
//! a recording [`FaultFront`] (nothing is faulted), so every S3 request's
//! access key and session token can be matched with the credentials the
//! fake issued.
//!
//! - `imdsv2_credentials_export_and_import`: an exporter with no AWS
//!   secret in its environment exports with IMDS credentials (token PUT,
//!   role, credentials, the token on each GET), moto kept the object, and
//!   an importer with the CP down imports it with IMDS credentials and
//!   serves; no secret appears in Envoy's log (wasm at debug).
//! - `container_credentials_export_and_import`: the same with
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN`
//!   (the fake requires the token as `Authorization`).
//! - `short_lived_imds_credentials_are_renewed_while_exporting`: 12 s
//!   credentials over more than two lifetimes while the CP keeps changing:
//!   every revision is exported, the credentials are renewed from half
//!   their lifetime on (a few fetches, not one per request), and switched
//!   to. Then IMDS goes down: the old credentials keep being used while
//!   renewal fails (logged, with backoff), nothing goes to the store from
//!   a tenth of the lifetime before their expiry (a CP revision waits),
//!   and with IMDS back it is exported. No request used credentials within
//!   a tenth of their lifetime of expiry.
//! - `importer_waits_for_imds_then_imports`: IMDS down when an importer
//!   (CP down) starts: the failure is logged with backoff, nothing is
//!   served and nothing is sent to the store; IMDS back: import and 200.
//! - `envoy_signs_storage_requests`: `"storage": {"signing": "envoy"}`
//!   with Envoy's `aws_request_signing` upstream filter on the storage
//!   cluster, against s3s-fs (verifies SigV4): export (conditional PUTs
//!   signed with their `If-None-Match`) and import work with keys only
//!   Envoy's process has (the VM sees none); Envoy with a wrong secret gets
//!   403 `SignatureDoesNotMatch`, and without the signing filter (the VM
//!   seeing the right keys, which the filter must then not use) 403
//!   `AccessDenied`, both logged by the filter.
//! - `measure_time_to_first_200_static_keys_vs_imds` (ignored; run with
//!   `--ignored --nocapture`): an importer's time from Envoy start to the
//!   first 200 with the CP down, static keys vs IMDSv2, side by side.
//!
//! Needs ENVOY_BIN, MOTO_SERVER_BIN, S3S_FS_BIN and FALLBACK_CONFIG_WASM.

use envoy_test::control_plane::ControlPlane;
use envoy_test::envelope::{self, Envelope, VERSION};
use envoy_test::envoy::{Envoy, EnvoyConfig};
use envoy_test::faults::{FaultFront, FrontRequest};
use envoy_test::identity::{
    self, ContainerCredentials, Ec2Imds, LoggedRequest, IMDS_CREDENTIALS_PATH, IMDS_TOKEN_HEADER,
    IMDS_TOKEN_PATH, IMDS_TTL_HEADER,
};
use envoy_test::moto::{Moto, TemporaryCredentials};
use envoy_test::plugin::PluginConfig;
use envoy_test::ports::free_port;
use envoy_test::stack::{
    echo_config, expect_healthy, expect_local_reply, expect_proxied, wait_status, Stack, CP_PATH,
    ECHO, NO_CONFIG,
};
use envoy_test::store::{REGION, STORAGE_CLUSTER};
use envoy_test::upstream::Upstream;
use envoy_test::wait::{self, TIMEOUT};
use envoy_test::workdir::WorkDir;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BUCKET: &str = "fallback-configs";
const PREFIX: &str = "gateways/identity";
const ROLE: &str = "fallback-config-node";
const ECS_PATH: &str = "/v2/credentials/6f1e2b0c-envoy-test";
const ECS_TOKEN: &str = "ecs-auth-token-7c1d9f3e2a5b4c6d8e0f";
const IMDS_CLUSTER: &str = "aws_imds";
const ECS_CLUSTER: &str = "aws_container_credentials";
/// The chain's variables besides the static keys (all listed in
/// `host_env_keys`; the test sets only those it needs).
const CHAIN_VARS: [&str; 6] = [
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
];
const IMDS_LINE: &str =
    "storage credentials: the EC2 instance role (IMDSv2 at 169.254.169.254) through cluster aws_imds";

use envoy_test::{io, ok};

/// Which fake the filter gets its credentials from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Imds,
    Container,
}

/// moto (bucket, role), both credential fakes serving that role, a
/// recording front before moto, the CP (down, serving r1) and the echo
/// upstream; dropped after the Envoys a test owns.
struct Aws {
    imds: Ec2Imds,
    ecs: ContainerCredentials,
    front: FaultFront,
    cp: ControlPlane,
    echo: Upstream,
    moto: Moto,
    /// Taken together when the front started, to turn its `Instant`s into
    /// wall-clock times.
    epoch: (Instant, SystemTime),
    dir: WorkDir,
}

impl Aws {
    fn start(name: &str) -> Aws {
        // Fail on a missing binary before starting anything.
        envoy_test::bins::require_envoy();
        envoy_test::bins::require_wasm();
        let dir = WorkDir::new(name);
        let (moto, role) = ok(identity::moto_with_role(&dir, BUCKET, ROLE));
        let imds = io(Ec2Imds::start(role.clone(), ROLE));
        let ecs = io(ContainerCredentials::start(role, ECS_PATH, Some(ECS_TOKEN)));
        let front = io(FaultFront::start(moto.port()));
        let epoch = (Instant::now(), SystemTime::now());
        let cp = ControlPlane::new_down(free_port(), CP_PATH);
        cp.set_config(&echo_config("r1"));
        let echo = io(Upstream::start(ECHO, free_port()));
        Aws {
            imds,
            ecs,
            front,
            cp,
            echo,
            moto,
            epoch,
            dir,
        }
    }

    fn plugin(&self) -> PluginConfig {
        PluginConfig::new(&format!("s3://{BUCKET}/{PREFIX}"), &self.moto.endpoint())
    }

    fn exporter_plugin(&self, node: &str) -> PluginConfig {
        let mut p = self.plugin();
        p.export = true;
        p.node_id = Some(node.into());
        p
    }

    fn importer_plugin(&self) -> PluginConfig {
        let mut p = self.plugin();
        p.import = true;
        p.import_retry_initial_ms = Some(300);
        p.import_retry_max_ms = Some(1000);
        p
    }

    /// What Envoy needs in its environment to pick `source`: nothing for
    /// IMDS (no static keys is enough), the URI and token for container
    /// credentials. Never a static secret.
    fn env(&self, source: Source) -> Vec<(String, String)> {
        match source {
            Source::Imds => Vec::new(),
            Source::Container => vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                    self.ecs.full_uri(),
                ),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), ECS_TOKEN.into()),
            ],
        }
    }

    fn config(&self, plugin: &PluginConfig) -> EnvoyConfig {
        EnvoyConfig::new()
            .cluster(STORAGE_CLUSTER, self.front.port())
            .cluster("control_plane", self.cp.port())
            .cluster(ECHO, self.echo.port())
            .cluster(IMDS_CLUSTER, self.imds.port())
            .cluster(ECS_CLUSTER, self.ecs.port())
            .host_env_keys(&CHAIN_VARS)
            // The filter's own debug lines too: they must not hold secrets.
            .log_levels("info", Some("wasm:debug"))
            .wasm(&envoy_test::bins::require_wasm(), &plugin.to_json())
    }

    fn envoy(&self, name: &str, plugin: &PluginConfig, env: &[(String, String)]) -> Envoy {
        ok(Envoy::start(
            &envoy_test::bins::require_envoy(),
            name,
            self.config(plugin),
            self.dir.path(),
            env,
        ))
    }

    fn object_key(&self) -> String {
        format!("{PREFIX}/{VERSION}/config.json")
    }

    /// Writes an envelope of `revision` (signed by the harness's admin).
    fn write_snapshot(&self, revision: &str) {
        let body = envelope::build(
            VERSION,
            revision,
            "envoy-test",
            &envelope::format_rfc3339(SystemTime::now()),
            &echo_config(revision),
        );
        let r = ok(self.moto.object(
            self.moto.admin(),
            "PUT",
            BUCKET,
            &self.object_key(),
            &[("content-type", "application/json")],
            body.as_bytes(),
        ));
        assert_eq!(r.status, 200, "PUT of the snapshot: {}", r.summary());
    }

    /// The stored envelope, read by the harness with its admin key.
    fn read_envelope(&self) -> Result<Envelope, String> {
        let r = self.moto.object(
            self.moto.admin(),
            "GET",
            BUCKET,
            &self.object_key(),
            &[],
            b"",
        )?;
        if r.status != 200 {
            return Err(format!("GET {}: {}", self.object_key(), r.summary()));
        }
        envelope::parse(&r.body)
    }

    fn issued(&self, source: Source) -> Vec<TemporaryCredentials> {
        match source {
            Source::Imds => self.imds.issued_credentials(),
            Source::Container => self.ecs.issued_credentials(),
        }
    }

    fn fake_requests(&self, source: Source) -> Vec<LoggedRequest> {
        match source {
            Source::Imds => self.imds.requests(),
            Source::Container => self.ecs.requests(),
        }
    }

    /// Every secret the fakes handed out or required: secret keys and
    /// session tokens of both fakes, the IMDS session tokens, the
    /// container authorization token, moto's admin secret.
    fn secrets(&self) -> Vec<String> {
        let mut s: Vec<String> = Vec::new();
        for c in self
            .imds
            .issued_credentials()
            .into_iter()
            .chain(self.ecs.issued_credentials())
        {
            s.push(c.secret_access_key);
            s.push(c.session_token);
        }
        s.extend(self.imds.session_tokens());
        for r in self.imds.requests() {
            if let Some(t) = r.header(IMDS_TOKEN_HEADER) {
                s.push(t.to_string());
            }
        }
        s.push(ECS_TOKEN.into());
        s.push(self.moto.admin().secret.clone());
        s.retain(|x| !x.is_empty());
        s.sort();
        s.dedup();
        s
    }

    /// The wall-clock time of an `Instant` the front recorded.
    fn wall(&self, at: Instant) -> f64 {
        let t = match at.checked_duration_since(self.epoch.0) {
            Some(d) => self.epoch.1 + d,
            None => self.epoch.1 - self.epoch.0.duration_since(at),
        };
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

fn header<'a>(r: &'a FrontRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The access key id of a SigV4 `Authorization` header.
fn access_key_of(r: &FrontRequest) -> Option<&str> {
    header(r, "authorization")?
        .split("Credential=")
        .nth(1)?
        .split('/')
        .next()
}

/// Every finished S3 request the front saw since `from`, each with the
/// index (in `issued`) of the credentials it was signed with. Panics when
/// one is unsigned, signed with a key the fake did not issue, lacks that
/// key's session token, or was refused by moto (400/401/403: a bad
/// signature or session token).
#[track_caller]
fn audit_s3(
    front: &FaultFront,
    from: usize,
    issued: &[TemporaryCredentials],
) -> Vec<(FrontRequest, usize)> {
    let mut out = Vec::new();
    for r in front.log().into_iter().skip(from) {
        if r.finished.is_none() {
            continue;
        }
        let key = access_key_of(&r)
            .unwrap_or_else(|| panic!("unsigned S3 request: {} {:?}", r.summary(), r.headers));
        let i = issued
            .iter()
            .position(|c| c.access_key_id == key)
            .unwrap_or_else(|| {
                panic!(
                    "{} is signed with {key}, which the fake never issued ({:?})",
                    r.summary(),
                    issued
                )
            });
        assert_eq!(
            header(&r, "x-amz-security-token"),
            Some(issued[i].session_token.as_str()),
            "{} lacks the session token of {key}",
            r.summary()
        );
        assert!(
            header(&r, "authorization").is_some_and(|a| a.contains("x-amz-security-token")),
            "the session token is not among the signed headers of {}",
            r.summary()
        );
        assert!(
            !matches!(r.status, Some(400 | 401 | 403)),
            "moto refused {}",
            r.summary()
        );
        out.push((r, i));
    }
    out
}

/// No secret in `envoy`'s log.
#[track_caller]
fn assert_no_secrets(envoy: &Envoy, secrets: &[String]) {
    let log = envoy.log();
    for s in secrets {
        assert!(
            !log.contains(s.as_str()),
            "Envoy {} logged a secret ({}...): {}",
            envoy.name(),
            &s[..s.len().min(6)],
            log.lines()
                .find(|l| l.contains(s.as_str()))
                .unwrap_or_default()
        );
    }
}

/// Credential GETs a fake answered (IMDS: the role's credentials; the
/// container endpoint: every GET of its path).
fn credential_fetches(source: Source, requests: &[LoggedRequest]) -> Vec<LoggedRequest> {
    let role_path = format!("{IMDS_CREDENTIALS_PATH}{ROLE}");
    requests
        .iter()
        .filter(|r| match source {
            Source::Imds => r.method == "GET" && r.path == role_path,
            Source::Container => r.method == "GET" && r.path.starts_with(ECS_PATH),
        })
        .cloned()
        .collect()
}

/// IMDSv2 as the SDKs do it, for each fetch in `requests`: PUT of the
/// token (6-hour TTL), then the role list and the role's credentials,
/// both with that token; every answer 200.
#[track_caller]
fn assert_imdsv2_sequence(requests: &[LoggedRequest]) {
    assert!(
        !requests.is_empty() && requests.len().is_multiple_of(3),
        "IMDS requests: {:?}",
        requests
            .iter()
            .map(|r| format!("{} {} {}", r.method, r.path, r.status))
            .collect::<Vec<_>>()
    );
    for fetch in requests.chunks(3) {
        let [put, list, creds] = fetch else {
            unreachable!()
        };
        let show = |r: &LoggedRequest| format!("{} {} -> {}", r.method, r.path, r.status);
        assert_eq!(
            (put.method.as_str(), put.path.as_str(), put.status),
            ("PUT", IMDS_TOKEN_PATH, 200),
            "{}",
            show(put)
        );
        assert_eq!(put.header(IMDS_TTL_HEADER), Some("21600"), "{}", show(put));
        assert_eq!(put.header(IMDS_TOKEN_HEADER), None, "{}", show(put));
        assert_eq!(
            (list.method.as_str(), list.path.as_str(), list.status),
            ("GET", IMDS_CREDENTIALS_PATH, 200),
            "{}",
            show(list)
        );
        let token = list
            .header(IMDS_TOKEN_HEADER)
            .unwrap_or_else(|| panic!("{} without the session token", show(list)));
        assert!(!token.is_empty());
        assert_eq!(
            (creds.method.as_str(), creds.status),
            ("GET", 200),
            "{}",
            show(creds)
        );
        assert_eq!(creds.path, format!("{IMDS_CREDENTIALS_PATH}{ROLE}"));
        assert_eq!(
            creds.header(IMDS_TOKEN_HEADER),
            Some(token),
            "{} is not sent with the session token of the PUT before it",
            show(creds)
        );
        for r in fetch {
            assert!(
                r.header("x-forwarded-for").is_none(),
                "{} carries X-Forwarded-For",
                show(r)
            );
        }
    }
}

/// Exporter then importer, both with credentials from `source` only.
fn export_then_import(source: Source, name: &str) {
    let s = Aws::start(name);
    ok(s.cp.up().map_err(|e| e.to_string()));
    let env = s.env(source);
    assert!(
        !env.iter().any(|(k, _)| k.starts_with("AWS_SECRET")
            || k == "AWS_ACCESS_KEY_ID"
            || k == "AWS_SESSION_TOKEN"),
        "{env:?}"
    );
    let source_line = match source {
        Source::Imds => IMDS_LINE.to_string(),
        Source::Container => format!(
            "storage credentials: container credentials (http://{}{ECS_PATH}) through cluster {ECS_CLUSTER}",
            s.ecs.authority()
        ),
    };

    // The exporter.
    let mut exporter = s.envoy("exporter", &s.exporter_plugin("identity-exporter"), &env);
    ok(exporter.wait_log("exported revision r1", TIMEOUT));
    let line = ok(exporter.wait_log(&source_line, Duration::from_secs(1)));
    assert!(line.contains("][info][wasm]"), "{line}");
    ok(exporter.wait_log(
        "storage credentials obtained, valid until",
        Duration::from_secs(1),
    ));
    let stored = ok(s.read_envelope());
    assert_eq!(
        (stored.revision.as_str(), stored.exporter.as_str()),
        ("r1", "identity-exporter"),
        "{stored:?}"
    );
    assert_eq!(stored.config_raw, echo_config("r1").trim());
    let issued = s.issued(source);
    let used = audit_s3(&s.front, 0, &issued);
    assert!(
        used.iter().any(|(r, _)| r.method == "PUT"
            && r.path.ends_with("/config.json")
            && r.status == Some(200)),
        "no accepted PUT of config.json: {:?}",
        used.iter().map(|(r, _)| r.summary()).collect::<Vec<_>>()
    );
    let exporter_requests = s.fake_requests(source);
    let fetches = credential_fetches(source, &exporter_requests);
    assert_eq!(
        fetches.len(),
        1,
        "one credential fetch per process for one-hour credentials"
    );
    match source {
        Source::Imds => assert_imdsv2_sequence(&exporter_requests),
        Source::Container => {
            for r in &exporter_requests {
                assert_eq!(
                    (r.method.as_str(), r.path.as_str(), r.status),
                    ("GET", ECS_PATH, 200)
                );
                assert_eq!(r.header("authorization"), Some(ECS_TOKEN), "{:?}", r.path);
            }
            // The chain stops at container credentials: IMDS is not asked.
            assert_eq!(s.imds.request_count(), 0, "{:?}", s.imds.requests());
        }
    }
    expect_healthy(&mut exporter);
    exporter.stop();
    assert_no_secrets(&exporter, &s.secrets());

    // The importer, CP down, with credentials from the same source.
    s.cp.down();
    let before = s.front.request_count();
    let fake_before = s.fake_requests(source).len();
    let mut importer = s.envoy("importer", &s.importer_plugin(), &env);
    ok(importer.wait_log(
        &format!("imported revision r1 (version {VERSION}) from s3://{BUCKET}/{PREFIX}/{VERSION}/config.json"),
        TIMEOUT,
    ));
    ok(importer.wait_log(&source_line, Duration::from_secs(1)));
    ok(wait_status(
        &importer,
        "/echo/identity",
        200,
        Duration::from_secs(2),
    ));
    expect_proxied(&importer, "GET", "/echo/identity", &[], ECHO);
    let issued = s.issued(source);
    let reads = audit_s3(&s.front, before, &issued);
    assert!(
        reads
            .iter()
            .any(|(r, i)| r.method == "GET" && r.status == Some(200) && *i == issued.len() - 1),
        "the importer read config.json with the credentials fetched for it: {:?}",
        reads.iter().map(|(r, _)| r.summary()).collect::<Vec<_>>()
    );
    let importer_requests: Vec<LoggedRequest> = s
        .fake_requests(source)
        .into_iter()
        .skip(fake_before)
        .collect();
    assert_eq!(credential_fetches(source, &importer_requests).len(), 1);
    if source == Source::Imds {
        assert_imdsv2_sequence(&importer_requests);
    }
    expect_healthy(&mut importer);
    assert_no_secrets(&importer, &s.secrets());
}

#[test]
fn imdsv2_credentials_export_and_import() {
    export_then_import(Source::Imds, "identity-aws-imds");
}

#[test]
fn container_credentials_export_and_import() {
    export_then_import(Source::Container, "identity-aws-ecs");
}

/// The filter's lines for failed IMDS fetches (the fake is down, so
/// Envoy answers for it), checked for their form: `cannot get
/// credentials: no answer from the EC2 instance metadata service
/// (IMDSv2): the proxy got no answer from the upstream: ...; retrying with
/// backoff`, never as IMDS having answered.
#[track_caller]
fn imds_failures(envoy: &Envoy) -> Vec<String> {
    let lines = envoy.log_lines("fallback_config: cannot get credentials: ");
    for l in &lines {
        assert!(
            l.contains(
                "cannot get credentials: no answer from the EC2 instance metadata service (IMDSv2): the proxy got no answer from the upstream"
            ) && l.ends_with("; retrying with backoff")
                && l.contains("][warning][wasm]"),
            "{l}"
        );
    }
    lines
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Polls until the wall clock passes `at` (Unix seconds).
fn wait_until_wall(what: &str, at: f64) {
    let timeout = Duration::from_secs_f64((at - unix(SystemTime::now())).max(0.0) + 2.0);
    wait::until(what, timeout, || {
        let now = unix(SystemTime::now());
        if now >= at {
            Ok(())
        } else {
            Err(format!("{:.1} s to go", at - now))
        }
    });
}

/// Sets CP revision `rev` and waits until the exporter exported it (and
/// moto holds it); returns how long that took.
#[track_caller]
fn export_revision(s: &Aws, envoy: &Envoy, rev: &str, timeout: Duration) -> Duration {
    s.cp.set_config(&echo_config(rev));
    let asked = Instant::now();
    ok(envoy.wait_log(&format!("exported revision {rev} "), timeout));
    let stored = ok(s.read_envelope());
    assert_eq!(stored.revision, rev);
    asked.elapsed()
}

#[test]
fn short_lived_imds_credentials_are_renewed_while_exporting() {
    const LIFETIME: Duration = Duration::from_secs(12);
    let life = LIFETIME.as_secs_f64();
    let s = Aws::start("identity-aws-renewal");
    s.imds.set_lifetime(LIFETIME);
    ok(s.cp.up().map_err(|e| e.to_string()));
    // Lease renewals every second add S3 requests between the exports.
    let mut p = s.exporter_plugin("renewing-exporter");
    p.lease_ttl_ms = Some(3000);
    p.renew_interval_ms = Some(1000);
    let mut envoy = s.envoy("exporter", &p, &s.env(Source::Imds));
    ok(envoy.wait_log("exported revision r1", TIMEOUT));

    // Phase 1: more than two lifetimes, a new CP revision every 3 s.
    let start = Instant::now();
    let mut revision = 1;
    while start.elapsed() < LIFETIME * 2 + Duration::from_secs(2) {
        revision += 1;
        let asked = Instant::now();
        let took = export_revision(&s, &envoy, &format!("r{revision}"), TIMEOUT);
        assert!(
            took < Duration::from_secs(5),
            "r{revision} took {took:?} to be exported"
        );
        let next = asked + Duration::from_secs(3);
        wait::until("the next CP change", Duration::from_secs(4), || {
            if Instant::now() >= next {
                Ok(())
            } else {
                Err("not yet".into())
            }
        });
    }
    let elapsed = start.elapsed();
    let issued = s.issued(Source::Imds);
    let requests = s.imds.requests();
    assert_imdsv2_sequence(&requests);
    let fetches = credential_fetches(Source::Imds, &requests);
    let used = audit_s3(&s.front, 0, &issued);
    let obtained = envoy.log_lines("storage credentials obtained, valid until");

    // Renewed: several fetches, each from half the lifetime on (the
    // policy for short lifetimes), none later than 80 % (+ a tick). A
    // fetch starts with its token PUT; the filter counts the lifetime from
    // a little before (the tick that asked; `Expiration` is whole seconds),
    // so a renewal may come a few hundred ms before half.
    let puts: Vec<SystemTime> = requests
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.at)
        .collect();
    let gaps: Vec<f64> = puts.windows(2).map(|w| unix(w[1]) - unix(w[0])).collect();
    let summary = format!(
        "{} fetches over {:.1} s ({} CP revisions exported, {} S3 requests), gaps {gaps:.2?}",
        fetches.len(),
        elapsed.as_secs_f64(),
        revision,
        used.len()
    );
    eprintln!("renewal: {summary}");
    assert!(fetches.len() >= 4, "too few renewals: {summary}");
    for g in &gaps {
        assert!(
            *g >= life / 2.0 - 0.6 && *g <= life * 0.8 + 1.5,
            "a renewal {g:.2} s after the previous fetch: {summary}"
        );
    }
    assert_eq!(obtained.len(), fetches.len(), "{obtained:#?}");
    // Not one fetch per request.
    assert!(
        used.len() >= 4 * fetches.len(),
        "the credentials are not reused: {summary}"
    );
    // The renewed credentials were used (every set but perhaps the last).
    let mut sets: Vec<usize> = used.iter().map(|(_, i)| *i).collect();
    sets.sort();
    sets.dedup();
    assert!(
        sets.len() + 1 >= fetches.len() && sets.len() >= 3,
        "used credential sets {sets:?}: {summary}"
    );

    // Phase 2: IMDS goes down right after a renewal. The filter keeps
    // using those credentials while renewing fails, stops a tenth of the
    // lifetime before they expire (nothing at all goes to the store then,
    // an export waits), and resumes once IMDS is back.
    let n = fetches.len();
    wait::until("the next renewal", LIFETIME, || {
        match credential_fetches(Source::Imds, &s.imds.requests()).len() {
            m if m > n => Ok(()),
            m => Err(format!("{m} fetches")),
        }
    });
    s.imds.down();
    let last_put = s
        .imds
        .requests()
        .iter()
        .rev()
        .find(|r| r.method == "PUT")
        .map(|r| unix(r.at))
        .unwrap_or_else(|| panic!("no token PUT"));
    let usable_until = last_put + life * 0.9;
    revision += 1;
    let during = format!("r{revision}");
    export_revision(&s, &envoy, &during, Duration::from_secs(4));
    wait_until_wall("the credentials to be unusable", usable_until + 0.5);
    revision += 1;
    let pending = format!("r{revision}");
    s.cp.set_config(&echo_config(&pending));
    let expired = envelope::parse_rfc3339(
        &s.issued(Source::Imds)
            .last()
            .unwrap_or_else(|| panic!("no credentials"))
            .expiration,
    )
    .unwrap_or_else(|| panic!("Expiration"));
    wait_until_wall("the credentials to expire", expired.max(usable_until + 1.5));
    let failures = imds_failures(&envoy);
    assert!(failures.len() >= 2, "renewal failures: {failures:#?}");
    assert!(
        envoy
            .log_lines(&format!("exported revision {pending} "))
            .is_empty(),
        "{pending} was exported while the credentials were unusable"
    );
    let now = unix(SystemTime::now());
    let front = s.front.log();
    let kept_using = front
        .iter()
        .filter(|r| s.wall(r.received) > last_put + life / 2.0 + 0.5)
        .filter(|r| s.wall(r.received) < usable_until - 0.5)
        .count();
    let late: Vec<String> = front
        .iter()
        .filter(|r| {
            let at = s.wall(r.received);
            at > usable_until + 0.3 && at < now
        })
        .map(FrontRequest::summary)
        .collect();
    eprintln!(
        "outage: {} failures, {kept_using} S3 requests with the old credentials while renewal failed, {} after {:.1} s",
        failures.len(),
        late.len(),
        usable_until - last_put
    );
    assert!(
        kept_using >= 2,
        "the old credentials were not used while renewal failed"
    );
    assert!(
        late.is_empty(),
        "S3 requests after the credentials became unusable: {late:#?}"
    );
    io(s.imds.up());
    let up = Instant::now();
    ok(envoy.wait_log(&format!("exported revision {pending} "), TIMEOUT));
    eprintln!(
        "IMDS back: {pending} exported after {:.2} s",
        up.elapsed().as_secs_f64()
    );
    assert_eq!(ok(s.read_envelope()).revision, pending);

    // Every request, both phases: signed with issued credentials and
    // their session token, accepted, and never within a tenth of the
    // lifetime of the expiry the fake reported (0.3 s allowed for the
    // hop to the front).
    let issued = s.issued(Source::Imds);
    let margin = life / 10.0;
    for (r, i) in audit_s3(&s.front, 0, &issued) {
        let expires = envelope::parse_rfc3339(&issued[i].expiration)
            .unwrap_or_else(|| panic!("Expiration {}", issued[i].expiration));
        let sent = s.wall(r.received);
        assert!(
            sent <= expires - margin + 0.3,
            "{} used credentials {:.2} s before their expiry (the filter stops {margin:.1} s before)",
            r.summary(),
            expires - sent
        );
    }
    expect_healthy(&mut envoy);
    assert_no_secrets(&envoy, &s.secrets());
}

#[test]
fn importer_waits_for_imds_then_imports() {
    let s = Aws::start("identity-aws-imds-down");
    s.write_snapshot("r1");
    s.imds.down();
    let mut envoy = s.envoy("importer", &s.importer_plugin(), &s.env(Source::Imds));
    ok(envoy.wait_log(IMDS_LINE, TIMEOUT));
    // Two failed fetches (the backoff: 1 s, then 2 s).
    let failures = wait::until("two failed credential fetches", TIMEOUT, || {
        let lines = imds_failures(&envoy);
        if lines.len() >= 2 {
            Ok(lines)
        } else {
            Err(format!("{lines:#?}"))
        }
    });
    let gap = envoy_test::envoy::log_line_time(&failures[1]).unwrap_or(0.0)
        - envoy_test::envoy::log_line_time(&failures[0]).unwrap_or(0.0);
    assert!(
        gap >= 0.8,
        "the second fetch came {gap:.2} s after the first (backoff 1 s)"
    );
    expect_local_reply(&envoy, "GET", "/echo/down", &[], 503, NO_CONFIG);
    // Without credentials nothing goes to the store (no unsigned request).
    assert_eq!(
        s.front.request_count(),
        0,
        "{:?}",
        s.front
            .log()
            .iter()
            .map(FrontRequest::summary)
            .collect::<Vec<_>>()
    );
    assert_eq!(s.imds.request_count(), 0, "the fake was down");

    io(s.imds.up());
    let up = Instant::now();
    ok(envoy.wait_log("imported revision r1", TIMEOUT));
    ok(wait_status(&envoy, "/echo/up", 200, Duration::from_secs(2)));
    let took = up.elapsed();
    expect_proxied(&envoy, "GET", "/echo/up", &[], ECHO);
    eprintln!("IMDS back up -> serving in {:.2} s", took.as_secs_f64());
    // The next retry is at most 4 s after the second failure.
    assert!(
        took < Duration::from_secs(7),
        "{took:?} from IMDS up to 200"
    );
    assert_imdsv2_sequence(&s.imds.requests());
    let issued = s.issued(Source::Imds);
    let reads = audit_s3(&s.front, 0, &issued);
    assert!(reads
        .iter()
        .any(|(r, _)| r.method == "GET" && r.status == Some(200)));
    expect_healthy(&mut envoy);
    assert_no_secrets(&envoy, &s.secrets());
}

/// The static AWS keys: Envoy's signer reads them from its process
/// environment; hidden from the VM (`host_env_keys`).
const STATIC_KEYS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];
const ENVOY_SIGNS_LINE: &str = "storage credentials: Envoy: requests go out unsigned and the aws_request_signing filter of cluster object_storage signs them";

#[test]
fn envoy_signs_storage_requests() {
    let stack = Stack::with_faults(
        envoy_test::store::StoreKind::S3,
        "identity-aws-envoy-signs",
        true,
    );
    let signed_config = |p: &PluginConfig| {
        stack
            .envoy_config(p)
            .cluster_aws_signing(STORAGE_CLUSTER, REGION, true)
            .hide_host_env_keys(&STATIC_KEYS)
    };

    // Export: config.json and the lease, conditional PUTs signed by Envoy.
    let p = stack.exporter_plugin("envoy-signed").with_signing("envoy");
    let mut exporter = stack.start_envoy_config("exporter", signed_config(&p), &stack.store_env());
    ok(exporter.wait_log("exported revision r1", TIMEOUT));
    ok(exporter.wait_log(ENVOY_SIGNS_LINE, Duration::from_secs(1)));
    let stored = ok(stack.wait_envelope("r1", Duration::from_secs(2)));
    assert_eq!(stored.exporter, "envoy-signed");
    let puts: Vec<FrontRequest> = stack
        .faults()
        .log()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert!(
        puts.iter().any(|r| header(r, "if-none-match") == Some("*")
            && header(r, "authorization").is_some_and(|a| a.contains("if-none-match"))),
        "no create-if-absent PUT signed with its If-None-Match: {:?}",
        puts.iter()
            .map(|r| (r.summary(), r.headers.clone()))
            .collect::<Vec<_>>()
    );
    for r in stack.faults().log() {
        assert_eq!(
            access_key_of(&r),
            Some(envoy_test::store::ACCESS_KEY),
            "{} is not signed with Envoy's key",
            r.summary()
        );
        assert!(
            !matches!(r.status, Some(401 | 403)),
            "s3s-fs refused {}",
            r.summary()
        );
    }
    assert!(
        exporter.cluster_stat(STORAGE_CLUSTER, "aws_request_signing.signing_added") >= 2,
        "signing_added"
    );
    expect_healthy(&mut exporter);
    exporter.stop();

    // Import with the CP down, side by side: Envoy with the right key,
    // Envoy with a wrong secret, and (control) no signing filter at all.
    stack.cp.down();
    let importer = stack.importer_plugin().with_signing("envoy");
    let mut good =
        stack.start_envoy_config("importer", signed_config(&importer), &stack.store_env());
    let wrong = stack.start_envoy_config(
        "importer-wrong-secret",
        signed_config(&importer),
        &stack.aws_env_with_secret("not-the-right-secret"),
    );
    // The control's VM DOES see the right static keys: with "envoy" the
    // filter must not use them, so without Envoy's signer s3s-fs refuses.
    let unsigned = stack.start_envoy_config(
        "importer-no-signer",
        stack.envoy_config(&importer),
        &stack.store_env(),
    );
    ok(good.wait_log("imported revision r1", TIMEOUT));
    ok(wait_status(
        &good,
        "/echo/signed",
        200,
        Duration::from_secs(2),
    ));
    expect_proxied(&good, "GET", "/echo/signed", &[], ECHO);
    expect_healthy(&mut good);
    for envoy in [&wrong, &unsigned] {
        let line = ok(envoy.wait_log("import failed: storage answered 403", TIMEOUT));
        ok(envoy.wait_log(ENVOY_SIGNS_LINE, Duration::from_secs(1)));
        expect_local_reply(envoy, "GET", "/echo/refused", &[], 503, NO_CONFIG);
        assert!(
            envoy.log_lines("imported revision").is_empty(),
            "{}",
            envoy.name()
        );
        eprintln!("{}: {line}", envoy.name());
    }
    assert!(
        ok(wrong.wait_log("import failed: storage answered 403", TIMEOUT))
            .contains("SignatureDoesNotMatch"),
        "Envoy signed with the wrong secret"
    );
    assert!(
        ok(unsigned.wait_log("import failed: storage answered 403", TIMEOUT))
            .contains("AccessDenied"),
        "the filter sent the request unsigned"
    );
}

/// Seconds from `Envoy::start` to admin `/ready` 200, and to the first
/// 200 through the route.
#[derive(Clone, Copy, Debug)]
struct Timing {
    ready: f64,
    first_200: f64,
}

/// Starts one importer (CP down) with static keys or IMDSv2 and times it.
fn time_to_first_200(s: &Aws, static_env: &[(String, String)], imds: bool, run: usize) -> Timing {
    let env = if imds {
        s.env(Source::Imds)
    } else {
        static_env.to_vec()
    };
    let name = format!("{}-{run}", if imds { "imds" } else { "static" });
    let cfg = s.config(&s.importer_plugin());
    let port = cfg.listener_port;
    let t0 = Instant::now();
    let mut envoy = ok(Envoy::start(
        &envoy_test::bins::require_envoy(),
        &name,
        cfg,
        s.dir.path(),
        &env,
    ));
    let ready = t0.elapsed().as_secs_f64();
    let first_200 = loop {
        if let Ok(r) = envoy_test::http::get(port, "/echo/measure", &[]) {
            if r.status == 200 {
                break t0.elapsed().as_secs_f64();
            }
        }
        assert!(t0.elapsed() < TIMEOUT, "{name}: no 200 within {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    ok(envoy.wait_log("imported revision r1", Duration::from_secs(1)));
    let source = if imds {
        IMDS_LINE
    } else {
        "storage credentials: static keys"
    };
    ok(envoy.wait_log(source, Duration::from_secs(1)));
    envoy.stop();
    Timing { ready, first_200 }
}

#[test]
#[ignore]
fn measure_time_to_first_200_static_keys_vs_imds() {
    const RUNS: usize = 5;
    let s = Aws::start("identity-aws-measure");
    s.write_snapshot("r1");
    let key = ok(s
        .moto
        .create_user("static-node", &identity::s3_bucket_policy(BUCKET)));
    let static_env = key.env(&s.moto.endpoint());
    // Alternating, so that drift in the machine's load hits both alike.
    let rows: Vec<(Timing, Timing)> = (0..RUNS)
        .map(|run| {
            let st = time_to_first_200(&s, &static_env, false, run);
            let im = time_to_first_200(&s, &static_env, true, run);
            (st, im)
        })
        .collect();
    println!("importer, CP down: seconds from Envoy start (ready = admin /ready 200; first 200 through the route)");
    println!(
        "run    | static ready | static first 200 | IMDSv2 ready | IMDSv2 first 200 | IMDSv2 - static"
    );
    for (i, (st, im)) in rows.iter().enumerate() {
        println!(
            "{i:6} | {:12.3} | {:16.3} | {:12.3} | {:16.3} | {:+.3}",
            st.ready,
            st.first_200,
            im.ready,
            im.first_200,
            im.first_200 - st.first_200
        );
    }
    let median = |f: &dyn Fn(&(Timing, Timing)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median | {:12.3} | {:16.3} | {:12.3} | {:16.3} | {:+.3}",
        median(&|r| r.0.ready),
        median(&|r| r.0.first_200),
        median(&|r| r.1.ready),
        median(&|r| r.1.first_200),
        median(&|r| r.1.first_200 - r.0.first_200)
    );
    println!(
        "IMDS: {} credential fetches for {RUNS} importers",
        credential_fetches(Source::Imds, &s.imds.requests()).len()
    );
}
