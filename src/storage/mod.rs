//! Object storage as data: where the fallback config lives, the requests
//! that read and write it, and what the answers mean.
//!
//! Export, import and election talk to [`ObjectStore`] only, in terms of
//! object keys, typed write modes ([`PutMode`]) and typed outcomes
//! ([`Object`], [`StorageError`]); which cloud answers is the backend's
//! business. Each backend module has the same inner shape: request
//! building (with its credentials) and response classification.
//! Backends whose credentials must be fetched first (an OAuth token) say
//! so through [`ObjectStore::credential_request`].
//!
//! Dependencies inside this module run one way, so that no two modules
//! depend on each other: `endpoint` and `location` are leaves,
//! `gcp_auth` uses only `endpoint`, `model` (the shared data) uses
//! `gcp_auth`'s error, the backends (`s3`, `gcs`, `azure`) use `model`
//! and `endpoint` (and `gcs` uses `gcp_auth`), and this file uses them all.

pub mod azure;
pub mod endpoint;
pub mod gcp_auth;
pub mod gcs;
mod location;
mod model;
pub mod s3;
pub mod xml;

pub use endpoint::{Endpoint, EndpointError, UrlScheme};
pub use location::{LocationError, Scheme, StorageLocation};
pub use model::{ListPage, Object, PutMode, StorageError, Via};
pub use s3::{S3Addressing, S3Settings};

use crate::clock::Now;
use crate::http::{HttpRequest, HttpResponse};
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
}

/// The cloud behind the location, with its own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    S3(S3Settings),
    Gcs {
        /// Boxed: it holds the parsed RSA key, far larger than the others.
        gcs: Box<gcs::GcsSettings>,
        /// The proxy cluster that reaches the service account's `token_uri`.
        token_cluster: String,
    },
    Azure(azure::AzureSettings),
}

/// The store of one fallback-config deployment: builds requests for object
/// keys relative to the configured prefix and classifies the answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectStore {
    settings: StorageSettings,
    /// GCS with a service account: the access token and its renewal.
    tokens: Option<gcp_auth::TokenCache>,
}

impl ObjectStore {
    pub fn new(settings: StorageSettings) -> Self {
        let tokens = match &settings.backend {
            Backend::Gcs { gcs, token_cluster } => gcs.service_account.clone().map(|account| {
                gcp_auth::TokenCache::new(account, token_cluster.clone(), settings.timeout)
            }),
            _ => None,
        };
        ObjectStore { settings, tokens }
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
        match self.tokens.as_mut() {
            Some(tokens) => tokens.next_request(now).map_err(StorageError::Token),
            None => Ok(None),
        }
    }

    /// The answer to [`ObjectStore::credential_request`].
    pub fn on_credential_response(
        &mut self,
        response: HttpResponse,
        now: Now,
    ) -> Result<(), StorageError> {
        match self.tokens.as_mut() {
            Some(tokens) => tokens
                .on_response(response, now)
                .map_err(StorageError::Token),
            None => Ok(()),
        }
    }

    /// The store answered 401: drop the access token so a new one is
    /// fetched (no effect on signed backends, whose keys do not expire).
    pub fn invalidate_credentials(&mut self) {
        if let Some(tokens) = self.tokens.as_mut() {
            tokens.invalidate();
        }
    }

    /// Whether requests can be built now (no access token to wait for).
    pub fn credentials_ready(&self, now: Now) -> bool {
        self.tokens
            .as_ref()
            .is_none_or(|t| t.token(now.mono).is_some())
    }

    /// The bearer token for GCS requests: `Ok(None)` for anonymous ones.
    fn bearer(&self, now: Now) -> Result<Option<&crate::secret::Secret>, StorageError> {
        match &self.tokens {
            None => Ok(None),
            Some(t) => t
                .token(now.mono)
                .map(Some)
                .ok_or(StorageError::CredentialsPending),
        }
    }

    /// A GET of `key`; `now.wall` signs it, `now.mono` judges the token.
    pub fn get(&self, key: &str, now: Now) -> Result<HttpRequest, StorageError> {
        let s = &self.settings;
        let via = Via {
            cluster: &s.cluster,
            timeout: s.timeout,
        };
        match &s.backend {
            Backend::S3(s3) => s3::get(s3, via, &s.location.bucket, key, now.wall),
            Backend::Gcs { gcs, .. } => Ok(gcs::get(
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
        let via = Via {
            cluster: &s.cluster,
            timeout: s.timeout,
        };
        match &s.backend {
            Backend::S3(s3) => {
                s3::put(s3, via, &s.location.bucket, key, body, JSON, mode, now.wall)
            }
            Backend::Gcs { gcs, .. } => {
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
        let via = Via {
            cluster: &s.cluster,
            timeout: s.timeout,
        };
        let prefix = s.location.key("");
        match &s.backend {
            Backend::S3(s3) => s3::list(s3, via, &s.location.bucket, &prefix, page, now.wall),
            Backend::Gcs { gcs, .. } => Ok(gcs::list(
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
            Backend::Gcs { .. } => gcs::list_result(response),
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
            Some(e) => Err(StorageError::Transport(e)),
            None => Ok(()),
        }
    }

    /// The outcome of a GET.
    pub fn read_result(&self, response: HttpResponse) -> Result<Object, StorageError> {
        self.transport(&response)?;
        match &self.settings.backend {
            Backend::S3(_) => s3::read_result(response),
            Backend::Gcs { .. } => gcs::read_result(response),
            Backend::Azure(_) => azure::read_result(response),
        }
    }

    /// The outcome of a PUT: the new ETag (or generation), when the store
    /// sent one.
    pub fn write_result(&self, response: &HttpResponse) -> Result<Option<String>, StorageError> {
        self.transport(response)?;
        match &self.settings.backend {
            Backend::S3(_) => s3::write_result(response),
            Backend::Gcs { .. } => gcs::write_result(response),
            Backend::Azure(_) => azure::write_result(response),
        }
    }
}

/// Content type of everything this crate stores.
const JSON: &str = "application/json";
