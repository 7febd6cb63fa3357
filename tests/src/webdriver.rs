//! Just enough of the W3C WebDriver protocol to drive headless Chromium
//! through chromedriver (Debian's `chromium` and `chromium-driver`): open a
//! page, run a script, click an element, take a screenshot.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use halb::api::client::Client;
use serde_json::{json, Value};

/// The key WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session.
pub struct Session {
    client: Client,
    id: String,
}

impl Session {
    /// Starts headless Chromium through the chromedriver at `driver`.
    pub fn start(driver: SocketAddr, profile: &std::path::Path) -> Result<Self> {
        // Chromium can take a while to start on a small VM.
        let client = Client {
            timeout: std::time::Duration::from_secs(120),
            ..Client::new(driver, None)
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = call(&client, "POST", "/session", Some(caps))?;
        let id = v["sessionId"]
            .as_str()
            .context("no session id")?
            .to_string();
        Ok(Self { client, id })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        call(
            &self.client,
            method,
            &format!("/session/{}{path}", self.id),
            body,
        )
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    /// Runs `script` (a function body) and returns its value.
    pub fn script(&self, script: &str) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) -> Result<()> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        let el = v[ELEMENT]
            .as_str()
            .with_context(|| format!("no element {css}: {v}"))?;
        self.call("POST", &format!("/element/{el}/click"), Some(json!({})))?;
        Ok(())
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.call("GET", "/screenshot", None)?;
        base64(v.as_str().context("no screenshot")?)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.client.delete(&format!("/session/{}", self.id));
    }
}

fn call(client: &Client, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let text = body.map(|b| b.to_string());
    let a = client.request(
        method,
        path,
        text.as_deref().or(Some("{}")).filter(|_| method == "POST"),
    )?;
    let v: Value =
        serde_json::from_str(&a.body).with_context(|| format!("{method} {path}: {}", a.body))?;
    if a.status != 200 {
        bail!(
            "{method} {path}: HTTP {}: {}",
            a.status,
            v["value"]["message"]
        );
    }
    Ok(v["value"].clone())
}

/// Standard base64 decoding.
pub fn base64(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64"),
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Starts chromedriver in `host`'s namespace (port 9515) and waits until it
/// listens; returns a fresh Chromium profile directory for [`Session::start`].
pub fn start_driver(lab: &mut crate::lab::Lab, host: &str) -> Result<std::path::PathBuf> {
    let profile = lab.dir.join(format!("chromium-profile-{host}"));
    std::fs::create_dir_all(&profile)?;
    let mut driver = lab.cmd(host, "chromedriver");
    driver.arg("--port=9515");
    lab.spawn(&format!("chromedriver-{host}"), driver)?;
    lab.wait_for(
        "chromedriver",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(100),
        || {
            lab.in_ns(host, || {
                std::net::TcpStream::connect("127.0.0.1:9515").is_ok()
            })
            .unwrap_or(false)
        },
    )?;
    Ok(profile)
}

impl Session {
    /// Runs `js` until it returns something other than false or null
    /// (polled every 100 ms, for at most 10 s); returns that.
    pub fn wait(&self, js: &str) -> Result<Value> {
        for _ in 0..100 {
            let v = self.script(js)?;
            if v.as_bool() != Some(false) && !v.is_null() {
                return Ok(v);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!("page never satisfied: {js}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64("aGFsYg==").expect("ok"), b"halb");
        assert_eq!(super::base64("aGFsYnM=").expect("ok"), b"halbs");
    }
}
