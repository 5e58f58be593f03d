//! Least privilege end to end: symlinks planted in the state directory lead nowhere,
//! every thread runs with the capabilities and the Landlock ruleset of docs/SECURITY.md once the
//! ready line is out, and what must still work (a 0600 file of another user rotated in) does.

use rustix::process::Signal;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use shield_lab::Netns;

use crate::support::{assert_thread_privileges, chown, run_to_exit, State, Watch};

/// `nobody`: a user that is not us, to own files root may only read with CAP_DAC_READ_SEARCH.
const NOBODY: u32 = 65534;

/// CAP_DAC_READ_SEARCH alone, as `/proc/PID/status` prints a capability set.
const ONLY_DAC_READ_SEARCH: &str = "0000000000000004";

/// CAP_NET_ADMIN, CAP_SYS_PTRACE and CAP_SYS_ADMIN: what the nflog helper keeps.
const HELPER_KEEPS: &str = "0000000000281000";

/// A root-only file outside the state directory, the target of the planted symlinks.
fn secret(dir: &Path, content: &str) -> std::path::PathBuf {
    let path = dir.join("secret");
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The Landlock ABI of this kernel, 0 without Landlock.
fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the VERSION flag only
    // returns the ABI version (or -1); it touches no memory.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.max(0)
}

fn stderr_lines_containing(watch: &Watch, needle: &str) -> usize {
    watch
        .stderr_seen()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn a_dns_tier_symlinked_out_of_the_state_dir_is_refused_and_named() {
    let outside = tempfile::tempdir().unwrap();
    let target = secret(outside.path(), "dnsmasq-live\n");
    // An absolute symlink, and a relative one climbing out of a state dir inside `outside`.
    let absolute = State::new(None);
    symlink(&target, absolute.file("dns.tier")).unwrap();
    let relative = outside.path().join("state");
    fs::create_dir(&relative).unwrap();
    symlink("../secret", relative.join("dns.tier")).unwrap();
    for state_dir in [absolute.path(), relative.as_path()] {
        let (status, stdout, stderr) =
            run_to_exit(&["--state-dir".as_ref(), state_dir.as_os_str()]);
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("DNS tier not set")
                && stderr.contains(&format!("{}/dns.tier", state_dir.display()))
                && stderr.contains("refused"),
            "{stderr}"
        );
    }
}

#[test]
fn an_allow_list_file_symlinked_out_is_not_read_and_named_once() {
    let outside = tempfile::tempdir().unwrap();
    // Were it read, allowed.example would be allowed, and the second line would come out in a
    // warning about an invalid entry.
    secret(outside.path(), "allowed.example\nleaked secret line\n");
    let state = State::new(Some("dnsmasq-live"));
    symlink(outside.path().join("secret"), state.file("profile.domains")).unwrap();
    let mut watch = Watch::start(&state, &["--source", "dns", "-c", "c"]);
    assert_eq!(
        stderr_lines_containing(&watch, "profile.domains"),
        1,
        "{:#?}",
        watch.stderr_seen()
    );
    assert!(
        watch.stderr_seen().iter().any(|l| l.contains(&format!(
            "refused {}",
            state.file("profile.domains").display()
        ))),
        "{:#?}",
        watch.stderr_seen()
    );

    // Every append to the query log is a change in the state directory, so a reload: the
    // refusal must not be repeated for each.
    for n in 0..3 {
        state.append(
            "dnsmasq.log",
            format!("Mar 31 12:00:0{n} dnsmasq[1]: query[A] allowed.example from 10.0.0.2\n")
                .as_bytes(),
        );
        let line = &watch.lines(1)[0];
        assert!(line.contains("\"domain\":\"allowed.example\""), "{line}");
    }
    // A different failure is said: once it is, every reload before it has happened.
    fs::remove_file(state.file("profile.domains")).unwrap();
    symlink("../secret", state.file("live.domains")).unwrap();
    watch.wait_stderr(|l| l.contains("live.domains") && l.contains("refused"));
    assert_eq!(
        stderr_lines_containing(&watch, "profile.domains"),
        1,
        "{:#?}",
        watch.stderr_seen()
    );
    assert_eq!(stderr_lines_containing(&watch, "leaked secret"), 0);
}

