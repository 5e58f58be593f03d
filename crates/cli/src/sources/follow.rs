//! Following one log file on shield-tail and handing each line to a source's parser.

use std::path::PathBuf;

use crossbeam_channel::Sender;
use shield_tail::{Follower, Options, Record, Start};

use crate::output::{Checkpoint, Msg};
use crate::sources::Ready;
use crate::summary::Summary;
use shield_event::Source;

/// One followed file and where its lines go.
pub struct FileSource {
    /// Which source this is (names the cursor and the counters).
    pub source: Source,
    /// The file.
    pub path: PathBuf,
    /// Where to start.
    pub start: Start,
    /// Follower options (max line, poll interval).
    pub options: Options,
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
        // Positioning may include reading what is already there (priming the domain cache):
        // then the source is ready only after its first batch.
        let mut ready = ready;
        if !handler.read_before_ready() {
            // Where we start is saved before the ready line (see main), so a restart right
            // after it resumes here.
            let checkpoint = Checkpoint {
                source: self.source,
                cursor: follower.cursor(),
            };
            if self.tx.send(Msg::Checkpoint(checkpoint)).is_err() {
                return;
            }
            report_ready(self.source, ready.take(), Ok(()));
        }

        let mut warned_long = false;
        let mut last_sent = None;
        loop {
            let mut closed = false;
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
                        if !warned_long {
                            eprintln!(
                                "shield-watch: {name}: skipped a line of {len} bytes in {} (over --max-line; further ones are counted in the summary)",
                                self.path.display()
                            );
                            warned_long = true;
                        }
                        self.summary.skip(self.source, "too_long");
                        (None, end)
                    }
                };
                if let Some(event) = event {
                    let checkpoint = Checkpoint {
                        source: self.source,
                        cursor: end,
                    };
                    closed = self.tx.send(Msg::Event(event, Some(checkpoint))).is_err();
                    last_sent = Some(end);
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
                report_ready(self.source, ready.take(), Err(err.to_string()));
                return;
            }
            if closed {
                return;
            }
            let cursor = follower.cursor();
            if last_sent != Some(cursor) {
                if self
                    .tx
                    .send(Msg::Checkpoint(Checkpoint {
                        source: self.source,
                        cursor,
                    }))
                    .is_err()
                {
                    return;
                }
                last_sent = Some(cursor);
            }
            self.summary.lock().rotations.insert(
                self.source,
                follower.stats().rotations + follower.stats().truncations,
            );
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
