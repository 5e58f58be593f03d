//! A scripted scene on a real shielded container, watched by the real `shield-watch`: the
//! end-to-end test and `cargo xtask demo` both run it.
//!
//! The scene builds the container the way the shield does and then plays [`Scene::steps`] on it,
//! one at a time. Each step acts like a container process or an operator (a DNS lookup, one TCP
//! connection attempt, an allow-list change, an audit entry, a log rotation) and waits, with a
//! deadline, for exactly the number of events the step must cause. The steps run strictly one
//! after another and every action waits for its own events before the next one starts, so the
//! whole stream has one possible order: a test can compare it line by line.
//!
//! | what | where |
//! |---|---|
//! | namespace | `PREFIX-PID-N`, uplink `198.51.100.1/24`, `2001:db8:1::1/64` |
//! | ruleset | [`crate::Ruleset::shield`] group 100; deny set `203.0.113.250`; `192.0.2.0/24` plays a private range |
//! | "the internet" | dnsmasq on `127.0.0.2:5353` in the namespace ([`RECORDS`]) |
//! | the shield's resolver | dnsmasq on `127.0.0.1:53`, nftset for `github.com`, log in the state dir |
//! | state dir | `/tmp/shield-lab/NAMESPACE-state/demo` (domain files, tier `dnsmasq-live`) |
//! | shield-watch | `--state-dir DIR --netns /run/netns/NAMESPACE --container demo` + the caller's args |

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::dig::dig;
use crate::dnsmasq::{Dnsmasq, CONF_ROOT};
use crate::error::{Error, ErrorKind};
use crate::netns::Netns;
use crate::preflight::preflight;
use crate::ruleset::{Ruleset, PRIVATE_RANGES};
use crate::statedir::StateDir;

/// The name the scene's container goes by: the state dir's basename and `--container`.
pub const CONTAINER: &str = "demo";

/// What "the internet" resolves. Every other name is NXDOMAIN.
pub const RECORDS: &[(&str, &str)] = &[
    ("github.com", "203.0.113.11"),
    ("api.github.com", "203.0.113.10"),
    ("evil.example.com", "203.0.113.66"),
    ("ads.example.com", "203.0.113.250"),
    ("tracker.example.net", "203.0.113.77"),
];

/// The container's allow list (`profile.domains` of the domain-files layout, and the resolver's nftset domains).
const ALLOWED: &[&str] = &["github.com"];
/// The container's `denied.domains`; the deny set holds its address.
const DENIED: &[&str] = &["ads.example.com"];
const DENIED_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 250);
/// Tests may only send to TEST-NET, so one TEST-NET block plays a private LAN range.
const PRIVATE_STAND_IN: &str = "192.0.2.0/24";
const NFLOG_GROUP: u16 = 100;

/// Bound on every single wait (a process starting, an event arriving). Generous: the machines are
/// shared and slow, and a passing run never waits for it.
const DEADLINE: Duration = Duration::from_secs(20);

/// One step of the scene: what happens, in a sentence for a person, and the actions behind it.
#[derive(Debug, Clone)]
pub struct Step {
    /// A short identifier, e.g. `raw-ip`.
    pub name: &'static str,
    /// One line for a person: what the step does and what shield-watch should show.
    pub narration: &'static str,
    actions: Vec<Action>,
}

impl Step {
    /// How many events the step must cause.
    pub fn expected_events(&self) -> usize {
        self.actions.iter().map(Action::events).sum()
    }
}

