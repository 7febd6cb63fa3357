//! Reload diffs for each kind of edit, and how run-time state survives them.

use std::path::Path;

use super::*;
use crate::config;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

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

/// Every lab MAC known (backends are reachable).
fn macs() -> Reach {
    Reach {
        macs: (0..=255u8)
            .map(|i| (v4(10, 77, 0, i), [2, 0, 0, 0, 0, i]))
            .collect(),
        paths: Default::default(),
    }
}

const TIMEOUT: Duration = Duration::from_secs(300);

fn reload(rt: &mut Runtime, old: &Config, new: &Config) {
    reload_at(rt, old, new, Instant::now());
}

fn reload_at(rt: &mut Runtime, old: &Config, new: &Config, now: Instant) {
    rt.reload(old, new, &Diff::between(old, new), &macs(), now, TIMEOUT);
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
    reload(&mut rt, &base, &next);
    assert!(rt.get("web", "web1").expect("web1").admin.drained);
    assert_eq!(rt.weight("web", "web2", 1), 5);
    // web2's address changes: its override goes, web1's stays.
    let next2 = cfg(&BASE
        .replace("10.77.0.31", "10.77.0.32")
        .replace("10.77.0.22", "10.77.0.29"));
    reload(&mut rt, &next, &next2);
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
    reload(&mut rt, &base, &same);
    assert!(!rt.get("web", "web1").expect("st").healthy(), "still down");
    rt.admin(&same, "web", "web1", |a| a.drained = true)
        .expect("drain");
    let new_check = cfg(&BASE
        .replace("10.77.0.31", "10.77.0.32")
        .replace("fall = 2", "fall = 4"));
    reload(&mut rt, &same, &new_check);
    let st = rt.get("web", "web1").expect("st");
    assert_eq!(st.health_name(), "checking", "a new check starts over");
    assert!(st.admin.drained, "but the operator's drain stays");
}

#[test]
fn specs_follow_health_weight_and_macs() {
    let base = cfg(BASE);
    let mut rt = Runtime::new(&base);
    let mut macs = Reach::default();
    macs.macs.insert(v4(10, 77, 0, 21), [2, 0, 0, 0, 0, 21]);
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
    let t = targets(&base, &Runtime::new(&base));
    assert_eq!(t.len(), 2, "the dns vip has no check");
    assert_eq!(t[0].addr, SocketAddr::new(v4(10, 77, 0, 21), 8080));
    assert_eq!(t[0].interval, Duration::from_millis(1000));
}

fn without_web2() -> String {
    let cut = BASE
        .find("  [[vip.backend]]\n  name = \"web2\"")
        .expect("web2");
    let end = BASE[cut..].find("\n\n").expect("end") + cut;
    format!("{}{}", &BASE[..cut], &BASE[end..])
}

#[test]
fn a_removed_backend_keeps_its_flows_until_they_end() {
    let base = cfg(BASE);
    let next = cfg(&without_web2());
    let mut rt = Runtime::new(&base);
    let t0 = Instant::now();
    reload_at(&mut rt, &base, &next, t0);
    assert_eq!(rt.removing().len(), 1);
    // It stays in the data plane with weight 0 (flows kept, no new ones).
    let specs = rt.specs(&next, &macs());
    let web2 = specs[0]
        .backends
        .iter()
        .find(|b| b.addr == v4(10, 77, 0, 22))
        .expect("web2 still in the spec");
    assert_eq!((web2.weight, web2.healthy, web2.usable()), (0, true, true));
    // A count made before the removal says nothing; one after it with live
    // flows keeps it; one with none releases it.
    let web2_addr = v4(10, 77, 0, 22);
    let earlier = t0 - Duration::from_millis(1);
    assert!(rt
        .settle(earlier, t0, |_, _| Some(0), |_, _| false)
        .is_empty());
    assert!(rt
        .settle(
            t0,
            t0 + Duration::from_secs(1),
            |_, a| (a == web2_addr).then_some(3),
            |_, _| false
        )
        .is_empty());
    assert_eq!(rt.removing()[&pair("web", "web2")].live_flows, Some(3));
    // No live flow recorded, but a changed slot still names it as its
    // previous backend: flows not seen since may exist; it stays.
    assert!(rt
        .settle(
            t0 + Duration::from_secs(2),
            t0 + Duration::from_secs(2),
            |_, _| Some(0),
            |_, a| a == web2_addr
        )
        .is_empty());
    let gone = rt.settle(
        t0 + Duration::from_secs(2),
        t0 + Duration::from_secs(2),
        |_, _| Some(0),
        |_, _| false,
    );
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].2, Released::FlowsEnded);
    assert!(rt.removing().is_empty());
    assert!(rt.specs(&next, &macs())[0]
        .backends
        .iter()
        .all(|b| b.addr != web2_addr));
}

