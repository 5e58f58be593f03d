//! Benchmark of host-wide mode (`--state-root`) with the real binary: 1 000 containers'
//! start-up time, memory, threads, idle CPU and the latency of a line in a random container;
//! then dns throughput with 10 containers' query logs replayed at once.
//!
//! Run with `cargo bench -p shield-watch-cli --bench host` (or `cargo xtask bench`), as root
//! (the nflog thread, as in production; without root it says so and the rest runs).
//! Knobs: `SHIELD_BENCH_CONTAINERS` (default 1000), `SHIELD_BENCH_SAMPLES` (latency samples,
//! default 500), `SHIELD_BENCH_IDLE_SECS` (default 60), `SHIELD_BENCH_DNS_QUERIES` (lookups per
//! container's log, default 100000).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift64*): the same "random" containers every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// What a [`Watch`] does with stdout.
enum Stdout {
    /// Read by the bench, line by line, from the ready line on.
    Lines(BufReader<ChildStdout>),
    /// Read from the start on a thread (as a pipeline's next stage does), which sends the time
    /// the given number of lines had come out.
    Counted(mpsc::Receiver<Instant>),
}

/// A running shield-watch (shield-lab's driver, which reads its stderr on a thread of its own
/// from the spawn on: a thousand containers say a line or two each before the ready line, more
/// than a pipe holds).
struct Watch {
    process: shield_lab::Watch,
    stdout: Stdout,
    /// From spawn to the ready line.
    ready_after: Duration,
}

