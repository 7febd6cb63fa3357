//! The agent as a service: its logs (plain without a terminal, JSON on
//! request, no second timestamp under journald), systemd's notify protocol
//! and watchdog, running with only the unit's capabilities, the unit's
//! hardening score, pinned maps it must not adopt, and a loop that stays
//! responsive while a backend never answers ARP. Needs root.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use halb::api::client::Client;
use halb::api::model::Status;
use halb_lab::lab::{
    halb_bin, lb_addr, node_config, run, setpriv, unit_capabilities, workspace, Lab, VrrpOpts, VIP,
};

const API: &str = "127.0.0.1:8480";

/// Client, lb1 (with the pass program on its port) and three backends.
fn lab(tag: &str) -> Lab {
    Lab::single_lb(tag, 3).expect("lab")
}

fn status(lab: &Lab) -> Status {
    lab.in_ns("lb1", || {
        let a = Client::new(API.parse().expect("addr"), None)
            .get("/api/v1/status")
            .expect("API answers");
        serde_json::from_str::<Status>(&a.body).expect("status JSON")
    })
    .expect("ns")
}

/// Writes `cfg` and returns the command that runs the agent on it in lb1.
fn halb_cmd(lab: &Lab, cfg: &str, wrapper: &[&str]) -> (Command, PathBuf) {
    let path = lab.dir.join("halb-lb1.toml");
    std::fs::write(&path, cfg).expect("config");
    let mut c = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = lab.nsenter("lb1", Path::new(prog));
            c.args(args).arg(halb_bin());
            c
        }
        None => lab.nsenter("lb1", &halb_bin()),
    };
    c.arg("run").arg("-c").arg(&path);
    (c, path)
}

/// Stops lb1's agent cleanly (SIGTERM: the data plane is detached).
fn stop(lab: &mut Lab) {
    let mut p = lab.take_proc("halb-lb1").expect("halb");
    p.signal(libc::SIGTERM);
    let code = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(code.success(), "{code}: {}", p.log_text());
}

fn serves(lab: &Lab) {
    let r = lab
        .requests(20, Duration::from_secs(3))
        .expect("requests through the VIP succeed");
    assert!(r.iter().all(|r| r.status == 200));
}

#[test]
fn logs_are_plain_without_a_terminal_json_on_request_and_unstamped_under_journald() {
    let mut lab = lab("log");
    let cfg = node_config(&lab, "lb1", "native", 3, None, None);
    // Plain text to a file: no colour codes.
    let (c, _) = halb_cmd(&lab, &cfg, &[]);
    lab.spawn("halb-lb1", c)
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up");
    let text = lab.proc_mut("halb-lb1").expect("halb").log_text();
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log file: {text:?}"
    );
    assert!(text.contains(" INFO "), "{text}");
    stop(&mut lab);

    // JSON: every line one object with the level, the message and the fields.
    let (mut c, _) = halb_cmd(&lab, &cfg, &[]);
    c.args(["--log-format", "json"]);
    lab.spawn("halb-lb1", c)
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up");
    let text = lab.proc_mut("halb-lb1").expect("halb").log_text();
    let mut attached = false;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        if v["message"] == "XDP program attached" {
            attached = v["interface"] == "eth0" && v["mode"] == "native";
        }
    }
    assert!(attached, "fields are JSON fields: {text}");
    stop(&mut lab);

    // Under journald (stderr is the stream named by JOURNAL_STREAM): no
    // timestamp of our own, journald adds one.
    let log = lab.dir.join("halb-lb1.log");
    std::fs::write(&log, "").expect("log");
    let meta = std::fs::metadata(&log).expect("stat");
    let (mut c, _) = halb_cmd(&lab, &cfg, &[]);
    c.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    lab.spawn("halb-lb1", c)
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up");
    let text = lab.proc_mut("halb-lb1").expect("halb").log_text();
    for line in text.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.trim_start().starts_with("INFO") || line.trim_start().starts_with("WARN"),
            "a line that starts with a timestamp under journald: {line}"
        );
    }
}

