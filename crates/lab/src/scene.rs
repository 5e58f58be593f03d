//! A scripted scene on real shielded containers, watched by the real `shield-watch`: the
//! end-to-end tests and `cargo xtask demo` run it.
//!
//! The scene builds each container the way the shield does and then plays its steps on them,
//! one at a time. Each step acts like a container process or an operator (a DNS lookup, one TCP
//! connection attempt, an allow-list change, an audit entry, a log rotation) and waits, with a
//! deadline, for exactly the number of events the step must cause. The steps run strictly one
//! after another and every action waits for its own events before the next one starts, so the
//! whole stream has one possible order: a test can compare it line by line.
//!
//! Two variants: [`Scene::start`] builds one container, `demo`, watched with `--state-dir`, and
//! plays [`Scene::steps`]; [`Scene::start_host`] builds two, `alpha` and `beta` ([`HOST`]), under
//! one state root watched with `--state-root` (host-wide mode, `docs/CONTRACT.md` §9), and plays
//! [`Scene::host_steps`] in both.
//!
//! | what | where |
//! |---|---|
//! | namespace, one per container | `PREFIX-PID-N`, uplink `198.51.100.1/24`, `2001:db8:1::1/64` |
//! | ruleset | [`crate::Ruleset::shield`] group 100; deny set `203.0.113.250`; `192.0.2.0/24` plays a private range |
//! | "the internet" | dnsmasq on `127.0.0.2:5353` in the namespace ([`RECORDS`]; `beta`: [`BETA_RECORDS`]) |
//! | the shield's resolver | dnsmasq on `127.0.0.1:53`, nftset for the allowed domains (`github.com`; `beta`: `pypi.org`), log in the state dir; host-wide started as terok-shield starts it (`--conf-file=STATE/dnsmasq.conf`, `STATE/dnsmasq.pid`) |
//! | state dir | `/tmp/shield-lab/NAMESPACE-state/demo`; host-wide `/tmp/shield-lab/NAMESPACE-state/containers/NAME` under the state root `/tmp/shield-lab/NAMESPACE-state` (domain files, tier `dnsmasq-live`) |
//! | shield-watch | `--state-dir DIR --netns /run/netns/NAMESPACE --container demo`; host-wide `--state-root ROOT`; then the caller's args |

mod steps;

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use self::steps::Action;
pub use self::steps::Step;
use crate::dig::dig;
use crate::dnsmasq::{Dnsmasq, ShieldedOptions, CONF_ROOT};
use crate::error::{Error, ErrorKind};
use crate::netns::Netns;
use crate::preflight::preflight;
use crate::ruleset::{Ruleset, PRIVATE_RANGES};
use crate::statedir::StateDir;
use crate::watch::Watch;

/// The name the single scene's container goes by: the state dir's basename and `--container`.
pub const CONTAINER: &str = "demo";

/// The host-wide scene's containers, in the order [`Scene::host_steps`] index them.
pub const HOST: [&str; 2] = ["alpha", "beta"];

/// What "the internet" resolves for `demo` and `alpha`. Every other name is NXDOMAIN.
pub const RECORDS: &[(&str, &str)] = &[
    ("github.com", "203.0.113.11"),
    ("api.github.com", "203.0.113.10"),
    ("evil.example.com", "203.0.113.66"),
    ("ads.example.com", "203.0.113.250"),
    ("tracker.example.net", "203.0.113.77"),
];

/// What "the internet" resolves for `beta`: `mirror.example.org` has the address that
/// `evil.example.com` has for `alpha`, so one address means a different name in each container.
pub const BETA_RECORDS: &[(&str, &str)] = &[
    ("pypi.org", "203.0.113.20"),
    ("github.com", "203.0.113.11"),
    ("mirror.example.org", "203.0.113.66"),
    ("ads.example.com", "203.0.113.250"),
    ("tracker.example.net", "203.0.113.77"),
];

/// The allow list of `demo` and `alpha` (`profile.domains` of the domain-files layout, and the
/// resolver's nftset domains).
const ALLOWED: &[&str] = &["github.com"];
/// The allow list of `beta`.
const BETA_ALLOWED: &[&str] = &["pypi.org"];
/// Every container's `denied.domains`; the deny set holds its address.
const DENIED: &[&str] = &["ads.example.com"];
const DENIED_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 250);
/// Tests may only send to TEST-NET, so one TEST-NET block plays a private LAN range.
const PRIVATE_STAND_IN: &str = "192.0.2.0/24";
const NFLOG_GROUP: u16 = 100;

/// Bound on every single wait (a process starting, an event arriving). Generous: the machines are
/// shared and slow, and a passing run never waits for it.
const DEADLINE: Duration = Duration::from_secs(20);

