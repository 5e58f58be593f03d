//! History (`--since`, `--until`, `--last N`): what the containers' logs already hold, read
//! through every rotated and compressed file, merged across sources and containers in time
//! order, before the live stream goes on from exactly where the history ended.
//!
//! A few worker threads (one per core, at most [`WORKERS`]) share the logs of every (container,
//! source): each log is pulled through its own `HistoryReader` and its lines become events with
//! the same handlers as the live threads, a run of events at a time; `merge` takes the oldest
//! head of all logs each time (memory: a few runs per log, never the history). A worker writes
//! each event's JSON line beside it (a [`Slot`]) while the event is in its cache; the merge moves
//! the boxed slot into the writer's batch by a swap with one the writer is done with, reading
//! neither. Runs go back to their worker once the merge has taken their events: once the first
//! runs are filled, no event is allocated. NFLOG has no history: the kernel keeps none.

use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use jiff::{Timestamp, ZonedDateTime};
use shield_dnsmasq::DomainCache;
use shield_event::{Event, Source};
use shield_tail::{Error, History, HistoryLine, HistoryReader, Options, Start, Window};

use crate::containers::{Container, Voice};
use crate::output::{Msg, Slot};
use crate::sources::audit::AuditLines;
use crate::sources::dns::{DnsLines, DnsOptions, SharedAllowList};
use crate::sources::follow::LineHandler;
use crate::summary::Summary;

/// What history is asked for.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--since` / `--until`, in nanoseconds since the epoch.
    pub window: Window,
    /// `--last N`: the last N events that pass `actions` (within the window).
    pub last: Option<usize>,
    /// `--action`, applied here too so that `--last` counts only what would be written.
    pub actions: Vec<String>,
    /// `--all-query-types`.
    pub all_query_types: bool,
    /// The writer writes each event's JSON line (to stdout in `--format json`, or to the
    /// journal): the workers write it, while the event is still in their cache.
    pub json_lines: bool,
    /// Whether the live stream follows the history: it is then read on until the live
    /// followers can start where it ended ([`read`]).
    pub follow: bool,
    /// A catch-up ([`Handover::resume`]): only these logs (by cursor key), each read on from
    /// where its last reading ended, instead of every log over `window`.
    pub resume: BTreeMap<String, Resume>,
}

/// Where a log's reading ended, so that a later reading goes on from there by the lines' own
/// times, whatever was rotated or compressed in between: from `since` (the time of the last
/// line read; the window's start when none was), past the `skip` lines of exactly that time
/// read already. Lines of a log are in time order, as history assumes throughout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    pub since: Option<i64>,
    pub skip: usize,
}

/// How one log's history ended: where its live follower starts, and where a catch-up reading
/// would go on.
#[derive(Clone, Debug)]
pub struct Handover {
    /// A cursor just after the live file's last line at the history's snapshot, or the
    /// beginning when there was no live file.
    pub start: Start,
    pub resume: Resume,
}

/// Events a worker reads ahead for one log at a time.
const RUN: usize = 64;

/// Runs per log: one at the merge, one waiting for it, one being filled.
const RUNS_PER_LOG: usize = 3;

/// Worker threads at most, whatever the number of cores.
const WORKERS: usize = 4;

/// One log's events on their way from its worker to the merge and back.
struct Run {
    /// The log's index among its worker's.
    log: usize,
    /// The first `len` are the run's events (with their JSON lines, with
    /// [`Plan::json_lines`]), oldest first, each with the time it is ordered by; the rest are
    /// spares, filled again next time.
    events: Vec<(i64, Box<Slot>)>,
    len: usize,
}

impl Run {
    fn new(log: usize) -> Run {
        Run {
            log,
            events: Vec::with_capacity(RUN),
            len: 0,
        }
    }

    /// Makes sure there is an event to fill next, `events[len]` (whatever it held before: the
    /// handler resets it), counted by setting `len` one further.
    fn make_spare(&mut self) {
        if self.len == self.events.len() {
            self.events.push((0, Box::default()));
        }
    }
}

/// What a worker sends the merge for one log.
enum Piece {
    /// Events, oldest first.
    Events(Run),
    /// Done: the cursor key and how the log ends.
    End(String, Handover),
}

