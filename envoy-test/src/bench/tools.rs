//! The outside tools the benchmark drives, and what it reads from /proc.
//!
//! - CPU placement: `taskset` pins Envoy to its cores and everything else
//!   (this driver, its fake control planes, s3s-fs, nginx, wrk, oha) to the
//!   load cores, so that Envoy's CPU time is its own and the load never
//!   competes with it for a core.
//! - [`cpu`]: a process's CPU time, from `/proc/<pid>/stat` (utime + stime,
//!   the whole thread group) and, exact to the nanosecond, the sum of
//!   `/proc/<pid>/task/*/schedstat`.
//! - [`Nginx`]: nginx-light answering `200 ok` to everything, the fast
//!   upstream (one worker, keep-alive without limit, no access log).
//! - [`wrk`]: the closed-loop load for the maximum throughput.
//! - [`oha`]: the fixed-rate load (`-q`, with latency correction so that
//!   a stall counts against every request it delayed) for the latencies.

use envoy_test::process::Proc;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The CPU list of `taskset -c` for every core but Envoy's.
#[derive(Clone, Debug)]
pub struct Cores {
    /// Envoy's cores, e.g. `1`.
    pub envoy: String,
    /// Everything else, e.g. `0`.
    pub load: String,
}

impl Cores {
    /// `BENCH_ENVOY_CPUS` / `BENCH_LOAD_CPUS`, else: with 4 or more cores
    /// Envoy gets cores 2-3 and the load 0-1, else Envoy core 1 and the
    /// load core 0.
    pub fn from_env() -> Cores {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (envoy, load) = if n >= 4 { ("2,3", "0,1") } else { ("1", "0") };
        Cores {
            envoy: std::env::var("BENCH_ENVOY_CPUS").unwrap_or_else(|_| envoy.into()),
            load: std::env::var("BENCH_LOAD_CPUS").unwrap_or_else(|_| load.into()),
        }
    }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Pins this process and all its threads (and so every child started
/// afterwards, unless pinned otherwise) to `cpus`.
pub fn pin_self(cpus: &str) -> Result<(), String> {
    let pid = std::process::id().to_string();
    run(
        "taskset",
        &["-a".into(), "-p".into(), "-c".into(), cpus.into(), pid],
    )
    .map(|_| ())
}

/// Writes `<dir>/envoy-<name>.sh`, which execs Envoy under `taskset -c
/// cpus`: given to [`envoy_test::envoy::Envoy::start`] as the binary,
/// every thread Envoy ever starts is on its cores (and the pid stays
/// Envoy's).
pub fn pinned_envoy(dir: &Path, name: &str, envoy: &Path, cpus: &str) -> Result<PathBuf, String> {
    let path = dir.join(format!("envoy-{name}.sh"));
    let script = format!(
        "#!/bin/sh\nexec taskset -c {cpus} {} \"$@\"\n",
        shell_quote(&envoy.display().to_string())
    );
    std::fs::write(&path, script).map_err(|e| format!("write {}: {e}", path.display()))?;
    run("chmod", &["+x".into(), path.display().to_string()])?;
    Ok(path)
}

/// The CPU numbers of a `taskset -c` list (`0`, `2,3`, `0-3`).
pub fn cpu_list(list: &str) -> Vec<usize> {
    list.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if a <= b => (a..=b).collect(),
                _ => Vec::new(),
            }
        })
        .collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// CPU time used by a process so far.
pub mod cpu {
    use std::sync::OnceLock;

    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    fn ticks_per_second() -> u64 {
        static HZ: OnceLock<u64> = OnceLock::new();
        *HZ.get_or_init(|| {
            super::run("getconf", &["CLK_TCK".into()])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(100)
        })
    }

