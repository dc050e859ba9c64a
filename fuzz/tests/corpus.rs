//! Replays the checked-in corpus and every recorded crash through the
//! harnesses, on stable and without cargo-fuzz: `cd fuzz && cargo test`.
//! Inputs under `regressions/<target>/` whose bug is not fixed yet fail
//! here until it is (see `regressions.rs` for the tests that name them).

use std::fs;
use std::panic;
use std::path::Path;

type Run = fn(&[u8]);

const TARGETS: &[(&str, Run)] = &[
    ("azure_response", fallback_config_fuzz::azure_response::run),
    ("dates", fallback_config_fuzz::dates::run),
    ("election_lease", fallback_config_fuzz::election_lease::run),
    ("envelope", fallback_config_fuzz::envelope::run),
    ("gateway", fallback_config_fuzz::gateway::run),
    ("gcs_response", fallback_config_fuzz::gcs_response::run),
    ("http", fallback_config_fuzz::http::run),
    ("json", fallback_config_fuzz::json::run),
    ("published", fallback_config_fuzz::published::run),
    ("s3_response", fallback_config_fuzz::s3_response::run),
    (
        "service_account",
        fallback_config_fuzz::service_account::run,
    ),
    ("settings", fallback_config_fuzz::settings::run),
    ("sigv4", fallback_config_fuzz::sigv4::run),
    ("token_response", fallback_config_fuzz::token_response::run),
    ("version", fallback_config_fuzz::version::run),
    ("xml", fallback_config_fuzz::xml::run),
];

/// Runs every file under `<dir>/<target>/`; returns the ones that panicked.
fn replay(dir: &str) -> (usize, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let (mut count, mut failed) = (0, Vec::new());
    for (target, run) in TARGETS {
        let Ok(entries) = fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let data = fs::read(&path).unwrap();
            count += 1;
            if panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(format!("{target}: {}", path.display()));
            }
        }
    }
    (count, failed)
}

#[test]
fn every_target_is_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let listed: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, listed);
}

#[test]
fn corpus_replays_cleanly() {
    let (count, failed) = replay("corpus");
    assert!(count > 0, "no corpus");
    assert!(
        failed.is_empty(),
        "{} of {count} inputs panic:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn recorded_crashes_no_longer_crash() {
    let (count, failed) = replay("regressions");
    assert!(
        failed.is_empty(),
        "{} of {count} recorded crashes still crash:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The format 2 seeds (signed, encrypted, both) need Ed25519 and the AEAD,
/// so Rust writes them rather than `seeds.py`: with the fuzz keys, from
/// the echo seed's config. `WRITE_SEEDS=1 cargo test` rewrites them; the
/// test fails when they are out of date (a layout change).
#[test]
fn format_2_envelope_seeds_are_current() {
    use fallback_config::envelope::{seal, Export, Protection};
    use fallback_config::time::Timestamp;
    let keys = fallback_config_fuzz::envelope::keys();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/envelope");
    let config = br#"{"revision":"r1","routes":[{"name":"echo","paths":["/echo"],"upstream":"echo_service"}]}"#;
    let export = Export {
        config,
        revision: "r1",
        version: fallback_config_fuzz::VERSION,
        exporter: "node-a",
        exported_at: Timestamp::parse_rfc3339("2027-01-15T08:00:00Z").unwrap(),
        term: 4,
    };
    let enc = keys.encryption.first().map(|k| (k, [7u8; 24]));
    let old = keys.encryption.get(1).map(|k| (k, [8u8; 24]));
    let seeds = [
        ("seed-v2-plain", Protection::NONE),
        (
            "seed-v2-signed",
            Protection {
                signing: keys.signing.as_ref(),
                encryption: None,
            },
        ),
        (
            "seed-v2-encrypted",
            Protection {
                signing: None,
                encryption: enc,
            },
        ),
        (
            "seed-v2-signed-encrypted",
            Protection {
                signing: keys.signing.as_ref(),
                encryption: enc,
            },
        ),
        (
            "seed-v2-old-key",
            Protection {
                signing: keys.signing.as_ref(),
                encryption: old,
            },
        ),
    ];
    let write = std::env::var_os("WRITE_SEEDS").is_some();
    for (name, protection) in seeds {
        let bytes = seal(export, protection).unwrap();
        let path = dir.join(name);
        if write {
            fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(
            fs::read(&path).ok().as_deref(),
            Some(&bytes[..]),
            "{name} is out of date: WRITE_SEEDS=1 cargo test"
        );
    }
}
