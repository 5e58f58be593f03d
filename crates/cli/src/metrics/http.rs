//! `--metrics-listen ADDR`: `GET /metrics` over HTTP/1.x, served by one thread.
//!
//! A scrape is small and rare, and the one thing this server must never do is make the stream
//! wait or let a client hold the process's resources, so it is the smallest server that can be
//! trusted with that: one thread polls the listener and every connection (non-blocking), one
//! request per connection, a bounded request head, a bounded number of connections, a deadline
//! per connection. No async runtime: std's `TcpListener` and `poll(2)`.
//!
//! **Invariant:** nothing here is shared with the writer but the metrics' atomic counters and
//! the registry's short read locks: a slow, silent or hostile client delays other clients at
//! most, never an event.

use std::io::{self, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use super::Metrics;

/// The most connections held open at once. One more takes the place of the oldest, so that
/// the kernel's backlog never fills and a crowd of silent clients cannot keep a scrape out:
/// a real scrape is answered within milliseconds of connecting, long before 64 newer
/// connections push it out.
pub const MAX_CONNECTIONS: usize = 64;

/// The largest request head read; a longer one is answered 431 and closed.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a connection may take, from accept to the last byte of its answer.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// One client.
struct Connection {
    stream: TcpStream,
    since: Instant,
    head: Vec<u8>,
    /// The answer once the request is read, and how much of it went out.
    answer: Option<(Vec<u8>, usize)>,
    /// Answered and shut for writing: what the client still sends is read and thrown away
    /// until it closes, so that closing does not reset the connection (a reset can destroy
    /// the answer before the client read it, e.g. a 431 while it is still sending).
    draining: usize,
}

/// The most read and thrown away after an answer before the connection is closed anyway.
const MAX_DRAIN: usize = 1 << 20;

/// Serves `metrics` on `listener` until the process ends.
pub fn serve(listener: TcpListener, metrics: Metrics) {
    if let Err(err) = listener.set_nonblocking(true) {
        crate::diag::line(format_args!("metrics: cannot serve: {err}"));
        return;
    }
    let mut connections: Vec<Connection> = Vec::new();
    loop {
        let mut fds = Vec::with_capacity(connections.len() + 1);
        fds.push(PollFd::new(&listener, PollFlags::IN));
        for connection in &connections {
            let answering = connection
                .answer
                .as_ref()
                .is_some_and(|(a, sent)| *sent < a.len());
            let want = if answering {
                PollFlags::OUT
            } else {
                PollFlags::IN
            };
            fds.push(PollFd::new(&connection.stream, want));
        }
        // Wake at the earliest deadline at the latest.
        let wait = connections
            .iter()
            .map(|c| DEADLINE.saturating_sub(c.since.elapsed()))
            .min()
            .unwrap_or(DEADLINE);
        let timeout = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let ready: Vec<bool> = match poll(&mut fds, Some(&timeout)) {
            Ok(_) => fds.iter().map(|fd| !fd.revents().is_empty()).collect(),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => {
                crate::diag::line(format_args!("metrics: stopped serving: {err}"));
                return;
            }
        };
        drop(fds);
        let mut open = Vec::with_capacity(connections.len());
        for (connection, ready) in connections.into_iter().zip(&ready[1..]) {
            if let Some(connection) = step(connection, *ready, &metrics) {
                open.push(connection);
            }
        }
        connections = open;
        if ready[0] {
            accept(&listener, &mut connections);
        }
    }
}

/// Accepts what is waiting; past [`MAX_CONNECTIONS`] the oldest connection is closed.
fn accept(listener: &TcpListener, connections: &mut Vec<Connection>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if connections.len() >= MAX_CONNECTIONS {
                    // Oldest first: connections are kept in the order they came.
                    connections.remove(0);
                }
                connections.push(Connection {
                    stream,
                    since: Instant::now(),
                    head: Vec::new(),
                    answer: None,
                    draining: 0,
                });
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            // A connection reset before it was accepted, or out of descriptors for now: the
            // next poll tries again.
            Err(_) => return,
        }
    }
}

/// Moves one connection on; `None` when it is done (answered, failed or out of time).
fn step(mut connection: Connection, ready: bool, metrics: &Metrics) -> Option<Connection> {
    if connection.since.elapsed() >= DEADLINE {
        return None;
    }
    if !ready {
        return Some(connection);
    }
    if connection
        .answer
        .as_ref()
        .is_some_and(|(answer, sent)| *sent == answer.len())
    {
        let mut buf = [0u8; 4096];
        return match connection.stream.read(&mut buf) {
            Ok(0) => None,
            Ok(n) if connection.draining + n > MAX_DRAIN => None,
            Ok(n) => {
                connection.draining += n;
                Some(connection)
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Some(connection),
            Err(_) => None,
        };
    }
    if connection.answer.is_none() {
        let mut buf = [0u8; 2048];
        match connection.stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => connection.head.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Some(connection),
            Err(_) => return None,
        }
        let end = find_head_end(&connection.head);
        if end.is_none() && connection.head.len() < MAX_HEAD {
            return Some(connection);
        }
        let answer = match end {
            Some(end) if end <= MAX_HEAD => answer(&connection.head[..end], metrics),
            _ => response(431, "text/plain", b"request head too large\n", false),
        };
        connection.answer = Some((answer, 0));
    }
    let (answer, sent) = connection.answer.as_mut().expect("set above");
    loop {
        match connection.stream.write(&answer[*sent..]) {
            Ok(0) => return None,
            Ok(n) => {
                *sent += n;
                if *sent == answer.len() {
                    // One request per connection: the answer said `Connection: close`. The
                    // client closes its side once it has read it.
                    let _ = connection.stream.shutdown(std::net::Shutdown::Write);
                    return Some(connection);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Some(connection),
            Err(_) => return None,
        }
    }
}

/// Where the request head ends (after its blank line), if it has.
fn find_head_end(head: &[u8]) -> Option<usize> {
    head.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| head.windows(2).position(|w| w == b"\n\n").map(|at| at + 2))
}

/// The answer to one request head.
fn answer(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let Ok(head) = std::str::from_utf8(head) else {
        return response(400, "text/plain", b"bad request\n", false);
    };
    let mut lines = head.lines();
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response(400, "text/plain", b"bad request\n", false);
    };
    if !version.starts_with("HTTP/1.") {
        return response(400, "text/plain", b"bad request\n", false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response(405, "text/plain", b"only GET\n", false);
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return response(404, "text/plain", b"see /metrics\n", head_only);
    }
    // Prometheus asks for OpenMetrics; anything else (curl, older scrapers) gets the classic
    // text format.
    let openmetrics = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("accept") && value.contains("application/openmetrics-text")
        })
    });
    if openmetrics {
        response(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.openmetrics().as_bytes(),
            head_only,
        )
    } else {
        response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.classic_text().as_bytes(),
            head_only,
        )
    }
}

fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut out = Vec::with_capacity(body.len() + 160);
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(request: &[u8]) -> String {
        let metrics = Metrics::new(None, None);
        let head_end = find_head_end(request).unwrap_or(request.len());
        String::from_utf8(answer(&request[..head_end], &metrics)).unwrap()
    }

    #[test]
    fn answers_get_metrics_and_refuses_the_rest() {
        let ok = ask(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("application/openmetrics-text"));
        assert!(ok.ends_with("# EOF\n"));
        let classic = ask(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(classic.contains("text/plain; version=0.0.4"), "{classic}");
        assert!(ask(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(ask(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask(b"\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(ask(b"GET /metrics SMTP/1.0\r\n\r\n").starts_with("HTTP/1.1 400"));
    }
}
