//! The process model, scripted: several root contexts of one proxy
//! process plus Envoy's canary, all running the real core against
//! simulated shared data with Envoy's semantics (see `sim/`), no faults
//! but the one each scenario injects. Every invariant of the simulator is
//! checked after every step here too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use fallback_config::action::CallKind;
use fallback_config::event::{DriverLoss, Event};
use fallback_config::process::WORKER_TICK;
use fallback_config::published::{self, CONFIG_KEY};
use sim::checks::Checker;
use sim::world::{Chaos, NodeSpec, SimRoot, World, SERVICE_THREAD, TICK_MS};

fn calm(specs: Vec<NodeSpec>) -> World {
    World::new(
        7,
        specs,
        Chaos {
            until_ms: 0,
            ..Chaos::default()
        },
    )
}

fn spec(import: bool, export: bool) -> NodeSpec {
    NodeSpec {
        import,
        export,
        node_id: None,
        monotonic: true,
        gcs: false,
        storage_timeout_ms: 1_000,
        protected: false,
        service: false,
    }
}

/// (uid, node id) of every `DriverTaken` in process `p`, by root age.
fn takeovers(w: &World, p: usize) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for r in &w.procs[p].roots {
        for e in &r.events {
            if let Event::DriverTaken { node_id, .. } = e {
                out.push((r.uid, node_id.clone()));
            }
        }
    }
    out
}

fn published_generation(w: &World, p: usize) -> Option<u64> {
    w.procs[p]
        .shared
        .bytes(CONFIG_KEY)
        .and_then(published::record_generation)
}

fn root(w: &World, p: usize, uid: u32) -> &SimRoot {
    w.procs[p].roots.iter().find(|r| r.uid == uid).unwrap()
}

fn root_events(w: &World, p: usize, uid: u32) -> &[Event] {
    &root(w, p, uid).events
}

/// Calls of `kind` process `p` sent so far.
fn sent(w: &World, p: usize, kind: CallKind) -> usize {
    w.procs[p]
        .roots
        .iter()
        .flat_map(|r| &r.sent)
        .filter(|(k, _)| *k == kind)
        .count()
}

/// Runs until `done` holds, in 10 ms steps, at most `limit` ms; returns
/// the time it took.
fn run_until(w: &mut World, limit: u64, done: impl Fn(&World) -> bool) -> Option<u64> {
    let start = w.now;
    while w.now - start <= limit {
        if done(w) {
            return Some(w.now - start);
        }
        let next = w.now + 10;
        w.run_until(next);
    }
    None
}

#[test]
fn several_roots_and_the_canary_make_one_driver_and_one_poll_per_interval() {
    let mut w = calm(vec![spec(true, true)]);
    w.run_until(2_000);
    let before = sent(&w, 0, CallKind::CpPoll);
    w.run_until(12_000);
    let roots = &w.procs[0].roots;
    let drivers: Vec<_> = roots.iter().filter(|r| r.core.is_driver()).collect();
    assert_eq!(drivers.len(), 1, "one driver");
    assert_eq!(takeovers(&w, 0).len(), 1, "taken once, never handed around");
    let polls = sent(&w, 0, CallKind::CpPoll) - before;
    // 10 s at a 500 ms interval, on 200 ms ticks.
    assert!((19..=21).contains(&polls), "{polls} CP polls in 10 s");
    for r in roots.iter().filter(|r| !r.core.is_driver()) {
        assert!(r.sent.is_empty(), "root {} sent calls", r.context_id);
    }
    let canary = roots.iter().find(|r| r.canary).unwrap();
    assert_eq!(canary.writes, 0, "the canary wrote shared data");
    Checker::converged(&mut w).unwrap();
}

