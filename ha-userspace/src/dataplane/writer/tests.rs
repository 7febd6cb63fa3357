//! Writer tests against an in-memory store that also models the program's
//! lookups, so each test can ask "where would this flow go now?".

use super::*;
use ha_common::{ports_raw, ring_hash, IPPROTO_TCP};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    SetVip(Service, VipInfo),
    RemoveVip(Service),
    SetBackend(u32, BackendInfo),
    SetRing(u32),
    SetFilter(usize),
}

#[derive(Default)]
struct Fake {
    vips: BTreeMap<Service, (Service, VipInfo)>,
    backends: Vec<BackendInfo>,
    rings: HashMap<u32, Box<Ring>>,
    filter: VipFilter,
    log: Vec<Op>,
}

impl Fake {
    fn new() -> Self {
        Self {
            backends: vec![BackendInfo::default(); MAX_BACKENDS as usize],
            ..Default::default()
        }
    }

    /// What the XDP program would do with a new flow to `key`: the backend
    /// address it picks, or None (pass/drop).
    fn route(&self, key: &Service, saddr: u32, sport: u16) -> Option<Ipv4Addr> {
        if self.filter.slots[(filter_bit(key.addr) & (VIP_FILTER_BITS - 1)) as usize] == 0 {
            return None;
        }
        let (_, info) = self.vips.get(key)?;
        let ring = self.rings.get(&ring_index(info.id, info.ring_slot))?;
        let id = key.key();
        let h = ring_hash(
            0,
            saddr,
            id.addr,
            ports_raw(sport, key.port),
            key.proto as u32,
            info.flags & ha_common::VIP_F_SOURCE_HASH != 0,
        );
        let e = ring.entries[ha_common::ring_slot(h, info.ring_size) as usize];
        if e == NO_BACKEND {
            return None;
        }
        let b = self.backends[e as usize];
        (b.flags & BACKEND_F_UP != 0 && b.vip_id == info.id && b.vip == id)
            .then(|| backend_addr(&b))
            .and_then(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
    }

    fn live_ring(&self, key: &Service) -> Option<u32> {
        self.vips
            .get(key)
            .map(|(_, i)| ring_index(i.id, i.ring_slot))
    }
}

impl Store for &mut Fake {
    fn vips(&self) -> Result<Vec<(Service, VipInfo)>, Error> {
        Ok(self.vips.values().copied().collect())
    }
    fn set_vip(&mut self, key: &Service, info: &VipInfo) -> Result<(), Error> {
        self.vips.insert(*key, (*key, *info));
        self.log.push(Op::SetVip(*key, *info));
        Ok(())
    }
    fn remove_vip(&mut self, key: &Service) -> Result<(), Error> {
        self.vips.remove(key);
        self.log.push(Op::RemoveVip(*key));
        Ok(())
    }
    fn backends(&self) -> Result<Vec<(u32, BackendInfo)>, Error> {
        Ok(self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.flags != 0)
            .map(|(i, b)| (i as u32, *b))
            .collect())
    }
    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<(), Error> {
        self.backends[id as usize] = *info;
        self.log.push(Op::SetBackend(id, *info));
        Ok(())
    }
    fn ring(&self, index: u32) -> Result<Box<Ring>, Error> {
        Ok(self.rings.get(&index).cloned().unwrap_or_else(|| {
            let mut r = crate::dataplane::maps::empty_ring();
            r.entries = [0; RING_MAX];
            r
        }))
    }
    fn set_ring(&mut self, index: u32, ring: &Ring) -> Result<(), Error> {
        let live: Vec<u32> = self
            .vips
            .values()
            .filter(|(_, i)| i.flags & VIP_F_ADDRESS == 0)
            .map(|(_, i)| ring_index(i.id, i.ring_slot))
            .collect();
        assert!(!live.contains(&index), "wrote live ring {index}");
        self.rings.insert(index, Box::new(*ring));
        self.log.push(Op::SetRing(index));
        Ok(())
    }
    fn filter(&self) -> Result<VipFilter, Error> {
        Ok(self.filter)
    }
    fn set_filter(&mut self, filter: &VipFilter) -> Result<(), Error> {
        self.filter = *filter;
        let set = filter.slots.iter().filter(|&&b| b != 0).count();
        self.log.push(Op::SetFilter(set));
        Ok(())
    }
}

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn vip(last: u8, port: u16, backends: &[(u8, u32, bool)]) -> VipSpec {
    VipSpec {
        service: Service::new(Ipv4Addr::new(10, 77, 0, last), port, IPPROTO_TCP),
        table_size: 251,
        source_hash: false,
        encap: Encap::Dsr,
        backends: backends
            .iter()
            .map(|&(b, weight, healthy)| BackendSpec {
                addr: Ipv4Addr::new(10, 77, 0, b).into(),
                mac: Some(MAC),
                tunnel: None,
                weight,
                healthy,
            })
            .collect(),
    }
}

