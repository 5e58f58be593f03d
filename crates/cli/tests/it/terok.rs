//! shield-watch against the real terok-shield 0.9.0 from PyPI: containers prepared by its own
//! CLI, shielded by its own OCI hook (its ruleset, its dnsmasq), changed by its own live
//! `allow`/`deny`, watched host-wide under one name each.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;
use shield_lab::{TerokContainer, TerokLayout, TerokShield};

use crate::support::{binary, Watch};

fn records() -> Vec<(&'static str, IpAddr)> {
    vec![
        ("api.github.com", "203.0.113.10".parse().unwrap()),
        ("example.org", "203.0.113.20".parse().unwrap()),
        ("other.example", "203.0.113.30".parse().unwrap()),
    ]
}

fn prefix(what: &str) -> String {
    format!("shw{}-{what}", std::process::id() % 100_000)
}

fn start(root: &Path) -> Watch {
    let mut command = binary();
    command.arg("--state-root").arg(root);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    watch
}

fn event_where(watch: &mut Watch, want: impl Fn(&Value) -> bool) -> Value {
    let lines = watch.lines_until(|line| want(&serde_json::from_str(line).unwrap()));
    serde_json::from_str(lines.last().unwrap()).unwrap()
}

#[test]
fn real_terok_containers_are_watched_under_one_name_each() {
    let prefix = prefix("terok");
    let shield = TerokShield::ensure(&prefix).expect("terok-shield 0.9.0 in a venv");
    let root = tempfile::tempdir().unwrap();
    let alpha = TerokContainer::start(
        &shield,
        &prefix,
        "alpha",
        TerokLayout::StateRoot(root.path().to_path_buf()),
        &["github.com"],
        &records(),
    )
    .expect("prepare + createRuntime hook");
    let beta = TerokContainer::start(
        &shield,
        &prefix,
        "beta",
        TerokLayout::StateRoot(root.path().to_path_buf()),
        &["github.com"],
        &records(),
    )
    .expect("prepare + createRuntime hook");
    let mut watch = start(root.path());
    for name in ["alpha", "beta"] {
        assert!(
            watch.stderr_seen().contains(&format!(
                "shield-watch: container {name}: following (audit,dns,nflog)"
            )),
            "{:#?}",
            watch.stderr_seen()
        );
    }

    // A refused lookup, through terok's own dnsmasq.
    alpha.dig("example.org", "A").unwrap();
    let event = event_where(&mut watch, |e| e["source"] == "dns");
    assert_eq!(event["container"], "alpha");
    assert_eq!(event["domain"], "example.org");
    // A refused connection, logged by terok's own ruleset, named from alpha's log.
    let to: SocketAddr = "203.0.113.20:443".parse().unwrap();
    assert!(alpha.connect(to, Duration::from_millis(500)).is_err());
    let event = event_where(&mut watch, |e| {
        e["source"] == "nflog" && e["dest"] == "203.0.113.20"
    });
    assert_eq!(event["container"], "alpha");
    assert_eq!(event["domain"], "example.org", "{event}");
    // A private-range probe.
    let _ = beta.probe_private();
    let event = event_where(&mut watch, |e| e["action"] == "private_range");
    assert_eq!(event["container"], "beta");
    // A live allow: terok's own audit line, and its dnsmasq restarted in the same namespace.
    let before = beta.dnsmasq_pid().unwrap();
    beta.allow("other.example").unwrap();
    assert_ne!(beta.dnsmasq_pid().unwrap(), before);
    let event = event_where(&mut watch, |e| {
        e["source"] == "audit" && e["action"] == "allowed"
    });
    assert_eq!(event["container"], "beta", "{event}");
    // IPv6 link-local multicast from the container's own stack is noise: counted, not shown.
    crate::multicast::send_link_local_multicast(beta.netns());
    let _ = beta.connect(
        "203.0.113.20:8443".parse().unwrap(),
        Duration::from_millis(300),
    );
    let event = event_where(&mut watch, |e| e["source"] == "nflog" && e["port"] == 8443);
    assert_eq!(event["container"], "beta");
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{stderr:#?}");
    let summary = stderr.iter().find(|l| l.contains("summary")).unwrap();
    assert!(summary.contains("by container (alpha="), "{summary}");
    assert!(!summary.contains("beta=0"), "{summary}");
    // terok-shield's ruleset logged the multicast packet; it was counted, not shown.
    assert!(summary.contains("link_local_multicast"), "{summary}");
    let lines = watch.rest();
    assert!(!lines.iter().any(|l| l.contains("ff02::")), "{lines:#?}");
    drop(alpha);
    drop(beta);
}

#[test]
fn terok_restarting_its_dnsmasq_ten_times_loses_no_packet() {
    let prefix = prefix("terokr");
    let shield = TerokShield::ensure(&prefix).expect("terok-shield 0.9.0 in a venv");
    let root = tempfile::tempdir().unwrap();
    let web = TerokContainer::start(
        &shield,
        &prefix,
        "web",
        TerokLayout::StateRoot(root.path().to_path_buf()),
        &["github.com"],
        &records(),
    )
    .expect("prepare + createRuntime hook");
    let mut watch = start(root.path());
    const PACKETS: u16 = 400;
    let sender = crate::support::paced_packets(web.netns().path(), "203.0.113.77", PACKETS);
    let mut pids = vec![web.dnsmasq_pid().unwrap()];
    for i in 0..10 {
        if i % 2 == 0 {
            web.allow("other.example").unwrap();
        } else {
            web.deny("other.example").unwrap();
        }
        pids.push(web.dnsmasq_pid().unwrap());
    }
    sender.join().unwrap();
    pids.dedup();
    assert!(
        pids.len() > 5,
        "terok-shield restarted its dnsmasq: {pids:?}"
    );
    let (missing, lost) = crate::support::unshown_packets(&mut watch, "203.0.113.77", PACKETS);
    assert!(
        missing.len() as u64 <= lost,
        "{} packets neither delivered nor counted across {} restarts: {missing:?}",
        missing.len() as u64 - lost,
        pids.len() - 1
    );
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
}

#[test]
fn terok_reader_holding_the_group_then_exiting_is_taken_over() {
    let prefix = prefix("terokh");
    let shield = TerokShield::ensure(&prefix).expect("terok-shield 0.9.0 in a venv");
    let root = tempfile::tempdir().unwrap();
    let held = TerokContainer::start(
        &shield,
        &prefix,
        "held",
        TerokLayout::StateRoot(root.path().to_path_buf()),
        &["github.com"],
        &records(),
    )
    .unwrap();
    let free = TerokContainer::start(
        &shield,
        &prefix,
        "free",
        TerokLayout::StateRoot(root.path().to_path_buf()),
        &["github.com"],
        &records(),
    )
    .unwrap();
    let mut reader = held.start_reader().expect("nflog-reader.py --emit=json");
    let mut watch = start(root.path());
    let said = watch
        .stderr_seen()
        .iter()
        .find(|l| l.starts_with("shield-watch: container held: nflog: "))
        .unwrap_or_else(|| panic!("{:#?}", watch.stderr_seen()))
        .clone();
    assert!(said.contains("already bound"), "{said}");
    // The reader's own blocked entries arrive through the audit log, under the one name.
    let _ = held.connect(
        "203.0.113.20:443".parse().unwrap(),
        Duration::from_millis(300),
    );
    let event = event_where(&mut watch, |e| {
        e["source"] == "audit" && e["action"] == "blocked"
    });
    // Whatever the reader calls the container (its name, or the 12-hex id it was given),
    // the event carries the one name; a different word of the entry's is kept in extra.
    assert_eq!(event["container"], "held", "{event}");
    if let Some(own) = event["extra"]["audit_container"].as_str() {
        assert_eq!(own, &held.id()[..12], "{event}");
    }
    // The other container is unaffected.
    let _ = free.connect(
        "203.0.113.10:443".parse().unwrap(),
        Duration::from_millis(300),
    );
    let event = event_where(&mut watch, |e| e["source"] == "nflog");
    assert_eq!(event["container"], "free");
    reader.stop().unwrap();
    watch.wait_stderr(|l| {
        l == "shield-watch: container held: nflog: took over NFLOG group 100 (its other listener is gone)"
    });
    let _ = held.connect(
        "203.0.113.30:443".parse().unwrap(),
        Duration::from_millis(300),
    );
    let event = event_where(&mut watch, |e| {
        e["source"] == "nflog" && e["container"] == "held"
    });
    assert_eq!(event["dest"], "203.0.113.30");
}

#[test]
fn with_no_flag_every_terok_container_is_found_wherever_its_state_lives() {
    // terok's orchestrator keeps each task's state in {task_dir}/shield, recorded only in the
    // container's annotation: two unrelated task directories, and one ROOT/containers/NAME.
    let prefix = prefix("terokw");
    let shield = TerokShield::ensure(&prefix).expect("terok-shield 0.9.0 in a venv");
    let tasks = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let one = tasks.path().join("task-one").join("shield");
    let two = elsewhere.path().join("task-two").join("shield");
    let a = TerokContainer::start(
        &shield,
        &prefix,
        "one",
        TerokLayout::StateDir(one),
        &["github.com"],
        &records(),
    )
    .expect("pre_start + createRuntime hook");
    let b = TerokContainer::start(
        &shield,
        &prefix,
        "two",
        TerokLayout::StateDir(two),
        &["github.com"],
        &records(),
    )
    .expect("pre_start + createRuntime hook");
    let c = TerokContainer::start(
        &shield,
        &prefix,
        "three",
        TerokLayout::StateRoot(root.path().to_path_buf()),
        &["github.com"],
        &records(),
    )
    .expect("prepare + createRuntime hook");
    let mut command = binary();
    command.env_remove("TEROK_SHIELD_STATE_DIR").args([
        "--container",
        "task-*",
        "--container",
        "three",
    ]);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    for name in ["task-one", "task-two", "three"] {
        assert!(
            watch.stderr_seen().contains(&format!(
                "shield-watch: container {name}: following (audit,dns,nflog)"
            )),
            "{name}: {:#?}",
            watch.stderr_seen()
        );
    }
    for (container, name) in [(&a, "task-one"), (&b, "task-two"), (&c, "three")] {
        let to: SocketAddr = "203.0.113.20:443".parse().unwrap();
        container.dig("example.org", "A").unwrap();
        let event = event_where(&mut watch, |e| {
            e["source"] == "dns" && e["container"] == name
        });
        assert_eq!(event["domain"], "example.org");
        assert!(container.connect(to, Duration::from_millis(300)).is_err());
        let event = event_where(&mut watch, |e| {
            e["source"] == "nflog" && e["container"] == name
        });
        assert_eq!(event["domain"], "example.org", "{event}");
    }
    // A container started while running is found through its new dnsmasq.
    let late_dir = tasks.path().join("task-late").join("shield");
    let late = TerokContainer::start(
        &shield,
        &prefix,
        "late",
        TerokLayout::StateDir(late_dir),
        &["github.com"],
        &records(),
    )
    .expect("pre_start + createRuntime hook");
    watch.wait_stderr(|l| {
        l == "shield-watch: container task-late: following (audit,dns,nflog)"
            || l.starts_with("shield-watch: container task-late: nflog: following dnsmasq")
    });
    late.dig("example.org", "A").unwrap();
    let event = event_where(&mut watch, |e| {
        e["source"] == "dns" && e["container"] == "task-late"
    });
    assert_eq!(event["domain"], "example.org");
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
}
