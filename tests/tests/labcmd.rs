//! `cargo xtask lab up|status|down` through the lab driver, and clean-up on
//! Ctrl-C. Needs root.

use std::process::Command;
use std::time::Duration;

const DRIVER: &str = env!("CARGO_BIN_EXE_halb-lab");

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(halb_lab::labcmd::PREFIX))
        .map(String::from)
        .collect()
}

fn driver(args: &[&str], state: &std::path::Path) -> (bool, String) {
    let out = Command::new(DRIVER)
        .args(args)
        .arg("--state")
        .arg(state)
        .output()
        .expect("driver");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn up_status_down_and_ctrl_c() {
    let state = std::env::temp_dir().join(format!("halb-labcmd-{}.json", std::process::id()));
    // Whatever happens below, nothing stays up.
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            if self.0.exists() {
                let _ = driver(&["lab", "down"], &self.0);
            }
        }
    }
    let _down = Down(state.clone());
    assert!(
        lab_namespaces().is_empty(),
        "no hands-on lab may be up during the tests"
    );
    let (ok, out) = driver(&["lab", "up"], &state);
    assert!(ok, "{out}");
    assert_eq!(lab_namespaces().len(), 7, "sw, client, lb1, lb2, web1..3");
    let (ok, out) = driver(&["lab", "status"], &state);
    assert!(ok && out.contains("VIP 10.77.0.100 is on lb1"), "{out}");
    assert!(
        out.contains("VIP 10.77.0.101 is on lb2"),
        "active-active: {out}"
    );
    assert!(!out.contains("MISSING") && !out.contains("gone"), "{out}");
    let (ok, out) = driver(&["lab", "up"], &state);
    assert!(!ok && out.contains("already up"), "{out}");
    let (ok, out) = driver(&["lab", "down"], &state);
    assert!(ok, "{out}");
    assert!(lab_namespaces().is_empty(), "down removes every namespace");
    assert!(!state.exists());

    // The routed lab: up, serving through both tunnel modes, down.
    let (ok, out) = driver(&["lab", "up", "--routed"], &state);
    assert!(ok, "{out}");
    assert_eq!(
        lab_namespaces().len(),
        8,
        "sw, client, rt, lb1, lb2, web1, rweb1, rweb2"
    );
    let client = format!("/run/netns/{}client", halb_lab::labcmd::PREFIX);
    for vip in ["10.77.0.100", "10.77.0.101"] {
        let out = Command::new("nsenter")
            .arg(format!("--net={client}"))
            .args([
                "curl",
                "-s",
                "-m",
                "3",
                "--retry",
                "20",
                "--retry-all-errors",
            ])
            .args(["--retry-delay", "0", "--retry-max-time", "15"])
            .arg(format!("http://{vip}/"))
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            ["web1", "rweb1", "rweb2"].contains(&body.trim()),
            "{vip} answers from a backend: {body:?}"
        );
    }
    let (ok, out) = driver(&["lab", "status"], &state);
    assert!(ok && out.contains("VIP 10.77.0.101 is on lb1"), "{out}");
    let (ok, out) = driver(&["lab", "down"], &state);
    assert!(ok, "{out}");
    assert!(lab_namespaces().is_empty(), "down removes the routed lab");

    // Ctrl-C in the middle of `lab up`: nothing is left behind.
    let mut child = Command::new(DRIVER)
        .args(["lab", "up", "--state"])
        .arg(&state)
        .spawn()
        .expect("driver");
    // Interrupt once it has built part of the lab.
    let t0 = std::time::Instant::now();
    while lab_namespaces().len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "lab up built nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().expect("wait");
    if status.success() {
        let _ = driver(&["lab", "down"], &state);
        panic!("lab up finished before the interrupt; cannot test Ctrl-C");
    }
    assert!(
        lab_namespaces().is_empty(),
        "left behind: {:?}",
        lab_namespaces()
    );
    assert!(!state.exists());
}
