//! `cargo xtask bench live`: real frames through the native XDP driver path
//! on veth, for the empty `XDP_TX` program, an LRU-hash reference balancer
//! and halb with its agent, in one run.
//!
//! The bed: a generator namespace joined to one namespace per program by a
//! veth pair each (two queues each): the empty program, the reference and
//! halb (with its agent) each stay attached natively on their node's end
//! for the whole run. On a generator end a generator program runs under
//! `BPF_PROG_TEST_RUN` in live-frames mode and sends each frame with
//! `XDP_TX`; the program under test returns it with `XDP_TX`, and a counting
//! sink attached natively on the generator's end drops it. The sink counts
//! frames by destination MAC, so a run proves that every frame came back
//! rewritten by the program under test (the backends' addresses live on the
//! generator's end, so their MAC is its). Throughput is the sink's count
//! over the wall time of the run. One generator thread per core, pinned;
//! with two, flows are split between the cores as receive-side scaling
//! would split them. A round sends the same frames through each program in
//! turn (the order rotates from round to round), so drift over the run is
//! shared; the ratio is the median over the rounds of a program's rate
//! over the empty program's in the same round. IPv4 and IPv6 (74-byte
//! frames) alike.
//!
//! Established flows are warmed first (one pass over every flow), so that
//! the measured frames find their state; a new-flow storm sends a flow never
//! seen before in every frame (TCP SYN, or UDP). Writes `live.md`,
//! `live.json` and `live.png`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, PerCpuArray};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use ha_common::bench::{GenConfig, RefVip, GEN_CYCLE, GEN_FRAME4, GEN_FRAME6, GEN_STORM};
use ha_common::{
    Ring, VipKey, VipKey6, DEFAULT_RING_SIZE, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_TCP, IPPROTO_UDP,
    NO_BACKEND,
};
use halb::dataplane::maglev::{self, Member};
use serde::Serialize;

use crate::lab::{ebpf_dir, run, Lab};

const VIP: [u8; 4] = [10, 77, 0, 100];
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100);
const PORT: u16 = 9;
const BACKENDS: u8 = 4;

/// One measured figure (a row of `live.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `empty`, `lru-reference` or `halb`.
    pub program: String,
    /// `established` or `new-flow-storm`.
    pub case: String,
    /// Concurrent flows (0 for a storm: every frame is new).
    pub flows: u64,
    /// Flow-table capacity the program ran with.
    pub flow_table: u64,
    /// `udp` or `tcp`.
    pub proto: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Generator cores.
    pub cores: u32,
    /// Million frames per second that came back (median of the rounds).
    pub mpps: f64,
    /// `mpps` over the empty program's for the same case.
    pub ratio_to_empty: f64,
    /// halb only: the share of measured frames per data-plane reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, f64>,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Established cases: concurrent flows.
    pub flows: Vec<u32>,
    /// Protocols.
    pub protos: Vec<u8>,
    /// Address families ([`FAMILY_IPV4`], [`FAMILY_IPV6`]).
    pub families: Vec<u8>,
    /// Generator cores (1, 2).
    pub cores: Vec<u32>,
    /// Frames per core in one measured round.
    pub frames: u32,
    /// Rounds per case (median reported).
    pub rounds: usize,
    /// Whether to run the new-flow storm.
    pub storm: bool,
    /// Whether to measure halb's established cases again with a backend
    /// drained (the changed-slot path at scale).
    pub drained: bool,
}

impl Opts {
    /// The full run.
    pub fn full() -> Self {
        Self {
            flows: vec![1, 10_000, 1_000_000, 10_000_000],
            protos: vec![IPPROTO_UDP, IPPROTO_TCP],
            families: vec![FAMILY_IPV4, FAMILY_IPV6],
            cores: vec![1, 2],
            frames: 2_000_000,
            rounds: 5,
            storm: true,
            drained: true,
        }
    }

    /// The CI smoke run: seconds, every program and both kinds of case.
    pub fn smoke() -> Self {
        Self {
            flows: vec![1, 10_000],
            protos: vec![IPPROTO_UDP],
            families: vec![FAMILY_IPV4, FAMILY_IPV6],
            cores: vec![1],
            frames: 500_000,
            rounds: 2,
            storm: true,
            drained: true,
        }
    }
}

