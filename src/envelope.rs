//! The stored `config.json`: the CP's gateway config wrapped with what an
//! importer needs to trust it (format, product version, digest, origin,
//! and in format 2 a signature and optional encryption).
//!
//! ```text
//! {"format":2,"version","revision","exported_at","exporter","term",
//!  "sha256": hex SHA-256 of the config bytes, "config": the CP's JSON
//!  verbatim                                  -- or, encrypted:
//!  "encryption": {"alg":"XChaCha20-Poly1305","key_id","nonce"},
//!  "ciphertext": base64 (no sha256: the AEAD tag checks the plaintext),
//!  "signature": {"alg":"Ed25519","key_id","value"}}
//! ```
//!
//! `config` holds the CP's JSON verbatim (a raw JSON value, not a string),
//! so `sha256` covers exactly the bytes the CP sent and an importer can
//! check them without re-serialising anything. The signature covers every
//! field an importer acts on, and the stored config bytes (the ciphertext
//! when encrypted), through a length-prefixed transcript
//! ([`transcript`]) rather than the JSON text, so no JSON detail (key
//! order, escapes, white space) can change what was signed. The AEAD's
//! associated data is the header the same way, so a ciphertext cannot be
//! moved under another revision, version or term.
//!
//! An encrypted envelope carries no digest of its plaintext: a bucket
//! reader could otherwise confirm a guessed config (or see that two
//! snapshots hold the same one). The AEAD tag already proves the
//! plaintext intact.
//!
//! The storage location (bucket, prefix) is deliberately not signed: a
//! snapshot copied into another bucket (disaster recovery, seeding a new
//! region) must still verify. One signing key per environment keeps a
//! staging snapshot out of production.
//!
//! XChaCha20-Poly1305 rather than AES-256-GCM: it is constant time and
//! fast in plain software (wasm has no AES instructions, and a software
//! AES is either slow or table-based), and its 192-bit nonces may be
//! drawn at random for every export without any risk of a repeat.
//!
//! [`open`] checks, in this order, before the config is parsed or used:
//! signature present → key id trusted → signature valid → encrypted (when
//! required) → version → decrypt → sha256 (plain) → config valid. Format 1 (unsigned, plaintext) stays
//! readable only while no signature is required.

use crate::gateway::{GatewayConfig, GatewayConfigError};
use crate::json::{self, Reader};
use crate::keys::{EncryptionKey, SigningKey, TrustedKey};
use crate::storage::base64::{self as base64_codec, Padding};
use crate::time::Timestamp;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::fmt;

/// The envelope layout this build writes.
pub const FORMAT: u64 = 2;
/// The layout before signatures: still read when none is required.
pub const FORMAT_UNSIGNED: u64 = 1;
pub const SIGNATURE_ALG: &str = "Ed25519";
pub const ENCRYPTION_ALG: &str = "XChaCha20-Poly1305";
/// Bytes of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;

/// Domain labels of the two transcripts: a signature can never be taken
/// for associated data or the other way round, nor for anything else
/// signed with the same key.
const SIGNED_LABEL: &[u8] = b"fallback-config snapshot signature v2";
const AAD_LABEL: &[u8] = b"fallback-config snapshot aad v2";

/// Hex SHA-256, the digest format of the envelope.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The encryption parameters of an envelope (`encryption`).
struct Encryption {
    alg: String,
    key_id: String,
    /// Base64 of the 24-byte nonce.
    nonce: String,
}

/// The signature of an envelope (`signature`).
struct SignatureField {
    alg: String,
    key_id: String,
    /// Base64 of the 64-byte Ed25519 signature.
    value: String,
}

/// An envelope as read. Every field is read; a known field given twice
/// is refused (as serde's derives refused it), so no two readers can see
/// different values; unknown fields are skipped (but must be JSON).
struct EnvelopeIn<'a> {
    format: u64,
    version: String,
    revision: String,
    exported_at: String,
    exporter: String,
    /// Absent in envelopes written before leader election existed.
    term: u64,
    /// Required in a plain envelope; an encrypted one written by an
    /// earlier build of format 2 may still carry it, and it is checked.
    sha256: Option<String>,
    encryption: Option<Encryption>,
    /// The config's JSON exactly as stored.
    config: Option<&'a [u8]>,
    ciphertext: Option<String>,
    signature: Option<SignatureField>,
}

impl<'a> EnvelopeIn<'a> {
    /// `null` counts as absent for every field but `term`, whose absence
    /// means 0 (envelopes from before leader election).
    fn parse(bytes: &'a [u8]) -> Result<EnvelopeIn<'a>, json::Error> {
        let mut r = Reader::new(bytes);
        let (mut format, mut version, mut revision, mut exported_at, mut exporter) =
            (None, None, None, None, None);
        let (mut term, mut sha256, mut encryption, mut config, mut ciphertext, mut signature) =
            (None, None, None, None, None, None);
        r.object()?;
        while let Some(key) = r.next_key()? {
            match &*key {
                "format" => r.once(&mut format, "format", |r| r.opt(Reader::u64))?,
                "version" => r.once(&mut version, "version", opt_string)?,
                "revision" => r.once(&mut revision, "revision", opt_string)?,
                "exported_at" => r.once(&mut exported_at, "exported_at", opt_string)?,
                "exporter" => r.once(&mut exporter, "exporter", opt_string)?,
                "term" => r.once(&mut term, "term", Reader::u64)?,
                "sha256" => r.once(&mut sha256, "sha256", opt_string)?,
                "encryption" => r.once(&mut encryption, "encryption", |r| {
                    r.opt(|r| strings(r, &["alg", "key_id", "nonce"]))
                })?,
                "config" => r.once(&mut config, "config", Reader::raw_value)?,
                "ciphertext" => r.once(&mut ciphertext, "ciphertext", opt_string)?,
                "signature" => r.once(&mut signature, "signature", |r| {
                    r.opt(|r| strings(r, &["alg", "key_id", "value"]))
                })?,
                _ => r.skip()?,
            }
        }
        r.end()?;
        Ok(EnvelopeIn {
            format: r.required(format.flatten(), "format")?,
            version: r.required(version.flatten(), "version")?,
            revision: r.required(revision.flatten(), "revision")?,
            exported_at: r.required(exported_at.flatten(), "exported_at")?,
            exporter: r.required(exporter.flatten(), "exporter")?,
            term: term.unwrap_or(0),
            sha256: sha256.flatten(),
            encryption: encryption.flatten().map(|[alg, key_id, nonce]| Encryption {
                alg,
                key_id,
                nonce,
            }),
            config: config.filter(|raw| *raw != b"null"),
            ciphertext: ciphertext.flatten(),
            signature: signature
                .flatten()
                .map(|[alg, key_id, value]| SignatureField { alg, key_id, value }),
        })
    }
}

/// A string, or `None` for `null`.
fn opt_string(r: &mut Reader<'_>) -> Result<Option<String>, json::Error> {
    r.opt(Reader::owned_string)
}

/// The members `names` of an object, each a string that must be given
/// (`null` counts as absent); other members are skipped.
fn strings<const N: usize>(
    r: &mut Reader<'_>,
    names: &[&'static str; N],
) -> Result<[String; N], json::Error> {
    let mut found: [Option<Option<String>>; N] = std::array::from_fn(|_| None);
    r.object()?;
    while let Some(key) = r.next_key()? {
        let i = names.iter().position(|n| *n == key);
        match i.and_then(|i| found.get_mut(i).zip(names.get(i))) {
            Some((slot, name)) => r.once(slot, name, opt_string)?,
            None => r.skip()?,
        }
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for ((out, slot), name) in out.iter_mut().zip(found).zip(names) {
        *out = r.required(slot.flatten(), name)?;
    }
    Ok(out)
}

/// What to export: a config the CP sent, already validated.
#[derive(Clone, Copy, Debug)]
pub struct Export<'a> {
    /// The CP's JSON, trimmed of surrounding whitespace.
    pub config: &'a [u8],
    pub revision: &'a str,
    pub version: &'a str,
    pub exporter: &'a str,
    pub exported_at: Timestamp,
    pub term: u64,
}

/// How an exporter protects what it writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Protection<'a> {
    pub signing: Option<&'a SigningKey>,
    /// The key and a nonce never used before with it (fresh randomness).
    pub encryption: Option<(&'a EncryptionKey, [u8; NONCE_LEN])>,
}

impl Protection<'_> {
    /// Neither signed nor encrypted.
    pub const NONE: Protection<'static> = Protection {
        signing: None,
        encryption: None,
    };
}

