//! The namespace lab and test helpers shared by halb's end-to-end tests and
//! by `cargo xtask lab / demo / bench / failover`.

pub mod apibench;
pub mod bench;
pub mod client;
pub mod compare;
pub mod demo;
pub mod failover;
pub mod frame;
pub mod harness;
pub mod lab;
pub mod labcmd;
pub mod live;
pub mod outage;
pub mod rolling;
pub mod routed;
pub mod scaleout;
pub mod scaleout_demo;
pub mod vm;
pub mod webdriver;
