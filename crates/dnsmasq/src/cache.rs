//! The bounded address → name map (LRU) that names NFLOG destinations.
//!
//! Lookup, insert, touch and eviction are all O(1), and memory is bounded by
//! the capacity given at construction. The layout is chosen so that an
//! answer re-confirming a known mapping (most answers) costs two cache
//! misses at most:
//!
//! - the index is an open-addressing table (linear probing, at most a
//!   quarter full, backward-shift deletion) of 8-byte buckets holding 32
//!   bits of the keyed hash and the slot number: 32 bytes an entry at most,
//!   like a `HashMap<Key, u32>` at its load, but the probe reads 8 bytes,
//!   rarely looks at a slot that is not the one, and a miss usually ends at
//!   the first bucket (at half full, the probe-loop branch mispredicted
//!   often enough to double the cost of a miss);
//! - a slot is one 64-byte cache line holding the address and, for names up
//!   to 41 bytes (name and CNAME target together), the text itself, so the
//!   address check and the name comparison read the same line; longer text
//!   lives in a side array and costs one more read;
//! - the recency list links live in their own compact array (12 bytes an
//!   entry), so reordering touches little memory.
//!
//! Eviction order is LRU with one relaxation that spares most relinks: an
//! entry that is already among the `capacity / 8` most recently moved to
//! the front is not moved again when used. Every move stamps the entry with
//! a counter of moves, so "moved at most `capacity / 8` moves ago" — which
//! bounds how far from the front it can be — is one subtraction. The
//! guarantee that remains: an address is never evicted while it is among
//! the `capacity - capacity / 8` most recently seen (inserted or looked up)
//! addresses; below 16 entries the order is exact LRU.
//!
//! Under churn (a flood of answers for addresses the cache does not hold,
//! or holds far from the front) every insert reads memory that is in no CPU
//! cache: the index bucket of the address, and, for an eviction, the least
//! recently used slot, its link and its bucket. Inserts are therefore queued
//! ([`QUEUE`] of them) and applied in order when the queue is full, and the
//! memory each will read is prefetched while the ones before it are applied:
//! its bucket when queued, then the slot and link that bucket points to, then
//! that link's neighbours; and for evictions, the slot, link and bucket of
//! the next least recently used entry. Every method that reads the cache
//! applies the queue first, so the queue cannot be observed: the cache
//! behaves exactly as if every insert had been applied at once.

use std::hash::BuildHasher;
use std::net::IpAddr;

use foldhash::quality::RandomState;

const NIL: u32 = u32::MAX;

/// Inserts queued before the oldest is applied: far enough ahead for the
/// prefetched memory to arrive (a few hundred nanoseconds of parsing lie
/// between two answers of a log), few enough to stay in the L1 cache.
pub(crate) const QUEUE: usize = 8;

/// How many inserts before its application a queued insert's slot and link
/// are prefetched (its bucket was prefetched when it was queued).
const SLOT_AHEAD: usize = 4;

/// How many inserts before its application the neighbours of its link are
/// prefetched (a hit unlinks the entry from between them).
const LINKS_AHEAD: usize = 2;

/// Asks the CPU to bring the cache line at `p` into its caches; a hint that
/// never faults, whatever the address.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache; it reads nothing the program
    // sees and never faults, so any address is sound (SSE is part of x86-64).
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// An insert waiting in the queue: the address, its hash, and the log's
/// bytes of the name and CNAME target (the buffer is kept for the next one).
#[derive(Debug, Default)]
struct Queued {
    key: Key,
    hash: u32,
    text: Vec<u8>,
    name_len: usize,
    has_cname: bool,
}

/// Text bytes (name and CNAME target together) kept in the slot itself:
/// what is left of a 64-byte line after the address and the lengths.
const INLINE: usize = 41;

/// `Slot::inline_len` when the text is in `DomainCache::long`.
const ON_HEAP: u8 = u8::MAX;

/// The index key: the address bits and the family. The 128 bits hash as one
/// word (foldhash's `quality` variant: its `fast` one left addresses that differ
/// only in high bits, such as IPv6 subnets, in one bucket in about one run out
/// of six of `index_hashes_spread_addresses_that_share_their_low_bits`), where
/// `IpAddr`'s derived `Hash` goes through the byte-slice path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Key {
    hi: u64,
    lo: u64,
    v4: bool,
}

impl Key {
    #[inline]
    fn of(ip: IpAddr) -> Key {
        let (bits, v4) = match ip {
            IpAddr::V4(a) => (u128::from(a.to_bits()), true),
            IpAddr::V6(a) => (a.to_bits(), false),
        };
        Key {
            hi: (bits >> 64) as u64,
            lo: bits as u64,
            v4,
        }
    }
}

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The family is left out of the hash: 192.0.2.1 and ::c000:201 may
        // share a bucket, and `Eq` tells them apart.
        state.write_u128(u128::from(self.hi) << 64 | u128::from(self.lo));
    }
}

