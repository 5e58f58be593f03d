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
        let mut journal = Journal {
            path: socket.to_owned(),
            socket: None,
            next_attempt: Instant::now(),
            dropped: 0,
            entry: Vec::with_capacity(1024),
            value: String::with_capacity(256),
        };
        journal.socket = journal.reconnect();
        journal
    }

    /// Writes `event` as one journal entry whose `MESSAGE` is `json_line` (the event's JSON
    /// line as written to stdout; its trailing newline is not part of the message).
    ///
    /// Never blocks: an entry journald cannot take now is dropped and counted.
    pub fn send(&mut self, event: &Event, json_line: &[u8]) {
        let Some(socket) = self.socket.take().or_else(|| self.reconnect()) else {
            self.dropped += 1;
            return;
        };
        encode(&mut self.entry, &mut self.value, event, json_line);
        let sent = match send(&socket, &self.entry, SendFlags::NOSIGNAL) {
            Ok(_) => Ok(()),
            // Larger than the socket buffer allows: sd_journal_sendv's way round it.
            Err(Errno::MSGSIZE | Errno::NOBUFS) => send_as_memfd(socket.as_fd(), &self.entry),
            Err(err) => Err(err),
        };
        match sent {
            Ok(()) => self.socket = Some(socket),
            // journald's queue is full, or this process is short of memory or descriptors:
            // this entry is lost, the connection is fine.
            Err(
                Errno::AGAIN
                | Errno::MSGSIZE
                | Errno::NOBUFS
                | Errno::NOMEM
                | Errno::MFILE
                | Errno::NFILE,
            ) => {
                self.dropped += 1;
                self.socket = Some(socket);
            }
            // Refused, reset, gone: journald stopped or is restarting. Its new socket is a new
            // peer, which only a new connection reaches; this one is closed here.
            Err(_) => {
                self.dropped += 1;
                self.next_attempt = Instant::now() + RETRY_AFTER;
            }
        }
    }

    /// How many entries were dropped because journald was slow or gone.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A new connection, unless the last attempt was under a second ago; a failed attempt
    /// schedules the next one.
    fn reconnect(&mut self) -> Option<OwnedFd> {
        let now = Instant::now();
        if now < self.next_attempt {
            return None;
        }
        open(&self.path)
            .inspect_err(|_| self.next_attempt = now + RETRY_AFTER)
            .ok()
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
    use std::os::unix::net::UnixDatagram;
    use std::thread;

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

    /// An entry larger than the socket buffer: an empty datagram carrying one sealed memfd that
    /// holds the whole entry, as journald reads it.
    #[test]
    fn a_large_entry_goes_as_a_sealed_memfd() {
        use rustix::fs::fcntl_get_seals;
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        use std::io::{IoSliceMut, Read, Seek, SeekFrom};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let reader = UnixDatagram::bind(&path).unwrap();
        reader.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut journal = Journal::connect(&path);
        let event = Event::new("T", Source::Audit, "setup", "big");
        let line = format!("{{\"detail\":\"{}\"}}\n", "x".repeat(1 << 20));
        journal.send(&event, line.as_bytes());
        assert_eq!(journal.dropped(), 0);

        let mut data = [0; 16];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = recvmsg(
            &reader,
            &mut [IoSliceMut::new(&mut data)],
            &mut control,
            RecvFlags::empty(),
        )
        .unwrap();
        assert_eq!(received.bytes, 0, "the datagram itself is empty");
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = message {
                fds.extend(passed);
            }
        }
        assert_eq!(fds.len(), 1);
        let memfd = fds.pop().unwrap();
        assert_eq!(
            fcntl_get_seals(&memfd).unwrap(),
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL
        );
        // The descriptor shares the sender's file offset, which is at the end: read from 0, as
        // journald does (it maps the file).
        let mut file = File::from(memfd);
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut entry = Vec::new();
        file.read_to_end(&mut entry).unwrap();
        let mut expected = Vec::new();
        encode(&mut expected, &mut String::new(), &event, line.as_bytes());
        assert!(
            entry == expected,
            "{} bytes, expected {}",
            entry.len(),
            expected.len()
        );
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

    /// Against the real systemd-journald, in a private mount namespace.
    mod journald;
}
