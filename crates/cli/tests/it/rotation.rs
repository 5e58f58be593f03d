//! Following that loses nothing, through the real binary: rotation under any naming while the
//! watcher is stopped, busy, behind a stopped reader or killed, a writer that keeps appending
//! to its renamed file, and the whole state directory removed and created again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::Signal;

use crate::support::{State, Watch};

const AUDIT: &str = "audit.jsonl";

/// One audit entry carrying its sequence number.
fn entry(n: usize) -> String {
    format!("{{\"action\":\"denied\",\"dest\":\"192.0.2.1\",\"detail\":\"n={n:06}\"}}\n")
}

/// The sequence number an audit event carries.
fn seq(event: &str) -> usize {
    let at = event.find("\"detail\":\"n=").expect("an entry of ours") + 12;
    event[at..at + 6].parse().unwrap()
}

fn seqs(events: &[String]) -> Vec<usize> {
    events.iter().map(|e| seq(e)).collect()
}

fn audit_only() -> Vec<&'static str> {
    vec!["--no-nflog", "--source", "audit"]
}

/// Appends through a fresh open, as terok-shield's writers do.
fn append(state: &State, n: usize) {
    state.append(AUDIT, entry(n).as_bytes());
}

/// logrotate's `dateext` naming with a unique suffix per rotation (RHEL's default naming).
fn dateext(state: &State, k: usize) -> std::path::PathBuf {
    state.file(&format!("{AUDIT}-20261129-{k:05}"))
}

/// Renames the live file away and creates an empty one (logrotate `create`).
fn rotate_to(state: &State, to: &Path) {
    fs::rename(state.file(AUDIT), to).unwrap();
    File::create(state.file(AUDIT)).unwrap();
}

#[test]
fn a_stopped_watcher_misses_no_dateext_rotation() {
    let state = State::new(Some("lookup\n"));
    let mut watch = Watch::start(&state, &audit_only());
    append(&state, 1);
    append(&state, 2);
    assert_eq!(seqs(&watch.lines(2)), [1, 2]);
    watch.signal(Signal::STOP);
    rotate_to(&state, &dateext(&state, 1));
    append(&state, 3);
    append(&state, 4);
    rotate_to(&state, &dateext(&state, 2));
    append(&state, 5);
    append(&state, 6);
    watch.signal(Signal::CONT);
    // The middle file was born and rotated away while the watcher could not look.
    assert_eq!(seqs(&watch.lines(4)), [3, 4, 5, 6]);
}

#[test]
fn a_fast_writer_rotating_by_rename_loses_nothing() {
    let state = State::new(Some("lookup\n"));
    let mut watch = Watch::start(&state, &audit_only());
    let path = state.file(AUDIT);
    let mut out = OpenOptions::new().append(true).open(&path).unwrap();
    // 3 000 lines, a rename about every 100, at full speed: many short-lived files are
    // rotated away before the watcher opens them.
    for n in 1..=3000 {
        out.write_all(entry(n).as_bytes()).unwrap();
        if n % 100 == 0 {
            fs::rename(&path, dateext(&state, n / 100)).unwrap();
            out = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .unwrap();
        }
    }
    let got = seqs(&watch.lines(3000));
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=3000).collect::<Vec<_>>(),
        "every line exactly once"
    );
    // Files are read in birth order; files born within one tick of the filesystem's clock
    // (ext4 stamps births with the kernel's coarse clock) are ordered by inode number, which
    // is creation order unless an inode was freed and re-used meanwhile. Within a file, the
    // order is always the file's.
    for file in 0..30 {
        let of_file: Vec<usize> = got
            .iter()
            .copied()
            .filter(|n| (n - 1) / 100 == file)
            .collect();
        assert!(of_file.is_sorted(), "file {file} out of order: {of_file:?}");
    }
    if !got.is_sorted() {
        eprintln!("files born in the same clock tick came out of creation order");
    }
    append(&state, 9999);
    assert_eq!(
        seqs(&watch.lines(1)),
        [9999],
        "and nothing twice after them"
    );
}

