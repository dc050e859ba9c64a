//! Generate an Envoy config, run Envoy, read its admin stats and its log.

use crate::http::{self, Response};
use crate::process::Proc;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variables the filter may read, for every backend (listed in
/// `vm_config.environment_variables.host_env_keys`). Envoy is started with
/// these REMOVED from the inherited environment, then set from the test, so
/// a developer's real credentials never leak into a test.
pub const HOST_ENV_KEYS: [&str; 23] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_STORAGE_ENDPOINT",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "GCP_SERVICE_ACCOUNT",
    "GCE_METADATA_HOST",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ENDPOINT",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_AUTHORITY_HOST",
    "FALLBACK_CONFIG_SIGNING_KEY",
    "FALLBACK_CONFIG_TRUSTED_KEYS",
    "FALLBACK_CONFIG_ENCRYPTION_KEYS",
];

/// The wasm HTTP filter to put before the router.
#[derive(Clone, Debug)]
pub struct WasmFilter {
    /// Absolute path of the module.
    pub path: PathBuf,
    /// The plugin configuration (a JSON document, passed as StringValue).
    pub plugin_json: String,
}

/// A STATIC cluster with one 127.0.0.1 endpoint.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub port: u16,
    /// `per_connection_buffer_limit_bytes`; `None`: Envoy's default (1 MiB).
    pub per_connection_buffer_limit_bytes: Option<u32>,
    /// An upstream TLS transport socket; `None`: plain TCP.
    pub tls: Option<UpstreamTls>,
    /// Envoy's `aws_request_signing` as an upstream HTTP filter of this
    /// cluster; `None`: no upstream filters.
    pub aws_signing: Option<AwsSigning>,
}

/// `envoy.filters.http.aws_request_signing` configured as an upstream HTTP
/// filter of a cluster (`typed_extension_protocol_options`, HTTP/1.1,
/// then `upstream_codec`), as in the README's "Envoy signs": service `s3`,
/// the body hashed (`use_unsigned_payload: false`), `x-envoy*`,
/// `x-forwarded*` and `x-request-id` not signed. Envoy signs with its
/// own AWS credential chain, read from ITS process environment (the
/// `env` given to [`Envoy::start`]).
#[derive(Clone, Debug)]
pub struct AwsSigning {
    /// The SigV4 region.
    pub region: String,
    /// `credential_provider: { custom_credential_provider_chain: true,
    /// environment_credential_provider: {} }`: only the environment keys
    /// (no credentials file, no IMDS probing). `false`: Envoy's default
    /// chain.
    pub environment_only: bool,
}

/// An upstream TLS transport socket (`envoy.transport_sockets.tls`,
/// `UpstreamTlsContext`) that validates the server's certificate.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// `validation_context.trusted_ca.filename`: PEM of the CA(s) trusted.
    pub trusted_ca: PathBuf,
    /// `sni` sent in the ClientHello.
    pub sni: String,
    /// `validation_context.match_typed_subject_alt_names`, each a DNS SAN
    /// matched exactly; empty: any name (the chain is still verified).
    pub san_dns: Vec<String>,
}

/// What one Envoy instance is given.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    pub admin_port: u16,
    pub listener_port: u16,
    /// Header naming the cluster to route to (`route.cluster_header`).
    pub cluster_header: String,
    pub clusters: Vec<Cluster>,
    /// `None`: no wasm filter (router only), to test the harness alone.
    pub wasm: Option<WasmFilter>,
    /// The same module as a singleton bootstrap service on the main
    /// thread (`envoy.bootstrap.wasm`), with the filter's `vm_id` so that
    /// the two share shared data; this is its plugin JSON.
    pub service: Option<String>,
    /// Entries of a static runtime layer (`layered_runtime`), e.g.
    /// `http.async_response_buffer_limit` (the most body bytes Envoy keeps
    /// for a `dispatch_http_call` answer; default 32 MiB). Empty: no
    /// `layered_runtime` block.
    pub runtime: Vec<(String, String)>,
    /// `-l` (default `info`).
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:trace`; `None`: not passed.
    pub component_log_level: Option<String>,
    /// Variables listed in `host_env_keys` besides [`HOST_ENV_KEYS`] (e.g.
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`); like those, removed from the
    /// inherited environment and set only from the test's `env`.
    pub extra_host_env_keys: Vec<String>,
    /// Variables of [`HOST_ENV_KEYS`] left out of `host_env_keys`: the
    /// VM does not see them, though the Envoy process still gets them
    /// from the test's `env` (e.g. keys for Envoy's own signer only).
    pub hidden_host_env_keys: Vec<String>,
    /// The connection manager normalises paths as `wasm/envoy.yaml` does
    /// (off by default: harness tests route raw object API paths, with
    /// `%2F`, through the listener).
    pub normalize_paths: bool,
}

