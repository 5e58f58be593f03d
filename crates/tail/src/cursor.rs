//! Cursors (a file identity plus an offset) and the named-cursor file that persists them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};
use crate::identity::{FileId, Fingerprint, FINGERPRINT_MAX};

/// A position in one particular file: device and inode, the byte offset just after the last
/// record delivered, and a fingerprint of the file's first bytes.
///
/// The fingerprint is what tells a re-used inode (a new file that got the number of a deleted
/// one) from the file the cursor was taken in: it is the length (at most 256) and a 64-bit
/// FNV-1a hash of the file's first bytes, as far as they had been read.
///
/// The text form (`Display`/`FromStr`) is one line: `v2:DEV:INO:BIRTH:OFFSET:FPLEN:FPHASH`
/// (`v1:DEV:INO:OFFSET:FPLEN:FPHASH`, without the birth time, is still read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// The file's birth time in nanoseconds (statx `btime`), 0 where the filesystem does not
    /// record one. With the inode number it tells a file deleted and re-created while we were
    /// down (same inode, maybe the same first bytes) from the file the cursor was taken in.
    pub(crate) birth: u64,
    pub(crate) offset: u64,
    pub(crate) fp: Fingerprint,
}

impl Cursor {
    /// The byte offset in the file just after the last record delivered.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether this cursor was taken in the file `m` describes (never, for a cursor that names
    /// no file).
    pub fn is_in(&self, m: &std::fs::Metadata) -> bool {
        (self.dev, self.ino) != (0, 0) && self.file_id().same_file(&FileId::of(m))
    }

    /// A cursor that names no file: resuming from it reads the path from its start.
    pub(crate) const NONE: Cursor = Cursor {
        dev: 0,
        ino: 0,
        birth: 0,
        offset: 0,
        fp: Fingerprint::EMPTY,
    };

    /// A position in the file `id`.
    pub(crate) fn at(id: FileId, offset: u64, fp: Fingerprint) -> Cursor {
        Cursor {
            dev: id.dev,
            ino: id.ino,
            birth: id.birth,
            offset,
            fp,
        }
    }

    /// The identity of the file this cursor was taken in.
    pub(crate) fn file_id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
            birth: self.birth,
        }
    }

    /// A cursor that names no file, only a moment: resuming from it reads every file born
    /// after it. (Backed off by 10 ms: birth times come from the kernel's coarse clock.)
    pub(crate) fn since(t: std::time::SystemTime) -> Cursor {
        let nanos = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .saturating_sub(10_000_000);
        Cursor {
            birth: nanos,
            ..Cursor::NONE
        }
    }

    pub(crate) fn names_a_file(&self) -> bool {
        self.dev != 0 || self.ino != 0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v2:{}:{}:{}:{}:{}:{:016x}",
            self.dev, self.ino, self.birth, self.offset, self.fp.len, self.fp.hash
        )
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Cursor, Error> {
        let bad = || Error::new(ErrorKind::BadCursor, format!("{s:?}"));
        let mut it = s.trim().split(':');
        let version = it.next();
        if version != Some("v1") && version != Some("v2") {
            return Err(bad());
        }
        let mut num = |radix: u32| -> Result<u64, Error> {
            let field = it.next().ok_or_else(bad)?;
            u64::from_str_radix(field, radix).map_err(|_| bad())
        };
        let dev = num(10)?;
        let ino = num(10)?;
        let birth = if version == Some("v2") { num(10)? } else { 0 };
        let offset = num(10)?;
        let len = num(10)?;
        let hash = num(16)?;
        if it.next().is_some() || len > FINGERPRINT_MAX as u64 {
            return Err(bad());
        }
        Ok(Cursor {
            dev,
            ino,
            birth,
            offset,
            fp: Fingerprint {
                len: len as u16,
                hash,
            },
        })
    }
}

/// Named cursors persisted in one small text file, saved atomically.
///
/// The format is one `NAME CURSOR` line per entry under a header line; names are
/// percent-encoded outside `[A-Za-z0-9._-]`, so any string can be a name.
pub struct CursorFile;

const HEADER: &str = "# shield-tail cursors v1";

