//! moto (PyPI `moto[server]`, [`MOTO_VERSION`]) in server mode: a second,
//! independent S3 with its IAM and KMS, for what s3s-fs cannot show. It
//! keeps the server-side encryption a PUT asked for
//! (`x-amz-server-side-encryption`, the KMS key id, the Bucket Key flag)
//! and the storage class, and returns them on HEAD and GET; it enforces
//! `If-None-Match: *` and `If-Match` on PUT (412).
//!
//! Started with `INITIAL_NO_AUTH_ACTION_COUNT` = [`SETUP_ACTIONS`]: moto
//! lets that many actions through unauthenticated, and verifies every
//! later one: SigV4 recomputed with the secret of an IAM user's access key
//! (wrong secret: 403; unknown key: 403 `InvalidAccessKeyId`) and the
//! action checked against the user's policies (resources included).
//! Without the variable moto accepts any signature, which is useless here.
//! The free actions create the harness's admin user, its access key and
//! its `*` policy ([`Moto::start`]); everything after, the filter's own
//! least-privilege user, the KMS key and the bucket included, is signed
//! with real keys. [`Moto::start`] checks that an unknown key is refused,
//! so a moto that ignored the variable would fail there, not pass quietly.
//!
//! What moto does not do: verify the body against `x-amz-content-sha256`,
//! check KMS permissions when S3 encrypts (it records the key id as sent,
//! even one that does not exist), return the encryption context, or
//! answer a request without an `Authorization` header (500: it picks the
//! service from the credential scope). Every request here is signed.
//!
//! std only, like the rest of the harness; requests are signed with the
//! filter crate's SigV4.

use crate::http::{self, Response};
use crate::process::Proc;
use fallback_config::secret::Secret;
use fallback_config::sigv4::{self, Credentials, PayloadHash, SignableRequest, SigningParams};
use fallback_config::storage::xml;
use fallback_config::time::Timestamp;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The moto version the Makefile installs.
pub const MOTO_VERSION: &str = "5.2.5";
/// Env var with the path of `moto_server`.
pub const MOTO_SERVER_BIN: &str = "MOTO_SERVER_BIN";
/// The region every request is signed for.
pub const REGION: &str = "us-east-1";
/// Actions moto lets through unauthenticated: the admin's CreateUser,
/// CreateAccessKey and PutUserPolicy.
pub const SETUP_ACTIONS: u32 = 3;
/// The harness's own IAM user (policy `*`).
pub const ADMIN_USER: &str = "envoy-test-admin";

/// Path of `moto_server` (`$MOTO_SERVER_BIN`, else the cached install).
pub fn moto_server_path() -> PathBuf {
    match std::env::var_os(MOTO_SERVER_BIN) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(format!(
                ".cache/fallback-config/moto-{MOTO_VERSION}/bin/moto_server"
            ))
        }
    }
}

/// `moto_server`, or a panic naming `MOTO_SERVER_BIN`.
pub fn require_moto_server() -> PathBuf {
    crate::bins::check(
        "moto server",
        MOTO_SERVER_BIN,
        &moto_server_path(),
        &format!(
            "python3 -m venv <dir> && <dir>/bin/pip install 'moto[server]=={MOTO_VERSION}', then <dir>/bin/moto_server (`make setup` does it)"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An IAM user's access key.
#[derive(Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKey({}, ***)", self.id)
    }
}

impl AccessKey {
    /// For the filter's SigV4 signer.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.id.clone(), Secret::new(self.secret.clone()))
    }

    /// The AWS variables the filter reads, for moto at `endpoint`.
    pub fn env(&self, endpoint: &str) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_CONFIG_STORAGE_ENDPOINT".into(), endpoint.into()),
        ]
    }
}

/// A KMS key moto made.
#[derive(Clone, Debug)]
pub struct KmsKey {
    pub id: String,
    pub arn: String,
}

/// A running moto server, set up with the harness's admin user.
pub struct Moto {
    proc: Proc,
    port: u16,
    admin: AccessKey,
}

