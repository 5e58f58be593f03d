//! The real `logrotate` binary rotating a file under a live writer, in `create` mode (numbered,
//! `dateext`, and `compress`) and `copytruncate` mode: every line arrives exactly once.
//!
//! Each rotation lands mid-stream by construction, not by timing: the writer stops at a gate,
//! writes a stretch the follower is known not to have read, keeps writing while logrotate runs,
//! and appends to the renamed file after logrotate returned before it reopens the path (as a
//! daemon does until its reopen signal). No sleep places anything.

use std::fs;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use shield_tail::{Follower, Options, Start};

use crate::{appender, assert_records, got, Got};

/// How long any one step may take before the test fails (a pass never waits for it).
const STEP: Duration = Duration::from_secs(30);

/// A configuration for `log` (own state file, forced rotation), as a closure running it. These
/// tests are about the real logrotate: without it they fail (naming the package), never pass.
fn config(dir: &Path, log: &Path, body: &str) -> impl Fn() + Send + Clone + 'static {
    let rotate = shield_lab::Logrotate::new(dir, &[log], body).unwrap();
    move || rotate.run().unwrap()
}

fn line(i: usize) -> String {
    format!("line {i:06} {}", "x".repeat(i % 97))
}

fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(STEP) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("no {what} within {STEP:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: the other side is gone"),
    }
}

/// Reads until `out` holds `n` records (failing after [`STEP`]).
fn follow_until(f: &mut Follower, out: &mut Vec<Got>, n: usize) {
    let deadline = Instant::now() + STEP;
    loop {
        f.read_available(&mut |r| {
            out.push(got(&r));
            ControlFlow::Continue(())
        })
        .unwrap();
        if out.len() >= n {
            return;
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "{} of {n} records within {STEP:?}",
            out.len()
        );
        f.wait(Some(deadline - now)).unwrap();
    }
}

/// Files in `dir` whose names start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Where the writer stops for rotation `k`, after how many lines.
const GATES: [usize; 4] = [1000, 2200, 3400, 4600];
/// Lines written to the file after the follower stopped reading and before logrotate starts:
/// unread when the file is renamed.
const UNREAD: usize = 100;
/// Lines the writer may write while logrotate runs (it then waits for logrotate to finish).
const DURING: usize = 200;
/// Lines the writer appends to the renamed file after logrotate returned, before reopening.
const AFTER: usize = 20;
const N: usize = 6000;

/// What the writer tells the test.
enum Writer {
    /// Wrote `GATES[k]` lines; waits for the go.
    AtGate,
    /// Wrote `UNREAD` more: logrotate may start.
    Unread,
}

/// A daemon-like writer for `create` mode: one descriptor, reopened after each rotation, and
/// stopped at the gates as described above.
fn create_mode_writer(
    log: PathBuf,
    tell: Sender<Writer>,
    go: Receiver<()>,
    rotated: Receiver<()>,
    gates: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = appender(&log);
        let mut k = 0;
        let mut i = 0;
        while i < N {
            if k < gates && i == GATES[k] {
                tell.send(Writer::AtGate).unwrap();
                recv(&go, "go");
                for _ in 0..UNREAD {
                    w.write_all(format!("{}\n", line(i)).as_bytes()).unwrap();
                    i += 1;
                }
                tell.send(Writer::Unread).unwrap();
                // Writes on while logrotate runs, as far as DURING lines.
                for _ in 0..DURING {
                    w.write_all(format!("{}\n", line(i)).as_bytes()).unwrap();
                    i += 1;
                }
                recv(&rotated, "the end of the rotation");
                // Still on the renamed file: the reopen signal has not reached us yet.
                for _ in 0..AFTER {
                    w.write_all(format!("{}\n", line(i)).as_bytes()).unwrap();
                    i += 1;
                }
                w = appender(&log);
                k += 1;
                continue;
            }
            w.write_all(format!("{}\n", line(i)).as_bytes()).unwrap();
            i += 1;
        }
    })
}

/// Follows `app.log` from its start while the writer above writes `N` lines and `rotate` runs at
/// each gate (odd ones on another thread while the follower keeps reading, even ones while it
/// does not read). `before_rotation(k)` runs just before rotation `k` (the `dateext` test waits
/// there for a new second).
fn create_mode(
    body: &str,
    gates: usize,
    mut before_rotation: impl FnMut(usize),
) -> (tempfile::TempDir, Follower) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let log = dir.join("app.log");
    let rotate = config(&dir, &log, body);
    fs::File::create(&log).unwrap();
    let mut f = Follower::open(&log, Start::Beginning, Options::default()).unwrap();
    let (tell_tx, tell) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let (rotated, rotated_rx) = mpsc::channel();
    let writer = create_mode_writer(log.clone(), tell_tx, go_rx, rotated_rx, gates);
    let mut out = Vec::new();
    let mut k = 0;
    let mut deadline = Instant::now() + STEP;
    while out.len() < N {
        assert!(
            Instant::now() < deadline,
            "{} of {N} lines within {STEP:?} of the last rotation",
            out.len()
        );
        f.read_available(&mut |r| {
            out.push(got(&r));
            ControlFlow::Continue(())
        })
        .unwrap();
        if k < gates {
            if let Ok(Writer::AtGate) = tell.try_recv() {
                before_rotation(k);
                // From here until logrotate starts the follower does not read.
                let read = out.len();
                go.send(()).unwrap();
                assert!(matches!(recv(&tell, "unread lines"), Writer::Unread));
                let unread = GATES[k] + UNREAD - read;
                assert!(unread >= UNREAD, "rotation {k}: {unread} lines unread");
                if k % 2 == 0 {
                    rotate();
                } else {
                    let t = std::thread::spawn(rotate.clone());
                    let deadline = Instant::now() + STEP;
                    while !t.is_finished() {
                        assert!(Instant::now() < deadline, "logrotate hangs");
                        f.read_available(&mut |r| {
                            out.push(got(&r));
                            ControlFlow::Continue(())
                        })
                        .unwrap();
                        f.wait(Some(Duration::from_millis(20))).unwrap();
                    }
                    t.join().unwrap();
                }
                rotated.send(()).unwrap();
                k += 1;
                deadline = Instant::now() + STEP;
                continue;
            }
        }
        if out.len() < N {
            // Woken by the writer's lines; the timeout only bounds a wait while the writer
            // is stopped at a gate (its message comes through a channel, not the file).
            f.wait(Some(Duration::from_millis(20))).unwrap();
        }
    }
    writer.join().unwrap();
    assert_eq!(k, gates, "every rotation ran");
    let want: Vec<Got> = (0..N).map(|i| Got::line(&line(i))).collect();
    assert_records(&out, &want);
    // Nothing more comes, whatever is left in the directory.
    f.read_available(&mut |r| {
        out.push(got(&r));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.len(), N);
    assert_eq!(f.stats().rotations, gates as u64, "{:?}", f.stats());
    (tmp, f)
}

