//! Reading keepalived.conf: its tokens (`#`/`!` comments, quoted strings,
//! braces), `include` resolved (globs relative to the including file), a
//! tree of statements, and the translation of `global_defs`, `vrrp_script`,
//! `vrrp_instance`, `vrrp_sync_group` and LVS `virtual_server` blocks.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::emit::set;
use super::{at, token, toml_string, At, Backend, Group, Health, ImportError, Instance, Loc};
use super::{Model, Report, Script, Vip, MAX_WEIGHT};

/// One statement: a keyword, its arguments, and a block when it has one.
#[derive(Debug, Clone)]
pub struct Node {
    /// The keyword.
    pub key: String,
    /// Arguments on the same line.
    pub args: Vec<String>,
    /// The block's statements (`{ ... }`).
    pub block: Option<Vec<Node>>,
    /// Where it starts.
    pub loc: Loc,
}

impl Node {
    fn text(&self) -> String {
        let mut s = self.key.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
    fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }
    /// The first child named `key`.
    fn child(&self, key: &str) -> Option<&Node> {
        self.children().iter().find(|c| c.key == key)
    }
    /// The first argument of the first child named `key`.
    fn child_arg(&self, key: &str) -> Option<&str> {
        self.child(key).and_then(|c| c.arg(0))
    }
    /// Its line and every line inside its block.
    fn locs(&self) -> Vec<Loc> {
        let mut v = vec![self.loc.clone()];
        for c in self.children() {
            v.extend(c.locs());
        }
        v
    }
}

#[derive(Debug, Clone)]
struct Tok {
    text: String,
    loc: Loc,
    /// First token of its line.
    first: bool,
}

fn tokenize(file: &str, text: &str, report: &mut Report) -> Vec<Tok> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let loc = Loc {
            file: file.to_string(),
            line: i + 1,
        };
        let mut toks: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if quoted {
                if c == '"' {
                    quoted = false;
                    toks.push(std::mem::take(&mut cur));
                } else if c == '\\' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else {
                    cur.push(c);
                }
                continue;
            }
            match c {
                '#' | '!' => break,
                '"' => {
                    if !cur.is_empty() {
                        toks.push(std::mem::take(&mut cur));
                    }
                    quoted = true;
                }
                '{' | '}' => {
                    if !cur.is_empty() {
                        toks.push(std::mem::take(&mut cur));
                    }
                    toks.push(c.to_string());
                }
                c if c.is_whitespace() => {
                    if !cur.is_empty() {
                        toks.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            toks.push(cur);
        }
        // Lines of braces alone carry nothing to report.
        let content = toks.iter().any(|t| t != "{" && t != "}");
        if content {
            report.saw(&loc, raw);
        }
        if let Some(first) = toks.first().filter(|_| content) {
            if first.starts_with('@') {
                report.skipped(
                    &loc,
                    raw,
                    "conditional configuration (keepalived -i ID): halb has one config per \
                     node; write each node's value into its own file",
                );
                continue;
            }
            if first.starts_with('$') {
                report.skipped(
                    &loc,
                    raw,
                    "keepalived parameter substitution: write the value itself",
                );
                continue;
            }
        }
        for (j, t) in toks.into_iter().enumerate() {
            out.push(Tok {
                text: t,
                loc: loc.clone(),
                first: j == 0,
            });
        }
    }
    out
}

/// Parses statements until a `}` or the end.
fn statements(toks: &[Tok], pos: &mut usize) -> Vec<Node> {
    let mut out = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        if t.text == "}" {
            *pos += 1;
            return out;
        }
        if t.text == "{" {
            // A block without a keyword: its contents belong to the parent.
            *pos += 1;
            out.extend(statements(toks, pos));
            continue;
        }
        let mut node = Node {
            key: t.text.clone(),
            args: Vec::new(),
            block: None,
            loc: t.loc.clone(),
        };
        *pos += 1;
        while *pos < toks.len() {
            let a = &toks[*pos];
            if a.text == "{" {
                *pos += 1;
                node.block = Some(statements(toks, pos));
                break;
            }
            if a.text == "}" || a.first {
                break;
            }
            node.args.push(a.text.clone());
            *pos += 1;
        }
        out.push(node);
    }
    out
}