    /// utime + stime of the whole process (all its threads, also those
    /// that ended), from `/proc/<pid>/stat`, in nanoseconds (tick
    /// resolution: 10 ms).
    pub fn stat_ns(pid: u32) -> Result<u64, String> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
        // The command name is in parentheses and may hold spaces.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| format!("{path}: no ')' in {text:?}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of proc(5); `rest` starts at field 3.
        let field = |n: usize| -> Result<u64, String> {
            fields
                .get(n - 3)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{path}: no field {n}"))
        };
        let ticks = field(14)? + field(15)?;
        Ok(ticks * 1_000_000_000 / ticks_per_second())
    }

    /// Time on a CPU of every live thread of the process, from
    /// `/proc/<pid>/task/*/schedstat` (nanoseconds, exact); `None` when
    /// the kernel has no schedstat.
    pub fn schedstat_ns(pid: u32) -> Option<u64> {
        let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let mut total = 0u64;
        for task in dir.flatten() {
            let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(total)
    }

    /// Busy and total jiffies of the CPUs in `list` (a `taskset -c` list
    /// of numbers and ranges), from `/proc/stat`: how loaded the load
    /// generator's cores were (a saturated load core caps the throughput
    /// before Envoy does).
    pub fn cores_jiffies(list: &str) -> Option<(u64, u64)> {
        let wanted = super::cpu_list(list);
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let (mut busy, mut total) = (0u64, 0u64);
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let Some(n) = f
                .next()
                .and_then(|c| c.strip_prefix("cpu")?.parse::<usize>().ok())
            else {
                continue;
            };
            if !wanted.contains(&n) {
                continue;
            }
            let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal
            let all: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            busy += all - idle.min(all);
            total += all;
        }
        Some((busy, total))
    }

    /// Both readings at one moment.
    #[derive(Clone, Copy, Debug)]
    pub struct Sample {
        pub stat_ns: u64,
        pub sched_ns: Option<u64>,
    }

    /// Reads both.
    pub fn sample(pid: u32) -> Result<Sample, String> {
        Ok(Sample {
            sched_ns: schedstat_ns(pid),
            stat_ns: stat_ns(pid)?,
        })
    }

    /// CPU nanoseconds between two samples: schedstat when both have it
    /// (threads live through a measurement, and it has no 10 ms ticks),
    /// else `/proc/<pid>/stat`.
    pub fn used_ns(a: Sample, b: Sample) -> u64 {
        match (a.sched_ns, b.sched_ns) {
            (Some(x), Some(y)) if y >= x => y - x,
            _ => b.stat_ns.saturating_sub(a.stat_ns),
        }
    }
}

/// nginx-light as the upstream: `200 ok` for every path.
pub struct Nginx {
    /// Held for its `Drop`, which stops nginx.
    _proc: Proc,
    port: u16,
}

