//! nflog: a packet the kernel logged to an event, and lost packets to a `watch` notice.
//!
//! The mapping works on [`LoggedPacket`]: the rule's prefix and the kernel's metadata, with the
//! layer-3/4 [`Headers`] as shield-nflog parsed them. shield-nflog knows nothing of events; this
//! module borrows only its `Headers` type, not its socket.

use std::net::IpAddr;

use shield_nflog::Headers;

use crate::event::{Event, Source};

/// Prefix markers of the shield's rules and the action each means, checked in this order (the
/// reference's), so a prefix containing two markers maps like the reference maps it.
const ACTIONS: [(&[u8], &str); 5] = [
    (b"BLOCKED", "queued_connection"),
    (b"DENIED", "blocked_connection"),
    (b"PRIVATE", "private_range"),
    (b"ALLOWED", "allowed_connection"),
    (b"BYPASS", "bypass_connection"),
];

/// One logged packet as the nflog source knows it: the rule's prefix, the layer-3/4 headers and
/// the kernel's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedPacket<'a> {
    /// The rule's log prefix as the kernel sent it.
    pub prefix: &'a [u8],
    /// Addresses, protocol, ports, ICMP type and code, fragment and truncation flags.
    pub headers: Headers,
    /// Input interface index.
    pub indev: Option<u32>,
    /// Output interface index.
    pub outdev: Option<u32>,
    /// Owner uid of the sending socket.
    pub uid: Option<u32>,
    /// Owner gid of the sending socket.
    pub gid: Option<u32>,
    /// Packet mark.
    pub mark: Option<u32>,
    /// Netfilter hook number (0 prerouting ... 4 postrouting).
    pub hook: Option<u8>,
}

/// Whether `addr` is an IPv6 link-local multicast address (`ff02::/16`): all-nodes,
/// all-routers, MLD reports and solicited-node groups, the packets a fresh interface sends by
/// itself (MLD, router and neighbour solicitation). terok-shield's own NFLOG reader drops these
/// as noise; so may a caller. IPv4 addresses (even `224.0.0.0/24`) and every other IPv6
/// multicast scope answer `false`.
pub fn is_ipv6_link_local_multicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V6(v6) => v6.segments()[0] == 0xff02,
        IpAddr::V4(_) => false,
    }
}

/// The event action for a log prefix: `BLOCKED`→`queued_connection`, `DENIED`→
/// `blocked_connection`, `PRIVATE`→`private_range`, `ALLOWED`→`allowed_connection`,
/// `BYPASS`→`bypass_connection`, anything else `nflog`; the first marker found in that order wins.
pub fn action_for_prefix(prefix: &[u8]) -> &'static str {
    ACTIONS
        .iter()
        .find(|(marker, _)| prefix.windows(marker.len()).any(|w| w == *marker))
        .map_or("nflog", |(_, action)| action)
}

/// The event `detail` for a log prefix, as the reference computes it: trailing NULs removed,
/// each non-ASCII byte one U+FFFD, then ASCII white space trimmed at both ends (Python's
/// `bytes.rstrip(b"\0").decode("ascii", "replace").strip()`).
pub fn detail_for_prefix(prefix: &[u8]) -> String {
    let mut end = prefix.len();
    while end > 0 && prefix[end - 1] == 0 {
        end -= 1;
    }
    // Python's str.strip() also strips the ASCII separators 0x1c..=0x1f.
    let is_space = |b: &u8| matches!(b, 0x09..=0x0d | 0x1c..=0x20);
    let trimmed = &prefix[..end];
    let start = trimmed
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(trimmed.len());
    let stop = trimmed
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    trimmed[start..stop]
        .iter()
        .map(|&b| if b < 0x80 { char::from(b) } else { '\u{fffd}' })
        .collect()
}

