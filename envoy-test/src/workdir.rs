//! Per-test work folders: `envoy-test/work/<name>-<pid>/` (git-ignored).
//!
//! Removed when dropped after a passing test; kept (and its path printed)
//! when the test panics, or always when `ENVOY_TEST_KEEP=1`.

use std::path::{Path, PathBuf};

/// A work folder owned by one test.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates a fresh `envoy-test/work/<name>-<pid>/` (replacing a stale one).
    pub fn new(name: &str) -> WorkDir {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("work")
            .join(format!("{safe}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        WorkDir { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `folder/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let keep = std::env::var("ENVOY_TEST_KEEP")
            .map(|v| v == "1")
            .unwrap_or(false);
        if std::thread::panicking() || keep {
            eprintln!(
                "test files (configs, logs, S3 data) kept in {}",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
