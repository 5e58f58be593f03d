//! `cargo xtask demo`: a real shielded container in one command, with shield-watch's stream live.
//!
//! Installs what a fresh Debian-family machine lacks, builds the release binary, and plays
//! [`shield_lab::Scene`] at a human pace: one narrated step a second on stderr, shield-watch's own
//! output on stdout (`--format text` on a terminal, JSON lines otherwise). Ctrl-C, a failure and
//! the normal end all tear everything down the same way, and the last line says whether anything
//! was left behind.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shield_lab::{leftovers, ErrorKind, Scene};

/// The pause between steps, so a person can follow.
const PACE: Duration = Duration::from_secs(1);

pub(crate) fn run() -> Result<()> {
    install_missing()?;

    let mut build = crate::cargo();
    build.args(["build", "--release", "-p", "shield-watch-cli"]);
    crate::run(build)?;
    let binary = target_dir().join("release/shield-watch");

    // Ctrl-C (and SIGTERM) only raise a flag: the scene notices within 100 ms and the teardown
    // below runs as on any other end.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("cannot install the Ctrl-C handler")?;
    }

    // Namespaces are `shield-demo-PID-N`: the leftovers check sees this run's only.
    let prefix = format!("shield-demo-{}", std::process::id());
    let played = play(&binary, "shield-demo", &interrupted);
    // Everything the scene made is gone by now (dropped inside `play`, also on failure).
    let left = leftovers(&prefix);
    if left.is_empty() {
        eprintln!(
            "demo: torn down; nothing left behind (namespace, nft table, dnsmasq, state dir)"
        );
    } else {
        eprintln!("demo: left behind: {}", left.join("; "));
    }
    played?;
    if !left.is_empty() {
        bail!("the teardown left {} thing(s) behind", left.len());
    }
    Ok(())
}

fn play(binary: &std::path::Path, prefix: &str, interrupted: &Arc<AtomicBool>) -> Result<()> {
    let text = std::io::stdout().is_terminal();
    // shield-watch's stdout is a pipe to the scene, so colour has to be asked for.
    let format: &[&str] = if text {
        &["--format", "text", "--color", "always"]
    } else {
        &[]
    };
    narrate("building a shielded container: namespace, nftables shield, two dnsmasqs, state dir");
    let mut scene = Scene::start(binary, format, prefix).context("cannot set the scene up")?;
    scene.set_interrupt(Arc::clone(interrupted));
    narrate(&format!(
        "{} (state dir {}, namespace {})",
        scene.ready_line(),
        scene.state_dir().display(),
        scene.netns().name()
    ));
    if !scene.ready_line().ends_with("(audit,dns,nflog)") {
        narrate("not every source is running: the steps that need the missing one will time out");
    }

    let steps = Scene::steps();
    let mut print = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    for (i, step) in steps.iter().enumerate() {
        pause(interrupted)?;
        narrate(&format!(
            "[{}/{}] {}: {}",
            i + 1,
            steps.len(),
            step.name,
            step.narration
        ));
        match scene.run_step(step, &mut print) {
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => bail!("interrupted"),
            Err(err) => return Err(err).context("the scene failed"),
        }
    }
    pause(interrupted)?;
    narrate("stopping shield-watch (SIGINT)");
    let finish = scene.finish().context("stopping shield-watch")?;
    for line in &finish.rest {
        print(line);
    }
    // Its summary is the last stderr line; the ready line and warnings came before.
    if let Some(summary) = finish.stderr.last() {
        eprintln!("{summary}");
    }
    if !finish.status.success() {
        bail!("shield-watch exited with {}", finish.status);
    }
    Ok(())
}

fn narrate(line: &str) {
    eprintln!("demo: {line}");
}

/// The pause between steps, cut short by Ctrl-C.
fn pause(interrupted: &AtomicBool) -> Result<()> {
    let end = Instant::now() + PACE;
    while Instant::now() < end {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Installs the missing Debian packages, or says exactly what is missing and why it cannot.
fn install_missing() -> Result<()> {
    let missing: Vec<&str> = crate::PACKAGES
        .iter()
        .filter(|(program, _)| !crate::have(program))
        .map(|(_, package)| *package)
        .collect();
    let root = crate::is_root();
    match (root, missing.is_empty()) {
        (true, true) => return Ok(()),
        (false, true) => bail!(
            "the demo needs root (it creates a network namespace, loads nftables rules and runs dnsmasq); run it as root"
        ),
        (false, false) => bail!(
            "the demo needs root and these Debian packages: {}; as root: apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        ),
        (true, false) => {}
    }
    if !crate::have("apt-get") {
        bail!(
            "missing packages {} and no apt-get to install them with; install them (Debian names) and run again",
            missing.join(" ")
        );
    }
    // Only the packages: `cargo xtask setup` also installs cargo-deny, which the demo does not need.
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    crate::run(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    crate::run(install)
}

/// Where `cargo build` puts the binary: `CARGO_TARGET_DIR` if set, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    let root = crate::workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}
