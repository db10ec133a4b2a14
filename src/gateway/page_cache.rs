//! Recent policy block bodies, split around the request id. A denial
//! repeats (every request of an unregistered browser, every request all
//! night outside hours), and rendering its page costs more than the rest of
//! a refusal. Each worker thread keeps its own few; a body comes from here
//! byte for byte as [`Block::render`](super::pages::Block) would write it.
//! It holds no token and nothing the client sent.

use std::cell::RefCell;

use chrono::{DateTime, Utc};
use sekisho_policy::{Deny, DenyReason, Profile};

/// The body of `deny`'s page for `request_id`, from the cache or rendered
/// by `render` (called with a stand-in id) and kept; `None` when the body
/// cannot be cached (an id or a page that would not split cleanly).
pub fn body(
    deny: &Deny,
    profile: &Profile,
    html: bool,
    request_id: &str,
    render: impl FnOnce(&str) -> String,
) -> Option<String> {
    if !request_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    PAGES.with(|pages| {
        let mut pages = pages.try_borrow_mut().ok()?;
        let at = match pages.iter().position(|p| p.serves(deny, profile, html)) {
            Some(at) => at,
            None => {
                let page = Cached::render(deny, profile, html, render)?;
                if pages.len() == CAPACITY {
                    pages.remove(0);
                }
                pages.push(page);
                pages.len() - 1
            }
        };
        let page = &pages[at];
        let mut out = String::with_capacity(page.head.len() + request_id.len() + page.tail.len());
        out.push_str(&page.head);
        out.push_str(request_id);
        out.push_str(&page.tail);
        Some(out)
    })
}

/// Pages kept per worker thread.
const CAPACITY: usize = 32;

/// Stands in for the request id while a page is rendered for the cache:
/// nothing escapes it, and it is checked to occur exactly once.
const STAND_IN: &str = "sekishoRequestIdStandIn0x5e7a";

thread_local! {
    static PAGES: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
}

/// One page and everything its body depends on but the request id.
struct Cached {
    html: bool,
    reason: DenyReason,
    rule: String,
    retry_at: Option<DateTime<Utc>>,
    name: String,
    title: String,
    contact: String,
    contact_hours: Option<String>,
    timezone: chrono_tz::Tz,
    valid: (Option<chrono::NaiveDate>, Option<chrono::NaiveDate>),
    head: String,
    tail: String,
}

impl Cached {
    fn render(deny: &Deny, profile: &Profile, html: bool, render: impl FnOnce(&str) -> String) -> Option<Cached> {
        let page = render(STAND_IN);
        if page.matches(STAND_IN).count() != 1 {
            return None;
        }
        let (head, tail) = page.split_once(STAND_IN)?;
        Some(Cached {
            html,
            reason: deny.reason,
            rule: deny.rule.to_string(),
            retry_at: deny.retry_at,
            name: profile.name.clone(),
            title: profile.title.clone(),
            contact: profile.contact.clone(),
            contact_hours: profile.contact_hours.clone(),
            timezone: profile.timezone,
            valid: (profile.valid_from, profile.valid_until),
            head: head.to_owned(),
            tail: tail.to_owned(),
        })
    }

    fn serves(&self, deny: &Deny, profile: &Profile, html: bool) -> bool {
        self.html == html
            && self.reason == deny.reason
            && self.retry_at == deny.retry_at
            && self.rule == deny.rule
            && self.name == profile.name
            && self.title == profile.title
            && self.contact == profile.contact
            && self.contact_hours == profile.contact_hours
            && self.timezone == profile.timezone
            && self.valid == (profile.valid_from, profile.valid_until)
    }
}

#[cfg(test)]
#[path = "page_cache_tests.rs"]
mod tests;
