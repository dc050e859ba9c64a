//! Leader election between several exporters (issue 3), in real Envoys
//! against s3s-fs, which enforces `If-None-Match: *` and `If-Match` on PUT
//! with 412. The scenarios taking a `StoreKind` also run on Azurite
//! (`If-None-Match: *` -> 409 BlobAlreadyExists, stale `If-Match` -> 412)
//! and on the GCS stack, whose front enforces `ifGenerationMatch` and adds
//! `x-goog-generation` / `Last-Modified` to downloads as GCS does (tests
//! `<scenario>::s3`, `::azure`, `::gcs`).
//!
//! Every exporter takes part once its CP has answered; only the leader
//! writes `config.json`; the lease is `<prefix>/0.1.0/election/lease.json`;
//! `config.json` carries the writer's `term`. Who leads is read from the
//! filter's own stats (`wasmcustom.fallback_config.*`) and cross-checked
//! against the lease object, the stored envelope and the log.
//!
//! Short election timings keep the file fast: lease TTL 3 s, renew every
//! 1 s, CP polled every 500 ms.
//! Needs ENVOY_BIN, S3S_FS_BIN, AZURITE_BIN, GCS_EMULATOR_BIN and
//! FALLBACK_CONFIG_WASM.
//!
//! Note on the store: s3s-fs checks a PUT's precondition and then writes
//! (a temp file renamed into place), not atomically. Two conditional PUTs
//! landing within the same few milliseconds could in theory both pass;
//! real S3 serialises them. The scenarios never depend on such a tie.

use envoy_test::control_plane::{gateway_config, Route};
use envoy_test::election::{number_after, FilterStats, BECAME_LEADER, LOST_LEADERSHIP, STOOD_DOWN};
use envoy_test::envelope::Envelope;
use envoy_test::envoy::Envoy;
use envoy_test::on_every_store;
use envoy_test::plugin::PluginConfig;
use envoy_test::stack::{
    echo_config, expect_healthy, expect_proxied, expect_store_auth_ok, wait_status, Stack, ECHO,
    OTHER,
};
use envoy_test::store::StoreKind;
use envoy_test::wait::{self, TIMEOUT};
use std::time::{Duration, Instant, SystemTime};

const LEASE_TTL_MS: u64 = 3000;
const RENEW_INTERVAL_MS: u64 = 1000;
const LEASE_TTL: Duration = Duration::from_millis(LEASE_TTL_MS);
const RENEW_INTERVAL: Duration = Duration::from_millis(RENEW_INTERVAL_MS);
/// Failover bound slack, on top of `lease_ttl + renew_interval` (the dead
/// leader renewed at most `lease_ttl` before its lease counts as expired,
/// and a follower reads the lease once per renew interval):
/// - the filter acts on 200 ms ticks: a follower's reads land on ticks (its
///   renew interval rounds up to one), and the new leader writes
///   `config.json` on a tick after winning the lease;
/// - HTTP dates (`Date`, `Last-Modified`) have 1-second resolution. Both
///   truncate, so the store-clock age can only look OLDER than the real
///   one (takeover up to 1 s early, checked below), not younger; the slack
///   also absorbs an implementation that rounds the other way;
/// - the lease PUT, the `config.json` PUT and our 100 ms polling of the
///   bucket.
const FAILOVER_SLACK: Duration = Duration::from_millis(1000);
const NODES: [&str; 3] = ["backup-1", "backup-2", "backup-3"];