/// A bootstrap service (`role: driver`) drives alone: the filter's roots
/// (`role: worker`) never read or take the driver record, not even while
/// the service's thread is stuck past the lease TTL; they serve what it
/// publishes, and a new revision reaches every worker after the service
/// runs again.
#[test]
fn a_bootstrap_service_drives_and_workers_never_do() {
    let mut w = calm(vec![NodeSpec {
        service: true,
        ..spec(true, true)
    }]);
    w.run_until(3_000);
    let roots = &w.procs[0].roots;
    let service = roots.iter().find(|r| r.thread == SERVICE_THREAD).unwrap();
    assert!(service.core.is_driver(), "the service drives");
    let service = service.uid;
    Checker::converged(&mut w).unwrap();
    w.cp.revision = 2;
    w.stall_root(0, service, w.now + 6_000);
    w.run_until(w.now + 5_000);
    let workers = || {
        w.procs[0]
            .roots
            .iter()
            .filter(|r| r.thread != SERVICE_THREAD)
    };
    for r in workers().filter(|r| !r.canary) {
        assert_eq!(r.tick_ms, WORKER_TICK.as_millis() as u64, "a worker's tick");
    }
    for r in workers() {
        assert!(!r.core.is_driver(), "worker {} drives", r.context_id);
        assert_eq!(r.writes, 0, "worker {} wrote shared data", r.context_id);
        assert!(r.sent.is_empty(), "worker {} sent calls", r.context_id);
    }
    assert_eq!(takeovers(&w, 0).len(), 1, "the service's takeover only");
    let service_root = root(&w, 0, service);
    assert_eq!(
        service_root.worker.generation(),
        None,
        "the service routes nothing"
    );
    w.run_until(w.now + 4_000);
    let generation = published_generation(&w, 0);
    assert_eq!(
        generation,
        Some(2),
        "the service published r2 after its stall"
    );
    Checker::converged(&mut w).unwrap();
}

/// A driver whose thread stalls with a CP answer in flight: another root
/// takes over within the lease TTL plus a tick, and the stalled root,
/// once it runs again, handles that late answer without publishing it.
#[test]
fn a_stalled_driver_is_replaced_and_never_publishes_late() {
    let mut w = calm(vec![spec(false, false)]);
    w.run_until(3_000);
    let old = w.driver(0).unwrap();
    w.cp.revision = 2;
    // Stall it right after it sent its next CP poll.
    let polls = |w: &World| root(w, 0, old).sent.len();
    let before = polls(&w);
    run_until(&mut w, 2_000, |w| polls(w) > before).expect("a poll");
    let stalled_at = w.now;
    w.stall_root(0, old, stalled_at + 6_000);
    let took = run_until(&mut w, 5_000, |w| {
        takeovers(w, 0).iter().any(|(u, _)| *u != old)
    })
    .expect("no takeover");
    assert!(
        took <= 2_000 + 2 * TICK_MS + 100,
        "took over {took} ms after the stall"
    );
    w.run_until(stalled_at + 9_000);
    let events = root_events(&w, 0, old);
    let late = events
        .iter()
        .filter(|e| matches!(e, Event::Published { revision, .. } if revision == "r2"))
        .count();
    assert_eq!(late, 0, "the stalled root published: {events:?}");
    assert!(
        events.contains(&Event::DriverLost {
            root: root(&w, 0, old).context_id,
            reason: DriverLoss::TakenOver
        }),
        "{events:?}"
    );
    Checker::converged(&mut w).unwrap();
}

#[test]
fn a_root_shutting_down_hands_over_at_once() {
    let mut w = calm(vec![spec(false, false)]);
    w.run_until(3_000);
    let old = w.driver(0).unwrap();
    w.shutdown_root(0, old);
    let took = run_until(&mut w, 3_000, |w| {
        takeovers(w, 0).iter().any(|(u, _)| *u != old)
    })
    .expect("no takeover");
    assert!(
        took <= 2 * TICK_MS + 50,
        "took {took} ms, not a tick or two"
    );
    w.run_until(w.now + 2_000);
    let generation = published_generation(&w, 0);
    assert_eq!(generation, Some(1), "the new driver republished");
}

