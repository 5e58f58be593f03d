//! The syslog stamp at the start of a dnsmasq log line (`Dec  4 12:00:00`): month, day and
//! time of day, with neither year nor zone. Pure: the caller passes the zone and the moment
//! the year is inferred from (jiff reads the host's zone from `/etc/localtime`; that read is
//! the caller's, so this crate stays free of I/O).

use jiff::civil::DateTime;
use jiff::ZonedDateTime;

/// A line's stamp as written: `%b %e %H:%M:%S` (dnsmasq's `log-facility=FILE` and syslog).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyslogStamp {
    /// 1 to 12.
    pub month: i8,
    /// 1 to 31 (not checked against the month: that needs the year).
    pub day: i8,
    /// 0 to 23.
    pub hour: i8,
    /// 0 to 59.
    pub minute: i8,
    /// 0 to 60 (a leap second is read as 59).
    pub second: i8,
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The stamp at the start of `line` (`Dec  4 12:00:00`, `Dec 14 ...`; a zero-padded day is
/// accepted too), or `None` when the line does not start with one. Allocates nothing.
pub fn parse_stamp(line: &[u8]) -> Option<SyslogStamp> {
    let s = line.get(..15)?;
    let month = MONTHS.iter().position(|m| s[..3] == m[..])? as i8 + 1;
    let digit = |b: u8| b.is_ascii_digit().then(|| (b - b'0') as i8);
    let two = |a: u8, b: u8| Some(digit(a)? * 10 + digit(b)?);
    if s[3] != b' ' || s[6] != b' ' || s[9] != b':' || s[12] != b':' {
        return None;
    }
    let day = if s[4] == b' ' {
        digit(s[5])?
    } else {
        two(s[4], s[5])?
    };
    let (hour, minute, second) = (two(s[7], s[8])?, two(s[10], s[11])?, two(s[13], s[14])?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if line.get(15).is_some_and(|&b| b != b' ') {
        return None;
    }
    Some(SyslogStamp {
        month,
        day,
        hour,
        minute,
        second: second.min(59),
    })
}

impl SyslogStamp {
    /// The moment this stamp names in `now`'s time zone, in the latest year that does not put
    /// it after `now`: a `Dec 31` line read on 1 January is last year's. A `Feb 29` goes back
    /// to the last leap year; a local time skipped or repeated by a clock change is taken as
    /// jiff's "compatible" choice (the later offset for a gap, the earlier for a fold).
    /// `None` only for a day the month never has (`Apr 31`).
    pub fn resolve(&self, now: &ZonedDateTime) -> Option<ZonedDateTime> {
        let tz = now.time_zone();
        let year = now.year();
        (0..=8).find_map(|back| {
            let dt = DateTime::new(
                year - back,
                self.month,
                self.day,
                self.hour,
                self.minute,
                self.second,
                0,
            )
            .ok()?;
            let z = dt.to_zoned_datetime(tz.clone()).ok()?;
            (z.timestamp() <= now.timestamp()).then_some(z)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    fn at(tz: &str, s: &str) -> ZonedDateTime {
        let tz = TimeZone::get(tz).unwrap();
        s.parse::<DateTime>()
            .unwrap()
            .to_zoned_datetime(tz)
            .unwrap()
    }

    #[test]
    fn stamps_are_read_at_the_line_start_only() {
        let s = parse_stamp(b"Dec  4 12:00:05 dnsmasq[1]: query[A] x from 1.2.3.4").unwrap();
        assert_eq!(
            (s.month, s.day, s.hour, s.minute, s.second),
            (12, 4, 12, 0, 5)
        );
        assert_eq!(parse_stamp(b"Mar 31 23:59:59").unwrap().day, 31);
        assert_eq!(parse_stamp(b"Mar 04 00:00:00 x").unwrap().day, 4);
        for bad in [
            &b"Dec  4 12:00"[..],
            b"Foo  4 12:00:00 x",
            b"Dec 32 12:00:00 x",
            b"Dec  4 24:00:00 x",
            b"Dec  4 12:00:00x",
            b" Dec  4 12:00:00",
            b"{\"ts\":\"2026\"}",
        ] {
            assert_eq!(parse_stamp(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_year_is_the_latest_that_is_not_in_the_future_across_new_year() {
        let now = at("Europe/Berlin", "2027-01-01T00:00:30");
        let dec = parse_stamp(b"Dec 31 23:59:50 dnsmasq")
            .unwrap()
            .resolve(&now)
            .unwrap();
        assert_eq!(dec.to_string(), "2026-12-31T23:59:50+01:00[Europe/Berlin]");
        let jan = parse_stamp(b"Jan  1 00:00:10 dnsmasq")
            .unwrap()
            .resolve(&now)
            .unwrap();
        assert_eq!(jan.to_string(), "2027-01-01T00:00:10+01:00[Europe/Berlin]");
        assert_eq!(
            jan.timestamp().as_second() - dec.timestamp().as_second(),
            20
        );
        // A second after now is last year's.
        let later = parse_stamp(b"Jan  1 00:00:31 x")
            .unwrap()
            .resolve(&now)
            .unwrap();
        assert_eq!(later.year(), 2026);
        // In another zone the same instant is another local time.
        let now_utc = now.with_time_zone(TimeZone::UTC);
        let dec_utc = parse_stamp(b"Dec 31 22:59:50 x")
            .unwrap()
            .resolve(&now_utc)
            .unwrap();
        assert_eq!(dec_utc.timestamp(), dec.timestamp());
    }

    #[test]
    fn leap_days_and_impossible_days() {
        let now = at("UTC", "2027-03-01T00:00:00");
        let feb29 = parse_stamp(b"Feb 29 10:00:00 x")
            .unwrap()
            .resolve(&now)
            .unwrap();
        assert_eq!(feb29.year(), 2024);
        assert_eq!(
            parse_stamp(b"Apr 31 10:00:00 x").unwrap().resolve(&now),
            None
        );
    }
}
