//! The subscription: a `NETLINK_NETFILTER` socket bound to one NFLOG group (Linux only).
//!
//! Everything that touches the kernel lives here; the codec and the packet parser it feeds are
//! pure. The socket is configured for latency and for honesty about losses: a queue threshold
//! of 1 (the kernel's default instance batches up to 100 packets or a second), per-group
//! sequence numbers (a gap is a loss), and a large receive buffer grown on overrun.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use rustix::net::sockopt::{self, Timeout};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::batch::{Batch, Decoder, Message, Stats};
use crate::error::{Error, ErrorKind};
use crate::wire::{frames, Command, Config, CopyMode, Frame, FLAG_SEQ};

/// The largest datagram the kernel sends us: one batch is at most `nlbufsiz` (≤ 128 KiB) or
/// one packet of at most 64 KiB copy range plus metadata.
const DATAGRAM_MAX: usize = 256 * 1024;
/// How long `open` waits for the kernel to acknowledge the bind; it answers synchronously, so
/// this only matters when the ack itself was lost to an overrun.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const BIND_SEQ: u32 = 1;
/// Datagrams one `recvmmsg(2)` call takes at most.
const SLOTS: usize = 64;
/// A batch stops growing once it holds this many bytes (about 600 small logged packets).
const BATCH_BYTES: usize = 256 * 1024;

/// Bytes one read slot needs for a message of our group: the copied packet bytes (the kernel
/// takes 0 as its maximum, 65 535) plus room for the metadata attributes, which take a few
/// hundred bytes (the prefix at most 128). A longer datagram comes back cut and is counted.
fn slot_size(copy_range: u32) -> usize {
    let copy = if copy_range == 0 {
        0xffff
    } else {
        copy_range.min(0xffff)
    };
    copy as usize + 4096
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
    /// thread; [`Subscription::interfaces`] does so from any thread. To open in a namespace and
    /// keep the thread in its own, use [`Builder::open_in`] instead.
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
        self.open_here()
    }

    /// Opens the socket and binds the group in the calling thread's current namespace.
    pub(crate) fn open_here(&self) -> Result<Subscription, Error> {
        self.finish(self.request_here()?)
    }

    /// The privileged half of [`Builder::open`], in the calling thread's current namespace:
    /// opens the `NETLINK_NETFILTER` socket, sizes its receive buffer (`SO_RCVBUFFORCE` needs
    /// `CAP_NET_ADMIN`), sends the bind request (the kernel needs `CAP_NET_ADMIN` of the
    /// sender) and notes which socket holds the group afterwards. Reads nothing from the
    /// socket: the kernel's answer, and any packet logged right after the bind, wait in its
    /// queue for [`Builder::finish`], which may run in another process that received the
    /// descriptors ([`BindRequest::into_parts`]). Also opens the socket that resolves interface
    /// names in this namespace ([`Interfaces`]).
    ///
    /// Errors: [`ErrorKind::NoNetlink`], [`ErrorKind::Io`].
    pub fn request_here(&self) -> Result<BindRequest, Error> {
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
        let names = Interfaces::socket()?;
        force_recv_buffer(&socket, self.recv_initial);
        let config = Config {
            group: self.group,
            command: Some(Command::Bind),
            copy: Some((CopyMode::Packet, self.copy_range)),
            qthresh: Some(1),
            flags: Some(FLAG_SEQ),
            ..Config::default()
        };
        let mut request = Vec::new();
        config.encode(BIND_SEQ, &mut request);
        socket
            .send(&request, 0)
            .map_err(|e| Error::io(ErrorKind::Io, "sending the NFLOG bind request", e))?;
        // The kernel handles the request within the send: the listing now names the group's
        // holder, ours or (when the bind was refused) another socket's.
        let held_by = group_holder(self.group).filter(|&port| port != addr.port_number());
        Ok(BindRequest {
            // SAFETY: `into_raw_fd` gives up the socket's ownership of the descriptor.
            socket: unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) },
            names,
            held_by,
        })
    }

    /// The unprivileged half of [`Builder::open`]: waits on a socket made by
    /// [`Builder::request_here`] (maybe in another process and another namespace, the
    /// descriptors passed over a UNIX socket) for the kernel's answer to the bind, and returns
    /// the subscription. Packets that arrived before the answer are kept, not lost. Needs no
    /// capability; the builder's group, copy range and buffer ceiling must be those the request
    /// was made with.
    ///
    /// Errors: [`ErrorKind::PermissionDenied`] (whether another socket holds the group, as the
    /// request saw it), [`ErrorKind::Protocol`], [`ErrorKind::Io`].
    pub fn finish(&self, request: BindRequest) -> Result<Subscription, Error> {
        let BindRequest {
            socket,
            names,
            held_by,
        } = request;
        // SAFETY: the descriptor is owned (moved out of an OwnedFd), so nothing else closes it.
        let socket = unsafe { Socket::from_raw_fd(socket.into_raw_fd()) };
        let mut addr = netlink_sys::SocketAddr::new(0, 0);
        socket
            .get_address(&mut addr)
            .map_err(|e| Error::io(ErrorKind::Io, "reading the netlink socket's address", e))?;
        let mut sub = Subscription {
            socket,
            group: self.group,
            port_id: addr.port_number(),
            buf: vec![0; DATAGRAM_MAX],
            early: VecDeque::new(),
            slots: vec![0; SLOTS * slot_size(self.copy_range)],
            slot: slot_size(self.copy_range),
            overrun: false,
            drops_unread: false,
            drops: None,
            recv_max: self.recv_max,
            stats: Stats::default(),
            batch: Batch::new(),
            decoder: Decoder::new(),
            interfaces: Interfaces {
                socket: Arc::new(names),
            },
        };
        sub.stats.recv_buffer = sub.socket.get_rx_buf_sz().unwrap_or(0);
        sub.set_timeout(Some(ACK_TIMEOUT))?;
        sub.await_bind(held_by)?;
        sub.set_timeout(self.read_timeout)?;
        // Only the bind needs room for any datagram; after it, reads go through the slots.
        sub.buf = Vec::new();
        Ok(sub)
    }
}

