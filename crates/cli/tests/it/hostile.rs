//! A hostile state root: whoever owns it (a container's owner, unprivileged) tries to crash,
//! stall, blind or trick the root-run watcher with one command each. Every case has a bound.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use crate::support::{binary, chown, State, Watch};

fn host(root: &Path, args: &[&str]) -> Watch {
    let mut command = binary();
    command.arg("--state-root").arg(root).args(args);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    watch
}

fn container(root: &Path, name: &OsStr, tier: &str) -> std::path::PathBuf {
    let dir = root.join("containers").join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("dns.tier"), tier).unwrap();
    dir
}

/// The peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn assert_printable(lines: &[String]) {
    for line in lines {
        assert!(
            line.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "a byte outside printable ASCII reached stderr: {line:?}"
        );
    }
}

#[test]
fn a_fifo_in_place_of_a_log_cannot_stall_the_start() {
    // `mkfifo DIR/audit.jsonl`: creating a missing log must not open it blocking.
    let state = State::new(Some("lookup"));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        state.file("audit.jsonl"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let started = Instant::now();
    let mut command = binary();
    command
        .arg("--state-dir")
        .arg(state.path())
        .arg("--no-nflog");
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ready only after {:?}",
        started.elapsed()
    );
    watch.signal(Signal::TERM);
    let (status, _) = watch.wait_exit();
    assert!(status.success());
}

#[test]
fn hostile_names_never_reach_stderr_as_escapes_or_forged_lines() {
    let root = tempfile::tempdir().unwrap();
    let evil = OsStr::new("evil\x1b]0;PWNED\x07\nshield-watch: container alpha: gone");
    let dir = container(root.path(), evil, "dnsmasq-static");
    // A malformed allow-list line quoting escapes, a refused symlink, a too-long line.
    fs::write(
        dir.join("profile.domains"),
        "good.example\nbad\x1b[31m\x07 name\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("audit.jsonl")).unwrap();
    let mut watch = host(root.path(), &["--no-nflog", "--max-line", "64"]);
    let long = format!(
        "Dec  4 12:00:00 dnsmasq[1]: query[A] {}\x1b[2J.example from 10.0.2.100\n\
         Dec  4 12:00:00 dnsmasq[1]: query[A] q.example from 10.0.2.100\n",
        "x".repeat(100)
    );
    let mut log = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("dnsmasq.log"))
        .unwrap();
    std::io::Write::write_all(&mut log, long.as_bytes()).unwrap();
    watch.wait_stderr(|l| l.contains("skipped a line of"));
    let event: Value = serde_json::from_str(&watch.lines(1)[0]).unwrap();
    assert_eq!(
        event["container"],
        "evil ]0;PWNED  shield-watch: container alpha: gone"
    );
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success());
    assert_printable(&stderr);
    assert!(
        !stderr
            .iter()
            .any(|l| l.starts_with("shield-watch: container alpha")),
        "a forged line: {stderr:#?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("by container (evil ]0;PWNED  shield-watch")),
        "{stderr:#?}"
    );
}

#[test]
fn a_malformed_allow_list_line_is_said_once_not_per_query() {
    for host_wide in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let dir = container(root.path(), OsStr::new("web"), "dnsmasq-static");
        fs::write(dir.join("profile.domains"), "good.example\nnot a domain\n").unwrap();
        let mut command = binary();
        if host_wide {
            command.arg("--state-root").arg(root.path());
        } else {
            command.arg("--state-dir").arg(&dir);
        }
        command.args(["--no-nflog", "--source", "dns"]);
        let mut watch = Watch::spawn_command(command);
        watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
        let mut log = fs::OpenOptions::new()
            .append(true)
            .open(dir.join("dnsmasq.log"))
            .unwrap();
        for i in 0..100 {
            let line =
                format!("Dec  4 12:00:00 dnsmasq[1]: query[A] q{i}.example from 10.0.2.100\n");
            std::io::Write::write_all(&mut log, line.as_bytes()).unwrap();
        }
        let events = watch.lines(100);
        assert!(events[99].contains("q99.example"));
        watch.signal(Signal::TERM);
        let (status, stderr) = watch.wait_exit();
        assert!(status.success());
        let warnings = stderr.iter().filter(|l| l.contains("not a domain")).count();
        assert_eq!(warnings, 1, "host-wide {host_wide}: {stderr:#?}");
    }
}

