//! The nflog source: packets the kernel logged to the NFLOG group become `nflog` events, named
//! from the container's own domain cache; lost packets become `watch`/`nflog_overrun` notices.
//!
//! Two threads, whatever the number of containers:
//! - `nflog` ([`NflogThread`]) holds one socket per container's network namespace, made inside
//!   that namespace, and polls them all. It is the thread that may keep capabilities (to enter
//!   containers that start later), so it only copies datagrams out, in batches.
//! - `nflog-events` ([`NflogEvents`]) holds none: it decodes each batch with its container's
//!   decoder, counts losses and builds the events.
//!
//! A socket belongs to a namespace, not to a dnsmasq: terok-shield restarts a container's
//! dnsmasq on every live allow or deny, in the same namespace, and the socket stays open across
//! it (closing and re-binding would lose what arrives in between).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{PollFd, PollFlags, Timespec};
use shield_dnsmasq::DomainCache;
use shield_event::map::nflog::{lost_packets, name_destination, packet_event, LoggedPacket};
use shield_event::{format_timestamp, now_timestamp, Source};
use shield_nflog::{Batch, Decoder, ErrorKind, Headers, Interfaces, Message, Packet, Subscription};

use crate::confine::Confinement;
use crate::output::Msg;
use crate::summary::Summary;

/// After a round that read fewer datagrams than this, the reader pauses for `COALESCE` before
/// polling again. A packet after a quiet spell is read at once; within a stream a packet waits
/// at most this long (plus the timer's slack), and a flood costs one wake-up per batch instead
/// of one per packet.
const COALESCE_BELOW: usize = 64;
const COALESCE: Duration = Duration::from_micros(200);
/// How many batches may wait between the two nflog threads before the reader blocks (a batch
/// holds up to about 256 KiB: up to about 64 MiB of logged packets wait here when the writer
/// is slow, on top of the kernel's buffers).
const QUEUED_BATCHES: usize = 256;
/// Emptied batches kept for reuse; more are freed.
const SPARE_BATCHES: usize = 8;
/// How often a group held by another listener is tried again.
const RETRY_HELD: Duration = Duration::from_secs(2);

/// Where a container's socket is made.
#[derive(Clone, Debug)]
pub enum Netns {
    /// shield-watch's own namespace (one container, no `--netns`).
    Current,
    /// `--netns PATH`, given by the operator.
    Path(PathBuf),
    /// The namespace of the container's dnsmasq (host-wide): never shield-watch's own.
    Dnsmasq(u32),
}

/// What the nflog thread is asked.
pub enum NflogCommand {
    /// Follow `name`'s group in `netns`; the answer says whether it runs, or why not.
    Open {
        /// The container.
        name: Arc<str>,
        /// Where its socket is made.
        netns: Netns,
        /// Its domain cache, when it has a query log.
        cache: Option<Arc<Mutex<DomainCache>>>,
        /// The answer.
        reply: Sender<Result<Opened, String>>,
    },
    /// Let go of `name`'s socket.
    Close(Arc<str>),
}

/// What an [`NflogCommand::Open`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// A socket was made and bound.
    New,
    /// The container's socket was already in that namespace (its dnsmasq restarted): kept.
    Kept,
    /// Another listener holds the group there; it is tried again until that one goes.
    Waiting(String),
}

/// When the nflog thread confines itself.
pub enum ConfineWhen {
    /// Before any socket: it keeps what entering containers that start later takes.
    Now(Confinement),
    /// After the first socket is made (one container: nothing is entered later).
    AfterFirstOpen(Confinement),
}

/// The `nflog` thread.
pub struct NflogThread {
    /// `--nflog-group`.
    pub group: u16,
    /// `--nflog-buffer`: the whole receive buffer is asked for at once (growing it later needs
    /// a capability that may be gone by then). A ceiling, not an allocation.
    pub buffer: usize,
    /// Datagrams go to the `nflog-events` thread.
    pub batches: Sender<ToEvents>,
    /// Emptied batches come back from it.
    pub spares: Receiver<Batch>,
    /// Whether a group held by another listener is tried again until it is free (host-wide,
    /// where this thread keeps the capability to bind); else that is an error.
    pub retry_held: bool,
}

