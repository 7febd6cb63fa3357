//! Reload diffs for each kind of edit, and how run-time state survives them.

use std::path::Path;

use super::*;
use crate::config;

const BASE: &str = r#"
[node]
interface = "eth0"

[[vip]]
name = "web"
address = "10.77.0.100"
port = 80
  [vip.health]
  kind = "http"
  interval_ms = 1000
  timeout_ms = 500
  rise = 2
  fall = 2
  [[vip.backend]]
  name = "web1"
  address = "10.77.0.21"
  [[vip.backend]]
  name = "web2"
  address = "10.77.0.22"

[[vip]]
name = "dns"
address = "10.77.0.101"
port = 53
protocol = "udp"
  [[vip.backend]]
  name = "ns1"
  address = "10.77.0.31"
"#;

fn cfg(text: &str) -> Config {
    config::parse(Path::new("t.toml"), text).expect("config")
}

fn pair(a: &str, b: &str) -> BackendRef {
    (a.to_string(), b.to_string())
}

fn ok(ok: bool) -> Outcome {
    Outcome {
        ok,
        latency: Duration::from_millis(1),
        detail: String::new(),
    }
}

#[test]
fn each_kind_of_edit_shows_in_the_diff() {
    let base = cfg(BASE);
    assert!(Diff::between(&base, &base).is_empty());

    let d = Diff::between(&base, &cfg(&BASE.replace("10.77.0.22", "10.77.0.23")));
    assert_eq!(d.backends_changed, [pair("web", "web2")]);
    assert!(d.vips_changed.is_empty() && d.backends_added.is_empty());

    let d = Diff::between(
        &base,
        &cfg(&BASE.replace(
            "  address = \"10.77.0.22\"",
            "  address = \"10.77.0.22\"\n  weight = 3",
        )),
    );
    assert_eq!(d.backends_changed, [pair("web", "web2")]);

    let d = Diff::between(
        &base,
        &cfg(&BASE.replace("name = \"web2\"", "name = \"web9\"")),
    );
    assert_eq!(
        (d.backends_added.clone(), d.backends_removed.clone()),
        (vec![pair("web", "web9")], vec![pair("web", "web2")])
    );

    let d = Diff::between(&base, &cfg(&BASE.replace("port = 80", "port = 8080")));
    assert_eq!(d.vips_changed, ["web"]);

    let d = Diff::between(&base, &cfg(&BASE.replace("fall = 2", "fall = 3")));
    assert_eq!(d.health_changed, ["web"]);
    assert!(d.vips_changed.is_empty());

    let without_dns = &BASE[..BASE.find("[[vip]]\nname = \"dns\"").expect("dns")];
    let d = Diff::between(&base, &cfg(without_dns));
    assert_eq!(d.vips_removed, ["dns"]);
    assert_eq!(d.backends_removed, [pair("dns", "ns1")]);
    let d = Diff::between(&cfg(without_dns), &base);
    assert_eq!(d.vips_added, ["dns"]);
    assert_eq!(d.backends_added, [pair("dns", "ns1")]);
    assert!(d.summary().contains("vips added dns"));
}

#[test]
fn drain_survives_a_reload_unless_the_backend_changed() {
    let base = cfg(BASE);
    let mut rt = Runtime::new(&base);
    rt.admin(&base, "web", "web1", |a| a.drained = true)
        .expect("drain");
    rt.admin(&base, "web", "web2", |a| a.weight = Some(5))
        .expect("weight");
    // An unrelated edit: both overrides stay.
    let next = cfg(&BASE.replace("10.77.0.31", "10.77.0.32"));
    rt.reload(&next, &Diff::between(&base, &next));
    assert!(rt.get("web", "web1").expect("web1").admin.drained);
    assert_eq!(rt.weight("web", "web2", 1), 5);
    // web2's address changes: its override goes, web1's stays.
    let next2 = cfg(&BASE
        .replace("10.77.0.31", "10.77.0.32")
        .replace("10.77.0.22", "10.77.0.29"));
    rt.reload(&next2, &Diff::between(&next, &next2));
    assert!(rt.get("web", "web1").expect("web1").admin.drained);
    assert_eq!(rt.weight("web", "web2", 1), 1);
    assert_eq!(rt.weight("web", "web1", 1), 0);
}

#[test]
fn health_survives_a_reload_unless_the_check_changed() {
    let base = cfg(BASE);
    let mut rt = Runtime::new(&base);
    let t = SystemTime::UNIX_EPOCH;
    assert_eq!(rt.record("web", "web1", ok(false), t), Some(false));
    assert!(!rt.get("web", "web1").expect("st").healthy());
    let same = cfg(&BASE.replace("10.77.0.31", "10.77.0.32"));
    rt.reload(&same, &Diff::between(&base, &same));
    assert!(!rt.get("web", "web1").expect("st").healthy(), "still down");
    rt.admin(&same, "web", "web1", |a| a.drained = true)
        .expect("drain");
    let new_check = cfg(&BASE
        .replace("10.77.0.31", "10.77.0.32")
        .replace("fall = 2", "fall = 4"));
    rt.reload(&new_check, &Diff::between(&same, &new_check));
    let st = rt.get("web", "web1").expect("st");
    assert_eq!(st.health_name(), "checking", "a new check starts over");
    assert!(st.admin.drained, "but the operator's drain stays");
}

#[test]
fn specs_follow_health_weight_and_macs() {
    let base = cfg(BASE);
    let mut rt = Runtime::new(&base);
    let mut macs = HashMap::new();
    macs.insert(Ipv4Addr::new(10, 77, 0, 21), [2, 0, 0, 0, 0, 21]);
    rt.record("web", "web2", ok(false), SystemTime::UNIX_EPOCH);
    rt.admin(&base, "web", "web1", |a| a.weight = Some(7))
        .expect("weight");
    let specs = rt.specs(&base, &macs);
    let web = &specs[0].backends;
    assert_eq!(
        (web[0].weight, web[0].healthy, web[0].mac.is_some()),
        (7, true, true)
    );
    assert_eq!((web[1].healthy, web[1].mac), (false, None));
    let dns = &specs[1].backends;
    assert!(dns[0].healthy, "no check: healthy");
}

#[test]
fn vips_without_a_healthy_backend_are_named() {
    let base = cfg(BASE);
    let mut rt = Runtime::new(&base);
    assert!(rt.vips_without_healthy(&base).is_empty());
    rt.record("web", "web1", ok(false), SystemTime::UNIX_EPOCH);
    assert!(rt.vips_without_healthy(&base).is_empty());
    rt.record("web", "web2", ok(false), SystemTime::UNIX_EPOCH);
    assert_eq!(rt.vips_without_healthy(&base), ["web"]);
}

#[test]
fn admin_errors_name_what_is_missing() {
    let base = cfg(BASE);
    let mut rt = Runtime::new(&base);
    assert_eq!(
        rt.admin(&base, "nope", "web1", |_| {}),
        Err(AdminError::NoVip("nope".into()))
    );
    assert_eq!(
        rt.admin(&base, "web", "nope", |_| {}),
        Err(AdminError::NoBackend("web".into(), "nope".into()))
    );
}

#[test]
fn targets_use_the_check_port_or_the_vip_port() {
    let base = cfg(&BASE.replace("  kind = \"http\"", "  kind = \"http\"\n  port = 8080"));
    let t = targets(&base);
    assert_eq!(t.len(), 2, "the dns vip has no check");
    assert_eq!(
        t[0].addr,
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 21), 8080)
    );
    assert_eq!(t[0].interval, Duration::from_millis(1000));
}
