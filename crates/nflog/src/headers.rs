//! The layer-3/4 parser: addresses, protocol, ports and ICMP type of an IP packet, pure over `&[u8]`.
//!
//! NFLOG hands us a bounded copy of the packet starting at its IP header, so the parser must
//! cope with captures cut anywhere: it returns what it could read and says whether it had to
//! stop early. Only a packet whose destination address is not there yields nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers the parser knows the layout of.
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;
const ICMPV6: u8 = 58;

/// IPv6 extension headers walked to reach the transport header (RFC 8200 §4, RFC 7045).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const DEST_OPTS: u8 = 60;
const HIP: u8 = 139;
const SHIM6: u8 = 140;

/// Layer-3/4 summary of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dest: IpAddr,
    /// The transport protocol: for IPv6 the header at the end of the extension-header chain (or
    /// the last one reached when the capture ends inside the chain).
    pub proto: u8,
    /// Source port (TCP, UDP, UDP-Lite, SCTP), absent for non-first fragments.
    pub sport: Option<u16>,
    /// Destination port (TCP, UDP, UDP-Lite, SCTP), absent for non-first fragments.
    pub dport: Option<u16>,
    /// ICMP or ICMPv6 `(type, code)`.
    pub icmp: Option<(u8, u8)>,
    /// The packet is a fragment (first or later).
    pub fragment: bool,
    /// The capture ended before a header the parser reads (options, extension headers, ports or
    /// ICMP type/code); the fields above are the ones that were there.
    pub truncated: bool,
}

impl Headers {
    /// Parses an IPv4 or IPv6 packet, choosing by the version nibble. `None` when the packet is
    /// neither or too short to hold its destination address.
    pub fn parse(packet: &[u8]) -> Option<Headers> {
        match packet.first()? >> 4 {
            4 => parse_ipv4(packet),
            6 => parse_ipv6(packet),
            _ => None,
        }
    }
}

fn parse_ipv4(packet: &[u8]) -> Option<Headers> {
    let fixed: &[u8; 20] = packet.get(..20)?.try_into().ok()?;
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(&fixed[12..16]).ok()?);
    let dest = Ipv4Addr::from(<[u8; 4]>::try_from(&fixed[16..20]).ok()?);
    let header_len = usize::from(fixed[0] & 0x0f) * 4;
    // BIG TCP super-packets leave the total length 0: then the capture is all we know.
    let total_len = match u16::from_be_bytes([fixed[2], fixed[3]]) {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let frag = u16::from_be_bytes([fixed[6], fixed[7]]);
    let offset = frag & 0x1fff;
    let more_fragments = frag & 0x2000 != 0;
    let mut headers = Headers {
        src: src.into(),
        dest: dest.into(),
        proto: fixed[9],
        sport: None,
        dport: None,
        icmp: None,
        fragment: offset != 0 || more_fragments,
        truncated: false,
    };
    if header_len < 20 || total_len < header_len {
        // A header that claims to be shorter than its fixed part, or longer than the whole
        // packet, leaves no trustworthy place for a transport header.
        return Some(headers);
    }
    if packet.len() < header_len {
        headers.truncated = true;
        return Some(headers);
    }
    if offset != 0 {
        // Later fragments carry payload bytes where a transport header would be.
        return Some(headers);
    }
    // The capture may be shorter than the packet (copy range); it is never meaningfully longer.
    let end = total_len.min(packet.len());
    let l4 = &packet[header_len..end];
    // A packet that is itself too short for its transport header is malformed, not truncated.
    headers.truncated = !transport(&mut headers, l4, ICMP) && end < total_len;
    Some(headers)
}

fn parse_ipv6(packet: &[u8]) -> Option<Headers> {
    let fixed: &[u8; 40] = packet.get(..40)?.try_into().ok()?;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&fixed[8..24]).ok()?);
    let dest = Ipv6Addr::from(<[u8; 16]>::try_from(&fixed[24..40]).ok()?);
    let payload_len = usize::from(u16::from_be_bytes([fixed[4], fixed[5]]));
    let mut headers = Headers {
        src: src.into(),
        dest: dest.into(),
        proto: fixed[6],
        sport: None,
        dport: None,
        icmp: None,
        fragment: false,
        truncated: false,
    };
    // A zero payload length means a jumbogram (length in a hop-by-hop option): use the capture.
    let declared_end = if payload_len == 0 {
        usize::MAX
    } else {
        40 + payload_len
    };
    let end = declared_end.min(packet.len());
    let captured_all = end == declared_end;
    let rest = &packet[40..end];
    let mut at = 0usize;
    // Every extension header is at least 8 bytes, so the walk ends; the bound only guards
    // against pathological chains in hostile captures.
    for _ in 0..64 {
        let (len, next) = match headers.proto {
            HOP_BY_HOP | ROUTING | DEST_OPTS | HIP | SHIM6 => match rest.get(at..at + 2) {
                Some(h) => ((usize::from(h[1]) + 1) * 8, h[0]),
                None => break,
            },
            AH => match rest.get(at..at + 2) {
                Some(h) => ((usize::from(h[1]) + 2) * 4, h[0]),
                None => break,
            },
            FRAGMENT => match rest.get(at..at + 8) {
                Some(h) => {
                    headers.fragment = true;
                    if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                        // A later fragment: what follows is payload, not a header.
                        headers.proto = h[0];
                        return Some(headers);
                    }
                    (8, h[0])
                }
                None => break,
            },
            _ => {
                let l4 = rest.get(at..).unwrap_or_default();
                let complete = transport(&mut headers, l4, ICMPV6);
                headers.truncated = !complete && !captured_all;
                return Some(headers);
            }
        };
        if at + len > rest.len() {
            headers.truncated = !captured_all;
            return Some(headers);
        }
        at += len;
        headers.proto = next;
    }
    // Ran out of bytes (or patience) inside the extension-header chain.
    headers.truncated = !captured_all;
    Some(headers)
}

