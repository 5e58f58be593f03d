//! The Debian package (`cargo xtask deb`) and CI's check of it: install it, run the installed
//! binary the way its systemd template unit does, verify the units, remove it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use shield_lab::Watch;

use crate::{cargo, cargo_tool, dist, run};

/// The Debian package's name (`[package.metadata.deb] name` in crates/cli/Cargo.toml).
const PACKAGE: &str = "shield-watch";

/// Where the package puts the systemd units.
const UNIT_DIR: &str = "/lib/systemd/system";

/// The units, as named in packaging/systemd/ and installed in [`UNIT_DIR`].
const TEMPLATE_UNIT: &str = "shield-watch@.service";
const HOST_UNIT: &str = "shield-watch.service";

/// Every file the package installs that CI checks is there.
const INSTALLED: &[&str] = &[
    "/usr/bin/shield-watch",
    "/usr/share/man/man1/shield-watch.1.gz",
    "/usr/share/bash-completion/completions/shield-watch",
    "/usr/share/zsh/vendor-completions/_shield-watch",
    "/usr/share/fish/vendor_completions.d/shield-watch.fish",
    "/lib/systemd/system/shield-watch@.service",
    "/lib/systemd/system/shield-watch.service",
];

/// The highest `systemd-analyze security` exposure accepted for the units, in tenths.
const EXPOSURE_THRESHOLD: u32 = 30;

/// The longest CI waits for the installed binary to say or do something.
const DEADLINE: Duration = Duration::from_secs(20);

/// What `cargo metadata` says about the workspace that packaging needs.
struct Workspace {
    target_dir: PathBuf,
    version: String,
}

fn workspace() -> Result<Workspace> {
    let mut metadata = cargo();
    metadata.args(["metadata", "--format-version", "1", "--no-deps"]);
    let out = metadata.output().context("cannot run cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        out.status
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    let target_dir = json["target_directory"]
        .as_str()
        .context("cargo metadata names no target directory")?
        .into();
    let version = json["packages"]
        .as_array()
        .and_then(|packages| {
            packages
                .iter()
                .find(|p| p["name"] == "shield-watch-cli")
                .and_then(|p| p["version"].as_str())
        })
        .context("cargo metadata lists no shield-watch-cli")?
        .to_string();
    Ok(Workspace {
        target_dir,
        version,
    })
}

/// Builds `target/debian/shield-watch_<version>_<arch>.deb`: the release binary, the completions
/// and man page generated from its clap definition, the systemd units. Returns its path.
pub fn deb() -> Result<PathBuf> {
    build(&workspace()?)
}

fn build(workspace: &Workspace) -> Result<PathBuf> {
    cargo_tool("deb", "cargo-deb")?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--package",
        "shield-watch-cli",
        "--bin",
        "shield-watch",
    ]);
    run(build)?;

    // cargo-deb maps `target/release/` in asset paths to the real target directory, wherever
    // CARGO_TARGET_DIR or a config puts it; the generated files go there for that reason.
    let generated = workspace.target_dir.join("release/dist");
    let _ = fs::remove_dir_all(&generated);
    dist(&generated)?;
    // Debian compresses man pages; cargo-deb does so only for files outside `target/release/`.
    let mut gzip = Command::new("gzip");
    gzip.args(["--best", "--no-name", "--force"])
        .arg(generated.join("shield-watch.1"));
    run(gzip)?;

    let mut package = cargo();
    package
        // The release profile keeps line tables for benchmarks' profiles; the package does not.
        .args([
            "deb",
            "--package",
            "shield-watch-cli",
            "--no-build",
            "--strip",
        ])
        .stdout(Stdio::piped());
    eprintln!("xtask: running {package:?}");
    let out = package
        .spawn()
        .and_then(|child| child.wait_with_output())
        .context("cannot run cargo deb")?;
    ensure!(out.status.success(), "cargo deb failed: {}", out.status);
    // cargo-deb prints the path of the package it wrote as its last line.
    let printed = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(printed.lines().last().unwrap_or_default().trim());
    let arch = command_line("dpkg", &["--print-architecture"])?;
    let expected = workspace
        .target_dir
        .join("debian")
        .join(format!("{PACKAGE}_{}_{arch}.deb", workspace.version));
    ensure!(
        path == expected && expected.is_file(),
        "cargo deb wrote {:?}, expected {}",
        printed.trim(),
        expected.display()
    );
    eprintln!("xtask: wrote {}", expected.display());
    Ok(expected)
}

