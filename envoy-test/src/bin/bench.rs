//! `make bench`: what fallback-config costs each request, and what config
//! changes and cold starts cost, measured from outside a real Envoy, side
//! by side with plain Envoy and with a no-op wasm filter (issue 11; how to
//! run it and what each figure means: `bench/README.md`).
//!
//! One run, three phases, each repeated for `ROUNDS` rounds in which the
//! variants take turns (A B A B ...), so that every ratio compares
//! measurements taken seconds apart (this machine kind drifts ±20 %):
//!
//! 1. **steady**: plain Envoy, the no-op filter (`bench/noop-filter`), and
//!    fallback-config with 10, 1,000 and 20,000 routes (and the same with
//!    a "before" module when `BENCH_WASM_BEFORE` is set). Per variant:
//!    the maximum throughput (wrk, closed loop), then at one fixed rate
//!    (oha `-q`, latency-corrected) Envoy's CPU per request and p50/p99.
//! 2. **churn**: fallback-config with a 20,000-route (~5 MB) config,
//!    without and with export to s3s-fs: p99 and max latency at the fixed
//!    rate while the config does not change, then while the fake CP
//!    serves a new revision every second.
//! 3. **cold**: a fresh Envoy with the CP down imports a small and a
//!    ~10 MB snapshot from s3s-fs: time from its first answer (503, no
//!    config: the listener is up) to its first 200.
//!
//! Envoy (`--concurrency 2`, the harness's) runs on its own core(s);
//! this driver, its fake control planes, s3s-fs, nginx (the upstream),
//! wrk and oha on the other(s), all pinned with `taskset`.
//!
//! The helper modules live in `envoy-test/src/bench/` and are compiled
//! into this binary only (not into the harness library).

#[path = "../bench/gen.rs"]
mod gen;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/tools.rs"]
mod tools;

use envoy_test::control_plane::ControlPlane;
use envoy_test::envelope::{self, VERSION};
use envoy_test::envoy::{log_line_time, Envoy, EnvoyConfig, HOST_ENV_KEYS};
use envoy_test::plugin::PluginConfig;
use envoy_test::process::Proc;
use envoy_test::store::{Store, StoreKind};
use envoy_test::workdir::WorkDir;
use envoy_test::{bins, http, ports};
use report::{show, Figures, Table};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tools::{cpu, Cores, Load};

/// The bucket every phase uses (one s3s-fs).
const BUCKET: &str = "bench";
/// The CP path.
const CP_PATH: &str = "/v1/config";
/// The route counts of the steady phase.
const ROUTE_COUNTS: [usize; 3] = [10, 1_000, 20_000];
/// The route count of the config that changes (the churn phase).
const CHURN_ROUTES: usize = 20_000;
/// Distinct request paths per config (asked in turn).
const PATHS: usize = 1024;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nBENCH FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the environment asks for (see bench/README.md).
struct Opts {
    rounds: usize,
    quick: bool,
    /// One wrk or oha run of the steady phase.
    run: Duration,
    /// One window of the churn phase (once steady, once changing).
    churn_window: Duration,
    /// Load on each new Envoy before it is measured (JIT tiers, pools).
    warmup: Duration,
    /// Requests per second of the steady phase's fixed-rate runs (and of
    /// the churn phase's unless `churn_rate`); `None`: chosen after the
    /// first round's throughputs (see [`Rates`]).
    rate: Option<u32>,
    /// Requests per second of the churn phase.
    churn_rate: Option<u32>,
    wrk_connections: u32,
    oha_connections: u32,
    cores: Cores,
    /// The machine's cores (read before this process pins itself).
    machine_cores: usize,
    envoy: PathBuf,
    noop: PathBuf,
    modules: Vec<Module>,
    oha: String,
    wrk: String,
    nginx: String,
    phases: Vec<String>,
    /// Size of the large snapshot of the cold phase.
    large_snapshot_bytes: usize,
}

/// A build of fallback-config under test.
#[derive(Clone, Debug)]
struct Module {
    /// `current` (FALLBACK_CONFIG_WASM) or `before` (BENCH_WASM_BEFORE).
    name: &'static str,
    path: PathBuf,
    /// Runs as the filter (`"role": "worker"`) plus a singleton
    /// `envoy.bootstrap.wasm` service on the main thread that drives
    /// (`"role": "driver"`), instead of the filter alone.
    driver_service: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value")),
        _ => Ok(default),
    }
}