impl Watch {
    /// Starts shield-watch on `root` and waits for its ready line; stdout is read from then on
    /// (`count: None`), or from the start until `count` lines came out.
    fn start(root: &Path, args: &[&str], count: Option<usize>) -> Watch {
        let started = Instant::now();
        let mut command = Command::new(common::binary());
        command.arg("--state-root").arg(root).args(args);
        let mut process = shield_lab::Watch::spawn(command).unwrap_or_else(|e| panic!("{e}"));
        let stdout = BufReader::new(process.take_stdout().expect("stdout"));
        let stdout = match count {
            None => Stdout::Lines(stdout),
            Some(n) => {
                let (done_tx, done_rx) = mpsc::channel();
                std::thread::spawn(move || {
                    let mut lines = stdout.lines();
                    for _ in 0..n {
                        lines.next().expect("stdout ended early").unwrap();
                    }
                    let _ = done_tx.send(Instant::now());
                    lines.for_each(drop);
                });
                Stdout::Counted(done_rx)
            }
        };
        process
            .wait_ready(started + Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        Watch {
            process,
            stdout,
            ready_after: started.elapsed(),
        }
    }

    /// When the counted lines had all come out.
    fn counted(&self) -> Instant {
        match &self.stdout {
            Stdout::Counted(done) => done
                .recv_timeout(Duration::from_secs(600))
                .expect("not every event came out"),
            Stdout::Lines(_) => panic!("stdout is not counted"),
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `VmRSS` and `VmHWM` in kB.
    fn memory(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn threads(&self) -> usize {
        fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .count()
    }

    fn descriptors(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// utime + stime, in clock ticks, of every thread so far.
    fn cpu_ticks(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// CPU time run so far by each thread (name, ns), from `/proc/PID/task/*/schedstat`.
    fn cpu_by_thread(&self) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for task in fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .flatten()
        {
            let read = |f: &str| fs::read_to_string(task.path().join(f)).unwrap_or_default();
            let ns: u64 = read("schedstat")
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *by.entry(read("comm").trim().to_string()).or_default() += ns;
        }
        by
    }

    fn read_line(&mut self, buf: &mut String) -> bool {
        buf.clear();
        match &mut self.stdout {
            Stdout::Lines(stdout) => stdout.read_line(buf).unwrap() > 0,
            Stdout::Counted(_) => panic!("stdout is counted"),
        }
    }

    /// Kills and reaps it.
    fn stop(self) {
        drop(self.process);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn container_dir(root: &Path, i: usize) -> PathBuf {
    root.join("containers").join(format!("task-{i:04}"))
}

/// A state root with `n` containers of tier `lookup` (an audit log each, as terok-shield leaves
/// it after setting a container up).
fn lookup_root(root: &Path, n: usize) {
    for i in 0..n {
        let dir = container_dir(root, i);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "lookup\n").unwrap();
        fs::write(
            dir.join("audit.jsonl"),
            format!(
                "{{\"ts\":\"2026-03-31T12:00:00+00:00\",\"container\":\"task-{i:04}\",\"action\":\"setup\",\"detail\":\"dns_tier=lookup\"}}\n"
            ),
        )
        .unwrap();
    }
}

fn thousand_containers(base: &Path) {
    let n = env_or("SHIELD_BENCH_CONTAINERS", 1000);
    let samples = env_or("SHIELD_BENCH_SAMPLES", 500);
    let idle_secs = env_or("SHIELD_BENCH_IDLE_SECS", 60) as u64;
    let root = base.join("thousand");
    lookup_root(&root, n);

    let mut watch = Watch::start(&root, &[], None);
    let (rss, hwm) = watch.memory();
    println!(
        "{n} containers: ready {:?} after spawn; {} threads, {} descriptors; VmRSS {:.1} MB, VmHWM {:.1} MB",
        watch.ready_after,
        watch.threads(),
        watch.descriptors(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    // Idle: nobody writes; every thread should sleep in the kernel.
    let before = watch.cpu_ticks();
    let before_ns = watch.cpu_by_thread().values().sum::<u64>();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let idle = watch.cpu_ticks() - before;
    let idle_ns = watch.cpu_by_thread().values().sum::<u64>() - before_ns;
    println!(
        "idle over {idle_secs} s: {idle} clock ticks (utime+stime, every thread), {:.3} ms run time (schedstat)",
        idle_ns as f64 / 1e6
    );

    // Latency: one line at a time into a random container's audit log, until its event is on
    // stdout.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut times = Vec::with_capacity(samples);
    let mut out = String::new();
    let cpu_before = watch.cpu_by_thread();
    for s in 0..samples {
        let i = rng.below(n);
        let line = format!(
            "{{\"ts\":\"2026-03-31T12:00:01+00:00\",\"action\":\"denied\",\"dest\":\"198.51.100.7\",\"port\":443,\"detail\":\"sample {s}\"}}\n"
        );
        let marker = format!("\"detail\":\"sample {s}\"");
        let mut file = OpenOptions::new()
            .append(true)
            .open(container_dir(&root, i).join("audit.jsonl"))
            .unwrap();
        let sent = Instant::now();
        file.write_all(line.as_bytes()).unwrap();
        loop {
            assert!(watch.read_line(&mut out), "stdout ended");
            if out.contains(&marker) {
                break;
            }
        }
        times.push(sent.elapsed());
        assert!(
            out.contains(&format!("\"container\":\"task-{i:04}\"")),
            "{out}"
        );
    }
    times.sort();
    let cpu: Vec<String> = watch
        .cpu_by_thread()
        .into_iter()
        .map(|(thread, ns)| {
            let per_line = (ns - cpu_before.get(&thread).copied().unwrap_or(0)) / samples as u64;
            format!("{thread} {:.1} µs", per_line as f64 / 1e3)
        })
        .collect();
    println!("CPU per line, by thread: {}", cpu.join(", "));
    let (rss, hwm) = watch.memory();
    println!(
        "latency append -> stdout, {samples} lines in random containers of {n}: p50 {:?}, p99 {:?}, max {:?}; then VmRSS {:.1} MB, VmHWM {:.1} MB, {} threads",
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[samples - 1],
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        watch.threads()
    );
    watch.stop();

    // Start-up with history: every container's audit log replayed with --from-start.
    let history = 20;
    for i in 0..n {
        let mut file = OpenOptions::new()
            .append(true)
            .open(container_dir(&root, i).join("audit.jsonl"))
            .unwrap();
        let mut lines = String::new();
        for h in 0..history {
            lines.push_str(&format!(
                "{{\"ts\":\"2026-03-31T12:00:02+00:00\",\"action\":\"denied\",\"dest\":\"198.51.100.{h}\",\"port\":443}}\n"
            ));
        }
        file.write_all(lines.as_bytes()).unwrap();
    }
    // Each log: the setup line, the latency samples written there, the history.
    let expected = n * (1 + history) + samples;
    let started = Instant::now();
    let watch = Watch::start(&root, &["--from-start"], Some(expected));
    let all = watch.counted() - started;
    let (rss, hwm) = watch.memory();
    println!(
        "{n} containers with --from-start ({expected} lines of history): ready {:?} after spawn, every line out after {all:?}; VmRSS {:.1} MB, VmHWM {:.1} MB",
        watch.ready_after,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    watch.stop();
}

/// One container's query log: `queries` lookups as dnsmasq logs them (query, forwarded, reply),
/// 30 % of them outside the allow-list. Returns (log, blocked queries).
fn query_log(container: usize, queries: usize) -> (Vec<u8>, usize) {
    let mut log = Vec::with_capacity(queries * 3 * 80);
    let mut blocked = 0;
    for i in 0..queries {
        let qtype = if i % 2 == 0 { "A" } else { "AAAA" };
        let name = if i % 10 < 3 {
            blocked += 1;
            format!("host{}.blocked{}.example", i % 1000, (i + container) % 7)
        } else if i % 10 < 6 {
            format!("api{}.allowed.example", i % 100)
        } else {
            format!("img{}.cdn.example", i % 100)
        };
        let n = i % 250;
        let pid = 100 + container;
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[{pid}]: query[{qtype}] {name} from 127.0.0.1"
        )
        .unwrap();
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[{pid}]: forwarded {name} to 127.0.0.2#5353"
        )
        .unwrap();
        writeln!(
            log,
            "Mar 31 12:00:00 dnsmasq[{pid}]: reply {name} is 203.0.113.{n}"
        )
        .unwrap();
    }
    (log, blocked)
}

fn dns_throughput(base: &Path) {
    let containers = 10;
    let queries = env_or("SHIELD_BENCH_DNS_QUERIES", 100_000);
    let root = base.join("dns");
    let mut logs = Vec::new();
    let mut blocked = 0;
    for c in 0..containers {
        let dir = container_dir(&root, c);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "dnsmasq-live\n").unwrap();
        fs::write(
            dir.join("profile.domains"),
            "allowed.example\n*.cdn.example\n",
        )
        .unwrap();
        fs::write(dir.join("live.domains"), "").unwrap();
        fs::write(dir.join("denied.domains"), "").unwrap();
        let (log, b) = query_log(c, queries);
        blocked += b;
        logs.push(log);
    }
    let lines = containers * queries * 3;
    let bytes: usize = logs.iter().map(Vec::len).sum();

    // (1) Replayed from the start: every log already written when shield-watch starts.
    for (c, log) in logs.iter().enumerate() {
        fs::write(container_dir(&root, c).join("dnsmasq.log"), log).unwrap();
    }
    let started = Instant::now();
    let watch = Watch::start(&root, &["--from-start", "--source", "dns"], Some(blocked));
    let elapsed = watch.counted() - started;
    let (_, hwm) = watch.memory();
    println!(
        "dns, {containers} containers' logs replayed with --from-start: {lines} lines ({:.1} MB, {blocked} blocked queries) in {elapsed:?}: {:.2} M lines/s, {:.1} MB/s; VmHWM {:.1} MB",
        bytes as f64 / 1e6,
        lines as f64 / elapsed.as_secs_f64() / 1e6,
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        hwm as f64 / 1024.0
    );
    watch.stop();

    // (2) Appended while running: one writer per container appends its log in 64 KiB writes
    // (whole lines), all at once.
    for c in 0..containers {
        File::create(container_dir(&root, c).join("dnsmasq.log")).unwrap();
    }
    let watch = Watch::start(&root, &["--source", "dns"], Some(blocked));
    let started = Instant::now();
    let writers: Vec<_> = logs
        .into_iter()
        .enumerate()
        .map(|(c, log)| {
            let path = container_dir(&root, c).join("dnsmasq.log");
            std::thread::spawn(move || {
                let mut file = OpenOptions::new().append(true).open(path).unwrap();
                let mut rest = &log[..];
                while !rest.is_empty() {
                    let mut cut = rest.len().min(64 * 1024);
                    while rest[cut - 1] != b'\n' {
                        cut -= 1;
                    }
                    file.write_all(&rest[..cut]).unwrap();
                    rest = &rest[cut..];
                }
            })
        })
        .collect();
    let elapsed = watch.counted() - started;
    for w in writers {
        w.join().unwrap();
    }
    let (_, hwm) = watch.memory();
    println!(
        "dns, {containers} containers appending at once while running: {lines} lines ({:.1} MB) in {elapsed:?}: {:.2} M lines/s, {:.1} MB/s; VmHWM {:.1} MB",
        bytes as f64 / 1e6,
        lines as f64 / elapsed.as_secs_f64() / 1e6,
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        hwm as f64 / 1024.0
    );
    watch.stop();
}

fn main() {
    let base = tempfile::Builder::new()
        .prefix("shield-watch-host-bench-")
        .tempdir()
        .unwrap();
    thousand_containers(base.path());
    dns_throughput(base.path());
}
