//! Benchmarks of the follower: write-to-yield latency, throughput of a large file, idle CPU;
//! and the same latency and idle CPU for a `FollowSet` of 1 000 files.
//!
//! Run: `cargo bench -p shield-tail --bench follow`. Knobs (environment):
//! `SHIELD_TAIL_BENCH_LINES` (latency samples, default 10000), `SHIELD_TAIL_BENCH_MB` (size of
//! the throughput file, default 256), `SHIELD_TAIL_BENCH_IDLE_SECS` (idle window, default 60),
//! `SHIELD_TAIL_BENCH_SET_FILES` (files in the set, default 1000),
//! `SHIELD_TAIL_BENCH_SET_IDLE_SECS` (the set's idle window, default 10).

use std::fs::OpenOptions;
use std::io::Write;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use shield_tail::{FollowSet, Follower, Key, Options, Record, Start};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A writer thread appends one line per write(2) carrying the time it was written; the
/// follower (this thread) waits on inotify and measures when each line is yielded.
fn latency() {
    let n = env("SHIELD_TAIL_BENCH_LINES", 10_000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lat.log");
    let mut f = Follower::open(&path, Start::End, Options::default()).unwrap();
    let base = Instant::now();
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut w = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            for _ in 0..n {
                let line = format!(
                    "{:020} some padding to look like a log line\n",
                    base.elapsed().as_nanos()
                );
                w.write_all(line.as_bytes()).unwrap();
                // Spaced out, so each line is its own wake-up rather than a batch.
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let mut lat = Vec::with_capacity(n);
    while lat.len() < n {
        f.wait(Some(Duration::from_secs(5))).unwrap();
        f.read_available(&mut |r| {
            if let Record::Line { bytes, .. } = r {
                lat.push(since_written(bytes, base));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    }
    writer.join().unwrap();
    lat.sort();
    println!(
        "latency write(2) -> line yielded, {n} lines, writer thread, inotify: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
}

/// Follows a large file from its beginning: bytes delivered as complete lines per second.
fn throughput() {
    let mb = env("SHIELD_TAIL_BENCH_MB", 256);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    {
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).unwrap());
        let line = b"Mar 31 12:00:00 dnsmasq[123]: 4711 127.0.0.1/53124 query[A] some.host.example.test from 127.0.0.1\n";
        let mut written = 0u64;
        while written < mb << 20 {
            w.write_all(line).unwrap();
            written += line.len() as u64;
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let mut best = Duration::MAX;
    let mut lines = 0u64;
    for _ in 0..3 {
        let mut f = Follower::open(&path, Start::Beginning, Options::default()).unwrap();
        let mut count = 0u64;
        let mut sum = 0u64;
        let t = Instant::now();
        f.read_available(&mut |r| {
            if let Record::Line { bytes, .. } = r {
                count += 1;
                sum += bytes.len() as u64;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        let el = t.elapsed();
        assert!(sum > 0);
        best = best.min(el);
        lines = count;
    }
    println!(
        "throughput, {:.0} MiB file in page cache, {lines} lines: {:.2} GB/s ({:.1} M lines/s), best of 3",
        size as f64 / (1 << 20) as f64,
        size as f64 / best.as_secs_f64() / 1e9,
        lines as f64 / best.as_secs_f64() / 1e6
    );
}

/// CPU used by a follower of a file nobody writes to.
fn idle(force_poll: bool, secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idle.log");
    std::fs::write(&path, b"x\n").unwrap();
    let opts = Options {
        force_poll,
        ..Options::default()
    };
    let mut f = Follower::open(&path, Start::End, opts).unwrap();
    f.read_available(&mut |_| ControlFlow::Continue(()))
        .unwrap();
    let window = Duration::from_secs(secs);
    let before = cpu_time();
    let t = Instant::now();
    let mut wakeups = 0u64;
    while t.elapsed() < window {
        f.wait(Some(window - t.elapsed())).unwrap();
        f.read_available(&mut |_| ControlFlow::Continue(()))
            .unwrap();
        wakeups += 1;
    }
    let used = cpu_time() - before;
    let hz = rustix::param::clock_ticks_per_second().max(1) as f64;
    println!(
        "idle {secs} s, {}: CPU {:?} ({:.1} ticks at {hz} Hz), wait() returned {wakeups} times",
        if force_poll {
            "stat-poll fallback (50 ms)"
        } else {
            "inotify"
        },
        used,
        used.as_secs_f64() * hz
    );
}

/// Raises the soft limit of open descriptors to the hard one (as shield-watch does at start):
/// the set's files and the writer's descriptors on them do not fit under 1 024.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            ..lim
        },
    );
}

/// This process's resident set size, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `files` paths in one `FollowSet`, two per directory as host-wide mode has them
/// (`audit.jsonl` and `dnsmasq.log` of each container), each with one line already.
fn thousand(dir: &std::path::Path, files: usize) -> (FollowSet, Vec<std::path::PathBuf>) {
    let mut paths = Vec::new();
    for i in 0..files {
        let d = dir.join(format!("c{:04}", i / 2));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(if i % 2 == 0 {
            "audit.jsonl"
        } else {
            "dnsmasq.log"
        });
        std::fs::write(&p, b"already there\n").unwrap();
        paths.push(p);
    }
    let rss = rss_kib();
    let t = Instant::now();
    let mut set = FollowSet::new(Options::default());
    for p in &paths {
        set.add(p, Start::End).unwrap();
    }
    println!(
        "set of {files} files: added in {:?}, RSS +{} KiB, inotify: {}",
        t.elapsed(),
        rss_kib().saturating_sub(rss),
        set.uses_inotify()
    );
    (set, paths)
}

/// A writer thread appends one line per `write(2)`, every 200 µs, to a file picked at random
/// among the set's; this thread waits on the set and stamps each line as it is yielded.
fn set_latency() {
    let n = env("SHIELD_TAIL_BENCH_LINES", 10_000) as usize;
    let files = env("SHIELD_TAIL_BENCH_SET_FILES", 1000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let (mut set, paths) = thousand(dir.path(), files);
    let base = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w: Vec<_> = paths
            .iter()
            .map(|p| OpenOptions::new().append(true).open(p).unwrap())
            .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % w.len() as u64) as usize;
            let line = format!(
                "{:020} some padding to look like a log line\n",
                base.elapsed().as_nanos()
            );
            w[i].write_all(line.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let mut lat = Vec::with_capacity(n);
    let mut ready: Vec<Key> = Vec::new();
    let mut wakes = 0u64;
    while lat.len() < n {
        set.wait(Some(Duration::from_secs(5)), &mut ready).unwrap();
        wakes += 1;
        for &key in &ready {
            let f = set.follower(key).unwrap();
            f.read_available(&mut |r| {
                if let Record::Line { bytes, .. } = r {
                    lat.push(since_written(bytes, base));
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        }
    }
    writer.join().unwrap();
    lat.sort();
    println!(
        "latency write(2) -> line yielded, set of {files} files, {n} lines to random files, {wakes} wakes: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
}

/// CPU used by a set of 1 000 followed files nobody writes to.
fn set_idle(secs: u64) {
    let files = env("SHIELD_TAIL_BENCH_SET_FILES", 1000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let (mut set, _paths) = thousand(dir.path(), files);
    let mut ready = Vec::new();
    let window = Duration::from_secs(secs);
    let before = cpu_time();
    let t = Instant::now();
    let mut wakeups = 0u64;
    while t.elapsed() < window {
        set.wait(Some(window.saturating_sub(t.elapsed())), &mut ready)
            .unwrap();
        for &key in &ready {
            set.follower(key)
                .unwrap()
                .read_available(&mut |_| ControlFlow::Continue(()))
                .unwrap();
        }
        wakeups += 1;
    }
    let used = cpu_time() - before;
    let hz = rustix::param::clock_ticks_per_second().max(1) as f64;
    println!(
        "idle {secs} s, set of {files} files, inotify: CPU {:?} ({:.1} ticks at {hz} Hz), wait() returned {wakeups} times",
        used,
        used.as_secs_f64() * hz
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with no flag: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        std::env::set_var("SHIELD_TAIL_BENCH_LINES", "200");
        std::env::set_var("SHIELD_TAIL_BENCH_MB", "4");
    }
    latency();
    throughput();
    let secs = if quick {
        1
    } else {
        env("SHIELD_TAIL_BENCH_IDLE_SECS", 60)
    };
    idle(false, secs);
    idle(true, secs.min(10));
    raise_fd_limit();
    set_latency();
    set_idle(if quick {
        1
    } else {
        env("SHIELD_TAIL_BENCH_SET_IDLE_SECS", 10)
    });
}

/// How long ago a line was written: it starts with the nanoseconds since `base` at its write,
/// in 20 digits.
fn since_written(line: &[u8], base: Instant) -> Duration {
    let now = base.elapsed().as_nanos() as u64;
    let sent: u64 = std::str::from_utf8(&line[..20]).unwrap().parse().unwrap();
    Duration::from_nanos(now - sent)
}
