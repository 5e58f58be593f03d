//! The real logrotate, run as a host's cron job would, on a configuration of a test's own.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};

/// One logrotate configuration with its own state file: [`Logrotate::run`] rotates now.
///
/// ```no_run
/// # fn main() -> Result<(), shield_lab::Error> {
/// let dir = std::path::Path::new("/tmp/state");
/// let rotate = shield_lab::Logrotate::new(dir, &[&dir.join("audit.jsonl")], "compress\ndelaycompress")?;
/// rotate.run()?; // logrotate --force --state DIR/logrotate.state DIR/logrotate.conf
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Logrotate {
    conf: PathBuf,
    state: PathBuf,
}

impl Logrotate {
    /// Writes `dir/logrotate.conf` rotating `logs` with the directives `body` (one per line),
    /// its state in `dir/logrotate.state`. Fails when logrotate is not installed, naming the
    /// package: a test about the real logrotate must not pass without it.
    pub fn new(dir: &Path, logs: &[&Path], body: &str) -> Result<Logrotate, Error> {
        if crate::cmd::run(&["logrotate", "--version"]).is_err() {
            return Err(Error::new(
                ErrorKind::Preflight,
                "logrotate is needed",
                "apt-get install logrotate (cargo xtask ci does)",
            ));
        }
        let conf = dir.join("logrotate.conf");
        let paths: Vec<String> = logs.iter().map(|l| l.display().to_string()).collect();
        let directives: String = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("  {l}\n"))
            .collect();
        let text = format!("{} {{\n{directives}}}\n", paths.join(" "));
        // logrotate refuses a configuration others can write.
        fs::write(&conf, text)
            .and_then(|()| fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)))
            .map_err(|e| Error::io(format!("writing {}", conf.display()), e))?;
        Ok(Logrotate {
            conf,
            state: dir.join("logrotate.state"),
        })
    }

    /// Rotates now (`--force`) and waits for logrotate to finish.
    pub fn run(&self) -> Result<(), Error> {
        let (conf, state) = (
            self.conf.display().to_string(),
            self.state.display().to_string(),
        );
        crate::cmd::run(&["logrotate", "--force", "--state", &state, &conf]).map(drop)
    }
}
