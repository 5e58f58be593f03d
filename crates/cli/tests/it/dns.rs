//! The dns source end to end: a real dnsmasq in a namespace the test owns, queried with real
//! lookups, its query log followed by the real binary.

use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shield_lab::{dig, Dnsmasq, Netns, StateDir};

use crate::support::{State, Watch, DEADLINE};

/// A shielded resolver in its own namespace, in front of a fake internet that knows every name.
struct Resolver {
    ns: Netns,
    _internet: Dnsmasq,
    resolver: Dnsmasq,
}

impl Resolver {
    fn start(state: &State, allowed: &[&str], denied: &[&str]) -> Resolver {
        StateDir::domain_files(state.path(), "dnsmasq-live", allowed, denied).unwrap();
        Resolver::start_on(state, allowed)
    }

    /// A resolver on a state dir that is already written; `allowed` feeds dnsmasq's nftset
    /// lines only (what shield-watch allows comes from the state dir).
    fn start_on(state: &State, allowed: &[&str]) -> Resolver {
        shield_lab::preflight().expect("the dns tests need root, dnsmasq and dig");
        let ns = Netns::create("shw-dns").unwrap();
        let records = [
            ("allowed.example", "203.0.113.10".parse().unwrap()),
            ("api.allowed.example", "203.0.113.11".parse().unwrap()),
            ("x.wild.example", "203.0.113.12".parse().unwrap()),
            ("blocked.example", "203.0.113.13".parse().unwrap()),
            ("later.example", "203.0.113.14".parse().unwrap()),
        ];
        let internet =
            Dnsmasq::upstream(Some(&ns), "127.0.0.2".parse().unwrap(), 5353, &records).unwrap();
        let resolver = Dnsmasq::shielded(&ns, state.path(), internet.addr(), allowed).unwrap();
        Resolver {
            ns,
            _internet: internet,
            resolver,
        }
    }

    fn server(&self) -> SocketAddr {
        self.resolver.addr()
    }

    fn lookup(&self, name: &str, qtype: &str) {
        // The answer does not matter; the query line it leaves in the log does.
        dig(&self.ns, self.server(), name, qtype).unwrap();
    }
}

fn blocked(name: &str, qtype: &str) -> String {
    format!(
        r#""source":"dns","action":"blocked_query","container":"c","domain":"{name}","query_type":"{qtype}"}}"#
    )
}

