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
//! comparison ignores ASCII case. The walk stops at the longest key: no
//! longer suffix can have an entry.
//!
//! A table of at most a few keys (FEW) is not hashed at lookup: each key is
//! compared with the suffix of its length, shortest first, the same visits
//! in the same order for a fraction of the walk's fixed cost.

use std::ops::ControlFlow;

use crate::swar::{lower_word, rfind_from, word};

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

/// The longest suffix worth probing: entries are valid domains of at most 253 bytes.
const MAX_SUFFIX: usize = 256;

/// Up to this many keys, a lookup compares each key with the suffix of the
/// same length instead of hashing the name: for a list of a few domains the
/// walk's fixed cost (hash set-up, one fold and one probe per label) is
/// several times that of a handful of length checks, most of which fail on
/// the byte before the suffix.
const FEW: usize = 8;

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
    /// The length of the longest key, at most MAX_SUFFIX: no longer suffix
    /// can have an entry, so a lookup stops short of it.
    max_len: usize,
    /// While the table holds at most FEW keys: their slots, shortest first
    /// (root first, as the walk visits them). Empty beyond.
    few: Vec<Slot>,
    key: u64,
}

impl SuffixTable {
    pub(crate) fn new() -> Self {
        SuffixTable {
            slots: vec![Slot::default(); 16],
            arena: Vec::new(),
            len: 0,
            max_len: 0,
            few: Vec::new(),
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
    /// label and is at most `max_len` bytes long, shortest (the last label)
    /// first. Case does not change the hashes.
    #[inline(always)]
    fn suffixes<R>(
        &self,
        name: &[u8],
        max_len: usize,
        mut f: impl FnMut(usize, u64) -> ControlFlow<R>,
    ) -> Option<R> {
        let min_start = name.len().saturating_sub(max_len);
        // A label starting at `min_start` or later follows a dot at
        // `min_start - 1` or later: the dot search looks no further left.
        let lo = min_start.saturating_sub(1);
        let mut h = self.key;
        let mut end = name.len();
        loop {
            let start = match rfind_from(&name[..end], lo, b'.') {
                Some(dot) => dot + 1,
                // No dot in reach: the first label, when it is in reach too.
                None if min_start == 0 => 0,
                None => return None,
            };
            h = self.extend(h, name, start, end);
            if let ControlFlow::Break(r) = f(start, h) {
                return Some(r);
            }
            if start == 0 {
                return None;
            }
            end = start - 1;
            if end < lo {
                return None;
            }
        }
    }

    fn full_hash(&self, name: &[u8]) -> u64 {
        let mut last = 0;
        self.suffixes::<()>(name, name.len(), |_, h| {
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
                let slot = Slot {
                    hash,
                    start,
                    len: key.len() as u32,
                    flags,
                };
                self.slots[i] = slot;
                self.len += 1;
                self.max_len = self.max_len.max(key.len().min(MAX_SUFFIX));
                if self.len <= FEW {
                    let at = self.few.partition_point(|f| f.len <= slot.len);
                    self.few.insert(at, slot);
                } else {
                    self.few = Vec::new();
                }
                return;
            }
            if s.hash == hash && self.key_of(s) == key {
                self.slots[i].flags |= flags;
                if let Some(f) = self.few.iter_mut().find(|f| f.start == s.start) {
                    f.flags |= flags;
                }
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
        if self.len <= FEW {
            return self.walk_few(name, f);
        }
        self.suffixes(name, self.max_len, |start, hash| {
            match self.get(hash, &name[start..]) {
                0 => ControlFlow::Continue(()),
                flags => f(flags, start == 0),
            }
        })
    }

    /// `walk` over the FEW-key list: each key against the suffix of its
    /// length, when that suffix starts at a label.
    #[inline(always)]
    fn walk_few<R>(&self, name: &[u8], mut f: impl FnMut(u8, bool) -> ControlFlow<R>) -> Option<R> {
        for &s in &self.few {
            let len = s.len as usize;
            // Shortest first: no later key fits either.
            if len > name.len() || len > MAX_SUFFIX {
                return None;
            }
            let start = name.len() - len;
            if start > 0 && name[start - 1] != b'.' {
                continue;
            }
            if self.key_of(s).eq_ignore_ascii_case(&name[start..]) {
                if let ControlFlow::Break(r) = f(s.flags, start == 0) {
                    return Some(r);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// What `walk` must visit, written plainly: every suffix of `name` that
    /// starts at a label and is at most MAX_SUFFIX bytes long, shortest first,
    /// with the flags of the keys equal to it ignoring ASCII case.
    fn naive_walk(keys: &[(Vec<u8>, u8)], name: &[u8]) -> Vec<(u8, bool)> {
        if keys.is_empty() || name.is_empty() {
            return Vec::new();
        }
        let mut starts: Vec<usize> = (0..name.len())
            .filter(|&i| name[i] == b'.')
            .map(|i| i + 1)
            .collect();
        starts.insert(0, 0);
        starts
            .into_iter()
            .rev()
            .filter(|&s| name.len() - s <= MAX_SUFFIX)
            .filter_map(|s| {
                let flags = keys
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(&name[s..]))
                    .fold(0, |a, (_, f)| a | f);
                (flags != 0).then_some((flags, s == 0))
            })
            .collect()
    }

    const LABELS: [&str; 8] = [
        "a",
        "b",
        "ex",
        "x-1",
        "abcdefg",
        "abcdefgh",
        "abcdefghijklmnopq",
        "com",
    ];

    /// A label of a key: short, exactly a word, longer than a word, or very long.
    fn key_label() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => proptest::sample::select(LABELS.to_vec()).prop_map(str::to_owned),
            1 => (1usize..140).prop_map(|n| "l".repeat(n)),
        ]
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(key_label(), 1..5).prop_map(|ls| ls.join(".").into_bytes())
    }

    /// A label of a queried name: a key's label in any case, empty, or holding
    /// bytes that are not ASCII or not UTF-8.
    fn name_label() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => (key_label(), any::<u64>()).prop_map(|(l, bits)| {
                l.bytes()
                    .enumerate()
                    .map(|(i, b)| {
                        if bits >> (i % 64) & 1 == 1 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    })
                    .collect()
            }),
            1 => Just(Vec::new()),
            1 => proptest::collection::vec(
                proptest::sample::select(b"aA\xc3\xa9\xc1\xe1\xff\x80 _".to_vec()), 1..12),
        ]
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        (proptest::collection::vec(name_label(), 1..7), any::<bool>()).prop_map(|(ls, dot)| {
            let mut n = ls.join(&b'.');
            if dot {
                n.push(b'.');
            }
            n
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn walk_agrees_with_a_naive_walk(
            keys in proptest::collection::vec((key(), 0u8..6), 0..12),
            names in proptest::collection::vec(name(), 1..8),
        ) {
            let keys: Vec<(Vec<u8>, u8)> = keys.into_iter().map(|(k, f)| (k, 1 << f)).collect();
            let mut t = SuffixTable::new();
            for (k, f) in &keys {
                t.add(k, *f);
            }
            // Names that are whole keys or a key's subdomains, as well as random ones.
            let mut names = names;
            for (k, _) in keys.iter().take(3) {
                names.push(k.to_ascii_uppercase());
                names.push([b"x.".as_slice(), k].concat());
            }
            for n in &names {
                let mut seen = Vec::new();
                t.walk::<()>(n, |f, whole| {
                    seen.push((f, whole));
                    ControlFlow::Continue(())
                });
                let want = naive_walk(&keys, n);
                prop_assert_eq!(&seen, &want, "name {:?}", String::from_utf8_lossy(n));
            }
        }
    }

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
}
