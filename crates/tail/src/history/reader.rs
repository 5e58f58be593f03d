//! Pulling a window of history one line at a time: what [`History::read`] drives, and what a
//! caller merging several logs by time drives itself.

use super::lines::FileLines;
use super::{History, HistoryLine, Window};
use crate::decompress::Compression;
use crate::error::Error;

/// The lines of a [`History`] in a [`Window`], pulled one at a time, oldest first: made by
/// [`History::reader`]. [`HistoryReader::peek`] shows the next line without taking it, so
/// that several readers (one per log) can be merged by [`HistoryLine::order_time`];
/// [`HistoryReader::next_line`] takes it.
///
/// ```
/// use shield_tail::{History, Options, Window};
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("dnsmasq.log"), "1 dns\n4 dns\n")?;
/// std::fs::write(dir.path().join("audit.jsonl"), "2 audit\n3 audit\n")?;
/// let time_of = |l: &[u8]| std::str::from_utf8(l).ok()?.split(' ').next()?.parse().ok();
/// let mut logs = [
///     History::open(dir.path().join("dnsmasq.log"), &Options::default())?,
///     History::open(dir.path().join("audit.jsonl"), &Options::default())?,
/// ];
/// let mut readers: Vec<_> = logs.iter_mut().map(|h| h.reader(Window::default(), time_of)).collect();
/// let mut merged = Vec::new();
/// loop {
///     // The reader whose next line stands earliest (a tie goes to the first).
///     let mut best: Option<(i64, usize)> = None;
///     for (i, r) in readers.iter_mut().enumerate() {
///         if let Some(line) = r.peek()? {
///             let t = line.order_time.unwrap_or(i64::MIN);
///             if best.is_none_or(|(b, _)| t < b) {
///                 best = Some((t, i));
///             }
///         }
///     }
///     let Some((_, i)) = best else { break };
///     let line = readers[i].next_line()?.expect("peeked");
///     merged.push(String::from_utf8_lossy(line.bytes).into_owned());
/// }
/// assert_eq!(merged, ["1 dns", "2 audit", "3 audit", "4 dns"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HistoryReader<'h, T> {
    h: &'h mut History,
    time_of: T,
    window: Window,
    /// The time of the last timed line seen (or one known to be before `since`).
    prev: Option<i64>,
    /// The first timed line's time in the whole history: where untimed lines before it stand.
    first: Option<i64>,
    /// The file holding the first line at or after `since` has been reached.
    found_start: bool,
    /// The next file to open.
    next_file: usize,
    /// The file being read, and whether it is a rotated one.
    cur: Option<(FileLines, usize, bool)>,
    /// The next line, read but not taken.
    ready: Option<Ready>,
    /// `ready` was handed out by `next_line`: the next call moves past it.
    taken: bool,
    /// A line after `until` was seen, or the last file is done.
    done: bool,
}

/// A line read and not yet moved past: where it is in the file's buffer, and its times.
struct Ready {
    range: std::ops::Range<usize>,
    time: Option<i64>,
    order_time: Option<i64>,
}

impl History {
    /// A reader of the lines in `window`, oldest first (see [`History::read`] for what is read
    /// and what is passed over). `time_of` reads a line's time (`None`: it has none).
    pub fn reader<T: FnMut(&[u8]) -> Option<i64>>(
        &mut self,
        window: Window,
        mut time_of: T,
    ) -> HistoryReader<'_, T> {
        // Lines before the first timed line stand at its time.
        let first = (0..self.count()).find_map(|i| self.head(i, &mut time_of));
        HistoryReader {
            h: self,
            time_of,
            window,
            prev: None,
            first,
            found_start: window.since.is_none(),
            next_file: 0,
            cur: None,
            ready: None,
            taken: false,
            done: false,
        }
    }
}

