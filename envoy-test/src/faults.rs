//! A fault-injecting HTTP/1.1 front: it listens on a loopback port and
//! forwards every request, byte for byte (start line, `Host`, every header,
//! the body), to a backend port (the real store, which still verifies
//! signatures), unless a [`Fault`] is scripted for it.
//!
//! Faults wait in one FIFO queue. Each applies to ONE request: the first
//! queued fault whose path filter matches the request's target (a
//! substring, e.g. `"config.json"` or `"list-type"`; no filter matches every
//! request) is taken off the queue and applied; a request no queued fault
//! matches is forwarded. So lease requests and the like go through
//! untouched while the object GETs meet the faults.
//!
//! Every request is recorded ([`FaultFront::log`]): method, target, the
//! fault applied (or forwarded), the status the front answered and how much
//! of the body it sent, so tests can count what the store was asked.
//!
//! HTTP/1.1 framing: a forwarded answer keeps the backend's framing
//! (`Content-Length` or chunked, unchanged) and the client connection stays
//! open for the next request when both sides allow it. Every faulted answer
//! carries `connection: close` and the connection is closed after it. The
//! backend gets one fresh connection per forwarded request.
//!
//! std threads and `std::net` only, like the rest of the harness; the front
//! stops (port closed, open connections cut, hanging answers ended) when
//! dropped.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 64 * 1024;
/// How long the front waits for the backend's answer.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the front does to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answered by the front (not forwarded): `status` with this body.
    Status {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// Reads the request, answers nothing for `for_`, then closes (FIN).
    /// Not forwarded.
    Hang { for_: Duration },
    /// Forwarded; the backend's answer (headers unchanged but for
    /// `connection: close`) is sent at once, its body `chunk` bytes at a
    /// time with `every` before each chunk. The answer completes.
    SlowBody { chunk: usize, every: Duration },
    /// Forwarded; the backend's headers (its real `Content-Length`, plus
    /// `connection: close`) and only the first `after_bytes` bytes of its
    /// body (as sent on the wire: for a chunked answer, chunk framing
    /// included) are sent, then the connection is closed.
    Truncate { after_bytes: usize },
    /// Reads the request and closes the connection at once, with
    /// `SO_LINGER` 0 so the peer gets a TCP RST (Linux; a plain close
    /// elsewhere). Not forwarded.
    Reset,
    /// Answered by the front (not forwarded): 200 `application/json` with
    /// a `Content-Length: bytes` body streamed in 64 KiB writes
    /// (`{"filler":"xxxx…"}`).
    Oversize { bytes: u64 },
}

impl Fault {
    /// `Status` with a text body.
    pub fn status(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Fault {
        Fault::Status {
            status,
            content_type: content_type.into(),
            body: body.into(),
        }
    }

    /// `Status` with an S3-style XML error (`<Error><Code>code</Code>…`).
    pub fn s3_error(status: u16, code: &str, message: &str) -> Fault {
        Fault::status(
            status,
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-front</RequestId></Error>"
            ),
        )
    }

    /// 503 `SlowDown`, as S3 answers when throttling.
    pub fn unavailable() -> Fault {
        Fault::s3_error(503, "SlowDown", "Please reduce your request rate.")
    }

    /// 200 `text/html` with an HTML page (a captive portal, a proxy's
    /// error page).
    pub fn html_200() -> Fault {
        Fault::status(
            200,
            "text/html; charset=utf-8",
            "<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Network login required</h1></body></html>",
        )
    }

    pub fn hang(for_: Duration) -> Fault {
        Fault::Hang { for_ }
    }

    pub fn slow_body(chunk: usize, every: Duration) -> Fault {
        Fault::SlowBody {
            chunk: chunk.max(1),
            every,
        }
    }

    pub fn truncate(after_bytes: usize) -> Fault {
        Fault::Truncate { after_bytes }
    }

    pub fn reset() -> Fault {
        Fault::Reset
    }

    pub fn oversize(bytes: u64) -> Fault {
        Fault::Oversize { bytes }
    }

    /// A short name: `status 503`, `hang`, `slow_body`, `truncate`,
    /// `reset`, `oversize`.
    pub fn name(&self) -> String {
        match self {
            Fault::Status { status, .. } => format!("status {status}"),
            Fault::Hang { .. } => "hang".into(),
            Fault::SlowBody { .. } => "slow_body".into(),
            Fault::Truncate { .. } => "truncate".into(),
            Fault::Reset => "reset".into(),
            Fault::Oversize { .. } => "oversize".into(),
        }
    }