/// Reads the history of `containers` for `sources` and sends its events to the writer in time
/// order. Returns where each file's live follower starts (by cursor key), so that the live
/// stream neither misses nor repeats a line; `None` when the writer went away.
fn replay(
    containers: &[Container],
    sources: &[Source],
    plan: &Plan,
    options: &Options,
    voice: Voice,
    writer: &Writer<'_>,
    summary: &Summary,
) -> Option<BTreeMap<String, Handover>> {
    let mut logs = Vec::new();
    for container in containers {
        for source in [Source::Audit, Source::Dns] {
            let resumed =
                plan.resume.is_empty() || plan.resume.contains_key(&container.cursor_key(source));
            if sources.contains(&source) && resumed {
                logs.push((container.clone(), source));
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.clamp(1, WORKERS).min(logs.len().max(1));
    let mut shares: Vec<(Vec<Log>, Sender<Run>, Receiver<Run>)> = (0..workers)
        .map(|_| {
            let (back, free) = crossbeam_channel::unbounded();
            (Vec::new(), back, free)
        })
        .collect();
    let mut feeds = Vec::new();
    for (i, (container, source)) in logs.into_iter().enumerate() {
        let (share, back, _) = &mut shares[i % workers];
        let (out, from) = crossbeam_channel::bounded(RUNS_PER_LOG + 1);
        feeds.push(Feed {
            from,
            back: back.clone(),
            run: None,
            at: 0,
            done: false,
        });
        share.push(Log {
            container,
            source,
            out,
        });
    }
    for (logs, back, free) in shares {
        let worker = Worker {
            logs,
            plan: plan.clone(),
            options: options.clone(),
            voice,
            summary: summary.clone(),
        };
        crate::spawn("history", move || worker.run(back, &free));
    }
    merge(feeds, plan.last, writer)
}

/// Catch-up readings at most after the history: each is needed only when logrotate rotated a
/// log again during the one before (milliseconds, for a catch-up).
const CATCH_UP_ROUNDS: usize = 8;

/// [`replay`], then, when the live stream follows ([`Plan::follow`]; without following the
/// history is what was written when it was read), as many catch-up readings as it takes for
/// the live followers to start where the history ended. A follower resumes from the live file of the history's snapshot and
/// reads on through the files rotated after it, but never a compressed one: logrotate may have
/// rotated twice while a long history was read, and `delaycompress` compressed the file the
/// cursor names, or one after it, meanwhile. So each log whose live file is no longer the one of
/// its snapshot (or that had none, and has one now) is read again by the history, which reads
/// compressed files, on from where its lines ended by their own times ([`Resume`]); what comes
/// out then is as new as the live stream. `None` when the writer went away or a signal stopped
/// it.
pub fn read(
    containers: &[Container],
    sources: &[Source],
    plan: &Plan,
    options: &Options,
    voice: Voice,
    writer: &Writer<'_>,
    summary: &Summary,
) -> Option<BTreeMap<String, Handover>> {
    let mut ends = replay(containers, sources, plan, options, voice, writer, summary)?;
    if !plan.follow {
        return Some(ends);
    }
    for _ in 0..CATCH_UP_ROUNDS {
        let mut resume = BTreeMap::new();
        for container in containers {
            for &source in sources {
                let key = container.cursor_key(source);
                match ends.get(&key) {
                    Some(end) if moved_on(container, source, &end.start) => {
                        resume.insert(key, end.resume);
                    }
                    _ => {}
                }
            }
        }
        if resume.is_empty() {
            break;
        }
        let again = Plan {
            last: None,
            resume,
            ..plan.clone()
        };
        ends.extend(replay(
            containers, sources, &again, options, voice, writer, summary,
        )?);
    }
    Some(ends)
}

/// Whether `source`'s log of `container` has a live file now that is not the one `start` was
/// taken in: rotated since (or created, where there was none).
fn moved_on(container: &Container, source: Source, start: &Start) -> bool {
    let path = container.dir.through_fd().join(log_name(source));
    let Ok(now) = std::fs::symlink_metadata(path) else {
        return false;
    };
    match start {
        Start::Cursor(cursor) => !cursor.is_in(&now),
        _ => true,
    }
}

/// The name of `source`'s log in a state directory.
fn log_name(source: Source) -> &'static str {
    match source {
        Source::Dns => "dnsmasq.log",
        _ => "audit.jsonl",
    }
}

/// Where the history goes, and what stops it.
pub struct Writer<'a> {
    /// The writer's channel.
    pub tx: &'a Sender<Msg>,
    /// Set on SIGINT or SIGTERM: the history stops there.
    pub interrupted: &'a AtomicBool,
    /// Disconnected once the writer is gone (stdout closed).
    pub gone: &'a Receiver<()>,
}

/// One log's queue at the merge.
struct Feed {
    from: Receiver<Piece>,
    /// Where emptied runs go back to be filled again.
    back: Sender<Run>,
    /// The run being taken from, while it has events left; `at` is the next.
    run: Option<Run>,
    at: usize,
    done: bool,
}

impl Feed {
    /// Makes sure a run with events is here, unless the log is done; records its end.
    fn fill(&mut self, ends: &mut BTreeMap<String, Handover>) {
        while self.run.is_none() && !self.done {
            match self.from.recv() {
                Ok(Piece::Events(run)) if run.len > 0 => {
                    self.run = Some(run);
                    self.at = 0;
                }
                Ok(Piece::Events(run)) => {
                    let _ = self.back.send(run);
                }
                Ok(Piece::End(key, handover)) => {
                    ends.insert(key, handover);
                    self.done = true;
                }
                Err(_) => self.done = true,
            }
        }
    }

    /// The time of the next event, if one is here.
    fn head(&self) -> Option<i64> {
        self.run.as_ref().map(|run| run.events[self.at].0)
    }

    /// The next event (with its JSON line if the worker wrote it); [`Feed::advance`] moves past
    /// it (what is left in its place is the run's to fill again).
    fn next(&mut self) -> Option<&mut Box<Slot>> {
        let run = self.run.as_mut()?;
        Some(&mut run.events[self.at].1)
    }

    /// Moves past the next event; an emptied run goes back to its worker.
    fn advance(&mut self) {
        let Some(run) = &mut self.run else { return };
        self.at += 1;
        if self.at == run.len {
            if let Some(run) = self.run.take() {
                // A worker that is gone needs it no more.
                let _ = self.back.send(run);
            }
        }
    }
}

/// The k-way merge: the oldest pending event of all logs next (ties in log order, then in each
/// log's order). With `last`, only the last `last` are written, at the end. `None` when the
/// writer went away, or when a signal stops it: what was handed over is written.
fn merge(
    mut feeds: Vec<Feed>,
    last: Option<usize>,
    writer: &Writer<'_>,
) -> Option<BTreeMap<String, Handover>> {
    let Writer {
        tx,
        interrupted,
        gone,
    } = *writer;
    let mut ends = BTreeMap::new();
    // (Reverse time, log index): the heap's top is the oldest head.
    let mut heads = BinaryHeap::new();
    for (i, feed) in feeds.iter_mut().enumerate() {
        feed.fill(&mut ends);
        if let Some(time) = feed.head() {
            heads.push(std::cmp::Reverse((time, i)));
        }
    }
    let mut tail: VecDeque<Event> = VecDeque::new();
    // Events go to the writer in batches (one message for many), at most `IN_FLIGHT` of them
    // out at once: the writer returns each once written, and the merge waits for one when all
    // are out (memory stays bounded whatever the history).
    let mut pool = Pool::new(gone.clone());
    let mut out = pool.take()?;
    // The top is replaced by the same log's next head (one sift, not a pop and a push), or
    // popped when the log is done.
    let mut taken = 0u32;
    while let Some(mut top) = heads.peek_mut() {
        // A signal stops the history here (looked at once per batch's worth of events): what
        // was handed to the writer is written, nothing more.
        taken = taken.wrapping_add(1);
        if taken % EVENTS_PER_LOOK == 0 && interrupted.load(Ordering::Relaxed) {
            if last.is_none() && !out.is_empty() {
                let _ = tx.send(Msg::Events(out));
            }
            return None;
        }
        let std::cmp::Reverse((_, i)) = *top;
        let feed = &mut feeds[i];
        let Some(slot) = feed.next() else {
            PeekMut::pop(top);
            continue;
        };
        match last {
            Some(n) => {
                if tail.len() == n {
                    tail.pop_front();
                }
                if n > 0 {
                    let fresh = Event::new(String::new(), Source::Watch, "", "");
                    tail.push_back(std::mem::replace(&mut slot.event, fresh));
                }
            }
            None => {
                // A swap: the writer's spent event goes to the run, to be filled again.
                out.push_swap(slot);
                pool.send_if_full(&mut out, tx)?;
            }
        }
        feed.advance();
        feed.fill(&mut ends);
        match feed.head() {
            Some(time) => *top = std::cmp::Reverse((time, i)),
            None => {
                PeekMut::pop(top);
            }
        }
    }
    for event in tail {
        *out.next_slot() = event;
        out.push();
        pool.send_if_full(&mut out, tx)?;
    }
    if !out.is_empty() && tx.send(Msg::Events(out)).is_err() {
        return None;
    }
    Some(ends)
}

/// Events the merge takes between two looks at whether a signal asks it to stop.
const EVENTS_PER_LOOK: u32 = 256;

/// Batches the merge may have out at once (at the writer or in the channel).
const IN_FLIGHT: usize = 8;

/// The merge's batches: made up to [`IN_FLIGHT`], then only those the writer returns.
struct Pool {
    back: Sender<crate::output::Batch>,
    returned: Receiver<crate::output::Batch>,
    made: usize,
    /// Disconnected once the writer is gone: the batches it held never come back (those queued
    /// for it stay in the channel, whose senders live on).
    writer_gone: Receiver<()>,
}

impl Pool {
    fn new(writer_gone: Receiver<()>) -> Pool {
        let (back, returned) = crossbeam_channel::bounded(IN_FLIGHT);
        Pool {
            back,
            returned,
            made: 0,
            writer_gone,
        }
    }

    /// Sends `out` once full (a fresh one in its place); `None` when the writer is gone.
    fn send_if_full(&mut self, out: &mut crate::output::Batch, tx: &Sender<Msg>) -> Option<()> {
        if out.is_full() {
            let next = self.take()?;
            tx.send(Msg::Events(std::mem::replace(out, next))).ok()?;
        }
        Some(())
    }

    /// An empty batch; `None` when the writer is gone.
    fn take(&mut self) -> Option<crate::output::Batch> {
        if let Ok(batch) = self.returned.try_recv() {
            return Some(batch);
        }
        if self.made < IN_FLIGHT {
            self.made += 1;
            return Some(crate::output::Batch::new(self.back.clone()));
        }
        // The writer holds every batch and returns each once written, unless it is gone.
        crossbeam_channel::select! {
            recv(self.returned) -> batch => batch.ok(),
            recv(self.writer_gone) -> _ => None,
        }
    }
}

/// One (container, source) log, as a worker is given it.
struct Log {
    container: Container,
    source: Source,
    /// To the merge.
    out: Sender<Piece>,
}

/// A worker: reads its share of the logs, a run at a time, whichever run the merge returns.
struct Worker {
    logs: Vec<Log>,
    plan: Plan,
    options: Options,
    voice: Voice,
    summary: Summary,
}

impl Worker {
    /// Fills runs until every log is done (or the merge is gone). `back` seeds `free` with
    /// [`RUNS_PER_LOG`] runs a log; after that only the merge returns them.
    fn run(self, back: Sender<Run>, free: &Receiver<Run>) {
        let now = ZonedDateTime::now();
        let mut histories: Vec<Option<History>> = self.logs.iter().map(|l| self.open(l)).collect();
        let mut readers: Vec<LogReader<'_, _>> = Vec::new();
        for (log, history) in self.logs.iter().zip(histories.iter_mut()) {
            readers.push(self.reader(log, history.as_mut(), &now));
        }
        let mut left = 0;
        for (i, reader) in readers.iter_mut().enumerate() {
            if reader.done {
                reader.finish(&self.logs[i], &self.voice);
                continue;
            }
            left += 1;
            for _ in 0..RUNS_PER_LOG {
                let _ = back.send(Run::new(i));
            }
        }
        // From here only the merge returns runs: when it is gone, `free` says so.
        drop(back);
        let actions = &self.plan.actions;
        let admits = |event: &Event| actions.is_empty() || actions.contains(&event.action);
        while left > 0 {
            let Ok(mut run) = free.recv() else { return };
            let (log, reader) = (&self.logs[run.log], &mut readers[run.log]);
            if reader.done {
                continue;
            }
            run.len = 0;
            if let Err(err) = reader.fill(&mut run, &admits, self.plan.json_lines) {
                stopped(log, &self.voice, &err);
            }
            if run.len > 0 && log.out.send(Piece::Events(run)).is_err() {
                return;
            }
            if reader.done {
                left -= 1;
                reader.finish(log, &self.voice);
            }
        }
    }

    /// The log's history, or `None` (said here) when it cannot be opened: its reader is then done
    /// before it starts.
    fn open(&self, log: &Log) -> Option<History> {
        match History::open_at(&log.container.dir, log_name(log.source), &self.options) {
            Ok(history) => Some(history),
            Err(err) => {
                self.voice.warn(
                    &log.container.name,
                    &format!(
                        "{}: no history: {}",
                        log.source.as_str(),
                        crate::diag::chain(&err)
                    ),
                );
                None
            }
        }
    }

    /// The reader of `log` over its `history` (none: a log that is done before it starts).
    /// `--last` reads its lines here, newest first, keeping those whose events would be written.
    fn reader<'h>(
        &self,
        log: &Log,
        history: Option<&'h mut History>,
        now: &ZonedDateTime,
    ) -> LogReader<'h, impl FnMut(&[u8]) -> Option<i64>> {
        let mut reader = LogReader {
            lines: Lines::Done,
            handler: handler(log, &self.plan, &self.summary),
            source: log.source,
            previous: None,
            key: log.container.cursor_key(log.source),
            end: Start::End,
            last: None,
            skip: 0,
            since: self.plan.window.since,
            notices: Vec::new(),
            done: true,
        };
        let mut window = self.plan.window;
        if let Some(resume) = self.plan.resume.get(&reader.key) {
            window.since = resume.since;
            reader.since = resume.since;
            reader.skip = resume.skip;
        }
        let Some(history) = history else {
            return reader;
        };
        reader.end = history.live_end();
        reader.done = false;
        let time_of = clock(log.source, now.clone());
        let plan = &self.plan;
        let Some(n) = plan.last else {
            reader.lines = Lines::Window(Box::new(history.reader(window, time_of)));
            return reader;
        };
        let source = log.source;
        let mut judge = handler(log, plan, &self.summary);
        let keep = |bytes: &[u8], time: Option<i64>| {
            let in_window = time.is_none_or(|t| {
                window.since.is_none_or(|s| t >= s) && window.until.is_none_or(|u| t <= u)
            });
            in_window
                && event_of(&mut judge, source, bytes, time)
                    .is_some_and(|e| plan.actions.is_empty() || plan.actions.contains(&e.action))
        };
        let mut kept = Vec::new();
        let result = history.last(n, time_of, keep, |line| {
            kept.push((line.bytes.to_vec(), line.time, line.rotated));
            true
        });
        if let Err(err) = result {
            stopped(log, &self.voice, &err);
        }
        reader.notices = history.take_notices();
        reader.lines = Lines::Last {
            lines: kept.into_iter(),
            current: Vec::new(),
        };
        reader
    }
}

