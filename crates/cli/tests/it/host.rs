//! Host-wide mode end to end: a state root with real shielded containers (each its own network
//! namespace, nftables shield and dnsmasq started as terok-shield starts it, with
//! `--conf-file=STATE/dnsmasq.conf` and its PID in the state dir), followed by one process.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;
use shield_lab::{dig, Dnsmasq, Netns, Ruleset, ShieldedOptions, StateDir};

use crate::support::{binary, chown, Watch};

/// One shielded container under `ROOT/containers/NAME` (also used by the fleet tests).
pub(crate) struct Container {
    pub(crate) dir: PathBuf,
    ns: Netns,
    pub(crate) resolver: Option<Dnsmasq>,
    internet: Dnsmasq,
}

impl Container {
    /// A container whose upstream resolves `records`; `allowed.example` is its allow-list.
    pub(crate) fn shielded(root: &Path, name: &str, records: &[(&str, &str)]) -> Container {
        shield_lab::preflight().expect("the host-wide tests need root, ip, nft and dnsmasq");
        let dir = root.join("containers").join(name);
        fs::create_dir_all(&dir).unwrap();
        let ns = Netns::create("shw-host").unwrap();
        ns.with_uplink().unwrap();
        Ruleset::shield(100).load(&ns).unwrap();
        let records: Vec<(&str, IpAddr)> = records
            .iter()
            .map(|(n, a)| (*n, a.parse().unwrap()))
            .collect();
        let internet =
            Dnsmasq::upstream(Some(&ns), "127.0.0.2".parse().unwrap(), 5353, &records).unwrap();
        // terok-shield's order: the state, then its dnsmasq.
        StateDir::domain_files(&dir, "dnsmasq-live", &["allowed.example"], &[]).unwrap();
        let options = ShieldedOptions {
            terok_layout: true,
            ..ShieldedOptions::default()
        };
        let resolver =
            Dnsmasq::shielded_with(&ns, &dir, internet.addr(), &["allowed.example"], &options)
                .unwrap();
        Container {
            dir,
            ns,
            resolver: Some(resolver),
            internet,
        }
    }

    /// Stops its dnsmasq and starts a new one in the same namespace, as terok-shield does on
    /// every live allow or deny: a new PID in `dnsmasq.pid`, the same network namespace.
    fn restart_dnsmasq(&mut self) -> u32 {
        self.resolver.take();
        let options = ShieldedOptions {
            terok_layout: true,
            ..ShieldedOptions::default()
        };
        let resolver = Dnsmasq::shielded_with(
            &self.ns,
            &self.dir,
            self.internet.addr(),
            &["allowed.example"],
            &options,
        )
        .unwrap();
        let pid = resolver.pid();
        self.resolver = Some(resolver);
        pid
    }

    /// Its network namespace.
    pub(crate) fn netns(&self) -> &Netns {
        &self.ns
    }

    pub(crate) fn lookup(&self, name: &str) -> String {
        let resolver = self.resolver.as_ref().unwrap();
        dig(&self.ns, resolver.addr(), name, "A").unwrap()
    }

    pub(crate) fn connect(&self, to: &str) {
        let to: SocketAddr = to.parse().unwrap();
        let result = self
            .ns
            .run_in(move || TcpStream::connect_timeout(&to, Duration::from_millis(300)))
            .unwrap();
        assert!(result.is_err(), "the shield let {to} through");
    }
}

pub(crate) fn start(root: &Path, args: &[&str]) -> Watch {
    let mut command = binary();
    command.arg("--state-root").arg(root).args(args);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|line| line.starts_with("shield-watch: ready ("));
    watch
}

/// Reads events until one matches; returns it.
pub(crate) fn event_where(watch: &mut Watch, want: impl Fn(&Value) -> bool) -> Value {
    let lines = watch.lines_until(|line| want(&serde_json::from_str(line).unwrap()));
    serde_json::from_str(lines.last().unwrap()).unwrap()
}

pub(crate) fn is(event: &Value, source: &str, container: &str) -> bool {
    event["source"] == source && event["container"] == container
}

