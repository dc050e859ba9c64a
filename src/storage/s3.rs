//! Amazon S3 and S3-compatible stores: request building (addressing and
//! SigV4 with S3's rules) and error classification.

use super::base64::{self as base64_codec, Padding};
use super::credentials::Credential;
use super::endpoint::{Endpoint, EndpointError, UrlScheme};
use super::model::{ListPage, Object, PutMode, StorageError, Via};
use crate::http::{HttpRequest, HttpResponse};
use crate::json;
use crate::sigv4::{self, Credentials, PayloadHash, SignableRequest, SigningError, SigningParams};
use crate::time::Timestamp;
use std::fmt;

/// How the bucket is addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Addressing {
    /// AWS: `<bucket>.s3.<region>.amazonaws.com/<key>`.
    VirtualHosted,
    /// An explicit endpoint (MinIO, s3s, GCS interoperability, ...):
    /// `<authority><base_path>/<bucket>/<key>`.
    PathStyle {
        /// As written in the endpoint: whether the Envoy cluster is
        /// expected to use TLS (announced once, not enforced).
        scheme: UrlScheme,
        /// `host[:port]`: the `:authority` (and signed `host`).
        authority: String,
        /// Empty, or starting with `/`; never ending with `/`.
        base_path: String,
    },
}

impl S3Addressing {
    /// Parses `http(s)://host[:port][/base]` ([`Endpoint::parse`]).
    /// Requests carry `host[:port]` only; the scheme says whether the
    /// Envoy cluster is expected to use TLS.
    pub fn parse_endpoint(endpoint: &str) -> Result<Self, EndpointError> {
        Endpoint::parse(endpoint).map(S3Addressing::from)
    }
}

impl From<Endpoint> for S3Addressing {
    fn from(e: Endpoint) -> Self {
        S3Addressing::PathStyle {
            scheme: e.scheme,
            authority: e.authority,
            base_path: e.base_path,
        }
    }
}

/// S3-specific settings.
#[derive(Clone, Debug, PartialEq)]
pub struct S3Settings {
    pub addressing: S3Addressing,
    pub region: String,
    /// `None`: anonymous requests (public bucket).
    pub credentials: Option<Credentials>,
    /// What every PUT asks for besides the object (encryption, storage
    /// class); empty by default.
    pub put_options: S3PutOptions,
}

/// The PutObject parameters every write of the filter carries, from the
/// plugin's `cluster_fallback_export_s3_config` (Kong's field, whose keys
/// are the AWS SDK's PutObject parameter names).
///
/// Typed, like object_store's put attributes, so that an impossible
/// combination (a KMS key with SSE-S3, a Bucket Key with DSSE-KMS) cannot
/// be built, and the one place that knows the wire names is
/// [`S3PutOptions::headers`]. They go on EVERY PUT (the config and the
/// election lease): a bucket policy that requires encryption refuses any
/// PUT without it, the lease included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3PutOptions {
    /// `x-amz-server-side-encryption` and its KMS companions; `None`: the
    /// bucket's default encryption applies.
    pub encryption: Option<ServerSideEncryption>,
    /// `x-amz-storage-class`; `None`: the bucket's default (STANDARD).
    pub storage_class: Option<StorageClass>,
}

impl S3PutOptions {
    /// Whether nothing is asked for (no header is added).
    pub fn is_empty(&self) -> bool {
        self.encryption.is_none() && self.storage_class.is_none()
    }

    /// The `x-amz-*` request headers, names lower-case. Every header given
    /// to the signer is signed (see [`sigv4::sign`]), and S3 refuses a
    /// request with an unsigned `x-amz-*` header, so these are passed in
    /// with the other headers before signing, never added after.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = Vec::new();
        let mut add = |name: &str, value: &str| h.push((name.to_string(), value.to_string()));
        if let Some(sse) = &self.encryption {
            add(HEADER_SSE, sse.as_str());
            if let Some(kms) = sse.kms() {
                if let Some(key) = &kms.key_id {
                    add(HEADER_SSE_KMS_KEY_ID, key.as_str());
                }
                if let Some(context) = &kms.context {
                    add(HEADER_SSE_CONTEXT, context.as_str());
                }
            }
            if let ServerSideEncryption::Kms {
                bucket_key_enabled: Some(enabled),
                ..
            } = sse
            {
                add(
                    HEADER_SSE_BUCKET_KEY,
                    if *enabled { "true" } else { "false" },
                );
            }
        }
        if let Some(class) = self.storage_class {
            add(HEADER_STORAGE_CLASS, class.as_str());
        }
        h
    }
}