/// An ECDS update replaces every root context of the process: the new
/// driver keeps the node's id, serves what was published, takes the
/// node's election lease back at once (no TTL wait) and never imports.
#[test]
fn a_config_update_keeps_config_identity_and_leadership() {
    let mut w = calm(vec![spec(true, true), spec(false, true)]);
    w.run_until(8_000);
    let p = (0..2)
        .find(|&p| {
            w.events(p)
                .iter()
                .any(|(_, e)| matches!(e, Event::BecameLeader { .. }))
        })
        .expect("a leader");
    let generation = published_generation(&w, p);
    let writes = w.store.config_writes.len();
    let at = w.now;
    w.reconfigure(p);
    let back = run_until(&mut w, 5_000, |w| {
        w.procs[p].roots.iter().filter(|r| r.alive).any(|r| {
            r.events
                .iter()
                .any(|e| matches!(e, Event::BecameLeader { .. }))
        })
    })
    .expect("leadership not taken back");
    assert!(back < 3_000, "waited {back} ms (the lease TTL is 3 s)");
    w.run_until(at + 8_000);
    let ids: Vec<String> = takeovers(&w, p).into_iter().map(|(_, n)| n).collect();
    assert!(
        ids.len() >= 2 && ids.iter().all(|n| *n == ids[0]),
        "{ids:?}"
    );
    assert_eq!(published_generation(&w, p), generation, "republished");
    assert_eq!(
        w.store.config_writes.len(),
        writes,
        "re-exported the same config"
    );
    let imports = sent(&w, p, CallKind::Import);
    assert_eq!(imports, 0);
    Checker::converged(&mut w).unwrap();
}

/// The driver's import is in flight when its thread stalls past the
/// lease, with a storage timeout (5 s) longer than the lease (2 s): its
/// answer is never applied, the new driver sends no import while the
/// first may still be out (its timeout plus a second from the takeover),
/// then imports and serves.
#[test]
fn a_lease_lost_with_the_import_in_flight_applies_nothing() {
    let importer = NodeSpec {
        storage_timeout_ms: 5_000,
        ..spec(true, false)
    };
    let mut w = calm(vec![importer]);
    w.cp.up = false;
    w.seed_other_versions();
    run_until(&mut w, 5_000, |w| sent(w, 0, CallKind::Import) > 0).expect("an import");
    let old = w.driver(0).unwrap();
    w.stall_root(0, old, w.now + 9_000);
    let took = run_until(&mut w, 5_000, |w| {
        takeovers(w, 0).iter().any(|(u, _)| *u != old)
    })
    .expect("no takeover");
    let taken_at = w.now;
    assert!(took < 3_000, "took over {took} ms after the stall");
    w.run_until(taken_at + 15_000);
    let new_imports: Vec<u64> = w.procs[0]
        .roots
        .iter()
        .filter(|r| r.uid != old)
        .flat_map(|r| r.sent.iter())
        .filter(|(k, _)| *k == CallKind::Import)
        .map(|(_, at)| *at)
        .collect();
    let first = *new_imports.first().expect("the new driver never imported");
    assert!(
        first >= taken_at + 5_000 + 1_000 - 20,
        "the new driver imported {} ms after taking over, while the first import could be out",
        first - taken_at
    );
    let old_events = root_events(&w, 0, old);
    assert!(
        !old_events
            .iter()
            .any(|e| matches!(e, Event::Published { .. } | Event::Imported { .. })),
        "{old_events:?}"
    );
    // The older version's snapshot is what storage has: it serves r0.
    let record = w.procs[0]
        .shared
        .bytes(CONFIG_KEY)
        .map(|r| published::decode(r).map(|r| r.meta.revision));
    assert_eq!(record, Some(Ok("r0".to_string())));
}

