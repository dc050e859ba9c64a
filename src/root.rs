//! One root context's whole core: the clock, its side of the process
//! protocol ([`Coordinator`]) and, while it drives, the [`Controller`].
//!
//! The shell feeds it host callbacks (`handle_*`, each with the host's
//! raw time) and carries out what [`Root::poll_action`] returns, one at a
//! time: shared-data calls are answered at once with
//! [`Root::handle_shared_read`] / [`Root::handle_shared_write`], calls are
//! dispatched and answered later with [`Root::handle_http_response`].
//! Log lines come from [`Root::poll_event`]. The simulator drives the
//! same type, so what it proves is what runs in Envoy.
//!
//! The order that keeps a root that lost the lease from acting: a tick
//! first renews the lease and only then runs the controller; an answer
//! that arrives after the lease's validity ran out (a stalled thread)
//! waits until a renewal succeeded, and is dropped if the lease was lost.

use crate::action::{Call, CallKind, Metric, Token};
use crate::clock::{Clock, ClockNotice, ClockSource, HostTime, Now};
use crate::controller::{Controller, Inherited, Output};
use crate::event::Event;
use crate::http::HttpResponse;
use crate::process::{
    Coordinator, Outcome, SharedOp, SharedValue, WriteResult, FIRST_TICK, TICK, WORKER_TICK,
};
use crate::rng::{NonceSource, Rng};
use crate::role::Role;
use crate::settings::{Settings, SettingsError, DEFAULT_UPSTREAM_HEADER};
use crate::status::StatusRecord;
use crate::worker::WorkerCache;
use std::collections::VecDeque;
use std::time::Duration;

/// What the shell must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A shared-data call; answer it before polling again.
    Shared(SharedOp),
    /// Dispatch this call; report its end with its token.
    Send(Call),
    Metric(Metric),
    /// Change the tick period to this (see [`Root::tick_period`]).
    SetTickPeriod(Duration),
}

/// Inputs that wait until the lease is confirmed.
#[derive(Debug)]
enum Deferred {
    Tick,
    Answer(Token, HttpResponse),
    NotSent(Token, String),
}

#[derive(Debug)]
struct Configured {
    settings: Settings,
    /// `node_id` from the plugin config, else the host's node id.
    node_id: Option<String>,
    coordinator: Coordinator,
    /// Nonces for encrypted exports; `None` when the host gave no
    /// randomness (then nothing is encrypted).
    nonces: Option<NonceSource>,
}

