//! A loaded XDP program with writable maps, run on crafted frames through
//! `BPF_PROG_TEST_RUN` (the program tests and the random-frame property
//! test share it). Needs root.

use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use ha_common::{Meta, Stat, IPPROTO_TCP, IPPROTO_UDP};
use halb::dataplane::{
    BackendSpec, Encap, Maps, Service, VipSpec, Writer, XDP_OBJECT, XDP_PROGRAM,
};

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;

/// The harness's VIP address.
pub const VIP: [u8; 4] = [10, 77, 0, 100];
/// The harness's IPv6 VIP address (`Harness::dual`): fd77::100.
pub const VIP6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// An address in the harness's IPv6 /64 (fd77::/64) ending in `last`.
pub fn ula(last: u8) -> [u8; 16] {
    let mut a = VIP6;
    a[14] = 0;
    a[15] = last;
    a
}

/// The interface's MAC (frames for the node are sent to it).
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The client's MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

/// MAC of backend `i` (1-based).
pub fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, 0x20 + i]
}

/// Runs `data` once through XDP program `p`: the action, and the frame as
/// the program left it (with room for it to grow by 256 bytes).
pub fn run_once(p: &Xdp, data: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; data.len() + 256];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .expect("test_run");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// The program, its maps and the VIPs written into them.
pub struct Harness {
    ebpf: Ebpf,
    /// The map writer.
    pub writer: Writer<Maps>,
    /// What is written (edit, then [`Harness::apply`]).
    pub specs: Vec<VipSpec>,
}

impl Harness {
    /// Loads the program; two VIPs (TCP 80, UDP 53) over three backends.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        assert!(
            !XDP_OBJECT.is_empty(),
            "build the eBPF object first (cargo xtask build)"
        );
        let mut ebpf = EbpfLoader::new().load(XDP_OBJECT).expect("load object");
        let mut maps = Maps::take(&mut ebpf).expect("maps");
        maps.set_meta(&Meta {
            mac: LB_MAC,
            live_units: 60,
            ..Default::default()
        })
        .expect("meta");
        let prog: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .expect("program")
            .try_into()
            .expect("xdp");
        prog.load().expect("verifier accepts the program");
        let writer = Writer::adopt(maps).expect("writer");
        let mut h = Self {
            ebpf,
            writer,
            specs: Vec::new(),
        };
        let backends = (1..=3)
            .map(|i| BackendSpec {
                addr: Ipv4Addr::new(10, 77, 0, 20 + i).into(),
                mac: Some(backend_mac(i)),
                weight: 1,
                healthy: true,
                tunnel: None,
            })
            .collect::<Vec<_>>();
        h.specs = vec![
            VipSpec {
                service: Service::new(Ipv4Addr::from(VIP), 80, IPPROTO_TCP),
                table_size: 65537,
                source_hash: false,
                encap: Encap::Dsr,
                backends: backends.clone(),
            },
            VipSpec {
                service: Service::new(Ipv4Addr::from(VIP), 53, IPPROTO_UDP),
                table_size: 251,
                source_hash: false,
                encap: Encap::Dsr,
                backends,
            },
        ];
        h.apply();
        h
    }

    /// [`Harness::new`] and two IPv6 services on [`VIP6`] (TCP 80, UDP 53)
    /// over three IPv6 backends (fd77::31..33, MACs `backend_mac(4..=6)`):
    /// specs 2 and 3.
    pub fn dual() -> Self {
        let mut h = Self::new();
        let backends = (1..=3)
            .map(|i| BackendSpec {
                addr: std::net::Ipv6Addr::from(ula(0x30 + i)).into(),
                mac: Some(backend_mac(3 + i)),
                weight: 1,
                healthy: true,
                tunnel: None,
            })
            .collect::<Vec<_>>();
        let v6 = std::net::Ipv6Addr::from(VIP6);
        h.specs.push(VipSpec {
            service: Service::new(v6, 80, IPPROTO_TCP),
            table_size: 65537,
            source_hash: false,
            encap: Encap::Dsr,
            backends: backends.clone(),
        });
        h.specs.push(VipSpec {
            service: Service::new(v6, 53, IPPROTO_UDP),
            table_size: 251,
            source_hash: false,
            encap: Encap::Dsr,
            backends,
        });
        h.apply();
        h
    }

    /// Gives the TCP VIP another table size, which marks every slot of its
    /// ring changed (with no previous backend): from then on its packets go
    /// through the flow table.
    pub fn mark_all_changed(&mut self) {
        self.specs[0].table_size = 65521;
        self.apply();
        assert_eq!(self.writer.changed_slots(), 65521);
    }

    /// Writes `specs`.
    pub fn apply(&mut self) {
        self.writer.apply(&self.specs).expect("apply");
    }

    fn prog(&self) -> &Xdp {
        self.ebpf
            .program(XDP_PROGRAM)
            .expect("program")
            .try_into()
            .expect("xdp")
    }

    /// Runs one frame; returns the action and the frame as the program left it.
    pub fn run(&self, data: &[u8]) -> (u32, Vec<u8>) {
        run_once(self.prog(), data)
    }

    /// A reason counter.
    pub fn stat(&self, s: Stat) -> u64 {
        self.writer
            .store()
            .stats()
            .expect("stats")
            .into_iter()
            .find(|(k, _)| *k == s)
            .map(|(_, c)| c.packets)
            .unwrap_or(0)
    }

    /// Runs a frame and checks action, stat and (for PASS/DROP) that it is untouched.
    pub fn expect(&self, data: &[u8], action: u32, stat: Stat) -> Vec<u8> {
        let before = self.stat(stat);
        let (rc, out) = self.run(data);
        assert_eq!(rc, action, "action for {stat:?}");
        assert_eq!(
            self.stat(stat),
            before + 1,
            "stat {stat:?} counts the frame"
        );
        if action != XDP_TX {
            assert_eq!(out, data, "a frame that is not forwarded is not modified");
        }
        out
    }
}
