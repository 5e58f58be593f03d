//! NFLOG latency and throughput against the real kernel (needs root; makes its own namespace).
//!
//! Latency: one UDP datagram at a time, from just before `sendto` to the moment the
//! subscription's callback has the decoded packet (and its headers); p50/p99/max over isolated
//! packets. Throughput: the highest paced send rate at which a consumer that reads every field
//! the nflog source uses per packet (headers, prefix, interface name through `Interfaces`,
//! uid/gid/mark/hook) and writes them as text loses nothing, and a flood at full speed. (This
//! crate knows nothing of events; building one is shield-event's mapping.)
//!
//! `cargo bench -p shield-nflog --bench latency` (options: `--quick`).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shield_lab::Netns;
use shield_nflog::{Message, Subscription};

const RULESET: &str = r#"
table inet terok_shield {
    chain output {
        type filter hook output priority 0; policy accept;
        ip daddr 192.0.2.0/24 log group 100 prefix "TEROK_SHIELD_DENIED: " drop
    }
}
"#;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if let Err(e) = shield_lab::preflight() {
        eprintln!("skipping the nflog benchmark: {e}");
        return;
    }
    let ns = Netns::create("shbench").expect("ip netns add");
    ns.with_uplink().expect("uplink");
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(RULESET.as_bytes()).expect("write ruleset");
    ns.exec_ok(&["nft", "-f", file.path().to_str().unwrap()])
        .expect("nft");

    let samples = if quick { 300 } else { 3000 };
    latency(&ns, samples);
    let seconds = if quick { 0.5 } else { 1.0 };
    throughput(&ns, seconds);
}

/// A request to the sender thread: the destination port, and where to report the send time.
type SendRequest = (u16, Option<mpsc::Sender<Instant>>);

/// A sender thread inside the namespace, fed through a channel.
fn sender(ns: &Netns) -> (mpsc::Sender<SendRequest>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<SendRequest>();
    let path = ns.path();
    let handle = std::thread::spawn(move || {
        shield_lab::enter_netns(&path).expect("setns");
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for (port, reply) in rx {
            let dest = SocketAddr::from(([192, 0, 2, 1], port));
            let t0 = Instant::now();
            let _ = socket.send_to(b"latency", dest);
            if let Some(reply) = reply {
                let _ = reply.send(t0);
            }
        }
    });
    (tx, handle)
}

fn latency(ns: &Netns, samples: usize) {
    let (got_tx, got_rx) = mpsc::channel::<(u16, Instant)>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let path = ns.path();
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut sub = Subscription::builder()
            .netns(Some(path))
            .read_timeout(Some(Duration::from_millis(50)))
            .open()
            .expect("open subscription");
        ready_tx.send(()).unwrap();
        while !stop2.load(Ordering::Relaxed) {
            sub.recv(&mut |m| {
                if let Message::Packet(p) = m {
                    let now = Instant::now();
                    if let Some(port) = p.headers().and_then(|h| h.dport) {
                        let _ = got_tx.send((port, now));
                    }
                }
            })
            .expect("recv");
        }
    });
    ready_rx.recv().unwrap();
    let (send, sender_thread) = sender(ns);
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        let port = 1000 + (i % 60000) as u16;
        let (t0_tx, t0_rx) = mpsc::channel();
        send.send((port, Some(t0_tx))).unwrap();
        let t0 = t0_rx.recv().unwrap();
        let (got_port, t1) = got_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("packet delivered");
        assert_eq!(got_port, port);
        lat.push(t1.duration_since(t0));
        // Isolated packets: let everything settle between samples.
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(send);
    sender_thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "latency sendto -> Message::Packet, {samples} isolated packets: p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
}

/// Runs a consumer that builds and serialises the event per packet, while one thread sends at
/// `rate` packets/s (0: as fast as it can) for `seconds`. Returns (sent, delivered, lost, time
/// spent sending).
fn run_rate(ns: &Netns, rate: u64, seconds: f64) -> (u64, u64, u64, Duration) {
    let delivered = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (d, l, s) = (Arc::clone(&delivered), Arc::clone(&lost), Arc::clone(&stop));
    let path = ns.path();
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut sub = Subscription::builder()
            .netns(Some(path))
            .read_timeout(Some(Duration::from_millis(20)))
            .open()
            .expect("open subscription");
        let names = sub.interfaces();
        ready_tx.send(()).unwrap();
        let mut out = Vec::with_capacity(1 << 16);
        while !s.load(Ordering::Relaxed) {
            sub.recv(&mut |m| match m {
                Message::Packet(p) => {
                    if let Some(h) = p.headers() {
                        let outdev = p.outdev().and_then(|i| names.name(i));
                        writeln!(
                            out,
                            "{:?} {} -> {} {} {:?} {:?} {:?} {outdev:?} {:?} {:?} {:?} {:?}",
                            p.prefix(),
                            h.src,
                            h.dest,
                            h.proto,
                            h.sport,
                            h.dport,
                            h.icmp,
                            p.uid(),
                            p.gid(),
                            p.mark(),
                            p.hook()
                        )
                        .unwrap();
                        if out.len() > 60_000 {
                            out.clear();
                        }
                    }
                    d.fetch_add(1, Ordering::Relaxed);
                }
                Message::Lost { count } => {
                    l.fetch_add(count.unwrap_or(0), Ordering::Relaxed);
                }
            })
            .expect("recv");
        }
    });
    ready_rx.recv().unwrap();
    let path = ns.path();
    let (sent, elapsed) = std::thread::spawn(move || {
        shield_lab::enter_netns(&path).expect("setns");
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let dest = SocketAddr::from(([192, 0, 2, 1], 9));
        let start = Instant::now();
        let total = Duration::from_secs_f64(seconds);
        let mut sent = 0u64;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= total {
                break;
            }
            if rate > 0 {
                let due = (elapsed.as_secs_f64() * rate as f64) as u64;
                if sent >= due {
                    std::hint::spin_loop();
                    continue;
                }
            }
            let _ = socket.send_to(b"rate", dest);
            sent += 1;
        }
        let sending = start.elapsed();
        // A marker after the reader is idle reveals any loss at the end.
        std::thread::sleep(Duration::from_millis(300));
        let _ = socket.send_to(b"marker", dest);
        (sent + 1, sending)
    })
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) + lost.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    (
        sent,
        delivered.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
        elapsed,
    )
}

fn throughput(ns: &Netns, seconds: f64) {
    let mut best = 0.0f64;
    for rate in [
        10_000u64, 25_000, 50_000, 100_000, 150_000, 200_000, 300_000,
    ] {
        let (sent, delivered, lost, sending) = run_rate(ns, rate, seconds);
        let achieved = sent as f64 / sending.as_secs_f64();
        println!(
            "paced {rate:>7} pkt/s for {seconds} s: sent {sent} ({achieved:.0} pkt/s achieved), delivered {delivered}, lost {lost}"
        );
        if lost != 0 || delivered != sent {
            break;
        }
        best = best.max(achieved);
        if achieved < rate as f64 * 0.9 {
            // The sender, not the subscription, is the limit from here on.
            break;
        }
    }
    println!("sustained without loss (every field read and written per packet): {best:.0} pkt/s");
    let (sent, delivered, lost, sending) = run_rate(ns, 0, seconds);
    println!(
        "flood at full speed: sent {sent} in {sending:?} ({:.0} pkt/s), delivered {delivered}, lost {lost} (all accounted: {})",
        sent as f64 / sending.as_secs_f64(),
        delivered + lost == sent
    );
}