/// `x-amz-server-side-encryption`: `AES256`, `aws:kms` or `aws:kms:dsse`.
pub const HEADER_SSE: &str = "x-amz-server-side-encryption";
/// The KMS key of SSE-KMS / DSSE-KMS (key id, key ARN, alias or alias ARN).
pub const HEADER_SSE_KMS_KEY_ID: &str = "x-amz-server-side-encryption-aws-kms-key-id";
/// The base64 JSON encryption context of SSE-KMS / DSSE-KMS.
pub const HEADER_SSE_CONTEXT: &str = "x-amz-server-side-encryption-context";
/// Whether SSE-KMS uses an S3 Bucket Key.
pub const HEADER_SSE_BUCKET_KEY: &str = "x-amz-server-side-encryption-bucket-key-enabled";
/// The storage class of the written object.
pub const HEADER_STORAGE_CLASS: &str = "x-amz-storage-class";

/// Server-side encryption of a written object (PutObject's
/// `ServerSideEncryption`), with what each kind takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// SSE-S3, `AES256`: keys owned and managed by S3.
    Aes256,
    /// SSE-KMS, `aws:kms`: a KMS key (the account's `aws/s3` key when none
    /// is named); the writer needs `kms:GenerateDataKey` on it, every
    /// reader `kms:Decrypt`.
    Kms {
        kms: KmsOptions,
        /// `BucketKeyEnabled`: an S3 Bucket Key cuts the KMS calls (and
        /// their cost); `None` leaves the bucket's setting.
        bucket_key_enabled: Option<bool>,
    },
    /// DSSE-KMS, `aws:kms:dsse`: two layers of encryption with a KMS key.
    /// S3 Bucket Keys do not apply to it, so it has no such field.
    KmsDsse(KmsOptions),
}

impl ServerSideEncryption {
    /// The `x-amz-server-side-encryption` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ServerSideEncryption::Aes256 => "AES256",
            ServerSideEncryption::Kms { .. } => "aws:kms",
            ServerSideEncryption::KmsDsse(_) => "aws:kms:dsse",
        }
    }

    /// The KMS parameters, for the kinds that use KMS.
    pub fn kms(&self) -> Option<&KmsOptions> {
        match self {
            ServerSideEncryption::Aes256 => None,
            ServerSideEncryption::Kms { kms, .. } | ServerSideEncryption::KmsDsse(kms) => Some(kms),
        }
    }
}

/// The KMS key and encryption context of SSE-KMS or DSSE-KMS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KmsOptions {
    /// `SSEKMSKeyId`; `None`: the account's AWS managed key `aws/s3`.
    pub key_id: Option<KmsKeyId>,
    /// `SSEKMSEncryptionContext`.
    pub context: Option<EncryptionContext>,
}

/// A KMS key as S3 takes it: key id, key ARN, alias (`alias/name`) or
/// alias ARN. Only its shape as a header value is checked: whether the key
/// exists and may be used is for KMS to say at the first PUT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsKeyId(String);

impl KmsKeyId {
    /// Refuses an empty value and anything but visible ASCII (a header
    /// value that every hop passes unchanged, so the signature holds).
    pub fn parse(value: &str) -> Result<Self, S3OptionError> {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(S3OptionError::InvalidKmsKeyId);
        }
        Ok(KmsKeyId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A KMS encryption context as the AWS SDK takes it for PutObject: base64
/// of a UTF-8 JSON object of string pairs. Checked once here, because S3
/// answers a malformed one only with a 400 at the first PUT; sent as given
/// (re-encoding could reorder the pairs, and readers of CloudTrail compare
/// the text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionContext(String);

impl EncryptionContext {
    pub fn parse(value: &str) -> Result<Self, S3OptionError> {
        let bytes = base64_codec::decode(value, Padding::Canonical)
            .ok_or(S3OptionError::ContextNotBase64)?;
        let pairs = match json::parse(&bytes) {
            Ok(json::Value::Object(pairs)) => pairs,
            _ => return Err(S3OptionError::ContextNotJsonObject),
        };
        if let Some((name, _)) = pairs.iter().find(|(_, v)| !v.is_string()) {
            return Err(S3OptionError::ContextValueNotString(name.to_string()));
        }
        Ok(EncryptionContext(value.to_string()))
    }

    /// The base64 text, as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// S3 storage classes (PutObject's `StorageClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageClass {
    Standard,
    ReducedRedundancy,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    Glacier,
    DeepArchive,
    Outposts,
    GlacierIr,
    Snow,
    ExpressOnezone,
}

impl StorageClass {
    /// Every class, in S3's documentation order.
    pub const ALL: [StorageClass; 11] = [
        StorageClass::Standard,
        StorageClass::ReducedRedundancy,
        StorageClass::StandardIa,
        StorageClass::OnezoneIa,
        StorageClass::IntelligentTiering,
        StorageClass::Glacier,
        StorageClass::DeepArchive,
        StorageClass::Outposts,
        StorageClass::GlacierIr,
        StorageClass::Snow,
        StorageClass::ExpressOnezone,
    ];

    /// The `x-amz-storage-class` value.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::ReducedRedundancy => "REDUCED_REDUNDANCY",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
            StorageClass::Outposts => "OUTPOSTS",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Snow => "SNOW",
            StorageClass::ExpressOnezone => "EXPRESS_ONEZONE",
        }
    }