/// The handler the live thread of `log`'s source uses, for its container.
fn handler(log: &Log, plan: &Plan, summary: &Summary) -> Box<dyn LineHandler> {
    let container = &log.container;
    match log.source {
        Source::Dns => Box::new(DnsLines::new(
            DnsOptions {
                all_query_types: plan.all_query_types,
                prime_only_existing: false,
                emit: true,
                // Each event is stamped with its line's time (`stamp`).
                stamp: |_| {},
            },
            SharedAllowList::load(&container.dir, &Voice::Quiet, &container.name),
            // History names nothing: only nflog events are named, and NFLOG has no history.
            Arc::new(Mutex::new(DomainCache::new(16))),
            container.name.to_string(),
        )),
        _ => Box::new(AuditLines {
            container: container.name.to_string(),
            naming: container.audit_naming,
            summary: summary.clone(),
        }),
    }
}

/// Says that reading `log`'s history stopped at `err` (what was read before it stands).
fn stopped(log: &Log, voice: &Voice, err: &Error) {
    voice.warn(
        &log.container.name,
        &format!(
            "{}: history stopped: {}",
            log.source.as_str(),
            crate::diag::chain(err)
        ),
    );
}

/// How a log's line tells its time: a dnsmasq line's syslog stamp (through a [`MinuteCache`]),
/// an audit entry's `ts`.
fn clock(source: Source, now: ZonedDateTime) -> impl FnMut(&[u8]) -> Option<i64> {
    let mut minutes = MinuteCache::default();
    move |line: &[u8]| match source {
        Source::Dns => minutes.time(line, &now),
        _ => line_time(source, line, &now),
    }
}

