//! Credentials without static keys, GCP and Azure, in real Envoy with the
//! filter: the GCP metadata server feeding the GCS stack (whose front
//! accepts only the tokens issued), and Microsoft Entra ID client
//! credentials and Azure managed identity (IMDS) against Azurite over
//! HTTPS with `--oauth basic`, the storage cluster being an upstream TLS
//! cluster that validates the test CA. Also: a credential endpoint down
//! when an importer starts, and a storage cluster that trusts another CA.
//! Needs ENVOY_BIN, AZURITE_BIN, GCS_EMULATOR_BIN and FALLBACK_CONFIG_WASM.

use envoy_test::azure::{Azurite, BearerBlobClient};
use envoy_test::control_plane::ControlPlane;
use envoy_test::envelope::{self, Envelope, VERSION};
use envoy_test::envoy::{Envoy, EnvoyConfig};
use envoy_test::identity::{
    self, AzureImds, EntraTokenEndpoint, GcpMetadata, LoggedRequest, AZURE_TENANT,
};
use envoy_test::plugin::PluginConfig;
use envoy_test::ports::free_port;
use envoy_test::stack::{
    echo_config, expect_healthy, expect_local_reply, expect_proxied, wait_status, Stack, BUCKET,
    CP_PATH, ECHO, NO_CONFIG, PREFIX, RETRY_INITIAL, RETRY_MAX,
};
use envoy_test::store::{StoreKind, STORAGE_CLUSTER};
use envoy_test::tls::TestPki;
use envoy_test::upstream::Upstream;
use envoy_test::wait::{self, TIMEOUT};
use envoy_test::workdir::WorkDir;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use envoy_test::{io, ok};

/// The DNS name the HTTPS Azurite's certificate holds besides `localhost`:
/// the storage cluster's SNI and required SAN.
const BLOB_HOST: &str = "blob.envoy-test.internal";

/// Azurite's `--debug` log in the work folder (request headers).
const AZURITE_DEBUG_LOG: &str = "azurite-debug.log";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Asserts none of `secrets` appears in `envoy`'s log.
#[track_caller]
fn expect_not_logged(envoy: &Envoy, what: &str, secrets: &[String]) {
    let log = envoy.log();
    for s in secrets {
        assert!(
            s.len() >= 8 && !log.contains(s.as_str()),
            "Envoy {} logged {what} ({} chars)",
            envoy.name(),
            s.len()
        );
    }
}

/// The filter's log lines (wasm) containing `needle`.
fn wasm_lines(envoy: &Envoy, needle: &str) -> Vec<String> {
    envoy
        .log_lines(needle)
        .into_iter()
        .filter(|l| l.contains("wasm log"))
        .collect()
}

// ---------------------------------------------------------------- Azure

/// HTTPS Azurite (`--oauth basic`, certificate from a test CA, container
/// `BUCKET` created), the control plane, the echo upstream, and Envoys
/// whose `object_storage` cluster is an upstream TLS cluster.
struct AzureHttps {
    pki: TestPki,
    blobs: BearerBlobClient,
    azurite: Azurite,
    cp: ControlPlane,
    echo: Upstream,
    envoy_bin: PathBuf,
    wasm: PathBuf,
    dir: WorkDir,
}

impl AzureHttps {
    fn start(name: &str, cp_up: bool) -> AzureHttps {
        let wasm = envoy_test::bins::require_wasm();
        let dir = WorkDir::new(name);
        let envoy_bin = envoy_test::bins::require_envoy();
        let pki = ok(TestPki::create(dir.path(), &[BLOB_HOST]));
        let azurite = ok(Azurite::start_https_oauth_debug(
            &envoy_test::bins::require_azurite(),
            &dir.join("azurite.log"),
            free_port(),
            &pki.server.cert_path,
            &pki.server.key_path,
            Some(&dir.join(AZURITE_DEBUG_LOG)),
        ));
        let blobs = azurite.bearer_client(pki.ca_path(), BUCKET);
        ok(blobs.create_container());
        let cp = ControlPlane::new_down(free_port(), CP_PATH);
        cp.set_config(&echo_config("r1"));
        if cp_up {
            io(cp.up());
        }
        let echo = io(Upstream::start(ECHO, free_port()));
        AzureHttps {
            pki,
            blobs,
            azurite,
            cp,
            echo,
            envoy_bin,
            wasm,
            dir,
        }
    }

