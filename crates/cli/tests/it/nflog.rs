//! The nflog source end to end: the shield's ruleset in a namespace the test owns, real packets,
//! the real kernel's NFLOG messages, read by the real binary through `--netns`.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::{json, Value};
use shield_lab::{dig, Dnsmasq, Netns, Ruleset, StateDir, Terminal, PREFIX_BLOCKED};

use crate::support::{State, Watch, DEADLINE};

pub(crate) fn shielded_namespace() -> Netns {
    shield_lab::preflight().expect("the nflog tests need root, ip and nft");
    let ns = Netns::create("shw-nflog").unwrap();
    ns.with_uplink().unwrap();
    Ruleset::shield(100)
        .deny(&["203.0.113.66".parse().unwrap()])
        // A TEST-NET range stands in for RFC 1918 so no private address is ever used here.
        .private_ranges(&["192.0.2.0/24"])
        .load(&ns)
        .unwrap();
    ns
}

/// shield-watch with only the nflog source, reading the group inside `ns`.
pub(crate) fn watch_nflog(state: &State, ns: &Netns, extra: &[&str]) -> Watch {
    let netns = ns.path();
    let mut args = vec![
        "--source",
        "nflog",
        "-c",
        "c",
        "--netns",
        netns.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Watch::start(state, &args)
}

fn tcp_connect(ns: &Netns, to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    // Refused or timed out by the ruleset: the failure is the expected outcome.
    let result = ns
        .run_in(move || TcpStream::connect_timeout(&to, Duration::from_millis(300)))
        .unwrap();
    assert!(result.is_err(), "the shield let {to} through");
}

fn udp_send(ns: &Netns, to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    ns.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        // EPERM from the reject is fine: the packet was logged before it was refused.
        let _ = socket.send_to(b"probe", to);
    })
    .unwrap();
}

/// The event without its volatile parts: `ts` (checked for shape) and `extra.sport` (checked numeric).
fn normalised(line: &str) -> Value {
    let mut value: Value = serde_json::from_str(line).unwrap();
    let object = value.as_object_mut().unwrap();
    let ts = object.remove("ts").unwrap();
    assert_eq!(ts.as_str().unwrap().len(), 32, "{line}");
    if let Some(extra) = object.get_mut("extra").and_then(Value::as_object_mut) {
        if let Some(sport) = extra.remove("sport") {
            assert!(sport.as_str().unwrap().parse::<u16>().is_ok(), "{line}");
        }
    }
    value
}

fn expected(action: &str, dest: &str, prefix: &str, port: u16, proto: u8) -> Value {
    json!({
        "source": "nflog", "action": action, "container": "c", "dest": dest,
        "detail": prefix, "port": port, "proto": proto,
        "extra": {
            "src": "198.51.100.1", "outdev": "up0", "uid": "0", "gid": "0",
            "family": "ipv4", "hook": "output"
        }
    })
}

#[test]
fn logged_packets_become_events_with_the_prefix_action() {
    let ns = shielded_namespace();
    let state = State::new(Some("lookup"));
    let mut watch = watch_nflog(&state, &ns, &[]);
    assert_eq!(
        watch.stderr_seen().last().unwrap(),
        "shield-watch: ready (nflog)"
    );

    tcp_connect(&ns, "203.0.113.50:8080");
    tcp_connect(&ns, "203.0.113.66:443");
    udp_send(&ns, "192.0.2.9:5353");
    let events: Vec<Value> = watch.lines(3).iter().map(|l| normalised(l)).collect();
    assert_eq!(
        events,
        [
            expected(
                "queued_connection",
                "203.0.113.50",
                "TEROK_SHIELD_BLOCKED:",
                8080,
                6
            ),
            expected(
                "blocked_connection",
                "203.0.113.66",
                "TEROK_SHIELD_DENIED:",
                443,
                6
            ),
            expected(
                "private_range",
                "192.0.2.9",
                "TEROK_SHIELD_PRIVATE:",
                5353,
                17
            ),
        ]
    );
}

