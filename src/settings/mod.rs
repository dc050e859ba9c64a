//! Plugin configuration: the plugin JSON plus environment variables, turned
//! into validated [`Settings`].
//!
//! Every error names the field (or environment variable) at fault, because
//! a bad plugin config makes `on_configure` fail and the operator only sees
//! this message. Unknown fields are refused so that a typo never silently
//! disables import or export.

use crate::json::{self, Map, Value};
use crate::keys::{self, KeyError, SnapshotKeys};
use crate::role::Role;
use crate::secret::Secret;
use crate::sigv4::Credentials;
use crate::storage::azure::{
    AzureConfigError, AzureCredentials, AzureEndpoint, AzureSettings, EncryptionScope,
};
use crate::storage::gcs::{GcsSettings, KmsKeyName};
use crate::storage::s3::{
    EncryptionContext, KmsKeyId, KmsOptions, S3PutOptions, ServerSideEncryption, StorageClass,
};
use crate::storage::{
    Backend, S3Addressing, S3Settings, Scheme, Signing, StorageLocation, StorageSettings,
};
use std::fmt;
use std::time::Duration;
use zeroize::Zeroizing;

/// Validated plugin settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub import: bool,
    pub export: bool,
    /// Present whenever `import` or `export` is on.
    pub storage: Option<StorageSettings>,
    pub export_delay: Duration,
    pub node_id: Option<String>,
    pub control_plane: ControlPlaneSettings,
    pub upstream_header: String,
    pub election: ElectionSettings,
    pub import_policy: ImportPolicy,
    /// A request for exactly this path is answered by the filter with its
    /// status (readiness); `None`: off.
    pub status_path: Option<String>,
    /// Signing, trust and encryption of snapshots (`snapshot` + keys).
    pub snapshot: SnapshotKeys,
    /// Whether this root may drive, serve, or both (see [`Role`]).
    pub role: Role,
}

/// How an importer retries and what it accepts (the `import` object).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportPolicy {
    /// The first wait after a failed import; doubled after each failure.
    pub retry_initial: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// Give up after this many attempts; `None`: never.
    pub max_attempts: Option<u32>,
    /// Without a snapshot for this version, import the newest older one.
    pub older_versions: bool,
    /// Refuse snapshots exported longer ago; `None`: no limit.
    pub max_age: Option<Duration>,
}

impl Default for ImportPolicy {
    fn default() -> Self {
        ImportPolicy {
            retry_initial: Duration::from_millis(1000),
            retry_max: Duration::from_millis(30_000),
            max_attempts: None,
            older_versions: true,
            max_age: None,
        }
    }
}

/// Default of `storage.max_object_bytes` and
/// `control_plane.max_config_bytes`: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// Leader election among exporters (see [`crate::election`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionSettings {
    /// A lease not renewed for this long may be taken over.
    pub lease_ttl: Duration,
    /// How often the leader renews and followers look at the lease.
    pub renew_interval: Duration,
}

/// Where and how the control plane is polled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlaneSettings {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub poll_interval: Duration,
    /// A config larger than this is refused.
    pub max_config_bytes: u64,
}

/// A plugin configuration that cannot be used. `field` is the JSON path
/// (`storage.timeout_ms`) or the environment variable at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid plugin configuration: `{}` {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for SettingsError {}

fn err<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError {
        field: field.into(),
        reason: reason.into(),
    })
}

/// Default names, chosen to match the example `envoy.yaml`.
pub const DEFAULT_STORAGE_CLUSTER: &str = "object_storage";
/// GCS: the cluster that reaches the service account's `token_uri`.
pub const DEFAULT_TOKEN_CLUSTER: &str = "gcp_oauth";
pub const DEFAULT_CP_CLUSTER: &str = "control_plane";
pub const DEFAULT_CP_PATH: &str = "/v1/config";
pub const DEFAULT_UPSTREAM_HEADER: &str = "x-fallback-upstream";
pub const DEFAULT_REGION: &str = "us-east-1";

/// The environment variables the filter reads (Envoy passes them only when
/// listed in `vm_config.environment_variables.host_env_keys`).
mod sources;
pub use sources::{vars as credential_vars, CredentialClusters};

pub mod env {
    pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
    pub const REGION: &str = "AWS_REGION";
    pub const DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
    pub const ENDPOINT: &str = "AWS_CONFIG_STORAGE_ENDPOINT";
    pub const GCP_SERVICE_ACCOUNT: &str = "GCP_SERVICE_ACCOUNT";
    pub const AZURE_KEY: &str = "AZURE_STORAGE_KEY";
    pub const AZURE_SAS_TOKEN: &str = "AZURE_STORAGE_SAS_TOKEN";
    pub const AZURE_ENDPOINT: &str = "AZURE_STORAGE_ENDPOINT";
}

