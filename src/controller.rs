//! The state machine: CP polling, the one-shot import, export scheduling.
//!
//! Sans-IO in the quinn-proto style: the shell calls [`Controller::tick`]
//! with the host's time, and [`Controller::on_response`] /
//! [`Controller::on_send_failed`] when an outbound call ends; every call
//! returns the [`Action`]s to carry out. The controller never blocks and
//! never reads a clock, so tests drive it with a simulated clock and
//! scripted answers.
//!
//! Only the process's driver root context runs a controller (see
//! [`crate::driver`]); [`Controller::adopt`] hands it what an earlier
//! driver left in shared data.

use crate::election::{Change, Election, Step, WriteKind, LEASE_OBJECT};
use crate::envelope::{self, sha256_hex};
use crate::gateway::GatewayConfig;
use crate::http::{HttpRequest, HttpResponse};
use crate::published::{Meta, Source};
use crate::settings::ElectionSettings;
use crate::settings::{ControlPlaneSettings, Settings};
use crate::storage::{ObjectStore, PutMode, StorageError};
use crate::time::Timestamp;
use std::collections::HashMap;
use std::time::Duration;

/// This build's version: the object path segment and the envelope's
/// `version`. Importers refuse configs exported by another version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name of the stored object under `<prefix>/<version>/`.
pub const CONFIG_OBJECT: &str = "config.json";

#[cfg(test)]
mod tests;

/// Longest wait between export retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Extra time past a request's own timeout before we consider its answer
/// lost (the host should always answer; this keeps us from waiting forever
/// if it does not).
const LOST_ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Identifies an outbound call between the controller and the shell.
pub type Token = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Dispatch this call; report its end with `token`.
    Send {
        token: Token,
        request: HttpRequest,
    },
    /// Make this config the one every worker serves.
    Publish {
        meta: Meta,
        config: Vec<u8>,
    },
    /// Record in shared data that this process has used its one import.
    MarkImportAttempted,
    Log {
        level: Level,
        message: String,
    },
    /// Update a metric the proxy exposes (Envoy: in its stats).
    Metric(Metric),
}

/// Observable counters and gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A `config.json` write succeeded (counter).
    ExportWritten,
    /// A request to the store was sent (counter).
    StorageRequest,
    /// This node leads in `Some(term)`, or does not (gauges).
    Leader(Option<u64>),
}

/// What an earlier driver of this process left in shared data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inherited {
    /// The published config: its meta and bytes.
    pub published: Option<(Meta, Vec<u8>)>,
    pub import_attempted: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum ImportState {
    Disabled,
    /// Will import if the CP fails before it ever answered.
    Armed,
    /// The CP failed; the import waits for the store's access token.
    AwaitingCredentials,
    InFlight,
    /// Attempted, or no longer needed: never again in this process.
    Done,
}

/// A revision waiting to be exported.
#[derive(Clone, Debug)]
struct Candidate {
    revision: String,
    config: Vec<u8>,
    sha256: String,
    due: Timestamp,
}

#[derive(Debug)]
enum Pending {
    Poll,
    Import,
    /// Reading the stored object to learn whether `Candidate` is already there.
    ExportCheck(Candidate),
    ExportPut(Candidate),
    LeaseRead,
    LeaseWrite {
        kind: WriteKind,
        sent_at: Timestamp,
    },
    /// Fetching the store's access token.
    Credential,
}

#[derive(Debug, Default)]
struct Exporter {
    queued: Option<Candidate>,
    in_flight: bool,
    /// Digest of the config known to be stored; `checked` says whether we
    /// have looked at all.
    stored_sha256: Option<String>,
    checked: bool,
    /// The condition of the next `config.json` write, from what this node
    /// last read or wrote: `Update` with its ETag, `Create` when it was
    /// absent, `None` (overwrite) when it could not be read.
    write_mode: Option<PutMode>,
    failures: u32,
    retry_at: Timestamp,
    /// The newest CP config, kept by followers ready to write when they
    /// become leader.
    latest: Option<Candidate>,
}

