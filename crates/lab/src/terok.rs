//! The real terok-shield 0.9.0 from PyPI, installed once into a venv and driven through its CLI
//! and its OCI hooks, with a stand-in `podman` on PATH.
//!
//! [`TerokShield`] finds a Python >= 3.12, keeps `terok-shield==0.9.0` in a venv under a cache
//! directory (created once, reused by every later run), and gives each user a home of its own
//! (`HOME`, `XDG_*`, `TEROK_ROOT`, `TEROK_SHIELD_CONFIG_DIR` all point into it) in which it has run
//! `terok-shield setup`: the global hooks land in `ROOT/shield/hooks/`, the clearance reader in
//! `ROOT/shield/nflog-reader.py`, nothing under `/root` or `/var/lib/terok`.
//!
//! terok-shield calls `podman` itself for a handful of things; no container engine runs here, so a
//! stand-in script answers exactly those calls from records the lab keeps per container:
//!
//! | call (terok-shield 0.9.0 source)                                  | stand-in answer            |
//! |-------------------------------------------------------------------|----------------------------|
//! | `podman info -f json` (hooks/mode.py:544, `prepare`)              | rootless, `pasta` networking|
//! | `podman inspect --format {{.State.Pid}} NAME` (run.py:197)        | the container's init pid   |
//! | `podman inspect --format=json -- NAME` (container.py, annotation) | `Config.Annotations`       |
//! | `podman unshare CMD...` (run.py:155, 186)                         | runs CMD (we are root)     |
//! | `podman version --format ...` (cli/main.py, `--version` only)     | `5.4.0`                    |
//!
//! Anything else makes the stand-in fail loudly (exit 125), so a new call in a later terok-shield
//! shows up as a test failure rather than a silent wrong answer. A second stand-in, `dig`, stands
//! for the host's resolver: `terok-shield allow|deny NAME DOMAIN` resolves DOMAIN on the host
//! (`dig +short D A D AAAA`, run.py:213) before it touches the container; the stand-in asks the
//! container's fake upstream (inside its namespace) instead, so both agree on every address.

mod container;
mod reader;

pub use container::{TerokContainer, TerokLayout, PRIVATE_PROBE};
pub use reader::TerokReader;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::dnsmasq::CONF_ROOT;
use crate::error::{Error, ErrorKind};

/// What terok-util says when its setup lock is held by someone else.
const SETUP_BUSY: &str = "Another setup operation is already running";

/// The terok-shield release the lab installs (pinned: its file layout is what the tests assert).
pub const TEROK_SHIELD_VERSION: &str = "0.9.0";

/// Distinguishes the homes of several [`TerokShield`]s in one process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The real terok-shield, installed and set up in a home of its own; removed on drop.
///
/// ```no_run
/// # fn main() -> Result<(), shield_lab::Error> {
/// let shield = shield_lab::TerokShield::ensure("demo")?; // venv reused after the first run
/// println!("{}", shield.run(&["--version"])?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TerokShield {
    venv: PathBuf,
    home: PathBuf,
}

impl TerokShield {
    /// A terok-shield ready to use: the venv in [`TerokShield::default_venv`] (made when missing),
    /// and a fresh home `/tmp/shield-lab/PREFIX-terok-PID-N` in which `terok-shield setup` ran.
    pub fn ensure(prefix: &str) -> Result<TerokShield, Error> {
        TerokShield::ensure_in(&TerokShield::default_venv(), prefix)
    }