    /// The class named exactly `name` (S3's names are upper case).
    pub fn parse(name: &str) -> Result<StorageClass, S3OptionError> {
        StorageClass::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or(S3OptionError::UnknownStorageClass)
    }

    /// Whether a GET of an object in this class answers at once. GLACIER
    /// and DEEP_ARCHIVE objects must be restored first (a GET answers 403
    /// `InvalidObjectState`), which would break import and the election,
    /// both of which read what the filter wrote.
    pub fn readable_at_once(self) -> bool {
        !matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }
}

/// Why a PutObject parameter value was refused (the caller names the
/// parameter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3OptionError {
    /// `ServerSideEncryption` is none of `AES256`, `aws:kms`, `aws:kms:dsse`.
    UnknownEncryption,
    /// `StorageClass` is not one of [`StorageClass::ALL`].
    UnknownStorageClass,
    /// `SSEKMSKeyId` is empty or not visible ASCII.
    InvalidKmsKeyId,
    /// `SSEKMSEncryptionContext` is not standard base64.
    ContextNotBase64,
    /// It decodes, but not to a JSON object.
    ContextNotJsonObject,
    /// A pair of the context whose value is not a string (KMS takes only
    /// string pairs); the pair's name is given.
    ContextValueNotString(String),
}

impl fmt::Display for S3OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3OptionError::UnknownEncryption => {
                f.write_str("must be \"AES256\", \"aws:kms\" or \"aws:kms:dsse\"")
            }
            S3OptionError::UnknownStorageClass => {
                f.write_str("must be one of")?;
                for (i, c) in StorageClass::ALL.iter().enumerate() {
                    f.write_str(if i == 0 { " " } else { ", " })?;
                    f.write_str(c.as_str())?;
                }
                Ok(())
            }
            S3OptionError::InvalidKmsKeyId => f.write_str(
                "must be a KMS key id, key ARN, alias or alias ARN (non-empty, no spaces or control characters)",
            ),
            S3OptionError::ContextNotBase64 => f.write_str(
                "must be base64 of a JSON object of string pairs, as the AWS SDK takes it (it is not base64)",
            ),
            S3OptionError::ContextNotJsonObject => f.write_str(
                "must be base64 of a JSON object of string pairs, as the AWS SDK takes it (it decodes to something else)",
            ),
            S3OptionError::ContextValueNotString(name) => write!(
                f,
                "must be base64 of a JSON object of string pairs; the value of {name:?} is not a string"
            ),
        }
    }
}

impl std::error::Error for S3OptionError {}

/// A GET of `key`.
pub(super) fn get(
    s3: &S3Settings,
    via: Via<'_>,
    bucket: &str,
    key: &str,
    now: Timestamp,
) -> Result<HttpRequest, StorageError> {
    request(s3, via, bucket, "GET", key, "", None, &[], now).map_err(StorageError::Signing)
}

/// ListObjectsV2 of the "folders" directly under `prefix` (delimiter
/// `/`), from the page `token` on.
pub(super) fn list(
    s3: &S3Settings,
    via: Via<'_>,
    bucket: &str,
    prefix: &str,
    token: Option<&str>,
    now: Timestamp,
) -> Result<HttpRequest, StorageError> {
    let mut query = String::new();
    if let Some(t) = token {
        query.push_str(&format!(
            "continuation-token={}&",
            sigv4::uri_encode(t, true)
        ));
    }
    query.push_str(&format!(
        "delimiter=%2F&list-type=2&prefix={}",
        sigv4::uri_encode(prefix, true)
    ));
    request(s3, via, bucket, "GET", "", &query, None, &[], now).map_err(StorageError::Signing)
}

