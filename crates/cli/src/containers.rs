//! The one runtime: the containers followed (one, or every one of a state root) and the
//! threads that follow them, the same threads whatever their number.
//!
//! ```text
//!  Containers::One / Root ──► [containers] ── add/remove ──► [audit] [dns] [nflog] ─► [nflog-events]
//!                              (discovery)                     one FollowSet each, one poll
//! ```
//!
//! `--state-dir DIR` is a set of one container that never changes; `--state-root ROOT` is every
//! `ROOT/containers/NAME/` holding a `dns.tier`, watched as they come and go. Every choice about
//! how a container is followed (which sources, where they start, priming the cache, creating
//! missing logs, the socket's namespace) is made here once, for both.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use rustix::event::EventfdFlags;
use shield_dnsmasq::DomainCache;
use shield_event::Source;
use shield_tail::{Dir, FollowSet, Key, Options, Waker};

use crate::confine::Confinement;
use crate::files::{FileCommand, FileThread};
use crate::helper::Helper;
use crate::output::Msg;
use crate::sources::audit::AuditNaming;
use crate::sources::nflog::{ConfineWhen, Netns, NflogCommand, NflogEvents, NflogThread, Opened};
use crate::sources::Ready;
use crate::state::{DnsTier, StateDir};
use crate::summary::Summary;

/// What is watched.
pub enum Containers {
    /// One container (`--state-dir`): its directory, its name on events, where its NFLOG
    /// socket is made (`--netns`, else shield-watch's own namespace), and its tier (read at
    /// start; unusable is exit 1).
    One {
        /// The state directory, held open.
        dir: Dir,
        /// `--container`, else the directory's name.
        name: String,
        /// `--netns`.
        netns: Option<PathBuf>,
        /// Its DNS tier.
        tier: DnsTier,
    },
    /// Every container under `ROOT/containers/` (`--state-root`), as they come and go.
    Root(StateRoot),
    /// Every shielded container of the host, wherever its state lives (no `--state-dir`,
    /// `--state-root` or `$TEROK_SHIELD_STATE_DIR`): found through the dnsmasq terok-shield
    /// starts for each, whose command line names its state directory. `--container` selects.
    Everywhere {
        /// `--container`: names or globs of the containers to follow (all when empty).
        select: Vec<String>,
    },
}

/// A state root as checked at start: the path given, the directory it resolved to, and that
/// directory's identity, compared while running (a root replaced or removed is said loudly).
pub struct StateRoot {
    /// The directory, resolved (no symlink left in it).
    pub dir: PathBuf,
    /// The directory, held open since it was checked: every container is opened beneath it.
    handle: Dir,
    /// `--exit-on-lost-root`: a replaced or removed root ends the process (exit 1).
    pub exit_if_lost: bool,
    /// `--container`: the names or shell-style globs of the containers to follow (all when
    /// empty).
    pub select: Vec<String>,
}

/// Why a state root is refused.
#[derive(Debug)]
pub struct RootRefused(pub String);

impl StateRoot {
    /// Resolves `given` and checks the chain of directories leading to it: a symbolic link on
    /// the way is followed only when root owns it (the owner of a link decides where it leads;
    /// a container owner who replaces their state root by a link to another user's must not
    /// make root read that user's containers).
    pub fn open(
        given: &Path,
        exit_if_lost: bool,
        select: &[String],
    ) -> Result<StateRoot, RootRefused> {
        use std::os::unix::fs::MetadataExt as _;
        let absolute = std::path::absolute(given).map_err(|e| {
            RootRefused(format!(
                "cannot resolve the state root {}: {e}",
                given.display()
            ))
        })?;
        let mut walked = PathBuf::new();
        for component in absolute.components() {
            walked.push(component);
            let meta = std::fs::symlink_metadata(&walked).map_err(|e| {
                RootRefused(format!(
                    "cannot read the state root {}: {} ({e})",
                    given.display(),
                    walked.display()
                ))
            })?;
            if meta.file_type().is_symlink() && meta.uid() != 0 {
                return Err(RootRefused(format!(
                    "refused the state root {}: {} is a symbolic link owned by uid {}, not by root (give the directory itself if you trust where it leads)",
                    given.display(),
                    walked.display(),
                    meta.uid()
                )));
            }
        }
        let dir = std::fs::canonicalize(&absolute).map_err(|e| {
            RootRefused(format!(
                "cannot resolve the state root {}: {e}",
                given.display()
            ))
        })?;
        // Opened with no symlink on the way: one put in place of a component since the check
        // above fails the open instead of being followed.
        let handle = Dir::open_resolved(&dir).map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) {
                RootRefused(format!(
                    "the state root {} is not a directory",
                    dir.display()
                ))
            } else {
                RootRefused(format!("cannot open the state root {}: {e}", dir.display()))
            }
        })?;
        Ok(StateRoot {
            handle,
            dir,
            exit_if_lost,
            select: select.to_vec(),
        })
    }

    /// Whether `--container` selects the container `name`.
    pub fn selects(&self, name: &str) -> bool {
        selected(&self.select, name)
    }

    /// Whether the directory at the root's path is still the one checked at start.
    fn still_there(&self) -> bool {
        self.handle.still_at_path()
    }

    /// `ROOT/containers`, opened beneath the root held since the start (never through a
    /// symlink out of it).
    fn containers(&self) -> std::io::Result<Dir> {
        self.handle.open_beneath("containers")
    }
}

/// How per-container stderr lines are said: host-wide each names its container; one container
/// says its problems plainly and says nothing of following or going (it is the whole process).
#[derive(Clone, Copy, Debug)]
pub enum Voice {
    /// `--state-dir`.
    One,
    /// `--state-root`.
    Host,
    /// Says nothing (a second reader of the same files, whose problems the first one says).
    Quiet,
}

impl Voice {
    /// A line about the container's life (`following (...)`, `gone`): host-wide only.
    pub fn tell(self, name: &str, what: &str) {
        if let Voice::Host = self {
            crate::diag::line(format_args!("container {name}: {what}"));
        }
    }

