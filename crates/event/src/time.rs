//! Timestamps in the stream's one format: RFC 3339 UTC, microseconds, `+00:00`.

use jiff::Timestamp;

/// Formats `ts` as `2026-03-31T12:00:00.123456+00:00`: always six fraction digits (Python's
/// `isoformat()` drops them at zero microseconds; a fixed width is easier on every consumer).
pub fn format_timestamp(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// The current time in the stream's format.
pub fn now_timestamp() -> String {
    format_timestamp(Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fraction_digits_and_utc_offset() {
        let ts: Timestamp = "2026-03-31T12:00:00.123456789Z".parse().unwrap();
        assert_eq!(format_timestamp(ts), "2026-03-31T12:00:00.123456+00:00");
        let whole: Timestamp = "2026-03-31T12:00:00Z".parse().unwrap();
        assert_eq!(format_timestamp(whole), "2026-03-31T12:00:00.000000+00:00");
    }

    #[test]
    fn now_has_the_fixed_shape() {
        let now = now_timestamp();
        assert_eq!(now.len(), "2026-03-31T12:00:00.123456+00:00".len());
        assert!(now.ends_with("+00:00"));
    }
}
