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
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits up to 5 s for `css` to match.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = self.element(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element matches {css:?} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.element(css).await.is_some()
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/element/{e}/click"),
                Some(json!({})),
            )
            .await;
        assert!(Browser::ok(&v), "click {css}: {v}");
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

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits for a confirm() dialog and returns its text.
    pub async fn dialog_text(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
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
