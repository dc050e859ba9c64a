//! The fuzz harnesses of fallback-config, one module per target.
//!
//! Each `fuzz_targets/<name>.rs` is one line calling `<name>::run`; the
//! logic lives here so that `cargo test` (stable, no cargo-fuzz) replays
//! the checked-in corpus and every recorded crash through exactly the
//! code the fuzzer runs (see `tests/`).
//!
//! Every harness uses the crate's public API only. A panic anywhere is a
//! bug (the filter denies unwrap/expect/panic); the `assert!`s below are
//! properties of the parsers' results: round trips, and that what one
//! part of the filter accepts another can use.
//!
//! Input formats are text where the parser reads text, so that seeds in
//! `corpus/` can be read and written by hand:
//! - an HTTP answer ([`input::response`]): a status line, `name: value`
//!   header lines, an empty line, then the body bytes;
//! - two parts split at the first NUL byte ([`input::split_nul`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod key;

use fallback_config::clock::Now;
use fallback_config::settings::Settings;
use fallback_config::storage::ObjectStore;
use std::sync::OnceLock;

/// The version every harness imports as: the filter's own.
pub const VERSION: &str = fallback_config::controller::VERSION;

/// Turning fuzz bytes into the parsers' inputs.
pub mod input {
    use fallback_config::http::HttpResponse;

    /// Statuses picked for a status line that is not a number.
    const STATUSES: [u16; 16] = [
        0, 200, 201, 204, 206, 304, 400, 401, 403, 404, 409, 412, 429, 500, 503, 504,
    ];

    /// `status\nname: value\n...\n\nbody`. A status line that is not a
    /// number picks one of [`STATUSES`] from its bytes; a header line
    /// without `:` is a header with an empty value; no empty line means
    /// no body.
    pub fn response(data: &[u8]) -> HttpResponse {
        let (head, body) = match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split('\n');
        let first = lines.next().unwrap_or("").trim();
        let status = first.parse::<u16>().unwrap_or_else(|_| {
            let sum: usize = first.bytes().map(usize::from).sum();
            STATUSES[sum % STATUSES.len()]
        });
        let headers = lines
            .map(|l| {
                let l = l.strip_suffix('\r').unwrap_or(l);
                match l.split_once(':') {
                    Some((k, v)) => (k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                    None => (l.to_string(), String::new()),
                }
            })
            .collect();
        HttpResponse {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    /// The bytes before and after the first NUL (all and nothing without one).
    pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
        match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[]),
        }
    }

    pub fn text(data: &[u8]) -> String {
        String::from_utf8_lossy(data).into_owned()
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}

/// The fixed plugin JSON and environment of one store per backend (GCS
/// anonymous: requests are built without waiting for a token).
fn store(url: &str, extra_env: &[(&str, &str)]) -> ObjectStore {
    let signing = match url.starts_with("gs://") {
        true => r#","signing":"none""#,
        false => "",
    };
    let json = format!(
        r#"{{"cluster_fallback_config_import":true,"cluster_fallback_config_export":true,
            "cluster_fallback_config_storage":"{url}",
            "storage":{{"max_object_bytes":2048{signing}}}}}"#
    );
    let env: Vec<(String, String)> = extra_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let settings = Settings::parse(json.as_bytes(), &lookup).expect("fixed plugin JSON");
    ObjectStore::new(settings.storage.expect("storage is configured"))
}

/// The well-known Azurite development key (public, in Microsoft's docs).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub fn s3_store() -> &'static ObjectStore {
    static S: OnceLock<ObjectStore> = OnceLock::new();
    S.get_or_init(|| {
        store(
            "s3://fuzz-bucket/gw",
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                (
                    "AWS_SECRET_ACCESS_KEY",
                    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                ),
                ("AWS_REGION", "us-east-1"),
            ],
        )
    })
}

pub fn gcs_store() -> &'static ObjectStore {
    static S: OnceLock<ObjectStore> = OnceLock::new();
    // Anonymous: answers are classified alike with or without a token,
    // and the token exchange has its own target.
    S.get_or_init(|| store("gs://fuzz-bucket/gw", &[]))
}

pub fn azure_store() -> &'static ObjectStore {
    static S: OnceLock<ObjectStore> = OnceLock::new();
    S.get_or_init(|| {
        store(
            "azure://devstoreaccount1/configs/gw",
            &[
                ("AZURE_STORAGE_KEY", AZURITE_KEY),
                (
                    "AZURE_STORAGE_ENDPOINT",
                    "http://127.0.0.1:10000/devstoreaccount1",
                ),
            ],
        )
    })
}

/// A wall clock in 2027 and a monotonic one well past its origin.
pub fn now() -> Now {
    Now::at_millis(3_600_000)
}

/// `config.json`: `envelope::open` and `envelope::stored_term`, without
/// keys and with a fixed set (a trusted signer, two decryption keys), so
/// that format 2 signed and encrypted envelopes from the corpus reach
/// the signature and AEAD checks.
pub mod envelope {
    use fallback_config::envelope::{self, Export, Protection, Trust};
    use fallback_config::gateway::GatewayConfig;
    use fallback_config::keys::SnapshotKeys;
    use fallback_config::time::Timestamp;
    use std::sync::OnceLock;

