//! Google Cloud Storage through its JSON API: request building and answer
//! classification, the same inner shape as the S3 backend.
//!
//! Objects are read with `GET …/o/<name>?alt=media` and written with a
//! single-request media upload (`POST /upload/…?uploadType=media`), the
//! simplest API calls that carry a whole small object. Conditional writes
//! use `ifGenerationMatch`: a GCS object's *generation* changes on every
//! write, so it plays the role of S3's ETag, and this backend reports it
//! (decimal) wherever the storage interface speaks of an ETag.
//!
//! Authentication is an OAuth access token (see [`super::gcp_auth`]),
//! passed in by the caller; without one requests are anonymous, which a
//! public bucket or an emulator accepts.

use super::endpoint::{Endpoint, EndpointError, UrlScheme};
use super::model::{ListPage, Object, PutMode, StorageError, Via};
use crate::http::{HttpRequest, HttpResponse};
use crate::json::{self, Value};
use crate::secret::Secret;
use crate::sigv4::uri_encode;

/// The public JSON API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Where to reach GCS (as whom: [`super::credentials`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcsSettings {
    /// The API endpoint's scheme: whether the Envoy cluster is expected to
    /// use TLS (announced once, not enforced: TLS is its transport socket).
    pub scheme: UrlScheme,
    /// `host[:port]` of the API endpoint (`storage.googleapis.com`).
    pub authority: String,
    /// Prefix of every API path, without a trailing `/`; empty for Google.
    /// An emulator or gateway may serve the API under a sub-path.
    pub base_path: String,
    /// `storage.kms_key_name`: the Cloud KMS key every upload is encrypted
    /// with (CMEK); `None`: the bucket's default key, else Google's.
    pub kms_key_name: Option<KmsKeyName>,
}

/// A Cloud KMS key's resource name,
/// `projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>`, as the JSON
/// API's `kmsKeyName` upload parameter takes it.
///
/// Checked for that shape only (the four fixed words in place, no empty
/// segment, no spaces or control characters): whether the key exists and
/// the bucket's service agent may use it is for GCS to say at the first
/// upload, but a key version (`/cryptoKeyVersions/1`) or a pasted URL is
/// a mistake GCS would only answer with a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsKeyName(String);

impl KmsKeyName {
    pub fn parse(name: &str) -> Result<Self, KmsKeyNameError> {
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(KmsKeyNameError::Characters);
        }
        let segments: Vec<&str> = name.split('/').collect();
        let shape_ok = segments.len() == 8
            && segments.iter().all(|s| !s.is_empty())
            && ["projects", "locations", "keyRings", "cryptoKeys"]
                .iter()
                .enumerate()
                .all(|(i, word)| segments[2 * i] == *word);
        if !shape_ok {
            return Err(KmsKeyNameError::Shape);
        }
        Ok(KmsKeyName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a `storage.kms_key_name` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmsKeyNameError {
    /// Spaces or control characters.
    Characters,
    /// Not `projects/*/locations/*/keyRings/*/cryptoKeys/*`.
    Shape,
}

impl std::fmt::Display for KmsKeyNameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KmsKeyNameError::Characters => "must not contain spaces or control characters",
            KmsKeyNameError::Shape => {
                "must be a Cloud KMS key name, projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key> (no key version)"
            }
        })
    }
}

impl std::error::Error for KmsKeyNameError {}

impl GcsSettings {
    /// Settings for `endpoint` (`http(s)://host[:port][/base]`, see
    /// [`Endpoint::parse`]), or for [`DEFAULT_ENDPOINT`] when there is none.
    /// Requests carry `host[:port]` only; the scheme says whether the
    /// Envoy cluster is expected to use TLS.
    pub fn new(endpoint: Option<&str>) -> Result<Self, EndpointError> {
        let endpoint = Endpoint::parse(endpoint.unwrap_or(DEFAULT_ENDPOINT))?;
        // A base URL is prefixed to paths that have their own query.
        if endpoint.has_query() {
            return Err(EndpointError::Query);
        }
        Ok(GcsSettings {
            scheme: endpoint.scheme,
            authority: endpoint.authority,
            base_path: endpoint.base_path,
            kms_key_name: None,
        })
    }

