//! The follower's error: what it was doing, and the OS error behind it.

use std::fmt;
use std::io;
use std::path::Path;

/// What kind of failure; see [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A system call failed (open, read, stat, inotify, rename, fsync).
    Io,
    /// The followed path exists but is not a regular file (a directory, a socket, ...).
    NotRegularFile,
    /// A cursor's text form could not be parsed.
    BadCursor,
    /// A cursor file is not in the format [`crate::CursorFile::save`] writes.
    BadCursorFile,
    /// A name in the followed directory is a symbolic link that leads out of it (or, on a
    /// kernel without `openat2`, any symbolic link): it is refused, never followed.
    Escapes,
    /// A file in the followed directory does not belong there: another user's, or a hard link
    /// to root's ([`crate::NotOwned`]): refused, never read.
    NotOwned,
}

/// A failed follower operation. `Display` names the operation and the path; the OS error
/// behind it is its [`source`](std::error::Error::source) (also [`Error::io_error`]), not part
/// of the message, so that a caller printing the chain says it once.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    what: String,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, what: impl Into<String>) -> Error {
        Error {
            kind,
            what: what.into(),
            source: None,
        }
    }

    pub(crate) fn io(what: &str, path: &Path, err: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            what: format!("{what} {}", path.display()),
            source: Some(err),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The OS error behind an [`ErrorKind::Io`] failure, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            what: String::new(),
            source: Some(err),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Io => f.write_str(if self.what.is_empty() {
                "I/O error"
            } else {
                &self.what
            }),
            ErrorKind::NotRegularFile => write!(f, "not a regular file: {}", self.what),
            ErrorKind::BadCursor => write!(f, "bad cursor: {}", self.what),
            ErrorKind::BadCursorFile => write!(f, "bad cursor file: {}", self.what),
            ErrorKind::NotOwned => f.write_str(&self.what),
            ErrorKind::Escapes => write!(
                f,
                "refused {}: a symbolic link out of its directory",
                self.what
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_operation_and_the_source_is_the_os_error() {
        use std::error::Error as _;
        let os = io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        let e = Error::io("open", Path::new("/x/y"), os);
        assert_eq!(e.kind(), ErrorKind::Io);
        // The OS error is the source, so the message does not repeat it.
        assert_eq!(e.to_string(), "open /x/y");
        let source = e.source().expect("the OS error is the source").to_string();
        assert!(source.contains("os error 13"), "{source}");
        assert_eq!(Error::from(io::Error::other("x")).to_string(), "I/O error");
        let e = Error::new(ErrorKind::BadCursor, "\"zz\"");
        assert_eq!(e.to_string(), "bad cursor: \"zz\"");
    }
}
