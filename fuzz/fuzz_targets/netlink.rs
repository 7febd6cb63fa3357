//! Netlink answers as the kernel would send them, decoded by the crate halb
//! uses and read by halb's own extraction (links, neighbours): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) else {
        return;
    };
    if let NetlinkPayload::InnerMessage(inner) = msg.payload {
        match inner {
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::GetLink(l) => {
                let link = halb::net::link_of("eth0", &l);
                assert_eq!(link.index, l.header.index);
            }
            RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::GetNeighbour(n) => {
                let _ = halb::net::neighbour_of(&n, n.header.ifindex);
            }
            _ => {}
        }
    }
});
