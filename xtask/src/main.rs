//! Project automation: `cargo xtask ci` runs exactly what CI runs; `cargo xtask bench` runs the
//! benchmarks whose numbers go into docs/BENCHMARKS.md; `cargo xtask deb` builds the Debian
//! package.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

mod demo;
mod package;

/// Debian packages the end-to-end tests use, and the command each one provides.
const PACKAGES: &[(&str, &str)] = &[
    ("nft", "nftables"),
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "dnsutils"),
    ("ip", "iproute2"),
    // terok-shield's hooks enter the container's namespace with it.
    ("nsenter", "util-linux"),
    ("logrotate", "logrotate"),
    // The host-wide test that the nflog helper opens no file of the state root traces it.
    ("strace", "strace"),
    // CI's check of the Debian package: its units verified, their Documentation= man page found.
    ("systemd-analyze", "systemd"),
    ("man", "man-db"),
    // The fleet tests: metrics scraped by a real Prometheus and node_exporter, events forwarded
    // from the journal by rsyslog over TLS (a CA the test makes with openssl).
    ("prometheus", "prometheus"),
    ("prometheus-node-exporter", "prometheus-node-exporter"),
    ("rsyslogd", "rsyslog"),
    // rsyslog's TLS driver, a module rather than a command (an absolute path is looked at as
    // it is; on another architecture it is simply installed again).
    (
        "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
        "rsyslog-gnutls",
    ),
    ("openssl", "openssl"),
    // The forty-namespaces test holds each namespace open with a python3 process whose command
    // line is a dnsmasq's (setpriv and unshare come with util-linux).
    ("python3", "python3"),
];

const USAGE: &str = "usage: cargo xtask <ci|bench|setup|dist|deb|demo>
  ci     install what is missing (as root), then fmt, clippy, tests, the Debian package
         (built, installed, run, units verified, removed), docs, deny, fuzz check
  bench  run every benchmark (release build); record results in docs/BENCHMARKS.md
  setup  only install what the tests need (apt packages, cargo-deny, cargo-deb)
  dist   generate shell completions and the man page into target/dist/
  deb    build target/debian/shield-watch_<version>_<arch>.deb (binary, man page,
         completions, systemd units); with --check (root), also CI's check of it: install,
         run the installed binary, check the units with systemd-analyze, remove
  demo   (root) two real shielded containers side by side, scripted, with one host-wide
         shield-watch --state-root stream live; --single: one container (--state-dir);
         --json: JSON lines even on a terminal; --quick: no pause between steps";

fn main() -> ExitCode {
    let result = match env::args().nth(1).as_deref() {
        Some("ci") => ci(),
        Some("bench") => bench(),
        Some("setup") => setup(),
        Some("dist") => dist(&workspace_root().join("target/dist")).map(|_| ()),
        Some("deb") if env::args().nth(2).as_deref() == Some("--check") => package::check(),
        Some("deb") => package::deb().map(|_| ()),
        Some("demo") => {
            let args: Vec<String> = env::args().skip(2).collect();
            demo::Options::parse(&args).and_then(|options| demo::run(&options))
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn run(mut command: Command) -> Result<()> {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    env::var_os("PATH").is_some_and(|paths| {
        env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|dir| dir.join(program).is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Installs what the tests need and a fresh machine lacks: the Debian packages (as root),
/// cargo-deny, cargo-deb, and terok-shield 0.9.0 in `target/terok-venv` (needs a Python >= 3.12). Without root, says exactly what to install and fails.
fn setup() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "the tests need root and these Debian packages: {}; run as root: apt-get install -y {}",
                missing.join(" "),
                missing.join(" ")
            );
        }
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        run(update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(install)?;
    }
    cargo_tool("deny", "cargo-deny")?;
    cargo_tool("deb", "cargo-deb")?;
    // The tests that run the real terok-shield need it in a venv (Python >= 3.12, pip from PyPI).
    let venv = shield_lab::TerokShield::default_venv();
    eprintln!(
        "xtask: terok-shield {} in {}",
        shield_lab::TEROK_SHIELD_VERSION,
        venv.display()
    );
    shield_lab::TerokShield::install(&venv).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Installs the crate that provides `cargo <subcommand>` unless the subcommand already works.
fn cargo_tool(subcommand: &str, krate: &str) -> Result<()> {
    let works = cargo()
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !works {
        let mut install = cargo();
        install.args(["install", "--locked", krate]);
        run(install)?;
    }
    Ok(())
}

/// Everything CI checks, in order of cost.
fn ci() -> Result<()> {
    setup()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;

    // The end-to-end tests create namespaces and start dnsmasq processes; each must remove
    // what it made, even when it fails. What is new after the run was left behind.
    let before = shield_lab::snapshot();
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    let tested = run(test);
    // A dnsmasq that a teardown sent SIGTERM (terok-shield's own teardown does not wait for
    // it) may still be exiting when the last test returns: what is still there after a few
    // seconds was left behind, not what is on its way out.
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let left: Vec<String> = loop {
        let left: Vec<String> = shield_lab::snapshot()
            .difference(&before)
            .cloned()
            .collect();
        if left.is_empty() || std::time::Instant::now() >= settle {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    tested?;
    if !left.is_empty() {
        bail!("the tests left these behind: {}", left.join(", "));
    }
    eprintln!("xtask: the tests left no namespace, dnsmasq or lab directory behind");

    // What an operator installs: built, installed with dpkg, run, its units verified, removed.
    package::check()?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;

    // Advisories need the advisory database from the internet; licences, bans and sources
    // need only the registry.
    let mut deny = cargo();
    deny.args(["deny", "check", "licenses", "bans", "sources"]);
    run(deny)?;

    let mut fuzz = cargo();
    fuzz.args(["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"])
        .env(
            "CARGO_TARGET_DIR",
            workspace_root().join("target/fuzz-check"),
        );
    run(fuzz)?;

    eprintln!("xtask: ci passed");
    Ok(())
}

/// Runs every benchmark binary in release mode.
fn bench() -> Result<()> {
    let mut bench = cargo();
    bench.args(["bench", "--workspace"]);
    run(bench)
}

/// Writes bash, zsh and fish completions and the man page, generated from the binary's own clap
/// definition so they cannot drift from it. Returns the files written.
fn dist(out: &Path) -> Result<Vec<PathBuf>> {
    use clap::CommandFactory;
    use clap_complete::Shell;

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = shield_watch_cli::Args::command();
        let path = clap_complete::generate_to(shell, &mut command, "shield-watch", out)
            .with_context(|| format!("cannot write {shell} completions"))?;
        written.push(path);
    }
    let man = clap_mangen::Man::new(shield_watch_cli::Args::command());
    let mut page = Vec::new();
    man.render(&mut page)
        .context("cannot render the man page")?;
    let path = out.join("shield-watch.1");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for path in &written {
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_generates_completions_and_a_man_page_with_every_flag() {
        let out = tempfile_dir();
        let written = dist(&out).unwrap();
        assert_eq!(written.len(), 4);
        let man = std::fs::read_to_string(out.join("shield-watch.1")).unwrap();
        let bash = std::fs::read_to_string(out.join("shield-watch.bash")).unwrap();
        for flag in [
            "state-dir",
            "nflog-group",
            "all-query-types",
            "domain-cache",
            "max-line",
        ] {
            // roff escapes every hyphen.
            assert!(
                man.contains(&flag.replace('-', "\\-")),
                "man page lacks {flag}"
            );
            assert!(
                bash.contains(&format!("--{flag}")),
                "bash completion lacks {flag}"
            );
        }
        std::fs::remove_dir_all(out).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
