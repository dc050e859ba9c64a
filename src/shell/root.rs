//! The root context: translates host callbacks into calls on the core's
//! [`crate::root::Root`] and its actions into hostcalls.

use super::filter::{self, Filter};
use super::host::{self, SharedAnswer};
use crate::action::Token;
use crate::event::Level;
use crate::root::{Action, Root};
use crate::worker::WorkerCache;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub struct RootShell {
    core: Root,
    /// Host call token → core token.
    calls: HashMap<u32, Token>,
    cache: Rc<RefCell<WorkerCache>>,
    upstream_header: Rc<str>,
    metrics: Option<host::Metrics>,
}

impl RootShell {
    pub fn new(context_id: u32) -> Self {
        RootShell {
            core: Root::new(context_id),
            calls: HashMap::new(),
            cache: Rc::new(RefCell::new(WorkerCache::default())),
            upstream_header: Rc::from(crate::settings::DEFAULT_UPSTREAM_HEADER),
            metrics: None,
        }
    }

    /// Carries out the core's actions until it has none, then logs its
    /// events.
    fn pump(&mut self) {
        while let Some(action) = self.core.poll_action(host::time()) {
            match action {
                Action::Shared(op) => match host::shared(&op) {
                    SharedAnswer::Read(value) => self.core.handle_shared_read(value),
                    SharedAnswer::Write(result) => self.core.handle_shared_write(result),
                },
                Action::Send(call) => match host::dispatch(&call.request) {
                    Ok(host_token) => {
                        self.calls.insert(host_token, call.token);
                    }
                    Err(status) => {
                        let reason = format!(
                            "{status:?} (does the cluster `{}` exist?)",
                            call.request.cluster
                        );
                        self.core.handle_send_failed(call.token, reason);
                    }
                },
                Action::SetTickPeriod(period) => {
                    if let Err(e) = host::set_tick_period(period) {
                        host::log(Level::Error, &format!("cannot set the tick period: {e:?}"));
                    }
                }
                Action::Metric(metric) => {
                    if let Some(m) = &self.metrics {
                        m.record(metric);
                    }
                }
            }
        }
        while let Some(event) = self.core.poll_event() {
            host::log_event(&event);
        }
    }
}

impl Context for RootShell {
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
        self.core
            .handle_http_response(token, response, host::time());
        self.pump();
    }

    fn on_done(&mut self) -> bool {
        self.core.handle_done(host::time());
        self.pump();
        true
    }
}

impl RootContext for RootShell {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let json = host::plugin_configuration();
        let node_id = host::property(vec!["node", "id"]);
        let random = host::random(0);
        let env = |k: &str| std::env::var(k).ok();
        let configured = self.core.configure(
            &json,
            &env,
            node_id,
            random,
            host::random_seed(),
            host::time(),
        );
        if let Err(e) = configured {
            host::log(Level::Error, &e.to_string());
            return false;
        }
        self.upstream_header = Rc::from(self.core.upstream_header());
        self.cache.replace(self.core.worker_cache());
        self.metrics = Some(host::Metrics::define());
        self.pump();
        // Network and shared-data work waits for the first tick: the canary
        // VM Envoy configures and throws away never ticks.
        if let Err(e) = host::set_tick_period(self.core.tick_period()) {
            host::log(Level::Error, &format!("cannot set the tick period: {e:?}"));
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        self.core.handle_tick(host::time());
        self.pump();
        // This worker's config, refreshed here rather than in a request.
        filter::refresh(&self.cache, WorkerCache::begin_tick);
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