    /// A problem with the container (a list that cannot be loaded): said in both modes.
    pub fn warn(self, name: &str, what: &str) {
        match self {
            Voice::One => crate::diag::line(what),
            Voice::Host => crate::diag::line(format_args!("container {name}: {what}")),
            Voice::Quiet => {}
        }
    }
}

/// One container as the source threads learn of it.
#[derive(Clone)]
pub struct Container {
    /// Its name on events, in the summary and in its cursor keys.
    pub name: Arc<str>,
    /// Its state directory, held open.
    pub dir: Dir,
    /// Whether its files are looked up through `dir` only (host-wide: a directory found under
    /// a root, renamed away or replaced, is not followed to where its path leads now), or by
    /// path (one container: the path the operator named, where a directory removed and made
    /// again is followed again).
    pub held: bool,
    /// Whether its cursor keys carry its name (`NAME/dns`; host-wide) or not (`dns`).
    pub keyed_by_name: bool,
    /// Where its files start without a saved cursor: their start (a container that appeared
    /// while running, or `--from-start`), or their end.
    pub from_start: bool,
    /// Its domain cache, shared by the dns thread (which fills it) and the nflog thread.
    pub cache: Arc<Mutex<DomainCache>>,
    /// Which name its audit events carry.
    pub audit_naming: AuditNaming,
}

impl Container {
    /// A container as every source thread learns of it: `host_wide` decides its cursor keys
    /// and the name its audit events carry; `from_start` where its files start without a
    /// cursor; a new domain cache unless it keeps `cache`.
    pub fn new(
        name: &str,
        dir: Dir,
        host_wide: bool,
        from_start: bool,
        cache: Option<Arc<Mutex<DomainCache>>>,
        cache_size: usize,
    ) -> Container {
        Container {
            name: Arc::from(name),
            dir,
            held: host_wide,
            keyed_by_name: host_wide,
            from_start,
            cache: cache.unwrap_or_else(|| Arc::new(Mutex::new(DomainCache::new(cache_size)))),
            audit_naming: if host_wide {
                AuditNaming::Watcher
            } else {
                AuditNaming::Entry
            },
        }
    }

    /// Its directory as of now: the held one, or (by path) the directory at its path now, the
    /// held one while there is none.
    pub fn dir_now(&self) -> Dir {
        if self.held {
            return self.dir.clone();
        }
        Dir::open(self.dir.path()).unwrap_or_else(|_| self.dir.clone())
    }

    /// The cursor-file key of its `source` file.
    pub fn cursor_key(&self, source: Source) -> String {
        if self.keyed_by_name {
            format!("{}/{}", self.name, source.as_str())
        } else {
            source.as_str().to_string()
        }
    }
}

/// What the runtime is started with.
pub struct Runtime {
    /// What is watched.
    pub containers: Containers,
    /// The sources selected (`--source`, `--no-nflog`, the tier).
    pub selected: Vec<Source>,
    /// Saved cursors.
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
    /// `--show-multicast`.
    pub show_link_multicast: bool,
    /// `--max-nflog-sockets`.
    pub max_nflog_sockets: usize,
    /// Events go here.
    pub tx: Sender<Msg>,
    /// Shared counters.
    pub summary: Summary,
    /// Told when the process must stop with exit 1 (a lost state root, when so configured).
    pub fatal: Sender<()>,
    /// `--since`, `--until`, `--last`: history first; and whether the live stream follows it.
    pub history: Option<crate::history::Plan>,
    /// Set by the signal thread on SIGINT or SIGTERM: a history being read stops there.
    pub interrupted: Arc<std::sync::atomic::AtomicBool>,
    /// Disconnected once the writer is gone (stdout closed).
    pub writer_gone: Receiver<()>,
}

/// What [`start`] started.
pub enum Started {
    /// The live threads: main waits for this many ready reports.
    Following(usize),
    /// Only the history, all of it handed to the writer (`--no-follow`, `--until`); or the
    /// writer went away during it.
    HistoryOnly,
}

/// A file thread's command queue and the handle that wakes it to read the queue.
#[derive(Clone)]
struct FileFleet {
    commands: Sender<FileCommand>,
    waker: Waker,
}

impl FileFleet {
    fn send(&self, command: FileCommand) -> bool {
        let sent = self.commands.send(command).is_ok();
        self.waker.wake();
        sent
    }

    /// Asks this thread to follow `container` and waits (bounded) for the answer.
    fn add(&self, container: &Container) -> Result<(), String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if !self.send(FileCommand::Add(container.clone(), reply)) {
            return Err("its thread has stopped".into());
        }
        answer
            .recv_timeout(ANSWER_WITHIN)
            .unwrap_or_else(|_| Err("no answer from its thread".into()))
    }
}

/// The nflog thread's command queue and the eventfd that wakes it.
#[derive(Clone)]
struct NflogFleet {
    commands: Sender<NflogCommand>,
    wake: Arc<OwnedFd>,
}

impl NflogFleet {
    fn send(&self, command: NflogCommand) -> bool {
        let sent = self.commands.send(command).is_ok();
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        sent
    }

    fn open(&self, container: &Container, netns: Netns) -> Result<Opened, String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let command = NflogCommand::Open {
            name: container.name.clone(),
            netns,
            cache: Some(container.cache.clone()),
            reply,
        };
        if !self.send(command) {
            return Err("its thread has stopped".into());
        }
        answer
            .recv_timeout(ANSWER_WITHIN)
            .unwrap_or_else(|_| Err("no answer from its thread".into()))
    }
}

/// How often the state root's identity is checked when nothing else wakes discovery (a rename
/// of the root wakes it at once through the watch on its parent).
const ROOT_CHECK: Duration = Duration::from_secs(5);

/// How often `/proc` is looked at for new dnsmasq processes when every container of the host
/// is followed (no inotify for processes; a look reads only processes not seen before).
const PROCESS_SCAN: Duration = Duration::from_secs(1);

