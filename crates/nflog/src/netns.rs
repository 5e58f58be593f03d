//! Network namespaces: which one a handle names, and opening a subscription inside one and
//! coming back.
//!
//! An NFLOG socket belongs to the network namespace it was created in, so a reader of many
//! containers creates each socket inside the container's namespace. `setns(2)` moves only the
//! calling thread; [`Builder::open_in`] moves it there and back around the open, so the thread
//! can go on serving other namespaces. The namespace's identity ([`NamespaceId`]) lets a caller
//! keep one socket per namespace when the process it learnt the namespace from (dnsmasq) is
//! replaced.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::error::{Error, ErrorKind};
use crate::socket::{BindRequest, Builder, Subscription};

/// The calling thread's own network namespace (`/proc/self` would be the main thread's).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// The identity of a namespace: the device and inode number of its nsfs file, the same for
/// every handle (`/proc/PID/ns/net`, a bind mount under `/run/netns`) of one namespace and
/// different for two namespaces that are alive at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceId {
    dev: u64,
    ino: u64,
}

impl NamespaceId {
    /// The identity of the namespace `handle` names (an open `/proc/PID/ns/net` or
    /// `/run/netns/NAME`). Of any other file it is that file's device and inode, which equal no
    /// namespace's.
    pub fn of(handle: impl AsFd) -> io::Result<NamespaceId> {
        let stat = rustix::fs::fstat(handle)?;
        Ok(NamespaceId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }

    /// The identity of the calling thread's network namespace.
    pub fn of_current_thread() -> io::Result<NamespaceId> {
        NamespaceId::of(File::open(THREAD_NETNS)?)
    }

    /// An identity received from elsewhere (another process's [`NamespaceId::device`] and
    /// [`NamespaceId::inode`]).
    pub fn from_parts(device: u64, inode: u64) -> NamespaceId {
        NamespaceId {
            dev: device,
            ino: inode,
        }
    }

    /// The device of the namespace's nsfs file.
    pub fn device(self) -> u64 {
        self.dev
    }

    /// The namespace's inode number, the number `ip netns identify` and `ls -l /proc/PID/ns`
    /// show (`net:[4026531840]`). Unique among the namespaces alive at one time; one of a
    /// namespace that is gone can be reused.
    pub fn inode(self) -> u64 {
        self.ino
    }
}

/// Whether two namespace handles name the same namespace (same nsfs device and inode).
pub fn same_namespace(a: impl AsFd, b: impl AsFd) -> io::Result<bool> {
    Ok(NamespaceId::of(a)? == NamespaceId::of(b)?)
}

impl Builder {
    /// Opens and binds the subscription inside the network namespace `netns` (an open
    /// `/proc/PID/ns/net` or `/run/netns/NAME`), then moves the calling thread back to the
    /// namespace it was in. The socket stays in `netns`; the thread does not.
    ///
    /// The path set with [`Builder::netns`] plays no part here.
    ///
    /// Errors: those of [`Builder::open`] (the thread is back home when they come);
    /// [`ErrorKind::Netns`] when the thread's own namespace cannot be opened or `netns` cannot
    /// be entered (the thread never left); [`ErrorKind::NetnsReturn`] when the thread entered
    /// `netns` but cannot return. That one is fatal for the caller: the thread is stranded in
    /// the other namespace, and every socket it opens from then on would be created there.
    pub fn open_in(&self, netns: &File) -> Result<Subscription, Error> {
        self.open_in_with(netns, Builder::open_here)
    }

    /// [`Builder::request_here`] inside the network namespace `netns`, the calling thread moved
    /// there and back as [`Builder::open_in`] does (with the same errors, `NetnsReturn`
    /// included). The privileged half of an open whose [`Builder::finish`] may run elsewhere.
    pub fn request_in(&self, netns: &File) -> Result<BindRequest, Error> {
        self.open_in_with(netns, Builder::request_here)
    }

