//! The shield's allow-list, built from the texts of either state-directory layout, and the
//! lookup. Reading the files is the caller's business: nothing here does I/O.
//!
//! Both layouts compile to one table: domain (lower case, no `*.`) → flags
//! saying which kinds of entry name it. A lookup walks the queried name from
//! the root towards the full name and probes the table once per label (see
//! `suffix.rs`; a list of a few domains is compared key by key instead), so
//! it costs a handful of probes and never allocates.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::suffix::SuffixTable;

/// Flag bits in the table. `PLAIN_*` entries match the name and its
/// subdomains; `WILD_*` entries (`*.name`) match strict subdomains only.
const PLAIN_ALLOW: u8 = 1;
const WILD_ALLOW: u8 = 2;
const PLAIN_DENY: u8 = 4;
const WILD_DENY: u8 = 8;
const PLAIN_OVERRIDE: u8 = 16;
const WILD_OVERRIDE: u8 = 32;
const PLAIN_MASK: u8 = PLAIN_ALLOW | PLAIN_DENY | PLAIN_OVERRIDE;

/// The files of the domain-files layout, in the order their lines are read.
const DOMAIN_FILES: [&str; 3] = ["profile.domains", "live.domains", "denied.domains"];

/// The directory of the policy-directory layout, relative to the state directory.
const POLICY_DIR: &str = "policy";

/// A tier file of the policy directory (`policy/10-override`, ...). Not the container's DNS
/// tier (`dns.tier`), which the CLI reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyTier {
    /// `policy/10-override`: break-glass allows, which beat every deny.
    Override,
    /// `policy/20-security-deny`: denies.
    SecurityDeny,
    /// `policy/30-provider-allow`: provider allows.
    ProviderAllow,
    /// `policy/40-project-allow`: project allows.
    ProjectAllow,
    /// `policy/live`: runtime allows and denies.
    Live,
}

impl PolicyTier {
    /// Every tier, in file order.
    pub const ALL: [PolicyTier; 5] = [
        PolicyTier::Override,
        PolicyTier::SecurityDeny,
        PolicyTier::ProviderAllow,
        PolicyTier::ProjectAllow,
        PolicyTier::Live,
    ];

    /// The file name of this tier inside `policy/`.
    pub fn file_name(self) -> &'static str {
        match self {
            PolicyTier::Override => "10-override",
            PolicyTier::SecurityDeny => "20-security-deny",
            PolicyTier::ProviderAllow => "30-provider-allow",
            PolicyTier::ProjectAllow => "40-project-allow",
            PolicyTier::Live => "live",
        }
    }

    /// The flag a `+`/`-` domain entry of this tier sets, if the contract's formula
    /// (`docs/CONTRACT.md` §2) gives it a meaning: override `+`, provider/project/live `+`, security-deny/live `-`.
    fn flag(self, allow: bool) -> Option<(u8, u8)> {
        match (self, allow) {
            (PolicyTier::Override, true) => Some((PLAIN_OVERRIDE, WILD_OVERRIDE)),
            (PolicyTier::ProviderAllow | PolicyTier::ProjectAllow | PolicyTier::Live, true) => {
                Some((PLAIN_ALLOW, WILD_ALLOW))
            }
            (PolicyTier::SecurityDeny | PolicyTier::Live, false) => Some((PLAIN_DENY, WILD_DENY)),
            _ => None,
        }
    }
}

/// Which layout an [`AllowList`] was built from; the matching rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `profile.domains`, `live.domains`, `denied.domains` (terok-shield v14, "layout A"):
    /// any entry on the way allows.
    DomainFiles,
    /// `policy/` tier files (terok-shield v15, "layout B"): the most specific name with an
    /// entry decides.
    PolicyDir,
}

/// The allowed domains of one container. Cheap to query, immutable once built.
#[derive(Clone, Debug)]
pub struct AllowList {
    layout: Layout,
    table: SuffixTable,
}

/// An [`AllowList`] with the lines that were skipped while building it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The allow-list.
    pub list: AllowList,
    /// One message per skipped line, `file:line: why`, in file and line order. The same texts
    /// give the same warnings, so a caller that reloads can compare them and say them again
    /// only when they changed.
    pub warnings: Vec<String>,
}

