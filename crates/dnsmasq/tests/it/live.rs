//! A real dnsmasq 2.90 pair in a network namespace this test creates: the
//! log it writes is classified, and the cache learns the CNAME-aware mapping.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shield_dnsmasq::{AllowList, Classifier, DomainCache};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace removed on drop, even when the test fails.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "shdq-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }

    fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.cmd(argv).output().expect("spawn ip netns exec");
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(prog: &str, args: &[&str]) {
    let st = Command::new(prog).args(args).status().expect("spawn");
    assert!(st.success(), "{prog} {args:?} failed");
}

fn dnsmasq(ns: &Netns, args: &[&str]) -> Daemon {
    let mut argv = vec![
        "dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--pid-file=",
        "--user=root",
    ];
    argv.extend_from_slice(args);
    Daemon(
        ns.cmd(&argv)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dnsmasq"),
    )
}

fn dig(ns: &Netns, name: &str, qtype: &str) -> String {
    ns.exec_ok(&[
        "dig",
        "@127.0.0.1",
        "-p",
        "5353",
        "+tries=1",
        "+time=2",
        "+short",
        name,
        qtype,
    ])
}

/// Polls `cond` until it holds or the deadline passes.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn live_run(extra: bool) {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dnsmasq.log");
    let up_log = dir.path().join("up.log");
    let _up = dnsmasq(
        &ns,
        &[
            "--port=5354",
            &format!("--log-facility={}", up_log.display()),
            "--log-queries",
            "--local-ttl=300",
            "--host-record=api.example.com,198.51.100.10,2001:db8::10",
            "--host-record=evil.example.net,198.51.100.66,2001:db8::66",
            "--host-record=target.example.net,198.51.100.20",
            "--host-record=mixed.evil.example.net,198.51.100.67",
            "--cname=alias.example.com,target.example.net",
            "--txt-record=txt.example.net,exfil",
        ],
    );
    let log_queries = if extra {
        "--log-queries=extra"
    } else {
        "--log-queries"
    };
    let _down = dnsmasq(
        &ns,
        &[
            "--port=5353",
            &format!("--log-facility={}", log.display()),
            log_queries,
            "--server=127.0.0.1#5354",
        ],
    );
    // Both are up once a name resolves end to end.
    wait_for("dnsmasq to answer", || {
        dig(&ns, "api.example.com", "A").contains("198.51.100.10")
    });

    assert!(dig(&ns, "evil.example.net", "A").contains("198.51.100.66"));
    assert!(dig(&ns, "evil.example.net", "AAAA").contains("2001:db8::66"));
    assert!(dig(&ns, "alias.example.com", "A").contains("198.51.100.20"));
    dig(&ns, "txt.example.net", "TXT");
    dig(&ns, "Mixed.Evil.Example.NET.", "A");
    dig(&ns, "x\\001y.example.net", "A");
    dig(&ns, "api.example.com", "AAAA");
    wait_for("the last query in the log", || {
        std::fs::read_to_string(&log)
            .is_ok_and(|s| s.contains("query[AAAA] api.example.com") && s.ends_with('\n'))
    });
    // The answer to the last query is logged right after it.
    wait_for("the last answer in the log", || {
        std::fs::read_to_string(&log)
            .is_ok_and(|s| s.lines().last().is_some_and(|l| l.contains("2001:db8::10")))
    });

    let text = std::fs::read(&log).unwrap();
    let allow = AllowList::from_domain_files("example.com\n", "", "").list;
    for (all, want) in [
        (
            false,
            vec![
                "A evil.example.net",
                "AAAA evil.example.net",
                "A mixed.evil.example.net",
                "A <name unprintable>",
            ],
        ),
        (
            true,
            vec![
                "A evil.example.net",
                "AAAA evil.example.net",
                "TXT txt.example.net",
                "A mixed.evil.example.net",
                "A <name unprintable>",
            ],
        ),
    ] {
        let mut classifier = Classifier::new(all);
        let mut cache = DomainCache::new(64);
        let got: Vec<String> = text
            .split_inclusive(|&b| b == b'\n')
            .filter_map(|l| classifier.classify(l, &allow, Some(&mut cache)))
            .map(|b| format!("{} {}", b.qtype, b.domain))
            .collect();
        assert_eq!(got, want, "log:\n{}", String::from_utf8_lossy(&text));

        let mut name = |ip: &str| {
            cache
                .lookup(ip.parse().unwrap())
                .map(|r| (r.name.to_owned(), r.cname.map(str::to_owned)))
        };
        assert_eq!(
            name("198.51.100.20"),
            Some((
                "alias.example.com".into(),
                Some("target.example.net".into())
            ))
        );
        assert_eq!(
            name("198.51.100.66"),
            Some(("evil.example.net".into(), None))
        );
        assert_eq!(
            name("198.51.100.67"),
            Some(("mixed.evil.example.net".into(), None))
        );
        assert_eq!(
            name("2001:db8::66"),
            Some(("evil.example.net".into(), None))
        );
        assert_eq!(name("2001:db8::10"), Some(("api.example.com".into(), None)));
        assert_eq!(cache.len(), 6, "only addresses are mapped");
    }
    assert!(Path::new(&log).exists());
}

#[test]
fn live_dnsmasq_log_queries() {
    live_run(false);
}

#[test]
fn live_dnsmasq_log_queries_extra() {
    live_run(true);
}