/// Glob match with `*` and `?` (no path separators in the pattern's part).
fn wild(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The files an `include` names, relative to `base`'s directory.
fn include_targets(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    };
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
    match (name, p.parent()) {
        (Some(n), Some(dir)) if n.contains('*') || n.contains('?') => {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| {
                            f.file_name()
                                .is_some_and(|x| wild(&n, &x.to_string_lossy()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }
        _ => vec![p],
    }
}

/// Reads `path` into statements, resolving includes.
fn load(path: &Path, depth: usize, report: &mut Report) -> Result<Vec<Node>, ImportError> {
    let name = path.display().to_string();
    if depth > 8 {
        return Err(ImportError::IncludeDepth(name));
    }
    let text = super::read(path)?;
    let toks = tokenize(&name, &text, report);
    let mut pos = 0;
    let mut nodes = Vec::new();
    while pos < toks.len() {
        nodes.extend(statements(&toks, &mut pos));
    }
    expand(path, nodes, depth, report)
}

fn expand(
    path: &Path,
    nodes: Vec<Node>,
    depth: usize,
    report: &mut Report,
) -> Result<Vec<Node>, ImportError> {
    let mut out = Vec::new();
    for mut n in nodes {
        if n.key == "include" {
            let Some(pattern) = n.arg(0).map(str::to_string) else {
                report.skipped(&n.loc, &n.text(), "include without a file");
                continue;
            };
            let files = include_targets(path, &pattern);
            if files.is_empty() {
                report.skipped(&n.loc, &n.text(), "matches no file");
            }
            for f in files {
                if f.is_file() {
                    report.ok(&n.loc, &n.text(), format!("read {}", f.display()));
                    out.extend(load(&f, depth + 1, report)?);
                } else {
                    report.skipped(&n.loc, &n.text(), format!("{} does not exist", f.display()));
                }
            }
            continue;
        }
        if let Some(b) = n.block.take() {
            n.block = Some(expand(path, b, depth, report)?);
        }
        out.push(n);
    }
    Ok(out)
}

/// Seconds (keepalived allows fractions) as milliseconds.
fn secs_ms(s: &str) -> Option<u32> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && (0.0..=4_000_000.0).contains(&v)).then(|| (v * 1000.0).round() as u32)
}

fn num<T: std::str::FromStr>(n: &Node) -> Option<T> {
    n.arg(0)?.parse().ok()
}

/// An IPv4 address, with or without a prefix length.
fn ipv4(s: &str) -> Option<Ipv4Addr> {
    s.split('/').next()?.parse().ok()
}

/// Sets `key` to `value` (TOML text) as read from `c`, reporting it as
/// translated, or `c` as not understood (`what`) when there is no value.
fn put(
    keys: &mut Vec<(String, At<String>)>,
    c: &Node,
    key: &str,
    value: Option<String>,
    what: &str,
    report: &mut Report,
) {
    match value {
        Some(v) => {
            report.ok(&c.loc, &c.text(), format!("{key} = {v}"));
            set(keys, key, at(v, &c.loc));
        }
        None => bad(report, c, what),
    }
}

fn bad(report: &mut Report, n: &Node, what: &str) {
    report.skipped(&n.loc, &n.text(), format!("{what}: value not understood"));
}

/// Reads `path` (and what it includes) into `model`.
pub fn read_into(path: &Path, model: &mut Model, report: &mut Report) -> Result<(), ImportError> {
    let nodes = load(path, 0, report)?;
    let mut scripts: Vec<Script> = Vec::new();
    // Scripts first: instances may name them before their definition.
    for n in &nodes {
        if n.key == "vrrp_script" {
            scripts.push(script(n, report));
        }
    }
    for n in &nodes {
        match n.key.as_str() {
            "global_defs" => global_defs(n, model, report),
            "vrrp_script" => {}
            "vrrp_instance" => {
                let i = instance(n, &scripts, model, report);
                model.instances.push(i);
            }
            "vrrp_sync_group" => model.groups.push(group(n, report)),
            "virtual_server" => virtual_server(n, model, report),
            "virtual_server_group" => report.skipped(
                &n.loc,
                &n.text(),
                "virtual server groups have no halb equivalent: write one [[vip]] per address",
            ),
            "static_ipaddress" | "static_routes" | "static_rules" => report.skipped(
                &n.loc,
                &n.text(),
                "static addresses and routes are the system's job (ifupdown, systemd-networkd)",
            ),
            "vrrp_track_process" | "track_file" | "vrrp_track_file" | "track_bfd" => report
                .skipped(
                    &n.loc,
                    &n.text(),
                    "no such tracker in halb: use a track_script that runs the same test",
                ),
            "net_namespace" | "instance" | "linkbeat_use_polling" => report.skipped(
                &n.loc,
                &n.text(),
                "not needed: halb runs in the namespace it is started in",
            ),
            _ => report.skipped(&n.loc, &n.text(), "unknown top-level keyword"),
        }
    }
    // A vrrp_script that no instance tracks is not in the output.
    for n in nodes.iter().filter(|n| n.key == "vrrp_script") {
        let name = token(n.arg(0).unwrap_or("script"));
        let tracked = model
            .instances
            .iter()
            .any(|i| i.scripts.iter().any(|s| s.name == name));
        if !tracked {
            report.demote(&n.locs(), "no vrrp_instance tracks this script");
        }
    }
    Ok(())
}

fn global_defs(n: &Node, model: &mut Model, report: &mut Report) {
    report.ok(&n.loc, "global_defs", "read");
    for c in n.children() {
        match c.key.as_str() {
            "vrrp_version" => match num::<u8>(c) {
                Some(v @ 2..=3) => {
                    model.default_version = Some(at(v, &c.loc));
                    report.ok(
                        &c.loc,
                        &c.text(),
                        format!("version = {v} in every instance"),
                    );
                }
                _ => bad(report, c, "vrrp_version"),
            },
            "vrrp_garp_master_repeat" => match num::<u32>(c) {
                Some(v) if (1..=100).contains(&v) => {
                    set(
                        &mut model.instance_defaults,
                        "garp_count",
                        at(v.to_string(), &c.loc),
                    );
                    report.ok(&c.loc, &c.text(), format!("garp_count = {v}"));
                }
                _ => bad(report, c, "vrrp_garp_master_repeat"),
            },
            "vrrp_garp_master_refresh" => put(
                &mut model.instance_defaults,
                c,
                "garp_refresh_ms",
                c.arg(0).and_then(secs_ms).map(|v| v.to_string()),
                "vrrp_garp_master_refresh",
                report,
            ),
            "router_id" => report.skipped(
                &c.loc,
                &c.text(),
                "halb names the node by [node] name (default: the host name)",
            ),
            "notification_email"
            | "notification_email_from"
            | "smtp_server"
            | "smtp_connect_timeout"
            | "smtp_alert" => {
                report.skipped(
                    &c.loc,
                    &c.text(),
                    "halb sends no mail: use the notify hook or \
                     the Prometheus alerting rules (deploy/prometheus/halb-rules.yml)",
                );
                for m in c.children() {
                    report.skipped(&m.loc, &m.text(), "part of notification_email");
                }
            }
            "script_user" | "enable_script_security" => report.skipped(
                &c.loc,
                &c.text(),
                "halb runs scripts as its own user, inside its systemd sandbox",
            ),
            "vrrp_garp_interval" => put(
                &mut model.instance_defaults,
                c,
                "garp_interval_ms",
                c.arg(0)
                    .and_then(secs_ms)
                    .filter(|&v| v > 0)
                    .map(|v| v.to_string()),
                "vrrp_garp_interval",
                report,
            ),
            "vrrp_garp_master_delay" | "vrrp_gna_interval" => report.skipped(
                &c.loc,
                &c.text(),
                "halb sends its gratuitous ARP burst at takeover, garp_interval_ms apart",
            ),
            _ => report.skipped(
                &c.loc,
                &c.text(),
                "a global setting halb has no equivalent for",
            ),
        }
    }
}

fn script(n: &Node, report: &mut Report) -> Script {
    let name = token(n.arg(0).unwrap_or("script"));
    report.ok(
        &n.loc,
        &n.text(),
        format!("track_script {name:?} where an instance tracks it"),
    );
    let mut s = Script {
        name,
        loc: Some(n.loc.clone()),
        interval_ms: 1000,
        ..Default::default()
    };
    // keepalived's default interval: 1 s (halb's is 2 s).
    set(&mut s.keys, "interval_ms", at("1000".into(), &n.loc));
    let ended = |s: &mut Script| {
        // keepalived's default timeout is the interval; halb's must be below it.
        if s.timeout_ms.is_none() {
            let t = s.interval_ms.saturating_sub(1).max(1);
            s.timeout_ms = Some(t);
            let loc = s.loc.clone().unwrap_or_default();
            set(&mut s.keys, "timeout_ms", at(t.to_string(), &loc));
        }
    };
    for c in n.children() {
        match c.key.as_str() {
            "script" => {
                let cmd = c.args.join(" ");
                set(&mut s.keys, "script", at(toml_string(&cmd), &c.loc));
                if cmd.contains("haproxy") {
                    report.adjusted(
                        &c.loc,
                        &c.text(),
                        "this script checks HAProxy, which halb replaces: once HAProxy is gone \
                         it fails for ever; remove the track_script or point it at halb \
                         (e.g. `systemctl is-active halb`)",
                    );
                } else {
                    report.ok(&c.loc, &c.text(), "script (run with /bin/sh -c)");
                }
            }
            "interval" => match c.arg(0).and_then(secs_ms).filter(|&v| v > 0) {
                Some(ms) => {
                    s.interval_ms = ms;
                    set(&mut s.keys, "interval_ms", at(ms.to_string(), &c.loc));
                    report.ok(&c.loc, &c.text(), format!("interval_ms = {ms}"));
                }
                None => bad(report, c, "interval"),
            },
            "timeout" => match c.arg(0).and_then(secs_ms).filter(|&v| v > 0) {
                Some(ms) => {
                    s.timeout_ms = Some(ms);
                    set(&mut s.keys, "timeout_ms", at(ms.to_string(), &c.loc));
                    report.ok(&c.loc, &c.text(), format!("timeout_ms = {ms}"));
                }
                None => bad(report, c, "timeout"),
            },
            "rise" | "fall" => match num::<u32>(c).filter(|&v| v > 0) {
                Some(v) => {
                    set(&mut s.keys, &c.key, at(v.to_string(), &c.loc));
                    report.ok(&c.loc, &c.text(), format!("{} = {v}", c.key));
                }
                None => bad(report, c, &c.key),
            },
            "weight" => match num::<i32>(c).filter(|v| (-253..=253).contains(v)) {
                Some(v) => {
                    set(&mut s.keys, "weight", at(v.to_string(), &c.loc));
                    let note = if c.arg(1) == Some("reverse") {
                        report.skipped(&c.loc, "reverse", "halb has no reversed weights");
                        "weight (without reverse)".to_string()
                    } else {
                        format!("weight = {v}")
                    };
                    report.ok(&c.loc, &c.text(), note);
                }
                None => bad(report, c, "weight"),
            },
            "user" => report.skipped(
                &c.loc,
                &c.text(),
                "halb runs scripts as its own user, inside its systemd sandbox",
            ),
            "init_fail" => report.adjusted(
                &c.loc,
                &c.text(),
                "halb counts a script as failing until its first success anyway",
            ),
            _ => report.skipped(&c.loc, &c.text(), "a vrrp_script setting halb lacks"),
        }
    }
    ended(&mut s);
    s
}

fn list_items(n: &Node) -> Vec<(String, Loc, Vec<String>)> {
    n.children()
        .iter()
        .map(|c| (c.key.clone(), c.loc.clone(), c.args.clone()))
        .collect()
}

fn instance(n: &Node, scripts: &[Script], model: &mut Model, report: &mut Report) -> Instance {
    let name = token(n.arg(0).unwrap_or("VI"));
    report.ok(&n.loc, &n.text(), format!("[[vrrp_instance]] {name:?}"));
    let mut inst = Instance {
        name,
        loc: Some(n.loc.clone()),
        locs: n.locs(),
        ..Default::default()
    };
    let mut notify_set: Option<Loc> = None;
    let mut master_state: Option<Loc> = None;
    for c in n.children() {
        let text = c.text();
        match c.key.as_str() {
            "state" => {
                if c.arg(0) == Some("MASTER") {
                    master_state = Some(c.loc.clone());
                }
                report.adjusted(
                    &c.loc,
                    &text,
                    "halb starts every instance as BACKUP and elects by priority: give the node \
                     that should be MASTER the higher priority",
                )
            }
            "interface" => match c.arg(0) {
                Some(i) => {
                    inst.interface = Some(i.to_string());
                    set(&mut inst.keys, "interface", at(toml_string(i), &c.loc));
                    if model.interface.is_none() {
                        model.interface = Some(at(i.to_string(), &c.loc));
                    }
                    report.ok(&c.loc, &text, "interface");
                }
                None => bad(report, c, "interface"),
            },
            "virtual_router_id" => put(
                &mut inst.keys,
                c,
                "router_id",
                num::<u8>(c).filter(|&v| v > 0).map(|v| v.to_string()),
                "virtual_router_id",
                report,
            ),
            "priority" => put(
                &mut inst.keys,
                c,
                "priority",
                num::<u8>(c).filter(|&v| v > 0).map(|v| v.to_string()),
                "priority",
                report,
            ),
            "advert_int" => match c.arg(0).and_then(secs_ms).filter(|&v| v >= 10) {
                Some(ms) => {
                    inst.advert_ms = Some(at(ms, &c.loc));
                    report.ok(&c.loc, &text, format!("advert_interval_ms = {ms}"));
                }
                None => bad(report, c, "advert_int"),
            },
            "version" => match num::<u8>(c) {
                Some(v @ 2..=3) => {
                    inst.version = Some(v);
                    report.ok(&c.loc, &text, format!("version = {v}"));
                }
                _ => bad(report, c, "version"),
            },
            "nopreempt" => {
                set(&mut inst.keys, "preempt", at("false".into(), &c.loc));
                report.ok(&c.loc, &text, "preempt = false");
            }
            "preempt" => {
                set(&mut inst.keys, "preempt", at("true".into(), &c.loc));
                report.ok(&c.loc, &text, "preempt = true");
            }
            "preempt_delay" => put(
                &mut inst.keys,
                c,
                "preempt_delay_ms",
                c.arg(0).and_then(secs_ms).map(|v| v.to_string()),
                "preempt_delay",
                report,
            ),
            "unicast_src_ip" => match c.arg(0).and_then(ipv4) {
                Some(a) => {
                    set(&mut inst.keys, "source", at(format!("\"{a}\""), &c.loc));
                    report.ok(&c.loc, &text, format!("source = \"{a}\""));
                }
                None => bad(report, c, "unicast_src_ip"),
            },
            "unicast_peer" => {
                let mut peers = Vec::new();
                report.ok(&c.loc, &text, "unicast_peers");
                for (a, loc, _) in list_items(c) {
                    match ipv4(&a) {
                        Some(ip) => {
                            peers.push(format!("\"{ip}\""));
                            report.ok(&loc, &a, "a unicast peer");
                        }
                        None => report.skipped(&loc, &a, "not an IPv4 address"),
                    }
                }
                set(
                    &mut inst.keys,
                    "unicast_peers",
                    at(format!("[{}]", peers.join(", ")), &c.loc),
                );
            }
            "authentication" => {
                report.ok(&c.loc, &text, "authentication");
                let mut kind = None;
                for a in c.children() {
                    match a.key.as_str() {
                        "auth_type" => {
                            kind = a.arg(0).map(str::to_string);
                            if a.arg(0) == Some("PASS") {
                                report.ok(&a.loc, &a.text(), "simple password (VRRPv2)");
                            } else {
                                report.skipped(
                                    &a.loc,
                                    &a.text(),
                                    "only auth_type PASS exists in halb (AH is not implemented)",
                                );
                            }
                        }
                        "auth_pass" => match a.arg(0) {
                            Some(p) => {
                                inst.auth_pass = Some(at(p.to_string(), &a.loc));
                                report.ok(&a.loc, "auth_pass", "auth_pass");
                            }
                            None => bad(report, a, "auth_pass"),
                        },
                        _ => report.skipped(&a.loc, &a.text(), "unknown authentication setting"),
                    }
                }
                if kind.as_deref().is_some_and(|k| k != "PASS") {
                    inst.auth_pass = None;
                }
            }
            "virtual_ipaddress" => {
                report.ok(&c.loc, &text, "the addresses this instance owns");
                for (a, loc, opts) in list_items(c) {
                    match ipv4(&a) {
                        Some(ip) => {
                            inst.addresses.push(at(ip, &loc));
                            if opts.is_empty() {
                                report.ok(&loc, &a, "owned by this instance (added as /32)");
                            } else {
                                report.adjusted(
                                    &loc,
                                    &format!("{a} {}", opts.join(" ")),
                                    "owned by this instance; halb adds it as /32 on the \
                                     instance's interface (dev, label, scope, brd are not used)",
                                );
                            }
                        }
                        None => report.skipped(
                            &loc,
                            &a,
                            "not an IPv4 address (IPv6 VIPs are not supported yet)",
                        ),
                    }
                }
            }
            "virtual_ipaddress_excluded" => {
                report.skipped(
                    &c.loc,
                    &text,
                    "addresses not in the adverts: halb has none; list them under virtual_ipaddress",
                );
                for m in c.children() {
                    report.skipped(&m.loc, &m.text(), "part of virtual_ipaddress_excluded");
                }
            }
            "track_interface" => {
                let mut names = Vec::new();
                report.ok(&c.loc, &text, "track_interfaces");
                for (i, loc, opts) in list_items(c) {
                    let quoted = toml_string(&i);
                    if !names.contains(&quoted) {
                        names.push(quoted);
                    }
                    if opts.is_empty() {
                        report.ok(&loc, &i, "tracked: down → FAULT");
                    } else {
                        report.adjusted(
                            &loc,
                            &format!("{i} {}", opts.join(" ")),
                            "tracked, but halb has no interface weights: down → FAULT",
                        );
                    }
                }
                set(
                    &mut inst.keys,
                    "track_interfaces",
                    at(format!("[{}]", names.join(", ")), &c.loc),
                );
            }
            "track_script" => {
                report.ok(&c.loc, &text, "track_script");
                for (sname, loc, opts) in list_items(c) {
                    let wanted = token(&sname);
                    match scripts.iter().find(|s| s.name == wanted) {
                        Some(s) => {
                            let mut s = s.clone();
                            if opts.first().map(String::as_str) == Some("weight") {
                                if let Some(w) = opts.get(1).and_then(|w| w.parse::<i32>().ok()) {
                                    set(&mut s.keys, "weight", at(w.to_string(), &loc));
                                }
                            }
                            report.ok(
                                &loc,
                                &sname,
                                format!("[[vrrp_instance.track_script]] {wanted:?}"),
                            );
                            inst.scripts.push(s);
                        }
                        None => report.skipped(&loc, &sname, "no vrrp_script of this name"),
                    }
                }
            }
            "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                notify_line(c, &mut inst.keys, &mut notify_set, report);
            }
            "garp_master_repeat" => put(
                &mut inst.keys,
                c,
                "garp_count",
                num::<u32>(c)
                    .filter(|v| (1..=100).contains(v))
                    .map(|v| v.to_string()),
                "garp_master_repeat",
                report,
            ),
            "garp_master_refresh" => put(
                &mut inst.keys,
                c,
                "garp_refresh_ms",
                c.arg(0).and_then(secs_ms).map(|v| v.to_string()),
                "garp_master_refresh",
                report,
            ),
            "garp_master_delay"
            | "garp_master_refresh_repeat"
            | "garp_lower_prio_delay"
            | "garp_lower_prio_repeat" => report.skipped(
                &c.loc,
                &text,
                "halb sends its gratuitous ARP burst at takeover, garp_interval_ms apart",
            ),
            "mcast_src_ip" => match c.arg(0).and_then(ipv4) {
                Some(a) => {
                    if !inst.keys.iter().any(|(k, _)| k == "source") {
                        set(&mut inst.keys, "source", at(format!("\"{a}\""), &c.loc));
                    }
                    report.ok(&c.loc, &text, format!("source = \"{a}\""));
                }
                None => bad(report, c, "mcast_src_ip"),
            },
            "dont_track_primary" => report.skipped(
                &c.loc,
                &text,
                "halb sends adverts from the interface's address (or `source`)",
            ),
            "use_vmac" | "vmac_xmit_base" => report.skipped(
                &c.loc,
                &text,
                "halb keeps the interface's MAC and moves addresses with gratuitous ARP",
            ),
            "smtp_alert" => report.skipped(&c.loc, &text, "halb sends no mail"),
            _ => {
                report.skipped(
                    &c.loc,
                    &text,
                    "a vrrp_instance setting halb has no equivalent for",
                );
                for m in c.children() {
                    report.skipped(&m.loc, &m.text(), format!("part of {}", c.key));
                }
            }
        }
    }
    if let Some(l) = master_state {
        if !inst.keys.iter().any(|(k, _)| k == "priority") {
            // keepalived gives a MASTER without a priority the owner's 255.
            set(&mut inst.keys, "priority", at("255".into(), &l));
            report.adjusted(
                &l,
                "state MASTER",
                "no priority given: priority = 255, as keepalived",
            );
        }
    }
    inst
}

