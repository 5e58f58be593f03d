//! History end to end: logs rotated by the real logrotate (numbered with `compress` +
//! `delaycompress`, and `dateext`), lines at known times, read back with `--since`, `--until`,
//! `--last` and `--no-follow` in both modes, then live with nothing lost or twice.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{binary, Watch};

/// A container `web` under `ROOT/containers/` whose two logs hold minute `m` of 10:00 UTC on
/// 2026-12-04 for `m` in `minutes`, rotated by logrotate after every third minute.
struct Recorded {
    root: tempfile::TempDir,
}

impl Recorded {
    fn new(minutes: std::ops::Range<u32>, dateext: bool) -> Recorded {
        let root = tempfile::tempdir().unwrap();
        let recorded = Recorded { root };
        let dir = recorded.dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "dnsmasq-static\n").unwrap();
        fs::write(dir.join("profile.domains"), "allowed.example\n").unwrap();
        let naming = if dateext {
            "dateext\ndateformat -%Y%m%d-%s\n"
        } else {
            "compress\ndelaycompress\n"
        };
        let (log, audit) = (dir.join("dnsmasq.log"), dir.join("audit.jsonl"));
        let rotate = shield_lab::Logrotate::new(
            recorded.root.path(),
            &[&log, &audit],
            &format!("{naming}create\nrotate 20\nmissingok"),
        )
        .unwrap();
        for m in minutes {
            recorded.write_minute(m);
            if m % 3 == 2 {
                rotate.run().unwrap();
                if dateext {
                    // dateformat's %s has one-second resolution: rotations a second apart.
                    std::thread::sleep(std::time::Duration::from_millis(1100));
                }
            }
        }
        recorded
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("containers").join("web")
    }

    /// One blocked lookup and one audit entry at minute `m` (seconds 10 and 20).
    fn write_minute(&self, m: u32) {
        append(
            &self.dir().join("dnsmasq.log"),
            &format!("Dec  4 10:{m:02}:10 dnsmasq[7]: query[A] m{m}.example from 10.0.2.100\n"),
        );
        append(
            &self.dir().join("audit.jsonl"),
            &format!(
                "{{\"ts\":\"2026-12-04T10:{m:02}:20+00:00\",\"action\":\"denied\",\"dest\":\"192.0.2.{m}\"}}\n"
            ),
        );
    }
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    One,
    Root,
}

fn command(recorded: &Recorded, mode: Mode, args: &[&str]) -> Command {
    let mut command = binary();
    match mode {
        Mode::One => command.arg("--state-dir").arg(recorded.dir()),
        Mode::Root => command.arg("--state-root").arg(recorded.root.path()),
    };
    command.env("TZ", "UTC").arg("--no-nflog").args(args);
    command
}

