//! Reading haproxy.cfg: sections (`global`, `defaults`, `frontend`,
//! `backend`, `listen`, and the rest), `bind`, `mode`, `balance`, `server`
//! and `default-server` with their check settings, `option httpchk` and
//! `http-check expect status`, `timeout check`, and a report of everything
//! layer 7 (ACLs, rules, TLS, stick tables) that halb does not do.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use super::emit::set;
use super::MAX_WEIGHT;
use super::{at, token, toml_string, At, Backend, Health, ImportError, Loc, Model, Report, Vip};

/// One line: its words (comments and quotes handled) and where it is.
#[derive(Debug, Clone)]
struct Line {
    words: Vec<String>,
    loc: Loc,
}

impl Line {
    fn text(&self) -> String {
        self.words
            .join(" ")
            .replace('\r', "\\r")
            .replace('\n', "\\n")
            .replace('\t', "\\t")
    }
    fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
}

fn split(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            // HAProxy's escapes: \r \n \t, and a backslash before any
            // other character keeps that character (`\ ` a space).
            (Some(_), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(match n {
                        'r' => '\r',
                        'n' => '\n',
                        't' => '\t',
                        c => c,
                    });
                    any = true;
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// HAProxy time: a number with an optional unit (default milliseconds).
fn time_ms(s: &str) -> Option<u32> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mul = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "us" => return u32::try_from(n / 1000).ok(),
        _ => return None,
    };
    u32::try_from(n.checked_mul(mul)?).ok()
}

/// Server or default-server check settings.
#[derive(Debug, Clone, Default)]
struct CheckOpts {
    check: Option<Loc>,
    inter: Option<At<u32>>,
    rise: Option<At<u32>>,
    fall: Option<At<u32>>,
    port: Option<At<u16>>,
    weight: Option<At<u32>>,
}

/// What a `defaults` section sets for the sections after it.
#[derive(Debug, Clone, Default)]
struct Defaults {
    mode_http: Option<Loc>,
    balance_source: Option<Loc>,
    httpchk: Option<At<String>>,
    expect_status: Option<At<u16>>,
    timeout_check: Option<At<u32>>,
    server: CheckOpts,
    /// Host header of the HTTP check.
    host: Option<At<String>>,
}

/// A proxy section being read.
#[derive(Debug, Default)]
struct Proxy {
    kind: String,
    name: String,
    loc: Option<Loc>,
    binds: Vec<(Option<Ipv4Addr>, u16, Loc)>,
    default_backend: Option<At<String>>,
    d: Defaults,
    servers: Vec<Server>,
}

/// One `server` line.
#[derive(Debug)]
struct Server {
    name: String,
    addr: Ipv4Addr,
    port: Option<u16>,
    opts: CheckOpts,
    loc: Loc,
    /// Written commented out, with this reason.
    comment: Option<String>,
}

