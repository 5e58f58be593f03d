//! One open file we follow: its identity, how it is opened (never through a symbolic link out
//! of its directory), and the positioned reads the follower does on it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::beneath::{Escape, NotOwned, Open};
use crate::error::{Error, ErrorKind};
use crate::identity::{Born, FileId, Fingerprint, FINGERPRINT_MAX};

/// A file we hold open and read from.
pub(crate) struct Tracked {
    pub(crate) file: File,
    pub(crate) id: FileId,
    pub(crate) born: Born,
    /// Bytes read so far (the next read starts here).
    pub(crate) read_to: u64,
    /// The byte at `read_to - 1`, to notice a truncate-then-regrow that went past `read_to`.
    pub(crate) last_byte: Option<u8>,
    /// Fingerprint of the first `min(256, read_to)` bytes (can cover more, after a resume).
    pub(crate) fp: Fingerprint,
    /// The inotify watch on this inode, if any.
    pub(crate) wd: Option<i32>,
    /// When a read last returned data: a copytruncate copy must be younger than this.
    pub(crate) last_data: Option<SystemTime>,
}

impl Tracked {
    pub(crate) fn size(&self, path: &Path) -> Result<u64, Error> {
        self.file
            .metadata()
            .map(|m| m.size())
            .map_err(|e| Error::io("stat", path, e))
    }

    /// Whether the file still has a name (a deleted file can still be read through us).
    pub(crate) fn linked(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.nlink() > 0)
    }

    /// Whether the file's first bytes are the ones `fp` was taken of.
    pub(crate) fn starts_with(&self, fp: Fingerprint) -> bool {
        matches_fingerprint(&self.file, fp)
    }
}

/// Opens `name` in `dir` for reading, refusing a symbolic link that leads out of `dir`
/// (`openat2` with `RESOLVE_BENEATH`; a kernel without it refuses every symbolic link). `dir`
/// itself may be reached through symbolic links. `Ok(None)` when there is no such file.
/// `shown_dir` is the directory as messages name it (`dir` may be `/proc/self/fd/N`).
pub(crate) fn open_tracked(
    dir: &Path,
    shown_dir: &Path,
    name: &OsStr,
) -> Result<Option<Tracked>, Error> {
    let path = shown_dir.join(name);
    let file = match open_in_dir(dir, name, Open::ReadNoFollow) {
        Ok(f) => f,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) if Escape::of(&e).is_some() => {
            return Err(Error::new(ErrorKind::Escapes, path.display().to_string()));
        }
        Err(e) if NotOwned::of(&e).is_some() => {
            let what = NotOwned::of(&e).map(|n| n.at(&path)).unwrap_or_default();
            return Err(Error::new(ErrorKind::NotOwned, what));
        }
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let m = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
    if !m.is_file() {
        return Err(Error::new(
            ErrorKind::NotRegularFile,
            path.display().to_string(),
        ));
    }
    Ok(Some(Tracked {
        file,
        id: FileId::of(&m),
        born: Born::of(&m),
        read_to: 0,
        last_byte: None,
        fp: Fingerprint::EMPTY,
        wd: None,
        last_data: None,
    }))
}

/// Opens `name` (a relative path) inside `dir` with [`crate::open_beneath`]: never through a
/// symbolic link out of `dir`. `dir` itself may be reached through symbolic links.
fn open_in_dir(dir: &Path, name: &OsStr, how: Open) -> io::Result<File> {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    crate::beneath::open_beneath(&dirfd, name, how)
}

pub(crate) fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == Errno::NOENT.raw_os_error() || code == Errno::NOTDIR.raw_os_error()
    )
}

