//! Timestamps as Arc's JSON shows them and as SQL literals write them:
//! microseconds since the Unix epoch ⇄ RFC 3339 text (UTC).

use jiff::{Timestamp, civil};

const US_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a valid proleptic Gregorian date (calendar
/// arithmetic is the `jiff` crate's); `None` for a date that does not exist.
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    let date = civil::Date::new(
        i16::try_from(y).ok()?,
        i8::try_from(m).ok()?,
        i8::try_from(d).ok()?,
    )
    .ok()?;
    let epoch = civil::Date::constant(1970, 1, 1);
    Some(i64::from(date.since(epoch).ok()?.get_days()))
}

/// Go's `time.RFC3339Nano` in UTC, as Arc Go writes timestamps: fractional
/// digits with trailing zeros trimmed (none at all on a whole second) and a
/// `Z`. Example: 1_735_689_600_001_500 → `2025-01-01T00:00:00.0015Z`.
pub fn rfc3339_nano(us: i64) -> String {
    // jiff writes RFC 3339 in UTC with as many fractional digits as needed
    match Timestamp::from_microsecond(us) {
        Ok(t) => t.to_string(),
        Err(_) => format!("out-of-range timestamp {us}"),
    }
}

/// Go's `time.RFC3339` (whole seconds, `Z`) for a `SystemTime`.
pub fn rfc3339_now() -> String {
    let us = now_us();
    rfc3339_nano(us - us.rem_euclid(1_000_000))
}

/// Microseconds since the epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses the timestamp literals DuckDB casts to `TIMESTAMP` that a query
/// builder would write: `YYYY-MM-DD`, optionally `T` or space and
/// `HH:MM:SS[.fraction]`, optionally `Z` or an offset `±HH[:MM]`.
/// Returns microseconds since the epoch (UTC); `None` if it is not one.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut us = days_from_civil(y, mo, d)? * US_PER_DAY;
    let mut i = 10;
    if i < b.len() && (b[i] == b'T' || b[i] == b't' || b[i] == b' ') {
        if b.len() < i + 9 || b[i + 3] != b':' || b[i + 6] != b':' {
            return None;
        }
        let (h, mi, se) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?, num(i + 7..i + 9)?);
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        us += ((h * 60 + mi) * 60 + se) * 1_000_000;
        i += 9;
        if i < b.len() && b[i] == b'.' {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            if end == start || end - start > 9 {
                return None;
            }
            let digits = &s[start..end];
            let padded = format!("{digits:0<9}");
            us += padded.parse::<i64>().ok()? / 1_000;
            i = end;
        }
    }
    match b.get(i) {
        None => Some(us),
        Some(b'Z' | b'z') if i + 1 == b.len() => Some(us),
        Some(sign @ (b'+' | b'-')) => {
            let rest = &s[i + 1..];
            let (h, m) = match rest.len() {
                2 => (num(i + 1..i + 3)?, 0),
                4 => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                5 if rest.as_bytes()[2] == b':' => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                _ => return None,
            };
            let off = (h * 60 + m) * 60_000_000;
            Some(if *sign == b'+' { us - off } else { us + off })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_735_689_600_001_500),
            "2025-01-01T00:00:00.0015Z"
        );
        assert_eq!(
            parse_timestamp("2025-01-01T00:00:00Z"),
            Some(1_735_689_600_000_000)
        );
        assert_eq!(parse_timestamp("2025-01-01"), Some(1_735_689_600_000_000));
        assert_eq!(
            parse_timestamp("2025-01-01 01:00:00.5+01:00"),
            Some(1_735_689_600_500_000)
        );
        assert_eq!(parse_timestamp("not a time"), None);
        assert_eq!(parse_timestamp("2025-02-29"), None, "not a leap year");
        assert_eq!(parse_timestamp("2024-02-29"), Some(1_709_164_800_000_000));
        assert_eq!(rfc3339_nano(-1), "1969-12-31T23:59:59.999999Z");
    }
}
