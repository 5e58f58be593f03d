//! A log's past: every file it was rotated to (numbered, `dateext`, `dateformat`, compressed
//! or not), oldest first, then the live file up to where it ends now; read in a time window
//! without reading what lies before it, or backwards for the last lines.
//!
//! Files are ordered by modification time (then birth time, then inode number): the time of a
//! file's last line. Birth time alone would put `log.2.gz` after `log.1` (gzip creates the
//! compressed file at the rotation after), while logrotate gives a compressed file the
//! modification time of the file it compressed. The live file is last whatever its times.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::beneath::{open_beneath, open_dir, Escape, Open};
use crate::cursor::Cursor;
use crate::decompress::{decode, Compression, Flow, CHUNK};
use crate::error::{Error, ErrorKind};
use crate::file::{end_position, gone, pread_full};
use crate::follower::{Options, Start};
use crate::identity::{birth_nanos, Born, FileId, Fingerprint, FINGERPRINT_MAX};
use crate::lines::{LineBuf, Piece};

/// A time window over lines, in the unit of the caller's `time_of` (seconds, nanoseconds, ...);
/// both ends included, either open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The first time wanted (`--since`).
    pub since: Option<i64>,
    /// The last time wanted (`--until`): reading stops at the first line stamped after it.
    pub until: Option<i64>,
}

/// One line of history, handed to the caller's callback.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLine<'a> {
    /// The line without its `\n`, raw.
    pub bytes: &'a [u8],
    /// The line's own time as `time_of` read it; `None` for a line without one.
    pub time: Option<i64>,
    /// From a rotated file (`true`) or from the live file (`false`).
    pub rotated: bool,
}

/// One file of a log's history, as listed by [`History::files`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryFile {
    /// Its name in the log's directory.
    pub name: OsString,
    /// What its first bytes say it holds.
    pub compression: Compression,
    /// Whether it is a rotated file (`false`: the live file, always last).
    pub rotated: bool,
}

/// What reading cost, since [`History::open`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Bytes read from files (compressed bytes for a compressed file).
    pub bytes_read: u64,
    /// Bytes that came out of decompressors.
    pub bytes_decompressed: u64,
    /// Files passed over whole because their lines are all before `since`.
    pub files_skipped: u64,
    /// Lines over `max_line`, skipped.
    pub too_long: u64,
}

/// A file of the history, listed at open and opened when reached.
struct Entry {
    name: OsString,
    dev: u64,
    ino: u64,
    compression: Compression,
    /// The first line's time, once read: `Some(None)` for a file without a timed line.
    head: Option<Option<i64>>,
    /// Found gone (and said so once).
    gone: bool,
}

/// The live file, held open from [`History::open`] on.
struct Live {
    file: File,
    name: OsString,
    compression: Compression,
    /// Where history ends in it: just after its last complete line at open.
    end: u64,
    cursor: Cursor,
    head: Option<Option<i64>>,
}

/// A log's history: its rotated files, oldest first, then the live file as it was at open.
///
/// Build it with [`History::open`] on the live path (which need not exist), then either
/// [`History::read`] a [`Window`] forwards or take the [`History::last`] lines; hand
/// [`History::live_end`] to the [`crate::Follower`] (or [`crate::FollowSet`]) that goes on
/// live, which then starts exactly after the last line history delivered.
///
/// - Every file is opened beneath the log's directory with no symbolic link followed
///   (`O_NOFOLLOW`, `O_NONBLOCK`), and must be a regular file.
/// - Compressed files (gzip, zstd, xz, by magic number) are read through a decoder; a
///   corrupt one yields the lines decoded before the damage and one notice.
/// - A rotated file that is gone when reached (deleted, or renamed where it cannot be
///   found) is skipped with one notice; a file renamed meanwhile is found by its inode.
/// - Lines are assumed to be in time order within and across files (as appending writers
///   make them). A line without a time (`time_of` gives `None`) stands at the time of the
///   timed line before it (before the first timed line: at the first one's), and is never
///   dropped for lacking one.
/// - Memory is bounded by one read buffer per open file, plus the lines asked for by
///   [`History::last`].
///
/// ```
/// use shield_tail::{Follower, History, Options, Window};
///
/// let dir = tempfile::tempdir()?;
/// let log = dir.path().join("audit.jsonl");
/// std::fs::write(dir.path().join("audit.jsonl.1"), "100 rotated\n200 rotated\n")?;
/// std::fs::write(&log, "300 live\ncontinued\n400 live\n")?;
/// // The caller knows how its lines tell their time.
/// let time_of = |line: &[u8]| std::str::from_utf8(line).ok()?.split(' ').next()?.parse().ok();
///
/// let mut history = History::open(&log, &Options::default())?;
/// let mut lines = Vec::new();
/// let window = Window { since: Some(200), until: Some(300) };
/// history.read(window, time_of, |l| {
///     lines.push((String::from_utf8_lossy(l.bytes).into_owned(), l.time, l.rotated));
///     true // false stops
/// })?;
/// assert_eq!(lines, [
///     ("200 rotated".to_string(), Some(200), true),
///     ("300 live".to_string(), Some(300), false),
///     ("continued".to_string(), None, false),
/// ]);
/// for notice in history.take_notices() {
///     eprintln!("shield-watch: audit: {notice}");
/// }
/// // Then live, from just after the last line history could read.
/// let follower = Follower::open(&log, history.live_end(), Options::default())?;
/// # drop(follower);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct History {
    dir_path: PathBuf,
    dir: Option<File>,
    files: Vec<Entry>,
    live: Option<Live>,
    max_line: usize,
    stats: HistoryStats,
    notices: Vec<String>,
}

