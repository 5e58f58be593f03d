//! A thin wrapper over Linux inotify (through rustix), plus a blocking wait with a deadline.

use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// One inotify instance. Events are only wake-up hints for us: the follower always re-checks
/// the file system itself, so a lost or merged event can delay but never lose a line.
pub(crate) struct Inotify {
    fd: OwnedFd,
    buf: Vec<MaybeUninit<u8>>,
}

/// One decoded event.
pub(crate) struct Event<'a> {
    pub(crate) wd: i32,
    pub(crate) mask: ReadFlags,
    pub(crate) name: &'a OsStr,
}

impl Inotify {
    pub(crate) fn new() -> io::Result<Inotify> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        Ok(Inotify {
            fd,
            buf: vec![MaybeUninit::uninit(); 16 * 1024],
        })
    }

    pub(crate) fn add_watch(&self, path: &Path, mask: WatchFlags) -> io::Result<i32> {
        Ok(inotify::add_watch(&self.fd, path, mask)?)
    }

    pub(crate) fn rm_watch(&self, wd: i32) {
        // A watch the kernel already removed (its inode is gone) answers EINVAL: nothing to do.
        let _ = inotify::remove_watch(&self.fd, wd);
    }

    /// Blocks until events are readable or `deadline` passes; returns whether events are ready.
    pub(crate) fn poll(&self, deadline: Option<Instant>) -> io::Result<bool> {
        poll_readable(self.fd.as_fd(), deadline)
    }

    /// Like [`Inotify::poll`], also returning early when `extra` becomes readable; returns
    /// (events ready, `extra` readable).
    pub(crate) fn poll_with(
        &self,
        extra: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> io::Result<(bool, bool)> {
        loop {
            let mut fds = [
                PollFd::new(&self.fd, PollFlags::IN),
                PollFd::new(&extra, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, timespec_until(deadline).as_ref()) {
                Ok(0) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok((false, false));
                    }
                }
                Ok(_) => return Ok((!fds[0].revents().is_empty(), !fds[1].revents().is_empty())),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads every queued event without blocking and hands each to `f`.
    pub(crate) fn drain(&mut self, f: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        let mut reader = inotify::Reader::new(&self.fd, &mut self.buf);
        loop {
            match reader.next() {
                Ok(ev) => f(Event {
                    wd: ev.wd(),
                    mask: ev.events(),
                    name: ev
                        .file_name()
                        .map_or(OsStr::new(""), |n| OsStr::from_bytes(n.to_bytes())),
                }),
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// `poll` on one descriptor for readability, retried on EINTR, until `deadline`.
pub(crate) fn poll_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, timespec_until(deadline).as_ref()) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The time left until `deadline`, as `poll` takes it (`None`: forever).
fn timespec_until(deadline: Option<Instant>) -> Option<Timespec> {
    deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        Timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reports_a_created_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut ino = Inotify::new().unwrap();
        let wd = ino.add_watch(dir.path(), WatchFlags::CREATE).unwrap();
        assert!(!ino.poll(Some(Instant::now())).unwrap());
        std::fs::write(dir.path().join("x.log"), b"").unwrap();
        assert!(ino
            .poll(Some(Instant::now() + Duration::from_secs(5)))
            .unwrap());
        let mut seen = Vec::new();
        ino.drain(&mut |e| {
            seen.push((e.wd, e.mask.contains(ReadFlags::CREATE), e.name.to_owned()))
        })
        .unwrap();
        assert_eq!(seen, vec![(wd, true, "x.log".into())]);
    }
}
