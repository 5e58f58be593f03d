//! End to end against the real kernel: nft `log group 100` rules in a namespace of our own,
//! real TCP/UDP/ICMP/IPv6 traffic, a subscription opened through `Builder::netns`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use shield_nflog::{ErrorKind, Subscription};

use crate::lab::{self, Seen, Watcher};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn each_prefix_arrives_with_exact_fields() {
    let ns = lab::shielded();
    let watcher = Watcher::start(&ns, Subscription::builder()).expect("open subscription");

    // UDP to a BLOCKED destination.
    let dest: SocketAddr = "203.0.113.9:53".parse().unwrap();
    let sport = lab::send_udp(&ns, dest);
    let r = watcher.packet(WAIT);
    assert_eq!(r.prefix, b"TEROK_SHIELD_BLOCKED: ");
    assert_eq!(r.seq, Some(0), "first packet of a fresh instance");
    assert_eq!(r.hook, Some(3), "output hook");
    assert_eq!(r.family, libc::AF_INET as u8);
    assert!(!r.has_timestamp, "the kernel gives no timestamp on output");
    assert!(r.outdev.is_some());
    assert_eq!(r.outdev_name.as_deref(), Some("up0"));
    assert_eq!(r.outdev_name_thread, r.outdev_name);
    let h = r.headers.expect("headers");
    assert_eq!(h.dest, dest.ip());
    assert_eq!(h.src, "198.51.100.1".parse::<IpAddr>().unwrap());
    assert_eq!((h.proto, h.sport, h.dport), (17, Some(sport), Some(53)));
    assert!(!h.truncated && !h.fragment);
    // The kernel attaches the sending socket's owner on the output hook. (What the stream makes
    // of these fields is shield-event's mapping, tested there and end to end in the CLI.)
    assert_eq!((r.uid, r.gid), (Some(0), Some(0)));

    // TCP SYN to a DENIED destination.
    let dest: SocketAddr = "192.0.2.10:443".parse().unwrap();
    let sport = lab::send_tcp_syn(&ns, dest);
    let r = watcher.packet(WAIT);
    assert_eq!(r.prefix, b"TEROK_SHIELD_DENIED: ");
    assert_eq!(r.seq, Some(1));
    let h = r.headers.expect("headers");
    assert_eq!(h.dest, dest.ip());
    assert_eq!((h.proto, h.sport, h.dport), (6, Some(sport), Some(443)));

    // ICMP echo to a PRIVATE destination.
    let ping: Ipv4Addr = "198.51.100.200".parse().unwrap();
    lab::send_ping(&ns, ping);
    let r = watcher.packet(WAIT);
    assert_eq!(r.prefix, b"TEROK_SHIELD_PRIVATE: ");
    assert_eq!(r.seq, Some(2));
    let h = r.headers.expect("headers");
    assert_eq!(
        (h.dest, h.proto, h.icmp),
        (IpAddr::V4(ping), 1, Some((8, 0)))
    );
    assert_eq!((h.sport, h.dport), (None, None));

    // UDP over IPv6 behind a hop-by-hop header: ALLOWED (accepted, still logged).
    let dest: SocketAddr = "[2001:db8:a::5]:5353".parse().unwrap();
    let sport = lab::send_udp6_with_options(&ns, dest, &[libc::IPV6_HOPOPTS]);
    let r = watcher.packet(WAIT);
    assert_eq!(r.prefix, b"TEROK_SHIELD_ALLOWED: ");
    assert_eq!(r.seq, Some(3));
    assert_eq!(r.family, libc::AF_INET6 as u8);
    let h = r.headers.expect("headers");
    assert_eq!(h.dest, dest.ip());
    assert_eq!((h.proto, h.sport, h.dport), (17, Some(sport), Some(5353)));
    assert_eq!(h.src, "2001:db8:1::1".parse::<IpAddr>().unwrap());

    // Hop-by-hop and destination options both: BYPASS.
    let dest: SocketAddr = "[2001:db8:b::7]:8443".parse().unwrap();
    let sport = lab::send_udp6_with_options(&ns, dest, &[libc::IPV6_HOPOPTS, libc::IPV6_DSTOPTS]);
    let r = watcher.packet(WAIT);
    assert_eq!(r.prefix, b"TEROK_SHIELD_BYPASS: ");
    assert_eq!(r.seq, Some(4));
    let h = r.headers.expect("headers");
    assert_eq!(
        (h.dest, h.proto, h.sport, h.dport),
        (dest.ip(), 17, Some(sport), Some(8443))
    );

    // Traffic that no rule logs yields nothing.
    lab::send_udp(&ns, "[2001:db8:c::1]:9".parse().unwrap());
    assert!(watcher.next(Duration::from_millis(300)).is_none());
    let stats = watcher.finish();
    assert_eq!((stats.packets, stats.lost, stats.malformed), (5, 0, 0));
}

