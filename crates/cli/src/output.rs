//! The writer thread: the only owner of stdout. Filters, deduplicates, formats, flushes when the
//! channel runs dry, and saves read positions once what precedes them is out.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use shield_event::{Event, Source, TextStyle};
use shield_tail::{Cursor, CursorFile};

use crate::journal::Journal;
use crate::metrics::{EventCounter, Metrics};
use crate::summary::{Counts, Summary};
use shield_watch_cli::{ColorChoice, Format};

/// What the source threads send to the writer.
// Nearly every message is an event or a batch, so its size is paid anyway; boxing it would only
// add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Msg {
    /// An event, and the read position just after the input that produced it (one packet).
    Event(Event, Option<Checkpoint>),
    /// The events of one read batch of a followed file, and the read position after them.
    Events(Batch),
    /// A read position reached without an event (lines that produced nothing).
    Checkpoint(Checkpoint),
    /// Write what came before and save positions now, then say so (before the ready line, so
    /// that a restart after it always has a cursor to resume from).
    Sync(crossbeam_channel::Sender<()>),
    /// Stop: write what came before, save positions, return.
    Shutdown,
}

/// An event as it crosses to the writer, with its JSON line when its producer wrote it
/// ([`Slot::write_json`]) while the event was still in its cache: the writer then copies the line
/// instead of reading the event's strings from another core's.
#[derive(Debug)]
pub struct Slot {
    /// The event.
    pub event: Event,
    /// Its JSON line, or empty.
    json: Vec<u8>,
}

impl Slot {
    /// An empty event without a line.
    pub fn new() -> Slot {
        Slot {
            event: Event::new(String::new(), Source::Watch, "", ""),
            json: Vec::new(),
        }
    }

    /// Writes the event's JSON line ([`Event::write_json_into`]) beside it.
    pub fn write_json(&mut self) {
        self.json.clear();
        self.event.write_json_into(&mut self.json);
    }

    /// The event to fill again: its old line is forgotten.
    pub fn refill(&mut self) -> &mut Event {
        self.json.clear();
        &mut self.event
    }

    /// The event's JSON line, if its producer wrote it.
    pub fn json(&self) -> Option<&[u8]> {
        (!self.json.is_empty()).then_some(&self.json[..])
    }
}

impl Default for Slot {
    fn default() -> Slot {
        Slot::new()
    }
}

/// Events that cross the channel together: those of one read batch of a file source, at most
/// [`Batch::EVENTS`] of them. The writer hands a batch back to the thread it came from once
/// written, and that thread fills the same events again, so an event costs no allocation once the
/// strings of the events it reuses have grown.
#[derive(Debug)]
pub struct Batch {
    /// The first `len` are this batch's events; the rest wait to be reused. Boxed, so that
    /// [`Batch::push_swap`] moves a pointer and not the event: the history merge moves every
    /// replayed event into a batch, and only the writer needs to read it.
    #[allow(clippy::vec_box)] // Boxed on purpose: swapped in and out, never moved whole.
    slots: Vec<Box<Slot>>,
    len: usize,
    /// The read position just after the last line the batch covers.
    pub checkpoint: Option<Checkpoint>,
    /// Where the writer returns it.
    back: Sender<Batch>,
}

impl Batch {
    /// The most events in one batch: the largest unit the writer sees between two looks at the
    /// channel, and what one batch holds in memory (a few hundred bytes each).
    pub const EVENTS: usize = 256;

    /// An empty batch that goes back to `back` once written.
    pub fn new(back: Sender<Batch>) -> Batch {
        Batch {
            slots: Vec::new(),
            len: 0,
            checkpoint: None,
            back,
        }
    }

    /// The event to fill next (whatever it held before: the filler resets it), committed by
    /// [`push`](Self::push).
    pub fn next_slot(&mut self) -> &mut Event {
        if self.len == self.slots.len() {
            self.slots.push(Box::default());
        }
        self.slots[self.len].refill()
    }

