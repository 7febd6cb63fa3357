//! The operator interface against a running agent in the lab: every
//! endpoint, the 401 and 404 paths, `/metrics` through a real Prometheus
//! parser, `halb status`, and the stats page in headless Chromium (a
//! screenshot is kept under target/halb-report/). Needs root.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use halb::api::client::Client;
use halb::api::model::Status;
use halb_lab::lab::{backend_addr, halb_bin, lb_addr, node_config, workspace, Lab, CLIENT, VIP};
use halb_lab::webdriver::Session;

const TOKEN: &str = "s3cret-token";

fn api_addr() -> SocketAddr {
    SocketAddr::from((lb_addr(1), 8480))
}

/// One node whose API listens on its lab address (not loopback: a token is required).
fn lab(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).expect("lab");
    lab.add_host("client", CLIENT).expect("client");
    lab.add_host("lb1", lb_addr(1)).expect("lb1");
    lab.attach_pass_on_port("lb1").expect("pass");
    for i in 1..=3u8 {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)
            .expect("backend");
    }
    let token = lab.dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let cfg = node_config(&lab, "lb1", "native", 3, None, None).replace(
        "[[vip]]",
        &format!(
            "[api]\nlisten = \"{}\"\ntoken_file = \"{}\"\n\n[[vip]]",
            api_addr(),
            token.display()
        ),
    );
    lab.start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("agent up");
    lab
}

/// Calls the API from the client's namespace.
fn call(
    lab: &Lab,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let (method, path, token, body) = (
        method.to_string(),
        path.to_string(),
        token.map(String::from),
        body.map(String::from),
    );
    lab.in_ns("client", move || {
        let c = Client::new(api_addr(), token);
        let a = c
            .request(&method, &path, body.as_deref())
            .expect("API answers");
        (a.status, a.body)
    })
    .expect("ns")
}

fn status(lab: &Lab) -> Status {
    let (code, body) = call(lab, "GET", "/api/v1/status", None, None);
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("status JSON")
}

fn backend<'a>(s: &'a Status, name: &str) -> &'a halb::api::model::BackendStatus {
    s.vips[0]
        .backends
        .iter()
        .find(|b| b.name == name)
        .expect("backend")
}

