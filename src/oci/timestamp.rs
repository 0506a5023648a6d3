//! RFC 3339 timestamps as image configs carry them (`2024-05-01T12:30:00.123456789Z`), converted
//! to and from Unix seconds without a calendar crate (proleptic Gregorian, UTC).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch of an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`,
/// `T` or a space, `z` or `Z`), or `None` when it is not one. Fractions are dropped.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = bytes.get(from..from + len)?;
        part.iter().try_fold(0i64, |acc, b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let sep = |at: usize, allowed: &[u8]| bytes.get(at).is_some_and(|b| allowed.contains(b));
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let well_placed =
        sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":");
    let in_range = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    if !well_placed || !in_range {
        return None;
    }
    let mut at = 19;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
    }
    let offset = match bytes.get(at)? {
        b'Z' | b'z' if at + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == bytes.len() && sep(at + 3, b":") => {
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if h >= 24 || m >= 60 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60)
}

/// Unix seconds of an HTTP date in any of RFC 9110's three forms (`Sun, 06 Nov 1994 08:49:37
/// GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`, `Sun Nov  6 08:49:37 1994`), as Go's `http.ParseTime`
/// reads a `Last-Modified`; `None` for anything else (or a time before 1970), so a server's odd
/// date is ignored as BuildKit ignores one it cannot parse.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    let seconds = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(seconds).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (docker's `time.RFC3339` in UTC).
pub fn format_rfc3339(seconds: i64) -> String {
    let (date, (hour, minute, second)) = split(seconds);
    format!("{date}T{hour:02}:{minute:02}:{second:02}Z")
}

/// A time as its source wrote it: Unix seconds and the offset from UTC it was given in (a git
/// committer's zone; none for HTTP dates and tar headers). BuildKit keeps the zone of a git
/// commit's time when it writes an image's times from it (`2020-09-13T15:26:40+03:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZonedTime {
    pub seconds: i64,
    /// Seconds east of UTC.
    pub offset: i32,
}

impl ZonedTime {
    /// A UTC time.
    pub fn utc(seconds: i64) -> ZonedTime {
        ZonedTime { seconds, offset: 0 }
    }

    /// RFC 3339 in its own zone, as Go writes a `time.Time` (`Z` for UTC, else `±HH:MM`).
    pub fn to_rfc3339(&self) -> String {
        if self.offset == 0 {
            return format_rfc3339(self.seconds);
        }
        let (date, (hour, minute, second)) = split(self.seconds + i64::from(self.offset));
        let sign = if self.offset < 0 { '-' } else { '+' };
        let minutes = self.offset.unsigned_abs() / 60;
        format!(
            "{date}T{hour:02}:{minute:02}:{second:02}{sign}{:02}:{:02}",
            minutes / 60,
            minutes % 60
        )
    }

    /// git's form of an offset (`+0300`, `-0230`, the end of `%ci`) as seconds east of UTC.
    pub fn parse_git_offset(text: &str) -> Option<i32> {
        let (sign, digits) = match text.as_bytes().first()? {
            b'+' => (1, &text[1..]),
            b'-' => (-1, &text[1..]),
            _ => return None,
        };
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours: i32 = digits[..2].parse().ok()?;
        let minutes: i32 = digits[2..].parse().ok()?;
        Some(sign * (hours * 3600 + minutes * 60))
    }
}

/// `YYYY-MM-DD HH:MM:SS +0000 UTC`: Go's `time.Time.String()` of a UTC time, which is what docker
/// prints for `{{.CreatedAt}}`.
pub fn format_go_utc(seconds: i64) -> String {
    let (date, (hour, minute, second)) = split(seconds);
    format!("{date} {hour:02}:{minute:02}:{second:02} +0000 UTC")
}

/// The current time as RFC 3339 with nanoseconds, as BuildKit writes `created`.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let (date, (hour, minute, second)) = split(seconds);
    format!(
        "{date}T{hour:02}:{minute:02}:{second:02}.{:09}Z",
        now.subsec_nanos()
    )
}

/// The current Unix time in seconds.
pub fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// (`YYYY-MM-DD`, (hour, minute, second)) of Unix seconds.
fn split(seconds: i64) -> (String, (i64, i64, i64)) {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        (rest / 3600, rest % 3600 / 60, rest % 60),
    )
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn zoned_times_are_written_in_their_zone_as_go_writes_them() {
        use super::ZonedTime;
        let at = |seconds, offset| ZonedTime { seconds, offset }.to_rfc3339();
        assert_eq!(at(1_600_000_000, 3 * 3600), "2020-09-13T15:26:40+03:00");
        assert_eq!(
            at(1_600_000_000, -(2 * 3600 + 30 * 60)),
            "2020-09-13T09:56:40-02:30"
        );
        assert_eq!(at(1_600_000_000, 0), "2020-09-13T12:26:40Z");
        assert_eq!(ZonedTime::parse_git_offset("+0300"), Some(10800));
        assert_eq!(ZonedTime::parse_git_offset("-0230"), Some(-9000));
        assert_eq!(ZonedTime::parse_git_offset("+0000"), Some(0));
        for bad in ["0300", "+030", "+03:00", "", "+ab00"] {
            assert_eq!(ZonedTime::parse_git_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        // The obsolete forms Go's http.ParseTime also reads.
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn parses_rfc3339_variants() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-02-29T12:00:00Z", Some(1_709_208_000)),
            ("2024-02-29T12:00:00.123456789Z", Some(1_709_208_000)),
            ("2024-02-29t12:00:00z", Some(1_709_208_000)),
            ("2024-02-29 12:00:00Z", Some(1_709_208_000)),
            ("2024-02-29T14:30:00+02:30", Some(1_709_208_000)),
            ("2024-02-29T09:00:00-03:00", Some(1_709_208_000)),
            ("1969-12-31T23:59:59Z", Some(-1)),
            ("0001-01-01T00:00:00Z", Some(-62_135_596_800)),
            ("2023-02-29T12:00:00Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-01-01T24:00:00Z", None),
            ("2024-01-01T00:00:00", None),
            ("2024-01-01T00:00:00.Z", None),
            ("2024-01-01T00:00:00+0100", None),
            ("2024-01-01T00:00:00Zjunk", None),
            ("2024-01-01", None),
            ("", None),
            ("２０２４-01-01T00:00:00Z", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), *want, "{text}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for seconds in [0, 1_709_208_000, -1, -62_135_596_800, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(seconds)), Some(seconds));
        }
        assert_eq!(format_rfc3339(1_709_208_000), "2024-02-29T12:00:00Z");
        assert_eq!(
            format_go_utc(1_709_208_000),
            "2024-02-29 12:00:00 +0000 UTC"
        );
        let now = now_rfc3339();
        assert!(
            parse_rfc3339(&now).is_some_and(|s| s > 1_700_000_000),
            "{now}"
        );
    }
}