/// Receives notify messages on `sock` for up to `wait`, returning them.
fn notifications(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    let end = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .expect("timeout");
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

#[test]
fn systemd_hears_ready_and_a_watchdog_that_stops_with_the_agent() {
    let mut lab = lab("wdg");
    let sock_path = lab.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    let cfg = node_config(&lab, "lb1", "native", 3, None, Some(&VrrpOpts::v3(150)));
    let (mut c, _) = halb_cmd(&lab, &cfg, &[]);
    c.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000");
    lab.spawn("halb-lb1", c).expect("start");
    // READY=1 once started, then WATCHDOG=1 about every second.
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        assert!(Instant::now() < end, "notifications so far: {seen:?}");
        seen.extend(notifications(&sock, Duration::from_millis(500)));
    }
    let p = lab.proc_mut("halb-lb1").expect("halb");
    assert!(
        p.log_text().contains("systemd watchdog enabled"),
        "{}",
        p.log_text()
    );
    // A hung agent pings no more (systemd would kill and restart it).
    p.signal(libc::SIGSTOP);
    let _ = notifications(&sock, Duration::from_millis(200));
    let during = notifications(&sock, Duration::from_secs(3));
    assert!(
        !during.iter().any(|m| m.contains("WATCHDOG=1")),
        "pings from a stopped agent: {during:?}"
    );
    let p = lab.proc_mut("halb-lb1").expect("halb");
    p.signal(libc::SIGCONT);
    let mut after = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while !after.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        assert!(Instant::now() < end, "no ping after SIGCONT: {after:?}");
        after.extend(notifications(&sock, Duration::from_millis(500)));
    }
    // SIGTERM: STOPPING=1.
    lab.proc_mut("halb-lb1")
        .expect("halb")
        .signal(libc::SIGTERM);
    let mut last = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while !last.iter().any(|m: &String| m.contains("STOPPING=1")) {
        assert!(Instant::now() < end, "no STOPPING=1: {last:?}");
        last.extend(notifications(&sock, Duration::from_millis(500)));
    }
}

#[test]
fn the_agent_runs_with_only_the_units_capabilities() {
    let caps = unit_capabilities("halb.service");
    assert_eq!(caps, ["bpf", "net_admin", "net_raw", "perfmon"]);
    let mut lab = lab("cap");
    let cfg = node_config(&lab, "lb1", "native", 3, None, Some(&VrrpOpts::v3(150)));
    let wrapper = setpriv(&caps);
    let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let (c, _) = halb_cmd(&lab, &cfg, &w);
    lab.spawn("halb-lb1", c)
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up with the unit's capabilities");
    lab.wait_for(
        "master",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || lab.has_addr("lb1", VIP).unwrap_or(false),
    )
    .expect("VRRP works: the VIP is added");
    serves(&lab);
    let pid = lab.proc_mut("halb-lb1").expect("halb").pid();
    // setpriv execs halb: the process is the agent, with just these caps.
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let bnd = st
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
        .expect("CapBnd");
    // CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_PERFMON 38, CAP_BPF 39.
    assert_eq!(
        bnd,
        (1 << 12) | (1 << 13) | (1 << 38) | (1 << 39),
        "{bnd:#x}"
    );
    let s = status(&lab);
    let log = lab.proc_mut("halb-lb1").expect("halb").log_text();
    assert_eq!(s.vrrp.map(|v| v.state), Some("MASTER".into()), "{log}");
    let p = lab.proc_mut("halb-lb1").expect("halb");
    p.signal(libc::SIGTERM);
    let code = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(code.success(), "{code}: {}", p.log_text());
    assert!(
        !lab.has_addr("lb1", VIP).expect("ip"),
        "VIP removed on exit"
    );
    // Each capability of the set is needed: without it the agent cannot start.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let wrapper = setpriv(&fewer);
        let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let (mut c, _) = halb_cmd(&lab, &cfg, &w);
        let out = c.output().expect("run");
        assert!(
            !out.status.success(),
            "started without CAP_{}: {}",
            missing.to_uppercase(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_unit_scores_as_hardened() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(workspace().join("deploy/halb.service"))
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for halb.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("systemd-analyze security: {score}");
    assert!(score <= 4.5, "exposure {score} > 4.5:\n{text}");
}

#[test]
fn pins_that_are_not_halbs_are_refused() {
    let mut lab = lab("pin");
    let cfg = node_config(&lab, "lb1", "generic", 3, None, None);
    let dir = lab.pin_dir("lb1");
    std::fs::create_dir_all(&dir).expect("dir");
    // A map where the flow table would be, and no META.
    run(Command::new("bpftool")
        .args(["map", "create"])
        .arg(dir.join("HALB_FLOWS"))
        .args([
            "type",
            "array",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "16",
            "name",
            "HALB_FLOWS",
        ]))
    .expect("bpftool map create");
    let (mut c, _) = halb_cmd(&lab, &cfg, &[]);
    let out = c.output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("without HALB_META"), "{err}");
    // A META of the wrong size.
    run(Command::new("bpftool")
        .args(["map", "create"])
        .arg(dir.join("HALB_META"))
        .args([
            "type",
            "array",
            "key",
            "4",
            "value",
            "20",
            "entries",
            "1",
            "name",
            "HALB_META",
        ]))
    .expect("bpftool map create");
    let (mut c, _) = halb_cmd(&lab, &cfg, &[]);
    let out = c.output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pinned HALB_") && err.contains("--reset-dataplane"),
        "{err}"
    );
    // --reset-dataplane clears them and starts.
    let (mut c, _) = halb_cmd(&lab, &cfg, &[]);
    c.arg("--reset-dataplane");
    lab.spawn("halb-lb1", c)
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up after a reset");
    serves(&lab);
}