#[test]
fn endpoints_tokens_and_errors() {
    let lab = lab("api");
    // Status: the documented document.
    let s = status(&lab);
    assert_eq!(s.node.name, "lb1");
    assert_eq!(s.node.xdp_mode, "native");
    assert!(s.vrrp.is_none());
    assert_eq!(s.vips.len(), 1);
    assert_eq!(s.vips[0].address, VIP.to_string());
    assert_eq!(s.vips[0].backends.len(), 3);
    assert!(s.vips[0]
        .backends
        .iter()
        .all(|b| b.mac.is_some() && b.health == "no-check"));

    // Write calls need the token; without it nothing changes.
    let drain = "/api/v1/vips/web/backends/web2/drain";
    let (code, body) = call(&lab, "POST", drain, None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (code, _) = call(&lab, "POST", drain, Some("wrong"), None);
    assert_eq!(code, 401);
    assert!(
        !backend(&status(&lab), "web2").drained,
        "a refused call changes nothing"
    );
    let (code, body) = call(&lab, "POST", drain, Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"drained\":true"), "{body}");
    let s = status(&lab);
    assert!(backend(&s, "web2").drained);
    assert_eq!(backend(&s, "web2").weight, 0);
    let (code, _) = call(
        &lab,
        "POST",
        "/api/v1/vips/web/backends/web2/enable",
        Some(TOKEN),
        None,
    );
    assert_eq!(code, 200);
    assert!(!backend(&status(&lab), "web2").drained);
    let (code, body) = call(
        &lab,
        "POST",
        "/api/v1/vips/web/backends/web3/weight",
        Some(TOKEN),
        Some("{\"weight\": 5}"),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(backend(&status(&lab), "web3").weight, 5);

    // Unknown names: 404 with a JSON error; bad bodies: 400.
    for (path, want) in [
        (
            "/api/v1/vips/nope/backends/web1/drain",
            "no vip named \\\"nope\\\"",
        ),
        (
            "/api/v1/vips/web/backends/nope/drain",
            "no backend named \\\"nope\\\"",
        ),
        ("/api/v1/vips/web/backends/web1/explode", "unknown action"),
    ] {
        let (code, body) = call(&lab, "POST", path, Some(TOKEN), None);
        assert_eq!(code, 404, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
    }
    let (code, body) = call(
        &lab,
        "POST",
        "/api/v1/vips/web/backends/web1/weight",
        Some(TOKEN),
        Some("{\"w\": 1}"),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = call(
        &lab,
        "POST",
        "/api/v1/vips/web/backends/web1/weight",
        Some(TOKEN),
        Some("{\"weight\": 100000}"),
    );
    assert_eq!(code, 400, "{body}");

    // Reload through the API.
    let (code, _) = call(&lab, "POST", "/api/v1/reload", None, None);
    assert_eq!(code, 401);
    let (code, body) = call(&lab, "POST", "/api/v1/reload", Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("no changes"), "{body}");

    // The page.
    let (code, body) = call(&lab, "GET", "/", None, None);
    assert_eq!(code, 200);
    assert!(body.contains("<title>halb stats</title>"));

    // `halb status`: a table, and JSON.
    let mut c = lab.nsenter("client", &halb_bin());
    c.args(["status", "--api", &api_addr().to_string()]);
    let out = c.output().expect("halb status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("node lb1") && text.contains("web3") && text.contains("STANDALONE"),
        "{text}"
    );
    let mut c = lab.nsenter("client", &halb_bin());
    c.args(["status", "--json", "--api", &api_addr().to_string()]);
    let out = c.output().expect("halb status --json");
    let s: Status = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(s.vips[0].backends.len(), 3);
}

#[test]
fn status_says_where_it_looked_when_nothing_answers() {
    let out = Command::new(halb_bin())
        .args(["status", "--api", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no halb agent answers at 127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn metrics_parse_with_the_prometheus_parser() {
    let lab = lab("met");
    // Some traffic so that counters move.
    lab.in_ns("client", || {
        for _ in 0..30 {
            let _ = halb_lab::client::http_get(VIP, 80, "/", Duration::from_secs(2));
        }
    })
    .expect("ns");
    std::thread::sleep(Duration::from_millis(1200));
    let (code, text) = call(&lab, "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    // Debian's python3 carries prometheus_client (python3-prometheus-client).
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
for name in ["halb_up", "halb_backend_up", "halb_backend_packets", "halb_dataplane_packets", "halb_backend_weight"]:
    assert name in fams, name
ups = [s for s in fams["halb_backend_up"].samples]
assert len(ups) == 3 and all(s.labels["vip"] == "web" and s.value == 1 for s in ups), ups
pk = sum(s.value for s in fams["halb_backend_packets"].samples if s.name == "halb_backend_packets_total")
assert pk > 0, pk
print("families", len(fams), "backend packets", int(pk))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn stats_page_in_headless_chromium() {
    let mut lab = lab("web");
    let profile = lab.dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).expect("profile");
    let mut driver = lab.cmd("client", "chromedriver");
    driver.arg("--port=9515");
    lab.spawn("chromedriver", driver).expect("chromedriver");
    lab.wait_for(
        "chromedriver",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            lab.in_ns("client", || {
                std::net::TcpStream::connect("127.0.0.1:9515").is_ok()
            })
            .unwrap_or(false)
        },
    )
    .expect("chromedriver listens");
    let url = format!("http://{}/", api_addr());
    let shot_dir = workspace().join("target/halb-report");
    let result = lab
        .in_ns("client", move || -> anyhow::Result<(Vec<String>, bool, Vec<u8>)> {
            let s = Session::start("127.0.0.1:9515".parse()?, &profile)?;
            s.goto(&url)?;
            let wait = |js: &str| -> anyhow::Result<serde_json::Value> {
                for _ in 0..100 {
                    let v = s.script(js)?;
                    if v.as_bool() != Some(false) && !v.is_null() {
                        return Ok(v);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                anyhow::bail!("page never satisfied: {js}")
            };
            wait("return document.body.dataset.loaded === '1'")?;
            let rows = s.script(
                "return Array.from(document.querySelectorAll('tr[data-backend]')).map(r => r.dataset.backend)",
            )?;
            let rows: Vec<String> = serde_json::from_value(rows)?;
            // The token the page asks for on a 401, given beforehand.
            s.script(&format!("localStorage.setItem('halb-token', '{TOKEN}'); return true"))?;
            s.click("tr[data-backend='web2'] button[data-action='drain']")?;
            wait("return document.querySelector(\"tr[data-backend='web2']\").classList.contains('drained')")?;
            let enable_shown = s
                .script("return !!document.querySelector(\"tr[data-backend='web2'] button[data-action='enable']\")")?
                .as_bool()
                .unwrap_or(false);
            let png = s.screenshot()?;
            Ok((rows, enable_shown, png))
        })
        .expect("ns");
    let (rows, enable_shown, png) = result.expect("browser session");
    assert_eq!(rows, ["web1", "web2", "web3"], "the backends are listed");
    assert!(enable_shown, "a drained backend offers enable");
    assert!(
        png.starts_with(&[0x89, b'P', b'N', b'G']),
        "a PNG screenshot"
    );
    std::fs::create_dir_all(&shot_dir).expect("dir");
    std::fs::write(shot_dir.join("stats-page.png"), &png).expect("screenshot");
    // The click reached the agent.
    assert!(
        backend(&status(&lab), "web2").drained,
        "drained in /api/v1/status too"
    );
}