/// Where one log's lines come from.
enum Lines<'h, C> {
    /// A window, read forwards as the merge asks for more.
    Window(Box<HistoryReader<'h, C>>),
    /// The last lines (`--last`), read newest first beforehand and handed out oldest first.
    Last {
        lines: std::vec::IntoIter<(Vec<u8>, Option<i64>, bool)>,
        current: Vec<u8>,
    },
    /// None: the history could not be opened.
    Done,
}

impl<C: FnMut(&[u8]) -> Option<i64>> Lines<'_, C> {
    /// The next line, if any.
    fn next(&mut self) -> Result<Option<HistoryLine<'_>>, Error> {
        match self {
            Lines::Window(reader) => reader.next_line(),
            Lines::Last { lines, current } => Ok(lines.next().map(|(bytes, time, rotated)| {
                *current = bytes;
                HistoryLine {
                    bytes: current,
                    time,
                    order_time: time,
                    rotated,
                }
            })),
            Lines::Done => Ok(None),
        }
    }

    /// What the history had to say, not yet taken.
    fn take_notices(&mut self) -> Vec<String> {
        match self {
            Lines::Window(reader) => reader.take_notices(),
            _ => Vec::new(),
        }
    }
}

/// One log at its worker: its lines, its handler, and where its events stand.
struct LogReader<'h, C> {
    lines: Lines<'h, C>,
    handler: Box<dyn LineHandler>,
    source: Source,
    /// The time of the last timed line read: where a line without one stands.
    previous: Option<i64>,
    /// The cursor key and where the live follower starts, sent when done.
    key: String,
    end: Start,
    /// The time of the last line read and how many lines of exactly that time were read
    /// ([`Resume`]); the lines of a resumed reading's first time still to pass over; where
    /// the window started.
    last: Option<(i64, usize)>,
    skip: usize,
    since: Option<i64>,
    /// Said when done.
    notices: Vec<String>,
    done: bool,
}

