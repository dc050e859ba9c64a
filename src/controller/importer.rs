//! The importer: when a process imports, what one attempt reads, and when
//! it tries again.
//!
//! ```text
//! Armed ──CP failed, nothing applied──▶ (AwaitingCredentials) ──▶ AwaitingGrant ──granted──▶ InFlight
//!   ▲                                                                                        │
//!   │          Backoff { until } ◀──── attempt failed (retry_initial·2ⁿ, jittered, ≤ retry_max) ┘
//!   │                 │ due                                 attempt applied / CP answered /
//!   └─────────────────┘                                     max_attempts used ──▶ Done
//! ```
//!
//! One attempt reads `<prefix>/<version>/config.json`; when that is
//! absent and `older_versions` is on, it lists the version folders and
//! reads the newest older version's snapshot that opens and validates,
//! skipping the others (never a newer version). The grant comes from the
//! process's driver record ([`crate::process::Coordinator`]), which counts
//! the attempts and refuses once the CP answered, so no root of the
//! process sends an import after that, and at most one is out at a time.

use crate::clock::Instant;
use crate::rng::Rng;
use crate::settings::ImportPolicy;
use std::time::Duration;

/// Listing pages read at most per attempt (a prefix holds a few versions).
pub const MAX_LIST_PAGES: u32 = 20;

/// Where an attempt stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading this build's own version.
    Own,
    /// Listing the version folders; `names` so far.
    Listing { names: Vec<String>, pages: u32 },
    /// Reading `candidates[index]` (older versions, newest first).
    Older {
        candidates: Vec<String>,
        index: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportState {
    Disabled,
    /// Will import if the CP fails before anything was applied.
    Armed,
    /// The next attempt may start at this instant.
    Backoff {
        until: Instant,
    },
    /// The import waits for the store's access token.
    AwaitingCredentials,
    /// Asked the process for an attempt.
    AwaitingGrant,
    InFlight(Phase),
    /// Applied, no longer needed, or out of attempts: never again.
    Done,
}

/// What the router should do after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportStep {
    Nothing,
    /// Report that the import waits for credentials.
    WaitForCredentials,
    /// Ask the coordinator for the process's grant.
    RequestGrant,
}

#[derive(Debug)]
pub struct Importer {
    state: ImportState,
    policy: ImportPolicy,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
    rng: Rng,
}

impl Importer {
    /// `enabled`: import on and storage set; `used`: the process is done
    /// with importing (the CP answered it, or its attempts are used up).
    /// `wait_until`: an earlier driver's attempt may still be out until
    /// then, so none starts before.
    pub fn new(
        enabled: bool,
        used: bool,
        wait_until: Option<Instant>,
        policy: ImportPolicy,
        seed: u64,
    ) -> Self {
        let state = match (enabled, used, wait_until) {
            (false, _, _) => ImportState::Disabled,
            (true, true, _) => ImportState::Done,
            (true, false, Some(until)) => ImportState::Backoff { until },
            (true, false, None) => ImportState::Armed,
        };
        Importer {
            state,
            policy,
            failures: 0,
            rng: Rng::new(seed),
        }
    }

    pub fn state(&self) -> &ImportState {
        &self.state
    }

    pub fn policy(&self) -> &ImportPolicy {
        &self.policy
    }

