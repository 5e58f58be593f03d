//! One named test per hard case of `docs/CONTRACT.md` §5, each against real files in a temp dir.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use shield_tail::{Cursor, CursorFile, Follower, Options, Start};

use crate::{append, appender, collect_n, drain, lines, Got};

const LIMIT: Duration = Duration::from_secs(10);

fn opts() -> Options {
    Options::default()
}

#[test]
fn wait_wakes_on_append_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let mut f = Follower::open(&p, Start::End, opts()).unwrap();
    assert!(f.uses_inotify());
    let writer = {
        let p = p.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            append(&p, b"hello\n");
        })
    };
    let t = Instant::now();
    let got = collect_n(&mut f, 1, Duration::from_secs(60));
    // The deadline is 60 s: only an inotify wake-up returns this early.
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(got, lines(&["hello"]));
    writer.join().unwrap();
    // Nothing changes any more: once the events of that append (modify, close-write) are
    // consumed, wait times out instead of waking again and again.
    let quiet = (0..5).any(|_| {
        let t = Instant::now();
        f.wait(Some(Duration::from_millis(200))).unwrap();
        t.elapsed() >= Duration::from_millis(200)
    });
    assert!(quiet, "wait kept returning early with nothing changing");
}

#[test]
fn partial_last_line_is_held_until_finished() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    append(&p, b"one\ntw");
    assert_eq!(drain(&mut f), lines(&["one"]));
    assert_eq!(drain(&mut f), vec![]);
    append(&p, b"o\n");
    assert_eq!(drain(&mut f), lines(&["two"]));
}

#[test]
fn old_file_appends_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dnsmasq.log");
    let mut old = appender(&p);
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    old.write_all(b"a\n").unwrap();
    assert_eq!(drain(&mut f), lines(&["a"]));
    fs::rename(&p, dir.path().join("dnsmasq.log.1")).unwrap();
    fs::File::create(&p).unwrap(); // logrotate `create`: new empty file, daemon not told yet
    old.write_all(b"b\n").unwrap();
    assert_eq!(collect_n(&mut f, 1, LIMIT), lines(&["b"]));
    old.write_all(b"c\n").unwrap();
    // The daemon reopens (SIGUSR2) and writes to the new file.
    let mut new = appender(&p);
    new.write_all(b"d\n").unwrap();
    assert_eq!(collect_n(&mut f, 2, LIMIT), lines(&["c", "d"]));
    assert_eq!(f.stats().rotations, 1);
    // The old file is no longer read once the new one has content.
    assert_eq!(
        f.cursor().to_string().split(':').nth(2),
        Some(&*fs::metadata(&p).unwrap().ino().to_string())
    );
}

#[test]
fn unterminated_last_line_at_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, b"a\npart");
    // No rotate-wait: the old file is finished the moment the follower moves on.
    let opts = Options {
        rotate_wait: Duration::ZERO,
        ..opts()
    };
    let mut f = Follower::open(&p, Start::Beginning, opts).unwrap();
    assert_eq!(drain(&mut f), lines(&["a"]));
    fs::rename(&p, dir.path().join("a.log.1")).unwrap();
    assert_eq!(
        drain(&mut f),
        vec![],
        "not known to be rotated away yet: the writer may finish it"
    );
    fs::File::create(&p).unwrap();
    assert_eq!(drain(&mut f), vec![]);
    append(&p, b"next\n");
    // Delivered once, on its own, never glued to the new file's first line.
    assert_eq!(collect_n(&mut f, 2, LIMIT), lines(&["part", "next"]));
    assert_eq!(drain(&mut f), vec![]);
}

#[test]
fn copytruncate_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, b"line one\nline two\n");
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["line one", "line two"]));
    fs::copy(&p, dir.path().join("a.log.1")).unwrap();
    truncate(&p);
    append(&p, b"x\n");
    assert_eq!(collect_n(&mut f, 1, LIMIT), lines(&["x"]));
    assert_eq!(f.stats().truncations, 1);
}

#[test]
fn copytruncate_recovers_unread_lines_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let mut w = appender(&p);
    w.write_all(b"a\n").unwrap();
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["a"]));
    // Written, not read yet, then copied away and truncated (logrotate copytruncate).
    w.write_all(b"b\nc\npar").unwrap();
    fs::copy(&p, dir.path().join("a.log.1")).unwrap();
    truncate(&p);
    w.write_all(b"d\n").unwrap();
    assert_eq!(drain(&mut f), lines(&["b", "c", "par", "d"]));
    assert_eq!(f.stats().truncations, 1);
    // An older copy is never read again: the next truncation finds nothing newer to recover.
    w.write_all(b"e\n").unwrap();
    assert_eq!(drain(&mut f), lines(&["e"]));
    truncate(&p);
    w.write_all(b"f\n").unwrap();
    assert_eq!(drain(&mut f), lines(&["f"]));
}

