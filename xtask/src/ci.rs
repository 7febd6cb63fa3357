//! `cargo xtask ci`: what `.ci/run` runs after installing the toolchain:
//! formatting, clippy, the eBPF and userspace builds, unit tests, the
//! privileged end-to-end tests (CI runs as root; nothing is skipped), a
//! smoke run of the live-frames bench, a short fuzz run of every target, and the two-VM test.

use std::process::Command;

use anyhow::Result;

use crate::build;
use crate::util::{root, run};

pub fn run_all() -> Result<()> {
    let r = root();
    let mut fmt = Command::new("cargo");
    fmt.current_dir(&r).args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut fmt_ebpf = Command::new("cargo");
    fmt_ebpf
        .current_dir(r.join("ha-ebpf"))
        .args(["fmt", "--all", "--", "--check"]);
    run(fmt_ebpf)?;
    let mut fmt_fuzz = Command::new("cargo");
    fmt_fuzz
        .current_dir(r.join("fuzz"))
        .args(["fmt", "--all", "--", "--check"]);
    run(fmt_fuzz)?;

    // The Vagrantfile is checked, not booted (no VMs here).
    let mut vagrant = Command::new("vagrant");
    vagrant
        .current_dir(r.join("deploy"))
        .args(["validate", "--ignore-provider"])
        .env("VAGRANT_CHECKPOINT_DISABLE", "1");
    run(vagrant)?;
    let mut sh = Command::new("bash");
    sh.args(["-n"]).arg(r.join("deploy/provision.sh"));
    run(sh)?;

    let bins = build::all(false)?;

    let mut clippy = Command::new("cargo");
    clippy
        .current_dir(&r)
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("HALB_EBPF_DIR", build::ebpf_dir());
    run(clippy)?;

    let mut test = Command::new("cargo");
    test.current_dir(&r)
        .args(["test", "--workspace", "--", "--test-threads=1"])
        .env("HALB_EBPF_DIR", build::ebpf_dir())
        .env("HALB_BIN", &bins.halb);
    run(test)?;

    // The live-frames bench, short: every program sends real frames through
    // the native driver path, and every frame must come back rewritten.
    let lab = build::lab_driver(false)?;
    let mut live = Command::new(lab);
    live.args(["bench-live", "--smoke", "--out"])
        .arg(build::target_dir().join("halb-report"))
        .env("HALB_BIN", &bins.halb);
    run(live)?;

    // Every parser under libFuzzer for 30 s (the corpus is in fuzz/corpus).
    crate::fuzz::run_targets(30, &[])?;

    // The pair on two real VMs (builds its image and qemu once, then ~1.5 min).
    crate::vm("test")
}