    fn storage_url(&self) -> String {
        format!("azure://{}/{BUCKET}/{PREFIX}", envoy_test::azure::ACCOUNT)
    }

    fn object_key(&self) -> String {
        format!("{PREFIX}/{VERSION}/config.json")
    }

    /// The stored object's URL as the filter logs it.
    fn object_url(&self) -> String {
        format!(
            "azure://{}/{BUCKET}/{}",
            envoy_test::azure::ACCOUNT,
            self.object_key()
        )
    }

    /// `storage.endpoint` `https://127.0.0.1:<port>/devstoreaccount1`, no
    /// region, import and export off.
    fn plugin(&self) -> PluginConfig {
        let mut p = PluginConfig::new(&self.storage_url(), &self.azurite.endpoint());
        p.region = None;
        p
    }

    fn importer_plugin(&self) -> PluginConfig {
        let mut p = self.plugin();
        p.import = true;
        p.import_retry_initial_ms = Some(RETRY_INITIAL.as_millis() as u64);
        p.import_retry_max_ms = Some(RETRY_MAX.as_millis() as u64);
        p
    }

    fn exporter_plugin(&self, node_id: &str) -> PluginConfig {
        let mut p = self.plugin();
        p.export = true;
        p.node_id = Some(node_id.into());
        p
    }

    /// `object_storage` (TLS, trusting `trusted_ca`, SNI and SAN
    /// [`BLOB_HOST`]), `control_plane`, `echo_service`, the `credentials`
    /// clusters given, and the filter with `plugin`.
    fn config(
        &self,
        plugin: &PluginConfig,
        trusted_ca: &Path,
        credential_clusters: &[(&str, u16)],
    ) -> EnvoyConfig {
        let mut cfg = EnvoyConfig::new()
            .cluster(STORAGE_CLUSTER, self.azurite.port())
            .cluster_tls(STORAGE_CLUSTER, trusted_ca, BLOB_HOST, &[BLOB_HOST])
            .cluster("control_plane", self.cp.port())
            .cluster(ECHO, self.echo.port());
        for (name, port) in credential_clusters {
            cfg = cfg.cluster(name, *port);
        }
        cfg.wasm(&self.wasm, &plugin.to_json())
    }

    fn start_envoy(&self, name: &str, cfg: EnvoyConfig, env: &[(String, String)]) -> Envoy {
        ok(Envoy::start(
            &self.envoy_bin,
            name,
            cfg,
            self.dir.path(),
            env,
        ))
    }

    fn envelope(&self) -> Option<Result<Envelope, String>> {
        ok(self.blobs.get(&self.object_key())).map(|b| envelope::parse(&b))
    }

    fn wait_envelope(&self, revision: &str) -> Envelope {
        ok(wait::try_until(
            &format!("{} with revision {revision}", self.object_url()),
            TIMEOUT,
            || match self.envelope() {
                None => Err("no object".into()),
                Some(Err(e)) => Err(format!("not an envelope: {e}")),
                Some(Ok(e)) if e.revision == revision => Ok(e),
                Some(Ok(e)) => Err(format!("revision {}", e.revision)),
            },
        ))
    }

    /// Stores a valid snapshot of [`echo_config`]`(revision)`.
    fn write_snapshot(&self, revision: &str) {
        let env = envelope::build(
            VERSION,
            revision,
            "envoy-test",
            &envelope::format_rfc3339(SystemTime::now()),
            &echo_config(revision),
        );
        ok(self.blobs.put(&self.object_key(), env.as_bytes()));
    }
}

/// One request as Azurite's `--debug` log shows it.
#[derive(Debug)]
struct AzuriteRequest {
    method: String,
    url: String,
    headers: serde_json::Value,
}

impl AzuriteRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers[name].as_str()
    }
}