impl AllowList {
    /// The files of the domain-files layout in the state directory: `profile.domains`,
    /// `live.domains`, `denied.domains`, the order of [`AllowList::from_domain_files`]'s
    /// arguments.
    pub const DOMAIN_FILES: [&'static str; 3] = DOMAIN_FILES;

    /// The directory of the policy-directory layout in the state directory (`policy`); its files
    /// are named by [`PolicyTier::file_name`]. When it is a directory, this layout is in force.
    pub const POLICY_DIR: &'static str = POLICY_DIR;

    /// An allow-list that allows nothing (domain files with no entries).
    pub fn empty() -> AllowList {
        AllowList {
            layout: Layout::DomainFiles,
            table: SuffixTable::new(),
        }
    }

    /// The layout this list was built from.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many distinct domains have an entry.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no domain has an entry.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// The names in the state directory the allow-list is read from (the domain files and
    /// `policy/`).
    pub fn watched_names() -> [&'static str; 4] {
        [
            DOMAIN_FILES[0],
            DOMAIN_FILES[1],
            DOMAIN_FILES[2],
            POLICY_DIR,
        ]
    }

    /// The directories whose changes can change the allow-list: the state directory (for
    /// [`AllowList::watched_names`] in it) and `policy/`.
    pub fn watched_paths(state_dir: &Path) -> Vec<PathBuf> {
        vec![state_dir.to_path_buf(), state_dir.join(POLICY_DIR)]
    }

    /// Builds a domain-files list from the contents of `profile.domains`,
    /// `live.domains` and `denied.domains` (a missing file is empty): (profile ∪ live) − denied,
    /// where a denied entry removes only that exact entry. Bytes that are not UTF-8 are read
    /// as U+FFFD, which no valid entry contains.
    pub fn from_domain_files(
        profile: impl AsRef<[u8]>,
        live: impl AsRef<[u8]>,
        denied: impl AsRef<[u8]>,
    ) -> Loaded {
        let mut warnings = Vec::new();
        let mut allowed: Vec<String> = Vec::new();
        for (file, text) in [
            (DOMAIN_FILES[0], text(profile.as_ref())),
            (DOMAIN_FILES[1], text(live.as_ref())),
        ] {
            allowed.extend(domain_file_entries(file, &text, &mut warnings));
        }
        let denied = text(denied.as_ref());
        let denied: std::collections::HashSet<String> =
            domain_file_entries(DOMAIN_FILES[2], &denied, &mut warnings).collect();
        let mut table = SuffixTable::new();
        for entry in allowed.iter().filter(|e| !denied.contains(*e)) {
            let (key, wild) = split_wildcard(entry);
            table.add(key.as_bytes(), if wild { WILD_ALLOW } else { PLAIN_ALLOW });
        }
        Loaded {
            list: AllowList {
                layout: Layout::DomainFiles,
                table,
            },
            warnings,
        }
    }

    /// Builds a policy-directory list from the contents of its tier files (a tier may appear
    /// several times or not at all; a missing file is left out or empty). Bytes that are not
    /// UTF-8 are read as U+FFFD, which no valid target contains.
    pub fn from_policy<T: AsRef<[u8]>>(tiers: &[(PolicyTier, T)]) -> Loaded {
        let mut warnings = Vec::new();
        let mut table = SuffixTable::new();
        for (tier, bytes) in tiers {
            let tier = *tier;
            let file = format!("{POLICY_DIR}/{}", tier.file_name());
            for (no, raw) in text(bytes.as_ref()).lines().enumerate() {
                let Some((allow, target)) = parse_policy_line(raw, &file, no + 1, &mut warnings)
                else {
                    continue;
                };
                let Some(target) = target else { continue };
                let Some((plain, wild)) = tier.flag(allow) else {
                    warn(
                        &mut warnings,
                        &file,
                        no + 1,
                        format_args!(
                            "`{}{target}` has no effect in this tier",
                            if allow { '+' } else { '-' }
                        ),
                    );
                    continue;
                };
                let (key, is_wild) = split_wildcard(&target);
                table.add(key.as_bytes(), if is_wild { wild } else { plain });
            }
        }
        Loaded {
            list: AllowList {
                layout: Layout::PolicyDir,
                table,
            },
            warnings,
        }
    }

    /// Whether a lookup of `name` is allowed: case-insensitive, one trailing
    /// dot ignored, parents and `*.` wildcards as the layout says.
    pub fn allows(&self, name: &[u8]) -> bool {
        if self.table.len() == 0 {
            return false;
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        match self.layout {
            // Any applicable entry on the way allows.
            Layout::DomainFiles => self
                .table
                .walk(name, |flags, whole| {
                    // The full name matches plain entries only; a parent matches both.
                    let flags = if whole { flags & PLAIN_MASK } else { flags };
                    if flags != 0 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .is_some(),
            // Root first, so the last decision seen is the most specific one;
            // an override anywhere settles it at once.
            Layout::PolicyDir => {
                let mut decided = false;
                let overridden = self.table.walk(name, |flags, whole| {
                    let flags = if whole { flags & PLAIN_MASK } else { flags };
                    if flags & (PLAIN_OVERRIDE | WILD_OVERRIDE) != 0 {
                        return ControlFlow::Break(());
                    }
                    if flags & (PLAIN_DENY | WILD_DENY) != 0 {
                        decided = false;
                    } else if flags & (PLAIN_ALLOW | WILD_ALLOW) != 0 {
                        decided = true;
                    }
                    ControlFlow::Continue(())
                });
                overridden.is_some() || decided
            }
        }
    }
}

/// A file's bytes as text: invalid UTF-8 is replaced, not fatal (and borrowed when valid).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn warn(warnings: &mut Vec<String>, file: &str, line: usize, why: std::fmt::Arguments<'_>) {
    let mut msg = String::new();
    let _ = write!(msg, "{file}:{line}: {why}");
    warnings.push(msg);
}

/// Valid, lower-cased entries of one domain file; invalid ones become warnings.
fn domain_file_entries<'t>(
    file: &'t str,
    text: &'t str,
    warnings: &'t mut Vec<String>,
) -> impl Iterator<Item = String> + 't {
    text.lines().enumerate().filter_map(move |(no, raw)| {
        let entry = raw.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return None;
        }
        if is_valid_domain(&entry) {
            Some(entry)
        } else {
            warn(
                warnings,
                file,
                no + 1,
                format_args!("skipping `{}`: not a valid domain", printable(raw.trim())),
            );
            None
        }
    })
}