impl<C: FnMut(&[u8]) -> Option<i64>> LogReader<'_, C> {
    /// Fills `run` (emptied) with up to [`RUN`] events that `admits` lets through, and their
    /// JSON lines if `json_lines`; at the end of the lines (or at an error, which stops the log)
    /// the reader is done.
    fn fill(
        &mut self,
        run: &mut Run,
        admits: &dyn Fn(&Event) -> bool,
        json_lines: bool,
    ) -> Result<(), Error> {
        let LogReader {
            lines,
            handler,
            source,
            previous,
            done,
            last,
            skip,
            since,
            ..
        } = self;
        let mut result = Ok(());
        // The handler is set up once for the run (its cache locked once: it is this log's own),
        // and each line is parsed into a run's spare event, counted only when kept.
        handler.with_lines(&mut |parse| {
            while run.len < RUN {
                let (bytes, own) = match lines.next() {
                    Ok(Some(line)) => {
                        // Where a catch-up would go on ([`Resume`]), and the lines this one,
                        // a catch-up, passes over: those of its first time read before.
                        if let Some(at) = line.order_time {
                            if *skip > 0 && Some(at) == *since {
                                *skip -= 1;
                                *last = Some((at, last.map_or(0, |(_, n)| n) + 1));
                                continue;
                            }
                            *skip = 0;
                            *last = match *last {
                                Some((t, n)) if t == at => Some((t, n + 1)),
                                _ => Some((at, 1)),
                            };
                        }
                        (line.bytes, line.time)
                    }
                    Ok(None) => {
                        *done = true;
                        break;
                    }
                    Err(err) => {
                        result = Err(err);
                        *done = true;
                        break;
                    }
                };
                // A line without a time stands at the time of the one before it.
                let time = own.or(*previous);
                if own.is_some() {
                    *previous = own;
                }
                run.make_spare();
                let (at, slot) = &mut run.events[run.len];
                let event = slot.refill();
                if parse.line(bytes, false, event) && admits(event) {
                    if *source == Source::Dns {
                        stamp(event, time);
                    }
                    *at = time.unwrap_or(i64::MIN);
                    if json_lines {
                        slot.write_json();
                    }
                    run.len += 1;
                }
            }
        });
        result
    }

    /// Says what the history had to say and sends the log's end to the merge.
    fn finish(&mut self, log: &Log, voice: &Voice) {
        self.notices.extend(self.lines.take_notices());
        for notice in self.notices.drain(..) {
            voice.warn(
                &log.container.name,
                &format!("{}: {notice}", log.source.as_str()),
            );
        }
        let start = std::mem::replace(&mut self.end, Start::End);
        let resume = match self.last {
            Some((since, skip)) => Resume {
                since: Some(since),
                skip,
            },
            None => Resume {
                since: self.since,
                skip: self.skip,
            },
        };
        let handover = Handover { start, resume };
        let _ = log
            .out
            .send(Piece::End(std::mem::take(&mut self.key), handover));
    }
}

