//! An echo upstream: answers every request `200` with the body
//! `"<name> <path>"` and header `x-upstream: <name>`, so a test can prove
//! a request reached it (and which one).

use crate::http::{HttpServer, Reply, Request};
use std::sync::{Arc, Mutex};

/// The echo server.
pub struct Upstream {
    name: String,
    server: HttpServer,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Upstream {
    /// Starts `name` on 127.0.0.1:`port`.
    pub fn start(name: &str, port: u16) -> std::io::Result<Upstream> {
        let seen: Arc<Mutex<Vec<Request>>> = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let n = name.to_string();
        let server = HttpServer::start(
            port,
            Arc::new(move |req: &Request| {
                seen2
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(req.clone());
                Reply::new(200, "text/plain", format!("{n} {}", req.path))
                    .with_header("x-upstream", &n)
            }),
        )?;
        Ok(Upstream {
            name: name.to_string(),
            server,
            seen,
        })
    }

    /// Its name (also the Envoy cluster name in scenarios).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The body it answers for `path`.
    pub fn expected_body(&self, path: &str) -> String {
        format!("{} {path}", self.name)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Number of requests received.
    pub fn request_count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_name_and_path() {
        let up = Upstream::start("echo_service", crate::ports::free_port()).unwrap();
        let r = crate::http::get(up.port(), "/echo/x?y=1", &[]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "echo_service /echo/x?y=1");
        assert_eq!(r.header("x-upstream"), Some("echo_service"));
        assert_eq!(up.request_count(), 1);
        assert_eq!(up.requests()[0].path, "/echo/x?y=1");
    }
}
