//! The notify hook: run with the new state (MASTER, BACKUP, FAULT) on a
//! worker of its own, one run at a time. State changes that arrive while a
//! run is going are folded into one: the next run gets the latest state, so
//! a flapping router cannot pile up hook processes. Each run has a time
//! limit, after which its whole process group is killed (see `crate::proc`).

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::machine::State;

/// Time a notify hook may take.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the hook runs and what it is told besides the state.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The program.
    pub path: PathBuf,
    /// Extra environment (`HALB_INTERFACE`, `HALB_VRID`, ...).
    pub env: Vec<(String, String)>,
    /// Time limit per run.
    pub timeout: Duration,
}

/// Hands states to the worker (dropping it stops the worker after its run).
#[derive(Debug)]
pub struct Notifier {
    tx: watch::Sender<Option<(u64, State)>>,
    seq: u64,
}

impl Notifier {
    /// Starts the worker for `hook`; `done` (tests) hears each finished run.
    pub fn start(hook: Hook, done: Option<tokio::sync::mpsc::UnboundedSender<State>>) -> Self {
        let (tx, mut rx) = watch::channel::<Option<(u64, State)>>(None);
        // In the caller's span: a hook's failure names its instance.
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                while rx.changed().await.is_ok() {
                    let Some((_, state)) = *rx.borrow_and_update() else {
                        continue;
                    };
                    let name = state.name();
                    let mut cmd = tokio::process::Command::new(&hook.path);
                    cmd.arg(name).env("HALB_STATE", name);
                    for (k, v) in &hook.env {
                        cmd.env(k, v);
                    }
                    let r = crate::proc::run(cmd, hook.timeout).await;
                    if r.success() {
                        tracing::debug!(hook = %hook.path.display(), state = name, "notify hook ran");
                    } else {
                        tracing::warn!(
                            hook = %hook.path.display(),
                            state = name,
                            output = %r.output.trim_end(),
                            "notify hook: {}",
                            r.describe()
                        );
                    }
                    if let Some(d) = &done {
                        let _ = d.send(state);
                    }
                }
            },
            span,
        ));
        Self { tx, seq: 0 }
    }

    /// The router entered `state`.
    pub fn notify(&mut self, state: State) {
        self.seq += 1;
        self.tx.send_replace(Some((self.seq, state)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_during_a_run_fold_into_the_latest() {
        let dir = std::env::temp_dir().join(format!("halb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("states");
        let _ = std::fs::remove_file(&log);
        let hook = dir.join("hook.sh");
        std::fs::write(
            &hook,
            format!("#!/bin/sh\necho \"$1\" >> {}\nsleep 0.2\n", log.display()),
        )
        .expect("hook");
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let mut n = Notifier::start(
            Hook {
                path: hook,
                env: vec![],
                timeout: Duration::from_secs(5),
            },
            Some(done_tx),
        );
        n.notify(State::Backup);
        // 100 flaps while the first run goes on.
        for i in 0..100 {
            n.notify(if i % 2 == 0 {
                State::Master
            } else {
                State::Backup
            });
        }
        n.notify(State::Master);
        let mut runs = Vec::new();
        while runs.last() != Some(&State::Master) {
            runs.push(done.recv().await.expect("a run ends"));
        }
        assert!(runs.len() <= 3, "{runs:?}");
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(text.lines().last(), Some("MASTER"), "{text}");
        assert!(text.lines().count() <= 3, "{text}");
    }
}
