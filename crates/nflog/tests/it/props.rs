//! Properties of the pure parts: packets built from random fields parse back to those fields,
//! and no byte string makes the codec or the parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use shield_nflog::codec::{frames, Config, Frame};
use shield_nflog::Headers;

const PORT_PROTOS: [u8; 4] = [6, 17, 132, 136];

/// A transport protocol and the header bytes the parser reads (ports, or ICMP type and code).
#[derive(Clone, Debug)]
struct Transport {
    proto: u8,
    sport: u16,
    dport: u16,
    icmp: (u8, u8),
    body: Vec<u8>,
}

impl Transport {
    fn bytes(&self, icmp_proto: u8) -> Vec<u8> {
        let mut b = if PORT_PROTOS.contains(&self.proto) {
            let mut b = self.sport.to_be_bytes().to_vec();
            b.extend_from_slice(&self.dport.to_be_bytes());
            b
        } else if self.proto == icmp_proto {
            vec![self.icmp.0, self.icmp.1]
        } else {
            Vec::new()
        };
        b.extend_from_slice(&self.body);
        b
    }

    /// Bytes the parser needs after the network headers.
    fn needs(&self, icmp_proto: u8) -> usize {
        if PORT_PROTOS.contains(&self.proto) {
            4
        } else if self.proto == icmp_proto {
            2
        } else {
            0
        }
    }

    fn expect(&self, h: &mut Headers, icmp_proto: u8) {
        h.proto = self.proto;
        if PORT_PROTOS.contains(&self.proto) {
            h.sport = Some(self.sport);
            h.dport = Some(self.dport);
        } else if self.proto == icmp_proto {
            h.icmp = Some(self.icmp);
        }
    }
}

/// Transport protocols: the four with ports, ICMP of either family, and some others that are
/// not IPv6 extension headers.
fn transport() -> impl Strategy<Value = Transport> {
    (
        prop::sample::select(vec![6u8, 17, 132, 136, 1, 58, 47, 50, 59, 253]),
        any::<u16>(),
        any::<u16>(),
        any::<(u8, u8)>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(proto, sport, dport, icmp, body)| Transport {
            proto,
            sport,
            dport,
            icmp,
            body,
        })
}

#[derive(Clone, Debug)]
struct V4 {
    src: Ipv4Addr,
    dest: Ipv4Addr,
    ihl: u8,
    options: Vec<u8>,
    offset: u16,
    more_fragments: bool,
    l4: Transport,
    cut: prop::sample::Index,
}

fn v4() -> impl Strategy<Value = V4> {
    (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        5u8..=15,
        prop::collection::vec(any::<u8>(), 40),
        prop_oneof![Just(0u16), 1u16..0x2000],
        any::<bool>(),
        transport(),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(src, dest, ihl, options, offset, more_fragments, l4, cut)| V4 {
                src: src.into(),
                dest: dest.into(),
                ihl,
                options,
                offset,
                more_fragments,
                l4,
                cut,
            },
        )
}

impl V4 {
    fn build(&self) -> Vec<u8> {
        let hl = usize::from(self.ihl) * 4;
        let l4 = self.l4.bytes(1);
        let mut p = vec![0u8; 20];
        p[0] = 0x40 | self.ihl;
        p[2..4].copy_from_slice(&((hl + l4.len()) as u16).to_be_bytes());
        let frag = self.offset | if self.more_fragments { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = 64;
        p[9] = self.l4.proto;
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dest.octets());
        p.extend_from_slice(&self.options[..hl - 20]);
        p.extend_from_slice(&l4);
        p
    }

    /// What the parser must say about the packet cut to `len` bytes.
    fn expect(&self, len: usize) -> Option<Headers> {
        if len < 20 {
            return None;
        }
        let hl = usize::from(self.ihl) * 4;
        let mut h = Headers {
            src: IpAddr::V4(self.src),
            dest: IpAddr::V4(self.dest),
            proto: self.l4.proto,
            sport: None,
            dport: None,
            icmp: None,
            fragment: self.offset != 0 || self.more_fragments,
            truncated: false,
        };
        if len < hl {
            h.truncated = true;
        } else if self.offset == 0 {
            if len - hl >= self.l4.needs(1) {
                self.l4.expect(&mut h, 1);
            } else {
                h.truncated = true;
            }
        }
        Some(h)
    }
}

