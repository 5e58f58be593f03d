//! The journald tests: a `systemd-journald` of each test's own (shield-lab's `Journald`),
//! read back with `journalctl --directory`.

use std::thread;
use std::time::{Duration, Instant};

use rustix::net::sockopt::socket_send_buffer_size;
use rustix::process::Signal;
use shield_event::{Event, Source};
use shield_lab::journald::{bytes, text, Journald};

use super::{blocked_query, DEADLINE, POLL};
use crate::journal::{Journal, RETRY_AFTER};

fn message_of(line: &str) -> &[u8] {
    line.strip_suffix('\n').unwrap().as_bytes()
}

#[test]
fn journald_keeps_one_entry_per_event_with_its_fields() {
    let journald = Journald::start();
    let mut journal = Journal::connect(&journald.socket());

    let first = blocked_query("c", "evil.example.com", "A");
    let second = blocked_query("c", "x.example.org", "AAAA");
    // Escape sequences and newlines in a name an attacker chose: sanitised in the line and
    // in SHIELD_DOMAIN, and neither can pose as a field of its own.
    let hostile = blocked_query(
        "c",
        "evil\nSHIELD_ACTION=allowed\nPRIORITY=0\n\x1b[31m.example",
        "A",
    );
    let other_container = blocked_query("other", "evil.example.com", "A");
    let mut allowed = Event::new("2026-03-31T12:00:01Z", Source::Audit, "allowed", "c");
    allowed.domain = "github.com".into();
    let mut packet = Event::new("T", Source::Nflog, "blocked_connection", "c");
    packet.dest = "192.0.2.1".into();
    packet.detail = "TEROK_SHIELD_DENIED:".into();
    packet.port = 443;
    packet.proto = 6;
    for event in [
        &first,
        &second,
        &hostile,
        &other_container,
        &allowed,
        &packet,
    ] {
        journal.send(event, event.to_json_line().as_bytes());
    }
    // A line with newlines of its own (not one the event writer makes): the message keeps
    // them, and the fields after them stay inside it.
    let raw = Event::new("T", Source::Audit, "setup", "raw");
    let raw_line = b"{\"a\":1}\nSHIELD_CONTAINER=c\nSHIELD_ACTION=blocked_query\n";
    journal.send(&raw, raw_line);
    // Larger than a datagram may be with the default socket buffer: goes as a memfd.
    let big = Event::new("T", Source::Audit, "setup", "big");
    let big_line = format!("{{\"detail\":\"{}\"}}\n", "x".repeat(1 << 20));
    let buffer = socket_send_buffer_size(journal.socket.as_ref().unwrap()).unwrap();
    assert!(
        big_line.len() > buffer,
        "a {buffer}-byte buffer takes the big line"
    );
    journal.send(&big, big_line.as_bytes());
    assert_eq!(journal.dropped(), 0);

    journald.wait_for(&["SYSLOG_IDENTIFIER=shield-watch"], 8);
    let blocked = journald.entries(&["SHIELD_CONTAINER=c", "SHIELD_ACTION=blocked_query"]);
    let messages: Vec<Vec<u8>> = blocked.iter().map(|e| bytes(e, "MESSAGE")).collect();
    let expected: Vec<String> = [&first, &second, &hostile]
        .iter()
        .map(|e| e.to_json_line())
        .collect();
    let expected: Vec<&[u8]> = expected.iter().map(|l| message_of(l)).collect();
    assert_eq!(messages, expected);
    for entry in &blocked {
        assert_eq!(text(entry, "PRIORITY"), "4");
        assert_eq!(text(entry, "SYSLOG_IDENTIFIER"), "shield-watch");
        assert_eq!(text(entry, "SHIELD_SOURCE"), "dns");
        assert_eq!(text(entry, "SHIELD_ACTION"), "blocked_query");
        assert_eq!(text(entry, "SHIELD_CONTAINER"), "c");
    }
    assert_eq!(text(&blocked[0], "SHIELD_DOMAIN"), "evil.example.com");
    assert_eq!(text(&blocked[0], "SHIELD_QUERY_TYPE"), "A");
    assert_eq!(text(&blocked[1], "SHIELD_QUERY_TYPE"), "AAAA");
    assert_eq!(
        text(&blocked[2], "SHIELD_DOMAIN"),
        "evil SHIELD_ACTION=allowed PRIORITY=0  [31m.example"
    );
    // The forged terms in the hostile name matched nothing.
    assert!(journald.entries(&["PRIORITY=0"]).is_empty());
    assert!(journald
        .entries(&[
            "SHIELD_CONTAINER=c",
            "SHIELD_ACTION=allowed",
            "SHIELD_SOURCE=dns"
        ])
        .is_empty());

    let allowed_entries = journald.entries(&["SHIELD_ACTION=allowed"]);
    assert_eq!(allowed_entries.len(), 1);
    assert_eq!(text(&allowed_entries[0], "PRIORITY"), "6");
    assert_eq!(
        bytes(&allowed_entries[0], "MESSAGE"),
        message_of(&allowed.to_json_line())
    );

    let packets = journald.entries(&["SHIELD_ACTION=blocked_connection"]);
    assert_eq!(packets.len(), 1);
    for (key, value) in [
        ("SHIELD_DEST", "192.0.2.1"),
        ("SHIELD_DETAIL", "TEROK_SHIELD_DENIED:"),
        ("SHIELD_PORT", "443"),
        ("SHIELD_PROTO", "6"),
        ("SHIELD_SOURCE", "nflog"),
        ("PRIORITY", "4"),
    ] {
        assert_eq!(text(&packets[0], key), value, "{key}");
    }
    assert!(!packets[0].contains_key("SHIELD_DOMAIN"));

    let raw_entries = journald.entries(&["SHIELD_CONTAINER=raw"]);
    assert_eq!(raw_entries.len(), 1);
    assert_eq!(
        bytes(&raw_entries[0], "MESSAGE"),
        raw_line[..raw_line.len() - 1]
    );
    assert_eq!(text(&raw_entries[0], "SHIELD_ACTION"), "setup");

    let big_entries = journald.entries(&["SHIELD_CONTAINER=big"]);
    assert_eq!(big_entries.len(), 1);
    assert!(bytes(&big_entries[0], "MESSAGE") == message_of(&big_line));
}

