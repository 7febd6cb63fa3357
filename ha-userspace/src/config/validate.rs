//! Checks across values of a parsed configuration (uniqueness, limits,
//! combinations), each reported with the span it is about.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::schema::{Config, HealthKind, MIN_TOKEN_LEN};

/// Every problem as (byte span, message); empty when the config is good.
pub(super) fn check(config: &mut Config) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    let node = &config.node;
    if let Some(name) = &node.name {
        if !is_token(name.get_ref()) {
            out.push((
                name.span(),
                "node name must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
    }
    let ifname = node.interface.get_ref();
    if !is_ifname(ifname) {
        out.push((
            node.interface.span(),
            format!("interface must be a Linux interface name (1-15 characters), got {ifname:?}"),
        ));
    }

    if let Some(path) = &config.api.token_file {
        if let Err(why) = read_token(path.get_ref()) {
            out.push((
                path.span(),
                format!("token_file {}: {why}", path.get_ref().display()),
            ));
        }
    }
    let listen = config.api.listen.get_ref();
    if !listen.ip().is_loopback() && config.api.token_file.is_none() {
        out.push((
            config.api.listen.span(),
            format!(
                "[api] listen = \"{listen}\" is not loopback: set token_file, \
                 the token that write calls (drain, enable, weight, reload) must carry"
            ),
        ));
    }
    for spanned in config.vrrp.iter().chain(&config.vrrp_instances) {
        let vrrp = spanned.get_ref();
        if vrrp.version == 2 && vrrp.advert_interval_ms % 1000 != 0 {
            out.push((
                spanned.span(),
                format!(
                    "VRRP version 2 counts the advert interval in whole seconds; \
                     advert_interval_ms = {} is not a multiple of 1000",
                    vrrp.advert_interval_ms
                ),
            ));
        }
        if let Some(pass) = &vrrp.auth_pass {
            if vrrp.version != 2 {
                out.push((
                    pass.span(),
                    "auth_pass is for VRRP version 2 only (RFC 5798 removed authentication)".into(),
                ));
            } else if pass.get_ref().is_empty() || pass.get_ref().len() > 8 {
                out.push((pass.span(), "auth_pass must be 1 to 8 bytes".into()));
            }
        }
        for s in &vrrp.track_scripts {
            let t = s.get_ref();
            if t.timeout_ms() >= t.interval_ms {
                out.push((
                    s.span(),
                    format!(
                        "track_script {:?}: timeout_ms ({}) must be below interval_ms ({}), \
                         or runs would overlap",
                        t.name,
                        t.timeout_ms(),
                        t.interval_ms
                    ),
                ));
            }
        }
        if let Some(i) = &vrrp.interface {
            if !is_ifname(i.get_ref()) {
                out.push((
                    i.span(),
                    format!(
                        "interface must be a Linux interface name (1-15 characters), got {:?}",
                        i.get_ref()
                    ),
                ));
            }
        }
    }
    instances(config, &mut out);
    bgp(config, &mut out);
    // Addresses a backend must never have: XDP does not decrement the TTL,
    // so two nodes that send VIP traffic to each other loop it for ever.
    let mut forbidden: Vec<(std::net::IpAddr, &str)> = Vec::new();
    for v in config
        .vrrp
        .iter()
        .chain(&config.vrrp_instances)
        .map(|s| s.get_ref())
    {
        forbidden.extend(
            v.unicast_peers
                .iter()
                .map(|p| (*p.get_ref(), "a VRRP peer of this node")),
        );
        if let Some(s) = &v.source {
            forbidden.push((*s.get_ref(), "this node's own VRRP source address"));
        }
    }
    forbidden.extend(
        config
            .vips()
            .map(|v| (*v.address.get_ref(), "a VIP address")),
    );
    families(config, &mut out);

    let mut vip_names = HashSet::new();
    let mut services = HashSet::new();
    let mut total_backends = 0usize;
    for (i, spanned) in config.vips.iter().enumerate() {
        let vip = spanned.get_ref();
        let name = vip.name.get_ref();
        if !is_token(name) {
            out.push((
                vip.name.span(),
                "vip name must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        if !vip_names.insert(name.clone()) {
            out.push((vip.name.span(), format!("duplicate vip name {name:?}")));
        }
        if !services.insert((*vip.address.get_ref(), vip.port, vip.protocol)) {
            out.push((
                spanned.span(),
                format!(
                    "another vip already serves {} {:?}",
                    std::net::SocketAddr::new(*vip.address.get_ref(), vip.port),
                    vip.protocol
                ),
            ));
        }
        if i >= ha_common::MAX_VIPS as usize {
            out.push((
                spanned.span(),
                format!("at most {} vips are supported", ha_common::MAX_VIPS),
            ));
        }
        let h = &vip.health;
        if h.kind != HealthKind::None && h.timeout_ms > h.interval_ms {
            out.push((
                spanned.span(),
                format!(
                    "vip {name:?}: health timeout_ms ({}) must not exceed interval_ms ({})",
                    h.timeout_ms, h.interval_ms
                ),
            ));
        }
        if h.kind == HealthKind::Http && !h.path.starts_with('/') {
            out.push((
                spanned.span(),
                format!("vip {name:?}: health path must start with '/'"),
            ));
        }
        match (&vip.gue_port, vip.mode) {
            (None, super::schema::Mode::Gue) => out.push((
                spanned.span(),
                format!(
                    "vip {name:?}: mode = \"gue\" needs gue_port, the UDP port the \
                     backends decapsulate on (halb backend --gue-port, or the kernel's fou)"
                ),
            )),
            (Some(p), super::schema::Mode::Gue) if *p.get_ref() == 0 => {
                out.push((p.span(), "gue_port must be 1-65535".into()))
            }
            (Some(p), m) if m != super::schema::Mode::Gue => out.push((
                p.span(),
                format!("vip {name:?}: gue_port is for mode = \"gue\" only"),
            )),
            _ => {}
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for b in &vip.backends {
            let bname = b.name.get_ref();
            if !is_token(bname) {
                out.push((
                    b.name.span(),
                    "backend name must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
                ));
            }
            if !names.insert(bname.clone()) {
                out.push((
                    b.name.span(),
                    format!("duplicate backend name {bname:?} in vip {name:?}"),
                ));
            }
            let (b6, v6) = (
                b.address.get_ref().is_ipv6(),
                vip.address.get_ref().is_ipv6(),
            );
            if vip.mode.tunnels() && v6 && !b6 {
                out.push((
                    b.address.span(),
                    format!(
                        "backend address {} is IPv4 but vip {name:?} ({}) is IPv6: halb \
                         does not send IPv6 in IPv4; give the backend its IPv6 address",
                        b.address.get_ref(),
                        vip.address.get_ref(),
                    ),
                ));
            } else if !vip.mode.tunnels() && b6 != v6 {
                out.push((
                    b.address.span(),
                    format!(
                        "backend address {} is {} but vip {name:?} ({}) is {}: DSR \
                         forwards a packet unchanged, so a backend is of its VIP's family \
                         (mode = \"ipip\" or \"gue\" reaches an IPv6 backend)",
                        b.address.get_ref(),
                        family_name(*b.address.get_ref()),
                        vip.address.get_ref(),
                        family_name(*vip.address.get_ref()),
                    ),
                ));
            }
            if let Some((_, what)) = forbidden.iter().find(|(a, _)| a == b.address.get_ref()) {
                out.push((
                    b.address.span(),
                    format!(
                        "backend address {} is {what}: frames would loop between \
                         load balancers (XDP does not decrement the TTL)",
                        b.address.get_ref()
                    ),
                ));
            }
            if !addrs.insert(*b.address.get_ref()) {
                out.push((
                    b.address.span(),
                    format!(
                        "backend address {} appears twice in vip {name:?}",
                        b.address.get_ref()
                    ),
                ));
            }
            total_backends += 1;
            if total_backends > ha_common::MAX_BACKENDS as usize {
                out.push((
                    b.name.span(),
                    format!(
                        "at most {} backends are supported in all",
                        ha_common::MAX_BACKENDS
                    ),
                ));
            }
        }
    }
    out
}

/// Reads the API token: a regular file of at most 4 KiB whose content,
/// white space around it ignored, is at least [`MIN_TOKEN_LEN`] visible
/// ASCII characters. Anything else is an error, never "no token".
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    f.take(4097)
        .read_to_string(&mut text)
        .map_err(|e| format!("{e} (the token must be text)"))?;
    if text.len() > 4096 {
        return Err("longer than 4 KiB; a token is one line".into());
    }
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "holds {} bytes of token; at least {MIN_TOKEN_LEN} are needed \
             (an empty token would let anyone drain backends)",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be visible ASCII characters, without spaces".into());
    }
    Ok(token.to_string())
}

fn is_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() <= 15 && !s.contains(['/', ' '])
}

/// `[bgp]`: one mode per node, at least one neighbour, each once, a device
/// name that is not the node's interface.
fn bgp(config: &Config, out: &mut Vec<(Range<usize>, String)>) {
    let Some(spanned) = &config.bgp else {
        return;
    };
    let b = spanned.get_ref();
    if config.has_vrrp() {
        out.push((
            spanned.span(),
            "[bgp] and VRRP ([vrrp] or [[vrrp_instance]]) cannot be used together: a node \
             runs either the VRRP pair mode (VIPs move between two nodes) or the BGP \
             scale-out mode (every node announces them); remove one"
                .into(),
        ));
    }
    if b.neighbors.is_empty() {
        out.push((
            spanned.span(),
            "[bgp] needs at least one [[bgp.neighbor]] (address and asn of the router \
             it announces the VIPs to)"
                .into(),
        ));
    }
    let mut seen = HashSet::new();
    for n in &b.neighbors {
        if !seen.insert(*n.get_ref().address.get_ref()) {
            out.push((
                n.get_ref().address.span(),
                format!("neighbor {} is listed twice", n.get_ref().address.get_ref()),
            ));
        }
    }
    let dev = b.device.get_ref();
    if !is_ifname(dev) {
        out.push((
            b.device.span(),
            format!("device must be a Linux interface name (1-15 characters), got {dev:?}"),
        ));
    } else if dev == "lo" {
        out.push((
            b.device.span(),
            "device \"lo\" exists already: the announce device is one the agent creates".into(),
        ));
    } else if dev == config.node.interface.get_ref() {
        out.push((
            b.device.span(),
            format!(
                "device {dev:?} is [node] interface: the announce device is one the \
                 agent creates and removes"
            ),
        ));
    }
}

/// The `[[vrrp_instance]]` and `[[vrrp_sync_group]]` sections against each
/// other and the VIPs: every VIP owned by exactly one instance, an address
/// by one instance, one VRID per interface, groups of known instances.
fn instances(config: &Config, out: &mut Vec<(Range<usize>, String)>) {
    if let (Some(_), Some(first)) = (&config.vrrp, config.vrrp_instances.first()) {
        out.push((
            first.span(),
            "[vrrp] and [[vrrp_instance]] cannot be used together: [vrrp] is one \
             instance owning every VIP; move it into a [[vrrp_instance]]"
                .into(),
        ));
        return;
    }
    if let Some(v) = &config.vrrp {
        if let Some(l) = &v.get_ref().vips {
            out.push((
                l.span(),
                "vips is for [[vrrp_instance]]: a [vrrp] section owns every VIP".into(),
            ));
        }
        if let Some(g) = config.sync_groups.first() {
            out.push((
                g.span(),
                "a sync group needs [[vrrp_instance]] sections to group".into(),
            ));
        }
        return;
    }
    if config.vrrp_instances.is_empty() {
        if let Some(g) = config.sync_groups.first() {
            out.push((
                g.span(),
                "a sync group needs [[vrrp_instance]] sections to group".into(),
            ));
        }
        return;
    }
    let vip_names: HashMap<&str, &super::schema::Vip> = config
        .vips()
        .map(|v| (v.name.get_ref().as_str(), v))
        .collect();
    let mut names: HashSet<&str> = HashSet::new();
    let mut owner: HashMap<&str, &str> = HashMap::new();
    let mut addr_owner: HashMap<std::net::IpAddr, &str> = HashMap::new();
    let mut vrids: HashMap<(String, bool, u8), &str> = HashMap::new();
    for spanned in &config.vrrp_instances {
        let v = spanned.get_ref();
        let Some(name) = &v.name else {
            out.push((spanned.span(), "a [[vrrp_instance]] needs a name".into()));
            continue;
        };
        let n = name.get_ref().as_str();
        if !is_token(n) {
            out.push((
                name.span(),
                "instance name must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        if !names.insert(n) {
            out.push((name.span(), format!("duplicate vrrp_instance name {n:?}")));
        }
        let iface = v.interface.as_ref().map_or_else(
            || config.node.interface.get_ref().clone(),
            |i| i.get_ref().clone(),
        );
        if let Some(i) = &v.interface {
            if i.get_ref() != config.node.interface.get_ref() {
                out.push((
                    i.span(),
                    format!(
                        "vrrp_instance {n:?} runs on {:?}, but the XDP program forwards VIP \
                         traffic on [node] interface {:?} only: its VIPs must live there",
                        i.get_ref(),
                        config.node.interface.get_ref()
                    ),
                ));
            }
        }
        // The VRID spaces of IPv4 and IPv6 are separate (RFC 5798 §7.3:
        // another virtual MAC, another group): one VRID may serve both.
        let v6 = v
            .vips
            .as_ref()
            .and_then(|l| l.get_ref().first())
            .and_then(|first| vip_names.get(first.get_ref().as_str()))
            .is_some_and(|vd| vd.address.get_ref().is_ipv6());
        if let Some(other) = vrids.insert((iface.clone(), v6, v.router_id), n) {
            out.push((
                spanned.span(),
                format!(
                    "instances {other:?} and {n:?} both use router_id {} on {iface}; \
                     a VRID names one virtual router per link and family",
                    v.router_id
                ),
            ));
        }
        let Some(list) = &v.vips else {
            out.push((
                spanned.span(),
                format!("vrrp_instance {n:?} needs vips = [...]: the VIPs it owns"),
            ));
            continue;
        };
        if list.get_ref().is_empty() {
            out.push((
                list.span(),
                format!(
                    "vrrp_instance {n:?} owns no VIP: an instance without addresses sends \
                     adverts its peers reject, and both sides become master"
                ),
            ));
        }
        for vip in list.get_ref() {
            let vn = vip.get_ref().as_str();
            let Some(vd) = vip_names.get(vn) else {
                out.push((
                    vip.span(),
                    format!("vrrp_instance {n:?} names unknown vip {vn:?}"),
                ));
                continue;
            };
            if let Some(prev) = owner.insert(vn, n) {
                let msg = if prev == n {
                    format!("vip {vn:?} is listed twice in vrrp_instance {n:?}")
                } else {
                    format!(
                        "vip {vn:?} is in two instances ({prev:?} and {n:?}); a VIP has one owner"
                    )
                };
                out.push((vip.span(), msg));
                continue;
            }
            match addr_owner.get(vd.address.get_ref()) {
                Some(prev) if *prev != n => out.push((
                    vip.span(),
                    format!(
                        "vip {vn:?} has address {}, which instance {prev:?} owns already: \
                         an address moves with one instance",
                        vd.address.get_ref()
                    ),
                )),
                _ => {
                    addr_owner.insert(*vd.address.get_ref(), n);
                }
            }
        }
    }
    for spanned in &config.vips {
        let v = spanned.get_ref();
        if !owner.contains_key(v.name.get_ref().as_str()) {
            out.push((
                v.name.span(),
                format!(
                    "vip {:?} is in no [[vrrp_instance]]: name it in the vips of the \
                     instance that owns it",
                    v.name.get_ref()
                ),
            ));
        }
    }
    let mut grouped: HashMap<&str, &str> = HashMap::new();
    let mut group_names = HashSet::new();
    for spanned in &config.sync_groups {
        let g = spanned.get_ref();
        let gn = g.name.get_ref().as_str();
        if !is_token(gn) {
            out.push((
                g.name.span(),
                "sync group name must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        if !group_names.insert(gn) {
            out.push((
                g.name.span(),
                format!("duplicate vrrp_sync_group name {gn:?}"),
            ));
        }
        if g.instances.len() < 2 {
            out.push((
                spanned.span(),
                format!("sync group {gn:?} needs at least two instances"),
            ));
        }
        for i in &g.instances {
            let iname = i.get_ref().as_str();
            if !names.contains(iname) {
                out.push((
                    i.span(),
                    format!("sync group {gn:?} names unknown instance {iname:?}"),
                ));
            } else if let Some(prev) = grouped.insert(iname, gn) {
                let msg = if prev == gn {
                    format!("instance {iname:?} is listed twice in sync group {gn:?}")
                } else {
                    format!("instance {iname:?} is in two sync groups ({prev:?} and {gn:?})")
                };
                out.push((i.span(), msg));
            }
        }
    }
}

/// Names used in paths, URLs and metric labels.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// "IPv4" or "IPv6".
fn family_name(a: std::net::IpAddr) -> &'static str {
    if a.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// A VRRP instance is of one family (RFC 5798 §1: IPv4 and IPv6 virtual
/// routers are separate): its VIPs, unicast peers and source are of the
/// family of its first VIP; VRRPv2 is IPv4 only; an IPv6 multicast
/// instance sends from a link-local address. Each problem is reported at
/// the value that breaks the rule.
fn families(config: &Config, out: &mut Vec<(std::ops::Range<usize>, String)>) {
    let by_name: HashMap<&str, &toml::Spanned<super::schema::Vip>> = config
        .vips
        .iter()
        .map(|v| (v.get_ref().name.get_ref().as_str(), v))
        .collect();
    for v in &config.vips {
        let v = v.get_ref();
        if let Some(why) = unusable(*v.address.get_ref()) {
            out.push((
                v.address.span(),
                format!("vip address {} is {why}", v.address.get_ref()),
            ));
        }
        for b in &v.backends {
            if let Some(why) = unusable(*b.address.get_ref()) {
                out.push((
                    b.address.span(),
                    format!("backend address {} is {why}", b.address.get_ref()),
                ));
            }
        }
    }
    if let Some(bgp) = &config.bgp {
        for n in &bgp.get_ref().neighbors {
            let a = n.get_ref().address.get_ref();
            if let Some(why) = unusable(*a) {
                out.push((n.get_ref().address.span(), format!("neighbor {a} is {why}")));
            }
        }
    }
    let sections = config.vrrp.iter().chain(&config.vrrp_instances);
    for section in sections {
        let v = section.get_ref();
        let label = v.name.as_ref().map_or_else(
            || "[vrrp]".to_string(),
            |n| format!("vrrp_instance {:?}", n.get_ref()),
        );
        // The VIPs it owns: the named ones, or (a lone [vrrp]) all.
        let owned: Vec<&toml::Spanned<super::schema::Vip>> = match &v.vips {
            Some(list) => list
                .get_ref()
                .iter()
                .filter_map(|n| by_name.get(n.get_ref().as_str()).copied())
                .collect(),
            None if config
                .vrrp
                .as_ref()
                .is_some_and(|s| std::ptr::eq(s, section)) =>
            {
                config.vips.iter().collect()
            }
            None => Vec::new(),
        };
        let Some(first) = owned.first() else { continue };
        let family = *first.get_ref().address.get_ref();
        for o in &owned[1..] {
            let a = o.get_ref().address.get_ref();
            if a.is_ipv6() != family.is_ipv6() {
                out.push((
                    o.get_ref().address.span(),
                    format!(
                        "{label} owns {} VIP {:?} ({}) and {} VIP {:?} ({a}): a VRRP instance \
                         is of one family; give each family a [[vrrp_instance]] of its own",
                        family_name(family),
                        first.get_ref().name.get_ref(),
                        family,
                        family_name(*a),
                        o.get_ref().name.get_ref(),
                    ),
                ));
            }
        }
        for p in &v.unicast_peers {
            if p.get_ref().is_ipv6() != family.is_ipv6() {
                out.push((
                    p.span(),
                    format!(
                        "unicast peer {} is {}, but {label} is {} (its VIPs)",
                        p.get_ref(),
                        family_name(*p.get_ref()),
                        family_name(family)
                    ),
                ));
            }
        }
        // IPv6 unicast peers are all link-local or all global, and the
        // source is of their kind: each side's source is what the other
        // lists.
        let ll = crate::net::link_local;
        if family.is_ipv6() {
            if let Some(first) = v.unicast_peers.first() {
                let kind = ll(first.get_ref());
                for p in &v.unicast_peers[1..] {
                    if ll(p.get_ref()) != kind {
                        out.push((
                            p.span(),
                            format!(
                                "{label} mixes link-local and global unicast peers ({} and {}): \
                                 list them all of one kind",
                                first.get_ref(),
                                p.get_ref()
                            ),
                        ));
                    }
                }
                if let Some(src) = &v.source {
                    if src.get_ref().is_ipv6() && ll(src.get_ref()) != kind {
                        out.push((
                            src.span(),
                            format!(
                                "source {} and unicast peer {} are not of one kind (link-local \
                                 or global): the peer would not recognise this node's adverts",
                                src.get_ref(),
                                first.get_ref()
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(src) = &v.source {
            let a = *src.get_ref();
            if a.is_ipv6() != family.is_ipv6() {
                out.push((
                    src.span(),
                    format!(
                        "source {a} is {}, but {label} is {} (its VIPs)",
                        family_name(a),
                        family_name(family)
                    ),
                ));
            } else if let std::net::IpAddr::V6(a6) = a {
                if v.unicast_peers.is_empty() && !a6.is_unicast_link_local() {
                    out.push((
                        src.span(),
                        format!(
                            "source {a} is not link-local: IPv6 VRRP adverts to ff02::12 \
                             are sent from the interface's link-local address (RFC 5798 \
                             §5.1.2.1), and peers drop others; leave source out"
                        ),
                    ));
                }
            }
        }
        if family.is_ipv6() && v.version == 2 {
            out.push((
                section.span(),
                format!(
                    "{label} has IPv6 VIPs but version = 2: VRRPv2 is IPv4 only (RFC 3768); \
                     use version = 3"
                ),
            ));
        }
    }
    if let Some(bgp) = &config.bgp {
        // A session announces the VIPs of its own family (an IPv4 session
        // has no IPv6 next hop to give, and the other way round).
        let neighbours = &bgp.get_ref().neighbors;
        for v in config.vips() {
            let a = *v.address.get_ref();
            if !neighbours.is_empty()
                && !neighbours
                    .iter()
                    .any(|n| n.get_ref().address.get_ref().is_ipv6() == a.is_ipv6())
            {
                out.push((
                    v.address.span(),
                    format!(
                        "vip {:?} is {}, but no [[bgp.neighbor]] is: a BGP session announces \
                         the VIPs of its family; add a neighbor address of that family",
                        v.name.get_ref(),
                        family_name(a)
                    ),
                ));
            }
        }
    }
}

/// Why `a` cannot be a VIP or backend address, if it cannot: a wildcard,
/// loopback, multicast, an IPv6 link-local address (it needs a zone, and a
/// DSR service cannot be reached through one) or an IPv4-mapped IPv6
/// address (its packets are IPv4 on the wire).
fn unusable(a: std::net::IpAddr) -> Option<&'static str> {
    match a {
        _ if a.is_unspecified() => Some("the unspecified address"),
        _ if a.is_loopback() => Some("a loopback address"),
        _ if a.is_multicast() => Some("a multicast address"),
        std::net::IpAddr::V6(a6) if a6.is_unicast_link_local() => {
            Some("link-local (fe80::/10): it needs a zone; use a global or ULA address")
        }
        std::net::IpAddr::V6(a6) if a6.to_ipv4_mapped().is_some() => {
            Some("IPv4-mapped (::ffff:0:0/96): write the IPv4 address itself")
        }
        _ => None,
    }
}