    /// These settings with every upload encrypted with `key` (CMEK).
    #[must_use]
    pub fn with_kms_key_name(mut self, key: Option<KmsKeyName>) -> Self {
        self.kms_key_name = key;
        self
    }
}

/// A download of `key` from `bucket`: `GET …/b/<bucket>/o/<key>?alt=media`.
///
/// Object names are percent-encoded whole, `/` included (`%2F`), here and
/// in [`put`]'s `name=`, as the JSON API requires: a name is one path
/// segment there, unlike S3 where `/` stays literal.
///
/// `token` becomes `Authorization: Bearer …` (masked in the request's
/// `Debug`); `None` sends the request anonymously.
pub fn get(
    gcs: &GcsSettings,
    via: Via<'_>,
    bucket: &str,
    key: &str,
    token: Option<&Secret>,
) -> HttpRequest {
    let path = format!(
        "{}/storage/v1/b/{}/o/{}?alt=media",
        uri_encode(&gcs.base_path, false),
        uri_encode(bucket, true),
        uri_encode(key, true)
    );
    HttpRequest {
        cluster: via.cluster.to_string(),
        method: "GET".into(),
        path,
        authority: gcs.authority.clone(),
        headers: bearer(token).into_iter().collect(),
        body: None,
        timeout: via.timeout,
    }
}

/// A listing of the "folders" directly under `prefix`:
/// `GET …/b/<bucket>/o?delimiter=/&prefix=<prefix>` (objects list), only
/// the `prefixes` and `nextPageToken` fields, from page `token` on.
pub fn list(
    gcs: &GcsSettings,
    via: Via<'_>,
    bucket: &str,
    prefix: &str,
    page: Option<&str>,
    token: Option<&Secret>,
) -> HttpRequest {
    let mut path = format!(
        "{}/storage/v1/b/{}/o?delimiter=%2F&prefix={}&fields=prefixes%2CnextPageToken",
        uri_encode(&gcs.base_path, false),
        uri_encode(bucket, true),
        uri_encode(prefix, true)
    );
    if let Some(p) = page {
        path.push_str("&pageToken=");
        path.push_str(&uri_encode(p, true));
    }
    HttpRequest {
        cluster: via.cluster.to_string(),
        method: "GET".into(),
        path,
        authority: gcs.authority.clone(),
        headers: bearer(token).into_iter().collect(),
        body: None,
        timeout: via.timeout,
    }
}

