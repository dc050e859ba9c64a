//! The deterministic simulator shared by `tests/simulation.rs` (seeded
//! schedules) and `tests/process.rs` (scripted host scenarios).

#![allow(dead_code)]

pub mod checks;
pub mod host;
pub mod world;
