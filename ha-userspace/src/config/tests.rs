//! Config parsing tests: good files, and every error located precisely.

use std::path::Path;

use super::*;

const GOOD: &str = r#"
[node]
name = "lb1"
interface = "eth1"
xdp_mode = "auto"

[api]
listen = "127.0.0.1:8480"

[vrrp]
version = 3
router_id = 51
priority = 150
advert_interval_ms = 100
preempt = true
unicast_peers = ["10.77.0.3"]
track_interfaces = ["eth1"]

[[vip]]
name = "web"
address = "10.77.0.100"
port = 80
protocol = "tcp"
mode = "dsr"

  [vip.health]
  kind = "http"
  path = "/"
  expect_status = 200
  interval_ms = 1000
  timeout_ms = 500
  rise = 2
  fall = 2

  [[vip.backend]]
  name = "web1"
  address = "10.77.0.21"
  weight = 1

  [[vip.backend]]
  name = "web2"
  address = "10.77.0.22"
"#;

fn parse_str(s: &str) -> Result<Config, ConfigError> {
    parse(Path::new("halb.toml"), s)
}

/// The single problem of a bad file, as "line:col: message".
fn one_problem(s: &str) -> (usize, usize, String) {
    let err = parse_str(s).expect_err("config should be rejected");
    assert_eq!(err.problems.len(), 1, "{err}");
    let p = &err.problems[0];
    let l = p.location.as_ref().expect("problem has a location");
    assert_eq!(l.file, Path::new("halb.toml"));
    (l.line, l.column, p.message.clone())
}

/// Each (file text, (line, column), part of the message) is rejected with a
/// problem whose message contains that part, located there.
fn assert_located<T: AsRef<str>>(cases: &[(T, (usize, usize), &str)]) {
    for (text, (line, col), want) in cases {
        let err = parse_str(text.as_ref()).expect_err(want);
        let text_err = err.to_string();
        let p = err
            .problems
            .iter()
            .find(|p| p.message.contains(want))
            .unwrap_or_else(|| panic!("{want:?} in {text_err}"));
        let l = p.location.as_ref().expect("located");
        assert_eq!((l.line, l.column), (*line, *col), "{want}: {text_err}");
    }
}

#[test]
fn design_example_parses() {
    let c = parse_str(GOOD).expect("good config");
    assert_eq!(c.node.interface.get_ref(), "eth1");
    assert_eq!(c.node.xdp_mode, XdpModeCfg::Auto);
    let vrrp = c.vrrp().expect("vrrp");
    assert_eq!(
        (vrrp.router_id, vrrp.priority, vrrp.advert_interval_ms),
        (51, 150, 100)
    );
    let vips: Vec<_> = c.vips().collect();
    assert_eq!(vips.len(), 1);
    assert_eq!(vips[0].port, 80);
    assert_eq!(vips[0].maglev_table_size, 65537);
    assert_eq!(vips[0].health.kind, HealthKind::Http);
    assert_eq!(vips[0].backends.len(), 2);
    assert_eq!(vips[0].backends[1].weight, 1, "weight defaults to 1");
}

#[test]
fn unknown_key_is_located() {
    let bad = GOOD.replace("  weight = 1\n", "  wieght = 1\n");
    let (line, col, msg) = one_problem(&bad);
    assert_eq!((line, col), (38, 3), "{msg}");
    assert!(msg.contains("wieght"), "{msg}");
}

#[test]
fn bad_value_is_located_at_the_value() {
    let bad = GOOD.replace("priority = 150", "priority = 300");
    let (line, col, msg) = one_problem(&bad);
    assert_eq!((line, col), (13, 12), "{msg}");
    assert!(msg.contains("between 1 and 255"), "{msg}");

    let bad = GOOD.replace("address = \"10.77.0.21\"", "address = \"10.77.0.321\"");
    let (line, _, msg) = one_problem(&bad);
    assert_eq!(line, 37, "{msg}");
}

#[test]
fn syntax_error_is_located() {
    let bad = GOOD.replace("port = 80", "port = = 80");
    let (line, _, _) = one_problem(&bad);
    assert_eq!(line, 22);
}

