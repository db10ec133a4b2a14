use super::*;
use chrono::Days;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
}

/// A test date as `(year, month, day)`.
type Ymd = (i32, u32, u32);
/// The expected `(name, source)` of a date, or `None` for a working day.
type Expected = Option<(&'static str, HolidaySource)>;

fn days_of_years(years: std::ops::RangeInclusive<i32>) -> impl Iterator<Item = NaiveDate> {
    let first = date(*years.start(), 1, 1);
    let last = date(*years.end(), 12, 31);
    first.iter_days().take_while(move |d| *d <= last)
}

#[test]
fn holidays_known_dates() {
    use HolidaySource::{Computed, Official};
    let cases: &[(Ymd, Expected)] = &[
        // Official table.
        ((2024, 2, 12), Some(("休日", Official))), // 2/11 was a Sunday
        ((2026, 9, 22), Some(("休日", Official))), // between 敬老の日 and 秋分の日
        ((2025, 1, 13), Some(("成人の日", Official))),
        ((2019, 5, 1), Some(("休日（祝日扱い）", Official))), // enthronement
        ((2019, 10, 22), Some(("休日（祝日扱い）", Official))),
        ((1989, 2, 24), Some(("大喪の礼", Official))),
        ((2021, 7, 23), Some(("スポーツの日", Official))), // Olympic move
        ((2024, 5, 6), Some(("休日", Official))),
        ((2027, 3, 22), Some(("休日", Official))),
        ((2027, 11, 23), Some(("勤労感謝の日", Official))),
        ((2025, 6, 11), None),  // an ordinary Wednesday
        ((2021, 10, 11), None), // スポーツの日 moved to 7/23 that year
        // Computed from the Act.
        ((2028, 1, 1), Some(("元日", Computed))),
        ((2028, 1, 10), Some(("成人の日", Computed))),
        ((2028, 3, 20), Some(("春分の日", Computed))),
        ((2028, 9, 18), Some(("敬老の日", Computed))),
        ((2028, 9, 22), Some(("秋分の日", Computed))),
        ((2028, 10, 9), Some(("スポーツの日", Computed))),
        ((2029, 2, 12), Some(("休日", Computed))), // 2/11 is a Sunday
        ((2029, 4, 30), Some(("休日", Computed))), // 4/29 is a Sunday
        ((2032, 9, 21), Some(("休日", Computed))), // citizens' holiday
        ((2028, 6, 14), None),
        // Outside the approximation's range: no equinox, other days remain.
        ((2100, 3, 20), None),
        ((2100, 3, 21), None),
        ((2100, 1, 1), Some(("元日", Computed))),
        ((2100, 11, 23), Some(("勤労感謝の日", Computed))),
        // Before the list.
        ((1954, 1, 1), None),
    ];
    for &((y, m, d), expected) in cases {
        let got = holiday(date(y, m, d)).map(|h| (h.name, h.source));
        assert_eq!(got, expected, "{y}-{m:02}-{d:02}");
        assert_eq!(is_holiday(date(y, m, d)), expected.is_some());
    }
}

/// The strong check: the computed rules reproduce the official list exactly
/// for every day of the years after the 2020/2021 Olympic special measures.
#[test]
fn holidays_computed_matches_official_2022_to_2027() {
    let mut compared = 0;
    for day in days_of_years(2022..=2027) {
        assert_eq!(computed(day), official(day), "{day}");
        compared += 1;
    }
    assert_eq!(compared, 6 * 365 + 1); // 2024 is the only leap year
}

/// The equinox approximation agrees with every equinox the Cabinet Office
/// has published since the formula's epoch.
#[test]
fn holidays_equinox_formula_matches_official() {
    for year in 1980..=table::LAST_YEAR {
        for (base, month, name) in [(SPRING_BASE, 3, "春分の日"), (AUTUMN_BASE, 9, "秋分の日")] {
            let listed: Vec<u32> = days_of_years(year..=year)
                .filter(|d| d.month() == month && official(*d) == Some(name))
                .map(|d| d.day())
                .collect();
            assert_eq!(listed, [equinox_day(year, base).expect("in range")], "{name} {year}");
        }
    }
    assert_eq!(equinox_day(1979, SPRING_BASE), None);
    assert_eq!(equinox_day(2100, AUTUMN_BASE), None);
}

#[test]
fn holidays_year_end_is_not_a_national_holiday() {
    for year in [1990, 2024, table::LAST_YEAR, 2028, 2050, 2100] {
        for day in [29, 30, 31] {
            assert_eq!(holiday(date(year, 12, day)), None, "{year}-12-{day}");
        }
    }
}

#[test]
fn holidays_official_list_bounds() {
    assert_eq!(OFFICIAL_LIST_ENDS, date(2027, 12, 31));
    assert_eq!(OFFICIAL_LIST_STARTS, date(1955, 1, 1));
    assert_eq!(table::LAST_LISTED, (2027, 11, 23));
    let after = OFFICIAL_LIST_ENDS + Days::new(1);
    assert_eq!(holiday(after).map(|h| h.source), Some(HolidaySource::Computed));
    let first = holiday(OFFICIAL_LIST_STARTS).map(|h| h.source);
    assert_eq!(first, Some(HolidaySource::Official));
}

#[test]
fn holidays_table_is_sorted_and_every_row_is_official() {
    assert!(table::OFFICIAL.windows(2).all(|w| (w[0].0, w[0].1, w[0].2) < (w[1].0, w[1].1, w[1].2)));
    for &(y, m, d, name) in table::OFFICIAL {
        let day = date(i32::from(y), u32::from(m), u32::from(d));
        let expected = Some(Holiday { name, source: HolidaySource::Official });
        assert_eq!(holiday(day), expected, "{day}");
    }
    let listed_days = days_of_years(table::FIRST_YEAR..=table::LAST_YEAR).filter(|d| is_holiday(*d)).count();
    assert_eq!(listed_days, table::OFFICIAL.len());
}

/// Sanity of the rules over the whole range they are trusted for: each year
/// has the 16 祝日 of Art. 2 (14 once the equinox formula runs out), and every
/// 休日 directly follows a holiday.
#[test]
fn holidays_computed_years_are_well_formed() {
    for year in (table::LAST_YEAR + 1)..=2101 {
        let statutory_days = days_of_years(year..=year).filter(|d| statutory(*d).is_some()).count();
        let expected = if year <= 2099 { 16 } else { 14 };
        assert_eq!(statutory_days, expected, "{year}");
    }
    for day in days_of_years((table::LAST_YEAR + 1)..=2101) {
        let Some(h) = holiday(day) else { continue };
        assert_eq!(h.source, HolidaySource::Computed);
        if h.name == KYUJITSU {
            let prev = day.pred_opt().expect("not MIN");
            assert!(is_holiday(prev), "{day} is 休日 but {prev} is not a holiday");
        }
    }
}