/// Reads `path` into `model`: every frontend or listen with a `bind` on
/// an IPv4 address (or, for `*`, each VRRP address from keepalived.conf)
/// and a backend with servers becomes a [[vip]].
pub fn read_into(path: &Path, model: &mut Model, report: &mut Report) -> Result<(), ImportError> {
    let file = path.display().to_string();
    let text = super::read(path)?;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let words = split(raw);
        if words.is_empty() {
            continue;
        }
        let loc = Loc {
            file: file.clone(),
            line: i + 1,
        };
        report.saw(&loc, raw);
        lines.push(Line { words, loc });
    }

    let mut defaults = Defaults::default();
    let mut proxies: Vec<Proxy> = Vec::new();
    let mut cur: Option<Proxy> = None;
    let mut section = String::new();
    for l in &lines {
        let w0 = l.word(0).unwrap_or_default();
        if matches!(
            w0,
            "global"
                | "defaults"
                | "frontend"
                | "backend"
                | "listen"
                | "peers"
                | "resolvers"
                | "userlist"
                | "cache"
                | "program"
                | "mailers"
                | "http-errors"
                | "ring"
                | "crt-store"
                | "traces"
        ) {
            if let Some(p) = cur.take() {
                proxies.push(p);
            }
            section = w0.to_string();
            match w0 {
                "global" => report.skipped(
                    &l.loc,
                    &l.text(),
                    "process settings: halb runs under systemd with its own (see the unit)",
                ),
                "defaults" => {
                    // A new defaults section starts from scratch.
                    defaults = Defaults::default();
                    report.ok(&l.loc, &l.text(), "defaults for the sections below");
                }
                "frontend" | "backend" | "listen" => {
                    let mut p = Proxy {
                        kind: w0.to_string(),
                        name: l.word(1).unwrap_or("proxy").to_string(),
                        loc: Some(l.loc.clone()),
                        d: defaults.clone(),
                        ..Default::default()
                    };
                    if w0 == "backend" {
                        report.ok(&l.loc, &l.text(), format!("{w0} {}", p.name));
                    } else {
                        report.adjusted(
                            &l.loc,
                            &l.text(),
                            "halb forwards with direct server return, not as a proxy: each \
                             backend must hold the VIP on lo with arp_ignore=1 and \
                             arp_announce=2 (deploy/provision.sh backend), sit on the node's \
                             layer-2 segment, listen on the VIP's port, and it sees the \
                             clients' own addresses (docs/migration.md)",
                        );
                    }
                    if l.words.iter().any(|w| w == "from") {
                        report.adjusted(
                            &l.loc,
                            &l.text(),
                            "named defaults (`from`) are not followed: the last defaults \
                             section above applies",
                        );
                    }
                    if w0 == "listen" {
                        if let Some(b) = l.word(2) {
                            bind(&mut p, b, &l.loc, &l.text(), report);
                        }
                    }
                    cur = Some(p);
                }
                _ => report.skipped(&l.loc, &l.text(), "a section halb has no equivalent for"),
            }
            continue;
        }
        match section.as_str() {
            "global" => report.skipped(&l.loc, &l.text(), global_why(w0)),
            "defaults" => {
                let mut p = Proxy {
                    d: defaults.clone(),
                    ..Default::default()
                };
                proxy_line(&mut p, l, true, report);
                defaults = p.d;
            }
            "frontend" | "backend" | "listen" => {
                if let Some(p) = cur.as_mut() {
                    proxy_line(p, l, false, report);
                }
            }
            _ => report.skipped(&l.loc, &l.text(), format!("part of a {section} section")),
        }
    }
    if let Some(p) = cur.take() {
        proxies.push(p);
    }
    assemble(proxies, model, report);
    Ok(())
}

fn global_why(w0: &str) -> &'static str {
    match w0 {
        "log" => "halb logs through journald (or JSON lines, [node] log_format)",
        "stats" => "halb's stats page, JSON API and /metrics are at [api] listen",
        "maxconn" => "halb keeps no connections (the backends do)",
        "chroot" | "user" | "group" | "daemon" | "pidfile" | "uid" | "gid" => {
            "halb runs under its hardened systemd unit"
        }
        w if w.starts_with("ssl-") || w.starts_with("ca-") || w.starts_with("crt-") => {
            "halb does not terminate TLS (backends do)"
        }
        _ => "a process setting halb has no equivalent for",
    }
}

fn bind(p: &mut Proxy, spec: &str, loc: &Loc, text: &str, report: &mut Report) {
    for part in spec.split(',') {
        let part = part.strip_prefix("ipv4@").unwrap_or(part);
        let (host, port) = match part.rsplit_once(':') {
            Some((h, port)) => (h, port),
            None => {
                report.skipped(loc, text, "a bind without a port");
                continue;
            }
        };
        let Ok(port) = port.parse::<u16>() else {
            report.skipped(loc, text, "port ranges and names are not translated");
            continue;
        };
        let addr = match host {
            "" | "*" | "0.0.0.0" | "::" => None,
            h => match h.parse::<Ipv4Addr>() {
                Ok(a) if a.is_loopback() => {
                    report.skipped(
                        loc,
                        text,
                        "a listener on loopback (a stats page, a local service): not a VIP",
                    );
                    continue;
                }
                Ok(a) => Some(a),
                Err(_) => {
                    report.skipped(
                        loc,
                        text,
                        "halb serves IPv4 addresses (not host names, IPv6 or sockets)",
                    );
                    continue;
                }
            },
        };
        p.binds.push((addr, port, loc.clone()));
    }
}

