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

use crate::summary::Summary;
use shield_watch_cli::{ColorChoice, Format};

/// What the source threads send to the writer.
// Nearly every message is an event, so its size is paid anyway; boxing it would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Msg {
    /// An event, and the read position just after the input that produced it.
    Event(Event, Option<Checkpoint>),
    /// A read position reached without an event (lines that produced nothing).
    Checkpoint(Checkpoint),
    /// Write what came before and save positions now, then say so (before the ready line, so
    /// that a restart after it always has a cursor to resume from).
    Sync(crossbeam_channel::Sender<()>),
    /// Stop: write what came before, save positions, return.
    Shutdown,
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
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let mut dedup = config.dedup.map(Dedup::new);
    let mut cursors = Cursors {
        file: config.cursor_file,
        current: config.cursors,
        dirty: false,
        last_save: Instant::now(),
    };
    let mut line = Vec::with_capacity(512);
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
        let (event, checkpoint) = match msg {
            Msg::Event(event, checkpoint) => (Some(event), checkpoint),
            Msg::Checkpoint(checkpoint) => (None, Some(checkpoint)),
            Msg::Sync(done) => {
                out.flush()?;
                cursors.save();
                let _ = done.send(());
                continue;
            }
            Msg::Shutdown => break,
        };
        if let Some(event) = event {
            let admitted = (config.actions.is_empty() || config.actions.contains(&event.action))
                && dedup
                    .as_mut()
                    .is_none_or(|d| d.admit(&event, Instant::now()));
            if admitted {
                line.clear();
                match config.format {
                    Format::Json => event.write_json(&mut line)?,
                    Format::Text => event.write_text(config.style, &mut line)?,
                }
                out.write_all(&line)?;
                let mut counts = summary.lock();
                counts.count_event(event.source, &event.action);
                counts.count_container(&event.container);
                drop(counts);
            } else {
                summary.lock().suppressed += 1;
            }
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
            self.current
                .insert(checkpoint.key.to_string(), checkpoint.cursor);
            self.dirty = true;
        }
    }

    fn save(&mut self) {
        let Some(file) = &self.file else { return };
        if !self.dirty {
            return;
        }
        if let Err(err) = CursorFile::save(file, &self.current) {
            eprintln!(
                "shield-watch: cannot save cursor file {}: {err}",
                file.display()
            );
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