#[test]
fn every_container_of_a_state_root_in_one_stream() {
    let root = tempfile::tempdir().unwrap();
    // The same address means a different name in c1 and c2.
    let c1 = Container::shielded(root.path(), "c1", &[("one.example", "203.0.113.10")]);
    let c2 = Container::shielded(root.path(), "c2", &[("two.example", "203.0.113.10")]);
    let mut c3 = Container::shielded(root.path(), "c3", &[("three.example", "203.0.113.30")]);
    let lookup = root.path().join("containers/c4");
    fs::create_dir_all(&lookup).unwrap();
    StateDir::domain_files(&lookup, "lookup", &[], &[]).unwrap();

    let mut watch = start(root.path(), &[]);
    for name in ["c1", "c2", "c3"] {
        let line = format!("shield-watch: container {name}: following (audit,dns,nflog)");
        assert!(
            watch.stderr_seen().contains(&line),
            "{line}: {:#?}",
            watch.stderr_seen()
        );
    }
    assert!(
        watch
            .stderr_seen()
            .contains(&"shield-watch: container c4: following (audit)".to_string()),
        "{:#?}",
        watch.stderr_seen()
    );
    assert!(
        watch.stderr_seen().iter().any(
            |l| l.starts_with("shield-watch: container c4: nflog: no dnsmasq with tier lookup")
        ),
        "{:#?}",
        watch.stderr_seen()
    );

    // Least privilege and the thread list host-wide are checked by
    // confine::host_wide_every_thread_but_nflog_holds_only_cap_dac_read_search_and_nflog_what_entering_takes.

    // Blocked lookups, each named with its own container.
    assert_eq!(c1.lookup("one.example").trim(), "203.0.113.10");
    let event = event_where(&mut watch, |e| is(e, "dns", "c1"));
    assert_eq!(event["domain"], "one.example");
    assert_eq!(c2.lookup("two.example").trim(), "203.0.113.10");
    let event = event_where(&mut watch, |e| is(e, "dns", "c2"));
    assert_eq!(event["domain"], "two.example");

    // The same blocked address, named from each container's own log.
    c1.connect("203.0.113.10:443");
    let event = event_where(&mut watch, |e| is(e, "nflog", "c1"));
    assert_eq!(event["dest"], "203.0.113.10");
    assert_eq!(event["domain"], "one.example", "{event}");
    c2.connect("203.0.113.10:443");
    let event = event_where(&mut watch, |e| is(e, "nflog", "c2"));
    assert_eq!(event["domain"], "two.example", "{event}");

    // The lookup-tier container's audit log.
    StateDir::append_audit(&lookup, r#"{"action":"denied","dest":"198.51.100.7"}"#).unwrap();
    let event = event_where(&mut watch, |e| is(e, "audit", "c4"));
    assert_eq!(event["dest"], "198.51.100.7");

    // A container started while running is followed, its files from their start.
    let c5 = Container::shielded(root.path(), "c5", &[("five.example", "203.0.113.50")]);
    watch.wait_stderr(|l| {
        l == "shield-watch: container c5: following (audit,dns,nflog)"
            || l.starts_with("shield-watch: container c5: nflog: following dnsmasq")
    });
    c5.lookup("five.example");
    let event = event_where(&mut watch, |e| is(e, "dns", "c5"));
    assert_eq!(event["domain"], "five.example");
    c5.connect("203.0.113.50:80");
    let event = event_where(&mut watch, |e| is(e, "nflog", "c5"));
    assert_eq!(event["domain"], "five.example", "{event}");

    // One removed (its dnsmasq stopped, its directory deleted): let go of, the rest runs.
    c3.resolver.take();
    fs::remove_dir_all(&c3.dir).unwrap();
    watch.wait_stderr(|l| l == "shield-watch: container c3: gone");
    c1.lookup("another.example");
    let event = event_where(&mut watch, |e| is(e, "dns", "c1"));
    assert_eq!(event["domain"], "another.example");

    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{status}: {stderr:#?}");
    let summary = stderr
        .iter()
        .find(|l| l.starts_with("shield-watch: summary:"))
        .unwrap();
    assert!(summary.contains("by container (c1="), "{summary}");
}

#[test]
fn state_dir_and_state_root_exclude_each_other_and_one_container_has_one_name() {
    let root = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "--state-root",
            "/nonexistent",
            "--state-dir",
            "/nonexistent",
        ],
        vec![
            "--state-dir",
            "/nonexistent",
            "--container",
            "x",
            "--container",
            "y",
        ],
        vec![
            "--state-root",
            "/nonexistent",
            "--netns",
            "/proc/self/ns/net",
        ],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let (status, _, stderr) = crate::support::run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{stderr}");
    }
    // TEROK_SHIELD_STATE_DIR is the default root; without it, every container of the host.
    let mut command = binary();
    command
        .env_remove("TEROK_SHIELD_STATE_DIR")
        .arg("--no-nflog");
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: every shielded container of the host"));
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
    let mut command = binary();
    command
        .env("TEROK_SHIELD_STATE_DIR", root.path())
        .arg("--no-nflog")
        .stdin(std::process::Stdio::null());
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
}

