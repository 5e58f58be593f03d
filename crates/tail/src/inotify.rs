//! A thin, safe wrapper over Linux inotify (libc), plus a blocking wait with a deadline.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// One inotify instance. Events are only wake-up hints for us: the follower always re-checks
/// the file system itself, so a lost or merged event can delay but never lose a line.
pub(crate) struct Inotify {
    fd: OwnedFd,
    buf: Box<EventBuf>,
}

#[repr(C, align(8))]
struct EventBuf([u8; 16 * 1024]);

/// One decoded event.
pub(crate) struct Event<'a> {
    pub(crate) wd: i32,
    pub(crate) mask: u32,
    pub(crate) name: &'a OsStr,
}

impl Inotify {
    pub(crate) fn new() -> io::Result<Inotify> {
        // SAFETY: plain syscall; the returned descriptor is checked before use.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Inotify {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            buf: Box::new(EventBuf([0; 16 * 1024])),
        })
    }

    pub(crate) fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    pub(crate) fn rm_watch(&self, wd: i32) {
        // SAFETY: plain syscall; a stale wd only yields EINVAL, which is fine to ignore.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Blocks until events are readable or `deadline` passes; returns whether events are ready.
    pub(crate) fn poll(&self, deadline: Option<Instant>) -> io::Result<bool> {
        poll_readable(self.fd.as_raw_fd(), deadline)
    }

    /// Reads every queued event without blocking and hands each to `f`.
    pub(crate) fn drain(&mut self, f: &mut dyn FnMut(Event<'_>)) -> io::Result<()> {
        loop {
            let buf = &mut self.buf.0;
            // SAFETY: reading into a buffer we own, bounded by its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(err),
                }
            }
            let n = n as usize;
            if n == 0 {
                return Ok(());
            }
            let header = std::mem::size_of::<libc::inotify_event>();
            let mut at = 0;
            while at + header <= n {
                // SAFETY: the kernel wrote a whole event header at `at` (bounds checked above);
                // read_unaligned copes with any alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
                let name_start = at + header;
                let name_end = (name_start + ev.len as usize).min(n);
                let raw = &buf[name_start..name_end];
                let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
                f(Event {
                    wd: ev.wd,
                    mask: ev.mask,
                    name: OsStr::from_bytes(name),
                });
                at = name_end;
            }
        }
    }
}

/// `ppoll` on one descriptor for readability, retried on EINTR, until `deadline`.
pub(crate) fn poll_readable(fd: i32, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts;
        let tsp = match deadline {
            None => std::ptr::null(),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                ts = timespec(left);
                &ts as *const libc::timespec
            }
        };
        // SAFETY: `pfd` and `ts` live across the call; a null timeout means "forever".
        let r = unsafe { libc::ppoll(&mut pfd, 1, tsp, std::ptr::null()) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if r > 0 {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_created_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut ino = Inotify::new().unwrap();
        let wd = ino.add_watch(dir.path(), libc::IN_CREATE).unwrap();
        assert!(!ino.poll(Some(Instant::now())).unwrap());
        std::fs::write(dir.path().join("x.log"), b"").unwrap();
        assert!(ino
            .poll(Some(Instant::now() + Duration::from_secs(5)))
            .unwrap());
        let mut seen = Vec::new();
        ino.drain(&mut |e| seen.push((e.wd, e.mask & libc::IN_CREATE != 0, e.name.to_owned())))
            .unwrap();
        assert_eq!(seen, vec![(wd, true, "x.log".into())]);
    }
}
