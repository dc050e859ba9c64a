//! S3 server-side encryption options (`cluster_fallback_export_s3_config`,
//! Kong's field) end to end, on moto: a second S3 that verifies SigV4
//! against an IAM user's key and policy and keeps what each PUT asked for
//! (see `envoy_test::moto`).
//!
//! An exporter in a real Envoy, with a least-privilege IAM user, asks for
//! SSE-KMS with a KMS key moto made, an encryption context, an S3 Bucket
//! Key and STANDARD_IA. Its object traffic goes through a recording
//! [`FaultFront`] (nothing is faulted), which shows that every PUT, the
//! config and the lease (create and renewals) alike, carried the
//! `x-amz-*` headers inside `SignedHeaders`, and that moto, which
//! recomputes the signature over exactly those headers, accepted each one.
//! Then HEADs signed by the harness show that moto stored the encryption,
//! the key, the Bucket Key flag and the class on `config.json` and on
//! `election/lease.json`, and a new Envoy with the CP down (its plugin
//! JSON carrying the same options as a string, as kong.conf writes them)
//! imports the config and serves it.
//!
//! The GCS (`storage.kms_key_name`) and Azure (`storage.encryption_scope`)
//! options are run the same way on the usual stores, through a recording
//! [`FaultFront`]: every write of the config and the lease carries
//! `kmsKeyName` / `x-ms-encryption-scope`, and the store took it (Azurite
//! verifies the SharedKey signature, whose string to sign holds the
//! scope header; the GCS front only accepts issued tokens). Neither
//! emulator implements the encryption itself, so nothing is read back.
//!
//! Needs ENVOY_BIN, MOTO_SERVER_BIN, AZURITE_BIN, GCS_EMULATOR_BIN and
//! FALLBACK_CONFIG_WASM.

use envoy_test::control_plane::ControlPlane;
use envoy_test::election::lease_key;
use envoy_test::envelope::VERSION;
use envoy_test::envoy::{Envoy, EnvoyConfig};
use envoy_test::faults::{FaultFront, FrontRequest};
use envoy_test::moto::{self, AccessKey, Moto};
use envoy_test::on_stores;
use envoy_test::plugin::PluginConfig;
use envoy_test::ports::free_port;
use envoy_test::stack::{
    echo_config, expect_healthy, expect_proxied, expect_store_auth_ok, wait_status, Stack, CP_PATH,
    ECHO,
};
use envoy_test::store::{StoreKind, STORAGE_CLUSTER};
use envoy_test::upstream::Upstream;
use envoy_test::wait::{self, TIMEOUT};
use envoy_test::workdir::WorkDir;
use serde_json::{json, Value};
use std::time::Duration;

const BUCKET: &str = "fallback-configs";
const PREFIX: &str = "gateways/sse";
/// base64 of `{"app":"fallback-config"}`: the SDK's form of the context.
const CONTEXT: &str = "eyJhcHAiOiJmYWxsYmFjay1jb25maWcifQ==";
const STORAGE_CLASS: &str = "STANDARD_IA";

