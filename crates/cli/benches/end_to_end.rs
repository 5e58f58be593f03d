//! Benchmark of the whole binary: latency from an audit line's `write(2)` to its JSON line on
//! shield-watch's stdout, and throughput of logs replayed with `--from-start`, timed from the
//! spawn of the binary to the last event read from its stdout.
//!
//! Run with `cargo bench -p shield-watch-cli --bench end_to_end` (or `cargo xtask bench`).
//! Named workloads, all by default, or only those named after `--`:
//!
//! - `latency`: isolated audit lines, one `write(2)` each, the next only after the previous
//!   came out (`SHIELD_BENCH_LINES` of them, default 2000);
//! - `audit`: 1 000 000 audit lines replayed;
//! - `dns`: a 3 000 000-line query log over few names and addresses (a warm cache);
//! - `dns-churn`: the flood of issue 13, a 900 000-line query log whose answers keep the
//!   domain cache churning (see [`dns_churn`]);
//! - `outputs`: the `audit` replay with each output beside stdout on (`--metrics-listen`,
//!   `--metrics-textfile`, `--output stdout,journal` to a datagram socket drained by the bench),
//!   against stdout alone.
//!
//! `SHIELD_BENCH_BINARY` runs another build of `shield-watch` (to compare two commits in the
//! same minute). `SHIELD_BENCH_RUNS` sets how often each throughput workload is replayed (default 5; every
//! run is printed, then the median). `SHIELD_BENCH_KEEP=1` keeps the generated state directory
//! and prints its path and the command line, to profile the binary on the same input.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{ChildStdout, Command};
use std::time::{Duration, Instant};

use shield_lab::Watch;

/// Starts shield-watch with shield-lab's driver, which reads its stderr from the spawn on; its
/// stdout is ours to read at once, as a pipe (the ready line may wait for stdout to drain: it
/// follows a flush of what the sources sent first).
fn start(state: &Path, extra: &[&str]) -> (Watch, BufReader<ChildStdout>) {
    let mut command = Command::new(common::binary());
    command
        .arg("--state-dir")
        .arg(state)
        .args(["--no-nflog", "-c", "bench"])
        .args(extra);
    let mut watch = Watch::spawn(command).unwrap_or_else(|e| panic!("{e}"));
    let stdout = BufReader::new(watch.take_stdout().expect("stdout"));
    (watch, stdout)
}

/// Starts shield-watch with `args` and times it from the spawn until `expected` lines came out.
fn replay(state: &Path, args: &[&str], expected: usize) -> Duration {
    let started = Instant::now();
    let (watch, mut stdout) = start(state, args);
    let mut count = 0usize;
    let mut buf = String::new();
    while count < expected {
        buf.clear();
        if stdout.read_line(&mut buf).unwrap() == 0 {
            break;
        }
        count += 1;
    }
    let elapsed = started.elapsed();
    // Killed and reaped.
    drop(watch);
    assert_eq!(count, expected);
    elapsed
}

