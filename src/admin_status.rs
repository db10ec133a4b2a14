//! `sekisho admin status` for a person: the JSON of `GET /v1/status` as a
//! few lines an administrator reads at a glance (are requests served, is
//! the trail written, is anything stopped, what needs doing). It only
//! presents what the API answered: it decides nothing and calls nothing.

use std::fmt::Write as _;

use serde_json::Value;

/// The status as text, times in Asia/Tokyo. Fields the gateway did not
/// send are shown as unknown, never guessed.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let built = time(&status["snapshot_built_at"]);
    let _ = writeln!(out, "sekisho status (state of {built})\n");
    let _ = writeln!(out, "Requests   {}", serving(&status["store"]));
    let audit = match status["audit_log_writable"].as_bool() {
        Some(true) => "writable",
        Some(false) => "NOT WRITABLE: every request is refused until it can be written",
        None => "unknown",
    };
    let _ = writeln!(out, "Audit log  {audit}");
    let _ = writeln!(out, "Emergency  {}", stop(status.get("emergency_stop"), "no stop", "STOPPED for everyone"));
    let profiles = status["profiles"].as_array().map_or(&[][..], Vec::as_slice);
    let _ = writeln!(
        out,
        "Counts     {} profile(s), {} user(s), {} device(s), {} live request(s)",
        profiles.len(),
        count(&status["users"]),
        count(&status["devices"]),
        count(&status["live_requests"]),
    );
    let _ = writeln!(out, "\nProfiles");
    for p in profiles {
        profile(&mut out, p);
    }
    health(&mut out, &status["health"]);
    out
}

/// Whether requests are served, from the store's freshness.
fn serving(store: &Value) -> String {
    let age = store["confirmed_age_secs"].as_f64().map_or("?".to_owned(), |a| format!("{a:.1}"));
    let limit = store["state_max_age_secs"].as_u64().map_or("?".to_owned(), |l| l.to_string());
    let backend = text(&store["backend"]);
    let mut line = match store["fresh"].as_bool() {
        Some(true) => format!("served (state confirmed {age} s ago, limit {limit} s; store {backend})"),
        Some(false) => format!(
            "REFUSED with 503 state_unavailable: state not confirmed for {age} s (limit {limit} s; store {backend})"
        ),
        None => "unknown".to_owned(),
    };
    if store["reachable"].as_bool() == Some(false) {
        line.push_str("; the store is unreachable");
    }
    if let Some(e) = store["error"].as_str() {
        let _ = write!(line, "; last error: {e}");
    }
    line
}

/// An emergency stop (`{reason, since}`), `none` when the gateway says
/// there is none (null), unknown when it did not say.
fn stop(value: Option<&Value>, none: &str, stopped: &str) -> String {
    match value {
        None => "unknown".to_owned(),
        Some(Value::Null) => none.to_owned(),
        Some(v) => format!("{stopped} since {}: {}", time(&v["since"]), text(&v["reason"])),
    }
}

fn profile(out: &mut String, p: &Value) {
    let mut line = format!("  {:<28} {}", text(&p["name"]), text(&p["title"]));
    match (p["valid_from"].as_str(), p["valid_until"].as_str()) {
        (None, None) => {}
        (from, until) => {
            let _ = write!(line, "  (terms {} to {})", from.unwrap_or("…"), until.unwrap_or("…"));
        }
    }
    match p.get("emergency_stop") {
        Some(Value::Null) => {}
        stopped => {
            let _ = write!(line, "\n      {}", stop(stopped, "", "STOPPED"));
        }
    }
    let hosts: Vec<&str> = p["hosts"].as_array().map_or(Vec::new(), |h| h.iter().filter_map(Value::as_str).collect());
    let _ = writeln!(out, "{line}\n      {}", hosts.join(", "));
}

/// The host checks (`sekisho doctor`'s, run by the gateway): errors and
/// warnings in full with their next step, the passing ones counted.
fn health(out: &mut String, health: &Value) {
    let Some(findings) = health["findings"].as_array() else {
        let _ = writeln!(out, "\nHealth     not checked yet");
        return;
    };
    let level = |l: &str| findings.iter().filter(|f| f["level"] == l).count();
    let _ = writeln!(
        out,
        "\nHealth (checked {}): {} error(s), {} warning(s), {} ok",
        time(&health["checked_at"]),
        level("error"),
        level("warn"),
        level("ok"),
    );
    for f in findings.iter().filter(|f| f["level"] != "ok") {
        let tag = match f["level"].as_str() {
            Some("error") => "ERROR",
            Some("warn") => "WARN ",
            _ => "?    ",
        };
        let _ = writeln!(out, "  {tag} {} {}", text(&f["check"]), text(&f["subject"]));
        let _ = writeln!(out, "        {}", text(&f["message"]));
        if let Some(next) = f["next_step"].as_str().filter(|s| !s.is_empty()) {
            let _ = writeln!(out, "        next: {next}");
        }
    }
}

/// An RFC 3339 time in Japan time to the second, or the text as sent.
fn time(value: &Value) -> String {
    let Some(s) = value.as_str() else { return "unknown time".to_owned() };
    crate::control::audit_json::jst_display(s).map_or_else(|| s.to_owned(), |t| format!("{t} JST"))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_owned(),
        v => v.to_string(),
    }
}

fn count(value: &Value) -> String {
    value.as_u64().map_or("?".to_owned(), |n| n.to_string())
}

#[cfg(test)]
#[path = "admin_status_tests.rs"]
mod tests;
