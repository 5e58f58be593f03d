//! Privilege separation host-wide: a small helper process, forked by `main` before any thread
//! starts, keeps what entering a container's network namespace and binding its NFLOG group take
//! (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_PTRACE) and does nothing else; the process that reads
//! and parses everything (the worker) keeps none of them.
//!
//! ```text
//!  worker (every thread: Landlock, CAP_DAC_READ_SEARCH)        helper (no Landlock, 3 capabilities)
//!  [nflog] ── Request {pid, --conf-file=…, group, buffer} ──►  check /proc/PID, setns, socket,
//!          ◄── Reply + SCM_RIGHTS (netlink socket, names) ──   send the bind request, setns back
//! ```
//!
//! The two talk over one `AF_UNIX` `SOCK_SEQPACKET` socketpair, one request and one reply at a
//! time, in the layout of [`shield_watch_cli::privsep`]. The helper parses nothing a container
//! wrote: the PID comes from the worker (which read `dnsmasq.pid`), the command-line check is a
//! byte comparison, and it never reads from the NFLOG socket (the worker waits for the kernel's
//! answer to the bind, [`shield_nflog::Builder::finish`]). It never opens a file of the state
//! root: only `/proc/PID/{cmdline,status,ns/net}`, its own namespace, and the kernel's NFLOG
//! listing. It ends when the socketpair closes (the worker is gone); the worker notices the
//! helper ending (its end of the socketpair hangs up) and says so.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, WaitOptions};
use shield_nflog::{BindRequest, ErrorKind, NamespaceId, Subscription};
use shield_watch_cli::privsep::{
    encode_hello, parse_hello, Malformed, Namespace, Reply, Request, MAX_REPLY, MAX_REQUEST,
};

use crate::confine::Confinement;

/// The helper's name in `/proc/PID/comm`.
const HELPER_NAME: &CStr = c"nflog-helper";
/// How much of `/proc/PID/cmdline` is compared (the worker reads as much).
const CMDLINE_MAX: u64 = 64 * 1024;

/// What the helper accepts, fixed when it is forked (from the command line): even a worker
/// taken over can ask it only for the group and buffer shield-watch was started with, in the
/// namespace of a process started as one of the state root's dnsmasqs.
pub struct Limits {
    /// `--nflog-group`.
    pub group: u16,
    /// `--nflog-buffer`.
    pub buffer: u64,
    /// The accepted beginnings of the argument: `--conf-file=ROOT/containers/`, with the root
    /// as given and made absolute.
    pub prefixes: Vec<Vec<u8>>,
    /// Every container of the host (no state root): any absolute `--conf-file=STATE/dnsmasq.conf`
    /// without `.` or `..` components.
    pub anywhere: bool,
}

impl Limits {
    /// The limits of a host-wide run on `root`.
    pub fn new(root: &Path, group: u16, buffer: u64) -> Limits {
        let mut prefixes: Vec<Vec<u8>> = [Some(root.to_path_buf()), std::path::absolute(root).ok()]
            .into_iter()
            .flatten()
            .map(|root| {
                let mut prefix = b"--conf-file=".to_vec();
                prefix.extend_from_slice(root.join("containers").as_os_str().as_encoded_bytes());
                prefix.push(b'/');
                prefix
            })
            .collect();
        prefixes.dedup();
        Limits {
            group,
            buffer: buffer.min(shield_watch_cli::privsep::MAX_BUFFER),
            prefixes,
            anywhere: false,
        }
    }

    /// The limits of a run over every container of the host, wherever its state lives.
    pub fn anywhere(group: u16, buffer: u64) -> Limits {
        Limits {
            group,
            buffer: buffer.min(shield_watch_cli::privsep::MAX_BUFFER),
            prefixes: vec![b"--conf-file=/".to_vec()],
            anywhere: true,
        }
    }

    /// Whether `request` stays within the limits: its group and buffer, and an argument that is
    /// `--conf-file=ROOT/containers/NAME/dnsmasq.conf` for some NAME (one path component, not
    /// `.` or `..`). Byte comparisons only.
    fn check(&self, request: &Request) -> Result<(), String> {
        if request.group != self.group || request.buffer != self.buffer {
            return Err(
                "refused: not the NFLOG group and buffer shield-watch was started with".into(),
            );
        }
        let name = self.prefixes.iter().find_map(|prefix| {
            request
                .argument
                .strip_prefix(prefix.as_slice())?
                .strip_suffix(b"/dnsmasq.conf".as_slice())
        });
        let normal = |path: &[u8]| {
            path.split(|b| *b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b"..")
        };
        match name {
            Some(name) if self.anywhere && normal(name) => Ok(()),
            Some(name)
                if !name.is_empty() && !name.contains(&b'/') && name != b"." && name != b".." =>
            {
                Ok(())
            }
            _ => {
                Err("refused: not the argument of a dnsmasq of the state root's containers".into())
            }
        }
    }
}

