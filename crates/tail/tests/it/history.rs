//! `History` over what the real logrotate leaves behind (`compress`, `delaycompress`, `dateext`,
//! the numbered default), over damaged and vanishing files, and against a reference model: a
//! window over every line sorted by time.
//!
//! Lines carry their time in their text (`T000123 ...`; a line starting with `-` has none), so
//! what a window must return is known exactly. logrotate keeps a compressed file's modification
//! time, which is how `History` orders files; the writes of one rotation period are 20 ms apart
//! from the next so that no two files share a tick of the kernel's coarse clock.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use shield_tail::{Compression, Follower, History, HistoryLine, Options, Start, Window};

use crate::{append, collect_n, lines};

/// `T000123 ...` is 123; anything else has no time.
fn time_of(line: &[u8]) -> Option<i64> {
    let digits = line.strip_prefix(b"T")?.get(..6)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn timed(t: i64, pad: usize) -> String {
    format!("T{t:06} {}", "p".repeat(pad))
}

fn read(h: &mut History, window: Window) -> Vec<String> {
    let mut out = Vec::new();
    h.read(window, time_of, |l: HistoryLine<'_>| {
        out.push(String::from_utf8_lossy(l.bytes).into_owned());
        true
    })
    .unwrap();
    out
}

fn last(h: &mut History, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    h.last(
        n,
        time_of,
        |_, _| true,
        |l| {
            out.push(String::from_utf8_lossy(l.bytes).into_owned());
            true
        },
    )
    .unwrap();
    out
}

fn logrotate(dir: &Path, log: &Path, body: &str) {
    shield_lab::Logrotate::new(dir, &[log], body)
        .and_then(|rotate| rotate.run())
        .expect("the history tests need the real logrotate (cargo xtask ci installs it)");
}

/// Writes `periods` periods of `per` lines (times 10 apart, every 7th line untimed), rotating
/// with `body` after each but the last; returns every line in order.
fn rotated_history(
    dir: &Path,
    body: &str,
    periods: usize,
    per: usize,
    between: impl Fn(usize),
) -> Vec<String> {
    let log = dir.join("app.log");
    let mut all = Vec::new();
    let mut t = 1000;
    for p in 0..periods {
        let mut text = String::new();
        for i in 0..per {
            let line = if i % 7 == 3 {
                format!("- untimed {p} {i}")
            } else {
                t += 10;
                // Varied padding: compressed files are not tiny, and lines differ in length.
                timed(t, (t as usize * 7919) % 300)
            };
            text.push_str(&line);
            text.push('\n');
            all.push(line);
        }
        append(&log, text.as_bytes());
        std::thread::sleep(Duration::from_millis(20));
        if p + 1 < periods {
            between(p);
            logrotate(dir, &log, body);
        }
    }
    all
}

/// The reference: lines whose time (their own, else the timed line's before them, else the
/// first timed line's) is in the window, stopping at the first timed line after `until`.
fn reference(all: &[String], w: Window) -> Vec<String> {
    let first = all.iter().find_map(|l| time_of(l.as_bytes()));
    let mut prev = None;
    let mut out = Vec::new();
    for l in all {
        let own = time_of(l.as_bytes());
        if let Some(t) = own {
            if w.until.is_some_and(|u| t > u) {
                break;
            }
            prev = Some(t);
        }
        let t = own.or(prev).or(first);
        if t.is_none_or(|t| w.since.is_none_or(|s| t >= s) && w.until.is_none_or(|u| t <= u)) {
            out.push(l.clone());
        }
    }
    out
}

fn names(h: &History) -> Vec<(String, Compression)> {
    h.files()
        .into_iter()
        .map(|f| (f.name.to_string_lossy().into_owned(), f.compression))
        .collect()
}