/// What an importer accepts.
#[derive(Clone, Copy, Debug)]
pub struct Trust<'a> {
    /// Refuse unsigned snapshots (and format 1).
    pub require_signature: bool,
    /// Refuse plaintext snapshots: where encryption is on, a plain one can
    /// only be a mistake or, without signatures, a forgery.
    pub require_encryption: bool,
    pub trusted: &'a [TrustedKey],
    pub decryption: &'a [EncryptionKey],
}

impl Trust<'_> {
    /// No keys, nothing required: what a build without snapshot keys reads.
    pub const NONE: Trust<'static> = Trust {
        require_signature: false,
        require_encryption: false,
        trusted: &[],
        decryption: &[],
    };
}

/// The header fields, as the transcripts take them.
struct Header<'a> {
    format: u64,
    version: &'a str,
    revision: &'a str,
    exported_at: &'a str,
    exporter: &'a str,
    term: u64,
    /// Empty when the envelope has none (encrypted).
    sha256: &'a str,
}

impl Header<'_> {
    /// `label`, the header fields, then `extra`, as a [`transcript`].
    fn transcript(&self, label: &[u8], extra: &[&[u8]]) -> Vec<u8> {
        let (format, term) = (self.format.to_string(), self.term.to_string());
        let mut fields: Vec<&[u8]> = vec![
            format.as_bytes(),
            self.version.as_bytes(),
            self.revision.as_bytes(),
            self.exported_at.as_bytes(),
            self.exporter.as_bytes(),
            term.as_bytes(),
            self.sha256.as_bytes(),
        ];
        fields.extend_from_slice(extra);
        transcript(label, &fields)
    }

    /// The associated data of the AEAD: the header and the key it is
    /// encrypted under.
    fn aad(&self, alg: &str, key_id: &str) -> Vec<u8> {
        self.transcript(AAD_LABEL, &[alg.as_bytes(), key_id.as_bytes()])
    }

    /// What the signature covers: the header, the encryption parameters
    /// (empty when plain), the signing key's id and the stored config
    /// bytes (the raw JSON, or the ciphertext).
    fn signed(
        &self,
        enc: Option<(&str, &str, &[u8])>,
        sig: (&str, &str),
        stored: &[u8],
    ) -> Vec<u8> {
        let (alg, key_id, nonce) = enc.unwrap_or(("", "", &[]));
        self.transcript(
            SIGNED_LABEL,
            &[
                alg.as_bytes(),
                key_id.as_bytes(),
                nonce,
                sig.0.as_bytes(),
                sig.1.as_bytes(),
                stored,
            ],
        )
    }
}

/// `label`, then each field as its length (8 bytes, big endian) and its
/// bytes: no two different field lists give the same bytes.
pub fn transcript(label: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let len: usize = fields.iter().map(|f| f.len() + 8).sum();
    let mut out = Vec::with_capacity(label.len() + 1 + len);
    out.extend_from_slice(label);
    out.push(0);
    for f in fields {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Builds the `config.json` bytes.
pub fn seal(export: Export<'_>, protection: Protection<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let mut reader = Reader::new(export.config);
    let config_bytes = reader
        .raw_value()
        .and_then(|raw| reader.end().map(|()| raw))
        .map_err(EnvelopeError::Parse)?;
    let sha256 = match protection.encryption {
        None => sha256_hex(config_bytes),
        Some(_) => String::new(),
    };
    let exported_at = export.exported_at.rfc3339();
    let header = Header {
        format: FORMAT,
        version: export.version,
        revision: export.revision,
        exported_at: &exported_at,
        exporter: export.exporter,
        term: export.term,
        sha256: &sha256,
    };
    let (encryption, ciphertext) = match protection.encryption {
        None => (None, None),
        Some((key, nonce)) => {
            let aead = XChaCha20Poly1305::new(key.bytes().into());
            let aad = header.aad(ENCRYPTION_ALG, key.id());
            let sealed = aead
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: config_bytes,
                        aad: &aad,
                    },
                )
                .map_err(|_| EnvelopeError::Encrypt)?;
            (Some((key.id(), nonce)), Some(sealed))
        }
    };
    let signature = protection.signing.map(|key| {
        let stored = ciphertext.as_deref().unwrap_or(config_bytes);
        let enc = encryption.map(|(id, nonce)| (ENCRYPTION_ALG, id, nonce));
        let message = header.signed(
            enc.as_ref().map(|(a, i, n)| (*a, *i, &n[..])),
            (SIGNATURE_ALG, key.id()),
            stored,
        );
        SignatureField {
            alg: SIGNATURE_ALG.to_string(),
            key_id: key.id().to_string(),
            value: base64_codec::encode(key.sign(&message)),
        }
    });
    // The layout serde_json gave the struct this replaced: this order,
    // absent members left out.
    let mut out = json::Object::new();
    out.u64("format", FORMAT)
        .string("version", export.version)
        .string("revision", export.revision)
        .string("exported_at", &exported_at)
        .string("exporter", export.exporter)
        .u64("term", export.term);
    if !sha256.is_empty() {
        out.string("sha256", &sha256);
    }
    if let Some((id, nonce)) = encryption {
        let fields = json::Object::new()
            .string("alg", ENCRYPTION_ALG)
            .string("key_id", id)
            .string("nonce", &base64_codec::encode(nonce))
            .finish();
        out.raw("encryption", &fields);
    }
    match &ciphertext {
        None => out.raw("config", config_bytes),
        Some(c) => out.string("ciphertext", &base64_codec::encode(c)),
    };
    if let Some(signature) = signature {
        let fields = json::Object::new()
            .string("alg", &signature.alg)
            .string("key_id", &signature.key_id)
            .string("value", &signature.value)
            .finish();
        out.raw("signature", &fields);
    }
    Ok(out.finish())
}

