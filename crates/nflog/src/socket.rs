//! The subscription: a `NETLINK_NETFILTER` socket bound to one NFLOG group (Linux only).
//!
//! Everything that touches the kernel lives here; the codec and the packet parser it feeds are
//! pure. The socket is configured for latency and for honesty about losses: a queue threshold
//! of 1 (the kernel's default instance batches up to 100 packets or a second), per-group
//! sequence numbers (a gap is a loss), and a large receive buffer grown on overrun.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use rustix::net::sockopt::{self, Timeout};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::error::{Error, ErrorKind};
use crate::wire::{frames, Command, Config, CopyMode, Frame, Packet, FLAG_SEQ};

/// The largest datagram the kernel sends us: one batch is at most `nlbufsiz` (≤ 128 KiB) or
/// one packet of at most 64 KiB copy range plus metadata.
const DATAGRAM_MAX: usize = 256 * 1024;
/// How long `open` waits for the kernel to acknowledge the bind; it answers synchronously, so
/// this only matters when the ack itself was lost to an overrun.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const BIND_SEQ: u32 = 1;

/// One thing [`Subscription::recv`] delivers.
// A packet borrows the datagram and lives for one callback on the stack; boxing it would
// allocate per packet to shrink a value nobody stores.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A logged packet.
    Packet(Packet<'a>),
    /// ENOBUFS or a sequence gap: packets lost in the kernel. `count` is how many when the
    /// sequence numbers tell (`None`: the socket overran and no later packet has shown the gap
    /// yet; if one does, a `Lost` with the count follows).
    Lost {
        /// Number of packets lost, when known.
        count: Option<u64>,
    },
}

/// Counters of a subscription since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams read from the socket.
    pub datagrams: u64,
    /// Packets delivered.
    pub packets: u64,
    /// Packets known lost (sum of sequence gaps).
    pub lost: u64,
    /// Times the kernel reported `ENOBUFS` (the receive buffer overran).
    pub overruns: u64,
    /// Messages the codec rejected (malformed, truncated datagrams, asynchronous errors).
    pub malformed: u64,
    /// The socket's receive buffer as the kernel reports it (`SO_RCVBUF`, bytes).
    pub recv_buffer: usize,
}

/// Options of a [`Subscription`]; start from [`Subscription::builder`].
///
/// | setting | default | why |
/// |---|---|---|
/// | [`group`](Builder::group) | 100 | the shield's `log group 100` |
/// | [`netns`](Builder::netns) | current | the container's namespace when given |
/// | [`copy_range`](Builder::copy_range) | 256 bytes | IPv6 + a chain of extension headers + transport header |
/// | [`recv_buffer`](Builder::recv_buffer) | 16 MiB, grown to 64 MiB | a burst of ~20 000 logged packets (≈ 840 bytes of kernel memory each) waits even for a starved reader; memory is used only while packets wait |
/// | [`read_timeout`](Builder::read_timeout) | none | `recv` blocks until a datagram arrives |
#[derive(Clone, Debug)]
pub struct Builder {
    group: u16,
    netns: Option<PathBuf>,
    copy_range: u32,
    recv_initial: usize,
    recv_max: usize,
    read_timeout: Option<Duration>,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            group: 100,
            netns: None,
            copy_range: 256,
            recv_initial: 16 << 20,
            recv_max: 64 << 20,
            read_timeout: None,
        }
    }
}

impl Builder {
    /// The NFLOG group to bind (default 100).
    pub fn group(mut self, group: u16) -> Builder {
        self.group = group;
        self
    }

    /// Bind in this network namespace (`/proc/PID/ns/net`, `/run/netns/NAME`) instead of the
    /// current one.
    ///
    /// [`Builder::open`] moves **the calling thread** into the namespace with `setns(2)` and
    /// leaves it there: run the subscription on a thread dedicated to it. The free function
    /// [`ifname`](crate::ifname) then resolves interface indexes in that namespace from that
    /// thread; [`Subscription::interfaces`] does so from any thread.
    pub fn netns(mut self, path: Option<PathBuf>) -> Builder {
        self.netns = path;
        self
    }

    /// How many bytes of each packet the kernel copies, from the network header (default 256).
    pub fn copy_range(mut self, bytes: u32) -> Builder {
        self.copy_range = bytes;
        self
    }