#[test]
fn history_after_logrotate_compress_delaycompress_returns_each_window_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let all = rotated_history(
        dir,
        "rotate 10\ncompress\ndelaycompress\nmissingok",
        6,
        2000,
        |_| {},
    );
    let log = dir.join("app.log");
    let mut h = History::open(&log, &Options::default()).unwrap();
    assert_eq!(
        names(&h),
        [
            ("app.log.5.gz".to_string(), Compression::Gzip),
            ("app.log.4.gz".into(), Compression::Gzip),
            ("app.log.3.gz".into(), Compression::Gzip),
            ("app.log.2.gz".into(), Compression::Gzip),
            ("app.log.1".into(), Compression::Plain),
            ("app.log".into(), Compression::Plain),
        ]
    );
    assert_eq!(read(&mut h, Window::default()), all);
    let max = all
        .iter()
        .filter_map(|l| time_of(l.as_bytes()))
        .max()
        .unwrap();
    for since in [
        0,
        1005,
        1010,
        1011,
        3000,
        3405,
        max - 500,
        max - 10,
        max,
        max + 1,
    ] {
        for until in [None, Some(since + 5), Some(since + 1000), Some(max)] {
            let w = Window {
                since: Some(since),
                until,
            };
            let mut h = History::open(&log, &Options::default()).unwrap();
            assert_eq!(read(&mut h, w), reference(&all, w), "{w:?}");
            assert!(h.take_notices().is_empty());
        }
    }
    // A window near the end decodes no compressed file whole and skips most files.
    let mut h = History::open(&log, &Options::default()).unwrap();
    let w = Window {
        since: Some(max - 100),
        until: None,
    };
    assert_eq!(read(&mut h, w), reference(&all, w));
    let stats = h.stats();
    let total: u64 = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("app.log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let plain: u64 = all.iter().map(|l| l.len() as u64 + 1).sum();
    assert!(stats.files_skipped >= 4, "{stats:?}");
    assert!(
        stats.bytes_read < total / 2,
        "{stats:?}, {total} bytes in all"
    );
    assert!(
        stats.bytes_decompressed < plain / 8,
        "{stats:?}, {plain} bytes uncompressed"
    );
    // The last lines, newest files first.
    let mut h = History::open(&log, &Options::default()).unwrap();
    assert_eq!(last(&mut h, 5), all[all.len() - 5..]);
    assert_eq!(last(&mut h, 3000), all[all.len() - 3000..]);
    assert_eq!(last(&mut h, 100_000), all);
}

#[test]
fn history_after_numbered_dateext_zstd_and_xz_rotation() {
    for body in [
        "rotate 10",
        "rotate 10\ncompress\ndateext\ndateformat -%Y%m%d-%s",
        "rotate 10\ncompress\ncompresscmd /usr/bin/zstd\ncompressext .zst",
        "rotate 10\ncompress\ndelaycompress\ncompresscmd /usr/bin/xz\ncompressext .xz",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let all = rotated_history(dir, body, 4, 300, |_| {
            if body.contains("dateext") {
                // One name per second: wait for the next one.
                let s = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                while SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    == s
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // logrotate names by time(2), which lags the fine clock by up to a tick.
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let log = dir.join("app.log");
        let mut h = History::open(&log, &Options::default()).unwrap();
        assert_eq!(h.files().len(), 4, "{body}: {:?}", names(&h));
        let kinds: Vec<Compression> = h.files().iter().map(|f| f.compression).collect();
        let want = if body.contains("zstd") {
            Compression::Zstd
        } else if body.contains("xz") {
            Compression::Xz
        } else if body.contains("compress") {
            Compression::Gzip
        } else {
            Compression::Plain
        };
        assert!(kinds[..2].iter().all(|k| *k == want), "{body}: {kinds:?}");
        assert_eq!(read(&mut h, Window::default()), all, "{body}");
        for since in [1000, 1500, 2500, 3400] {
            let w = Window {
                since: Some(since),
                until: None,
            };
            let mut h = History::open(&log, &Options::default()).unwrap();
            assert_eq!(read(&mut h, w), reference(&all, w), "{body} {w:?}");
        }
    }
}

#[test]
fn history_hands_over_to_the_follower_with_nothing_lost_or_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut all = rotated_history(dir, "rotate 3\ncompress", 3, 50, |_| {});
    let log = dir.join("app.log");
    // A line being written when history is read belongs to the follower.
    append(&log, b"T999990 half");
    let mut h = History::open(&log, &Options::default()).unwrap();
    assert_eq!(read(&mut h, Window::default()), all);
    append(&log, b" done\nT999991 after\n");
    let mut f = Follower::open(&log, h.live_end(), Options::default()).unwrap();
    assert_eq!(
        collect_n(&mut f, 2, Duration::from_secs(5)),
        lines(&["T999990 half done", "T999991 after"])
    );
    // Rotated between history and the follower: still exactly the rest.
    all.push("T999992 x".into());
    append(&log, b"T999992 x\n");
    let mut h = History::open(&log, &Options::default()).unwrap();
    assert_eq!(read(&mut h, Window::default()).last().unwrap(), "T999992 x");
    append(&log, b"T999993 y\n");
    logrotate(dir, &log, "rotate 3\ncompress\ndelaycompress");
    append(&log, b"T999994 z\n");
    let mut f = Follower::open(&log, h.live_end(), Options::default()).unwrap();
    assert_eq!(
        collect_n(&mut f, 2, Duration::from_secs(5)),
        lines(&["T999993 y", "T999994 z"])
    );
}

/// Replaces `path`'s content, keeping its modification time (the order of the history).
fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    write_at(path, &bytes, mtime);
}

#[test]
fn history_reads_a_damaged_gzip_up_to_the_damage_with_one_notice_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let all = rotated_history(dir, "rotate 10\ncompress", 4, 3000, |_| {});
    // Cut short (a disk full during compression): exactly a prefix of its lines.
    damage(&dir.join("app.log.2.gz"), |b| b.truncate(b.len() * 6 / 10));
    // Bits flipped: deflate cannot tell where damage starts, so what it decoded before it
    // failed (maybe garbage) is handed on; then the next file, whole.
    damage(&dir.join("app.log.1.gz"), |b| {
        let n = b.len();
        b[n / 2..n / 2 + 32].iter_mut().for_each(|x| *x ^= 0xa5);
    });
    let mut h = History::open(dir.join("app.log"), &Options::default()).unwrap();
    let got = read(&mut h, Window::default());
    let notices = h.take_notices();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices[0].contains("app.log.2.gz"), "{notices:?}");
    assert!(notices[1].contains("app.log.1.gz"), "{notices:?}");
    let (p3, p2, p1) = (&all[..3000], &all[3000..6000], &all[6000..9000]);
    assert_eq!(got[..3000], *p3);
    let k2 = got[3000..]
        .iter()
        .zip(p2)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(k2 > 100 && k2 < 3000, "{k2} lines of the truncated file");
    assert_eq!(
        got[3000 + k2],
        p1[0],
        "the truncated file's half line is dropped"
    );
    let k1 = got[3000 + k2..]
        .iter()
        .zip(p1)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        k1 > 100 && k1 < 3000,
        "{k1} intact lines of the flipped file"
    );
    assert_eq!(got[got.len() - 3000..], all[9000..]);
}

