//! The journald output: one journal entry per event, over journald's native protocol.
//!
//! A [`Journal`] holds one non-blocking `SOCK_DGRAM` socket connected to journald's native
//! socket (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>) and writes each event as one datagram
//! of fields: `MESSAGE` is the event's JSON line, `PRIORITY` says whether it was a refusal, and
//! the event's own fields are there as `SHIELD_*` to match on (`journalctl SHIELD_CONTAINER=c
//! SHIELD_ACTION=blocked_query`). An entry too large for a datagram goes as a sealed memfd, as
//! `sd_journal_sendv` sends it.
//!
//! **Invariant:** `send` never blocks the writer thread that calls it. When journald is slow (its
//! queue full) or gone (stopped, restarting), the entry is dropped and counted in
//! [`Journal::dropped`]; a connection that failed is tried again at most once a second.
//!
//! **Invariant:** no value can add a field of its own. The `SHIELD_*` values pass through the
//! event's sanitiser (printable ASCII only), and any value that still holds a newline (the JSON
//! line is the caller's) is written in the protocol's length-prefixed form, never as `KEY=value`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::net::{
    connect, send, sendmsg, socket_with, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use shield_event::{Event, Sanitized};

/// Where journald listens for native-protocol datagrams.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// How long after a failed connection (or a send that found journald gone) the next attempt
/// waits: a restarting journald is found again within a second, and a missing one costs one
/// `connect` a second instead of one per event.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// `SYSLOG_IDENTIFIER` of every entry: what `journalctl -t shield-watch` selects.
const IDENTIFIER: &[u8] = b"shield-watch";

/// Actions that report something the shield refused or an event that was lost: their entries
/// get priority warning (4), every other event info (6).
const BLOCKING_ACTIONS: [&str; 6] = [
    "blocked_query",
    "blocked_connection",
    "queued_connection",
    "private_range",
    "denied",
    "nflog_overrun",
];

/// A connection to journald's native socket that never blocks its caller.
///
/// | setting | default |
/// |---|---|
/// | socket | [`DEFAULT_SOCKET`], or the path given to [`Journal::connect`] |
/// | retry after a failure | 1 s |
/// | socket buffer | the kernel's default; larger entries go as a sealed memfd |
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// `None` while journald is unreachable.
    socket: Option<OwnedFd>,
    /// No connection is tried before this instant.
    next_attempt: Instant,
    dropped: u64,
    /// The datagram being built, kept across sends so that its allocation is reused.
    entry: Vec<u8>,
    /// One sanitised value or one number at a time, on its way into `entry`.
    value: String,
}

impl Journal {
    /// Connects to journald's native socket at `socket` ([`DEFAULT_SOCKET`] in production).
    ///
    /// Never fails: when journald is not there, entries are dropped and counted until a later
    /// attempt (at most one a second) finds it.
    pub fn connect(socket: &Path) -> Journal {
        let now = Instant::now();
        let mut journal = Journal {
            path: socket.to_owned(),
            socket: None,
            next_attempt: now,
            dropped: 0,
            entry: Vec::with_capacity(1024),
            value: String::with_capacity(256),
        };
        journal.reconnect(now);
        journal
    }