/// Parses one policy line. `None`: nothing to add (blank, comment, or
/// skipped with a warning). `Some((allow, None))`: a valid non-domain target.
fn parse_policy_line(
    raw: &str,
    file: &str,
    no: usize,
    warnings: &mut Vec<String>,
) -> Option<(bool, Option<String>)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let allow = match line.as_bytes()[0] {
        b'+' => true,
        b'-' => false,
        _ => {
            warn(
                warnings,
                file,
                no,
                format_args!("skipping `{}`: must start with + or -", printable(line)),
            );
            return None;
        }
    };
    let rest = line[1..].trim_start();
    // The target ends at white space, a marker or a comment.
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '%' || c == '#')
        .unwrap_or(rest.len());
    let target = rest[..end].to_ascii_lowercase();
    let mut tail = &rest[end..];
    // What follows: `%key=value` markers, then optionally `# comment`.
    loop {
        tail = tail.trim_start();
        if tail.is_empty() || tail.starts_with('#') {
            break;
        }
        let end = tail
            .find(|c: char| c.is_ascii_whitespace() || c == '#')
            .unwrap_or(tail.len());
        let marker = &tail[..end];
        let ok = marker
            .strip_prefix('%')
            .and_then(|kv| kv.split_once('='))
            .is_some_and(|(k, _)| !k.is_empty());
        if !ok {
            warn(
                warnings,
                file,
                no,
                format_args!(
                    "skipping `{}`: `{}` is not a %key=value marker",
                    printable(line),
                    printable(marker)
                ),
            );
            return None;
        }
        tail = &tail[end..];
    }
    if target.is_empty() {
        warn(
            warnings,
            file,
            no,
            format_args!("skipping `{}`: no target", printable(line)),
        );
        return None;
    }
    if is_non_domain_target(&target) {
        return Some((allow, None));
    }
    if !is_valid_domain(&target) {
        warn(
            warnings,
            file,
            no,
            format_args!(
                "skipping `{}`: target is not a domain, address, CIDR or host:port",
                printable(line)
            ),
        );
        return None;
    }
    Some((allow, Some(target)))
}

