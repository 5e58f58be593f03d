//! The follower: one path, followed across rotation, truncation and re-creation.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cursor::{Cursor, Fingerprint, FINGERPRINT_MAX};
use crate::error::{Error, ErrorKind};
use crate::inotify::Inotify;
use crate::lines::{LineBuf, Piece};

/// Where a new [`Follower`] starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// After the content present at open (a partial last line is delivered once completed).
    End,
    /// From byte 0 of the file.
    Beginning,
    /// Just after the record a previous follower delivered last; the rest of a file rotated
    /// away in the meantime is read first (found by device and inode next to the path).
    Cursor(Cursor),
}

/// Tuning knobs. `Default` gives the documented defaults.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `max_line` | 65 536 | longer lines are skipped whole and reported as [`Record::TooLong`] |
/// | `poll_interval` | 50 ms | stat-poll period, only where inotify is unavailable |
/// | `force_poll` | false | behave as if inotify were unavailable (for tests) |
#[derive(Clone, Debug)]
pub struct Options {
    /// The longest line delivered, in bytes without the `\n`.
    pub max_line: usize,
    /// How often to stat the file when inotify is unavailable.
    pub poll_interval: Duration,
    /// Pretend inotify is unavailable.
    pub force_poll: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_line: 65_536,
            poll_interval: Duration::from_millis(50),
            force_poll: false,
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
        /// The position just after it.
        end: Cursor,
    },
    /// A line over `max_line`, skipped whole.
    TooLong {
        /// Its length in bytes, without the `\n`.
        len: u64,
        /// The position just after it.
        end: Cursor,
    },
}

impl Record<'_> {
    /// The position just after this record.
    pub fn end(&self) -> Cursor {
        match self {
            Record::Line { end, .. } | Record::TooLong { end, .. } => *end,
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
}

/// A file we hold open and read from.
struct Tracked {
    file: File,
    dev: u64,
    ino: u64,
    /// Birth time in nanoseconds, 0 when unknown (see [`Cursor`]).
    birth: u64,
    /// Bytes read so far (the next read starts here).
    read_to: u64,
    /// The byte at `read_to - 1`, to notice a truncate-then-regrow that went past `read_to`.
    last_byte: Option<u8>,
    /// Fingerprint of the first `min(256, read_to)` bytes (can cover more, after a resume).
    fp: Fingerprint,
    wd: Option<i32>,
    /// When a read last returned data: a copytruncate copy must be younger than this.
    last_data: Option<std::time::SystemTime>,
}

/// The identity and size of whatever is at the path right now.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PathStat {
    dev: u64,
    ino: u64,
    size: u64,
}

const DIR_MASK: u32 = libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;
const ANCESTOR_MASK: u32 = libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;
const FILE_MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVE_SELF
    | libc::IN_DELETE_SELF;

/// The inotify side: a watch on the directory (or, while it does not exist, on its nearest
/// existing ancestor) and one on the inode we are reading.
struct Watch {
    ino: Inotify,
    dir_wd: Option<i32>,
    ancestor_wd: Option<i32>,
}

