//! The BGP scale-out mode end to end: three active halb nodes behind a
//! router running BIRD 2 with ECMP, each node announcing the VIP through its
//! own BIRD (BGP and BFD). Needs root.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use halb_lab::lab::VIP;
use halb_lab::scaleout::{self, ScaleOut, CLIENT};

fn lab(tag: &str) -> ScaleOut {
    let mut s = ScaleOut::new(tag, 3, 3).expect("scale-out lab");
    s.start_all().expect("three nodes announced");
    s
}

/// `n` requests from the client, a new connection (and source port) each:
/// the answering backends counted.
fn spread(s: &ScaleOut, n: usize) -> BTreeMap<String, usize> {
    s.lab
        .in_ns("client", move || {
            let mut m = BTreeMap::new();
            for _ in 0..n {
                match halb_lab::client::http_get(VIP, 80, "/", Duration::from_secs(3)) {
                    Ok(r) if r.status == 200 => {
                        *m.entry(r.body.trim().to_string()).or_default() += 1
                    }
                    Ok(r) => *m.entry(format!("HTTP {}", r.status)).or_default() += 1,
                    Err(e) => *m.entry(format!("error: {e}")).or_default() += 1,
                }
            }
            m
        })
        .expect("client")
}

#[test]
fn flows_spread_over_every_node_and_backend() {
    let s = lab("sod");
    assert_eq!(halb_lab::scaleout::CLIENT, CLIENT);
    let before: Vec<u64> = (1..=3).map(|n| s.forwarded(n)).collect();
    let m = spread(&s, 600);
    let ok: usize = ["web1", "web2", "web3"]
        .iter()
        .map(|b| m.get(*b).copied().unwrap_or(0))
        .sum();
    assert_eq!(ok, 600, "every request answered: {m:?}");
    for b in ["web1", "web2", "web3"] {
        assert!(m[b] >= 120, "each backend gets a fair share: {m:?}");
    }
    let d: Vec<u64> = (1..=3)
        .map(|n| s.forwarded(n) - before[n as usize - 1])
        .collect();
    let total: u64 = d.iter().sum();
    for (i, x) in d.iter().enumerate() {
        assert!(
            *x * 5 >= total,
            "node lb{} forwarded {x} of {total} packets: {d:?}",
            i + 1
        );
    }
}

#[test]
fn a_node_loss_keeps_every_stream_and_blackholes_for_at_most_300_ms() {
    let mut s = lab("sol");
    let streams = scaleout::streams(&s.lab, 30).expect("30 streams");
    let probes = scaleout::Probes::start(&s.lab).expect("probes");
    probes
        .wait_ok(&s.lab, 20)
        .expect("probes pass before the event");
    let mut p = s.lab.take_proc("halb-lb1").expect("halb");
    let t0 = Instant::now();
    p.signal(libc::SIGKILL);
    s.lab
        .ip("lb1", &["link", "set", "eth0", "down"])
        .expect("link down");
    s.wait_paths(&[2, 3], Duration::from_secs(3))
        .expect("lb1 out of the ECMP set");
    let left = t0.elapsed();
    let (whole, gap) = scaleout::survived(streams);
    let seen = probes.finish();
    let (failed, out) = scaleout::outage(&seen, t0);
    eprintln!(
        "router dropped lb1 after {left:?}; {failed} of {} probes failed, outage {out:?}; \
         {whole}/30 streams whole, longest pause {gap:?}",
        seen.len()
    );
    assert_eq!(whole, 30, "every stream survives the node loss");
    assert!(out <= Duration::from_millis(300), "outage {out:?}");
    p.wait_exit(Duration::from_secs(5));
}