const NANOS: i64 = 1_000_000_000;

/// Stamps a dnsmasq event with its line's time; a line without one (or out of range) with the
/// current time, as the live thread would.
fn stamp(event: &mut Event, time: Option<i64>) {
    event.ts.clear();
    // Seconds and nanoseconds apart (no 128-bit division, once per event).
    let split = |t: i64| Timestamp::new(t.div_euclid(NANOS), t.rem_euclid(NANOS) as i32).ok();
    match time.and_then(split) {
        Some(ts) => shield_event::write_timestamp(ts, &mut event.ts),
        None => shield_event::write_now(&mut event.ts),
    }
}

/// The event a history line gives, if any, stamped with the line's own time (dnsmasq lines;
/// audit entries carry their own `ts`).
fn event_of(
    handler: &mut Box<dyn LineHandler>,
    source: Source,
    bytes: &[u8],
    time: Option<i64>,
) -> Option<Event> {
    let mut event = Event::new(String::new(), Source::Watch, "", "");
    let mut produced = false;
    handler.with_lines(&mut |lines| produced = lines.line(bytes, false, &mut event));
    if !produced {
        return None;
    }
    if source == Source::Dns {
        stamp(&mut event, time);
    }
    Some(event)
}

/// A line's time in nanoseconds: a dnsmasq line's syslog stamp in the host's zone (the year the
/// latest that does not put it after `now`), an audit entry's `ts`.
pub fn line_time(source: Source, line: &[u8], now: &ZonedDateTime) -> Option<i64> {
    let ts = match source {
        Source::Dns => shield_dnsmasq::parse_stamp(line)?.resolve(now)?.timestamp(),
        _ => audit_ts(line)?,
    };
    i64::try_from(ts.as_nanosecond()).ok()
}

