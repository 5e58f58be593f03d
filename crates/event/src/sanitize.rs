//! The sanitiser: printable ASCII only, length-capped, applied to every string the stream carries.

use std::borrow::Cow;
use std::fmt;

/// Longest string value (in characters) the stream carries; longer ones are cut to
/// `MAX_LEN - 3` characters followed by `...`.
pub const MAX_LEN: usize = 256;

const MARKER: &str = "...";

fn is_printable(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Coerces `value` to printable ASCII (0x20–0x7E), each other character becoming one space, and
/// caps it at [`MAX_LEN`] characters, marking a cut with `...`.
///
/// Borrows when nothing needs to change, which is the common case.
///
/// ```
/// assert_eq!(shield_event::sanitize("a\u{202e}b\x1b[31m"), "a b [31m");
/// assert_eq!(shield_event::sanitize(&"x".repeat(300)).len(), 256);
/// ```
pub fn sanitize(value: &str) -> Cow<'_, str> {
    if is_clean(value) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(Sanitized(value).to_string())
    }
}

pub(crate) fn is_clean(value: &str) -> bool {
    value.len() <= MAX_LEN && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// A string that displays sanitised, without allocating: the JSON writer streams it.
#[derive(Clone, Copy, Debug)]
pub struct Sanitized<'a>(pub &'a str);

impl Sanitized<'_> {
    /// Hands the sanitised text to `emit` in pieces (runs of the input, single spaces, the cut
    /// marker), allocating nothing: the one implementation behind `Display` and the JSON writer.
    pub(crate) fn pieces<E>(self, mut emit: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
        let value = self.0;
        if is_clean(value) {
            return emit(value);
        }
        // The cap counts characters of the input, as the reference does; only the rare long value
        // pays for counting them.
        let cut = value.len() > MAX_LEN && value.chars().count() > MAX_LEN;
        let keep = if cut {
            MAX_LEN - MARKER.len()
        } else {
            usize::MAX
        };
        let mut run_start = None;
        let mut end = value.len();
        for (written, (index, c)) in value.char_indices().enumerate() {
            if written == keep {
                end = index;
                break;
            }
            if is_printable(c) {
                run_start.get_or_insert(index);
            } else {
                if let Some(start) = run_start.take() {
                    emit(&value[start..index])?;
                }
                emit(" ")?;
            }
        }
        if let Some(start) = run_start {
            emit(&value[start..end])?;
        }
        if cut {
            emit(MARKER)?;
        }
        Ok(())
    }
}

impl fmt::Display for Sanitized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces(|piece| f.write_str(piece))
    }
}

impl serde::Serialize for Sanitized<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_passes_unchanged_and_borrowed() {
        let all: String = (0x20u8..=0x7e).map(char::from).collect();
        assert!(matches!(sanitize(&all), Cow::Borrowed(_)));
        assert_eq!(sanitize(&all), all);
    }

    #[test]
    fn each_other_character_becomes_one_space() {
        assert_eq!(sanitize("a\tb\nc\0d\x7fe"), "a b c d e");
        // Multi-byte characters are one character each: one space, not one per byte.
        assert_eq!(sanitize("é\u{202e}漢\u{1F600}"), "    ");
        assert_eq!(sanitize("\u{fffd}x"), " x");
    }

    #[test]
    fn exactly_max_len_is_kept_and_one_more_is_cut() {
        let at = "a".repeat(MAX_LEN);
        assert_eq!(sanitize(&at), at);
        let over = "b".repeat(MAX_LEN + 1);
        let cut = sanitize(&over);
        assert_eq!(cut.len(), MAX_LEN);
        assert!(cut.ends_with("b..."));
        assert_eq!(&cut[..MAX_LEN - 3], &over[..MAX_LEN - 3]);
    }

    #[test]
    fn the_cap_counts_characters_not_bytes() {
        // 200 two-byte characters: 400 bytes but 200 characters, so no cut.
        let value = "é".repeat(200);
        assert_eq!(sanitize(&value), " ".repeat(200));
        // 300 characters mixing both kinds: cut after 253 characters.
        let value = format!("{}{}", "é".repeat(150), "x".repeat(150));
        let expected = format!("{}{}...", " ".repeat(150), "x".repeat(103));
        assert_eq!(sanitize(&value), expected);
    }

    #[test]
    fn empty_stays_empty() {
        assert_eq!(sanitize(""), "");
    }
}