/// The outcome of an objects list: `prefixes` and `nextPageToken`.
pub fn list_result(response: HttpResponse) -> Result<ListPage, StorageError> {
    if response.status != 200 {
        return Err(classify_error(&response));
    }
    let unreadable = || StorageError::Unreadable {
        what: "objects list answer",
        detail: response.body_excerpt(80),
    };
    let v = json::parse(&response.body).map_err(|_| unreadable())?;
    let prefixes = match v.get("prefixes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => return Err(unreadable()),
    };
    let next = v
        .get("nextPageToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok(ListPage { prefixes, next })
}

/// An upload of `body` as the whole content of `key`: a single-request
/// media upload, `POST /upload/…/b/<bucket>/o?uploadType=media&name=<key>`,
/// under `mode`'s precondition: `Create` is `ifGenerationMatch=0` (matches
/// only an absent object), `Update { etag }` is `ifGenerationMatch=<etag>`
/// (the generation that [`read_result`] or [`write_result`] reported).
/// With [`GcsSettings::kms_key_name`], `&kmsKeyName=<name>` (encoded whole,
/// its `/` as `%2F`) asks GCS to encrypt the object with that key: on
/// every upload, the config and the election lease alike.
///
/// `token` as for [`get`].
#[allow(clippy::too_many_arguments)]
pub fn put(
    gcs: &GcsSettings,
    via: Via<'_>,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
    mode: &PutMode,
    token: Option<&Secret>,
) -> HttpRequest {
    let mut path = format!(
        "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
        uri_encode(&gcs.base_path, false),
        uri_encode(bucket, true),
        uri_encode(key, true)
    );
    match mode {
        PutMode::Overwrite => {}
        PutMode::Create => path.push_str("&ifGenerationMatch=0"),
        // Encoded in case a non-GCS ETag ever gets here: GCS then answers
        // 400 instead of us sending a broken query.
        PutMode::Update { etag } => {
            path.push_str("&ifGenerationMatch=");
            path.push_str(&uri_encode(etag, true));
        }
    }
    if let Some(key) = &gcs.kms_key_name {
        path.push_str("&kmsKeyName=");
        path.push_str(&uri_encode(key.as_str(), true));
    }
    let mut headers: Vec<(String, String)> = bearer(token).into_iter().collect();
    headers.push(("content-type".into(), content_type.into()));
    HttpRequest {
        cluster: via.cluster.to_string(),
        method: "POST".into(),
        path,
        authority: gcs.authority.clone(),
        headers,
        body: Some(body),
        timeout: via.timeout,
    }
}

/// The `authorization` header for an access token, if there is one.
fn bearer(token: Option<&Secret>) -> Option<(String, String)> {
    token.map(|t| ("authorization".into(), format!("Bearer {}", t.expose())))
}

/// The outcome of a GET: the content, with the generation as `etag`.
pub fn read_result(response: HttpResponse) -> Result<Object, StorageError> {
    match response.status {
        200 => Ok(Object::from_response(response, "x-goog-generation")),
        _ => Err(classify_error(&response)),
    }
}

/// The outcome of an upload: the new generation, from the object resource
/// GCS answers with (`"generation": "1700000000000000"`), else from the
/// `x-goog-generation` header.
pub fn write_result(response: &HttpResponse) -> Result<Option<String>, StorageError> {
    match response.status {
        200..=299 => {
            let from_body =
                json::parse(&response.body)
                    .ok()
                    .and_then(|v| match v.get("generation") {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    });
            Ok(from_body.or_else(|| response.header("x-goog-generation").map(str::to_string)))
        }
        _ => Err(classify_error(response)),
    }
}

/// Maps an error answer to a [`StorageError`], reading GCS's JSON error
/// (`{"error":{"code":403,"message":"…","errors":[{"reason":"forbidden"}]}}`)
/// when there is one: `code` is the first `reason` (or `error.status`),
/// `message` is `error.message`. Any other body (the proxy's own
/// `upstream connect error`, an emulator's plain text) becomes the message.
pub fn classify_error(response: &HttpResponse) -> StorageError {
    let error = json::parse(&response.body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(300).collect::<String>())
    };
    let code = error
        .as_ref()
        .and_then(|e| text(first_reason(e)).or_else(|| text(e.get("status"))));
    match response.status {
        404 => StorageError::NotFound { code },
        412 => StorageError::PreconditionFailed,
        status => {
            let message = match &error {
                Some(e) => text(e.get("message")).or_else(|| text(Some(e))),
                None => (!response.body.is_empty()).then(|| response.body_excerpt(200)),
            };
            StorageError::Status {
                status,
                code,
                message,
            }
        }
    }
}