impl Settings {
    /// Parses the plugin JSON. `env` looks up an environment variable (empty
    /// values count as unset). An empty configuration means all defaults:
    /// neither import nor export, CP polling only.
    pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let root = if json.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match json::parse(json) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return err("(root)", "must be a JSON object"),
                Err(e) => return err("(root)", format!("is not valid JSON: {e}")),
            }
        };
        let mut root = Fields::new("", root);
        let import = root
            .bool("cluster_fallback_config_import")?
            .unwrap_or(false);
        let export = root
            .bool("cluster_fallback_config_export")?
            .unwrap_or(false);
        let storage_url = root.string("cluster_fallback_config_storage")?;
        let delay_s = root
            .u64("cluster_fallback_config_export_delay")?
            .unwrap_or(0);
        if delay_s > MAX_MILLIS / 1000 {
            return err(
                "cluster_fallback_config_export_delay",
                format!(
                    "must be at most {} seconds (one day), got {delay_s}",
                    MAX_MILLIS / 1000
                ),
            );
        }
        let export_delay = Duration::from_secs(delay_s);
        let node_id = root.string("node_id")?;
        if node_id.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return err("node_id", "must not be empty when given");
        }
        let upstream_header = root
            .string("upstream_header")?
            .unwrap_or_else(|| DEFAULT_UPSTREAM_HEADER.to_string());
        validate_header_name("upstream_header", &upstream_header)?;
        let role = match root.string("role")? {
            None => Role::default(),
            Some(name) => match Role::from_name(&name) {
                Some(role) => role,
                None => return err("role", "must be \"any\", \"worker\" or \"driver\""),
            },
        };

        let mut cp = root.object("control_plane")?;
        let cluster = cp
            .non_empty("cluster")?
            .unwrap_or_else(|| DEFAULT_CP_CLUSTER.to_string());
        let control_plane = ControlPlaneSettings {
            authority: cp
                .non_empty("authority")?
                .unwrap_or_else(|| cluster.clone()),
            path: cp
                .string("path")?
                .unwrap_or_else(|| DEFAULT_CP_PATH.to_string()),
            timeout: cp.millis("timeout_ms", 2000)?,
            poll_interval: cp.millis("poll_interval_ms", 5000)?,
            max_config_bytes: cp.bytes("max_config_bytes", DEFAULT_MAX_BODY_BYTES)?,
            cluster,
        };
        if !control_plane.path.starts_with('/') {
            return err("control_plane.path", "must start with '/'");
        }
        check_token("control_plane.path", control_plane.path.clone())?;
        cp.finish()?;

        let mut el = root.object("election")?;
        let election = ElectionSettings {
            lease_ttl: el.millis("lease_ttl_ms", 30_000)?,
            renew_interval: el.millis("renew_interval_ms", 10_000)?,
        };
        if election.renew_interval >= election.lease_ttl {
            return err(
                "election.renew_interval_ms",
                format!(
                    "must be less than election.lease_ttl_ms ({} ms)",
                    election.lease_ttl.as_millis()
                ),
            );
        }
        el.finish()?;

        // A root field (Kong's name), but only the storage backend uses it.
        let s3_put = s3_put_options(&mut root)?;
        let mut st = root.object("storage")?;
        let fields = StorageFields {
            cluster: st
                .non_empty("cluster")?
                .unwrap_or_else(|| DEFAULT_STORAGE_CLUSTER.to_string()),
            endpoint: st.non_empty("endpoint")?,
            region: st.non_empty("region")?,
            token_cluster: st.non_empty("token_cluster")?,
            signing: match st.non_empty("signing")?.as_deref() {
                None | Some("filter") => Signing::Filter,
                Some("envoy") => Signing::Envoy,
                Some("none") => Signing::None,
                Some(other) => {
                    return err(
                        "storage.signing",
                        format!("must be \"filter\", \"envoy\" or \"none\", got \"{other}\""),
                    )
                }
            },
            timeout: st.millis("timeout_ms", 5000)?,
            max_object_bytes: st.bytes("max_object_bytes", DEFAULT_MAX_BODY_BYTES)?,
            kms_key_name: st.non_empty("kms_key_name")?,
            encryption_scope: st.non_empty("encryption_scope")?,
            s3_put,
        };
        st.finish()?;
        let mut cr = root.object("credentials")?;
        let defaults = CredentialClusters::default();
        let mut cluster = |key: &str, default: String| -> Result<String, SettingsError> {
            Ok(cr.non_empty(key)?.unwrap_or(default))
        };
        let clusters = CredentialClusters {
            aws_imds: cluster("aws_imds_cluster", defaults.aws_imds)?,
            aws_container: cluster("aws_container_cluster", defaults.aws_container)?,
            gcp_metadata: cluster("gcp_metadata_cluster", defaults.gcp_metadata)?,
            azure_login: cluster("azure_login_cluster", defaults.azure_login)?,
            azure_imds: cluster("azure_imds_cluster", defaults.azure_imds)?,
        };
        cr.finish()?;

        let mut im = root.object("import")?;
        let defaults = ImportPolicy::default();
        let import_policy = ImportPolicy {
            retry_initial: im.millis(
                "retry_initial_ms",
                defaults.retry_initial.as_millis() as u64,
            )?,
            retry_max: im.millis("retry_max_ms", defaults.retry_max.as_millis() as u64)?,
            max_attempts: match im.u64("max_attempts")? {
                None | Some(0) => None,
                Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            },
            older_versions: im
                .bool("older_versions")?
                .unwrap_or(defaults.older_versions),
            max_age: match im.u64("max_age_s")? {
                None | Some(0) => None,
                Some(s) if s > MAX_MILLIS / 1000 * 365 => {
                    return err("import.max_age_s", "must be at most one year in seconds")
                }
                Some(s) => Some(Duration::from_secs(s)),
            },
        };
        if import_policy.retry_max < import_policy.retry_initial {
            return err(
                "import.retry_max_ms",
                format!(
                    "must be at least import.retry_initial_ms ({} ms)",
                    import_policy.retry_initial.as_millis()
                ),
            );
        }
        im.finish()?;
        let status_path = root.string("status_path")?;
        if let Some(p) = &status_path {
            if !p.starts_with('/') {
                return err("status_path", "must start with '/'");
            }
            if p.contains(['?', '#']) {
                return err("status_path", "must be a plain path, without '?' or '#'");
            }
            check_token("status_path", p.clone())?;
        }
        let mut sn = root.object("snapshot")?;
        let require_signature = sn.bool("require_signature")?;
        let encrypt = sn.bool("encrypt")?;
        sn.finish()?;
        root.finish()?;
        let snapshot = snapshot_keys(require_signature, encrypt, import, export, &env)?;

        let storage = match storage_url {
            None if import || export => {
                return err(
                    "cluster_fallback_config_storage",
                    "is required when cluster_fallback_config_import or cluster_fallback_config_export is on",
                )
            }
            None => None,
            Some(url) => Some(storage_settings(&url, fields, &clusters, &env)?),
        };

        Ok(Settings {
            import,
            export,
            storage,
            export_delay,
            node_id,
            control_plane,
            upstream_header,
            election,
            import_policy,
            status_path,
            snapshot,
            role,
        })
    }
}

/// The `snapshot` settings and the keys in the environment. Bad key
/// material fails even where it is not used; every error names the
/// variable (and the entry), never the key.
fn snapshot_keys(
    require_signature: Option<bool>,
    encrypt: Option<bool>,
    import: bool,
    export: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SnapshotKeys, SettingsError> {
    let fail = |var: &str| {
        let var = var.to_string();
        move |e: KeyError| SettingsError {
            field: var.clone(),
            reason: e.to_string(),
        }
    };
    // The variables' text holds the secrets too: zeroized once parsed.
    let var = |name: &str| env(name).map(Zeroizing::new);
    let signing = var(keys::env::SIGNING_KEY)
        .map(|t| keys::SigningKey::parse(&t).map_err(fail(keys::env::SIGNING_KEY)))
        .transpose()?;
    let mut trusted = var(keys::env::TRUSTED_KEYS)
        .map(|t| keys::parse_trusted(&t).map_err(fail(keys::env::TRUSTED_KEYS)))
        .transpose()?
        .unwrap_or_default();
    let encryption = var(keys::env::ENCRYPTION_KEYS)
        .map(|t| keys::parse_encryption(&t).map_err(fail(keys::env::ENCRYPTION_KEYS)))
        .transpose()?
        .unwrap_or_default();
    // Trusted keys include the node's own public key (added below): a node
    // that signs also requires signatures on what it imports.
    let require_signature = require_signature.unwrap_or(!trusted.is_empty() || signing.is_some());
    let encrypt = encrypt.unwrap_or(!encryption.is_empty());
    if encrypt && encryption.is_empty() {
        return err(
            keys::env::ENCRYPTION_KEYS,
            "is required when snapshot.encrypt is on",
        );
    }
    if export && require_signature && signing.is_none() {
        return err(
            keys::env::SIGNING_KEY,
            "is required on an exporter when snapshot.require_signature is on (it signs every snapshot)",
        );
    }
    if import && require_signature && trusted.is_empty() && signing.is_none() {
        return err(
            keys::env::TRUSTED_KEYS,
            "is required on an importer when snapshot.require_signature is on",
        );
    }
    if let Some(own) = signing.as_ref().map(keys::SigningKey::public) {
        match trusted.iter().find(|k| k.id() == own.id()) {
            Some(k) if *k != own => {
                return err(
                    keys::env::TRUSTED_KEYS,
                    format!(
                        "names key id \"{}\" with another key than {}",
                        own.id(),
                        keys::env::SIGNING_KEY
                    ),
                )
            }
            Some(_) => {}
            None => trusted.push(own),
        }
    }
    Ok(SnapshotKeys {
        require_signature,
        encrypt,
        signing,
        trusted,
        encryption,
    })
}

impl Settings {
    /// The node id: `node_id` from the plugin config, else the host's node
    /// id (Envoy: `node.id`), else one made from `random`.
    pub fn resolve_node_id(&self, host_node_id: Option<String>, random: u64) -> String {
        self.node_id
            .clone()
            .or(host_node_id.filter(|n| !n.trim().is_empty()))
            .unwrap_or_else(|| format!("node-{random:016x}"))
    }
}

/// Longest accepted timeout or interval, in milliseconds: one day.
pub const MAX_MILLIS: u64 = 86_400_000;

/// Refuses white space and control characters.
fn check_token(field: &str, value: String) -> Result<String, SettingsError> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err(field, "must not contain spaces or control characters");
    }
    Ok(value)
}

/// The `storage` block, read before the backend is known.
struct StorageFields {
    cluster: String,
    endpoint: Option<String>,
    region: Option<String>,
    token_cluster: Option<String>,
    /// `storage.signing`.
    signing: Signing,
    timeout: Duration,
    max_object_bytes: u64,
    /// `storage.kms_key_name` (GCS), checked against the backend later.
    kms_key_name: Option<String>,
    /// `storage.encryption_scope` (Azure).
    encryption_scope: Option<String>,
    /// `cluster_fallback_export_s3_config` (S3); `None` when absent or
    /// asking for nothing.
    s3_put: Option<S3PutOptions>,
}