/// Follows one path and yields its complete lines, losing none across rotation.
///
/// Build it with [`Follower::open`], then loop: [`Follower::read_available`] (never blocks)
/// and [`Follower::wait`] (blocks on inotify until something may have changed).
///
/// How the hard cases are handled:
/// - the file we read is always held open, so after a rename (or unlink) we keep reading it to
///   its end; we move on to the file now at the path only once that file has content (the
///   writer has moved over), after a last read of the old one, whose unterminated last line, if
///   any, is then delivered as a line of its own;
/// - in-place truncation is noticed by the size going below what we read, by the byte before
///   our offset changing, or by the fingerprint of the first bytes changing; reading restarts at 0;
/// - a file is identified by device, inode and fingerprint, so a re-used inode is a new file;
/// - files seen at the path after ours are held open in order, so a second rotation before the
///   writer moved over loses nothing; rotations we missed (while down, or two between two
///   reads) are found by logrotate's numbering (`NAME.K-1` ... `NAME.1` after `NAME.K`);
/// - after copytruncate, lines we had not read yet are read from the copy (a file named like
///   ours, written after our last read, with our first bytes).
///
/// Limits, by nature of the inputs: copytruncate loses what the writer wrote between the copy
/// and the truncate (logrotate documents this); a truncate-and-regrow past our offset that
/// keeps the first 256 bytes and the byte before our offset is indistinguishable from growth;
/// rotated files moved to another directory (`olddir`) or compressed are not read after a
/// restart; lines a writer appends to a file after we moved on from it (the writer had already
/// written to a newer one) are not read.
pub struct Follower {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    opts: Options,
    cur: Option<Tracked>,
    /// Files that came after `cur`, oldest first: every file seen at the path since `cur` left
    /// it, and rotations we missed (`NAME.1` after `NAME.2`). Held open, so they can be renamed
    /// or deleted under us and still be read.
    next: VecDeque<Tracked>,
    lines: LineBuf,
    /// Files named like ours that existed when the current content began (at open, rotation or
    /// truncation): none of them can be a copy of content written since.
    pre_existing: Vec<(u64, u64)>,
    watch: Option<Watch>,
    stats: Stats,
    /// Files we finished reading (moved on from), most recent last, at most 64.
    done: Vec<(u64, u64, u64, Fingerprint)>,
    /// `read_available` stopped before it was done: the next `wait` returns at once.
    more: bool,
    len_at_open: u64,
    last: Cursor,
}

