//! `cargo xtask fuzz [--seconds N] [TARGET...]`: the cargo-fuzz (libFuzzer)
//! targets of `fuzz/`, built once with AddressSanitizer, each run for N
//! seconds from the corpus kept in the repository. New inputs go to
//! `target/fuzz-corpus/` (the repository's corpus is read, not written);
//! a crash fails the task and leaves its input under `fuzz/artifacts/`.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{root, run};

/// Every target in `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &[
    "vrrp_packet",
    "config",
    "api_request",
    "netlink",
    "http_answer",
];

fn cargo_fuzz() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root().join("fuzz"))
        .arg("fuzz")
        // cargo-fuzz passes -Z sanitizer flags; stable rustc takes them
        // with RUSTC_BOOTSTRAP (as the eBPF build does).
        .env("RUSTC_BOOTSTRAP", "1");
    for var in ["RUSTC", "RUSTC_WRAPPER", "CARGO_TARGET_DIR", "RUSTFLAGS"] {
        c.env_remove(var);
    }
    c
}

/// Builds every target, then runs `targets` (all when empty) `seconds` each.
pub fn run_targets(seconds: u32, targets: &[String]) -> Result<()> {
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for t in &chosen {
        if !TARGETS.contains(t) {
            bail!("no fuzz target {t:?}; targets: {}", TARGETS.join(", "));
        }
    }
    let mut build = cargo_fuzz();
    build.args(["build", "-O"]);
    run(build)?;
    for t in chosen {
        let fresh = root().join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&fresh)?;
        let mut c = cargo_fuzz();
        c.args(["run", "-O", t])
            .arg(&fresh)
            .arg(root().join("fuzz/corpus").join(t))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1");
        run(c)?;
    }
    Ok(())
}