impl EnvoyConfig {
    /// Free admin and listener ports, `x-fallback-upstream`, no clusters, no wasm.
    pub fn new() -> EnvoyConfig {
        EnvoyConfig {
            admin_port: crate::ports::free_port(),
            listener_port: crate::ports::free_port(),
            cluster_header: "x-fallback-upstream".into(),
            clusters: Vec::new(),
            wasm: None,
            service: None,
            runtime: Vec::new(),
            log_level: "info".into(),
            component_log_level: None,
            extra_host_env_keys: Vec::new(),
            hidden_host_env_keys: Vec::new(),
            normalize_paths: false,
        }
    }

    /// Normalises request paths before the filter sees them
    /// ([`EnvoyConfig::normalize_paths`]).
    pub fn normalized_paths(mut self) -> EnvoyConfig {
        self.normalize_paths = true;
        self
    }

    /// Lists `keys` in `host_env_keys` too (see
    /// [`EnvoyConfig::extra_host_env_keys`]).
    pub fn host_env_keys(mut self, keys: &[&str]) -> EnvoyConfig {
        for k in keys {
            if !HOST_ENV_KEYS.contains(k) && !self.extra_host_env_keys.iter().any(|e| e == k) {
                self.extra_host_env_keys.push(k.to_string());
            }
        }
        self
    }

    /// Leaves `keys` out of `host_env_keys` (see
    /// [`EnvoyConfig::hidden_host_env_keys`]).
    pub fn hide_host_env_keys(mut self, keys: &[&str]) -> EnvoyConfig {
        self.hidden_host_env_keys
            .extend(keys.iter().map(|k| k.to_string()));
        self
    }

    /// The variables the VM sees (`host_env_keys`), in order.
    pub fn vm_env_keys(&self) -> Vec<String> {
        HOST_ENV_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(self.extra_host_env_keys.iter().cloned())
            .filter(|k| !self.hidden_host_env_keys.contains(k))
            .collect()
    }

    /// Puts Envoy's `aws_request_signing` upstream filter on the existing
    /// cluster `name` (see [`AwsSigning`]); panics when there is no such
    /// cluster.
    #[track_caller]
    pub fn cluster_aws_signing(
        mut self,
        name: &str,
        region: &str,
        environment_only: bool,
    ) -> EnvoyConfig {
        match self.clusters.iter_mut().find(|c| c.name == name) {
            Some(c) => {
                c.aws_signing = Some(AwsSigning {
                    region: region.into(),
                    environment_only,
                })
            }
            None => panic!("no cluster {name} in the Envoy config"),
        }
        self
    }

    /// Envoy's log levels: `-l level` and `--component-log-level components`.
    pub fn log_levels(mut self, level: &str, components: Option<&str>) -> EnvoyConfig {
        self.log_level = level.into();
        self.component_log_level = components.map(str::to_string);
        self
    }

    /// Adds a cluster.
    pub fn cluster(mut self, name: &str, port: u16) -> EnvoyConfig {
        self.clusters.push(Cluster {
            name: name.into(),
            port,
            per_connection_buffer_limit_bytes: None,
            tls: None,
            aws_signing: None,
        });
        self
    }