    /// Receive buffer: `initial` bytes, doubled on every overrun up to `max` (defaults 16 MiB and
    /// 64 MiB). As root the limit `net.core.rmem_max` is bypassed with `SO_RCVBUFFORCE`.
    pub fn recv_buffer(mut self, initial: usize, max: usize) -> Builder {
        self.recv_initial = initial;
        self.recv_max = max.max(initial);
        self
    }

    /// Makes [`Subscription::recv`] return (delivering nothing) after waiting this long, so the
    /// thread can look at a shutdown flag. `None` (default) waits indefinitely.
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Builder {
        self.read_timeout = timeout;
        self
    }

    /// Enters the namespace (if any), opens the socket and binds the group.
    ///
    /// Errors: [`ErrorKind::NoNetlink`] when the kernel has no netfilter netlink;
    /// [`ErrorKind::PermissionDenied`] (which says whether another socket holds the group or
    /// `CAP_NET_ADMIN` is missing); [`ErrorKind::Netns`]; [`ErrorKind::Io`].
    pub fn open(self) -> Result<Subscription, Error> {
        if let Some(path) = &self.netns {
            enter_netns(path)?;
        }
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| {
            let kind = match e.raw_os_error() {
                Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::ENOSYS) => {
                    ErrorKind::NoNetlink
                }
                _ => ErrorKind::Io,
            };
            Error::io(kind, "opening a NETLINK_NETFILTER socket", e)
        })?;
        let addr = socket
            .bind_auto()
            .map_err(|e| Error::io(ErrorKind::Io, "binding the netlink socket", e))?;
        let interfaces = Interfaces::new()?;
        let mut sub = Subscription {
            socket,
            group: self.group,
            port_id: addr.port_number(),
            buf: vec![0; DATAGRAM_MAX],
            early: VecDeque::new(),
            next_seq: None,
            overrun_pending: false,
            recv_max: self.recv_max,
            stats: Stats::default(),
            interfaces,
        };
        sub.set_recv_buffer(self.recv_initial);
        sub.set_timeout(Some(ACK_TIMEOUT))?;
        sub.bind(self.copy_range)?;
        sub.set_timeout(self.read_timeout)?;
        Ok(sub)
    }
}

/// A bound NFLOG group: read it with [`Subscription::recv`]. Dropping it releases the group.
#[derive(Debug)]
pub struct Subscription {
    socket: Socket,
    group: u16,
    port_id: u32,
    buf: Vec<u8>,
    /// Datagrams with packets that arrived before the bind was acknowledged.
    early: VecDeque<Vec<u8>>,
    /// The sequence number the next packet should carry, once one has been seen.
    next_seq: Option<u32>,
    /// The kernel reported ENOBUFS and no gap has told how many were lost yet.
    overrun_pending: bool,
    recv_max: usize,
    stats: Stats,
    interfaces: Interfaces,
}