/// IP literals, CIDRs, `host:port` and `localhost:PORT`: valid policy targets
/// that concern the packet filter, not DNS.
fn is_non_domain_target(t: &str) -> bool {
    if t.parse::<IpAddr>().is_ok() {
        return true;
    }
    if let Some((addr, len)) = t.split_once('/') {
        return addr.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok();
    }
    if let Some(addr) = t.strip_prefix('[') {
        // [2001:db8::1]:443
        return addr
            .split_once("]:")
            .is_some_and(|(a, p)| a.parse::<IpAddr>().is_ok() && p.parse::<u16>().is_ok());
    }
    if let Some((host, port)) = t.rsplit_once(':') {
        return port.parse::<u16>().is_ok()
            && (host == "localhost" || host.parse::<IpAddr>().is_ok() || is_valid_domain(host));
    }
    false
}

/// The contract's rule (`docs/CONTRACT.md` §2): optional `*.`, then two or more labels of letters,
/// digits and inner hyphens, the last alphabetic and at least two long.
/// Expects lower case.
pub(crate) fn is_valid_domain(d: &str) -> bool {
    let d = d.strip_prefix("*.").unwrap_or(d);
    let mut labels = 0;
    let mut last = "";
    for label in d.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && last.len() >= 2 && last.bytes().all(|c| c.is_ascii_lowercase())
}

fn split_wildcard(entry: &str) -> (&str, bool) {
    match entry.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (entry, false),
    }
}