fn server_opts(
    words: &[String],
    o: &mut CheckOpts,
    loc: &Loc,
    report: &mut Report,
    what: &str,
) -> Option<String> {
    let mut i = 0;
    let mut comment = None;
    let mut unsupported = Vec::new();
    while i < words.len() {
        let w = words[i].as_str();
        let next = words.get(i + 1).map(String::as_str);
        match w {
            "check" => o.check = Some(loc.clone()),
            "inter" => {
                if let Some(ms) = next.and_then(time_ms).filter(|&v| v > 0) {
                    o.inter = Some(at(ms, loc));
                }
                i += 1;
            }
            "rise" | "fall" => {
                if let Some(n) = next.and_then(|n| n.parse::<u32>().ok()).filter(|&n| n > 0) {
                    if n > 1000 {
                        report.adjusted(loc, what, format!("{w} {n} → 1000 (halb's largest)"));
                    }
                    let v = Some(at(n.min(1000), loc));
                    if w == "rise" {
                        o.rise = v;
                    } else {
                        o.fall = v;
                    }
                }
                i += 1;
            }
            "port" => {
                o.port = next.and_then(|n| n.parse().ok()).map(|p| at(p, loc));
                i += 1;
            }
            "weight" => {
                o.weight = next.and_then(|n| n.parse().ok()).map(|w| at(w, loc));
                i += 1;
            }
            "disabled" => {
                o.weight = Some(at(0, loc));
                report.adjusted(
                    loc,
                    what,
                    "disabled → weight = 0: the backend gets no new flows (halb's drain)",
                );
            }
            "backup" => {
                comment = Some(
                    "HAProxy backup server: halb has no backup servers (all backends share the \
                     load); uncomment to make it a regular backend"
                        .to_string(),
                );
            }
            "fastinter" | "downinter" | "maxconn" | "maxqueue" | "minconn" | "slowstart"
            | "cookie" | "id" | "addr" | "resolvers" | "init-addr" | "on-error"
            | "on-marked-down" | "on-marked-up" | "observe" | "error-limit" | "agent-port"
            | "agent-inter" | "crt" | "ca-file" | "verify" | "sni" | "alpn" | "proto"
            | "resolve-prefer" | "pool-max-conn" | "pool-purge-delay" | "source" => {
                unsupported.push(w.to_string());
                i += 1;
            }
            "ssl" | "send-proxy" | "send-proxy-v2" | "agent-check" | "check-ssl"
            | "no-check-ssl" | "non-stick" | "tfo" => unsupported.push(w.to_string()),
            _ => unsupported.push(w.to_string()),
        }
        i += 1;
    }
    if !unsupported.is_empty() {
        report.adjusted(
            loc,
            what,
            format!(
                "not translated: {} (halb forwards packets at layer 4: no connection limits, \
                 proxy protocol, TLS to the server or agent checks)",
                unsupported.join(", ")
            ),
        );
    }
    comment
}