/// What one action does; each waits for its own events before the next action starts.
#[derive(Debug, Clone)]
enum Action {
    /// `dig NAME TYPE` at the shield's resolver, from inside the container.
    Lookup {
        name: &'static str,
        qtype: &'static str,
        events: usize,
    },
    /// One TCP SYN to this address from inside the container (see [`crate::probe::send_one_syn`]).
    Connect { dest: &'static str, events: usize },
    /// The operator appends a domain to `live.domains` (no event by itself).
    AllowLive(&'static str),
    /// An audit entry `action` with `dest` and `detail`, as the shield writes it.
    Audit {
        action: &'static str,
        dest: &'static str,
        detail: &'static str,
    },
    /// Looks `name` up, then `marker` (a blocked name), until only the marker is reported:
    /// shield-watch has reloaded the allow list. One event: the marker's.
    UntilAllowed {
        name: &'static str,
        marker: &'static str,
    },
    /// Real logrotate: `dnsmasq.log` → `dnsmasq.log.1`, postrotate SIGUSR2 to the resolver;
    /// returns once dnsmasq has created the new log. No event by itself.
    Rotate,
}

impl Action {
    fn events(&self) -> usize {
        match self {
            Action::Lookup { events, .. } | Action::Connect { events, .. } => *events,
            Action::Audit { .. } | Action::UntilAllowed { .. } => 1,
            Action::AllowLive(_) | Action::Rotate => 0,
        }
    }
}

fn lookup(name: &'static str, qtype: &'static str, events: usize) -> Action {
    Action::Lookup {
        name,
        qtype,
        events,
    }
}

/// A connection attempt the shield logs exactly once.
fn connect(dest: &'static str) -> Action {
    Action::Connect { dest, events: 1 }
}

fn audit(action: &'static str, dest: &'static str, detail: &'static str) -> Action {
    Action::Audit {
        action,
        dest,
        detail,
    }
}

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

/// A shielded container with shield-watch following it. Dropping it tears everything down (the
/// watcher, both dnsmasqs, the namespace with its ruleset, the state dir), also on a panic.
#[derive(Debug)]
pub struct Scene {
    // Fields drop in this order: the watcher first (it holds a socket in the namespace), then the
    // resolvers, then the namespace, then the state dir.
    watch: Watch,
    resolver: Dnsmasq,
    #[allow(dead_code)] // Held for its Drop: the resolver forwards to it.
    internet: Dnsmasq,
    ns: Netns,
    dir: SceneDir,
    state: PathBuf,
    ready: String,
    interrupt: Option<Arc<AtomicBool>>,
}

impl Scene {
    /// Builds the container (namespace `prefix-PID-N`), starts `binary` on it with `watch_args`
    /// after the scene's own `--state-dir`, `--netns` and `--container`, and returns once
    /// shield-watch printed its ready line (whichever sources it names: see [`Scene::ready_line`]).
    pub fn start(binary: &Path, watch_args: &[&str], prefix: &str) -> Result<Scene, Error> {
        preflight()?;
        let ns = Netns::create(prefix)?;
        ns.with_uplink()?;
        let mut private: Vec<&str> = PRIVATE_RANGES.to_vec();
        private.push(PRIVATE_STAND_IN);
        Ruleset::shield(NFLOG_GROUP)
            .deny(&[IpAddr::V4(DENIED_IP)])
            .private_ranges(&private)
            .load(&ns)?;

        let dir = SceneDir::create(&ns)?;
        let state = dir.path.join(CONTAINER);
        StateDir::domain_files(&state, "dnsmasq-live", ALLOWED, DENIED)
            .map_err(|e| Error::io(format!("writing the state dir {}", state.display()), e))?;

        let records = RECORDS
            .iter()
            .map(|(name, ip)| {
                let ip = ip.parse().map_err(|_| {
                    Error::new(ErrorKind::InvalidInput, format!("bad record {ip}"), "")
                })?;
                Ok((*name, ip))
            })
            .collect::<Result<Vec<(&str, IpAddr)>, Error>>()?;
        let internet = Dnsmasq::upstream(Some(&ns), [127, 0, 0, 2].into(), 5353, &records)?;
        let resolver = Dnsmasq::shielded(&ns, &state, internet.addr(), ALLOWED)?;

        let mut watch = Watch::spawn(binary, &state, &ns, watch_args)?;
        let ready = watch.wait_ready()?;
        Ok(Scene {
            watch,
            resolver,
            internet,
            ns,
            dir,
            state,
            ready,
            interrupt: None,
        })
    }

    /// The scene, in order.
    pub fn steps() -> Vec<Step> {
        use Action::{AllowLive, Rotate, UntilAllowed};
        vec![
            Step {
                name: "allowed-lookups",
                narration: "api.github.com and github.com resolve: allowed (github.com is on the allow list), so no event",
                actions: vec![
                    lookup("api.github.com", "A", 0),
                    lookup("api.github.com", "AAAA", 0),
                    lookup("github.com", "A", 0),
                ],
            },
            Step {
                name: "blocked-lookups",
                narration: "ads.example.com, evil.example.com (A and AAAA, as getaddrinfo asks) and tracker.example.net are not allowed: blocked_query each",
                actions: vec![
                    // Order matters: the later queries prove the earlier replies reached
                    // shield-watch's domain cache before the connection steps use them.
                    lookup("ads.example.com", "A", 1),
                    lookup("evil.example.com", "A", 1),
                    lookup("evil.example.com", "AAAA", 1),
                    lookup("tracker.example.net", "A", 1),
                ],
            },
            Step {
                name: "raw-ip",
                narration: "TCP to 203.0.113.99:443 and [2001:db8:ffff::99]:443, addresses no lookup returned: the default-deny rule logs TEROK_SHIELD_BLOCKED, queued_connection",
                actions: vec![
                    connect("203.0.113.99:443"),
                    connect("[2001:db8:ffff::99]:443"),
                ],
            },
            Step {
                name: "resolved-blocked",
                narration: "TCP to 203.0.113.66:443, where evil.example.com pointed: queued_connection, named evil.example.com from the query log",
                actions: vec![connect("203.0.113.66:443")],
            },
            Step {
                name: "denied",
                narration: "TCP to 203.0.113.250:443 (ads.example.com), on the deny list: TEROK_SHIELD_DENIED, blocked_connection",
                actions: vec![connect("203.0.113.250:443")],
            },
            Step {
                name: "private",
                narration: "TCP to 192.0.2.10:22 (192.0.2.0/24 plays a private LAN range here): TEROK_SHIELD_PRIVATE, private_range",
                actions: vec![connect("192.0.2.10:22")],
            },
            Step {
                name: "allowed-connection",
                narration: "TCP to 203.0.113.10:443: dnsmasq put api.github.com's address into the allow set, so the packet passes, logged TEROK_SHIELD_ALLOWED: allowed_connection",
                actions: vec![connect("203.0.113.10:443")],
            },
            Step {
                name: "live-allow",
                narration: "the operator allows tracker.example.net while the container runs (live.domains, audit entry): lookups of it stop being reported, evil.example.com still is",
                actions: vec![
                    AllowLive("tracker.example.net"),
                    audit("allowed", "tracker.example.net", "live allow"),
                    UntilAllowed {
                        name: "tracker.example.net",
                        marker: "evil.example.com",
                    },
                ],
            },
            Step {
                name: "rotation",
                narration: "logrotate moves dnsmasq.log to dnsmasq.log.1 and dnsmasq reopens it (SIGUSR2); the next blocked lookup, late.example.org, still shows",
                actions: vec![
                    Rotate,
                    lookup("late.example.org", "A", 1),
                ],
            },
        ]
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
        for action in &step.actions {
            self.act(action, on_line, &mut report).map_err(|e| {
                let more = format!(
                    "lines seen in this step: {:?}; shield-watch stderr: {:?}",
                    report.lines,
                    self.watch.stderr_lines()
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

    /// The container's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The container's namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Stops shield-watch with SIGINT, as a person would, and collects what it wrote after the
    /// last step and on stderr. The rest of the scene is torn down when `self` drops.
    pub fn finish(mut self) -> Result<Finish, Error> {
        self.watch.signal(Signal::INT);
        let deadline = Instant::now() + DEADLINE;
        let mut rest = Vec::new();
        // stdout reaches its end when the process exits: nothing can be missed after that.
        loop {
            match self.watch.stdout.recv_timeout(slice(deadline)) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "shield-watch did not exit within 20s of SIGINT",
                        format!("stderr: {:?}", self.watch.stderr_lines()),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        let status = self.watch.wait(deadline)?;
        let stderr = self.watch.stderr_until_closed(deadline);
        Ok(Finish {
            status,
            rest,
            stderr,
        })
    }

    fn act(
        &mut self,
        action: &Action,
        on_line: &mut dyn FnMut(&str),
        report: &mut StepReport,
    ) -> Result<(), Error> {
        match action {
            Action::Lookup { name, qtype, .. } => {
                dig(&self.ns, self.resolver.addr(), name, qtype)?;
            }
            Action::Connect { dest, .. } => {
                let dest: SocketAddr = dest.parse().map_err(|_| {
                    Error::new(ErrorKind::InvalidInput, format!("bad address {dest}"), "")
                })?;
                self.ns
                    .run_in(move || crate::probe::send_one_syn(dest))?
                    .map_err(|e| Error::io(format!("connecting to {dest}"), e))?;
            }
            Action::AllowLive(domain) => {
                let path = self.state.join("live.domains");
                append(&path, &format!("{domain}\n"))
                    .map_err(|e| Error::io(format!("appending to {}", path.display()), e))?;
            }
            Action::Audit {
                action,
                dest,
                detail,
            } => {
                let entry = StateDir::audit_entry(CONTAINER, action, Some(dest), Some(detail));
                StateDir::append_audit(&self.state, &entry)
                    .map_err(|e| Error::io("appending to audit.jsonl", e))?;
            }
            Action::UntilAllowed { name, marker } => {
                return self.until_allowed(name, marker, on_line, report)
            }
            Action::Rotate => self.rotate()?,
        }
        for _ in 0..action.events() {
            let line = self.next_line(Instant::now() + DEADLINE)?;
            on_line(&line);
            report.lines.push(line);
        }
        Ok(())
    }

    /// Repeats "look `name` up, then `marker`" until the marker's event is the only one: the
    /// marker (a blocked name, looked up after `name`) proves shield-watch has read past the
    /// lookup of `name`, so its silence is a verdict, not a delay.
    fn until_allowed(
        &mut self,
        name: &str,
        marker: &str,
        on_line: &mut dyn FnMut(&str),
        report: &mut StepReport,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            dig(&self.ns, self.resolver.addr(), name, "A")?;
            dig(&self.ns, self.resolver.addr(), marker, "A")?;
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

    /// Rotates the query log with the real logrotate, as a host's cron job would.
    fn rotate(&mut self) -> Result<(), Error> {
        let log = self.state.join("dnsmasq.log");
        let conf = self.dir.path.join("logrotate.conf");
        let status = self.dir.path.join("logrotate.status");
        let text = format!(
            "{} {{\n  rotate 1\n  missingok\n  nocompress\n  postrotate\n    kill -USR2 {}\n  endscript\n}}\n",
            log.display(),
            self.resolver.pid()
        );
        fs::write(&conf, text)
            .and_then(|()| fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)))
            .map_err(|e| Error::io(format!("writing {}", conf.display()), e))?;
        let (conf, status) = (conf.display().to_string(), status.display().to_string());
        crate::cmd::run(&["logrotate", "--force", "--state", &status, &conf])?;
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

    /// The next stdout line of shield-watch, within `deadline`.
    fn next_line(&mut self, deadline: Instant) -> Result<String, Error> {
        loop {
            self.check_interrupt()?;
            match self.watch.stdout.recv_timeout(slice(deadline)) {
                Ok(line) => return Ok(line),
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "no event from shield-watch within 20s",
                        "",
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.watch.wait(Instant::now() + DEADLINE)?;
                    return Err(Error::new(
                        ErrorKind::Command,
                        format!("shield-watch ended ({status})"),
                        "",
                    ));
                }
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

/// How long to block before looking at the interrupt flag and the deadline again.
fn slice(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(Duration::from_millis(100))
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

/// The shield-watch process, its stdout and stderr read line by line on their own threads.
#[derive(Debug)]
struct Watch {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Watch {
    fn spawn(binary: &Path, state: &Path, ns: &Netns, args: &[&str]) -> Result<Watch, Error> {
        let mut command = Command::new(binary);
        command
            .arg("--state-dir")
            .arg(state)
            .arg("--netns")
            .arg(ns.path())
            .args(["--container", CONTAINER])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A Ctrl-C at the terminal reaches only the scene's owner, which stops the watcher
            // itself, in order, during teardown.
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            Error::new(
                ErrorKind::Spawn,
                binary.display().to_string(),
                e.to_string(),
            )
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(ErrorKind::Spawn, "shield-watch pipes", ""));
        };
        Ok(Watch {
            child,
            stdout: lines_of(stdout),
            stderr: lines_of(stderr),
            stderr_seen: Vec::new(),
        })
    }

    /// Waits for `shield-watch: ready (...)` on stderr; fails with its stderr if it exits first.
    fn wait_ready(&mut self) -> Result<String, Error> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.stderr.recv_timeout(slice(deadline)) {
                Ok(line) => {
                    let ready = line.starts_with("shield-watch: ready (");
                    self.stderr_seen.push(line.clone());
                    if ready {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(Instant::now() + DEADLINE)?;
                    return Err(Error::new(
                        ErrorKind::Command,
                        format!("shield-watch exited before it was ready ({status})"),
                        self.stderr_seen.join("\n"),
                    ));
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        "shield-watch printed no ready line within 20s",
                        self.stderr_seen.join("\n"),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// stderr so far (without waiting).
    fn stderr_lines(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.clone()
    }

    /// All of stderr, up to its end (the process has exited) or the deadline.
    fn stderr_until_closed(&mut self, deadline: Instant) -> Vec<String> {
        loop {
            match self.stderr.recv_timeout(slice(deadline)) {
                Ok(line) => self.stderr_seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.stderr_seen.clone()
    }

    fn signal(&self, signal: Signal) {
        // The child is not reaped before drop, so the pid cannot have been reused.
        let _ = kill_process(Pid::from_child(&self.child), signal);
    }

    fn wait(&mut self, deadline: Instant) -> Result<ExitStatus, Error> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "shield-watch did not exit",
                    "",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
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
    }
}