    /// [`TerokShield::ensure`] with the venv at `venv`.
    pub fn ensure_in(venv: &Path, prefix: &str) -> Result<TerokShield, Error> {
        ensure_venv(venv)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let home = Path::new(CONF_ROOT).join(format!("{prefix}-terok-{}-{n}", std::process::id()));
        for sub in ["home", "root", "config/profiles", "bin", "podman"] {
            let dir = home.join(sub);
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let shield = TerokShield {
            venv: venv.to_path_buf(),
            home,
        };
        shield.write_standins()?;
        shield.setup()?;
        Ok(shield)
    }

    /// `terok-shield setup`, retried while another one holds terok-util's setup lock. That lock
    /// is `/var/lib/terok/setup.lock` for real root whatever `TEROK_ROOT` says
    /// (terok_util/setup.py `setup_lock`), taken without waiting: tests setting up in parallel
    /// (threads here, or another test process) would otherwise fail with "Another setup operation
    /// is already running".
    fn setup(&self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.run(&["setup"]) {
                Err(e) if e.to_string().contains(SETUP_BUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other.map(drop),
            }
        }
    }

    /// Makes sure the venv at `venv` holds terok-shield [`TEROK_SHIELD_VERSION`] (built with
    /// [`find_python`] and pip from PyPI when missing; reused as it is otherwise). `cargo xtask
    /// setup` calls this so that the tests find it ready.
    pub fn install(venv: &Path) -> Result<(), Error> {
        ensure_venv(venv)
    }

    /// Where the venv lives unless told otherwise: `$SHIELD_LAB_TEROK_VENV`, else
    /// `$CARGO_TARGET_DIR/terok-venv`, else the workspace's `target/terok-venv`.
    pub fn default_venv() -> PathBuf {
        if let Some(dir) = std::env::var_os("SHIELD_LAB_TEROK_VENV") {
            return PathBuf::from(dir);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
            PathBuf::from,
        );
        target.join("terok-venv")
    }

    /// The venv's interpreter: what the hooks run under (`python3 -I HOOK STAGE`, as the hook
    /// descriptors that `setup` writes say).
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python3")
    }

    /// The state root that `setup` installed into (`TEROK_ROOT`): `shield/hooks/`,
    /// `shield/nflog-reader.py`, `shield/setup.json`.
    pub fn terok_root(&self) -> PathBuf {
        self.home.join("root")
    }

    /// The installed OCI hooks: `terok-shield-hook` (nft + dnsmasq) and `terok-shield-bridge-hook`
    /// (clearance reader), each with a `createRuntime` and a `poststop` descriptor.
    pub fn hooks_dir(&self) -> PathBuf {
        self.terok_root().join("shield/hooks")
    }

    /// The installed clearance reader, `nflog-reader.py`.
    pub fn reader_script(&self) -> PathBuf {
        self.terok_root().join("shield/nflog-reader.py")
    }

    /// The directory holding the stand-in `podman` and `dig`, first on the PATH of every command.
    pub fn standin_bin(&self) -> PathBuf {
        self.home.join("bin")
    }