    /// The fuzz fleet's keys: `FALLBACK_CONFIG_*` as `seeds.py` writes
    /// them (signer `fz-sign`, encryption keys `fz-enc` then `fz-old`).
    pub fn keys() -> &'static SnapshotKeys {
        static K: OnceLock<SnapshotKeys> = OnceLock::new();
        K.get_or_init(|| {
            let env = |k: &str| match k {
                "FALLBACK_CONFIG_SIGNING_KEY" => Some(SIGNING.to_string()),
                "FALLBACK_CONFIG_ENCRYPTION_KEYS" => Some(ENCRYPTION.to_string()),
                _ => None,
            };
            fallback_config::settings::Settings::parse(b"{}", &env)
                .expect("the fuzz keys")
                .snapshot
        })
    }

    /// 32 bytes of 0x11 (the signing seed) and of 0x22 / 0x33.
    pub const SIGNING: &str = "fz-sign:ERERERERERERERERERERERERERERERERERERERERERE=";
    pub const ENCRYPTION: &str = "fz-enc:IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=,fz-old:MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=";

    pub fn run(data: &[u8]) {
        let term = envelope::stored_term(data);
        let k = keys();
        let strict = Trust {
            require_signature: true,
            require_encryption: false,
            trusted: &k.trusted,
            decryption: &k.encryption,
        };
        let loose = Trust {
            require_signature: false,
            ..strict
        };
        let none = envelope::open(data, super::VERSION, &Trust::NONE);
        let with_keys = envelope::open(data, super::VERSION, &loose);
        let required = envelope::open(data, super::VERSION, &strict);
        let sealed_only = envelope::open(
            data,
            super::VERSION,
            &Trust {
                require_encryption: true,
                ..strict
            },
        );
        assert_eq!(envelope::fence_term(data, &[]), term.unwrap_or(0));
        let fence = envelope::fence_term(data, &k.trusted);
        for e in [&none, &with_keys, &required, &sealed_only]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            let _ = e.to_string();
        }
        if let Ok(o) = &required {
            // What the strict check accepts is signed by the trusted key,
            // and the looser checks agree on it.
            assert_eq!(o.signed_by.as_deref(), Some("fz-sign"));
            assert_eq!(with_keys.as_ref().ok(), Some(o));
            // The fence obeys exactly the verified term.
            assert_eq!(fence, o.term);
        }
        if let Ok(o) = &sealed_only {
            assert!(o.encrypted_with.is_some());
            assert_eq!(required.as_ref().ok(), Some(o));
        }
        if let (Ok(a), Ok(b)) = (&none, &with_keys) {
            // Keys only add checks: what opens without them opens the same.
            assert_eq!(a.config_bytes, b.config_bytes);
        }
        let opened = match with_keys {
            Ok(o) => o,
            Err(_) => return,
        };
        // What open verified holds.
        assert_eq!(opened.sha256, envelope::sha256_hex(&opened.config_bytes));
        assert_eq!(opened.config.revision, opened.revision);
        assert_eq!(
            GatewayConfig::parse(&opened.config_bytes).as_ref(),
            Ok(&opened.config)
        );
        if let Some(t) = term {
            assert_eq!(t, opened.term, "stored_term and open disagree");
        }
        // An exporter that re-exports what it imported writes an envelope
        // that opens to the same config, byte for byte, signed and
        // encrypted or not.
        for protection in [
            Protection::NONE,
            Protection {
                signing: k.signing.as_ref(),
                encryption: k.encryption.first().map(|e| (e, [9; 24])),
            },
        ] {
            let sealed = envelope::seal(
                Export {
                    config: &opened.config_bytes,
                    revision: &opened.revision,
                    version: super::VERSION,
                    exporter: &opened.exporter,
                    exported_at: Timestamp::parse_rfc3339(&opened.exported_at).unwrap_or_default(),
                    term: opened.term,
                },
                protection,
            )
            .expect("an opened config seals");
            let again = envelope::open(&sealed, super::VERSION, &strict).or_else(|e| {
                match protection.signing {
                    None => envelope::open(&sealed, super::VERSION, &loose),
                    Some(_) => Err(e),
                }
            });
            let again = again.expect("a sealed envelope opens");
            assert_eq!(again.config_bytes, opened.config_bytes);
            assert_eq!(again.config, opened.config);
            assert_eq!(again.sha256, opened.sha256);
            assert_eq!(
                (again.term, &again.exporter),
                (opened.term, &opened.exporter)
            );
            assert_eq!(envelope::stored_term(&sealed), Some(opened.term));
            let signed_term = protection.signing.map_or(0, |_| opened.term);
            assert_eq!(envelope::fence_term(&sealed, &k.trusted), signed_term);
        }
    }
}

/// The CP's gateway config (`GatewayConfig::parse`) and route matching.
/// Input: config JSON, NUL, request lines `METHOD HOST PATH`. Requests
/// are matched against the parsed config, or a fixed one when it does
/// not parse.
pub mod gateway {
    use super::input;
    use fallback_config::gateway::{GatewayConfig, PathMatch, RequestInfo, Route};
    use std::sync::OnceLock;

