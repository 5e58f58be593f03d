//! The nfnetlink_log codec: configuration requests out, packets, acks and batch ends in.
//!
//! Layout from the kernel UAPI (`linux/netfilter/nfnetlink.h`, `nfnetlink_log.h`). Netlink
//! framing, the `NLMSG_ERROR` ack and attribute (TLV) walking come from `netlink-packet-core`;
//! everything nfnetlink-specific is here. Two kernel habits shape the parser: every attribute
//! value is big-endian whatever `NLA_F_NET_BYTEORDER` says, and the `NLMSG_DONE` that ends a
//! batch carries an `nfgenmsg`, not the error code `netlink-packet-core` would read in it.

use std::time::{Duration, SystemTime};

use netlink_packet_core::{
    DefaultNla, Emitable, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NlaBuffer, NlasIterator,
    NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};

use crate::error::{Error, ErrorKind};
use crate::headers::Headers;

/// nfnetlink subsystem id of the packet logger (`NFNL_SUBSYS_ULOG`).
const SUBSYS_ULOG: u16 = 4;
const MSG_PACKET: u16 = 0;
const MSG_CONFIG: u16 = 1;
/// `struct nfgenmsg`: family, version, resource id (the group, big-endian).
const NFGENMSG_LEN: usize = 4;
const NETLINK_HEADER_LEN: usize = 16;

// enum nfulnl_attr_type
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_MARK: u16 = 2;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_IFINDEX_PHYSINDEV: u16 = 6;
const NFULA_IFINDEX_PHYSOUTDEV: u16 = 7;
const NFULA_HWADDR: u16 = 8;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_UID: u16 = 11;
const NFULA_SEQ: u16 = 12;
const NFULA_SEQ_GLOBAL: u16 = 13;
const NFULA_GID: u16 = 14;
const NFULA_HWTYPE: u16 = 15;
const NFULA_HWHEADER: u16 = 16;
const NFULA_HWLEN: u16 = 17;
const NFULA_CT: u16 = 18;
const NFULA_CT_INFO: u16 = 19;
const NFULA_VLAN: u16 = 20;
const NFULA_L2HDR: u16 = 21;
// enum nfulnl_vlan_attr
const NFULA_VLAN_PROTO: u16 = 1;
const NFULA_VLAN_TCI: u16 = 2;
// enum nfulnl_attr_config
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULA_CFG_FLAGS: u16 = 6;

/// `NFULNL_CFG_F_SEQ`: number packets per instance (gaps reveal losses).
pub const FLAG_SEQ: u16 = 0x0001;
/// `NFULNL_CFG_F_SEQ_GLOBAL`: number packets across all instances.
pub const FLAG_SEQ_GLOBAL: u16 = 0x0002;
/// `NFULNL_CFG_F_CONNTRACK`: attach the conntrack entry (`NFULA_CT`).
pub const FLAG_CONNTRACK: u16 = 0x0004;

/// A configuration command (`enum nfulnl_msg_config_cmds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Bind the socket to the group: it becomes the group's only subscriber in the namespace.
    Bind,
    /// Release the group.
    Unbind,
    /// Make nfnetlink_log the default logger of the address family (legacy, a no-op for
    /// `log group` rules).
    PfBind,
    /// Undo [`Command::PfBind`].
    PfUnbind,
}

impl Command {
    fn code(self) -> u8 {
        match self {
            Command::Bind => 1,
            Command::Unbind => 2,
            Command::PfBind => 3,
            Command::PfUnbind => 4,
        }
    }

    fn from_code(code: u8) -> Option<Command> {
        Some(match code {
            1 => Command::Bind,
            2 => Command::Unbind,
            3 => Command::PfBind,
            4 => Command::PfUnbind,
            _ => return None,
        })
    }
}

/// What the kernel copies of each packet (`NFULNL_COPY_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Nothing but the prefix.
    None,
    /// Metadata, no payload.
    Meta,
    /// Metadata and up to `copy_range` bytes of the packet from its network header.
    Packet,
}

impl CopyMode {
    fn code(self) -> u8 {
        match self {
            CopyMode::None => 0,
            CopyMode::Meta => 1,
            CopyMode::Packet => 2,
        }
    }

    fn from_code(code: u8) -> Option<CopyMode> {
        Some(match code {
            0 => CopyMode::None,
            1 => CopyMode::Meta,
            2 => CopyMode::Packet,
            _ => return None,
        })
    }
}

