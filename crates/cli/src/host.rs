//! Host-wide mode (`--state-root ROOT`, `docs/CONTRACT.md` §9): every container under
//! `ROOT/containers/NAME/` in one process, with one thread per source kind whatever their
//! number.
//!
//! ```text
//!  ROOT/containers ──► [containers thread] ── add/remove ──► [audit] [dns] [nflog]
//!                       (discovery, dnsmasq PID checks)        one FollowSet each, one poll
//! ```
//!
//! The containers thread watches `ROOT/containers` and each container's `dns.tier` and
//! `dnsmasq.pid`; it tells the source threads which containers to follow, waits for their
//! answers and prints one stderr line per container (`following (...)`, `gone`). The audit and
//! dns threads each follow every container's file on one inotify instance; the dns thread keeps
//! each container's allow-list and domain cache; the nflog thread holds one NFLOG socket per
//! container, each made inside that container's network namespace, and polls them all.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::thread::LinkNameSpaceType;
use shield_dnsmasq::{AllowList, DomainCache};
use shield_event::Source;
use shield_nflog::{Batch, Decoder, Subscription};
use shield_tail::{FollowSet, Key, Options, Start, Waker};

use crate::confine::Confinement;
use crate::output::Msg;
use crate::sources::audit::AuditLines;
use crate::sources::dns::{DnsLines, DnsOptions, SharedAllowList};
use crate::sources::follow::{LineHandler, Lines, Reader, Step};
use crate::sources::nflog::message_event_read_at;
use crate::sources::Ready;
use crate::state::{DnsTier, StateDir};
use crate::summary::Summary;

/// What the host-wide threads are started with.
pub struct Host {
    /// `ROOT/containers`.
    pub containers: PathBuf,
    /// The sources selected (`--source`, `--no-nflog`).
    pub selected: Vec<Source>,
    /// Saved cursors, keyed `NAME/dns` and `NAME/audit`.
    pub cursors: BTreeMap<String, shield_tail::Cursor>,
    /// `--from-start`.
    pub from_start: bool,
    /// Follower options.
    pub options: Options,
    /// `--all-query-types`.
    pub all_query_types: bool,
    /// `--domain-cache`.
    pub domain_cache: usize,
    /// `--nflog-group`.
    pub nflog_group: u16,
    /// `--nflog-buffer`.
    pub nflog_buffer: usize,
    /// Events go here.
    pub tx: Sender<Msg>,
    /// Shared counters.
    pub summary: Summary,
}

/// One container as the source threads learn of it.
#[derive(Clone)]
struct Container {
    name: Arc<str>,
    dir: PathBuf,
    /// Where its files start: their saved cursor, the start (a container that appeared while
    /// running, or `--from-start`), or the end.
    from_start: bool,
    /// Its domain cache, shared by the dns thread (which fills it) and the nflog thread.
    cache: Arc<Mutex<DomainCache>>,
}

/// What the containers thread asks a source thread.
enum Command {
    /// Follow this container; the answer says whether it runs, or why not.
    Add(Container, Sender<Result<(), String>>),
    /// Follow this container's NFLOG group in the namespace of this dnsmasq.
    AddNflog(Container, u32, Sender<Result<(), String>>),
    /// Let go of this container.
    Remove(Arc<str>),
    /// The containers present at start are all added: read what their files hold.
    Started,
}

/// A source thread's command queue and the handle that wakes it to read the queue.
#[derive(Clone)]
struct Fleet {
    commands: Sender<Command>,
    waker: Wakes,
}

#[derive(Clone)]
enum Wakes {
    Set(Waker),
    Fd(Arc<OwnedFd>),
}

impl Fleet {
    fn send(&self, command: Command) -> bool {
        let sent = self.commands.send(command).is_ok();
        match &self.waker {
            Wakes::Set(w) => w.wake(),
            Wakes::Fd(fd) => {
                let _ = rustix::io::write(&**fd, &1u64.to_ne_bytes());
            }
        }
        sent
    }

    /// Sends `command` built around a reply channel and waits (bounded) for the answer.
    fn ask(
        &self,
        command: impl FnOnce(Sender<Result<(), String>>) -> Command,
    ) -> Result<(), String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if !self.send(command(reply)) {
            return Err("its thread has stopped".into());
        }
        answer
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| Err("no answer from its thread".into()))
    }
}

