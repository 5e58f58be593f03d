//! Following log files on shield-tail and handing each line to a source's parser.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;
use shield_tail::{Cursor, Follower, Options, Record, Start};

use crate::output::{Checkpoint, Msg};
use crate::sources::Ready;
use crate::summary::Summary;
use shield_event::Source;

/// One followed file and where its lines go.
pub struct FileSource {
    /// Which source this is (names the counters).
    pub source: Source,
    /// The cursor-file key of this file (`dns`, `audit`; `NAME/dns` host-wide).
    pub key: Arc<str>,
    /// The file.
    pub path: PathBuf,
    /// Where to start.
    pub start: Start,
    /// Follower options (max line, poll interval).
    pub options: Options,
    /// Ends (disconnects) once the ready line is out: only then is what was already in the
    /// file read (unless the handler must read it before ready, which sends no events).
    pub go: crossbeam_channel::Receiver<()>,
    /// Events and checkpoints go here.
    pub tx: Sender<Msg>,
    /// Shared counters.
    pub summary: Summary,
}

/// What a parser does with one complete line: maybe an event to send.
pub trait LineHandler {
    /// Whether the content present at open must be read before the source reports ready.
    fn read_before_ready(&self) -> bool {
        false
    }

    /// Handles one line; `existing` when it was already in the file when the follower opened
    /// it (a handler may treat older content differently: priming a cache). Returns the event
    /// it produced, if any.
    fn line(&mut self, line: &[u8], existing: bool) -> Option<shield_event::Event>;
}

/// What one read of a followed file ended with.
pub enum Step {
    /// Read what there was; wait for more.
    Read,
    /// The writer is gone (stdout closed or the process stops): stop reading.
    Closed,
    /// The file cannot be followed any more (said on stderr).
    Failed(String),
}

/// The bookkeeping of one followed file between reads: its names, the last position sent, and
/// what was already said about it.
pub struct Reader {
    source: Source,
    key: Arc<str>,
    path: PathBuf,
    warned_long: bool,
    last_sent: Option<Cursor>,
    rotations: u64,
}

impl Reader {
    /// Bookkeeping for `path`, read for `source`, its cursor saved under `key`.
    pub fn new(source: Source, key: Arc<str>, path: PathBuf) -> Reader {
        Reader {
            source,
            key,
            path,
            warned_long: false,
            last_sent: None,
            rotations: 0,
        }
    }

    /// The position the follower starts at, as a checkpoint (saved before the ready line).
    pub fn start_checkpoint(&mut self, follower: &Follower) -> Msg {
        let cursor = follower.cursor();
        self.last_sent = Some(cursor);
        Msg::Checkpoint(Checkpoint {
            key: self.key.clone(),
            cursor,
        })
    }

    /// Reads everything available, turns lines into events, sends them with their positions.
    pub fn read(
        &mut self,
        follower: &mut Follower,
        handler: &mut dyn LineHandler,
        tx: &Sender<Msg>,
        summary: &Summary,
    ) -> Step {
        let name = self.source.as_str();
        let mut closed = false;
        let (source, key, path) = (self.source, &self.key, &self.path);
        let (warned_long, last_sent) = (&mut self.warned_long, &mut self.last_sent);
        let result = follower.read_available(&mut |record| {
            if closed {
                return;
            }
            let (event, end) = match record {
                Record::Line {
                    bytes,
                    end,
                    existing,
                } => (handler.line(bytes, existing), end),
                Record::TooLong { len, end, .. } => {
                    if !*warned_long {
                        eprintln!(
                            "shield-watch: {name}: skipped a line of {len} bytes in {} (over --max-line; further ones are counted in the summary)",
                            path.display()
                        );
                        *warned_long = true;
                    }
                    summary.skip(source, "too_long");
                    (None, end)
                }
            };
            if let Some(event) = event {
                let checkpoint = Checkpoint {
                    key: key.clone(),
                    cursor: end,
                };
                closed = tx.send(Msg::Event(event, Some(checkpoint))).is_err();
                *last_sent = Some(end);
            }
        });
        for notice in follower.take_notices() {
            eprintln!("shield-watch: {name}: {notice}");
        }
        if let Err(err) = result {
            eprintln!(
                "shield-watch: {name}: stopped following {}: {err}",
                self.path.display()
            );
            return Step::Failed(err.to_string());
        }
        if closed {
            return Step::Closed;
        }
        let cursor = follower.cursor();
        if self.last_sent != Some(cursor) {
            let checkpoint = Checkpoint {
                key: self.key.clone(),
                cursor,
            };
            if tx.send(Msg::Checkpoint(checkpoint)).is_err() {
                return Step::Closed;
            }
            self.last_sent = Some(cursor);
        }
        let stats = follower.stats();
        let rotations = stats.rotations + stats.truncations;
        if rotations > self.rotations {
            *summary.lock().rotations.entry(self.source).or_default() += rotations - self.rotations;
            self.rotations = rotations;
        }
        Step::Read
    }
}

impl FileSource {
    /// Opens the file, reports readiness, then follows it until the process ends.
    /// Errors after readiness are reported on stderr and end this source only.
    /// `ready` is `None` when nobody waits for this source (the cache-only reading of the query
    /// log when the dns source itself was not selected).
    pub fn run(self, ready: Option<Sender<Ready>>, mut handler: impl LineHandler) {
        let name = self.source.as_str();
        let mut follower = match Follower::open(&self.path, self.start, self.options) {
            Ok(follower) => follower,
            Err(err) => {
                let reason = format!("cannot follow {}: {err}", self.path.display());
                match ready {
                    Some(ready) => {
                        let _ = ready.send(Ready {
                            source: self.source,
                            result: Err(reason),
                        });
                    }
                    None => eprintln!("shield-watch: {name}: {reason}"),
                }
                return;
            }
        };
        let mut reader = Reader::new(self.source, self.key.clone(), self.path.clone());
        // Positioning may include reading what is already there (priming the domain cache):
        // then the source is ready only after its first batch.
        let mut ready = ready;
        if !handler.read_before_ready() {
            // Where we start is saved before the ready line (see main), so a restart right
            // after it resumes here.
            if self.tx.send(reader.start_checkpoint(&follower)).is_err() {
                return;
            }
            report_ready(self.source, ready.take(), Ok(()));
            let _ = self.go.recv();
        }
        loop {
            match reader.read(&mut follower, &mut handler, &self.tx, &self.summary) {
                Step::Read => {}
                Step::Closed => return,
                Step::Failed(err) => {
                    report_ready(self.source, ready.take(), Err(err));
                    return;
                }
            }
            report_ready(self.source, ready.take(), Ok(()));
            if let Err(err) = follower.wait(None) {
                eprintln!(
                    "shield-watch: {name}: stopped following {}: {err}",
                    self.path.display()
                );
                return;
            }
        }
    }
}

/// Tells main this source is positioned and running (once; `None` when already told).
fn report_ready(source: Source, ready: Option<Sender<Ready>>, result: Result<(), String>) {
    if let Some(ready) = ready {
        let _ = ready.send(Ready { source, result });
    }
}
