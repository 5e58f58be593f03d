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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use rustix::event::EventfdFlags;
use shield_dnsmasq::DomainCache;
use shield_event::Source;
use shield_tail::{FollowSet, Key, Options, Waker};

use crate::confine::Confinement;
use crate::files::{FileCommand, FileThread};
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
        /// The state directory.
        dir: PathBuf,
        /// `--container`, else the directory's name.
        name: String,
        /// `--netns`.
        netns: Option<PathBuf>,
        /// Its DNS tier.
        tier: DnsTier,
    },
    /// Every container under `ROOT/containers/` (`--state-root`), as they come and go.
    Root(PathBuf),
}

/// How per-container stderr lines are said: host-wide each names its container; one container
/// says its problems plainly and says nothing of following or going (it is the whole process).
#[derive(Clone, Copy, Debug)]
pub enum Voice {
    /// `--state-dir`.
    One,
    /// `--state-root`.
    Host,
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
        }
    }
}

/// One container as the source threads learn of it.
#[derive(Clone)]
pub struct Container {
    /// Its name on events, in the summary and in its cursor keys.
    pub name: Arc<str>,
    /// Its state directory.
    pub dir: PathBuf,
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
    /// Events go here.
    pub tx: Sender<Msg>,
    /// Shared counters.
    pub summary: Summary,
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

/// How long discovery waits for a source thread's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Starts the threads. The nflog thread starts first, unconfined: host-wide it confines itself
/// at once keeping what entering containers takes (`nflog_confinement`); for one container it
/// makes its one socket first and then takes `confinement` like every other thread. Then this
/// thread applies `confinement`, inherited by every thread started after. Returns how many
/// ready reports main waits for.
pub fn start(
    runtime: Runtime,
    ready: Sender<Ready>,
    go: Receiver<()>,
    confinement: &Confinement,
    nflog_confinement: Option<Confinement>,
) -> usize {
    let one = matches!(runtime.containers, Containers::One { .. });
    let voice = if one { Voice::One } else { Voice::Host };
    // Missing logs of the containers present now are created while privileges allow it.
    for (dir, tier) in present_at_start(&runtime.containers) {
        create_missing_logs(&dir, tier, &runtime.selected, voice);
    }
    let wants_nflog = runtime.selected.contains(&Source::Nflog);
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
        };
        let when = match &nflog_confinement {
            Some(nflog) => ConfineWhen::Now(nflog.clone()),
            None => ConfineWhen::AfterFirstOpen(confinement.clone()),
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
    if nflog.is_some() {
        // Started confined, without the nflog thread's capabilities: packets from containers
        // are parsed here, never where the capabilities are.
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
        metrics: runtime.summary.metrics().cloned(),
    };
    let selected = runtime.selected.clone();
    let containers = runtime.containers;
    crate::spawn("containers", move || {
        discovery.run(containers, ready, go, confined_rx)
    });
    selected.len()
}

/// The containers present at start, with their tiers (for creating missing logs).
fn present_at_start(containers: &Containers) -> Vec<(PathBuf, DnsTier)> {
    match containers {
        Containers::One { dir, tier, .. } => vec![(dir.clone(), *tier)],
        Containers::Root(root) => std::fs::read_dir(root.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|entry| {
                let state = StateDir::open(&entry.path()).ok()?;
                Some((state.dir, state.tier))
            })
            .collect(),
    }
}

/// Creates a container's missing logs empty, as the reference does, so writers and we agree on
/// the file from the start; owned by the directory's owner (the container's dnsmasq, run as that
/// user, must be able to write its log). Never through a symlink leading out of the directory,
/// never opening what exists (a FIFO cannot block). Failing is not fatal: the follower waits for
/// the file.
fn create_missing_logs(dir: &Path, tier: DnsTier, selected: &[Source], voice: Voice) {
    let Ok(state) = StateDir::open(dir) else {
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
                    dir.join(file).display()
                ),
            ),
        }
    }
}