    /// Whether the backend sees the request (`SlowBody`, `Truncate`).
    pub fn forwards(&self) -> bool {
        matches!(self, Fault::SlowBody { .. } | Fault::Truncate { .. })
    }
}

/// One request the front received, and what it did.
#[derive(Clone, Debug)]
pub struct FrontRequest {
    pub method: String,
    /// Request target as sent (path and query).
    pub path: String,
    /// Request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// `None`: forwarded unchanged; else the fault applied.
    pub fault: Option<Fault>,
    /// The status the front sent to the client (the backend's when
    /// forwarded); `None` while the answer is under way and when nothing
    /// was answered (`Hang`, `Reset`, or the client left first).
    pub status: Option<u16>,
    /// Body bytes sent to the client (wire bytes: chunk framing counts).
    pub body_sent: u64,
    /// The whole answer was sent.
    pub complete: bool,
    /// The request reached the backend.
    pub reached_backend: bool,
    /// What went wrong, if anything (backend unreachable, client gone).
    pub error: Option<String>,
    pub received: Instant,
    /// When the front was done with it; `None` while in progress.
    pub finished: Option<Instant>,
}

impl FrontRequest {
    /// `forwarded` or the fault's [`Fault::name`].
    pub fn action(&self) -> String {
        match &self.fault {
            None => "forwarded".into(),
            Some(f) => f.name(),
        }
    }

    /// `"GET /b/k -> forwarded 200 (123 B)"`, for messages.
    pub fn summary(&self) -> String {
        format!(
            "{} {} -> {} {}{} ({} B{})",
            self.method,
            self.path,
            self.action(),
            self.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            if self.finished.is_none() {
                " (in progress)"
            } else {
                ""
            },
            self.body_sent,
            if self.complete { "" } else { ", incomplete" }
        )
    }
}

struct Scripted {
    path_contains: Option<String>,
    fault: Fault,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Scripted>,
    log: Vec<FrontRequest>,
}

