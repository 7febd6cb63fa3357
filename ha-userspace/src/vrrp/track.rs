//! Tracking: what lowers this node's VRRP priority or puts it in FAULT
//! (interfaces, scripts, backend health, the data plane), combined as
//! keepalived does. Pure logic; the probes live in the agent.

use std::collections::BTreeMap;

/// What one tracked source does to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// Puts the router in FAULT.
    Fault,
    /// Adds to the priority (negative: lowers it).
    Weight(i32),
}

/// The combined effect of every tracked source on a base priority.
#[derive(Debug, Clone)]
pub struct Tracking {
    base: u8,
    effects: BTreeMap<String, Effect>,
}

impl Tracking {
    /// Tracking for a router of priority `base`.
    pub fn new(base: u8) -> Self {
        Self {
            base,
            effects: BTreeMap::new(),
        }
    }

    /// Sets the effect of `source`; returns whether priority or fault changed.
    pub fn set(&mut self, source: &str, effect: Effect) -> bool {
        let before = (self.priority(), self.fault());
        if effect == Effect::None {
            self.effects.remove(source);
        } else {
            self.effects.insert(source.to_string(), effect);
        }
        before != (self.priority(), self.fault())
    }

    /// Effective priority: the base plus every weight, kept within 1–254;
    /// an address owner (255) is not adjusted.
    pub fn priority(&self) -> u8 {
        if self.base == 255 {
            return 255;
        }
        let sum: i32 = self
            .effects
            .values()
            .map(|e| match e {
                Effect::Weight(w) => *w,
                _ => 0,
            })
            .sum();
        (self.base as i32 + sum).clamp(1, 254) as u8
    }

    /// Whether some source puts the router in FAULT.
    pub fn fault(&self) -> bool {
        self.effects.values().any(|e| *e == Effect::Fault)
    }

    /// Sources currently in effect, for status output.
    pub fn active(&self) -> impl Iterator<Item = (&str, Effect)> {
        self.effects.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// The effect of a keepalived-style tracked script with `weight`, given
/// whether it currently succeeds: weight 0 → FAULT on failure; positive →
/// added while it succeeds; negative → subtracted while it fails.
pub fn script_effect(weight: i32, ok: bool) -> Effect {
    match (weight, ok) {
        (0, true) => Effect::None,
        (0, false) => Effect::Fault,
        (w, true) if w > 0 => Effect::Weight(w),
        (w, false) if w < 0 => Effect::Weight(w),
        _ => Effect::None,
    }
}

/// The effect of backend health on an instance that owns `owned` VIPs with
/// `weight` (`track_backends_weight`), given the VIPs that have no healthy
/// backend: only a VIP of its own moves it (weight 0: FAULT).
pub fn backends_effect<S: AsRef<str>>(owned: &[S], without_healthy: &[S], weight: i32) -> Effect {
    let mine = without_healthy
        .iter()
        .any(|v| owned.iter().any(|o| o.as_ref() == v.as_ref()));
    match (mine, weight) {
        (false, _) => Effect::None,
        (true, 0) => Effect::Fault,
        (true, w) => Effect::Weight(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_add_and_clamp() {
        let mut t = Tracking::new(100);
        assert!(t.set("script:a", Effect::Weight(-30)));
        assert!(t.set("script:b", Effect::Weight(10)));
        assert_eq!(t.priority(), 80);
        assert!(t.set("backends", Effect::Weight(-200)));
        assert_eq!(t.priority(), 1);
        assert!(t.set("backends", Effect::None));
        assert_eq!(t.priority(), 80);
        assert!(!t.set("script:c", Effect::None), "no change");
    }

    #[test]
    fn owner_is_not_adjusted_but_can_fault() {
        let mut t = Tracking::new(255);
        assert!(!t.set("script:a", Effect::Weight(-50)));
        assert_eq!(t.priority(), 255);
        assert!(t.set("interface:eth1", Effect::Fault));
        assert!(t.fault());
        assert!(t.set("interface:eth1", Effect::None));
        assert!(!t.fault());
    }

    #[test]
    fn script_weights_as_keepalived() {
        assert_eq!(script_effect(0, false), Effect::Fault);
        assert_eq!(script_effect(0, true), Effect::None);
        assert_eq!(script_effect(20, true), Effect::Weight(20));
        assert_eq!(script_effect(20, false), Effect::None);
        assert_eq!(script_effect(-20, false), Effect::Weight(-20));
        assert_eq!(script_effect(-20, true), Effect::None);
    }
}
