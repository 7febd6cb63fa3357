//! VRRP: the election of the node that owns the VIPs. `packet` is the wire
//! format, `machine` the sans-IO protocol logic, `io` the sockets, netlink
//! and hooks that connect them to the system.

pub mod machine;
pub mod packet;