    const FIXED: &str = r#"{"revision":"r1","routes":[
        {"name":"root","paths":["/"],"upstream":"default"},
        {"name":"echo","paths":["/echo"],"upstream":"echo_service"},
        {"name":"deep","paths":["/echo/deep","/other"],"upstream":"deep"},
        {"name":"posts","paths":["/echo"],"methods":["post"],"hosts":["API.example.com","*.wild.io"],"upstream":"writer"},
        {"name":"v6","paths":["/v6"],"hosts":["[::1]"],"upstream":"six"},
        {"name":"seg","paths":["/seg","/dir/"],"path_match":"segment","upstream":"seg"},
        {"name":"exact","paths":["/echo/deep/x"],"path_match":"exact","upstream":"exact"}
    ]}"#;

    fn fixed() -> &'static GatewayConfig {
        static C: OnceLock<GatewayConfig> = OnceLock::new();
        C.get_or_init(|| GatewayConfig::parse(FIXED.as_bytes()).expect("fixed config"))
    }

    pub fn run(data: &[u8]) {
        let (config, requests) = input::split_nul(data);
        let parsed = GatewayConfig::parse(config);
        match &parsed {
            Ok(c) => {
                assert!(!c.revision.trim().is_empty());
                // What workers load is what the driver built.
                let bytes = c.table().encoded().to_vec();
                let table = fallback_config::route_table::RouteTable::load(bytes, 0);
                assert_eq!(table.as_ref(), Ok(c.table()));
                for r in &c.routes {
                    assert!(!r.paths.is_empty() && r.paths.iter().all(|p| p.starts_with('/')));
                    assert!(r.hosts.iter().all(|h| *h == h.to_ascii_lowercase()));
                    assert!(r.methods.iter().all(|m| *m == m.to_ascii_uppercase()));
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let config = parsed.as_ref().unwrap_or_else(|_| fixed());
        let requests = input::text(requests);
        for line in requests.lines().take(64) {
            let mut parts = line.splitn(3, ' ');
            let req = RequestInfo {
                method: parts.next().unwrap_or(""),
                host: parts.next().unwrap_or(""),
                path: parts.next().unwrap_or(""),
            };
            check_route(config, req);
        }
    }

    /// The index chooses exactly what the linear reference chooses; the
    /// chosen route matches the method and path, and no route that
    /// matches every host has a longer matching path.
    fn check_route(config: &GatewayConfig, req: RequestInfo<'_>) {
        let position = config.route_position(req);
        assert_eq!(
            position,
            config.route_position_linear(req),
            "index and linear scan disagree on {req:?}"
        );
        assert_eq!(
            config.route(req).map(|r| r as *const Route),
            position.map(|i| &config.routes[i] as *const Route)
        );
        let path = req.path.split(['?', '#']).next().unwrap_or("");
        let longest = |r: &Route| {
            r.paths
                .iter()
                .filter(|p| match r.path_match {
                    PathMatch::Prefix => path.starts_with(p.as_str()),
                    PathMatch::Exact => path == p.as_str(),
                    PathMatch::Segment => path.strip_prefix(p.as_str()).is_some_and(|rest| {
                        p.ends_with('/') || rest.is_empty() || rest.starts_with('/')
                    }),
                })
                .map(|p| p.len())
                .max()
        };
        let method_ok =
            |r: &Route| r.methods.is_empty() || r.methods.iter().any(|m| m == req.method);
        let any_host_best = config
            .routes
            .iter()
            .filter(|r| r.hosts.is_empty() && method_ok(r))
            .filter_map(longest)
            .max();
        match config.route(req) {
            Some(r) => {
                assert!(method_ok(r), "route {} ignores its methods", r.name);
                let len = longest(r).expect("the chosen route matches the path");
                assert!(
                    any_host_best.is_none_or(|b| b <= len),
                    "a longer prefix was passed over"
                );
            }
            None => assert!(
                any_host_best.is_none(),
                "a host-less route matches but none was chosen"
            ),
        }
    }
}

/// Shared data: the published record, the generation counter, the
/// driver record and the status record (and the status answer).
pub mod published {
    use fallback_config::published::{self, DriverRecord};
    use fallback_config::status::{self, StatusRecord};

    /// A compiled route table from bytes: one that loads routes without
    /// panicking or looping, whatever its numbers say.
    fn route_table(bytes: &[u8]) {
        use fallback_config::gateway::RequestInfo;
        use fallback_config::route_table::RouteTable;
        if let Ok(table) = RouteTable::load(bytes.to_vec(), 0) {
            assert_eq!(table.encoded(), bytes);
            for path in ["/", "/a/b", "/x?y"] {
                let _ = table.route_upstream(RequestInfo {
                    method: "GET",
                    host: "a.b.example.com",
                    path,
                });
            }
        }
    }

    pub fn run(data: &[u8]) {
        if let Ok(record) = published::decode(data) {
            let again = published::encode(&record.meta, record.config, record.routes);
            assert_eq!(published::decode(&again).as_ref(), Ok(&record));
            assert_eq!(
                published::record_generation(data),
                Some(record.meta.generation)
            );
            // What a worker loads: refused or usable, never a panic.
            route_table(record.routes);
        }
        route_table(data);
        let _ = published::record_generation(data);
        if let Some(g) = published::decode_generation(data) {
            assert_eq!(
                published::decode_generation(&published::encode_generation(g)),
                Some(g)
            );
        }
        if let Some(r) = DriverRecord::decode(data) {
            assert_eq!(DriverRecord::decode(&r.encode()), Some(r));
        }
        if let Some(s) = StatusRecord::decode(data) {
            assert_eq!(StatusRecord::decode(&s.encode()).as_ref(), Some(&s));
            let _ = s.age_s(super::now().wall);
        }
        for serving in [false, true] {
            let (code, body) = status::answer(Some(data), serving, super::now().wall);
            assert_eq!(code, if serving { 200 } else { 503 });
            let v: serde_json::Value = serde_json::from_str(&body).expect("the answer is JSON");
            assert!(v.is_object() && v.get("state").is_some(), "{body}");
        }
    }
}

/// The election lease as read from the store: an S3 GET answer (so its
/// `ETag`, `Date` and `Last-Modified` are fuzzed too) through
/// `read_result` into `Election::on_read`, for a follower, the holder
/// restarting, and again after the lease's time.
pub mod election_lease {
    use super::input;
    use fallback_config::clock::Now;
    use fallback_config::election::{Election, LeaseRecord, Step};
    use fallback_config::settings::ElectionSettings;
    use std::time::Duration;

    pub fn run(data: &[u8]) {
        let response = input::response(data);
        if let Some(record) = LeaseRecord::decode(&response.body) {
            assert_eq!(LeaseRecord::decode(&record.encode()), Some(record));
        }
        let result = super::s3_store().read_result(response);
        let settings = ElectionSettings {
            lease_ttl: Duration::from_secs(30),
            renew_interval: Duration::from_secs(10),
        };
        for node in ["node-a", "node-b"] {
            let mut e = Election::new(settings, node.to_string());
            let mut out = Vec::new();
            let mut now = super::now();
            for round in 0..3 {
                // A read is due at first and after each wait; a leader
                // renews instead.
                let Some((step, kind)) = e.poll(now, &mut out) else {
                    now = later(now, 45_000);
                    continue;
                };
                let reply = match step {
                    Step::Read => e.on_read(result.clone(), now, &mut out),
                    Step::Write { record, .. } => {
                        check_written(&record, node);
                        let kind = kind.expect("a write has a kind");
                        e.on_write(
                            kind,
                            Ok(Some(format!("\"w{round}\""))),
                            now.mono,
                            now,
                            &mut out,
                        );
                        None
                    }
                };
                if let Some((Step::Write { record, .. }, Some(kind))) = reply {
                    check_written(&record, node);
                    e.on_write(
                        kind,
                        Ok(Some("\"acquired\"".into())),
                        now.mono,
                        now,
                        &mut out,
                    );
                }
                let _ = e.leader_term(now.mono);
                let _ = e.next_due();
                now = later(now, 45_000);
            }
            for event in &out {
                let _ = event.to_string();
            }
            let _ = e.take_changes();
        }
    }

    fn later(now: Now, ms: u64) -> Now {
        Now {
            mono: now.mono.plus(Duration::from_millis(ms)),
            wall: now.wall.plus(Duration::from_millis(ms)),
        }
    }

    /// A lease this node writes names it and a term above zero.
    fn check_written(record: &LeaseRecord, node: &str) {
        assert_eq!(record.holder, node);
        assert!(record.term > 0, "a lease written with term 0");
    }
}

/// The plugin configuration: `Settings::parse` of the JSON before the
/// first NUL, with `NAME=value` lines after it as the environment. A
/// parsed storage config then builds its requests. Secrets (the values
/// of the credential variables) must never show in an error or `Debug`:
/// checked for values holding the marker `CANARY`.
pub mod settings {
    use super::input;
    use fallback_config::settings::Settings;
    use fallback_config::storage::{ObjectStore, PutMode};

    /// (`GCP_SERVICE_ACCOUNT` is not one: its `client_email` and
    /// `token_uri` are shown by design; its key has its own target.)
    const SECRET_VARS: [&str; 6] = [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "FALLBACK_CONFIG_SIGNING_KEY",
        "FALLBACK_CONFIG_ENCRYPTION_KEYS",
    ];

    pub fn run(data: &[u8]) {
        let (json, env) = input::split_nul(data);
        let env = input::text(env);
        let vars: Vec<(&str, &str)> = env.lines().filter_map(|l| l.split_once('=')).collect();
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        // The marker may be echoed only if it is somewhere a secret is not.
        let canary = vars
            .iter()
            .any(|(k, v)| SECRET_VARS.contains(k) && v.contains("CANARY"))
            && !json.windows(6).any(|w| w == b"CANARY")
            && !vars
                .iter()
                .any(|(k, v)| !SECRET_VARS.contains(k) && v.contains("CANARY"));
        let shown = match Settings::parse(json, &lookup) {
            Ok(s) => {
                let mut shown = format!("{s:?}");
                if let Some(storage) = s.storage.clone() {
                    shown.push_str(&requests(ObjectStore::new(storage)));
                }
                let _ = s.resolve_node_id(None, 7);
                shown
            }
            Err(e) => e.to_string(),
        };
        if canary {
            assert!(!shown.contains("CANARY"), "a secret is shown: {shown}");
        }
    }

    /// Builds every request a configured store sends; their `Debug`
    /// (what a log line would show) is returned.
    fn requests(mut store: ObjectStore) -> String {
        let now = super::now();
        let key = store.key(super::VERSION, "config.json");
        let _ = store.url(&key);
        let _ = store.list_url();
        let mut shown = String::new();
        // GCS with a service account: its token request (signs a JWT).
        if let Ok(Some(r)) = store.credential_request(now) {
            shown.push_str(&format!("{r:?}"));
        }
        let reqs = [
            store.get(&key, now),
            store.put(&key, b"{}".to_vec(), &PutMode::Create, now),
            store.put(
                &key,
                b"{}".to_vec(),
                &PutMode::Update {
                    etag: "\"e\"".into(),
                },
                now,
            ),
            store.list_versions(None, now),
            store.list_versions(Some("next/page token"), now),
        ];
        for r in reqs {
            shown.push_str(&format!("{r:?}"));
        }
        shown
    }
}

/// Answers of the store to a GET, a PUT and a listing, per backend.
pub mod storage {
    use super::input;
    use fallback_config::storage::{ObjectStore, StorageError};

    pub fn run(store: &ObjectStore, data: &[u8]) {
        let response = input::response(data);
        let transport = response.transport_error(store.max_object_bytes());
        let read = store.read_result(response.clone());
        let write = store.write_result(&response);
        let list = store.list_result(response.clone());
        for e in [
            read.as_ref().err(),
            write.as_ref().err(),
            list.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = e.to_string();
        }
        if transport.is_some() {
            assert!(matches!(read, Err(StorageError::Transport(_))));
            assert!(matches!(write, Err(StorageError::Transport(_))));
            assert!(matches!(list, Err(StorageError::Transport(_))));
            return;
        }
        // Every backend reports these alike: the election depends on it.
        match response.status {
            404 => {
                assert!(
                    matches!(read, Err(StorageError::NotFound { .. })),
                    "{read:?}"
                );
                assert!(matches!(write, Err(StorageError::NotFound { .. })));
            }
            412 => assert!(
                matches!(write, Err(StorageError::PreconditionFailed)),
                "{write:?}"
            ),
            _ => {}
        }
        if let Ok(object) = &read {
            assert_eq!(object.body, response.body);
        }
        if let Ok((names, next)) = &list {
            for n in names {
                assert!(!n.is_empty() && !n.contains('/'), "version name {n:?}");
            }
            if let Some(next) = next {
                // The next page's request can be built from the token.
                store
                    .list_versions(Some(next), super::now())
                    .expect("a page token builds a request");
            }
        }
    }
}

pub mod s3_response {
    pub fn run(data: &[u8]) {
        super::storage::run(super::s3_store(), data)
    }
}

pub mod gcs_response {
    pub fn run(data: &[u8]) {
        super::storage::run(super::gcs_store(), data)
    }
}

pub mod azure_response {
    pub fn run(data: &[u8]) {
        super::storage::run(super::azure_store(), data)
    }
}

/// `storage::xml`: the element name on the first line, the document after.
pub mod xml {
    use super::input;
    use fallback_config::storage::xml;

    pub fn run(data: &[u8]) {
        let text = input::text(data);
        let (name, body) = text.split_once('\n').unwrap_or(("Code", &text));
        let all = xml::elements(body, name);
        let fold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        match (xml::element(body, name), all.first()) {
            (Some(first), Some(a)) => assert_eq!(first, fold(a)),
            (None, Some(a)) => assert!(fold(a).is_empty()),
            (Some(first), None) => panic!("element {first:?} without elements"),
            (None, None) => {}
        }
        if !name.is_empty() {
            // Each element starts at its own `<name` (attributes may follow).
            assert!(all.len() <= body.matches(&format!("<{name}")).count());
        }
        let unescaped = xml::unescape(body);
        assert!(unescaped.len() <= body.len());
        if !body.contains('&') {
            assert_eq!(unescaped, body);
        }
        // What an XML writer escapes, unescape restores.
        let escaped = body
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;");
        assert_eq!(xml::unescape(&escaped), body);
    }
}

/// A credential source's answer (HTTP format) through
/// `CredentialCache::on_response`: the first byte picks the source and
/// step (a service account's token endpoint, the GCP metadata server,
/// Azure IMDS, container credentials, and each of the three IMDSv2
/// steps), the rest is the answer. Each cache is brought to its waiting
/// state once; each input answers a copy.
pub mod token_response {
    use super::input;
    use fallback_config::clock::Now;
    use fallback_config::http::HttpResponse;
    use fallback_config::secret::Secret;
    use fallback_config::storage::credentials::{
        AzureManagedIdentity, ContainerSource, CredentialCache, GcpMetadata, ImdsSource, Provider,
    };
    use fallback_config::storage::gcp_auth::ServiceAccount;
    use std::sync::OnceLock;
    use std::time::Duration;

    fn ok(body: &str) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn waiting() -> &'static [(CredentialCache, Now)] {
        static C: OnceLock<Vec<(CredentialCache, Now)>> = OnceLock::new();
        C.get_or_init(|| {
            let account = ServiceAccount::parse(&super::key::service_account_json())
                .expect("the test service account parses");
            let cluster = || "c".to_string();
            let host = || "169.254.169.254".to_string();
            let imds = Provider::AwsImds(ImdsSource {
                cluster: cluster(),
                authority: host(),
            });
            let providers = [
                (
                    Provider::GcpServiceAccount {
                        account: Box::new(account),
                        cluster: cluster(),
                    },
                    0,
                ),
                (
                    Provider::GcpMetadata(GcpMetadata {
                        cluster: cluster(),
                        authority: host(),
                    }),
                    0,
                ),
                (
                    Provider::AzureManagedIdentity(AzureManagedIdentity {
                        client_id: None,
                        cluster: cluster(),
                        authority: host(),
                    }),
                    0,
                ),
                (
                    Provider::AwsContainer(ContainerSource {
                        cluster: cluster(),
                        authority: "169.254.170.2".into(),
                        path: "/v2/credentials/x".into(),
                        authorization: Some(Secret::new("container-token")),
                    }),
                    0,
                ),
                (imds.clone(), 0),
                (imds.clone(), 1),
                (imds, 2),
            ];
            let now = super::now();
            providers
                .into_iter()
                .map(|(provider, steps)| {
                    let mut cache = CredentialCache::new(provider, Duration::from_secs(5));
                    for answer in ["imds-session-token", "fuzz-role"].iter().take(steps) {
                        cache.next_request(now).expect("builds").expect("due");
                        cache.on_response(ok(answer), now).expect("a step");
                    }
                    cache.next_request(now).expect("builds").expect("due");
                    (cache, now)
                })
                .collect()
        })
    }

    pub fn run(data: &[u8]) {
        let Some((&pick, rest)) = data.split_first() else {
            return;
        };
        let caches = waiting();
        let (cache, sent) = &caches[usize::from(pick) % caches.len()];
        let mut cache = cache.clone();
        let response = input::response(rest);
        let now = Now {
            mono: sent.mono.plus(Duration::from_millis(250)),
            wall: sent.wall.plus(Duration::from_millis(250)),
        };
        let result = cache.on_response(response.clone(), now);
        match &result {
            Ok(()) => {
                // Credentials usable at once, or the next step due at once.
                let usable = cache.credential(now.mono).is_some();
                assert_eq!(usable, cache.expires_at().is_some());
                if !usable {
                    assert!(matches!(cache.next_request(now), Ok(Some(_))));
                    return;
                }
            }
            Err(e) => {
                let _ = e.to_string();
                assert!(cache.credential(now.mono).is_none());
            }
        }
        // Right after a final answer nothing is due: the credentials are
        // fresh, or a failure backs off.
        assert!(matches!(cache.next_request(now), Ok(None)));
        // A 200's secrets are never shown in an error or `Debug`
        // (`token_type` and `Code` are quoted by their errors, so not if
        // they hold them).
        if response.status == 200 {
            let v: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
            let field = |k: &str| {
                v.as_ref()
                    .and_then(|v| v.get(k))
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            };
            let quoted = |secret: &str| {
                ["token_type", "Code"]
                    .iter()
                    .any(|k| field(k).is_some_and(|t| t.contains(secret)))
            };
            for key in ["access_token", "SecretAccessKey", "Token"] {
                if let Some(secret) = field(key).filter(|t| t.len() >= 8) {
                    let shown = format!("{result:?} {cache:?}");
                    assert!(
                        quoted(&secret) || !shown.contains(&secret),
                        "{key} is shown: {shown}"
                    );
                }
            }
        }
    }
}

/// `ServiceAccount::parse` (the `GCP_SERVICE_ACCOUNT` JSON key).
pub mod service_account {
    use super::input;
    use fallback_config::storage::gcp_auth::ServiceAccount;

    pub fn run(data: &[u8]) {
        let text = input::text(data);
        // Neither `Debug` nor an error ever shows the key: probe with 16
        // characters of its body that occur nowhere else in the input.
        let probe = key_probe(&text);
        match ServiceAccount::parse(&text) {
            Ok(a) => {
                let shown = format!("{a:?}");
                if let Some(probe) = &probe {
                    assert!(!shown.contains(probe), "the key is shown: {shown}");
                }
                assert!(a.token_path().starts_with('/'), "{}", a.token_path());
                assert!(!a.token_authority().is_empty());
                assert!(!a.client_email().trim().is_empty());
            }
            Err(e) => {
                let msg = e.to_string();
                if let Some(probe) = &probe {
                    assert!(!msg.contains(probe), "the key is quoted: {msg}");
                }
            }
        }
    }

    /// 16 characters of the key's base64 (not its `-----` armour, which
    /// the messages name, nor anything else a message could hold by
    /// itself), if they occur once in the input.
    fn key_probe(text: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let key = v.get("private_key")?.as_str()?.replace("\\n", "\n");
        let base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
        let probe = key
            .lines()
            .filter(|l| !l.contains("-----"))
            .flat_map(|l| l.split(|c: char| !base64(c)))
            .find(|run| run.len() >= 16)?
            .get(..16)?
            .to_string();
        (text.matches(&probe).count() == 1).then_some(probe)
    }
}

/// HTTP dates (`Date`, `Last-Modified`) and RFC 3339 (`exported_at`):
/// what parses formats back to itself, and every instant (the first 8
/// bytes) formats to dates that parse back to it.
pub mod dates {
    use super::input;
    use fallback_config::time::Timestamp;

    /// 10000-01-01T00:00:00Z: RFC 3339 and IMF-fixdate have four-digit years.
    const YEAR_10000_MS: u64 = 253_402_300_800_000;

    pub fn run(data: &[u8]) {
        let text = input::text(data);
        if let Some(t) = Timestamp::parse_http_date(&text) {
            assert_eq!(t.as_millis() % 1000, 0);
            assert_eq!(
                Timestamp::parse_http_date(&t.http_date()),
                Some(t),
                "{text:?}"
            );
        }
        if let Some(t) = Timestamp::parse_rfc3339(&text) {
            let secs = Timestamp::from_secs(t.as_secs());
            if t.as_millis() < YEAR_10000_MS {
                assert_eq!(
                    Timestamp::parse_rfc3339(&secs.rfc3339()),
                    Some(secs),
                    "{text:?}"
                );
            }
            check_offset(&text);
        }
        if let Some(bytes) = data.get(..8) {
            let ms = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            for ms in [ms, ms % YEAR_10000_MS] {
                let t = Timestamp(ms);
                let secs = Timestamp::from_secs(t.as_secs());
                // Both formats have four-digit years.
                if ms < YEAR_10000_MS {
                    assert_eq!(Timestamp::parse_http_date(&t.http_date()), Some(secs));
                    assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339()), Some(secs));
                }
                assert!(t.amz_date().starts_with(&t.amz_day()));
            }
        }
    }

    /// What RFC 3339 allows after the seconds: `.digits`, then `Z` or
    /// `±HH:MM` with two digits each.
    fn check_offset(text: &str) {
        let s = text.trim();
        let rest = s.get(19..).unwrap_or("");
        let rest = match rest.strip_prefix('.') {
            Some(f) => f.trim_start_matches(|c: char| c.is_ascii_digit()),
            None => rest,
        };
        let b = rest.as_bytes();
        let ok = rest.eq_ignore_ascii_case("z")
            || (b.len() == 6
                && matches!(b[0], b'+' | b'-')
                && b[1].is_ascii_digit()
                && b[2].is_ascii_digit()
                && b[3] == b':'
                && b[4].is_ascii_digit()
                && b[5].is_ascii_digit());
        assert!(ok, "parse_rfc3339 accepted the offset {rest:?} of {text:?}");
    }
}