    /// Gives the existing cluster `name` an upstream TLS transport socket:
    /// Envoy verifies the server's chain against `trusted_ca` (a PEM file),
    /// sends SNI `sni`, and requires a DNS subject alternative name equal
    /// to one of `san_dns` (none: no name check beyond the chain). A
    /// failed verification (measured with Envoy 1.40): the request gets
    /// 503 `upstream connect error or disconnect/reset before headers.
    /// reset reason: remote connection failure` (no TLS detail in the
    /// body) and the stat `cluster.<name>.ssl.fail_verify_error` (chain)
    /// or `...ssl.fail_verify_san` (name) goes up; `...ssl.handshake`
    /// counts successes. Panics when there is no such cluster.
    #[track_caller]
    pub fn cluster_tls(
        mut self,
        name: &str,
        trusted_ca: &Path,
        sni: &str,
        san_dns: &[&str],
    ) -> EnvoyConfig {
        match self.clusters.iter_mut().find(|c| c.name == name) {
            Some(c) => {
                c.tls = Some(UpstreamTls {
                    trusted_ca: trusted_ca.to_path_buf(),
                    sni: sni.into(),
                    san_dns: san_dns.iter().map(|s| s.to_string()).collect(),
                })
            }
            None => panic!("no cluster {name} in the Envoy config"),
        }
        self
    }

    /// Points the existing cluster `name` at `port` (e.g. a
    /// [`crate::faults::FaultFront`] before the store); panics when there
    /// is no such cluster.
    #[track_caller]
    pub fn repoint_cluster(mut self, name: &str, port: u16) -> EnvoyConfig {
        match self.clusters.iter_mut().find(|c| c.name == name) {
            Some(c) => c.port = port,
            None => panic!("no cluster {name} in the Envoy config"),
        }
        self
    }

    /// Sets `per_connection_buffer_limit_bytes` on the existing cluster
    /// `name`; panics when there is no such cluster.
    #[track_caller]
    pub fn cluster_buffer_limit(mut self, name: &str, bytes: u32) -> EnvoyConfig {
        match self.clusters.iter_mut().find(|c| c.name == name) {
            Some(c) => c.per_connection_buffer_limit_bytes = Some(bytes),
            None => panic!("no cluster {name} in the Envoy config"),
        }
        self
    }

    /// Adds a static runtime entry (see [`EnvoyConfig::runtime`]).
    pub fn runtime(mut self, key: &str, value: &str) -> EnvoyConfig {
        self.runtime.push((key.into(), value.into()));
        self
    }

    /// Raises the body limit of `dispatch_http_call` answers (runtime
    /// `http.async_response_buffer_limit`, Envoy's default 32 MiB): a larger
    /// answer makes the call fail (the filter sees no headers, body size 0
    /// and status 14 `reset`).
    pub fn async_response_buffer_limit(self, bytes: u64) -> EnvoyConfig {
        self.runtime("http.async_response_buffer_limit", &bytes.to_string())
    }

    /// Sets the wasm filter.
    pub fn wasm(mut self, path: &Path, plugin_json: &str) -> EnvoyConfig {
        self.wasm = Some(WasmFilter {
            path: path.to_path_buf(),
            plugin_json: plugin_json.into(),
        });
        self
    }

    /// Runs the module as a bootstrap service too
    /// ([`EnvoyConfig::service`]), with this plugin JSON.
    pub fn service(mut self, plugin_json: &str) -> EnvoyConfig {
        self.service = Some(plugin_json.into());
        self
    }