#[test]
fn every_containers_history_with_from_start_then_resumed_from_the_cursor() {
    let root = tempfile::tempdir().unwrap();
    let cursor_dir = tempfile::tempdir().unwrap();
    let cursor = cursor_dir.path().join("cursor");
    let names = ["a", "b", "c"];
    let audit = |name: &str, port: u16| {
        let dir = root.path().join("containers").join(name);
        let line = format!(r#"{{"action":"denied","dest":"198.51.100.9","port":{port}}}"#);
        StateDir::append_audit(&dir, &line).unwrap();
    };
    for name in names {
        let dir = root.path().join("containers").join(name);
        fs::create_dir_all(&dir).unwrap();
        StateDir::domain_files(&dir, "lookup", &[], &[]).unwrap();
        audit(name, 1);
        audit(name, 2);
    }
    let args = ["--no-nflog", "--cursor", cursor.to_str().unwrap()];

    // Every container's history, each line named with its container.
    let mut watch = start(root.path(), &[&args[..], &["--from-start"]].concat());
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while seen.values().map(Vec::len).sum::<usize>() < 2 * names.len() {
        let event: Value = serde_json::from_str(&watch.lines(1)[0]).unwrap();
        if let Some(port) = event["port"].as_u64() {
            let container = event["container"].as_str().unwrap().to_string();
            seen.entry(container).or_default().push(port);
        }
    }
    for name in names {
        assert_eq!(seen[name], [1, 2], "{seen:?}");
    }
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());

    // Resumed from the saved positions (keys NAME/audit, escaped): only what came after.
    for name in names {
        audit(name, 3);
    }
    let mut watch = start(root.path(), &args);
    for line in watch.lines(names.len()) {
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event["port"], 3, "{line}");
    }
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
    let saved = fs::read_to_string(&cursor).unwrap();
    for name in names {
        assert!(saved.contains(&format!("{name}%2Faudit")), "{saved}");
    }
}

/// The scale test's container count: the 1 000 containers one host is expected to run.
const SCALE: usize = 1000;
/// Of which this many have a `dnsmasq-live` tier (their query log is followed too) but no
/// running dnsmasq: enough that the files followed need more than 1 024 descriptors.
const SCALE_DNS: usize = 64;

/// What `/proc/PID/fd` of the process holds: (descriptors, inotify instances).
fn descriptors(pid: u32) -> (usize, usize) {
    let mut all = 0;
    let mut inotify = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        all += 1;
        if fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify") {
            inotify += 1;
        }
    }
    (all, inotify)
}

/// The soft and hard `Max open files` of `/proc/PID/limits`.
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_string(),
        fields.next().unwrap().to_string(),
    )
}

