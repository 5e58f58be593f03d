//! One runtime: every stream-shaping flag gives the same events for one container
//! (`--state-dir`) as for that container host-wide (`--state-root`), on the same recorded
//! inputs: a real dnsmasq query log (captured from dnsmasq 2.90) and audit entries, part of them
//! present at start (history) and part appended while running (live).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use crate::support::{binary, Watch, DEADLINE};

/// The recorded query log: the first half is there at start, the rest is appended live.
const QUERY_LOG: &str = include_str!("../../../dnsmasq/tests/fixtures/forms.log");

/// Audit entries, in the same two halves.
const AUDIT: [&str; 6] = [
    r#"{"ts":"2026-12-04T10:00:00+00:00","action":"setup","container":"web"}"#,
    r#"{"ts":"2026-12-04T10:00:01+00:00","action":"denied","dest":"192.0.2.7","port":443,"proto":"tcp"}"#,
    r#"{"ts":"2026-12-04T10:00:02+00:00","action":"allowed","domain":"upstream.example.com"}"#,
    r#"{"ts":"2026-12-04T10:00:03+00:00","action":"denied","dest":"192.0.2.8","port":80,"proto":"tcp"}"#,
    r#"{"ts":"2026-12-04T10:00:04+00:00","action":"denied","dest":"192.0.2.8","port":80,"proto":"tcp"}"#,
    r#"{"ts":"2026-12-04T10:00:05+00:00","action":"teardown","container":"web"}"#,
];

/// A container `web` under `ROOT/containers/`, its files holding the history half.
struct Recorded {
    root: tempfile::TempDir,
}

impl Recorded {
    fn new() -> Recorded {
        let root = tempfile::Builder::new()
            .prefix("shield-watch-matrix-")
            .tempdir()
            .unwrap();
        let dir = root.path().join("containers").join("web");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "dnsmasq-static\n").unwrap();
        // Some names allowed, so that both allowed and refused lookups are in the log.
        fs::write(
            dir.join("profile.domains"),
            "upstream.example.com\nalias.example.com\n",
        )
        .unwrap();
        let (history, _) = halves();
        fs::write(dir.join("dnsmasq.log"), history.0).unwrap();
        fs::write(dir.join("audit.jsonl"), history.1).unwrap();
        Recorded { root }
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("containers").join("web")
    }

    /// Appends the live half.
    fn append_live(&self) {
        let (_, live) = halves();
        append(&self.dir().join("dnsmasq.log"), &live.0);
        append(&self.dir().join("audit.jsonl"), &live.1);
    }
}

/// (query log, audit log) texts of the history half and of the live half.
fn halves() -> ((String, String), (String, String)) {
    let lines: Vec<&str> = QUERY_LOG.lines().collect();
    let mid = lines.len() / 2;
    let text = |part: &[&str]| part.iter().map(|l| format!("{l}\n")).collect::<String>();
    (
        (text(&lines[..mid]), text(&AUDIT[..3])),
        (text(&lines[mid..]), text(&AUDIT[3..])),
    )
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    One,
    Root,
}

/// Runs shield-watch over a fresh recording in `mode` with `flags`: starts it, appends the
/// live half once it is ready, waits until its saved positions reach the end of every file it
/// follows, stops it; returns its stdout lines. With `restart`, a second run on the same cursor
/// file sees lines appended while it was stopped.
fn run(mode: Mode, flags: &[&str], restart: bool) -> Vec<String> {
    let recorded = Recorded::new();
    let cursor_dir = tempfile::tempdir().unwrap();
    let cursor = cursor_dir.path().join("cursor");
    let mut lines = Vec::new();
    let runs = if restart { 2 } else { 1 };
    for run in 0..runs {
        let mut command = binary();
        match mode {
            Mode::One => command.arg("--state-dir").arg(recorded.dir()),
            Mode::Root => command.arg("--state-root").arg(recorded.root.path()),
        };
        command.arg("--cursor").arg(&cursor).args(flags);
        if !flags.contains(&"--source") {
            // The nflog source has nothing recorded; its socket is not what is compared.
            command.arg("--no-nflog");
        }
        let mut watch = Watch::spawn_command(command);
        watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
        if run == 0 {
            recorded.append_live();
        }
        wait_until_read(&cursor, &recorded.dir(), mode, flags, &mut watch);
        watch.signal(Signal::TERM);
        let (status, stderr) = watch.wait_exit();
        assert!(
            status.success(),
            "{mode:?} {flags:?}: {status}; {stderr:#?}"
        );
        lines.extend(watch.rest());
        if restart && run == 0 {
            // Written while nobody watches: the second run resumes from the cursor.
            append(
                &recorded.dir().join("audit.jsonl"),
                "{\"ts\":\"2026-12-04T11:00:00+00:00\",\"action\":\"denied\",\"dest\":\"192.0.2.9\"}\n",
            );
            append(
                &recorded.dir().join("dnsmasq.log"),
                "Dec  4 11:00:00 dnsmasq[1]: query[A] while-stopped.example from 10.0.2.100\n",
            );
        }
    }
    lines
}

