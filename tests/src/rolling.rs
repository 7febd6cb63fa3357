//! A rolling update by reload under load, as an operator replaces v1
//! backends by v2: remove a backend, add its replacement, wait for it to be
//! healthy, remove the next, while many clients make short requests and long
//! downloads run. halb must fail no request and cut no download: a removed
//! backend keeps its flows until they end. Used by the end-to-end test and by
//! `cargo xtask bench rolling` (which writes `rolling.md`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::{backend_addr, lb_addr, Lab, BIG_SIZE, CLIENT, VIP};

/// What the update saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Short requests that succeeded.
    pub requests_ok: u64,
    /// Short requests that failed (with the first few reasons).
    pub requests_failed: u64,
    /// First failures.
    pub failures: Vec<String>,
    /// Downloads that arrived whole.
    pub downloads_ok: usize,
    /// Downloads started.
    pub downloads: usize,
    /// Longest pause in any download.
    pub max_gap: Duration,
    /// Backends replaced.
    pub replaced: usize,
    /// Time from the first reload to the last backend released.
    pub took: Duration,
}

const API: &str = "127.0.0.1:8480";

fn config(lab: &Lab, backends: &[u8]) -> String {
    let mut c = format!(
        "[node]\nname = \"lb1\"\ninterface = \"eth0\"\nxdp_mode = \"native\"\nbpf_dir = \"{}\"\n\
         flow_hash_seed = 2718281\nremoval_timeout_ms = 60000\nflow_idle_timeout_ms = 10000\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP}\"\nport = 80\n\
         \n  [vip.health]\n  kind = \"http\"\n  interval_ms = 300\n  timeout_ms = 200\n  rise = 1\n  fall = 2\n",
        lab.pin_dir("lb1").display()
    );
    for &i in backends {
        c.push_str(&format!(
            "\n  [[vip.backend]]\n  name = \"web{i}\"\n  address = \"{}\"\n",
            backend_addr(i)
        ));
    }
    c
}

fn status(lab: &Lab) -> Result<halb::api::model::Status> {
    lab.in_ns("lb1", || -> Result<halb::api::model::Status> {
        let a = halb::api::client::Client::new(API.parse()?, None).get("/api/v1/status")?;
        Ok(serde_json::from_str(&a.body)?)
    })?
}

fn reload(lab: &Lab, path: &std::path::Path, text: &str) -> Result<String> {
    std::fs::write(path, text)?;
    lab.in_ns("lb1", || -> Result<String> {
        let a = halb::api::client::Client::new(API.parse()?, None).post("/api/v1/reload", None)?;
        if a.status != 200 {
            bail!("reload: HTTP {}: {}", a.status, a.body);
        }
        Ok(a.body)
    })?
}