#[test]
fn second_subscriber_is_refused_naming_the_holder() {
    let ns = lab::shielded();
    let first = Watcher::start(&ns, Subscription::builder()).expect("first subscriber");
    let err = match Watcher::start(&ns, Subscription::builder()) {
        Ok(_) => panic!("a second subscriber on group 100 was accepted"),
        Err(e) => e,
    };
    assert_eq!(
        err.kind(),
        ErrorKind::PermissionDenied {
            group_held_by: Some(first.port_id)
        }
    );
    let text = err.to_string();
    assert!(text.contains("NFLOG group 100 is already bound"), "{text}");
    assert!(text.contains(&first.port_id.to_string()), "{text}");
    // Another group in the same namespace is free.
    Watcher::start(&ns, Subscription::builder().group(101)).expect("group 101");
}

#[test]
fn missing_cap_net_admin_is_told_apart() {
    let ns = lab::shielded();
    let path = ns.path();
    let err = std::thread::spawn(move || {
        drop_cap_net_admin_on_this_thread();
        Subscription::builder().netns(Some(path)).open().err()
    })
    .join()
    .unwrap()
    .expect("bind without CAP_NET_ADMIN succeeded");
    assert_eq!(
        err.kind(),
        ErrorKind::PermissionDenied {
            group_held_by: None
        }
    );
    assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
}

#[test]
fn overrun_reports_the_exact_number_lost() {
    let ns = lab::shielded();
    // A buffer far too small for the flood, and no reading until the flood is over.
    let builder = Subscription::builder().recv_buffer(16 << 10, 32 << 10);
    let mut watcher = Watcher::start_paused(&ns, builder).expect("open");
    // The kernel reports twice what was set (its bookkeeping overhead).
    assert_eq!(watcher.recv_buffer, 32 << 10);
    const FLOOD: u32 = 2000;
    lab::flood_udp(&ns, "192.0.2.1:9".parse().unwrap(), FLOOD as usize);
    watcher.go();
    let first = watcher.drain(Duration::from_millis(500), Duration::from_secs(20));
    let received: Vec<u32> = first
        .iter()
        .filter_map(|s| match s {
            Seen::Packet(r) => r.seq,
            Seen::Lost(_) => None,
        })
        .collect();
    let kept = received.len() as u32;
    eprintln!("kept {kept} of {FLOOD} in a 16 KiB buffer");
    assert!(kept > 0 && kept < FLOOD, "kept {kept} of {FLOOD}");
    // What stayed in the queue is the flood's beginning, in order.
    assert_eq!(received, (0..kept).collect::<Vec<_>>());
    // Once the queue ran dry the overrun was reported with its count, read from the kernel's
    // drop counter: no later packet is needed to show the gap.
    match first.last() {
        Some(Seen::Lost(Some(n))) => assert_eq!(*n, u64::from(FLOOD - kept)),
        other => panic!("expected a counted loss last, got {other:?}"),
    }
    // The next packet shows the same loss as a sequence gap: it is not reported twice.
    lab::send_udp(&ns, "192.0.2.2:9".parse().unwrap());
    let marker = watcher.packet(WAIT);
    assert_eq!(marker.seq, Some(FLOOD));
    let stats = watcher.finish();
    assert_eq!(stats.lost, u64::from(FLOOD - kept));
    assert_eq!(stats.kernel_drops, u64::from(FLOOD - kept));
    assert!(stats.overruns >= 1);
    // The overrun doubled the buffer, up to the cap (the kernel reports twice the setting).
    assert_eq!(stats.recv_buffer, 64 << 10);
}