impl Opts {
    fn from_env() -> Result<Opts, String> {
        let quick = env_or("BENCH_QUICK", 0u32)? == 1;
        let secs = |name: &str, full: f64, short: f64| -> Result<Duration, String> {
            Ok(Duration::from_secs_f64(env_or(
                name,
                if quick { short } else { full },
            )?))
        };
        let rate: u32 = env_or("BENCH_RATE", 0)?;
        let churn_rate: u32 = env_or("BENCH_CHURN_RATE", 0)?;
        let envoy = bins::check(
            "Envoy binary",
            bins::ENVOY_BIN,
            &bins::envoy_path(),
            "Envoy 1.40.0 (`make setup`)",
        )?;
        bins::check(
            "s3s-fs binary",
            bins::S3S_FS_BIN,
            &bins::s3s_fs_path(),
            "s3s-fs 0.17.0 (`make setup`)",
        )?;
        let current = bins::check(
            "fallback-config wasm module",
            bins::FALLBACK_CONFIG_WASM,
            &bins::wasm_path(),
            "`make wasm`",
        )?;
        let noop_default = bins::workspace_root().join("target/bench/noop_filter.wasm");
        let noop = bins::check(
            "no-op filter module",
            "BENCH_NOOP_WASM",
            &std::env::var_os("BENCH_NOOP_WASM")
                .map(PathBuf::from)
                .unwrap_or(noop_default),
            "`make bench` builds bench/noop-filter",
        )?;
        let mut modules = Vec::new();
        if let Some(before) = std::env::var_os("BENCH_WASM_BEFORE").filter(|v| !v.is_empty()) {
            let path = bins::check(
                "the \"before\" module",
                "BENCH_WASM_BEFORE",
                Path::new(&before),
                "a fallback_config.wasm built from an older commit",
            )?;
            modules.push(Module {
                name: "before",
                path,
                driver_service: false,
            });
        }
        // The topology the shipped example config uses, unless told.
        let shipped = std::fs::read_to_string(bins::workspace_root().join("wasm/envoy.yaml"))
            .unwrap_or_default()
            .contains("envoy.bootstrap.wasm");
        let driver_service = match std::env::var("BENCH_DRIVER_SERVICE").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            Ok("") | Err(_) => shipped,
            Ok(v) => return Err(format!("BENCH_DRIVER_SERVICE={v:?}: 1, 0 or unset")),
        };
        modules.push(Module {
            name: "current",
            path: current,
            driver_service,
        });
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let oha_default = format!("{home}/.cache/fallback-config/oha/bin/oha");
        let phases = std::env::var("BENCH_PHASES")
            .unwrap_or_else(|_| "steady,churn,cold".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        for p in &phases {
            if !["steady", "churn", "cold"].contains(&p.as_str()) {
                return Err(format!(
                    "BENCH_PHASES: unknown phase {p:?} (steady, churn, cold)"
                ));
            }
        }
        let opts = Opts {
            rounds: env_or("ROUNDS", if quick { 1 } else { 3 })?.max(1),
            quick,
            run: secs("BENCH_SECONDS", 5.0, 2.0)?,
            churn_window: secs("BENCH_CHURN_SECONDS", 6.0, 3.0)?,
            warmup: secs("BENCH_WARMUP_SECONDS", 2.0, 1.0)?,
            rate: (rate > 0).then_some(rate),
            churn_rate: (churn_rate > 0)
                .then_some(churn_rate)
                .or((rate > 0).then_some(rate)),
            wrk_connections: env_or("BENCH_WRK_CONNECTIONS", 64)?,
            oha_connections: env_or("BENCH_OHA_CONNECTIONS", 16)?,
            cores: Cores::from_env(),
            machine_cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            envoy,
            noop,
            modules,
            oha: std::env::var("OHA_BIN").unwrap_or(oha_default),
            wrk: std::env::var("WRK_BIN").unwrap_or_else(|_| "wrk".into()),
            nginx: std::env::var("NGINX_BIN").unwrap_or_else(|_| "nginx".into()),
            phases,
            large_snapshot_bytes: env_or("BENCH_LARGE_SNAPSHOT_MB", 10usize)? << 20,
        };
        for (what, bin) in [
            ("oha", &opts.oha),
            ("wrk", &opts.wrk),
            ("nginx", &opts.nginx),
        ] {
            tools::run("sh", &["-c".into(), format!("command -v {bin}")]).map_err(|_| {
                format!("{what} not found ({bin}): run `make bench`, which installs it")
            })?;
        }
        Ok(opts)
    }

    fn phase(&self, name: &str) -> bool {
        self.phases.iter().any(|p| p == name)
    }
}

fn run() -> Result<(), String> {
    let opts = Opts::from_env()?;
    // Before any thread or child exists: everything but Envoy inherits it.
    tools::pin_self(&opts.cores.load)?;
    let dir = WorkDir::new("bench");
    let result = run_in(&opts, &dir);
    if result.is_err() {
        // Keep the configs and logs to look at (WorkDir keeps them then).
        std::env::set_var("ENVOY_TEST_KEEP", "1");
    }
    result
}

fn run_in(opts: &Opts, dir: &WorkDir) -> Result<(), String> {
    let facts = machine_facts(opts);
    println!("fallback-config benchmark (bench/README.md)\n{facts}");
    let bench = Bench::start(opts, dir)?;
    let mut figs = Figures::default();
    let started = Instant::now();
    let mut rates = Rates {
        steady: opts.rate.unwrap_or(1000),
        churn: opts.churn_rate.unwrap_or(500),
    };
    if opts.phase("steady") {
        rates = bench.steady(&mut figs)?;
    }
    if opts.phase("churn") {
        bench.churn(&mut figs, rates.churn)?;
    }
    if opts.phase("cold") {
        bench.cold(&mut figs)?;
    }
    let md = bench.report(&figs, rates, &facts, started.elapsed())?;
    println!("\n{md}");
    let out = bins::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
    let file = out.join("results.md");
    std::fs::write(&file, &md).map_err(|e| format!("write {}: {e}", file.display()))?;
    println!("(also written to {})", file.display());
    Ok(())
}

/// CPU, cores, kernel, Envoy version, load: the machine the figures
/// come from.
fn machine_facts(opts: &Opts) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = opts.machine_cores;
    let kernel = tools::run("uname", &["-r".into()]).unwrap_or_default();
    let envoy = tools::run(&opts.envoy.display().to_string(), &["--version".into()])
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .find(|w| {
                    w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
                })
                .map(|w| w.split('/').nth(1).unwrap_or(w).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "- machine: {cpu}, {cores} cores, {mem_gb:.0} GiB, Linux {}, load average at start {}\n\
         - Envoy {envoy} (`--concurrency 2`) on CPU {}; driver, fake CPs, s3s-fs, nginx, wrk and oha on CPU {}\n\
         - rounds: {}{}; wrk/oha runs of {:.0} s, churn windows of {:.0} s",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        opts.cores.envoy,
        opts.cores.load,
        opts.rounds,
        if opts.quick { " (BENCH_QUICK=1)" } else { "" },
        opts.run.as_secs_f64(),
        opts.churn_window.as_secs_f64(),
    )
}