/// One container's socket.
struct Socket {
    name: Arc<str>,
    /// The namespace it was made in (nsfs device and inode).
    ns: (u64, u64),
    subscription: Subscription,
}

/// A group another listener held when asked: tried again every [`RETRY_HELD`].
struct Held {
    name: Arc<str>,
    ns_file: Option<File>,
    cache: Option<Arc<Mutex<DomainCache>>>,
    next: Instant,
}

/// What the nflog thread hands the `nflog-events` thread, in order.
pub enum ToEvents {
    /// A container's socket is open: its decoder, interface names and domain cache.
    Add(
        Arc<str>,
        Decoder,
        Interfaces,
        Option<Arc<Mutex<DomainCache>>>,
    ),
    /// Datagrams read from that container's socket.
    Batch(Arc<str>, Batch),
    /// Its socket is closed.
    Remove(Arc<str>),
}

/// One end pair of a channel.
type Pair<T> = (Sender<T>, Receiver<T>);

/// The channel between the two nflog threads, and the one that returns emptied batches.
pub fn channels() -> (Pair<ToEvents>, Pair<Batch>) {
    (
        crossbeam_channel::bounded(QUEUED_BATCHES),
        crossbeam_channel::bounded(SPARE_BATCHES),
    )
}

impl NflogThread {
    /// Serves `queue` (woken through `wake`) until the event thread or the command queue goes.
    /// `confined` is told once this thread's confinement is in place, whenever that is.
    pub fn run(
        self,
        queue: Receiver<NflogCommand>,
        wake: Arc<OwnedFd>,
        confine: ConfineWhen,
        confined: Sender<()>,
    ) {
        // The namespace this thread comes back to after making each socket.
        let home = File::open("/proc/thread-self/ns/net");
        let mut after_first = match confine {
            ConfineWhen::Now(confinement) => {
                confinement.apply_here("nflog");
                let _ = confined.send(());
                None
            }
            ConfineWhen::AfterFirstOpen(confinement) => Some((confinement, confined)),
        };
        let home = match home {
            Ok(home) => home,
            Err(err) => {
                crate::diag::line(format_args!(
                    "nflog: cannot open this thread's network namespace: {err}; packets will not be shown"
                ));
                if let Some((confinement, confined)) = after_first.take() {
                    confinement.apply_here("nflog");
                    let _ = confined.send(());
                }
                return;
            }
        };
        let mut sockets: Vec<Socket> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        loop {
            let timeout = held
                .iter()
                .map(|h| h.next.saturating_duration_since(Instant::now()))
                .min()
                .map(|d| {
                    Timespec::try_from(d).unwrap_or(Timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    })
                });
            let mut fds = Vec::with_capacity(sockets.len() + 1);
            fds.push(PollFd::new(&*wake, PollFlags::IN));
            for s in &sockets {
                fds.push(PollFd::new(&s.subscription, PollFlags::IN));
            }
            if let Err(err) = rustix::event::poll(&mut fds, timeout.as_ref()) {
                if err != rustix::io::Errno::INTR {
                    crate::diag::line(format_args!("nflog: stopped: {err}"));
                    return;
                }
                continue;
            }
            let readable: Vec<usize> = fds
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, fd)| !fd.revents().is_empty())
                .map(|(i, _)| i - 1)
                .collect();
            let woken = !fds[0].revents().is_empty();
            drop(fds);
            let mut gone = Vec::new();
            let mut datagrams = 0;
            for i in readable {
                let s = &mut sockets[i];
                let mut batch = self.spares.try_recv().unwrap_or_default();
                if let Err(err) = s.subscription.try_recv_batch(&mut batch) {
                    crate::diag::line(format_args!("container {}: nflog: stopped: {err}", s.name));
                    gone.push(i);
                    continue;
                }
                datagrams += batch.len();
                if batch.is_news()
                    && self
                        .batches
                        .send(ToEvents::Batch(s.name.clone(), batch))
                        .is_err()
                {
                    // The event thread ended: stdout is closed.
                    return;
                }
            }
            for i in gone.into_iter().rev() {
                let s = sockets.swap_remove(i);
                let _ = self.batches.send(ToEvents::Remove(s.name));
            }
            if woken {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&*wake, &mut buf);
                loop {
                    let command = match queue.try_recv() {
                        Ok(command) => command,
                        Err(crossbeam_channel::TryRecvError::Empty) => break,
                        Err(crossbeam_channel::TryRecvError::Disconnected) => return,
                    };
                    match command {
                        NflogCommand::Open {
                            name,
                            netns,
                            cache,
                            reply,
                        } => {
                            held.retain(|h| h.name != name);
                            let answer =
                                self.open(&mut sockets, &mut held, name, netns, cache, &home);
                            if let Some((confinement, confined)) = after_first.take() {
                                confinement.apply_here("nflog");
                                let _ = confined.send(());
                            }
                            let _ = reply.send(answer);
                        }
                        NflogCommand::Close(name) => {
                            held.retain(|h| h.name != name);
                            if let Some(at) = sockets.iter().position(|s| s.name == name) {
                                sockets.swap_remove(at);
                                let _ = self.batches.send(ToEvents::Remove(name));
                            }
                        }
                    }
                }
            }
            self.retry_held(&mut sockets, &mut held, &home);
            if datagrams > 0 && datagrams < COALESCE_BELOW {
                // Packets are arriving one by one: let a few more gather so that the next read
                // (and everything downstream) is woken once for many, not once per packet.
                std::thread::sleep(COALESCE);
            }
        }
    }

    /// Makes `name`'s socket in `netns`, or keeps the one it has there already.
    fn open(
        &self,
        sockets: &mut Vec<Socket>,
        held: &mut Vec<Held>,
        name: Arc<str>,
        netns: Netns,
        cache: Option<Arc<Mutex<DomainCache>>>,
        home: &File,
    ) -> Result<Opened, String> {
        let ns_file = match &netns {
            Netns::Current => None,
            Netns::Path(path) => Some(File::open(path).map_err(|e| {
                format!(
                    "cannot open the network namespace {}: {e}; packets will not be shown",
                    path.display()
                )
            })?),
            Netns::Dnsmasq(pid) => {
                let file = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| {
                    format!("cannot open the network namespace of dnsmasq {pid}: {e}")
                })?;
                // terok-shield starts a container's dnsmasq inside the container's namespace,
                // never in ours. Whoever can write dnsmasq.pid can also start a process with the
                // right --conf-file= in the host's namespace; following it would read (and
                // hold) the host's NFLOG group under a container's name.
                if namespace_id(&file).is_none_or(|id| Some(id) == namespace_id(home)) {
                    return Err(format!(
                        "dnsmasq {pid} runs in shield-watch's own network namespace, not a container's: refused"
                    ));
                }
                Some(file)
            }
        };
        let ns = match &ns_file {
            Some(file) => namespace_id(file),
            None => namespace_id(home),
        }
        .unwrap_or_default();
        if let Some(at) = sockets.iter().position(|s| s.name == name) {
            if sockets[at].ns == ns {
                return Ok(Opened::Kept);
            }
            // Another namespace (the container was re-created): the old socket goes.
            let old = sockets.swap_remove(at);
            let _ = self.batches.send(ToEvents::Remove(old.name));
        }
        match self.subscribe(ns_file.as_ref(), home) {
            Ok(subscription) => {
                self.added(sockets, name, ns, subscription, cache);
                Ok(Opened::New)
            }
            Err(refused) if refused.held && self.retry_held => {
                let why = format!("{}; taken over when that listener goes", refused.why);
                held.push(Held {
                    name,
                    ns_file,
                    cache,
                    next: Instant::now() + RETRY_HELD,
                });
                Ok(Opened::Waiting(why))
            }
            Err(refused) => Err(format!("{}; packets will not be shown", refused.why)),
        }
    }

    fn added(
        &self,
        sockets: &mut Vec<Socket>,
        name: Arc<str>,
        ns: (u64, u64),
        subscription: Subscription,
        cache: Option<Arc<Mutex<DomainCache>>>,
    ) {
        let _ = self.batches.send(ToEvents::Add(
            name.clone(),
            subscription.decoder(),
            subscription.interfaces(),
            cache,
        ));
        sockets.push(Socket {
            name,
            ns,
            subscription,
        });
    }

    /// Tries again the groups another listener held; says once when one is taken over.
    fn retry_held(&self, sockets: &mut Vec<Socket>, held: &mut Vec<Held>, home: &File) {
        let now = Instant::now();
        let mut at = 0;
        while at < held.len() {
            if held[at].next > now {
                at += 1;
                continue;
            }
            match self.subscribe(held[at].ns_file.as_ref(), home) {
                Ok(subscription) => {
                    let h = held.swap_remove(at);
                    let ns = h
                        .ns_file
                        .as_ref()
                        .and_then(namespace_id)
                        .or_else(|| namespace_id(home))
                        .unwrap_or_default();
                    crate::diag::line(format_args!(
                        "container {}: nflog: took over NFLOG group {} (its other listener is gone)",
                        h.name, self.group
                    ));
                    self.added(sockets, h.name, ns, subscription, h.cache);
                }
                Err(refused) if refused.held => {
                    held[at].next = now + RETRY_HELD;
                    at += 1;
                }
                Err(refused) => {
                    let h = held.swap_remove(at);
                    crate::diag::line(format_args!(
                        "container {}: nflog: {}; packets will not be shown",
                        h.name, refused.why
                    ));
                }
            }
        }
    }

    /// Makes a socket bound to the group, in `ns` when given (entering it and coming back).
    fn subscribe(&self, ns: Option<&File>, home: &File) -> Result<Subscription, Refused> {
        let builder = Subscription::builder()
            .group(self.group)
            .recv_buffer(self.buffer, self.buffer);
        match ns {
            None => Ok(builder.open()?),
            Some(ns) => open_in(builder, ns, home),
        }
    }
}

