//! A named network namespace owned by this process, and running things inside it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, ErrorKind};

/// Distinguishes namespaces made by one process: names are `prefix-pid-counter`.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The uplink's addresses. The end inside carries these; the gateways are fictitious neighbours
/// pinned to the peer's MAC, so packets to TEST-NET leave at once instead of waiting for ARP.
const UPLINK: &str = "up0";
const PEER: &str = "up1";
pub(crate) const UPLINK_V4: &str = "198.51.100.1/24";
pub(crate) const UPLINK_V6: &str = "2001:db8:1::1/64";
const GATEWAY_V4: &str = "198.51.100.254";
const GATEWAY_V6: &str = "2001:db8:1::fe";

/// A network namespace (`ip netns add NAME`) that lives as long as this value.
///
/// Dropping it kills every process still inside and deletes the namespace, also when a test
/// panics while holding it (drop runs during unwinding).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `prefix-PID-N`, unique among the lab's users on this machine.
    pub fn create(prefix: &str) -> Result<Netns, Error> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        cmd::run(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        // A fresh namespace has lo down; nothing (not even 127.0.0.1 dnsmasq) works without it.
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`: what `setns(2)` and `--netns PATH` take.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Gives the namespace a route out: a veth pair `up0`/`up1` whose both ends stay inside
    /// (this kernel has no `dummy` links), `198.51.100.1/24` and `2001:db8:1::1/64` on `up0`,
    /// and default routes for both families through a gateway that is the peer end.
    ///
    /// Traffic to TEST-NET addresses then passes the nftables output hook and leaves on `up0`,
    /// so a shield rule sees it; nothing answers, nothing leaves the machine.
    pub fn with_uplink(&self) -> Result<(), Error> {
        self.ip(&["link", "add", UPLINK, "type", "veth", "peer", "name", PEER])?;
        self.ip(&["addr", "add", UPLINK_V4, "dev", UPLINK])?;
        // Without nodad the address stays tentative for a second and v6 sends fail meanwhile.
        self.ip(&["-6", "addr", "add", UPLINK_V6, "dev", UPLINK, "nodad"])?;
        self.ip(&["link", "set", UPLINK, "up"])?;
        self.ip(&["link", "set", PEER, "up"])?;
        let mac = self.ip(&["-br", "link", "show", PEER])?;
        let mac = mac
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        for gw in [GATEWAY_V4, GATEWAY_V6] {
            self.ip(&[
                "neigh",
                "replace",
                gw,
                "lladdr",
                &mac,
                "dev",
                UPLINK,
                "nud",
                "permanent",
            ])?;
        }
        self.ip(&["route", "add", "default", "via", GATEWAY_V4, "dev", UPLINK])?;
        self.ip(&[
            "-6", "route", "add", "default", "via", GATEWAY_V6, "dev", UPLINK,
        ])?;
        Ok(())
    }

    /// Runs `argv` inside the namespace to completion. `Ok` whatever the exit status, so a test can
    /// look at a command that is expected to fail; [`Netns::exec_ok`] insists on success.
    pub fn exec(&self, argv: &[&str]) -> Result<Output, Error> {
        cmd::output(&self.argv(argv))
    }

    /// Runs `argv` inside the namespace, requires exit status 0, and returns its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String, Error> {
        cmd::run(&self.argv(argv))
    }

    /// A [`Command`] that runs `argv` inside the namespace (`ip netns exec NAME ...`), to adjust
    /// before spawning. `ip` execs the program, so the child's pid is the program's own.
    pub fn command(&self, argv: &[&str]) -> Command {
        let full = self.argv(argv);
        let mut command = Command::new(full[0]);
        command.args(&full[1..]);
        command
    }

    /// Starts `argv` inside the namespace with stdin closed and stdout/stderr piped.
    /// The caller owns the child; dropping the namespace kills it if it is still running.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child, Error> {
        self.command(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Spawn,
                    cmd::describe(&self.argv(argv)),
                    e.to_string(),
                )
            })
    }

    /// Runs `f` on a fresh thread that has entered the namespace with `setns(2)`, and returns its
    /// result. The thread ends afterwards, so no other thread's namespace changes. A panic in `f`
    /// is passed on to the caller.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let path = self.path();
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let handle = std::thread::spawn(move || -> Result<T, Error> {
            // SAFETY: the fd is open for the duration of the call; setns only affects this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                let what = format!("setns into {}", path.display());
                return Err(Error::io(what, std::io::Error::last_os_error()));
            }
            drop(file);
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Pids of the processes whose network namespace this is.
    pub fn pids(&self) -> Vec<u32> {
        cmd::run(&["ip", "netns", "pids", &self.name])
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn argv<'a>(&'a self, argv: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        full
    }

    fn ip(&self, args: &[&str]) -> Result<String, Error> {
        let mut argv = vec!["ip", "-n", self.name.as_str()];
        argv.extend_from_slice(args);
        cmd::run(&argv)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let me = std::process::id();
        // Processes keep a namespace alive after its name is gone; kill them first, then wait
        // (bounded) until none is left, so a test's leftover check sees a clean machine.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids: Vec<u32> = self
                .pids()
                .into_iter()
                .filter(|&p| p != me && !is_zombie(p))
                .collect();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions; a stale pid just yields ESRCH.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = cmd::run(&["ip", "netns", "del", &self.name]) {
            eprintln!("shield-lab: {e}");
        }
    }
}

/// A killed child that nobody has waited for yet still lists the namespace, but is harmless.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
