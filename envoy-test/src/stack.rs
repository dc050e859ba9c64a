//! Everything a scenario needs, wired together: an object store (s3s-fs,
//! Azurite or the GCS stack, see [`crate::store`]) with a bucket, the fake
//! control plane, two echo upstreams, and a way to start Envoys with the
//! filter pointed at them.
//!
//! Field order matters: servers are dropped (stopped) before the work
//! folder is removed. Envoys are owned by the test and dropped first.

use crate::control_plane::{gateway_config, ControlPlane, Route};
use crate::election::Lease;
use crate::envelope::{self, Envelope, VERSION};
use crate::envoy::{Envoy, EnvoyConfig};
use crate::http::Response;
use crate::plugin::PluginConfig;
use crate::s3::S3Server;
use crate::store::{Store, StoreKind};
use crate::upstream::Upstream;
use crate::workdir::WorkDir;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use crate::store::{ACCESS_KEY, REGION, SECRET_KEY};

/// The bucket (S3, GCS) or container (Azure) scenarios use.
pub const BUCKET: &str = "fallback-configs";
/// The key prefix scenarios use.
pub const PREFIX: &str = "gateways/e2e";
/// CP path.
pub const CP_PATH: &str = "/v1/config";
/// Name of the main upstream (and its cluster).
pub const ECHO: &str = "echo_service";
/// Name of the second upstream (and its cluster).
pub const OTHER: &str = "other_service";
/// The filter's poll interval in scenarios.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// `{"revision": rev, "routes": [echo: /echo -> echo_service]}`.
pub fn echo_config(revision: &str) -> String {
    gateway_config(revision, &[Route::new("echo", &["/echo"], ECHO)])
}

/// The servers around the Envoys under test.
pub struct Stack {
    pub store: Store,
    pub cp: ControlPlane,
    pub echo: Upstream,
    pub other: Upstream,
    envoy_bin: PathBuf,
    wasm: Option<PathBuf>,
    pub dir: WorkDir,
}

impl Stack {
    /// For S3 scenarios: [`Stack::on`] with [`StoreKind::S3`].
    pub fn new(test_name: &str, cp_up: bool) -> Stack {
        Stack::on(StoreKind::S3, test_name, cp_up)
    }

    /// For scenarios on the store `kind`: requires Envoy, the store's
    /// binary AND the wasm (fails naming the env var otherwise). The CP
    /// serves [`echo_config`]`("r1")`; it is up when `cp_up`, else down
    /// (and [`ControlPlane::up`] brings it). The work folder is
    /// `<test_name>-<kind>` for the non-S3 stores.
    pub fn on(kind: StoreKind, test_name: &str, cp_up: bool) -> Stack {
        let envoy_bin = crate::bins::require_envoy();
        let wasm = crate::bins::require_wasm();
        Stack::build(kind, test_name, cp_up, envoy_bin, Some(wasm))
    }

    /// For harness self-tests: Envoy and s3s-fs only, no wasm.
    pub fn without_wasm(test_name: &str, cp_up: bool) -> Stack {
        Stack::without_wasm_on(StoreKind::S3, test_name, cp_up)
    }

    /// For harness self-tests: Envoy and the store of `kind`, no wasm.
    pub fn without_wasm_on(kind: StoreKind, test_name: &str, cp_up: bool) -> Stack {
        let envoy_bin = crate::bins::require_envoy();
        Stack::build(kind, test_name, cp_up, envoy_bin, None)
    }

    fn build(
        kind: StoreKind,
        test_name: &str,
        cp_up: bool,
        envoy_bin: PathBuf,
        wasm: Option<PathBuf>,
    ) -> Stack {
        let dir = match kind {
            StoreKind::S3 => WorkDir::new(test_name),
            _ => WorkDir::new(&format!("{test_name}-{}", kind.name())),
        };
        let store = Store::start(kind, &dir, BUCKET);
        let cp = ControlPlane::new_down(crate::ports::free_port(), CP_PATH);
        cp.set_config(&echo_config("r1"));
        if cp_up {
            cp.up().unwrap_or_else(|e| panic!("{e}"));
        }
        let echo =
            Upstream::start(ECHO, crate::ports::free_port()).unwrap_or_else(|e| panic!("{e}"));
        let other =
            Upstream::start(OTHER, crate::ports::free_port()).unwrap_or_else(|e| panic!("{e}"));
        Stack {
            store,
            cp,
            echo,
            other,
            envoy_bin,
            wasm,
            dir,
        }
    }

    /// Which backend this stack runs.
    pub fn kind(&self) -> StoreKind {
        self.store.kind()
    }

    /// The s3s-fs server (S3 scenarios only; panics on another store).
    #[track_caller]
    pub fn s3(&self) -> &S3Server {
        self.store.s3()
    }

