//! The follower: one path, followed across rotation under any naming, truncation, re-creation
//! and the removal of its whole directory.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::beneath::Dir;
use crate::cursor::Cursor;
use crate::error::{Error, ErrorKind};
use crate::file::{end_position, Tracked};
use crate::identity::{Born, FileId, FileIds, Fingerprint};
use crate::lines::LineBuf;
use crate::watches::{Owner, Watches};

mod read;
mod rotated;
mod wake;

pub(crate) use read::READ_BUDGET;
use read::{Draining, Truncation};
use wake::Watch;
pub(crate) use wake::{earliest, nap};

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
/// What the files' owner can do costs bounded work and resources (shield-watch runs as root
/// and follows files that untrusted container owners write): one call reads at most 4 MiB
/// (the rest at the next call, which [`Follower::wait`] and [`crate::FollowSet::wait`] then
/// do not delay), holes of sparse files are skipped without reading them, an empty rotated
/// file holds no descriptor and no watch, and at most 16 rotated files waiting to be read are
/// held open (the later ones are opened as those are read, none is skipped), besides at most
/// 16 in their rotate-wait.
///
/// Limits, by nature of the inputs: copytruncate loses what the writer wrote between the copy
/// and the truncate (logrotate documents this); a truncate-and-regrow past our offset that
/// keeps the first 256 bytes and the byte before our offset is indistinguishable from growth;
/// rotated files moved to another directory (`olddir`) are not read; lines appended to a file
/// after its rotate-wait ended, or (after a restart) to a file older than the cursor's, are not
/// read; a file compressed before we read it to its end loses its rest unless we held it open
/// (as are, beyond the 16 held open, rotated files deleted before their turn).
pub struct Follower {
    /// The file's path, as messages name it.
    path: PathBuf,
    /// Its directory as looked up: its path, or for a held directory `/proc/self/fd/N`.
    dir: PathBuf,
    /// `dir` joined with `name`.
    lookup: PathBuf,
    /// The directory held open ([`FollowSet::add_in`]): it is never looked up by path.
    held: Option<Dir>,
    name: OsString,
    opts: Options,
    cur: Option<Tracked>,
    lines: LineBuf,
    /// Files born after `cur`, in birth order, held open so they can be renamed or deleted
    /// under us and still be read; not empty (but for the one at the path), at most
    /// [`rotated::MAX_QUEUED`].
    next: VecDeque<Tracked>,
    /// Files we moved on from, still read during their rotate-wait.
    draining: Vec<Draining>,
    /// Siblings that are never successors: history present at open, and copies made by
    /// copytruncate (present when a truncation was noticed).
    ignored: FileIds,
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
    /// What `read_available` may still read in this call (see [`read::READ_BUDGET`]).
    budget: u64,
    /// A truncation being dealt with (see [`Follower::restart_truncated`]).
    truncation: Option<Truncation>,
    /// The file at the path at open and its length then: its records up to there are
    /// `existing`.
    initial: Option<(FileId, u64)>,
    last: Cursor,
    /// Problems that did not stop following, not yet taken by the caller.
    notices: Vec<Error>,
    /// Names already reported as refused (each is reported once).
    reported: HashSet<OsString>,
}