impl History {
    /// Lists the history of the log at `path`: regular files in its directory whose name starts
    /// with its name, and the live file, opened now so that [`History::live_end`] is the
    /// end as of this moment. `options.max_line` caps the line length (longer lines are
    /// skipped and counted). A missing directory or file is an empty history.
    pub fn open(path: impl AsRef<Path>, options: &Options) -> Result<History, Error> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .ok_or_else(|| Error::new(ErrorKind::NotRegularFile, path.display().to_string()))?
            .to_os_string();
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut h = History {
            dir: None,
            files: Vec::new(),
            live: None,
            max_line: options.max_line.max(1),
            stats: HistoryStats::default(),
            notices: Vec::new(),
            dir_path,
        };
        let dir = match open_dir(&h.dir_path) {
            Ok(d) => d,
            Err(e) if gone(&e) => return Ok(h),
            Err(e) => return Err(Error::io("open", &h.dir_path, e)),
        };
        // The live file first: a rotation after this shows up as a sibling with its inode,
        // which is then left out (its lines up to `end` are read through this descriptor).
        match h.open_checked(&dir, &name) {
            Ok(Some(file)) => h.live = Some(h.snapshot(file, name.clone())?),
            Ok(None) => {}
            Err(note) => h.notices.push(note),
        }
        let live_meta = h.live.as_ref().and_then(|l| l.file.metadata().ok());
        let mut found = Vec::new();
        for (sib, m) in h.siblings(&name) {
            if sib == name {
                continue;
            }
            if let Some(l) = &live_meta {
                // The live file renamed since we opened it, or a file both born and written
                // after it (rotated twice since: its lines are the live follower's). A file
                // compressed later is born later but keeps its old modification time.
                let later = Born::of(&m) > Born::of(l) && mtime(&m) > mtime(l);
                if (m.dev(), m.ino()) == (l.dev(), l.ino()) || later {
                    continue;
                }
            }
            let key = (mtime(&m), birth_nanos(&m).unwrap_or(0), m.ino());
            found.push((key, sib, m));
        }
        found.sort_by_key(|f| f.0);
        for (_, sib, m) in found {
            let compression = match h.open_checked(&dir, &sib) {
                Ok(Some(f)) => Compression::of(&f),
                Ok(None) => continue,
                Err(note) => {
                    h.notices.push(note);
                    continue;
                }
            };
            h.files.push(Entry {
                name: sib,
                dev: m.dev(),
                ino: m.ino(),
                compression,
                head: None,
                gone: false,
            });
        }
        h.dir = Some(dir);
        Ok(h)
    }

    /// The files of the history, oldest first; the live file (if there is one) last.
    pub fn files(&self) -> Vec<HistoryFile> {
        let rotated = self.files.iter().map(|e| HistoryFile {
            name: e.name.clone(),
            compression: e.compression,
            rotated: true,
        });
        let live = self.live.iter().map(|l| HistoryFile {
            name: l.name.clone(),
            compression: l.compression,
            rotated: false,
        });
        rotated.chain(live).collect()
    }

    /// Where the live follower starts so that it delivers exactly the lines after the ones
    /// history reads: a [`Start::Cursor`] just after the live file's last complete line at
    /// [`History::open`] (a line being written then is the follower's), or
    /// [`Start::Beginning`] where there was no live file.
    pub fn live_end(&self) -> Start {
        match &self.live {
            Some(l) => Start::Cursor(l.cursor),
            None => Start::Beginning,
        }
    }

    /// Problems that did not stop the reading (a file gone, corrupt, refused, unreadable),
    /// one string each, not yet taken.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// What reading cost so far.
    pub fn stats(&self) -> HistoryStats {
        self.stats
    }

    /// Hands every line in `window` to `emit`, oldest first, until the live file's end at open
    /// or until `emit` returns false. `time_of` reads a line's time (`None`: it has none).
    ///
    /// With `since`, whole files are passed over when the next file's first line is before it
    /// (or, uncompressed, their own last line is), and in an uncompressed file the first line
    /// is found by binary search on line times; a compressed file is decoded only when its
    /// lines may be in the window. With `until`, reading stops at the first line after it.
    pub fn read(
        &mut self,
        window: Window,
        mut time_of: impl FnMut(&[u8]) -> Option<i64>,
        mut emit: impl FnMut(HistoryLine<'_>) -> bool,
    ) -> Result<(), Error> {
        let n = self.count();
        let mut scan = Scan {
            window,
            prev: None,
            first: None,
            stopped: false,
            rotated: true,
        };
        if window.since.is_some() || window.until.is_some() {
            // Lines before the first timed line stand at its time.
            scan.first = (0..n).find_map(|i| self.head(i, &mut time_of));
        }
        let mut found_start = window.since.is_none();
        for i in 0..n {
            if scan.stopped {
                break;
            }
            scan.rotated = i + 1 < n || self.live.is_none();
            let Some(file) = self.open_index(i) else {
                continue;
            };
            let compression = self.compression(i);
            let limit = self.limit(i, &file);
            let mut from = 0;
            if let (false, Some(since)) = (found_start, window.since) {
                // Every line of this file is at or before the next timed file's first line.
                let next = (i + 1..n).find_map(|j| self.head(j, &mut time_of));
                if next.is_some_and(|t| t < since) {
                    scan.prev = next;
                    self.stats.files_skipped += 1;
                    continue;
                }
                if compression == Compression::Plain {
                    let last = self.last_time(&file, limit, &mut time_of);
                    if last.is_some_and(|t| t < since) {
                        scan.prev = last;
                        self.stats.files_skipped += 1;
                        continue;
                    }
                    let (lo, before) = self.search(&file, limit, since, &mut time_of);
                    from = lo;
                    if before.is_some() {
                        scan.prev = before;
                    }
                }
                found_start = true;
            }
            self.stream(i, &file, compression, from, limit, &mut |line| {
                scan.line(line, &mut time_of, &mut emit)
            })?;
        }
        Ok(())
    }

    /// Hands the last `n` lines for which `keep(line, time)` holds to `emit`, oldest first,
    /// reading the files newest first: an uncompressed file backwards in chunks, a compressed
    /// one decoded whole (keeping only its last `n` kept lines) and only once reached. Memory:
    /// the `n` lines. `emit` may stop early by returning false.
    pub fn last(
        &mut self,
        n: usize,
        mut time_of: impl FnMut(&[u8]) -> Option<i64>,
        mut keep: impl FnMut(&[u8], Option<i64>) -> bool,
        mut emit: impl FnMut(HistoryLine<'_>) -> bool,
    ) -> Result<(), Error> {
        // Newest first: (bytes, time, rotated).
        let mut got: Vec<(Vec<u8>, Option<i64>, bool)> = Vec::new();
        let count = self.count();
        for i in (0..count).rev() {
            if got.len() >= n {
                break;
            }
            let rotated = i + 1 < count || self.live.is_none();
            let Some(file) = self.open_index(i) else {
                continue;
            };
            let compression = self.compression(i);
            let limit = self.limit(i, &file);
            let want = n - got.len();
            if compression == Compression::Plain {
                let mut found = 0;
                let max_line = self.max_line;
                let read = rev_lines(&file, limit, max_line, &mut |line| {
                    let t = time_of(line);
                    if keep(line, t) {
                        got.push((line.to_vec(), t, rotated));
                        found += 1;
                    }
                    found < want
                })
                .map_err(|e| Error::io("read", &self.dir_path.join(self.name(i)), e))?;
                self.stats.bytes_read += read;
            } else {
                let mut ring = std::collections::VecDeque::with_capacity(want.min(4096));
                self.stream(i, &file, compression, 0, limit, &mut |line| {
                    let t = time_of(line);
                    if keep(line, t) {
                        if ring.len() == want {
                            ring.pop_front();
                        }
                        ring.push_back((line.to_vec(), t, rotated));
                    }
                    true
                })?;
                got.extend(ring.into_iter().rev());
            }
        }
        for (bytes, time, rotated) in got.iter().rev() {
            if !emit(HistoryLine {
                bytes,
                time: *time,
                rotated: *rotated,
            }) {
                break;
            }
        }
        Ok(())
    }

    // ---- files ----

    fn count(&self) -> usize {
        self.files.len() + usize::from(self.live.is_some())
    }

    fn name(&self, i: usize) -> &OsStr {
        match self.files.get(i) {
            Some(e) => &e.name,
            None => self.live.as_ref().map_or(OsStr::new(""), |l| &l.name),
        }
    }

    fn compression(&self, i: usize) -> Compression {
        match self.files.get(i) {
            Some(e) => e.compression,
            None => self
                .live
                .as_ref()
                .map_or(Compression::Plain, |l| l.compression),
        }
    }

    /// Where reading file `i` stops: the live file's end at open, a rotated file's end now.
    fn limit(&self, i: usize, file: &File) -> u64 {
        if i == self.files.len() {
            if let Some(l) = &self.live {
                return l.end;
            }
        }
        file.metadata().map_or(0, |m| m.size())
    }

    /// Opens `name` beneath the directory: `Ok(None)` if it is gone, `Err(notice)` if it is
    /// refused (a symbolic link, not a regular file) or unreadable.
    fn open_checked(&self, dir: &File, name: &OsStr) -> Result<Option<File>, String> {
        let path = self.dir_path.join(name);
        let file = match open_beneath(dir, name, Open::ReadNoFollow) {
            Ok(f) => f,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) if Escape::of(&e).is_some() => {
                return Err(format!(
                    "refused {}: a symbolic link, never followed",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        };
        match file.metadata() {
            Ok(m) if m.is_file() => Ok(Some(file)),
            Ok(_) => Err(format!("skipped {}: not a regular file", path.display())),
            Err(e) => Err(format!("cannot stat {}: {e}", path.display())),
        }
    }

    /// The live file's end and the cursor there.
    fn snapshot(&self, file: File, name: OsString) -> Result<Live, Error> {
        let path = self.dir_path.join(&name);
        let m = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
        let compression = Compression::of(&file);
        let (end, _) = end_position(&file, m.size(), self.max_line)
            .map_err(|e| Error::io("read", &path, e))?;
        let mut head = [0u8; FINGERPRINT_MAX];
        let want = (end as usize).min(FINGERPRINT_MAX);
        let got =
            pread_full(&file, &mut head[..want], 0).map_err(|e| Error::io("read", &path, e))?;
        let id = FileId {
            dev: m.dev(),
            ino: m.ino(),
            birth: birth_nanos(&m).unwrap_or(0),
        };
        Ok(Live {
            file,
            name,
            compression,
            end,
            cursor: Cursor::at(id, end, Fingerprint::of(&head[..got])),
            head: None,
        })
    }

    /// Regular files (not followed) in the directory whose name starts with `name`; symbolic
    /// links among them are refused with a notice.
    fn siblings(&mut self, name: &OsStr) -> Vec<(OsString, std::fs::Metadata)> {
        let Ok(entries) = std::fs::read_dir(&self.dir_path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let n = e.file_name();
            if !n.as_bytes().starts_with(name.as_bytes()) {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.file_type().is_symlink() && n != name {
                self.notices.push(format!(
                    "refused {}: a symbolic link, never followed",
                    e.path().display()
                ));
            } else if m.is_file() {
                out.push((n, m));
            }
        }
        out
    }

    /// Opens file `i`: the live file's held descriptor (duplicated), or a rotated file by its
    /// name, or where it was renamed to (found by inode). `None`, with one notice, when it is
    /// gone or cannot be read.
    fn open_index(&mut self, i: usize) -> Option<File> {
        if i == self.files.len() {
            let l = self.live.as_ref()?;
            return match l.file.try_clone() {
                Ok(f) => Some(f),
                Err(e) => {
                    let path = self.dir_path.join(&l.name);
                    self.notices
                        .push(format!("cannot read {}: {e}", path.display()));
                    None
                }
            };
        }
        let dir = self.dir.as_ref()?;
        if self.files[i].gone {
            return None;
        }
        let (name, dev, ino) = {
            let e = &self.files[i];
            (e.name.clone(), e.dev, e.ino)
        };
        let same = |f: &File| f.metadata().is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino));
        match self.open_checked(dir, &name) {
            Ok(Some(f)) if same(&f) => return Some(f),
            Ok(_) => {}
            Err(note) => {
                self.notices.push(note);
                return None;
            }
        }
        // Renamed since the listing (a rotation meanwhile): look for the inode.
        let live_name = self.live.as_ref().map(|l| l.name.clone());
        let prefix = live_name.unwrap_or_else(|| name.clone());
        let moved = std::fs::read_dir(&self.dir_path).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let m = e.metadata().ok()?;
                let n = e.file_name();
                (n.as_bytes().starts_with(prefix.as_bytes())
                    && m.is_file()
                    && (m.dev(), m.ino()) == (dev, ino))
                    .then_some(n)
            })
        });
        if let Some(n) = moved {
            if let Ok(Some(f)) = self.open_checked(dir, &n) {
                if same(&f) {
                    self.files[i].name = n;
                    return Some(f);
                }
            }
        }
        self.notices.push(format!(
            "skipped {}: gone before it was read",
            self.dir_path.join(&name).display()
        ));
        self.files[i].head = Some(None);
        self.files[i].gone = true;
        None
    }

    // ---- time ----

    /// The time of file `i`'s first timed line (cached).
    fn head(&mut self, i: usize, time_of: &mut dyn FnMut(&[u8]) -> Option<i64>) -> Option<i64> {
        let cached = match self.files.get(i) {
            Some(e) => e.head,
            None => self.live.as_ref().and_then(|l| l.head),
        };
        if let Some(h) = cached {
            return h;
        }
        let mut head = None;
        if let Some(file) = self.open_index(i) {
            let compression = self.compression(i);
            let limit = self.limit(i, &file);
            if compression == Compression::Plain {
                // A few KiB settle it, unless the file starts with many untimed lines.
                head = self.probe(&file, 0, limit, time_of).map(|(_, t)| t);
            }
        }
        let rest = if head.is_none() {
            self.open_index(i)
        } else {
            None
        };
        if let Some(file) = rest {
            let compression = self.compression(i);
            let limit = self.limit(i, &file);
            // Errors here are said when the file is read.
            let notices = self.notices.len();
            let _ = self.stream(i, &file, compression, 0, limit, &mut |line| {
                head = time_of(line);
                head.is_none()
            });
            self.notices.truncate(notices);
        }
        match self.files.get_mut(i) {
            Some(e) => e.head = Some(head),
            None => {
                if let Some(l) = &mut self.live {
                    l.head = Some(head);
                }
            }
        }
        head
    }

    /// The time of the last timed line of an uncompressed file before `limit`.
    fn last_time(
        &mut self,
        file: &File,
        limit: u64,
        time_of: &mut dyn FnMut(&[u8]) -> Option<i64>,
    ) -> Option<i64> {
        let mut last = None;
        let read = rev_lines(file, limit, self.max_line, &mut |line| {
            last = time_of(line);
            last.is_none()
        })
        .unwrap_or(0);
        self.stats.bytes_read += read;
        last
    }

    /// Binary search in an uncompressed file for where the lines at or after `since` begin:
    /// returns a line start before which every line is earlier, and the time of the timed
    /// line just before it (if the search saw one). The scan from there does the rest.
    fn search(
        &mut self,
        file: &File,
        limit: u64,
        since: i64,
        time_of: &mut dyn FnMut(&[u8]) -> Option<i64>,
    ) -> (u64, Option<i64>) {
        let (mut lo, mut hi) = (0u64, limit);
        let mut before = None;
        while hi.saturating_sub(lo) > CHUNK as u64 {
            let mid = lo + (hi - lo) / 2;
            match self.probe(file, mid, hi, time_of) {
                Some((end, t)) if t < since => {
                    lo = end;
                    before = Some(t);
                }
                _ => hi = mid,
            }
        }
        (lo, before)
    }

    /// The first timed line starting in `[at, hi)` after the line `at` falls in (at 0: the
    /// first line): its end (after the `\n`) and time. Reads 4 KiB, then more while no
    /// complete timed line is in view, up to two maximal lines.
    fn probe(
        &mut self,
        file: &File,
        at: u64,
        hi: u64,
        time_of: &mut dyn FnMut(&[u8]) -> Option<i64>,
    ) -> Option<(u64, i64)> {
        // From the byte before `at`: a `\n` there means `at` starts a line.
        let from = at.saturating_sub(1);
        let most = 2 * (self.max_line + 1);
        let mut size = 4096.min(most);
        let mut buf = vec![0u8; size];
        loop {
            let got = pread_full(file, &mut buf, from).ok()?;
            self.stats.bytes_read += got as u64;
            let data = &buf[..got];
            let mut start = if at == 0 {
                0
            } else {
                memchr::memchr(b'\n', data).map_or(got, |i| i + 1)
            };
            while from + (start as u64) < hi {
                let Some(len) = memchr::memchr(b'\n', &data[start..]) else {
                    break;
                };
                if let Some(t) = time_of(&data[start..start + len]) {
                    return Some((from + (start + len + 1) as u64, t));
                }
                start += len + 1;
            }
            // Nothing timed in view: look further, unless the view already reached `hi`, the
            // end of the file, or its cap.
            if from + (start as u64) >= hi || got < size || size >= most {
                return None;
            }
            size = (size * 4).min(most);
            buf.resize(size, 0);
        }
    }

    // ---- reading ----

    /// Hands the complete lines of file `i` between `from` and `limit` to `line` (a rotated
    /// file's unterminated last line too), until it returns false. Damage in a compressed
    /// file is a notice, not an error.
    fn stream(
        &mut self,
        i: usize,
        file: &File,
        compression: Compression,
        from: u64,
        limit: u64,
        line: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Error> {
        let path = self.dir_path.join(self.name(i));
        let live = i == self.files.len();
        let mut lines = LineBuf::new(self.max_line);
        lines.reset(from);
        let stopped = std::cell::Cell::new(false);
        let too_long = std::cell::Cell::new(0u64);
        let mut on_piece = |p: Piece<'_>| {
            match p {
                Piece::Line { bytes, .. } if !stopped.get() => stopped.set(!line(bytes)),
                Piece::Line { .. } => {}
                Piece::TooLong { .. } => too_long.set(too_long.get() + 1),
            }
            if stopped.get() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        };
        match compression {
            Compression::Plain => {
                let mut at = from;
                while at < limit && !stopped.get() {
                    let spare = lines.spare();
                    let want = spare.len().min((limit - at) as usize);
                    let n = crate::file::pread(file, &mut spare[..want], at)
                        .map_err(|e| Error::io("read", &path, e))?;
                    if n == 0 {
                        break;
                    }
                    at += n as u64;
                    self.stats.bytes_read += n as u64;
                    lines.filled(n);
                    let _ = lines.scan(&mut on_piece);
                }
                if !stopped.get() && !live {
                    let _ = lines.finish(&mut on_piece);
                }
            }
            Compression::Unsupported(what) => {
                self.notices.push(format!(
                    "skipped {}: {what}-compressed, which shield-watch does not read",
                    path.display()
                ));
            }
            _ => {
                let mut out = 0u64;
                let (flow, read) = decode(compression, file, &mut |mut chunk| {
                    out += chunk.len() as u64;
                    while !chunk.is_empty() && !stopped.get() {
                        let spare = lines.spare();
                        let n = spare.len().min(chunk.len());
                        spare[..n].copy_from_slice(&chunk[..n]);
                        chunk = &chunk[n..];
                        lines.filled(n);
                        let _ = lines.scan(&mut on_piece);
                    }
                    !stopped.get()
                });
                self.stats.bytes_read += read;
                self.stats.bytes_decompressed += out;
                match flow {
                    Ok(Flow::Done) => {
                        let _ = lines.finish(&mut on_piece);
                    }
                    Ok(Flow::Stopped) => {}
                    Err(e) => self.notices.push(format!(
                        "{}: damaged {compression:?} data after {out} bytes ({e}): the lines \
                         before the damage were read, the rest of the file skipped",
                        path.display()
                    )),
                }
            }
        }
        let too_long = too_long.get();
        if too_long > 0 {
            self.stats.too_long += too_long;
            self.notices.push(format!(
                "{}: {too_long} line(s) over {} bytes skipped",
                path.display(),
                self.max_line
            ));
        }
        Ok(())
    }
}

