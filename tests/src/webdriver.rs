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

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64("aGFsYg==").expect("ok"), b"halb");
        assert_eq!(super::base64("aGFsYnM=").expect("ok"), b"halbs");
    }
}
