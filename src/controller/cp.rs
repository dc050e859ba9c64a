//! The CP poller: one `GET` per poll interval, `If-None-Match` once a
//! config was applied, and what each answer means.

use crate::clock::Instant;
use crate::envelope::sha256_hex;
use crate::event::{CpFailure, Event};
use crate::gateway::GatewayConfig;
use crate::http::{HttpRequest, HttpResponse};
use crate::settings::ControlPlaneSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollState {
    /// The next poll goes out at this instant.
    Due(Instant),
    /// A poll is out; the one after it is due at this instant.
    InFlight { next: Instant },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Availability {
    Unknown,
    Up,
    Down,
}

/// What a CP answer means for the rest of the controller.
#[derive(Debug)]
pub enum CpAnswer {
    /// A valid config; `body` is the JSON exactly as served (trimmed of
    /// surrounding whitespace), `sha256` its digest.
    Config {
        config: GatewayConfig,
        body: Vec<u8>,
        sha256: String,
    },
    /// 304: the config last applied is still current.
    NotModified,
    /// Anything else: the CP is unavailable.
    Failed(CpFailure),
}

#[derive(Debug)]
pub struct CpPoller {
    settings: ControlPlaneSettings,
    etag: Option<String>,
    state: PollState,
    availability: Availability,
}

impl CpPoller {
    /// The first poll is due at once.
    pub fn new(settings: ControlPlaneSettings) -> Self {
        CpPoller {
            settings,
            etag: None,
            state: PollState::Due(Instant::ZERO),
            availability: Availability::Unknown,
        }
    }

    /// The poll to send now, if one is due. Keeps the schedule (due +
    /// interval) so tick granularity does not stretch the interval, and
    /// restarts it after a long gap.
    pub fn poll(&mut self, now: Instant) -> Option<HttpRequest> {
        let PollState::Due(due) = self.state else {
            return None;
        };
        if now < due {
            return None;
        }
        let next = due.plus(self.settings.poll_interval);
        let next = if next > now {
            next
        } else {
            now.plus(self.settings.poll_interval)
        };
        self.state = PollState::InFlight { next };
        let headers = self
            .etag
            .iter()
            .map(|e| ("if-none-match".to_string(), e.clone()))
            .collect();
        Some(HttpRequest {
            cluster: self.settings.cluster.clone(),
            method: "GET".into(),
            path: self.settings.path.clone(),
            authority: self.settings.authority.clone(),
            headers,
            body: None,
            timeout: self.settings.timeout,
        })
    }

    /// When the next poll is due (`None` while one is out).
    pub fn next_due(&self) -> Option<Instant> {
        match self.state {
            PollState::Due(d) => Some(d),
            PollState::InFlight { .. } => None,
        }
    }

    /// Sends the next poll at the next tick (a new leader wants a CP
    /// answer newer than what it just read from the store).
    pub fn hurry(&mut self, now: Instant) {
        if let PollState::Due(due) = &mut self.state {
            *due = (*due).min(now);
        }
    }

    /// Forgets the ETag, so that the next answer is a full config (after
    /// a publish that failed).
    pub fn forget_etag(&mut self) {
        self.etag = None;
    }

    /// The answer to the poll. `have_config` says whether a config is
    /// applied (a 304 means something only then).
    pub fn on_answer(
        &mut self,
        response: HttpResponse,
        have_config: bool,
        events: &mut Vec<Event>,
    ) -> CpAnswer {
        if let PollState::InFlight { next } = self.state {
            self.state = PollState::Due(next);
        }
        let transport = response.transport_error(self.settings.max_config_bytes);
        let answer = match (transport, response.status) {
            (Some(e), _) => CpAnswer::Failed(CpFailure::Transport(e)),
            (None, 200) => {
                let body = trim_json(&response.body);
                match GatewayConfig::parse(body) {
                    Ok(config) => {
                        self.etag = response.header("etag").map(str::to_string);
                        CpAnswer::Config {
                            config,
                            sha256: sha256_hex(body),
                            body: body.to_vec(),
                        }
                    }
                    Err(e) => CpAnswer::Failed(CpFailure::Unusable(e)),
                }
            }
            (None, 304) if have_config => CpAnswer::NotModified,
            (None, status) => CpAnswer::Failed(CpFailure::Status {
                status,
                excerpt: response.body_excerpt(200),
            }),
        };
        let was = self.availability;
        match &answer {
            CpAnswer::Config { .. } => self.availability = Availability::Up,
            CpAnswer::NotModified => {
                if was != Availability::Up {
                    events.push(Event::CpBack);
                }
                self.availability = Availability::Up;
            }
            CpAnswer::Failed(reason) => {
                events.push(Event::CpUnavailable {
                    reason: reason.clone(),
                    again: was == Availability::Down,
                });
                self.availability = Availability::Down;
            }
        }
        answer
    }
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