/// With the host's monotonic clock, the wall clock jumping an hour
/// forward, then two hours back, changes no lease decision: no handoff,
/// no lost leadership, no new term.
#[test]
fn wall_clock_jumps_change_no_lease_decision() {
    let mut w = calm(vec![spec(false, true), spec(false, true)]);
    w.run_until(10_000);
    let count = |w: &World| {
        let mut n = 0;
        for p in 0..2 {
            n += w
                .events(p)
                .iter()
                .filter(|(_, e)| {
                    matches!(
                        e,
                        Event::DriverTaken { .. }
                            | Event::DriverLost { .. }
                            | Event::BecameLeader { .. }
                            | Event::LostLeadership { .. }
                    )
                })
                .count();
        }
        n
    };
    let before = count(&w);
    let terms = w.store.config_writes.last().map(|c| c.term);
    for p in 0..2 {
        w.procs[p].wall_offset_ms += 3_600_000;
    }
    w.run_until(15_000);
    for p in 0..2 {
        w.procs[p].wall_offset_ms -= 7_200_000;
    }
    w.cp.revision = 2;
    w.run_until(25_000);
    assert_eq!(count(&w), before, "a lease decision changed");
    assert_eq!(w.store.config_writes.last().map(|c| c.term), terms);
    let jumps = (0..2)
        .flat_map(|p| w.events(p))
        .filter(|(_, e)| matches!(e, Event::WallClockJumped { .. }))
        .count();
    assert_eq!(jumps, 4, "each driver reports each jump once");
    Checker::converged(&mut w).unwrap();
}

/// Without a monotonic clock from the host, a wall clock set back still
/// changes nothing (a forward jump may hand the lease around, safely).
#[test]
fn a_wall_clock_set_back_changes_nothing_on_a_derived_clock() {
    let derived = NodeSpec {
        monotonic: false,
        ..spec(false, true)
    };
    let mut w = calm(vec![derived]);
    w.run_until(8_000);
    let events = w.events(0).len();
    let leader_events = |w: &World| {
        w.events(0)
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::DriverTaken { .. }
                        | Event::DriverLost { .. }
                        | Event::LostLeadership { .. }
                )
            })
            .count()
    };
    let before = leader_events(&w);
    w.procs[0].wall_offset_ms -= 3_600_000;
    w.cp.revision = 2;
    w.run_until(16_000);
    assert!(w.events(0).len() > events);
    assert_eq!(leader_events(&w), before);
    Checker::converged(&mut w).unwrap();
}

/// The default node id is one per process: every root that drives it uses
/// the same, and two processes never share one.
#[test]
fn the_default_node_id_is_stable_per_process() {
    let mut w = calm(vec![spec(false, true), spec(false, true)]);
    w.run_until(3_000);
    let old = w.driver(0).unwrap();
    w.shutdown_root(0, old);
    w.run_until(6_000);
    let ids: Vec<Vec<String>> = (0..2)
        .map(|p| takeovers(&w, p).into_iter().map(|(_, n)| n).collect())
        .collect();
    assert_eq!(ids[0].len(), 2);
    assert_eq!(ids[0][0], ids[0][1]);
    assert_ne!(ids[0][0], ids[1][0]);
}

/// Start-up: the first CP request goes out on the first tick (the canary
/// VM never ticks, so nothing can go out at configure time), and the
/// import follows the CP's failure at once.
#[test]
fn the_first_cp_poll_goes_out_on_the_first_tick() {
    let mut w = calm(vec![spec(true, false)]);
    let t = run_until(&mut w, 2_000, |w| sent(w, 0, CallKind::CpPoll) > 0);
    // The first tick (10 ms) plus the simulator's timer jitter (up to 20
    // ms) and its 10 ms steps: far sooner than one 200 ms tick.
    assert!(t.is_some_and(|t| t <= 40), "first CP poll at {t:?} ms");
}
