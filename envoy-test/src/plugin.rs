//! The filter's plugin configuration (the JSON passed to Envoy as a
//! `google.protobuf.StringValue`).

/// All plugin settings; [`PluginConfig::to_json`] renders the document.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    pub import: bool,
    pub export: bool,
    /// `s3://bucket/prefix`, `azure://account/container/prefix`,
    /// `gcs://bucket/prefix`.
    pub storage_url: String,
    /// Seconds.
    pub export_delay: u64,
    pub node_id: Option<String>,
    pub storage_cluster: String,
    /// `storage.endpoint`; `None` leaves it out (the backend's env var or
    /// default applies).
    pub storage_endpoint: Option<String>,
    /// `storage.region` (S3 only: the filter refuses it on other backends).
    pub region: Option<String>,
    /// `storage.token_cluster` (GCS only); `None`: the filter's default
    /// `gcp_oauth`.
    pub token_cluster: Option<String>,
    pub storage_timeout_ms: u64,
    pub cp_cluster: String,
    pub cp_authority: String,
    pub cp_path: String,
    pub cp_timeout_ms: u64,
    pub poll_interval_ms: u64,
    pub upstream_header: String,
    /// `election.lease_ttl_ms`; the `election` block is rendered only when
    /// this or [`PluginConfig::renew_interval_ms`] is set (the filter's
    /// defaults then apply to the other).
    pub lease_ttl_ms: Option<u64>,
    /// `election.renew_interval_ms`.
    pub renew_interval_ms: Option<u64>,
    /// `import.retry_initial_ms`; the `import` block is rendered only when
    /// one of its fields is set (the filter's defaults apply to the rest).
    pub import_retry_initial_ms: Option<u64>,
    /// `import.retry_max_ms`.
    pub import_retry_max_ms: Option<u64>,
    /// `import.max_attempts` (0: no limit).
    pub import_max_attempts: Option<u64>,
    /// `import.older_versions`.
    pub import_older_versions: Option<bool>,
    /// `import.max_age_s` (0: no limit).
    pub import_max_age_s: Option<u64>,
    /// `storage.max_object_bytes`.
    pub max_object_bytes: Option<u64>,
    /// `control_plane.max_config_bytes`.
    pub cp_max_config_bytes: Option<u64>,
    /// `status_path` (e.g. `/.fallback-config/status`); `None`: off.
    pub status_path: Option<String>,
    /// `storage.signing` (`filter`, `envoy`, `none`); `None`: left out
    /// (the filter's default, `filter`).
    pub signing: Option<String>,
    /// Fields of the `credentials` object (e.g. `aws_imds_cluster` ->
    /// `imds`), in order; the object is rendered only when this is not
    /// empty.
    pub credentials: Vec<(String, String)>,
    /// `role` (`any`, `worker`, `driver`); `None`: left out.
    pub role: Option<String>,
}

impl PluginConfig {
    /// Test defaults: short CP timeout (1 s) and poll interval (500 ms),
    /// import and export off.
    pub fn new(storage_url: &str, storage_endpoint: &str) -> PluginConfig {
        PluginConfig {
            import: false,
            export: false,
            storage_url: storage_url.into(),
            export_delay: 0,
            node_id: None,
            storage_cluster: "object_storage".into(),
            storage_endpoint: Some(storage_endpoint.into()),
            region: Some("us-east-1".into()),
            token_cluster: None,
            storage_timeout_ms: 2000,
            cp_cluster: "control_plane".into(),
            cp_authority: "cp.internal".into(),
            cp_path: "/v1/config".into(),
            cp_timeout_ms: 1000,
            poll_interval_ms: 500,
            upstream_header: "x-fallback-upstream".into(),
            lease_ttl_ms: None,
            renew_interval_ms: None,
            import_retry_initial_ms: None,
            import_retry_max_ms: None,
            import_max_attempts: None,
            import_older_versions: None,
            import_max_age_s: None,
            max_object_bytes: None,
            cp_max_config_bytes: None,
            status_path: None,
            signing: None,
            credentials: Vec::new(),
            role: None,
        }
    }

    /// Sets `role`.
    pub fn with_role(mut self, role: &str) -> PluginConfig {
        self.role = Some(role.into());
        self
    }

    /// Sets `storage.signing`.
    pub fn with_signing(mut self, signing: &str) -> PluginConfig {
        self.signing = Some(signing.into());
        self
    }

