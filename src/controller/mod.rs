//! The driver's work: the CP poller, the importer, the exporter, the
//! election and the store's credentials, behind one small router.
//!
//! Only the root context that drives its process runs a [`Controller`]
//! (see [`crate::process`]); a new driver builds a fresh one from what the
//! process's shared data says ([`Inherited`]).
//!
//! Sans-IO in the quinn-proto style: [`Controller::tick`],
//! [`Controller::on_response`] and friends take `now`; what to do comes
//! out of [`Controller::take_outputs`] and what happened out of
//! [`Controller::take_events`]. The router owns the token table: it
//! remembers what each call was for ([`CallKind`]) and hands its answer to
//! the machine that sent it. The machines never see tokens.

pub mod cp;
pub mod exporter;
pub mod importer;
#[cfg(test)]
mod tests;

use crate::action::{Call, CallKind, Metric, Token};
use crate::clock::{Instant, Now};
use crate::election::{Change, Election, Step, WriteKind, LEASE_OBJECT};
use crate::envelope;
use crate::event::{Event, ImportFailure};
use crate::http::{HttpRequest, HttpResponse};
use crate::process::{ImportRefusal, PublishJob};
use crate::published::{Meta, Source};
use crate::settings::{ElectionSettings, Settings};
use crate::storage::{ObjectStore, StorageError};
use cp::{CpAnswer, CpPoller};
use exporter::{Candidate, ExportStep, Exporter, ReadVerdict, Seq};
use importer::{ImportStep, Importer};
use std::collections::HashMap;
use std::time::Duration;

/// This build's version: the object path segment and the envelope's
/// `version`. Importers refuse configs exported by another version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name of the stored object under `<prefix>/<version>/`.
pub const CONFIG_OBJECT: &str = "config.json";

/// A process imports at most this often (the one-shot import).
pub const IMPORT_ATTEMPTS: u32 = 1;

/// Extra time past a request's own timeout before its answer counts as
/// lost (the host should always answer; this keeps a lost callback from
/// blocking a machine for good).
const LOST_ANSWER_GRACE: Duration = Duration::from_secs(5);

/// What the process's shared data says when a root starts driving.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inherited {
    /// The published config: its meta and bytes.
    pub published: Option<(Meta, Vec<u8>)>,
    /// A driver of this process applied a CP answer.
    pub cp_answered: bool,
    /// Imports this process already sent.
    pub import_attempts: u32,
}

/// What the controller wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Dispatch this call; report its end with its token.
    Send(Call),
    /// Publish this config to every worker (through the coordinator).
    Publish(PublishJob),
    /// Ask the process for its import; answer with
    /// [`Controller::import_granted`] or [`Controller::import_refused`].
    RequestImport {
        max_attempts: u32,
    },
    Metric(Metric),
}

/// The config last handed to publishing, to tell a new CP answer from an
/// unchanged one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    source: Source,
    sha256: String,
}

/// A call in flight.
#[derive(Clone, Copy, Debug)]
struct Pending {
    kind: CallKind,
    /// Past this, the answer counts as lost.
    deadline: Instant,
    /// Its place in the order of sends and answers.
    sent: Seq,
    /// For lease writes: what the write was for, and when it was sent.
    lease_write: Option<(WriteKind, Instant)>,
}

#[derive(Debug)]
pub struct Controller {
    node_id: String,
    version: String,
    store: Option<ObjectStore>,
    export_delay: Duration,
    cp: CpPoller,
    importer: Importer,
    import_url: String,
    /// `Some` when export is on.
    exporter: Option<Exporter>,
    /// Exporters elect the one that writes; created once the CP answered.
    election: Option<Election>,
    election_settings: ElectionSettings,
    cp_answered: bool,
    applied: Option<Applied>,
    calls: HashMap<Token, Pending>,
    next_token: Token,
    seq: Seq,
    outputs: Vec<Output>,
    events: Vec<Event>,
}

