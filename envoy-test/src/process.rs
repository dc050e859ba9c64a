//! Child processes that are killed when dropped (also during a panic), with
//! stdout and stderr going to one log file.
//!
//! When `setpriv` (util-linux) exists, children are also started with
//! `--pdeathsig KILL`, so they die even if the test process is killed
//! without unwinding. Note: Linux sends that signal when the *thread* that
//! spawned the child ends, so keep a child owned by the thread that started
//! it (as tests do).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running child process.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args...` with `env` added (and `env_remove` removed),
    /// output appended to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        env_remove: &[&str],
        log: &Path,
    ) -> std::io::Result<Proc> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut cmd = if setpriv.is_file() {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        for k in env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display()))
        })?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything logged so far (lossy UTF-8).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits up to `timeout` until the process accepts TCP connections on
    /// 127.0.0.1:`port` (a connect only: no request is sent); an exit
    /// first is an error with its log tail.
    pub fn wait_listening(
        &mut self,
        port: u16,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let name = self.name.clone();
        crate::wait::try_until(&format!("{name} to accept connections"), timeout, || {
            if let Some(status) = self.exited() {
                return Ok(Err(format!(
                    "{name} exited ({status}); its log:\n{}",
                    self.log_tail(30)
                )));
            }
            if crate::http::tcp_open(port) {
                Ok(Ok(()))
            } else {
                Err("port closed".to_string())
            }
        })?
    }

    /// `None` while running, else the exit description.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, `KILL`, ...) with the
    /// `kill` command (no libc needed).
    pub fn signal(&self, sig: &str) -> std::io::Result<()> {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -s {sig} {} failed",
                self.pid()
            )))
        }
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal("STOP")
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal("CONT")
    }

    /// SIGKILL and reap. Idempotent.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_logs_and_kill_on_drop() {
        let dir = std::env::temp_dir().join(format!("envoy-test-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sleep.log");
        let mut p = Proc::spawn(
            "sh",
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "echo hello-$GREETING; echo err >&2; exec sleep 30".into(),
            ],
            &[("GREETING".into(), "world".into())],
            &[],
            &log,
        )
        .unwrap();
        let pid = p.pid();
        crate::wait::until("log", std::time::Duration::from_secs(5), || {
            let l = p.log();
            if l.contains("hello-world") && l.contains("err") {
                Ok(())
            } else {
                Err(l)
            }
        });
        assert!(p.exited().is_none());
        p.pause().unwrap();
        p.resume().unwrap();
        drop(p);
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        assert!(!alive, "child {pid} survived drop");
        let _ = std::fs::remove_dir_all(dir);
    }
}
