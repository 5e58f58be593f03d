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
//!
//! A file opened for reading must also belong where it is: in a directory of another user than
//! root, a regular file is read only when that user owns it, or root owns it and it has no
//! other name ([`NotOwned`] otherwise). A hard link is the one way `RESOLVE_BENEATH` cannot
//! see to bring a file of someone else into the directory (where `fs.protected_hardlinks` is
//! 0, any file at all); a file made in place, by the owner or by a root process (logrotate,
//! dnsmasq, shield-watch creating a missing log), passes. A directory of root's is written
//! only by root: everything in it passes.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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

/// The payload of the [`io::Error`] (kind `PermissionDenied`) by which [`open_beneath`] refuses
/// to read a regular file that does not belong in its directory (see the module's text): owned
/// by a third user, or root's and also named elsewhere (a hard link).
#[derive(Debug)]
pub struct NotOwned {
    path: PathBuf,
    owner: u32,
    dir_owner: u32,
}

impl NotOwned {
    /// The refusal inside `err`, when `err` is one.
    pub fn of(err: &io::Error) -> Option<&NotOwned> {
        err.get_ref()?.downcast_ref::<NotOwned>()
    }

    /// The refusal, naming the file `path` (a caller that names it its own way: in full, say,
    /// where it was opened by a relative name).
    pub fn at(&self, path: &Path) -> String {
        format!("refused {}: {}", path.display(), self.why())
    }

    /// Why it was refused, without the path.
    fn why(&self) -> String {
        if self.owner == 0 {
            format!(
                "a hard link to a file of root's, in a directory of uid {}",
                self.dir_owner
            )
        } else {
            format!(
                "owned by uid {}, in a directory of uid {} (only the directory's owner's files and root's are read)",
                self.owner, self.dir_owner
            )
        }
    }
}

impl fmt::Display for NotOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.at(&self.path))
    }
}

impl std::error::Error for NotOwned {}

/// Whether `file`, opened beneath `dir`, may be read (see the module's text).
fn belongs(dir: BorrowedFd<'_>, file: &File, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let m = file.metadata()?;
    if !m.is_file() {
        return Ok(());
    }
    let dir_owner = rustix::fs::fstat(dir)?.st_uid;
    let owner = m.uid();
    if dir_owner == 0 || owner == dir_owner || (owner == 0 && m.nlink() <= 1) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        NotOwned {
            path: path.to_path_buf(),
            owner,
            dir_owner,
        },
    ))
}

