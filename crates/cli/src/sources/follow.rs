//! Following log files on shield-tail and handing each line to a source's parser.

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use shield_event::Event;
use shield_tail::{Cursor, Follower, Record};

use crate::output::{Batch, Checkpoint, Msg};
use crate::summary::Summary;
use shield_event::Source;

/// A source's parser of lines: set up once per read batch, then given each line.
pub trait LineHandler {
    /// Calls `read` once for a read batch with the per-line side of the handler ready: whatever
    /// it shares with other threads (the domain cache) is locked once for many lines, not once
    /// per line, and let go at every [`Lines::pause`] and when `read` returns.
    fn with_lines(&mut self, read: &mut dyn FnMut(&mut dyn Lines));
}

/// The per-line side of a [`LineHandler`] during one read batch.
pub trait Lines {
    /// Handles one line; `existing` when it was already in the file when the follower opened
    /// it (a handler may treat older content differently: priming a cache). Writes the event
    /// it produces, if any, into `event` (a reused event, to be overwritten whole) and says
    /// whether it did.
    fn line(&mut self, line: &[u8], existing: bool, event: &mut Event) -> bool;

    /// Lets go of what is held for the batch (before events are sent, which may block, and
    /// every [`PAUSE_LINES`] lines); taken again at the next line.
    fn pause(&mut self) {}
}

/// Lines handled between two [`Lines::pause`]s at most: bounds how long the domain cache stays
/// locked against the nflog thread's lookups (about a hundred microseconds of parsing).
pub const PAUSE_LINES: usize = 1024;

/// Batches a source thread fills at most at any time (the rest are in the channel or at the
/// writer): with [`Batch::EVENTS`] each, what a flood keeps in memory per thread.
const BATCHES_PER_THREAD: usize = 8;

/// A thread's batches: handed out to its readers, returned by the writer once written.
struct Pool {
    free: Receiver<Batch>,
    back: Sender<Batch>,
    made: usize,
}

thread_local! {
    static POOL: RefCell<Option<Pool>> = const { RefCell::new(None) };
}

/// An empty batch of this thread's pool: a returned one, a new one while fewer than
/// [`BATCHES_PER_THREAD`] exist, or else the next the writer returns. `None` when the writer is
/// gone (`alive` is asked while waiting).
fn take_batch(alive: &mut dyn FnMut() -> bool) -> Option<Batch> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let pool = pool.get_or_insert_with(|| {
            let (back, free) = crossbeam_channel::bounded(BATCHES_PER_THREAD);
            Pool {
                free,
                back,
                made: 0,
            }
        });
        if let Ok(batch) = pool.free.try_recv() {
            return Some(batch);
        }
        if pool.made < BATCHES_PER_THREAD {
            pool.made += 1;
            return Some(Batch::new(pool.back.clone()));
        }
        loop {
            match pool.free.recv_timeout(Duration::from_millis(200)) {
                Ok(batch) => return Some(batch),
                Err(RecvTimeoutError::Timeout) if alive() => {}
                Err(_) => return None,
            }
        }
    })
}

/// Returns an unused batch to this thread's pool (readers keep none between reads).
fn return_batch(mut batch: Batch) {
    batch.clear();
    POOL.with(|pool| {
        if let Some(pool) = pool.borrow().as_ref() {
            let _ = pool.back.try_send(batch);
        }
    });
}

/// Sends `batch` (its checkpoint set) and puts a fresh one in its place; false when the writer
/// is gone.
fn send_batch(tx: &Sender<Msg>, batch: &mut Option<Batch>) -> bool {
    let Some(full) = batch.take() else {
        return false;
    };
    let probe = full.checkpoint.clone();
    if tx.send(Msg::Events(full)).is_err() {
        return false;
    }
    *batch = match probe {
        Some(checkpoint) => take_batch(&mut writer_reads(tx, checkpoint)),
        None => take_batch(&mut || true),
    };
    batch.is_some()
}

/// Whether the writer still reads the channel, asked while waiting for it to return a batch: a
/// position every line before which was handled, sent again (the writer takes it as the same
/// position again), fails only once the writer is gone.
fn writer_reads(tx: &Sender<Msg>, checkpoint: Checkpoint) -> impl FnMut() -> bool + '_ {
    move || {
        !matches!(
            tx.try_send(Msg::Checkpoint(checkpoint.clone())),
            Err(TrySendError::Disconnected(_))
        )
    }
}

