//! A "container" shielded by the real terok-shield: a namespace, a process standing for its init,
//! a fake internet, and terok-shield's own `prepare` and OCI hooks run on them.

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::reader::TerokReader;
use super::TerokShield;
use crate::dnsmasq::Dnsmasq;
use crate::error::{Error, ErrorKind};
use crate::netns::Netns;

/// Where terok's ruleset sends a link-local destination: `TEROK_SHIELD_PRIVATE` and a reject
/// (nft/rules.py puts `ip daddr 169.254.0.0/16` right after the DNS accepts). The probe's SYN is
/// rejected in the namespace's output hook and never reaches even the veth; the address is the
/// cloud metadata service that real workloads probe. (The ruleset's other private ranges are
/// RFC 1918 ones, which the lab does not use.)
pub const PRIVATE_PROBE: &str = "169.254.169.254:80";

/// Where a container's shield state lives, the two ways terok-shield 0.9.0 is used.
#[derive(Debug, Clone)]
pub enum TerokLayout {
    /// `terok-shield --state-dir ROOT prepare NAME`: the state dir is `ROOT/containers/NAME`
    /// (cli/main.py `_resolve_state_dir`), and the CLI is always given `--state-dir ROOT`.
    StateRoot(PathBuf),
    /// Anywhere, as terok's orchestrator keeps it (`{task_dir}/shield`): prepared through the
    /// Python API (`Shield(ShieldConfig(state_dir=DIR)).pre_start`), found by the CLI only
    /// through the container's `terok.shield.state_dir` annotation (`podman inspect`).
    StateDir(PathBuf),
}

/// A network namespace shielded by terok-shield's own ruleset and dnsmasq, torn down on drop.
///
/// [`TerokContainer::start`] does what `podman run $(terok-shield prepare NAME) ...` would:
///
/// 1. a namespace with a route out (a veth pair whose both ends stay inside it);
/// 2. `prepare` (or the Python API for [`TerokLayout::StateDir`]) with a profile named after the
///    container that allows `allowed`; the podman arguments it prints give the annotations;
/// 3. a fake internet (`shield_lab::Dnsmasq::upstream`) on the address terok-shield recorded in
///    `STATE/upstream.dns` (`169.254.1.1:53`, pasta's forwarder), answering `records`;
/// 4. `sleep infinity` inside the namespace standing for the container's init process;
/// 5. the OCI state `{ociVersion, id (64 hex), status: "creating", pid, bundle, annotations}` fed
///    to both installed createRuntime hooks, so terok-shield applies `STATE/ruleset.nft` in the
///    namespace and starts its dnsmasq there (`dnsmasq --conf-file=STATE/dnsmasq.conf`).
#[derive(Debug)]
pub struct TerokContainer<'s> {
    shield: &'s TerokShield,
    name: String,
    id: String,
    layout: TerokLayout,
    state_dir: PathBuf,
    oci_state: serde_json::Value,
    stopped: bool,
    // Dropped in this order: the init, the fake internet, then the namespace (which kills
    // whatever is still inside and deletes itself).
    init: Child,
    internet: Dnsmasq,
    ns: Netns,
}

impl<'s> TerokContainer<'s> {
    /// Stands up container `name` (a valid podman name) under `layout`, allowing `allowed`
    /// domains, with a fake internet that knows `records`. The namespace is `PREFIX-PID-N`.
    pub fn start(
        shield: &'s TerokShield,
        prefix: &str,
        name: &str,
        layout: TerokLayout,
        allowed: &[&str],
        records: &[(&str, IpAddr)],
    ) -> Result<TerokContainer<'s>, Error> {
        let ns = Netns::create(prefix)?;
        ns.with_uplink()?;
        let profile = format!("lab-{name}");
        shield.write_profile(&profile, allowed)?;
        let (state_dir, podman_args) = prepare(shield, name, &layout, &profile)?;
        let annotations = annotations_of(&podman_args)?;

