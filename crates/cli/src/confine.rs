//! Least privilege once every source is open: Landlock, capabilities, the bounding set and
//! `no_new_privs`, on every thread.
//!
//! All four are attributes of a thread on Linux, inherited by the threads it creates afterwards.
//! So `main` does its privileged work first (creating the logs, starting the nflog thread, which
//! binds the NFLOG socket, maybe inside another network namespace), then confines itself, and
//! only then starts the other threads, which inherit the confinement; the nflog thread, started
//! before, confines itself at its ready point. Every thread is therefore confined before the
//! ready line. Host-wide, what entering containers takes is kept by a separate process, the
//! nflog helper ([`Confinement::helper`], `crate::helper`). What is kept and why:
//! docs/SECURITY.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use landlock::{
    Access, AccessFs, AccessNet, LandlockStatus, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use rustix::io::Errno;
use rustix::thread::{CapabilitySet, CapabilitySets};

/// The Landlock ABI whose access rights are asked for: the newest these rules were tested
/// against. Older kernels enforce what they know (best effort, said on stderr).
const LANDLOCK_ABI: ABI = ABI::V7;

/// Following one container keeps only this: after a rotation the new file may belong to
/// another user with mode 0600 (an audit log written by the container's user), and root
/// without CAP_DAC_READ_SEARCH could not open it.
pub const KEEP_SINGLE_CONTAINER: CapabilitySet = CapabilitySet::DAC_READ_SEARCH;

/// Host-wide, the nflog helper process keeps what entering a container that starts later takes:
/// CAP_SYS_PTRACE to open `/proc/PID/ns/net` of a dnsmasq run by another user, CAP_SYS_ADMIN
/// for `setns`, CAP_NET_ADMIN to bind the NFLOG group there and size its buffer; nothing else
/// (it reads no file that needs CAP_DAC_READ_SEARCH).
pub const KEEP_HELPER: CapabilitySet = CapabilitySet::SYS_PTRACE
    .union(CapabilitySet::SYS_ADMIN)
    .union(CapabilitySet::NET_ADMIN);

/// Why the nflog helper has no Landlock domain (said in its confinement line).
const NO_LANDLOCK_FOR_HELPER: &str =
    "none for the process that enters containers' namespaces: Landlock forbids it";

/// What a confinement allows, decided before any thread starts.
#[derive(Clone)]
pub struct Confinement {
    inner: Arc<Inner>,
}