/// CI's check of the package, as root: build it, install it with dpkg, run the installed binary
/// (`--version`, then a short real run with the command line of the template unit), check both
/// units with `systemd-analyze verify` and `security`, and remove the package again, also when a
/// check fails.
pub fn check() -> Result<()> {
    ensure!(
        crate::is_root(),
        "checking the package installs it with dpkg: run as root"
    );
    if let Some(status) = package_status()? {
        bail!(
            "{PACKAGE} is already on this machine ({status}); CI installs and removes its own \
             build, so remove it first: dpkg -r {PACKAGE}"
        );
    }
    let workspace = workspace()?;
    let deb = build(&workspace)?;

    let mut install = Command::new("dpkg");
    install.arg("-i").arg(&deb);
    let checked = run(install).and_then(|()| check_installed(&workspace.version));

    let mut remove = Command::new("dpkg");
    remove.args(["-r", PACKAGE]);
    let removed = run(remove).and_then(|()| {
        if let Some(status) = package_status()? {
            bail!("dpkg -r left {PACKAGE} behind ({status})");
        }
        let left: Vec<&str> = INSTALLED
            .iter()
            .copied()
            .filter(|path| Path::new(path).exists())
            .collect();
        ensure!(left.is_empty(), "dpkg -r left {}", left.join(", "));
        Ok(())
    });
    checked?;
    removed?;
    eprintln!("xtask: the package installs, runs, passes systemd-analyze verify and is removed");
    Ok(())
}

/// The package's dpkg status when dpkg knows it as anything but gone.
fn package_status() -> Result<Option<String>> {
    let out = Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Status}", PACKAGE])
        .output()
        .context("cannot run dpkg-query")?;
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // dpkg-query fails for a package it never heard of; "not-installed" is one it forgot.
    Ok((out.status.success() && !status.is_empty() && status != "not-installed").then_some(status))
}

fn check_installed(version: &str) -> Result<()> {
    let missing: Vec<&str> = INSTALLED
        .iter()
        .copied()
        .filter(|path| !Path::new(path).is_file())
        .collect();
    ensure!(
        missing.is_empty(),
        "the package did not install {}",
        missing.join(", ")
    );

    let printed = command_line("/usr/bin/shield-watch", &["--version"])?;
    ensure!(
        printed == format!("shield-watch {version}"),
        "/usr/bin/shield-watch --version printed {printed:?}"
    );
    eprintln!("xtask: /usr/bin/shield-watch --version: {printed}");

    run_as_template_unit()?;

    // verify only warns about what it cannot parse (an unknown directive, a bad value) and
    // still exits 0, so any output at all fails the check. It also looks the man page of
    // Documentation= up, which the package installed.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(Path::new(UNIT_DIR).join("shield-watch@ci.service"))
        .arg(Path::new(UNIT_DIR).join(HOST_UNIT))
        .output()
        .context("cannot run systemd-analyze (apt-get install systemd)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify of the installed units: {}\n{said}",
        out.status
    );
    eprintln!("xtask: systemd-analyze verify: both units clean");

    // systemd's own score of the sandbox (0 best, 10 worst). Both units measure 2.9 with
    // systemd 252; losing the bounding set, the system call filter or the address family
    // restriction each takes them past 3.0, which fails here.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={EXPOSURE_THRESHOLD}"))
        .arg(Path::new(UNIT_DIR).join("shield-watch@ci.service"))
        .arg(Path::new(UNIT_DIR).join(HOST_UNIT))
        .output()
        .context("cannot run systemd-analyze security")?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "systemd-analyze security: an installed unit is exposed above {}.{}:\n{table}{}",
        EXPOSURE_THRESHOLD / 10,
        EXPOSURE_THRESHOLD % 10,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in table
        .lines()
        .filter(|l| l.contains("Overall exposure level"))
    {
        eprintln!(
            "xtask: systemd-analyze security: {}",
            line.trim_start_matches(['→', ' '])
        );
    }
    Ok(())
}

