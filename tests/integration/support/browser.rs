//! The WebDriver kit: Debian's headless Chromium driven over WebDriver (chromedriver), for
//! tests of the web console against a real server. Screenshots go to `test-output/screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::server::Server;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long to wait for the page to reach an expected state (polling, not a speed assertion).
const PATIENCE: Duration = Duration::from_secs(20);

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver_bin = std::env::var("AGENTVAULT_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_bin} ({e}); install chromium and chromium-driver"));
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while http.get(&format!("{base}/status")).call().is_err() {
            assert!(started.elapsed() < PATIENCE, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let chromium = std::env::var("AGENTVAULT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-quic",
                     format!("--user-data-dir={}", profile.path().display())]}}}});
        let mut b = Browser { driver, base, session: String::new(), http, _profile: profile };
        let r = b.call("POST", "/session", Some(caps));
        b.session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {r}")).to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, body) => self.http.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let v: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("webdriver {method} {path}: {err}: {}", v["value"]["message"]);
        }
        v
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)["value"].as_str().unwrap_or_default().to_owned()
    }

    pub fn script(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": script, "args": args})))["value"].clone()
    }

    fn try_find(&self, css: &str) -> Option<String> {
        let r = self
            .http
            .post(&format!("{}{}", self.base, self.s("/element")))
            .send_json(json!({"using": "css selector", "value": css}));
        let v: Value = r.ok()?.body_mut().read_json().ok()?;
        v["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits for an element to exist.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(id) = self.try_find(css) {
                return id;
            }
            assert!(started.elapsed() < PATIENCE, "no element {css} on {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn exists(&self, css: &str) -> bool {
        self.try_find(css).is_some()
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &self.s(&format!("/element/{id}/click")), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &self.s(&format!("/element/{id}/value")), Some(json!({"text": text})));
    }

    pub fn clear(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &self.s(&format!("/element/{id}/clear")), Some(json!({})));
    }

    /// The rendered text of the first element matching `css` (waits for it to exist).
    pub fn text(&self, css: &str) -> String {
        self.find(css);
        self.visible_text(css).unwrap_or_default()
    }

    /// The rendered text of the first element matching `css`, if there is one now.
    pub fn try_text(&self, css: &str) -> Option<String> {
        self.visible_text(css)
    }

    fn visible_text(&self, css: &str) -> Option<String> {
        let v =
            self.script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null", json!([css]));
        v.as_str().map(str::to_owned)
    }

    pub fn value(&self, css: &str) -> String {
        self.script("return document.querySelector(arguments[0]).value", json!([css]))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until `check` holds, with what was seen last in the failure message.
    pub fn wait_until(&self, what: &str, check: impl Fn(&Browser) -> bool) {
        let started = Instant::now();
        while !check(self) {
            assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}; at {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the first element matching `css` is no longer hidden (a saved note).
    pub fn wait_shown(&self, what: &str, css: &str) {
        self.wait_until(what, |b| {
            b.script("return !document.querySelector(arguments[0]).hidden", json!([css])) == json!(true)
        });
    }

    pub fn wait_text(&self, css: &str, needle: &str) {
        self.wait_until(&format!("{css} to contain {needle:?}"), |b| {
            b.try_find(css).is_some() && b.text(css).contains(needle)
        });
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.call("POST", &self.s("/window/rect"), Some(json!({"width": width, "height": height})));
    }

    /// Accepts the open confirm() dialog, waiting for it to appear.
    pub fn accept_dialog(&self) {
        let started = Instant::now();
        loop {
            let url = format!("{}{}", self.base, self.s("/alert/accept"));
            let ok = self.http.post(&url).send_json(json!({})).map(|r| r.status().is_success()).unwrap_or(false);
            if ok {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "no dialog to accept");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The text of the open dialog (alert, confirm), waiting for it to appear.
    pub fn dialog_text(&self) -> String {
        let started = Instant::now();
        loop {
            let url = format!("{}{}", self.base, self.s("/alert/text"));
            if let Ok(mut r) = self.http.get(&url).call()
                && r.status().is_success()
                && let Ok(v) = r.body_mut().read_json::<Value>()
                && let Some(text) = v["value"].as_str()
            {
                return text.to_owned();
            }
            assert!(started.elapsed() < PATIENCE, "no dialog open");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Dismisses (cancels) the open dialog.
    pub fn dismiss_dialog(&self) {
        self.call("POST", &self.s("/alert/dismiss"), Some(json!({})));
    }

    /// Signs in through the sign-in page and waits for the workspace.
    /// A browser signed in to `s` as its first admin (`with_admin`).
    pub fn signed_in_admin(s: &Server) -> Browser {
        let b = Browser::start();
        b.sign_in(s, super::ADMIN_EMAIL, super::ADMIN_PASSWORD);
        b
    }

    pub fn sign_in(&self, s: &Server, email: &str, password: &str) {
        self.goto(&format!("{}/", s.base));
        self.wait_until("the sign-in page", |b| b.url().contains("/login"));
        self.type_into("#email", email);
        self.type_into("#password", password);
        self.click("form[data-form=login] button[type=submit]");
        self.wait_until("the workspace after signing in", |b| b.url().contains("/agents"));
    }

    pub fn delete_cookies(&self) {
        self.call("DELETE", &self.s("/cookie"), None);
    }

    /// Makes pages see the system's dark mode (`prefers-color-scheme: dark`), over Chromium's
    /// DevTools protocol.
    pub fn emulate_dark_mode(&self) {
        let params = json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]});
        self.call(
            "POST",
            &self.s("/goog/cdp/execute"),
            Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": params})),
        );
    }

    /// Presses Tab once (keyboard navigation).
    pub fn press_tab(&self) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": "\u{E004}"}, {"type": "keyUp", "value": "\u{E004}"}]}]});
        self.call("POST", &self.s("/actions"), Some(actions));
    }

    /// Saves a screenshot as test-output/screenshots/NAME.png.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", &self.s("/screenshot"), None)["value"].as_str().unwrap_or_default().to_owned();
        let bytes = base64::engine::general_purpose::STANDARD.decode(png).unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-output/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http.delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