/// The fixed rates (requests per second) of the latency runs. Chosen,
/// unless `BENCH_RATE` / `BENCH_CHURN_RATE` set them, from the first
/// round's throughputs so that no variant measured at a rate runs above
/// 40 % of its capacity: one rate for every steady run (from the slowest
/// variant with at most 1,000 routes; a variant too slow for it, such as
/// a linear scan of 20,000 routes, is not run at it), and one for the
/// churn phase (from the slowest 20,000-route variant).
#[derive(Clone, Copy, Debug)]
struct Rates {
    steady: u32,
    churn: u32,
}

/// 40 % of `rps`, in steps of 50, at least 100.
fn rate_for(rps: f64) -> u32 {
    ((rps * 0.4 / 50.0).floor() as u32 * 50).max(100)
}

/// The servers shared by every phase.
struct Bench<'a> {
    opts: &'a Opts,
    dir: &'a WorkDir,
    store: Store,
    nginx: tools::Nginx,
}

/// The wasm an Envoy runs.
enum Wasm<'m> {
    None,
    Noop,
    /// A module and its plugin config (boxed: it is large).
    Module(&'m Module, Box<PluginConfig>),
}

/// The filter's plugin JSON when a driver service runs beside it: it only
/// serves (as in `wasm/envoy.yaml`).
const WORKER_JSON: &str = r#"{"role": "worker", "upstream_header": "x-fallback-upstream"}"#;

/// One variant of the steady phase.
#[derive(Clone, Debug)]
enum Kind {
    Plain,
    Noop,
    Filter { module: Module, routes: usize },
}

/// A running Envoy of the steady phase and how to load it.
struct Running {
    name: String,
    /// Routes of its config (0: plain Envoy and the no-op filter).
    routes: usize,
    envoy: Envoy,
    paths: PathBuf,
    /// Request headers the client sends (plain Envoy: the upstream).
    headers: Vec<String>,
}

/// Envoy's request counters, and its CPU time, over one measurement.
#[derive(Clone, Copy, Debug)]
struct Window {
    cpu_ns: u64,
    /// Requests received (`downstream_rq_total`).
    requests: u64,
    /// Requests answered 4xx or 5xx.
    failed: u64,
}

impl Window {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_ns as f64 / 1e3 / self.requests.max(1) as f64
    }

    /// Fails when more than 0.1 % of the requests were answered 4xx or
    /// 5xx: the routes do not match what is asked (or the upstream
    /// failed), and nothing measured means what it says. (Requests still
    /// in flight when a load generator stops count in neither.)
    fn check(&self, what: &str, envoy: &Envoy) -> Result<(), String> {
        if self.requests == 0 || self.failed * 1000 > self.requests {
            return Err(format!(
                "{what}: Envoy answered {} of {} requests with 4xx or 5xx; log tail:\n{}",
                self.failed,
                self.requests,
                envoy.log_tail(15)
            ));
        }
        Ok(())
    }
}

fn pretty_count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn variant_name(kind: &Kind) -> String {
    match kind {
        Kind::Plain => "plain Envoy".into(),
        Kind::Noop => "no-op filter".into(),
        Kind::Filter { module, routes } => {
            format!("{} {} routes", module.name, pretty_count(*routes))
        }
    }
}

/// `downstream_rq_total` and `downstream_rq_4xx` + `downstream_rq_5xx`
/// of the listener.
fn rq_counters(envoy: &Envoy) -> Result<(u64, u64), String> {
    let m = envoy.stats_matching(r"^http\.ingress\.downstream_rq_(total|4xx|5xx)$")?;
    let get = |k: &str| {
        m.get(&format!("http.ingress.downstream_rq_{k}"))
            .copied()
            .ok_or_else(|| format!("Envoy {} has no stat downstream_rq_{k}", envoy.name()))
    };
    Ok((get("total")?, get("4xx")? + get("5xx")?))
}

/// Runs `f` and reads Envoy's CPU time and request counters around it.
fn measured<T>(
    envoy: &mut Envoy,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<(T, Window), String> {
    let pid = envoy.process().pid();
    let (rq0, bad0) = rq_counters(envoy)?;
    let c0 = cpu::sample(pid)?;
    let t = f()?;
    let c1 = cpu::sample(pid)?;
    let (rq1, bad1) = rq_counters(envoy)?;
    Ok((
        t,
        Window {
            cpu_ns: cpu::used_ns(c0, c1),
            requests: rq1.saturating_sub(rq0),
            failed: bad1.saturating_sub(bad0),
        },
    ))
}

/// Polls `GET path` until it answers 200.
fn wait_200(envoy: &Envoy, path: &str, timeout: Duration) -> Result<(), String> {
    envoy_test::wait::try_until(
        &format!("Envoy {} to answer GET {path} with 200", envoy.name()),
        timeout,
        || match envoy.get(path, &[]) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(r.summary()),
            Err(e) => Err(e.to_string()),
        },
    )
}

