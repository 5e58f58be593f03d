//! The text form: one aligned line per event for people, coloured when asked.

use std::io::{self, Write};

use crate::event::Event;
use crate::proto::protocol_name;
use crate::sanitize::Sanitized;

/// How the text form looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextStyle {
    /// Colour the action with ANSI escapes (the caller decides: a terminal, `--color`, `NO_COLOR`).
    pub colour: bool,
}

impl Event {
    /// Writes the event as one line for people, newline included: time, source, action, domain
    /// or destination (with its port), then the other fields as `key=value`. Every value is
    /// sanitised as in the JSON form.
    pub fn write_text(&self, style: TextStyle, out: &mut Vec<u8>) -> io::Result<()> {
        let (on, off) = match (style.colour, colour_for(&self.action)) {
            (true, Some(code)) => (code, "\x1b[0m"),
            _ => ("", ""),
        };
        let subject = match (self.subject(), self.port) {
            (subject, 0) => Sanitized(subject).to_string(),
            (subject, port) => format!("{}:{port}", Sanitized(subject)),
        };
        write!(
            out,
            "{:<15} {:<5} {on}{:<20}{off} {:<40}",
            short_time(&self.ts),
            self.source.as_str(),
            Sanitized(&self.action).to_string(),
            subject
        )?;
        if !self.query_type.is_empty() {
            write!(out, " type={}", Sanitized(&self.query_type))?;
        }
        if self.proto != 0 {
            match protocol_name(self.proto) {
                Some(name) => write!(out, " proto={name}")?,
                None => write!(out, " proto={}", self.proto)?,
            }
        }
        if !self.domain.is_empty() && !self.dest.is_empty() {
            write!(out, " dest={}", Sanitized(&self.dest))?;
        }
        if !self.detail.is_empty() {
            write!(out, " detail={:?}", Sanitized(&self.detail).to_string())?;
        }
        write!(out, " container={}", Sanitized(&self.container))?;
        for (key, value) in self.extra.iter() {
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
    use crate::Source;

    const PLAIN: TextStyle = TextStyle { colour: false };

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

    fn text(event: &Event, style: TextStyle) -> String {
        let mut out = Vec::new();
        event.write_text(style, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn aligned_columns_without_colour() {
        let line = text(&sample(), PLAIN);
        assert_eq!(
            line,
            "12:00:00.123    nflog blocked_connection   192.0.2.7:443                            \
             proto=tcp detail=\"TEROK_SHIELD_DENIED:\" container=web src=198.51.100.1\n"
        );
        assert!(!line.contains('\x1b'));
    }

    #[test]
    fn unnamed_protocols_are_numbers() {
        let mut event = sample();
        event.proto = 47;
        assert!(text(&event, PLAIN).contains(" proto=47 "));
        event.proto = 58;
        assert!(text(&event, PLAIN).contains(" proto=icmpv6 "));
    }

    #[test]
    fn colour_only_when_asked() {
        assert!(
            text(&sample(), TextStyle { colour: true }).contains("\x1b[1;31mblocked_connection")
        );
    }

    #[test]
    fn hostile_text_is_sanitised() {
        let mut event = sample();
        event.detail = "\x1b]0;pwned\x07".into();
        event.ts = "not a time\x1b".into();
        let line = text(&event, PLAIN);
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line:?}");
    }
}
