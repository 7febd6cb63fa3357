//! VRRP: the election of the node that owns the VIPs. `packet` is the wire
//! format, `machine` the sans-IO protocol logic, `addresses` the sans-IO
//! keeping of the VIPs on the interface through netlink failures, `group`
//! the sans-IO sync groups, `track`
//! how tracked conditions combine into a priority or a fault, `notify` the
//! hook worker, `socket` the raw VRRP socket of either family, and `io`
//! the sockets and netlink that connect them to the system.

pub mod addresses;
pub mod group;
pub mod io;
pub mod machine;
pub mod notify;
pub mod packet;
pub mod socket;
pub mod track;
