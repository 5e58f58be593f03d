//! Writing a container's state directory as the shield leaves it: tier, allow list, audit log.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

/// Writes the two state-directory layouts (`docs/CONTRACT.md` §2) and the shield's audit entries.
///
/// Both layouts also start `audit.jsonl` with the entries the shield writes when it sets a
/// container up: one `setup`, then one `allowed` per allowed and one `denied` per denied target.
/// `dnsmasq.log` is left alone (dnsmasq, or the watcher, creates it).
#[derive(Debug)]
pub struct StateDir;

impl StateDir {
    /// The domain-files layout (terok-shield v14, "layout A"): `dns.tier`, `profile.domains`
    /// (the allowed domains), an empty `live.domains`, and `denied.domains`, one domain a line.
    pub fn domain_files(
        dir: &Path,
        tier: &str,
        allowed: &[&str],
        denied: &[&str],
    ) -> io::Result<()> {
        write_tier(dir, tier)?;
        fs::write(dir.join("profile.domains"), lines(allowed))?;
        fs::write(dir.join("live.domains"), "")?;
        fs::write(dir.join("denied.domains"), lines(denied))?;
        let entries: Vec<(&str, &str)> = allowed
            .iter()
            .map(|d| ("allowed", *d))
            .chain(denied.iter().map(|d| ("denied", *d)))
            .collect();
        write_setup_audit(dir, tier, &entries)
    }

    /// The policy-directory layout (terok-shield v15, "layout B"): `dns.tier` and
    /// `policy/<file>` for each `(file, content)` (e.g. `("40-project-allow", "+github.com\n")`),
    /// written verbatim.
    pub fn policy_dir(dir: &Path, tier: &str, tiers: &[(&str, &str)]) -> io::Result<()> {
        write_tier(dir, tier)?;
        let policy = dir.join("policy");
        fs::create_dir_all(&policy)?;
        let mut entries = Vec::new();
        for (file, content) in tiers {
            fs::write(policy.join(file), content)?;
            for line in content.lines() {
                // The audit names the target only: markers and comments are policy syntax.
                let target = |rest: &str| {
                    rest.split(['%', '#', ' ', '\t'])
                        .next()
                        .unwrap_or("")
                        .to_string()
                };
                match line.trim().as_bytes().first() {
                    Some(b'+') => entries.push(("allowed", target(&line.trim()[1..]))),
                    Some(b'-') => entries.push(("denied", target(&line.trim()[1..]))),
                    _ => {}
                }
            }
        }
        let entries: Vec<(&str, &str)> = entries.iter().map(|(a, t)| (*a, t.as_str())).collect();
        write_setup_audit(dir, tier, &entries)
    }

    /// Appends one line to `audit.jsonl` (a newline is added unless `json_line` ends with one),
    /// in a single `write` so concurrent writers' lines do not interleave.
    pub fn append_audit(dir: &Path, json_line: &str) -> io::Result<()> {
        let mut line = json_line.to_string();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("audit.jsonl"))?;
        file.write_all(line.as_bytes())
    }

    /// One audit entry as the shield writes it: `ts` (seconds, `+00:00`), `container`, `action`,
    /// then `dest` and `detail` when given.
    pub fn audit_entry(
        container: &str,
        action: &str,
        dest: Option<&str>,
        detail: Option<&str>,
    ) -> String {
        let ts = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S+00:00")
            .to_string();
        let mut entry = serde_json::Map::new();
        entry.insert("ts".into(), ts.into());
        entry.insert("container".into(), container.into());
        entry.insert("action".into(), action.into());
        if let Some(dest) = dest {
            entry.insert("dest".into(), dest.into());
        }
        if let Some(detail) = detail {
            entry.insert("detail".into(), detail.into());
        }
        serde_json::Value::Object(entry).to_string()
    }
}

fn write_tier(dir: &Path, tier: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("dns.tier"), format!("{tier}\n"))
}

fn lines(items: &[&str]) -> String {
    items.iter().map(|i| format!("{i}\n")).collect()
}

fn write_setup_audit(dir: &Path, tier: &str, entries: &[(&str, &str)]) -> io::Result<()> {
    let container = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let detail = format!("dns_tier={tier}");
    StateDir::append_audit(
        dir,
        &StateDir::audit_entry(&container, "setup", None, Some(&detail)),
    )?;
    for (action, dest) in entries {
        StateDir::append_audit(
            dir,
            &StateDir::audit_entry(&container, action, Some(dest), None),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_entry_has_the_shields_keys_in_order() {
        let line = StateDir::audit_entry("c1", "denied", Some("evil.example.com"), None);
        let rest = line.split_once(",\"container\"").unwrap().1;
        assert_eq!(
            rest,
            ":\"c1\",\"action\":\"denied\",\"dest\":\"evil.example.com\"}"
        );
        assert!(
            line.starts_with("{\"ts\":\"20") && line.contains("+00:00\""),
            "{line}"
        );
    }

    #[test]
    fn layouts_write_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("ctr-a");
        StateDir::domain_files(
            &a,
            "dnsmasq-live",
            &["github.com", "*.example.org"],
            &["evil.example.com"],
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(a.join("dns.tier")).unwrap(),
            "dnsmasq-live\n"
        );
        assert_eq!(
            fs::read_to_string(a.join("profile.domains")).unwrap(),
            "github.com\n*.example.org\n"
        );
        assert_eq!(
            fs::read_to_string(a.join("denied.domains")).unwrap(),
            "evil.example.com\n"
        );
        let audit = fs::read_to_string(a.join("audit.jsonl")).unwrap();
        let actions: Vec<&str> = audit
            .lines()
            .map(|l| {
                l.split("\"action\":\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(actions, ["setup", "allowed", "allowed", "denied"]);
        assert!(audit.contains("\"container\":\"ctr-a\""));

        let b = dir.path().join("ctr-b");
        StateDir::policy_dir(
            &b,
            "dnsmasq",
            &[
                ("30-provider-allow", "+github.com %ttl=5 # gh\n"),
                ("20-security-deny", "-evil.example.com\n"),
            ],
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(b.join("policy/30-provider-allow")).unwrap(),
            "+github.com %ttl=5 # gh\n"
        );
        let audit = fs::read_to_string(b.join("audit.jsonl")).unwrap();
        assert!(
            audit.contains("\"action\":\"allowed\",\"dest\":\"github.com\"}"),
            "{audit}"
        );
        assert!(
            audit.contains("\"action\":\"denied\",\"dest\":\"evil.example.com\"}"),
            "{audit}"
        );
    }

    #[test]
    fn append_audit_adds_exactly_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        StateDir::append_audit(dir.path(), "{\"a\":1}").unwrap();
        StateDir::append_audit(dir.path(), "{\"b\":2}\n").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("audit.jsonl")).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
    }
}