#[test]
fn a_dangling_log_symlink_is_not_created_through() {
    let outside = tempfile::tempdir().unwrap();
    let state = State::new(Some("dnsmasq-live"));
    symlink(
        outside.path().join("made-by-root"),
        state.file("dnsmasq.log"),
    )
    .unwrap();
    symlink(
        outside.path().join("audit-by-root"),
        state.file("audit.jsonl"),
    )
    .unwrap();
    let mut watch = Watch::spawn(&state, &["--no-nflog"]);
    // Ready or not (that is the follower's business), the files were not created out there.
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    assert!(!outside.path().join("made-by-root").exists());
    assert!(!outside.path().join("audit-by-root").exists());
}

/// A stderr line matching `want`, already seen or still to come.
fn stderr_line(watch: &mut Watch, want: impl Fn(&str) -> bool) -> String {
    match watch.stderr_seen().iter().find(|l| want(l)) {
        Some(line) => line.clone(),
        None => watch.wait_stderr(want),
    }
}

/// The live audit log is a symlink to a root-only file when shield-watch starts; then it is
/// replaced by a real file whose line is a marker. The follower reads in order, so had it read
/// the secret, the secret's event would come first.
#[test]
fn a_log_symlinked_out_leaks_nothing_and_is_named_once() {
    let outside = tempfile::tempdir().unwrap();
    secret(
        outside.path(),
        "{\"action\":\"leaked\",\"detail\":\"secret\"}\n",
    );
    let state = State::new(Some("lookup"));
    symlink(outside.path().join("secret"), state.file("audit.jsonl")).unwrap();
    let mut watch = Watch::start(&state, &["--source", "audit", "--from-start", "-c", "c"]);
    let refused = format!("refused {}", state.file("audit.jsonl").display());
    stderr_line(&mut watch, |l| l.contains(&refused));
    fs::remove_file(state.file("audit.jsonl")).unwrap();
    state.append("audit.jsonl", b"{\"action\":\"marker\"}\n");
    let line = &watch.lines(1)[0];
    assert!(line.contains("\"action\":\"marker\""), "{line}");
    assert_eq!(
        stderr_lines_containing(&watch, "audit.jsonl"),
        1,
        "{:#?}",
        watch.stderr_seen()
    );
}

