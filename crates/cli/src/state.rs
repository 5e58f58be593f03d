//! The per-container state directory: its DNS tier and the paths of the files we follow.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The DNS tier a container was started with (`dns.tier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// A per-container dnsmasq that updates the nft allow sets live (`dnsmasq-live`, retired `dnsmasq`).
    DnsmasqLive,
    /// A per-container dnsmasq with a static set (`dnsmasq-static`).
    DnsmasqStatic,
    /// Addresses resolved once at start (`lookup`, retired `dig`): no dnsmasq.
    Lookup,
    /// Addresses resolved once through getent: no dnsmasq.
    Getent,
}

impl Tier {
    /// Reads the tier name, accepting the retired names. `None` for anything unknown.
    pub fn parse(text: &str) -> Option<Tier> {
        match text.trim() {
            "dnsmasq-live" | "dnsmasq" => Some(Tier::DnsmasqLive),
            "dnsmasq-static" => Some(Tier::DnsmasqStatic),
            "lookup" | "dig" => Some(Tier::Lookup),
            "getent" => Some(Tier::Getent),
            _ => None,
        }
    }

    /// Whether the container runs a dnsmasq, i.e. whether there is a query log to follow.
    pub fn has_dnsmasq(self) -> bool {
        matches!(self, Tier::DnsmasqLive | Tier::DnsmasqStatic)
    }
}

/// Why the state directory cannot be used (exit 1).
#[derive(Debug)]
pub enum StateError {
    /// `dns.tier` missing, unreadable or unknown.
    NoTier(PathBuf, Option<io::Error>, Option<String>),
    /// The directory itself cannot be read.
    Unreadable(PathBuf, io::Error),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::NoTier(path, err, content) => {
                write!(
                    f,
                    "DNS tier not set — container may not be shielded ({}: ",
                    path.display()
                )?;
                match (err, content) {
                    (Some(err), _) => write!(f, "{err})"),
                    (None, Some(content)) => {
                        write!(f, "unknown tier {:?})", shield_event::sanitize(content))
                    }
                    (None, None) => write!(f, "empty)"),
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
    /// The directory.
    pub dir: PathBuf,
    /// Its DNS tier.
    pub tier: Tier,
}

impl StateDir {
    /// Checks the directory is readable and reads its tier.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        fs::read_dir(dir).map_err(|e| StateError::Unreadable(dir.to_path_buf(), e))?;
        let tier_path = dir.join("dns.tier");
        let text = fs::read_to_string(&tier_path)
            .map_err(|e| StateError::NoTier(tier_path.clone(), Some(e), None))?;
        let tier = Tier::parse(&text).ok_or_else(|| {
            let trimmed = text.trim();
            StateError::NoTier(
                tier_path,
                None,
                (!trimmed.is_empty()).then(|| trimmed.to_string()),
            )
        })?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            tier,
        })
    }

    /// The dnsmasq query log.
    pub fn dnsmasq_log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// The audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// The default container name: the directory's basename.
    pub fn default_container(&self) -> String {
        let canonical = fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        canonical
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Creates `path` empty when it does not exist, as the reference does, so writers and we agree
/// on the file from the start. Failing to create it is not fatal: the follower waits for it.
pub fn ensure_file(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_retired_names() {
        assert_eq!(Tier::parse("dnsmasq-live\n"), Some(Tier::DnsmasqLive));
        assert_eq!(Tier::parse("dnsmasq"), Some(Tier::DnsmasqLive));
        assert_eq!(Tier::parse("dnsmasq-static"), Some(Tier::DnsmasqStatic));
        assert_eq!(Tier::parse(" lookup "), Some(Tier::Lookup));
        assert_eq!(Tier::parse("dig"), Some(Tier::Lookup));
        assert_eq!(Tier::parse("getent"), Some(Tier::Getent));
        assert_eq!(Tier::parse("bind9"), None);
        assert_eq!(Tier::parse(""), None);
        assert!(Tier::DnsmasqStatic.has_dnsmasq());
        assert!(!Tier::Getent.has_dnsmasq());
    }
}