    /// Writes `event` as one journal entry whose `MESSAGE` is `json_line` (the event's JSON
    /// line as written to stdout; its trailing newline is not part of the message).
    ///
    /// Never blocks: an entry journald cannot take now is dropped and counted.
    pub fn send(&mut self, event: &Event, json_line: &[u8]) {
        if self.socket.is_none() {
            let now = Instant::now();
            if now < self.next_attempt || !self.reconnect(now) {
                self.dropped += 1;
                return;
            }
        }
        let Some(socket) = &self.socket else {
            unreachable!("connected above");
        };
        encode(&mut self.entry, &mut self.value, event, json_line);
        let sent = match send(socket, &self.entry, SendFlags::NOSIGNAL) {
            Ok(_) => Ok(()),
            // Larger than the socket buffer allows: sd_journal_sendv's way round it.
            Err(Errno::MSGSIZE | Errno::NOBUFS) => send_as_memfd(socket.as_fd(), &self.entry),
            Err(err) => Err(err),
        };
        match sent {
            Ok(()) => {}
            // journald's queue is full, or this process is short of memory or descriptors:
            // this entry is lost, the connection is fine.
            Err(Errno::AGAIN | Errno::MSGSIZE | Errno::NOBUFS | Errno::NOMEM)
            | Err(Errno::MFILE | Errno::NFILE) => self.dropped += 1,
            // Refused, reset, gone: journald stopped or is restarting. Its new socket is a new
            // peer, which only a new connection reaches.
            Err(_) => {
                self.dropped += 1;
                self.socket = None;
                self.next_attempt = Instant::now() + RETRY_AFTER;
            }
        }
    }

    /// How many entries were dropped because journald was slow or gone.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Opens a new connection; on failure, schedules the next attempt. Says whether it worked.
    fn reconnect(&mut self, now: Instant) -> bool {
        match open(&self.path) {
            Ok(socket) => {
                self.socket = Some(socket);
                true
            }
            Err(_) => {
                self.socket = None;
                self.next_attempt = now + RETRY_AFTER;
                false
            }
        }
    }
}

/// A non-blocking datagram socket connected to `path`. Connecting a datagram socket only
/// records the peer, so this does not wait either; it fails at once when nothing listens.
fn open(path: &Path) -> rustix::io::Result<OwnedFd> {
    let socket = socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    connect(&socket, &SocketAddrUnix::new(path)?)?;
    Ok(socket)
}