/// Why a socket could not be made: whether another listener holds the group, and what to say.
struct Refused {
    held: bool,
    why: String,
}

impl From<shield_nflog::Error> for Refused {
    fn from(err: shield_nflog::Error) -> Refused {
        Refused {
            held: matches!(
                err.kind(),
                ErrorKind::PermissionDenied {
                    group_held_by: Some(_)
                }
            ),
            why: err.to_string(),
        }
    }
}

/// Enters `ns`, opens the socket, and comes back to `home`. Staying in a container's namespace
/// would put every later socket there too: not coming back ends the process.
fn open_in(
    builder: shield_nflog::Builder,
    ns: &File,
    home: &File,
) -> Result<Subscription, Refused> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).map_err(|err| {
        Refused {
            held: false,
            why: format!("cannot enter the container's network namespace: {err}"),
        }
    })?;
    let opened = builder.open();
    if let Err(err) = move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network)) {
        crate::diag::line(format_args!(
            "nflog: cannot return to its own network namespace: {err}"
        ));
        std::process::abort();
    }
    Ok(opened?)
}

/// A network namespace's identity: its nsfs device and inode.
fn namespace_id(ns: &File) -> Option<(u64, u64)> {
    ns.metadata().ok().map(|m| (m.dev(), m.ino()))
}