impl Controller {
    /// A controller for a root that starts driving. A CP config it
    /// inherits is queued for export (the existence check keeps that from
    /// writing what is already stored), so a revision whose export was
    /// pending in the old driver is not lost.
    /// Its tokens start at `first_token`.
    pub fn new(
        settings: &Settings,
        node_id: String,
        inherited: Inherited,
        first_token: Token,
        now: Now,
    ) -> Self {
        let store = settings.storage.clone().map(ObjectStore::new);
        let import_url = store
            .as_ref()
            .map(|s| s.url(&s.key(VERSION, CONFIG_OBJECT)))
            .unwrap_or_default();
        let exporter = match (&store, settings.export) {
            (Some(s), true) => Some(Exporter::new(s, VERSION, &node_id)),
            _ => None,
        };
        let import_on = settings.import && store.is_some();
        let used = inherited.cp_answered || inherited.import_attempts >= IMPORT_ATTEMPTS;
        let mut c = Controller {
            node_id,
            version: VERSION.to_string(),
            store,
            export_delay: settings.export_delay,
            cp: CpPoller::new(settings.control_plane.clone()),
            importer: Importer::new(import_on, used),
            import_url,
            exporter,
            election: None,
            election_settings: settings.election,
            cp_answered: inherited.cp_answered,
            applied: None,
            calls: HashMap::new(),
            next_token: first_token,
            seq: 0,
            outputs: Vec::new(),
            events: Vec::new(),
        };
        if let Some((meta, config)) = inherited.published {
            if meta.source == Source::ControlPlane {
                c.cp_answered = true;
                c.importer.cp_answered();
                if let Some(e) = c.exporter.as_mut() {
                    let candidate = Candidate {
                        revision: meta.revision.clone(),
                        sha256: meta.sha256.clone(),
                        config,
                        due: now.mono.plus(c.export_delay),
                        fetched: 0,
                    };
                    e.offer(candidate, &mut Vec::new());
                }
            }
            c.applied = Some(Applied {
                source: meta.source,
                sha256: meta.sha256,
            });
        }
        c
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The token its next call would get.
    pub fn next_token(&self) -> Token {
        self.next_token
    }

    /// Whether a config is applied (or being published).
    pub fn has_config(&self) -> bool {
        self.applied.is_some()
    }

    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The earliest instant at which [`Controller::tick`] has work: a
    /// poll, an export, an election step or a lost answer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self.calls.values().map(|p| p.deadline);
        let export = self.exporter.as_ref().and_then(Exporter::next_due);
        let election = self.election.as_ref().map(Election::next_due);
        deadlines
            .chain(self.cp.next_due())
            .chain(export)
            .chain(election)
            .min()
    }

    /// Advances timers: gives up on answers that never came, polls the CP
    /// when due, renews credentials, runs the election and the export.
    pub fn tick(&mut self, now: Now) {
        let lost: Vec<Token> = self
            .calls
            .iter()
            .filter(|(_, p)| now.mono >= p.deadline)
            .map(|(t, _)| *t)
            .collect();
        for token in lost {
            self.on_response(token, no_answer("no answer from the proxy".into()), now);
        }
        if let Some(request) = self.cp.poll(now.mono) {
            self.send(CallKind::CpPoll, request, None, now);
        }
        self.drive(now);
    }

    /// A call could not even be sent (the host refused it); handled like
    /// an answer that never came.
    pub fn on_send_failed(&mut self, token: Token, reason: &str, now: Now) {
        self.on_response(token, no_answer(format!("not sent: {reason}")), now);
    }

    /// The answer to the call `token`. Unknown tokens (answers to calls of
    /// an earlier driver, or duplicates) are ignored.
    pub fn on_response(&mut self, token: Token, response: HttpResponse, now: Now) {
        let Some(pending) = self.calls.remove(&token) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        // The store refused our credentials as such (a revoked or expired
        // access token): fetch a new one before the next request.
        if pending.kind.is_storage() && response.status == 401 {
            if let Some(store) = self.store.as_mut() {
                store.invalidate_credentials();
            }
        }
        match pending.kind {
            CallKind::CpPoll => self.on_poll(response, pending.sent, now),
            CallKind::Import => self.on_import(response),
            CallKind::ExportRead => self.on_export_read(response, seq, now),
            CallKind::ExportWrite => self.on_export_write(&response, now),
            CallKind::LeaseRead => {
                let mut next = None;
                if let (Some(store), Some(election)) = (&self.store, self.election.as_mut()) {
                    next = election.on_read(store.read_result(response), now, &mut self.events);
                }
                if let Some((step, kind)) = next {
                    self.send_lease_step(step, kind, now);
                }
                self.react_to_election(now);
            }
            CallKind::LeaseWrite => {
                if let (Some(store), Some(election), Some((kind, sent_at))) =
                    (&self.store, self.election.as_mut(), pending.lease_write)
                {
                    let result = store.write_result(&response);
                    election.on_write(kind, result, sent_at, now, &mut self.events);
                }
                self.react_to_election(now);
            }
            CallKind::Credential => {
                if let Some(store) = self.store.as_mut() {
                    if let Err(error) = store.on_credential_response(response, now) {
                        self.credentials_failed(error);
                    }
                }
            }
        }
        self.drive(now);
    }