/// A `NETLINK_NETFILTER` socket on which a bind request was sent, the kernel's answer waiting
/// in its queue, and a socket of the same namespace for interface names: what
/// [`Builder::request_here`] (or [`Builder::request_in`]) makes and [`Builder::finish`] turns into
/// a [`Subscription`]. A process that holds the capabilities can make it and hand the
/// descriptors to one that holds none.
#[derive(Debug)]
pub struct BindRequest {
    socket: OwnedFd,
    names: OwnedFd,
    held_by: Option<u32>,
}

impl BindRequest {
    /// The netlink socket, the interface-name socket, and the port id of another socket that
    /// held the group when the request was sent (the bind is then refused).
    pub fn into_parts(self) -> (OwnedFd, OwnedFd, Option<u32>) {
        (self.socket, self.names, self.held_by)
    }

    /// The parts of [`BindRequest::into_parts`], received from elsewhere. `socket` must be the
    /// netlink socket of a request made with the same builder settings, `names` any socket of
    /// the same network namespace.
    pub fn from_parts(socket: OwnedFd, names: OwnedFd, held_by: Option<u32>) -> BindRequest {
        BindRequest {
            socket,
            names,
            held_by,
        }
    }
}

/// A bound NFLOG group: read it with [`Subscription::recv`], or with
/// [`Subscription::recv_batch`] and a [`Decoder`] on another thread. Dropping it releases the
/// group.
#[derive(Debug)]
pub struct Subscription {
    socket: Socket,
    group: u16,
    port_id: u32,
    /// Room for the bind's acknowledgement and whatever arrives with it.
    buf: Vec<u8>,
    /// Datagrams with packets that arrived before the bind was acknowledged.
    early: VecDeque<Vec<u8>>,
    /// `SLOTS` read slots of `slot` bytes each, for `recvmmsg`.
    slots: Vec<u8>,
    slot: usize,
    /// The kernel reported ENOBUFS since the last batch was filled.
    overrun: bool,
    /// The kernel may have dropped messages since the drop counter was last read.
    drops_unread: bool,
    /// The last raw value of the kernel's drop counter (`None`: never read, or unreadable).
    drops: Option<u32>,
    recv_max: usize,
    stats: Stats,
    /// What [`Subscription::recv`] reads into and decodes with.
    batch: Batch,
    decoder: Decoder,
    interfaces: Interfaces,
}