#[test]
fn commands_stay_fast_while_a_backend_never_answers_arp() {
    let mut lab = lab("nbr");
    // A fourth backend on an address where no host answers; the neighbour
    // table is re-read every 300 ms.
    let cfg = node_config(&lab, "lb1", "native", 3, None, None)
        .replace("bpf_dir", "neigh_refresh_ms = 300\nbpf_dir")
        + "\n  [[vip.backend]]\n  name = \"ghost\"\n  address = \"10.77.0.29\"\n";
    let (c, _) = halb_cmd(&lab, &cfg, &[]);
    lab.spawn("halb-lb1", c)
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("up");
    let s = status(&lab);
    let ghost = s.vips[0]
        .backends
        .iter()
        .find(|b| b.name == "ghost")
        .expect("ghost");
    assert!(ghost.mac.is_none());
    // 40 operator commands over several refresh rounds: each answered at
    // once (the loop never waits for ARP answers).
    let times = lab
        .in_ns("lb1", || {
            let c = Client::new(API.parse().expect("addr"), None);
            let mut worst = Duration::ZERO;
            let t0 = Instant::now();
            let mut n = 0;
            while t0.elapsed() < Duration::from_secs(4) || n < 40 {
                let action = if n % 2 == 0 { "drain" } else { "enable" };
                let t = Instant::now();
                let a = c
                    .post(&format!("/api/v1/vips/web/backends/web1/{action}"), None)
                    .expect("answer");
                assert_eq!(a.status, 200, "{}", a.body);
                worst = worst.max(t.elapsed());
                n += 1;
            }
            (worst, n)
        })
        .expect("ns");
    eprintln!(
        "worst command latency {:?} over {} commands",
        times.0, times.1
    );
    assert!(
        times.0 < Duration::from_millis(250),
        "a command waited {:?}",
        times.0
    );
    serves(&lab);
    let mut log = String::new();
    std::fs::File::open(lab.dir.join("halb-lb1.log"))
        .and_then(|mut f| f.read_to_string(&mut log))
        .expect("log");
    assert_eq!(
        log.matches("no MAC address for backend").count(),
        1,
        "the missing MAC is reported once: {log}"
    );
}

#[test]
fn a_backend_at_the_nodes_own_address_stops_the_start() {
    let lab = lab("own");
    // lb1's own address as a backend (check-config cannot know it).
    let cfg = node_config(&lab, "lb1", "native", 3, None, None)
        + &format!(
            "\n  [[vip.backend]]\n  name = \"self\"\n  address = \"{}\"\n",
            lb_addr(1)
        );
    let (mut c, path) = halb_cmd(&lab, &cfg, &[]);
    let check = Command::new(halb_bin())
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .expect("check-config");
    assert!(check.status.success(), "the file itself is valid");
    let out = c.output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("{} is an address of this node", lb_addr(1))),
        "{err}"
    );
    assert!(
        !lab.pin_dir("lb1").join("link").exists(),
        "nothing attached"
    );
}
