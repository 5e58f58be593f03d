//! Workload `nflog-flood`: the whole binary under a sustained NFLOG flood (needs root).
//!
//! One sender thread inside a namespace of the bench's own sends one-byte UDP datagrams, paced,
//! to TEST-NET addresses that a `counter log group 100 ... drop` rule matches. shield-watch reads
//! the group through `--netns`; its stdout is counted as it comes. When the stream has been
//! quiet for a while the bench reads the rule's counter (the truth), stops shield-watch with
//! SIGTERM and reports, of the matched packets: delivered (`nflog` events), reported lost (sum
//! of `extra.lost` of the `nflog_overrun` events) and unaccounted (the rest, neither shown nor
//! counted).
//!
//! Before the flood, workload `nflog-latency`: isolated packets, each timed from `sendto` to its
//! line on stdout (`SHIELD_FLOOD_LATENCY_SAMPLES`, default 500; 0 skips it).
//!
//! `cargo build --profile bench -p shield-watch-cli && cargo bench -p shield-watch-cli --bench
//! nflog_flood`. `SHIELD_FLOOD_PACKETS` (default 1 000 000) and `SHIELD_FLOOD_RATE` (packets/s,
//! default 200 000; 0 sends as fast as one thread can) change the workload; `SHIELD_FLOOD_RUNS`
//! repeats it (default 1); `SHIELD_FLOOD_ARGS` adds shield-watch arguments; `SHIELD_FLOOD_HOGS`
//! runs that many busy-looping threads while the flood is sent (a busy host);
//! `SHIELD_FLOOD_STALL=FROM..TO` stops shield-watch (SIGSTOP) while packets FROM to TO are sent
//! (a reader that stalls; `TO` at the end makes the flood end while it is stopped).
//! `SHIELD_FLOOD_MODE=host` runs the same flood host-wide: the namespace is a container under a
//! state root (`--state-root`), found through a dnsmasq started inside it as terok-shield starts
//! one (`--conf-file=ROOT/containers/bench/dnsmasq.conf`, its PID in `dnsmasq.pid`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdout, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use shield_lab::{Netns, Watch};

const RULESET: &str = r#"
table inet terok_shield {
    chain output {
        type filter hook output priority 0; policy accept;
        ip daddr 192.0.2.0/24 counter log group 100 prefix "TEROK_SHIELD_DENIED: " drop
    }
}
"#;

/// How long the stream must stay quiet after the flood before the bench counts.
const QUIET: Duration = Duration::from_secs(2);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// What came out on stdout so far, counted by a reader thread.
#[derive(Default)]
struct Stream {
    delivered: AtomicU64,
    lost: AtomicU64,
    overruns: AtomicU64,
    overruns_uncounted: AtomicU64,
    /// Bumped on every read: the bench waits until it stops moving.
    reads: AtomicU64,
}