/// How long discovery waits for a source thread's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Starts the threads. The nflog thread starts first, unconfined: host-wide it takes
/// `confinement` at once (the sockets are made by `helper`, the privileged process forked
/// before any thread); for one container it makes its one socket first and then takes
/// `confinement` like every other thread. Then this thread applies `confinement`, inherited by
/// every thread started after, and calls `confined` (main starts its own threads, the writer
/// among them, there: confined, and before any history goes to the channel). Returns what runs.
pub fn start(
    runtime: Runtime,
    ready: Sender<Ready>,
    go: Receiver<()>,
    confinement: &Confinement,
    helper: Option<Helper>,
    confined: impl FnOnce(),
) -> Started {
    let mut runtime = runtime;
    let one = matches!(runtime.containers, Containers::One { .. });
    let voice = if one { Voice::One } else { Voice::Host };
    // Missing logs of the containers present now are created while privileges allow it.
    for (dir, tier, _) in present_at_start(&runtime.containers) {
        create_missing_logs(&dir, tier, &runtime.selected, voice);
    }
    let history = runtime.history.take();
    let follows = history.as_ref().is_none_or(|plan| plan.follow);
    let wants_nflog = follows && runtime.selected.contains(&Source::Nflog);
    let (confined_tx, confined_rx) = crossbeam_channel::bounded(1);
    let ((batches, to_events), (spare, spares)) = crate::sources::nflog::channels();
    let nflog = wants_nflog.then(|| {
        let (commands, queue) = unbounded();
        let wake = Arc::new(
            rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .expect("an eventfd"),
        );
        let thread = NflogThread {
            group: runtime.nflog_group,
            buffer: runtime.nflog_buffer,
            batches,
            spares,
            retry_held: !one,
            helper,
            max_sockets: runtime.max_nflog_sockets,
        };
        let when = if one {
            ConfineWhen::AfterFirstOpen(confinement.clone())
        } else {
            ConfineWhen::Now(confinement.clone())
        };
        let thread_wake = wake.clone();
        crate::spawn("nflog", move || {
            thread.run(queue, thread_wake, when, confined_tx)
        });
        NflogFleet { commands, wake }
    });
    if nflog.is_some() && !one {
        // Its confinement is in place before the one line that reports it.
        let _ = confined_rx.recv_timeout(Duration::from_secs(10));
    }
    confinement.apply_here("main");
    confined();
    if let Some(plan) = history {
        // History is read confined, before any live thread but nflog starts: the file threads
        // start from exactly where it ended.
        let containers: Vec<Container> = present_at_start(&runtime.containers)
            .into_iter()
            .map(|(dir, _, name)| Container::new(&name, dir, !one, false, None, 16))
            .collect();
        let writer = crate::history::Writer {
            tx: &runtime.tx,
            interrupted: &runtime.interrupted,
            gone: &runtime.writer_gone,
        };
        let ends = crate::history::read(
            &containers,
            &runtime.selected,
            &plan,
            &runtime.options,
            voice,
            &writer,
            &runtime.summary,
        );
        let Some(ends) = ends.filter(|_| plan.follow) else {
            return Started::HistoryOnly;
        };
        for (key, end) in ends {
            if let shield_tail::Start::Cursor(cursor) = end.start {
                runtime.cursors.insert(key, cursor);
            }
        }
    }
    if nflog.is_some() {
        // Started confined: packets from containers are parsed here, not on the thread that
        // reads the sockets.
        let events = NflogEvents {
            tx: runtime.tx.clone(),
            summary: runtime.summary.clone(),
            show_link_multicast: runtime.show_link_multicast,
        };
        crate::spawn("nflog-events", move || events.run(to_events, spare));
    }
    let file_fleet = |source: Source, emit: bool| {
        let (commands, queue) = unbounded();
        let mut set = FollowSet::new(runtime.options.clone());
        let waker = set.waker().expect("an eventfd");
        let thread = FileThread {
            source,
            set,
            tx: runtime.tx.clone(),
            summary: runtime.summary.clone(),
            cursors: runtime.cursors.clone(),
            all_query_types: runtime.all_query_types,
            emit,
            voice,
        };
        crate::spawn(source.as_str(), move || thread.run(queue));
        FileFleet { commands, waker }
    };
    let audit = runtime
        .selected
        .contains(&Source::Audit)
        .then(|| file_fleet(Source::Audit, true));
    // The query log is read whenever dns events or nflog names are wanted, by one thread.
    let wants_dns = runtime.selected.contains(&Source::Dns);
    let dns = (wants_dns || wants_nflog).then(|| file_fleet(Source::Dns, wants_dns));
    let discovery = Discovery {
        selected: runtime.selected.clone(),
        from_start: runtime.from_start,
        domain_cache: runtime.domain_cache,
        voice,
        audit,
        dns,
        nflog,
        known: BTreeMap::new(),
        refused: Vec::new(),
        reserve: Reserve::new(),
        short: false,
        fatal: runtime.fatal.clone(),
        select: match &runtime.containers {
            Containers::Root(root) => root.select.clone(),
            Containers::Everywhere { select } => select.clone(),
            Containers::One { .. } => Vec::new(),
        },
        metrics: runtime.summary.metrics().cloned(),
    };
    let selected = runtime.selected.clone();
    let containers = runtime.containers;
    crate::spawn("containers", move || {
        discovery.run(containers, ready, go, confined_rx)
    });
    Started::Following(selected.len())
}

/// The containers present at start: directory, tier and name.
fn present_at_start(containers: &Containers) -> Vec<(Dir, DnsTier, String)> {
    match containers {
        Containers::One {
            dir, tier, name, ..
        } => vec![(dir.clone(), *tier, name.clone())],
        // Found by the containers thread, after the start.
        Containers::Everywhere { .. } => Vec::new(),
        Containers::Root(root) => {
            let Ok(containers) = root.containers() else {
                return Vec::new();
            };
            std::fs::read_dir(containers.through_fd())
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|entry| entry.file_name().to_str().is_some_and(|n| root.selects(n)))
                .filter_map(|entry| {
                    let name = entry.file_name().to_str()?.to_string();
                    let dir = containers.open_beneath(&name).ok()?;
                    let state = StateDir::read(dir).ok()?;
                    Some((state.dir, state.tier, name))
                })
                .collect()
        }
    }
}

