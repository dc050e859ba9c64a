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

pub mod azure;
pub mod gcp_auth;
pub mod gcs;
mod location;
pub mod s3;

pub use location::{LocationError, Scheme, StorageLocation};
pub use s3::{S3Addressing, S3Settings};

use crate::http::{HttpRequest, HttpResponse};
use crate::sigv4::SigningError;
use crate::time::Timestamp;
use std::fmt;
use std::time::Duration;

/// Everything needed to reach the store.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageSettings {
    pub location: StorageLocation,
    /// The proxy cluster that carries object API calls.
    pub cluster: String,
    pub timeout: Duration,
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

/// How a write treats an existing object (object_store's `PutMode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Write only if no object exists (`If-None-Match: *`).
    Create,
    /// Write only if the object still has this ETag (`If-Match`).
    Update { etag: String },
}

/// An object that was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub body: Vec<u8>,
    pub etag: Option<String>,
    /// `Last-Modified`, by the store's clock.
    pub last_modified: Option<Timestamp>,
    /// The answer's `Date`, by the store's clock: with `last_modified` it
    /// gives the object's age free of any skew of our own clock.
    pub date: Option<Timestamp>,
}

impl Object {
    /// A successful read: the body, the header that versions the object
    /// (`etag`, or GCS's `x-goog-generation`) and the store's times.
    pub fn from_response(response: HttpResponse, version_header: &str) -> Object {
        Object {
            etag: response.header(version_header).map(str::to_string),
            last_modified: response
                .header("last-modified")
                .and_then(Timestamp::parse_http_date),
            date: response.header("date").and_then(Timestamp::parse_http_date),
            body: response.body,
        }
    }
}

/// Why a storage request did not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// No such object (404); `code` as the store named it (`NoSuchKey`,
    /// `NoSuchBucket`).
    NotFound { code: Option<String> },
    /// A conditional write lost (412).
    PreconditionFailed,
    /// The store answered with an error status; `code` is its error code
    /// (`SignatureDoesNotMatch`, `AccessDenied`, ...) when it sent one.
    Status {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// The request could not be signed.
    Signing(SigningError),
    /// The backend's credentials are not available yet (an access token
    /// is being fetched): try again later.
    CredentialsPending,
    /// No access token could be had (GCS: the token endpoint refused).
    Token(gcp_auth::TokenError),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::NotFound { code: None } => f.write_str("not found (404)"),
            StorageError::NotFound { code: Some(c) } => write!(f, "not found (404 {c})"),
            StorageError::PreconditionFailed => f.write_str("precondition failed (412)"),
            StorageError::Status {
                status,
                code,
                message,
            } => {
                write!(f, "storage answered {status}")?;
                if let Some(c) = code {
                    write!(f, " {c}")?;
                }
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            StorageError::Signing(e) => write!(f, "cannot sign the request: {e}"),
            StorageError::CredentialsPending => f.write_str("no access token yet"),
            StorageError::Token(e) => write!(f, "cannot get an access token: {e}"),
        }
    }
}

impl std::error::Error for StorageError {}

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
    pub fn credential_request(
        &mut self,
        now: Timestamp,
    ) -> Result<Option<HttpRequest>, StorageError> {
        match self.tokens.as_mut() {
            Some(tokens) => tokens.next_request(now).map_err(StorageError::Token),
            None => Ok(None),
        }
    }

    /// The answer to [`ObjectStore::credential_request`].
    pub fn on_credential_response(
        &mut self,
        response: HttpResponse,
        now: Timestamp,
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
    pub fn credentials_ready(&self, now: Timestamp) -> bool {
        self.tokens.as_ref().is_none_or(|t| t.token(now).is_some())
    }

    /// The bearer token for GCS requests: `Ok(None)` for anonymous ones.
    fn bearer(&self, now: Timestamp) -> Result<Option<&crate::secret::Secret>, StorageError> {
        match &self.tokens {
            None => Ok(None),
            Some(t) => t
                .token(now)
                .map(Some)
                .ok_or(StorageError::CredentialsPending),
        }
    }

    pub fn get(&self, key: &str, now: Timestamp) -> Result<HttpRequest, StorageError> {
        let s = &self.settings;
        let via = Via {
            cluster: &s.cluster,
            timeout: s.timeout,
        };
        match &s.backend {
            Backend::S3(s3) => s3::get(s3, via, &s.location.bucket, key, now),
            Backend::Gcs { gcs, .. } => Ok(gcs::get(
                gcs,
                via,
                &s.location.bucket,
                key,
                self.bearer(now)?,
            )),
            Backend::Azure(az) => Ok(az.get_blob(via.into(), key, now)),
        }
    }

    /// A JSON object write with the given precondition.
    pub fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        mode: &PutMode,
        now: Timestamp,
    ) -> Result<HttpRequest, StorageError> {
        let s = &self.settings;
        let via = Via {
            cluster: &s.cluster,
            timeout: s.timeout,
        };
        match &s.backend {
            Backend::S3(s3) => s3::put(s3, via, &s.location.bucket, key, body, JSON, mode, now),
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
            Backend::Azure(az) => Ok(az.put_blob(via.into(), key, body, JSON, mode, now)),
        }
    }

    /// The outcome of a GET.
    pub fn read_result(&self, response: HttpResponse) -> Result<Object, StorageError> {
        match &self.settings.backend {
            Backend::S3(_) => s3::read_result(response),
            Backend::Gcs { .. } => gcs::read_result(response),
            Backend::Azure(_) => azure::read_result(response),
        }
    }

    /// The outcome of a PUT: the new ETag (or generation), when the store
    /// sent one.
    pub fn write_result(&self, response: &HttpResponse) -> Result<Option<String>, StorageError> {
        match &self.settings.backend {
            Backend::S3(_) => s3::write_result(response),
            Backend::Gcs { .. } => gcs::write_result(response),
            Backend::Azure(_) => azure::write_result(response),
        }
    }
}

/// Content type of everything this crate stores.
const JSON: &str = "application/json";

/// The proxy cluster and timeout that carry a backend's requests.
#[derive(Clone, Copy, Debug)]
pub struct Via<'a> {
    pub cluster: &'a str,
    pub timeout: Duration,
}

impl<'a> From<Via<'a>> for azure::Dispatch<'a> {
    fn from(v: Via<'a>) -> Self {
        azure::Dispatch {
            cluster: v.cluster,
            timeout: v.timeout,
        }
    }
}
