//! The real `logrotate` binary rotating a file under a live writer, in `create` and
//! `copytruncate` modes: every line arrives exactly once.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shield_tail::{Follower, Options, Start};

use crate::{appender, assert_records, got, Got};

/// These tests are about the real logrotate: without it they fail, they do not pass vacuously.
fn require_logrotate() {
    assert!(
        Command::new("logrotate").arg("--version").output().is_ok(),
        "the logrotate tests need the real logrotate: apt-get install logrotate (cargo xtask ci does)"
    );
}

/// Writes a config for `log` (own state file, forced rotation) and returns a closure running it.
fn config(dir: &Path, log: &Path, body: &str) -> impl Fn() {
    let conf = dir.join("logrotate.conf");
    let state = dir.join("logrotate.state");
    fs::write(&conf, format!("{} {{\n{body}\n}}\n", log.display())).unwrap();
    move || {
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn line(i: usize) -> String {
    format!("line {i:06} {}", "x".repeat(i % 97))
}

fn follow_until(f: &mut Follower, out: &mut Vec<Got>, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while out.len() < n && Instant::now() < deadline {
        f.read_available(&mut |r| out.push(got(&r))).unwrap();
        if out.len() < n {
            f.wait(Some(Duration::from_millis(100))).unwrap();
        }
    }
}

#[test]
fn logrotate_create_mode_with_live_writer() {
    require_logrotate();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let log = dir.join("app.log");
    let flag = dir.join("reopen");
    let rotate = config(
        &dir,
        &log,
        &format!(
            "    create 0644\n    rotate 10\n    missingok\n    nocompress\n    postrotate\n        touch {}\n    endscript",
            flag.display()
        ),
    );
    fs::File::create(&log).unwrap();
    let mut f = Follower::open(&log, Start::Beginning, Options::default()).unwrap();
    const N: usize = 6000;
    let writer = {
        let (log, flag) = (log.clone(), flag.clone());
        std::thread::spawn(move || {
            // Like a daemon: keeps one fd, reopens the path when told (its SIGUSR2).
            let mut w = appender(&log);
            for i in 0..N {
                if flag.exists() {
                    fs::remove_file(&flag).unwrap();
                    w = appender(&log);
                }
                w.write_all(format!("{}\n", line(i)).as_bytes()).unwrap();
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let rotator = std::thread::spawn(move || {
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(40));
            rotate();
        }
    });
    let mut out = Vec::new();
    follow_until(&mut f, &mut out, N, Duration::from_secs(60));
    writer.join().unwrap();
    rotator.join().unwrap();
    let want: Vec<Got> = (0..N).map(|i| Got::line(&line(i))).collect();
    assert_records(&out, &want);
    assert!(f.stats().rotations >= 1, "{:?}", f.stats());
    let rotated: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        rotated.iter().any(|p| p.ends_with("app.log.1")),
        "{rotated:?}"
    );
}

#[test]
fn logrotate_copytruncate_mode_with_live_writer() {
    require_logrotate();
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
    // so); the writer therefore holds still while logrotate runs, and writes concurrently
    // with the follower the rest of the time.
    const BATCHES: usize = 12;
    const PER: usize = 400;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut w = appender(&log);
            for b in 0..BATCHES {
                go_rx.recv().unwrap();
                for i in b * PER..(b + 1) * PER {
                    w.write_all(format!("{}\n", line(i)).as_bytes()).unwrap();
                }
            }
        })
    };
    let mut out = Vec::new();
    for b in 0..BATCHES {
        go_tx.send(()).unwrap();
        follow_until(&mut f, &mut out, (b + 1) * PER, Duration::from_secs(30));
        if b % 3 == 2 {
            rotate();
        }
    }
    writer.join().unwrap();
    // The last rotation came after the last line: one more look notices it.
    f.read_available(&mut |r| out.push(got(&r))).unwrap();
    let want: Vec<Got> = (0..BATCHES * PER).map(|i| Got::line(&line(i))).collect();
    assert_records(&out, &want);
    assert_eq!(f.stats().truncations, 4, "{:?}", f.stats());
}