/// Every request Azurite logged (`RequestMethod=... RequestURL=...
/// RequestHeaders:{...}`) so far.
fn azurite_requests(az: &AzureHttps) -> Vec<AzuriteRequest> {
    let log = std::fs::read_to_string(az.dir.join(AZURITE_DEBUG_LOG)).unwrap_or_default();
    log.lines()
        .filter_map(|l| {
            let rest = l
                .split_once("BlobStorageContextMiddleware: RequestMethod=")?
                .1;
            let (method, rest) = rest.split_once(" RequestURL=")?;
            let (url, rest) = rest.split_once(" RequestHeaders:")?;
            let json = rest.rsplit_once("} ClientIP=")?.0;
            Some(AzuriteRequest {
                method: method.into(),
                url: url.into(),
                headers: serde_json::from_str(&format!("{json}}}")).ok()?,
            })
        })
        .collect()
}

/// The requests Azurite got with one of `tokens` as the Bearer token:
/// each must carry `x-ms-version: 2021-12-02` and `x-ms-date`, and no SAS.
#[track_caller]
fn bearer_requests(az: &AzureHttps, tokens: &[String]) -> Vec<AzuriteRequest> {
    let all = azurite_requests(az);
    assert!(!all.is_empty(), "Azurite's debug log shows no request");
    let ours: Vec<AzuriteRequest> = all
        .into_iter()
        .filter(|r| {
            r.header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| tokens.iter().any(|k| k == t))
        })
        .collect();
    for r in &ours {
        assert_eq!(
            r.header("x-ms-version"),
            Some("2021-12-02"),
            "{} {}",
            r.method,
            r.url
        );
        assert!(r.header("x-ms-date").is_some(), "{} {}", r.method, r.url);
        assert!(!r.url.contains("sig="), "a SAS with a token: {}", r.url);
    }
    ours
}

const SP_CLIENT_ID: &str = "app-e2e-fallback";
const SP_SECRET: &str = "sp-secret-e2e-7Qx~v2";
const SP_WRONG_SECRET: &str = "sp-secret-e2e-WRONG-9k";

/// An Entra token request as the filter must send it: a form POST to
/// `/<tenant>/oauth2/v2.0/token` with the client credentials grant for
/// Blob Storage.
#[track_caller]
fn expect_entra_form(r: &LoggedRequest, entra: &EntraTokenEndpoint, secret: &str) {
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", entra.token_path().as_str()),
        "{r:?}"
    );
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")),
        "{:?}",
        r.headers
    );
    let field = |k: &str| r.form_field(k);
    assert_eq!(
        (
            field("grant_type"),
            field("client_id"),
            field("client_secret"),
            field("scope")
        ),
        (
            Some("client_credentials".into()),
            Some(SP_CLIENT_ID.into()),
            Some(secret.into()),
            Some(identity::AZURE_STORAGE_SCOPE.into())
        )
    );
    assert!(
        field("client_assertion").is_none(),
        "a secret and an assertion"
    );
    // AZURE_AUTHORITY_HOST is the :authority.
    assert_eq!(r.header("host"), Some(entra.authority().as_str()));
}