impl Follower {
    /// Opens (the path need not exist yet, nor its directory). Never blocks.
    pub fn open(path: impl AsRef<Path>, start: Start, options: Options) -> Result<Follower, Error> {
        let path = path.as_ref();
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
        let watch = if options.force_poll {
            None
        } else {
            Inotify::new().ok().map(|ino| Watch {
                ino,
                dir_wd: None,
                ancestor_wd: None,
            })
        };
        let mut f = Follower {
            path,
            dir,
            name,
            lines: LineBuf::new(options.max_line),
            pre_existing: Vec::new(),
            opts: options,
            cur: None,
            next: VecDeque::new(),
            watch,
            stats: Stats::default(),
            more: false,
            done: Vec::new(),
            len_at_open: 0,
            last: Cursor::NONE,
        };
        // Watch before looking, so that a file created in between still wakes us.
        f.ensure_dir_watch();
        match start {
            Start::Beginning => {
                if let Some(t) = f.open_path()? {
                    f.len_at_open = file_size(&t.file, &f.path)?;
                    f.install(t, 0, false)?;
                }
            }
            Start::End => {
                if let Some(t) = f.open_path()? {
                    let size = file_size(&t.file, &f.path)?;
                    f.len_at_open = size;
                    let (offset, discard) = end_position(&t.file, size, f.opts.max_line)
                        .map_err(|e| Error::io("read", &f.path, e))?;
                    f.install(t, offset, discard)?;
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
            let at_path = self.stat_path()?;
            let Some(cur) = &self.cur else {
                match self.open_path()? {
                    Some(t) => {
                        self.install(t, 0, false)?;
                        continue;
                    }
                    None => {
                        self.more = false;
                        break;
                    }
                }
            };
            let cur_id = (cur.dev, cur.ino);
            if at_path.is_some_and(|s| (s.dev, s.ino) == cur_id) {
                self.more = false;
                break;
            }
            // Our file is no longer at the path: it was renamed or deleted. Collect the files
            // that came after it, and move on only once one of them has content: until then the
            // writer may still append to ours (logrotate `create` before the SIGUSR2).
            self.refresh_successors(at_path)?;
            if self
                .next
                .iter()
                .any(|t| file_size(&t.file, &self.path).is_ok_and(|s| s > 0))
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
        let deadline = timeout.map(|t| Instant::now() + t);
        if std::mem::take(&mut self.more) {
            return Ok(());
        }
        if self.watch.is_none() {
            return self.poll_wait(deadline);
        }
        if self.ensure_dir_watch() {
            // The directory just appeared: the file may already be in it.
            return Ok(());
        }
        loop {
            let Some(w) = self.watch.as_mut() else {
                return self.poll_wait(deadline);
            };
            if !w
                .ino
                .poll(deadline)
                .map_err(|e| Error::io("poll inotify for", &self.path, e))?
            {
                return Ok(());
            }
            let file_wds: Vec<i32> = self
                .cur
                .iter()
                .chain(self.next.iter())
                .filter_map(|t| t.wd)
                .collect();
            let (dir_wd, ancestor_wd) = (w.dir_wd, w.ancestor_wd);
            let name = self.name.as_bytes();
            let (mut relevant, mut dir_lost, mut ancestor_changed) = (false, false, false);
            w.ino
                .drain(&mut |ev| {
                    if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                        // Events were dropped: we cannot tell what changed, so look.
                        relevant = true;
                    } else if file_wds.contains(&ev.wd) {
                        relevant = true;
                    } else if Some(ev.wd) == dir_wd && dir_wd.is_some() {
                        if ev.mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF)
                            != 0
                        {
                            dir_lost = true;
                        } else if ev.name.as_bytes() == name {
                            relevant = true;
                        }
                    } else if Some(ev.wd) == ancestor_wd && ancestor_wd.is_some() {
                        ancestor_changed = true;
                    }
                })
                .map_err(|e| Error::io("read inotify for", &self.path, e))?;
            if dir_lost {
                if let Some(wd) = w.dir_wd.take() {
                    w.ino.rm_watch(wd);
                }
                relevant = true;
            }
            if (dir_lost || ancestor_changed) && self.ensure_dir_watch() {
                relevant = true;
            }
            if relevant {
                return Ok(());
            }
        }
    }

    /// Position just after the last record delivered.
    ///
    /// One exception: while the current file is deleted and a newer file is already known, this
    /// names the start of the newer file. A restart cannot reach a deleted file's rest anyway,
    /// and the newer file may have been renamed by then; a cursor into it can still find it.
    pub fn cursor(&self) -> Cursor {
        let linked = |t: &Tracked| t.file.metadata().is_ok_and(|m| m.nlink() > 0);
        // Successors are all still empty (else we would have moved on); deleted ones never
        // matter again.
        if let (Some(cur), Some(next)) = (&self.cur, self.next.iter().find(|t| linked(t))) {
            if !linked(cur) {
                return Cursor {
                    dev: next.dev,
                    ino: next.ino,
                    birth: next.birth,
                    offset: 0,
                    fp: Fingerprint::EMPTY,
                };
            }
        }
        match &self.cur {
            Some(t) => Cursor {
                dev: t.dev,
                ino: t.ino,
                birth: t.birth,
                offset: self.lines.consumed(),
                fp: t.fp,
            },
            None => self.last,
        }
    }

    /// File length at open time for the file that was opened first (0 if it did not exist);
    /// lets a caller that started at `Beginning` tell pre-existing content from new content.
    pub fn len_at_open(&self) -> u64 {
        self.len_at_open
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this follower is driven by inotify (false: stat polling).
    pub fn uses_inotify(&self) -> bool {
        self.watch.is_some()
    }

    // ---- reading ----

    /// Reads the current file from `read_to` to its end, delivering complete lines.
    fn pump(&mut self, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        let stats = &mut self.stats;
        loop {
            let spare = self.lines.spare();
            let n = match pread(&cur.file, spare, cur.read_to) {
                Ok(n) => n,
                Err(e) => return Err(Error::io("read", &self.path, e)),
            };
            if n == 0 {
                return Ok(());
            }
            let chunk = &spare[..n];
            let fp_len = u64::from(cur.fp.len);
            if fp_len < FINGERPRINT_MAX as u64
                && cur.read_to <= fp_len
                && fp_len < cur.read_to + n as u64
            {
                cur.fp.extend(&chunk[(fp_len - cur.read_to) as usize..]);
            }
            cur.last_byte = Some(chunk[n - 1]);
            cur.last_data = Some(std::time::SystemTime::now());
            cur.read_to += n as u64;
            stats.bytes += n as u64;
            let (id, fp) = ((cur.dev, cur.ino, cur.birth), cur.fp);
            self.lines
                .filled(n, &mut |p| deliver(p, id, fp, stats, emit));
        }
    }

    /// Whether the current file was truncated (or truncated and regrown) under us.
    fn truncated(&mut self) -> Result<bool, Error> {
        let Some(cur) = &self.cur else {
            return Ok(false);
        };
        let err = |e| Error::io("stat", &self.path, e);
        let size = file_size(&cur.file, &self.path)?;
        if size < cur.read_to {
            return Ok(true);
        }
        if let Some(b) = cur.last_byte {
            let mut one = [0u8];
            if pread(&cur.file, &mut one, cur.read_to - 1).map_err(err)? != 1 || one[0] != b {
                return Ok(true);
            }
        }
        if cur.fp.len > 0 {
            let mut head = [0u8; FINGERPRINT_MAX];
            let want = cur.fp.len as usize;
            let got = pread_full(&cur.file, &mut head[..want], 0).map_err(err)?;
            if got != want || Fingerprint::of(&head[..want]) != cur.fp {
                return Ok(true);
            }
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
        self.stats.truncations += 1;
        self.pre_existing = self.sibling_ids();
        Ok(())
    }

    /// Device and inode of every regular file next to ours whose name starts with ours.
    fn sibling_ids(&self) -> Vec<(u64, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().as_bytes().starts_with(self.name.as_bytes()))
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| (m.dev(), m.ino()))
            .collect()
    }

    /// The copy logrotate's copytruncate made of the current file just before truncating it:
    /// a file next to ours (named like ours), longer than what we read, that starts with the
    /// same bytes, has the same byte just before our offset, and was written after our last
    /// read. The newest such file wins.
    fn find_copy(&self) -> Option<File> {
        let cur = self.cur.as_ref()?;
        let last_byte = cur.last_byte?;
        let not_before = cur.last_data? - Duration::from_secs(1);
        let mut best: Option<(std::time::SystemTime, File)> = None;
        for (entry, m) in self.rotation_candidates()? {
            let Ok(mtime) = m.modified() else { continue };
            if !m.is_file()
                || (m.dev(), m.ino()) == (cur.dev, cur.ino)
                || self.pre_existing.contains(&(m.dev(), m.ino()))
                || m.size() <= cur.read_to
                || mtime < not_before
                || best.as_ref().is_some_and(|(t, _)| *t >= mtime)
            {
                continue;
            }
            let Ok(Some(t)) = open_tracked(&entry.path()) else {
                continue;
            };
            let mut one = [0u8];
            if matches_fingerprint(&t.file, cur.fp)
                && pread(&t.file, &mut one, cur.read_to - 1).is_ok_and(|n| n == 1)
                && one[0] == last_byte
            {
                best = Some((mtime, t.file));
            }
        }
        best.map(|(_, f)| f)
    }

    /// The current file will not grow any more: deliver its unterminated tail as a line.
    fn finish_partial(&mut self, emit: &mut dyn FnMut(Record<'_>)) {
        let Some(cur) = &self.cur else { return };
        let (id, fp) = ((cur.dev, cur.ino, cur.birth), cur.fp);
        let stats = &mut self.stats;
        self.lines.finish(&mut |p| deliver(p, id, fp, stats, emit));
    }

    /// Leaves the current file for `next` (read from 0) after a last read of the current one.
    fn move_on(&mut self, next: Tracked, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
        self.pump(emit)?;
        self.finish_partial(emit);
        self.stats.rotations += 1;
        if let Some(cur) = &self.cur {
            // Never read a finished file again, whatever name it has by now. A deleted one
            // cannot be met again (its inode number can: by a new file, once we let go).
            if cur.fp.len > 0 && cur.file.metadata().is_ok_and(|m| m.nlink() > 0) {
                if self.done.len() >= 64 {
                    self.done.remove(0);
                }
                self.done.push((cur.dev, cur.ino, cur.birth, cur.fp));
            }
        }
        self.install(next, 0, false)
    }

    // ---- files ----

    fn open_path(&self) -> Result<Option<Tracked>, Error> {
        open_tracked(&self.path)
    }

    fn stat_path(&self) -> Result<Option<PathStat>, Error> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_file() => Ok(Some(PathStat {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
            })),
            // Something that is not a file at the path is treated as "no file yet".
            Ok(_) => Ok(None),
            Err(e) if gone(&e) => Ok(None),
            Err(e) => Err(Error::io("stat", &self.path, e)),
        }
    }

