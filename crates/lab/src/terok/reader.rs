//! terok-shield's clearance reader (`nflog-reader.py`), started by hand with `--emit=json`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use super::TerokShield;
use crate::error::{Error, ErrorKind};

/// terok-shield's NFLOG reader for one container, holding NFLOG group 100 in its namespace
/// while it runs; stopped (its whole process group) on drop.
///
/// Started as the bridge hook starts it (`python3 -I nflog-reader.py STATE NAME --emit=...
/// --annotations={} --container-id=ID --hub-socket=`, in a session of its own), it asks `podman
/// inspect` for the init pid and re-executes itself under `nsenter -t PID -n`, so the process that
/// binds the group is a child of the one started here: stopping means signalling the group
/// (as reader_hook.py `_reap_reader` does), never the head alone, which would orphan the child.
/// Each blocked connection it sees becomes a JSON line on its stdout (`{"type":"pending",...}`)
/// and an `{"action":"blocked",...}` line in `STATE/audit.jsonl`.
#[derive(Debug)]
pub struct TerokReader {
    child: Child,
    lines: Receiver<serde_json::Value>,
    stopped: bool,
}

impl TerokReader {
    pub(crate) fn start(
        shield: &TerokShield,
        state_dir: &Path,
        name: &str,
        id: &str,
    ) -> Result<TerokReader, Error> {
        let stderr_path = state_dir.join("reader.log");
        let stderr = File::create(&stderr_path)
            .map_err(|e| Error::io(format!("creating {}", stderr_path.display()), e))?;
        let mut command = std::process::Command::new(shield.python());
        command
            .arg("-I")
            .arg(shield.reader_script())
            .arg(state_dir)
            .arg(name)
            .args([
                "--emit=json",
                "--annotations={}",
                &format!("--container-id={id}"),
                "--hub-socket=",
            ]);
        shield.set_env(&mut command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Spawn, "nflog-reader.py", e.to_string()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "unparsed": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let mut reader = TerokReader {
            child,
            lines,
            stopped: false,
        };
        // `container_started` is printed once the NFLOG socket is bound (nflog_reader.py:473).
        match reader.next_event(Duration::from_secs(15)) {
            Some(v) if v["type"] == "container_started" => Ok(reader),
            other => {
                let _ = reader.stop();
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                Err(Error::new(
                    ErrorKind::Timeout,
                    "nflog-reader.py did not say container_started within 15s",
                    format!("first line {other:?}; stderr: {}", stderr.trim()),
                ))
            }
        }
    }

    /// The pid of the reader's head process (its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next JSON line the reader printed, waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// SIGTERM to the reader's process group, SIGKILL after 2 s, as terok's poststop does; waits
    /// for the head. The reader prints `container_exited` on its way out.
    pub fn stop(&mut self) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let Some(pgid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) else {
            return Ok(());
        };
        let _ = kill_process_group(pgid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while group_alive(pgid) && Instant::now() < deadline {
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(20));
        }
        if group_alive(pgid) {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        let _ = self.child.wait();
        Ok(())
    }
}

/// Whether any process of the group is still there (zombies of ours aside).
fn group_alive(pgid: Pid) -> bool {
    let pgid = pgid.as_raw_nonzero().get();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // Fields after the command: state ppid pgrp ...
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
            })
        })
        .unwrap_or(false)
}

impl Drop for TerokReader {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
