//! `FollowSet`: many followed files and watched directories on one thread and one inotify
//! instance, against real files.

use std::collections::HashMap;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shield_tail::{FollowSet, Key, Options, Record, Start};

use crate::append;

const LIMIT: Duration = Duration::from_secs(10);

/// The descriptors of this process that are inotify instances.
fn inotify_fds() -> Vec<u32> {
    let mut fds: Vec<u32> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify"))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// How many watches the inotify instance behind `fd` holds (one `inotify wd:` line each).
fn watches_of(fd: u32) -> usize {
    fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("inotify wd:"))
        .count()
}

/// Lines read from `key` into `got`, with whether each was already there at open.
fn read(set: &mut FollowSet, key: Key, got: &mut Vec<(String, bool)>) {
    set.follower(key)
        .expect("a followed file")
        .read_available(&mut |r| {
            if let Record::Line {
                bytes, existing, ..
            } = r
            {
                got.push((String::from_utf8_lossy(bytes).into_owned(), existing));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
}

/// Waits on the set until `want(ready)` holds (failing after [`LIMIT`]); returns what woke.
fn wait_for(set: &mut FollowSet, mut want: impl FnMut(&[Key]) -> bool) -> Vec<Key> {
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    let mut ready = Vec::new();
    loop {
        let now = Instant::now();
        assert!(now < deadline, "not woken as expected: {seen:?}");
        set.wait(Some(deadline - now), &mut ready).unwrap();
        seen.extend_from_slice(&ready);
        seen.sort_unstable();
        seen.dedup();
        if want(&seen) {
            return seen;
        }
    }
}

/// Runs the test `name` of this binary alone in a child process (with `ALONE` set), so that
/// no other test's inotify instances or descriptors come and go while it counts them. Returns
/// false in the child, where the caller then runs the test's body.
fn run_alone(name: &str) -> bool {
    const ALONE: &str = "SHIELD_TAIL_TEST_ALONE";
    if std::env::var_os(ALONE).is_some() {
        return false;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} alone: {}\n{stdout}\n{stderr}",
        out.status
    );
    eprint!("{stderr}");
    true
}

/// Raises the soft limit of open descriptors to the hard one (as shield-watch does at start):
/// a thousand open files do not fit under the common soft limit of 1 024. Returns it.
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            ..lim
        },
    )
    .unwrap();
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A small deterministic generator (xorshift), for the writer's order.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Host-wide mode's shape: 500 container directories with two followed files each (`audit.jsonl`
/// there at the start with one line, `dnsmasq.log` created later), 1 000 paths in one set.
/// The default limit is 128 inotify instances per user: the set takes exactly one, whatever
/// the number of files, and every file's lines arrive, in order, exactly once.
#[test]
fn a_thousand_paths_share_one_inotify_instance() {
    if run_alone("set::a_thousand_paths_share_one_inotify_instance") {
        return;
    }
    const DIRS: usize = 500;
    const ROUNDS: usize = 3;
    let max_instances = fs::read_to_string("/proc/sys/fs/inotify/max_user_instances").unwrap();
    let nofile = raise_fd_limit();
    assert!(nofile >= 1_100, "the hard limit of descriptors is {nofile}");
    let root = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for c in 0..DIRS {
        let dir = root.path().join(format!("c{c:03}"));
        fs::create_dir(&dir).unwrap();
        append(
            &dir.join("audit.jsonl"),
            format!("c{c:03} before\n").as_bytes(),
        );
        paths.push(dir.join("audit.jsonl"));
        paths.push(dir.join("dnsmasq.log"));
    }
    let before = inotify_fds();
    let mut set = FollowSet::new(Options::default());
    let keys: Vec<Key> = paths
        .iter()
        .map(|p| set.add(p, Start::Beginning).unwrap())
        .collect();
    assert_eq!(set.len(), 2 * DIRS);
    assert!(set.uses_inotify());
    let after = inotify_fds();
    assert_eq!(
        after.len(),
        before.len() + 1,
        "1 000 followed paths take one inotify instance (limit per user: {})",
        max_instances.trim()
    );
    let ours = *after.iter().find(|fd| !before.contains(fd)).unwrap();
    let writer = {
        let paths = paths.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut order: Vec<usize> = (0..paths.len()).collect();
            for round in 0..ROUNDS {
                // A shuffled order each round: files in every directory, at random.
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
                for &i in &order {
                    append(&paths[i], format!("{i} round {round}\n").as_bytes());
                }
            }
        })
    };
    let mut got: HashMap<Key, Vec<(String, bool)>> = HashMap::new();
    let total = 2 * DIRS * ROUNDS + DIRS;
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = Vec::new();
    let mut wakes = 0;
    while delivered < total {
        let now = Instant::now();
        assert!(now < deadline, "{delivered} of {total} lines within 60 s");
        set.wait(Some(deadline - now), &mut ready).unwrap();
        wakes += 1;
        for &key in &ready {
            let lines = got.entry(key).or_default();
            let n = lines.len();
            read(&mut set, key, lines);
            delivered += lines.len() - n;
        }
    }
    writer.join().unwrap();
    for (i, key) in keys.iter().enumerate() {
        let mut want: Vec<(String, bool)> = Vec::new();
        if i % 2 == 0 {
            want.push((format!("c{:03} before", i / 2), true));
        }
        want.extend((0..ROUNDS).map(|r| (format!("{i} round {r}"), false)));
        assert_eq!(got.get(key), Some(&want), "{}", paths[i].display());
    }
    // Still one instance (no follower fell back to one of its own), and letting go of every
    // member releases every watch.
    assert_eq!(inotify_fds(), after);
    assert!(watches_of(ours) >= 2 * DIRS, "{}", watches_of(ours));
    for key in keys {
        set.remove(key);
    }
    assert!(set.is_empty());
    assert_eq!(watches_of(ours), 0);
    eprintln!(
        "1 000 paths, {total} lines, {wakes} wakes, one inotify instance (max_user_instances {})",
        max_instances.trim()
    );
}

