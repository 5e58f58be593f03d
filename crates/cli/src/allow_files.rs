//! Reading a state directory's allow-list files: beneath the directory only, bounded in size,
//! never blocking. shield-dnsmasq builds the list from the bytes read here.
//!
//! The files are written by whoever owns the state directory, which shield-watch (as root) must
//! not serve: a symlink out of the directory is refused (`shield_tail::open_beneath`), a FIFO
//! or device in place of a file is an error rather than a read that blocks forever (every open
//! is `O_NONBLOCK`, and only a regular file is read), and a file past [`MAX_FILE_BYTES`] is an
//! error rather than a read that takes the host's memory (a sparse file of any apparent size
//! costs nothing to make).
//!
//! Every error means the list could not be read; the caller then counts every lookup as
//! blocked, which errs towards reporting more.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use shield_dnsmasq::{AllowList, Loaded, PolicyTier};
use shield_tail::{Dir, Escape, NotOwned, Open};

/// The most one allow-list file may hold: 16 MiB. terok-shield's lists are kilobytes; a file
/// this large is a mistake or an attack, and reading it would cost that much memory on every
/// reload.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// What kind of failure a [`LoadError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// A file or directory of the allow-list exists but could not be read (or is not a regular
    /// file).
    Read,
    /// `policy` exists in the state directory but is not a directory.
    NotADirectory,
    /// A file or directory of the allow-list is a symlink (or holds a `..`) leading out of the
    /// state directory, or a file that does not belong in it (another user's, or a hard link
    /// to root's: [`shield_tail::NotOwned`]): not read, so that root does not read another
    /// file for whoever can write the state directory.
    Refused,
    /// A file holds more than [`MAX_FILE_BYTES`].
    TooLarge,
}

/// The allow-list could not be loaded. Its `Display` is the whole message, the OS error
/// included (so `source()` gives nothing more).
#[derive(Debug)]
pub struct LoadError {
    kind: LoadErrorKind,
    path: PathBuf,
    cause: Option<io::Error>,
}

impl LoadError {
    fn new(kind: LoadErrorKind, path: PathBuf, cause: Option<io::Error>) -> LoadError {
        LoadError { kind, path, cause }
    }

    /// The kind of failure.
    #[cfg_attr(not(test), expect(dead_code, reason = "for callers that branch on it"))]
    pub fn kind(&self) -> LoadErrorKind {
        self.kind
    }

