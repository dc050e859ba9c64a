//! Poll-until helpers: every wait in the harness is bounded and polls.

use std::time::{Duration, Instant};

/// Default poll period.
pub const POLL: Duration = Duration::from_millis(100);
/// Default upper bound for a wait in a scenario.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Calls `f` every [`POLL`] until it returns `Ok`, for at most `timeout`.
/// `Err` carries the last observed state, reported in the error.
pub fn try_until<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(format!(
                "timed out after {:.1}s waiting for {what}; last seen: {last}",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`try_until`] but panics on timeout (for tests).
#[track_caller]
pub fn until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Result<T, String>) -> T {
    match try_until(what, timeout, f) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Checks `f` every [`POLL`] during `period`; the first `Err` is returned.
/// For "X stays true for a while" assertions.
pub fn try_holds_for(
    what: &str,
    period: Duration,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Err(e) = f() {
            return Err(format!(
                "{what} stopped holding after {:.1}s: {e}",
                start.elapsed().as_secs_f64()
            ));
        }
        if start.elapsed() >= period {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`try_holds_for`] but panics (for tests).
#[track_caller]
pub fn holds_for(what: &str, period: Duration, f: impl FnMut() -> Result<(), String>) {
    if let Err(e) = try_holds_for(what, period, f) {
        panic!("{e}")
    }
}

/// Waits until `f` holds, then until it holds for a whole `settle`
/// period: for what every worker must show, when they take it up one
/// after another (each at its own tick, see
/// [`crate::probe::WORKER_LAG`]). Returns the first `Ok`.
pub fn try_until_settled<T>(
    what: &str,
    timeout: Duration,
    settle: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let started = Instant::now();
    let first = try_until(what, timeout, &mut f)?;
    let left = timeout.saturating_sub(started.elapsed()).max(settle);
    try_until(&format!("{what} on every worker"), left, || {
        try_holds_for(what, settle, || f().map(|_| ()))
    })?;
    Ok(first)
}

/// Like [`try_until_settled`] but panics on timeout (for tests).
#[track_caller]
pub fn until_settled<T>(
    what: &str,
    timeout: Duration,
    settle: Duration,
    f: impl FnMut() -> Result<T, String>,
) -> T {
    match try_until_settled(what, timeout, settle, f) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_value_and_times_out() {
        let mut n = 0;
        let v = until("n reaches 3", Duration::from_secs(2), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n={n}"))
            }
        });
        assert_eq!(v, 3);
        let e = try_until("never", Duration::from_millis(250), || {
            Err::<(), _>("nope".to_string())
        })
        .unwrap_err();
        assert!(e.contains("never") && e.contains("nope"), "{e}");
    }

    #[test]
    fn holds_for_reports_first_violation() {
        let mut n = 0;
        let e = try_holds_for("n < 2", Duration::from_secs(2), || {
            n += 1;
            if n < 2 {
                Ok(())
            } else {
                Err(format!("n={n}"))
            }
        })
        .unwrap_err();
        assert!(e.contains("n=2"), "{e}");
        assert!(try_holds_for("always", Duration::from_millis(200), || Ok(())).is_ok());
    }
}
