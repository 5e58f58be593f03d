//! A named network namespace owned by this process, and running things inside it.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::cmd;
use crate::error::{Error, ErrorKind};

/// Distinguishes namespaces made by one process: names are `prefix-pid-counter`.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The uplink: `up0` inside carries the addresses, its veth peer `up1` is the far end.
const UPLINK: &str = "up0";
const PEER: &str = "up1";
pub(crate) const UPLINK_V4: &str = "198.51.100.1/24";
pub(crate) const UPLINK_V6: &str = "2001:db8:1::1/64";

/// Settings that keep the uplink silent: no link-local addresses, router solicitations, DAD or
/// router advertisements. Without them the kernel sends a dozen ICMPv6 packets when the link comes
/// up, the shield's terminal rule logs them to NFLOG, and tests would see packets nobody sent.
const QUIET_IPV6: &[&str] = &[
    "net.ipv6.conf.default.addr_gen_mode=1",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.default.dad_transmits=0",
];

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
    /// and default routes for both families out of `up0` towards its peer.
    ///
    /// Traffic to TEST-NET addresses then passes the nftables output hook and leaves on `up0`;
    /// the peer drops it, nothing answers, nothing leaves the machine. The link is silent by
    /// itself (`arp off`, which also keeps IPv6 from joining solicited-node groups and sending
    /// MLD reports; no link-local address, router solicitation or DAD), so every packet a
    /// shield rule logs is one a test sent.
    pub fn with_uplink(&self) -> Result<(), Error> {
        for setting in QUIET_IPV6 {
            self.exec_ok(&["sysctl", "-qw", setting])?;
        }
        self.ip(&["link", "add", UPLINK, "type", "veth", "peer", "name", PEER])?;
        for link in [UPLINK, PEER] {
            self.ip(&["link", "set", link, "arp", "off"])?;
        }
        self.ip(&["addr", "add", UPLINK_V4, "dev", UPLINK])?;
        // Without nodad the address stays tentative for a moment and v6 sends fail meanwhile.
        self.ip(&["-6", "addr", "add", UPLINK_V6, "dev", UPLINK, "nodad"])?;
        for link in [UPLINK, PEER] {
            self.ip(&["link", "set", link, "up"])?;
        }
        self.ip(&["route", "add", "default", "dev", UPLINK])?;
        self.ip(&["-6", "route", "add", "default", "dev", UPLINK])?;
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

    /// Starts `argv` inside the namespace with stdin closed and stdout/stderr piped, and returns
    /// once the process is inside (or has already exited): `ip netns exec` enters the namespace
    /// only after it was started. The caller owns the child; dropping the namespace kills it if
    /// it is still running.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child, Error> {
        let mut child = self
            .command(argv)
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
            })?;
        let target = std::fs::metadata(self.path()).map(|m| (m.dev(), m.ino()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let inside = std::fs::metadata(format!("/proc/{}/ns/net", child.id()))
                .map(|m| (m.dev(), m.ino()));
            if matches!((&inside, &target), (Ok(a), Ok(b)) if a == b)
                || !matches!(child.try_wait(), Ok(None))
            {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let what = format!(
                    "`{}` did not enter {} within 10s",
                    cmd::describe(argv),
                    self.name
                );
                return Err(Error::new(ErrorKind::Timeout, what, ""));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
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
            enter_file(&file, &path)?;
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
                // A stale pid just yields ESRCH.
                if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                    let _ = kill_process(pid, Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = cmd::run(&["ip", "netns", "del", &self.name]) {
            eprintln!("shield-lab: {e}");
        }
    }
}

/// Moves **the calling thread** into the network namespace at `path` (`/run/netns/NAME`,
/// `/proc/PID/ns/net`) for good: for a thread dedicated to work inside it, such as a sender that
/// lives as long as a benchmark. [`Netns::run_in`] is the scoped form.
pub fn enter_netns(path: &Path) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    enter_file(&file, path)
}

fn enter_file(file: &File, path: &Path) -> Result<(), Error> {
    use std::os::fd::AsFd;
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| Error::io(format!("setns into {}", path.display()), e.into()))
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