/// Sends `entry` as journald takes entries too large for a datagram: written into a memfd,
/// sealed against any change, and the descriptor passed in an otherwise empty datagram.
fn send_as_memfd(socket: BorrowedFd<'_>, entry: &[u8]) -> rustix::io::Result<()> {
    let memfd = memfd_create(
        "shield-watch-journal",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = File::from(memfd);
    file.write_all(entry).map_err(|err| {
        err.raw_os_error()
            .map_or(Errno::IO, Errno::from_raw_os_error)
    })?;
    // journald refuses a memfd its sender could still change.
    fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    let fds = [file.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let pushed = control.push(SendAncillaryMessage::ScmRights(&fds));
    debug_assert!(pushed, "the buffer is sized for one descriptor");
    sendmsg(
        socket,
        &[IoSlice::new(&[])],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// The journal priority of an event: warning (4) for a refusal or a loss, info (6) otherwise.
fn priority(action: &str) -> &'static [u8] {
    if BLOCKING_ACTIONS.contains(&action) {
        b"4"
    } else {
        b"6"
    }
}

/// Builds the datagram of one entry into `entry` (cleared first); `value` is scratch space.
fn encode(entry: &mut Vec<u8>, value: &mut String, event: &Event, json_line: &[u8]) {
    entry.clear();
    let message = json_line.strip_suffix(b"\n").unwrap_or(json_line);
    field(entry, "MESSAGE", message);
    field(entry, "PRIORITY", priority(&event.action));
    field(entry, "SYSLOG_IDENTIFIER", IDENTIFIER);
    text_field(entry, value, "SHIELD_CONTAINER", &event.container);
    field(entry, "SHIELD_SOURCE", event.source.as_str().as_bytes());
    for (key, text) in [
        ("SHIELD_ACTION", &event.action),
        ("SHIELD_DOMAIN", &event.domain),
        ("SHIELD_QUERY_TYPE", &event.query_type),
        ("SHIELD_DEST", &event.dest),
        ("SHIELD_DETAIL", &event.detail),
    ] {
        text_field(entry, value, key, text);
    }
    for (key, number) in [("SHIELD_PORT", event.port), ("SHIELD_PROTO", event.proto)] {
        // 0 is "none", as in the JSON line.
        if number != 0 {
            value.clear();
            let _ = write!(value, "{number}");
            field(entry, key, value.as_bytes());
        }
    }
}

/// Writes `text` sanitised as the JSON line has it, unless it is empty.
fn text_field(entry: &mut Vec<u8>, value: &mut String, key: &str, text: &str) {
    if text.is_empty() {
        return;
    }
    value.clear();
    let _ = write!(value, "{}", Sanitized(text));
    field(entry, key, value.as_bytes());
}

/// Writes one field: `KEY=value\n`, or, when the value holds a newline, which would end the
/// field early and let the rest pose as fields, `KEY\n`, its length as a little-endian u64, the
/// bytes, `\n`.
fn field(entry: &mut Vec<u8>, key: &str, value: &[u8]) {
    entry.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::net::UnixDatagram;
    use std::process::{Child, Command, Stdio};
    use std::thread;

    use rustix::net::sockopt::socket_send_buffer_size;
    use rustix::process::{kill_process, Pid, Signal};
    use serde_json::{Map, Value};
    use shield_event::Source;

    /// Longest any bounded poll waits; a passing test never reaches it.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// Pause between two looks at something that is not there yet.
    const POLL: Duration = Duration::from_millis(10);

    fn blocked_query(container: &str, domain: &str, query_type: &str) -> Event {
        let mut event = Event::new(
            "2026-03-31T12:00:00.123456+00:00",
            Source::Dns,
            "blocked_query",
            container,
        );
        event.domain = domain.into();
        event.query_type = query_type.into();
        event
    }

    /// Reads a datagram back into its fields, as journald does: `KEY=value` or `KEY\n` + a
    /// little-endian u64 length + bytes + `\n`.
    fn fields(mut datagram: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !datagram.is_empty() {
            let end = datagram
                .iter()
                .position(|&b| b == b'=' || b == b'\n')
                .expect("every field has an end");
            let key = String::from_utf8(datagram[..end].to_vec()).unwrap();
            if datagram[end] == b'=' {
                let rest = &datagram[end + 1..];
                let stop = rest.iter().position(|&b| b == b'\n').expect("ends in \\n");
                out.push((key, rest[..stop].to_vec()));
                datagram = &rest[stop + 1..];
            } else {
                let rest = &datagram[end + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                out.push((key, rest[8..8 + len].to_vec()));
                assert_eq!(rest[8 + len], b'\n', "binary field ends in \\n");
                datagram = &rest[8 + len + 1..];
            }
        }
        out
    }

    fn encoded(event: &Event, json_line: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut entry = Vec::new();
        encode(&mut entry, &mut String::new(), event, json_line);
        fields(&entry)
    }

    #[test]
    fn an_entry_carries_the_line_and_every_field_the_event_has() {
        let mut event = Event::new("T", Source::Nflog, "blocked_connection", "c1");
        event.dest = "192.0.2.1".into();
        event.detail = "TEROK_SHIELD_DENIED:".into();
        event.port = 443;
        event.proto = 6;
        let line = event.to_json_line();
        let mut entry = Vec::new();
        encode(&mut entry, &mut String::new(), &event, line.as_bytes());
        let expected = format!(
            "MESSAGE={}\nPRIORITY=4\nSYSLOG_IDENTIFIER=shield-watch\nSHIELD_CONTAINER=c1\n\
             SHIELD_SOURCE=nflog\nSHIELD_ACTION=blocked_connection\nSHIELD_DEST=192.0.2.1\n\
             SHIELD_DETAIL=TEROK_SHIELD_DENIED:\nSHIELD_PORT=443\nSHIELD_PROTO=6\n",
            line.trim_end_matches('\n')
        );
        assert_eq!(String::from_utf8(entry).unwrap(), expected);
    }

    #[test]
    fn empty_fields_are_left_out() {
        let event = Event::new("T", Source::Audit, "setup", "");
        let keys: Vec<String> = encoded(&event, b"{}\n")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "MESSAGE",
                "PRIORITY",
                "SYSLOG_IDENTIFIER",
                "SHIELD_SOURCE",
                "SHIELD_ACTION"
            ]
        );
    }

    #[test]
    fn priority_is_warning_for_refusals_and_losses_only() {
        for action in BLOCKING_ACTIONS {
            assert_eq!(priority(action), b"4", "{action}");
        }
        for action in [
            "allowed",
            "setup",
            "teardown",
            "shield_up",
            "",
            "BLOCKED_QUERY",
        ] {
            assert_eq!(priority(action), b"6", "{action}");
        }
    }

    #[test]
    fn no_value_can_add_a_field() {
        let mut event = blocked_query(
            "c\nSHIELD_CONTAINER=forged",
            "evil\nPRIORITY=0\n\x1b[31m.example",
            "A",
        );
        event.detail = "d\u{202e}\r\nSYSLOG_IDENTIFIER=x".into();
        // The caller's line is not sanitised here: a newline in it takes the binary form.
        let line = b"{\"a\":1}\nSHIELD_ACTION=allowed\nPRIORITY=7\n";
        let fields: BTreeMap<String, Vec<Vec<u8>>> =
            encoded(&event, line)
                .into_iter()
                .fold(BTreeMap::new(), |mut map, (key, value)| {
                    map.entry(key).or_default().push(value);
                    map
                });
        let one = |key: &str| -> &[u8] {
            let values = &fields[key];
            assert_eq!(values.len(), 1, "{key} given {} times", values.len());
            &values[0]
        };
        assert_eq!(
            one("MESSAGE"),
            b"{\"a\":1}\nSHIELD_ACTION=allowed\nPRIORITY=7"
        );
        assert_eq!(one("PRIORITY"), b"4");
        assert_eq!(one("SYSLOG_IDENTIFIER"), b"shield-watch");
        assert_eq!(one("SHIELD_ACTION"), b"blocked_query");
        assert_eq!(one("SHIELD_CONTAINER"), b"c SHIELD_CONTAINER=forged");
        assert_eq!(one("SHIELD_DOMAIN"), b"evil PRIORITY=0  [31m.example");
        assert_eq!(one("SHIELD_DETAIL"), b"d   SYSLOG_IDENTIFIER=x");
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            [
                "MESSAGE",
                "PRIORITY",
                "SHIELD_ACTION",
                "SHIELD_CONTAINER",
                "SHIELD_DETAIL",
                "SHIELD_DOMAIN",
                "SHIELD_QUERY_TYPE",
                "SHIELD_SOURCE",
                "SYSLOG_IDENTIFIER"
            ]
        );
    }

    #[test]
    fn nobody_listening_costs_no_wait_and_every_entry_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::connect(&dir.path().join("socket"));
        let event = blocked_query("c", "evil.example.com", "A");
        let line = event.to_json_line();
        let start = Instant::now();
        for _ in 0..10_000 {
            journal.send(&event, line.as_bytes());
        }
        let took = start.elapsed();
        assert_eq!(journal.dropped(), 10_000);
        assert!(took < Duration::from_secs(1), "10 000 sends took {took:?}");
    }

    /// A journal whose reader does not read: the queue fills, sends fail with EAGAIN at once,
    /// and once the reader catches up the same connection carries entries again.
    #[test]
    fn a_slow_reader_loses_entries_not_time_nor_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let reader = UnixDatagram::bind(&path).unwrap();
        let mut journal = Journal::connect(&path);
        let event = blocked_query("c", "evil.example.com", "A");
        let line = event.to_json_line();
        let start = Instant::now();
        for _ in 0..10_000 {
            journal.send(&event, line.as_bytes());
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "10 000 sends took {took:?}");
        reader.set_nonblocking(true).unwrap();
        let mut buf = vec![0; 64 * 1024];
        let mut queued = 0;
        while reader.recv(&mut buf).is_ok() {
            queued += 1;
        }
        assert!(queued > 0);
        assert_eq!(journal.dropped() + queued, 10_000);
        // Right away, not a second later: the connection was kept.
        journal.send(&event, line.as_bytes());
        reader.set_nonblocking(false).unwrap();
        reader.set_read_timeout(Some(DEADLINE)).unwrap();
        let n = reader.recv(&mut buf).unwrap();
        assert_eq!(fields(&buf[..n])[0].1, line.trim_end().as_bytes());
        assert_eq!(journal.dropped() + queued, 10_000);
    }

    /// journald not there at first: nothing is tried for a second, then the next send finds it.
    #[test]
    fn a_missing_journal_is_looked_for_again_after_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let connected = Instant::now();
        let mut journal = Journal::connect(&path);
        let reader = UnixDatagram::bind(&path).unwrap();
        reader.set_nonblocking(true).unwrap();
        let event = blocked_query("c", "evil.example.com", "A");
        let line = event.to_json_line();
        let mut buf = vec![0; 64 * 1024];
        let mut sent = 0;
        let first = loop {
            journal.send(&event, line.as_bytes());
            sent += 1;
            if reader.recv(&mut buf).is_ok() {
                break Instant::now();
            }
            assert!(connected.elapsed() < DEADLINE, "never reconnected");
            thread::sleep(POLL);
        };
        assert!(first - connected >= RETRY_AFTER);
        assert_eq!(journal.dropped(), sent - 1);
    }

    // ---- against the real systemd-journald ----

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

    /// A systemd-journald of the test's own, in a private mount namespace.
    struct Journald {
        dir: tempfile::TempDir,
        child: Option<Child>,
    }

    impl Journald {
        fn start() -> Journald {
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

        fn socket(&self) -> PathBuf {
            self.dir.path().join("socket/socket")
        }

        fn log(&self) -> String {
            fs::read_to_string(self.dir.path().join("journald.log")).unwrap_or_default()
        }

        /// Starts journald and returns once its native socket takes a connection (a socket
        /// file left by a stopped one refuses it).
        fn spawn(&mut self) {
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

        fn signal(&self, signal: Signal) {
            let child = self.child.as_ref().expect("journald runs");
            kill_process(Pid::from_child(child), signal).unwrap();
        }

        /// Stops journald as systemd would (SIGTERM) and waits for it to be gone.
        fn stop(&mut self) {
            self.signal(Signal::TERM);
            let status = self.child.take().unwrap().wait().unwrap();
            assert!(status.success(), "journald: {status}\n{}", self.log());
        }

        /// The entries matching `matches` (journalctl's `FIELD=value` terms), oldest first.
        fn entries(&self, matches: &[&str]) -> Vec<Map<String, Value>> {
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
        fn wait_for(&self, matches: &[&str], count: usize) -> Vec<Map<String, Value>> {
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
    /// value that is not printable text.
    fn bytes(entry: &Map<String, Value>, key: &str) -> Vec<u8> {
        match entry.get(key) {
            Some(Value::String(text)) => text.as_bytes().to_vec(),
            Some(Value::Array(values)) => values
                .iter()
                .map(|b| b.as_u64().expect("a byte") as u8)
                .collect(),
            other => panic!("{key} is {other:?} in {entry:?}"),
        }
    }

    fn text(entry: &Map<String, Value>, key: &str) -> String {
        String::from_utf8(bytes(entry, key)).unwrap()
    }

    fn message_of(line: &str) -> &[u8] {
        line.strip_suffix('\n').unwrap().as_bytes()
    }

    #[test]
    fn journald_keeps_one_entry_per_event_with_its_fields() {
        let journald = Journald::start();
        let mut journal = Journal::connect(&journald.socket());

        let first = blocked_query("c", "evil.example.com", "A");
        let second = blocked_query("c", "x.example.org", "AAAA");
        // Escape sequences and newlines in a name an attacker chose: sanitised in the line and
        // in SHIELD_DOMAIN, and neither can pose as a field of its own.
        let hostile = blocked_query(
            "c",
            "evil\nSHIELD_ACTION=allowed\nPRIORITY=0\n\x1b[31m.example",
            "A",
        );
        let other_container = blocked_query("other", "evil.example.com", "A");
        let mut allowed = Event::new("2026-03-31T12:00:01Z", Source::Audit, "allowed", "c");
        allowed.domain = "github.com".into();
        let mut packet = Event::new("T", Source::Nflog, "blocked_connection", "c");
        packet.dest = "192.0.2.1".into();
        packet.detail = "TEROK_SHIELD_DENIED:".into();
        packet.port = 443;
        packet.proto = 6;
        for event in [
            &first,
            &second,
            &hostile,
            &other_container,
            &allowed,
            &packet,
        ] {
            journal.send(event, event.to_json_line().as_bytes());
        }
        // A line with newlines of its own (not one the event writer makes): the message keeps
        // them, and the fields after them stay inside it.
        let raw = Event::new("T", Source::Audit, "setup", "raw");
        let raw_line = b"{\"a\":1}\nSHIELD_CONTAINER=c\nSHIELD_ACTION=blocked_query\n";
        journal.send(&raw, raw_line);
        // Larger than a datagram may be with the default socket buffer: goes as a memfd.
        let big = Event::new("T", Source::Audit, "setup", "big");
        let big_line = format!("{{\"detail\":\"{}\"}}\n", "x".repeat(1 << 20));
        let buffer = socket_send_buffer_size(journal.socket.as_ref().unwrap()).unwrap();
        assert!(
            big_line.len() > buffer,
            "a {buffer}-byte buffer takes the big line"
        );
        journal.send(&big, big_line.as_bytes());
        assert_eq!(journal.dropped(), 0);

        journald.wait_for(&["SYSLOG_IDENTIFIER=shield-watch"], 8);
        let blocked = journald.entries(&["SHIELD_CONTAINER=c", "SHIELD_ACTION=blocked_query"]);
        let messages: Vec<Vec<u8>> = blocked.iter().map(|e| bytes(e, "MESSAGE")).collect();
        let expected: Vec<String> = [&first, &second, &hostile]
            .iter()
            .map(|e| e.to_json_line())
            .collect();
        let expected: Vec<&[u8]> = expected.iter().map(|l| message_of(l)).collect();
        assert_eq!(messages, expected);
        for entry in &blocked {
            assert_eq!(text(entry, "PRIORITY"), "4");
            assert_eq!(text(entry, "SYSLOG_IDENTIFIER"), "shield-watch");
            assert_eq!(text(entry, "SHIELD_SOURCE"), "dns");
            assert_eq!(text(entry, "SHIELD_ACTION"), "blocked_query");
            assert_eq!(text(entry, "SHIELD_CONTAINER"), "c");
        }
        assert_eq!(text(&blocked[0], "SHIELD_DOMAIN"), "evil.example.com");
        assert_eq!(text(&blocked[0], "SHIELD_QUERY_TYPE"), "A");
        assert_eq!(text(&blocked[1], "SHIELD_QUERY_TYPE"), "AAAA");
        assert_eq!(
            text(&blocked[2], "SHIELD_DOMAIN"),
            "evil SHIELD_ACTION=allowed PRIORITY=0  [31m.example"
        );
        // The forged terms in the hostile name matched nothing.
        assert!(journald.entries(&["PRIORITY=0"]).is_empty());

        let allowed_entries = journald.entries(&["SHIELD_ACTION=allowed"]);
        assert_eq!(allowed_entries.len(), 1);
        assert_eq!(text(&allowed_entries[0], "PRIORITY"), "6");
        assert_eq!(
            bytes(&allowed_entries[0], "MESSAGE"),
            message_of(&allowed.to_json_line())
        );

        let packets = journald.entries(&["SHIELD_ACTION=blocked_connection"]);
        assert_eq!(packets.len(), 1);
        for (key, value) in [
            ("SHIELD_DEST", "192.0.2.1"),
            ("SHIELD_DETAIL", "TEROK_SHIELD_DENIED:"),
            ("SHIELD_PORT", "443"),
            ("SHIELD_PROTO", "6"),
            ("SHIELD_SOURCE", "nflog"),
            ("PRIORITY", "4"),
        ] {
            assert_eq!(text(&packets[0], key), value, "{key}");
        }
        assert!(!packets[0].contains_key("SHIELD_DOMAIN"));

        let raw_entries = journald.entries(&["SHIELD_CONTAINER=raw"]);
        assert_eq!(raw_entries.len(), 1);
        assert_eq!(
            bytes(&raw_entries[0], "MESSAGE"),
            raw_line[..raw_line.len() - 1]
        );
        assert_eq!(text(&raw_entries[0], "SHIELD_ACTION"), "setup");

        let big_entries = journald.entries(&["SHIELD_CONTAINER=big"]);
        assert_eq!(big_entries.len(), 1);
        assert!(bytes(&big_entries[0], "MESSAGE") == message_of(&big_line));
    }

    /// journald stopped (SIGSTOP), then gone (SIGTERM), then back: sends never wait, what was
    /// lost is counted exactly, and entries arrive again once it is back.
    #[test]
    fn journald_stopped_and_restarted_mid_stream() {
        let mut journald = Journald::start();
        let mut journal = Journal::connect(&journald.socket());
        let mut sent = 0_u64;
        let mut send = |journal: &mut Journal| {
            let event = blocked_query("r", &format!("n{sent}.example"), "A");
            journal.send(&event, event.to_json_line().as_bytes());
            sent += 1;
        };
        let all = ["SHIELD_CONTAINER=r"];

        for _ in 0..5 {
            send(&mut journal);
        }
        journald.wait_for(&all, 5);
        assert_eq!(journal.dropped(), 0);

        // Alive but not reading: its queue fills, the rest is dropped at once.
        journald.signal(Signal::STOP);
        let start = Instant::now();
        for _ in 0..10_000 {
            send(&mut journal);
        }
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "10 000 sends took {took:?}");
        let dropped_while_stopped = journal.dropped();
        assert!(dropped_while_stopped > 9_000, "{dropped_while_stopped}");
        journald.signal(Signal::CONT);
        journald.wait_for(&all, (5 + 10_000 - dropped_while_stopped) as usize);

        // Gone: every entry is dropped, none waits.
        journald.stop();
        let gone_at = Instant::now();
        for _ in 0..10_000 {
            send(&mut journal);
        }
        let took = gone_at.elapsed();
        assert!(took < Duration::from_secs(2), "10 000 sends took {took:?}");
        assert_eq!(journal.dropped(), dropped_while_stopped + 10_000);

        // Back: within a second of the failure nothing is tried, then the next send connects.
        journald.spawn();
        let before = journald.entries(&all).len();
        let deadline = Instant::now() + DEADLINE;
        let arrived_after = loop {
            let at = Instant::now();
            send(&mut journal);
            if journald.entries(&all).len() > before {
                break at;
            }
            assert!(
                Instant::now() < deadline,
                "nothing arrived after the restart"
            );
            thread::sleep(POLL);
        };
        assert!(arrived_after - gone_at >= RETRY_AFTER);
        let dropped = journal.dropped();
        for _ in 0..5 {
            send(&mut journal);
        }
        assert_eq!(journal.dropped(), dropped);

        // Every entry either arrived once or was counted.
        let entries = journald.wait_for(&all, (sent - journal.dropped()) as usize);
        let mut domains: Vec<String> = entries.iter().map(|e| text(e, "SHIELD_DOMAIN")).collect();
        domains.sort();
        domains.dedup();
        assert_eq!(domains.len() as u64, sent - journal.dropped());
    }
}
