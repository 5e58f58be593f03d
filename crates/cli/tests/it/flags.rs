//! The command line's behaviour flags: --cursor, --action, --dedup, --format text, --source.

use std::fs;
use std::time::Duration;

use rustix::process::Signal;

use crate::support::{State, Watch};

fn audit(ts: &str, action: &str, dest: &str) -> Vec<u8> {
    format!("{{\"ts\":\"{ts}\",\"action\":\"{action}\",\"dest\":\"{dest}\"}}\n").into_bytes()
}

fn stop(mut watch: Watch) {
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr:#?}");
}

#[test]
fn cursor_resumes_with_nothing_lost_and_nothing_twice() {
    let state = State::new(Some("lookup"));
    let cursor = state.file("watch.cursor");
    let cursor_arg = cursor.to_str().unwrap();
    state.append("audit.jsonl", &audit("0", "before", ""));

    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c", "--cursor", cursor_arg]);
    state.append("audit.jsonl", &audit("1", "a", ""));
    state.append("audit.jsonl", &audit("2", "b", ""));
    assert_eq!(watch.lines(2).len(), 2);
    stop(watch);
    assert!(fs::read_to_string(&cursor).unwrap().contains("audit"));

    // While it is down: more lines, half a line, then a rename-rotation and a new file.
    state.append("audit.jsonl", &audit("3", "c", ""));
    state.append("audit.jsonl", b"{\"ts\":\"4\",\"act");
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c", "--cursor", cursor_arg]);
    state.append("audit.jsonl", b"ion\":\"d\"}\n");
    let lines = watch.lines(2);
    assert_eq!(
        lines,
        [
            r#"{"ts":"3","source":"audit","action":"c","container":"c"}"#,
            r#"{"ts":"4","source":"audit","action":"d","container":"c"}"#
        ]
    );
    stop(watch);

    state.append("audit.jsonl", &audit("5", "e", ""));
    fs::rename(state.file("audit.jsonl"), state.file("audit.jsonl.1")).unwrap();
    state.append("audit.jsonl", &audit("6", "f", ""));
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c", "--cursor", cursor_arg]);
    let lines = watch.lines(2);
    assert_eq!(
        lines,
        [
            r#"{"ts":"5","source":"audit","action":"e","container":"c"}"#,
            r#"{"ts":"6","source":"audit","action":"f","container":"c"}"#
        ]
    );
    state.append("audit.jsonl", &audit("7", "marker", ""));
    assert_eq!(
        watch.lines(1)[0],
        r#"{"ts":"7","source":"audit","action":"marker","container":"c"}"#
    );
    watch.no_more_lines(Duration::from_millis(300));
}

#[test]
fn action_filter_keeps_only_the_listed_actions() {
    let state = State::new(Some("lookup"));
    let mut watch = Watch::start(
        &state,
        &["--no-nflog", "-c", "c", "--action", "denied,marker"],
    );
    let mut input = audit("1", "setup", "");
    input.extend(audit("2", "denied", "192.0.2.1"));
    input.extend(audit("3", "allowed", "192.0.2.2"));
    input.extend(audit("4", "marker", ""));
    state.append("audit.jsonl", &input);
    assert_eq!(
        watch.lines(2),
        [
            r#"{"ts":"2","source":"audit","action":"denied","container":"c","dest":"192.0.2.1"}"#,
            r#"{"ts":"4","source":"audit","action":"marker","container":"c"}"#
        ]
    );
    watch.no_more_lines(Duration::from_millis(300));
}

#[test]
fn dedup_suppresses_repeats_within_the_window() {
    let state = State::new(Some("lookup"));
    // A window far longer than the test: every repeat inside it must be suppressed.
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c", "--dedup", "1h"]);
    let mut input = audit("1", "denied", "192.0.2.1");
    input.extend(audit("2", "denied", "192.0.2.1"));
    input.extend(audit("3", "denied", "192.0.2.2"));
    input.extend(audit("4", "allowed", "192.0.2.1"));
    input.extend(audit("5", "denied", "192.0.2.1"));
    input.extend(audit("6", "marker", ""));
    state.append("audit.jsonl", &input);
    let ts: Vec<String> = watch
        .lines(4)
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ts, ["1", "3", "4", "6"]);
    watch.no_more_lines(Duration::from_millis(300));
    watch.signal(Signal::TERM);
    let (_, stderr) = watch.wait_exit();
    assert!(
        stderr.iter().any(|l| l.contains("suppressed 2")),
        "{stderr:#?}"
    );
}

#[test]
fn text_format_without_a_terminal_has_no_colour() {
    let state = State::new(Some("lookup"));
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "web", "--format", "text"]);
    state.append(
        "audit.jsonl",
        b"{\"ts\":\"2026-03-31T12:00:00.250+00:00\",\"action\":\"denied\",\"dest\":\"192.0.2.7\",\"port\":443,\"proto\":\"tcp\"}\n",
    );
    let line = &watch.lines(1)[0];
    assert!(!line.contains('\x1b'), "{line:?}");
    assert_eq!(
        line,
        "12:00:00.250    audit denied               192.0.2.7:443                            proto=tcp container=web"
    );
}

#[test]
fn source_list_limits_what_runs() {
    let state = State::new(Some("dnsmasq-live"));
    let mut watch = Watch::start(&state, &["--source", "audit"]);
    assert_eq!(
        watch.stderr_seen().last().unwrap(),
        "shield-watch: ready (audit)"
    );
    // dnsmasq.log is not touched when the dns source does not run.
    assert!(!state.file("dnsmasq.log").exists());
    state.append("audit.jsonl", &audit("1", "x", ""));
    assert_eq!(watch.lines(1).len(), 1);
}

#[test]
fn colour_is_only_used_when_asked_or_on_a_terminal() {
    let entry = b"{\"ts\":\"t\",\"action\":\"denied\",\"dest\":\"192.0.2.7\"}\n";
    for (args, coloured) in [
        (&["--format", "text"][..], false),
        (&["--format", "text", "--color", "always"][..], true),
        (&["--format", "text", "--color", "never"][..], false),
    ] {
        let state = State::new(Some("lookup"));
        let mut all = vec!["--no-nflog"];
        all.extend_from_slice(args);
        let mut watch = Watch::start(&state, &all);
        state.append("audit.jsonl", entry);
        let line = &watch.lines(1)[0];
        assert_eq!(
            line.contains("\x1b[1;31mdenied"),
            coloured,
            "{args:?}: {line:?}"
        );
    }
}

#[test]
fn lines_over_max_line_are_skipped_counted_and_warned_about_once() {
    let state = State::new(Some("lookup"));
    let mut watch = Watch::start(&state, &["--no-nflog", "-c", "c", "--max-line", "1024"]);
    let long = format!(
        "{{\"action\":\"x\",\"detail\":\"{}\"}}\n",
        "y".repeat(100_000)
    );
    state.append("audit.jsonl", long.as_bytes());
    state.append("audit.jsonl", long.as_bytes());
    state.append("audit.jsonl", &audit("1", "after", ""));
    // The stream stays in sync: the next line is whole and correct.
    assert_eq!(
        watch.lines(1),
        [r#"{"ts":"1","source":"audit","action":"after","container":"c"}"#]
    );
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert_eq!(status.code(), Some(0));
    let warnings = stderr
        .iter()
        .filter(|l| l.contains("over --max-line"))
        .count();
    assert_eq!(warnings, 1, "{stderr:#?}");
    let summary = stderr
        .iter()
        .find(|l| l.starts_with("shield-watch: summary:"))
        .unwrap();
    assert!(summary.contains("audit/too_long=2"), "{summary}");
}