struct Shared {
    backend_port: u16,
    state: Mutex<State>,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut st = lock(&self.state);
        let i = st.queue.iter().position(|s| {
            s.path_contains
                .as_deref()
                .is_none_or(|needle| path.contains(needle))
        })?;
        st.queue.remove(i).map(|s| s.fault)
    }

    fn record_start(&self, r: FrontRequest) -> usize {
        let mut st = lock(&self.state);
        st.log.push(r);
        st.log.len() - 1
    }

    fn record_end(&self, i: usize, o: &Outcome) {
        let mut st = lock(&self.state);
        if let Some(r) = st.log.get_mut(i) {
            r.status = o.status;
            r.body_sent = o.body_sent;
            r.complete = o.complete;
            r.reached_backend = o.reached_backend;
            r.error = o.error.clone();
            r.finished = Some(Instant::now());
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The front. See the module docs.
pub struct FaultFront {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultFront {
    /// Listens on a free loopback port, forwarding to
    /// 127.0.0.1:`backend_port`.
    pub fn start(backend_port: u16) -> std::io::Result<FaultFront> {
        FaultFront::start_on(crate::ports::free_port(), backend_port)
    }

    /// Listens on 127.0.0.1:`port` (retrying the bind for up to 5 s).
    pub fn start_on(port: u16, backend_port: u16) -> std::io::Result<FaultFront> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("fault front cannot listen on 127.0.0.1:{port}: {e}"),
                    ))
                }
            }
        };
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            backend_port,
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("fault-front-{port}"))
            .spawn(move || accept_loop(listener, s))?;
        Ok(FaultFront {
            port,
            shared,
            accept: Some(accept),
        })
    }

    /// Where clients connect.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where requests are forwarded.
    pub fn backend_port(&self) -> u16 {
        self.shared.backend_port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Queues `fault` for the next request (any path).
    pub fn push(&self, fault: Fault) {
        self.script(None, fault);
    }

    /// Queues `fault` for the next request whose target contains
    /// `path_contains`.
    pub fn push_for(&self, path_contains: &str, fault: Fault) {
        self.script(Some(path_contains.to_string()), fault);
    }

    /// Queues `fault` `n` times for requests whose target contains
    /// `path_contains`.
    pub fn push_n_for(&self, path_contains: &str, fault: Fault, n: usize) {
        for _ in 0..n {
            self.push_for(path_contains, fault.clone());
        }
    }

    fn script(&self, path_contains: Option<String>, fault: Fault) {
        lock(&self.shared.state).queue.push_back(Scripted {
            path_contains,
            fault,
        });
    }

    /// Faults still queued.
    pub fn pending(&self) -> usize {
        lock(&self.shared.state).queue.len()
    }

    /// Drops every queued fault; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut st = lock(&self.shared.state);
        let n = st.queue.len();
        st.queue.clear();
        n
    }

    /// Every request so far, in arrival order. A request is logged when its
    /// head and body have been read (so a hanging one shows, unfinished);
    /// its record is final before the last byte (or the close) of its
    /// answer is sent, so once a client has the whole answer, or saw the
    /// connection end, the log is up to date for it.
    pub fn log(&self) -> Vec<FrontRequest> {
        lock(&self.shared.state).log.clone()
    }

    /// Requests so far whose target contains `path_contains`.
    pub fn requests_for(&self, path_contains: &str) -> Vec<FrontRequest> {
        lock(&self.shared.state)
            .log
            .iter()
            .filter(|r| r.path.contains(path_contains))
            .cloned()
            .collect()
    }

    /// How many requests so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.state).log.len()
    }

    /// How many requests reached the backend (forwarded, `SlowBody`,
    /// `Truncate`; not when the backend was unreachable).
    pub fn backend_count(&self) -> usize {
        lock(&self.shared.state)
            .log
            .iter()
            .filter(|r| r.reached_backend)
            .count()
    }

    /// How many requests met a fault.
    pub fn faulted_count(&self) -> usize {
        lock(&self.shared.state)
            .log
            .iter()
            .filter(|r| r.fault.is_some())
            .count()
    }

    /// The log, one [`FrontRequest::summary`] a line.
    pub fn log_text(&self) -> String {
        self.log()
            .iter()
            .map(FrontRequest::summary)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Empties the log (not the queue).
    pub fn clear_log(&self) {
        lock(&self.shared.state).log.clear();
    }

    /// Waits until `n` requests whose target contains `path_contains` are
    /// finished; returns them.
    pub fn wait_finished(
        &self,
        path_contains: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<FrontRequest>, String> {
        crate::wait::try_until(
            &format!("{n} finished request(s) for {path_contains:?} at the fault front"),
            timeout,
            || {
                let done: Vec<FrontRequest> = self
                    .requests_for(path_contains)
                    .into_iter()
                    .filter(|r| r.finished.is_some())
                    .collect();
                if done.len() >= n {
                    Ok(done)
                } else {
                    Err(format!("log:\n{}", self.log_text()))
                }
            },
        )
    }

    /// Stops listening and cuts every connection (also done on drop).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        for s in lock(&self.shared.conns).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultFront {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                if let Ok(c) = stream.try_clone() {
                    lock(&shared.conns).insert(id, c);
                }
                let s = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("fault-front-conn".into())
                    .spawn(move || {
                        serve_conn(stream, &s);
                        // The registry's copy is the last descriptor: the
                        // socket closes here (with a RST after `Reset`).
                        lock(&s.conns).remove(&id);
                    });
                if spawned.is_err() {
                    lock(&shared.conns).remove(&id);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

// ------------------------------------------------------------ wire

/// A message head: raw bytes as received, and its parsed parts.
struct Head {
    raw: Vec<u8>,
    start: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| k == name && v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Response status (0 when unparsable).
    fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The raw head with every `connection`/`keep-alive` header replaced by
    /// `connection: close`.
    fn raw_with_close(&self) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.raw);
        let mut out = String::new();
        for line in text.split_inclusive("\r\n") {
            let name = line.split(':').next().unwrap_or("").trim();
            if line == "\r\n" {
                out.push_str("connection: close\r\n\r\n");
                return out.into_bytes();
            }
            if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            out.push_str(line);
        }
        // No terminating empty line seen (cannot happen for a parsed head).
        out.push_str("connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Reads a head; `Ok(None)` on a clean EOF before any byte.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut start = String::new();
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            if raw.is_empty() && start.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside a message head",
            ));
        }
        raw.extend_from_slice(&line);
        if raw.len() > MAX_HEAD {
            return Err(std::io::Error::other("message head too large"));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if start.is_empty() {
            // Stray empty lines before a start line (RFC 9112 2.2).
            if text.is_empty() {
                raw.clear();
                continue;
            }
            start = text.to_string();
            continue;
        }
        if text.is_empty() {
            return Ok(Some(Head {
                raw,
                start,
                headers,
            }));
        }
        if let Some((k, v)) = text.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    ToEof,
}