/// Azure service principal, Azurite over HTTPS (`--oauth basic`), the
/// storage cluster validating the test CA (SNI and SAN
/// `blob.envoy-test.internal`); no account key, no SAS. An exporter with
/// `AZURE_TENANT_ID` / `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET` (and
/// `AZURE_AUTHORITY_HOST` at the fake) gets an Entra token through cluster
/// `azure_login` and stores r1 (lease create, read, conditional write, all
/// with the Bearer token and `x-ms-version: 2021-12-02`, as Azurite's
/// debug log shows); then, with the CP down, an importer with the
/// same variables imports and serves, while one with a wrong secret logs
/// Entra's 401 `invalid_client`, serves nothing (503), sends nothing to
/// storage, and keeps retrying with backoff. Neither secret nor any token
/// is logged.
#[test]
fn azure_service_principal_exports_and_imports_over_tls() {
    let az = AzureHttps::start("identity-azure-sp", true);
    let entra = io(EntraTokenEndpoint::start(
        AZURE_TENANT,
        SP_CLIENT_ID,
        SP_SECRET,
    ));
    let authority_host = entra.authority_host();
    let sp_env = |secret: &str| {
        env(&[
            ("AZURE_TENANT_ID", AZURE_TENANT),
            ("AZURE_CLIENT_ID", SP_CLIENT_ID),
            ("AZURE_CLIENT_SECRET", secret),
            ("AZURE_AUTHORITY_HOST", &authority_host),
        ])
    };
    let clusters = [("azure_login", entra.port())];

    let cfg = az.config(
        &az.exporter_plugin("sp-exporter"),
        az.pki.ca_path(),
        &clusters,
    );
    let mut exporter = az.start_envoy("exporter", cfg, &sp_env(SP_SECRET));
    let stored = az.wait_envelope("r1");
    assert_eq!(stored.exporter, "sp-exporter");
    ok(exporter.wait_log("exported revision r1", TIMEOUT));
    let source = ok(exporter.wait_log("storage credentials:", TIMEOUT));
    assert!(
        source.contains(&format!(
            "storage credentials: the service principal {SP_CLIENT_ID} of tenant {AZURE_TENANT} (AZURE_CLIENT_SECRET) through cluster azure_login"
        )),
        "{source}"
    );
    let asked = entra.requests();
    assert!(!asked.is_empty());
    for r in &asked {
        assert_eq!(r.status, 200, "{r:?}");
        expect_entra_form(r, &entra, SP_SECRET);
    }
    // Cached: one token for the whole export (an hour long).
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(exporter.upstream_rq_total("azure_login"), 1);
    assert!(exporter.cluster_stat(STORAGE_CLUSTER, "ssl.handshake") >= 1);
    assert_eq!(
        exporter.cluster_stat(STORAGE_CLUSTER, "ssl.fail_verify_error"),
        0
    );
    expect_healthy(&mut exporter);
    let exporter_tokens = entra.issued_tokens();
    // What reached Azurite: the lease create and the config write (If-None-Match: *)
    // with the Entra token, x-ms-version 2021-12-02; nothing SharedKey-signed.
    let sent = bearer_requests(&az, &exporter_tokens);
    let config_puts = sent
        .iter()
        .filter(|r| r.method == "PUT" && r.url.ends_with(&az.object_key()))
        .count();
    let lease_puts = sent
        .iter()
        .filter(|r| r.method == "PUT" && r.url.ends_with("election/lease.json"))
        .count();
    assert!(
        config_puts >= 1 && lease_puts >= 1,
        "{config_puts} config and {lease_puts} lease writes with the token: {sent:#?}"
    );
    assert!(
        azurite_requests(&az).iter().all(|r| !r
            .header("authorization")
            .is_some_and(|a| a.starts_with("SharedKey"))),
        "a SharedKey-signed request"
    );
    expect_not_logged(&exporter, "an Entra token", &exporter_tokens);
    expect_not_logged(&exporter, "the client secret", &[SP_SECRET.to_string()]);
    exporter.stop();

    az.cp.down();
    entra.clear_requests();
    let importer = az.importer_plugin();
    let mut good = az.start_envoy(
        "importer",
        az.config(&importer, az.pki.ca_path(), &clusters),
        &sp_env(SP_SECRET),
    );
    let mut bad = az.start_envoy(
        "importer-wrong-secret",
        az.config(&importer, az.pki.ca_path(), &clusters),
        &sp_env(SP_WRONG_SECRET),
    );
    ok(good.wait_log("imported revision r1", TIMEOUT));
    ok(wait_status(&good, "/echo/sp", 200, Duration::from_secs(2)));
    expect_proxied(&good, "GET", "/echo/sp", &[], ECHO);
    let importer_tokens: Vec<String> = entra
        .issued_tokens()
        .into_iter()
        .filter(|t| !exporter_tokens.contains(t))
        .collect();
    assert_eq!(importer_tokens.len(), 1, "one token for the import");
    let read = bearer_requests(&az, &importer_tokens);
    assert!(
        read.iter()
            .any(|r| r.method == "GET" && r.url.ends_with(&az.object_key())),
        "the import's GET with the token: {read:#?}"
    );

    let line = ok(bad.wait_log(
        "Microsoft Entra ID token endpoint answered 401: invalid_client",
        TIMEOUT,
    ));
    eprintln!("info: wrong client secret: {line}");
    assert!(
        line.contains("cannot get credentials") && line.contains("retrying with backoff"),
        "{line}"
    );
    assert!(line.contains("AADSTS7000215"), "{line}");
    // Retried with backoff (1 s, then 2 s): a few refused requests, not a
    // storm; nothing sent to storage, nothing served.
    let refused = wait::until("the wrong secret retried", TIMEOUT, || {
        let wrong: Vec<LoggedRequest> = entra
            .requests()
            .into_iter()
            .filter(|r| r.form_field("client_secret").as_deref() == Some(SP_WRONG_SECRET))
            .collect();
        if wrong.len() >= 2 {
            Ok(wrong)
        } else {
            Err(format!("{} refused requests", wrong.len()))
        }
    });
    for r in &refused {
        assert_eq!(r.status, 401, "{r:?}");
        expect_entra_form(r, &entra, SP_WRONG_SECRET);
    }
    let gap = refused[1]
        .at
        .duration_since(refused[0].at)
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(800),
        "retried after {gap:?}: no backoff"
    );
    expect_local_reply(&bad, "GET", "/echo/sp", &[], 503, NO_CONFIG);
    assert_eq!(
        bad.upstream_rq_attempts(STORAGE_CLUSTER),
        0,
        "storage was asked without a token"
    );
    assert!(wasm_lines(&bad, "imported revision").is_empty());

    for envoy in [&good, &bad] {
        expect_not_logged(envoy, "an Entra token", &entra.issued_tokens());
        expect_not_logged(
            envoy,
            "a client secret",
            &[SP_SECRET.to_string(), SP_WRONG_SECRET.to_string()],
        );
    }
    expect_healthy(&mut good);
    expect_healthy(&mut bad);
}