/// Starts the host-wide threads. The nflog thread starts first and confines itself with
/// `nflog_confinement` (it keeps what entering new namespaces needs); then this thread applies
/// `confinement`, inherited by every thread started after. Returns how many ready reports
/// main waits for.
pub fn start(
    host: Host,
    ready: Sender<Ready>,
    go: Receiver<()>,
    confinement: &Confinement,
    nflog_confinement: Confinement,
) -> usize {
    let (confined_tx, confined_rx) = crossbeam_channel::bounded(1);
    let (batches, to_events) = crossbeam_channel::bounded(QUEUED_BATCHES);
    let nflog = host.selected.contains(&Source::Nflog).then(|| {
        let (commands, queue) = unbounded();
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .expect("an eventfd");
        let fd = Arc::new(fd);
        let waker = Wakes::Fd(fd.clone());
        let thread = NflogThread {
            group: host.nflog_group,
            buffer: host.nflog_buffer,
            batches,
        };
        crate::spawn("nflog", move || {
            thread.run(queue, fd, nflog_confinement, confined_tx)
        });
        Fleet { commands, waker }
    });
    if nflog.is_some() {
        // Its confinement is in place before the one line that reports it.
        let _ = confined_rx.recv_timeout(Duration::from_secs(10));
    }
    confinement.apply_here("main");
    if nflog.is_some() {
        // Started confined, without the nflog thread's capabilities: packets from containers
        // are parsed here, never where the capabilities are.
        let events = NflogEvents {
            tx: host.tx.clone(),
            summary: host.summary.clone(),
        };
        crate::spawn("nflog-events", move || events.run(to_events));
    }
    let file_fleet = |source: Source| {
        let (commands, queue) = unbounded();
        let mut set = FollowSet::new(host.options.clone());
        let waker = Wakes::Set(set.waker().expect("an eventfd"));
        let thread = FileThread {
            source,
            set,
            tx: host.tx.clone(),
            summary: host.summary.clone(),
            cursors: host.cursors.clone(),
            all_query_types: host.all_query_types,
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            unread: Vec::new(),
            started: false,
        };
        crate::spawn(source.as_str(), move || thread.run(queue));
        Fleet { commands, waker }
    };
    let audit = host
        .selected
        .contains(&Source::Audit)
        .then(|| file_fleet(Source::Audit));
    // The query log is read whenever dns events or nflog names are wanted.
    let dns =
        (host.selected.contains(&Source::Dns) || nflog.is_some()).then(|| file_fleet(Source::Dns));
    let discovery = Discovery {
        containers: host.containers,
        selected: host.selected.clone(),
        from_start: host.from_start,
        domain_cache: host.domain_cache,
        audit,
        dns,
        nflog,
        known: BTreeMap::new(),
        refused: Vec::new(),
    };
    let selected = host.selected.clone();
    crate::spawn("containers", move || discovery.run(ready, go, selected));
    host.selected.len()
}

/// What the containers thread knows of one container.
struct Known {
    watch: Key,
    tier: Option<DnsTier>,
    /// The dnsmasq whose namespace its NFLOG socket is in.
    pid: Option<u32>,
    following: bool,
    /// Its domain cache while followed (shared by the dns and nflog threads).
    cache: Option<Arc<Mutex<DomainCache>>>,
}

struct Discovery {
    containers: PathBuf,
    selected: Vec<Source>,
    from_start: bool,
    domain_cache: usize,
    audit: Option<Fleet>,
    dns: Option<Fleet>,
    nflog: Option<Fleet>,
    known: BTreeMap<String, Known>,
    /// Names already said to be refused or unusable (each said once).
    refused: Vec<String>,
}

