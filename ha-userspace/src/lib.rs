//! halb: a high-availability layer-4 load balancer (XDP data plane, VRRP,
//! health checks) in one agent. The `halb` binary is a thin edge over this
//! library; `agent` is the only module that wires the others together.

pub mod agent;
pub mod announce;
pub mod api;
pub mod config;
pub mod dataplane;
pub mod health;
pub mod import;
pub mod logging;
pub mod net;
pub mod proc;
pub mod vrrp;
pub mod watchdog;