    /// When the next attempt is due, while waiting for one.
    pub fn next_due(&self) -> Option<Instant> {
        match self.state {
            ImportState::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// The CP failed. Imports only when nothing is applied yet.
    pub fn cp_failed(&mut self, nothing_applied: bool, credentials_ready: bool) -> ImportStep {
        if self.state != ImportState::Armed || !nothing_applied {
            return ImportStep::Nothing;
        }
        self.ask(credentials_ready)
    }

    /// Time passed: a due retry asks again.
    pub fn poll(
        &mut self,
        now: Instant,
        nothing_applied: bool,
        credentials_ready: bool,
    ) -> ImportStep {
        match self.state {
            ImportState::Backoff { until } if now >= until && nothing_applied => {
                self.ask(credentials_ready)
            }
            ImportState::AwaitingCredentials if credentials_ready => self.ask(true),
            _ => ImportStep::Nothing,
        }
    }

    fn ask(&mut self, credentials_ready: bool) -> ImportStep {
        if credentials_ready {
            self.state = ImportState::AwaitingGrant;
            ImportStep::RequestGrant
        } else {
            self.state = ImportState::AwaitingCredentials;
            ImportStep::WaitForCredentials
        }
    }

    /// The CP answered: nothing not yet sent ever will be. Returns whether
    /// an import was waiting (to report its cancellation).
    pub fn cp_answered(&mut self) -> bool {
        let waiting = matches!(
            self.state,
            ImportState::AwaitingCredentials
                | ImportState::AwaitingGrant
                | ImportState::Backoff { .. }
        );
        if !matches!(self.state, ImportState::Disabled | ImportState::InFlight(_)) {
            self.state = ImportState::Done;
        }
        waiting
    }

    /// The process granted an attempt: whether to send it now.
    pub fn granted(&mut self) -> bool {
        let send = self.state == ImportState::AwaitingGrant;
        if send {
            self.state = ImportState::InFlight(Phase::Own);
        }
        send
    }

    /// The process refused: no more attempts.
    pub fn refused(&mut self) {
        if self.state == ImportState::AwaitingGrant {
            self.state = ImportState::Done;
        }
    }

    /// The attempt moves on to its next read.
    pub fn advance(&mut self, phase: Phase) {
        if matches!(self.state, ImportState::InFlight(_)) {
            self.state = ImportState::InFlight(phase);
        }
    }

    /// The attempt applied a config: done for good.
    pub fn applied(&mut self) {
        self.state = ImportState::Done;
    }

    /// The attempt failed (or its answer never came). Returns the wait
    /// before the next one, or `None` when `attempts` (the process's
    /// count, this one included) used up `max_attempts`.
    pub fn failed(&mut self, now: Instant, attempts: u32) -> Option<Duration> {
        if !matches!(
            self.state,
            ImportState::InFlight(_) | ImportState::AwaitingCredentials
        ) {
            return None;
        }
        if self.policy.max_attempts.is_some_and(|m| attempts >= m) {
            self.state = ImportState::Done;
            return None;
        }
        let delay = self.backoff();
        self.state = ImportState::Backoff {
            until: now.plus(delay),
        };
        Some(delay)
    }

    /// `retry_initial · 2^failures`, at most `retry_max`, then "equal
    /// jitter": a random point in its upper half, so that a fleet started
    /// together does not retry in step.
    fn backoff(&mut self) -> Duration {
        let doubling = 1u32 << self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let full = self
            .policy
            .retry_initial
            .saturating_mul(doubling)
            .min(self.policy.retry_max);
        let half = full / 2;
        let span = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = match span {
            0 => 0,
            s => self.rng.next_u64() % (s + 1),
        };
        half + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: Option<u32>) -> ImportPolicy {
        ImportPolicy {
            max_attempts,
            ..ImportPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut i = Importer::new(true, false, None, policy(None), 7);
        assert_eq!(i.cp_failed(true, true), ImportStep::RequestGrant);
        let mut now = Instant::ZERO;
        let mut waits = Vec::new();
        for attempt in 1..=8 {
            assert!(i.granted());
            let wait = i.failed(now, attempt).unwrap();
            waits.push(wait);
            let early = now.plus(wait).minus(Duration::from_millis(1));
            assert_eq!(i.poll(early, true, true), ImportStep::Nothing);
            now = now.plus(wait);
            assert_eq!(i.poll(now, true, true), ImportStep::RequestGrant);
        }
        let full = [1, 2, 4, 8, 16, 30, 30, 30];
        for (w, f) in waits.iter().zip(full) {
            let f = Duration::from_secs(f);
            assert!(*w >= f / 2 && *w <= f, "{w:?} not in [{:?}, {f:?}]", f / 2);
        }
        // Jittered: not all at the same fraction.
        let fractions: Vec<u128> = waits
            .iter()
            .zip(full)
            .map(|(w, f)| w.as_millis() * 100 / (f as u128 * 1000))
            .collect();
        assert!(fractions.windows(2).any(|p| p[0] != p[1]), "{fractions:?}");
    }

    #[test]
    fn max_attempts_ends_the_retries() {
        let mut i = Importer::new(true, false, None, policy(Some(2)), 1);
        assert_eq!(i.cp_failed(true, true), ImportStep::RequestGrant);
        assert!(i.granted());
        let wait = i.failed(Instant::ZERO, 1).unwrap();
        assert_eq!(
            i.poll(Instant::ZERO.plus(wait), true, true),
            ImportStep::RequestGrant
        );
        assert!(i.granted());
        assert_eq!(i.failed(Instant::ZERO.plus(wait), 2), None);
        assert_eq!(i.state(), &ImportState::Done);
    }

    #[test]
    fn the_cp_answer_cancels_everything_not_sent() {
        for state in ["backoff", "credentials", "grant"] {
            let mut i = Importer::new(true, false, None, policy(None), 1);
            match state {
                "backoff" => {
                    i.cp_failed(true, true);
                    i.granted();
                    i.failed(Instant::ZERO, 1);
                }
                "credentials" => {
                    assert_eq!(i.cp_failed(true, false), ImportStep::WaitForCredentials);
                }
                _ => {
                    i.cp_failed(true, true);
                }
            }
            assert!(i.cp_answered(), "{state}");
            assert_eq!(i.state(), &ImportState::Done);
            assert_eq!(
                i.poll(Instant::from_millis(u64::MAX / 2), true, true),
                ImportStep::Nothing
            );
            assert!(!i.granted());
        }
    }

    #[test]
    fn an_earlier_drivers_attempt_is_waited_for() {
        let until = Instant::from_millis(6_000);
        let mut i = Importer::new(true, false, Some(until), policy(None), 1);
        assert_eq!(i.cp_failed(true, true), ImportStep::Nothing);
        assert_eq!(
            i.poll(Instant::from_millis(5_999), true, true),
            ImportStep::Nothing
        );
        assert_eq!(i.poll(until, true, true), ImportStep::RequestGrant);
        // A config applied meanwhile: no retry.
        let mut i = Importer::new(true, false, Some(until), policy(None), 1);
        assert_eq!(i.poll(until, false, true), ImportStep::Nothing);
    }
}
