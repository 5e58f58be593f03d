//! Finding the files to read: the one at the path, the one a cursor names, and those rotated
//! away after it (found by birth, not by name).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use crate::cursor::Cursor;
use crate::error::{Error, ErrorKind};
use crate::file::{compressed_content, compressed_name, open_tracked, pread, pread_full, Tracked};
use crate::identity::{Born, FileId, Fingerprint, FINGERPRINT_MAX};

use super::Follower;

/// At most this many rotated files waiting to be read are held open (and watched) by one
/// follower; the newer ones are opened as these are read (see
/// [`Follower::refresh_successors`]).
pub(super) const MAX_QUEUED: usize = 16;

/// Where a file stands in the order rotated files are read: birth time, whether it is the file
/// at the path (newest among those born in the same clock tick), inode number.
pub(super) type BirthOrder = (u64, bool, u64);

impl Follower {
    /// Opens `name` in our directory (through the held descriptor, when there is one).
    pub(super) fn open_name(&self, name: &OsStr) -> Result<Option<Tracked>, Error> {
        let shown = self.path.parent().unwrap_or(Path::new("/"));
        open_tracked(&self.dir, shown, name)
    }

    pub(super) fn open_path(&mut self) -> Result<Option<Tracked>, Error> {
        match self.open_name(&self.name) {
            Err(e) if matches!(e.kind(), ErrorKind::Escapes | ErrorKind::NotOwned) => {
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
    pub(super) fn refuse(&mut self, name: OsString, err: Error) {
        if !self.reported.contains(&name) {
            self.stats.refused += 1;
            self.reported.insert(name);
            self.notices.push(err);
        }
    }

    /// The identity of the regular file at the path, if any (a symbolic link is none).
    pub(super) fn stat_path(&self) -> Option<FileId> {
        let m = std::fs::symlink_metadata(&self.lookup).ok()?;
        m.is_file().then(|| FileId::of(&m))
    }

    /// Makes `t` the current file, positioned at `offset`.
    pub(super) fn install(
        &mut self,
        mut t: Tracked,
        offset: u64,
        discard: bool,
    ) -> Result<(), Error> {
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
    pub(super) fn resume(&mut self, c: Cursor) -> Result<(), Error> {
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
                self.ignored = self.sibling_ids().collect();
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
            self.ignored = self.sibling_ids().filter(|id| Some(*id) != at).collect();
        }
        Ok(())
    }

    /// Regular files in our directory whose name starts with ours, with their (not followed)
    /// metadata. Symbolic links among them are refused and reported.
    pub(super) fn siblings(&self) -> Vec<(OsString, std::fs::Metadata)> {
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
    pub(super) fn sibling_ids(&self) -> impl Iterator<Item = FileId> {
        self.siblings().into_iter().map(|(_, m)| FileId::of(&m))
    }

    /// The file next to the path with the cursor's identity and fingerprint, long enough.
    pub(super) fn find_sibling(&mut self, c: Cursor) -> Option<Tracked> {
        for (name, m) in self.siblings() {
            if (m.dev(), m.ino()) != (c.dev, c.ino) {
                continue;
            }
            let Ok(Some(t)) = self.open_name(&name) else {
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
    /// ours, born after the current file (or the horizon), not compressed, not ignored, not
    /// finished and not empty (unless at the path), held open in birth order; at most
    /// [`MAX_QUEUED`], the oldest (the next to read).
    ///
    /// Files past those are left where they are, unopened, and found again once half the
    /// queue is read: a directory flooded with rotated-looking names (its owner is not
    /// trusted) costs a bounded number of descriptors and watches, and one look at the
    /// directory per several files read, while a real backlog (many rotations while
    /// shield-watch was down) is still read whole, in order.
    pub(super) fn refresh_successors(&mut self) -> Result<(), Error> {
        if self.next.len() >= MAX_QUEUED / 2 {
            return Ok(());
        }
        let horizon = self.cur.as_ref().map(|c| c.born).or(self.horizon);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let at_path = self.stat_path();
        // Birth order; among files born within one clock tick, the one at the path is the
        // newest whatever its inode number (inode numbers are re-used).
        let order = |born: Born, id: &FileId| {
            let live = at_path.is_some_and(|p| p.same_file(id));
            (born.nanos, live, born.ino)
        };
        let mut found: Vec<(BirthOrder, OsString)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(self.name.as_bytes()) {
                continue;
            }
            let Ok(m) = entry.metadata() else { continue };
            if m.file_type().is_symlink() {
                let shown = self.path.with_file_name(&name);
                let err = Error::new(ErrorKind::Escapes, shown.display().to_string());
                self.refuse(name, err);
                continue;
            }
            if !m.is_file() || compressed_name(&name) {
                continue;
            }
            let born = Born::of(&m);
            let id = FileId::of(&m);
            let live = at_path.is_some_and(|p| p.same_file(&id));
            let known = |t: &Tracked| (t.id.dev, t.id.ino) == (m.dev(), m.ino());
            if self.cur.as_ref().is_some_and(known)
                || self.next.iter().any(known)
                || self.draining.iter().any(|d| known(&d.t))
                || self.ignored.holds(&id)
                // Files born within the same clock tick as ours cannot be ordered by birth:
                // they are taken, unless known (a file older than ours in the same tick was
                // finished, ignored, or never seen: reading it late beats losing it).
                || horizon.is_some_and(|h| born.nanos < h.nanos)
                // An empty rotated file has nothing to read yet, so it holds no descriptor
                // and no watch: the directory's watch wakes us when it is written.
                || !live && m.len() == 0
            {
                continue;
            }
            found.push((order(born, &id), name));
        }
        if found.is_empty() {
            return Ok(());
        }
        // The oldest first, until the queue is full: the rest wait unopened.
        found.sort_unstable();
        for (_, name) in found {
            if self.next.len() >= MAX_QUEUED {
                break;
            }
            let mut t = match self.open_name(&name) {
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
                self.ignored.insert(t.id);
                continue;
            }
            if self
                .done
                .iter()
                .any(|(id, fp)| id.same_file(&t.id) && t.starts_with(*fp))
            {
                continue;
            }
            t.wd = self.watch_file(&t);
            self.next.push_back(t);
        }
        // Sorted again: a file found now can be older than one queued before (born within the
        // same clock tick as it, or with a name that sorted later).
        self.next
            .make_contiguous()
            .sort_by_key(|t| order(t.born, &t.id));
        Ok(())
    }
}
