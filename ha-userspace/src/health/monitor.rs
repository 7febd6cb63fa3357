//! Runs the probes: one task per backend, each probing every interval with
//! jitter, all bounded by a shared semaphore, every outcome reported to the
//! agent with the generation of the monitor that made it (a reload replaces
//! the monitor; late reports of the old one are recognised and dropped).
//! Thin I/O: it decides nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::check::{self, Outcome, Probe};

/// Probes running at once, at most.
pub const MAX_CONCURRENT: usize = 64;

/// One backend to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// VIP name.
    pub vip: String,
    /// Backend name.
    pub backend: String,
    /// Address and port to probe.
    pub addr: SocketAddr,
    /// What to do.
    pub probe: Probe,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// A probe through the tunnel: its packets' mark (the encapsulation
    /// program picks them out by it) and how they are encapsulated.
    pub tunnel: Option<(u32, ha_common::hc::HcTarget)>,
}

/// One outcome for the agent.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which backend.
    pub target: Target,
    /// What happened.
    pub outcome: Outcome,
    /// The generation of the monitor that probed.
    pub generation: u64,
}

/// The running probe tasks; dropping it stops them.
pub struct Monitor {
    tasks: JoinSet<()>,
    generation: u64,
    started: std::time::Instant,
}

impl Monitor {
    /// The generation its reports carry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When it started.
    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    /// Waits until a probe task ends (they run for ever: an end is a bug or
    /// a panic); returns a description. Pends while all run.
    pub async fn ended(&mut self) -> String {
        match self.tasks.join_next().await {
            None => std::future::pending().await,
            Some(Err(e)) if e.is_panic() => "a health probe task panicked".into(),
            Some(_) => "a health probe task ended".into(),
        }
    }

    /// Starts probing `targets`, each from the first of `sources` of its
    /// family (none: the kernel's choice), reporting on `tx` with
    /// `generation`.
    pub fn start(
        targets: Vec<Target>,
        sources: &[IpAddr],
        tx: mpsc::Sender<Report>,
        generation: u64,
    ) -> Self {
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let n = targets.len().max(1) as u64;
        let mut tasks = JoinSet::new();
        for (i, t) in targets.into_iter().enumerate() {
            let source = sources
                .iter()
                .copied()
                .find(|s| s.is_ipv6() == t.addr.is_ipv6());
            {
                let limit = limit.clone();
                let tx = tx.clone();
                // Spread the first probes over the interval so that many
                // backends are not probed in one burst.
                let first = t.interval * (i as u32) / (n as u32).max(1) / 4;
                let mut rng = Jitter::new(i as u64);
                tasks.spawn(async move {
                    tokio::time::sleep(first).await;
                    loop {
                        let outcome = {
                            let Ok(_permit) = limit.acquire().await else {
                                return;
                            };
                            check::run(
                                &t.probe,
                                t.addr,
                                source,
                                t.tunnel.map(|(m, _)| m),
                                t.timeout,
                            )
                            .await
                        };
                        if tx
                            .send(Report {
                                target: t.clone(),
                                outcome,
                                generation,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        tokio::time::sleep(rng.around(t.interval)).await;
                    }
                });
            }
        }
        Self {
            tasks,
            generation,
            started: std::time::Instant::now(),
        }
    }
}

/// ±5% jitter from a xorshift generator (no dependency; quality is irrelevant).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Self((t ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn around(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let per_mille = 950 + (self.0 % 101) as u32; // 95.0% .. 105.0%
        d * per_mille / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_five_percent() {
        let mut j = Jitter::new(7);
        for _ in 0..1000 {
            let d = j.around(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(950) && d <= Duration::from_millis(1050));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reports_arrive_for_every_target() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move { while l.accept().await.is_ok() {} });
        let (tx, mut rx) = mpsc::channel(16);
        let t = |name: &str, port| Target {
            vip: "v".into(),
            backend: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            probe: Probe::Tcp,
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(200),
            tunnel: None,
        };
        let _m = Monitor::start(vec![t("up", port), t("down", 1)], &[], tx, 7);
        let mut seen = std::collections::HashMap::new();
        while seen.len() < 2 {
            let r = rx.recv().await.expect("report");
            assert_eq!(r.generation, 7);
            seen.insert(r.target.backend.clone(), r.outcome.ok);
        }
        assert!(seen["up"]);
        assert!(!seen["down"]);
    }
}
