//! Deterministic simulation of whole fleets: seeded schedules with
//! latency, reordering, lost and duplicated requests and answers, stalled
//! threads, paused and restarted processes, config updates, wall clocks
//! jumping an hour both ways, a store that omits ETags and a CP that
//! flaps. Every invariant in `sim/checks.rs` is checked after every step;
//! at the end the world heals and every process must converge.
//!
//! `SIM_SEEDS=N` sets how many seeds `seeds` runs (default 2000);
//! a failing seed prints the command that replays it alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use sim::checks::Checker;
use sim::world::{Chaos, NodeSpec, World};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// After the chaos, this long for everything to settle: a lease TTL, the
/// longest export backoff (60 s) and some polls.
const CALM_MS: u64 = 70_000;

/// Then the CP stays down this long, storage healed: long enough for the
/// import's backoff (retry_max 2 s here) and a driver handoff.
const OUTAGE_MS: u64 = 10_000;

fn specs(seed: u64) -> Vec<NodeSpec> {
    let mut rng = fallback_config::rng::Rng::new(seed ^ 0x5eed);
    let n = 2 + (rng.next_u64() % 2) as usize;
    // One store for the fleet: GCS (with access tokens; RS256 signing is slow here) in a tenth of the
    // seeds, S3 in the others.
    let gcs = rng.next_u64().is_multiple_of(10);
    // Signed and encrypted snapshots in a third of the seeds.
    let protected = rng.next_u64().is_multiple_of(3);
    let mut specs: Vec<NodeSpec> = (0..n)
        .map(|i| {
            let bits = rng.next_u64();
            NodeSpec {
                import: bits & 1 == 1,
                export: bits & 2 == 2,
                node_id: (bits & 4 == 4).then(|| format!("node-{i}")),
                monotonic: bits % 10 != 9,
                gcs,
                // Longer than the driver lease in some: an import can then
                // still be out when another root takes over.
                storage_timeout_ms: if bits & 8 == 8 { 5_000 } else { 1_000 },
                protected,
                // A bootstrap service drives, the filter's roots only serve.
                service: bits & 16 == 16,
            }
        })
        .collect();
    specs[0].export = true;
    specs
}

/// Runs one seed to the end; panics (with the last events) on a violation.
fn run(seed: u64) -> World {
    let chaos = Chaos::default();
    let until = chaos.until_ms;
    let mut w = World::new(seed, specs(seed), chaos);
    if seed.is_multiple_of(2) {
        w.seed_other_versions();
    }
    w.run_until(until);
    // Healed but for the CP: importers must serve from storage.
    w.heal(false);
    w.run_until(until + OUTAGE_MS);
    if let Err(e) = Checker::imported(&w) {
        fail(&w, &format!("the import did not hold: {e}"));
    }
    w.heal(true);
    w.run_until(until + OUTAGE_MS + CALM_MS);
    if let Err(e) = Checker::converged(&mut w) {
        fail(&w, &format!("did not converge: {e}"));
    }
    w
}

fn fail(w: &World, what: &str) -> ! {
    let mut msg = format!("{what}\nlast events:\n");
    for line in &w.trace {
        msg.push_str(&format!("  {line}\n"));
    }
    panic!("{msg}");
}

fn seed_count() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn seeds() {
    let start = Instant::now();
    let count = seed_count();
    let first: u64 = std::env::var("SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    // Each thread takes every `threads`-th seed; the first failure wins.
    let results: Vec<Result<Totals, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut totals = Totals::default();
                    let mut seed = first + t;
                    while seed < first + count {
                        match catch_unwind(AssertUnwindSafe(|| run(seed))) {
                            Ok(w) => totals.add(&w),
                            Err(e) => return Err(failure(seed, e)),
                        }
                        seed += threads;
                    }
                    Ok(totals)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut totals = Totals::default();
    for r in results {
        match r {
            Ok(t) => totals.merge(&t),
            Err(msg) => panic!("{msg}"),
        }
    }
    eprintln!(
        "{count} seeds on {threads} threads: {} steps, {} imports, {} publishes, {} config.json writes in {:.1?}",
        totals.steps,
        totals.imports,
        totals.publishes,
        totals.writes,
        start.elapsed()
    );
    // The schedules exercise what the invariants are about.
    assert!(totals.imports > 0 && totals.publishes > count && totals.writes > count);
}

#[derive(Default)]
struct Totals {
    steps: u64,
    imports: u64,
    publishes: u64,
    writes: u64,
}

impl Totals {
    fn add(&mut self, w: &World) {
        self.steps += w.steps;
        self.imports += w.checker.imports_sent;
        self.publishes += w.checker.publishes;
        self.writes += w.store.config_writes.len() as u64;
    }

    fn merge(&mut self, o: &Totals) {
        self.steps += o.steps;
        self.imports += o.imports;
        self.publishes += o.publishes;
        self.writes += o.writes;
    }
}

fn failure(seed: u64, e: Box<dyn std::any::Any + Send>) -> String {
    let msg = e
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    format!(
        "seed {seed} failed:\n{msg}\nreplay: SIM_SEED={seed} cargo test -p fallback-config --test simulation replay -- --ignored --nocapture"
    )
}

/// Replays one seed: `SIM_SEED=<n> ... replay -- --ignored`.
#[test]
#[ignore = "replays the seed in SIM_SEED"]
fn replay() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        let w = run(seed);
        eprintln!(
            "seed {seed}: {} steps, {} tokens issued, converged",
            w.steps,
            w.tokens.issued.len()
        );
        for line in &w.trace {
            eprintln!("  {line}");
        }
    }
}
