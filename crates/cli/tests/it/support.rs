//! The binary under test, its state directory, and shield-lab's driver with the tests' deadline.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

/// How long any single expected thing may take before a test fails. Generous: the machines are
/// shared and slow; a passing test never waits for it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A state directory in a temp dir.
pub struct State {
    pub dir: tempfile::TempDir,
}

impl State {
    /// A state dir with the given `dns.tier` content (none when `None`).
    pub fn new(tier: Option<&str>) -> State {
        State::new_in(&std::env::temp_dir(), tier)
    }

    /// The same, inside `parent` (the confinement reads the state directory's parent).
    pub fn new_in(parent: &Path, tier: Option<&str>) -> State {
        let dir = tempfile::Builder::new()
            .prefix("shield-watch-it-")
            .tempdir_in(parent)
            .unwrap();
        if let Some(tier) = tier {
            fs::write(dir.path().join("dns.tier"), tier).unwrap();
        }
        State { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Appends raw bytes to a file of the state dir, as a writer process would.
    pub fn append(&self, name: &str, bytes: &[u8]) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(name))
            .unwrap();
        file.write_all(bytes).unwrap();
    }
}

/// The binary under test: the one cargo built, or `SHIELD_WATCH_TEST_BINARY` (to show that a
/// test fails on an older build).
/// Gives `path` (not what a symlink there leads to) to `uid`, group and user.
pub fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

pub fn binary() -> Command {
    match std::env::var_os("SHIELD_WATCH_TEST_BINARY") {
        Some(path) => Command::new(path),
        None => Command::new(env!("CARGO_BIN_EXE_shield-watch")),
    }
}

/// shield-watch run by shield-lab's driver ([`shield_lab::Watch`]), with the tests' deadline:
/// every wait that fails panics with what was seen.
pub struct Watch(shield_lab::Watch);

impl Watch {
    /// Starts `shield-watch --state-dir STATE ARGS...` and waits for its ready line.
    pub fn start(state: &State, args: &[&str]) -> Watch {
        Watch::start_with_env(state, args, &[])
    }

    /// Starts it with extra environment variables and waits for its ready line.
    pub fn start_with_env(state: &State, args: &[&str], env: &[(&str, &OsStr)]) -> Watch {
        let mut watch = Watch::spawn_unread(state, args, env);
        watch.start_reading();
        watch.wait_ready();
        watch
    }

    /// Starts it without waiting.
    pub fn spawn(state: &State, args: &[&str]) -> Watch {
        let mut watch = Watch::spawn_unread(state, args, &[]);
        watch.start_reading();
        watch
    }

    /// Starts it and waits for the ready line, but nobody reads its stdout until
    /// [`Watch::start_reading`]: once the pipe is full, its writes block, as behind a stopped
    /// pager.
    pub fn start_unread(state: &State, args: &[&str]) -> Watch {
        Watch::start_unread_with_env(state, args, &[])
    }

    /// [`Watch::start_unread`] with extra environment variables.
    pub fn start_unread_with_env(state: &State, args: &[&str], env: &[(&str, &OsStr)]) -> Watch {
        let mut watch = Watch::spawn_unread(state, args, env);
        watch.wait_ready();
        watch
    }

    fn spawn_unread(state: &State, args: &[&str], env: &[(&str, &OsStr)]) -> Watch {
        let mut command = binary();
        command.arg("--state-dir").arg(state.path()).args(args);
        command.envs(env.iter().copied());
        Watch::spawn_command_unread(command)
    }

    /// Starts `command` (the binary, or a wrapper that executes it) without waiting.
    pub fn spawn_command(command: Command) -> Watch {
        let mut watch = Watch::spawn_command_unread(command);
        watch.start_reading();
        watch
    }

    /// Starts `command` without waiting, its stdout read by nobody (see [`Watch::take_stdout`]).
    pub fn spawn_command_unread(command: Command) -> Watch {
        Watch(shield_lab::Watch::spawn(command).unwrap_or_else(|e| panic!("{e}")))
    }

    fn wait_ready(&mut self) {
        self.wait_stderr(|line| line.starts_with(shield_lab::READY));
    }

