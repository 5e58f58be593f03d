//! Prometheus end to end: the listener and the textfile scraped by Debian's prometheus (and
//! prometheus-node-exporter), and the listener under hostile clients.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use super::{free_port, get, metrics_addr, Server, POLL};
use crate::host::{event_where, start, Container};
use crate::support::{State, Watch, DEADLINE};

/// The blocking series every followed container has from the start.
const BLOCKING: [(&str, &str); 5] = [
    ("dns", "blocked_query"),
    ("nflog", "blocked_connection"),
    ("nflog", "queued_connection"),
    ("nflog", "private_range"),
    ("audit", "denied"),
];

/// The alert rule of the README's "Alert on it", as Prometheus loads it.
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../packaging/prometheus/shield-watch.rules.yml"
);

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// node_exporter with only its textfile collector, reading `dir`.
fn node_exporter(dir: &Path, work: &Path) -> (Server, SocketAddr) {
    let addr = free_port();
    let mut server = Server::start(
        "prometheus-node-exporter",
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address={addr}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display())),
        work,
    );
    server.wait_ready(addr, "/metrics");
    (server, addr)
}

/// Prometheus scraping `shield-watch` and `node` every second, with the README's rule loaded.
struct Prometheus {
    server: Server,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(shield_watch: SocketAddr, node: SocketAddr, work: &Path) -> Prometheus {
        let addr = free_port();
        let config = work.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {RULES}\n\
                 scrape_configs:\n\
                 \x20 - job_name: shield-watch\n    static_configs:\n      - targets: ['{shield_watch}']\n\
                 \x20 - job_name: node\n    static_configs:\n      - targets: ['{node}']\n"
            ),
        )
        .unwrap();
        let mut server = Server::start(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    work.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address={addr}")),
            work,
        );
        server.wait_ready(addr, "/-/ready");
        Prometheus { server, addr }
    }

    /// `GET /api/v1/PATH`, its `data`.
    fn api(&self, path: &str) -> Value {
        let (status, body) = get(self.addr, &format!("/api/v1/{path}"), "application/json")
            .unwrap_or_else(|| panic!("prometheus does not answer:\n{}", self.server.log()));
        assert_eq!(status, 200, "{path}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["data"].clone()
    }

    /// The instant vector of `query`: each series' labels and value.
    fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(&format!("query?query={}", encode(query)));
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let value = series["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// Waits until `query` returns one series of value `want`.
    fn wait_value(&self, query: &str, want: f64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.query(query);
            if got.len() == 1 && got[0].1 == want {
                return;
            }
            assert!(Instant::now() < deadline, "{query} is {got:?}, not {want}");
            thread::sleep(POLL);
        }
    }

    /// Waits until `query` returns nothing.
    fn wait_empty(&self, query: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.query(query);
            if got.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{query} still has {got:?}");
            thread::sleep(POLL);
        }
    }
}

