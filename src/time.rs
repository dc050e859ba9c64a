//! Wall-clock time as plain data.
//!
//! The core never reads a clock: every event carries a [`Timestamp`] taken
//! by the shell from the host. Formatting lives here because both SigV4
//! (`20150830T123600Z`) and the stored envelope (RFC 3339) need it, and the
//! filter must not pull in a date crate for two formatters.

use std::time::Duration;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// `self + d`, saturating instead of overflowing.
    pub fn plus(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Calendar fields (UTC) of this instant, at second precision.
    pub fn civil(self) -> Civil {
        let secs = self.as_secs();
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// SigV4 `x-amz-date` form: `YYYYMMDDTHHMMSSZ`.
    pub fn amz_date(self) -> String {
        let c = self.civil();
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }

    /// SigV4 credential-scope date: `YYYYMMDD`.
    pub fn amz_day(self) -> String {
        let c = self.civil();
        format!("{:04}{:02}{:02}", c.year, c.month, c.day)
    }

    /// HTTP date (RFC 9110 IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn http_date(self) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let c = self.civil();
        let weekday = DAYS[(self.as_secs() / 86_400 % 7) as usize];
        let month = MONTHS[(c.month as usize).saturating_sub(1) % 12];
        format!(
            "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
            c.day, c.year, c.hour, c.minute, c.second
        )
    }

    /// RFC 3339 UTC at second precision: `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn rfc3339(self) -> String {
        let c = self.civil();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }
}

impl Timestamp {
    /// Parses an HTTP date in its preferred form (RFC 9110 IMF-fixdate,
    /// `Sun, 06 Nov 1994 08:49:37 GMT`), as sent in `Date` and
    /// `Last-Modified`. Other forms give `None`.
    pub fn parse_http_date(s: &str) -> Option<Timestamp> {
        let mut parts = s.trim().split(' ');
        let _weekday = parts.next()?.strip_suffix(',')?;
        // IMF-fixdate fields have a fixed number of digits; a longer year
        // would also overflow the seconds below.
        let day = fixed_digits(parts.next()?, 2)? as u32;
        let month = parts.next()?;
        let year = fixed_digits(parts.next()?, 4)? as i64;
        let mut hms = parts.next()?.split(':');
        let (h, m, sec) = (
            fixed_digits(hms.next()?, 2)?,
            fixed_digits(hms.next()?, 2)?,
            fixed_digits(hms.next()?, 2)?,
        );
        if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
            return None;
        }
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
        if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
            return None;
        }
        let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
        Some(Timestamp::from_secs(
            days * 86_400 + h * 3600 + m * 60 + sec,
        ))
    }
}

impl Timestamp {
    /// Parses an RFC 3339 date-time (`2026-11-27T10:00:00Z`, optional
    /// fraction, `Z` or a `±HH:MM` offset), as the envelope's
    /// `exported_at` holds it. Dates before 1970 and other forms give
    /// `None`.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let s = s.trim();
        let b = s.as_bytes();
        let digits = |from: usize, len: usize| fixed_digits(s.get(from..from + len)?, len);
        let sep = |i: usize, c: u8| b.get(i) == Some(&c);
        let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
        let (h, m, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
        let t = matches!(b.get(10), Some(b'T' | b't' | b' '));
        if !(sep(4, b'-') && sep(7, b'-') && t && sep(13, b':') && sep(16, b':')) {
            return None;
        }
        let mut rest = s.get(19..)?;
        let mut millis = 0;
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            let first3: String = frac[..n].chars().chain("000".chars()).take(3).collect();
            millis = first3.parse::<u64>().ok()?;
            rest = &frac[n..];
        }
        let offset_min: i64 = match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                // `time-numoffset = ("+" / "-") 2DIGIT ":" 2DIGIT`: no
                // second sign inside.
                let oh = fixed_digits(rest.get(1..3)?, 2)? as i64;
                let om = fixed_digits(rest.get(4..6)?, 2)? as i64;
                if rest.len() != 6 || rest.as_bytes().get(3) != Some(&b':') || oh > 23 || om > 59 {
                    return None;
                }
                sign * (oh * 60 + om)
            }
        };
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
            return None;
        }
        let days = days_from_civil(i64::try_from(year).ok()?, month as u32, day as u32);
        let secs = days * 86_400 + (h * 3600 + m * 60 + sec) as i64 - offset_min * 60;
        let secs = u64::try_from(secs).ok()?;
        Some(Timestamp(secs.checked_mul(1000)?.checked_add(millis)?))
    }
}

