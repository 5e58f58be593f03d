//! `--metrics-textfile PATH`: the metrics as a file for node_exporter's textfile collector.
//!
//! The file is replaced, never rewritten in place: the text goes to `PATH.tmp` (which the
//! collector, reading `*.prom`, ignores), mode 0644, and is renamed over `PATH`, so a scrape
//! reads the old file or the new one, never half of one. It is written at start (every
//! blocking series at 0) and then at most once a second, only when the text changed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Metrics;

/// The most often the file is replaced.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Writes `metrics` to `path` now, then whenever they change, at most once per [`INTERVAL`],
/// until the process ends.
pub fn run(path: PathBuf, metrics: Metrics) {
    let mut last = String::new();
    let mut failing = false;
    loop {
        let text = metrics.classic_text();
        if text != last {
            match replace(&path, text.as_bytes()) {
                Ok(()) => {
                    last = text;
                    failing = false;
                }
                Err(err) if !failing => {
                    // Said once until it works again; tried again at the next interval.
                    crate::diag::line(format_args!(
                        "cannot write the metrics textfile {}: {err}",
                        path.display()
                    ));
                    failing = true;
                }
                Err(_) => {}
            }
        }
        std::thread::sleep(INTERVAL);
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it, mode 0644, renamed over it.
pub fn replace(path: &Path, text: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temporary)?;
    // The umask may have taken bits away: node_exporter often runs as another user.
    file.set_permissions(fs::Permissions::from_mode(0o644))?;
    file.write_all(text)?;
    file.sync_data()?;
    drop(file);
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_whole_with_mode_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shield.prom");
        fs::write(&path, "old\n").unwrap();
        replace(&path, b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(!dir.path().join("shield.prom.tmp").exists());
    }
}