/// End to end with Debian's prometheus and prometheus-node-exporter: every blocking series of
/// every container exists at 0 before any block; real blocked lookups and connections in real
/// shielded namespaces are counted per container, over the listener and over the textfile; the
/// README's alert fires for the container that was blocked; a removed container's series go.
#[test]
fn prometheus_counts_real_blocks_per_container_from_zero_and_forgets_a_removed_one() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let textfiles = tempfile::tempdir().unwrap();
    let web = Container::shielded(root.path(), "web", &[("tracker.example", "203.0.113.10")]);
    let db = Container::shielded(root.path(), "db", &[("exfil.example", "203.0.113.20")]);
    let textfile = textfiles.path().join("shield-watch.prom");
    let mut watch = start(
        root.path(),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-textfile",
            textfile.to_str().unwrap(),
            "--metrics-domains",
            "2",
        ],
    );
    let metrics = metrics_addr(&watch);
    let (_node, node) = node_exporter(textfiles.path(), work.path());
    let prometheus = Prometheus::start(metrics, node, work.path());
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains(&fs::read_to_string(RULES).unwrap()),
        "the README shows packaging/prometheus/shield-watch.rules.yml as it is"
    );

    // Before any block: every blocking series at 0, through both ways in.
    for job in ["shield-watch", "node"] {
        for container in ["web", "db"] {
            for (source, action) in BLOCKING {
                prometheus.wait_value(
                    &format!(
                        "shield_watch_events_total{{job=\"{job}\",container=\"{container}\",source=\"{source}\",action=\"{action}\"}}"
                    ),
                    0.0,
                );
            }
            prometheus.wait_value(
                &format!("shield_watch_nflog_lost_packets_total{{job=\"{job}\",container=\"{container}\"}}"),
                0.0,
            );
        }
    }
    prometheus.wait_value("shield_watch_containers{job=\"shield-watch\"}", 2.0);
    for source in ["audit", "dns", "nflog"] {
        prometheus.wait_value(
            &format!("shield_watch_source_following{{job=\"shield-watch\",container=\"web\",source=\"{source}\"}}"),
            1.0,
        );
    }
    assert!(prometheus
        .query("ALERTS{alertname=\"ShieldWatchBlocked\"}")
        .is_empty());

    // Real blocks: 3 lookups and 2 connections in web, 1 and 1 in db.
    for name in ["tracker.example", "ads.example", "beacon.example"] {
        web.lookup(name);
    }
    web.connect("203.0.113.10:443");
    web.connect("203.0.113.10:80");
    db.lookup("exfil.example");
    db.connect("203.0.113.20:443");
    let mut seen: BTreeMap<(String, String), u32> = BTreeMap::new();
    while seen.values().sum::<u32>() < 7 {
        let event = event_where(&mut watch, |e| e["source"] != "audit");
        let key = (
            event["container"].as_str().unwrap().to_string(),
            event["action"].as_str().unwrap().to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(
        seen[&("web".to_string(), "blocked_query".to_string())],
        3,
        "{seen:?}"
    );
    assert_eq!(
        seen[&("db".to_string(), "blocked_query".to_string())],
        1,
        "{seen:?}"
    );
    for job in ["shield-watch", "node"] {
        for ((container, action), n) in &seen {
            prometheus.wait_value(
                &format!(
                    "sum(shield_watch_events_total{{job=\"{job}\",container=\"{container}\",action=\"{action}\"}})"
                ),
                f64::from(*n),
            );
        }
        prometheus.wait_value(
            &format!("shield_watch_events_total{{job=\"{job}\",container=\"db\",action=\"private_range\"}}"),
            0.0,
        );
    }
    // --metrics-domains 2: the first two names of web have their own series, the third shares
    // the overflow one.
    for (domain, n) in [
        ("tracker.example", 1.0),
        ("ads.example", 1.0),
        ("(other)", 1.0),
    ] {
        prometheus.wait_value(
            &format!("shield_watch_blocked_domains_total{{job=\"shield-watch\",container=\"web\",domain=\"{domain}\"}}"),
            n,
        );
    }
    assert!(prometheus
        .query("shield_watch_blocked_domains_total{domain=\"beacon.example\"}")
        .is_empty());
    // The README's alert, firing for each blocked container.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let firing: Vec<String> = prometheus
            .query("ALERTS{alertname=\"ShieldWatchBlocked\",alertstate=\"firing\",job=\"shield-watch\",action=\"blocked_query\"}")
            .into_iter()
            .map(|(labels, _)| labels["container"].clone())
            .collect();
        if firing.contains(&"web".to_string()) && firing.contains(&"db".to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "firing: {firing:?}");
        thread::sleep(POLL);
    }

    // db removed: its series go, web's stay.
    let Container { dir, resolver, .. } = db;
    drop(resolver);
    fs::remove_dir_all(&dir).unwrap();
    watch.wait_stderr(|l| l == "shield-watch: container db: gone");
    let (_, exposition) = get(metrics, "/metrics", "*/*").unwrap();
    assert!(!exposition.contains("container=\"db\""), "{exposition}");
    assert!(exposition.contains("container=\"web\""), "{exposition}");
    for job in ["shield-watch", "node"] {
        // Its own series; the alert that fired for it resolves once its last samples leave the
        // rule's 1 m window.
        prometheus.wait_empty(&format!(
            "{{__name__=~\"shield_watch_.+\",job=\"{job}\",container=\"db\"}}"
        ));
        prometheus.wait_value(
            &format!("shield_watch_events_total{{job=\"{job}\",container=\"web\",action=\"blocked_query\"}}"),
            3.0,
        );
    }
    prometheus.wait_value("shield_watch_containers{job=\"shield-watch\"}", 1.0);
    drop(web);
}

