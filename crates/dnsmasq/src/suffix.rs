//! A hash table of lower-case domain names that is probed once per label of
//! a queried name, root first, with the suffix hashes built incrementally.
//!
//! `api.github.com` is hashed as `H(api, H(github, H(com, seed)))`: walking
//! the name from its end, each longer suffix costs one fold of one label, so
//! all suffixes of a name are looked up for the price of hashing it once.
//! Open addressing over a flat slot array, keys in one byte arena: a probe
//! is usually a single cache line, and nothing is allocated per lookup.
//! Lookups are case-insensitive without copying the name: the hash folds
//! each 8-byte word lower-cased in a register (SWAR), and the final key
//! comparison ignores ASCII case.

use std::ops::ControlFlow;

const M0: u64 = 0x9E37_79B9_7F4A_7C15;
const M1: u64 = 0xA076_1D64_78BD_642F;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A random key for one table, from foldhash's randomly seeded state (a
/// hostile log cannot aim at buckets it cannot predict). The label hash below
/// is this module's own, not foldhash's: it folds lower-cased words and
/// extends a suffix's hash by one label, which a general hasher cannot.
fn random_key() -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::RandomState::default().hash_one(M0)
}

/// Lower-cases the ASCII capitals among eight bytes at once.
#[inline(always)]
fn lower_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    // The high bit of a byte ends up set when the byte is >= 'A', resp. > 'Z';
    // no carry crosses a byte because each lane holds at most 0x7f + 0x3f.
    let ge_a = low7 + ONES * u64::from(0x80 - b'A');
    let gt_z = low7 + ONES * u64::from(0x7f - b'Z');
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

/// The longest suffix worth probing: entries are valid domains of at most 253 bytes.
const MAX_SUFFIX: usize = 256;

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    hash: u64,
    start: u32,
    len: u32,
    /// 0 marks an empty slot; entries always carry at least one flag.
    flags: u8,
}

/// Domain → flag bits. Keys must be lower case; lookups lower-case themselves.
#[derive(Clone, Debug)]
pub(crate) struct SuffixTable {
    slots: Vec<Slot>,
    arena: Vec<u8>,
    len: usize,
    key: u64,
}

