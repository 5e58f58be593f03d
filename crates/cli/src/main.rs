//! `shield-watch`: the operator's live view of what a container's shield refused.
//!
//! Glue only: parse the command line, check the state directory, start one thread per source and
//! one writer thread that owns stdout, connect them with one bounded channel, and stop cleanly on
//! SIGINT/SIGTERM or when stdout closes. Exit codes: 0 clean stop, 1 unusable state, 2 usage.

mod confine;
mod host;
mod output;
mod sources;
mod state;
mod summary;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;

use clap::Parser;
use confine::Confinement;
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use shield_dnsmasq::DomainCache;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use output::{run_writer, text_style, Msg, WriterConfig, WriterEnd};
use shield_event::{Source, TextStyle};
use shield_watch_cli::{Args, Format};
use sources::follow::FileSource;
use sources::Ready;
use state::StateDir;
use summary::Summary;

/// Capacity of the event channel: enough to ride out a burst while the writer catches up,
/// small enough that a stalled reader of stdout applies back-pressure instead of eating memory.
const CHANNEL_CAPACITY: usize = 16 * 1024;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            // --help and --version are not errors; clap knows which exit code fits.
            let code = err.exit_code();
            let _ = err.print();
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::State(message) | Failure::Output(message)) => {
            eprintln!("shield-watch: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("shield-watch: {message}");
            ExitCode::from(2)
        }
    }
}

/// An error and its causes, as stderr says them: `what: cause: cause`. shield-tail's errors
/// keep the OS error as their `source`, out of their own message.
pub(crate) struct Chain<'a>(pub(crate) &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

/// Why the process could not run.
enum Failure {
    /// The state directory is unusable (exit 1).
    State(String),
    /// stdout failed for another reason than its reader leaving (exit 1).
    Output(String),
    /// The command line does not say what to watch (exit 2).
    Usage(String),
}

/// One container, or every container of a state root.
enum Mode {
    Single(StateDir),
    Host(PathBuf),
}

