//! The one way to stderr: every diagnostic line goes through [`line()`], which passes printable
//! ASCII and turns every other character into a space, as the stream does with its strings.
//!
//! Container names, paths and error texts quote what the state root's owner and the containers
//! wrote: nothing they put there may reach a terminal or the journal as an escape sequence, a
//! bell or a line break that forges another line. The one exception is the em dash of the
//! reference's "DNS tier not set — container may not be shielded" (printable, and ours).

use std::fmt::Display;
use std::io::Write as _;

/// The text of `message` as it goes to stderr: one line, printable ASCII (and the em dash).
pub fn clean(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if (' '..='~').contains(&c) || c == '—' {
                c
            } else {
                ' '
            }
        })
        .collect()
}

/// Writes `shield-watch: MESSAGE` to stderr as one sanitised line.
pub fn line(message: impl Display) {
    let text = clean(&format!("shield-watch: {message}"));
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// Writes an already complete line (the summary) to stderr, sanitised the same way.
pub fn raw(text: impl Display) {
    let text = clean(&text.to_string());
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// An error and every cause under it, `: `-separated: the libraries leave their causes to
/// `source()` instead of repeating them in `Display`, so a line to a person walks the chain.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_but_printable_ascii_leaves() {
        let hostile = "evil\x1b]0;PWNED\x07\nshield-watch: container alpha: gone\u{202e}é";
        let cleaned = clean(hostile);
        assert!(
            cleaned.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "{cleaned:?}"
        );
        assert_eq!(cleaned.len(), hostile.chars().count());
        assert_eq!(
            clean("DNS tier not set — container"),
            "DNS tier not set — container"
        );
    }
}
