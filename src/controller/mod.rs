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
use crate::envelope::{self, Trust};
use crate::event::{Event, ImportFailure};
use crate::http::{HttpRequest, HttpResponse};
use crate::keys::SnapshotKeys;
use crate::process::{ImportRefusal, PublishJob};
use crate::published::{Meta, Source};
use crate::rng::NonceSource;
use crate::settings::{ElectionSettings, Settings};
use crate::status::{ConfigSource, State, StatusRecord};
use crate::storage::{ObjectStore, StorageError};
use cp::{CpAnswer, CpPoller};
use exporter::{Candidate, ExportStep, Exporter, ReadVerdict, Seq};
use importer::{ImportState, ImportStep, Importer, Phase, MAX_LIST_PAGES};
use std::collections::HashMap;
use std::time::Duration;

/// This build's version: the object path segment and the envelope's
/// `version`. Importers refuse configs exported by another version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name of the stored object under `<prefix>/<version>/`.
pub const CONFIG_OBJECT: &str = "config.json";

/// How long past its storage timeout an earlier driver's import attempt
/// is taken to have ended (see [`Controller::new`]).
const IN_FLIGHT_SLACK: Duration = Duration::from_secs(1);

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
    /// Import attempts this process already started.
    pub import_attempts: u32,
    /// An earlier driver's attempt may still be out.
    pub import_in_flight: bool,
    /// The status the earlier driver published (readiness), if any.
    pub status: Option<StatusRecord>,
}

