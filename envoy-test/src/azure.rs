//! Azurite, Azure's Blob service emulator, which verifies SharedKey
//! signatures and SAS tokens, and a small blob client for the harness.
//!
//! The client signs with the filter's own request builder
//! (`fallback_config::storage::azure`): the harness has to create the
//! container (the filter never does) and reads and writes blobs for its
//! assertions. Azurite checking those signatures is what proves the
//! builder right; the filter's requests go through Envoy, the harness's
//! straight to Azurite.
//!
//! Account: the well-known development account `devstoreaccount1`,
//! path-style URLs `http://127.0.0.1:<port>/devstoreaccount1/<container>/<blob>`.

use crate::http::{self, Response};
use crate::process::Proc;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use fallback_config::storage::azure::{
    sign_shared_key, AzureCredentials, AzureEndpoint, AzureSettings, SharedKeyRequest, API_VERSION,
};
use fallback_config::storage::{PutMode, Via};
use fallback_config::time::Timestamp;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Azurite's development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its well-known key (public: it is in Azure's documentation).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// A well-formed key that is not the account's (base64 of 64 bytes), for
/// "wrong key" scenarios.
pub const WRONG_ACCOUNT_KEY: &str =
    "d3Jvbmcta2V5LWZvci1kZXZzdG9yZWFjY291bnQxLXdyb25nLWtleS1mb3ItZGV2c3RvcmVhY2NvdW50MS0xMjM0NTY=";

fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// A running Azurite blob service (in-memory persistence).
pub struct Azurite {
    proc: Proc,
    port: u16,
    /// Started with `--cert`/`--key` (HTTPS) by [`Azurite::start_https_oauth`].
    https: bool,
}

/// The `x-ms-version` harness OAuth requests send (Bearer tokens need
/// 2017-11-09 or later).
pub const OAUTH_API_VERSION: &str = "2021-08-06";

/// The Bearer-token check of Azurite 3.35 with `--oauth basic`, as read in
/// its source (`dist/src/blob/authentication/BlobTokenAuthenticator.js`,
/// `dist/src/common/utils/constants.js`, `dist/src/blob/utils/constants.js`):
///
/// - Only with `--oauth basic` is the token authenticator installed at
///   all, and it refuses Bearer over plain HTTP (403 `AuthenticationFailed`,
///   "Authentication scheme Bearer is not allowed with HTTP."): HTTPS
///   (`--cert`/`--key`) is required.
/// - The header must start with `Bearer` (else 400
///   `InvalidAuthenticationInfo`); the rest is decoded as a JWT with
///   `jsonwebtoken.decode`: the SIGNATURE IS NOT CHECKED (any or no
///   signature segment; alg/kid ignored). Not a JWT: 403
///   "Authentication scheme Bearer is not supported.".
/// - `nbf`, `exp` and `iat` must all be present (numbers, seconds);
///   the request time must be >= `nbf` (else "Lifetime validation
///   failed.") and <= `exp` (else "... The token is expired."). `iat` is
///   not compared with anything.
/// - `iss` must START WITH one of `https://sts.windows.net/`,
///   `https://sts.microsoftonline.de/`, `https://sts.chinacloudapi.cn/`,
///   `https://sts.windows-ppe.net` (the v1 issuer, as Entra puts in
///   tokens for the storage resource; a v2 `https://login.microsoftonline.com/...`
///   issuer is refused: "Invalid token issuer.").
/// - `aud` must match in full one of `https://storage.azure.com` (with or
///   without the trailing `/`), `e406a681-f3d4-42a8-90b6-c2b029497af1`
///   (Azure Storage's app id), or `https://<account>.blob.core.windows.net[/]`
///   (and the chinacloudapi.cn / usgovcloudapi.net / cloudapi.de forms), where
///   `<account>` must be the request's account ("Invalid token audience.").
/// - Not checked: the signature, `tid`, `scp`/`roles` (no RBAC), `appid`,
///   `oid`. Every failure is 403 `AuthenticationFailed` with the reason in
///   `AuthenticationErrorDetail`. SharedKey and SAS keep working alongside.
/// - Get/Set Container ACL skip the token check.
///
/// So a token it accepts only proves the shape, issuer, audience and
/// lifetime: the fakes in [`crate::identity`] sign their JWTs (RS256) anyway
/// and enforce the client secret / identity themselves.
/// Azurite's flags common to every start: 127.0.0.1:`port`, data in
/// memory only, any API version, no telemetry.
fn base_args(port: u16) -> Vec<String> {
    [
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--disableTelemetry",
    ]
    .map(String::from)
    .to_vec()
}

