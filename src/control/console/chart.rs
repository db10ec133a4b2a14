//! The small charts of "today at a glance", drawn on the server as inline
//! SVG (classes only: the CSP allows no inline style) with a text summary
//! beside each, so a screen reader and a printout say the same as the
//! picture. It must never draw text it did not get from the console's own
//! labels and numbers.

use maud::{html, Markup};

use super::history::{Hour, BUCKETS};
use super::Lang;

const WIDTH: u64 = 600;
const HEIGHT: u64 = 150;
const AXIS: u64 = 20;

/// Allowed and blocked requests per five minutes, stacked.
pub fn columns(lang: Lang, hour: &Hour) -> Markup {
    let peak = hour.buckets.iter().map(|(a, d)| a + d).max().unwrap_or(0).max(1);
    let slot = WIDTH / BUCKETS as u64;
    let plot = HEIGHT - AXIS;
    let summary =
        format!("{} {} / {} {}", lang.t("許可", "allowed"), hour.allowed, lang.t("遮断", "blocked"), hour.denied);
    html! {
        svg.chart viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img" aria-label=(summary) {
            title { (summary) }
            @for (i, (allowed, denied)) in hour.buckets.iter().enumerate() {
                @let x = i as u64 * slot + 4;
                @let h_allowed = allowed * plot / peak;
                @let h_denied = denied * plot / peak;
                rect.allowed x=(x) y=(plot - h_allowed) width=(slot - 8) height=(h_allowed) {}
                rect.denied x=(x) y=(plot - h_allowed - h_denied) width=(slot - 8) height=(h_denied) {}
            }
            line.axis x1="0" y1=(plot) x2=(WIDTH) y2=(plot) {}
            text x="2" y=(HEIGHT - 4) { (lang.t("60分前", "60 min ago")) }
            text x=(WIDTH / 2 - 20) y=(HEIGHT - 4) { (lang.t("30分前", "30 min ago")) }
            text x=(WIDTH - 30) y=(HEIGHT - 4) { (lang.t("現在", "now")) }
        }
        p.legend {
            span { span.key.allowed {} (lang.t("許可", "Allowed")) }
            span { span.key.denied {} (lang.t("遮断", "Blocked")) }
            span { (lang.t("1本＝5分間、最大", "one bar = 5 minutes, highest")) " " (peak) }
        }
    }
}

/// Blocks by reason, most first, as labelled bars.
pub fn reasons(lang: Lang, hour: &Hour) -> Markup {
    let peak = hour.by_reason.first().map_or(1, |(_, n)| (*n).max(1));
    html! {
        @if hour.by_reason.is_empty() {
            p { (lang.t("この1時間に遮断はありません。", "No blocks in the last hour.")) }
        } @else {
            ul.bars {
                @for (code, n) in &hour.by_reason {
                    li {
                        span { (lang.reason(code)) " " code { (code) } }
                        svg viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true" {
                            rect.denied x="0" y="0" width=(n * 100 / peak) height="10" {}
                        }
                        span.n { (n) }
                    }
                }
            }
        }
    }
}
