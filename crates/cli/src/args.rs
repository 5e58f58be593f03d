//! The command line (`docs/CONTRACT.md` §7), parsed by clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};
use shield_event::Source;

/// A live JSON-lines stream of everything a container's firewall refused: blocked DNS lookups,
/// shield audit entries and packets logged to NFLOG.
#[derive(Debug, Parser)]
#[command(name = "shield-watch", version, about, long_about = None)]
pub struct Args {
    /// The container's state directory (dns.tier, dnsmasq.log, audit.jsonl, allow-lists).
    #[arg(short = 's', long, value_name = "DIR", conflicts_with = "state_root")]
    pub state_dir: Option<PathBuf>,

    /// terok-shield's state root: follow every ROOT/containers/NAME/ that holds a dns.tier,
    /// host-wide [default: $TEROK_SHIELD_STATE_DIR when set and --state-dir is not given].
    #[arg(long, value_name = "ROOT")]
    pub state_root: Option<PathBuf>,

    /// With --state-dir: the name put on events [default: the state dir's basename]. Host-wide:
    /// follow only the containers so named, or matching a shell-style glob (`ci-*`, `web-?`,
    /// `[ab]*`); may be given several times.
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Vec<String>,

    /// Output format: one JSON object per line, or a human view (colour on a terminal).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Colour in the text format: auto (only on a terminal, and not when NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    /// Comma list of sources to run: dns,audit,nflog [default: all that apply].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = source_parser())]
    pub source: Vec<Source>,

    /// Only emit events with these actions (comma list, e.g. blocked_query,blocked_connection).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub action: Vec<String>,

    /// Read existing log content instead of starting at the end of the files.
    #[arg(long)]
    pub from_start: bool,

    /// Resume from, and keep saving, read positions in FILE (nothing lost, nothing twice).
    #[arg(long, value_name = "FILE")]
    pub cursor: Option<PathBuf>,

    /// NFLOG group to bind.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub nflog_group: u16,

    /// Do not open the NFLOG socket.
    #[arg(long)]
    pub no_nflog: bool,

    /// Receive buffer of each NFLOG socket, in bytes: how many logged packets the kernel holds
    /// while we are slow. A ceiling, not an allocation (memory is used only by waiting
    /// packets); set once, before capabilities are dropped [default: 64 MiB for one
    /// container, 8 MiB per container host-wide, where whoever owns a state root decides how
    /// many namespaces there are].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4096..))]
    pub nflog_buffer: Option<u64>,

    /// Host-wide: at most this many NFLOG sockets (one per container namespace with a running
    /// dnsmasq); each is a receive buffer of up to --nflog-buffer the kernel charges while
    /// packets wait. Containers past it get one line and no packets.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_nflog_sockets: usize,

    /// Network namespace for the NFLOG socket (/proc/PID/ns/net, /run/netns/NAME).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,

    /// History first: events since WHEN (a duration back from now: 90s, 20m, 2h, 1d; or a time:
    /// RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in the host's time zone), read through every
    /// rotated and compressed log in time order; then the live stream, unless --no-follow.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// History up to WHEN (same forms as --since); implies --no-follow.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,

    /// History: the last N events that pass the filters (within --since/--until when given).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,

    /// Stop at the end of what is already written (exit 0) instead of following live.
    #[arg(long)]
    pub no_follow: bool,

    /// Host-wide: exit 1 when the state root is replaced or removed while running (so that a
    /// service manager restarts shield-watch on the new one); without it the loss is said on
    /// stderr and the containers already followed stay followed.
    #[arg(long)]
    pub exit_on_lost_root: bool,

    /// Report packets to IPv6 link-local multicast (ff02::/16: MLD, router solicitations,
    /// duplicate address detection) too; by default they are counted in the summary only.
    #[arg(long = "show-multicast")]
    pub show_link_multicast: bool,

    /// Report blocked lookups of every query type, not only A/AAAA.
    #[arg(long)]
    pub all_query_types: bool,

    /// Suppress repeats of the same (source, action, domain-or-dest) within DURATION (e.g. 30s, 500ms) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub dedup: Option<Duration>,

    /// Addresses kept for naming nflog destinations.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub domain_cache: usize,

    /// Longest line accepted from a log, in bytes; longer lines are skipped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_line: u64,

    /// Where events go (comma list): stdout, journal (one journald entry per event, MESSAGE =
    /// the JSON line, SHIELD_* fields to match on), or both.
    #[arg(
        long,
        value_enum,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "stdout"
    )]
    pub output: Vec<Destination>,

    /// journald's native socket, for --output journal [default: /run/systemd/journal/socket].
    #[arg(long, value_name = "PATH")]
    pub journal_socket: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9640; port 0 picks a
    /// free one, named on the ready line).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Write Prometheus metrics to FILE for node_exporter's textfile collector (replaced
    /// atomically, at most once a second while they change).
    #[arg(long, value_name = "FILE")]
    pub metrics_textfile: Option<PathBuf>,

    /// Count blocked lookups per name too (blocked_domains_total): the first N names of each
    /// container, the rest as one "(other)" [default: off].
    #[arg(long, value_name = "N")]
    pub metrics_domains: Option<usize>,
}

/// Where events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Destination {
    /// Standard output, in --format.
    Stdout,
    /// The systemd journal, natively (the JSON line as MESSAGE).
    Journal,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One compact JSON object per line (the reference's stream).
    Json,
    /// Aligned columns for people.
    Text,
}

/// When `--format text` uses colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always (e.g. when a pager or the demo shows the stream).
    Always,
    /// Never.
    Never,
}

/// `--source` values: the sources that read an input, each with its help line.
fn source_parser() -> impl TypedValueParser<Value = Source> {
    let help = |source: Source| match source {
        Source::Dns => "The dnsmasq query log",
        Source::Audit => "The audit log",
        Source::Nflog => "The kernel's NFLOG group",
        Source::Watch => "",
    };
    // Listed in the order the help has always shown them.
    let selectable = [Source::Dns, Source::Audit, Source::Nflog];
    PossibleValuesParser::new(
        selectable.map(|source| PossibleValue::new(source.as_str()).help(help(source))),
    )
    .try_map(|name| Source::from_name(&name).ok_or("not a source"))
}

/// Parses `30s`, `500ms`, `2m`, `1h 30m`, ISO 8601 `PT30S`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("not a duration (try 30s, 500ms, 2m): {e}"))?;
    Duration::try_from(signed).map_err(|_| "a duration cannot be negative".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn source_lists_parse() {
        let args =
            Args::try_parse_from(["shield-watch", "-s", "d", "--source", "dns,nflog"]).unwrap();
        assert_eq!(args.source, [Source::Dns, Source::Nflog]);
        for refused in ["dns,bogus", "watch", "DNS"] {
            assert!(
                Args::try_parse_from(["shield-watch", "-s", "d", "--source", refused]).is_err(),
                "{refused}"
            );
        }
    }
}