    /// The `vm_config` of the module at `path`, indented by `pad`.
    fn vm_config(&self, path: &Path, pad: &str) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut y = format!("{pad}vm_config:\n{pad}  vm_id: fallback_config\n{pad}  runtime: envoy.wasm.runtime.v8\n{pad}  code:\n{pad}    local:\n");
        y.push_str(&format!(
            "{pad}      filename: {}\n",
            q(&path.display().to_string())
        ));
        y.push_str(&format!(
            "{pad}  environment_variables:\n{pad}    host_env_keys:\n"
        ));
        for k in self.vm_env_keys() {
            y.push_str(&format!("{pad}    - {k}\n"));
        }
        y
    }

    /// The bootstrap YAML.
    pub fn to_yaml(&self) -> String {
        // JSON strings are valid YAML double-quoted scalars.
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut y = String::new();
        y.push_str("# Generated by envoy-test (envoy-test/src/envoy.rs).\n");
        y.push_str(&format!(
            "admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: {} }}\n",
            self.admin_port
        ));
        y.push_str("static_resources:\n  listeners:\n  - name: ingress\n    address:\n");
        y.push_str(&format!(
            "      socket_address: {{ address: 127.0.0.1, port_value: {} }}\n",
            self.listener_port
        ));
        y.push_str(
            "    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          stat_prefix: ingress\n",
        );
        if self.normalize_paths {
            y.push_str("          normalize_path: true\n          merge_slashes: true\n          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n");
        }
        y.push_str(
            "          route_config:\n            name: local\n            virtual_hosts:\n            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: { prefix: \"/\" }\n",
        );
        y.push_str(&format!(
            "                route: {{ cluster_header: {}, timeout: 5s }}\n",
            q(&self.cluster_header)
        ));
        y.push_str("          http_filters:\n");
        if let Some(w) = &self.wasm {
            y.push_str("          - name: envoy.filters.http.wasm\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n              config:\n                name: fallback_config\n                root_id: fallback_config\n                configuration:\n                  \"@type\": type.googleapis.com/google.protobuf.StringValue\n");
            y.push_str(&format!("                  value: {}\n", q(&w.plugin_json)));
            y.push_str(&self.vm_config(&w.path, "                "));
        }
        y.push_str("          - name: envoy.filters.http.router\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n");
        y.push_str("  clusters:\n");
        for c in &self.clusters {
            y.push_str(&format!(
                "  - name: {name}\n    type: STATIC\n    connect_timeout: 0.5s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n",
                name = q(&c.name),
                port = c.port
            ));
            if let Some(limit) = c.per_connection_buffer_limit_bytes {
                y.push_str(&format!("    per_connection_buffer_limit_bytes: {limit}\n"));
            }
            if let Some(tls) = &c.tls {
                y.push_str("    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n");
                y.push_str(&format!("        sni: {}\n", q(&tls.sni)));
                y.push_str("        common_tls_context:\n          validation_context:\n");
                y.push_str(&format!(
                    "            trusted_ca: {{ filename: {} }}\n",
                    q(&tls.trusted_ca.display().to_string())
                ));
                if !tls.san_dns.is_empty() {
                    y.push_str("            match_typed_subject_alt_names:\n");
                    for dns in &tls.san_dns {
                        y.push_str(&format!(
                            "            - san_type: DNS\n              matcher: {{ exact: {} }}\n",
                            q(dns)
                        ));
                    }
                }
            }
            if let Some(sig) = &c.aws_signing {
                y.push_str("    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http_protocol_options: {} }\n        http_filters:\n        - name: envoy.filters.http.aws_request_signing\n          typed_config:\n            \"@type\": type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning\n            service_name: s3\n");
                y.push_str(&format!("            region: {}\n", q(&sig.region)));
                y.push_str("            use_unsigned_payload: false\n            match_excluded_headers: [{ prefix: x-envoy }, { prefix: x-forwarded }, { exact: x-request-id }]\n");
                if sig.environment_only {
                    y.push_str("            credential_provider:\n              custom_credential_provider_chain: true\n              environment_credential_provider: {}\n");
                }
                y.push_str("        - name: envoy.filters.http.upstream_codec\n          typed_config:\n            \"@type\": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec\n");
            }
        }
        if let (Some(plugin), Some(w)) = (&self.service, &self.wasm) {
            y.push_str("bootstrap_extensions:\n- name: envoy.bootstrap.wasm\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.wasm.v3.WasmService\n    singleton: true\n    config:\n      name: fallback_config_service\n      root_id: fallback_config\n      configuration:\n        \"@type\": type.googleapis.com/google.protobuf.StringValue\n");
            y.push_str(&format!("        value: {}\n", q(plugin)));
            y.push_str(&self.vm_config(&w.path, "      "));
        }
        if !self.runtime.is_empty() {
            y.push_str(
                "layered_runtime:\n  layers:\n  - name: envoy_test_static\n    static_layer:\n",
            );
            for (k, v) in &self.runtime {
                y.push_str(&format!("      {}: {}\n", q(k), v));
            }
        }
        y
    }
}

impl Default for EnvoyConfig {
    fn default() -> Self {
        EnvoyConfig::new()
    }
}

/// Runs `envoy --mode validate -c <config>` from `cwd`; returns (success, output).
pub fn validate(bin: &Path, config: &Path, cwd: &Path) -> (bool, String) {
    match std::process::Command::new(bin)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .current_dir(cwd)
        .output()
    {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Envoy 1.40 exits 0 even when validation fails: look at the text too.
            let ok =
                out.status.success() && text.contains("configuration '") && text.contains("OK");
            (ok, text)
        }
        Err(e) => (false, format!("cannot run {}: {e}", bin.display())),
    }
}