fn framing(head: &Head, is_response: bool, request_method: &str) -> Framing {
    if is_response {
        let s = head.status();
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&s)
            || s == 204
            || s == 304
        {
            return Framing::Length(0);
        }
    }
    if head.has_token("transfer-encoding", "chunked") {
        return Framing::Chunked;
    }
    if let Some(n) = head.header("content-length").and_then(|v| v.parse().ok()) {
        return Framing::Length(n);
    }
    if is_response {
        Framing::ToEof
    } else {
        Framing::Length(0)
    }
}

/// Reads a body as it is on the wire (chunk framing kept).
fn read_raw_body(r: &mut impl BufRead, f: Framing) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match f {
        Framing::Length(n) => {
            r.take(n).read_to_end(&mut out)?;
            if (out.len() as u64) < n {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("body ended after {} of {n} bytes", out.len()),
                ));
            }
        }
        Framing::ToEof => {
            r.read_to_end(&mut out)?;
        }
        Framing::Chunked => loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "chunked body ended early",
                ));
            }
            out.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let hex = text.trim().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {text:?}")))?;
            if size == 0 {
                loop {
                    let mut t = Vec::new();
                    let n = r.read_until(b'\n', &mut t)?;
                    out.extend_from_slice(&t);
                    if n == 0 || t == b"\r\n" || t == b"\n" {
                        return Ok(out);
                    }
                }
            }
            let before = out.len();
            r.take(size + 2).read_to_end(&mut out)?;
            if ((out.len() - before) as u64) < size + 2 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "chunked body ended inside a chunk",
                ));
            }
        },
    }
    Ok(out)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// `SO_LINGER {on, 0}`: closing the socket then sends a RST.
