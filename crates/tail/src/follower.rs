//! The follower: one path, followed across rotation under any naming, truncation, re-creation
//! and the removal of its whole directory.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::cursor::{Cursor, Fingerprint, FINGERPRINT_MAX};
use crate::error::{Error, ErrorKind};
use crate::file::{
    compressed_content, compressed_name, end_position, gone, open_tracked, pread, pread_full, Born,
    FileId, Tracked,
};
use crate::lines::{LineBuf, Piece};
use crate::watches::{Owner, Role, Watches, ANCESTOR_MASK, DIR_MASK, FILE_MASK};

/// Where a new [`Follower`] starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// After the content present at open (a partial last line is delivered once completed).
    End,
    /// From byte 0 of the file.
    Beginning,
    /// Just after the record a previous follower delivered last; the rest of that file (found
    /// by identity wherever it was renamed to) and every file born after it are read first.
    Cursor(Cursor),
}

/// Tuning knobs. `Default` gives the documented defaults.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `max_line` | 65 536 | longer lines are skipped whole and reported as [`Record::TooLong`] |
/// | `poll_interval` | 50 ms | stat-poll period, only where inotify is unavailable |
/// | `force_poll` | false | behave as if inotify were unavailable (for tests) |
/// | `rotate_wait` | 5 s | how long a rotated-away file is still read after the follower moved on, extended while it grows |
#[derive(Clone, Debug)]
pub struct Options {
    /// The longest line delivered, in bytes without the `\n`.
    pub max_line: usize,
    /// How often to stat the file when inotify is unavailable.
    pub poll_interval: Duration,
    /// Pretend inotify is unavailable.
    pub force_poll: bool,
    /// After the follower moved on to a newer file, the old one is still read for this long,
    /// and for as long after its last growth: a writer may append to its renamed file until
    /// told to reopen (dnsmasq until SIGUSR2). Zero finishes the old file at once.
    pub rotate_wait: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_line: 65_536,
            poll_interval: Duration::from_millis(50),
            force_poll: false,
            rotate_wait: Duration::from_secs(5),
        }
    }
}

/// One record delivered by [`Follower::read_available`].
#[derive(Debug)]
pub enum Record<'a> {
    /// A complete line (without its `\n`), as raw bytes: invalid UTF-8 and NULs pass through.
    Line {
        /// The line.
        bytes: &'a [u8],
        /// Where to resume after this record (see [`Record::end`]).
        end: Cursor,
        /// The line was already in the file when the follower opened it.
        existing: bool,
    },
    /// A line over `max_line`, skipped whole.
    TooLong {
        /// Its length in bytes, without the `\n`.
        len: u64,
        /// Where to resume after this record (see [`Record::end`]).
        end: Cursor,
        /// The line was already in the file when the follower opened it.
        existing: bool,
    },
}

impl Record<'_> {
    /// Where a restart resumes so that this record is not delivered again: the position just
    /// after it, or, for a record from a file still read after the follower moved on (see
    /// [`Options::rotate_wait`]), the follower's position in its current file.
    pub fn end(&self) -> Cursor {
        match self {
            Record::Line { end, .. } | Record::TooLong { end, .. } => *end,
        }
    }

    /// Whether the record was already in the file when the follower opened it (only ever true
    /// for the file at the path at open, with [`Start::Beginning`] or [`Start::Cursor`]).
    pub fn existing(&self) -> bool {
        match self {
            Record::Line { existing, .. } | Record::TooLong { existing, .. } => *existing,
        }
    }
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Lines delivered ([`Record::Line`]).
    pub lines: u64,
    /// Bytes read from files.
    pub bytes: u64,
    /// Times the follower moved on to a newer file (rename-rotation, delete and re-create).
    pub rotations: u64,
    /// Times a file was found truncated in place (copytruncate) and re-read from 0.
    pub truncations: u64,
    /// Over-long lines skipped ([`Record::TooLong`]).
    pub too_long: u64,
    /// Times the inotify queue overflowed, so that every file had to be looked at.
    pub overflows: u64,
    /// Symbolic links refused (each reported once through [`Follower::take_notices`]).
    pub refused: u64,
}

/// A file we moved on from, still read for a while (see [`Options::rotate_wait`]).
struct Draining {
    t: Tracked,
    lines: LineBuf,
    until: Instant,
}

/// At most this many rotated-away files are still read at once; past it the oldest is finished.
const MAX_DRAINING: usize = 16;

/// The inotify side: a shared registry, our place in it, and the directory watches we hold.
struct Watch {
    reg: Arc<Mutex<Watches>>,
    owner: Owner,
    /// The directory of the file.
    dir_wd: Option<i32>,
    /// Above it: its parent (for the directory's own name), or while the parent is missing,
    /// the nearest existing ancestor (`far`).
    above_wd: Option<i32>,
    far: bool,
}