fn spread(fake: &Fake, key: &Service) -> BTreeMap<Ipv4Addr, usize> {
    let mut m = BTreeMap::new();
    for i in 0..3000u32 {
        if let Some(b) = fake.route(key, 0x0a00_0000 + i, (i % 60000) as u16) {
            *m.entry(b).or_default() += 1;
        }
    }
    m
}

#[test]
fn fresh_apply_routes_to_every_backend() {
    let mut fake = Fake::new();
    let spec = vip(100, 80, &[(21, 1, true), (22, 1, true), (23, 1, true)]);
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    let r = w.apply(std::slice::from_ref(&spec)).expect("apply");
    assert_eq!(
        (r.vips_added, r.tables_swapped, r.backends_written),
        (1, 1, 3)
    );
    drop(w);
    let s = spread(&fake, &spec.service);
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(s.values().all(|&n| n > 800), "{s:?}");
    // Other port, other address: not routed.
    assert_eq!(
        fake.route(
            &Service::new(Ipv4Addr::new(10, 77, 0, 100), 81, IPPROTO_TCP),
            1,
            1
        ),
        None
    );
    assert_eq!(
        fake.route(
            &Service::new(Ipv4Addr::new(10, 77, 0, 99), 80, IPPROTO_TCP),
            1,
            1
        ),
        None
    );
}

#[test]
fn new_vip_is_filtered_in_last_and_removed_vip_filtered_out_first() {
    let mut fake = Fake::new();
    let spec = vip(100, 80, &[(21, 1, true)]);
    {
        let mut w = Writer::adopt(&mut fake).expect("adopt");
        w.apply(std::slice::from_ref(&spec)).expect("apply");
    }
    let pos = |log: &[Op], f: &dyn Fn(&Op) -> bool| log.iter().position(f).expect("op present");
    let filter_at = pos(&fake.log, &|o| matches!(o, Op::SetFilter(..)));
    let vip_at = pos(&fake.log, &|o| matches!(o, Op::SetVip(k, _) if k.port != 0));
    let marker_at = pos(&fake.log, &|o| matches!(o, Op::SetVip(k, _) if k.port == 0));
    let ring_at = pos(&fake.log, &|o| matches!(o, Op::SetRing(_)));
    let backend_at = pos(&fake.log, &|o| matches!(o, Op::SetBackend(..)));
    assert!(
        backend_at < ring_at && ring_at < vip_at && vip_at < filter_at && marker_at < filter_at
    );

    fake.log.clear();
    {
        let mut w = Writer::adopt(&mut fake).expect("adopt");
        let r = w.apply(&[]).expect("apply");
        assert_eq!(r.vips_removed, 1);
    }
    assert!(matches!(fake.log[0], Op::SetFilter(0)), "{:?}", fake.log);
    assert!(fake.vips.is_empty(), "service and marker removed");
    assert!(fake.backends.iter().all(|b| b.flags == 0));
    assert_eq!(fake.route(&spec.service, 1, 1), None);
}

