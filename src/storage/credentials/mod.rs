//! Credentials fetched at run time, sans-IO: one cache and one renewal
//! policy for every source that hands out expiring credentials (a Google
//! service account's OAuth token, the GCP metadata server, Microsoft
//! Entra ID, Azure managed identity, ECS/EKS container credentials, EC2
//! IMDSv2).
//!
//! A [`Provider`] knows one source's requests and answers, in one or more
//! steps (IMDSv2 takes three: a session token, the role name, the
//! role's credentials). [`CredentialCache`] decides when to ask, keeps
//! what came back and hands it out until shortly before it expires. The
//! caller feeds it the time and the answers and dispatches what it asks
//! for, so every flow runs (and is tested) without a network or clock.
//!
//! Everything fetched is a secret: held in types whose `Debug` prints
//! `***`, never quoted in an error.

mod aws;
mod oauth;

pub use aws::{ContainerSource, ImdsSource};
pub use oauth::{AzureClientSecret, AzureManagedIdentity, GcpMetadata};

/// The sources' default hosts.
pub mod aws_hosts {
    pub use super::aws::{ECS_CREDENTIALS_HOST, IMDS_HOST};
}
pub mod oauth_hosts {
    pub use super::oauth::{AZURE_AUTHORITY_HOST, AZURE_IMDS_HOST, GCP_METADATA_HOST};
}

use super::gcp_auth::{self, JwtError, ServiceAccount};
use crate::clock::{Instant, Now};
use crate::http::{HttpRequest, HttpResponse, TransportError};
use crate::secret::Secret;
use crate::sigv4::Credentials;
use crate::time::Timestamp;
use std::fmt;
use std::time::Duration;

/// Longer lifetimes are counted as this: the longest any source issues is
/// 12 hours, and the cap keeps the renewal arithmetic far from overflow.
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Renew this long before expiry at the latest (unless that is earlier
/// than half the lifetime, see [`CredentialCache`]).
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Stop using a credential this long before it expires, so that it does
/// not expire between leaving the filter and reaching the store.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Credential answers are a few KB: anything larger is refused.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// First and longest wait after a failed fetch.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A request in flight longer than its timeout plus this is considered
/// lost, so that one answer the host never delivers cannot stop renewals
/// for good. (The controller normally reports such a loss first, as a
/// status-0 answer.)
const STUCK_GRACE: Duration = Duration::from_secs(60);

/// What a source hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An OAuth access token, sent as `Authorization: Bearer`.
    Bearer(Secret),
    /// Temporary AWS credentials (with a session token), for SigV4.
    Aws(Credentials),
}

/// Where credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// A Google service account's JSON key: a signed JWT exchanged for an
    /// access token at the account's `token_uri`.
    GcpServiceAccount {
        /// Boxed: it holds the parsed RSA key, far larger than the others.
        account: Box<ServiceAccount>,
        cluster: String,
    },
    GcpMetadata(GcpMetadata),
    AzureClientSecret(AzureClientSecret),
    AzureManagedIdentity(AzureManagedIdentity),
    AwsContainer(ContainerSource),
    AwsImds(ImdsSource),
}

/// The source, for log lines and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    GoogleTokenEndpoint,
    GcpMetadata,
    EntraId,
    AzureImds,
    AwsContainer,
    AwsImds,
}

impl SourceKind {
    /// What answered (or did not), completing "… answered 503".
    pub fn endpoint(self) -> &'static str {
        match self {
            SourceKind::GoogleTokenEndpoint => "token endpoint",
            SourceKind::GcpMetadata => "GCP metadata server",
            SourceKind::EntraId => "Microsoft Entra ID token endpoint",
            SourceKind::AzureImds => "Azure instance metadata service (managed identity)",
            SourceKind::AwsContainer => "container credentials endpoint",
            SourceKind::AwsImds => "EC2 instance metadata service (IMDSv2)",
        }
    }
}

impl Provider {
    pub fn kind(&self) -> SourceKind {
        match self {
            Provider::GcpServiceAccount { .. } => SourceKind::GoogleTokenEndpoint,
            Provider::GcpMetadata(_) => SourceKind::GcpMetadata,
            Provider::AzureClientSecret(_) => SourceKind::EntraId,
            Provider::AzureManagedIdentity(_) => SourceKind::AzureImds,
            Provider::AwsContainer(_) => SourceKind::AwsContainer,
            Provider::AwsImds(_) => SourceKind::AwsImds,
        }
    }