/// Follows one path and yields its complete lines, losing none across rotation.
///
/// Build it with [`Follower::open`] (or add it to a [`crate::FollowSet`]), then loop:
/// [`Follower::read_available`] (never blocks) and [`Follower::wait`] (blocks on inotify until
/// something may have changed).
///
/// How the hard cases are handled:
/// - the file we read is always held open, so after a rename (or unlink) we keep reading it to
///   its end; we move on once a newer file has content (the writer has moved over), and keep
///   reading the old one for [`Options::rotate_wait`] after that, longer while it grows;
/// - newer files are found by birth, not by name: every regular file in the directory whose
///   name starts with ours, born after the one we read, is read in birth order, each to its
///   end, then the file at the path. That covers numbered shifting, `dateext`, `dateformat`
///   with seconds, increasing numbers, and files rotated away before we ever opened them;
///   compressed rotations (by name or content) are never read as text;
/// - in-place truncation is noticed by the size going below what we read, by the byte before
///   our offset changing, or by the fingerprint of the first bytes changing; reading restarts
///   at 0, after the lines we had not read yet are read from the copy (copytruncate);
/// - a file is identified by device, inode, birth time and fingerprint, so a re-used inode is a
///   new file;
/// - the directory removed and created again is watched again (through its nearest existing
///   ancestor meanwhile), and every file in the new one is read from its start;
/// - nothing is ever opened through a symbolic link: one at our name, or a sibling, is refused
///   and reported once ([`Follower::take_notices`]).
///
/// Limits, by nature of the inputs: copytruncate loses what the writer wrote between the copy
/// and the truncate (logrotate documents this); a truncate-and-regrow past our offset that
/// keeps the first 256 bytes and the byte before our offset is indistinguishable from growth;
/// rotated files moved to another directory (`olddir`) are not read; lines appended to a file
/// after its rotate-wait ended, or (after a restart) to a file older than the cursor's, are not
/// read; a file compressed before we read it to its end loses its rest unless we held it open.
pub struct Follower {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    opts: Options,
    cur: Option<Tracked>,
    lines: LineBuf,
    /// Files born after `cur`, in birth order, held open so they can be renamed or deleted
    /// under us and still be read.
    next: VecDeque<Tracked>,
    /// Files we moved on from, still read during their rotate-wait.
    draining: Vec<Draining>,
    /// Siblings that are never successors: history present at open, and copies made by
    /// copytruncate (present when a truncation was noticed).
    ignored: Vec<FileId>,
    /// Files we finished (moved on from), most recent last, at most 64: where the filesystem
    /// records no birth time, a renamed file's change time moves, so birth order alone could
    /// offer it again.
    done: VecDeque<(FileId, Fingerprint)>,
    /// With no current file, only files born after this are successors (a cursor's file that
    /// is gone).
    horizon: Option<Born>,
    watch: Option<Watch>,
    stats: Stats,
    /// `read_available` stopped before it was done: the next `wait` returns at once.
    more: bool,
    /// The file at the path at open and its length then: its records up to there are
    /// `existing`.
    initial: Option<(FileId, u64)>,
    last: Cursor,
    /// Problems that did not stop following, not yet taken by the caller.
    notices: Vec<Error>,
    /// Names already reported as refused (each is reported once).
    reported: Vec<OsString>,
}

impl Follower {
    /// Opens (the path need not exist yet, nor its directory). Never blocks. The follower has
    /// its own inotify instance; [`crate::FollowSet`] shares one among many.
    pub fn open(path: impl AsRef<Path>, start: Start, options: Options) -> Result<Follower, Error> {
        let reg = if options.force_poll {
            None
        } else {
            Watches::new().ok().map(|w| Arc::new(Mutex::new(w)))
        };
        Follower::open_in(reg, 0, path.as_ref(), start, options)
    }