    /// Takes `slot` into the batch by swapping boxes: `slot` is left holding a spent one of the
    /// batch's, for the caller to fill again.
    pub fn push_swap(&mut self, slot: &mut Box<Slot>) {
        if self.len == self.slots.len() {
            self.slots.push(Box::default());
        }
        std::mem::swap(&mut self.slots[self.len], slot);
        self.len += 1;
    }

    /// Takes the event filled through [`next_slot`](Self::next_slot) into the batch.
    pub fn push(&mut self) {
        self.len += 1;
    }

    /// Event `i`'s JSON line, if its producer wrote it.
    pub fn json(&self, i: usize) -> Option<&[u8]> {
        self.slots[..self.len].get(i)?.json()
    }

    /// The batch's events, in the order they were read.
    pub fn events(&self) -> impl ExactSizeIterator<Item = &Event> {
        self.slots[..self.len].iter().map(|slot| &slot.event)
    }

    /// True when no event was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when [`Batch::EVENTS`] were pushed.
    pub fn is_full(&self) -> bool {
        self.len >= Batch::EVENTS
    }

    /// Forgets the batch's events and position (their storage is kept for reuse).
    pub fn clear(&mut self) {
        self.len = 0;
        self.checkpoint = None;
    }

    /// Empties the batch and returns it to the thread it came from (dropped when that thread is
    /// gone or has enough).
    pub fn recycle(mut self) {
        self.clear();
        let back = self.back.clone();
        let _ = back.try_send(self);
    }
}

/// A read position of one followed file.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The cursor-file key: `dns` or `audit`; host-wide `NAME/dns` or `NAME/audit`.
    pub key: Arc<str>,
    /// Just after the last line handled.
    pub cursor: Cursor,
}

/// Why the writer stopped early.
#[derive(Debug)]
pub enum WriterEnd {
    /// Everything up to the shutdown was written.
    Done,
    /// stdout was closed by the reader (`| head`): a clean end.
    Closed,
    /// Writing failed otherwise.
    Failed(io::Error),
}

/// How the writer is set up.
pub struct WriterConfig {
    /// json or text.
    pub format: Format,
    /// Text colours (ignored for json).
    pub style: TextStyle,
    /// Only these actions, when non-empty.
    pub actions: Vec<String>,
    /// The dedup window, when set.
    pub dedup: Option<Duration>,
    /// Where to save read positions, when set.
    pub cursor_file: Option<PathBuf>,
    /// Positions loaded at start: kept for sources that do not report again.
    pub cursors: BTreeMap<String, Cursor>,
    /// Whether events go to stdout (`--output stdout`, the default).
    pub stdout: bool,
    /// `--output journal`: one entry per event written.
    pub journal: Option<Journal>,
    /// `--metrics-*`: every event the sources produce is counted.
    pub metrics: Option<Metrics>,
    /// stdout, when it is a pipe: how much a write can put in it at once.
    pub pipe: Option<PipeRoom>,
}

/// The text style for `--color`: `auto` colours when stdout is a terminal, unless `NO_COLOR` is
/// set to anything non-empty (<https://no-color.org>); `always` and `never` decide alone.
pub fn text_style(choice: ColorChoice) -> TextStyle {
    use std::io::IsTerminal;
    let colour = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            io::stdout().is_terminal() && !no_colour
        }
    };
    TextStyle { colour }
}

/// How often read positions are written to the cursor file while busy.
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the writer until `Msg::Shutdown` or until every sender is gone; notifies `done`.
pub fn run_writer(
    rx: Receiver<Msg>,
    out: impl Write,
    config: WriterConfig,
    summary: Summary,
    done: Sender<WriterEnd>,
) {
    let end = match write_loop(&rx, out, config, &summary) {
        Ok(()) => WriterEnd::Done,
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => WriterEnd::Closed,
        Err(err) => WriterEnd::Failed(err),
    };
    let _ = done.send(end);
}

