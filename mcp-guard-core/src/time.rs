//! Small time helpers (no date crate needed for RFC 3339 in UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `t` as RFC 3339 UTC with microseconds, e.g. `2026-11-21T09:30:00.123456Z`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Parses RFC 3339 in UTC (`2026-11-21T09:30:00Z`, with optional fraction, `Z` or
/// `+00:00`) or a bare date (`2026-11-21`, midnight UTC). Other offsets are refused.
#[allow(clippy::many_single_char_names, reason = "y, m, d, h: the fields of a date")]
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(y, m, day).checked_mul(86_400)?;
    let mut micros = 0u64;
    if let Some(t) = time {
        let t = t.strip_suffix(['Z', 'z']).or_else(|| t.strip_suffix("+00:00"))?;
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut p = hms.splitn(3, ':');
        let h: i64 = p.next()?.parse().ok()?;
        let mi: i64 = p.next()?.parse().ok()?;
        let se: i64 = p.next()?.parse().ok()?;
        if h > 23 || mi > 59 || se > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        secs += h * 3600 + mi * 60 + se;
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = digits.parse().ok()?;
    }
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs) + Duration::from_micros(micros))
}

// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_000_001);
        assert_eq!(format_rfc3339(t), "2026-11-18T11:06:40.000001Z");
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40.000001Z"), Some(t));
        assert_eq!(parse_rfc3339("1970-01-01"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00+00:00")
                .map(format_rfc3339)
                .as_deref(),
            Some("2000-02-29T00:00:00.000000Z")
        );
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40+02:00"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