/// Flow-table capacity for `flows` concurrent flows: the default, or the
/// next power of two that holds them.
fn table_for(flows: u32) -> u32 {
    flows
        .max(ha_common::DEFAULT_FLOW_TABLE_SIZE)
        .next_power_of_two()
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Program {
    Empty,
    Lru,
    Halb,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Empty => "empty",
            Program::Lru => "lru-reference",
            Program::Halb => "halb",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    storm: bool,
    /// halb only: measured with one of the four backends drained, so a
    /// quarter of the slots are changed and their flows go through the
    /// flow table.
    drained: bool,
    flows: u32,
    proto: u8,
    family: u8,
    cores: u32,
}

impl Case {
    fn table(&self) -> u32 {
        table_for(if self.storm { 0 } else { self.flows })
    }
}

fn proto_name(p: u8) -> &'static str {
    if p == IPPROTO_TCP {
        "tcp"
    } else {
        "udp"
    }
}

fn load(name: &str, max: &[(&str, u32)]) -> Result<Ebpf> {
    let path = ebpf_dir().join(name);
    let obj = std::fs::read(&path)
        .with_context(|| format!("{}: run `cargo xtask build`", path.display()))?;
    let mut loader = EbpfLoader::new();
    for (map, n) in max {
        loader.map_max_entries(map, *n);
    }
    let mut ebpf = loader.load(&obj).with_context(|| format!("load {name}"))?;
    let prog: &mut Xdp = ebpf
        .program_mut(&name.replace('-', "_"))
        .context("program")?
        .try_into()?;
    prog.load().with_context(|| format!("verifier: {name}"))?;
    Ok(ebpf)
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(&name.replace('-', "_"))
        .context("program")?
        .try_into()?)
}