#[test]
fn restart_with_same_input_writes_nothing() {
    let mut fake = Fake::new();
    let specs = [
        vip(100, 80, &[(21, 1, true), (22, 2, true), (23, 0, true)]),
        vip(100, 443, &[(21, 1, true), (24, 1, false)]),
        vip(101, 53, &[]),
    ];
    let before;
    {
        let mut w = Writer::adopt(&mut fake).expect("adopt");
        w.apply(&specs).expect("apply");
        before = w.backend_id(&specs[0].service, Ipv4Addr::new(10, 77, 0, 22));
    }
    fake.log.clear();
    let mut w = Writer::adopt(&mut fake).expect("adopt again");
    assert_eq!(
        w.backend_id(&specs[0].service, Ipv4Addr::new(10, 77, 0, 22)),
        before
    );
    let r = w.apply(&specs).expect("apply again");
    assert!(r.is_empty(), "{r:?}");
    drop(w);
    assert!(fake.log.is_empty(), "{:?}", fake.log);
}

#[test]
fn drain_keeps_backend_up_but_out_of_the_table() {
    let mut fake = Fake::new();
    let mut spec = vip(100, 80, &[(21, 1, true), (22, 1, true), (23, 1, true)]);
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(std::slice::from_ref(&spec)).expect("apply");
    spec.backends[1].weight = 0;
    let r = w.apply(std::slice::from_ref(&spec)).expect("drain");
    assert_eq!((r.tables_swapped, r.backends_written), (1, 0));
    let id = w
        .backend_id(&spec.service, Ipv4Addr::new(10, 77, 0, 22))
        .expect("id");
    drop(w);
    assert_eq!(
        fake.backends[id as usize].flags & BACKEND_F_UP,
        BACKEND_F_UP
    );
    let s = spread(&fake, &spec.service);
    assert!(!s.contains_key(&Ipv4Addr::new(10, 77, 0, 22)), "{s:?}");
    assert_eq!(s.values().sum::<usize>(), 3000);
}

#[test]
fn down_backend_leaves_the_table_before_its_flag_drops() {
    let mut fake = Fake::new();
    let mut spec = vip(100, 80, &[(21, 1, true), (22, 1, true)]);
    {
        let mut w = Writer::adopt(&mut fake).expect("adopt");
        w.apply(std::slice::from_ref(&spec)).expect("apply");
    }
    fake.log.clear();
    spec.backends[0].healthy = false;
    let id;
    {
        let mut w = Writer::adopt(&mut fake).expect("adopt");
        w.apply(std::slice::from_ref(&spec)).expect("down");
        id = w
            .backend_id(&spec.service, Ipv4Addr::new(10, 77, 0, 21))
            .expect("id");
    }
    let swap = fake
        .log
        .iter()
        .position(|o| matches!(o, Op::SetVip(k, _) if *k == spec.service))
        .expect("swap");
    let flag = fake
        .log
        .iter()
        .position(|o| matches!(o, Op::SetBackend(i, _) if *i == id))
        .expect("flag");
    assert!(swap < flag, "{:?}", fake.log);
    assert_eq!(fake.backends[id as usize].flags & BACKEND_F_UP, 0);
    let s = spread(&fake, &spec.service);
    assert_eq!(
        s.keys().copied().collect::<Vec<_>>(),
        [Ipv4Addr::new(10, 77, 0, 22)]
    );
}

#[test]
fn ids_are_stable_and_reused_late() {
    let mut fake = Fake::new();
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    let a = vip(100, 80, &[(21, 1, true), (22, 1, true), (23, 1, true)]);
    w.apply(std::slice::from_ref(&a)).expect("apply");
    let id = |w: &Writer<&mut Fake>, b| w.backend_id(&a.service, Ipv4Addr::new(10, 77, 0, b));
    let (i21, i23) = (id(&w, 21), id(&w, 23));
    let b = vip(100, 80, &[(21, 1, true), (23, 1, true)]);
    w.apply(std::slice::from_ref(&b)).expect("remove 22");
    assert_eq!((id(&w, 21), id(&w, 23), id(&w, 22)), (i21, i23, None));
    let c = vip(100, 80, &[(21, 1, true), (23, 1, true), (24, 1, true)]);
    w.apply(std::slice::from_ref(&c)).expect("add 24");
    let i24 = w
        .backend_id(&a.service, Ipv4Addr::new(10, 77, 0, 24))
        .expect("24");
    assert_eq!(i24, 3, "a never-used id comes before the freed one");
}

