//! Writing the imported [`Model`] as halb TOML: deciding what fits together
//! (an instance needs a service on its addresses, a service an instance
//! that owns its address), fixing values halb would refuse, and naming
//! each value's source line in a comment.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;
use std::path::Path;

use super::{At, Instance, Model, Report};

/// `s` as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Sets `key` in `keys`, replacing an earlier value.
pub fn set(keys: &mut Vec<(String, At<String>)>, key: &str, value: At<String>) {
    if let Some(slot) = keys.iter_mut().find(|(k, _)| k == key) {
        slot.1 = value;
    } else {
        keys.push((key.to_string(), value));
    }
}

fn line(out: &mut String, indent: &str, key: &str, v: &At<String>) {
    let _ = writeln!(out, "{indent}{key} = {}  # {}", v.value, v.loc);
}

/// Fixes what halb would refuse in `inst`, reporting each change.
fn settle_instance(inst: &mut Instance, default_version: Option<u8>, report: &mut Report) {
    let version = inst.version.or(default_version).unwrap_or(2);
    let vloc = inst.loc.clone().unwrap_or_default();
    set(
        &mut inst.keys,
        "version",
        super::at(version.to_string(), &vloc),
    );
    if let Some(adv) = &inst.advert_ms {
        let mut ms = adv.value;
        if ms > 40_950 {
            report.adjusted(
                &adv.loc,
                "advert_int",
                format!(
                    "halb's longest advert interval is 40.95 s (VRRPv3's limit): \
                     advert_interval_ms = 40000 (was {ms} ms)"
                ),
            );
            ms = 40_000;
        }
        if version == 2 && ms % 1000 != 0 {
            ms = (ms.div_ceil(1000)).max(1) * 1000;
            report.adjusted(
                &adv.loc,
                "advert_int",
                format!(
                    "VRRP version 2 counts whole seconds: advert_interval_ms = {ms} (was {} ms)",
                    adv.value
                ),
            );
        } else if version == 3 && ms % 10 != 0 {
            ms = ms.div_ceil(10) * 10;
            report.adjusted(
                &adv.loc,
                "advert_int",
                format!("VRRPv3 counts centiseconds: advert_interval_ms = {ms}"),
            );
        }
        set(
            &mut inst.keys,
            "advert_interval_ms",
            super::at(ms.to_string(), &adv.loc),
        );
    } else {
        // keepalived's default advert_int: 1 s.
        set(
            &mut inst.keys,
            "advert_interval_ms",
            super::at("1000".into(), &vloc),
        );
    }
    if let Some(pass) = inst.auth_pass.take() {
        if version != 2 {
            report.skipped(
                &pass.loc,
                "auth_pass",
                "VRRPv3 has no authentication (RFC 5798): keepalived ignores it too",
            );
        } else {
            let mut p = pass.value.clone();
            if p.len() > 8 {
                p.truncate(8);
                report.adjusted(
                    &pass.loc,
                    "auth_pass",
                    "VRRPv2 passwords are 8 bytes: cut to the first 8, as keepalived sends it",
                );
            }
            set(
                &mut inst.keys,
                "auth_pass",
                super::at(super::toml_string(&p), &pass.loc),
            );
        }
    }
    for s in &mut inst.scripts {
        if let Some(t) = s.timeout_ms {
            if t >= s.interval_ms {
                let fixed = (s.interval_ms / 2).max(1);
                let loc = s
                    .keys
                    .iter()
                    .find(|(k, _)| k == "timeout_ms")
                    .map(|(_, v)| v.loc.clone())
                    .or_else(|| s.loc.clone())
                    .unwrap_or_default();
                report.adjusted(
                    &loc,
                    "timeout",
                    format!(
                        "halb kills a run at timeout_ms, which must be below interval_ms \
                         ({} ms): timeout_ms = {fixed}",
                        s.interval_ms
                    ),
                );
                set(
                    &mut s.keys,
                    "timeout_ms",
                    super::at(fixed.to_string(), &loc),
                );
            }
        }
    }
}

