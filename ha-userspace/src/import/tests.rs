//! `halb import` on Debian's keepalived samples and default haproxy.cfg, on
//! configs written for every directive, golden files for typical configs,
//! and mutated inputs: never a panic, every line accounted for, the output
//! always passes check-config.

use std::path::{Path, PathBuf};

use super::{import, Fate, Imported};
use crate::config::{Config, HealthKind};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/import/testdata")
        .join(name)
}

fn parsed(i: &Imported) -> Config {
    crate::config::parse(Path::new("imported.toml"), &i.config)
        .unwrap_or_else(|e| panic!("{e}\n{}", i.config))
}

fn check(i: &Imported) {
    parsed(i);
    assert!(
        i.report.accounts_for_every_line(),
        "a line without a report entry:\n{}",
        i.report
    );
}

#[test]
fn every_debian_keepalived_sample_imports() {
    let dir = Path::new("/usr/share/doc/keepalived/samples");
    let mut n = 0;
    for e in std::fs::read_dir(dir)
        .expect("Debian's keepalived samples (package keepalived; cargo xtask setup installs it)")
    {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if !name.starts_with("keepalived.conf") {
            continue;
        }
        let i = import(Some(&p), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(&i);
        assert!(i.report.entries.len() > 3, "{name}: {}", i.report);
        n += 1;
    }
    assert!(n >= 20, "only {n} samples found");
}

#[test]
fn debians_default_haproxy_cfg_imports() {
    let p = Path::new("/etc/haproxy/haproxy.cfg");
    assert!(
        p.exists(),
        "Debian's haproxy.cfg (package haproxy; cargo xtask setup installs it)"
    );
    let i = import(None, Some(p)).expect("import");
    check(&i);
    // Nothing to serve there (no frontend), and every line said so.
    assert_eq!(parsed(&i).vips.len(), 0);
    assert!(i.report.count(Fate::NotTranslated) > 20, "{}", i.report);
}

/// Compares `actual` with the golden file `name` (HALB_BLESS=1 rewrites it).
fn golden(name: &str, actual: &str) {
    let path = testdata(name);
    // Paths in comments differ between machines: compare with them relative.
    let base = format!(
        "{}/",
        testdata("").display().to_string().trim_end_matches('/')
    );
    let actual = actual.replace(&base, "");
    if std::env::var_os("HALB_BLESS").is_some() {
        std::fs::write(&path, &actual).expect("bless");
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == actual,
        "{name} differs (HALB_BLESS=1 to accept):\n--- got ---\n{actual}"
    );
}

#[test]
fn a_typical_pair_matches_its_golden_files() {
    let i = import(
        Some(&testdata("pair.keepalived.conf")),
        Some(&testdata("web.haproxy.cfg")),
    )
    .expect("import");
    check(&i);
    golden("pair.expected.toml", &i.config);
    golden("pair.expected.report", &i.report.to_string());
    let c = parsed(&i);
    assert_eq!(c.vrrp_instances.len(), 1);
    let v = c.vrrp_instances[0].get_ref();
    assert_eq!((v.router_id, v.priority, v.version), (51, 150, 2));
    assert_eq!(v.advert_interval_ms, 1000);
    assert_eq!(
        v.auth_pass.as_ref().map(|p| p.get_ref().as_str()),
        Some("s3cr3t")
    );
    assert_eq!(v.track_scripts.len(), 1);
    let s = v.track_scripts[0].get_ref();
    assert_eq!(
        (s.interval_ms, s.timeout_ms(), s.rise, s.fall, s.weight),
        (2000, 1000, 2, 2, -20)
    );
    assert_eq!(
        c.vips.len(),
        2,
        "the LVS service (included file) and the HAProxy frontend"
    );
    let api = c
        .vips
        .iter()
        .find(|v| {
            v.get_ref().port == 80
                && *v.get_ref().address.get_ref() == std::net::IpAddr::from([10, 77, 0, 101])
        })
        .expect("api");
    let api = api.get_ref();
    assert_eq!(
        api.hash,
        crate::config::Hash::SourceIp,
        "persistence_timeout"
    );
    assert_eq!(api.health.kind, HealthKind::Http);
    assert_eq!(
        (
            api.health.interval_ms,
            api.health.timeout_ms,
            api.health.fall
        ),
        (2000, 1000, 3)
    );
    assert_eq!(
        api.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [2, 1, 1]
    );
    let www = c
        .vips
        .iter()
        .find(|v| v.get_ref().name.get_ref() == "www")
        .expect("www")
        .get_ref();
    assert_eq!(www.hash, crate::config::Hash::FiveTuple);
    assert_eq!((www.health.interval_ms, www.health.timeout_ms), (1000, 500));
    assert_eq!((www.health.rise, www.health.fall), (2, 3));
    assert_eq!(www.backends.len(), 3, "the backup server is commented out");
    assert!(i.config.contains("# [[vip.backend]]"));
}

#[test]
fn every_directive_is_translated_or_reported() {
    let i = import(
        Some(&testdata("all.keepalived.conf")),
        Some(&testdata("all.haproxy.cfg")),
    )
    .expect("import");
    check(&i);
    golden("all.expected.toml", &i.config);
    let c = parsed(&i);
    let inst = |n: &str| {
        c.vrrp_instances
            .iter()
            .map(|v| v.get_ref())
            .find(|v| v.name.as_ref().is_some_and(|x| x.get_ref() == n))
            .unwrap_or_else(|| panic!("instance {n}"))
    };
    let vi1 = inst("VI_1");
    assert_eq!(
        (vi1.version, vi1.advert_interval_ms, vi1.preempt),
        (3, 50, false)
    );
    assert!(vi1.auth_pass.is_none(), "no authentication in VRRPv3");
    assert_eq!(vi1.unicast_peers.len(), 2);
    assert_eq!(vi1.garp_count, 3, "global vrrp_garp_master_repeat");
    assert_eq!(vi1.track_scripts.len(), 2, "chk_missing does not exist");
    let disk = vi1.track_scripts[1].get_ref();
    assert_eq!(disk.weight, -30, "the track_script block's weight wins");
    assert!(
        vi1.track_scripts[0].get_ref().timeout_ms() < 1000,
        "timeout below interval"
    );
    assert_eq!(inst("VI_2").advert_interval_ms, 2000, "v2: whole seconds");
    assert_eq!(c.sync_groups.len(), 1, "VI_2 cannot be in two groups");
    let udp = c
        .vips
        .iter()
        .map(|v| v.get_ref())
        .find(|v| v.port == 53)
        .expect("udp");
    assert_eq!(udp.protocol, crate::config::Protocol::Udp);
    assert_eq!(
        udp.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [1, 0]
    );
    let tls = c
        .vips
        .iter()
        .map(|v| v.get_ref())
        .find(|v| v.port == 443)
        .expect("443");
    assert_eq!(tls.health.kind, HealthKind::Tcp);
    assert_eq!(
        (tls.health.port, tls.health.fall, tls.health.timeout_ms),
        (Some(8443), 2, 3000)
    );
    assert_eq!(tls.backends[1].weight, crate::config::MAX_WEIGHT);
    // NAT, fwmark and an address no instance owns are left out, and said so.
    assert!(
        !c.vips.iter().any(|v| v.get_ref().port == 80),
        "{}",
        i.config
    );
    let r = i.report.to_string();
    for why in [
        "lb_kind NAT",
        "fwmark",
        "IPv6",
        "ACLs and content switching",
        "stickiness",
        "does not terminate TLS",
        "host name",
        "already in sync group",
        "no vrrp_script of this name",
    ] {
        assert!(r.contains(why), "report lacks {why:?}:\n{r}");
    }
    // `bind *:8080` becomes a VIP on each VRRP address.
    assert_eq!(
        c.vips.iter().filter(|v| v.get_ref().port == 8080).count(),
        3
    );
}

#[test]
fn includes_resolve_globs_relative_to_the_file() {
    let i = import(Some(&testdata("pair.keepalived.conf")), None).expect("import");
    assert!(
        i.report
            .entries
            .iter()
            .any(|e| e.loc.file.ends_with("vs-api.conf") && e.fate == Fate::Translated),
        "{}",
        i.report
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let e = import(Some(Path::new("/nonexistent/keepalived.conf")), None).expect_err("missing");
    assert!(
        e.to_string()
            .contains("/nonexistent/keepalived.conf: cannot read"),
        "{e}"
    );
}

mod mutated {
    use super::*;
    use proptest::prelude::*;

    fn sources() -> Vec<String> {
        [
            "pair.keepalived.conf",
            "vs-api.conf",
            "all.keepalived.conf",
            "web.haproxy.cfg",
            "all.haproxy.cfg",
        ]
        .iter()
        .map(|n| std::fs::read_to_string(testdata(n)).expect("read"))
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Lines dropped, duplicated or cut anywhere: the import still
        /// succeeds, accounts for every line and writes a valid config.
        #[test]
        fn mutated_configs_never_break_the_import(
            which in 0usize..5,
            edits in proptest::collection::vec((0usize..200, 0u8..4, 0usize..40), 1..12),
        ) {
            let text = &sources()[which];
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            for (at, op, cut) in edits {
                if lines.is_empty() { break; }
                let i = at % lines.len();
                match op {
                    0 => { lines.remove(i); }
                    1 => { let l = lines[i].clone(); lines.insert(i, l); }
                    2 => { let l = &mut lines[i]; let c = cut.min(l.len()); l.truncate(c); }
                    _ => { lines[i].push_str(" { } \" 999999999 ::1"); }
                }
            }
            let dir = std::env::temp_dir().join(format!("halb-import-prop-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            let p = dir.join("input.conf");
            std::fs::write(&p, lines.join("\n")).expect("write");
            // keepalived files alone; haproxy files with the pair's VRRP.
            let ka = testdata("pair.keepalived.conf");
            let (k, h) = if which < 3 { (Some(p.as_path()), None) } else { (Some(ka.as_path()), Some(p.as_path())) };
            let i = match import(k, h) {
                Ok(i) => i,
                Err(e) => {
                    let first: String = e.to_string().lines().take(2).collect::<Vec<_>>().join(" | ");
                    return Err(TestCaseError::fail(format!("import failed: {first}")));
                }
            };
            prop_assert!(i.report.accounts_for_every_line());
            prop_assert!(crate::config::parse(Path::new("x.toml"), &i.config).is_ok(), "{}", i.config);
        }
    }
}

/// Imports `ka` and/or `ha` text from temporary files.
fn import_text(ka: Option<&str>, ha: Option<&str>) -> Imported {
    let dir = std::env::temp_dir().join(format!(
        "halb-import-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let kp = dir.join("keepalived.conf");
    let hp = dir.join("haproxy.cfg");
    if let Some(t) = ka {
        std::fs::write(&kp, t).expect("write");
    }
    if let Some(t) = ha {
        std::fs::write(&hp, t).expect("write");
    }
    let i = import(ka.map(|_| kp.as_path()), ha.map(|_| hp.as_path())).expect("import");
    check(&i);
    i
}

#[test]
fn keepalived_defaults_and_meanings_carry_over() {
    let ka = "vrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 9\n \
              advert_int 60\n notify_master \"/etc/k/master.sh now\"\n virtual_ipaddress {\n  \
              192.0.2.1\n  192.0.2.9\n }\n}\n\
              virtual_server 192.0.2.1 80 {\n lb_kind DR\n lb_algo sh\n connect_timeout 3\n \
              real_server 192.0.2.21 80 {\n  HTTP_GET {\n   url {\n    path /\n   }\n  }\n }\n \
              real_server 192.0.2.22 80 {\n }\n}\n";
    let i = import_text(Some(ka), None);
    let c = parsed(&i);
    let v = c.vrrp_instances[0].get_ref();
    assert_eq!(
        v.priority, 255,
        "keepalived: a MASTER without priority is 255"
    );
    assert_eq!(v.advert_interval_ms, 40_000, "clamped to halb's range");
    assert!(v.notify.is_none(), "notify_master is not halb's one hook");
    let vip = c.vips[0].get_ref();
    assert_eq!(vip.hash, crate::config::Hash::SourceIp, "lb_algo sh");
    assert_eq!(vip.health.fall, 2, "keepalived's default retry 1");
    assert_eq!(
        vip.health.timeout_ms, 3000,
        "connect_timeout inherited from the virtual_server"
    );
    let r = i.report.to_string();
    for want in [
        "write a script that runs this command",
        "keepalived accepted any 2xx",
        "checked like the others",
        "no longer fails over",
    ] {
        assert!(r.contains(want), "report lacks {want:?}:\n{r}");
    }
}

#[test]
fn haproxy_listeners_and_checks_carry_over() {
    let ha = "frontend f\n bind ipv4@198.51.100.1:80\n default_backend b\n\
              backend b\n option httpchk GET /h HTTP/1.1\\r\\nHost:\\ www.example.org\n \
              server s1 198.51.100.21:80 check\n server s2 198.51.100.22:80 check fall 9\n\
              listen stats\n bind 127.0.0.1:8404\n stats enable\n\
              listen empty\n bind 198.51.100.2:80\n";
    let i = import_text(None, Some(ha));
    let c = parsed(&i);
    assert_eq!(c.vips.len(), 1, "{}", i.config);
    let v = c.vips[0].get_ref();
    assert_eq!(
        *v.address.get_ref(),
        std::net::IpAddr::from([198, 51, 100, 1])
    );
    assert_eq!(v.health.host.as_deref(), Some("www.example.org"));
    assert_eq!(v.health.path, "/h");
    let r = i.report.to_string();
    for want in [
        "loopback",
        "no server lines",
        "direct server return",
        "fall or port differ",
    ] {
        assert!(r.contains(want), "report lacks {want:?}:\n{r}");
    }
}

#[test]
fn long_names_out_of_range_values_and_unservable_instances_never_break_it() {
    let long = "kubernetes-control-plane-apiserver-production-external-eu1-abcdefgh";
    let ha = format!(
        "defaults\n mode tcp\n default-server check\nfrontend {long}\n bind 10.10.0.1:6443\n \
         bind 10.10.0.2:6443\n default_backend be\nfrontend {long}\n bind 10.10.0.5:6443\n \
         default_backend be\nfrontend internal\n bind 10.10.0.3:80\n default_backend be2\n\
         backend be\n server s1 10.10.0.11:6443\n server chain 10.10.0.3:80\n\
         backend be2\n server s2 10.10.0.12:80 inter 2h\n"
    );
    let i = import_text(None, Some(&ha));
    let c = parsed(&i);
    let names: std::collections::BTreeSet<&str> = c
        .vips
        .iter()
        .map(|v| v.get_ref().name.get_ref().as_str())
        .collect();
    assert_eq!(names.len(), c.vips.len(), "unique names: {names:?}");
    assert_eq!(c.vips.len(), 4);
    assert!(
        c.vips
            .iter()
            .all(|v| v.get_ref().health.kind == HealthKind::Tcp),
        "default-server check"
    );
    assert!(
        i.report.to_string().contains("halb refused it"),
        "{}",
        i.report
    );

    let ka = "vrrp_script chk {\n script \"/bin/true\"\n interval 4000\n}\n\
              vrrp_instance VI_INTERNAL {\n interface eth1\n virtual_router_id 10\n \
              virtual_ipaddress {\n  192.168.1.1\n }\n}\n\
              vrrp_instance VI_WEB {\n interface eth0\n virtual_router_id 11\n track_script {\n  chk\n }\n \
              virtual_ipaddress {\n  10.4.0.100\n }\n}\n\
              virtual_server 10.4.0.100 80 {\n delay_loop 7200\n lb_kind DR\n \
              real_server 10.4.0.21 80 {\n }\n}\n";
    let i = import_text(Some(ka), None);
    let c = parsed(&i);
    assert_eq!(
        c.node.interface.get_ref(),
        "eth0",
        "the interface of the instance that is kept"
    );
    assert_eq!(c.vrrp_instances.len(), 1, "{}", i.config);
    assert_eq!(c.vips.len(), 1);
}

#[test]
fn lb_kind_tun_becomes_ip_in_ip_or_gue() {
    let vs = |extra: &str, addr: &str| {
        format!(
            "virtual_server {addr} 80 {{\n lb_kind TUN\n{extra} real_server 198.51.100.21 80 {{\n }}\n}}\n"
        )
    };
    let ka = format!(
        "vrrp_instance VI_1 {{\n interface eth0\n virtual_router_id 9\n priority 100\n \
         virtual_ipaddress {{\n  192.0.2.1\n  192.0.2.2\n  192.0.2.3\n }}\n}}\n{}{}{}",
        vs("", "192.0.2.1"),
        vs(" tun_type gue\n tun_port 6080\n", "192.0.2.2"),
        vs(" tun_type gre\n", "192.0.2.3"),
    );
    let i = import_text(Some(&ka), None);
    let c = parsed(&i);
    let mode_of = |a: &str| {
        c.vips
            .iter()
            .map(|v| v.get_ref())
            .find(|v| v.address.get_ref().to_string() == a)
            .map(|v| (v.mode, v.gue_port.as_ref().map(|p| *p.get_ref())))
    };
    assert_eq!(
        mode_of("192.0.2.1"),
        Some((crate::config::Mode::Ipip, None))
    );
    assert_eq!(
        mode_of("192.0.2.2"),
        Some((crate::config::Mode::Gue, Some(6080)))
    );
    assert_eq!(mode_of("192.0.2.3"), None, "GRE has no halb equivalent");
    let r = i.report.to_string();
    assert!(r.contains("tun_type gre"), "{r}");
}