/// The core of one root context.
#[derive(Debug)]
pub struct Root {
    context_id: u32,
    clock: Clock,
    now: Now,
    configured: Option<Configured>,
    controller: Option<Controller>,
    deferred: VecDeque<Deferred>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// The first token of the next controller: tokens stay unique across
    /// the controllers one root runs, so a late answer to a call of an
    /// earlier one can never be taken for a call of the current one.
    next_token: Token,
    /// Seeds each controller's jitter (from the host's randomness).
    rng: Rng,
    /// The last shared-data call renewed the lease (or granted an import):
    /// an import request may go out right after it, and only then.
    just_validated: bool,
    /// Whether the first tick came (see [`Root::tick_period`]).
    ticked: bool,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            clock: Clock::new(),
            now: Now::at_millis(0),
            configured: None,
            controller: None,
            deferred: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_token: 1,
            rng: Rng::new(u64::from(context_id)),
            just_validated: false,
            ticked: false,
        }
    }

    /// Parses the plugin configuration. Does no shared-data or network
    /// work: Envoy's canary VM is configured and thrown away without ever
    /// ticking. `random` comes from the host (it makes this root's lease
    /// owner unique, and the process's node id if this root chooses it);
    /// so does `entropy` (32 bytes of the host's randomness, the seed of
    /// encryption nonces; `None` if the host refused).
    pub fn configure(
        &mut self,
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
        host_node_id: Option<String>,
        random: u64,
        entropy: Option<[u8; 32]>,
        time: HostTime,
    ) -> Result<(), SettingsError> {
        self.read_clock(time);
        let settings = Settings::parse(json, env)?;
        if settings.export && settings.snapshot.encrypting().is_some() && entropy.is_none() {
            return Err(SettingsError {
                field: "snapshot.encrypt".to_string(),
                reason: "needs the host's randomness for nonces, and the host gave none (WASI random_get failed)".to_string(),
            });
        }
        let node_id = settings
            .node_id
            .clone()
            .or(host_node_id.filter(|n| !n.trim().is_empty()));
        self.rng = Rng::new(random);
        let owner = format!("root-{}-{:016x}", self.context_id, self.rng.next_u64());
        let proposed = node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:016x}", self.rng.next_u64()));
        self.events.push_back(Event::Configured {
            import: settings.import,
            export: settings.export,
            storage: settings
                .storage
                .as_ref()
                .map_or_else(|| "none".to_string(), |s| s.location.url("")),
            node_id: node_id.clone(),
        });
        self.configured = Some(Configured {
            coordinator: Coordinator::new(self.context_id, owner, proposed),
            settings,
            node_id,
            nonces: entropy.map(NonceSource::new),
        });
        Ok(())
    }

    /// The request header the filter sets to the chosen upstream.
    pub fn upstream_header(&self) -> &str {
        self.configured
            .as_ref()
            .map_or(DEFAULT_UPSTREAM_HEADER, |c| {
                c.settings.upstream_header.as_str()
            })
    }

    /// `status_path`, if on: workers answer it themselves.
    pub fn status_path(&self) -> Option<&str> {
        self.configured
            .as_ref()
            .and_then(|c| c.settings.status_path.as_deref())
    }

    /// This root's part in the process (plugin JSON `role`).
    pub fn role(&self) -> Role {
        self.configured
            .as_ref()
            .map_or(Role::default(), |c| c.settings.role)
    }

    /// The request path's cache for this root's thread, as configured: one
    /// that never loads a config when this root serves no requests.
    pub fn worker_cache(&self) -> WorkerCache {
        let cache = match self.role().serves() {
            true => WorkerCache::with_status_path(self.status_path().map(str::to_string)),
            false => return WorkerCache::idle(),
        };
        match self.role() {
            Role::Worker => cache.watching_for_driver(),
            Role::Any | Role::Driver => cache,
        }
    }

    /// Whether this root drives its process.
    pub fn is_driver(&self) -> bool {
        self.configured
            .as_ref()
            .is_some_and(|c| c.coordinator.is_driver())
    }

    /// The node id the controller runs with, while driving.
    pub fn node_id(&self) -> Option<&str> {
        self.controller.as_ref().map(Controller::node_id)
    }

    /// This root's lease owner name.
    pub fn owner(&self) -> Option<&str> {
        self.configured.as_ref().map(|c| c.coordinator.owner())
    }

    /// The tick period to set when the plugin is configured: a short
    /// first one ([`FIRST_TICK`]), then the steady one, asked for by
    /// [`Action::SetTickPeriod`] on the first tick.
    pub fn tick_period(&self) -> Duration {
        match self.ticked {
            false => FIRST_TICK,
            true => self.steady_tick(),
        }
    }

    /// [`TICK`], or [`WORKER_TICK`] for a root that never drives (its
    /// ticks only look for a new config).
    fn steady_tick(&self) -> Duration {
        match self.role().drives() {
            true => TICK,
            false => WORKER_TICK,
        }
    }

    pub fn handle_tick(&mut self, time: HostTime) {
        if !self.ticked {
            self.ticked = true;
            self.actions
                .push_back(Action::SetTickPeriod(self.steady_tick()));
        }
        self.read_clock(time);
        let now = self.now;
        let Some(c) = self.configured.as_mut() else {
            return;
        };
        // A worker-only root never reads or takes the driver record: it
        // serves what the driver (a bootstrap service) publishes.
        if !c.settings.role.drives() {
            return;
        }
        self.deferred.push_back(Deferred::Tick);
        c.coordinator.tick(now);
        self.pump();
    }

    pub fn handle_http_response(&mut self, token: Token, response: HttpResponse, time: HostTime) {
        self.read_clock(time);
        self.answer(Deferred::Answer(token, response));
    }

    /// A call the host refused to dispatch.
    pub fn handle_send_failed(&mut self, token: Token, reason: String) {
        self.answer(Deferred::NotSent(token, reason));
    }

    /// The root context is going away (a config update replaced it, or
    /// the proxy stops): hand the lease over at once.
    pub fn handle_done(&mut self, time: HostTime) {
        self.read_clock(time);
        let now = self.now;
        if let Some(c) = self.configured.as_mut() {
            if c.coordinator.is_driver() {
                c.coordinator.release(now);
            }
        }
        self.deferred.clear();
        self.pump();
    }

    /// The next thing to do. `time` is read by the shell just before: a
    /// thread that stalled since the callback began must not send on the
    /// strength of a lease that may have run out meanwhile, so a call
    /// waits for a renewal first (and is dropped if the lease was lost).
    ///
    /// An import request goes out only right after a renewal of the lease
    /// (or the grant itself): a wall clock can hide a stall (on a host
    /// without a monotonic clock, set back while the thread was stuck), and
    /// two imports must never be out at once. So the only window left is
    /// between two hostcalls, the renewal and the dispatch.
    pub fn poll_action(&mut self, time: HostTime) -> Option<Action> {
        self.read_clock(time);
        let now = self.now;
        let fresh = std::mem::take(&mut self.just_validated);
        let c = self.configured.as_mut()?;
        if let Some(op) = c.coordinator.poll_shared() {
            return Some(Action::Shared(op));
        }
        let (send, import) = match self.actions.front() {
            Some(Action::Send(call)) => (true, call.kind == CallKind::Import),
            _ => (false, false),
        };
        let valid = c.coordinator.may_act(now.mono) && (fresh || !import);
        if send && !valid {
            c.coordinator.revalidate(now);
            return c.coordinator.poll_shared().map(Action::Shared);
        }
        self.actions.pop_front()
    }

    pub fn handle_shared_read(&mut self, value: SharedValue) {
        let now = self.now;
        if let Some(c) = self.configured.as_mut() {
            c.coordinator.handle_read(value, now);
        }
        self.pump();
    }

    pub fn handle_shared_write(&mut self, result: WriteResult) {
        let now = self.now;
        if let Some(c) = self.configured.as_mut() {
            c.coordinator.handle_write(result, now);
        }
        self.pump();
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn read_clock(&mut self, time: HostTime) {
        let (now, notice) = self.clock.read(time);
        self.now = now;
        match notice {
            Some(ClockNotice::Source(s)) => self.events.push_back(Event::ClockChosen(s)),
            // Only the driver's report matters (every root sees the jump).
            Some(ClockNotice::WallJumped { by_ms }) if self.is_driver() => {
                self.events.push_back(Event::WallClockJumped { by_ms })
            }
            _ => {}
        }
    }

    fn answer(&mut self, input: Deferred) {
        let now = self.now;
        let Some(c) = self.configured.as_mut() else {
            return;
        };
        if self.controller.is_none() {
            return;
        }
        let may_act = c.coordinator.may_act(now.mono);
        if may_act && self.deferred.is_empty() {
            self.run(input);
        } else {
            // The lease's validity ran out, or a renewal is under way:
            // confirm it before acting on anything, in order.
            self.deferred.push_back(input);
            if !may_act {
                c.coordinator.revalidate(now);
            }
        }
        self.pump();
    }

    fn run(&mut self, input: Deferred) {
        let now = self.now;
        let Some(controller) = self.controller.as_mut() else {
            return;
        };
        match input {
            Deferred::Tick => controller.tick(now),
            Deferred::Answer(token, response) => controller.on_response(token, response, now),
            Deferred::NotSent(token, reason) => controller.on_send_failed(token, &reason, now),
        }
    }

    /// Routes outcomes and outputs between the coordinator and the
    /// controller until neither has anything new.
    fn pump(&mut self) {
        let now = self.now;
        loop {
            let Some(c) = self.configured.as_mut() else {
                return;
            };
            self.events.extend(c.coordinator.take_events());
            let outcome = c.coordinator.poll_outcome();
            let had_outcome = outcome.is_some();
            if let Some(outcome) = outcome {
                self.on_outcome(outcome);
            }
            let outputs = self
                .controller
                .as_mut()
                .map(|ctl| (ctl.take_outputs(), ctl.take_events()));
            let mut routed = false;
            if let Some((outputs, events)) = outputs {
                self.events.extend(events);
                routed = !outputs.is_empty();
                for output in outputs {
                    self.route(output, now);
                }
            }
            if !had_outcome && !routed {
                return;
            }
        }
    }

    fn route(&mut self, output: Output, now: Now) {
        let Some(c) = self.configured.as_mut() else {
            return;
        };
        match output {
            Output::Send(call) => self.actions.push_back(Action::Send(call)),
            Output::Metric(m) => self.actions.push_back(Action::Metric(m)),
            Output::Publish(job) => c.coordinator.publish(job, now),
            Output::RequestImport { max_attempts } => c.coordinator.begin_import(max_attempts, now),
            Output::EndImport => c.coordinator.end_import(now),
            Output::Status(record) => c.coordinator.status(record.encode(), now),
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let now = self.now;
        match outcome {
            Outcome::Took {
                record,
                published,
                status,
            } => {
                let Some(c) = self.configured.as_mut() else {
                    return;
                };
                let node_id = c.node_id.clone().unwrap_or(record.node_id);
                self.events.push_back(Event::DriverTaken {
                    root: self.context_id,
                    epoch: record.epoch,
                    node_id: node_id.clone(),
                    clock: self.clock.source().unwrap_or(ClockSource::DerivedFromWall),
                });
                let inherited = Inherited {
                    published,
                    cp_answered: record.cp_answered,
                    import_attempts: record.import_attempts,
                    import_in_flight: record.import_in_flight,
                    status: status.as_deref().and_then(StatusRecord::decode),
                };
                let seed = self.rng.next_u64();
                let nonces = c.nonces.as_mut().map(NonceSource::child);
                self.controller = Some(Controller::new(
                    &c.settings,
                    node_id,
                    inherited,
                    self.next_token,
                    seed,
                    nonces,
                    now,
                ));
                self.run_deferred();
            }
            Outcome::Renewed => {
                self.just_validated = true;
                self.run_deferred();
            }
            Outcome::Following => self.deferred.clear(),
            Outcome::Lost(_) => {
                self.deferred.clear();
                if let Some(mut ctl) = self.controller.take() {
                    self.next_token = ctl.next_token();
                    ctl.resign();
                    self.events.extend(ctl.take_events());
                    for output in ctl.take_outputs() {
                        if let Output::Metric(m) = output {
                            self.actions.push_back(Action::Metric(m));
                        }
                    }
                }
                // Calls of the lost controller are never acted on: their
                // answers find no controller, or an unknown token.
                self.actions.retain(|a| !matches!(a, Action::Send(_)));
            }
            Outcome::ImportGranted { attempt } => {
                self.just_validated = true;
                if let Some(ctl) = self.controller.as_mut() {
                    ctl.import_granted(attempt, now);
                }
            }
            Outcome::ImportRefused(r) => {
                if let Some(ctl) = self.controller.as_mut() {
                    ctl.import_refused(r);
                }
            }
            Outcome::PublishFailed(job) => {
                if let Some(ctl) = self.controller.as_mut() {
                    ctl.publish_failed(&job);
                }
            }
            Outcome::Published(_) | Outcome::Superseded(_) => {}
        }
    }

    fn run_deferred(&mut self) {
        while let Some(input) = self.deferred.pop_front() {
            self.run(input);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    const PLUGIN: &[u8] = br#"{"cluster_fallback_config_export":true,"cluster_fallback_config_storage":"s3://b/p","storage":{"region":"us-east-1"}}"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "AWS_ACCESS_KEY_ID" => Some("AK".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".into()),
            "FALLBACK_CONFIG_ENCRYPTION_KEYS" => {
                Some("e1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into())
            }
            _ => None,
        }
    }

    fn configure(json: &[u8], entropy: Option<[u8; 32]>) -> Result<(), SettingsError> {
        let time = HostTime {
            monotonic_ns: Some(1),
            wall: Timestamp::from_secs(1_700_000_000),
        };
        Root::new(1).configure(json, &env, None, 7, entropy, time)
    }

    /// An exporter that must encrypt cannot draw nonces without the
    /// host's randomness: it fails to start rather than export in clear
    /// or never export at all.
    #[test]
    fn an_encrypting_exporter_needs_the_hosts_randomness() {
        let e = configure(PLUGIN, None).unwrap_err();
        assert_eq!(e.field, "snapshot.encrypt");
        assert!(e.reason.contains("random_get"), "{e}");
        assert!(configure(PLUGIN, Some([3; 32])).is_ok());
        let plain = br#"{"cluster_fallback_config_export":true,"cluster_fallback_config_storage":"s3://b/p","snapshot":{"encrypt":false},"storage":{"region":"us-east-1"}}"#;
        assert!(configure(plain, None).is_ok());
    }
}