impl Subscription {
    /// Options with their defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Blocks for the next datagrams and delivers each message in them, in order: what
    /// [`recv_batch`](Subscription::recv_batch) reads, decoded on this thread.
    ///
    /// May return having delivered nothing: the read timeout expired, or a signal interrupted
    /// the wait. An overrun (`ENOBUFS`) is not an error: it grows the buffer and shows up as
    /// [`Message::Lost`]. Use either this or `recv_batch` with a decoder of your own, not both.
    pub fn recv(&mut self, on: &mut dyn FnMut(Message<'_>)) -> Result<(), Error> {
        let mut batch = std::mem::take(&mut self.batch);
        let result = self.recv_batch(&mut batch);
        self.decoder.decode(&batch, on);
        self.batch = batch;
        result
    }

    /// Replaces `batch`'s content with every datagram queued on the socket, waiting (up to the
    /// read timeout) for the first one. Does nothing per packet but copy it out, so the thread
    /// calling this keeps the kernel's queue short while a [`Decoder`] elsewhere does the rest.
    ///
    /// Reads with `recvmmsg(2)`, up to 64 datagrams per call, until the queue is empty or the
    /// batch holds about 256 KiB. When the queue was found empty after the kernel reported an
    /// overrun, the batch also carries the kernel's count of dropped messages, so the decoder
    /// can count the losses at once. The batch may come back empty: the timeout expired, a
    /// signal interrupted the wait, or it carries only news of a loss ([`Batch::is_news`]).
    pub fn recv_batch(&mut self, batch: &mut Batch) -> Result<(), Error> {
        self.fill(batch, true)
    }

    /// Like [`recv_batch`](Subscription::recv_batch), but never waits: for a thread that polls
    /// the descriptor ([`AsFd`]) of one or many subscriptions.
    pub fn try_recv_batch(&mut self, batch: &mut Batch) -> Result<(), Error> {
        self.fill(batch, false)
    }

    /// The decoder for this subscription's batches, starting where the group starts (sequence
    /// number 0). One per subscription, fed every batch in order.
    pub fn decoder(&self) -> Decoder {
        Decoder::new()
    }

    fn fill(&mut self, batch: &mut Batch, wait: bool) -> Result<(), Error> {
        batch.clear();
        batch.received = Some(SystemTime::now());
        while let Some(datagram) = self.early.pop_front() {
            batch.push(&datagram);
        }
        let mut waiting = wait && batch.is_empty();
        let mut dry = false;
        while batch.bytes() < BATCH_BYTES {
            let flags = if waiting {
                libc::MSG_WAITFORONE
            } else {
                libc::MSG_DONTWAIT
            };
            match self.read_slots(batch, flags) {
                Ok(n) => {
                    waiting = false;
                    if n < SLOTS {
                        // recvmmsg stops at the first read that finds nothing (or fails; an
                        // ENOBUFS is then kept for the next call).
                        dry = true;
                        break;
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOBUFS) => {
                        self.stats.overruns += 1;
                        self.overrun = true;
                        self.drops_unread = true;
                        self.grow_recv_buffer();
                        // The queue is full: read on, but never wait after an overrun.
                        waiting = false;
                    }
                    Some(libc::EAGAIN) => {
                        dry = !waiting;
                        break;
                    }
                    Some(libc::EINTR) if waiting => break,
                    Some(libc::EINTR) => {}
                    _ => {
                        return Err(Error::io(ErrorKind::Io, "reading the NFLOG socket", e)
                            .with_group(self.group))
                    }
                },
            }
        }
        if batch.received.is_some() && batch.is_empty() && !dry {
            // Woken by the timeout or a signal: nothing was read.
            batch.received = None;
        }
        batch.overrun = std::mem::take(&mut self.overrun);
        batch.dry = dry;
        if dry && self.drops_unread {
            // Everything the kernel queued before this moment has been read; what it dropped
            // is in the counter, including the end of a flood that no later packet follows.
            self.drops_unread = false;
            batch.kernel_drops = self.kernel_drops();
        }
        Ok(())
    }

    /// One `recvmmsg(2)` into the slots; the datagrams read are appended to `batch`.
    fn read_slots(&mut self, batch: &mut Batch, flags: libc::c_int) -> io::Result<usize> {
        let slot = self.slot;
        let base = self.slots.as_mut_ptr();
        let mut iov: [libc::iovec; SLOTS] = std::array::from_fn(|i| libc::iovec {
            // In bounds: `slots` holds SLOTS slots of `slot` bytes.
            iov_base: base.wrapping_add(i * slot).cast(),
            iov_len: slot,
        });
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
        let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        for (msg, iov) in msgs.iter_mut().zip(iov.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one iovec of `slot` writable bytes inside `slots`,
        // which outlives the call; no name or control buffer is passed.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                SLOTS as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Err(io::Error::last_os_error());
        };
        for (i, msg) in msgs[..n].iter().enumerate() {
            self.stats.datagrams += 1;
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                // Longer than the copy range allows; cannot happen for messages of our group.
                batch.truncated += 1;
                continue;
            }
            let start = i * slot;
            let len = (msg.msg_len as usize).min(slot);
            batch.push(&self.slots[start..start + len]);
        }
        Ok(n)
    }