/// Writes `model` as TOML.
pub fn emit(
    model: &mut Model,
    report: &mut Report,
    keepalived_conf: Option<&Path>,
    haproxy_cfg: Option<&Path>,
) -> String {
    let mut out = String::new();
    let sources: Vec<String> = keepalived_conf
        .iter()
        .chain(haproxy_cfg.iter())
        .map(|p| p.display().to_string())
        .collect();
    let _ = writeln!(
        out,
        "# halb.toml written by `halb import` from {}.\n\
         # Each value names the line it came from; the import report lists every\n\
         # line that was translated, adjusted or not translated, and why.\n\
         # Check it with `halb check-config -c FILE`.",
        sources.join(" and ")
    );

    // Every backend line read, to demote those of services left out.
    let all_backends: Vec<super::Loc> = model
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.loc.clone()))
        .collect();

    // Services first: which stay.
    let mut seen_services = HashSet::new();
    let mut names = HashSet::new();
    let mut vips = Vec::new();
    for mut v in std::mem::take(&mut model.vips) {
        if !seen_services.insert((v.address, v.port, v.protocol)) {
            let why = format!(
                "{}:{} {} is defined earlier: this one is left out",
                v.address, v.port, v.protocol
            );
            report.demote(&v.locs, &why);
            report.skipped(&v.loc, "service", why);
            continue;
        }
        let mut name = v.name.clone();
        let mut i = 2;
        while !names.insert(name.clone()) {
            name = super::numbered(&v.name, i);
            i += 1;
        }
        v.name = name;
        vips.push(v);
    }

    // The data plane's limits.
    let max_vips = ha_common::MAX_VIPS as usize;
    if vips.len() > max_vips {
        for v in vips.split_off(max_vips) {
            let why = format!("halb serves at most {max_vips} VIP services per node: left out");
            report.demote(&v.locs, &why);
            report.skipped(&v.loc, "service", why);
        }
    }
    let mut total = 0usize;
    for v in &mut vips {
        let room = (ha_common::MAX_BACKENDS as usize).saturating_sub(total);
        if v.backends.len() > room {
            for b in v.backends.split_off(room) {
                report.skipped(
                    &b.loc,
                    &b.address.to_string(),
                    format!(
                        "halb holds at most {} backends in all: left out",
                        ha_common::MAX_BACKENDS
                    ),
                );
            }
        }
        total += v.backends.len();
    }

    // Instances own the services on their addresses.
    let mut owner: HashMap<std::net::Ipv4Addr, String> = HashMap::new();
    let mut kept = Vec::new();
    let mut inst_names = HashSet::new();
    let mut vrids = HashSet::new();
    // The node's interface: that of the first instance with a service on
    // its addresses and a VRID (one that can be kept), else the first seen.
    if let Some((i, loc)) = model.instances.iter().find_map(|inst| {
        let served = inst
            .addresses
            .iter()
            .any(|a| vips.iter().any(|v| v.address == a.value));
        let vrid = inst.keys.iter().any(|(k, _)| k == "router_id");
        let iface = inst.keys.iter().find(|(k, _)| k == "interface");
        match (served && vrid, iface, &inst.interface) {
            (true, Some((_, at)), Some(name)) => Some((name.clone(), at.loc.clone())),
            _ => None,
        }
    }) {
        model.interface = Some(super::at(i, &loc));
    }
    let node_if = model.interface.as_ref().map(|i| i.value.clone());
    for mut inst in std::mem::take(&mut model.instances) {
        let addrs: BTreeSet<_> = inst.addresses.iter().map(|a| a.value).collect();
        let has_service = vips.iter().any(|v| addrs.contains(&v.address));
        let loc = inst.loc.clone().unwrap_or_default();
        let what = format!("vrrp_instance {}", inst.name);
        let Some(vrid) = inst
            .keys
            .iter()
            .find(|(k, _)| k == "router_id")
            .map(|(_, v)| v.value.clone())
        else {
            report.demote(&inst.locs, "no virtual_router_id");
            report.skipped(&loc, &what, "no virtual_router_id: left out");
            continue;
        };
        let iface = inst
            .interface
            .clone()
            .or(node_if.clone())
            .unwrap_or_default();
        if node_if.as_ref().is_some_and(|n| *n != iface) {
            report.demote(&inst.locs, "on another interface");
            report.skipped(
                &loc,
                &what,
                format!(
                    "runs on {iface}, but halb forwards on one interface ([node] interface = \
                     {:?}, the first instance's): left out",
                    node_if.clone().unwrap_or_default()
                ),
            );
            continue;
        }
        if !vrids.insert((iface.clone(), vrid.clone())) {
            report.demote(&inst.locs, "its VRID is taken");
            report.skipped(
                &loc,
                &what,
                format!("virtual_router_id {vrid} on {iface} is another instance's: left out"),
            );
            continue;
        }
        let mut name = inst.name.clone();
        let mut n = 2;
        while !inst_names.insert(name.clone()) {
            name = super::numbered(&inst.name, n);
            n += 1;
        }
        if name != inst.name {
            report.adjusted(&loc, &what, format!("renamed {name:?}: the name is taken"));
            inst.name = name;
        }
        inst.scripts.retain(|s| {
            let ok = s.keys.iter().any(|(k, _)| k == "script");
            if !ok {
                let sloc = s.loc.clone().unwrap_or_default();
                report.skipped(
                    &sloc,
                    &s.name,
                    "a vrrp_script without a script: not tracked",
                );
            }
            ok
        });
        let mut seen_scripts = HashSet::new();
        inst.scripts.retain(|s| seen_scripts.insert(s.name.clone()));
        if !has_service {
            let why = "no service (virtual_server, or haproxy bind) on its addresses: halb moves \
                       an address together with the [[vip]] services on it, so this instance \
                       is left out";
            report.demote(&inst.locs, "no service on its addresses");
            report.skipped(&loc, &format!("vrrp_instance {}", inst.name), why);
            continue;
        }
        for a in &inst.addresses {
            if let Some(prev) = owner.get(&a.value) {
                report.skipped(
                    &a.loc,
                    &a.value.to_string(),
                    format!("already owned by vrrp_instance {prev}: an address has one owner"),
                );
            } else {
                owner.insert(a.value, inst.name.clone());
            }
        }
        kept.push(inst);
    }
    // Addresses of kept instances that carry no service.
    for inst in &kept {
        for a in &inst.addresses {
            if !vips.iter().any(|v| v.address == a.value) {
                report.demote(
                    std::slice::from_ref(&a.loc),
                    "no service on this address: halb adds an address with the [[vip]] \
                     services on it, so this one no longer fails over with the instance",
                );
            }
        }
    }
    if !kept.is_empty() {
        vips.retain(|v| {
            if owner.contains_key(&v.address) {
                return true;
            }
            let why = format!(
                "{} is in no vrrp_instance's virtual_ipaddress: with VRRP, halb serves only \
                 addresses an instance owns; left out",
                v.address
            );
            report.demote(&v.locs, &why);
            report.skipped(&v.loc, "service", why);
            false
        });
    }
    let kept_names: HashSet<String> = kept.iter().map(|i| i.name.clone()).collect();

    // A backend must not be a VRRP source or peer (frames would loop).
    let mut forbidden = HashSet::new();
    for inst in &kept {
        for (k, v) in &inst.keys {
            if k == "source" || k == "unicast_peers" {
                for a in v.value.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                    if let Ok(ip) = a.parse::<std::net::Ipv4Addr>() {
                        forbidden.insert(ip);
                    }
                }
            }
        }
    }

    if let Some(i) = &model.interface {
        let _ = writeln!(out, "\n[node]");
        line(
            &mut out,
            "",
            "interface",
            &super::at(super::toml_string(&i.value), &i.loc),
        );
    } else {
        let _ = writeln!(
            out,
            "\n[node]\ninterface = \"eth0\"  # no interface in the input: set the node's own"
        );
    }

    let default_version = model.default_version.as_ref().map(|v| v.value);
    for mut inst in kept {
        settle_instance(&mut inst, default_version, report);
        let loc = inst.loc.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "\n[[vrrp_instance]]  # {loc} vrrp_instance {}",
            inst.name
        );
        let _ = writeln!(out, "name = {}", super::toml_string(&inst.name));
        for (k, v) in &model.instance_defaults {
            if !inst.keys.iter().any(|(ik, _)| ik == k) {
                line(&mut out, "", k, v);
            }
        }
        for (k, v) in &inst.keys {
            line(&mut out, "", k, v);
        }
        let owned: Vec<String> = vips
            .iter()
            .filter(|v| owner.get(&v.address) == Some(&inst.name))
            .map(|v| super::toml_string(&v.name))
            .collect();
        let _ = writeln!(
            out,
            "vips = [{}]  # the services on its virtual_ipaddress",
            owned.join(", ")
        );
        for s in &inst.scripts {
            let sloc = s.loc.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "\n  [[vrrp_instance.track_script]]  # {sloc} vrrp_script {}",
                s.name
            );
            let _ = writeln!(out, "  name = {}", super::toml_string(&s.name));
            for (k, v) in &s.keys {
                line(&mut out, "  ", k, v);
            }
        }
    }

    let mut grouped: HashMap<String, String> = HashMap::new();
    let mut group_names = HashSet::new();
    for g in std::mem::take(&mut model.groups) {
        let loc = g.loc.clone().unwrap_or_default();
        if !group_names.insert(g.name.clone()) {
            report.skipped(
                &loc,
                &format!("vrrp_sync_group {}", g.name),
                "the name is taken",
            );
            continue;
        }
        let mut members: Vec<&At<String>> = Vec::new();
        for m in &g.instances {
            if !kept_names.contains(&m.value) {
                report.skipped(
                    &m.loc,
                    &m.value,
                    "this instance is not in the output (see its entry)",
                );
            } else if let Some(other) = grouped.get(&m.value) {
                report.skipped(
                    &m.loc,
                    &m.value,
                    format!("already in sync group {other}: an instance belongs to one group"),
                );
            } else if !members.iter().any(|x| x.value == m.value) {
                members.push(m);
            }
        }
        if members.len() >= 2 {
            for m in &members {
                grouped.insert(m.value.clone(), g.name.clone());
            }
        }
        if members.len() < 2 {
            let mut locs = vec![loc.clone()];
            locs.extend(g.instances.iter().map(|m| m.loc.clone()));
            locs.extend(g.notify.iter().map(|n| n.loc.clone()));
            report.demote(&locs, "the group is left out");
            report.skipped(
                &loc,
                &format!("vrrp_sync_group {}", g.name),
                "fewer than two of its instances are in the output: no group needed",
            );
            continue;
        }
        let _ = writeln!(
            out,
            "\n[[vrrp_sync_group]]  # {loc} vrrp_sync_group {}",
            g.name
        );
        let _ = writeln!(out, "name = {}", super::toml_string(&g.name));
        let list: Vec<String> = members
            .iter()
            .map(|m| super::toml_string(&m.value))
            .collect();
        let _ = writeln!(out, "instances = [{}]", list.join(", "));
        if let Some(n) = &g.notify {
            line(&mut out, "", "notify", n);
        }
    }

    for v in &mut vips {
        let _ = writeln!(out, "\n[[vip]]  # {}", v.loc);
        let _ = writeln!(out, "name = {}", super::toml_string(&v.name));
        let _ = writeln!(out, "address = \"{}\"", v.address);
        let _ = writeln!(out, "port = {}", v.port);
        let _ = writeln!(out, "protocol = \"{}\"", v.protocol);
        let _ = writeln!(out, "mode = \"{}\"", v.mode);
        if let Some(port) = v.gue_port {
            let _ = writeln!(out, "gue_port = {port}");
        }
        if let Some(l) = &v.source_hash {
            let _ = writeln!(out, "hash = \"source-ip\"  # {l}");
        }
        let h = &mut v.health;
        if let Some(kind) = &h.kind {
            let interval = h.interval_ms.as_ref().map(|i| i.value);
            if let (Some(i), Some(t)) = (interval, h.timeout_ms.as_mut()) {
                if t.value > i {
                    report.adjusted(
                        &t.loc,
                        "timeout",
                        format!(
                            "halb's check timeout may not exceed its interval ({i} ms): \
                             timeout_ms = {i}"
                        ),
                    );
                    t.value = i;
                }
            }
            let _ = writeln!(out, "\n  [vip.health]");
            line(
                &mut out,
                "  ",
                "kind",
                &super::at(format!("\"{}\"", kind.value), &kind.loc),
            );
            if let Some(i) = &h.interval_ms {
                line(
                    &mut out,
                    "  ",
                    "interval_ms",
                    &super::at(i.value.to_string(), &i.loc),
                );
            }
            match (&h.timeout_ms, interval) {
                (Some(t), _) => line(
                    &mut out,
                    "  ",
                    "timeout_ms",
                    &super::at(t.value.to_string(), &t.loc),
                ),
                // halb's default timeout (2 s) must fit a shorter interval.
                (None, Some(i)) if i < 2000 => {
                    let _ = writeln!(out, "  timeout_ms = {i}  # the interval (no timeout given)");
                }
                _ => {}
            }
            for (k, val) in &h.keys {
                line(&mut out, "  ", k, val);
            }
        }
        let mut bnames = HashSet::new();
        let mut baddrs = HashSet::new();
        for b in &v.backends {
            if forbidden.contains(&b.address) {
                report.demote(std::slice::from_ref(&b.loc), "a VRRP address");
                report.skipped(
                    &b.loc,
                    &b.address.to_string(),
                    "a VRRP source or peer address: frames would loop between the nodes",
                );
                continue;
            }
            if !baddrs.insert(b.address) {
                report.skipped(
                    &b.loc,
                    &b.address.to_string(),
                    format!("{} is a backend of {} already", b.address, v.name),
                );
                continue;
            }
            let mut name = b.name.clone();
            let mut i = 2;
            while !bnames.insert(name.clone()) {
                name = super::numbered(&b.name, i);
                i += 1;
            }
            let c = if b.commented.is_some() { "# " } else { "" };
            let _ = writeln!(out);
            if let Some(why) = &b.commented {
                let _ = writeln!(out, "  # {why}");
            }
            let _ = writeln!(out, "  {c}[[vip.backend]]  # {}", b.loc);
            let _ = writeln!(out, "  {c}name = {}", super::toml_string(&name));
            let _ = writeln!(out, "  {c}address = \"{}\"", b.address);
            let _ = writeln!(out, "  {c}weight = {}", b.weight);
        }
    }
    let emitted: HashSet<&super::Loc> = vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| &b.loc))
        .collect();
    let gone: Vec<super::Loc> = all_backends
        .into_iter()
        .filter(|b| !emitted.contains(b))
        .collect();
    report.demote(&gone, "its service is left out");
    out
}

