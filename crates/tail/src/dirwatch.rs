//! Watching a few directories for any change, to reload the files in them promptly.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::fs::inotify::{ReadFlags, WatchFlags};

use crate::error::Error;
use crate::inotify::Inotify;

const MASK: WatchFlags = crate::watches::ANY_CHANGE_MASK;

/// How often a missing directory (or, without inotify, every directory) is looked at: well
/// within the one second the allow-list reload is allowed.
const POLL: Duration = Duration::from_millis(200);

/// Watches directories (non-recursively) and reports that something in them changed.
///
/// Directories that do not exist yet are polled for; their appearance counts as a change.
/// Without inotify every directory is polled (names, inodes, sizes and mtimes of its entries).
pub struct DirWatcher {
    dirs: Vec<PathBuf>,
    inotify: Option<Inotify>,
    wds: Vec<Option<i32>>,
    snapshot: Vec<Snapshot>,
}

type Snapshot = Option<Vec<(std::ffi::OsString, u64, u64, i64, i64)>>;

impl DirWatcher {
    /// Starts watching `dirs`; they may not exist yet. Without inotify (none left, or none on
    /// this system) it polls.
    pub fn new(dirs: &[PathBuf]) -> DirWatcher {
        let mut w = DirWatcher {
            dirs: dirs.to_vec(),
            inotify: Inotify::new().ok(),
            wds: vec![None; dirs.len()],
            snapshot: Vec::new(),
        };
        w.add_missing_watches();
        w.snapshot = w.dirs.iter().map(|d| snapshot(d)).collect();
        w
    }

    /// Blocks until something in one of the directories changed (true) or `timeout` passed
    /// (false).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.add_missing_watches() {
                return Ok(true);
            }
            let all_watched = self.inotify.is_some() && self.wds.iter().all(Option::is_some);
            let now = Instant::now();
            let slice = if all_watched {
                deadline
            } else {
                Some(deadline.map_or(now + POLL, |d| d.min(now + POLL)))
            };
            if let Some(inotify) = &mut self.inotify {
                if inotify.poll(slice)? {
                    let mut changed = false;
                    let mut lost = Vec::new();
                    inotify.drain(&mut |ev| {
                        changed = true;
                        if ev.mask.intersects(
                            ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF,
                        ) {
                            lost.push(ev.wd);
                        }
                    })?;
                    for wd in lost {
                        for slot in &mut self.wds {
                            if *slot == Some(wd) {
                                *slot = None;
                                inotify.rm_watch(wd);
                            }
                        }
                    }
                    if changed {
                        return Ok(true);
                    }
                }
            } else {
                if let Some(s) = slice {
                    std::thread::sleep(s.saturating_duration_since(Instant::now()));
                }
                let now: Vec<Snapshot> = self.dirs.iter().map(|d| snapshot(d)).collect();
                if now != self.snapshot {
                    self.snapshot = now;
                    return Ok(true);
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Adds watches for directories that now exist; true if any was added.
    fn add_missing_watches(&mut self) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let mut added = false;
        for (dir, slot) in self.dirs.iter().zip(self.wds.iter_mut()) {
            if slot.is_none() {
                if let Ok(wd) = inotify.add_watch(dir, MASK) {
                    *slot = Some(wd);
                    added = true;
                }
            }
        }
        added
    }
}

fn snapshot(dir: &std::path::Path) -> Snapshot {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.file_name(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect();
    v.sort();
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_write_and_a_late_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let late = tmp.path().join("late");
        let mut w = DirWatcher::new(&[a.clone(), late.clone()]);
        assert!(!w.wait(Some(Duration::from_millis(10))).unwrap());
        std::fs::write(a.join("f"), b"x").unwrap();
        assert!(w.wait(Some(Duration::from_secs(5))).unwrap());
        while w.wait(Some(Duration::from_millis(10))).unwrap() {}
        std::fs::create_dir(&late).unwrap();
        assert!(w.wait(Some(Duration::from_secs(5))).unwrap());
    }
}
