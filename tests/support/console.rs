//! The admin console as a browser without a screen sees it: a cookie jar of
//! one session cookie, forms posted as `application/x-www-form-urlencoded`
//! with the page's CSRF token and the listener's own `Origin`, and no
//! redirect followed, so each test sees every answer.

use std::net::SocketAddr;

use super::Gateway;

/// One answer of the console.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// The CSRF token a page's forms carry.
    pub fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let rest = self.body.get(at..)?;
        Some(rest.get(..rest.find('"')?)?.to_owned())
    }
}

/// A browser signed in (or not) to one gateway's console.
pub struct Console {
    admin: SocketAddr,
    http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

impl Console {
    pub fn new(gw: &Gateway) -> Console {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Console { admin: gw.admin, http, cookie: None, csrf: None }
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Signs in with `token`; on success keeps the session cookie and the
    /// CSRF token of the first page.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let page = self.send("POST", "/console/signin", Some(&[("token", token)]), Some(&self.origin()), None).await;
        if let Some(set) = page.header("set-cookie") {
            self.cookie = set.split(';').next().map(str::to_owned).filter(|c| !c.ends_with('='));
        }
        if page.status == 303 {
            self.get("/console/").await;
        }
        page
    }

    /// GET, keeping the CSRF token of the page.
    pub async fn get(&mut self, path: &str) -> Page {
        let page = self.send("GET", path, None, None, self.cookie.clone().as_deref()).await;
        if let Some(csrf) = page.csrf() {
            self.csrf = Some(csrf);
        }
        page
    }

    /// POSTs a form as the console's own page would: with the CSRF token
    /// and this listener's origin.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone().expect("no page with a form was loaded");
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf", &csrf));
        self.send("POST", path, Some(&all), Some(&self.origin()), self.cookie.clone().as_deref()).await
    }

    /// A request built by hand: any fields, origin and cookie.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        fields: Option<&[(&str, &str)]>,
        origin: Option<&str>,
        cookie: Option<&str>,
    ) -> Page {
        let url = format!("http://{}{path}", self.admin);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(fields) = fields {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            req = req.header("content-type", "application/x-www-form-urlencoded").body(body.join("&"));
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        Page { status, headers, body: resp.text().await.unwrap() }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One headless Chromium for a whole test (`tests/browser/console.mjs`),
/// driven a command at a time. Blocking: use it from a multi-thread runtime.
pub struct Chromium {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Chromium {
    /// Starts the browser; fails (never skips) when Chromium or
    /// playwright-core is missing: `scripts/test` installs both.
    pub fn start() -> Chromium {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            std::path::Path::new("/usr/bin/chromium").exists() && dir.join("node_modules/playwright-core").exists(),
            "the console browser test needs Debian's chromium and `npm ci` in tests/browser (scripts/test does both); \
             set SEKISHO_SKIP_BROWSER=1 at build time to mark it ignored instead"
        );
        let mut child = std::process::Command::new("node")
            .current_dir(&dir)
            .arg("console.mjs")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = std::io::BufReader::new(child.stdout.take().unwrap());
        Chromium { child, input, output }
    }

    /// Sends one command; panics with the browser's message if it failed.
    pub fn run(&mut self, command: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead, Write};
        tokio::task::block_in_place(|| {
            writeln!(self.input, "{command}").unwrap();
            let mut line = String::new();
            self.output.read_line(&mut line).unwrap();
            let answer: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("the browser stopped during {command}: `{line}`"));
            assert_eq!(answer["ok"], true, "{command}: {answer}");
            answer
        })
    }

    pub fn goto(&mut self, url: &str) -> serde_json::Value {
        self.run(serde_json::json!({"op": "goto", "url": url}))
    }

    /// Clicks what sends a form or follows a link, and waits for the page.
    pub fn submit(&mut self, sel: &str) -> serde_json::Value {
        self.run(serde_json::json!({"op": "submit", "sel": sel}))
    }

    pub fn fill(&mut self, sel: &str, value: &str) {
        self.run(serde_json::json!({"op": "fill", "sel": sel, "value": value}));
    }

    pub fn text(&mut self, sel: &str) -> String {
        self.run(serde_json::json!({"op": "text", "sel": sel}))["text"].as_str().unwrap().to_owned()
    }

    pub fn count(&mut self, sel: &str) -> u64 {
        self.run(serde_json::json!({"op": "count", "sel": sel}))["count"].as_u64().unwrap()
    }

    /// A full-page screenshot into `target/console-screenshots/`, at the
    /// window's width or at `width` CSS pixels.
    pub fn shot(&mut self, name: &str, width: Option<u32>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        self.run(serde_json::json!({"op": "shot", "path": path, "width": width}));
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = writeln!(self.input, "{}", serde_json::json!({"op": "close"}));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
