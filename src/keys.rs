//! Snapshot keys: the exporters' Ed25519 signing key, the public keys
//! importers trust, and the symmetric keys that encrypt the stored config.
//!
//! Signing is asymmetric on purpose: a data plane holds only public keys,
//! so a compromised data plane (or anyone with write access to the bucket)
//! cannot forge a snapshot. All three come from the environment as
//! `<key-id>:<base64>` entries (comma-separated lists for the trusted and
//! encryption keys), so that keys can be rotated by id.
//!
//! Secret material never reaches a log: `Debug` shows key ids only, errors
//! name the variable and the entry but never quote it, and secret bytes are
//! zeroized on drop (`ed25519-dalek` with its `zeroize` feature,
//! [`Zeroizing`] for the encryption keys). Encryption keys are compared in
//! constant time.

use crate::storage::base64::{self as base64_codec, Padding};
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Environment variables holding the keys (list them in Envoy's
/// `vm_config.environment_variables.host_env_keys`).
pub mod env {
    pub const SIGNING_KEY: &str = "FALLBACK_CONFIG_SIGNING_KEY";
    pub const TRUSTED_KEYS: &str = "FALLBACK_CONFIG_TRUSTED_KEYS";
    pub const ENCRYPTION_KEYS: &str = "FALLBACK_CONFIG_ENCRYPTION_KEYS";
}

/// Longest key id accepted; ids are written into every envelope.
const MAX_ID_LEN: usize = 64;

/// Why key material in the environment cannot be used. Never holds any of
/// the material itself: `entry` is a 1-based position in the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// An entry is not `<key-id>:<base64>`.
    NotIdColonKey {
        entry: usize,
    },
    /// The id is empty, too long or has characters other than
    /// `A-Z a-z 0-9 . _ -`.
    BadId {
        entry: usize,
    },
    NotBase64 {
        entry: usize,
    },
    WrongLength {
        entry: usize,
        expected: usize,
        found: usize,
    },
    /// The bytes are not an Ed25519 public key usable for verification
    /// (not a curve point, or one of small order that any signature fits).
    NotAPublicKey {
        entry: usize,
    },
    DuplicateId {
        id: String,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotIdColonKey { entry } => {
                write!(f, "entry {entry} is not `<key-id>:<base64 key>`")
            }
            KeyError::BadId { entry } => write!(
                f,
                "entry {entry}: the key id must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -"
            ),
            KeyError::NotBase64 { entry } => {
                write!(f, "entry {entry}: the key is not standard base64")
            }
            KeyError::WrongLength {
                entry,
                expected,
                found,
            } => write!(
                f,
                "entry {entry}: the key must decode to {expected} bytes, got {found}"
            ),
            KeyError::NotAPublicKey { entry } => write!(
                f,
                "entry {entry}: the key is not a usable Ed25519 public key"
            ),
            KeyError::DuplicateId { id } => write!(f, "key id \"{id}\" is given twice"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The exporters' private key. Its seed is zeroized on drop.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// `<key-id>:<base64 of the 32-byte Ed25519 seed>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (id, bytes) = entry::<32>(text.trim(), 1)?;
        Ok(SigningKey {
            id,
            key: ed25519_dalek::SigningKey::from_bytes(&bytes),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The public key as `FALLBACK_CONFIG_TRUSTED_KEYS` lists it:
    /// `<key-id>:<base64>`.
    pub fn public_entry(&self) -> String {
        format!(
            "{}:{}",
            self.id,
            base64_codec::encode(self.key.verifying_key().as_bytes())
        )
    }

    /// The matching public key, under the same id.
    pub fn public(&self) -> TrustedKey {
        TrustedKey {
            id: self.id.clone(),
            key: self.key.verifying_key(),
        }
    }
}

impl PartialEq for SigningKey {
    /// Constant time (`ed25519-dalek` compares the secret with `subtle`).
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.key == other.key
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, ***)", self.id)
    }
}

/// A public key importers accept signatures from.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    id: String,
    key: VerifyingKey,
}

impl TrustedKey {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Strict verification (RFC 8032 and no malleable or small-order
    /// cases), so one snapshot has one valid signature per key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({:?})", self.id)
    }
}

/// A 256-bit key for the snapshot's AEAD. Zeroized on drop.
#[derive(Clone)]
pub struct EncryptionKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl EncryptionKey {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

impl PartialEq for EncryptionKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && bool::from(self.key.ct_eq(&*other.key))
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey({:?}, ***)", self.id)
    }
}

