//! The request path: a per-worker cache of the parsed config and the
//! routing verdict for one request.
//!
//! A request does no shared-data read (only a request for the status path
//! reads the driver's status): on every tick of its root
//! ([`WorkerCache::begin_tick`]) the shell reads what
//! [`WorkerCache::poll_read`] asks for, the small generation counter, and
//! the full record only when the counter changed since the last look. So
//! a new record is copied and loaded outside any request, and every
//! worker serves it within one tick ([`crate::process::TICK`]) of its
//! publication.
//!
//! A request reads only the headers the config routes by
//! ([`WorkerCache::decide`] asks for `:method` and `:authority` only when
//! some route names methods or hosts).
//!
//! What a worker loads is the record's compiled [`RouteTable`]: one copy
//! out of shared data and a range check, no JSON parse and no index
//! build (the driver did those once), so a change of a large config costs
//! a worker about a millisecond, not tens.
//!
//! Generations are unique in the process ([`crate::process`]), so a
//! generation names one record: each is copied and loaded once per worker,
//! and one that fails to load is remembered, warned about once, and never
//! copied again.
//!
//! A `role: worker` root never drives: it serves what a driver elsewhere
//! in the process publishes. Configured without one (no bootstrap
//! service, or one with another `vm_id`), it would answer 503 forever
//! without a word, so when nothing was published [`NO_DRIVER_AFTER`]
//! after it started it reads the driver record once, and warns
//! ([`Event::NoDriver`]) if there is none.

use crate::event::Event;
use crate::gateway::RequestInfo;
use crate::process::WORKER_TICK;
use crate::published::{self, LoadError, CONFIG_KEY, DRIVER_KEY, GENERATION_KEY, STATUS_KEY};
use crate::route_table::RouteTable;
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

/// How long a `role: worker` root waits for a first publication before
/// it looks for a driver: far longer than a bootstrap service takes to
/// start, far shorter than an operator would wait to learn why nothing
/// is served.
pub const NO_DRIVER_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether this cache still looks for a sign of a driver (see the module
/// documentation). Counted in ticks of [`WORKER_TICK`], the tick of a
/// root that never drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DriverWatch {
    /// Not a `role: worker` root, or a driver was seen.
    Off,
    /// Ticks so far without a published generation.
    Waiting(u32),
    /// Warned: no driver record after [`NO_DRIVER_AFTER`].
    Warned,
}

/// [`NO_DRIVER_AFTER`] in ticks.
fn no_driver_ticks() -> u32 {
    let tick = WORKER_TICK.as_millis().max(1);
    u32::try_from(NO_DRIVER_AFTER.as_millis() / tick).unwrap_or(u32::MAX)
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
    /// Nothing was published for [`NO_DRIVER_AFTER`]: read the driver
    /// record, to tell "no driver" from "a driver with nothing yet".
    Driver,
}

/// One worker's view of the published config.
#[derive(Debug)]
pub struct WorkerCache {
    /// This root routes requests ([`WorkerCache::idle`]: it does not).
    serves: bool,
    config: Option<RouteTable>,
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
    driver_watch: DriverWatch,
}

impl Default for WorkerCache {
    fn default() -> Self {
        WorkerCache {
            serves: true,
            config: None,
            loaded: None,
            seen: None,
            failed: None,
            look: Look::Idle,
            event: None,
            status_path: None,
            for_status: false,
            status: None,
            driver_watch: DriverWatch::Off,
        }
    }
}

impl WorkerCache {
    /// A worker answering `status_path` itself (`None`: off).
    pub fn with_status_path(status_path: Option<String>) -> Self {
        WorkerCache {
            status_path,
            ..WorkerCache::default()
        }
    }

    /// For a `role: worker` root: warn when no driver shows up (see the
    /// module documentation).
    pub fn watching_for_driver(self) -> Self {
        WorkerCache {
            driver_watch: DriverWatch::Waiting(0),
            ..self
        }
    }

    /// A cache that never looks at shared data, for a root that serves no
    /// requests (its ticks would copy and parse every config for nothing).
    pub fn idle() -> Self {
        WorkerCache {
            serves: false,
            ..WorkerCache::default()
        }
    }

    /// A request for `path` starts: nothing to read, except the driver's
    /// status for the status path.
    pub fn begin(&mut self, path: &str) {
        let path = path.split(['?', '#']).next().unwrap_or("");
        self.for_status = self.status_path.as_deref() == Some(path);
        self.status = None;
        self.look = match self.for_status {
            true => Look::Status,
            false => Look::Idle,
        };
    }