/// A directory held open, and the path it was opened at (for messages). Whatever is read in
/// it goes through the descriptor, never through the path again: a directory renamed away, or
/// another (or a symlink) put in its place, cannot redirect a reader to someone else's files.
/// Calls that take only a path (listing, inotify) reach the same directory through
/// [`Dir::through_fd`].
#[derive(Clone, Debug)]
pub struct Dir {
    file: Arc<File>,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path` ([`open_dir`]: symlinks in `path` are followed, the
    /// operator chose it).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = path.as_ref();
        Ok(Dir {
            file: Arc::new(open_dir(path)?),
            path: path.to_path_buf(),
        })
    }

    /// Opens the directory at `path`, an absolute path that holds no symbolic link (as
    /// `canonicalize` gives): where one has been put in place of a component since, the open
    /// fails (`RESOLVE_NO_SYMLINKS`; without `openat2`, `O_NOFOLLOW` on each component) instead
    /// of following it. For a path checked component by component before.
    pub fn open_resolved(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = path.as_ref();
        let Ok(relative) = path.strip_prefix("/") else {
            return Err(Escape::error(path));
        };
        let root = open_dir(Path::new("/"))?;
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let how = Open::Directory;
        let file = match openat2(
            &root,
            relative,
            how.flags(),
            how.mode(),
            ResolveFlags::NO_SYMLINKS,
        ) {
            Ok(fd) => File::from(fd),
            Err(Errno::LOOP) => return Err(Escape::error(path)),
            Err(Errno::NOSYS | Errno::PERM) => open_nofollow(root.as_fd(), relative, how)?,
            Err(e) => return Err(e.into()),
        };
        Ok(Dir {
            file: Arc::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Opens the directory `name` beneath `self` ([`open_beneath`]: never through a symlink
    /// out of `self`).
    pub fn open_beneath(&self, name: impl AsRef<Path>) -> io::Result<Dir> {
        let name = name.as_ref();
        Ok(Dir {
            file: Arc::new(open_beneath(self, name, Open::Directory)?),
            path: self.path.join(name),
        })
    }

    /// Opens `name` beneath this directory ([`open_beneath`]).
    pub fn open_file(&self, name: impl AsRef<Path>, how: Open) -> io::Result<File> {
        open_beneath(self, name, how)
    }

    /// The path it was opened at (it may name another directory by now).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path that reaches this very directory through its descriptor (`/proc/self/fd/N`),
    /// for calls that take a path.
    pub fn through_fd(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Its device and inode.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        let m = self.file.metadata()?;
        Ok((m.dev(), m.ino()))
    }

    /// Whether the entry at its path is still this directory (not renamed away, removed, or
    /// replaced by another directory or a symlink).
    pub fn still_at_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(id) = self.identity() else {
            return false;
        };
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == id)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Opens the directory `path` to open files beneath it. Symlinks in `path` itself are followed:
/// the operator chose it. Read access to the directory is needed, as for listing it.
pub fn open_dir(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(path, Open::Directory.flags(), Mode::empty())?;
    Ok(File::from(fd))
}

/// Opens `path`, relative to the directory `dir`, without leaving that directory on the way;
/// a regular file opened for reading must belong in `dir` (see the module's text).
///
/// A refusal is an [`io::Error`] of kind `PermissionDenied` whose payload is an [`Escape`]
/// (test with [`Escape::of`]) or a [`NotOwned`]; a missing file is `NotFound` as usual. An
/// absolute `path` is refused too.
pub fn open_beneath(dir: impl AsFd, path: impl AsRef<Path>, how: Open) -> io::Result<File> {
    let path = path.as_ref();
    let dir = dir.as_fd();
    let file = resolve_beneath(dir, path, how)?;
    if matches!(how, Open::Read | Open::ReadNoFollow) {
        // The owner is judged against the directory the file is in, not `dir`.
        match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => belongs(dir, &file, path)?,
            Some(parent) => {
                let parent = resolve_beneath(dir, parent, Open::Directory)?;
                belongs(parent.as_fd(), &file, path)?
            }
        }
    }
    Ok(file)
}

fn resolve_beneath(dir: BorrowedFd<'_>, path: &Path, how: Open) -> io::Result<File> {
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

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    /// Runs as root (these tests make files of other users): a file is read only when the
    /// owner of its directory owns it, or root owns it and it has no other name; in a
    /// directory of root's, anything is.
    #[test]
    fn a_file_of_a_third_user_or_a_hard_link_to_roots_is_refused_in_a_users_directory() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to make files of other users");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        chown(&state, 12345);
        let file = |name: &str, uid: u32| {
            let path = state.join(name);
            std::fs::write(&path, format!("{name}\n")).unwrap();
            chown(&path, uid);
            path
        };
        file("own", 12345);
        file("roots", 0);
        file("third", 23456);
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "secret\n").unwrap();
        std::fs::hard_link(&secret, state.join("linked")).unwrap();
        let own_linked = tmp.path().join("own-elsewhere");
        std::fs::hard_link(state.join("own"), &own_linked).unwrap();
        let dir = open_dir(&state).unwrap();
        let held = Dir::open(&state).unwrap();
        type Opener<'a> = &'a dyn Fn(&str) -> io::Result<File>;
        let by_fd = |n: &str| open_beneath(&dir, n, Open::Read);
        let by_held = |n: &str| held.open_file(n, Open::ReadNoFollow);
        let opens: [Opener; 2] = [&by_fd, &by_held];
        for open in opens {
            assert_eq!(read(open("own")).unwrap(), "own\n");
            assert_eq!(read(open("roots")).unwrap(), "roots\n");
            for (name, says) in [("third", "owned by uid 23456"), ("linked", "a hard link")] {
                let err = open(name).expect_err(name);
                assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
                assert!(NotOwned::of(&err).is_some(), "{err:?}");
                assert!(err.to_string().contains(says), "{err}");
                assert!(err.to_string().contains("directory of uid 12345"), "{err}");
            }
        }
        // Directories are not judged (nobody can give a directory away or link one), and
        // writing is not reading.
        std::fs::create_dir(state.join("sub")).unwrap();
        chown(&state.join("sub"), 23456);
        assert!(open_beneath(&dir, "sub", Open::Directory).is_ok());
        // In a directory of root's, a file of any user is read.
        chown(&state, 0);
        assert_eq!(
            read(open_beneath(&dir, "third", Open::Read)).unwrap(),
            "third\n"
        );
        assert_eq!(
            read(open_beneath(&dir, "linked", Open::Read)).unwrap(),
            "secret\n"
        );
    }

    #[test]
    fn a_held_directory_is_read_through_its_descriptor_whatever_its_path_becomes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let other = tmp.path().join("other");
        for (dir, text) in [(&state, "ours\n"), (&other, "theirs\n")] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("log"), text).unwrap();
        }
        let held = Dir::open(&state).unwrap();
        assert!(held.still_at_path());
        std::fs::rename(&state, tmp.path().join("moved")).unwrap();
        symlink(&other, &state).unwrap();
        assert!(!held.still_at_path());
        assert_eq!(held.path(), state);
        assert_eq!(read(held.open_file("log", Open::Read)).unwrap(), "ours\n");
        let listed: Vec<_> = std::fs::read_dir(held.through_fd())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listed, ["log"]);
        // A resolved path with a symlink put in it since is not opened.
        assert_escape(Dir::open_resolved(&state), state.to_str().unwrap());
        assert!(Dir::open_resolved(&other).is_ok());
    }
}
