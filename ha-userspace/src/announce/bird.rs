//! The routing daemon's side (BIRD 2): its configuration rendered from
//! `[bgp]` (`halb bird-config`), and the state of its sessions read from
//! its control socket (`show protocols`), for status only: nothing halb
//! announces depends on this socket.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::config::Bgp;

/// BIRD's name for the table of halb's IPv4 routes.
pub const TABLE: &str = "halb_vips";
/// BIRD's name for the table of halb's IPv6 routes.
pub const TABLE6: &str = "halb_vips6";

/// A BIRD 2 configuration for a node with `bgp`; `router_id` is used when
/// `[bgp] router_id` is not set (the node's address).
pub fn render(bgp: &Bgp, node: &str, router_id: Ipv4Addr) -> String {
    let rid = bgp.router_id.unwrap_or(router_id);
    let mut c = String::new();
    let _ = write!(
        c,
        "# BIRD 2 configuration for halb node {node}, written by `halb bird-config`\n\
         # from its [bgp] section. halb puts one host route per VIP it announces into\n\
         # kernel table {table} (protocol {proto}, through its device {dev}); this\n\
         # configuration learns that table and exports it to the neighbours. When\n\
         # the agent stops or dies, the kernel deletes the device and its routes,\n\
         # and BIRD withdraws at once.\n\
         log syslog all;\n\
         router id {rid};\n\n\
         protocol device {{\n}}\n\n\
         ipv4 table {TABLE};\n\
         ipv6 table {TABLE6};\n\n\
         protocol kernel halb_routes {{\n\
         \x20   kernel table {table};\n\
         \x20   learn;          # the routes are halb's, not BIRD's\n\
         \x20   scan time 10;   # changes arrive by netlink at once; the scan is a safety net\n\
         \x20   ipv4 {{\n\
         \x20       table {TABLE};\n\
         \x20       import filter {{ if krt_source = {proto} && net.len = 32 then accept; reject; }};\n\
         \x20       export none;\n\
         \x20   }};\n\
         }}\n\n\
         protocol kernel halb_routes6 {{\n\
         \x20   kernel table {table};\n\
         \x20   learn;\n\
         \x20   scan time 10;\n\
         \x20   ipv6 {{\n\
         \x20       table {TABLE6};\n\
         \x20       import filter {{ if krt_source = {proto} && net.len = 128 then accept; reject; }};\n\
         \x20       export none;\n\
         \x20   }};\n\
         }}\n\n\
         protocol bfd {{\n\
         \x20   interface \"*\" {{\n\
         \x20       min rx interval {bfd} ms;\n\
         \x20       min tx interval {bfd} ms;\n\
         \x20       multiplier {mult};\n\
         \x20   }};\n\
         }}\n",
        table = bgp.table,
        proto = bgp.route_protocol,
        dev = bgp.device.get_ref(),
        bfd = bgp.bfd.interval_ms,
        mult = bgp.bfd.multiplier,
    );
    for n in &bgp.neighbors {
        let n = n.get_ref();
        let addr = n.address.get_ref();
        let _ = write!(
            c,
            "\nprotocol bgp {name} {{\n\
             \x20   local as {local};\n\
             \x20   neighbor {addr} as {asn};\n\
             \x20   direct;         # the router is on the node's segment (also for iBGP)\n\
             \x20   bfd {bfd};\n\
             \x20   connect delay time 1;\n\
             \x20   connect retry time 2;\n\
             \x20   error wait time 1, 10;\n\
             \x20   {family} {{\n\
             \x20       table {table};\n\
             \x20       import none;\n\
             \x20       export where net.len = {len};\n\
             \x20       next hop self;\n\
             \x20   }};\n\
             }}\n",
            name = protocol_name(*addr),
            local = bgp.local_asn,
            asn = n.asn,
            bfd = if n.bfd { "on" } else { "off" },
            // The session carries the VIPs of its own family.
            family = if addr.is_ipv6() { "ipv6" } else { "ipv4" },
            table = if addr.is_ipv6() { TABLE6 } else { TABLE },
            len = crate::net::host_len(*addr),
        );
    }
    c
}

