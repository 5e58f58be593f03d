//! One inotify instance shared by many followers: watch descriptors counted per owner, and
//! each event handed to the followers it concerns.
//!
//! inotify gives one descriptor per inode and instance, so two followers of files in the same
//! directory share the directory's watch: the registry adds masks together (`IN_MASK_ADD`),
//! removes a watch only when its last owner lets go, and forgets a watch the kernel dropped
//! (`IN_IGNORED`), telling its owners.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use rustix::fs::inotify::{ReadFlags, WatchFlags};

use crate::file::gone;
use crate::inotify::Inotify;

/// Identifies one member (a follower, or a set of watched directories) of a registry.
pub(crate) type Owner = usize;

/// What a watch is to its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The directory of a followed file: events on names starting with the prefix matter.
    Dir(Box<[u8]>),
    /// The parent of a followed file's directory: events on the directory's own name matter
    /// (it was removed, or created again). Its inode can outlive its removal (an open file in
    /// it pins it), so the parent is what tells.
    Entry(Box<[u8]>),
    /// The nearest existing ancestor of a directory whose parent does not exist yet.
    Ancestor,
    /// A file we hold open.
    File,
    /// A watched directory where any change matters (allow-list reloads).
    AnyChange,
    /// A watched directory where changes to these names matter (and the directory's own
    /// loss).
    Names(Box<[Box<[u8]>]>),
}

/// What happened to an owner since it last looked.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Wake {
    /// Something it follows may have changed: look.
    pub(crate) relevant: bool,
    /// Its directory watch is gone (the directory was removed or moved).
    pub(crate) dir_lost: bool,
    /// Its ancestor changed: the directory may exist now.
    pub(crate) ancestor_changed: bool,
    /// Events were lost (queue overflow): everything must be looked at.
    pub(crate) overflow: bool,
}

pub(crate) struct Watches {
    ino: Inotify,
    owners: HashMap<i32, Vec<(Owner, Role)>>,
    woken: HashMap<Owner, Wake>,
    /// Queue overflows seen.
    pub(crate) overflows: u64,
}

pub(crate) const DIR_MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);
pub(crate) const ANCESTOR_MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);
/// Any change in a directory (allow-list reloads through [`crate::FollowSet::watch_dirs`]).
pub(crate) const ANY_CHANGE_MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);
pub(crate) const FILE_MASK: WatchFlags = WatchFlags::MODIFY
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::DELETE_SELF);

impl Watches {
    pub(crate) fn new() -> io::Result<Watches> {
        Ok(Watches {
            ino: Inotify::new()?,
            owners: HashMap::new(),
            woken: HashMap::new(),
            overflows: 0,
        })
    }

    /// Watches `path` for `owner` in `role`; returns the watch descriptor.
    pub(crate) fn add(
        &mut self,
        owner: Owner,
        role: Role,
        path: &Path,
        mask: WatchFlags,
    ) -> io::Result<i32> {
        let wd = self.ino.add_watch(path, mask | WatchFlags::MASK_ADD)?;
        let list = self.owners.entry(wd).or_default();
        if !list.iter().any(|(o, r)| *o == owner && *r == role) {
            list.push((owner, role));
        }
        Ok(wd)
    }

