//! The page cache against rendering: the same bytes, whatever differs.
use std::borrow::Cow;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::gateway::pages::Block;

/// What a block page shows, field by field.
#[derive(Debug, Clone)]
struct Shown {
    html: bool,
    reason: DenyReason,
    rule: String,
    retry: Option<i64>,
    name: String,
    title: String,
    contact: String,
    hours: Option<String>,
    tz: &'static str,
    valid_until: &'static str,
}

impl Shown {
    fn profile(&self) -> Profile {
        let hours = self.hours.as_ref().map(|h| format!("contact_hours = {h:?}\n")).unwrap_or_default();
        let text = format!(
            "[profile]\nname = {:?}\ntitle = {:?}\ncontact = {:?}\n{hours}timezone = {:?}\n\
             audience = \"a.test\"\nvalid_until = {:?}\n\n[[routes]]\nhost = \"a.test\"\n\
             upstream = \"http://127.0.0.1:9\"\n\n[hours]\nalways = true\n\n\
             [network]\ntrusted = [\"0.0.0.0/0\"]\n\n[roles.staff]\nkinds = [\"pc\"]\nownership = [\"issued\"]\n",
            self.name, self.title, self.contact, self.tz, self.valid_until
        );
        Profile::parse("p.toml", &text).unwrap()
    }

    fn deny(&self) -> Deny {
        let mut deny = Deny::new(self.reason, Cow::Owned(self.rule.clone()));
        deny.retry_at = self.retry.map(|s| Utc.timestamp_opt(s, 0).unwrap());
        deny
    }

    /// The same page but for field `which`, taken from `other`.
    fn but(&self, which: usize, other: &Shown) -> Shown {
        let mut s = self.clone();
        match which {
            0 => s.html = !s.html,
            1 => s.reason = other.reason,
            2 => s.rule.clone_from(&other.rule),
            3 => s.retry = other.retry,
            4 => s.name.clone_from(&other.name),
            5 => s.title.clone_from(&other.title),
            6 => s.contact.clone_from(&other.contact),
            7 => s.hours.clone_from(&other.hours),
            8 => s.tz = other.tz,
            _ => s.valid_until = other.valid_until,
        }
        s
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("kintone".to_owned()),
        Just("情報システム係 <内線 2345> & \"窓口\"".to_owned()),
        Just(format!("a {STAND_IN} b")),
        "[a-zA-Z0-9 &<>\"'\\\\/\\u{3042}-\\u{3093}]{0,24}",
    ]
}

fn shown() -> impl Strategy<Value = Shown> {
    (
        (any::<bool>(), prop::sample::select(DenyReason::ALL.to_vec()), text(), prop::option::of(0i64..4_000_000_000)),
        ("[a-z0-9_-]{1,12}", text(), text(), prop::option::of(text())),
        (prop::sample::select(vec!["Asia/Tokyo", "UTC"]), prop::sample::select(vec!["2030-03-31", "2031-01-01"])),
    )
        .prop_map(|((html, reason, rule, retry), (name, title, contact, hours), (tz, valid_until))| Shown {
            html,
            reason,
            rule,
            retry,
            name,
            title,
            contact,
            hours,
            tz,
            valid_until,
        })
}

proptest! {
    /// Two pages that differ in one field, served in turn: each body is
    /// the one rendering writes, on a miss and on every hit.
    #[test]
    fn a_cached_body_is_the_rendered_body(
        a in shown(),
        other in shown(),
        which in 0usize..10,
        ids in prop::collection::vec("[0-9a-f]{10}-[0-9a-f]{1,6}", 1..4),
    ) {
        PAGES.with(|p| p.borrow_mut().clear());
        let b = a.but(which, &other);
        let now = Utc::now();
        for id in &ids {
            for page in [&a, &b, &a, &b] {
                let (profile, deny) = (page.profile(), page.deny());
                let block = Block::Policy { deny: &deny, profile: &profile };
                prop_assert_eq!(block.render(page.html, id, now).body, block.fresh_body(page.html, id));
            }
        }
    }
}