/// A notify line: `notify PATH` (no arguments) becomes halb's hook, which
/// halb runs with the new state as its one argument; `notify_master` and
/// the like (a command per state, often with arguments) have no such
/// equivalent and are reported with what to write instead.
fn notify_line(
    c: &Node,
    keys: &mut Vec<(String, At<String>)>,
    first: &mut Option<Loc>,
    report: &mut Report,
) {
    let text = c.text();
    if c.key != "notify" {
        report.skipped(
            &c.loc,
            &text,
            "halb runs one hook, `notify = PATH`, on every change with the new state (MASTER, \
             BACKUP or FAULT) as its argument and in HALB_STATE; write a script that runs this \
             command when $1 is the state it was for",
        );
        return;
    }
    if c.args.len() != 1 {
        report.skipped(
            &c.loc,
            &text,
            "halb runs the hook as a path, without a shell or arguments: put this command in \
             a script and name the script",
        );
        return;
    }
    if let Some(f) = first {
        report.skipped(
            &c.loc,
            &text,
            format!("halb has one notify hook (taken from {f})"),
        );
        return;
    }
    set(keys, "notify", at(toml_string(&c.args[0]), &c.loc));
    *first = Some(c.loc.clone());
    report.adjusted(
        &c.loc,
        &text,
        "notify: halb calls it with one argument, the new state (MASTER, BACKUP or FAULT); \
         keepalived passed the type, name, state and priority: check the script reads $1",
    );
}

