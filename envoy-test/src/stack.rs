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
use crate::faults::FaultFront;
use crate::http::Response;
use crate::plugin::PluginConfig;
use crate::s3::S3Server;
use crate::store::{Store, StoreKind, STORAGE_CLUSTER};
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
/// `import.retry_initial_ms` of [`Stack::importer_plugin`]: the first wait
/// after a failed import (the filter's default is 1 s).
pub const RETRY_INITIAL: Duration = Duration::from_millis(300);
/// `import.retry_max_ms` of [`Stack::importer_plugin`] (default 30 s).
pub const RETRY_MAX: Duration = Duration::from_millis(1000);
/// The `status_path` scenarios set when they read the readiness status.
pub const STATUS_PATH: &str = "/.fallback-config/status";

/// The filter's answer to every request while it has no config (503).
pub const NO_CONFIG: &str = "no configuration available";

/// What one request a [`FaultFront`] received asked the store, as far as
/// an importer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// A read of `<PREFIX>/<version>/config.json`.
    Get(String),
    /// A listing of the version folders under `<PREFIX>/`.
    List,
    /// Anything else: method and target.
    Other(String),
}

impl StoreOp {
    /// Classifies a request by its method and target (S3 path style,
    /// Azure, or the GCS JSON API).
    pub fn of(method: &str, target: &str) -> StoreOp {
        let decoded = crate::http::percent_decode(target, false);
        let marker = format!("{PREFIX}/");
        if let Some(rest) = decoded.find(&marker).map(|i| &decoded[i + marker.len()..]) {
            if let Some((version, tail)) = rest.split_once('/') {
                if tail.starts_with("config.json") && method == "GET" {
                    return StoreOp::Get(version.to_string());
                }
            }
        }
        let (path, query) = decoded.split_once('?').unwrap_or((&decoded, ""));
        let listing = method == "GET"
            && (query.contains("list-type=2")
                || query.contains("comp=list")
                || (path.ends_with(&format!("/b/{BUCKET}/o")) && !query.contains("alt=media")));
        if listing {
            StoreOp::List
        } else {
            StoreOp::Other(format!("{method} {target}"))
        }
    }

    /// `Get` of `version`.
    pub fn get(version: &str) -> StoreOp {
        StoreOp::Get(version.to_string())
    }
}

/// `{"revision": rev, "routes": [echo: /echo -> echo_service]}`.
pub fn echo_config(revision: &str) -> String {
    gateway_config(revision, &[Route::new("echo", &["/echo"], ECHO)])
}

/// The servers around the Envoys under test.
pub struct Stack {
    /// The fault front the `object_storage` cluster points at (stacks made
    /// by [`Stack::with_faults`] / [`Stack::without_wasm_with_faults`]).
    faults: Option<FaultFront>,
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

    /// Like [`Stack::on`], with a [`FaultFront`] between Envoy and the
    /// store: the `object_storage` cluster points at the front, which
    /// forwards to what it pointed at before (s3s-fs, Azurite, or the GCS
    /// stack's authenticating front; the GCS token endpoint stays direct).
    /// Script faults with [`Stack::faults`]. The harness's own reads and
    /// writes ([`Stack::write_object`], ...) go straight to the store.
    pub fn with_faults(kind: StoreKind, test_name: &str, cp_up: bool) -> Stack {
        Stack::on(kind, test_name, cp_up).add_fault_front()
    }

    /// [`Stack::with_faults`] without the wasm (harness self-tests).
    pub fn without_wasm_with_faults(kind: StoreKind, test_name: &str, cp_up: bool) -> Stack {
        Stack::without_wasm_on(kind, test_name, cp_up).add_fault_front()
    }

    fn add_fault_front(mut self) -> Stack {
        let backend = self.store_port();
        self.faults = Some(FaultFront::start(backend).unwrap_or_else(|e| panic!("{e}")));
        self
    }

    /// The port the store's `object_storage` cluster reaches (s3s-fs,
    /// Azurite, or the GCS front), bypassing any fault front.
    pub fn store_port(&self) -> u16 {
        self.store
            .clusters()
            .into_iter()
            .find(|(name, _)| *name == STORAGE_CLUSTER)
            .map(|(_, port)| port)
            .unwrap_or_else(|| {
                panic!(
                    "the {:?} store has no {STORAGE_CLUSTER} cluster",
                    self.kind()
                )
            })
    }

    /// The fault front before the store; panics unless the stack was made
    /// with [`Stack::with_faults`] or [`Stack::without_wasm_with_faults`].
    #[track_caller]
    pub fn faults(&self) -> &FaultFront {
        match &self.faults {
            Some(f) => f,
            None => panic!("this stack has no fault front: make it with Stack::with_faults"),
        }
    }

