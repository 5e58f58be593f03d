//! Model-based test: random writer/rotation/restart histories against a real file; the follower
//! must yield exactly the lines the model says were written, in order, each once.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use shield_tail::{Cursor, CursorFile, Follower, Options, Start};

use crate::{assert_records, got, Got};

const MAX_LINE: usize = 64;

#[derive(Clone, Debug)]
enum Op {
    /// The writer appends bytes and a `\n` (finishing a pending partial line, if any).
    Line(Vec<u8>),
    /// The writer appends bytes without a `\n`.
    Partial(Vec<u8>),
    /// logrotate without copytruncate: `.N` -> `.N+1`, then the file -> `.1` (writer keeps its fd).
    Rotate,
    /// logrotate `create`: an empty file at the path, the writer not told yet.
    Create,
    /// The writer reopens the path (SIGUSR2), creating it if needed.
    Reopen,
    /// logrotate `copytruncate`: copy to `.1`, truncate in place.
    CopyTruncate,
    /// The file is deleted; a writer on it re-creates it on its next write.
    Delete,
    /// The follower wakes and reads.
    Read,
    /// The follower saves its cursor and stops; it comes back before the next op that needs it.
    Restart,
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    // A tiny alphabet makes identical lines and identical file heads common; NUL and 0xff are
    // not text; now and then a line over the cap.
    prop_oneof![
        8 => prop::collection::vec(prop::sample::select(vec![b'a', b'b', b' ', 0u8, 0xff]), 0..8),
        1 => prop::collection::vec(Just(b'x'), MAX_LINE - 2..MAX_LINE + 40),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => bytes().prop_map(Op::Line),
        3 => bytes().prop_filter("non-empty", |b| !b.is_empty()).prop_map(Op::Partial),
        2 => Just(Op::Rotate),
        1 => Just(Op::Create),
        2 => Just(Op::Reopen),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::Delete),
        2 => Just(Op::Read),
        2 => Just(Op::Restart),
    ]
}

struct Harness {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    path: PathBuf,
    cursors: PathBuf,
    follower: Option<Follower>,
    writer: Option<(File, u64)>,
    got: Vec<Got>,
    /// Rotated-away cursor file: rotations while down are only in scope when the follower can
    /// find its file again (a deleted file's rest is gone with it).
    cursor_file_present: bool,
    // The model.
    want: Vec<Got>,
    partial: Vec<u8>,
    partial_ino: Option<u64>,
}

fn expect(line: Vec<u8>) -> Got {
    if line.len() > MAX_LINE {
        Got::TooLong(line.len() as u64)
    } else {
        Got::Line(line)
    }
}

