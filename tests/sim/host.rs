//! The simulated host pieces: proxy-wasm shared data with Envoy's
//! semantics, an S3-like store with real conditional writes, and a CP.

use fallback_config::envelope;
use fallback_config::http::{percent_decode, HttpRequest, HttpResponse};
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
    /// Writes that carried no precondition at all (none may happen).
    pub unconditional_writes: Vec<String>,
    /// Keys read, in order.
    pub reads: Vec<String>,
    pub listings: u64,
    /// The fleet signs and encrypts its snapshots ([`snapshot_env`]):
    /// every `config.json` written must verify and hide its routes.
    pub protected: bool,
    /// Every nonce a protected `config.json` was encrypted with: none may
    /// repeat under one key, across roots, processes and restarts.
    pub nonces: std::collections::HashSet<String>,
}

/// The snapshot keys of a protected fleet, as environment variables.
pub fn snapshot_env(name: &str) -> Option<String> {
    use fallback_config::keys::{env, SigningKey};
    let signing = format!(
        "sim-sign:{}",
        "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU="
    );
    match name {
        env::SIGNING_KEY => Some(signing),
        env::TRUSTED_KEYS => SigningKey::parse(&signing).ok().map(|k| k.public_entry()),
        // 32 bytes of 6, then of 7: the first encrypts.
        env::ENCRYPTION_KEYS => Some(
            "sim-enc:BgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgY=,sim-old:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
                .to_string(),
        ),
        _ => None,
    }
}

/// The keys of a protected fleet, parsed as a node would.
pub fn snapshot_keys() -> fallback_config::keys::SnapshotKeys {
    let plugin = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_export":true,
        "cluster_fallback_config_storage":"s3://bkt/pre","storage":{"endpoint":"http://store:9000"}}"#;
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some("AK".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("SK".to_string()),
        _ => snapshot_env(k),
    };
    match fallback_config::settings::Settings::parse(plugin.as_bytes(), &env) {
        Ok(s) => s.snapshot,
        Err(e) => panic!("the simulated keys: {e}"),
    }
}

pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A throwaway 2048-bit RSA key for the simulated GCS service account
/// (test data, generated for these tests).
pub const SIM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDJ5XG/t7GQikeh\nkz5o0FCc2j15Bb3Iq1YlB8IUWG0RCRKswFv5EevORVgjmXvQKbczeS1jQFJuBx6P\njtCI8wE6uftNKdD5aXrebio4fDnaOt/6eBOgA49IJrza6+LC6M+bck9jNzdCgDfQ\nSBBRL7X/z0BCAxNMX1ZnMdBQBe3DSJ6AjoGG3PG9l6TAQeD6BGN9t2k0BGMWZiqe\njj55u4OXtaTY9IZnAs7ABLHXsBykz2+oPLD3HS5vLndv3GXSIibSzWwZ1oQIIxTv\nO3UMHSTJkCfNEZpyVaZN1OFICyeTnA/utEbKdLnZmDYKioZ/2FUqXIhISpNwkTAY\nFGXfZkuJAgMBAAECggEAGUJ/Lkzlxt8+Ig2Bj+yMQWueqE8bFQm2v/BODGyZzLlV\nYE660xk2ZvrPEbkov/0QIj0FfDb2eTSj0rM8DP5WR4owUlGqhyH20PB4kNOeC1s1\nXal7TxhS62SJWVyM5PTq0JiHLTMh00ymbwUtIXM2Mpi0Ae5Pkk0VStj1JqXvPvDU\njw6ihnpXLBVDW2W3U79iqa+FaOwNRtYIC9v/2Pm/iLSXbqinmDB4eHeshzk/an3r\nn0zvbibR7OdJB7rFPI5v69TPVoPuZVnsp+HfBBtZbZEMfn+i9pW65Mau2BrNDb/h\nEi+E7RtaBJvDhUgT4GIDaCU/lAWFslELp1RKWTBAVwKBgQDtVYLJqans/3ZmZ91+\nDWZizJmmUhtLiTDNvxf0OX6c3uYT4AaSiogoxaMM2EWhmYIhU6Pj3KDlv2dL9cJr\n1R4K2EsMu2XXYLKsVbWvsVrKS9Nuy0JruCLDd2xtRxU7Af8BTOwbaXu6UONOnnsh\n0y7CCB54ZWxaxhlz9vK1VoL+5wKBgQDZxm3AOlZDSBVtmAjikv1PEi2Ka5kgs/XQ\ntS/VG+SnVAouIhecEk2DRwKHUzCje+g5G82m3sBIIh6vfwpp6Cua5p0vuwDTlA5j\nhEKJ7N0v7GL5jk01ftdAfGju7dk+Bh5Jx2ahWFDN9KVaCNXc5M1McYo8Pk/8QepN\nhA7zgVxEDwKBgDr8JaU5JaJhW2vYJJRPgELN1uIfRelgD2ETPUDViUIzo7sM0pVZ\nGL4JYJywo52mKVFfGDxpeROgnmuiiM+ECBNp7j0b1hPRVJbANoeT7Jyae9HtcnST\nLxClfa0rHXus41PPal7luHp14AiKGtAtTFGs8uW5T1TAJ1NK7Mdk2OnBAoGAenah\nhTXJCLDii+yxImiyVeLNBUgYplFM7H7XVSoIXShfSS4WxMduG2K1Q1A+y9CD+Ilw\nDmS5EFdPljUEsCXFT6hbwFmSz2g05zWbDWDLyYVO6zNgq7KWbUcI40ORpNVf9vFQ\n/25gklD/IzBQw5VO9avrppEL/bk7fzfCCKE4N3UCgYEA5iOsbBGT4LD/VlfIxnNb\n6pk4idseX8SBeTK/4No/glzgKWvN31YAwbuclqS6rF8+V7mBQVpwto9BwmMUCLTr\nQ+qnPnpmbAHdWNPz+5TrG4ILPMDHml6EkEBgfE4voGTynwb3XG152a8+pgkxqvXC\na2spYZxZMEy92+k1zMa93WA=\n-----END PRIVATE KEY-----\n";