/// Runs to its end (`--no-follow`): exit 0, stdout's events.
fn history(recorded: &Recorded, mode: Mode, args: &[&str]) -> Vec<Value> {
    let out = command(recorded, mode, args).output().unwrap();
    assert!(
        out.status.success(),
        "{mode:?} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `(source, minute)` of each event.
fn minutes(events: &[Value]) -> Vec<(String, u32)> {
    events
        .iter()
        .map(|e| {
            let ts = e["ts"].as_str().unwrap();
            (
                e["source"].as_str().unwrap().to_string(),
                ts[14..16].parse().unwrap(),
            )
        })
        .collect()
}

fn both(m: u32) -> Vec<(String, u32)> {
    vec![("dns".to_string(), m), ("audit".to_string(), m)]
}

#[test]
fn since_until_and_last_over_rotated_and_compressed_logs_in_both_modes() {
    let recorded = Recorded::new(0..12, false);
    let files: Vec<String> = fs::read_dir(recorded.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".gz")), "{files:?}");
    for mode in [Mode::One, Mode::Root] {
        let window = history(
            &recorded,
            mode,
            &[
                "--since",
                "2026-12-04 10:04",
                "--until",
                "2026-12-04T10:07:15Z",
            ],
        );
        // In time order across both sources and every file: 10:04:10 dns, 10:04:20 audit, ...
        let want: Vec<(String, u32)> = (4..7).flat_map(both).chain([("dns".into(), 7)]).collect();
        assert_eq!(minutes(&window), want, "{mode:?}");
        assert_eq!(window[0]["ts"], "2026-12-04T10:04:10.000000+00:00");
        assert_eq!(window[0]["domain"], "m4.example");
        assert_eq!(window[1]["ts"], "2026-12-04T10:04:20+00:00");

        let last = history(&recorded, mode, &["--last", "3", "--no-follow"]);
        assert_eq!(
            minutes(&last),
            [
                ("audit".into(), 10),
                ("dns".into(), 11),
                ("audit".into(), 11)
            ],
            "{mode:?}"
        );
        let last_dns = history(
            &recorded,
            mode,
            &["--last", "2", "--source", "dns", "--no-follow"],
        );
        assert_eq!(minutes(&last_dns), [("dns".into(), 10), ("dns".into(), 11)]);
        let everything = history(&recorded, mode, &["--since", "2026-12-04", "--no-follow"]);
        assert_eq!(everything.len(), 24, "{mode:?}");
        // The text format, the same events.
        let out = command(
            &recorded,
            mode,
            &[
                "--since",
                "2026-12-04 10:04",
                "--until",
                "2026-12-04 10:07:15",
                "--format",
                "text",
                "--color",
                "never",
            ],
        )
        .output()
        .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 7);
    }
}

#[test]
fn dateext_history_then_live_with_nothing_lost_or_twice() {
    let recorded = Recorded::new(0..6, true);
    let mut watch = Watch::spawn_command(command(
        &recorded,
        Mode::Root,
        &["--since", "2026-12-04 10:02"],
    ));
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    let history: Vec<Value> = watch
        .lines(8)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(minutes(&history), (2..6).flat_map(both).collect::<Vec<_>>());
    // Live: the next minutes, once each.
    recorded.write_minute(6);
    recorded.write_minute(7);
    let live: Vec<Value> = watch
        .lines(4)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String)> = live
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().into(),
                e["domain"].as_str().or(e["dest"].as_str()).unwrap().into(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("audit".into(), "192.0.2.6".into()),
            ("audit".into(), "192.0.2.7".into()),
            ("dns".into(), "m6.example".into()),
            ("dns".into(), "m7.example".into())
        ]
    );
    watch.no_more_lines(std::time::Duration::from_millis(300));
}

#[test]
fn a_new_years_boundary_in_another_time_zone() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("web");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("dns.tier"), "dnsmasq-static\n").unwrap();
    fs::write(
        dir.join("dnsmasq.log"),
        "Dec 31 23:59:30 dnsmasq[7]: query[A] old.example from 10.0.2.100\n\
         Jan  1 00:00:30 dnsmasq[7]: query[A] new.example from 10.0.2.100\n",
    )
    .unwrap();
    let out = binary()
        .env("TZ", "America/New_York")
        .arg("--state-dir")
        .arg(&dir)
        .args([
            "--no-nflog",
            "--source",
            "dns",
            "--since",
            "2025-12-31 23:00",
            "--until",
            "2026-01-01 01:00",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each line in the latest year that does not put it in the future, in New York time.
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["domain"], "old.example");
    assert_eq!(events[0]["ts"], "2026-01-01T04:59:30.000000+00:00");
    assert_eq!(events[1]["domain"], "new.example");
    assert_eq!(events[1]["ts"], "2026-01-01T05:00:30.000000+00:00");
}