#[derive(Debug)]
pub struct Controller {
    cp: ControlPlaneSettings,
    store: Option<ObjectStore>,
    export_enabled: bool,
    export_delay: Duration,
    node_id: String,
    version: String,
    next_token: Token,
    pending: HashMap<Token, (Pending, Timestamp)>,
    poll_due: Timestamp,
    poll_in_flight: bool,
    etag: Option<String>,
    /// `None` until the CP answered or failed once.
    cp_available: Option<bool>,
    import: ImportState,
    current: Option<Meta>,
    export: Exporter,
    /// Latest time seen, to notice a wall clock set back.
    last_now: Timestamp,
    /// Exporters elect the one that writes; `None` when export is off.
    election: Option<Election>,
    election_settings: ElectionSettings,
    credential_in_flight: bool,
    /// The CP answered this process at least once: exporters take part in
    /// the election only then (an importer-and-exporter node that imported
    /// has nothing of the CP's to export).
    cp_answered: bool,
}

impl Controller {
    pub fn new(settings: &Settings, node_id: String) -> Self {
        Controller {
            cp: settings.control_plane.clone(),
            store: settings.storage.clone().map(ObjectStore::new),
            export_enabled: settings.export && settings.storage.is_some(),
            export_delay: settings.export_delay,
            node_id,
            version: VERSION.to_string(),
            next_token: 1,
            pending: HashMap::new(),
            poll_due: Timestamp(0),
            poll_in_flight: false,
            etag: None,
            cp_available: None,
            import: if settings.import && settings.storage.is_some() {
                ImportState::Armed
            } else {
                ImportState::Disabled
            },
            current: None,
            export: Exporter::default(),
            last_now: Timestamp(0),
            election: None,
            election_settings: settings.election,
            credential_in_flight: false,
            cp_answered: false,
        }
    }

    /// Takes over what a previous driver of this process left behind. A
    /// CP config it published is queued for export (the existence check
    /// keeps that from writing what is already stored), so a revision
    /// whose export was pending in the old driver is not lost.
    pub fn adopt(&mut self, inherited: Inherited, now: Timestamp) {
        if inherited.import_attempted && self.import == ImportState::Armed {
            self.import = ImportState::Done;
        }
        let Some((meta, config)) = inherited.published else {
            return;
        };
        if self
            .current
            .as_ref()
            .is_some_and(|m| m.generation >= meta.generation)
        {
            return;
        }
        if meta.source == Source::ControlPlane {
            // The CP answered this process before: no import any more.
            if self.import == ImportState::Armed {
                self.import = ImportState::Done;
            }
            self.cp_answered = true;
            if self.export_enabled {
                let candidate = Candidate {
                    revision: meta.revision.clone(),
                    sha256: meta.sha256.clone(),
                    config,
                    due: now.plus(self.export_delay),
                };
                self.export.latest = Some(candidate.clone());
                self.export.queued = Some(candidate);
            }
        }
        self.current = Some(meta);
    }

    /// This root no longer drives the process: forget calls in flight
    /// (their answers will be ignored) so that nothing is published or
    /// written on the strength of a lease it lost. Timers restart when it
    /// drives again.
    pub fn demote(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        // Whether or not its lease still looks valid: a root that stops
        // driving stops leading (the next driver re-takes the lease).
        if let Some(term) = self.election.as_ref().and_then(Election::held_term) {
            let message = format!(
                "lost leadership (term {term}) node={}: this root context no longer drives the process",
                self.node_id
            );
            log(&mut out, Level::Info, message);
            out.push(Action::Metric(Metric::Leader(None)));
        }
        self.pending.clear();
        self.poll_in_flight = false;
        self.credential_in_flight = false;
        self.poll_due = Timestamp(0);
        self.export.retry_at = Timestamp(0);
        self.export.in_flight = false;
        if self.import == ImportState::InFlight {
            self.import = ImportState::Done;
        }
        self.export.queued = None;
        self.export.checked = false;
        self.current = None;
        self.etag = None;
        self.cp_answered = false;
        // A new election state: its lease (if it held one) names this node,
        // which it may take over at once when it drives again.
        self.election = None;
        out
    }

    /// Publishing failed in the host: forget that it happened, so that the
    /// next CP answer (fetched without `If-None-Match`) publishes again.
    pub fn publish_failed(&mut self) {
        self.current = None;
        self.etag = None;
    }

    /// The config this controller last published or adopted.
    pub fn current(&self) -> Option<&Meta> {
        self.current.as_ref()
    }

