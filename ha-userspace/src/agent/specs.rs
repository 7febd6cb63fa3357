//! Turns the configuration and what the agent knows (MACs, later health and
//! operator overrides) into the data plane's desired state.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ha_common::VipKey;

use crate::config::Config;
use crate::dataplane::{BackendSpec, VipSpec};

/// Desired data-plane state for `cfg`.
pub fn build(cfg: &Config, macs: &HashMap<Ipv4Addr, [u8; 6]>) -> Vec<VipSpec> {
    cfg.vips()
        .map(|v| VipSpec {
            key: VipKey::new(v.address.octets(), v.port, v.protocol.number()),
            table_size: v.maglev_table_size,
            backends: v
                .backends
                .iter()
                .map(|b| {
                    let addr = *b.address.get_ref();
                    BackendSpec {
                        addr,
                        mac: macs.get(&addr).copied(),
                        weight: b.weight,
                        healthy: true,
                    }
                })
                .collect(),
        })
        .collect()
}

/// Every backend address in `cfg`, once.
pub fn backend_addresses(cfg: &Config) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = cfg
        .vips()
        .flat_map(|v| v.backends.iter().map(|b| *b.address.get_ref()))
        .collect();
    out.sort();
    out.dedup();
    out
}