/// The snapshot settings: the `snapshot` object of the plugin JSON with
/// the keys from the environment, checked together (see
/// [`crate::settings`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotKeys {
    /// Refuse unsigned snapshots (importers); sign every one (exporters).
    pub require_signature: bool,
    /// Encrypt what is exported with the first encryption key.
    pub encrypt: bool,
    /// Exporters sign whenever they have a key, required or not.
    pub signing: Option<SigningKey>,
    /// Includes the signing key's own public key: a node that can sign
    /// gains nothing by distrusting its own signatures, and an exporter
    /// must verify what it wrote.
    pub trusted: Vec<TrustedKey>,
    /// The first encrypts, all decrypt.
    pub encryption: Vec<EncryptionKey>,
}

impl SnapshotKeys {
    /// The key new exports are encrypted with, if encryption is on.
    pub fn encrypting(&self) -> Option<&EncryptionKey> {
        self.encryption.first().filter(|_| self.encrypt)
    }
}

/// `FALLBACK_CONFIG_TRUSTED_KEYS`: comma-separated
/// `<key-id>:<base64 of a 32-byte Ed25519 public key>`.
pub fn parse_trusted(text: &str) -> Result<Vec<TrustedKey>, KeyError> {
    let keys = list(text, |id, bytes: [u8; 32], n| {
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPublicKey { entry: n })?;
        if key.is_weak() {
            return Err(KeyError::NotAPublicKey { entry: n });
        }
        Ok(TrustedKey { id, key })
    })?;
    unique(keys.iter().map(TrustedKey::id))?;
    Ok(keys)
}

/// `FALLBACK_CONFIG_ENCRYPTION_KEYS`: comma-separated
/// `<key-id>:<base64 of 32 random bytes>`; the first encrypts, all decrypt.
pub fn parse_encryption(text: &str) -> Result<Vec<EncryptionKey>, KeyError> {
    let keys = list(text, |id, bytes: [u8; 32], _| {
        Ok(EncryptionKey {
            id,
            key: Zeroizing::new(bytes),
        })
    })?;
    unique(keys.iter().map(EncryptionKey::id))?;
    Ok(keys)
}

fn list<T>(
    text: &str,
    make: impl Fn(String, [u8; 32], usize) -> Result<T, KeyError>,
) -> Result<Vec<T>, KeyError> {
    text.split(',')
        .map(str::trim)
        .enumerate()
        .filter(|(_, e)| !e.is_empty())
        .map(|(i, e)| {
            let (id, bytes) = entry::<32>(e, i + 1)?;
            make(id, *bytes, i + 1)
        })
        .collect()
}

fn unique<'a>(ids: impl Iterator<Item = &'a str>) -> Result<(), KeyError> {
    let mut seen: Vec<&str> = Vec::new();
    for id in ids {
        if seen.contains(&id) {
            return Err(KeyError::DuplicateId { id: id.to_string() });
        }
        seen.push(id);
    }
    Ok(())
}