#[test]
fn table_size_must_be_prime() {
    let bad = GOOD.replace("mode = \"dsr\"", "mode = \"dsr\"\nmaglev_table_size = 1000");
    let (line, _, msg) = one_problem(&bad);
    assert_eq!(line, 25);
    assert!(msg.contains("prime"), "{msg}");
    let ok = GOOD.replace("mode = \"dsr\"", "mode = \"dsr\"\nmaglev_table_size = 251");
    assert_eq!(
        parse_str(&ok).expect("prime").vips[0]
            .get_ref()
            .maglev_table_size,
        251
    );
}

#[test]
fn hash_is_five_tuple_or_source_ip() {
    let vip = |text: &str| parse_str(text).expect("valid").vips[0].get_ref().hash;
    assert_eq!(vip(GOOD), crate::config::Hash::FiveTuple);
    let src = GOOD.replace("mode = \"dsr\"", "mode = \"dsr\"\nhash = \"source-ip\"");
    assert_eq!(vip(&src), crate::config::Hash::SourceIp);
    let bad = GOOD.replace("mode = \"dsr\"", "mode = \"dsr\"\nhash = \"round-robin\"");
    let (line, _, msg) = one_problem(&bad);
    assert_eq!(line, 25);
    assert!(
        msg.contains("five-tuple") && msg.contains("source-ip"),
        "{msg}"
    );
}

#[test]
fn duplicates_are_reported_all_at_once() {
    let bad = GOOD
        .replace("name = \"web2\"", "name = \"web1\"")
        .replace("address = \"10.77.0.22\"", "address = \"10.77.0.21\"");
    let err = parse_str(&bad).expect_err("duplicates");
    assert_eq!(err.problems.len(), 2, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("halb.toml:41:10: duplicate backend name \"web1\""),
        "{text}"
    );
    assert!(
        text.contains("halb.toml:42:13: backend address 10.77.0.21 appears twice"),
        "{text}"
    );
}

#[test]
fn duplicate_service_and_nat_are_rejected() {
    let extra = "\n[[vip]]\nname = \"web-b\"\naddress = \"10.77.0.100\"\nport = 80\n";
    let err = parse_str(&format!("{GOOD}{extra}")).expect_err("dup service");
    let text = err.to_string();
    assert!(
        text.contains(":44:1: another vip already serves 10.77.0.100:80"),
        "{text}"
    );
    let (line, col, msg) = one_problem(&GOOD.replace("mode = \"dsr\"", "mode = \"nat\""));
    assert_eq!((line, col), (24, 8));
    assert!(msg.contains("not implemented"), "{msg}");
}

#[test]
fn auth_pass_needs_v2() {
    let bad = GOOD.replace("version = 3", "version = 3\nauth_pass = \"secret\"");
    let (line, _, msg) = one_problem(&bad);
    assert_eq!(line, 12);
    assert!(msg.contains("version 2"), "{msg}");
    let ok = GOOD
        .replace("version = 3", "version = 2\nauth_pass = \"secret\"")
        .replace("advert_interval_ms = 100", "advert_interval_ms = 1000");
    assert!(parse_str(&ok).is_ok());
}

#[test]
fn vrrp_intervals_fit_the_wire() {
    let (line, col, msg) =
        one_problem(&GOOD.replace("advert_interval_ms = 100", "advert_interval_ms = 105"));
    assert_eq!((line, col), (14, 22));
    assert!(msg.contains("multiple of 10"), "{msg}");
    let (line, _, msg) = one_problem(&GOOD.replace("version = 3", "version = 2"));
    assert_eq!(line, 10, "reported at the [vrrp] table");
    assert!(msg.contains("whole seconds"), "{msg}");
}

#[test]
fn track_scripts_parse() {
    let text = GOOD.replace(
        "track_interfaces = [\"eth1\"]",
        "track_interfaces = [\"eth1\"]\n[[vrrp.track_script]]\nname = \"chk\"\nscript = \"true\"\nweight = -20\n",
    );
    let c = parse_str(&text).expect("parses");
    let t = c.vrrp().expect("vrrp").track_scripts[0].get_ref();
    assert_eq!(
        (t.name.as_str(), t.weight, t.rise, t.fall),
        ("chk", -20, 1, 1)
    );
}