#[test]
fn truncate_then_regrow() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, b"first\nsecond\n");
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["first", "second"]));
    // Truncated and regrown past our offset (13) before we look: reading on at 13 would
    // start mid-line in the new content.
    truncate(&p);
    append(&p, b"a much longer first line\nnew\n");
    assert_eq!(drain(&mut f), lines(&["a much longer first line", "new"]));
    assert_eq!(f.stats().truncations, 1);
    // Same size and the same byte before the offset: the fingerprint tells them apart.
    truncate(&p);
    append(&p, b"A MUCH LONGER FIRST LINE\nnew\n");
    assert_eq!(drain(&mut f), lines(&["A MUCH LONGER FIRST LINE", "new"]));
    assert_eq!(f.stats().truncations, 2);
}

#[test]
fn restart_between_halves_of_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let cursors = dir.path().join("cursors");
    append(&p, b"a\nhal");
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["a"]));
    assert_eq!(f.cursor().offset(), 2);
    CursorFile::save(&cursors, &BTreeMap::from([("log".to_string(), f.cursor())])).unwrap();
    drop(f);
    append(&p, b"f\nb\n");
    let c = CursorFile::load(&cursors).unwrap()["log"];
    let mut f = Follower::open(&p, Start::Cursor(c), opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["half", "b"]));
}

#[test]
fn rotation_while_down_with_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dnsmasq.log");
    let mut w = appender(&p);
    w.write_all(b"a\n").unwrap();
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["a"]));
    let c = f.cursor();
    drop(f);
    // While we are down: more lines, a rotation, lines in the new file.
    w.write_all(b"b\nc").unwrap();
    fs::rename(&p, dir.path().join("dnsmasq.log.1")).unwrap();
    w.write_all(b"\n").unwrap();
    let mut w = appender(&p);
    w.write_all(b"d\n").unwrap();
    let mut f = Follower::open(&p, Start::Cursor(c), opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["b", "c", "d"]));
    let c = f.cursor();
    drop(f);
    // Two rotations while down, logrotate numbering: .1 -> .2, log -> .1, twice.
    w.write_all(b"e\n").unwrap();
    let rotate = || {
        for k in (1..4).rev() {
            let from = dir.path().join(format!("dnsmasq.log.{k}"));
            if from.exists() {
                fs::rename(&from, dir.path().join(format!("dnsmasq.log.{}", k + 1))).unwrap();
            }
        }
        fs::rename(&p, dir.path().join("dnsmasq.log.1")).unwrap();
    };
    rotate();
    let mut w = appender(&p);
    w.write_all(b"f\n").unwrap();
    rotate();
    let mut w2 = appender(&p);
    w2.write_all(b"g\n").unwrap();
    drop(w);
    let mut f = Follower::open(&p, Start::Cursor(c), opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["e", "f", "g"]));
    assert_eq!(f.stats().rotations, 2);
}

/// A cursor saved by a version without birth times (`v1`) names a file by device and inode
/// only. When the file is deleted and its inode number re-used by a new file that is at least
/// as long as the old offset, only the fingerprint of the first bytes tells them apart: the new
/// file must be read from its start, not from the old offset (mid-line).
#[test]
fn inode_reuse_does_not_inherit_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let old = b"the old file's first line\nsecond\n";
    let new = b"new content, longer than the old offset\nz\n";
    append(&p, old);
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f).len(), 2);
    let c = f.cursor();
    drop(f);
    // v2:DEV:INO:BIRTH:OFFSET:FPLEN:FPHASH
    let text = c.to_string();
    let v2: Vec<&str> = text.split(':').collect();
    assert_eq!((v2[0], v2.len()), ("v2", 7), "{text}");
    assert_eq!(v2[4], old.len().to_string(), "the offset field: {text}");
    fs::remove_file(&p).unwrap();
    // ext4 and tmpfs hand a freed inode number to the next file; try a few times to get it.
    let old_ino: u64 = v2[2].parse().unwrap();
    for i in 0..50 {
        append(&p, new);
        if fs::metadata(&p).unwrap().ino() == old_ino || i == 49 {
            break;
        }
        fs::remove_file(&p).unwrap();
    }
    // The old offset falls inside the new file's first line: resuming there would be wrong.
    assert!(new.len() as u64 > c.offset() && new[c.offset() as usize - 1] != b'\n');
    // The cursor as a v1 writer saved it (v1:DEV:INO:OFFSET:FPLEN:FPHASH), naming the new
    // file's inode: the re-used one, or, without a real re-use, the same situation forged.
    let ino = fs::metadata(&p).unwrap().ino();
    let v1: Cursor = format!("v1:{}:{ino}:{}:{}:{}", v2[1], v2[4], v2[5], v2[6])
        .parse()
        .unwrap();
    assert_eq!(v1.offset(), c.offset());
    let mut f = Follower::open(&p, Start::Cursor(v1), opts()).unwrap();
    assert_eq!(
        drain(&mut f),
        lines(&["new content, longer than the old offset", "z"])
    );
    // Recognised at resume as another file, not taken for the old one truncated and regrown.
    assert_eq!(f.stats().truncations, 0, "{:?}", f.stats());
    // The same v1 cursor on the file it was taken in resumes exactly at its offset.
    fs::remove_file(&p).unwrap();
    append(&p, old);
    append(&p, b"third\n");
    let ino = fs::metadata(&p).unwrap().ino();
    let same: Cursor = format!("v1:{}:{ino}:{}:{}:{}", v2[1], v2[4], v2[5], v2[6])
        .parse()
        .unwrap();
    let mut f = Follower::open(&p, Start::Cursor(same), opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["third"]));
}