/// `sigv4::sign` with the method, path and query on the first three
/// lines and `name: value` headers after; S3's and the standard
/// settings, with and without a session token.
pub mod sigv4 {
    use super::input;
    use fallback_config::secret::Secret;
    use fallback_config::sigv4::{self, Credentials, PayloadHash, SignableRequest, SigningParams};
    use fallback_config::time::Timestamp;

    pub fn run(data: &[u8]) {
        let text = input::text(data);
        let mut lines = text.splitn(4, '\n');
        let method = lines.next().unwrap_or("");
        let path = lines.next().unwrap_or("");
        let query = lines.next().unwrap_or("");
        let mut headers = vec![(
            "host".to_string(),
            "fuzz-bucket.s3.us-east-1.amazonaws.com".to_string(),
        )];
        for l in lines.next().unwrap_or("").lines().take(16) {
            match l.split_once(':') {
                Some((k, v)) => headers.push((k.to_string(), v.to_string())),
                None => headers.push((l.to_string(), String::new())),
            }
        }
        let plain = Credentials::new(
            "AKIDEXAMPLE",
            Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        );
        let session = plain
            .clone()
            .with_session_token(Secret::new("session-token-value"));
        let time = Timestamp::from_secs(1_440_938_160);
        for creds in [&plain, &session] {
            let params = [
                SigningParams::s3(creds, "us-east-1", time, PayloadHash::Unsigned),
                SigningParams::standard(
                    creds,
                    "us-east-1",
                    "service",
                    time,
                    PayloadHash::Body(b"body"),
                ),
            ];
            for (i, p) in params.iter().enumerate() {
                let req = SignableRequest {
                    method,
                    path,
                    query,
                    headers: &headers,
                };
                let out = match sigv4::sign(&req, p) {
                    Ok(out) => out,
                    Err(e) => {
                        let _ = e.to_string();
                        continue;
                    }
                };
                assert_eq!(out.signature.len(), 64);
                assert!(out.header("authorization").is_some());
                let canonical: Vec<&str> = out.canonical_request.splitn(4, '\n').collect();
                assert_eq!(canonical[0], method);
                if i == 0 {
                    // S3 signs the path as sent.
                    assert_eq!(canonical[1], if path.is_empty() { "/" } else { path });
                }
                // The canonical query is canonical: signing it again gives it back.
                let again = sigv4::sign(
                    &SignableRequest {
                        query: canonical[2],
                        ..req
                    },
                    p,
                )
                .expect("the canonical query signs");
                let again: Vec<&str> = again.canonical_request.splitn(4, '\n').collect();
                assert_eq!(again[2], canonical[2]);
                assert_eq!(again[1], canonical[1]);
            }
        }
    }
}