/// The `nflog` event for a packet.
///
/// `ts` is the packet's own timestamp when the kernel gave one, else the receive time;
/// `ifname` turns interface indexes into names in the packet's namespace (the index is written
/// when it returns `None`). The domain is added by [`name_destination`], from the caller's
/// domain cache.
pub fn packet_event(
    packet: &LoggedPacket<'_>,
    ts: &str,
    container: &str,
    ifname: &dyn Fn(u32) -> Option<String>,
) -> Event {
    let mut event = Event::new(
        ts,
        Source::Nflog,
        action_for_prefix(packet.prefix),
        container,
    );
    let headers = &packet.headers;
    event.dest = format_ip(headers.dest);
    event.detail = detail_for_prefix(packet.prefix);
    event.port = headers.dport.map_or(0, i64::from);
    event.proto = i64::from(headers.proto);
    let extra = &mut event.extra;
    extra.insert("src", format_ip(headers.src));
    if let Some(sport) = headers.sport {
        extra.insert("sport", sport.to_string());
    }
    if let Some((t, c)) = headers.icmp {
        extra.insert("icmp_type", t.to_string());
        extra.insert("icmp_code", c.to_string());
    }
    for (key, index) in [("indev", packet.indev), ("outdev", packet.outdev)] {
        if let Some(index) = index {
            extra.insert(key, ifname(index).unwrap_or_else(|| index.to_string()));
        }
    }
    if let Some(uid) = packet.uid {
        extra.insert("uid", uid.to_string());
    }
    if let Some(gid) = packet.gid {
        extra.insert("gid", gid.to_string());
    }
    if let Some(mark) = packet.mark {
        extra.insert("mark", format!("{mark:#x}"));
    }
    extra.insert(
        "family",
        match headers.dest {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        },
    );
    if let Some(hook) = packet.hook.and_then(hook_name) {
        extra.insert("hook", hook);
    }
    if headers.fragment {
        extra.insert("fragment", "true");
    }
    if headers.truncated {
        extra.insert("truncated", "true");
    }
    event
}

/// Names an nflog event's destination: `domain` is the name the address was resolved from,
/// `cname` the CNAME target that carried the address when the name was an alias.
pub fn name_destination(event: &mut Event, domain: &str, cname: Option<&str>) {
    event.domain = domain.to_string();
    if let Some(cname) = cname {
        event.extra.insert("cname", cname);
    }
}

/// The `watch`/`nflog_overrun` notice for lost packets, with `extra.lost` when the count is known.
pub fn lost_packets(count: Option<u64>, ts: &str, container: &str) -> Event {
    let mut event = Event::new(ts, Source::Watch, "nflog_overrun", container);
    event.detail = "packets were lost in the kernel before shield-watch could read them".into();
    if let Some(n) = count {
        event.extra.insert("lost", n.to_string());
    }
    event
}

fn hook_name(hook: u8) -> Option<&'static str> {
    Some(match hook {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        _ => return None,
    })
}