    /// Watches what tells that `dir` was created or removed: its parent, for events on `dir`'s
    /// own name ([`Role::Entry`]), or while the parent is missing too, the nearest existing
    /// ancestor ([`Role::Ancestor`]: the owner looks again when anything there changes, and
    /// calls this again). Returns the watch and whether it is on a farther ancestor than the
    /// parent. This is the one way a directory that does not exist yet is waited for, by a
    /// follower (its file's directory) and by a set's watched directories alike.
    pub(crate) fn watch_above(&mut self, owner: Owner, dir: &Path) -> io::Result<(i32, bool)> {
        let name: Box<[u8]> = dir
            .file_name()
            .map_or_else(Default::default, |n| n.as_bytes().into());
        let mut at = dir.parent();
        let mut role = Role::Entry(name);
        while let Some(a) = at {
            match self.add(owner, role.clone(), a, ANCESTOR_MASK) {
                Ok(wd) => return Ok((wd, role == Role::Ancestor)),
                Err(e) if gone(&e) => {
                    at = a.parent();
                    role = Role::Ancestor;
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::NotFound.into())
    }

    /// `owner` lets go of `wd` (in every role); the watch goes when nobody holds it.
    pub(crate) fn remove(&mut self, owner: Owner, wd: i32) {
        let Some(list) = self.owners.get_mut(&wd) else {
            return;
        };
        list.retain(|(o, _)| *o != owner);
        if list.is_empty() {
            self.owners.remove(&wd);
            self.ino.rm_watch(wd);
        }
    }

    /// `owner` lets go of everything.
    pub(crate) fn forget(&mut self, owner: Owner) {
        let wds: Vec<i32> = self
            .owners
            .iter()
            .filter(|(_, list)| list.iter().any(|(o, _)| *o == owner))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            self.remove(owner, wd);
        }
        self.woken.remove(&owner);
    }

    /// What happened to `owner` since it last asked (and forgets it).
    pub(crate) fn take_wake(&mut self, owner: Owner) -> Wake {
        self.woken.remove(&owner).unwrap_or_default()
    }

    /// Owners with something to look at.
    pub(crate) fn woken(&self) -> impl Iterator<Item = Owner> + '_ {
        self.woken
            .iter()
            .filter(|(_, w)| w.relevant || w.dir_lost || w.ancestor_changed || w.overflow)
            .map(|(o, _)| *o)
    }

    /// Blocks until events arrive or `deadline` passes, then sorts every queued event to its
    /// owners. Returns whether any event arrived.
    pub(crate) fn wait(&mut self, deadline: Option<Instant>, all: &[Owner]) -> io::Result<bool> {
        if !self.ino.poll(deadline)? {
            return Ok(false);
        }
        self.drain(all)?;
        Ok(true)
    }

    /// Like [`Watches::wait`], also returning when `waker` becomes readable; returns (events
    /// arrived, woken).
    pub(crate) fn wait_or_wake(
        &mut self,
        deadline: Option<Instant>,
        all: &[Owner],
        waker: BorrowedFd<'_>,
    ) -> io::Result<(bool, bool)> {
        let (events, woken) = self.ino.poll_with(waker, deadline)?;
        if events {
            self.drain(all)?;
        }
        Ok((events, woken))
    }

    /// Sorts every queued event to its owners without blocking.
    pub(crate) fn drain(&mut self, all: &[Owner]) -> io::Result<()> {
        let owners = &mut self.owners;
        let woken = &mut self.woken;
        let mut overflowed = false;
        let mut ignored = Vec::new();
        self.ino.drain(&mut |ev| {
            if ev.mask.contains(ReadFlags::QUEUE_OVERFLOW) {
                overflowed = true;
                return;
            }
            let Some(list) = owners.get(&ev.wd) else {
                return;
            };
            let lost = ev
                .mask
                .intersects(ReadFlags::IGNORED | ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF);
            for (owner, role) in list {
                let wake = woken.entry(*owner).or_default();
                match role {
                    Role::File => wake.relevant = true,
                    Role::AnyChange => {
                        wake.relevant = true;
                        wake.dir_lost |= lost;
                    }
                    Role::Names(names) => {
                        if lost {
                            wake.relevant = true;
                            wake.dir_lost = true;
                        } else if names.iter().any(|n| ev.name.as_bytes() == &n[..]) {
                            wake.relevant = true;
                        }
                    }
                    Role::Ancestor => wake.ancestor_changed = true,
                    Role::Entry(name) => {
                        if lost {
                            wake.ancestor_changed = true;
                        } else if ev.name.as_bytes() == &name[..] {
                            wake.dir_lost = true;
                            wake.relevant = true;
                        }
                    }
                    Role::Dir(prefix) => {
                        if lost {
                            wake.dir_lost = true;
                            wake.relevant = true;
                        } else if name_matches(ev.name, prefix) {
                            wake.relevant = true;
                        }
                    }
                }
            }
            if ev.mask.contains(ReadFlags::IGNORED) {
                ignored.push(ev.wd);
            }
        })?;
        for wd in ignored {
            // The kernel dropped this watch (its inode is gone): nobody holds it any more.
            self.owners.remove(&wd);
        }
        if overflowed {
            self.overflows += 1;
            for owner in all {
                let wake = self.woken.entry(*owner).or_default();
                wake.relevant = true;
                wake.overflow = true;
            }
        }
        Ok(())
    }
}

fn name_matches(name: &OsStr, prefix: &[u8]) -> bool {
    name.as_bytes().starts_with(prefix)
}
