use super::*;

fn counts(allowed: u64, suspended: u64, hours: u64) -> Counts {
    Counts { allowed, by_reason: vec![("user_suspended", suspended), ("outside_hours", hours), ("rate_limited", 0)] }
}

fn at(minutes_ago: i64, now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::minutes(minutes_ago)
}

#[test]
fn the_last_hour_counts_only_what_grew_within_it_by_reason_most_first() {
    let now = Utc::now();
    let h = History::default();
    h.record(at(90, now), counts(0, 0, 0));
    h.record(at(70, now), counts(100, 5, 0)); // grew before the hour: not counted
    h.record(at(50, now), counts(110, 6, 1));
    h.record(at(2, now), counts(150, 6, 4));
    let hour = h.last_hour(now, &counts(160, 9, 4));
    assert_eq!((hour.allowed, hour.denied), (60, 8));
    assert_eq!(hour.by_reason, vec![("outside_hours", 4), ("user_suspended", 4)]);
    assert_eq!(hour.since, Some(at(70, now)));
    let total: (u64, u64) = hour.buckets.iter().fold((0, 0), |t, b| (t.0 + b.0, t.1 + b.1));
    assert_eq!(total, (60, 8), "the bars add up to the totals");
    assert_eq!(hour.buckets[BUCKETS - 1], (50, 6), "the newest five minutes hold the last two steps");
}

#[test]
fn a_gateway_younger_than_an_hour_counts_from_its_start() {
    let now = Utc::now();
    let h = History::default();
    h.record(at(3, now), counts(0, 0, 0));
    let hour = h.last_hour(now, &counts(7, 1, 0));
    assert_eq!((hour.allowed, hour.denied, hour.since), (7, 1, Some(at(3, now))));
    assert_eq!(History::default().last_hour(now, &counts(0, 0, 0)), Hour::default());
}

#[test]
fn only_the_newest_samples_are_kept() {
    let now = Utc::now();
    let h = History::default();
    for m in (0..200).rev() {
        h.record(at(m, now), counts(0, 0, 0));
    }
    assert_eq!(h.samples.lock().unwrap().len(), KEEP);
}
