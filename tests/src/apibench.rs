//! `cargo xtask bench api`: how fast the agent's API answers while the
//! data plane forwards at full rate (wrk through the VIP), and how long a
//! `/metrics` scrape takes with 1000 backends.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use halb::api::client::Client;

use crate::lab::{backend_addr, lb_addr, node_config, run, Lab, CLIENT, VIP};

/// The API token of the bench node.
const TOKEN: &str = "halb-bench-token-0123456789";

/// Latencies in ms: (median, p99, max).
pub fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99), at(1.0))
}

/// Results of one run.
pub struct ApiBench {
    /// Status latencies under load, 3 backends (median, p99, max) in ms.
    pub status_ms: (f64, f64, f64),
    /// Requests measured.
    pub status_n: usize,
    /// Requests per second wrk achieved meanwhile.
    pub wrk_rps: f64,
    /// Status latencies under load with 1000 backends.
    pub status_big_ms: (f64, f64, f64),
    /// Its size.
    pub status_big_bytes: usize,
    /// wrk meanwhile.
    pub wrk_big_rps: f64,
    /// /metrics scrape times (median, p99, max) in ms.
    pub metrics_ms: (f64, f64, f64),
    /// Backends in the config.
    pub backends: usize,
    /// Size of one scrape.
    pub metrics_bytes: usize,
}

/// Runs the measurement.
pub fn run_bench() -> Result<ApiBench> {
    let mut lab = Lab::new("apb")?;
    lab.add_host("client", CLIENT)?;
    lab.add_host("lb1", lb_addr(1))?;
    lab.attach_pass_on_port("lb1")?;
    for i in 1..=3u8 {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)?;
    }
    // The real VIP over three nginx backends, and five more VIPs with 200
    // backends each on lab addresses where nothing answers (listed in the
    // status and metrics, given no traffic).
    let small = node_config(&lab, "lb1", "native", 3, None, None).replace(
        "[[vip]]",
        &format!(
            "[api]\nlisten = \"{}:8480\"\ntoken_file = \"{}\"\n\n[[vip]]",
            lb_addr(1),
            lab.dir.join("token").display()
        ),
    );
    std::fs::write(lab.dir.join("token"), TOKEN)?;
    let mut cfg = small.clone();
    let quiet: Vec<u16> = (30..100).chain(110..240).collect();
    for v in 0..5u16 {
        cfg.push_str(&format!(
            "\n[[vip]]\nname = \"many{v}\"\naddress = \"10.77.0.{}\"\nport = {}\n",
            101 + v,
            8000 + v
        ));
        for (b, last) in quiet.iter().enumerate() {
            cfg.push_str(&format!(
                "\n  [[vip.backend]]\n  name = \"b{b}\"\n  address = \"10.77.0.{last}\"\n"
            ));
        }
    }
    let backends = cfg.matches("[[vip.backend]]").count();
    lab.start_halb("lb1", &small, &[])?
        .wait_log("API and stats page listening", Duration::from_secs(60))?;
    let api = format!("{}:8480", lb_addr(1)).parse()?;

    // Status under load with the ordinary config.
    let (status, _, wrk_rps) = status_under_load(&lab, api)?;

    // Then 1000 backends, by a reload.
    std::fs::write(lab.dir.join("halb-lb1.toml"), &cfg)?;
    let reloaded = lab.in_ns("client", move || -> Result<u16> {
        let c = Client {
            timeout: Duration::from_secs(60),
            ..Client::new(api, Some(TOKEN.into()))
        };
        Ok(c.post("/api/v1/reload", None)?.status)
    })??;
    if reloaded != 200 {
        bail!("reload to 1000 backends: HTTP {reloaded}");
    }
    // The next publication carries them all.
    lab.wait_for(
        "1000 backends in the status",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            lab.in_ns("client", move || {
                Client::new(api, None)
                    .get("/api/v1/status")
                    .ok()
                    .and_then(|a| serde_json::from_str::<halb::api::model::Status>(&a.body).ok())
                    .is_some_and(|s| s.vips.iter().map(|v| v.backends.len()).sum::<usize>() >= 1000)
            })
            .unwrap_or(false)
        },
    )?;

    // Scrapes of /metrics, quiet.
    let (metrics_ms, metrics_bytes) =
        lab.in_ns("client", move || -> Result<(Vec<f64>, usize)> {
            let c = Client::new(api, None);
            let mut t = Vec::new();
            let mut size = 0;
            for _ in 0..50 {
                let s = Instant::now();
                let a = c.get("/metrics")?;
                t.push(s.elapsed().as_secs_f64() * 1000.0);
                if a.status != 200 {
                    bail!("metrics: HTTP {}", a.status);
                }
                size = a.body.len();
            }
            Ok((t, size))
        })??;

    let (status_big, status_big_bytes, wrk_big_rps) = status_under_load(&lab, api)?;
    Ok(ApiBench {
        status_n: status.len(),
        status_ms: percentiles(status),
        wrk_rps,
        status_big_ms: percentiles(status_big),
        status_big_bytes,
        wrk_big_rps,
        metrics_ms: percentiles(metrics_ms),
        backends,
        metrics_bytes,
    })
}

/// `GET /api/v1/status` every 5 ms for 5 s while wrk drives the VIP:
/// latencies (ms), the document's size, and wrk's requests per second.
fn status_under_load(lab: &Lab, api: std::net::SocketAddr) -> Result<(Vec<f64>, usize, f64)> {
    let mut wrk = lab.cmd("client", "wrk");
    wrk.args(["-t2", "-c50", "-d8s", &format!("http://{VIP}/")]);
    let wrk_thread = std::thread::spawn(move || run(&mut wrk));
    std::thread::sleep(Duration::from_millis(1000));
    let (lat, size) = lab.in_ns("client", move || -> Result<(Vec<f64>, usize)> {
        let c = Client::new(api, None);
        let mut t = Vec::new();
        let mut size = 0;
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let s = Instant::now();
            let a = c.get("/api/v1/status")?;
            t.push(s.elapsed().as_secs_f64() * 1000.0);
            if a.status != 200 {
                bail!("status: HTTP {}", a.status);
            }
            size = a.body.len();
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((t, size))
    })??;
    let out = wrk_thread
        .join()
        .map_err(|_| anyhow::anyhow!("wrk thread"))??;
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("wrk output")?;
    Ok((lat, size, rps))
}