/// Creates a container's missing logs empty, as the reference does, so writers and we agree on
/// the file from the start; owned by the directory's owner (the container's dnsmasq, run as that
/// user, must be able to write its log). Never through a symlink leading out of the directory,
/// never opening what exists (a FIFO cannot block). Failing is not fatal: the follower waits for
/// the file.
fn create_missing_logs(dir: &Dir, tier: DnsTier, selected: &[Source], voice: Voice) {
    let Ok(state) = StateDir::read(dir.clone()) else {
        return;
    };
    let mut names = Vec::new();
    if selected.contains(&Source::Audit) {
        names.push((Source::Audit, "audit.jsonl"));
    }
    if tier.has_dnsmasq() && (selected.contains(&Source::Dns) || selected.contains(&Source::Nflog))
    {
        names.push((Source::Dns, "dnsmasq.log"));
    }
    let name = dir
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (source, file) in names {
        match state.ensure_file(file) {
            Ok(()) => {}
            Err(err) if shield_tail::Escape::of(&err).is_some() => {}
            Err(err) => voice.warn(
                &name,
                &format!(
                    "{}: cannot create {}: {err}; waiting for it",
                    source.as_str(),
                    dir.path().join(file).display()
                ),
            ),
        }
    }
}

/// What the containers thread knows of one container (host-wide).
struct Known {
    /// Its state directory, held open.
    dir: Dir,
    watch: Key,
    tier: Option<DnsTier>,
    /// The dnsmasq whose namespace its NFLOG socket is in.
    pid: Option<u32>,
    following: bool,
    /// Its domain cache while followed (shared by the dns and nflog threads).
    cache: Option<Arc<Mutex<DomainCache>>>,
}

/// The `containers` thread: tells the source threads which containers to follow.
struct Discovery {
    selected: Vec<Source>,
    from_start: bool,
    domain_cache: usize,
    voice: Voice,
    audit: Option<FileFleet>,
    dns: Option<FileFleet>,
    nflog: Option<NflogFleet>,
    known: BTreeMap<String, Known>,
    /// Lines already said about containers refused or unusable (each said once).
    refused: Vec<String>,
    /// Told when the process must stop with exit 1.
    fatal: Sender<()>,
    /// `--container` host-wide: the names or globs of the containers followed (all if empty).
    select: Vec<String>,
    /// `--metrics-*`: told when a container is followed and when it goes.
    metrics: Option<crate::metrics::Metrics>,
    /// Descriptors kept for looking at containers.
    reserve: Reserve,
    /// A container was left for later for want of descriptors: look again at the next tick.
    short: bool,
}

/// How many descriptors the containers thread keeps back for itself.
const RESERVED_DESCRIPTORS: usize = 32;

/// Descriptors kept back for the containers thread (copies of one eventfd), given up just
/// before it looks at the containers and taken again after. When the rest of the process has
/// taken every descriptor (followers hold files a root's owner can multiply), it can still
/// open a root, a container's directory and its `dns.tier`, so a container is never taken
/// for gone because it could not be looked at; and a new container is followed only while the
/// reserve can be taken again after the look, so following cannot eat it.
struct Reserve {
    base: Option<OwnedFd>,
    held: Vec<OwnedFd>,
}

impl Reserve {
    fn new() -> Reserve {
        let base = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).ok();
        let mut reserve = Reserve {
            base,
            held: Vec::with_capacity(RESERVED_DESCRIPTORS),
        };
        reserve.refill();
        reserve
    }

    /// Gives the descriptors up, for a look.
    fn release(&mut self) {
        self.held.clear();
    }

    /// Takes them again: false when not all could be (descriptors are short).
    fn refill(&mut self) -> bool {
        let Some(base) = &self.base else {
            return true;
        };
        while self.held.len() < RESERVED_DESCRIPTORS {
            match rustix::io::fcntl_dupfd_cloexec(base, 0) {
                Ok(fd) => self.held.push(fd),
                Err(_) => return false,
            }
        }
        true
    }
}

/// Whether an error says the process (or the system) is out of descriptors: the thing could
/// not be looked at, which says nothing about whether it is there.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
    )
}

/// What following one container gave, source by source.
struct Added {
    running: Vec<Source>,
    problems: Vec<(Source, String)>,
}

impl Discovery {
    fn run(
        mut self,
        containers: Containers,
        ready: Sender<Ready>,
        go: Receiver<()>,
        nflog_confined: Receiver<()>,
    ) {
        let root = match containers {
            Containers::One {
                dir,
                name,
                netns,
                tier,
            } => {
                let container = self.container(&name, dir, false, true, None);
                let netns = netns.map_or(Netns::Current, Netns::Path);
                let added = self.add(&container, tier, Some(netns));
                // The nflog thread confines itself after its one socket (or its failure).
                if self.nflog.is_some() {
                    let _ = nflog_confined.recv_timeout(Duration::from_secs(10));
                }
                for source in &self.selected {
                    let result = match added.problems.iter().find(|(s, _)| s == source) {
                        Some((_, why)) => Err(why.clone()),
                        None => Ok(()),
                    };
                    let _ = ready.send(Ready {
                        source: *source,
                        result,
                    });
                }
                None
            }
            Containers::Root(root) => Some(root),
            Containers::Everywhere { .. } => {
                return self.run_everywhere(ready, go);
            }
        };
        let Some(state_root) = root else {
            drop(ready);
            let _ = go.recv();
            self.started();
            // One container never changes: nothing more to discover. The thread stays (idle),
            // so that the process has the same threads whatever it watches.
            loop {
                std::thread::park();
            }
        };
        let root = state_root.dir.join("containers");
        // Watched by path (a wake only says "look again"); read through the held root.
        let mut set = FollowSet::new(Options::default());
        let root_key = set.watch_dirs(std::slice::from_ref(&root));
        // The root itself, by name in its parent: a rename or removal wakes the loop, whose
        // identity check below says so (the key is not needed: every wake checks).
        if let (Some(parent), Some(name)) = (
            state_root.dir.parent(),
            state_root.dir.file_name().and_then(|n| n.to_str()),
        ) {
            set.watch_names(parent, &[name]);
        }
        if !root.is_dir() {
            crate::diag::line(format_args!(
                "{} does not exist (yet): waiting for containers",
                root.display()
            ));
        }
        self.scan_root(&state_root, &mut set, true);
        self.ready_then_start(ready, go);
        let mut woken = Vec::new();
        loop {
            if !self.wait_and_look_again(&mut set, ROOT_CHECK, &mut woken) {
                return;
            }
            let short = std::mem::take(&mut self.short);
            if woken.contains(&root_key) || short {
                self.scan_root(&state_root, &mut set, false);
            }
            if !state_root.still_there() {
                crate::diag::line(format_args!(
                    "the state root {} was replaced or removed: containers under a new one are NOT followed (the ones already followed stay followed); restart shield-watch to follow the new root",
                    state_root.dir.display()
                ));
                if state_root.exit_if_lost {
                    let _ = self.fatal.send(());
                }
                return;
            }
        }
    }

