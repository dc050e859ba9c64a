//! The one monotonic clock every timer runs on, derived at the boundary
//! from what the host says the time is.
//!
//! Timers (CP poll, export delay and backoff, lease validity, token
//! renewal, answers that never came) are [`Instant`]s. Wall time
//! ([`Timestamp`]) is used only where a protocol needs it: signatures,
//! RFC 3339 and HTTP dates, JWT claims. So a wall clock set back or forward
//! by an hour changes no lease decision.
//!
//! The shell hands every callback's [`HostTime`] to [`Clock::read`]:
//! - Envoy answers WASI `clock_time_get(MONOTONIC)` with its steady clock,
//!   shared by every thread of the process: that reading is used as is
//!   ([`ClockSource::HostMonotonic`]).
//! - A host that answers it with an error gets a clock derived from its
//!   wall readings ([`ClockSource::DerivedFromWall`]): a reading that went
//!   back advances nothing, so a clock set back never extends a lease or
//!   delays a timer by the jump. A jump forward does count as time passed:
//!   a wall clock cannot tell it from a stalled thread or a paused process,
//!   and treating a real stall as short would let a root act on a lease it
//!   may have lost. So on such a host a forward jump can end a lease early
//!   (another root drives, the leader re-takes its lease: churn, never two
//!   writers). With Envoy's monotonic clock neither jump changes anything.

use crate::time::Timestamp;
use std::time::Duration;

/// Milliseconds on the process's monotonic clock, from an arbitrary origin.
/// Only differences mean anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Instant(self.0.saturating_add(millis(d)))
    }

    /// `self - d`, saturating at the origin.
    pub fn minus(self, d: Duration) -> Self {
        Instant(self.0.saturating_sub(millis(d)))
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the host said, read once per callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTime {
    /// The host's monotonic clock in nanoseconds (WASI `clock_time_get`
    /// with the monotonic clock id), or `None` when the host refused.
    pub monotonic_ns: Option<u64>,
    /// The host's wall clock.
    pub wall: Timestamp,
}

/// The time as the core sees it during one callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Drives every timer.
    pub mono: Instant,
    /// For protocols only (signatures, dates).
    pub wall: Timestamp,
}

impl Now {
    /// A `Now` at the monotonic origin with this wall time (signing
    /// tests, where only the wall clock matters).
    pub fn from_wall(wall: Timestamp) -> Now {
        Now {
            mono: Instant::ZERO,
            wall,
        }
    }

    /// A `Now` for tests and simulations: both clocks at `ms`, the wall
    /// clock counted from 2027-01-15 so dates look real.
    pub fn at_millis(ms: u64) -> Now {
        Now {
            mono: Instant(ms),
            wall: Timestamp::from_secs(1_800_000_000).plus(Duration::from_millis(ms)),
        }
    }
}

/// Where the monotonic readings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    HostMonotonic,
    DerivedFromWall,
}

impl ClockSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::HostMonotonic => "host monotonic clock",
            ClockSource::DerivedFromWall => "derived from the wall clock",
        }
    }
}

/// A wall clock that disagrees with the monotonic one by more than this
/// between two readings is reported as having jumped.
const JUMP_REPORT: Duration = Duration::from_secs(2);

/// What [`Clock::read`] noticed besides the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockNotice {
    /// The first reading chose this source.
    Source(ClockSource),
    /// The wall clock moved this many milliseconds more (positive) or less
    /// (negative) than the monotonic clock since the last reading.
    WallJumped { by_ms: i64 },
}

/// Turns host readings into [`Now`]s; one per root context.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    last: Option<(Now, ClockSource)>,
}

impl Clock {
    pub fn new() -> Self {
        Clock::default()
    }

    /// The source chosen by the first reading, if any yet.
    pub fn source(&self) -> Option<ClockSource> {
        self.last.map(|(_, s)| s)
    }

    /// The latest reading (`Now::at_millis(0)` before the first).
    pub fn last(&self) -> Now {
        self.last.map_or(
            Now {
                mono: Instant::ZERO,
                wall: Timestamp(0),
            },
            |(n, _)| n,
        )
    }

