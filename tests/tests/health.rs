//! End-to-end health checks and live backend management: a backend whose
//! nginx stops leaves the table within fall × interval and comes back after
//! rise × interval; a rolling update (drain, restart, enable, each backend
//! in turn) loses no request; a broken reload is rejected while traffic
//! goes on; a drained backend keeps its long stream. Needs root.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use halb::api::client::Client;
use halb::api::model::Status;
use halb::dataplane::Maps;
use halb_lab::client;
use halb_lab::lab::{
    backend_addr, halb_bin, lb_addr, node_config, run, Lab, BIG_SIZE, CLIENT, VIP,
};

const BACKENDS: u8 = 3;
const API: &str = "127.0.0.1:8480";
const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;

fn health_section() -> String {
    format!(
        "\n  [vip.health]\n  kind = \"http\"\n  path = \"/\"\n  expect_status = 200\n  \
         interval_ms = {INTERVAL_MS}\n  timeout_ms = {TIMEOUT_MS}\n  rise = {RISE}\n  fall = {FALL}\n"
    )
}

/// The node's config with HTTP checks (inserted before the first backend).
fn config(lab: &Lab) -> String {
    // A short idle timeout: a removed backend's changed slots settle, and
    // it is released, a few seconds after its last flow ended.
    let base = node_config(lab, "lb1", "native", BACKENDS, None, None).replacen(
        "\n\n",
        "\nflow_idle_timeout_ms = 2000\n\n",
        1,
    );
    base.replacen(
        "\n  [[vip.backend]]",
        &format!("{}\n  [[vip.backend]]", health_section()),
        1,
    )
}

fn lab(tag: &str) -> Lab {
    let mut lab = Lab::single_lb(tag, BACKENDS).expect("lab");
    let cfg = config(&lab);
    lab.start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("agent up");
    wait_health(&lab, |s| {
        s.vips[0].backends.iter().all(|b| b.health == "up")
    });
    lab
}

fn status(lab: &Lab) -> Status {
    lab.in_ns("lb1", || {
        let c = Client::new(API.parse().expect("addr"), None);
        let a = c.get("/api/v1/status").expect("API answers");
        serde_json::from_str::<Status>(&a.body).expect("status JSON")
    })
    .expect("ns")
}

fn wait_health(lab: &Lab, mut f: impl FnMut(&Status) -> bool) -> Duration {
    lab.wait_for(
        "backend health",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || f(&status(lab)),
    )
    .unwrap_or_else(|e| panic!("{e}: {:#?}", status(lab).vips[0].backends))
}

fn health_of(s: &Status, backend: &str) -> String {
    s.vips[0]
        .backends
        .iter()
        .find(|b| b.name == backend)
        .map(|b| b.health.clone())
        .unwrap_or_default()
}

/// Runs `halb <args>` in the node's namespace (the operator's CLI).
fn halb(lab: &Lab, args: &[&str]) -> String {
    let mut c = lab.nsenter("lb1", &halb_bin());
    c.args(args).args(["--api", API]);
    run(&mut c).expect("halb command")
}

/// A client hammering the VIP with new connections until stopped; counts
/// answers per backend and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<String>>>,
}

