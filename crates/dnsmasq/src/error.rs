//! The crate's error type: reading the allow-list failed.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file or directory of the allow-list exists but could not be read.
    Read,
    /// `policy` exists in the state directory but is not a directory.
    NotADirectory,
    /// A file or directory of the allow-list is a symlink (or holds a `..`) leading out of the
    /// state directory: not read, so that root does not read another file for whoever can
    /// write the state directory.
    Refused,
}

/// An allow-list could not be loaded. Carries the path and the I/O cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    path: PathBuf,
    source: std::io::Error,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, path: PathBuf, source: std::io::Error) -> Self {
        Error { kind, path, source }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file or directory that could not be read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Read => write!(f, "cannot read {}: {}", self.path.display(), self.source),
            ErrorKind::NotADirectory => {
                write!(f, "{} is not a directory", self.path.display())
            }
            ErrorKind::Refused => write!(
                f,
                "refused {}: a symlink (or `..`) leading out of the state directory",
                self.path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
