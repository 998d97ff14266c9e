//! Change windows: the days and hours, in a named time zone, when governed writes may happen.
//!
//! The request's UTC time is converted to the window's IANA zone (chrono-tz, so daylight saving
//! is the zone's own), then the local weekday and time of day are compared. A window is one range
//! within a day: `start <= time < end`, with `end` at most `24:00`. Ranges across midnight
//! (`22:00-06:00`) are refused at load: each rule must pass on its own, so two rules cannot be
//! combined into one overnight window, and a silently empty window would refuse every change.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

/// Day names as written in the config, Monday first.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A validated window.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    zone: Tz,
    /// Indexed from Monday.
    days: [bool; 7],
    /// Minutes after local midnight, `start < end <= 1440`.
    start: u32,
    end: u32,
}

/// The local time a request arrived at, in a window's zone (for messages).
pub(crate) struct LocalTime(String);

impl std::fmt::Display for LocalTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Window {
    /// Validate `time_zone`, `days` and `hours`; errors say which and why.
    pub(crate) fn parse(time_zone: &str, days: &[String], hours: &str) -> Result<Self, String> {
        let zone: Tz = time_zone.parse().map_err(|_| {
            format!(
                "unknown time zone {time_zone:?} in time_zone: use an IANA name such as \
                 \"Europe/Zurich\" or \"UTC\""
            )
        })?;
        if days.is_empty() {
            return Err(
                "days is empty: list the days changes are allowed (\"mon\" … \"sun\")".to_owned(),
            );
        }
        let mut allowed = [false; 7];
        for day in days {
            let index = DAYS
                .iter()
                .position(|d| d.eq_ignore_ascii_case(day.trim()))
                .ok_or_else(|| {
                    format!(
                        "unknown day {day:?} in days: use {}",
                        DAYS.map(|d| format!("{d:?}")).join(", ")
                    )
                })?;
            allowed[index] = true;
        }
        let (start, end) = parse_hours(hours)?;
        Ok(Self {
            zone,
            days: allowed,
            start,
            end,
        })
    }

    /// `Ok(())` when `time` falls inside the window, else the local time it fell at.
    pub(crate) fn check(&self, time: DateTime<Utc>) -> Result<(), LocalTime> {
        let local = time.with_timezone(&self.zone);
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        if self.days[day] && self.start <= minute && minute < self.end {
            Ok(())
        } else {
            Err(LocalTime(format!(
                "{} {}",
                capitalised(DAYS[day]),
                local.format("%Y-%m-%d %H:%M")
            )))
        }
    }

    /// `Mon, Tue, Wed, Thu, Fri 08:00-18:00 Europe/Zurich`, for messages.
    pub(crate) fn describe(&self) -> String {
        let days: Vec<String> = DAYS
            .iter()
            .zip(self.days)
            .filter(|(_, on)| *on)
            .map(|(d, _)| capitalised(d))
            .collect();
        format!(
            "{} {}-{} {}",
            days.join(", "),
            clock(self.start),
            clock(self.end),
            self.zone.name()
        )
    }
}

/// `"08:00-18:00"` → minutes after midnight; end after start, at most `24:00`.
fn parse_hours(hours: &str) -> Result<(u32, u32), String> {
    let bad = |why: &str| format!("hours {hours:?}: {why}; write it like \"08:00-18:00\"");
    let (start, end) = hours
        .split_once('-')
        .ok_or_else(|| bad("expected a start and an end separated by '-'"))?;
    let start = parse_clock(start.trim()).ok_or_else(|| bad("the start is not a time HH:MM"))?;
    let end = parse_clock(end.trim()).ok_or_else(|| bad("the end is not a time HH:MM"))?;
    if start >= 24 * 60 {
        return Err(bad("the start must be before 24:00"));
    }
    if end <= start {
        return Err(bad(
            "the end must be after the start (windows across midnight are not supported)",
        ));
    }
    Ok((start, end))
}

/// `HH:MM` with two-digit fields, `00:00` to `24:00`.
fn parse_clock(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= 24 * 60).then_some(minutes)
}

fn clock(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn capitalised(day: &str) -> String {
    let mut chars = day.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn window(zone: &str, days: &[&str], hours: &str) -> Result<Window, String> {
        let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
        Window::parse(zone, &days, hours)
    }

    #[test]
    fn hours_must_be_a_forward_range_within_one_day() {
        assert_eq!(parse_hours("08:00-18:00"), Ok((480, 1080)));
        assert_eq!(parse_hours(" 00:00 - 24:00 "), Ok((0, 1440)));
        for bad in [
            "18:00-08:00",
            "08:00-08:00",
            "8:00-18:00",
            "08:00",
            "08:60-09:00",
            "24:00-24:00",
            "08:00-24:01",
            "aa:bb-cc:dd",
        ] {
            assert!(parse_hours(bad).is_err(), "{bad}");
        }
        assert!(
            parse_hours("22:00-06:00")
                .unwrap_err()
                .contains("across midnight")
        );
    }

    #[test]
    fn days_and_zones_are_validated() {
        assert!(window("Europe/Zurich", &["mon", "FRI"], "08:00-18:00").is_ok());
        let err = window("Europe/Zurch", &["mon"], "08:00-18:00").unwrap_err();
        assert!(err.contains("unknown time zone \"Europe/Zurch\""), "{err}");
        let err = window("UTC", &["monday"], "08:00-18:00").unwrap_err();
        assert!(err.contains("unknown day \"monday\""), "{err}");
        assert!(window("UTC", &[], "08:00-18:00").is_err());
    }

    #[test]
    fn the_window_is_local_to_its_zone_including_daylight_saving() {
        let w = window(
            "Europe/Zurich",
            &["mon", "tue", "wed", "thu", "fri"],
            "08:00-18:00",
        )
        .unwrap();
        // Summer (UTC+2): 06:30 UTC is 08:30 in Zurich.
        let summer = Utc.with_ymd_and_hms(2026, 7, 1, 6, 30, 0).unwrap();
        assert!(w.check(summer).is_ok());
        // Winter (UTC+1): 06:30 UTC is 07:30 in Zurich, before the window.
        let winter = Utc.with_ymd_and_hms(2026, 1, 7, 6, 30, 0).unwrap();
        let local = w.check(winter).unwrap_err();
        assert_eq!(local.to_string(), "Wed 2026-01-07 07:30");
        // 17:59 local is in, 18:00 is out.
        assert!(
            w.check(Utc.with_ymd_and_hms(2026, 1, 7, 16, 59, 0).unwrap())
                .is_ok()
        );
        assert!(
            w.check(Utc.with_ymd_and_hms(2026, 1, 7, 17, 0, 0).unwrap())
                .is_err()
        );
        // Friday 23:30 UTC is already Saturday in Zurich.
        let err = w
            .check(Utc.with_ymd_and_hms(2026, 1, 9, 23, 30, 0).unwrap())
            .unwrap_err();
        assert!(err.to_string().starts_with("Sat 2026-01-10"), "{err}");
        assert_eq!(
            w.describe(),
            "Mon, Tue, Wed, Thu, Fri 08:00-18:00 Europe/Zurich"
        );
    }
}