#[test]
fn a_removal_times_out_and_a_re_added_backend_comes_back() {
    let base = cfg(BASE);
    let next = cfg(&without_web2());
    let mut rt = Runtime::new(&base);
    let t0 = Instant::now();
    reload_at(&mut rt, &base, &next, t0);
    assert_eq!(rt.removing().len(), 1);
    // Put back before its flows end: no removal left, and the config's
    // backend (same address) takes its slot back with its weight.
    reload(&mut rt, &next, &base);
    assert!(rt.removing().is_empty());
    let web: Vec<u32> = rt.specs(&base, &macs())[0]
        .backends
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(web, [1, 1]);
    // Removed again once healthy; this time its flows outlast the timeout.
    rt.record("web", "web2", ok(true), SystemTime::now());
    rt.record("web", "web2", ok(true), SystemTime::now());
    let t1 = Instant::now();
    reload_at(&mut rt, &base, &next, t1);
    assert_eq!(rt.removing().len(), 1);
    assert!(rt
        .settle(t1, t1 + TIMEOUT / 2, |_, _| Some(5), |_, _| false)
        .is_empty());
    let late = t1 + TIMEOUT;
    let gone = rt.settle(late, late, |_, _| Some(5), |_, _| false);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].2, Released::TimedOut(5));
}

#[test]
fn down_backends_and_removed_vips_are_released_at_once() {
    let base = cfg(BASE);
    let mut rt = Runtime::new(&base);
    rt.record("web", "web2", ok(false), SystemTime::UNIX_EPOCH);
    reload(&mut rt, &base, &cfg(&without_web2()));
    assert!(rt.removing().is_empty(), "a down backend carries no flow");
    let mut rt = Runtime::new(&base);
    let moved = cfg(&without_web2().replace("port = 80", "port = 8080"));
    reload(&mut rt, &base, &moved);
    assert!(
        rt.removing().is_empty(),
        "the service changed: its flows are gone"
    );
    let mut rt = Runtime::new(&base);
    let next = cfg(&without_web2());
    reload(&mut rt, &base, &next);
    assert_eq!(rt.removing().len(), 1);
    reload(&mut rt, &next, &cfg(&next_without_web()));
    assert!(rt.removing().is_empty(), "its VIP went");
    let mut rt = Runtime::new(&base);
    rt.reload(
        &base,
        &next,
        &Diff::between(&base, &next),
        &macs(),
        Instant::now(),
        Duration::ZERO,
    );
    assert!(
        rt.removing().is_empty(),
        "removal_timeout_ms = 0 removes at once"
    );
}

fn next_without_web() -> String {
    let start = BASE.find("[[vip]]\nname = \"web\"").expect("web");
    let end = BASE.find("[[vip]]\nname = \"dns\"").expect("dns");
    format!("{}{}", &BASE[..start], &BASE[end..])
}

#[test]
fn an_address_change_removes_the_old_address_gracefully() {
    let base = cfg(BASE);
    let moved = cfg(&BASE.replace("10.77.0.22", "10.77.0.29"));
    let mut rt = Runtime::new(&base);
    reload(&mut rt, &base, &moved);
    // web2 now lives at .29; its old address finishes its flows under its
    // own name.
    let (key, r) = rt
        .removing()
        .iter()
        .next()
        .expect("the old address is removing");
    assert_eq!(key, &pair("web", "web2@10.77.0.22"));
    assert_eq!((r.name.as_str(), r.addr), ("web2", v4(10, 77, 0, 22)));
    let specs = rt.specs(&moved, &macs());
    let addrs: Vec<(std::net::IpAddr, u32)> = specs[0]
        .backends
        .iter()
        .map(|b| (b.addr, b.weight))
        .collect();
    assert_eq!(
        addrs,
        [
            (v4(10, 77, 0, 21), 1),
            (v4(10, 77, 0, 29), 1),
            (v4(10, 77, 0, 22), 0)
        ]
    );
    // Still health-checked, under that name.
    let t = targets(&moved, &rt);
    assert!(t.iter().any(
        |t| t.backend == "web2@10.77.0.22" && t.addr == SocketAddr::new(v4(10, 77, 0, 22), 80)
    ));
}

#[test]
fn a_removed_backend_that_dies_gives_its_flows_up_at_once() {
    let base = cfg(BASE);
    let next = cfg(&without_web2());
    let mut rt = Runtime::new(&base);
    let t0 = Instant::now();
    reload_at(&mut rt, &base, &next, t0);
    assert!(rt.settle(t0, t0, |_, _| Some(4), |_, _| false).is_empty());
    // Its checks fail (fall = 2).
    rt.record("web", "web2", ok(false), SystemTime::now());
    rt.record("web", "web2", ok(false), SystemTime::now());
    let specs = rt.specs(&next, &macs());
    let web2 = specs[0]
        .backends
        .iter()
        .find(|b| b.addr == v4(10, 77, 0, 22))
        .expect("spec");
    assert!(!web2.usable(), "a down removing backend carries nothing");
    let gone = rt.settle(t0, t0, |_, _| Some(4), |_, _| false);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].2, Released::Down);
}

