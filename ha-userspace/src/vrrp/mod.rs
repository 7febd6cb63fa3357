//! VRRP: the election of the node that owns the VIPs. `packet` is the wire
//! format, `machine` the sans-IO protocol logic, `track` how tracked
//! conditions combine into a priority or a fault, and `io` the sockets,
//! netlink and hooks that connect them to the system.

pub mod io;
pub mod machine;
pub mod packet;
pub mod track;
