//! Into the operator's fleet: the metrics scraped by a real Prometheus (and node_exporter's
//! textfile collector), the journal output read back from a real journald. Every server is
//! started by the test on loopback ports and stopped on drop.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;
use shield_lab::journald::{bytes, text, Journald};
use shield_lab::StateDir;

use crate::host::{event_where, start, Container};
use crate::support::{State, Watch, DEADLINE};

/// Pause between two looks at something that is not there yet.
const POLL: Duration = Duration::from_millis(50);

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

/// The address in a ready line's `metrics on http://ADDR/metrics`.
fn metrics_addr(watch: &Watch) -> SocketAddr {
    let ready = watch
        .stderr_seen
        .iter()
        .find(|l| l.starts_with("shield-watch: ready ("))
        .expect("a ready line");
    let addr = ready
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {ready:?}"));
    addr.parse().unwrap()
}

/// A loopback port free now (the servers below take a port on their command line).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One HTTP/1.0 GET: the status and the body; `None` when the connection failed.
fn get(addr: SocketAddr, target: &str, accept: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {target} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8(answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

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

/// A server the test started, killed on drop; its output in a log file.
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(name: &'static str, command: &mut Command, dir: &Path) -> Server {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start ({e}): apt-get install it"));
        Server { name, child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `addr` answers `target` with 200.
    fn wait_ready(&mut self, addr: SocketAddr, target: &str) {
        let deadline = Instant::now() + DEADLINE;
        while get(addr, target, "*/*").is_none_or(|(status, _)| status != 200) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A line of dnsmasq's query log.
fn query(name: &str) -> String {
    format!("Mar 31 12:00:00 dnsmasq[9]: query[A] {name} from 10.0.0.2\n")
}

/// End to end with the real journald: one entry per event written (after --action), MESSAGE
/// byte-equal to the JSON line; then journald stopped mid-stream: stdout never stalls, and
/// every event is either in the journal or in the summary's drop count.
#[test]
fn journal_output_holds_exactly_the_events_and_never_stalls_the_stream() {
    let mut journald = Journald::start();
    let state = State::new(None);
    StateDir::domain_files(state.path(), "dnsmasq-live", &["allowed.example"], &[]).unwrap();
    let socket = journald.socket();
    let mut watch = Watch::start(
        &state,
        &[
            "--no-nflog",
            "--container",
            "web",
            "--output",
            "stdout,journal",
            "--journal-socket",
            socket.to_str().unwrap(),
            "--action",
            "blocked_query,denied",
        ],
    );
    let blocked = |entries: &[serde_json::Map<String, Value>]| -> Vec<Vec<u8>> {
        entries.iter().map(|e| bytes(e, "MESSAGE")).collect()
    };

    // Blocked lookups, one allowed lookup (no event), an audit entry --action leaves out.
    for name in [
        "evil.example",
        "tracker.example",
        "allowed.example",
        "x.evil.example",
    ] {
        state.append("dnsmasq.log", query(name).as_bytes());
    }
    state.append(
        "audit.jsonl",
        b"{\"action\":\"setup\"}\n{\"action\":\"denied\",\"dest\":\"192.0.2.9\"}\n",
    );
    let mut lines = watch.lines(4);
    lines.sort();
    let entries = journald.wait_for(&["SHIELD_CONTAINER=web", "SHIELD_ACTION=blocked_query"], 3);
    let mut messages = blocked(&entries);
    let denied = journald.wait_for(&["SHIELD_CONTAINER=web", "SHIELD_ACTION=denied"], 1);
    messages.extend(blocked(&denied));
    messages.sort();
    let expected: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    assert_eq!(messages, expected);
    assert!(journald.entries(&["SHIELD_ACTION=setup"]).is_empty());
    assert_eq!(text(&denied[0], "SHIELD_SOURCE"), "audit");
    assert_eq!(text(&entries[0], "SHIELD_DOMAIN"), "evil.example");

    // journald stopped mid-stream: every line still reaches stdout at once.
    journald.signal(Signal::STOP);
    let burst = 5_000;
    let mut text_burst = String::new();
    for n in 0..burst {
        text_burst.push_str(&query(&format!("n{n}.burst.example")));
    }
    state.append("dnsmasq.log", text_burst.as_bytes());
    let started = Instant::now();
    let got = watch.lines_within(burst, Duration::from_secs(10));
    assert_eq!(got.len(), burst);
    assert!(started.elapsed() < Duration::from_secs(10));
    journald.signal(Signal::CONT);
    // What was not dropped arrives once journald reads again: exactly that.
    watch.signal(Signal::USR1);
    let dropped_while_stopped =
        journal_dropped(&watch.wait_stderr(|l| l.starts_with("shield-watch: summary:")));
    assert!(dropped_while_stopped > 0);
    journald.wait_for(&["SHIELD_CONTAINER=web"], 4 + burst - dropped_while_stopped);

    // Then gone altogether: still nothing waits, and the loss is counted.
    journald.stop();
    state.append("dnsmasq.log", query("after.example").as_bytes());
    let got = watch.lines_within(1, Duration::from_secs(2));
    assert!(got[0].contains("after.example"), "{got:?}");

    // Back: the confined process connects again (at most a second after the failure) and
    // entries arrive once more.
    journald.spawn();
    let mut written = 4 + burst + 1;
    let deadline = Instant::now() + DEADLINE;
    loop {
        state.append(
            "dnsmasq.log",
            query(&format!("back{written}.example")).as_bytes(),
        );
        written += 1;
        assert_eq!(watch.lines_within(1, Duration::from_secs(2)).len(), 1);
        let arrived = journald
            .entries(&["SHIELD_CONTAINER=web", "SHIELD_SOURCE=dns"])
            .iter()
            .any(|e| text(e, "SHIELD_DOMAIN").starts_with("back"));
        if arrived {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived after journald came back"
        );
        thread::sleep(POLL);
    }

    watch.signal(Signal::TERM);
    let (status, stderr) = watch.wait_exit();
    assert!(status.success(), "{stderr:#?}");
    let summary = stderr
        .iter()
        .rfind(|l| l.starts_with("shield-watch: summary:"))
        .unwrap();
    // Every event written is in the journal or counted as dropped, never both, never neither.
    let dropped = journal_dropped(summary);
    assert!(dropped > dropped_while_stopped, "{summary}");
    journald.wait_for(&["SHIELD_CONTAINER=web"], written - dropped);
}

/// The `journal dropped N` of a summary line.
fn journal_dropped(summary: &str) -> usize {
    summary
        .split("; journal dropped ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in {summary}"))
}

/// The README's "Send it to your log server": shield-watch writes to a real journald, an
/// `rsyslogd -n` reading that journal (imjournal, in journald's mount namespace) runs the
/// packaged `packaging/rsyslog/shield-watch.conf` with only the server's address and CA
/// replaced, and forwards over TLS (a CA made here) to a second `rsyslogd -n` on loopback,
/// which keeps each message as received: RFC 5424, the SHIELD_* fields as structured data,
/// the JSON line as the message, byte for byte.
#[test]
fn rsyslog_forwards_each_event_over_tls_as_rfc5424_with_its_fields() {
    let journald = Journald::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let state = State::new(None);
    StateDir::domain_files(state.path(), "dnsmasq-live", &["allowed.example"], &[]).unwrap();
    let socket = journald.socket();
    let mut watch = Watch::start(
        &state,
        &[
            "--no-nflog",
            "--container",
            "web",
            "--output",
            "stdout,journal",
            "--journal-socket",
            socket.to_str().unwrap(),
        ],
    );
    for name in ["evil.example", "tracker.example", "allowed.example"] {
        state.append("dnsmasq.log", query(name).as_bytes());
    }
    let lines = watch.lines(2);
    journald.wait_for(&["SHIELD_CONTAINER=web"], 2);

    // A throwaway CA and the log server's certificate for logs.example.net.
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=shield-watch test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=logs.example.net",
    ]);
    fs::write(dir.join("san.ext"), "subjectAltName=DNS:logs.example.net\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ]);

    // The log server: TLS only, each message kept as received.
    let port = free_port().port();
    let received = dir.join("received.log");
    fs::create_dir(dir.join("server")).unwrap();
    fs::write(
        dir.join("server.conf"),
        format!(
            "global(workDirectory=\"{d}/server\" DefaultNetstreamDriver=\"gtls\"\n\
             \x20 DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" DefaultNetstreamDriverCertFile=\"{d}/server.pem\"\n\
             \x20 DefaultNetstreamDriverKeyFile=\"{d}/server.key\")\n\
             module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             ruleset(name=\"in\") {{ action(type=\"omfile\" file=\"{r}\" template=\"raw\") }}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\")\n",
            d = dir.display(),
            r = received.display(),
        ),
    )
    .unwrap();
    let _server = Server::start(
        "rsyslogd-server",
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.join("server.conf"))
            .arg("-i")
            .arg(dir.join("server.pid")),
        dir,
    );

    // Listening before the client starts: a client that finds no server retries, and rsyslog
    // forwards at least once, so a retry may repeat a message (seen: 3 messages for 2 events).
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "rsyslogd-server: {}",
            _server.log()
        );
        thread::sleep(POLL);
    }

    // The packaged recipe, pointed at it.
    let recipe = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/rsyslog/shield-watch.conf"
    ))
    .unwrap();
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains(&recipe),
        "the README shows packaging/rsyslog/shield-watch.conf as it is"
    );
    let recipe = recipe
        .replace("target=\"logs.example.net\"", "target=\"127.0.0.1\"")
        .replace("port=\"6514\"", &format!("port=\"{port}\""))
        .replace(
            "/etc/ssl/certs/logs-ca.pem",
            &format!("{}/ca.pem", dir.display()),
        );
    fs::write(dir.join("shield-watch.conf"), recipe).unwrap();
    fs::create_dir(dir.join("client")).unwrap();
    fs::write(
        dir.join("client.conf"),
        format!(
            "global(workDirectory=\"{d}/client\")\ninclude(file=\"{d}/shield-watch.conf\")\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let _client = Server::start(
        "rsyslogd-client",
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", journald.pid()))
            .arg("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.join("client.conf"))
            .arg("-i")
            .arg(dir.join("client.pid")),
        dir,
    );

    let deadline = Instant::now() + DEADLINE;
    let messages = loop {
        let text = fs::read_to_string(&received).unwrap_or_default();
        let messages: Vec<String> = text.lines().map(str::to_string).collect();
        if messages.len() >= 2 {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "received {messages:?}\nclient: {}\nserver: {}",
            _client.log(),
            _server.log()
        );
        thread::sleep(POLL);
    };
    assert_eq!(
        messages.len(),
        2,
        "{messages:?}\nclient: {}\nserver: {}",
        _client.log(),
        _server.log()
    );
    for (message, line) in messages.iter().zip(&lines) {
        // <user.warning>1 TIMESTAMP HOST shield-watch - - [SD] MSG
        assert!(message.starts_with("<12>1 "), "{message}");
        let (head, msg) = message.split_once("] ").unwrap();
        assert_eq!(msg, line, "the message is the JSON line");
        let event: Value = serde_json::from_str(line).unwrap();
        let sd = head.split_once(" shield-watch - - [").unwrap().1;
        assert_eq!(
            sd,
            format!(
                "shield@32473 container=\"web\" source=\"dns\" action=\"blocked_query\" domain=\"{}\" dest=\"\" port=\"\"",
                event["domain"].as_str().unwrap()
            )
        );
    }
}