/// The time of dnsmasq lines, resolved (year, zone) once per minute of stamps rather than once
/// per line: a line's time is its minute's plus its seconds. Zone changes happen on minute
/// boundaries, so this is exact; a long history has many lines per minute.
#[derive(Default)]
struct MinuteCache {
    /// `Mon dd hh:mm` of the last minute resolved, and its time in nanoseconds.
    last: Option<([u8; 12], Option<i64>)>,
}

impl MinuteCache {
    fn time(&mut self, line: &[u8], now: &ZonedDateTime) -> Option<i64> {
        let stamp = line.get(..15)?;
        let seconds = match (stamp[12], stamp[13], stamp[14]) {
            (b':', a @ b'0'..=b'5', b @ b'0'..=b'9') => i64::from((a - b'0') * 10 + (b - b'0')),
            _ => return None,
        };
        let key: [u8; 12] = stamp[..12].try_into().ok()?;
        let base = match self.last {
            Some((k, base)) if k == key => base,
            _ => {
                let mut minute = [0u8; 15];
                minute[..12].copy_from_slice(&key);
                minute[12..].copy_from_slice(b":00");
                let base = line_time(Source::Dns, &minute, now);
                self.last = Some((key, base));
                base
            }
        };
        Some(base? + seconds * 1_000_000_000)
    }
}