impl Azurite {
    /// Starts `bin` on 127.0.0.1:`port` over HTTPS with `cert` / `key`
    /// (PEM files, e.g. [`crate::tls::TestPki`]'s server certificate) and
    /// `--oauth basic` (see the comment on this impl), in-memory data,
    /// output to `log`; waits (up to 20 s) until it accepts connections.
    /// [`Azurite::start`] (plain HTTP, no OAuth) is unchanged.
    pub fn start_https_oauth(
        bin: &Path,
        log: &Path,
        port: u16,
        cert: &Path,
        key: &Path,
    ) -> Result<Azurite, String> {
        Azurite::start_https_oauth_debug(bin, log, port, cert, key, None)
    }

    /// [`Azurite::start_https_oauth`], and with `debug_log` Azurite's
    /// `--debug <file>`: every request's method, URL and headers
    /// (`RequestHeaders:{...}`, Bearer tokens included) are written there,
    /// for tests that check what a client sent.
    pub fn start_https_oauth_debug(
        bin: &Path,
        log: &Path,
        port: u16,
        cert: &Path,
        key: &Path,
        debug_log: Option<&Path>,
    ) -> Result<Azurite, String> {
        let mut args = base_args(port);
        args.extend([
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--oauth".into(),
            "basic".into(),
        ]);
        if let Some(d) = debug_log {
            args.extend(["--debug".to_string(), d.display().to_string()]);
        }
        let mut proc =
            Proc::spawn("azurite-https", bin, &args, &[], &[], log).map_err(|e| e.to_string())?;
        proc.wait_listening(port, Duration::from_secs(20))?;
        Ok(Azurite {
            proc,
            port,
            https: true,
        })
    }

    /// One request straight to an HTTPS Azurite with `Authorization:
    /// Bearer <token>`, `x-ms-version` [`OAUTH_API_VERSION`] and
    /// `x-ms-date`, the server verified against `ca_pem` for `localhost`.
    /// `path_and_query` starts with `/devstoreaccount1`, e.g.
    /// `/devstoreaccount1?comp=list` (List Containers).
    pub fn bearer_request(
        &self,
        ca_pem: &Path,
        method: &str,
        path_and_query: &str,
        token: &str,
        body: &[u8],
    ) -> std::io::Result<Response> {
        let auth = format!("Bearer {token}");
        let date = now().http_date();
        let host = format!("127.0.0.1:{}", self.port);
        crate::tls::https_request(
            self.port,
            "localhost",
            ca_pem,
            method,
            path_and_query,
            &[
                ("host", &host),
                ("authorization", &auth),
                ("x-ms-version", OAUTH_API_VERSION),
                ("x-ms-date", &date),
            ],
            body,
        )
    }
}

/// Blob requests to one container of an HTTPS Azurite (started by
/// [`Azurite::start_https_oauth`]) with a harness Bearer JWT that Azurite
/// `--oauth basic` accepts ([`crate::identity::azure_access_token`], valid
/// for an hour), the server verified against a test CA for `localhost`:
/// for the harness's own setup and assertions in OAuth scenarios
/// (creating the container, reading what the filter wrote).
pub struct BearerBlobClient {
    port: u16,
    ca_pem: std::path::PathBuf,
    container: String,
    token: String,
}

impl Azurite {
    /// A [`BearerBlobClient`] for `container`, trusting `ca_pem`.
    pub fn bearer_client(&self, ca_pem: &Path, container: &str) -> BearerBlobClient {
        BearerBlobClient {
            port: self.port,
            ca_pem: ca_pem.to_path_buf(),
            container: container.into(),
            token: crate::identity::azure_access_token(
                crate::identity::AZURE_TENANT,
                "https://storage.azure.com",
                "envoy-test-harness",
                Duration::from_secs(3600),
            ),
        }
    }
}

impl BearerBlobClient {
    fn request(
        &self,
        method: &str,
        path_and_query: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let auth = format!("Bearer {}", self.token);
        let date = now().http_date();
        let host = format!("127.0.0.1:{}", self.port);
        let mut headers = vec![
            ("host", host.as_str()),
            ("authorization", auth.as_str()),
            ("x-ms-version", OAUTH_API_VERSION),
            ("x-ms-date", date.as_str()),
        ];
        headers.extend_from_slice(extra);
        crate::tls::https_request(
            self.port,
            "localhost",
            &self.ca_pem,
            method,
            path_and_query,
            &headers,
            body,
        )
        .map_err(|e| format!("{method} {path_and_query} to HTTPS Azurite: {e}"))
    }

