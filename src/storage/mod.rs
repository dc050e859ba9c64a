//! Object storage as data: where the fallback config lives, the requests
//! that read and write it, and what the answers mean.
//!
//! Export, import and election talk to [`ObjectStore`] only, in terms of
//! object keys, typed write modes ([`PutMode`]) and typed outcomes
//! ([`Object`], [`StorageError`]); which cloud answers is the backend's
//! business. Each backend module has the same inner shape: request
//! building (with its credentials) and response classification.
//! Credentials fetched at run time (OAuth tokens, temporary AWS
//! credentials) come from one [`credentials::CredentialCache`], driven
//! through [`ObjectStore::credential_request`].
//!
//! Dependencies inside this module run one way, so that no two modules
//! depend on each other: `endpoint` and `location` are leaves,
//! `gcp_auth` uses only `endpoint`, `credentials` uses `gcp_auth`,
//! `model` (the shared data) uses `credentials`, the backends (`s3`,
//! `gcs`, `azure`) use `model` and `endpoint`, and this file uses them all.

pub mod azure;
pub mod base64;
pub mod credentials;
pub mod endpoint;
pub mod gcp_auth;
pub mod gcs;
mod location;
mod model;
mod rs256;
pub mod s3;
pub mod xml;

pub use endpoint::{Endpoint, EndpointError, UrlScheme};
pub use location::{LocationError, Scheme, StorageLocation};
pub use model::{ListPage, Object, PutMode, StorageError, Via};
pub use s3::{S3Addressing, S3Settings};

use crate::clock::Now;
use crate::http::{HttpRequest, HttpResponse, TransportError};
use credentials::{Credential, CredentialCache, Provider};
use std::time::Duration;

/// Everything needed to reach the store.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageSettings {
    pub location: StorageLocation,
    /// The proxy cluster that carries object API calls.
    pub cluster: String,
    pub timeout: Duration,
    /// A stored object larger than this is refused.
    pub max_object_bytes: u64,
    pub backend: Backend,
    /// Credentials fetched at run time; `None`: the backend's static ones
    /// (or none at all).
    pub credentials: Option<Provider>,
    /// Who signs S3 requests.
    pub signing: Signing,
}

/// Who authorizes storage requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Signing {
    /// The filter, with the credentials it has (`storage.signing`
    /// `"filter"`, the default).
    #[default]
    Filter,
    /// Envoy's `aws_request_signing` upstream filter on the storage
    /// cluster, with Envoy's own AWS credential chain (IRSA web identity,
    /// EKS Pod Identity token files a wasm VM cannot read): the filter
    /// sends unsigned requests.
    Envoy,
    /// Nobody: anonymous requests (a public bucket).
    None,
}

/// The cloud behind the location, with its own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    S3(S3Settings),
    Gcs(gcs::GcsSettings),
    Azure(azure::AzureSettings),
}

/// The store of one fallback-config deployment: builds requests for object
/// keys relative to the configured prefix and classifies the answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectStore {
    settings: StorageSettings,
    /// Fetched credentials and their renewal.
    credentials: Option<CredentialCache>,
}

impl ObjectStore {
    pub fn new(settings: StorageSettings) -> Self {
        let credentials = settings
            .credentials
            .clone()
            .map(|p| CredentialCache::new(p, settings.timeout));
        ObjectStore {
            settings,
            credentials,
        }
    }

    /// The scheme and `host[:port]` the object API is addressed with.
    pub fn endpoint(&self) -> (UrlScheme, String) {
        match &self.settings.backend {
            Backend::S3(s3) => match &s3.addressing {
                S3Addressing::VirtualHosted => (
                    UrlScheme::Https,
                    format!(
                        "{}.s3.{}.amazonaws.com",
                        self.settings.location.bucket, s3.region
                    ),
                ),
                S3Addressing::PathStyle {
                    scheme, authority, ..
                } => (*scheme, authority.clone()),
            },
            Backend::Gcs(g) => (g.scheme, g.authority.clone()),
            Backend::Azure(az) => (az.endpoint.scheme, az.endpoint.authority.clone()),
        }
    }

    /// What the endpoint's scheme says about the connection, once per
    /// driver. The filter cannot see the cluster's transport socket: an
    /// `http://` endpoint off this host is called out as clear text, an
    /// `https://` one is said to rely on the cluster's TLS.
    pub fn transport_notice(&self) -> crate::event::Event {
        let (scheme, authority) = self.endpoint();
        let host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(authority.as_str(), |(h, _)| h);
        let loopback = matches!(host, "localhost" | "[::1]") || host.starts_with("127.");
        crate::event::Event::StorageTransport {
            endpoint: format!("{}://{authority}", scheme.as_str()),
            cluster: self.settings.cluster.clone(),
            tls: scheme == UrlScheme::Https,
            loopback,
        }
    }