#[track_caller]
fn ok<T>(r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// `plugin`'s JSON with `cluster_fallback_export_s3_config` set to `value`.
fn with_s3_config(plugin: &PluginConfig, value: Value) -> String {
    let mut v: Value = serde_json::from_str(&plugin.to_json()).unwrap_or_else(|e| panic!("{e}"));
    v["cluster_fallback_export_s3_config"] = value;
    serde_json::to_string_pretty(&v).unwrap_or_else(|e| panic!("{e}"))
}

fn header<'a>(r: &'a FrontRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `SignedHeaders` list of a SigV4 `Authorization` header.
fn signed_headers(r: &FrontRequest) -> Vec<String> {
    header(r, "authorization")
        .and_then(|a| a.split("SignedHeaders=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .map(|list| list.split(';').map(str::to_string).collect())
        .unwrap_or_default()
}

/// The servers of the scenario, in drop order after the Envoys.
struct Setup {
    front: FaultFront,
    moto: Moto,
    cp: ControlPlane,
    echo: Upstream,
    filter_key: AccessKey,
    kms: moto::KmsKey,
    dir: WorkDir,
}

impl Setup {
    fn start() -> Setup {
        let dir = WorkDir::new("sse-moto");
        let moto_bin = moto::require_moto_server();
        let moto = ok(Moto::start(&moto_bin, &dir.join("moto.log"), free_port()));
        let kms = ok(moto.create_kms_key("fallback-config snapshots"));
        ok(moto.create_bucket(BUCKET));
        let filter_key =
            ok(moto.create_user("fallback-config", &moto::filter_policy(BUCKET, &kms.arn)));
        let front = FaultFront::start(moto.port()).unwrap_or_else(|e| panic!("{e}"));
        let cp = ControlPlane::new_down(free_port(), CP_PATH);
        cp.set_config(&echo_config("r1"));
        let echo = Upstream::start(ECHO, free_port()).unwrap_or_else(|e| panic!("{e}"));
        Setup {
            front,
            moto,
            cp,
            echo,
            filter_key,
            kms,
            dir,
        }
    }

    fn plugin(&self) -> PluginConfig {
        PluginConfig::new(&format!("s3://{BUCKET}/{PREFIX}"), &self.moto.endpoint())
    }

    /// Envoy with the filter and `plugin_json`; the object storage cluster
    /// reaches moto through the recording front.
    fn envoy(&self, name: &str, plugin_json: &str) -> Envoy {
        let cfg = EnvoyConfig::new()
            .cluster(STORAGE_CLUSTER, self.front.port())
            .cluster("control_plane", self.cp.port())
            .cluster(ECHO, self.echo.port())
            .wasm(&envoy_test::bins::require_wasm(), plugin_json);
        Envoy::start(
            &envoy_test::bins::require_envoy(),
            name,
            cfg,
            self.dir.path(),
            &self.filter_key.env(&self.moto.endpoint()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[test]
fn s3_sse_options_are_signed_on_every_put_and_kept_by_the_store() {
    // Fail on a missing binary before starting anything.
    envoy_test::bins::require_envoy();
    envoy_test::bins::require_wasm();
    let s = Setup::start();
    ok(s.cp.up().map_err(|e| e.to_string()));
    let config_key = format!("{PREFIX}/{VERSION}/config.json");
    let lease = lease_key(PREFIX);
    let options = json!({
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": s.kms.arn,
        "SSEKMSEncryptionContext": CONTEXT,
        "BucketKeyEnabled": true,
        "StorageClass": STORAGE_CLASS,
    });
    // The lease renews every second, so renewals (If-Match PUTs) come soon.
    let mut exporter = s.plugin();
    exporter.export = true;
    exporter.node_id = Some("sse-exporter".into());
    exporter.lease_ttl_ms = Some(3000);
    exporter.renew_interval_ms = Some(1000);
    let mut envoy = s.envoy("exporter", &with_s3_config(&exporter, options.clone()));
    ok(envoy.wait_log("exported revision r1", TIMEOUT));
    let puts = wait::until("the lease to be created and renewed twice", TIMEOUT, || {
        let puts: Vec<FrontRequest> = s
            .front
            .log()
            .into_iter()
            .filter(|r| r.method == "PUT" && r.finished.is_some())
            .collect();
        let renewals = puts
            .iter()
            .filter(|r| r.path.contains("election/lease.json") && header(r, "if-match").is_some())
            .count();
        if renewals >= 2 {
            Ok(puts)
        } else {
            Err(format!(
                "{renewals} renewals; PUTs: {:?}",
                puts.iter().map(FrontRequest::summary).collect::<Vec<_>>()
            ))
        }
    });

    // Every PUT (config, lease create, lease renewals) carried the options
    // as signed headers, and moto, verifying the signature, took it.
    let expected = [
        ("x-amz-server-side-encryption", "aws:kms"),
        (
            "x-amz-server-side-encryption-aws-kms-key-id",
            s.kms.arn.as_str(),
        ),
        ("x-amz-server-side-encryption-context", CONTEXT),
        ("x-amz-server-side-encryption-bucket-key-enabled", "true"),
        ("x-amz-storage-class", STORAGE_CLASS),
    ];
    let is = |r: &FrontRequest, key: &str| r.path.ends_with(&format!("/{BUCKET}/{key}"));
    assert!(
        puts.iter().any(|r| is(r, &config_key)),
        "no PUT of {config_key}"
    );
    assert!(
        puts.iter()
            .any(|r| is(r, &lease) && header(r, "if-none-match") == Some("*")),
        "no create-if-absent PUT of the lease"
    );
    for put in &puts {
        assert_eq!(put.status, Some(200), "moto refused {}", put.summary());
        let signed = signed_headers(put);
        for (name, value) in expected {
            assert_eq!(
                header(put, name),
                Some(value),
                "{name} on {}",
                put.summary()
            );
            assert!(
                signed.iter().any(|h| h == name),
                "{name} is not in SignedHeaders {signed:?} of {}",
                put.summary()
            );
        }
    }
    // moto kept them on both objects (HEAD signed by the harness with the
    // filter's key: the policy allows it). The encryption context is not
    // among what moto returns; the PUTs above show it was sent.
    for key in [&config_key, &lease] {
        let r = ok(s.moto.head(&s.filter_key, BUCKET, key));
        assert_eq!(r.status, 200, "HEAD {key}: {}", r.summary());
        for (name, value) in [
            ("x-amz-server-side-encryption", "aws:kms"),
            (
                "x-amz-server-side-encryption-aws-kms-key-id",
                s.kms.arn.as_str(),
            ),
            ("x-amz-server-side-encryption-bucket-key-enabled", "true"),
            ("x-amz-storage-class", STORAGE_CLASS),
        ] {
            assert_eq!(
                r.header(name),
                Some(value),
                "{name} of {key}: {:?}",
                r.headers
            );
        }
    }
    // moto does verify: the same HEAD with another secret is refused.
    let wrong = AccessKey {
        id: s.filter_key.id.clone(),
        secret: "not-the-right-secret".into(),
    };
    let r = ok(s.moto.head(&wrong, BUCKET, &config_key));
    assert_eq!(
        r.status,
        403,
        "a wrong secret must be refused: {}",
        r.summary()
    );
    expect_healthy(&mut envoy);
    envoy.stop();

    // A new Envoy with the CP down imports the SSE-KMS object. Its plugin
    // JSON has the options as a string, as kong.conf users paste them.
    s.cp.down();
    let reads_before = s.front.log().len();
    let mut importer = s.plugin();
    importer.import = true;
    importer.import_retry_initial_ms = Some(300);
    importer.import_retry_max_ms = Some(1000);
    let mut envoy = s.envoy(
        "importer",
        &with_s3_config(&importer, Value::String(options.to_string())),
    );
    ok(envoy.wait_log("imported revision r1", TIMEOUT));
    ok(wait_status(
        &envoy,
        "/echo/sse",
        200,
        Duration::from_secs(2),
    ));
    expect_proxied(&envoy, "GET", "/echo/sse", &[], ECHO);
    let gets: Vec<FrontRequest> = s.front.log()[reads_before..]
        .iter()
        .filter(|r| r.method == "GET" && is(r, &config_key))
        .cloned()
        .collect();
    assert!(
        gets.iter().any(|r| r.status == Some(200)),
        "the importer read {config_key} from moto: {:?}",
        gets.iter().map(FrontRequest::summary).collect::<Vec<_>>()
    );
    expect_healthy(&mut envoy);
}

/// A Cloud KMS key name in the form GCS takes.
const GCS_KMS_KEY: &str =
    "projects/envoy-test/locations/europe-west1/keyRings/gateways/cryptoKeys/fallback-config";
/// An Azure encryption scope name.
const AZURE_SCOPE: &str = "fallback-config-scope";

/// GCS `storage.kms_key_name` and Azure `storage.encryption_scope`: every
/// write the exporter makes (config, lease create and renewals) names the
/// key or scope, and the store accepted each one.
fn encryption_option_is_on_every_write(kind: StoreKind) {
    let stack = Stack::with_faults(kind, "sse-option", true);
    let mut p = stack.exporter_plugin("sse-exporter");
    p.lease_ttl_ms = Some(3000);
    p.renew_interval_ms = Some(1000);
    let mut v: Value = serde_json::from_str(&p.to_json()).unwrap_or_else(|e| panic!("{e}"));
    match kind {
        StoreKind::Gcs => v["storage"]["kms_key_name"] = GCS_KMS_KEY.into(),
        _ => v["storage"]["encryption_scope"] = AZURE_SCOPE.into(),
    }
    let json = serde_json::to_string_pretty(&v).unwrap_or_else(|e| panic!("{e}"));
    let cfg = stack
        .envoy_config(&p)
        .wasm(&envoy_test::bins::require_wasm(), &json);
    let mut envoy = stack.start_envoy_config("exporter", cfg, &stack.store_env());
    ok(envoy.wait_log("exported revision r1", TIMEOUT));
    let is_write = |r: &FrontRequest| match kind {
        StoreKind::Gcs => r.method == "POST" && r.path.starts_with("/upload/"),
        _ => r.method == "PUT",
    };
    let names = |r: &FrontRequest, object: &str| {
        let decoded = envoy_test::http::percent_decode(&r.path, false);
        decoded.contains(&format!("{}/{object}", envoy_test::stack::PREFIX))
    };
    let lease_object = format!("{VERSION}/election/lease.json");
    let config_object = format!("{VERSION}/config.json");
    let writes = wait::until("the lease to be created and renewed twice", TIMEOUT, || {
        let writes: Vec<FrontRequest> = stack
            .faults()
            .log()
            .into_iter()
            .filter(|r| is_write(r) && r.finished.is_some())
            .collect();
        let lease_writes = writes.iter().filter(|r| names(r, &lease_object)).count();
        if lease_writes >= 3 {
            Ok(writes)
        } else {
            Err(format!(
                "{lease_writes} lease writes; writes: {:?}",
                writes.iter().map(FrontRequest::summary).collect::<Vec<_>>()
            ))
        }
    });
    assert!(
        writes.iter().any(|r| names(r, &config_object)),
        "no write of {config_object}"
    );
    let encoded_key = format!(
        "&kmsKeyName={}",
        envoy_test::envoy::percent_encode(GCS_KMS_KEY)
    );
    for w in &writes {
        assert!(
            matches!(w.status, Some(200 | 201)),
            "the store refused {}",
            w.summary()
        );
        match kind {
            StoreKind::Gcs => assert!(
                w.path.contains(&encoded_key),
                "{} lacks {encoded_key}",
                w.path
            ),
            _ => assert_eq!(
                header(w, "x-ms-encryption-scope"),
                Some(AZURE_SCOPE),
                "{}",
                w.summary()
            ),
        }
    }
    expect_store_auth_ok(&stack);
    expect_healthy(&mut envoy);
}
on_stores!(encryption_option_is_on_every_write: azure, gcs);