#[test]
fn history_skips_a_rotated_file_deleted_while_an_older_one_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let all = rotated_history(dir, "rotate 10\ncompress\ndelaycompress", 4, 100, |_| {});
    let mut h = History::open(dir.join("app.log"), &Options::default()).unwrap();
    let mut got = Vec::new();
    let doomed = dir.join("app.log.2.gz");
    h.read(Window::default(), time_of, |l| {
        if got.is_empty() {
            fs::remove_file(&doomed).unwrap();
        }
        got.push(String::from_utf8_lossy(l.bytes).into_owned());
        true
    })
    .unwrap();
    let notices = h.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("app.log.2.gz") && notices[0].contains("gone"));
    let mut want = all[..100].to_vec();
    want.extend_from_slice(&all[200..]);
    assert_eq!(got, want);
}

#[test]
fn history_never_follows_a_symlink_and_reads_a_missing_log_as_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = tmp.path().join("secret");
    fs::write(&secret, "T000001 secret\n").unwrap();
    fs::create_dir(dir.join("state")).unwrap();
    let log = dir.join("state/app.log");
    std::os::unix::fs::symlink(&secret, dir.join("state/app.log.1")).unwrap();
    fs::write(&log, "T000002 mine\n").unwrap();
    let mut h = History::open(&log, &Options::default()).unwrap();
    assert_eq!(read(&mut h, Window::default()), ["T000002 mine"]);
    let notices = h.take_notices();
    assert!(
        notices.len() == 1 && notices[0].contains("app.log.1"),
        "{notices:?}"
    );
    let mut h = History::open(dir.join("none/app.log"), &Options::default()).unwrap();
    assert!(read(&mut h, Window::default()).is_empty());
    assert!(matches!(h.live_end(), Start::Beginning));
}

// ---- the model ----

#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    Gzip,
    Zstd,
    Xz,
}

fn compress(kind: Kind, data: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Plain => data.to_vec(),
        Kind::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Kind::Zstd => {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        }
        Kind::Xz => {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut &data[..], &mut out).unwrap();
            out
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Plain),
        1 => Just(Kind::Gzip),
        1 => Just(Kind::Zstd),
        1 => Just(Kind::Xz),
    ]
}