    /// The root ticked: look for a new generation, outside any request.
    pub fn begin_tick(&mut self) {
        self.for_status = false;
        self.status = None;
        self.look = match self.serves {
            true => Look::Counter,
            false => Look::Idle,
        };
    }

    /// The shared-data key to read next, if any.
    pub fn poll_read(&self) -> Option<&'static str> {
        match self.look {
            Look::Idle => None,
            Look::Counter => Some(GENERATION_KEY),
            Look::Record(_) => Some(CONFIG_KEY),
            Look::Status => Some(STATUS_KEY),
            Look::Driver => Some(DRIVER_KEY),
        }
    }

    /// The value of the key [`Self::poll_read`] asked for. Taken by value:
    /// a record's bytes become the loaded table as they are.
    pub fn handle_read(&mut self, bytes: Option<Vec<u8>>) {
        let after_config = match self.for_status {
            true => Look::Status,
            false => Look::Idle,
        };
        match self.look {
            Look::Idle => {}
            Look::Counter => {
                let counter = bytes.as_deref().and_then(published::decode_generation);
                self.look = match counter {
                    Some(g) if Some(g) != self.seen => Look::Record(g),
                    _ => after_config,
                };
                self.driver_watch = match (self.driver_watch, counter) {
                    (DriverWatch::Waiting(_), Some(_)) => DriverWatch::Off,
                    (DriverWatch::Waiting(ticks), None) => {
                        let ticks = ticks.saturating_add(1);
                        if ticks >= no_driver_ticks() && self.look == Look::Idle {
                            self.look = Look::Driver;
                        }
                        DriverWatch::Waiting(ticks)
                    }
                    (watch, _) => watch,
                };
            }
            Look::Driver => {
                self.look = Look::Idle;
                self.driver_watch = match bytes {
                    Some(_) => DriverWatch::Off,
                    None => {
                        self.event = Some(Event::NoDriver {
                            waited: NO_DRIVER_AFTER,
                        });
                        DriverWatch::Warned
                    }
                };
            }
            Look::Record(counter) => {
                self.look = after_config;
                self.seen = Some(counter);
                self.load(counter, bytes);
            }
            Look::Status => {
                self.look = Look::Idle;
                self.status = bytes;
            }
        }
    }

    /// The warning about a record that did not load, once per generation.
    pub fn take_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    fn load(&mut self, counter: u64, record: Option<Vec<u8>>) {
        let Some(record) = record else {
            return self.fail(counter, LoadError::Missing);
        };
        let generation = published::record_generation(&record).unwrap_or(counter);
        if Some(generation) == self.loaded || Some(generation) == self.failed {
            return;
        }
        // The table is the record's tail: route from inside the record,
        // without copying it out.
        let parsed = published::decode(&record)
            .map(|r| record.len() - r.routes.len())
            .map_err(LoadError::Record)
            .and_then(|start| RouteTable::load(record, start).map_err(LoadError::Routes));
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

    /// The verdict for the request for `path` begun last. `header` is
    /// asked only for the headers the config routes by, `wall` only for
    /// the status path (the config's age).
    pub fn decide(
        &self,
        path: &str,
        header: &dyn Fn(RequestHeader) -> String,
        wall: &dyn Fn() -> Timestamp,
    ) -> Verdict<'_> {
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
            Some(config) => {
                let reads = config.reads();
                let read = |wanted: bool, h| if wanted { header(h) } else { String::new() };
                let method = read(reads.method, RequestHeader::Method);
                let host = read(reads.host, RequestHeader::Authority);
                let req = RequestInfo {
                    method: &method,
                    host: &host,
                    path,
                };
                Self::verdict(config, req)
            }
        }
    }

    fn verdict<'a>(config: &'a RouteTable, req: RequestInfo<'_>) -> Verdict<'a> {
        match config.route_upstream(req) {
            Some(upstream) => Verdict::Forward { upstream },
            None => Verdict::reply(404, NO_ROUTE_BODY),
        }
    }
}

/// A request header [`WorkerCache::decide`] may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestHeader {
    Method,
    Authority,
}

