//! s3s-fs, a real S3 server that verifies SigV4 signatures, and helpers to
//! read, write and corrupt its objects directly on disk.
//!
//! Layout: bucket `b` is the folder `<root>/b`, object `k` in it is the file
//! `<root>/b/k`. s3s-fs keeps per-object side files (ETag, checksums,
//! metadata) at `<root>/.bucket-<b64 b>.object-<b64 k>.{internal,metadata}.json`;
//! [`S3Server::write_object`] removes them so a hand-written object is served
//! exactly as written.

use crate::process::Proc;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A running s3s-fs.
pub struct S3Server {
    proc: Proc,
    bin: PathBuf,
    log: PathBuf,
    restarts: u32,
    port: u16,
    root: PathBuf,
    access_key: String,
    secret_key: String,
}

fn spawn(
    bin: &Path,
    root: &Path,
    log: &Path,
    port: u16,
    access_key: &str,
    secret_key: &str,
) -> Result<Proc, String> {
    let args: Vec<String> = vec![
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--access-key".into(),
        access_key.into(),
        "--secret-key".into(),
        secret_key.into(),
        root.display().to_string(),
    ];
    let mut proc = Proc::spawn("s3s-fs", bin, &args, &[], &[], log).map_err(|e| e.to_string())?;
    proc.wait_listening(port, Duration::from_secs(10))?;
    Ok(proc)
}

impl S3Server {
    /// Starts `bin` on 127.0.0.1:`port` with data under `root` (created),
    /// output to `log`; waits (up to 10 s) until it accepts connections.
    pub fn start(
        bin: &Path,
        root: &Path,
        log: &Path,
        port: u16,
        access_key: &str,
        secret_key: &str,
    ) -> Result<S3Server, String> {
        std::fs::create_dir_all(root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        let proc = spawn(bin, root, log, port, access_key, secret_key)?;
        Ok(S3Server {
            proc,
            bin: bin.to_path_buf(),
            log: log.to_path_buf(),
            restarts: 0,
            port,
            root: root.to_path_buf(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        })
    }

    /// Stops s3s-fs and starts it again on the same port and data folder,
    /// now accepting `secret_key` (log: `<log stem>.<n>.log`).
    pub fn restart_with_secret(&mut self, secret_key: &str) -> Result<(), String> {
        self.proc.kill();
        self.restarts += 1;
        let log = self.log.with_extension(format!("{}.log", self.restarts));
        self.proc = spawn(
            &self.bin,
            &self.root,
            &log,
            self.port,
            &self.access_key,
            secret_key,
        )?;
        self.secret_key = secret_key.into();
        Ok(())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key it accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key it accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Data folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server process (log, liveness, signals).
    pub fn process(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Creates the bucket (a folder).
    pub fn create_bucket(&self, bucket: &str) {
        let p = self.root.join(bucket);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    }

    /// Path of the file holding `key` in `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The object's bytes, if it exists.
    pub fn read_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(bucket, key)).ok()
    }

    /// The object's modification time, if it exists.
    pub fn object_mtime(&self, bucket: &str, key: &str) -> Option<SystemTime> {
        std::fs::metadata(self.object_path(bucket, key))
            .and_then(|m| m.modified())
            .ok()
    }

    fn side_files(&self, bucket: &str, key: &str) -> [PathBuf; 2] {
        let base = format!(
            ".bucket-{}.object-{}",
            base64_url_nopad(bucket.as_bytes()),
            base64_url_nopad(key.as_bytes())
        );
        [
            self.root.join(format!("{base}.internal.json")),
            self.root.join(format!("{base}.metadata.json")),
        ]
    }

    /// Writes an object directly on disk (creating folders) and drops the
    /// side files s3s-fs may have kept for an earlier version of it.
    pub fn write_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let p = self.object_path(bucket, key);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        for side in self.side_files(bucket, key) {
            let _ = std::fs::remove_file(side);
        }
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// Deletes an object (and its side files) on disk.
    pub fn delete_object(&self, bucket: &str, key: &str) {
        let _ = std::fs::remove_file(self.object_path(bucket, key));
        for side in self.side_files(bucket, key) {
            let _ = std::fs::remove_file(side);
        }
    }
}

fn base64_url_nopad(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=n {
            out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Splits `s3://bucket/prefix` into (`bucket`, `prefix` without slashes at the ends).
pub fn split_s3_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_url() {
        assert_eq!(base64_url_nopad(b""), "");
        assert_eq!(base64_url_nopad(b"f"), "Zg");
        assert_eq!(base64_url_nopad(b"fo"), "Zm8");
        assert_eq!(base64_url_nopad(b"foo"), "Zm9v");
        assert_eq!(base64_url_nopad(b"foob"), "Zm9vYg");
        assert_eq!(base64_url_nopad(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            split_s3_url("s3://b/some/prefix/"),
            Some(("b".into(), "some/prefix".into()))
        );
        assert_eq!(split_s3_url("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(split_s3_url("http://b"), None);
    }
}