#[test]
fn a_short_copy_range_yields_truncated_headers() {
    let ns = lab::shielded();
    // 22 bytes: the IPv4 header and two bytes of UDP, not the destination port.
    let watcher =
        Watcher::start(&ns, Subscription::builder().copy_range(22)).expect("open subscription");
    let dest: SocketAddr = "192.0.2.77:5000".parse().unwrap();
    let sport = lab::send_udp(&ns, dest);
    let r = watcher.packet(WAIT);
    let h = r.headers.expect("the destination is inside the copy");
    assert_eq!((h.dest, h.proto), (dest.ip(), 17));
    assert_eq!((h.sport, h.dport), (None, None));
    assert!(h.truncated);
    assert_ne!(sport, 0);
}

#[test]
fn subscription_can_move_to_its_own_thread() {
    fn send<T: Send>() {}
    fn shared<T: Send + Sync>() {}
    send::<Subscription>();
    shared::<shield_nflog::Interfaces>();
}

#[test]
fn a_burst_of_20000_is_delivered_or_counted() {
    let ns = lab::shielded();
    let watcher = Watcher::start_light(&ns, Subscription::builder()).expect("open");
    const BURST: usize = 20_000;
    lab::flood_udp(&ns, "192.0.2.1:9".parse().unwrap(), BURST);
    let mut delivered = 0u64;
    let mut lost = 0u64;
    let count = |seen: Seen, delivered: &mut u64, lost: &mut u64| match seen {
        Seen::Packet(r) => {
            let h = r.headers.expect("headers");
            let marker = h.dest == "192.0.2.2".parse::<IpAddr>().unwrap();
            *delivered += u64::from(!marker);
            marker
        }
        Seen::Lost(n) => {
            *lost += n.unwrap_or(0);
            false
        }
    };
    for seen in watcher.drain(Duration::from_millis(500), Duration::from_secs(60)) {
        count(seen, &mut delivered, &mut lost);
    }
    // A marker once the reader is idle reveals any gap at the burst's end.
    lab::send_udp(&ns, "192.0.2.2:9".parse().unwrap());
    loop {
        let seen = watcher.next(WAIT).expect("the marker arrives");
        if count(seen, &mut delivered, &mut lost) {
            break;
        }
    }
    eprintln!("burst: {delivered} delivered, {lost} lost");
    assert_eq!(
        delivered + lost,
        BURST as u64,
        "every packet delivered or counted"
    );
    assert!(
        delivered * 100 >= BURST as u64 * 99,
        "only {delivered} of {BURST} delivered ({lost} lost)"
    );
}

/// Clears CAP_NET_ADMIN from this thread's effective set (capabilities are per thread).
fn drop_cap_net_admin_on_this_thread() {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    let mut sets = capabilities(None).expect("capget");
    sets.effective.remove(CapabilitySet::NET_ADMIN);
    sets.permitted.remove(CapabilitySet::NET_ADMIN);
    set_capabilities(None, sets).expect("capset");
}

