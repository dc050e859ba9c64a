//! The request path: a per-worker cache of the parsed config and the
//! routing verdict for one request.
//!
//! On every tick of its root, and per request, the shell reads what
//! [`WorkerCache::poll_read`] asks for ([`WorkerCache::begin_tick`],
//! [`WorkerCache::begin`]): the small generation counter, and the full
//! record only when the counter changed since the last look. The tick
//! usually sees a new generation first, so the record is copied and parsed
//! outside any request; a request still reads the counter, so that every
//! worker serves a new revision from the first request after it is
//! published (a request seeing a revision, and the next one on another
//! worker the older one, would be a change clients feel).
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

    /// A request for `path` starts: the next [`Self::poll_read`] asks for
    /// the counter (and, for the status path, then for the status).
    pub fn begin(&mut self, path: &str) {
        let path = path.split(['?', '#']).next().unwrap_or("");
        self.for_status = self.status_path.as_deref() == Some(path);
        self.status = None;
        self.look = Look::Counter;
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

    /// A new generation is copied and parsed at the root's tick, outside
    /// any request; a request after that reads the counter only.
    #[test]
    fn the_tick_loads_a_new_generation_outside_requests() {
        let mut s = Shared::default();
        let mut c = WorkerCache::default();
        s.publish(1, CFG);
        s.tick(&mut c);
        assert_eq!(c.generation(), Some(1));
        let v2 = r#"{"revision":"r2","routes":[{"name":"e","paths":["/echo"],"upstream":"v2"}]}"#;
        s.publish(2, v2);
        s.tick(&mut c);
        assert_eq!(c.decide(REQ, &wall), Verdict::Forward { upstream: "v2" });
        let records = s.reads[CONFIG_KEY];
        for _ in 0..20 {
            s.request(&mut c);
        }
        assert_eq!(s.reads[CONFIG_KEY], records, "requests copy no record");
        assert_eq!(s.reads[GENERATION_KEY], 2 + 20, "the counter, per look");
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