impl Moto {
    /// Starts `bin` on 127.0.0.1:`port` (output to `log`), waits (up to
    /// 30 s) until it accepts connections, creates the admin user with
    /// the [`SETUP_ACTIONS`] free actions, and checks that moto now
    /// refuses an unknown access key.
    pub fn start(bin: &Path, log: &Path, port: u16) -> Result<Moto, String> {
        let args: Vec<String> = vec![
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        let env = vec![(
            "INITIAL_NO_AUTH_ACTION_COUNT".to_string(),
            SETUP_ACTIONS.to_string(),
        )];
        let mut proc =
            Proc::spawn("moto", bin, &args, &env, &[], log).map_err(|e| e.to_string())?;
        // A TCP connect only: any HTTP request would use up a free action.
        proc.wait_listening(port, Duration::from_secs(30))?;
        // Signed with a made-up key: moto routes by the credential scope
        // and does not check these (the free actions).
        let nobody = AccessKey {
            id: "AKIAENVOYTESTSETUP01".into(),
            secret: "setup".into(),
        };
        let mut moto = Moto {
            proc,
            port,
            admin: nobody.clone(),
        };
        let admin = moto.create_user(
            ADMIN_USER,
            &json!({"Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        )?;
        moto.admin = admin;
        // From here on moto verifies: an unknown key must be refused.
        let r = moto.s3(&nobody, "GET", "/", "", &[], b"")?;
        if r.status != 403 {
            return Err(format!(
                "moto accepted an unknown access key after the {SETUP_ACTIONS} free actions (is INITIAL_NO_AUTH_ACTION_COUNT honoured?): {}",
                r.summary()
            ));
        }
        Ok(moto)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `Host` every request carries (and signs).
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The harness's admin key (policy `*`).
    pub fn admin(&self) -> &AccessKey {
        &self.admin
    }

    /// The server process (log, liveness).
    pub fn process(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Creates IAM user `name` with the inline policy `policy` and returns
    /// its new access key (three IAM actions, signed by the admin).
    pub fn create_user(&self, name: &str, policy: &Value) -> Result<AccessKey, String> {
        self.iam(&[("Action", "CreateUser"), ("UserName", name)])?;
        let body = self.iam(&[("Action", "CreateAccessKey"), ("UserName", name)])?;
        let id = xml::element(&body, "AccessKeyId");
        let secret = xml::element(&body, "SecretAccessKey");
        let policy = policy.to_string();
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "envoy-test"),
            ("PolicyDocument", &policy),
        ])?;
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(AccessKey { id, secret }),
            _ => Err(format!("CreateAccessKey answered without a key: {body}")),
        }
    }

    /// A KMS CreateKey (symmetric, ENCRYPT_DECRYPT), signed by the admin.
    pub fn create_kms_key(&self, description: &str) -> Result<KmsKey, String> {
        let body = json!({ "Description": description }).to_string();
        let r = self.signed(
            &self.admin,
            "kms",
            "POST",
            "/",
            "",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", "TrentService.CreateKey"),
            ],
            body.as_bytes(),
        )?;
        if r.status != 200 {
            return Err(format!("KMS CreateKey: {}", r.summary()));
        }
        let meta = &r.json()["KeyMetadata"];
        match (meta["KeyId"].as_str(), meta["Arn"].as_str()) {
            (Some(id), Some(arn)) => Ok(KmsKey {
                id: id.into(),
                arn: arn.into(),
            }),
            _ => Err(format!(
                "KMS CreateKey answered without a key: {}",
                r.summary()
            )),
        }
    }

    /// CreateBucket (us-east-1: no body), signed by the admin.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let r = self.s3(&self.admin, "PUT", &format!("/{bucket}"), "", &[], b"")?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("CreateBucket {bucket}: {}", r.summary()))
        }
    }

    /// A path-style S3 object request (`/<bucket>/<key>`, the key encoded
    /// as the filter encodes it), signed with `key`.
    pub fn object(
        &self,
        key: &AccessKey,
        method: &str,
        bucket: &str,
        object: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let path = format!("/{bucket}/{}", sigv4::uri_encode(object, false));
        self.s3(key, method, &path, "", headers, body)
    }

    /// HEAD of an object, signed with `key`.
    pub fn head(&self, key: &AccessKey, bucket: &str, object: &str) -> Result<Response, String> {
        self.object(key, "HEAD", bucket, object, &[], b"")
    }

    /// Any S3 request, signed with `key` (S3's SigV4 rules).
    pub fn s3(
        &self,
        key: &AccessKey,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        self.signed(key, "s3", method, path, query, headers, body)
    }

    /// An IAM query-API action (form POST), signed by the admin; the body
    /// of a 200 answer.
    fn iam(&self, params: &[(&str, &str)]) -> Result<String, String> {
        let mut form = String::from("Version=2010-05-08");
        for (k, v) in params {
            form.push_str(&format!("&{k}={}", sigv4::uri_encode(v, true)));
        }
        let r = query_api(self.port, &self.admin.credentials(), "iam", &form)?;
        if r.status == 200 {
            Ok(r.text())
        } else {
            Err(format!("IAM {params:?}: {}", r.summary()))
        }
    }

    /// Signs with `key` for `service` (S3's rules for `s3`, the standard
    /// ones otherwise) at the current time and sends to moto.
    #[allow(clippy::too_many_arguments)]
    fn signed(
        &self,
        key: &AccessKey,
        service: &str,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        signed_request(
            self.port,
            &key.credentials(),
            service,
            method,
            path,
            query,
            headers,
            body,
        )
    }

    /// Any S3 request signed with `credentials`, e.g. STS temporary
    /// credentials ([`TemporaryCredentials::credentials`]: the session
    /// token goes in `x-amz-security-token`, which moto verifies).
    #[allow(clippy::too_many_arguments)]
    pub fn s3_with(
        &self,
        credentials: &Credentials,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        signed_request(
            self.port,
            credentials,
            "s3",
            method,
            path,
            query,
            headers,
            body,
        )
    }

    /// An STS client signing as the admin (clonable, `Send`: for servers
    /// that fetch credentials from their own threads).
    pub fn sts(&self) -> Sts {
        Sts {
            port: self.port,
            admin: self.admin.clone(),
        }
    }

    /// Creates IAM role `name` (trust policy: anyone in the account may
    /// assume it) with the inline permissions `policy`; returns its ARN.
    pub fn create_role(&self, name: &str, policy: &Value) -> Result<String, String> {
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
        .to_string();
        let body = self.iam(&[
            ("Action", "CreateRole"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", &trust),
        ])?;
        let arn = xml::element(&body, "Arn")
            .ok_or_else(|| format!("CreateRole answered without an Arn: {body}"))?;
        let policy = policy.to_string();
        self.iam(&[
            ("Action", "PutRolePolicy"),
            ("RoleName", name),
            ("PolicyName", "envoy-test"),
            ("PolicyDocument", &policy),
        ])?;
        Ok(arn)
    }

    /// STS AssumeRole of `role_arn` by the admin (see [`Sts::assume_role`]).
    pub fn assume_role(
        &self,
        role_arn: &str,
        session_name: &str,
    ) -> Result<TemporaryCredentials, String> {
        self.sts().assume_role(role_arn, session_name)
    }
}

