//! From a logged packet to a shield-watch event: action from the prefix, core fields, `extra`.

use std::net::IpAddr;

use shield_event::{Event, Source};

use crate::wire::Packet;

/// Prefix markers of the shield's rules and the action each means, checked in this order (the
/// reference's), so a prefix containing two markers maps like the reference maps it.
const ACTIONS: [(&[u8], &str); 5] = [
    (b"BLOCKED", "queued_connection"),
    (b"DENIED", "blocked_connection"),
    (b"PRIVATE", "private_range"),
    (b"ALLOWED", "allowed_connection"),
    (b"BYPASS", "bypass_connection"),
];

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

/// The `nflog` event for a packet, or `None` when its destination cannot be parsed (count those).
///
/// `ts` is the caller's timestamp string (the packet's own [`Packet::timestamp`] when present,
/// else the receive time); `ifname` turns interface indexes into names in the packet's
/// namespace (e.g. [`Interfaces::name`](crate::Interfaces::name)), the index is written when it
/// returns `None`. `domain` is left for the caller's domain cache.
pub fn packet_event(
    packet: &Packet<'_>,
    ts: &str,
    container: &str,
    ifname: &dyn Fn(u32) -> Option<String>,
) -> Option<Event> {
    let headers = packet.headers()?;
    let mut event = Event::new(
        ts,
        Source::Nflog,
        action_for_prefix(packet.prefix()),
        container,
    );
    event.dest = format_ip(headers.dest);
    event.detail = detail_for_prefix(packet.prefix());
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
    for (key, index) in [("indev", packet.indev()), ("outdev", packet.outdev())] {
        if let Some(index) = index {
            extra.insert(key, ifname(index).unwrap_or_else(|| index.to_string()));
        }
    }
    if let Some(uid) = packet.uid() {
        extra.insert("uid", uid.to_string());
    }
    if let Some(gid) = packet.gid() {
        extra.insert("gid", gid.to_string());
    }
    if let Some(mark) = packet.mark() {
        extra.insert("mark", format!("{mark:#x}"));
    }
    extra.insert(
        "family",
        match headers.dest {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        },
    );
    if let Some(hook) = packet.hook().and_then(hook_name) {
        extra.insert("hook", hook);
    }
    if headers.fragment {
        extra.insert("fragment", "true");
    }
    if headers.truncated {
        extra.insert("truncated", "true");
    }
    Some(event)
}

/// The `watch`/`nflog_overrun` notice for lost packets, with `extra.lost` when the count is known.
pub fn lost_event(count: Option<u64>, ts: &str, container: &str) -> Event {
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
    fn lost_event_carries_the_count() {
        let e = lost_event(Some(12), "t", "c");
        assert_eq!(e.action, "nflog_overrun");
        assert_eq!(e.extra.get("lost"), Some("12"));
        assert_eq!(lost_event(None, "t", "c").extra.get("lost"), None);
    }
}