/// Fills ports or ICMP type/code from the transport bytes; `false` when `l4` is too short for them.
fn transport(headers: &mut Headers, l4: &[u8], icmp_proto: u8) -> bool {
    match headers.proto {
        TCP | UDP | UDPLITE | SCTP => match l4.get(..4) {
            Some(p) => {
                headers.sport = Some(u16::from_be_bytes([p[0], p[1]]));
                headers.dport = Some(u16::from_be_bytes([p[2], p[3]]));
                true
            }
            None => false,
        },
        p if p == icmp_proto => match l4.get(..2) {
            Some(t) => {
                headers.icmp = Some((t[0], t[1]));
                true
            }
            None => false,
        },
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, ihl: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let hl = usize::from(ihl) * 4;
        let total = hl + l4.len();
        let mut p = vec![0u8; hl];
        p[0] = 0x40 | ihl;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&[198, 51, 100, 1]);
        p[16..20].copy_from_slice(&[192, 0, 2, 7]);
        p.extend_from_slice(l4);
        p
    }

    #[test]
    fn ipv4_tcp_ports_after_options() {
        let p = ipv4(TCP, 7, 0, &[0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0]);
        let h = Headers::parse(&p).unwrap();
        assert_eq!(h.dest, IpAddr::from([192, 0, 2, 7]));
        assert_eq!(h.src, IpAddr::from([198, 51, 100, 1]));
        assert_eq!((h.proto, h.sport, h.dport), (TCP, Some(40000), Some(443)));
        assert!(!h.fragment && !h.truncated);
    }

    #[test]
    fn ipv4_non_first_fragment_has_no_port() {
        let p = ipv4(UDP, 5, 185, &[0, 53, 0, 53]);
        let h = Headers::parse(&p).unwrap();
        assert!(h.fragment);
        assert_eq!((h.sport, h.dport), (None, None));
        let first = ipv4(UDP, 5, 0x2000, &[0, 53, 0, 54]);
        let h = Headers::parse(&first).unwrap();
        assert!(h.fragment);
        assert_eq!(h.dport, Some(54));
    }

    #[test]
    fn ipv4_capture_cut_before_ports_is_truncated() {
        let p = ipv4(TCP, 5, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let h = Headers::parse(&p[..22]).unwrap();
        assert!(h.truncated);
        assert_eq!(h.dport, None);
        assert_eq!(h.dest, IpAddr::from([192, 0, 2, 7]));
        // Options cut off.
        let p = ipv4(TCP, 15, 0, &[1, 2, 3, 4]);
        assert!(Headers::parse(&p[..30]).unwrap().truncated);
        // Destination cut off: nothing.
        assert_eq!(Headers::parse(&p[..19]), None);
    }

    #[test]
    fn ipv4_icmp_type_and_code() {
        let p = ipv4(ICMP, 5, 0, &[8, 0, 0, 0, 0, 1, 0, 1]);
        let h = Headers::parse(&p).unwrap();
        assert_eq!(h.icmp, Some((8, 0)));
        assert_eq!(h.dport, None);
    }

    fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&"2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"2001:db8::53".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn ipv6_walks_hop_by_hop_and_dest_options() {
        // HBH (8 bytes) -> DestOpts (16 bytes) -> UDP.
        let mut rest = vec![DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        rest.extend_from_slice(&[UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        rest.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0]);
        let h = Headers::parse(&ipv6(HOP_BY_HOP, &rest)).unwrap();
        assert_eq!(h.dest, "2001:db8::53".parse::<IpAddr>().unwrap());
        assert_eq!((h.proto, h.sport, h.dport), (UDP, Some(12345), Some(53)));
        assert!(!h.truncated && !h.fragment);
    }

    #[test]
    fn ipv6_ah_length_is_in_four_byte_units() {
        // AH with payload len 4 → (4+2)*4 = 24 bytes.
        let mut rest = vec![TCP, 4];
        rest.extend_from_slice(&[0; 22]);
        rest.extend_from_slice(&[0, 80, 1, 187]);
        let h = Headers::parse(&ipv6(AH, &rest)).unwrap();
        assert_eq!((h.proto, h.sport, h.dport), (TCP, Some(80), Some(443)));
    }

    #[test]
    fn ipv6_later_fragment_stops_the_walk() {
        let rest = [UDP, 0, 0x01, 0x00, 0, 0, 0, 1, 0, 53, 0, 53];
        let h = Headers::parse(&ipv6(FRAGMENT, &rest)).unwrap();
        assert!(h.fragment);
        assert_eq!(h.proto, UDP);
        assert_eq!(h.dport, None);
    }

    #[test]
    fn ipv6_icmpv6_and_truncated_chain() {
        let h = Headers::parse(&ipv6(ICMPV6, &[128, 0, 0, 0])).unwrap();
        assert_eq!(h.icmp, Some((128, 0)));
        // Capture ends inside a routing header that claims 24 bytes.
        let mut rest = vec![UDP, 2];
        rest.extend_from_slice(&[0; 30]);
        let p = ipv6(ROUTING, &rest);
        let h = Headers::parse(&p[..50]).unwrap();
        assert!(h.truncated);
        assert_eq!(h.proto, ROUTING);
    }

    #[test]
    fn other_versions_yield_nothing() {
        assert_eq!(Headers::parse(&[]), None);
        assert_eq!(Headers::parse(&[0x50; 60]), None);
        assert_eq!(Headers::parse(&[0x60; 39]), None);
    }
}
