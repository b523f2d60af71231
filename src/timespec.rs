//! Parsing the times and durations users type: `--at`, `--busy-timeout`, `keep_within`.
//! Pure: "now" is a parameter, so every form is unit-tested without a clock.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use std::time::Duration;

/// A time or duration the user typed that means nothing we accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeSpecError {
    /// Lists every accepted form, so the fix is in the message.
    #[error(
        "cannot read {0:?} as a time; use RFC 3339 (2024-01-01T10:00:00Z, 2024-01-01T12:00:00+02:00), \
a date (2024-01-01, midnight UTC), \"2024-01-01 10:00[:00]\" (UTC), or a relative time (\"2h ago\", \"3days ago\")"
    )]
    BadTime(String),
    /// Durations use humantime's units.
    #[error("cannot read {0:?} as a duration: {1}; use e.g. 30s, 15m, 36h, 10d, 2weeks")]
    BadDuration(String, String),
    /// A relative time so far back that it leaves the calendar.
    #[error("{0:?} is too far in the past")]
    OutOfRange(String),
}

/// Parses a duration such as `30s`, `15m`, `2 weeks` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, TimeSpecError> {
    let normalized = join_number_units(text.trim());
    humantime::parse_duration(&normalized)
        .map_err(|e| TimeSpecError::BadDuration(text.to_string(), e.to_string()))
}

/// Parses an instant for `--at`, interpreting zone-less forms as UTC and relative forms
/// against `now`.
pub fn parse_instant(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeSpecError> {
    let s = text.trim();
    let bad = || TimeSpecError::BadTime(text.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    if s.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(rel) = s.strip_suffix("ago").or_else(|| s.strip_suffix("AGO")) {
        let d = parse_duration(rel).map_err(|_| bad())?;
        let d =
            chrono::Duration::from_std(d).map_err(|_| TimeSpecError::OutOfRange(text.into()))?;
        return now
            .checked_sub_signed(d)
            .ok_or_else(|| TimeSpecError::OutOfRange(text.to_string()));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // RFC 3339 also allows a space (or lowercase t) between date and time.
    if let Ok(t) = DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1)) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()).ok_or_else(bad);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(n.and_utc());
        }
    }
    Err(bad())
}

/// humantime wants `3days`; people type `3 days`. Joins a number to the unit after it.
fn join_number_units(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_digit = false;
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !(prev_digit && c.is_alphabetic()) && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        prev_digit = c.is_ascii_digit();
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 15, 12, 0, 0).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s, now()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn rfc3339_with_zone_and_offset() {
        assert_eq!(at("2024-01-01T10:00:00Z"), utc(2024, 1, 1, 10, 0, 0));
        assert_eq!(at("2024-01-01T12:00:00+02:00"), utc(2024, 1, 1, 10, 0, 0));
        assert_eq!(at("2024-01-01 12:00:00-01:30"), utc(2024, 1, 1, 13, 30, 0));
        assert_eq!(
            at("2024-01-01T10:00:00.750Z"),
            utc(2024, 1, 1, 10, 0, 0) + chrono::Duration::milliseconds(750)
        );
    }

    #[test]
    fn bare_date_is_midnight_utc() {
        assert_eq!(at("2024-01-01"), utc(2024, 1, 1, 0, 0, 0));
        assert_eq!(at("2024-02-29"), utc(2024, 2, 29, 0, 0, 0));
    }

    #[test]
    fn zoneless_datetime_is_utc() {
        assert_eq!(at("2024-01-01 10:00"), utc(2024, 1, 1, 10, 0, 0));
        assert_eq!(at("2024-01-01 10:00:05"), utc(2024, 1, 1, 10, 0, 5));
        assert_eq!(at("2024-01-01T10:00"), utc(2024, 1, 1, 10, 0, 0));
    }

    #[test]
    fn relative_times() {
        assert_eq!(at("2h ago"), now() - chrono::Duration::hours(2));
        assert_eq!(at("3days ago"), now() - chrono::Duration::days(3));
        assert_eq!(at("3 days ago"), now() - chrono::Duration::days(3));
        assert_eq!(at("1h 30m ago"), now() - chrono::Duration::minutes(90));
        assert_eq!(at("now"), now());
    }

    #[test]
    fn rejects_nonsense_with_help() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-02-30",
            "ago",
            "5 parsecs ago",
            "12:00",
        ] {
            let err = parse_instant(bad, now()).unwrap_err();
            assert!(err.to_string().contains("RFC 3339"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(
            parse_duration("2 weeks").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        let err = parse_duration("soon").unwrap_err().to_string();
        assert!(err.contains("15m"), "{err}");
    }
}