impl Nginx {
    /// Starts it in the foreground (no daemon, no master: one process to
    /// pin and to kill) on 127.0.0.1:`port`, on `cpus`, files in `dir`.
    pub fn start(bin: &str, dir: &Path, port: u16, cpus: &str) -> Result<Nginx, String> {
        std::fs::create_dir_all(dir.join("tmp"))
            .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  default_type text/plain;\n\
             \x20 client_body_temp_path {d}/tmp;\n\
             \x20 keepalive_requests 10000000;\n  keepalive_timeout 300s;\n\
             \x20 server {{\n    listen 127.0.0.1:{port};\n\
             \x20   location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .map_err(|e| format!("write {}: {e}", conf_path.display()))?;
        let args: Vec<String> = vec![
            "-c".into(),
            cpus.into(),
            bin.into(),
            "-p".into(),
            dir.display().to_string(),
            "-e".into(),
            dir.join("error.log").display().to_string(),
            "-c".into(),
            conf_path.display().to_string(),
        ];
        let mut proc = Proc::spawn(
            "nginx",
            Path::new("/usr/bin/taskset"),
            &args,
            &[],
            &[],
            &dir.join("nginx.log"),
        )
        .map_err(|e| format!("cannot start nginx: {e}"))?;
        proc.wait_listening(port, Duration::from_secs(10))?;
        Ok(Nginx { _proc: proc, port })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// One load run against an Envoy listener.
#[derive(Clone, Debug)]
pub struct Load<'a> {
    pub port: u16,
    /// Request paths, asked in turn (wrk) or from a file (oha).
    pub paths_file: &'a Path,
    /// Extra request headers (`name: value`).
    pub headers: &'a [String],
    pub duration: Duration,
    pub connections: u32,
    pub cpus: &'a str,
}

/// What wrk measured.
#[derive(Clone, Debug)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    /// Answers with a status of 400 or more (wrk counts those only).
    pub bad_status: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
}

impl WrkResult {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// The Lua script wrk runs: requests formatted once, asked in turn, and
/// one parseable summary line at the end.
fn wrk_script(paths_file: &Path) -> String {
    format!(
        r#"local reqs = {{}}
local i = 0
function init(args)
  for line in io.lines({path:?}) do
    reqs[#reqs + 1] = wrk.format("GET", line)
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d status=%d socket=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
end
"#,
        path = paths_file.display().to_string()
    )
}

/// Runs wrk (one thread, pinned to the load cores) for the load's duration.
pub fn wrk(bin: &str, load: &Load, script_dir: &Path) -> Result<WrkResult, String> {
    let script = script_dir.join("paths.lua");
    std::fs::write(&script, wrk_script(load.paths_file))
        .map_err(|e| format!("write {}: {e}", script.display()))?;
    let mut args: Vec<String> = vec![
        "-c".into(),
        load.cpus.into(),
        bin.into(),
        "-t1".into(),
        format!("-c{}", load.connections),
        format!("-d{}s", load.duration.as_secs().max(1)),
        "--timeout".into(),
        "5s".into(),
        "-s".into(),
        script.display().to_string(),
    ];
    for h in load.headers {
        args.extend(["-H".to_string(), h.clone()]);
    }
    args.push(format!("http://127.0.0.1:{}/", load.port));
    let out = run("taskset", &args)?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .ok_or_else(|| format!("wrk printed no summary line:\n{out}"))?;
    let value = |key: &str| -> Result<u64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .ok_or_else(|| format!("no {key} in wrk's line {line:?}"))
    };
    Ok(WrkResult {
        requests: value("requests")?,
        seconds: value("duration_us")? as f64 / 1e6,
        bad_status: value("status")?,
        socket_errors: value("socket")?,
    })
}

/// What oha measured at a fixed rate.
#[derive(Clone, Debug)]
pub struct OhaResult {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Status codes other than 200, and transport errors, as `what: count`.
    pub problems: Vec<String>,
}

/// Runs oha at `rate` requests per second (one runtime thread, pinned to
/// the load cores), URLs taken from the load's paths.
pub fn oha(bin: &str, load: &Load, rate: u32, dir: &Path) -> Result<OhaResult, String> {
    let urls = dir.join(format!("urls-{}.txt", load.port));
    if !urls.is_file() {
        let paths = std::fs::read_to_string(load.paths_file)
            .map_err(|e| format!("read {}: {e}", load.paths_file.display()))?;
        let text: String = paths
            .lines()
            .map(|p| format!("http://127.0.0.1:{}{p}\n", load.port))
            .collect();
        std::fs::write(&urls, text).map_err(|e| format!("write {}: {e}", urls.display()))?;
    }
    let mut args: Vec<String> = vec![
        "-c".into(),
        load.cpus.into(),
        bin.into(),
        "-z".into(),
        format!("{}ms", load.duration.as_millis()),
        "-q".into(),
        rate.to_string(),
        "-c".into(),
        load.connections.to_string(),
        "--latency-correction".into(),
        "--no-tui".into(),
        "--worker-threads".into(),
        "1".into(),
        "--output-format".into(),
        "json".into(),
        "-t".into(),
        "10s".into(),
    ];
    for h in load.headers {
        args.extend(["-H".to_string(), h.clone()]);
    }
    args.extend(["--urls-from-file".to_string(), urls.display().to_string()]);
    let out = run("taskset", &args)?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("oha's JSON: {e}: {out}"))?;
    let secs = |p: &serde_json::Value| -> Result<f64, String> {
        p.as_f64()
            .map(|s| s * 1e3)
            .ok_or_else(|| format!("oha's JSON lacks a latency: {p}"))
    };
    let mut problems = Vec::new();
    if let Some(codes) = v["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            if code != "200" {
                problems.push(format!("status {code}: {}", n.as_u64().unwrap_or(0)));
            }
        }
    }
    if let Some(errors) = v["errorDistribution"].as_object() {
        for (what, n) in errors {
            let n = n.as_u64().unwrap_or(0);
            // The requests still in flight when the time is up.
            if !what.contains("deadline") {
                problems.push(format!("{what}: {n}"));
            }
        }
    }
    Ok(OhaResult {
        p50_ms: secs(&v["latencyPercentiles"]["p50"])?,
        p99_ms: secs(&v["latencyPercentiles"]["p99"])?,
        max_ms: secs(&v["summary"]["slowest"])?,
        problems,
    })
}

/// `<size> bytes (<gzip -9 size> gzipped)` of a file.
pub fn file_size(path: &Path) -> Result<(u64, u64), String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let out = Command::new("gzip")
        .args(["-9c"])
        .arg(path)
        .output()
        .map_err(|e| format!("gzip: {e}"))?;
    Ok((size, out.stdout.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read() {
        let pid = std::process::id();
        let a = cpu::sample(pid).unwrap();
        // 50 ms of work the optimiser cannot fold away (a loop whose sum
        // has a closed form costs no CPU at all at opt-level 2).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_add(i * i));
            }
        }
        assert!(x > 0);
        let b = cpu::sample(pid).unwrap();
        assert!(b.stat_ns >= a.stat_ns);
        if let (Some(x), Some(y)) = (a.sched_ns, b.sched_ns) {
            assert!(y > x && cpu::used_ns(a, b) == y - x);
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("1"), vec![1]);
        assert_eq!(cpu_list("0,2-4"), vec![0, 2, 3, 4]);
        assert!(cpu_list("x").is_empty());
    }

    #[test]
    fn wrk_script_reads_the_paths_file() {
        let s = wrk_script(Path::new("/tmp/p.txt"));
        assert!(s.contains("io.lines(\"/tmp/p.txt\")"), "{s}");
        assert!(s.contains("BENCH requests="));
    }
}