/// Waits (bounded) until the cursor file says every followed file was read to its end.
fn wait_until_read(cursor: &Path, dir: &Path, mode: Mode, flags: &[&str], watch: &mut Watch) {
    let prefix = match mode {
        Mode::One => "",
        Mode::Root => "web/",
    };
    let sources: Vec<&str> = match flags.iter().position(|f| *f == "--source") {
        Some(at) => flags[at + 1].split(',').collect(),
        None => vec!["audit", "dns"],
    };
    let mut files = Vec::new();
    if sources.contains(&"audit") {
        files.push(("audit", "audit.jsonl"));
    }
    if sources.contains(&"dns") || sources.contains(&"nflog") {
        files.push(("dns", "dnsmasq.log"));
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let saved = shield_tail::CursorFile::load(cursor).unwrap_or_default();
        let done = files.iter().all(|(key, file)| {
            let size = fs::metadata(dir.join(file)).unwrap().len();
            saved
                .get(&format!("{prefix}{key}"))
                .is_some_and(|c| c.offset() == size)
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{mode:?} {flags:?}: not read to the end; cursors {saved:?}; stderr {:#?}",
            watch.stderr_seen()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The events with what legitimately differs between runs taken out: the time a dns event was
/// read (JSON `ts`; the first column of the text format), and the interleaving of the sources
/// (each has its own thread): the order within each source is kept.
fn normalised(lines: &[String], format_text: bool) -> Vec<String> {
    let mut events: Vec<String> = lines
        .iter()
        .map(|line| {
            if format_text {
                let rest = line.split_once(' ').map_or("", |(_, rest)| rest);
                return rest.trim_start().to_string();
            }
            let mut event: BTreeMap<String, Value> = serde_json::from_str(line).unwrap();
            if event["source"] != "audit" {
                event.remove("ts");
            }
            serde_json::to_string(&event).unwrap()
        })
        .collect();
    let source = |e: &String| -> String {
        if format_text {
            e.split_whitespace().next().unwrap_or("").to_string()
        } else {
            serde_json::from_str::<Value>(e).unwrap()["source"].to_string()
        }
    };
    events.sort_by_key(source);
    events
}

fn same_in_both_modes(flags: &[&str], restart: bool) -> Vec<String> {
    let text = flags.windows(2).any(|w| w == ["--format", "text"]);
    let one = normalised(&run(Mode::One, flags, restart), text);
    let root = normalised(&run(Mode::Root, flags, restart), text);
    assert_eq!(one, root, "{flags:?}: --state-dir and --state-root differ");
    one
}

fn count(events: &[String], needle: &str) -> usize {
    events.iter().filter(|e| e.contains(needle)).count()
}

#[test]
fn source_selects_the_same_streams_in_both_modes() {
    // Seen failing first: host-wide, --source nflog printed the query log's blocked lookups.
    let nflog_only = same_in_both_modes(&["--source", "nflog", "--nflog-group", "4711"], false);
    assert_eq!(nflog_only, Vec::<String>::new());
    let dns = same_in_both_modes(&["--source", "dns"], false);
    assert!(count(&dns, "blocked_query") > 0, "{dns:#?}");
    assert_eq!(count(&dns, "\"audit\""), 0);
    let audit = same_in_both_modes(&["--source", "audit"], false);
    assert_eq!(audit.len(), 3, "the live half: {audit:#?}");
}

#[test]
fn action_dedup_and_query_types_shape_both_modes_alike() {
    let denied = same_in_both_modes(&["--action", "denied"], false);
    assert_eq!(denied.len(), 2, "{denied:#?}");
    let deduped = same_in_both_modes(&["--dedup", "1h", "--action", "denied"], false);
    assert_eq!(
        deduped.len(),
        1,
        "the repeat within the window goes: {deduped:#?}"
    );
    let a_and_aaaa = same_in_both_modes(&[], false);
    let every_type = same_in_both_modes(&["--all-query-types"], false);
    assert!(
        count(&every_type, "blocked_query") > count(&a_and_aaaa, "blocked_query"),
        "{every_type:#?}"
    );
}

#[test]
fn from_start_cursor_and_text_format_alike_in_both_modes() {
    let live = same_in_both_modes(&[], false);
    let whole = same_in_both_modes(&["--from-start"], false);
    assert!(whole.len() > live.len(), "{whole:#?}");
    assert_eq!(count(&whole, "\"setup\""), 1);
    let resumed = same_in_both_modes(&[], true);
    assert!(
        resumed.iter().any(|e| e.contains("while-stopped.example")),
        "{resumed:#?}"
    );
    assert!(
        resumed.iter().any(|e| e.contains("192.0.2.9")),
        "{resumed:#?}"
    );
    let text = same_in_both_modes(&["--format", "text", "--color", "never"], false);
    assert_eq!(text.len(), live.len());
}

#[test]
fn host_wide_a_container_has_one_name_and_an_entrys_own_is_kept_in_extra() {
    // terok-shield's NFLOG reader writes the 12-hex container id; its CLI the name.
    let recorded = Recorded::new();
    let mut command = binary();
    command
        .arg("--state-root")
        .arg(recorded.root.path())
        .args(["--no-nflog", "--source", "audit"]);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    append(
        &recorded.dir().join("audit.jsonl"),
        concat!(
            r#"{"ts":"t1","action":"blocked","container":"2f42ad597bb5","dest":"192.0.2.1","port":443,"proto":"tcp"}"#,
            "\n",
            r#"{"ts":"t2","action":"denied","container":"web","dest":"192.0.2.2"}"#,
            "\n"
        ),
    );
    let events: Vec<Value> = watch
        .lines(2)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["container"], "web");
    assert_eq!(events[0]["extra"]["audit_container"], "2f42ad597bb5");
    assert_eq!(events[1]["container"], "web");
    assert!(events[1].get("extra").is_none(), "{}", events[1]);
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success());
    let summary = stderr.iter().find(|l| l.contains("summary")).unwrap();
    assert!(summary.contains("web=2"), "{summary}");
    assert!(!summary.contains("2f42ad597bb5"), "{summary}");
}