impl Load {
    fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = lab
            .spawn_in_ns("client", move || {
                let mut errors = Vec::new();
                while !s.load(Ordering::SeqCst) {
                    match client::http_get(VIP, 80, "/", Duration::from_secs(2)) {
                        Ok(r) if r.status == 200 => {
                            o.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            f.fetch_add(1, Ordering::SeqCst);
                            errors.push(format!("HTTP {}", r.status));
                        }
                        Err(e) => {
                            f.fetch_add(1, Ordering::SeqCst);
                            errors.push(format!("{e:#}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                errors
            })
            .expect("load");
        Self {
            stop,
            ok,
            failed,
            thread,
        }
    }

    /// Waits until `n` requests have succeeded in all.
    fn wait_for(&self, n: u64) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.ok.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < end,
                "the load made {} requests, not {n} ({} failed)",
                self.ok.load(Ordering::SeqCst),
                self.failed.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.thread.join().expect("join").expect("ns");
        assert_eq!(self.failed.load(Ordering::SeqCst), errors.len() as u64);
        (self.ok.load(Ordering::SeqCst), errors)
    }
}

#[test]
fn dead_backend_leaves_within_fall_and_returns_after_rise() {
    let mut lab = lab("hdn");
    // web2's nginx dies.
    let t0 = Instant::now();
    lab.stop("nginx-web2");
    let down = wait_health(&lab, |s| health_of(s, "web2") == "down");
    // fall × interval plus at most one timeout, plus 5% jitter and the
    // time to notice (status polling every 10 ms).
    let budget = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS) * 21 / 20
        + Duration::from_millis(50);
    let took = t0.elapsed();
    eprintln!("detection: {took:?} (budget {budget:?}, from the kill)");
    assert!(took <= budget, "down after {took:?}");
    let _ = down;
    // After that, no request fails and none reaches web2.
    let replies = lab
        .requests(100, Duration::from_secs(2))
        .expect("no request fails once web2 is out");
    assert!(replies.iter().all(|r| r.body.trim() != "web2"));
    // It comes back.
    lab.start_nginx("web2").expect("nginx");
    let t1 = Instant::now();
    wait_health(&lab, |s| health_of(s, "web2") == "up");
    let took = t1.elapsed();
    eprintln!("return: {took:?}");
    assert!(
        took <= Duration::from_millis(RISE * INTERVAL_MS) * 21 / 20 + Duration::from_millis(50),
        "up after {took:?}"
    );
    let back = lab.requests(60, Duration::from_secs(2)).expect("requests");
    assert!(
        back.iter().any(|r| r.body.trim() == "web2"),
        "web2 serves again"
    );
    let log = lab.proc_mut("halb-lb1").expect("halb").log_text();
    assert!(
        log.contains("backend is DOWN") && log.contains("backend is UP"),
        "{log}"
    );
}

#[test]
fn rolling_update_loses_no_request() {
    let mut lab = lab("hru");
    let load = Load::start(&lab);
    load.wait_for(20);
    for i in 1..=BACKENDS {
        let name = format!("web{i}");
        let out = halb(&lab, &["drain", "web", &name]);
        assert!(out.contains("(drained)"), "{out}");
        // A graceful stop: nginx finishes the requests it has (no new ones
        // reach it once drained), then exits.
        let mut p = lab.take_proc(&format!("nginx-{name}")).expect("nginx");
        p.signal(libc::SIGQUIT);
        p.wait_exit(Duration::from_secs(5)).expect("nginx quits");
        lab.start_nginx(&name).expect("nginx back");
        let out = halb(&lab, &["enable", "web", &name]);
        assert!(!out.contains("drained"), "{out}");
        wait_health(&lab, |s| health_of(s, &name) == "up");
        // Traffic reaches the returned backend before the next one goes.
        let seen = load.ok.load(Ordering::SeqCst);
        load.wait_for(seen + 10);
    }
    let (ok, errors) = load.finish();
    eprintln!("rolling update: {ok} requests, {} failed", errors.len());
    assert!(ok > 100, "the client kept going ({ok} requests)");
    assert!(errors.is_empty(), "failed requests: {errors:?}");
}

#[test]
fn broken_reload_is_rejected_and_weight_changes_apply() {
    let lab = lab("hrl");
    let load = Load::start(&lab);
    // A broken file: rejected with its location, running config kept.
    let path = lab.dir.join("halb-lb1.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, good.replace("port = 80", "port = 80\nbogus = 1")).expect("write");
    let mut c = lab.nsenter("lb1", &halb_bin());
    c.args(["reload", "--api", API]);
    let out = c.output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{}:", path.display())) && err.contains("bogus"),
        "{err}"
    );
    assert_eq!(
        status(&lab).vips[0].backends.len(),
        3,
        "running config kept"
    );
    // A good reload removing web3.
    let cut = good.rfind("\n  [[vip.backend]]").expect("last backend");
    std::fs::write(&path, &good[..cut]).expect("write");
    let out = halb(&lab, &["reload"]);
    assert!(out.contains("backends removed web/web3"), "{out}");
    // web3 finishes its flows (the load's connections end with the
    // client's FIN) and is then gone.
    let s = status(&lab);
    let web3 = s.vips[0].backends.iter().find(|b| b.name == "web3");
    assert!(
        web3.is_none_or(|b| b.removing),
        "web3 is removing or already gone: {web3:?}"
    );
    wait_health(&lab, |s| s.vips[0].backends.len() == 2);
    // Weight: web1 gets all new flows when web2 weighs 0... via weight.
    let out = halb(&lab, &["weight", "web", "web2", "0"]);
    assert!(out.contains("weight 0"), "{out}");
    let replies = lab.requests(40, Duration::from_secs(2)).expect("requests");
    assert!(replies.iter().all(|r| r.body.trim() == "web1"));
    // Unknown names are clear errors.
    let mut c = lab.nsenter("lb1", &halb_bin());
    c.args(["drain", "web", "nope", "--api", API]);
    let out = c.output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no backend named \"nope\""));
    let (ok, errors) = load.finish();
    assert!(ok > 0 && errors.is_empty(), "{ok} ok, errors {errors:?}");
}

