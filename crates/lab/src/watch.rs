//! A running `shield-watch`: started, waited for, read line by line, stopped. The one driver of
//! the binary that the scene, the CLI's integration tests, its benches and xtask share.
//!
//! stderr is read on a thread of its own from the spawn on (a host's start-up says more than a
//! pipe holds before the ready line); stdout is read the same way once asked
//! ([`Watch::read_stdout`]), left unread (a stopped pager), or handed to the caller as the raw
//! pipe ([`Watch::take_stdout`], for a bench that counts bytes). Every wait has a deadline; the
//! exit is waited for on a pidfd, not by polling.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{kill_process, pidfd_open, Pid, PidfdFlags, Signal};

use crate::error::{Error, ErrorKind};

/// How the one line shield-watch writes once every source is ready starts.
pub const READY: &str = "shield-watch: ready (";

/// How long after stdout ended the rest of stderr is waited for, to say why in an error.
const LAST_WORDS: Duration = Duration::from_secs(2);

/// A running shield-watch (or a wrapper that executes it); killed and reaped on drop.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    /// Readable once the process has exited.
    exited: OwnedFd,
    stdout: Stdout,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
}

/// What has become of the process's stdout.
#[derive(Debug)]
enum Stdout {
    /// Nobody reads it: once the pipe is full, the process's writes block.
    Unread(ChildStdout),
    /// Read line by line on a thread of its own.
    Lines(Receiver<String>),
    /// Closed by us, or taken by the caller.
    Gone,
}