/// What the controller wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Dispatch this call; report its end with its token.
    Send(Call),
    /// Publish this config to every worker (through the coordinator).
    Publish(PublishJob),
    /// Ask the process for an import attempt; answer with
    /// [`Controller::import_granted`] or [`Controller::import_refused`].
    RequestImport {
        max_attempts: Option<u32>,
    },
    /// The granted attempt is over (the process may grant another).
    EndImport,
    /// The status for readiness probes changed: publish it.
    Status(StatusRecord),
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
    /// The controller's tick count when it was sent, and how many ticks
    /// must pass as well before it counts as lost.
    sent_tick: u64,
    grace_ticks: u64,
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
    /// The process's import attempts so far (from the grants).
    import_attempts: u32,
    status: StatusRecord,
    /// The time of the last input, for callbacks that carry none.
    last_now: Now,
    /// The last `config_age_seconds` reported.
    reported_age: Option<u64>,
    /// Ticks seen: a second measure of elapsed time for the decisions a
    /// clock jumping forward must not hasten (a call given up as lost
    /// while the host may still have it out; see [`crate::clock`]).
    ticks: u64,
    /// No import attempt before this tick (an earlier driver's may be out).
    import_hold_tick: Option<u64>,
    /// `Some` when export is on.
    exporter: Option<Exporter>,
    /// What an import accepts: signatures, trusted keys, decryption keys.
    snapshot: SnapshotKeys,
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
        seed: u64,
        nonces: Option<NonceSource>,
        now: Now,
    ) -> Self {
        let store = settings.storage.clone().map(ObjectStore::new);
        let import_url = store
            .as_ref()
            .map(|s| s.url(&s.key(VERSION, CONFIG_OBJECT)))
            .unwrap_or_default();
        let exporter = match (&store, settings.export) {
            (Some(s), true) => Some(Exporter::new(
                s,
                VERSION,
                &node_id,
                settings.snapshot.clone(),
                nonces,
            )),
            _ => None,
        };
        let import_on = settings.import && store.is_some();
        let policy = settings.import_policy;
        let used = inherited.cp_answered
            || policy
                .max_attempts
                .is_some_and(|m| inherited.import_attempts >= m);
        // An earlier driver's attempt went out before it lost its lease,
        // and ends by its timeout: none starts before that.
        let wait_until = match (&settings.storage, inherited.import_in_flight) {
            (Some(s), true) => Some(now.mono.plus(s.timeout + IN_FLIGHT_SLACK)),
            _ => None,
        };
        let mut c = Controller {
            node_id,
            version: VERSION.to_string(),
            store,
            export_delay: settings.export_delay,
            cp: CpPoller::new(settings.control_plane.clone()),
            importer: Importer::new(import_on, used, wait_until, policy, seed),
            import_url,
            import_attempts: inherited.import_attempts,
            status: inherited.status.unwrap_or_default(),
            last_now: now,
            reported_age: None,
            ticks: 0,
            import_hold_tick: wait_until.and(
                settings
                    .storage
                    .as_ref()
                    .map(|s| ticks_for(s.timeout + IN_FLIGHT_SLACK)),
            ),
            exporter,
            snapshot: settings.snapshot.clone(),
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
        if let Some(store) = &c.store {
            c.events.push(store.transport_notice());
            c.events.push(Event::CredentialSource {
                source: store.credential_source(),
            });
        }
        // Signatures stop forgeries, not replays of an old genuine
        // snapshot: only an age limit bounds those.
        if import_on && !used && c.snapshot.require_signature && policy.max_age.is_none() {
            c.events.push(Event::ReplayUnbounded);
        }
        // Leadership is this driver's own: it starts as a follower.
        if c.status.leader || c.status.term.is_some() {
            c.set_status(now, |s| {
                s.leader = false;
                s.term = None;
            });
        }
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
            .chain(self.importer.next_due())
            .min()
    }

    /// Advances timers: gives up on answers that never came, polls the CP
    /// when due, renews credentials, runs the election and the export.
    pub fn tick(&mut self, now: Now) {
        self.last_now = now;
        self.ticks += 1;
        self.report_age(now);
        let ticks = self.ticks;
        let lost: Vec<Token> = self
            .calls
            .iter()
            .filter(|(_, p)| now.mono >= p.deadline && ticks >= p.sent_tick + p.grace_ticks)
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
        self.last_now = now;
        let Some(pending) = self.calls.remove(&token) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        // The store refused our credentials as such (a revoked or expired
        // access token): fetch a new one before the next request.
        if pending.kind.is_storage() {
            if let Some(store) = self.store.as_mut() {
                store.check_credentials_refused(&response);
            }
        }
        match pending.kind {
            CallKind::CpPoll => self.on_poll(response, pending.sent, now),
            CallKind::Import => self.on_import(response, now),
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
                    match store.on_credential_response(response, now) {
                        Err(error) => self.credentials_failed(error),
                        Ok(Some(expires_at)) => {
                            self.events.push(Event::CredentialsObtained { expires_at })
                        }
                        Ok(None) => {}
                    }
                }
            }
        }
        self.drive(now);
    }

    /// The process granted its `attempt`-th import attempt.
    pub fn import_granted(&mut self, attempt: u32, now: Now) {
        self.last_now = now;
        self.import_attempts = self.import_attempts.max(attempt);
        if !self.importer.granted() {
            self.outputs.push(Output::EndImport);
            return;
        }
        // Granted means the CP had not answered the process; this
        // controller's own view is checked too.
        if self.cp_answered || self.applied.is_some() {
            self.importer.applied();
            self.outputs.push(Output::EndImport);
            self.events.push(Event::ImportCancelled);
            return;
        }
        self.outputs.push(Output::Metric(Metric::ImportAttempt));
        self.events.push(Event::ImportStarted {
            url: self.import_url.clone(),
        });
        let version = self.version.clone();
        self.import_read(&version, now);
    }

    /// The process refused the import.
    pub fn import_refused(&mut self, refusal: ImportRefusal) {
        let waiting = self.importer.state() == &ImportState::AwaitingGrant;
        self.importer.refused();
        match refusal {
            ImportRefusal::CpAnswered if waiting => self.events.push(Event::ImportCancelled),
            ImportRefusal::Exhausted if waiting => self.events.push(Event::ImportGaveUp {
                attempts: self.import_attempts,
            }),
            _ => {}
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
        let grace_ticks = ticks_for(request.timeout + LOST_ANSWER_GRACE);
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
                sent_tick: self.ticks,
                grace_ticks,
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
        let held = self.import_hold_tick.is_some_and(|t| self.ticks < t);
        let step = match held {
            true => ImportStep::Nothing,
            false => self.importer.poll(now.mono, self.applied.is_none(), ready),
        };
        match step {
            ImportStep::RequestGrant => self.request_import(),
            ImportStep::WaitForCredentials => self.events.push(Event::ImportWaitingForCredentials),
            ImportStep::Nothing => {}
        }
        self.drive_election(now, ready);
        self.drive_export(now, ready);
    }

    fn request_import(&mut self) {
        self.outputs.push(Output::RequestImport {
            max_attempts: self.importer.policy().max_attempts,
        });
    }

    /// No access token could be had: an import waiting for one counts as
    /// a failed attempt and is retried after the backoff (the token cache
    /// retries on its own meanwhile).
    fn credentials_failed(&mut self, error: StorageError) {
        self.events.push(Event::CredentialsFailed {
            error: error.clone(),
        });
        if self.importer.state() == &ImportState::AwaitingCredentials {
            let now = self.last_now;
            self.import_failed(ImportFailure::Credentials(error), false, now);
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
            } => self.on_cp_config(config, body, sha256, sent, now),
            CpAnswer::NotModified => {
                self.outputs.push(Output::Metric(Metric::CpReachable(true)));
                if let Some(e) = self.exporter.as_mut() {
                    e.confirm(sent);
                }
                if self
                    .applied
                    .as_ref()
                    .is_some_and(|a| a.source == Source::ControlPlane)
                {
                    self.set_status(now, |s| s.fresh_at_ms = Some(now.wall.as_millis()));
                }
            }
            CpAnswer::Failed(_) => {
                self.outputs
                    .push(Output::Metric(Metric::CpReachable(false)));
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
        config: crate::gateway::GatewayConfig,
        body: Vec<u8>,
        sha256: String,
        sent: Seq,
        now: Now,
    ) {
        let revision = config.revision.clone();
        self.cp_answered = true;
        self.outputs.push(Output::Metric(Metric::CpReachable(true)));
        if self.importer.cp_answered() {
            self.events.push(Event::ImportCancelled);
        }
        let fresh = now.wall.as_millis();
        let status_revision = revision.clone();
        self.set_status(now, |s| {
            s.state = State::Serving;
            s.source = Some(ConfigSource::ControlPlane);
            s.revision = Some(status_revision);
            s.version = Some(VERSION.to_string());
            s.exported_at = None;
            s.fresh_at_ms = Some(fresh);
        });
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
        self.outputs.push(Output::Metric(Metric::ConfigSource(
            ConfigSource::ControlPlane.gauge(),
        )));
        self.applied = Some(Applied {
            source: Source::ControlPlane,
            sha256: sha256.clone(),
        });
        self.outputs.push(Output::Publish(PublishJob::new(
            Source::ControlPlane,
            revision,
            sha256,
            body,
            &config,
        )));
    }

    // ---- import ----

    /// Sends the read of `version`'s snapshot, as part of the attempt.
    fn import_read(&mut self, version: &str, now: Now) {
        let Some(store) = &self.store else { return };
        match store.get(&store.key(version, CONFIG_OBJECT), now) {
            Ok(request) => self.send(CallKind::Import, request, None, now),
            Err(error) => self.import_failed(ImportFailure::Storage(error), true, now),
        }
    }

    /// Sends the listing of the version folders, page `page`.
    fn import_list(&mut self, page: Option<&str>, now: Now) {
        let Some(store) = &self.store else { return };
        match store.list_versions(page, now) {
            Ok(request) => self.send(CallKind::Import, request, None, now),
            Err(error) => self.import_failed(ImportFailure::ListFailed(error), true, now),
        }
    }

    /// An answer within an import attempt: what it means depends on the
    /// attempt's phase (own version, listing, an older version).
    fn on_import(&mut self, response: HttpResponse, now: Now) {
        let ImportState::InFlight(phase) = self.importer.state().clone() else {
            return;
        };
        if self.cp_answered || self.applied.is_some() {
            // The CP answered while the attempt was out: it is over.
            if let Some(Ok(o)) = self.open_answer(response, &self.version.clone(), now.wall) {
                self.events.push(Event::ImportDiscarded {
                    revision: o.revision,
                });
            }
            self.importer.applied();
            self.outputs.push(Output::EndImport);
            return;
        }
        let Some(store) = &self.store else { return };
        let policy = *self.importer.policy();
        match phase {
            Phase::Own => {
                let version = self.version.clone();
                match store.read_result(response) {
                    Err(StorageError::NotFound { .. }) if policy.older_versions => {
                        self.events.push(Event::ImportListing {
                            url: store.list_url(),
                        });
                        self.importer.advance(Phase::Listing {
                            names: Vec::new(),
                            pages: 1,
                        });
                        self.import_list(None, now);
                    }
                    Err(StorageError::NotFound { .. }) => {
                        self.import_failed(ImportFailure::NotFound { version }, true, now)
                    }
                    Err(error) => self.import_failed(ImportFailure::Storage(error), true, now),
                    Ok(object) => match self.open_object(object, &version, now.wall) {
                        Ok(o) => self.apply_import(o, &version, now),
                        Err(error) => self.import_failed(error, true, now),
                    },
                }
            }
            Phase::Listing { mut names, pages } => match store.list_result(response) {
                Err(error) => self.import_failed(ImportFailure::ListFailed(error), true, now),
                Ok((more, next)) => {
                    names.extend(more);
                    match next {
                        Some(token) if pages < MAX_LIST_PAGES => {
                            self.importer.advance(Phase::Listing {
                                names,
                                pages: pages + 1,
                            });
                            self.import_list(Some(&token), now);
                        }
                        _ => {
                            let candidates = crate::version::older_than(&self.version, &names);
                            match candidates.first().cloned() {
                                None => self.import_failed(
                                    ImportFailure::NoSnapshot {
                                        version: self.version.clone(),
                                        older_tried: 0,
                                    },
                                    true,
                                    now,
                                ),
                                Some(first) => {
                                    self.importer.advance(Phase::Older {
                                        candidates,
                                        index: 0,
                                    });
                                    self.import_read(&first, now);
                                }
                            }
                        }
                    }
                }
            },
            Phase::Older { candidates, index } => {
                let Some(version) = candidates.get(index).cloned() else {
                    return;
                };
                let opened = store
                    .read_result(response)
                    .map_err(ImportFailure::Storage)
                    .and_then(|object| self.open_object(object, &version, now.wall));
                match opened {
                    Ok(o) => self.apply_import(o, &version, now),
                    // The store did not answer this read: the attempt
                    // fails (and is retried) rather than settle for an
                    // even older snapshot.
                    Err(ImportFailure::Storage(error)) if transient(&error) => {
                        self.import_failed(ImportFailure::Storage(error), true, now)
                    }
                    Err(error) => {
                        self.events
                            .push(Event::ImportVersionSkipped { version, error });
                        match candidates.get(index + 1).cloned() {
                            Some(next) => {
                                self.importer.advance(Phase::Older {
                                    candidates,
                                    index: index + 1,
                                });
                                self.import_read(&next, now);
                            }
                            None => self.import_failed(
                                ImportFailure::NoSnapshot {
                                    version: self.version.clone(),
                                    older_tried: candidates.len(),
                                },
                                true,
                                now,
                            ),
                        }
                    }
                }
            }
        }
    }

    /// Opens a read object as a snapshot of `version`, refusing one that is
    /// not JSON (named by content type and first bytes) or too old.
    fn open_object(
        &self,
        object: crate::storage::Object,
        version: &str,
        wall: crate::time::Timestamp,
    ) -> Result<envelope::Opened, ImportFailure> {
        let is_json = object
            .body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if !is_json {
            let answer = HttpResponse {
                status: 200,
                headers: object
                    .content_type
                    .iter()
                    .map(|t| ("content-type".to_string(), t.clone()))
                    .collect(),
                body: object.body,
            };
            return Err(ImportFailure::NotJson {
                description: answer.describe_body(),
            });
        }
        let trust = Trust {
            require_signature: self.snapshot.require_signature,
            require_encryption: self.snapshot.encrypt,
            trusted: &self.snapshot.trusted,
            decryption: &self.snapshot.encryption,
        };
        let opened =
            envelope::open(&object.body, version, &trust).map_err(ImportFailure::Envelope)?;
        if let Some(limit) = self.importer.policy().max_age {
            let exported = crate::time::Timestamp::parse_rfc3339(&opened.exported_at);
            // A snapshot whose export time cannot be read counts as too old.
            let age_s = exported.map_or(u64::MAX, |t| wall.since(t).as_secs());
            if age_s > limit.as_secs() {
                return Err(ImportFailure::TooOld {
                    age_s,
                    limit_s: limit.as_secs(),
                });
            }
        }
        Ok(opened)
    }

    /// For a discarded answer: the snapshot it held, if any.
    fn open_answer(
        &self,
        response: HttpResponse,
        version: &str,
        wall: crate::time::Timestamp,
    ) -> Option<Result<envelope::Opened, ImportFailure>> {
        let object = self.store.as_ref()?.read_result(response).ok()?;
        Some(self.open_object(object, version, wall))
    }

    fn apply_import(&mut self, o: envelope::Opened, version: &str, now: Now) {
        self.importer.applied();
        self.outputs.push(Output::EndImport);
        let url = self
            .store
            .as_ref()
            .map(|s| s.url(&s.key(version, CONFIG_OBJECT)))
            .unwrap_or_default();
        self.events.push(Event::Imported {
            revision: o.revision.clone(),
            version: version.to_string(),
            url,
            exported_at: o.exported_at.clone(),
            exporter: o.exporter,
            signed_by: o.signed_by,
            encrypted_with: o.encrypted_with,
        });
        self.applied = Some(Applied {
            source: Source::Storage,
            sha256: o.sha256.clone(),
        });
        let fresh_at_ms =
            crate::time::Timestamp::parse_rfc3339(&o.exported_at).map(|t| t.as_millis());
        self.set_status(now, |s| {
            s.state = State::Serving;
            s.source = Some(ConfigSource::Storage);
            s.revision = Some(o.revision.clone());
            s.version = Some(version.to_string());
            s.exported_at = Some(o.exported_at.clone());
            s.fresh_at_ms = fresh_at_ms;
        });
        self.outputs.push(Output::Metric(Metric::ConfigSource(
            ConfigSource::Storage.gauge(),
        )));
        self.outputs.push(Output::Publish(PublishJob::new(
            Source::Storage,
            o.revision,
            o.sha256,
            o.config_bytes,
            &o.config,
        )));
    }

    /// An attempt applied nothing. `granted`: it held the process's grant,
    /// which it now gives back.
    fn import_failed(&mut self, error: ImportFailure, granted: bool, now: Now) {
        if granted {
            // An attempt that went out and applied nothing.
            self.outputs.push(Output::EndImport);
            self.outputs.push(Output::Metric(Metric::ImportFailure));
        }
        let retry_in = self.importer.failed(now.mono, self.import_attempts);
        self.events.push(Event::ImportFailed {
            url: self.import_url.clone(),
            error,
            retry_in,
        });
        if retry_in.is_none() {
            self.events.push(Event::ImportGaveUp {
                attempts: self.import_attempts,
            });
        }
        if self.applied.is_none() {
            self.set_status(now, |s| s.state = State::ImportFailed);
        }
    }

    /// Changes the readiness status; publishes it if it changed, and the
    /// age gauge with it (not a tick later).
    fn set_status(&mut self, now: Now, change: impl FnOnce(&mut StatusRecord)) {
        let mut next = self.status.clone();
        change(&mut next);
        if next != self.status {
            self.status = next.clone();
            self.outputs.push(Output::Status(next));
            self.report_age(now);
        }
    }

    /// `config_age_seconds`, when it changed.
    fn report_age(&mut self, now: Now) {
        let age = self
            .status
            .age_s(now.wall)
            .filter(|_| self.applied.is_some());
        if let Some(age) = age.filter(|a| self.reported_age != Some(*a)) {
            self.reported_age = Some(age);
            self.outputs.push(Output::Metric(Metric::ConfigAge(age)));
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
                let body = record.encode();
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
                    self.set_status(now, |s| {
                        s.leader = true;
                        s.term = Some(term);
                    });
                    if let Some(e) = self.exporter.as_mut() {
                        e.became_leader(now.mono);
                    }
                }
                Change::LostLeadership { .. } => {
                    self.outputs.push(Output::Metric(Metric::Leader(None)));
                    self.set_status(now, |s| {
                        s.leader = false;
                        s.term = None;
                    });
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

/// How many root ticks span `d`, rounded up.
fn ticks_for(d: Duration) -> u64 {
    let tick = crate::process::TICK.as_millis().max(1);
    u64::try_from(d.as_millis().div_ceil(tick)).unwrap_or(u64::MAX)
}

/// A store failure that says nothing about the object: it may answer
/// differently the next time.
fn transient(e: &StorageError) -> bool {
    match e {
        StorageError::Transport(_) | StorageError::CredentialsPending => true,
        StorageError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
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
