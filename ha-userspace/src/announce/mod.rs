//! Route announcement for the BGP scale-out mode: which VIP addresses this
//! node offers to the upstream router, and the contract with the routing
//! daemon that carries them (BIRD 2 in `deploy/`, any daemon that can export
//! a kernel routing table).
//!
//! - [`gate`]: sans-IO. Facts in (data plane attached, node drained or
//!   stopping, which services have a healthy backend, time), the set of
//!   addresses to announce out, with a reason for each and a hold-down
//!   after a health withdrawal.
//! - [`device`]: the I/O. A TUN device the agent holds open (the kernel
//!   deletes it, and every route through it, when the agent's process ends
//!   for any reason, SIGKILL included) and one host route per announced
//!   address through it in a dedicated routing table.
//! - [`bird`]: the daemon side: a BIRD 2 configuration rendered from
//!   `[bgp]`, and the sessions' state read from BIRD's control socket.

pub mod bird;
pub mod device;
pub mod gate;
