//! What makes a file the same file (`FileId`: device, inode, birth time; `Fingerprint`: its
//! first bytes) and where it stands in the order files were born (`Born`). Shared by cursors
//! and the files the follower holds; depends on neither.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;

/// What makes a file the same file: device, inode, and birth time (nanoseconds since the
/// epoch, 0 where the filesystem records none). An inode number alone can be re-used by a new
/// file once the old one is deleted; the birth time tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) birth: u64,
}

impl FileId {
    /// The identity of the file `m` describes.
    pub(crate) fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            birth: birth_nanos(m).unwrap_or(0),
        }
    }

    /// Whether two identities can be the same file (an unknown birth time is not a difference).
    pub(crate) fn same_file(&self, other: &FileId) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
            && (self.birth == 0 || other.birth == 0 || self.birth == other.birth)
    }
}

/// Identities of many files (every name in a directory can be one), each looked up in constant
/// time: a directory its owner filled with thousands of names must not make each look at it
/// cost thousands of comparisons per name.
#[derive(Debug, Default)]
pub(crate) struct FileIds(HashMap<(u64, u64), u64>);

impl FileIds {
    pub(crate) fn insert(&mut self, id: FileId) {
        self.0.insert((id.dev, id.ino), id.birth);
    }

    /// Whether a file that can be the same file as `id` is in the set (see
    /// [`FileId::same_file`]; one inode number holds one file at a time, the latest inserted).
    pub(crate) fn holds(&self, id: &FileId) -> bool {
        self.0.get(&(id.dev, id.ino)).is_some_and(|&birth| {
            id.same_file(&FileId {
                dev: id.dev,
                ino: id.ino,
                birth,
            })
        })
    }
}

impl FromIterator<FileId> for FileIds {
    fn from_iter<I: IntoIterator<Item = FileId>>(ids: I) -> FileIds {
        let mut set = FileIds::default();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

/// Where a file stands in the order files were created in: its birth time (its change time
/// where the filesystem records no birth), then its inode number. ext4 stamps a birth with the
/// kernel's coarse clock, so files created within a few milliseconds of each other share one;
/// the inode number, allocated in increasing order within a directory while nothing is
/// deleted, orders those.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Born {
    pub(crate) nanos: u64,
    pub(crate) ino: u64,
}

impl Born {
    pub(crate) fn of(m: &std::fs::Metadata) -> Born {
        let nanos = birth_nanos(m).unwrap_or_else(|| {
            let secs = u64::try_from(m.ctime()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000)
                .saturating_add(u64::try_from(m.ctime_nsec()).unwrap_or(0))
        });
        Born {
            nanos,
            ino: m.ino(),
        }
    }
}

/// The birth time in nanoseconds (statx `btime`, which std's `created` reads), if recorded.
pub(crate) fn birth_nanos(m: &std::fs::Metadata) -> Option<u64> {
    let since = m
        .created()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    Some(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)).filter(|&n| n != 0)
}

/// How many leading bytes of a file its fingerprint covers at most.
pub(crate) const FINGERPRINT_MAX: usize = 256;

/// FNV-1a over a file's first bytes. Its algorithm must never change: cursors saved by one
/// version are read by the next (which is why this is not `std`'s `DefaultHasher`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) len: u16,
    pub(crate) hash: u64,
}

impl Fingerprint {
    pub(crate) const EMPTY: Fingerprint = Fingerprint {
        len: 0,
        hash: 0xcbf2_9ce4_8422_2325,
    };

    /// The fingerprint of exactly `bytes` (at most [`FINGERPRINT_MAX`] of them are used).
    pub(crate) fn of(bytes: &[u8]) -> Fingerprint {
        let mut fp = Fingerprint::EMPTY;
        fp.extend(bytes);
        fp
    }

    /// Extends the fingerprint with the bytes that follow the ones it covers, up to the cap.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        let room = FINGERPRINT_MAX - self.len as usize;
        let take = &bytes[..bytes.len().min(room)];
        for &b in take {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.len += take.len() as u16;
    }

    #[cfg(test)]
    pub(crate) fn is_full(&self) -> bool {
        self.len as usize >= FINGERPRINT_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_match_like_same_file() {
        let id = |ino, birth| FileId { dev: 1, ino, birth };
        let set: FileIds = [id(10, 5), id(11, 0)].into_iter().collect();
        assert!(set.holds(&id(10, 5)));
        assert!(
            set.holds(&id(10, 0)),
            "an unknown birth time is not a difference"
        );
        assert!(!set.holds(&id(10, 6)), "the inode re-used by a new file");
        assert!(set.holds(&id(11, 9)));
        assert!(!set.holds(&id(12, 5)));
    }

    #[test]
    fn fingerprint_extends_incrementally_and_caps() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
        let mut fp = Fingerprint::EMPTY;
        fp.extend(&data[..10]);
        fp.extend(&data[10..300]);
        assert_eq!(fp, Fingerprint::of(&data[..256]));
        assert!(fp.is_full());
        assert_ne!(Fingerprint::of(b"a"), Fingerprint::of(b"b"));
    }
}
