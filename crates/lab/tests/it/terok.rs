//! The real terok-shield 0.9.0 from PyPI on a lab namespace: `prepare`, its createRuntime hook,
//! its own dnsmasq and ruleset, NFLOG group 100, a live `allow`, its clearance reader, teardown.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shield_lab::{leftovers, Netns, TerokContainer, TerokLayout, TerokShield};
use shield_nflog::{Message, Subscription};

const WAIT: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn records() -> Vec<(&'static str, IpAddr)> {
    vec![
        ("api.github.com", ip("203.0.113.10")),
        ("example.org", ip("203.0.113.20")),
    ]
}

/// Waits (bounded) for `needle` in the file, which dnsmasq or the reader write asynchronously.
fn wait_for_line(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn same_netns(pid: u32, ns: &Netns) -> bool {
    let a = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| (m.dev(), m.ino()));
    let b = std::fs::metadata(ns.path()).map(|m| (m.dev(), m.ino()));
    matches!((a, b), (Ok(a), Ok(b)) if a == b)
}

/// A packet seen in NFLOG group 100: its prefix, destination and destination port.
type Logged = (String, IpAddr, Option<u16>);

/// A subscription to group 100 opened inside `ns`, read on a thread of its own.
struct Nflog {
    rx: Receiver<Logged>,
    stop: Arc<AtomicBool>,
}

impl Nflog {
    fn open(ns: &Netns) -> Result<Nflog, shield_nflog::Error> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let builder = Subscription::builder()
            .netns(Some(ns.path()))
            .read_timeout(Some(Duration::from_millis(50)));
        std::thread::spawn(move || {
            let mut sub = match builder.open() {
                Ok(sub) => sub,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            let _ = ready_tx.send(Ok(()));
            while !stop_flag.load(Ordering::Relaxed) {
                let _ = sub.recv(&mut |m| {
                    if let Message::Packet(p) = m {
                        if let Some(h) = p.headers() {
                            let prefix = String::from_utf8_lossy(p.prefix()).into_owned();
                            let _ = tx.send((prefix, h.dest, h.dport));
                        }
                    }
                });
            }
        });
        ready_rx.recv().expect("nflog thread")?;
        Ok(Nflog { rx, stop })
    }

    fn next(&self) -> Logged {
        self.rx.recv_timeout(WAIT).expect("an NFLOG packet")
    }
}

impl Drop for Nflog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn real_terok_shield_applies_its_ruleset_and_runs_its_dnsmasq() {
    let prefix = format!("{}-terok", crate::prefix());
    let shield = TerokShield::ensure(&prefix).expect("terok-shield 0.9.0 in a venv");
    let root = tempfile::tempdir().unwrap();
    let c = TerokContainer::start(
        &shield,
        &prefix,
        "alpha",
        TerokLayout::StateRoot(root.path().to_path_buf()),
        &["github.com"],
        &records(),
    )
    .expect("prepare + createRuntime hook");
    let state = c.state_dir().to_path_buf();
    assert_eq!(state, root.path().join("containers/alpha"));

    // What prepare and the hook wrote.
    for file in [
        "dns.tier",
        "dnsmasq.conf",
        "ruleset.nft",
        "resolv.conf",
        "audit.jsonl",
        "upstream.dns",
        "network.mode",
        "loopback.ports",
        "dnsmasq.command",
        "dnsmasq.bin",
        "dnsmasq.pid",
        "dnsmasq.log",
        "container.id",
    ] {
        assert!(state.join(file).is_file(), "{file} in {}", state.display());
    }
    assert!(state.join("policy").is_dir());
    let id12 = std::fs::read_to_string(state.join("container.id")).unwrap();
    assert_eq!(id12.trim(), &c.id()[..12]);
    assert_eq!(
        std::fs::read_to_string(state.join("dns.tier"))
            .unwrap()
            .trim(),
        "dnsmasq-live"
    );
    assert_eq!(
        c.oci_state()["annotations"]["terok.shield.state_dir"],
        state.display().to_string()
    );

    // terok's dnsmasq: the pid file names it, its cmdline holds the exact --conf-file=, it runs
    // in the container's namespace.
    let conf_arg = format!("--conf-file={}", state.join("dnsmasq.conf").display());
    let pid = c.dnsmasq_pid().unwrap();
    assert!(cmdline(pid).contains(&conf_arg), "{:?}", cmdline(pid));
    assert!(
        same_netns(pid, c.netns()),
        "dnsmasq {pid} in {}",
        c.netns().name()
    );
    assert_eq!(
        c.netns()
            .exec_ok(&["nft", "list", "tables"])
            .unwrap()
            .trim(),
        "table inet terok_shield"
    );

    // An allowed name lands in the allow set; a name not allowed resolves (the fake upstream
    // knows it) but stays out of it, and its query is in dnsmasq.log.
    assert_eq!(c.dig("api.github.com", "A").unwrap().trim(), "203.0.113.10");
    assert_eq!(c.dig("example.org", "A").unwrap().trim(), "203.0.113.20");
    let log = wait_for_line(&state.join("dnsmasq.log"), "reply example.org is");
    assert!(log.contains("query[A] example.org from 127.0.0.1"), "{log}");
    assert!(
        log.contains("nftset add 4 inet terok_shield t40_project_allow_v4 203.0.113.10 github.com"),
        "{log}"
    );
    assert!(!log.contains("203.0.113.20 example.org"), "{log}");