/// Replays `runs` times; prints each run and returns the median.
fn replay_runs(state: &Path, args: &[&str], expected: usize, runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| replay(state, args, expected))
        .collect();
    let listed: Vec<String> = times.iter().map(|t| format!("{t:.3?}")).collect();
    println!("  runs: {}", listed.join(", "));
    times.sort();
    times[times.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The workloads named on the command line (none: all of them).
fn wanted(name: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|a| a == name)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runs = env_usize("SHIELD_BENCH_RUNS", 5);
    let dir = std::env::temp_dir().join(format!("shield-watch-bench-{}", std::process::id()));
    if wanted("latency") {
        latency(&dir.join("latency"), env_usize("SHIELD_BENCH_LINES", 2000));
    }
    if wanted("audit") {
        audit(&dir.join("audit"), runs);
    }
    if wanted("dns") {
        dns(&dir.join("dns"), runs);
    }
    if wanted("dns-churn") {
        dns_churn(&dir.join("dns-churn"), runs);
    }
    if wanted("outputs") {
        outputs(&dir.join("outputs"), runs);
    }
    if std::env::var_os("SHIELD_BENCH_KEEP").is_some() {
        println!("kept {}", dir.display());
    } else {
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// A state directory with `dns.tier` set to `tier`.
fn state_dir(dir: &Path, tier: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("dns.tier"), format!("{tier}\n")).unwrap();
}

/// Prints the command line that replays this workload, when the directory is kept.
fn say_command(dir: &Path, args: &[&str]) {
    if std::env::var_os("SHIELD_BENCH_KEEP").is_some() {
        println!(
            "  command: {} --state-dir {} --no-nflog -c bench {}",
            common::binary().display(),
            dir.display(),
            args.join(" ")
        );
    }
}

/// Latency: one isolated line at a time, the next written only after the previous came out.
fn latency(dir: &Path, n: usize) {
    state_dir(dir, "lookup");
    let (mut watch, mut stdout) = start(dir, &[]);
    watch
        .wait_ready(Instant::now() + Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut audit = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("audit.jsonl"))
        .unwrap();
    let mut samples = Vec::with_capacity(n);
    let mut out = String::new();
    for i in 0..n {
        let line = format!("{{\"ts\":\"{i}\",\"action\":\"denied\",\"dest\":\"192.0.2.1\"}}\n");
        let sent = Instant::now();
        audit.write_all(line.as_bytes()).unwrap();
        out.clear();
        stdout.read_line(&mut out).unwrap();
        samples.push(sent.elapsed());
        assert!(out.contains(&format!("\"ts\":\"{i}\"")), "{out}");
    }
    drop(watch);
    samples.sort();
    println!(
        "latency: write(2) -> stdout over {n} isolated audit lines: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[n - 1]
    );
}

/// Audit throughput: a large audit log replayed from the start.
fn audit(dir: &Path, runs: usize) {
    let (lines, big) = audit_log(dir);
    let args = ["--from-start"];
    say_command(dir, &args);
    let elapsed = replay_runs(dir, &args, lines, runs);
    println!(
        "audit: {lines} audit lines ({:.1} MB) parsed and written in {:?} (median): {:.2} M lines/s, {:.1} MB/s",
        big.len() as f64 / 1e6,
        elapsed,
        lines as f64 / elapsed.as_secs_f64() / 1e6,
        big.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );
}

/// The `audit` replay with each output beside stdout: what metrics and the journal cost.
fn outputs(dir: &Path, runs: usize) {
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let (lines, _) = audit_log(dir);
    // A stand-in for journald that reads as fast as it can and counts.
    let socket = dir.join("journal.socket");
    let sink = UnixDatagram::bind(&socket).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    {
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while sink.recv(&mut buf).is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let textfile = dir.join("shield-watch.prom");
    let (socket, textfile) = (socket.to_str().unwrap(), textfile.to_str().unwrap());
    let cases: [(&str, Vec<&str>); 4] = [
        ("stdout only", vec!["--from-start"]),
        (
            "+ --metrics-listen",
            vec!["--from-start", "--metrics-listen", "127.0.0.1:0"],
        ),
        (
            "+ --metrics-textfile",
            vec!["--from-start", "--metrics-textfile", textfile],
        ),
        (
            "+ --output stdout,journal",
            vec![
                "--from-start",
                "--output",
                "stdout,journal",
                "--journal-socket",
                socket,
            ],
        ),
    ];
    for (name, args) in cases {
        say_command(dir, &args);
        let before = received.load(Ordering::Relaxed);
        let elapsed = replay_runs(dir, &args, lines, runs);
        let delivered = received.load(Ordering::Relaxed) - before;
        let journal = if delivered > 0 {
            format!(
                " (journal: {:.0} % of the entries delivered, the rest dropped and counted)",
                delivered as f64 * 100.0 / (lines * runs.max(1)) as f64
            )
        } else {
            String::new()
        };
        println!(
            "outputs: {name}: {lines} audit events in {elapsed:?} (median): {:.2} M events/s{journal}",
            lines as f64 / elapsed.as_secs_f64() / 1e6,
        );
    }
}

/// The audit workload's log: 1 000 000 lines in `dir/audit.jsonl`; returns the count and bytes.
fn audit_log(dir: &Path) -> (usize, Vec<u8>) {
    state_dir(dir, "lookup");
    let lines = 1_000_000usize;
    let mut big = Vec::with_capacity(lines * 100);
    for i in 0..lines {
        writeln!(
            big,
            "{{\"ts\":\"2026-03-31T12:00:00+00:00\",\"container\":\"c{}\",\"action\":\"denied\",\"dest\":\"192.0.2.{}\",\"port\":443}}",
            i % 7,
            i % 250
        )
        .unwrap();
    }
    fs::write(dir.join("audit.jsonl"), &big).unwrap();
    (lines, big)
}

/// dns throughput over a warm cache: a query log with a realistic mix and few addresses. Every
/// query line is followed by forwarded and reply lines, as dnsmasq writes them; 30 % of the
/// queries are for names outside the allow-list and must come out as events.
fn dns(dir: &Path, runs: usize) {
    state_dir(dir, "dnsmasq-live");
    fs::write(
        dir.join("profile.domains"),
        "allowed.example\n*.cdn.example\n",
    )
    .unwrap();
    let queries = 1_000_000usize;
    let mut log = Vec::with_capacity(queries * 3 * 80);
    let mut blocked = 0usize;
    for i in 0..queries {
        let qtype = if i % 2 == 0 { "A" } else { "AAAA" };
        let name = if i % 10 < 3 {
            blocked += 1;
            format!("host{}.blocked{}.example", i % 1000, i % 7)
        } else if i % 10 < 6 {
            format!("api{}.allowed.example", i % 100)
        } else {
            format!("img{}.cdn.example", i % 100)
        };
        let n = i % 250;
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[123]: query[{qtype}] {name} from 127.0.0.1"
        )
        .unwrap();
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[123]: forwarded {name} to 127.0.0.2#5353"
        )
        .unwrap();
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[123]: reply {name} is 203.0.113.{n}"
        )
        .unwrap();
    }
    fs::write(dir.join("dnsmasq.log"), &log).unwrap();
    let args = ["--from-start", "--source", "dns"];
    say_command(dir, &args);
    let elapsed = replay_runs(dir, &args, blocked, runs);
    let lines = queries * 3;
    println!(
        "dns: {lines} query-log lines ({:.1} MB, {blocked} blocked queries) classified and written in {:?} (median): {:.2} M lines/s, {:.1} MB/s",
        log.len() as f64 / 1e6,
        elapsed,
        lines as f64 / elapsed.as_secs_f64() / 1e6,
        log.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );
}