    /// The kernel's count of messages it dropped for want of room in this socket's queue
    /// (`SO_MEMINFO`, `SK_MEMINFO_DROPS`; kept 64-bit across the kernel's 32-bit wrap), or
    /// `None` where the kernel does not tell (an old kernel).
    fn kernel_drops(&mut self) -> Option<u64> {
        let mut info = [0u32; 16];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: info is a writable buffer of `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let index = libc::SK_MEMINFO_DROPS as usize;
        if rc != 0 || (len as usize) < (index + 1) * 4 {
            return None;
        }
        let raw = info[index];
        let previous = self.drops.replace(raw).unwrap_or(0);
        self.stats.kernel_drops += u64::from(raw.wrapping_sub(previous));
        Some(self.stats.kernel_drops)
    }

    /// Counters since the subscription was opened.
    ///
    /// `packets`, `lost` and `malformed` count what [`Subscription::recv`] decoded; with
    /// [`recv_batch`](Subscription::recv_batch), the [`Decoder`]'s own stats have them.
    pub fn stats(&self) -> Stats {
        let decoded = self.decoder.stats();
        Stats {
            packets: decoded.packets,
            lost: decoded.lost,
            malformed: decoded.malformed,
            ..self.stats
        }
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

    /// Waits for the kernel's answer to the bind request [`Builder::request_here`] sent (one
    /// request carries every setting, so the group is never live without sequence numbers for
    /// longer than the kernel's own call). Packets queued before the answer are kept.
    fn await_bind(&mut self, held_by: Option<u32>) -> Result<(), Error> {
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
                    self.overrun = true;
                    self.drops_unread = true;
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
                Some(Err(errno)) => return Err(self.bind_error(errno, held_by)),
            }
        }
    }

    fn bind_error(&self, errno: i32, held_by: Option<u32>) -> Error {
        let cause = io::Error::from_raw_os_error(errno);
        let context = "binding the NFLOG group";
        match errno {
            libc::EPERM => {
                let holder = held_by.filter(|&port| port != self.port_id);
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
        force_recv_buffer(&self.socket, bytes);
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

/// Sets the receive buffer, bypassing `rmem_max` when we may (`SO_RCVBUFFORCE` needs
/// CAP_NET_ADMIN), else as large as the system allows.
fn force_recv_buffer(socket: &Socket, bytes: usize) {
    // The kernel takes an int and doubles it; stay where doubling cannot overflow.
    let value = bytes.min(i32::MAX as usize / 2);
    if sockopt::set_socket_recv_buffer_size_force(socket, value).is_err() {
        // Best effort: a smaller buffer only means earlier (reported) overruns.
        let _ = sockopt::set_socket_recv_buffer_size(socket, value);
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
        Ok(Interfaces {
            socket: Arc::new(Interfaces::socket()?),
        })
    }

    /// A socket of the calling thread's namespace, for `SIOCGIFNAME`.
    fn socket() -> Result<OwnedFd, Error> {
        rustix::net::socket_with(
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
