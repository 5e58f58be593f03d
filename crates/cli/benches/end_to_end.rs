//! Benchmark of the whole binary: latency from an audit line's `write(2)` to its JSON line on
//! shield-watch's stdout, and throughput of a large audit log replayed with `--from-start`.
//!
//! Run with `cargo bench -p shield-watch-cli --bench end_to_end` (or `cargo xtask bench`).
//! `SHIELD_BENCH_LINES` sets the number of isolated lines for the latency part (default 2000).

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> PathBuf {
    // Benches are built in the release-like bench profile next to the binary of the same profile.
    let exe = std::env::current_exe().expect("bench path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("shield-watch");
    assert!(
        bin.is_file(),
        "build the binary first: cargo build --profile bench -p shield-watch-cli ({})",
        bin.display()
    );
    bin
}

fn start(state: &Path, extra: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(binary())
        .arg("--state-dir")
        .arg(state)
        .args(["--no-nflog", "-c", "bench"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shield-watch");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited before ready"
        );
        if line.starts_with("shield-watch: ready") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

/// Starts shield-watch with `args` and times it from start until `expected` lines came out.
fn replay(state: &Path, args: &[&str], expected: usize) -> Duration {
    let started = Instant::now();
    let (mut child, mut stdout) = start(state, args);
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
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(count, expected);
    elapsed
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let n: usize = std::env::var("SHIELD_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = std::env::temp_dir().join(format!("shield-watch-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("dns.tier"), "lookup\n").unwrap();

    // Latency: one isolated line at a time, the next written only after the previous came out.
    let (mut child, mut stdout) = start(&dir, &[]);
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
    child.kill().unwrap();
    child.wait().unwrap();
    samples.sort();
    println!(
        "latency write(2) -> stdout over {n} isolated audit lines: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[n - 1]
    );

    // Throughput: a large audit log replayed from the start into /dev/null-like reading.
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
    let elapsed = replay(&dir, &["--from-start"], lines);
    println!(
        "throughput: {lines} audit lines ({:.1} MB) parsed and written in {:?}: {:.0} lines/s, {:.1} MB/s",
        big.len() as f64 / 1e6,
        elapsed,
        lines as f64 / elapsed.as_secs_f64(),
        big.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );

    // dns throughput: a query log with a realistic mix replayed from the start. Every query line
    // is followed by forwarded and reply lines, as dnsmasq writes them; 30 % of the queries are
    // for names outside the allow-list and must come out as events.
    fs::write(dir.join("dns.tier"), "dnsmasq-live\n").unwrap();
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
    let elapsed = replay(&dir, &["--from-start", "--source", "dns"], blocked);
    let lines = queries * 3;
    println!(
        "dns: {lines} query-log lines ({:.1} MB, {blocked} blocked queries) classified and written in {:?}: {:.2} M lines/s, {:.1} MB/s",
        log.len() as f64 / 1e6,
        elapsed,
        lines as f64 / elapsed.as_secs_f64() / 1e6,
        log.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );
    fs::remove_dir_all(&dir).unwrap();
}
