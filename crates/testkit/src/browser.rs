//! A headless Chromium driven over WebDriver, for the dashboard's tests.
//!
//! WebDriver is JSON over HTTP, and the few commands the tests need (open a page, find an
//! element, click, read text, run a script, take a screenshot) are one request each, so this
//! speaks it with the hyper client already here rather than adding a WebDriver crate.
//! `chromedriver` runs on an ephemeral port with a temporary profile and is killed on drop.

use std::{path::Path, process::Stdio, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::client;

/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session; `chromedriver` and the browser die with it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element of the page, by its WebDriver reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "spawning chromedriver: {e} (install the Debian packages chromium and chromium-driver; .ci/setup does)"
                )
            })?;
        let base = format!("http://127.0.0.1:{port}");
        let ready = crate::wait_until(
            Duration::from_secs(20),
            "chromedriver to answer /status",
            || async {
                let r = client::get(&format!("{base}/status")).await.ok()?;
                let v: Value = serde_json::from_slice(&r.body).ok()?;
                (v["value"]["ready"] == true).then_some(())
            },
        )
        .await;
        if let Err(e) = ready {
            let _ = driver.kill().await;
            return Err(e);
        }
        let profile = tempfile::tempdir()?;
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--no-first-run".to_string(),
            "--hide-scrollbars".to_string(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if is_root() {
            args.push("--no-sandbox".to_string());
        }
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "args": args, "binary": chromium_binary() },
            }}
        });
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let v = browser.call(Method::POST, "/session", Some(caps)).await?;
        browser.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("new session without an id: {v}"))?
            .to_string();
        Ok(browser)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let http = client::http1();
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let rsp = http.request(req).await?;
            let (parts, body) = rsp.into_parts();
            let bytes = http_body_util::BodyExt::collect(body).await?.to_bytes();
            anyhow::Ok((parts.status, bytes))
        })
        .await
        .map_err(|_| {
            anyhow::anyhow!("WebDriver {method} {path}: no answer within {COMMAND_TIMEOUT:?}")
        })??;
        let v: Value = serde_json::from_slice(&reply.1)
            .map_err(|e| anyhow::anyhow!("WebDriver {method} {path}: not JSON ({e})"))?;
        if !reply.0.is_success() {
            anyhow::bail!(
                "WebDriver {method} {path}: {} {}: {}",
                reply.0,
                v["value"]["error"],
                v["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            );
        }
        Ok(v["value"].clone())
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` (waits for the load event).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(Method::POST, &self.at("/url"), Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.call(
            Method::POST,
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null`/`false`, within `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let last_err = std::sync::Mutex::new(None);
        let found = crate::wait_until(timeout, what, || async {
            match self.eval(script, vec![]).await {
                Ok(v) if !v.is_null() && v != false => Some(v),
                Ok(_) => None,
                Err(e) => {
                    *last_err.lock().unwrap() = Some(e.to_string());
                    None
                }
            }
        })
        .await;
        let last_err = last_err.into_inner().unwrap();
        found.map_err(|e| anyhow::anyhow!("{e} (last script error: {last_err:?})"))
    }

    /// The first element matching the CSS `selector`.
    pub async fn find(&self, selector: &str) -> anyhow::Result<Element> {
        let v = self
            .call(
                Method::POST,
                &self.at("/element"),
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await?;
        v[ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_string()))
            .ok_or_else(|| anyhow::anyhow!("no element reference for {selector}: {v}"))
    }

    /// Clicks `element` as a user would (scrolled into view, real pointer events).
    pub async fn click(&self, element: &Element) -> anyhow::Result<()> {
        self.call(
            Method::POST,
            &self.at(&format!("/element/{}/click", element.0)),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> anyhow::Result<String> {
        let v = self
            .call(
                Method::GET,
                &self.at(&format!("/element/{}/text", element.0)),
                None,
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The page's current URL.
    pub async fn url(&self) -> anyhow::Result<String> {
        let v = self.call(Method::GET, &self.at("/url"), None).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Saves a PNG screenshot of the viewport to `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self
            .call(Method::GET, &self.at("/screenshot"), None)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("screenshot is not base64: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close Chromium (killing chromedriver alone
        // could orphan the browser); then chromedriver is killed. Blocking and bounded.
        if !self.session.is_empty() {
            let _ = delete_session(&self.base, &self.session);
        }
        let _ = self.driver.start_kill();
    }
}

fn delete_session(base: &str, session: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        tcp,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    // chromedriver cannot report the port it bound, so pick a free one and hand it over.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chromium_binary() -> &'static str {
    if Path::new("/usr/bin/chromium").exists() {
        "/usr/bin/chromium"
    } else {
        "chromium"
    }
}