/// An IMDS token request as the filter must send it.
#[track_caller]
fn expect_imds_request(r: &LoggedRequest, client_id: Option<&str>) {
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    assert_eq!(
        (r.method.as_str(), path),
        ("GET", identity::AZURE_IMDS_TOKEN_PATH),
        "{r:?}"
    );
    assert_eq!(r.header("metadata"), Some("true"), "{r:?}");
    assert!(r.header("x-forwarded-for").is_none(), "{r:?}");
    let q = envoy_test::http::query_pairs(query);
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("api-version"), Some("2018-02-01"), "{r:?}");
    assert_eq!(
        get("resource"),
        Some(identity::AZURE_STORAGE_RESOURCE),
        "{r:?}"
    );
    assert_eq!(get("client_id"), client_id, "{r:?}");
    assert_eq!(r.header("host"), Some("169.254.169.254"), "{r:?}");
}

/// Azure managed identity through IMDS, over the same TLS setup: with the
/// CP down and no key, SAS or secret, a system-assigned importer and a
/// user-assigned one (`AZURE_CLIENT_ID`, which IMDS requires as
/// `client_id`) each get a token through cluster `azure_imds` and import
/// a stored snapshot, then serve it.
#[test]
fn azure_managed_identity_imports_system_and_user_assigned() {
    const USER_ASSIGNED: &str = "uami-e2e-1";
    let az = AzureHttps::start("identity-azure-mi", false);
    az.write_snapshot("r7");
    let system = io(AzureImds::start(None));
    let user = io(AzureImds::start(Some(USER_ASSIGNED)));
    let plugin = az.importer_plugin();
    let mut sys_envoy = az.start_envoy(
        "importer-system",
        az.config(&plugin, az.pki.ca_path(), &[("azure_imds", system.port())]),
        &[],
    );
    let mut user_envoy = az.start_envoy(
        "importer-user",
        az.config(&plugin, az.pki.ca_path(), &[("azure_imds", user.port())]),
        &env(&[("AZURE_CLIENT_ID", USER_ASSIGNED)]),
    );
    for (envoy, imds, id, words) in [
        (&mut sys_envoy, &system, None, "system-assigned".to_string()),
        (
            &mut user_envoy,
            &user,
            Some(USER_ASSIGNED),
            format!("user-assigned ({USER_ASSIGNED})"),
        ),
    ] {
        ok(envoy.wait_log("imported revision r7", TIMEOUT));
        ok(wait_status(envoy, "/echo/mi", 200, Duration::from_secs(2)));
        expect_proxied(envoy, "GET", "/echo/mi", &[], ECHO);
        let source = ok(envoy.wait_log("storage credentials:", TIMEOUT));
        assert!(
            source.contains(&format!(
                "storage credentials: the {words} managed identity through cluster azure_imds"
            )),
            "{source}"
        );
        let asked = imds.requests();
        assert_eq!(asked.len(), 1, "one token for the import: {asked:#?}");
        for r in &asked {
            assert_eq!(r.status, 200, "{r:?}");
            expect_imds_request(r, id);
        }
        assert_eq!(envoy.upstream_rq_total("azure_imds"), 1);
        let read = bearer_requests(&az, &imds.issued_tokens());
        assert!(
            read.iter()
                .any(|r| r.method == "GET" && r.url.ends_with(&az.object_key())),
            "the import's GET with the IMDS token: {read:#?}"
        );
        assert!(envoy.cluster_stat(STORAGE_CLUSTER, "ssl.handshake") >= 1);
        expect_not_logged(envoy, "an IMDS token", &imds.issued_tokens());
        expect_healthy(envoy);
    }
}