#[test]
fn missing_interface_is_an_error() {
    let (line, _, msg) = one_problem("[node]\nname = \"x\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("interface"), "{msg}");
}

#[test]
fn unreadable_file_is_reported() {
    let err = load(Path::new("/nonexistent/halb.toml")).expect_err("no file");
    assert!(err
        .to_string()
        .contains("/nonexistent/halb.toml: cannot read"));
}

#[test]
fn location_counts_characters() {
    let l = locate(Path::new("f"), "ab\ncé x", 7);
    assert_eq!((l.line, l.column), (2, 4));
}

fn with_token(token: &str) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("halb-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("token-{}", token.len()));
    std::fs::write(&path, token).expect("token");
    let text = GOOD.replace(
        "listen = \"127.0.0.1:8480\"",
        &format!(
            "listen = \"10.78.0.2:9191\"\ntoken_file = \"{}\"",
            path.display()
        ),
    );
    (text, path)
}

#[test]
fn an_empty_or_short_token_is_rejected() {
    for token in ["", "\n", "   \n", "fifteen-bytes!!"] {
        let (text, path) = with_token(token);
        let (line, col, msg) = one_problem(&text);
        assert_eq!((line, col), (9, 14), "{msg}");
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("at least 16"),
            "{msg}"
        );
    }
    let (text, _) = with_token("sixteen-bytes!!!\n");
    assert!(parse_str(&text).is_ok());
    let text = GOOD.replace(
        "listen = \"127.0.0.1:8480\"",
        "listen = \"127.0.0.1:8480\"\ntoken_file = \"/nonexistent/token\"",
    );
    let (line, _, msg) = one_problem(&text);
    assert_eq!(line, 9);
    assert!(msg.contains("/nonexistent/token"), "{msg}");
}

#[test]
fn a_backend_that_is_a_peer_or_a_vip_is_rejected() {
    let bad = GOOD.replace("address = \"10.77.0.22\"", "address = \"10.77.0.3\"");
    let (line, col, msg) = one_problem(&bad);
    assert_eq!((line, col), (42, 13), "{msg}");
    assert!(msg.contains("VRRP peer") && msg.contains("loop"), "{msg}");
    let bad = GOOD.replace("address = \"10.77.0.22\"", "address = \"10.77.0.100\"");
    let (line, _, msg) = one_problem(&bad);
    assert_eq!(line, 42);
    assert!(msg.contains("a VIP address"), "{msg}");
    let bad = GOOD.replace(
        "unicast_peers = [\"10.77.0.3\"]",
        "unicast_peers = [\"10.77.0.3\"]\nsource = \"10.77.0.21\"",
    );
    let (line, _, msg) = one_problem(&bad);
    assert_eq!(line, 38);
    assert!(msg.contains("own VRRP source"), "{msg}");
}

#[test]
fn a_track_script_must_end_before_its_next_run() {
    let text = GOOD.replace(
        "track_interfaces = [\"eth1\"]",
        "track_interfaces = [\"eth1\"]\n[[vrrp.track_script]]\nname = \"chk\"\nscript = \"true\"\n\
         interval_ms = 1000\ntimeout_ms = 1000\n",
    );
    let (line, col, msg) = one_problem(&text);
    assert_eq!((line, col), (18, 1), "{msg}");
    assert!(
        msg.contains("timeout_ms (1000) must be below interval_ms (1000)"),
        "{msg}"
    );
}

#[test]
fn gratuitous_arp_timing_has_bounds() {
    let (line, _, msg) =
        one_problem(&GOOD.replace("preempt = true", "preempt = true\ngarp_interval_ms = 1"));
    assert_eq!(line, 16);
    assert!(msg.contains("garp_interval_ms"), "{msg}");
    let (line, _, msg) =
        one_problem(&GOOD.replace("preempt = true", "preempt = true\ngarp_refresh_ms = 10"));
    assert_eq!(line, 16);
    assert!(msg.contains("garp_refresh_ms must be 0"), "{msg}");
    assert!(
        parse_str(&GOOD.replace("preempt = true", "preempt = true\ngarp_refresh_ms = 5000"))
            .is_ok()
    );
}