/// The flood of issue 13, with a churning domain cache: 300 000 lookups, each `query`,
/// `forwarded` and `reply`; 30 % of the names outside a 5-domain allow-list (so about 90 000
/// `blocked_query` events); A or AAAA at random; every answer drawn from 65 536 random IPv4 and
/// 65 536 random IPv6 addresses, so the 131 072 addresses pass through the 65 536-entry cache
/// and most answers evict or change a mapping. Timed from the spawn to the last event.
fn dns_churn(dir: &Path, runs: usize) {
    const ALLOWED: [&str; 5] = [
        "github.com",
        "pypi.org",
        "crates.io",
        "debian.org",
        "example.com",
    ];
    const OUTSIDE: [&str; 5] = [
        "tracker.example.net",
        "ads.example.org",
        "exfil.example.info",
        "cdn.example.biz",
        "telemetry.example.dev",
    ];
    state_dir(dir, "dnsmasq-live");
    let list: String = ALLOWED.iter().map(|d| format!("{d}\n")).collect();
    fs::write(dir.join("profile.domains"), list).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let v4: Vec<Ipv4Addr> = (0..65_536)
        .map(|_| Ipv4Addr::from(rng.next() as u32))
        .collect();
    let v6: Vec<Ipv6Addr> = (0..65_536)
        .map(|_| Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())))
        .collect();
    let lookups = 300_000usize;
    let mut log = Vec::with_capacity(lookups * 3 * 80);
    let mut blocked = 0usize;
    for _ in 0..lookups {
        let host = rng.below(100_000);
        let name = if rng.below(10) < 3 {
            blocked += 1;
            format!("host{host}.{}", OUTSIDE[rng.below(5) as usize])
        } else {
            format!("host{host}.{}", ALLOWED[rng.below(5) as usize])
        };
        let (qtype, answer) = if rng.below(2) == 0 {
            ("A", IpAddr::V4(v4[rng.below(65_536) as usize]))
        } else {
            ("AAAA", IpAddr::V6(v6[rng.below(65_536) as usize]))
        };
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[123]: query[{qtype}] {name} from 10.0.2.100"
        )
        .unwrap();
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[123]: forwarded {name} to 10.0.2.3"
        )
        .unwrap();
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[123]: reply {name} is {answer}"
        )
        .unwrap();
    }
    fs::write(dir.join("dnsmasq.log"), &log).unwrap();
    let args = ["--from-start", "--source", "dns"];
    say_command(dir, &args);
    let elapsed = replay_runs(dir, &args, blocked, runs);
    let lines = lookups * 3;
    println!(
        "dns-churn: {lines} query-log lines ({:.1} MB, {blocked} blocked queries) classified and written in {:?} (median): {:.2} M lines/s, {:.1} MB/s",
        log.len() as f64 / 1e6,
        elapsed,
        lines as f64 / elapsed.as_secs_f64() / 1e6,
        log.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );
}