impl CursorFile {
    /// Loads the cursors saved in `path`. A missing file is an empty map.
    pub fn load(path: &Path) -> Result<BTreeMap<String, Cursor>, Error> {
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::io("read cursor file", path, e)),
        };
        let bad = |line: usize| {
            Error::new(
                ErrorKind::BadCursorFile,
                format!("{} line {line}", path.display()),
            )
        };
        let text = String::from_utf8(text).map_err(|_| bad(0))?;
        let mut map = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, cursor) = line.split_once(' ').ok_or_else(|| bad(i + 1))?;
            let name = percent_decode(name).ok_or_else(|| bad(i + 1))?;
            let cursor: Cursor = cursor.parse().map_err(|_| bad(i + 1))?;
            map.insert(name, cursor);
        }
        Ok(map)
    }

    /// Saves `cursors` to `path` atomically: a temporary file in the same directory is written
    /// and fsynced, renamed over `path`, and the directory is fsynced, so a crash leaves either
    /// the old or the new set, never a torn one.
    pub fn save(path: &Path, cursors: &BTreeMap<String, Cursor>) -> Result<(), Error> {
        let mut text = String::with_capacity(64 + cursors.len() * 64);
        text.push_str(HEADER);
        text.push('\n');
        for (name, cursor) in cursors {
            text.push_str(&percent_encode(name));
            text.push(' ');
            text.push_str(&cursor.to_string());
            text.push('\n');
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file_name = path.file_name().ok_or_else(|| {
            Error::new(
                ErrorKind::BadCursorFile,
                format!("{}: no file name", path.display()),
            )
        })?;
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("write cursor file", &tmp, e));
        }
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename cursor file to", path, e));
        }
        // The rename is only durable once the directory entry is.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", dir, e))
    }
}

fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let c = Cursor {
            dev: 2049,
            ino: 131_073,
            birth: 1_790_000_000_123_456_789,
            offset: 4096,
            fp: Fingerprint::of(b"hello\n"),
        };
        let s = c.to_string();
        assert!(
            s.starts_with("v2:2049:131073:1790000000123456789:4096:6:"),
            "{s}"
        );
        assert_eq!(s.parse::<Cursor>().unwrap(), c);
    }

    #[test]
    fn version_1_cursors_are_still_read_with_an_unknown_birth_time() {
        let c: Cursor = "v1:2049:131073:4096:6:0000000000000001".parse().unwrap();
        assert_eq!((c.dev, c.ino, c.birth, c.offset), (2049, 131_073, 0, 4096));
        // Unknown is not different.
        assert!(c.file_id().same_file(&FileId {
            dev: 2049,
            ino: 131_073,
            birth: 42
        }));
        let born: Cursor = "v2:2049:131073:7:4096:6:0000000000000001".parse().unwrap();
        assert!(born.file_id().same_file(&FileId {
            dev: 2049,
            ino: 131_073,
            birth: 7
        }));
        assert!(born.file_id().same_file(&FileId {
            dev: 2049,
            ino: 131_073,
            birth: 0
        }));
        assert!(!born.file_id().same_file(&FileId {
            dev: 2049,
            ino: 131_073,
            birth: 8
        }));
        assert!(!born.file_id().same_file(&FileId {
            dev: 2049,
            ino: 131_074,
            birth: 7
        }));
    }

    #[test]
    fn malformed_text_is_rejected_not_panicked_on() {
        for s in [
            "",
            "v1",
            "v3:1:2:3:0:0",
            "v2:1:2:3:0:0",
            "v1:1:2:3:0",
            "v1:1:2:3:999:0",
            "v1:a:2:3:0:0",
            "v1:1:2:3:0:0:9",
        ] {
            assert_eq!(
                s.parse::<Cursor>().unwrap_err().kind(),
                ErrorKind::BadCursor,
                "{s}"
            );
        }
    }

    #[test]
    fn cursor_file_saves_and_loads_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursors");
        assert!(CursorFile::load(&path).unwrap().is_empty());
        let mut map = BTreeMap::new();
        map.insert("dns".to_string(), Cursor::NONE);
        map.insert(
            "a b%é".to_string(),
            Cursor {
                dev: 1,
                ino: 2,
                birth: 4,
                offset: 3,
                fp: Fingerprint::of(b"abc"),
            },
        );
        CursorFile::save(&path, &map).unwrap();
        assert_eq!(CursorFile::load(&path).unwrap(), map);
        // Only the final file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_cursor_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursors");
        fs::write(&path, "dns v1:garbage\n").unwrap();
        assert_eq!(
            CursorFile::load(&path).unwrap_err().kind(),
            ErrorKind::BadCursorFile
        );
    }
}