#[test]
fn a_64_gib_sparse_allow_list_costs_no_memory_and_stalls_nobody() {
    let root = tempfile::tempdir().unwrap();
    let mine = container(root.path(), OsStr::new("mine"), "dnsmasq-static");
    let list = fs::File::create(mine.join("profile.domains")).unwrap();
    list.set_len(64 << 30).unwrap();
    let other = container(root.path(), OsStr::new("other"), "lookup");
    let mut watch = host(root.path(), &["--no-nflog"]);
    let said = watch
        .stderr_seen()
        .iter()
        .find(|l| l.contains("cannot load the allow-list"))
        .cloned()
        .unwrap_or_else(|| panic!("{:#?}", watch.stderr_seen()));
    assert!(said.contains("container mine"), "{said}");
    fs::write(
        other.join("audit.jsonl"),
        "{\"action\":\"denied\",\"dest\":\"192.0.2.1\"}\n",
    )
    .unwrap();
    let event: Value = serde_json::from_str(&watch.lines(1)[0]).unwrap();
    assert_eq!(event["container"], "other");
    let peak = peak_rss_kib(watch.pid());
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_container_name_that_is_not_utf8_is_refused_with_a_line() {
    let root = tempfile::tempdir().unwrap();
    container(root.path(), OsStr::from_bytes(b"bad\xff\xfename"), "lookup");
    container(root.path(), OsStr::new("fine"), "lookup");
    let watch = host(root.path(), &["--no-nflog"]);
    let refused = watch
        .stderr_seen()
        .iter()
        .find(|l| l.contains("not UTF-8"))
        .unwrap_or_else(|| panic!("{:#?}", watch.stderr_seen()));
    assert!(
        refused.starts_with("shield-watch: container bad"),
        "{refused}"
    );
    assert_printable(watch.stderr_seen());
    assert!(watch
        .stderr_seen()
        .iter()
        .any(|l| l == "shield-watch: container fine: following (audit)"));
}

#[test]
fn a_state_root_reached_through_another_users_symlink_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let bobs = base.path().join("bob-root");
    container(&bobs, OsStr::new("secret"), "lookup");
    // Alice replaces her root by a link to Bob's.
    let alices = base.path().join("alice-root");
    std::os::unix::fs::symlink(&bobs, &alices).unwrap();
    chown(&alices, 12345);
    let mut command = binary();
    command.arg("--state-root").arg(&alices).arg("--no-nflog");
    let mut watch = Watch::spawn_command(command);
    let (status, stderr) = watch.wait_exit();
    assert_eq!(status.code(), Some(1), "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("is a symbolic link owned by uid 12345, not by root")),
        "{stderr:#?}"
    );
    // A link root owns is the operator's own: followed, and the resolved path said.
    let operators = base.path().join("operator-root");
    std::os::unix::fs::symlink(&bobs, &operators).unwrap();
    let watch = host(&operators, &["--no-nflog"]);
    let resolved = format!(
        "shield-watch: state root {}",
        fs::canonicalize(&bobs).unwrap().display()
    );
    assert!(
        watch.stderr_seen().contains(&resolved),
        "{:#?}",
        watch.stderr_seen()
    );
}

#[test]
fn a_replaced_state_root_is_said_loudly_and_can_end_the_process() {
    for exit in [false, true] {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        container(&root, OsStr::new("web"), "lookup");
        let args: &[&str] = if exit {
            &["--no-nflog", "--exit-on-lost-root"]
        } else {
            &["--no-nflog"]
        };
        let mut watch = host(&root, args);
        fs::rename(&root, base.path().join("root.old")).unwrap();
        fs::create_dir(&root).unwrap();
        let said = watch.wait_stderr(|l| l.contains("was replaced or removed"));
        assert!(said.contains("NOT followed"), "{said}");
        if exit {
            let (status, stderr) = watch.wait_exit();
            assert_eq!(status.code(), Some(1), "{stderr:#?}");
        } else {
            // Still running: what it followed stays followed, where it went.
            let old = base.path().join("root.old/containers/web/audit.jsonl");
            let mut audit = fs::OpenOptions::new().append(true).open(old).unwrap();
            std::io::Write::write_all(&mut audit, b"{\"action\":\"still\"}\n").unwrap();
            let line = &watch.lines(1)[0];
            assert!(line.contains("\"action\":\"still\""), "{line}");
            assert!(watch.try_wait().is_none());
        }
    }
}