impl Discovery {
    fn run(mut self, ready: Sender<Ready>, go: Receiver<()>, selected: Vec<Source>) {
        let mut set = FollowSet::new(Options::default());
        let _root = set.watch_dirs(std::slice::from_ref(&self.containers));
        if !self.containers.is_dir() {
            eprintln!(
                "shield-watch: {} does not exist (yet): waiting for containers",
                self.containers.display()
            );
        }
        self.scan(&mut set, true);
        for source in selected {
            let _ = ready.send(Ready {
                source,
                result: Ok(()),
            });
        }
        drop(ready);
        // Histories are read once every container present at start is followed and the ready
        // line is out (main drops `go` then): their events must not fill stdout ahead of the
        // position sync the ready line waits for, when the reader waits for it first.
        let _ = go.recv();
        for fleet in [&self.audit, &self.dns].into_iter().flatten() {
            fleet.send(Command::Started);
        }
        let mut woken = Vec::new();
        loop {
            if let Err(err) = set.wait(None, &mut woken) {
                eprintln!("shield-watch: containers: stopped watching: {err}");
                return;
            }
            self.scan(&mut set, false);
        }
    }

    /// Compares what is under `ROOT/containers` with what is followed, and acts on the
    /// difference.
    fn scan(&mut self, set: &mut FollowSet, first: bool) {
        let mut present: BTreeMap<String, (Option<DnsTier>, Option<u32>)> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.containers) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_symlink() {
                    self.say_once(&name, "refused: a symbolic link, not a directory");
                    continue;
                }
                if !kind.is_dir() {
                    continue;
                }
                let dir = entry.path();
                let tier = match StateDir::open(&dir) {
                    Ok(state) => Some(state.tier),
                    Err(crate::state::StateError::NoTier {
                        problem: crate::state::TierProblem::Unreadable(e),
                        ..
                    }) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(err) => {
                        self.say_once(&name, &err.to_string());
                        None
                    }
                };
                let pid = tier
                    .filter(|t| t.has_dnsmasq())
                    .and_then(|_| dnsmasq_pid(&dir));
                present.insert(name, (tier, pid));
            }
        }
        // Gone: the directory, or its dns.tier.
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|name| !matches!(present.get(*name), Some((Some(_), _))))
            .cloned()
            .collect();
        for name in gone {
            let absent = !present.contains_key(&name);
            if let Some(known) = self.known.get_mut(&name) {
                if known.following {
                    self.remove(&name);
                    say(&name, "gone");
                }
                let known = self.known.get_mut(&name).expect("still known");
                known.following = false;
                known.tier = None;
                known.pid = None;
                known.cache = None;
                if absent {
                    set.remove(known.watch);
                    self.known.remove(&name);
                }
            }
        }
        for (name, (tier, pid)) in present {
            let known = self.known.entry(name.clone()).or_insert_with(|| Known {
                watch: set.watch_names(&self.containers.join(&name), &["dns.tier", "dnsmasq.pid"]),
                tier: None,
                pid: None,
                following: false,
                cache: None,
            });
            let Some(tier) = tier else { continue };
            if !known.following {
                known.tier = Some(tier);
                known.pid = pid;
                known.following = true;
                let container = self.container(&name, first, None);
                self.known.get_mut(&name).expect("just added").cache =
                    Some(container.cache.clone());
                self.add(container, tier, pid);
            } else if known.pid != pid {
                // dnsmasq restarted (or stopped): its NFLOG socket follows the new one.
                known.pid = pid;
                let cache = known.cache.clone();
                if let Some(nflog) = &self.nflog {
                    nflog.send(Command::Remove(Arc::from(name.as_str())));
                    if let Some(pid) = pid {
                        let container = self.container(&name, first, cache);
                        match nflog.ask(|reply| Command::AddNflog(container, pid, reply)) {
                            Ok(()) => say(&name, &format!("nflog: following dnsmasq {pid}")),
                            Err(why) => say(&name, &format!("nflog: {why}")),
                        }
                    }
                }
            }
        }
    }

    fn say_once(&mut self, name: &str, what: &str) {
        let said = format!("{name}: {what}");
        if !self.refused.contains(&said) {
            say(name, what);
            self.refused.push(said);
        }
    }

    fn container(
        &self,
        name: &str,
        first: bool,
        cache: Option<Arc<Mutex<DomainCache>>>,
    ) -> Container {
        Container {
            name: Arc::from(name),
            dir: self.containers.join(name),
            // Containers present at start follow --from-start (or their cursor); those that
            // appear later are read from their start.
            from_start: self.from_start || !first,
            cache: cache
                .unwrap_or_else(|| Arc::new(Mutex::new(DomainCache::new(self.domain_cache)))),
        }
    }

    fn add(&mut self, container: Container, tier: DnsTier, pid: Option<u32>) {
        let name = container.name.clone();
        let mut running = Vec::new();
        let mut notes = Vec::new();
        if let Some(audit) = &self.audit {
            match audit.ask(|reply| Command::Add(container.clone(), reply)) {
                Ok(()) => running.push("audit"),
                Err(why) => notes.push(format!("audit: {why}")),
            }
        }
        if tier.has_dnsmasq() {
            if let Some(dns) = &self.dns {
                match dns.ask(|reply| Command::Add(container.clone(), reply)) {
                    Ok(()) if self.selected.contains(&Source::Dns) => running.push("dns"),
                    Ok(()) => {}
                    Err(why) => notes.push(format!("dns: {why}")),
                }
            }
        }
        if let Some(nflog) = &self.nflog {
            let why = match (tier.has_dnsmasq(), pid) {
                (false, _) => Err(format!(
                    "no dnsmasq with tier {}: its network namespace is unknown, packets are not shown",
                    tier.name()
                )),
                (true, None) => Err(
                    "no running dnsmasq started for this container (dnsmasq.pid): packets are not shown until one starts".to_string(),
                ),
                (true, Some(pid)) => nflog.ask(|reply| Command::AddNflog(container.clone(), pid, reply)),
            };
            match why {
                Ok(()) => running.push("nflog"),
                Err(why) => notes.push(format!("nflog: {why}")),
            }
        }
        say(&name, &format!("following ({})", running.join(",")));
        for note in notes {
            say(&name, &note);
        }
    }

    fn remove(&self, name: &str) {
        let name: Arc<str> = Arc::from(name);
        for fleet in [&self.audit, &self.dns, &self.nflog].into_iter().flatten() {
            fleet.send(Command::Remove(name.clone()));
        }
    }
}