/// The outcome of a ListObjectsV2: the common prefixes and the next page.
pub(super) fn list_result(response: HttpResponse) -> Result<ListPage, StorageError> {
    if response.status != 200 {
        return Err(classify_error(&response));
    }
    let body = String::from_utf8_lossy(&response.body);
    if super::xml::elements(&body, "ListBucketResult").is_empty() {
        return Err(StorageError::Unreadable {
            what: "ListObjectsV2 answer",
            detail: response.body_excerpt(80),
        });
    }
    let prefixes = super::xml::elements(&body, "CommonPrefixes")
        .iter()
        .flat_map(|cp| super::xml::elements(cp, "Prefix"))
        .collect();
    let truncated = super::xml::element(&body, "IsTruncated").as_deref() == Some("true");
    let next = super::xml::element(&body, "NextContinuationToken").filter(|_| truncated);
    Ok(ListPage { prefixes, next })
}

/// A PUT of `key` with S3's conditional headers for `mode` and the
/// configured [`S3PutOptions`], all of them signed.
#[allow(clippy::too_many_arguments)]
pub(super) fn put(
    s3: &S3Settings,
    via: Via<'_>,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
    mode: &PutMode,
    now: Timestamp,
) -> Result<HttpRequest, StorageError> {
    let mut headers = vec![("content-type".to_string(), content_type.to_string())];
    headers.extend(s3.put_options.headers());
    match mode {
        PutMode::Overwrite => {}
        PutMode::Create => headers.push(("if-none-match".into(), "*".into())),
        PutMode::Update { etag } => headers.push(("if-match".into(), etag.clone())),
    }
    request(s3, via, bucket, "PUT", key, "", Some(body), &headers, now)
        .map_err(StorageError::Signing)
}

/// The outcome of a GET.
pub(super) fn read_result(response: HttpResponse) -> Result<Object, StorageError> {
    match response.status {
        200 => Ok(Object::from_response(response, "etag")),
        _ => Err(classify_error(&response)),
    }
}

/// The outcome of a PUT: the new ETag.
pub(super) fn write_result(response: &HttpResponse) -> Result<Option<String>, StorageError> {
    match response.status {
        200..=299 => Ok(response.header("etag").map(str::to_string)),
        _ => Err(classify_error(response)),
    }
}

/// Builds a (signed, when credentials are set) object request.
#[allow(clippy::too_many_arguments)]
fn request(
    s3: &S3Settings,
    via: Via<'_>,
    bucket: &str,
    method: &str,
    key: &str,
    query: &str,
    body: Option<Vec<u8>>,
    extra_headers: &[(String, String)],
    now: Timestamp,
) -> Result<HttpRequest, SigningError> {
    let encoded_key = sigv4::uri_encode(key, false);
    let (authority, path) = match &s3.addressing {
        S3Addressing::VirtualHosted => (
            format!("{bucket}.s3.{}.amazonaws.com", s3.region),
            format!("/{encoded_key}"),
        ),
        S3Addressing::PathStyle {
            authority,
            base_path,
            ..
        } => {
            let bucket_path = format!(
                "{}/{}",
                sigv4::uri_encode(base_path, false),
                sigv4::uri_encode(bucket, true)
            );
            // A bucket request (a listing) has no trailing `/`.
            let path = match key {
                "" => bucket_path,
                _ => format!("{bucket_path}/{encoded_key}"),
            };
            (authority.clone(), path)
        }
    };
    let mut headers = extra_headers.to_vec();
    // Fetched (temporary) credentials win over static ones.
    let credentials = match via.credential {
        Some(Credential::Aws(fetched)) => Some(fetched),
        _ => s3.credentials.as_ref(),
    };
    if let Some(credentials) = credentials {
        let mut to_sign = headers.clone();
        to_sign.push(("host".to_string(), authority.clone()));
        let payload = body.as_deref().unwrap_or_default();
        let signed = sigv4::sign(
            &SignableRequest {
                method,
                path: &path,
                query,
                headers: &to_sign,
            },
            &SigningParams::s3(credentials, &s3.region, now, PayloadHash::Body(payload)),
        )?;
        headers.extend(signed.headers);
    }
    let path = match query {
        "" => path,
        q => format!("{path}?{q}"),
    };
    Ok(HttpRequest {
        cluster: via.cluster.to_string(),
        method: method.to_string(),
        path,
        authority,
        headers,
        body,
        timeout: via.timeout,
    })
}