fn proxy_line(p: &mut Proxy, l: &Line, in_defaults: bool, report: &mut Report) {
    let text = l.text();
    let w0 = l.word(0).unwrap_or_default();
    let w1 = l.word(1).unwrap_or_default();
    match (w0, w1) {
        ("bind", spec) if !in_defaults => {
            let before = p.binds.len();
            bind(p, spec, &l.loc, &text, report);
            if p.binds.len() == before {
                return;
            }
            let extra: Vec<&str> = l.words.iter().skip(2).map(String::as_str).collect();
            if extra.iter().any(|w| *w == "ssl" || *w == "crt") {
                report.adjusted(
                    &l.loc,
                    &text,
                    "TLS: halb does not terminate TLS; the VIP forwards the encrypted stream, so \
                     the backends must terminate it themselves",
                );
            } else if !extra.is_empty() {
                report.adjusted(
                    &l.loc,
                    &text,
                    format!("the VIP's address and port; bind options not used: {}", extra.join(" ")),
                );
            } else {
                report.ok(&l.loc, &text, "the VIP's address and port");
            }
        }
        ("mode", "tcp") => report.ok(&l.loc, &text, "layer 4, as halb"),
        ("mode", "http") => {
            p.d.mode_http = Some(l.loc.clone());
            report.adjusted(
                &l.loc,
                &text,
                "halb forwards at layer 4: the HTTP traffic reaches the backends unchanged (no \
                 header rewriting, no per-request balancing)",
            );
        }
        ("balance", "source") => {
            p.d.balance_source = Some(l.loc.clone());
            report.ok(&l.loc, &text, "hash = \"source-ip\"");
        }
        ("balance", _) => {
            p.d.balance_source = None;
            report.adjusted(
                &l.loc,
                &text,
                "halb balances flows with weighted Maglev hashing (like roundrobin by weight, \
                 per connection; every node picks the same backend)",
            );
        }
        ("default_backend", name) if !in_defaults => {
            p.default_backend = Some(at(name.to_string(), &l.loc));
            report.ok(&l.loc, &text, "the VIP's backends");
        }
        ("option", "httpchk") => {
            // option httpchk [<method>] [<uri>] [<version>]
            let uri = match (l.word(2), l.word(3)) {
                (Some(u), None) if u.starts_with('/') => u.to_string(),
                (Some(_), Some(u)) if u.starts_with('/') => u.to_string(),
                _ => "/".to_string(),
            };
            if l.word(2).is_some_and(|m| !m.starts_with('/') && m != "GET") {
                report.adjusted(&l.loc, &text, format!("kind = \"http\", path = {uri:?} (halb checks with GET)"));
            } else {
                report.ok(&l.loc, &text, format!("kind = \"http\", path = {uri:?}"));
            }
            p.d.httpchk = Some(at(uri, &l.loc));
            // option httpchk GET /x HTTP/1.1\r\nHost:\ name (HAProxy < 2.2):
            // the headers follow the version, one per \r\n.
            let rest = l.words[2..].join(" ");
            for header in rest.split("\r\n").skip(1) {
                if let Some((k, v)) = header.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("host") && !v.trim().is_empty() {
                        p.d.host = Some(at(v.trim().to_string(), &l.loc));
                    }
                }
            }
        }
        ("http-check", "send") => {
            let uri = l
                .words
                .windows(2)
                .find(|w| w[0] == "uri")
                .map(|w| w[1].clone())
                .unwrap_or_else(|| "/".into());
            p.d.httpchk = Some(at(uri.clone(), &l.loc));
            if let Some(w) = l.words.windows(3).find(|w| w[0] == "hdr" && w[1].eq_ignore_ascii_case("host")) {
                p.d.host = Some(at(w[2].clone(), &l.loc));
            }
            report.ok(&l.loc, &text, format!("kind = \"http\", path = {uri:?}"));
        }
        ("http-check", "expect") => {
            match (l.word(2), l.word(3).and_then(|s| s.parse::<u16>().ok())) {
                (Some("status"), Some(s)) if (100..=599).contains(&s) => {
                    p.d.expect_status = Some(at(s, &l.loc));
                    report.ok(&l.loc, &text, format!("expect_status = {s}"));
                }
                _ => report.skipped(
                    &l.loc,
                    &text,
                    "halb expects one status code (not a body match, range or regex)",
                ),
            }
        }
        ("timeout", "check") => match l.word(2).and_then(time_ms).filter(|&v| v > 0) {
            Some(ms) => {
                p.d.timeout_check = Some(at(ms, &l.loc));
                report.ok(&l.loc, &text, format!("timeout_ms = {ms}"));
            }
            None => report.skipped(&l.loc, &text, "time not understood"),
        },
        ("timeout", _) => report.skipped(
            &l.loc,
            &text,
            "halb keeps no connections: client, server and connect timeouts are the \
             endpoints' own",
        ),
        ("default-server", _) => {
            let mut o = p.d.server.clone();
            server_opts(&l.words[1..], &mut o, &l.loc, report, &text);
            p.d.server = o;
            report.ok(&l.loc, &text, "check settings of the servers below");
        }
        ("server", name) if !in_defaults => {
            let Some(spec) = l.word(2) else {
                report.skipped(&l.loc, &text, "a server without an address");
                return;
            };
            let (host, port) = match spec.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().ok()),
                None => (spec, None),
            };
            let Ok(addr) = host.parse::<Ipv4Addr>() else {
                report.skipped(
                    &l.loc,
                    &text,
                    "halb needs the server's IPv4 address (not a host name, IPv6 or a socket)",
                );
                return;
            };
            let mut o = p.d.server.clone();
            if addr.is_loopback() {
                report.skipped(
                    &l.loc,
                    &text,
                    "a server on loopback (this host): with direct server return a backend must \
                     be another machine on the segment",
                );
                return;
            }
            let comment = server_opts(&l.words[3..], &mut o, &l.loc, report, &text);
            if comment.is_some() {
                report.adjusted(&l.loc, &text, "backup server: written commented out");
            } else {
                report.ok(&l.loc, &text, "[[vip.backend]]");
            }
            p.servers.push(Server {
                name: name.to_string(),
                addr,
                port,
                opts: o,
                loc: l.loc.clone(),
                comment,
            });
        }
        ("option", "tcp-check") => {
            p.d.httpchk = None;
            report.adjusted(
                &l.loc,
                &text,
                "kind = \"tcp\": halb's tcp check connects only (no send/expect sequence)",
            );
        }
        ("tcp-check", _) => report.adjusted(
            &l.loc,
            &text,
            "halb's tcp check connects only (no send/expect sequence)",
        ),
        ("option", "redispatch") | ("retries", _) => report.skipped(
            &l.loc,
            &text,
            "halb does not retry connections: a flow to a backend that fails is the client's to retry",
        ),
        ("option", "forwardfor") | ("http-request", _) | ("http-response", _)
        | ("http-after-response", _) | ("option", "httplog") | ("capture", _) => report.skipped(
            &l.loc,
            &text,
            "layer-7 processing: halb forwards packets, and with direct server return the \
             backends see the client's own address",
        ),
        ("acl", _) | ("use_backend", _) | ("use-server", _) | ("redirect", _) => report.skipped(
            &l.loc,
            &text,
            "ACLs and content switching are layer 7: halb has one backend set per VIP",
        ),
        ("stick-table", _) | ("stick", _) | ("cookie", _) | ("appsession", _) => report.skipped(
            &l.loc,
            &text,
            "stickiness tables: halb's affinity is hash = \"source-ip\" (balance source)",
        ),
        ("log", _) | ("option", "dontlognull") | ("option", "tcplog") | ("errorfile", _)
        | ("option", "log-health-checks") => report.skipped(
            &l.loc,
            &text,
            "halb logs through journald; health changes are logged with their reason",
        ),
        ("maxconn", _) | ("fullconn", _) | ("rate-limit", _) => {
            report.skipped(&l.loc, &text, "halb keeps no connections to limit")
        }
        ("stats", _) => report.skipped(
            &l.loc,
            &text,
            "halb's stats page, JSON API and /metrics are at [api] listen",
        ),
        _ => report.skipped(&l.loc, &text, "a proxy setting halb has no equivalent for"),
    }
}

