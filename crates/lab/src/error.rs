//! The lab's error: which step failed, and what the tool said about it.

use std::fmt;
use std::io;

/// What kind of step failed; see [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Not root, or a required tool is missing (see [`crate::preflight`]).
    Preflight,
    /// A command could not be started at all (not installed, fork failed).
    Spawn,
    /// A command ran and exited unsuccessfully.
    Command,
    /// A process did not become ready before its deadline.
    Timeout,
    /// An argument the lab refuses to put into a config (e.g. a domain with a newline).
    InvalidInput,
    /// Any other I/O failure (writing a config, opening a namespace file, `setns`).
    Io,
    /// The caller asked a wait to stop (see [`crate::Scene::set_interrupt`]).
    Interrupted,
}

/// A failed lab step. `Display` names the step and carries the command's stderr.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    what: String,
    detail: String,
}

impl Error {
    pub(crate) fn new(
        kind: ErrorKind,
        what: impl Into<String>,
        detail: impl Into<String>,
    ) -> Error {
        Error {
            kind,
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(what: impl Into<String>, err: io::Error) -> Error {
        Error::new(ErrorKind::Io, what, err.to_string())
    }

    /// The same error, said to have happened during `context`, with `more` added to its detail.
    pub(crate) fn within(mut self, context: &str, more: &str) -> Error {
        self.what = format!("{context}: {}", self.what);
        if !more.is_empty() {
            self.detail = match self.detail.trim() {
                "" => more.to_string(),
                detail => format!("{detail}; {more}"),
            };
        }
        self
    }

    /// The kind of step that failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = self.detail.trim();
        match self.kind {
            ErrorKind::Preflight => write!(f, "lab preflight failed: {}", self.what)?,
            ErrorKind::Spawn => write!(f, "could not start `{}`", self.what)?,
            ErrorKind::Command => write!(f, "`{}` failed", self.what)?,
            ErrorKind::Timeout => write!(f, "timed out: {}", self.what)?,
            ErrorKind::InvalidInput | ErrorKind::Io | ErrorKind::Interrupted => {
                write!(f, "{}", self.what)?
            }
        }
        if !detail.is_empty() {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_step_and_the_stderr() {
        let e = Error::new(ErrorKind::Command, "ip netns add x", "File exists\n");
        assert_eq!(e.to_string(), "`ip netns add x` failed: File exists");
        let e = Error::new(ErrorKind::Timeout, "dnsmasq did not start within 5s", "");
        assert_eq!(e.to_string(), "timed out: dnsmasq did not start within 5s");
        let e = e.within("step `x`", "stderr: []");
        assert_eq!(
            e.to_string(),
            "timed out: step `x`: dnsmasq did not start within 5s: stderr: []"
        );
        assert_eq!(e.kind(), ErrorKind::Timeout);
    }
}
