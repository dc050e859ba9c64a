//! The invariants, checked after every step of the simulation.
//!
//! 1. At most one effective `config.json` writer per term.
//! 2. The stored term and CP revision never go back.
//! 3. Nothing is published without the driver lease: a generation is
//!    handed out only by a CAS on the driver record by the root that held
//!    it, only that root writes a record or counter of that generation,
//!    and records and counter only move to higher generations (so no
//!    generation is ever reused).
//! 4. No import request after the CP answered the process.
//! 5. At most one import in flight per process.
//! 6. (at the end, after the world healed) every worker converges to the
//!    newest published record, which holds the CP's newest revision, and
//!    the store holds it too.

use super::world::{Proc, World, THREADS};
use fallback_config::action::CallKind;
use fallback_config::published::{
    self, DriverRecord, Source, CONFIG_KEY, DRIVER_KEY, GENERATION_KEY,
};
use std::collections::HashMap;

#[derive(Default, Debug)]
pub struct Checker {
    /// Per process: generation → the owner that was handed it.
    allocated: HashMap<usize, HashMap<u64, String>>,
    /// config.json writes already checked.
    checked_writes: usize,
    /// term → writer.
    term_writers: HashMap<u64, String>,
    pub imports_sent: u64,
    pub publishes: u64,
}

impl Checker {
    pub fn reset_proc(&mut self, p: usize) {
        self.allocated.remove(&p);
    }

    pub fn on_kill(&mut self, p: usize) {
        self.allocated.remove(&p);
    }

    /// A call the host just dispatched for process `p` (already in its
    /// root's table).
    pub fn on_send(&mut self, p: usize, kind: CallKind, proc: &Proc) -> Result<(), String> {
        if kind != CallKind::Import {
            return Ok(());
        }
        self.imports_sent += 1;
        let in_flight = proc
            .roots
            .iter()
            .filter(|r| r.alive)
            .flat_map(|r| r.calls.values())
            .filter(|c| c.kind == CallKind::Import)
            .count();
        if in_flight > 1 {
            return Err(format!(
                "invariant 5: {in_flight} imports in flight in process {p}"
            ));
        }
        let driver = proc.shared.bytes(DRIVER_KEY).and_then(DriverRecord::decode);
        let cp_published = proc
            .shared
            .bytes(CONFIG_KEY)
            .and_then(|r| published::decode(r).ok())
            .is_some_and(|r| r.meta.source == Source::ControlPlane);
        if driver.is_some_and(|d| d.cp_answered) || cp_published {
            return Err(format!(
                "invariant 4: process {p} sent an import after the CP answered it"
            ));
        }
        Ok(())
    }