/// Maps an error answer to a [`StorageError`], reading S3's XML error body
/// (`<Error><Code>…</Code><Message>…</Message></Error>`) when there is one.
pub(super) fn classify_error(response: &HttpResponse) -> StorageError {
    let body = String::from_utf8_lossy(&response.body);
    let code = super::xml::element(&body, "Code");
    match response.status {
        404 => StorageError::NotFound { code },
        412 => StorageError::PreconditionFailed,
        status => StorageError::Status {
            status,
            message: super::xml::element(&body, "Message").or_else(|| {
                // Not an S3 answer (e.g. the proxy's own "upstream connect error").
                (code.is_none() && !response.body.is_empty()).then(|| response.body_excerpt(200))
            }),
            code,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;
    use crate::secret::Secret;
    use crate::storage::{Backend, ObjectStore, PutMode, StorageLocation, StorageSettings};
    use std::time::Duration;

    fn store(addressing: S3Addressing, credentials: Option<Credentials>) -> ObjectStore {
        ObjectStore::new(StorageSettings {
            location: StorageLocation::parse("s3://bkt/pre/fix").unwrap(),
            cluster: "object_storage".into(),
            timeout: Duration::from_secs(5),
            max_object_bytes: 1 << 20,
            backend: Backend::S3(S3Settings {
                addressing,
                region: "us-east-1".into(),
                credentials,
                put_options: S3PutOptions::default(),
            }),
            credentials: None,
            signing: crate::storage::Signing::Filter,
        })
    }

    fn store_with(options: S3PutOptions) -> ObjectStore {
        ObjectStore::new(StorageSettings {
            location: StorageLocation::parse("s3://bkt/pre/fix").unwrap(),
            cluster: "object_storage".into(),
            timeout: Duration::from_secs(5),
            max_object_bytes: 1 << 20,
            backend: Backend::S3(S3Settings {
                addressing: S3Addressing::parse_endpoint("http://127.0.0.1:9000").unwrap(),
                region: "us-east-1".into(),
                credentials: Some(creds()),
                put_options: options,
            }),
            credentials: None,
            signing: crate::storage::Signing::Filter,
        })
    }

    /// base64 of `{"app":"fallback-config"}`.
    const CONTEXT: &str = "eyJhcHAiOiJmYWxsYmFjay1jb25maWcifQ==";

    fn kms_options() -> S3PutOptions {
        S3PutOptions {
            encryption: Some(ServerSideEncryption::Kms {
                kms: KmsOptions {
                    key_id: Some(KmsKeyId::parse("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap()),
                    context: Some(EncryptionContext::parse(CONTEXT).unwrap()),
                },
                bucket_key_enabled: Some(true),
            }),
            storage_class: Some(StorageClass::StandardIa),
        }
    }

    /// What a verifying server does: re-signs the request as received,
    /// with exactly the headers its `SignedHeaders` names, and returns
    /// (the signature it computes, the one sent, the signed header names).
    fn server_side_check(r: &HttpRequest, now: Timestamp) -> (String, String, Vec<String>) {
        let auth = header(r, "authorization").unwrap();
        let signed: Vec<String> = auth
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .split(';')
            .map(str::to_string)
            .collect();
        let sent = auth.rsplit("Signature=").next().unwrap().to_string();
        let mut headers: Vec<(String, String)> = vec![("host".into(), r.authority.clone())];
        // The signer adds these itself.
        let added = ["x-amz-date", "x-amz-content-sha256", "x-amz-security-token"];
        headers.extend(
            r.headers
                .iter()
                .filter(|(k, _)| signed.contains(k) && !added.contains(&k.as_str()))
                .cloned(),
        );
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        let out = sigv4::sign(
            &SignableRequest {
                method: &r.method,
                path,
                query,
                headers: &headers,
            },
            &SigningParams::s3(
                &creds(),
                "us-east-1",
                now,
                PayloadHash::Body(r.body.as_deref().unwrap_or_default()),
            ),
        )
        .unwrap();
        (out.signature, sent, signed)
    }

    #[test]
    fn put_options_map_to_their_headers() {
        let h = |o: &S3PutOptions| {
            o.headers()
                .into_iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
        };
        assert!(S3PutOptions::default().is_empty());
        assert!(h(&S3PutOptions::default()).is_empty());
        assert_eq!(
            h(&kms_options()),
            [
                "x-amz-server-side-encryption: aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                &format!("x-amz-server-side-encryption-context: {CONTEXT}"),
                "x-amz-server-side-encryption-bucket-key-enabled: true",
                "x-amz-storage-class: STANDARD_IA",
            ]
        );
        let sse_s3 = S3PutOptions {
            encryption: Some(ServerSideEncryption::Aes256),
            storage_class: None,
        };
        assert_eq!(h(&sse_s3), ["x-amz-server-side-encryption: AES256"]);
        let dsse = S3PutOptions {
            encryption: Some(ServerSideEncryption::KmsDsse(KmsOptions {
                key_id: Some(KmsKeyId::parse("alias/fallback").unwrap()),
                context: None,
            })),
            storage_class: None,
        };
        assert_eq!(
            h(&dsse),
            [
                "x-amz-server-side-encryption: aws:kms:dsse",
                "x-amz-server-side-encryption-aws-kms-key-id: alias/fallback",
            ]
        );
        // The account's aws/s3 key, Bucket Key explicitly off.
        let default_key = S3PutOptions {
            encryption: Some(ServerSideEncryption::Kms {
                kms: KmsOptions::default(),
                bucket_key_enabled: Some(false),
            }),
            storage_class: Some(StorageClass::IntelligentTiering),
        };
        assert_eq!(
            h(&default_key),
            [
                "x-amz-server-side-encryption: aws:kms",
                "x-amz-server-side-encryption-bucket-key-enabled: false",
                "x-amz-storage-class: INTELLIGENT_TIERING",
            ]
        );
    }

    #[test]
    fn every_put_carries_the_options_signed() {
        let s = store_with(kms_options());
        let now = Timestamp::from_secs(1_440_938_160);
        let config = s.key("0.1.0", "config.json");
        let lease = s.key("0.1.0", "election/lease.json");
        let expected_signed = [
            "content-type",
            "host",
            "x-amz-content-sha256",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-server-side-encryption",
            "x-amz-server-side-encryption-aws-kms-key-id",
            "x-amz-server-side-encryption-bucket-key-enabled",
            "x-amz-server-side-encryption-context",
            "x-amz-storage-class",
        ];
        for (key, mode, condition) in [
            (&config, PutMode::Overwrite, None),
            (&lease, PutMode::Create, Some("if-none-match")),
            (
                &lease,
                PutMode::Update {
                    etag: "\"e1\"".into(),
                },
                Some("if-match"),
            ),
        ] {
            let r = s
                .put(key, b"{}".to_vec(), &mode, Now::from_wall(now))
                .unwrap();
            for (name, value) in kms_options().headers() {
                assert_eq!(header(&r, &name), Some(value.as_str()), "{name} on {key}");
            }
            let (computed, sent, signed) = server_side_check(&r, now);
            let mut expected: Vec<&str> = expected_signed.to_vec();
            if let Some(c) = condition {
                expected.push(c);
                expected.sort_unstable();
            }
            assert_eq!(signed, expected, "SignedHeaders of the PUT of {key}");
            assert_eq!(computed, sent, "a verifier recomputes the signature");
            // The values are covered: a hop that swaps the key is caught.
            let mut forged = r.clone();
            for (k, v) in forged.headers.iter_mut() {
                if k == HEADER_SSE_KMS_KEY_ID {
                    *v = "alias/attacker".into();
                }
            }
            let (forged_sig, _, _) = server_side_check(&forged, now);
            assert_ne!(forged_sig, sent, "the KMS key id is part of the signature");
        }
        // Reads and listings carry none of them.
        let get = s.get(&config, Now::from_wall(now)).unwrap();
        let list = s.list_versions(None, Now::from_wall(now)).unwrap();
        for r in [get, list] {
            assert!(
                r.headers
                    .iter()
                    .all(|(k, _)| !k.starts_with("x-amz-server-side") && k != HEADER_STORAGE_CLASS),
                "{:?}",
                r.headers
            );
        }
    }

    #[test]
    fn put_options_unsigned_when_anonymous() {
        let settings = S3Settings {
            addressing: S3Addressing::VirtualHosted,
            region: "us-east-1".into(),
            credentials: None,
            put_options: kms_options(),
        };
        let r = put(
            &settings,
            Via {
                cluster: "c",
                timeout: Duration::from_secs(1),
                credential: None,
            },
            "bkt",
            "k",
            Vec::new(),
            "application/json",
            &PutMode::Overwrite,
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(header(&r, HEADER_SSE), Some("aws:kms"));
        assert_eq!(header(&r, "authorization"), None);
    }

    #[test]
    fn option_values_are_checked() {
        for c in StorageClass::ALL {
            assert_eq!(StorageClass::parse(c.as_str()), Ok(c));
        }
        assert_eq!(
            StorageClass::parse("standard"),
            Err(S3OptionError::UnknownStorageClass)
        );
        assert!(S3OptionError::UnknownStorageClass
            .to_string()
            .contains("STANDARD, REDUCED_REDUNDANCY, STANDARD_IA"));
        assert!(!StorageClass::Glacier.readable_at_once());
        assert!(!StorageClass::DeepArchive.readable_at_once());
        assert!(StorageClass::GlacierIr.readable_at_once());
        assert!(EncryptionContext::parse(CONTEXT).is_ok());
        assert_eq!(EncryptionContext::parse(CONTEXT).unwrap().as_str(), CONTEXT);
        // `{}` is a valid (empty) context.
        assert!(EncryptionContext::parse("e30=").is_ok());
        for (bad, error) in [
            ("not base64!", S3OptionError::ContextNotBase64),
            // `{"app":"x"}` without its base64: plain JSON is refused.
            ("{\"app\":\"x\"}", S3OptionError::ContextNotBase64),
            // base64 of `[1]`, of `nope`.
            ("WzFd", S3OptionError::ContextNotJsonObject),
            ("bm9wZQ==", S3OptionError::ContextNotJsonObject),
            // base64 of `{"n":1}`.
            (
                "eyJuIjoxfQ==",
                S3OptionError::ContextValueNotString("n".into()),
            ),
        ] {
            assert_eq!(EncryptionContext::parse(bad), Err(error), "{bad}");
        }
        for bad in ["", "a b", "key\n", "clé"] {
            assert_eq!(
                KmsKeyId::parse(bad),
                Err(S3OptionError::InvalidKmsKeyId),
                "{bad:?}"
            );
        }
        assert!(KmsKeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").is_ok());
    }

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("token")),
        }
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn path_style_get_is_signed() {
        let s = store(
            S3Addressing::parse_endpoint("http://127.0.0.1:9000/").unwrap(),
            Some(creds()),
        );
        let key = s.key("0.1.0", "config.json");
        assert_eq!(key, "pre/fix/0.1.0/config.json");
        let r = s
            .get(&key, Now::from_wall(Timestamp::from_secs(1_440_938_160)))
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.authority, "127.0.0.1:9000");
        assert_eq!(r.path, "/bkt/pre/fix/0.1.0/config.json");
        assert_eq!(r.cluster, "object_storage");
        assert_eq!(header(&r, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&r, "x-amz-security-token"), Some("token"));
        assert_eq!(
            header(&r, "x-amz-content-sha256"),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let auth = header(&r, "authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
            ),
            "{auth}"
        );
        assert!(!format!("{r:?}").contains("wJalr"));
    }

    #[test]
    fn virtual_hosted_put_with_modes() {
        let s = store(S3Addressing::VirtualHosted, Some(creds()));
        let r = s
            .put(
                "a b/c+d.json",
                b"{}".to_vec(),
                &PutMode::Create,
                Now::from_wall(Timestamp(0)),
            )
            .unwrap();
        assert_eq!(r.authority, "bkt.s3.us-east-1.amazonaws.com");
        assert_eq!(r.path, "/a%20b/c%2Bd.json");
        assert_eq!(header(&r, "if-none-match"), Some("*"));
        assert!(header(&r, "authorization")
            .unwrap()
            .contains("if-none-match"));
        let r = s
            .put(
                "k",
                b"{}".to_vec(),
                &PutMode::Update {
                    etag: "\"e\"".into(),
                },
                Now::from_wall(Timestamp(0)),
            )
            .unwrap();
        assert_eq!(header(&r, "if-match"), Some("\"e\""));
        assert_eq!(r.body.as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn anonymous_requests_are_unsigned() {
        let s = store(S3Addressing::VirtualHosted, None);
        let r = s.get("k", Now::from_wall(Timestamp(0))).unwrap();
        assert!(header(&r, "authorization").is_none());
    }

    #[test]
    fn endpoint_parsing() {
        assert_eq!(
            S3Addressing::parse_endpoint("https://s.example:443/base/"),
            Ok(S3Addressing::PathStyle {
                scheme: UrlScheme::Https,
                authority: "s.example:443".into(),
                base_path: "/base".into()
            })
        );
        assert_eq!(
            S3Addressing::parse_endpoint(" http://127.0.0.1:9000 "),
            Ok(S3Addressing::PathStyle {
                scheme: UrlScheme::Http,
                authority: "127.0.0.1:9000".into(),
                base_path: String::new()
            })
        );
        assert_eq!(
            S3Addressing::parse_endpoint("127.0.0.1:9000"),
            Err(EndpointError::NoScheme)
        );
        assert_eq!(
            S3Addressing::parse_endpoint("http://"),
            Err(EndpointError::NoHost)
        );
        assert_eq!(
            S3Addressing::parse_endpoint("http:///x"),
            Err(EndpointError::NoHost)
        );
        assert_eq!(
            EndpointError::NoHost.to_string(),
            "must name a host, as in http://127.0.0.1:9000"
        );
    }

    #[test]
    fn the_scheme_does_not_change_the_request() {
        let get = |endpoint: &str| {
            store(
                S3Addressing::parse_endpoint(endpoint).unwrap(),
                Some(creds()),
            )
            .get("k", Now::from_wall(Timestamp(0)))
            .unwrap()
        };
        let (plain, tls) = (get("http://s.example/b"), get("https://s.example/b"));
        assert_eq!(tls.authority, "s.example");
        assert_eq!(tls.path, "/b/bkt/k");
        assert_eq!(plain, tls);
    }

    /// The scheme cannot be checked against the cluster: it is said once,
    /// as a warning when it is clear text off this host.
    #[test]
    fn the_endpoints_scheme_is_announced() {
        use crate::event::{Event, Level};
        let notice = |addressing| store(addressing, None).transport_notice();
        let aws = notice(S3Addressing::VirtualHosted);
        assert_eq!(
            aws,
            Event::StorageTransport {
                endpoint: "https://bkt.s3.us-east-1.amazonaws.com".into(),
                cluster: "object_storage".into(),
                tls: true,
                loopback: false
            }
        );
        assert_eq!(aws.level(), Level::Info);
        assert!(aws
            .to_string()
            .contains("TLS and certificate validation are that cluster's transport socket"));
        let local = notice(S3Addressing::parse_endpoint("http://127.0.0.1:9000").unwrap());
        assert_eq!(local.level(), Level::Debug);
        let remote = notice(S3Addressing::parse_endpoint("http://minio.internal:9000").unwrap());
        assert_eq!(remote.level(), Level::Warn);
        assert_eq!(
            remote.to_string(),
            "storage endpoint http://minio.internal:9000 is http://: snapshots, signatures and tokens travel in clear text unless cluster object_storage adds TLS; use https:// and a TLS cluster"
        );
    }

    #[test]
    fn classifies_errors() {
        let resp = |status, body: &str| HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        let s = store(S3Addressing::VirtualHosted, None);
        let denied = resp(
            403,
            "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>",
        );
        let e = s.read_result(denied).unwrap_err();
        assert_eq!(
            e.to_string(),
            "storage answered 403 SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(
            s.read_result(resp(404, "<Error><Code>NoSuchKey</Code></Error>")),
            Err(StorageError::NotFound {
                code: Some("NoSuchKey".into())
            })
        );
        assert_eq!(
            s.write_result(&resp(412, "")),
            Err(StorageError::PreconditionFailed)
        );
        let e = s
            .read_result(resp(503, "upstream connect error or disconnect"))
            .unwrap_err();
        // Envoy's own 503: named as such, not as the store's answer; over
        // https, with where to see a failed TLS handshake.
        assert_eq!(
            e.to_string(),
            "the proxy got no answer from the upstream: upstream connect error or disconnect (if the TLS handshake failed, e.g. a certificate that does not verify, Envoy counts it in cluster.object_storage.ssl.fail_verify_error or ssl.fail_verify_san)"
        );
        let plain = store(
            S3Addressing::parse_endpoint("http://127.0.0.1:9000").unwrap(),
            None,
        );
        assert_eq!(
            plain
                .read_result(resp(503, "upstream connect error or disconnect"))
                .unwrap_err()
                .to_string(),
            "the proxy got no answer from the upstream: upstream connect error or disconnect"
        );
        let e = s
            .read_result(resp(
                503,
                "<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>",
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "storage answered 503 SlowDown: Reduce your rate"
        );
        let ok = HttpResponse {
            status: 200,
            headers: vec![("ETag".into(), "\"x\"".into())],
            body: b"hi".to_vec(),
        };
        assert_eq!(s.read_result(ok).unwrap().etag.as_deref(), Some("\"x\""));
    }
}