#[test]
fn sections_compare_by_value_not_by_position() {
    let a = parse_str(GOOD).expect("good");
    let b = parse_str(&format!("\n\n# moved down\n{GOOD}")).expect("good");
    assert_eq!(a.vrrp(), b.vrrp());
    assert_eq!(a.api, b.api);
    assert_eq!(a.node, b.node);
    let c = parse_str(&GOOD.replace("priority = 150", "priority = 151")).expect("good");
    assert_ne!(a.vrrp(), c.vrrp());
}

const TWO: &str = r#"[node]
name = "lb1"
interface = "eth1"

[[vrrp_instance]]
name = "VI_1"
router_id = 51
priority = 150
advert_interval_ms = 100
vips = ["web"]

[[vrrp_instance]]
name = "VI_2"
router_id = 52
priority = 100
advert_interval_ms = 100
preempt = false
vips = ["api"]

[[vrrp_sync_group]]
name = "G"
instances = ["VI_1", "VI_2"]

[[vip]]
name = "web"
address = "10.77.0.100"
port = 80

[[vip]]
name = "api"
address = "10.77.0.101"
port = 80
"#;

#[test]
fn several_instances_each_own_their_vips() {
    let c = parse_str(TWO).expect("two instances");
    let i = c.instances();
    assert_eq!(i.len(), 2);
    assert_eq!(
        (i[0].name.as_str(), i[0].vips.as_slice()),
        ("VI_1", &["web".to_string()][..])
    );
    assert_eq!(
        (i[1].name.as_str(), i[1].vrrp.router_id, i[1].vrrp.preempt),
        ("VI_2", 52, false)
    );
    assert_eq!(i[1].interface, "eth1", "default: the node's interface");
    assert_eq!(
        c.sync_group_of("VI_2").map(|g| g.name.get_ref().as_str()),
        Some("G")
    );
    // The single [vrrp] section is one instance owning every VIP.
    let legacy = parse_str(GOOD).expect("good");
    let i = legacy.instances();
    assert_eq!(i.len(), 1);
    assert_eq!(
        (i[0].name.as_str(), i[0].vips.as_slice()),
        ("vrrp", &["web".to_string()][..])
    );
}

#[test]
fn inconsistent_instances_are_located() {
    let cases: [(String, (usize, usize), &str); 8] = [
        (
            TWO.replace("vips = [\"api\"]", "vips = [\"api\", \"web\"]"),
            (18, 16),
            "vip \"web\" is in two instances",
        ),
        (
            TWO.replace("vips = [\"api\"]", "vips = [\"apx\"]"),
            (18, 9),
            "unknown vip \"apx\"",
        ),
        (
            TWO.replace("router_id = 52", "router_id = 51"),
            (12, 1),
            "both use router_id 51 on eth1",
        ),
        (
            TWO.replace(
                "instances = [\"VI_1\", \"VI_2\"]",
                "instances = [\"VI_1\", \"VI_3\"]",
            ),
            (22, 22),
            "unknown instance \"VI_3\"",
        ),
        (
            TWO.replace("vips = [\"api\"]", "vips = []"),
            (30, 8),
            "vip \"api\" is in no [[vrrp_instance]]",
        ),
        (
            TWO.replace("name = \"VI_2\"\n", ""),
            (12, 1),
            "needs a name",
        ),
        (
            TWO.replace(
                "address = \"10.77.0.101\"",
                "address = \"10.77.0.100\"\nprotocol = \"udp\"",
            ),
            (18, 9),
            "which instance \"VI_1\" owns already",
        ),
        (
            format!("{TWO}\n[vrrp]\nrouter_id = 9\n"),
            (5, 1),
            "cannot be used together",
        ),
    ];
    assert_located(&cases);
    // An instance on another interface than the data plane's is refused
    // (nothing would forward its VIPs there); naming the node's is fine.
    let (line, col, msg) =
        one_problem(&TWO.replace("router_id = 52", "router_id = 52\ninterface = \"eth2\""));
    assert_eq!((line, col), (15, 13), "{msg}");
    assert!(
        msg.contains("forwards VIP traffic on [node] interface"),
        "{msg}"
    );
    let ok = TWO.replace("router_id = 52", "router_id = 52\ninterface = \"eth1\"");
    assert!(parse_str(&ok).is_ok());
    // Lists: empty, or a name twice.
    let more = [
        (
            TWO.replace("vips = [\"api\"]", "vips = []"),
            (18, 8),
            "owns no VIP",
        ),
        (
            TWO.replace("vips = [\"api\"]", "vips = [\"api\", \"api\"]"),
            (18, 16),
            "listed twice in vrrp_instance \"VI_2\"",
        ),
        (
            TWO.replace("[\"VI_1\", \"VI_2\"]", "[\"VI_1\", \"VI_1\"]"),
            (22, 22),
            "listed twice in sync group",
        ),
        (
            TWO.replace("name = \"G\"", "name = \"a group\""),
            (21, 8),
            "sync group name must be",
        ),
    ];
    assert_located(&more);
}