/// One `NFULNL_MSG_CONFIG` request; every field left `None` is not sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `nfgen_family`: the address family for [`Command::PfBind`]/[`Command::PfUnbind`],
    /// `AF_UNSPEC` (0) for group commands.
    pub family: u8,
    /// The NFLOG group (`res_id`).
    pub group: u16,
    /// `NFULA_CFG_CMD`.
    pub command: Option<Command>,
    /// `NFULA_CFG_MODE`: copy mode and copy range in bytes.
    pub copy: Option<(CopyMode, u32)>,
    /// `NFULA_CFG_NLBUFSIZ`: the kernel's per-batch buffer, bytes.
    pub nlbufsiz: Option<u32>,
    /// `NFULA_CFG_TIMEOUT`: flush a partial batch after this many hundredths of a second.
    pub timeout: Option<u32>,
    /// `NFULA_CFG_QTHRESH`: flush a batch once it holds this many packets.
    pub qthresh: Option<u32>,
    /// `NFULA_CFG_FLAGS`: [`FLAG_SEQ`], [`FLAG_SEQ_GLOBAL`], [`FLAG_CONNTRACK`].
    pub flags: Option<u16>,
}

impl Config {
    /// Appends this request as one netlink message (`NLM_F_REQUEST | NLM_F_ACK`, sequence `seq`).
    pub fn encode(&self, seq: u32, out: &mut Vec<u8>) {
        let mut nlas = Vec::new();
        if let Some(command) = self.command {
            nlas.push(DefaultNla::new(NFULA_CFG_CMD, vec![command.code()]));
        }
        if let Some((mode, range)) = self.copy {
            let mut value = range.to_be_bytes().to_vec();
            value.extend_from_slice(&[mode.code(), 0]);
            nlas.push(DefaultNla::new(NFULA_CFG_MODE, value));
        }
        let words = [
            (NFULA_CFG_NLBUFSIZ, self.nlbufsiz),
            (NFULA_CFG_TIMEOUT, self.timeout),
            (NFULA_CFG_QTHRESH, self.qthresh),
        ];
        for (kind, value) in words {
            if let Some(v) = value {
                nlas.push(DefaultNla::new(kind, v.to_be_bytes().to_vec()));
            }
        }
        if let Some(flags) = self.flags {
            nlas.push(DefaultNla::new(
                NFULA_CFG_FLAGS,
                flags.to_be_bytes().to_vec(),
            ));
        }
        let attrs_len = nlas.as_slice().buffer_len();
        let len = NETLINK_HEADER_LEN + NFGENMSG_LEN + attrs_len;
        let start = out.len();
        out.resize(start + len, 0);
        let mut header = NetlinkHeader::default();
        header.length = len as u32;
        header.message_type = (SUBSYS_ULOG << 8) | MSG_CONFIG;
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = seq;
        let msg = &mut out[start..];
        header.emit(&mut msg[..NETLINK_HEADER_LEN]);
        let group = self.group.to_be_bytes();
        msg[NETLINK_HEADER_LEN..NETLINK_HEADER_LEN + NFGENMSG_LEN].copy_from_slice(&[
            self.family,
            0,
            group[0],
            group[1],
        ]);
        nlas.as_slice()
            .emit(&mut msg[NETLINK_HEADER_LEN + NFGENMSG_LEN..]);
    }