fn group(n: &Node, report: &mut Report) -> Group {
    let name = token(n.arg(0).unwrap_or("G"));
    report.ok(&n.loc, &n.text(), format!("[[vrrp_sync_group]] {name:?}"));
    let mut g = Group {
        name,
        loc: Some(n.loc.clone()),
        ..Default::default()
    };
    for c in n.children() {
        let text = c.text();
        match c.key.as_str() {
            "group" => {
                report.ok(&c.loc, &text, "instances");
                for m in c.children() {
                    report.ok(&m.loc, &m.text(), "members");
                    for name in std::iter::once(&m.key).chain(&m.args) {
                        g.instances.push(at(token(name), &m.loc));
                    }
                }
                for a in &c.args {
                    g.instances.push(at(token(a), &c.loc));
                }
            }
            "notify" | "notify_master" | "notify_backup" | "notify_fault" => {
                let mut keys = Vec::new();
                let mut first = g.notify.as_ref().map(|n| n.loc.clone());
                notify_line(c, &mut keys, &mut first, report);
                if let Some((_, v)) = keys.into_iter().next() {
                    g.notify = Some(v);
                }
            }
            _ => report.skipped(
                &c.loc,
                &text,
                "a sync-group setting halb has no equivalent for",
            ),
        }
    }
    g
}