#[test]
fn no_backend_means_no_route() {
    let mut fake = Fake::new();
    let spec = vip(100, 80, &[(21, 1, false)]);
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(std::slice::from_ref(&spec)).expect("apply");
    drop(w);
    assert!(spread(&fake, &spec.service).is_empty());
    let (_, info) = fake.vips[&spec.service];
    assert!(
        fake.rings[&ring_index(info.id, info.ring_slot)].entries[..251]
            .iter()
            .all(|&e| e == NO_BACKEND)
    );
}

#[test]
fn back_to_back_swaps_alternate_rings() {
    let mut fake = Fake::new();
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    let mut spec = vip(100, 80, &[(21, 1, true), (22, 1, true)]);
    w.apply(std::slice::from_ref(&spec)).expect("apply");
    let mut slots = vec![w.vip_info(&spec.service).expect("vip").ring_slot];
    for i in 0..4 {
        spec.backends[0].weight = 2 + i;
        w.apply(std::slice::from_ref(&spec)).expect("reweight");
        slots.push(w.vip_info(&spec.service).expect("vip").ring_slot);
    }
    assert_eq!(slots, [0, 1, 0, 1, 0]);
    drop(w);
    assert_eq!(fake.live_ring(&spec.service), Some(ring_index(0, 0)));
}

fn many(last: u8, port: u16, first: u32, n: u32) -> VipSpec {
    VipSpec {
        service: Service::new(Ipv4Addr::new(10, 77, 0, last), port, IPPROTO_TCP),
        table_size: 65537,
        source_hash: false,
        encap: Encap::Dsr,
        backends: (first..first + n)
            .map(|i| BackendSpec {
                addr: Ipv4Addr::from(0x0a50_0000 + i).into(),
                mac: Some(MAC),
                weight: 1,
                healthy: true,
                tunnel: None,
            })
            .collect(),
    }
}

#[test]
fn a_full_node_takes_a_changed_port() {
    // 64 VIPs (every slot); one of them moves to another port: the removed
    // one gives its id back before the new one needs it.
    let mut fake = Fake::new();
    let mut specs: Vec<VipSpec> = (0..MAX_VIPS as u16)
        .map(|i| vip(100, 1000 + i, &[(21, 1, true)]))
        .collect();
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(&specs).expect("64 vips");
    assert_eq!(w.free_slots().0, 0);
    specs[5].service = Service::new(Ipv4Addr::new(10, 77, 0, 100), 2000, IPPROTO_TCP);
    let r = w.apply(&specs).expect("port change at capacity");
    assert_eq!((r.vips_added, r.vips_removed), (1, 1));
    drop(w);
    let routed = |fake: &Fake, port| {
        fake.route(
            &Service::new(Ipv4Addr::new(10, 77, 0, 100), port, IPPROTO_TCP),
            1,
            1,
        )
    };
    assert_eq!(routed(&fake, 2000), Some(Ipv4Addr::new(10, 77, 0, 21)));
    assert_eq!(routed(&fake, 1005), None, "the old port is gone");
    assert_eq!(routed(&fake, 1006), Some(Ipv4Addr::new(10, 77, 0, 21)));
}