struct Inner {
    /// Read (files and listings): the state directory's parent, host-wide the state root and
    /// `/proc`.
    read: Vec<PathBuf>,
    /// Read and write: the directories of the cursor file and of the metrics textfile.
    write: Vec<PathBuf>,
    /// Capabilities kept in the effective, permitted and bounding sets.
    keep: CapabilitySet,
    /// Built once, so every thread is restricted by rules on the same directories.
    ruleset: Result<RulesetCreated, String>,
    /// What each confined thread got, for the one stderr line.
    applied: Mutex<Vec<(&'static str, Applied)>>,
}

/// What confining one thread achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    landlock: Landlock,
    /// The capabilities kept, or why they could not be set.
    capabilities: Result<CapabilitySet, String>,
    /// Whether the bounding set was reduced to the kept capabilities.
    bounding: Result<(), String>,
    no_new_privs: Result<(), String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Landlock {
    /// In force; `partial` when the kernel knows only some of the access rights asked for.
    Enforced {
        abi: i32,
        partial: bool,
    },
    /// The kernel has no Landlock, or it is not enabled at boot.
    Unavailable(&'static str),
    Failed(String),
}

impl Confinement {
    /// Decides the confinement of one container: read the directory that holds `state_dir`,
    /// write the directory of `cursor` (when given), keep [`KEEP_SINGLE_CONTAINER`].
    ///
    /// Reading is granted on the state directory's parent, not on the state directory itself:
    /// a Landlock rule binds a directory inode, and a container stopped and started again
    /// under the same name gets a new state directory, which the follower must read from its
    /// start (docs/CONTRACT.md §5). Under terok-shield the parent is `ROOT/containers`, which
    /// holds only other containers' state of the same kind.
    pub fn single_container(state_dir: &Path, written: &[&Path]) -> Confinement {
        let write = directories_of(written);
        let absolute = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let read = absolute
            .parent()
            .map_or_else(|| absolute.clone(), Path::to_path_buf);
        Confinement::new(vec![read], write, KEEP_SINGLE_CONTAINER)
    }

    /// Decides the confinement of host-wide mode: read the state root and `/proc` (the dnsmasq
    /// PID checks), write the directories of `written` (the cursor file, the metrics textfile),
    /// keep [`KEEP_SINGLE_CONTAINER`]: every thread, the nflog one included (entering containers
    /// is the helper's).
    pub fn host_wide(root: &Path, written: &[&Path]) -> Confinement {
        let write = directories_of(written);
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Confinement::new(
            vec![root, PathBuf::from("/proc")],
            write,
            KEEP_SINGLE_CONTAINER,
        )
    }

    /// Host-wide, the nflog helper process ([`crate::helper`]): [`KEEP_HELPER`] and
    /// `no_new_privs`, but no Landlock. A Landlock domain forbids ptrace-mode access to
    /// processes outside it, and opening `/proc/PID/ns/net` of a container's dnsmasq is such an
    /// access: the process that enters containers started later cannot be in one. It opens no
    /// file but `/proc/PID/{cmdline,status,ns/net}` and the kernel's NFLOG listing
    /// (docs/SECURITY.md).
    pub fn helper() -> Confinement {
        Confinement {
            inner: Arc::new(Inner {
                read: vec![PathBuf::from("/proc")],
                write: Vec::new(),
                keep: KEEP_HELPER,
                ruleset: Err(NO_LANDLOCK_FOR_HELPER.to_string()),
                applied: Mutex::new(Vec::new()),
            }),
        }
    }

    fn new(read: Vec<PathBuf>, mut write: Vec<PathBuf>, keep: CapabilitySet) -> Confinement {
        // A directory that cannot be opened gets no rule (saving the cursor or the textfile
        // fails there anyway, and says so); the rest of the ruleset still holds.
        write.retain(|dir| PathFd::new(dir).is_ok());
        write.dedup();
        let ruleset = build_ruleset(&read, &write).map_err(|e| e.to_string());
        Confinement {
            inner: Arc::new(Inner {
                read,
                write,
                keep,
                ruleset,
                applied: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Confines the calling thread, and with it the threads it starts from now on. Never
    /// fails: what could not be applied is said on the stderr line of [`Confinement::report`].
    pub fn apply_here(&self, thread: &'static str) {
        let inner = &self.inner;
        // no_new_privs first: Landlock needs it, and it also holds where Landlock is missing.
        let no_new_privs = rustix::thread::set_no_new_privs(true).map_err(|e| e.to_string());
        let landlock = match &inner.ruleset {
            Ok(ruleset) => restrict(ruleset),
            Err(err) => Landlock::Failed(err.clone()),
        };
        // The bounding set before the capability sets: dropping from it needs CAP_SETPCAP.
        let bounding = drop_bounding_set(inner.keep).map_err(|e| match e {
            // systemd units often leave CAP_SETPCAP out of their bounding set (ours do).
            Errno::PERM => format!(
                "no CAP_SETPCAP; it still holds {}, out of reach with no_new_privs",
                cap_names(bounding_set())
            ),
            e => e.to_string(),
        });
        let capabilities = drop_capabilities(inner.keep).map_err(|e| e.to_string());
        let applied = Applied {
            landlock,
            capabilities,
            bounding,
            no_new_privs,
        };
        inner
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((thread, applied));
        debug_probe(thread);
    }

    /// The one line saying what was applied, e.g. `confined: landlock ABI 7 (read /s, write /c),
    /// capabilities dropped (kept CAP_DAC_READ_SEARCH), no_new_privs`. Threads that got
    /// something else than `main` are named.
    pub fn report(&self) -> String {
        let applied = self.inner.applied.lock().unwrap_or_else(|p| p.into_inner());
        let Some((_, first)) = applied.first() else {
            return "not confined".into();
        };
        let mut line = format!("confined: {}", self.describe(first));
        for (thread, other) in applied.iter().skip(1) {
            if other != first {
                let _ = write!(line, "; {thread} thread: {}", self.describe(other));
            }
        }
        line
    }

    fn describe(&self, applied: &Applied) -> String {
        let inner = &self.inner;
        let read: Vec<String> = inner.read.iter().map(|p| p.display().to_string()).collect();
        let mut paths = format!("read {}", read.join(", "));
        for write in &inner.write {
            let _ = write!(paths, ", write {}", write.display());
        }
        let mut text = match &applied.landlock {
            Landlock::Enforced {
                abi,
                partial: false,
            } => format!("landlock ABI {abi} ({paths})"),
            Landlock::Enforced { abi, partial: true } => {
                format!("landlock ABI {abi}, partially enforced ({paths})")
            }
            Landlock::Unavailable(why) => format!("no landlock ({why})"),
            Landlock::Failed(err) => format!("no landlock (failed: {err})"),
        };
        match &applied.capabilities {
            Ok(kept) => {
                let _ = write!(text, ", capabilities dropped (kept {})", cap_names(*kept));
            }
            Err(err) => {
                let _ = write!(text, ", capabilities not dropped ({err})");
            }
        }
        if let Err(err) = &applied.bounding {
            let _ = write!(text, ", bounding set not reduced ({err})");
        }
        match &applied.no_new_privs {
            Ok(()) => text.push_str(", no_new_privs"),
            Err(err) => {
                let _ = write!(text, ", no_new_privs not set ({err})");
            }
        }
        text
    }
}

/// The directories the files in `written` are replaced in (a bare file name's is the working
/// directory): the cursor file, the metrics textfile.
fn directories_of(written: &[&Path]) -> Vec<PathBuf> {
    written
        .iter()
        .map(|file| match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
}

/// The ruleset: every file-system access right of [`LANDLOCK_ABI`] is handled (so denied unless
/// a rule allows it), TCP bind and connect are handled with no rule (the one TCP socket,
/// `--metrics-listen`'s, is bound before confinement; accepting on it needs no right), and signals and abstract UNIX sockets are scoped to the process's own domain.
fn build_ruleset(
    read: &[PathBuf],
    write: &[PathBuf],
) -> Result<RulesetCreated, Box<dyn std::error::Error>> {
    let reading = AccessFs::ReadFile | AccessFs::ReadDir;
    // The cursor file and the metrics textfile are replaced atomically: a temporary file
    // created, written, renamed over the old one, and the directory opened for fsync.
    let writing = reading
        | AccessFs::WriteFile
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
        | AccessFs::Truncate;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))?
        .handle_access(AccessNet::from_all(LANDLOCK_ABI))?
        .scope(Scope::from_all(LANDLOCK_ABI))?
        .create()?;
    for dir in read {
        ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(dir)?, reading))?;
    }
    for dir in write {
        ruleset = ruleset.add_rule(PathBeneath::new(PathFd::new(dir)?, writing))?;
    }
    Ok(ruleset)
}

fn restrict(ruleset: &RulesetCreated) -> Landlock {
    let status = match ruleset.try_clone() {
        Ok(ruleset) => ruleset.restrict_self(),
        Err(err) => return Landlock::Failed(err.to_string()),
    };
    match status {
        Ok(status) => match (status.ruleset, status.landlock) {
            (RulesetStatus::NotEnforced, LandlockStatus::NotEnabled) => {
                Landlock::Unavailable("not enabled in this kernel")
            }
            (RulesetStatus::NotEnforced, LandlockStatus::NotImplemented) => {
                Landlock::Unavailable("kernel without Landlock")
            }
            (RulesetStatus::NotEnforced, _) => Landlock::Unavailable("not enforced"),
            (enforced, landlock) => Landlock::Enforced {
                abi: match landlock {
                    LandlockStatus::Available {
                        kernel_abi: Some(abi),
                        ..
                    } => abi,
                    LandlockStatus::Available { effective_abi, .. } => effective_abi as i32,
                    _ => 0,
                },
                partial: enforced == RulesetStatus::PartiallyEnforced,
            },
        },
        Err(err) => Landlock::Failed(err.to_string()),
    }
}

/// Removes every capability but `keep` from this thread's bounding set, so that no later
/// `execve` can give it back. Needs CAP_SETPCAP (the first thing a process without it fails).
fn drop_bounding_set(keep: CapabilitySet) -> rustix::io::Result<()> {
    for bit in 0..64 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if keep.contains(cap) {
            continue;
        }
        match rustix::thread::capability_is_in_bounding_set(cap) {
            Ok(false) => {}
            Ok(true) => rustix::thread::remove_capability_from_bounding_set(cap)?,
            // Past the kernel's last capability.
            Err(Errno::INVAL) => break,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// This thread's bounding set.
fn bounding_set() -> CapabilitySet {
    (0..64)
        .map(|bit| CapabilitySet::from_bits_retain(1 << bit))
        .take_while(|cap| rustix::thread::capability_is_in_bounding_set(*cap).is_ok())
        .filter(|cap| rustix::thread::capability_is_in_bounding_set(*cap) == Ok(true))
        .fold(CapabilitySet::empty(), |all, cap| all | cap)
}

/// Reduces this thread's effective and permitted sets to `keep` (what of it is held), and
/// empties the inheritable and ambient sets. Returns what is kept.
fn drop_capabilities(keep: CapabilitySet) -> rustix::io::Result<CapabilitySet> {
    // The ambient set only matters across execve; it is empty unless a parent raised it.
    let _ = rustix::thread::clear_ambient_capability_set();
    let held = rustix::thread::capabilities(None)?;
    let kept = held.permitted & keep;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    Ok(kept)
}

/// `CAP_DAC_READ_SEARCH,CAP_NET_ADMIN` or `none`.
fn cap_names(set: CapabilitySet) -> String {
    const NAMES: [(CapabilitySet, &str); 5] = [
        (CapabilitySet::DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
        (CapabilitySet::NET_ADMIN, "CAP_NET_ADMIN"),
        (CapabilitySet::SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CapabilitySet::SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CapabilitySet::DAC_OVERRIDE, "CAP_DAC_OVERRIDE"),
    ];
    let mut names: Vec<String> = NAMES
        .iter()
        .filter(|(cap, _)| set.contains(*cap))
        .map(|(_, name)| (*name).to_string())
        .collect();
    let named = NAMES
        .iter()
        .fold(CapabilitySet::empty(), |all, (cap, _)| all | *cap);
    for bit in 0..64 {
        if (set - named).bits() & (1 << bit) != 0 {
            names.push(format!("capability {bit}"));
        }
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// Test builds only: reads the file named by `SHIELD_WATCH_DEBUG_READ` from the thread just
/// confined and says on stderr whether that worked, so the end-to-end tests can show the
/// Landlock ruleset in force. Compiled out of release builds, where no variable changes what
/// the process reads.
#[cfg(debug_assertions)]
fn debug_probe(thread: &str) {
    let Some(path) = std::env::var_os("SHIELD_WATCH_DEBUG_READ") else {
        return;
    };
    let outcome = match std::fs::read(&path) {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(err) => format!("failed: {err}"),
    };
    crate::diag::line(format_args!(
        "debug: {thread} thread reading {} after confinement: {outcome}",
        Path::new(&path).display()
    ));
}

#[cfg(not(debug_assertions))]
fn debug_probe(_thread: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names() {
        assert_eq!(cap_names(CapabilitySet::empty()), "none");
        assert_eq!(cap_names(KEEP_SINGLE_CONTAINER), "CAP_DAC_READ_SEARCH");
        assert_eq!(
            cap_names(CapabilitySet::NET_ADMIN | CapabilitySet::SYS_ADMIN | CapabilitySet::CHOWN),
            "CAP_NET_ADMIN,CAP_SYS_ADMIN,capability 0"
        );
    }

    #[test]
    fn the_cursor_directory_of_a_bare_file_name_is_the_working_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Confinement::single_container(tmp.path(), &[Path::new("cursor")]);
        assert_eq!(c.inner.write, [PathBuf::from(".")]);
        let c = Confinement::single_container(tmp.path(), &[&tmp.path().join("c/cursor")]);
        assert!(
            c.inner.write.is_empty(),
            "no rule for a directory that is not there"
        );
        std::fs::create_dir(tmp.path().join("c")).unwrap();
        let textfile = tmp.path().join("t.prom");
        let c =
            Confinement::single_container(tmp.path(), &[&tmp.path().join("c/cursor"), &textfile]);
        assert_eq!(
            c.inner.write,
            [tmp.path().join("c"), tmp.path().to_path_buf()]
        );
    }
}