fn virtual_server(n: &Node, model: &mut Model, report: &mut Report) {
    let text = n.text();
    let (Some(addr), Some(port)) = (
        n.arg(0).and_then(ipv4),
        n.arg(1)
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p > 0),
    ) else {
        report.skipped(
            &n.loc,
            &text,
            "only `virtual_server ADDRESS PORT` (IPv4) has a halb equivalent (not fwmark, \
             groups or IPv6)",
        );
        skip_all(n, report, "part of a virtual_server that is not translated");
        return;
    };
    // Mode first: a NAT service is left out whole; TUN becomes IP in IP
    // (or GUE, with `tun_type gue` and its `tun_port`).
    let kind = n.child_arg("lb_kind").unwrap_or("NAT");
    let tun_type = n.child_arg("tun_type").unwrap_or("ipip");
    let tun_port = n
        .child_arg("tun_port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let mode = match (kind, tun_type, tun_port) {
        ("DR", _, _) => Some(("dsr", None)),
        ("TUN", "ipip", _) => Some(("ipip", None)),
        ("TUN", "gue", Some(p)) => Some(("gue", Some(p))),
        _ => None,
    };
    let Some((mode, gue_port)) = mode else {
        let why = match kind {
            "TUN" if tun_type == "gue" => {
                "lb_kind TUN with tun_type gue needs a tun_port (the backends' GUE port)"
                    .to_string()
            }
            "TUN" => format!(
                "lb_kind TUN with tun_type {tun_type}: halb encapsulates in IP in IP or GUE only"
            ),
            _ => format!(
                "lb_kind {kind}: halb forwards by direct server return (lb_kind DR) or \
                 encapsulation (lb_kind TUN) only; NAT does not exist yet{}",
                if n.child("lb_kind").is_some() {
                    ""
                } else {
                    " (no lb_kind given: keepalived's default is NAT)"
                }
            ),
        };
        report.skipped(&n.loc, &text, why);
        skip_all(
            n,
            report,
            &format!("part of an lb_kind {kind} virtual_server"),
        );
        return;
    };
    report.ok(&n.loc, &text, "[[vip]]");
    let mut vip = Vip {
        name: token(&format!("vs-{addr}-{port}")),
        address: addr,
        port,
        protocol: "tcp",
        mode,
        gue_port,
        source_hash: None,
        loc: n.loc.clone(),
        health: Health::default(),
        backends: Vec::new(),
        locs: n.locs(),
    };
    let mut delay_loop: Option<At<u32>> = None;
    let inherit = Inherit::from(n, &Inherit::default());
    for c in n.children() {
        let t = c.text();
        match c.key.as_str() {
            "lb_kind" => report.ok(&c.loc, &t, format!("mode = \"{mode}\"")),
            "tun_type" => report.ok(&c.loc, &t, format!("mode = \"{mode}\"")),
            "tun_port" => report.ok(&c.loc, &t, "gue_port"),
            "protocol" => match c.arg(0) {
                Some("TCP") => report.ok(&c.loc, &t, "protocol = \"tcp\""),
                Some("UDP") => {
                    vip.protocol = "udp";
                    report.ok(&c.loc, &t, "protocol = \"udp\"");
                }
                _ => bad(report, c, "protocol"),
            },
            "lb_algo" | "lvs_sched" if matches!(c.arg(0), Some("sh") | Some("mh")) => {
                vip.source_hash = Some(c.loc.clone());
                report.adjusted(
                    &c.loc,
                    &t,
                    "hash = \"source-ip\": IPVS sh/mh hash the client address; halb's weighted \
                     Maglev over the source address keeps each client on one backend too",
                );
            }
            "lb_algo" | "lvs_sched" => report.adjusted(
                &c.loc,
                &t,
                "halb balances with weighted Maglev hashing: flows spread by weight like wrr, \
                 and every node picks the same backend for a flow",
            ),
            "persistence_timeout" => {
                vip.source_hash = Some(c.loc.clone());
                report.adjusted(
                    &c.loc,
                    &t,
                    "hash = \"source-ip\": a client address stays on its backend for as long as \
                     the backend set does not change (no timeout)",
                );
            }
            "persistence_granularity" => {
                report.skipped(&c.loc, &t, "halb's source-IP affinity is per address (/32)")
            }
            "delay_loop" => match c.arg(0).and_then(secs_ms).filter(|&v| v > 0) {
                Some(ms) => {
                    delay_loop = Some(at(ms, &c.loc));
                    report.ok(&c.loc, &t, format!("health interval_ms = {ms}"));
                }
                None => bad(report, c, "delay_loop"),
            },
            "real_server" => real_server(c, &mut vip, &inherit, report),
            "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" => {
                report.ok(&c.loc, &t, "a default for the checkers of its real servers")
            }
            "sorry_server" | "sorry_server_inhibit" => report.skipped(
                &c.loc,
                &t,
                "no sorry server in halb: with no healthy backend the VIP's packets are dropped \
                 and, in a VRRP pair, the node lowers its priority",
            ),
            "virtualhost" => report.adjusted(
                &c.loc,
                &t,
                "health host = this name (halb sends it as the Host header)",
            ),
            "quorum" | "quorum_up" | "quorum_down" | "hysteresis" | "alpha" | "omega"
            | "inhibit_on_failure" | "ha_suspend" | "ops" | "warmup" => report.skipped(
                &c.loc,
                &t,
                "a checker or LVS option halb has no equivalent for",
            ),
            _ => {
                report.skipped(
                    &c.loc,
                    &t,
                    "a virtual_server setting halb has no equivalent for",
                );
                skip_all(c, report, &format!("part of {}", c.key));
            }
        }
    }
    if let Some(host) = n.child("virtualhost") {
        if let Some(h) = host.arg(0) {
            set(&mut vip.health.keys, "host", at(toml_string(h), &host.loc));
        }
    }
    if vip.health.kind.is_some() {
        let interval = delay_loop.unwrap_or_else(|| at(60_000, &n.loc));
        vip.health.interval_ms = Some(interval);
    }
    model.vips.push(vip);
}

