//! The bounded address → name map (LRU) that names NFLOG destinations.
//!
//! A `HashMap` from address to slot plus a doubly-linked recency list kept
//! by index: lookup, insert, touch and eviction are all O(1), and memory is
//! bounded by the capacity given at construction. The list links live in
//! their own compact array (8 bytes an entry), apart from the names, so
//! reordering on every use touches little memory.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::hash::FastBuild;

const NIL: u32 = u32::MAX;

/// The map key: the address bits and the family. Two `u64` halves rather
/// than a `u128` keep it at 24 bytes (8-byte aligned), so an index entry is
/// 32 bytes, not 48; it hashes as two words (two folds), where `IpAddr`'s
/// derived `Hash` goes through the byte-slice path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        state.write_u64(self.hi);
        state.write_u64(self.lo);
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

#[derive(Debug)]
struct Slot {
    ip: IpAddr,
    name: Box<str>,
    cname: Option<Box<str>>,
}

/// Neighbours in the recency list; `NIL` at the ends.
#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

/// Bounded LRU map from address to the name it was most recently resolved from.
#[derive(Debug)]
pub struct DomainCache {
    capacity: usize,
    index: HashMap<Key, u32, FastBuild>,
    slots: Vec<Slot>,
    links: Vec<Link>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
}

impl DomainCache {
    /// A cache holding at most `capacity` addresses (0 keeps nothing;
    /// at most `u32::MAX - 1`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(NIL as usize - 1);
        DomainCache {
            capacity,
            index: HashMap::with_hasher(FastBuild::new()),
            slots: Vec::new(),
            links: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// How many addresses are held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no address is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The most addresses this cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The name `ip` was last resolved from, marking the entry as recently used.
    pub fn lookup(&mut self, ip: IpAddr) -> Option<Resolved<'_>> {
        let i = *self.index.get(&Key::of(ip))?;
        self.touch(i);
        Some(self.resolved(i))
    }

    /// Like [`lookup`](Self::lookup) without changing the eviction order.
    pub fn peek(&self, ip: IpAddr) -> Option<Resolved<'_>> {
        self.index.get(&Key::of(ip)).map(|&i| self.resolved(i))
    }

    /// Maps `ip` to `name` (and its CNAME target), evicting the least recently
    /// used address when full. Names are lower-cased and lose one trailing dot.
    pub fn insert(&mut self, ip: IpAddr, name: &str, cname: Option<&str>) {
        self.insert_raw(ip, name.as_bytes(), cname.map(str::as_bytes));
    }

    /// [`insert`](Self::insert) from log bytes: allocates only when the
    /// mapping changes, so a log full of repeated answers costs one probe each.
    pub(crate) fn insert_raw(&mut self, ip: IpAddr, name: &[u8], cname: Option<&[u8]>) {
        if self.capacity == 0 {
            return;
        }
        let key = Key::of(ip);
        if let Some(&i) = self.index.get(&key) {
            let slot = &mut self.slots[i as usize];
            if !same_name(&slot.name, name) {
                slot.name = normalize(name).into();
            }
            let same_cname = match (&slot.cname, cname) {
                (Some(old), Some(new)) => same_name(old, new),
                (None, None) => true,
                _ => false,
            };
            if !same_cname {
                slot.cname = cname.map(|c| normalize(c).into());
            }
            self.touch(i);
            return;
        }
        let name: Box<str> = normalize(name).into();
        let cname: Option<Box<str>> = cname.map(|c| normalize(c).into());
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Slot { ip, name, cname });
            self.links.push(Link {
                prev: NIL,
                next: NIL,
            });
            (self.slots.len() - 1) as u32
        } else {
            // Reuse the least recently used slot.
            let i = self.tail;
            self.unlink(i);
            let slot = &mut self.slots[i as usize];
            self.index.remove(&Key::of(slot.ip));
            slot.ip = ip;
            slot.name = name;
            slot.cname = cname;
            i
        };
        self.index.insert(key, i);
        self.push_front(i);
    }

    fn resolved(&self, i: u32) -> Resolved<'_> {
        let s = &self.slots[i as usize];
        Resolved {
            name: &s.name,
            cname: s.cname.as_deref(),
        }
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn unlink(&mut self, i: u32) {
        let Link { prev, next } = self.links[i as usize];
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
        self.links[i as usize] = Link {
            prev: NIL,
            next: old,
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
    match std::str::from_utf8(name) {
        Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(s),
        Ok(s) => Cow::Owned(s.to_ascii_lowercase()),
        Err(_) => Cow::Owned(String::from_utf8_lossy(name).to_ascii_lowercase()),
    }
}

/// Whether `normalize(raw) == stored`, without allocating.
#[inline]
fn same_name(stored: &str, raw: &[u8]) -> bool {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    // dnsmasq logs names as asked, which is almost always lower case already:
    // try the plain (vectorised) comparison first.
    stored.len() == raw.len()
        && (stored.as_bytes() == raw || stored.as_bytes().eq_ignore_ascii_case(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
    fn invalid_utf8_names_are_replaced() {
        let mut c = DomainCache::new(2);
        c.insert_raw(ip("192.0.2.1"), b"a\xffB.example.", None);
        assert_eq!(c.peek(ip("192.0.2.1")).unwrap().name, "a\u{fffd}b.example");
        c.insert_raw(ip("192.0.2.1"), b"a\xffB.example.", None);
        assert_eq!(c.len(), 1);
    }
}