/// The service account's JSON key, as `GCP_SERVICE_ACCOUNT` holds it.
pub fn service_account_json() -> String {
    serde_json::json!({
        "type": "service_account",
        "private_key": SIM_KEY,
        "client_email": "exporter@sim.iam.gserviceaccount.com",
        "token_uri": "http://oauth:9000/token",
    })
    .to_string()
}

/// What a request asks of the store, whichever API it speaks.
enum Op {
    Get(String),
    Put {
        key: String,
        /// `Some(None)`: must not exist; `Some(Some(tag))`: must match.
        condition: Option<Option<String>>,
    },
    /// A listing of the folders under a prefix (delimiter `/`).
    List(String),
    Unknown,
}

impl Store {
    pub fn protected(protected: bool) -> Self {
        Store {
            protected,
            ..Store::default()
        }
    }

    fn op(req: &HttpRequest) -> Op {
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(|v| percent_decode(v, false))
        };
        if let Some(name) = path.strip_prefix("/storage/v1/b/bkt/o/") {
            return Op::Get(percent_decode(name, false));
        }
        let listing = (path == "/storage/v1/b/bkt/o" || path == "/bkt")
            && param("delimiter").as_deref() == Some("/");
        if listing && req.method == "GET" {
            return Op::List(param("prefix").unwrap_or_default());
        }
        if path == "/upload/storage/v1/b/bkt/o" {
            let condition = param("ifGenerationMatch").map(|g| (g != "0").then_some(g));
            return match param("name") {
                Some(key) => Op::Put { key, condition },
                None => Op::Unknown,
            };
        }
        let Some(key) = path.strip_prefix("/bkt/") else {
            return Op::Unknown;
        };
        let key = percent_decode(key, false);
        match req.method.as_str() {
            "GET" => Op::Get(key),
            "PUT" => {
                let condition = match (header(req, "if-none-match"), header(req, "if-match")) {
                    (Some("*"), _) => Some(None),
                    (_, Some(tag)) => Some(Some(tag.to_string())),
                    _ => None,
                };
                Op::Put { key, condition }
            }
            _ => Op::Unknown,
        }
    }

    /// Executes a request at store time `now` (ms of simulated time).
    /// `gcs`: answer as GCS does (generations, JSON bodies) and accept
    /// only the bearer tokens in `tokens` that are still valid.
    pub fn handle(
        &mut self,
        req: &HttpRequest,
        now: u64,
        writer: &str,
        tokens: Option<&HashMap<String, u64>>,
    ) -> HttpResponse {
        self.requests += 1;
        let clock = Timestamp::from_secs(1_800_000_000).plus(std::time::Duration::from_millis(now));
        let date = ("date".to_string(), clock.http_date());
        if let Some(tokens) = tokens {
            let valid = header(req, "authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|t| tokens.get(t))
                .is_some_and(|expiry| now < *expiry);
            if !valid {
                return status(
                    401,
                    r#"{"error":{"code":401,"errors":[{"reason":"authError"}]}}"#,
                    date,
                );
            }
        }
        let version_header = if tokens.is_some() {
            "x-goog-generation"
        } else {
            "etag"
        };
        let op = Self::op(req);
        if let Op::Get(key) = &op {
            self.reads.push(key.clone());
        }
        match op {
            Op::Get(key) => match self.objects.get(&key) {
                Some(o) => {
                    let mut headers = vec![("last-modified".into(), o.modified.http_date()), date];
                    if !self.omit_etags {
                        headers.push((version_header.into(), o.etag.clone()));
                    }
                    HttpResponse {
                        status: 200,
                        headers,
                        body: o.body.clone(),
                    }
                }
                None if tokens.is_some() => status(
                    404,
                    r#"{"error":{"code":404,"errors":[{"reason":"notFound"}]}}"#,
                    date,
                ),
                None => status(404, "<Error><Code>NoSuchKey</Code></Error>", date),
            },
            Op::Put { key, condition } => {
                let existing = self.objects.get(&key).map(|o| o.etag.clone());
                if condition.is_none() {
                    self.unconditional_writes
                        .push(format!("{writer} wrote {key}"));
                }
                let ok = match condition {
                    Some(None) => existing.is_none(),
                    Some(Some(tag)) => existing.as_deref() == Some(tag.as_str()),
                    None => true,
                };
                if !ok {
                    return status(412, "<Error><Code>PreconditionFailed</Code></Error>", date);
                }
                let body = req.body.clone().unwrap_or_default();
                self.next_etag += 1;
                let etag = match tokens {
                    Some(_) => self.next_etag.to_string(),
                    None => format!("\"{}\"", self.next_etag),
                };
                if key.ends_with("/config.json") {
                    let version = env!("CARGO_PKG_VERSION");
                    let keys = snapshot_keys();
                    let trust = match self.protected {
                        true => envelope::Trust {
                            require_signature: true,
                            require_encryption: true,
                            trusted: &keys.trusted,
                            decryption: &keys.encryption,
                        },
                        false => envelope::Trust::NONE,
                    };
                    if self.protected && String::from_utf8_lossy(&body).contains("routes") {
                        panic!("a protected fleet wrote its routes in clear text");
                    }
                    if self.protected {
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let enc = &v["encryption"];
                        let nonce = format!("{}/{}", enc["key_id"], enc["nonce"]);
                        if !self.nonces.insert(nonce.clone()) {
                            panic!("nonce {nonce} used twice");
                        }
                    }
                    match envelope::open(&body, version, &trust) {
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
                    key,
                    Stored {
                        body,
                        etag: etag.clone(),
                        modified: clock,
                    },
                );
                match tokens {
                    Some(_) => HttpResponse {
                        status: 200,
                        headers: vec![date],
                        body: format!(r#"{{"generation":"{etag}"}}"#).into_bytes(),
                    },
                    None => HttpResponse {
                        status: 200,
                        headers: vec![("etag".into(), etag), date],
                        body: vec![],
                    },
                }
            }
            Op::List(prefix) => {
                let mut folders: Vec<String> = self
                    .objects
                    .keys()
                    .filter_map(|k| {
                        let rest = k.strip_prefix(&prefix)?;
                        let (folder, _) = rest.split_once('/')?;
                        Some(format!("{prefix}{folder}/"))
                    })
                    .collect();
                folders.sort();
                folders.dedup();
                self.listings += 1;
                let body = match tokens {
                    Some(_) => serde_json::json!({ "prefixes": folders }).to_string(),
                    None => {
                        let items: String = folders
                            .iter()
                            .map(|f| {
                                format!("<CommonPrefixes><Prefix>{f}</Prefix></CommonPrefixes>")
                            })
                            .collect();
                        format!(
                            "<ListBucketResult><IsTruncated>false</IsTruncated>{items}</ListBucketResult>"
                        )
                    }
                };
                HttpResponse {
                    status: 200,
                    headers: vec![date],
                    body: body.into_bytes(),
                }
            }
            Op::Unknown => status(400, "", date),
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

/// The GCS token endpoint: issues short-lived tokens while `up`.
#[derive(Debug, Default)]
pub struct TokenServer {
    pub down: bool,
    /// Token → expiry (ms of simulated time).
    pub issued: HashMap<String, u64>,
    pub lifetime_s: u64,
}

impl TokenServer {
    pub fn handle(&mut self, req: &HttpRequest, now: u64) -> HttpResponse {
        let grant = req.body.as_deref().is_some_and(|b| {
            b.starts_with(
                b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
            )
        });
        if self.down || !grant {
            return HttpResponse {
                status: 503,
                headers: vec![],
                body: b"upstream connect error".to_vec(),
            };
        }
        let token = format!("tok-{}", self.issued.len() + 1);
        self.issued
            .insert(token.clone(), now + self.lifetime_s * 1000);
        HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: format!(
                r#"{{"access_token":"{token}","expires_in":{},"token_type":"Bearer"}}"#,
                self.lifetime_s
            )
            .into_bytes(),
        }
    }
}