#[test]
fn drained_backend_keeps_its_long_stream() {
    let lab = lab("hst");
    let (tx, rx) = mpsc::channel();
    let dl = lab
        .spawn_in_ns("client", move || {
            client::download(VIP, "/big", move |p| {
                let _ = tx.send(p);
            })
        })
        .expect("stream");
    let port = rx.recv_timeout(Duration::from_secs(5)).expect("started");
    // Which backend carries it?
    let name = backend_of_flow(&lab, port);
    let out = halb(&lab, &["drain", "web", &name]);
    assert!(out.contains("(drained)"), "{out}");
    // New connections avoid it...
    let replies = lab.requests(30, Duration::from_secs(2)).expect("requests");
    assert!(replies.iter().all(|r| r.body.trim() != name));
    // ...while the stream goes on to its end.
    let s = dl.join().expect("join").expect("ns").expect("download");
    assert_eq!(s.bytes, BIG_SIZE);
    assert!(
        s.max_gap < Duration::from_millis(400),
        "gap {:?}",
        s.max_gap
    );
}

#[test]
fn no_healthy_backend_lowers_the_vrrp_priority() {
    let mut lab = Lab::new("hvr").expect("lab");
    lab.add_host("client", CLIENT).expect("client");
    lab.add_host("lb1", lb_addr(1)).expect("lb1");
    lab.attach_pass_on_port("lb1").expect("pass");
    for i in 1..=2u8 {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)
            .expect("backend");
    }
    let v = halb_lab::lab::VrrpOpts::v3(150);
    let cfg = node_config(&lab, "lb1", "native", 2, None, Some(&v)).replacen(
        "\n  [[vip.backend]]",
        &format!("{}\n  [[vip.backend]]", health_section()),
        1,
    );
    lab.start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("agent up");
    wait_health(&lab, |s| {
        s.vrrp
            .as_ref()
            .is_some_and(|v| v.state == "MASTER" && v.priority == 150)
    });
    lab.stop("nginx-web1");
    lab.stop("nginx-web2");
    wait_health(&lab, |s| {
        s.vrrp.as_ref().is_some_and(|v| {
            v.priority == 50 && v.tracking.get("backends").map(String::as_str) == Some("-100")
        }) && s.vips[0].healthy_backends == 0
    });
    lab.start_nginx("web2").expect("nginx");
    wait_health(&lab, |s| {
        s.vrrp
            .as_ref()
            .is_some_and(|v| v.priority == 150 && v.tracking.is_empty())
    });
}

/// Which backend carries the client's flow from `port` (from the pinned
/// flow table).
fn backend_of_flow(lab: &Lab, port: u16) -> String {
    let maps = Maps::open_pinned(&lab.pin_dir("lb1")).expect("maps");
    let key = ha_common::FlowKey {
        saddr: u32::from_ne_bytes(CLIENT.octets()),
        daddr: u32::from_ne_bytes(VIP.octets()),
        ports: ha_common::ports_raw(port, 80),
        proto: ha_common::IPPROTO_TCP as u32,
    };
    let id = maps.route(&key).expect("route").expect("a backend");
    let octets = maps.backend(id).expect("backend").addr;
    let addr = Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]);
    (1..=BACKENDS)
        .find(|&i| backend_addr(i) == addr)
        .map(|i| format!("web{i}"))
        .expect("a lab backend")
}

