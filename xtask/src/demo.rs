//! `cargo xtask demo`: real shielded containers in one command, with shield-watch's stream live.
//!
//! Installs what a fresh Debian-family machine lacks, builds the release binary, and plays a
//! [`shield_lab::Scene`] at a human pace: one narrated step a second on stderr, shield-watch's own
//! output on stdout (`--format text` on a terminal, JSON lines otherwise or with `--json`). By
//! default the host-wide scene: two containers side by side under one state root, one
//! `shield-watch --state-root` following both; `--single` plays the one-container scene
//! (`--state-dir`). `--quick` skips the pauses. Nothing is read from stdin, so it also runs
//! unattended. Ctrl-C, a failure and the normal end all tear everything down the same way, and
//! the last line says whether anything was left behind.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shield_lab::{leftovers, ErrorKind, Scene};

/// The pause between steps, so a person can follow.
const PACE: Duration = Duration::from_secs(1);

/// What `cargo xtask demo` was asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// The one-container scene instead of the host-wide one.
    single: bool,
    /// JSON lines even on a terminal.
    json: bool,
    /// No pause between steps.
    quick: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options::default();
        for arg in args {
            match arg.as_str() {
                "--single" => options.single = true,
                "--json" => options.json = true,
                "--quick" => options.quick = true,
                other => bail!("unknown demo option {other:?} (known: --single, --json, --quick)"),
            }
        }
        Ok(options)
    }
}

pub(crate) fn run(options: &Options) -> Result<()> {
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
    let played = play(&binary, "shield-demo", options, &interrupted);
    // Everything the scene made is gone by now (dropped inside `play`, also on failure).
    let left = leftovers(&prefix);
    if left.is_empty() {
        eprintln!(
            "demo: torn down; nothing left behind (namespaces, nft tables, dnsmasqs, state dirs)"
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

fn play(
    binary: &Path,
    prefix: &str,
    options: &Options,
    interrupted: &Arc<AtomicBool>,
) -> Result<()> {
    let text = !options.json && std::io::stdout().is_terminal();
    // shield-watch's stdout is a pipe to the scene, so colour has to be asked for.
    let format: &[&str] = if text {
        &["--format", "text", "--color", "always"]
    } else {
        &[]
    };
    let (mut scene, steps) = if options.single {
        narrate(
            "building a shielded container: namespace, nftables shield, two dnsmasqs, state dir",
        );
        let scene = Scene::start(binary, format, prefix).context("cannot set the scene up")?;
        narrate(&format!(
            "{} (state dir {}, namespace {})",
            scene.ready_line(),
            scene.state_dir().display(),
            scene.netns().name()
        ));
        if !scene.ready_line().ends_with("(audit,dns,nflog)") {
            narrate(
                "not every source is running: the steps that need the missing one will time out",
            );
        }
        (scene, Scene::steps())
    } else {
        narrate("building two shielded containers side by side, alpha and beta: each its own namespace, nftables shield and two dnsmasqs (the resolver started as terok-shield starts it, --conf-file=STATE/dnsmasq.conf), their state dirs under one state root");
        let scene = Scene::start_host(binary, format, prefix).context("cannot set the scene up")?;
        let containers: Vec<String> = scene
            .containers()
            .iter()
            .map(|(name, ns)| format!("{name} in namespace {}", ns.name()))
            .collect();
        let command: Vec<String> = ["shield-watch", "--state-root"]
            .iter()
            .map(|s| s.to_string())
            .chain([scene.root().display().to_string()])
            .chain(format.iter().map(|s| s.to_string()))
            .collect();
        narrate(&format!(
            "{}; `{}` follows every container in one stream:",
            containers.join(", "),
            command.join(" ")
        ));
        // shield-watch's own start-up lines: one per container, its confinement, the ready line.
        for line in scene.startup_lines() {
            eprintln!("{line}");
        }
        let following = scene
            .containers()
            .iter()
            .filter(|(name, _)| {
                let line = format!("shield-watch: container {name}: following (audit,dns,nflog)");
                scene.startup_lines().contains(&line)
            })
            .count();
        if following < scene.containers().len() {
            narrate("not every source runs in every container: the steps that need the missing one will time out");
        }
        (scene, Scene::host_steps())
    };
    scene.set_interrupt(Arc::clone(interrupted));

    let mut print = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    for (i, step) in steps.iter().enumerate() {
        pause(interrupted, options.quick)?;
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
    pause(interrupted, options.quick)?;
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

/// The pause between steps (none with `--quick`), cut short by Ctrl-C.
fn pause(interrupted: &AtomicBool, quick: bool) -> Result<()> {
    let end = Instant::now() + if quick { Duration::ZERO } else { PACE };
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_options() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Options::parse(&[]).unwrap(), Options::default());
        let all = Options::parse(&args(&["--single", "--json", "--quick"])).unwrap();
        assert!(all.single && all.json && all.quick);
        assert!(Options::parse(&args(&["--host"])).is_err());
    }
}