#[cfg(target_os = "linux")]
fn set_linger_zero(s: &TcpStream) -> bool {
    use std::os::unix::io::AsRawFd;
    #[repr(C)]
    struct Linger {
        l_onoff: i32,
        l_linger: i32,
    }
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let l = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized `struct linger`.
    unsafe {
        setsockopt(
            s.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &l,
            std::mem::size_of::<Linger>() as u32,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_linger_zero(_s: &TcpStream) -> bool {
    false
}

// ------------------------------------------------------------ serving

#[derive(Clone, Default)]
struct Outcome {
    status: Option<u16>,
    body_sent: u64,
    complete: bool,
    reached_backend: bool,
    error: Option<String>,
    /// The client connection may carry another request.
    keep_alive: bool,
}

/// One write of an answer: after `delay`, `bytes` (body bytes when `body`).
struct Piece {
    delay: Duration,
    bytes: Vec<u8>,
    body: bool,
}

impl Piece {
    fn head(bytes: Vec<u8>) -> Piece {
        Piece {
            delay: Duration::ZERO,
            bytes,
            body: false,
        }
    }

    fn body(bytes: Vec<u8>) -> Piece {
        Piece {
            delay: Duration::ZERO,
            bytes,
            body: true,
        }
    }
}

/// An answer to send, and the outcome once every piece is written.
struct Plan {
    pieces: Box<dyn Iterator<Item = Piece> + Send>,
    done: Outcome,
}

/// Writes a plan. The record is made final just BEFORE the last write, so
/// a client that has read the whole answer always finds its record
/// finished in the log; a failed write records the failure instead.
fn send(w: &mut TcpStream, shared: &Shared, i: usize, plan: Plan) -> Outcome {
    let mut sent = Outcome {
        body_sent: 0,
        complete: false,
        keep_alive: false,
        ..plan.done.clone()
    };
    let mut pieces = plan.pieces.peekable();
    while let Some(p) = pieces.next() {
        if !p.delay.is_zero() {
            let until = Instant::now() + p.delay;
            while Instant::now() < until {
                if shared.stopping() {
                    sent.error = Some("front stopped".into());
                    shared.record_end(i, &sent);
                    return sent;
                }
                std::thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
            }
        }
        if pieces.peek().is_none() {
            shared.record_end(i, &plan.done);
        }
        if let Err(e) = w.write_all(&p.bytes).and_then(|_| w.flush()) {
            sent.error = Some(format!("client: {e}"));
            shared.record_end(i, &sent);
            return sent;
        }
        if p.body {
            sent.body_sent += p.bytes.len() as u64;
        }
    }
    plan.done
}

fn serve_conn(client: TcpStream, shared: &Shared) {
    let Ok(read_half) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = client;
    let _ = writer.set_write_timeout(Some(Duration::from_secs(30)));
    loop {
        if shared.stopping() {
            return;
        }
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        let mut parts = head.start.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let body = match read_raw_body(&mut reader, framing(&head, false, &method)) {
            Ok(b) => b,
            Err(_) => return,
        };
        let fault = shared.take_fault(&path);
        let i = shared.record_start(FrontRequest {
            method: method.clone(),
            path,
            headers: head.headers.clone(),
            fault: fault.clone(),
            status: None,
            body_sent: 0,
            complete: false,
            reached_backend: false,
            error: None,
            received: Instant::now(),
            finished: None,
        });
        let client_close = head.has_token("connection", "close");
        let plan = match &fault {
            None => forward(&head, &body, &method, shared, Mode::Plain),
            Some(Fault::SlowBody { chunk, every }) => {
                forward(&head, &body, &method, shared, Mode::Slow(*chunk, *every))
            }
            Some(Fault::Truncate { after_bytes }) => {
                forward(&head, &body, &method, shared, Mode::Truncate(*after_bytes))
            }
            Some(Fault::Status {
                status,
                content_type,
                body,
            }) => Ok(answer(*status, content_type, body.clone(), &method)),
            Some(Fault::Oversize { bytes }) => Ok(oversize(*bytes, &method)),
            Some(Fault::Hang { for_ }) => {
                let until = Instant::now() + *for_;
                while Instant::now() < until && !shared.stopping() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(Outcome::default())
            }
            Some(Fault::Reset) => {
                let linger = set_linger_zero(&writer);
                Err(Outcome {
                    error: (!linger).then(|| "SO_LINGER 0 not set: plain close".to_string()),
                    ..Outcome::default()
                })
            }
        };
        let outcome = match plan {
            Ok(plan) => send(&mut writer, shared, i, plan),
            Err(o) => {
                // Nothing (more) to send: record, then close.
                shared.record_end(i, &o);
                o
            }
        };
        if !outcome.keep_alive || client_close {
            if !matches!(fault, Some(Fault::Reset)) {
                let _ = writer.flush();
                let _ = writer.shutdown(Shutdown::Both);
            }
            return;
        }
    }
}

enum Mode {
    Plain,
    Slow(usize, Duration),
    Truncate(usize),
}

/// Forwards the request and plans the answer from the backend's; `Err`
/// when nothing can be answered (the backend failed mid-answer).
fn forward(
    head: &Head,
    body: &[u8],
    method: &str,
    shared: &Shared,
    mode: Mode,
) -> Result<Plan, Outcome> {
    let addr = SocketAddr::from(([127, 0, 0, 1], shared.backend_port));
    let backend = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|mut b| {
        b.set_read_timeout(Some(BACKEND_TIMEOUT))?;
        b.set_write_timeout(Some(BACKEND_TIMEOUT))?;
        b.write_all(&head.raw)?;
        b.write_all(body)?;
        b.flush()?;
        Ok(b)
    });
    let backend = match backend {
        Ok(b) => b,
        Err(e) => {
            let mut plan = answer(
                502,
                "text/plain",
                format!(
                    "fault front: backend 127.0.0.1:{} unreachable: {e}",
                    shared.backend_port
                )
                .into_bytes(),
                method,
            );
            plan.done.error = Some(format!("backend unreachable: {e}"));
            return Ok(plan);
        }
    };
    let failed = |error: String| Outcome {
        reached_backend: true,
        error: Some(error),
        ..Outcome::default()
    };
    let mut br = BufReader::new(backend);
    // Interim 1xx answers (100 Continue) are relayed as they are.
    let mut interim = Vec::new();
    let resp = loop {
        match read_head(&mut br) {
            Ok(Some(h)) if (100..200).contains(&h.status()) && h.status() != 101 => {
                interim.extend_from_slice(&h.raw)
            }
            Ok(Some(h)) => break h,
            Ok(None) => return Err(failed("backend closed without answering".into())),
            Err(e) => return Err(failed(format!("backend: {e}"))),
        }
    };
    let f = framing(&resp, true, method);
    let resp_body = read_raw_body(&mut br, f).map_err(|e| failed(format!("backend body: {e}")))?;
    let mut done = Outcome {
        status: Some(resp.status()),
        reached_backend: true,
        body_sent: resp_body.len() as u64,
        complete: true,
        ..Outcome::default()
    };
    let mut pieces = Vec::new();
    if !interim.is_empty() {
        pieces.push(Piece::head(interim));
    }
    match mode {
        Mode::Plain => {
            done.keep_alive = f != Framing::ToEof
                && !resp.has_token("connection", "close")
                && !resp.start.starts_with("HTTP/1.0");
            pieces.push(Piece::head(resp.raw));
            if !resp_body.is_empty() {
                pieces.push(Piece::body(resp_body));
            }
        }
        Mode::Slow(chunk, every) => {
            pieces.push(Piece::head(resp.raw_with_close()));
            pieces.extend(resp_body.chunks(chunk).map(|c| Piece {
                delay: every,
                bytes: c.to_vec(),
                body: true,
            }));
        }
        Mode::Truncate(after) => {
            let n = after.min(resp_body.len());
            done.complete = n == resp_body.len();
            done.body_sent = n as u64;
            pieces.push(Piece::head(resp.raw_with_close()));
            if n > 0 {
                pieces.push(Piece::body(resp_body[..n].to_vec()));
            }
        }
    }
    Ok(Plan {
        pieces: Box::new(pieces.into_iter()),
        done,
    })
}

fn answer(status: u16, content_type: &str, body: Vec<u8>, method: &str) -> Plan {
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let head_only = method.eq_ignore_ascii_case("HEAD") || body.is_empty();
    let done = Outcome {
        status: Some(status),
        body_sent: if head_only { 0 } else { body.len() as u64 },
        complete: true,
        ..Outcome::default()
    };
    let mut pieces = vec![Piece::head(head.into_bytes())];
    if !head_only {
        pieces.push(Piece::body(body));
    }
    Plan {
        pieces: Box::new(pieces.into_iter()),
        done,
    }
}

/// `len` bytes of the `Oversize` body from `offset` (`{"filler":"xx…x"}`).
fn filler_block(total: u64, offset: u64, len: usize) -> Vec<u8> {
    const PRE: &[u8] = b"{\"filler\":\"";
    const POST: &[u8] = b"\"}";
    let mut v = vec![b'x'; len];
    if total >= (PRE.len() + POST.len()) as u64 {
        for (k, b) in v.iter_mut().enumerate() {
            let at = offset + k as u64;
            if at < PRE.len() as u64 {
                *b = PRE[at as usize];
            } else if at >= total - POST.len() as u64 {
                *b = POST[(at - (total - POST.len() as u64)) as usize];
            }
        }
    }
    v
}

fn oversize(bytes: u64, method: &str) -> Plan {
    const BLOCK: u64 = 64 * 1024;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {bytes}\r\nconnection: close\r\n\r\n"
    );
    let head_only = method.eq_ignore_ascii_case("HEAD");
    let blocks = if head_only { 0 } else { bytes.div_ceil(BLOCK) };
    let body = (0..blocks).map(move |k| {
        let off = k * BLOCK;
        Piece::body(filler_block(bytes, off, BLOCK.min(bytes - off) as usize))
    });
    Plan {
        pieces: Box::new(std::iter::once(Piece::head(head.into_bytes())).chain(body)),
        done: Outcome {
            status: Some(200),
            body_sent: if head_only { 0 } else { bytes },
            complete: true,
            ..Outcome::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_json() {
        let total = 200_000u64;
        let mut all = Vec::new();
        let mut off = 0;
        while off < total {
            let n = 65536.min(total - off);
            all.extend(filler_block(total, off, n as usize));
            off += n;
        }
        assert_eq!(all.len() as u64, total);
        let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(v["filler"].as_str().unwrap().len(), 200_000 - 13);
    }

    #[test]
    fn raw_chunked_body_is_kept_verbatim() {
        let wire = b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nt: v\r\n\r\nNEXT".to_vec();
        let mut r = std::io::Cursor::new(wire.clone());
        let body = read_raw_body(&mut r, Framing::Chunked).unwrap();
        assert_eq!(body, &wire[..wire.len() - 4]);
    }

    #[test]
    fn connection_close_replaces_keep_alive() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
        let head = read_head(&mut std::io::Cursor::new(raw.to_vec()))
            .unwrap()
            .unwrap();
        assert_eq!(head.raw, raw);
        assert_eq!(
            String::from_utf8(head.raw_with_close()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nconnection: close\r\n\r\n"
        );
    }
}