    /// The source in words, for the one info line that names it.
    pub fn describe(&self) -> String {
        match self {
            Provider::GcpServiceAccount { account, cluster } => format!(
                "the service account {} (GCP_SERVICE_ACCOUNT), tokens from {} through cluster {cluster}",
                account.client_email(),
                account.token_uri()
            ),
            Provider::GcpMetadata(m) => format!(
                "the GCP metadata server ({}) through cluster {}",
                m.authority, m.cluster
            ),
            Provider::AzureClientSecret(s) => format!(
                "the service principal {} of tenant {} (AZURE_CLIENT_SECRET) through cluster {}",
                s.client_id, s.tenant, s.cluster
            ),
            Provider::AzureManagedIdentity(m) => format!(
                "the {} managed identity through cluster {}",
                match &m.client_id {
                    Some(id) => format!("user-assigned ({id})"),
                    None => "system-assigned".to_string(),
                },
                m.cluster
            ),
            Provider::AwsContainer(c) => format!(
                "container credentials (http://{}{}) through cluster {}",
                c.authority,
                c.path_for_logs(),
                c.cluster
            ),
            Provider::AwsImds(i) => format!(
                "the EC2 instance role (IMDSv2 at {}) through cluster {}",
                i.authority, i.cluster
            ),
        }
    }

    fn first_step(&self) -> Step {
        match self {
            Provider::AwsImds(_) => Step::ImdsToken,
            _ => Step::Fetch,
        }
    }

    fn request(&self, step: &Step, now: Now, timeout: Duration) -> Result<HttpRequest, Failure> {
        match (self, step) {
            (Provider::GcpServiceAccount { account, cluster }, _) => {
                // JWT claims are wall-clock times (the endpoint checks them).
                let assertion = gcp_auth::jwt_assertion(account, now.wall).map_err(Failure::Jwt)?;
                Ok(oauth::jwt_bearer_request(
                    account, cluster, &assertion, timeout,
                ))
            }
            (Provider::GcpMetadata(m), _) => Ok(m.request(timeout)),
            (Provider::AzureClientSecret(s), _) => Ok(s.request(timeout)),
            (Provider::AzureManagedIdentity(m), _) => Ok(m.request(timeout)),
            (Provider::AwsContainer(c), _) => Ok(c.request(timeout)),
            (Provider::AwsImds(i), step) => Ok(i.request(step, timeout)),
        }
    }

    fn on_response(
        &self,
        step: Step,
        response: &HttpResponse,
        now: Now,
    ) -> Result<Progress, Failure> {
        match self {
            Provider::AwsContainer(_) => {
                aws::parse_credentials(response, now.wall).map(Progress::Done)
            }
            Provider::AwsImds(i) => i.on_response(step, response, now.wall),
            _ => oauth::parse_token_response(response).map(Progress::Done),
        }
    }
}

/// Where a multi-step fetch stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The one request of a single-step source.
    Fetch,
    /// IMDSv2: `PUT /latest/api/token`.
    ImdsToken,
    /// IMDSv2: the role name, with the session token.
    ImdsRole(Secret),
    /// IMDSv2: that role's credentials.
    ImdsCredentials { token: Secret, role: String },
}

/// An answer's outcome: another request to make, or credentials.
#[derive(Debug)]
pub(crate) enum Progress {
    Next(Step),
    Done(Fetched),
}

/// Credentials and how long they are valid, from when they were asked for.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub credential: Credential,
    pub lifetime: Duration,
}

/// Why no credentials came of a fetch, and from which source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialError {
    pub source: SourceKind,
    pub failure: Failure,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint answered an error status (status 0: no answer at all,
    /// the proxy's or controller's reason in `detail`). `error` and
    /// `description` are the OAuth error fields (`invalid_grant`, `Invalid
    /// JWT Signature.`) or AWS's `Code`/`Message`; `detail` is a body
    /// excerpt when the body was neither (e.g. the proxy's own `upstream
    /// connect error`).
    Refused {
        status: u16,
        error: Option<String>,
        description: Option<String>,
        detail: Option<String>,
    },
    /// The proxy answered for the endpoint (it could not be reached, timed
    /// out) or the answer broke on the way: the endpoint said nothing.
    Transport(TransportError),
    /// A 200 whose body is not usable.
    Malformed(Malformed),
    /// The service-account assertion could not be signed.
    Jwt(JwtError),
}