/// Prints one stderr line about a container. Its name, and the paths and errors that quote it,
/// come from the state root's owner: each character outside printable ASCII becomes a space, as
/// in the stream, so no escape sequence or line break reaches a terminal or the journal.
fn say(name: &str, what: &str) {
    let line: String = format!("shield-watch: container {name}: {what}")
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { ' ' })
        .collect();
    eprintln!("{line}");
}

/// The PID in `dir/dnsmasq.pid`, accepted only when that process is the dnsmasq started for
/// this container: its command line holds exactly `--conf-file=DIR/dnsmasq.conf` (how
/// terok-shield starts it, and how it recognises it).
fn dnsmasq_pid(dir: &Path) -> Option<u32> {
    let handle = shield_tail::open_dir(dir).ok()?;
    let mut text = String::new();
    shield_tail::open_beneath(&handle, "dnsmasq.pid", shield_tail::Open::ReadNoFollow)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let mut cmdline = Vec::new();
    File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut cmdline)
        .ok()?;
    let conf = dir.join("dnsmasq.conf");
    let wanted: Vec<Vec<u8>> = [Some(conf.clone()), std::path::absolute(&conf).ok()]
        .into_iter()
        .flatten()
        .map(|p| {
            let mut arg = b"--conf-file=".to_vec();
            arg.extend_from_slice(p.as_os_str().as_encoded_bytes());
            arg
        })
        .collect();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| wanted.iter().any(|w| w.as_slice() == arg))
        .then_some(pid)
}

/// The per-container state of a file source thread.
enum Handler {
    Audit(AuditLines),
    Dns(Box<DnsLines>),
}

impl LineHandler for Handler {
    fn read_before_ready(&self) -> bool {
        match self {
            Handler::Audit(h) => h.read_before_ready(),
            Handler::Dns(h) => h.read_before_ready(),
        }
    }

    fn with_lines(&mut self, read: &mut dyn FnMut(&mut dyn Lines)) {
        match self {
            Handler::Audit(h) => h.with_lines(read),
            Handler::Dns(h) => h.with_lines(read),
        }
    }
}

/// What one key of a file thread's set is.
enum Member {
    File {
        name: Arc<str>,
        reader: Reader,
        handler: Handler,
    },
    /// A container's allow-list files (dns only).
    AllowList {
        dir: PathBuf,
        list: SharedAllowList,
        last_error: Option<String>,
    },
}