/// A watched directory that does not exist yet wakes its key when it is created (through its
/// parent, or where the parent is missing too, its nearest existing ancestor: the way a follower
/// waits for its directory), and a change inside an existing one wakes it; a followed file in
/// the same set is not woken by either.
#[test]
fn watch_dirs_wakes_on_a_late_directory_and_on_a_change() {
    let root = tempfile::tempdir().unwrap();
    let existing = root.path().join("existing");
    fs::create_dir(&existing).unwrap();
    let late = root.path().join("policy");
    // Elsewhere, so that no other watch of the set sees its creation.
    let elsewhere = tempfile::tempdir().unwrap();
    let deep = elsewhere.path().join("not/yet/there");
    let mut set = FollowSet::new(Options::default());
    let file = set.add(root.path().join("a.log"), Start::End).unwrap();
    let dirs = set.watch_dirs(&[existing.clone(), late.clone()]);
    let deep_key = set.watch_dirs(std::slice::from_ref(&deep));
    assert!(
        set.follower(dirs).is_none(),
        "a directory watch has no follower"
    );

    fs::write(existing.join("live"), b"+example.test\n").unwrap();
    assert_eq!(wait_for(&mut set, |r| r.contains(&dirs)), [dirs]);

    fs::create_dir(&late).unwrap();
    assert_eq!(wait_for(&mut set, |r| r.contains(&dirs)), [dirs]);
    // Now watched itself: a file written in it wakes the key.
    fs::write(late.join("live"), b"+example.test\n").unwrap();
    assert_eq!(wait_for(&mut set, |r| r.contains(&dirs)), [dirs]);

    // Two levels missing: found through the nearest existing ancestor's events, at once, not
    // by a periodic look (which came every second).
    let mut woke = Vec::new();
    // Nothing left queued from before: only the new directory can end the next wait.
    while {
        set.wait(Some(Duration::from_millis(50)), &mut woke)
            .unwrap();
        !woke.is_empty()
    } {}
    fs::create_dir_all(&deep).unwrap();
    let started = Instant::now();
    set.wait(Some(Duration::from_secs(3)), &mut woke).unwrap();
    assert!(woke.contains(&deep_key), "{woke:?}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "woken by an event, not a look"
    );
    assert!(!woke.contains(&file), "{woke:?}");
    fs::write(deep.join("x"), b"").unwrap();
    wait_for(&mut set, |r| r.contains(&deep_key));

    // Removed and created again: still watched.
    fs::remove_dir_all(&late).unwrap();
    wait_for(&mut set, |r| r.contains(&dirs));
    fs::create_dir(&late).unwrap();
    wait_for(&mut set, |r| r.contains(&dirs));
    fs::write(late.join("again"), b"").unwrap();
    let woke = wait_for(&mut set, |r| r.contains(&dirs));
    assert!(!woke.contains(&file), "{woke:?}");
}