fn mac_of(lab: &Lab, host: &str, dev: &str) -> Result<[u8; 6]> {
    let out = lab.ip(host, &["-o", "link", "show", dev])?;
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .context("no MAC")?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

fn ifindex_of(lab: &Lab, host: &str, dev: &str) -> Result<u32> {
    let out = lab.ip(host, &["-o", "link", "show", dev])?;
    out.split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .context("no ifindex")
}

fn pin_cpu(cpu: usize) {
    // SAFETY: sched_setaffinity on this thread with a zeroed, then filled, set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn enter(ns: &File) -> Result<()> {
    // SAFETY: setns on a valid namespace fd, affecting only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The live-frames generator on one device of a lab host: loaded once,
/// configured per case, run with one thread per core. The device needs an
/// XDP program attached natively (veth registers its receive queues for
/// XDP then), and its peer one too (native `XDP_TX` into a veth is only
/// delivered to a peer with an XDP program).
pub struct Generator {
    ebpf: Ebpf,
    ns: File,
    /// The device the frames leave by (the host's `dev` to begin with).
    pub ifindex: u32,
    frame: usize,
}

impl Generator {
    /// The generator for `dev` in `host`'s namespace.
    pub fn new(lab: &Lab, host: &str, dev: &str) -> Result<Self> {
        Ok(Self {
            ebpf: load("halb-bench-gen", &[])?,
            ns: File::open(format!("/run/netns/{}", lab.ns(host)))?,
            ifindex: ifindex_of(lab, host, dev)?,
            frame: GEN_FRAME4,
        })
    }

    /// Sets what every frame looks like.
    pub fn configure(&mut self, cfg: GenConfig) -> Result<()> {
        self.frame = if cfg.family == FAMILY_IPV6 {
            GEN_FRAME6
        } else {
            GEN_FRAME4
        };
        let mut m: Array<_, GenConfig> =
            Array::try_from(self.ebpf.map_mut("GEN_CONFIG").context("GEN_CONFIG")?)?;
        m.set(0, cfg, 0)?;
        Ok(())
    }

    /// Sends `frames` per core, one pinned thread per core, all started
    /// together; returns the wall time from the first start to the last end.
    pub fn send(&self, cores: u32, frames: u32) -> Result<f64> {
        let prog: &Xdp = self
            .ebpf
            .program("halb_bench_gen")
            .context("program")?
            .try_into()?;
        let barrier = Barrier::new(cores as usize);
        let ifindex = self.ifindex;
        let frame = self.frame;
        let times: Vec<Result<(Instant, Instant)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cores)
                .map(|core| {
                    let ns = &self.ns;
                    let barrier = &barrier;
                    s.spawn(move || -> Result<(Instant, Instant)> {
                        enter(ns)?;
                        pin_cpu(core as usize);
                        let mut ctx = [0u8; 24];
                        ctx[4..8].copy_from_slice(&(frame as u32).to_ne_bytes());
                        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                        ctx[16..20].copy_from_slice(&core.to_ne_bytes());
                        let data = [0u8; GEN_FRAME6];
                        barrier.wait();
                        let t0 = Instant::now();
                        let r = prog.test_run(TestRunOptions {
                            data_in: Some(&data[..frame]),
                            ctx_in: Some(&ctx),
                            repeat: frames,
                            attrs: TestRunAttrs::new().xdp_live_frames(64),
                            ..Default::default()
                        });
                        let t1 = Instant::now();
                        r.context("live-frames test run")?;
                        Ok((t0, t1))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
                })
                .collect()
        });
        let mut start = None::<Instant>;
        let mut end = None::<Instant>;
        for t in times {
            let (a, b) = t?;
            start = Some(start.map_or(a, |s| s.min(a)));
            end = Some(end.map_or(b, |e| e.max(b)));
        }
        match (start, end) {
            (Some(a), Some(b)) => Ok((b - a).as_secs_f64()),
            _ => bail!("no generator ran"),
        }
    }
}

/// One program under test on its own veth pair: the generator's end
/// (`gen_if`, with the sink) and the node's end, where the program runs.
#[derive(Clone, Copy)]
struct Target {
    gen_if: u32,
    gen_mac: [u8; 6],
    node_mac: [u8; 6],
}

impl Target {
    /// The destination MAC a frame comes back with: the empty program
    /// leaves the frame alone; the balancers write a backend's, and every
    /// backend lives on the generator's end.
    fn returned_mac(&self, program: Program) -> [u8; 6] {
        match program {
            Program::Empty => self.node_mac,
            Program::Lru | Program::Halb => self.gen_mac,
        }
    }
}

/// The bed: a generator namespace with one veth pair per program (the
/// empty program, the LRU reference and halb each attached on its own
/// node end, all the time), the generator and one sink attached on every
/// generator end. Every program stays attached, so the rounds of a case
/// can alternate between them.
struct Bed {
    lab: Lab,
    targets: BTreeMap<Program, Target>,
    generator: Generator,
    sink: Ebpf,
    /// The empty program (attached for the whole run).
    _empty: Ebpf,
    lru: Option<Ebpf>,
}

/// Node-end namespace and device of each program's pair.
fn pair_of(program: Program) -> (&'static str, &'static str, &'static str) {
    match program {
        Program::Empty => ("e", "ge", "ne"),
        Program::Lru => ("l", "gl", "nl"),
        Program::Halb => ("lb", "gh", "lb0"),
    }
}

impl Bed {
    fn new() -> Result<Self> {
        let mut lab = Lab::new("lv")?;
        lab.add_namespace("gen")?;
        let mut targets = BTreeMap::new();
        for program in [Program::Empty, Program::Lru, Program::Halb] {
            let (host, gen_dev, node_dev) = pair_of(program);
            lab.add_namespace(host)?;
            let node_ns = lab.ns(host);
            lab.ip(
                "gen",
                &[
                    "link",
                    "add",
                    gen_dev,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    node_dev,
                    "netns",
                    &node_ns,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                ],
            )?;
            lab.ip("gen", &["link", "set", gen_dev, "up"])?;
            lab.ip(host, &["link", "set", node_dev, "up"])?;
            targets.insert(
                program,
                Target {
                    gen_if: ifindex_of(&lab, "gen", gen_dev)?,
                    gen_mac: mac_of(&lab, "gen", gen_dev)?,
                    node_mac: mac_of(&lab, host, node_dev)?,
                },
            );
        }
        // halb's agent resolves its backends: they live on the generator's
        // end of its pair.
        lab.ip("lb", &["addr", "add", "10.77.0.2/24", "dev", "lb0"])?;
        lab.ip("gen", &["addr", "add", "10.77.0.1/24", "dev", "gh"])?;
        lab.ip("lb", &["addr", "add", "fd77::2/64", "dev", "lb0", "nodad"])?;
        lab.ip("gen", &["addr", "add", "fd77::1/64", "dev", "gh", "nodad"])?;
        for i in 1..=BACKENDS {
            let (v4, v6) = (
                format!("10.77.0.{}/32", 10 + i),
                format!("fd77::{}/128", 10 + i),
            );
            lab.ip("gen", &["addr", "add", &v4, "dev", "gh"])?;
            lab.ip("gen", &["addr", "add", &v6, "dev", "gh", "nodad"])?;
        }
        let generator = Generator::new(&lab, "gen", "gh")?;
        let mut sink = load("halb-bench-sink", &[])?;
        let mut empty = load("halb-bench-tx", &[])?;
        for program in [Program::Empty, Program::Lru, Program::Halb] {
            attach_in(
                &lab,
                "gen",
                pair_of(program).1,
                &mut sink,
                "halb-bench-sink",
            )?;
        }
        attach_native(&lab, Program::Empty, &mut empty, "halb-bench-tx")?;
        Ok(Self {
            lab,
            targets,
            generator,
            sink,
            _empty: empty,
            lru: None,
        })
    }

    fn target(&self, program: Program) -> Target {
        self.targets[&program]
    }

    fn set_sink_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        let mut m: Array<_, [u8; 8]> =
            Array::try_from(self.sink.map_mut("SINK_MAC").context("SINK_MAC")?)?;
        let mut v = [0u8; 8];
        v[..6].copy_from_slice(&mac);
        m.set(0, v, 0)?;
        Ok(())
    }

    /// (frames with the expected MAC, frames with another).
    fn sink_counts(&self) -> Result<(u64, u64)> {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.sink.map("SINK_COUNT").context("SINK_COUNT")?)?;
        let good: u64 = m.get(&0, 0)?.iter().sum();
        let other: u64 = m.get(&1, 0)?.iter().sum();
        Ok((good, other))
    }

    /// Points the generator and the sink at `program`'s pair, for `case`.
    fn configure(&mut self, program: Program, case: &Case) -> Result<()> {
        let t = self.target(program);
        self.set_sink_mac(t.returned_mac(program))?;
        let tcp = case.proto == IPPROTO_TCP;
        self.generator.ifindex = t.gen_if;
        self.generator.configure(GenConfig {
            dst_mac: t.node_mac,
            src_mac: t.gen_mac,
            daddr: u32::from_ne_bytes(VIP),
            daddr6: VIP6.octets(),
            family: case.family,
            dport: PORT.to_be(),
            proto: case.proto,
            tcp_flags: match (tcp, case.storm) {
                (false, _) => 0,
                (true, true) => 0x02,
                (true, false) => 0x10,
            },
            flows: case.flows.max(1),
            mode: if case.storm { GEN_STORM } else { GEN_CYCLE },
            cores: case.cores,
            pad: [0; 3],
        })
    }

    /// Sends `frames` per core; returns (frames back with the expected MAC, seconds).
    fn send(&self, cores: u32, frames: u32) -> Result<(u64, f64)> {
        let before = self.sink_counts()?;
        let secs = self.generator.send(cores, frames)?;
        // Frames still in flight when the last run returned: wait until the
        // sink's count stops moving.
        let mut last = self.sink_counts()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let now = self.sink_counts()?;
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        let after = self.sink_counts()?;
        let good = after.0 - before.0;
        let other = after.1 - before.1;
        let sent = cores as u64 * frames as u64;
        if other > sent / 1000 {
            bail!("{other} of {sent} frames came back without the program's rewrite");
        }
        Ok((good, secs))
    }
}