fn ino_of(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.ino())
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dnsmasq.log");
        File::create(&path).unwrap();
        let follower = Follower::open(&path, Start::Beginning, opts()).unwrap();
        Harness {
            dir: dir.path().to_path_buf(),
            cursors: dir.path().join("cursors"),
            path,
            _dir: dir,
            follower: Some(follower),
            writer: None,
            got: Vec::new(),
            cursor_file_present: true,
            want: Vec::new(),
            partial: Vec::new(),
            partial_ino: None,
        }
    }

    fn up(&mut self) {
        if self.follower.is_none() {
            let c = CursorFile::load(&self.cursors).unwrap()["log"];
            self.follower = Some(Follower::open(&self.path, Start::Cursor(c), opts()).unwrap());
        }
    }

    fn sync(&mut self) {
        if let Some(f) = &mut self.follower {
            let got = &mut self.got;
            f.read_available(&mut |r| got.push(got_of(&r))).unwrap();
        }
    }

    fn write(&mut self, bytes: &[u8], newline: bool) {
        if self.writer.is_none() {
            let f = crate::appender(&self.path);
            let ino = f.metadata().unwrap().ino();
            self.writer = Some((f, ino));
        }
        let (f, ino) = self.writer.as_mut().unwrap();
        let ino = *ino;
        if !self.partial.is_empty() && self.partial_ino != Some(ino) {
            // The writer moved to another file: its unfinished line ends there.
            self.want.push(expect(std::mem::take(&mut self.partial)));
        }
        let mut data = bytes.to_vec();
        if newline {
            data.push(b'\n');
        }
        f.write_all(&data).unwrap();
        if newline {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(bytes);
            self.want.push(expect(line));
        } else {
            self.partial.extend_from_slice(bytes);
            self.partial_ino = Some(ino);
        }
    }

    fn writer_on_path(&self) -> bool {
        matches!((&self.writer, ino_of(&self.path)), (Some((_, w)), Some(p)) if *w == p)
    }

    fn shift_rotations(&self) {
        for k in (1..64).rev() {
            let from = self.dir.join(format!("dnsmasq.log.{k}"));
            if from.exists() {
                fs::rename(&from, self.dir.join(format!("dnsmasq.log.{}", k + 1))).unwrap();
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Line(b) => self.write(b, true),
            Op::Partial(b) => self.write(b, false),
            Op::Rotate => {
                // logrotate renames the file the daemon writes to (or nothing, if it is gone).
                if !self.writer_on_path() && self.path.exists() {
                    return;
                }
                if self.follower.is_none() && !self.cursor_file_present {
                    return;
                }
                self.sync();
                self.shift_rotations();
                if self.path.exists() {
                    fs::rename(&self.path, self.dir.join("dnsmasq.log.1")).unwrap();
                }
            }
            Op::Create => {
                if !self.path.exists() {
                    File::create(&self.path).unwrap();
                }
            }
            Op::Reopen => {
                let f = crate::appender(&self.path);
                let ino = f.metadata().unwrap().ino();
                self.writer = Some((f, ino));
            }
            Op::CopyTruncate => {
                if !self.writer_on_path() {
                    return;
                }
                self.up();
                // The follower finds what it had not read yet in the copy, provided it has
                // read some of this file (else nothing tells it the file was truncated).
                let c = self.follower.as_ref().unwrap().cursor();
                if !(Some(cursor_ino(c)) == ino_of(&self.path) && c.offset() > 0) {
                    self.sync();
                }
                self.shift_rotations();
                fs::copy(&self.path, self.dir.join("dnsmasq.log.1")).unwrap();
                fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                // The follower read the partial line; seeing the truncation, it delivers it.
                if !self.partial.is_empty() && self.partial_ino == ino_of(&self.path) {
                    self.want.push(expect(std::mem::take(&mut self.partial)));
                }
                self.sync();
            }
            Op::Delete => {
                if !self.path.exists() {
                    return;
                }
                self.up();
                self.sync();
                if self.writer_on_path() {
                    self.writer = None;
                }
                fs::remove_file(&self.path).unwrap();
            }
            Op::Read => {
                self.up();
                let f = self.follower.as_mut().unwrap();
                f.wait(Some(Duration::ZERO)).unwrap();
                self.sync();
            }
            Op::Restart => {
                if self.follower.is_none() {
                    return;
                }
                self.sync();
                let c = self.follower.take().unwrap().cursor();
                CursorFile::save(&self.cursors, &BTreeMap::from([("log".to_string(), c)])).unwrap();
                self.cursor_file_present = ino_in(&self.dir, cursor_ino(c));
                if self.partial_ino.is_some_and(|ino| !ino_in(&self.dir, ino)) {
                    // Its file was deleted and we let go of it: that unfinished line is gone.
                    self.partial.clear();
                }
            }
        }
    }

    fn finish(mut self) {
        self.up();
        self.sync();
        assert_records(&self.got, &self.want);
        let st = self.follower.as_ref().unwrap().stats();
        assert!(st.lines + st.too_long <= self.got.len() as u64);
    }
}

fn got_of(r: &shield_tail::Record<'_>) -> Got {
    got(r)
}

fn opts() -> Options {
    Options {
        max_line: MAX_LINE,
        ..Options::default()
    }
}

fn cursor_ino(c: Cursor) -> u64 {
    c.to_string().split(':').nth(2).unwrap().parse().unwrap()
}

fn ino_in(dir: &Path, ino: u64) -> bool {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("dnsmasq.log"))
        .any(|e| e.metadata().is_ok_and(|m| m.ino() == ino))
}

fn cases() -> u32 {
    std::env::var("SHIELD_TAIL_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn follower_yields_exactly_the_lines_written(ops in prop::collection::vec(op(), 1..48)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.finish();
    }
}

/// Histories that once failed, kept as plain tests (proptest's seed file also replays them).
#[test]
fn model_regressions() {
    use Op::*;
    let histories: Vec<Vec<Op>> = vec![
        vec![
            Line(vec![]),
            Rotate,
            Reopen,
            Rotate,
            Reopen,
            Rotate,
            Line(vec![]),
            Reopen,
            Line(vec![]),
        ],
        vec![
            Delete,
            Line(vec![]),
            Line(vec![]),
            Delete,
            Line(vec![b'a']),
            Rotate,
        ],
        vec![
            Delete,
            Create,
            Delete,
            Reopen,
            Rotate,
            Restart,
            Line(vec![]),
        ],
        vec![
            Line(vec![]),
            Rotate,
            Line(vec![]),
            Reopen,
            Line(vec![]),
            CopyTruncate,
        ],
    ];
    for ops in histories {
        eprintln!("history {ops:?}");
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.finish();
    }
}