/// Where a follower's file is: a path (its directory looked up each time, so that one made
/// later is found), or a name in a held directory.
pub(crate) enum Place<'a> {
    Path(&'a Path),
    Held(&'a Dir, &'a OsStr),
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
        Follower::open_in(reg, 0, Place::Path(path.as_ref()), start, options)
    }

    /// Opens the file `name` of the held directory `dir`: the directory is never looked up
    /// by path again (see [`Dir`]).
    pub fn open_at(
        dir: &Dir,
        name: impl AsRef<OsStr>,
        start: Start,
        options: Options,
    ) -> Result<Follower, Error> {
        let reg = if options.force_poll {
            None
        } else {
            Watches::new().ok().map(|w| Arc::new(Mutex::new(w)))
        };
        Follower::open_in(reg, 0, Place::Held(dir, name.as_ref()), start, options)
    }

    pub(crate) fn open_in(
        reg: Option<Arc<Mutex<Watches>>>,
        owner: Owner,
        place: Place<'_>,
        start: Start,
        options: Options,
    ) -> Result<Follower, Error> {
        let (path, dir, held) = match place {
            Place::Path(path) => {
                let path = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    std::env::current_dir()
                        .map_err(|e| Error::io("resolve", path, e))?
                        .join(path)
                };
                let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                (path, dir, None)
            }
            Place::Held(dir, name) => (dir.path().join(name), dir.through_fd(), Some(dir.clone())),
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::new(ErrorKind::NotRegularFile, path.display().to_string()))?
            .to_os_string();
        let mut f = Follower {
            lookup: dir.join(&name),
            path,
            dir,
            held,
            name,
            lines: LineBuf::new(options.max_line),
            opts: options,
            cur: None,
            next: VecDeque::new(),
            draining: Vec::new(),
            ignored: FileIds::default(),
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
            budget: 0,
            truncation: None,
            initial: None,
            last: Cursor::NONE,
            notices: Vec::new(),
            reported: HashSet::new(),
        };
        // Watch before looking, so that a file created in between still wakes us.
        f.ensure_dir_watch();
        match start {
            Start::Beginning | Start::End => {
                // What is next to the path now is history, not something to read.
                f.ignored = f.sibling_ids().collect();
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

    /// Delivers the complete lines available right now (bytes without the `\n`), in order, to
    /// `on_record`, then returns how many records it delivered. Never blocks. Handles rotation,
    /// truncation and re-creation transparently.
    ///
    /// It stops early, leaving the rest for the next call (and [`Follower::wait`] then returns
    /// at once), when `on_record` returns [`ControlFlow::Break`] (the record it was given
    /// counts as delivered: [`Follower::cursor`] is just after it), and once it has read about
    /// 4 MiB: a huge file is read a slice per call, so that a caller serving many followers
    /// serves them all. Holes in sparse files are skipped, not read.
    pub fn read_available(
        &mut self,
        on_record: &mut dyn FnMut(Record<'_>) -> ControlFlow<()>,
    ) -> Result<usize, Error> {
        let mut delivered = 0usize;
        let mut emit = |r: Record<'_>| {
            delivered += 1;
            on_record(r)
        };
        self.budget = READ_BUDGET;
        self.ensure_dir_watch();
        // Until this call gets to the end of what there is: the next `wait` returns at once.
        self.more = true;
        if self.read_draining(&mut emit)?.is_break() {
            return Ok(delivered);
        }
        // Each pass reads the current file to its end, then decides whether to move on; a
        // bounded number of passes guards against a path that changes identity endlessly
        // (what is left is picked up by the next call, which `wait` then does not delay).
        for _ in 0..64 {
            if self.cur.is_some() {
                if self.truncation.is_none() && self.truncated()? {
                    self.truncation = Some(Truncation {
                        copy: self.find_copy(),
                    });
                }
                if self.truncation.is_some() && self.restart_truncated(&mut emit)?.is_break() {
                    return Ok(delivered);
                }
                if self.pump(&mut emit)?.is_break() {
                    return Ok(delivered);
                }
            }
            let at_path = self.stat_path();
            if let Some(cur) = &self.cur {
                if at_path.is_some_and(|id| id.same_file(&cur.id)) {
                    // Files still queued when we reached the live file were born within the
                    // same clock tick and ordered after it by mistake: they are read anyway,
                    // like a file in its rotate-wait (late, never lost).
                    if self.drain_leftovers(&mut emit)?.is_break() {
                        return Ok(delivered);
                    }
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
                if self.move_on(&mut emit)?.is_break() {
                    return Ok(delivered);
                }
                continue;
            }
            self.more = false;
            break;
        }
        Ok(delivered)
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

    /// Lets go of its large read buffer while idle (a set of many followers keeps its memory
    /// proportional to what is being read, not to how many files it follows); returns it, for
    /// the next follower read to [`Follower::adopt_buffer`].
    pub(crate) fn shrink(&mut self) -> Option<Vec<u8>> {
        self.lines.shrink()
    }

    /// Reads on in `buffer` (another follower's, from [`Follower::shrink`]) if it is larger than
    /// its own.
    pub(crate) fn adopt_buffer(&mut self, buffer: Vec<u8>) {
        self.lines.adopt(buffer);
    }

    /// Bytes its read buffer holds allocated.
    #[cfg(test)]
    pub(crate) fn buffer_allocated(&self) -> usize {
        self.lines.allocated()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // In a shared registry, our watches must not outlive us.
        self.drop_watch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn collect(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.read_available(&mut |r| {
            match r {
                Record::Line { bytes, .. } => out.push(String::from_utf8_lossy(bytes).into_owned()),
                Record::TooLong { len, .. } => out.push(format!("<too long {len}>")),
            }
            ControlFlow::Continue(())
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
            ControlFlow::Continue(())
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

    /// Reads with a callback that says stop after `every` records, until a call delivers
    /// nothing; returns the lines in order.
    fn read_stopping(f: &mut Follower, every: usize) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut taken = 0;
            let n = f
                .read_available(&mut |r| {
                    if let Record::Line { bytes, .. } = r {
                        out.push(String::from_utf8_lossy(bytes).into_owned());
                    }
                    taken += 1;
                    if taken == every {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .unwrap();
            assert!(n <= every, "no record after the callback said stop");
            if n == 0 {
                return out;
            }
        }
    }

    #[test]
    fn a_callback_that_says_stop_ends_the_read_just_after_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.log");
        std::fs::write(&p, b"one\ntwo\nthree\nfour\n").unwrap();
        let mut f = Follower::open(&p, Start::Beginning, Options::default()).unwrap();
        let mut seen = Vec::new();
        let n = f
            .read_available(&mut |r| {
                seen.push(r.end());
                if seen.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            f.cursor(),
            seen[1],
            "the cursor is just after the last record handed out"
        );
        assert_eq!(f.cursor().offset(), 8);
        // The rest is there, once: for this follower, and for a restart from its cursor.
        let mut again = Follower::open(&p, Start::Cursor(f.cursor()), Options::default()).unwrap();
        assert_eq!(collect(&mut again), ["three", "four"]);
        assert_eq!(collect(&mut f), ["three", "four"]);

        // Across a rotation, stopping after every record changes nothing either.
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        io::Write::write_all(&mut w, b"five\nsix\nseven").unwrap();
        std::fs::rename(&p, dir.path().join("f.log.1")).unwrap();
        io::Write::write_all(&mut w, b"\n").unwrap();
        std::fs::write(&p, b"eight\nnine\n").unwrap();
        assert_eq!(
            read_stopping(&mut f, 1),
            ["five", "six", "seven", "eight", "nine"]
        );
    }
}
