//! The root context: configuration, ticks and outbound-call answers.

use super::filter::Filter;
use super::host;
use crate::controller::{Action, Controller, Inherited, Level, Token};
use crate::driver::{self, Decision, Lease, LEASE_TTL, TICK};
use crate::published::{self, CONFIG_KEY, DRIVER_KEY, GENERATION_KEY, IMPORT_ATTEMPTED_KEY};
use crate::settings::Settings;
use crate::worker::WorkerCache;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::rc::Rc;

pub struct Root {
    context_id: u32,
    /// Unique per root context: the driver lease's owner.
    owner: String,
    controller: Option<Controller>,
    driving: bool,
    /// Host call token → controller token.
    calls: HashMap<u32, Token>,
    cache: Rc<RefCell<WorkerCache>>,
    upstream_header: Rc<str>,
    metrics: Option<host::Metrics>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            owner: String::new(),
            controller: None,
            driving: false,
            calls: HashMap::new(),
            cache: Rc::new(RefCell::new(WorkerCache::default())),
            upstream_header: Rc::from(crate::settings::DEFAULT_UPSTREAM_HEADER),
            metrics: None,
        }
    }

    /// Carries out actions, feeding failures back to the controller.
    fn execute(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let Some(controller) = self.controller.as_mut() else {
                return;
            };
            match action {
                Action::Send { token, request } => match host::dispatch(&request) {
                    Ok(host_token) => {
                        self.calls.insert(host_token, token);
                    }
                    Err(status) => {
                        let reason =
                            format!("{status:?} (does the cluster `{}` exist?)", request.cluster);
                        queue.extend(controller.on_send_failed(token, &reason, host::now()));
                    }
                },
                Action::Publish { meta, config } => {
                    let record = published::encode(&meta, &config);
                    // The record first, then the counter that readers poll.
                    let generation = meta.generation.to_string();
                    let done = host::shared_set(CONFIG_KEY, &record, None).and_then(|()| {
                        host::shared_set(GENERATION_KEY, generation.as_bytes(), None)
                    });
                    if let Err(e) = done {
                        let message = format!("cannot publish revision {}: {e:?}", meta.revision);
                        host::log(Level::Error, &message);
                        controller.publish_failed();
                    }
                }
                Action::MarkImportAttempted => {
                    if let Err(e) = host::shared_set(IMPORT_ATTEMPTED_KEY, b"1", None) {
                        let message = format!("cannot record the import attempt: {e:?}");
                        host::log(Level::Warn, &message);
                    }
                }
                Action::Log { level, message } => host::log(level, &message),
                Action::Metric(metric) => {
                    if let Some(m) = &self.metrics {
                        m.record(metric);
                    }
                }
            }
        }
    }

    /// Runs the lease protocol; returns whether this root drives now.
    fn claim_driver(&mut self) -> bool {
        let (bytes, cas) = host::shared_get(DRIVER_KEY);
        let current = bytes.as_deref().and_then(Lease::decode);
        match driver::decide(current.as_ref(), &self.owner, host::now(), LEASE_TTL) {
            Decision::Seed(lease) => {
                let _ = host::shared_set(DRIVER_KEY, &lease.encode(), None);
                false
            }
            Decision::Follow => false,
            Decision::Take { lease, newly } => {
                if host::shared_set(DRIVER_KEY, &lease.encode(), cas).is_err() {
                    return false;
                }
                if newly {
                    self.inherit();
                }
                true
            }
        }
    }

    /// Hands the controller what an earlier driver published.
    fn inherit(&mut self) {
        let published = host::shared_get(CONFIG_KEY).0.and_then(|record| {
            published::decode(&record)
                .ok()
                .map(|(meta, config)| (meta, config.to_vec()))
        });
        let import_attempted = host::shared_get(IMPORT_ATTEMPTED_KEY).0.is_some();
        if let Some(c) = self.controller.as_mut() {
            let inherited = Inherited {
                published,
                import_attempted,
            };
            c.adopt(inherited, host::now());
        }
        let message = format!("root context {} now drives this process", self.context_id);
        host::log(Level::Debug, &message);
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(token) = self.calls.remove(&token_id) else {
            return;
        };
        let response = host::call_response(body_size);
        let Some(controller) = self.controller.as_mut() else {
            return;
        };
        let actions = controller.on_response(token, response, host::now());
        self.execute(actions);
    }

    /// Hands the lease over at once instead of letting it expire.
    fn on_done(&mut self) -> bool {
        if self.driving {
            let (bytes, cas) = host::shared_get(DRIVER_KEY);
            let mine = bytes
                .as_deref()
                .and_then(Lease::decode)
                .is_some_and(|l| l.owner == self.owner);
            if mine {
                let _ = host::shared_set(DRIVER_KEY, &driver::released().encode(), cas);
            }
            self.driving = false;
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let json = host::plugin_configuration();
        let settings = match Settings::parse(&json, &|k| std::env::var(k).ok()) {
            Ok(s) => s,
            Err(e) => {
                host::log(Level::Error, &e.to_string());
                return false;
            }
        };
        let random = RandomState::new().hash_one(self.context_id);
        let node_id = settings.resolve_node_id(host::property(vec!["node", "id"]), random);
        self.owner = format!("{node_id}/{}/{random:016x}", self.context_id);
        self.upstream_header = Rc::from(settings.upstream_header.as_str());
        let storage = settings
            .storage
            .as_ref()
            .map_or_else(|| "none".to_string(), |s| s.location.url(""));
        let message = format!(
            "configured: import={} export={} storage={storage} node_id={node_id}",
            settings.import, settings.export
        );
        host::log(Level::Debug, &message);
        self.controller = Some(Controller::new(&settings, node_id));
        self.metrics = Some(host::Metrics::define());
        // Network and shared-data work waits for the first tick: the canary
        // VM Envoy configures and throws away never ticks.
        if let Err(e) = proxy_wasm::hostcalls::set_tick_period(TICK) {
            host::log(Level::Error, &format!("cannot set the tick period: {e:?}"));
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        if self.controller.is_none() {
            return;
        }
        let was = self.driving;
        self.driving = self.claim_driver();
        if was && !self.driving {
            if let Some(c) = self.controller.as_mut() {
                let actions = c.demote();
                self.execute(actions);
            }
            self.calls.clear();
            let message = format!(
                "root context {} no longer drives this process",
                self.context_id
            );
            host::log(Level::Info, &message);
        }
        if !self.driving {
            return;
        }
        if let Some(c) = self.controller.as_mut() {
            let actions = c.tick(host::now());
            self.execute(actions);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            cache: Rc::clone(&self.cache),
            upstream_header: Rc::clone(&self.upstream_header),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