impl SuffixTable {
    pub(crate) fn new() -> Self {
        SuffixTable {
            slots: vec![Slot::default(); 16],
            arena: Vec::new(),
            len: 0,
            key: random_key() | 1,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Hashes `name[start..end]` (one label), ignoring ASCII case.
    #[inline(always)]
    fn label_hash(&self, name: &[u8], start: usize, end: usize) -> u64 {
        let k = M1 ^ self.key;
        let mut h = self.key ^ ((end - start) as u64).wrapping_mul(M0);
        let mut i = start;
        while end - i >= 8 {
            h = fold(h ^ lower_word(word(&name[i..i + 8])), k);
            i += 8;
        }
        let n = end - i;
        if n > 0 {
            // The last 1..7 bytes, zero-padded. A variable-length copy into a
            // stack word costs a memcpy call and a store-forwarding stall;
            // when 8 bytes end here, load them and shift the extra ones out.
            let w = if end >= 8 {
                word(&name[end - 8..end]) >> (8 * (8 - n))
            } else {
                name[i..end]
                    .iter()
                    .rev()
                    .fold(0u64, |w, &b| (w << 8) | u64::from(b))
            };
            h = fold(h ^ lower_word(w), k);
        }
        h
    }

    #[inline(always)]
    fn extend(&self, suffix_hash: u64, name: &[u8], start: usize, end: usize) -> u64 {
        fold(
            suffix_hash ^ self.label_hash(name, start, end),
            M0 ^ self.key,
        )
    }

    /// Calls `f(start, hash)` for every suffix of `name` that starts at a
    /// label and is at most MAX_SUFFIX bytes long, shortest (the last
    /// label) first. Case does not change the hashes.
    #[inline(always)]
    fn suffixes<R>(
        &self,
        name: &[u8],
        mut f: impl FnMut(usize, u64) -> ControlFlow<R>,
    ) -> Option<R> {
        let min_start = name.len().saturating_sub(MAX_SUFFIX);
        let mut h = self.key;
        let mut end = name.len();
        loop {
            // Labels are short: a plain backwards scan beats memrchr's set-up.
            let start = match name[..end].iter().rposition(|&b| b == b'.') {
                Some(dot) => dot + 1,
                None => 0,
            };
            if start < min_start {
                return None;
            }
            h = self.extend(h, name, start, end);
            if let ControlFlow::Break(r) = f(start, h) {
                return Some(r);
            }
            if start == 0 {
                return None;
            }
            end = start - 1;
        }
    }

    fn full_hash(&self, name: &[u8]) -> u64 {
        let mut last = 0;
        self.suffixes::<()>(name, |_, h| {
            last = h;
            ControlFlow::Continue(())
        });
        last
    }

    /// ORs `flags` (non-zero) into the entry for `key` (lower case, non-empty).
    pub(crate) fn add(&mut self, key: &[u8], flags: u8) {
        debug_assert!(flags != 0 && !key.is_empty());
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let hash = self.full_hash(key);
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s.flags == 0 {
                let start = self.arena.len() as u32;
                self.arena.extend_from_slice(key);
                self.slots[i] = Slot {
                    hash,
                    start,
                    len: key.len() as u32,
                    flags,
                };
                self.len += 1;
                return;
            }
            if s.hash == hash && self.key_of(s) == key {
                self.slots[i].flags |= flags;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let doubled = vec![Slot::default(); self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.flags != 0) {
            let mut i = s.hash as usize & mask;
            while self.slots[i].flags != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    #[inline(always)]
    fn key_of(&self, s: Slot) -> &[u8] {
        &self.arena[s.start as usize..(s.start + s.len) as usize]
    }

    #[inline(always)]
    fn get(&self, hash: u64, suffix: &[u8]) -> u8 {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s.flags == 0 {
                return 0;
            }
            if s.hash == hash && self.key_of(s).eq_ignore_ascii_case(suffix) {
                return s.flags;
            }
            i = (i + 1) & mask;
        }
    }

    /// Visits the flags of every suffix of `name` (any case) that has an
    /// entry, root first; `f(flags, is_whole_name)` may stop the walk.
    #[inline]
    pub(crate) fn walk<R>(
        &self,
        name: &[u8],
        mut f: impl FnMut(u8, bool) -> ControlFlow<R>,
    ) -> Option<R> {
        if self.len == 0 || name.is_empty() {
            return None;
        }
        self.suffixes(name, |start, hash| match self.get(hash, &name[start..]) {
            0 => ControlFlow::Continue(()),
            flags => f(flags, start == 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_get_and_walk() {
        let mut t = SuffixTable::new();
        let names: Vec<String> = (0..1000).map(|i| format!("h{i}.example.com")).collect();
        for (i, n) in names.iter().enumerate() {
            t.add(n.as_bytes(), 1 << (i % 6));
        }
        t.add(b"example.com", 64);
        t.add(b"h3.example.com", 64);
        assert_eq!(t.len(), 1001);
        let mut seen = Vec::new();
        t.walk::<()>(b"x.H3.example.COM", |f, whole| {
            seen.push((f, whole));
            ControlFlow::Continue(())
        });
        assert_eq!(seen, [(64, false), (8 | 64, false)]);
        seen.clear();
        t.walk::<()>(b"h3.example.com", |f, whole| {
            seen.push((f, whole));
            ControlFlow::Continue(())
        });
        assert_eq!(seen, [(64, false), (8 | 64, true)]);
        // Labels are hashed whole: no confusion between `a.bc` and `ab.c`.
        let mut t = SuffixTable::new();
        t.add(b"ab.c", 1);
        assert_eq!(t.walk(b"a.bc", |f, _| ControlFlow::Break(f)), None);
        assert_eq!(t.walk(b"x.AB.c", |f, _| ControlFlow::Break(f)), Some(1));
        assert_eq!(t.walk(b"", |f, _| ControlFlow::Break(f)), None);
        // Only the last MAX_SUFFIX bytes are probed.
        let long = format!("{}.ab.c", "x".repeat(300));
        assert_eq!(
            t.walk(long.as_bytes(), |f, _| ControlFlow::Break(f)),
            Some(1)
        );
    }

    #[test]
    fn lower_word_matches_std() {
        for i in 0u32..=255 {
            let bytes = [i as u8, b'A', b'Z', b'@', b'[', b'a', 0xC1, i as u8 ^ 0x80];
            let mut want = bytes;
            want.make_ascii_lowercase();
            assert_eq!(
                lower_word(u64::from_le_bytes(bytes)).to_le_bytes(),
                want,
                "{i}"
            );
        }
    }
}
