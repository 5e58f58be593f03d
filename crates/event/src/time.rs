//! Timestamps in the stream's one format: RFC 3339 UTC, microseconds, `+00:00`.

use std::cell::Cell;

use jiff::Timestamp;

/// `YYYY-MM-DDT` of the last day formatted on this thread: a Unix day is 86 400 seconds, so
/// the time of day is written by hand, and the date is formatted once a day. Plain bytes in a
/// `Cell`: reading it is a load, with no borrow flag and no lazy initialisation.
#[derive(Clone, Copy)]
struct LastDay {
    day: i64,
    date: [u8; 11],
}

thread_local! {
    static LAST_DAY: Cell<LastDay> = const { Cell::new(LastDay { day: i64::MIN, date: [0; 11] }) };
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
/// when `out` must grow: the date is formatted once a day per thread, the rest written by hand,
/// the whole stamp built in one array and appended at once.
pub fn write_timestamp(ts: Timestamp, out: &mut String) {
    let (second, micros) = (ts.as_second(), ts.subsec_microsecond());
    if second < 0 || micros < 0 {
        // Before 1970 the parts are negative; never on a live clock.
        out.push_str(&format_timestamp(ts));
        return;
    }
    let day = second / 86_400;
    let mut stamp = *b"YYYY-MM-DDT00:00:00.000000+00:00";
    stamp[..11].copy_from_slice(&date_of(day));
    let of_day = second % 86_400;
    let micros = i64::from(micros);
    // Two digits each: hours, minutes, seconds, and the fraction's three pairs.
    for (at, value) in [
        (11, of_day / 3600),
        (14, of_day / 60 % 60),
        (17, of_day % 60),
        (20, micros / 10_000),
        (22, micros / 100 % 100),
        (24, micros % 100),
    ] {
        stamp[at] = b'0' + (value / 10) as u8;
        stamp[at + 1] = b'0' + (value % 10) as u8;
    }
    // A checked `from_utf8` here was a fifth of the cost of a timestamp (once per event).
    // SAFETY: `stamp` is an ASCII template in which only ASCII was written: the date is the 11
    // bytes of `date_of`, each an ASCII digit, `-` or `T` (checked there when formatted), and
    // every other byte `b'0' + d` with d < 10 (each value written is under 100: hours < 24,
    // minutes and seconds < 60, the fraction's pairs of a microsecond count < 1 000 000).
    // ASCII is valid UTF-8.
    out.push_str(unsafe { std::str::from_utf8_unchecked(&stamp) });
}

/// `YYYY-MM-DDT` of Unix day `day` (at least 0, so a four-digit year), from this thread's
/// cache when it was the last day asked for.
#[inline]
fn date_of(day: i64) -> [u8; 11] {
    let last = LAST_DAY.get();
    if last.day == day {
        return last.date;
    }
    let date = format_date(day);
    LAST_DAY.set(LastDay { day, date });
    date
}

/// [`date_of`] when the day changed: out of line, it is once a day.
#[cold]
#[inline(never)]
fn format_date(day: i64) -> [u8; 11] {
    let midnight = Timestamp::from_second(day * 86_400).expect("a Unix day of a valid timestamp");
    let text = midnight.strftime("%Y-%m-%dT").to_string();
    let mut date = [0; 11];
    date.copy_from_slice(text.as_bytes());
    // The SAFETY argument of `write_timestamp` rests on this.
    assert!(date.is_ascii(), "a date of four-digit year is ASCII");
    date
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// Any instant from 1970 to the end of year 9999 (whole seconds, as a history replay
        /// stamps, or with any fraction), appended after what the string held, in runs that
        /// stay on one day (the cache) and jumps between days: the formatted text.
        #[test]
        fn written_in_place_equals_formatted_anywhere(
            seconds in proptest::collection::vec(0i64..253_402_300_800, 1..6),
            step in 0i64..200_000,
            whole in proptest::bool::ANY,
            nanos in 0i32..1_000_000_000,
            before in "[ -~]{0,9}",
        ) {
            for first in seconds {
                for second in [first, first + step, first + 2 * step] {
                    let nanos = if whole { 0 } else { nanos };
                    let Ok(ts) = Timestamp::new(second, nanos) else { continue };
                    let mut out = before.clone();
                    write_timestamp(ts, &mut out);
                    proptest::prop_assert_eq!(out, format!("{before}{}", format_timestamp(ts)));
                }
            }
        }
    }

    #[test]
    fn now_has_the_fixed_shape() {
        let now = now_timestamp();
        assert_eq!(now.len(), "2026-03-31T12:00:00.123456+00:00".len());
        assert!(now.ends_with("+00:00"));
    }
}