/// Open descriptors of a process.
fn descriptors(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn a_16_tb_sparse_log_stalls_no_other_container() {
    let root = tempfile::tempdir().unwrap();
    let mine = container(root.path(), OsStr::new("mine"), "dnsmasq-static");
    let other = container(root.path(), OsStr::new("other"), "lookup");
    // Present at start: the query log is read for the cache from its start.
    fs::File::create(mine.join("dnsmasq.log"))
        .unwrap()
        .set_len(16_000_000_000_000)
        .unwrap();
    let started = Instant::now();
    let mut watch = host(root.path(), &["--no-nflog"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ready after {:?}",
        started.elapsed()
    );
    // Grown while running, on both of its logs.
    fs::OpenOptions::new()
        .write(true)
        .open(mine.join("audit.jsonl"))
        .unwrap()
        .set_len(16_000_000_000_000)
        .unwrap();
    let sent = Instant::now();
    fs::write(
        other.join("audit.jsonl"),
        "{\"action\":\"denied\",\"dest\":\"192.0.2.5\"}\n",
    )
    .unwrap();
    let event: Value = serde_json::from_str(&watch.lines(1)[0]).unwrap();
    assert_eq!(event["container"], "other");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "another container's line after {:?}",
        sent.elapsed()
    );
}

#[test]
fn twenty_five_thousand_planted_siblings_take_bounded_descriptors() {
    let root = tempfile::tempdir().unwrap();
    let mine = container(root.path(), OsStr::new("mine"), "lookup");
    let other = container(root.path(), OsStr::new("other"), "lookup");
    fs::write(other.join("audit.jsonl"), "").unwrap();
    let mut watch = host(root.path(), &["--no-nflog"]);
    let before = descriptors(watch.pid());
    for i in 0..25_000 {
        fs::File::create(mine.join(format!("audit.jsonl.{i}"))).unwrap();
    }
    fs::remove_file(mine.join("audit.jsonl")).unwrap();
    // Another container's rotation still works.
    fs::rename(other.join("audit.jsonl"), other.join("audit.jsonl.1")).unwrap();
    fs::write(
        other.join("audit.jsonl"),
        "{\"action\":\"denied\",\"dest\":\"192.0.2.6\"}\n",
    )
    .unwrap();
    let event: Value = serde_json::from_str(&watch.lines(1)[0]).unwrap();
    assert_eq!(event["container"], "other");
    assert_eq!(event["dest"], "192.0.2.6");
    let after = descriptors(watch.pid());
    assert!(
        after <= before + 40,
        "descriptors {before} -> {after} with 25 000 planted siblings"
    );
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{stderr:#?}");
}

/// Waits until a stderr line matching each of `wants` has been seen, in whatever order they
/// come; returns the first match of each.
fn wait_stderr_all(watch: &mut Watch, wants: &[&dyn Fn(&str) -> bool]) -> Vec<String> {
    loop {
        let found: Vec<Option<String>> = wants
            .iter()
            .map(|want| watch.stderr_seen().iter().find(|l| want(l)).cloned())
            .collect();
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
        let missing: Vec<&&dyn Fn(&str) -> bool> = wants
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(w, _)| w)
            .collect();
        watch.wait_stderr(|l| missing.iter().any(|want| want(l)));
    }
}

/// A state root of uid 12345 with one container `mine` (audit only), everything theirs.
fn alices_root(base: &Path) -> std::path::PathBuf {
    let root = base.join("alice-root");
    let mine = container(&root, OsStr::new("mine"), "lookup");
    fs::write(mine.join("audit.jsonl"), "").unwrap();
    for path in [
        root.clone(),
        root.join("containers"),
        mine.clone(),
        mine.join("dns.tier"),
        mine.join("audit.jsonl"),
    ] {
        chown(&path, 12345);
    }
    root
}

#[test]
fn a_containers_directory_swapped_for_a_link_to_another_users_is_not_followed() {
    let base = tempfile::tempdir().unwrap();
    let bobs = container(
        &base.path().join("bob-root"),
        OsStr::new("secret"),
        "lookup",
    );
    fs::write(bobs.join("audit.jsonl"), "{\"action\":\"bobs-secret\"}\n").unwrap();
    let root = alices_root(base.path());
    let mut watch = host(&root, &["--no-nflog", "--source", "audit"]);
    // Alice puts a link to Bob's containers where hers were. A container that appears while
    // running is read from its start: had root followed the link, Bob's line would be out.
    fs::rename(root.join("containers"), root.join("containers.old")).unwrap();
    std::os::unix::fs::symlink(bobs.parent().unwrap(), root.join("containers")).unwrap();
    chown(&root.join("containers"), 12345);
    // Her own container, renamed away with the directory, is let go of.
    let said = wait_stderr_all(
        &mut watch,
        &[
            &|l| {
                l.contains("refused: a symbolic link out of the state root")
                    || l.contains("container secret: following")
            },
            &|l| l == "shield-watch: container mine: gone",
        ],
    );
    assert!(
        said[0].contains("refused"),
        "followed Bob's container: {}",
        said[0]
    );
    watch.signal(Signal::TERM);
    let rest = watch.rest();
    assert!(
        !rest.iter().any(|l| l.contains("bobs-secret")),
        "Bob's audit entry reached the stream: {rest:#?}"
    );
    let (_, stderr) = watch.wait_exit();
    assert!(
        !stderr.iter().any(|l| l.contains("container secret")),
        "{stderr:#?}"
    );
}

#[test]
fn a_hard_link_to_another_users_file_or_to_roots_is_refused_and_named() {
    let base = tempfile::tempdir().unwrap();
    let root = alices_root(base.path());
    // What a hard link can bring in where `fs.protected_hardlinks` is 0 (the test, as root,
    // makes the links the owner could make there): Bob's 0600 log, and a file of root's.
    let bobs = base.path().join("bobs-audit.jsonl");
    fs::write(&bobs, "{\"action\":\"bobs-secret\"}\n").unwrap();
    chown(&bobs, 23456);
    let roots = base.path().join("roots-secret");
    fs::write(&roots, "{\"action\":\"roots-secret\"}\n").unwrap();
    let mine = root.join("containers/mine");
    fs::remove_file(mine.join("audit.jsonl")).unwrap();
    fs::hard_link(&bobs, mine.join("audit.jsonl")).unwrap();
    let theirs = container(&root, OsStr::new("theirs"), "lookup");
    chown(&theirs, 12345);
    fs::hard_link(&roots, theirs.join("audit.jsonl")).unwrap();
    let mut watch = host(&root, &["--no-nflog", "--source", "audit", "--from-start"]);
    let refusal = |name: &str| {
        let path = root.join("containers").join(name).join("audit.jsonl");
        format!("refused {}: ", path.display())
    };
    let (mine_refused, theirs_refused) = (refusal("mine"), refusal("theirs"));
    let said = wait_stderr_all(
        &mut watch,
        &[&|l| l.contains(&mine_refused), &|l| {
            l.contains(&theirs_refused)
        }],
    );
    assert!(
        said[0].contains("owned by uid 23456, in a directory of uid 12345"),
        "{}",
        said[0]
    );
    assert!(
        said[1].contains("a hard link to a file of root's"),
        "{}",
        said[1]
    );
    // Her own file, made in place, is read: the stream is alive, and holds nothing else.
    fs::remove_file(mine.join("audit.jsonl")).unwrap();
    fs::write(mine.join("audit.jsonl"), "{\"action\":\"hers\"}\n").unwrap();
    chown(&mine.join("audit.jsonl"), 12345);
    let line = &watch.lines(1)[0];
    assert!(line.contains("\"action\":\"hers\""), "{line}");
    watch.signal(Signal::TERM);
    let rest = watch.rest();
    assert!(!rest.iter().any(|l| l.contains("secret")), "{rest:#?}");
}

#[test]
fn out_of_descriptors_no_container_is_taken_for_gone_and_new_ones_wait() {
    use std::os::unix::process::CommandExt as _;
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let web = container(&root, OsStr::new("web"), "lookup");
    fs::write(web.join("audit.jsonl"), "").unwrap();
    let mut command = binary();
    command
        .arg("--state-root")
        .arg(&root)
        .args(["--no-nflog", "--source", "audit"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(128),
                maximum: Some(128),
            };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit)?;
            Ok(())
        });
    }
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    // The root's owner makes containers until the process runs out of descriptors.
    for i in 0..150 {
        let dir = container(&root, OsStr::new(&format!("x{i:03}")), "lookup");
        fs::write(dir.join("audit.jsonl"), "").unwrap();
    }
    watch.wait_stderr(|l| l.contains("not followed yet: out of descriptors"));
    // The innocent container is looked at again (its dns.tier replaced whole) and stays
    // followed.
    fs::write(web.join("dns.tier.new"), "lookup").unwrap();
    fs::rename(web.join("dns.tier.new"), web.join("dns.tier")).unwrap();
    let mut audit = fs::OpenOptions::new()
        .append(true)
        .open(web.join("audit.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut audit, b"{\"action\":\"still-here\"}\n").unwrap();
    let line = &watch.lines(1)[0];
    assert!(line.contains("still-here"), "{line}");
    // Once the flood is gone, a new container is followed again.
    for i in 0..150 {
        fs::remove_dir_all(root.join(format!("containers/x{i:03}"))).unwrap();
    }
    let late = container(&root, OsStr::new("late"), "lookup");
    fs::write(late.join("audit.jsonl"), "{\"action\":\"late\"}\n").unwrap();
    let line = &watch.lines_until(|l| l.contains("\"action\":\"late\""));
    assert!(!line.is_empty());
    watch.signal(Signal::TERM);
    let (_, stderr) = watch.wait_exit();
    assert!(
        !stderr
            .iter()
            .any(|l| l == "shield-watch: container web: gone"),
        "{stderr:#?}"
    );
}
