//! Test fixtures around the real kernel: a shielded namespace, a subscriber thread, senders.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shield_lab::Netns;
use shield_nflog::{Builder, Headers, Message, Stats, Subscription};

/// The shield's table, one logging rule per prefix it uses, over TEST-NET destinations.
pub const RULESET: &str = r#"
table inet terok_shield {
    chain output {
        type filter hook output priority 0; policy accept;
        ip daddr 203.0.113.0/24 log group 100 prefix "TEROK_SHIELD_BLOCKED: " drop
        ip daddr 192.0.2.0/24 log group 100 prefix "TEROK_SHIELD_DENIED: " drop
        ip daddr 198.51.100.128/25 log group 100 prefix "TEROK_SHIELD_PRIVATE: " drop
        ip6 daddr 2001:db8:a::/48 log group 100 prefix "TEROK_SHIELD_ALLOWED: " accept
        ip6 daddr 2001:db8:b::/48 log group 100 prefix "TEROK_SHIELD_BYPASS: " drop
    }
}
"#;

/// A fresh namespace (`shtest-PID-N`) with an uplink and the shield's ruleset; removed on drop.
pub fn shielded() -> Netns {
    shield_lab::preflight().expect("this test needs root, ip and nft");
    let ns = Netns::create("shtest").expect("ip netns add");
    ns.with_uplink().expect("uplink");
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(RULESET.as_bytes()).expect("write ruleset");
    let path = file.path().to_str().expect("utf-8 temp path").to_string();
    ns.exec_ok(&["nft", "-f", &path]).expect("nft -f ruleset");
    ns
}

/// What the subscriber saw, copied out of the callback.
#[derive(Clone, Debug)]
pub enum Seen {
    Packet(Box<Record>),
    Lost(Option<u64>),
}

#[derive(Clone, Debug)]
pub struct Record {
    pub prefix: Vec<u8>,
    pub seq: Option<u32>,
    pub hook: Option<u8>,
    pub family: u8,
    pub has_timestamp: bool,
    pub outdev: Option<u32>,
    /// Interface name resolved through the subscription's `Interfaces` handle.
    pub outdev_name: Option<String>,
    /// The same, resolved by the free `ifname` on the subscriber's own thread.
    pub outdev_name_thread: Option<String>,
    pub headers: Option<Headers>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A thread that enters the namespace, opens a subscription and forwards what it receives.
pub struct Watcher {
    rx: Receiver<Seen>,
    stop: Arc<AtomicBool>,
    go: Option<Sender<()>>,
    handle: Option<JoinHandle<Stats>>,
    pub port_id: u32,
    pub recv_buffer: usize,
}

impl Watcher {
    /// Opens the subscription (in `ns`) and starts reading at once.
    pub fn start(ns: &Netns, builder: Builder) -> Result<Watcher, shield_nflog::Error> {
        Watcher::open(ns, builder, false, false)
    }

    /// Opens the subscription but reads nothing until [`Watcher::go`]: the socket fills up.
    pub fn start_paused(ns: &Netns, builder: Builder) -> Result<Watcher, shield_nflog::Error> {
        Watcher::open(ns, builder, true, false)
    }

    /// Like [`Watcher::start`], but records only sequence number and headers: a consumer that
    /// does little per packet, for throughput tests.
    pub fn start_light(ns: &Netns, builder: Builder) -> Result<Watcher, shield_nflog::Error> {
        Watcher::open(ns, builder, false, true)
    }