/// The time stamp Envoy puts at the start of a log line
/// (`[2026-11-27 01:56:57.547]...`), as seconds; only differences between
/// two lines are meaningful (the zone is ignored).
pub fn log_line_time(line: &str) -> Option<f64> {
    let stamp = line.strip_prefix('[')?.get(..23)?;
    crate::envelope::parse_rfc3339(&format!("{}T{}Z", stamp.get(..10)?, stamp.get(11..)?))
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a
/// query parameter value.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A running Envoy.
pub struct Envoy {
    name: String,
    proc: Proc,
    config: EnvoyConfig,
    config_path: PathBuf,
}

impl Envoy {
    /// Writes `<dir>/<name>.yaml`, starts Envoy (`--concurrency 2
    /// --disable-hot-restart -l info`, or the config's log levels, output to `<dir>/<name>.log`) with
    /// `env` set, and waits until admin `/ready` answers 200 (up to 30 s).
    pub fn start(
        bin: &Path,
        name: &str,
        config: EnvoyConfig,
        dir: &Path,
        env: &[(String, String)],
    ) -> Result<Envoy, String> {
        let config_path = dir.join(format!("{name}.yaml"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&config_path, config.to_yaml())
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        let mut args: Vec<String> = vec![
            "-c".into(),
            config_path.display().to_string(),
            "--concurrency".into(),
            "2".into(),
            "--disable-hot-restart".into(),
            "-l".into(),
            config.log_level.clone(),
            "--file-flush-interval-msec".into(),
            "200".into(),
        ];
        if let Some(c) = &config.component_log_level {
            args.extend(["--component-log-level".to_string(), c.clone()]);
        }
        let removed: Vec<&str> = HOST_ENV_KEYS
            .iter()
            .copied()
            .chain(config.extra_host_env_keys.iter().map(String::as_str))
            .collect();
        let proc = Proc::spawn(name, bin, &args, env, &removed, &log).map_err(|e| e.to_string())?;
        let mut envoy = Envoy {
            name: name.into(),
            proc,
            config,
            config_path,
        };
        let admin = envoy.config.admin_port;
        crate::wait::try_until(
            &format!("Envoy {name} to be ready (admin /ready 200)"),
            Duration::from_secs(30),
            || {
                if let Some(status) = envoy.proc.exited() {
                    return Ok(Err(format!(
                        "Envoy {name} exited ({status}) while starting; log tail:\n{}",
                        envoy.proc.log_tail(40)
                    )));
                }
                match http::get(admin, "/ready", &[]) {
                    Ok(r) if r.status == 200 => Ok(Ok(())),
                    Ok(r) => Err(r.summary()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .map_err(|e| format!("{e}\nlog tail:\n{}", envoy.proc.log_tail(40)))??;
        Ok(envoy)
    }

    /// Its name (file names `<name>.yaml`, `<name>.log`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config it was started with.
    pub fn config(&self) -> &EnvoyConfig {
        &self.config
    }

    /// Path of the generated YAML.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Listener port (where clients send requests).
    pub fn port(&self) -> u16 {
        self.config.listener_port
    }

    /// Admin port.
    pub fn admin_port(&self) -> u16 {
        self.config.admin_port
    }

    /// The process (pid, signals, log path).
    pub fn process(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// `GET path` through the listener.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        http::get(self.port(), path, headers)
    }

    /// Any request through the listener.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        http::request(self.port(), method, path, headers, b"")
    }

    /// `GET path` on the admin port.
    pub fn admin_get(&self, path: &str) -> std::io::Result<Response> {
        http::get(self.admin_port(), path, &[])
    }

    /// The value of one stat (exact name), from admin `/stats`; `None` when
    /// the stat does not exist or admin does not answer.
    pub fn stat(&self, name: &str) -> Option<u64> {
        // The filter is a regex; a plain name has no special characters that
        // need URL encoding, and we match the exact name below.
        let r = self.admin_get(&format!("/stats?filter={name}")).ok()?;
        if r.status != 200 {
            return None;
        }
        r.text().lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if k.trim() == name {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    }

    /// Every stat whose name matches the RE2 regex `filter` (admin
    /// `/stats?filter=`), read in ONE admin request, as name -> value.
    /// Stats that are not integers (histograms) are left out.
    pub fn stats_matching(&self, filter: &str) -> Result<BTreeMap<String, u64>, String> {
        let path = format!("/stats?filter={}", percent_encode(filter));
        let r = self
            .admin_get(&path)
            .map_err(|e| format!("admin {path} on Envoy {}: {e}", self.name))?;
        if r.status != 200 {
            return Err(format!(
                "admin {path} on Envoy {}: {}",
                self.name,
                r.summary()
            ));
        }
        Ok(r.text()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// `cluster.<cluster>.<stat>`, panicking when unreadable.
    pub fn cluster_stat(&self, cluster: &str, stat: &str) -> u64 {
        let name = format!("cluster.{cluster}.{stat}");
        self.stat(&name)
            .unwrap_or_else(|| panic!("stat {name} not readable from Envoy {}", self.name))
    }

    /// `cluster.<cluster>.upstream_rq_total`: requests SENT to the cluster.
    /// A request that never got a connection (upstream down) is not counted
    /// here; see [`Envoy::upstream_rq_attempts`].
    pub fn upstream_rq_total(&self, cluster: &str) -> u64 {
        self.cluster_stat(cluster, "upstream_rq_total")
    }

    /// `cluster.<cluster>.upstream_rq_pending_total`: requests that waited
    /// for a connection, which with our `connection: close` servers is every
    /// request the filter dispatched, including those to a down upstream.
    pub fn upstream_rq_attempts(&self, cluster: &str) -> u64 {
        self.cluster_stat(cluster, "upstream_rq_pending_total")
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// A mark in the log (its current length) for [`Envoy::log_lines_since`].
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// Log lines containing `needle` logged after `mark`.
    pub fn log_lines_since(&self, mark: usize, needle: &str) -> Vec<String> {
        let log = self.log();
        let start = (mark..=log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..]
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        crate::wait::try_until(
            &format!("Envoy {} to log {needle:?}", self.name),
            timeout,
            || {
                self.log_lines(needle)
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("not yet; log tail:\n{}", self.proc.log_tail(15)))
            },
        )
    }

    /// Last lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// `Ok` while the process runs and admin `/ready` answers 200.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if let Some(status) = self.proc.exited() {
            return Err(format!("Envoy {} exited: {status}", self.name));
        }
        match self.admin_get("/ready") {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("admin /ready answered {}", r.summary())),
            Err(e) => Err(format!("admin /ready: {e}")),
        }
    }

    /// Log lines that show the wasm VM crashed or panicked.
    pub fn wasm_crash_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("Uncaught RuntimeError")
                    || l.contains("panicked at")
                    || l.contains("wasm_fail_stream")
                    || (l.contains("[wasm]") && l.contains("[critical]"))
            })
            .map(str::to_string)
            .collect()
    }

    /// Stops Envoy now (SIGKILL).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// SIGKILL (a crash: no shutdown, no hand-over), and reap.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGSTOP: the whole process freezes (timers, sockets, admin). Do not
    /// read its stats until [`Envoy::resume`]: admin would not answer.
    pub fn pause(&self) -> Result<(), String> {
        self.proc
            .pause()
            .map_err(|e| format!("SIGSTOP Envoy {}: {e}", self.name))
    }

    /// SIGCONT after [`Envoy::pause`].
    pub fn resume(&self) -> Result<(), String> {
        self.proc
            .resume()
            .map_err(|e| format!("SIGCONT Envoy {}: {e}", self.name))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.proc.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of Envoy {} ({}) ----\n{}\n----",
                self.name,
                self.proc.log_path().display(),
                self.proc.log_tail(40)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_time_stamps() {
        let a = "[2026-11-27 01:56:57.547][15994][info][wasm] x";
        let b = "[2026-11-27 01:56:59.047][15994][info][wasm] y";
        let d = log_line_time(b).unwrap() - log_line_time(a).unwrap();
        assert!((d - 1.5).abs() < 1e-6, "{d}");
        assert_eq!(log_line_time("no stamp"), None);
    }

    #[test]
    fn percent_encoding_of_a_stats_filter() {
        assert_eq!(percent_encode(r"^(a\.b|c_d)$"), "%5E%28a%5C.b%7Cc_d%29%24");
    }

    #[test]
    fn yaml_embeds_plugin_json_and_clusters() {
        let cfg = EnvoyConfig::new()
            .cluster("echo_service", 1234)
            .wasm(Path::new("/x/f.wasm"), "{\"a\": \"b\\\"c\"}");
        let y = cfg.to_yaml();
        assert!(
            y.contains("value: \"{\\\"a\\\": \\\"b\\\\\\\"c\\\"}\""),
            "{y}"
        );
        assert!(y.contains("port_value: 1234"));
        assert!(y.contains("cluster_header: \"x-fallback-upstream\""));
        assert!(y.contains("- AWS_CONFIG_STORAGE_ENDPOINT"));
        assert!(y.contains("- GCP_SERVICE_ACCOUNT"));
        assert!(y.contains("- AZURE_STORAGE_SAS_TOKEN"));
        assert!(y.find("envoy.filters.http.wasm") < y.find("envoy.filters.http.router"));
        let plain = EnvoyConfig::new().to_yaml();
        assert!(!plain.contains("wasm"));
        assert!(!plain.contains("layered_runtime"));
        assert!(!plain.contains("per_connection_buffer_limit_bytes"));
        assert!(!plain.contains("transport_socket"));
    }

    #[test]
    fn yaml_renders_runtime_and_cluster_limits() {
        let y = EnvoyConfig::new()
            .cluster("object_storage", 1)
            .cluster("other", 2)
            .repoint_cluster("object_storage", 3)
            .cluster_buffer_limit("object_storage", 65536)
            .async_response_buffer_limit(64 << 20)
            .to_yaml();
        assert!(
            y.contains("port_value: 3 }\n    per_connection_buffer_limit_bytes: 65536\n"),
            "{y}"
        );
        assert!(!y.contains("port_value: 1 }"), "{y}");
        assert!(y.ends_with(
            "layered_runtime:\n  layers:\n  - name: envoy_test_static\n    static_layer:\n      \"http.async_response_buffer_limit\": 67108864\n"
        ), "{y}");
    }

    #[test]
    fn yaml_renders_aws_signing_and_host_env_keys() {
        let cfg = EnvoyConfig::new()
            .cluster("object_storage", 1)
            .cluster("aws_imds", 2)
            .cluster_aws_signing("object_storage", "eu-west-1", true)
            .host_env_keys(&["AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_REGION"])
            .hide_host_env_keys(&["AWS_SECRET_ACCESS_KEY"])
            .wasm(Path::new("/x/f.wasm"), "{}");
        let y = cfg.to_yaml();
        assert_eq!(y.matches("aws_request_signing").count(), 2, "{y}");
        assert!(
            y.contains("port_value: 1 }\n    typed_extension_protocol_options:\n"),
            "{y}"
        );
        assert!(y.contains("region: \"eu-west-1\"\n"), "{y}");
        assert!(y.contains("environment_credential_provider: {}"), "{y}");
        assert!(
            y.contains("upstream_codec.v3.UpstreamCodec\n  - name: \"aws_imds\""),
            "{y}"
        );
        assert!(y.contains("- AWS_CONTAINER_CREDENTIALS_FULL_URI\n"), "{y}");
        assert_eq!(y.matches("- AWS_REGION\n").count(), 1, "{y}");
        assert!(!y.contains("- AWS_SECRET_ACCESS_KEY"), "{y}");
        assert!(y.contains("- AWS_ACCESS_KEY_ID\n"), "{y}");
        let plain = EnvoyConfig::new().cluster("object_storage", 1).to_yaml();
        assert!(
            !plain.contains("typed_extension_protocol_options"),
            "{plain}"
        );
    }

    #[test]
    fn yaml_renders_upstream_tls() {
        let y = EnvoyConfig::new()
            .cluster("plain", 1)
            .cluster("object_storage", 2)
            .cluster_tls(
                "object_storage",
                Path::new("/t/ca.pem"),
                "localhost",
                &["localhost", "blob.test"],
            )
            .to_yaml();
        assert_eq!(y.matches("transport_socket:").count(), 1, "{y}");
        assert!(
            y.contains("port_value: 2 }\n    transport_socket:\n"),
            "{y}"
        );
        assert!(y.contains("sni: \"localhost\"\n"), "{y}");
        assert!(
            y.contains("trusted_ca: { filename: \"/t/ca.pem\" }\n"),
            "{y}"
        );
        assert!(y.contains("matcher: { exact: \"blob.test\" }\n"), "{y}");
    }
}