#[test]
fn nflog_unavailable_leaves_the_other_sources_running() {
    let state = State::new(Some("lookup"));
    let mut watch = Watch::start(&state, &["-c", "c", "--netns", "/nonexistent/netns"]);
    assert_eq!(
        watch.stderr_seen().last().unwrap(),
        "shield-watch: ready (audit)"
    );
    let reason = watch
        .stderr_seen()
        .iter()
        .find(|l| l.starts_with("shield-watch: nflog: not running:"))
        .unwrap();
    assert!(reason.contains("/nonexistent/netns"), "{reason}");
    state.append("audit.jsonl", b"{\"ts\":\"t\",\"action\":\"setup\"}\n");
    assert_eq!(
        watch.lines(1),
        [r#"{"ts":"t","source":"audit","action":"setup","container":"c"}"#]
    );
}

#[test]
fn a_group_held_by_another_process_is_explained() {
    let ns = shielded_namespace();
    let state = State::new(Some("lookup"));
    let netns = ns.path();
    let args = [
        "--source",
        "nflog,audit",
        "-c",
        "c",
        "--netns",
        netns.to_str().unwrap(),
    ];
    let first = Watch::start(&state, &args);
    let second = Watch::start(&state, &args);
    assert_eq!(
        second.stderr_seen().last().unwrap(),
        "shield-watch: ready (audit)"
    );
    let reason = second
        .stderr_seen()
        .iter()
        .find(|l| l.starts_with("shield-watch: nflog: not running:"))
        .unwrap();
    assert!(reason.contains("group 100 is already bound"), "{reason}");
    drop(first);
}

#[test]
fn a_connection_to_an_address_resolved_before_the_start_is_named() {
    let ns = shielded_namespace();
    let state = State::new(None);
    let internet = Dnsmasq::upstream(
        Some(&ns),
        "127.0.0.2".parse().unwrap(),
        5353,
        &[("tracker.example", "203.0.113.13".parse().unwrap())],
    )
    .unwrap();
    StateDir::domain_files(state.path(), "dnsmasq-live", &["allowed.example"], &[]).unwrap();
    let resolver =
        Dnsmasq::shielded(&ns, state.path(), internet.addr(), &["allowed.example"]).unwrap();
    // Resolved (and logged) before shield-watch starts: no dns event for it, but the cache is
    // primed from the existing log, so the connection is still named.
    let answer = dig(&ns, resolver.addr(), "tracker.example", "A").unwrap();
    assert_eq!(answer.trim(), "203.0.113.13");

    let netns = ns.path();
    let mut watch = Watch::start(&state, &["-c", "c", "--netns", netns.to_str().unwrap()]);
    assert_eq!(
        watch.stderr_seen().last().unwrap(),
        "shield-watch: ready (audit,dns,nflog)"
    );
    tcp_connect(&ns, "203.0.113.13:443");
    let event = normalised(&watch.lines(1)[0]);
    let mut want = expected(
        "queued_connection",
        "203.0.113.13",
        "TEROK_SHIELD_BLOCKED:",
        443,
        6,
    );
    want.as_object_mut()
        .unwrap()
        .insert("domain".into(), json!("tracker.example"));
    assert_eq!(event, want);
}

#[test]
fn an_overrun_is_reported_with_the_count_and_nothing_is_lost_silently() {
    let ns = shielded_namespace();
    let state = State::new(Some("lookup"));
    let mut watch = watch_nflog(&state, &ns, &["--nflog-buffer", "4096"]);
    // Starve the reader while the kernel queues far more than the small buffer holds.
    watch.signal(Signal::STOP);
    const FLOOD: usize = 2000;
    ns.run_in(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..FLOOD {
            // Refused by the shield: the error is expected, the packet was logged first.
            let _ = socket.send_to(b"flood", "203.0.113.50:9");
        }
    })
    .unwrap();
    watch.signal(Signal::CONT);
    // The reader drains what the kernel kept, then notices the overrun.
    let mut lines = watch.lines_until(|l| l.contains("\"action\":\"nflog_overrun\""));
    // Packets after the flood, one at a time until one is shown (the kernel may still drop one
    // while the small queue has no room): its sequence number tells how many were lost before
    // it, markers dropped included.
    let deadline = Instant::now() + DEADLINE;
    let mut markers = 0;
    loop {
        markers += 1;
        udp_send(&ns, &format!("203.0.113.51:{}", 1000 + markers));
        let got = watch.lines_within(usize::MAX, Duration::from_millis(300));
        let shown = got.iter().any(|l| l.contains("\"dest\":\"203.0.113.51\""));
        lines.extend(got);
        if shown {
            break;
        }
        assert!(Instant::now() < deadline, "no packet after the flood shown");
    }
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let delivered = events
        .iter()
        .filter(|e| e["dest"] == "203.0.113.50")
        .count();
    let markers_shown = events
        .iter()
        .filter(|e| e["dest"] == "203.0.113.51")
        .count();
    let overruns: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "nflog_overrun")
        .collect();
    assert!(!overruns.is_empty(), "no overrun reported: {lines:#?}");
    for overrun in &overruns {
        assert_eq!(overrun["source"], "watch");
    }
    let lost: usize = overruns
        .iter()
        .filter_map(|e| e["extra"]["lost"].as_str())
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert!(
        lost > 0 && delivered < FLOOD,
        "delivered {delivered}, lost {lost}"
    );
    assert_eq!(
        delivered + markers_shown + lost,
        FLOOD + markers,
        "every packet is either shown or counted"
    );

    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert_eq!(status.code(), Some(0));
    let summary = stderr
        .iter()
        .find(|l| l.starts_with("shield-watch: summary:"))
        .unwrap();
    assert!(summary.contains(&format!("(lost {lost})")), "{summary}");
}