/// The worker's end: asks the helper for sockets.
pub struct Helper {
    socket: OwnedFd,
    pid: Pid,
}

/// What the helper answered.
pub enum Answer {
    /// A socket in the dnsmasq's namespace `ns`, its bind request sent: finish it.
    New(BindRequest, NamespaceId),
    /// The dnsmasq's namespace is the one asked about: no new socket.
    Same,
    /// Refused (the PID is no such dnsmasq, the namespace is ours, an error), and why.
    Refused(String),
}

/// The helper is gone (or speaks nonsense, which is treated the same): why, for stderr.
#[derive(Debug)]
pub struct Gone(pub String);

impl Helper {
    /// Forks the helper. Call it while the process has one thread (before any thread starts,
    /// signal handlers included): the child then runs only [`serve`]. Returns the worker's end
    /// and the helper's own account of its confinement (its first message).
    pub fn start(limits: Limits) -> Result<(Helper, String), String> {
        let (worker_end, helper_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| format!("cannot make the socketpair: {e}"))?;
        // The safety of the fork below rests on this process having one thread: checked, not
        // assumed.
        match std::fs::read_dir("/proc/self/task").map(Iterator::count) {
            Ok(1) => {}
            Ok(n) => return Err(format!("the process has {n} threads already; not forking")),
            Err(e) => return Err(format!("cannot count this process's threads: {e}")),
        }
        // SAFETY: called from `main` before any other thread exists (checked above), so the child,
        // a copy of this one thread, holds no lock another thread could have held; it runs
        // `serve`, which never returns.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(format!("cannot fork: {}", io::Error::last_os_error())),
            0 => {
                drop(worker_end);
                serve(helper_end, &limits)
            }
            pid => {
                drop(helper_end);
                let helper = Helper {
                    socket: worker_end,
                    // SAFETY: a positive PID returned by fork.
                    pid: unsafe { Pid::from_raw_unchecked(pid) },
                };
                let mut buf = [0u8; MAX_REPLY + 1];
                let hello =
                    match rustix::net::recv(&helper.socket, &mut buf[..], RecvFlags::empty()) {
                        Ok((0, _)) => Err(format!("it ended at once ({})", helper.ended())),
                        Ok((n, _)) => parse_hello(&buf[..n]).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                hello.map(|text| (helper, text))
            }
        }
    }