#[derive(Clone, Debug)]
enum Ext {
    /// Hop-by-hop (0), routing (43), destination options (60): `(type, 8-byte units beyond 8)`.
    Generic(u8, u8),
    /// Authentication header: 4-byte units beyond 8.
    Ah(u8),
    /// Fragment header with this offset (0: first fragment).
    Fragment(u16),
}

impl Ext {
    fn kind(&self) -> u8 {
        match self {
            Ext::Generic(t, _) => *t,
            Ext::Ah(_) => 51,
            Ext::Fragment(_) => 44,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Ext::Generic(_, units) => {
                let mut b = vec![0xa5; (usize::from(*units) + 1) * 8];
                b[0] = next;
                b[1] = *units;
                b
            }
            Ext::Ah(units) => {
                let mut b = vec![0x5a; (usize::from(*units) + 2) * 4];
                b[0] = next;
                b[1] = *units;
                b
            }
            Ext::Fragment(offset) => {
                let mut b = vec![next, 0, 0, 0, 0, 0, 0, 7];
                b[2..4].copy_from_slice(&((offset << 3) | 1).to_be_bytes());
                b
            }
        }
    }
}

fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        (prop::sample::select(vec![0u8, 43, 60]), 0u8..4).prop_map(|(t, u)| Ext::Generic(t, u)),
        (1u8..6).prop_map(Ext::Ah),
        prop_oneof![Just(0u16), 1u16..0x2000].prop_map(Ext::Fragment),
    ]
}

#[derive(Clone, Debug)]
struct V6 {
    src: Ipv6Addr,
    dest: Ipv6Addr,
    chain: Vec<Ext>,
    l4: Transport,
    cut: prop::sample::Index,
}

fn v6() -> impl Strategy<Value = V6> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        prop::collection::vec(ext(), 0..6),
        transport(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(src, dest, chain, l4, cut)| V6 {
            src: src.into(),
            dest: dest.into(),
            chain,
            l4,
            cut,
        })
}

impl V6 {
    fn build(&self) -> Vec<u8> {
        let mut rest = Vec::new();
        for (i, e) in self.chain.iter().enumerate() {
            let next = self.chain.get(i + 1).map_or(self.l4.proto, Ext::kind);
            rest.extend_from_slice(&e.bytes(next));
        }
        rest.extend_from_slice(&self.l4.bytes(58));
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        p[6] = self.chain.first().map_or(self.l4.proto, Ext::kind);
        p[7] = 64;
        p[8..24].copy_from_slice(&self.src.octets());
        p[24..40].copy_from_slice(&self.dest.octets());
        p.extend_from_slice(&rest);
        p
    }

    fn expect(&self, len: usize) -> Option<Headers> {
        if len < 40 {
            return None;
        }
        let mut h = Headers {
            src: IpAddr::V6(self.src),
            dest: IpAddr::V6(self.dest),
            proto: 0,
            sport: None,
            dport: None,
            icmp: None,
            fragment: false,
            truncated: false,
        };
        let avail = len - 40;
        let mut at = 0;
        for (i, e) in self.chain.iter().enumerate() {
            h.proto = e.kind();
            let next = self.chain.get(i + 1).map_or(self.l4.proto, Ext::kind);
            let size = e.bytes(next).len();
            let readable = if matches!(e, Ext::Fragment(_)) { 8 } else { 2 };
            if avail < at + readable {
                h.truncated = true;
                return Some(h);
            }
            if let Ext::Fragment(offset) = e {
                h.fragment = true;
                if *offset != 0 {
                    h.proto = next;
                    return Some(h);
                }
            }
            if avail < at + size {
                h.truncated = true;
                return Some(h);
            }
            at += size;
        }
        h.proto = self.l4.proto;
        if avail - at >= self.l4.needs(58) {
            self.l4.expect(&mut h, 58);
        } else {
            h.truncated = true;
        }
        Some(h)
    }
}

