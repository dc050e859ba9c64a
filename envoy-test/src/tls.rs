//! Throwaway TLS material for HTTPS test servers (Azurite with `--cert`,
//! Envoy clusters with an upstream TLS transport socket), and a small
//! HTTPS client that verifies the server against a test CA.
//!
//! [`TestPki::create`] writes, into a folder:
//! - `ca.pem`: a test CA (self-signed, ECDSA P-256);
//! - `server.pem` / `server-key.pem`: a server certificate issued by that
//!   CA, with subject alternative names DNS `localhost`, IP `127.0.0.1`
//!   and any extra DNS names asked for (PKCS#8 key);
//! - `other-ca.pem`: a second, unrelated CA, for "wrong CA" tests (it
//!   issued nothing the servers present).
//!
//! Keys are generated in process by `rcgen` (no `openssl` needed).

use crate::http::{self, Response};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate authority that can issue server certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Where its certificate (PEM) was written.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestCa({})", self.cert_path.display())
    }
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl TestCa {
    /// A new CA named `common_name`, its certificate written to `cert_path`.
    pub fn create(common_name: &str, cert_path: &Path) -> Result<TestCa, String> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "envoy-test");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_err("CA certificate", e))?;
        std::fs::write(cert_path, cert.pem())
            .map_err(|e| tls_err(&format!("write {}", cert_path.display()), e))?;
        Ok(TestCa {
            cert,
            key,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a server certificate for DNS `localhost`, IP `127.0.0.1`
    /// and `extra_dns`, written to `cert_path` (leaf only, PEM) and
    /// `key_path` (PKCS#8 PEM).
    pub fn issue_server(
        &self,
        extra_dns: &[&str],
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<ServerCert, String> {
        let mut dns_names = vec!["localhost".to_string()];
        dns_names.extend(extra_dns.iter().map(|s| s.to_string()));
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.subject_alt_names = dns_names
            .iter()
            .map(|n| {
                n.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| tls_err(&format!("DNS name {n:?}"), e))
            })
            .collect::<Result<_, _>>()?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(|e| tls_err("server key", e))?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| tls_err("server certificate", e))?;
        std::fs::write(cert_path, cert.pem())
            .map_err(|e| tls_err(&format!("write {}", cert_path.display()), e))?;
        std::fs::write(key_path, key.serialize_pem())
            .map_err(|e| tls_err(&format!("write {}", key_path.display()), e))?;
        Ok(ServerCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            dns_names,
        })
    }
}

/// A server certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct ServerCert {
    /// Leaf certificate, PEM (`--cert` of Azurite).
    pub cert_path: PathBuf,
    /// PKCS#8 private key, PEM (`--key` of Azurite).
    pub key_path: PathBuf,
    /// Its DNS subject alternative names (`localhost` first); it also
    /// holds IP `127.0.0.1`.
    pub dns_names: Vec<String>,
}

/// A test CA, a server certificate it issued, and an unrelated CA.
#[derive(Debug)]
pub struct TestPki {
    pub ca: TestCa,
    pub server: ServerCert,
    /// Issued nothing any server presents: trusting only it must fail.
    pub other_ca: TestCa,
}

impl TestPki {
    /// Writes `ca.pem`, `server.pem`, `server-key.pem` and `other-ca.pem`
    /// into `dir`; the server certificate names DNS `localhost`, IP
    /// `127.0.0.1` and `extra_dns`.
    pub fn create(dir: &Path, extra_dns: &[&str]) -> Result<TestPki, String> {
        let ca = TestCa::create("envoy-test CA", &dir.join("ca.pem"))?;
        let server = ca.issue_server(
            extra_dns,
            &dir.join("server.pem"),
            &dir.join("server-key.pem"),
        )?;
        let other_ca = TestCa::create("envoy-test unrelated CA", &dir.join("other-ca.pem"))?;
        Ok(TestPki {
            ca,
            server,
            other_ca,
        })
    }

    /// `ca.pem`: the CA that issued the server certificate.
    pub fn ca_path(&self) -> &Path {
        &self.ca.cert_path
    }

    /// `other-ca.pem`: the unrelated CA.
    pub fn other_ca_path(&self) -> &Path {
        &self.other_ca.cert_path
    }
}

/// A rustls client config trusting only the certificates in `ca_pem_path`.
pub fn client_config(ca_pem_path: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_pem_path)
        .map_err(|e| tls_err(&format!("read {}", ca_pem_path.display()), e))?;
    for c in certs {
        let c = c.map_err(|e| tls_err(&format!("parse {}", ca_pem_path.display()), e))?;
        roots
            .add(c)
            .map_err(|e| tls_err(&format!("trust {}", ca_pem_path.display()), e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One HTTPS request to 127.0.0.1:`port`, verifying the server's
/// certificate against `ca_pem_path` for `server_name` (a DNS name or an
/// IP address), then the same exchange as [`http::request`] (`host`
/// defaults to `localhost`; pass one to override). A verification failure
/// is an `Err` whose text names it (e.g. `UnknownIssuer`).
pub fn https_request(
    port: u16,
    server_name: &str,
    ca_pem_path: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let config = client_config(ca_pem_path).map_err(std::io::Error::other)?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::other(format!("server name {server_name:?}: {e}")))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| std::io::Error::other(format!("TLS client: {e}")))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    http::request_on(
        rustls::StreamOwned::new(conn, tcp),
        method,
        path,
        headers,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_files_are_written_and_distinct() {
        let dir = std::env::temp_dir().join(format!("envoy-test-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = TestPki::create(&dir, &["blob.envoy-test.internal"]).unwrap();
        for p in [
            pki.ca_path(),
            pki.other_ca_path(),
            &pki.server.cert_path,
            &pki.server.key_path,
        ] {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", p.display());
        }
        assert_ne!(pki.ca.cert_pem(), pki.other_ca.cert_pem());
        assert_eq!(
            pki.server.dns_names,
            vec!["localhost", "blob.envoy-test.internal"]
        );
        assert!(client_config(pki.ca_path()).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
