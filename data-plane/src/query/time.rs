//! Time bounds. `since`/`until` are parsed here and resolved in Rust against
//! an injected "now", so the SQL compares `time` with a literal (never
//! `CURRENT_TIMESTAMP`): results are reproducible, tests are exact, and Arc's
//! partition pruner can read the bound.
//!
//! Accepted forms (anything else is a [`QueryError`], a 400; the original
//! pasted it into SQL and answered 500):
//! - `Nh`, `Nd`, `Nm` (`m` is minutes, as the original), N ≤ 8760 hours,
//!   365 days or 525600 minutes;
//! - an RFC 3339 / ISO 8601 timestamp: `2026-11-25`, `2026-11-25T12:00`,
//!   `2026-11-25 12:00:00.123456789`, with `Z` or a `±HH:MM` / `±HHMM` /
//!   `±HH` offset (none means UTC); sub-microsecond digits are truncated;
//! - `now`, for `until` only, meaning "no upper bound" (as the original).

use super::QueryError;
use jiff::{Span, civil};
use std::time::{SystemTime, UNIX_EPOCH};

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SEC;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z: the range both
/// literal forms can spell.
const MIN_MICROS: i64 = -62_135_596_800 * MICROS_PER_SEC;
const MAX_MICROS: i64 = 253_402_300_800 * MICROS_PER_SEC - 1;
/// Day 0 of [`UnixMicros`]; calendar arithmetic (leap years, month lengths,
/// day numbers) is the `jiff` crate's.
const EPOCH_DATE: civil::Date = civil::Date::constant(1970, 1, 1);

const SINCE_RULE: &str = "must be Nh, Nd or Nm (N <= 8760 hours, 365 days, 525600 minutes) \
     or an RFC 3339 timestamp";
const UNTIL_RULE: &str = "must be Nh, Nd or Nm (N <= 8760 hours, 365 days, 525600 minutes), \
     an RFC 3339 timestamp, or now";

/// Microseconds since the Unix epoch, UTC: Arc's storage precision and the
/// embedded store's `time` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    /// The system clock now.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    /// Parses an RFC 3339 / ISO 8601 timestamp (the forms in the module docs;
    /// also Arc's RFC3339Nano response strings).
    pub fn parse_rfc3339(value: &str) -> Option<Self> {
        parse_timestamp(value).map(Self)
    }

    /// `2026-11-25T12:00:00.5Z`: RFC 3339 in UTC with trailing fractional
    /// zeros dropped, as Go's `RFC3339Nano` (what Arc returns) writes it.
    pub fn to_rfc3339(self) -> String {
        let (date, time, micros) = split(self.0);
        let mut out = format!("{date}T{time}");
        if micros != 0 {
            let frac = format!("{micros:06}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }

    /// `2026-11-25 12:00:00.000000`: the form DuckDB casts to `TIMESTAMP`
    /// and Arc's partition pruner parses.
    pub fn to_sql_timestamp(self) -> String {
        let (date, time, micros) = split(self.0);
        format!("{date} {time}.{micros:06}")
    }

    /// `micros` earlier, clamped to the representable range.
    pub fn minus(self, micros: i64) -> Self {
        Self(self.0.saturating_sub(micros).clamp(MIN_MICROS, MAX_MICROS))
    }
}

/// One end of a time window, before "now" is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// This many microseconds before now.
    Ago(i64),
    /// An absolute instant.
    At(UnixMicros),
}

impl TimeBound {
    /// Parses a `since` value; empty means none.
    pub fn parse_since(value: &str) -> Result<Option<Self>, QueryError> {
        if value.is_empty() {
            return Ok(None);
        }
        Self::parse_bound(value)
            .map(Some)
            .ok_or(QueryError::invalid("since", SINCE_RULE))
    }

    /// Parses an `until` value; empty or `now` means none.
    pub fn parse_until(value: &str) -> Result<Option<Self>, QueryError> {
        if value.is_empty() || value == "now" {
            return Ok(None);
        }
        Self::parse_bound(value)
            .map(Some)
            .ok_or(QueryError::invalid("until", UNTIL_RULE))
    }

    fn parse_bound(value: &str) -> Option<Self> {
        parse_relative(value)
            .map(Self::Ago)
            .or_else(|| parse_timestamp(value).map(|t| Self::At(UnixMicros(t))))
    }

    /// The instant this bound names, given `now`.
    pub fn resolve(self, now: UnixMicros) -> UnixMicros {
        match self {
            Self::Ago(micros) => now.minus(micros),
            Self::At(t) => t,
        }
    }
}

/// `Nh` / `Nd` / `Nm` to microseconds, within the original's ranges.
fn parse_relative(value: &str) -> Option<i64> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let (max, per) = match unit {
        'h' => (8760, MICROS_PER_HOUR),
        'd' => (365, MICROS_PER_DAY),
        'm' => (525_600, MICROS_PER_MINUTE),
        _ => return None,
    };
    (n <= max).then_some(n * per)
}