    /// The s3s-fs server, mutable (S3 scenarios only).
    #[track_caller]
    pub fn s3_mut(&mut self) -> &mut S3Server {
        self.store.s3_mut()
    }

    /// `s3://<BUCKET>/<PREFIX>`, `azure://devstoreaccount1/<BUCKET>/<PREFIX>`
    /// or `gcs://<BUCKET>/<PREFIX>`.
    pub fn storage_url(&self) -> String {
        self.store.storage_url(BUCKET, PREFIX)
    }

    /// `<PREFIX>/0.1.0/config.json`.
    pub fn object_key(&self) -> String {
        format!("{PREFIX}/{VERSION}/config.json")
    }

    /// The stored object's URL as the filter logs it.
    pub fn object_url(&self) -> String {
        self.store.object_url(BUCKET, &self.object_key())
    }

    /// Plugin config pointing at this stack's store (import and export off).
    pub fn plugin(&self) -> PluginConfig {
        self.store.plugin(BUCKET, PREFIX)
    }

    /// Export on, import off, `node_id` set.
    pub fn exporter_plugin(&self, node_id: &str) -> PluginConfig {
        let mut p = self.plugin();
        p.export = true;
        p.node_id = Some(node_id.into());
        p
    }

    /// Import on, export off.
    pub fn importer_plugin(&self) -> PluginConfig {
        let mut p = self.plugin();
        p.import = true;
        p
    }

    /// The store's credentials for Envoy (AWS, Azure or GCP variables).
    pub fn store_env(&self) -> Vec<(String, String)> {
        self.store.env()
    }

    /// Well-formed but wrong credentials for the store.
    pub fn wrong_store_env(&self) -> Vec<(String, String)> {
        self.store.wrong_env()
    }

    /// The AWS variables for Envoy with another secret (S3 only).
    pub fn aws_env_with_secret(&self, secret: &str) -> Vec<(String, String)> {
        crate::store::s3_env(&self.s3().endpoint(), secret)
    }

    /// Envoy config: listener + admin on free ports, the store's clusters
    /// (`object_storage`, and `gcp_oauth` for GCS), `control_plane`,
    /// `echo_service`, `other_service`, and the wasm filter with `plugin`
    /// when this stack has the wasm.
    pub fn envoy_config(&self, plugin: &PluginConfig) -> EnvoyConfig {
        let mut cfg = EnvoyConfig::new();
        for (name, port) in self.store.clusters() {
            cfg = cfg.cluster(name, port);
        }
        let cfg = cfg
            .cluster("control_plane", self.cp.port())
            .cluster(ECHO, self.echo.port())
            .cluster(OTHER, self.other.port());
        match &self.wasm {
            Some(w) => cfg.wasm(w, &plugin.to_json()),
            None => cfg,
        }
    }

    /// Starts an Envoy with `plugin` and the store's right credentials.
    pub fn start_envoy(&self, name: &str, plugin: &PluginConfig) -> Envoy {
        self.start_envoy_with_env(name, plugin, &self.store_env())
    }

    /// Starts an Envoy with `plugin` and `env`; panics with the log on failure.
    pub fn start_envoy_with_env(
        &self,
        name: &str,
        plugin: &PluginConfig,
        env: &[(String, String)],
    ) -> Envoy {
        self.start_envoy_config(name, self.envoy_config(plugin), env)
    }