/// Removing a member closes it and lets go of its watches, without disturbing a member that
/// shares its directory watch; the freed key is re-used by a new member with nothing of the
/// old one's state.
#[test]
fn remove_lets_go_of_one_member_only() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    append(&a, b"a0\n");
    let mut set = FollowSet::new(Options::default());
    let ka = set.add(&a, Start::Beginning).unwrap();
    let kb = set.add(&b, Start::Beginning).unwrap();
    let dirs = set.watch_dirs(&[dir.path().join("policy")]);
    let mut got = Vec::new();
    read(&mut set, ka, &mut got);
    assert_eq!(got, [("a0".to_string(), true)]);

    set.remove(ka);
    set.remove(dirs);
    assert_eq!(set.len(), 1);
    assert!(set.follower(ka).is_none());
    // a's write first, then b's: both are in the queue when the set reads it, so a removed
    // member still registered would be named too.
    append(&a, b"a1\n");
    fs::create_dir(dir.path().join("policy")).unwrap();
    append(&b, b"b0\n");
    assert_eq!(wait_for(&mut set, |r| r.contains(&kb)), [kb]);
    let mut got = Vec::new();
    read(&mut set, kb, &mut got);
    assert_eq!(got, [("b0".to_string(), false)]);

    // Removing twice does nothing.
    set.remove(ka);
    assert_eq!(set.len(), 1);

    // A new member in the freed slot starts afresh (here at the end of a.log), under a key of
    // its own: the removed member's stale key names nothing, so removing it again cannot
    // remove the newcomer.
    let kc = set.add(&a, Start::End).unwrap();
    assert!(
        ![ka, dirs].contains(&kc),
        "a stale key names the newcomer: {kc:?}"
    );
    set.remove(ka);
    assert!(set.follower(ka).is_none());
    assert!(
        set.follower(kc).is_some(),
        "a stale key removed the newcomer"
    );
    append(&a, b"a2\n");
    assert_eq!(wait_for(&mut set, |r| r.contains(&kc)), [kc]);
    let mut got = Vec::new();
    read(&mut set, kc, &mut got);
    assert_eq!(got, [("a2".to_string(), false)]);
}

/// `watch_names` wakes its key for the names it was given (and the directory appearing), never
/// for another entry of the directory.
#[test]
fn watch_names_wakes_for_its_names_only() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let mut set = FollowSet::new(Options::default());
    let names = set.watch_names(&state, &["dns.tier", "dnsmasq.pid"]);
    let file = set.add(root.path().join("a.log"), Start::End).unwrap();
    fs::create_dir(&state).unwrap();
    assert_eq!(wait_for(&mut set, |r| r.contains(&names)), [names]);
    // Another name, then the followed file: only the file's key wakes.
    fs::write(state.join("dnsmasq.conf"), b"").unwrap();
    append(&root.path().join("a.log"), b"x\n");
    assert_eq!(wait_for(&mut set, |r| r.contains(&file)), [file]);
    fs::write(state.join("dns.tier"), b"lookup\n").unwrap();
    assert_eq!(wait_for(&mut set, |r| r.contains(&names)), [names]);
    fs::write(state.join("dnsmasq.pid"), b"1\n").unwrap();
    assert_eq!(wait_for(&mut set, |r| r.contains(&names)), [names]);
}