    /// The file or directory that could not be read.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "for callers that name the file")
    )]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.kind {
            LoadErrorKind::Read => match &self.cause {
                Some(cause) => write!(f, "cannot read {path}: {cause}"),
                None => write!(f, "cannot read {path}"),
            },
            LoadErrorKind::NotADirectory => write!(f, "{path} is not a directory"),
            LoadErrorKind::Refused => match self.cause.as_ref().and_then(NotOwned::of) {
                Some(not_owned) => f.write_str(&not_owned.at(&self.path)),
                None => write!(
                    f,
                    "refused {path}: a symlink (or `..`) leading out of the state directory"
                ),
            },
            LoadErrorKind::TooLarge => write!(
                f,
                "cannot read {path}: larger than {} MiB, the most an allow-list file may hold",
                MAX_FILE_BYTES >> 20
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads the allow-list of a state directory. The policy directory is used when `policy/` is a
/// directory, the domain files otherwise. Missing files are empty; a file that exists but
/// cannot be read is an error.
///
/// Files are opened beneath the directory ([`shield_tail::open_beneath`]): a symlink (or `..`)
/// leading out of it is a [`LoadErrorKind::Refused`] error, like an unreadable file, never a
/// silent skip; a symlink that stays inside is followed. Only regular files are read, each up
/// to [`MAX_FILE_BYTES`]. The directory is held open ([`Dir`]): never looked up by path.
pub fn load(dir: &Dir) -> Result<Loaded, LoadError> {
    let state_dir = dir.path();
    let policy = state_dir.join(AllowList::POLICY_DIR);
    // `O_DIRECTORY` fails at once on anything but a directory, a FIFO included.
    match shield_tail::open_beneath(dir, AllowList::POLICY_DIR, Open::Directory) {
        Ok(_) => {
            let mut tiers = Vec::with_capacity(PolicyTier::ALL.len());
            for tier in PolicyTier::ALL {
                let name = Path::new(AllowList::POLICY_DIR).join(tier.file_name());
                tiers.push((tier, read_optional(dir, state_dir, &name)?));
            }
            Ok(AllowList::from_policy(&tiers))
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(LoadError::new(LoadErrorKind::NotADirectory, policy, None))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let [profile, live, denied] = AllowList::DOMAIN_FILES;
            Ok(AllowList::from_domain_files(
                read_optional(dir, state_dir, Path::new(profile))?,
                read_optional(dir, state_dir, Path::new(live))?,
                read_optional(dir, state_dir, Path::new(denied))?,
            ))
        }
        Err(e) => Err(open_error(policy, e)),
    }
}

/// Reads `name` beneath `dir` (the state directory at `state_dir`); a missing file is empty.
/// Anything but a regular file (a directory, a FIFO, a device) is a read error, and so is a
/// file past [`MAX_FILE_BYTES`].
fn read_optional(dir: &Dir, state_dir: &Path, name: &Path) -> Result<Vec<u8>, LoadError> {
    let path = state_dir.join(name);
    // `Open::Read` is `O_NONBLOCK`: opening a FIFO returns at once instead of waiting for a
    // writer, and the type check below refuses it.
    let file = match shield_tail::open_beneath(dir, name, Open::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(open_error(path, e)),
    };
    let read_error = |e| LoadError::new(LoadErrorKind::Read, path.clone(), Some(e));
    let meta = file.metadata().map_err(read_error)?;
    if meta.is_dir() {
        return Err(read_error(io::Error::from(io::ErrorKind::IsADirectory)));
    }
    if !meta.is_file() {
        return Err(read_error(io::Error::other("not a regular file")));
    }
    // The size says at once whether the file is too large; the bounded read below still holds
    // when it grows while we read.
    if meta.len() > MAX_FILE_BYTES {
        return Err(LoadError::new(LoadErrorKind::TooLarge, path, None));
    }
    match read_capped(file, MAX_FILE_BYTES, meta.len()) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(LoadError::new(LoadErrorKind::TooLarge, path, None)),
        Err(e) => Err(read_error(e)),
    }
}

/// Reads at most `cap` bytes of `reader`: `None` when it holds more. Never holds more than
/// `cap + 1` bytes of it. `expected` sizes the first allocation (at most `cap`).
fn read_capped(reader: impl Read, cap: u64, expected: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::with_capacity(expected.min(cap) as usize + 1);
    reader.take(cap + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= cap).then_some(bytes))
}