/// The `nflog-events` thread: every container's batches decoded with that container's decoder
/// and named from that container's cache only.
pub struct NflogEvents {
    /// Events go here.
    pub tx: Sender<Msg>,
    /// Shared counters.
    pub summary: Summary,
    /// `--show-multicast`: report packets to IPv6 link-local multicast (`ff02::/16`) too.
    pub show_link_multicast: bool,
}

/// What decoding one container's batches takes: its decoder (sequence numbers and losses),
/// interface names in its namespace, and its own domain cache.
type Decoding = (Decoder, Interfaces, Option<Arc<Mutex<DomainCache>>>);

impl NflogEvents {
    /// Decodes the batches in order until the reading thread ends or the writer is gone.
    /// Emptied batches go back to the reader through `spare`.
    pub fn run(self, batches: Receiver<ToEvents>, spare: Sender<Batch>) {
        let mut sockets: HashMap<Arc<str>, Decoding> = HashMap::new();
        // Interface indexes are only meaningful in the socket's namespace: `Interfaces` answers
        // for it from any thread. Names are looked up once per batch and index (one ioctl each).
        let names: RefCell<Vec<(u32, Option<String>)>> = RefCell::new(Vec::new());
        for message in batches {
            match message {
                ToEvents::Add(name, decoder, interfaces, cache) => {
                    sockets.insert(name, (decoder, interfaces, cache));
                }
                ToEvents::Remove(name) => {
                    sockets.remove(&name);
                }
                ToEvents::Batch(name, mut batch) => {
                    let Some((decoder, interfaces, cache)) = sockets.get_mut(&name) else {
                        continue;
                    };
                    names.borrow_mut().clear();
                    let ifname = |index: u32| {
                        let mut names = names.borrow_mut();
                        if let Some((_, name)) = names.iter().find(|(i, _)| *i == index) {
                            return name.clone();
                        }
                        let found = interfaces.name(index);
                        names.push((index, found.clone()));
                        found
                    };
                    let read_at = batch
                        .received()
                        .and_then(|t| jiff::Timestamp::try_from(t).ok())
                        .map(format_timestamp);
                    let mut closed = false;
                    decoder.decode(&batch, &mut |message| {
                        if closed {
                            return;
                        }
                        if let Some(event) = message_event_read_at(
                            message,
                            read_at.as_deref(),
                            &name,
                            cache.as_deref(),
                            &ifname,
                            &self.summary,
                            self.show_link_multicast,
                        ) {
                            closed = self.tx.send(Msg::Event(event, None)).is_err();
                        }
                    });
                    if closed {
                        return;
                    }
                    batch.clear();
                    let _ = spare.try_send(batch);
                }
            }
        }
    }
}

