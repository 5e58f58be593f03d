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
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::beneath::{open_beneath, open_dir, Dir, Escape, NotOwned, Open};
use crate::cursor::Cursor;
use crate::decompress::{Compression, CHUNK};
use crate::error::{Error, ErrorKind};
use crate::file::{end_position, gone, pread_full};
use crate::follower::{Options, Start};
use crate::identity::{birth_nanos, Born, FileId, Fingerprint, FINGERPRINT_MAX};

mod lines;
mod reader;

use lines::{rev_lines, FileLines};
pub use reader::HistoryReader;

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
    /// The time the line stands at in the history's order: its own, else that of the timed
    /// line before it, else (before any) the first timed line's; `None` only where no line
    /// has a time. What a merge of several logs orders by. (From [`History::last`]: the
    /// line's own time.)
    pub order_time: Option<i64>,
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
    /// Its modification time at the listing: what its compressed copy keeps.
    mtime: (i64, i64),
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
    /// The directory, as messages name it.
    dir_path: PathBuf,
    /// The directory as looked up for listing: its path, or `/proc/self/fd/N` when held.
    lookup_dir: PathBuf,
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
        let dir = match open_dir(&dir_path) {
            Ok(d) => Some(d),
            Err(e) if gone(&e) => None,
            Err(e) => return Err(Error::io("open", &dir_path, e)),
        };
        History::open_in(dir, dir_path.clone(), dir_path, &name, options)
    }

    /// As [`History::open`], for the log `name` of the held directory `dir` (never looked up
    /// by path: see [`Dir`]).
    pub fn open_at(
        dir: &Dir,
        name: impl AsRef<OsStr>,
        options: &Options,
    ) -> Result<History, Error> {
        let held = dir
            .open_file(".", Open::Directory)
            .map_err(|e| Error::io("open", dir.path(), e))?;
        let name = name.as_ref();
        History::open_in(
            Some(held),
            dir.path().to_path_buf(),
            dir.through_fd(),
            name,
            options,
        )
    }

    fn open_in(
        dir: Option<File>,
        dir_path: PathBuf,
        lookup_dir: PathBuf,
        name: &OsStr,
        options: &Options,
    ) -> Result<History, Error> {
        let name = name.to_os_string();
        let mut h = History {
            dir: None,
            files: Vec::new(),
            live: None,
            max_line: options.max_line.max(1),
            stats: HistoryStats::default(),
            notices: Vec::new(),
            dir_path,
            lookup_dir,
        };
        let Some(dir) = dir else {
            return Ok(h);
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
                // The live file renamed since we opened it, or a file born after it and
                // written when it was or later: rotated twice since (its lines are the live
                // follower's), or a compressed copy of it (logrotate gives the copy the
                // modification time of what it compressed; its lines are read through the
                // descriptor). An older file compressed later is born later but keeps its
                // older modification time.
                let later = Born::of(&m) > Born::of(l) && mtime(&m) >= mtime(l);
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
            // Two files with one modification time, to the nanosecond, are a file and the
            // copy logrotate is compressing it into (met while it writes it): the same lines,
            // read once, from the file compressed least (a copy being written may not even
            // have its magic number yet).
            if let Some(last) = h.files.last_mut() {
                if last.mtime == mtime(&m) {
                    if last.compression.is_compressed() && !compression.is_compressed() {
                        (last.name, last.dev, last.ino, last.compression) =
                            (sib, m.dev(), m.ino(), compression);
                    }
                    continue;
                }
            }
            h.files.push(Entry {
                name: sib,
                dev: m.dev(),
                ino: m.ino(),
                compression,
                mtime: mtime(&m),
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

    /// The cursor [`History::live_end`] starts from, to save with [`crate::CursorFile`] where
    /// the caller keeps cursors; `None` where there was no live file.
    pub fn live_cursor(&self) -> Option<Cursor> {
        self.live.as_ref().map(|l| l.cursor)
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
        time_of: impl FnMut(&[u8]) -> Option<i64>,
        mut emit: impl FnMut(HistoryLine<'_>) -> bool,
    ) -> Result<(), Error> {
        let mut reader = self.reader(window, time_of);
        while let Some(line) = reader.next_line()? {
            if !emit(line) {
                break;
            }
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
                self.stream(i, file, compression, 0, limit, &mut |line| {
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
                order_time: *time,
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
            Err(e) if NotOwned::of(&e).is_some() => {
                return Err(NotOwned::of(&e).map(|n| n.at(&path)).unwrap_or_default());
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
        let Ok(entries) = std::fs::read_dir(&self.lookup_dir) else {
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
        let (name, dev, ino, written) = {
            let e = &self.files[i];
            (e.name.clone(), e.dev, e.ino, e.mtime)
        };
        // The inode and the modification time: a rotated file is written no more, and an inode
        // freed by a compression (logrotate removes the file it compressed) is soon another
        // file's, compressed or not.
        let same = |f: &File| {
            f.metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino) && mtime(&m) == written)
        };
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
        let moved = std::fs::read_dir(&self.lookup_dir)
            .ok()
            .and_then(|entries| {
                entries.flatten().find_map(|e| {
                    let m = e.metadata().ok()?;
                    let n = e.file_name();
                    (n.as_bytes().starts_with(prefix.as_bytes())
                        && m.is_file()
                        && (m.dev(), m.ino()) == (dev, ino)
                        && mtime(&m) == written)
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
        // Compressed since the listing (logrotate's `delaycompress` compresses the file it
        // rotated last time at its next rotation, and removes it): its compressed copy keeps
        // its modification time, and holds the same lines.
        if let Some(f) = self.compressed_copy(i, &prefix) {
            return Some(f);
        }
        self.notices.push(format!(
            "skipped {}: gone before it was read",
            self.dir_path.join(&name).display()
        ));
        self.files[i].head = Some(None);
        self.files[i].gone = true;
        None
    }

    /// The compressed copy of rotated file `i`, found gone: a compressed file among the log's
    /// names with `i`'s modification time (to the nanosecond), which becomes file `i`.
    fn compressed_copy(&mut self, i: usize, prefix: &OsStr) -> Option<File> {
        let dir = self.dir.as_ref()?;
        let want = self.files[i].mtime;
        let names: Vec<OsString> = std::fs::read_dir(&self.lookup_dir)
            .ok()?
            .flatten()
            .filter(|e| {
                e.file_name().as_bytes().starts_with(prefix.as_bytes())
                    && e.metadata().is_ok_and(|m| m.is_file() && mtime(&m) == want)
            })
            .map(|e| e.file_name())
            .collect();
        for name in names {
            let Ok(Some(f)) = self.open_checked(dir, &name) else {
                continue;
            };
            let compression = Compression::of(&f);
            if compression.is_compressed() {
                let m = f.metadata().ok()?;
                let e = &mut self.files[i];
                (e.name, e.dev, e.ino, e.compression) = (name, m.dev(), m.ino(), compression);
                return Some(f);
            }
        }
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
            let _ = self.stream(i, file, compression, 0, limit, &mut |line| {
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

    /// The lines of file `i` from `from` to `limit` (a compressed one: all of it), or `None`
    /// with a notice when it cannot be read (a compressor this crate does not read).
    fn lines(
        &mut self,
        i: usize,
        file: File,
        compression: Compression,
        from: u64,
        limit: u64,
    ) -> Option<FileLines> {
        let path = self.dir_path.join(self.name(i));
        if let Compression::Unsupported(what) = compression {
            self.notices.push(format!(
                "skipped {}: {what}-compressed, which shield-watch does not read",
                path.display()
            ));
            return None;
        }
        // A rotated file's last line needs no newline; the live file ends at `limit`.
        let rotated = i < self.files.len();
        match FileLines::new(file, compression, from, limit, self.max_line, rotated) {
            Ok(lines) => Some(lines),
            Err(e) => {
                self.notices
                    .push(format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Adds what reading file `i` cost to the stats, and says once how many over-long lines
    /// it skipped.
    fn account(&mut self, lines: &FileLines, i: usize) {
        self.stats.bytes_read += lines.bytes_read();
        self.stats.bytes_decompressed += lines.decoded;
        if lines.too_long > 0 {
            self.stats.too_long += lines.too_long;
            self.notices.push(format!(
                "{}: {} line(s) over {} bytes skipped",
                self.dir_path.join(self.name(i)).display(),
                lines.too_long,
                self.max_line
            ));
        }
    }

    /// Hands the lines of file `i` between `from` and `limit` to `line` until it returns
    /// false. Damage in a compressed file is a notice, not an error.
    fn stream(
        &mut self,
        i: usize,
        file: File,
        compression: Compression,
        from: u64,
        limit: u64,
        line: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), Error> {
        let Some(mut lines) = self.lines(i, file, compression, from, limit) else {
            return Ok(());
        };
        let result = loop {
            match lines.next() {
                Ok(Some(r)) => {
                    if !line(&lines.buf()[r]) {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.account(&lines, i);
        let path = self.dir_path.join(self.name(i));
        match result {
            Ok(()) => Ok(()),
            Err(e) if compression.is_compressed() => {
                let note = reader::damaged(&path, compression, lines.decoded, &e);
                self.notices.push(note);
                Ok(())
            }
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }
}

fn mtime(m: &std::fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}