/// Frontends and listens with their backends become VIPs.
fn assemble(proxies: Vec<Proxy>, model: &mut Model, report: &mut Report) {
    let backends: HashMap<String, usize> = proxies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == "backend")
        .map(|(i, p)| (p.name.clone(), i))
        .collect();
    let vrrp_addrs: Vec<Ipv4Addr> = model
        .instances
        .iter()
        .flat_map(|i| i.addresses.iter().map(|a| a.value))
        .collect();
    let mut used_backends = std::collections::HashSet::new();
    for p in proxies.iter().filter(|p| p.kind != "backend") {
        let loc = p.loc.clone().unwrap_or_default();
        let be = if p.kind == "listen" {
            Some(p)
        } else {
            match &p.default_backend {
                Some(name) => match backends.get(&name.value) {
                    Some(&i) => {
                        used_backends.insert(i);
                        Some(&proxies[i])
                    }
                    None => {
                        report.skipped(&name.loc, &name.value, "no backend of this name");
                        None
                    }
                },
                None => None,
            }
        };
        let be = be.filter(|b| {
            let empty = b.servers.is_empty();
            if empty {
                report.demote(std::slice::from_ref(&loc), "no server lines");
                report.skipped(
                    &loc,
                    &format!("{} {}", p.kind, p.name),
                    "no server lines: nothing to forward to",
                );
            }
            !empty
        });
        let Some(be) = be else {
            report.demote(std::slice::from_ref(&loc), "nothing to forward to");
            report.skipped(
                &loc,
                &format!("{} {}", p.kind, p.name),
                "no default_backend: nothing to forward to (use_backend rules are layer 7)",
            );
            continue;
        };
        if p.binds.is_empty() {
            report.skipped(&loc, &format!("{} {}", p.kind, p.name), "no bind: no VIP");
        }
        for (addr, port, bloc) in &p.binds {
            let addrs: Vec<Ipv4Addr> = match addr {
                Some(a) => vec![*a],
                None if !vrrp_addrs.is_empty() => {
                    report.adjusted(
                        bloc,
                        &format!("bind *:{port}"),
                        format!(
                            "a VIP on each VRRP address from keepalived.conf ({})",
                            vrrp_addrs
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    vrrp_addrs.clone()
                }
                None => {
                    report.skipped(
                        bloc,
                        &format!("bind *:{port}"),
                        "halb needs the VIP's address (bind ADDRESS:PORT, or give --keepalived \
                         with the virtual_ipaddress)",
                    );
                    continue;
                }
            };
            // A bind of one address makes one VIP, whose lines are its own
            // to demote when it is left out; shared lines are not.
            let own = addr.is_some() && p.binds.iter().filter(|b| b.2 == *bloc).count() == 1;
            for a in addrs {
                let mut v = vip_of(p, be, a, *port, bloc, report);
                if own {
                    v.locs.push(bloc.clone());
                }
                model.vips.push(v);
            }
        }
    }
    for (i, p) in proxies.iter().enumerate() {
        if p.kind == "backend" && !used_backends.contains(&i) {
            let loc = p.loc.clone().unwrap_or_default();
            report.skipped(
                &loc,
                &format!("backend {}", p.name),
                "no frontend uses it as its default_backend",
            );
        }
    }
}

fn vip_of(
    fe: &Proxy,
    be: &Proxy,
    addr: Ipv4Addr,
    port: u16,
    loc: &Loc,
    report: &mut Report,
) -> Vip {
    let name = if fe.binds.len() > 1 {
        token(&format!("{}-{addr}-{port}", fe.name))
    } else {
        token(&fe.name)
    };
    let d = &be.d;
    let mut health = Health::default();
    let checked = be.servers.iter().find(|s| s.opts.check.is_some());
    if checked.is_none() {
        let locs: Vec<Loc> = [
            d.httpchk.as_ref().map(|h| h.loc.clone()),
            d.expect_status.as_ref().map(|h| h.loc.clone()),
            d.timeout_check.as_ref().map(|h| h.loc.clone()),
        ]
        .into_iter()
        .flatten()
        // Only this section's own lines: a defaults line serves others too.
        .filter(|l| {
            be.loc
                .as_ref()
                .is_some_and(|b| l.file == b.file && l.line > b.line)
        })
        .collect();
        report.demote(
            &locs,
            "no server of this backend has `check`: no health check",
        );
    }
    if let Some(Server {
        opts: o, loc: sloc, ..
    }) = checked
    {
        let kind = if d.httpchk.is_some() { "http" } else { "tcp" };
        health.kind = Some(at(kind, d.httpchk.as_ref().map_or(sloc, |h| &h.loc)));
        let inter = o.inter.clone().unwrap_or_else(|| at(2000, sloc));
        // HAProxy: without `timeout check`, a check may take `inter`.
        health.timeout_ms = Some(
            d.timeout_check
                .clone()
                .unwrap_or_else(|| at(inter.value, &inter.loc)),
        );
        health.interval_ms = Some(inter);
        let rise = o.rise.clone().unwrap_or_else(|| at(2, sloc));
        let fall = o.fall.clone().unwrap_or_else(|| at(3, sloc));
        set(
            &mut health.keys,
            "rise",
            at(rise.value.to_string(), &rise.loc),
        );
        set(
            &mut health.keys,
            "fall",
            at(fall.value.to_string(), &fall.loc),
        );
        if let Some(h) = &d.httpchk {
            set(&mut health.keys, "path", at(toml_string(&h.value), &h.loc));
        }
        match &d.expect_status {
            Some(s) => set(
                &mut health.keys,
                "expect_status",
                at(s.value.to_string(), &s.loc),
            ),
            None if d.httpchk.is_some() => report.adjusted(
                &d.httpchk.as_ref().map_or(sloc, |h| &h.loc).clone(),
                "option httpchk",
                "no http-check expect: HAProxy accepted 2xx and 3xx, halb expects exactly 200",
            ),
            None => {}
        }
        if let Some(h) = d.host.as_ref().filter(|_| d.httpchk.is_some()) {
            set(&mut health.keys, "host", at(toml_string(&h.value), &h.loc));
        }
        if let Some(p) = &o.port {
            set(&mut health.keys, "port", at(p.value.to_string(), &p.loc));
        }
        for other in be.servers.iter().filter(|s| s.opts.check.is_some()) {
            let same = |a: &Option<At<u32>>, b: &Option<At<u32>>| {
                a.as_ref().map(|x| x.value) == b.as_ref().map(|x| x.value)
            };
            let port = |x: &CheckOpts| x.port.as_ref().map(|p| p.value);
            if !(same(&other.opts.inter, &o.inter)
                && same(&other.opts.rise, &o.rise)
                && same(&other.opts.fall, &o.fall)
                && port(&other.opts) == port(o))
            {
                report.adjusted(
                    &other.loc,
                    &format!("server {}", other.name),
                    "halb checks every backend of a VIP the same way: this server's inter, rise \
                     fall or port differ from the first checked server's, whose apply",
                );
            }
        }
        let unchecked: Vec<&str> = be
            .servers
            .iter()
            .filter(|s| s.opts.check.is_none())
            .map(|s| s.name.as_str())
            .collect();
        if !unchecked.is_empty() {
            report.adjusted(
                sloc,
                &format!("server {}", checked.map_or("", |s| s.name.as_str())),
                format!(
                    "halb checks every backend of a VIP: {} (no `check` in haproxy.cfg) will be \
                     checked too",
                    unchecked.join(", ")
                ),
            );
        }
    }
    let backends = be
        .servers
        .iter()
        .map(|srv| {
            let (name, a, sport, o, sloc, comment) = (
                &srv.name,
                &srv.addr,
                &srv.port,
                &srv.opts,
                &srv.loc,
                &srv.comment,
            );
            if sport.is_some_and(|p| p != port) {
                report.adjusted(
                    sloc,
                    &format!("server {name}"),
                    format!(
                        "direct server return keeps the VIP's port: the server must listen on \
                         {addr}:{port} (its port {} is not used)",
                        sport.unwrap_or(0)
                    ),
                );
            }
            let w = o.weight.as_ref().map_or(1, |w| w.value);
            if w > MAX_WEIGHT {
                report.adjusted(
                    sloc,
                    &format!("server {name}"),
                    format!("weight {w} → {MAX_WEIGHT}"),
                );
            }
            Backend {
                name: token(name),
                address: *a,
                weight: w.min(MAX_WEIGHT),
                loc: sloc.clone(),
                commented: comment.clone(),
            }
        })
        .collect();
    // Its lines are shared with the other VIPs of the same frontend and
    // backend: a VIP left out is reported at its bind line only.
    let locs = Vec::new();
    Vip {
        name,
        address: addr,
        port,
        protocol: "tcp",
        mode: "dsr",
        gue_port: None,
        source_hash: d.balance_source.clone(),
        loc: loc.clone(),
        health,
        backends,
        locs,
    }
}
