//! The fake control plane.
//!
//! `GET <path>` answers `200` with the current gateway config JSON and an
//! `ETag`; when the request's `If-None-Match` equals the current ETag it
//! answers `304`. Other paths get `404`; with no config set, `503`.
//! The harness sets the config (every set makes a new ETag, even for the
//! same bytes), and takes the server down (connections refused) and up
//! again on the same port. It counts what it served.

use crate::http::{HttpServer, Reply, Request};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One route of a gateway config.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub paths: Vec<String>,
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    pub upstream: String,
    /// `prefix` (absent), `segment` or `exact`.
    pub path_match: Option<String>,
}

impl Route {
    /// A route matching path prefixes only.
    pub fn new(name: &str, paths: &[&str], upstream: &str) -> Route {
        Route {
            name: name.into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            hosts: Vec::new(),
            methods: Vec::new(),
            upstream: upstream.into(),
            path_match: None,
        }
    }

    /// Matches its paths as `kind` (`prefix`, `segment`, `exact`).
    pub fn path_match(mut self, kind: &str) -> Route {
        self.path_match = Some(kind.into());
        self
    }

    /// Restricts to these hosts.
    pub fn hosts(mut self, hosts: &[&str]) -> Route {
        self.hosts = hosts.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Restricts to these methods.
    pub fn methods(mut self, methods: &[&str]) -> Route {
        self.methods = methods.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// The gateway config JSON the CP serves, pretty-printed with a trailing
/// newline (so a filter that re-serialises instead of storing the bytes
/// verbatim is caught by the byte-for-byte checks).
pub fn gateway_config(revision: &str, routes: &[Route]) -> String {
    let routes: Vec<serde_json::Value> = routes
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("name".into(), r.name.clone().into());
            o.insert("paths".into(), r.paths.clone().into());
            if !r.hosts.is_empty() {
                o.insert("hosts".into(), r.hosts.clone().into());
            }
            if !r.methods.is_empty() {
                o.insert("methods".into(), r.methods.clone().into());
            }
            if let Some(kind) = &r.path_match {
                o.insert("path_match".into(), kind.clone().into());
            }
            o.insert("upstream".into(), r.upstream.clone().into());
            serde_json::Value::Object(o)
        })
        .collect();
    let v = serde_json::json!({ "revision": revision, "routes": routes });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// One request the CP received.
#[derive(Clone, Debug)]
pub struct CpRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub if_none_match: Option<String>,
    pub status: u16,
    /// When it was answered (just before the answer was sent).
    pub at: Instant,
}

#[derive(Default)]
struct State {
    path: String,
    body: Option<String>,
    etag: String,
    generation: u64,
    log: Vec<CpRequest>,
}

/// The fake control plane.
pub struct ControlPlane {
    server: HttpServer,
    state: Arc<Mutex<State>>,
    hang: Arc<AtomicBool>,
}

impl ControlPlane {
    /// Creates it on `port` serving `path` (e.g. `/v1/config`), DOWN (not
    /// listening) and without config; see [`ControlPlane::up`].
    pub fn new_down(port: u16, path: &str) -> ControlPlane {
        let state = Arc::new(Mutex::new(State {
            path: path.to_string(),
            ..State::default()
        }));
        let st = state.clone();
        let hang = Arc::new(AtomicBool::new(false));
        let h = hang.clone();
        let server = HttpServer::new(
            port,
            Arc::new(move |req: &Request| {
                // A hanging CP accepts connections but answers nothing.
                while h.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                handle(&st, req)
            }),
        );
        ControlPlane {
            server,
            state,
            hang,
        }
    }