    /// The helper's PID.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// Sends `request`, waits for the answer.
    pub fn ask(&self, request: &Request) -> Result<Answer, Gone> {
        let mut bytes = Vec::with_capacity(MAX_REQUEST);
        request.encode(&mut bytes);
        let mut none: [MaybeUninit<u8>; 0] = [];
        match rustix::net::sendmsg(
            &self.socket,
            &[IoSlice::new(&bytes)],
            &mut SendAncillaryBuffer::new(&mut none),
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) if n == bytes.len() => {}
            Ok(_) => return Err(Gone("a request was cut short".into())),
            Err(e) => return Err(Gone(format!("sending a request failed: {e}"))),
        }
        let mut buf = [0u8; MAX_REPLY + 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            match rustix::net::recvmsg(
                &self.socket,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        let received = received.map_err(|e| Gone(format!("reading its answer failed: {e}")))?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received.bytes == 0 {
            return Err(Gone(format!("it ended ({})", self.ended())));
        }
        if received.bytes > MAX_REPLY {
            return Err(Gone(Malformed::Length.to_string()));
        }
        let reply = Reply::parse(&buf[..received.bytes]).map_err(|e| Gone(e.to_string()))?;
        let id = |ns: Namespace| NamespaceId::from_parts(ns.dev, ns.ino);
        match reply {
            Reply::New { ns, held_by } => {
                let mut fds = fds.into_iter();
                match (fds.next(), fds.next(), fds.next()) {
                    (Some(socket), Some(names), None) => Ok(Answer::New(
                        BindRequest::from_parts(socket, names, held_by),
                        id(ns),
                    )),
                    _ => Err(Gone("a socket came without its two descriptors".into())),
                }
            }
            Reply::Same { .. } if fds.is_empty() => Ok(Answer::Same),
            Reply::Refused(why) if fds.is_empty() => Ok(Answer::Refused(why)),
            _ => Err(Gone("descriptors came with an answer that has none".into())),
        }
    }

    /// How the helper ended, reaping it (`exited with status 0`, `killed by signal 9`), or
    /// `still running` when it has not (yet) ended.
    pub fn ended(&self) -> String {
        // It hangs up just before it ends: give it a moment to be reapable.
        for _ in 0..100 {
            match rustix::process::waitpid(Some(self.pid), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => {
                    return match (status.exit_status(), status.terminating_signal()) {
                        (Some(code), _) => format!("exited with status {code}"),
                        (_, Some(signal)) => format!("killed by signal {signal}"),
                        _ => "ended".into(),
                    };
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => return format!("cannot tell how: {e}"),
            }
        }
        "still running".into()
    }
}

/// The worker's end of the socketpair: it hangs up when the helper ends.
impl AsFd for Helper {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The helper process: confines itself, says how, then answers requests until the worker's end
/// of `socket` closes. Never returns.
fn serve(socket: OwnedFd, limits: &Limits) -> ! {
    // Terminal signals go to the whole process group and systemd signals every process of the
    // unit: the worker stops cleanly on them, and the helper ends when the worker has gone.
    for signal in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGHUP,
        libc::SIGPIPE,
    ] {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // Never stdout: that is the stream's. (stderr stays, for the abort below.)
    // SAFETY: dup2 on the process's standard descriptors, which stay open.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    let _ = rustix::thread::set_name(HELPER_NAME);
    let confinement = Confinement::helper();
    confinement.apply_here("nflog helper");
    let home = File::open("/proc/thread-self/ns/net").and_then(|f| Ok((NamespaceId::of(&f)?, f)));
    let mut hello = Vec::new();
    encode_hello(&confinement.report(), &mut hello);
    if rustix::net::send(&socket, &hello, SendFlags::NOSIGNAL).is_err() {
        std::process::exit(1);
    }
    let home = match home {
        Ok((id, _)) => Some(id),
        Err(_) => None,
    };
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let n = match rustix::net::recv(&socket, &mut buf[..], RecvFlags::empty()) {
            Ok((0, _)) => std::process::exit(0),
            Ok((n, _)) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => std::process::exit(1),
        };
        let (reply, request) = if n > MAX_REQUEST {
            (Reply::Refused(Malformed::Length.to_string()), None)
        } else {
            match Request::parse(&buf[..n]) {
                Ok(request) => match home {
                    Some(home) => match limits.check(&request) {
                        Ok(()) => answer(&request, home),
                        Err(why) => (Reply::Refused(why), None),
                    },
                    None => (
                        Reply::Refused("the helper cannot tell its own network namespace".into()),
                        None,
                    ),
                },
                Err(e) => (Reply::Refused(e.to_string()), None),
            }
        };
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = request
            .as_ref()
            .map(|(socket, names)| [socket.as_fd(), names.as_fd()]);
        if let Some(fds) = &fds {
            control.push(SendAncillaryMessage::ScmRights(fds));
        }
        if rustix::net::sendmsg(
            &socket,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .is_err()
        {
            std::process::exit(0);
        }
        // The descriptors are the worker's now: ours close here.
    }
}

/// Checks the request's PID and makes the socket in its namespace: the reply, and the two
/// descriptors to send with it.
fn answer(request: &Request, home: NamespaceId) -> (Reply, Option<(OwnedFd, OwnedFd)>) {
    let pid = request.pid;
    let refused = |why: String| (Reply::Refused(why), None);
    // Everything below is read through this one directory: should the process end and its PID
    // be reused meanwhile, the reads fail instead of reading another process.
    let dir = match rustix::fs::open(
        format!("/proc/{pid}"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(e) => return refused(format!("dnsmasq {pid} is gone: {e}")),
    };
    let read = |name: &str| -> io::Result<Vec<u8>> {
        let fd = rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let mut bytes = Vec::new();
        File::from(fd).take(CMDLINE_MAX).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read("cmdline") {
        Ok(cmdline)
            if cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == request.argument.as_slice()) => {}
        Ok(_) => {
            return refused(format!(
                "process {pid} is not the dnsmasq started for this container (its command line changed)"
            ))
        }
        Err(e) => return refused(format!("cannot read the command line of {pid}: {e}")),
    }
    match read("status").map(|status| leader(&status, pid)) {
        Ok(true) => {}
        Ok(false) => return refused(format!("{pid} is a thread, not a process")),
        Err(e) => return refused(format!("cannot read the status of {pid}: {e}")),
    }
    let ns = match rustix::fs::openat(
        &dir,
        "ns/net",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            return refused(format!(
                "cannot open the network namespace of dnsmasq {pid}: {e}"
            ))
        }
    };
    let id = match NamespaceId::of(&ns) {
        Ok(id) if id != home => id,
        _ => {
            // terok-shield starts a container's dnsmasq inside the container's namespace,
            // never in ours. Whoever can write dnsmasq.pid can also start a process with the
            // right --conf-file= in the host's namespace; following it would read (and hold) the
            // host's NFLOG group under a container's name.
            return refused(format!(
                "dnsmasq {pid} runs in shield-watch's own network namespace, not a container's: refused"
            ));
        }
    };
    let wire = Namespace {
        dev: id.device(),
        ino: id.inode(),
    };
    if request.known_ns == Some(wire) {
        return (Reply::Same { ns: wire }, None);
    }
    let buffer = usize::try_from(request.buffer).unwrap_or(usize::MAX);
    let builder = Subscription::builder()
        .group(request.group)
        .recv_buffer(buffer, buffer);
    match builder.request_in(&ns) {
        Ok(bind) => {
            let (socket, names, held_by) = bind.into_parts();
            (Reply::New { ns: wire, held_by }, Some((socket, names)))
        }
        Err(err) if err.kind() == ErrorKind::NetnsReturn => {
            // Stranded in a container's namespace, every later socket would be made there: end,
            // and let the worker say so.
            crate::diag::line(format_args!("nflog helper: {}", crate::diag::chain(&err)));
            std::process::abort();
        }
        Err(err) => refused(crate::diag::chain(&err)),
    }
}

/// Whether `/proc/PID/status` says `pid` is its thread group's leader (`Tgid:` is `pid`). The
/// kernel writes the file; the one field before it that a process chooses, its name, has line
/// breaks escaped.
fn leader(status: &[u8], pid: u32) -> bool {
    status
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"Tgid:"))
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse::<u32>().ok())
        == Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_state_roots_dnsmasq_arguments_group_and_buffer_are_accepted() {
        let limits = Limits::new(Path::new("/s"), 100, 1 << 20);
        let request = |argument: &[u8]| Request {
            pid: 7,
            group: 100,
            buffer: 1 << 20,
            known_ns: None,
            argument: argument.to_vec(),
        };
        assert_eq!(
            limits.check(&request(b"--conf-file=/s/containers/c1/dnsmasq.conf")),
            Ok(())
        );
        for refused in [
            &b"--conf-file=/s/containers//dnsmasq.conf"[..],
            b"--conf-file=/s/containers/../dnsmasq.conf",
            b"--conf-file=/s/containers/a/b/dnsmasq.conf",
            b"--conf-file=/t/containers/c1/dnsmasq.conf",
            b"--conf-file=/s/containers/c1/dnsmasq.conf.x",
            b"/s/containers/c1/dnsmasq.conf",
        ] {
            assert!(limits.check(&request(refused)).is_err(), "{refused:?}");
        }
        let mut other_group = request(b"--conf-file=/s/containers/c1/dnsmasq.conf");
        other_group.group = 101;
        assert!(limits.check(&other_group).is_err());
        let mut other_buffer = request(b"--conf-file=/s/containers/c1/dnsmasq.conf");
        other_buffer.buffer = 1 << 21;
        assert!(limits.check(&other_buffer).is_err());
    }

    #[test]
    fn a_leader_is_its_own_thread_group() {
        let status =
            b"Name:\tdnsmasq\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nNgid:\t0\nPid:\t42\n";
        assert!(leader(status, 42));
        assert!(!leader(status, 43));
        let thread = b"Name:\tworker\nTgid:\t42\nPid:\t43\n";
        assert!(!leader(thread, 43));
        assert!(!leader(b"Name:\tx\n", 42));
        let own = std::fs::read("/proc/self/status").unwrap();
        assert!(leader(&own, std::process::id()));
    }
}