    /// The process granted the import.
    pub fn import_granted(&mut self, now: Now) {
        if !self.importer.granted() {
            return;
        }
        // Granted means the CP had not answered the process; this
        // controller's own view is checked too.
        let request = match (&self.store, self.cp_answered || self.applied.is_some()) {
            (Some(store), false) => store.get(&store.key(&self.version, CONFIG_OBJECT), now),
            _ => {
                self.importer.finished();
                self.events.push(Event::ImportCancelled);
                return;
            }
        };
        match request {
            Ok(request) => {
                self.events.push(Event::ImportStarted {
                    url: self.import_url.clone(),
                });
                self.send(CallKind::Import, request, None, now);
            }
            Err(error) => {
                self.importer.finished();
                self.events.push(Event::ImportFailed {
                    url: self.import_url.clone(),
                    error: ImportFailure::Storage(error),
                });
            }
        }
    }

    /// The process refused the import.
    pub fn import_refused(&mut self, refusal: ImportRefusal) {
        self.importer.denied();
        if refusal == ImportRefusal::CpAnswered {
            self.events.push(Event::ImportCancelled);
        }
    }

    /// A publish this controller asked for did not happen (the host
    /// refused the write, or the lease was lost): forget it, so that the
    /// next CP answer (fetched without `If-None-Match`) publishes again.
    pub fn publish_failed(&mut self, job: &PublishJob) {
        if self
            .applied
            .as_ref()
            .is_some_and(|a| a.sha256 == job.sha256 && a.source == job.source)
        {
            self.applied = None;
            self.cp.forget_etag();
        }
    }

    /// This root stops driving: report a leadership it held as lost.
    pub fn resign(&mut self) {
        if let Some(term) = self.election.as_ref().and_then(Election::held_term) {
            self.events.push(Event::LostLeadership {
                term,
                node: self.node_id.clone(),
                reason: crate::event::LossReason::NoLongerDriving,
            });
            self.outputs.push(Output::Metric(Metric::Leader(None)));
        }
        self.calls.clear();
    }

    fn send(
        &mut self,
        kind: CallKind,
        request: HttpRequest,
        lease_write: Option<(WriteKind, Instant)>,
        now: Now,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        self.seq += 1;
        let deadline = now.mono.plus(request.timeout + LOST_ANSWER_GRACE);
        if kind.is_storage() {
            self.outputs.push(Output::Metric(Metric::StorageRequest));
        }
        self.calls.insert(
            token,
            Pending {
                kind,
                deadline,
                sent: self.seq,
                lease_write,
            },
        );
        self.outputs.push(Output::Send(Call {
            token,
            kind,
            request,
        }));
    }

    /// After every input: credentials, a waiting import, the election and
    /// the export.
    fn drive(&mut self, now: Now) {
        let credential = self.store.as_mut().map(|s| s.credential_request(now));
        match credential {
            Some(Ok(Some(request))) => self.send(CallKind::Credential, request, None, now),
            Some(Err(error)) => self.credentials_failed(error),
            _ => {}
        }
        let ready = self
            .store
            .as_ref()
            .is_some_and(|s| s.credentials_ready(now));
        if ready && self.importer.credentials_ready() == ImportStep::RequestGrant {
            self.request_import();
        }
        self.drive_election(now, ready);
        self.drive_export(now, ready);
    }

    fn request_import(&mut self) {
        self.outputs.push(Output::RequestImport {
            max_attempts: IMPORT_ATTEMPTS,
        });
    }

    fn credentials_failed(&mut self, error: StorageError) {
        self.events.push(Event::CredentialsFailed {
            error: error.clone(),
        });
        if self.importer.credentials_failed() {
            self.events.push(Event::ImportFailed {
                url: self.import_url.clone(),
                error: ImportFailure::Credentials(error),
            });
        }
    }

