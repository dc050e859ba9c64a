//! Free loopback ports.
//!
//! Ports are picked BELOW the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so that no outgoing
//! connection (Envoy's, s3s-fs's) can take a port a test gave up on purpose,
//! e.g. the control plane's while it is "down" and must come back on the
//! same port. Each candidate is checked by binding 127.0.0.1:port, and a
//! port is handed out at most once per test process: a port given to a
//! server that is not listening yet (the CP of a scenario that starts with
//! the CP down) must not be given to a test running in parallel.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

static NEXT: AtomicU32 = AtomicU32::new(0);
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Records `port` as handed out; false when it already was.
fn claim(port: u16) -> bool {
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    given.get_or_insert_with(HashSet::new).insert(port)
}

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let high = ephemeral_low().min(32768) as u32;
    let low = 15000u32;
    if high <= low + 1000 {
        return kernel_port();
    }
    let span = high - low;
    let seed = std::process::id().wrapping_mul(7919)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..span {
        // 7 is coprime with the span in practice; the counter makes two
        // threads of one process never get the same candidate.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + (seed.wrapping_add(n.wrapping_mul(7))) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() && claim(port as u16) {
            return port as u16;
        }
    }
    kernel_port()
}

fn kernel_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        if claim(port) {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_and_distinct() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        // Never handed out twice, even once nothing listens on it.
        let many: HashSet<u16> = (0..200).map(|_| free_port()).collect();
        assert_eq!(many.len(), 200);
        assert!(!many.contains(&a) && !many.contains(&b));
        assert!(TcpListener::bind(("127.0.0.1", a)).is_ok());
        assert!(a < ephemeral_low().max(15001));
    }
}