/// Runs the installed binary with the command line of the installed template unit, as systemd
/// would for `shield-watch@ci-pkg` (instance, `%S` and the unit's environment, with the state
/// root and the options overridden as a drop-in would): an audit entry written before the start
/// and one written after the ready line both come out, SIGTERM stops it with exit 0, and the
/// cursor lands in the unit's StateDirectory.
fn run_as_template_unit() -> Result<()> {
    let scratch = Scratch::new()?;
    let instance = "ci-pkg";
    let root = scratch.path.join("terok-shield");
    let state = root.join("containers").join(instance);
    let state_directory = scratch.path.join("var-lib");
    fs::create_dir_all(&state)?;
    fs::create_dir_all(state_directory.join("shield-watch"))?;
    fs::write(state.join("dns.tier"), "lookup\n")?;
    let entry = |dest: &str| {
        shield_lab::StateDir::audit_entry(instance, "denied", Some(dest), Some("xtask ci"))
    };
    shield_lab::StateDir::append_audit(&state, &entry("198.51.100.1"))?;
    // The unit writes to the journal natively (--output journal); here to a socket of ours, with
    // stdout added so the events can be read back as lines too.
    let journal_socket = scratch.path.join("journal.socket");
    let journal = std::os::unix::net::UnixDatagram::bind(&journal_socket)
        .with_context(|| format!("cannot bind {}", journal_socket.display()))?;
    journal.set_read_timeout(Some(DEADLINE))?;

    let unit = fs::read_to_string(Path::new(UNIT_DIR).join(TEMPLATE_UNIT))?;
    let argv = exec_start(
        &unit,
        instance,
        &state_directory,
        &[
            (
                "TEROK_SHIELD_STATE_DIR",
                root.to_str().context("scratch path")?,
            ),
            (
                "SHIELD_WATCH_OPTIONS",
                &format!(
                    "--no-nflog --source audit --from-start --output stdout --journal-socket {}",
                    journal_socket.display()
                ),
            ),
        ],
    )?;
    eprintln!(
        "xtask: running the template unit's command: {}",
        argv.join(" ")
    );
    let (program, args) = argv.split_first().context("empty command line")?;
    let mut command = Command::new(program);
    command.args(args);
    let mut watch = Watch::spawn(command)?;
    watch.read_stdout();
    watch.wait_stderr(
        |line| line == "shield-watch: ready (audit)",
        Instant::now() + DEADLINE,
    )?;
    shield_lab::StateDir::append_audit(&state, &entry("198.51.100.2"))?;
    for dest in ["198.51.100.1", "198.51.100.2"] {
        let line = watch.next_line(Instant::now() + DEADLINE)?;
        let event: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("not a JSON event: {line}"))?;
        ensure!(
            event["source"] == "audit"
                && event["action"] == "denied"
                && event["container"] == instance
                && event["dest"] == dest,
            "expected the denied audit entry for {dest} of {instance}, got {line}"
        );
    }
    for dest in ["198.51.100.1", "198.51.100.2"] {
        let mut entry = vec![0u8; 64 * 1024];
        let n = journal
            .recv(&mut entry)
            .context("no journal entry from the installed unit's --output journal")?;
        let entry = String::from_utf8_lossy(&entry[..n]);
        ensure!(
            entry.contains("\nSHIELD_ACTION=denied\n")
                && entry.contains(&format!("\nSHIELD_DEST={dest}\n")),
            "expected the journal entry for {dest}, got {entry:?}"
        );
    }
    let (status, stderr) = watch.stop(Instant::now() + DEADLINE)?;
    ensure!(
        status.success(),
        "SIGTERM ended the installed binary with {status}; stderr:\n{}",
        stderr.join("\n")
    );
    let cursor = state_directory
        .join("shield-watch")
        .join(format!("{instance}.cursor"));
    ensure!(
        cursor.is_file(),
        "no cursor file at {} after a clean stop",
        cursor.display()
    );
    eprintln!(
        "xtask: the installed binary followed the audit log, stopped with exit 0, saved its cursor"
    );
    Ok(())
}