/// Runs the scenario: `clients` request loops and `downloads` long
/// downloads, three backends replaced one by one (web1..3 → web4..6).
pub fn run(clients: usize, downloads: usize) -> Result<Outcome> {
    let mut lab = Lab::new("rol")?;
    lab.add_host("client", CLIENT)?;
    lab.add_host("lb1", lb_addr(1))?;
    lab.attach_pass_on_port("lb1")?;
    for i in 1..=6u8 {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)?;
    }
    let path = lab.dir.join("halb-lb1.toml");
    let mut live: Vec<u8> = vec![1, 2, 3];
    let cfg = config(&lab, &live);
    lab.start_halb("lb1", &cfg, &[])?
        .wait_log("API and stats page listening", Duration::from_secs(20))?;
    lab.wait_for(
        "three healthy backends",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || status(&lab).is_ok_and(|s| s.vips[0].backends.iter().all(|b| b.health == "up")),
    )?;

    // The load: short requests in `clients` loops, long downloads.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut loops = Vec::new();
    for _ in 0..clients {
        let (stop, ok, failed, failures) =
            (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        loops.push(lab.spawn_in_ns("client", move || {
            while !stop.load(Ordering::SeqCst) {
                match crate::client::http_get(VIP, 80, "/", Duration::from_secs(3)) {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut f) = failures.lock() {
                            if f.len() < 10 {
                                f.push(match other {
                                    Ok(r) => format!("HTTP {}", r.status),
                                    Err(e) => format!("{e:#}"),
                                });
                            }
                        }
                    }
                }
            }
        })?);
    }
    let mut streams = Vec::new();
    for _ in 0..downloads {
        let (tx, rx) = std::sync::mpsc::channel();
        streams.push(lab.spawn_in_ns("client", move || {
            crate::client::download(VIP, "/big", move |p| {
                let _ = tx.send(p);
            })
        })?);
        rx.recv_timeout(Duration::from_secs(10))
            .context("a download did not start")?;
    }
    let wait_requests = |n: u64| -> Result<()> {
        let end = Instant::now() + Duration::from_secs(20);
        while ok.load(Ordering::SeqCst) < n {
            if Instant::now() > end {
                bail!("the load stalled at {} requests", ok.load(Ordering::SeqCst));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    };
    wait_requests(clients as u64 * 2)?;

    // Replace web1..3 by web4..6, one at a time.
    let t0 = Instant::now();
    let mut replaced = 0;
    for (old, new) in [(1u8, 4u8), (2, 5), (3, 6)] {
        live.retain(|b| *b != old);
        let out = reload(&lab, &path, &config(&lab, &live))?;
        if !out.contains(&format!("backends removed web/web{old}")) {
            bail!("removing web{old}: {out}");
        }
        live.push(new);
        let out = reload(&lab, &path, &config(&lab, &live))?;
        if !out.contains(&format!("backends added web/web{new}")) {
            bail!("adding web{new}: {out}");
        }
        let name = format!("web{new}");
        lab.wait_for(
            &format!("{name} healthy"),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                status(&lab).is_ok_and(|s| {
                    s.vips[0]
                        .backends
                        .iter()
                        .any(|b| b.name == name && b.health == "up")
                })
            },
        )?;
        // Requests flow with the new backend before the next step.
        wait_requests(ok.load(Ordering::SeqCst) + clients as u64)?;
        replaced += 1;
    }
    // Every download ends whole; then the removed backends are released.
    let mut downloads_ok = 0;
    let mut max_gap = Duration::ZERO;
    let n = streams.len();
    for s in streams {
        if let Ok(Ok(Ok(d))) = s.join() {
            max_gap = max_gap.max(d.max_gap);
            if d.bytes == BIG_SIZE {
                downloads_ok += 1;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let _ = l.join();
    }
    lab.wait_for(
        "the removed backends to be released",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || status(&lab).is_ok_and(|s| s.vips[0].backends.iter().all(|b| !b.removing)),
    )?;
    let took = t0.elapsed();
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    Ok(Outcome {
        requests_ok: ok.load(Ordering::SeqCst),
        requests_failed: failed.load(Ordering::SeqCst),
        failures,
        downloads_ok,
        downloads: n,
        max_gap,
        replaced,
        took,
    })
}

/// The report.
pub fn markdown(o: &Outcome, clients: usize) -> String {
    format!(
        "# Rolling update by reload under load\n\n\
         Command: `cargo xtask bench rolling`. One halb node, three nginx backends \
         replaced one by one by reloads (remove web1, add web4, wait until healthy, \
         remove web2, ...), while {clients} clients make short requests (a new \
         connection each) and {} downloads of 8 MiB (about 4 s each) run.\n\n\
         | | |\n|---|---:|\n\
         | backends replaced | {} |\n\
         | short requests succeeded | {} |\n\
         | short requests failed | {} |\n\
         | downloads complete | {}/{} |\n\
         | longest pause in a download | {:.0} ms |\n\
         | first reload to last removed backend released | {:.1} s |\n{}",
        o.downloads,
        o.replaced,
        o.requests_ok,
        o.requests_failed,
        o.downloads_ok,
        o.downloads,
        o.max_gap.as_secs_f64() * 1000.0,
        o.took.as_secs_f64(),
        if o.failures.is_empty() {
            String::new()
        } else {
            format!("\nFirst failures: {:?}\n", o.failures)
        }
    )
}
