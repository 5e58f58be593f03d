//! `--show-multicast` in both modes: IPv6 link-local multicast from a container's own stack
//! (MLD reports, router solicitations) is counted and not shown by default, and shown with the
//! flag. The same real packet each time, logged by the shield's ruleset in a namespace the test
//! owns; a refused TCP connection sent after it marks where the stream has got to (one NFLOG
//! socket keeps the kernel's order).

use std::net::{SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::time::Duration;

use rustix::process::Signal;
use shield_lab::Netns;

use crate::host::{start, Container};
use crate::nflog::{shielded_namespace, watch_nflog};
use crate::support::{State, Watch};

/// Gives the namespace's uplink an IPv6 link-local address, as a container's interface has,
/// and sends one datagram to ff02::16 (where MLDv2 reports go) from it.
pub(crate) fn send_link_local_multicast(ns: &Netns) {
    let links = ns.exec_ok(&["ip", "-o", "link", "show"]).unwrap();
    let uplink = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .find(|n| *n != "lo")
        .expect("an uplink in the namespace")
        .to_string();
    ns.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fe80::77/64",
        "dev",
        &uplink,
        "nodad",
    ])
    .unwrap();
    let sent = ns
        .run_in(|| {
            let table =
                std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default();
            let index = table
                .lines()
                .filter(|l| l.starts_with("fe80"))
                .find_map(|l| u32::from_str_radix(l.split_whitespace().nth(1)?, 16).ok());
            let Some(index) = index else { return false };
            let to = SocketAddrV6::new("ff02::16".parse().unwrap(), 9, 0, index);
            // EPERM from the shield's reject is expected: the packet was logged before.
            let _ = UdpSocket::bind("[::]:0").and_then(|s| s.send_to(b"mld", to));
            true
        })
        .unwrap();
    assert!(sent, "no IPv6 link-local interface to send from");
}

fn refused_connection(ns: &Netns) {
    let to: SocketAddr = "203.0.113.20:8443".parse().unwrap();
    let _ = ns
        .run_in(move || TcpStream::connect_timeout(&to, Duration::from_millis(300)))
        .unwrap();
}

/// Sends the multicast packet then the marker; returns the lines up to the marker and the
/// summary line.
fn multicast_then_marker(mut watch: Watch, ns: &Netns) -> (Vec<String>, String) {
    send_link_local_multicast(ns);
    refused_connection(ns);
    let lines = watch.lines_until(|l| l.contains("\"port\":8443"));
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{stderr:#?}");
    let summary = stderr
        .iter()
        .find(|l| l.contains("summary"))
        .expect("a summary")
        .clone();
    (lines, summary)
}

fn check(shown: bool, lines: &[String], summary: &str) {
    let multicast = lines.iter().filter(|l| l.contains("ff02::16")).count();
    if shown {
        assert_eq!(multicast, 1, "{lines:#?}");
    } else {
        assert_eq!(multicast, 0, "{lines:#?}");
        assert!(summary.contains("link_local_multicast"), "{summary}");
    }
}

#[test]
fn link_local_multicast_is_counted_by_default_and_shown_with_the_flag_for_one_container() {
    for shown in [false, true] {
        let ns = shielded_namespace();
        let state = State::new(Some("lookup"));
        let flag: &[&str] = if shown { &["--show-multicast"] } else { &[] };
        let watch = watch_nflog(&state, &ns, flag);
        let (lines, summary) = multicast_then_marker(watch, &ns);
        check(shown, &lines, &summary);
    }
}

#[test]
fn link_local_multicast_is_counted_by_default_and_shown_with_the_flag_host_wide() {
    for shown in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let c = Container::shielded(root.path(), "web", &[]);
        let mut args = vec!["--source", "nflog"];
        if shown {
            args.push("--show-multicast");
        }
        let watch = start(root.path(), &args);
        let (lines, summary) = multicast_then_marker(watch, c.netns());
        check(shown, &lines, &summary);
    }
}