    fn open(
        ns: &Netns,
        builder: Builder,
        paused: bool,
        light: bool,
    ) -> Result<Watcher, shield_nflog::Error> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let builder = builder
            .netns(Some(ns.path()))
            .read_timeout(Some(Duration::from_millis(50)));
        let handle = std::thread::spawn(move || {
            let mut sub: Subscription = match builder.open() {
                Ok(sub) => sub,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Stats::default();
                }
            };
            let _ = ready_tx.send(Ok((sub.port_id(), sub.stats().recv_buffer)));
            if paused {
                let _ = go_rx.recv();
            }
            let names = sub.interfaces();
            while !stop_flag.load(Ordering::Relaxed) {
                let result = sub.recv(&mut |message| {
                    let seen = match message {
                        Message::Packet(p) if light => Seen::Packet(Box::new(Record {
                            prefix: Vec::new(),
                            seq: p.seq(),
                            hook: None,
                            family: p.family(),
                            has_timestamp: false,
                            outdev: None,
                            outdev_name: None,
                            outdev_name_thread: None,
                            headers: p.headers(),
                            uid: None,
                            gid: None,
                        })),
                        Message::Packet(p) => Seen::Packet(Box::new(Record {
                            prefix: p.prefix().to_vec(),
                            seq: p.seq(),
                            hook: p.hook(),
                            family: p.family(),
                            has_timestamp: p.timestamp().is_some(),
                            outdev: p.outdev(),
                            outdev_name: p.outdev().and_then(|i| names.name(i)),
                            outdev_name_thread: p.outdev().and_then(shield_nflog::ifname),
                            headers: p.headers(),
                            uid: p.uid(),
                            gid: p.gid(),
                        })),
                        Message::Lost { count } => Seen::Lost(count),
                    };
                    let _ = tx.send(seen);
                });
                result.expect("recv");
            }
            sub.stats()
        });
        match ready_rx.recv().expect("subscriber thread ended early") {
            Ok((port_id, recv_buffer)) => Ok(Watcher {
                rx,
                stop,
                go: Some(go_tx),
                handle: Some(handle),
                port_id,
                recv_buffer,
            }),
            Err(e) => {
                let _ = handle.join();
                Err(e)
            }
        }
    }

    pub fn go(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    /// The next thing seen, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Seen> {
        match self.rx.recv_timeout(timeout) {
            Ok(seen) => Some(seen),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("subscriber thread died"),
        }
    }

    /// The next packet record, failing the test on a loss or after `timeout`.
    pub fn packet(&self, timeout: Duration) -> Record {
        match self.next(timeout) {
            Some(Seen::Packet(r)) => *r,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Stops the thread and returns its counters.
    pub fn finish(mut self) -> Stats {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Stats {
        self.go();
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("subscriber thread panicked"))
            .unwrap_or_default()
    }

    /// Collects everything seen until `quiet` passes with nothing new (or `deadline` overall).
    pub fn drain(&self, quiet: Duration, deadline: Duration) -> Vec<Seen> {
        let end = Instant::now() + deadline;
        let mut all = Vec::new();
        while Instant::now() < end {
            match self.next(quiet) {
                Some(seen) => all.push(seen),
                None => break,
            }
        }
        all
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.stop_thread();
        }
    }
}

// ---- senders: each runs on a thread that has entered the namespace (Netns::run_in) ----

/// Sends one UDP datagram from an ephemeral port; returns that port. The send itself fails
/// when a rule drops the packet, which is expected.
pub fn send_udp(ns: &Netns, dest: SocketAddr) -> u16 {
    ns.run_in(move || {
        let bind: SocketAddr = match dest.ip() {
            IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
            IpAddr::V6(_) => "[::]:0".parse().unwrap(),
        };
        let socket = UdpSocket::bind(bind).expect("bind udp");
        let _ = socket.send_to(b"shield-nflog test", dest);
        socket.local_addr().unwrap().port()
    })
    .expect("run_in")
}

/// Sends one UDP/IPv6 datagram carrying the given sticky extension headers
/// (`IPV6_HOPOPTS`, `IPV6_DSTOPTS`, each 8 bytes of PadN); returns the source port.
pub fn send_udp6_with_options(
    ns: &Netns,
    dest: SocketAddr,
    options: &'static [libc::c_int],
) -> u16 {
    ns.run_in(move || {
        let socket = UdpSocket::bind("[::]:0").expect("bind udp6");
        // Next header (filled in by the kernel), length 0 (8 bytes), PadN of 4 zero bytes.
        let ext: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        for &option in options {
            // SAFETY: ext outlives the call; the length is its size.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    option,
                    ext.as_ptr().cast(),
                    ext.len() as libc::socklen_t,
                )
            };
            assert_eq!(
                rc,
                0,
                "setsockopt {option}: {}",
                std::io::Error::last_os_error()
            );
        }
        let _ = socket.send_to(b"with extension headers", dest);
        socket.local_addr().unwrap().port()
    })
    .expect("run_in")
}

/// Starts a TCP connect (one SYN) from an ephemeral port and abandons it; returns the port.
pub fn send_tcp_syn(ns: &Netns, dest: SocketAddr) -> u16 {
    ns.run_in(move || shield_lab::send_one_syn(dest))
        .expect("run_in")
        .expect("send one SYN")
}

/// Sends one ICMP echo request (type 8, code 0) through a raw socket.
pub fn send_ping(ns: &Netns, dest: std::net::Ipv4Addr) {
    ns.run_in(move || shield_lab::send_ping(dest))
        .expect("run_in")
        .expect("send a ping");
}

/// Sends `count` UDP datagrams to `dest` as fast as one socket can; returns how long it took.
pub fn flood_udp(ns: &Netns, dest: SocketAddr, count: usize) -> Duration {
    ns.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
        let start = Instant::now();
        for _ in 0..count {
            let _ = socket.send_to(b"flood", dest);
        }
        start.elapsed()
    })
    .expect("run_in")
}