#[test]
fn a_thousand_containers_under_a_soft_limit_of_1024_descriptors() {
    let root = tempfile::tempdir().unwrap();
    let name = |i: usize| format!("c{i:04}");
    for i in 0..SCALE {
        let dir = root.path().join("containers").join(name(i));
        fs::create_dir_all(&dir).unwrap();
        if i < SCALE_DNS {
            // A dnsmasq-live tier with its query log but no dnsmasq: the dns thread follows it,
            // the nflog thread says why it cannot.
            StateDir::domain_files(&dir, "dnsmasq-live", &["allowed.example"], &[]).unwrap();
            fs::write(
                dir.join("dnsmasq.log"),
                "Mar 31 12:00:00 dnsmasq[9]: query[A] old.example from 127.0.0.1\n",
            )
            .unwrap();
        } else {
            StateDir::domain_files(&dir, "lookup", &[], &[]).unwrap();
        }
    }

    let mut command = binary();
    command.arg("--state-root").arg(root.path());
    // SAFETY: between fork and exec only setrlimit runs, a direct system call that neither
    // allocates nor takes locks.
    unsafe {
        command.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(1024),
                maximum: Some(4096),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)
                .map_err(std::io::Error::from)
        });
    }
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|line| line.starts_with("shield-watch: ready ("));
    let pid = watch.pid();
    let following = |w: &Watch, what: &str| {
        w.stderr_seen()
            .iter()
            .filter(|l| l.starts_with("shield-watch: container c") && l.ends_with(what))
            .count()
    };
    let others: Vec<&String> = watch
        .stderr_seen()
        .iter()
        .filter(|l| !l.contains(": following (") && !l.contains(": nflog: no dnsmasq"))
        .take(20)
        .collect();
    assert_eq!(
        following(&watch, ": following (audit)"),
        SCALE - SCALE_DNS,
        "{others:#?}"
    );
    assert_eq!(following(&watch, ": following (audit,dns)"), SCALE_DNS);

    // The soft limit was raised to the hard one; one inotify instance per watching thread, far
    // from the 128 a user may have; one thread per source kind plus the writer, whatever the
    // number of containers.
    assert_eq!(
        open_files_limit(pid),
        ("4096".to_string(), "4096".to_string())
    );
    let (fds, inotify) = descriptors(pid);
    assert!(
        (1..=4).contains(&inotify),
        "{inotify} inotify instances ({fds} descriptors)"
    );
    let threads = fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    assert!(threads <= 16, "{threads} threads");

    // One audit line in every container, and one blocked lookup in each dnsmasq-live one.
    for i in 0..SCALE {
        let dir = root.path().join("containers").join(name(i));
        // Port 0 is no port: the port is the container's number plus one.
        let line = format!(
            r#"{{"action":"denied","dest":"198.51.100.7","port":{}}}"#,
            i + 1
        );
        StateDir::append_audit(&dir, &line).unwrap();
        if i < SCALE_DNS {
            let query =
                format!("Mar 31 12:00:01 dnsmasq[9]: query[A] blocked{i}.example from 127.0.0.1\n");
            fs::OpenOptions::new()
                .append(true)
                .open(dir.join("dnsmasq.log"))
                .unwrap()
                .write_all(query.as_bytes())
                .unwrap();
        }
    }
    let mut audit: BTreeMap<String, u64> = BTreeMap::new();
    let mut dns: BTreeMap<String, String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while audit.len() < SCALE || dns.len() < SCALE_DNS {
        assert!(
            Instant::now() < deadline,
            "{} audit and {} dns events of {SCALE} and {SCALE_DNS}",
            audit.len(),
            dns.len()
        );
        for line in watch.lines_within(SCALE, Duration::from_secs(1)) {
            let event: Value = serde_json::from_str(&line).unwrap();
            let container = event["container"].as_str().unwrap().to_string();
            match event["source"].as_str().unwrap() {
                "audit" => {
                    let port = event["port"].as_u64().unwrap();
                    assert!(audit.insert(container, port).is_none(), "twice: {line}");
                }
                "dns" => {
                    let domain = event["domain"].as_str().unwrap().to_string();
                    assert!(dns.insert(container, domain).is_none(), "twice: {line}");
                }
                _ => panic!("unexpected: {line}"),
            }
        }
    }
    // Each line named with the container whose file it was written to.
    for (container, port) in &audit {
        assert_eq!(*container, name(*port as usize - 1));
    }
    for (container, domain) in &dns {
        assert_eq!(
            *domain,
            format!(
                "blocked{}.example",
                &container[1..].parse::<usize>().unwrap()
            )
        );
    }
    let (fds, inotify) = descriptors(pid);
    eprintln!(
        "{SCALE} containers: {fds} descriptors, {inotify} inotify instances, {threads} threads"
    );

    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{status}");
    assert!(
        stderr
            .iter()
            .any(|l| l.starts_with("shield-watch: summary:")),
        "no summary"
    );
}

