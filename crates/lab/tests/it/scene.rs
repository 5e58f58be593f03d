//! The scene tears everything down when its watcher fails to start and when a test panics
//! while holding it, for one container and for the host-wide pair. (The scene itself, against the real shield-watch, is tested in crates/cli.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shield_lab::{leftovers, ErrorKind, Scene};

/// A stand-in for shield-watch: a shell script with the given body, in a temp dir.
fn watcher(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-shield-watch");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_watcher_that_exits_before_ready_is_an_error_with_its_stderr_and_nothing_stays() {
    let prefix = format!("{}scenefail", crate::prefix());
    let dir = tempfile::tempdir().unwrap();
    let binary = watcher(
        dir.path(),
        "echo 'shield-watch: DNS tier not set' >&2; exit 1",
    );
    let err = Scene::start(&binary, &[], &prefix).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Command, "{err}");
    let message = err.to_string();
    assert!(message.contains("exited before it was ready"), "{message}");
    assert!(message.contains("DNS tier not set"), "{message}");
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn a_panic_while_the_scene_runs_tears_it_down() {
    let prefix = format!("{}scenepanic", crate::prefix());
    let dir = tempfile::tempdir().unwrap();
    // Ready at once, then silent: the scene is up, its watcher never reports anything.
    let binary = watcher(
        dir.path(),
        "echo 'shield-watch: ready (audit,dns,nflog)' >&2; exec sleep 60",
    );
    let state = std::thread::spawn(move || {
        let scene = Scene::start(&binary, &[], &prefix).unwrap();
        assert_eq!(scene.ready_line(), "shield-watch: ready (audit,dns,nflog)");
        let state = scene.state_dir().to_path_buf();
        assert!(state.join("dns.tier").exists());
        assert!(!leftovers(&prefix).is_empty(), "the scene is up");
        std::panic::panic_any(state);
    })
    .join()
    .unwrap_err();
    let state = state.downcast::<PathBuf>().unwrap();
    assert!(!state.exists(), "{} survived", state.display());
    let prefix = format!("{}scenepanic", crate::prefix());
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn the_host_scene_gives_the_watcher_one_state_root_and_tears_both_containers_down() {
    let prefix = format!("{}scenehost", crate::prefix());
    let dir = tempfile::tempdir().unwrap();
    // Says what it was given and what it finds there, then fails before its ready line.
    let binary = watcher(
        dir.path(),
        r#"echo "args: $*" >&2
for c in "$2"/containers/*; do
  pid=$(cat "$c/dnsmasq.pid")
  echo "$(basename "$c"): $(cat "$c/dns.tier") $(tr '\0' ' ' < /proc/$pid/cmdline)" >&2
done
exit 1"#,
    );
    let err = Scene::start_host(&binary, &["--format", "text"], &prefix).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Command, "{message}");
    let root = format!("/tmp/shield-lab/{prefix}-{}-", std::process::id());
    assert!(
        message.contains(&format!("args: --state-root {root}")),
        "{message}"
    );
    assert!(message.contains("-state --format text"), "{message}");
    // Each resolver started as terok-shield starts it: its config and PID in its state dir.
    for name in ["alpha", "beta"] {
        assert!(
            message.contains(&format!(
                "{name}: dnsmasq-live dnsmasq --keep-in-foreground --conf-file={root}"
            )) && message.contains(&format!("-state/containers/{name}/dnsmasq.conf")),
            "{message}"
        );
    }
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}
