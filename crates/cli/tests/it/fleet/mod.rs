//! Into the operator's fleet: the metrics scraped by a real Prometheus (and node_exporter's
//! textfile collector) and the journal output read back from a real journald and forwarded by a
//! real rsyslog. Every server is started by the test on loopback ports and stopped on drop.

mod journal;
mod prometheus;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Watch, DEADLINE};

/// Pause between two looks at something that is not there yet.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// A loopback port free now (the servers below take a port on their command line).
pub(crate) fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One HTTP/1.0 GET: the status and the body; `None` when the connection failed.
pub(crate) fn get(addr: SocketAddr, target: &str, accept: &str) -> Option<(u16, String)> {
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

/// A server the test started, killed on drop; its output in a log file.
pub(crate) struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    pub(crate) fn start(name: &'static str, command: &mut Command, dir: &Path) -> Server {
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

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `addr` answers `target` with 200.
    pub(crate) fn wait_ready(&mut self, addr: SocketAddr, target: &str) {
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

/// A line of dnsmasq's query log.
pub(crate) fn query(name: &str) -> String {
    format!("Mar 31 12:00:00 dnsmasq[9]: query[A] {name} from 10.0.0.2\n")
}

/// The address in a ready line's `metrics on http://ADDR/metrics`.
pub(crate) fn metrics_addr(watch: &Watch) -> SocketAddr {
    let ready = watch
        .stderr_seen()
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