/// The credential endpoint down when an importer whose CP is down starts
/// (Azure IMDS, the port refusing connections): the filter logs `cannot
/// get credentials: ...; retrying with backoff` (retried after 1 s, then
/// 2 s), serves 503, asks storage nothing; once IMDS is back it gets a
/// token at its next retry, imports and serves.
#[test]
fn credential_endpoint_down_at_start_then_back() {
    let az = AzureHttps::start("identity-endpoint-down", false);
    az.write_snapshot("r3");
    let imds = io(AzureImds::start(None));
    imds.down();
    let mut envoy = az.start_envoy(
        "importer",
        az.config(
            &az.importer_plugin(),
            az.pki.ca_path(),
            &[("azure_imds", imds.port())],
        ),
        &[],
    );
    // The credential source's own line (the importer also logs `import
    // failed: cannot get credentials: ...` for the attempt it gave up).
    let lines = wait::until("two failed credential fetches", TIMEOUT, || {
        let lines = wasm_lines(&envoy, "; retrying with backoff");
        if lines.len() >= 2 {
            Ok(lines)
        } else {
            Err(format!("{lines:?}"))
        }
    });
    eprintln!("info: IMDS down: {}", lines[0]);
    for l in &lines {
        // Envoy's own 503 for the refused connection, named as no answer
        // from IMDS (not as IMDS answering 503), with Envoy's reason.
        assert!(
            l.contains(
                "cannot get credentials: no answer from the Azure instance metadata service (managed identity): the proxy got no answer from the upstream: upstream connect error"
            )
                && l.ends_with("; retrying with backoff"),
            "{l}"
        );
    }
    let gap = envoy_test::envoy::log_line_time(&lines[1]).unwrap_or(0.0)
        - envoy_test::envoy::log_line_time(&lines[0]).unwrap_or(0.0);
    assert!(gap >= 0.8, "retried after {gap:.2} s: no backoff");
    expect_local_reply(&envoy, "GET", "/echo/down", &[], 503, NO_CONFIG);
    assert_eq!(envoy.upstream_rq_attempts(STORAGE_CLUSTER), 0);
    assert_eq!(imds.request_count(), 0);

    io(imds.up());
    let back = Instant::now();
    ok(envoy.wait_log("imported revision r3", TIMEOUT));
    ok(wait_status(&envoy, "/echo/down", 200, TIMEOUT));
    eprintln!(
        "info: serving {:.1} s after IMDS came back",
        back.elapsed().as_secs_f64()
    );
    expect_proxied(&envoy, "GET", "/echo/down", &[], ECHO);
    let asked = imds.requests();
    assert!(
        !asked.is_empty() && asked.iter().all(|r| r.status == 200),
        "{asked:#?}"
    );
    expect_imds_request(&asked[0], None);
    expect_healthy(&mut envoy);
}