/// A failed open: a refusal by [`shield_tail::open_beneath`] or a plain read error.
fn open_error(path: PathBuf, e: io::Error) -> LoadError {
    let kind = if Escape::of(&e).is_some() || NotOwned::of(&e).is_some() {
        LoadErrorKind::Refused
    } else {
        LoadErrorKind::Read
    };
    LoadError::new(kind, path, Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield_dnsmasq::Layout;
    use std::fs::File;
    use std::time::Duration;

    fn check(list: &AllowList, allowed: &[&str], blocked: &[&str]) {
        for n in allowed {
            assert!(list.allows(n.as_bytes()), "{n} should be allowed");
        }
        for n in blocked {
            assert!(!list.allows(n.as_bytes()), "{n} should be blocked");
        }
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o600),
            0,
        )
        .unwrap();
    }

    /// Runs `load` on another thread and fails the test, rather than hanging it, when it does
    /// not return within five seconds.
    /// Loads the list of the directory at `path` (opening it is part of loading it).
    fn load(path: &Path) -> Result<Loaded, LoadError> {
        let dir = Dir::open(path)
            .map_err(|e| LoadError::new(LoadErrorKind::Read, path.to_path_buf(), Some(e)))?;
        super::load(&dir)
    }

    fn load_within_5s(dir: &Path) -> Result<Loaded, LoadError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load(&dir));
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("load blocked (a FIFO opened without O_NONBLOCK?)")
    }

    #[test]
    fn load_detects_layouts_and_reports_unreadable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing there yet: domain files, empty.
        let l = load(dir.path()).unwrap();
        assert_eq!(l.list.layout(), Layout::DomainFiles);
        assert!(l.list.is_empty());
        std::fs::write(
            dir.path().join("profile.domains"),
            "github.com\nnot valid\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("denied.domains"), "github.com\n").unwrap();
        std::fs::write(dir.path().join("live.domains"), "pypi.org\n").unwrap();
        let l = load(dir.path()).unwrap();
        check(&l.list, &["pypi.org"], &["github.com"]);
        assert_eq!(
            l.warnings,
            ["profile.domains:2: skipping `not valid`: not a valid domain"]
        );

        std::fs::create_dir(dir.path().join("policy")).unwrap();
        std::fs::write(dir.path().join("policy/30-provider-allow"), "+github.com\n").unwrap();
        let l = load(dir.path()).unwrap();
        assert_eq!(l.list.layout(), Layout::PolicyDir);
        check(&l.list, &["api.github.com"], &["pypi.org"]);

        // A tier that is a directory cannot be read: an error naming the file.
        std::fs::create_dir(dir.path().join("policy/live")).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::Read);
        assert!(err.to_string().contains("policy/live"), "{err}");

        // Not a regular file either: a FIFO would block a plain open forever.
        std::fs::remove_dir(dir.path().join("policy/live")).unwrap();
        mkfifo(&dir.path().join("policy/live"));
        let err = load_within_5s(dir.path()).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::Read);
        assert!(err.to_string().contains("not a regular file"), "{err}");

        let missing = dir.path().join("nope");
        let err = load(&missing).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::Read);
    }

    #[test]
    fn a_fifo_in_place_of_a_file_or_of_policy_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join("profile.domains"));
        let err = load_within_5s(dir.path()).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::Read, "{err}");
        assert_eq!(err.path(), dir.path().join("profile.domains"));
        assert!(err.to_string().contains("not a regular file"), "{err}");

        std::fs::remove_file(dir.path().join("profile.domains")).unwrap();
        mkfifo(&dir.path().join("policy"));
        let err = load_within_5s(dir.path()).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::NotADirectory, "{err}");
        assert_eq!(err.path(), dir.path().join("policy"));
    }

    #[test]
    fn a_file_past_the_cap_is_an_error_one_at_the_cap_loads() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile.domains");
        // Sparse: a line of NULs, which is no valid domain.
        File::create(&profile)
            .unwrap()
            .set_len(MAX_FILE_BYTES)
            .unwrap();
        let l = load(dir.path()).unwrap();
        assert!(l.list.is_empty());
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);

        File::options()
            .write(true)
            .open(&profile)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::TooLarge);
        assert_eq!(err.path(), profile);
        assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
    }

    #[test]
    fn a_growing_file_is_cut_at_the_cap() {
        // A reader that never ends stands for a file that grows while it is read.
        assert!(read_capped(io::repeat(b'a'), 1000, 0).unwrap().is_none());
        assert_eq!(
            read_capped(&b"0123456789"[..], 10, 10).unwrap().as_deref(),
            Some(&b"0123456789"[..])
        );
        assert!(read_capped(&b"0123456789"[..], 9, 0).unwrap().is_none());
    }

    /// Set by [`a_64_gib_sparse_file_loads_in_bounded_memory`] for the child it starts.
    const SPARSE_DIR: &str = "SHIELD_WATCH_TEST_SPARSE_DIR";

    /// A 64 GiB sparse `profile.domains` costs nothing on disk; reading it whole would take
    /// 64 GiB of memory. The load runs in a child process (this test binary, running only
    /// [`sparse_child`]), so that its peak resident size (`VmHWM`) is its own, and under a
    /// 1 GiB address-space limit, so that a load that does read the whole file fails at once
    /// instead of taking the machine's memory.
    #[test]
    fn a_64_gib_sparse_file_loads_in_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        File::create(dir.path().join("profile.domains"))
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "allow_files::tests::sparse_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SPARSE_DIR, dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "child: {}\n{stdout}\n{stderr}",
            out.status
        );
        let hwm_kib: u64 = stdout
            .lines()
            .find_map(|l| l.split_once("VmHWM_KiB=").map(|(_, kib)| kib.trim()))
            .unwrap_or_else(|| panic!("no VmHWM from the child:\n{stdout}\n{stderr}"))
            .parse()
            .unwrap();
        assert!(
            hwm_kib < 48 << 10,
            "peak resident size {hwm_kib} KiB while loading a 64 GiB file"
        );
    }

    /// The child of [`a_64_gib_sparse_file_loads_in_bounded_memory`]; does nothing on its own.
    #[test]
    #[ignore = "run by a_64_gib_sparse_file_loads_in_bounded_memory"]
    fn sparse_child() {
        let Some(dir) = std::env::var_os(SPARSE_DIR) else {
            return;
        };
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = Rlimit {
            current: Some(1 << 30),
            maximum: getrlimit(Resource::As).maximum,
        };
        setrlimit(Resource::As, limit).unwrap();
        let err = load(Path::new(&dir)).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::TooLarge, "{err}");
        assert!(err.to_string().contains("profile.domains"), "{err}");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .unwrap()
            .trim();
        println!("VmHWM_KiB={hwm}");
    }

    #[test]
    fn symlinks_out_of_the_state_dir_are_refused_not_read() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        // What the symlinks point at: were it read, github.com would be allowed.
        std::fs::write(tmp.path().join("secret"), "github.com\n").unwrap();
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        std::fs::write(
            tmp.path().join("elsewhere/30-provider-allow"),
            "+github.com\n",
        )
        .unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        // The state dir path itself may be a symlink.
        symlink(&state, tmp.path().join("link")).unwrap();
        let via_link = tmp.path().join("link");

        // A symlink that stays inside is followed.
        std::fs::write(state.join("real.domains"), "pypi.org\n").unwrap();
        symlink("real.domains", state.join("profile.domains")).unwrap();
        let l = load(&via_link).unwrap();
        check(&l.list, &["pypi.org"], &["github.com"]);

        for (name, target) in [
            ("live.domains", tmp.path().join("secret")),
            ("live.domains", PathBuf::from("../secret")),
        ] {
            let _ = std::fs::remove_file(state.join(name));
            symlink(&target, state.join(name)).unwrap();
            let err = load(&via_link).unwrap_err();
            assert_eq!(err.kind(), LoadErrorKind::Refused, "{err}");
            assert_eq!(err.path(), via_link.join(name));
            assert!(err.to_string().contains("live.domains"), "{err}");
        }
        std::fs::remove_file(state.join("live.domains")).unwrap();

        // Layout B: the policy directory itself, and a tier file in it.
        symlink(tmp.path().join("elsewhere"), state.join("policy")).unwrap();
        let err = load(&via_link).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::Refused, "{err}");
        assert_eq!(err.path(), via_link.join("policy"));
        std::fs::remove_file(state.join("policy")).unwrap();
        std::fs::create_dir(state.join("policy")).unwrap();
        symlink(
            "../../elsewhere/30-provider-allow",
            state.join("policy/30-provider-allow"),
        )
        .unwrap();
        let err = load(&via_link).unwrap_err();
        assert_eq!(err.kind(), LoadErrorKind::Refused, "{err}");
        assert_eq!(err.path(), via_link.join("policy/30-provider-allow"));
    }
}
