//! The chains, through the plugin JSON and the environment.

use crate::settings::Settings;
use crate::storage::azure::AzureCredentials;
use crate::storage::credentials::Provider;
use crate::storage::{Backend, Signing, StorageSettings};
use std::collections::HashMap;

fn storage(url: &str, extra: &str, vars: &[(&str, &str)]) -> Result<StorageSettings, String> {
    let json = format!(
        r#"{{"cluster_fallback_config_import":true,"cluster_fallback_config_storage":"{url}"{extra}}}"#
    );
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::parse(json.as_bytes(), &|k| vars.get(k).cloned())
        .map(|s| s.storage.expect("storage"))
        .map_err(|e| e.to_string())
}

fn s3(vars: &[(&str, &str)]) -> Result<StorageSettings, String> {
    storage("s3://bkt/pre", "", vars)
}

#[test]
fn aws_static_keys_then_container_then_imds() {
    let keys = [("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")];
    let full = (
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://127.0.0.1:8080/creds?x=1",
    );
    let relative = (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "/v2/credentials/abc",
    );
    // Static keys win over everything.
    let st = s3(&[keys[0], keys[1], full]).unwrap();
    assert_eq!(st.credentials, None);
    let Backend::S3(b) = &st.backend else {
        panic!()
    };
    assert!(b.credentials.is_some());
    // Then container credentials: the full URI before the relative one.
    let st = s3(&[full, relative, ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok")]).unwrap();
    let Some(Provider::AwsContainer(c)) = &st.credentials else {
        panic!("{:?}", st.credentials)
    };
    assert_eq!(
        (c.cluster.as_str(), c.authority.as_str(), c.path.as_str()),
        ("aws_container_credentials", "127.0.0.1:8080", "/creds?x=1")
    );
    assert!(c.authorization.is_some());
    let st = s3(&[relative]).unwrap();
    let Some(Provider::AwsContainer(c)) = &st.credentials else {
        panic!()
    };
    assert_eq!(
        (c.authority.as_str(), c.path.as_str()),
        ("169.254.170.2", "/v2/credentials/abc")
    );
    // Then IMDSv2, unless disabled (anonymous then).
    let st = s3(&[]).unwrap();
    let Some(Provider::AwsImds(i)) = &st.credentials else {
        panic!()
    };
    assert_eq!(
        (i.cluster.as_str(), i.authority.as_str()),
        ("aws_imds", "169.254.169.254")
    );
    let st = s3(&[(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "http://[fd00:ec2::254]/",
    )])
    .unwrap();
    let Some(Provider::AwsImds(i)) = &st.credentials else {
        panic!()
    };
    assert_eq!(i.authority, "[fd00:ec2::254]");
    assert_eq!(
        s3(&[("AWS_EC2_METADATA_DISABLED", "true")])
            .unwrap()
            .credentials,
        None
    );
    // The clusters are named in the plugin JSON.
    let st = storage(
        "s3://bkt",
        r#","credentials":{"aws_imds_cluster":"imds","aws_container_cluster":"ecs"}"#,
        &[],
    )
    .unwrap();
    let Some(Provider::AwsImds(i)) = &st.credentials else {
        panic!()
    };
    assert_eq!(i.cluster, "imds");
}

#[test]
fn token_files_a_wasm_vm_cannot_read_are_refused_with_what_to_do() {
    let e = s3(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.23/v1/credentials",
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
        ),
    ])
    .unwrap_err();
    assert!(e.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"), "{e}");
    assert!(e.contains("storage.signing"), "{e}");
    let e = s3(&[(
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
    )])
    .unwrap_err();
    assert!(
        e.contains("AWS_WEB_IDENTITY_TOKEN_FILE") && e.contains("\"envoy\""),
        "{e}"
    );
    // With Envoy signing, none of that matters: requests go out unsigned.
    let st = storage(
        "s3://bkt",
        r#","storage":{"signing":"envoy"}"#,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
        ],
    )
    .unwrap();
    assert_eq!((st.signing, st.credentials.clone()), (Signing::Envoy, None));
    let Backend::S3(b) = &st.backend else {
        panic!()
    };
    assert_eq!(b.credentials, None, "the filter never signs");
    let e = s3(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2/x")]).unwrap_err();
    assert!(e.contains("must start with '/'"), "{e}");
}

#[test]
fn signing_is_filter_envoy_or_none() {
    let e = storage("s3://b", r#","storage":{"signing":"proxy"}"#, &[]).unwrap_err();
    assert!(
        e.contains("storage.signing") && e.contains("\"proxy\""),
        "{e}"
    );
    for url in ["gs://b", "azure://acct/configs"] {
        let e = storage(url, r#","storage":{"signing":"envoy"}"#, &[]).unwrap_err();
        assert!(e.contains("applies only to s3://"), "{url}: {e}");
        let st = storage(url, r#","storage":{"signing":"none"}"#, &[]).unwrap();
        assert_eq!(st.credentials, None, "{url}");
    }
}

#[test]
fn gcp_service_account_then_metadata_server() {
    let st = storage("gs://b", "", &[("GCE_METADATA_HOST", "127.0.0.1:8181")]).unwrap();
    let Some(Provider::GcpMetadata(m)) = &st.credentials else {
        panic!()
    };
    assert_eq!(
        (m.cluster.as_str(), m.authority.as_str()),
        ("gcp_metadata", "127.0.0.1:8181")
    );
}

#[test]
fn azure_key_then_service_principal_then_managed_identity() {
    let url = "azure://devstoreaccount1/configs";
    let key = (
        "AZURE_STORAGE_KEY",
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    );
    let sp = [
        ("AZURE_TENANT_ID", "contoso"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_CLIENT_SECRET", "shh"),
    ];
    let azure_creds = |st: &StorageSettings| match &st.backend {
        Backend::Azure(a) => a.credentials.clone(),
        _ => panic!("not Azure"),
    };
    let st = storage(url, "", &[key, sp[0], sp[1], sp[2]]).unwrap();
    assert!(matches!(azure_creds(&st), AzureCredentials::SharedKey(_)));
    assert_eq!(st.credentials, None);
    let st = storage(url, "", &sp).unwrap();
    assert_eq!(azure_creds(&st), AzureCredentials::Token);
    let Some(Provider::AzureClientSecret(p)) = &st.credentials else {
        panic!()
    };
    assert_eq!(
        (
            p.tenant.as_str(),
            p.client_id.as_str(),
            p.cluster.as_str(),
            p.authority.as_str()
        ),
        (
            "contoso",
            "app-1",
            "azure_login",
            "login.microsoftonline.com"
        )
    );
    assert!(!format!("{p:?}").contains("shh"));
    let st = storage(url, "", &[sp[1]]).unwrap();
    let Some(Provider::AzureManagedIdentity(m)) = &st.credentials else {
        panic!()
    };
    assert_eq!(
        (m.client_id.as_deref(), m.cluster.as_str()),
        (Some("app-1"), "azure_imds")
    );
    let st = storage(url, "", &[]).unwrap();
    let Some(Provider::AzureManagedIdentity(m)) = &st.credentials else {
        panic!()
    };
    assert_eq!(m.client_id, None);
    let e = storage(url, "", &[sp[0], sp[2]]).unwrap_err();
    assert!(e.contains("AZURE_CLIENT_ID"), "{e}");
    let e = storage(url, "", &[sp[1], sp[2]]).unwrap_err();
    assert!(e.contains("AZURE_TENANT_ID"), "{e}");
    assert!(!e.contains("shh"));
}