    // ---- control plane ----

    fn on_poll(&mut self, response: HttpResponse, sent: Seq, now: Now) {
        let answer = self
            .cp
            .on_answer(response, self.applied.is_some(), &mut self.events);
        match answer {
            CpAnswer::Config {
                config,
                body,
                sha256,
            } => self.on_cp_config(config.revision, body, sha256, sent, now),
            CpAnswer::NotModified => {
                if let Some(e) = self.exporter.as_mut() {
                    e.confirm(sent);
                }
            }
            CpAnswer::Failed(_) => {
                let ready = self
                    .store
                    .as_ref()
                    .is_some_and(|s| s.credentials_ready(now));
                match self.importer.cp_failed(self.applied.is_none(), ready) {
                    ImportStep::RequestGrant => self.request_import(),
                    ImportStep::WaitForCredentials => {
                        self.events.push(Event::ImportWaitingForCredentials)
                    }
                    ImportStep::Nothing => {}
                }
            }
        }
    }

    fn on_cp_config(
        &mut self,
        revision: String,
        body: Vec<u8>,
        sha256: String,
        sent: Seq,
        now: Now,
    ) {
        self.cp_answered = true;
        if self.importer.cp_answered() {
            self.events.push(Event::ImportCancelled);
        }
        let unchanged = self
            .applied
            .as_ref()
            .is_some_and(|a| a.sha256 == sha256 && a.source == Source::ControlPlane);
        if let Some(e) = self.exporter.as_mut() {
            let candidate = Candidate {
                revision: revision.clone(),
                config: body.clone(),
                sha256: sha256.clone(),
                due: now.mono.plus(self.export_delay),
                fetched: sent,
            };
            // An unchanged config still refreshes what the exporter may
            // write: it is a newer CP answer than the stored object.
            e.offer(candidate, &mut self.events);
        }
        if unchanged {
            self.events.push(Event::CpUnchanged { revision });
            return;
        }
        self.events.push(Event::CpFetched {
            revision: revision.clone(),
        });
        self.applied = Some(Applied {
            source: Source::ControlPlane,
            sha256: sha256.clone(),
        });
        self.outputs.push(Output::Publish(PublishJob {
            source: Source::ControlPlane,
            revision,
            sha256,
            config: body,
        }));
    }

    // ---- import ----

    fn on_import(&mut self, response: HttpResponse) {
        self.importer.finished();
        let Some(store) = &self.store else { return };
        let opened = store
            .read_result(response)
            .map_err(ImportFailure::Storage)
            .and_then(|object| {
                envelope::open(&object.body, &self.version).map_err(ImportFailure::Envelope)
            });
        match opened {
            Err(error) => self.events.push(Event::ImportFailed {
                url: self.import_url.clone(),
                error,
            }),
            Ok(o) if self.applied.is_some() || self.cp_answered => {
                self.events.push(Event::ImportDiscarded {
                    revision: o.revision,
                })
            }
            Ok(o) => {
                self.events.push(Event::Imported {
                    revision: o.revision.clone(),
                    url: self.import_url.clone(),
                    exported_at: o.exported_at,
                    exporter: o.exporter,
                });
                self.applied = Some(Applied {
                    source: Source::Storage,
                    sha256: o.sha256.clone(),
                });
                self.outputs.push(Output::Publish(PublishJob {
                    source: Source::Storage,
                    revision: o.revision,
                    sha256: o.sha256,
                    config: o.config_bytes,
                }));
            }
        }
    }

    // ---- export ----

    fn drive_export(&mut self, now: Now, credentials_ready: bool) {
        let term = self.election.as_ref().and_then(|e| e.leader_term(now.mono));
        let (Some(store), Some(exporter), Some(term), true) =
            (&self.store, self.exporter.as_mut(), term, credentials_ready)
        else {
            return;
        };
        match exporter.drive(store, term, now, &mut self.events) {
            Some(ExportStep::Send(kind, request)) => self.send(kind, request, None, now),
            Some(ExportStep::NeedFresherCp) => self.cp.hurry(now.mono),
            None => {}
        }
    }

