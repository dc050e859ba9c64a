//! AWS temporary credentials: the ECS/EKS container credentials endpoint
//! and the EC2 instance metadata service (IMDSv2), in the order and shape
//! the AWS SDKs use them.

use super::oauth::refusal;
use super::{Credential, Failure, Fetched, Malformed, Progress, Step};
use crate::http::{HttpRequest, HttpResponse};
use crate::json::{self, Value};
use crate::secret::Secret;
use crate::sigv4::{uri_encode, Credentials};
use crate::time::Timestamp;
use std::fmt;
use std::time::Duration;

/// ECS task roles: the agent's link-local address, where
/// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is a path.
pub const ECS_CREDENTIALS_HOST: &str = "169.254.170.2";
/// EC2's metadata service (`AWS_EC2_METADATA_SERVICE_ENDPOINT` overrides).
pub const IMDS_HOST: &str = "169.254.169.254";
/// The IMDSv2 session token's lifetime, in seconds (the SDKs' default).
const IMDS_TOKEN_TTL: &str = "21600";
const IMDS_TOKEN_PATH: &str = "/latest/api/token";
const IMDS_ROLE_PATH: &str = "/latest/meta-data/iam/security-credentials/";

/// The container credentials endpoint (ECS task roles, EKS Pod Identity
/// with an inline token).
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerSource {
    pub cluster: String,
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, sent as `Authorization`.
    pub authorization: Option<Secret>,
}

impl fmt::Debug for ContainerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerSource")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path", &self.path_for_logs())
            .field("authorization", &self.authorization)
            .finish()
    }
}

impl ContainerSource {
    /// The path without its query (which may carry a credential).
    pub fn path_for_logs(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    pub(super) fn request(&self, timeout: Duration) -> HttpRequest {
        let mut headers = vec![("accept".to_string(), "application/json".to_string())];
        if let Some(token) = &self.authorization {
            headers.push(("authorization".into(), token.expose().to_string()));
        }
        HttpRequest {
            cluster: self.cluster.clone(),
            method: "GET".into(),
            path: self.path.clone(),
            authority: self.authority.clone(),
            headers,
            body: None,
            timeout,
        }
    }
}

/// EC2 IMDSv2: a session token (`PUT`, with its lifetime), then with it
/// the role's name and that role's credentials. IMDSv1 (no session token)
/// is never used: instances that require v2 refuse it, and v1 is what
/// SSRF attacks on metadata exploit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsSource {
    pub cluster: String,
    pub authority: String,
}

impl ImdsSource {
    pub(super) fn request(&self, step: &Step, timeout: Duration) -> HttpRequest {
        let (method, path, header) = match step {
            Step::ImdsToken | Step::Fetch => (
                "PUT",
                IMDS_TOKEN_PATH.to_string(),
                ("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL),
            ),
            Step::ImdsRole(token) => (
                "GET",
                IMDS_ROLE_PATH.to_string(),
                ("x-aws-ec2-metadata-token", token.expose()),
            ),
            Step::ImdsCredentials { token, role } => (
                "GET",
                format!("{IMDS_ROLE_PATH}{}", uri_encode(role, true)),
                ("x-aws-ec2-metadata-token", token.expose()),
            ),
        };
        HttpRequest {
            cluster: self.cluster.clone(),
            method: method.into(),
            path,
            authority: self.authority.clone(),
            headers: vec![(header.0.to_string(), header.1.to_string())],
            // A PUT without a body still says so (some proxies want a length).
            body: (method == "PUT").then(Vec::new),
            timeout,
        }
    }

    pub(super) fn on_response(
        &self,
        step: Step,
        response: &HttpResponse,
        wall: Timestamp,
    ) -> Result<Progress, Failure> {
        match step {
            Step::ImdsToken | Step::Fetch => {
                if response.status != 200 {
                    return Err(refusal(response));
                }
                let token = String::from_utf8_lossy(&response.body).trim().to_string();
                if token.is_empty() {
                    return Err(Failure::Malformed(Malformed::NoSessionToken));
                }
                Ok(Progress::Next(Step::ImdsRole(Secret::new(token))))
            }
            Step::ImdsRole(token) => {
                if response.status == 404 {
                    return Err(Failure::Malformed(Malformed::NoRole));
                }
                if response.status != 200 {
                    return Err(refusal(response));
                }
                let names = String::from_utf8_lossy(&response.body);
                let role = names
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .ok_or(Failure::Malformed(Malformed::NoRole))?;
                Ok(Progress::Next(Step::ImdsCredentials {
                    token,
                    role: role.to_string(),
                }))
            }
            Step::ImdsCredentials { .. } => parse_credentials(response, wall).map(Progress::Done),
        }
    }
}

/// Reads temporary credentials; their lifetime is counted from `wall`
/// (when the answer came) to `Expiration`.
pub(super) fn parse_credentials(
    response: &HttpResponse,
    wall: Timestamp,
) -> Result<Fetched, Failure> {
    if response.status != 200 {
        return Err(refusal(response));
    }
    // The JSON both endpoints answer with (IMDS adds `Code`, `Type`,
    // `LastUpdated`): an object whose fields read here are strings or
    // `null`; other fields are not looked at.
    let not_json = || Failure::Malformed(Malformed::NotJson);
    let Ok(Value::Object(mut json)) = json::parse(&response.body) else {
        return Err(not_json());
    };
    let mut text = |name: &str| match json.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(not_json()),
    };
    let (code, access_key_id, secret, token, expiration) = (
        text("Code")?,
        text("AccessKeyId")?,
        text("SecretAccessKey")?,
        text("Token")?,
        text("Expiration")?,
    );
    if let Some(code) = code.filter(|c| c != "Success") {
        return Err(Failure::Malformed(Malformed::NotSuccess(
            code.chars().take(40).collect(),
        )));
    }
    let field = |value: Option<String>, name| {
        value
            .filter(|v| !v.is_empty())
            .ok_or(Failure::Malformed(Malformed::MissingField(name)))
    };
    let access_key_id = field(access_key_id, "AccessKeyId")?;
    let secret = field(secret, "SecretAccessKey")?;
    let token = field(token, "Token")?;
    let expiration = field(expiration, "Expiration")?;
    let lifetime = Timestamp::parse_rfc3339(expiration.trim())
        .map(|t| t.since(wall))
        .filter(|d| !d.is_zero())
        .ok_or(Failure::Malformed(Malformed::BadExpiration))?;
    let mut credentials = Credentials::new(access_key_id, Secret::new(secret));
    credentials.session_token = Some(Secret::new(token));
    Ok(Fetched {
        credential: Credential::Aws(credentials),
        lifetime,
    })
}
