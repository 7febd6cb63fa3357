//! Child processes the agent runs (tracked scripts, notify hooks): each in a
//! process group of its own, killed as a whole group when it overruns its
//! time or when the agent lets go of it, its output captured up to a bound
//! and the rest read and thrown away, so a child can never block the agent
//! or outlive its welcome.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Output kept from a child (stdout and stderr each); the rest is discarded.
pub const MAX_OUTPUT: usize = 4096;

/// How a run ended.
#[derive(Debug)]
pub enum Ending {
    /// It exited (or was killed by a signal not of ours).
    Exited(ExitStatus),
    /// It ran past its time; its whole process group was killed.
    TimedOut,
    /// It could not be started.
    NotStarted(std::io::Error),
}

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    /// How it ended.
    pub ending: Ending,
    /// The first [`MAX_OUTPUT`] bytes of stdout, then of stderr (lossy UTF-8).
    pub output: String,
    /// Some output was thrown away.
    pub truncated: bool,
}

impl Run {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        matches!(&self.ending, Ending::Exited(s) if s.success())
    }

    /// A few words for logs.
    pub fn describe(&self) -> String {
        match &self.ending {
            Ending::Exited(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended".into(),
            },
            Ending::TimedOut => "timed out; its process group was killed".into(),
            Ending::NotStarted(e) => format!("could not start: {e}"),
        }
    }
}

/// Kills a process group when dropped (unless disarmed).
struct Group {
    pgid: Option<i32>,
}

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: kill(2) of a process group we created (the child is its
            // leader, `process_group(0)`).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output read so far: the kept bytes and whether some were thrown away.
type Kept = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// Reads `r` to its end into `kept`, keeping at most [`MAX_OUTPUT`] bytes.
async fn bounded(mut r: impl tokio::io::AsyncRead + Unpin, kept: Kept) {
    let mut buf = [0u8; 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut k) = kept.lock() else { return };
                let room = MAX_OUTPUT.saturating_sub(k.0.len());
                if n > room {
                    k.1 = true;
                }
                k.0.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Runs `cmd` (stdin closed) for at most `timeout`. On timeout, and if this
/// future is dropped before the child ends, the child's whole process group
/// is killed: a `sleep` or `curl` under `/bin/sh` goes with it.
pub async fn run(mut cmd: tokio::process::Command, timeout: Duration) -> Run {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Run {
                ending: Ending::NotStarted(e),
                output: String::new(),
                truncated: false,
            }
        }
    };
    let mut group = Group {
        pgid: child.id().map(|p| p as i32),
    };
    let kept_out = Kept::default();
    let kept_err = Kept::default();
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(bounded(s, kept_out.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(bounded(s, kept_err.clone())));
    let ending = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // Ended by itself: what it left behind in its group is its own
            // business (a hook may start a service), but not ours to wait for.
            group.pgid = None;
            Ending::Exited(status)
        }
        Ok(Err(e)) => {
            group.kill();
            Ending::NotStarted(e)
        }
        Err(_) => {
            group.kill();
            let _ = child.wait().await;
            Ending::TimedOut
        }
    };
    // Output still held open by a left-behind process is not waited for
    // (beyond a moment for what is already in the pipe).
    for h in [out, err].into_iter().flatten() {
        let abort = h.abort_handle();
        if tokio::time::timeout(Duration::from_millis(100), h)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let mut output = String::new();
    let mut truncated = false;
    for k in [kept_out, kept_err] {
        if let Ok(k) = k.lock() {
            output.push_str(&String::from_utf8_lossy(&k.0));
            truncated |= k.1;
        }
    }
    Run {
        ending,
        output,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    /// Whether `pid` is gone (or a zombie nobody reaped yet: dead either way).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
        }
    }

    #[tokio::test]
    async fn a_timed_out_child_takes_its_whole_group_with_it() {
        let dir = std::env::temp_dir().join(format!("halb-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pidfile = dir.join("sleep.pid");
        let r = run(
            sh(&format!(
                "sleep 600 & echo $! > {}; wait",
                pidfile.display()
            )),
            Duration::from_millis(300),
        )
        .await;
        assert!(matches!(r.ending, Ending::TimedOut), "{r:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid written")
            .trim()
            .parse()
            .expect("pid");
        // The kill is synchronous; the grandchild is dead by now or about
        // to be reaped by whoever adopted it.
        let mut gone = false;
        for _ in 0..100 {
            if dead(pid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "sleep 600 (pid {pid}) survived the timeout");
    }

    #[tokio::test]
    async fn output_is_bounded_and_exit_status_kept() {
        let r = run(
            sh("head -c 100000 /dev/zero | tr '\\0' x; echo oops >&2; exit 3"),
            Duration::from_secs(10),
        )
        .await;
        assert!(!r.success());
        assert_eq!(r.describe(), "exit status 3");
        assert!(r.truncated);
        assert!(r.output.len() <= 2 * MAX_OUTPUT, "{}", r.output.len());
        assert!(
            r.output.ends_with("oops\n"),
            "{:?}",
            &r.output[r.output.len() - 10..]
        );
        let ok = run(sh("true"), Duration::from_secs(5)).await;
        assert!(ok.success() && ok.output.is_empty() && !ok.truncated);
    }

    #[tokio::test]
    async fn a_child_left_holding_the_pipe_does_not_block() {
        let t = std::time::Instant::now();
        let r = run(sh("sleep 2 & echo started"), Duration::from_secs(5)).await;
        assert!(r.success(), "{r:?}");
        assert!(r.output.starts_with("started"), "{:?}", r.output);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_missing_program_is_reported() {
        let r = run(
            tokio::process::Command::new("/nonexistent/hook"),
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(r.ending, Ending::NotStarted(_)));
        assert!(r.describe().contains("could not start"));
    }
}