/// `/metrics` under abuse: a client that sends its request a byte at a time, one that never
/// sends, 1 000 connections at once and garbage requests. Scrapes are still answered, and the
/// stream never waits: an event written meanwhile comes out at once.
#[test]
fn metrics_listener_survives_hostile_clients_and_never_stalls_the_stream() {
    raise_descriptor_limit();
    let state = State::new(Some("lookup\n"));
    let mut watch = Watch::start(
        &state,
        &[
            "--no-nflog",
            "--container",
            "c",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let metrics = metrics_addr(&watch);
    let denied = |n: u32| format!("{{\"action\":\"denied\",\"dest\":\"192.0.2.{n}\"}}\n");

    // 1 000 at once, all silent.
    let crowd: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    // The stream does not wait for any of them.
    state.append("audit.jsonl", denied(1).as_bytes());
    let lines = watch.lines_within(1, Duration::from_secs(2));
    assert!(lines[0].contains("\"dest\":\"192.0.2.1\""), "{lines:?}");
    // A scrape is still answered: the newest connection takes the oldest one's place.
    let (status, body) =
        get(metrics, "/metrics", "application/openmetrics-text").expect("a scrape");
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "shield_watch_events_total{container=\"c\",source=\"audit\",action=\"denied\"} 1"
        ),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"));
    drop(crowd);

    // A client that never sends, and one that sends its request a byte at a time while
    // others are answered and the stream goes on.
    let silent = TcpStream::connect(metrics).unwrap();
    let mut slow = TcpStream::connect(metrics).unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for (n, byte) in request.iter().enumerate() {
        slow.write_all(std::slice::from_ref(byte)).unwrap();
        if n == 10 {
            assert_eq!(get(metrics, "/metrics", "*/*").expect("a scrape").0, 200);
            state.append("audit.jsonl", denied(3).as_bytes());
            let lines = watch.lines_within(1, Duration::from_secs(2));
            assert!(lines[0].contains("\"dest\":\"192.0.2.3\""), "{lines:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    // Garbage: refused, each on its own connection.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    for (request, status) in [
        (
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
            "400",
        ),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "405",
        ),
        (b"GET /../../etc/shadow HTTP/1.1\r\n\r\n", "404"),
        (b"GET /metrics\r\n\r\n", "400"),
        (huge.as_bytes(), "431"),
    ] {
        let mut stream = TcpStream::connect(metrics).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        // The server may answer and close before a long request is all written.
        let _ = stream.write_all(request);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
    }
    drop(silent);

    // Still serving, still streaming, every event counted.
    state.append("audit.jsonl", denied(2).as_bytes());
    let lines = watch.lines_within(1, Duration::from_secs(2));
    assert!(lines[0].contains("\"dest\":\"192.0.2.2\""), "{lines:?}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, body) = get(metrics, "/metrics", "*/*").unwrap();
        if body.contains(
            "shield_watch_events_total{container=\"c\",source=\"audit\",action=\"denied\"} 3",
        ) {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        thread::sleep(POLL);
    }
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit().0.success());
}

/// Lets the test hold 1 000 connections.
fn raise_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}