impl Subscription {
    /// Options with their defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Blocks for the next datagram and delivers each message in it, in order.
    ///
    /// May return having delivered nothing: the read timeout expired, or a signal interrupted
    /// the wait. An overrun (`ENOBUFS`) is not an error: it grows the buffer and shows up as
    /// [`Message::Lost`].
    pub fn recv(&mut self, on: &mut dyn FnMut(Message<'_>)) -> Result<(), Error> {
        if let Some(datagram) = self.early.pop_front() {
            self.deliver(&datagram, on);
            return Ok(());
        }
        loop {
            // After an overrun, look without waiting: if the queue is dry, report the loss now
            // rather than when some later packet reveals the gap.
            let flags = libc::MSG_TRUNC
                | if self.overrun_pending {
                    libc::MSG_DONTWAIT
                } else {
                    0
                };
            let mut buf = std::mem::take(&mut self.buf);
            let result = self.socket.recv(&mut &mut buf[..], flags);
            match result {
                Ok(n) => {
                    let len = if n > buf.len() {
                        // Cannot happen with the sizes the kernel uses; the cut message is
                        // rejected by the codec and counted.
                        self.stats.malformed += 1;
                        buf.len()
                    } else {
                        n
                    };
                    self.deliver(&buf[..len], on);
                    self.buf = buf;
                    return Ok(());
                }
                Err(e) => {
                    self.buf = buf;
                    match e.raw_os_error() {
                        Some(libc::ENOBUFS) => {
                            self.stats.overruns += 1;
                            self.overrun_pending = true;
                            self.grow_recv_buffer();
                        }
                        Some(libc::EAGAIN) if self.overrun_pending => {
                            self.overrun_pending = false;
                            on(Message::Lost { count: None });
                            return Ok(());
                        }
                        Some(libc::EAGAIN | libc::EINTR) => return Ok(()),
                        _ => {
                            return Err(Error::io(ErrorKind::Io, "reading the NFLOG socket", e)
                                .with_group(self.group))
                        }
                    }
                }
            }
        }
    }

    /// Counters since the subscription was opened.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The bound group.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The socket's netlink port id (what `/proc/net/netfilter/nfnetlink_log` lists).
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Name of interface `index` in the subscription's network namespace.
    pub fn ifname(&self, index: u32) -> Option<String> {
        self.interfaces.name(index)
    }

    /// A handle that resolves interface names in the subscription's network namespace from any
    /// thread (it holds its own socket in that namespace).
    pub fn interfaces(&self) -> Interfaces {
        self.interfaces.clone()
    }

    fn deliver(&mut self, datagram: &[u8], on: &mut dyn FnMut(Message<'_>)) {
        self.stats.datagrams += 1;
        for frame in frames(datagram) {
            match frame {
                Ok(Frame::Packet(packet)) => {
                    if let Some(seq) = packet.seq() {
                        if let Some(expected) = self.next_seq {
                            let gap = seq.wrapping_sub(expected);
                            // Netlink delivers in order, so a "negative" gap is a restarted
                            // counter, not a loss.
                            if gap != 0 && gap < 1 << 31 {
                                self.stats.lost += u64::from(gap);
                                self.overrun_pending = false;
                                on(Message::Lost {
                                    count: Some(u64::from(gap)),
                                });
                            }
                        }
                        self.next_seq = Some(seq.wrapping_add(1));
                    }
                    self.stats.packets += 1;
                    on(Message::Packet(packet));
                }
                Ok(Frame::Failure { .. }) | Err(_) => self.stats.malformed += 1,
                Ok(_) => {}
            }
        }
    }

    /// Binds the group with the latency- and loss-conscious settings, in one request so the
    /// group is never live without sequence numbers for longer than the kernel's own call.
    fn bind(&mut self, copy_range: u32) -> Result<(), Error> {
        let config = Config {
            group: self.group,
            command: Some(Command::Bind),
            copy: Some((CopyMode::Packet, copy_range)),
            qthresh: Some(1),
            flags: Some(FLAG_SEQ),
            ..Config::default()
        };
        let mut request = Vec::new();
        config.encode(BIND_SEQ, &mut request);
        self.socket
            .send(&request, 0)
            .map_err(|e| Error::io(ErrorKind::Io, "sending the NFLOG bind request", e))?;
        // The instance counts from 0 from the moment it exists.
        self.next_seq = Some(0);
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let result = self.socket.recv(&mut &mut buf[..], 0);
            let n = match result {
                Ok(n) => n.min(buf.len()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    self.buf = buf;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Packets already flood the group; the ack may still be queued behind them.
                    self.stats.overruns += 1;
                    self.overrun_pending = true;
                    self.buf = buf;
                    continue;
                }
                Err(e) => {
                    self.buf = buf;
                    return Err(Error::io(
                        ErrorKind::Io,
                        "waiting for the kernel to acknowledge the NFLOG bind",
                        e,
                    )
                    .with_group(self.group));
                }
            };
            let datagram = &buf[..n];
            let mut answer = None;
            let mut has_packets = false;
            for frame in frames(datagram) {
                match frame {
                    Ok(Frame::Ack { seq: BIND_SEQ }) => answer = Some(Ok(())),
                    Ok(Frame::Failure {
                        seq: BIND_SEQ,
                        errno,
                    }) => answer = Some(Err(errno)),
                    Ok(Frame::Packet(_)) => has_packets = true,
                    _ => {}
                }
            }
            if has_packets {
                self.early.push_back(datagram.to_vec());
            }
            self.buf = buf;
            match answer {
                None => continue,
                Some(Ok(())) => return Ok(()),
                Some(Err(errno)) => return Err(self.bind_error(errno)),
            }
        }
    }

    fn bind_error(&self, errno: i32) -> Error {
        let cause = io::Error::from_raw_os_error(errno);
        let context = "binding the NFLOG group";
        match errno {
            libc::EPERM => {
                let holder = group_holder(self.group).filter(|&port| port != self.port_id);
                Error::io(
                    ErrorKind::PermissionDenied {
                        group_held_by: holder,
                    },
                    context,
                    cause,
                )
            }
            _ => Error::io(ErrorKind::Protocol, context, cause),
        }
        .with_group(self.group)
    }

    fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), Error> {
        sockopt::set_socket_timeout(&self.socket, Timeout::Recv, timeout).map_err(|e| {
            Error::io(
                ErrorKind::Io,
                "setting the socket read timeout",
                io::Error::from(e),
            )
        })
    }

