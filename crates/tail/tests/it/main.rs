//! Integration tests of shield-tail against real files, real logrotate and a real dnsmasq.

mod cases;
mod dnsmasq;
mod history;
mod logrotate;
mod model;
mod set;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use shield_tail::{Follower, Record};

/// What a follower delivered, in a comparable form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Got {
    Line(Vec<u8>),
    TooLong(u64),
}

impl Got {
    pub(crate) fn line(s: &str) -> Got {
        Got::Line(s.as_bytes().to_vec())
    }
}

/// Everything available right now.
pub(crate) fn drain(f: &mut Follower) -> Vec<Got> {
    let mut out = Vec::new();
    f.read_available(&mut |r| {
        out.push(got(&r));
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

pub(crate) fn got(r: &Record<'_>) -> Got {
    match r {
        Record::Line { bytes, .. } => Got::Line(bytes.to_vec()),
        Record::TooLong { len, .. } => Got::TooLong(*len),
    }
}

pub(crate) fn lines(v: &[&str]) -> Vec<Got> {
    v.iter().map(|s| Got::line(s)).collect()
}

/// Reads and waits (on the follower's own wake-ups) until `n` records arrived or `limit` passed.
pub(crate) fn collect_n(f: &mut Follower, n: usize, limit: Duration) -> Vec<Got> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    loop {
        f.read_available(&mut |r| {
            out.push(got(&r));
            ControlFlow::Continue(())
        })
        .unwrap();
        let now = Instant::now();
        if out.len() >= n || now >= deadline {
            return out;
        }
        f.wait(Some(deadline - now)).unwrap();
    }
}

pub(crate) fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

pub(crate) fn appender(path: &Path) -> File {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub(crate) fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Like `assert_eq!` on record lists, but reports the first difference instead of both lists.
#[track_caller]
pub(crate) fn assert_records(got: &[Got], want: &[Got]) {
    if got == want {
        return;
    }
    let i = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    let show = |v: &[Got]| -> Vec<String> {
        v.iter()
            .skip(i.saturating_sub(2))
            .take(5)
            .map(|g| match g {
                Got::Line(b) => format!("{:?}", String::from_utf8_lossy(b)),
                Got::TooLong(n) => format!("<too long {n}>"),
            })
            .collect()
    };
    panic!(
        "records differ at index {i} (got {} records, want {}):\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}