    /// A shared-data write that succeeded, by the root whose lease owner
    /// name is `owner`.
    pub fn on_shared_write(
        &mut self,
        p: usize,
        key: &str,
        before: Option<&[u8]>,
        after: &[u8],
        owner: &str,
        _uid: u32,
    ) -> Result<(), String> {
        let allocated = self.allocated.entry(p).or_default();
        match key {
            DRIVER_KEY => {
                let new = DriverRecord::decode(after)
                    .ok_or_else(|| "the driver record written does not parse".to_string())?;
                if new.owner != owner {
                    return Err(format!(
                        "invariant 3: {owner} wrote a driver record naming {}",
                        new.owner
                    ));
                }
                let old = before.and_then(DriverRecord::decode);
                let (old_gen, held) = match &old {
                    Some(o) => (o.generation, o.owner == owner && !o.released),
                    None => (0, false),
                };
                if let Some(o) = &old {
                    if new.generation < o.generation
                        || new.epoch < o.epoch
                        || (o.cp_answered && !new.cp_answered)
                        || new.import_attempts < o.import_attempts
                    {
                        return Err(format!(
                            "invariant 3: the driver record went back: {o:?} -> {new:?}"
                        ));
                    }
                }
                if new.generation != old_gen {
                    if !held {
                        return Err(format!(
                            "invariant 3: {owner} was handed generation {} without holding the lease ({old:?})",
                            new.generation
                        ));
                    }
                    if allocated
                        .insert(new.generation, owner.to_string())
                        .is_some()
                    {
                        return Err(format!(
                            "invariant 3: generation {} handed out twice",
                            new.generation
                        ));
                    }
                    self.publishes += 1;
                }
            }
            CONFIG_KEY | GENERATION_KEY => {
                let gen_of = |b: &[u8]| match key {
                    CONFIG_KEY => published::record_generation(b),
                    _ => published::decode_generation(b),
                };
                let new = gen_of(after).ok_or_else(|| format!("{key} written unparseable"))?;
                if let Some(old) = before.and_then(gen_of) {
                    if new <= old {
                        return Err(format!(
                            "invariant 3: {key} moved from generation {old} to {new}"
                        ));
                    }
                }
                match allocated.get(&new) {
                    Some(o) if o == owner => {}
                    other => {
                        return Err(format!(
                            "invariant 3: {owner} published generation {new} handed to {other:?}"
                        ))
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Invariants 1 and 2 over the store's accepted writes, and the rule
    /// behind them: no write without a precondition.
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        if let Some(write) = w.store.unconditional_writes.first() {
            return Err(format!("invariant 1: an unconditional write: {write}"));
        }
        if w.store.reads.iter().any(|k| k.contains("/9.9.9/")) {
            return Err("an importer read a snapshot of a newer version".into());
        }
        let writes = &w.store.config_writes;
        for i in self.checked_writes..writes.len() {
            let cur = &writes[i];
            match self.term_writers.get(&cur.term) {
                Some(other) if *other != cur.writer => {
                    return Err(format!(
                        "invariant 1: two writers in term {}: {other} and {}",
                        cur.term, cur.writer
                    ))
                }
                _ => {
                    self.term_writers.insert(cur.term, cur.writer.clone());
                }
            }
            if i > 0 {
                let prev = &writes[i - 1];
                if cur.term < prev.term {
                    return Err(format!(
                        "invariant 2: config.json term went back: {prev:?} then {cur:?}"
                    ));
                }
                if cur.revision < prev.revision {
                    return Err(format!(
                        "invariant 2: config.json revision went back: {prev:?} then {cur:?}"
                    ));
                }
            }
        }
        self.checked_writes = writes.len();
        Ok(())
    }

    /// The import holds when it is needed: with the CP still down, every
    /// importing process serves a config once storage has one it can use.
    pub fn imported(w: &World) -> Result<(), String> {
        let usable = w.store.objects.keys().any(|k| {
            k == &format!("pre/{}/config.json", env!("CARGO_PKG_VERSION"))
                || k == "pre/0.0.9/config.json"
        });
        if !usable {
            return Ok(());
        }
        for proc in w.procs.iter().filter(|p| p.alive && p.spec.import) {
            if proc.shared.bytes(CONFIG_KEY).is_none() {
                return Err(format!(
                    "{}: imports on, the CP down, a snapshot in storage, and nothing served",
                    proc.id()
                ));
            }
        }
        Ok(())
    }

    /// Invariant 6, once the world has been calm for long enough.
    pub fn converged(w: &mut World) -> Result<(), String> {
        let want = format!("r{}", w.cp.revision);
        for p in 0..w.procs.len() {
            let proc = &mut w.procs[p];
            let id = proc.id();
            let drivers = proc
                .roots
                .iter()
                .filter(|r| r.alive && r.core.is_driver())
                .count();
            if drivers != 1 {
                return Err(format!("{id}: {drivers} driving roots"));
            }
            let counter = proc
                .shared
                .bytes(GENERATION_KEY)
                .and_then(published::decode_generation);
            let record = proc
                .shared
                .bytes(CONFIG_KEY)
                .and_then(|r| published::decode(r).ok().map(|r| r.meta));
            let Some(meta) = record else {
                return Err(format!("{id}: nothing published"));
            };
            if counter != Some(meta.generation) {
                return Err(format!(
                    "{id}: counter {counter:?} but record generation {}",
                    meta.generation
                ));
            }
            if meta.revision != want {
                return Err(format!(
                    "{id}: publishes {} but the CP serves {want}",
                    meta.revision
                ));
            }
            for thread in 0..THREADS {
                let Some(i) = proc.current_root(thread) else {
                    return Err(format!("{id}: thread {thread} has no root"));
                };
                let root = &mut proc.roots[i];
                // The next tick's look (requests no longer read once a
                // config is loaded).
                root.worker.begin_tick();
                while let Some(key) = root.worker.poll_read() {
                    root.worker
                        .handle_read(proc.shared.bytes(key).map(<[u8]>::to_vec));
                }
                if root.worker.generation() != Some(meta.generation) {
                    return Err(format!(
                        "{id}: worker {thread} serves {:?}, newest is {}",
                        root.worker.generation(),
                        meta.generation
                    ));
                }
            }
        }
        let exporters = w.procs.iter().any(|p| p.spec.export);
        if exporters {
            let stored = w
                .store
                .config_writes
                .last()
                .map(|c| format!("r{}", c.revision));
            if stored.as_deref() != Some(want.as_str()) {
                return Err(format!("the store holds {stored:?}, the CP serves {want}"));
            }
        }
        Ok(())
    }
}