    /// Every shielded container of the host: those whose dnsmasq runs now, then each new one
    /// as its dnsmasq starts (a look at `/proc` every [`PROCESS_SCAN`]; only processes not seen
    /// before are read). A container stays followed until its directory or `dns.tier` goes.
    fn run_everywhere(mut self, ready: Sender<Ready>, go: Receiver<()>) {
        let mut set = FollowSet::new(Options::default());
        let mut seen = std::collections::HashSet::new();
        self.scan_processes(&mut set, &mut seen, true);
        self.ready_then_start(ready, go);
        let mut woken = Vec::new();
        while self.wait_and_look_again(&mut set, PROCESS_SCAN, &mut woken) {
            self.scan_processes(&mut set, &mut seen, false);
        }
    }

    /// Every container present at start is followed: the selected sources are ready. Histories
    /// are read once the ready line is out (main drops `go` then): their events must not fill
    /// stdout ahead of the position sync the ready line waits for, when the reader waits for it
    /// first.
    fn ready_then_start(&self, ready: Sender<Ready>, go: Receiver<()>) {
        for source in &self.selected {
            let _ = ready.send(Ready {
                source: *source,
                result: Ok(()),
            });
        }
        drop(ready);
        let _ = go.recv();
        self.started();
    }

    /// Waits (at most `timeout`) for a watch to fire, then looks again at the containers whose
    /// `dns.tier` or `dnsmasq.pid` changed, and only those; `woken` keeps the keys for the
    /// caller. False when watching failed (said on stderr).
    fn wait_and_look_again(
        &mut self,
        set: &mut FollowSet,
        timeout: Duration,
        woken: &mut Vec<Key>,
    ) -> bool {
        woken.clear();
        if let Err(err) = set.wait(Some(timeout), woken) {
            crate::diag::line(format_args!(
                "containers: stopped watching: {}",
                crate::diag::chain(&err)
            ));
            return false;
        }
        let changed: Vec<(String, Dir)> = self
            .known
            .iter()
            .filter(|(_, k)| woken.contains(&k.watch))
            .map(|(name, k)| (name.clone(), k.dir.clone()))
            .collect();
        self.reserve.release();
        for (name, dir) in changed {
            // Renamed away, removed, or another directory (or a symlink) in its place: gone;
            // whatever is at the path now is found as new.
            let found = dir.still_at_path().then(|| look_at(&dir));
            self.update(set, &name, dir, found, false);
        }
        self.reserve.refill();
        true
    }