/// The window logic over the lines in order.
struct Scan {
    window: Window,
    /// The time of the last timed line seen (or known to be before `since`).
    prev: Option<i64>,
    /// The first timed line's time in the whole history: where untimed lines before it stand.
    first: Option<i64>,
    stopped: bool,
    rotated: bool,
}

impl Scan {
    fn line(
        &mut self,
        bytes: &[u8],
        time_of: &mut impl FnMut(&[u8]) -> Option<i64>,
        emit: &mut impl FnMut(HistoryLine<'_>) -> bool,
    ) -> bool {
        let own = time_of(bytes);
        if let Some(t) = own {
            if self.window.until.is_some_and(|u| t > u) {
                self.stopped = true;
                return false;
            }
            self.prev = Some(t);
        }
        let inside = match own.or(self.prev).or(self.first) {
            None => true,
            Some(t) => {
                self.window.since.is_none_or(|s| t >= s) && self.window.until.is_none_or(|u| t <= u)
            }
        };
        if inside
            && !emit(HistoryLine {
                bytes,
                time: own,
                rotated: self.rotated,
            })
        {
            self.stopped = true;
            return false;
        }
        true
    }
}

fn mtime(m: &std::fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

/// Hands the lines of `file` before `limit` to `line`, last first, until it returns false;
/// lines over `max_line` are skipped. Returns the bytes read.
fn rev_lines(
    file: &File,
    limit: u64,
    max_line: usize,
    line: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<u64> {
    let mut read = 0u64;
    let mut end = limit;
    // A final `\n` ends the last line; it does not start an empty one.
    if end > 0 {
        let mut one = [0u8];
        if pread_full(file, &mut one, end - 1)? == 1 && one[0] == b'\n' {
            end -= 1;
        }
    }
    // `carry` is the head of the line that starts before the chunk read last (no `\n` in it).
    let mut carry: Vec<u8> = Vec::new();
    let mut skipping = false;
    let mut chunk = vec![0u8; CHUNK];
    let mut pos = end;
    while pos > 0 {
        let lo = pos.saturating_sub(CHUNK as u64);
        let len = (pos - lo) as usize;
        let got = pread_full(file, &mut chunk[..len], lo)?;
        read += got as u64;
        if got < len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        let data = &chunk[..len];
        let mut right = len;
        for nl in memchr::memrchr_iter(b'\n', data) {
            let piece = &data[nl + 1..right];
            if skipping {
                skipping = false;
            } else if carry.is_empty() {
                if piece.len() <= max_line && !line(piece) {
                    return Ok(read);
                }
            } else {
                let mut whole = piece.to_vec();
                whole.extend_from_slice(&carry);
                carry.clear();
                if whole.len() <= max_line && !line(&whole) {
                    return Ok(read);
                }
            }
            right = nl;
        }
        if !skipping {
            let mut head = data[..right].to_vec();
            head.extend_from_slice(&carry);
            carry = head;
            if carry.len() > max_line {
                carry.clear();
                skipping = true;
            }
        }
        pos = lo;
    }
    if !skipping && (end > 0) {
        line(&carry);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(text: &[u8], max_line: usize) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, text).unwrap();
        let f = File::open(&p).unwrap();
        let mut out = Vec::new();
        rev_lines(&f, text.len() as u64, max_line, &mut |l| {
            out.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn history_reverse_lines_cross_chunks_and_skip_long_ones() {
        assert_eq!(rev(b"a\nb\nc\n", 100), ["c", "b", "a"]);
        assert_eq!(rev(b"a\n\nc", 100), ["c", "", "a"]);
        assert_eq!(rev(b"", 100), Vec::<String>::new());
        let big: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let got = rev(&big, 100);
        assert_eq!(got.len(), 50_000);
        assert!(got
            .iter()
            .rev()
            .enumerate()
            .all(|(i, l)| *l == i.to_string()));
        let mut long = b"x\n".to_vec();
        long.extend(vec![b'y'; 3 * CHUNK]);
        long.extend(b"\nz\n");
        assert_eq!(rev(&long, 100), ["z", "x"]);
    }
}
