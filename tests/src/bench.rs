//! `cargo xtask bench dataplane`: per-packet cost of the XDP program through
//! `BPF_PROG_TEST_RUN`, beside an empty `XDP_PASS` program measured in the
//! same run, and the Maglev table build time.
//!
//! Method (see docs/toolchain.md): with `repeat`, the kernel runs the
//! program N times on one buffer and reports the mean; DSR only rewrites
//! MACs, so an established-flow frame stays one through every repeat. A new
//! flow cannot be repeated (the first run records it), so new flows are
//! timed one call each, over a small set of flows whose entries the
//! benchmark deletes (untimed) after every round: the flow table stays
//! empty for them, and caches are as warm as for the repeated runs. The
//! empty program and the established path are timed the same way; the
//! established figure from single calls must agree with the repeated one,
//! which checks the method. A cold variant (100,000 distinct flows, each
//! seen once) is reported too. Every timed run's action is checked.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use ha_common::decap::DecapStat;
use ha_common::{ports_raw, FlowKey, Meta, Stat, IPPROTO_TCP};
use halb::dataplane::decap::{Decap, DecapConf};
use halb::dataplane::maglev::{self, Member};
use halb::dataplane::{
    BackendSpec, Encap, Maps, Service, Tunnel, VipSpec, Writer, PASS_OBJECT, PASS_PROGRAM,
    XDP_OBJECT, XDP_PROGRAM,
};

/// The GUE port of the benchmark's GUE VIP.
const GUE_PORT: u16 = 6080;

use crate::frame::{Frame, Frame6};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// Mean nanoseconds per packet (or per build for Maglev, in ns too).
    pub ns: f64,
    /// Cost above the empty program measured the same way, where it applies.
    pub over_empty: Option<f64>,
    /// The goal, as text.
    pub goal: String,
    /// Whether the goal was met.
    pub met: bool,
}

fn load(obj: &[u8], name: &str) -> Result<Ebpf> {
    if obj.is_empty() {
        bail!("halb was built without its eBPF objects; run `cargo xtask build`");
    }
    let mut ebpf = EbpfLoader::new().load(obj).context("load object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .context("program")?
        .try_into()
        .context("xdp")?;
    prog.load().context("verifier")?;
    Ok(ebpf)
}

fn prog<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    Ok(ebpf.program(name).context("program")?.try_into()?)
}

/// Mean ns per run over `repeat` runs of one frame; checks the action.
fn repeat_ns(p: &Xdp, frame: &[u8], repeat: u32, want: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 64];
    let r = p.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    })?;
    if r.return_value != want {
        bail!("action {} where {want} was expected", r.return_value);
    }
    Ok(r.duration.as_nanos() as f64)
}

/// Like [`single_ns`] for the XDP program, also checking that every call
/// was counted under `stat` (new flow or flow hit, as intended).
fn single_ns_stat(p: &Xdp, frames: &[Vec<u8>], w: &Writer<Maps>, stat: Stat) -> Result<f64> {
    let count =
        |w: &Writer<Maps>| -> Result<u64> { Ok(w.store().stats()?[stat as usize].1.packets) };
    let before = count(w)?;
    let ns = single_ns(p, frames, XDP_TX)?;
    if count(w)? != before + frames.len() as u64 {
        bail!("not every timed call took the {} path", stat.name());
    }
    Ok(ns)
}

/// Mean kernel-timed ns of single runs over many frames; checks the action.
fn single_ns(p: &Xdp, frames: &[Vec<u8>], want: u32) -> Result<f64> {
    let mut total = Duration::ZERO;
    let mut out = vec![0u8; 256];
    for f in frames {
        let r = p.test_run(TestRunOptions {
            data_in: Some(f),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })?;
        if r.return_value != want {
            bail!("action {} where {want} was expected", r.return_value);
        }
        total += r.duration;
    }
    Ok(total.as_nanos() as f64 / frames.len() as f64)
}

