//! `--format text`: one aligned line per event for people, coloured only on a terminal.

use std::io::{self, Write};

use shield_event::{Event, Sanitized};
use shield_watch_cli::ColorChoice;

/// Whether and how to colour the text view.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextStyle {
    /// Emit ANSI colours (only when stdout is a terminal and `NO_COLOR` is unset).
    pub colour: bool,
}

impl TextStyle {
    /// `auto`: colour when stdout is a terminal, unless `NO_COLOR` is set to anything non-empty
    /// (<https://no-color.org>); `always` and `never` decide alone.
    pub fn detect(choice: ColorChoice) -> TextStyle {
        use std::io::IsTerminal;
        let colour = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                io::stdout().is_terminal() && !no_colour
            }
        };
        TextStyle { colour }
    }

    /// Writes `event` as one line.
    pub fn write(&self, event: &Event, out: &mut Vec<u8>) -> io::Result<()> {
        let (on, off) = match (self.colour, colour_for(&event.action)) {
            (true, Some(code)) => (code, "\x1b[0m"),
            _ => ("", ""),
        };
        let subject = match (event.subject(), event.port) {
            (subject, 0) => Sanitized(subject).to_string(),
            (subject, port) => format!("{}:{port}", Sanitized(subject)),
        };
        write!(
            out,
            "{:<15} {:<5} {on}{:<20}{off} {:<40}",
            short_time(&event.ts),
            event.source.as_str(),
            Sanitized(&event.action).to_string(),
            subject
        )?;
        if !event.query_type.is_empty() {
            write!(out, " type={}", Sanitized(&event.query_type))?;
        }
        if event.proto != 0 {
            write!(out, " proto={}", proto_name(event.proto))?;
        }
        if !event.domain.is_empty() && !event.dest.is_empty() {
            write!(out, " dest={}", Sanitized(&event.dest))?;
        }
        if !event.detail.is_empty() {
            write!(out, " detail={:?}", Sanitized(&event.detail).to_string())?;
        }
        write!(out, " container={}", Sanitized(&event.container))?;
        for (key, value) in event.extra.iter() {
            write!(out, " {}={}", Sanitized(key), Sanitized(value))?;
        }
        // Column padding leaves trailing spaces on short lines; nobody wants them.
        while out.last() == Some(&b' ') {
            out.pop();
        }
        out.push(b'\n');
        Ok(())
    }
}

/// `HH:MM:SS.mmm` out of an RFC 3339 timestamp, or the whole (sanitised) value when it is not one.
fn short_time(ts: &str) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(parsed) => parsed.strftime("%H:%M:%S%.3f").to_string(),
        Err(_) => Sanitized(ts).to_string(),
    }
}

fn proto_name(proto: i64) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        other => other.to_string(),
    }
}

fn colour_for(action: &str) -> Option<&'static str> {
    if action.starts_with("blocked") || action == "denied" || action == "queued_connection" {
        Some("\x1b[1;31m")
    } else if action.contains("private") || action.contains("overrun") || action.contains("bypass")
    {
        Some("\x1b[1;33m")
    } else if action.starts_with("allowed") || action == "setup" || action == "shield_up" {
        Some("\x1b[32m")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield_event::Source;

    fn sample() -> Event {
        let mut event = Event::new(
            "2026-03-31T12:00:00.123456+00:00",
            Source::Nflog,
            "blocked_connection",
            "web",
        );
        event.dest = "192.0.2.7".into();
        event.port = 443;
        event.proto = 6;
        event.detail = "TEROK_SHIELD_DENIED:".into();
        event.extra.insert("src", "198.51.100.1");
        event
    }

    #[test]
    fn aligned_columns_without_colour() {
        let mut out = Vec::new();
        TextStyle { colour: false }
            .write(&sample(), &mut out)
            .unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "12:00:00.123    nflog blocked_connection   192.0.2.7:443                            \
             proto=tcp detail=\"TEROK_SHIELD_DENIED:\" container=web src=198.51.100.1\n"
        );
        assert!(!line.contains('\x1b'));
    }

    #[test]
    fn colour_only_when_asked() {
        let mut out = Vec::new();
        TextStyle { colour: true }
            .write(&sample(), &mut out)
            .unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\x1b[1;31mblocked_connection"));
    }

    #[test]
    fn hostile_text_is_sanitised() {
        let mut event = sample();
        event.detail = "\x1b]0;pwned\x07".into();
        event.ts = "not a time\x1b".into();
        let mut out = Vec::new();
        TextStyle { colour: false }.write(&event, &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line:?}");
    }
}
