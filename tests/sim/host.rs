//! The simulated host pieces: proxy-wasm shared data with Envoy's
//! semantics, an S3-like store with real conditional writes, and a CP.

use fallback_config::envelope;
use fallback_config::http::{HttpRequest, HttpResponse};
use fallback_config::process::{SharedValue, WriteResult};
use fallback_config::time::Timestamp;
use std::collections::HashMap;

/// Shared data as Envoy keeps it: one CAS counter for every set, a CAS
/// checked only against an existing key (`0`/`None`: unconditional).
#[derive(Default, Debug, Clone)]
pub struct SharedData {
    map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl SharedData {
    pub fn get(&self, key: &str) -> SharedValue {
        match self.map.get(key) {
            Some((v, cas)) => SharedValue {
                bytes: Some(v.clone()),
                cas: Some(*cas),
            },
            None => SharedValue::default(),
        }
    }

    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.map.get(key).map(|(v, _)| v.as_slice())
    }

    pub fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> WriteResult {
        if let (Some((_, stored)), Some(cas)) = (self.map.get(key), cas) {
            if cas != 0 && cas != *stored {
                return WriteResult::CasMismatch;
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.map
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        WriteResult::Done
    }
}

/// One stored object.
#[derive(Clone, Debug)]
pub struct Stored {
    pub body: Vec<u8>,
    pub etag: String,
    pub modified: Timestamp,
}

/// A `config.json` write the store accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWrite {
    /// `<process incarnation>/<root uid>` of the writer.
    pub writer: String,
    pub exporter: String,
    pub term: u64,
    pub revision: u32,
    pub at: u64,
}

/// An S3-like store: conditional PUTs (412), `Last-Modified` and `Date`
/// by its own clock, ETags that change with every write. With
/// `omit_etags` it answers reads without an ETag (some gateways do).
#[derive(Default, Debug)]
pub struct Store {
    pub objects: HashMap<String, Stored>,
    pub config_writes: Vec<ConfigWrite>,
    next_etag: u64,
    pub omit_etags: bool,
    pub requests: u64,
}

pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Store {
    /// Executes a request at store time `now` (ms of simulated time).
    pub fn handle(&mut self, req: &HttpRequest, now: u64, writer: &str) -> HttpResponse {
        self.requests += 1;
        let clock = Timestamp::from_secs(1_800_000_000).plus(std::time::Duration::from_millis(now));
        let date = ("date".to_string(), clock.http_date());
        match req.method.as_str() {
            "GET" => match self.objects.get(&req.path) {
                Some(o) => {
                    let mut headers = vec![("last-modified".into(), o.modified.http_date()), date];
                    if !self.omit_etags {
                        headers.push(("etag".into(), o.etag.clone()));
                    }
                    HttpResponse {
                        status: 200,
                        headers,
                        body: o.body.clone(),
                    }
                }
                None => status(404, "<Error><Code>NoSuchKey</Code></Error>", date),
            },
            "PUT" => {
                let existing = self.objects.get(&req.path).map(|o| o.etag.clone());
                let ok = match (header(req, "if-none-match"), header(req, "if-match")) {
                    (Some("*"), _) => existing.is_none(),
                    (_, Some(tag)) => existing.as_deref() == Some(tag),
                    _ => true,
                };
                if !ok {
                    return status(412, "<Error><Code>PreconditionFailed</Code></Error>", date);
                }
                let body = req.body.clone().unwrap_or_default();
                self.next_etag += 1;
                let etag = format!("\"{}\"", self.next_etag);
                if req.path.ends_with("/config.json") {
                    let version = env!("CARGO_PKG_VERSION");
                    match envelope::open(&body, version) {
                        Ok(o) => self.config_writes.push(ConfigWrite {
                            writer: writer.to_string(),
                            exporter: o.exporter,
                            term: o.term,
                            revision: o.revision[1..].parse().unwrap_or(0),
                            at: now,
                        }),
                        Err(e) => panic!("an exporter wrote an invalid envelope: {e}"),
                    }
                }
                self.objects.insert(
                    req.path.clone(),
                    Stored {
                        body,
                        etag: etag.clone(),
                        modified: clock,
                    },
                );
                HttpResponse {
                    status: 200,
                    headers: vec![("etag".into(), etag), date],
                    body: vec![],
                }
            }
            _ => status(405, "", date),
        }
    }
}

fn status(status: u16, body: &str, date: (String, String)) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![date],
        body: body.as_bytes().to_vec(),
    }
}

/// The CP's config for revision `n`.
pub fn cp_config(n: u32) -> String {
    format!(r#"{{"revision":"r{n}","routes":[{{"name":"e","paths":["/e{n}"],"upstream":"u"}}]}}"#)
}

/// A control plane serving revision `revision` (0: none yet) while `up`.
#[derive(Debug)]
pub struct Cp {
    pub up: bool,
    pub revision: u32,
}

impl Cp {
    pub fn handle(&self, req: &HttpRequest) -> HttpResponse {
        if !self.up || self.revision == 0 {
            return HttpResponse {
                status: 503,
                headers: vec![],
                body: b"upstream connect error or disconnect/reset before headers".to_vec(),
            };
        }
        let etag = format!("\"cp{}\"", self.revision);
        if header(req, "if-none-match") == Some(etag.as_str()) {
            return HttpResponse {
                status: 304,
                headers: vec![],
                body: vec![],
            };
        }
        HttpResponse {
            status: 200,
            headers: vec![("etag".into(), etag)],
            body: cp_config(self.revision).into_bytes(),
        }
    }
}