fn skip_all(n: &Node, report: &mut Report, why: &str) {
    for c in n.children() {
        report.skipped(&c.loc, &c.text(), why);
        skip_all(c, report, why);
    }
}

/// Checker settings a block gives its checkers (`connect_timeout`, `retry`).
#[derive(Debug, Clone, Default)]
struct Inherit {
    connect_timeout: Option<(u32, Loc)>,
    retry: Option<(u32, Loc)>,
}

impl Inherit {
    fn from(n: &Node, parent: &Inherit) -> Inherit {
        let mut i = parent.clone();
        for c in n.children() {
            match c.key.as_str() {
                "connect_timeout" => {
                    if let Some(ms) = c.arg(0).and_then(secs_ms).filter(|&v| v > 0) {
                        i.connect_timeout = Some((ms, c.loc.clone()));
                    }
                }
                "retry" | "nb_get_retry" => {
                    if let Some(r) = num::<u32>(c) {
                        i.retry = Some((r, c.loc.clone()));
                    }
                }
                _ => {}
            }
        }
        i
    }
}

fn real_server(n: &Node, vip: &mut Vip, inherit: &Inherit, report: &mut Report) {
    let text = n.text();
    let Some(addr) = n.arg(0).and_then(ipv4) else {
        report.skipped(&n.loc, &text, "not an IPv4 real server");
        skip_all(n, report, "part of a real_server that is not translated");
        return;
    };
    let port = n.arg(1).and_then(|p| p.parse::<u16>().ok());
    if port.is_some_and(|p| p != vip.port) {
        report.adjusted(
            &n.loc,
            &text,
            format!(
                "[[vip.backend]]; direct server return keeps the VIP's port: the backend must \
                 listen on {}:{} (its port {} is not used)",
                vip.address,
                vip.port,
                port.unwrap_or(0)
            ),
        );
    } else {
        report.ok(&n.loc, &text, "[[vip.backend]]");
    }
    let mut b = Backend {
        name: token(&format!("rs-{addr}")),
        address: addr,
        weight: 1,
        loc: n.loc.clone(),
        commented: None,
    };
    let first_check = vip.health.kind.is_none();
    for c in n.children() {
        let t = c.text();
        match c.key.as_str() {
            "weight" => match num::<u32>(c) {
                Some(w) if w <= MAX_WEIGHT => {
                    b.weight = w;
                    report.ok(&c.loc, &t, format!("weight = {w}"));
                }
                Some(w) => {
                    b.weight = MAX_WEIGHT;
                    report.adjusted(
                        &c.loc,
                        &t,
                        format!("weight = {MAX_WEIGHT} (was {w}; halb's maximum)"),
                    );
                }
                None => bad(report, c, "weight"),
            },
            "TCP_CHECK" | "HTTP_GET" => {
                checker(c, vip, first_check, &Inherit::from(n, inherit), report)
            }
            "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" => {
                report.ok(&c.loc, &t, "a default for this real server's checker")
            }
            "SSL_GET" | "MISC_CHECK" | "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK"
            | "BFD_CHECK" | "FILE_CHECK" => {
                report.skipped(
                    &c.loc,
                    &t,
                    "halb checks with tcp (connect) or http (GET, status): this checker has no \
                     equivalent; without a check the backend counts as up",
                );
                skip_all(c, report, &format!("part of {}", c.key));
            }
            "inhibit_on_failure" | "notify_up" | "notify_down" | "uthreshold" | "lthreshold" => {
                report.skipped(
                    &c.loc,
                    &t,
                    "a real_server option halb has no equivalent for",
                )
            }
            _ => {
                report.skipped(
                    &c.loc,
                    &t,
                    "a real_server setting halb has no equivalent for",
                );
                skip_all(c, report, &format!("part of {}", c.key));
            }
        }
    }
    let has_check = n
        .children()
        .iter()
        .any(|c| matches!(c.key.as_str(), "TCP_CHECK" | "HTTP_GET"));
    if !has_check && vip.health.kind.is_some() {
        report.adjusted(
            &n.loc,
            &text,
            "no checker here, but halb checks every backend of a VIP: this one is checked like \
             the others",
        );
    }
    vip.backends.push(b);
}