impl Watch {
    /// Starts `command` with no stdin and both outputs piped to us; returns at once, with stderr
    /// being read and stdout unread. The command's own settings (arguments, environment,
    /// process group) are kept.
    pub fn spawn(mut command: Command) -> Result<Watch, Error> {
        let program = command.get_program().to_string_lossy().into_owned();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Spawn, program.as_str(), e.to_string()))?;
        let pipes = (child.stdout.take(), child.stderr.take());
        // The child is not reaped before `Watch` drops, so its pid cannot have been reused.
        let exited = pidfd_open(Pid::from_child(&child), PidfdFlags::empty());
        let ((Some(stdout), Some(stderr)), Ok(exited)) = (pipes, exited) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                ErrorKind::Spawn,
                program,
                "no pipes or no pidfd to the process",
            ));
        };
        Ok(Watch {
            child,
            exited,
            stdout: Stdout::Unread(stdout),
            stderr: lines_of(stderr),
            stderr_seen: Vec::new(),
        })
    }

    /// Starts reading stdout line by line, if nobody does yet.
    pub fn read_stdout(&mut self) {
        if let Stdout::Unread(stdout) = std::mem::replace(&mut self.stdout, Stdout::Gone) {
            self.stdout = Stdout::Lines(lines_of(stdout));
        }
    }

    /// The raw stdout pipe, for a caller that reads it itself; `None` once it is being read.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        match std::mem::replace(&mut self.stdout, Stdout::Gone) {
            Stdout::Unread(stdout) => Some(stdout),
            other => {
                self.stdout = other;
                None
            }
        }
    }

    /// Stops reading stdout, as `| head` does after reading enough: the pipe closes (once its
    /// reading thread wakes for the next line).
    pub fn close_stdout(&mut self) {
        self.stdout = Stdout::Gone;
    }

    /// Waits for shield-watch's ready line ([`READY`]) on stderr; returns it.
    pub fn wait_ready(&mut self, deadline: Instant) -> Result<String, Error> {
        self.wait_stderr_for(|line| line.starts_with(READY), deadline, "it was ready")
    }

    /// Waits for a stderr line matching `want`; returns it. Fails with everything seen on
    /// stderr when the deadline passes or stderr ends first.
    pub fn wait_stderr(
        &mut self,
        want: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> Result<String, Error> {
        self.wait_stderr_for(want, deadline, "the stderr line waited for")
    }

    /// [`Watch::wait_stderr`]; `awaited` says in the error what did not come.
    fn wait_stderr_for(
        &mut self,
        want: impl Fn(&str) -> bool,
        deadline: Instant,
        awaited: &str,
    ) -> Result<String, Error> {
        loop {
            match self.stderr.recv_timeout(left(deadline)) {
                Ok(line) => {
                    let found = want(&line);
                    self.stderr_seen.push(line.clone());
                    if found {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Instant::now() + LAST_WORDS).map_or_else(
                        |_| "still running".to_string(),
                        |(status, _)| status.to_string(),
                    );
                    return Err(Error::new(
                        ErrorKind::Command,
                        format!("shield-watch exited before {awaited} ({status})"),
                        self.stderr_seen.join("\n"),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("shield-watch wrote nothing on stderr saying {awaited}"),
                        self.stderr_seen.join("\n"),
                    ))
                }
            }
        }
    }

    /// The next stdout line, within `deadline`. Fails with [`ErrorKind::Timeout`] when none came
    /// in time (the process still runs: try again, or give up), with [`ErrorKind::Command`] when
    /// stdout ended (the process exited or closed it).
    pub fn next_line(&mut self, deadline: Instant) -> Result<String, Error> {
        let Stdout::Lines(stdout) = &self.stdout else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "shield-watch's stdout is not being read",
                "",
            ));
        };
        match stdout.recv_timeout(left(deadline)) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(Error::new(
                ErrorKind::Timeout,
                "no line on shield-watch's stdout",
                "",
            )),
            Err(RecvTimeoutError::Disconnected) => {
                self.stderr_until_closed(Instant::now() + LAST_WORDS);
                Err(Error::new(
                    ErrorKind::Command,
                    "shield-watch's stdout ended",
                    format!("stderr: {:#?}", self.stderr_seen),
                ))
            }
        }
    }

    /// The next `n` stdout lines, all within `deadline`. The error says which came.
    pub fn lines(&mut self, n: usize, deadline: Instant) -> Result<Vec<String>, Error> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match self.next_line(deadline) {
                Ok(line) => got.push(line),
                Err(e) => {
                    let more = format!("{} of {n} lines came: {got:#?}", got.len());
                    return Err(self.with_stderr(e, &more));
                }
            }
        }
        Ok(got)
    }

    /// Up to `n` stdout lines, as many as come within `limit`.
    pub fn lines_within(&mut self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < n {
            match self.next_line(deadline) {
                Ok(line) => got.push(line),
                Err(_) => break,
            }
        }
        got
    }

    /// Stdout lines up to and including the first one matching `last`, within `deadline`.
    pub fn lines_until(
        &mut self,
        last: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> Result<Vec<String>, Error> {
        let mut got = Vec::new();
        loop {
            match self.next_line(deadline) {
                Ok(line) => {
                    let done = last(&line);
                    got.push(line);
                    if done {
                        return Ok(got);
                    }
                }
                Err(e) => {
                    let more = format!(
                        "no matching line after {} lines (last: {:?})",
                        got.len(),
                        got.last()
                    );
                    return Err(self.with_stderr(e, &more));
                }
            }
        }
    }

    /// Every stdout line until stdout ends (the process exited), within `deadline`; none when
    /// stdout is not being read.
    pub fn rest(&mut self, deadline: Instant) -> Result<Vec<String>, Error> {
        let mut got = Vec::new();
        if !matches!(self.stdout, Stdout::Lines(_)) {
            return Ok(got);
        }
        loop {
            match self.next_line(deadline) {
                Ok(line) => got.push(line),
                Err(e) if e.kind() == ErrorKind::Command => return Ok(got),
                Err(e) => {
                    let more = format!("stdout did not end; {} lines came", got.len());
                    return Err(self.with_stderr(e, &more));
                }
            }
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        // The child is not reaped before drop, so the pid cannot have been reused.
        kill_process(Pid::from_child(&self.child), signal)
            .map_err(|e| Error::io(format!("sending {signal:?} to shield-watch"), e.into()))
    }

    /// SIGTERM, then [`Watch::wait_exit`].
    pub fn stop(&mut self, deadline: Instant) -> Result<(ExitStatus, Vec<String>), Error> {
        self.signal(Signal::TERM)?;
        self.wait_exit(deadline)
    }

    /// Waits for the process to exit within `deadline`; returns its status and everything it
    /// wrote on stderr (up to the end, or what came by the deadline).
    pub fn wait_exit(&mut self, deadline: Instant) -> Result<(ExitStatus, Vec<String>), Error> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok((status, self.stderr_until_closed(deadline)));
            }
            let left = Timespec::try_from(left(deadline)).unwrap_or(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(&self.exited, PollFlags::IN)];
            let ready = match rustix::event::poll(&mut fds, Some(&left)) {
                Ok(ready) => ready,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("waiting for shield-watch to exit", e.into())),
            };
            if ready == 0 && Instant::now() >= deadline {
                let seen = self.stderr_now().join("\n");
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "shield-watch did not exit",
                    seen,
                ));
            }
        }
    }

    /// Its exit status, if it has exited (reaping it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child
            .try_wait()
            .map_err(|e| Error::io("waiting for shield-watch", e))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines read so far, without reading more.
    pub fn stderr_seen(&self) -> &[String] {
        &self.stderr_seen
    }

    /// The stderr lines that have come so far, without waiting.
    pub fn stderr_now(&mut self) -> &[String] {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        &self.stderr_seen
    }

    /// All of stderr, up to its end (the process has exited) or `deadline`.
    fn stderr_until_closed(&mut self, deadline: Instant) -> Vec<String> {
        while let Ok(line) = self.stderr.recv_timeout(left(deadline)) {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.clone()
    }

    /// `e` with `more` and the stderr seen so far added to its detail.
    fn with_stderr(&mut self, e: Error, more: &str) -> Error {
        let more = format!("{more}; stderr: {:#?}", self.stderr_now());
        e.within("shield-watch", &more)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What is left of `deadline` from now (zero once it passed).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
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
