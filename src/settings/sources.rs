//! Where each cloud's credentials come from: the chain of sources, in
//! order, chosen once from the environment and the plugin JSON (the
//! README's tables say the same). A source that cannot work in a wasm VM
//! (a token file) fails `on_configure` with what to do instead, rather
//! than failing at the first request.

use super::{env, err, SettingsError};
use crate::secret::Secret;
use crate::storage::azure::AzureCredentials;
use crate::storage::credentials::{aws_hosts, oauth_hosts};
use crate::storage::credentials::{
    AzureClientSecret, AzureManagedIdentity, ContainerSource, GcpMetadata, ImdsSource, Provider,
};
use crate::storage::gcp_auth::ServiceAccount;
use crate::storage::Signing;

/// The variables of the chains (besides the static keys in [`env`]).
pub mod vars {
    pub const CONTAINER_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
    pub const CONTAINER_RELATIVE_URI: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
    pub const CONTAINER_TOKEN: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
    pub const CONTAINER_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
    pub const WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
    pub const IMDS_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";
    pub const IMDS_ENDPOINT: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
    pub const GCE_METADATA_HOST: &str = "GCE_METADATA_HOST";
    pub const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
    pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
    pub const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
    pub const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
}

/// The `credentials` object of the plugin JSON: the Envoy cluster each
/// source is reached through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialClusters {
    pub aws_imds: String,
    pub aws_container: String,
    pub gcp_metadata: String,
    pub azure_login: String,
    pub azure_imds: String,
}

impl Default for CredentialClusters {
    fn default() -> Self {
        CredentialClusters {
            aws_imds: "aws_imds".into(),
            aws_container: "aws_container_credentials".into(),
            gcp_metadata: "gcp_metadata".into(),
            azure_login: "azure_login".into(),
            azure_imds: "azure_imds".into(),
        }
    }
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `host[:port]` of a `http(s)://host[:port][/...]` URL, or of a bare
/// authority; the path and query separately (`/` when absent).
fn split(url: &str) -> (&str, &str) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], "/"),
        None => (rest, "/"),
    }
}

fn authority_of(field: &str, url: &str) -> Result<String, SettingsError> {
    let (authority, _) = split(url.trim());
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return err(field, "must be a URL or host[:port]");
    }
    Ok(authority.to_string())
}

