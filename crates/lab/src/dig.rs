//! DNS lookups from inside a namespace with the real `dig`.

use std::net::SocketAddr;

use crate::error::{Error, ErrorKind};
use crate::netns::Netns;

/// Runs `dig +short +time=1 +tries=1 @server -p port NAME TYPE` inside `ns` and returns its
/// output: one answer per line (CNAME targets included), empty for NXDOMAIN or no data.
/// An error when no server answered.
pub fn dig(ns: &Netns, server: SocketAddr, name: &str, qtype: &str) -> Result<String, Error> {
    lookup(ns, server, name, qtype, "+short")
}

/// The response code (`NOERROR`, `NXDOMAIN`, `REFUSED`, ...) of the same lookup as [`dig`].
pub fn dig_status(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    qtype: &str,
) -> Result<String, Error> {
    let out = lookup(ns, server, name, qtype, "+noall")?;
    parse_status(&out).map(str::to_string).ok_or_else(|| {
        Error::new(
            ErrorKind::Command,
            format!("dig {name} {qtype} @{server}"),
            format!("no status in output: {out}"),
        )
    })
}

fn lookup(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    qtype: &str,
    style: &str,
) -> Result<String, Error> {
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    let mut argv = vec![
        "dig", style, "+time=1", "+tries=1", &at, "-p", &port, name, qtype,
    ];
    if style == "+noall" {
        argv.insert(2, "+comments");
    }
    ns.exec_ok(&argv)
}

/// Finds `status: X` in dig's header comment line.
fn parse_status(out: &str) -> Option<&str> {
    let rest = &out[out.find("status: ")? + "status: ".len()..];
    rest.split([',', '\n'])
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_the_header() {
        let out = ";; Got answer:\n;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 41601\n";
        assert_eq!(parse_status(out), Some("NXDOMAIN"));
        assert_eq!(parse_status(";; no header"), None);
        assert_eq!(parse_status("status: "), None);
    }
}