        let upstream = read_trimmed(&state_dir.join("upstream.dns"))?;
        let upstream: IpAddr = upstream.parse().map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{}/upstream.dns", state_dir.display()),
                format!("not an address: {upstream:?}"),
            )
        })?;
        // The forwarder address is pasta's; here it lives on the namespace's own `lo`.
        let cidr = match upstream {
            IpAddr::V4(_) => format!("{upstream}/32"),
            IpAddr::V6(_) => format!("{upstream}/128"),
        };
        ns.exec_ok(&["ip", "addr", "add", &cidr, "dev", "lo"])?;
        let internet = Dnsmasq::upstream(Some(&ns), upstream, 53, records)?;

        let init = ns.spawn(&["sleep", "infinity"])?;
        let id = container_id(name, init.id());
        let oci_state = serde_json::json!({
            "ociVersion": "1.0.2",
            "id": id,
            "status": "creating",
            "pid": init.id(),
            "bundle": state_dir,
            "annotations": annotations,
        });
        shield.register(name, &id, init.id(), &annotations)?;
        let mut container = TerokContainer {
            shield,
            name: name.to_string(),
            id,
            layout,
            state_dir,
            oci_state,
            stopped: false,
            init,
            internet,
            ns,
        };
        container.hook("createRuntime")?;
        Ok(container)
    }

    /// Runs both installed hooks (`terok-shield-hook`, then `terok-shield-bridge-hook`) for
    /// `stage` with this container's OCI state. `createRuntime` applies the ruleset and starts
    /// dnsmasq; `poststop` stops dnsmasq (and the reader, when the bridge hook started one).
    pub fn hook(&mut self, stage: &str) -> Result<(), Error> {
        for entrypoint in ["terok-shield-hook", "terok-shield-bridge-hook"] {
            self.shield.hook(entrypoint, stage, &self.oci_state)?;
        }
        Ok(())
    }

    /// The container's name, as given to `prepare` and the stand-in `podman`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's full id (64 hex); `STATE/container.id` holds its first 12.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's shield state directory (`ROOT/containers/NAME`, or the given one).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The OCI state the hooks were given.
    pub fn oci_state(&self) -> &serde_json::Value {
        &self.oci_state
    }

    /// The container's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The pid of the process standing for the container's init (the OCI state's `pid`).
    pub fn init_pid(&self) -> u32 {
        self.init.id()
    }

    /// The fake internet the container's dnsmasq forwards to.
    pub fn internet(&self) -> &Dnsmasq {
        &self.internet
    }

    /// Where terok-shield's dnsmasq listens: `listen-address` of `STATE/dnsmasq.conf`, port 53.
    pub fn resolver(&self) -> Result<SocketAddr, Error> {
        let conf = self.state_dir.join("dnsmasq.conf");
        let text = fs::read_to_string(&conf)
            .map_err(|e| Error::io(format!("reading {}", conf.display()), e))?;
        text.lines()
            .find_map(|l| l.strip_prefix("listen-address="))
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    conf.display().to_string(),
                    "no listen-address",
                )
            })
    }

    /// The pid terok-shield's dnsmasq wrote to `STATE/dnsmasq.pid`.
    pub fn dnsmasq_pid(&self) -> Result<u32, Error> {
        let path = self.state_dir.join("dnsmasq.pid");
        let text = read_trimmed(&path)?;
        text.parse().map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                path.display().to_string(),
                format!("not a pid: {text:?}"),
            )
        })
    }

    /// `dig +short NAME QTYPE` inside the namespace, through terok-shield's dnsmasq.
    pub fn dig(&self, name: &str, qtype: &str) -> Result<String, Error> {
        crate::dig(&self.ns, self.resolver()?, name, qtype)
    }

    /// A TCP connect from inside the namespace, bounded by `timeout`. Under terok's ruleset a
    /// destination that is not allowed is rejected with ICMP admin-prohibited: the error is
    /// `EHOSTUNREACH` ("No route to host"), and the SYN is logged to NFLOG group 100.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
        self.ns
            .run_in(move || TcpStream::connect_timeout(&addr, timeout).map(drop))
            .map_err(io::Error::other)?
    }

    /// [`TerokContainer::connect`] to [`PRIVATE_PROBE`]: a private-range probe
    /// (`TEROK_SHIELD_PRIVATE` in NFLOG group 100).
    pub fn probe_private(&self) -> io::Result<()> {
        let addr: SocketAddr = PRIVATE_PROBE.parse().map_err(io::Error::other)?;
        self.connect(addr, Duration::from_secs(2))
    }

    /// `terok-shield allow NAME DOMAIN`: resolves DOMAIN (through the stand-in `dig`, i.e. this
    /// container's fake internet), adds its addresses to the nft set, records `+DOMAIN` in
    /// `STATE/policy/live`, writes `allowed` audit lines, and restarts dnsmasq (new pid, same
    /// namespace). Returns the CLI's stdout.
    pub fn allow(&self, domain: &str) -> Result<String, Error> {
        self.live("allow", domain)
    }

    /// `terok-shield deny NAME DOMAIN`: the counterpart of [`TerokContainer::allow`].
    pub fn deny(&self, domain: &str) -> Result<String, Error> {
        self.live("deny", domain)
    }

    /// Runs any `terok-shield` command about this container the way its layout needs
    /// (`--state-dir ROOT` first for [`TerokLayout::StateRoot`]), with the stand-in `dig` aimed
    /// at this container's fake internet.
    pub fn cli(&self, args: &[&str]) -> Result<String, Error> {
        let mut full: Vec<&str> = Vec::new();
        let root;
        if let TerokLayout::StateRoot(r) = &self.layout {
            root = r.to_string_lossy().into_owned();
            full.extend(["--state-dir", root.as_str()]);
        }
        full.extend_from_slice(args);
        let mut command = self.shield.command(&full);
        command.env("SHIELD_LAB_DIG_NETNS", self.ns.name()).env(
            "SHIELD_LAB_DIG_SERVER",
            self.internet.addr().ip().to_string(),
        );
        let what = format!("terok-shield {}", full.join(" "));
        let out = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::new(ErrorKind::Spawn, &what, e.to_string()))?;
        crate::cmd::check(&[&what], out)
    }

    fn live(&self, verb: &str, domain: &str) -> Result<String, Error> {
        self.cli(&[verb, &self.name, domain])
    }

    /// Starts terok-shield's clearance reader for this container by hand, the way its bridge
    /// hook would (reader_hook.py `_spawn_reader`) but with `--emit=json` (JSON lines on stdout,
    /// the `simple-clearance` mode) instead of the hub socket: it re-executes itself through
    /// `nsenter -t PID -n` into the namespace and binds NFLOG group 100 there.
    pub fn start_reader(&self) -> Result<TerokReader, Error> {
        TerokReader::start(self.shield, &self.state_dir, &self.name, &self.id)
    }

    /// Stops the container as podman would after its init exits: both `poststop` hooks, then the
    /// init, the fake internet and the namespace go. Errors of the hooks are returned; the rest
    /// is removed anyway (also by drop, which calls this and ignores errors).
    pub fn stop(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let _ = self.init.kill();
        let _ = self.init.wait();
        let hooks = self.hook("poststop");
        self.shield.unregister(&self.name, &self.id);
        hooks
    }
}

