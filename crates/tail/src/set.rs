//! Many followers (and watched directories) on one thread and one inotify instance.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::beneath::Dir;
use crate::error::Error;
use crate::follower::{earliest, nap, Follower, Options, Place, Start};
use crate::watches::{Owner, Role, Watches, ANY_CHANGE_MASK};

/// Names one member of a [`FollowSet`]: a followed file, or a group of watched directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    slot: usize,
    /// How many members held the slot before: a key of a removed member never names the one
    /// that re-uses its slot.
    generation: u32,
}

/// Directories watched for any change (or for changes to some names); a missing one is
/// waited for the way a follower waits for its directory ([`Watches::watch_above`]).
struct Dirs {
    role: Role,
    dirs: Vec<PathBuf>,
    wds: Vec<Option<i32>>,
    /// Watches on the parents (or nearest existing ancestors) of missing directories.
    parents: Vec<i32>,
}

enum Member {
    File(Box<Follower>),
    Dirs(Dirs),
}

/// Follows many files with one inotify instance on one thread, whatever their number (the
/// default limit is 128 inotify instances per user; a host has many more followed files).
///
/// Add files with [`FollowSet::add`] and directories to watch with [`FollowSet::watch_dirs`];
/// then loop: [`FollowSet::wait`] names the members that may have something new, and
/// [`FollowSet::follower`] gives each one's [`Follower`] to call `read_available` on.
///
/// ```
/// use shield_tail::{FollowSet, Options, Record, Start};
///
/// let dir = tempfile::tempdir()?;
/// let mut set = FollowSet::new(Options::default());
/// let a = set.add(dir.path().join("a.log"), Start::Beginning)?;
/// let b = set.add(dir.path().join("b.log"), Start::Beginning)?;
/// std::fs::write(dir.path().join("b.log"), b"hello\n")?;
/// let mut ready = Vec::new();
/// set.wait(Some(std::time::Duration::from_secs(5)), &mut ready)?;
/// assert_eq!(ready, [b]);
/// let mut lines = 0;
/// set.follower(b).unwrap().read_available(&mut |_| {
///     lines += 1;
///     std::ops::ControlFlow::Continue(())
/// })?;
/// assert_eq!(lines, 1);
/// # let _ = a;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FollowSet {
    reg: Option<Arc<Mutex<Watches>>>,
    members: Vec<Option<Member>>,
    /// Per slot, bumped when its member is removed (see [`Key`]).
    generations: Vec<u32>,
    free: Vec<usize>,
    opts: Options,
    /// The member last read: its buffer is shrunk before blocking again, or before another
    /// member is read.
    touched: Option<Key>,
    waker: Option<Waker>,
}

/// Wakes a [`FollowSet`]'s [`FollowSet::wait`] from any thread.
#[derive(Clone, Debug)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Makes the set's current or next `wait` return.
    pub fn wake(&self) {
        // A full counter (2^64 - 2 wakes unread) cannot happen; the wait returns either way.
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }
}

impl FollowSet {
    /// An empty set. Without inotify (none left, or `options.force_poll`) it polls.
    pub fn new(options: Options) -> FollowSet {
        let reg = if options.force_poll {
            None
        } else {
            Watches::new().ok().map(|w| Arc::new(Mutex::new(w)))
        };
        FollowSet {
            reg,
            members: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            opts: options,
            touched: None,
            waker: None,
        }
    }