/// A directory removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let path = std::env::temp_dir().join(format!("xtask-package-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The first line a command prints, trimmed; fails when it fails.
fn command_line(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

// ---- reading the units ----

/// Every `Key=Value` of a unit file, in order, without comments and section headers.
fn directives(unit: &str) -> impl Iterator<Item = (&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', ';', '[']))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim(), value.trim()))
}

/// The unit's `ExecStart=` as the argument vector systemd runs: specifiers (`%i` the instance,
/// `%S` the state directory root, `%%`) first, then `${NAME}` inside a word and `$NAME` as a
/// whole word (split on white space), from the unit's `Environment=` lines with `overrides`
/// applied as a drop-in would. Only what our units use is understood; anything else (quotes, an
/// unknown variable or specifier) is an error rather than a guess.
fn exec_start(
    unit: &str,
    instance: &str,
    state_root: &Path,
    overrides: &[(&str, &str)],
) -> Result<Vec<String>> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (_, value) in directives(unit).filter(|(key, _)| *key == "Environment") {
        // `Environment=A=b C=d` sets two variables; `Environment="A=b c"` one with a space.
        let assignments: Vec<&str> = match value.strip_prefix('"') {
            Some(quoted) => vec![quoted.strip_suffix('"').context("unbalanced quote")?],
            None => value.split_whitespace().collect(),
        };
        for assignment in assignments {
            let (name, value) = assignment
                .split_once('=')
                .with_context(|| format!("Environment={assignment} sets nothing"))?;
            env.retain(|(n, _)| n != name);
            env.push((name.to_string(), value.to_string()));
        }
    }
    for (name, value) in overrides {
        env.retain(|(n, _)| n != name);
        env.push((name.to_string(), value.to_string()));
    }
    let var = |name: &str| -> Result<&str> {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .with_context(|| format!("ExecStart uses ${name}, which the unit does not set"))
    };

    let mut exec = directives(unit).filter(|(key, _)| *key == "ExecStart");
    let line = exec.next().context("no ExecStart=")?.1;
    ensure!(exec.next().is_none(), "more than one ExecStart=");
    ensure!(
        !line.contains(['"', '\'', '\\']),
        "quoting in ExecStart={line}"
    );
    let state_root = state_root.to_str().context("state root is not UTF-8")?;
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        let mut word = specifiers(word, instance, state_root)?;
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            argv.extend(var(name)?.split_whitespace().map(str::to_string));
            continue;
        }
        while let Some(start) = word.find("${") {
            let end = word[start..]
                .find('}')
                .map(|i| start + i)
                .with_context(|| format!("unclosed ${{ in {word}"))?;
            let value = var(&word[start + 2..end])?;
            word.replace_range(start..=end, value);
        }
        ensure!(
            !word.contains('$'),
            "a variable systemd would not expand in {word}"
        );
        argv.push(word);
    }
    Ok(argv)
}