    /// `python -m terok_shield.cli ARGS` with this shield's environment, to adjust before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.python());
        command.args(["-m", "terok_shield.cli"]).args(args);
        self.set_env(&mut command);
        command
    }

    /// Runs `terok-shield ARGS` to completion and returns its stdout; an error carrying its
    /// stderr when it fails.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        self.run_with(self.command(args), args, None)
    }

    /// Runs an installed OCI hook (`terok-shield-hook` or `terok-shield-bridge-hook`) for `stage`
    /// with `oci_state` on stdin, as the runtime would; returns its stderr (the hooks say what
    /// they skipped there).
    pub fn hook(
        &self,
        entrypoint: &str,
        stage: &str,
        oci_state: &serde_json::Value,
    ) -> Result<String, Error> {
        let script = self.hooks_dir().join(entrypoint);
        let mut command = Command::new(self.python());
        command.arg("-I").arg(&script).arg(stage);
        self.set_env(&mut command);
        let what = format!("{} {stage}", script.display());
        let out = self.run_with(command, &[&what], Some(oci_state.to_string()))?;
        Ok(out)
    }

    /// Every command runs with this: the stand-ins first on PATH, and every path terok-shield
    /// derives from the environment inside this shield's home.
    fn set_env(&self, command: &mut Command) {
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .env(
                "PATH",
                format!("{}:{path}:/usr/sbin:/sbin", self.standin_bin().display()),
            )
            .env("HOME", self.home.join("home"))
            .env("XDG_CONFIG_HOME", self.home.join("home/.config"))
            .env("XDG_STATE_HOME", self.home.join("home/.local/state"))
            .env("XDG_DATA_HOME", self.home.join("home/.local/share"))
            .env("TEROK_ROOT", self.terok_root())
            .env("TEROK_SHIELD_CONFIG_DIR", self.home.join("config"))
            .env("SHIELD_LAB_PODMAN_DIR", self.home.join("podman"))
            // No session bus: the bridge hook then starts no reader by itself (reader_hook.py:152).
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("TEROK_SHIELD_STATE_DIR")
            .env_remove("TEROK_CONFIG_FILE")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
    }

    fn run_with(
        &self,
        mut command: Command,
        args: &[&str],
        stdin: Option<String>,
    ) -> Result<String, Error> {
        let what = format!("terok-shield {}", args.join(" "));
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Spawn, &what, e.to_string()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(|e| Error::io(format!("writing stdin of {what}"), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("waiting for {what}"), e))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = cmd::check(&[&what], out)?;
        // A hook says what it did on stderr only; a CLI command on stdout.
        Ok(if stdout.is_empty() { stderr } else { stdout })
    }

    /// Where `write_profile` puts profiles (`TEROK_SHIELD_CONFIG_DIR/profiles`).
    pub(crate) fn profiles_dir(&self) -> PathBuf {
        self.home.join("config/profiles")
    }

    /// Writes `PROFILE.txt` into the profiles directory (`TEROK_SHIELD_CONFIG_DIR/profiles`):
    /// one `+domain` line per allowed domain, as terok-shield's bundled profiles are written.
    pub(crate) fn write_profile(&self, profile: &str, domains: &[&str]) -> Result<(), Error> {
        let path = self.profiles_dir().join(format!("{profile}.txt"));
        let body: String = domains.iter().map(|d| format!("+{d}\n")).collect();
        fs::write(&path, body).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Tells the stand-in `podman` about a container: `inspect` answers `pid` and `annotations`
    /// for its name, its full id and its 12-hex short id.
    pub(crate) fn register(
        &self,
        name: &str,
        id: &str,
        pid: u32,
        annotations: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        let inspect = serde_json::json!([{
            "Id": id,
            "Name": name,
            "State": { "Pid": pid, "Status": "running" },
            "Config": { "Annotations": annotations },
        }]);
        for key in [name, id, &id[..12]] {
            let dir = self.home.join("podman").join(key);
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            let write = |file: &str, body: String| {
                let path = dir.join(file);
                fs::write(&path, body)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))
            };
            write("pid", format!("{pid}\n"))?;
            write("inspect.json", format!("{inspect}\n"))?;
        }
        Ok(())
    }

    /// Forgets a container registered with [`TerokShield::register`].
    pub(crate) fn unregister(&self, name: &str, id: &str) {
        for key in [name, id, &id[..12]] {
            let _ = fs::remove_dir_all(self.home.join("podman").join(key));
        }
    }

    fn write_standins(&self) -> Result<(), Error> {
        let dig = find_in_path("dig").ok_or_else(|| {
            Error::new(
                ErrorKind::Preflight,
                "`dig` not found (apt-get install dnsutils)",
                "",
            )
        })?;
        let scripts = [
            ("podman", PODMAN_STANDIN.to_string()),
            (
                "dig",
                DIG_STANDIN.replace("@REAL_DIG@", &dig.to_string_lossy()),
            ),
        ];
        for (name, body) in scripts {
            let path = self.standin_bin().join(name);
            fs::write(&path, body)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)))
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }
}

impl Drop for TerokShield {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.home);
    }
}

