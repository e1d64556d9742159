//! A small W3C WebDriver client for the browser tests: chromedriver drives
//! Debian's headless Chromium. Written here rather than taken from a crate
//! because the few calls the tests need are plain JSON over HTTP, and the
//! WebDriver crates pull a second TLS stack into the build.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for the page lasts. Generous, because a machine busy
/// with builds can take seconds to load a page; every wait polls and ends
/// as soon as what it waits for is there.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        assert!(
            super::have("chromedriver") && Path::new("/usr/bin/chromium").exists(),
            "chromium and chromedriver are missing: install them with `apt-get install -y chromium chromium-driver` (CI does)"
        );
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-quic", "--no-first-run", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {res}"))
            .to_owned();
        Browser {
            http,
            base,
            session,
            driver,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    fn ok(v: &Value) -> bool {
        v.get("error").is_none()
    }

    pub async fn goto(&self, url: &str) {
        let v = self
            .call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
        assert!(Browser::ok(&v), "navigate to {url}: {v}");
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn element(&self, css: &str) -> Option<String> {
        self.elements(css).await.into_iter().next()
    }

    async fn elements(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits (up to [`WAIT`]) for `css` to match.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.element(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element matches {css:?} on {}",
                self.url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until nothing matches `css` (the page moved on).
    pub async fn wait_gone(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        while self.element(css).await.is_some() {
            assert!(
                Instant::now() < deadline,
                "{css:?} still shown on {}",
                self.url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of an element, or None if it went stale (its page was
    /// replaced between finding and reading it).
    async fn element_text(&self, e: &str) -> Option<String> {
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await;
        v.as_str().map(str::to_owned)
    }

    /// Waits until `css` matches an element whose text contains `needle`
    /// (a page that replaced another with the same element, such as a
    /// flash message, is told apart by its text); returns the text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Some(e) = self.element(css).await
                && let Some(t) = self.element_text(&e).await
            {
                if t.contains(needle) {
                    return t;
                }
                last = t;
            }
            assert!(
                Instant::now() < deadline,
                "{css:?} never said {needle:?} on {} (last: {last:?})",
                self.url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The texts of every element `css` matches now, in page order.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.elements(css).await {
            out.push(self.element_text(&e).await.expect("element went stale"));
        }
        out
    }

    /// An attribute (or property) of the first element `css` matches.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{e}/attribute/{name}"),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// The value of the cookie `name` the browser holds for this page.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let v = self
            .call(reqwest::Method::GET, &format!("/cookie/{name}"), None)
            .await;
        v["value"].as_str().map(str::to_owned)
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.element(css).await.is_some()
    }

    /// Clicks the element `css` matches (found again if the page replaced
    /// it in between).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let e = self.find(css).await;
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/element/{e}/click"),
                    Some(json!({})),
                )
                .await;
            if Browser::ok(&v) {
                return;
            }
            let stale = v["error"] == "stale element reference";
            assert!(stale && Instant::now() < deadline, "click {css}: {v}");
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{e}/value"),
                Some(json!({"text": text})),
            )
            .await;
        assert!(Browser::ok(&v), "type into {css}: {v}");
    }

    /// Replaces the value of the field `css` matches with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{e}/clear"),
                Some(json!({})),
            )
            .await;
        assert!(Browser::ok(&v), "clear {css}: {v}");
        self.type_into(css, text).await;
    }

    /// The text of the element `css` matches (waiting for one).
    pub async fn text(&self, css: &str) -> String {
        self.wait_text(css, "").await
    }

    /// Waits for a confirm() dialog and returns its text.
    pub async fn dialog_text(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.call(reqwest::Method::GET, "/alert/text", None).await;
            if let Some(t) = v.as_str() {
                return t.to_owned();
            }
            assert!(Instant::now() < deadline, "no dialog appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn accept_dialog(&self) {
        let v = self
            .call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
            .await;
        assert!(Browser::ok(&v), "accept dialog: {v}");
    }

    pub async fn dismiss_dialog(&self) {
        let v = self
            .call(reqwest::Method::POST, "/alert/dismiss", Some(json!({})))
            .await;
        assert!(Browser::ok(&v), "dismiss dialog: {v}");
    }

    /// Sets the window's size (what a screenshot shows).
    pub async fn resize(&self, width: u32, height: u32) {
        let rect = json!({"width": width, "height": height});
        let v = self
            .call(reqwest::Method::POST, "/window/rect", Some(rect))
            .await;
        assert!(Browser::ok(&v), "resize: {v}");
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Browser {
    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn quit(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