#[test]
fn a_dnsmasq_restarted_in_the_same_namespace_loses_no_packet() {
    let root = tempfile::tempdir().unwrap();
    let mut c = Container::shielded(root.path(), "web", &[]);
    let mut watch = start(root.path(), &["--source", "nflog"]);
    // A packet every 10 ms, each to its own port, while the dnsmasq restarts ten times.
    const PACKETS: u16 = 300;
    let sender = crate::support::paced_packets(c.ns.path(), "203.0.113.77", PACKETS);
    let mut pids = Vec::new();
    for _ in 0..10 {
        pids.push(c.restart_dnsmasq());
        std::thread::sleep(Duration::from_millis(200));
    }
    sender.join().unwrap();
    let (missing, lost) = crate::support::unshown_packets(&mut watch, "203.0.113.77", PACKETS);
    assert!(
        missing.len() as u64 <= lost,
        "{} packets neither delivered nor counted across {} dnsmasq restarts: {missing:?}",
        missing.len() as u64 - lost,
        pids.len()
    );
    assert!(missing.is_empty(), "lost {missing:?}");
    watch.signal(Signal::TERM);
    let (status, _) = watch.wait_exit();
    assert!(status.success());
}

#[test]
fn a_group_held_by_another_listener_is_taken_over_when_it_goes() {
    let root = tempfile::tempdir().unwrap();
    let web = Container::shielded(root.path(), "web", &[("held.example", "203.0.113.60")]);
    let other = Container::shielded(root.path(), "other", &[("free.example", "203.0.113.61")]);
    // Another listener (as terok-shield's clearance reader would) holds web's group.
    let holder_state = tempfile::tempdir().unwrap();
    fs::write(holder_state.path().join("dns.tier"), "lookup").unwrap();
    let mut holder = binary();
    holder
        .arg("--state-dir")
        .arg(holder_state.path())
        .args(["--source", "nflog", "--netns"])
        .arg(web.ns.path());
    let mut holder = Watch::spawn_command(holder);
    holder.wait_stderr(|l| l == "shield-watch: ready (nflog)");

    let mut watch = start(root.path(), &[]);
    // Said before the ready line.
    let said = watch
        .stderr_seen()
        .iter()
        .find(|l| l.starts_with("shield-watch: container web: nflog: "))
        .unwrap_or_else(|| panic!("{:#?}", watch.stderr_seen()))
        .clone();
    assert!(said.contains("already bound"), "{said}");
    assert!(
        said.contains("taken over when that listener goes"),
        "{said}"
    );
    // The other container is unaffected.
    other.connect("203.0.113.61:443");
    let event = event_where(&mut watch, |e| is(e, "nflog", "other"));
    assert_eq!(event["dest"], "203.0.113.61");

    drop(holder);
    watch.wait_stderr(|l| {
        l == "shield-watch: container web: nflog: took over NFLOG group 100 (its other listener is gone)"
    });
    web.lookup("held.example");
    web.connect("203.0.113.60:443");
    let event = event_where(&mut watch, |e| is(e, "nflog", "web"));
    assert_eq!(event["domain"], "held.example", "{event}");
}

#[test]
fn container_names_and_globs_select_containers_host_wide() {
    let root = tempfile::tempdir().unwrap();
    for name in ["ci-1", "ci-2", "web", "db"] {
        let dir = root.path().join("containers").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "lookup").unwrap();
    }
    let mut watch = start(
        root.path(),
        &["--no-nflog", "--container", "ci-*", "--container", "db"],
    );
    let mut following: Vec<&str> = watch
        .stderr_seen()
        .iter()
        .filter_map(|l| l.strip_prefix("shield-watch: container "))
        .filter_map(|l| l.strip_suffix(": following (audit)"))
        .collect();
    following.sort_unstable();
    assert_eq!(following, ["ci-1", "ci-2", "db"]);
    // One that appears later is selected by the same rule.
    for name in ["ci-3", "webby"] {
        let dir = root.path().join("containers").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "lookup").unwrap();
    }
    watch.wait_stderr(|l| l == "shield-watch: container ci-3: following (audit)");
    for name in ["web", "webby", "ci-3"] {
        StateDir::append_audit(
            &root.path().join("containers").join(name),
            r#"{"action":"denied","dest":"192.0.2.1"}"#,
        )
        .unwrap();
    }
    let event = event_where(&mut watch, |e| e["source"] == "audit");
    assert_eq!(
        event["container"], "ci-3",
        "only a selected container's event"
    );
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success());
    assert!(!stderr.iter().any(|l| l.contains("webby")), "{stderr:#?}");
}