/// AWS, in order: static keys (already read, `have_static`) → container
/// credentials → EC2 IMDSv2, unless `AWS_EC2_METADATA_DISABLED` is true
/// (then anonymous). `None`: no source to fetch from.
pub fn aws(
    signing: Signing,
    have_static: bool,
    clusters: &CredentialClusters,
    env: Env<'_>,
) -> Result<Option<Provider>, SettingsError> {
    if signing != Signing::Filter || have_static {
        return Ok(None);
    }
    let token = env(vars::CONTAINER_TOKEN).map(|t| Secret::new(t.trim()));
    let container = match (
        env(vars::CONTAINER_FULL_URI),
        env(vars::CONTAINER_RELATIVE_URI),
    ) {
        (Some(full), _) => {
            let full = full.trim().to_string();
            let (authority, path) = split(&full);
            if !full.starts_with("http://") && !full.starts_with("https://") {
                return err(
                    vars::CONTAINER_FULL_URI,
                    "must be an http:// or https:// URL",
                );
            }
            if authority.is_empty() {
                return err(vars::CONTAINER_FULL_URI, "has no host");
            }
            Some((authority.to_string(), path.to_string()))
        }
        (None, Some(relative)) => {
            let relative = relative.trim().to_string();
            if !relative.starts_with('/') {
                return err(vars::CONTAINER_RELATIVE_URI, "must start with '/'");
            }
            Some((aws_hosts::ECS_CREDENTIALS_HOST.to_string(), relative))
        }
        (None, None) => None,
    };
    if let Some((authority, path)) = container {
        if token.is_none() && env(vars::CONTAINER_TOKEN_FILE).is_some() {
            return err(
                vars::CONTAINER_TOKEN_FILE,
                "names a file, and a wasm filter cannot read files: set AWS_CONTAINER_AUTHORIZATION_TOKEN to the token, or storage.signing to \"envoy\" (Envoy reads the file)",
            );
        }
        return Ok(Some(Provider::AwsContainer(ContainerSource {
            cluster: clusters.aws_container.clone(),
            authority,
            path,
            authorization: token,
        })));
    }
    if env(vars::WEB_IDENTITY_TOKEN_FILE).is_some() {
        return err(
            vars::WEB_IDENTITY_TOKEN_FILE,
            "is set (IRSA web identity), and a wasm filter cannot read its token file: set storage.signing to \"envoy\" so that Envoy's aws_request_signing filter signs with it",
        );
    }
    let disabled = env(vars::IMDS_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if disabled {
        return Ok(None);
    }
    let authority = match env(vars::IMDS_ENDPOINT) {
        Some(e) => authority_of(vars::IMDS_ENDPOINT, &e)?,
        None => aws_hosts::IMDS_HOST.to_string(),
    };
    Ok(Some(Provider::AwsImds(ImdsSource {
        cluster: clusters.aws_imds.clone(),
        authority,
    })))
}

/// GCP: `GCP_SERVICE_ACCOUNT` → the metadata server.
pub fn gcp(
    signing: Signing,
    token_cluster: String,
    clusters: &CredentialClusters,
    env: Env<'_>,
) -> Result<Option<Provider>, SettingsError> {
    match signing {
        Signing::None => return Ok(None),
        Signing::Envoy => return envoy_signs_only_s3(),
        Signing::Filter => {}
    }
    if let Some(json) = env(env::GCP_SERVICE_ACCOUNT) {
        let account = ServiceAccount::parse(&json).map_err(|e| SettingsError {
            field: env::GCP_SERVICE_ACCOUNT.into(),
            reason: e.to_string(),
        })?;
        return Ok(Some(Provider::GcpServiceAccount {
            account: Box::new(account),
            cluster: token_cluster,
        }));
    }
    let authority = match env(vars::GCE_METADATA_HOST) {
        Some(h) => authority_of(vars::GCE_METADATA_HOST, &h)?,
        None => oauth_hosts::GCP_METADATA_HOST.to_string(),
    };
    Ok(Some(Provider::GcpMetadata(GcpMetadata {
        cluster: clusters.gcp_metadata.clone(),
        authority,
    })))
}

/// Azure: the account key or a SAS token (`static_credentials`, already
/// read) → a service principal with a client secret → managed identity.
pub fn azure(
    signing: Signing,
    static_credentials: AzureCredentials,
    clusters: &CredentialClusters,
    env: Env<'_>,
) -> Result<(AzureCredentials, Option<Provider>), SettingsError> {
    match signing {
        Signing::None => return Ok((AzureCredentials::Anonymous, None)),
        Signing::Envoy => return envoy_signs_only_s3(),
        Signing::Filter => {}
    }
    if static_credentials != AzureCredentials::Anonymous {
        return Ok((static_credentials, None));
    }
    let client_id = env(vars::AZURE_CLIENT_ID).map(|v| v.trim().to_string());
    let provider = match (env(vars::AZURE_TENANT_ID), env(vars::AZURE_CLIENT_SECRET)) {
        (Some(tenant), Some(secret)) => {
            let Some(client_id) = client_id else {
                return err(
                    vars::AZURE_CLIENT_ID,
                    "is required with AZURE_TENANT_ID and AZURE_CLIENT_SECRET (the service principal's application id)",
                );
            };
            let tenant = tenant.trim().to_string();
            if !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return err(
                    vars::AZURE_TENANT_ID,
                    "must be a tenant id or domain (letters, digits, '-' and '.')",
                );
            }
            let authority = match env(vars::AZURE_AUTHORITY_HOST) {
                Some(h) => authority_of(vars::AZURE_AUTHORITY_HOST, &h)?,
                None => oauth_hosts::AZURE_AUTHORITY_HOST.to_string(),
            };
            Provider::AzureClientSecret(AzureClientSecret {
                tenant,
                client_id,
                secret: Secret::new(secret),
                cluster: clusters.azure_login.clone(),
                authority,
            })
        }
        (None, Some(_)) => {
            return err(
                vars::AZURE_TENANT_ID,
                "is required with AZURE_CLIENT_SECRET (the service principal's tenant)",
            )
        }
        // AZURE_TENANT_ID alone, or nothing: managed identity (a
        // user-assigned one when AZURE_CLIENT_ID names it).
        (_, None) => Provider::AzureManagedIdentity(AzureManagedIdentity {
            client_id,
            cluster: clusters.azure_imds.clone(),
            authority: oauth_hosts::AZURE_IMDS_HOST.to_string(),
        }),
    };
    Ok((AzureCredentials::Token, Some(provider)))
}

fn envoy_signs_only_s3<T>() -> Result<T, SettingsError> {
    err(
        "storage.signing",
        "\"envoy\" applies only to s3:// storage (Envoy's aws_request_signing filter signs SigV4)",
    )
}

#[cfg(test)]
mod tests;