/// A scale-out node: `[bgp]` instead of VRRP.
const BGP: &str = r#"[node]
name = "lb1"
interface = "eth0"

[bgp]
local_asn = 65001
hold_down_ms = 2000

  [[bgp.neighbor]]
  address = "10.77.0.1"
  asn = 65000

[[vip]]
name = "web"
address = "10.77.0.100"
port = 80
protocol = "tcp"

  [[vip.backend]]
  name = "web1"
  address = "10.77.0.21"
"#;

#[test]
fn bgp_section_parses_with_defaults() {
    let c = parse_str(BGP).expect("good");
    let b = c.bgp.as_ref().expect("bgp").get_ref();
    assert_eq!((b.local_asn, b.table, b.route_protocol), (65001, 4077, 77));
    assert_eq!(b.device.get_ref(), "halb-announce");
    assert_eq!((b.hold_down_ms, b.shutdown_grace_ms), (2000, 5000));
    assert_eq!((b.bfd.interval_ms, b.bfd.multiplier), (50, 3));
    assert_eq!(b.neighbors.len(), 1);
    assert!(b.neighbors[0].get_ref().bfd, "BFD on by default");
    assert!(!c.has_vrrp());
}

#[test]
fn ipv6_vips_are_announced_over_ipv6_sessions() {
    let dual = BGP.replace(
        "  asn = 65000\n",
        "  asn = 65000\n\n  [[bgp.neighbor]]\n  address = \"fd77::1\"\n  asn = 65000\n",
    ) + "\n[[vip]]\nname = \"web6\"\naddress = \"fd77::100\"\nport = 80\n\n  \
         [[vip.backend]]\n  name = \"web1\"\n  address = \"fd77::21\"\n";
    let c = parse_str(&dual).expect("dual-stack scale-out");
    let b = c.bgp.as_ref().expect("bgp").get_ref();
    assert!(b.neighbors[1].get_ref().address.get_ref().is_ipv6());
    // A reload that brings the VIP and the session keeps the running
    // [bgp] (it changes only with a restart): the merged config is refused.
    let running = parse_str(BGP).expect("running");
    let mut merged = c.clone();
    merged.bgp = running.bgp.clone();
    let problems = super::revalidate(&merged);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("vip \"web6\" is IPv6, but no [[bgp.neighbor]] is")),
        "{problems:?}"
    );
    assert!(super::revalidate(&c).is_empty());
    // Without an IPv6 session nothing could announce the IPv6 VIP.
    let only_v4 =
        BGP.to_string() + "\n[[vip]]\nname = \"web6\"\naddress = \"fd77::100\"\nport = 80\n";
    assert_located(&[(
        only_v4,
        (25, 11),
        "vip \"web6\" is IPv6, but no [[bgp.neighbor]] is",
    )]);
}