impl RequestHeader {
    /// Its pseudo-header name.
    pub fn name(self) -> &'static str {
        match self {
            RequestHeader::Method => ":method",
            RequestHeader::Authority => ":authority",
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
        // A config that does not parse stands for a table that does not
        // load (the driver never publishes one).
        let routes = crate::gateway::GatewayConfig::parse(config.as_bytes()).map_or_else(
            |_| config.as_bytes().to_vec(),
            |c| c.table().encoded().to_vec(),
        );
        encode(&meta, config.as_bytes(), &routes)
    }

    fn wall() -> Timestamp {
        Timestamp::from_secs(1_800_000_000)
    }

    const PATH: &str = "/echo/1";

    /// The verdict for [`PATH`], counting the headers asked for.
    fn decide<'a>(c: &'a WorkerCache, path: &str, asked: &std::cell::Cell<u32>) -> Verdict<'a> {
        let header = |h: RequestHeader| {
            asked.set(asked.get() + 1);
            match h {
                RequestHeader::Method => "GET".to_string(),
                RequestHeader::Authority => "h".to_string(),
            }
        };
        c.decide(path, &header, &wall)
    }

    fn verdict<'a>(c: &'a WorkerCache) -> Verdict<'a> {
        decide(c, PATH, &std::cell::Cell::new(0))
    }
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
                c.handle_read(self.map.get(key).cloned());
            }
            c.take_event()
        }
    }

    /// The ticks of a `role: worker` root until it has waited
    /// [`NO_DRIVER_AFTER`], with the events they gave.
    fn wait_for_a_driver(s: &mut Shared, c: &mut WorkerCache) -> Vec<Event> {
        (0..no_driver_ticks()).filter_map(|_| s.tick(c)).collect()
    }

    #[test]
    fn a_worker_without_a_driver_says_so_once() {
        assert_eq!(
            u64::from(no_driver_ticks()) * 50,
            10_000,
            "10 s of 50 ms ticks"
        );
        let (mut s, mut c) = (
            Shared::default(),
            WorkerCache::default().watching_for_driver(),
        );
        // One tick short: no look at the driver record yet.
        for _ in 1..no_driver_ticks() {
            assert_eq!(s.tick(&mut c), None);
        }
        assert_eq!(s.reads.get(DRIVER_KEY), None);
        let warned = s.tick(&mut c);
        assert_eq!(s.reads[DRIVER_KEY], 1);
        let Some(event @ Event::NoDriver { .. }) = warned else {
            panic!("no warning: {warned:?}");
        };
        let text = event.to_string();
        assert!(
            text.contains(r#"{"role": "driver"}"#) && text.contains("vm_id"),
            "{text}"
        );
        assert_eq!(event.level(), crate::event::Level::Warn);
        // Once: later ticks neither read the record nor warn again.
        assert!(wait_for_a_driver(&mut s, &mut c).is_empty());
        assert_eq!(s.reads[DRIVER_KEY], 1);
        // A driver that turns up late is served as usual.
        s.publish(1, CFG);
        assert_eq!(s.tick(&mut c), None);
        assert!(matches!(
            verdict(&c),
            Verdict::Forward {
                upstream: "echo_service"
            }
        ));
    }

    #[test]
    fn a_driver_with_nothing_published_yet_is_no_warning() {
        let (mut s, mut c) = (
            Shared::default(),
            WorkerCache::default().watching_for_driver(),
        );
        // The CP is down and the import keeps failing: a record, no config.
        s.map.insert(DRIVER_KEY, b"{}".to_vec());
        assert!(wait_for_a_driver(&mut s, &mut c).is_empty());
        assert!(wait_for_a_driver(&mut s, &mut c).is_empty());
        assert_eq!(s.reads[DRIVER_KEY], 1, "looked once, then stopped");
    }

    #[test]
    fn a_published_config_ends_the_watch_and_other_roles_never_watch() {
        let (mut s, mut c) = (
            Shared::default(),
            WorkerCache::default().watching_for_driver(),
        );
        s.publish(1, CFG);
        assert!(wait_for_a_driver(&mut s, &mut c).is_empty());
        s.map.clear();
        assert!(wait_for_a_driver(&mut s, &mut c).is_empty());
        let (mut s, mut c) = (Shared::default(), WorkerCache::default());
        assert!(wait_for_a_driver(&mut s, &mut c).is_empty());
        assert!(wait_for_a_driver(&mut s, &mut c).is_empty());
        assert_eq!(s.reads.get(DRIVER_KEY), None);
    }

    #[test]
    fn no_config_then_routes() {
        let mut s = Shared::default();
        let mut c = WorkerCache::default();
        assert_eq!(s.request(&mut c), None);
        assert_eq!(verdict(&c), Verdict::reply(503, NO_CONFIG_BODY));
        s.publish(1, CFG);
        assert_eq!(s.request(&mut c), None);
        assert_eq!(
            verdict(&c),
            Verdict::reply(503, NO_CONFIG_BODY),
            "a request does not look: the next tick does"
        );
        assert_eq!(s.tick(&mut c), None);
        assert_eq!(
            verdict(&c),
            Verdict::Forward {
                upstream: "echo_service"
            }
        );
        for _ in 0..10 {
            s.request(&mut c);
            s.tick(&mut c);
        }
        assert_eq!(s.reads[CONFIG_KEY], 1, "the record is copied once");
        assert_eq!(s.reads[GENERATION_KEY], 11, "the counter, once per tick");
        let asked = std::cell::Cell::new(0);
        assert_eq!(
            decide(&c, "/nope", &asked),
            Verdict::reply(404, NO_ROUTE_BODY)
        );
        assert_eq!(asked.get(), 0, "no route names a host or a method");
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
        s.tick(&mut c);
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
            verdict(&c),
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
        s.tick(&mut c);
        let v2 = r#"{"revision":"r2","routes":[{"name":"e","paths":["/echo"],"upstream":"v2"}]}"#;
        s.publish(2, v2);
        s.tick(&mut c);
        assert_eq!(verdict(&c), Verdict::Forward { upstream: "v2" });
    }

    /// A new generation is copied and parsed at the root's tick, outside
    /// any request; requests read no shared data at all.
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
        assert_eq!(verdict(&c), Verdict::Forward { upstream: "v2" });
        let records = s.reads[CONFIG_KEY];
        for _ in 0..20 {
            s.request(&mut c);
        }
        assert_eq!(s.reads[CONFIG_KEY], records, "requests copy no record");
        assert_eq!(s.reads[GENERATION_KEY], 2, "requests read no counter");
    }

    #[test]
    fn a_missing_record_is_reported_once() {
        let mut s = Shared::default();
        let mut c = WorkerCache::default();
        s.map.insert(GENERATION_KEY, encode_generation(4));
        let e = s.tick(&mut c);
        assert!(matches!(
            e,
            Some(Event::RecordUnusable {
                generation: 4,
                error: LoadError::Missing
            })
        ));
        assert_eq!(s.tick(&mut c), None);
    }

    /// `:method` and `:authority` are read only when some route names
    /// methods or hosts.
    #[test]
    fn headers_are_read_only_when_routes_need_them() {
        let cases = [
            (CFG, 0),
            (
                r#"{"revision":"r","routes":[{"name":"e","paths":["/echo"],"methods":["GET"],"upstream":"m"}]}"#,
                1,
            ),
            (
                r#"{"revision":"r","routes":[{"name":"e","paths":["/echo"],"hosts":["h"],"upstream":"m"}]}"#,
                1,
            ),
            (
                r#"{"revision":"r","routes":[{"name":"e","paths":["/echo"],"hosts":["h"],"methods":["GET"],"upstream":"m"}]}"#,
                2,
            ),
        ];
        for (generation, (config, reads)) in (1..).zip(cases) {
            let mut s = Shared::default();
            let mut c = WorkerCache::default();
            s.publish(generation, config);
            s.tick(&mut c);
            s.request(&mut c);
            let asked = std::cell::Cell::new(0);
            assert!(matches!(decide(&c, PATH, &asked), Verdict::Forward { .. }));
            assert_eq!(asked.get(), reads, "{config}");
        }
    }

    /// A request for the status path reads the driver's status, and
    /// only that.
    #[test]
    fn the_status_path_reads_the_status_only() {
        let mut s = Shared::default();
        let mut c = WorkerCache::with_status_path(Some("/_status".into()));
        s.publish(1, CFG);
        s.tick(&mut c);
        c.begin("/_status?x=1");
        s.reads_for(&mut c);
        assert_eq!(s.reads.get(STATUS_KEY), Some(&1));
        assert_eq!(s.reads[GENERATION_KEY], 1, "the tick's read only");
        assert!(matches!(verdict(&c), Verdict::Reply { .. }));
    }
}
