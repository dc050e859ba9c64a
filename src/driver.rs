//! Which root context of the process does the network work.
//!
//! Envoy runs one long-lived root context per thread (main + each worker),
//! all ticking. The product promises one CP poll per interval and one
//! storage GET per process, so exactly one of them, the *driver*, runs the
//! [`crate::controller::Controller`]. The driver holds a lease in shared
//! data (`owner expires_ms`), renews it on every tick with a CAS write, and
//! any root takes over once it expires (e.g. after an ECDS update replaced
//! the driver's root context). The shell performs the reads and CAS writes;
//! this module only decides.

use crate::time::Timestamp;
use std::time::Duration;

/// How often every root context wakes up. The controller's timers are
/// data; this only bounds their resolution (and the delay of the first CP
/// fetch: the first tick seeds the lease, the second claims it and polls).
pub const TICK: Duration = Duration::from_millis(200);

/// A driver that stops renewing (its thread stuck, its root replaced by a
/// config update) is taken over after this long.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// A lease with no owner that has already expired: the seed, and what a
/// leaving driver writes so that another root takes over at its next tick.
pub fn released() -> Lease {
    Lease {
        owner: String::new(),
        expires: Timestamp(0),
    }
}

/// A decoded lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub expires: Timestamp,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.owner, self.expires.as_millis()).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (owner, expires) = text.rsplit_once(' ')?;
        Some(Lease {
            owner: owner.to_string(),
            expires: Timestamp(expires.parse().ok()?),
        })
    }
}

/// What a root should do this tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists yet: write this expired placeholder and do not
    /// drive. Proxy-wasm ignores the CAS on a key that does not exist, so
    /// two roots could both "create" the lease; claiming only an existing
    /// key makes the CAS decide between them on the next tick.
    Seed(Lease),
    /// Write this lease (CAS against what was read); on success this root
    /// drives for this tick. `newly` is true when it was not the driver.
    Take { lease: Lease, newly: bool },
    /// Someone else drives.
    Follow,
}

/// Decides from the lease currently stored (`None`: absent).
pub fn decide(current: Option<&Lease>, me: &str, now: Timestamp, ttl: Duration) -> Decision {
    let lease = Lease {
        owner: me.to_string(),
        expires: now.plus(ttl),
    };
    match current {
        None => Decision::Seed(released()),
        Some(l) if l.owner == me => Decision::Take {
            lease,
            newly: false,
        },
        Some(l) if l.expires > now => Decision::Follow,
        Some(_) => Decision::Take { lease, newly: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn first_comer_takes_then_others_follow() {
        let now = Timestamp::from_secs(100);
        let Decision::Seed(seed) = decide(None, "a", now, TTL) else {
            panic!("seed first")
        };
        assert_eq!(Lease::decode(&seed.encode()), Some(seed.clone()));
        let d = decide(Some(&seed), "a", now, TTL);
        let Decision::Take { lease, newly: true } = d else {
            panic!("{d:?}")
        };
        assert_eq!(lease.expires, Timestamp::from_secs(103));
        assert_eq!(
            decide(Some(&lease), "b", Timestamp::from_secs(101), TTL),
            Decision::Follow
        );
        assert!(matches!(
            decide(Some(&lease), "a", Timestamp::from_secs(101), TTL),
            Decision::Take { newly: false, .. }
        ));
    }

    #[test]
    fn expired_lease_is_taken_over() {
        let old = Lease {
            owner: "a".into(),
            expires: Timestamp::from_secs(103),
        };
        assert!(matches!(
            decide(Some(&old), "b", Timestamp::from_secs(103), TTL),
            Decision::Take { newly: true, .. }
        ));
    }

    #[test]
    fn encoding_round_trips() {
        let l = Lease {
            owner: "root 7".into(),
            expires: Timestamp(12345),
        };
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        assert_eq!(Lease::decode(b"garbage"), None);
    }
}
