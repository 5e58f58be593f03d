//! dnsmasq processes: the fake "internet" upstream and the shield's per-container resolver.

use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::error::{Error, ErrorKind};
use crate::netns::Netns;
use crate::ruleset::{ALLOW_V4, ALLOW_V6};

/// Where every lab dnsmasq keeps its config and stderr: `/tmp/shield-lab/<tag>/`. The tag
/// starts with the namespace's name, so [`crate::leftovers`] can find strays by prefix.
pub(crate) const CONF_ROOT: &str = "/tmp/shield-lab";

/// How long dnsmasq may take to start on a loaded 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(15);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Options of the shielded resolver beyond [`Dnsmasq::shielded`]'s arguments.
///
/// | option | default |
/// |---|---|
/// | `listen` | `127.0.0.1:53` |
/// | `log_extra` | `false` (`log-queries`; `true` gives `log-queries=extra`: serial and client before `query`) |
/// | `sinkholed` | none (domains answered NXDOMAIN locally, as the policy directory's denied domains are) |
#[derive(Debug, Clone)]
pub struct ShieldedOptions<'a> {
    /// Address and port the resolver listens on inside the namespace.
    pub listen: SocketAddr,
    /// Use `log-queries=extra`.
    pub log_extra: bool,
    /// Domains (and their subdomains) answered NXDOMAIN without asking upstream.
    pub sinkholed: &'a [&'a str],
    /// Started the way terok-shield starts it: the config at `<state_dir>/dnsmasq.conf`
    /// (`dnsmasq --conf-file=<state_dir>/dnsmasq.conf`) and its PID in
    /// `<state_dir>/dnsmasq.pid`.
    pub terok_layout: bool,
}

impl Default for ShieldedOptions<'_> {
    fn default() -> Self {
        ShieldedOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 53)),
            log_extra: false,
            sinkholed: &[],
            terok_layout: false,
        }
    }
}

/// A running dnsmasq with a generated config; killed and reaped on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    conf_dir: PathBuf,
    log: PathBuf,
    listen: SocketAddr,
}

impl Dnsmasq {
    /// The fake "internet": a dnsmasq on `listen:port` (inside `ns`, or on the host when `None`)
    /// that answers `records` itself and NXDOMAIN for every other name. It needs nothing
    /// beyond loopback: inside a namespace, `127.0.0.2:5353` is a good choice.
    pub fn upstream(
        ns: Option<&Netns>,
        listen: IpAddr,
        port: u16,
        records: &[(&str, IpAddr)],
    ) -> Result<Dnsmasq, Error> {
        Dnsmasq::upstream_with_cnames(ns, listen, port, records, &[])
    }

    /// [`Dnsmasq::upstream`] that also answers `cnames` as `(alias, target)`; each target must
    /// be one of the `records` names (dnsmasq only serves a CNAME to a name it knows).
    pub fn upstream_with_cnames(
        ns: Option<&Netns>,
        listen: IpAddr,
        port: u16,
        records: &[(&str, IpAddr)],
        cnames: &[(&str, &str)],
    ) -> Result<Dnsmasq, Error> {
        let conf_dir = conf_dir(ns, "upstream")?;
        let log = conf_dir.join("dnsmasq.log");
        let mut conf = common_config(SocketAddr::new(listen, port));
        // A TTL makes the shielded resolver cache answers, so its log shows `cached` lines too.
        conf.push_str("local-ttl=300\n");
        conf.push_str(&format!("log-facility={}\n", log.display()));
        for (name, ip) in records {
            conf.push_str(&format!("host-record={},{ip}\n", checked_domain(name)?));
        }
        for (alias, target) in cnames {
            conf.push_str(&format!(
                "cname={},{}\n",
                checked_domain(alias)?,
                checked_domain(target)?
            ));
        }
        // Every name not configured above is NXDOMAIN, like a real internet's unknown names.
        conf.push_str("address=/#/\n");
        conf.push_str("pid-file=\n");
        let conf_path = conf_dir.join("dnsmasq.conf");
        Dnsmasq::start(
            ns,
            conf_dir,
            conf_path,
            conf,
            log,
            SocketAddr::new(listen, port),
        )
    }

    /// The shield's per-container resolver inside `ns`, listening on `127.0.0.1:53`: forwards
    /// every query to `upstream`, logs queries to `<state_dir>/dnsmasq.log`, and adds the answers
    /// for `allowed_domains` (and their subdomains) to the nft allow sets through `nftset=`.
    ///
    /// Like the shield, a name that is not allowed still resolves when the upstream knows it;
    /// only its address stays out of the allow sets. Load a [`crate::Ruleset`] into `ns` first:
    /// dnsmasq needs the sets to exist.
    pub fn shielded(
        ns: &Netns,
        state_dir: &Path,
        upstream: SocketAddr,
        allowed_domains: &[&str],
    ) -> Result<Dnsmasq, Error> {
        Dnsmasq::shielded_with(
            ns,
            state_dir,
            upstream,
            allowed_domains,
            &ShieldedOptions::default(),
        )
    }