/// The storage URL plus the `storage` block and the environment, checked
/// against the backend the URL names: a field that does not apply to it
/// is an error rather than silently ignored.
fn storage_settings(
    url: &str,
    fields: StorageFields,
    clusters: &CredentialClusters,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StorageSettings, SettingsError> {
    let location = StorageLocation::parse(url).map_err(|reason| SettingsError {
        field: "cluster_fallback_config_storage".into(),
        reason: reason.to_string(),
    })?;
    let only_for =
        |field: &str, scheme: &str| err::<()>(field, format!("applies only to {scheme} storage"));
    if location.scheme != Scheme::S3 && fields.s3_put.is_some() {
        only_for(S3_CONFIG, "s3://")?;
    }
    if location.scheme != Scheme::Gcs && fields.kms_key_name.is_some() {
        only_for("storage.kms_key_name", "gcs://")?;
    }
    if location.scheme != Scheme::Azure && fields.encryption_scope.is_some() {
        only_for("storage.encryption_scope", "azure://")?;
    }
    let signing = fields.signing;
    let (backend, credentials) = match location.scheme {
        Scheme::S3 => {
            if fields.token_cluster.is_some() {
                only_for("storage.token_cluster", "gcs://")?;
            }
            let mut s3 = s3_settings(fields.endpoint, fields.region, env)?;
            s3.put_options = fields.s3_put.unwrap_or_default();
            if signing != Signing::Filter {
                // Static keys the filter can see are not used.
                s3.credentials = None;
            }
            let provider = sources::aws(signing, s3.credentials.is_some(), clusters, env)?;
            (Backend::S3(s3), provider)
        }
        Scheme::Azure => {
            if fields.token_cluster.is_some() {
                only_for("storage.token_cluster", "gcs://")?;
            }
            if fields.region.is_some() {
                only_for("storage.region", "s3://")?;
            }
            let scope = fields
                .encryption_scope
                .map(|name| {
                    EncryptionScope::parse(&name).map_err(|e| SettingsError {
                        field: "storage.encryption_scope".into(),
                        reason: e.to_string(),
                    })
                })
                .transpose()?;
            let mut az =
                azure_settings(&location, fields.endpoint, env)?.with_encryption_scope(scope);
            let (static_credentials, provider) =
                sources::azure(signing, az.credentials.clone(), clusters, env)?;
            az.credentials = static_credentials;
            (Backend::Azure(az), provider)
        }
        Scheme::Gcs => {
            if fields.region.is_some() {
                only_for("storage.region", "s3://")?;
            }
            let kms_key_name = fields
                .kms_key_name
                .map(|name| {
                    KmsKeyName::parse(&name).map_err(|e| SettingsError {
                        field: "storage.kms_key_name".into(),
                        reason: e.to_string(),
                    })
                })
                .transpose()?;
            let gcs = GcsSettings::new(fields.endpoint.as_deref())
                .map_err(|e| SettingsError {
                    field: "storage.endpoint".into(),
                    reason: e.to_string(),
                })?
                .with_kms_key_name(kms_key_name);
            let token_cluster = fields
                .token_cluster
                .unwrap_or_else(|| DEFAULT_TOKEN_CLUSTER.to_string());
            let provider = sources::gcp(signing, token_cluster, clusters, env)?;
            (Backend::Gcs(gcs), provider)
        }
    };
    Ok(StorageSettings {
        location,
        cluster: fields.cluster,
        timeout: fields.timeout,
        max_object_bytes: fields.max_object_bytes,
        backend,
        credentials,
        signing,
    })
}

fn azure_settings(
    location: &StorageLocation,
    endpoint: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AzureSettings, SettingsError> {
    let account = location.account.as_deref().unwrap_or_default();
    // Every Azure error names its field or variable itself.
    let fail = |e: AzureConfigError| SettingsError {
        field: azure_error_field(&e),
        reason: e.to_string(),
    };
    let endpoint = match (endpoint, env(env::AZURE_ENDPOINT)) {
        (Some(e), _) => Some(AzureEndpoint::parse(&e, account, "storage.endpoint").map_err(fail)?),
        (None, Some(e)) => {
            Some(AzureEndpoint::parse(&e, account, env::AZURE_ENDPOINT).map_err(fail)?)
        }
        (None, None) => None,
    };
    let key = env(env::AZURE_KEY);
    let sas = env(env::AZURE_SAS_TOKEN);
    let credentials =
        AzureCredentials::from_values(key.as_deref(), sas.as_deref()).map_err(fail)?;
    AzureSettings::new(account, &location.bucket, endpoint, credentials).map_err(fail)
}

/// The plugin field or variable an Azure configuration error is about.
fn azure_error_field(e: &AzureConfigError) -> String {
    match e {
        AzureConfigError::InvalidSharedKey => env::AZURE_KEY.into(),
        AzureConfigError::InvalidSasToken(_) => env::AZURE_SAS_TOKEN.into(),
        AzureConfigError::ConflictingCredentials => {
            format!("{} and {}", env::AZURE_KEY, env::AZURE_SAS_TOKEN)
        }
        AzureConfigError::InvalidEndpoint { field, .. } => field.clone(),
        AzureConfigError::InvalidAccount(_) | AzureConfigError::InvalidContainer(_) => {
            "cluster_fallback_config_storage".into()
        }
    }
}

fn s3_settings(
    endpoint: Option<String>,
    region: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Settings, SettingsError> {
    let (region_source, region) = [
        ("storage.region", region),
        (env::REGION, env(env::REGION)),
        (env::DEFAULT_REGION, env(env::DEFAULT_REGION)),
    ]
    .into_iter()
    .find_map(|(field, v)| v.map(|v| (field, v)))
    .unwrap_or(("storage.region", DEFAULT_REGION.to_string()));
    // The region is part of the SigV4 scope `<day>/<region>/s3/...`.
    let region_ok = region
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !region_ok {
        return err(
            region_source,
            "must hold only letters, digits, '-', '_' and '.'",
        );
    }
    let (field, endpoint) = match (endpoint, env(env::ENDPOINT)) {
        (Some(e), _) => ("storage.endpoint", Some(e)),
        (None, e) => (env::ENDPOINT, e),
    };
    let addressing = match endpoint {
        Some(e) => S3Addressing::parse_endpoint(&e).map_err(|r| SettingsError {
            field: field.into(),
            reason: r.to_string(),
        })?,
        None => S3Addressing::VirtualHosted,
    };
    Ok(S3Settings {
        addressing,
        region,
        credentials: credentials_from_env(env)?,
        put_options: S3PutOptions::default(),
    })
}

/// Kong's name for the S3 PutObject parameters of every write.
pub const S3_CONFIG: &str = "cluster_fallback_export_s3_config";

/// The PutObject parameters the filter sends (`x-amz-*` headers).
const S3_SUPPORTED: &str =
    "ServerSideEncryption, SSEKMSKeyId, SSEKMSEncryptionContext, BucketKeyEnabled, StorageClass";

/// PutObject parameters that exist but that the filter does not send: named
/// as such, so that an operator does not look for a typo. (SSE-C would need
/// the key on every read too; ACLs, tags, metadata and object lock are the
/// bucket's business.)
const S3_UNSUPPORTED: [&str; 24] = [
    "ACL",
    "CacheControl",
    "ChecksumAlgorithm",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
    "ContentMD5",
    "ContentType",
    "ExpectedBucketOwner",
    "Expires",
    "GrantFullControl",
    "GrantRead",
    "GrantReadACP",
    "GrantWriteACP",
    "Metadata",
    "ObjectLockLegalHoldStatus",
    "ObjectLockMode",
    "ObjectLockRetainUntilDate",
    "RequestPayer",
    "SSECustomerAlgorithm",
    "SSECustomerKey",
    "SSECustomerKeyMD5",
    "Tagging",
    "WebsiteRedirectLocation",
];

/// `cluster_fallback_export_s3_config`: a JSON object of PutObject
/// parameters (the AWS SDK's names), or a string holding one, as kong.conf
/// users write it. A blank string, `null` or an object that asks for
/// nothing count as absent. Every refusal names the parameter
/// (`cluster_fallback_export_s3_config.StorageClass`).
fn s3_put_options(root: &mut Fields) -> Result<Option<S3PutOptions>, SettingsError> {
    let map = match root.take(S3_CONFIG) {
        None => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(None),
        Some(Value::String(text)) => match json::parse(text.as_bytes()) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return err(
                    S3_CONFIG,
                    format!("must be a JSON object of PutObject parameters, got the string of {other}"),
                )
            }
            Err(e) => {
                return err(
                    S3_CONFIG,
                    format!("is a string but not a JSON object of PutObject parameters: {e}"),
                )
            }
        },
        Some(other) => {
            return err(
                S3_CONFIG,
                format!("must be a JSON object of PutObject parameters (or a string holding one), got {other}"),
            )
        }
    };
    let mut f = Fields::new(S3_CONFIG, map);
    let sse = f.string("ServerSideEncryption")?;
    let key_id = f.string("SSEKMSKeyId")?;
    let context = f.string("SSEKMSEncryptionContext")?;
    let bucket_key = f.bool("BucketKeyEnabled")?;
    let class = f.string("StorageClass")?;
    if let Some(k) = f.map.keys().find(|k| S3_UNSUPPORTED.contains(k)) {
        return err(
            f.name(k),
            format!("is a PutObject parameter the filter does not send (it sends {S3_SUPPORTED})"),
        );
    }
    if let Some(k) = f.map.keys().next() {
        return err(
            f.name(k),
            format!("is not a PutObject parameter the filter knows (check its spelling; it sends {S3_SUPPORTED})"),
        );
    }
    let option_err = |key: &str, e: crate::storage::s3::S3OptionError| SettingsError {
        field: format!("{S3_CONFIG}.{key}"),
        reason: e.to_string(),
    };
    let kms = KmsOptions {
        key_id: key_id
            .map(|k| KmsKeyId::parse(&k).map_err(|e| option_err("SSEKMSKeyId", e)))
            .transpose()?,
        context: context
            .map(|c| {
                EncryptionContext::parse(&c).map_err(|e| option_err("SSEKMSEncryptionContext", e))
            })
            .transpose()?,
    };
    let kms_only = |key: &str| {
        err::<()>(
            format!("{S3_CONFIG}.{key}"),
            "applies only with ServerSideEncryption \"aws:kms\" or \"aws:kms:dsse\" (S3 refuses KMS parameters without KMS encryption)",
        )
    };
    let encryption = match sse.as_deref() {
        None | Some("AES256") => {
            if kms.key_id.is_some() {
                kms_only("SSEKMSKeyId")?;
            }
            if kms.context.is_some() {
                kms_only("SSEKMSEncryptionContext")?;
            }
            if bucket_key.is_some() {
                err::<()>(
                    format!("{S3_CONFIG}.BucketKeyEnabled"),
                    "applies only with ServerSideEncryption \"aws:kms\" (an S3 Bucket Key is a KMS key's)",
                )?;
            }
            sse.map(|_| ServerSideEncryption::Aes256)
        }
        Some("aws:kms") => Some(ServerSideEncryption::Kms {
            kms,
            bucket_key_enabled: bucket_key,
        }),
        Some("aws:kms:dsse") => {
            if bucket_key.is_some() {
                err::<()>(
                    format!("{S3_CONFIG}.BucketKeyEnabled"),
                    "does not apply to ServerSideEncryption \"aws:kms:dsse\" (S3 Bucket Keys are not supported with DSSE-KMS)",
                )?;
            }
            Some(ServerSideEncryption::KmsDsse(kms))
        }
        Some(_) => {
            return Err(option_err(
                "ServerSideEncryption",
                crate::storage::s3::S3OptionError::UnknownEncryption,
            ))
        }
    };
    let storage_class = match class {
        None => None,
        Some(name) => {
            let c = StorageClass::parse(&name).map_err(|e| option_err("StorageClass", e))?;
            if !c.readable_at_once() {
                return err(
                    format!("{S3_CONFIG}.StorageClass"),
                    format!("{name} objects cannot be read without a restore, and the filter reads what it writes (import, election lease): use STANDARD, STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR"),
                );
            }
            Some(c)
        }
    };
    let options = S3PutOptions {
        encryption,
        storage_class,
    };
    Ok((!options.is_empty()).then_some(options))
}

/// `None` means anonymous requests (a public bucket); a key id without a
/// secret (or the reverse) is a mistake worth refusing.
fn credentials_from_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, SettingsError> {
    match (env(env::ACCESS_KEY_ID), env(env::SECRET_ACCESS_KEY)) {
        (Some(id), Some(secret)) => {
            // The key id goes into `Credential=<id>/<scope>`.
            if id.contains(['/', ',', '=']) {
                return err(env::ACCESS_KEY_ID, "must not contain '/', ',' or '='");
            }
            let id = check_token(env::ACCESS_KEY_ID, id)?;
            let token = env(env::SESSION_TOKEN);
            if token
                .as_deref()
                .is_some_and(|t| t.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                // Not echoed: the value is a secret.
                return err(
                    env::SESSION_TOKEN,
                    "must not contain spaces or control characters",
                );
            }
            Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: token.map(Secret::new),
            }))
        }
        (None, None) => Ok(None),
        (Some(_), None) => err(
            env::SECRET_ACCESS_KEY,
            "is not set but AWS_ACCESS_KEY_ID is",
        ),
        (None, Some(_)) => err(
            env::ACCESS_KEY_ID,
            "is not set but AWS_SECRET_ACCESS_KEY is",
        ),
    }
}