    /// Whether `object_storage` goes through a fault front.
    pub fn has_faults(&self) -> bool {
        self.faults.is_some()
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
            faults: None,
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

    /// Import on, export off, and a fast retry policy so that scenarios
    /// stay quick: [`RETRY_INITIAL`] doubling up to [`RETRY_MAX`] (each
    /// wait jittered into its upper half).
    pub fn importer_plugin(&self) -> PluginConfig {
        let mut p = self.plugin();
        p.import = true;
        p.import_retry_initial_ms = Some(RETRY_INITIAL.as_millis() as u64);
        p.import_retry_max_ms = Some(RETRY_MAX.as_millis() as u64);
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
    /// when this stack has the wasm. With a fault front, `object_storage`
    /// points at the front.
    pub fn envoy_config(&self, plugin: &PluginConfig) -> EnvoyConfig {
        let mut cfg = EnvoyConfig::new();
        for (name, port) in self.store.clusters() {
            let port = match &self.faults {
                Some(f) if name == STORAGE_CLUSTER => f.port(),
                _ => port,
            };
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

    /// A GET of the stored object ([`Stack::object_key`]) built and signed
    /// the way the filter builds it (S3 SigV4, Azure SharedKey; for GCS a
    /// `Bearer` token the GCS front accepts), with the store's `Host`, sent
    /// to 127.0.0.1:`port`: the store itself ([`Stack::store_port`]) or a
    /// fault front before it ([`FaultFront::port`]).
    pub fn signed_object_get(&self, port: u16) -> std::io::Result<Response> {
        self.signed_get(&self.object_key(), port)
    }

    /// Like [`Stack::signed_object_get`] for any key in the bucket.
    pub fn signed_get(&self, key: &str, port: u16) -> std::io::Result<Response> {
        if let Store::Gcs(g) = &self.store {
            let path = format!(
                "/storage/v1/b/{BUCKET}/o/{}?alt=media",
                crate::envoy::percent_encode(key)
            );
            let auth = format!("Bearer {}", g.harness_token());
            return crate::http::get(port, &path, &[("authorization", &auth)]);
        }
        let env: std::collections::HashMap<String, String> = self.store_env().into_iter().collect();
        let settings = fallback_config::settings::Settings::parse(
            self.importer_plugin().to_json().as_bytes(),
            &|k: &str| env.get(k).cloned(),
        )
        .unwrap_or_else(|e| panic!("plugin settings: {e}"));
        let storage = settings
            .storage
            .unwrap_or_else(|| panic!("the importer plugin has no storage settings"));
        let now = fallback_config::clock::Now::from_wall(fallback_config::time::Timestamp(
            SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        ));
        let req = fallback_config::storage::ObjectStore::new(storage)
            .get(key, now)
            .unwrap_or_else(|e| panic!("cannot build the GET of {key}: {e}"));
        crate::http::send(port, &req)
    }

    /// What the fault front was asked so far, classified, in order.
    pub fn store_ops(&self) -> Vec<StoreOp> {
        self.faults()
            .log()
            .iter()
            .map(|r| StoreOp::of(&r.method, &r.path))
            .collect()
    }

    /// `<PREFIX>/<version>/config.json`.
    pub fn snapshot_key(&self, version: &str) -> String {
        format!("{PREFIX}/{version}/config.json")
    }

    /// The snapshot of `version`'s URL as the filter logs it.
    pub fn snapshot_url(&self, version: &str) -> String {
        self.store.object_url(BUCKET, &self.snapshot_key(version))
    }

    /// Writes raw bytes as the snapshot of `version`.
    pub fn write_snapshot_bytes(&self, version: &str, bytes: &[u8]) {
        self.store.write(BUCKET, &self.snapshot_key(version), bytes);
    }

    /// Writes a valid envelope of `version` for [`echo_config`]`(revision)`,
    /// exported at `exported_at`; returns its text.
    pub fn write_snapshot(&self, version: &str, revision: &str, exported_at: SystemTime) -> String {
        let env = envelope::build(
            version,
            revision,
            "envoy-test",
            &envelope::format_rfc3339(exported_at),
            &echo_config(revision),
        );
        self.write_snapshot_bytes(version, env.as_bytes());
        env
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
    let what = format!("GET {path} -> {status}");
    let ask = || match envoy.get(path, &[]) {
        Ok(r) if r.status == status => Ok(r),
        Ok(r) => Err(r.summary()),
        Err(e) => Err(e.to_string()),
    };
    // Each worker loads a new config at its own root's next tick: the
    // first worker to answer may be a tick ahead of the others.
    crate::wait::try_until_settled(&what, timeout, crate::probe::WORKER_LAG, ask)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ops_are_classified_on_every_backend() {
        let get = |v: &str| StoreOp::get(v);
        for (method, target, op) in [
            ("GET", "/fallback-configs/gateways/e2e/0.1.0/config.json", get("0.1.0")),
            (
                "GET",
                "/fallback-configs?delimiter=%2F&list-type=2&prefix=gateways%2Fe2e%2F",
                StoreOp::List,
            ),
            (
                "GET",
                "/devstoreaccount1/fallback-configs/gateways/e2e/0.0.9/config.json",
                get("0.0.9"),
            ),
            (
                "GET",
                "/devstoreaccount1/fallback-configs?restype=container&comp=list&delimiter=%2F&prefix=gateways%2Fe2e%2F",
                StoreOp::List,
            ),
            (
                "GET",
                "/storage/v1/b/fallback-configs/o/gateways%2Fe2e%2F0.2.0%2Fconfig.json?alt=media",
                get("0.2.0"),
            ),
            (
                "GET",
                "/storage/v1/b/fallback-configs/o?delimiter=%2F&prefix=gateways%2Fe2e%2F",
                StoreOp::List,
            ),
        ] {
            assert_eq!(StoreOp::of(method, target), op, "{target}");
        }
        assert!(matches!(
            StoreOp::of("PUT", "/fallback-configs/gateways/e2e/0.1.0/config.json"),
            StoreOp::Other(_)
        ));
    }
}