#[test]
fn bgp_errors_are_located() {
    let cases = [
        (
            BGP.replace("local_asn = 65001", "local_asn = 0"),
            (6, 13),
            "AS number",
        ),
        (
            BGP.replace("asn = 65000", "asn = 23456"),
            (11, 9),
            "AS_TRANS",
        ),
        (
            BGP.replace("asn = 65000", "asn = 65000\n  bfd_interval = 3"),
            (12, 3),
            "unknown field `bfd_interval`",
        ),
        (
            BGP.replace("hold_down_ms = 2000", "hold_down = 2"),
            (7, 1),
            "unknown field `hold_down`",
        ),
        (
            BGP.replace(
                "  [[bgp.neighbor]]\n  address = \"10.77.0.1\"\n  asn = 65000\n",
                "",
            ),
            (5, 1),
            "at least one [[bgp.neighbor]]",
        ),
        (
            format!(
                "{}\n  [[bgp.neighbor]]\n  address = \"10.77.0.1\"\n  asn = 65002\n",
                BGP.split("[[vip]]").next().unwrap_or_default()
            ) + "[[vip]]"
                + BGP.split("[[vip]]").nth(1).unwrap_or_default(),
            (15, 13),
            "listed twice",
        ),
        (
            BGP.replace("hold_down_ms = 2000", "route_protocol = 12"),
            (7, 18),
            "is bird's",
        ),
        (
            BGP.replace("hold_down_ms = 2000", "device = \"lo\""),
            (7, 10),
            "exists already",
        ),
        (
            BGP.replace("hold_down_ms = 2000", "table = 254"),
            (7, 9),
            "253-255",
        ),
        (
            BGP.replace("hold_down_ms = 2000", "device = \"eth0\""),
            (7, 10),
            "is [node] interface",
        ),
        (
            format!("{BGP}\n[vrrp]\nrouter_id = 51\n"),
            (5, 1),
            "cannot be used together",
        ),
    ];
    assert_located(&cases);
}

/// The fields of every `Deserialize` struct in schema.rs, by struct, under
/// their TOML names (`rename` applied).
fn schema_keys() -> Vec<(String, Vec<String>)> {
    let src = include_str!("schema.rs");
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l
            .strip_prefix("pub struct ")
            .and_then(|r| r.strip_suffix(" {"))
        else {
            continue;
        };
        let derives = lines[i.saturating_sub(4)..i]
            .iter()
            .any(|d| d.starts_with("#[derive(") && d.contains("Deserialize"));
        if !derives {
            continue;
        }
        let mut keys = Vec::new();
        let mut rename: Option<String> = None;
        for f in &lines[i + 1..] {
            if *f == "}" {
                break;
            }
            let t = f.trim();
            if t.starts_with("#[serde(") || rename.is_none() && t.contains("rename = \"") {
                if let Some(r) = t
                    .split("rename = \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                {
                    rename = Some(r.to_string());
                }
            }
            if let Some(field) = t.strip_prefix("pub ").and_then(|r| r.split(':').next()) {
                keys.push(rename.take().unwrap_or_else(|| field.to_string()));
            }
        }
        out.push((name.to_string(), keys));
    }
    out
}

