//! The nflog source: packets the kernel logged to the NFLOG group become `nflog` events, named
//! from the container's own domain cache; lost packets become `watch`/`nflog_overrun` notices.
//!
//! Two threads, whatever the number of containers:
//! - `nflog` ([`NflogThread`]) holds one socket per container's network namespace, made inside
//!   that namespace, and polls them all; it only copies datagrams out, in batches. With one
//!   container it makes its one socket itself before confining itself; host-wide it asks the
//!   privileged helper process for each ([`crate::helper`]) and holds no capability to enter.
//! - `nflog-events` ([`NflogEvents`]) holds none: it decodes each batch with its container's
//!   decoder, counts losses and builds the events.
//!
//! A socket belongs to a namespace, not to a dnsmasq: terok-shield restarts a container's
//! dnsmasq on every live allow or deny, in the same namespace, and the socket stays open across
//! it (closing and re-binding would lose what arrives in between).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::event::{PollFd, PollFlags, Timespec};
use shield_dnsmasq::DomainCache;
use shield_event::map::nflog::{
    is_ipv6_link_local_multicast, lost_packets, name_destination, packet_event, LoggedPacket,
};
use shield_event::{format_timestamp, now_timestamp, Source};
use shield_nflog::{
    Batch, Decoder, ErrorKind, Headers, Interfaces, Message, NamespaceId, Packet, Subscription,
};
use shield_watch_cli::privsep::{Namespace, Request};

use crate::confine::Confinement;
use crate::helper::{Answer, Gone, Helper};
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
    /// The namespace of the container's dnsmasq (host-wide): never shield-watch's own. The
    /// socket is made by the helper, which checks again that `pid`'s command line holds exactly
    /// `argument` (`--conf-file=ROOT/containers/NAME/dnsmasq.conf`).
    Dnsmasq {
        /// Its PID, from `dnsmasq.pid`.
        pid: u32,
        /// The argument its command line was found to hold.
        argument: Arc<[u8]>,
    },
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
    /// where the helper makes the sockets); else that is an error.
    pub retry_held: bool,
    /// Host-wide, the privileged helper that makes each container's socket in its namespace.
    pub helper: Option<Helper>,
    /// `--max-nflog-sockets`: each socket is a receive buffer the kernel charges while packets
    /// wait, and whoever owns a state root can start namespaces with dnsmasqs of their own.
    pub max_sockets: usize,
}

/// One container's socket.
struct Socket {
    name: Arc<str>,
    /// The namespace it was made in.
    ns: Option<NamespaceId>,
    subscription: Subscription,
}