/// Touches everything a packet frame offers, the way a consumer would.
fn consume(datagram: &[u8]) {
    for frame in frames(datagram) {
        if let Ok(Frame::Packet(p)) = frame {
            let _ = (p.prefix(), p.family(), p.group(), p.hw_protocol(), p.hook());
            let _ = (
                p.mark(),
                p.timestamp(),
                p.indev(),
                p.outdev(),
                p.uid(),
                p.gid(),
            );
            let _ = (
                p.seq(),
                p.seq_global(),
                p.hwaddr(),
                p.hwtype(),
                p.hwheader(),
            );
            let _ = (
                p.ct(),
                p.ct_info(),
                p.vlan(),
                p.l2hdr(),
                p.physindev(),
                p.physoutdev(),
            );
            let _ = p.headers();
        }
    }
}

/// One netlink message of the given type around the given payload.
fn message(message_type: u16, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = Vec::with_capacity(len + 3);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&message_type.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(payload);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ipv4_parses_back_to_its_fields(p in v4()) {
        let bytes = p.build();
        prop_assert_eq!(Headers::parse(&bytes), p.expect(bytes.len()));
        let cut = p.cut.index(bytes.len() + 1);
        prop_assert_eq!(Headers::parse(&bytes[..cut]), p.expect(cut));
    }

    #[test]
    fn ipv6_walks_random_extension_chains(p in v6()) {
        let bytes = p.build();
        prop_assert_eq!(Headers::parse(&bytes), p.expect(bytes.len()));
        let cut = p.cut.index(bytes.len() + 1);
        prop_assert_eq!(Headers::parse(&bytes[..cut]), p.expect(cut));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        consume(&bytes);
        let _ = Headers::parse(&bytes);
        let _ = Config::decode(&bytes);
    }

    /// Well-framed packet messages with random attributes reach the attribute decoders.
    #[test]
    fn random_attributes_never_panic(
        attrs in prop::collection::vec((0u16..24, prop::collection::vec(any::<u8>(), 0..40)), 0..12),
        nested in any::<bool>(),
    ) {
        let mut payload = vec![2, 0, 0, 100];
        for (kind, value) in &attrs {
            payload.extend_from_slice(&attr(kind | if nested { 0x8000 } else { 0 }, value));
        }
        let mut datagram = message(0x0400, &payload);
        datagram.extend_from_slice(&message(3, &[2, 0, 0, 100]));
        consume(&datagram);
    }

    #[test]
    fn packet_attributes_round_trip(
        seq in any::<u32>(),
        mark in any::<u32>(),
        uid in any::<u32>(),
        prefix in prop::collection::vec(1u8..=255, 0..64),
        payload in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut body = vec![10, 0, 0x12, 0x34];
        body.extend_from_slice(&attr(1, &[0x86, 0xdd, 3, 0]));
        body.extend_from_slice(&attr(12, &seq.to_be_bytes()));
        body.extend_from_slice(&attr(2, &mark.to_be_bytes()));
        body.extend_from_slice(&attr(11, &uid.to_be_bytes()));
        let mut with_nul = prefix.clone();
        with_nul.push(0);
        body.extend_from_slice(&attr(10, &with_nul));
        body.extend_from_slice(&attr(9, &payload));
        let datagram = message(0x0400, &body);
        let frame = frames(&datagram).next().unwrap().unwrap();
        let Frame::Packet(p) = frame else { panic!("not a packet") };
        prop_assert_eq!((p.family(), p.group()), (10, 0x1234));
        prop_assert_eq!((p.hw_protocol(), p.hook()), (Some(0x86dd), Some(3)));
        prop_assert_eq!((p.seq(), p.mark(), p.uid()), (Some(seq), Some(mark), Some(uid)));
        prop_assert_eq!(p.prefix(), &prefix[..]);
        prop_assert_eq!(p.payload(), &payload[..]);
    }

    #[test]
    fn config_round_trips(
        group in any::<u16>(),
        range in any::<u32>(),
        qthresh in proptest::option::of(any::<u32>()),
        timeout in proptest::option::of(any::<u32>()),
        nlbufsiz in proptest::option::of(any::<u32>()),
        flags in proptest::option::of(any::<u16>()),
        seq in any::<u32>(),
    ) {
        let config = Config {
            family: 0,
            group,
            command: Some(shield_nflog::codec::Command::Bind),
            copy: Some((shield_nflog::codec::CopyMode::Packet, range)),
            nlbufsiz,
            timeout,
            qthresh,
            flags,
        };
        let mut out = Vec::new();
        config.encode(seq, &mut out);
        prop_assert_eq!(Config::decode(&out).unwrap(), config);
    }
}