/// The same HTTPS Azurite, but the storage cluster trusts the OTHER
/// (unrelated) CA: the credentials come (IMDS), the TLS handshake fails
/// certificate verification, the import fails with a log line naming the
/// object, nothing is applied (503) and the attempt is retried; Envoy
/// counts `ssl.fail_verify_error` and no handshake.
#[test]
fn storage_cluster_trusting_another_ca_fails_the_import() {
    let az = AzureHttps::start("identity-wrong-ca", false);
    az.write_snapshot("r1");
    let imds = io(AzureImds::start(None));
    let mut envoy = az.start_envoy(
        "importer",
        az.config(
            &az.importer_plugin(),
            az.pki.other_ca_path(),
            &[("azure_imds", imds.port())],
        ),
        &[],
    );
    let line = ok(envoy.wait_log("import failed:", TIMEOUT));
    eprintln!("info: storage cluster trusting another CA: {line}");
    assert!(line.contains(&az.object_url()), "{line}");
    // Envoy does not tell the filter why the connection failed; the line
    // says where to look.
    assert!(
        line.contains("the proxy got no answer from the upstream")
            && line.contains("cluster.object_storage.ssl.fail_verify_error")
            && line.contains("nothing applied"),
        "{line}"
    );
    let failures = wait::until("retried imports", TIMEOUT, || {
        let lines = wasm_lines(&envoy, "import failed:");
        if lines.len() >= 2 {
            Ok(lines)
        } else {
            Err(format!("{lines:?}"))
        }
    });
    assert!(
        failures.iter().all(|l| l.contains(&az.object_url())),
        "{failures:#?}"
    );
    expect_local_reply(&envoy, "GET", "/echo/tls", &[], 503, NO_CONFIG);
    assert!(wasm_lines(&envoy, "imported revision").is_empty());
    let verify = envoy.cluster_stat(STORAGE_CLUSTER, "ssl.fail_verify_error");
    assert!(verify > 0, "ssl.fail_verify_error = {verify}");
    assert_eq!(envoy.cluster_stat(STORAGE_CLUSTER, "ssl.handshake"), 0);
    // The credentials were fine: the failure is the TLS hop alone.
    let asked = imds.requests();
    assert!(
        !asked.is_empty() && asked.iter().all(|r| r.status == 200),
        "{asked:#?}"
    );
    assert!(wasm_lines(&envoy, "cannot get credentials").is_empty());
    expect_not_logged(&envoy, "an IMDS token", &imds.issued_tokens());
    expect_healthy(&mut envoy);
}

// ------------------------------------------------------------------ GCP