    /// Advances timers: polls the CP when due, exports when due, gives up
    /// on answers that never came.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Action> {
        let mut out = Vec::new();
        self.observe_time(now, &mut out);
        self.drive_credentials(now, &mut out);
        let lost: Vec<Token> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(t, _)| *t)
            .collect();
        for token in lost {
            let failure = HttpResponse {
                status: 0,
                headers: Vec::new(),
                body: b"no answer from the proxy".to_vec(),
            };
            out.extend(self.on_response(token, failure, now));
        }
        if !self.poll_in_flight && now >= self.poll_due {
            // Keep the schedule (due + interval) so tick granularity does not
            // stretch the interval; restart it after a long gap.
            let next = self.poll_due.plus(self.cp.poll_interval);
            self.poll_due = if next > now {
                next
            } else {
                now.plus(self.cp.poll_interval)
            };
            let mut headers = Vec::new();
            if let Some(etag) = &self.etag {
                headers.push(("if-none-match".to_string(), etag.clone()));
            }
            let request = HttpRequest {
                cluster: self.cp.cluster.clone(),
                method: "GET".into(),
                path: self.cp.path.clone(),
                authority: self.cp.authority.clone(),
                headers,
                body: None,
                timeout: self.cp.timeout,
            };
            self.poll_in_flight = true;
            self.send(Pending::Poll, request, now, &mut out);
        }
        self.drive_election(now, &mut out);
        self.drive_export(now, &mut out);
        out
    }

    /// A call dispatched earlier could not even be sent (the host refused
    /// it); handled like a failed answer.
    pub fn on_send_failed(&mut self, token: Token, reason: &str, now: Timestamp) -> Vec<Action> {
        let failure = HttpResponse {
            status: 0,
            headers: Vec::new(),
            body: format!("not sent: {reason}").into_bytes(),
        };
        self.on_response(token, failure, now)
    }

    /// The answer to the call `token`.
    pub fn on_response(
        &mut self,
        token: Token,
        response: HttpResponse,
        now: Timestamp,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some((pending, _)) = self.pending.remove(&token) else {
            return out;
        };
        // The store refused our credentials as such (a revoked or expired
        // access token): fetch a new one before the next request.
        let to_store = !matches!(pending, Pending::Poll | Pending::Credential);
        if to_store && response.status == 401 {
            if let Some(store) = self.store.as_mut() {
                store.invalidate_credentials();
            }
        }
        match pending {
            Pending::Poll => {
                self.poll_in_flight = false;
                self.on_poll(response, now, &mut out);
            }
            Pending::Import => self.on_import(response, &mut out),
            Pending::ExportCheck(c) => self.on_export_check(c, response, now, &mut out),
            Pending::ExportPut(c) => self.on_export_put(c, &response, now, &mut out),
            Pending::Credential => {
                self.credential_in_flight = false;
                if let Some(store) = self.store.as_mut() {
                    match store.on_credential_response(response, now) {
                        // An import may have been waiting for this token.
                        Ok(()) => self.drive_credentials(now, &mut out),
                        Err(e) => self.credentials_failed(&e, &mut out),
                    }
                }
            }
            Pending::LeaseRead => {
                let mut next = None;
                if let (Some(store), Some(election)) = (&self.store, self.election.as_mut()) {
                    next = election.on_read(store.read_result(response), now, &mut out);
                }
                if let Some((step, kind)) = next {
                    self.send_lease_step(step, kind, now, &mut out);
                }
                self.react_to_election(now, &mut out);
            }
            Pending::LeaseWrite { kind, sent_at } => {
                if let (Some(store), Some(election)) = (&self.store, self.election.as_mut()) {
                    let result = store.write_result(&response);
                    election.on_write(kind, result, sent_at, now, &mut out);
                }
                self.react_to_election(now, &mut out);
            }
        }
        self.drive_election(now, &mut out);
        self.drive_export(now, &mut out);
        out
    }

    /// Timers are wall-clock instants (the host offers no monotonic
    /// clock). If the clock was set back, move every timer back by the
    /// same amount so polling and retries do not stall until the clock
    /// catches up; a jump forward only fires timers early.
    fn observe_time(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        if now < self.last_now {
            let back = self.last_now.since(now);
            let rebase =
                |t: &mut Timestamp| *t = Timestamp(t.0.saturating_sub(back.as_millis() as u64));
            rebase(&mut self.poll_due);
            rebase(&mut self.export.retry_at);
            if let Some(c) = self.export.queued.as_mut() {
                rebase(&mut c.due);
            }
            for (_, deadline) in self.pending.values_mut() {
                rebase(deadline);
            }
            log(
                out,
                Level::Warn,
                format!(
                    "the host clock went back by {} ms; timers moved with it",
                    back.as_millis()
                ),
            );
        }
        self.last_now = now;
    }

    fn send(&mut self, what: Pending, request: HttpRequest, now: Timestamp, out: &mut Vec<Action>) {
        let token = self.next_token;
        self.next_token += 1;
        let deadline = now.plus(request.timeout + LOST_ANSWER_GRACE);
        if !matches!(what, Pending::Poll | Pending::Credential) {
            out.push(Action::Metric(Metric::StorageRequest));
        }
        self.pending.insert(token, (what, deadline));
        out.push(Action::Send { token, request });
    }

    // ---- credentials ----

    /// Fetches or renews the store's access token when the backend needs
    /// one, ahead of time so imports and exports never wait on a renewal;
    /// then starts an import that was waiting for it.
    fn drive_credentials(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        if !self.credential_in_flight {
            match self.store.as_mut().map(|s| s.credential_request(now)) {
                Some(Ok(Some(request))) => {
                    self.credential_in_flight = true;
                    self.send(Pending::Credential, request, now, out);
                }
                Some(Err(e)) => self.credentials_failed(&e, out),
                _ => {}
            }
        }
        let ready = self
            .store
            .as_ref()
            .is_some_and(|s| s.credentials_ready(now));
        if self.import == ImportState::AwaitingCredentials && ready {
            self.start_import(now, out);
        }
    }

    fn credentials_failed(&mut self, e: &StorageError, out: &mut Vec<Action>) {
        log(
            out,
            Level::Warn,
            format!("cannot get an access token for the store: {e}"),
        );
        if self.import == ImportState::AwaitingCredentials {
            // The one import cannot happen without credentials.
            self.import = ImportState::Done;
            out.push(Action::MarkImportAttempted);
            let url = self
                .store
                .as_ref()
                .map(|s| s.url(&s.key(&self.version, CONFIG_OBJECT)))
                .unwrap_or_default();
            log(
                out,
                Level::Error,
                format!("import failed: {e} ({url}); nothing applied, still polling the CP"),
            );
        }
    }

    // ---- election ----

    /// Runs the election once this exporter has something of the CP's.
    fn drive_election(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let ready = self
            .store
            .as_ref()
            .is_some_and(|s| s.credentials_ready(now));
        if !self.export_enabled || !self.cp_answered || !ready {
            return;
        }
        let node_id = self.node_id.clone();
        let settings = self.election_settings;
        let election = self
            .election
            .get_or_insert_with(|| Election::new(settings, node_id));
        if let Some((step, kind)) = election.poll(now, out) {
            self.send_lease_step(step, kind, now, out);
        }
        self.react_to_election(now, out);
    }

    fn send_lease_step(
        &mut self,
        step: Step,
        kind: Option<WriteKind>,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let Some(store) = &self.store else { return };
        let key = store.key(&self.version, LEASE_OBJECT);
        let (request, pending) = match (step, kind) {
            (Step::Write { mode, record }, Some(kind)) => {
                let body = serde_json::to_vec(&record).unwrap_or_default();
                (
                    store.put(&key, body, &mode, now),
                    Pending::LeaseWrite { kind, sent_at: now },
                )
            }
            _ => (store.get(&key, now), Pending::LeaseRead),
        };
        match request {
            Ok(request) => self.send(pending, request, now, out),
            Err(e) => {
                log(
                    out,
                    Level::Error,
                    format!("election: cannot build the lease request: {e}"),
                );
                // Let the election try again at its next interval.
                let failed = HttpResponse {
                    status: 0,
                    headers: Vec::new(),
                    body: Vec::new(),
                };
                if let (Some(store), Some(election)) = (&self.store, self.election.as_mut()) {
                    match pending {
                        Pending::LeaseWrite { kind, sent_at } => {
                            election.on_write(kind, store.write_result(&failed), sent_at, now, out)
                        }
                        _ => {
                            let _ = election.on_read(store.read_result(failed), now, out);
                        }
                    }
                }
            }
        }
    }

    /// Follows the election's role changes: a new leader re-reads
    /// `config.json` before writing and writes the newest CP config it has.
    fn react_to_election(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let changes = self
            .election
            .as_mut()
            .map(Election::take_changes)
            .unwrap_or_default();
        for change in changes {
            match change {
                Change::BecameLeader { term } => {
                    out.push(Action::Metric(Metric::Leader(Some(term))));
                    self.export.checked = false;
                    self.export.failures = 0;
                    self.export.retry_at = now;
                    if self.export.queued.is_none() {
                        self.export.queued = self.export.latest.clone().map(|mut c| {
                            c.due = now;
                            c
                        });
                    }
                }
                Change::LostLeadership { .. } => {
                    out.push(Action::Metric(Metric::Leader(None)));
                    self.export.checked = false;
                }
                Change::Failed {
                    doing,
                    error,
                    retry_in,
                } => {
                    let what = match &self.export.latest {
                        Some(c) => format!("export of revision {} failed", c.revision),
                        None => "election failed".to_string(),
                    };
                    let message = format!(
                        "{what}: {error} ({doing}); retrying in {} ms",
                        retry_in.as_millis()
                    );
                    log(out, Level::Warn, message);
                }
            }
        }
    }

    // ---- control plane ----

    fn on_poll(&mut self, response: HttpResponse, now: Timestamp, out: &mut Vec<Action>) {
        match response.status {
            200 => {
                let body = trim_json(&response.body);
                match GatewayConfig::parse(body) {
                    Ok(config) => {
                        self.etag = response.header("etag").map(str::to_string);
                        self.on_cp_config(config, body, now, out);
                    }
                    Err(e) => {
                        self.on_cp_failure(format!("it sent an unusable config: {e}"), now, out)
                    }
                }
            }
            304 if self.current.is_some() => {
                if self.cp_available != Some(true) {
                    log(
                        out,
                        Level::Info,
                        "CP available again; config unchanged".into(),
                    );
                }
                self.cp_available = Some(true);
            }
            status => {
                let reason = if status == 0 {
                    response.body_excerpt(200)
                } else {
                    format!("status {status}: {}", response.body_excerpt(200))
                };
                self.on_cp_failure(reason, now, out);
            }
        }
    }

    fn on_cp_config(
        &mut self,
        config: GatewayConfig,
        body: &[u8],
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        self.cp_available = Some(true);
        self.cp_answered = true;
        if self.import == ImportState::Armed {
            self.import = ImportState::Done;
        }
        let sha256 = sha256_hex(body);
        let unchanged = self
            .current
            .as_ref()
            .is_some_and(|m| m.sha256 == sha256 && m.source == Source::ControlPlane);
        if unchanged {
            log(
                out,
                Level::Debug,
                format!("CP config unchanged (revision {})", config.revision),
            );
            return;
        }
        log(
            out,
            Level::Info,
            format!("CP fetched revision {}; applying it", config.revision),
        );
        let candidate = Candidate {
            revision: config.revision.clone(),
            config: body.to_vec(),
            sha256: sha256.clone(),
            due: now.plus(self.export_delay),
        };
        self.publish(
            Source::ControlPlane,
            config.revision,
            sha256,
            body.to_vec(),
            out,
        );
        if self.export_enabled {
            self.export.latest = Some(candidate.clone());
            let revision = candidate.revision.clone();
            // A newer revision replaces the pending one but keeps its due
            // time: a CP changing faster than the delay still gets exported.
            let mut candidate = candidate;
            if let Some(pending) = &self.export.queued {
                candidate.due = candidate.due.min(pending.due);
            }
            if let Some(old) = self.export.queued.replace(candidate) {
                let message = format!(
                    "revision {revision} replaces revision {} awaiting export",
                    old.revision
                );
                log(out, Level::Debug, message);
            }
        }
    }

    fn on_cp_failure(&mut self, reason: String, now: Timestamp, out: &mut Vec<Action>) {
        let level = if self.cp_available == Some(false) {
            Level::Debug
        } else {
            Level::Info
        };
        self.cp_available = Some(false);
        log(out, level, format!("CP unavailable: {reason}"));
        if self.import == ImportState::Armed && self.current.is_none() {
            self.start_import(now, out);
        }
    }

    fn publish(
        &mut self,
        source: Source,
        revision: String,
        sha256: String,
        config: Vec<u8>,
        out: &mut Vec<Action>,
    ) {
        let meta = Meta {
            generation: self.current.as_ref().map_or(1, |m| m.generation + 1),
            source,
            revision,
            sha256,
        };
        self.current = Some(meta.clone());
        out.push(Action::Publish { meta, config });
    }

    // ---- import ----

    fn start_import(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let Some(store) = &self.store else { return };
        if !store.credentials_ready(now) {
            if self.import != ImportState::AwaitingCredentials {
                let message = "waiting for the store's access token before importing";
                log(out, Level::Info, message.into());
            }
            self.import = ImportState::AwaitingCredentials;
            return;
        }
        self.import = ImportState::Done;
        out.push(Action::MarkImportAttempted);
        let key = store.key(&self.version, CONFIG_OBJECT);
        let url = store.url(&key);
        match store.get(&key, now) {
            Ok(request) => {
                log(
                    out,
                    Level::Info,
                    format!("importing fallback config from {url}"),
                );
                self.import = ImportState::InFlight;
                self.send(Pending::Import, request, now, out);
            }
            Err(e) => log(out, Level::Error, format!("import failed: {e} ({url})")),
        }
    }

    fn on_import(&mut self, response: HttpResponse, out: &mut Vec<Action>) {
        self.import = ImportState::Done;
        let Some(store) = &self.store else { return };
        let url = store.url(&store.key(&self.version, CONFIG_OBJECT));
        let opened = store
            .read_result(response)
            .map_err(|e| e.to_string())
            .and_then(|object| {
                envelope::open(&object.body, &self.version).map_err(|e| e.to_string())
            });
        match opened {
            Err(reason) => log(
                out,
                Level::Error,
                format!("import failed: {reason} ({url}); nothing applied, still polling the CP"),
            ),
            Ok(o) if self.current.is_some() => log(
                out,
                Level::Info,
                format!(
                    "imported revision {} discarded: the CP answered first",
                    o.revision
                ),
            ),
            Ok(o) => {
                log(
                    out,
                    Level::Info,
                    format!(
                        "imported revision {} from {url} (exported at {} by {})",
                        o.revision, o.exported_at, o.exporter
                    ),
                );
                self.publish(Source::Storage, o.revision, o.sha256, o.config_bytes, out);
            }
        }
    }

    // ---- export ----

    fn drive_export(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if !self.export_enabled
            || self.export.in_flight
            || now < self.export.retry_at
            || !store.credentials_ready(now)
        {
            return;
        }
        // Only the elected leader writes; followers keep the candidate.
        let Some(term) = self.election.as_ref().and_then(|e| e.leader_term(now)) else {
            return;
        };
        let Some(c) = self.export.queued.take_if(|c| now >= c.due) else {
            return;
        };
        if self.export.stored_sha256.as_deref() == Some(c.sha256.as_str()) {
            log(
                out,
                Level::Info,
                format!(
                    "export of revision {} skipped: the same config is already stored",
                    c.revision
                ),
            );
            return;
        }
        let key = store.key(&self.version, CONFIG_OBJECT);
        let (request, pending) = if self.export.checked {
            let body = envelope::seal(envelope::Export {
                config: &c.config,
                revision: &c.revision,
                version: &self.version,
                exporter: &self.node_id,
                exported_at: now,
                term,
            });
            let mode = self.export.write_mode.clone().unwrap_or(PutMode::Overwrite);
            match body {
                Ok(body) => (store.put(&key, body, &mode, now), Pending::ExportPut(c)),
                Err(e) => {
                    // Cannot happen for a config we validated; never retry it.
                    log(
                        out,
                        Level::Error,
                        format!("export of revision {} failed: {e}", c.revision),
                    );
                    return;
                }
            }
        } else {
            (store.get(&key, now), Pending::ExportCheck(c))
        };
        match request {
            Ok(request) => {
                self.export.in_flight = true;
                self.send(pending, request, now, out);
            }
            Err(e) => {
                if let Pending::ExportCheck(c) | Pending::ExportPut(c) = pending {
                    self.export_failed(c, &e, now, out);
                }
            }
        }
    }

    fn on_export_check(
        &mut self,
        c: Candidate,
        response: HttpResponse,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        self.export.in_flight = false;
        let Some(store) = &self.store else { return };
        match store.read_result(response) {
            Ok(object) => {
                // The fence: a config.json written in a newer term means a
                // newer leader exists, whatever this node believes.
                let stored_term = envelope::stored_term(&object.body).unwrap_or(0);
                let my_term = self
                    .election
                    .as_ref()
                    .and_then(|e| e.leader_term(now))
                    .unwrap_or(0);
                if stored_term > my_term {
                    let reason =
                        format!("config.json holds term {stored_term}, newer than term {my_term}");
                    self.stand_down(stored_term, &reason, now, out);
                    self.requeue(c);
                    return;
                }
                self.export.checked = true;
                self.export.stored_sha256 = envelope::open(&object.body, &self.version)
                    .ok()
                    .map(|o| o.sha256);
                self.export.write_mode = object.etag.map(|etag| PutMode::Update { etag });
                self.requeue(c);
            }
            Err(StorageError::NotFound { .. }) => {
                self.export.checked = true;
                self.export.stored_sha256 = None;
                self.export.write_mode = Some(PutMode::Create);
                self.requeue(c);
            }
            // Without s3:ListBucket, S3 answers a missing key with 403
            // AccessDenied: the exporter cannot tell whether the object
            // exists, so it writes (a wrong key is SignatureDoesNotMatch or
            // InvalidAccessKeyId and fails below).
            Err(StorageError::Status {
                status: 403,
                code: Some(code),
                ..
            }) if code == "AccessDenied" => {
                log(
                    out,
                    Level::Debug,
                    "cannot read the stored config (403 AccessDenied); writing it".into(),
                );
                self.export.checked = true;
                self.export.stored_sha256 = None;
                // Absent (no s3:ListBucket) is the case that works; if it
                // exists but cannot be read (no s3:GetObject) the write
                // fails its precondition rather than overwrite blindly.
                self.export.write_mode = Some(PutMode::Create);
                self.requeue(c);
            }
            Err(e) => self.export_failed(c, &e, now, out),
        }
    }

    /// Stops writing: a newer term or a lost precondition shows another
    /// leader. Re-reads `config.json` before any later write.
    fn stand_down(&mut self, seen_term: u64, reason: &str, now: Timestamp, out: &mut Vec<Action>) {
        self.export.checked = false;
        self.export.write_mode = None;
        if let Some(e) = self.election.as_mut() {
            e.stand_down(seen_term, reason, out);
        }
        self.react_to_election(now, out);
    }

    fn on_export_put(
        &mut self,
        c: Candidate,
        response: &HttpResponse,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        self.export.in_flight = false;
        let Some(store) = &self.store else { return };
        match store.write_result(response) {
            Ok(etag) => {
                self.export.failures = 0;
                let url = store.url(&store.key(&self.version, CONFIG_OBJECT));
                log(
                    out,
                    Level::Info,
                    format!("exported revision {} to {url}", c.revision),
                );
                out.push(Action::Metric(Metric::ExportWritten));
                self.export.stored_sha256 = Some(c.sha256);
                // Without the new ETag the next write must read first.
                self.export.checked = etag.is_some();
                self.export.write_mode = etag.map(|etag| PutMode::Update { etag });
            }
            Err(StorageError::PreconditionFailed) => {
                let term = self
                    .election
                    .as_ref()
                    .and_then(|e| e.leader_term(now))
                    .unwrap_or(0);
                let reason = "config.json changed since this node last read or wrote it (412)";
                self.stand_down(term, reason, now, out);
                self.requeue(c);
            }
            Err(e) => self.export_failed(c, &e, now, out),
        }
    }

    /// Puts a candidate back unless a newer revision took its place.
    fn requeue(&mut self, c: Candidate) {
        if self.export.queued.is_none() {
            self.export.queued = Some(c);
        }
    }

    fn export_failed(
        &mut self,
        c: Candidate,
        e: &StorageError,
        now: Timestamp,
        out: &mut Vec<Action>,
    ) {
        let delay = backoff(self.export.failures);
        self.export.failures = self.export.failures.saturating_add(1);
        self.export.retry_at = now.plus(delay);
        log(
            out,
            Level::Warn,
            format!(
                "export of revision {} failed: {e}; retrying in {} ms",
                c.revision,
                delay.as_millis()
            ),
        );
        self.requeue(c);
    }
}

/// 1 s, 2 s, 4 s, ... capped at [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF)
}

/// The JSON value without surrounding whitespace: what the envelope stores
/// and what its digest covers.
fn trim_json(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn log(out: &mut Vec<Action>, level: Level, message: String) {
    out.push(Action::Log { level, message });
}