    /// Parses one configuration message (the inverse of [`Config::encode`]).
    pub fn decode(message: &[u8]) -> Result<Config, Error> {
        let buf = NetlinkBuffer::new_checked(message).map_err(decode_error)?;
        if buf.message_type() != (SUBSYS_ULOG << 8) | MSG_CONFIG {
            return Err(protocol("not an nfnetlink_log configuration message"));
        }
        let payload = buf.payload();
        let nfgen = payload
            .get(..NFGENMSG_LEN)
            .ok_or_else(|| protocol("configuration message without nfgenmsg"))?;
        let mut config = Config {
            family: nfgen[0],
            group: u16::from_be_bytes([nfgen[2], nfgen[3]]),
            ..Config::default()
        };
        for nla in NlasIterator::new(&payload[NFGENMSG_LEN..]) {
            let nla = nla.map_err(decode_error)?;
            let value = nla.value();
            match nla.kind() & NLA_TYPE_MASK {
                NFULA_CFG_CMD => {
                    let code = *value.first().ok_or_else(|| bad_len("CFG_CMD"))?;
                    config.command = Some(
                        Command::from_code(code)
                            .ok_or_else(|| protocol("unknown configuration command"))?,
                    );
                }
                NFULA_CFG_MODE => {
                    let v: [u8; 6] = value.try_into().map_err(|_| bad_len("CFG_MODE"))?;
                    let mode =
                        CopyMode::from_code(v[4]).ok_or_else(|| protocol("unknown copy mode"))?;
                    config.copy = Some((mode, u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
                }
                NFULA_CFG_NLBUFSIZ => config.nlbufsiz = Some(be32(value, "CFG_NLBUFSIZ")?),
                NFULA_CFG_TIMEOUT => config.timeout = Some(be32(value, "CFG_TIMEOUT")?),
                NFULA_CFG_QTHRESH => config.qthresh = Some(be32(value, "CFG_QTHRESH")?),
                NFULA_CFG_FLAGS => config.flags = Some(be16(value, "CFG_FLAGS")?),
                _ => {}
            }
        }
        Ok(config)
    }
}

/// One netlink message of a datagram from the nfnetlink_log socket.
// A packet borrows the datagram and lives for one callback on the stack; boxing it would
// allocate per packet to shrink a value nobody stores.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// A logged packet.
    Packet(Packet<'a>),
    /// `NLMSG_DONE`: the end of a kernel batch.
    Done,
    /// `NLMSG_ERROR` with code 0: the request with this sequence number succeeded.
    Ack {
        /// Sequence number of the acknowledged request.
        seq: u32,
    },
    /// `NLMSG_ERROR` with a negative errno: the request with this sequence number failed.
    Failure {
        /// Sequence number of the failed request.
        seq: u32,
        /// The positive errno.
        errno: i32,
    },
    /// Anything else (`NLMSG_NOOP`, other subsystems); skipped.
    Other {
        /// The netlink message type.
        message_type: u16,
    },
}

/// Iterates over the netlink messages of one datagram; see [`frames`].
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

/// Splits a datagram read from the socket into its messages. Pure; never panics: a malformed
/// message yields one `Err` and ends the iteration (the framing after it cannot be trusted).
pub fn frames(datagram: &[u8]) -> Frames<'_> {
    Frames { rest: datagram }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = match NetlinkBuffer::new_checked(self.rest) {
            Ok(buf) => buf,
            Err(e) => {
                self.rest = &[];
                return Some(Err(decode_error(e)));
            }
        };
        let len = buf.length() as usize;
        let message = &self.rest[..len];
        // Messages are 4-byte aligned; the last one's padding may be missing.
        self.rest = self.rest.get((len + 3) & !3..).unwrap_or_default();
        let buf = NetlinkBuffer::new(message);
        let payload = buf.payload();
        let frame = match buf.message_type() {
            NLMSG_DONE => Ok(Frame::Done),
            NLMSG_ERROR => ErrorBuffer::new_checked(payload)
                .map_err(decode_error)
                .map(|e| match e.code() {
                    None => Frame::Ack {
                        seq: buf.sequence_number(),
                    },
                    Some(code) => Frame::Failure {
                        seq: buf.sequence_number(),
                        errno: code.get().saturating_neg(),
                    },
                }),
            t if t == (SUBSYS_ULOG << 8) | MSG_PACKET => Packet::parse(payload).map(Frame::Packet),
            t => Ok(Frame::Other { message_type: t }),
        };
        if frame.is_err() {
            self.rest = &[];
        }
        Some(frame)
    }
}

/// VLAN tag of a logged packet (`NFULA_VLAN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    /// Tag protocol identifier (0x8100, 0x88a8).
    pub proto: Option<u16>,
    /// Tag control information (priority, DEI, VLAN id).
    pub tci: Option<u16>,
}

/// One logged packet: its metadata attributes and the copied bytes, borrowed from the datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet<'a> {
    family: u8,
    group: u16,
    hw_protocol: Option<u16>,
    hook: Option<u8>,
    mark: Option<u32>,
    timestamp: Option<(u64, u64)>,
    indev: Option<u32>,
    outdev: Option<u32>,
    physindev: Option<u32>,
    physoutdev: Option<u32>,
    hwaddr: Option<&'a [u8]>,
    payload: &'a [u8],
    prefix: &'a [u8],
    uid: Option<u32>,
    gid: Option<u32>,
    seq: Option<u32>,
    seq_global: Option<u32>,
    hwtype: Option<u16>,
    hwheader: Option<&'a [u8]>,
    hwlen: Option<u16>,
    ct: Option<&'a [u8]>,
    ct_info: Option<u32>,
    vlan: Option<Vlan>,
    l2hdr: Option<&'a [u8]>,
}