impl Stream {
    fn line(&self, line: &[u8]) {
        if find(line, b"\"action\":\"nflog_overrun\"").is_some() {
            self.overruns.fetch_add(1, Ordering::Relaxed);
            match lost_of(line) {
                Some(n) => self.lost.fetch_add(n, Ordering::Relaxed),
                None => self.overruns_uncounted.fetch_add(1, Ordering::Relaxed),
            };
        } else if find(line, b"\"source\":\"nflog\"").is_some() {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn lost_of(line: &[u8]) -> Option<u64> {
    let key = b"\"lost\":\"";
    let start = find(line, key)? + key.len();
    let digits = line[start..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = 0u64;
    let mut any = false;
    for &d in digits {
        n = n * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(n)
}

/// Starts shield-watch (shield-lab's driver) and waits for its ready line.
fn start(ns: &Netns, state: &Path) -> Watch {
    let mut command = Command::new(common::binary());
    if host_wide() {
        command
            .arg("--state-root")
            .arg(state)
            .args(["--source", "nflog"]);
    } else {
        command
            .arg("--state-dir")
            .arg(state)
            .args(["--source", "nflog", "-c", "bench", "--netns"])
            .arg(ns.path());
    }
    command.args(extra_args());
    let mut watch = Watch::spawn(command).unwrap_or_else(|e| panic!("{e}"));
    watch
        .wait_ready(Instant::now() + Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    watch
}

/// `SHIELD_FLOOD_MODE=host`: host-wide (`--state-root`) instead of one container with `--netns`.
fn host_wide() -> bool {
    std::env::var("SHIELD_FLOOD_MODE").is_ok_and(|m| m == "host")
}

/// A state root with one container, `bench`, whose dnsmasq runs in `ns` as terok-shield starts
/// it; the dnsmasq is returned to be killed at the end.
fn host_root(ns: &Netns, root: &Path) -> Child {
    let dir = root.join("containers").join("bench");
    std::fs::create_dir_all(&dir).expect("container dir");
    std::fs::write(dir.join("dns.tier"), "dnsmasq-static\n").expect("dns.tier");
    let conf = dir.join("dnsmasq.conf");
    // No DNS service (port 0): only its namespace matters here.
    std::fs::write(&conf, "port=0\npid-file=\n").expect("dnsmasq.conf");
    let conf_arg = format!("--conf-file={}", conf.display());
    // Returns once the process is inside the namespace, so its PID is accepted.
    let child = ns
        .spawn(&["dnsmasq", "--keep-in-foreground", &conf_arg])
        .expect("start dnsmasq");
    std::fs::write(dir.join("dnsmasq.pid"), format!("{}\n", child.id())).expect("dnsmasq.pid");
    child
}

/// `SHIELD_FLOOD_ARGS`: more shield-watch arguments, split at spaces (e.g. `--nflog-buffer 1048576`).
fn extra_args() -> Vec<String> {
    std::env::var("SHIELD_FLOOD_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The rule's packet counter: every packet it matched, hence every packet it logged.
fn matched(ns: &Netns) -> u64 {
    let text = ns
        .exec_ok(&["nft", "list", "chain", "inet", "terok_shield", "output"])
        .expect("nft list chain");
    let at = text
        .find("counter packets ")
        .expect("counter in the ruleset")
        + 16;
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("counter value")
}

/// Sends `packets` one-byte datagrams at `rate` per second (0: unpaced) from inside `ns`;
/// returns how long sending took. With `stall`, process `pid` is stopped (SIGSTOP) while the
/// packets `stall.0..stall.1` are sent.
fn flood(ns: &Netns, packets: u64, rate: u64, pid: Pid, stall: Option<(u64, u64)>) -> Duration {
    let signal = move |signal| {
        let _ = kill_process(pid, signal);
    };
    ns.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
        let start = Instant::now();
        for i in 0..packets {
            match stall {
                Some((from, _)) if i == from => signal(Signal::STOP),
                Some((_, to)) if i == to => signal(Signal::CONT),
                _ => {}
            }
            if rate > 0 {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                while start.elapsed() < due {
                    std::hint::spin_loop();
                }
            }
            let dest = SocketAddr::from(([192, 0, 2, 1 + (i % 254) as u8], 9));
            // Dropped by the rule: EPERM is the expected answer, the packet was logged first.
            let _ = socket.send_to(b"x", dest);
        }
        if stall.is_some() {
            signal(Signal::CONT);
        }
        start.elapsed()
    })
    .expect("run_in")
}

fn run(packets: u64, rate: u64) {
    let ns = Netns::create("shflood").expect("ip netns add");
    ns.with_uplink().expect("uplink");
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(RULESET.as_bytes()).expect("write ruleset");
    ns.exec_ok(&["nft", "-f", file.path().to_str().unwrap()])
        .expect("nft -f");
    let state = tempfile::tempdir().expect("state dir");
    std::fs::write(state.path().join("dns.tier"), "lookup\n").expect("dns.tier");
    let mut dnsmasq = host_wide().then(|| host_root(&ns, state.path()));

    let mut watch = start(&ns, state.path());
    let pid = Pid::from_raw(i32::try_from(watch.pid()).unwrap()).unwrap();
    let stream = Arc::new(Stream::default());
    let mut stdout = BufReader::new(watch.take_stdout().expect("stdout"));
    let samples = env_or("SHIELD_FLOOD_LATENCY_SAMPLES", 500) as usize;
    if samples > 0 {
        latency(&ns, &mut stdout, samples);
    }
    let counter = Arc::clone(&stream);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut carry = Vec::new();
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            counter.reads.fetch_add(1, Ordering::Relaxed);
            let mut chunk = &buf[..n];
            while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
                if carry.is_empty() {
                    counter.line(&chunk[..nl]);
                } else {
                    carry.extend_from_slice(&chunk[..nl]);
                    counter.line(&carry);
                    carry.clear();
                }
                chunk = &chunk[nl + 1..];
            }
            carry.extend_from_slice(chunk);
        }
    });

    let hogging = Arc::new(AtomicBool::new(true));
    let hogs: Vec<_> = (0..env_or("SHIELD_FLOOD_HOGS", 0))
        .map(|_| {
            let hogging = Arc::clone(&hogging);
            std::thread::spawn(move || {
                while hogging.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let started = Instant::now();
    // SHIELD_FLOOD_STALL=FROM..TO: shield-watch is stopped while those packets are sent.
    let stall = std::env::var("SHIELD_FLOOD_STALL").ok().and_then(|v| {
        let (from, to) = v.split_once("..")?;
        Some((from.parse().ok()?, to.parse().ok()?))
    });
    let sending = flood(&ns, packets, rate, pid, stall);
    hogging.store(false, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    // Wait until the stream has been quiet for QUIET (bounded: the reader may be far behind).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = stream.reads.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = stream.reads.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= QUIET {
            break;
        }
    }
    let drained = started.elapsed() - QUIET.min(quiet_since.elapsed());
    let matched = matched(&ns);
    let cpu = thread_cpu(watch.pid());
    let (status, stderr) = watch
        .stop(Instant::now() + Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(dnsmasq) = dnsmasq.as_mut() {
        let _ = dnsmasq.kill();
        let _ = dnsmasq.wait();
    }
    reader.join().unwrap();
    let summary = stderr
        .iter()
        .find(|l| l.starts_with("shield-watch: summary:"))
        .map_or("(no summary)", String::as_str)
        .to_string();

    let delivered = stream.delivered.load(Ordering::Relaxed);
    let lost = stream.lost.load(Ordering::Relaxed);
    let unaccounted = matched as i64 - delivered as i64 - lost as i64;
    let pct = |n: f64| 100.0 * n / matched.max(1) as f64;
    println!(
        "nflog-flood: {packets} packets at {} pkt/s: sent in {sending:.2?} ({:.0} pkt/s), drained after {drained:.2?}",
        if rate == 0 { "full speed".to_string() } else { rate.to_string() },
        packets as f64 / sending.as_secs_f64(),
    );
    println!(
        "  matched (nft counter) {matched}; delivered {delivered} ({:.2} %); reported lost {lost} ({:.2} %) in {} nflog_overrun events ({} without a count); unaccounted {unaccounted} ({:.3} %)",
        pct(delivered as f64),
        pct(lost as f64),
        stream.overruns.load(Ordering::Relaxed),
        stream.overruns_uncounted.load(Ordering::Relaxed),
        pct(unaccounted as f64),
    );
    let per_packet = |ticks: u64| ticks as f64 * 1e6 / ticks_per_second() / matched.max(1) as f64;
    let threads: Vec<String> = cpu
        .iter()
        .map(|(name, ticks)| format!("{name} {:.2} µs", per_packet(*ticks)))
        .collect();
    println!(
        "  CPU per matched packet: {:.2} µs ({})",
        per_packet(cpu.iter().map(|(_, t)| t).sum()),
        threads.join(", ")
    );
    println!("  exit {status}; {summary}");
}

/// Workload `nflog-latency`: `samples` isolated packets, each sent once the previous one's line
/// came out, timed from just before `sendto` to its line read from shield-watch's stdout.
fn latency(ns: &Netns, stdout: &mut BufReader<ChildStdout>, samples: usize) {
    let (request, requests) = mpsc::channel::<(u16, mpsc::Sender<Instant>)>();
    let path = ns.path();
    let sender = std::thread::spawn(move || {
        let file = std::fs::File::open(path).expect("open netns");
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
        for (port, reply) in requests {
            let sent = Instant::now();
            let _ = socket.send_to(b"x", SocketAddr::from(([192, 0, 2, 1], port)));
            let _ = reply.send(sent);
        }
    });
    let mut took = Vec::with_capacity(samples);
    let mut line = String::new();
    for i in 0..samples {
        let port = 1000 + (i % 60_000) as u16;
        let (reply, sent) = mpsc::channel();
        request.send((port, reply)).unwrap();
        let sent = sent.recv().unwrap();
        line.clear();
        stdout.read_line(&mut line).expect("read stdout");
        took.push(sent.elapsed());
        assert!(line.contains(&format!("\"port\":{port},")), "{line}");
        // Isolated packets: everything settles between two.
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(request);
    sender.join().unwrap();
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "nflog-latency: sendto -> line on stdout, {samples} isolated packets: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        pct(0.50),
        pct(0.99),
        took[took.len() - 1]
    );
}

/// CPU time (user + system, clock ticks) of each thread of process `pid`, by thread name.
fn thread_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: comm may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // Fields 14 and 15 of stat(5) (utime, stime), counted from `state` as 0 here.
        threads.push((name, ticks(11) + ticks(12)));
    }
    threads.sort();
    threads
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

fn main() {
    if let Err(e) = shield_lab::preflight() {
        eprintln!("skipping the nflog flood benchmark: {e}");
        return;
    }
    let packets = env_or("SHIELD_FLOOD_PACKETS", 1_000_000);
    let rate = env_or("SHIELD_FLOOD_RATE", 200_000);
    for _ in 0..env_or("SHIELD_FLOOD_RUNS", 1) {
        run(packets, rate);
    }
}