/// A group another listener held when asked: tried again every [`RETRY_HELD`].
struct Held {
    name: Arc<str>,
    netns: Netns,
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
        mut self,
        queue: Receiver<NflogCommand>,
        wake: Arc<OwnedFd>,
        confine: ConfineWhen,
        confined: Sender<()>,
    ) {
        // The namespace this thread comes back to after making each socket (one container).
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
            // The wake-up, the helper's end of the socketpair (it hangs up when the helper
            // ends; it says nothing unasked), then the sockets.
            let first = 1 + usize::from(self.helper.is_some());
            let mut fds = Vec::with_capacity(sockets.len() + first);
            fds.push(PollFd::new(&*wake, PollFlags::IN));
            if let Some(helper) = &self.helper {
                fds.push(PollFd::new(helper, PollFlags::IN));
            }
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
                .skip(first)
                .filter(|(_, fd)| !fd.revents().is_empty())
                .map(|(i, _)| i - first)
                .collect();
            let woken = !fds[0].revents().is_empty();
            let helper_spoke = first == 2 && !fds[1].revents().is_empty();
            drop(fds);
            if helper_spoke {
                self.helper_gone("it hung up");
            }
            let mut gone = Vec::new();
            let mut datagrams = 0;
            for i in readable {
                let s = &mut sockets[i];
                let mut batch = self.spares.try_recv().unwrap_or_default();
                if let Err(err) = s.subscription.try_recv_batch(&mut batch) {
                    crate::diag::line(format_args!(
                        "container {}: nflog: stopped: {}",
                        s.name,
                        crate::diag::chain(&err)
                    ));
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
                                let mut old = sockets.swap_remove(at);
                                self.drain(&mut old);
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

    /// The helper ended (or broke the protocol): said once; the sockets it made stay ours, and
    /// containers that need a new one from now on are told why they get none.
    fn helper_gone(&mut self, why: &str) {
        if let Some(helper) = self.helper.take() {
            crate::diag::line(format_args!(
                "nflog: the privileged helper (pid {}) is gone: {why}, {}; sockets already made keep working, no new container gets one",
                helper.pid(),
                helper.ended()
            ));
        }
    }

    /// Hands the events thread whatever waits in a socket about to be closed (packets logged
    /// before its container went or moved to another namespace), so that closing it loses
    /// nothing the kernel had delivered.
    fn drain(&self, s: &mut Socket) {
        loop {
            let mut batch = self.spares.try_recv().unwrap_or_default();
            if s.subscription.try_recv_batch(&mut batch).is_err() || !batch.is_news() {
                return;
            }
            if self
                .batches
                .send(ToEvents::Batch(s.name.clone(), batch))
                .is_err()
            {
                return;
            }
        }
    }

    /// Makes `name`'s socket in `netns`, or keeps the one it has there already.
    fn open(
        &mut self,
        sockets: &mut Vec<Socket>,
        held: &mut Vec<Held>,
        name: Arc<str>,
        netns: Netns,
        cache: Option<Arc<Mutex<DomainCache>>>,
        home: &File,
    ) -> Result<Opened, String> {
        let has_one = sockets.iter().any(|s| s.name == name);
        if !has_one && sockets.len() + held.len() >= self.max_sockets {
            return Err(format!(
                "refused: {} NFLOG sockets are open already (--max-nflog-sockets): packets are not shown",
                sockets.len() + held.len()
            ));
        }
        let known = sockets.iter().find(|s| s.name == name).and_then(|s| s.ns);
        let made = self.make(&netns, known, home);
        if let Err(refused) = &made {
            if refused.checking {
                // Refused before any socket was made (not that dnsmasq, our own namespace): the
                // socket the container has, if any, stays.
                return Err(refused.why.clone());
            }
        }
        if let Ok(Made::Same) = made {
            return Ok(Opened::Kept);
        }
        if let Some(at) = sockets.iter().position(|s| s.name == name) {
            // Another namespace (the container was re-created): the old socket goes, once
            // what waits in it is out.
            let mut old = sockets.swap_remove(at);
            self.drain(&mut old);
            let _ = self.batches.send(ToEvents::Remove(old.name));
        }
        match made {
            Ok(Made::Same) => Ok(Opened::Kept),
            Ok(Made::New(subscription, ns)) => {
                self.added(sockets, name, ns, *subscription, cache);
                Ok(Opened::New)
            }
            Err(refused) if refused.held && self.retry_held => {
                let why = format!("{}; taken over when that listener goes", refused.why);
                held.push(Held {
                    name,
                    netns,
                    cache,
                    next: Instant::now() + RETRY_HELD,
                });
                Ok(Opened::Waiting(why))
            }
            Err(refused) => Err(format!("{}; packets will not be shown", refused.why)),
        }
    }

    /// A socket in `netns`, or [`Made::Same`] when that is the namespace `known`.
    fn make(
        &mut self,
        netns: &Netns,
        known: Option<NamespaceId>,
        home: &File,
    ) -> Result<Made, Refused> {
        match netns {
            Netns::Current => Ok(Made::New(
                Box::new(self.subscribe(None)?),
                namespace_id(home),
            )),
            Netns::Path(path) => {
                let file = File::open(path).map_err(|e| Refused {
                    held: false,
                    checking: true,
                    why: format!(
                        "cannot open the network namespace {}: {e}; packets will not be shown",
                        path.display()
                    ),
                })?;
                let ns = namespace_id(&file);
                if ns.is_some() && ns == known {
                    return Ok(Made::Same);
                }
                Ok(Made::New(Box::new(self.subscribe(Some(&file))?), ns))
            }
            Netns::Dnsmasq { pid, argument } => {
                let checking = |why: String| Refused {
                    held: false,
                    checking: true,
                    why,
                };
                let Some(helper) = &self.helper else {
                    return Err(checking(format!(
                        "no privileged helper to make the socket in dnsmasq {pid}'s namespace; packets will not be shown"
                    )));
                };
                let request = Request {
                    pid: *pid,
                    group: self.group,
                    buffer: u64::try_from(self.buffer).unwrap_or(u64::MAX),
                    known_ns: known.map(|id| Namespace {
                        dev: id.device(),
                        ino: id.inode(),
                    }),
                    argument: argument.to_vec(),
                };
                match helper.ask(&request) {
                    Ok(Answer::Refused(why)) => Err(checking(why)),
                    Ok(Answer::Same) => Ok(Made::Same),
                    Ok(Answer::New(bind, ns)) => {
                        let subscription = Subscription::builder()
                            .group(self.group)
                            .recv_buffer(self.buffer, self.buffer)
                            .finish(bind)?;
                        Ok(Made::New(Box::new(subscription), Some(ns)))
                    }
                    Err(Gone(why)) => {
                        self.helper_gone(&why);
                        Err(checking(format!(
                            "the privileged helper is gone ({why}); packets will not be shown"
                        )))
                    }
                }
            }
        }
    }

    fn added(
        &self,
        sockets: &mut Vec<Socket>,
        name: Arc<str>,
        ns: Option<NamespaceId>,
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
    fn retry_held(&mut self, sockets: &mut Vec<Socket>, held: &mut Vec<Held>, home: &File) {
        let now = Instant::now();
        let mut at = 0;
        while at < held.len() {
            if held[at].next > now {
                at += 1;
                continue;
            }
            match self.make(&held[at].netns, None, home) {
                Ok(Made::New(subscription, ns)) => {
                    let h = held.swap_remove(at);
                    crate::diag::line(format_args!(
                        "container {}: nflog: took over NFLOG group {} (its other listener is gone)",
                        h.name, self.group
                    ));
                    self.added(sockets, h.name, ns, *subscription, h.cache);
                }
                Err(refused) if refused.held => {
                    held[at].next = now + RETRY_HELD;
                    at += 1;
                }
                Ok(Made::Same) => {
                    held.swap_remove(at);
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
    fn subscribe(&self, ns: Option<&File>) -> Result<Subscription, Refused> {
        let builder = Subscription::builder()
            .group(self.group)
            .recv_buffer(self.buffer, self.buffer);
        let ns = match ns {
            None => return Ok(builder.open()?),
            Some(ns) => ns,
        };
        match builder.open_in(ns) {
            Err(err) if matches!(err.kind(), ErrorKind::NetnsReturn) => {
                // Staying in a container's namespace would put every later socket there too.
                crate::diag::line(format_args!("nflog: {}", crate::diag::chain(&err)));
                std::process::abort();
            }
            opened => Ok(opened?),
        }
    }
}

/// What [`NflogThread::make`] made.
enum Made {
    /// A socket, in this namespace.
    New(Box<Subscription>, Option<NamespaceId>),
    /// None: the namespace is the one the container's socket is in already.
    Same,
}

/// Why a socket could not be made: whether another listener holds the group, whether it was
/// refused while checking where to make it (before any socket), and what to say.
struct Refused {
    held: bool,
    checking: bool,
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
            checking: false,
            why: crate::diag::chain(&err),
        }
    }
}

/// A network namespace's identity (its nsfs device and inode).
fn namespace_id(ns: &File) -> Option<NamespaceId> {
    NamespaceId::of(ns).ok()
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
            if !show_link_multicast && is_ipv6_link_local_multicast(headers.dest) {
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
        headers: *headers,
        indev: packet.indev(),
        outdev: packet.outdev(),
        uid: packet.uid(),
        gid: packet.gid(),
        mark: packet.mark(),
        hook: packet.hook(),
    }
}
