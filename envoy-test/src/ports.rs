//! Free loopback ports.
//!
//! Ports are picked BELOW the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so that no outgoing
//! connection (Envoy's, s3s-fs's) can take a port a test gave up on purpose,
//! e.g. the control plane's while it is "down" and must come back on the
//! same port. Each candidate is checked by binding 127.0.0.1:port.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static NEXT: AtomicU32 = AtomicU32::new(0);

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
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    kernel_port()
}

fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_and_distinct() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(TcpListener::bind(("127.0.0.1", a)).is_ok());
        assert!(a < ephemeral_low().max(15001));
    }
}
