//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
//!
//! Pure code: a set of backends and a table size in, a lookup table out.
//! The table depends only on the backends' identity keys and weights, never
//! on their order or on node-local ids, so two nodes with the same backend
//! set send a flow to the same backend: what keeps connections alive across
//! a VRRP failover without sharing flow state.
//!
//! Each backend walks its own permutation of the table (offset and skip from
//! two hashes of its key) and claims the next empty entry when it has a turn.
//! Weights set how often a backend gets a turn: in round `t` a backend of
//! weight `w` may claim while it holds fewer than `t · w / max_w` entries
//! (integer arithmetic, so the result is the same on every machine).

/// One backend as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Identity, the same on every node (derived from the backend address).
    pub key: u64,
    /// Relative weight; members with weight 0 get no entries.
    pub weight: u32,
}

/// Marks an entry no member has claimed (only when there are no members).
pub const EMPTY: u32 = u32::MAX;

/// Builds a table of `size` entries, each the index of a member in `members`
/// (or [`EMPTY`] when no member has a positive weight). `size` should be a
/// prime larger than the number of members; it must be at least 2.
pub fn build(members: &[Member], size: u32) -> Vec<u32> {
    let m = size as usize;
    let mut table = vec![EMPTY; m];
    // Work in key order so that the input order does not matter; ties in the
    // key (never in practice: keys are unique addresses) fall back to weight.
    let mut order: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].weight > 0)
        .collect();
    order.sort_by_key(|&i| (members[i].key, members[i].weight));
    order.dedup_by_key(|i| members[*i].key);
    if order.is_empty() || size < 2 {
        return table;
    }
    let max_w = order.iter().map(|&i| members[i].weight).max().unwrap_or(1) as u64;
    let m64 = size as u64;
    // Per member: current position in its permutation, skip, entries held.
    let mut pos: Vec<u64> = Vec::with_capacity(order.len());
    let mut skip: Vec<u64> = Vec::with_capacity(order.len());
    for &i in &order {
        let k = members[i].key;
        pos.push(splitmix64(k ^ 0x6d61_676c_6576_0001) % m64);
        skip.push(splitmix64(k ^ 0x6d61_676c_6576_0002) % (m64 - 1) + 1);
    }
    let mut held = vec![0u64; order.len()];
    let mut filled = 0usize;
    let mut round = 0u64;
    while filled < m {
        round += 1;
        for (j, &i) in order.iter().enumerate() {
            if held[j] * max_w >= round * members[i].weight as u64 {
                continue;
            }
            loop {
                let c = pos[j] as usize;
                pos[j] += skip[j];
                if pos[j] >= m64 {
                    pos[j] -= m64;
                }
                if table[c] == EMPTY {
                    table[c] = i as u32;
                    held[j] += 1;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

/// Identity key of a backend for [`Member::key`]: its address (and port,
/// for services that balance on it), the same on every node. An IPv4
/// address is kept whole; an IPv6 one is folded by a fixed mixer into the
/// 47 bits above the port (bit 63 set, so the two families never meet).
pub fn member_key(addr: std::net::IpAddr, port: u16) -> u64 {
    match addr {
        std::net::IpAddr::V4(a) => (u64::from(u32::from(a)) << 16) | u64::from(port),
        std::net::IpAddr::V6(a) => {
            let v = u128::from(a);
            let folded = splitmix64((v >> 64) as u64 ^ splitmix64(v as u64));
            (1 << 63) | ((folded & ((1 << 47) - 1)) << 16) | u64::from(port)
        }
    }
}

/// SplitMix64 finaliser: a fixed, portable 64-bit mixer.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const M: u32 = 65537;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                key: member_key(Ipv4Addr::from(0x0a00_0000 + i as u32).into(), 0),
                weight: w,
            })
            .collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in table {
            c[e as usize] += 1;
        }
        c
    }

    /// Every member's share of the table is within 1% (relative) of its
    /// weight share, or within one entry where 1% is less than an entry
    /// (a table entry is the unit; 1000 backends hold ~65 entries each).
    fn assert_fair(weights: &[u32]) {
        let ms = members(weights);
        let table = build(&ms, M);
        assert!(table.iter().all(|&e| e != EMPTY));
        let total_w: u32 = weights.iter().sum();
        for (i, &c) in counts(&table, ms.len()).iter().enumerate() {
            let want = M as f64 * weights[i] as f64 / total_w as f64;
            let off = (c as f64 - want).abs();
            let err = off / want;
            assert!(
                err <= 0.01 || off <= 1.0,
                "backend {i} (weight {}): {c} entries, want {want:.1} ({:.2}% off)",
                weights[i],
                err * 100.0
            );
        }
    }

    #[test]
    fn shares_follow_weights_3() {
        assert_fair(&[1, 1, 1]);
        assert_fair(&[1, 2, 3]);
        assert_fair(&[5, 1, 10]);
    }

    #[test]
    fn shares_follow_weights_10() {
        assert_fair(&[1; 10]);
        assert_fair(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn shares_follow_weights_1000() {
        assert_fair(&[1; 1000]);
        let mixed: Vec<u32> = (0..1000).map(|i| if i % 2 == 0 { 2 } else { 3 }).collect();
        assert_fair(&mixed);
    }

    #[test]
    fn removal_moves_little_beyond_the_removed_backend() {
        for n in [3usize, 10, 100, 1000] {
            let ms = members(&vec![1; n]);
            let before = build(&ms, M);
            let removed = n / 2;
            let mut after_ms = ms.clone();
            after_ms[removed].weight = 0;
            let after = build(&after_ms, M);
            let own = before.iter().filter(|&&e| e == removed as u32).count();
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            let extra = moved - own;
            assert!(
                extra as f64 <= 0.01 * M as f64,
                "{n} backends: {moved} moved, {own} were the removed backend's; {extra} extra"
            );
            assert!(after.iter().all(|&e| e != removed as u32 && e != EMPTY));
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let ms = members(&[3, 1, 4, 1, 5, 9, 2, 6]);
        let a = build(&ms, M);
        assert_eq!(a, build(&ms, M));
        // Reversed input: same backend (by key) at every entry.
        let rev: Vec<Member> = ms.iter().rev().copied().collect();
        let b = build(&rev, M);
        let n = ms.len() as u32;
        assert!(a.iter().zip(&b).all(|(&x, &y)| x == n - 1 - y));
    }

    #[test]
    fn degenerate_inputs() {
        assert!(build(&[], 7).iter().all(|&e| e == EMPTY));
        assert!(build(&members(&[0, 0]), 7).iter().all(|&e| e == EMPTY));
        let one = build(&members(&[0, 4]), 251);
        assert!(one.iter().all(|&e| e == 1));
    }

    #[test]
    fn small_tables_fill_completely() {
        let t = build(&members(&[1, 1, 1]), 7);
        assert_eq!(t.len(), 7);
        assert!(t.iter().all(|&e| e < 3));
    }
}