impl<'a> Packet<'a> {
    /// Parses the payload of an `NFULNL_MSG_PACKET` message (nfgenmsg + attributes).
    fn parse(payload: &'a [u8]) -> Result<Packet<'a>, Error> {
        let nfgen = payload
            .get(..NFGENMSG_LEN)
            .ok_or_else(|| protocol("packet message without nfgenmsg"))?;
        let mut p = Packet {
            family: nfgen[0],
            group: u16::from_be_bytes([nfgen[2], nfgen[3]]),
            ..Packet::default()
        };
        for nla in NlasIterator::new(&payload[NFGENMSG_LEN..]) {
            let (kind, v) = split_nla(nla.map_err(decode_error)?);
            match kind {
                NFULA_PACKET_HDR => {
                    let h = v.get(..4).ok_or_else(|| bad_len("PACKET_HDR"))?;
                    p.hw_protocol = Some(u16::from_be_bytes([h[0], h[1]]));
                    p.hook = Some(h[2]);
                }
                NFULA_MARK => p.mark = Some(be32(v, "MARK")?),
                NFULA_TIMESTAMP => {
                    let t: [u8; 16] = v.try_into().map_err(|_| bad_len("TIMESTAMP"))?;
                    let (sec, usec) = t.split_at(8);
                    p.timestamp = Some((be64(sec), be64(usec)));
                }
                NFULA_IFINDEX_INDEV => p.indev = Some(be32(v, "IFINDEX_INDEV")?),
                NFULA_IFINDEX_OUTDEV => p.outdev = Some(be32(v, "IFINDEX_OUTDEV")?),
                NFULA_IFINDEX_PHYSINDEV => p.physindev = Some(be32(v, "IFINDEX_PHYSINDEV")?),
                NFULA_IFINDEX_PHYSOUTDEV => p.physoutdev = Some(be32(v, "IFINDEX_PHYSOUTDEV")?),
                NFULA_HWADDR => {
                    // struct nfulnl_msg_packet_hw: __be16 len, pad, u8 addr[8].
                    let hw = v.get(..12).ok_or_else(|| bad_len("HWADDR"))?;
                    let len = usize::from(u16::from_be_bytes([hw[0], hw[1]])).min(8);
                    p.hwaddr = Some(&hw[4..4 + len]);
                }
                NFULA_PAYLOAD => p.payload = v,
                NFULA_PREFIX => p.prefix = trim_nuls(v),
                NFULA_UID => p.uid = Some(be32(v, "UID")?),
                NFULA_GID => p.gid = Some(be32(v, "GID")?),
                NFULA_SEQ => p.seq = Some(be32(v, "SEQ")?),
                NFULA_SEQ_GLOBAL => p.seq_global = Some(be32(v, "SEQ_GLOBAL")?),
                NFULA_HWTYPE => p.hwtype = Some(be16(v, "HWTYPE")?),
                NFULA_HWHEADER => p.hwheader = Some(v),
                NFULA_HWLEN => p.hwlen = Some(be16(v, "HWLEN")?),
                NFULA_CT => p.ct = Some(v),
                NFULA_CT_INFO => p.ct_info = Some(be32(v, "CT_INFO")?),
                NFULA_VLAN => p.vlan = Some(parse_vlan(v)?),
                NFULA_L2HDR => p.l2hdr = Some(v),
                _ => {}
            }
        }
        Ok(p)
    }

    /// The rule's log prefix, without the kernel's terminating NUL.
    pub fn prefix(&self) -> &'a [u8] {
        self.prefix
    }

    /// The packet's protocol family (`nfgen_family`: 2 IPv4, 10 IPv6, 7 bridge, ...).
    pub fn family(&self) -> u8 {
        self.family
    }

    /// The NFLOG group the packet was logged to.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The link-layer protocol (EtherType, e.g. 0x0800, 0x86dd), from the packet header.
    pub fn hw_protocol(&self) -> Option<u16> {
        self.hw_protocol
    }

    /// The netfilter hook (0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting).
    pub fn hook(&self) -> Option<u8> {
        self.hook
    }

    /// The packet mark, when not zero.
    pub fn mark(&self) -> Option<u32> {
        self.mark
    }