fn run(args: Args) -> Result<(), Failure> {
    // `--state-root` defaults to terok-shield's own variable, unless a single container is
    // asked for.
    let root = args.state_root.clone().or_else(|| {
        args.state_dir
            .is_none()
            .then(|| std::env::var_os("TEROK_SHIELD_STATE_DIR"))
            .flatten()
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if args.container.is_some() && args.state_dir.is_none() {
        // Host-wide, every event carries its own container's name.
        return Err(Failure::Usage(
            "--container goes with --state-dir only".into(),
        ));
    }
    let mode = match (&args.state_dir, root) {
        (Some(dir), _) => {
            Mode::Single(StateDir::open(dir).map_err(|e| Failure::State(e.to_string()))?)
        }
        (None, Some(_)) if args.netns.is_some() => {
            // Host-wide, each container's namespace is its dnsmasq's: one path cannot say it.
            return Err(Failure::Usage(
                "--netns goes with --state-dir only (host-wide, each container's namespace is its dnsmasq's)".into(),
            ));
        }
        (None, Some(root)) => {
            std::fs::read_dir(&root).map_err(|e| {
                Failure::State(format!("cannot read the state root {}: {e}", root.display()))
            })?;
            host::raise_descriptor_limit();
            Mode::Host(root)
        }
        (None, None) => return Err(Failure::Usage(
            "give --state-dir DIR (one container) or --state-root ROOT (every container; default $TEROK_SHIELD_STATE_DIR)".into(),
        )),
    };
    let selected = match &mode {
        Mode::Single(state) => select_sources(&args, Some(state)),
        Mode::Host(_) => select_sources(&args, None),
    };

    let saved_cursors = match &args.cursor {
        Some(path) => shield_tail::CursorFile::load(path).map_err(|e| {
            Failure::State(format!(
                "cannot read cursor file {}: {}",
                path.display(),
                Chain(&e)
            ))
        })?,
        None => BTreeMap::new(),
    };

    // Signals are caught before any thread starts, so none can arrive unhandled.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|e| Failure::State(format!("cannot install signal handlers: {e}")))?;
    let signal_handle = signals.handle();

    let summary = Summary::default();
    let (tx, rx) = bounded::<Msg>(CHANNEL_CAPACITY);
    let (writer_done_tx, writer_done_rx) = bounded(1);
    let writer_config = WriterConfig {
        format: args.format,
        style: match args.format {
            Format::Text => text_style(args.color),
            Format::Json => TextStyle::default(),
        },
        actions: args.action.clone(),
        dedup: args.dedup,
        cursor_file: args.cursor.clone(),
        cursors: saved_cursors.clone(),
    };
    let (ready_tx, ready_rx) = unbounded::<Ready>();
    // Dropped once the ready line is out: the sources read what was already there only then,
    // so that its events cannot fill stdout ahead of the position sync the ready line waits
    // for (a reader may wait for the ready line before reading stdout).
    let (go_tx, go_rx) = bounded::<()>(0);
    let mut thread_reports = Vec::new();
    // Confines this thread once the privileged part of starting is done; every thread started
    // after that, the ones below included, inherits the confinement.
    let (expected, confinement) = match mode {
        Mode::Single(state) => {
            let confinement = Confinement::single_container(&state.dir, args.cursor.as_deref());
            let container = args
                .container
                .clone()
                .unwrap_or_else(|| state.default_container());
            let launcher = Launcher {
                args: &args,
                state: &state,
                container,
                saved_cursors,
                tx: tx.clone(),
                ready: ready_tx,
                go: go_rx,
                summary: summary.clone(),
            };
            (launcher.start(&selected, &confinement), confinement)
        }
        Mode::Host(root) => {
            summary.lock().by_container = Some(BTreeMap::new());
            let cursor = args.cursor.as_deref();
            let confinement = Confinement::host_wide(&root, cursor, confine::KEEP_SINGLE_CONTAINER);
            let nflog_confinement = Confinement::host_wide_nflog(&root);
            // Without the nflog source there is no nflog thread to report on.
            if selected.contains(&Source::Nflog) {
                thread_reports.push(("nflog thread", nflog_confinement.clone()));
            }
            let host = host::Host {
                containers: root.join("containers"),
                selected: selected.clone(),
                cursors: saved_cursors,
                from_start: args.from_start,
                options: shield_tail::Options {
                    max_line: usize::try_from(args.max_line).unwrap_or(usize::MAX),
                    ..shield_tail::Options::default()
                },
                all_query_types: args.all_query_types,
                domain_cache: args.domain_cache,
                nflog_group: args.nflog_group,
                nflog_buffer: usize::try_from(args.nflog_buffer).unwrap_or(usize::MAX),
                tx: tx.clone(),
                summary: summary.clone(),
            };
            (
                host::start(host, ready_tx, go_rx, &confinement, nflog_confinement),
                confinement,
            )
        }
    };

    let (signal_tx, signal_rx) = unbounded();
    spawn("signals", move || {
        for signal in signals.forever() {
            if signal_tx.send(signal).is_err() {
                break;
            }
        }
    });
    let writer = {
        let summary = summary.clone();
        spawn("writer", move || {
            run_writer(
                rx,
                io::stdout().lock(),
                writer_config,
                summary,
                writer_done_tx,
            )
        })
    };

    let stop = match wait_until_ready(
        expected,
        &selected,
        &ready_rx,
        &signal_rx,
        &writer_done_rx,
        &summary,
    ) {
        Ok(running) => {
            for (thread, confinement) in &thread_reports {
                eprintln!("shield-watch: {thread} {}", confinement.report());
            }
            let stop = announce_ready(&running, &tx, &signal_rx, &writer_done_rx, &confinement);
            drop(go_tx);
            stop
        }
        Err(stop) => Some(stop),
    };
    let stop = match stop {
        Some(stop) => stop,
        None => wait_for_stop(&signal_rx, &writer_done_rx, &summary),
    };

    // Stop: everything read so far is written, positions are saved, then the summary.
    let end = match stop {
        Stop::Signal => {
            let _ = tx.send(Msg::Shutdown);
            drop(tx);
            let end = writer_done_rx.recv().unwrap_or(WriterEnd::Done);
            let _ = writer.join();
            end
        }
        Stop::Writer(end) => end,
    };
    signal_handle.close();
    match end {
        WriterEnd::Done => eprintln!("{}", *summary.lock()),
        // The reader went away (`| head`): that is how a pipeline ends, not an error.
        WriterEnd::Closed => {}
        WriterEnd::Failed(err) => {
            return Err(Failure::Output(format!("writing to stdout failed: {err}")));
        }
    }
    Ok(())
}

/// What every source thread is started with.
struct Launcher<'a> {
    args: &'a Args,
    state: &'a StateDir,
    container: String,
    saved_cursors: BTreeMap<String, shield_tail::Cursor>,
    tx: Sender<Msg>,
    ready: Sender<Ready>,
    go: Receiver<()>,
    summary: Summary,
}

impl Launcher<'_> {
    /// Starts a thread per source; returns how many ready reports main must wait for.
    ///
    /// What needs privileges comes first: creating missing logs, and the nflog thread, which
    /// confines itself once bound. Then this thread confines itself, and the file sources start
    /// confined.
    fn start(self, selected: &[Source], confinement: &Confinement) -> usize {
        // The query log is read once, by one thread, whether it reports blocked lookups (the
        // dns source), only names addresses for nflog events (the cache), or both.
        let cache = (self.state.tier.has_dnsmasq()
            && (selected.contains(&Source::Dns) || selected.contains(&Source::Nflog)))
        .then(|| Arc::new(Mutex::new(DomainCache::new(self.args.domain_cache))));
        if selected.contains(&Source::Audit) {
            self.ensure_file(Source::Audit, "audit.jsonl");
        }
        if cache.is_some() {
            self.ensure_file(Source::Dns, "dnsmasq.log");
        }
        // Every source thread reports once; main waits for each (the cache-only reading of the
        // query log too: nflog events must not come out before it is primed) and lists only the
        // selected sources in the ready line.
        let mut threads = 0;
        if selected.contains(&Source::Nflog) {
            self.nflog(cache.clone(), confinement.clone());
            threads += 1;
        }
        confinement.apply_here("main");
        if selected.contains(&Source::Audit) {
            self.audit();
            threads += 1;
        }
        if let Some(cache) = cache {
            self.query_log(cache, selected.contains(&Source::Dns));
            threads += 1;
        }
        threads
    }

    fn options(&self) -> shield_tail::Options {
        shield_tail::Options {
            max_line: usize::try_from(self.args.max_line).unwrap_or(usize::MAX),
            ..shield_tail::Options::default()
        }
    }

    /// Where a file source starts: its saved cursor, else the start or the end of the file.
    fn start_for(&self, source: Source) -> shield_tail::Start {
        match self.saved_cursors.get(source.as_str()) {
            Some(cursor) => shield_tail::Start::Cursor(*cursor),
            None if self.args.from_start => shield_tail::Start::Beginning,
            None => shield_tail::Start::End,
        }
    }

    /// Creates a missing log empty, as the reference does, so writers and we agree on the file
    /// from the start. Failing to is not fatal: the follower waits for it. A symlink out of
    /// the state directory is not created through; the follower names it.
    fn ensure_file(&self, source: Source, name: &str) {
        match self.state.ensure_file(name) {
            Ok(()) => {}
            Err(err) if shield_tail::Escape::of(&err).is_some() => {}
            Err(err) => eprintln!(
                "shield-watch: {}: cannot create {}: {err}; waiting for it",
                source.as_str(),
                self.state.dir.join(name).display()
            ),
        }
    }

    fn file_source(&self, source: Source, path: PathBuf, start: shield_tail::Start) -> FileSource {
        FileSource {
            source,
            key: Arc::from(source.as_str()),
            path,
            start,
            options: self.options(),
            go: self.go.clone(),
            tx: self.tx.clone(),
            summary: self.summary.clone(),
        }
    }

    fn audit(&self) {
        let file = self.file_source(
            Source::Audit,
            self.state.audit_log(),
            self.start_for(Source::Audit),
        );
        let handler = sources::audit::AuditLines {
            container: self.container.clone(),
            summary: self.summary.clone(),
        };
        let ready = Some(self.ready.clone());
        spawn("audit", move || file.run(ready, handler));
    }

    fn nflog(&self, cache: Option<Arc<Mutex<DomainCache>>>, confinement: Confinement) {
        let nflog = sources::nflog::NflogSource {
            confinement,
            group: self.args.nflog_group,
            buffer: usize::try_from(self.args.nflog_buffer).unwrap_or(usize::MAX),
            netns: self.args.netns.clone(),
            container: self.container.clone(),
            cache,
            tx: self.tx.clone(),
            summary: self.summary.clone(),
        };
        let ready = self.ready.clone();
        spawn("nflog", move || nflog.run(ready));
    }

    fn query_log(&self, cache: Arc<Mutex<DomainCache>>, emit: bool) {
        let start = self.start_for(Source::Dns);
        // Existing content is read for the cache even when events start at the end.
        let prime_only_existing = matches!(start, shield_tail::Start::End);
        let start = if prime_only_existing {
            shield_tail::Start::Beginning
        } else {
            start
        };
        let file = self.file_source(Source::Dns, self.state.dnsmasq_log(), start);
        let options = sources::dns::DnsOptions {
            all_query_types: self.args.all_query_types,
            prime_only_existing,
            emit,
        };
        let handler = sources::dns::DnsLines::new(
            options,
            sources::dns::SharedAllowList::load_and_watch(&self.state.dir),
            cache,
            self.container.clone(),
        );
        let ready = Some(self.ready.clone());
        spawn("dns", move || file.run(ready, handler));
    }
}

