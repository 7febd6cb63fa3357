//! The VRRP decoder (v2 and v3) on arbitrary packets: it never panics, and
//! what it accepts builds back to a packet it accepts the same way.
#![no_main]

use halb::vrrp::packet::{self, Auth, Expect, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let version = if sel & 1 == 0 {
        Version::V3
    } else {
        Version::V2
    };
    let auth = if sel & 2 == 0 {
        Auth::None
    } else {
        Auth::simple("secret")
    };
    let expect = Expect {
        version,
        vrid: sel >> 2,
        auth,
        interval_cs: 100,
    };
    if let Ok(r) = packet::parse(pkt, &expect) {
        let again = r.advert.build_ip(r.src, r.dst);
        let back = packet::parse(&again, &expect).expect("a rebuilt advert parses");
        assert_eq!(back.advert, r.advert);
    }
});
