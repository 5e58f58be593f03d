//! Follows one log file the way `tail -F` should: rotation-aware, inotify-driven, and losing nothing.
//!
//! The main type is [`Follower`]: [`Follower::open`] a path (which need not exist yet) with a
//! [`Start`] position, then alternate [`Follower::read_available`], which hands every complete
//! line to a callback without blocking, and [`Follower::wait`], which sleeps on inotify (or a
//! short stat poll where inotify is unavailable) until the file may have changed. A [`Cursor`]
//! (device, inode, offset, fingerprint of the first bytes) marks the position after each record;
//! [`CursorFile`] persists named cursors atomically so a restart resumes with nothing lost and
//! nothing twice. [`DirWatcher`] reports changes in a few directories (allow-list reloads).
//!
//! **Invariant:** a line is delivered only once complete (ends in `\n`), exactly once, in file
//! order; the one exception is a file's unterminated last line, delivered when the file is known
//! to be rotated away or truncated. Linux only (inotify, `/proc/self/fd`).
//!
//! ```
//! use shield_tail::{Follower, Options, Record, Start};
//! use std::io::Write;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("dnsmasq.log");
//! let mut follower = Follower::open(&path, Start::End, Options::default())?;
//! std::fs::File::create(&path)?.write_all(b"query[A] example.test from 127.0.0.1\npart")?;
//! let mut lines = Vec::new();
//! follower.read_available(&mut |r| {
//!     if let Record::Line { bytes, .. } = r {
//!         lines.push(bytes.to_vec());
//!     }
//! })?;
//! assert_eq!(lines, [b"query[A] example.test from 127.0.0.1".to_vec()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod beneath;
mod cursor;
mod decompress;
mod dirwatch;
mod error;
mod file;
mod follower;
mod history;
mod inotify;
mod lines;
mod set;
mod watches;

pub use beneath::{open_beneath, open_dir, Escape, Open};
pub use cursor::{Cursor, CursorFile};
pub use decompress::Compression;
pub use dirwatch::DirWatcher;
pub use error::{Error, ErrorKind};
pub use follower::{Follower, Options, Record, Start, Stats};
pub use history::{History, HistoryFile, HistoryLine, HistoryReader, HistoryStats, Window};
pub use set::{FollowSet, Key, Waker};
