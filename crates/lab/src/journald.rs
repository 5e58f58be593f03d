//! A `systemd-journald` of a test's own, started in a private mount namespace and read back
//! with `journalctl --directory`: what the journald tests of shield-watch write to.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::{Map, Value};

/// Longest any bounded poll here waits; a passing test never reaches it.
const DEADLINE: Duration = Duration::from_secs(20);

/// Pause between two looks at something that is not there yet.
const POLL: Duration = Duration::from_millis(10);

/// Runs as the child's shell, in its own mount namespace (`unshare --mount`), then becomes
/// journald. Everything journald writes lands on tmpfs or in the test's directory ($1): its
/// socket directory and the volatile journal are bind-mounted from there, so the test reaches
/// the socket and `journalctl --directory` reads the files from outside the namespace. The
/// drop-in, last by name, keeps it off the host: no kernel log, no syslog or wall forwarding,
/// and `Audit=` unset so that it leaves the kernel's audit setting alone (the default turns
/// auditing off). Rate limiting is off so that a burst in a test is not thinned out.
const JOURNALD_SCRIPT: &str = r#"set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=0755 tmpfs /var/log/journal; fi
mkdir -p /run/systemd/journal /run/log/journal /run/systemd/journald.conf.d
mount --bind "$1/socket" /run/systemd/journal
mount --bind "$1/journal" /run/log/journal
cat > /run/systemd/journald.conf.d/zzz-shield-watch-test.conf <<'CONF'
[Journal]
Storage=volatile
ReadKMsg=no
Audit=
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitIntervalSec=0
CONF
exec /lib/systemd/systemd-journald
"#;

/// A systemd-journald of the test's own, in a private mount namespace, stopped on drop.
pub struct Journald {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Journald {
    /// Starts one; returns once its native socket takes a connection.
    pub fn start() -> Journald {
        assert!(
            Path::new("/lib/systemd/systemd-journald").exists(),
            "the journald tests need /lib/systemd/systemd-journald (Debian package systemd)"
        );
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("socket")).unwrap();
        fs::create_dir(dir.path().join("journal")).unwrap();
        let mut journald = Journald { dir, child: None };
        journald.spawn();
        journald
    }

    /// Its native socket (what `--journal-socket` takes).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("socket/socket")
    }

    /// Its process ID: `/proc/PID/ns/mnt` is the mount namespace where `/run/log/journal`
    /// holds its files, for a reader of the journal (rsyslog's imjournal) to enter.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("journald runs").id()
    }

    /// What journald said on its stdout and stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("journald.log")).unwrap_or_default()
    }

    /// Starts journald and returns once its native socket takes a connection (a socket
    /// file left by a stopped one refuses it).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("journald.log"))
            .unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(JOURNALD_SCRIPT)
            .arg("journald")
            .arg(self.dir.path())
            .env("SYSTEMD_LOG_TARGET", "console")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux) runs");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let probe = UnixDatagram::unbound().unwrap();
            if probe.connect(self.socket()).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("journald exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "journald did not open its socket:\n{}",
                self.log()
            );
            thread::sleep(POLL);
        }
    }

    /// Sends `signal` to journald (`STOP` and `CONT` make it slow, then well again).
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("journald runs");
        kill_process(Pid::from_child(child), signal).unwrap();
    }

    /// Stops journald as systemd would (SIGTERM) and waits for it to be gone.
    pub fn stop(&mut self) {
        self.signal(Signal::TERM);
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "journald: {status}\n{}", self.log());
    }

    /// The entries matching `matches` (journalctl's `FIELD=value` terms), oldest first.
    pub fn entries(&self, matches: &[&str]) -> Vec<Map<String, Value>> {
        // journald writes into a directory named after the machine ID.
        let Some(files) = fs::read_dir(self.dir.path().join("journal"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.is_dir())
        else {
            return Vec::new();
        };
        let output = Command::new("journalctl")
            .arg("--directory")
            .arg(files)
            .args(["--output=json", "--all", "--no-pager", "--quiet"])
            .args(matches)
            .output()
            .expect("journalctl runs");
        assert!(
            output.status.success(),
            "journalctl: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Waits until exactly `count` entries match (a bounded poll), and returns them.
    pub fn wait_for(&self, matches: &[&str], count: usize) -> Vec<Map<String, Value>> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let entries = self.entries(matches);
            assert!(
                entries.len() <= count,
                "{} entries match {matches:?}, expected {count}",
                entries.len()
            );
            if entries.len() == count {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} entries matching {matches:?} arrived:\n{}",
                entries.len(),
                self.log()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_process(Pid::from_child(&child), Signal::CONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A field's bytes as `journalctl -o json` gives them: a string, or an array of bytes for a
/// value that is not printable text. A field given more than once (an array of values) fails.
pub fn bytes(entry: &Map<String, Value>, key: &str) -> Vec<u8> {
    match entry.get(key) {
        Some(Value::String(text)) => text.as_bytes().to_vec(),
        Some(Value::Array(values)) if values.iter().all(Value::is_u64) => {
            values.iter().map(|b| b.as_u64().unwrap() as u8).collect()
        }
        Some(Value::Array(values)) => panic!("{key} given {} times: {values:?}", values.len()),
        other => panic!("{key} is {other:?} in {entry:?}"),
    }
}

/// A field's value as text (see [`bytes`]).
pub fn text(entry: &Map<String, Value>, key: &str) -> String {
    String::from_utf8(bytes(entry, key)).unwrap()
}
