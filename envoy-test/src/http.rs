//! A tiny HTTP/1.1 client and a restartable HTTP/1.1 server (std only).
//!
//! Both close the connection after one exchange (`connection: close`), which
//! keeps them simple and means a server taken "down" has no idle keep-alive
//! connection left that Envoy could still reach it through.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 64 * 1024;

/// Header list; names are lower-cased on parse.
pub type Headers = Vec<(String, String)>;

fn find_header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a header block (up to the empty line): returns the start line and headers.
fn read_head(r: &mut impl BufRead) -> std::io::Result<(String, Headers)> {
    let mut start = String::new();
    let mut total = 0;
    loop {
        start.clear();
        let n = r.read_line(&mut start)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a start line",
            ));
        }
        total += n;
        // Tolerate stray empty lines before the start line (RFC 9112 2.2).
        if !start.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        total += n;
        if total > MAX_HEAD {
            return Err(std::io::Error::other("header block too large"));
        }
        if n == 0 || line.trim_end_matches(['\r', '\n']).is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((start.trim_end().to_string(), headers))
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        r.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 || l.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}

/// Reads a body framed by content-length / chunked; `to_eof` reads until
/// close when neither is present (responses only).
fn read_body(r: &mut impl BufRead, headers: &Headers, to_eof: bool) -> std::io::Result<Vec<u8>> {
    if find_header(headers, "transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false)
    {
        return read_chunked(r);
    }
    if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad content-length {len:?}")))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if to_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

// ---------------------------------------------------------------- client

/// A response received by [`request`].
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    /// First header with that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON (`Null` when it does not parse).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `"<status> <body>"`, for error messages.
    pub fn summary(&self) -> String {
        let t = self.text();
        let t = if t.len() > 300 {
            format!("{}...", &t[..300])
        } else {
            t
        };
        format!("{} {}", self.status, t.trim_end())
    }
}

/// Sends one request to 127.0.0.1:`port` and reads the whole response.
/// `host` header defaults to `localhost`. Connect timeout 2 s, I/O 10 s.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    request_on(s, method, path, headers, body)
}

/// One request and its whole response over an already connected stream
/// (plain TCP as in [`request`], or a TLS stream, see
/// [`crate::tls::https_request`]); same framing as [`request`].
pub fn request_on<S: std::io::Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("connection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut r = BufReader::new(s);
    let (status_line, headers) = read_head(&mut r)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let body = if method == "HEAD" || status == 204 || status == 304 {
        Vec::new()
    } else {
        read_body(&mut r, &headers, true)?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `GET path` with extra headers.
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    request(port, "GET", path, headers, b"")
}

pub use fallback_config::http::percent_decode;

/// The `name=value` pairs of a query string or form body, decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Sends one of the filter's own request descriptions (as built by the
/// `fallback_config` crate, e.g. an Azure SharedKey-signed request) to
/// 127.0.0.1:`port`, with its `:authority` as `host`.
pub fn send(port: u16, req: &fallback_config::http::HttpRequest) -> std::io::Result<Response> {
    let mut headers: Vec<(&str, &str)> = vec![("host", req.authority.as_str())];
    headers.extend(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    request(
        port,
        &req.method,
        &req.path,
        &headers,
        req.body.as_deref().unwrap_or_default(),
    )
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn tcp_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

// ---------------------------------------------------------------- server

/// A request received by [`HttpServer`].
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Request target as sent (path and query).
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Request {
    /// First header with that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// What a handler answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with a body and content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        412 => "Precondition Failed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Request handler.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct Running {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

/// An HTTP/1.1 server on 127.0.0.1:`port` that can be stopped ("down": the
/// port refuses connections) and started again on the same port.
pub struct HttpServer {
    port: u16,
    handler: Handler,
    running: Mutex<Option<Running>>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    next_conn: Arc<AtomicU64>,
}

impl HttpServer {
    /// Creates the server without listening yet (call [`HttpServer::up`]).
    pub fn new(port: u16, handler: Handler) -> HttpServer {
        HttpServer {
            port,
            handler,
            running: Mutex::new(None),
            conns: Arc::new(Mutex::new(HashMap::new())),
            next_conn: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Creates and starts listening.
    pub fn start(port: u16, handler: Handler) -> std::io::Result<HttpServer> {
        let s = HttpServer::new(port, handler);
        s.up()?;
        Ok(s)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True while listening.
    pub fn is_up(&self) -> bool {
        self.running.lock().map(|r| r.is_some()).unwrap_or(false)
    }

    /// Starts listening (no-op when already up). Retries binding for up to
    /// 5 s in case the port is briefly busy.
    pub fn up(&self) -> std::io::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot listen on 127.0.0.1:{}: {e}", self.port),
                    ))
                }
            }
        };
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handler = self.handler.clone();
        let conns = self.conns.clone();
        let next_conn = self.next_conn.clone();
        let accept = std::thread::Builder::new()
            .name(format!("http-{}", self.port))
            .spawn(move || {
                accept_loop(listener, stop2, handler, conns, next_conn);
            })?;
        *running = Some(Running { stop, accept });
        Ok(())
    }

    /// Stops listening and cuts open connections. When this returns, the
    /// port refuses connections. No-op when already down.
    pub fn down(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.take() {
            r.stop.store(true, Ordering::SeqCst);
            let _ = r.accept.join();
        }
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for s in conns.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.down();
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handler: Handler,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    next_conn: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let id = next_conn.fetch_add(1, Ordering::Relaxed);
                if let Ok(clone) = stream.try_clone() {
                    conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, clone);
                }
                let handler = handler.clone();
                let conns = conns.clone();
                let _ = std::thread::Builder::new()
                    .name("http-conn".into())
                    .spawn(move || {
                        let _ = serve_one(stream, &handler);
                        conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    // `listener` is dropped here: the port is closed.
}

fn serve_one(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let (line, headers) = read_head(&mut r)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let body = read_body(&mut r, &headers, false)?;
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    let reply = handler(&req);
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if reply.status != 304 && reply.status != 204 {
        out.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut w = stream;
    w.write_all(out.as_bytes())?;
    if reply.status != 304 && reply.status != 204 && req.method != "HEAD" {
        w.write_all(&reply.body)?;
    }
    w.flush()?;
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_roundtrip_and_restart_on_same_port() {
        let port = crate::ports::free_port();
        let srv = HttpServer::start(
            port,
            Arc::new(|req: &Request| {
                Reply::new(
                    200,
                    "text/plain",
                    format!("{} {} {}", req.method, req.path, req.body.len()),
                )
                .with_header("x-seen", req.header("x-in").unwrap_or("-"))
            }),
        )
        .unwrap();
        let r = request(port, "PUT", "/a?b=1", &[("x-in", "v")], b"hello").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "PUT /a?b=1 5");
        assert_eq!(r.header("X-Seen"), Some("v"));
        srv.down();
        assert!(!tcp_open(port));
        assert!(get(port, "/", &[]).is_err());
        srv.up().unwrap();
        assert_eq!(get(port, "/x", &[]).unwrap().text(), "GET /x 0");
    }

    #[test]
    fn percent_decoding_and_query_pairs() {
        assert_eq!(percent_decode("a%2Fb+c%zz", false), "a/b+c%zz");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(
            query_pairs("grant_type=urn%3Aietf&assertion=x.y.z&empty"),
            vec![
                ("grant_type".to_string(), "urn:ietf".to_string()),
                ("assertion".to_string(), "x.y.z".to_string()),
                ("empty".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let mut r = std::io::Cursor::new(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n".to_vec());
        assert_eq!(read_chunked(&mut r).unwrap(), b"hello world");
    }
}