/// What the containers thread knows of one container (host-wide).
struct Known {
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
    /// `--metrics-*`: told when a container is followed and when it goes.
    metrics: Option<crate::metrics::Metrics>,
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
            Containers::Root(root) => Some(root.join("containers")),
        };
        let Some(root) = root else {
            drop(ready);
            let _ = go.recv();
            self.started();
            // One container never changes: nothing more to discover.
            return;
        };
        let mut set = FollowSet::new(Options::default());
        let root_key = set.watch_dirs(std::slice::from_ref(&root));
        if !root.is_dir() {
            crate::diag::line(format_args!(
                "{} does not exist (yet): waiting for containers",
                root.display()
            ));
        }
        self.scan_root(&root, &mut set, true);
        for source in &self.selected {
            let _ = ready.send(Ready {
                source: *source,
                result: Ok(()),
            });
        }
        drop(ready);
        // Histories are read once every container present at start is followed and the ready
        // line is out (main drops `go` then): their events must not fill stdout ahead of the
        // position sync the ready line waits for, when the reader waits for it first.
        let _ = go.recv();
        self.started();
        let mut woken = Vec::new();
        loop {
            woken.clear();
            if let Err(err) = set.wait(None, &mut woken) {
                crate::diag::line(format_args!("containers: stopped watching: {err}"));
                return;
            }
            // Only the containers whose dns.tier or dnsmasq.pid changed are looked at again.
            let names: Vec<String> = self
                .known
                .iter()
                .filter(|(_, k)| woken.contains(&k.watch))
                .map(|(name, _)| name.clone())
                .collect();
            for name in names {
                let dir = root.join(&name);
                let found = dir.is_dir().then(|| look_at(&dir));
                self.update(&root, &mut set, &name, found, false);
            }
            if woken.contains(&root_key) {
                self.scan_root(&root, &mut set, false);
            }
        }
    }

    fn started(&self) {
        for fleet in [&self.audit, &self.dns].into_iter().flatten() {
            fleet.send(FileCommand::Started);
        }
    }

    /// Compares what is under `ROOT/containers` with what is known, and acts on the difference.
    fn scan_root(&mut self, root: &Path, set: &mut FollowSet, first: bool) {
        let mut present: BTreeMap<String, Look> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(root) {
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
                if !kind.is_dir() {
                    continue;
                }
                let look = if self.known.contains_key(&name) {
                    // Known: its own watch says when its tier or dnsmasq changes.
                    Look::Unchanged
                } else {
                    look_at(&entry.path())
                };
                present.insert(name, look);
            }
        }
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|name| !present.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.update(root, set, &name, None, first);
        }
        for (name, look) in present {
            if !matches!(look, Look::Unchanged) {
                self.update(root, set, &name, Some(look), first);
            }
        }
    }

    /// Acts on what `name` now is: `None` when its directory is gone.
    fn update(
        &mut self,
        root: &Path,
        set: &mut FollowSet,
        name: &str,
        found: Option<Look>,
        first: bool,
    ) {
        let absent = found.is_none();
        let (tier, pid) = match found {
            None => (None, None),
            Some(Look::Unchanged) => return,
            Some(Look::Unusable(why)) => {
                self.say_once(name, &why);
                (None, None)
            }
            Some(Look::State { tier, pid }) => (tier, pid),
        };
        let dir = root.join(name);
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
        if !self.known.contains_key(name) {
            let watch = set.watch_names(&dir, &["dns.tier", "dnsmasq.pid"]);
            self.known.insert(
                name.to_string(),
                Known {
                    watch,
                    tier: None,
                    pid: None,
                    following: false,
                    cache: None,
                },
            );
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
                known.pid = pid;
                let container = self.container(name, dir, true, first, None);
                self.known.get_mut(name).expect("known").cache = Some(container.cache.clone());
                let netns = pid.map(Netns::Dnsmasq);
                let added = self.add(&container, tier, netns);
                let running: Vec<&str> = added.running.iter().map(|s| s.as_str()).collect();
                self.voice
                    .tell(name, &format!("following ({})", running.join(",")));
                for (source, why) in added.problems {
                    self.voice
                        .tell(name, &format!("{}: {why}", source.as_str()));
                }
            }
            (true, Some(_)) if known.pid != pid => {
                // Its dnsmasq restarted (or stopped): the socket follows its namespace, and
                // stays open when that is the same one.
                known.pid = pid;
                let cache = known.cache.clone();
                if let (Some(nflog), Some(pid)) = (&self.nflog, pid) {
                    let container = self.container(name, dir, true, first, cache);
                    let opened = nflog.open(&container, Netns::Dnsmasq(pid));
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
        dir: PathBuf,
        host_wide: bool,
        first: bool,
        cache: Option<Arc<Mutex<DomainCache>>>,
    ) -> Container {
        Container {
            name: Arc::from(name),
            dir,
            keyed_by_name: host_wide,
            // Containers present at start follow --from-start (or their cursor); those that
            // appear later are read from their start.
            from_start: self.from_start || !first,
            cache: cache
                .unwrap_or_else(|| Arc::new(Mutex::new(DomainCache::new(self.domain_cache)))),
            audit_naming: if host_wide {
                AuditNaming::Watcher
            } else {
                AuditNaming::Entry
            },
        }
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
        pid: Option<u32>,
    },
    /// Its `dns.tier` cannot be used: why.
    Unusable(String),
}

/// Reads a container directory's tier and dnsmasq PID.
fn look_at(dir: &Path) -> Look {
    let tier = match StateDir::open(dir) {
        Ok(state) => Some(state.tier),
        Err(crate::state::StateError::NoTier {
            problem: crate::state::TierProblem::Unreadable(e),
            ..
        }) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Look::Unusable(err.to_string()),
    };
    let pid = tier
        .filter(|t| t.has_dnsmasq())
        .and_then(|_| dnsmasq_pid(dir));
    Look::State { tier, pid }
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