/// Version folder names: `Version::parse` and `version::older_than`
/// (own version on the first line, folder names after).
pub mod version {
    use super::input;
    use fallback_config::version::{self, Version};
    use std::cmp::Ordering;

    pub fn run(data: &[u8]) {
        let text = input::text(data);
        let mut lines = text.split('\n');
        let own = lines.next().unwrap_or("");
        let names: Vec<String> = lines.take(64).map(str::to_string).collect();
        let parsed: Vec<Version> = names.iter().filter_map(|n| Version::parse(n)).collect();
        for v in &parsed {
            assert_eq!(Version::parse(&v.text).as_ref(), Some(v));
            assert_eq!(v.cmp(v), Ordering::Equal);
        }
        let few = &parsed[..parsed.len().min(12)];
        for a in few {
            for b in few {
                assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{} {}", a.text, b.text);
                for c in few.iter().take(6) {
                    if a <= b && b <= c {
                        assert!(a <= c, "{} {} {}", a.text, b.text, c.text);
                    }
                }
            }
        }
        let older = version::older_than(own, &names);
        let Some(own_v) = Version::parse(own) else {
            assert!(older.is_empty());
            return;
        };
        let older_v: Vec<Version> = older
            .iter()
            .map(|n| Version::parse(n).expect("older_than returns versions"))
            .collect();
        for v in &older_v {
            assert!(*v < own_v, "{} is not older than {own}", v.text);
        }
        {
            let mut unique = older.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                older.len(),
                "a folder is returned twice: {older:?}"
            );
        }
        for w in older_v.windows(2) {
            assert!(
                w[0] >= w[1],
                "not newest first: {} {}",
                w[0].text,
                w[1].text
            );
        }
        for v in &parsed {
            if *v < own_v {
                assert!(older.contains(&v.text), "{} is missing", v.text);
            }
        }
    }
}