/// Starts a named thread; failing to is not something the process can recover from.
///
/// Returns once the thread runs: it then carries its name (which a thread sets itself, when it
/// is first scheduled), so that everything started before the ready line is visible as itself
/// in `/proc/PID/task` when the ready line comes.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    try_spawn(name, body).expect("spawning a thread")
}

/// [`spawn`] that says why it could not start the thread.
fn try_spawn(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    let (running, started) = bounded::<()>(0);
    let handle = thread::Builder::new().name(name.into()).spawn(move || {
        let _ = running.send(());
        body()
    })?;
    let _ = started.recv();
    Ok(handle)
}

/// The sources to run: `--source`, or every one that applies to this container.
fn select_sources(args: &Args, state: Option<&StateDir>) -> Vec<Source> {
    let mut wanted: Vec<Source> = if args.source.is_empty() {
        Source::INPUTS.to_vec()
    } else {
        args.source.clone()
    };
    wanted.sort();
    wanted.dedup();
    if state.is_some_and(|s| !s.tier.has_dnsmasq()) && wanted.contains(&Source::Dns) {
        eprintln!("shield-watch: the DNS tier runs no dnsmasq: no dns source, events carry IP addresses only");
        wanted.retain(|s| *s != Source::Dns);
    }
    if args.no_nflog {
        wanted.retain(|s| *s != Source::Nflog);
    }
    wanted
}