    /// Where the credentials come from, in words, for the one info line
    /// that names the source.
    pub fn credential_source(&self) -> String {
        if let Some(c) = &self.credentials {
            return c.provider().describe();
        }
        let cluster = &self.settings.cluster;
        match (&self.settings.signing, &self.settings.backend) {
            (Signing::Envoy, _) => format!(
                "Envoy: requests go out unsigned and the aws_request_signing filter of cluster {cluster} signs them"
            ),
            (Signing::None, _) => "none: anonymous requests (storage.signing \"none\")".to_string(),
            (Signing::Filter, Backend::S3(s3)) => match &s3.credentials {
                Some(c) if c.session_token.is_some() => {
                    "static keys (AWS_ACCESS_KEY_ID, with AWS_SESSION_TOKEN)".to_string()
                }
                Some(_) => "static keys (AWS_ACCESS_KEY_ID)".to_string(),
                None => "none: anonymous requests (AWS_EC2_METADATA_DISABLED, no keys)".to_string(),
            },
            (Signing::Filter, Backend::Azure(az)) => az.credentials.describe().to_string(),
            (Signing::Filter, Backend::Gcs(_)) => "none: anonymous requests".to_string(),
        }
    }

    /// `<prefix>/<version>/<name>`: the full object key.
    pub fn key(&self, version: &str, name: &str) -> String {
        self.settings.location.key(&format!("{version}/{name}"))
    }

    /// A URL naming the object, for log lines (`s3://bucket/key`).
    pub fn url(&self, key: &str) -> String {
        self.settings.location.url(key)
    }

    /// A credential request to send now (fetching or renewing an access
    /// token), if the backend needs one.
    pub fn credential_request(&mut self, now: Now) -> Result<Option<HttpRequest>, StorageError> {
        match self.credentials.as_mut() {
            Some(c) => c.next_request(now).map_err(StorageError::Credentials),
            None => Ok(None),
        }
    }

    /// The answer to [`ObjectStore::credential_request`]: when new
    /// credentials came of it, their expiry.
    pub fn on_credential_response(
        &mut self,
        response: HttpResponse,
        now: Now,
    ) -> Result<Option<crate::time::Timestamp>, StorageError> {
        let Some(c) = self.credentials.as_mut() else {
            return Ok(None);
        };
        let before = c.expires_at();
        c.on_response(response, now)
            .map_err(StorageError::Credentials)?;
        Ok(c.expires_at().filter(|e| Some(*e) != before))
    }

    /// A storage answer that says the fetched credentials are no good
    /// (401; S3's `ExpiredToken` / `InvalidToken` on 400 or 403): forget
    /// them so new ones are fetched. Static keys are never dropped.
    pub fn check_credentials_refused(&mut self, response: &HttpResponse) {
        let refused = match response.status {
            401 => true,
            400 | 403 => {
                let body = String::from_utf8_lossy(&response.body);
                ["ExpiredToken", "InvalidToken", "TokenRefreshRequired"]
                    .iter()
                    .any(|code| body.contains(&format!("<Code>{code}</Code>")))
            }
            _ => false,
        };
        if refused {
            self.invalidate_credentials();
        }
    }

    /// The store answered 401 (or AWS's 400/403 for an expired token):
    /// drop the fetched credentials so new ones are fetched (no effect on
    /// static keys, which do not expire).
    pub fn invalidate_credentials(&mut self) {
        if let Some(c) = self.credentials.as_mut() {
            c.invalidate();
        }
    }

    /// Whether requests can be built now (no credentials to wait for).
    pub fn credentials_ready(&self, now: Now) -> bool {
        self.credentials
            .as_ref()
            .is_none_or(|c| c.credential(now.mono).is_some())
    }

    /// The fetched credential to authorize with: `Ok(None)` where the
    /// backend's static ones (or none) apply.
    fn credential(&self, now: Now) -> Result<Option<&Credential>, StorageError> {
        match &self.credentials {
            None => Ok(None),
            Some(c) => c
                .credential(now.mono)
                .map(Some)
                .ok_or(StorageError::CredentialsPending),
        }
    }