    /// Makes `t` the current file, positioned at `offset`.
    fn install(&mut self, mut t: Tracked, offset: u64, discard: bool) -> Result<(), Error> {
        if let Some(old) = self.cur.take() {
            self.last = Cursor {
                dev: old.dev,
                ino: old.ino,
                birth: old.birth,
                offset: self.lines.consumed(),
                fp: old.fp,
            };
            if let (Some(w), Some(wd)) = (&self.watch, old.wd) {
                w.ino.rm_watch(wd);
            }
        }
        t.read_to = offset;
        let err = |e| Error::io("read", &self.path, e);
        if offset > 0 {
            let mut one = [0u8];
            t.last_byte =
                (pread(&t.file, &mut one, offset - 1).map_err(err)? == 1).then_some(one[0]);
            // The content up to `offset` is as of now, for `find_copy`.
            t.last_data = Some(std::time::SystemTime::now());
        }
        if t.fp.len == 0 && offset > 0 {
            let mut head = [0u8; FINGERPRINT_MAX];
            let want = (offset as usize).min(FINGERPRINT_MAX);
            let got = pread_full(&t.file, &mut head[..want], 0).map_err(err)?;
            t.fp = Fingerprint::of(&head[..got]);
        }
        self.lines.reset(offset);
        self.pre_existing = self.sibling_ids();
        // Resuming just after a byte that is not a line end (a cursor taken after an
        // unterminated line was flushed, or a file that changed): the rest of that line is a
        // fragment we must not deliver as if it were a line.
        if discard || (offset > 0 && t.last_byte != Some(b'\n')) {
            self.lines.discard_rest();
        }
        if self.watch.is_some() && t.wd.is_none() {
            t.wd = self.watch_file(&t);
            if t.wd.is_none() {
                // Out of inotify watches (or no /proc): polling still delivers everything.
                self.watch = None;
            }
        }
        self.cur = Some(t);
        Ok(())
    }