/// The audit or the dns thread: every container's file on one [`FollowSet`].
struct FileThread {
    source: Source,
    set: FollowSet,
    tx: Sender<Msg>,
    summary: Summary,
    cursors: BTreeMap<String, shield_tail::Cursor>,
    all_query_types: bool,
    by_key: HashMap<Key, Member>,
    by_name: HashMap<Arc<str>, Vec<Key>>,
    /// Files added whose present content is still to be read (by the loop, not by `add`).
    unread: Vec<Key>,
    /// Whether every container present at start was added (their content is read after).
    started: bool,
}

impl FileThread {
    fn run(mut self, queue: Receiver<Command>) {
        let mut ready = Vec::new();
        loop {
            while let Ok(command) = queue.try_recv() {
                match command {
                    Command::Add(container, reply) => {
                        let _ = reply.send(self.add(container));
                    }
                    Command::AddNflog(..) => {}
                    Command::Remove(name) => self.remove(&name),
                    Command::Started => self.started = true,
                }
            }
            if self.started {
                ready.append(&mut self.unread);
            }
            ready.sort_unstable();
            ready.dedup();
            for key in std::mem::take(&mut ready) {
                if !self.read(key) {
                    return;
                }
            }
            if let Err(err) = self.set.wait(None, &mut ready) {
                eprintln!("shield-watch: {}: stopped: {err}", self.source.as_str());
                return;
            }
        }
    }

    fn file_name(&self) -> &'static str {
        match self.source {
            Source::Dns => "dnsmasq.log",
            _ => "audit.jsonl",
        }
    }

    fn add(&mut self, container: Container) -> Result<(), String> {
        let cursor_key = format!("{}/{}", container.name, self.source.as_str());
        let start = match self.cursors.get(&cursor_key) {
            Some(cursor) => Start::Cursor(*cursor),
            None if container.from_start => Start::Beginning,
            None => Start::End,
        };
        // Events from what the file holds already: a saved position, or from the start.
        let history = start != Start::End;
        let path = container.dir.join(self.file_name());
        let mut keys = Vec::new();
        let (start, handler) = match self.source {
            Source::Dns => {
                // Existing content fills the cache even when events start at the end.
                let prime_only_existing = start == Start::End;
                let mut last_error = None;
                let list = SharedAllowList::load(&container.dir, &mut last_error);
                let handler = DnsLines::new(
                    DnsOptions {
                        all_query_types: self.all_query_types,
                        prime_only_existing,
                        emit: true,
                    },
                    list.clone(),
                    container.cache.clone(),
                    container.name.to_string(),
                );
                let names = AllowList::watched_names();
                let watch = self.set.watch_names(&container.dir, &names);
                let policy = self
                    .set
                    .watch_dirs(&AllowList::watched_paths(&container.dir)[1..]);
                for key in [watch, policy] {
                    self.by_key.insert(
                        key,
                        Member::AllowList {
                            dir: container.dir.clone(),
                            list: list.clone(),
                            last_error: last_error.clone(),
                        },
                    );
                    keys.push(key);
                }
                let start = if prime_only_existing {
                    Start::Beginning
                } else {
                    start
                };
                (start, Handler::Dns(Box::new(handler)))
            }
            _ => (
                start,
                Handler::Audit(AuditLines {
                    container: container.name.to_string(),
                    summary: self.summary.clone(),
                }),
            ),
        };
        let key = match self.set.add(&path, start) {
            Ok(key) => key,
            Err(err) => {
                for key in keys {
                    self.set.remove(key);
                    self.by_key.remove(&key);
                }
                return Err(format!(
                    "cannot follow {}: {}",
                    path.display(),
                    crate::Chain(&err)
                ));
            }
        };
        let mut reader = Reader::new(self.source, Arc::from(cursor_key), path);
        if let Some(follower) = self.set.follower(key) {
            let _ = self.tx.send(reader.start_checkpoint(follower));
        }
        self.by_key.insert(
            key,
            Member::File {
                name: container.name.clone(),
                reader,
                handler,
            },
        );
        keys.push(key);
        self.by_name.insert(container.name, keys);
        // A history (a new container, a cursor, --from-start) is read by the loop once every
        // container present at start is added, as a single container's is after its ready
        // line: neither the next container nor the ready line waits for a whole history to go
        // through stdout, whose reader may be waiting for the ready line. Otherwise what is
        // there (the cache priming, which sends no events) is read before the answer: an nflog
        // event must not miss a name logged before we started.
        if history {
            self.unread.push(key);
        } else if !self.read(key) {
            return Err("the writer has stopped".into());
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) {
        for key in self.by_name.remove(name).unwrap_or_default() {
            self.set.remove(key);
            self.by_key.remove(&key);
        }
    }

    /// Reads one member; false when the writer is gone (the thread ends).
    fn read(&mut self, key: Key) -> bool {
        match self.by_key.get_mut(&key) {
            Some(Member::File {
                name,
                reader,
                handler,
            }) => {
                let Some(follower) = self.set.follower(key) else {
                    return true;
                };
                match reader.read(follower, handler, &self.tx, &self.summary) {
                    Step::Read => true,
                    Step::Closed => false,
                    Step::Failed(_) => {
                        say(name, &format!("{} stopped", self.source.as_str()));
                        true
                    }
                }
            }
            Some(Member::AllowList {
                dir,
                list,
                last_error,
            }) => {
                list.reload(dir, last_error);
                true
            }
            None => true,
        }
    }
}

