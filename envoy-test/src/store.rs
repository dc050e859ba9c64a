//! The object store behind a scenario, whichever cloud it stands for:
//! s3s-fs (S3, verifies SigV4), Azurite (Azure Blob, verifies SharedKey and
//! SAS) or the GCS stack (emulator + OAuth token endpoint + authenticating
//! front, see [`crate::gcs`]).
//!
//! Scenarios are written once against [`Store`] and run on every
//! [`StoreKind`] with [`crate::on_every_store!`]: what differs per cloud
//! (the storage URL, the plugin's `storage` block, the credentials in the
//! environment, the Envoy clusters, what a credential failure looks like
//! in the log) is answered here.

use crate::azure::{Azurite, BlobClient};
use crate::gcs::GcsStack;
use crate::plugin::PluginConfig;
use crate::s3::S3Server;
use crate::workdir::WorkDir;
use std::time::{Duration, SystemTime};

/// S3 credentials s3s-fs accepts.
pub const ACCESS_KEY: &str = "AKIAENVOYTEST0000001";
/// Secret s3s-fs accepts.
pub const SECRET_KEY: &str = "envoy-test/secret+key=0001";
/// Region given to the filter (S3 only).
pub const REGION: &str = "us-east-1";
/// The Envoy cluster of the object API, on every backend.
pub const STORAGE_CLUSTER: &str = "object_storage";
/// The Envoy cluster of the GCS token endpoint (the filter's default
/// `storage.token_cluster`).
pub const TOKEN_CLUSTER: &str = "gcp_oauth";

/// Which cloud a store stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    S3,
    Azure,
    Gcs,
}

impl StoreKind {
    /// Every backend.
    pub const ALL: [StoreKind; 3] = [StoreKind::S3, StoreKind::Azure, StoreKind::Gcs];

    /// `s3`, `azure`, `gcs`: the storage URL scheme and a name for files.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::S3 => "s3",
            StoreKind::Azure => "azure",
            StoreKind::Gcs => "gcs",
        }
    }
}

/// A running object store with one bucket (S3, GCS) or container (Azure).
pub enum Store {
    S3(S3Server),
    Azure { server: Azurite, client: BlobClient },
    Gcs(Box<GcsStack>),
}

impl Store {
    /// Starts the store of `kind` in `dir` and creates `bucket` (a GCS
    /// bucket, an S3 bucket or an Azure container). Fails naming the
    /// binary's env var when it is missing.
    pub fn start(kind: StoreKind, dir: &WorkDir, bucket: &str) -> Store {
        let fail = |e: String| -> ! { panic!("{e}") };
        match kind {
            StoreKind::S3 => {
                let bin = crate::bins::require_s3s_fs();
                let s3 = S3Server::start(
                    &bin,
                    &dir.join("s3"),
                    &dir.join("s3s-fs.log"),
                    crate::ports::free_port(),
                    ACCESS_KEY,
                    SECRET_KEY,
                )
                .unwrap_or_else(|e| fail(e));
                s3.create_bucket(bucket);
                Store::S3(s3)
            }
            StoreKind::Azure => {
                let bin = crate::bins::require_azurite();
                let server =
                    Azurite::start(&bin, &dir.join("azurite.log"), crate::ports::free_port())
                        .unwrap_or_else(|e| fail(e));
                let client = server.client(bucket);
                let r = client.create_container().unwrap_or_else(|e| fail(e));
                if r.status != 201 {
                    fail(format!(
                        "Azurite refused to create container {bucket}: {}",
                        r.summary()
                    ));
                }
                Store::Azure { server, client }
            }
            StoreKind::Gcs => {
                let bin = crate::bins::require_gcs_emulator();
                let gcs = GcsStack::start(&bin, &dir.join("gcs-emulator.log"), bucket)
                    .unwrap_or_else(|e| fail(e));
                Store::Gcs(Box::new(gcs))
            }
        }
    }

    /// Which backend this is.
    pub fn kind(&self) -> StoreKind {
        match self {
            Store::S3(_) => StoreKind::S3,
            Store::Azure { .. } => StoreKind::Azure,
            Store::Gcs(_) => StoreKind::Gcs,
        }
    }

    /// `cluster_fallback_config_storage` for `bucket` and `prefix`:
    /// `s3://b/p`, `azure://devstoreaccount1/b/p`, `gcs://b/p`.
    pub fn storage_url(&self, bucket: &str, prefix: &str) -> String {
        match self {
            Store::Azure { .. } => format!("azure://{}/{bucket}/{prefix}", crate::azure::ACCOUNT),
            _ => format!("{}://{bucket}/{prefix}", self.kind().name()),
        }
    }

