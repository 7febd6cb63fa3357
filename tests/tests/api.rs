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
use halb_lab::lab::{halb_bin, lb_addr, node_config, workspace, Lab, VIP};
use halb_lab::webdriver::Session;

const TOKEN: &str = "s3cret-token-for-the-api-tests";

fn api_addr() -> SocketAddr {
    SocketAddr::from((lb_addr(1), 8480))
}

/// One node whose API listens on its lab address (not loopback: a token is required).
fn lab(tag: &str) -> Lab {
    let mut lab = Lab::single_lb(tag, 3).expect("lab");
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
        let a = if method == "POST" {
            c.post(&path, body.as_deref())
        } else {
            c.request(&method, &path, body.as_deref())
        }
        .expect("API answers");
        (a.status, a.body)
    })
    .expect("ns")
}

/// A raw HTTP exchange with the API from the client's namespace: `head` is
/// sent as is (with `\r\n\r\n` and the body after it); returns the status.
fn raw(lab: &Lab, head: &str, body: &[u8]) -> u16 {
    let mut req = head.replace('\n', "\r\n").into_bytes();
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(body);
    lab.in_ns("client", move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(api_addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // The server may answer (and close) before the whole body is sent.
        let _ = s.write_all(&req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        halb::api::client::parse_answer(&out).map_or(0, |a| a.status)
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
    // The counters reach /metrics with the next publication (every second).
    lab.wait_for(
        "counters in /metrics",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            status(&lab).vips[0]
                .backends
                .iter()
                .map(|b| b.packets)
                .sum::<u64>()
                > 0
        },
    )
    .expect("counted");
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
    let profile = halb_lab::webdriver::start_driver(&mut lab, "client").expect("chromedriver");
    let url = format!("http://{}/", api_addr());
    let shot_dir = workspace().join("target/halb-report");
    let result = lab
        .in_ns("client", move || -> anyhow::Result<(Vec<String>, bool, Vec<u8>)> {
            let s = Session::start("127.0.0.1:9515".parse()?, &profile)?;
            s.goto(&url)?;
            let wait = |js: &str| s.wait(js);
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

#[test]
fn writes_from_another_origin_and_oversized_requests_are_refused() {
    let lab = lab("csr");
    let drain = "/api/v1/vips/web/backends/web2/drain";
    let auth = format!("Authorization: Bearer {TOKEN}");
    let host = format!("Host: {}", api_addr());
    let post = |extra: &str, body: &[u8]| {
        raw(
            &lab,
            &format!(
                "POST {drain} HTTP/1.1\n{host}\n{auth}\nContent-Length: {}\nConnection: close{extra}",
                body.len()
            ),
            body,
        )
    };
    // A page on another origin, even carrying a (stolen) token: refused.
    let json = "\nContent-Type: application/json";
    assert_eq!(
        post(&format!("{json}\nOrigin: http://attacker.example"), b"{}"),
        403
    );
    assert_eq!(
        post(&format!("{json}\nSec-Fetch-Site: cross-site"), b"{}"),
        403
    );
    // A form post (a "simple" request needing no preflight): refused.
    assert_eq!(
        post("\nContent-Type: application/x-www-form-urlencoded", b"a=b"),
        415
    );
    assert_eq!(post("\nContent-Type: text/plain", b"{}"), 415);
    assert_eq!(post("", b"{}"), 415);
    assert!(!backend(&status(&lab), "web2").drained, "nothing changed");
    // Same origin (the stats page) and no origin (halb, curl) are fine.
    let same = format!(
        "{json}\nOrigin: http://{}\nSec-Fetch-Site: same-origin",
        api_addr()
    );
    assert_eq!(post(&same, b"{}"), 200);
    assert!(backend(&status(&lab), "web2").drained);
    // Limits: a body over 16 KiB, headers over 16 KiB.
    let big = vec![b' '; 64 * 1024];
    let code = post(json, &big);
    assert_eq!(code, 413, "oversized body");
    let long = format!("\nX-Filler: {}", "a".repeat(32 * 1024));
    let code = raw(
        &lab,
        &format!("GET /api/v1/status HTTP/1.1\n{host}{long}"),
        b"",
    );
    assert!(code == 431 || code == 0, "oversized header: {code}");
    assert_eq!(status(&lab).vips.len(), 1, "the API still answers");
}

#[test]
fn a_page_in_the_operators_browser_cannot_drain_a_loopback_api() {
    // The default: API on 127.0.0.1:8480, no token.
    let mut lab = Lab::single_lb("ctk", 3).expect("lab");
    let cfg = node_config(&lab, "lb1", "native", 3, None, None);
    lab.start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("agent up");
    let post = |host: &str, extra: &str| -> u16 {
        let req = format!(
            "POST /api/v1/vips/web/backends/web2/drain HTTP/1.1\r\nHost: {host}\r\n\
             Content-Length: 2\r\nConnection: close{extra}\r\n\r\n{{}}"
        );
        lab.in_ns("lb1", move || {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect("127.0.0.1:8480").expect("connect");
            s.write_all(req.as_bytes()).expect("write");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            halb::api::client::parse_answer(&out).map_or(0, |a| a.status)
        })
        .expect("ns")
    };
    let drained = |lab: &Lab| {
        lab.in_ns("lb1", || {
            let a = Client::new("127.0.0.1:8480".parse().expect("addr"), None)
                .get("/api/v1/status")
                .expect("status");
            let s: Status = serde_json::from_str(&a.body).expect("json");
            s.vips[0]
                .backends
                .iter()
                .any(|b| b.name == "web2" && b.drained)
        })
        .expect("ns")
    };
    let json = "\r\nContent-Type: application/json";
    // A form or fetch from another site (no preflight needed for these).
    assert_eq!(
        post(
            "127.0.0.1:8480",
            "\r\nOrigin: http://attacker.example\r\nContent-Type: text/plain"
        ),
        403
    );
    // A browser that sends no Origin for a simple request: not JSON, refused.
    assert_eq!(post("127.0.0.1:8480", "\r\nContent-Type: text/plain"), 415);
    assert_eq!(
        post(
            "127.0.0.1:8480",
            &format!("{json}\r\nOrigin: http://attacker.example")
        ),
        403
    );
    assert_eq!(
        post(
            "127.0.0.1:8480",
            &format!("{json}\r\nSec-Fetch-Site: cross-site")
        ),
        403
    );
    // DNS rebinding: the attacker's name resolves to 127.0.0.1, so Origin,
    // Host and Sec-Fetch-Site all look same-origin.
    let rebound =
        format!("{json}\r\nOrigin: http://evil.example:8480\r\nSec-Fetch-Site: same-origin");
    assert_eq!(post("evil.example:8480", &rebound), 403);
    assert!(!drained(&lab), "nothing was drained");
    // The operator's own page and the CLI work.
    let own = format!("{json}\r\nOrigin: http://localhost:8480\r\nSec-Fetch-Site: same-origin");
    assert_eq!(post("localhost:8480", &own), 200);
    assert!(drained(&lab));
}

/// Raises this process's open-file limit to its hard limit.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

#[test]
fn thousands_of_half_open_connections_change_nothing_for_the_service() {
    raise_nofile();
    let mut lab = Lab::single_lb("slw", 3).expect("lab");
    let token = lab.dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    let v = halb_lab::lab::VrrpOpts::v3(150);
    let cfg = node_config(&lab, "lb1", "native", 3, None, Some(&v))
        .replace(
            "[[vip]]",
            &format!(
                "[api]\nlisten = \"{}\"\ntoken_file = \"{}\"\n\n[[vip]]",
                api_addr(),
                token.display()
            ),
        )
        .replacen(
            "\n  [[vip.backend]]",
            "\n  [vip.health]\n  kind = \"http\"\n  interval_ms = 200\n  timeout_ms = 150\n  \
             rise = 2\n  fall = 2\n\n  [[vip.backend]]",
            1,
        );
    let path = lab.dir.join("halb-lb1.toml");
    std::fs::write(&path, &cfg).expect("config");
    // The usual limit under systemd without LimitNOFILE: 1024.
    let mut c = lab.nsenter("lb1", std::path::Path::new("/usr/bin/prlimit"));
    c.arg("--nofile=1024:1024")
        .arg(halb_bin())
        .arg("run")
        .arg("-c")
        .arg(&path);
    lab.spawn("halb-lb1", c)
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("agent up");
    lab.wait_for(
        "master, backends up",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let s = status(&lab);
            s.vrrp.as_ref().is_some_and(|v| v.state == "MASTER")
                && s.vips[0].backends.iter().all(|b| b.health == "up")
        },
    )
    .expect("converged");
    let before = status(&lab);
    // 2000 connections that each send half a request header, held open.
    let opening = std::time::Instant::now();
    let held = lab
        .in_ns("client", || {
            let mut held = Vec::new();
            for _ in 0..2000 {
                if let Ok(mut s) =
                    std::net::TcpStream::connect_timeout(&api_addr(), Duration::from_secs(1))
                {
                    let _ = s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n");
                    held.push(s);
                }
            }
            held
        })
        .expect("ns");
    assert!(held.len() >= 1000, "{} connections opened", held.len());
    // Opening them may take longer than the header timeout on a slow
    // machine (a SYN the full accept queue dropped waits a second): each
    // timeout that passed meanwhile freed the slots once more.
    let windows = 1 + opening
        .elapsed()
        .as_millis()
        .div_ceil(halb::api::HEADER_TIMEOUT.as_millis());
    // While they are held, past the header timeout (the server cuts them
    // and they are immediately replaced), the VIP serves every request, the
    // node stays master, no backend falls.
    let t0 = std::time::Instant::now();
    let mut served = 0;
    while t0.elapsed() < halb::api::HEADER_TIMEOUT + Duration::from_secs(2) {
        let replies = lab
            .requests(10, Duration::from_secs(2))
            .expect("the VIP serves");
        served += replies.len();
        assert!(
            lab.has_addr("lb1", VIP).expect("ip"),
            "lb1 still holds the VIP"
        );
    }
    assert!(served >= 20, "{served} requests");
    let held_count = held.len();
    drop(held);
    // The API answers again once they are gone.
    lab.wait_for(
        "the API to answer",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            lab.in_ns("client", || {
                Client::new(api_addr(), None)
                    .get("/api/v1/status")
                    .is_ok_and(|a| a.status == 200)
            })
            .unwrap_or(false)
        },
    )
    .expect("API back");
    let after = status(&lab);
    // The cap held: all but 128 of them (per header timeout that passed
    // while they were opened) were closed at once.
    let admitted = halb::api::MAX_CONNECTIONS as u64 * windows as u64;
    assert!(
        after.node.api_refused_connections >= (held_count as u64).saturating_sub(admitted),
        "{} refused of {held_count} ({windows} header timeouts passed while opening)",
        after.node.api_refused_connections
    );
    let log = lab.proc_mut("halb-lb1").expect("halb").log_text();
    assert!(!log.contains("backend is DOWN"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    assert_eq!(
        after.vrrp.as_ref().map(|v| v.transitions),
        before.vrrp.as_ref().map(|v| v.transitions),
        "no VRRP state change"
    );
    assert!(after.vips[0].backends.iter().all(|b| b.health == "up"));
}

#[test]
fn a_slow_client_is_cut_off() {
    let lab = lab("hto");
    let closed_after = lab
        .in_ns("client", || {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect(api_addr()).expect("connect");
            s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let t = std::time::Instant::now();
            let mut buf = [0u8; 256];
            // The server closes (EOF or an error status) once the header
            // timeout passes.
            let _ = s.read(&mut buf);
            t.elapsed()
        })
        .expect("ns");
    assert!(
        closed_after < halb::api::HEADER_TIMEOUT + Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    assert!(closed_after >= halb::api::HEADER_TIMEOUT - Duration::from_secs(1));
}

#[test]
fn an_empty_token_file_is_refused_at_start() {
    let mut lab = Lab::new("etk").expect("lab");
    lab.add_host("lb1", lb_addr(1)).expect("lb1");
    let token = lab.dir.join("token");
    std::fs::write(&token, "").expect("token");
    let cfg = node_config(&lab, "lb1", "generic", 0, None, None).replace(
        "[[vip]]",
        &format!(
            "[api]\nlisten = \"{}\"\ntoken_file = \"{}\"\n\n[[vip]]",
            api_addr(),
            token.display()
        ),
    );
    let path = lab.dir.join("halb-lb1.toml");
    std::fs::write(&path, &cfg).expect("config");
    let out = Command::new(halb_bin())
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .expect("check-config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check-config accepted an empty token"
    );
    assert!(err.contains("at least 16"), "{err}");
    let p = lab.start_halb("lb1", &cfg, &[]).expect("start");
    let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    assert!(p.log_text().contains("at least 16"), "{}", p.log_text());
}