/// A `Waker` ends a `wait` from another thread, with nothing ready.
#[test]
fn a_waker_ends_a_wait_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = FollowSet::new(Options::default());
    set.add(dir.path().join("a.log"), Start::End).unwrap();
    let waker = set.waker().unwrap();
    let t = std::thread::spawn(move || waker.wake());
    let t0 = Instant::now();
    let mut ready = vec![];
    set.wait(Some(Duration::from_secs(60)), &mut ready).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(ready.is_empty(), "{ready:?}");
    t.join().unwrap();
}

/// A queue overflow in the shared instance wakes every member, and each finds its lines,
/// though the kernel dropped every event about them.
#[test]
fn an_overflow_wakes_every_member() {
    let root = tempfile::tempdir().unwrap();
    let noise = root.path().join("noise");
    fs::create_dir(&noise).unwrap();
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| {
            let d = root.path().join(format!("c{i}"));
            fs::create_dir(&d).unwrap();
            d.join("audit.jsonl")
        })
        .collect();
    let mut set = FollowSet::new(Options::default());
    let keys: Vec<Key> = paths
        .iter()
        .map(|p| set.add(p, Start::Beginning).unwrap())
        .collect();
    // Events the set must read but nobody cares about: a watched directory of other names.
    set.watch_dirs(std::slice::from_ref(&noise));
    flood(&noise);
    for p in &paths {
        append(p, b"after the overflow\n");
    }
    assert_eq!(set.overflows(), 0);
    let woke = wait_for(&mut set, |r| keys.iter().all(|k| r.contains(k)));
    assert_eq!(set.overflows(), 1);
    assert_eq!(woke.len(), keys.len() + 1, "every member: {woke:?}");
    for key in keys {
        let mut got = Vec::new();
        read(&mut set, key, &mut got);
        assert_eq!(got, [("after the overflow".to_string(), false)]);
        assert_eq!(set.follower(key).unwrap().stats().overflows, 1);
    }
}

/// Fills the inotify queues watching `dir` (`max_queued_events`) with events that cannot be
/// merged (two names, alternating).
fn flood(dir: &Path) {
    use std::io::Write;
    let max_q: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut w = [dir.join("x"), dir.join("y")].map(|p| crate::appender(&p));
    for i in 0..max_q + 100 {
        w[i % 2].write_all(b".").unwrap();
    }
}