    fn blob_path(&self, blob: &str) -> String {
        format!("/{ACCOUNT}/{}/{blob}", self.container)
    }

    /// Create Container: `Err` unless Azurite answers 201.
    pub fn create_container(&self) -> Result<(), String> {
        let path = format!("/{ACCOUNT}/{}?restype=container", self.container);
        let r = self.request("PUT", &path, &[], b"")?;
        if r.status == 201 {
            Ok(())
        } else {
            Err(format!(
                "Create Container {}: {}",
                self.container,
                r.summary()
            ))
        }
    }

    /// Get Blob: `Ok(None)` on 404.
    pub fn get(&self, blob: &str) -> Result<Option<Vec<u8>>, String> {
        let r = self.request("GET", &self.blob_path(blob), &[], b"")?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(format!("Get Blob {blob}: {}", r.summary())),
        }
    }

    /// Put Blob (a block blob, `application/json`, unconditional): `Err`
    /// unless Azurite answers 201.
    pub fn put(&self, blob: &str, body: &[u8]) -> Result<(), String> {
        let r = self.request(
            "PUT",
            &self.blob_path(blob),
            &[
                ("x-ms-blob-type", "BlockBlob"),
                ("content-type", "application/json"),
            ],
            body,
        )?;
        if r.status == 201 {
            Ok(())
        } else {
            Err(format!("Put Blob {blob}: {}", r.summary()))
        }
    }
}