/// BIRD's protocol name for the session with `addr`: `halb_10_77_0_1`,
/// `halb_fd77__1` (BIRD names are letters, digits and underscores).
pub fn protocol_name(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("halb_{}_{}_{}_{}", o[0], o[1], o[2], o[3])
        }
        IpAddr::V6(a) => format!("halb_{}", a.to_string().replace(':', "_")),
    }
}

/// One protocol of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Name.
    pub name: String,
    /// Kind (`BGP`, `BFD`, `Kernel`, ...).
    pub proto: String,
    /// `up`, `start`, `down`, ...
    pub state: String,
    /// For BGP: `Established`, `Active`, `Connect`, ... (and any error).
    pub info: String,
}

/// Errors talking to BIRD.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    /// The socket failed.
    #[error("BIRD control socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// BIRD did not answer in time.
    #[error("BIRD control socket {0}: no answer within 2 s")]
    Timeout(String),
    /// BIRD answered with an error code.
    #[error("BIRD: {0}")]
    Reply(String),
}

/// Reads `show protocols` from BIRD's control socket at `path`.
pub async fn protocols(path: &Path) -> Result<Vec<Protocol>, BirdError> {
    let p = path.display().to_string();
    match tokio::time::timeout(Duration::from_secs(2), ask(path, "show protocols")).await {
        Ok(Ok(lines)) => Ok(parse_protocols(&lines)),
        Ok(Err(BirdError::Io { source, .. })) => Err(BirdError::Io { path: p, source }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BirdError::Timeout(p)),
    }
}

/// Sends `cmd` and returns the reply's lines as (code, text), the framing
/// removed: BIRD prefixes each line with a four-digit code and `-` (more
/// lines follow) or ` ` (last line); a continuation of the same code
/// starts with a space instead.
async fn ask(path: &Path, cmd: &str) -> Result<Vec<(u16, String)>, BirdError> {
    let io = |source| BirdError::Io {
        path: path.display().to_string(),
        source,
    };
    let stream = tokio::net::UnixStream::connect(path).await.map_err(io)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    // The greeting: "0001 BIRD 2.0.12 ready."
    read_reply(&mut r).await.map_err(io)?;
    w.write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(io)?;
    let lines = read_reply(&mut r).await.map_err(io)?;
    if let Some((code, text)) = lines.iter().find(|(c, _)| *c >= 8000) {
        return Err(BirdError::Reply(format!("{code} {text}")));
    }
    Ok(lines)
}