fn write_loop(
    rx: &Receiver<Msg>,
    out: impl Write,
    config: WriterConfig,
    summary: &Summary,
) -> io::Result<()> {
    let mut out = Output {
        buf: Vec::with_capacity(OUTPUT_BUFFER + 4096),
        out,
        room: config.pipe,
    };
    let mut dedup = config.dedup.map(Dedup::new);
    let mut cursors = Cursors {
        file: config.cursor_file,
        current: config.cursors,
        dirty: false,
        last_save: Instant::now(),
    };
    let mut filter = Filter {
        format: config.format,
        style: config.style,
        actions: config.actions,
        stdout: config.stdout,
        journal: config.journal,
        line: Vec::new(),
        journal_dropped: 0,
        metrics: config.metrics.clone(),
        counter: config.metrics.map(EventCounter::new),
        run: ActionRun {
            source: Source::Watch,
            action: String::new(),
            n: 0,
        },
        containers: ContainerTally::new(),
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => msg,
            Err(TryRecvError::Empty) => {
                // The channel ran dry: this is when the reader should see everything.
                out.flush()?;
                cursors.save();
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let checkpoint = match msg {
            Msg::Event(event, checkpoint) => {
                let mut counts = summary.lock();
                filter.write(&event, None, &mut dedup, &mut out.buf, &mut counts)?;
                filter.settle(&mut counts);
                drop(counts);
                checkpoint
            }
            Msg::Events(mut batch) => {
                // One lock of the counters for the whole batch, not one per event.
                let mut counts = summary.lock();
                fetch_counted(&batch);
                for (i, event) in batch.events().enumerate() {
                    let json = batch.json(i);
                    filter.write(event, json, &mut dedup, &mut out.buf, &mut counts)?;
                }
                filter.settle(&mut counts);
                drop(counts);
                let checkpoint = batch.checkpoint.take();
                batch.recycle();
                checkpoint
            }
            Msg::Checkpoint(checkpoint) => Some(checkpoint),
            Msg::Sync(done) => {
                out.flush()?;
                cursors.save();
                let _ = done.send(());
                continue;
            }
            Msg::Shutdown => break,
        };
        if out.buf.len() >= OUTPUT_BUFFER {
            out.write_buffered()?;
        }
        if let Some(checkpoint) = checkpoint {
            cursors.update(checkpoint);
            if cursors.last_save.elapsed() >= CURSOR_SAVE_INTERVAL {
                out.flush()?;
                cursors.save();
            }
        }
    }
    out.flush()?;
    cursors.save();
    Ok(())
}

/// Reads what the writer reads of a whole batch (the strings the counts look events up by,
/// action and container, and the JSON lines) before any is written. They were written on other
/// threads and lie scattered in memory: loads in one short pass, each independent of the others,
/// are waited for together, where writing event by event waits for each in turn. (On a
/// replayed history this took the writer's share of the CPU time from 36 % to 27 %.)
fn fetch_counted(batch: &Batch) {
    let mut seen = 0u8;
    for slot in &batch.slots[..batch.len] {
        let event = &slot.event;
        seen ^= event.action.as_bytes().first().copied().unwrap_or(0);
        seen ^= event.container.as_bytes().first().copied().unwrap_or(0);
        for byte in slot.json.iter().step_by(64) {
            seen ^= byte;
        }
    }
    std::hint::black_box(seen);
}

/// Bytes gathered before they are written to stdout while the channel is busy.
const OUTPUT_BUFFER: usize = 64 * 1024;

/// stdout behind the buffer that events are formatted straight into.
struct Output<W: Write> {
    buf: Vec<u8>,
    out: W,
    /// When `out` is a pipe: the room in it, which bounds a write that cannot be cut short.
    room: Option<PipeRoom>,
}

/// The most a `write(2)` to a pipe may carry and still reach the reader whole whatever happens
/// (Linux's `PIPE_BUF`): writes are cut at line ends below it, so that a process killed in the
/// middle of writing a batch leaves no half line behind, whoever reads the pipe. More goes in
/// one write only while the pipe has room for all of it ([`PipeRoom`]).
const ATOMIC_WRITE: usize = 4096;

/// The room in a pipe (stdout), asked of the kernel before a write of more than
/// [`ATOMIC_WRITE`]: a write the pipe has room for is copied in whole without waiting, and a
/// signal is only looked at while a writer waits, so it cannot be cut short either. Writes as
/// large as the room let a reader that keeps up (`| wc -l`, `| jq`) be woken once for many
/// pages instead of once per page.
#[derive(Debug)]
pub struct PipeRoom {
    pipe: std::os::fd::OwnedFd,
}

impl PipeRoom {
    /// Pages of the pipe not counted on: the one being read and the one being filled may each
    /// hold a part of a page, and two more for the lines other writers to the same pipe (our
    /// own stderr, with `2>&1`) may put in it meanwhile.
    const SLACK: usize = 4 * 4096;

    /// stdout's room, when stdout is a pipe.
    pub fn of_stdout() -> Option<PipeRoom> {
        use std::os::fd::AsFd;
        PipeRoom::of(io::stdout().as_fd().try_clone_to_owned().ok()?)
    }

    /// The room of `pipe`, when it is one.
    fn of(pipe: std::os::fd::OwnedFd) -> Option<PipeRoom> {
        let stat = rustix::fs::fstat(&pipe).ok()?;
        (rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Fifo)
            .then_some(PipeRoom { pipe })
    }

    /// Bytes one write can surely put in the pipe now, without waiting; 0 when unknown.
    fn free(&self) -> usize {
        let (Ok(size), Ok(unread)) = (
            rustix::pipe::fcntl_getpipe_size(&self.pipe),
            rustix::io::ioctl_fionread(&self.pipe),
        ) else {
            return 0;
        };
        let unread = usize::try_from(unread).unwrap_or(usize::MAX);
        size.saturating_sub(unread.saturating_add(Self::SLACK))
    }
}

impl<W: Write> Output<W> {
    /// Writes what is buffered (without flushing `out`), in whole lines: at most
    /// [`ATOMIC_WRITE`] bytes a write (a longer line alone), or as much as the pipe has room
    /// for.
    fn write_buffered(&mut self) -> io::Result<()> {
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            let most = if rest.len() <= ATOMIC_WRITE {
                ATOMIC_WRITE
            } else {
                self.room
                    .as_ref()
                    .map_or(ATOMIC_WRITE, PipeRoom::free)
                    .max(ATOMIC_WRITE)
            };
            let cut = if rest.len() <= most {
                rest.len()
            } else {
                match memchr::memrchr(b'\n', &rest[..most]) {
                    Some(end) => end + 1,
                    None => memchr::memchr(b'\n', rest).map_or(rest.len(), |end| end + 1),
                }
            };
            self.out.write_all(&rest[..cut])?;
            rest = &rest[cut..];
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and flushes `out`: the reader sees every line so far.
    fn flush(&mut self) -> io::Result<()> {
        self.write_buffered()?;
        self.out.flush()
    }
}

/// What the writer lets through and where it writes it.
struct Filter {
    format: Format,
    style: TextStyle,
    actions: Vec<String>,
    /// Whether `buf` (stdout) gets the events.
    stdout: bool,
    journal: Option<Journal>,
    /// The JSON line for the journal when stdout does not get it in JSON.
    line: Vec<u8>,
    /// The journal's drop count already reported.
    journal_dropped: u64,
    metrics: Option<Metrics>,
    counter: Option<EventCounter>,
    /// Events written and not yet in the counts: `n` alike in a row ([`Filter::count_action`]).
    run: ActionRun,
    /// Host-wide, events written and not yet in the counts by container.
    containers: ContainerTally,
}

/// Events counted by container before they go into the shared counts: a direct-mapped table
/// of recent names, so that a replay that interleaves a hundred containers event by event
/// looks each up in a small array, not in the counts' hash map (a third of the writer's work).
struct ContainerTally {
    /// `(name, events not yet in the counts)`; a slot with none is free.
    slots: Vec<(String, u64)>,
    /// The slots with events.
    used: Vec<usize>,
}

impl ContainerTally {
    const SLOTS: usize = 256;

    fn new() -> ContainerTally {
        ContainerTally {
            slots: vec![(String::new(), 0); Self::SLOTS],
            used: Vec::new(),
        }
    }

    /// The slot for `name`: its last eight bytes and its length, mixed.
    fn slot_of(name: &str) -> usize {
        let bytes = name.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(8)..];
        let word = tail
            .iter()
            .fold(bytes.len() as u64, |w, &b| (w << 8) | u64::from(b));
        (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % Self::SLOTS
    }

    /// Counts one event of `name`; a name in the slot before it goes into `counts`.
    fn count(&mut self, name: &str, counts: &mut Counts) {
        let at = Self::slot_of(name);
        let slot = &mut self.slots[at];
        if slot.1 > 0 && slot.0 == name {
            slot.1 += 1;
            return;
        }
        if slot.1 > 0 {
            counts.count_container(&slot.0, slot.1);
        } else {
            self.used.push(at);
        }
        slot.0.clear();
        slot.0.push_str(name);
        slot.1 = 1;
    }

    /// Puts every event counted here into `counts`.
    fn settle(&mut self, counts: &mut Counts) {
        for at in self.used.drain(..) {
            let slot = &mut self.slots[at];
            counts.count_container(&slot.0, slot.1);
            slot.1 = 0;
        }
    }
}

/// A run of events of one source and action.
struct ActionRun {
    source: Source,
    action: String,
    n: u64,
}

impl Filter {
    /// Appends `event` to `buf` and sends it to the journal unless `--action` or `--dedup`
    /// holds it back, and counts it. The metrics count it either way: they say what the
    /// sources saw, which a filter of the view does not change. `json` is the event's JSON
    /// line when its producer wrote it.
    fn write(
        &mut self,
        event: &Event,
        json: Option<&[u8]>,
        dedup: &mut Option<Dedup>,
        buf: &mut Vec<u8>,
        counts: &mut Counts,
    ) -> io::Result<()> {
        if let Some(counter) = &mut self.counter {
            counter.count(event);
        }
        let admitted = (self.actions.is_empty() || self.actions.contains(&event.action))
            && dedup
                .as_mut()
                .is_none_or(|d| d.admit(event, Instant::now()));
        if admitted {
            let start = buf.len();
            if self.stdout {
                match (self.format, json) {
                    (Format::Json, Some(line)) => buf.extend_from_slice(line),
                    (Format::Json, None) => event.write_json_into(buf),
                    (Format::Text, _) => event.write_text(self.style, buf)?,
                }
            }
            if let Some(journal) = &mut self.journal {
                // The entry's MESSAGE is the very line stdout has in --format json.
                let line = if self.stdout && self.format == Format::Json {
                    &buf[start..]
                } else if let Some(line) = json {
                    line
                } else {
                    self.line.clear();
                    event.write_json_into(&mut self.line);
                    &self.line[..]
                };
                journal.send(event, line);
            }
            self.count_action(event, counts);
            if counts.by_container.is_some() {
                self.containers.count(&event.container, counts);
            }
        } else {
            counts.suppressed += 1;
        }
        Ok(())
    }
}

impl Filter {
    /// Brings the journal's drop count into the summary and the metrics.
    /// Counts `event` by its source and action: in the run of events alike that it continues,
    /// or it ends the run and starts the next. A replayed history is nearly one run (its events
    /// interleave containers, not actions): one look-up in the counts per run, not per event.
    fn count_action(&mut self, event: &Event, counts: &mut Counts) {
        let run = &mut self.run;
        if run.n > 0 && run.source == event.source && run.action == event.action {
            run.n += 1;
            return;
        }
        self.settle_run(counts);
        let run = &mut self.run;
        run.source = event.source;
        run.action.clear();
        run.action.push_str(&event.action);
        run.n = 1;
    }

    /// Adds the run counted so far to `counts`.
    fn settle_run(&mut self, counts: &mut Counts) {
        let run = &mut self.run;
        if run.n > 0 {
            counts.count_events(run.source, &run.action, run.n);
            run.n = 0;
        }
    }

    /// Brings `counts` up to date before the writer lets go of them: the run of actions so
    /// far, and what the journal dropped.
    fn settle(&mut self, counts: &mut Counts) {
        self.settle_run(counts);
        self.containers.settle(counts);
        let Some(journal) = &self.journal else { return };
        let dropped = journal.dropped();
        if dropped != self.journal_dropped {
            if let Some(metrics) = &self.metrics {
                metrics.journal_dropped(dropped - self.journal_dropped);
            }
            self.journal_dropped = dropped;
            counts.journal_dropped = Some(dropped);
        }
    }
}

/// Read positions, saved only after the output before them was flushed.
struct Cursors {
    file: Option<PathBuf>,
    current: BTreeMap<String, Cursor>,
    dirty: bool,
    last_save: Instant,
}

impl Cursors {
    fn update(&mut self, checkpoint: Checkpoint) {
        if self.file.is_some() {
            match self.current.get_mut(&*checkpoint.key) {
                Some(cursor) => *cursor = checkpoint.cursor,
                None => {
                    self.current
                        .insert(checkpoint.key.to_string(), checkpoint.cursor);
                }
            }
            self.dirty = true;
        }
    }

    fn save(&mut self) {
        let Some(file) = &self.file else { return };
        if !self.dirty {
            return;
        }
        if let Err(err) = CursorFile::save(file, &self.current) {
            crate::diag::line(format_args!(
                "cannot save cursor file {}: {}",
                file.display(),
                crate::diag::chain(&err)
            ));
        }
        self.dirty = false;
        self.last_save = Instant::now();
    }
}

/// Suppresses repeats of the same (source, action, domain-or-dest) within a window that starts
/// at the last event let through, so a steady repeat still shows once per window.
pub struct Dedup {
    window: Duration,
    last: HashMap<(Source, String, String, String), Instant>,
}

impl Dedup {
    /// A filter with the given window.
    pub fn new(window: Duration) -> Dedup {
        Dedup {
            window,
            last: HashMap::new(),
        }
    }

    /// Whether `event`, seen at `now`, should be written.
    pub fn admit(&mut self, event: &Event, now: Instant) -> bool {
        if self.last.len() >= 65_536 {
            // Bound the memory: entries past their window can no longer suppress anything.
            let window = self.window;
            self.last.retain(|_, at| now.duration_since(*at) < window);
        }
        let key = (
            event.source,
            event.action.clone(),
            event.container.clone(),
            event.subject().to_string(),
        );
        match self.last.get(&key) {
            Some(at) if now.duration_since(*at) < self.window => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, domain: &str) -> Event {
        let mut event = Event::new("t", Source::Dns, action, "c");
        event.domain = domain.into();
        event
    }

    /// Records the size of every write.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_is_written_in_whole_lines_of_at_most_pipe_buf() {
        let mut out = Output {
            buf: Vec::new(),
            out: Writes::default(),
            room: None,
        };
        let mut expected = Vec::new();
        for n in 0..2000usize {
            // Lines of 1 to 700 bytes, and one longer than a whole write.
            let len = if n == 1000 { 9000 } else { 1 + n * 37 % 700 };
            let mut line = vec![b'a' + (n % 26) as u8; len];
            line.push(b'\n');
            expected.extend_from_slice(&line);
            out.buf.extend_from_slice(&line);
        }
        out.flush().unwrap();
        assert!(out.buf.is_empty());
        let writes = out.out.0;
        assert_eq!(writes.concat(), expected);
        for write in &writes {
            assert_eq!(write.last(), Some(&b'\n'));
            assert!(
                write.len() <= ATOMIC_WRITE || !write[..write.len() - 1].contains(&b'\n'),
                "{} bytes over several lines",
                write.len()
            );
        }
        // Whole 4 KiB blocks, not a write per line.
        assert!(writes.len() < expected.len() / 3000, "{}", writes.len());
    }

    /// The counts are exact whatever the runs of alike events, across batches and single
    /// events, with `--action` holding some back, by container too (events interleaving more
    /// containers than the writer's table has slots), and readable between messages.
    #[test]
    fn counts_are_exact_across_runs_of_actions_and_batches() {
        let (tx, rx) = crossbeam_channel::bounded(64);
        let (done, ended) = crossbeam_channel::bounded(1);
        let summary = Summary::default();
        summary.lock().by_container = Some(foldhash::HashMap::default());
        let config = WriterConfig {
            format: Format::Json,
            style: TextStyle::default(),
            actions: vec!["a".into(), "b".into(), "c".into()],
            dedup: None,
            cursor_file: None,
            cursors: BTreeMap::new(),
            stdout: true,
            journal: None,
            metrics: None,
            pipe: None,
        };
        let counting = summary.clone();
        let writer = std::thread::spawn(move || run_writer(rx, io::sink(), config, counting, done));
        let (back, _returned) = crossbeam_channel::unbounded();
        let mut want = Counted::default();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Container names: a few hundred, some alike but for a byte, one long.
        let name = |r: u64| match r % 7 {
            0 => "a-very-long-container-name-of-a-terok-task".to_string(),
            1 => format!("ci-{}", r % 3),
            _ => format!("c{:03}", r % 400),
        };
        for round in 0..200 {
            let r = next();
            let source = if r & 1 == 0 {
                Source::Dns
            } else {
                Source::Audit
            };
            // Runs of one action, long and short; "z" is held back by --action.
            let action = ["a", "b", "c", "z"][(r >> 8) as usize % 4];
            let n = 1 + (r >> 16) as usize % 300;
            if round % 7 == 0 {
                let container = name(next());
                tx.send(Msg::Event(
                    Event::new("t", source, action, &container),
                    None,
                ))
                .unwrap();
                want.add(source, action, &container);
                continue;
            }
            let mut batch = Batch::new(back.clone());
            for _ in 0..n.min(Batch::EVENTS) {
                let container = name(next());
                batch.next_slot().reset(source, action, &container);
                batch.push();
                want.add(source, action, &container);
            }
            tx.send(Msg::Events(batch)).unwrap();
            if round % 50 == 49 {
                // What the counts say between messages is what was written so far.
                let (synced, wait) = crossbeam_channel::bounded(1);
                tx.send(Msg::Sync(synced)).unwrap();
                wait.recv().unwrap();
                assert_eq!(Counted::of(&summary), want, "after round {round}");
            }
        }
        tx.send(Msg::Shutdown).unwrap();
        writer.join().unwrap();
        assert!(matches!(ended.recv().unwrap(), WriterEnd::Done));
        assert_eq!(Counted::of(&summary), want);
    }

    /// The counts of events written, by action and by container.
    #[derive(Debug, Default, PartialEq)]
    struct Counted {
        actions: BTreeMap<(Source, String), u64>,
        containers: BTreeMap<String, u64>,
    }

    impl Counted {
        /// One event, unless `--action a,b,c` holds it back.
        fn add(&mut self, source: Source, action: &str, container: &str) {
            if action != "z" {
                *self.actions.entry((source, action.into())).or_default() += 1;
                *self.containers.entry(container.into()).or_default() += 1;
            }
        }

        fn of(summary: &Summary) -> Counted {
            let counts = summary.lock();
            Counted {
                actions: counts
                    .events
                    .iter()
                    .flat_map(|(source, actions)| {
                        actions.iter().map(|(a, n)| ((*source, a.clone()), *n))
                    })
                    .collect(),
                containers: counts
                    .by_container
                    .iter()
                    .flatten()
                    .map(|(c, n)| (c.clone(), *n))
                    .collect(),
            }
        }
    }

    /// Into a pipe, a write carries more than `PIPE_BUF` only when the pipe has room for all
    /// of it at that moment (so it cannot block, nor be cut short), and always whole lines.
    #[test]
    fn into_a_pipe_writes_are_whole_lines_the_pipe_has_room_for() {
        use std::io::Read as _;
        let (read, write) = rustix::pipe::pipe().unwrap();
        let capacity = rustix::pipe::fcntl_getpipe_size(&write).unwrap();
        let room = PipeRoom::of(write.try_clone().unwrap()).expect("a pipe");
        assert!(PipeRoom::of(
            rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::empty()
            )
            .unwrap()
        )
        .is_none());

        /// Writes to the pipe, noting each write's size and the room the pipe had just before;
        /// lets the reader start once the first write is in.
        struct Noted {
            pipe: std::fs::File,
            capacity: usize,
            writes: Vec<(usize, usize)>,
            first_in: Option<crossbeam_channel::Sender<()>>,
        }
        impl Write for Noted {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let unread = rustix::io::ioctl_fionread(&self.pipe).unwrap() as usize;
                self.writes.push((buf.len(), self.capacity - unread));
                self.pipe.write_all(buf)?;
                self.first_in.take();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        // Nothing is read until the first write is in: it meets an empty pipe.
        let (first_in, wait_first) = crossbeam_channel::bounded::<()>(0);
        let reader = std::thread::spawn(move || {
            let _ = wait_first.recv();
            let mut all = Vec::new();
            std::fs::File::from(read).read_to_end(&mut all).unwrap();
            all
        });
        let mut out = Output {
            buf: Vec::new(),
            out: Noted {
                pipe: std::fs::File::from(write),
                capacity,
                writes: Vec::new(),
                first_in: Some(first_in),
            },
            room: Some(room),
        };
        let mut expected = Vec::new();
        for n in 0..20_000usize {
            let len = if n == 7_000 { 9_000 } else { 1 + n * 37 % 300 };
            let mut line = vec![b'a' + (n % 26) as u8; len];
            line.push(b'\n');
            expected.extend_from_slice(&line);
            out.buf.extend_from_slice(&line);
            if out.buf.len() >= OUTPUT_BUFFER {
                out.write_buffered().unwrap();
            }
        }
        out.flush().unwrap();
        // Every write end closed, the reader sees the end.
        let Output {
            out: noted, room, ..
        } = out;
        drop(room);
        let writes = noted.writes;
        drop(noted.pipe);
        assert_eq!(reader.join().unwrap(), expected);
        let (first, _) = writes[0];
        assert!(
            first > ATOMIC_WRITE,
            "the first write, into an empty pipe: {first}"
        );
        let mut at = 0;
        for &(len, room) in &writes {
            let written = &expected[at..at + len];
            at += len;
            assert_eq!(written.last(), Some(&b'\n'));
            let one_line = !written[..len - 1].contains(&b'\n');
            assert!(
                len <= ATOMIC_WRITE || len <= room || one_line,
                "{len} bytes written into {room} bytes of room"
            );
        }
    }

    #[test]
    fn a_batch_reuses_its_events_and_goes_back_where_it_came_from() {
        let (back, returned) = crossbeam_channel::bounded(1);
        let mut batch = Batch::new(back);
        for i in 0..3 {
            batch
                .next_slot()
                .reset(Source::Dns, "blocked_query", &i.to_string());
            batch.push();
        }
        batch.next_slot().reset(Source::Dns, "not pushed", "");
        assert_eq!(batch.events().len(), 3);
        assert_eq!(batch.events().nth(2).unwrap().container, "2");
        batch.recycle();
        let mut batch = returned.try_recv().unwrap();
        assert!(batch.is_empty() && batch.checkpoint.is_none());
        // The storage is kept: the next slot is an event written before.
        assert_eq!(batch.next_slot().container, "0");
        for _ in 0..Batch::EVENTS {
            batch.push();
        }
        assert!(batch.is_full());
    }

    #[test]
    fn dedup_suppresses_repeats_within_the_window_only() {
        let start = Instant::now();
        let mut dedup = Dedup::new(Duration::from_secs(30));
        assert!(dedup.admit(&event("blocked_query", "a.example"), start));
        assert!(!dedup.admit(
            &event("blocked_query", "a.example"),
            start + Duration::from_secs(29)
        ));
        // A different subject or action is not a repeat.
        assert!(dedup.admit(
            &event("blocked_query", "b.example"),
            start + Duration::from_secs(1)
        ));
        assert!(dedup.admit(&event("other", "a.example"), start + Duration::from_secs(1)));
        // The window runs from the last event let through.
        assert!(dedup.admit(
            &event("blocked_query", "a.example"),
            start + Duration::from_secs(30)
        ));
        assert!(!dedup.admit(
            &event("blocked_query", "a.example"),
            start + Duration::from_secs(59)
        ));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let start = Instant::now();
        let mut dedup = Dedup::new(Duration::from_millis(1));
        for i in 0..70_000u32 {
            dedup.admit(
                &event("x", &i.to_string()),
                start + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(dedup.last.len() <= 65_536);
    }
}