impl Azurite {
    /// Starts `bin` (`azurite-blob`) on 127.0.0.1:`port`, data in memory
    /// only, output to `log`; waits (up to 20 s) until it accepts
    /// connections.
    pub fn start(bin: &Path, log: &Path, port: u16) -> Result<Azurite, String> {
        let args = base_args(port);
        let mut proc =
            Proc::spawn("azurite", bin, &args, &[], &[], log).map_err(|e| e.to_string())?;
        proc.wait_listening(port, Duration::from_secs(20))?;
        Ok(Azurite {
            proc,
            port,
            https: false,
        })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account's endpoint, `http://127.0.0.1:<port>/devstoreaccount1`
    /// (for `storage.endpoint` or `AZURE_STORAGE_ENDPOINT`); `https://`
    /// for one started by [`Azurite::start_https_oauth`].
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// True when started over HTTPS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// A client for `container`, signing with the account key.
    pub fn client(&self, container: &str) -> BlobClient {
        BlobClient::new(
            self.port,
            container,
            AzureCredentials::shared_key(ACCOUNT_KEY).unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// The server process (log, signals).
    pub fn process(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// Blob requests to one container of Azurite, built and signed by the
/// filter's crate and sent straight to Azurite.
pub struct BlobClient {
    port: u16,
    settings: AzureSettings,
}

/// One blob as read back.
#[derive(Clone, Debug)]
pub struct Blob {
    pub body: Vec<u8>,
    pub etag: Option<String>,
    /// `Last-Modified` (1-second resolution).
    pub last_modified: Option<SystemTime>,
}

const VIA: Via<'static> = Via {
    cluster: "harness",
    timeout: Duration::from_secs(5),
    credential: None,
};

impl BlobClient {
    /// A client of Azurite on `port` for `container`, with `credentials`.
    pub fn new(port: u16, container: &str, credentials: AzureCredentials) -> BlobClient {
        let endpoint = AzureEndpoint::parse(
            &format!("http://127.0.0.1:{port}/{ACCOUNT}"),
            ACCOUNT,
            "harness endpoint",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let settings = AzureSettings::new(ACCOUNT, container, Some(endpoint), credentials)
            .unwrap_or_else(|e| panic!("{e}"));
        BlobClient { port, settings }
    }

    fn send(&self, req: &fallback_config::http::HttpRequest) -> Result<Response, String> {
        http::send(self.port, req).map_err(|e| {
            format!(
                "{} {} to Azurite on port {}: {e}",
                req.method,
                fallback_config::http::masked_query(&req.path),
                self.port
            )
        })
    }

    /// Create Container (201; 409 when it exists).
    pub fn create_container(&self) -> Result<Response, String> {
        self.send(&self.settings.create_container(VIA, now()))
    }

    /// Get Blob: `Ok(None)` on 404, `Err` on any other failure.
    pub fn get(&self, blob: &str) -> Result<Option<Blob>, String> {
        let r = self.send(&self.settings.get_blob(VIA, blob, now()))?;
        match r.status {
            200 => Ok(Some(Blob {
                etag: r.header("etag").map(str::to_string),
                last_modified: r
                    .header("last-modified")
                    .and_then(Timestamp::parse_http_date)
                    .map(|t| UNIX_EPOCH + Duration::from_millis(t.as_millis())),
                body: r.body,
            })),
            404 => Ok(None),
            _ => Err(format!("Get Blob {blob}: {}", r.summary())),
        }
    }

    /// Put Blob (unconditional) as `application/json`; the raw answer.
    pub fn put_response(
        &self,
        blob: &str,
        body: &[u8],
        mode: &PutMode,
    ) -> Result<Response, String> {
        self.send(&self.settings.put_blob(
            VIA,
            blob,
            body.to_vec(),
            "application/json",
            mode,
            now(),
        ))
    }

    /// Put Blob (unconditional): `Err` unless Azurite answers 201.
    pub fn put(&self, blob: &str, body: &[u8]) -> Result<(), String> {
        let r = self.put_response(blob, body, &PutMode::Overwrite)?;
        if r.status == 201 {
            Ok(())
        } else {
            Err(format!("Put Blob {blob}: {}", r.summary()))
        }
    }

    /// Delete Blob (signed here: the filter never deletes); 404 is fine.
    pub fn delete(&self, blob: &str) -> Result<(), String> {
        let AzureCredentials::SharedKey(key) = &self.settings.credentials else {
            return Err("the harness deletes blobs with the shared key only".into());
        };
        let path = self.settings.blob_path(blob);
        let mut headers = vec![
            ("x-ms-date".to_string(), now().http_date()),
            ("x-ms-version".to_string(), API_VERSION.to_string()),
        ];
        let signed = sign_shared_key(
            ACCOUNT,
            key,
            &SharedKeyRequest {
                method: "DELETE",
                path: &path,
                query: "",
                headers: &headers,
                content_length: 0,
            },
        );
        headers.push((
            "authorization".into(),
            signed.authorization.expose().to_string(),
        ));
        let req = fallback_config::http::HttpRequest {
            cluster: VIA.cluster.into(),
            method: "DELETE".into(),
            path,
            authority: self.settings.endpoint.authority.clone(),
            headers,
            body: None,
            timeout: VIA.timeout,
        };
        let r = self.send(&req)?;
        match r.status {
            202 | 404 => Ok(()),
            _ => Err(format!("Delete Blob {blob}: {}", r.summary())),
        }
    }
}

/// An account SAS for `devstoreaccount1` (Blob service; service, container
/// and object resource types; `permissions` such as `rwac`), version
/// 2021-12-02, valid until `expiry`, signed with `key_b64`. The string to
/// sign is the one documented for versions 2020-12-06 and later
/// ("Create an account SAS", Microsoft Learn): account, permissions,
/// services, resource types, start, expiry, IP, protocol, version,
/// encryption scope, each followed by a newline.
pub fn account_sas(key_b64: &str, permissions: &str, expiry: SystemTime) -> String {
    let version = "2021-12-02";
    let expiry = crate::envelope::format_rfc3339(expiry);
    let string_to_sign = format!("{ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\n\n{version}\n\n");
    let key = BASE64
        .decode(key_b64)
        .unwrap_or_else(|e| panic!("account key is not base64: {e}"));
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|e| panic!("hmac key: {e}"));
    mac.update(string_to_sign.as_bytes());
    let sig = BASE64.encode(mac.finalize().into_bytes());
    let enc = crate::envoy::percent_encode;
    format!(
        "sv={version}&ss=b&srt=sco&sp={permissions}&se={}&sig={}",
        enc(&expiry),
        enc(&sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fallback_config::storage::azure::AccountKey;

    #[test]
    fn keys_decode_and_differ() {
        assert!(AccountKey::from_base64(ACCOUNT_KEY).is_ok());
        assert!(AccountKey::from_base64(WRONG_ACCOUNT_KEY).is_ok());
        assert_ne!(ACCOUNT_KEY, WRONG_ACCOUNT_KEY);
    }

    #[test]
    fn account_sas_shape() {
        let sas = account_sas(
            ACCOUNT_KEY,
            "rwac",
            UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        );
        assert!(
            sas.starts_with("sv=2021-12-02&ss=b&srt=sco&sp=rwac&se=2030-03-17T17%3A46%3A40Z&sig="),
            "{sas}"
        );
        // The filter accepts it as a SAS token.
        assert!(matches!(
            AzureCredentials::sas(&sas),
            Ok(AzureCredentials::Sas(_))
        ));
    }
}