    /// Positions at a saved cursor: the same file if it is still at the path, else the rotated
    /// file with that identity next to it (read to its end first), else the path from 0.
    fn resume(&mut self, c: Cursor) -> Result<(), Error> {
        let at_path = self.open_path()?;
        if let Some(t) = &at_path {
            self.len_at_open = file_size(&t.file, &self.path)?;
        }
        if !c.names_a_file() {
            if let Some(t) = at_path {
                self.install(t, 0, false)?;
            }
            return Ok(());
        }
        if let Some(mut t) = at_path {
            if c.same_identity(t.dev, t.ino, t.birth) {
                let size = file_size(&t.file, &self.path)?;
                if matches_fingerprint(&t.file, c.fp) {
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
            if let Some(mut old) = self.find_sibling(c) {
                self.len_at_open = file_size(&old.file, &self.path)?;
                old.fp = c.fp;
                return self.install(old, c.offset, false);
            }
            return self.install(t, 0, false);
        }
        if let Some(mut old) = self.find_sibling(c) {
            self.len_at_open = file_size(&old.file, &self.path)?;
            old.fp = c.fp;
            return self.install(old, c.offset, false);
        }
        Ok(())
    }

    /// The entries of our directory that may be rotations of our file (`NAME.1`,
    /// `NAME-20260331`), with their metadata. Only those: an inode number alone can have been
    /// re-used by any file, and a short file's fingerprint is weak.
    fn rotation_candidates(&self) -> Option<Vec<(std::fs::DirEntry, std::fs::Metadata)>> {
        let entries = std::fs::read_dir(&self.dir).ok()?.flatten();
        Some(
            entries
                .filter(|e| e.file_name().as_bytes().starts_with(self.name.as_bytes()))
                .filter_map(|e| e.metadata().ok().map(|m| (e, m)))
                .collect(),
        )
    }

    /// The file next to the path with the cursor's identity and fingerprint, long enough.
    fn find_sibling(&self, c: Cursor) -> Option<Tracked> {
        for (entry, m) in self.rotation_candidates()? {
            if m.dev() != c.dev || m.ino() != c.ino || !m.is_file() {
                continue;
            }
            let Ok(Some(t)) = open_tracked(&entry.path()) else {
                continue;
            };
            if c.same_identity(t.dev, t.ino, t.birth)
                && matches_fingerprint(&t.file, c.fp)
                && file_size(&t.file, &self.path).is_ok_and(|s| s >= c.offset)
            {
                return Some(t);
            }
        }
        None
    }

    /// Brings `next` up to date: adds the file now at the path if it is new to us, and the
    /// rotations newer than ours that we never saw (we fell behind by more than one rotation:
    /// logrotate numbering puts them at `NAME.K-1` ... `NAME.1` when ours is `NAME.K`), in
    /// order: numbered rotations oldest first, then the files we saw, in the order we saw them.
    fn refresh_successors(&mut self, at_path: Option<PathStat>) -> Result<(), Error> {
        let Some(cur) = &self.cur else { return Ok(()) };
        let cur_id = (cur.dev, cur.ino);
        let known = |next: &VecDeque<Tracked>, id: (u64, u64)| {
            id == cur_id || next.iter().any(|t| (t.dev, t.ino) == id)
        };
        if let Some(s) = at_path {
            if !known(&self.next, (s.dev, s.ino)) {
                if let Some(mut t) = self.open_path()? {
                    if !known(&self.next, (t.dev, t.ino)) && !self.is_done(&t) {
                        t.wd = self.watch_file(&t);
                        self.next.push_back(t);
                    }
                }
            }
        }
        if self.next.len() > 8 {
            // Bound the descriptors held: a deleted, still empty successor can be let go.
            let watch = &self.watch;
            self.next.retain(|t| {
                let keep = t
                    .file
                    .metadata()
                    .is_ok_and(|m| m.nlink() > 0 || m.size() > 0);
                if let (false, Some(w), Some(wd)) = (keep, watch, t.wd) {
                    w.ino.rm_watch(wd);
                }
                keep
            });
        }
        let missed = self.newer_rotations();
        if missed.is_empty() {
            return Ok(());
        }
        let mut ordered = VecDeque::with_capacity(missed.len() + self.next.len());
        for path in missed {
            let Ok(Some(t)) = open_tracked(&path) else {
                continue;
            };
            let id = (t.dev, t.ino);
            if id == cur_id || self.is_done(&t) {
                continue;
            }
            match self.next.iter().position(|n| (n.dev, n.ino) == id) {
                Some(i) => ordered.push_back(self.next.remove(i).expect("index from position")),
                None => {
                    let mut t = t;
                    t.wd = self.watch_file(&t);
                    ordered.push_back(t);
                }
            }
        }
        ordered.extend(self.next.drain(..));
        self.next = ordered;
        Ok(())
    }

    /// Whether `t` is a file we already finished: same identity and same first bytes (an
    /// inode number alone may have been re-used after the file was deleted).
    fn is_done(&self, t: &Tracked) -> bool {
        self.done.iter().any(|&(dev, ino, birth, fp)| {
            (dev, ino) == (t.dev, t.ino)
                && (birth == 0 || t.birth == 0 || birth == t.birth)
                && matches_fingerprint(&t.file, fp)
        })
    }

    /// Paths of the numbered rotations newer than the current file, oldest first.
    fn newer_rotations(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Some(cur) = &self.cur else { return out };
        let Ok(cur_meta) = cur.file.metadata() else {
            return out;
        };
        // A deleted file has no name, so no place in a numbering: skip the directory scan.
        if cur_meta.nlink() == 0 {
            return out;
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        let mut prefix = self.name.as_bytes().to_vec();
        prefix.push(b'.');
        let mut k = None;
        for entry in entries.flatten() {
            let fname = entry.file_name();
            let Some(num) = fname.as_bytes().strip_prefix(prefix.as_slice()) else {
                continue;
            };
            let Some(num) = std::str::from_utf8(num)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if entry
                .metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (cur.dev, cur.ino))
            {
                k = Some(num);
                break;
            }
        }
        let Some(k) = k else { return out };
        let cur_mtime = (cur_meta.mtime(), cur_meta.mtime_nsec());
        for j in (1..k).rev() {
            let mut p = prefix.clone();
            p.extend_from_slice(j.to_string().as_bytes());
            let path = self.dir.join(std::ffi::OsStr::from_bytes(&p));
            // Only files written after ours: a naming scheme that counts the other way must
            // never make us read an old file again.
            // Files already queued keep their place in the numbering, even while empty.
            if std::fs::metadata(&path).is_ok_and(|m| {
                let queued = self
                    .next
                    .iter()
                    .any(|t| (t.dev, t.ino) == (m.dev(), m.ino()));
                m.is_file()
                    && (queued || (m.size() > 0 && (m.mtime(), m.mtime_nsec()) >= cur_mtime))
            }) {
                out.push(path);
            }
        }
        out
    }

    /// An inotify watch on the inode `t` holds, if inotify is in use.
    fn watch_file(&self, t: &Tracked) -> Option<i32> {
        let w = self.watch.as_ref()?;
        // Watch the inode we hold, not the name: /proc/self/fd/N resolves to exactly it.
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", t.file.as_raw_fd()));
        w.ino.add_watch(&fd_path, FILE_MASK).ok()
    }

    // ---- waking ----

    /// Watches the directory, or while it is missing its nearest existing ancestor. Returns
    /// true when the directory watch was just established (the caller should look).
    fn ensure_dir_watch(&mut self) -> bool {
        let Some(w) = self.watch.as_mut() else {
            return false;
        };
        if w.dir_wd.is_some() {
            return false;
        }
        for _ in 0..2 {
            match w.ino.add_watch(&self.dir, DIR_MASK) {
                Ok(wd) => {
                    w.dir_wd = Some(wd);
                    if let Some(a) = w.ancestor_wd.take() {
                        if a != wd {
                            w.ino.rm_watch(a);
                        }
                    }
                    return true;
                }
                Err(e) if gone(&e) => {}
                Err(_) => {
                    // Out of watches or similar: fall back to polling, which still works.
                    self.watch = None;
                    return false;
                }
            }
            let mut p = self.dir.parent();
            while let Some(a) = p {
                match w.ino.add_watch(a, ANCESTOR_MASK) {
                    Ok(wd) => {
                        if let Some(old) = w.ancestor_wd.replace(wd) {
                            if old != wd {
                                w.ino.rm_watch(old);
                            }
                        }
                        break;
                    }
                    Err(e) if gone(&e) => p = a.parent(),
                    Err(_) => {
                        self.watch = None;
                        return false;
                    }
                }
            }
            // The directory may have been created between the two attempts: try once more.
            if !self.dir.is_dir() {
                break;
            }
        }
        false
    }

    /// Whether `read_available` would find something to do (for stat polling).
    fn poll_pending(&self) -> bool {
        if self
            .next
            .iter()
            .any(|t| file_size(&t.file, &self.path).is_ok_and(|s| s > 0))
        {
            return true;
        }
        let at_path = self.stat_path().ok().flatten();
        match &self.cur {
            None => at_path.is_some(),
            Some(t) => {
                let size = file_size(&t.file, &self.path).unwrap_or(t.read_to);
                if size != t.read_to {
                    return true;
                }
                match at_path {
                    Some(s) if (s.dev, s.ino) != (t.dev, t.ino) => s.size > 0,
                    _ => false,
                }
            }
        }
    }

    fn poll_wait(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        loop {
            if self.poll_pending() {
                return Ok(());
            }
            let mut nap = self.opts.poll_interval;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                nap = nap.min(left);
            }
            std::thread::sleep(nap);
        }
    }
}

fn deliver(
    p: Piece<'_>,
    (dev, ino, birth): (u64, u64, u64),
    fp: Fingerprint,
    stats: &mut Stats,
    emit: &mut dyn FnMut(Record<'_>),
) {
    let cursor = |offset| Cursor {
        dev,
        ino,
        birth,
        offset,
        fp,
    };
    match p {
        Piece::Line { bytes, end } => {
            stats.lines += 1;
            emit(Record::Line {
                bytes,
                end: cursor(end),
            });
        }
        Piece::TooLong { len, end } => {
            stats.too_long += 1;
            emit(Record::TooLong {
                len,
                end: cursor(end),
            });
        }
    }
}

fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

fn open_tracked(path: &Path) -> Result<Option<Tracked>, Error> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let m = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !m.is_file() {
        return Err(Error::new(
            ErrorKind::NotRegularFile,
            path.display().to_string(),
        ));
    }
    let birth = birth_time(&file);
    Ok(Some(Tracked {
        file,
        dev: m.dev(),
        ino: m.ino(),
        birth,
        read_to: 0,
        last_byte: None,
        fp: Fingerprint::EMPTY,
        wd: None,
        last_data: None,
    }))
}

fn file_size(file: &File, path: &Path) -> Result<u64, Error> {
    file.metadata()
        .map(|m| m.size())
        .map_err(|e| Error::io("stat", path, e))
}

/// The file's birth time in nanoseconds (statx `btime`), 0 where the filesystem has none.
fn birth_time(file: &File) -> u64 {
    // SAFETY: statx on a descriptor we own with AT_EMPTY_PATH and an empty C string, writing
    // into a zeroed struct we own.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BTIME,
            &mut buf,
        )
    };
    if rc != 0 || buf.stx_mask & libc::STATX_BTIME == 0 {
        return 0;
    }
    let seconds = u64::try_from(buf.stx_btime.tv_sec).unwrap_or(0);
    seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(buf.stx_btime.tv_nsec))
}

