//! Opening a file inside a directory without following a symlink (or `..`) out of it.
//!
//! The state directory is writable by people and programs that shield-watch, running as root,
//! must not serve: an unprivileged owner of the directory, and through dnsmasq and the audit
//! log a container. A symlink `audit.jsonl -> /root/secret` planted there must not make root
//! read the secret for them. [`open_beneath`] resolves a relative path with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` against a directory descriptor: a symlink that
//! stays inside the directory still works, one that leads out (absolute, or through `..`) is
//! refused with an [`io::Error`] carrying an [`Escape`]. The directory itself is opened by
//! [`open_dir`], which does follow symlinks: the operator named it.
//!
//! Kernels without `openat2` (before 5.6, or a seccomp filter that hides it) get the strict
//! fallback: each component is opened with `O_NOFOLLOW`, so every symlink is refused there.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat, openat2, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How [`open_beneath`] opens a file. Every mode adds `O_CLOEXEC` and `O_NOCTTY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Open {
    /// Read only, with `O_NONBLOCK` so that a FIFO planted in the directory cannot block the
    /// open (the flag does nothing to a regular file). Callers check the file type.
    Read,
    /// As [`Open::Read`], and the last component must not be a symbolic link at all, not even
    /// one that stays inside (the follower tracks files by name and identity): refused with an
    /// [`Escape`] too.
    ReadNoFollow,
    /// A directory, read only (`O_DIRECTORY`).
    Directory,
    /// Write only in append mode, created empty when missing (mode 0666 less the umask, as
    /// `File::create` does). Never truncates. With `O_NONBLOCK`: a FIFO planted in its place
    /// fails the open (no reader) instead of blocking it; callers check the file type.
    CreateAppend,
}

impl Open {
    fn flags(self) -> OFlags {
        let common = OFlags::CLOEXEC | OFlags::NOCTTY;
        match self {
            Open::Read => common | OFlags::RDONLY | OFlags::NONBLOCK,
            Open::ReadNoFollow => common | OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW,
            Open::Directory => common | OFlags::RDONLY | OFlags::DIRECTORY,
            Open::CreateAppend => {
                common | OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NONBLOCK
            }
        }
    }

    /// `openat2` insists on a zero mode unless it creates.
    fn mode(self) -> Mode {
        match self {
            Open::CreateAppend => Mode::from(0o666),
            Open::Read | Open::ReadNoFollow | Open::Directory => Mode::empty(),
        }
    }
}

/// The payload of the [`io::Error`] (kind `PermissionDenied`) by which [`open_beneath`] refuses
/// a path that would leave its directory: a symlink pointing out of it, an absolute symlink, a
/// `..` that climbs above it, a `/proc` magic link; on kernels without `openat2`, any symlink.
#[derive(Debug)]
pub struct Escape {
    path: PathBuf,
}

impl Escape {
    /// The refused path, relative to the directory it was opened beneath.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The refusal inside `err`, when `err` is one.
    pub fn of(err: &io::Error) -> Option<&Escape> {
        err.get_ref()?.downcast_ref::<Escape>()
    }

    fn error(path: &Path) -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            Escape {
                path: path.to_path_buf(),
            },
        )
    }
}

impl fmt::Display for Escape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused {}: a symlink (or `..`) leading out of the directory",
            self.path.display()
        )
    }
}

impl std::error::Error for Escape {}

/// Opens the directory `path` to open files beneath it. Symlinks in `path` itself are followed:
/// the operator chose it. Read access to the directory is needed, as for listing it.
pub fn open_dir(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(path, Open::Directory.flags(), Mode::empty())?;
    Ok(File::from(fd))
}