#[test]
fn logrotate_create_mode_with_live_writer() {
    let (tmp, _) = create_mode(
        "    create 0644\n    rotate 10\n    missingok\n    nocompress",
        GATES.len(),
        |_| {},
    );
    assert_eq!(
        named(tmp.path(), "app.log"),
        [
            "app.log",
            "app.log.1",
            "app.log.2",
            "app.log.3",
            "app.log.4"
        ]
    );
}

/// `dateext` (RHEL's default naming) with a `dateformat` unique per second: a later rotation
/// gets a later suffix, which the numbering-based search of earlier versions missed.
#[test]
fn logrotate_dateext_mode_with_live_writer() {
    let mut last: Option<SystemTime> = None;
    let (tmp, _) = create_mode(
        "    create 0644\n    dateext\n    dateformat -%Y%m%d-%s\n    rotate 10\n    missingok\n    nocompress",
        3,
        |_| {
            // `%s` names a rotation by its second (logrotate's time(2), which can lag the
            // fine clock by a tick): the next rotation must run in a later second.
            if let Some(t) = last {
                let next = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 1;
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(next * 1000 + 50);
                let deadline = Instant::now() + STEP;
                while SystemTime::now() < at {
                    assert!(Instant::now() < deadline, "the clock does not move");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            last = Some(SystemTime::now());
        },
    );
    let names = named(tmp.path(), "app.log");
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(
        names[1..].iter().all(|n| n.starts_with("app.log-")),
        "{names:?}"
    );
}

/// `compress`: each rotated file is gzipped and removed right after its rotation. The `.gz`
/// files are never read as text; what the follower had not read yet, and what the writer
/// appended to the renamed file afterwards, is read through the descriptor it holds.
#[test]
fn logrotate_compress_mode_with_live_writer() {
    let (tmp, _) = create_mode(
        "    create 0644\n    rotate 10\n    missingok\n    compress",
        GATES.len(),
        |_| {},
    );
    assert_eq!(
        named(tmp.path(), "app.log"),
        [
            "app.log",
            "app.log.1.gz",
            "app.log.2.gz",
            "app.log.3.gz",
            "app.log.4.gz"
        ]
    );
}

#[test]
fn logrotate_copytruncate_mode_with_live_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let log = dir.join("app.log");
    let rotate = config(
        &dir,
        &log,
        "    copytruncate\n    rotate 10\n    missingok\n    nocompress",
    );
    fs::File::create(&log).unwrap();
    let mut f = Follower::open(&log, Start::Beginning, Options::default()).unwrap();
    // copytruncate loses what is written between its copy and its truncate (logrotate says
    // so); the writer therefore holds still while logrotate runs. Each rotation comes with the
    // follower mid-file (it read the first half of a batch) and the second half unread, so the
    // unread lines are only in logrotate's copy when the follower looks again.
    const BATCHES: usize = 12;
    const PER: usize = 400;
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut w = appender(&log);
            let mut i = 0;
            while i < BATCHES * PER {
                let n = recv(&go_rx, "go");
                for _ in 0..n {
                    w.write_all(format!("{}\n", line(i)).as_bytes()).unwrap();
                    i += 1;
                }
                done_tx.send(()).unwrap();
            }
        })
    };
    let mut out = Vec::new();
    for b in 0..BATCHES {
        if b % 3 == 2 {
            go_tx.send(PER / 2).unwrap();
            follow_until(&mut f, &mut out, b * PER + PER / 2);
            recv(&done_rx, "first half");
            go_tx.send(PER / 2).unwrap();
            recv(&done_rx, "second half");
            assert_eq!(out.len(), b * PER + PER / 2, "the second half is unread");
            rotate();
            follow_until(&mut f, &mut out, (b + 1) * PER);
        } else {
            // The follower reads while the writer writes.
            go_tx.send(PER).unwrap();
            follow_until(&mut f, &mut out, (b + 1) * PER);
            recv(&done_rx, "batch");
        }
    }
    writer.join().unwrap();
    f.read_available(&mut |r| {
        out.push(got(&r));
        ControlFlow::Continue(())
    })
    .unwrap();
    let want: Vec<Got> = (0..BATCHES * PER).map(|i| Got::line(&line(i))).collect();
    assert_records(&out, &want);
    assert_eq!(f.stats().truncations, 4, "{:?}", f.stats());
    assert_eq!(named(&dir, "app.log").len(), 5);
}