/// `part` as a number if it is exactly `len` ASCII digits (no sign, no
/// space), as the fixed-width fields of HTTP and RFC 3339 dates are.
fn fixed_digits(part: &str, len: usize) -> Option<u64> {
    if part.len() != len || !part.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// (year, month, day) to days since 1970-01-01; inverse of
/// [`civil_from_days`] (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
/// Howard Hinnant's `civil_from_days` algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // 2015-08-30T12:36:00Z, the SigV4 suite's timestamp.
        let t = Timestamp::from_secs(1_440_938_160);
        assert_eq!(t.amz_date(), "20150830T123600Z");
        assert_eq!(t.amz_day(), "20150830");
        assert_eq!(t.rfc3339(), "2015-08-30T12:36:00Z");
        assert_eq!(Timestamp::from_secs(0).rfc3339(), "1970-01-01T00:00:00Z");
        // Leap day and end of year.
        assert_eq!(
            Timestamp::from_secs(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            Timestamp::from_secs(1_798_761_599).rfc3339(),
            "2026-12-31T23:59:59Z"
        );
    }

    #[test]
    fn parses_http_dates() {
        let t = Timestamp::parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT").unwrap();
        assert_eq!(t, Timestamp::from_secs(1_440_938_160));
        assert_eq!(t.http_date(), "Sun, 30 Aug 2015 12:36:00 GMT");
        assert_eq!(Timestamp(0).http_date(), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = Timestamp::parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT").unwrap();
        assert_eq!(t.http_date(), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(t.rfc3339(), "2000-02-29T00:00:00Z");
        for bad in [
            "",
            "Sun 30 Aug 2015 12:36:00 GMT",
            "Sun, 30 Foo 2015 12:36:00 GMT",
            "Sun, 30 Aug 2015 12:36 GMT",
            "Sun, 30 Aug 2015 12:36:00 UTC",
            "Sun, 32 Aug 2015 12:36:00 GMT",
            "Sun, 6 Aug 2015 12:36:00 GMT",
            "Sun, 30 Aug +2015 12:36:00 GMT",
            "Sun, 30 Aug 2015 12:36:+0 GMT",
            // Found by fuzzing: a 12-digit year overflowed the seconds.
            "Sun, 06 Nov 100000000000 08:49:37 GMT",
            "Sun, 06 Nov 9223372036854775807 08:49:37 GMT",
        ] {
            assert_eq!(Timestamp::parse_http_date(bad), None, "{bad}");
        }
        // Round trip over many days.
        for days in (0..40_000u64).step_by(37) {
            let t = Timestamp::from_secs(days * 86_400 + 3_723);
            let c = t.civil();
            assert_eq!(days_from_civil(c.year, c.month, c.day), days as i64);
        }
    }

    #[test]
    fn parses_rfc3339() {
        let t = Timestamp::from_secs(1_440_938_160);
        assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2015-08-30T12:36:00.250Z"),
            Some(Timestamp(1_440_938_160_250))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2015-08-30T14:36:00+02:00"),
            Some(t)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2015-08-30T10:36:00-02:00"),
            Some(t)
        );
        for bad in [
            "",
            "2015-08-30",
            "2015-08-30T12:36:00",
            "2015-08-30T12:36:00.Z",
            "2015-13-30T12:36:00Z",
            "2015-08-30T25:36:00Z",
            "2015-08-30T12:36:00+0200",
            "1969-12-31T23:59:59Z",
            "2015-08-30X12:36:00Z",
            "２015-08-30T12:36:00Z",
            // Found by fuzzing: a sign inside the offset's fields.
            "2015-08-30T14:36:00+02:-3",
            "2015-08-30T14:36:00++1:00",
            "2015-08-30T14:36:00-02:+0",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp(u64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(10)), Timestamp(u64::MAX));
        assert_eq!(Timestamp(5).since(Timestamp(10)), Duration::ZERO);
        assert_eq!(
            Timestamp(1500).since(Timestamp(500)),
            Duration::from_secs(1)
        );
    }
}
