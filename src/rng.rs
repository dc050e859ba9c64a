//! Randomness as an input: a small deterministic generator seeded from
//! the host's randomness at the boundary (or from a test's seed).
//!
//! [`Rng`] is for identities and jitter (a root's lease owner, a process's
//! default node id, retry delays), never for cryptography: encryption
//! nonces come from [`NonceSource`].

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// SplitMix64 (Steele, Lea and Flood): tiny, fast, statistically sound
/// for ids and jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Encryption nonces from 32 bytes of the host's randomness (WASI
/// `random_get`, taken when the root is configured): nonce *n* is the
/// first 24 bytes of SHA-256(label, seed, n). Distinct counters give
/// distinct nonces within a process, and distinct seeds (192 bits kept)
/// make a repeat across processes as unlikely as between fresh random
/// nonces, which is what XChaCha20-Poly1305's long nonces allow. The seed
/// is never shown and is zeroized on drop.
/// Not `Clone`: a copy would hand out the same nonces again; use
/// [`NonceSource::child`].
pub struct NonceSource {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
}

impl NonceSource {
    pub fn new(seed: [u8; 32]) -> Self {
        NonceSource {
            seed: Zeroizing::new(seed),
            counter: 0,
        }
    }

    pub fn next_nonce(&mut self) -> [u8; 24] {
        let digest = self.derive(b"fallback-config nonce v1\0");
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&digest[..24]);
        nonce
    }

    /// A source for a new owner (a controller each time this root starts
    /// driving) whose nonces differ from this one's and every other
    /// child's.
    pub fn child(&mut self) -> NonceSource {
        NonceSource::new(self.derive(b"fallback-config nonce child v1\0"))
    }

    fn derive(&mut self, label: &[u8]) -> [u8; 32] {
        self.counter = self.counter.wrapping_add(1);
        Sha256::new()
            .chain_update(label)
            .chain_update(*self.seed)
            .chain_update(self.counter.to_be_bytes())
            .finalize()
            .into()
    }
}

impl std::fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NonceSource(***, {})", self.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
    }

    #[test]
    fn nonces_never_repeat_and_depend_on_the_seed() {
        let mut a = NonceSource::new([1; 32]);
        let mut seen: Vec<[u8; 24]> = (0..1000).map(|_| a.next_nonce()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
        let first = NonceSource::new([1; 32]).next_nonce();
        assert_ne!(NonceSource::new([2; 32]).next_nonce(), first);
        let mut parent = NonceSource::new([1; 32]);
        let (mut c1, mut c2) = (parent.child(), parent.child());
        let n = c1.next_nonce();
        assert!(n != c2.next_nonce() && n != first && !seen.contains(&n));
        assert!(!format!("{a:?}").contains("1, 1"));
    }
}