    fn slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.members.push(None);
            self.generations.push(0);
            self.members.len() - 1
        })
    }

    fn key(&self, slot: usize) -> Key {
        Key {
            slot,
            generation: self.generations[slot],
        }
    }

    /// The slot of `key` if it still names a member.
    fn live(&self, key: Key) -> Option<usize> {
        (self.generations.get(key.slot) == Some(&key.generation)
            && self.members.get(key.slot).is_some_and(Option::is_some))
        .then_some(key.slot)
    }

    /// Follows `path` from `start` (see [`Follower::open`]).
    pub fn add(&mut self, path: impl AsRef<Path>, start: Start) -> Result<Key, Error> {
        self.add_place(Place::Path(path.as_ref()), start)
    }

    /// Follows the file `name` of the held directory `dir` from `start` (see
    /// [`Follower::open_at`]).
    pub fn add_at(
        &mut self,
        dir: &Dir,
        name: impl AsRef<OsStr>,
        start: Start,
    ) -> Result<Key, Error> {
        self.add_place(Place::Held(dir, name.as_ref()), start)
    }

    fn add_place(&mut self, place: Place<'_>, start: Start) -> Result<Key, Error> {
        let slot = self.slot();
        match Follower::open_in(
            self.reg.clone(),
            slot as Owner,
            place,
            start,
            self.opts.clone(),
        ) {
            Ok(f) => {
                self.members[slot] = Some(Member::File(Box::new(f)));
                Ok(self.key(slot))
            }
            Err(e) => {
                self.free.push(slot);
                Err(e)
            }
        }
    }

    /// Watches `dirs` (which need not exist yet) for any change: [`FollowSet::wait`] names the
    /// returned key when something in one of them changed.
    pub fn watch_dirs(&mut self, dirs: &[PathBuf]) -> Key {
        let slot = self.slot();
        let mut d = Dirs {
            role: Role::AnyChange,
            dirs: dirs.to_vec(),
            wds: vec![None; dirs.len()],
            parents: Vec::new(),
        };
        add_dir_watches(self.reg.as_ref(), slot, &mut d);
        self.members[slot] = Some(Member::Dirs(d));
        self.key(slot)
    }

    /// Watches `dir` (which need not exist yet) for changes to the entries called one of
    /// `names` (created, written, removed, renamed), and for `dir` itself going or coming:
    /// [`FollowSet::wait`] names the returned key then. Other entries of `dir` wake nothing.
    pub fn watch_names(&mut self, dir: &Path, names: &[&str]) -> Key {
        let slot = self.slot();
        let names: Box<[Box<[u8]>]> = names.iter().map(|n| n.as_bytes().into()).collect();
        let mut d = Dirs {
            role: Role::Names(names),
            dirs: vec![dir.to_path_buf()],
            wds: vec![None],
            parents: Vec::new(),
        };
        add_dir_watches(self.reg.as_ref(), slot, &mut d);
        self.members[slot] = Some(Member::Dirs(d));
        self.key(slot)
    }

    /// A handle that wakes [`FollowSet::wait`] from another thread (its `ready` list may then
    /// be empty): for a thread that also takes commands from a channel.
    pub fn waker(&mut self) -> Result<Waker, Error> {
        if self.waker.is_none() {
            let fd = rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(|e| Error::io("create an eventfd", Path::new("-"), e.into()))?;
            self.waker = Some(Waker(Arc::new(fd)));
        }
        Ok(self.waker.clone().expect("just set"))
    }

    /// Whether the waker was used since the last call (and forgets it).
    fn take_woken(&self) -> bool {
        let Some(w) = &self.waker else { return false };
        let mut buf = [0u8; 8];
        matches!(rustix::io::read(&*w.0, &mut buf), Ok(8))
    }

    /// Stops following (closing files and watches).
    pub fn remove(&mut self, key: Key) {
        let Some(slot) = self.live(key) else { return };
        self.members[slot] = None;
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        if let Some(reg) = &self.reg {
            reg.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget(slot);
        }
        self.free.push(slot);
    }

    /// The follower behind `key` (`None` for a directory watch or a removed key).
    pub fn follower(&mut self, key: Key) -> Option<&mut Follower> {
        // The follower given out before this one is done with (the borrow has ended): its
        // large read buffer passes to this one now, not at the next wait, so a caller reading a
        // thousand members in one round (a host's containers with their history) holds one
        // buffer at a time, not one per member, and does not allocate, zero and fault in a new
        // one for each.
        let handed = match self.touched {
            Some(touched) if touched != key => self.shrink_touched(),
            _ => None,
        };
        let slot = self.live(key)?;
        match &mut self.members[slot] {
            Some(Member::File(f)) => {
                if let Some(buffer) = handed {
                    f.adopt_buffer(buffer);
                }
                self.touched = Some(key);
                Some(f)
            }
            _ => None,
        }
    }

    /// Lets the member last read give back its large buffer; returns it.
    fn shrink_touched(&mut self) -> Option<Vec<u8>> {
        let slot = self.touched.take().and_then(|key| self.live(key))?;
        match &mut self.members[slot] {
            Some(Member::File(f)) => f.shrink(),
            _ => None,
        }
    }

    /// [`FollowSet::shrink_touched`] before a wait, unless the member's last read stopped early:
    /// then the wait returns it at once and it is read again, most often the next one read
    /// (one large file, read a budget at a time). Given back, its buffer would only be
    /// allocated, zeroed and faulted in again page by page for every 4 MiB read (a 230 MB query
    /// log replayed: 4 350 more page faults, a few per cent of the time). Should another member
    /// be read first, [`FollowSet::follower`] still lets the buffer go then.
    fn shrink_touched_if_done(&mut self) {
        let unfinished = self.touched.and_then(|key| self.live(key)).is_some_and(
            |slot| matches!(&self.members[slot], Some(Member::File(f)) if f.stopped_early()),
        );
        if !unfinished {
            // Freed: an idle set holds no large buffer.
            drop(self.shrink_touched());
        }
    }

    /// How many members the set holds.
    pub fn len(&self) -> usize {
        self.members.iter().filter(|m| m.is_some()).count()
    }

    /// Whether the set holds no member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the set is driven by inotify (false: stat polling).
    pub fn uses_inotify(&self) -> bool {
        self.reg.is_some()
    }

    /// Queue overflows of the shared inotify instance so far.
    pub fn overflows(&self) -> u64 {
        self.reg.as_ref().map_or(0, |r| {
            r.lock().unwrap_or_else(PoisonError::into_inner).overflows
        })
    }

    /// Blocks until some members may have something new, or `timeout` passes; fills `ready`
    /// with them (cleared first). Followers whose last read stopped early, or whose rotate-wait
    /// ends, are ready without an event. No CPU is used while nothing happens.
    pub fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<Key>) -> Result<(), Error> {
        ready.clear();
        self.shrink_touched_if_done();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let now = Instant::now();
            let mut next_deadline = deadline;
            for (i, m) in self.members.iter().enumerate() {
                match m {
                    Some(Member::File(f)) => {
                        if f.due(now) {
                            ready.push(Key {
                                slot: i,
                                generation: self.generations[i],
                            });
                        }
                        next_deadline = earliest(next_deadline, f.deadline());
                    }
                    Some(Member::Dirs(_)) | None => {}
                }
            }
            let Some(reg) = self.reg.clone() else {
                return self.poll_once(next_deadline, ready);
            };
            if !ready.is_empty() {
                // Still sort any queued events, without blocking, so nothing waits a round.
                let all = self.owners();
                reg.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .drain(&all)
                    .map_err(|e| Error::io("read inotify", Path::new("-"), e))?;
                self.collect_woken(&reg, ready);
                ready.sort_unstable();
                ready.dedup();
                return Ok(());
            }
            let all = self.owners();
            let arrived = match &self.waker {
                Some(waker) => {
                    let (arrived, woken) = reg
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .wait_or_wake(next_deadline, &all, waker.0.as_fd())
                        .map_err(|e| Error::io("wait on inotify", Path::new("-"), e))?;
                    if woken && self.take_woken() {
                        if arrived {
                            self.collect_woken(&reg, ready);
                        }
                        ready.sort_unstable();
                        ready.dedup();
                        return Ok(());
                    }
                    arrived
                }
                None => reg
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .wait(next_deadline, &all)
                    .map_err(|e| Error::io("wait on inotify", Path::new("-"), e))?,
            };
            if arrived {
                self.collect_woken(&reg, ready);
            }
            ready.sort_unstable();
            ready.dedup();
            if !ready.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            let now = Instant::now();
            if self
                .members
                .iter()
                .any(|m| matches!(m, Some(Member::File(f)) if f.due(now)))
            {
                continue;
            }
        }
    }

    fn owners(&self) -> Vec<Owner> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    fn collect_woken(&mut self, reg: &Arc<Mutex<Watches>>, ready: &mut Vec<Key>) {
        let woken: Vec<Owner> = reg
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .woken()
            .collect();
        for owner in woken {
            match self.members.get_mut(owner) {
                Some(Some(Member::File(f))) => {
                    if f.take_wake() {
                        ready.push(Key {
                            slot: owner,
                            generation: self.generations[owner],
                        });
                    }
                }
                Some(Some(Member::Dirs(d))) => {
                    let wake = reg
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take_wake(owner);
                    if wake.dir_lost {
                        // Which one went is not said: watch them all again.
                        let mut r = reg.lock().unwrap_or_else(PoisonError::into_inner);
                        for wd in d.wds.iter_mut().filter_map(Option::take) {
                            r.remove(owner, wd);
                        }
                    }
                    let missing = d.wds.iter().filter(|w| w.is_none()).count();
                    add_dir_watches(Some(reg), owner, d);
                    let appeared = d.wds.iter().filter(|w| w.is_none()).count() < missing;
                    // An ancestor's change alone is only a step towards a missing directory.
                    if wake.relevant || wake.dir_lost || wake.overflow || appeared {
                        ready.push(Key {
                            slot: owner,
                            generation: self.generations[owner],
                        });
                    }
                }
                _ => {
                    reg.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take_wake(owner);
                }
            }
        }
    }

    /// Without inotify: one poll round (sleeping at most the poll interval).
    fn poll_once(&mut self, deadline: Option<Instant>, ready: &mut Vec<Key>) -> Result<(), Error> {
        loop {
            if self.take_woken() {
                return Ok(());
            }
            for (i, m) in self.members.iter().enumerate() {
                match m {
                    Some(Member::File(f)) if f.poll_pending() => ready.push(Key {
                        slot: i,
                        generation: self.generations[i],
                    }),
                    // Directories cannot be compared cheaply without inotify: say "maybe".
                    Some(Member::Dirs(_)) => ready.push(Key {
                        slot: i,
                        generation: self.generations[i],
                    }),
                    _ => {}
                }
            }
            ready.sort_unstable();
            ready.dedup();
            if ready
                .iter()
                .any(|k| matches!(self.members[k.slot], Some(Member::File(_))))
            {
                return Ok(());
            }
            ready.clear();
            if !nap(self.opts.poll_interval, deadline) {
                return Ok(());
            }
        }
    }
}

