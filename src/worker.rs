//! The request path: a per-worker cache of the parsed config and the
//! routing verdict for one request.
//!
//! On every tick of its root the shell reads what
//! [`WorkerCache::poll_read`] asks for ([`WorkerCache::begin_tick`]): the
//! small generation counter, and the full record only when the counter
//! changed since the last look. So a new config is copied and parsed
//! outside any request, and a request does no shared-data read at all
//! once a config is loaded; a new generation reaches a worker within one
//! tick. Before the first config, requests still look ([`WorkerCache::begin`]):
//! they would be answered 503 anyway, and a worker must not wait for its
//! tick to serve the first config.
//!
//! Generations are unique in the process ([`crate::process`]), so a
//! generation names one record: each is copied and parsed once per worker,
//! and one that fails to load is remembered, warned about once, and never
//! copied again.

use crate::event::Event;
use crate::gateway::{GatewayConfig, RequestInfo};
use crate::published::{self, LoadError, CONFIG_KEY, GENERATION_KEY, STATUS_KEY};
use crate::status;
use crate::time::Timestamp;
use std::borrow::Cow;

/// Body of the 503 sent while no config is available.
pub const NO_CONFIG_BODY: &str = r#"{"message": "no configuration available"}"#;
/// Body of the 404 sent when no route matches.
pub const NO_ROUTE_BODY: &str = r#"{"message": "no Route matched with those values"}"#;

/// Body of the 500 sent when the chosen upstream cannot be set on the
/// request (the request must not continue with a client-chosen upstream).
pub const INTERNAL_ERROR_BODY: &str = r#"{"message": "An unexpected error occurred"}"#;

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Set the upstream header to this cluster and continue.
    Forward { upstream: &'a str },
    /// Answer locally.
    Reply {
        status: u32,
        body: Cow<'static, str>,
    },
}