    // A connection to an address that is not allowed is refused and logged to group 100.
    let nflog = Nflog::open(c.netns()).expect("NFLOG group 100 in the container's namespace");
    let dest: SocketAddr = "203.0.113.20:443".parse().unwrap();
    let err = c.connect(dest, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_ehostunreach()), "{err}");
    assert_eq!(
        nflog.next(),
        ("TEROK_SHIELD_BLOCKED: ".to_string(), dest.ip(), Some(443))
    );
    c.probe_private().unwrap_err();
    let (prefix_seen, dest_seen, _) = nflog.next();
    assert_eq!(prefix_seen, "TEROK_SHIELD_PRIVATE: ");
    assert_eq!(dest_seen, ip("169.254.169.254"));
    drop(nflog);

    // A live allow restarts dnsmasq: new pid, same namespace, same --conf-file=.
    let out = c.allow("example.org").expect("terok-shield allow");
    assert!(out.contains("203.0.113.20"), "{out}");
    let new_pid = c.dnsmasq_pid().unwrap();
    assert_ne!(new_pid, pid);
    assert!(cmdline(new_pid).contains(&conf_arg));
    assert!(same_netns(new_pid, c.netns()));
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains(r#""action":"allowed","dest":"203.0.113.20""#),
        "{audit}"
    );
    assert!(std::fs::read_to_string(state.join("dnsmasq.conf"))
        .unwrap()
        .contains("nftset=/example.org/"));

    // Teardown: poststop stops dnsmasq, and nothing of the container is left.
    let ns_path = c.netns().path();
    c.stop().expect("poststop hooks");
    assert!(!Path::new(&format!("/proc/{new_pid}")).exists() || cmdline(new_pid).is_empty());
    assert!(!ns_path.exists());
    drop(shield);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn annotated_state_dir_and_the_clearance_reader() {
    let prefix = format!("{}-terokr", crate::prefix());
    let shield = TerokShield::ensure(&prefix).expect("terok-shield 0.9.0 in a venv");
    let task = tempfile::tempdir().unwrap();
    let state = task.path().join("shield");
    let c = TerokContainer::start(
        &shield,
        &prefix,
        "beta",
        TerokLayout::StateDir(state.clone()),
        &["github.com"],
        &records(),
    )
    .expect("pre_start + createRuntime hook");
    assert!(state.join("dnsmasq.pid").is_file());
    assert_eq!(
        c.oci_state()["annotations"]["terok.shield.state_dir"],
        state.display().to_string()
    );

    // Without --state-dir the CLI finds the state dir through the annotation (podman inspect).
    let pid = c.dnsmasq_pid().unwrap();
    c.allow("example.org")
        .expect("terok-shield allow via the annotation");
    assert_ne!(c.dnsmasq_pid().unwrap(), pid);

    // A live deny restarts dnsmasq with a `local=` sinkhole: the name is NXDOMAIN from then on.
    let pid = c.dnsmasq_pid().unwrap();
    c.deny("example.org").expect("terok-shield deny");
    assert_ne!(c.dnsmasq_pid().unwrap(), pid);
    assert!(std::fs::read_to_string(state.join("dnsmasq.conf"))
        .unwrap()
        .contains("local=/example.org/"));
    assert_eq!(
        shield_lab::dig_status(c.netns(), c.resolver().unwrap(), "example.org", "A").unwrap(),
        "NXDOMAIN"
    );
    let log = wait_for_line(&state.join("dnsmasq.log"), "config example.org is NXDOMAIN");
    assert!(log.contains("config example.org is NXDOMAIN"), "{log}");

    // The reader holds group 100: nobody else can bind it in that namespace meanwhile.
    let mut reader = c.start_reader().expect("nflog-reader.py --emit=json");
    assert!(
        Nflog::open(c.netns()).is_err(),
        "group 100 is held by the reader"
    );
    let dest: SocketAddr = "203.0.113.30:443".parse().unwrap();
    c.connect(dest, Duration::from_secs(2)).unwrap_err();
    let event = reader.next_event(WAIT).expect("a pending event");
    assert_eq!(event["type"], "pending", "{event}");
    assert_eq!(event["dest"], "203.0.113.30");
    assert_eq!(event["port"], 443);
    let audit = wait_for_line(&state.join("audit.jsonl"), r#""action":"blocked""#);
    assert!(
        audit.contains(r#""action":"blocked","dest":"203.0.113.30","port":443,"proto":"tcp""#),
        "{audit}"
    );
    let held = leftovers(&prefix);
    assert!(
        held.iter()
            .any(|f| f.starts_with("process ") && f.contains("nflog-reader.py")),
        "{held:?}"
    );
    reader.stop().unwrap();
    // Released: the group can be bound again.
    let deadline = Instant::now() + WAIT;
    while Nflog::open(c.netns()).is_err() {
        assert!(
            Instant::now() < deadline,
            "group 100 still held after the reader stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    c.stop().expect("poststop hooks");
    drop(shield);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

/// `EHOSTUNREACH`: what an ICMP admin-prohibited reject makes of a connect on Linux.
fn libc_ehostunreach() -> i32 {
    113
}

#[test]
fn shields_set_up_side_by_side() {
    // terok-util's setup lock is one file host-wide, taken without waiting: four setups at once
    // must all succeed (the lab retries a busy lock), each in a home of its own.
    let prefix = format!("{}-teroks", crate::prefix());
    let homes: Vec<_> = (0..4)
        .map(|_| {
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let shield = TerokShield::ensure(&prefix).expect("setup");
                assert!(shield.hooks_dir().join("terok-shield-hook").is_file());
                assert!(shield.reader_script().is_file());
                shield.hooks_dir()
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(
        homes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4
    );
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}
