//! The OAuth 2.0 sources: a Google service account's JWT-bearer grant
//! (RFC 7523), the GCP metadata server, Microsoft Entra ID's
//! client-credentials grant and Azure managed identity (IMDS). All answer
//! with an RFC 6749 §5.1 token response, read here once.

use super::{Credential, Failure, Fetched, Malformed};
use crate::http::{HttpRequest, HttpResponse};
use crate::json::{self, Value};
use crate::secret::Secret;
use crate::sigv4::uri_encode;
use crate::storage::gcp_auth::ServiceAccount;
use std::fmt;
use std::time::Duration;

/// The form field that selects the JWT-bearer grant, already form-encoded.
const GRANT_TYPE_JWT_BEARER: &str =
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// Lifetime assumed when the token endpoint omits `expires_in` (optional in
/// RFC 6749): Google's and Entra's tokens live about an hour.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The GCP metadata server's default host (`GCE_METADATA_HOST` overrides).
pub const GCP_METADATA_HOST: &str = "metadata.google.internal";
const GCP_METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// Entra ID's default host (`AZURE_AUTHORITY_HOST` overrides).
pub const AZURE_AUTHORITY_HOST: &str = "login.microsoftonline.com";
/// What a token for Blob Storage is asked for: the v2 endpoint's scope
/// and IMDS's resource.
const AZURE_STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
const AZURE_STORAGE_RESOURCE: &str = "https://storage.azure.com/";
/// The Azure instance metadata service (IMDS), a link-local address.
pub const AZURE_IMDS_HOST: &str = "169.254.169.254";
const AZURE_IMDS_API_VERSION: &str = "2018-02-01";

/// A service account's token request: the signed assertion, POSTed to
/// the account's `token_uri`.
pub(super) fn jwt_bearer_request(
    account: &ServiceAccount,
    cluster: &str,
    assertion: &Secret,
    timeout: Duration,
) -> HttpRequest {
    let body = format!("{GRANT_TYPE_JWT_BEARER}&assertion={}", assertion.expose());
    form_post(
        cluster,
        account.token_authority(),
        account.token_path(),
        body,
        timeout,
    )
}

fn form_post(
    cluster: &str,
    authority: &str,
    path: &str,
    body: String,
    timeout: Duration,
) -> HttpRequest {
    HttpRequest {
        cluster: cluster.to_string(),
        method: "POST".into(),
        path: path.to_string(),
        authority: authority.to_string(),
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("accept".into(), "application/json".into()),
        ],
        body: Some(body.into_bytes()),
        timeout,
    }
}

fn get(
    cluster: &str,
    authority: &str,
    path: String,
    header: (&str, &str),
    timeout: Duration,
) -> HttpRequest {
    HttpRequest {
        cluster: cluster.to_string(),
        method: "GET".into(),
        path,
        authority: authority.to_string(),
        headers: vec![
            (header.0.to_string(), header.1.to_string()),
            ("accept".into(), "application/json".into()),
        ],
        body: None,
        timeout,
    }
}

/// The GCP metadata server: the default service account's token (GKE
/// Workload Identity, Compute Engine, Cloud Run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcpMetadata {
    pub cluster: String,
    /// `metadata.google.internal`, or `GCE_METADATA_HOST`.
    pub authority: String,
}

impl GcpMetadata {
    pub(super) fn request(&self, timeout: Duration) -> HttpRequest {
        get(
            &self.cluster,
            &self.authority,
            GCP_METADATA_TOKEN_PATH.to_string(),
            ("metadata-flavor", "Google"),
            timeout,
        )
    }
}

/// A Microsoft Entra ID service principal with a client secret
/// (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`).
#[derive(Clone, PartialEq, Eq)]
pub struct AzureClientSecret {
    pub tenant: String,
    pub client_id: String,
    pub secret: Secret,
    pub cluster: String,
    /// `login.microsoftonline.com`, or `AZURE_AUTHORITY_HOST`.
    pub authority: String,
}

impl fmt::Debug for AzureClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureClientSecret")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret)
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .finish()
    }
}

impl AzureClientSecret {
    pub(super) fn request(&self, timeout: Duration) -> HttpRequest {
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            uri_encode(&self.client_id, true),
            uri_encode(self.secret.expose(), true),
            uri_encode(AZURE_STORAGE_SCOPE, true),
        );
        let path = format!("/{}/oauth2/v2.0/token", uri_encode(&self.tenant, true));
        form_post(&self.cluster, &self.authority, &path, body, timeout)
    }
}

/// Azure managed identity through IMDS: system-assigned, or the
/// user-assigned identity `client_id` (`AZURE_CLIENT_ID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureManagedIdentity {
    pub client_id: Option<String>,
    pub cluster: String,
    pub authority: String,
}

impl AzureManagedIdentity {
    pub(super) fn request(&self, timeout: Duration) -> HttpRequest {
        let mut path = format!(
            "/metadata/identity/oauth2/token?api-version={AZURE_IMDS_API_VERSION}&resource={}",
            uri_encode(AZURE_STORAGE_RESOURCE, true)
        );
        if let Some(id) = &self.client_id {
            path.push_str("&client_id=");
            path.push_str(&uri_encode(id, true));
        }
        get(
            &self.cluster,
            &self.authority,
            path,
            ("metadata", "true"),
            timeout,
        )
    }
}

/// Reads a token endpoint's answer (RFC 6749 §5.1 / §5.2). Lenient where
/// the sources differ: `expires_in` may be a number or (Azure IMDS) a
/// string, `token_type` may be absent (the GCP metadata server sends it,
/// Google's token endpoint sometimes not).
pub(super) fn parse_token_response(response: &HttpResponse) -> Result<Fetched, Failure> {
    if response.status != 200 {
        return Err(refusal(response));
    }
    let body = json::parse(&response.body).map_err(|_| Failure::Malformed(Malformed::NotJson))?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(Failure::Malformed(Malformed::NoAccessToken))?;
    if let Some(kind) = body.get("token_type") {
        let kind = kind.as_str().unwrap_or("?");
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(Failure::Malformed(Malformed::NotBearer(
                kind.chars().take(20).collect(),
            )));
        }
    }
    let lifetime = match body.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_TOKEN_LIFETIME,
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs).unwrap_or_default(),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Duration::from_secs)
            .unwrap_or_default(),
        Some(_) => Duration::ZERO,
    };
    if lifetime.is_zero() {
        return Err(Failure::Malformed(Malformed::BadExpiry));
    }
    Ok(Fetched {
        credential: Credential::Bearer(Secret::new(token)),
        lifetime,
    })
}

/// An error answer: the OAuth `error` / `error_description` when the body
/// has them (or a Google API error object's `status` / `message`, or
/// AWS's `Code` / `Message`), else (the proxy's own text, a status-0
/// reason) an excerpt.
pub(super) fn refusal(response: &HttpResponse) -> Failure {
    let body = json::parse(&response.body).ok();
    let text = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .map(|s| s.chars().take(300).collect::<String>())
    };
    let field = |name: &str| body.as_ref().and_then(|b| b.get(name));
    let (error, description) = match field("error") {
        Some(Value::Object(e)) => (text(e.get("status")), text(e.get("message"))),
        Some(e) => (text(Some(e)), text(field("error_description"))),
        None => (text(field("Code")), text(field("Message"))),
    };
    let detail = (error.is_none() && !response.body.is_empty()).then(|| response.body_excerpt(200));
    Failure::Refused {
        status: response.status,
        error,
        description,
        detail,
    }
}