#[test]
fn an_update_that_cannot_fit_writes_nothing_and_leaks_no_id() {
    let mut fake = Fake::new();
    let base = many(100, 80, 0, 4000);
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(std::slice::from_ref(&base)).expect("4000 backends");
    let free = w.free_slots();
    drop(w);
    fake.log.clear();
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    // Keep them all and add 200 more: 4200 > 4096.
    let mut more = base.clone();
    more.backends.extend(many(100, 80, 10_000, 200).backends);
    // ... and a new VIP besides, whose id must not leak either.
    let extra = vip(101, 80, &[(21, 1, true)]);
    for _ in 0..100 {
        let e = w
            .apply(&[more.clone(), extra.clone()])
            .expect_err("over capacity");
        assert!(e.to_string().contains("capacity"), "{e}");
        assert_eq!(w.free_slots(), free, "no id leaked");
    }
    drop(w);
    assert!(
        fake.log.is_empty(),
        "nothing written: {:?}",
        &fake.log[..3.min(fake.log.len())]
    );
    // A good update still works afterwards.
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(&[base.clone(), extra.clone()]).expect("fits");
    drop(w);
    assert_eq!(
        fake.route(&extra.service, 1, 1),
        Some(Ipv4Addr::new(10, 77, 0, 21))
    );
}

#[test]
fn renumbering_more_backends_than_are_free_takes_two_steps() {
    let mut fake = Fake::new();
    let old = many(100, 80, 0, 4000);
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(std::slice::from_ref(&old)).expect("4000 backends");
    // Every backend replaced: 4000 new ids, 96 free until the old ones go.
    let new = many(100, 80, 5000, 4000);
    w.apply(std::slice::from_ref(&new)).expect("renumbered");
    assert_eq!(w.free_slots().1, MAX_BACKENDS as usize - 4000);
    drop(w);
    let s = spread(&fake, &new.service);
    assert_eq!(s.values().sum::<usize>(), 3000);
    assert!(
        s.keys().all(|a| u32::from(*a) >= 0x0a50_0000 + 5000),
        "only new backends are routed"
    );
}

/// A store whose writes start failing after `ok_writes` of them.
struct Failing<'a> {
    inner: &'a mut Fake,
    ok_writes: usize,
}

impl Failing<'_> {
    fn write(&mut self) -> Result<(), Error> {
        if self.ok_writes == 0 {
            return Err(Error::Capacity("injected write failure".into()));
        }
        self.ok_writes -= 1;
        Ok(())
    }
}

impl Store for Failing<'_> {
    fn vips(&self) -> Result<Vec<(Service, VipInfo)>, Error> {
        Ok(self.inner.vips.values().copied().collect())
    }
    fn set_vip(&mut self, key: &Service, info: &VipInfo) -> Result<(), Error> {
        self.write()?;
        (&mut *self.inner).set_vip(key, info)
    }
    fn remove_vip(&mut self, key: &Service) -> Result<(), Error> {
        self.write()?;
        (&mut *self.inner).remove_vip(key)
    }
    fn backends(&self) -> Result<Vec<(u32, BackendInfo)>, Error> {
        self.inner.backends_of()
    }
    fn set_backend(&mut self, id: u32, info: &BackendInfo) -> Result<(), Error> {
        self.write()?;
        (&mut *self.inner).set_backend(id, info)
    }
    fn ring(&self, index: u32) -> Result<Box<Ring>, Error> {
        self.inner.ring_of(index)
    }
    fn set_ring(&mut self, index: u32, ring: &Ring) -> Result<(), Error> {
        self.write()?;
        (&mut *self.inner).set_ring(index, ring)
    }
    fn filter(&self) -> Result<VipFilter, Error> {
        Ok(self.inner.filter)
    }
    fn set_filter(&mut self, filter: &VipFilter) -> Result<(), Error> {
        self.write()?;
        (&mut *self.inner).set_filter(filter)
    }
}

impl Fake {
    fn backends_of(&self) -> Result<Vec<(u32, BackendInfo)>, Error> {
        Ok(self
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.flags != 0)
            .map(|(i, b)| (i as u32, *b))
            .collect())
    }
    fn ring_of(&self, index: u32) -> Result<Box<Ring>, Error> {
        Ok(self.rings.get(&index).cloned().unwrap_or_else(|| {
            let mut r = crate::dataplane::maps::empty_ring();
            r.entries = [0; RING_MAX];
            r
        }))
    }
}

