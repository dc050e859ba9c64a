//! Amazon S3 and S3-compatible stores: request building (addressing and
//! SigV4 with S3's rules) and error classification.

use super::endpoint::{Endpoint, EndpointError, UrlScheme};
use super::model::{ListPage, Object, PutMode, StorageError, Via};
use crate::http::{HttpRequest, HttpResponse};
use crate::sigv4::{self, Credentials, PayloadHash, SignableRequest, SigningError, SigningParams};
use crate::time::Timestamp;

/// How the bucket is addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Addressing {
    /// AWS: `<bucket>.s3.<region>.amazonaws.com/<key>`.
    VirtualHosted,
    /// An explicit endpoint (MinIO, s3s, GCS interoperability, ...):
    /// `<authority><base_path>/<bucket>/<key>`.
    PathStyle {
        /// As written in the endpoint; kept, not yet acted on (TLS is the
        /// transport socket of the Envoy cluster).
        scheme: UrlScheme,
        /// `host[:port]`: the `:authority` (and signed `host`).
        authority: String,
        /// Empty, or starting with `/`; never ending with `/`.
        base_path: String,
    },
}

impl S3Addressing {
    /// Parses `http(s)://host[:port][/base]` ([`Endpoint::parse`]). The
    /// scheme is kept but not yet acted on: requests carry `host[:port]`
    /// only, and TLS is the transport socket of the Envoy cluster.
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
}

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

/// A PUT of `key` with S3's conditional headers for `mode`.
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
    if let Some(credentials) = &s3.credentials {
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
            }),
        })
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
        // Envoy's own 503: named as such, not as the store's answer.
        assert_eq!(
            e.to_string(),
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
