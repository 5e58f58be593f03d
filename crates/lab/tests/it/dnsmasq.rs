//! The shielded resolver answers from the fake internet, fills the allow sets, and logs queries.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shield_lab::{dig, dig_status, Dnsmasq, Netns, Ruleset, ShieldedOptions, StateDir};

const UPSTREAM: &str = "127.0.0.2:5353";
const RESOLVER: &str = "127.0.0.1:53";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn allow_set(ns: &Netns, set: &str) -> String {
    ns.exec_ok(&["nft", "list", "set", "inet", "terok_shield", set])
        .unwrap()
}

/// Waits (bounded) for `needle` in the file: dnsmasq writes its log asynchronously to our reads.
fn wait_for_line(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A namespace with the shield's ruleset, a fake internet, and a shielded resolver allowing
/// `test.example`.
struct Container {
    ns: Netns,
    state: tempfile::TempDir,
    _upstream: Dnsmasq,
    resolver: Dnsmasq,
}

fn container(options: &ShieldedOptions<'_>) -> Container {
    let ns = Netns::create(&crate::prefix()).unwrap();
    ns.with_uplink().unwrap();
    Ruleset::shield(100).load(&ns).unwrap();
    let upstream: SocketAddr = UPSTREAM.parse().unwrap();
    let records = [
        ("good.test.example", ip("203.0.113.10")),
        ("good.test.example", ip("2001:db8:5::10")),
        ("other.example.net", ip("203.0.113.20")),
    ];
    let cnames = [("alias.test.example", "good.test.example")];
    let up =
        Dnsmasq::upstream_with_cnames(Some(&ns), upstream.ip(), upstream.port(), &records, &cnames)
            .unwrap();
    let state = tempfile::tempdir().unwrap();
    StateDir::domain_files(state.path(), "dnsmasq-live", &["test.example"], &[]).unwrap();
    let resolver =
        Dnsmasq::shielded_with(&ns, state.path(), upstream, &["test.example"], options).unwrap();
    Container {
        ns,
        state,
        _upstream: up,
        resolver,
    }
}

#[test]
fn allowed_name_resolves_from_upstream_and_lands_in_the_allow_sets() {
    let c = container(&ShieldedOptions::default());
    let server: SocketAddr = RESOLVER.parse().unwrap();
    assert_eq!(c.resolver.addr(), server);
    assert_eq!(
        dig(&c.ns, server, "good.test.example", "A").unwrap().trim(),
        "203.0.113.10"
    );
    assert_eq!(
        dig(&c.ns, server, "good.test.example", "AAAA")
            .unwrap()
            .trim(),
        "2001:db8:5::10"
    );
    assert!(
        allow_set(&c.ns, "allow_v4").contains("203.0.113.10"),
        "{}",
        allow_set(&c.ns, "allow_v4")
    );
    assert!(
        allow_set(&c.ns, "allow_v6").contains("2001:db8:5::10"),
        "{}",
        allow_set(&c.ns, "allow_v6")
    );

    let log = wait_for_line(
        &c.state.path().join("dnsmasq.log"),
        "reply good.test.example is 2001:db8:5::10",
    );
    assert!(
        log.contains("query[A] good.test.example from 127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("nftset add 4 inet terok_shield allow_v4 203.0.113.10"),
        "{log}"
    );
}

#[test]
fn not_allowed_names_are_logged_and_stay_out_of_the_allow_sets() {
    let c = container(&ShieldedOptions::default());
    let server: SocketAddr = RESOLVER.parse().unwrap();
    // Unknown to the internet: NXDOMAIN, and the query is in the log for the watcher.
    assert_eq!(
        dig_status(&c.ns, server, "evil.example.com", "A").unwrap(),
        "NXDOMAIN"
    );
    assert_eq!(dig(&c.ns, server, "evil.example.com", "A").unwrap(), "");
    // Known to the internet but not allowed: it resolves (as with the real shield), but the
    // address never enters the allow set, so connections to it stay blocked.
    assert_eq!(
        dig(&c.ns, server, "other.example.net", "A").unwrap().trim(),
        "203.0.113.20"
    );
    assert!(!allow_set(&c.ns, "allow_v4").contains("203.0.113.20"));

    let log = wait_for_line(
        &c.state.path().join("dnsmasq.log"),
        "reply other.example.net is 203.0.113.20",
    );
    assert!(
        log.contains("query[A] evil.example.com from 127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("reply evil.example.com is NXDOMAIN"), "{log}");
    assert!(
        log.contains("reply other.example.net is 203.0.113.20"),
        "{log}"
    );
}

#[test]
fn cname_answers_show_in_the_log_and_fill_the_set_for_the_allowed_alias() {
    let c = container(&ShieldedOptions::default());
    let server: SocketAddr = RESOLVER.parse().unwrap();
    let answer = dig(&c.ns, server, "alias.test.example", "A").unwrap();
    assert_eq!(
        answer.lines().collect::<Vec<_>>(),
        ["good.test.example.", "203.0.113.10"]
    );
    let log = wait_for_line(
        &c.state.path().join("dnsmasq.log"),
        "reply good.test.example is 203.0.113.10",
    );
    assert!(log.contains("reply alias.test.example is <CNAME>"), "{log}");
    assert!(
        allow_set(&c.ns, "allow_v4").contains("203.0.113.10"),
        "{}",
        allow_set(&c.ns, "allow_v4")
    );
}

#[test]
fn sinkholed_names_and_extra_logging() {
    let c = container(&ShieldedOptions {
        log_extra: true,
        sinkholed: &["good.test.example"],
        ..Default::default()
    });
    let server: SocketAddr = RESOLVER.parse().unwrap();
    assert_eq!(
        dig_status(&c.ns, server, "good.test.example", "A").unwrap(),
        "NXDOMAIN"
    );
    assert!(!allow_set(&c.ns, "allow_v4").contains("203.0.113.10"));
    let log = wait_for_line(
        &c.state.path().join("dnsmasq.log"),
        "good.test.example is NXDOMAIN",
    );
    // log-queries=extra puts a serial and the client address before `query`.
    let query = log
        .lines()
        .find(|l| l.contains("query[A] good.test.example"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(query.contains(" 127.0.0.1/"), "{query}");
}

#[test]
fn reopen_log_recreates_a_rotated_log() {
    let c = container(&ShieldedOptions::default());
    let server: SocketAddr = RESOLVER.parse().unwrap();
    let log = c.resolver.log_path().to_path_buf();
    assert_eq!(log, c.state.path().join("dnsmasq.log"));
    std::fs::rename(&log, c.state.path().join("dnsmasq.log.1")).unwrap();
    c.resolver.reopen_log();
    // Poll: the reopen happens when dnsmasq handles the signal, and a query written after it
    // must land in the new file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        log.exists(),
        "dnsmasq did not re-create its log after SIGUSR2"
    );
    dig(&c.ns, server, "after.rotation.example", "A").unwrap();
    let text = wait_for_line(&log, "query[A] after.rotation.example");
    assert!(text.contains("query[A] after.rotation.example"), "{text}");
}

#[test]
fn dropping_the_resolver_kills_and_reaps_it() {
    let c = container(&ShieldedOptions::default());
    let pid = c.resolver.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(c.resolver);
    // Reaped, not a zombie: the pid's /proc entry is gone (unless already reused by another process).
    let gone = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map_or(true, |c| !c.starts_with("dnsmasq"));
    assert!(gone, "dnsmasq {pid} still there after drop");
    assert!(
        dig(&c.ns, RESOLVER.parse().unwrap(), "good.test.example", "A").is_err(),
        "someone still answers"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let c = container(&ShieldedOptions::default());
    let upstream: SocketAddr = UPSTREAM.parse().unwrap();
    let err = Dnsmasq::upstream(Some(&c.ns), upstream.ip(), upstream.port(), &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("dnsmasq") && msg.contains("Address already in use"),
        "{msg}"
    );
}

#[test]
fn upstream_on_the_host_loopback() {
    // Port picked from the pid so parallel runs of this suite do not collide.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let up = Dnsmasq::upstream(
        None,
        ip("127.0.0.53"),
        port,
        &[("host.example", ip("192.0.2.44"))],
    );
    let up = up.unwrap();
    let out = std::process::Command::new("dig")
        .args([
            "+short",
            "+time=1",
            "+tries=1",
            "@127.0.0.53",
            "-p",
            &port.to_string(),
            "host.example",
            "A",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "192.0.2.44");
    drop(up);
}