/// GCP metadata server: no `GCP_SERVICE_ACCOUNT`, so the filter asks the
/// metadata server (cluster `gcp_metadata`, `Metadata-Flavor: Google`,
/// `:authority` metadata.google.internal) for tokens that live 10 s, and
/// the GCS front accepts only those. Over two lifetimes of exporter
/// traffic (lease renewed every second, r2 and r3 exported after the
/// first and second token expired) no request is refused, the token is
/// renewed ahead of expiry (more fetches than lifetimes elapsed; at half
/// the lifetime for such short tokens, as the README's "5 minutes before
/// expiry, never before half" gives) and cached (one fetch per half
/// lifetime, far fewer than object requests); the
/// service-account token endpoint is never asked. Then an importer with
/// the CP down imports r3 with a metadata token and serves it. No token is
/// logged.
#[test]
fn gcp_metadata_tokens_export_renew_and_import() {
    const LIFETIME: Duration = Duration::from_secs(10);
    let stack = Stack::on(StoreKind::Gcs, "identity-gcp-metadata", true);
    let gcs = stack.store.gcs();
    let md = io(GcpMetadata::start(gcs.front.accepted_tokens()));
    md.set_lifetime(LIFETIME);
    let mut plugin = stack.exporter_plugin("gcp-md-exporter");
    plugin.lease_ttl_ms = Some(5000);
    plugin.renew_interval_ms = Some(1000);
    let cfg = stack
        .envoy_config(&plugin)
        .cluster("gcp_metadata", md.port());
    let mut exporter = stack.start_envoy_config("exporter", cfg, &[]);
    let r1 = ok(stack.wait_envelope("r1", TIMEOUT));
    assert_eq!(r1.exporter, "gcp-md-exporter");
    let source = ok(exporter.wait_log("storage credentials:", TIMEOUT));
    assert!(
        source.contains(
            "storage credentials: the GCP metadata server (metadata.google.internal) through cluster gcp_metadata"
        ),
        "{source}"
    );
    let first_fetch = md.requests()[0].at;
    let since_first = || {
        SystemTime::now()
            .duration_since(first_fetch)
            .unwrap_or_default()
    };
    let authorised = || {
        let failures = stack.store.auth_failures();
        if !failures.is_empty() {
            return Err(failures.join("; "));
        }
        match wasm_lines(&exporter, "cannot get credentials").first() {
            Some(l) => Err(l.clone()),
            None => Ok(()),
        }
    };
    // Past the first token's expiry (10 s, renewed at 5 s), then r2; past
    // the second's, then r3.
    for (n, revision) in [(1u32, "r2"), (2, "r3")] {
        let until = LIFETIME * n + Duration::from_secs(1);
        wait::holds_for(
            "every GCS request authorised",
            until.saturating_sub(since_first()),
            authorised,
        );
        stack.cp.set_config(&echo_config(revision));
        let e = ok(stack.wait_envelope(revision, TIMEOUT));
        assert_eq!(e.term, r1.term, "the exporter lost its term");
        ok(authorised());
    }
    let elapsed = since_first().as_secs_f64();
    let fetches = md.requests();
    let objects = gcs.front.requests();
    let offsets: Vec<String> = fetches
        .iter()
        .map(|r| {
            let d = r.at.duration_since(first_fetch).unwrap_or_default();
            format!("{:.1}", d.as_secs_f64())
        })
        .collect();
    eprintln!(
        "info: {elapsed:.1} s with {LIFETIME:?} metadata tokens: {} token fetches (at {} s), {} object requests",
        fetches.len(),
        offsets.join(", "),
        objects.len()
    );
    // Renewed ahead of expiry: at half the lifetime for such short tokens
    // (5 minutes before expiry is earlier than 80 %, and never before
    // half), so each fetch follows the last by about half a lifetime.
    for w in fetches.windows(2) {
        let gap = w[1].at.duration_since(w[0].at).unwrap_or_default();
        assert!(
            gap >= LIFETIME * 2 / 5 && gap < LIFETIME * 4 / 5,
            "fetches {:.1} s apart with {LIFETIME:?} tokens",
            gap.as_secs_f64()
        );
    }
    for r in &fetches {
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.status),
            ("GET", identity::GCP_TOKEN_PATH, 200),
            "{r:?}"
        );
        assert_eq!(r.header("metadata-flavor"), Some("Google"), "{r:?}");
        assert_eq!(r.header("host"), Some("metadata.google.internal"), "{r:?}");
        assert!(r.header("authorization").is_none(), "{r:?}");
    }
    let lifetimes = (elapsed / LIFETIME.as_secs_f64()).floor() as usize;
    assert!(
        fetches.len() > lifetimes,
        "{} fetches in {elapsed:.1} s of {LIFETIME:?} tokens: not renewed",
        fetches.len()
    );
    assert!(
        fetches.len() <= (elapsed / (LIFETIME.as_secs_f64() / 2.0)).ceil() as usize + 1,
        "{} fetches in {elapsed:.1} s: renewed too often",
        fetches.len()
    );
    assert!(
        fetches.len() * 3 < objects.len(),
        "{} fetches for {} object requests: not cached",
        fetches.len(),
        objects.len()
    );
    assert_eq!(
        exporter.upstream_rq_total("gcp_metadata"),
        fetches.len() as u64
    );
    assert!(
        gcs.token.requests().is_empty(),
        "the service-account token endpoint was asked: {:?}",
        gcs.token.requests()
    );
    expect_not_logged(&exporter, "a metadata token", &md.issued_tokens());
    expect_healthy(&mut exporter);
    exporter.stop();

    stack.cp.down();
    let before = md.request_count();
    let cfg = stack
        .envoy_config(&stack.importer_plugin())
        .cluster("gcp_metadata", md.port());
    let mut importer = stack.start_envoy_config("importer", cfg, &[]);
    ok(importer.wait_log("imported revision r3", TIMEOUT));
    ok(wait_status(
        &importer,
        "/echo/md",
        200,
        Duration::from_secs(2),
    ));
    expect_proxied(&importer, "GET", "/echo/md", &[], ECHO);
    ok(importer.wait_log(
        "storage credentials: the GCP metadata server (metadata.google.internal) through cluster gcp_metadata",
        TIMEOUT,
    ));
    let asked = &md.requests()[before..];
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(asked[0].header("metadata-flavor"), Some("Google"));
    assert!(stack.store.auth_failures().is_empty());
    expect_not_logged(&importer, "a metadata token", &md.issued_tokens());
    expect_healthy(&mut importer);
}