/// What one read of a followed file ended with.
pub enum Step {
    /// Read what there was; wait for more.
    Read,
    /// The writer is gone (stdout closed or the process stops): stop reading.
    Closed,
    /// The file cannot be followed any more (said on stderr).
    Failed,
}

/// The bookkeeping of one followed file between reads: its names, the last position sent, and
/// what was already said about it.
pub struct Reader {
    /// The container whose file this is (its counters' label).
    container: Arc<str>,
    source: Source,
    key: Arc<str>,
    path: PathBuf,
    warned_long: bool,
    last_sent: Option<Cursor>,
    rotations: u64,
}

impl Reader {
    /// Bookkeeping for `path`, read for `source`, its cursor saved under `key`.
    pub fn new(container: Arc<str>, source: Source, key: Arc<str>, path: PathBuf) -> Reader {
        Reader {
            container,
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
        let container = &*self.container;
        let (warned_long, last_sent) = (&mut self.warned_long, &mut self.last_sent);
        // The position last reported, else where the follower is (everything before it was
        // handled): the one to repeat while waiting for a batch.
        let here = Checkpoint {
            key: key.clone(),
            cursor: last_sent.unwrap_or_else(|| follower.cursor()),
        };
        let mut batch = take_batch(&mut writer_reads(tx, here));
        let mut last_end = None;
        let mut result = Ok(0);
        handler.with_lines(&mut |lines| {
            let mut since_pause = 0;
            result = follower.read_available(&mut |record| {
                let Some(events) = batch.as_mut() else {
                    closed = true;
                    return ControlFlow::Break(());
                };
                let end = record.end();
                match record {
                    Record::Line {
                        bytes, existing, ..
                    } => {
                        if lines.line(bytes, existing, events.next_slot()) {
                            events.push();
                        }
                    }
                    Record::TooLong { len, .. } => {
                        if !*warned_long {
                            crate::diag::line(format_args!(
                                "{name}: skipped a line of {len} bytes in {} (over --max-line; further ones are counted in the summary)",
                                path.display()
                            ));
                            *warned_long = true;
                        }
                        summary.skip(container, source, "too_long");
                    }
                }
                last_end = Some(end);
                since_pause += 1;
                let full = events.is_full();
                if full || since_pause >= PAUSE_LINES {
                    // Nothing stays locked while the send may block.
                    lines.pause();
                    since_pause = 0;
                }
                if full {
                    events.checkpoint = Some(Checkpoint {
                        key: key.clone(),
                        cursor: end,
                    });
                    closed = !send_batch(tx, &mut batch);
                    *last_sent = Some(end);
                    if closed {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
        });
        for notice in follower.take_notices() {
            crate::diag::line(format_args!("{name}: {notice}"));
        }
        // The read batch ends here: what it produced goes now, so that an isolated event is not
        // held back for company.
        let cursor = match &result {
            Ok(_) => Some(follower.cursor()),
            Err(_) => last_end,
        };
        if let (Some(events), Some(cursor), false) = (batch.as_mut(), cursor, closed) {
            if !events.is_empty() {
                events.checkpoint = Some(Checkpoint {
                    key: self.key.clone(),
                    cursor,
                });
                let full = batch.take();
                closed = full.is_some_and(|full| tx.send(Msg::Events(full)).is_err());
                self.last_sent = Some(cursor);
            }
        }
        if let Some(unused) = batch {
            return_batch(unused);
        }
        if let Err(err) = result {
            crate::diag::line(format_args!(
                "{name}: stopped following {}: {}",
                self.path.display(),
                crate::diag::chain(&err)
            ));
            return Step::Failed;
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
            summary.rotated(&self.container, self.source, rotations - self.rotations);
            self.rotations = rotations;
        }
        Step::Read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_has_at_most_its_batches_and_gets_them_back() {
        // A thread of its own: the pool is per thread.
        std::thread::spawn(|| {
            let held: Vec<Batch> = (0..BATCHES_PER_THREAD)
                .map(|_| take_batch(&mut || panic!("no wait while fewer exist")).unwrap())
                .collect();
            // All out, and the writer is gone: no batch, after a wait.
            let mut asked = 0;
            assert!(take_batch(&mut || {
                asked += 1;
                false
            })
            .is_none());
            assert_eq!(asked, 1);
            // One comes back from the writer: it is the one handed out.
            let mut held = held.into_iter();
            held.next().unwrap().recycle();
            assert!(take_batch(&mut || panic!("one is free")).is_some());
        })
        .join()
        .unwrap();
    }
}