/// An AWS query-API action (IAM, STS): a form POST to `/`, signed.
fn query_api(
    port: u16,
    credentials: &Credentials,
    service: &str,
    form: &str,
) -> Result<Response, String> {
    signed_request(
        port,
        credentials,
        service,
        "POST",
        "/",
        "",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        form.as_bytes(),
    )
}

/// Signs with `credentials` for `service` (S3's rules for `s3`, the
/// standard ones otherwise) at the current time and sends to moto on `port`.
#[allow(clippy::too_many_arguments)]
fn signed_request(
    port: u16,
    credentials: &Credentials,
    service: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let mut to_sign: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    to_sign.push(("host".into(), format!("127.0.0.1:{port}")));
    let now = Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    );
    let payload = PayloadHash::Body(body);
    let params = if service == "s3" {
        SigningParams::s3(credentials, REGION, now, payload)
    } else {
        SigningParams::standard(credentials, REGION, service, now, payload)
    };
    let signed = sigv4::sign(
        &SignableRequest {
            method,
            path,
            query,
            headers: &to_sign,
        },
        &params,
    )
    .map_err(|e| e.to_string())?;
    to_sign.extend(signed.headers);
    let pairs: Vec<(&str, &str)> = to_sign
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = match query {
        "" => path.to_string(),
        q => format!("{path}?{q}"),
    };
    http::request(port, method, &target, &pairs, body)
        .map_err(|e| format!("{method} {target} to moto: {e}"))
}

/// STS temporary credentials (AssumeRole), as moto issued them.
#[derive(Clone)]
pub struct TemporaryCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// `Expiration` as STS reported it (RFC 3339).
    pub expiration: String,
}

impl std::fmt::Debug for TemporaryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TemporaryCredentials({}, ***, ***, {})",
            self.access_key_id, self.expiration
        )
    }
}

impl TemporaryCredentials {
    /// For the filter's SigV4 signer, session token included.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            self.access_key_id.clone(),
            Secret::new(self.secret_access_key.clone()),
        )
        .with_session_token(Secret::new(self.session_token.clone()))
    }
}

/// STS of one moto server, signing as the harness's admin. Clonable and
/// `Send`, unlike [`Moto`] (which owns the process).
#[derive(Clone, Debug)]
pub struct Sts {
    port: u16,
    admin: AccessKey,
}

impl Sts {
    /// AssumeRole (`DurationSeconds` 3600): fresh temporary credentials
    /// each call; moto's S3 then verifies their session token (a wrong one:
    /// 400 `InvalidToken`) and checks the role's policies.
    pub fn assume_role(
        &self,
        role_arn: &str,
        session_name: &str,
    ) -> Result<TemporaryCredentials, String> {
        let form = format!(
            "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName={}&DurationSeconds=3600",
            sigv4::uri_encode(role_arn, true),
            sigv4::uri_encode(session_name, true)
        );
        let r = query_api(self.port, &self.admin.credentials(), "sts", &form)?;
        if r.status != 200 {
            return Err(format!("STS AssumeRole {role_arn}: {}", r.summary()));
        }
        let body = r.text();
        let field = |name: &str| {
            xml::element(&body, name)
                .ok_or_else(|| format!("AssumeRole answered without {name}: {body}"))
        };
        Ok(TemporaryCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: field("SessionToken")?,
            expiration: field("Expiration")?,
        })
    }
}

/// The least-privilege policy of an exporter and importer on `bucket`
/// with SSE-KMS under `kms_key_arn`: object read and write, the listing
/// (older-version fallback), and the two KMS actions S3 performs for the
/// caller (moto checks the S3 ones; real S3 checks all of them).
pub fn filter_policy(bucket: &str, kms_key_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": format!("arn:aws:s3:::{bucket}/*")},
            {"Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": format!("arn:aws:s3:::{bucket}")},
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
             "Resource": kms_key_arn},
        ]
    })
}
