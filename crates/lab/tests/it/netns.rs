//! A namespace is created, usable, and gone after drop, also when its holder panics.

use std::path::Path;

use shield_lab::{preflight, Netns};

#[test]
fn namespace_exists_while_held_and_is_gone_after_drop() {
    preflight().unwrap();
    let ns = Netns::create(&crate::prefix()).unwrap();
    let path = ns.path();
    assert!(path.exists(), "{} missing", path.display());
    assert!(ns
        .name()
        .starts_with(&format!("{}-{}-", crate::prefix(), std::process::id())));
    let listed = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns.name())),
        "{listed}"
    );
    drop(ns);
    assert!(!path.exists(), "{} still there after drop", path.display());
}

#[test]
fn namespace_is_gone_after_a_panic_while_holding_it() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let ns = Netns::create(&crate::prefix()).unwrap();
        tx.send(ns.path()).unwrap();
        panic!("test body fails while holding {}", ns.name());
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let path = rx.recv().unwrap();
    assert!(
        !Path::new(&path).exists(),
        "{} survived the panic",
        path.display()
    );
}

#[test]
fn drop_kills_processes_still_inside() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    let mut child = ns.spawn(&["sleep", "600"]).unwrap();
    let pid = child.id();
    assert!(
        ns.pids().contains(&pid),
        "sleep not seen inside the namespace"
    );
    drop(ns);
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "sleep should have been killed, got {status}"
    );
}

#[test]
fn uplink_gives_addresses_and_default_routes() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    ns.with_uplink().unwrap();
    let addrs = ns.exec_ok(&["ip", "-br", "addr"]).unwrap();
    assert!(addrs.contains("198.51.100.1/24"), "{addrs}");
    assert!(addrs.contains("2001:db8:1::1/64"), "{addrs}");
    let v4 = ns.exec_ok(&["ip", "route", "get", "203.0.113.7"]).unwrap();
    assert!(v4.contains("dev up0"), "{v4}");
    let v6 = ns
        .exec_ok(&["ip", "-6", "route", "get", "2001:db8:ffff::7"])
        .unwrap();
    assert!(v6.contains("dev up0"), "{v6}");
    // A UDP datagram to TEST-NET really leaves on up0 (counted by the kernel).
    let sent = ns
        .run_in(|| {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.send_to(b"x", "203.0.113.7:9")
                .map(|n| n == 1)
                .unwrap_or(false)
        })
        .unwrap();
    assert!(sent, "send to TEST-NET failed: no route out");
}

#[test]
fn exec_reports_failures_with_stderr() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    let out = ns.exec(&["ip", "link", "show", "no-such-link"]).unwrap();
    assert!(!out.status.success());
    let err = ns
        .exec_ok(&["ip", "link", "show", "no-such-link"])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ip link show no-such-link") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn run_in_sees_the_namespace_not_the_host() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    let path = ns.path();
    let inside = ns
        .run_in(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap())
        .unwrap();
    let host = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_ne!(inside, host);
    let target = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        inside.to_string_lossy().contains(&target.ino().to_string()),
        "{inside:?} vs inode {}",
        target.ino()
    );
}
