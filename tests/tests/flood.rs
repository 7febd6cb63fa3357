//! Under attack: a SYN flood from 2^20 distinct sources at the VIP (real
//! frames from the live-frames generator, through the native driver path),
//! while 20 long downloads run, a backend is drained and a new one added.
//! Every download completes, new connections made during the flood are
//! answered, the agent answers throughout, and the flow table evicts (and
//! says so once) without losing a flow. Needs root.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ha_common::bench::{GenConfig, GEN_STORM};
use ha_common::IPPROTO_TCP;
use halb::api::client::Client;
use halb::api::model::Status;
use halb_lab::lab::{halb_bin, node_config, run, survived, Lab, VIP};
use halb_lab::live::Generator;

const API: &str = "127.0.0.1:8480";
/// Frames per generator run, and runs: 96 × 32,768 = 3 × 2^20 SYNs, each
/// of the 2^20 source addresses with three source ports.
const CHUNK: u32 = 32_768;
const CHUNKS: u32 = 96;

fn status(lab: &Lab) -> (Status, Duration) {
    lab.in_ns("lb1", || {
        let t = Instant::now();
        let c = Client::new(API.parse().expect("addr"), None);
        let a = c.get("/api/v1/status").expect("API answers");
        let s = serde_json::from_str::<Status>(&a.body).expect("status JSON");
        (s, t.elapsed())
    })
    .expect("ns")
}

fn halb(lab: &Lab, args: &[&str]) -> String {
    let mut c = lab.nsenter("lb1", &halb_bin());
    c.args(args).args(["--api", API]);
    run(&mut c).expect("halb command")
}

fn mac(lab: &Lab, host: &str) -> [u8; 6] {
    let text = lab.mac(host).expect("mac");
    let mut m = [0u8; 6];
    for (i, p) in text.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("hex");
    }
    m
}

#[test]
fn a_syn_flood_during_a_drain_and_an_add_loses_no_download() {
    let mut lab = Lab::single_lb("fl", 4).expect("lab");
    // A small table (4096 flows): the flood must make it evict.
    let cfg = |lab: &Lab, backends: u8| {
        node_config(lab, "lb1", "native", backends, None, None).replacen(
            "\n\n",
            "\nflow_table_size = 4096\n\n",
            1,
        )
    };
    let three = cfg(&lab, 3);
    let four = cfg(&lab, 4);
    lab.start_halb("lb1", &three, &[])
        .expect("start")
        .wait_log("API and stats page listening", Duration::from_secs(20))
        .expect("agent up");
    lab.wait_for(
        "backend MACs",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            status(&lab).0.vips[0]
                .backends
                .iter()
                .all(|b| b.mac.is_some())
        },
    )
    .expect("MACs");
    lab.attach_pass("client", "eth0")
        .expect("pass on the client");
    lab.attach_pass_on_port("client").expect("pass on its port");

    let streams = lab.streams(VIP, 20).expect("downloads");
    let mut generator = Generator::new(&lab, "client", "eth0").expect("generator");
    generator
        .configure(GenConfig {
            dst_mac: mac(&lab, "lb1"),
            src_mac: mac(&lab, "client"),
            daddr: u32::from_ne_bytes(VIP.octets()),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            tcp_flags: 0x02,
            flows: 0,
            mode: GEN_STORM,
            cores: 1,
            ..Default::default()
        })
        .expect("configure");

    let sent = AtomicU32::new(0);
    let mut slowest = Duration::ZERO;
    let mut during = (false, false, false);
    let mut fresh = None;
    std::thread::scope(|s| {
        let flood = s.spawn(|| {
            for _ in 0..CHUNKS {
                generator.send(1, CHUNK).expect("flood");
                sent.fetch_add(1, Ordering::SeqCst);
                // Pacing, so the flood spans the operator's changes.
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let mut drained = false;
        let mut added = false;
        while !flood.is_finished() {
            let n = sent.load(Ordering::SeqCst);
            if !drained && n >= CHUNKS / 4 {
                let out = halb(&lab, &["drain", "web", "web2"]);
                assert!(out.contains("(drained)"), "{out}");
                drained = true;
                during.0 = sent.load(Ordering::SeqCst) < CHUNKS;
            }
            if drained && !added && n >= CHUNKS / 2 {
                std::fs::write(lab.dir.join("halb-lb1.toml"), &four).expect("config");
                let out = halb(&lab, &["reload"]);
                assert!(out.contains("web4"), "{out}");
                added = true;
                during.1 = sent.load(Ordering::SeqCst) < CHUNKS;
            }
            let (_, took) = status(&lab);
            slowest = slowest.max(took);
            // New connections during the flood, in the changed slots too.
            if added && fresh.is_none() {
                fresh = Some(lab.requests(40, Duration::from_secs(2)));
                during.2 = sent.load(Ordering::SeqCst) < CHUNKS;
            }
        }
        flood.join().expect("flood thread");
    });
    assert_eq!(
        during,
        (true, true, true),
        "the drain, the add and the new connections happened during the flood"
    );
    let fresh = fresh
        .expect("new connections made")
        .expect("every new connection answered");
    assert!(fresh.iter().all(|r| r.status == 200), "{fresh:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "the API answered within {slowest:?} during the flood"
    );
    let (whole, gap) = survived(streams);
    assert_eq!(whole, 20, "every download completed (longest gap {gap:?})");

    let (s, _) = status(&lab);
    let d = &s.dataplane;
    assert!(
        d.flows <= d.flow_capacity,
        "{} of {}",
        d.flows,
        d.flow_capacity
    );
    assert_eq!(d.flow_capacity, 4096);
    eprintln!("reasons {:?} flow table {:?}", d.reasons, d.flow_table);
    let recorded = d.flow_table.get("recorded").copied().unwrap_or(0);
    let evicted = d.flow_table.get("evicted_live").copied().unwrap_or(0);
    assert!(
        recorded > 10_000,
        "SYNs in changed slots were recorded: {recorded}"
    );
    assert!(evicted > 0, "the table evicted under the flood");
    let syns = d.reasons.get("tx_new_flow").copied().unwrap_or(0);
    // The lab's bridge (an skb path) drops part of a flood sent at line
    // rate; what reached the node's XDP program is counted.
    assert!(
        syns >= 1 << 20,
        "a million SYNs reached the data plane: {syns}"
    );
    lab.proc_mut("halb-lb1")
        .expect("halb")
        .wait_log(
            "the flow table is evicting live flows",
            Duration::from_secs(15),
        )
        .expect("the eviction is logged");
    let log = lab.proc_mut("halb-lb1").expect("halb").log_text();
    assert_eq!(
        log.matches("the flow table is evicting live flows").count(),
        1,
        "logged once"
    );
}