/// What was wrong with a 200 answer. The body itself is never quoted: it
/// holds the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    NotJson,
    NoAccessToken,
    /// `token_type` is not `Bearer` (the only kind we can send).
    NotBearer(String),
    /// `expires_in` is not a positive number of seconds.
    BadExpiry,
    /// An AWS credentials field is missing or empty (`AccessKeyId`, ...).
    MissingField(&'static str),
    /// `Expiration` is not an RFC 3339 time after now.
    BadExpiration,
    /// IMDS: the answer's `Code` is not `Success`.
    NotSuccess(String),
    /// IMDS: no role is attached to the instance.
    NoRole,
    /// IMDS: the session token answer is empty.
    NoSessionToken,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::NotJson => f.write_str("the body is not JSON"),
            Malformed::NoAccessToken => f.write_str("`access_token` is missing or empty"),
            Malformed::NotBearer(found) => {
                write!(f, "`token_type` is `{found}`, expected `Bearer`")
            }
            Malformed::BadExpiry => f.write_str("`expires_in` is not a positive number of seconds"),
            Malformed::MissingField(name) => write!(f, "`{name}` is missing or empty"),
            Malformed::BadExpiration => {
                f.write_str("`Expiration` is not an RFC 3339 time in the future")
            }
            Malformed::NotSuccess(code) => write!(f, "`Code` is `{code}`, not `Success`"),
            Malformed::NoRole => f.write_str("no IAM role is attached to the instance"),
            Malformed::NoSessionToken => f.write_str("the IMDSv2 session token is empty"),
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = self.source.endpoint();
        match &self.failure {
            Failure::Refused {
                status,
                error,
                description,
                detail,
            } => {
                if *status == 0 {
                    write!(f, "no answer from the {endpoint}")?;
                } else {
                    write!(f, "{endpoint} answered {status}")?;
                }
                let mut sep = ": ";
                for part in [error, description, detail].into_iter().flatten() {
                    write!(f, "{sep}{part}")?;
                    sep = ": ";
                }
                Ok(())
            }
            Failure::Transport(e) => write!(f, "no answer from the {endpoint}: {e}"),
            Failure::Malformed(why) => write!(f, "{endpoint} answered 200 but {why}"),
            Failure::Jwt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CredentialError {}

/// The credentials of one source, kept fresh without ever making a
/// storage request wait.
///
/// A sans-IO state machine: the caller asks [`CredentialCache::next_request`]
/// on every tick and dispatches what it returns, passes the answer to
/// [`CredentialCache::on_response`], and takes [`CredentialCache::credential`]
/// for each object request. Time is always an input.
///
/// Policy:
/// - Credentials are fetched when there are none, or when the current ones
///   enter their renewal window: at 80 % of their lifetime or 5 minutes
///   before expiry, whichever is earlier, but never before half the
///   lifetime (so short-lived credentials from a test endpoint cannot
///   cause a request storm). For a 1-hour token that is after 48 minutes,
///   for IMDS's 6-hour credentials after 4 h 48 min.
/// - While a renewal is in flight (or failing), the old credentials keep
///   being served until 30 s before they expire (a tenth of their lifetime
///   before, for lifetimes shorter than 5 minutes).
/// - One request at a time (the steps of a multi-step source follow each
///   other at once); after a failure, wait 1 s, 2 s, 4 s … up to 60 s
///   before the next. A success resets the backoff.
///
/// `Debug` masks the credentials and keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialCache {
    provider: Provider,
    timeout: Duration,
    current: Option<Current>,
    /// The outstanding request's step, and when it was made.
    in_flight: Option<(Step, Now)>,
    /// The next step of a fetch under way, and when the fetch began.
    next_step: Option<(Step, Now)>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    /// No new fetch before this (backoff).
    retry_at: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Current {
    credential: Credential,
    renew_at: Instant,
    /// Last instant at which the credential is handed out.
    usable_until: Instant,
    /// By the wall clock, for log lines.
    expires_at: Timestamp,
}

impl Current {
    /// `issued` is when the fetch began: the lifetime started no earlier,
    /// so expiry is counted conservatively.
    fn new(credential: Credential, issued: Now, lifetime: Duration) -> Self {
        let lifetime = lifetime.min(MAX_LIFETIME);
        let renew_after = (lifetime * 4 / 5)
            .min(lifetime.saturating_sub(RENEW_BEFORE_EXPIRY))
            .max(lifetime / 2);
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        Current {
            credential,
            renew_at: issued.mono.plus(renew_after),
            usable_until: issued.mono.plus(lifetime.saturating_sub(margin)),
            expires_at: issued.wall.plus(lifetime),
        }
    }
}

impl CredentialCache {
    /// `timeout` bounds each request.
    pub fn new(provider: Provider, timeout: Duration) -> Self {
        CredentialCache {
            provider,
            timeout,
            current: None,
            in_flight: None,
            next_step: None,
            failures: 0,
            retry_at: Instant::ZERO,
        }
    }

    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The request to dispatch now, if one is due (see the policy on
    /// [`CredentialCache`]). `Ok(None)`: nothing to do. An error (signing
    /// the assertion failed) counts as a failed fetch for the backoff, so
    /// it is not retried on every tick.
    pub fn next_request(&mut self, now: Now) -> Result<Option<HttpRequest>, CredentialError> {
        if let Some((_, since)) = &self.in_flight {
            if now.mono < since.mono.plus(self.timeout).plus(STUCK_GRACE) {
                return Ok(None);
            }
            // The host never answered; allow a new fetch.
            self.in_flight = None;
            self.next_step = None;
        }
        let (step, began) = match self.next_step.take() {
            Some(next) => next,
            None => {
                if now.mono < self.retry_at
                    || self.current.as_ref().is_some_and(|c| now.mono < c.renew_at)
                {
                    return Ok(None);
                }
                (self.provider.first_step(), now)
            }
        };
        match self.provider.request(&step, now, self.timeout) {
            Ok(request) => {
                self.in_flight = Some((step, began));
                Ok(Some(request))
            }
            Err(failure) => Err(self.failed(failure, now.mono)),
        }
    }

    /// The answer to the request from [`Self::next_request`]. Status 0
    /// (the controller's "no answer") and every other failure start or
    /// extend the backoff; the current credentials, if still valid, stay
    /// in use.
    pub fn on_response(&mut self, response: HttpResponse, now: Now) -> Result<(), CredentialError> {
        let (step, began) = self.in_flight.take().unwrap_or((Step::Fetch, now));
        // Envoy's own answers (no connection, a timeout) are not the
        // endpoint's; status 0 (no answer at all) is reported as such below.
        if response.status != 0 {
            if let Some(e) = response.transport_error(MAX_ANSWER_BYTES) {
                return Err(self.failed(Failure::Transport(e), now.mono));
            }
        }
        match self.provider.on_response(step, &response, now) {
            Ok(Progress::Next(step)) => {
                self.next_step = Some((step, began));
                Ok(())
            }
            Ok(Progress::Done(fetched)) => {
                self.failures = 0;
                self.retry_at = Instant::ZERO;
                let issued = Now {
                    mono: began.mono.min(now.mono),
                    wall: began.wall,
                };
                self.current = Some(Current::new(fetched.credential, issued, fetched.lifetime));
                Ok(())
            }
            Err(failure) => Err(self.failed(failure, now.mono)),
        }
    }

    /// The credential to use now, if there is a valid one. Renewal never
    /// takes it away early: only expiry (less the margin in the policy
    /// above) or [`Self::invalidate`] does.
    pub fn credential(&self, now: Instant) -> Option<&Credential> {
        self.current
            .as_ref()
            .filter(|c| now < c.usable_until)
            .map(|c| &c.credential)
    }

    /// When the current credentials expire, for log lines.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.current.as_ref().map(|c| c.expires_at)
    }

    /// Forgets the current credentials, e.g. after the store answered 401
    /// with them (revoked, or the key rotated): the next
    /// [`Self::next_request`] fetches new ones, backoff permitting.
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    fn failed(&mut self, failure: Failure, now: Instant) -> CredentialError {
        self.next_step = None;
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(6);
        let delay = (FIRST_BACKOFF * (1u32 << doublings)).min(MAX_BACKOFF);
        self.retry_at = now.plus(delay);
        CredentialError {
            source: self.provider.kind(),
            failure,
        }
    }
}

#[cfg(test)]
mod tests;