/// What a step produced.
#[derive(Debug, Clone, Default)]
pub struct StepReport {
    /// The step's events, in order: exactly [`Step::expected_events`] lines.
    pub lines: Vec<String>,
    /// Lines reported while waiting for shield-watch to pick up an allow-list change (the old
    /// verdict, allowed for up to a second by the spec): the allowed name and the marker, per
    /// round. Usually empty; kept apart so `lines` has one possible content.
    pub before_reload: Vec<String>,
}

/// How shield-watch ended, after [`Scene::finish`].
#[derive(Debug)]
pub struct Finish {
    /// Its exit status.
    pub status: ExitStatus,
    /// Lines it wrote after the last step (an exact stream has none).
    pub rest: Vec<String>,
    /// Everything it wrote to stderr, the ready line and the summary included.
    pub stderr: Vec<String>,
}

/// How one container of a scene is set up.
struct Setup {
    name: &'static str,
    records: &'static [(&'static str, &'static str)],
    allowed: &'static [&'static str],
}

/// One shielded container of a scene. Fields drop in order: the resolvers (which live in the
/// namespace), then the namespace with its ruleset.
#[derive(Debug)]
struct Shielded {
    name: &'static str,
    resolver: Dnsmasq,
    #[allow(dead_code)] // Held for its Drop: the resolver forwards to it.
    internet: Dnsmasq,
    ns: Netns,
    state: PathBuf,
}

impl Shielded {
    /// A namespace with its uplink and the shield's ruleset.
    fn namespace(prefix: &str) -> Result<Netns, Error> {
        let ns = Netns::create(prefix)?;
        ns.with_uplink()?;
        let mut private: Vec<&str> = PRIVATE_RANGES.to_vec();
        private.push(PRIVATE_STAND_IN);
        Ruleset::shield(NFLOG_GROUP)
            .deny(&[IpAddr::V4(DENIED_IP)])
            .private_ranges(&private)
            .load(&ns)?;
        Ok(ns)
    }

    /// The state dir `state`, then the two dnsmasqs in `ns` (terok-shield's order); with
    /// `terok_layout` the resolver is started as terok-shield starts it.
    fn start(setup: &Setup, ns: Netns, state: PathBuf, terok_layout: bool) -> Result<Self, Error> {
        StateDir::domain_files(&state, "dnsmasq-live", setup.allowed, DENIED)
            .map_err(|e| Error::io(format!("writing the state dir {}", state.display()), e))?;
        let records = setup
            .records
            .iter()
            .map(|(name, ip)| {
                let ip = ip.parse().map_err(|_| {
                    Error::new(ErrorKind::InvalidInput, format!("bad record {ip}"), "")
                })?;
                Ok((*name, ip))
            })
            .collect::<Result<Vec<(&str, IpAddr)>, Error>>()?;
        let internet = Dnsmasq::upstream(Some(&ns), [127, 0, 0, 2].into(), 5353, &records)?;
        let options = ShieldedOptions {
            terok_layout,
            ..ShieldedOptions::default()
        };
        let resolver =
            Dnsmasq::shielded_with(&ns, &state, internet.addr(), setup.allowed, &options)?;
        Ok(Shielded {
            name: setup.name,
            resolver,
            internet,
            ns,
            state,
        })
    }
}

/// Shielded containers with shield-watch following them. Dropping it tears everything down (the
/// watcher, every dnsmasq, the namespaces with their rulesets, the state dirs), also on a panic.
#[derive(Debug)]
pub struct Scene {
    // Fields drop in this order: the watcher first (it holds sockets in the namespaces), then the
    // containers, then the state dirs.
    watch: Watch,
    containers: Vec<Shielded>,
    dir: SceneDir,
    ready: String,
    startup: Vec<String>,
    interrupt: Option<Arc<AtomicBool>>,
}

impl Scene {
    /// Builds the container `demo` (namespace `prefix-PID-N`), starts `binary` on it with
    /// `watch_args` after the scene's own `--state-dir`, `--netns` and `--container`, and returns
    /// once shield-watch printed its ready line (whichever sources it names: see
    /// [`Scene::ready_line`]). Play [`Scene::steps`] on it.
    pub fn start(binary: &Path, watch_args: &[&str], prefix: &str) -> Result<Scene, Error> {
        let setup = Setup {
            name: CONTAINER,
            records: RECORDS,
            allowed: ALLOWED,
        };
        Scene::build(binary, watch_args, prefix, &[setup], false)
    }