/// A fixed-width run of ASCII digits at the front of `s`.
fn digits(s: &str, n: usize) -> Option<(i64, &str)> {
    let head = s.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[n..]))
}

fn parse_timestamp(s: &str) -> Option<i64> {
    let (year, rest) = digits(s, 4)?;
    let rest = rest.strip_prefix('-')?;
    let (month, rest) = digits(rest, 2)?;
    let rest = rest.strip_prefix('-')?;
    let (day, rest) = digits(rest, 2)?;
    if year < 1 {
        return None;
    }
    let date = civil::Date::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
    )
    .ok()?;
    let date_micros = i64::from(date.since(EPOCH_DATE).ok()?.get_days()) * MICROS_PER_DAY;
    if rest.is_empty() {
        return Some(date_micros);
    }
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix('t'))
        .or_else(|| rest.strip_prefix(' '))?;
    let (hour, rest) = digits(rest, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (minute, mut rest) = digits(rest, 2)?;
    let mut second = 0;
    let mut micros = 0;
    if let Some(after) = rest.strip_prefix(':') {
        (second, rest) = digits(after, 2)?;
        if let Some(after) = rest.strip_prefix('.') {
            let len = after.bytes().take_while(u8::is_ascii_digit).count();
            if !(1..=9).contains(&len) {
                return None;
            }
            let frac = &after[..len];
            micros = format!("{:0<6}", &frac[..len.min(6)]).parse().ok()?;
            rest = &after[len..];
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let offset_minutes = parse_offset(rest)?;
    let local = date_micros
        + hour * MICROS_PER_HOUR
        + minute * MICROS_PER_MINUTE
        + second * MICROS_PER_SEC
        + micros;
    let utc = local - offset_minutes * MICROS_PER_MINUTE;
    (MIN_MICROS..=MAX_MICROS).contains(&utc).then_some(utc)
}

/// `""`, `Z`, `±HH:MM`, `±HHMM`, `±HH` to minutes east of UTC.
fn parse_offset(s: &str) -> Option<i64> {
    if s.is_empty() || s == "Z" || s == "z" {
        return Some(0);
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, rest) = digits(&s[1..], 2)?;
    let minutes = match rest {
        "" => 0,
        _ => {
            let rest = rest.strip_prefix(':').unwrap_or(rest);
            let (m, tail) = digits(rest, 2)?;
            if !tail.is_empty() {
                return None;
            }
            m
        }
    };
    (hours <= 23 && minutes <= 59).then_some(sign * (hours * 60 + minutes))
}

/// `("YYYY-MM-DD", "HH:MM:SS", micros)` of a clamped instant.
fn split(micros: i64) -> (String, String, i64) {
    let micros = micros.clamp(MIN_MICROS, MAX_MICROS);
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    // within 0001-01-01..=9999-12-31 by the clamp, so the date always exists
    let date = Span::new()
        .try_days(days)
        .and_then(|span| EPOCH_DATE.checked_add(span))
        .unwrap_or(EPOCH_DATE);
    let secs = in_day / MICROS_PER_SEC;
    (
        format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        in_day % MICROS_PER_SEC,
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    const NOW: UnixMicros = UnixMicros(1_795_608_000_000_000); // 2026-11-25T12:00:00Z

    #[test]
    fn relative_forms_and_ranges() {
        let at = |s: &str| TimeBound::parse_since(s).unwrap().unwrap().resolve(NOW);
        assert_eq!(at("24h"), UnixMicros(NOW.0 - 24 * MICROS_PER_HOUR));
        assert_eq!(at("7d"), UnixMicros(NOW.0 - 7 * MICROS_PER_DAY));
        assert_eq!(at("30m"), UnixMicros(NOW.0 - 30 * MICROS_PER_MINUTE));
        assert_eq!(at("8760h"), at("365d"));
        assert_eq!(at("525600m"), at("365d"));
        for bad in [
            "8761h",
            "366d",
            "525601m",
            "h",
            "-1h",
            "1w",
            "1H",
            "1.5h",
            "1 h",
            "now",
            "٣h",
            "2026-13-01",
            "2026-02-29",
            "2026-11-25T24:00",
            "2026-11-25T12",
            "yesterday",
            "2026-11-25T12:00:00.",
            "2026-11-25T12:00:00.1234567890",
            "2026-11-25T12:00+2",
            "'; DROP TABLE x; --",
        ] {
            let err = TimeBound::parse_since(bad).unwrap_err();
            assert_eq!(err.field(), "since", "{bad}");
        }
        assert_eq!(TimeBound::parse_since("").unwrap(), None);
        assert_eq!(TimeBound::parse_until("now").unwrap(), None);
        assert_eq!(
            TimeBound::parse_until("bogus").unwrap_err().field(),
            "until"
        );
    }

    #[test]
    fn absolute_forms() {
        let t = |s: &str| UnixMicros::parse_rfc3339(s).unwrap();
        assert_eq!(t("2026-11-25T12:00:00Z"), NOW);
        assert_eq!(t("2026-11-25 12:00:00"), NOW);
        assert_eq!(t("2026-11-25t12:00"), NOW);
        assert_eq!(t("2026-11-25T14:00:00+02:00"), NOW);
        assert_eq!(t("2026-11-25T07:30:00-0430"), NOW);
        assert_eq!(t("2026-11-25T13:00:00+01"), NOW);
        assert_eq!(t("2026-11-25"), UnixMicros(NOW.0 - 12 * MICROS_PER_HOUR));
        assert_eq!(
            t("2026-11-25T12:00:00.123456789Z"),
            UnixMicros(NOW.0 + 123_456)
        );
        assert_eq!(
            t("2024-02-29T00:00:00Z").to_rfc3339(),
            "2024-02-29T00:00:00Z"
        );
        assert_eq!(t("1969-12-31T23:59:59.5Z"), UnixMicros(-500_000));
    }

    #[test]
    fn formatting() {
        assert_eq!(NOW.to_sql_timestamp(), "2026-11-25 12:00:00.000000");
        assert_eq!(NOW.to_rfc3339(), "2026-11-25T12:00:00Z");
        assert_eq!(
            UnixMicros(NOW.0 + 120).to_rfc3339(),
            "2026-11-25T12:00:00.00012Z"
        );
        assert_eq!(
            UnixMicros(-1).to_sql_timestamp(),
            "1969-12-31 23:59:59.999999"
        );
        assert_eq!(
            UnixMicros(i64::MIN).to_sql_timestamp(),
            "0001-01-01 00:00:00.000000"
        );
        assert_eq!(
            UnixMicros(i64::MAX).to_sql_timestamp(),
            "9999-12-31 23:59:59.999999"
        );
    }
}
