//! Follows one log file the way `tail -F` should: rotation-aware, inotify-driven, and losing nothing.
//!
//! The main type is [`Follower`]: [`Follower::open`] a path (which need not exist yet) with a
//! [`Start`] position, then alternate [`Follower::read_available`], which hands the complete
//! lines available to a callback without blocking (the callback may say stop; a few MiB are
//! read per call at most), and [`Follower::wait`], which sleeps on inotify (or a short stat
//! poll where inotify is unavailable) until the file may have changed. A [`Cursor`]
//! (device, inode, offset, fingerprint of the first bytes) marks the position after each record;
//! [`CursorFile`] persists named cursors atomically so a restart resumes with nothing lost and
//! nothing twice. [`FollowSet::watch_names`] and [`FollowSet::watch_dirs`] report
//! changes in directories (allow-list reloads).
//!
//! **Invariant:** a line is delivered only once complete (ends in `\n`), exactly once, in file
//! order; the one exception is a file's unterminated last line, delivered when the file is known
//! to be rotated away or truncated. Linux only (inotify, `/proc/self/fd`).
//!
//! ```
//! use shield_tail::{Follower, Options, Record, Start};
//! use std::io::Write;
//! use std::ops::ControlFlow;
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
//!     ControlFlow::Continue(()) // or Break(()): stop here, the rest comes next time
//! })?;
//! assert_eq!(lines, [b"query[A] example.test from 127.0.0.1".to_vec()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod beneath;
mod cursor;
mod decompress;
mod error;
mod file;
mod follower;
mod history;
mod identity;
mod inotify;
mod lines;
mod set;
mod watches;

pub use beneath::{open_beneath, open_dir, Dir, Escape, NotOwned, Open};
pub use cursor::{Cursor, CursorFile};
pub use decompress::Compression;
pub use error::{Error, ErrorKind};
pub use follower::{Follower, Options, Record, Start, Stats};
pub use history::{History, HistoryFile, HistoryLine, HistoryReader, HistoryStats, Window};
pub use set::{FollowSet, Key, Waker};

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Every module of this crate (a file under `src/`, its submodules counted as itself) with
    /// the modules it names through `crate::`.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let module = |p: &Path| {
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            first.trim_end_matches(".rs").to_string()
        };
        let modules: BTreeSet<String> = files.iter().map(|p| module(p)).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let from = module(file);
            let text = std::fs::read_to_string(file).unwrap();
            let uses = graph.entry(from.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) && name != from {
                    uses.insert(name);
                }
            }
        }
        graph
    }

    #[test]
    fn modules_import_each_other_without_a_cycle() {
        let graph = imports();
        assert!(graph.contains_key("follower") && graph["follower"].contains("file"));
        // Depth-first search from every module, failing on a module met again on the path.
        fn visit(
            m: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) {
            if let Some(at) = path.iter().position(|p| p == m) {
                panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
            }
            if !done.insert(m.to_string()) {
                return;
            }
            path.push(m.to_string());
            for next in graph.get(m).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for m in graph.keys() {
            visit(m, &graph, &mut Vec::new(), &mut done);
        }
    }
}