    /// Follows the state directory of every dnsmasq started since the last look.
    fn scan_processes(
        &mut self,
        set: &mut FollowSet,
        seen: &mut std::collections::HashSet<u32>,
        first: bool,
    ) {
        self.reserve.release();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            self.reserve.refill();
            return;
        };
        let mut alive = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            alive.insert(pid);
            if !seen.insert(pid) {
                continue;
            }
            let Some(dir) = dnsmasq_state_dir(pid) else {
                continue;
            };
            if self.known.values().any(|k| k.dir.path() == dir) {
                continue;
            }
            let dir = match checked_state_dir(&dir, pid) {
                Ok(dir) => dir,
                Err(why) => {
                    let shown = dir.display().to_string();
                    self.say_once(&shown, &why);
                    continue;
                }
            };
            if self.known.values().any(|k| k.dir.path() == dir.path()) {
                continue;
            }
            let name = self.name_for(&dir);
            if !self.selects(&name) {
                continue;
            }
            let look = look_at(&dir);
            // Following it would eat the reserve: it waits for descriptors (its process is
            // looked at again at the next scan).
            if matches!(look, Look::Unchanged) || !self.reserve.refill() {
                drop(dir);
                seen.remove(&pid);
                self.say_once(
                    &name,
                    "not followed yet: out of descriptors (raise LimitNOFILE=); looked for again every second",
                );
                self.reserve.release();
                continue;
            }
            self.update(set, &name, dir, Some(look), first);
            self.reserve.release();
        }
        self.reserve.refill();
        // Forget processes that ended (their PIDs may be used again by a new dnsmasq).
        seen.retain(|pid| alive.contains(pid));
    }

    /// A container's name: the `ROOT/containers/NAME` directory's NAME; for terok's
    /// orchestrator layout `{task_dir}/shield`, the task directory's name; else the directory's
    /// own name; suffixed with the container's 12-hex id when another container has that name.
    fn name_for(&self, dir: &Dir) -> String {
        let own = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let parent = dir
            .path()
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let base = match (own, parent) {
            (Some(own), Some(parent)) if own == "shield" => parent,
            (Some(own), _) => own,
            (None, _) => "container".to_string(),
        };
        if !self.known.contains_key(&base) {
            return base;
        }
        let id = dir
            .open_file("container.id", shield_tail::Open::ReadNoFollow)
            .ok()
            .and_then(|f| {
                let mut text = String::new();
                f.take(64).read_to_string(&mut text).ok()?;
                Some(text.trim().chars().take(12).collect::<String>())
            })
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()));
        match id {
            Some(id) => format!("{base}-{id}"),
            None => (2..)
                .map(|n| format!("{base}-{n}"))
                .find(|n| !self.known.contains_key(n))
                .expect("a free name"),
        }
    }

    /// Whether `--container` selects `name` (host-wide).
    fn selects(&self, name: &str) -> bool {
        selected(&self.select, name)
    }

    fn started(&self) {
        for fleet in [&self.audit, &self.dns].into_iter().flatten() {
            fleet.send(FileCommand::Started);
        }
    }

    /// Compares what is under `ROOT/containers` with what is known, and acts on the difference.
    fn scan_root(&mut self, root: &StateRoot, set: &mut FollowSet, first: bool) {
        self.reserve.release();
        let Some(mut present) = self.look_under(root) else {
            // Could not look (out of descriptors): nothing is known to have changed.
            self.reserve.refill();
            self.short = true;
            return;
        };
        // Following all the new ones would eat the reserve: the last ones wait for descriptors.
        let mut new: Vec<String> = present
            .keys()
            .filter(|name| !self.known.contains_key(*name))
            .cloned()
            .collect();
        while !self.reserve.refill() {
            let Some(name) = new.pop() else { break };
            present.remove(&name);
            self.say_once(
                &name,
                "not followed yet: out of descriptors (raise LimitNOFILE=); looked for again every 5 s",
            );
            self.short = true;
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|name| !present.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(dir) = self.known.get(&name).map(|k| k.dir.clone()) {
                self.update(set, &name, dir, None, first);
            }
        }
        for (name, (dir, look)) in present {
            if !matches!(look, Look::Unchanged) {
                self.update(set, &name, dir, Some(look), first);
            }
        }
    }

    /// What is under `ROOT/containers` now, looked at through the root held since the start:
    /// `None` when that could not be known (out of descriptors).
    fn look_under(&mut self, root: &StateRoot) -> Option<BTreeMap<String, (Dir, Look)>> {
        let mut present: BTreeMap<String, (Dir, Look)> = BTreeMap::new();
        let containers = match root.containers() {
            Ok(dir) => Some(dir),
            Err(e) if out_of_descriptors(&e) => return None,
            Err(e) if shield_tail::Escape::of(&e).is_some() => {
                let shown = root.dir.join("containers").display().to_string();
                self.say_once(&shown, "refused: a symbolic link out of the state root");
                None
            }
            Err(_) => None,
        };
        let entries = match containers
            .as_ref()
            .map(|dir| std::fs::read_dir(dir.through_fd()))
        {
            Some(Err(e)) if out_of_descriptors(&e) => return None,
            Some(Ok(entries)) => Some(entries),
            Some(Err(_)) | None => None,
        };
        if let (Some(containers), Some(entries)) = (&containers, entries) {
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    let shown = entry.file_name().to_string_lossy().into_owned();
                    self.say_once(&shown, "refused: its name is not UTF-8");
                    continue;
                };
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_symlink() {
                    self.say_once(&name, "refused: a symbolic link, not a directory");
                    continue;
                }
                if !kind.is_dir() || !self.selects(&name) {
                    continue;
                }
                if let Some(known) = self.known.get(&name) {
                    // Known: its own watch says when its tier or dnsmasq changes.
                    present.insert(name, (known.dir.clone(), Look::Unchanged));
                    continue;
                }
                let dir = match containers.open_beneath(&name) {
                    Ok(dir) => dir,
                    Err(e) if out_of_descriptors(&e) => {
                        // Again at the next tick.
                        self.short = true;
                        continue;
                    }
                    Err(_) => continue,
                };
                let look = look_at(&dir);
                // A new one that could not be looked at: again at the next tick.
                self.short |= matches!(look, Look::Unchanged);
                present.insert(name, (dir, look));
            }
        }
        Some(present)
    }

    /// Acts on what `name` now is: `None` when its directory is gone.
    fn update(
        &mut self,
        set: &mut FollowSet,
        name: &str,
        dir: Dir,
        found: Option<Look>,
        first: bool,
    ) {
        let absent = found.is_none();
        let mut found = found;
        if !absent && !self.known.contains_key(name) {
            let watch = set.watch_names(dir.path(), &["dns.tier", "dnsmasq.pid"]);
            self.known.insert(
                name.to_string(),
                Known {
                    dir: dir.clone(),
                    watch,
                    tier: None,
                    pid: None,
                    following: false,
                    cache: None,
                },
            );
            // Watched from now on: a look again sees what was written between the first look
            // and the watch (a `dns.tier` created empty, then written), which no watch reports.
            if !matches!(found, Some(Look::State { tier: Some(_), .. })) {
                found = Some(look_at(&dir));
            }
            if matches!(found, Some(Look::Unchanged)) {
                // Not looked at (out of descriptors): found as new again at the next look.
                if let Some(known) = self.known.remove(name) {
                    set.remove(known.watch);
                }
                return;
            }
        }
        let (tier, pid) = match found {
            None => (None, None),
            Some(Look::Unchanged) => return,
            Some(Look::Unusable(why)) => {
                self.say_once(name, &why);
                (None, None)
            }
            Some(Look::State { tier, dnsmasq }) => (tier, dnsmasq),
        };
        if absent {
            if let Some(known) = self.known.remove(name) {
                if known.following {
                    self.remove(name);
                    self.voice.tell(name, "gone");
                }
                set.remove(known.watch);
            }
            return;
        }
        let known = self.known.get_mut(name).expect("just added");
        match (known.following, tier) {
            (true, None) => {
                // Its dns.tier went: let go of it until one comes back.
                known.following = false;
                known.tier = None;
                known.pid = None;
                known.cache = None;
                self.remove(name);
                self.voice.tell(name, "gone");
            }
            (false, None) => {}
            (false, Some(tier)) => {
                known.following = true;
                known.tier = Some(tier);
                known.pid = pid.as_ref().map(|(pid, _)| *pid);
                let container = self.container(name, dir, true, first, None);
                self.known.get_mut(name).expect("known").cache = Some(container.cache.clone());
                let netns = pid.map(|(pid, argument)| Netns::Dnsmasq { pid, argument });
                let added = self.add(&container, tier, netns);
                let running: Vec<&str> = added.running.iter().map(|s| s.as_str()).collect();
                self.voice
                    .tell(name, &format!("following ({})", running.join(",")));
                for (source, why) in added.problems {
                    self.voice
                        .tell(name, &format!("{}: {why}", source.as_str()));
                }
            }
            (true, Some(_)) if known.pid != pid.as_ref().map(|(pid, _)| *pid) => {
                // Its dnsmasq restarted (or stopped): the socket follows its namespace, and
                // stays open when that is the same one.
                known.pid = pid.as_ref().map(|(pid, _)| *pid);
                let cache = known.cache.clone();
                if let (Some(nflog), Some((pid, argument))) = (&self.nflog, pid) {
                    let container = self.container(name, dir, true, first, cache);
                    let opened = nflog.open(&container, Netns::Dnsmasq { pid, argument });
                    if let Some(metrics) = &self.metrics {
                        let on = matches!(opened, Ok(Opened::Kept | Opened::New));
                        metrics.set_following(name, Source::Nflog, on);
                    }
                    match opened {
                        Ok(Opened::Kept) => {}
                        Ok(Opened::New) => self
                            .voice
                            .tell(name, &format!("nflog: following dnsmasq {pid}")),
                        Ok(Opened::Waiting(why)) | Err(why) => {
                            self.voice.tell(name, &format!("nflog: {why}"))
                        }
                    }
                }
            }
            (true, Some(_)) => {}
        }
    }

    fn say_once(&mut self, name: &str, what: &str) {
        let said = format!("{name}: {what}");
        if !self.refused.contains(&said) {
            self.voice.tell(name, what);
            self.refused.push(said);
        }
    }

    fn container(
        &self,
        name: &str,
        dir: Dir,
        host_wide: bool,
        first: bool,
        cache: Option<Arc<Mutex<DomainCache>>>,
    ) -> Container {
        // Containers present at start follow --from-start (or their cursor); those that appear
        // later are read from their start.
        Container::new(
            name,
            dir,
            host_wide,
            self.from_start || !first,
            cache,
            self.domain_cache,
        )
    }

    /// Asks each source thread to follow `container`. `netns` is where its NFLOG socket is
    /// made, `None` when that is unknown (no running dnsmasq).
    fn add(&mut self, container: &Container, tier: DnsTier, netns: Option<Netns>) -> Added {
        let mut added = Added {
            running: Vec::new(),
            problems: Vec::new(),
        };
        let mut note = |source: Source, result: Result<(), String>| match result {
            Ok(()) => added.running.push(source),
            Err(why) => added.problems.push((source, why)),
        };
        if let Some(audit) = &self.audit {
            note(Source::Audit, audit.add(container));
        }
        if tier.has_dnsmasq() {
            if let Some(dns) = &self.dns {
                let result = dns.add(container);
                if self.selected.contains(&Source::Dns) {
                    note(Source::Dns, result);
                } else if let Err(why) = result {
                    // Only the cache wanted it: nflog events go unnamed.
                    self.voice.warn(&container.name, &format!("dns: {why}"));
                }
            }
        }
        if let Some(nflog) = &self.nflog {
            let result = match (tier.has_dnsmasq(), netns) {
                (_, Some(netns @ (Netns::Current | Netns::Path(_)))) => nflog.open(container, netns),
                (false, _) => Err(format!(
                    "no dnsmasq with tier {}: its network namespace is unknown, packets are not shown",
                    tier.name()
                )),
                (true, None) => Err(
                    "no running dnsmasq started for this container (dnsmasq.pid): packets are not shown until one starts".to_string(),
                ),
                (true, Some(netns)) => nflog.open(container, netns),
            };
            match result {
                Ok(Opened::New | Opened::Kept) => note(Source::Nflog, Ok(())),
                Ok(Opened::Waiting(why)) | Err(why) => note(Source::Nflog, Err(why)),
            }
        }
        // Its blocking series exist at 0 from now on.
        if let Some(metrics) = &self.metrics {
            metrics.follow(&container.name, &self.selected, &added.running);
        }
        added
    }

    fn remove(&self, name: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.gone(name);
        }
        let name: Arc<str> = Arc::from(name);
        for fleet in [&self.audit, &self.dns].into_iter().flatten() {
            fleet.send(FileCommand::Remove(name.clone()));
        }
        if let Some(nflog) = &self.nflog {
            nflog.send(NflogCommand::Close(name));
        }
    }
}

