//! Host-wide mode end to end: a state root with real shielded containers (each its own network
//! namespace, nftables shield and dnsmasq started as terok-shield starts it, with
//! `--conf-file=STATE/dnsmasq.conf` and its PID in the state dir), followed by one process.

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;
use shield_lab::{dig, Dnsmasq, Netns, Ruleset, ShieldedOptions, StateDir};

use crate::support::{binary, Watch};

/// One shielded container under `ROOT/containers/NAME`.
struct Container {
    dir: PathBuf,
    ns: Netns,
    resolver: Option<Dnsmasq>,
    _internet: Dnsmasq,
}

impl Container {
    /// A container whose upstream resolves `records`; `allowed.example` is its allow-list.
    fn shielded(root: &Path, name: &str, records: &[(&str, &str)]) -> Container {
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
            _internet: internet,
        }
    }

    fn lookup(&self, name: &str) -> String {
        let resolver = self.resolver.as_ref().unwrap();
        dig(&self.ns, resolver.addr(), name, "A").unwrap()
    }

    fn connect(&self, to: &str) {
        let to: SocketAddr = to.parse().unwrap();
        let result = self
            .ns
            .run_in(move || TcpStream::connect_timeout(&to, Duration::from_millis(300)))
            .unwrap();
        assert!(result.is_err(), "the shield let {to} through");
    }
}

fn start(root: &Path, args: &[&str]) -> Watch {
    let mut command = binary();
    command.arg("--state-root").arg(root).args(args);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|line| line.starts_with("shield-watch: ready ("));
    watch
}

/// Reads events until one matches; returns it.
fn event_where(watch: &mut Watch, want: impl Fn(&Value) -> bool) -> Value {
    let lines = watch.lines_until(|line| want(&serde_json::from_str(line).unwrap()));
    serde_json::from_str(lines.last().unwrap()).unwrap()
}

fn is(event: &Value, source: &str, container: &str) -> bool {
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
            watch.stderr_seen.contains(&line),
            "{line}: {:#?}",
            watch.stderr_seen
        );
    }
    assert!(
        watch
            .stderr_seen
            .contains(&"shield-watch: container c4: following (audit)".to_string()),
        "{:#?}",
        watch.stderr_seen
    );
    assert!(
        watch.stderr_seen.iter().any(
            |l| l.starts_with("shield-watch: container c4: nflog: no dnsmasq with tier lookup")
        ),
        "{:#?}",
        watch.stderr_seen
    );

    // Least privilege, host-wide: every thread has no_new_privs; the nflog thread keeps what
    // entering containers started later takes, the others only CAP_DAC_READ_SEARCH.
    let pid = watch.child.id();
    let mut names = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap();
        let status = fs::read_to_string(task.path().join("status")).unwrap();
        let comm = comm.trim().to_string();
        let want = if comm == "nflog" {
            "0000000000281004"
        } else {
            "0000000000000004"
        };
        assert!(
            status.contains(&format!("CapEff:\t{want}")),
            "{comm}: {status}"
        );
        assert!(status.contains("NoNewPrivs:\t1"), "{comm}: {status}");
        names.push(comm);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "audit",
            "containers",
            "dns",
            "nflog",
            "nflog-events",
            "shield-watch",
            "signals",
            "writer"
        ],
        "one thread per source kind, whatever the number of containers"
    );

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
fn state_dir_and_state_root_exclude_each_other_and_container_needs_state_dir() {
    let root = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "--state-root",
            "/nonexistent",
            "--state-dir",
            "/nonexistent",
        ],
        vec!["--state-root", "/nonexistent", "--container", "x"],
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
    // TEROK_SHIELD_STATE_DIR is the default root; without it, nothing says what to watch.
    let mut command = binary();
    command.env_remove("TEROK_SHIELD_STATE_DIR");
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
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
