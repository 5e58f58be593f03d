//! The `shield-watch` process a scene runs: started, waited for, stopped, its output read line
//! by line on threads of its own.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use super::{slice, DEADLINE};
use crate::error::{Error, ErrorKind};

/// The shield-watch process, its stdout and stderr read line by line on their own threads.
#[derive(Debug)]
pub(super) struct Watch {
    child: Child,
    pub(super) stdout: Receiver<String>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Watch {
    /// Starts `binary` with `what` (what to watch: `--state-dir ...` or `--state-root ...`),
    /// then `args`.
    pub(super) fn spawn(binary: &Path, what: &[OsString], args: &[&str]) -> Result<Watch, Error> {
        let mut command = Command::new(binary);
        command
            .args(what)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A Ctrl-C at the terminal reaches only the scene's owner, which stops the watcher
            // itself, in order, during teardown.
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            Error::new(
                ErrorKind::Spawn,
                binary.display().to_string(),
                e.to_string(),
            )
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(ErrorKind::Spawn, "shield-watch pipes", ""));
        };
        Ok(Watch {
            child,
            stdout: lines_of(stdout),
            stderr: lines_of(stderr),
            stderr_seen: Vec::new(),
        })
    }

    /// Waits for `shield-watch: ready (...)` on stderr; fails with its stderr if it exits first.
    pub(super) fn wait_ready(&mut self) -> Result<String, Error> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.stderr.recv_timeout(slice(deadline)) {
                Ok(line) => {
                    let ready = line.starts_with("shield-watch: ready (");
                    self.stderr_seen.push(line.clone());
                    if ready {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(Instant::now() + DEADLINE)?;
                    return Err(Error::new(
                        ErrorKind::Command,
                        format!("shield-watch exited before it was ready ({status})"),
                        self.stderr_seen.join("\n"),
                    ));
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "shield-watch printed no ready line within 20s",
                        self.stderr_seen.join("\n"),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The stderr lines read so far, without reading more.
    pub(super) fn seen(&self) -> &[String] {
        &self.stderr_seen
    }

    /// stderr so far (without waiting).
    pub(super) fn stderr_lines(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.clone()
    }

    /// All of stderr, up to its end (the process has exited) or the deadline.
    pub(super) fn stderr_until_closed(&mut self, deadline: Instant) -> Vec<String> {
        loop {
            match self.stderr.recv_timeout(slice(deadline)) {
                Ok(line) => self.stderr_seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.stderr_seen.clone()
    }

    pub(super) fn signal(&self, signal: Signal) {
        // The child is not reaped before drop, so the pid cannot have been reused.
        let _ = kill_process(Pid::from_child(&self.child), signal);
    }

    pub(super) fn wait(&mut self, deadline: Instant) -> Result<ExitStatus, Error> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "shield-watch did not exit",
                    "",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines `reader` yields (lossily decoded), read on a thread of their own, until it ends.
pub fn lines_of(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}