/// What a container directory holds now.
enum Look {
    /// Known already, not looked at again (its own watch says when it changes).
    Unchanged,
    /// Its tier (`None`: no `dns.tier` yet) and its dnsmasq, when one runs.
    State {
        tier: Option<DnsTier>,
        /// Its PID and the `--conf-file=` argument its command line holds.
        dnsmasq: Option<(u32, Arc<[u8]>)>,
    },
    /// Its `dns.tier` cannot be used: why.
    Unusable(String),
}

/// Reads a container directory's tier and dnsmasq PID.
fn look_at(dir: &Dir) -> Look {
    let tier = match StateDir::read(dir.clone()) {
        Ok(state) => Some(state.tier),
        // Not looked at: nothing is known to have changed.
        Err(crate::state::StateError::NoTier {
            problem: crate::state::TierProblem::Unreadable(e),
            ..
        }) if out_of_descriptors(&e) => return Look::Unchanged,
        Err(crate::state::StateError::NoTier {
            problem: crate::state::TierProblem::Unreadable(e),
            ..
        }) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Look::Unusable(err.to_string()),
    };
    let dnsmasq = tier
        .filter(|t| t.has_dnsmasq())
        .and_then(|_| dnsmasq_pid(dir));
    Look::State { tier, dnsmasq }
}

