//! The crate's error: what went wrong, in words an operator can act on.

use std::fmt;
use std::io;

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The kernel offers no `AF_NETLINK` / `NETLINK_NETFILTER` socket (not Linux, a seccomp
    /// filter, or nfnetlink not built).
    NoNetlink,
    /// The kernel refused the bind with `EPERM`. `group_held_by` is the netlink port id of the
    /// socket that already holds the group, when `/proc/net/netfilter/nfnetlink_log` lists one;
    /// `None` means the caller lacks `CAP_NET_ADMIN` in the namespace's owning user namespace.
    PermissionDenied {
        /// Port id of the socket bound to the group (usually its process id).
        group_held_by: Option<u32>,
    },
    /// Entering the network namespace given to [`Builder::netns`](crate::Builder::netns) or
    /// [`Builder::open_in`](crate::Builder::open_in) failed (or, for `open_in`, opening the
    /// thread's own namespace to come back to); the thread is where it was.
    Netns,
    /// [`Builder::open_in`](crate::Builder::open_in) entered the namespace but could not bring
    /// the thread back to its own. **Fatal for the caller**: the thread stays in the other
    /// namespace, and every socket it creates from then on would be created there.
    NetnsReturn,
    /// A system call on the socket failed.
    Io,
    /// The kernel answered with something this codec does not accept (malformed message,
    /// unexpected error code during configuration).
    Protocol,
}

/// An error of this crate: a kind, what we were doing, and the underlying OS error if any.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    group: Option<u16>,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, context: impl Into<String>) -> Error {
        Error {
            kind,
            context: context.into(),
            group: None,
            source: None,
        }
    }

    pub(crate) fn io(kind: ErrorKind, context: impl Into<String>, source: io::Error) -> Error {
        Error {
            kind,
            context: context.into(),
            group: None,
            source: Some(source),
        }
    }

    pub(crate) fn with_group(mut self, group: u16) -> Error {
        self.group = Some(group);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The OS error number behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.group.map_or_else(
            || "the NFLOG group".to_string(),
            |g| format!("NFLOG group {g}"),
        );
        match self.kind {
            ErrorKind::PermissionDenied {
                group_held_by: Some(port),
            } => write!(
                f,
                "{}: permission denied: {group} is already bound by another socket \
                 (netlink port id {port}, usually the holder's process id); an NFLOG group \
                 has one subscriber per network namespace",
                self.context
            )?,
            ErrorKind::PermissionDenied {
                group_held_by: None,
            } => write!(
                f,
                "{}: permission denied binding {group}: CAP_NET_ADMIN is missing in the user \
                 namespace that owns the network namespace (no other socket holds the group)",
                self.context
            )?,
            ErrorKind::NoNetlink => write!(
                f,
                "{}: netlink is not available (no AF_NETLINK/NETLINK_NETFILTER socket)",
                self.context
            )?,
            _ => f.write_str(&self.context)?,
        }
        // The OS error is not repeated here: `source()` hands it out, and a reporter that walks
        // the chain would print it twice.
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_messages_name_the_two_causes() {
        let held = Error::new(
            ErrorKind::PermissionDenied {
                group_held_by: Some(4242),
            },
            "binding",
        )
        .with_group(100);
        let text = held.to_string();
        assert!(text.contains("NFLOG group 100 is already bound"), "{text}");
        assert!(text.contains("4242"), "{text}");

        let cap = Error::new(
            ErrorKind::PermissionDenied {
                group_held_by: None,
            },
            "binding",
        )
        .with_group(7);
        let text = cap.to_string();
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert!(text.contains("NFLOG group 7"), "{text}");
    }

    #[test]
    fn display_leaves_the_source_to_source() {
        use std::error::Error as _;
        let err = Error::io(
            ErrorKind::Netns,
            "entering network namespace /run/netns/x",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        let cause = err
            .source()
            .expect("the OS error is the source")
            .to_string();
        let text = err.to_string();
        assert_eq!(text, "entering network namespace /run/netns/x");
        assert!(!text.contains(&cause), "{text} repeats {cause}");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    }
}