/// One huge file does not starve the others (a container owner controls its files): a 16 TB
/// sparse `audit.jsonl` (32 MiB of lines, then a hole to the end, as `truncate -s` makes) and a
/// normal file in one set, served by the plain loop of `wait`, then `read_available` for each
/// ready key. A line appended to the normal file while the huge one is still being read arrives
/// after at most two 4 MiB slices of the huge one (counted in bytes, not timed: about 11 ms on
/// this machine, printed); no `wait` blocks while the huge one has more (it would sit out its
/// 500 ms timeout); the hole is skipped, not read.
#[test]
fn a_huge_sparse_file_does_not_starve_the_others() {
    /// What the loop saw, sent back from its thread.
    struct Seen {
        arrived: Option<Duration>,
        huge_at_append: u64,
        huge_bytes_then: Option<u64>,
        huge_pending: bool,
        huge_bytes: u64,
        huge_lines: u64,
        slowest_wait: Duration,
    }

    if run_alone("set::a_huge_sparse_file_does_not_starve_the_others") {
        return;
    }
    const DATA: u64 = 32 << 20;
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("audit.jsonl");
    let normal = dir.path().join("other.log");
    let line = [b"x".repeat(16383), b"\n".to_vec()].concat();
    let chunk = line.repeat(64);
    let mut f = fs::File::create(&huge).unwrap();
    for _ in 0..DATA / chunk.len() as u64 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    f.set_len(16_000_000_000_000).unwrap();
    drop(f);
    fs::write(&normal, b"").unwrap();

    // The loop runs on its own thread: should a read never return, the test fails, not hangs.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut set = FollowSet::new(Options::default());
        let kh = set.add(&huge, Start::Beginning).unwrap();
        let kn = set.add(&normal, Start::Beginning).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ready = Vec::new();
        let (mut appended, mut arrived, mut huge_lines) = (None, None, 0u64);
        let mut huge_at_append = 0;
        let mut huge_bytes_then = None;
        let mut slowest_wait = Duration::ZERO;
        let mut huge_pending = true;
        // A caller reads a member once when it adds it; then it reads what `wait` names.
        ready.extend([kh, kn]);
        loop {
            for &key in &ready {
                let mut lines = 0u64;
                let f = set.follower(key).unwrap();
                f.read_available(&mut |r| {
                    if let Record::Line { bytes, .. } = r {
                        if bytes == b"fresh" {
                            arrived = appended.map(|t: Instant| t.elapsed());
                        }
                        lines += 1;
                    }
                    ControlFlow::Continue(())
                })
                .unwrap();
                if key == kh {
                    huge_lines += lines;
                }
                if arrived.is_some() && huge_bytes_then.is_none() {
                    huge_bytes_then = Some(set.follower(kh).unwrap().stats().bytes);
                }
            }
            if appended.is_none() {
                huge_at_append = set.follower(kh).unwrap().stats().bytes;
                append(&normal, b"fresh\n");
                appended = Some(Instant::now());
            }
            if Instant::now() >= deadline || arrived.is_some() && !huge_pending {
                break;
            }
            let t = Instant::now();
            set.wait(Some(Duration::from_millis(500)), &mut ready)
                .unwrap();
            huge_pending = ready.contains(&kh);
            if huge_pending {
                slowest_wait = slowest_wait.max(t.elapsed());
            }
        }
        let huge_bytes = set.follower(kh).unwrap().stats().bytes;
        let _ = tx.send(Seen {
            arrived,
            huge_at_append,
            huge_bytes_then,
            huge_pending,
            huge_bytes,
            huge_lines,
            slowest_wait,
        });
    });
    let Seen {
        arrived,
        huge_at_append,
        huge_bytes_then,
        huge_pending,
        huge_bytes,
        huge_lines,
        slowest_wait,
    } = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the loop never blocks");
    let arrived = arrived.expect("the normal file's line arrived");
    eprintln!(
        "line arrived after {arrived:?} with {huge_bytes_then:?} bytes of the huge file read; \
         slowest wait {slowest_wait:?}; huge file: {huge_bytes} bytes read, {huge_lines} lines"
    );
    assert!(
        huge_bytes_then.is_some_and(|b| b < DATA && b - huge_at_append <= 2 * (4 << 20)),
        "the line waited for more than two slices of the huge file: {huge_at_append} bytes read \
         when it was appended, {huge_bytes_then:?} when it arrived"
    );
    assert!(
        slowest_wait < Duration::from_millis(450),
        "a wait sat out its timeout while the huge file had more: {slowest_wait:?}"
    );
    assert!(!huge_pending, "the huge file was read to its end");
    // What one read asks for past the data is read as zeros before the hole is seen.
    assert!(
        huge_bytes < DATA + (1 << 20),
        "the hole was skipped, not read"
    );
    assert_eq!(huge_lines, DATA / line.len() as u64);
}

/// How many descriptors this process holds.
fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Reads every member of `set` the way a caller loops (`wait`, then `read_available` for each
/// ready key) until `done` holds or nothing happened for a while; returns each member's lines
/// and notices, and the most descriptors and inotify watches held on the way.
fn serve(
    set: &mut FollowSet,
    ino: u32,
    got: &mut HashMap<Key, Vec<String>>,
    notices: &mut Vec<String>,
    mut done: impl FnMut(&HashMap<Key, Vec<String>>) -> bool,
) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut fds, mut watches) = (0, 0);
    let mut ready = Vec::new();
    while !done(got) {
        assert!(Instant::now() < deadline, "not done: {got:?}");
        set.wait(Some(Duration::from_millis(500)), &mut ready)
            .unwrap();
        for &key in &ready {
            let f = set.follower(key).unwrap();
            let lines = got.entry(key).or_default();
            // Counted at every line too: what a read holds while it reads.
            f.read_available(&mut |r| {
                if let Record::Line { bytes, .. } = r {
                    lines.push(String::from_utf8_lossy(bytes).into_owned());
                }
                fds = fds.max(fd_count());
                watches = watches.max(watches_of(ino));
                ControlFlow::Continue(())
            })
            .unwrap();
            notices.extend(f.take_notices().iter().map(ToString::to_string));
            fds = fds.max(fd_count());
            watches = watches.max(watches_of(ino));
        }
    }
    (fds, watches)
}