    fn on_export_read(&mut self, response: HttpResponse, seq: Seq, now: Now) {
        // The term this node holds or last held: a read answered after its
        // validity ran out is still compared with its own term.
        let my_term = self
            .election
            .as_ref()
            .and_then(Election::held_term)
            .unwrap_or(0);
        let (Some(store), Some(exporter)) = (&self.store, self.exporter.as_mut()) else {
            return;
        };
        let result = store.read_result(response);
        let verdict = exporter.on_read(result, my_term, seq, now.mono, &mut self.events);
        if let ReadVerdict::NewerTerm(stored_term) = verdict {
            if let Some(e) = self.election.as_mut() {
                e.stand_down(stored_term, &mut self.events);
            }
            self.react_to_election(now);
        }
    }

    fn on_export_write(&mut self, response: &HttpResponse, now: Now) {
        let (Some(store), Some(exporter)) = (&self.store, self.exporter.as_mut()) else {
            return;
        };
        let mut metrics = Vec::new();
        if response.status == 0 {
            // No answer: the write may or may not have happened.
            let error = store.read_result(response.clone()).err();
            let error = error.unwrap_or(StorageError::PreconditionFailed);
            exporter.abandoned(now.mono, error, &mut self.events);
        } else {
            exporter.on_write(store, response, now.mono, &mut self.events, &mut metrics);
        }
        self.outputs.extend(metrics.into_iter().map(Output::Metric));
    }

    // ---- election ----

    /// Runs the election once this exporter has something of the CP's.
    fn drive_election(&mut self, now: Now, credentials_ready: bool) {
        if self.exporter.is_none() || !self.cp_answered || !credentials_ready {
            return;
        }
        let node_id = self.node_id.clone();
        let settings = self.election_settings;
        let election = self
            .election
            .get_or_insert_with(|| Election::new(settings, node_id));
        if let Some((step, kind)) = election.poll(now, &mut self.events) {
            self.send_lease_step(step, kind, now);
        }
        self.react_to_election(now);
    }

    fn send_lease_step(&mut self, step: Step, kind: Option<WriteKind>, now: Now) {
        let Some(store) = &self.store else { return };
        let key = store.key(&self.version, LEASE_OBJECT);
        let (request, call) = match (step, kind) {
            (Step::Write { mode, record }, Some(kind)) => {
                let body = serde_json::to_vec(&record).unwrap_or_default();
                (
                    store.put(&key, body, &mode, now),
                    (CallKind::LeaseWrite, Some((kind, now.mono))),
                )
            }
            _ => (store.get(&key, now), (CallKind::LeaseRead, None)),
        };
        match request {
            Ok(request) => self.send(call.0, request, call.1, now),
            Err(error) => {
                // Let the election try again after its backoff.
                if let Some(election) = self.election.as_mut() {
                    match call.1 {
                        Some((kind, sent_at)) => {
                            election.on_write(kind, Err(error), sent_at, now, &mut self.events)
                        }
                        None => {
                            let _ = election.on_read(Err(error), now, &mut self.events);
                        }
                    }
                }
            }
        }
    }

    /// Follows the election's role changes: a new leader re-reads
    /// `config.json` before writing and writes the newest CP config it has.
    fn react_to_election(&mut self, now: Now) {
        let changes = self
            .election
            .as_mut()
            .map(Election::take_changes)
            .unwrap_or_default();
        for change in changes {
            match change {
                Change::BecameLeader { term } => {
                    self.outputs
                        .push(Output::Metric(Metric::Leader(Some(term))));
                    if let Some(e) = self.exporter.as_mut() {
                        e.became_leader(now.mono);
                    }
                }
                Change::LostLeadership { .. } => {
                    self.outputs.push(Output::Metric(Metric::Leader(None)));
                    if let Some(e) = self.exporter.as_mut() {
                        e.lost_leadership();
                    }
                }
                Change::Failed {
                    doing,
                    error,
                    retry_in,
                } => self.events.push(Event::ElectionFailed {
                    revision: self.exporter.as_ref().and_then(Exporter::latest_revision),
                    error,
                    doing,
                    retry_in,
                }),
            }
        }
    }
}

/// A status-0 answer: no answer at all, with the reason.
fn no_answer(detail: String) -> HttpResponse {
    HttpResponse {
        status: 0,
        headers: Vec::new(),
        body: detail.into_bytes(),
    }
}