/// A verified envelope. `Debug` leaves out the config (it may be the
/// plaintext of an encrypted one).
#[derive(Clone, PartialEq)]
pub struct Opened {
    pub format: u64,
    pub revision: String,
    pub exported_at: String,
    pub exporter: String,
    pub term: u64,
    pub sha256: String,
    /// The id of the trusted key whose signature was verified.
    pub signed_by: Option<String>,
    /// The id of the key the config was decrypted with.
    pub encrypted_with: Option<String>,
    /// The config bytes exactly as the CP sent them (decrypted).
    pub config_bytes: Vec<u8>,
    pub config: GatewayConfig,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("format", &self.format)
            .field("revision", &self.revision)
            .field("exported_at", &self.exported_at)
            .field("exporter", &self.exporter)
            .field("term", &self.term)
            .field("sha256", &self.sha256)
            .field("signed_by", &self.signed_by)
            .field("encrypted_with", &self.encrypted_with)
            .field(
                "config_bytes",
                &format_args!("({} bytes)", self.config_bytes.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Why an envelope was refused. Never holds key material or config text.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvelopeError {
    Parse(json::Error),
    UnsupportedFormat(u64),
    /// No signature, or format 1, while one is required.
    Unsigned,
    /// A plaintext snapshot where encryption is on.
    Unencrypted,
    UnsupportedSignature {
        alg: String,
    },
    UntrustedKey {
        key_id: String,
    },
    BadSignature {
        key_id: String,
    },
    VersionMismatch {
        found: String,
        expected: String,
    },
    UnsupportedEncryption {
        alg: String,
    },
    NoDecryptionKey {
        key_id: String,
    },
    /// The AEAD tag does not verify: wrong key, altered ciphertext or
    /// header, or a truncated object.
    DecryptFailed {
        key_id: String,
    },
    /// The fields do not fit together (a config and a ciphertext, a nonce
    /// of the wrong size, ...); names the field.
    Malformed(&'static str),
    /// The AEAD refused to encrypt (only on absurd sizes).
    Encrypt,
    /// Encryption is on but the host gave no randomness for nonces.
    NoRandomness,
    Sha256Mismatch {
        stated: String,
        actual: String,
    },
    InvalidConfig(String),
    RevisionMismatch {
        envelope: String,
        config: String,
    },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Parse(m) => write!(f, "envelope does not parse: {m}"),
            EnvelopeError::UnsupportedFormat(n) => write!(
                f,
                "envelope format {n} is not supported (expected {FORMAT_UNSIGNED} or {FORMAT})"
            ),
            EnvelopeError::Unsigned => f.write_str("unsigned snapshot refused"),
            EnvelopeError::Unencrypted => f.write_str(
                "unencrypted snapshot refused (snapshot.encrypt is on: only encrypted snapshots are imported)",
            ),
            EnvelopeError::UnsupportedSignature { alg } => {
                write!(f, "signature algorithm \"{alg}\" is not supported (expected {SIGNATURE_ALG})")
            }
            EnvelopeError::UntrustedKey { key_id } => {
                write!(f, "signed by untrusted key \"{key_id}\"")
            }
            EnvelopeError::BadSignature { key_id } => {
                write!(f, "bad signature (key \"{key_id}\")")
            }
            EnvelopeError::VersionMismatch { found, expected } => write!(
                f,
                "version mismatch: exported by version {found}, this is version {expected}"
            ),
            EnvelopeError::UnsupportedEncryption { alg } => write!(
                f,
                "encryption algorithm \"{alg}\" is not supported (expected {ENCRYPTION_ALG})"
            ),
            EnvelopeError::NoDecryptionKey { key_id } => {
                write!(f, "cannot decrypt: no key \"{key_id}\"")
            }
            EnvelopeError::DecryptFailed { key_id } => write!(
                f,
                "cannot decrypt with key \"{key_id}\": wrong key, or the snapshot was altered or truncated"
            ),
            EnvelopeError::Malformed(m) => write!(f, "envelope is malformed: {m}"),
            EnvelopeError::Encrypt => f.write_str("the config could not be encrypted"),
            EnvelopeError::NoRandomness => f.write_str(
                "not encrypting: the host gave no randomness for a nonce (WASI random_get failed)",
            ),
            EnvelopeError::Sha256Mismatch { stated, actual } => {
                write!(
                    f,
                    "sha256 mismatch: envelope says {stated}, config hashes to {actual}"
                )
            }
            EnvelopeError::InvalidConfig(m) => write!(f, "stored config is invalid: {m}"),
            EnvelopeError::RevisionMismatch { envelope, config } => write!(
                f,
                "revision mismatch: envelope says {envelope}, config says {config}"
            ),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// The `term` of a stored envelope, read without verifying anything else.
/// Only for a node without trusted keys: see [`fence_term`].
pub fn stored_term(bytes: &[u8]) -> Option<u64> {
    let mut term = None;
    let mut r = Reader::new(bytes);
    let mut read = || -> Result<(), json::Error> {
        r.object()?;
        while let Some(key) = r.next_key()? {
            match &*key {
                "term" => r.once(&mut term, "term", |r| r.opt(Reader::u64))?,
                _ => r.skip()?,
            }
        }
        r.end()
    };
    read().ok()?;
    term.flatten()
}

/// The leader term a stored envelope fences a writer with. A node that
/// can verify signatures obeys only a term signed by a trusted key:
/// otherwise anyone with write access to the bucket could store a huge
/// term and make every exporter stand down for good. An unverified
/// envelope counts as term 0, so the leader replaces it (still under its
/// conditional write). A node without trusted keys has nothing to check
/// with and obeys the stated term, as before signatures existed.
pub fn fence_term(bytes: &[u8], trusted: &[TrustedKey]) -> u64 {
    if trusted.is_empty() {
        return stored_term(bytes).unwrap_or(0);
    }
    let trust = Trust {
        require_signature: true,
        require_encryption: false,
        trusted,
        decryption: &[],
    };
    match verified(bytes, &trust) {
        Ok(v) if v.signed_by.is_some() => v.env.term,
        _ => 0,
    }
}

/// An envelope whose signature, where there is one this node can check,
/// verified.
struct Verified<'a> {
    env: EnvelopeIn<'a>,
    /// The stored config bytes, as signed: the raw JSON, or the ciphertext.
    stored: Vec<u8>,
    nonce: Option<[u8; NONCE_LEN]>,
    signed_by: Option<String>,
}

/// Parses the envelope and checks its signature, before anything else
/// about it: with a signature required, an unsigned envelope is reported
/// as unsigned whatever else is wrong with it.
fn verified<'a>(bytes: &'a [u8], trust: &Trust<'_>) -> Result<Verified<'a>, EnvelopeError> {
    let env = EnvelopeIn::parse(bytes).map_err(EnvelopeError::Parse)?;
    match env.format {
        FORMAT => {}
        FORMAT_UNSIGNED if !trust.require_signature => {}
        FORMAT_UNSIGNED => return Err(EnvelopeError::Unsigned),
        n => return Err(EnvelopeError::UnsupportedFormat(n)),
    }
    if trust.require_signature && env.signature.is_none() {
        return Err(EnvelopeError::Unsigned);
    }
    let v1 = env.format == FORMAT_UNSIGNED;
    if v1 && (env.encryption.is_some() || env.ciphertext.is_some() || env.signature.is_some()) {
        return Err(EnvelopeError::Malformed(
            "format 1 has no encryption, ciphertext or signature",
        ));
    }
    let (stored, nonce) = match (&env.encryption, env.config, &env.ciphertext) {
        (None, Some(_), None) if env.sha256.is_none() => {
            return Err(EnvelopeError::Malformed("a plain envelope has `sha256`"))
        }
        (None, Some(raw), None) => (raw.to_vec(), None),
        (Some(enc), None, Some(c)) => {
            let c = base64_codec::decode(c, Padding::Canonical)
                .ok_or(EnvelopeError::Malformed("ciphertext is not base64"))?;
            let nonce: [u8; NONCE_LEN] = base64_codec::decode(&enc.nonce, Padding::Canonical)
                .and_then(|n| n.try_into().ok())
                .ok_or(EnvelopeError::Malformed(
                    "encryption.nonce is not 24 bytes of base64",
                ))?;
            (c, Some(nonce))
        }
        (None, _, _) => {
            return Err(EnvelopeError::Malformed(
                "a plain envelope has `config` and no `ciphertext`",
            ))
        }
        (Some(_), _, _) => {
            return Err(EnvelopeError::Malformed(
                "an encrypted envelope has `ciphertext` and no `config`",
            ))
        }
    };
    let encryption = env.encryption.as_ref().zip(nonce.as_ref());
    let signed_by = verify_signature(&env, &stored, encryption, trust)?;
    Ok(Verified {
        env,
        stored,
        nonce,
        signed_by,
    })
}

impl EnvelopeIn<'_> {
    fn header(&self) -> Header<'_> {
        Header {
            format: self.format,
            version: &self.version,
            revision: &self.revision,
            exported_at: &self.exported_at,
            exporter: &self.exporter,
            term: self.term,
            sha256: self.sha256.as_deref().unwrap_or(""),
        }
    }
}

/// Parses and verifies `config.json` for an importer of `version`.
pub fn open(bytes: &[u8], version: &str, trust: &Trust<'_>) -> Result<Opened, EnvelopeError> {
    let Verified {
        env,
        stored,
        nonce,
        signed_by,
    } = verified(bytes, trust)?;
    if trust.require_encryption && env.encryption.is_none() {
        return Err(EnvelopeError::Unencrypted);
    }
    if env.version != version {
        return Err(EnvelopeError::VersionMismatch {
            found: env.version,
            expected: version.to_string(),
        });
    }
    let (config_bytes, encrypted_with) = match (&env.encryption, nonce) {
        (Some(enc), Some(nonce)) => {
            if enc.alg != ENCRYPTION_ALG {
                return Err(EnvelopeError::UnsupportedEncryption {
                    alg: enc.alg.clone(),
                });
            }
            let key = trust
                .decryption
                .iter()
                .find(|k| k.id() == enc.key_id)
                .ok_or_else(|| EnvelopeError::NoDecryptionKey {
                    key_id: enc.key_id.clone(),
                })?;
            let aead = XChaCha20Poly1305::new(key.bytes().into());
            let plain = aead
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &stored,
                        aad: &env.header().aad(&enc.alg, &enc.key_id),
                    },
                )
                .map_err(|_| EnvelopeError::DecryptFailed {
                    key_id: enc.key_id.clone(),
                })?;
            (plain, Some(enc.key_id.clone()))
        }
        _ => (stored, None),
    };
    let actual = sha256_hex(&config_bytes);
    if let Some(stated) = env.sha256.as_deref() {
        if !actual.eq_ignore_ascii_case(stated.trim()) {
            return Err(EnvelopeError::Sha256Mismatch {
                stated: stated.to_string(),
                actual,
            });
        }
    }
    let encrypted = encrypted_with.is_some();
    let config = GatewayConfig::parse(&config_bytes).map_err(|e: GatewayConfigError| {
        EnvelopeError::InvalidConfig(if encrypted {
            e.redacted()
        } else {
            e.to_string()
        })
    })?;
    if config.revision != env.revision {
        return Err(EnvelopeError::RevisionMismatch {
            envelope: env.revision,
            // The config's text stays out of logs when it was encrypted.
            config: if encrypted {
                "(withheld: encrypted)".to_string()
            } else {
                config.revision
            },
        });
    }
    Ok(Opened {
        format: env.format,
        revision: env.revision,
        exported_at: env.exported_at,
        exporter: env.exporter,
        term: env.term,
        sha256: actual,
        signed_by,
        encrypted_with,
        config_bytes,
        config,
    })
}