    /// Starts an Envoy with a hand-made config.
    pub fn start_envoy_config(
        &self,
        name: &str,
        cfg: EnvoyConfig,
        env: &[(String, String)],
    ) -> Envoy {
        Envoy::start(&self.envoy_bin, name, cfg, self.dir.path(), env)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `<PREFIX>/0.1.0/election/lease.json`.
    pub fn lease_key(&self) -> String {
        crate::election::lease_key(PREFIX)
    }

    /// The stored lease, parsed, if it exists.
    pub fn lease(&self) -> Option<Result<Lease, String>> {
        self.store
            .read(BUCKET, &self.lease_key())
            .map(|b| crate::election::parse_lease(&b))
    }

    /// Deletes the lease object (what a lifecycle rule on the `election/`
    /// prefix does to a lease nobody renews).
    pub fn delete_lease(&self) {
        self.store.delete(BUCKET, &self.lease_key());
    }

    /// When the lease was last written (see [`Store::modified`]).
    pub fn lease_mtime(&self) -> Option<SystemTime> {
        self.store.modified(BUCKET, &self.lease_key())
    }

    /// The stored object's bytes, if any.
    pub fn object(&self) -> Option<Vec<u8>> {
        self.store.read(BUCKET, &self.object_key())
    }

    /// When the stored object was last written (see [`Store::modified`]).
    pub fn object_mtime(&self) -> Option<SystemTime> {
        self.store.modified(BUCKET, &self.object_key())
    }

    /// The stored object parsed as an envelope, if it exists.
    pub fn envelope(&self) -> Option<Result<Envelope, String>> {
        self.object().map(|b| envelope::parse(&b))
    }

    /// Waits until the stored object is an envelope of `revision`.
    pub fn wait_envelope(&self, revision: &str, timeout: Duration) -> Result<Envelope, String> {
        crate::wait::try_until(
            &format!("{} with revision {revision}", self.object_url()),
            timeout,
            || match self.envelope() {
                None => Err("no object".into()),
                Some(Err(e)) => Err(format!("object is not an envelope: {e}")),
                Some(Ok(e)) if e.revision == revision => Ok(e),
                Some(Ok(e)) => Err(format!("object has revision {}", e.revision)),
            },
        )
    }

    /// Writes raw bytes as the stored object.
    pub fn write_object(&self, bytes: &[u8]) {
        self.store.write(BUCKET, &self.object_key(), bytes);
    }

    /// Writes a valid envelope for `config` (a gateway config JSON) and
    /// returns its text.
    pub fn write_envelope(&self, revision: &str, config: &str) -> String {
        let env = envelope::build(
            VERSION,
            revision,
            "envoy-test",
            &envelope::format_rfc3339(std::time::SystemTime::now()),
            config,
        );
        self.write_object(env.as_bytes());
        env
    }

    /// Writes a valid envelope for `config` carrying the leader term `term`
    /// (as an elected exporter `exporter` would) and returns its text.
    pub fn write_envelope_with_term(
        &self,
        revision: &str,
        config: &str,
        exporter: &str,
        term: u64,
    ) -> String {
        let env = envelope::build_with_term(
            VERSION,
            revision,
            exporter,
            &envelope::format_rfc3339(std::time::SystemTime::now()),
            config,
            term,
        );
        self.write_object(env.as_bytes());
        env
    }
}

/// Polls `GET path` through `envoy` until the status is `status`; returns
/// that response.
pub fn wait_status(
    envoy: &Envoy,
    path: &str,
    status: u16,
    timeout: Duration,
) -> Result<Response, String> {
    crate::wait::try_until(&format!("GET {path} -> {status}"), timeout, || match envoy
        .get(path, &[])
    {
        Ok(r) if r.status == status => Ok(r),
        Ok(r) => Err(r.summary()),
        Err(e) => Err(e.to_string()),
    })
}

/// Asserts `GET path` (with `headers`) is proxied to the upstream `name`:
/// 200 and body `"<name> <path>"`.
#[track_caller]
pub fn expect_proxied(
    envoy: &Envoy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    name: &str,
) {
    let r = match envoy.request(method, path, headers) {
        Ok(r) => r,
        Err(e) => panic!("{method} {path} through Envoy {}: {e}", envoy.name()),
    };
    assert_eq!(
        (r.status, r.text()),
        (200, format!("{name} {path}")),
        "{method} {path} {headers:?} should reach {name}; got {}",
        r.summary()
    );
}

/// Asserts the filter's local reply: `status` and JSON `{"message": message}`.
#[track_caller]
pub fn expect_local_reply(
    envoy: &Envoy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    status: u16,
    message: &str,
) {
    let r = match envoy.request(method, path, headers) {
        Ok(r) => r,
        Err(e) => panic!("{method} {path} through Envoy {}: {e}", envoy.name()),
    };
    assert_eq!(
        r.status,
        status,
        "{method} {path} {headers:?}: {}",
        r.summary()
    );
    assert_eq!(
        r.json()["message"],
        message,
        "{method} {path}: body should be JSON with message {message:?}; got {}",
        r.summary()
    );
    assert!(
        r.header("x-upstream").is_none(),
        "{method} {path} reached an upstream: {}",
        r.summary()
    );
}

/// Asserts the store refused nothing the filter sent (GCS: every token
/// request was granted, no object request lacked a valid token; see
/// [`Store::auth_failures`]).
#[track_caller]
pub fn expect_store_auth_ok(stack: &Stack) {
    let failures = stack.store.auth_failures();
    assert!(
        failures.is_empty(),
        "the {:?} store refused requests:\n{}",
        stack.kind(),
        failures.join("\n")
    );
}

/// Asserts Envoy runs, admin answers, and the log shows no wasm crash.
#[track_caller]
pub fn expect_healthy(envoy: &mut Envoy) {
    if let Err(e) = envoy.check_alive() {
        panic!("{e}; log tail:\n{}", envoy.log_tail(30));
    }
    let crashes = envoy.wasm_crash_lines();
    assert!(
        crashes.is_empty(),
        "wasm crash lines in Envoy {}:\n{}",
        envoy.name(),
        crashes.join("\n")
    );
}
