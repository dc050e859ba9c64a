//! The importer's states: when the one import of a process may be asked
//! for, sent, or no longer.
//!
//! ```text
//! Armed ──CP failed, nothing applied──▶ AwaitingCredentials ──token──▶ AwaitingGrant
//!   │                                          │                           │ granted
//!   │                 CP answered (any state before InFlight)              ▼
//!   └──────────────────────────────▶ Done ◀──────── answer ─────────── InFlight
//! ```
//!
//! The grant comes from the process's driver record
//! ([`crate::process::Coordinator`]): it refuses once the process imported
//! or the CP answered, so no root of the process ever sends a second
//! import, or one after the CP answered.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportState {
    Disabled,
    /// Will import if the CP fails before anything was applied.
    Armed,
    /// The CP failed; the import waits for the store's access token.
    AwaitingCredentials,
    /// Asked the process for its one import.
    AwaitingGrant,
    InFlight,
    /// Done, refused, or no longer needed: never again in this process.
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
}

impl Importer {
    /// `enabled`: import on and storage set; `used`: the process already
    /// imported or the CP answered it (from the driver record).
    pub fn new(enabled: bool, used: bool) -> Self {
        let state = match (enabled, used) {
            (false, _) => ImportState::Disabled,
            (true, true) => ImportState::Done,
            (true, false) => ImportState::Armed,
        };
        Importer { state }
    }

    pub fn state(&self) -> ImportState {
        self.state
    }

    /// The CP failed. Imports only when nothing is applied yet.
    pub fn cp_failed(&mut self, nothing_applied: bool, credentials_ready: bool) -> ImportStep {
        if self.state != ImportState::Armed || !nothing_applied {
            return ImportStep::Nothing;
        }
        if credentials_ready {
            self.state = ImportState::AwaitingGrant;
            ImportStep::RequestGrant
        } else {
            self.state = ImportState::AwaitingCredentials;
            ImportStep::WaitForCredentials
        }
    }

    /// Credentials became available.
    pub fn credentials_ready(&mut self) -> ImportStep {
        if self.state == ImportState::AwaitingCredentials {
            self.state = ImportState::AwaitingGrant;
            ImportStep::RequestGrant
        } else {
            ImportStep::Nothing
        }
    }

    /// No credentials can be had: the import cannot happen. Returns
    /// whether one was waiting.
    pub fn credentials_failed(&mut self) -> bool {
        let waiting = self.state == ImportState::AwaitingCredentials;
        if waiting {
            self.state = ImportState::Done;
        }
        waiting
    }

    /// The CP answered: nothing not yet sent ever will be. Returns whether
    /// an import was waiting (to report its cancellation).
    pub fn cp_answered(&mut self) -> bool {
        let waiting = matches!(
            self.state,
            ImportState::AwaitingCredentials | ImportState::AwaitingGrant
        );
        if matches!(
            self.state,
            ImportState::Armed | ImportState::AwaitingCredentials | ImportState::AwaitingGrant
        ) {
            self.state = ImportState::Done;
        }
        waiting
    }

    /// The process granted the import: whether to send it now.
    pub fn granted(&mut self) -> bool {
        let send = self.state == ImportState::AwaitingGrant;
        if send {
            self.state = ImportState::InFlight;
        }
        send
    }

    /// The process refused (already imported, or the CP answered).
    pub fn denied(&mut self) {
        if self.state == ImportState::AwaitingGrant {
            self.state = ImportState::Done;
        }
    }

    /// The import's answer arrived (or never will).
    pub fn finished(&mut self) {
        self.state = ImportState::Done;
    }
}
