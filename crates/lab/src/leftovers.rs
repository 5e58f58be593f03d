//! Finding what the lab left behind: namespaces, dnsmasq processes, config dirs, nft tables.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::cmd;
use crate::dnsmasq::CONF_ROOT;

/// Everything the lab created under `prefix` that still exists, described for a person:
/// network namespaces named `prefix-*` (with any nft tables inside them), dnsmasq processes
/// whose config lives in a `prefix-*` lab directory, other processes running something from such
/// a directory (terok-shield's clearance reader), and such directories. Empty means clean.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mine = |name: &str| name.starts_with(prefix) && name[prefix.len()..].starts_with('-');
    let mut found = Vec::new();
    for name in names_in(Path::new("/run/netns"))
        .into_iter()
        .filter(|n| mine(n))
    {
        found.push(format!("netns {name}"));
        let tables =
            cmd::run(&["ip", "netns", "exec", &name, "nft", "list", "tables"]).unwrap_or_default();
        found.extend(
            tables
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|t| format!("nft {} in netns {name}", t.trim())),
        );
    }
    let lab_conf = format!("--conf-file={CONF_ROOT}/");
    let lab_home = format!("{CONF_ROOT}/{prefix}-");
    for pid in names_in(Path::new("/proc"))
        .into_iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_dnsmasq = argv
            .first()
            .is_some_and(|a| a == "dnsmasq" || a.ends_with("/dnsmasq"));
        let conf = argv.iter().find_map(|a| a.strip_prefix(&lab_conf));
        if let (true, Some(conf)) = (is_dnsmasq, conf) {
            if mine(conf) {
                found.push(format!("dnsmasq pid {pid} ({CONF_ROOT}/{conf})"));
            }
        } else if argv.iter().any(|a| a.contains(&lab_home)) {
            // A process running something from a lab home, e.g. terok-shield's nflog-reader.py.
            found.push(format!("process {pid} ({})", argv.join(" ")));
        }
    }
    for dir in names_in(Path::new(CONF_ROOT))
        .into_iter()
        .filter(|n| mine(n))
    {
        found.push(format!("dir {CONF_ROOT}/{dir}"));
    }
    found
}

/// terok-shield's clearance reader, as its argv names it.
const READER: &str = "nflog-reader.py";

/// Every network namespace, dnsmasq process, terok-shield clearance reader and lab directory on the machine right now, whoever
/// made them. `cargo xtask ci` takes one before and one after the tests: what is new was left
/// behind, whatever prefix (or none) the test used.
pub fn snapshot() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    found.extend(
        names_in(Path::new("/run/netns"))
            .into_iter()
            .map(|n| format!("netns {n}")),
    );
    found.extend(
        names_in(Path::new(CONF_ROOT))
            .into_iter()
            .map(|n| format!("dir {CONF_ROOT}/{n}")),
    );
    for pid in names_in(Path::new("/proc"))
        .into_iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim() == "dnsmasq" {
            found.insert(format!("dnsmasq pid {pid}"));
        } else if fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.windows(READER.len()).any(|w| w == READER.as_bytes()))
        {
            found.insert(format!("nflog-reader pid {pid}"));
        }
    }
    found
}

fn names_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