/// The signature checks: present → key trusted → valid. Without a
/// requirement, a signature by a key this node does not know is not
/// checked (nothing to check it with); one by a known key must verify.
fn verify_signature(
    env: &EnvelopeIn<'_>,
    stored: &[u8],
    encryption: Option<(&Encryption, &[u8; NONCE_LEN])>,
    trust: &Trust<'_>,
) -> Result<Option<String>, EnvelopeError> {
    let Some(sig) = &env.signature else {
        return if trust.require_signature {
            Err(EnvelopeError::Unsigned)
        } else {
            Ok(None)
        };
    };
    if sig.alg != SIGNATURE_ALG {
        return Err(EnvelopeError::UnsupportedSignature {
            alg: sig.alg.clone(),
        });
    }
    let Some(key) = trust.trusted.iter().find(|k| k.id() == sig.key_id) else {
        return if trust.require_signature {
            Err(EnvelopeError::UntrustedKey {
                key_id: sig.key_id.clone(),
            })
        } else {
            Ok(None)
        };
    };
    let bad = || EnvelopeError::BadSignature {
        key_id: sig.key_id.clone(),
    };
    let value: [u8; 64] = base64_codec::decode(&sig.value, Padding::Canonical)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(bad)?;
    let enc = encryption.map(|(e, nonce)| (e.alg.as_str(), e.key_id.as_str(), &nonce[..]));
    let message = env.header().signed(enc, (&sig.alg, &sig.key_id), stored);
    if !key.verify(&message, &value) {
        return Err(bad());
    }
    Ok(Some(sig.key_id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::parse_encryption;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use serde_json::value::RawValue;

    const CONFIG: &str = r#"{ "revision": "r1",
  "routes": [ { "name": "echo", "paths": ["/echo"], "upstream": "echo_service" } ] }"#;

    fn export(config: &str) -> Export<'_> {
        Export {
            config: config.as_bytes(),
            revision: "r1",
            version: "0.1.0",
            exporter: "node-a",
            exported_at: Timestamp::from_secs(1_440_938_160),
            term: 4,
        }
    }

    fn sealed() -> Vec<u8> {
        seal(export(CONFIG), Protection::NONE).unwrap()
    }

    fn b64(bytes: [u8; 32]) -> String {
        BASE64.encode(bytes)
    }

    struct Keys {
        signing: SigningKey,
        other_signer: SigningKey,
        trusted: Vec<TrustedKey>,
        enc: Vec<EncryptionKey>,
    }

    fn keys() -> Keys {
        let signing = SigningKey::parse(&format!("s1:{}", b64([11; 32]))).unwrap();
        let other_signer = SigningKey::parse(&format!("s1:{}", b64([12; 32]))).unwrap();
        Keys {
            trusted: vec![signing.public()],
            signing,
            other_signer,
            enc: parse_encryption(&format!("e1:{},e0:{}", b64([21; 32]), b64([20; 32]))).unwrap(),
        }
    }

    fn protected(k: &Keys) -> Vec<u8> {
        seal(
            export(CONFIG),
            Protection {
                signing: Some(&k.signing),
                encryption: Some((&k.enc[0], [7; NONCE_LEN])),
            },
        )
        .unwrap()
    }

    fn trust(k: &Keys) -> Trust<'_> {
        Trust {
            require_signature: true,
            require_encryption: false,
            trusted: &k.trusted,
            decryption: &k.enc,
        }
    }

    /// The layout `seal` wrote with serde's derive before `json::Object`:
    /// kept here to show the bytes did not change.
    #[derive(serde::Serialize)]
    struct EnvelopeOut<'a> {
        format: u64,
        version: &'a str,
        revision: &'a str,
        exported_at: String,
        exporter: &'a str,
        term: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encryption: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        config: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ciphertext: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<serde_json::Value>,
    }

    #[test]
    fn sealed_bytes_are_what_serde_wrote() {
        let k = keys();
        for with_keys in [false, true] {
            let bytes = if with_keys { protected(&k) } else { sealed() };
            let v = json(&bytes);
            let s = |f: &str| v[f].as_str().map(str::to_string);
            let raw: Box<RawValue> = serde_json::from_str(CONFIG.trim()).unwrap();
            let expected = EnvelopeOut {
                format: 2,
                version: "0.1.0",
                revision: "r1",
                exported_at: s("exported_at").unwrap(),
                exporter: "node-a",
                term: 4,
                sha256: s("sha256"),
                // serde_json's Map keeps names sorted: alg, key_id, nonce / value.
                encryption: v.get("encryption").cloned(),
                config: (!with_keys).then_some(&*raw),
                ciphertext: s("ciphertext"),
                signature: v.get("signature").cloned(),
            };
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                serde_json::to_string(&expected).unwrap()
            );
        }
    }

    /// The envelope's fields, read as the serde-based reader read them:
    /// `null` is absent (but `term: null` is refused), a known field given
    /// twice is refused, unknown ones are skipped if they are JSON, and
    /// `config` is its bytes exactly.
    #[test]
    fn envelope_fields_are_read_like_serde_fields() {
        let head = r#""format":2,"version":"v","revision":"r","exported_at":"t","exporter":"e""#;
        let parse = |rest: &str| {
            let text = format!("{{{head}{rest}}}");
            EnvelopeIn::parse(text.as_bytes())
                .map(|env| {
                    let config = env.config.map(|c| String::from_utf8(c.to_vec()).unwrap());
                    let enc = env.encryption.map(|e| (e.alg, e.key_id, e.nonce));
                    (env.term, env.sha256, config, enc)
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(""), Ok((0, None, None, None)));
        assert_eq!(
            parse(r#","z":{"q":[1,{"r":null}]},"term":7,"sha256":null,"config": [1, 2] "#),
            Ok((7, None, Some("[1, 2]".into()), None))
        );
        assert_eq!(parse(r#","config":null"#), Ok((0, None, None, None)));
        assert_eq!(
            parse(r#","encryption":{"nonce":"n","x":1,"key_id":"k","alg":"\u0041"}"#),
            Ok((0, None, None, Some(("A".into(), "k".into(), "n".into()))))
        );
        assert_eq!(parse(r#","encryption":null"#), Ok((0, None, None, None)));
        for (rest, error) in [
            (r#","term":null"#, "invalid type: null, expected u64"),
            (r#","term":-1"#, "invalid value: integer, expected u64"),
            (
                r#","term":1.5"#,
                "invalid type: floating point, expected u64",
            ),
            (r#","revision":"r""#, "duplicate field `revision`"),
            (r#","config":null,"config":1"#, "duplicate field `config`"),
            (r#","sha256":7"#, "invalid type: integer, expected a string"),
            (
                r#","encryption":[]"#,
                "invalid type: sequence, expected a map",
            ),
            (
                r#","encryption":{"alg":"a","key_id":"k"}"#,
                "missing field `nonce`",
            ),
            (
                r#","signature":{"alg":"a","key_id":"k","value":null}"#,
                "missing field `value`",
            ),
            (
                r#","signature":{"alg":"a","alg":"b","key_id":"k","value":"v"}"#,
                "duplicate field `alg`",
            ),
            (r#","z":tru"#, "expected ident"),
        ] {
            let e = parse(rest).unwrap_err();
            assert!(e.starts_with(error), "{rest}: {e}");
        }
        for bad in ["[]", "1", "null", "{", r#"{"format":2} x"#, ""] {
            assert!(EnvelopeIn::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let missing = EnvelopeIn::parse(br#"{"format":null}"#).err().unwrap();
        assert_eq!(missing.kind(), &json::ErrorKind::MissingField("format"));
        // The term alone, as a node without keys reads it.
        assert_eq!(stored_term(br#"{"x":[],"term":3}"#), Some(3));
        assert_eq!(stored_term(br#"{"term":null}"#), None);
        assert_eq!(stored_term(br#"{"term":3,"term":3}"#), None);
        assert_eq!(stored_term(br#"{"term":3} 1"#), None);
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn reserialise(v: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn round_trip_keeps_config_bytes() {
        let bytes = sealed();
        let v = json(&bytes);
        assert_eq!(v["format"], 2);
        assert_eq!(v["version"], "0.1.0");
        assert_eq!(v["revision"], "r1");
        assert_eq!(v["exporter"], "node-a");
        assert_eq!(v["exported_at"], "2015-08-30T12:36:00Z");
        assert_eq!(v["sha256"], sha256_hex(CONFIG.as_bytes()));
        assert!(v.get("signature").is_none() && v.get("encryption").is_none());
        // The config appears verbatim, whitespace and all.
        assert!(String::from_utf8(bytes.clone()).unwrap().contains(CONFIG));
        let o = open(&bytes, "0.1.0", &Trust::NONE).unwrap();
        assert_eq!(o.config_bytes, CONFIG.as_bytes());
        assert_eq!(o.revision, "r1");
        assert_eq!(o.exporter, "node-a");
        assert_eq!(o.config.routes[0].upstream, "echo_service");
        assert_eq!((o.term, o.signed_by, o.encrypted_with), (4, None, None));
        assert_eq!(stored_term(&bytes), Some(4));
    }

    /// Format 1, as earlier builds wrote it (and without a term, before
    /// leader election), opens while no signature is required.
    #[test]
    fn format_1_is_read_only_while_no_signature_is_required() {
        let v1 = format!(
            r#"{{"format":1,"version":"0.1.0","revision":"r1","exported_at":"2015-08-30T12:36:00Z","exporter":"n","sha256":"{}","config":{CONFIG}}}"#,
            sha256_hex(CONFIG.as_bytes())
        );
        let o = open(v1.as_bytes(), "0.1.0", &Trust::NONE).unwrap();
        assert_eq!((o.format, o.term), (1, 0));
        assert_eq!(stored_term(v1.as_bytes()), None);
        let k = keys();
        assert_eq!(
            open(v1.as_bytes(), "0.1.0", &trust(&k)),
            Err(EnvelopeError::Unsigned)
        );
        let signed_v1 = v1.replacen(
            "\"format\":1,",
            "\"format\":1,\"signature\":{\"alg\":\"Ed25519\",\"key_id\":\"s1\",\"value\":\"\"},",
            1,
        );
        assert!(matches!(
            open(signed_v1.as_bytes(), "0.1.0", &Trust::NONE),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn signed_and_encrypted_round_trip_hides_the_config() {
        let k = keys();
        let bytes = protected(&k);
        let text = String::from_utf8(bytes.clone()).unwrap();
        for clear in ["/echo", "echo_service", "routes", "\"name\""] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        let v = json(&bytes);
        assert_eq!(v["encryption"]["alg"], ENCRYPTION_ALG);
        assert_eq!(v["encryption"]["key_id"], "e1");
        assert_eq!(v["signature"]["alg"], SIGNATURE_ALG);
        assert_eq!(v["signature"]["key_id"], "s1");
        assert!(v.get("config").is_none());
        let o = open(&bytes, "0.1.0", &trust(&k)).unwrap();
        assert_eq!(o.config_bytes, CONFIG.as_bytes());
        assert_eq!(o.signed_by.as_deref(), Some("s1"));
        assert_eq!(o.encrypted_with.as_deref(), Some("e1"));
        assert_eq!(stored_term(&bytes), Some(4));
        // Debug never shows the plaintext.
        assert!(!format!("{o:?}").contains("echo_service"));
        // Key order and white space are not signed: a store or a tool
        // that re-serialises the JSON does not break the signature.
        assert!(open(&reserialise(&v), "0.1.0", &trust(&k)).is_ok());
    }

    #[test]
    fn signed_plain_envelopes_verify_too() {
        let k = keys();
        let bytes = seal(
            export(CONFIG),
            Protection {
                signing: Some(&k.signing),
                encryption: None,
            },
        )
        .unwrap();
        let o = open(&bytes, "0.1.0", &trust(&k)).unwrap();
        assert_eq!(
            (o.signed_by.as_deref(), o.encrypted_with),
            (Some("s1"), None)
        );
        // The attack this exists for: routes rewritten, sha256 recomputed.
        let forged_config = CONFIG.replace("echo_service", "attacker");
        let mut v = json(&bytes);
        v["config"] = serde_json::from_str(&forged_config).unwrap();
        v["sha256"] = sha256_hex(serde_json::to_string(&v["config"]).unwrap().as_bytes()).into();
        assert_eq!(
            open(&reserialise(&v), "0.1.0", &trust(&k)),
            Err(EnvelopeError::BadSignature {
                key_id: "s1".into()
            })
        );
    }

    /// Each refusal, in the order the importer checks.
    #[test]
    fn refusals_in_order() {
        let k = keys();
        let good = json(&protected(&k));
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            open(&reserialise(&v), "0.1.0", &trust(&k))
        };
        // Unsigned, and required.
        assert_eq!(
            with(&|v| {
                v.as_object_mut().unwrap().remove("signature");
            }),
            Err(EnvelopeError::Unsigned)
        );
        assert_eq!(
            open(&sealed(), "0.1.0", &trust(&k)),
            Err(EnvelopeError::Unsigned)
        );
        // Signed by a key nobody trusts.
        assert_eq!(
            with(&|v| v["signature"]["key_id"] = "k9".into()),
            Err(EnvelopeError::UntrustedKey {
                key_id: "k9".into()
            })
        );
        let by_other = seal(
            export(CONFIG),
            Protection {
                signing: Some(&k.other_signer),
                encryption: None,
            },
        )
        .unwrap();
        assert_eq!(
            open(&by_other, "0.1.0", &trust(&k)),
            Err(EnvelopeError::BadSignature {
                key_id: "s1".into()
            })
        );
        assert_eq!(
            with(&|v| v["signature"]["alg"] = "RS256".into()),
            Err(EnvelopeError::UnsupportedSignature {
                alg: "RS256".into()
            })
        );
        // Every signed field: changing it breaks the signature.
        let bad = || {
            Err(EnvelopeError::BadSignature {
                key_id: "s1".into(),
            })
        };
        assert_eq!(with(&|v| v["signature"]["value"] = "AAAA".into()), bad());
        assert_eq!(with(&|v| v["revision"] = "r2".into()), bad());
        assert_eq!(with(&|v| v["version"] = "0.2.0".into()), bad());
        assert_eq!(
            with(&|v| v["exported_at"] = "2030-01-01T00:00:00Z".into()),
            bad()
        );
        assert_eq!(with(&|v| v["exporter"] = "mallory".into()), bad());
        assert_eq!(with(&|v| v["term"] = 99.into()), bad());
        assert_eq!(with(&|v| v["sha256"] = sha256_hex(b"x").into()), bad());
        assert_eq!(with(&|v| v["encryption"]["key_id"] = "e0".into()), bad());
        assert_eq!(
            with(&|v| v["encryption"]["nonce"] = BASE64.encode([8u8; NONCE_LEN]).into()),
            bad()
        );
        let flip = |v: &mut serde_json::Value| {
            let mut c = BASE64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
            c[3] ^= 1;
            v["ciphertext"] = BASE64.encode(c).into();
        };
        assert_eq!(with(&flip), bad());
        // Version checked after the signature.
        assert!(matches!(
            open(&protected(&k), "0.2.0", &trust(&k)),
            Err(EnvelopeError::VersionMismatch { .. })
        ));
        // Cannot decrypt: the key is missing, or wrong.
        let missing = Trust {
            decryption: &k.enc[1..],
            ..trust(&k)
        };
        assert_eq!(
            open(&protected(&k), "0.1.0", &missing),
            Err(EnvelopeError::NoDecryptionKey {
                key_id: "e1".into()
            })
        );
        let wrong = parse_encryption(&format!("e1:{}", b64([99; 32]))).unwrap();
        let wrong = Trust {
            decryption: &wrong,
            ..trust(&k)
        };
        assert_eq!(
            open(&protected(&k), "0.1.0", &wrong),
            Err(EnvelopeError::DecryptFailed {
                key_id: "e1".into()
            })
        );
        assert!(EnvelopeError::NoDecryptionKey {
            key_id: "k2".into()
        }
        .to_string()
        .contains("cannot decrypt: no key \"k2\""));
    }

    /// Without a signature requirement the AEAD alone protects: wrong
    /// associated data, a truncated or altered ciphertext never decrypt.
    #[test]
    fn aead_refuses_wrong_key_wrong_data_and_truncation() {
        let k = keys();
        let enc_only = seal(
            export(CONFIG),
            Protection {
                signing: None,
                encryption: Some((&k.enc[0], [3; NONCE_LEN])),
            },
        )
        .unwrap();
        let loose = Trust {
            require_signature: false,
            require_encryption: false,
            trusted: &[],
            decryption: &k.enc,
        };
        assert_eq!(
            open(&enc_only, "0.1.0", &loose).unwrap().config_bytes,
            CONFIG.as_bytes()
        );
        let good = json(&enc_only);
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            open(&reserialise(&v), "0.1.0", &loose)
        };
        let failed = || {
            Err(EnvelopeError::DecryptFailed {
                key_id: "e1".into(),
            })
        };
        // Associated data: the header.
        assert_eq!(with(&|v| v["revision"] = "r2".into()), failed());
        assert_eq!(with(&|v| v["term"] = 5.into()), failed());
        assert_eq!(with(&|v| v["exporter"] = "x".into()), failed());
        assert_eq!(with(&|v| v["sha256"] = sha256_hex(b"x").into()), failed());
        // The ciphertext moved under the other key's id.
        assert_eq!(
            with(&|v| v["encryption"]["key_id"] = "e0".into()),
            Err(EnvelopeError::DecryptFailed {
                key_id: "e0".into()
            })
        );
        let cut = |n: usize| {
            move |v: &mut serde_json::Value| {
                let c = BASE64.decode(v["ciphertext"].as_str().unwrap()).unwrap();
                v["ciphertext"] = BASE64.encode(&c[..c.len().saturating_sub(n)]).into();
            }
        };
        assert_eq!(with(&cut(1)), failed());
        assert_eq!(with(&cut(16)), failed());
        assert_eq!(with(&cut(100_000)), failed());
        assert!(matches!(
            with(&|v| v["encryption"]["nonce"] = "AAAA".into()),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            with(&|v| v["encryption"]["alg"] = "AES-256-GCM".into()),
            Err(EnvelopeError::UnsupportedEncryption { .. })
        ));
        assert!(matches!(
            with(&|v| v["config"] = serde_json::json!({"revision": "r1"})),
            Err(EnvelopeError::Malformed(_))
        ));
        // A signature is checked when its key is known, even if not required.
        let signed = protected(&k);
        let mut v = json(&signed);
        v["exporter"] = "x".into();
        let known = Trust {
            require_signature: false,
            ..trust(&k)
        };
        assert!(matches!(
            open(&reserialise(&v), "0.1.0", &known),
            Err(EnvelopeError::BadSignature { .. })
        ));
        // ... and not by a node that has no key to check it with.
        assert!(open(&signed, "0.1.0", &loose).is_ok());
    }

    #[test]
    fn rotation_old_and_new_keys_side_by_side() {
        let old_signer = SigningKey::parse(&format!("2025:{}", b64([1; 32]))).unwrap();
        let new_signer = SigningKey::parse(&format!("2026:{}", b64([2; 32]))).unwrap();
        let old_enc = parse_encryption(&format!("old:{}", b64([3; 32]))).unwrap();
        let new_enc = parse_encryption(&format!("new:{}", b64([4; 32]))).unwrap();
        let both_enc: Vec<EncryptionKey> = [new_enc[0].clone(), old_enc[0].clone()].to_vec();
        let sealed_with = |s: &SigningKey, e: &EncryptionKey| {
            seal(
                export(CONFIG),
                Protection {
                    signing: Some(s),
                    encryption: Some((e, [5; NONCE_LEN])),
                },
            )
            .unwrap()
        };
        let before = sealed_with(&old_signer, &old_enc[0]);
        let after = sealed_with(&new_signer, &new_enc[0]);
        let public = |keys: &[&SigningKey]| keys.iter().map(|k| k.public()).collect::<Vec<_>>();
        // Step 1: every importer trusts and can decrypt both.
        let both_trusted = public(&[&new_signer, &old_signer]);
        let both = Trust {
            require_signature: true,
            require_encryption: false,
            trusted: &both_trusted,
            decryption: &both_enc,
        };
        assert_eq!(
            open(&before, "0.1.0", &both).unwrap().signed_by.as_deref(),
            Some("2025")
        );
        assert_eq!(
            open(&after, "0.1.0", &both).unwrap().signed_by.as_deref(),
            Some("2026")
        );
        // Step 3: old keys removed; only what the switched exporters wrote opens.
        let new_trusted = public(&[&new_signer]);
        let only_new = Trust {
            require_signature: true,
            require_encryption: false,
            trusted: &new_trusted,
            decryption: &new_enc,
        };
        assert!(open(&after, "0.1.0", &only_new).is_ok());
        assert_eq!(
            open(&before, "0.1.0", &only_new),
            Err(EnvelopeError::UntrustedKey {
                key_id: "2025".into()
            })
        );
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let good = String::from_utf8(sealed()).unwrap();
        let none = &Trust::NONE;
        assert!(matches!(
            open(&sealed(), "0.2.0", none),
            Err(EnvelopeError::VersionMismatch { .. })
        ));
        let tampered = good.replace("/echo", "/evil");
        assert!(matches!(
            open(tampered.as_bytes(), "0.1.0", none),
            Err(EnvelopeError::Sha256Mismatch { .. })
        ));
        assert!(matches!(
            open(b"{not json", "0.1.0", none),
            Err(EnvelopeError::Parse(_))
        ));
        assert!(matches!(
            open(&good.as_bytes()[..good.len() - 3], "0.1.0", none),
            Err(EnvelopeError::Parse(_))
        ));
        let fmt3 = good.replace("\"format\":2", "\"format\":3");
        assert!(matches!(
            open(fmt3.as_bytes(), "0.1.0", none),
            Err(EnvelopeError::UnsupportedFormat(3))
        ));
        // A field given twice is refused, so no two readers differ.
        let twice = good.replacen(
            "\"revision\":\"r1\"",
            "\"revision\":\"r1\",\"revision\":\"r9\"",
            1,
        );
        assert!(matches!(
            open(twice.as_bytes(), "0.1.0", none),
            Err(EnvelopeError::Parse(_))
        ));
        let rev = good.replace("\"revision\":\"r1\"", "\"revision\":\"r0\"");
        assert!(matches!(
            open(rev.as_bytes(), "0.1.0", none),
            Err(EnvelopeError::RevisionMismatch { .. })
        ));
        // A digest that matches but a config that does not validate.
        let bad_cfg =
            r#"{"revision":"r1","routes":[{"name":"x","paths":["nope"],"upstream":"u"}]}"#;
        let sealed_bad = seal(export(bad_cfg), Protection::NONE).unwrap();
        let e = open(&sealed_bad, "0.1.0", none).unwrap_err();
        assert!(e.to_string().contains("routes[0].paths[0]"), "{e}");
    }

    #[test]
    fn only_plain_envelopes_carry_a_digest() {
        let k = keys();
        assert_eq!(json(&sealed())["sha256"], sha256_hex(CONFIG.as_bytes()));
        // A digest of the plaintext would let a bucket reader confirm a
        // guessed config: the AEAD tag checks it instead.
        assert!(json(&protected(&k)).get("sha256").is_none());
        let mut v = json(&sealed());
        v.as_object_mut().unwrap().remove("sha256");
        assert_eq!(
            open(&reserialise(&v), "0.1.0", &Trust::NONE),
            Err(EnvelopeError::Malformed("a plain envelope has `sha256`"))
        );
    }

    #[test]
    fn with_encryption_on_a_plain_snapshot_is_refused() {
        let k = keys();
        let sealed_only = Trust {
            require_encryption: true,
            ..trust(&k)
        };
        let signed_plain = seal(
            export(CONFIG),
            Protection {
                signing: Some(&k.signing),
                encryption: None,
            },
        )
        .unwrap();
        assert_eq!(
            open(&signed_plain, "0.1.0", &sealed_only),
            Err(EnvelopeError::Unencrypted)
        );
        assert!(EnvelopeError::Unencrypted
            .to_string()
            .starts_with("unencrypted snapshot refused"));
        // Encryption without signatures: a forger without the key can only
        // write plaintext, and that is refused.
        let enc_only = Trust {
            require_signature: false,
            trusted: &[],
            ..sealed_only
        };
        assert_eq!(
            open(&sealed(), "0.1.0", &enc_only),
            Err(EnvelopeError::Unencrypted)
        );
        assert!(open(&protected(&k), "0.1.0", &sealed_only).is_ok());
    }

    /// With a signature required, a missing one is what is reported,
    /// whatever else is wrong with the envelope.
    #[test]
    fn unsigned_is_reported_before_a_malformed_shape() {
        let k = keys();
        let mut v = json(&protected(&k));
        v.as_object_mut().unwrap().remove("signature");
        v["config"] = serde_json::json!({"revision": "r1"});
        assert_eq!(
            open(&reserialise(&v), "0.1.0", &trust(&k)),
            Err(EnvelopeError::Unsigned)
        );
        let loose = Trust {
            require_signature: false,
            ..trust(&k)
        };
        assert!(matches!(
            open(&reserialise(&v), "0.1.0", &loose),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    /// The fence a leader obeys: with trusted keys only a signed term.
    #[test]
    fn the_fence_obeys_only_a_verified_term() {
        let k = keys();
        let signed = protected(&k);
        assert_eq!(fence_term(&signed, &k.trusted), 4);
        assert_eq!(fence_term(&signed, &[]), 4);
        // A bucket writer stores a huge term: unsigned, re-signed by
        // another key, or with the signed term edited.
        let mut forged = json(&sealed());
        forged["term"] = u64::MAX.into();
        let forged = reserialise(&forged);
        assert_eq!(fence_term(&forged, &k.trusted), 0);
        let by_other = seal(
            Export {
                term: u64::MAX,
                ..export(CONFIG)
            },
            Protection {
                signing: Some(&k.other_signer),
                encryption: None,
            },
        )
        .unwrap();
        assert_eq!(fence_term(&by_other, &k.trusted), 0);
        let mut edited = json(&signed);
        edited["term"] = u64::MAX.into();
        assert_eq!(fence_term(&reserialise(&edited), &k.trusted), 0);
        assert_eq!(fence_term(b"not json", &k.trusted), 0);
        // Without keys there is nothing to verify with: the stated term.
        assert_eq!(fence_term(&forged, &[]), u64::MAX);
    }

    /// No error quotes a value of the config; a parse error may name a
    /// field the config has, which from an encrypted config must not
    /// reach a log either.
    #[test]
    fn errors_from_an_encrypted_config_quote_none_of_it() {
        let k = keys();
        let seal_with = |config, encryption| {
            seal(
                export(config),
                Protection {
                    signing: Some(&k.signing),
                    encryption,
                },
            )
            .unwrap()
        };
        let bad_value =
            r#"{"revision":"r1","routes":[{"name":"n","paths":"/secret-path","upstream":"u"}]}"#;
        let bad_field = r#"{"revision":"r1","routes":[],"secret-field":1}"#;
        let plain = open(&seal_with(bad_value, None), "0.1.0", &trust(&k)).unwrap_err();
        assert!(!plain.to_string().contains("secret-path"), "{plain}");
        assert!(
            plain
                .to_string()
                .contains("invalid type: string, expected a sequence at line 1 column 48"),
            "{plain}"
        );
        let plain = open(&seal_with(bad_field, None), "0.1.0", &trust(&k)).unwrap_err();
        assert!(plain.to_string().contains("`secret-field`"), "{plain}");
        for bad in [bad_value, bad_field] {
            let e = open(
                &seal_with(bad, Some((&k.enc[0], [9; NONCE_LEN]))),
                "0.1.0",
                &trust(&k),
            )
            .unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, EnvelopeError::InvalidConfig(_)));
            assert!(!text.contains("secret"), "{text}");
            assert!(text.contains("line 1 column"), "{text}");
        }
        let other = r#"{"revision":"r2","routes":[]}"#;
        let sealed = seal(
            Export {
                config: other.as_bytes(),
                ..export(CONFIG)
            },
            Protection {
                signing: None,
                encryption: Some((&k.enc[0], [9; NONCE_LEN])),
            },
        )
        .unwrap();
        let e = open(
            &sealed,
            "0.1.0",
            &Trust {
                decryption: &k.enc,
                ..Trust::NONE
            },
        )
        .unwrap_err();
        assert!(!e.to_string().contains("r2"), "{e}");
    }

    #[test]
    fn seal_refuses_non_json() {
        let r = seal(export("{"), Protection::NONE);
        assert!(matches!(r, Err(EnvelopeError::Parse(_))));
    }

    #[test]
    fn transcripts_are_unambiguous() {
        assert_ne!(
            transcript(b"l", &[b"ab", b"c"]),
            transcript(b"l", &[b"a", b"bc"])
        );
        assert_ne!(transcript(b"l", &[b""]), transcript(b"l", &[]));
        assert_ne!(
            transcript(SIGNED_LABEL, &[b"x"]),
            transcript(AAD_LABEL, &[b"x"])
        );
    }
}
