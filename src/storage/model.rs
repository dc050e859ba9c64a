//! The storage interface's data, shared by every backend: write modes,
//! objects read, errors, and the cluster that carries a request.
//!
//! Kept apart from `mod.rs` so that backends depend on it and not on
//! the [`super::ObjectStore`] that dispatches to them.

use super::credentials;
use crate::http::{HttpResponse, TransportError};
use crate::sigv4::SigningError;
use crate::time::Timestamp;
use std::fmt;
use std::time::Duration;

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
    /// `Content-Type`, to describe a body that is not what was expected.
    pub content_type: Option<String>,
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
            content_type: response.header("content-type").map(str::to_string),
            body: response.body,
        }
    }
}

/// One page of a listing with delimiter `/`: the "folder" prefixes
/// (full keys ending in `/`) and the token of the next page, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub prefixes: Vec<String>,
    pub next: Option<String>,
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
    /// The backend's credentials are not available yet (they are being
    /// fetched): try again later.
    CredentialsPending,
    /// No credentials could be had (the source refused or did not answer).
    Credentials(credentials::CredentialError),
    /// A read came back without an ETag (or generation), so no write can
    /// be made conditional on it.
    MissingEtag,
    /// The call failed on the way (timeout, unreachable, reset,
    /// truncated, over the size limit).
    Transport(TransportError),
    /// A success answer whose body is not what the operation returns.
    Unreadable { what: &'static str, detail: String },
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
            StorageError::CredentialsPending => f.write_str("no credentials yet"),
            StorageError::Credentials(e) => write!(f, "cannot get credentials: {e}"),
            StorageError::Transport(e) => e.fmt(f),
            StorageError::Unreadable { what, detail } => {
                write!(f, "the store's {what} does not parse (starts with: {detail})")
            }
            StorageError::MissingEtag => f.write_str(
                "the store sent no ETag, so no write can be made conditional (it would overwrite blindly)",
            ),
        }
    }
}

impl std::error::Error for StorageError {}

/// The proxy cluster and timeout that carry a backend's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    pub cluster: &'a str,
    pub timeout: Duration,
    /// Fetched credentials to authorize with, overriding the backend's
    /// static ones ([`super::credentials`]).
    pub credential: Option<&'a credentials::Credential>,
}
