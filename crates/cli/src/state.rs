//! The per-container state directory: its DNS tier and the paths of the files we follow.

use std::fs;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use shield_tail::{open_beneath, Dir, Escape, Open};

/// The longest `dns.tier` read: a tier name is a dozen bytes, and whoever can write the state
/// directory must not make us read a file of any size.
const MAX_TIER: u64 = 4096;

/// The DNS tier a container was started with (`dns.tier`; `docs/CONTRACT.md` §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsTier {
    /// A per-container dnsmasq that updates the nft allow sets live (`dnsmasq-live`, retired `dnsmasq`).
    DnsmasqLive,
    /// A per-container dnsmasq with a static set (`dnsmasq-static`).
    DnsmasqStatic,
    /// Addresses resolved once at start (`lookup`, retired `dig`): no dnsmasq.
    Lookup,
    /// Addresses resolved once through getent: no dnsmasq.
    Getent,
}

impl DnsTier {
    /// Reads the tier name, accepting the retired names. `None` for anything unknown.
    pub fn parse(text: &str) -> Option<DnsTier> {
        match text.trim() {
            "dnsmasq-live" | "dnsmasq" => Some(DnsTier::DnsmasqLive),
            "dnsmasq-static" => Some(DnsTier::DnsmasqStatic),
            "lookup" | "dig" => Some(DnsTier::Lookup),
            "getent" => Some(DnsTier::Getent),
            _ => None,
        }
    }

    /// Its name in `dns.tier`.
    pub fn name(self) -> &'static str {
        match self {
            DnsTier::DnsmasqLive => "dnsmasq-live",
            DnsTier::DnsmasqStatic => "dnsmasq-static",
            DnsTier::Lookup => "lookup",
            DnsTier::Getent => "getent",
        }
    }

    /// Whether the container runs a dnsmasq, i.e. whether there is a query log to follow.
    pub fn has_dnsmasq(self) -> bool {
        matches!(self, DnsTier::DnsmasqLive | DnsTier::DnsmasqStatic)
    }
}

/// Why the state directory cannot be used (exit 1).
#[derive(Debug)]
pub enum StateError {
    /// `dns.tier` does not name a tier: the container may not be shielded.
    NoTier {
        /// The `dns.tier` file.
        path: PathBuf,
        /// What is wrong with it.
        problem: TierProblem,
    },
    /// The directory itself cannot be read.
    Unreadable(PathBuf, io::Error),
}

/// What is wrong with a `dns.tier` file.
#[derive(Debug)]
pub enum TierProblem {
    /// It cannot be read (missing, permissions, ...).
    Unreadable(io::Error),
    /// It holds nothing but white space.
    Empty,
    /// It names no tier shield-watch knows (the trimmed content).
    Unknown(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::NoTier { path, problem } => {
                write!(
                    f,
                    "DNS tier not set — container may not be shielded ({}: ",
                    path.display()
                )?;
                match problem {
                    TierProblem::Unreadable(err) if Escape::of(err).is_some() => write!(
                        f,
                        "refused: a symlink (or `..`) leading out of the state directory)"
                    ),
                    TierProblem::Unreadable(err) => write!(f, "{err})"),
                    TierProblem::Unknown(content) => {
                        write!(f, "unknown tier {:?})", shield_event::sanitize(content))
                    }
                    TierProblem::Empty => write!(f, "empty)"),
                }
            }
            StateError::Unreadable(path, err) => {
                write!(f, "cannot read state directory {}: {err}", path.display())
            }
        }
    }
}

/// The state directory and what it says.
#[derive(Clone, Debug)]
pub struct StateDir {
    /// The directory, held open: the files in it are opened beneath it, never through a
    /// symlink leading out of it, and never through its path again.
    pub dir: Dir,
    /// Its DNS tier.
    pub tier: DnsTier,
}

impl StateDir {
    /// Checks the directory is readable and reads its tier. The path may go through symlinks;
    /// `dns.tier` may not lead out of the directory.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        let dir = Dir::open(dir).map_err(|e| StateError::Unreadable(dir.to_path_buf(), e))?;
        StateDir::read(dir)
    }

    /// Reads the tier of a directory already open.
    pub fn read(dir: Dir) -> Result<StateDir, StateError> {
        let path = dir.path().join("dns.tier");
        let text = match read_tier(&dir) {
            Ok(text) => text,
            Err(err) => {
                let problem = TierProblem::Unreadable(err);
                return Err(StateError::NoTier { path, problem });
            }
        };
        let Some(tier) = DnsTier::parse(&text) else {
            let problem = match text.trim() {
                "" => TierProblem::Empty,
                trimmed => TierProblem::Unknown(trimmed.to_string()),
            };
            return Err(StateError::NoTier { path, problem });
        };
        Ok(StateDir { dir, tier })
    }

    /// Creates `name` in the directory, empty, when it does not exist, as the reference does,
    /// so writers and we agree on the file from the start. Never through a symlink leading out
    /// of the directory (root would create a file wherever it points): that is an error
    /// carrying an [`Escape`].
    pub fn ensure_file(&self, name: &str) -> io::Result<()> {
        self.dir.open_file(name, Open::CreateAppend).map(drop)
    }

    /// The default container name: the directory's basename.
    pub fn default_container(&self) -> String {
        let path = self.dir.path();
        let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        canonical
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// `dns.tier`, opened beneath the state directory: a regular file of at most [`MAX_TIER`] bytes.
fn read_tier(dir: &Dir) -> io::Result<String> {
    let file = open_beneath(dir, "dns.tier", Open::Read)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_TIER).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_retired_names() {
        assert_eq!(DnsTier::parse("dnsmasq-live\n"), Some(DnsTier::DnsmasqLive));
        assert_eq!(DnsTier::parse("dnsmasq"), Some(DnsTier::DnsmasqLive));
        assert_eq!(
            DnsTier::parse("dnsmasq-static"),
            Some(DnsTier::DnsmasqStatic)
        );
        assert_eq!(DnsTier::parse(" lookup "), Some(DnsTier::Lookup));
        assert_eq!(DnsTier::parse("dig"), Some(DnsTier::Lookup));
        assert_eq!(DnsTier::parse("getent"), Some(DnsTier::Getent));
        assert_eq!(DnsTier::parse("bind9"), None);
        assert_eq!(DnsTier::parse(""), None);
        assert!(DnsTier::DnsmasqStatic.has_dnsmasq());
        assert!(!DnsTier::Getent.has_dnsmasq());
    }

    #[test]
    fn a_missing_empty_or_unknown_tier_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let message = |content: Option<&str>| {
            let path = dir.path().join("dns.tier");
            match content {
                Some(text) => fs::write(&path, text).unwrap(),
                None => {
                    let _ = fs::remove_file(&path);
                }
            }
            let err = StateDir::open(dir.path()).unwrap_err().to_string();
            let prefix = format!(
                "DNS tier not set — container may not be shielded ({}: ",
                path.display()
            );
            err.strip_prefix(&prefix).unwrap_or(&err).to_string()
        };
        assert!(
            message(None).starts_with("No such file"),
            "{}",
            message(None)
        );
        assert_eq!(message(Some(" \n")), "empty)");
        assert_eq!(message(Some("bind9\x1b\n")), "unknown tier \"bind9 \")");
    }
}
