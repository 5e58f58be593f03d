//! Exit codes and the way the process ends (`docs/CONTRACT.md` §6).

use std::ffi::OsStr;

use rustix::process::Signal;

use crate::support::{run_to_exit, State, Watch};

#[test]
fn no_tier_exits_1_with_the_message() {
    let state = State::new(None);
    let (status, stdout, stderr) =
        run_to_exit(&[OsStr::new("--state-dir"), state.path().as_os_str()]);
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("DNS tier not set — container may not be shielded"),
        "{stderr}"
    );
}

#[test]
fn unknown_tier_exits_1() {
    let state = State::new(Some("bind9\n"));
    let (status, _, stderr) = run_to_exit(&[OsStr::new("-s"), state.path().as_os_str()]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("DNS tier not set") && stderr.contains("bind9"),
        "{stderr}"
    );
}

#[test]
fn missing_state_dir_exits_1() {
    let (status, _, stderr) = run_to_exit(&[
        OsStr::new("-s"),
        OsStr::new("/nonexistent/shield-watch-state"),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("cannot read state directory"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let state = State::new(Some("lookup"));
    for args in [
        vec![
            OsStr::new("-s"),
            state.path().as_os_str(),
            OsStr::new("--bogus"),
        ],
        // No state named is every container of the host now; --no-follow without history is
        // still a usage error.
        vec![OsStr::new("--no-follow")],
        vec![
            OsStr::new("-s"),
            state.path().as_os_str(),
            OsStr::new("--format"),
            OsStr::new("xml"),
        ],
        vec![
            OsStr::new("-s"),
            state.path().as_os_str(),
            OsStr::new("--dedup"),
            OsStr::new("soon"),
        ],
        vec![
            OsStr::new("-s"),
            state.path().as_os_str(),
            OsStr::new("--source"),
            OsStr::new("dns,smtp"),
        ],
    ] {
        let (status, stdout, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(!stderr.is_empty());
    }
}

#[test]
fn help_documents_every_flag_with_its_default_and_version_prints() {
    let (status, help, _) = run_to_exit(&[OsStr::new("--help")]);
    assert_eq!(status.code(), Some(0));
    for flag in [
        "--state-dir",
        "--container",
        "--color",
        "--format",
        "--source",
        "--action",
        "--from-start",
        "--cursor",
        "--nflog-group",
        "--no-nflog",
        "--nflog-buffer",
        "--netns",
        "--all-query-types",
        "--dedup",
        "--domain-cache",
        "--max-line",
        "--output",
        "--journal-socket",
        "--metrics-listen",
        "--metrics-textfile",
        "--metrics-domains",
        "--help",
        "--version",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for default in [
        "[default: json]",
        "[default: 100]",
        "[default: 65536]",
        "[default: the state dir's basename]",
        "[default: stdout]",
        "[default: /run/systemd/journal/socket]",
    ] {
        assert!(help.contains(default), "--help lacks {default}:\n{help}");
    }
    let (status, version, _) = run_to_exit(&[OsStr::new("--version")]);
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        version.trim(),
        format!("shield-watch {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn sigterm_and_sigint_stop_cleanly_with_a_summary() {
    for signal in [Signal::TERM, Signal::INT] {
        let state = State::new(Some("lookup"));
        let mut watch = Watch::start(&state, &["--no-nflog"]);
        watch.signal(signal);
        let (status, stderr) = watch.wait_exit();
        assert_eq!(status.code(), Some(0), "{stderr:#?}");
        assert!(
            stderr
                .iter()
                .any(|l| l.starts_with("shield-watch: summary: 0 events")),
            "{stderr:#?}"
        );
    }
}

#[test]
fn sigusr1_prints_a_summary_and_keeps_going() {
    let state = State::new(Some("lookup"));
    let mut watch = Watch::start(&state, &["--no-nflog"]);
    state.append("audit.jsonl", b"{\"ts\":\"a\",\"action\":\"setup\"}\n");
    watch.lines(1);
    watch.signal(Signal::USR1);
    let line = watch.wait_stderr(|l| l.starts_with("shield-watch: summary:"));
    assert!(line.contains("1 events (audit/setup=1)"), "{line}");
    state.append("audit.jsonl", b"{\"ts\":\"b\",\"action\":\"teardown\"}\n");
    assert_eq!(watch.lines(1).len(), 1);
}

#[test]
fn closed_stdout_ends_quietly_with_0() {
    let state = State::new(Some("lookup"));
    let mut watch = Watch::start(&state, &["--no-nflog"]);
    watch.close_stdout();
    // Enough output that a write must hit the closed pipe.
    let line = b"{\"ts\":\"a\",\"action\":\"setup\"}\n".repeat(2000);
    state.append("audit.jsonl", &line);
    let (status, stderr) = watch.wait_exit();
    assert_eq!(status.code(), Some(0), "{stderr:#?}");
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("panicked") || l.contains("Broken pipe")),
        "{stderr:#?}"
    );
}