/// Strips the volatile `ts` so lines can be compared exactly.
fn without_ts(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    let ts = value["ts"].as_str().unwrap();
    assert_eq!(ts.len(), 32, "{ts}");
    line.replacen(&format!(r#"{{"ts":"{ts}","#), "", 1)
}

#[test]
fn blocked_lookups_are_reported_and_allowed_ones_are_not() {
    let state = State::new(None);
    let resolver = Resolver::start(&state, &["allowed.example", "*.wild.example"], &[]);
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c"]);
    assert_eq!(
        watch.stderr_seen().last().unwrap(),
        "shield-watch: ready (audit,dns)"
    );

    resolver.lookup("allowed.example", "A");
    resolver.lookup("api.allowed.example", "AAAA");
    resolver.lookup("x.wild.example", "A");
    resolver.lookup("blocked.example", "A");
    resolver.lookup("Blocked.Example.", "AAAA");
    // Not A/AAAA: not reported by default.
    resolver.lookup("blocked.example", "TXT");
    resolver.lookup("marker.example", "A");
    let lines: Vec<String> = watch.lines(3).iter().map(|l| without_ts(l)).collect();
    assert_eq!(
        lines,
        [
            blocked("blocked.example", "A"),
            blocked("blocked.example", "AAAA"),
            blocked("marker.example", "A")
        ]
    );
    watch.no_more_lines(Duration::from_millis(300));
}

#[test]
fn all_query_types_reports_txt() {
    let state = State::new(None);
    let resolver = Resolver::start(&state, &["allowed.example"], &[]);
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c", "--all-query-types"]);
    resolver.lookup("exfil.blocked.example", "TXT");
    resolver.lookup("allowed.example", "TXT");
    resolver.lookup("blocked.example", "MX");
    let lines: Vec<String> = watch.lines(2).iter().map(|l| without_ts(l)).collect();
    assert_eq!(
        lines,
        [
            blocked("exfil.blocked.example", "TXT"),
            blocked("blocked.example", "MX")
        ]
    );
}

/// Repeats `name` then a marker lookup until a round shows only the marker, within the deadline.
/// Returns how many rounds still reported `name`.
fn rounds_until_quiet(watch: &mut Watch, resolver: &Resolver, name: &str, marker: &str) -> usize {
    let deadline = Instant::now() + DEADLINE;
    let mut reported = 0;
    loop {
        resolver.lookup(name, "A");
        resolver.lookup(marker, "A");
        let first = without_ts(&watch.lines(1)[0]);
        if first == blocked(marker, "A") {
            return reported;
        }
        assert_eq!(first, blocked(name, "A"));
        assert_eq!(without_ts(&watch.lines(1)[0]), blocked(marker, "A"));
        reported += 1;
        assert!(
            Instant::now() < deadline,
            "the allow-list change was never picked up"
        );
    }
}

#[test]
fn allow_list_changes_apply_while_running() {
    let state = State::new(None);
    let resolver = Resolver::start(&state, &["allowed.example"], &[]);
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c"]);

    resolver.lookup("later.example", "A");
    assert_eq!(
        without_ts(&watch.lines(1)[0]),
        blocked("later.example", "A")
    );

    // Allowed live: the next lookups stop being reported once the change is read.
    let changed = Instant::now();
    fs::write(state.file("live.domains"), "later.example\n").unwrap();
    rounds_until_quiet(&mut watch, &resolver, "later.example", "m1.example");
    let picked_up = changed.elapsed();
    eprintln!("allow-list change picked up after {picked_up:?}");

    // Denied again (domain files: denied removes the exact entry).
    fs::write(state.file("denied.domains"), "later.example\n").unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        resolver.lookup("later.example", "A");
        let line = without_ts(&watch.lines(1)[0]);
        if line == blocked("later.example", "A") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
}

#[test]
fn unprintable_names_are_reported_verbatim() {
    let state = State::new(None);
    let resolver = Resolver::start(&state, &["allowed.example"], &[]);
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c"]);
    // A control byte inside a label: dnsmasq logs "<name unprintable>" for it, even under an
    // allowed parent, and such a lookup is never allowed.
    resolver.lookup("ctl\\001x.allowed.example", "A");
    // dnsmasq 2.90 logs a space verbatim: the name is parsed up to the last " from " and
    // classified like any other (under an allowed parent dnsmasq resolves it, so no event).
    resolver.lookup("a\\032b.allowed.example", "A");
    resolver.lookup("a\\032b.blocked.example", "AAAA");
    resolver.lookup("marker.example", "A");
    let lines: Vec<String> = watch.lines(3).iter().map(|l| without_ts(l)).collect();
    assert_eq!(
        lines,
        [
            blocked("<name unprintable>", "A"),
            blocked("a b.blocked.example", "AAAA"),
            blocked("marker.example", "A")
        ]
    );
}

#[test]
fn policy_layout_most_specific_entry_decides() {
    let state = State::new(None);
    StateDir::policy_dir(
        state.path(),
        "dnsmasq-live",
        &[
            (
                "10-override",
                "+ok.bad.allowed.example # operator exception\n",
            ),
            ("20-security-deny", "-bad.allowed.example %reason=malware\n"),
            (
                "30-provider-allow",
                "+allowed.example\n+*.wild.example\n+192.0.2.0/24\n",
            ),
            ("40-project-allow", "# nothing yet\n"),
            ("live", ""),
        ],
    )
    .unwrap();
    let resolver = Resolver::start_on(&state, &["allowed.example", "wild.example"]);
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c"]);

    for (name, qtype) in [
        ("allowed.example", "A"),
        ("api.allowed.example", "A"),
        ("x.wild.example", "AAAA"),
        ("bad.allowed.example", "A"),
        ("deep.bad.allowed.example", "A"),
        ("ok.bad.allowed.example", "A"),
        ("wild.example", "A"),
        ("marker.example", "A"),
    ] {
        resolver.lookup(name, qtype);
    }
    let lines: Vec<String> = watch.lines(4).iter().map(|l| without_ts(l)).collect();
    assert_eq!(
        lines,
        [
            blocked("bad.allowed.example", "A"),
            blocked("deep.bad.allowed.example", "A"),
            // `*.wild.example` allows the subdomains, not the name itself.
            blocked("wild.example", "A"),
            blocked("marker.example", "A"),
        ]
    );

    // A live deny of an allowed name applies within the reload.
    fs::write(state.path().join("policy/live"), "-allowed.example\n").unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        resolver.lookup("api.allowed.example", "A");
        resolver.lookup("m2.example", "A");
        let first = without_ts(&watch.lines(1)[0]);
        if first == blocked("api.allowed.example", "A") {
            break;
        }
        assert_eq!(first, blocked("m2.example", "A"));
        assert!(
            Instant::now() < deadline,
            "the live deny was never picked up"
        );
    }
}