/// `errors[0].reason` of a GCS error object.
fn first_reason(error: &Value) -> Option<&Value> {
    error
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|errors| errors.first())
        .and_then(|e| e.get("reason"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use std::time::Duration;

    fn google() -> GcsSettings {
        GcsSettings::new(None).unwrap()
    }

    const VIA: Via<'static> = Via {
        cluster: "gcs",
        timeout: Duration::from_secs(5),
        credential: None,
    };

    fn get_k(settings: &GcsSettings, key: &str, token: Option<&Secret>) -> HttpRequest {
        get(settings, VIA, "bkt", key, token)
    }

    fn put_k(settings: &GcsSettings, key: &str, mode: &PutMode) -> HttpRequest {
        put(
            settings,
            VIA,
            "bkt",
            key,
            b"{}".to_vec(),
            "application/json",
            mode,
            None,
        )
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn endpoints() {
        let g = google();
        assert_eq!(
            (g.scheme, g.authority.as_str(), g.base_path.as_str()),
            (UrlScheme::Https, "storage.googleapis.com", "")
        );
        let e = GcsSettings::new(Some("http://127.0.0.1:9023")).unwrap();
        assert_eq!(
            (e.scheme, e.authority.as_str(), e.base_path.as_str()),
            (UrlScheme::Http, "127.0.0.1:9023", "")
        );
        let e = GcsSettings::new(Some(" https://gw.example:8443/gcs/api/ ")).unwrap();
        assert_eq!(
            (e.scheme, e.authority.as_str(), e.base_path.as_str()),
            (UrlScheme::Https, "gw.example:8443", "/gcs/api")
        );
        for (bad, error) in [
            ("127.0.0.1:9023", EndpointError::NoScheme),
            ("gs://bkt", EndpointError::NoScheme),
            ("http://", EndpointError::NoHost),
            ("http:///base", EndpointError::NoHost),
            ("http://user@host", EndpointError::UserInfo),
            ("http://host?x=1", EndpointError::Query),
            ("http://host/base?x=1", EndpointError::Query),
            ("http://host/a b", EndpointError::PathCharacters),
            ("http://host/a#b", EndpointError::Fragment),
        ] {
            assert_eq!(GcsSettings::new(Some(bad)), Err(error), "{bad}");
        }
        assert_eq!(
            EndpointError::NoScheme.to_string(),
            "must start with http:// or https://"
        );
    }

    #[test]
    fn the_scheme_does_not_change_the_request() {
        let plain = GcsSettings::new(Some("http://gw.example/base")).unwrap();
        let tls = GcsSettings::new(Some("https://gw.example/base")).unwrap();
        assert_eq!(get_k(&plain, "k", None), get_k(&tls, "k", None));
        assert_eq!(get_k(&tls, "k", None).authority, "gw.example");
    }

    #[test]
    fn get_encodes_the_name_as_one_segment() {
        let token = Secret::new("ya29.sekrit");
        let r = get_k(&google(), "pre fix/0.1.0/a+b/é.json", Some(&token));
        assert_eq!(r.method, "GET");
        assert_eq!(r.authority, "storage.googleapis.com");
        assert_eq!(r.cluster, "gcs");
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(
            r.path,
            "/storage/v1/b/bkt/o/pre%20fix%2F0.1.0%2Fa%2Bb%2F%C3%A9.json?alt=media"
        );
        assert_eq!(header(&r, "authorization"), Some("Bearer ya29.sekrit"));
        assert_eq!(r.body, None);
        assert!(!format!("{r:?}").contains("sekrit"));
        // Anonymous without a token; the base path of an override endpoint.
        let emulator = GcsSettings::new(Some("http://127.0.0.1:9023/base/")).unwrap();
        let r = get_k(&emulator, "k", None);
        assert_eq!(r.authority, "127.0.0.1:9023");
        assert_eq!(r.path, "/base/storage/v1/b/bkt/o/k?alt=media");
        assert!(r.headers.is_empty());
    }

    #[test]
    fn put_is_a_media_upload_with_preconditions() {
        let g = google();
        let r = put_k(&g, "pre/0.1.0/config.json", &PutMode::Overwrite);
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.path,
            "/upload/storage/v1/b/bkt/o?uploadType=media&name=pre%2F0.1.0%2Fconfig.json"
        );
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(header(&r, "authorization"), None);
        assert_eq!(r.body.as_deref(), Some(&b"{}"[..]));
        let r = put_k(&g, "a b+c", &PutMode::Create);
        assert_eq!(
            r.path,
            "/upload/storage/v1/b/bkt/o?uploadType=media&name=a%20b%2Bc&ifGenerationMatch=0"
        );
        let update = PutMode::Update {
            etag: "1700000000123456".into(),
        };
        let r = put_k(&g, "k", &update);
        assert!(
            r.path
                .ends_with("&name=k&ifGenerationMatch=1700000000123456"),
            "{}",
            r.path
        );
        // A foreign ETag cannot break the query.
        let quoted = PutMode::Update {
            etag: "\"a&b\"".into(),
        };
        assert!(put_k(&g, "k", &quoted)
            .path
            .ends_with("&ifGenerationMatch=%22a%26b%22"));
        let token = Secret::new("ya29.sekrit");
        let r = put(
            &g,
            VIA,
            "bkt",
            "k",
            b"{}".to_vec(),
            "application/json",
            &PutMode::Overwrite,
            Some(&token),
        );
        assert_eq!(header(&r, "authorization"), Some("Bearer ya29.sekrit"));
        assert!(!format!("{r:?}").contains("sekrit"));
    }

    #[test]
    fn uploads_name_the_kms_key() {
        const KEY: &str =
            "projects/p-1/locations/europe-west1/keyRings/ring_1/cryptoKeys/fallback-key";
        let g = google().with_kms_key_name(Some(KmsKeyName::parse(KEY).unwrap()));
        for (mode, condition) in [
            (PutMode::Overwrite, ""),
            (PutMode::Create, "&ifGenerationMatch=0"),
            (
                PutMode::Update { etag: "17".into() },
                "&ifGenerationMatch=17",
            ),
        ] {
            let r = put_k(&g, "pre/k", &mode);
            assert_eq!(
                r.path,
                format!(
                    "/upload/storage/v1/b/bkt/o?uploadType=media&name=pre%2Fk{condition}&kmsKeyName=projects%2Fp-1%2Flocations%2Feurope-west1%2FkeyRings%2Fring_1%2FcryptoKeys%2Ffallback-key"
                ),
                "{mode:?}"
            );
            // One parameter, which decodes to the name as configured.
            let query = r.path.split_once('?').unwrap().1;
            let values: Vec<String> = query
                .split('&')
                .filter_map(|p| p.strip_prefix("kmsKeyName="))
                .map(|v| crate::http::percent_decode(v, false))
                .collect();
            assert_eq!(values, [KEY]);
        }
        // Reads and listings do not carry it (GCS decrypts by itself).
        assert!(!get_k(&g, "k", None).path.contains("kmsKeyName"));
        assert!(!put_k(&google(), "k", &PutMode::Overwrite)
            .path
            .contains("kmsKeyName"));
    }

    #[test]
    fn kms_key_names_are_checked_for_shape() {
        assert!(KmsKeyName::parse("projects/p/locations/global/keyRings/r/cryptoKeys/k").is_ok());
        for bad in [
            "",
            "fallback-key",
            "projects/p/locations/global/keyRings/r/cryptoKeys/",
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            "projects/p/locations/global/keyRings/r/keys/k",
            "projects//locations/global/keyRings/r/cryptoKeys/k",
            "https://cloudkms.googleapis.com/v1/projects/p/locations/global/keyRings/r/cryptoKeys/k",
        ] {
            assert_eq!(KmsKeyName::parse(bad), Err(KmsKeyNameError::Shape), "{bad}");
        }
        assert_eq!(
            KmsKeyName::parse("projects/p/locations/global/keyRings/r/cryptoKeys/k k"),
            Err(KmsKeyNameError::Characters)
        );
        assert!(KmsKeyNameError::Shape
            .to_string()
            .contains("projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>"));
    }

    #[test]
    fn reads_generation_and_dates() {
        let ok = resp(
            200,
            &[
                ("X-Goog-Generation", "1700000000123456"),
                ("ETag", "CMDI8qDB0YIDEAE="),
                ("Last-Modified", "Sun, 30 Aug 2015 12:36:00 GMT"),
                ("Date", "Sun, 30 Aug 2015 12:38:00 GMT"),
            ],
            "{\"a\":1}",
        );
        assert_eq!(
            read_result(ok),
            Ok(Object {
                body: b"{\"a\":1}".to_vec(),
                etag: Some("1700000000123456".into()),
                last_modified: Some(Timestamp::from_secs(1_440_938_160)),
                date: Some(Timestamp::from_secs(1_440_938_280)),
                content_type: None,
            })
        );
        let bare = read_result(resp(200, &[], "")).unwrap();
        assert_eq!(
            (bare.etag, bare.last_modified, bare.date),
            (None, None, None)
        );
    }

    #[test]
    fn write_result_is_the_new_generation() {
        let body = r#"{"kind":"storage#object","name":"k","bucket":"bkt","generation":"1700000000123456","metageneration":"1"}"#;
        assert_eq!(
            write_result(&resp(200, &[], body)),
            Ok(Some("1700000000123456".into()))
        );
        assert_eq!(
            write_result(&resp(200, &[], r#"{"generation":42}"#)),
            Ok(Some("42".into()))
        );
        assert_eq!(
            write_result(&resp(200, &[("x-goog-generation", "7")], "")),
            Ok(Some("7".into()))
        );
        assert_eq!(write_result(&resp(200, &[], "{}")), Ok(None));
    }

    #[test]
    fn classifies_errors() {
        let not_found = r#"{"error":{"code":404,"message":"No such object: bkt/k","errors":[{"message":"No such object: bkt/k","domain":"global","reason":"notFound"}]}}"#;
        assert_eq!(
            read_result(resp(404, &[], not_found)),
            Err(StorageError::NotFound {
                code: Some("notFound".into())
            })
        );
        assert_eq!(
            read_result(resp(404, &[], "")),
            Err(StorageError::NotFound { code: None })
        );
        let conflict = r#"{"error":{"code":412,"message":"At least one of the pre-conditions you specified did not hold.","errors":[{"reason":"conditionNotMet"}]}}"#;
        assert_eq!(
            write_result(&resp(412, &[], conflict)),
            Err(StorageError::PreconditionFailed)
        );
        let forbidden = r#"{"error":{"code":403,"message":"exporter@proj.iam.gserviceaccount.com does not have storage.objects.create access to the Google Cloud Storage object.","errors":[{"message":"…","domain":"global","reason":"forbidden"}]}}"#;
        assert_eq!(
            write_result(&resp(403, &[], forbidden)).unwrap_err().to_string(),
            "storage answered 403 forbidden: exporter@proj.iam.gserviceaccount.com does not have storage.objects.create access to the Google Cloud Storage object."
        );
        let unauthorized = r#"{"error":{"code":401,"message":"Invalid Credentials","errors":[{"message":"Invalid Credentials","domain":"global","reason":"authError","locationType":"header","location":"Authorization"}]}}"#;
        assert_eq!(
            read_result(resp(401, &[], unauthorized)),
            Err(StorageError::Status {
                status: 401,
                code: Some("authError".into()),
                message: Some("Invalid Credentials".into()),
            })
        );
        // Newer error shape: `status` instead of `errors`.
        let status_only =
            r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(
            read_result(resp(429, &[], status_only))
                .unwrap_err()
                .to_string(),
            "storage answered 429 RESOURCE_EXHAUSTED: slow down"
        );
        // An emulator's bare string error, the proxy's own text, nothing.
        assert_eq!(
            read_result(resp(400, &[], r#"{"error":"bad upload"}"#))
                .unwrap_err()
                .to_string(),
            "storage answered 400: bad upload"
        );
        assert_eq!(
            read_result(resp(
                503,
                &[],
                "upstream connect error or\ndisconnect/reset"
            ))
            .unwrap_err()
            .to_string(),
            "storage answered 503: upstream connect error or disconnect/reset"
        );
        assert_eq!(
            write_result(&resp(500, &[], "")),
            Err(StorageError::Status {
                status: 500,
                code: None,
                message: None
            })
        );
    }
}