impl Drop for TerokContainer<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("shield-lab: {e}");
        }
    }
}

/// How terok's orchestrator prepares a container whose state lives in its task dir: a
/// `ShieldConfig` whose `state_dir` is that dir, then `Shield.pre_start`, whose podman arguments
/// are printed as JSON (argv: STATE_DIR PROFILES_DIR DNS_CACHE_DIR NAME PROFILE).
const PRE_START: &str = "\
import json, sys
from pathlib import Path
from terok_shield import Shield, ShieldConfig
cfg = ShieldConfig(state_dir=Path(sys.argv[1]), profiles_dir=Path(sys.argv[2]),
                   dns_cache_dir=Path(sys.argv[3]))
print(json.dumps(Shield(cfg).pre_start(sys.argv[4], [sys.argv[5]])))
";

/// Runs `prepare` for `layout`; returns the state dir and the podman arguments printed.
fn prepare(
    shield: &TerokShield,
    name: &str,
    layout: &TerokLayout,
    profile: &str,
) -> Result<(PathBuf, Vec<String>), Error> {
    let out = match layout {
        TerokLayout::StateRoot(root) => {
            let root_s = root.to_string_lossy();
            shield.run(&[
                "--state-dir",
                &root_s,
                "prepare",
                "--profiles",
                profile,
                "--json",
                name,
            ])?
        }
        TerokLayout::StateDir(dir) => {
            // What terok-sandbox does: a ShieldConfig whose state_dir is the task's own.
            let mut command = std::process::Command::new(shield.python());
            command
                .args(["-c", PRE_START])
                .arg(dir)
                .arg(shield.profiles_dir())
                .arg(shield.terok_root().join("dns-cache"))
                .args([name, profile]);
            shield.set_env(&mut command);
            let out = command
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::new(ErrorKind::Spawn, "Shield.pre_start", e.to_string()))?;
            crate::cmd::check(
                &["python -c Shield(ShieldConfig(state_dir=...)).pre_start"],
                out,
            )?
        }
    };
    let args: Vec<String> = serde_json::from_str(out.trim()).map_err(|e| {
        Error::new(
            ErrorKind::Command,
            "terok-shield prepare --json",
            format!("{e}: {out}"),
        )
    })?;
    let state_dir = match layout {
        TerokLayout::StateRoot(root) => root.join("containers").join(name),
        TerokLayout::StateDir(dir) => dir.clone(),
    };
    Ok((state_dir, args))
}

/// The `--annotation KEY=VALUE` pairs of podman arguments, as an OCI annotations object.
fn annotations_of(args: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let mut map = serde_json::Map::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--annotation" {
            let pair = it.next().map(String::as_str).unwrap_or_default();
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    "prepare's --annotation",
                    pair.to_string(),
                )
            })?;
            map.insert(k.to_string(), serde_json::Value::String(v.to_string()));
        }
    }
    Ok(map)
}

/// A 64-hex container id, distinct per container name and init process.
fn container_id(name: &str, pid: u32) -> String {
    use std::hash::{Hash, Hasher};
    let mut out = String::new();
    for round in 0u8..4 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (name, pid, round, std::process::id()).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn read_trimmed(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_come_from_prepare_args() {
        let args: Vec<String> = [
            "--volume",
            "/s/resolv.conf:/etc/resolv.conf:ro,Z",
            "--annotation",
            "terok.shield.state_dir=/s",
            "--annotation",
            "terok.shield.version=18",
            "--cap-drop",
            "NET_ADMIN",
        ]
        .map(String::from)
        .to_vec();
        let map = annotations_of(&args).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["terok.shield.state_dir"], "/s");
        assert_eq!(map["terok.shield.version"], "18");
    }

    #[test]
    fn container_ids_are_64_hex() {
        let id = container_id("alpha", 42);
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, container_id("beta", 42));
    }
}
