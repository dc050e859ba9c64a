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
        }
    }
}

impl std::error::Error for StorageError {}

/// The store of one fallback-config deployment: builds requests for object
/// keys relative to the configured prefix and classifies the answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectStore {
    settings: StorageSettings,
}

impl ObjectStore {
    pub fn new(settings: StorageSettings) -> Self {
        ObjectStore { settings }
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
    pub fn credential_request(&mut self, _now: Timestamp) -> Option<HttpRequest> {
        match &self.settings.backend {
            Backend::S3(_) | Backend::Azure(_) => None,
        }
    }

    /// The answer to [`ObjectStore::credential_request`].
    pub fn on_credential_response(
        &mut self,
        _response: HttpResponse,
        _now: Timestamp,
    ) -> Result<(), StorageError> {
        match &self.settings.backend {
            Backend::S3(_) | Backend::Azure(_) => Ok(()),
        }
    }

    /// Whether requests can be built now (no access token to wait for).
    pub fn credentials_ready(&self, _now: Timestamp) -> bool {
        match &self.settings.backend {
            Backend::S3(_) | Backend::Azure(_) => true,
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
            Backend::Azure(az) => Ok(az.put_blob(via.into(), key, body, JSON, mode, now)),
        }
    }

    /// The outcome of a GET.
    pub fn read_result(&self, response: HttpResponse) -> Result<Object, StorageError> {
        match &self.settings.backend {
            Backend::S3(_) => s3::read_result(response),
            Backend::Azure(_) => azure::read_result(response),
        }
    }

    /// The outcome of a PUT: the new ETag (or generation), when the store
    /// sent one.
    pub fn write_result(&self, response: &HttpResponse) -> Result<Option<String>, StorageError> {
        match &self.settings.backend {
            Backend::S3(_) => s3::write_result(response),
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