/// An audit entry's `ts` (RFC 3339), read without parsing the whole entry.
fn audit_ts(line: &[u8]) -> Option<Timestamp> {
    let key = b"\"ts\":\"";
    let at = memchr::memmem::find(line, key)? + key.len();
    let rest = &line[at..];
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The merge writes every reader's events once, oldest first across readers (ties in
        /// reader order), each reader's own order kept; with `last`, only the newest N of that.
        #[test]
        fn the_merge_is_a_reference_sort_of_every_reader(
            streams in proptest::collection::vec(
                (proptest::collection::vec(0i64..50, 0..40), 1usize..8), 0..6),
            last in proptest::option::of(0usize..30),
        ) {
            let mut feeds = Vec::new();
            let mut reference = Vec::new();
            for (i, (mut times, batch)) in streams.into_iter().enumerate() {
                times.sort_unstable();
                let (out, from) = crossbeam_channel::unbounded();
                let tagged: Vec<(i64, String)> = times
                    .iter()
                    .enumerate()
                    .map(|(seq, t)| {
                        let tag = format!("s{i}-{seq}");
                        reference.push((*t, i, seq, tag.clone()));
                        (*t, tag)
                    })
                    .collect();
                let slot = |container: &str, source| {
                    let mut slot = Box::new(Slot::new());
                    slot.event = Event::new(String::new(), source, "denied", container);
                    slot
                };
                for chunk in tagged.chunks(batch) {
                    let mut events: Vec<(i64, Box<Slot>)> = chunk
                        .iter()
                        .map(|(t, tag)| (*t, slot(tag, Source::Audit)))
                        .collect();
                    // Runs carry spare events beyond their length, as reused ones do.
                    events.push((-1, slot("spare", Source::Watch)));
                    let run = Run { log: i, events, len: chunk.len() };
                    out.send(Piece::Events(run)).unwrap();
                }
                let handover = Handover { start: Start::End, resume: Resume::default() };
                out.send(Piece::End(format!("key{i}"), handover)).unwrap();
                let (back, _) = crossbeam_channel::unbounded();
                feeds.push(Feed { from, back, run: None, at: 0, done: false });
            }
            reference.sort();
            let mut want: Vec<String> = reference.into_iter().map(|r| r.3).collect();
            if let Some(n) = last {
                want = want.split_off(want.len().saturating_sub(n));
            }
            let readers = feeds.len();
            let (tx, rx) = crossbeam_channel::unbounded();
            let (_alive, gone) = crossbeam_channel::bounded(0);
            let writer = Writer { tx: &tx, interrupted: &AtomicBool::new(false), gone: &gone };
            let ends = merge(feeds, last, &writer).unwrap();
            prop_assert_eq!(ends.len(), readers);
            drop(tx);
            let got: Vec<String> = rx
                .iter()
                .flat_map(|m| match m {
                    Msg::Events(batch) => {
                        batch.events().map(|e| e.container.clone()).collect()
                    }
                    _ => vec![String::new()],
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn audit_and_dnsmasq_lines_have_their_times() {
        let now: ZonedDateTime = "2026-12-04T12:00:00[UTC]".parse().unwrap();
        let audit = br#"{"ts":"2026-12-04T10:00:00+00:00","action":"denied"}"#;
        let t = line_time(Source::Audit, audit, &now).unwrap();
        assert_eq!(t, 1_796_378_400_000_000_000);
        let dns = b"Dec  4 10:00:00 dnsmasq[1]: query[A] x.example from 10.0.2.100";
        assert_eq!(line_time(Source::Dns, dns, &now), Some(t));
        // A December line read in January belongs to the year before.
        let january: ZonedDateTime = "2027-01-01T00:10:00[UTC]".parse().unwrap();
        let dec31 = b"Dec 31 23:59:00 dnsmasq[1]: query[A] x.example from 10.0.2.100";
        let t = line_time(Source::Dns, dec31, &january).unwrap();
        assert_eq!(
            Timestamp::from_nanosecond(i128::from(t))
                .unwrap()
                .to_string(),
            "2026-12-31T23:59:00Z"
        );
        assert_eq!(line_time(Source::Audit, b"{\"ts\":\"t1\"}", &now), None);
        // Once per minute or per line, the same times.
        let mut minutes = MinuteCache::default();
        for line in [
            &b"Dec  4 10:00:00 dnsmasq[1]: x"[..],
            b"Dec  4 10:00:59 dnsmasq[1]: x",
            b"Dec  4 10:01:07 dnsmasq[1]: x",
            b"Dec 31 23:59:30 dnsmasq[1]: x",
        ] {
            assert_eq!(minutes.time(line, &now), line_time(Source::Dns, line, &now));
        }
        assert_eq!(minutes.time(b"Dec  4 10:00:6x dnsmasq", &now), None);
    }
}