    /// [`Builder::open_in`] with the open itself given, so that a test can make the return fail.
    pub(crate) fn open_in_with<T>(
        &self,
        netns: &File,
        open: impl FnOnce(&Builder) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let home = File::open(THREAD_NETNS).map_err(|e| {
            Error::io(
                ErrorKind::Netns,
                format!("opening the thread's own network namespace {THREAD_NETNS}"),
                e,
            )
        })?;
        let home_id = NamespaceId::of(&home).map_err(|e| {
            Error::io(
                ErrorKind::Netns,
                format!("reading the identity of {THREAD_NETNS}"),
                e,
            )
        })?;
        move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network)).map_err(
            |e| {
                Error::io(
                    ErrorKind::Netns,
                    "entering the network namespace",
                    io::Error::from(e),
                )
            },
        )?;
        let opened = open(self);
        let back = move_into_link_name_space(home.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(io::Error::from)
            .and_then(|()| match NamespaceId::of_current_thread()? {
                now if now == home_id => Ok(()),
                _ => Err(io::Error::other(
                    "setns(2) succeeded but the thread is in another network namespace",
                )),
            });
        match back {
            // The subscription (if any) is dropped: its socket is closed.
            Err(e) => Err(Error::io(
                ErrorKind::NetnsReturn,
                "returning to the thread's own network namespace after opening the NFLOG \
                 socket; the thread is still in the other namespace",
                e,
            )),
            Ok(()) => opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};

    #[test]
    fn one_namespace_has_one_identity() {
        let a = File::open("/proc/thread-self/ns/net").unwrap();
        let b = File::open("/proc/self/ns/net").unwrap();
        assert!(same_namespace(&a, &b).unwrap());
        let here = NamespaceId::of_current_thread().unwrap();
        assert_eq!(here, NamespaceId::of(&a).unwrap());
        // The number `ls -l /proc/self/ns/net` shows.
        let link = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_eq!(
            link.to_str().unwrap(),
            format!("net:[{}]", here.inode()),
            "inode of the namespace"
        );
        // Another namespace type of the same thread is another namespace.
        let uts = File::open("/proc/thread-self/ns/uts").unwrap();
        assert!(!same_namespace(&a, &uts).unwrap());
    }

    #[test]
    fn a_handle_that_is_no_network_namespace_is_not_entered() {
        let home = NamespaceId::of_current_thread().unwrap();
        let uts = File::open("/proc/thread-self/ns/uts").unwrap();
        let err = Subscription::builder().open_in(&uts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Netns, "{err}");
        assert_eq!(NamespaceId::of_current_thread().unwrap(), home);
    }

    /// The return is what cannot be allowed to fail silently: drop CAP_SYS_ADMIN while inside
    /// (setns needs it in both namespaces' owners) and the error must be `NetnsReturn`.
    #[test]
    fn a_failed_return_is_its_own_error() {
        if !capabilities(None)
            .unwrap()
            .effective
            .contains(CapabilitySet::SYS_ADMIN)
        {
            eprintln!("skipped: needs CAP_SYS_ADMIN");
            return;
        }
        // A thread of its own: it drops a capability and is left in another namespace.
        let result = std::thread::spawn(|| {
            // Entering our own namespace is a real setns(2); the return then fails the same way
            // as from a container's.
            let netns = File::open("/proc/thread-self/ns/net").unwrap();
            let opened = Subscription::builder().open_in_with(&netns, |_| -> Result<(), Error> {
                let mut caps = capabilities(None).unwrap();
                caps.effective.remove(CapabilitySet::SYS_ADMIN);
                set_capabilities(None, caps).unwrap();
                Err(Error::new(ErrorKind::Io, "not opened"))
            });
            opened.map(|_| ()).map_err(|e| e.kind())
        })
        .join()
        .unwrap();
        assert_eq!(result, Err(ErrorKind::NetnsReturn));
    }
}