#[test]
fn a_corrupt_gz_is_skipped_with_a_line_and_the_rest_delivered() {
    let recorded = Recorded::new(0..9, false);
    let gz = fs::read_dir(recorded.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("audit.jsonl.2.gz"))
        .expect("a compressed rotation");
    let mut bytes = fs::read(&gz).unwrap();
    let len = bytes.len();
    bytes.truncate(len / 2);
    fs::write(&gz, bytes).unwrap();
    let out = command(
        &recorded,
        Mode::One,
        &["--since", "2026-12-04", "--no-follow", "--source", "audit"],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit.jsonl.2.gz"), "{stderr}");
    let events = String::from_utf8(out.stdout).unwrap();
    // audit.jsonl.2.gz held minutes 3 to 5; the other files' minutes are all there.
    for m in [0, 1, 2, 6, 7, 8] {
        assert!(
            events.contains(&format!("192.0.2.{m}\"")),
            "minute {m}: {events}"
        );
    }
}

/// History, then live, while a writer keeps appending and logrotate keeps rotating (numbered,
/// `compress` + `delaycompress`) from before the start, through a history long enough to be
/// rotated under several times, to after the ready line: every entry from `--since` on comes
/// out once, in order. (A follower that resumed from the history's snapshot lost every file
/// rotated twice meanwhile: `delaycompress` had compressed it.)
#[test]
fn history_then_live_while_a_writer_appends_and_logrotate_rotates() {
    for mode in [Mode::One, Mode::Root] {
        history_then_live_under_rotation(mode);
    }
}

fn history_then_live_under_rotation(mode: Mode) {
    let recorded = Recorded::new(0..1, false);
    let log = recorded.dir().join("audit.jsonl");
    let conf = tempfile::tempdir().unwrap();
    let rotate = shield_lab::Logrotate::new(
        conf.path(),
        &[&log],
        "compress\ndelaycompress\ncreate\nrotate 1000\nmissingok",
    )
    .unwrap();
    // Entry `seq` at 12:00 plus `seq` tenths of a millisecond: its time order is its order.
    let entry = |seq: u32| {
        format!(
            "{{\"ts\":\"2026-12-04T12:{:02}:{:02}.{:04}+00:00\",\"action\":\"denied\",\"dest\":\"{seq}\"}}\n",
            seq / 600_000,
            seq / 10_000 % 60,
            seq % 10_000
        )
    };
    // A long history, rotated every 20 000 entries; then a writer that appends 100 entries
    // every 20 ms and rotates every 200 ms, from before shield-watch starts until well after
    // its history is read. (Every 200 ms, not faster: a live follower held up for longer than
    // two rotations, on a loaded machine, meets the limit `delaycompress` leaves, CONTRACT §5.)
    let (before, total) = (100_000, 110_000);
    for chunk in (0..before).collect::<Vec<_>>().chunks(5_000) {
        append(&log, &chunk.iter().map(|&s| entry(s)).collect::<String>());
        if chunk[0] % 20_000 == 0 {
            rotate.run().unwrap();
        }
    }
    let writer = std::thread::spawn({
        let log = log.clone();
        move || {
            for chunk in (before..total).collect::<Vec<_>>().chunks(100) {
                append(&log, &chunk.iter().map(|&s| entry(s)).collect::<String>());
                if chunk[0] % 1_000 == 0 {
                    rotate.run().unwrap();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    });
    let mut watch = Watch::spawn_command(command(
        &recorded,
        mode,
        &["--since", "2026-12-04 12:00", "--source", "audit"],
    ));
    writer.join().unwrap();
    append(&log, &entry(total));
    let seen: Vec<u32> = watch
        .lines_until(|l| l.contains(&format!("\"dest\":\"{total}\"")))
        .iter()
        .map(|l| {
            let event: Value = serde_json::from_str(l).unwrap();
            event["dest"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let want: Vec<u32> = (0..=total).collect();
    if seen != want {
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        sorted.dedup();
        // The entries missing, as ranges.
        let mut missing: Vec<(u32, u32)> = Vec::new();
        for seq in want.iter().filter(|s| sorted.binary_search(s).is_err()) {
            match missing.last_mut() {
                Some((_, end)) if *end + 1 == *seq => *end = *seq,
                _ => missing.push((*seq, *seq)),
            }
        }
        panic!(
            "{mode:?}: {} events for {} entries, {} distinct; first out of place at {:?}; missing {:?}; stderr {:#?}",
            seen.len(),
            want.len(),
            sorted.len(),
            seen.iter().zip(&want).position(|(a, b)| a != b),
            missing,
            watch.stderr_now()
        );
    }
}

/// A container `web` whose audit log holds `n` entries from 11:00 on 2026-12-04, far more than
/// the pipe, the channel and the merge's batches hold together.
fn long_audit_history(n: u32) -> Recorded {
    let recorded = Recorded::new(0..1, false);
    let entries: String = (0..n)
        .map(|i| {
            format!(
                "{{\"ts\":\"2026-12-04T11:{:02}:{:02}.{:06}+00:00\",\"action\":\"denied\"}}\n",
                i / 1_000_000 / 60,
                i / 1_000_000 % 60,
                i % 1_000_000
            )
        })
        .collect();
    append(&recorded.dir().join("audit.jsonl"), &entries);
    recorded
}

/// A reader that goes away mid-replay (`| head`) ends it: exit 0 at once. The reader stops
/// reading first, until the replay is stalled on the full pipe with every batch of the merge
/// out; the merge then waited ten minutes for a batch the gone writer would never return.
#[test]
fn a_reader_that_goes_away_ends_the_replay_at_once() {
    use std::io::BufRead as _;
    let recorded = long_audit_history(200_000);
    for mode in [Mode::One, Mode::Root] {
        let mut watch = Watch::spawn_command_unread(command(
            &recorded,
            mode,
            &["--since", "2026-12-04 11:00", "--no-follow"],
        ));
        let mut stdout = std::io::BufReader::new(watch.take_stdout());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"denied\""), "{mode:?}: {line}");
        stalled(watch.pid());
        drop(stdout);
        let (status, stderr) = watch.wait_exit();
        assert_eq!(status.code(), Some(0), "{mode:?}: {stderr:#?}");
    }
}

/// Waits until every thread of `pid` sleeps, twice in a row 20 ms apart: a replay whose output
/// nobody reads has then gone as far as its buffers let it.
fn stalled(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let all_asleep = || {
        fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .all(|task| {
                let stat =
                    fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
                // The state follows the parenthesised name.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('S'))
            })
    };
    let mut in_a_row = 0;
    while in_a_row < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never stalled"
        );
        in_a_row = if all_asleep() { in_a_row + 1 } else { 0 };
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// SIGTERM (or Ctrl-C) during a long history stops it: what was handed to the writer comes out,
/// the rest is not read, exit 0; without following, as with it.
#[test]
fn a_signal_during_the_history_stops_it() {
    use std::io::BufRead as _;
    let total = 200_000;
    let recorded = long_audit_history(total);
    for (mode, follow) in [(Mode::One, false), (Mode::Root, true)] {
        let mut args = vec!["--since", "2026-12-04 11:00"];
        if !follow {
            args.push("--no-follow");
        }
        let mut watch = Watch::spawn_command_unread(command(&recorded, mode, &args));
        let mut stdout = std::io::BufReader::new(watch.take_stdout());
        // The first line: the history is being written (the signal handlers are in place long
        // before). Nothing more is read until the signal, so the replay cannot get further than
        // the pipe, the channel and the merge's batches hold.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"denied\""), "{mode:?}: {line}");
        watch.signal(rustix::process::Signal::TERM);
        let written = 1 + stdout.lines().map(Result::unwrap).count();
        let (status, stderr) = watch.wait_exit();
        assert_eq!(status.code(), Some(0), "{mode:?}: {stderr:#?}");
        assert!(
            written < total as usize / 2,
            "{mode:?}: {written} of {total} events written after the signal"
        );
    }
}

#[test]
fn senseless_combinations_are_usage_errors() {
    for args in [
        &[
            "--state-dir",
            "/nonexistent",
            "--since",
            "1h",
            "--cursor",
            "/tmp/c",
        ][..],
        &[
            "--state-dir",
            "/nonexistent",
            "--since",
            "1h",
            "--from-start",
        ],
        &[
            "--state-dir",
            "/nonexistent",
            "--since",
            "1h",
            "--until",
            "2h",
        ],
        &["--state-dir", "/nonexistent", "--since", "yesterday-ish"],
        &["--state-dir", "/nonexistent", "--no-follow"],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let (status, _, stderr) = crate::support::run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    }
}