#[test]
fn a_write_failing_half_way_can_be_rolled_back() {
    let mut fake = Fake::new();
    let old = [
        vip(100, 80, &[(21, 1, true), (22, 1, true)]),
        vip(101, 80, &[(23, 1, true)]),
    ];
    {
        let mut w = Writer::adopt(&mut fake).expect("adopt");
        w.apply(&old).expect("old");
    }
    let before: Vec<Option<Ipv4Addr>> = (0..200)
        .map(|i| fake.route(&old[0].service, i, 1000 + i as u16))
        .collect();
    let new = [
        vip(100, 80, &[(21, 1, true), (24, 1, true), (25, 1, true)]),
        vip(102, 80, &[(26, 1, true)]),
    ];
    for ok_writes in 0..12 {
        let store = Failing {
            inner: &mut fake,
            ok_writes,
        };
        let mut w = Writer::adopt(store).expect("adopt");
        if w.apply(&new).is_ok() {
            continue;
        }
        // The caller puts the old state back once writes work again.
        w.store_mut().ok_writes = usize::MAX;
        w.apply(&old).expect("roll back");
        drop(w);
        let after: Vec<Option<Ipv4Addr>> = (0..200)
            .map(|i| fake.route(&old[0].service, i, 1000 + i as u16))
            .collect();
        assert_eq!(after, before, "failure after {ok_writes} writes");
        assert_eq!(fake.route(&new[1].service, 1, 1), None);
        assert_eq!(
            fake.route(&old[1].service, 1, 1),
            Some(Ipv4Addr::new(10, 77, 0, 23))
        );
    }
}

#[test]
fn source_ip_affinity_keeps_a_client_on_one_backend_and_spreads_clients() {
    let mut fake = Fake::new();
    let mut spec = vip(100, 80, &[(21, 1, true), (22, 1, true), (23, 1, true)]);
    spec.source_hash = true;
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(std::slice::from_ref(&spec)).expect("apply");
    assert_ne!(
        w.vip_info(&spec.service).expect("vip").flags & ha_common::VIP_F_SOURCE_HASH,
        0
    );
    drop(w);
    let client = 0x0a4d_0063;
    let one: BTreeSet<_> = (0..50u16)
        .filter_map(|i| fake.route(&spec.service, client, 32768 + i * 7))
        .collect();
    assert_eq!(one.len(), 1, "one client, many ports: {one:?}");
    let clients: BTreeSet<_> = (0..30u32)
        .filter_map(|i| fake.route(&spec.service, 0x0a4d_0100 + i, 40000))
        .collect();
    assert_eq!(
        clients.len(),
        3,
        "30 clients over every backend: {clients:?}"
    );
    // Five-tuple hashing spreads one client's ports.
    spec.source_hash = false;
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(std::slice::from_ref(&spec)).expect("apply");
    drop(w);
    let one: BTreeSet<_> = (0..50u16)
        .filter_map(|i| fake.route(&spec.service, client, 32768 + i * 7))
        .collect();
    assert_eq!(one.len(), 3, "{one:?}");
}

#[test]
fn changing_the_hash_marks_every_slot() {
    let mut fake = Fake::new();
    let mut spec = vip(100, 80, &[(21, 1, true), (22, 1, true)]);
    let mut w = Writer::adopt(&mut fake).expect("adopt");
    w.apply(std::slice::from_ref(&spec)).expect("apply");
    assert_eq!(w.changed_slots(), 0);
    spec.source_hash = true;
    let r = w.apply(std::slice::from_ref(&spec)).expect("apply");
    assert_eq!(r.tables_swapped, 1, "same table, new meaning: swapped");
    assert_eq!(w.changed_slots(), 251);
    // Adopting the maps again learns the flag.
    drop(w);
    let w = Writer::adopt(&mut fake).expect("adopt");
    assert_ne!(
        w.vip_info(&spec.service).expect("vip").flags & ha_common::VIP_F_SOURCE_HASH,
        0
    );
}