/// Watches every directory of `d` that exists now, and what tells that each missing one
/// appeared ([`Watches::watch_above`]).
fn add_dir_watches(reg: Option<&Arc<Mutex<Watches>>>, owner: Owner, d: &mut Dirs) {
    let Some(reg) = reg else { return };
    let mut r = reg.lock().unwrap_or_else(PoisonError::into_inner);
    let old = std::mem::take(&mut d.parents);
    // Above first, so that a directory appearing in between is still seen.
    let mut above = Vec::new();
    for (i, dir) in d
        .dirs
        .iter()
        .enumerate()
        .filter(|(i, _)| d.wds[*i].is_none())
    {
        // Out of watches: the directory is looked for again at the next wake.
        if let Ok((wd, _)) = r.watch_above(owner, dir) {
            above.push((i, wd));
        }
    }
    for (dir, slot) in d.dirs.iter().zip(d.wds.iter_mut()) {
        if slot.is_none() {
            *slot = r.add(owner, d.role.clone(), dir, ANY_CHANGE_MASK).ok();
        }
    }
    for &(i, wd) in &above {
        if d.wds[i].is_none() && !d.parents.contains(&wd) {
            d.parents.push(wd);
        }
    }
    // A watch no missing directory needs any more goes, unless it watches one of ours.
    for wd in old.into_iter().chain(above.into_iter().map(|(_, wd)| wd)) {
        let needed = d.parents.contains(&wd) || d.wds.contains(&Some(wd));
        if !needed {
            r.remove(owner, wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;
    use crate::follower::READ_BUDGET;
    use crate::Record;

    /// Reads what `key` has now (one read budget at most) into `got`; returns whether it
    /// stopped early.
    fn read(set: &mut FollowSet, key: Key, got: &mut Vec<String>) -> bool {
        let f = set.follower(key).expect("a followed file");
        f.read_available(&mut |r| {
            if let Record::Line { bytes, .. } = r {
                got.push(String::from_utf8_lossy(bytes).into_owned());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        f.stopped_early()
    }

    fn allocated(set: &mut FollowSet, key: Key) -> usize {
        let slot = set.live(key).unwrap();
        match &set.members[slot] {
            Some(Member::File(f)) => f.buffer_allocated(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_member_read_a_budget_at_a_time_keeps_its_buffer_across_waits_and_hands_it_on() {
        let dir = tempfile::tempdir().unwrap();
        // Two files of more than two read budgets of numbered 100-byte lines: a budget ends
        // inside a line, whose start then moves with the buffer.
        let lines = 2 * READ_BUDGET as usize / 100 + 10;
        let want: Vec<String> = (0..lines).map(|i| format!("{i:099}")).collect();
        let text: String = want.iter().map(|l| format!("{l}\n")).collect();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        std::fs::write(&a, &text).unwrap();
        std::fs::write(&b, &text).unwrap();
        let mut set = FollowSet::new(Options::default());
        let a = set.add(&a, Start::Beginning).unwrap();
        let b = set.add(&b, Start::Beginning).unwrap();
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut ready = Vec::new();

        assert!(
            read(&mut set, a, &mut got_a),
            "one budget does not reach the end"
        );
        let held = allocated(&mut set, a);
        assert!(held > 64 * 1024, "{held}");
        // The wait returns `a` at once, and `a` keeps its buffer for the next read.
        set.wait(None, &mut ready).unwrap();
        assert!(ready.contains(&a), "{ready:?}");
        assert_eq!(allocated(&mut set, a), held);

        // Another member read in between: `a`'s buffer passes to it, one buffer at a time.
        assert!(read(&mut set, b, &mut got_b));
        assert!(allocated(&mut set, a) <= 1024, "{}", allocated(&mut set, a));
        assert_eq!(allocated(&mut set, b), held);
        // And back.
        assert!(read(&mut set, a, &mut got_a));
        assert!(allocated(&mut set, b) <= 1024, "{}", allocated(&mut set, b));
        assert_eq!(allocated(&mut set, a), held);

        // Every line of both, once, in order, across the hand-overs.
        while read(&mut set, b, &mut got_b) | read(&mut set, a, &mut got_a) {}
        assert!(
            got_a == want && got_b == want,
            "{} and {} lines",
            got_a.len(),
            got_b.len()
        );
        // Both at their end, the next wait lets the buffer go.
        set.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert!(allocated(&mut set, a) <= 1024, "{}", allocated(&mut set, a));
        assert!(allocated(&mut set, b) <= 1024, "{}", allocated(&mut set, b));
    }
}