    /// The object's URL as the filter writes it in log lines
    /// (`<scheme>://[account/]bucket/key`).
    pub fn object_url(&self, bucket: &str, key: &str) -> String {
        self.storage_url(bucket, key)
    }

    /// The API endpoint for `storage.endpoint`: s3s-fs, Azurite's account
    /// URL, or the GCS front.
    pub fn endpoint(&self) -> String {
        match self {
            Store::S3(s3) => s3.endpoint(),
            Store::Azure { server, .. } => server.endpoint(),
            Store::Gcs(g) => g.endpoint(),
        }
    }

    /// A plugin config for this store: `storage.endpoint` set, and
    /// `storage.region` only for S3 (the filter refuses it elsewhere).
    pub fn plugin(&self, bucket: &str, prefix: &str) -> PluginConfig {
        let mut p = PluginConfig::new(&self.storage_url(bucket, prefix), &self.endpoint());
        if self.kind() != StoreKind::S3 {
            p.region = None;
        }
        p
    }

    /// The environment with the right credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Store::S3(s3) => s3_env(&s3.endpoint(), SECRET_KEY),
            Store::Azure { .. } => {
                vec![("AZURE_STORAGE_KEY".into(), crate::azure::ACCOUNT_KEY.into())]
            }
            Store::Gcs(g) => vec![("GCP_SERVICE_ACCOUNT".into(), g.service_account_json())],
        }
    }

    /// The environment with well-formed but wrong credentials: another S3
    /// secret, another Azure account key, or a service account whose key
    /// the token endpoint does not trust.
    pub fn wrong_env(&self) -> Vec<(String, String)> {
        match self {
            Store::S3(s3) => s3_env(&s3.endpoint(), "not-the-right-secret"),
            Store::Azure { .. } => vec![(
                "AZURE_STORAGE_KEY".into(),
                crate::azure::WRONG_ACCOUNT_KEY.into(),
            )],
            Store::Gcs(g) => vec![("GCP_SERVICE_ACCOUNT".into(), g.wrong_service_account_json())],
        }
    }

    /// What the filter's log line must contain when the credentials are
    /// wrong: the status and the store's error code, or for GCS the
    /// refused token request.
    pub fn wrong_credentials_evidence(&self) -> &'static [&'static str] {
        match self {
            Store::S3(_) => &["failed", "403", "SignatureDoesNotMatch"],
            // Azurite's code for a SharedKey signature mismatch (Azure's is
            // AuthenticationFailed; both are 403).
            Store::Azure { .. } => &["failed", "403", "AuthorizationFailure"],
            Store::Gcs(_) => &[
                "cannot get credentials",
                "400",
                "invalid_grant",
                "Invalid JWT Signature.",
            ],
        }
    }

    /// Refusals the harness saw on the store's side: for GCS, token
    /// requests the endpoint refused and object requests the front
    /// answered 401 (s3s-fs and Azurite refusals show in the filter's log,
    /// with the store's error code).
    pub fn auth_failures(&self) -> Vec<String> {
        match self {
            Store::Gcs(g) => g.auth_failures(),
            _ => Vec::new(),
        }
    }

    /// The Envoy clusters this store needs: `object_storage`, plus
    /// `gcp_oauth` (the token endpoint) for GCS.
    pub fn clusters(&self) -> Vec<(&'static str, u16)> {
        match self {
            Store::S3(s3) => vec![(STORAGE_CLUSTER, s3.port())],
            Store::Azure { server, .. } => vec![(STORAGE_CLUSTER, server.port())],
            Store::Gcs(g) => vec![
                (STORAGE_CLUSTER, g.front.port()),
                (TOKEN_CLUSTER, g.token.port()),
            ],
        }
    }

    /// The object's bytes, if it exists (read by the harness, not through
    /// Envoy).
    pub fn read(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match self {
            Store::S3(s3) => s3.read_object(bucket, key),
            Store::Azure { client, .. } => client
                .get(key)
                .unwrap_or_else(|e| panic!("{e}"))
                .map(|b| b.body),
            Store::Gcs(g) => g.read(key),
        }
    }

    /// Writes the object (replacing it).
    pub fn write(&self, bucket: &str, key: &str, bytes: &[u8]) {
        match self {
            Store::S3(s3) => s3.write_object(bucket, key, bytes),
            Store::Azure { client, .. } => client.put(key, bytes).unwrap_or_else(|e| panic!("{e}")),
            Store::Gcs(g) => g.write(key, bytes),
        }
    }

    /// Deletes the object (no error when absent).
    pub fn delete(&self, bucket: &str, key: &str) {
        match self {
            Store::S3(s3) => s3.delete_object(bucket, key),
            Store::Azure { client, .. } => client.delete(key).unwrap_or_else(|e| panic!("{e}")),
            Store::Gcs(g) => g.delete(key),
        }
    }

    /// When the object was last written, by the store's clock, with
    /// [`Store::modified_resolution`].
    pub fn modified(&self, bucket: &str, key: &str) -> Option<SystemTime> {
        match self {
            Store::S3(s3) => s3.object_mtime(bucket, key),
            Store::Azure { client, .. } => client
                .get(key)
                .unwrap_or_else(|e| panic!("{e}"))
                .and_then(|b| b.last_modified),
            Store::Gcs(g) => g.modified(key),
        }
    }

    /// Resolution of [`Store::modified`]: file times for s3s-fs and the
    /// front's own record for GCS are exact; Azurite only says
    /// `Last-Modified` (whole seconds).
    pub fn modified_resolution(&self) -> Duration {
        match self {
            Store::Azure { .. } => Duration::from_secs(1),
            _ => Duration::ZERO,
        }
    }

    /// The s3s-fs server; panics on another backend.
    #[track_caller]
    pub fn s3(&self) -> &S3Server {
        match self {
            Store::S3(s3) => s3,
            _ => panic!("this scenario needs the S3 store, not {:?}", self.kind()),
        }
    }

    /// The s3s-fs server, mutable; panics on another backend.
    #[track_caller]
    pub fn s3_mut(&mut self) -> &mut S3Server {
        match self {
            Store::S3(s3) => s3,
            other => panic!("this scenario needs the S3 store, not {:?}", other.kind()),
        }
    }

    /// Azurite and the harness's blob client; panics on another backend.
    #[track_caller]
    pub fn azure(&self) -> (&Azurite, &BlobClient) {
        match self {
            Store::Azure { server, client } => (server, client),
            _ => panic!("this scenario needs Azurite, not {:?}", self.kind()),
        }
    }

    /// The GCS stack; panics on another backend.
    #[track_caller]
    pub fn gcs(&self) -> &GcsStack {
        match self {
            Store::Gcs(g) => g,
            _ => panic!("this scenario needs the GCS stack, not {:?}", self.kind()),
        }
    }
}

