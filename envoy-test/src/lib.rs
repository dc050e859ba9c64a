//! End-to-end test harness for the `fallback-config` proxy-wasm filter.
//!
//! Every piece runs on 127.0.0.1 only and stops by itself when dropped (also
//! while a test panics), so tests can run in parallel:
//!
//! - [`bins`]: where the Envoy, s3s-fs, Azurite, GCS emulator and wasm
//!   files are (env vars).
//! - [`ports`]: free loopback ports.
//! - [`workdir`]: a per-test folder `envoy-test/work/<test>-<pid>/` for
//!   configs, logs and the S3 data (kept when a test fails).
//! - [`process`]: child processes killed on drop, output to a log file.
//! - [`http`]: a tiny HTTP/1.1 client and a restartable HTTP/1.1 server.
//! - [`control_plane`]: the fake control plane (ETag / 304, up / down).
//! - [`upstream`]: an echo server that names itself.
//! - [`s3`]: the s3s-fs S3 server and on-disk object helpers.
//! - [`moto`]: moto, a second S3 (IAM users and policies, KMS) that
//!   verifies SigV4 and keeps the server-side encryption of each PUT
//!   (`tests/sse.rs`; `MOTO_SERVER_BIN`).
//! - [`azure`]: Azurite (verifies SharedKey and SAS) and a blob client
//!   signing with the filter's own request builder; account SAS tokens.
//! - [`gcs`]: the GCS stack: the emulator, an OAuth token endpoint that
//!   verifies the service account's RS256 JWT, and a front that accepts
//!   only the tokens it issued and adds generation preconditions.
//! - [`faults`]: a fault-injecting HTTP/1.1 front before a store (scripted
//!   error statuses, hangs, slow or truncated bodies, resets, oversize
//!   bodies) that records every request.
//! - [`store`]: one [`store::Store`] over the three backends, and
//!   [`on_every_store!`] to run one scenario on each.
//! - [`envoy`]: generate an Envoy config, start Envoy, read stats and logs.
//! - [`plugin`]: the filter's plugin configuration JSON.
//! - [`envelope`]: the stored-object envelope (SHA-256, RFC 3339, term).
//! - [`election`]: the lease object, the filter's Envoy stats (metric
//!   names) and election log lines.
//! - [`probe`]: a client thread that keeps requesting one path through
//!   Envoy and records every answer, to check what clients saw across a
//!   transition (503 until a config is applied, then only 200).
//! - [`stack`]: all of the above wired together the way scenarios use it
//!   ([`stack::Stack::on`] picks the backend).
//! - [`wait`]: poll-until helpers (no fixed sleeps).
//! - [`identity`]: fake workload-identity credential endpoints (EC2
//!   IMDSv2, ECS/EKS container credentials with moto STS credentials, the
//!   GCP metadata server feeding the GCS front, Entra ID client
//!   credentials and Azure IMDS with JWTs Azurite `--oauth basic` accepts),
//!   each with a credential lifetime, down/up/503 and a request log
//!   (`tests/identity_harness.rs`).
//! - [`tls`]: a test CA, a server certificate and an unrelated CA (PEM
//!   files), and an HTTPS client, for Azurite over HTTPS and Envoy
//!   clusters with upstream TLS ([`envoy::EnvoyConfig::cluster_tls`]).
//!
//! Running: `cargo test -p envoy-test -- --test-threads 2` (the scenarios
//! in `tests/export.rs`, `tests/import.rs`, `tests/import_faults.rs` (the
//! import fault matrix, through a [`faults::FaultFront`]),
//! `tests/status.rs` (readiness status and import metrics),
//! `tests/election.rs` and `tests/backends.rs` need the built filter; `tests/harness.rs` proves the
//! harness, and that every store refuses wrong credentials, with Envoy
//! alone, no filter). A scenario shared by the backends is one function
//! taking a [`store::StoreKind`], run on each by [`on_every_store!`]:
//! `cargo test -p envoy-test <scenario>` runs it on all three,
//! `<scenario>::azure` on one.
//! Inputs, each a FAILURE naming the variable when missing:
//! `ENVOY_BIN`, `S3S_FS_BIN`, `AZURITE_BIN`, `GCS_EMULATOR_BIN`,
//! `FALLBACK_CONFIG_WASM` (see [`bins`]); `openssl` for the throwaway GCS
//! service-account keys.
//! `ENVOY_TEST_KEEP=1` keeps every test's folder (configs, logs, S3 data);
//! a failing test always keeps its folder and prints the Envoy log tail.
//! `cargo run -p envoy-test --bin demo` is the guided demo (`make run`).

pub mod azure;
pub mod bins;
pub mod control_plane;
pub mod election;
pub mod envelope;
pub mod envoy;
pub mod faults;
pub mod gcs;
pub mod http;
pub mod identity;
pub mod moto;
pub mod plugin;
pub mod ports;
pub mod probe;
pub mod process;
pub mod s3;
pub mod sha256;
pub mod stack;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod wait;
pub mod workdir;

/// The value, or a panic with the harness's error message (test code).
#[track_caller]
pub fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The value, or a panic with the I/O error (test code).
#[track_caller]
pub fn io<T>(r: std::io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}
