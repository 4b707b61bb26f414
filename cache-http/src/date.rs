//! HTTP-date parsing (RFC 9110 section 5.6.7), as lenient as caches are in practice and no
//! more.
//!
//! The three formats a recipient must accept are read (IMF-fixdate, RFC 850 and asctime), with
//! day and month names in any case and the weekday not checked against the date, since neither
//! changes which instant is meant (RFC 9110 asks recipients to be lenient in what they
//! accept). Anything else is refused: another time zone than `GMT`, a two-digit year in
//! IMF-fixdate, missing or doubled separators, a one-digit hour, since guessing at those could
//! make a stale response fresh. `httpdate` (used to write dates) is strict about case and
//! weekday, which the HTTP cache conformance suite's `freshness-expires-*` tests show real
//! origins get wrong.

use std::time::{Duration, SystemTime};

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// The instant an HTTP-date names; `None` when it is not one.
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim_matches([' ', '\t']);
    let (weekday, rest) = text.split_once(' ')?;
    let fields = if let Some(day) = weekday.strip_suffix(',') {
        if is_one_of(day, &DAYS) {
            imf_fixdate(rest)?
        } else if is_one_of(day, &WEEKDAYS) {
            rfc850(rest)?
        } else {
            return None;
        }
    } else if is_one_of(weekday, &DAYS) {
        asctime(rest)?
    } else {
        return None;
    };
    fields.instant()
}

struct Fields {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
}

impl Fields {
    fn instant(&self) -> Option<SystemTime> {
        let leap = self.year % 4 == 0 && (self.year % 100 != 0 || self.year % 400 == 0);
        let days_in_month = match self.month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if !(1..=days_in_month).contains(&self.day)
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let seconds = days * 86_400
            + i64::try_from(self.hour * 3600 + self.minute * 60 + self.second).ok()?;
        if seconds >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()))
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
        }
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `DD Mon YYYY HH:MM:SS GMT`
fn imf_fixdate(rest: &str) -> Option<Fields> {
    let mut parts = rest.split(' ');
    let day = digits(parts.next()?, 2)?;
    let month = month(parts.next()?)?;
    let year = digits(parts.next()?, 4)?;
    let (hour, minute, second) = time(parts.next()?)?;
    gmt(parts.next()?)?;
    parts.next().is_none().then_some(())?;
    Some(Fields {
        year: i64::try_from(year).ok()?,
        month,
        day: u32::try_from(day).ok()?,
        hour,
        minute,
        second,
    })
}

/// `DD-Mon-YY HH:MM:SS GMT`; a two-digit year is the nearest one not more than 50 years
/// ahead (RFC 9110 section 5.6.7).
fn rfc850(rest: &str) -> Option<Fields> {
    let mut parts = rest.split(' ');
    let mut date = parts.next()?.split('-');
    let day = digits(date.next()?, 2)?;
    let month = month(date.next()?)?;
    let short_year = i64::try_from(digits(date.next()?, 2)?).ok()?;
    date.next().is_none().then_some(())?;
    let (hour, minute, second) = time(parts.next()?)?;
    gmt(parts.next()?)?;
    parts.next().is_none().then_some(())?;
    let this_year = current_year();
    let mut year = this_year - this_year.rem_euclid(100) + short_year;
    if year > this_year + 50 {
        year -= 100;
    }
    Some(Fields {
        year,
        month,
        day: u32::try_from(day).ok()?,
        hour,
        minute,
        second,
    })
}

/// `Mon DD HH:MM:SS YYYY`, the day as two digits or a space and one digit.
fn asctime(rest: &str) -> Option<Fields> {
    let (month_name, rest) = rest.split_once(' ')?;
    let month = month(month_name)?;
    let (day, rest) = match rest.strip_prefix(' ') {
        Some(rest) => (digits(rest.get(..1)?, 1)?, rest.get(1..)?),
        None => (digits(rest.get(..2)?, 2)?, rest.get(2..)?),
    };
    let mut parts = rest.strip_prefix(' ')?.split(' ');
    let (hour, minute, second) = time(parts.next()?)?;
    let year = digits(parts.next()?, 4)?;
    parts.next().is_none().then_some(())?;
    Some(Fields {
        year: i64::try_from(year).ok()?,
        month,
        day: u32::try_from(day).ok()?,
        hour,
        minute,
        second,
    })
}

fn current_year() -> i64 {
    let days = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400);
    // Close enough for choosing a century: 365.2425 days a year.
    1970 + i64::try_from(days * 10_000 / 3_652_425).unwrap_or(0)
}

fn is_one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|known| known.eq_ignore_ascii_case(name))
}

fn month(name: &str) -> Option<u32> {
    let index = MONTHS
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))?;
    u32::try_from(index + 1).ok()
}

fn gmt(zone: &str) -> Option<()> {
    zone.eq_ignore_ascii_case("gmt").then_some(())
}

/// Exactly `count` ASCII digits.
fn digits(text: &str, count: usize) -> Option<u64> {
    if text.len() != count || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `HH:MM:SS`, two digits each.
fn time(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split(':');
    let hour = digits(parts.next()?, 2)?;
    let minute = digits(parts.next()?, 2)?;
    let second = digits(parts.next()?, 2)?;
    parts.next().is_none().then_some((hour, minute, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> Option<u64> {
        parse(text).map(|time| {
            time.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
    }

    #[test]
    fn the_three_formats_name_the_same_instant() {
        // Sunday, 6 November 1994, the example of RFC 9110.
        let expected = Some(784_111_777);
        assert_eq!(unix("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(unix("Sun Nov  6 08:49:37 1994"), expected);
        assert_eq!(unix("Sun Nov 06 08:49:37 1994"), expected);
        assert_eq!(unix("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(unix("Tue, 19 Jan 2038 03:14:08 GMT"), Some(1 << 31));
        assert!(unix("Sun, 21 Nov 2286 04:46:39 GMT").is_some());
        assert!(unix("Thursday, 18-Aug-50 02:01:18 GMT").is_some());
        assert!(parse("Fri, 01 Jan 1960 00:00:00 GMT").is_some());
    }

    #[test]
    fn case_and_weekday_are_not_held_against_a_date() {
        let expected = unix("Thu, 18 Aug 2050 02:01:18 GMT");
        assert!(expected.is_some());
        for text in [
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            "Mon, 18 Aug 2050 02:01:18 GMT",
        ] {
            assert_eq!(unix(text), expected, "{text}");
        }
        assert!(parse("Thu Aug  8 02:01:18 2050").is_some());
    }

    #[test]
    fn what_is_not_an_http_date_is_refused() {
        for text in [
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:01:18 GMT",
            "0",
            "",
            "Thu, 18 Aug 2050 02:01:18 GMT extra",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
