//! A fast keyed hasher for the allow-list and cache tables.
//!
//! std's SipHash costs more than the rest of a line's classification, while
//! an unkeyed multiply hash (Fx) lets a hostile upstream pick addresses that
//! all land in one bucket. This is a folded-multiply hash (the wyhash /
//! foldhash construction) with per-table random keys taken from std's
//! `RandomState`: cheap, and an attacker who cannot see the keys cannot aim.

use std::hash::{BuildHasher, Hasher};

const M0: u64 = 0x9E37_79B9_7F4A_7C15;
const M1: u64 = 0xA076_1D64_78BD_642F;

/// Builds [`FastHasher`]s sharing this table's random keys.
#[derive(Clone, Debug)]
pub(crate) struct FastBuild {
    k0: u64,
    k1: u64,
}

/// A fresh random 64-bit key from std's per-process random state.
pub(crate) fn random_key() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(M0);
    h.finish()
}

impl FastBuild {
    pub(crate) fn new() -> Self {
        FastBuild {
            k0: random_key(),
            k1: random_key() | 1,
        }
    }
}

impl BuildHasher for FastBuild {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            h: self.k0,
            k: self.k1,
        }
    }
}

/// The hasher of [`FastBuild`].
pub(crate) struct FastHasher {
    h: u64,
    k: u64,
}

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl FastHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.h = fold(self.h ^ word, self.k ^ M1);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length byte keeps "ab\0" and "ab" apart.
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i) | 0x100);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.h ^ M0, self.k ^ M0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equal_inputs_hash_equal_and_tables_differ() {
        let a = FastBuild::new();
        assert_eq!(
            a.hash_one(b"example.com".as_slice()),
            a.hash_one(b"example.com".as_slice())
        );
        assert_ne!(
            a.hash_one(b"example.com".as_slice()),
            a.hash_one(b"example.org".as_slice())
        );
        assert_ne!(a.hash_one(b"ab".as_slice()), a.hash_one(b"ab\0".as_slice()));
        let b = FastBuild::new();
        assert_ne!(a.hash_one(42u128), b.hash_one(42u128));
    }

    #[test]
    fn low_bits_spread_for_addresses_sharing_low_bits() {
        // Addresses that differ only in high bits must not share a bucket
        // (the weakness of an unkeyed multiply hash).
        let b = FastBuild::new();
        let mut buckets = std::collections::HashSet::new();
        for i in 0u128..1024 {
            buckets.insert(b.hash_one(i << 100) & 0x3ff);
        }
        assert!(buckets.len() > 500, "{}", buckets.len());
    }
}