    pub(crate) fn open_in(
        reg: Option<Arc<Mutex<Watches>>>,
        owner: Owner,
        path: &Path,
        start: Start,
        options: Options,
    ) -> Result<Follower, Error> {
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("resolve", path, e))?
                .join(path)
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::new(ErrorKind::NotRegularFile, path.display().to_string()))?
            .to_os_string();
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut f = Follower {
            path,
            dir,
            name,
            lines: LineBuf::new(options.max_line),
            opts: options,
            cur: None,
            next: VecDeque::new(),
            draining: Vec::new(),
            ignored: Vec::new(),
            done: VecDeque::new(),
            horizon: None,
            watch: reg.map(|reg| Watch {
                reg,
                owner,
                dir_wd: None,
                above_wd: None,
                far: false,
            }),
            stats: Stats::default(),
            more: false,
            initial: None,
            last: Cursor::NONE,
            notices: Vec::new(),
            reported: Vec::new(),
        };
        // Watch before looking, so that a file created in between still wakes us.
        f.ensure_dir_watch();
        match start {
            Start::Beginning | Start::End => {
                // What is next to the path now is history, not something to read.
                f.ignored = f.sibling_ids();
                if let Some(t) = f.open_path()? {
                    let size = t.size(&f.path)?;
                    f.initial = Some((t.id, size));
                    let (offset, discard) = if start == Start::End {
                        end_position(&t.file, size, f.opts.max_line)
                            .map_err(|e| Error::io("read", &f.path, e))?
                    } else {
                        (0, false)
                    };
                    f.install(t, offset, discard)?;
                } else {
                    // No file yet: a cursor taken before one appears still says "everything
                    // born from now on", so a restart reads what was created meanwhile.
                    f.last = Cursor::since(SystemTime::now());
                }
            }
            Start::Cursor(c) => f.resume(c)?,
        }
        Ok(f)
    }

    /// Delivers every complete line available right now (bytes without the `\n`), in order,
    /// then returns how many records it delivered. Never blocks. Handles rotation, truncation
    /// and re-creation transparently.
    pub fn read_available(
        &mut self,
        on_record: &mut dyn FnMut(Record<'_>),
    ) -> Result<usize, Error> {
        let mut delivered = 0usize;
        let mut emit = |r: Record<'_>| {
            delivered += 1;
            on_record(r)
        };
        self.ensure_dir_watch();
        self.read_draining(&mut emit)?;
        // Each pass reads the current file to its end, then decides whether to move on; a
        // bounded number of passes guards against a path that changes identity endlessly
        // (what is left is picked up by the next call, which `wait` then does not delay).
        self.more = true;
        for _ in 0..64 {
            if self.cur.is_some() {
                if self.truncated()? {
                    self.restart_truncated(&mut emit)?;
                }
                self.pump(&mut emit)?;
            }
            let at_path = self.stat_path();
            if let Some(cur) = &self.cur {
                if at_path.is_some_and(|id| id.same_file(&cur.id)) {
                    // Files still queued when we reached the live file were born within the
                    // same clock tick and ordered after it by mistake: they are read anyway,
                    // like a file in its rotate-wait (late, never lost).
                    self.drain_leftovers(&mut emit)?;
                    self.more = false;
                    break;
                }
            }
            // Our file is no longer at the path (renamed or deleted), or we have none yet:
            // collect the files born after it.
            self.refresh_successors()?;
            if self.next.is_empty() {
                self.more = false;
                break;
            }
            if self.cur.is_none() {
                let next = self.next.pop_front().expect("checked non-empty");
                self.install(next, 0, false)?;
                continue;
            }
            // Move on once a newer file has content: until then the writer may still append
            // to ours (logrotate `create` before the SIGUSR2).
            if self
                .next
                .iter()
                .any(|t| t.size(&self.path).is_ok_and(|s| s > 0))
            {
                let next = self.next.pop_front().expect("checked non-empty");
                self.move_on(next, &mut emit)?;
                continue;
            }
            self.more = false;
            break;
        }
        Ok(delivered)
    }

    /// Blocks (inotify, or the poll interval in fallback) until the file or its directory may
    /// have changed, or until `timeout` passes. No busy loop: an idle follower uses no CPU.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        let deadline = earliest(timeout.map(|t| Instant::now() + t), self.deadline());
        if std::mem::take(&mut self.more) {
            return Ok(());
        }
        let Some(reg) = self.watch.as_ref().map(|w| Arc::clone(&w.reg)) else {
            return self.poll_wait(deadline);
        };
        loop {
            if self.take_wake() {
                return Ok(());
            }
            if self.watch.is_none() {
                return self.poll_wait(deadline);
            }
            let owner = self.watch.as_ref().map_or(0, |w| w.owner);
            let arrived = reg
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .wait(deadline, &[owner])
                .map_err(|e| Error::io("wait on inotify for", &self.path, e))?;
            if !arrived {
                return Ok(());
            }
        }
    }

    /// Handles what the registry saw for us; returns whether there is something to read.
    pub(crate) fn take_wake(&mut self) -> bool {
        let Some(w) = &self.watch else {
            return true;
        };
        let wake = w
            .reg
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_wake(w.owner);
        if wake.overflow {
            self.stats.overflows += 1;
        }
        let mut relevant = wake.relevant || wake.overflow;
        if let Some(w) = self.watch.as_mut() {
            let mut reg = w.reg.lock().unwrap_or_else(PoisonError::into_inner);
            if wake.dir_lost {
                // Removed or created again: watch whatever is at the name now.
                if let Some(wd) = w.dir_wd.take() {
                    reg.remove(w.owner, wd);
                }
                relevant = true;
            }
            if wake.ancestor_changed {
                if let Some(wd) = w.above_wd.take() {
                    reg.remove(w.owner, wd);
                }
            }
        }
        if (wake.dir_lost || wake.ancestor_changed) && self.ensure_dir_watch() {
            relevant = true;
        }
        relevant
    }

    /// When the follower must be looked at even if nothing happens: the end of a rotate-wait.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.draining.iter().map(|d| d.until).min()
    }

    /// Whether a call of `read_available` is due without any event (it stopped early, or a
    /// rotate-wait ended).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.more || self.deadline().is_some_and(|d| d <= now)
    }

    /// Position from which a restart resumes with nothing lost and nothing twice.
    ///
    /// One exception: while the current file is deleted and a newer file is already known, this
    /// names the start of the newer file. A restart cannot reach a deleted file's rest anyway.
    pub fn cursor(&self) -> Cursor {
        // Successors are all still empty (else we would have moved on); deleted ones never
        // matter again.
        if let (Some(cur), Some(next)) = (&self.cur, self.next.iter().find(|t| t.linked())) {
            if !cur.linked() {
                return Cursor::at(next.id, 0, Fingerprint::EMPTY);
            }
        }
        match &self.cur {
            Some(t) => Cursor::at(t.id, self.lines.consumed(), t.fp),
            None => self.last,
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Problems met that did not stop following (a refused symbolic link, an unreadable
    /// rotated file), each once; the caller reports them.
    pub fn take_notices(&mut self) -> Vec<Error> {
        std::mem::take(&mut self.notices)
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this follower is driven by inotify (false: stat polling).
    pub fn uses_inotify(&self) -> bool {
        self.watch.is_some()
    }

    /// Lets go of large read buffers while idle (a set of many followers keeps its memory
    /// proportional to what is being read, not to how many files it follows).
    pub(crate) fn shrink(&mut self) {
        self.lines.shrink();
    }

    // ---- reading ----

    /// Reads the current file from `read_to` to its end, delivering complete lines.
    fn pump(&mut self, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        let existing_to = match self.initial {
            Some((id, len)) if id == cur.id => len,
            _ => 0,
        };
        pump(
            cur,
            &mut self.lines,
            &mut self.stats,
            &self.path,
            Ends::Own { existing_to },
            emit,
        )
        .map(|_| ())
    }

    /// Reads every file still in its rotate-wait, and finishes those whose wait is over.
    fn read_draining(&mut self, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
        if self.draining.is_empty() {
            return Ok(());
        }
        let resume = self.cursor();
        let now = Instant::now();
        let mut i = 0;
        while i < self.draining.len() {
            let d = &mut self.draining[i];
            let grew = pump(
                &mut d.t,
                &mut d.lines,
                &mut self.stats,
                &self.path,
                Ends::Fixed(resume),
                emit,
            )?;
            if grew {
                d.until = d.until.max(now + self.opts.rotate_wait);
            }
            if now >= d.until {
                let d = self.draining.remove(i);
                self.finish_draining(d, resume, emit);
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Moves every still-queued successor to the files in their rotate-wait (see the caller),
    /// reading each once now.
    fn drain_leftovers(&mut self, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
        if self.next.is_empty() {
            return Ok(());
        }
        let until = Instant::now() + self.opts.rotate_wait;
        while let Some(t) = self.next.pop_front() {
            self.draining.push(Draining {
                t,
                lines: LineBuf::new(self.opts.max_line),
                until,
            });
        }
        self.read_draining(emit)
    }

    /// A rotated-away file's wait is over: deliver its unterminated tail, never read it again.
    fn finish_draining(
        &mut self,
        mut d: Draining,
        resume: Cursor,
        emit: &mut dyn FnMut(Record<'_>),
    ) {
        let stats = &mut self.stats;
        d.lines
            .finish(&mut |p| deliver(p, Ends::Fixed(resume), (d.t.id, d.t.fp), stats, emit));
        self.forget_file(d.t);
    }

    /// Remembers a finished file (so it is never read again) and lets go of it.
    fn forget_file(&mut self, t: Tracked) {
        // A deleted one cannot be met again (its inode number can: by a new file).
        if t.linked() {
            if self.done.len() >= 64 {
                self.done.pop_front();
            }
            self.done.push_back((t.id, t.fp));
        }
        if let (Some(w), Some(wd)) = (&self.watch, t.wd) {
            w.reg
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(w.owner, wd);
        }
    }

    /// Whether the current file was truncated (or truncated and regrown) under us.
    fn truncated(&mut self) -> Result<bool, Error> {
        let Some(cur) = &self.cur else {
            return Ok(false);
        };
        let err = |e| Error::io("stat", &self.path, e);
        let size = cur.size(&self.path)?;
        if size < cur.read_to {
            return Ok(true);
        }
        if let Some(b) = cur.last_byte {
            let mut one = [0u8];
            if pread(&cur.file, &mut one, cur.read_to - 1).map_err(err)? != 1 || one[0] != b {
                return Ok(true);
            }
        }
        if cur.fp.len > 0 && !cur.starts_with(cur.fp) {
            return Ok(true);
        }
        Ok(false)
    }

    fn restart_truncated(&mut self, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
        // copytruncate copied the file before truncating it: what we had not read yet is in
        // the copy. Read it from there, from our offset on, before starting over.
        if let Some(copy) = self.find_copy() {
            if let Some(cur) = self.cur.as_mut() {
                let live = std::mem::replace(&mut cur.file, copy);
                let r = self.pump(emit);
                if let Some(cur) = self.cur.as_mut() {
                    cur.file = live;
                }
                r?;
            }
        }
        self.finish_partial(emit);
        if let Some(cur) = self.cur.as_mut() {
            cur.read_to = 0;
            cur.last_byte = None;
            cur.fp = Fingerprint::EMPTY;
        }
        self.lines.reset(0);
        self.initial = None;
        self.stats.truncations += 1;
        // Every file next to ours now (the copy among them) holds content we read or just
        // read from the copy: none is a successor.
        self.ignored = self.sibling_ids();
        Ok(())
    }

    /// The copy logrotate's copytruncate made of the current file just before truncating it:
    /// a file next to ours (named like ours), longer than what we read, that starts with the
    /// same bytes, has the same byte just before our offset, and was written after our last
    /// read. The newest such file wins.
    fn find_copy(&self) -> Option<std::fs::File> {
        let cur = self.cur.as_ref()?;
        let last_byte = cur.last_byte?;
        let not_before = cur.last_data? - Duration::from_secs(1);
        let mut best: Option<((SystemTime, Born), std::fs::File)> = None;
        for (name, m) in self.siblings() {
            let Ok(mtime) = m.modified() else { continue };
            let id = FileId {
                dev: m.dev(),
                ino: m.ino(),
                birth: crate::file::birth_nanos(&m).unwrap_or(0),
            };
            // The newest copy wins, even one holding nothing we have not read (an older
            // copy could otherwise pass for it).
            let when = (mtime, Born::of(&m));
            if (m.dev(), m.ino()) == (cur.id.dev, cur.id.ino)
                || self.ignored.iter().any(|i| i.same_file(&id))
                || m.size() < cur.read_to
                || mtime < not_before
                || best.as_ref().is_some_and(|(t, _)| *t >= when)
            {
                continue;
            }
            let Ok(Some(t)) = open_tracked(&self.dir, &name) else {
                continue;
            };
            let mut one = [0u8];
            if t.starts_with(cur.fp)
                && pread(&t.file, &mut one, cur.read_to - 1).is_ok_and(|n| n == 1)
                && one[0] == last_byte
            {
                best = Some((when, t.file));
            }
        }
        best.map(|(_, f)| f)
    }

    /// The current file will not grow any more: deliver its unterminated tail as a line.
    fn finish_partial(&mut self, emit: &mut dyn FnMut(Record<'_>)) {
        let Some(cur) = &self.cur else { return };
        let ends = Ends::Own { existing_to: 0 };
        let file = (cur.id, cur.fp);
        let stats = &mut self.stats;
        self.lines
            .finish(&mut |p| deliver(p, ends, file, stats, emit));
    }

    /// Leaves the current file for `next` (read from 0) after a last read of the current one,
    /// which is then still read during its rotate-wait.
    fn move_on(&mut self, next: Tracked, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
        self.pump(emit)?;
        self.stats.rotations += 1;
        let old_lines = std::mem::replace(&mut self.lines, LineBuf::new(self.opts.max_line));
        let old = self.cur.take();
        self.install(next, 0, false)?;
        if let Some(old) = old {
            self.last = self.cursor();
            let d = Draining {
                t: old,
                lines: old_lines,
                until: Instant::now() + self.opts.rotate_wait,
            };
            let resume = self.cursor();
            if self.opts.rotate_wait.is_zero() {
                self.finish_draining(d, resume, emit);
            } else {
                if self.draining.len() >= MAX_DRAINING {
                    let oldest = self.draining.remove(0);
                    self.finish_draining(oldest, resume, emit);
                }
                self.draining.push(d);
            }
        }
        Ok(())
    }

    // ---- files ----

    fn open_path(&mut self) -> Result<Option<Tracked>, Error> {
        match open_tracked(&self.dir, &self.name) {
            Err(e) if e.kind() == ErrorKind::Escapes => {
                let name = self.name.clone();
                self.refuse(name, e);
                Ok(None)
            }
            // Something that is not a file at the path is treated as "no file yet".
            Err(e) if e.kind() == ErrorKind::NotRegularFile => Ok(None),
            other => other,
        }
    }

    /// Reports a refused name once.
    fn refuse(&mut self, name: OsString, err: Error) {
        if !self.reported.contains(&name) {
            self.stats.refused += 1;
            self.reported.push(name);
            self.notices.push(err);
        }
    }

    /// The identity of the regular file at the path, if any (a symbolic link is none).
    fn stat_path(&self) -> Option<FileId> {
        let m = std::fs::symlink_metadata(&self.path).ok()?;
        m.is_file().then(|| FileId {
            dev: m.dev(),
            ino: m.ino(),
            birth: crate::file::birth_nanos(&m).unwrap_or(0),
        })
    }

    /// Makes `t` the current file, positioned at `offset`.
    fn install(&mut self, mut t: Tracked, offset: u64, discard: bool) -> Result<(), Error> {
        if let Some(old) = self.cur.take() {
            self.last = Cursor::at(old.id, self.lines.consumed(), old.fp);
            self.forget_file(old);
        }
        t.read_to = offset;
        let err = |e| Error::io("read", &self.path, e);
        if offset > 0 {
            let mut one = [0u8];
            t.last_byte =
                (pread(&t.file, &mut one, offset - 1).map_err(err)? == 1).then_some(one[0]);
            // The content up to `offset` is as of now, for `find_copy`.
            t.last_data = Some(SystemTime::now());
        }
        if t.fp.len == 0 && offset > 0 {
            let mut head = [0u8; FINGERPRINT_MAX];
            let want = (offset as usize).min(FINGERPRINT_MAX);
            let got = pread_full(&t.file, &mut head[..want], 0).map_err(err)?;
            t.fp = Fingerprint::of(&head[..got]);
        }
        self.lines.reset(offset);
        // Resuming just after a byte that is not a line end (a cursor taken after an
        // unterminated line was flushed, or a file that changed): the rest of that line is a
        // fragment we must not deliver as if it were a line.
        if discard || (offset > 0 && t.last_byte != Some(b'\n')) {
            self.lines.discard_rest();
        }
        if t.wd.is_none() {
            t.wd = self.watch_file(&t);
        }
        self.cur = Some(t);
        Ok(())
    }

    /// Positions at a saved cursor: the same file if it is still at the path, else the rotated
    /// file with that identity next to it (read to its end first, then every file born after
    /// it), else every file born after the cursor's, else the path from 0.
    fn resume(&mut self, c: Cursor) -> Result<(), Error> {
        let at_path = self.open_path()?;
        if let Some(t) = &at_path {
            self.initial = Some((t.id, t.size(&self.path)?));
        }
        if !c.names_a_file() && c.birth == 0 {
            if let Some(t) = at_path {
                self.install(t, 0, false)?;
            }
            return Ok(());
        }
        if let Some(mut t) = at_path {
            if c.file_id().same_file(&t.id) {
                // Not rotated away: what is next to it now is history (or older copies).
                self.ignored = self.sibling_ids();
                let size = t.size(&self.path)?;
                if t.starts_with(c.fp) {
                    if size >= c.offset {
                        t.fp = c.fp;
                        return self.install(t, c.offset, false);
                    }
                    // Truncated while we were down.
                    self.stats.truncations += 1;
                }
                // Otherwise the inode was re-used by a different file: it is all new.
                return self.install(t, 0, false);
            }
        }
        if let Some(mut old) = self.find_sibling(c) {
            self.initial = Some((old.id, old.size(&self.path)?));
            old.fp = c.fp;
            return self.install(old, c.offset, false);
        }
        // The cursor's file is gone (deleted or compressed away), or there was none when it
        // was taken: what was born after it (or after that moment) is still to read, in
        // order. Without a birth time, the path from its start.
        self.initial = None;
        self.last = c;
        if c.birth != 0 {
            self.horizon = Some(Born {
                nanos: c.birth,
                ino: c.ino,
            });
        } else {
            let at = self.stat_path();
            self.ignored = self
                .sibling_ids()
                .into_iter()
                .filter(|id| Some(*id) != at)
                .collect();
        }
        Ok(())
    }

    /// Regular files in our directory whose name starts with ours, with their (not followed)
    /// metadata. Symbolic links among them are refused and reported.
    fn siblings(&self) -> Vec<(OsString, std::fs::Metadata)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(self.name.as_bytes()))
            .filter_map(|e| e.metadata().ok().map(|m| (e.file_name(), m)))
            .filter(|(_, m)| m.is_file())
            .collect()
    }

    /// Identities of every regular file next to ours whose name starts with ours.
    fn sibling_ids(&self) -> Vec<FileId> {
        self.siblings()
            .iter()
            .map(|(_, m)| FileId {
                dev: m.dev(),
                ino: m.ino(),
                birth: crate::file::birth_nanos(m).unwrap_or(0),
            })
            .collect()
    }

    /// The file next to the path with the cursor's identity and fingerprint, long enough.
    fn find_sibling(&mut self, c: Cursor) -> Option<Tracked> {
        for (name, m) in self.siblings() {
            if (m.dev(), m.ino()) != (c.dev, c.ino) {
                continue;
            }
            let Ok(Some(t)) = open_tracked(&self.dir, &name) else {
                continue;
            };
            if c.file_id().same_file(&t.id)
                && t.starts_with(c.fp)
                && t.size(&self.path).is_ok_and(|s| s >= c.offset)
            {
                return Some(t);
            }
        }
        None
    }

    /// Brings `next` up to date: every regular file in the directory whose name starts with
    /// ours, born after the current file (or the horizon), not compressed, not ignored and
    /// not finished, held open in birth order.
    fn refresh_successors(&mut self) -> Result<(), Error> {
        let horizon = self.cur.as_ref().map(|c| c.born).or(self.horizon);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(self.name.as_bytes()) {
                continue;
            }
            let Ok(m) = entry.metadata() else { continue };
            if m.file_type().is_symlink() {
                let err = Error::new(ErrorKind::Escapes, entry.path().display().to_string());
                self.refuse(name, err);
                continue;
            }
            if !m.is_file() || compressed_name(&name) {
                continue;
            }
            let born = Born::of(&m);
            let id = FileId {
                dev: m.dev(),
                ino: m.ino(),
                birth: crate::file::birth_nanos(&m).unwrap_or(0),
            };
            let known = |t: &Tracked| (t.id.dev, t.id.ino) == (m.dev(), m.ino());
            if self.cur.as_ref().is_some_and(known)
                || self.next.iter().any(known)
                || self.draining.iter().any(|d| known(&d.t))
                || self.ignored.iter().any(|i| i.same_file(&id))
                // Files born within the same clock tick as ours cannot be ordered by birth:
                // they are taken, unless known (a file older than ours in the same tick was
                // finished, ignored, or never seen: reading it late beats losing it).
                || horizon.is_some_and(|h| born.nanos < h.nanos)
            {
                continue;
            }
            let t = match open_tracked(&self.dir, &name) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) if e.kind() == ErrorKind::Escapes => {
                    self.refuse(name, e);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::NotRegularFile => continue,
                Err(e) => {
                    // Unreadable (permissions): say so once, keep following the rest.
                    self.refuse(name, e);
                    continue;
                }
            };
            if compressed_content(&t.file) {
                self.ignored.push(t.id);
                continue;
            }
            if self
                .done
                .iter()
                .any(|(id, fp)| id.same_file(&t.id) && t.starts_with(*fp))
            {
                continue;
            }
            found.push(t);
        }
        if found.is_empty() {
            return Ok(());
        }
        for mut t in found {
            t.wd = self.watch_file(&t);
            self.next.push_back(t);
        }
        // Birth order; among files born within one clock tick, the one at the path is the
        // newest whatever its inode number (inode numbers are re-used).
        let at_path = self.stat_path();
        self.next.make_contiguous().sort_by_key(|t| {
            let live = at_path.is_some_and(|id| id.same_file(&t.id));
            (t.born.nanos, live, t.born.ino)
        });
        Ok(())
    }

    /// An inotify watch on the inode `t` holds, if inotify is in use.
    fn watch_file(&mut self, t: &Tracked) -> Option<i32> {
        let w = self.watch.as_ref()?;
        // Watch the inode we hold, not the name: /proc/self/fd/N resolves to exactly it.
        use std::os::fd::AsRawFd;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", t.file.as_raw_fd()));
        let r = w.reg.lock().unwrap_or_else(PoisonError::into_inner).add(
            w.owner,
            Role::File,
            &fd_path,
            FILE_MASK,
        );
        match r {
            Ok(wd) => Some(wd),
            Err(_) => {
                // Out of inotify watches (or no /proc): polling still delivers everything.
                self.drop_watch();
                None
            }
        }
    }

    fn drop_watch(&mut self) {
        if let Some(w) = self.watch.take() {
            w.reg
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget(w.owner);
        }
    }

    // ---- waking ----

    /// Watches the directory's parent (for the directory's own name; while the parent is
    /// missing, its nearest existing ancestor), then the directory itself. Returns true when
    /// the directory watch was just established (the caller should look).
    fn ensure_dir_watch(&mut self) -> bool {
        let Some(w) = self.watch.as_mut() else {
            return false;
        };
        if w.dir_wd.is_some() && w.above_wd.is_some() && !w.far {
            return false;
        }
        let reg = Arc::clone(&w.reg);
        let mut reg = reg.lock().unwrap_or_else(PoisonError::into_inner);
        // Above first, so that the directory appearing in between is still seen.
        if w.above_wd.is_none() || w.far {
            let name: Box<[u8]> = self
                .dir
                .file_name()
                .map_or_else(Default::default, |n| n.as_bytes().into());
            let mut at = self.dir.parent();
            let mut role = Role::Entry(name);
            while let Some(a) = at {
                match reg.add(w.owner, role.clone(), a, ANCESTOR_MASK) {
                    Ok(wd) => {
                        if let Some(old) = w.above_wd.replace(wd) {
                            if old != wd {
                                reg.remove(w.owner, old);
                            }
                        }
                        w.far = role == Role::Ancestor;
                        break;
                    }
                    Err(e) if gone(&e) => {
                        at = a.parent();
                        role = Role::Ancestor;
                    }
                    Err(_) => {
                        drop(reg);
                        // Out of watches or similar: fall back to polling, which still works.
                        self.drop_watch();
                        return false;
                    }
                }
            }
        }
        if w.dir_wd.is_some() {
            return false;
        }
        let prefix: Box<[u8]> = self.name.as_bytes().into();
        match reg.add(w.owner, Role::Dir(prefix), &self.dir, DIR_MASK) {
            Ok(wd) => {
                w.dir_wd = Some(wd);
                true
            }
            Err(e) if gone(&e) => false,
            Err(_) => {
                drop(reg);
                self.drop_watch();
                false
            }
        }
    }

    /// Whether `read_available` would find something to do (for stat polling).
    pub(crate) fn poll_pending(&self) -> bool {
        if self.due(Instant::now())
            || self
                .draining
                .iter()
                .any(|d| d.t.size(&self.path).is_ok_and(|s| s != d.t.read_to))
            || self
                .next
                .iter()
                .any(|t| t.size(&self.path).is_ok_and(|s| s > 0))
        {
            return true;
        }
        let at_path = self.stat_path();
        match &self.cur {
            None => at_path.is_some() || !self.siblings().is_empty() && self.horizon.is_some(),
            Some(t) => {
                let size = t.size(&self.path).unwrap_or(t.read_to);
                size != t.read_to || at_path.is_some_and(|id| !id.same_file(&t.id))
            }
        }
    }

    fn poll_wait(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        loop {
            if self.poll_pending() {
                return Ok(());
            }
            if !nap(self.opts.poll_interval, deadline) {
                return Ok(());
            }
        }
    }
}

/// Sleeps one poll interval, or until `deadline` if that comes first; false when the deadline
/// has passed (nothing slept).
pub(crate) fn nap(interval: Duration, deadline: Option<Instant>) -> bool {
    let mut nap = interval;
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        nap = nap.min(left);
    }
    std::thread::sleep(nap);
    true
}

impl Drop for Follower {
    fn drop(&mut self) {
        // In a shared registry, our watches must not outlive us.
        self.drop_watch();
    }
}

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How the records of one read are positioned.
#[derive(Clone, Copy)]
enum Ends {
    /// In the file read: the position just after each record; records ending at or before
    /// `existing_to` were there at open.
    Own { existing_to: u64 },
    /// A rotated-away file read during its rotate-wait: a restart resumes at the follower's
    /// position in its current file, never in this one.
    Fixed(Cursor),
}

/// Reads `t` from `read_to` to its end into `lines`, delivering complete lines; returns
/// whether anything was read.
fn pump(
    t: &mut Tracked,
    lines: &mut LineBuf,
    stats: &mut Stats,
    path: &Path,
    ends: Ends,
    emit: &mut dyn FnMut(Record<'_>),
) -> Result<bool, Error> {
    let mut grew = false;
    loop {
        let spare = lines.spare();
        let n = pread(&t.file, spare, t.read_to).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Ok(grew);
        }
        grew = true;
        let chunk = &spare[..n];
        let fp_len = u64::from(t.fp.len);
        if fp_len < FINGERPRINT_MAX as u64 && t.read_to <= fp_len && fp_len < t.read_to + n as u64 {
            t.fp.extend(&chunk[(fp_len - t.read_to) as usize..]);
        }
        t.last_byte = Some(chunk[n - 1]);
        t.last_data = Some(SystemTime::now());
        t.read_to += n as u64;
        stats.bytes += n as u64;
        let file = (t.id, t.fp);
        lines.filled(n, &mut |p| deliver(p, ends, file, stats, emit));
    }
}

fn deliver(
    p: Piece<'_>,
    ends: Ends,
    (id, fp): (FileId, Fingerprint),
    stats: &mut Stats,
    emit: &mut dyn FnMut(Record<'_>),
) {
    let at = |offset: u64| match ends {
        Ends::Own { existing_to } => (Cursor::at(id, offset, fp), offset <= existing_to),
        Ends::Fixed(c) => (c, false),
    };
    match p {
        Piece::Line { bytes, end } => {
            stats.lines += 1;
            let (end, existing) = at(end);
            emit(Record::Line {
                bytes,
                end,
                existing,
            });
        }
        Piece::TooLong { len, end } => {
            stats.too_long += 1;
            let (end, existing) = at(end);
            emit(Record::TooLong { len, end, existing });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn collect(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.read_available(&mut |r| match r {
            Record::Line { bytes, .. } => out.push(String::from_utf8_lossy(bytes).into_owned()),
            Record::TooLong { len, .. } => out.push(format!("<too long {len}>")),
        })
        .unwrap();
        out
    }

    #[test]
    fn start_end_skips_existing_lines_and_completes_the_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.log");
        std::fs::write(&p, b"old\nha").unwrap();
        let mut f = Follower::open(&p, Start::End, Options::default()).unwrap();
        assert!(collect(&mut f).is_empty());
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        io::Write::write_all(&mut w, b"lf\nnew\n").unwrap();
        assert_eq!(collect(&mut f), ["half", "new"]);
        assert_eq!(f.cursor().offset(), 13);
    }

    #[test]
    fn lines_present_at_open_are_marked_existing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.log");
        std::fs::write(&p, b"one\ntwo\nhal").unwrap();
        let mut f = Follower::open(&p, Start::Beginning, Options::default()).unwrap();
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        io::Write::write_all(&mut w, b"f\nthree\n").unwrap();
        let mut seen = Vec::new();
        f.read_available(&mut |r| {
            if let Record::Line {
                bytes, existing, ..
            } = r
            {
                seen.push((String::from_utf8_lossy(bytes).into_owned(), existing));
            }
        })
        .unwrap();
        let want = [
            ("one", true),
            ("two", true),
            ("half", false),
            ("three", false),
        ];
        assert_eq!(
            seen,
            want.map(|(l, e)| (l.to_string(), e)).to_vec(),
            "a line completed after open is new"
        );
    }
}