/// One reply, up to and including its last line (bounded: 4096 lines).
async fn read_reply(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> std::io::Result<Vec<(u16, String)>> {
    let mut out = Vec::new();
    let mut code = 0u16;
    let mut line = String::new();
    for _ in 0..4096 {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        match frame(l) {
            Frame::Line { c, last, text } => {
                code = c;
                out.push((c, text.to_string()));
                if last {
                    return Ok(out);
                }
            }
            Frame::More(text) => out.push((code, text.to_string())),
        }
    }
    Err(std::io::Error::other("reply longer than 4096 lines"))
}

enum Frame<'a> {
    Line { c: u16, last: bool, text: &'a str },
    More(&'a str),
}

fn frame(l: &str) -> Frame<'_> {
    let b = l.as_bytes();
    if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && (b[4] == b'-' || b[4] == b' ') {
        let c = l[..4].parse().unwrap_or(0);
        Frame::Line {
            c,
            last: b[4] == b' ',
            text: &l[5..],
        }
    } else {
        Frame::More(l.strip_prefix(' ').unwrap_or(l))
    }
}

/// The rows of a `show protocols` reply (code 1002; the header is 2002).
pub fn parse_protocols(lines: &[(u16, String)]) -> Vec<Protocol> {
    lines
        .iter()
        .filter(|(c, _)| *c == 1002)
        .filter_map(|(_, text)| {
            let mut w = text.split_whitespace();
            let name = w.next()?.to_string();
            let proto = w.next()?.to_string();
            let _table = w.next()?;
            let state = w.next()?.to_string();
            let _since = w.next()?;
            let info = w.collect::<Vec<_>>().join(" ");
            Some(Protocol {
                name,
                proto,
                state,
                info,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_protocols_is_parsed() {
        let raw = "2002-Name       Proto      Table      State  Since         Info\n\
                   1002-device1    Device     ---        up     23:26:16.493  \n\
                   \x20halb_routes Kernel     halb_vips  up     23:26:16.503  \n\
                   \x20halb_10_77_0_1 BGP        ---        up     23:26:21.141  Established   \n\
                   \x20bfd1       BFD        ---        up     23:26:16.503  \n\
                   \x20halb_10_77_0_9 BGP        ---        start  23:26:16.503  Active        Socket: Connection refused\n\
                   0000 \n";
        let lines: Vec<(u16, String)> = {
            let mut code = 0;
            raw.lines()
                .map(|l| match frame(l) {
                    Frame::Line { c, text, .. } => {
                        code = c;
                        (c, text.to_string())
                    }
                    Frame::More(t) => (code, t.to_string()),
                })
                .collect()
        };
        let p = parse_protocols(&lines);
        assert_eq!(p.len(), 5);
        assert_eq!(
            p[2],
            Protocol {
                name: "halb_10_77_0_1".into(),
                proto: "BGP".into(),
                state: "up".into(),
                info: "Established".into(),
            }
        );
        assert_eq!(p[4].info, "Active Socket: Connection refused");
    }

    #[test]
    fn the_rendered_config_names_every_neighbour() {
        let cfg = crate::config::parse(
            Path::new("halb.toml"),
            "[node]\ninterface = \"eth0\"\n[bgp]\nlocal_asn = 65001\n\
             [[bgp.neighbor]]\naddress = \"10.77.0.1\"\nasn = 65000\n\
             [[bgp.neighbor]]\naddress = \"10.77.0.5\"\nasn = 65000\nbfd = false\n\
             [[bgp.neighbor]]\naddress = \"fd77::1\"\nasn = 65000\n",
        )
        .expect("config");
        let bgp = cfg.bgp.as_ref().expect("bgp").get_ref();
        let c = render(bgp, "lb1", Ipv4Addr::new(10, 77, 0, 2));
        assert!(c.contains("router id 10.77.0.2;"));
        assert!(c.contains("kernel table 4077;"));
        assert!(c.contains("if krt_source = 77 && net.len = 32 then accept;"));
        assert!(c.contains("protocol bgp halb_10_77_0_1 {"));
        assert!(c.contains("neighbor 10.77.0.5 as 65000;\n    direct;"));
        assert!(c.contains("    bfd off;"));
        assert!(c.contains("min rx interval 50 ms;"));
        // IPv6: its own table and kernel protocol, and the IPv6 session
        // carries the /128s.
        assert!(c.contains("ipv6 table halb_vips6;"));
        assert!(c.contains("if krt_source = 77 && net.len = 128 then accept;"));
        let v6 = c
            .split("protocol bgp halb_fd77__1 {")
            .nth(1)
            .expect("v6 session");
        let v6 = v6.split("\n}\n").next().unwrap_or_default();
        assert!(v6.contains("neighbor fd77::1 as 65000;"), "{v6}");
        assert!(v6.contains("ipv6 {\n        table halb_vips6;"), "{v6}");
        assert!(v6.contains("export where net.len = 128;"), "{v6}");
        let v4 = c
            .split("protocol bgp halb_10_77_0_1 {")
            .nth(1)
            .expect("v4 session");
        let v4 = v4.split("\n}\n").next().unwrap_or_default();
        assert!(v4.contains("ipv4 {\n        table halb_vips;"), "{v4}");
    }
}