    /// Builds the containers of [`HOST`] (`alpha` like `demo`; `beta` with [`BETA_RECORDS`] and
    /// `pypi.org` allowed), each in its own namespace `prefix-PID-N` with its own ruleset and
    /// dnsmasqs, under one state root; starts `binary` with `--state-root ROOT` and `watch_args`,
    /// and returns once shield-watch printed its ready line (by then it follows both: see
    /// [`Scene::startup_lines`]). Play [`Scene::host_steps`] on it.
    pub fn start_host(binary: &Path, watch_args: &[&str], prefix: &str) -> Result<Scene, Error> {
        let setups = [
            Setup {
                name: HOST[0],
                records: RECORDS,
                allowed: ALLOWED,
            },
            Setup {
                name: HOST[1],
                records: BETA_RECORDS,
                allowed: BETA_ALLOWED,
            },
        ];
        Scene::build(binary, watch_args, prefix, &setups, true)
    }

    fn build(
        binary: &Path,
        watch_args: &[&str],
        prefix: &str,
        setups: &[Setup],
        host: bool,
    ) -> Result<Scene, Error> {
        preflight()?;
        let mut namespaces = Vec::new();
        for _ in setups {
            namespaces.push(Shielded::namespace(prefix)?);
        }
        let Some(first) = namespaces.first() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a scene without containers",
                "",
            ));
        };
        let dir = SceneDir::create(first)?;
        let mut containers = Vec::new();
        for (setup, ns) in setups.iter().zip(namespaces) {
            let state = match host {
                true => dir.path.join("containers").join(setup.name),
                false => dir.path.join(setup.name),
            };
            containers.push(Shielded::start(setup, ns, state, host)?);
        }
        let what: Vec<OsString> = match (host, containers.first()) {
            (true, _) => vec!["--state-root".into(), dir.path.clone().into()],
            (false, Some(c)) => vec![
                "--state-dir".into(),
                c.state.clone().into(),
                "--netns".into(),
                c.ns.path().into(),
                "--container".into(),
                c.name.into(),
            ],
            (false, None) => Vec::new(),
        };
        let mut command = Command::new(binary);
        command
            .args(what)
            .args(watch_args)
            // A Ctrl-C at the terminal reaches only the scene's owner, which stops the watcher
            // itself, in order, during teardown.
            .process_group(0);
        let mut watch = Watch::spawn(command)?;
        watch.read_stdout();
        let ready = watch.wait_ready(Instant::now() + DEADLINE)?;
        let startup = watch.stderr_seen().to_vec();
        Ok(Scene {
            watch,
            containers,
            dir,
            ready,
            startup,
            interrupt: None,
        })
    }

    /// The single-container scene, in order.
    pub fn steps() -> Vec<Step> {
        steps::single()
    }

    /// The host-wide scene, in order: it plays in both containers of [`HOST`].
    pub fn host_steps() -> Vec<Step> {
        steps::host()
    }

    /// Plays `step` and returns its events once all have arrived. Every line shield-watch writes
    /// meanwhile goes to `on_line` as it arrives (for a live view), [`StepReport::before_reload`]
    /// lines included.
    pub fn run_step(
        &mut self,
        step: &Step,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<StepReport, Error> {
        let mut report = StepReport::default();
        for (container, action) in &step.actions {
            self.act(*container, action, on_line, &mut report)
                .map_err(|e| {
                    let more = format!(
                        "lines seen in this step: {:?}; shield-watch stderr: {:?}",
                        report.lines,
                        self.watch.stderr_now()
                    );
                    e.within(&format!("step `{}`", step.name), &more)
                })?;
        }
        Ok(report)
    }

    /// Makes every wait give up with [`ErrorKind::Interrupted`] soon after `flag` turns true
    /// (a SIGINT handler's flag).
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// shield-watch's ready line, e.g. `shield-watch: ready (audit,dns,nflog)`.
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    /// Everything shield-watch wrote to stderr up to its ready line, that line included:
    /// host-wide, one `shield-watch: container NAME: following (...)` line per container.
    pub fn startup_lines(&self) -> &[String] {
        &self.startup
    }

    /// The (first) container's state directory.
    pub fn state_dir(&self) -> &Path {
        self.containers
            .first()
            .map_or(&self.dir.path, |c| c.state.as_path())
    }

    /// The (first) container's namespace.
    pub fn netns(&self) -> &Netns {
        // `build` refuses a scene without containers.
        &self.containers[0].ns
    }

    /// The directory the scene's state lives in: host-wide, the state root given to
    /// `--state-root` (its containers are under `containers/`).
    pub fn root(&self) -> &Path {
        &self.dir.path
    }

    /// Each container's name and namespace, in the order steps index them.
    pub fn containers(&self) -> Vec<(&str, &Netns)> {
        self.containers.iter().map(|c| (c.name, &c.ns)).collect()
    }

    /// Stops shield-watch with SIGINT, as a person would, and collects what it wrote after the
    /// last step and on stderr. The rest of the scene is torn down when `self` drops.
    pub fn finish(mut self) -> Result<Finish, Error> {
        self.watch.signal(Signal::INT)?;
        let deadline = Instant::now() + DEADLINE;
        // stdout reaches its end when the process exits: nothing can be missed after that.
        let rest = self.watch.rest(deadline)?;
        let (status, stderr) = self.watch.wait_exit(deadline)?;
        Ok(Finish {
            status,
            rest,
            stderr,
        })
    }

    fn act(
        &mut self,
        container: usize,
        action: &Action,
        on_line: &mut dyn FnMut(&str),
        report: &mut StepReport,
    ) -> Result<(), Error> {
        let Some(c) = self.containers.get(container) else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a step for container {container}, and the scene has {}",
                    self.containers.len()
                ),
                "",
            ));
        };
        match action {
            Action::Lookup { name, qtype, .. } => {
                dig(&c.ns, c.resolver.addr(), name, qtype)?;
            }
            Action::Connect { dest, .. } => {
                let dest: SocketAddr = dest.parse().map_err(|_| {
                    Error::new(ErrorKind::InvalidInput, format!("bad address {dest}"), "")
                })?;
                c.ns.run_in(move || crate::probe::send_one_syn(dest))?
                    .map_err(|e| Error::io(format!("connecting to {dest}"), e))?;
            }
            Action::AllowLive(domain) => {
                let path = c.state.join("live.domains");
                append(&path, &format!("{domain}\n"))
                    .map_err(|e| Error::io(format!("appending to {}", path.display()), e))?;
            }
            Action::Audit {
                action,
                dest,
                detail,
            } => {
                let entry = StateDir::audit_entry(c.name, action, Some(dest), Some(detail));
                StateDir::append_audit(&c.state, &entry)
                    .map_err(|e| Error::io("appending to audit.jsonl", e))?;
            }
            Action::UntilAllowed { name, marker } => {
                return self.until_allowed(container, name, marker, on_line, report)
            }
            Action::Rotate => self.rotate(container)?,
        }
        for _ in 0..action.events() {
            let line = self.next_line(Instant::now() + DEADLINE)?;
            on_line(&line);
            report.lines.push(line);
        }
        Ok(())
    }

    /// Repeats "look `name` up, then `marker`" in `container` until the marker's event is the
    /// only one: the marker (a blocked name, looked up after `name`) proves shield-watch has read
    /// past the lookup of `name`, so its silence is a verdict, not a delay.
    fn until_allowed(
        &mut self,
        container: usize,
        name: &str,
        marker: &str,
        on_line: &mut dyn FnMut(&str),
        report: &mut StepReport,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            {
                let c = &self.containers[container];
                dig(&c.ns, c.resolver.addr(), name, "A")?;
                dig(&c.ns, c.resolver.addr(), marker, "A")?;
            }
            let mut round = Vec::new();
            loop {
                let line = self.next_line(deadline)?;
                on_line(&line);
                let is_marker = mentions(&line, marker);
                round.push(line);
                if is_marker {
                    break;
                }
            }
            if round.len() == 1 {
                report.lines.append(&mut round);
                return Ok(());
            }
            report.before_reload.append(&mut round);
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("{name} was still reported 20s after it was allowed"),
                    "",
                ));
            }
        }
    }

    /// Rotates `container`'s query log with the real logrotate, as a host's cron job would.
    fn rotate(&mut self, container: usize) -> Result<(), Error> {
        let c = &self.containers[container];
        let log = c.state.join("dnsmasq.log");
        let body = format!(
            "rotate 1\nmissingok\nnocompress\npostrotate\n  kill -USR2 {}\nendscript",
            c.resolver.pid()
        );
        crate::Logrotate::new(&self.dir.path, &[&log], &body)?.run()?;
        // dnsmasq re-creates the log when it handles the signal, a moment after logrotate returns.
        let deadline = Instant::now() + DEADLINE;
        while !log.exists() {
            self.check_interrupt()?;
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("dnsmasq did not re-create {} after SIGUSR2", log.display()),
                    "",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The next stdout line of shield-watch, within `deadline`, looking at the interrupt flag
    /// between slices of the wait.
    fn next_line(&mut self, deadline: Instant) -> Result<String, Error> {
        loop {
            self.check_interrupt()?;
            match self.watch.next_line(slice(deadline)) {
                Err(e) if e.kind() == ErrorKind::Timeout && Instant::now() < deadline => {}
                got => return got,
            }
        }
    }

    fn check_interrupt(&self) -> Result<(), Error> {
        match &self.interrupt {
            Some(flag) if flag.load(Ordering::Relaxed) => {
                Err(Error::new(ErrorKind::Interrupted, "interrupted", ""))
            }
            _ => Ok(()),
        }
    }
}

/// Replaces what changes from run to run in a JSON event line with fixed text, so a stream can be
/// compared exactly: `ts` becomes `TS`, `extra.sport` becomes `SPORT`. Other lines (text format)
/// come back unchanged.
pub fn normalize(line: &str) -> String {
    let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(line) else {
        return line.to_string();
    };
    if event.contains_key("ts") {
        event.insert("ts".into(), "TS".into());
    }
    if let Some(serde_json::Value::Object(extra)) = event.get_mut("extra") {
        if extra.contains_key("sport") {
            extra.insert("sport".into(), "SPORT".into());
        }
    }
    serde_json::Value::Object(event).to_string()
}

/// Whether an event line (JSON or text) is about `domain`.
fn mentions(line: &str, domain: &str) -> bool {
    line.contains(&format!("\"domain\":\"{domain}\"")) || line.split(' ').any(|w| w == domain)
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// When to stop blocking to look at the interrupt flag and the deadline again.
fn slice(deadline: Instant) -> Instant {
    deadline.min(Instant::now() + Duration::from_millis(100))
}

/// `/tmp/shield-lab/NAMESPACE-state`: the state dir's parent and the logrotate files. Its name
/// starts with the namespace's, so [`crate::leftovers`] finds it should it outlive the scene.
#[derive(Debug)]
struct SceneDir {
    path: PathBuf,
}

impl SceneDir {
    fn create(ns: &Netns) -> Result<SceneDir, Error> {
        let path = Path::new(CONF_ROOT).join(format!("{}-state", ns.name()));
        fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(SceneDir { path })
    }
}

impl Drop for SceneDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_fixes_only_the_volatile_fields() {
        let line = r#"{"ts":"2026-03-31T12:00:00.123456+00:00","source":"nflog","action":"queued_connection","container":"demo","dest":"203.0.113.99","port":443,"proto":6,"extra":{"src":"198.51.100.1","sport":"40312"}}"#;
        assert_eq!(
            normalize(line),
            r#"{"ts":"TS","source":"nflog","action":"queued_connection","container":"demo","dest":"203.0.113.99","port":443,"proto":6,"extra":{"src":"198.51.100.1","sport":"SPORT"}}"#
        );
        assert_eq!(
            normalize("12:00:00.123 dns blocked_query"),
            "12:00:00.123 dns blocked_query"
        );
    }

    #[test]
    fn mentions_matches_whole_names_in_json_and_text() {
        let json = r#"{"source":"dns","domain":"evil.example.com"}"#;
        assert!(mentions(json, "evil.example.com"));
        assert!(!mentions(json, "example.com"));
        let text = "12:00:00.123 dns   blocked_query        evil.example.com type=A";
        assert!(mentions(text, "evil.example.com"));
        assert!(!mentions(text, "tracker.example.net"));
    }

    #[test]
    fn every_step_is_narrated_and_the_scene_expects_events() {
        let steps = Scene::steps();
        assert!(steps.iter().all(|s| !s.narration.is_empty()));
        let mut names: Vec<&str> = steps.iter().map(|s| s.name).collect();
        names.dedup();
        assert_eq!(names.len(), steps.len(), "step names are unique");
        assert_eq!(steps.iter().map(Step::expected_events).sum::<usize>(), 13);
        assert!(steps.iter().flat_map(|s| &s.actions).all(|(c, _)| *c == 0));
    }

    #[test]
    fn the_host_scene_plays_in_both_containers_and_expects_events() {
        let steps = Scene::host_steps();
        assert!(steps.iter().all(|s| !s.narration.is_empty()));
        let mut names: Vec<&str> = steps.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), steps.len(), "step names are unique");
        assert_eq!(steps.iter().map(Step::expected_events).sum::<usize>(), 20);
        for (container, name) in HOST.iter().enumerate() {
            let events: usize = steps
                .iter()
                .flat_map(|s| &s.actions)
                .filter(|(c, _)| *c == container)
                .map(|(_, a)| a.events())
                .sum();
            assert!(events >= 8, "{name} causes {events} events");
        }
        assert!(steps
            .iter()
            .flat_map(|s| &s.actions)
            .all(|(c, _)| *c < HOST.len()));
    }
}