/// Keeps the benchmark on one CPU (test runs execute on the caller's CPU),
/// so that no series pays for a migration the others did not.
fn pin_to_last_cpu() {
    // SAFETY: sysconf and sched_setaffinity on this process with a zeroed,
    // then filled, cpu_set_t.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(n - 1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Frame's default destination MAC, used for everything in the benchmark.
const BENCH_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xff];

/// The benchmark's VIP: 10.77.0.x:80 over three backends.
fn writer_spec(vip: [u8; 4]) -> VipSpec {
    VipSpec {
        service: Service::new(Ipv4Addr::from(vip), 80, IPPROTO_TCP),
        table_size: ha_common::DEFAULT_RING_SIZE,
        source_hash: false,
        encap: Encap::Dsr,
        backends: (1..=3)
            .map(|i| BackendSpec {
                addr: Ipv4Addr::new(10, 77, 0, 20 + i).into(),
                mac: Some(BENCH_MAC),
                weight: 1,
                healthy: true,
                tunnel: None,
            })
            .collect(),
    }
}

/// Decapsulation trials (calls of `levels` repeats each).
const TUNNEL_TRIALS: usize = 501;

/// `frame` (Ethernet, one `hdr`-byte outer IPv4 header with GUE's UDP
/// header when `hdr` is 28, then the inner packet) wrapped in `levels`
/// such outer headers to the inner packet's destination, each one's
/// lengths and checksum right. (The decapsulating host must count that
/// address as its own too: every repeat then does the work of one VIP
/// packet, an outer destination of the host and an inner one of a VIP.)
fn nest(frame: &[u8], hdr: usize, levels: usize) -> Vec<u8> {
    let template = &frame[14..14 + hdr];
    let mut pkt = frame[14 + hdr..].to_vec();
    // Every level to the inner packet's destination (the VIP), so that
    // each repeat decapsulates a packet for a VIP, as traffic is.
    let vip = [pkt[16], pkt[17], pkt[18], pkt[19]];
    for _ in 0..levels {
        let mut h = template.to_vec();
        h[16..20].copy_from_slice(&vip);
        let total = (hdr + pkt.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let sum = crate::frame::checksum(&h[..20]);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        if hdr == 28 {
            h[24..26].copy_from_slice(&(8 + pkt.len() as u16).to_be_bytes());
        }
        h.extend_from_slice(&pkt);
        pkt = h;
    }
    let mut out = frame[..14].to_vec();
    out.extend_from_slice(&pkt);
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn tcp(src: u32, sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    Frame::tcp(src.to_be_bytes(), dst, sport, dport)
        .payload(vec![0; 10])
        .build()
}

/// Runs the data-plane benchmark with `repeat` repeats (≥ 1,000,000 for the
/// reported figures) and `flows` distinct new flows for the cold variant.
pub fn dataplane(repeat: u32, flows: u32) -> Result<Vec<Figure>> {
    pin_to_last_cpu();
    let vip = [10, 77, 0, 100];
    let pass = load(PASS_OBJECT, PASS_PROGRAM)?;
    let mut xdp = load(XDP_OBJECT, XDP_PROGRAM)?;
    let mut maps = Maps::take(&mut xdp)?;
    // Repeated runs reuse one buffer, so the rewritten frame must still be
    // one this node forwards: the interface, the frames' destination and
    // the backends share one MAC here (the work per packet is the same).
    maps.set_meta(&Meta {
        mac: BENCH_MAC,
        live_units: 60,
        ..Default::default()
    })?;
    let mut writer = Writer::adopt(maps)?;
    // A second VIP with source-IP affinity, timed against the first.
    let src_vip = [10, 77, 0, 101];
    let mut src_spec = writer_spec(src_vip);
    src_spec.source_hash = true;
    // An IPv6 VIP beside them, timed in the same trials.
    let vip6 = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100);
    let v6_spec = VipSpec {
        service: Service::new(vip6, 80, IPPROTO_TCP),
        table_size: ha_common::DEFAULT_RING_SIZE,
        source_hash: false,
        encap: Encap::Dsr,
        backends: (1..=3u16)
            .map(|i| BackendSpec {
                addr: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x20 + i).into(),
                mac: Some(BENCH_MAC),
                weight: 1,
                healthy: true,
                tunnel: None,
            })
            .collect(),
    };
    // Two VIPs whose backends are routed: IP in IP and GUE.
    let (ipip_vip, gue_vip) = ([10, 77, 0, 102], [10, 77, 0, 103]);
    let routed_addrs: Vec<std::net::IpAddr> = (1..=3u8)
        .map(|i| Ipv4Addr::new(10, 78, 0, 30 + i).into())
        .collect();
    let tunnelled = |vip: [u8; 4], encap: Encap| {
        let mut s = writer_spec(vip);
        s.encap = encap;
        for (b, a) in s.backends.iter_mut().zip(&routed_addrs) {
            b.addr = *a;
            b.tunnel = Some(Tunnel {
                source: Ipv4Addr::new(10, 77, 0, 2).into(),
                mtu: 1500,
            });
        }
        s
    };
    writer.apply(&[
        writer_spec(vip),
        src_spec,
        v6_spec,
        tunnelled(ipip_vip, Encap::Ipip),
        tunnelled(gue_vip, Encap::Gue { port: GUE_PORT }),
    ])?;
    let pass_p = prog(&pass, PASS_PROGRAM)?;
    let xdp_p = prog(&xdp, XDP_PROGRAM)?;

    let established = tcp(0x0a4d_000a, 40000, vip, 80);
    let established_src = tcp(0x0a4d_000a, 40000, src_vip, 80);
    let non_vip = tcp(0x0a4d_000a, 40000, [10, 77, 0, 2], 22);
    let client6 = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10).octets();
    let tcp6 = |dst: Ipv6Addr, dport: u16, flags: u8| {
        Frame6::tcp(client6, dst.octets(), 40000, dport)
            .tcp_flags(flags)
            .payload(vec![0; 10])
            .build()
    };
    let established6 = tcp6(vip6, 80, 0x10);
    let syn6 = tcp6(vip6, 80, 0x02);
    let non_vip6 = tcp6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2), 22, 0x10);
    // Warm up and create the established flow.
    repeat_ns(xdp_p, &established, 1000, XDP_TX)?;
    repeat_ns(xdp_p, &established_src, 1000, XDP_TX)?;
    repeat_ns(xdp_p, &established6, 1000, XDP_TX)?;
    repeat_ns(pass_p, &established, 1000, XDP_PASS)?;

    // Five interleaved trials of `repeat` runs each; the median of each
    // series is reported (this VM shares its CPUs, and a trial can be hit
    // by a neighbour; interleaving spreads drift over all series).
    const TRIALS: usize = 5;
    // A TCP SYN always takes the new-flow path, so it can be repeated: what
    // every new connection costs (in an unchanged slot: the ring, no record).
    let syn = Frame::tcp([10, 77, 0, 10], vip, 40001, 80)
        .tcp_flags(0x02)
        .build();
    let (mut empty, mut est, mut miss, mut syns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut est_src = Vec::new();
    let (mut est6, mut miss6, mut syns6) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..TRIALS {
        est6.push(repeat_ns(xdp_p, &established6, repeat, XDP_TX)?);
        miss6.push(repeat_ns(xdp_p, &non_vip6, repeat, XDP_PASS)?);
        syns6.push(repeat_ns(xdp_p, &syn6, repeat, XDP_TX)?);
        empty.push(repeat_ns(pass_p, &established, repeat, XDP_PASS)?);
        est.push(repeat_ns(xdp_p, &established, repeat, XDP_TX)?);
        est_src.push(repeat_ns(xdp_p, &established_src, repeat, XDP_TX)?);
        miss.push(repeat_ns(xdp_p, &non_vip, repeat, XDP_PASS)?);
        let before = writer.store().stats()?[Stat::TxNewFlow as usize].1.packets;
        syns.push(repeat_ns(xdp_p, &syn, repeat, XDP_TX)?);
        let after = writer.store().stats()?[Stat::TxNewFlow as usize].1.packets;
        if after != before + repeat as u64 {
            bail!("a repeated SYN did not take the new-flow path every time");
        }
    }
    let (empty, est, miss, syn_ns) = (median(empty), median(est), median(miss), median(syns));
    let est_src = median(est_src);
    let (est6, miss6, syn6_ns) = (median(est6), median(miss6), median(syns6));
    let ring_hits = writer.store().stats()?[Stat::TxRing as usize].1.packets;
    if ring_hits < 3 * TRIALS as u64 * repeat as u64 {
        bail!("the established packet did not take the ring path every time");
    }

    // Routed backends: established flows to the IP-in-IP and the GUE VIP,
    // and the backend side's decapsulation of what they become. One call
    // per packet (encapsulation rewrites the frame, see docs/toolchain.md),
    // beside the empty program and the DSR path timed the same way.
    let acks = |vip: [u8; 4]| -> Vec<Vec<u8>> {
        (0..64u32)
            .map(|i| tcp(0x0a4d_1000 + i, 3000 + i as u16, vip, 80))
            .collect()
    };
    let (dsr_acks, ipip_acks, gue_acks) = (acks(vip), acks(ipip_vip), acks(gue_vip));
    let sent = |frames: &[Vec<u8>]| -> Result<Vec<Vec<u8>>> {
        frames
            .iter()
            .map(|f| {
                let mut out = vec![0u8; f.len() + 64];
                let r = xdp_p.test_run(TestRunOptions {
                    data_in: Some(f),
                    data_out: Some(&mut out),
                    repeat: 1,
                    ..Default::default()
                })?;
                if r.return_value != XDP_TX || r.data_size_out as usize <= f.len() {
                    bail!("a packet for a routed backend was not encapsulated");
                }
                out.truncate(r.data_size_out as usize);
                Ok(out)
            })
            .collect()
    };
    let (ipip_out, gue_out) = (sent(&ipip_acks)?, sent(&gue_acks)?);
    let mut decap = Decap::load(DecapConf {
        ipip: true,
        gue_port: Some(GUE_PORT),
    })?;
    let vips: Vec<std::net::IpAddr> = vec![
        Ipv4Addr::from(ipip_vip).into(),
        Ipv4Addr::from(gue_vip).into(),
    ];
    let local: Vec<std::net::IpAddr> = routed_addrs.iter().chain(&vips).copied().collect();
    decap.set_addresses(&vips, &local)?;
    let decapsulated = |d: &Decap| -> Result<u64> {
        Ok(d.stats()?
            .iter()
            .filter(|(s, _)| matches!(s, DecapStat::Ipip | DecapStat::Gue))
            .map(|(_, c)| c.packets)
            .sum())
    };
    let (mut r_empty, mut r_dsr, mut r_ipip, mut r_gue) = (vec![], vec![], vec![], vec![]);
    let tunnel_rounds = 301;
    for _ in 0..tunnel_rounds {
        r_empty.push(single_ns(pass_p, &dsr_acks, XDP_PASS)?);
        r_dsr.push(single_ns_stat(xdp_p, &dsr_acks, &writer, Stat::TxRing)?);
        r_ipip.push(single_ns_stat(xdp_p, &ipip_acks, &writer, Stat::TxRing)?);
        r_gue.push(single_ns_stat(xdp_p, &gue_acks, &writer, Stat::TxRing)?);
    }
    // Decapsulation repeats: a packet wrapped in as many outer headers as
    // the run has repeats, each like the node's, so that every repeat
    // removes one (the last leaves the client's packet).
    let (ipip_nest, gue_nest) = (nest(&ipip_out[0], 20, 150), nest(&gue_out[0], 28, 110));
    let (mut r_dempty, mut r_dipip, mut r_dgue) = (vec![], vec![], vec![]);
    for _ in 0..TUNNEL_TRIALS {
        for (frame, levels, inner, out) in [
            (&ipip_nest, 150u32, &ipip_out[0], &mut r_dipip),
            (&gue_nest, 110, &gue_out[0], &mut r_dgue),
        ] {
            let before = decapsulated(&decap)?;
            let mut buf = vec![0u8; frame.len() + 64];
            let r = decap.program()?.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut buf),
                repeat: levels,
                ..Default::default()
            })?;
            let hdr = if levels == 150 { 20 } else { 28 };
            if r.return_value != XDP_PASS
                || decapsulated(&decap)? != before + levels as u64
                || buf[14..r.data_size_out as usize] != inner[14 + hdr..]
            {
                bail!("a repeat did not remove exactly one outer header");
            }
            out.push(r.duration.as_nanos() as f64);
        }
        r_dempty.push(repeat_ns(pass_p, &ipip_nest, 150, XDP_PASS)?);
    }
    let (t_empty1, t_dsr, t_ipip, t_gue) = (
        median(r_empty),
        median(r_dsr),
        median(r_ipip),
        median(r_gue),
    );
    let (t_dempty, t_dipip, t_dgue) = (median(r_dempty), median(r_dipip), median(r_dgue));
    drop(decap);

    // Every slot changed (a new table size marks them all): from here on
    // packets go through the flow table, the path of flows in slots that
    // a backend change moved.
    let mut changed_spec = writer_spec(vip);
    changed_spec.table_size = 65521;
    writer.apply(std::slice::from_ref(&changed_spec))?;
    repeat_ns(xdp_p, &established, 1000, XDP_TX)?;
    let (mut c_est, mut c_syns) = (Vec::new(), Vec::new());
    for _ in 0..TRIALS {
        let hits = writer.store().stats()?[Stat::TxFlowHit as usize].1.packets;
        c_est.push(repeat_ns(xdp_p, &established, repeat, XDP_TX)?);
        if writer.store().stats()?[Stat::TxFlowHit as usize].1.packets != hits + repeat as u64 {
            bail!("the established packet in a changed slot did not hit its entry every time");
        }
        c_syns.push(repeat_ns(xdp_p, &syn, repeat, XDP_TX)?);
    }
    let (c_est, c_syn) = (median(c_est), median(c_syns));

    // New flows, warm: WARM_FLOWS flows, one call each, their entries
    // deleted after each round so every timed call is a new flow.
    const WARM_FLOWS: u32 = 64;
    let rounds = (repeat / WARM_FLOWS / 8).max(101);
    let warm: Vec<(Vec<u8>, FlowKey)> = (0..WARM_FLOWS)
        .map(|i| {
            let saddr = 0x0c00_0000 + i;
            let sport = 2000 + i as u16;
            let key = FlowKey {
                saddr: u32::from_ne_bytes(saddr.to_be_bytes()),
                daddr: u32::from_ne_bytes(vip),
                ports: ports_raw(sport, 80),
                proto: IPPROTO_TCP as u32,
            };
            (tcp(saddr, sport, vip, 80), key)
        })
        .collect();
    let frames: Vec<Vec<u8>> = warm.iter().map(|(f, _)| f.clone()).collect();
    let (mut t_empty, mut t_new, mut t_est) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (_, k) in &warm {
            writer.store_mut().remove_flow(k)?;
        }
        t_empty.push(single_ns(pass_p, &frames, XDP_PASS)?);
        t_new.push(single_ns_stat(xdp_p, &frames, &writer, Stat::TxFlowMiss)?);
        t_est.push(single_ns_stat(xdp_p, &frames, &writer, Stat::TxFlowHit)?);
    }
    let (empty_single, new_flow, est_single) = (median(t_empty), median(t_new), median(t_est));

    // New flows, cold: many distinct flows, each seen once.
    let cold: Vec<Vec<u8>> = (0..flows)
        .map(|i| {
            tcp(
                0x0b00_0000 + i / 50_000,
                (i % 50_000) as u16 + 1024,
                vip,
                80,
            )
        })
        .collect();
    let empty_cold = single_ns(pass_p, &cold, XDP_PASS)?;
    let new_cold = single_ns(xdp_p, &cold, XDP_TX)?;

    // Maglev, 1000 backends, default table size.
    let members: Vec<Member> = (0..1000u32)
        .map(|i| Member {
            key: maglev::member_key(Ipv4Addr::from(0x0a00_0000 + i).into(), 0),
            weight: 1 + i % 3,
        })
        .collect();
    let mut builds = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let table = maglev::build(&members, ha_common::DEFAULT_RING_SIZE);
        builds.push(t.elapsed());
        if table.len() != ha_common::DEFAULT_RING_SIZE as usize {
            bail!("bad table");
        }
    }
    builds.sort();
    let maglev_ns = builds[builds.len() / 2].as_nanos() as f64;

    let fig = |what: &str, ns: f64, base: f64, budget: f64, goal: &str| Figure {
        what: what.into(),
        ns,
        over_empty: Some(ns - base),
        goal: goal.into(),
        met: ns - base <= budget,
    };
    // A health change reaching the maps: 1000 backends on one VIP, one goes
    // down and comes back, each an apply() with a new Maglev table.
    let big_key = Service::new(Ipv4Addr::new(10, 77, 1, 100), 80, IPPROTO_TCP);
    let mut big = VipSpec {
        service: big_key,
        table_size: ha_common::DEFAULT_RING_SIZE,
        source_hash: false,
        encap: Encap::Dsr,
        backends: (0..1000u32)
            .map(|i| BackendSpec {
                addr: Ipv4Addr::from(0x0a4e_0000 + i).into(),
                mac: Some([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
                weight: 1,
                healthy: true,
                tunnel: None,
            })
            .collect(),
    };
    let base_vip = writer_spec(vip);
    writer.apply(&[base_vip.clone(), big.clone()])?;
    let mut updates = Vec::new();
    for i in 0..21 {
        big.backends[i * 7].healthy = !big.backends[i * 7].healthy;
        let t = Instant::now();
        let r = writer.apply(&[base_vip.clone(), big.clone()])?;
        updates.push(t.elapsed().as_nanos() as f64);
        if r.tables_swapped != 1 {
            bail!("a health change did not swap one table: {r:?}");
        }
    }
    let update_ns = median(updates);

    let import_ns = import_200()?;
    Ok(vec![
        Figure {
            what: format!("empty XDP_PASS program (repeat {repeat}, median of 5)"),
            ns: empty,
            over_empty: None,
            goal: "baseline".into(),
            met: true,
        },
        fig(
            &format!("established flow, unchanged slot: ring, no flow table (repeat {repeat}, median of 5)"),
            est,
            empty,
            40.0,
            "≤ empty + 40 ns",
        ),
        Figure {
            what: format!(
                "established flow, unchanged slot, source-IP affinity (repeat {repeat}, median of 5)"
            ),
            ns: est_src,
            over_empty: Some(est_src - empty),
            goal: format!(
                "≤ five-tuple + 3 ns (measured {:+.1} ns)",
                est_src - est
            ),
            met: est_src - est <= 3.0,
        },
        fig(
            &format!("new-flow VIP packet: TCP SYN (repeat {repeat}, median of 5)"),
            syn_ns,
            empty,
            120.0,
            "≤ empty + 120 ns",
        ),
        fig(
            &format!(
                "established flow in a changed slot: flow-table hit (repeat {repeat}, median of 5)"
            ),
            c_est,
            empty,
            60.0,
            "≤ empty + 60 ns",
        ),
        fig(
            &format!("TCP SYN in a changed slot: recorded (repeat {repeat}, median of 5)"),
            c_syn,
            empty,
            120.0,
            "≤ empty + 120 ns",
        ),
        fig(
            &format!("non-VIP packet (repeat {repeat}, median of 5)"),
            miss,
            empty,
            5.0,
            "≤ empty + 5 ns",
        ),
        fig(
            &format!("IPv6 established flow, unchanged slot (repeat {repeat}, median of 5)"),
            est6,
            empty,
            45.0,
            "≤ empty + 45 ns",
        ),
        fig(
            &format!("IPv6 new-flow VIP packet: TCP SYN (repeat {repeat}, median of 5)"),
            syn6_ns,
            empty,
            130.0,
            "≤ empty + 130 ns",
        ),
        fig(
            &format!("IPv6 non-VIP packet (repeat {repeat}, median of 5)"),
            miss6,
            empty,
            8.0,
            "≤ empty + 8 ns",
        ),
        Figure {
            what: format!("empty XDP_PASS program (one call each, 64 flows × {tunnel_rounds} rounds)"),
            ns: t_empty1,
            over_empty: None,
            goal: "baseline for the routed rows".into(),
            met: true,
        },
        Figure {
            what: "established flow, DSR, unchanged slot (one call each, as the routed rows)".into(),
            ns: t_dsr,
            over_empty: Some(t_dsr - t_empty1),
            goal: "informational (the dsr row beside the routed ones)".into(),
            met: true,
        },
        fig(
            "established flow, IP in IP to a routed backend (one call each)",
            t_ipip,
            t_empty1,
            55.0,
            "≤ empty + 55 ns",
        ),
        fig(
            "established flow, GUE to a routed backend (one call each)",
            t_gue,
            t_empty1,
            55.0,
            "≤ empty + 55 ns",
        ),
        Figure {
            what: format!(
                "empty XDP_PASS program (repeat 150 on a 150-deep IP-in-IP packet, median of {TUNNEL_TRIALS})"
            ),
            ns: t_dempty,
            over_empty: None,
            goal: "baseline for the decapsulation rows".into(),
            met: true,
        },
        fig(
            &format!("backend side: halb-decap removing IP in IP (each repeat removes one of 150 outer headers, median of {TUNNEL_TRIALS})"),
            t_dipip,
            t_dempty,
            25.0,
            "≤ empty + 25 ns",
        ),
        fig(
            &format!("backend side: halb-decap removing GUE (each repeat removes one of 110, median of {TUNNEL_TRIALS})"),
            t_dgue,
            t_dempty,
            25.0,
            "≤ empty + 25 ns",
        ),
        Figure {
            what: format!(
                "empty XDP_PASS program (one call each, {WARM_FLOWS} flows × {rounds} rounds)"
            ),
            ns: empty_single,
            over_empty: None,
            goal: "baseline for single calls".into(),
            met: true,
        },
        Figure {
            what: "established flow in a changed slot (one call each; cross-checks the method against repeat)"
                .into(),
            ns: est_single,
            over_empty: Some(est_single - empty_single),
            goal: "informational (should be near the repeated figure)".into(),
            met: true,
        },
        Figure {
            what: "unknown flow in a changed slot, recorded (one call each, flow table kept empty)"
                .into(),
            ns: new_flow,
            over_empty: Some(new_flow - empty_single),
            goal: "informational (one call at a time: caches cool between calls)".into(),
            met: true,
        },
        Figure {
            what: format!("empty XDP_PASS program, cold ({flows} distinct frames, one call each)"),
            ns: empty_cold,
            over_empty: None,
            goal: "baseline for cold calls".into(),
            met: true,
        },
        Figure {
            what: format!(
                "unknown flow in a changed slot, cold ({flows} distinct flows, each once, recorded)"
            ),
            ns: new_cold,
            over_empty: Some(new_cold - empty_cold),
            goal: "informational (cache misses dominate)".into(),
            met: true,
        },
        Figure {
            what: "map update after a health change, 1000 backends (Maglev + ring + swap, median of 21)"
                .into(),
            ns: update_ns,
            over_empty: None,
            goal: "≤ 10 ms".into(),
            met: update_ns <= 10e6,
        },
        Figure {
            what: "Maglev table build, 1000 backends, 65537 entries (median of 11)".into(),
            ns: maglev_ns,
            over_empty: None,
            goal: "≤ 10 ms".into(),
            met: maglev_ns <= 10e6,
        },
        Figure {
            what: "halb import: keepalived.conf with 200 virtual_server blocks and haproxy.cfg \
                   with 200 frontend/backend pairs, 4 servers each (median of 5)"
                .into(),
            ns: import_ns,
            over_empty: None,
            goal: "≤ 1 s".into(),
            met: import_ns <= 1e9,
        },
    ])
}

/// Times `halb import` of a config of 200 `virtual_server` and 200
/// HAProxy backend blocks (nanoseconds, median of 5).
fn import_200() -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("halb-bench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut ka = String::from(
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  priority 150\n  \
         virtual_ipaddress {\n",
    );
    for i in 0..400u32 {
        ka.push_str(&format!("    10.{}.{}.1\n", 100 + i / 250, i % 250));
    }
    ka.push_str("  }\n}\n");
    let mut ha = String::from("defaults\n  mode tcp\n  default-server inter 2s rise 2 fall 3\n");
    for i in 0..200u32 {
        ka.push_str(&format!(
            "virtual_server 10.{}.{}.1 80 {{\n  delay_loop 5\n  lb_kind DR\n  protocol TCP\n",
            100 + i / 250,
            i % 250
        ));
        for b in 1..=4 {
            ka.push_str(&format!(
                "  real_server 10.200.{}.{b} 80 {{\n    weight 1\n    HTTP_GET {{\n      url {{\n        \
                 path /health\n        status_code 200\n      }}\n      connect_timeout 2\n      retry 2\n    }}\n  }}\n",
                i % 250
            ));
        }
        ka.push_str("}\n");
        let j = i + 200;
        ha.push_str(&format!(
            "frontend fe{i}\n  bind 10.{}.{}.1:443\n  default_backend be{i}\nbackend be{i}\n  option httpchk GET /\n",
            100 + j / 250,
            j % 250
        ));
        for b in 1..=4 {
            ha.push_str(&format!("  server s{b} 10.201.{}.{b}:443 check\n", i % 250));
        }
    }
    let (kp, hp) = (dir.join("keepalived.conf"), dir.join("haproxy.cfg"));
    std::fs::write(&kp, ka)?;
    std::fs::write(&hp, ha)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = halb::import::import(Some(&kp), Some(&hp))?;
        times.push(t.elapsed().as_nanos() as f64);
        if !r.report.accounts_for_every_line() || !r.config.contains("[[vip]]") {
            bail!("the import of 400 blocks lost lines");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(median(times))
}

/// The figures as a markdown table.
pub fn markdown(figures: &[Figure]) -> String {
    let mut s =
        String::from("| measurement | ns | over empty | goal | met |\n|---|---:|---:|---|---|\n");
    for f in figures {
        let ns = if f.ns >= 1e6 {
            format!("{:.2} ms", f.ns / 1e6)
        } else {
            format!("{:.1}", f.ns)
        };
        let over = f.over_empty.map_or(String::new(), |o| format!("{o:+.1}"));
        let _ = writeln!(
            s,
            "| {} | {ns} | {over} | {} | {} |",
            f.what,
            f.goal,
            if f.met { "yes" } else { "NO" }
        );
    }
    s
}