/// Lines: (time step or untimed, padding).
fn history_lines() -> impl Strategy<Value = Vec<(Option<u8>, usize)>> {
    prop::collection::vec((prop::option::weighted(0.85, 0u8..4), 0usize..1500), 0..400)
}

fn cases() -> u32 {
    std::env::var("SHIELD_TAIL_HISTORY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Random lines cut into random files at random points, each rotated file compressed at
    /// random, and a random window: exactly the reference's lines, in order; the last N too.
    #[test]
    fn history_window_matches_the_reference(
        spec in history_lines(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        kinds in prop::collection::vec(kind(), 6),
        since in prop::option::of(0i64..700),
        span in prop::option::of(0i64..400),
        until_alone in prop::option::of(0i64..1100),
        partial in any::<bool>(),
        unterminated in prop::collection::vec(any::<bool>(), 6),
        n in 0usize..50,
    ) {
        let mut t = 0i64;
        let all: Vec<String> = spec
            .iter()
            .enumerate()
            .map(|(i, (step, pad))| match step {
                Some(s) => {
                    t += i64::from(*s);
                    timed(t, *pad)
                }
                None => format!("- {i} {}", "u".repeat(*pad)),
            })
            .collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(all.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(all.len());
        let files = bounds.len() - 1;
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (k, w) in bounds.windows(2).enumerate() {
            let mut text: Vec<u8> = all[w[0]..w[1]]
                .iter()
                .flat_map(|l| format!("{l}\n").into_bytes())
                .collect();
            let age = files - 1 - k;
            let (name, data) = if age == 0 {
                if partial {
                    text.extend_from_slice(b"T999999 unfinished");
                }
                ("app.log".to_string(), text)
            } else {
                // A rotated file's last line may lack its newline: it is still a line.
                if unterminated[age % unterminated.len()] {
                    text.pop();
                }
                let kind = kinds[age % kinds.len()];
                (format!("app.log.{age}"), compress(kind, &text))
            };
            let p = dir.join(&name);
            fs::write(&p, data).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(base + Duration::from_secs(k as u64))
                .unwrap();
        }
        let until = match since {
            Some(s) => span.map(|d| s + d),
            None => until_alone,
        };
        let w = Window { since, until };
        let mut h = History::open(dir.join("app.log"), &Options::default()).unwrap();
        prop_assert_eq!(read(&mut h, w), reference(&all, w));
        prop_assert!(h.take_notices().is_empty());
        prop_assert_eq!(last(&mut h, n), all[all.len().saturating_sub(n)..].to_vec());
        // The last N that pass a filter (odd lengths here), read from the end.
        let odd: Vec<String> = all.iter().filter(|l| l.len() % 2 == 1).cloned().collect();
        let mut got = Vec::new();
        h.last(n, time_of, |l, _| l.len() % 2 == 1, |l| {
            got.push(String::from_utf8_lossy(l.bytes).into_owned());
            true
        })
        .unwrap();
        prop_assert_eq!(got, odd[odd.len().saturating_sub(n)..].to_vec());
        let live_len = all[bounds[files - 1]..].iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        match h.live_end() {
            Start::Cursor(c) => prop_assert_eq!(c.offset(), live_len),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

#[test]
fn history_reader_peeks_without_taking_and_places_untimed_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("app.log");
    fs::write(tmp.path().join("app.log.1"), "- before any\nT000010 a\n").unwrap();
    fs::write(&log, "- after a\nT000020 b\n").unwrap();
    let mut h = History::open(&log, &Options::default()).unwrap();
    let mut r = h.reader(Window::default(), time_of);
    let seen = |l: Option<HistoryLine<'_>>| {
        l.map(|l| {
            (
                String::from_utf8_lossy(l.bytes).into_owned(),
                l.time,
                l.order_time,
                l.rotated,
            )
        })
    };
    // Lines before the first timed one stand at its time.
    let first = Some(("- before any".to_string(), None, Some(10), true));
    assert_eq!(seen(r.peek().unwrap()), first);
    assert_eq!(seen(r.peek().unwrap()), first);
    assert_eq!(seen(r.next_line().unwrap()), first);
    let a = Some(("T000010 a".to_string(), Some(10), Some(10), true));
    assert_eq!(seen(r.peek().unwrap()), a);
    assert_eq!(seen(r.next_line().unwrap()), a);
    let after = Some(("- after a".to_string(), None, Some(10), false));
    assert_eq!(seen(r.next_line().unwrap()), after);
    let b = Some(("T000020 b".to_string(), Some(20), Some(20), false));
    assert_eq!(seen(r.next_line().unwrap()), b);
    assert_eq!(seen(r.peek().unwrap()), None);
    assert_eq!(seen(r.next_line().unwrap()), None);
    drop(r);
    // And so are in a window that starts there.
    let mut r = h.reader(
        Window {
            since: Some(10),
            until: None,
        },
        time_of,
    );
    assert_eq!(seen(r.next_line().unwrap()), first);
}

#[test]
fn history_skips_an_unreadable_compressor_and_a_fifo_with_a_notice_each() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("app.log");
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (k, (name, data)) in [
        ("app.log.2", &b"T000001 two\n"[..]),
        ("app.log.1.bz2", b"BZh91AY&SY not read"),
    ]
    .iter()
    .enumerate()
    {
        fs::write(dir.join(name), data).unwrap();
        fs::File::options()
            .write(true)
            .open(dir.join(name))
            .unwrap()
            .set_modified(base + Duration::from_secs(k as u64))
            .unwrap();
    }
    // A FIFO at the live name: opened without blocking, refused as not a regular file.
    let ok = Command::new("mkfifo").arg(&log).status().unwrap();
    assert!(ok.success());
    let mut h = History::open(&log, &Options::default()).unwrap();
    assert!(matches!(h.live_end(), Start::Beginning) && h.live_cursor().is_none());
    assert_eq!(read(&mut h, Window::default()), ["T000001 two"]);
    let notices = h.take_notices();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices[0].contains("not a regular file"), "{notices:?}");
    assert!(notices[1].contains("bzip2"), "{notices:?}");
}

/// Writes `data` as `path`, last written at `mtime` (as logrotate leaves a compressed copy).
fn write_at(path: &Path, data: &[u8], mtime: SystemTime) {
    fs::write(path, data).unwrap();
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// logrotate's `delaycompress` compresses the file it rotated last time at its next rotation,
/// and removes it: a rotated file listed plain and compressed before it is read is read from
/// its compressed copy (same modification time), not skipped.
#[test]
fn a_rotated_file_compressed_after_the_listing_is_read_from_its_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("app.log");
    let (old, rotated) = (
        SystemTime::UNIX_EPOCH + Duration::new(1_000, 111),
        SystemTime::UNIX_EPOCH + Duration::new(2_000, 222),
    );
    write_at(
        &dir.join("app.log.2.gz"),
        &compress(Kind::Gzip, b"T000001 a\n"),
        old,
    );
    write_at(&dir.join("app.log.1"), b"T000002 b\nT000003 c\n", rotated);
    fs::write(&log, b"T000004 d\n").unwrap();
    let mut h = History::open(&log, &Options::default()).unwrap();
    // The next rotation, after the listing: .2.gz -> .3.gz, .1 compressed into .2.gz.
    fs::rename(dir.join("app.log.2.gz"), dir.join("app.log.3.gz")).unwrap();
    let copy = compress(Kind::Gzip, &fs::read(dir.join("app.log.1")).unwrap());
    write_at(&dir.join("app.log.2.gz"), &copy, rotated);
    fs::remove_file(dir.join("app.log.1")).unwrap();
    assert_eq!(
        read(&mut h, Window::default()),
        ["T000001 a", "T000002 b", "T000003 c", "T000004 d"]
    );
    assert!(h.take_notices().is_empty());
}

/// A file and the compressed copy logrotate is writing of it (the same modification time, to
/// the nanosecond) are met side by side by a listing: their lines are read once. So is a
/// compressed copy of the live file itself.
#[test]
fn a_file_and_its_compressed_copy_are_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("app.log");
    let rotated = SystemTime::UNIX_EPOCH + Duration::new(2_000, 222);
    write_at(&dir.join("app.log.1"), b"T000002 b\n", rotated);
    // Half written: not even its magic number yet.
    write_at(&dir.join("app.log.1.gz"), b"", rotated);
    fs::write(&log, b"T000004 d\n").unwrap();
    let live = fs::metadata(&log).unwrap().modified().unwrap();
    write_at(
        &dir.join("app.log.0.gz"),
        &compress(Kind::Gzip, b"T000004 d\n"),
        live,
    );
    let mut h = History::open(&log, &Options::default()).unwrap();
    assert_eq!(read(&mut h, Window::default()), ["T000002 b", "T000004 d"]);
}
