//! Benchmark of `History` with `since` near the end of a large history: ten files (the five
//! oldest gzip-compressed, as logrotate's `compress` leaves them), against `zcat -f | grep -c`
//! over the same files. Wall time and peak RSS of each, measured in a child process so that
//! generating the files does not count.
//!
//! Run: `cargo bench -p shield-tail --bench history`. Knobs (environment):
//! `SHIELD_HISTORY_BENCH_MB` (total uncompressed size, default 2048),
//! `SHIELD_HISTORY_BENCH_DIR` (where the files go; kept and reused when it already holds
//! them, default a temporary directory removed afterwards).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use shield_tail::{History, Options, Window};

const FILES: usize = 10;
const COMPRESSED: usize = 5;
/// The first line's time; lines are 1/32 s apart.
const T0: i64 = 1_700_000_000;
const PER_SECOND: u64 = 32;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `1700000123 query[A] host-....example.com from 10.0.0.2`: the leading number is the time.
fn time_of(line: &[u8]) -> Option<i64> {
    let end = memchr_space(line)?;
    std::str::from_utf8(&line[..end]).ok()?.parse().ok()
}

fn memchr_space(line: &[u8]) -> Option<usize> {
    line.iter().position(|&b| b == b' ')
}

fn name(age: usize) -> String {
    match age {
        0 => "app.log".to_string(),
        a if a > FILES - 1 - COMPRESSED => format!("app.log.{a}.gz"),
        a => format!("app.log.{a}"),
    }
}

/// Writes the history (unless `dir` holds it already); returns the last line's time.
fn generate(dir: &Path, total: u64) -> i64 {
    let per_file = total / FILES as u64;
    let mut i: u64 = 0;
    let mut last = T0;
    let done = dir.join("complete");
    for k in 0..FILES {
        let age = FILES - 1 - k;
        let path = dir.join(name(age));
        let mut written = 0u64;
        let mut out: Box<dyn Write> = if done.exists() {
            Box::new(std::io::sink())
        } else if path.to_string_lossy().ends_with(".gz") {
            Box::new(flate2::write::GzEncoder::new(
                BufWriter::with_capacity(1 << 20, File::create(&path).unwrap()),
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(BufWriter::with_capacity(
                1 << 20,
                File::create(&path).unwrap(),
            ))
        };
        let mut line = String::new();
        while written < per_file {
            use std::fmt::Write as _;
            line.clear();
            last = T0 + (i / PER_SECOND) as i64;
            writeln!(
                line,
                "{last} dnsmasq[4242]: query[A] host-{}.cdn{}.example.com from 10.0.0.{}",
                i % 100_003,
                i % 17,
                i % 250
            )
            .unwrap();
            out.write_all(line.as_bytes()).unwrap();
            written += line.len() as u64;
            i += 1;
        }
        out.flush().unwrap();
        drop(out);
        if !done.exists() {
            // Oldest first: what History orders by (logrotate keeps it on compression).
            let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(last as u64);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
    }
    fs::write(&done, format!("{last}\n")).unwrap();
    last
}

fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs the child on one window; prints and returns the lines it counted.
fn measure(dir: &Path, since: i64, last: i64) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(
            "SHIELD_HISTORY_BENCH_CHILD",
            format!("{}\n{since}", dir.display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.lines();
    let fields: Vec<u64> = it
        .next()
        .unwrap()
        .split(' ')
        .map(|f| f.parse().unwrap())
        .collect();
    println!(
        "History::read since the last {} s: {} lines, {} ms, peak RSS {} MiB\n  {}",
        last - since + 1,
        fields[0],
        fields[1],
        fields[2] >> 10,
        it.next().unwrap()
    );
    fields[0]
}

/// Runs `script` under `/usr/bin/time`; prints and returns the count it printed.
fn shell(what: &str, script: &str) -> u64 {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "sh", "-c", script])
        .output()
        .unwrap();
    let wall = t.elapsed();
    let count: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let peak: u64 = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    println!(
        "{what}: {count} lines, {} ms, peak RSS of the largest process {} MiB",
        wall.as_millis(),
        peak >> 10
    );
    count
}

/// The child: one History read, timed; prints `lines wall_ms peak_kib` and the stats.
fn child(dir: &Path, since: i64) {
    let t = Instant::now();
    let mut h = History::open(dir.join("app.log"), &Options::default()).unwrap();
    let mut n = 0u64;
    h.read(
        Window {
            since: Some(since),
            until: None,
        },
        time_of,
        |_| {
            n += 1;
            true
        },
    )
    .unwrap();
    let wall = t.elapsed();
    println!("{n} {} {}", wall.as_millis(), peak_rss_kib());
    println!("{:?}", h.stats());
}

fn main() {
    if let Ok(spec) = std::env::var("SHIELD_HISTORY_BENCH_CHILD") {
        let (dir, since) = spec.split_once('\n').unwrap();
        child(Path::new(dir), since.parse().unwrap());
        return;
    }
    let mb = env("SHIELD_HISTORY_BENCH_MB", 2048);
    let (tmp, dir): (Option<tempfile::TempDir>, PathBuf) =
        match std::env::var_os("SHIELD_HISTORY_BENCH_DIR") {
            Some(d) => {
                fs::create_dir_all(&d).unwrap();
                (None, PathBuf::from(d))
            }
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
    let t = Instant::now();
    let last = generate(&dir, mb << 20);
    let on_disk: u64 = (0..FILES)
        .map(|a| fs::metadata(dir.join(name(a))).unwrap().len())
        .sum();
    println!(
        "history: {mb} MiB of lines in {FILES} files ({COMPRESSED} gzip), {} MiB on disk, \
         ready in {:.1?}",
        on_disk >> 20,
        t.elapsed()
    );
    // The last 100 s (3 200 lines): a prefix grep can count them too.
    let since = last - last % 100;
    let files: Vec<String> = (0..FILES).rev().map(name).collect();
    let history = measure(&dir, since, last);
    let prefix = &since.to_string()[..8];
    let script = format!(
        "cd '{}' && zcat -f {} | grep -c '^{prefix}'",
        dir.display(),
        files.join(" ")
    );
    let grep = shell("zcat -f | grep -c", &script);
    assert_eq!(grep, history, "History and grep disagree");
    // Windows that start far back: in the middle (the first uncompressed file) and at a
    // quarter (inside the third compressed file), against a full scan that compares times.
    for fraction in [2, 4] {
        let since = T0 + (last - T0) / fraction;
        let history = measure(&dir, since, last);
        let script = format!(
            "cd '{}' && zcat -f {} | awk -v s={since} '$1 >= s {{ n++ }} END {{ print n }}'",
            dir.display(),
            files.join(" ")
        );
        let awk = shell("zcat -f | awk '$1 >= since'", &script);
        assert_eq!(awk, history, "History and awk disagree");
    }
    drop(tmp);
}