/// The nflog thread: one NFLOG socket per container, each made in its namespace, all polled.
/// It keeps the capabilities that takes, so it only copies datagrams out: decoding, naming and
/// building events happen on the `nflog-events` thread ([`NflogEvents`]), which holds none.
struct NflogThread {
    group: u16,
    buffer: usize,
    batches: Sender<ToEvents>,
}

struct Socket {
    name: Arc<str>,
    subscription: Subscription,
}

/// What the nflog thread hands the `nflog-events` thread, in order.
enum ToEvents {
    /// A container's socket is open: its decoder, interface names and domain cache.
    Add(
        Arc<str>,
        Decoder,
        shield_nflog::Interfaces,
        Arc<Mutex<DomainCache>>,
    ),
    /// Datagrams read from that container's socket.
    Batch(Arc<str>, Batch),
    /// Its socket is closed.
    Remove(Arc<str>),
}

/// What decoding one container's batches takes: its decoder (sequence numbers and losses),
/// interface names in its namespace, and its own domain cache.
type Decoding = (Decoder, shield_nflog::Interfaces, Arc<Mutex<DomainCache>>);

/// How many batches may wait between the two nflog threads before the reader blocks.
const QUEUED_BATCHES: usize = 256;

/// The `nflog-events` thread: every container's batches decoded with that container's decoder
/// and named from that container's cache only.
struct NflogEvents {
    tx: Sender<Msg>,
    summary: Summary,
}

impl NflogEvents {
    fn run(self, batches: Receiver<ToEvents>) {
        let mut sockets: HashMap<Arc<str>, Decoding> = HashMap::new();
        for message in batches {
            match message {
                ToEvents::Add(name, decoder, interfaces, cache) => {
                    sockets.insert(name, (decoder, interfaces, cache));
                }
                ToEvents::Remove(name) => {
                    sockets.remove(&name);
                }
                ToEvents::Batch(name, batch) => {
                    let Some((decoder, interfaces, cache)) = sockets.get_mut(&name) else {
                        continue;
                    };
                    let read_at = batch
                        .received()
                        .and_then(|t| jiff::Timestamp::try_from(t).ok())
                        .map(shield_event::format_timestamp);
                    let ifname = |index: u32| interfaces.name(index);
                    let mut closed = false;
                    decoder.decode(&batch, &mut |message| {
                        if closed {
                            return;
                        }
                        if let Some(event) = message_event_read_at(
                            message,
                            read_at.as_deref(),
                            &name,
                            Some(cache),
                            &ifname,
                            &self.summary,
                        ) {
                            closed = self.tx.send(Msg::Event(event, None)).is_err();
                        }
                    });
                    if closed {
                        return;
                    }
                }
            }
        }
    }
}