/// What an address was resolved from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The name that was queried (lower case, no trailing dot).
    pub name: &'a str,
    /// When the name was an alias: the CNAME target that carried the address.
    pub cname: Option<&'a str>,
}

/// One index bucket: empty when `slot` is `NIL`. The home bucket of an
/// entry is `hash & mask`, which backward-shift deletion needs.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    hash: u32,
    slot: u32,
}

const EMPTY: Bucket = Bucket { hash: 0, slot: NIL };

/// One cached address and what it resolved from, in one cache line. The
/// text is the normalised name followed by the normalised CNAME target.
#[derive(Clone, Debug)]
#[repr(align(64))]
struct Slot {
    hi: u64,
    lo: u64,
    /// Bytes of the text that are the name; the rest is the CNAME target.
    name_len: u32,
    /// Bytes of `inline` in use, or `ON_HEAP`.
    inline_len: u8,
    v4: bool,
    has_cname: bool,
    inline: [u8; INLINE],
}

impl Slot {
    fn key(&self) -> Key {
        Key {
            hi: self.hi,
            lo: self.lo,
            v4: self.v4,
        }
    }
}

/// Neighbours in the recency list (`NIL` at the ends), and the value of
/// `DomainCache::moves` when the entry last went to the front.
#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
    stamp: u32,
}

/// Bounded map from address to the name it was most recently resolved from,
/// evicting the least recently seen address (LRU, relaxed as the module
/// documentation describes for caches of 16 entries or more).
#[derive(Debug)]
pub struct DomainCache {
    capacity: usize,
    hasher: RandomState,
    /// A power of two long (or empty), never more than a quarter full.
    buckets: Vec<Bucket>,
    slots: Vec<Slot>,
    /// The text of slots whose text does not fit inline (empty otherwise).
    long: Vec<Box<str>>,
    links: Vec<Link>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    /// Moves to the front so far (wrapping).
    moves: u32,
    /// A use of an entry moved fewer than this many moves ago leaves it in
    /// place: it is within this distance of the front already.
    window: u32,
    /// Inserts not applied yet, oldest at `queue_head` (a ring of `QUEUE`).
    queue: Vec<Queued>,
    queue_head: usize,
    queue_len: usize,
}

