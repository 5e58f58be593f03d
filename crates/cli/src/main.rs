//! `shield-watch`: the operator's live view of what a container's shield refused.
//!
//! Glue only: parse the command line, check the state directory, start one thread per source and
//! one writer thread that owns stdout, connect them with one bounded channel, and stop cleanly on
//! SIGINT/SIGTERM or when stdout closes. Exit codes: 0 clean stop, 1 unusable state, 2 usage.

mod allow_files;
mod confine;
mod containers;
mod diag;
mod files;
mod helper;
mod history;
mod journal;
mod metrics;
mod output;
mod sources;
mod state;
mod summary;

use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use clap::Parser;
use confine::Confinement;
use containers::{Containers, Runtime};
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use journal::Journal;
use metrics::Metrics;
use output::{run_writer, text_style, Msg, WriterConfig, WriterEnd};
use shield_event::{Source, TextStyle};
use shield_watch_cli::{Args, Destination, Format};
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
            diag::line(message);
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            diag::line(message);
            ExitCode::from(2)
        }
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
    if args.state_dir.is_some() && args.container.len() > 1 {
        // One container has one name.
        return Err(Failure::Usage(
            "with --state-dir, --container names the one container: give it once".into(),
        ));
    }
    // Usage first: a senseless combination is said before anything is opened.
    let history = history_plan(&args)?;
    let containers = match (&args.state_dir, root) {
        (Some(dir), _) => {
            let state = StateDir::open(dir).map_err(|e| Failure::State(e.to_string()))?;
            Containers::One {
                name: args
                    .container
                    .first()
                    .cloned()
                    .unwrap_or_else(|| state.default_container()),
                dir: state.dir,
                netns: args.netns.clone(),
                tier: state.tier,
            }
        }
        (None, Some(_)) if args.netns.is_some() => {
            // Host-wide, each container's namespace is its dnsmasq's: one path cannot say it.
            return Err(Failure::Usage(
                "--netns goes with --state-dir only (host-wide, each container's namespace is its dnsmasq's)".into(),
            ));
        }
        (None, Some(root)) => {
            let root = containers::StateRoot::open(&root, args.exit_on_lost_root, &args.container)
                .map_err(|refused| Failure::State(refused.0))?;
            std::fs::read_dir(&root.dir).map_err(|e| {
                Failure::State(format!(
                    "cannot read the state root {}: {e}",
                    root.dir.display()
                ))
            })?;
            diag::line(format_args!("state root {}", root.dir.display()));
            containers::raise_descriptor_limit();
            Containers::Root(root)
        }
        (None, None) => {
            // Nothing named: every shielded container of the host, wherever its state lives.
            diag::line("every shielded container of the host (found through its dnsmasq; --state-root ROOT for one root)");
            containers::raise_descriptor_limit();
            Containers::Everywhere {
                select: args.container.clone(),
            }
        }
    };
    let selected = select_sources(&args, &containers);
    // One container's socket may hold a flood; host-wide, a root's owner decides how many
    // namespaces (and sockets, up to --max-nflog-sockets) there are.
    let nflog_buffer = args.nflog_buffer.unwrap_or(match containers {
        Containers::One { .. } => 64 << 20,
        Containers::Root(_) | Containers::Everywhere { .. } => 8 << 20,
    });

    let saved_cursors = match &args.cursor {
        Some(path) => shield_tail::CursorFile::load(path).map_err(|e| {
            Failure::State(format!(
                "cannot read cursor file {}: {}",
                path.display(),
                diag::chain(&e)
            ))
        })?,
        None => BTreeMap::new(),
    };

    // Host-wide, the sockets in containers' namespaces are made by a helper process that keeps
    // what that takes and nothing else; forked here, while this is the only thread (signal
    // handlers are not installed yet, so the helper starts with the default ones and sets its
    // own).
    let limits = match &containers {
        Containers::Root(root) => Some(helper::Limits::new(
            &root.dir,
            args.nflog_group,
            nflog_buffer,
        )),
        Containers::Everywhere { .. } => {
            Some(helper::Limits::anywhere(args.nflog_group, nflog_buffer))
        }
        Containers::One { .. } => None,
    };
    let helper = match limits {
        // Not for a history that does not follow: no socket is made then.
        Some(limits)
            if selected.contains(&Source::Nflog)
                && history.as_ref().is_none_or(|plan| plan.follow) =>
        {
            match helper::Helper::start(limits) {
                Ok((helper, report)) => Some((helper, report)),
                Err(why) => {
                    diag::line(format_args!(
                    "nflog: the privileged helper did not start: {why}; containers' packets will not be shown"
                ));
                    None
                }
            }
        }
        _ => None,
    };

    // Signals are caught before any thread starts, so none can arrive unhandled.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|e| Failure::State(format!("cannot install signal handlers: {e}")))?;
    let signal_handle = signals.handle();

    // The listener is bound now, before confinement: Landlock then lets this process bind no
    // TCP port at all.
    let listener = match args.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
            Failure::State(format!("cannot listen on {addr} for --metrics-listen: {e}"))
        })?),
        None => None,
    };
    let metrics = (listener.is_some() || args.metrics_textfile.is_some()).then(|| {
        let single = match &containers {
            Containers::One { name, .. } => Some(name.clone()),
            Containers::Root(_) | Containers::Everywhere { .. } => None,
        };
        Metrics::new(args.metrics_domains, single)
    });
    let summary = Summary::default().with_metrics(metrics.clone());
    let journal = args.output.contains(&Destination::Journal).then(|| {
        Journal::connect(
            args.journal_socket
                .as_deref()
                .unwrap_or(std::path::Path::new(journal::DEFAULT_SOCKET)),
        )
    });
    if journal.is_some() {
        summary.lock().journal_dropped = Some(0);
    }
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
        stdout: args.output.contains(&Destination::Stdout),
        journal,
        metrics: metrics.clone(),
        pipe: output::PipeRoom::of_stdout(),
    };
    let (ready_tx, ready_rx) = unbounded::<Ready>();
    let (fatal_tx, fatal_rx) = bounded::<()>(1);
    // Dropped once the ready line is out: the sources read what was already there only then,
    // so that its events cannot fill stdout ahead of the position sync the ready line waits
    // for (a reader may wait for the ready line before reading stdout).
    let (go_tx, go_rx) = bounded::<()>(0);
    let mut thread_reports = Vec::new();
    // Confines this thread once the privileged part of starting is done; every thread started
    // after that inherits the confinement.
    let written: Vec<&std::path::Path> = [args.cursor.as_deref(), args.metrics_textfile.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let confinement = match &containers {
        Containers::One { dir, .. } => Confinement::single_container(dir.path(), &written),
        Containers::Root(root) => {
            let root = &root.dir;
            summary.lock().by_container = Some(foldhash::HashMap::default());
            Confinement::host_wide(root, &written)
        }
        // State directories anywhere: reading is not confined to a directory (the files are
        // still opened beneath each state directory, never through a symlink out of it).
        Containers::Everywhere { .. } => {
            summary.lock().by_container = Some(foldhash::HashMap::default());
            Confinement::host_wide(Path::new("/"), &written)
        }
    };
    let helper = helper.map(|(helper, report)| {
        thread_reports.push(format!("nflog helper (pid {}) {report}", helper.pid()));
        helper
    });
    let interrupted = Arc::new(AtomicBool::new(false));
    // Held by the writer while it runs: its receiver learns that the writer is gone (the
    // history's merge waits on it beside the batches the writer returns).
    let (writer_alive, writer_gone) = bounded::<()>(0);
    let runtime = Runtime {
        containers,
        selected: selected.clone(),
        cursors: saved_cursors,
        from_start: args.from_start,
        options: files::follower_options(args.max_line),
        all_query_types: args.all_query_types,
        domain_cache: args.domain_cache,
        nflog_group: args.nflog_group,
        nflog_buffer: usize::try_from(nflog_buffer).unwrap_or(usize::MAX),
        show_link_multicast: args.show_link_multicast,
        max_nflog_sockets: args.max_nflog_sockets,
        tx: tx.clone(),
        summary: summary.clone(),
        // A clone: main keeps one sender, so the channel never disconnects (a disconnected
        // channel would make the select below spin).
        fatal: fatal_tx.clone(),
        history,
        interrupted: interrupted.clone(),
        writer_gone,
    };
    let (signal_tx, signal_rx) = unbounded();
    let mut writer = None;
    let started = containers::start(runtime, ready_tx, go_rx, &confinement, helper, || {
        spawn("signals", move || {
            for signal in signals.forever() {
                if signal != SIGUSR1 {
                    interrupted.store(true, Ordering::Relaxed);
                }
                if signal_tx.send(signal).is_err() {
                    break;
                }
            }
        });
        let summary = summary.clone();
        writer = Some(spawn("writer", move || {
            let _alive = writer_alive;
            run_writer(
                rx,
                io::stdout().lock(),
                writer_config,
                summary,
                writer_done_tx,
            )
        }));
    });
    let writer = writer.expect("started once main is confined");
    let expected = match started {
        containers::Started::Following(expected) => expected,
        containers::Started::HistoryOnly => {
            // Everything asked for is in the channel: write it and stop (exit 0).
            let _ = tx.send(Msg::Shutdown);
            drop(tx);
            let end = writer_done_rx.recv().unwrap_or(WriterEnd::Done);
            let _ = writer.join();
            signal_handle.close();
            if let WriterEnd::Failed(err) = end {
                return Err(Failure::Output(format!("writing to stdout failed: {err}")));
            }
            return Ok(());
        }
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
            for report in &thread_reports {
                diag::line(report);
            }
            let serving = start_metrics(listener, metrics, args.metrics_textfile.clone());
            let stop = announce_ready(
                &running,
                serving,
                &tx,
                &signal_rx,
                &writer_done_rx,
                &confinement,
            );
            drop(go_tx);
            stop
        }
        Err(stop) => Some(stop),
    };
    let stop = match stop {
        Some(stop) => stop,
        None => wait_for_stop(&signal_rx, &writer_done_rx, &fatal_rx, &summary),
    };
    let lost_root = matches!(stop, Stop::LostRoot);

    // Stop: everything read so far is written, positions are saved, then the summary.
    let end = match stop {
        Stop::Signal | Stop::LostRoot => {
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
        WriterEnd::Done => diag::raw(&*summary.lock()),
        // The reader went away (`| head`): that is how a pipeline ends, not an error.
        WriterEnd::Closed => {}
        WriterEnd::Failed(err) => {
            return Err(Failure::Output(format!("writing to stdout failed: {err}")));
        }
    }
    if lost_root {
        return Err(Failure::State(
            "stopped: the state root was replaced or removed (--exit-on-lost-root)".into(),
        ));
    }
    Ok(())
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

/// What `--since`, `--until`, `--last` and `--no-follow` ask for; `None` for the live stream
/// alone. Combinations that make no sense are usage errors that say why.
fn history_plan(args: &Args) -> Result<Option<history::Plan>, Failure> {
    let wants_history = args.since.is_some() || args.until.is_some() || args.last.is_some();
    if !wants_history {
        if args.no_follow {
            // Without history there is nothing already written to stop at but everything:
            // --from-start --no-follow reads whole files and ends.
            if !args.from_start {
                return Err(Failure::Usage(
                    "--no-follow stops at the end of history: give --since, --until, --last or --from-start".into(),
                ));
            }
        } else {
            return Ok(None);
        }
    }
    for (given, flag) in [
        (args.cursor.is_some(), "--cursor"),
        (args.from_start && wants_history, "--from-start"),
    ] {
        if given && wants_history {
            return Err(Failure::Usage(format!(
                "--since/--until/--last choose where to start by time; {flag} chooses otherwise: give one of them"
            )));
        }
    }
    let now = jiff::ZonedDateTime::now();
    let when = |flag: &str, value: &Option<String>| -> Result<Option<i64>, Failure> {
        value
            .as_deref()
            .map(|text| {
                shield_event::parse_when(text, &now)
                    .map(|t| i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX))
                    .map_err(|e| Failure::Usage(format!("{flag}: {e}")))
            })
            .transpose()
    };
    let since = when("--since", &args.since)?;
    let until = when("--until", &args.until)?;
    if let (Some(since), Some(until)) = (since, until) {
        if until < since {
            return Err(Failure::Usage(format!(
                "--until ({}) is before --since ({}): nothing could match",
                args.until.as_deref().unwrap_or_default(),
                args.since.as_deref().unwrap_or_default()
            )));
        }
    }
    let follow = !args.no_follow && args.until.is_none();
    let plan = history::Plan {
        resume: BTreeMap::new(),
        follow,
        window: shield_tail::Window { since, until },
        last: args.last,
        actions: args.action.clone(),
        all_query_types: args.all_query_types,
        json_lines: (args.format == Format::Json && args.output.contains(&Destination::Stdout))
            || args.output.contains(&Destination::Journal),
    };
    Ok(Some(plan))
}