fn matches_fingerprint(file: &File, fp: Fingerprint) -> bool {
    let mut head = [0u8; FINGERPRINT_MAX];
    let want = fp.len as usize;
    matches!(pread_full(file, &mut head[..want], 0), Ok(n) if n == want)
        && Fingerprint::of(&head[..want]) == fp
}

/// One `pread`, retried on EINTR; EAGAIN counts as end of data.
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        // SAFETY: reading into a buffer we own, bounded by its length.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(err),
        }
    }
}

fn pread_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = pread(file, &mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Where `Start::End` begins: after the last `\n`, so that a line being written when we start
/// is delivered whole once finished. If that line is already over `max_line` it is dropped
/// silently (`true`): we never saw its head.
fn end_position(file: &File, size: u64, max_line: usize) -> io::Result<(u64, bool)> {
    if size == 0 {
        return Ok((0, false));
    }
    let window = size.min(max_line as u64 + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut hi = size;
    while hi > size - window {
        let lo = hi.saturating_sub(buf.len() as u64).max(size - window);
        let len = (hi - lo) as usize;
        let got = pread_full(file, &mut buf[..len], lo)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..got]) {
            return Ok((lo + i as u64 + 1, false));
        }
        hi = lo;
    }
    if window == size {
        Ok((0, false))
    } else {
        Ok((size, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn end_position_keeps_a_partial_last_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"old\nhalf").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(end_position(&f, 8, 100).unwrap(), (4, false));
        assert_eq!(end_position(&f, 4, 100).unwrap(), (4, false));
        assert_eq!(end_position(&f, 3, 100).unwrap(), (0, false));
        assert_eq!(end_position(&f, 8, 2).unwrap(), (8, true));
    }

    #[test]
    fn start_end_skips_existing_lines_and_completes_the_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.log");
        std::fs::write(&p, b"old\nha").unwrap();
        let mut f = Follower::open(&p, Start::End, Options::default()).unwrap();
        assert_eq!(f.len_at_open(), 6);
        assert!(collect(&mut f).is_empty());
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        io::Write::write_all(&mut w, b"lf\nnew\n").unwrap();
        assert_eq!(collect(&mut f), ["half", "new"]);
        assert_eq!(f.cursor().offset(), 13);
    }
}