#[track_caller]
fn ok<T>(r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Exporter with the short election timings and `node_id`.
fn election_plugin(stack: &Stack, node: &str) -> PluginConfig {
    let mut p = stack.exporter_plugin(node);
    p.lease_ttl_ms = Some(LEASE_TTL_MS);
    p.renew_interval_ms = Some(RENEW_INTERVAL_MS);
    p.poll_interval_ms = 500;
    p
}

#[track_caller]
fn stats(envoy: &Envoy) -> FilterStats {
    ok(FilterStats::read(envoy))
}

/// Starts backup-1..3 while the CP is down (so none takes part yet), then
/// brings the CP up: all three get the config within one poll interval
/// and contend for the lease at about the same time.
fn start_fleet(stack: &Stack) -> Vec<Envoy> {
    assert!(!stack.cp.is_up(), "start_fleet wants the CP down");
    let envoys: Vec<Envoy> = NODES
        .iter()
        .map(|n| stack.start_envoy(n, &election_plugin(stack, n)))
        .collect();
    for e in &envoys {
        // Every node is polling (and failing) before the CP comes up.
        ok(e.wait_log("CP unavailable", TIMEOUT));
        // Exporter only, CP down: nobody may touch storage yet.
        let s = stats(e);
        assert_eq!(
            (s.storage_requests_total, s.is_leader),
            (0, 0),
            "Envoy {} used storage or leads before its CP answered: {s:?}",
            e.name()
        );
    }
    ok(stack.cp.up().map_err(|e| e.to_string()));
    envoys
}

/// The node that leads, as every source agrees.
#[derive(Clone, Debug)]
struct Leader {
    index: usize,
    node: String,
    term: u64,
    envelope: Envelope,
}

/// Waits until all of these agree: `config.json` holds `revision`, written
/// by node X with term T; X's `is_leader` gauge is 1 and its `leader_term`
/// is T; the lease names X with term T; every other node in `alive` has
/// `is_leader` 0. Never pass a paused Envoy in `alive`.
fn wait_leader(
    stack: &Stack,
    envoys: &[Envoy],
    alive: &[usize],
    revision: &str,
    timeout: Duration,
) -> Leader {
    wait::until(
        &format!("one agreed leader having written revision {revision}"),
        timeout,
        || {
            let envelope = match stack.envelope() {
                None => return Err("no config.json".into()),
                Some(Err(e)) => return Err(format!("config.json is not an envelope: {e}")),
                Some(Ok(e)) => e,
            };
            if envelope.revision != revision {
                return Err(format!(
                    "config.json has revision {} by {}",
                    envelope.revision, envelope.exporter
                ));
            }
            let term = envelope
                .term
                .ok_or_else(|| format!("config.json has no \"term\": {envelope:?}"))?;
            let mut leaders = Vec::new();
            for &i in alive {
                let s = FilterStats::read(&envoys[i])?;
                if s.is_leader == 1 {
                    leaders.push((i, s));
                } else if s.is_leader != 0 {
                    return Err(format!("{}: is_leader = {}", NODES[i], s.is_leader));
                }
            }
            let [(index, s)] = leaders[..] else {
                let names: Vec<&str> = leaders.iter().map(|(i, _)| NODES[*i]).collect();
                return Err(format!("nodes with is_leader 1: {names:?}"));
            };
            if NODES[index] != envelope.exporter {
                return Err(format!(
                    "{} leads but config.json was written by {}",
                    NODES[index], envelope.exporter
                ));
            }
            if s.leader_term != term {
                return Err(format!(
                    "{} has leader_term {} but config.json has term {term}",
                    NODES[index], s.leader_term
                ));
            }
            match stack.lease() {
                None => return Err("no lease.json".into()),
                Some(Err(e)) => return Err(e),
                Some(Ok(l)) if l.holder != NODES[index] || l.term != term => {
                    return Err(format!(
                        "lease names {} term {}, config.json {} term {term}",
                        l.holder, l.term, NODES[index]
                    ))
                }
                Some(Ok(_)) => {}
            }
            Ok(Leader {
                index,
                node: NODES[index].to_string(),
                term,
                envelope: envelope.clone(),
            })
        },
    )
}

/// Waits until `config.json` holds `revision` written by another node than
/// `not_by`; returns it and when it was first seen.
fn wait_envelope_not_by(
    stack: &Stack,
    revision: &str,
    not_by: &str,
    timeout: Duration,
) -> (Envelope, Instant) {
    wait::until(
        &format!("config.json with revision {revision} written by a node other than {not_by}"),
        timeout,
        || match stack.envelope() {
            Some(Ok(e)) if e.revision == revision && e.exporter != not_by => {
                Ok((e, Instant::now()))
            }
            Some(Ok(e)) => Err(format!(
                "revision {} by {} term {:?}",
                e.revision, e.exporter, e.term
            )),
            Some(Err(e)) => Err(e),
            None => Err("no config.json".into()),
        },
    )
}

/// The terms a node logged `became leader (term N)` for.
fn became_leader_terms(envoy: &Envoy) -> Vec<u64> {
    envoy
        .log_lines(BECAME_LEADER)
        .iter()
        .filter_map(|l| number_after(l, BECAME_LEADER))
        .collect()
}

/// Scenario 1: three exporters, one writer; and what the steady state
/// costs in storage requests.
fn three_exporters_elect_exactly_one_writer(kind: StoreKind) {
    let stack = Stack::on(kind, "election-one-writer", false);
    let mut envoys = start_fleet(&stack);
    let leader = wait_leader(&stack, &envoys, &[0, 1, 2], "r1", TIMEOUT);
    eprintln!(
        "info: {} leads in term {} (exported_at {})",
        leader.node, leader.term, leader.envelope.exported_at
    );

    // A few renew intervals later, still exactly one writer, and the
    // stored object is the one it wrote.
    let written = stack.object();
    wait::holds_for(
        "one writer (exports_total > 0 on the leader only)",
        RENEW_INTERVAL * 3,
        || {
            for (i, e) in envoys.iter().enumerate() {
                let s = FilterStats::read(e)?;
                let expected = u64::from(i == leader.index);
                if s.exports_total != expected {
                    return Err(format!(
                        "{} has exports_total {} (leader is {}; one revision, one write)",
                        NODES[i], s.exports_total, leader.node
                    ));
                }
                if s.is_leader != expected {
                    return Err(format!("{} has is_leader {}", NODES[i], s.is_leader));
                }
            }
            if stack.object() != written {
                return Err(format!(
                    "config.json changed: {:?}",
                    stack.envelope().map(|e| e.map(|e| (e.exporter, e.term)))
                ));
            }
            Ok(())
        },
    );
    let logged: Vec<(&str, Vec<u64>)> = envoys
        .iter()
        .map(|e| (e.name(), became_leader_terms(e)))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    assert_eq!(
        logged,
        vec![(leader.node.as_str(), vec![leader.term])],
        "exactly one node must log `became leader`, once, for the stored term"
    );
    for (i, e) in envoys.iter().enumerate() {
        let exported = e.log_lines("exported revision r1");
        assert_eq!(
            exported.len(),
            usize::from(i == leader.index),
            "{}: {exported:?}",
            NODES[i]
        );
    }

    // Steady state: storage requests per node per renew interval, by the
    // filter's counter and by Envoy's own cluster stat; the leader's
    // renewals show in the lease.
    let intervals = 5u32;
    let before: Vec<FilterStats> = envoys.iter().map(stats).collect();
    let lease_before = ok(stack.lease().expect("lease.json"));
    let t0 = Instant::now();
    std::thread::sleep(RENEW_INTERVAL * intervals);
    let after: Vec<FilterStats> = envoys.iter().map(stats).collect();
    let measured = t0.elapsed().as_secs_f64() / RENEW_INTERVAL.as_secs_f64();
    let lease_after = ok(stack.lease().expect("lease.json"));
    let mut report = Vec::new();
    for i in 0..envoys.len() {
        let by_filter = after[i].storage_requests_total - before[i].storage_requests_total;
        let by_envoy = after[i].storage_cluster_rq_total - before[i].storage_cluster_rq_total;
        let role = if i == leader.index {
            "leader"
        } else {
            "follower"
        };
        report.push(format!(
            "{} ({role}): {by_filter} storage requests in {measured:.2} renew intervals = {:.2}/interval (Envoy cluster stat: {by_envoy})",
            NODES[i],
            by_filter as f64 / measured
        ));
        assert!(
            by_filter as f64 / measured <= 2.0,
            "{}: {by_filter} storage requests in {measured:.2} renew intervals (> 2 per interval)",
            NODES[i]
        );
        assert!(
            by_filter.abs_diff(by_envoy) <= 1,
            "{}: the filter counted {by_filter} storage requests, Envoy sent {by_envoy}",
            NODES[i]
        );
        // Followers read the lease every interval, the leader renews it:
        // about one request per interval each, never none.
        assert!(
            by_filter + 1 >= u64::from(intervals),
            "{}: only {by_filter} storage requests in {measured:.2} renew intervals",
            NODES[i]
        );
    }
    eprintln!(
        "info: steady state, renew interval {RENEW_INTERVAL_MS} ms:\n  {}",
        report.join("\n  ")
    );
    assert_eq!(
        (
            lease_after.holder.as_str(),
            lease_after.term,
            lease_after.ttl_ms
        ),
        (leader.node.as_str(), leader.term, LEASE_TTL_MS),
        "lease after the steady state: {lease_after:?}"
    );
    let renewals = lease_after.renewals - lease_before.renewals;
    assert!(
        renewals + 1 >= u64::from(intervals) && renewals <= u64::from(intervals) + 1,
        "the leader renewed {renewals} times in {measured:.2} renew intervals"
    );
    assert_eq!(stack.object(), written, "config.json was rewritten");
    expect_store_auth_ok(&stack);
    for e in &mut envoys {
        expect_healthy(e);
    }
}
on_every_store!(three_exporters_elect_exactly_one_writer);

/// Scenario 2: the leader crashes (SIGKILL); the CP publishes r2 at once;
/// a survivor takes over and exports r2 within ttl + renew (+ slack).
fn survivor_takes_over_after_leader_is_killed(kind: StoreKind) {
    let stack = Stack::on(kind, "election-failover-kill", false);
    let mut envoys = start_fleet(&stack);
    let old = wait_leader(&stack, &envoys, &[0, 1, 2], "r1", TIMEOUT);

    let killed_at = Instant::now();
    envoys[old.index].kill();
    stack.cp.set_config(&echo_config("r2"));
    let survivors: Vec<usize> = (0..NODES.len()).filter(|i| *i != old.index).collect();

    // Meanwhile, from the lease's modification times (the store's clock:
    // file times for s3s-fs and the GCS front's record, full precision;
    // Azurite's Last-Modified, whole seconds): when the dead leader last
    // renewed, and when a survivor took the lease over (its first write,
    // renewals 0).
    let mut last_renewal: Option<SystemTime> = None;
    let mut takeover: Option<SystemTime> = None;
    let (env, seen_at) = wait::until(
        &format!(
            "config.json with revision r2 written by a node other than {}",
            old.node
        ),
        TIMEOUT,
        || {
            let mtime = stack.lease_mtime();
            match stack.lease() {
                Some(Ok(l)) if l.holder == old.node => last_renewal = mtime,
                Some(Ok(l)) if l.renewals == 0 && takeover.is_none() => takeover = mtime,
                _ => {}
            }
            match stack.envelope() {
                Some(Ok(e)) if e.revision == "r2" && e.exporter != old.node => {
                    Ok((e, Instant::now()))
                }
                other => Err(format!("config.json: {other:?}")),
            }
        },
    );
    let failover = seen_at - killed_at;
    let bound = LEASE_TTL + RENEW_INTERVAL + FAILOVER_SLACK;
    let age = match (last_renewal, takeover) {
        (Some(r), Some(t)) => t.duration_since(r).ok(),
        _ => None,
    };
    eprintln!(
        "info: failover: {} (term {}) killed -> {} exported r2 in term {:?} after {:.2} s (bound {:.1} s = ttl {} ms + renew {} ms + slack {} ms); the lease was taken over at age {:?}",
        old.node,
        old.term,
        env.exporter,
        env.term,
        failover.as_secs_f64(),
        bound.as_secs_f64(),
        LEASE_TTL_MS,
        RENEW_INTERVAL_MS,
        FAILOVER_SLACK.as_millis(),
        age
    );
    assert!(
        failover <= bound,
        "failover took {failover:?}, more than lease_ttl + renew_interval + slack = {bound:?}"
    );
    // Not too early either: the lease must have been older than its TTL by
    // the store's clock. HTTP dates have 1 s resolution, so `Date` minus
    // `Last-Modified` can exceed the real age by up to 1 s, not more; our
    // own reading of the modification times adds their resolution.
    let age = age.expect("saw the dead leader's lease and the takeover");
    let resolution = stack.store.modified_resolution();
    assert!(
        age + Duration::from_secs(1) + resolution >= LEASE_TTL,
        "the lease was taken over at age {age:?} (measured to {resolution:?}), ttl {LEASE_TTL:?}"
    );

    let new = wait_leader(&stack, &envoys, &survivors, "r2", TIMEOUT);
    assert_ne!(new.node, old.node);
    assert!(
        new.term > old.term,
        "new term {} must be greater than the dead leader's {}",
        new.term,
        old.term
    );
    assert!(
        became_leader_terms(&envoys[new.index]).contains(&new.term),
        "{} did not log `became leader (term {})`",
        new.node,
        new.term
    );
    for &i in &survivors {
        let s = stats(&envoys[i]);
        assert_eq!(
            s.exports_total,
            u64::from(i == new.index),
            "{}: exports_total after the failover",
            NODES[i]
        );
        expect_healthy(&mut envoys[i]);
    }
    // The new leader serves and keeps exporting.
    let r3 = gateway_config(
        "r3",
        &[
            Route::new("echo", &["/echo"], ECHO),
            Route::new("other", &["/other"], OTHER),
        ],
    );
    stack.cp.set_config(&r3);
    let after = wait_leader(&stack, &envoys, &survivors, "r3", TIMEOUT);
    assert_eq!((after.index, after.term), (new.index, new.term));
    ok(wait_status(&envoys[new.index], "/other/x", 200, TIMEOUT));
    expect_proxied(&envoys[new.index], "GET", "/other/x", &[], OTHER);
    expect_store_auth_ok(&stack);
}
on_every_store!(survivor_takes_over_after_leader_is_killed);

/// Scenario 3: the leader freezes (SIGSTOP) past its lease; another node
/// takes over and exports r2; the old leader resumes (SIGCONT) and must
/// neither overwrite `config.json` nor keep acting as leader.
#[test]
fn resumed_stale_leader_never_overwrites_newer_config() {
    let stack = Stack::new("election-stale-leader", false);
    let mut envoys = start_fleet(&stack);
    let old = wait_leader(&stack, &envoys, &[0, 1, 2], "r1", TIMEOUT);
    let old_exports = stats(&envoys[old.index]).exports_total;
    assert_eq!(old_exports, 1);
    let others: Vec<usize> = (0..NODES.len()).filter(|i| *i != old.index).collect();

    ok(envoys[old.index].pause());
    let paused_at = Instant::now();
    stack.cp.set_config(&echo_config("r2"));
    wait_envelope_not_by(&stack, "r2", &old.node, TIMEOUT);
    let new = wait_leader(&stack, &envoys, &others, "r2", TIMEOUT);
    assert!(new.term > old.term, "{new:?} after {old:?}");
    // Frozen for well past the lease TTL: ttl + 2 renew intervals.
    let frozen_for = LEASE_TTL + RENEW_INTERVAL * 2;
    std::thread::sleep(frozen_for.saturating_sub(paused_at.elapsed()));

    let mark = envoys[old.index].log_mark();
    ok(envoys[old.index].resume());
    let resumed_at = Instant::now();
    eprintln!(
        "info: {} (term {}) frozen {:.1} s; {} leads in term {}",
        old.node,
        old.term,
        (resumed_at - paused_at).as_secs_f64(),
        new.node,
        new.term
    );
    let stored = stack.object();
    let stale = &envoys[old.index];
    let step_down = wait::until(
        &format!(
            "{} to log `{LOST_LEADERSHIP}` or `{STOOD_DOWN}` after resuming",
            old.node
        ),
        TIMEOUT,
        || {
            let mut lines = stale.log_lines_since(mark, LOST_LEADERSHIP);
            lines.extend(stale.log_lines_since(mark, STOOD_DOWN));
            lines.into_iter().next().ok_or_else(|| {
                format!(
                    "stats {:?}; log tail:\n{}",
                    FilterStats::read(stale),
                    stale.log_tail(10)
                )
            })
        },
    );
    eprintln!(
        "info: {} after {:.2} s: {step_down}",
        old.node,
        resumed_at.elapsed().as_secs_f64()
    );
    assert!(
        step_down.contains(&format!("term {}", old.term)),
        "the step-down line should name the old term {}: {step_down}",
        old.term
    );

    // Over several renew intervals: config.json keeps r2 and the new term,
    // the lease stays the new leader's, the old node writes nothing.
    wait::holds_for(
        "config.json and the lease stay the new leader's",
        RENEW_INTERVAL * 4,
        || {
            if stack.object() != stored {
                return Err(format!(
                    "config.json changed to {:?}",
                    stack
                        .envelope()
                        .map(|e| e.map(|e| (e.revision, e.exporter, e.term)))
                ));
            }
            match stack.lease() {
                Some(Ok(l)) if l.holder == new.node && l.term == new.term => {}
                other => return Err(format!("lease is now {other:?}")),
            }
            let s = FilterStats::read(stale)?;
            if s.exports_total != old_exports || s.is_leader != 0 {
                return Err(format!("{} after resuming: {s:?}", old.node));
            }
            Ok(())
        },
    );
    let env = ok(stack.envelope().expect("config.json"));
    assert_eq!(
        (env.revision.as_str(), env.exporter.as_str(), env.term),
        ("r2", new.node.as_str(), Some(new.term))
    );
    for needle in ["exported revision", BECAME_LEADER] {
        let lines = stale.log_lines_since(mark, needle);
        assert!(
            lines.is_empty(),
            "{} logged {needle:?} after resuming:\n{}",
            old.node,
            lines.join("\n")
        );
    }

    // The fleet still works: r3 is exported by the new leader, not by the
    // old one.
    stack.cp.set_config(&echo_config("r3"));
    let after = wait_leader(&stack, &envoys, &[0, 1, 2], "r3", TIMEOUT);
    assert_eq!((after.index, after.term), (new.index, new.term));
    assert_eq!(stats(&envoys[old.index]).exports_total, old_exports);
    for e in &mut envoys {
        expect_healthy(e);
    }
}

/// Scenario 4: a node that imports AND exports. CP down at start: it
/// imports the stored config and serves it, without taking part in the
/// election; CP up with r2: it becomes leader and exports r2.
#[test]
fn importer_exporter_imports_then_leads_and_exports() {
    let stack = Stack::new("election-import-export", false);
    stack.write_envelope_with_term("r1", &echo_config("r1"), "backup-old", 1);
    let mut plugin = election_plugin(&stack, "homog-1");
    plugin.import = true;
    let mut envoy = stack.start_envoy("homog-1", &plugin);

    ok(envoy.wait_log("imported revision r1", TIMEOUT));
    ok(wait_status(&envoy, "/echo/a", 200, Duration::from_secs(2)));
    expect_proxied(&envoy, "GET", "/echo/a", &[], ECHO);
    // The CP has not answered: no election, no write, the import was the
    // only storage request.
    let stored = stack.object();
    wait::holds_for(
        "no election while the CP is down",
        RENEW_INTERVAL * 2,
        || {
            if stack.lease().is_some() {
                return Err("lease.json exists".into());
            }
            if stack.object() != stored {
                return Err("config.json changed".into());
            }
            let s = FilterStats::read(&envoy)?;
            if (s.storage_requests_total, s.is_leader, s.exports_total) != (1, 0, 0) {
                return Err(format!("stats: {s:?} (only the import GET expected)"));
            }
            Ok(())
        },
    );

    let r2 = gateway_config(
        "r2",
        &[
            Route::new("echo", &["/echo"], ECHO),
            Route::new("other", &["/other"], OTHER),
        ],
    );
    stack.cp.set_config(&r2);
    ok(stack.cp.up().map_err(|e| e.to_string()));
    let env = ok(stack.wait_envelope("r2", TIMEOUT));
    assert_eq!(env.exporter, "homog-1");
    assert_eq!(env.config_raw, r2.trim());
    let term = env.term.expect("config.json written with a term");
    assert!(term >= 1, "term {term}");
    ok(envoy.wait_log(BECAME_LEADER, TIMEOUT));
    assert_eq!(became_leader_terms(&envoy), vec![term]);
    let s = stats(&envoy);
    assert_eq!(
        (s.is_leader, s.leader_term, s.exports_total),
        (1, term, 1),
        "{s:?}"
    );
    let lease = ok(stack.lease().expect("lease.json"));
    assert_eq!((lease.holder.as_str(), lease.term), ("homog-1", term));
    // It serves the CP's config now, and imported only once.
    ok(wait_status(&envoy, "/other/b", 200, TIMEOUT));
    expect_proxied(&envoy, "GET", "/other/b", &[], OTHER);
    assert_eq!(envoy.log_lines("imported revision").len(), 1);
    expect_healthy(&mut envoy);
}

/// Terms only grow, also when the lease object is gone (a lifecycle rule
/// on `election/` removed it after every node left) while `config.json`
/// still holds a high term: the next leader must still be able to export,
/// in a term above the stored one.
#[test]
fn terms_keep_growing_after_the_lease_object_is_gone() {
    let stack = Stack::new("election-lease-gone", true);
    let old = gateway_config("r0", &[Route::new("old", &["/old"], OTHER)]);
    stack.write_envelope_with_term("r0", &old, "backup-gone", 7);
    assert!(stack.lease().is_none());
    let started = Instant::now();
    let mut envoy = stack.start_envoy("backup-1", &election_plugin(&stack, "backup-1"));
    let env = ok(stack.wait_envelope("r1", TIMEOUT));
    eprintln!(
        "info: r1 exported over a term-7 config.json in term {:?}, {:.1} s after start",
        env.term,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(env.exporter, "backup-1");
    let term = env.term.expect("config.json written with a term");
    assert!(term > 7, "term {term} does not exceed the stored term 7");
    let s = stats(&envoy);
    assert_eq!((s.is_leader, s.leader_term), (1, term), "{s:?}");
    let lease = ok(stack.lease().expect("lease.json"));
    assert_eq!((lease.holder.as_str(), lease.term), ("backup-1", term));
    expect_healthy(&mut envoy);
}