#[test]
fn identical_first_lines_are_both_read_fully() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let header = b"# same header line that both files start with\n";
    append(&p, header);
    append(&p, b"one\n");
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f).len(), 2);
    fs::rename(&p, dir.path().join("a.log.1")).unwrap();
    append(&p, header);
    append(&p, b"two\n");
    let h = std::str::from_utf8(&header[..header.len() - 1]).unwrap();
    assert_eq!(drain(&mut f), lines(&[h, "two"]));
    // And after a restart with the same content at the same offset in a different file.
    let c = f.cursor();
    drop(f);
    fs::rename(&p, dir.path().join("a.log.1")).unwrap();
    append(&p, header);
    append(&p, b"two\n");
    let mut f = Follower::open(&p, Start::Cursor(c), opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&[h, "two"]));
}

#[test]
fn one_mib_line_under_64kib_cap_not_re_emitted_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let big = vec![b'x'; 1 << 20];
    append(&p, b"before\n");
    append(&p, &big[..600_000]);
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["before"]));
    // Restart in the middle of the long line: it is re-scanned from its start, reported once.
    let c = f.cursor();
    assert_eq!(c.offset(), 7);
    drop(f);
    append(&p, &big[600_000..]);
    append(&p, b"\nafter\n");
    let mut f = Follower::open(&p, Start::Cursor(c), opts()).unwrap();
    assert_eq!(
        drain(&mut f),
        vec![Got::TooLong(1 << 20), Got::line("after")]
    );
    assert_eq!(f.stats().too_long, 1);
    // Restart right after it: not reported again.
    let mut end_of_long = None;
    let mut f2 = Follower::open(&p, Start::Cursor(c), opts()).unwrap();
    f2.read_available(&mut |r| {
        if let shield_tail::Record::TooLong { end, .. } = r {
            end_of_long = Some(end);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    let mut f3 = Follower::open(&p, Start::Cursor(end_of_long.unwrap()), opts()).unwrap();
    assert_eq!(drain(&mut f3), lines(&["after"]));
    // The memory held stays bounded by the cap, not the line.
    append(&p, &vec![b'y'; 3 << 20]);
    append(&p, b"\n");
    assert_eq!(drain(&mut f), vec![Got::TooLong(3 << 20)]);
}

#[test]
fn deleted_then_recreated_later() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, b"a\n");
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["a"]));
    fs::remove_file(&p).unwrap();
    assert_eq!(drain(&mut f), vec![]);
    let t = std::thread::spawn({
        let p = p.clone();
        move || {
            std::thread::sleep(Duration::from_millis(100));
            append(&p, b"b\n");
        }
    });
    assert_eq!(collect_n(&mut f, 1, LIMIT), lines(&["b"]));
    t.join().unwrap();
    assert_eq!(f.stats().rotations, 1);
}

#[test]
fn directory_appearing_late() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state/deeper/a.log");
    let mut f = Follower::open(&p, Start::End, opts()).unwrap();
    assert_eq!(drain(&mut f), vec![]);
    let t = std::thread::spawn({
        let p = p.clone();
        move || {
            std::thread::sleep(Duration::from_millis(100));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            // Content written before the follower looks is new: it did not exist at open.
            append(&p, b"first\n");
        }
    });
    let t0 = Instant::now();
    assert_eq!(
        collect_n(&mut f, 1, Duration::from_secs(60)),
        lines(&["first"])
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    t.join().unwrap();
}

#[test]
fn nul_and_invalid_utf8_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let mut f = Follower::open(&p, Start::End, opts()).unwrap();
    append(&p, b"\0\xff\xc3(\r\n\n");
    assert_eq!(
        drain(&mut f),
        vec![Got::Line(b"\0\xff\xc3(\r".to_vec()), Got::Line(vec![])]
    );
}