    /// [`Dnsmasq::shielded`] with [`ShieldedOptions`].
    pub fn shielded_with(
        ns: &Netns,
        state_dir: &Path,
        upstream: SocketAddr,
        allowed_domains: &[&str],
        options: &ShieldedOptions<'_>,
    ) -> Result<Dnsmasq, Error> {
        let conf_dir = conf_dir(Some(ns), "shielded")?;
        let log = state_dir.join("dnsmasq.log");
        let mut conf = common_config(options.listen);
        conf.push_str(&format!("server={}#{}\n", upstream.ip(), upstream.port()));
        conf.push_str(if options.log_extra {
            "log-queries=extra\n"
        } else {
            "log-queries\n"
        });
        conf.push_str(&format!("log-facility={}\n", log.display()));
        for domain in allowed_domains {
            // dnsmasq matches subdomains anyway, so a leading wildcard is dropped, as the shield does.
            let domain = checked_domain(domain.strip_prefix("*.").unwrap_or(domain))?;
            conf.push_str(&format!(
                "nftset=/{domain}/4#inet#terok_shield#{ALLOW_V4},6#inet#terok_shield#{ALLOW_V6}\n"
            ));
        }
        for domain in options.sinkholed {
            let domain = checked_domain(domain.strip_prefix("*.").unwrap_or(domain))?;
            conf.push_str(&format!("address=/{domain}/\n"));
        }
        let conf_path = if options.terok_layout {
            conf.push_str(&format!(
                "pid-file={}\n",
                state_dir.join("dnsmasq.pid").display()
            ));
            state_dir.join("dnsmasq.conf")
        } else {
            conf.push_str("pid-file=\n");
            conf_dir.join("dnsmasq.conf")
        };
        Dnsmasq::start(Some(ns), conf_dir, conf_path, conf, log, options.listen)
    }

    /// The dnsmasq process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Its query log (`log-facility`).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Asks dnsmasq to reopen its log file (SIGUSR2), as logrotate's postrotate does.
    pub fn reopen_log(&self) {
        self.signal(Signal::USR2);
    }

    fn signal(&self, signal: Signal) {
        // The child is not reaped before drop, so the pid cannot have been reused.
        let _ = kill_process(Pid::from_child(&self.child), signal);
    }

    fn start(
        ns: Option<&Netns>,
        conf_dir: PathBuf,
        conf_path: PathBuf,
        conf: String,
        log: PathBuf,
        listen: SocketAddr,
    ) -> Result<Dnsmasq, Error> {
        let stderr_path = conf_dir.join("stderr");
        fs::write(&conf_path, conf)
            .map_err(|e| Error::io(format!("writing {}", conf_path.display()), e))?;
        let stderr = File::create(&stderr_path)
            .map_err(|e| Error::io(format!("creating {}", stderr_path.display()), e))?;
        // Readiness is the "started" line written after this point: the log may hold older runs.
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let conf_arg = format!("--conf-file={}", conf_path.display());
        let argv = ["dnsmasq", "--keep-in-foreground", conf_arg.as_str()];
        let mut command = match ns {
            Some(ns) => ns.command(&argv),
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        // Its own process group: a Ctrl-C at the terminal reaches only the lab's owner, which
        // then stops dnsmasq in order (SIGTERM, reap) instead of finding it already gone.
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Spawn, argv.join(" "), e.to_string()))?;
        let mut dnsmasq = Dnsmasq {
            child,
            conf_dir,
            log,
            listen,
        };
        dnsmasq.wait_started(log_start)?;
        Ok(dnsmasq)
    }

    /// Polls (bounded) until dnsmasq logs "started", which it does after binding its sockets.
    fn wait_started(&mut self, log_start: u64) -> Result<(), Error> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let stderr = fs::read_to_string(self.conf_dir.join("stderr")).unwrap_or_default();
                let what = format!(
                    "dnsmasq for {} (config {}/dnsmasq.conf)",
                    self.listen,
                    self.conf_dir.display()
                );
                return Err(Error::new(
                    ErrorKind::Command,
                    what,
                    format!("{} ({status})", stderr.trim()),
                ));
            }
            let log = fs::read(&self.log).unwrap_or_default();
            let new = log.get(log_start as usize..).unwrap_or(&log);
            if new
                .windows(b"started, version".len())
                .any(|w| w == b"started, version")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let what = format!(
                    "dnsmasq for {} did not log \"started\" in {}",
                    self.listen,
                    self.log.display()
                );
                return Err(Error::new(ErrorKind::Timeout, what, ""));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        // SIGTERM first so dnsmasq flushes its log; SIGKILL if it has not gone within the deadline.
        self.signal(Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.conf_dir);
    }
}

/// The dnsmasq options both kinds share: listen only where told, no host files, no resolv.conf.
fn common_config(listen: SocketAddr) -> String {
    // `user=root`: dnsmasq would otherwise drop to `nobody`, and could then neither re-create its
    // log after a rotation (SIGUSR2) in a root-owned state dir nor be trusted to keep nftset rights.
    format!(
        "listen-address={}\nport={}\nbind-interfaces\nno-resolv\nno-hosts\nuser=root\n",
        listen.ip(),
        listen.port()
    )
}

/// A fresh config directory whose name starts with the namespace's (or `lab-host-PID`).
fn conf_dir(ns: Option<&Netns>, kind: &str) -> Result<PathBuf, Error> {
    let owner = ns.map_or_else(
        || format!("lab-host-{}", std::process::id()),
        |ns| ns.name().to_string(),
    );
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = Path::new(CONF_ROOT).join(format!("{owner}-{kind}-{n}"));
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// A domain that is safe to put into a dnsmasq config line (no `/`, `,`, `#`, spaces, newlines).
fn checked_domain(domain: &str) -> Result<&str, Error> {
    let ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(domain)
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{domain:?} is not a domain name dnsmasq can be given"),
            "",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_that_could_inject_config_are_refused() {
        assert!(checked_domain("api.github.com").is_ok());
        for bad in ["", "a/b", "x.com\nserver=1.2.3.4", "a b", "a,b", "a#b"] {
            assert_eq!(
                checked_domain(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn common_config_listens_only_where_told() {
        let conf = common_config("127.0.0.2:5353".parse().unwrap());
        assert!(
            conf.starts_with("listen-address=127.0.0.2\nport=5353\nbind-interfaces\n"),
            "{conf}"
        );
    }
}
