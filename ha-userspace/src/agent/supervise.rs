//! Supervision of the agent's long-running tasks (VRRP, its tracking
//! probes, the API server, the netlink connection, the neighbour resolver):
//! none of them may end while the agent runs, so the first one that does,
//! by returning, failing or panicking, is reported, and the agent exits
//! non-zero for its supervisor (systemd) to restart it.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// A set of tasks that must not end.
#[derive(Default)]
pub struct Supervised {
    set: JoinSet<Result<(), String>>,
    names: HashMap<Id, String>,
}

impl Supervised {
    /// Starts `fut` as a task named `name`.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        fut: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let h = self.set.spawn(fut);
        self.names.insert(h.id(), name.into());
    }

    /// Adopts a task already running (joined through its handle).
    pub fn adopt<T: Send + 'static>(
        &mut self,
        name: impl Into<String>,
        handle: tokio::task::JoinHandle<T>,
    ) {
        self.spawn(name, async move {
            match handle.await {
                Ok(_) => Ok(()),
                Err(e) if e.is_panic() => Err(format!("panicked: {}", panic_text(e))),
                Err(e) => Err(e.to_string()),
            }
        });
    }

    /// Waits for the first task to end and says which and how. Never
    /// returns while the set is empty.
    pub async fn ended(&mut self) -> String {
        let Some(r) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, how) = match r {
            Ok((id, Ok(()))) => (id, "ended".to_string()),
            Ok((id, Err(e))) => (id, format!("failed: {e}")),
            Err(e) => {
                let id = e.id();
                let how = if e.is_panic() {
                    format!("panicked: {}", panic_text(e))
                } else {
                    "was cancelled".to_string()
                };
                (id, how)
            }
        };
        let name = self.names.remove(&id).unwrap_or_else(|| "a task".into());
        format!("{name} {how}")
    }

    /// Stops every task.
    pub fn abort_all(&mut self) {
        self.set.abort_all();
        self.names.clear();
    }

    /// Number of tasks running.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// No task is running.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_returns_is_reported_by_name() {
        let mut s = Supervised::default();
        s.spawn("VRRP", async {
            std::future::pending::<()>().await;
            Ok(())
        });
        s.spawn("API server", async { panic!("boom") });
        assert_eq!(s.ended().await, "API server panicked: boom");
        s.spawn("netlink", async { Err("socket closed".to_string()) });
        assert_eq!(s.ended().await, "netlink failed: socket closed");
        let h = tokio::spawn(async {});
        s.adopt("resolver", h);
        assert_eq!(s.ended().await, "resolver ended");
        assert_eq!(s.len(), 1, "VRRP still runs");
        s.abort_all();
    }
}
