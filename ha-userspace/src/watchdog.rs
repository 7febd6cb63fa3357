//! Liveness: components that must keep running (the agent's loop, the VRRP
//! timers, the health probes) show it by beating; the agent pings systemd's
//! watchdog (`Type=notify`, `WatchdogSec=`) only while every one of them is
//! fresh, so a hung agent is restarted instead of holding the VIP with
//! frozen health. Also the `READY=1` / `STOPPING=1` notifications.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A component's last sign of life (cheap to clone and to beat).
#[derive(Debug, Clone)]
pub struct Beat {
    last_ms: Arc<AtomicU64>,
}

impl Default for Beat {
    fn default() -> Self {
        Self::new()
    }
}

impl Beat {
    /// A beat made now.
    pub fn new() -> Self {
        let b = Self {
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        b.beat();
        b
    }

    /// "Still alive."
    pub fn beat(&self) {
        let ms = epoch().elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        self.age_at(epoch().elapsed().as_millis() as u64)
    }

    fn age_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any; as
/// libsystemd's `sd_watchdog_enabled`, a `WATCHDOG_PID` that names another
/// process means it is not ours.
pub fn interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

fn send(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Start-up is complete (`READY=1`).
pub fn ready() {
    send(&[sd_notify::NotifyState::Ready]);
}

/// Everything is alive (`WATCHDOG=1`).
pub fn ping() {
    send(&[sd_notify::NotifyState::Watchdog]);
}

/// Shutting down (`STOPPING=1`).
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// Which of `parts` (name, beat, allowed age) are stale.
pub fn stale<'a>(parts: &'a [(&'a str, &Beat, Duration)]) -> Vec<&'a str> {
    stale_at(parts, epoch().elapsed().as_millis() as u64)
}

fn stale_at<'a>(parts: &'a [(&'a str, &Beat, Duration)], now_ms: u64) -> Vec<&'a str> {
    parts
        .iter()
        .filter(|(_, b, max)| b.age_at(now_ms) > *max)
        .map(|(n, _, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_that_stops_beating_goes_stale() {
        let alive = Beat::new();
        let hung = Beat::new();
        alive.last_ms.store(10_000, Ordering::Relaxed);
        hung.last_ms.store(7_000, Ordering::Relaxed);
        let parts = [
            ("loop", &alive, Duration::from_secs(2)),
            ("vrrp", &hung, Duration::from_secs(2)),
        ];
        assert_eq!(stale_at(&parts, 10_500), ["vrrp"]);
        assert!(stale_at(&parts, 8_500).is_empty());
        assert_eq!(stale_at(&parts, 13_000), ["loop", "vrrp"]);
    }
}