#[test]
fn poll_fallback_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let o = Options {
        force_poll: true,
        poll_interval: Duration::from_millis(5),
        ..Options::default()
    };
    let mut f = Follower::open(&p, Start::End, o).unwrap();
    assert!(!f.uses_inotify());
    const N: usize = 3000;
    let writer = {
        let dir = dir.path().to_path_buf();
        let p = p.clone();
        std::thread::spawn(move || {
            let mut w = appender(&p);
            for i in 0..N {
                if i % 1000 == 999 {
                    // rename-rotation, the writer moves over after a few more lines
                    fs::rename(&p, dir.join(format!("a.log.{i}"))).unwrap();
                    w.write_all(format!("{i}\n").as_bytes()).unwrap();
                    w = appender(&p);
                    continue;
                }
                w.write_all(format!("{i}\n").as_bytes()).unwrap();
                if i % 200 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    let got = collect_n(&mut f, N, Duration::from_secs(60));
    writer.join().unwrap();
    let want: Vec<Got> = (0..N).map(|i| Got::line(&i.to_string())).collect();
    crate::assert_records(&got, &want);
}

/// The kernel queue (`max_queued_events`, 16 384 by default) filled with events the follower
/// does not care about (other files in its directory) while it is not reading, then the
/// followed file written: its events are dropped, only `IN_Q_OVERFLOW` is queued. The follower
/// learns of the lines only through the overflow, so `wait` must treat an overflow as "look
/// at everything": it returns long before its deadline, counts the overflow, and the lines
/// are there.
#[test]
fn inotify_queue_overflow_still_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let others = [dir.path().join("other1"), dir.path().join("other2")];
    let mut w = appender(&p);
    let mut o = others.each_ref().map(|p| appender(p));
    let mut f = Follower::open(&p, Start::End, opts()).unwrap();
    assert!(f.uses_inotify());
    assert_eq!(drain(&mut f), vec![]);
    let max_q: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // One event each (IN_MODIFY on the directory, a name the follower ignores); alternating
    // names defeat the kernel's merging of an event identical to the last one queued.
    for i in 0..max_q + 100 {
        o[i % 2].write_all(b"x\n").unwrap();
    }
    // The queue is full: these writes' events are lost.
    const N: usize = 100;
    for i in 0..N {
        w.write_all(format!("{i}\n").as_bytes()).unwrap();
    }
    let t = Instant::now();
    f.wait(Some(Duration::from_secs(30))).unwrap();
    // Only the overflow can have woken it this early: no event about a.log was queued.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(f.stats().overflows, 1, "{:?}", f.stats());
    let want: Vec<Got> = (0..N).map(|i| Got::line(&i.to_string())).collect();
    crate::assert_records(&drain(&mut f), &want);
    // And it keeps working afterwards, on ordinary events.
    w.write_all(b"after\n").unwrap();
    let t = Instant::now();
    f.wait(Some(Duration::from_secs(30))).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(drain(&mut f), lines(&["after"]));
    assert_eq!(f.stats().overflows, 1);
}

/// A file deleted and re-created while the follower was down can get the same inode number and
/// the same first bytes (the model test found `Delete, Line(""), Delete, Restart, Line("")`
/// losing the second line). Its birth time still differs, and the cursor records it.
#[test]
fn recreated_file_with_same_inode_and_bytes_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, b"same\n");
    let mut f = Follower::open(&p, Start::Beginning, opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["same"]));
    let cursor = f.cursor();
    let text = cursor.to_string();
    let fields: Vec<&str> = text.split(':').collect();
    assert_eq!(fields[0], "v2");
    let birth: u64 = fields[3].parse().unwrap();
    // What this test is about needs a birth time: without one it would prove nothing, so it
    // fails rather than pass (ext4, xfs and btrfs record one; run it with TMPDIR on one).
    assert_ne!(
        birth,
        0,
        "{} records no birth time (statx btime): this test needs a filesystem that does",
        dir.path().display()
    );
    assert_eq!(
        Some(birth),
        fs::metadata(&p)
            .unwrap()
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64),
        "the cursor carries the file's statx birth time"
    );
    drop(f);
    // The same file: resuming reads nothing again.
    let mut again = Follower::open(&p, Start::Cursor(cursor), opts()).unwrap();
    assert_eq!(drain(&mut again), lines(&[]));
    drop(again);
    // The same inode, offset and fingerprint but another birth time: a different file that
    // happens to look the same, read from its start.
    let mut other = fields.clone();
    let older = (birth - 1).to_string();
    other[3] = &older;
    let recreated: shield_tail::Cursor = other.join(":").parse().unwrap();
    let mut f = Follower::open(&p, Start::Cursor(recreated), opts()).unwrap();
    assert_eq!(drain(&mut f), lines(&["same"]));
}

/// Truncates the file in place, as copytruncate does.
fn truncate(p: &std::path::Path) {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(0)
        .unwrap();
}
