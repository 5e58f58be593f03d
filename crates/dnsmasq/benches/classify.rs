//! Throughput of the dns source's single pass, and the cost of a cache lookup.
//!
//! Run: `cargo bench -p shield-dnsmasq --bench classify` (optional argument:
//! MiB of unique log to generate, default 256; the pass runs over it 4 times;
//! `classify-only` skips the allow-list and cache micro-benchmarks, for profiling;
//! `hot` or `churn` runs only that log; `blocked` runs only the blocked-query
//! pass below, for callgrind, and `blocked many` the same against the
//! 1 401-domain list of the other passes).
//!
//! The log is generated in memory (256 MiB of distinct lines, passed over
//! 4 times = 1 GiB classified): names under 2 000 domains, of which 30 % of
//! queries are not allowed; A or AAAA at random; a lookup is `query` +
//! `forwarded` + one or two `reply` lines, or `query` + `cached`, and one in
//! ten allowed names is a CNAME chain (`<CNAME>` + target). Two logs:
//! "hot" (5 000 names, their ~12 000 addresses fit in the cache: the usual
//! container) and "churn" (100 000 names, ~250 000 addresses through a
//! 65 536-entry cache: every answer evicts, the worst case).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use shield_dnsmasq::{AllowList, Classifier, DomainCache};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, no dependency.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DOMAINS: u64 = 2_000;

fn domain(d: u64) -> String {
    // 70 % of domains are allowed ("ok-"), 30 % are not ("bad-").
    if d % 10 < 7 {
        format!("ok-{d}.example.com")
    } else {
        format!("bad-{d}.example.net")
    }
}

fn v4(n: u64, k: u64) -> Ipv4Addr {
    let x = (n * 2 + k) as u32;
    Ipv4Addr::from(0x0a00_0000 | (x & 0x00ff_ffff))
}

fn v6(n: u64, k: u64) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        (n >> 16) as u16,
        (n as u16) ^ (k as u16),
    )
}

fn generate(bytes: usize, names: u64) -> (Vec<u8>, usize, usize) {
    use std::fmt::Write;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(bytes + 4096);
    let (mut lines, mut queries) = (0usize, 0usize);
    let mut serial = 0u64;
    while out.len() < bytes {
        let n = rng.below(names);
        let d = n % DOMAINS;
        let name = format!("host{}.{}", n / DOMAINS, domain(d));
        let aaaa = rng.below(2) == 1;
        let qtype = if aaaa { "AAAA" } else { "A" };
        let sec = serial % 60;
        serial += 1;
        let pre = format!("Mar 31 12:00:{sec:02} dnsmasq[4242]: ");
        let addr = |k: u64| -> IpAddr {
            if aaaa {
                IpAddr::V6(v6(n, k))
            } else {
                IpAddr::V4(v4(n, k))
            }
        };
        let _ = writeln!(out, "{pre}query[{qtype}] {name} from 10.0.2.100");
        queries += 1;
        lines += 1;
        if rng.below(3) == 0 {
            let _ = writeln!(out, "{pre}cached {name} is {}", addr(0));
            lines += 1;
            continue;
        }
        let _ = writeln!(out, "{pre}forwarded {name} to 10.0.2.3");
        lines += 1;
        if d % 10 < 7 && n % 10 == 0 {
            let _ = writeln!(out, "{pre}reply {name} is <CNAME>");
            let _ = writeln!(
                out,
                "{pre}reply edge{}.cdn.example.org is {}",
                n % 97,
                addr(0)
            );
            lines += 2;
        } else {
            let _ = writeln!(out, "{pre}reply {name} is {}", addr(0));
            lines += 1;
            if rng.below(2) == 0 {
                let _ = writeln!(out, "{pre}reply {name} is {}", addr(1));
                lines += 1;
            }
        }
    }
    (out.into_bytes(), lines, queries)
}

fn pass(
    buf: &[u8],
    classifier: &mut Classifier,
    allow: &AllowList,
    mut cache: Option<&mut DomainCache>,
) -> (usize, usize) {
    let (mut lines, mut blocked) = (0, 0);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', buf) {
        let line = &buf[start..nl];
        start = nl + 1;
        lines += 1;
        if let Some(b) = classifier.classify(line, allow, cache.as_deref_mut()) {
            blocked += 1;
            black_box(&b);
        }
    }
    (lines, blocked)
}