/// Every file the nflog helper opens while containers come, restart their dnsmasq and go, as
/// `strace` sees it: only its dnsmasq checks under `/proc` (through a `/proc/PID` directory:
/// `cmdline`, `status`, `ns/net`) and the kernel's NFLOG listing; never a file of the state
/// root.
#[test]
fn the_helper_opens_no_file_of_the_state_root() {
    let root = tempfile::tempdir().unwrap();
    let mut watch = start(root.path(), &[]);
    let helper = crate::support::helper_pid(watch.stderr_seen());
    let trace_dir = tempfile::tempdir().unwrap();
    let trace = trace_dir.path().join("trace");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,openat2,open", "-o"])
        .arg(&trace)
        .args(["-p", &helper.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace (Debian package strace)");
    // Attached once the helper shows a tracer.
    let deadline = Instant::now() + crate::support::DEADLINE;
    while !fs::read_to_string(format!("/proc/{helper}/status"))
        .unwrap()
        .lines()
        .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
    {
        assert!(Instant::now() < deadline, "strace did not attach");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut web = Container::shielded(root.path(), "web", &[("web.example", "203.0.113.70")]);
    let db = Container::shielded(root.path(), "db", &[]);
    for name in ["web", "db"] {
        // Followed with its socket at once, or once its dnsmasq.pid appears.
        watch.wait_stderr(|l| {
            l == format!("shield-watch: container {name}: following (audit,dns,nflog)")
                || l.starts_with(&format!(
                    "shield-watch: container {name}: nflog: following dnsmasq "
                ))
        });
    }
    let pid = web.restart_dnsmasq();
    // The same namespace: the socket is kept, and nothing is said; then it still works.
    std::thread::sleep(Duration::from_millis(500));
    web.lookup("web.example");
    web.connect("203.0.113.70:443");
    let event = event_where(&mut watch, |e| is(e, "nflog", "web"));
    assert_eq!(event["domain"], "web.example", "{event}");
    drop(db);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(strace.id() as i32).unwrap(),
        Signal::INT,
    )
    .unwrap();
    strace.wait().unwrap();
    let trace = fs::read_to_string(&trace).unwrap();
    let root_path = root.path().to_str().unwrap();
    let mut opened = Vec::new();
    for line in trace.lines().filter(|l| l.contains("open")) {
        let Some(path) = line.split('"').nth(1) else {
            continue;
        };
        assert!(
            !path.contains(root_path),
            "the helper opened {path}: {trace}"
        );
        assert!(
            path.starts_with("/proc/") || ["cmdline", "status", "ns/net"].contains(&path),
            "the helper opened {path}: {trace}"
        );
        opened.push(path.to_string());
    }
    // The trace saw the work: both containers' namespaces, and the restarted dnsmasq checked.
    assert!(
        opened.iter().filter(|p| *p == "ns/net").count() >= 3,
        "{trace}"
    );
    assert!(opened.contains(&format!("/proc/{pid}")), "{trace}");
}

/// The helper ending (here killed) is said once on stderr; the worker goes on with the sockets
/// it has, tells a container that starts later why it gets none, and still stops cleanly.
#[test]
fn the_worker_says_when_the_helper_dies_and_keeps_running() {
    let root = tempfile::tempdir().unwrap();
    let web = Container::shielded(root.path(), "web", &[("web.example", "203.0.113.80")]);
    let mut watch = start(root.path(), &[]);
    let helper = crate::support::helper_pid(watch.stderr_seen());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(helper as i32).unwrap(),
        Signal::KILL,
    )
    .unwrap();
    watch.wait_stderr(|l| {
        l.starts_with(&format!(
            "shield-watch: nflog: the privileged helper (pid {helper}) is gone: it hung up, killed by signal 9"
        ))
    });
    // Reaped by the worker: no zombie left behind.
    assert!(!Path::new(&format!("/proc/{helper}")).exists());
    // The socket made before still delivers.
    web.lookup("web.example");
    web.connect("203.0.113.80:443");
    let event = event_where(&mut watch, |e| is(e, "nflog", "web"));
    assert_eq!(event["domain"], "web.example", "{event}");
    let _late = Container::shielded(root.path(), "late", &[]);
    watch.wait_stderr(|l| {
        l.starts_with(
            "shield-watch: container late: nflog: no privileged helper to make the socket",
        )
    });
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{stderr:#?}");
}

/// The worker killed outright: the helper sees its end of the socketpair close and ends too.
#[test]
fn the_helper_ends_when_the_worker_dies() {
    let root = tempfile::tempdir().unwrap();
    let watch = start(root.path(), &[]);
    let helper = crate::support::helper_pid(watch.stderr_seen());
    assert!(Path::new(&format!("/proc/{helper}")).exists());
    drop(watch); // SIGKILL, then reaped
    let deadline = Instant::now() + crate::support::DEADLINE;
    // Its parent gone, it is reaped by init (or the subreaper) once it ends.
    while fs::read_to_string(format!("/proc/{helper}/status"))
        .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:\tZ")))
    {
        assert!(Instant::now() < deadline, "the helper outlived the worker");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn nflog_sockets_are_capped_host_wide() {
    // Each socket is kernel memory a root's owner can ask for with one more namespace.
    let root = tempfile::tempdir().unwrap();
    let _a = Container::shielded(root.path(), "a", &[]);
    let _b = Container::shielded(root.path(), "b", &[]);
    let watch = start(
        root.path(),
        &["--source", "nflog", "--max-nflog-sockets", "1"],
    );
    let following = watch
        .stderr_seen()
        .iter()
        .filter(|l| l.ends_with(": following (nflog)"))
        .count();
    let refused: Vec<&String> = watch
        .stderr_seen()
        .iter()
        .filter(|l| l.contains("NFLOG sockets are open already"))
        .collect();
    assert_eq!(following, 1, "{:#?}", watch.stderr_seen());
    assert_eq!(refused.len(), 1, "{:#?}", watch.stderr_seen());
}

#[test]
fn host_wide_sockets_get_a_smaller_receive_buffer() {
    // 8 MiB per container host-wide (the kernel reports twice what was set), not one
    // container's 64 MiB: a root's owner decides how many namespaces there are.
    let root = tempfile::tempdir().unwrap();
    let c = Container::shielded(root.path(), "web", &[]);
    let watch = start(root.path(), &["--source", "nflog"]);
    let shown =
        c.ns.exec_ok(&["ss", "-f", "netlink", "-a", "-m", "-p"])
            .unwrap();
    // One line per socket: `nft:nflog-helper/PID ... skmem:(r0,rbBYTES,...)`.
    let ours: Vec<u64> = shown
        .lines()
        .filter(|l| l.contains("nft:nflog-helper") || l.contains("nft:shield-watch"))
        .filter_map(|l| {
            let at = l.find(",rb")? + 3;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(ours, [2 * (8 << 20)], "{shown}");
    drop(watch);
}

/// One unprivileged user (uid 12345, owning the root) starts forty processes, each in a user
/// and network namespace of its own, each with the command line of a container's dnsmasq and
/// named in that container's `dnsmasq.pid`: one NFLOG socket per namespace would be forty
/// receive buffers of the attacker's choosing. With `--max-nflog-sockets 16`, sixteen sockets
/// are made, each with the host-wide 8 MiB buffer (the kernel reports twice that): kernel memory
/// bounded by 16 x 16 MiB whatever the number of namespaces; the rest are refused, one line each.
#[test]
fn forty_attacker_namespaces_get_bounded_sockets() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let mut processes = Vec::new();
    for i in 0..40 {
        let dir = root.join(format!("containers/c{i:02}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "dnsmasq-live\n").unwrap();
        let conf = format!("--conf-file={}", dir.join("dnsmasq.conf").display());
        let child = std::process::Command::new("setpriv")
            .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
            .args(["unshare", "-rn", "python3", "-c"])
            .arg("import sys; sys.stdin.read()")
            .arg(&conf)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("setpriv, unshare (util-linux) and python3");
        fs::write(dir.join("dnsmasq.pid"), format!("{}\n", child.id())).unwrap();
        for path in [dir.join("dns.tier"), dir.join("dnsmasq.pid"), dir.clone()] {
            chown(&path, 12345);
        }
        processes.push(child);
    }
    chown(&root.join("containers"), 12345);
    chown(&root, 12345);
    // Each is in its own network namespace before shield-watch looks (setpriv and unshare
    // exec, so the PID stays; python3 is the last image).
    let deadline = Instant::now() + Duration::from_secs(20);
    for child in &processes {
        while fs::read_link(format!("/proc/{}/exe", child.id()))
            .is_ok_and(|exe| !exe.to_string_lossy().contains("python3"))
        {
            assert!(Instant::now() < deadline, "the namespaces were not made");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let watch = start(&root, &["--source", "nflog", "--max-nflog-sockets", "16"]);
    let following = watch
        .stderr_seen()
        .iter()
        .filter(|l| l.ends_with(": following (nflog)"))
        .count();
    let refused = watch
        .stderr_seen()
        .iter()
        .filter(|l| l.contains("NFLOG sockets are open already"))
        .count();
    assert_eq!((following, refused), (16, 24), "{:#?}", watch.stderr_seen());
    // Read in each namespace: shield-watch's sockets and their buffers.
    let mut buffers = Vec::new();
    for child in &processes {
        let shown = std::process::Command::new("nsenter")
            .args([
                "-t",
                &child.id().to_string(),
                "-n",
                "ss",
                "-f",
                "netlink",
                "-a",
                "-m",
                "-p",
            ])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        for line in shown
            .lines()
            .filter(|l| l.contains("nft:nflog-helper") || l.contains("nft:shield-watch"))
        {
            let at = line.find(",rb").expect("skmem") + 3;
            let rb: u64 = line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            buffers.push(rb);
        }
    }
    assert_eq!(buffers, vec![2 * (8 << 20); 16]);
    drop(watch);
    for mut child in processes {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// With no root (every container of the host, where Landlock lets the worker read `/`), a
/// state directory found through its dnsmasq is held: replaced by a symlink to another
/// user's directory after it was found, it is let go of, and what the link leads to is never
/// read (looked up by path, the follower would take Bob's log for a rotation of Alice's).
#[test]
fn with_no_root_a_state_directory_replaced_by_a_symlink_is_let_go_of_not_followed() {
    let alice = tempfile::tempdir().unwrap();
    let name = "swapped-after-found";
    let c = Container::shielded(alice.path(), name, &[]);
    fs::write(c.dir.join("audit.jsonl"), "").unwrap();
    let bob = tempfile::tempdir().unwrap();
    fs::write(bob.path().join("dns.tier"), "dnsmasq-live\n").unwrap();
    fs::write(
        bob.path().join("audit.jsonl"),
        "{\"action\":\"bobs-secret\"}\n",
    )
    .unwrap();
    let mut command = binary();
    command.args(["--container", name, "--no-nflog", "--source", "audit"]);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l == format!("shield-watch: container {name}: following (audit)"));
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    let moved = alice.path().join("moved");
    fs::rename(&c.dir, &moved).unwrap();
    std::os::unix::fs::symlink(bob.path(), &c.dir).unwrap();
    // Alice's own log grows where it went: looked up by path, the follower would now see
    // Bob's file at the path and read it whole.
    let mut audit = fs::OpenOptions::new()
        .append(true)
        .open(moved.join("audit.jsonl"))
        .unwrap();
    audit.write_all(b"{\"action\":\"alices\"}\n").unwrap();
    watch.wait_stderr(|l| l == format!("shield-watch: container {name}: gone"));
    watch.signal(Signal::TERM);
    let rest = watch.rest();
    assert!(
        !rest.iter().any(|l| l.contains("bobs-secret")),
        "Bob's audit entry reached the stream: {rest:#?}"
    );
    drop(c);
}
