//! `--since` / `--until` values: a duration back from now, or a moment. Pure: `now` (with the
//! host's zone, which the caller reads) is passed in.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::{Timestamp, ZonedDateTime};

/// A `--since`/`--until` value that is neither a duration nor a time; `Display` says what is
/// accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhenError {
    input: String,
}

impl fmt::Display for WhenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a time: use a duration back from now (90s, 20m, 2h, 1d), RFC 3339 \
             (2026-12-04T12:00:00Z) or YYYY-MM-DD[ HH:MM[:SS]] in local time",
            self.input
        )
    }
}

impl std::error::Error for WhenError {}

/// Reads WHEN: `N` followed by `s`, `m`, `h` or `d` (that long before `now`); an RFC 3339
/// time with its offset (`2026-12-04T12:00:00Z`, `...+01:00`, fractions allowed); or
/// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (a `T` may stand for the space)
/// in `now`'s time zone, a local time skipped or repeated by a clock change taken as jiff's
/// "compatible" choice.
pub fn parse_when(input: &str, now: &ZonedDateTime) -> Result<Timestamp, WhenError> {
    let err = || WhenError {
        input: input.to_string(),
    };
    let s = input.trim();
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c)) {
        let digits = &s[..s.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = digits.parse().map_err(|_| err())?;
            let per = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => 86_400,
            };
            let secs = n.checked_mul(per).ok_or_else(err)?;
            let span = jiff::SignedDuration::from_secs(secs);
            return now.timestamp().checked_sub(span).map_err(|_| err());
        }
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    let civil = if s.len() == 10 {
        s.parse::<Date>().ok().map(|d| d.at(0, 0, 0, 0))
    } else {
        let (date, time) = s.split_at_checked(10).ok_or_else(err)?;
        let time = time.strip_prefix([' ', 'T']).ok_or_else(err)?;
        let date = date.parse::<Date>().map_err(|_| err())?;
        let parts: Vec<&str> = time.split(':').collect();
        let two = |p: &str| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<i8>().ok())
                .flatten()
        };
        match parts[..] {
            [h, m] => Some((two(h), two(m), Some(0))),
            [h, m, sec] => Some((two(h), two(m), two(sec))),
            _ => None,
        }
        .and_then(|(h, m, sec)| {
            DateTime::new(date.year(), date.month(), date.day(), h?, m?, sec?, 0).ok()
        })
    };
    let civil = civil.ok_or_else(err)?;
    civil
        .to_zoned_datetime(now.time_zone().clone())
        .map(|z| z.timestamp())
        .map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    fn now() -> ZonedDateTime {
        "2026-12-04T12:00:00"
            .parse::<DateTime>()
            .unwrap()
            .to_zoned_datetime(TimeZone::get("Europe/Berlin").unwrap())
            .unwrap()
    }

    fn when(s: &str) -> String {
        parse_when(s, &now()).unwrap().to_string()
    }

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(when("90s"), "2026-12-04T10:58:30Z");
        assert_eq!(when("20m"), "2026-12-04T10:40:00Z");
        assert_eq!(when("2h"), "2026-12-04T09:00:00Z");
        assert_eq!(when("1d"), "2026-12-03T11:00:00Z");
        assert_eq!(when(" 0s "), "2026-12-04T11:00:00Z");
    }

    #[test]
    fn times_are_rfc3339_or_local() {
        assert_eq!(when("2026-12-04T12:00:00Z"), "2026-12-04T12:00:00Z");
        assert_eq!(
            when("2026-12-04T12:00:00.5+02:00"),
            "2026-12-04T10:00:00.5Z"
        );
        assert_eq!(when("2026-12-04"), "2026-12-03T23:00:00Z");
        assert_eq!(when("2026-12-04 13:30"), "2026-12-04T12:30:00Z");
        assert_eq!(when("2026-12-04 13:30:15"), "2026-12-04T12:30:15Z");
        assert_eq!(when("2026-07-04T13:30"), "2026-07-04T11:30:00Z");
    }

    #[test]
    fn anything_else_is_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "s",
            "-5m",
            "5 m",
            "5w",
            "2026-12-04 1:30",
            "2026-13-01",
            "2026-12-04 13",
            "yesterday",
            "2026-12-04 13:30:15:00",
            "99999999999999999999d",
        ] {
            let e = parse_when(bad, &now()).unwrap_err();
            assert!(e.to_string().contains("90s, 20m"), "{bad:?}: {e}");
        }
    }
}