/// The PID in `dir/dnsmasq.pid`, accepted only when that process is the dnsmasq started for
/// this container: its command line holds exactly `--conf-file=DIR/dnsmasq.conf` (how
/// terok-shield starts it, and how it recognises it); with the argument found, which the nflog
/// helper checks again before it enters the process's namespace.
fn dnsmasq_pid(dir: &Dir) -> Option<(u32, Arc<[u8]>)> {
    let mut text = String::new();
    dir.open_file("dnsmasq.pid", shield_tail::Open::ReadNoFollow)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    // A thread id would pass the command-line check (a thread's cmdline is its process's) and
    // let one process stand for as many containers as it has threads.
    if !is_thread_group_leader(pid) {
        return None;
    }
    let cmdline = cmdline(pid)?;
    let conf = dir.path().join("dnsmasq.conf");
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
        .find(|arg| wanted.iter().any(|w| w.as_slice() == *arg))
        .map(|arg| (pid, Arc::from(arg)))
}

/// Whether the `--container` names or globs `select` take the container `name` (all when none
/// is given).
fn selected(select: &[String], name: &str) -> bool {
    select.is_empty()
        || select
            .iter()
            .any(|p| glob_match(p.as_bytes(), name.as_bytes()))
}

/// Shell-style glob matching, as `fnmatch(3)` without flags: `*` any run, `?` any one
/// character, `[abc]`, `[a-z]` and `[!a]` one of a set; anything else matches itself.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // Backtracking over the last `*` only: linear for the patterns people type.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                n += 1;
                continue;
            }
            Some(b'[') => {
                if let Some((matched, len)) = class(&pattern[p..], name[n]) {
                    if matched {
                        p += len;
                        n += 1;
                        continue;
                    }
                } else if name[n] == b'[' {
                    p += 1;
                    n += 1;
                    continue;
                }
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A `[...]` class at the start of `pattern`: whether `c` is in it, and the class's length;
/// `None` when the class is not closed (then `[` is an ordinary character).
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|h| *h != b']') {
            let hi = pattern[i + 2];
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// The state directory a dnsmasq process names: `STATE` of its `--conf-file=STATE/dnsmasq.conf`
/// (absolute, as terok-shield starts it). `None` for anything else: another program, a thread,
/// a relative or odd path. The path is untrusted: [`checked_state_dir`] decides.
fn dnsmasq_state_dir(pid: u32) -> Option<PathBuf> {
    let mut comm = String::new();
    File::open(format!("/proc/{pid}/comm"))
        .ok()?
        .take(64)
        .read_to_string(&mut comm)
        .ok()?;
    if comm.trim_end() != "dnsmasq" || !is_thread_group_leader(pid) {
        return None;
    }
    cmdline(pid)?.split(|b| *b == 0).find_map(|arg| {
        let path = arg.strip_prefix(b"--conf-file=")?;
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        let sane = path.is_absolute()
            && path.file_name() == Some(std::ffi::OsStr::new("dnsmasq.conf"))
            && path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        sane.then(|| path.parent().map(Path::to_path_buf)).flatten()
    })
}

/// Accepts a state directory named by process `pid`: reached through no symbolic link root does
/// not own, and owned by the process's user (or root): a user's dnsmasq cannot make root read
/// another user's state. Returns the resolved directory, held open (opened with no symlink on
/// the way, and its owner read from the open directory).
fn checked_state_dir(dir: &Path, pid: u32) -> Result<Dir, String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut walked = PathBuf::new();
    for component in dir.components() {
        walked.push(component);
        let meta = std::fs::symlink_metadata(&walked).map_err(|e| format!("refused: {e}"))?;
        if meta.file_type().is_symlink() && meta.uid() != 0 {
            return Err(format!(
                "refused: {} is a symbolic link owned by uid {}",
                walked.display(),
                meta.uid()
            ));
        }
    }
    let resolved = std::fs::canonicalize(dir).map_err(|e| format!("refused: {e}"))?;
    let held = Dir::open_resolved(&resolved).map_err(|e| format!("refused: {e}"))?;
    let owner = rustix::fs::fstat(&held)
        .map_err(|e| format!("refused: {e}"))?
        .st_uid;
    let process = std::fs::metadata(format!("/proc/{pid}"))
        .map_err(|e| format!("refused: {e}"))?
        .uid();
    if owner != 0 && owner != process {
        return Err(format!(
            "refused: owned by uid {owner}, but its dnsmasq {pid} runs as uid {process}"
        ));
    }
    Ok(held)
}

/// The command line of process `pid` (its arguments, each ended by a NUL), at most 64 KiB.
fn cmdline(pid: u32) -> Option<Vec<u8>> {
    let mut cmdline = Vec::new();
    File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut cmdline)
        .ok()?;
    Some(cmdline)
}

/// Whether `pid` is a process (its own thread group's leader), not another process's thread.
fn is_thread_group_leader(pid: u32) -> bool {
    let mut status = String::new();
    let read = File::open(format!("/proc/{pid}/status"))
        .and_then(|f| f.take(4096).read_to_string(&mut status));
    read.is_ok()
        && status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(pid)
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
        crate::diag::line(format_args!(
            "at most {} open files: each container takes about 6; raise the hard limit (LimitNOFILE=) for more",
            now.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_the_shell_does() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("ci-*", "ci-7"));
        assert!(m("ci-*", "ci-"));
        assert!(!m("ci-*", "web"));
        assert!(m("web", "web"));
        assert!(!m("web", "web2"));
        assert!(m("web-?", "web-a"));
        assert!(!m("web-?", "web-ab"));
        assert!(m("*-[0-9]", "ci-7"));
        assert!(!m("*-[0-9]", "ci-x"));
        assert!(m("[!a]*", "bcd"));
        assert!(!m("[!a]*", "abc"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("[ab", "[ab"));
        assert!(m("*", ""));
    }

    #[test]
    fn a_thread_id_is_not_a_process() {
        let pid = std::process::id();
        assert!(is_thread_group_leader(pid));
        let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let _ = tid_tx.send(rustix::thread::gettid().as_raw_nonzero().get() as u32);
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        // A thread's /proc entry exists and its cmdline is the process's: only Tgid tells.
        assert!(Path::new(&format!("/proc/{tid}/cmdline")).exists());
        assert!(!is_thread_group_leader(tid));
        drop(done_tx);
        thread.join().unwrap();
    }
}