    /// Sets `credentials.<field>` (e.g. `aws_imds_cluster`,
    /// `aws_container_cluster`) to `cluster`.
    pub fn with_credentials_cluster(mut self, field: &str, cluster: &str) -> PluginConfig {
        self.credentials.retain(|(k, _)| k != field);
        self.credentials.push((field.into(), cluster.into()));
        self
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::json!({
            "cluster_fallback_config_import": self.import,
            "cluster_fallback_config_export": self.export,
            "cluster_fallback_config_storage": self.storage_url,
            "cluster_fallback_config_export_delay": self.export_delay,
            "storage": {
                "cluster": self.storage_cluster,
                "timeout_ms": self.storage_timeout_ms,
            },
            "control_plane": {
                "cluster": self.cp_cluster,
                "authority": self.cp_authority,
                "path": self.cp_path,
                "timeout_ms": self.cp_timeout_ms,
                "poll_interval_ms": self.poll_interval_ms,
            },
            "upstream_header": self.upstream_header,
        });
        if let (Some(id), Some(o)) = (&self.node_id, v.as_object_mut()) {
            o.insert("node_id".into(), id.clone().into());
        }
        if let Some(storage) = v["storage"].as_object_mut() {
            for (k, value) in [
                ("endpoint", &self.storage_endpoint),
                ("region", &self.region),
                ("token_cluster", &self.token_cluster),
            ] {
                if let Some(value) = value {
                    storage.insert(k.into(), value.clone().into());
                }
            }
            if let Some(n) = self.max_object_bytes {
                storage.insert("max_object_bytes".into(), n.into());
            }
            if let Some(signing) = &self.signing {
                storage.insert("signing".into(), signing.clone().into());
            }
        }
        if let (Some(n), Some(cp)) = (self.cp_max_config_bytes, v["control_plane"].as_object_mut())
        {
            cp.insert("max_config_bytes".into(), n.into());
        }
        let mut import = serde_json::Map::new();
        for (k, value) in [
            ("retry_initial_ms", self.import_retry_initial_ms),
            ("retry_max_ms", self.import_retry_max_ms),
            ("max_attempts", self.import_max_attempts),
            ("max_age_s", self.import_max_age_s),
        ] {
            if let Some(n) = value {
                import.insert(k.into(), n.into());
            }
        }
        if let Some(b) = self.import_older_versions {
            import.insert("older_versions".into(), b.into());
        }
        if let Some(o) = v.as_object_mut() {
            if !import.is_empty() {
                o.insert("import".into(), import.into());
            }
            if let Some(p) = &self.status_path {
                o.insert("status_path".into(), p.clone().into());
            }
            if let Some(r) = &self.role {
                o.insert("role".into(), r.clone().into());
            }
            if !self.credentials.is_empty() {
                let c: serde_json::Map<String, serde_json::Value> = self
                    .credentials
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                o.insert("credentials".into(), c.into());
            }
        }
        if self.lease_ttl_ms.is_some() || self.renew_interval_ms.is_some() {
            let mut e = serde_json::Map::new();
            if let Some(ttl) = self.lease_ttl_ms {
                e.insert("lease_ttl_ms".into(), ttl.into());
            }
            if let Some(renew) = self.renew_interval_ms {
                e.insert("renew_interval_ms".into(), renew.into());
            }
            if let Some(o) = v.as_object_mut() {
                o.insert("election".into(), e.into());
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_spec_fields() {
        let mut p = PluginConfig::new("s3://b/p", "http://127.0.0.1:9000");
        p.export = true;
        p.node_id = Some("n1".into());
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["cluster_fallback_config_export"], true);
        assert_eq!(v["cluster_fallback_config_import"], false);
        assert_eq!(v["cluster_fallback_config_storage"], "s3://b/p");
        assert_eq!(v["cluster_fallback_config_export_delay"], 0);
        assert_eq!(v["node_id"], "n1");
        assert_eq!(v["storage"]["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(v["control_plane"]["poll_interval_ms"], 500);
        assert_eq!(v["upstream_header"], "x-fallback-upstream");
        let p2 = PluginConfig::new("s3://b/p", "e");
        assert!(p2.to_json().find("node_id").is_none());
        assert!(p2.to_json().find("election").is_none());
        assert!(p2.to_json().find("token_cluster").is_none());
        for absent in [
            "\"import\"",
            "status_path",
            "max_object_bytes",
            "max_config_bytes",
        ] {
            assert!(!p2.to_json().contains(absent), "{absent}: {}", p2.to_json());
        }
    }

    #[test]
    fn renders_import_policy_limits_and_status_path_only_when_set() {
        let mut p = PluginConfig::new("s3://b/p", "e");
        p.import_retry_initial_ms = Some(300);
        p.import_retry_max_ms = Some(1000);
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v["import"],
            serde_json::json!({"retry_initial_ms": 300, "retry_max_ms": 1000})
        );
        p.import_max_attempts = Some(3);
        p.import_older_versions = Some(false);
        p.import_max_age_s = Some(3600);
        p.max_object_bytes = Some(2048);
        p.cp_max_config_bytes = Some(4096);
        p.status_path = Some("/.fallback-config/status".into());
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v["import"],
            serde_json::json!({"retry_initial_ms": 300, "retry_max_ms": 1000,
                "max_attempts": 3, "older_versions": false, "max_age_s": 3600})
        );
        assert_eq!(v["storage"]["max_object_bytes"], 2048);
        assert_eq!(v["control_plane"]["max_config_bytes"], 4096);
        assert_eq!(v["status_path"], "/.fallback-config/status");
    }

    /// The filter's own parser accepts what the harness renders.
    #[test]
    fn the_filter_accepts_every_new_field() {
        let mut p = PluginConfig::new("s3://b/p", "http://127.0.0.1:9000");
        p.import = true;
        p.import_retry_initial_ms = Some(300);
        p.import_retry_max_ms = Some(1000);
        p.import_max_attempts = Some(0);
        p.import_older_versions = Some(true);
        p.import_max_age_s = Some(60);
        p.max_object_bytes = Some(2048);
        p.cp_max_config_bytes = Some(4096);
        p.status_path = Some("/.fallback-config/status".into());
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKIAENVOYTEST0000001".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let s = fallback_config::settings::Settings::parse(p.to_json().as_bytes(), &env)
            .unwrap_or_else(|e| panic!("{e}: {}", p.to_json()));
        assert_eq!(s.status_path.as_deref(), Some("/.fallback-config/status"));
        assert_eq!(
            s.import_policy.retry_initial,
            std::time::Duration::from_millis(300)
        );
        assert_eq!(s.storage.unwrap().max_object_bytes, 2048);
        assert_eq!(s.control_plane.max_config_bytes, 4096);
    }

    /// `storage.signing` and `credentials.*` render where the filter
    /// reads them, and it accepts them.
    #[test]
    fn renders_signing_and_credential_clusters() {
        let p = PluginConfig::new("s3://b/p", "http://127.0.0.1:9000");
        assert!(!p.to_json().contains("signing"), "{}", p.to_json());
        assert!(!p.to_json().contains("credentials"), "{}", p.to_json());
        let p = p
            .with_signing("envoy")
            .with_credentials_cluster("aws_imds_cluster", "imds")
            .with_credentials_cluster("aws_container_cluster", "ecs")
            .with_credentials_cluster("aws_imds_cluster", "imds2");
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["storage"]["signing"], "envoy");
        assert_eq!(
            v["credentials"],
            serde_json::json!({"aws_imds_cluster": "imds2", "aws_container_cluster": "ecs"})
        );
        let s = fallback_config::settings::Settings::parse(p.to_json().as_bytes(), &|_| None)
            .unwrap_or_else(|e| panic!("{e}: {}", p.to_json()));
        assert_eq!(
            s.storage.map(|st| st.signing),
            Some(fallback_config::storage::Signing::Envoy)
        );
    }

    #[test]
    fn optional_storage_fields_are_left_out() {
        let mut p = PluginConfig::new("gcs://b/p", "http://127.0.0.1:1");
        p.region = None;
        p.token_cluster = Some("oauth".into());
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["storage"]["token_cluster"], "oauth");
        assert!(v["storage"].get("region").is_none());
        p.storage_endpoint = None;
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert!(v["storage"].get("endpoint").is_none());
        assert_eq!(v["storage"]["cluster"], "object_storage");
    }

    #[test]
    fn renders_election_block_only_with_the_fields_set() {
        let mut p = PluginConfig::new("s3://b/p", "e");
        p.lease_ttl_ms = Some(3000);
        p.renew_interval_ms = Some(1000);
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v["election"],
            serde_json::json!({"lease_ttl_ms": 3000, "renew_interval_ms": 1000})
        );
        p.renew_interval_ms = None;
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["election"], serde_json::json!({"lease_ttl_ms": 3000}));
    }
}
