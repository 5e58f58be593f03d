//! A real dnsmasq logging queries to a file, rotated by rename + SIGUSR2 while queried:
//! every query line appears exactly once.

use std::fs;
use std::net::UdpSocket;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shield_tail::{Follower, Options, Record, Start};

use crate::eventually;

/// Kills and reaps the dnsmasq it owns, also when the test panics.
struct Dnsmasq {
    child: Child,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, log: &Path) -> Option<(Dnsmasq, u16)> {
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--user=root",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--log-queries",
                &format!("--log-facility={}", log.display()),
                "--address=/example.test/192.0.2.1",
                &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut d = Dnsmasq { child };
        // Ready once it answers; a port taken in between makes it exit: try another.
        let ready = eventually(Duration::from_secs(10), || {
            matches!(d.child.try_wait(), Ok(Some(_)))
                || dig(port, &["ready.example.test"]).is_some()
        });
        if ready && d.child.try_wait().ok().flatten().is_none() {
            return Some((d, port));
        }
    }
    None
}

/// Queries each name once (one dig process, batch mode); `None` if dig failed.
fn dig(port: u16, names: &[&str]) -> Option<String> {
    let mut args = vec![
        "@127.0.0.1".to_string(),
        "-p".to_string(),
        port.to_string(),
        "+tries=1".to_string(),
        "+time=2".to_string(),
        "+short".to_string(),
    ];
    for n in names {
        args.push(n.to_string());
        args.push("A".to_string());
    }
    let out = Command::new("dig").args(&args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && text.lines().filter(|l| *l == "192.0.2.1").count() == names.len())
        .then_some(text)
}

fn queries_in(lines: &[Vec<u8>]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let s = String::from_utf8_lossy(l);
            let i = s.find("query[A] ")?;
            let name = s[i + 9..].split(' ').next()?.to_string();
            name.starts_with('q').then_some(name)
        })
        .collect()
}

#[test]
fn dnsmasq_rotated_by_rename_and_sigusr2() {
    // About the real dnsmasq: without it the test fails rather than passing vacuously.
    assert!(
        Command::new("dnsmasq").arg("--version").output().is_ok()
            && Command::new("dig").arg("-v").output().is_ok(),
        "this test needs dnsmasq and dig: apt-get install dnsmasq-base dnsutils (cargo xtask ci does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    let log = dir.join("dnsmasq.log");
    let mut f = Follower::open(&log, Start::End, Options::default()).unwrap();
    let (d, port) = start(&dir, &log).expect("dnsmasq did not start");
    // The follower runs on its own thread, as in the product, until told how many to expect.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<usize>();
    let follower = std::thread::spawn(move || {
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut expected = None;
        let mut deadline = None;
        loop {
            f.read_available(&mut |r| {
                if let Record::Line { bytes, .. } = r {
                    lines.push(bytes.to_vec());
                }
                ControlFlow::Continue(())
            })
            .unwrap();
            if let Ok(n) = stop_rx.try_recv() {
                expected = Some(n);
                deadline = Some(Instant::now() + Duration::from_secs(20));
            }
            if let (Some(n), Some(d)) = (expected, deadline) {
                if queries_in(&lines).len() >= n || Instant::now() >= d {
                    return (lines, f.stats());
                }
            }
            f.wait(Some(Duration::from_millis(100))).unwrap();
        }
    });
    let mut want = Vec::new();
    let names = |round: usize| -> Vec<String> {
        (0..20)
            .map(|i| format!("q{round}-{i}.example.test"))
            .collect()
    };
    for round in 0..4 {
        let ns = names(round);
        let refs: Vec<&str> = ns.iter().map(String::as_str).collect();
        dig(port, &refs).expect("dig failed");
        want.extend(ns);
        if round < 3 {
            // logrotate's way: rename, then tell dnsmasq to reopen its log (SIGUSR2).
            fs::rename(&log, dir.join(format!("dnsmasq.log.{}", round + 1))).unwrap();
            // Queries between the rename and the reopen still go to the renamed file.
            let extra = format!("q{round}-between.example.test");
            dig(port, &[&extra]).expect("dig failed");
            want.push(extra);
            rustix::process::kill_process(
                rustix::process::Pid::from_child(&d.child),
                rustix::process::Signal::USR2,
            )
            .unwrap();
            assert!(eventually(Duration::from_secs(10), || log.exists()));
        }
    }
    stop_tx.send(want.len()).unwrap();
    let (lines, stats) = follower.join().unwrap();
    let got = queries_in(&lines);
    assert_eq!(got, want, "every query line exactly once, in order");
    assert_eq!(stats.rotations, 3, "{stats:?}");
    drop(d);
}
