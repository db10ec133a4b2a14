use chrono::NaiveDate;

use super::*;

fn at(y: i32, m: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(h, mi, 0).unwrap()
}

#[test]
fn windows_parse_days_lists_ranges_and_daily() {
    let w: Window = "mon,wed-thu 09:00-10:00".parse().unwrap();
    // 2026-11-23 is a Monday.
    assert!(w.contains(at(2026, 11, 23, 9, 0)));
    assert!(!w.contains(at(2026, 11, 24, 9, 0)));
    assert!(w.contains(at(2026, 11, 25, 9, 59)));
    assert!(w.contains(at(2026, 11, 26, 9, 30)));
    assert!(!w.contains(at(2026, 11, 27, 9, 30)));
    let daily: Window = "daily 00:00-24:00".parse().unwrap();
    assert!(daily.contains(at(2026, 11, 29, 23, 59)));
    assert!(daily.contains(at(2026, 11, 29, 0, 0)));
    assert_eq!(daily.as_str(), "daily 00:00-24:00");
}

#[test]
fn a_window_crossing_midnight_belongs_to_the_day_it_opens() {
    let w: Window = "fri 22:00-06:00".parse().unwrap();
    assert!(!w.contains(at(2026, 11, 27, 21, 59))); // Friday
    assert!(w.contains(at(2026, 11, 27, 22, 0)));
    assert!(w.contains(at(2026, 11, 28, 5, 59))); // Saturday morning
    assert!(!w.contains(at(2026, 11, 28, 6, 0)));
    assert!(!w.contains(at(2026, 11, 28, 22, 30)), "Saturday evening is not Friday's window");
    assert!(!w.contains(at(2026, 11, 27, 3, 0)), "Friday morning belongs to Thursday");
}

#[test]
fn bad_windows_are_refused_with_the_reason() {
    for bad in [
        "mon-fri",
        "mon-fri 8:30-17:15",
        "mon-fir 08:30-17:15",
        "fri-mon 08:00-09:00",
        "mon 24:00-01:00",
        "mon 09:00-09:00",
        "mon 09:60-10:00",
        "",
    ] {
        let e = bad.parse::<Window>().unwrap_err();
        assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
    }
}

#[test]
fn closed_dates_wrap_the_year_end() {
    let year_end = ClosedDates::try_from("12-29..01-03".to_owned()).unwrap();
    for (m, d, want) in
        [(12, 28, false), (12, 29, true), (12, 31, true), (1, 1, true), (1, 3, true), (1, 4, false), (6, 1, false)]
    {
        assert_eq!(year_end.contains(NaiveDate::from_ymd_opt(2026, m, d).unwrap()), want, "{m}-{d}");
    }
    let one = ClosedDates::try_from("05-01".to_owned()).unwrap();
    assert!(one.contains(NaiveDate::from_ymd_opt(2027, 5, 1).unwrap()));
    assert!(!one.contains(NaiveDate::from_ymd_opt(2027, 5, 2).unwrap()));
    assert!(ClosedDates::try_from("02-30".to_owned()).is_err());
    assert!(ClosedDates::try_from("12-29..".to_owned()).is_err());
}