/// Warnings reach a terminal: keep control bytes out and long lines short.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(profile: &str, live: &str, denied: &str) -> AllowList {
        let l = AllowList::from_domain_files(profile, live, denied);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        l.list
    }

    fn b(tiers: &[(PolicyTier, &str)]) -> AllowList {
        let l = AllowList::from_policy(tiers);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        l.list
    }

    fn check(list: &AllowList, allowed: &[&str], blocked: &[&str]) {
        for n in allowed {
            assert!(list.allows(n.as_bytes()), "{n} should be allowed");
        }
        for n in blocked {
            assert!(!list.allows(n.as_bytes()), "{n} should be blocked");
        }
    }

    #[test]
    fn domain_files_parents_case_and_trailing_dot() {
        let l = a("github.com\n\n  Example.ORG  \n", "pypi.org\n", "");
        check(
            &l,
            &[
                "github.com",
                "api.github.com",
                "a.b.c.github.com",
                "GitHub.COM",
                "github.com.",
                "API.GITHUB.COM.",
                "example.org",
                "www.example.org",
                "pypi.org",
                "files.pypi.org",
            ],
            &[
                "evilgithub.com",
                "github.com.evil.net",
                "com",
                "org",
                "github.com..",
                "",
                ".",
                "github",
                "xgithub.com",
            ],
        );
    }

    #[test]
    fn domain_files_denied_removes_only_the_exact_entry() {
        // A denied subdomain of an allowed domain still resolves through the parent.
        let l = a(
            "github.com\ngist.github.com\npypi.org\n",
            "",
            "gist.github.com\npypi.org\n",
        );
        check(
            &l,
            &["github.com", "gist.github.com", "x.gist.github.com"],
            &["pypi.org", "files.pypi.org"],
        );
        // Denied wins over live too, and over an entry listed twice.
        let l = a("x.example.com\n", "x.example.com\n", "X.Example.Com\n");
        check(&l, &[], &["x.example.com"]);
    }

    #[test]
    fn domain_files_wildcards_allow_strict_subdomains() {
        let l = a("*.example.com\n", "", "");
        check(
            &l,
            &["a.example.com", "b.a.example.com", "A.EXAMPLE.COM."],
            &["example.com", "example.com.", "aexample.com", "com"],
        );
        // Denying the wildcard removes it; denying the plain name does not.
        let l = a(
            "*.example.com\nexample.net\n*.example.net\n",
            "",
            "*.example.com\nexample.net\n",
        );
        check(&l, &["a.example.net"], &["a.example.com", "example.net"]);
    }

    #[test]
    fn domain_files_invalid_entries_are_skipped_with_a_warning() {
        let profile = "github.com\nlocalhost\n-bad.com\nbad-.com\nexample.c0m\nexample.c\n# comment\n1.2.3.4\n*.*.example.com\nex ample.com\nexa_mple.com\n*example.com\nok-1.example.io\n\u{7}bell.com\n";
        let l = AllowList::from_domain_files(profile, "", "a..b.com\n");
        check(
            &l.list,
            &["github.com", "ok-1.example.io"],
            &["localhost", "example.c0m", "example.c"],
        );
        assert_eq!(l.list.len(), 2);
        let w = &l.warnings;
        assert_eq!(w.len(), 13, "{w:#?}");
        assert!(
            w[0].starts_with("profile.domains:2: skipping `localhost`"),
            "{}",
            w[0]
        );
        assert!(w[7].starts_with("profile.domains:9: "), "{}", w[7]);
        assert!(
            w[11].contains("?bell.com"),
            "control byte escaped: {}",
            w[11]
        );
        assert!(w[12].starts_with("denied.domains:1: "), "{}", w[12]);
    }

    #[test]
    fn domain_rule() {
        for ok in [
            "a.bc",
            "*.a.bc",
            "1.example.com",
            "x-y.z.example",
            "a.b.c.d.ef",
        ] {
            assert!(is_valid_domain(ok), "{ok}");
        }
        for bad in [
            "abc", "a.b", "a.b1", "*.abc", "a.-b.com", "*.", "", ".a.bc", "a.bc.", "a.BC", "a..bc",
            "**.a.bc",
        ] {
            assert!(!is_valid_domain(bad), "{bad}");
        }
    }

    #[test]
    fn policy_dir_formula_and_grammar() {
        let l = b(&[
            (PolicyTier::Override, "# break glass\n+override.example.com %by=ops # why\n"),
            (PolicyTier::SecurityDeny, "-vault.example.com\n-evil.example.org %source=feed\n"),
            (PolicyTier::ProviderAllow, "+example.com\n+api.provider.io\n"),
            (PolicyTier::ProjectAllow, "\n  +pypi.org   %a=1 %b=2\n+203.0.113.5\n+198.51.100.0/24\n+github.com:443\n+localhost:8080\n+2001:db8::1\n"),
            (PolicyTier::Live, "+live.example.net\n-pypi.org\n"),
        ]);
        check(
            &l,
            &[
                "override.example.com",
                "example.com",
                "www.example.com",
                "API.provider.io.",
                "live.example.net",
            ],
            &[
                "vault.example.com",
                "x.vault.example.com",
                "evil.example.org",
                "pypi.org",
                "files.pypi.org",
                "github.com",
                "localhost",
                "203.0.113.5",
                "other.net",
            ],
        );
    }

    #[test]
    fn policy_dir_most_specific_name_decides() {
        let l = b(&[
            (
                PolicyTier::ProviderAllow,
                "+example.com\n+ok.bad.example.com\n",
            ),
            (PolicyTier::SecurityDeny, "-bad.example.com\n"),
        ]);
        check(
            &l,
            &[
                "example.com",
                "a.example.com",
                "ok.bad.example.com",
                "x.ok.bad.example.com",
            ],
            &["bad.example.com", "x.bad.example.com"],
        );
    }

    #[test]
    fn policy_dir_deny_beats_allow_at_the_same_name() {
        let l = b(&[
            (PolicyTier::ProjectAllow, "+example.com\n"),
            (PolicyTier::Live, "-example.com\n+example.com\n"),
        ]);
        check(&l, &[], &["example.com", "a.example.com"]);
    }

    #[test]
    fn policy_dir_override_anywhere_on_the_way_wins() {
        let l = b(&[
            (PolicyTier::Override, "+example.com\n"),
            (PolicyTier::SecurityDeny, "-bad.example.com\n-example.com\n"),
        ]);
        check(
            &l,
            &["example.com", "bad.example.com", "x.bad.example.com"],
            &["example.org"],
        );
    }

    #[test]
    fn policy_dir_no_entry_blocks() {
        let l = b(&[(PolicyTier::SecurityDeny, "-bad.example\n")]);
        check(&l, &[], &["good.example", "bad.example", "x.bad.example"]);
        let l = b(&[]);
        check(&l, &[], &["anything.example"]);
    }

    #[test]
    fn policy_dir_wildcards() {
        let l = b(&[
            (PolicyTier::ProviderAllow, "+*.example.com\n"),
            (PolicyTier::SecurityDeny, "-*.bad.example.com\n"),
        ]);
        check(
            &l,
            &["a.example.com", "bad.example.com"],
            &["example.com", "x.bad.example.com", "y.x.bad.example.com"],
        );
        // A wildcard override covers subdomains, not the name itself.
        let l = b(&[
            (PolicyTier::Override, "+*.example.com\n"),
            (PolicyTier::SecurityDeny, "-example.com\n"),
        ]);
        check(&l, &["a.example.com"], &["example.com"]);
    }

    #[test]
    fn policy_dir_invalid_lines_warn() {
        let l = AllowList::from_policy(&[
            (PolicyTier::ProviderAllow, "example.com\n+\n+ok.example %novalue\n+bad_name.example\n*x\n+fine.example # c\n+x.example junk\n"),
            (PolicyTier::Override, "-nothing.example\n"),
            (PolicyTier::SecurityDeny, "+nothing.example\n"),
        ]);
        check(
            &l.list,
            &["fine.example"],
            &["example.com", "ok.example", "x.example"],
        );
        let w = &l.warnings;
        assert_eq!(w.len(), 8, "{w:#?}");
        assert!(w[0].starts_with("policy/30-provider-allow:1: "), "{}", w[0]);
        assert!(w[2].contains("%novalue"), "{}", w[2]);
        assert!(w[6].starts_with("policy/10-override:1: "), "{}", w[6]);
        assert!(w[7].contains("no effect"), "{}", w[7]);
    }

    #[test]
    fn empty_list_allows_nothing() {
        check(&AllowList::empty(), &[], &["example.com", ""]);
    }

    #[test]
    fn very_long_names_match_on_their_tail_only() {
        let l = a("example.com\n", "", "");
        let long = format!("{}.example.com", "a".repeat(1000));
        assert!(l.allows(long.as_bytes()));
        let long_label = format!("{}.example.net", "b.".repeat(400));
        assert!(!l.allows(long_label.as_bytes()));
        // A truncated tail must not start mid-label: "xexample.com" is not "example.com".
        let tricky = format!("{}xexample.com", "c".repeat(300));
        assert!(!l.allows(tricky.as_bytes()));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_fatal() {
        let l = AllowList::from_domain_files(b"github.com\n\xffbad.com\n".as_slice(), b"", b"");
        check(&l.list, &["github.com"], &["bad.com"]);
        assert_eq!(
            l.warnings,
            ["profile.domains:2: skipping `?bad.com`: not a valid domain"]
        );
        let l = AllowList::from_policy(&[(PolicyTier::ProviderAllow, b"+pypi.org\xc3\n+x.io\n")]);
        check(&l.list, &["x.io"], &["pypi.org"]);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        // The same bytes give the same warnings: a reloading caller can compare them.
        let again =
            AllowList::from_policy(&[(PolicyTier::ProviderAllow, b"+pypi.org\xc3\n+x.io\n")]);
        assert_eq!(again.warnings, l.warnings);
    }

    #[test]
    fn names_of_the_files() {
        assert_eq!(
            AllowList::DOMAIN_FILES,
            ["profile.domains", "live.domains", "denied.domains"]
        );
        assert_eq!(AllowList::POLICY_DIR, "policy");
        assert_eq!(
            AllowList::watched_names(),
            [
                "profile.domains",
                "live.domains",
                "denied.domains",
                "policy"
            ]
        );
        assert_eq!(
            AllowList::watched_paths(Path::new("/s")),
            [PathBuf::from("/s"), PathBuf::from("/s/policy")]
        );
    }
}