/// Attaches `ebpf`'s program natively on `program`'s node end.
fn attach_native(lab: &Lab, program: Program, ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let (host, _, dev) = pair_of(program);
    attach_in(lab, host, dev, ebpf, name)
}

/// Attaches `ebpf`'s program `name` natively on `dev` in `host`'s namespace
/// (from a thread that enters it: the ifindex is looked up there).
fn attach_in(lab: &Lab, host: &str, dev: &str, ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let ns = File::open(format!("/run/netns/{}", lab.ns(host)))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            enter(&ns)?;
            xdp(ebpf, name)?
                .attach(dev, XdpMode::Driver)
                .with_context(|| format!("attach {name} natively on {dev}"))?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("attach thread panicked"))?
    })
}

fn ring() -> Result<Vec<u16>> {
    let members: Vec<Member> = (1..=BACKENDS)
        .map(|i| Member {
            key: u64::from(u32::from(Ipv4Addr::new(10, 77, 0, 10 + i))),
            weight: 1,
        })
        .collect();
    Ok(maglev::build(&members, DEFAULT_RING_SIZE)
        .into_iter()
        .map(|e| {
            if e == maglev::EMPTY {
                NO_BACKEND
            } else {
                e as u16
            }
        })
        .collect())
}

fn lru_reference(bed: &Bed, table: u32) -> Result<Ebpf> {
    let mut ebpf = load(
        "halb-bench-lru",
        &[("REF_FLOWS", table), ("REF_FLOWS6", table)],
    )?;
    let entries = ring()?;
    let mut r = halb::dataplane::maps::empty_ring();
    r.entries[..entries.len()].copy_from_slice(&entries);
    let mut rings: Array<_, Ring> =
        Array::try_from(ebpf.map_mut("REF_RINGS").context("REF_RINGS")?)?;
    rings.set(0, *r, 0)?;
    let mut backends: Array<_, [u8; 8]> =
        Array::try_from(ebpf.map_mut("REF_BACKENDS").context("REF_BACKENDS")?)?;
    let mut mac = [0u8; 8];
    mac[..6].copy_from_slice(&bed.target(Program::Lru).gen_mac);
    for i in 0..BACKENDS as u32 {
        backends.set(i, mac, 0)?;
    }
    let value = RefVip {
        ring: 0,
        ring_size: DEFAULT_RING_SIZE,
    };
    let mut vips: BpfHashMap<_, VipKey, RefVip> =
        BpfHashMap::try_from(ebpf.map_mut("REF_VIPS").context("REF_VIPS")?)?;
    for proto in [IPPROTO_UDP, IPPROTO_TCP] {
        vips.insert(VipKey::new(VIP, PORT, proto), value, 0)?;
    }
    let mut vips6: BpfHashMap<_, VipKey6, RefVip> =
        BpfHashMap::try_from(ebpf.map_mut("REF_VIPS6").context("REF_VIPS6")?)?;
    for proto in [IPPROTO_UDP, IPPROTO_TCP] {
        vips6.insert(VipKey6::new(VIP6.octets(), PORT, proto), value, 0)?;
    }
    Ok(ebpf)
}