/// `http::percent_decode`, `HttpResponse::transport_error` and the
/// helpers that print an answer in log lines.
pub mod http {
    use super::input;
    use fallback_config::http;

    pub fn run(data: &[u8]) {
        let text = input::text(data);
        for plus in [false, true] {
            let decoded = http::percent_decode(&text, plus);
            assert!(decoded.len() <= text.len());
            if !(text.contains('%') || (plus && text.contains('+'))) {
                assert_eq!(decoded, text);
            }
        }
        let masked = http::masked_query(&text);
        assert!(!text.contains('?') || masked.ends_with("?***"));
        let response = input::response(data);
        for limit in [0, 16, 2048, u64::MAX] {
            match response.transport_error(limit) {
                Some(e) => {
                    let _ = e.to_string();
                }
                None => assert!(response.body.len() as u64 <= limit),
            }
        }
        for max in [0, 1, 80, 200] {
            let excerpt = response.body_excerpt(max);
            assert!(!excerpt.contains(['\n', '\r', '\t']));
        }
        let _ = response.describe_body();
        let _ = response.header("content-length");
    }
}

/// The filter's JSON reader against serde_json, which it replaced: any
/// bytes. Both accept the same documents, into the same trees (serde_json
/// with `float_roundtrip`, so that its floats are correctly rounded, as
/// Rust's `str::parse` rounds ours); skipping a value and taking its raw
/// bytes accept exactly what parses; what parses is written back to text
/// that parses to the same tree; the typed reads of a scalar agree with
/// the tree.
pub mod json {
    use fallback_config::json::{self, Number, Reader, Value};