    /// The time of this callback. Never goes back.
    pub fn read(&mut self, host: HostTime) -> (Now, Option<ClockNotice>) {
        let host_mono = host.monotonic_ns.map(|ns| Instant(ns / 1_000_000));
        let Some((last, source)) = self.last else {
            let source = match host_mono {
                Some(_) => ClockSource::HostMonotonic,
                None => ClockSource::DerivedFromWall,
            };
            let now = Now {
                mono: host_mono.unwrap_or(Instant(0)),
                wall: host.wall,
            };
            self.last = Some((now, source));
            return (now, Some(ClockNotice::Source(source)));
        };
        let wall_step = host.wall.as_millis() as i128 - last.wall.as_millis() as i128;
        let mono = match (source, host_mono) {
            (ClockSource::HostMonotonic, Some(m)) => m.max(last.mono),
            // A derived clock, or a host that stopped answering: advance by
            // the wall step, never back.
            _ => {
                let step = u64::try_from(wall_step.max(0)).unwrap_or(u64::MAX);
                last.mono.plus(Duration::from_millis(step))
            }
        };
        let now = Now {
            mono,
            wall: host.wall,
        };
        self.last = Some((now, source));
        let mono_step = mono.since(last.mono).as_millis() as i128;
        let drift = wall_step - mono_step;
        let notice =
            (drift.unsigned_abs() > JUMP_REPORT.as_millis()).then(|| ClockNotice::WallJumped {
                by_ms: i64::try_from(drift).unwrap_or(i64::MAX),
            });
        (now, notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(mono_ms: Option<u64>, wall_ms: u64) -> HostTime {
        HostTime {
            monotonic_ns: mono_ms.map(|m| m * 1_000_000),
            wall: Timestamp(wall_ms),
        }
    }

    #[test]
    fn host_monotonic_ignores_wall_jumps() {
        let mut c = Clock::new();
        let (n, notice) = c.read(host(Some(5_000), 10_000_000));
        assert_eq!(n.mono, Instant(5_000));
        assert_eq!(
            notice,
            Some(ClockNotice::Source(ClockSource::HostMonotonic))
        );
        // Wall back by an hour, monotonic on by 200 ms.
        let (n, notice) = c.read(host(Some(5_200), 10_000_000 - 3_600_000 + 200));
        assert_eq!(n.mono, Instant(5_200));
        assert_eq!(notice, Some(ClockNotice::WallJumped { by_ms: -3_600_000 }));
        // Wall forward by two hours.
        let (n, notice) = c.read(host(Some(5_400), 10_000_000 + 3_600_000 + 400));
        assert_eq!(n.mono, Instant(5_400));
        assert!(matches!(notice, Some(ClockNotice::WallJumped { by_ms }) if by_ms > 0));
        // A host reading that goes back is not followed.
        assert_eq!(c.read(host(Some(5_000), 0)).0.mono, Instant(5_400));
    }

    #[test]
    fn derived_clock_never_goes_back() {
        let mut c = Clock::new();
        let (n, notice) = c.read(host(None, 20_000_000));
        assert_eq!(n.mono, Instant(0));
        assert_eq!(
            notice,
            Some(ClockNotice::Source(ClockSource::DerivedFromWall))
        );
        assert_eq!(c.read(host(None, 20_000_200)).0.mono, Instant(200));
        // Back an hour: no progress.
        assert_eq!(
            c.read(host(None, 20_000_200 - 3_600_000)).0.mono,
            Instant(200)
        );
        // Then on by 200 ms from there.
        assert_eq!(
            c.read(host(None, 20_000_400 - 3_600_000)).0.mono,
            Instant(400)
        );
        // Forward two hours from there: counted (it cannot be told from a
        // stall).
        let n = c.read(host(None, 20_000_400 + 3_600_000)).0;
        assert_eq!(n.mono, Instant(7_200_400));
        assert_eq!(c.source(), Some(ClockSource::DerivedFromWall));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant(5).since(Instant(10)), Duration::ZERO);
        assert_eq!(
            Instant(u64::MAX).plus(Duration::from_secs(1)),
            Instant(u64::MAX)
        );
        assert_eq!(Instant(5).minus(Duration::from_secs(1)), Instant(0));
    }
}