/// One `<key-id>:<base64>` entry decoding to exactly `N` bytes. The
/// decoded bytes are zeroized when dropped.
fn entry<const N: usize>(text: &str, n: usize) -> Result<(String, Zeroizing<[u8; N]>), KeyError> {
    let (id, b64) = text
        .split_once(':')
        .ok_or(KeyError::NotIdColonKey { entry: n })?;
    let id = id.trim();
    let id_ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if !id_ok {
        return Err(KeyError::BadId { entry: n });
    }
    // Standard base64, with or without padding (operators paste both).
    let decoded = Zeroizing::new(
        base64_codec::decode(b64.trim(), Padding::Optional)
            .ok_or(KeyError::NotBase64 { entry: n })?,
    );
    let mut bytes = Zeroizing::new([0u8; N]);
    if decoded.len() != N {
        return Err(KeyError::WrongLength {
            entry: n,
            expected: N,
            found: decoded.len(),
        });
    }
    bytes.copy_from_slice(&decoded);
    Ok((id.to_string(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;

    /// RFC 8032 §7.1, TEST 1.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SIGNATURE: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn b64_of_hex(h: &str) -> String {
        BASE64.encode(hex::decode(h).unwrap())
    }

    #[test]
    fn signs_as_rfc_8032_says_and_verifies() {
        let key = SigningKey::parse(&format!("k1:{}", b64_of_hex(SEED))).unwrap();
        assert_eq!(key.id(), "k1");
        let sig = key.sign(b"");
        assert_eq!(hex::encode(sig), SIGNATURE);
        let trusted = parse_trusted(&format!("k1:{}", b64_of_hex(PUBLIC))).unwrap();
        assert_eq!(key.public_entry(), format!("k1:{}", b64_of_hex(PUBLIC)));
        assert_eq!(trusted, vec![key.public()]);
        assert!(trusted[0].verify(b"", &sig));
        assert!(!trusted[0].verify(b"x", &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!trusted[0].verify(b"", &bad));
    }

    #[test]
    fn lists_take_several_keys_with_spaces_and_either_padding() {
        let a = BASE64.encode([1u8; 32]);
        let b = BASE64.encode([2u8; 32]);
        let keys =
            parse_encryption(&format!(" new:{a} , old:{} ,", b.trim_end_matches('='))).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.id()).collect::<Vec<_>>(),
            ["new", "old"]
        );
        assert_eq!(keys[1].bytes(), &[2u8; 32]);
        assert_ne!(keys[0], keys[1]);
        assert_eq!(keys[0], keys[0].clone());
    }

    #[test]
    fn errors_name_the_entry_and_never_the_key() {
        let secret = BASE64.encode([7u8; 31]);
        let cases = [
            (format!("k1{secret}"), KeyError::NotIdColonKey { entry: 1 }),
            (format!(":{secret}"), KeyError::BadId { entry: 1 }),
            (format!("a b:{secret}"), KeyError::BadId { entry: 1 }),
            (format!("k1:{secret}!"), KeyError::NotBase64 { entry: 1 }),
            (
                format!("k1:{secret}"),
                KeyError::WrongLength {
                    entry: 1,
                    expected: 32,
                    found: 31,
                },
            ),
        ];
        for (text, expected) in cases {
            let e = parse_encryption(&text).unwrap_err();
            assert_eq!(e, expected, "{text}");
            assert!(!e.to_string().contains(&secret[..12]), "{e}");
        }
        let good = BASE64.encode([1u8; 32]);
        assert_eq!(
            parse_encryption(&format!("a:{good},b:{secret}")).unwrap_err(),
            KeyError::WrongLength {
                entry: 2,
                expected: 32,
                found: 31
            }
        );
        assert_eq!(
            parse_encryption(&format!("a:{good},a:{good}")).unwrap_err(),
            KeyError::DuplicateId { id: "a".into() }
        );
        // The identity point verifies signatures of its own: refused.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            parse_trusted(&format!("k:{}", BASE64.encode(identity))).unwrap_err(),
            KeyError::NotAPublicKey { entry: 1 }
        );
    }

    #[test]
    fn debug_shows_ids_only() {
        let seed = b64_of_hex(SEED);
        let key = SigningKey::parse(&format!("sig-2026:{seed}")).unwrap();
        let enc = parse_encryption(&format!("enc-1:{seed}")).unwrap();
        let shown = format!("{key:?} {enc:?} {:?}", key.public());
        assert!(
            shown.contains("sig-2026") && shown.contains("enc-1"),
            "{shown}"
        );
        assert!(
            !shown.contains(&seed[..12]) && !shown.contains("9d61"),
            "{shown}"
        );
    }

    /// The `snapshot` settings with the keys, through `Settings::parse`.
    mod settings {
        use super::*;
        use crate::settings::Settings;

        const SEED_B64: &str = "CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=";

        fn parse(
            import: bool,
            export: bool,
            snapshot: &str,
            vars: &[(&str, String)],
        ) -> Result<SnapshotKeys, crate::settings::SettingsError> {
            let json = format!(
                r#"{{"cluster_fallback_config_import":{import},"cluster_fallback_config_export":{export},
                    "cluster_fallback_config_storage":"s3://b/p"{snapshot}}}"#
            );
            let mut all = vec![
                ("AWS_ACCESS_KEY_ID", "AK".to_string()),
                ("AWS_SECRET_ACCESS_KEY", "SK".to_string()),
            ];
            all.extend(vars.iter().cloned());
            let lookup = |k: &str| all.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            Settings::parse(json.as_bytes(), &lookup).map(|s| s.snapshot)
        }

        fn signing() -> (&'static str, String) {
            (env::SIGNING_KEY, format!("s1:{SEED_B64}"))
        }

        fn trusted() -> (&'static str, String) {
            let public = SigningKey::parse(&signing().1).unwrap().public_entry();
            (env::TRUSTED_KEYS, public)
        }

        fn encryption() -> (&'static str, String) {
            (
                env::ENCRYPTION_KEYS,
                format!("e1:{SEED_B64},e0:{}", BASE64.encode([5u8; 32])),
            )
        }

        #[test]
        fn defaults_follow_the_keys_that_are_set() {
            let none = parse(true, true, "", &[]).unwrap();
            assert_eq!(none, SnapshotKeys::default());
            // Trusted keys: signatures required; encryption keys: encrypt.
            let imp = parse(true, false, "", &[trusted(), encryption()]).unwrap();
            assert!(imp.require_signature && imp.encrypt);
            assert_eq!(imp.encrypting().map(EncryptionKey::id), Some("e1"));
            assert_eq!(imp.encryption.len(), 2);
            // An exporter signs whenever it has a key; its own public key
            // is trusted, so signatures are required by default.
            let exp = parse(false, true, "", &[signing()]).unwrap();
            assert!(exp.require_signature && !exp.encrypt);
            let both = parse(true, true, "", &[signing()]).unwrap();
            assert!(both.require_signature, "an exporter that imports");
            assert_eq!(exp.trusted, vec![exp.signing.as_ref().unwrap().public()]);
            // Explicit settings win over the defaults.
            let off = parse(
                true,
                true,
                r#","snapshot":{"require_signature":false,"encrypt":false}"#,
                &[signing(), trusted(), encryption()],
            )
            .unwrap();
            assert!(!off.require_signature && off.encrypting().is_none());
            assert_eq!(off.trusted.len(), 1, "the same key is listed once");
        }

        #[test]
        fn errors_name_the_variable_and_never_show_a_key() {
            /// import, export, `snapshot` JSON, variables, expected field
            /// and reason.
            type Case<'a> = (
                bool,
                bool,
                &'a str,
                Vec<(&'a str, String)>,
                &'a str,
                &'a str,
            );
            let cases: Vec<Case> = vec![
                (
                    false,
                    true,
                    r#","snapshot":{"require_signature":true}"#,
                    vec![],
                    env::SIGNING_KEY,
                    "is required on an exporter",
                ),
                (
                    true,
                    false,
                    r#","snapshot":{"require_signature":true}"#,
                    vec![],
                    env::TRUSTED_KEYS,
                    "is required on an importer",
                ),
                (
                    true,
                    true,
                    r#","snapshot":{"encrypt":true}"#,
                    vec![],
                    env::ENCRYPTION_KEYS,
                    "is required when snapshot.encrypt is on",
                ),
                (
                    true,
                    true,
                    "",
                    vec![(env::SIGNING_KEY, format!("s1:{}", &SEED_B64[..40]))],
                    env::SIGNING_KEY,
                    "entry 1",
                ),
                (
                    true,
                    true,
                    "",
                    vec![(env::TRUSTED_KEYS, format!("t1:{SEED_B64},t2 {SEED_B64}"))],
                    env::TRUSTED_KEYS,
                    "entry 2",
                ),
                (
                    true,
                    true,
                    "",
                    vec![(env::ENCRYPTION_KEYS, format!("e1:{SEED_B64}%"))],
                    env::ENCRYPTION_KEYS,
                    "not standard base64",
                ),
                (
                    true,
                    true,
                    "",
                    vec![
                        signing(),
                        (
                            env::TRUSTED_KEYS,
                            SigningKey::parse(&format!("s1:{}", BASE64.encode([4u8; 32])))
                                .unwrap()
                                .public_entry(),
                        ),
                    ],
                    env::TRUSTED_KEYS,
                    "names key id \"s1\" with another key",
                ),
                (
                    true,
                    true,
                    r#","snapshot":{"sign":true}"#,
                    vec![],
                    "snapshot.sign",
                    "is not a known field",
                ),
                (
                    true,
                    true,
                    r#","snapshot":{"encrypt":"yes"}"#,
                    vec![],
                    "snapshot.encrypt",
                    "must be true or false, got \"yes\"",
                ),
            ];
            for (import, export, snapshot, vars, field, reason) in cases {
                let e = parse(import, export, snapshot, &vars).unwrap_err();
                assert_eq!(e.field, field, "{e}");
                assert!(e.reason.contains(reason), "{e}");
                assert!(!e.to_string().contains(&SEED_B64[..12]), "{e}");
            }
        }
    }
}