/// A TCP_CHECK or HTTP_GET: the VIP's check comes from its first real
/// server's; later ones are reported as the same check.
fn checker(n: &Node, vip: &mut Vip, first: bool, inherit: &Inherit, report: &mut Report) {
    let text = n.text();
    if !first {
        report.adjusted(
            &n.loc,
            &text,
            "halb checks every backend of a VIP the same way: the first real server's check \
             is used for all",
        );
        for c in n.children() {
            report.adjusted(&c.loc, &c.text(), "see the VIP's check");
            for d in c.children() {
                report.adjusted(&d.loc, &d.text(), "see the VIP's check");
            }
        }
        return;
    }
    let kind = if n.key == "HTTP_GET" { "http" } else { "tcp" };
    vip.health.kind = Some(at(kind, &n.loc));
    report.ok(&n.loc, &text, format!("[vip.health] kind = \"{kind}\""));
    let mut retry: Option<(u32, Loc)> = None;
    let mut urls = 0;
    for c in n.children() {
        let t = c.text();
        match c.key.as_str() {
            "connect_timeout" => match c.arg(0).and_then(secs_ms).filter(|&v| v > 0) {
                Some(ms) => {
                    vip.health.timeout_ms = Some(at(ms, &c.loc));
                    report.ok(&c.loc, &t, format!("timeout_ms = {ms}"));
                }
                None => bad(report, c, "connect_timeout"),
            },
            "connect_port" => put(
                &mut vip.health.keys,
                c,
                "port",
                num::<u16>(c).map(|v| v.to_string()),
                "connect_port",
                report,
            ),
            "retry" | "nb_get_retry" => match num::<u32>(c) {
                Some(r) => {
                    retry = Some((r, c.loc.clone()));
                    report.adjusted(
                        &c.loc,
                        &t,
                        format!("fall = {} (the first failure and {r} retries)", r + 1),
                    );
                }
                None => bad(report, c, "retry"),
            },
            "delay_before_retry" => report.adjusted(
                &c.loc,
                &t,
                "halb checks again at the VIP's interval, not sooner",
            ),
            "url" => {
                urls += 1;
                if urls > 1 {
                    report.skipped(&c.loc, &t, "halb checks one URL per VIP: the first is used");
                    skip_all(c, report, "part of a second url");
                    continue;
                }
                report.ok(&c.loc, &t, "the checked URL");
                for u in c.children() {
                    let ut = u.text();
                    match u.key.as_str() {
                        "path" => match u.arg(0).filter(|p| p.starts_with('/')) {
                            Some(p) => {
                                set(&mut vip.health.keys, "path", at(toml_string(p), &u.loc));
                                report.ok(&u.loc, &ut, "path");
                            }
                            None => bad(report, u, "path"),
                        },
                        "status_code" => match num::<u16>(u).filter(|s| (100..=599).contains(s)) {
                            Some(s) => {
                                set(
                                    &mut vip.health.keys,
                                    "expect_status",
                                    at(s.to_string(), &u.loc),
                                );
                                report.ok(&u.loc, &ut, format!("expect_status = {s}"));
                            }
                            None => report.skipped(
                                &u.loc,
                                &ut,
                                "halb expects one status code (not a range or list)",
                            ),
                        },
                        "digest" | "regex" | "regex_no_match" | "regex_options" => report.skipped(
                            &u.loc,
                            &ut,
                            "halb checks the status code only, not the body",
                        ),
                        _ => {
                            report.skipped(&u.loc, &ut, "a url setting halb has no equivalent for")
                        }
                    }
                }
            }
            "bindto" | "bind_port" | "bind_if" | "fwmark" | "warmup" | "http_protocol"
            | "enable_sni" | "alpha" | "delay_loop" => report.skipped(
                &c.loc,
                &t,
                "halb probes from the node's own address with default settings",
            ),
            _ => {
                report.skipped(&c.loc, &t, "a checker setting halb has no equivalent for");
                skip_all(c, report, &format!("part of {}", c.key));
            }
        }
    }
    // keepalived's defaults: retry 1 (so two failures), connect_timeout 5 s;
    // the real server's or virtual server's values when they set them.
    let retry = retry.or_else(|| inherit.retry.clone());
    let fall = retry.as_ref().map_or(2, |(r, _)| r + 1).min(100);
    let loc = retry.map_or_else(|| n.loc.clone(), |(_, l)| l);
    set(&mut vip.health.keys, "fall", at(fall.to_string(), &loc));
    set(&mut vip.health.keys, "rise", at("1".into(), &n.loc));
    if vip.health.timeout_ms.is_none() {
        let (ms, l) = inherit
            .connect_timeout
            .clone()
            .unwrap_or_else(|| (5000, n.loc.clone()));
        vip.health.timeout_ms = Some(at(ms, &l));
    }
    if kind == "http" && !vip.health.keys.iter().any(|(k, _)| k == "expect_status") {
        report.adjusted(
            &n.loc,
            &text,
            "no status_code: keepalived accepted any 2xx, halb expects exactly 200",
        );
    }
}