fn halb_config(lab: &Lab, table: u32) -> String {
    let mut c = format!(
        "[node]\nname = \"lb\"\ninterface = \"lb0\"\nxdp_mode = \"native\"\nbpf_dir = \"{}\"\n\
         flow_table_size = {table}\n\n",
        lab.pin_dir("lb").display()
    );
    for (family, vip, backend) in [
        ("", "10.77.0.100", "10.77.0."),
        ("6", "fd77::100", "fd77::"),
    ] {
        for proto in ["udp", "tcp"] {
            c.push_str(&format!(
                "[[vip]]\nname = \"{proto}{family}\"\naddress = \"{vip}\"\nport = {PORT}\n\
                 protocol = \"{proto}\"\nmode = \"dsr\"\n"
            ));
            for i in 1..=BACKENDS {
                c.push_str(&format!(
                    "  [[vip.backend]]\n  name = \"b{i}\"\n  address = \"{backend}{}\"\n",
                    10 + i
                ));
            }
            c.push('\n');
        }
    }
    c
}

fn halb_status(bed: &Bed) -> Result<serde_json::Value> {
    let reply = bed.lab.in_ns("lb", || {
        crate::client::http_get(
            Ipv4Addr::LOCALHOST,
            8480,
            "/api/v1/status",
            Duration::from_secs(2),
        )
    })??;
    Ok(serde_json::from_str(&reply.body)?)
}