fn specifiers(word: &str, instance: &str, state_root: &str) -> Result<String> {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') => out.push_str(instance),
            Some('S') => out.push_str(state_root),
            Some('%') => out.push('%'),
            other => bail!(
                "specifier %{} in {word} is not understood here",
                other.unwrap_or(' ')
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;
    use clap::Parser;
    use shield_watch_cli::Args;

    fn unit(name: &str) -> String {
        fs::read_to_string(workspace_root().join("packaging/systemd").join(name)).unwrap()
    }

    fn value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
        directives(unit)
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn both_units_sandbox_the_service_and_log_to_the_journal() {
        for name in [TEMPLATE_UNIT, HOST_UNIT] {
            let text = unit(name);
            for (key, expected) in [
                ("ProtectSystem", "strict"),
                ("ProtectHome", "read-only"),
                ("NoNewPrivileges", "yes"),
                ("RestrictAddressFamilies", "AF_NETLINK AF_UNIX"),
                ("RestrictNamespaces", "net"),
                ("StateDirectory", "shield-watch"),
                // Events go to the journal natively (--output journal), diagnostics by stderr.
                ("StandardOutput", "null"),
                ("StandardError", "journal"),
                ("Type", "exec"),
            ] {
                assert_eq!(value(&text, key), [expected], "{name}: {key}");
            }
            // Installed but not started by the package; `systemctl enable` needs a target.
            assert_eq!(value(&text, "WantedBy"), ["multi-user.target"], "{name}");

            let caps = value(&text, "CapabilityBoundingSet");
            assert_eq!(caps.len(), 1, "{name}: one CapabilityBoundingSet");
            let comments: String = text
                .lines()
                .filter(|line| line.trim_start().starts_with('#'))
                .collect();
            for cap in caps[0].split_whitespace() {
                assert!(
                    [
                        "CAP_DAC_READ_SEARCH",
                        "CAP_NET_ADMIN",
                        "CAP_SYS_ADMIN",
                        "CAP_SYS_PTRACE"
                    ]
                    .contains(&cap),
                    "{name}: {cap} is more than shield-watch needs"
                );
                assert!(
                    comments.contains(&format!("#   {cap} ")),
                    "{name}: {cap} is not justified in a comment"
                );
            }
        }
    }

    #[test]
    fn the_template_runs_one_container_with_its_cursor_in_the_state_directory() {
        let argv = exec_start(&unit(TEMPLATE_UNIT), "web", Path::new("/var/lib"), &[]).unwrap();
        assert_eq!(argv[0], "/usr/bin/shield-watch");
        let args = Args::try_parse_from(&argv).unwrap();
        assert_eq!(
            args.state_dir.as_deref(),
            Some(Path::new("/root/.local/state/terok/shield/containers/web"))
        );
        assert_eq!(
            args.cursor.as_deref(),
            Some(Path::new("/var/lib/shield-watch/web.cursor"))
        );
        // Without a namespace the container's packets cannot be seen; the host's must not be
        // reported as the container's.
        assert!(args.no_nflog && args.netns.is_none());
        assert_eq!(args.output, [shield_watch_cli::Destination::Journal]);

        // What the unit's comment tells an operator to put in a drop-in.
        let argv = exec_start(
            &unit(TEMPLATE_UNIT),
            "web",
            Path::new("/var/lib"),
            &[
                (
                    "TEROK_SHIELD_STATE_DIR",
                    "/home/alice/.local/state/terok/shield",
                ),
                ("SHIELD_WATCH_OPTIONS", "--netns /run/netns/web --dedup 30s"),
            ],
        )
        .unwrap();
        let args = Args::try_parse_from(&argv).unwrap();
        assert_eq!(
            args.state_dir.as_deref(),
            Some(Path::new(
                "/home/alice/.local/state/terok/shield/containers/web"
            ))
        );
        assert_eq!(args.netns.as_deref(), Some(Path::new("/run/netns/web")));
        assert!(!args.no_nflog && args.dedup == Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_host_wide_unit_passes_only_flags_the_binary_has() {
        let argv = exec_start(&unit(HOST_UNIT), "", Path::new("/var/lib"), &[]).unwrap();
        assert_eq!(
            argv[1..],
            [
                "--state-root",
                "/root/.local/state/terok/shield",
                "--cursor",
                "/var/lib/shield-watch/host-wide.cursor",
                "--output",
                "journal"
            ]
        );
        let args = Args::try_parse_from(&argv).unwrap();
        assert_eq!(
            args.state_root.as_deref(),
            Some(Path::new("/root/.local/state/terok/shield"))
        );
    }

    #[test]
    fn the_metrics_outputs_are_off_and_their_sandbox_lines_commented_out() {
        for name in [TEMPLATE_UNIT, HOST_UNIT] {
            let text = unit(name);
            let argv = exec_start(&text, "web", Path::new("/var/lib"), &[]).unwrap();
            let args = Args::try_parse_from(&argv).unwrap();
            assert!(args.metrics_listen.is_none() && args.metrics_textfile.is_none());
            for line in [
                "#RestrictAddressFamilies=AF_INET",
                "#IPAddressAllow=localhost",
                "#ReadWritePaths=/var/lib/prometheus/node-exporter",
            ] {
                assert!(text.lines().any(|l| l == line), "{name}: {line}");
            }
            assert_eq!(value(&text, "IPAddressDeny"), ["any"], "{name}");
            // The flags the comments name parse.
            let argv = exec_start(
                &text,
                "web",
                Path::new("/var/lib"),
                &[(
                    "SHIELD_WATCH_OPTIONS",
                    "--metrics-listen 127.0.0.1:9640 --metrics-textfile /var/lib/prometheus/node-exporter/shield-watch.prom",
                )],
            )
            .unwrap();
            let args = Args::try_parse_from(&argv).unwrap();
            assert_eq!(args.metrics_listen, Some("127.0.0.1:9640".parse().unwrap()));
            assert!(args.metrics_textfile.is_some());
        }
    }

    #[test]
    fn exec_start_refuses_what_it_does_not_understand() {
        let with = |exec: &str| format!("[Service]\nEnvironment=A=1\nExecStart={exec}\n");
        let expand = |exec: &str| exec_start(&with(exec), "web", Path::new("/s"), &[]);
        assert_eq!(
            expand("/bin/x %i %S/a ${A}/b $A %%").unwrap(),
            ["/bin/x", "web", "/s/a", "1/b", "1", "%"]
        );
        assert!(expand("/bin/x $UNSET").is_err());
        assert!(expand("/bin/x \"quoted arg\"").is_err());
        assert!(expand("/bin/x %n").is_err());
        assert!(expand("/bin/x a$A").is_err());
    }

    #[test]
    fn the_package_installs_every_unit_and_generated_file() {
        let manifest = fs::read_to_string(workspace_root().join("crates/cli/Cargo.toml")).unwrap();
        for entry in fs::read_dir(workspace_root().join("packaging/systemd")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                manifest.contains(&format!(
                    "\"../../packaging/systemd/{name}\", \"lib/systemd/system/\""
                )),
                "{name} is not an asset of the package"
            );
        }
        let out = std::env::temp_dir().join(format!("xtask-assets-{}", std::process::id()));
        for generated in dist(&out).unwrap() {
            let mut name = generated.file_name().unwrap().to_str().unwrap().to_string();
            if name.ends_with(".1") {
                name.push_str(".gz");
            }
            assert!(
                manifest.contains(&format!("\"target/release/dist/{name}\"")),
                "{name} is not an asset of the package"
            );
        }
        fs::remove_dir_all(out).unwrap();
    }
}
