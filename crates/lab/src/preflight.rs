//! Checking that this machine can run the lab at all, with an answer a person can act on.

use std::path::Path;

use crate::error::{Error, ErrorKind};

/// The tools the lab runs, and the Debian package that provides each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("dnsmasq", "dnsmasq-base"),
    ("dig", "dnsutils"),
    ("logrotate", "logrotate"),
];

/// Checks that we run as root and that `ip`, `nft`, `dnsmasq`, `dig` and `logrotate` are on `PATH`.
///
/// The error names exactly what is missing and the apt packages that provide it, so a test that
/// cannot run says why instead of failing somewhere deep in a namespace setup.
pub fn preflight() -> Result<(), Error> {
    let root = rustix::process::geteuid().is_root();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<_> = std::env::split_paths(&path).collect();
    // Tools in sbin are found even when a minimal PATH leaves sbin out.
    let extra = [Path::new("/usr/sbin"), Path::new("/sbin")];
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(tool, _)| {
            !dirs
                .iter()
                .map(|d| d.as_path())
                .chain(extra)
                .any(|d| is_executable(&d.join(tool)))
        })
        .collect();
    describe_problems(root, &missing)
        .map_or(Ok(()), |msg| Err(Error::new(ErrorKind::Preflight, msg, "")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The message for what is wrong, or `None` when nothing is.
fn describe_problems(root: bool, missing: &[(&str, &str)]) -> Option<String> {
    let mut problems = Vec::new();
    if !root {
        problems
            .push("not running as root (network namespaces, nft and dnsmasq need it)".to_string());
    }
    if !missing.is_empty() {
        let tools: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
        let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        packages.dedup();
        problems.push(format!(
            "missing {} (install with `apt-get install {}`)",
            tools.join(", "),
            packages.join(" ")
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_tools_and_their_packages() {
        let msg = describe_problems(true, &[("nft", "nftables"), ("dig", "dnsutils")]).unwrap();
        assert_eq!(
            msg,
            "missing nft, dig (install with `apt-get install nftables dnsutils`)"
        );
    }

    #[test]
    fn says_when_not_root() {
        let msg = describe_problems(false, &[]).unwrap();
        assert!(msg.starts_with("not running as root"), "{msg}");
        assert_eq!(describe_problems(true, &[]), None);
    }
}