/// The AWS variables for s3s-fs at `endpoint` with `secret`.
pub fn s3_env(endpoint: &str, secret: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
        ("AWS_REGION".into(), REGION.into()),
        ("AWS_DEFAULT_REGION".into(), REGION.into()),
        ("AWS_CONFIG_STORAGE_ENDPOINT".into(), endpoint.into()),
    ]
}

/// Runs a scenario `fn(StoreKind)` on every backend: expands to a module
/// named after the scenario with one `#[test]` per store, so
/// `cargo test <scenario>` runs it everywhere and
/// `cargo test <scenario>::azure` on one. Extra test attributes (e.g.
/// `#[ignore]`) are not supported on purpose: every backend always runs.
///
/// ```text
/// fn exporter_stores_envelope(kind: StoreKind) { ... }
/// envoy_test::on_every_store!(exporter_stores_envelope);
/// // tests: exporter_stores_envelope::s3, ::azure, ::gcs
/// ```
#[macro_export]
macro_rules! on_every_store {
    ($scenario:ident) => {
        $crate::on_stores!($scenario: s3, azure, gcs);
    };
}

/// Like [`on_every_store!`] for a chosen subset:
/// `on_stores!(scenario: azure, gcs)`.
#[macro_export]
macro_rules! on_stores {
    ($scenario:ident: $($store:ident),+ $(,)?) => {
        mod $scenario {
            $(
                #[test]
                fn $store() {
                    super::$scenario($crate::__store_kind!($store));
                }
            )+
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_kind {
    (s3) => {
        $crate::store::StoreKind::S3
    };
    (azure) => {
        $crate::store::StoreKind::Azure
    };
    (gcs) => {
        $crate::store::StoreKind::Gcs
    };
}