    /// The raw stdout pipe, for a test that reads it at its own pace.
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.0.take_stdout().expect("stdout not yet read")
    }

    /// Starts reading its stdout (see [`Watch::start_unread`]).
    pub fn start_reading(&mut self) {
        self.0.read_stdout();
    }

    /// Waits for a stderr line matching `want`; returns it. Panics with everything seen on timeout.
    pub fn wait_stderr(&mut self, want: impl Fn(&str) -> bool) -> String {
        self.0
            .wait_stderr(want, deadline())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The stderr lines read so far.
    pub fn stderr_seen(&self) -> &[String] {
        self.0.stderr_seen()
    }

    /// The stderr lines that have come so far, without waiting.
    pub fn stderr_now(&mut self) -> Vec<String> {
        self.0.stderr_now().to_vec()
    }

    /// The next `n` stdout lines, each within the deadline.
    pub fn lines(&mut self, n: usize) -> Vec<String> {
        self.0
            .lines(n, deadline())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Up to `n` stdout lines, as many as arrive within `limit`.
    pub fn lines_within(&mut self, n: usize, limit: Duration) -> Vec<String> {
        self.0.lines_within(n, limit)
    }

    /// Stdout lines up to and including the first one matching `last`, within the deadline.
    pub fn lines_until(&mut self, last: impl Fn(&str) -> bool) -> Vec<String> {
        self.0
            .lines_until(last, deadline())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every stdout line until the stream ends (after the process died), within the deadline.
    pub fn rest(&mut self) -> Vec<String> {
        self.0.rest(deadline()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Asserts nothing more arrives on stdout within `quiet`. Only used after a marker line that
    /// was written after the input under test, so a pass does not depend on timing.
    pub fn no_more_lines(&mut self, quiet: Duration) {
        if let Ok(line) = self.0.next_line(Instant::now() + quiet) {
            panic!("unexpected line: {line}");
        }
    }

    /// Closes our end of its stdout, as `| head` does after reading enough.
    pub fn close_stdout(&mut self) {
        self.0.close_stdout();
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        self.0.signal(signal).expect("kill");
    }

    /// Waits for the process to exit within the deadline; returns its status and its stderr.
    pub fn wait_exit(&mut self) -> (ExitStatus, Vec<String>) {
        self.0
            .wait_exit(deadline())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }
}

/// When a wait that starts now gives up.
fn deadline() -> Instant {
    Instant::now() + DEADLINE
}

/// Runs the binary to completion with a deadline (for the quick exit-code cases).
pub fn run_to_exit(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    let mut command = binary();
    command.args(args);
    let mut watch = Watch::spawn_command(command);
    let (status, err) = watch.wait_exit();
    let out = watch.rest();
    (status, out.join("\n"), err.join("\n"))
}

/// Checks every thread of process `pid` after the ready line: its effective, permitted and
/// bounding capability sets are `keeps(thread name)` (as `/proc` shows them, 16 hex digits),
/// its inheritable and ambient sets are empty, and `no_new_privs` is set. Returns the thread
/// names, sorted, so the caller can check that none escaped.
pub fn assert_thread_privileges(pid: u32, keeps: impl Fn(&str) -> &'static str) -> Vec<String> {
    let mut names = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm"))
            .unwrap()
            .trim()
            .to_string();
        let status = fs::read_to_string(task.join("status")).unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}:")))
                .unwrap_or_else(|| panic!("no {key} in {status}"))
                .trim()
                .to_string()
        };
        let keep = keeps(&name);
        for (key, want) in [
            ("CapEff", keep),
            ("CapPrm", keep),
            ("CapBnd", keep),
            ("CapInh", "0000000000000000"),
            ("CapAmb", "0000000000000000"),
            ("NoNewPrivs", "1"),
        ] {
            assert_eq!(field(key), want, "{key} of thread {name}");
        }
        names.push(name);
    }
    names.sort();
    names
}

/// The nflog helper's PID, from its confinement line (`nflog helper (pid N) confined: ...`).
pub fn helper_pid(stderr: &[String]) -> u32 {
    stderr
        .iter()
        .find_map(|l| l.strip_prefix("shield-watch: nflog helper (pid "))
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no helper line: {stderr:#?}"))
}

/// The first destination port of [`paced_packets`].
const FIRST_PORT: u16 = 20000;

/// Sends `count` UDP packets from inside the network namespace `ns`, one every 10 ms, to
/// `dest`, each to its own port (from 20000 on), on a thread of its own. A shield's reject
/// makes the send fail (EPERM): the packet was logged before it was refused.
pub fn paced_packets(ns: PathBuf, dest: &'static str, count: u16) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let ns = fs::File::open(&ns).unwrap();
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..count {
            let _ = socket.send_to(b"probe", (dest, FIRST_PORT + i));
            thread::sleep(Duration::from_millis(10));
        }
    })
}

/// Reads the stream up to the last of [`paced_packets`]' packets; returns the ports of those
/// neither shown nor seen, and how many packets `nflog_overrun` events reported lost.
pub fn unshown_packets(watch: &mut Watch, dest: &str, count: u16) -> (Vec<u64>, u64) {
    let last = FIRST_PORT + count - 1;
    let lines = watch.lines_until(|line| {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        event["port"] == last
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut lost = 0u64;
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["action"] == "nflog_overrun" {
            lost += event["extra"]["lost"]
                .as_str()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        } else if event["dest"] == dest {
            seen.insert(event["port"].as_u64().unwrap());
        }
    }
    let missing = (u64::from(FIRST_PORT)..=u64::from(last))
        .filter(|p| !seen.contains(p))
        .collect();
    (missing, lost)
}
