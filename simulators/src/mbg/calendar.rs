//! Calendar arithmetic on Unix seconds, without a time-zone database: the consumption
//! model needs the local hour, weekday and day of year; the ground truth and the
//! configuration need ISO-8601 dates.

pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;
/// 9999-12-31T23:59:59Z, the last instant [`parse_instant`] accepts.
const LAST: i64 = 253_402_300_799;

/// (year, month 1-12, day 1-31) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// "2025-01-15T06:30:00Z".
pub fn iso(unix: i64) -> String {
    let (year, month, day) = civil_from_days(unix.div_euclid(DAY));
    let secs = unix.rem_euclid(DAY);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / HOUR,
        secs % HOUR / 60,
        secs % 60
    )
}

/// Parses a UTC instant: "2025-01-15", "2025-01-15T06:30Z", "2025-01-15T06:30:00Z" (the
/// `Z` is optional, a space may replace the `T`), or plain Unix seconds, from 1970 to
/// the year 9999.
pub fn parse_instant(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(unix) = text.parse::<i64>() {
        return (0..=LAST).contains(&unix).then_some(unix);
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = number(date_parts.next()?, 4)?;
    let month: u32 = number(date_parts.next()?, 2)?;
    let day: u32 = number(date_parts.next()?, 2)?;
    let days_in_month = civil_from_days(days_from_civil(year, month % 12 + 1, 1) - 1).2;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month {
        return None;
    }
    let seconds = match time {
        None => 0,
        Some(time) => {
            let parts: Vec<&str> = time.split(':').collect();
            let (hour, minute, second) = match parts.as_slice() {
                [h, m] => (number::<i64>(h, 2)?, number::<i64>(m, 2)?, 0),
                [h, m, s] => (number(h, 2)?, number(m, 2)?, number(s, 2)?),
                _ => return None,
            };
            if hour > 23 || minute > 59 || second > 59 {
                return None;
            }
            hour * HOUR + minute * 60 + second
        }
    };
    Some(days_from_civil(year, month, day) * DAY + seconds)
}

/// A number written with exactly `width` ASCII digits.
fn number<T: std::str::FromStr>(text: &str, width: usize) -> Option<T> {
    (text.len() == width && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Civil time in France, where the meters are. Summer time is approximated by month
/// (UTC+2 from April to October, UTC+1 otherwise): close enough for daily rhythms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub year: i64,
    pub month: u32,
    /// 0 for 1 January.
    pub day_of_year: u32,
    /// 0 Monday … 6 Sunday.
    pub weekday: u32,
    pub hour: usize,
    /// Local days since 1970-01-01.
    pub day: i64,
}

impl Local {
    pub fn at(unix: i64) -> Local {
        let (_, utc_month, _) = civil_from_days(unix.div_euclid(DAY));
        let offset = if (4..=10).contains(&utc_month) { 2 } else { 1 };
        let t = unix + offset * HOUR;
        let day = t.div_euclid(DAY);
        let (year, month, _) = civil_from_days(day);
        Local {
            year,
            month,
            day_of_year: (day - days_from_civil(year, 1, 1)) as u32,
            // 1970-01-01 was a Thursday.
            weekday: (day + 3).rem_euclid(7) as u32,
            hour: (t.rem_euclid(DAY) / HOUR) as usize,
            day,
        }
    }

    pub fn is_weekend(&self) -> bool {
        self.weekday >= 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 19_000, 20_089, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            days_from_civil(2024, 2, 29) + 1,
            days_from_civil(2024, 3, 1)
        );
    }

    #[test]
    fn iso_and_parse() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_736_924_400), "2025-01-15T07:00:00Z");
        assert_eq!(parse_instant("2025-01-15T07:00:00Z"), Some(1_736_924_400));
        assert_eq!(parse_instant("2025-01-15 07:00"), Some(1_736_924_400));
        assert_eq!(parse_instant("2025-01-15"), Some(1_736_899_200));
        assert_eq!(parse_instant("1736924400"), Some(1_736_924_400));
        assert_eq!(parse_instant("-1"), None);
        assert_eq!(parse_instant(&i64::MAX.to_string()), None);
        for bad in [
            "2025-02-30",
            "2025-13-01",
            "2025-1-15",
            "2025-01-15T24:00",
            "soon",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn local_time() {
        // Wednesday 15 January 2025, 07:00 UTC = 08:00 in Paris.
        let l = Local::at(1_736_924_400);
        assert_eq!((l.weekday, l.hour, l.month, l.day_of_year), (2, 8, 1, 14));
        // Saturday 12 July 2025, 10:00 UTC = 12:00 in Paris.
        let l = Local::at(parse_instant("2025-07-12T10:00Z").unwrap());
        assert!(l.is_weekend());
        assert_eq!(l.hour, 12);
    }
}