impl Verdict<'_> {
    fn reply(status: u32, body: &'static str) -> Self {
        Verdict::Reply {
            status,
            body: Cow::Borrowed(body),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Look {
    /// Nothing to read.
    #[default]
    Idle,
    /// Read the counter.
    Counter,
    /// The counter says this: read the record.
    Record(u64),
    /// A request for the status path: read the driver's status.
    Status,
}

/// One worker's view of the published config.
#[derive(Debug, Default)]
pub struct WorkerCache {
    config: Option<GatewayConfig>,
    /// The generation of `config`.
    loaded: Option<u64>,
    /// The counter value the record was last read for.
    seen: Option<u64>,
    /// A generation whose record did not load.
    failed: Option<u64>,
    look: Look,
    event: Option<Event>,
    /// `status_path`, if on.
    status_path: Option<String>,
    /// This request is for the status path.
    for_status: bool,
    /// The driver's status, read for this request.
    status: Option<Vec<u8>>,
}

impl WorkerCache {
    /// A worker answering `status_path` itself (`None`: off).
    pub fn with_status_path(status_path: Option<String>) -> Self {
        WorkerCache {
            status_path,
            ..WorkerCache::default()
        }
    }

    /// A request for `path` starts. With a config loaded there is nothing
    /// to read (the tick keeps it fresh), except the status for the status
    /// path; without one, the counter (and the record if it moved).
    pub fn begin(&mut self, path: &str) {
        let path = path.split(['?', '#']).next().unwrap_or("");
        self.for_status = self.status_path.as_deref() == Some(path);
        self.status = None;
        self.look = match (self.config.is_some(), self.for_status) {
            (true, false) => Look::Idle,
            (true, true) => Look::Status,
            (false, _) => Look::Counter,
        };
    }

    /// The root ticked: look for a new generation, outside any request.
    pub fn begin_tick(&mut self) {
        self.for_status = false;
        self.status = None;
        self.look = Look::Counter;
    }

    /// The shared-data key to read next, if any.
    pub fn poll_read(&self) -> Option<&'static str> {
        match self.look {
            Look::Idle => None,
            Look::Counter => Some(GENERATION_KEY),
            Look::Record(_) => Some(CONFIG_KEY),
            Look::Status => Some(STATUS_KEY),
        }
    }

    /// The value of the key [`Self::poll_read`] asked for.
    pub fn handle_read(&mut self, bytes: Option<&[u8]>) {
        let after_config = match self.for_status {
            true => Look::Status,
            false => Look::Idle,
        };
        match self.look {
            Look::Idle => {}
            Look::Counter => {
                let counter = bytes.and_then(published::decode_generation);
                self.look = match counter {
                    Some(g) if Some(g) != self.seen => Look::Record(g),
                    _ => after_config,
                };
            }
            Look::Record(counter) => {
                self.look = after_config;
                self.seen = Some(counter);
                self.load(counter, bytes);
            }
            Look::Status => {
                self.look = Look::Idle;
                self.status = bytes.map(<[u8]>::to_vec);
            }
        }
    }

    /// The warning about a record that did not load, once per generation.
    pub fn take_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    fn load(&mut self, counter: u64, record: Option<&[u8]>) {
        let Some(record) = record else {
            return self.fail(counter, LoadError::Missing);
        };
        let generation = published::record_generation(record).unwrap_or(counter);
        if Some(generation) == self.loaded || Some(generation) == self.failed {
            return;
        }
        let parsed = published::decode(record)
            .map_err(LoadError::Record)
            .and_then(|(_, bytes)| GatewayConfig::parse(bytes).map_err(LoadError::Config));
        match parsed {
            Ok(config) => {
                self.config = Some(config);
                self.loaded = Some(generation);
            }
            // The previous config stays (it was valid): a bad record never
            // takes routing down.
            Err(error) => self.fail(generation, error),
        }
    }

    fn fail(&mut self, generation: u64, error: LoadError) {
        if self.failed != Some(generation) {
            self.failed = Some(generation);
            self.event = Some(Event::RecordUnusable { generation, error });
        }
    }

    /// The generation this worker serves, if any.
    pub fn generation(&self) -> Option<u64> {
        self.loaded
    }

    /// The verdict for the request begun last. `wall` is asked only for
    /// the status path (the config's age).
    pub fn decide(&self, req: RequestInfo<'_>, wall: &dyn Fn() -> Timestamp) -> Verdict<'_> {
        if self.for_status {
            let (status, body) =
                status::answer(self.status.as_deref(), self.config.is_some(), wall());
            return Verdict::Reply {
                status,
                body: Cow::Owned(body),
            };
        }
        match &self.config {
            None => Verdict::reply(503, NO_CONFIG_BODY),
            Some(config) => match config.route(req) {
                Some(route) => Verdict::Forward {
                    upstream: &route.upstream,
                },
                None => Verdict::reply(404, NO_ROUTE_BODY),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::published::{encode, encode_generation, Meta, Source};
    use std::collections::HashMap;

    fn record(generation: u64, config: &str) -> Vec<u8> {
        let meta = Meta {
            generation,
            source: Source::ControlPlane,
            revision: "r".into(),
            sha256: "x".into(),
        };
        encode(&meta, config.as_bytes())
    }

    fn wall() -> Timestamp {
        Timestamp::from_secs(1_800_000_000)
    }

    const REQ: RequestInfo<'static> = RequestInfo {
        method: "GET",
        host: "h",
        path: "/echo/1",
    };
    const CFG: &str =
        r#"{"revision":"r","routes":[{"name":"e","paths":["/echo"],"upstream":"echo_service"}]}"#;

    /// Shared data as a map, counting the reads of each key.
    #[derive(Default)]
    struct Shared {
        map: HashMap<&'static str, Vec<u8>>,
        reads: HashMap<&'static str, u32>,
    }

    impl Shared {
        fn publish(&mut self, generation: u64, config: &str) {
            self.map.insert(CONFIG_KEY, record(generation, config));
            self.map
                .insert(GENERATION_KEY, encode_generation(generation));
        }

        /// One request through the cache, as the shell runs it.
        fn request(&mut self, c: &mut WorkerCache) -> Option<Event> {
            c.begin("/echo/1");
            self.reads_for(c)
        }

        /// One tick of the worker's root, as the shell runs it.
        fn tick(&mut self, c: &mut WorkerCache) -> Option<Event> {
            c.begin_tick();
            self.reads_for(c)
        }

        fn reads_for(&mut self, c: &mut WorkerCache) -> Option<Event> {
            while let Some(key) = c.poll_read() {
                *self.reads.entry(key).or_default() += 1;
                c.handle_read(self.map.get(key).map(Vec::as_slice));
            }
            c.take_event()
        }

        fn total_reads(&self) -> u32 {
            self.reads.values().sum()
        }
    }

    #[test]
    fn no_config_then_routes() {
        let mut s = Shared::default();
        let mut c = WorkerCache::default();
        assert_eq!(s.request(&mut c), None);
        assert_eq!(c.decide(REQ, &wall), Verdict::reply(503, NO_CONFIG_BODY));
        s.publish(1, CFG);
        assert_eq!(s.request(&mut c), None);
        assert_eq!(
            c.decide(REQ, &wall),
            Verdict::Forward {
                upstream: "echo_service"
            }
        );
        for _ in 0..10 {
            s.request(&mut c);
        }
        assert_eq!(s.reads[CONFIG_KEY], 1, "the record is copied once");
        let other = RequestInfo {
            path: "/nope",
            ..REQ
        };
        assert_eq!(c.decide(other, &wall), Verdict::reply(404, NO_ROUTE_BODY));
        let v: serde_json::Value = serde_json::from_str(NO_ROUTE_BODY).unwrap();
        assert_eq!(v["message"], "no Route matched with those values");
    }

    /// A record that fails to load is warned about once and never copied
    /// again while the counter stays; the previous config keeps serving.
    #[test]
    fn bad_record_is_remembered_and_keeps_the_previous_config() {
        let mut s = Shared::default();
        let mut c = WorkerCache::default();
        s.publish(1, CFG);
        s.request(&mut c);
        s.publish(2, "{");
        let warned = s.tick(&mut c);
        assert!(
            matches!(warned, Some(Event::RecordUnusable { generation: 2, .. })),
            "{warned:?}"
        );
        for _ in 0..100 {
            assert_eq!(s.tick(&mut c), None, "one warning per generation");
            assert_eq!(s.request(&mut c), None);
        }
        assert_eq!(s.reads[CONFIG_KEY], 2, "no per-request copy");
        assert_eq!(
            c.decide(REQ, &wall),
            Verdict::Forward {
                upstream: "echo_service"
            }
        );
        assert_eq!(c.generation(), Some(1));
        // The next generation loads, at the next tick.
        s.publish(3, CFG);
        assert_eq!(s.tick(&mut c), None);
        assert_eq!(c.generation(), Some(3));
    }

    /// Two different records never share a key: a new generation is
    /// loaded even when an old one had the same number in another
    /// process layout (the cache keys on the generation the record itself
    /// names, which the process never reuses).
    #[test]
    fn a_new_generation_replaces_the_config() {
        let mut s = Shared::default();
        let mut c = WorkerCache::default();
        s.publish(1, CFG);
        s.request(&mut c);
        let v2 = r#"{"revision":"r2","routes":[{"name":"e","paths":["/echo"],"upstream":"v2"}]}"#;
        s.publish(2, v2);
        s.tick(&mut c);
        assert_eq!(c.decide(REQ, &wall), Verdict::Forward { upstream: "v2" });
    }

    /// Once a config is loaded a request reads no shared data at all: a
    /// new generation is copied and parsed at the root's tick, outside any
    /// request. Before the first config, requests do look (they would be
    /// answered 503 anyway), so the first config serves at once.
    #[test]
    fn requests_read_nothing_once_a_config_is_loaded() {
        let mut s = Shared::default();
        let mut c = WorkerCache::with_status_path(Some("/status".into()));
        s.publish(1, CFG);
        s.request(&mut c);
        assert_eq!(c.generation(), Some(1), "the first config, from a request");
        let before = s.total_reads();
        let v2 = r#"{"revision":"r2","routes":[{"name":"e","paths":["/echo"],"upstream":"v2"}]}"#;
        s.publish(2, v2);
        for _ in 0..50 {
            s.request(&mut c);
        }
        assert_eq!(s.total_reads(), before, "no shared-data read per request");
        assert_eq!(c.generation(), Some(1), "until the tick");
        s.tick(&mut c);
        assert_eq!(c.generation(), Some(2));
        assert_eq!(c.decide(REQ, &wall), Verdict::Forward { upstream: "v2" });
        // The status path still reads the driver's status, and only that.
        s.map.insert(STATUS_KEY, b"{}".to_vec());
        let before = s.reads.get(STATUS_KEY).copied().unwrap_or(0);
        c.begin("/status");
        assert_eq!(c.poll_read(), Some(STATUS_KEY));
        s.reads_for(&mut c);
        assert_eq!(s.reads[STATUS_KEY], before + 1);
    }

    #[test]
    fn a_missing_record_is_reported_once() {
        let mut s = Shared::default();
        let mut c = WorkerCache::default();
        s.map.insert(GENERATION_KEY, encode_generation(4));
        let e = s.request(&mut c);
        assert!(matches!(
            e,
            Some(Event::RecordUnusable {
                generation: 4,
                error: LoadError::Missing
            })
        ));
        assert_eq!(s.request(&mut c), None);
    }
}