impl DomainCache {
    /// A cache holding at most `capacity` addresses (0 keeps nothing;
    /// at most `u32::MAX - 1`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(NIL as usize - 1);
        DomainCache {
            capacity,
            hasher: RandomState::default(),
            buckets: Vec::new(),
            slots: Vec::new(),
            long: Vec::new(),
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            moves: 0,
            window: (capacity / 8) as u32,
            queue: Vec::new(),
            queue_head: 0,
            queue_len: 0,
        }
    }

    /// How many addresses are held.
    pub fn len(&mut self) -> usize {
        self.flush();
        self.slots.len()
    }

    /// True when no address is held.
    pub fn is_empty(&mut self) -> bool {
        self.flush();
        self.slots.is_empty()
    }

    /// The most addresses this cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The name `ip` was last resolved from, marking the entry as recently used.
    pub fn lookup(&mut self, ip: IpAddr) -> Option<Resolved<'_>> {
        self.flush();
        let key = Key::of(ip);
        let (_, i) = self.find(&key, self.hash(&key))?;
        self.touch(i);
        Some(self.resolved(i))
    }

    /// Like [`lookup`](Self::lookup) without changing the eviction order.
    pub fn peek(&mut self, ip: IpAddr) -> Option<Resolved<'_>> {
        self.flush();
        let key = Key::of(ip);
        self.find(&key, self.hash(&key))
            .map(|(_, i)| self.resolved(i))
    }

    /// Maps `ip` to `name` (and its CNAME target), evicting the least recently
    /// used address when full. Names are lower-cased and lose one trailing dot.
    pub fn insert(&mut self, ip: IpAddr, name: &str, cname: Option<&str>) {
        self.insert_raw(ip, name.as_bytes(), cname.map(str::as_bytes));
    }

    /// [`insert`](Self::insert) from log bytes: allocates only when the
    /// mapping changes to a long one (or the queue's buffers first grow), so
    /// a log full of repeated answers costs one probe each. Queued, and
    /// applied in order before anything reads the cache (module docs).
    pub(crate) fn insert_raw(&mut self, ip: IpAddr, name: &[u8], cname: Option<&[u8]>) {
        if self.capacity == 0 {
            return;
        }
        let key = Key::of(ip);
        let hash = self.hash(&key);
        if !self.buckets.is_empty() {
            let mask = self.buckets.len() - 1;
            prefetch(&self.buckets[hash as usize & mask]);
        }
        if self.queue_len == QUEUE {
            self.apply_oldest();
        }
        if self.queue.len() < QUEUE {
            self.queue.resize_with(QUEUE, Queued::default);
        }
        let at = (self.queue_head + self.queue_len) % QUEUE;
        let queued = &mut self.queue[at];
        queued.key = key;
        queued.hash = hash;
        queued.text.clear();
        queued.text.extend_from_slice(name);
        queued.name_len = name.len();
        queued.has_cname = cname.is_some();
        if let Some(cname) = cname {
            queued.text.extend_from_slice(cname);
        }
        self.queue_len += 1;
        // The inserts that come next: bring in what they will read.
        if let Some(ahead) = self.queued_ahead(SLOT_AHEAD) {
            self.prefetch_slot_of(ahead);
        }
        if let Some(ahead) = self.queued_ahead(LINKS_AHEAD) {
            self.prefetch_neighbours_of(ahead);
        }
    }

    /// Applies every queued insert, in order. Reading the cache does this
    /// itself; a writer may call it before it lets others read (so that they
    /// do not pay for it).
    pub fn flush(&mut self) {
        while self.queue_len > 0 {
            self.apply_oldest();
        }
    }

    /// The queued insert that is `n` applications away from being applied
    /// once the queue is full (the n-th oldest, counting from 1).
    fn queued_ahead(&self, n: usize) -> Option<usize> {
        (self.queue_len == QUEUE).then(|| (self.queue_head + n - 1) % QUEUE)
    }

    /// Prefetches the slot and link the bucket of queued insert `q` points
    /// to (the bucket itself was prefetched when it was queued).
    fn prefetch_slot_of(&self, q: usize) {
        let hash = self.queue[q].hash;
        if let Some(b) = self.home_bucket(hash) {
            if b.slot != NIL && b.hash == hash {
                prefetch(self.slots.as_ptr().wrapping_add(b.slot as usize));
                prefetch(self.links.as_ptr().wrapping_add(b.slot as usize));
            }
        }
    }

    /// Prefetches the neighbours in the recency list of the entry queued
    /// insert `q` will find, which a move to the front relinks.
    fn prefetch_neighbours_of(&self, q: usize) {
        let hash = self.queue[q].hash;
        if let Some(b) = self.home_bucket(hash) {
            if b.slot != NIL && b.hash == hash {
                if let Some(link) = self.links.get(b.slot as usize) {
                    prefetch(self.links.as_ptr().wrapping_add(link.prev as usize));
                    prefetch(self.links.as_ptr().wrapping_add(link.next as usize));
                }
            }
        }
    }

    #[inline]
    fn home_bucket(&self, hash: u32) -> Option<Bucket> {
        let mask = self.buckets.len().checked_sub(1)?;
        Some(self.buckets[hash as usize & mask])
    }

    fn apply_oldest(&mut self) {
        let at = self.queue_head;
        let queued = std::mem::take(&mut self.queue[at]);
        self.queue_head = (at + 1) % QUEUE;
        self.queue_len -= 1;
        let (name, cname) = queued.text.split_at(queued.name_len);
        self.apply(
            queued.key,
            queued.hash,
            name,
            queued.has_cname.then_some(cname),
        );
        // Keep the buffer for the next insert queued in this place.
        self.queue[at] = queued;
    }

    /// Inserts now (the body of [`insert_raw`](Self::insert_raw)).
    fn apply(&mut self, key: Key, hash: u32, name: &[u8], cname: Option<&[u8]>) {
        if let Some((_, i)) = self.find(&key, hash) {
            if !self.same_text(i, name, cname) {
                self.set_text(i, name, cname);
            }
            self.touch(i);
            return;
        }
        let i = if self.slots.len() < self.capacity {
            if (self.slots.len() + 1) * 4 > self.buckets.len() {
                self.grow();
            }
            self.slots.push(Slot {
                hi: key.hi,
                lo: key.lo,
                name_len: 0,
                inline_len: 0,
                v4: key.v4,
                has_cname: false,
                inline: [0; INLINE],
            });
            self.long.push(Box::default());
            self.links.push(Link {
                prev: NIL,
                next: NIL,
                stamp: 0,
            });
            (self.slots.len() - 1) as u32
        } else {
            // Reuse the least recently used slot.
            let i = self.tail;
            self.unlink(i);
            let old = self.slots[i as usize].key();
            if let Some((at, _)) = self.find(&old, self.hash(&old)) {
                self.remove_at(at);
            }
            let slot = &mut self.slots[i as usize];
            slot.hi = key.hi;
            slot.lo = key.lo;
            slot.v4 = key.v4;
            self.prefetch_next_eviction();
            i
        };
        self.set_text(i, name, cname);
        self.place(hash, i);
        self.push_front(i);
    }

    /// After an eviction: the new least recently used entry is the next to
    /// go. Its link and slot were prefetched at the eviction before, so its
    /// bucket can be now; and the link and slot of the one after it.
    fn prefetch_next_eviction(&self) {
        let Some(link) = self.links.get(self.tail as usize) else {
            return;
        };
        if let Some(slot) = self.slots.get(self.tail as usize) {
            let hash = self.hash(&slot.key());
            let mask = self.buckets.len() - 1;
            prefetch(&self.buckets[hash as usize & mask]);
        }
        prefetch(self.links.as_ptr().wrapping_add(link.prev as usize));
        prefetch(self.slots.as_ptr().wrapping_add(link.prev as usize));
    }

    #[inline]
    fn hash(&self, key: &Key) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    /// The bucket position and slot of `key`.
    #[inline]
    fn find(&self, key: &Key, hash: u32) -> Option<(usize, u32)> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut at = hash as usize & mask;
        // Terminates: the table is never full.
        loop {
            let b = self.buckets[at];
            if b.slot == NIL {
                return None;
            }
            if b.hash == hash && self.slots[b.slot as usize].key() == *key {
                return Some((at, b.slot));
            }
            at = (at + 1) & mask;
        }
    }

    /// Puts slot `i` into the index (its key must not be there yet).
    fn place(&mut self, hash: u32, i: u32) {
        let mask = self.buckets.len() - 1;
        let mut at = hash as usize & mask;
        while self.buckets[at].slot != NIL {
            at = (at + 1) & mask;
        }
        self.buckets[at] = Bucket { hash, slot: i };
    }

    /// Empties bucket `at`, moving later entries of the same run back so
    /// that every entry stays reachable from its home bucket.
    fn remove_at(&mut self, mut at: usize) {
        let mask = self.buckets.len() - 1;
        let mut next = at;
        loop {
            next = (next + 1) & mask;
            let b = self.buckets[next];
            if b.slot == NIL {
                self.buckets[at] = EMPTY;
                return;
            }
            let home = b.hash as usize & mask;
            // `b` may move back to `at` when `at` lies between its home and
            // where it is now (cyclically).
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(at) & mask {
                self.buckets[at] = b;
                at = next;
            }
        }
    }

    /// Doubles the index (amortised O(1) per insert).
    fn grow(&mut self) {
        let size = (self.buckets.len() * 2).max(16);
        self.buckets = vec![EMPTY; size];
        for i in 0..self.slots.len() {
            let hash = self.hash(&self.slots[i].key());
            self.place(hash, i as u32);
        }
    }

    /// The stored text of slot `i`.
    #[inline]
    fn text(&self, i: u32) -> &[u8] {
        let s = &self.slots[i as usize];
        if s.inline_len == ON_HEAP {
            self.long[i as usize].as_bytes()
        } else {
            &s.inline[..usize::from(s.inline_len)]
        }
    }

    /// Whether slot `i` already holds `normalize(name)` and `normalize(cname)`.
    #[inline]
    fn same_text(&self, i: u32, name: &[u8], cname: Option<&[u8]>) -> bool {
        let s = &self.slots[i as usize];
        let Some((old_name, old_cname)) = self.text(i).split_at_checked(s.name_len as usize) else {
            return false;
        };
        same_name(old_name, name)
            && match (s.has_cname, cname) {
                (true, Some(new)) => same_name(old_cname, new),
                (false, None) => true,
                _ => false,
            }
    }

    fn set_text(&mut self, i: u32, name: &[u8], cname: Option<&[u8]>) {
        let name = normalize(name);
        let cname = cname.map(normalize);
        let (n, c) = (name.len(), cname.as_deref().map_or(0, str::len));
        let total = n + c;
        let i = i as usize;
        let slot = &mut self.slots[i];
        slot.name_len = n as u32;
        slot.has_cname = cname.is_some();
        if total <= INLINE {
            // The side array is read only when the text was there: one
            // cache miss less per changed mapping.
            let was_long = slot.inline_len == ON_HEAP;
            slot.inline[..n].copy_from_slice(name.as_bytes());
            if let Some(cname) = &cname {
                slot.inline[n..total].copy_from_slice(cname.as_bytes());
            }
            slot.inline_len = total as u8;
            if was_long {
                self.long[i] = Box::default();
            }
        } else {
            let mut text = String::with_capacity(total);
            text.push_str(&name);
            text.push_str(cname.as_deref().unwrap_or(""));
            self.long[i] = text.into_boxed_str();
            slot.inline_len = ON_HEAP;
        }
    }

    fn resolved(&self, i: u32) -> Resolved<'_> {
        let s = &self.slots[i as usize];
        // Always valid UTF-8 split at a character boundary: it was built
        // from two `str`s. The fallbacks only keep this panic-free.
        let text = std::str::from_utf8(self.text(i)).unwrap_or("");
        let at = s.name_len as usize;
        Resolved {
            name: text.get(..at).unwrap_or(text),
            cname: s.has_cname.then(|| text.get(at..).unwrap_or("")),
        }
    }

    fn touch(&mut self, i: u32) {
        // Entries ahead of `i` were all moved after it, so fewer than
        // `window` moves since its own means it is that close to the front.
        // (After 2^32 moves the counter wraps; the worst that does is leave
        // one entry where it is once.)
        if self.head != i && self.moves.wrapping_sub(self.links[i as usize].stamp) >= self.window {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn unlink(&mut self, i: u32) {
        let Link { prev, next, .. } = self.links[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        self.moves = self.moves.wrapping_add(1);
        self.links[i as usize] = Link {
            prev: NIL,
            next: old,
            stamp: self.moves,
        };
        if old == NIL {
            self.tail = i;
        } else {
            self.links[old as usize].prev = i;
        }
        self.head = i;
    }
}

/// Lower case, one trailing dot removed, invalid UTF-8 replaced.
pub(crate) fn normalize(name: &[u8]) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let name = name.strip_suffix(b".").unwrap_or(name);
    // dnsmasq logs names as asked, nearly always lower-case ASCII: one pass
    // eight bytes at a time settles that. For a 22-byte name std's UTF-8
    // check (byte by byte up to an aligned word) and a byte loop for capitals
    // cost ~310 instructions; this, 84, and 209 with `from_utf8` after it:
    // no safe call turns checked ASCII into `&str` without checking again.
    if crate::swar::is_lower_ascii(name) {
        // SAFETY: every byte of `name` is below 0x80 (`is_lower_ascii`), and
        // a run of ASCII bytes is valid UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(name) });
    }
    match std::str::from_utf8(name) {
        Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(s),
        Ok(s) => Cow::Owned(s.to_ascii_lowercase()),
        Err(_) => Cow::Owned(String::from_utf8_lossy(name).to_ascii_lowercase()),
    }
}

/// Whether `normalize(raw) == stored`, without allocating.
#[inline]
fn same_name(stored: &[u8], raw: &[u8]) -> bool {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    // dnsmasq logs names as asked, which is almost always lower case already:
    // try the plain (vectorised) comparison first.
    // `stored` is lower case, so ignoring case can only help when `raw` has
    // an upper-case letter; a name that merely differs skips that pass.
    stored.len() == raw.len()
        && (stored == raw
            || (raw.iter().any(u8::is_ascii_uppercase) && stored.eq_ignore_ascii_case(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn index_hashes_spread_addresses_that_share_their_low_bits() {
        // Addresses that differ only in high bits must not share a bucket (the
        // weakness of an unkeyed multiply hash), and two caches hash apart.
        let cache = DomainCache::new(16);
        let mut buckets = std::collections::HashSet::new();
        for i in 0u128..1024 {
            let key = Key::of(IpAddr::V6((i << 100).into()));
            buckets.insert(cache.hash(&key) & 0x3ff);
        }
        assert!(buckets.len() > 500, "{}", buckets.len());
        let other = DomainCache::new(16);
        let key = Key::of(ip("192.0.2.1"));
        assert_ne!(cache.hash(&key), other.hash(&key));
    }

    #[test]
    fn insert_lookup_normalises() {
        let mut c = DomainCache::new(4);
        c.insert(ip("192.0.2.1"), "WWW.Example.COM.", None);
        c.insert(ip("2001:db8::1"), "alias.example", Some("Target.Example."));
        assert_eq!(
            c.lookup(ip("192.0.2.1")),
            Some(Resolved {
                name: "www.example.com",
                cname: None
            })
        );
        assert_eq!(
            c.lookup(ip("2001:db8::1")),
            Some(Resolved {
                name: "alias.example",
                cname: Some("target.example")
            })
        );
        assert_eq!(c.lookup(ip("192.0.2.2")), None);
        // An IPv4 address and its IPv4-mapped IPv6 form are different keys.
        assert_eq!(c.lookup(ip("::ffff:192.0.2.1")), None);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn latest_mapping_wins() {
        let mut c = DomainCache::new(4);
        c.insert(ip("192.0.2.1"), "a.example", Some("t.example"));
        c.insert(ip("192.0.2.1"), "b.example", None);
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().name, "b.example");
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().cname, None);
        c.insert(ip("192.0.2.1"), "B.EXAMPLE", Some("u.example"));
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().name, "b.example");
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().cname, Some("u.example"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn lru_eviction_respects_use() {
        let mut c = DomainCache::new(3);
        for i in 1..=3 {
            c.insert(ip(&format!("192.0.2.{i}")), &format!("n{i}.example"), None);
        }
        // Use .1, so .2 is now the least recently used.
        assert!(c.lookup(ip("192.0.2.1")).is_some());
        c.insert(ip("192.0.2.4"), "n4.example", None);
        assert_eq!(c.len(), 3);
        assert!(c.peek(ip("192.0.2.2")).is_none());
        for i in [1, 3, 4] {
            assert_eq!(
                c.peek(ip(&format!("192.0.2.{i}")))
                    .map(|r| r.name.to_owned()),
                Some(format!("n{i}.example"))
            );
        }
        // peek does not refresh: .3 is the oldest now.
        assert!(c.peek(ip("192.0.2.3")).is_some());
        c.insert(ip("192.0.2.5"), "n5.example", None);
        assert!(c.peek(ip("192.0.2.3")).is_none());
        // Re-inserting an address refreshes it too.
        c.insert(ip("192.0.2.1"), "n1.example", None);
        c.insert(ip("192.0.2.6"), "n6.example", None);
        assert!(c.peek(ip("192.0.2.4")).is_none());
        assert!(c.peek(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn bound_holds_under_churn_and_zero_keeps_nothing() {
        let mut c = DomainCache::new(100);
        for i in 0u32..10_000 {
            c.insert(IpAddr::from(i.to_be_bytes()), "x.example", None);
            assert!(c.len() <= 100);
        }
        assert_eq!(c.len(), 100);
        // Exactly the last 100 survive.
        for i in 9_900u32..10_000 {
            assert!(c.peek(IpAddr::from(i.to_be_bytes())).is_some(), "{i}");
        }
        assert!(c.peek(IpAddr::from(9_899u32.to_be_bytes())).is_none());
        let mut z = DomainCache::new(0);
        z.insert(ip("192.0.2.1"), "a.example", None);
        assert!(z.is_empty());
        assert_eq!(z.lookup(ip("192.0.2.1")), None);
    }

    #[test]
    fn capacity_one() {
        let mut c = DomainCache::new(1);
        c.insert(ip("192.0.2.1"), "a.example", None);
        c.insert(ip("192.0.2.2"), "b.example", None);
        assert_eq!(c.len(), 1);
        assert!(c.peek(ip("192.0.2.1")).is_none());
        assert_eq!(c.lookup(ip("192.0.2.2")).unwrap().name, "b.example");
    }

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<Bucket>(), 8);
    }

    #[test]
    fn long_text_moves_between_slot_and_heap() {
        let long = format!("{}.example", "a".repeat(60));
        let mut c = DomainCache::new(2);
        // Exactly INLINE bytes of text stay inline; one more goes to the heap.
        let fits = "n".repeat(20);
        let target = "t".repeat(INLINE - 20);
        c.insert(ip("192.0.2.1"), &fits, Some(&target));
        c.flush();
        assert_eq!(c.slots[0].inline_len as usize, INLINE);
        let target = "t".repeat(INLINE - 19);
        c.insert(ip("192.0.2.1"), &fits, Some(&target));
        c.flush();
        assert_eq!(c.slots[0].inline_len, ON_HEAP);
        assert_eq!(
            c.peek(ip("192.0.2.1")),
            Some(Resolved {
                name: &fits,
                cname: Some(&target)
            })
        );
        c.insert(ip("192.0.2.1"), &long.to_uppercase(), None);
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().name, long);
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().cname, None);
        // Back to a short name: the long text is released.
        c.insert(ip("192.0.2.1"), "short.example", Some(""));
        c.flush();
        assert!(c.long[0].is_empty());
        assert_eq!(
            c.peek(ip("192.0.2.1")),
            Some(Resolved {
                name: "short.example",
                cname: Some("")
            })
        );
        // An evicted slot's long text is replaced as well.
        c.insert(ip("192.0.2.2"), &long, None);
        c.insert(ip("192.0.2.3"), "x.example", None);
        assert!(c.peek(ip("192.0.2.1")).is_none());
        assert_eq!(c.peek(ip("192.0.2.2")).unwrap().name, long);
        assert_eq!(c.peek(ip("192.0.2.3")).unwrap().name, "x.example");
    }

    #[test]
    fn index_stays_at_most_a_quarter_full_and_consistent() {
        // Many evictions through a small table exercise backward-shift
        // deletion over wrapped runs; every held address stays findable.
        let mut c = DomainCache::new(37);
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut held = std::collections::VecDeque::new();
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let a = IpAddr::from(((rng % 200) as u32 | 0xc000_0200).to_be_bytes());
            c.insert(a, "n.example", None);
            held.retain(|x| *x != a);
            held.push_back(a);
            if held.len() > 37 {
                held.pop_front();
            }
            let len = c.len();
            assert!(c.buckets.len() >= 4 * len);
            assert_eq!(c.buckets.iter().filter(|b| b.slot != NIL).count(), len);
        }
        for a in &held {
            assert!(c.peek(*a).is_some(), "{a}");
        }
        assert_eq!(c.len(), 37);
    }

    /// What the cache must behave like: a list, most recent first.
    #[derive(Default)]
    struct Model {
        cap: usize,
        entries: Vec<(IpAddr, String, Option<String>)>,
    }

    impl Model {
        fn insert(&mut self, ip: IpAddr, name: &str, cname: Option<&str>) {
            if self.cap == 0 {
                return;
            }
            let norm = |s: &str| normalize(s.as_bytes()).into_owned();
            self.entries.retain(|e| e.0 != ip);
            self.entries.insert(0, (ip, norm(name), cname.map(norm)));
            self.entries.truncate(self.cap);
        }
        fn lookup(&mut self, ip: IpAddr) -> Option<(String, Option<String>)> {
            let at = self.entries.iter().position(|e| e.0 == ip)?;
            let e = self.entries.remove(at);
            self.entries.insert(0, e.clone());
            Some((e.1, e.2))
        }
        fn peek(&self, ip: IpAddr) -> Option<(String, Option<String>)> {
            let e = self.entries.iter().find(|e| e.0 == ip)?;
            Some((e.1.clone(), e.2.clone()))
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, usize, Option<usize>),
        Lookup(u8),
        Peek(u8),
    }

    fn addr(n: u8) -> IpAddr {
        // IPv4 and IPv6 forms of the same bits, so families must not mix up.
        if n % 2 == 0 {
            IpAddr::from([192, 0, 2, n / 2])
        } else {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&[192, 0, 2, n / 2]);
            IpAddr::from(b)
        }
    }

    const NAMES: [&str; 5] = [
        "a.example",
        "A.EXAMPLE.",
        "b.example",
        "a-name-long-enough-to-need-the-heap.example.com",
        "",
    ];

    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..24, 0..NAMES.len(), proptest::option::of(0..NAMES.len()))
                .prop_map(|(a, n, c)| Op::Insert(a, n, c)),
            1 => (0u8..24).prop_map(Op::Lookup),
            1 => (0u8..24).prop_map(Op::Peek),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_an_lru_list(cap in 0usize..9, ops in proptest::collection::vec(op(), 0..300)) {
            let mut c = DomainCache::new(cap);
            let mut m = Model { cap, ..Model::default() };
            let own = |r: Resolved<'_>| (r.name.to_owned(), r.cname.map(str::to_owned));
            for op in ops {
                match op {
                    Op::Insert(a, n, cn) => {
                        c.insert(addr(a), NAMES[n], cn.map(|i| NAMES[i]));
                        m.insert(addr(a), NAMES[n], cn.map(|i| NAMES[i]));
                    }
                    Op::Lookup(a) => prop_assert_eq!(c.lookup(addr(a)).map(own), m.lookup(addr(a))),
                    Op::Peek(a) => prop_assert_eq!(c.peek(addr(a)).map(own), m.peek(addr(a))),
                }
                prop_assert_eq!(c.len(), m.entries.len());
            }
            for a in 0u8..24 {
                prop_assert_eq!(c.peek(addr(a)).map(own), m.peek(addr(a)));
            }
        }
    }

    proptest! {
        /// The same, with long runs of inserts between two reads, so that the
        /// queue fills, wraps and evicts (the test above reads after every
        /// operation, which applies the queue each time).
        #[test]
        fn queued_inserts_behave_like_an_lru_list(
            cap in 0usize..16,
            ops in proptest::collection::vec(prop_oneof![
                12 => (0u8..40, 0..NAMES.len(), proptest::option::of(0..NAMES.len()))
                    .prop_map(|(a, n, c)| Op::Insert(a, n, c)),
                1 => (0u8..40).prop_map(Op::Lookup),
                1 => (0u8..40).prop_map(Op::Peek),
            ], 0..400),
        ) {
            let mut c = DomainCache::new(cap);
            let mut m = Model { cap, ..Model::default() };
            let own = |r: Resolved<'_>| (r.name.to_owned(), r.cname.map(str::to_owned));
            let addr40 = |a: u8| if a < 24 { addr(a) } else { IpAddr::from([203, 0, 113, a]) };
            for op in ops {
                match op {
                    Op::Insert(a, n, cn) => {
                        c.insert(addr40(a), NAMES[n], cn.map(|i| NAMES[i]));
                        m.insert(addr40(a), NAMES[n], cn.map(|i| NAMES[i]));
                    }
                    Op::Lookup(a) => prop_assert_eq!(c.lookup(addr40(a)).map(own), m.lookup(addr40(a))),
                    Op::Peek(a) => prop_assert_eq!(c.peek(addr40(a)).map(own), m.peek(addr40(a))),
                }
            }
            prop_assert_eq!(c.len(), m.entries.len());
            for a in 0u8..40 {
                prop_assert_eq!(c.peek(addr40(a)).map(own), m.peek(addr40(a)));
            }
        }
    }

    #[test]
    fn a_use_near_the_front_does_not_relink() {
        // 16 entries: window 2.
        let a = |i: u8| IpAddr::from([198, 51, 100, i]);
        let mut c = DomainCache::new(16);
        for i in 0..16 {
            c.insert(a(i), "n.example", None);
        }
        c.flush();
        let (moves, head) = (c.moves, c.head);
        // .14 went to the front one move ago: it is second, and stays there.
        assert!(c.lookup(a(14)).is_some());
        assert_eq!((c.moves, c.head), (moves, head));
        // .13 went two moves ago: it is relinked.
        assert!(c.lookup(a(13)).is_some());
        assert_eq!(c.moves, moves + 1);
        assert_eq!(c.slots[c.head as usize].key(), Key::of(a(13)));
        // Re-confirming an answer counts as a use too.
        c.insert(a(0), "n.example", None);
        c.flush();
        assert_eq!(c.moves, moves + 2);
        // .1 is the least recently seen now, then .2.
        c.insert(a(100), "n.example", None);
        c.insert(a(101), "n.example", None);
        assert!(c.peek(a(1)).is_none() && c.peek(a(2)).is_none());
        assert!(c.peek(a(0)).is_some() && c.peek(a(3)).is_some());
    }

    proptest! {
        /// The relaxed order's guarantee: an address is never evicted while
        /// it is among the `capacity - capacity / 8` most recently seen.
        #[test]
        fn never_evicts_the_recently_seen(cap in 16usize..70,
                                          ops in proptest::collection::vec((0u8..120, any::<bool>()), 0..600)) {
            let mut c = DomainCache::new(cap);
            let keep = cap - cap / 8;
            // Distinct addresses, most recently seen first.
            let mut seen: Vec<IpAddr> = Vec::new();
            let mut inserted = std::collections::HashSet::new();
            for (a, look) in ops {
                let ip = IpAddr::from([198, 51, 100, a]);
                let sighted = if look {
                    c.lookup(ip).is_some()
                } else {
                    c.insert(ip, "n.example", None);
                    inserted.insert(ip);
                    true
                };
                if sighted {
                    seen.retain(|x| *x != ip);
                    seen.insert(0, ip);
                }
                prop_assert_eq!(c.len(), inserted.len().min(cap));
                for x in seen.iter().take(keep) {
                    prop_assert!(c.peek(*x).is_some(), "{} evicted", x);
                }
            }
        }
    }

    /// `normalize` before its ASCII fast path: the reference it must agree with.
    fn normalize_plain(name: &[u8]) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        let name = name.strip_suffix(b".").unwrap_or(name);
        match std::str::from_utf8(name) {
            Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(s),
            Ok(s) => Cow::Owned(s.to_ascii_lowercase()),
            Err(_) => Cow::Owned(String::from_utf8_lossy(name).to_ascii_lowercase()),
        }
    }

    proptest! {
        #[test]
        fn normalize_agrees_with_the_plain_version(name in proptest::collection::vec(
            prop_oneof![
                6 => proptest::sample::select(b"abz09-.".to_vec()),
                2 => proptest::sample::select(b"AZ@[`{ \x7f\x00".to_vec()),
                1 => proptest::sample::select(b"\x80\xbf\xc3\xa9\xe2\x82\xac\xf0\x9f\xff".to_vec()),
                1 => any::<u8>(),
            ], 0..48)) {
            let (got, want) = (normalize(&name), normalize_plain(&name));
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(
                matches!(got, std::borrow::Cow::Borrowed(_)),
                matches!(want, std::borrow::Cow::Borrowed(_))
            );
        }
    }

    #[test]
    fn invalid_utf8_names_are_replaced() {
        let mut c = DomainCache::new(2);
        c.insert_raw(ip("192.0.2.1"), b"a\xffB.example.", None);
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().name, "a\u{fffd}b.example");
        c.insert_raw(ip("192.0.2.1"), b"a\xffB.example.", None);
        assert_eq!(c.len(), 1);
    }
}