    pub fn run(data: &[u8]) {
        let ours = json::parse(data);
        let theirs = serde_json::from_slice::<serde_json::Value>(data);
        match (&ours, &theirs) {
            (Ok(o), Ok(t)) => assert_eq!(&to_serde(o), t),
            (Err(e), Err(_)) => {
                let _ = e.to_string();
            }
            _ => panic!("ours: {ours:?}, serde_json: {theirs:?}"),
        }
        let mut r = Reader::new(data);
        let skipped = r.skip().and_then(|()| r.end());
        assert_eq!(skipped.is_ok(), ours.is_ok());
        let mut r = Reader::new(data);
        let raw = r.raw_value().and_then(|raw| r.end().map(|()| raw));
        assert_eq!(raw.is_ok(), ours.is_ok());
        let (Ok(raw), Ok(value)) = (raw, ours) else {
            return;
        };
        assert_eq!(raw, data.trim_ascii());
        let text = value.to_string();
        assert_eq!(json::parse(text.as_bytes()).as_ref(), Ok(&value), "{text}");
        match &value {
            Value::Number(Number::U64(n)) => assert_eq!(Reader::new(data).u64(), Ok(*n)),
            Value::Number(Number::I64(n)) => assert_eq!(Reader::new(data).i64(), Ok(*n)),
            Value::Number(Number::Float(_)) => assert!(Reader::new(data).u64().is_err()),
            Value::String(s) => assert_eq!(Reader::new(data).string().as_deref(), Ok(s.as_str())),
            Value::Bool(b) => assert_eq!(Reader::new(data).bool(), Ok(*b)),
            Value::Null => assert_eq!(Reader::new(data).null(), Ok(true)),
            Value::Array(_) | Value::Object(_) => {}
        }
    }

    /// Ours as serde_json's tree, a float through Rust's own parser.
    fn to_serde(v: &Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Number(Number::U64(n)) => (*n).into(),
            Value::Number(Number::I64(n)) => (*n).into(),
            Value::Number(Number::Float(text)) => {
                let f: f64 = text.parse().expect("a float the reader accepted");
                serde_json::Number::from_f64(f)
                    .expect("a finite float")
                    .into()
            }
            Value::String(s) => s.as_str().into(),
            Value::Array(items) => items.iter().map(to_serde).collect(),
            Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| (k.to_string(), to_serde(v)))
                    .collect(),
            ),
        }
    }
}