    /// Sets the receive buffer, bypassing `rmem_max` when we may (`SO_RCVBUFFORCE` needs
    /// CAP_NET_ADMIN), else as large as the system allows.
    fn set_recv_buffer(&mut self, bytes: usize) {
        // The kernel takes an int and doubles it; stay where doubling cannot overflow.
        let value = bytes.min(i32::MAX as usize / 2);
        if sockopt::set_socket_recv_buffer_size_force(&self.socket, value).is_err() {
            // Best effort: a smaller buffer only means earlier (reported) overruns.
            let _ = sockopt::set_socket_recv_buffer_size(&self.socket, value);
        }
        self.stats.recv_buffer = self.socket.get_rx_buf_sz().unwrap_or(0);
    }

    fn grow_recv_buffer(&mut self) {
        // The kernel reports twice what was set (bookkeeping overhead); compare in its units.
        let current = self.stats.recv_buffer / 2;
        if current < self.recv_max {
            self.set_recv_buffer((current.max(4096) * 2).min(self.recv_max));
        }
    }
}

impl AsFd for Subscription {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Subscription {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Resolves interface indexes to names in one network namespace, from any thread.
///
/// Holds a datagram socket created in that namespace: the `SIOCGIFNAME` ioctl answers for the
/// socket's namespace, not the calling thread's.
#[derive(Clone, Debug)]
pub struct Interfaces {
    socket: Arc<OwnedFd>,
}

impl Interfaces {
    fn new() -> Result<Interfaces, Error> {
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| {
            Error::io(
                ErrorKind::Io,
                "opening a socket for interface names",
                io::Error::from(e),
            )
        })?;
        Ok(Interfaces {
            socket: Arc::new(socket),
        })
    }

    /// The name of interface `index`, `None` when there is no such interface (or its name is
    /// not UTF-8: then callers show the index).
    pub fn name(&self, index: u32) -> Option<String> {
        rustix::net::netdevice::index_to_name(&*self.socket, index).ok()
    }
}

/// Name of interface `index` in the calling thread's network namespace (what `if_indextoname(3)`
/// answers). After [`Builder::netns`] that is the subscription's namespace, on the thread that
/// opened it.
pub fn ifname(index: u32) -> Option<String> {
    Interfaces::new().ok()?.name(index)
}

fn enter_netns(path: &Path) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| {
        Error::io(
            ErrorKind::Netns,
            format!("opening network namespace {}", path.display()),
            e,
        )
    })?;
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|e| {
        Error::io(
            ErrorKind::Netns,
            format!("entering network namespace {}", path.display()),
            io::Error::from(e),
        )
    })
}

/// The port id bound to `group` in the calling thread's namespace, from
/// `/proc/thread-self/net/netfilter/nfnetlink_log` (`/proc/net` follows the process's main
/// thread, which may be in another namespace).
fn group_holder(group: u16) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_log").ok()?;
    parse_group_holder(&text, group)
}

/// Lines are `group portid qlen copy_mode copy_range flushtimeout use`.
fn parse_group_holder(text: &str, group: u16) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let g: u16 = fields.next()?.parse().ok()?;
        let port: u32 = fields.next()?.parse().ok()?;
        (g == group).then_some(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_listing_names_the_holder() {
        let text = "  100   4242     0 2   256    100  1\n    7  99999     3 1 65535      0  1\n";
        assert_eq!(parse_group_holder(text, 100), Some(4242));
        assert_eq!(parse_group_holder(text, 7), Some(99999));
        assert_eq!(parse_group_holder(text, 8), None);
        assert_eq!(parse_group_holder("garbage\n", 100), None);
    }

    #[test]
    fn loopback_is_index_one() {
        assert_eq!(ifname(1).as_deref(), Some("lo"));
        let names = Interfaces::new().unwrap();
        assert_eq!(names.name(1).as_deref(), Some("lo"));
        assert_eq!(names.name(0x7fff_fff0), None);
    }
}