    /// When the packet was received; the kernel leaves it out on the output hook, where the
    /// caller should use the time it read the message.
    pub fn timestamp(&self) -> Option<SystemTime> {
        let (sec, usec) = self.timestamp?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(sec).checked_add(Duration::from_micros(usec))?)
    }

    /// Input interface index.
    pub fn indev(&self) -> Option<u32> {
        self.indev
    }

    /// Output interface index.
    pub fn outdev(&self) -> Option<u32> {
        self.outdev
    }

    /// Physical input interface index (bridged packets).
    pub fn physindev(&self) -> Option<u32> {
        self.physindev
    }

    /// Physical output interface index (bridged packets).
    pub fn physoutdev(&self) -> Option<u32> {
        self.physoutdev
    }

    /// The source hardware address, when the packet has one (input side).
    pub fn hwaddr(&self) -> Option<&'a [u8]> {
        self.hwaddr
    }

    /// The copied packet bytes, from the network header on, at most the copy range.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Owner uid of the sending socket, when the rule asks for it (`log flags skuid`).
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// Owner gid of the sending socket.
    pub fn gid(&self) -> Option<u32> {
        self.gid
    }

    /// Per-group sequence number (`NFULNL_CFG_F_SEQ`).
    pub fn seq(&self) -> Option<u32> {
        self.seq
    }

    /// Sequence number across all groups (`NFULNL_CFG_F_SEQ_GLOBAL`).
    pub fn seq_global(&self) -> Option<u32> {
        self.seq_global
    }

    /// The device's hardware type (`ARPHRD_*`).
    pub fn hwtype(&self) -> Option<u16> {
        self.hwtype
    }

    /// The link-layer header, when the packet has one.
    pub fn hwheader(&self) -> Option<&'a [u8]> {
        self.hwheader
    }

    /// Length of the link-layer header.
    pub fn hwlen(&self) -> Option<u16> {
        self.hwlen
    }

    /// The conntrack entry as nested `ctnetlink` attributes (`NFULNL_CFG_F_CONNTRACK`), raw.
    pub fn ct(&self) -> Option<&'a [u8]> {
        self.ct
    }

    /// The conntrack state (`enum ip_conntrack_info`).
    pub fn ct_info(&self) -> Option<u32> {
        self.ct_info
    }

    /// The VLAN tag (bridge family).
    pub fn vlan(&self) -> Option<Vlan> {
        self.vlan
    }

    /// The full layer-2 header (bridge family).
    pub fn l2hdr(&self) -> Option<&'a [u8]> {
        self.l2hdr
    }

    /// Addresses, protocol, ports and ICMP type of the copied packet; `None` when the payload
    /// is not an IP packet or too short to hold the destination address.
    pub fn headers(&self) -> Option<Headers> {
        Headers::parse(self.payload)
    }
}

fn parse_vlan(value: &[u8]) -> Result<Vlan, Error> {
    let mut vlan = Vlan {
        proto: None,
        tci: None,
    };
    for nla in NlasIterator::new(value) {
        let nla: NlaBuffer<&[u8]> = nla.map_err(decode_error)?;
        match nla.kind() & NLA_TYPE_MASK {
            NFULA_VLAN_PROTO => vlan.proto = Some(be16(nla.value(), "VLAN_PROTO")?),
            NFULA_VLAN_TCI => vlan.tci = Some(be16(nla.value(), "VLAN_TCI")?),
            _ => {}
        }
    }
    Ok(vlan)
}

/// An attribute's type (flags masked off) and its value, borrowed for the datagram's lifetime
/// (`NlaBuffer::value` borrows the buffer wrapper instead).
fn split_nla(nla: NlaBuffer<&[u8]>) -> (u16, &[u8]) {
    let kind = nla.kind() & NLA_TYPE_MASK;
    let len = usize::from(nla.length());
    // new_checked guaranteed 4 <= len <= buffer length.
    let value = nla.into_inner().get(4..len).unwrap_or_default();
    (kind, value)
}

fn trim_nuls(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., 0] = s {
        s = rest;
    }
    s
}

fn be16(v: &[u8], what: &str) -> Result<u16, Error> {
    let b: [u8; 2] = v.try_into().map_err(|_| bad_len(what))?;
    Ok(u16::from_be_bytes(b))
}