/// An HTTP header name we may set on requests: a lower-case token, not a
/// pseudo-header.
fn validate_header_name(field: &str, name: &str) -> Result<(), SettingsError> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        });
    if ok {
        Ok(())
    } else {
        err(
            field,
            "must be a lower-case HTTP header name such as x-fallback-upstream",
        )
    }
}

/// Reads typed fields out of one JSON object, remembering which were read
/// so that [`Fields::finish`] can refuse the unknown ones.
struct Fields {
    path: String,
    map: Map,
}

impl Fields {
    fn new(path: &str, map: Map) -> Self {
        Fields {
            path: path.to_string(),
            map,
        }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes a field out; JSON `null` counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => err(
                self.name(key),
                format!("must be true or false, got {other}"),
            ),
        }
    }

    fn u64(&mut self, key: &str) -> Result<Option<u64>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => Ok(Some(n)),
                None => err(
                    self.name(key),
                    format!("must be a non-negative integer, got {v}"),
                ),
            },
        }
    }

    /// A positive number of milliseconds, at most [`MAX_MILLIS`] (hosts
    /// take timeouts as 32-bit milliseconds; anything longer is a typo).
    fn millis(&mut self, key: &str, default: u64) -> Result<Duration, SettingsError> {
        match self.u64(key)? {
            Some(0) => err(self.name(key), "must be greater than 0"),
            Some(n) if n > MAX_MILLIS => err(
                self.name(key),
                format!("must be at most {MAX_MILLIS} (one day), got {n}"),
            ),
            n => Ok(Duration::from_millis(n.unwrap_or(default))),
        }
    }

    /// A positive byte count (a size limit), at most 1 GiB: larger bodies
    /// than that could not be held by the proxy anyway.
    fn bytes(&mut self, key: &str, default: u64) -> Result<u64, SettingsError> {
        match self.u64(key)? {
            Some(0) => err(self.name(key), "must be greater than 0"),
            Some(n) if n > 1 << 30 => err(
                self.name(key),
                format!("must be at most 1073741824 (1 GiB), got {n}"),
            ),
            n => Ok(n.unwrap_or(default)),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, SettingsError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => err(self.name(key), format!("must be a string, got {other}")),
        }
    }

    /// A non-empty string without white space or control characters:
    /// cluster names, authorities, endpoints, regions. Refused here
    /// rather than by the host at the first call.
    fn non_empty(&mut self, key: &str) -> Result<Option<String>, SettingsError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => err(self.name(key), "must not be empty when given"),
            Some(s) => check_token(&self.name(key), s).map(Some),
            None => Ok(None),
        }
    }

    fn object(&mut self, key: &str) -> Result<Fields, SettingsError> {
        let name = self.name(key);
        match self.take(key) {
            None => Ok(Fields::new(&name, Map::new())),
            Some(Value::Object(m)) => Ok(Fields::new(&name, m)),
            Some(other) => err(name, format!("must be an object, got {other}")),
        }
    }

    /// Refuses any field nobody read.
    fn finish(self) -> Result<(), SettingsError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => err(self.name(k), "is not a known field (check its spelling)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::credentials::{GcpMetadata, Provider};
    use crate::storage::UrlScheme;
    use std::collections::HashMap;

    fn parse_with(json: &str, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::parse(json.as_bytes(), &|k| vars.get(k).cloned())
    }

    fn s3_of(st: &StorageSettings) -> &S3Settings {
        match &st.backend {
            Backend::S3(s3) => s3,
            other => panic!("not S3: {other:?}"),
        }
    }

    const AZURITE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn gcs_storage() {
        let json = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"gs://bkt/gw"}"#;
        let s = parse_with(json, &[]).unwrap();
        let st = s.storage.unwrap();
        let Backend::Gcs(gcs) = &st.backend else {
            panic!("not GCS")
        };
        assert_eq!(gcs.authority, "storage.googleapis.com");
        // No service account: the metadata server.
        assert_eq!(
            st.credentials,
            Some(Provider::GcpMetadata(GcpMetadata {
                cluster: "gcp_metadata".into(),
                authority: "metadata.google.internal".into()
            }))
        );
        let json = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"gcs://bkt",
            "storage":{"endpoint":"http://127.0.0.1:9023","token_cluster":"oauth"}}"#;
        let st = parse_with(json, &[]).unwrap().storage.unwrap();
        let Backend::Gcs(gcs) = &st.backend else {
            panic!("not GCS")
        };
        assert_eq!(gcs.authority.as_str(), "127.0.0.1:9023");
        let account = crate::storage::gcp_auth::tests::account_json(
            crate::storage::gcp_auth::tests::TEST_KEY_PKCS8,
        );
        let st = parse_with(json, &[("GCP_SERVICE_ACCOUNT", &account)])
            .unwrap()
            .storage
            .unwrap();
        assert!(
            matches!(&st.credentials, Some(Provider::GcpServiceAccount { cluster, .. }) if cluster == "oauth"),
            "{:?}",
            st.credentials
        );
        // A broken service account names the variable and never echoes it.
        let e = parse_with(json, &[("GCP_SERVICE_ACCOUNT", r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#)])
            .unwrap_err();
        assert_eq!(e.field, "GCP_SERVICE_ACCOUNT");
        assert!(!e.to_string().contains("AAAA"), "{e}");
        let e = parse_with(json, &[("GCP_SERVICE_ACCOUNT", "not json")]).unwrap_err();
        assert_eq!(e.field, "GCP_SERVICE_ACCOUNT");
        let bad = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"gcs://bkt","storage":{"endpoint":"127.0.0.1"}}"#;
        assert_eq!(field_of(bad), "storage.endpoint");
        let bad = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"gcs://bkt","storage":{"region":"x"}}"#;
        assert_eq!(field_of(bad), "storage.region");
        let bad = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3://bkt","storage":{"token_cluster":"x"}}"#;
        assert_eq!(field_of(bad), "storage.token_cluster");
    }

    #[test]
    fn azure_storage() {
        let json = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"azure://devstoreaccount1/configs/gw"}"#;
        let s = parse_with(
            json,
            &[
                ("AZURE_STORAGE_KEY", AZURITE_KEY),
                (
                    "AZURE_STORAGE_ENDPOINT",
                    "http://127.0.0.1:10000/devstoreaccount1",
                ),
            ],
        )
        .unwrap();
        let st = s.storage.clone().unwrap();
        let Backend::Azure(az) = &st.backend else {
            panic!("not Azure")
        };
        assert_eq!(
            (az.account.as_str(), az.container.as_str()),
            ("devstoreaccount1", "configs")
        );
        assert_eq!(az.endpoint.authority, "127.0.0.1:10000");
        assert_eq!(st.location.prefix, "gw");
        assert!(!format!("{s:?}").contains("Eby8vdM02"));
        // Default endpoint, SAS.
        let s = parse_with(
            json,
            &[("AZURE_STORAGE_SAS_TOKEN", "sv=2021-12-02&ss=b&sig=abc%3D")],
        )
        .unwrap();
        let Backend::Azure(az) = &s.storage.unwrap().backend else {
            panic!("not Azure")
        };
        assert_eq!(
            az.endpoint.authority,
            "devstoreaccount1.blob.core.windows.net"
        );
        // Errors name the variable or field, never the secret.
        let e = parse_with(json, &[("AZURE_STORAGE_KEY", "not base64!!")]).unwrap_err();
        assert_eq!(e.field, "AZURE_STORAGE_KEY");
        assert!(!e.to_string().contains("not base64!!"));
        let e = parse_with(json, &[("AZURE_STORAGE_ENDPOINT", "ftp://x")]).unwrap_err();
        assert_eq!(e.field, "AZURE_STORAGE_ENDPOINT");
        let with_region = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"azure://devstoreaccount1/configs","storage":{"region":"x"}}"#;
        assert_eq!(field_of(with_region), "storage.region");
        let bad_account = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"azure://Bad_Account/c"}"#;
        assert_eq!(field_of(bad_account), "cluster_fallback_config_storage");
    }

    fn field_of(json: &str) -> String {
        parse_with(json, &[]).unwrap_err().field
    }

    #[test]
    fn full_example_parses() {
        let s = parse_with(
            r#"{
              "cluster_fallback_config_import": true,
              "cluster_fallback_config_export": false,
              "cluster_fallback_config_storage": "s3://my-bucket/some/prefix/",
              "cluster_fallback_config_export_delay": 3,
              "node_id": "dp-1",
              "storage": { "cluster": "s3", "endpoint": "http://127.0.0.1:9000", "region": "eu-west-1", "timeout_ms": 1000 },
              "control_plane": { "cluster": "cp", "authority": "cp.internal", "path": "/v1/config", "timeout_ms": 2000, "poll_interval_ms": 5000 },
              "upstream_header": "x-up"
            }"#,
            &[("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK"), ("AWS_SESSION_TOKEN", "T")],
        )
        .unwrap();
        assert!(s.import && !s.export);
        assert_eq!(s.export_delay, Duration::from_secs(3));
        assert_eq!(s.node_id.as_deref(), Some("dp-1"));
        assert_eq!(s.upstream_header, "x-up");
        assert_eq!(s.control_plane.poll_interval, Duration::from_secs(5));
        let st = s.storage.unwrap();
        assert_eq!(st.location.bucket, "my-bucket");
        assert_eq!(st.location.prefix, "some/prefix");
        assert_eq!(st.cluster, "s3");
        assert_eq!(st.timeout, Duration::from_secs(1));
        assert_eq!(s3_of(&st).region, "eu-west-1");
        assert_eq!(
            s3_of(&st).addressing,
            S3Addressing::PathStyle {
                scheme: UrlScheme::Http,
                authority: "127.0.0.1:9000".into(),
                base_path: String::new()
            }
        );
        let c = s3_of(&st).credentials.clone().unwrap();
        assert_eq!(c.access_key_id, "AK");
        assert_eq!(c.session_token.unwrap().expose(), "T");
    }

    #[test]
    fn defaults() {
        let s = parse_with("", &[]).unwrap();
        assert!(!s.import && !s.export && s.storage.is_none());
        assert_eq!(s.control_plane.cluster, "control_plane");
        assert_eq!(s.control_plane.authority, "control_plane");
        assert_eq!(s.control_plane.path, "/v1/config");
        assert_eq!(s.control_plane.timeout, Duration::from_secs(2));
        assert_eq!(s.upstream_header, "x-fallback-upstream");
        let s = parse_with(
            r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3://b"}"#,
            &[("AWS_DEFAULT_REGION", "ap-south-1")],
        )
        .unwrap();
        let st = s.storage.unwrap();
        assert_eq!(st.cluster, "object_storage");
        assert_eq!(s3_of(&st).region, "ap-south-1");
        assert_eq!(s3_of(&st).addressing, S3Addressing::VirtualHosted);
        assert!(s3_of(&st).credentials.is_none());
        assert_eq!(st.location.prefix, "");
    }

    #[test]
    fn environment_fills_region_and_endpoint() {
        let s = parse_with(
            r#"{"cluster_fallback_config_export":true,"cluster_fallback_config_storage":"s3://b/p"}"#,
            &[
                ("AWS_REGION", "eu-central-1"),
                ("AWS_DEFAULT_REGION", "ap-south-1"),
                ("AWS_CONFIG_STORAGE_ENDPOINT", "https://minio.local:9000/base/"),
            ],
        )
        .unwrap();
        let st = s.storage.unwrap();
        assert_eq!(s3_of(&st).region, "eu-central-1");
        assert_eq!(
            s3_of(&st).addressing,
            S3Addressing::PathStyle {
                scheme: UrlScheme::Https,
                authority: "minio.local:9000".into(),
                base_path: "/base".into()
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"cluster_fallback_config_importt":true}"#),
            "cluster_fallback_config_importt"
        );
        assert_eq!(
            field_of(r#"{"cluster_fallback_config_import":"on"}"#),
            "cluster_fallback_config_import"
        );
        assert_eq!(
            field_of(r#"{"cluster_fallback_config_import":true}"#),
            "cluster_fallback_config_storage"
        );
        assert_eq!(
            field_of(
                r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"ftp://b/p"}"#
            ),
            "cluster_fallback_config_storage"
        );
        assert_eq!(
            field_of(
                r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3:///p"}"#
            ),
            "cluster_fallback_config_storage"
        );
        assert_eq!(
            field_of(r#"{"storage":{"timeout_ms":0}}"#),
            "storage.timeout_ms"
        );
        assert_eq!(
            field_of(r#"{"storage":{"timeout_ms":-5}}"#),
            "storage.timeout_ms"
        );
        assert_eq!(
            field_of(r#"{"control_plane":{"poll_interval_ms":0}}"#),
            "control_plane.poll_interval_ms"
        );
        assert_eq!(
            field_of(r#"{"control_plane":{"path":"v1"}}"#),
            "control_plane.path"
        );
        assert_eq!(
            field_of(r#"{"control_plane":{"bogus":1}}"#),
            "control_plane.bogus"
        );
        assert_eq!(field_of(r#"{"control_plane":3}"#), "control_plane");
        assert_eq!(
            field_of(r#"{"cluster_fallback_config_export_delay":1.5}"#),
            "cluster_fallback_config_export_delay"
        );
        assert_eq!(field_of(r#"{"upstream_header":"X Up"}"#), "upstream_header");
        assert_eq!(field_of(r#"{"node_id":""}"#), "node_id");
        assert_eq!(field_of(r#"[1]"#), "(root)");
        assert_eq!(field_of(r#"{"#), "(root)");
        let with_storage = r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3://b","storage":{"endpoint":"127.0.0.1:9000"}}"#;
        assert_eq!(field_of(with_storage), "storage.endpoint");
        let msg = parse_with(r#"{"storage":{"timeout_ms":0}}"#, &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`storage.timeout_ms`") && msg.contains("greater than 0"),
            "{msg}"
        );
    }

    #[test]
    fn values_the_host_would_refuse_later_are_refused_now() {
        let storage =
            r#""cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3://b""#;
        let f = |json: &str, vars: &[(&str, &str)]| parse_with(json, vars).unwrap_err().field;
        assert_eq!(
            f(
                &format!(r#"{{{storage},"storage":{{"region":"us east"}}}}"#),
                &[]
            ),
            "storage.region"
        );
        assert_eq!(
            f(&format!(r#"{{{storage}}}"#), &[("AWS_REGION", "eu/1")]),
            "AWS_REGION"
        );
        assert_eq!(
            f(r#"{"control_plane":{"authority":"cp\ninternal"}}"#, &[]),
            "control_plane.authority"
        );
        assert_eq!(
            f(r#"{"control_plane":{"path":"/v1 x"}}"#, &[]),
            "control_plane.path"
        );
        assert_eq!(
            f(r#"{"control_plane":{"cluster":"a b"}}"#, &[]),
            "control_plane.cluster"
        );
        assert_eq!(
            f(r#"{"control_plane":{"timeout_ms":4294967296}}"#, &[]),
            "control_plane.timeout_ms"
        );
        assert_eq!(
            f(r#"{"cluster_fallback_config_export_delay":100000000}"#, &[]),
            "cluster_fallback_config_export_delay"
        );
        let keys = [
            ("AWS_ACCESS_KEY_ID", "AK/1"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
        ];
        assert_eq!(f(&format!(r#"{{{storage}}}"#), &keys), "AWS_ACCESS_KEY_ID");
        let keys = [
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", "to ken-secret"),
        ];
        let e = parse_with(&format!(r#"{{{storage}}}"#), &keys).unwrap_err();
        assert_eq!(e.field, "AWS_SESSION_TOKEN");
        assert!(!e.to_string().contains("ken-secret"));
    }

    #[test]
    fn election_defaults_and_checks() {
        let s = parse_with("{}", &[]).unwrap();
        assert_eq!(s.election.lease_ttl, Duration::from_secs(30));
        assert_eq!(s.election.renew_interval, Duration::from_secs(10));
        let s = parse_with(
            r#"{"election":{"lease_ttl_ms":3000,"renew_interval_ms":1000}}"#,
            &[],
        )
        .unwrap();
        assert_eq!(s.election.lease_ttl, Duration::from_secs(3));
        assert_eq!(
            field_of(r#"{"election":{"lease_ttl_ms":1000,"renew_interval_ms":1000}}"#),
            "election.renew_interval_ms"
        );
        assert_eq!(
            field_of(r#"{"election":{"renew_interval_ms":0}}"#),
            "election.renew_interval_ms"
        );
        assert_eq!(
            field_of(r#"{"election":{"lease_ttl_ms":0}}"#),
            "election.lease_ttl_ms"
        );
        assert_eq!(field_of(r#"{"election":{"ttl":1}}"#), "election.ttl");
    }

    #[test]
    fn import_policy_limits_and_status_path() {
        let s = parse_with("{}", &[]).unwrap();
        assert_eq!(s.import_policy, ImportPolicy::default());
        assert_eq!(s.import_policy.retry_initial, Duration::from_secs(1));
        assert_eq!(s.import_policy.retry_max, Duration::from_secs(30));
        assert_eq!(s.import_policy.max_attempts, None);
        assert!(s.import_policy.older_versions);
        assert_eq!(s.import_policy.max_age, None);
        assert_eq!(s.control_plane.max_config_bytes, 33_554_432);
        assert_eq!(s.status_path, None);
        let s = parse_with(
            r#"{"import":{"retry_initial_ms":500,"retry_max_ms":4000,"max_attempts":3,
                          "older_versions":false,"max_age_s":3600},
                "control_plane":{"max_config_bytes":1024},
                "status_path":"/.fallback-config/status",
                "cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3://b",
                "storage":{"max_object_bytes":2048}}"#,
            &[],
        )
        .unwrap();
        let p = s.import_policy;
        assert_eq!(
            (
                p.retry_initial,
                p.retry_max,
                p.max_attempts,
                p.older_versions,
                p.max_age
            ),
            (
                Duration::from_millis(500),
                Duration::from_secs(4),
                Some(3),
                false,
                Some(Duration::from_secs(3600))
            )
        );
        assert_eq!(s.control_plane.max_config_bytes, 1024);
        assert_eq!(s.storage.unwrap().max_object_bytes, 2048);
        assert_eq!(s.status_path.as_deref(), Some("/.fallback-config/status"));
        // 0 means no limit.
        let s = parse_with(r#"{"import":{"max_attempts":0,"max_age_s":0}}"#, &[]).unwrap();
        assert_eq!(
            (s.import_policy.max_attempts, s.import_policy.max_age),
            (None, None)
        );
        for (json, field) in [
            (
                r#"{"import":{"retry_initial_ms":0}}"#,
                "import.retry_initial_ms",
            ),
            (
                r#"{"import":{"retry_initial_ms":5000,"retry_max_ms":1000}}"#,
                "import.retry_max_ms",
            ),
            (r#"{"import":{"max_attempts":-1}}"#, "import.max_attempts"),
            (
                r#"{"import":{"older_versions":"yes"}}"#,
                "import.older_versions",
            ),
            (r#"{"import":{"max_age_s":1.5}}"#, "import.max_age_s"),
            (r#"{"import":{"retries":3}}"#, "import.retries"),
            (
                r#"{"control_plane":{"max_config_bytes":0}}"#,
                "control_plane.max_config_bytes",
            ),
            (
                r#"{"storage":{"max_object_bytes":2147483648}}"#,
                "storage.max_object_bytes",
            ),
            (r#"{"status_path":"status"}"#, "status_path"),
            (r#"{"status_path":"/s?x=1"}"#, "status_path"),
            (r#"{"status_path":"/a b"}"#, "status_path"),
            (r#"{"status_path":7}"#, "status_path"),
        ] {
            assert_eq!(field_of(json), field, "{json}");
        }
    }

    #[test]
    fn node_id_precedence() {
        let s = parse_with(r#"{"node_id":"mine"}"#, &[]).unwrap();
        assert_eq!(s.resolve_node_id(Some("host".into()), 1), "mine");
        let s = parse_with("{}", &[]).unwrap();
        assert_eq!(s.resolve_node_id(Some("host".into()), 1), "host");
        assert_eq!(
            s.resolve_node_id(Some(" ".into()), 255),
            "node-00000000000000ff"
        );
        assert_eq!(s.resolve_node_id(None, 255), "node-00000000000000ff");
    }

    #[test]
    fn half_credentials_are_refused() {
        let json =
            r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3://b"}"#;
        assert_eq!(
            parse_with(json, &[("AWS_ACCESS_KEY_ID", "AK")])
                .unwrap_err()
                .field,
            "AWS_SECRET_ACCESS_KEY"
        );
        assert_eq!(
            parse_with(json, &[("AWS_SECRET_ACCESS_KEY", "SK")])
                .unwrap_err()
                .field,
            "AWS_ACCESS_KEY_ID"
        );
        assert_eq!(
            parse_with(json, &[("AWS_CONFIG_STORAGE_ENDPOINT", "gopher://x")])
                .unwrap_err()
                .field,
            "AWS_CONFIG_STORAGE_ENDPOINT"
        );
    }

    const S3_ROOT: &str =
        r#""cluster_fallback_config_export":true,"cluster_fallback_config_storage":"s3://b/p""#;

    fn s3_put_of(json: &str) -> S3PutOptions {
        let st = parse_with(json, &[]).unwrap().storage.unwrap();
        s3_of(&st).put_options.clone()
    }

    #[test]
    fn s3_put_options_as_object_or_string() {
        let kms = r#"{"ServerSideEncryption":"aws:kms","SSEKMSKeyId":"arn:aws:kms:us-east-1:111122223333:key/k-1","SSEKMSEncryptionContext":"eyJhcHAiOiJmYyJ9","BucketKeyEnabled":true,"StorageClass":"INTELLIGENT_TIERING"}"#;
        let expected = S3PutOptions {
            encryption: Some(ServerSideEncryption::Kms {
                kms: KmsOptions {
                    key_id: Some(
                        KmsKeyId::parse("arn:aws:kms:us-east-1:111122223333:key/k-1").unwrap(),
                    ),
                    context: Some(EncryptionContext::parse("eyJhcHAiOiJmYyJ9").unwrap()),
                },
                bucket_key_enabled: Some(true),
            }),
            storage_class: Some(StorageClass::IntelligentTiering),
        };
        assert_eq!(
            s3_put_of(&format!(
                r#"{{{S3_ROOT},"cluster_fallback_export_s3_config":{kms}}}"#
            )),
            expected
        );
        // kong.conf users paste the object as a string.
        let as_string = serde_json::to_string(kms).unwrap();
        assert_eq!(
            s3_put_of(&format!(
                r#"{{{S3_ROOT},"cluster_fallback_export_s3_config":{as_string}}}"#
            )),
            expected
        );
        for (options, sse) in [
            (
                r#"{"ServerSideEncryption":"AES256"}"#,
                ServerSideEncryption::Aes256,
            ),
            (
                r#"{"ServerSideEncryption":"aws:kms"}"#,
                ServerSideEncryption::Kms {
                    kms: KmsOptions::default(),
                    bucket_key_enabled: None,
                },
            ),
            (
                r#"{"ServerSideEncryption":"aws:kms:dsse","SSEKMSKeyId":"alias/fc"}"#,
                ServerSideEncryption::KmsDsse(KmsOptions {
                    key_id: Some(KmsKeyId::parse("alias/fc").unwrap()),
                    context: None,
                }),
            ),
        ] {
            let got = s3_put_of(&format!(
                r#"{{{S3_ROOT},"cluster_fallback_export_s3_config":{options}}}"#
            ));
            assert_eq!(got.encryption, Some(sse), "{options}");
            assert_eq!(got.storage_class, None);
        }
        let class_only = s3_put_of(&format!(
            r#"{{{S3_ROOT},"cluster_fallback_export_s3_config":{{"StorageClass":"STANDARD_IA"}}}}"#
        ));
        assert_eq!(class_only.encryption, None);
        assert_eq!(class_only.storage_class, Some(StorageClass::StandardIa));
        // Nothing asked for: absent, null, blank, `{}` (also on gs://).
        for nothing in [
            "",
            r#","cluster_fallback_export_s3_config":null"#,
            r#","cluster_fallback_export_s3_config":"  ""#,
            r#","cluster_fallback_export_s3_config":{}"#,
            r#","cluster_fallback_export_s3_config":"{}""#,
        ] {
            assert!(
                s3_put_of(&format!("{{{S3_ROOT}{nothing}}}")).is_empty(),
                "{nothing}"
            );
            let gcs = format!(
                r#"{{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"gs://b"{nothing}}}"#
            );
            assert!(parse_with(&gcs, &[]).is_ok(), "{gcs}");
        }
    }

    #[test]
    fn s3_put_options_the_store_sends() {
        let json = format!(
            r#"{{{S3_ROOT},"storage":{{"endpoint":"http://127.0.0.1:9000"}},
               "cluster_fallback_export_s3_config":"{{\"ServerSideEncryption\":\"aws:kms\",\"SSEKMSKeyId\":\"k-1\",\"BucketKeyEnabled\":false,\"StorageClass\":\"GLACIER_IR\"}}"}}"#
        );
        let s = parse_with(
            &json,
            &[("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")],
        )
        .unwrap();
        let store = crate::storage::ObjectStore::new(s.storage.unwrap());
        let r = store
            .put(
                "p/0.1.0/election/lease.json",
                b"{}".to_vec(),
                &crate::storage::PutMode::Create,
                crate::clock::Now::from_wall(crate::time::Timestamp(0)),
            )
            .unwrap();
        let h = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("x-amz-server-side-encryption"), Some("aws:kms"));
        assert_eq!(
            h("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("k-1")
        );
        assert_eq!(
            h("x-amz-server-side-encryption-bucket-key-enabled"),
            Some("false")
        );
        assert_eq!(h("x-amz-storage-class"), Some("GLACIER_IR"));
        assert_eq!(h("x-amz-server-side-encryption-context"), None);
        let auth = h("authorization").unwrap();
        assert!(
            auth.contains(";x-amz-server-side-encryption;x-amz-server-side-encryption-aws-kms-key-id;x-amz-server-side-encryption-bucket-key-enabled;x-amz-storage-class,"),
            "{auth}"
        );
    }

    #[test]
    fn s3_put_option_errors_name_the_parameter() {
        let f = |options: &str| {
            let json = format!(r#"{{{S3_ROOT},"cluster_fallback_export_s3_config":{options}}}"#);
            let e = parse_with(&json, &[]).unwrap_err();
            (e.field.clone(), e.to_string())
        };
        let p = "cluster_fallback_export_s3_config";
        for (options, field, says) in [
            (
                r#"{"Foo":1}"#,
                "Foo",
                "not a PutObject parameter the filter knows",
            ),
            (
                r#"{"serverSideEncryption":"AES256"}"#,
                "serverSideEncryption",
                "check its spelling",
            ),
            (r#"{"ACL":"private"}"#, "ACL", "does not send"),
            (
                r#"{"SSECustomerKey":"x"}"#,
                "SSECustomerKey",
                "does not send",
            ),
            (
                r#"{"ServerSideEncryption":"aes256"}"#,
                "ServerSideEncryption",
                "\"AES256\", \"aws:kms\" or \"aws:kms:dsse\"",
            ),
            (
                r#"{"ServerSideEncryption":true}"#,
                "ServerSideEncryption",
                "must be a string",
            ),
            (
                r#"{"BucketKeyEnabled":"true","ServerSideEncryption":"aws:kms"}"#,
                "BucketKeyEnabled",
                "true or false",
            ),
            (
                r#"{"StorageClass":"standard"}"#,
                "StorageClass",
                "must be one of STANDARD,",
            ),
            (
                r#"{"StorageClass":"GLACIER"}"#,
                "StorageClass",
                "cannot be read without a restore",
            ),
            (
                r#"{"StorageClass":"DEEP_ARCHIVE"}"#,
                "StorageClass",
                "cannot be read without a restore",
            ),
            (r#"{"StorageClass":1}"#, "StorageClass", "must be a string"),
            (
                r#"{"SSEKMSKeyId":"k-1"}"#,
                "SSEKMSKeyId",
                "applies only with ServerSideEncryption \"aws:kms\"",
            ),
            (
                r#"{"ServerSideEncryption":"AES256","SSEKMSKeyId":"k-1"}"#,
                "SSEKMSKeyId",
                "applies only with",
            ),
            (
                r#"{"ServerSideEncryption":"AES256","SSEKMSEncryptionContext":"e30="}"#,
                "SSEKMSEncryptionContext",
                "applies only with",
            ),
            (
                r#"{"BucketKeyEnabled":true}"#,
                "BucketKeyEnabled",
                "applies only with ServerSideEncryption \"aws:kms\"",
            ),
            (
                r#"{"ServerSideEncryption":"aws:kms:dsse","BucketKeyEnabled":true}"#,
                "BucketKeyEnabled",
                "not supported with DSSE-KMS",
            ),
            (
                r#"{"ServerSideEncryption":"aws:kms","SSEKMSKeyId":""}"#,
                "SSEKMSKeyId",
                "KMS key id",
            ),
            (
                r#"{"ServerSideEncryption":"aws:kms","SSEKMSKeyId":"my key"}"#,
                "SSEKMSKeyId",
                "no spaces",
            ),
            (
                r#"{"ServerSideEncryption":"aws:kms","SSEKMSEncryptionContext":"{\"a\":\"b\"}"}"#,
                "SSEKMSEncryptionContext",
                "it is not base64",
            ),
            (
                r#"{"ServerSideEncryption":"aws:kms","SSEKMSEncryptionContext":"WzFd"}"#,
                "SSEKMSEncryptionContext",
                "decodes to something else",
            ),
        ] {
            let (got, msg) = f(options);
            assert_eq!(got, format!("{p}.{field}"), "{options}");
            assert!(msg.contains(says), "{options}: {msg}");
        }
        for (options, says) in [
            (
                "5",
                "must be a JSON object of PutObject parameters (or a string holding one), got 5",
            ),
            ("[]", "got []"),
            (r#""{not json""#, "is a string but not a JSON object"),
            (r#""[1]""#, "got the string of [1]"),
        ] {
            let (got, msg) = f(options);
            assert_eq!(got, p, "{options}");
            assert!(msg.contains(says), "{options}: {msg}");
        }
        // An error inside the string form names the parameter too.
        assert_eq!(f(r#""{\"Foo\":1}""#).0, format!("{p}.Foo"));
        // Only for S3.
        for url in ["gs://b/p", "azure://devstoreaccount1/c/p"] {
            let json = format!(
                r#"{{"cluster_fallback_config_export":true,"cluster_fallback_config_storage":"{url}","cluster_fallback_export_s3_config":{{"ServerSideEncryption":"AES256"}}}}"#
            );
            let e = parse_with(&json, &[]).unwrap_err();
            assert_eq!(e.field, p, "{url}");
            assert!(e.reason.contains("applies only to s3:// storage"), "{e}");
        }
    }

    #[test]
    fn gcs_kms_key_name_and_azure_encryption_scope() {
        const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";
        let gcs = |storage: &str| {
            format!(
                r#"{{"cluster_fallback_config_export":true,"cluster_fallback_config_storage":"gs://b","storage":{storage}}}"#
            )
        };
        let st = parse_with(&gcs(&format!(r#"{{"kms_key_name":"{KEY}"}}"#)), &[])
            .unwrap()
            .storage
            .unwrap();
        let Backend::Gcs(g) = &st.backend else {
            panic!("not GCS")
        };
        assert_eq!(g.kms_key_name.as_ref().map(|k| k.as_str()), Some(KEY));
        let st = parse_with(&gcs("{}"), &[]).unwrap().storage.unwrap();
        let Backend::Gcs(g) = &st.backend else {
            panic!("not GCS")
        };
        assert_eq!(g.kms_key_name, None);
        for bad in [
            r#"{"kms_key_name":"my-key"}"#,
            r#"{"kms_key_name":"projects/p x"}"#,
            r#"{"kms_key_name":""}"#,
            r#"{"kms_key_name":7}"#,
        ] {
            assert_eq!(field_of(&gcs(bad)), "storage.kms_key_name", "{bad}");
        }
        let azure = |storage: &str| {
            format!(
                r#"{{"cluster_fallback_config_export":true,"cluster_fallback_config_storage":"azure://devstoreaccount1/c1c","storage":{storage}}}"#
            )
        };
        let st = parse_with(&azure(r#"{"encryption_scope":"scope-1"}"#), &[])
            .unwrap()
            .storage
            .unwrap();
        let Backend::Azure(az) = &st.backend else {
            panic!("not Azure")
        };
        assert_eq!(
            az.encryption_scope.as_ref().map(|s| s.as_str()),
            Some("scope-1")
        );
        for bad in [
            r#"{"encryption_scope":"my scope"}"#,
            r#"{"encryption_scope":""}"#,
            r#"{"encryption_scope":"scöpe"}"#,
            r#"{"encryption_scope":false}"#,
        ] {
            assert_eq!(field_of(&azure(bad)), "storage.encryption_scope", "{bad}");
        }
        // Each only for its own backend.
        let s3 = |storage: &str| format!(r#"{{{S3_ROOT},"storage":{storage}}}"#);
        for (json, field, scheme) in [
            (
                s3(&format!(r#"{{"kms_key_name":"{KEY}"}}"#)),
                "storage.kms_key_name",
                "gcs://",
            ),
            (
                azure(&format!(r#"{{"kms_key_name":"{KEY}"}}"#)),
                "storage.kms_key_name",
                "gcs://",
            ),
            (
                s3(r#"{"encryption_scope":"scope-1"}"#),
                "storage.encryption_scope",
                "azure://",
            ),
            (
                gcs(r#"{"encryption_scope":"scope-1"}"#),
                "storage.encryption_scope",
                "azure://",
            ),
        ] {
            let e = parse_with(&json, &[]).unwrap_err();
            assert_eq!(e.field, field, "{json}");
            assert!(
                e.reason
                    .contains(&format!("applies only to {scheme} storage")),
                "{e}"
            );
        }
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let s = parse_with(
            r#"{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"s3://b"}"#,
            &[
                ("AWS_ACCESS_KEY_ID", "AK"),
                ("AWS_SECRET_ACCESS_KEY", "topsecret"),
                ("AWS_SESSION_TOKEN", "tok3n"),
            ],
        )
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("topsecret") && !dbg.contains("tok3n"),
            "{dbg}"
        );
    }
}