/// Why the main loop stopped.
enum Stop {
    /// SIGINT or SIGTERM.
    Signal,
    /// The writer ended on its own (stdout closed or failed).
    Writer(WriterEnd),
}

/// Waits for `expected` ready reports; returns the selected sources that run, or a stop reason
/// when a signal or the writer ends things first.
fn wait_until_ready(
    expected: usize,
    selected: &[Source],
    ready_rx: &Receiver<Ready>,
    signal_rx: &Receiver<i32>,
    writer_done_rx: &Receiver<WriterEnd>,
    summary: &Summary,
) -> Result<Vec<Source>, Stop> {
    let mut running = Vec::new();
    let mut pending = expected;
    while pending > 0 {
        select! {
            recv(ready_rx) -> ready => match ready {
                Ok(ready) => {
                    pending -= 1;
                    match ready.result {
                        Ok(()) if selected.contains(&ready.source) => running.push(ready.source),
                        Ok(()) => {}
                        Err(reason) => eprintln!("shield-watch: {}: not running: {reason}", ready.source.as_str()),
                    }
                }
                Err(_) => break,
            },
            recv(signal_rx) -> signal => match signal {
                Ok(SIGUSR1) => eprintln!("{}", *summary.lock()),
                _ => return Err(Stop::Signal),
            },
            recv(writer_done_rx) -> end => return Err(Stop::Writer(end.unwrap_or(WriterEnd::Done))),
        }
    }
    Ok(running)
}

/// Saves the starting positions, then prints the confinement line and the one ready line.
fn announce_ready(
    running: &[Source],
    tx: &Sender<Msg>,
    signal_rx: &Receiver<i32>,
    writer_done_rx: &Receiver<WriterEnd>,
    confinement: &Confinement,
) -> Option<Stop> {
    // The sources' starting positions are on disk before anyone is told we are ready: a
    // restart after that (even a kill -9) resumes from them, never from "the start" again,
    // which would take the files rotated meanwhile for history.
    debug_delay_sync();
    let (synced_tx, synced_rx) = crossbeam_channel::bounded(1);
    if tx.send(Msg::Sync(synced_tx)).is_ok() {
        select! {
            recv(synced_rx) -> _ => {},
            recv(signal_rx) -> _ => return Some(Stop::Signal),
            recv(writer_done_rx) -> end => return Some(Stop::Writer(end.unwrap_or(WriterEnd::Done))),
        }
    }
    // Alphabetical, whatever order the sources became ready in: one stable line to wait for.
    let mut names: Vec<&str> = running.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    // Every thread is confined by now (the sources that confine themselves do so before they
    // report): say how, just before the line everybody waits for.
    eprintln!("shield-watch: {}", confinement.report());
    eprintln!("shield-watch: ready ({})", names.join(","));
    None
}

/// Debug builds only: `SHIELD_WATCH_DEBUG_DELAY_SYNC_MS` delays the position sync before the
/// ready line, so a test can show that no source fills stdout ahead of it (the sources wait for
/// the ready line before reading what was already there). Release builds have no such hook.
fn debug_delay_sync() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("SHIELD_WATCH_DEBUG_DELAY_SYNC_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn wait_for_stop(
    signal_rx: &Receiver<i32>,
    writer_done_rx: &Receiver<WriterEnd>,
    summary: &Summary,
) -> Stop {
    loop {
        select! {
            recv(signal_rx) -> signal => match signal {
                Ok(SIGUSR1) => eprintln!("{}", *summary.lock()),
                _ => return Stop::Signal,
            },
            recv(writer_done_rx) -> end => return Stop::Writer(end.unwrap_or(WriterEnd::Done)),
        }
    }
}
