//! Console sessions, held by the server: who signed in (a person with
//! roles, however they proved it: a named admin token today, a city SSO
//! later), their CSRF token, and when the session ends (idle and absolute
//! expiry). The browser holds only a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie; the server keeps the id's SHA-256, so the map
//! itself never holds a usable cookie. It must never log an id, a CSRF
//! token or the credential a person signed in with.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminToken, ConsoleConfig, Role};

/// How a person proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// Their own named admin token.
    AdminToken,
}

impl SignIn {
    /// For the sign-in's audit record.
    pub fn as_str(self) -> &'static str {
        match self {
            SignIn::AdminToken => "admin token",
        }
    }
}

/// The signed-in person, as every console page and action sees them.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub roles: Vec<Role>,
    pub department: Option<String>,
    pub how: SignIn,
}

impl Person {
    pub fn from_token(token: &AdminToken) -> Person {
        Person {
            name: token.name.clone(),
            roles: token.roles.clone(),
            department: token.department.clone(),
            how: SignIn::AdminToken,
        }
    }
}

/// A live session, as a page gets it.
#[derive(Debug, Clone)]
pub struct Session {
    pub person: Person,
    /// Sent with every change and compared in constant time.
    pub csrf: String,
    /// A notice for the next page (what the last change did), shown once.
    pub flash: Option<String>,
}

struct Held {
    session: Session,
    started: Instant,
    last_seen: Instant,
}

/// Sessions by the SHA-256 of their id. Admin listener only: the request
/// path never touches it.
pub struct Sessions {
    held: Mutex<HashMap<[u8; 32], Held>>,
    idle: Duration,
    max: Duration,
}

/// Sessions one gateway holds at once; the oldest go first past it.
const MAX_SESSIONS: usize = 1000;

impl Sessions {
    pub fn new(config: &ConsoleConfig) -> Sessions {
        Sessions {
            held: Mutex::new(HashMap::new()),
            idle: Duration::from_secs(config.idle_secs.get().into()),
            max: Duration::from_secs(config.max_secs.get().into()),
        }
    }

    /// Starts a session for `person`; returns the id for the cookie.
    pub fn start(&self, person: Person) -> String {
        let id = random_token();
        let now = Instant::now();
        let session = Session { person, csrf: random_token(), flash: None };
        if let Ok(mut held) = self.held.lock() {
            held.retain(|_, h| self.alive(h, now));
            while held.len() >= MAX_SESSIONS {
                let oldest = held.iter().min_by_key(|(_, h)| h.started).map(|(k, _)| *k);
                match oldest {
                    Some(k) => drop(held.remove(&k)),
                    None => break,
                }
            }
            held.insert(digest(&id), Held { session, started: now, last_seen: now });
        }
        id
    }

    /// The session for a cookie's id, if it is alive; touching it resets
    /// its idle clock and takes its flash notice.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut held = self.held.lock().ok()?;
        let key = digest(id);
        let alive = held.get(&key).is_some_and(|h| self.alive(h, now));
        if !alive {
            held.remove(&key);
            return None;
        }
        let h = held.get_mut(&key)?;
        h.last_seen = now;
        let mut session = h.session.clone();
        session.flash = h.session.flash.take();
        Some(session)
    }

    /// Leaves a notice for the session's next page.
    pub fn flash(&self, id: &str, text: String) {
        if let Ok(mut held) = self.held.lock() {
            if let Some(h) = held.get_mut(&digest(id)) {
                h.session.flash = Some(text);
            }
        }
    }

    /// Ends a session (sign-out).
    pub fn end(&self, id: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&digest(id));
        }
    }

    fn alive(&self, h: &Held, now: Instant) -> bool {
        now.duration_since(h.last_seen) < self.idle && now.duration_since(h.started) < self.max
    }
}

/// Whether a form's CSRF token is the session's, in constant time.
pub fn csrf_matches(session: &Session, given: Option<&str>) -> bool {
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// 32 random bytes, URL-safe base64.
fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn person() -> Person {
        Person { name: "soumu".into(), roles: vec![Role::GeneralAdmin], department: None, how: SignIn::AdminToken }
    }

    fn sessions(idle: u32, max: u32) -> Sessions {
        Sessions::new(&ConsoleConfig {
            enabled: true,
            idle_secs: NonZeroU32::new(idle).unwrap(),
            max_secs: NonZeroU32::new(max).unwrap(),
        })
    }

    #[test]
    fn a_session_is_found_by_its_id_only_and_ends_at_sign_out() {
        let s = sessions(60, 600);
        let id = s.start(person());
        let got = s.get(&id).unwrap();
        assert_eq!(got.person.name, "soumu");
        assert!(csrf_matches(&got, Some(&got.csrf)));
        assert!(!csrf_matches(&got, Some("guess")));
        assert!(!csrf_matches(&got, None));
        assert!(s.get("not-an-id").is_none());
        s.end(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn a_flash_notice_is_shown_once() {
        let s = sessions(60, 600);
        let id = s.start(person());
        s.flash(&id, "done".into());
        assert_eq!(s.get(&id).unwrap().flash.as_deref(), Some("done"));
        assert_eq!(s.get(&id).unwrap().flash, None);
    }

    #[test]
    fn an_idle_session_ends_and_so_does_a_busy_one_past_its_maximum() {
        let idle = sessions(1, 600);
        let id = idle.start(person());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(idle.get(&id).is_none(), "idle past its limit");

        let busy = sessions(60, 1);
        let id = busy.start(person());
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(300));
            let _ = busy.get(&id);
        }
        assert!(busy.get(&id).is_none(), "past its absolute limit although in use");
    }
}