/// The sources to run: `--source`, or every one that applies.
fn select_sources(args: &Args, containers: &Containers) -> Vec<Source> {
    let mut wanted: Vec<Source> = if args.source.is_empty() {
        Source::INPUTS.to_vec()
    } else {
        args.source.clone()
    };
    wanted.sort();
    wanted.dedup();
    let no_dnsmasq = matches!(containers, Containers::One { tier, .. } if !tier.has_dnsmasq());
    if no_dnsmasq && wanted.contains(&Source::Dns) {
        diag::line("the DNS tier runs no dnsmasq: no dns source, events carry IP addresses only");
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
    /// The state root was replaced or removed, with `--exit-on-lost-root` (exit 1).
    LostRoot,
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
                        Err(reason) => diag::line(format_args!("{}: not running: {reason}", ready.source.as_str())),
                    }
                }
                Err(_) => break,
            },
            recv(signal_rx) -> signal => match signal {
                Ok(SIGUSR1) => diag::raw(&*summary.lock()),
                _ => return Err(Stop::Signal),
            },
            recv(writer_done_rx) -> end => return Err(Stop::Writer(end.unwrap_or(WriterEnd::Done))),
        }
    }
    Ok(running)
}

/// Starts the metrics threads, once every container present at start is followed (so the first
/// textfile and the first scrape already have their series) and `main` is confined (they
/// inherit it). Returns the address served, for the ready line.
fn start_metrics(
    listener: Option<TcpListener>,
    metrics: Option<Metrics>,
    textfile: Option<PathBuf>,
) -> Option<std::net::SocketAddr> {
    let metrics = metrics?;
    let mut serving = None;
    if let Some(listener) = listener {
        serving = listener.local_addr().ok();
        let metrics = metrics.clone();
        spawn("metrics", move || metrics::http::serve(listener, metrics));
    }
    if let Some(path) = textfile {
        spawn("textfile", move || metrics::textfile::run(path, metrics));
    }
    serving
}

/// Saves the starting positions, then prints the confinement line and the one ready line.
fn announce_ready(
    running: &[Source],
    serving: Option<std::net::SocketAddr>,
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
    diag::line(confinement.report());
    match serving {
        Some(addr) => diag::line(format_args!(
            "ready ({}); metrics on http://{addr}/metrics",
            names.join(",")
        )),
        None => diag::line(format_args!("ready ({})", names.join(","))),
    }
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
    fatal_rx: &Receiver<()>,
    summary: &Summary,
) -> Stop {
    loop {
        select! {
            recv(fatal_rx) -> fatal => if fatal.is_ok() { return Stop::LostRoot },
            recv(signal_rx) -> signal => match signal {
                Ok(SIGUSR1) => diag::raw(&*summary.lock()),
                _ => return Stop::Signal,
            },
            recv(writer_done_rx) -> end => return Stop::Writer(end.unwrap_or(WriterEnd::Done)),
        }
    }
}
