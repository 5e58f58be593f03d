//! The journal output end to end: a real journald, and the README's rsyslog recipe forwarding
//! from it over TLS.

use std::fs;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;
use shield_lab::journald::{bytes, text, Journald};
use shield_lab::StateDir;

use super::{free_port, get, metrics_addr, query, Server, POLL};
use crate::support::{State, Watch, DEADLINE};

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
            "--metrics-listen",
            "127.0.0.1:0",
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

    // The metrics count the same drops as the summary.
    watch.signal(Signal::USR1);
    let now = journal_dropped(&watch.wait_stderr(|l| l.starts_with("shield-watch: summary:")));
    let (_, exposition) = get(metrics_addr(&watch), "/metrics", "*/*").unwrap();
    assert!(
        exposition.contains(&format!(
            "\nshield_watch_journal_dropped_entries_total {now}\n"
        )),
        "{now}: {exposition}"
    );

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