/// The source place a written line names in its trailing `# file:line`.
fn source_of(line: &str) -> Option<super::Loc> {
    let (_, c) = line.rsplit_once("  # ")?;
    let c = c.split_whitespace().next()?;
    let (file, n) = c.rsplit_once(':')?;
    Some(super::Loc {
        file: file.to_string(),
        line: n.parse().ok()?,
    })
}

/// Comments out what halb refused in `config` (the first problem's line,
/// or its whole table when the problem is the table itself or a missing
/// key), reporting it at the source line it came from. None when nothing
/// can be commented out.
pub fn refuse(config: &str, e: &crate::config::ConfigError, report: &mut Report) -> Option<String> {
    let p = e.problems.first()?;
    let at = p.location.as_ref()?.line.checked_sub(1)?;
    let mut lines: Vec<String> = config.lines().map(str::to_string).collect();
    let is_header = |l: &str| l.trim_start().starts_with('[');
    let header = (0..=at.min(lines.len().checked_sub(1)?))
        .rev()
        .find(|&i| is_header(&lines[i]))?;
    let whole = at == header || p.message.contains("missing field") || !lines[at].contains(" = ");
    let range = if whole {
        // A table with its sub-tables ([[vip]] with [vip.health] and
        // [[vip.backend]], [[vrrp_instance]] with its track scripts).
        let name = lines[header]
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .split(']')
            .next()
            .unwrap_or("")
            .to_string();
        let end = (header + 1..lines.len())
            .find(|&i| {
                let t = lines[i].trim_start();
                t.starts_with('[') && !t.trim_start_matches('[').starts_with(&format!("{name}."))
            })
            .unwrap_or(lines.len());
        header..end
    } else {
        at..at + 1
    };
    let why = format!("halb refused it: {}", p.message);
    let mut locs = Vec::new();
    for l in &mut lines[range] {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        if let Some(loc) = source_of(l) {
            locs.push(loc);
        }
        *l = format!("# {l}  # left out: {}", p.message.replace('\n', " "));
    }
    if locs.is_empty() {
        locs.push(super::Loc {
            file: "imported.toml".into(),
            line: at + 1,
        });
    }
    for loc in &locs {
        report.skipped(loc, "translated value", why.clone());
    }
    report.demote(&locs, &why);
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}