/// Starts the agent and waits until every backend has a MAC.
fn start_halb(bed: &mut Bed, table: u32) -> Result<()> {
    let config = halb_config(&bed.lab, table);
    bed.lab.start_halb("lb", &config, &[])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = halb_status(bed) {
            let backends: Vec<&serde_json::Value> = s["vips"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|v| v["backends"].as_array().into_iter().flatten())
                .collect();
            if backends.len() == 4 * BACKENDS as usize
                && backends.iter().all(|b| b["mac"].is_string())
            {
                return Ok(());
            }
        }
        if let Some(p) = bed.lab.proc_mut("halb-lb") {
            if let Some(st) = p.try_wait() {
                bail!("halb exited ({st}):\n{}", p.log_text());
            }
        }
        if Instant::now() > deadline {
            bail!("halb's backends did not all get a MAC within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn halb_cli(bed: &Bed, args: &[&str]) -> Result<String> {
    let mut c = bed.lab.nsenter("lb", &crate::lab::halb_bin());
    c.args(args).args(["--api", "127.0.0.1:8480"]);
    run(&mut c)
}

fn stop_halb(bed: &mut Bed) -> Result<()> {
    if let Some(mut p) = bed.lab.take_proc("halb-lb") {
        p.signal(libc::SIGTERM);
        if p.wait_exit(Duration::from_secs(20)).is_none() {
            p.kill();
        }
    }
    halb::dataplane::remove_pins(&bed.lab.pin_dir("lb"))?;
    Ok(())
}

fn halb_reasons(bed: &Bed) -> Result<BTreeMap<String, u64>> {
    // The pinned stats map itself: the status API's counters are a snapshot
    // taken once a second, too coarse for a run of a second.
    let maps = halb::dataplane::maps::Maps::open_pinned(&bed.lab.pin_dir("lb"))?;
    Ok(maps
        .stats()?
        .into_iter()
        .map(|(stat, c)| (stat.name().to_string(), c.packets))
        .collect())
}

/// One round's frames through `program`: Mpps that came back. A round that
/// loses more than a tenth of its frames is run again (up to three times):
/// on a shared VM a neighbour can stall the sink's CPU and veth drops what
/// it cannot queue. Losing them every time is a failure.
fn round(bed: &mut Bed, program: Program, case: &Case, frames: u32) -> Result<f64> {
    bed.configure(program, case)?;
    let sent = case.cores as u64 * frames as u64;
    for attempt in 1..=3 {
        let (good, secs) = bed.send(case.cores, frames)?;
        if good >= sent * 9 / 10 {
            return Ok(good as f64 / secs / 1e6);
        }
        eprintln!(
            "live: {}: {good} of {sent} frames came back (attempt {attempt})",
            program.name()
        );
    }
    bail!("{}: frames lost three times in a row", program.name())
}

/// What one case measured for one program.
struct Measured {
    program: Program,
    /// Median Mpps over the rounds.
    mpps: f64,
    /// Median over the rounds of this program's Mpps over the empty
    /// program's in the same round.
    ratio: f64,
    /// halb only: the share of measured frames per data-plane reason.
    reasons: BTreeMap<String, f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Measures `case` for `programs` (the empty one among them): each is
/// warmed (every flow once, or a short storm), then every round sends the
/// same frames through each program in turn, in an order that rotates
/// from round to round, so drift over the run is shared by all of them.
fn measure(bed: &mut Bed, programs: &[Program], case: &Case, opts: &Opts) -> Result<Vec<Measured>> {
    let warm = if case.storm {
        opts.frames / 4
    } else {
        (case.flows / case.cores).max(1).saturating_add(10_000)
    };
    for &p in programs {
        bed.configure(p, case)?;
        bed.send(case.cores, warm)?;
    }
    let mut rates: BTreeMap<Program, Vec<f64>> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for r in 0..opts.rounds {
        for k in 0..programs.len() {
            let p = programs[(r + k) % programs.len()];
            let before = if p == Program::Halb {
                halb_reasons(bed)?
            } else {
                BTreeMap::new()
            };
            let mpps = round(bed, p, case, opts.frames)?;
            rates.entry(p).or_default().push(mpps);
            if p == Program::Halb {
                for (k, v) in halb_reasons(bed)? {
                    let d = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
                    *reasons.entry(k).or_default() += d;
                }
            }
        }
    }
    let empty = rates.get(&Program::Empty).cloned().unwrap_or_default();
    for (p, r) in &rates {
        let shown: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
        eprintln!(
            "live:   {:<13} Mpps by round: {}",
            p.name(),
            shown.join(" ")
        );
    }
    let total: u64 = reasons.values().sum();
    Ok(programs
        .iter()
        .map(|&p| {
            let mine = rates.get(&p).cloned().unwrap_or_default();
            let ratios = mine.iter().zip(&empty).map(|(a, e)| a / e).collect();
            Measured {
                program: p,
                mpps: median(mine),
                ratio: median(ratios),
                reasons: if p == Program::Halb {
                    reasons
                        .iter()
                        .filter(|(_, v)| **v > 0)
                        .map(|(k, v)| (k.clone(), *v as f64 / total.max(1) as f64))
                        .collect()
                } else {
                    BTreeMap::new()
                },
            }
        })
        .collect())
}

fn family_name(f: u8) -> &'static str {
    if f == FAMILY_IPV6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

fn describe(program: &str, case: &Case, table: u32) {
    eprintln!(
        "live: {program} {} {} {} flows={} cores={} table={table}",
        if case.storm { "storm" } else { "established" },
        proto_name(case.proto),
        family_name(case.family),
        case.flows,
        case.cores
    );
}

fn row(m: &Measured, case: &Case) -> Row {
    Row {
        program: m.program.name().into(),
        case: if case.storm {
            "new-flow-storm"
        } else if case.drained {
            "established-after-drain"
        } else {
            "established"
        }
        .into(),
        flows: case.flows as u64,
        flow_table: case.table() as u64,
        proto: proto_name(case.proto).into(),
        family: family_name(case.family).into(),
        cores: case.cores,
        mpps: m.mpps,
        ratio_to_empty: if m.program == Program::Empty {
            1.0
        } else {
            m.ratio
        },
        reasons: m.reasons.clone(),
    }
}

/// Runs the bench.
pub fn run_bench(opts: &Opts) -> Result<Vec<Row>> {
    let mut bed = Bed::new()?;
    let mut cases = Vec::new();
    for &cores in &opts.cores {
        for &family in &opts.families {
            for &proto in &opts.protos {
                for &flows in &opts.flows {
                    cases.push(Case {
                        storm: false,
                        drained: false,
                        flows,
                        proto,
                        family,
                        cores,
                    });
                }
                if opts.storm {
                    cases.push(Case {
                        storm: true,
                        drained: false,
                        flows: 0,
                        proto,
                        family,
                        cores,
                    });
                }
            }
        }
    }
    let mut tables: Vec<u32> = cases.iter().map(Case::table).collect();
    tables.sort_unstable();
    tables.dedup();
    let all = [Program::Empty, Program::Lru, Program::Halb];
    let mut rows = Vec::new();
    for table in tables {
        let these: Vec<Case> = cases
            .iter()
            .copied()
            .filter(|c| c.table() == table)
            .collect();
        // The LRU reference and halb with this table size; the empty
        // program stays attached.
        bed.lru = None;
        let mut lru = lru_reference(&bed, table)?;
        attach_native(&bed.lab, Program::Lru, &mut lru, "halb-bench-lru")?;
        bed.lru = Some(lru);
        start_halb(&mut bed, table)?;
        for case in &these {
            describe("all", case, table);
            for m in measure(&mut bed, &all, case, opts)? {
                rows.push(row(&m, case));
            }
        }
        if opts.drained {
            // Last for this table: the marks a drain leaves would change
            // the cases above.
            for vip in halb_vips(&these) {
                halb_cli(&bed, &["drain", &vip, "b1"])?;
            }
            for case in these.iter().filter(|c| !c.storm) {
                let drained = Case {
                    drained: true,
                    ..*case
                };
                describe("halb-drained", case, table);
                for m in measure(&mut bed, &[Program::Empty, Program::Halb], &drained, opts)? {
                    if m.program == Program::Halb {
                        rows.push(row(&m, &drained));
                    }
                }
            }
        }
        stop_halb(&mut bed)?;
    }
    drop(bed);
    Ok(rows)
}

/// The names of halb's VIPs that `cases` use (see [`halb_config`]).
fn halb_vips(cases: &[Case]) -> Vec<String> {
    let mut v: Vec<String> = cases
        .iter()
        .map(|c| {
            format!(
                "{}{}",
                proto_name(c.proto),
                if c.family == FAMILY_IPV6 { "6" } else { "" }
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn flows_label(n: u64) -> String {
    match n {
        0 => "every frame new".into(),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// The empty program's rows, one per case, in table order.
fn baselines(rows: &[Row]) -> Vec<&Row> {
    let mut cases: Vec<&Row> = rows.iter().filter(|r| r.program == "empty").collect();
    cases.sort_by_key(|r| {
        (
            r.cores,
            r.family.clone(),
            r.proto.clone(),
            r.case == "new-flow-storm",
            r.flows,
        )
    });
    cases
}

/// `program`'s row for the case of `e`.
fn row_of<'a>(rows: &'a [Row], program: &str, e: &Row) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.program == program
            && r.case == e.case
            && r.flows == e.flows
            && r.proto == e.proto
            && r.family == e.family
            && r.cores == e.cores
    })
}

/// `live.md`: one line per case, the three programs side by side.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "# Live frames through the native XDP driver path (veth)\n\n\
         `cargo xtask bench live`: 60-byte frames (64 on a wire) from a live-frames generator,\n\
         through the program under test attached natively, back to a counting sink.\n\
         Each program sits on its own veth pair, all attached for the whole run; every\n\
         round sends the same frames through each in turn (the order rotates). Mpps is\n\
         the median of the rounds; the ratio is the median over the rounds of the\n\
         program's Mpps over the empty `XDP_TX` program's in the same round.\n\n\
         | case | family | proto | concurrent flows (flow table) | cores | empty Mpps | LRU reference Mpps (ratio) | halb Mpps (ratio) | halb's path | halb, a backend drained (ratio) | its path |\n\
         |---|---|---|---|---:|---:|---:|---:|---|---:|---|\n",
    );
    let cases = baselines(rows);
    for e in cases {
        let find = |p: &str| row_of(rows, p, e);
        let cell = |r: Option<&Row>| {
            r.map(|r| format!("{:.2} ({:.2})", r.mpps, r.ratio_to_empty))
                .unwrap_or_else(|| "—".into())
        };
        let shares = |r: Option<&Row>| {
            r.map(|r| {
                r.reasons
                    .iter()
                    .filter(|(_, v)| **v >= 0.005)
                    .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
        };
        let path = shares(find("halb"));
        let drained = rows.iter().find(|r| {
            r.program == "halb"
                && r.case == "established-after-drain"
                && r.flows == e.flows
                && r.proto == e.proto
                && r.family == e.family
                && r.cores == e.cores
                && e.case == "established"
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} ({}) | {} | {:.2} | {} | {} | {} | {} | {} |",
            e.case,
            e.family,
            e.proto,
            flows_label(e.flows),
            flows_label(e.flow_table),
            e.cores,
            e.mpps,
            cell(find("lru-reference")),
            cell(find("halb")),
            path,
            cell(drained),
            shares(drained)
        );
    }
    s
}

/// `live.png` with gnuplot: each case's ratio to the empty program.
pub fn plot(rows: &[Row], dir: &Path) -> Result<()> {
    let mut data = String::from("case lru halb\n");
    let cases = baselines(rows);
    for e in cases {
        let ratio = |p: &str| row_of(rows, p, e).map(|r| r.ratio_to_empty).unwrap_or(0.0);
        let label = if e.case == "new-flow-storm" {
            "storm".to_string()
        } else {
            flows_label(e.flows)
        };
        let _ = writeln!(
            data,
            "\"{} {} {} {}c\" {:.3} {:.3}",
            if e.family == "ipv6" { "v6" } else { "v4" },
            e.proto,
            label,
            e.cores,
            ratio("lru-reference"),
            ratio("halb")
        );
    }
    let dat = dir.join("live.dat");
    std::fs::write(&dat, data)?;
    let gp = dir.join("live.gp");
    std::fs::write(
        &gp,
        format!(
            "set terminal pngcairo size 1200,500 font ',10'\nset output '{}'\n\
             set title 'live frames: throughput relative to the empty XDP_TX program (higher is better)'\n\
             set style data histogram\nset style histogram cluster gap 1\nset style fill solid border -1\n\
             set yrange [0:1.2]\nset xtics rotate by -45\nset key top right\n\
             plot '{}' using 2:xtic(1) title 'LRU-hash reference' lc rgb '#9e9e9e', '' using 3 title 'halb' lc rgb '#1565c0'\n",
            dir.join("live.png").display(),
            dat.display()
        ),
    )?;
    run(Command::new("gnuplot").arg(&gp))?;
    Ok(())
}
