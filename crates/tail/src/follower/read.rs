//! Reading: the current file, the files in their rotate-wait, a truncated file's copy, each
//! from where we stopped to its end, turned into records.

use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime};

use crate::cursor::Cursor;
use crate::error::Error;
use crate::file::{pread, Tracked};
use crate::identity::{Born, FileId, Fingerprint, FINGERPRINT_MAX};
use crate::lines::{LineBuf, Piece};

use super::{Follower, Record, Stats};

/// Where records go: the caller's callback, which may say stop.
pub(super) type Emit<'a> = dyn FnMut(Record<'_>) -> ControlFlow<()> + 'a;

/// Stop reading now (the caller said so, or the read budget is spent); the rest is read later.
pub(super) const STOP: ControlFlow<()> = ControlFlow::Break(());
/// Go on.
pub(super) const GO: ControlFlow<()> = ControlFlow::Continue(());

/// At most this many bytes are read from files in one call of `read_available`: one huge file
/// (a container owner's, or a sparse one with data scattered through it) must not keep the
/// thread from the other files of its set.
pub(crate) const READ_BUDGET: u64 = 4 << 20;

/// A truncation noticed, not yet dealt with: the rest we had not read is being read from
/// copytruncate's copy (when there is one), then the file is read again from 0.
pub(super) struct Truncation {
    pub(super) copy: Option<std::fs::File>,
}

/// A file we moved on from, still read for a while (see [`super::Options::rotate_wait`]).
pub(super) struct Draining {
    pub(super) t: Tracked,
    pub(super) lines: LineBuf,
    pub(super) until: Instant,
}

/// At most this many rotated-away files are still read at once; past it the oldest is finished.
const MAX_DRAINING: usize = 16;

impl Follower {
    /// Reads the current file from `read_to` to its end, delivering complete lines, unless told
    /// to stop.
    pub(super) fn pump(&mut self, emit: &mut Emit<'_>) -> Result<ControlFlow<()>, Error> {
        let Some(cur) = self.cur.as_mut() else {
            return Ok(GO);
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
            &mut self.budget,
            emit,
        )
        .map(|flow| if flow.is_break() { STOP } else { GO })
    }

    /// Reads every file still in its rotate-wait, and finishes those whose wait is over.
    pub(super) fn read_draining(&mut self, emit: &mut Emit<'_>) -> Result<ControlFlow<()>, Error> {
        if self.draining.is_empty() {
            return Ok(GO);
        }
        let resume = self.cursor();
        let now = Instant::now();
        let mut i = 0;
        while i < self.draining.len() {
            let d = &mut self.draining[i];
            let grew = match pump(
                &mut d.t,
                &mut d.lines,
                &mut self.stats,
                &self.path,
                Ends::Fixed(resume),
                &mut self.budget,
                emit,
            )? {
                ControlFlow::Break(()) => return Ok(STOP),
                ControlFlow::Continue(grew) => grew,
            };
            if grew {
                d.until = d.until.max(now + self.opts.rotate_wait);
            }
            if now >= d.until {
                let d = self.draining.remove(i);
                if self.finish_draining(d, resume, emit).is_break() {
                    return Ok(STOP);
                }
            } else {
                i += 1;
            }
        }
        Ok(GO)
    }

