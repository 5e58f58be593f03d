//! The audit source end to end: lines appended to a real file come out as exact JSON lines.

use rustix::process::Signal;

use crate::support::{State, Watch};

#[test]
fn audit_lines_become_exact_events_in_order() {
    let state = State::new(Some("lookup\n"));
    // Content present before start is not replayed (the reference starts at the end).
    state.append("audit.jsonl", b"{\"ts\":\"old\",\"action\":\"setup\"}\n");
    let mut watch = Watch::start(&state, &["--no-nflog", "--container", "ctr"]);
    assert_eq!(
        watch.stderr_seen().last().unwrap(),
        "shield-watch: ready (audit)"
    );

    let bidi_and_controls = format!(
        "{}\\u001b[31m\\u0007{}\u{202e}{}",
        "A".repeat(100),
        "B".repeat(100),
        "C".repeat(100)
    );
    let mut input = Vec::new();
    input.extend_from_slice(
        br#"{"ts":"2026-03-31T12:00:00+00:00","container":"web","action":"denied","dest":"192.0.2.7","detail":"by rule","domain":"x.example","port":443,"proto":"tcp","rule":7,"ok":true,"dossier":{"image":"alpine","layers":{"n":2}}}"#,
    );
    input.extend_from_slice(b"\n[1,2,3]\n{not json\n\n");
    input.extend_from_slice(b"{\"ts\":\"t2\",\"action\":\"blocked\",\"detail\":\"a\xff\xfeb\",\"proto\":17,\"port\":53}\n");
    input.extend_from_slice(
        format!(
            "{{\"ts\":\"t3\",\"action\":\"shield_down\",\"detail\":\"{bidi_and_controls}\"}}\n"
        )
        .as_bytes(),
    );
    input.extend_from_slice(b"{\"action\":\"teardown\"}\n");
    state.append("audit.jsonl", &input);
    // Half a line: nothing may come out until it is finished.
    state.append("audit.jsonl", br#"{"ts":"t5","action":"mar"#);

    let lines = watch.lines(4);
    assert_eq!(
        lines[0],
        concat!(
            r#"{"ts":"2026-03-31T12:00:00+00:00","source":"audit","action":"denied","container":"web","#,
            r#""domain":"x.example","dest":"192.0.2.7","detail":"by rule","port":443,"proto":6,"#,
            r#""extra":{"rule":"7","ok":"true","dossier.image":"alpine","dossier.layers.n":"2"}}"#
        )
    );
    assert_eq!(
        lines[1],
        r#"{"ts":"t2","source":"audit","action":"blocked","container":"ctr","detail":"a  b","port":53,"proto":17}"#
    );
    // 100 A, ESC, '[31m', BEL, 100 B, RLO, 100 C = 306 characters: cut to 253 + "...".
    let full = format!(
        "{} [31m {} {}",
        "A".repeat(100),
        "B".repeat(100),
        "C".repeat(100)
    );
    let cut = format!("{}...", &full[..253]);
    assert_eq!(
        lines[2],
        format!(
            r#"{{"ts":"t3","source":"audit","action":"shield_down","container":"ctr","detail":"{cut}"}}"#
        )
    );
    // No ts in the entry: now, in the stream's format.
    let (head, tail) = lines[3].split_at(r#"{"ts":""#.len());
    assert_eq!(head, r#"{"ts":""#);
    let ts = &tail[..32];
    assert!(ts.ends_with("+00:00") && ts.as_bytes()[19] == b'.', "{ts}");
    assert_eq!(
        &tail[32..],
        r#"","source":"audit","action":"teardown","container":"ctr"}"#
    );

    state.append("audit.jsonl", b"ker\"}\n");
    assert_eq!(
        watch.lines(1),
        [r#"{"ts":"t5","source":"audit","action":"marker","container":"ctr"}"#]
    );
    watch.no_more_lines(std::time::Duration::from_millis(300));

    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr:#?}");
    let summary = stderr
        .iter()
        .find(|l| l.starts_with("shield-watch: summary:"))
        .expect("summary");
    assert!(summary.contains("5 events"), "{summary}");
    assert!(summary.contains("audit/invalid_json=1"), "{summary}");
    assert!(summary.contains("audit/not_an_object=1"), "{summary}");
    assert!(summary.contains("audit/blank=1"), "{summary}");
}

#[test]
fn from_start_replays_existing_content() {
    let state = State::new(Some("getent"));
    state.append(
        "audit.jsonl",
        b"{\"ts\":\"a\",\"action\":\"setup\"}\n{\"ts\":\"b\",\"action\":\"shield_up\"}\n",
    );
    let mut watch = Watch::start(&state, &["--no-nflog", "--from-start", "-c", "x"]);
    assert_eq!(
        watch.lines(2),
        [
            r#"{"ts":"a","source":"audit","action":"setup","container":"x"}"#,
            r#"{"ts":"b","source":"audit","action":"shield_up","container":"x"}"#
        ]
    );
}

#[test]
fn a_missing_audit_log_is_created_and_followed() {
    let state = State::new(Some("lookup"));
    assert!(!state.file("audit.jsonl").exists());
    let mut watch = Watch::start(&state, &["--no-nflog"]);
    assert!(state.file("audit.jsonl").exists());
    state.append("audit.jsonl", b"{\"ts\":\"a\",\"action\":\"setup\"}\n");
    let name = state
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        watch.lines(1),
        [format!(
            r#"{{"ts":"a","source":"audit","action":"setup","container":"{name}"}}"#
        )]
    );
}