/// BASE as a scale-out node.
fn bgp_base() -> String {
    BASE.replace(
        "[node]\ninterface = \"eth0\"\n",
        "[node]\ninterface = \"eth0\"\n[bgp]\nlocal_asn = 65001\n\
         [[bgp.neighbor]]\naddress = \"10.77.0.1\"\nasn = 65000\n",
    )
}

fn healthy_in_dataplane(rt: &Runtime, c: &Config, at: SystemTime) -> Vec<bool> {
    rt.specs_at(c, &macs(), at)[0]
        .backends
        .iter()
        .map(|b| b.healthy)
        .collect()
}

#[test]
fn bgp_mode_announces_on_evidence_settles_downs_and_fails_open() {
    let c = cfg(&bgp_base());
    let mut rt = Runtime::new(&c);
    let web: IpAddr = "10.77.0.100".parse().expect("addr");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    // Not checked yet: pending (the dns VIP has no check: it serves).
    let (down, pending) = rt.serving_by_address(&c, &macs());
    assert_eq!(pending[&web], ["web"]);
    assert!(down[&web].is_empty());
    assert!(down[&"10.77.0.101".parse::<IpAddr>().expect("addr")].is_empty());
    assert!(!pending.contains_key(&"10.77.0.101".parse::<IpAddr>().expect("addr")));
    // A backend without a MAC does not count: the data plane leaves it out.
    let mut no_mac = macs();
    no_mac.macs.remove(&"10.77.0.21".parse().expect("addr"));
    no_mac.macs.remove(&"10.77.0.22".parse().expect("addr"));
    for b in ["web1", "web2"] {
        rt.record("web", b, ok(true), t0);
    }
    assert_eq!(rt.serving_by_address(&c, &no_mac).0[&web], ["web"]);
    let (down, pending) = rt.serving_by_address(&c, &macs());
    assert!(down[&web].is_empty() && pending.is_empty());
    // web1 goes down: out of the gate's view at once, in the data plane for
    // one interval and timeout (1.5 s) more.
    rt.record("web", "web1", ok(false), t0);
    assert_eq!(rt.record("web", "web1", ok(false), t0), Some(false));
    let half = t0 + Duration::from_millis(500);
    assert_eq!(healthy_in_dataplane(&rt, &c, half), [true, true]);
    assert_eq!(
        rt.next_settle(&c, half),
        Some(t0 + Duration::from_millis(1500))
    );
    let later = t0 + Duration::from_millis(1501);
    assert_eq!(healthy_in_dataplane(&rt, &c, later), [false, true]);
    assert_eq!(rt.next_settle(&c, later), None);
    // web2 too: nothing serves (withdrawn), the data plane fails open to
    // the backends that served until moments ago, not to long-dead ones.
    rt.record("web", "web2", ok(false), later);
    rt.record("web", "web2", ok(false), later);
    assert_eq!(rt.serving_by_address(&c, &macs()).0[&web], ["web"]);
    let soon = later + Duration::from_secs(3);
    assert_eq!(healthy_in_dataplane(&rt, &c, soon), [true, true]);
    let much_later = later + Duration::from_secs(60);
    assert_eq!(healthy_in_dataplane(&rt, &c, much_later), [false, false]);
    // Without [bgp] none of this: downs leave at once, no fail-open.
    let v = cfg(BASE);
    let mut rt = Runtime::new(&v);
    rt.record("web", "web1", ok(false), t0);
    rt.record("web", "web1", ok(false), t0);
    assert_eq!(healthy_in_dataplane(&rt, &v, half), [false, true]);
    assert_eq!(rt.next_settle(&v, half), None);
}

#[test]
fn probes_of_encapsulating_vips_go_through_their_tunnel() {
    let text = BASE
        .replacen(
            "port = 80\n",
            "port = 80\nmode = \"gue\"\ngue_port = 6080\n",
            1,
        )
        .replacen(
            "protocol = \"udp\"\n",
            "protocol = \"udp\"\n  [vip.health]\n  kind = \"tcp\"\n",
            1,
        );
    let c = cfg(&text);
    let rt = Runtime::new(&c);
    let t = targets(&c, &rt);
    let web: Vec<&Target> = t.iter().filter(|t| t.vip == "web").collect();
    assert!(!web.is_empty());
    let mut marks = std::collections::HashSet::new();
    for p in &web {
        let (mark, hc) = p.tunnel.expect("through the tunnel");
        assert_eq!(mark & ha_common::hc::MARK_MASK, ha_common::hc::MARK_BASE);
        assert!(marks.insert(mark), "one mark per probe");
        assert_eq!(
            (hc.encap, u16::from_be(hc.gue_port)),
            (ha_common::ENCAP_GUE, 6080)
        );
        assert_eq!(
            crate::dataplane::service::addr_octets(p.addr.ip()),
            hc.dst,
            "to the backend's own address"
        );
    }
    // DSR VIPs probe directly.
    let dns: Vec<&Target> = t.iter().filter(|t| t.vip == "dns").collect();
    assert!(!dns.is_empty() && dns.iter().all(|t| t.tunnel.is_none()));
}