/// A container owner floods its log directory with rotated-looking names: 25 000 empty
/// `audit.jsonl.N`, then the live file removed. The follower holds no descriptor and no watch
/// for an empty sibling; of 40 rotated files with content it holds and reads the newest 16 and
/// says once that it skipped the others. Descriptors and watches stay bounded throughout, and
/// another member of the same set still follows its own rotation.
#[test]
fn a_flood_of_rotated_names_costs_a_bounded_number_of_descriptors() {
    if run_alone("set::a_flood_of_rotated_names_costs_a_bounded_number_of_descriptors") {
        return;
    }
    raise_fd_limit();
    let root = tempfile::tempdir().unwrap();
    let (hostile, calm) = (root.path().join("hostile"), root.path().join("calm"));
    fs::create_dir(&hostile).unwrap();
    fs::create_dir(&calm).unwrap();
    let (audit, other) = (hostile.join("audit.jsonl"), calm.join("audit.jsonl"));
    append(&audit, b"a0\n");
    append(&other, b"b0\n");
    let mut set = FollowSet::new(Options::default());
    let ka = set.add(&audit, Start::Beginning).unwrap();
    let kb = set.add(&other, Start::Beginning).unwrap();
    let ino = *inotify_fds().last().unwrap();
    let mut got: HashMap<Key, Vec<String>> = HashMap::new();
    let mut notices = Vec::new();
    for key in [ka, kb] {
        let lines = got.entry(key).or_default();
        set.follower(key)
            .unwrap()
            .read_available(&mut |r| {
                if let Record::Line { bytes, .. } = r {
                    lines.push(String::from_utf8_lossy(bytes).into_owned());
                }
                ControlFlow::Continue(())
            })
            .unwrap();
    }
    let (fds_before, watches_before) = (fd_count(), watches_of(ino));

    for n in 1..=25_000 {
        fs::File::create(hostile.join(format!("audit.jsonl.{n}"))).unwrap();
    }
    fs::remove_file(&audit).unwrap();
    // The calm member's rotation: its last line, renamed, a new file.
    append(&other, b"b1\n");
    fs::rename(&other, calm.join("audit.jsonl.1")).unwrap();
    append(&other, b"b2\n");
    let (fds, watches) = serve(&mut set, ino, &mut got, &mut notices, |got| {
        got[&kb].len() == 3
    });
    assert_eq!(got[&kb], ["b0", "b1", "b2"]);
    assert_eq!(got[&ka], ["a0"]);
    eprintln!("25 000 empty siblings: at most {fds} descriptors (from {fds_before}), {watches} watches (from {watches_before})");
    assert!(
        fds <= fds_before + 4,
        "{fds} descriptors, from {fds_before}"
    );
    assert!(
        watches <= watches_before + 4,
        "{watches} watches, from {watches_before}"
    );

    // Now with content, one line each, oldest first.
    for n in 0..40 {
        append(
            &hostile.join(format!("audit.jsonl.full-{n:02}")),
            format!("full {n:02}\n").as_bytes(),
        );
    }
    let (fds, watches) = serve(&mut set, ino, &mut got, &mut notices, |got| {
        got[&ka].last().is_some_and(|l| l == "full 39")
    });
    // Nothing more comes: serve a quiet moment longer.
    let until = Instant::now() + Duration::from_millis(300);
    serve(&mut set, ino, &mut got, &mut notices, |_| {
        Instant::now() >= until
    });
    let want: Vec<String> = std::iter::once("a0".to_string())
        .chain((0..40).map(|n| format!("full {n:02}")))
        .collect();
    assert_eq!(got[&ka], want, "every one, in order, once");
    eprintln!("40 rotated files: at most {fds} descriptors, {watches} watches");
    assert!(notices.is_empty(), "{notices:?}");
    // The current file, 16 waiting and 16 in their rotate-wait at most.
    assert!(
        fds <= fds_before + 34,
        "{fds} descriptors, from {fds_before}"
    );
    assert!(
        watches <= watches_before + 34,
        "{watches} watches, from {watches_before}"
    );
}