/// Whether `dest` is IPv6 link-local multicast (`ff02::/16`): MLD reports, router
/// solicitations, duplicate address detection. A container's own stack sends these, the
/// shield's ruleset logs them, and they are not connections anyone made.
fn is_link_local_multicast(dest: std::net::IpAddr) -> bool {
    matches!(dest, std::net::IpAddr::V6(v6) if v6.segments()[0] == 0xff02)
}

/// The event for one NFLOG message of `container`'s group: a packet, named from the
/// container's own domain cache, or a loss notice. `None` for a packet whose headers cannot be
/// parsed, or link-local multicast unless asked for (both counted). A packet that carries no
/// timestamp of its own (packets logged on output) gets `read_at`, the time its batch was read,
/// else the time the event is built.
pub fn message_event_read_at(
    message: Message<'_>,
    read_at: Option<&str>,
    container: &str,
    cache: Option<&Mutex<DomainCache>>,
    ifname: &dyn Fn(u32) -> Option<String>,
    summary: &Summary,
    show_link_multicast: bool,
) -> Option<shield_event::Event> {
    match message {
        Message::Packet(packet) => {
            let Some(headers) = packet.headers() else {
                summary.skip(container, Source::Nflog, "unparsable_packet");
                return None;
            };
            if !show_link_multicast && is_link_local_multicast(headers.dest) {
                summary.skip(container, Source::Nflog, "link_local_multicast");
                return None;
            }
            let ts = packet
                .timestamp()
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(format_timestamp)
                .or_else(|| read_at.map(str::to_string))
                .unwrap_or_else(now_timestamp);
            let logged = logged_packet(&packet, &headers);
            let mut event = packet_event(&logged, &ts, container, ifname);
            if let Some(cache) = cache {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(resolved) = cache.lookup(headers.dest) {
                    name_destination(&mut event, resolved.name, resolved.cname);
                }
            }
            Some(event)
        }
        Message::Lost { count } => {
            summary.overrun(container, count);
            Some(lost_packets(count, &now_timestamp(), container))
        }
    }
}

/// What the event mapping needs of a packet, read from the kernel's metadata and the headers.
fn logged_packet<'a>(packet: &Packet<'a>, headers: &Headers) -> LoggedPacket<'a> {
    LoggedPacket {
        prefix: packet.prefix(),
        src: headers.src,
        dest: headers.dest,
        proto: headers.proto,
        sport: headers.sport,
        dport: headers.dport,
        icmp: headers.icmp,
        fragment: headers.fragment,
        truncated: headers.truncated,
        indev: packet.indev(),
        outdev: packet.outdev(),
        uid: packet.uid(),
        gid: packet.gid(),
        mark: packet.mark(),
        hook: packet.hook(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_multicast_is_ff02_only() {
        for noise in ["ff02::16", "ff02::2", "ff02::1:ff00:1"] {
            assert!(is_link_local_multicast(noise.parse().unwrap()), "{noise}");
        }
        for real in ["ff05::2", "2001:db8::1", "192.0.2.1", "fe80::1"] {
            assert!(!is_link_local_multicast(real.parse().unwrap()), "{real}");
        }
    }
}