#[test]
fn a_stopped_reader_of_stdout_gets_every_line_of_every_file() {
    let state = State::new(Some("lookup\n"));
    let mut watch = Watch::start_unread(&state, &audit_only());
    // Nobody reads stdout: the pipe fills after a few hundred events and the watcher blocks,
    // while 20 000 lines are written over 3 rotations (the last 5 000 in the live file).
    let mut n = 0;
    for k in 1..=4 {
        for _ in 0..5000 {
            n += 1;
            append(&state, n);
        }
        if k < 4 {
            rotate_to(&state, &dateext(&state, k));
        }
    }
    watch.start_reading();
    assert_eq!(seqs(&watch.lines(20_000)), (1..=20_000).collect::<Vec<_>>());
}

#[test]
fn kill_9_with_a_cursor_while_a_writer_rotates_loses_nothing() {
    let state = State::new(Some("lookup\n"));
    let cursor = state.file("cursor");
    let cursor_arg = cursor.to_str().unwrap().to_string();
    let mut args = audit_only();
    args.extend(["--from-start", "--cursor", &cursor_arg]);
    const TOTAL: usize = 6000;
    // The first run is up before the writer starts (rotated files present at a first start
    // are history, not something to replay).
    let mut first = Some(Watch::start(&state, &args));
    let writer = {
        let path = state.file(AUDIT);
        let dir = state.path().to_path_buf();
        std::thread::spawn(move || {
            let mut out = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .unwrap();
            for n in 1..=TOTAL {
                out.write_all(entry(n).as_bytes()).unwrap();
                if n % 100 == 0 {
                    let to = dir.join(format!("{AUDIT}-20261129-{:05}", n / 100));
                    fs::rename(&path, to).unwrap();
                    out = OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&path)
                        .unwrap();
                }
                if n % 20 == 0 {
                    // Paced so that the kills below land while it writes and rotates.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut kills = 0;
    // Kill -9 after a varying number of events, as long as the writer runs.
    for wanted in [1usize, 150, 7, 400, 60, 900, 3, 250].iter().cycle() {
        if writer.is_finished() && kills >= 4 {
            break;
        }
        let mut watch = first.take().unwrap_or_else(|| Watch::start(&state, &args));
        let mut got = watch.lines(1.min(*wanted));
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < *wanted && Instant::now() < deadline && !writer.is_finished() {
            got.extend(watch.lines(1));
        }
        watch.signal(Signal::KILL);
        kills += 1;
        got.extend(watch.rest());
        for n in seqs(&got) {
            *seen.entry(n).or_default() += 1;
        }
    }
    writer.join().unwrap();
    // Last run: resumes from the cursor and must bring every line not seen yet.
    let mut watch = Watch::start(&state, &args);
    let deadline = Instant::now() + crate::support::DEADLINE;
    while seen.len() < TOTAL && Instant::now() < deadline {
        for n in seqs(&watch.lines_within(1, Duration::from_millis(500))) {
            *seen.entry(n).or_default() += 1;
        }
    }
    let missing: Vec<usize> = (1..=TOTAL).filter(|n| !seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "lost after {kills} kills: {} lines: {missing:?}; cursor file: {:?}",
        missing.len(),
        fs::read_to_string(&cursor)
    );
    let twice = seen.values().filter(|&&c| c > 1).count();
    eprintln!("{kills} kills: every line delivered; {twice} delivered again after a kill");
}

#[test]
fn lines_appended_to_the_renamed_file_2_s_after_rotation_are_delivered() {
    let state = State::new(Some("lookup\n"));
    let mut watch = Watch::start(&state, &audit_only());
    // A daemon holding its file open, as dnsmasq does until SIGUSR2.
    let mut daemon = OpenOptions::new()
        .append(true)
        .open(state.file(AUDIT))
        .unwrap();
    daemon.write_all(entry(1).as_bytes()).unwrap();
    assert_eq!(seqs(&watch.lines(1)), [1]);
    rotate_to(&state, &dateext(&state, 1));
    // Another writer already uses the new file: the watcher moves on to it.
    append(&state, 2);
    assert_eq!(seqs(&watch.lines(1)), [2]);
    // The scenario itself: the daemon writes once more, 2 s later, to its renamed file.
    std::thread::sleep(Duration::from_secs(2));
    daemon.write_all(entry(3).as_bytes()).unwrap();
    assert_eq!(seqs(&watch.lines(1)), [3]);
}

#[test]
fn a_state_directory_removed_and_created_again_is_followed_again() {
    let state = State::new(Some("lookup\n"));
    let mut watch = Watch::start(&state, &audit_only());
    append(&state, 1);
    assert_eq!(seqs(&watch.lines(1)), [1]);
    // The container is stopped (its state directory removed) and started again.
    fs::remove_dir_all(state.path()).unwrap();
    fs::create_dir(state.path()).unwrap();
    fs::write(state.file("dns.tier"), "lookup\n").unwrap();
    append(&state, 2);
    append(&state, 3);
    assert_eq!(
        seqs(&watch.lines(2)),
        [2, 3],
        "the new audit.jsonl from its start"
    );
}

#[test]
fn real_logrotate_with_dateext_and_seconds_twice_while_the_watcher_is_stopped() {
    let state = State::new(Some("lookup\n"));
    let rotate = shield_lab::Logrotate::new(
        state.path(),
        &[&state.file(AUDIT)],
        "dateext\ndateformat -%Y%m%d-%s\ncreate\nrotate 10\nmissingok",
    )
    .unwrap();
    let logrotate = || rotate.run().unwrap();
    let mut watch = Watch::start(&state, &audit_only());
    append(&state, 1);
    assert_eq!(seqs(&watch.lines(1)), [1]);
    watch.signal(Signal::STOP);
    append(&state, 2);
    logrotate();
    append(&state, 3);
    // `%s` names a rotation by its second: the next one must be in a later second of
    // logrotate's clock (time(2), which lags the fine clock by up to a tick).
    let first: u64 = fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("audit.jsonl-")?
                .rsplit('-')
                .next()?
                .parse()
                .ok()
        })
        .expect("the first rotation's name");
    let deadline = Instant::now() + crate::support::DEADLINE;
    while SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .saturating_sub(Duration::from_secs(first + 1))
        < Duration::from_millis(50)
    {
        assert!(Instant::now() < deadline, "the clock does not move");
        std::thread::sleep(Duration::from_millis(20));
    }
    logrotate();
    append(&state, 4);
    let rotated = fs::read_dir(state.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit.jsonl-"))
        .count();
    assert_eq!(rotated, 2, "logrotate made two dateext rotations");
    watch.signal(Signal::CONT);
    assert_eq!(seqs(&watch.lines(3)), [2, 3, 4], "every line exactly once");
    append(&state, 5);
    assert_eq!(seqs(&watch.lines(1)), [5]);
}

#[test]
fn the_ready_line_comes_even_when_history_fills_stdout_before_anyone_reads_it() {
    let state = State::new(Some("lookup\n"));
    // Far more than a pipe holds (64 KiB): the history's events alone would fill stdout.
    let history: String = (1..=5000).map(entry).collect();
    state.append(AUDIT, history.as_bytes());
    let cursor = state.file("cursor");
    let mut args = audit_only();
    args.extend(["--from-start", "--cursor", cursor.to_str().unwrap()]);
    // A reader that waits for the ready line before reading stdout; the position sync the
    // ready line waits for is held back a while (a debug-build hook), as on a loaded host.
    let mut watch = Watch::start_unread_with_env(
        &state,
        &args,
        &[(
            "SHIELD_WATCH_DEBUG_DELAY_SYNC_MS",
            std::ffi::OsStr::new("300"),
        )],
    );
    watch.start_reading();
    assert_eq!(seqs(&watch.lines(5000)), (1..=5000).collect::<Vec<_>>());
}