/// Whether a sibling is a compressed rotation (logrotate `compress`): never read as text. Its
/// content, if we had not read it yet, was read through the descriptor we hold on the file it
/// was compressed from.
pub(crate) fn compressed_name(name: &OsStr) -> bool {
    const SUFFIXES: &[&[u8]] = &[
        b".gz", b".xz", b".bz2", b".zst", b".lz4", b".lzma", b".lzo", b".Z", b".zip", b".br",
    ];
    let name = name.as_bytes();
    SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether a file starts with a compressor's magic number.
pub(crate) fn compressed_content(file: &File) -> bool {
    const MAGIC: &[&[u8]] = &[
        &[0x1f, 0x8b],                   // gzip
        &[0xfd, b'7', b'z', b'X', b'Z'], // xz
        b"BZh",                          // bzip2
        &[0x28, 0xb5, 0x2f, 0xfd],       // zstd
        &[0x04, 0x22, 0x4d, 0x18],       // lz4
    ];
    let mut head = [0u8; 5];
    let got = pread_full(file, &mut head, 0).unwrap_or(0);
    MAGIC.iter().any(|m| head[..got].starts_with(m))
}

pub(crate) fn matches_fingerprint(file: &File, fp: Fingerprint) -> bool {
    let mut head = [0u8; FINGERPRINT_MAX];
    let want = fp.len as usize;
    matches!(pread_full(file, &mut head[..want], 0), Ok(n) if n == want)
        && Fingerprint::of(&head[..want]) == fp
}

/// One positioned read, retried on EINTR; EAGAIN counts as end of data.
pub(crate) fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn pread_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let n = pread(file, &mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Where `Start::End` begins: after the last `\n`, so that a line being written when we start
/// is delivered whole once finished. If that line is already over `max_line` it is dropped
/// silently (`true`): we never saw its head.
pub(crate) fn end_position(file: &File, size: u64, max_line: usize) -> io::Result<(u64, bool)> {
    if size == 0 {
        return Ok((0, false));
    }
    let window = size.min(max_line as u64 + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut hi = size;
    while hi > size - window {
        let lo = hi.saturating_sub(buf.len() as u64).max(size - window);
        let len = (hi - lo) as usize;
        let got = pread_full(file, &mut buf[..len], lo)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..got]) {
            return Ok((lo + i as u64 + 1, false));
        }
        hi = lo;
    }
    if window == size {
        Ok((0, false))
    } else {
        Ok((size, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_position_keeps_a_partial_last_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"old\nhalf").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(end_position(&f, 8, 100).unwrap(), (4, false));
        assert_eq!(end_position(&f, 4, 100).unwrap(), (4, false));
        assert_eq!(end_position(&f, 3, 100).unwrap(), (0, false));
        assert_eq!(end_position(&f, 8, 2).unwrap(), (8, true));
    }

    #[test]
    fn a_symlink_out_of_the_directory_is_refused_and_one_inside_is_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.log"), b"mine\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("a.log"))
            .unwrap();
        std::os::unix::fs::symlink("real.log", dir.path().join("b.log")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/hostname", dir.path().join("c.log"))
            .unwrap();
        // The follower takes no symbolic link at all, not even one that stays inside.
        for name in ["a.log", "b.log", "c.log"] {
            let err = open_tracked(dir.path(), dir.path(), OsStr::new(name))
                .err()
                .expect("refused");
            assert_eq!(err.kind(), ErrorKind::Escapes, "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
        // open_beneath follows one that stays inside, and no other.
        let dirfd = crate::open_dir(dir.path()).unwrap();
        assert_eq!(
            std::io::read_to_string(crate::open_beneath(&dirfd, "b.log", Open::Read).unwrap())
                .unwrap(),
            "mine\n"
        );
        for name in ["a.log", "c.log"] {
            let err = crate::open_beneath(&dirfd, name, Open::Read).unwrap_err();
            assert!(Escape::of(&err).is_some(), "{name}: {err}");
        }
        assert!(open_tracked(dir.path(), dir.path(), OsStr::new("none.log"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn compressed_rotations_are_recognised_by_name_and_by_content() {
        assert!(compressed_name(OsStr::new("dnsmasq.log.2.gz")));
        assert!(compressed_name(OsStr::new("audit.jsonl-20261129.xz")));
        assert!(!compressed_name(OsStr::new("audit.jsonl-20261129")));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(compressed_content(&File::open(&p).unwrap()));
        std::fs::write(&p, b"{\"ts\":1}\n").unwrap();
        assert!(!compressed_content(&File::open(&p).unwrap()));
    }
}