/// The hottest line of a history replay: a `query[A]` of a name that is not
/// allowed (a `blocked_query` event), classified without a cache against a
/// one-entry allow-list. Prints lines/s; under callgrind, `classify`'s
/// inclusive count divided by the line count is its cost per line. With
/// `profile`, against that list instead (`allowed.example` added).
fn blocked_pass(mib: usize, profile: Option<&str>) {
    use std::fmt::Write;
    let profile = format!("allowed.example\n{}", profile.unwrap_or(""));
    let allow = AllowList::from_domain_files(&profile, "", "").list;
    let mut log = String::with_capacity((mib << 20) + 128);
    let mut i = 0u64;
    while log.len() < mib << 20 {
        let _ = writeln!(
            log,
            "Dec  2 04:00:53 dnsmasq[7]: query[A] h{}.blocked{}.example from 10.0.2.100",
            i % 1000,
            i % 97
        );
        i += 1;
    }
    let mut classifier = Classifier::new(false);
    let t = Instant::now();
    let (lines, blocked) = pass(log.as_bytes(), &mut classifier, &allow, None);
    let s = t.elapsed().as_secs_f64();
    assert_eq!(lines, blocked);
    println!(
        "blocked query[A] lines: {:6.2} M lines/s ({lines} lines, {:.2}s)",
        lines as f64 / s / 1e6,
        s
    );
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(256);
    const REPEAT: usize = 4;
    let profile: String = (0..DOMAINS)
        .filter(|d| d % 10 < 7)
        .map(|d| format!("{}\n", domain(d)))
        .chain(std::iter::once("*.cdn.example.org\n".to_owned()))
        .collect();
    if std::env::args().any(|a| a == "blocked") {
        let many = std::env::args().any(|a| a == "many");
        blocked_pass(mib, many.then_some(profile.as_str()));
        return;
    }
    let allow = AllowList::from_domain_files(&profile, "", "").list;

    // `hot` or `churn` as an argument runs only that log (for profiling).
    let only: Option<String> = std::env::args()
        .skip(1)
        .find(|a| a == "hot" || a == "churn");
    for (label, names) in [("hot", 5_000u64), ("churn", 100_000)] {
        if only.as_deref().is_some_and(|o| o != label) {
            continue;
        }
        let t = Instant::now();
        let (buf, lines, queries) = generate(mib << 20, names);
        println!(
            "{label} log: {:.0} MiB, {lines} lines ({queries} queries, {names} names), generated in {:.1}s; passed over {REPEAT} times",
            buf.len() as f64 / 1048576.0,
            t.elapsed().as_secs_f64()
        );
        for with_cache in [false, true] {
            if !with_cache && label == "churn" {
                continue; // the same as hot without a cache
            }
            let mut classifier = Classifier::new(false);
            let mut cache = DomainCache::new(65_536);
            let t = Instant::now();
            let (mut total, mut blocked) = (0, 0);
            for _ in 0..REPEAT {
                let (l, b) = pass(
                    &buf,
                    &mut classifier,
                    &allow,
                    with_cache.then_some(&mut cache),
                );
                total += l;
                blocked += b;
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "  classify {}: {:6.2} M lines/s, {:5.0} MB/s ({} lines, {} blocked = {:.1} % of queries, {:.2}s){}",
                if with_cache { "+ cache (65536)" } else { "without cache  " },
                total as f64 / s / 1e6,
                (buf.len() * REPEAT) as f64 / s / 1e6,
                total,
                blocked,
                100.0 * blocked as f64 / (queries * REPEAT) as f64,
                s,
                if with_cache { format!(", cache holds {}", cache.len()) } else { String::new() }
            );
        }
    }

    if std::env::args().any(|a| a == "classify-only") {
        return;
    }

    // Allow-list lookups alone, over 4 096 names that stay in the CPU cache
    // (as the line being classified does).
    let names: Vec<String> = (0..4_096u64)
        .map(|n| format!("host{}.{}", n / DOMAINS, domain((n * 7) % DOMAINS)))
        .collect();
    let t = Instant::now();
    let mut allowed = 0usize;
    const ROUNDS: usize = 500;
    for _ in 0..ROUNDS {
        for n in &names {
            allowed += usize::from(allow.allows(black_box(n.as_bytes())));
        }
    }
    let total = (ROUNDS * names.len()) as f64;
    println!(
        "AllowList::allows: {:.1} ns per name ({} domains, {:.0} % allowed)",
        t.elapsed().as_secs_f64() * 1e9 / total,
        allow.len(),
        100.0 * allowed as f64 / total
    );

    // Cache lookups at growing sizes: the cost must not grow with the size.
    for size in [1_000usize, 10_000, 100_000, 1_000_000] {
        let mut cache = DomainCache::new(size);
        let mut rng = Rng(42);
        let keys: Vec<IpAddr> = (0..size)
            .map(|i| {
                if i % 2 == 0 {
                    IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
                } else {
                    IpAddr::V6(Ipv6Addr::from(
                        u128::from(rng.next()) << 64 | u128::from(rng.next()),
                    ))
                }
            })
            .collect();
        let t = Instant::now();
        for k in &keys {
            cache.insert(*k, "host.example.com", None);
        }
        let insert_ns = t.elapsed().as_secs_f64() * 1e9 / size as f64;
        let probes: Vec<IpAddr> = (0..2_000_000)
            .map(|_| keys[rng.below(size as u64) as usize])
            .collect();
        let t = Instant::now();
        let mut hits = 0usize;
        for p in &probes {
            hits += usize::from(cache.lookup(black_box(*p)).is_some());
        }
        let hit_ns = t.elapsed().as_secs_f64() * 1e9 / probes.len() as f64;
        let t = Instant::now();
        for i in 0..2_000_000u32 {
            hits += usize::from(
                cache
                    .lookup(IpAddr::V4(Ipv4Addr::from(i.wrapping_mul(2_654_435_761))))
                    .is_some(),
            );
        }
        let miss_ns = t.elapsed().as_secs_f64() * 1e9 / 2e6;
        println!(
            "DomainCache {size:>9} entries: lookup hit {hit_ns:.1} ns, miss {miss_ns:.1} ns, insert {insert_ns:.1} ns ({hits} hits)"
        );
    }
}