/// The config without backend `name`.
fn without(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("\n  [[vip.backend]]\n  name = \"{name}\""))
        .expect("backend in config");
    let end = text[start + 1..]
        .find("\n  [[vip.backend]]")
        .map_or(text.len(), |i| start + 1 + i);
    format!("{}{}", &text[..start], &text[end..])
}

type Download = std::thread::JoinHandle<anyhow::Result<anyhow::Result<client::Stream>>>;

/// Starts a long download, finds its backend, and writes the config
/// without that backend (the caller reloads). Returns the download, its
/// source port, the backend's name and the config as it was.
fn stream_then_remove_its_backend(lab: &Lab) -> (Download, u16, String, String) {
    let (tx, rx) = mpsc::channel();
    let dl = lab
        .spawn_in_ns("client", move || {
            client::download(VIP, "/big", move |p| {
                let _ = tx.send(p);
            })
        })
        .expect("stream");
    let port = rx.recv_timeout(Duration::from_secs(5)).expect("started");
    let name = backend_of_flow(lab, port);
    let path = lab.dir.join("halb-lb1.toml");
    let good = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, without(&good, &name)).expect("write");
    (dl, port, name, good)
}

#[test]
fn a_removed_backend_finishes_its_stream_then_goes() {
    let lab = lab("hgr");
    let (dl, _, name, _) = stream_then_remove_its_backend(&lab);
    let out = halb(&lab, &["reload"]);
    assert!(
        out.contains(&format!("backends removed web/{name}")),
        "{out}"
    );
    // It is shown as removing, with its live flow, and gets nothing new.
    wait_health(&lab, |s| {
        s.vips[0].backends.iter().any(|b| {
            b.name == name && b.removing && b.removal.as_ref().and_then(|r| r.live_flows) == Some(1)
        })
    });
    let replies = lab.requests(30, Duration::from_secs(2)).expect("requests");
    assert!(replies.iter().all(|r| r.body.trim() != name));
    // The stream goes on to its end, untouched.
    let s = dl.join().expect("join").expect("ns").expect("download");
    assert_eq!(s.bytes, BIG_SIZE);
    assert!(
        s.max_gap < Duration::from_millis(400),
        "gap {:?}",
        s.max_gap
    );
    // Once its last flow ended, the backend is released.
    wait_health(&lab, |s| s.vips[0].backends.iter().all(|b| b.name != name));
    let log = halb_log(&lab);
    assert!(
        log.contains("removed backend's last flow ended: released"),
        "{log}"
    );
}

#[test]
fn a_backend_put_back_while_removing_keeps_its_stream() {
    let lab = lab("hrb");
    let (dl, port, name, good) = stream_then_remove_its_backend(&lab);
    let path = lab.dir.join("halb-lb1.toml");
    halb(&lab, &["reload"]);
    wait_health(&lab, |s| {
        s.vips[0]
            .backends
            .iter()
            .any(|b| b.name == name && b.removing)
    });
    // Put back: same address, same slot, the stream never notices.
    std::fs::write(&path, &good).expect("write");
    let out = halb(&lab, &["reload"]);
    assert!(out.contains(&format!("backends added web/{name}")), "{out}");
    wait_health(&lab, |s| {
        s.vips[0]
            .backends
            .iter()
            .any(|b| b.name == name && !b.removing && b.weight == 1)
    });
    assert_eq!(
        backend_of_flow(&lab, port),
        name,
        "the flow kept its backend"
    );
    let s = dl.join().expect("join").expect("ns").expect("download");
    assert_eq!(s.bytes, BIG_SIZE);
    assert!(
        s.max_gap < Duration::from_millis(400),
        "gap {:?}",
        s.max_gap
    );
}

fn halb_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.join("halb-lb1.log")).unwrap_or_default()
}

#[test]
fn a_rolling_update_by_reload_under_load_loses_nothing() {
    let o = halb_lab::rolling::run(64, 10).expect("rolling update");
    eprintln!("{}", halb_lab::rolling::markdown(&o, 64));
    assert_eq!(o.replaced, 3);
    assert!(o.requests_ok > 500, "{o:?}");
    assert_eq!(o.requests_failed, 0, "{:?}", o.failures);
    assert_eq!(o.downloads_ok, o.downloads, "{o:?}");
}