/// Opens `path`, relative to the directory `dir`, without leaving that directory on the way.
///
/// A refusal is an [`io::Error`] of kind `PermissionDenied` whose payload is an [`Escape`]
/// (test with [`Escape::of`]); a missing file is `NotFound` as usual. An absolute `path` is
/// refused too.
pub fn open_beneath(dir: impl AsFd, path: impl AsRef<Path>, how: Open) -> io::Result<File> {
    let path = path.as_ref();
    let dir = dir.as_fd();
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    // The kernel answers EAGAIN when a concurrent rename could have let a `..` escape; it asks
    // for a retry. A few are plenty: an attacker cannot make it fail forever without also
    // renaming forever, and then giving up is the right answer.
    let mut tries = 0;
    loop {
        match openat2(dir, path, how.flags(), how.mode(), resolve) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(Errno::XDEV) => return Err(Escape::error(path)),
            // O_NOFOLLOW met a symbolic link as the last component.
            Err(Errno::LOOP) if how == Open::ReadNoFollow => return Err(Escape::error(path)),
            Err(Errno::AGAIN) if tries < 8 => tries += 1,
            // No openat2 here (old kernel, or a seccomp filter that answers EPERM for it).
            Err(Errno::NOSYS | Errno::PERM) => return open_nofollow(dir, path, how),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The fallback without `openat2`: walk the path one component at a time with `O_NOFOLLOW`,
/// refusing every symlink and every `..`.
fn open_nofollow(dir: BorrowedFd<'_>, path: &Path, how: Open) -> io::Result<File> {
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(Escape::error(path)),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, parents)) = names.split_last() else {
        // The directory itself.
        return Ok(File::from(openat(dir, ".", how.flags(), Mode::empty())?));
    };
    let mut at: Option<OwnedFd> = None;
    for name in parents {
        let base = at.as_ref().map_or(dir, |fd| fd.as_fd());
        let fd = openat(
            base,
            *name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        match kind {
            rustix::fs::FileType::Directory => at = Some(fd),
            rustix::fs::FileType::Symlink => return Err(Escape::error(path)),
            _ => return Err(Errno::NOTDIR.into()),
        }
    }
    let base = at.as_ref().map_or(dir, |fd| fd.as_fd());
    match openat(base, *last, how.flags() | OFlags::NOFOLLOW, how.mode()) {
        Ok(fd) => Ok(File::from(fd)),
        // O_NOFOLLOW on a symlink (O_DIRECTORY answers ENOTDIR for one).
        Err(Errno::LOOP) => Err(Escape::error(path)),
        Err(Errno::NOTDIR) if is_symlink(base, last) => Err(Escape::error(path)),
        Err(e) => Err(e.into()),
    }
}

fn is_symlink(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> bool {
    rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{symlink, FileTypeExt as _};

    fn read(file: io::Result<File>) -> io::Result<String> {
        let mut s = String::new();
        file?.read_to_string(&mut s)?;
        Ok(s)
    }

    fn assert_escape(result: io::Result<impl fmt::Debug>, path: &str) {
        let err = result.expect_err("opened a path out of the directory");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        let escape = Escape::of(&err).unwrap_or_else(|| panic!("not an escape: {err:?}"));
        assert_eq!(escape.path(), Path::new(path));
        assert!(err.to_string().contains(path), "{err}");
    }

    /// A state dir with a secret beside it and every kind of way out planted in it.
    fn planted() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("secret"), "secret\n").unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir_all(state.join("policy")).unwrap();
        std::fs::write(state.join("dns.tier"), "dnsmasq-live\n").unwrap();
        symlink(tmp.path().join("secret"), state.join("absolute")).unwrap();
        symlink("../secret", state.join("relative")).unwrap();
        symlink("../../secret", state.join("policy/live")).unwrap();
        symlink("dns.tier", state.join("inside")).unwrap();
        symlink("../dns.tier", state.join("policy/up-inside")).unwrap();
        symlink(tmp.path(), state.join("outdir")).unwrap();
        symlink("/proc/self/cwd", state.join("magic")).unwrap();
        symlink(tmp.path().join("new"), state.join("dangling")).unwrap();
        (tmp, state)
    }

    fn check_refusals(open: impl Fn(&Path, Open) -> io::Result<File>) {
        for path in [
            "absolute",
            "relative",
            "policy/live",
            "outdir/secret",
            "../secret",
            "magic",
        ] {
            assert_escape(open(Path::new(path), Open::Read), path);
        }
        assert_escape(open(Path::new("outdir"), Open::Directory), "outdir");
        // Creating through a dangling symlink would make root create a file anywhere.
        assert_escape(open(Path::new("dangling"), Open::CreateAppend), "dangling");
        let missing = open(Path::new("missing"), Open::Read).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(Escape::of(&missing).is_none());
    }

    #[test]
    fn symlinks_out_are_refused_and_inside_ones_followed() {
        let (tmp, state) = planted();
        // The directory path itself may go through a symlink.
        symlink(&state, tmp.path().join("via-link")).unwrap();
        let dir = open_dir(&tmp.path().join("via-link")).unwrap();
        let open = |p: &Path, how| open_beneath(&dir, p, how);
        assert_eq!(
            read(open(Path::new("dns.tier"), Open::Read)).unwrap(),
            "dnsmasq-live\n"
        );
        assert_eq!(
            read(open(Path::new("inside"), Open::Read)).unwrap(),
            "dnsmasq-live\n"
        );
        assert_eq!(
            read(open(Path::new("policy/up-inside"), Open::Read)).unwrap(),
            "dnsmasq-live\n"
        );
        check_refusals(open);
        assert!(!tmp.path().join("new").exists());
        assert_escape(
            open_beneath(&dir, tmp.path().join("secret"), Open::Read),
            &tmp.path().join("secret").to_string_lossy(),
        );
        // No symbolic link at all as the last component, not even one that stays inside.
        assert_escape(open(Path::new("inside"), Open::ReadNoFollow), "inside");
        assert_escape(open(Path::new("absolute"), Open::ReadNoFollow), "absolute");
        assert_eq!(
            read(open(Path::new("dns.tier"), Open::ReadNoFollow)).unwrap(),
            "dnsmasq-live\n"
        );
    }

    #[test]
    fn the_fallback_without_openat2_refuses_every_symlink() {
        let (tmp, state) = planted();
        let dir = open_dir(&state).unwrap();
        let open = |p: &Path, how| open_nofollow(dir.as_fd(), p, how);
        assert_eq!(
            read(open(Path::new("dns.tier"), Open::Read)).unwrap(),
            "dnsmasq-live\n"
        );
        assert_escape(open(Path::new("inside"), Open::Read), "inside");
        check_refusals(open);
        assert!(!tmp.path().join("new").exists());
    }

    #[test]
    fn create_append_creates_and_appends_without_truncating() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        for _ in 0..2 {
            let mut file = open_beneath(&dir, "audit.jsonl", Open::CreateAppend).unwrap();
            file.write_all(b"x\n").unwrap();
        }
        assert_eq!(
            std::fs::read(tmp.path().join("audit.jsonl")).unwrap(),
            b"x\nx\n"
        );
    }

    #[test]
    fn a_planted_fifo_does_not_block_the_open() {
        let tmp = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("dns.tier"),
            rustix::fs::FileType::Fifo,
            Mode::from(0o600),
            0,
        )
        .unwrap();
        let dir = open_dir(tmp.path()).unwrap();
        let file = open_beneath(&dir, "dns.tier", Open::Read).unwrap();
        assert!(file.metadata().unwrap().file_type().is_fifo());
    }
}