fn be32(v: &[u8], what: &str) -> Result<u32, Error> {
    let b: [u8; 4] = v.try_into().map_err(|_| bad_len(what))?;
    Ok(u32::from_be_bytes(b))
}

fn be64(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[..8]);
    u64::from_be_bytes(b)
}

fn protocol(what: &str) -> Error {
    Error::new(ErrorKind::Protocol, what)
}

fn bad_len(attribute: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("NFULA_{attribute} attribute has the wrong length"),
    )
}

fn decode_error(e: netlink_packet_core::DecodeError) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("malformed netlink message: {e}"),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds NFLOG packet messages the way the kernel lays them out, for tests of the parser.
    #[derive(Default)]
    pub(crate) struct PacketMessage {
        pub attrs: Vec<(u16, Vec<u8>)>,
        pub family: u8,
        pub group: u16,
    }

    impl PacketMessage {
        pub fn attr(mut self, kind: u16, value: impl Into<Vec<u8>>) -> Self {
            self.attrs.push((kind, value.into()));
            self
        }

        pub fn encode(&self, out: &mut Vec<u8>) {
            let nlas: Vec<_> = self
                .attrs
                .iter()
                .map(|(k, v)| DefaultNla::new(*k, v.clone()))
                .collect();
            let len = NETLINK_HEADER_LEN + NFGENMSG_LEN + nlas.as_slice().buffer_len();
            let start = out.len();
            out.resize(start + len, 0);
            let mut header = NetlinkHeader::default();
            header.length = len as u32;
            header.message_type = (SUBSYS_ULOG << 8) | MSG_PACKET;
            header.emit(&mut out[start..start + NETLINK_HEADER_LEN]);
            let g = self.group.to_be_bytes();
            out[start + 16..start + 20].copy_from_slice(&[self.family, 0, g[0], g[1]]);
            nlas.as_slice().emit(&mut out[start + 20..]);
        }
    }

    fn done_message(out: &mut Vec<u8>) {
        let mut header = NetlinkHeader::default();
        header.length = 20;
        header.message_type = NLMSG_DONE;
        header.flags = 2; // NLM_F_MULTIPART
        let start = out.len();
        out.resize(start + 20, 0);
        header.emit(&mut out[start..start + 16]);
        // nfgenmsg: AF_INET, version 0, group 100 — which a DoneBuffer would misread as errno.
        out[start + 16..start + 20].copy_from_slice(&[2, 0, 0, 100]);
    }

    #[test]
    fn config_round_trips() {
        let config = Config {
            family: 0,
            group: 100,
            command: Some(Command::Bind),
            copy: Some((CopyMode::Packet, 256)),
            nlbufsiz: Some(65536),
            timeout: Some(1),
            qthresh: Some(1),
            flags: Some(FLAG_SEQ),
        };
        let mut out = Vec::new();
        config.encode(7, &mut out);
        assert_eq!(out.len() % 4, 0);
        // Header: type 0x0401, flags REQUEST|ACK, seq 7; nfgenmsg group 100 big-endian.
        assert_eq!(&out[4..6], &[0x01, 0x04]);
        assert_eq!(&out[6..8], &[0x05, 0x00]);
        assert_eq!(&out[8..12], &7u32.to_ne_bytes());
        assert_eq!(&out[16..20], &[0, 0, 0, 100]);
        // The command attribute: len 5, type 1, value 1 (bind), padded.
        assert_eq!(&out[20..28], &[5, 0, 1, 0, 1, 0, 0, 0]);
        // The mode attribute: range big-endian then mode.
        assert_eq!(&out[28..40], &[10, 0, 2, 0, 0, 0, 1, 0, 2, 0, 0, 0]);
        assert_eq!(Config::decode(&out).unwrap(), config);
    }

    #[test]
    fn packet_attributes_are_big_endian() {
        let mut hw = vec![0, 6, 0, 0];
        hw.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        let mut ts = 1_700_000_000u64.to_be_bytes().to_vec();
        ts.extend_from_slice(&250_000u64.to_be_bytes());
        let mut vlan = Vec::new();
        vlan.extend_from_slice(&[6, 0, 1, 0, 0x81, 0x00, 0, 0]);
        vlan.extend_from_slice(&[6, 0, 2, 0, 0x00, 0x2a, 0, 0]);
        let msg = PacketMessage {
            family: 2,
            group: 100,
            ..Default::default()
        }
        .attr(NFULA_PACKET_HDR, [0x08, 0x00, 3, 0])
        .attr(NFULA_MARK, 0x0102_0304u32.to_be_bytes())
        .attr(NFULA_TIMESTAMP, ts)
        .attr(NFULA_IFINDEX_OUTDEV, 5u32.to_be_bytes())
        .attr(NFULA_IFINDEX_INDEV, 4u32.to_be_bytes())
        .attr(NFULA_IFINDEX_PHYSINDEV, 6u32.to_be_bytes())
        .attr(NFULA_IFINDEX_PHYSOUTDEV, 7u32.to_be_bytes())
        .attr(NFULA_HWADDR, hw)
        .attr(NFULA_PREFIX, &b"TEROK_SHIELD_DENIED: \0"[..])
        .attr(NFULA_PAYLOAD, [0x45, 0, 0, 20])
        .attr(NFULA_UID, 1000u32.to_be_bytes())
        .attr(NFULA_GID, 1001u32.to_be_bytes())
        .attr(NFULA_SEQ, 41u32.to_be_bytes())
        .attr(NFULA_SEQ_GLOBAL, 9u32.to_be_bytes())
        .attr(NFULA_HWTYPE, 1u16.to_be_bytes())
        .attr(NFULA_HWLEN, 14u16.to_be_bytes())
        .attr(NFULA_HWHEADER, [1u8; 14])
        .attr(NFULA_CT, [4, 0, 1, 0])
        .attr(NFULA_CT_INFO, 2u32.to_be_bytes())
        .attr(NFULA_VLAN | 0x8000, vlan)
        .attr(NFULA_L2HDR, [9u8; 18])
        .attr(99, [1, 2, 3]);
        let mut datagram = Vec::new();
        msg.encode(&mut datagram);
        done_message(&mut datagram);
        let frames: Vec<_> = frames(&datagram).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], Frame::Done);
        let Frame::Packet(p) = frames[0] else {
            panic!("not a packet: {:?}", frames[0]);
        };
        assert_eq!((p.family(), p.group()), (2, 100));
        assert_eq!((p.hw_protocol(), p.hook()), (Some(0x0800), Some(3)));
        assert_eq!(p.mark(), Some(0x0102_0304));
        assert_eq!(
            p.timestamp(),
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000))
        );
        assert_eq!((p.indev(), p.outdev()), (Some(4), Some(5)));
        assert_eq!((p.physindev(), p.physoutdev()), (Some(6), Some(7)));
        assert_eq!(p.hwaddr(), Some(&[2, 0, 0, 0, 0, 1][..]));
        assert_eq!(p.prefix(), b"TEROK_SHIELD_DENIED: ");
        assert_eq!(p.payload(), &[0x45, 0, 0, 20]);
        assert_eq!((p.uid(), p.gid()), (Some(1000), Some(1001)));
        assert_eq!((p.seq(), p.seq_global()), (Some(41), Some(9)));
        assert_eq!((p.hwtype(), p.hwlen()), (Some(1), Some(14)));
        assert_eq!(p.hwheader(), Some(&[1u8; 14][..]));
        assert_eq!((p.ct(), p.ct_info()), (Some(&[4, 0, 1, 0][..]), Some(2)));
        assert_eq!(
            p.vlan(),
            Some(Vlan {
                proto: Some(0x8100),
                tci: Some(42)
            })
        );
        assert_eq!(p.l2hdr(), Some(&[9u8; 18][..]));
    }

    #[test]
    fn acks_and_failures() {
        let mut datagram = vec![0u8; 36];
        let mut header = NetlinkHeader::default();
        header.length = 36;
        header.message_type = NLMSG_ERROR;
        header.sequence_number = 3;
        header.emit(&mut datagram[..16]);
        datagram[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            frames(&datagram).next().unwrap().unwrap(),
            Frame::Failure {
                seq: 3,
                errno: libc::EPERM
            }
        );
        datagram[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(
            frames(&datagram).next().unwrap().unwrap(),
            Frame::Ack { seq: 3 }
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut datagram = Vec::new();
        PacketMessage::default()
            .attr(NFULA_MARK, [1, 2, 3])
            .encode(&mut datagram);
        assert!(frames(&datagram).next().unwrap().is_err());
        assert!(frames(&[1, 2, 3]).next().unwrap().is_err());
        let mut short = datagram.clone();
        short[0] = 200;
        let all: Vec<_> = frames(&short).collect();
        assert_eq!(all.len(), 1);
        assert!(all[0].is_err());
    }
}
