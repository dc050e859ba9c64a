//! `wasm/envoy.yaml`, the example config for users, must be accepted by
//! `envoy --mode validate`. Validate mode loads the wasm module and runs its
//! `on_vm_start` and `on_configure` with the example's plugin JSON, so this
//! needs ENVOY_BIN and the built module (FALLBACK_CONFIG_WASM).

use envoy_test::bins;
use std::path::Path;

fn example() -> String {
    let p = bins::workspace_root().join("wasm/envoy.yaml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn example_envoy_yaml_validates() {
    let envoy = bins::require_envoy();
    let wasm = bins::require_wasm();
    let root = bins::workspace_root();
    let default_wasm = root.join("wasm/fallback_config.wasm");
    let same = std::fs::canonicalize(&default_wasm).ok() == Some(wasm.clone());
    let (config, _dir) = if same {
        // Validate the file exactly as shipped (its wasm path is relative
        // to the repository root).
        (root.join("wasm/envoy.yaml"), None)
    } else {
        // FALLBACK_CONFIG_WASM points elsewhere: validate a copy using it.
        let dir = envoy_test::workdir::WorkDir::new("example-validate");
        let text = example().replace(
            "filename: wasm/fallback_config.wasm",
            &format!("filename: {}", wasm.display()),
        );
        let p = dir.join("envoy.yaml");
        std::fs::write(&p, text).unwrap();
        (p, Some(dir))
    };
    let (ok, out) = envoy_test::envoy::validate(&envoy, &config, &root);
    assert!(
        ok,
        "envoy --mode validate -c {} failed:\n{out}",
        config.display()
    );
}

#[test]
fn example_plugin_json_is_complete() {
    let text = example();
    let start = text.find("value: |").expect("plugin JSON block") + "value: |".len();
    let end = text[start..]
        .find("vm_config:")
        .expect("vm_config after the JSON")
        + start;
    let json: serde_json::Value = serde_json::from_str(&text[start..end])
        .unwrap_or_else(|e| panic!("example plugin JSON does not parse: {e}"));
    for k in [
        "cluster_fallback_config_import",
        "cluster_fallback_config_export",
        "cluster_fallback_config_storage",
        "cluster_fallback_config_export_delay",
        "storage",
        "control_plane",
        "upstream_header",
    ] {
        assert!(json.get(k).is_some(), "example plugin JSON lacks {k}");
    }
    // The driver is the main thread's bootstrap service, the filter only
    // serves (README: "Driver on the main thread").
    assert_eq!(json["role"], "driver");
    assert!(text.find("bootstrap_extensions:") < text.find("value: |"));
    assert!(
        text.contains(r#"value: '{"role": "worker", "upstream_header": "x-fallback-upstream"}'"#),
        "the filter's plugin JSON is a worker's"
    );
    // AWS, virtual-hosted: no endpoint, TLS from the cluster.
    assert_eq!(json["storage"].get("endpoint"), None);
    assert_eq!(json["storage"]["cluster"], "object_storage");
    // The storage cluster validates the store's certificate.
    let storage = &text[text
        .find("- name: object_storage")
        .expect("storage cluster")..];
    let storage = &storage[..storage.find("\n  - name:").unwrap_or(storage.len())];
    for needle in [
        "envoy.transport_sockets.tls",
        "sni: my-bucket.s3.us-east-1.amazonaws.com",
        "trusted_ca:",
        "match_typed_subject_alt_names:",
        "port_value: 443",
    ] {
        assert!(storage.contains(needle), "object_storage lacks {needle}");
    }
    for cluster in ["- name: aws_imds", "- name: aws_container_credentials"] {
        assert!(text.contains(cluster), "example lacks {cluster}");
    }
    assert_eq!(json["control_plane"]["cluster"], "control_plane");
    for k in envoy_test::envoy::HOST_ENV_KEYS {
        assert!(
            text.contains(&format!("- {k}\n")),
            "host_env_keys lacks {k}"
        );
    }
    for port in [
        "port_value: 10000",
        "port_value: 9901",
        "port_value: 8080",
        "port_value: 8081",
    ] {
        assert!(text.contains(port), "example lacks {port}");
    }
    assert!(text.contains("cluster_header: x-fallback-upstream"));
    assert!(Path::new(&bins::workspace_root().join("wasm")).is_dir());
}