    /// Moves every still-queued successor to the files in their rotate-wait (see the caller),
    /// reading each once now.
    pub(super) fn drain_leftovers(
        &mut self,
        emit: &mut Emit<'_>,
    ) -> Result<ControlFlow<()>, Error> {
        if self.next.is_empty() {
            return Ok(GO);
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

    /// A rotated-away file's wait is over: deliver what it still holds and its unterminated
    /// tail, never read it again. Told to stop before all is delivered, it keeps the file among
    /// those in their rotate-wait (with the wait over), to be finished by the next read.
    pub(super) fn finish_draining(
        &mut self,
        mut d: Draining,
        resume: Cursor,
        emit: &mut Emit<'_>,
    ) -> ControlFlow<()> {
        let stats = &mut self.stats;
        let file = (d.t.id, d.t.fp);
        let flow = d
            .lines
            .finish(&mut |p| deliver(p, Ends::Fixed(resume), file, stats, emit));
        if flow.is_break() && d.lines.unscanned() {
            d.until = Instant::now();
            self.draining.push(d);
        } else {
            self.forget_file(d.t);
        }
        flow
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
        self.release(t);
    }

    /// Closes a file and lets go of its watch.
    pub(super) fn release(&mut self, t: Tracked) {
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

    /// Deals with the truncation noticed (`self.truncation`): reads what we had not read from
    /// copytruncate's copy, delivers the unterminated tail, then starts over at 0. Told to stop
    /// on the way, it goes on from there at the next call.
    pub(super) fn restart_truncated(
        &mut self,
        emit: &mut Emit<'_>,
    ) -> Result<ControlFlow<()>, Error> {
        // copytruncate copied the file before truncating it: what we had not read yet is in
        // the copy. Read it from there, from our offset on, before starting over.
        let copy = self.truncation.as_mut().and_then(|t| t.copy.take());
        if let (Some(copy), Some(cur)) = (copy, self.cur.as_mut()) {
            let live = std::mem::replace(&mut cur.file, copy);
            let r = self.pump(emit);
            if let Some(cur) = self.cur.as_mut() {
                let copy = std::mem::replace(&mut cur.file, live);
                if matches!(r, Ok(ControlFlow::Break(()))) {
                    if let Some(t) = self.truncation.as_mut() {
                        t.copy = Some(copy);
                    }
                }
            }
            if r?.is_break() {
                return Ok(STOP);
            }
        }
        let flow = self.finish_partial(emit);
        if flow.is_break() && self.lines.unscanned() {
            return Ok(STOP);
        }
        self.truncation = None;
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
        self.ignored = self.sibling_ids().collect();
        Ok(flow)
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
                || self.ignored.holds(&id)
                || m.size() < cur.read_to
                || mtime < not_before
                || best.as_ref().is_some_and(|(t, _)| *t >= when)
            {
                continue;
            }
            let Ok(Some(t)) = self.open_name(&name) else {
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

    /// The current file will not grow any more: deliver what it still holds and its
    /// unterminated tail as a line (unless told to stop before).
    pub(super) fn finish_partial(&mut self, emit: &mut Emit<'_>) -> ControlFlow<()> {
        let Some(cur) = &self.cur else { return GO };
        let ends = Ends::Own { existing_to: 0 };
        let file = (cur.id, cur.fp);
        let stats = &mut self.stats;
        self.lines
            .finish(&mut |p| deliver(p, ends, file, stats, emit))
    }

    /// Leaves the current file for the first of `next` (read from 0) after a last read of the
    /// current one, which is then still read during its rotate-wait.
    pub(super) fn move_on(&mut self, emit: &mut Emit<'_>) -> Result<ControlFlow<()>, Error> {
        if self.pump(emit)?.is_break() {
            return Ok(STOP);
        }
        let Some(next) = self.next.pop_front() else {
            return Ok(GO);
        };
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
                return Ok(self.finish_draining(d, resume, emit));
            }
            let mut flow = GO;
            if self.draining.len() >= MAX_DRAINING {
                let oldest = self.draining.remove(0);
                flow = self.finish_draining(oldest, resume, emit);
            }
            self.draining.push(d);
            return Ok(flow);
        }
        Ok(GO)
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

/// Reads `t` from `read_to` to its end into `lines`, delivering complete lines, within
/// `budget`; returns whether anything was read, or `Break` when told to stop or out of budget
/// (what is left is read by the next call).
fn pump(
    t: &mut Tracked,
    lines: &mut LineBuf,
    stats: &mut Stats,
    path: &Path,
    ends: Ends,
    budget: &mut u64,
    emit: &mut Emit<'_>,
) -> Result<ControlFlow<(), bool>, Error> {
    let mut grew = false;
    loop {
        // Lines read before and not yet taken (the caller said stop) come first.
        let file = (t.id, t.fp);
        if lines
            .scan(&mut |p| deliver(p, ends, file, stats, emit))
            .is_break()
        {
            return Ok(ControlFlow::Break(()));
        }
        if *budget == 0 {
            return Ok(ControlFlow::Break(()));
        }
        grew |= skip_hole(t, lines, path)?;
        let spare = lines.spare();
        let want = spare
            .len()
            .min(usize::try_from(*budget).unwrap_or(usize::MAX));
        let n = pread(&t.file, &mut spare[..want], t.read_to)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Ok(ControlFlow::Continue(grew));
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
        *budget -= n as u64;
        lines.filled(n);
    }
}

/// Skips a hole at `read_to` (a sparse file's range never written, read as zeros) longer than
/// a line may be, without reading it: it holds no line end, so the line it is part of is
/// over-long whatever else it holds. Returns whether it skipped. (`truncate -s 16T` makes such
/// a file in an instant; reading its zeros would take days.)
fn skip_hole(t: &mut Tracked, lines: &mut LineBuf, path: &Path) -> Result<bool, Error> {
    let data = match rustix::fs::seek(&t.file, rustix::fs::SeekFrom::Data(t.read_to)) {
        Ok(at) => at,
        // No data at or after `read_to`: a hole up to the end, or the end.
        Err(rustix::io::Errno::NXIO) => t.size(path)?,
        // Not supported here: the zeros are read like any bytes.
        Err(_) => return Ok(false),
    };
    let hole = data.saturating_sub(t.read_to);
    if hole <= lines.max_line() as u64 {
        return Ok(false);
    }
    let fp_len = u64::from(t.fp.len);
    if fp_len < FINGERPRINT_MAX as u64 && t.read_to <= fp_len && fp_len < data {
        let zeros = [0u8; FINGERPRINT_MAX];
        let n = (data - fp_len).min(FINGERPRINT_MAX as u64) as usize;
        t.fp.extend(&zeros[..n]);
    }
    t.last_byte = Some(0);
    t.last_data = Some(SystemTime::now());
    t.read_to = data;
    lines.skip(hole);
    Ok(true)
}

fn deliver(
    p: Piece<'_>,
    ends: Ends,
    (id, fp): (FileId, Fingerprint),
    stats: &mut Stats,
    emit: &mut Emit<'_>,
) -> ControlFlow<()> {
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
            })
        }
        Piece::TooLong { len, end } => {
            stats.too_long += 1;
            let (end, existing) = at(end);
            emit(Record::TooLong { len, end, existing })
        }
    }
}
