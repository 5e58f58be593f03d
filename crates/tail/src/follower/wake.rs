//! Waking: the inotify watches a follower holds (its files, its directory, the directory's
//! parent or nearest existing ancestor), blocking until one fires, and stat polling without
//! inotify.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::file::{gone, Tracked};
use crate::watches::{Owner, Role, Watches, DIR_MASK, FILE_MASK};

use super::Follower;

/// The inotify side: a shared registry, our place in it, and the directory watches we hold.
pub(super) struct Watch {
    pub(super) reg: Arc<Mutex<Watches>>,
    pub(super) owner: Owner,
    /// The directory of the file.
    pub(super) dir_wd: Option<i32>,
    /// Above it: its parent (for the directory's own name), or while the parent is missing,
    /// the nearest existing ancestor (`far`).
    pub(super) above_wd: Option<i32>,
    pub(super) far: bool,
}

impl Follower {
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

    /// Whether the last `read_available` stopped before the end of what there is (told to, or
    /// its read budget spent).
    pub(crate) fn stopped_early(&self) -> bool {
        self.more
    }

    /// Whether a call of `read_available` is due without any event (it stopped early, or a
    /// rotate-wait ended).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.more || self.deadline().is_some_and(|d| d <= now)
    }

    /// An inotify watch on the inode `t` holds, if inotify is in use.
    pub(super) fn watch_file(&mut self, t: &Tracked) -> Option<i32> {
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

    pub(super) fn drop_watch(&mut self) {
        if let Some(w) = self.watch.take() {
            w.reg
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget(w.owner);
        }
    }

    /// Watches the directory's parent (for the directory's own name; while the parent is
    /// missing, its nearest existing ancestor), then the directory itself. Returns true when
    /// the directory watch was just established (the caller should look).
    pub(super) fn ensure_dir_watch(&mut self) -> bool {
        let Some(w) = self.watch.as_mut() else {
            return false;
        };
        // A held directory cannot go or come: nothing above it is watched.
        let above_needed = self.held.is_none();
        if w.dir_wd.is_some() && (w.above_wd.is_some() || !above_needed) && !w.far {
            return false;
        }
        let reg = Arc::clone(&w.reg);
        let mut reg = reg.lock().unwrap_or_else(PoisonError::into_inner);
        // Above first, so that the directory appearing in between is still seen.
        if above_needed && (w.above_wd.is_none() || w.far) {
            match reg.watch_above(w.owner, &self.dir) {
                Ok((wd, far)) => {
                    if let Some(old) = w.above_wd.replace(wd) {
                        if old != wd {
                            reg.remove(w.owner, old);
                        }
                    }
                    w.far = far;
                }
                Err(_) => {
                    drop(reg);
                    // Out of watches or similar: fall back to polling, which still works.
                    self.drop_watch();
                    return false;
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

    pub(super) fn poll_wait(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
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

pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