    /// Creates it and starts listening.
    pub fn start(port: u16, path: &str) -> std::io::Result<ControlPlane> {
        let cp = ControlPlane::new_down(port, path);
        cp.up()?;
        Ok(cp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `body` from now on, under a new ETag, which is returned.
    pub fn set_config(&self, body: &str) -> String {
        let mut s = self.lock();
        s.generation += 1;
        s.etag = format!("\"cp-{}\"", s.generation);
        s.body = Some(body.to_string());
        s.etag.clone()
    }

    /// Same body, new ETag (a CP that re-publishes identical content).
    pub fn bump_etag(&self) -> String {
        let body = self.lock().body.clone().unwrap_or_default();
        self.set_config(&body)
    }

    /// Current body, if any.
    pub fn config(&self) -> Option<String> {
        self.lock().body.clone()
    }

    /// Current ETag (empty before the first `set_config`).
    pub fn etag(&self) -> String {
        self.lock().etag.clone()
    }

    /// Starts listening on its port (again).
    pub fn up(&self) -> std::io::Result<()> {
        self.server.up()
    }

    /// Stops listening: connections to its port are refused.
    pub fn down(&self) {
        self.server.down()
    }

    /// True while listening.
    pub fn is_up(&self) -> bool {
        self.server.is_up()
    }

    /// `true`: keep accepting connections but answer nothing (requests
    /// already waiting are answered once this is set back to `false`).
    pub fn set_hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// All requests received so far.
    pub fn requests(&self) -> Vec<CpRequest> {
        self.lock().log.clone()
    }

    /// Number of requests received.
    pub fn request_count(&self) -> usize {
        self.lock().log.len()
    }

    /// When the CP first answered `200` (a config), if it did.
    pub fn first_config_at(&self) -> Option<Instant> {
        self.lock()
            .log
            .iter()
            .find(|r| r.status == 200)
            .map(|r| r.at)
    }

    /// Number of answers with this status.
    pub fn count_status(&self, status: u16) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.hang.store(false, Ordering::SeqCst);
        self.server.down();
    }
}

fn handle(state: &Mutex<State>, req: &Request) -> Reply {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let inm = req.header("if-none-match").map(|v| v.trim().to_string());
    let path_only = req.path.split('?').next().unwrap_or("");
    let reply = if req.method != "GET" || path_only != s.path {
        Reply::new(404, "application/json", r#"{"message":"not found"}"#)
    } else {
        match &s.body {
            None => Reply::new(503, "application/json", r#"{"message":"no config yet"}"#),
            Some(body) => {
                let matches = inm
                    .as_deref()
                    .map(|v| v.split(',').any(|t| t.trim() == s.etag))
                    .unwrap_or(false);
                if matches {
                    Reply {
                        status: 304,
                        headers: vec![("etag".into(), s.etag.clone())],
                        body: Vec::new(),
                    }
                } else {
                    Reply::new(200, "application/json", body.clone()).with_header("etag", &s.etag)
                }
            }
        }
    };
    s.log.push(CpRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        host: req.header("host").map(str::to_string),
        if_none_match: inm,
        status: reply.status,
        at: Instant::now(),
    });
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{get, tcp_open};

    #[test]
    fn etag_304_and_up_down_up_on_same_port() {
        let port = crate::ports::free_port();
        let cp = ControlPlane::start(port, "/v1/config").unwrap();
        assert_eq!(get(port, "/v1/config", &[]).unwrap().status, 503);
        let body = gateway_config("r1", &[Route::new("echo", &["/echo"], "echo_service")]);
        let etag = cp.set_config(&body);
        let r = get(port, "/v1/config", &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), body);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.json()["routes"][0]["upstream"], "echo_service");
        let r = get(port, "/v1/config", &[("if-none-match", &etag)]).unwrap();
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert_eq!(get(port, "/other", &[]).unwrap().status, 404);

        let etag2 = cp.bump_etag();
        assert_ne!(etag, etag2);
        let r = get(port, "/v1/config", &[("if-none-match", &etag)]).unwrap();
        assert_eq!((r.status, r.text()), (200, body.clone()));

        cp.down();
        assert!(!tcp_open(port), "CP still accepts connections while down");
        assert!(get(port, "/v1/config", &[]).is_err());
        cp.up().unwrap();
        assert_eq!(get(port, "/v1/config", &[]).unwrap().status, 200);
        assert_eq!(cp.request_count(), 6);
        assert_eq!(cp.count_status(304), 1);
        assert_eq!(cp.count_status(200), 3);
        assert_eq!(cp.requests()[1].host.as_deref(), Some("localhost"));
    }

    #[test]
    fn hanging_cp_accepts_but_does_not_answer() {
        let port = crate::ports::free_port();
        let cp = ControlPlane::start(port, "/v1/config").unwrap();
        cp.set_config("{}");
        cp.set_hang(true);
        let t = std::thread::spawn(move || get(port, "/v1/config", &[]).map(|r| r.status));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!t.is_finished(), "a hanging CP answered");
        assert_eq!(cp.request_count(), 0);
        cp.set_hang(false);
        assert_eq!(t.join().unwrap().unwrap(), 200);
        assert_eq!(cp.request_count(), 1);
    }

    #[test]
    fn gateway_config_shape() {
        let c = gateway_config(
            "r9",
            &[Route::new("a", &["/a"], "up")
                .hosts(&["h"])
                .methods(&["GET"])],
        );
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["revision"], "r9");
        assert_eq!(v["routes"][0]["paths"][0], "/a");
        assert_eq!(v["routes"][0]["hosts"][0], "h");
        assert_eq!(v["routes"][0]["methods"][0], "GET");
        assert!(c.ends_with("}\n") && c.contains('\n'));
    }
}
