//! What halb ships for Prometheus and Grafana, against a live agent: the
//! alerting rules' own `promtool test rules` unit tests, `promtool check
//! metrics` on a live `/metrics` (a VRRP master with traffic, and a BGP
//! node with its session up), and every
//! metric that the rules and the dashboard (`deploy/grafana/halb.json`)
//! query served by those live `/metrics` (and a BGP scale-out node's, with
//! its BIRD). Needs root for the lab part.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use halb::api::client::Client;
use halb_lab::lab::{node_config, workspace, Lab, VrrpOpts, VIP};

/// Metric names (`halb_...`) in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find("halb_") {
        let start = i + off;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        // Not part of a longer identifier (a label named like a metric).
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Every PromQL string of the dashboard: panel targets and variable queries.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

/// The `expr:` values of the rules file.
fn rule_exprs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(workspace().join("deploy/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn alerting_rules_pass_their_promtool_unit_tests() {
    let (ok, text) = promtool(&["check", "rules", "halb-rules.yml"], None);
    assert!(ok, "{text}");
    let (ok, text) = promtool(&["test", "rules", "halb-rules.test.yml"], None);
    assert!(ok, "{text}");
    let (ok, text) = promtool(&["check", "config", "prometheus.yml"], None);
    assert!(ok, "{text}");
    // Every alert of the rules file has a unit test.
    let rules = std::fs::read_to_string(workspace().join("deploy/prometheus/halb-rules.yml"))
        .expect("rules");
    let tests = std::fs::read_to_string(workspace().join("deploy/prometheus/halb-rules.test.yml"))
        .expect("tests");
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
    {
        let alert = alert.trim();
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "{alert} has no test that expects it to fire"
        );
    }
}

/// The metric families (`# TYPE` lines) of a /metrics text.
fn families_of(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The /metrics text of lab node lb1's agent (its API on loopback);
/// empty while it does not answer.
fn metrics_of(lab: &Lab) -> String {
    lab.in_ns("lb1", || {
        Client::new("127.0.0.1:8480".parse().expect("addr"), None)
            .get("/metrics")
            .map(|a| a.body)
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// /metrics of a BGP node whose session to the router is up and which
/// announces its VIP.
fn bgp_metrics() -> String {
    let mut s = halb_lab::scaleout::ScaleOut::new("monb", 1, 2).expect("scale-out lab");
    s.start_all().expect("the node announces");
    let mut text = String::new();
    s.lab
        .wait_for(
            "the BGP session up in /metrics",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                text = metrics_of(&s.lab);
                text.lines()
                    .any(|l| l.starts_with("halb_bgp_session_up{") && l.ends_with(" 1"))
            },
        )
        .expect("session up");
    text
}

#[test]
fn live_metrics_pass_promtool_and_serve_every_queried_metric() {
    let mut lab = Lab::single_lb("mon", 3).expect("lab");
    let cfg = node_config(&lab, "lb1", "native", 3, None, Some(&VrrpOpts::v3(150)));
    lab.start_halb("lb1", &cfg, &[])
        .expect("start")
        .wait_log("starting VRRP", Duration::from_secs(20))
        .expect("VRRP starts");
    let metrics = || metrics_of(&lab);
    // A master alone, with traffic counted.
    lab.wait_for(
        "a master with counted traffic in /metrics",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let _ = lab.requests(3, Duration::from_secs(1));
            let m = metrics();
            m.lines()
                .any(|l| l.starts_with("halb_vrrp_state{") && l.ends_with("state=\"MASTER\"} 1"))
                && m.lines()
                    .any(|l| l.starts_with("halb_backend_packets_total{") && !l.ends_with(" 0"))
        },
    )
    .expect("master with traffic");
    let text = metrics();
    assert!(text.contains(&VIP.to_string()) || text.contains("vip=\"web\""));

    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics: {out}\n{text}");

    let mut families = families_of(&text);
    assert!(families.len() > 20, "{families:?}");
    drop(lab);

    // A BGP scale-out node with its BIRD and a session to the router.
    let bgp = bgp_metrics();
    let (ok, out) = promtool(&["check", "metrics"], Some(&bgp));
    assert!(ok, "promtool check metrics (BGP node): {out}\n{bgp}");
    let b = families_of(&bgp);
    assert!(b.contains("halb_bgp_session_up"), "{b:?}");
    families.extend(b);

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("deploy/grafana/halb.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    let panels = dash["panels"].as_array().expect("panels");
    let with_query = panels
        .iter()
        .filter(|p| p["type"] != "row")
        .inspect(|p| {
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {} has no query",
                p["title"]
            )
        })
        .count();
    assert!(with_query >= 20, "{with_query} panels");

    let rules = std::fs::read_to_string(workspace().join("deploy/prometheus/halb-rules.yml"))
        .expect("rules");
    let mut used = BTreeSet::new();
    for q in queries.iter().chain(&rule_exprs(&rules)) {
        let names = metric_names(q);
        used.extend(names.clone());
        for n in names {
            assert!(
                families.contains(&n),
                "{n} (in {q:?}) is not in the live /metrics"
            );
        }
    }
    assert!(used.len() >= 20, "{used:?}");
    eprintln!(
        "{} metrics used by the dashboard and the rules, all served",
        used.len()
    );
}