fn write_paths(dir: &Path, routes: usize) -> Result<PathBuf, String> {
    let path = dir.join(format!("paths-{routes}.txt"));
    if !path.is_file() {
        let text: String = gen::request_paths(routes, PATHS)
            .into_iter()
            .map(|p| p + "\n")
            .collect();
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(path)
}

/// The round label of progress lines.
fn round_label(round: usize, rounds: usize) -> String {
    format!("[round {}/{rounds}]", round + 1)
}

impl<'a> Bench<'a> {
    fn start(opts: &'a Opts, dir: &'a WorkDir) -> Result<Bench<'a>, String> {
        let store = Store::start(StoreKind::S3, dir, BUCKET);
        let nginx = tools::Nginx::start(
            &opts.nginx,
            &dir.join("nginx"),
            ports::free_port(),
            &opts.cores.load,
        )?;
        Ok(Bench {
            opts,
            dir,
            store,
            nginx,
        })
    }

    /// Envoy `name`'s config (the upstream, nginx; with a module, the
    /// clusters it uses: CP and storage, and the driver service when the
    /// module runs with one) and its pinned binary (see
    /// [`tools::pinned_envoy`]).
    fn envoy_setup(
        &self,
        name: &str,
        wasm: Wasm,
        cp_port: Option<u16>,
    ) -> Result<(EnvoyConfig, PathBuf), String> {
        let mut cfg = EnvoyConfig::new()
            .normalized_paths()
            .cluster(gen::UPSTREAM, self.nginx.port());
        if let Some(port) = cp_port {
            cfg = cfg.cluster("control_plane", port);
            for (name, port) in self.store.clusters() {
                cfg = cfg.cluster(name, port);
            }
        }
        match wasm {
            Wasm::None => {}
            Wasm::Noop => cfg = cfg.wasm(&self.opts.noop, gen::UPSTREAM),
            Wasm::Module(m, plugin) if m.driver_service => {
                let service = plugin.with_role("driver").to_json();
                cfg = cfg.wasm(&m.path, WORKER_JSON).service(&service);
            }
            Wasm::Module(m, plugin) => cfg = cfg.wasm(&m.path, &plugin.to_json()),
        }
        let bin = tools::pinned_envoy(
            self.dir.path(),
            name,
            &self.opts.envoy,
            &self.opts.cores.envoy,
        )?;
        Ok((cfg, bin))
    }

    /// Starts Envoy `name` and waits for admin `/ready`.
    fn start_envoy(&self, name: &str, wasm: Wasm, cp_port: Option<u16>) -> Result<Envoy, String> {
        let (cfg, bin) = self.envoy_setup(name, wasm, cp_port)?;
        Envoy::start(&bin, name, cfg, self.dir.path(), &self.store.env())
    }

    /// The filter's plugin config with storage under `prefix`.
    fn plugin(&self, prefix: &str) -> PluginConfig {
        let mut p = self.store.plugin(BUCKET, prefix);
        p.poll_interval_ms = 1000;
        p
    }

    fn load<'b>(
        &'b self,
        port: u16,
        paths: &'b Path,
        headers: &'b [String],
        connections: u32,
        duration: Duration,
    ) -> Load<'b> {
        Load {
            port,
            paths_file: paths,
            headers,
            duration,
            connections,
            cpus: &self.opts.cores.load,
        }
    }

    /// Phase 1. Returns the fixed rates it used.
    fn steady(&self, figs: &mut Figures) -> Result<Rates, String> {
        let opts = self.opts;
        println!("\n== steady: throughput (wrk) and, at one fixed rate (oha), CPU per request and latency");
        let mut cps = Vec::new();
        for n in ROUTE_COUNTS {
            let cp = ControlPlane::start(ports::free_port(), CP_PATH)
                .map_err(|e| format!("fake CP: {e}"))?;
            let body = gen::config(&format!("steady-{n}"), n);
            println!(
                "   config of {} routes: {} bytes",
                pretty_count(n),
                body.len()
            );
            cp.set_config(&body);
            cps.push((n, cp));
        }
        let mut kinds = vec![Kind::Plain, Kind::Noop];
        for n in ROUTE_COUNTS {
            for m in &opts.modules {
                kinds.push(Kind::Filter {
                    module: m.clone(),
                    routes: n,
                });
            }
        }
        let plain_header = vec![format!("x-fallback-upstream: {}", gen::UPSTREAM)];
        let mut running: Vec<Running> = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let name = variant_name(kind);
            let file = format!("steady-{i}");
            // Plain Envoy and the no-op filter get the 1,000-route requests.
            let (envoy, routes, headers) = match kind {
                Kind::Plain => (
                    self.start_envoy(&file, Wasm::None, None)?,
                    0,
                    plain_header.clone(),
                ),
                Kind::Noop => (self.start_envoy(&file, Wasm::Noop, None)?, 0, Vec::new()),
                Kind::Filter { module, routes } => {
                    let cp = cps
                        .iter()
                        .find(|(n, _)| n == routes)
                        .map(|(_, cp)| cp.port())
                        .ok_or("no CP for that route count")?;
                    let plugin = self.plugin(&format!("steady/{file}"));
                    let wasm = Wasm::Module(module, Box::new(plugin));
                    (
                        self.start_envoy(&file, wasm, Some(cp))?,
                        *routes,
                        Vec::new(),
                    )
                }
            };
            let paths = write_paths(self.dir.path(), if routes == 0 { 1000 } else { routes })?;
            let first = std::fs::read_to_string(&paths)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string))
                .unwrap_or_else(|| "/".into());
            let probe = headers
                .iter()
                .filter_map(|h| h.split_once(": "))
                .collect::<Vec<_>>();
            envoy_test::wait::try_until(
                &format!("{name} to answer 200"),
                Duration::from_secs(60),
                || match envoy.get(&first, &probe) {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(r.summary()),
                    Err(e) => Err(e.to_string()),
                },
            )?;
            let warm = self.load(
                envoy.port(),
                &paths,
                &headers,
                opts.wrk_connections,
                opts.warmup,
            );
            tools::wrk(&opts.wrk, &warm, self.dir.path())?;
            println!(
                "   started {name} ({file}: {})",
                envoy.config_path().display()
            );
            running.push(Running {
                name,
                routes,
                envoy,
                paths,
                headers,
            });
        }
        let mut rates: Option<Rates> = None;
        let envoy_cores = opts.cores.envoy.split(',').count().max(1) as f64;
        for round in 0..opts.rounds {
            let label = round_label(round, opts.rounds);
            for r in running.iter_mut() {
                let load = self.load(
                    r.envoy.port(),
                    &r.paths,
                    &r.headers,
                    opts.wrk_connections,
                    opts.run,
                );
                let j0 = cpu::cores_jiffies(&opts.cores.load);
                let (w, win) = measured(&mut r.envoy, || {
                    tools::wrk(&opts.wrk, &load, self.dir.path())
                })?;
                let load_busy = match (j0, cpu::cores_jiffies(&opts.cores.load)) {
                    (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                        format!("{:.0} %", (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64)
                    }
                    _ => "?".into(),
                };
                win.check(&format!("{} (wrk)", r.name), &r.envoy)?;
                if w.bad_status * 1000 > w.requests || w.socket_errors * 1000 > w.requests {
                    return Err(format!(
                        "{}: wrk saw {} bad statuses and {} socket errors in {} requests",
                        r.name, w.bad_status, w.socket_errors, w.requests
                    ));
                }
                let busy = win.cpu_ns as f64 / 1e9 / w.seconds.max(1e-9) / envoy_cores;
                println!(
                    "   {label} throughput {:<22} {:>8.0} rps   Envoy busy {:>3.0} % of its core(s) ({:.1} µs CPU/request), load core(s) {load_busy}",
                    r.name,
                    w.rps(),
                    busy * 100.0,
                    win.cpu_us_per_request()
                );
                if busy < 0.9 {
                    println!("      (Envoy was not the bottleneck: the load core(s) or other processes on Envoy's core held it back)");
                }
                figs.put("rps", &r.name, round, w.rps());
                figs.put("cpu max", &r.name, round, win.cpu_us_per_request());
                figs.put("busy", &r.name, round, busy);
            }
            let rate = rates
                .get_or_insert_with(|| {
                    let chosen = self.choose_rates(&running, figs);
                    println!(
                        "   fixed rates: {} requests/s for the steady runs, {} for the churn phase{}",
                        chosen.steady,
                        chosen.churn,
                        if opts.rate.is_none() { " (40 % of the slowest variant's throughput; BENCH_RATE and BENCH_CHURN_RATE set them)" } else { "" }
                    );
                    chosen
                })
                .steady;
            for r in running.iter_mut() {
                let load = self.load(
                    r.envoy.port(),
                    &r.paths,
                    &r.headers,
                    opts.oha_connections,
                    opts.run,
                );
                let capacity = figs.get("rps", &r.name).first().copied().unwrap_or(0.0);
                if (rate as f64) > capacity * 0.7 {
                    println!(
                        "   {label} {rate}/s      {:<22} not run: {rate}/s would saturate it ({capacity:.0} rps)",
                        r.name
                    );
                    continue;
                }
                let (o, win) = measured(&mut r.envoy, || {
                    tools::oha(&opts.oha, &load, rate, self.dir.path())
                })?;
                win.check(&format!("{} (oha)", r.name), &r.envoy)?;
                if !o.problems.is_empty() {
                    println!("      {}: oha saw {}", r.name, o.problems.join(", "));
                }
                println!(
                    "   {label} {rate}/s      {:<22} {:>8.1} µs CPU/request   p50 {:.3} ms   p99 {:.3} ms   max {:.1} ms",
                    r.name,
                    win.cpu_us_per_request(),
                    o.p50_ms,
                    o.p99_ms,
                    o.max_ms
                );
                figs.put("cpu", &r.name, round, win.cpu_us_per_request());
                figs.put("p50", &r.name, round, o.p50_ms);
                figs.put("p99", &r.name, round, o.p99_ms);
                figs.put("max", &r.name, round, o.max_ms);
            }
        }
        for r in running.iter_mut() {
            crash_check(&mut r.envoy)?;
        }
        Ok(rates.unwrap_or(Rates {
            steady: 1000,
            churn: 500,
        }))
    }

    /// See [`Rates`].
    fn choose_rates(&self, running: &[Running], figs: &Figures) -> Rates {
        let slowest = |keep: &dyn Fn(&Running) -> bool| {
            running
                .iter()
                .filter(|r| keep(r))
                .filter_map(|r| figs.get("rps", &r.name).first().copied())
                .fold(f64::INFINITY, f64::min)
        };
        let steady = self
            .opts
            .rate
            .unwrap_or_else(|| rate_for(slowest(&|r| r.routes <= 1000)));
        let churn = self.opts.churn_rate.unwrap_or_else(|| {
            let at_churn_size = slowest(&|r| r.routes == CHURN_ROUTES);
            if at_churn_size.is_finite() {
                rate_for(at_churn_size)
            } else {
                steady
            }
        });
        Rates { steady, churn }
    }

    /// Phase 2.
    fn churn(&self, figs: &mut Figures, rate: u32) -> Result<(), String> {
        let opts = self.opts;
        println!("\n== churn: p99 and max latency at {rate}/s, config unchanged, then a new revision every second");
        let template = gen::Template::new(CHURN_ROUTES);
        let size = template.render("churn-0").len();
        println!(
            "   config of {} routes: {:.1} MB",
            pretty_count(CHURN_ROUTES),
            size as f64 / 1e6
        );
        let paths = write_paths(self.dir.path(), CHURN_ROUTES)?;
        struct Churner {
            name: String,
            envoy: Envoy,
            cp: ControlPlane,
        }
        let mut churners = Vec::new();
        for export in [false, true] {
            for m in &opts.modules {
                let name = format!("{}{}", m.name, if export { " + export" } else { "" });
                let file = format!("churn-{}{}", m.name, if export { "-export" } else { "" });
                let cp = ControlPlane::start(ports::free_port(), CP_PATH)
                    .map_err(|e| format!("fake CP: {e}"))?;
                cp.set_config(&template.render("churn-0"));
                let mut plugin = self.plugin(&format!("churn/{file}"));
                // Each revision is seen within a quarter of a second.
                plugin.poll_interval_ms = 250;
                if export {
                    plugin.export = true;
                    plugin.node_id = Some(format!("bench-{file}"));
                }
                let envoy =
                    self.start_envoy(&file, Wasm::Module(m, Box::new(plugin)), Some(cp.port()))?;
                let first = gen::request_paths(CHURN_ROUTES, 1).remove(0);
                wait_200(&envoy, &first, Duration::from_secs(60))?;
                if export {
                    envoy.wait_log("exported revision churn-0", Duration::from_secs(60))?;
                }
                let none: Vec<String> = Vec::new();
                let warm = self.load(
                    envoy.port(),
                    &paths,
                    &none,
                    opts.oha_connections,
                    opts.warmup,
                );
                tools::oha(&opts.oha, &warm, rate, self.dir.path())?;
                println!("   started {name} ({file})");
                churners.push(Churner { name, envoy, cp });
            }
        }
        let mut revision = 0u64;
        let none: Vec<String> = Vec::new();
        for round in 0..opts.rounds {
            let label = round_label(round, opts.rounds);
            for c in churners.iter_mut() {
                let load = self.load(
                    c.envoy.port(),
                    &paths,
                    &none,
                    opts.oha_connections,
                    opts.churn_window,
                );
                let (steady, win) = measured(&mut c.envoy, || {
                    tools::oha(&opts.oha, &load, rate, self.dir.path())
                })?;
                win.check(&format!("{} (steady)", c.name), &c.envoy)?;
                let mark = c.envoy.log_mark();
                let stop = AtomicBool::new(false);
                let first = revision + 1;
                let (changing, published) = std::thread::scope(|s| {
                    let changer = s.spawn(|| {
                        let start = Instant::now();
                        let mut n = 0u64;
                        while !stop.load(Ordering::SeqCst) {
                            c.cp.set_config(&template.render(&format!("churn-{}", first + n)));
                            n += 1;
                            let next = start + Duration::from_secs(n);
                            while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        n
                    });
                    let r = measured(&mut c.envoy, || {
                        tools::oha(&opts.oha, &load, rate, self.dir.path())
                    });
                    stop.store(true, Ordering::SeqCst);
                    (r, changer.join().unwrap_or(0))
                });
                let (changing, win) = changing?;
                win.check(&format!("{} (changing)", c.name), &c.envoy)?;
                revision += published;
                // Let the last revision's work end before anything else is
                // measured on Envoy's core.
                std::thread::sleep(Duration::from_secs(2));
                let applied = c
                    .envoy
                    .log_lines_since(mark, "CP fetched revision churn-")
                    .len();
                let exported = c
                    .envoy
                    .log_lines_since(mark, "exported revision churn-")
                    .len();
                println!(
                    "   {label} {:<18} steady p99 {:.3} ms max {:.1} ms | changing p99 {:.3} ms max {:.1} ms ({published} revisions published, {applied} applied{})",
                    c.name,
                    steady.p99_ms,
                    steady.max_ms,
                    changing.p99_ms,
                    changing.max_ms,
                    if c.name.contains("export") { format!(", {exported} exported") } else { String::new() }
                );
                figs.put("churn steady p99", &c.name, round, steady.p99_ms);
                figs.put("churn steady max", &c.name, round, steady.max_ms);
                figs.put("churn p99", &c.name, round, changing.p99_ms);
                figs.put("churn max", &c.name, round, changing.max_ms);
                figs.put(
                    "churn applied",
                    &c.name,
                    round,
                    applied as f64 / published.max(1) as f64,
                );
            }
        }
        for c in churners.iter_mut() {
            crash_check(&mut c.envoy)?;
        }
        Ok(())
    }

    /// Phase 3.
    fn cold(&self, figs: &mut Figures) -> Result<(), String> {
        let opts = self.opts;
        println!("\n== cold: a new Envoy, CP down, imports a snapshot from s3s-fs");
        let small = gen::config("cold-small", ROUTE_COUNTS[0]);
        let per_route = gen::config("x", 1000).len() / 1000;
        let large_routes = opts.large_snapshot_bytes / per_route.max(1);
        let large = gen::config("cold-large", large_routes);
        let exported_at = envelope::format_rfc3339(std::time::SystemTime::now());
        let sizes = [("small", &small), ("large", &large)];
        for (size, config) in sizes {
            let env = envelope::build(
                VERSION,
                &format!("cold-{size}"),
                "bench",
                &exported_at,
                config,
            );
            self.store.write(
                BUCKET,
                &format!("cold/{size}/{VERSION}/config.json"),
                env.as_bytes(),
            );
            println!(
                "   {size} snapshot: {} routes, {} bytes",
                pretty_count(if size == "small" {
                    ROUTE_COUNTS[0]
                } else {
                    large_routes
                }),
                pretty_count(env.len())
            );
        }
        // Route 0 is in both configs.
        let probe = gen::request_paths(1, 1).remove(0);
        for round in 0..opts.rounds {
            let label = round_label(round, opts.rounds);
            for m in &opts.modules {
                for (size, _) in sizes {
                    let c = self.cold_start(m, size, &probe, round)?;
                    println!(
                        "   {label} {:<8} {size:<5}  first answer {:>5.0} ms after start, first 200 {:>6.1} ms after it (import in the log: {})",
                        m.name,
                        c.first_answer_ms,
                        c.first_200_ms,
                        c.import_log_ms.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "?".into())
                    );
                    figs.put(&format!("cold {size}"), m.name, round, c.first_200_ms);
                    figs.put(
                        &format!("cold {size} start"),
                        m.name,
                        round,
                        c.first_answer_ms,
                    );
                    if let Some(v) = c.import_log_ms {
                        figs.put(&format!("cold {size} log"), m.name, round, v);
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts Envoy with the CP down and the snapshot `size` to import,
    /// and polls its listener every 2 ms (not through [`Envoy::start`],
    /// which polls admin every 100 ms).
    fn cold_start(
        &self,
        m: &Module,
        size: &str,
        probe: &str,
        round: usize,
    ) -> Result<Cold, String> {
        // Nothing ever listens on its port: every CP request is refused.
        let cp = ControlPlane::new_down(ports::free_port(), CP_PATH);
        let mut plugin = self.plugin(&format!("cold/{size}"));
        plugin.import = true;
        plugin.import_retry_initial_ms = Some(200);
        plugin.import_retry_max_ms = Some(1000);
        let name = format!("cold-{}-{size}-{round}", m.name);
        let (cfg, bin) =
            self.envoy_setup(&name, Wasm::Module(m, Box::new(plugin)), Some(cp.port()))?;
        let yaml = self.dir.join(&format!("{name}.yaml"));
        std::fs::write(&yaml, cfg.to_yaml())
            .map_err(|e| format!("write {}: {e}", yaml.display()))?;
        let args: Vec<String> = [
            "-c",
            &yaml.display().to_string(),
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "-l",
            "info",
            "--file-flush-interval-msec",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.dir.join(&format!("{name}.log"));
        let started = Instant::now();
        let mut proc = Proc::spawn(&name, &bin, &args, &self.store.env(), &HOST_ENV_KEYS, &log)
            .map_err(|e| format!("start {name}: {e}"))?;
        let mut first_answer = None;
        let first_200 = loop {
            if let Some(status) = proc.exited() {
                return Err(format!("{name} exited ({status}): {}", proc.log_tail(20)));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("{name}: no 200 within 60 s: {}", proc.log_tail(20)));
            }
            if let Ok(r) = http::get(cfg.listener_port, probe, &[]) {
                let now = started.elapsed();
                first_answer.get_or_insert(now);
                if r.status == 200 {
                    break now;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let first_answer = first_answer.unwrap_or(first_200);
        // The log is flushed every 200 ms.
        std::thread::sleep(Duration::from_millis(400));
        let text = proc.log();
        let at = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .and_then(log_line_time)
        };
        let import_log_ms = match (
            at("importing fallback config from"),
            at("imported revision"),
        ) {
            (Some(a), Some(b)) => Some((b - a) * 1e3),
            _ => None,
        };
        proc.kill();
        Ok(Cold {
            first_answer_ms: first_answer.as_secs_f64() * 1e3,
            first_200_ms: (first_200 - first_answer).as_secs_f64() * 1e3,
            import_log_ms,
        })
    }

    fn report(
        &self,
        figs: &Figures,
        rates: Rates,
        facts: &str,
        took: Duration,
    ) -> Result<String, String> {
        let opts = self.opts;
        let rate = rates.steady;
        let mut md = String::new();
        md.push_str(&format!(
            "## Results\n\n{facts}\n- fixed rates: {} requests/s (steady config), {} requests/s (changing config); {PATHS} request paths per config, half on random routes, half on the last 2 % of the list\n{}- took {:.0} s; values are median (min–max) over the rounds; ratios are taken round by round\n\n",
            rates.steady,
            rates.churn,
            opts.modules
                .iter()
                .map(|m| format!(
                    "- {}: {} ({})\n",
                    m.name,
                    m.path.display(),
                    if m.driver_service {
                        "filter with role worker + singleton bootstrap service with role driver"
                    } else {
                        "the filter alone"
                    }
                ))
                .collect::<String>(),
            took.as_secs_f64()
        ));
        let noop = variant_name(&Kind::Noop);
        let plain = variant_name(&Kind::Plain);
        if figs.has("rps", &plain) {
            let mut names = vec![plain.clone(), noop.clone()];
            for n in ROUTE_COUNTS {
                for m in &opts.modules {
                    names.push(variant_name(&Kind::Filter {
                        module: m.clone(),
                        routes: n,
                    }));
                }
            }
            md.push_str(&format!(
                "### Envoy's CPU per request (/proc), steady config\n\n\
                 At {rate} requests/s (not saturated), and at the maximum throughput (wrk).\n\n"
            ));
            let mut t = Table::new(&[
                "variant",
                &format!("µs at {rate}/s"),
                "÷ no-op",
                "÷ plain",
                "µs at max",
                "÷ no-op",
                "÷ plain",
            ]);
            for v in &names {
                t.row(vec![
                    v.clone(),
                    show(&figs.get("cpu", v), 1),
                    show(&figs.ratio("cpu", v, &noop), 3),
                    show(&figs.ratio("cpu", v, &plain), 3),
                    show(&figs.get("cpu max", v), 1),
                    show(&figs.ratio("cpu max", v, &noop), 3),
                    show(&figs.ratio("cpu max", v, &plain), 3),
                ]);
            }
            md.push_str(&t.markdown());
            md.push_str(&format!(
                "\n### Throughput (wrk) and latency at {rate} requests/s (oha), steady config\n\n"
            ));
            let mut t = Table::new(&[
                "variant",
                "max rps",
                "÷ no-op",
                "÷ plain",
                "p50 ms",
                "p99 ms",
                "p99 ÷ no-op",
                "p99 ÷ plain",
                "max ms",
            ]);
            for v in &names {
                t.row(vec![
                    v.clone(),
                    show(&figs.get("rps", v), 0),
                    show(&figs.ratio("rps", v, &noop), 3),
                    show(&figs.ratio("rps", v, &plain), 3),
                    show(&figs.get("p50", v), 3),
                    show(&figs.get("p99", v), 3),
                    show(&figs.ratio("p99", v, &noop), 2),
                    show(&figs.ratio("p99", v, &plain), 2),
                    show(&figs.get("max", v), 1),
                ]);
            }
            md.push_str(&t.markdown());
            md.push('\n');
        }
        let churn_names: Vec<String> = [false, true]
            .iter()
            .flat_map(|e| {
                opts.modules
                    .iter()
                    .map(move |m| format!("{}{}", m.name, if *e { " + export" } else { "" }))
            })
            .collect();
        if churn_names.iter().any(|n| figs.has("churn p99", n)) {
            md.push_str(&format!(
                "### A {}-route config changing every second ({} requests/s)\n\n",
                pretty_count(CHURN_ROUTES),
                rates.churn
            ));
            let mut t = Table::new(&[
                "module",
                "p99 steady ms",
                "p99 changing ms",
                "p99 ÷ steady",
                "max steady ms",
                "max changing ms",
                "revisions applied",
            ]);
            for v in &churn_names {
                t.row(vec![
                    v.clone(),
                    show(&figs.get("churn steady p99", v), 3),
                    show(&figs.get("churn p99", v), 3),
                    show(&figs.ratio_of(v, "churn p99", "churn steady p99"), 2),
                    show(&figs.get("churn steady max", v), 1),
                    show(&figs.get("churn max", v), 1),
                    format!(
                        "{} %",
                        show(
                            &figs
                                .get("churn applied", v)
                                .iter()
                                .map(|x| x * 100.0)
                                .collect::<Vec<_>>(),
                            0
                        )
                    ),
                ]);
            }
            md.push_str(&t.markdown());
            md.push('\n');
        }
        if opts.modules.iter().any(|m| figs.has("cold small", m.name)) {
            md.push_str(&format!(
                "### Cold start with the CP down (import from s3s-fs; small: {} routes, large: {} MB)\n\n",
                pretty_count(ROUTE_COUNTS[0]),
                opts.large_snapshot_bytes >> 20
            ));
            let mut t = Table::new(&[
                "module",
                "start → first answer ms",
                "first answer → first 200, small ms",
                "same, large ms",
                "large − small ms",
                "import in the log, small ms",
                "same, large ms",
            ]);
            for m in &opts.modules {
                let v = m.name;
                t.row(vec![
                    v.to_string(),
                    show(&figs.get("cold small start", v), 0),
                    show(&figs.get("cold small", v), 1),
                    show(&figs.get("cold large", v), 1),
                    show(&figs.minus_of(v, "cold large", "cold small"), 1),
                    show(&figs.get("cold small log", v), 0),
                    show(&figs.get("cold large log", v), 0),
                ]);
            }
            md.push_str(&t.markdown());
            md.push('\n');
        }
        md.push_str("### Module sizes\n\n");
        let mut t = Table::new(&["module", "bytes", "gzip -9"]);
        let mut sized: Vec<(String, PathBuf)> = vec![("no-op filter".into(), opts.noop.clone())];
        sized.extend(
            opts.modules
                .iter()
                .map(|m| (m.name.to_string(), m.path.clone())),
        );
        for (name, path) in &sized {
            let (raw, gz) = tools::file_size(path)?;
            t.row(vec![name.clone(), raw.to_string(), gz.to_string()]);
        }
        md.push_str(&t.markdown());
        if opts.modules.len() > 1 {
            md.push('\n');
            md.push_str(&self.before_after(figs));
        }
        Ok(md)
    }

    /// The issue's figures, before and current side by side.
    fn before_after(&self, figs: &Figures) -> String {
        let noop = variant_name(&Kind::Noop);
        let plain = variant_name(&Kind::Plain);
        let name = |m: &str, n: usize| format!("{m} {} routes", pretty_count(n));
        let mut t = Table::new(&["figure", "before", "current", "current ÷ before"]);
        let mut row = |label: String, b: Vec<f64>, c: Vec<f64>, decimals: usize| {
            let ratio: Vec<f64> = c.iter().zip(&b).map(|(c, b)| c / b).collect();
            t.row(vec![
                label,
                show(&b, decimals),
                show(&c, decimals),
                show(&ratio, 3),
            ]);
        };
        let per_route_count = [
            ("CPU/request at the fixed rate", "cpu"),
            ("CPU/request at max throughput", "cpu max"),
            ("max throughput", "rps"),
        ];
        for (what, key) in per_route_count {
            for n in ROUTE_COUNTS {
                row(
                    format!("{what}, {} routes ÷ no-op", pretty_count(n)),
                    figs.ratio(key, &name("before", n), &noop),
                    figs.ratio(key, &name("current", n), &noop),
                    3,
                );
            }
        }
        row(
            "p99 at the fixed rate, 1,000 routes ÷ no-op".into(),
            figs.ratio("p99", &name("before", 1000), &noop),
            figs.ratio("p99", &name("current", 1000), &noop),
            2,
        );
        row(
            "p99 at the fixed rate, 1,000 routes ÷ plain Envoy".into(),
            figs.ratio("p99", &name("before", 1000), &plain),
            figs.ratio("p99", &name("current", 1000), &plain),
            2,
        );
        for suffix in ["", " + export"] {
            let (b, c) = (format!("before{suffix}"), format!("current{suffix}"));
            row(
                format!("p99 while the config changes ÷ unchanged{suffix}"),
                figs.ratio_of(&b, "churn p99", "churn steady p99"),
                figs.ratio_of(&c, "churn p99", "churn steady p99"),
                2,
            );
            row(
                format!("max latency while the config changes, ms{suffix}"),
                figs.get("churn max", &b),
                figs.get("churn max", &c),
                1,
            );
        }
        row(
            "first 200 after the first answer, CP down, small snapshot, ms".into(),
            figs.get("cold small", "before"),
            figs.get("cold small", "current"),
            1,
        );
        row(
            "import + apply of the large snapshot over the small one, ms".into(),
            figs.minus_of("before", "cold large", "cold small"),
            figs.minus_of("current", "cold large", "cold small"),
            1,
        );
        let mut md = String::from("### Before and current\n\n");
        md.push_str(&t.markdown());
        md
    }
}

/// What a cold start measured.
struct Cold {
    first_answer_ms: f64,
    first_200_ms: f64,
    import_log_ms: Option<f64>,
}

/// Fails when Envoy died or its log shows a wasm crash.
fn crash_check(envoy: &mut Envoy) -> Result<(), String> {
    envoy.check_alive()?;
    let crashes = envoy.wasm_crash_lines();
    if crashes.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "wasm crash in Envoy {}:\n{}",
            envoy.name(),
            crashes.join("\n")
        ))
    }
}