/// journald stopped (SIGSTOP), then gone (SIGTERM), then back: sends never wait, what was
/// lost is counted exactly, and entries arrive again once it is back.
#[test]
fn journald_stopped_and_restarted_mid_stream() {
    let mut journald = Journald::start();
    let mut journal = Journal::connect(&journald.socket());
    let mut sent = 0_u64;
    let mut send = |journal: &mut Journal| {
        let event = blocked_query("r", &format!("n{sent}.example"), "A");
        journal.send(&event, event.to_json_line().as_bytes());
        sent += 1;
    };
    let all = ["SHIELD_CONTAINER=r"];

    for _ in 0..5 {
        send(&mut journal);
    }
    journald.wait_for(&all, 5);
    assert_eq!(journal.dropped(), 0);

    // Alive but not reading: its queue fills, the rest is dropped at once.
    journald.signal(Signal::STOP);
    let start = Instant::now();
    for _ in 0..10_000 {
        send(&mut journal);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "10 000 sends took {took:?}");
    let dropped_while_stopped = journal.dropped();
    assert!(dropped_while_stopped > 9_000, "{dropped_while_stopped}");
    journald.signal(Signal::CONT);
    journald.wait_for(&all, (5 + 10_000 - dropped_while_stopped) as usize);

    // Gone: every entry is dropped, none waits.
    journald.stop();
    let gone_at = Instant::now();
    for _ in 0..10_000 {
        send(&mut journal);
    }
    let took = gone_at.elapsed();
    assert!(took < Duration::from_secs(2), "10 000 sends took {took:?}");
    assert_eq!(journal.dropped(), dropped_while_stopped + 10_000);

    // Back: within a second of the failure nothing is tried, then the next send connects.
    journald.spawn();
    let before = journald.entries(&all).len();
    let deadline = Instant::now() + DEADLINE;
    let arrived_after = loop {
        let at = Instant::now();
        send(&mut journal);
        if journald.entries(&all).len() > before {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived after the restart"
        );
        thread::sleep(POLL);
    };
    assert!(arrived_after - gone_at >= RETRY_AFTER);
    let dropped = journal.dropped();
    for _ in 0..5 {
        send(&mut journal);
    }
    assert_eq!(journal.dropped(), dropped);

    // Every entry either arrived once or was counted.
    let entries = journald.wait_for(&all, (sent - journal.dropped()) as usize);
    let mut domains: Vec<String> = entries.iter().map(|e| text(e, "SHIELD_DOMAIN")).collect();
    domains.sort();
    domains.dedup();
    assert_eq!(domains.len() as u64, sent - journal.dropped());
}