/// The stand-in `podman`: answers the calls terok-shield 0.9.0 makes, from
/// `$SHIELD_LAB_PODMAN_DIR/NAME/{pid,inspect.json}`, and refuses everything else.
const PODMAN_STANDIN: &str = r#"#!/bin/sh
# shield-lab's stand-in podman: answers only what terok-shield 0.9.0 asks (see shield-lab terok.rs).
dir="${SHIELD_LAB_PODMAN_DIR:?}"
case "$1" in
  info)
    echo '{"host":{"rootlessNetworkCmd":"pasta","pasta":{"executable":"/usr/bin/pasta"}},"version":{"Version":"5.4.0"}}' ;;
  version)
    echo 5.4.0 ;;
  unshare)
    shift; exec "$@" ;;
  inspect)
    shift; fmt=json; name=
    while [ $# -gt 0 ]; do
      case "$1" in
        --format=*) fmt="${1#--format=}" ;;
        --format|-f) fmt="$2"; shift ;;
        --) ;;
        *) name="$1" ;;
      esac
      shift
    done
    case "$name" in ''|.*|*/*) echo "Error: bad container name" >&2; exit 125 ;; esac
    if [ ! -d "$dir/$name" ]; then echo "Error: no such container $name" >&2; exit 125; fi
    case "$fmt" in
      json) cat "$dir/$name/inspect.json" ;;
      '{{.State.Pid}}') cat "$dir/$name/pid" ;;
      *) echo "stand-in podman: unsupported inspect format: $fmt" >&2; exit 125 ;;
    esac ;;
  *)
    echo "stand-in podman: unsupported call: podman $*" >&2; exit 125 ;;
esac
"#;

/// The stand-in `dig`: when a container says where its fake internet is, ask that (inside its
/// namespace); otherwise the real `dig`.
const DIG_STANDIN: &str = r#"#!/bin/sh
# shield-lab's stand-in dig: the host resolver of a lab host is the container's fake upstream.
if [ -n "$SHIELD_LAB_DIG_NETNS" ]; then
  exec ip netns exec "$SHIELD_LAB_DIG_NETNS" "@REAL_DIG@" "@$SHIELD_LAB_DIG_SERVER" +time=1 +tries=1 "$@"
fi
exec "@REAL_DIG@" "$@"
"#;

/// A Python >= 3.12 (terok-shield 0.9.0 says `Requires-Python >=3.12,<4.0`): `$SHIELD_LAB_PYTHON`,
/// else `python3.13`/`python3.12` (and later) on PATH, pyenv's versions, `/usr/bin/python3.1x`,
/// and `python3` on PATH; each is asked for its version, so a pyenv shim for a version that is
/// not selected does not count.
pub fn find_python() -> Result<PathBuf, Error> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("SHIELD_LAB_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    for minor in (12..=19).rev() {
        if let Some(p) = find_in_path(&format!("python3.{minor}")) {
            candidates.push(p);
        }
    }
    let pyenv_root = std::env::var_os("PYENV_ROOT").map_or_else(
        || {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".pyenv")
        },
        PathBuf::from,
    );
    let mut versions: Vec<PathBuf> = fs::read_dir(pyenv_root.join("versions"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin/python3"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.reverse();
    candidates.extend(versions);
    for minor in (12..=19).rev() {
        candidates.push(PathBuf::from(format!("/usr/bin/python3.{minor}")));
    }
    candidates.extend(find_in_path("python3"));
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    candidates
        .into_iter()
        .find(|p| is_python_312_or_later(p))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Preflight,
                "terok-shield 0.9.0 needs Python >= 3.12 and none was found \
                 (install python3.12 or later, e.g. `pyenv install 3.12`, \
                 or point SHIELD_LAB_PYTHON at one)",
                format!("tried {}", tried.join(", ")),
            )
        })
}

fn is_python_312_or_later(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import sys; print(sys.version_info >= (3, 12))"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.starts_with(b"True"))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The installed version of terok-shield in the venv at `venv`, if any.
fn installed_version(venv: &Path) -> Option<String> {
    let out = Command::new(venv.join("bin/python3"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('terok-shield'))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Makes sure `venv` holds terok-shield [`TEROK_SHIELD_VERSION`]. A missing venv is built beside
/// it under a temporary name and renamed into place, so tests racing to create it never see a
/// half-made one (whoever renames second throws its copy away). The venv is only ever run as
/// `venv/bin/python3 -m ...`, which survives the rename (its console scripts would not).
fn ensure_venv(venv: &Path) -> Result<(), Error> {
    if installed_version(venv).as_deref() == Some(TEROK_SHIELD_VERSION) {
        return Ok(());
    }
    let python = find_python()?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = venv.with_file_name(format!(
        "{}.tmp-{}-{n}",
        venv.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    if let Some(parent) = tmp.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    let tmp_s = tmp.to_string_lossy().into_owned();
    let py = python.to_string_lossy().into_owned();
    let pinned = format!("terok-shield=={TEROK_SHIELD_VERSION}");
    let tmp_py = tmp.join("bin/python3").to_string_lossy().into_owned();
    let built = cmd::run(&[&py, "-m", "venv", &tmp_s]).and_then(|_| {
        cmd::run(&[
            &tmp_py,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &pinned,
        ])
        .map_err(|e| {
            e.within(
                "installing terok-shield from PyPI (needs network access to pypi.org)",
                "",
            )
        })
    });
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Some(old) = installed_version(venv) {
        // A venv of another version is in the way: replace it.
        if old != TEROK_SHIELD_VERSION {
            let _ = fs::remove_dir_all(venv);
        }
    } else if venv.exists() {
        let _ = fs::remove_dir_all(venv);
    }
    if fs::rename(&tmp, venv).is_err() {
        // Someone else renamed theirs first; use it.
        let _ = fs::remove_dir_all(&tmp);
    }
    match installed_version(venv) {
        Some(v) if v == TEROK_SHIELD_VERSION => Ok(()),
        other => Err(Error::new(
            ErrorKind::Command,
            format!("terok-shield venv at {}", venv.display()),
            format!("holds version {other:?}, expected {TEROK_SHIELD_VERSION}"),
        )),
    }
}
