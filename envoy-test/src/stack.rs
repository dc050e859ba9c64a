//! Everything a scenario needs, wired together: s3s-fs with a bucket, the
//! fake control plane, two echo upstreams, and a way to start Envoys with
//! the filter pointed at them.
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
use crate::upstream::Upstream;
use crate::workdir::WorkDir;
use std::path::PathBuf;
use std::time::Duration;

/// The bucket scenarios use.
pub const BUCKET: &str = "fallback-configs";
/// The key prefix scenarios use.
pub const PREFIX: &str = "gateways/e2e";
/// Credentials s3s-fs accepts.
pub const ACCESS_KEY: &str = "AKIAENVOYTEST0000001";
/// Secret s3s-fs accepts.
pub const SECRET_KEY: &str = "envoy-test/secret+key=0001";
/// Region given to the filter.
pub const REGION: &str = "us-east-1";
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
    pub s3: S3Server,
    pub cp: ControlPlane,
    pub echo: Upstream,
    pub other: Upstream,
    envoy_bin: PathBuf,
    wasm: Option<PathBuf>,
    pub dir: WorkDir,
}

impl Stack {
    /// For scenarios: requires Envoy, s3s-fs AND the wasm (fails naming the
    /// env var otherwise). The CP serves [`echo_config`]`("r1")`; it is up
    /// when `cp_up`, else down (and [`ControlPlane::up`] brings it).
    pub fn new(test_name: &str, cp_up: bool) -> Stack {
        let envoy_bin = crate::bins::require_envoy();
        let s3s = crate::bins::require_s3s_fs();
        let wasm = crate::bins::require_wasm();
        Stack::build(test_name, cp_up, envoy_bin, s3s, Some(wasm))
    }

    /// For harness self-tests: Envoy and s3s-fs only, no wasm.
    pub fn without_wasm(test_name: &str, cp_up: bool) -> Stack {
        let envoy_bin = crate::bins::require_envoy();
        let s3s = crate::bins::require_s3s_fs();
        Stack::build(test_name, cp_up, envoy_bin, s3s, None)
    }

    fn build(
        test_name: &str,
        cp_up: bool,
        envoy_bin: PathBuf,
        s3s: PathBuf,
        wasm: Option<PathBuf>,
    ) -> Stack {
        let dir = WorkDir::new(test_name);
        let s3 = S3Server::start(
            &s3s,
            &dir.join("s3"),
            &dir.join("s3s-fs.log"),
            crate::ports::free_port(),
            ACCESS_KEY,
            SECRET_KEY,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        s3.create_bucket(BUCKET);
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
            s3,
            cp,
            echo,
            other,
            envoy_bin,
            wasm,
            dir,
        }
    }

    /// `s3://<BUCKET>/<PREFIX>`.
    pub fn storage_url(&self) -> String {
        format!("s3://{BUCKET}/{PREFIX}")
    }

    /// `<PREFIX>/0.1.0/config.json`.
    pub fn object_key(&self) -> String {
        format!("{PREFIX}/{VERSION}/config.json")
    }

    /// Plugin config pointing at this stack (import and export off).
    pub fn plugin(&self) -> PluginConfig {
        PluginConfig::new(&self.storage_url(), &self.s3.endpoint())
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

    /// The AWS variables for Envoy, with the right keys.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        self.aws_env_with_secret(SECRET_KEY)
    }

    /// The AWS variables for Envoy with another secret.
    pub fn aws_env_with_secret(&self, secret: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_CONFIG_STORAGE_ENDPOINT".into(), self.s3.endpoint()),
        ]
    }

    /// Envoy config: listener + admin on free ports, clusters
    /// `object_storage`, `control_plane`, `echo_service`, `other_service`,
    /// and the wasm filter with `plugin` when this stack has the wasm.
    pub fn envoy_config(&self, plugin: &PluginConfig) -> EnvoyConfig {
        let cfg = EnvoyConfig::new()
            .cluster("object_storage", self.s3.port())
            .cluster("control_plane", self.cp.port())
            .cluster(ECHO, self.echo.port())
            .cluster(OTHER, self.other.port());
        match &self.wasm {
            Some(w) => cfg.wasm(w, &plugin.to_json()),
            None => cfg,
        }
    }

    /// Starts an Envoy with `plugin` and the right AWS env.
    pub fn start_envoy(&self, name: &str, plugin: &PluginConfig) -> Envoy {
        self.start_envoy_with_env(name, plugin, &self.aws_env())
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
        self.s3
            .read_object(BUCKET, &self.lease_key())
            .map(|b| crate::election::parse_lease(&b))
    }

    /// Deletes the lease object on disk (what a lifecycle rule on the
    /// `election/` prefix does to a lease nobody renews).
    pub fn delete_lease(&self) {
        self.s3.delete_object(BUCKET, &self.lease_key());
    }

    /// The stored object's bytes, if any.
    pub fn object(&self) -> Option<Vec<u8>> {
        self.s3.read_object(BUCKET, &self.object_key())
    }

    /// The stored object parsed as an envelope, if it exists.
    pub fn envelope(&self) -> Option<Result<Envelope, String>> {
        self.object().map(|b| envelope::parse(&b))
    }

    /// Waits until the stored object is an envelope of `revision`.
    pub fn wait_envelope(&self, revision: &str, timeout: Duration) -> Result<Envelope, String> {
        crate::wait::try_until(
            &format!(
                "s3://{BUCKET}/{} with revision {revision}",
                self.object_key()
            ),
            timeout,
            || match self.envelope() {
                None => Err("no object".into()),
                Some(Err(e)) => Err(format!("object is not an envelope: {e}")),
                Some(Ok(e)) if e.revision == revision => Ok(e),
                Some(Ok(e)) => Err(format!("object has revision {}", e.revision)),
            },
        )
    }

    /// Writes raw bytes as the stored object (on disk).
    pub fn write_object(&self, bytes: &[u8]) {
        self.s3.write_object(BUCKET, &self.object_key(), bytes);
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