/// While shield-watch is down, the log is rotated (its unread tail waits in `audit.jsonl.2`)
/// and a symlink to a root-only file is planted as `audit.jsonl.1`. On restart from the cursor
/// the real sibling is read, then the live file; the planted one is named, never read.
#[test]
fn a_rotated_sibling_symlinked_out_leaks_nothing_and_is_named() {
    let outside = tempfile::tempdir().unwrap();
    secret(
        outside.path(),
        "{\"action\":\"leaked\",\"detail\":\"secret\"}\n",
    );
    let state = State::new(Some("lookup"));
    let cursor_dir = tempfile::tempdir().unwrap();
    let cursor = cursor_dir.path().join("cursor");
    let args = [
        "--source",
        "audit",
        "-c",
        "c",
        "--cursor",
        cursor.to_str().unwrap(),
    ];
    let mut watch = Watch::start(&state, &args);
    state.append("audit.jsonl", b"{\"action\":\"first\"}\n");
    assert!(watch.lines(1)[0].contains("\"action\":\"first\""));
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{stderr:#?}");

    state.append("audit.jsonl", b"{\"action\":\"unread\"}\n");
    fs::rename(state.file("audit.jsonl"), state.file("audit.jsonl.2")).unwrap();
    symlink(outside.path().join("secret"), state.file("audit.jsonl.1")).unwrap();
    state.append("audit.jsonl", b"{\"action\":\"marker\"}\n");

    let mut watch = Watch::start(&state, &args);
    let lines = watch.lines(2);
    assert!(lines[0].contains("\"action\":\"unread\""), "{lines:#?}");
    assert!(lines[1].contains("\"action\":\"marker\""), "{lines:#?}");
    let refused = format!("refused {}", state.file("audit.jsonl.1").display());
    stderr_line(&mut watch, |l| l.contains(&refused));
}

/// shield-watch with every source, the nflog one inside a namespace of the test's own (one
/// group per namespace, so parallel tests do not collide).
fn watch_all(state: &State, ns: &Netns, env: &[(&str, &Path)]) -> Watch {
    let netns = ns.path();
    let mut command_env = Vec::new();
    for (key, value) in env {
        command_env.push((*key, value.as_os_str()));
    }
    Watch::start_with_env(
        state,
        &["-c", "c", "--netns", netns.to_str().unwrap()],
        &command_env,
    )
}

fn namespace() -> Netns {
    shield_lab::preflight().expect("the confinement tests need root and ip");
    Netns::create("shw-confine").unwrap()
}

#[test]
fn after_the_ready_line_every_thread_holds_only_cap_dac_read_search_and_no_new_privs() {
    let ns = namespace();
    let state = State::new(Some("dnsmasq-live"));
    let cursor_dir = tempfile::tempdir().unwrap();
    let cursor = cursor_dir.path().join("cursor");
    let mut watch = Watch::start(
        &state,
        &[
            "-c",
            "c",
            "--netns",
            ns.path().to_str().unwrap(),
            "--cursor",
            cursor.to_str().unwrap(),
        ],
    );
    assert!(
        watch
            .stderr_seen()
            .iter()
            .any(|l| l == "shield-watch: ready (audit,dns,nflog)"),
        "{:#?}",
        watch.stderr_seen()
    );
    let confined = watch
        .stderr_seen()
        .iter()
        .find(|l| l.starts_with("shield-watch: confined: "))
        .unwrap_or_else(|| panic!("no confinement line: {:#?}", watch.stderr_seen()))
        .clone();
    let abi = landlock_abi();
    let landlock = if abi > 0 {
        format!(
            "landlock ABI {abi} (read {}, write {})",
            state.path().parent().unwrap().display(),
            cursor_dir.path().display()
        )
    } else {
        // Best effort: the kernel has none, and the line says so.
        "no landlock (".to_string()
    };
    assert!(
        confined.starts_with(&format!("shield-watch: confined: {landlock}")),
        "{confined}"
    );
    assert!(
        confined.ends_with("capabilities dropped (kept CAP_DAC_READ_SEARCH), no_new_privs"),
        "{confined}"
    );

    // One container makes its one socket before confining itself: no helper process.
    assert!(
        !watch
            .stderr_seen()
            .iter()
            .any(|l| l.contains("nflog helper")),
        "{:#?}",
        watch.stderr_seen()
    );
    let children =
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", watch.pid())).unwrap_or_default();
    assert_eq!(children.trim(), "", "no child process");
    let names = assert_thread_privileges(watch.pid(), |_| ONLY_DAC_READ_SEARCH);
    // Every thread shield-watch runs, so none escaped the check.
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
        "threads"
    );

    // Still working: a line through, its position saved in the confined cursor directory.
    state.append("audit.jsonl", b"{\"action\":\"after\"}\n");
    let line = &watch.lines(1)[0];
    assert!(line.contains("\"action\":\"after\""), "{line}");
    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{stderr:#?}");
    let saved = fs::read_to_string(&cursor).unwrap();
    assert!(saved.contains("audit"), "{saved}");
}

/// systemd units often leave CAP_SETPCAP out of the bounding set (ours do, to keep their
/// exposure score down): the bounding set then cannot be reduced, which the line says, and the
/// rest of the confinement holds.
#[test]
fn without_cap_setpcap_the_bounding_set_stays_and_the_line_says_so() {
    let state = State::new(Some("lookup"));
    let mut command = std::process::Command::new("setpriv");
    command
        .args(["--bounding-set", "-all,+dac_read_search,+net_admin"])
        .arg(env!("CARGO_BIN_EXE_shield-watch"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--source", "audit"]);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    let confined = stderr_line(&mut watch, |l| l.starts_with("shield-watch: confined: "));
    assert!(
        confined.ends_with(
            "capabilities dropped (kept CAP_DAC_READ_SEARCH), bounding set not reduced (no \
             CAP_SETPCAP; it still holds CAP_DAC_READ_SEARCH,CAP_NET_ADMIN, out of reach with \
             no_new_privs), no_new_privs"
        ),
        "{confined}"
    );
    let status = fs::read_to_string(format!("/proc/{}/status", watch.pid())).unwrap();
    assert!(
        status.contains(&format!("CapEff:\t{ONLY_DAC_READ_SEARCH}")),
        "{status}"
    );
    assert!(status.contains("CapBnd:\t0000000000001004"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
}

#[test]
fn the_landlock_ruleset_denies_a_read_outside_the_state_dir_on_every_confined_thread() {
    let ns = namespace();
    // The state directory's parent is readable (a container re-created under the same name is
    // a new directory there); anything else is not.
    let root = tempfile::tempdir().unwrap();
    let state = State::new_in(root.path(), Some("dnsmasq-live"));
    // World-readable, so only Landlock can refuse it.
    let outside = tempfile::tempdir().unwrap();
    let probe = outside.path().join("readable");
    let content = "anyone may read this\n";
    fs::write(&probe, content).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o644)).unwrap();
    let watch = watch_all(&state, &ns, &[("SHIELD_WATCH_DEBUG_READ", &probe)]);
    let abi = landlock_abi();
    for thread in ["main", "nflog"] {
        let said = watch
            .stderr_seen()
            .iter()
            .find(|l| l.starts_with(&format!("shield-watch: debug: {thread} thread reading ")))
            .unwrap_or_else(|| panic!("no probe from {thread}: {:#?}", watch.stderr_seen()));
        if abi > 0 {
            assert!(
                said.ends_with("failed: Permission denied (os error 13)"),
                "{said}"
            );
        } else {
            // Without Landlock the read works, and the confinement line said there is none.
            assert!(
                said.ends_with(&format!("read {} bytes", content.len())),
                "{said}"
            );
        }
    }
    drop(watch);

    // The control: the same probe inside the state directory reads, so the refusal above is
    // the ruleset's, not the probe's.
    let inside = state.file("dns.tier");
    let watch = watch_all(&state, &ns, &[("SHIELD_WATCH_DEBUG_READ", &inside)]);
    for thread in ["main", "nflog"] {
        let want = format!(
            "shield-watch: debug: {thread} thread reading {} after confinement: read 12 bytes",
            inside.display()
        );
        assert!(
            watch.stderr_seen().contains(&want),
            "{want}: {:#?}",
            watch.stderr_seen()
        );
    }
}

#[test]
fn a_0600_file_of_another_user_rotated_in_after_start_is_still_followed() {
    let state = State::new(Some("lookup"));
    // The state directory belongs to the container's user, as terok-shield's does: even
    // listing it needs CAP_DAC_READ_SEARCH once root's other capabilities are gone.
    chown(state.path(), NOBODY);
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let mut watch = Watch::start(&state, &["--source", "audit", "-c", "c"]);
    state.append("audit.jsonl", b"{\"action\":\"before\"}\n");
    assert!(watch.lines(1)[0].contains("\"action\":\"before\""));

    fs::rename(state.file("audit.jsonl"), state.file("audit.jsonl.1")).unwrap();
    let fresh = state.file("audit.jsonl");
    fs::write(&fresh, "").unwrap();
    fs::set_permissions(&fresh, fs::Permissions::from_mode(0o600)).unwrap();
    chown(&fresh, NOBODY);
    state.append("audit.jsonl", b"{\"action\":\"after\"}\n");
    let line = &watch.lines(1)[0];
    assert!(line.contains("\"action\":\"after\""), "{line}");
}

/// Host-wide (docs/SECURITY.md): whatever the number of containers, the same threads in the
/// worker process, each with only CAP_DAC_READ_SEARCH and in the Landlock domain, the nflog thread
/// included; what entering a container's namespace takes (CAP_NET_ADMIN, CAP_SYS_ADMIN,
/// CAP_SYS_PTRACE) is held by the nflog helper alone, a process of one thread with no Landlock
/// domain; `no_new_privs` everywhere.
#[test]
fn host_wide_every_worker_thread_holds_only_cap_dac_read_search_and_only_the_helper_what_entering_takes(
) {
    let root = tempfile::tempdir().unwrap();
    for n in 0..12 {
        let dir = root.path().join(format!("containers/c{n}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("dns.tier"), "lookup\n").unwrap();
    }
    let outside = tempfile::tempdir().unwrap();
    let probe = outside.path().join("readable");
    fs::write(&probe, "anyone may read this\n").unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = crate::support::binary();
    command
        .arg("--state-root")
        .arg(root.path())
        .env("SHIELD_WATCH_DEBUG_READ", &probe);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l == "shield-watch: ready (audit,dns,nflog)");
    let line = |prefix: &str| {
        watch
            .stderr_seen()
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?}: {:#?}", watch.stderr_seen()))
            .clone()
    };
    let confined = line("shield-watch: confined: ");
    assert!(
        confined.ends_with("capabilities dropped (kept CAP_DAC_READ_SEARCH), no_new_privs")
            && !confined.contains(';'),
        "every thread got what main got: {confined}"
    );
    let helper_line = line("shield-watch: nflog helper (pid ");
    assert!(
        helper_line.contains(") confined: no landlock (")
            && helper_line.ends_with(
                "capabilities dropped (kept CAP_NET_ADMIN,CAP_SYS_ADMIN,CAP_SYS_PTRACE), no_new_privs"
            ),
        "{helper_line}"
    );
    let helper = crate::support::helper_pid(watch.stderr_seen());
    // The probe outside the root: refused on main and on nflog (Landlock), read by the helper
    // (no domain: it must open other processes' namespaces).
    let main_probe = line("shield-watch: debug: main thread reading ");
    let nflog_probe = line("shield-watch: debug: nflog thread reading ");
    let helper_probe = line("shield-watch: debug: nflog helper thread reading ");
    if landlock_abi() > 0 {
        for probe in [&main_probe, &nflog_probe] {
            assert!(
                probe.ends_with("failed: Permission denied (os error 13)"),
                "{probe}"
            );
        }
    }
    assert!(helper_probe.ends_with("read 21 bytes"), "{helper_probe}");

    // The helper is the worker's child, one thread, holding only what entering takes.
    let status = fs::read_to_string(format!("/proc/{helper}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l == format!("PPid:\t{}", watch.pid())),
        "{status}"
    );
    let helper_threads = assert_thread_privileges(helper, |_| HELPER_KEEPS);
    assert_eq!(helper_threads, ["nflog-helper"], "the helper's threads");

    let names = assert_thread_privileges(watch.pid(), |_| ONLY_DAC_READ_SEARCH);
    // Twelve containers, and no thread of their own.
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
        "threads"
    );
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());

    // Without the nflog source: no nflog thread, no helper, and no line about either.
    let mut command = crate::support::binary();
    command
        .arg("--state-root")
        .arg(root.path())
        .arg("--no-nflog");
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l == "shield-watch: ready (audit,dns)");
    assert!(
        !watch
            .stderr_seen()
            .iter()
            .any(|l| l.contains("nflog helper")),
        "{:#?}",
        watch.stderr_seen()
    );
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
}

/// A state root's owner can write `dnsmasq.pid` and start any process with the `--conf-file=`
/// argument shield-watch checks for, in the host's own network namespace. Following it would
/// bind the host's NFLOG group under a container's name: refused, with one line.
#[test]
fn a_dnsmasq_pid_in_shield_watchs_own_network_namespace_is_refused() {
    /// A group nothing else here uses: should the refusal fail, the bind is in the host's
    /// namespace.
    const GROUP: &str = "4243";
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("containers/evil");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("dns.tier"), "dnsmasq-live\n").unwrap();
    chown(&root.path().join("containers"), NOBODY);
    chown(&dir, NOBODY);
    // The owner's stand-in for a dnsmasq: a shell waiting on its stdin, in our namespace.
    let conf = format!("--conf-file={}", dir.join("dnsmasq.conf").display());
    let mut impostor = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/bin/sh", "-c", "read x", &conf])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = impostor.id();
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    while !fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .any(|arg| arg == conf.as_bytes())
    {
        assert!(std::time::Instant::now() < deadline, "setpriv did not exec");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    fs::write(dir.join("dnsmasq.pid"), format!("{pid}\n")).unwrap();

    let mut command = crate::support::binary();
    command
        .arg("--state-root")
        .arg(root.path())
        .args(["--nflog-group", GROUP]);
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready ("));
    let refused = format!(
        "shield-watch: container evil: nflog: dnsmasq {pid} runs in shield-watch's own network \
         namespace, not a container's: refused"
    );
    assert!(
        watch.stderr_seen().contains(&refused)
            && watch
                .stderr_seen()
                .contains(&"shield-watch: container evil: following (audit,dns)".to_string()),
        "{refused}: {:#?}",
        watch.stderr_seen()
    );
    let bound = fs::read_to_string("/proc/net/netfilter/nfnetlink_log").unwrap();
    assert!(
        !bound
            .lines()
            .any(|l| l.split_whitespace().next() == Some(GROUP)),
        "{bound}"
    );
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
    let _ = impostor.kill();
    let _ = impostor.wait();
}

/// Host-wide, a container's name is a directory name its owner chose: on stderr, as in the
/// stream, it arrives printable, with no escape sequence or line break.
#[test]
fn a_container_name_with_escapes_and_newlines_reaches_stderr_and_stdout_printable() {
    let root = tempfile::tempdir().unwrap();
    let name = "a\u{1b}[31mred\nshield-watch: ready (forged)";
    let dir = root.path().join("containers").join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("dns.tier"), "lookup\n").unwrap();
    let mut command = crate::support::binary();
    command.arg("--state-root").arg(root.path());
    let mut watch = Watch::spawn_command(command);
    watch.wait_stderr(|l| l.starts_with("shield-watch: ready (audit"));
    let shown = "a [31mred shield-watch: ready (forged)";
    let following = format!("shield-watch: container {shown}: following (audit)");
    assert!(
        watch.stderr_seen().contains(&following),
        "{following}: {:#?}",
        watch.stderr_seen()
    );
    assert!(
        watch
            .stderr_seen()
            .iter()
            .all(|l| !l.contains('\u{1b}') && l != "shield-watch: ready (forged)"),
        "{:#?}",
        watch.stderr_seen()
    );
    fs::write(dir.join("audit.jsonl"), "{\"action\":\"denied\"}\n").unwrap();
    let line = &watch.lines(1)[0];
    assert!(
        line.contains(&format!("\"container\":\"{shown}\"")),
        "{line}"
    );
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
}

/// The metrics outputs widen the confinement only as far as each needs: the textfile's directory
/// is the one written besides the cursor's; the listener, bound before confinement, needs no
/// rule (TCP bind stays denied). Their threads inherit `main`'s confinement.
#[test]
fn metrics_outputs_widen_the_confinement_only_by_the_textfile_directory() {
    let state = State::new(Some("lookup\n"));
    let textfiles = tempfile::tempdir().unwrap();
    let textfile = textfiles.path().join("shield-watch.prom");
    let mut watch = Watch::start(
        &state,
        &[
            "--no-nflog",
            "-c",
            "c",
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-textfile",
            textfile.to_str().unwrap(),
        ],
    );
    let confined = watch
        .stderr_seen()
        .iter()
        .find(|l| l.starts_with("shield-watch: confined: "))
        .unwrap()
        .clone();
    if landlock_abi() > 0 {
        assert!(
            confined.starts_with(&format!(
                "shield-watch: confined: landlock ABI {} (read {}, write {})",
                landlock_abi(),
                state.path().parent().unwrap().display(),
                textfiles.path().display()
            )),
            "{confined}"
        );
    }
    let names = assert_thread_privileges(watch.pid(), |_| ONLY_DAC_READ_SEARCH);
    assert_eq!(
        names,
        [
            "audit",
            "containers",
            "metrics",
            "shield-watch",
            "signals",
            "textfile",
            "writer"
        ]
    );
    // Written under that confinement, readable by node_exporter's user.
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    while !textfile.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            watch.stderr_seen()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let text = fs::read_to_string(&textfile).unwrap();
    assert!(
        text.contains(
            "shield_watch_events_total{container=\"c\",source=\"audit\",action=\"denied\"} 0"
        ),
        "{text}"
    );
    assert_eq!(
        fs::metadata(&textfile).unwrap().permissions().mode() & 0o777,
        0o644
    );
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
}