impl<T: FnMut(&[u8]) -> Option<i64>> HistoryReader<'_, T> {
    /// The next line in the window, without taking it (`None`: there is no more). A file gone,
    /// damaged or refused is passed over with a notice ([`History::take_notices`]); the error
    /// is a plain file that cannot be read.
    pub fn peek(&mut self) -> Result<Option<HistoryLine<'_>>, Error> {
        if self.taken {
            self.ready = None;
            self.taken = false;
        }
        if self.ready.is_none() && !self.done {
            self.ready = self.load()?;
            if self.ready.is_none() {
                self.done = true;
            }
        }
        Ok(self.current())
    }

    /// Problems met so far that did not stop the reading (a file gone, damaged or refused),
    /// not yet taken: [`History::take_notices`] while the reader holds the history.
    pub fn take_notices(&mut self) -> Vec<String> {
        self.h.take_notices()
    }

    /// Takes the next line in the window (`None`: there is no more).
    pub fn next_line(&mut self) -> Result<Option<HistoryLine<'_>>, Error> {
        self.peek()?;
        self.taken = self.ready.is_some();
        Ok(self.current())
    }

    /// The line read and not yet moved past.
    fn current(&self) -> Option<HistoryLine<'_>> {
        let (Some(ready), Some((lines, _, rotated))) = (&self.ready, &self.cur) else {
            return None;
        };
        Some(HistoryLine {
            bytes: &lines.buf()[ready.range.clone()],
            time: ready.time,
            order_time: ready.order_time,
            rotated: *rotated,
        })
    }

    /// Reads on to the next line in the window.
    fn load(&mut self) -> Result<Option<Ready>, Error> {
        loop {
            let Some((lines, i, _)) = &mut self.cur else {
                if !self.open_next()? {
                    return Ok(None);
                }
                continue;
            };
            let i = *i;
            match lines.next() {
                Ok(Some(range)) => {
                    let own = (self.time_of)(&lines.buf()[range.clone()]);
                    if let Some(t) = own {
                        if self.window.until.is_some_and(|u| t > u) {
                            self.close();
                            self.next_file = self.h.count();
                            return Ok(None);
                        }
                        self.prev = Some(t);
                    }
                    let order_time = own.or(self.prev).or(self.first);
                    let w = self.window;
                    let inside = order_time.is_none_or(|t| {
                        w.since.is_none_or(|s| t >= s) && w.until.is_none_or(|u| t <= u)
                    });
                    if inside {
                        return Ok(Some(Ready {
                            range,
                            time: own,
                            order_time,
                        }));
                    }
                }
                Ok(None) => self.close(),
                Err(e) => {
                    let compressed = self.h.compression(i).is_compressed();
                    let decoded = lines.decoded;
                    self.close();
                    let path = self.h.dir_path.join(self.h.name(i));
                    if !compressed {
                        return Err(Error::io("read", &path, e));
                    }
                    self.h
                        .notices
                        .push(damaged(&path, self.h.compression(i), decoded, &e));
                }
            }
        }
    }

    /// Ends the current file: its costs go into the history's stats.
    fn close(&mut self) {
        if let Some((lines, i, _)) = self.cur.take() {
            self.h.account(&lines, i);
        }
    }

    /// Opens the next file holding lines in the window, passing over whole files before
    /// `since` and binary-searching the one it starts in. `false` when there is none.
    fn open_next(&mut self) -> Result<bool, Error> {
        let h = &mut *self.h;
        let n = h.count();
        while self.next_file < n {
            let i = self.next_file;
            self.next_file += 1;
            let rotated = i + 1 < n || h.live.is_none();
            let Some(file) = h.open_index(i) else {
                continue;
            };
            let compression = h.compression(i);
            let limit = h.limit(i, &file);
            let mut from = 0;
            if let (false, Some(since)) = (self.found_start, self.window.since) {
                // Every line of this file is at or before the next timed file's first line.
                let next = (i + 1..n).find_map(|j| h.head(j, &mut self.time_of));
                if next.is_some_and(|t| t < since) {
                    self.prev = next;
                    h.stats.files_skipped += 1;
                    continue;
                }
                if compression == Compression::Plain {
                    let last = h.last_time(&file, limit, &mut self.time_of);
                    if last.is_some_and(|t| t < since) {
                        self.prev = last;
                        h.stats.files_skipped += 1;
                        continue;
                    }
                    let (lo, before) = h.search(&file, limit, since, &mut self.time_of);
                    from = lo;
                    if before.is_some() {
                        self.prev = before;
                    }
                }
                self.found_start = true;
            }
            if let Some(lines) = h.lines(i, file, compression, from, limit) {
                self.cur = Some((lines, i, rotated));
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<T> Drop for HistoryReader<'_, T> {
    fn drop(&mut self) {
        if let Some((lines, i, _)) = self.cur.take() {
            self.h.account(&lines, i);
        }
    }
}

/// The notice for a compressed file whose decoder failed.
pub(super) fn damaged(
    path: &std::path::Path,
    compression: Compression,
    decoded: u64,
    e: &std::io::Error,
) -> String {
    format!(
        "{}: damaged {compression:?} data after {decoded} decoded bytes ({e}): the lines before \
         the damage were read, the rest of the file skipped",
        path.display()
    )
}
