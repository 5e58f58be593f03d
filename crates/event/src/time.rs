//! Timestamps in the stream's one format: RFC 3339 UTC, microseconds, `+00:00`.

use std::cell::RefCell;

use jiff::Timestamp;

/// `YYYY-MM-DDT` of the last day formatted on this thread: a Unix day is 86 400 seconds, so
/// the time of day is written by hand, and the date is formatted once a day.
struct LastDay {
    day: i64,
    text: String,
}

thread_local! {
    static LAST_DAY: RefCell<LastDay> = const {
        RefCell::new(LastDay { day: i64::MIN, text: String::new() })
    };
}

/// Formats `ts` as `2026-03-31T12:00:00.123456+00:00`: always six fraction digits (Python's
/// `isoformat()` drops them at zero microseconds; a fixed width is easier on every consumer).
pub fn format_timestamp(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// The current time in the stream's format.
pub fn now_timestamp() -> String {
    format_timestamp(Timestamp::now())
}

/// Appends `ts` in the stream's format to `out` ([`format_timestamp`]'s text), allocating only
/// when `out` must grow: the date is formatted once a day per thread, the rest written by hand.
pub fn write_timestamp(ts: Timestamp, out: &mut String) {
    let (second, micros) = (ts.as_second(), ts.subsec_microsecond());
    if second < 0 || micros < 0 {
        // Before 1970 the parts are negative; never on a live clock.
        out.push_str(&format_timestamp(ts));
        return;
    }
    let day = second / 86_400;
    LAST_DAY.with(|last| {
        let mut last = last.borrow_mut();
        if last.day != day {
            last.text.clear();
            let midnight = Timestamp::from_second(day * 86_400).unwrap_or(ts);
            last.text
                .push_str(&midnight.strftime("%Y-%m-%dT").to_string());
            last.day = day;
        }
        out.push_str(&last.text);
    });
    let mut rest = *b"00:00:00.000000+00:00";
    let of_day = second % 86_400;
    for (at, value) in [(0, of_day / 3600), (3, of_day / 60 % 60), (6, of_day % 60)] {
        rest[at] = b'0' + (value / 10) as u8;
        rest[at + 1] = b'0' + (value % 10) as u8;
    }
    let mut fraction = micros as u32;
    for digit in rest[9..15].iter_mut().rev() {
        *digit = b'0' + (fraction % 10) as u8;
        fraction /= 10;
    }
    // A checked `from_utf8` here was a fifth of the cost of a timestamp (once per event).
    // SAFETY: `rest` is an ASCII template in which only ASCII digits were written (each
    // `b'0' + d` with d < 10: hours < 24, minutes and seconds < 60, fraction digits `% 10`), so
    // it is valid UTF-8.
    out.push_str(unsafe { std::str::from_utf8_unchecked(&rest) });
}

/// Appends the current time in the stream's format to `out` (see [`write_timestamp`]).
pub fn write_now(out: &mut String) {
    write_timestamp(Timestamp::now(), out);
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
    fn written_in_place_equals_formatted() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut out = String::new();
        for i in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Runs of nearby instants (the per-day cache), jumps, and the edges.
            let nanos: i128 = match i % 4 {
                0 => i128::from(rng % 4_102_444_800_000_000_000),
                1 => 1_774_958_400_000_000_000 + i128::from(rng % 3_000_000_000),
                2 => -i128::from(rng % 1_000_000_000_000_000_000),
                _ => i128::from(i) * 999_999,
            };
            let ts = Timestamp::from_nanosecond(nanos).unwrap();
            out.clear();
            write_timestamp(ts, &mut out);
            assert_eq!(out, format_timestamp(ts), "{nanos}");
        }
    }

    #[test]
    fn now_has_the_fixed_shape() {
        let now = now_timestamp();
        assert_eq!(now.len(), "2026-03-31T12:00:00.123456+00:00".len());
        assert!(now.ends_with("+00:00"));
    }
}