/// Formats an address as glibc's `inet_ntop` does (the reference's output): like Rust's
/// `Display`, except that IPv4-compatible IPv6 addresses (`::a.b.c.d`) keep dotted form.
fn format_ip(addr: IpAddr) -> String {
    if let IpAddr::V6(v6) = addr {
        let s = v6.segments();
        if s[..6] == [0; 6] && s[6] != 0 {
            let o = v6.octets();
            return format!("::{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
        }
    }
    addr.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP packet as the kernel logs one on the output hook (the shape the kernel tests of
    /// shield-nflog and the binary's end-to-end tests see).
    fn udp() -> LoggedPacket<'static> {
        LoggedPacket {
            prefix: b"TEROK_SHIELD_BLOCKED: ",
            headers: Headers {
                src: "198.51.100.1".parse().unwrap(),
                dest: "203.0.113.9".parse().unwrap(),
                proto: 17,
                sport: Some(40000),
                dport: Some(53),
                icmp: None,
                fragment: false,
                truncated: false,
            },
            indev: None,
            outdev: Some(2),
            uid: Some(0),
            gid: Some(0),
            mark: None,
            hook: Some(3),
        }
    }

    fn up0(index: u32) -> Option<String> {
        (index == 2).then(|| "up0".to_string())
    }

    #[test]
    fn a_logged_packet_maps_to_the_exact_line() {
        let event = packet_event(&udp(), "ts", "c1", &up0);
        assert_eq!(
            event.to_json_line(),
            "{\"ts\":\"ts\",\"source\":\"nflog\",\"action\":\"queued_connection\",\
             \"container\":\"c1\",\"dest\":\"203.0.113.9\",\"detail\":\"TEROK_SHIELD_BLOCKED:\",\
             \"port\":53,\"proto\":17,\"extra\":{\"src\":\"198.51.100.1\",\"sport\":\"40000\",\
             \"outdev\":\"up0\",\"uid\":\"0\",\"gid\":\"0\",\"family\":\"ipv4\",\"hook\":\"output\"}}\n"
        );
    }

    #[test]
    fn every_optional_field_in_its_place() {
        let packet = LoggedPacket {
            prefix: b"TEROK_SHIELD_PRIVATE: \0",
            headers: Headers {
                src: "2001:db8:1::1".parse().unwrap(),
                dest: "::192.0.2.1".parse().unwrap(),
                proto: 58,
                sport: None,
                dport: None,
                icmp: Some((128, 0)),
                fragment: true,
                truncated: true,
            },
            indev: Some(7),
            outdev: None,
            uid: None,
            gid: None,
            mark: Some(16),
            hook: Some(9),
        };
        let mut event = packet_event(&packet, "ts", "c", &|_| None);
        name_destination(&mut event, "alias.example", Some("target.example"));
        assert_eq!(
            event.to_json_line(),
            "{\"ts\":\"ts\",\"source\":\"nflog\",\"action\":\"private_range\",\"container\":\"c\",\
             \"domain\":\"alias.example\",\"dest\":\"::192.0.2.1\",\"detail\":\"TEROK_SHIELD_PRIVATE:\",\
             \"proto\":58,\"extra\":{\"src\":\"2001:db8:1::1\",\"icmp_type\":\"128\",\"icmp_code\":\"0\",\
             \"indev\":\"7\",\"mark\":\"0x10\",\"family\":\"ipv6\",\"fragment\":\"true\",\
             \"truncated\":\"true\",\"cname\":\"target.example\"}}\n"
        );
    }

    #[test]
    fn actions_in_reference_order() {
        assert_eq!(
            action_for_prefix(b"TEROK_SHIELD_BLOCKED: "),
            "queued_connection"
        );
        assert_eq!(
            action_for_prefix(b"TEROK_SHIELD_DENIED: "),
            "blocked_connection"
        );
        assert_eq!(
            action_for_prefix(b"TEROK_SHIELD_PRIVATE: "),
            "private_range"
        );
        assert_eq!(
            action_for_prefix(b"TEROK_SHIELD_ALLOWED: "),
            "allowed_connection"
        );
        assert_eq!(
            action_for_prefix(b"TEROK_SHIELD_BYPASS: "),
            "bypass_connection"
        );
        assert_eq!(
            action_for_prefix(b"DENIED then BLOCKED"),
            "queued_connection"
        );
        assert_eq!(action_for_prefix(b"something"), "nflog");
        assert_eq!(action_for_prefix(b""), "nflog");
    }

    #[test]
    fn detail_trims_like_the_reference() {
        assert_eq!(
            detail_for_prefix(b"TEROK_SHIELD_DENIED: \0"),
            "TEROK_SHIELD_DENIED:"
        );
        assert_eq!(detail_for_prefix(b" \t X \x1f\0\0"), "X");
        // A NUL that is not trailing survives to the sanitiser.
        assert_eq!(detail_for_prefix(b"X\0 "), "X\0");
        assert_eq!(detail_for_prefix("é!".as_bytes()), "\u{fffd}\u{fffd}!");
        assert_eq!(detail_for_prefix(b" \0"), "");
    }

    #[test]
    fn addresses_format_like_inet_ntop() {
        let f = |s: &str| format_ip(s.parse().unwrap());
        assert_eq!(f("2001:db8::1"), "2001:db8::1");
        assert_eq!(f("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
        assert_eq!(f("::192.0.2.1"), "::192.0.2.1");
        assert_eq!(f("::1"), "::1");
        assert_eq!(f("::"), "::");
        assert_eq!(f("192.0.2.1"), "192.0.2.1");
    }

    #[test]
    fn link_local_multicast_is_exactly_ff02_slash_16() {
        let yes = |s: &str| is_ipv6_link_local_multicast(s.parse().unwrap());
        // All-nodes, all-routers, MLDv2 reports, a solicited-node group.
        for addr in [
            "ff02::1",
            "ff02::2",
            "ff02::16",
            "ff02::1:ff00:1",
            "ff02:ffff::",
        ] {
            assert!(yes(addr), "{addr}");
        }
        // Other scopes and flags, unicast link-local, IPv4 link-local multicast and its
        // IPv4-mapped form.
        for addr in [
            "ff01::1",
            "ff05::2",
            "ff12::1",
            "ff0e::1",
            "fe80::1",
            "2001:db8::1",
            "::",
            "224.0.0.1",
            "::ffff:224.0.0.1",
            "ff03::1",
        ] {
            assert!(!yes(addr), "{addr}");
        }
    }

    #[test]
    fn lost_packets_carries_the_count() {
        let e = lost_packets(Some(12), "t", "c");
        assert_eq!(
            (e.source, e.action.as_str()),
            (Source::Watch, "nflog_overrun")
        );
        assert_eq!(e.extra.get("lost"), Some("12"));
        assert_eq!(lost_packets(None, "t", "c").extra.get("lost"), None);
    }
}
