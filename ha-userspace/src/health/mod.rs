//! Health checks: the rise/fall logic that turns a stream of check results
//! into up/down (HAProxy's `rise`/`fall`, keepalived's script rise/fall) is
//! pure logic here; `check` holds the probes and `monitor` runs them.

pub mod check;
pub mod monitor;

/// Up/down state fed by check results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    known: bool,
    streak: u32,
}

impl RiseFall {
    /// `rise` successes in a row bring it up, `fall` failures take it down.
    pub fn new(rise: u32, fall: u32, initially_up: bool) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            up: initially_up,
            known: true,
            streak: 0,
        }
    }

    /// A state not known yet: counted as up until the first result, which
    /// decides it at once (a backend found dead at start-up gets no traffic
    /// for `fall` intervals first; one found alive is not held back).
    pub fn unknown(rise: u32, fall: u32) -> Self {
        Self {
            known: false,
            ..Self::new(rise, fall, true)
        }
    }

    /// Whether it is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether a result has been seen.
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// Records one result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if !self.known {
            self.known = true;
            self.streak = 0;
            let changed = ok != self.up;
            self.up = ok;
            return changed.then_some(ok);
        }
        if ok == self.up {
            // A result agreeing with the state breaks any opposite streak.
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_in_a_row() {
        let mut r = RiseFall::new(2, 3, true);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(true), None, "a success resets the streak");
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(false), Some(false));
        assert!(!r.is_up());
    }

    #[test]
    fn rises_after_rise_successes_in_a_row() {
        let mut r = RiseFall::new(2, 3, false);
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(false), None);
        assert_eq!(r.record(true), None);
        assert_eq!(r.record(true), Some(true));
        assert_eq!(r.record(true), None);
    }

    #[test]
    fn the_first_result_decides_an_unknown_state() {
        let mut r = RiseFall::unknown(3, 3);
        assert!(r.is_up() && !r.is_known());
        assert_eq!(r.record(false), Some(false));
        assert_eq!(r.record(true), None, "then rise applies");
        let mut r = RiseFall::unknown(3, 3);
        assert_eq!(r.record(true), None);
        assert!(r.is_known());
    }

    #[test]
    fn one_and_one_follows_every_result() {
        let mut r = RiseFall::new(1, 1, true);
        assert_eq!(r.record(false), Some(false));
        assert_eq!(r.record(true), Some(true));
    }
}