/// The packets the shield's terminal (`TEROK_SHIELD_BLOCKED`) rule matched: its nft counter.
fn blocked_counter(ns: &Netns) -> u64 {
    let chain = ns
        .exec_ok(&["nft", "list", "chain", "inet", "terok_shield", "output"])
        .unwrap();
    let rule = chain
        .lines()
        .find(|l| l.contains(PREFIX_BLOCKED))
        .unwrap_or_else(|| panic!("no blocked rule in {chain}"));
    let after = rule.split("counter packets ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn a_sustained_flood_is_delivered_or_counted_to_the_rule_counter() {
    let ns = shield_lab::preflight()
        .and_then(|()| Netns::create("shw-flood"))
        .unwrap();
    ns.with_uplink().unwrap();
    // Dropped rather than rejected: no ICMP error per packet, so the flood stays cheap.
    Ruleset::shield(100)
        .terminal(Terminal::Drop)
        .load(&ns)
        .unwrap();
    let state = State::new(Some("lookup"));
    // A kernel buffer of about 2 500 packets, so the stall below overruns it for certain.
    let mut watch = watch_nflog(&state, &ns, &["--nflog-buffer", "1048576"]);
    const FLOOD: u32 = 200_000;
    // shield-watch is stopped for the last quarter: the flood ends while the kernel is dropping,
    // and no later packet shows that gap in the sequence numbers.
    const STALL_FROM: u32 = 150_000;
    let pid = Pid::from_raw(i32::try_from(watch.pid()).unwrap()).unwrap();
    ns.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..FLOOD {
            if i == STALL_FROM {
                kill_process(pid, Signal::STOP).unwrap();
            }
            let to = SocketAddr::from(([203, 0, 113, 1 + (i % 250) as u8], 9));
            // Dropped by the shield: the error is expected, the packet was logged first.
            let _ = socket.send_to(b"x", to);
        }
        kill_process(pid, Signal::CONT).unwrap();
    })
    .unwrap();
    let matched = blocked_counter(&ns);
    assert_eq!(
        matched,
        u64::from(FLOOD),
        "the namespace sends nothing else"
    );

    // Every matched packet comes out as an event or inside an overrun's `extra.lost`; wait
    // until they add up, as long as lines keep coming.
    let (mut delivered, mut lost, mut overruns) = (0u64, 0u64, 0u64);
    while delivered + lost < matched {
        let Some(line) = watch.lines_within(1, DEADLINE).pop() else {
            break;
        };
        let event: Value = serde_json::from_str(&line).unwrap();
        match event["action"].as_str() {
            Some("nflog_overrun") => {
                overruns += 1;
                let n = event["extra"]["lost"].as_str();
                lost += n
                    .expect("every overrun carries its count")
                    .parse::<u64>()
                    .unwrap();
            }
            Some("queued_connection") => delivered += 1,
            _ => panic!("unexpected event {line}"),
        }
    }
    eprintln!("flood: matched {matched}, delivered {delivered}, lost {lost} in {overruns} reports");
    let unaccounted = matched.abs_diff(delivered + lost);
    assert!(
        unaccounted * 1000 <= matched,
        "{unaccounted} of {matched} neither delivered nor counted (delivered {delivered}, lost {lost})"
    );
    assert!(lost > 0, "the stall lost nothing: the test tests nothing");

    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert_eq!(status.code(), Some(0));
    let summary = stderr
        .iter()
        .find(|l| l.starts_with("shield-watch: summary:"))
        .unwrap();
    assert!(summary.contains(&format!("(lost {lost})")), "{summary}");
}