    /// The cluster, timeout and credential of a request made now.
    fn via(&self, now: Now) -> Result<Via<'_>, StorageError> {
        Ok(Via {
            cluster: &self.settings.cluster,
            timeout: self.settings.timeout,
            credential: self.credential(now)?,
        })
    }

    /// The bearer token for GCS requests: `Ok(None)` for anonymous ones.
    fn bearer(&self, now: Now) -> Result<Option<&crate::secret::Secret>, StorageError> {
        Ok(match self.credential(now)? {
            Some(Credential::Bearer(token)) => Some(token),
            _ => None,
        })
    }

    /// A GET of `key`; `now.wall` signs it, `now.mono` judges the token.
    pub fn get(&self, key: &str, now: Now) -> Result<HttpRequest, StorageError> {
        let s = &self.settings;
        let via = self.via(now)?;
        match &s.backend {
            Backend::S3(s3) => s3::get(s3, via, &s.location.bucket, key, now.wall),
            Backend::Gcs(gcs) => Ok(gcs::get(
                gcs,
                via,
                &s.location.bucket,
                key,
                self.bearer(now)?,
            )),
            Backend::Azure(az) => Ok(az.get_blob(via, key, now.wall)),
        }
    }

    /// A JSON object write with the given precondition, carrying the
    /// backend's encryption options on every write (S3
    /// [`S3PutOptions`](s3::S3PutOptions), GCS `kmsKeyName`, Azure
    /// `x-ms-encryption-scope`): the config and the election lease alike.
    pub fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        mode: &PutMode,
        now: Now,
    ) -> Result<HttpRequest, StorageError> {
        let s = &self.settings;
        let via = self.via(now)?;
        match &s.backend {
            Backend::S3(s3) => {
                s3::put(s3, via, &s.location.bucket, key, body, JSON, mode, now.wall)
            }
            Backend::Gcs(gcs) => {
                let token = self.bearer(now)?;
                Ok(gcs::put(
                    gcs,
                    via,
                    &s.location.bucket,
                    key,
                    body,
                    JSON,
                    mode,
                    token,
                ))
            }
            Backend::Azure(az) => Ok(az.put_blob(via, key, body, JSON, mode, now.wall)),
        }
    }

    /// A listing of the version folders under the prefix, from page
    /// `page` on (see [`ListPage`]).
    pub fn list_versions(&self, page: Option<&str>, now: Now) -> Result<HttpRequest, StorageError> {
        let s = &self.settings;
        let via = self.via(now)?;
        let prefix = s.location.key("");
        match &s.backend {
            Backend::S3(s3) => s3::list(s3, via, &s.location.bucket, &prefix, page, now.wall),
            Backend::Gcs(gcs) => Ok(gcs::list(
                gcs,
                via,
                &s.location.bucket,
                &prefix,
                page,
                self.bearer(now)?,
            )),
            Backend::Azure(az) => Ok(az.list_blobs(via, &prefix, page, now.wall)),
        }
    }

    /// The version names in a listing's answer (the folder names directly
    /// under the prefix), and the next page.
    pub fn list_result(
        &self,
        response: HttpResponse,
    ) -> Result<(Vec<String>, Option<String>), StorageError> {
        self.transport(&response)?;
        let page = match &self.settings.backend {
            Backend::S3(_) => s3::list_result(response),
            Backend::Gcs(_) => gcs::list_result(response),
            Backend::Azure(_) => azure::list_result(response),
        }?;
        let prefix = self.settings.location.key("");
        let names = page
            .prefixes
            .iter()
            .filter_map(|p| p.strip_prefix(&prefix)?.strip_suffix('/'))
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(str::to_string)
            .collect();
        Ok((names, page.next))
    }

    /// The URL of the listing, for log lines.
    pub fn list_url(&self) -> String {
        self.url(&self.settings.location.key(""))
    }

    /// Refuses a read whose body is larger than `storage.max_object_bytes`.
    pub fn max_object_bytes(&self) -> u64 {
        self.settings.max_object_bytes
    }

    /// A failure on the way (timeout, reset, truncation, a body over
    /// `storage.max_object_bytes`), before the backend reads the answer.
    fn transport(&self, response: &HttpResponse) -> Result<(), StorageError> {
        match response.transport_error(self.settings.max_object_bytes) {
            // Envoy's answer does not say that a TLS handshake failed (a
            // certificate that does not verify reads "remote connection
            // failure"): say where to look.
            Some(TransportError::Unreachable(why)) if self.endpoint().0 == UrlScheme::Https => {
                let c = &self.settings.cluster;
                Err(StorageError::Transport(TransportError::Unreachable(format!(
                    "{why} (if the TLS handshake failed, e.g. a certificate that does not verify, Envoy counts it in cluster.{c}.ssl.fail_verify_error or ssl.fail_verify_san)"
                ))))
            }
            Some(e) => Err(StorageError::Transport(e)),
            None => Ok(()),
        }
    }

    /// The outcome of a GET.
    pub fn read_result(&self, response: HttpResponse) -> Result<Object, StorageError> {
        self.transport(&response)?;
        match &self.settings.backend {
            Backend::S3(_) => s3::read_result(response),
            Backend::Gcs(_) => gcs::read_result(response),
            Backend::Azure(_) => azure::read_result(response),
        }
    }

    /// The outcome of a PUT: the new ETag (or generation), when the store
    /// sent one.
    pub fn write_result(&self, response: &HttpResponse) -> Result<Option<String>, StorageError> {
        self.transport(response)?;
        match &self.settings.backend {
            Backend::S3(_) => s3::write_result(response),
            Backend::Gcs(_) => gcs::write_result(response),
            Backend::Azure(_) => azure::write_result(response),
        }
    }
}

/// Content type of everything this crate stores.
const JSON: &str = "application/json";
