//! Writing a [`RequestRecord`] as its JSON line, and the JSON-time of a
//! line, without serde's generic machinery: this runs once per request on
//! the request path. It owns nothing but the byte layout, which must stay
//! exactly what `serde_json::to_string` writes for the same record (the
//! property tests hold it to that), so readers and the hash chain never see
//! a difference. Strings needing an escape go through serde_json itself, so
//! client text cannot forge a field.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::control::audit::RequestRecord;

/// `record` as one JSON object, byte for byte as serde_json writes it.
pub fn to_line(record: &RequestRecord<'_>) -> String {
    let mut out = String::with_capacity(320 + record.path.len());
    out.push_str("{\"time\":");
    string(&mut out, &record.time);
    out.push_str(",\"request_id\":");
    string(&mut out, &record.request_id);
    out.push_str(",\"user\":");
    optional(&mut out, record.user.as_deref());
    out.push_str(",\"device\":");
    optional(&mut out, record.device.as_deref());
    out.push_str(",\"client\":");
    match record.client {
        Some(ip) => {
            out.push('"');
            push_ip(&mut out, ip);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"host\":");
    string(&mut out, &record.host);
    out.push_str(",\"method\":");
    string(&mut out, &record.method);
    out.push_str(",\"path\":");
    string(&mut out, &record.path);
    out.push_str(",\"decision\":");
    string(&mut out, &record.decision);
    out.push_str(",\"reason\":");
    optional(&mut out, record.reason.as_deref());
    out.push_str(",\"rule\":");
    optional(&mut out, record.rule.as_deref());
    out.push_str(",\"profile\":");
    optional(&mut out, record.profile.as_deref());
    out.push_str(",\"status\":");
    out.push_str(itoa::Buffer::new().format(record.status));
    out.push_str(",\"upstream_status\":");
    match record.upstream_status {
        Some(s) => out.push_str(itoa::Buffer::new().format(s)),
        None => out.push_str("null"),
    }
    out.push_str(",\"latency_ms\":");
    float(&mut out, record.latency_ms);
    out.push('}');
    out
}

/// Appends `ip` as its `Display` form; IPv4, the common case, without the
/// formatting machinery.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A recorded instant (RFC 3339, any offset) as people read it: Japan
/// time to the second; `None` when the text is not such an instant.
pub fn jst_display(rfc3339: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(t.with_timezone(&chrono_tz::Asia::Tokyo).format("%Y-%m-%d %H:%M:%S").to_string())
}

/// A wall-clock time in Japan Standard Time as the trail writes it:
/// RFC 3339 with microseconds and `+09:00`, as chrono's
/// `to_rfc3339_opts(Micros, false)` on a `+09:00` offset writes it.
/// Asia/Tokyo has kept +09:00 without daylight saving since 1951, so a
/// fixed offset gives the zone database's local times.
pub fn jst_time(now: chrono::DateTime<chrono::Utc>) -> String {
    thread_local! {
        /// The last second formatted on this thread: most lines share it.
        static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let secs = now.timestamp();
    let micros = now.timestamp_subsec_micros().min(999_999);
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            let local = now.naive_utc() + chrono::TimeDelta::hours(9);
            prefix.clear();
            let _ = write!(prefix, "{}", local.format("%Y-%m-%dT%H:%M:%S"));
            *cached = secs;
        }
        let mut out = String::with_capacity(32);
        out.push_str(prefix);
        out.push('.');
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(micros);
        out.extend(std::iter::repeat_n('0', 6 - digits.len()));
        out.push_str(digits);
        out.push_str("+09:00");
        out
    })
}

fn optional(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => string(out, v),
        None => out.push_str("null"),
    }
}

/// A JSON string. Most values need no escape and are copied as they are;
/// any other goes through serde_json, the one escaper the trail trusts.
pub fn string(out: &mut String, value: &str) {
    // Every byte is tested, with no early exit: the loop vectorises, and a
    // value needing an escape is rare (the early-exit form took twice the
    // instructions: ~850 per audit line against ~420, under callgrind).
    let plain = value.bytes().fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
        return;
    }
    match serde_json::to_string(value) {
        Ok(escaped) => out.push_str(&escaped),
        Err(_) => out.push_str("\"\""),
    }
}

/// A latency in milliseconds. The gateway's latencies are whole
/// microseconds divided by 1000, written as serde_json writes that float:
/// the shortest decimal, at least one fractional digit. Any other value
/// (never produced by the gateway) goes through serde_json.
fn float(out: &mut String, value: f64) {
    const LIMIT: f64 = 1e12;
    let micros = (value * 1000.0).round();
    if (0.0..LIMIT).contains(&micros) && micros / 1000.0 == value {
        // A whole number in 0..1e12: the cast is exact.
        let micros = micros as u64;
        out.push_str(itoa::Buffer::new().format(micros / 1000));
        out.push('.');
        let frac = micros % 1000;
        let text = [b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
        let keep = match text {
            [_, b'0', b'0'] => 1,
            [_, _, b'0'] => 2,
            _ => 3,
        };
        out.push_str(std::str::from_utf8(&text[..keep]).unwrap_or("0"));
        return;
    }
    match serde_json::to_string(&value) {
        Ok(v) => out.push_str(&v),
        Err(_) => out.push_str("null"),
    }
}

#[cfg(test)]
#[path = "audit_json_tests.rs"]
mod tests;