/// The keys of section `heading` in docs/configuration.md (first cells).
fn reference_keys(heading: &str) -> Option<Vec<String>> {
    let doc = include_str!("../../../docs/configuration.md");
    let start = doc.find(&format!("\n## `{heading}`\n"))?;
    let body = &doc[start + 1..];
    let body = &body[..body[3..].find("\n## ").map_or(body.len(), |e| e + 3)];
    Some(
        body.lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn the_configuration_reference_describes_every_key() {
    let sections = [
        ("Node", "[node]"),
        ("Api", "[api]"),
        ("Vrrp", "[vrrp]"),
        ("TrackScript", "[[vrrp.track_script]]"),
        ("SyncGroup", "[[vrrp_sync_group]]"),
        ("Bgp", "[bgp]"),
        ("Bfd", "[bgp.bfd]"),
        ("Neighbor", "[[bgp.neighbor]]"),
        ("Vip", "[[vip]]"),
        ("Health", "[vip.health]"),
        ("Backend", "[[vip.backend]]"),
    ];
    let schema = schema_keys();
    assert!(schema.len() >= 12, "{schema:?}");
    for (name, keys) in &schema {
        if name == "Config" {
            continue;
        }
        let (_, heading) = sections
            .iter()
            .find(|(s, _)| s == name)
            .unwrap_or_else(|| panic!("struct {name} has no section in docs/configuration.md"));
        let documented = reference_keys(heading)
            .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"));
        for k in keys {
            assert!(
                documented.contains(k),
                "{heading} {k} is in the schema but not in docs/configuration.md"
            );
        }
        for k in &documented {
            assert!(
                keys.contains(k),
                "{heading} {k} is documented but not in the schema"
            );
        }
    }
    // The instances' own keys are described where they matter.
    let inst = reference_keys("[[vrrp_instance]]").expect("[[vrrp_instance]]");
    for k in ["name", "interface", "vips"] {
        assert!(inst.contains(&k.to_string()), "[[vrrp_instance]] {k}");
    }
    // And the top-level tables are the sections.
    let (_, top) = schema.iter().find(|(n, _)| n == "Config").expect("Config");
    for k in top {
        let heading = match k.as_str() {
            "node" | "api" | "vrrp" | "bgp" => format!("[{k}]"),
            other => format!("[[{other}]]"),
        };
        assert!(reference_keys(&heading).is_some(), "no section {heading}");
    }
}

/// A dual-stack node: an IPv4 and an IPv6 instance, one VIP each.
const DUAL: &str = r#"
[node]
name = "lb1"
interface = "eth1"

[[vrrp_instance]]
name = "v4"
router_id = 51
vips = ["web"]

[[vrrp_instance]]
name = "v6"
router_id = 61
vips = ["web6"]
unicast_peers = ["fd77::3"]

[[vip]]
name = "web"
address = "10.77.0.100"
port = 80

  [[vip.backend]]
  name = "web1"
  address = "10.77.0.21"

[[vip]]
name = "web6"
address = "fd77::100"
port = 80

  [[vip.backend]]
  name = "web1"
  address = "fd77::21"
"#;

#[test]
fn ipv6_vips_backends_and_peers_parse_beside_ipv4_ones() {
    let c = parse_str(DUAL).expect("dual-stack config parses");
    let v6 = c.vips().find(|v| v.name.get_ref() == "web6").expect("web6");
    assert_eq!(
        *v6.address.get_ref(),
        "fd77::100".parse::<std::net::IpAddr>().expect("a")
    );
    assert!(v6.backends[0].address.get_ref().is_ipv6());
    // One VRID for both families is fine (separate VRID spaces)...
    let same = DUAL.replace("router_id = 61", "router_id = 51");
    let c = parse_str(&same).expect("one VRID per family");
    let inst = c.instances();
    assert_eq!(inst.len(), 2);
    assert_eq!(
        inst[1].vrrp.unicast_peers[0].get_ref().to_string(),
        "fd77::3"
    );
}

#[test]
fn mixing_families_is_an_error_at_the_value_that_mixes_them() {
    assert_located(&[
        // A backend of the other family: at its address.
        (
            DUAL.replace("address = \"fd77::21\"", "address = \"10.77.0.23\""),
            (33, 13),
            "backend address 10.77.0.23 is IPv4 but vip \"web6\" (fd77::100) is IPv6",
        ),
        (
            DUAL.replace("address = \"10.77.0.21\"", "address = \"fd77::23\""),
            (24, 13),
            "is IPv6 but vip \"web\" (10.77.0.100) is IPv4",
        ),
        // One instance with both families: at the VIP of the other one.
        (
            DUAL.replace("vips = [\"web\"]", "vips = [\"web\", \"web6\"]")
                .replace("vips = [\"web6\"]\n", ""),
            (27, 11),
            "a VRRP instance is of one family",
        ),
        // A peer of the other family: at the peer.
        (
            DUAL.replace("[\"fd77::3\"]", "[\"10.77.0.3\"]"),
            (15, 18),
            "unicast peer 10.77.0.3 is IPv4, but vrrp_instance \"v6\" is IPv6",
        ),
        // VRRPv2 has no IPv6: at the instance.
        (
            DUAL.replace("router_id = 61", "router_id = 61\nversion = 2"),
            (11, 1),
            "VRRPv2 is IPv4 only",
        ),
        // An IPv6 multicast instance sends from its link-local address.
        (
            DUAL.replace("unicast_peers = [\"fd77::3\"]", "source = \"fd77::2\""),
            (15, 10),
            "is not link-local",
        ),
        // Addresses no service can have.
        (
            DUAL.replace("address = \"fd77::21\"", "address = \"fe80::21\""),
            (33, 13),
            "backend address fe80::21 is link-local",
        ),
        (
            DUAL.replace("address = \"fd77::100\"", "address = \"::ffff:10.77.0.9\""),
            (28, 11),
            "is IPv4-mapped",
        ),
        (
            DUAL.replace("address = \"fd77::100\"", "address = \"ff02::1\""),
            (28, 11),
            "is a multicast address",
        ),
        (
            DUAL.replace("address = \"10.77.0.21\"", "address = \"127.0.0.1\""),
            (24, 13),
            "is a loopback address",
        ),
        // IPv6 unicast peers of both kinds, or a source of the other kind.
        (
            DUAL.replace("[\"fd77::3\"]", "[\"fd77::3\", \"fe80::3\"]"),
            (15, 29),
            "mixes link-local and global unicast peers",
        ),
        (
            DUAL.replace(
                "unicast_peers = [\"fd77::3\"]",
                "unicast_peers = [\"fd77::3\"]\nsource = \"fe80::2\"",
            ),
            (16, 10),
            "are not of one kind",
        ),
        // A lone [vrrp] owns every VIP: both families cannot share it.
        (
            DUAL.replace(
                "[[vrrp_instance]]\nname = \"v4\"\nrouter_id = 51\nvips = [\"web\"]\n\n\
                 [[vrrp_instance]]\nname = \"v6\"\nrouter_id = 61\nvips = [\"web6\"]\n\
                 unicast_peers = [\"fd77::3\"]\n",
                "[vrrp]\nrouter_id = 51\n\n\n\n\n\n\n\n\n",
            ),
            (28, 11),
            "[vrrp] owns IPv4 VIP \"web\" (10.77.0.100) and IPv6 VIP \"web6\"",
        ),
    ]);
}

#[test]
fn tunnel_modes_that_cannot_work_are_errors_at_their_place() {
    let gue = GOOD.replace("mode = \"dsr\"", "mode = \"gue\"\ngue_port = 6080");
    let c = parse_str(&gue).expect("gue with a port");
    assert_eq!(c.vips[0].get_ref().mode, Mode::Gue);
    let ipip = GOOD.replace("mode = \"dsr\"", "mode = \"ipip\"");
    assert_eq!(
        parse_str(&ipip).expect("ipip").vips[0].get_ref().mode,
        Mode::Ipip
    );
    // An IPv4 VIP may have IPv6 backends once it encapsulates (IPv4 in IPv6).
    let four_in_six = ipip.replace("address = \"10.77.0.22\"", "address = \"fd78::22\"");
    parse_str(&four_in_six).expect("IPv4 in IPv6");
    assert_located(&[
        // GUE without its port: at the VIP.
        (
            GOOD.replace("mode = \"dsr\"", "mode = \"gue\""),
            (19, 1),
            "mode = \"gue\" needs gue_port",
        ),
        // A port for another mode: at the port.
        (
            GOOD.replace("mode = \"dsr\"", "mode = \"ipip\"\ngue_port = 6080"),
            (25, 12),
            "gue_port is for mode = \"gue\" only",
        ),
        (
            GOOD.replace("mode = \"dsr\"", "mode = \"gue\"\ngue_port = 0"),
            (25, 12),
            "gue_port must be 1-65535",
        ),
        // A mode nobody decapsulates: at the value.
        (
            GOOD.replace("mode = \"dsr\"", "mode = \"gre\""),
            (24, 8),
            "unknown variant `gre`",
        ),
        // DSR cannot reach a backend of the other family.
        (
            GOOD.replace("address = \"10.77.0.22\"", "address = \"fd78::22\""),
            (42, 13),
            "mode = \"ipip\" or \"gue\" reaches an IPv6 backend",
        ),
    ]);
}