/// `Builder::open_in`: the socket is created and bound inside a namespace the test made (a
/// packet logged there arrives on it), and the calling thread is back in its own namespace.
#[test]
fn open_in_binds_inside_the_namespace_and_comes_back() {
    use shield_nflog::{same_namespace, Message, NamespaceId};
    use std::fs::File;

    let ns = lab::shielded();
    let netns = File::open(ns.path()).expect("open the namespace");
    let home = NamespaceId::of_current_thread().unwrap();
    let own = File::open("/proc/thread-self/ns/net").unwrap();
    assert!(!same_namespace(&netns, &own).unwrap());
    // The handle's identity is that of a thread inside the namespace.
    let inside = ns
        .run_in(|| NamespaceId::of_current_thread().unwrap())
        .unwrap();
    assert_eq!(inside, NamespaceId::of(&netns).unwrap());
    assert_ne!(inside.inode(), home.inode());

    let mut sub = Subscription::builder()
        .read_timeout(Some(Duration::from_millis(50)))
        .open_in(&netns)
        .expect("open_in");
    assert_eq!(
        NamespaceId::of_current_thread().unwrap(),
        home,
        "the thread is back in its own namespace"
    );

    let dest: SocketAddr = "203.0.113.9:53".parse().unwrap();
    let sport = lab::send_udp(&ns, dest);
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = None;
    while seen.is_none() && std::time::Instant::now() < deadline {
        sub.recv(&mut |message| {
            if let Message::Packet(p) = message {
                seen = Some((p.prefix().to_vec(), p.headers()));
            }
        })
        .expect("recv");
    }
    let (prefix, headers) = seen.expect("the packet logged in the namespace arrives");
    assert_eq!(prefix, b"TEROK_SHIELD_BLOCKED: ");
    let h = headers.expect("headers");
    assert_eq!(
        (h.dest, h.sport, h.dport),
        (dest.ip(), Some(sport), Some(53))
    );
    assert_eq!(NamespaceId::of_current_thread().unwrap(), home);
}

/// Opening split in two, as shield-watch's nflog helper and worker do: `request_in` makes the
/// socket in a namespace and sends the bind request; `finish`, on a thread that holds no
/// capability at all, reads the answer. A packet logged between the two is kept, interface names
/// resolve in the socket's namespace through the descriptor that came with it, and a second
/// request for the held group finishes as refused, naming the holder.
#[test]
fn a_bind_requested_in_a_namespace_is_finished_without_any_capability() {
    use shield_nflog::{BindRequest, ErrorKind, Message};
    use std::fs::File;

    let ns = lab::shielded();
    let netns = File::open(ns.path()).expect("open the namespace");
    let builder = Subscription::builder().read_timeout(Some(Duration::from_millis(50)));
    let request = builder.request_in(&netns).expect("request_in");
    // Logged after the bind, before anyone read the answer.
    let dest: SocketAddr = "203.0.113.9:53".parse().unwrap();
    let sport = lab::send_udp(&ns, dest);
    // The descriptors as another process would receive them.
    let (socket, names, held_by) = request.into_parts();
    assert_eq!(held_by, None);
    let finisher = builder.clone();
    let (first, uplink) = std::thread::spawn(move || {
        use rustix::thread::{set_capabilities, CapabilitySet, CapabilitySets};
        set_capabilities(
            None,
            CapabilitySets {
                effective: CapabilitySet::empty(),
                permitted: CapabilitySet::empty(),
                inheritable: CapabilitySet::empty(),
            },
        )
        .expect("capset");
        let mut sub = finisher
            .finish(BindRequest::from_parts(socket, names, held_by))
            .expect("finish");
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = None;
        while seen.is_none() && std::time::Instant::now() < deadline {
            sub.recv(&mut |message| {
                if let Message::Packet(p) = message {
                    seen = Some((p.headers(), p.outdev()));
                }
            })
            .expect("recv");
        }
        let (headers, outdev) = seen.expect("the packet logged before finish arrives");
        let h = headers.expect("headers");
        assert_eq!((h.dest, h.sport), (dest.ip(), Some(sport)));
        let names = sub.interfaces();
        assert_eq!(names.name(1).as_deref(), Some("lo"));
        let uplink = outdev.and_then(|index| names.name(index));
        (sub, uplink)
    })
    .join()
    .unwrap();
    // The namespace's own uplink (its peer on the host is `up1`).
    assert_eq!(uplink.as_deref(), Some("up0"));
    // Kept open (the group stays bound) while the second request is tried.

    let second = builder.request_in(&netns).expect("second request_in");
    let err = builder.finish(second).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::PermissionDenied {
            group_held_by: Some(first.port_id())
        },
        "{err}"
    );
    drop(first);
}