impl NflogThread {
    fn run(
        self,
        queue: Receiver<Command>,
        wake: Arc<OwnedFd>,
        confinement: Confinement,
        confined: Sender<()>,
    ) {
        // The namespace this thread comes back to after making each socket.
        let home = File::open("/proc/thread-self/ns/net");
        confinement.apply_here("nflog");
        let _ = confined.send(());
        let home = match home {
            Ok(home) => home,
            Err(err) => {
                eprintln!("shield-watch: nflog: cannot open this thread's network namespace: {err}; packets will not be shown");
                return;
            }
        };
        let mut sockets: Vec<Socket> = Vec::new();
        loop {
            let mut fds = Vec::with_capacity(sockets.len() + 1);
            fds.push(PollFd::new(&*wake, PollFlags::IN));
            for s in &sockets {
                fds.push(PollFd::new(&s.subscription, PollFlags::IN));
            }
            if let Err(err) = rustix::event::poll(&mut fds, None) {
                if err != rustix::io::Errno::INTR {
                    eprintln!("shield-watch: nflog: stopped: {err}");
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
            for i in readable {
                let s = &mut sockets[i];
                let mut batch = Batch::new();
                if let Err(err) = s.subscription.try_recv_batch(&mut batch) {
                    say(&s.name, &format!("nflog: stopped: {err}"));
                    gone.push(i);
                    continue;
                }
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
                while let Ok(command) = queue.try_recv() {
                    match command {
                        Command::AddNflog(container, pid, reply) => {
                            let _ = reply.send(self.open(&container, pid, &home).map(|s| {
                                let decoder = s.subscription.decoder();
                                let interfaces = s.subscription.interfaces();
                                let _ = self.batches.send(ToEvents::Add(
                                    s.name.clone(),
                                    decoder,
                                    interfaces,
                                    container.cache.clone(),
                                ));
                                sockets.push(s);
                            }));
                        }
                        Command::Add(_, reply) => {
                            let _ = reply.send(Err("not an nflog command".into()));
                        }
                        Command::Started => {}
                        Command::Remove(name) => {
                            sockets.retain(|s| s.name != name);
                            let _ = self.batches.send(ToEvents::Remove(name));
                        }
                    }
                }
            }
        }
    }

    /// Makes the container's socket inside the namespace of its dnsmasq, then comes back.
    fn open(&self, container: &Container, pid: u32, home: &File) -> Result<Socket, String> {
        let netns = File::open(format!("/proc/{pid}/ns/net"))
            .map_err(|e| format!("cannot open the network namespace of dnsmasq {pid}: {e}"))?;
        // terok-shield starts a container's dnsmasq inside the container's namespace, never in
        // ours. Whoever can write dnsmasq.pid can also start a process with the right
        // --conf-file= in the host's namespace; following it would read (and hold) the host's
        // NFLOG group under a container's name.
        if same_namespace(&netns, home) {
            return Err(format!(
                "dnsmasq {pid} runs in shield-watch's own network namespace, not a container's: refused"
            ));
        }
        rustix::thread::move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(|e| format!("cannot enter the network namespace of dnsmasq {pid}: {e}"))?;
        let opened = Subscription::builder()
            .group(self.group)
            .recv_buffer(self.buffer, self.buffer)
            .read_timeout(Some(Duration::from_millis(1)))
            .open();
        let back = rustix::thread::move_into_link_name_space(
            home.as_fd(),
            Some(LinkNameSpaceType::Network),
        );
        if let Err(err) = back {
            // Staying in a container's namespace would put every later socket there too.
            eprintln!("shield-watch: nflog: cannot return to its own network namespace: {err}");
            std::process::abort();
        }
        let subscription = opened.map_err(|e| format!("{e}; packets will not be shown"))?;
        Ok(Socket {
            name: container.name.clone(),
            subscription,
        })
    }
}

/// Whether two `/proc/.../ns/net` handles are the same namespace (same nsfs inode). Unknown
/// counts as the same: refusing is the safe answer.
fn same_namespace(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => true,
    }
}

/// Raises the soft limit on open descriptors to the hard one (as Go's runtime does): a host's
/// containers take a few descriptors each. Says so only when even the hard limit is low.
pub fn raise_descriptor_limit() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).is_err()
        || limit.maximum.is_some_and(|max| max < 4096)
    {
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        eprintln!(
            "shield-watch: at most {} open files: each container takes about 6; raise the hard limit (LimitNOFILE=) for more",
            now.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
        );
    }
}
