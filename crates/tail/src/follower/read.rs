//! Reading: the current file, the files in their rotate-wait, a truncated file's copy, each
//! from where we stopped to its end, turned into records.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime};

use crate::cursor::Cursor;
use crate::error::Error;
use crate::file::{open_tracked, pread, Tracked};
use crate::identity::{Born, FileId, Fingerprint, FINGERPRINT_MAX};
use crate::lines::{LineBuf, Piece};

use super::{Follower, Record, Stats};

/// A file we moved on from, still read for a while (see [`super::Options::rotate_wait`]).
pub(super) struct Draining {
    pub(super) t: Tracked,
    pub(super) lines: LineBuf,
    pub(super) until: Instant,
}

/// At most this many rotated-away files are still read at once; past it the oldest is finished.
const MAX_DRAINING: usize = 16;

impl Follower {
    /// Reads the current file from `read_to` to its end, delivering complete lines.
    pub(super) fn pump(&mut self, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
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
    pub(super) fn read_draining(&mut self, emit: &mut dyn FnMut(Record<'_>)) -> Result<(), Error> {
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
    pub(super) fn drain_leftovers(
        &mut self,
        emit: &mut dyn FnMut(Record<'_>),
    ) -> Result<(), Error> {
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
    pub(super) fn finish_draining(
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
    pub(super) fn forget_file(&mut self, t: Tracked) {
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
    pub(super) fn truncated(&mut self) -> Result<bool, Error> {
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

    pub(super) fn restart_truncated(
        &mut self,
        emit: &mut dyn FnMut(Record<'_>),
    ) -> Result<(), Error> {
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
    pub(super) fn find_copy(&self) -> Option<std::fs::File> {
        let cur = self.cur.as_ref()?;
        let last_byte = cur.last_byte?;
        let not_before = cur.last_data? - Duration::from_secs(1);
        let mut best: Option<((SystemTime, Born), std::fs::File)> = None;
        for (name, m) in self.siblings() {
            let Ok(mtime) = m.modified() else { continue };
            let id = FileId::of(&m);
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
    pub(super) fn finish_partial(&mut self, emit: &mut dyn FnMut(Record<'_>)) {
        let Some(cur) = &self.cur else { return };
        let ends = Ends::Own { existing_to: 0 };
        let file = (cur.id, cur.fp);
        let stats = &mut self.stats;
        self.lines
            .finish(&mut |p| deliver(p, ends, file, stats, emit));
    }

    /// Leaves the current file for `next` (read from 0) after a last read of the current one,
    /// which is then still read during its rotate-wait.
    pub(super) fn move_on(
        &mut self,
        next: Tracked,
        emit: &mut dyn FnMut(Record<'_>),
    ) -> Result<(), Error> {
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
