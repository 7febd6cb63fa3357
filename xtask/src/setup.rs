//! `cargo xtask setup`: installs what building and testing halb need, each
//! step skipped when already done (the recipe of ../shared/TOOLCHAIN.md).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{output, run};

/// Debian packages the build, the lab and the comparisons need.
pub const PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "nftables",
    "ethtool",
    "procps",
    "curl",
    "nginx-light",
    "haproxy",
    "keepalived",
    "wrk",
    "tcpdump",
    "python3-scapy",
    "python3-prometheus-client",
    "chromium",
    "chromium-driver",
    "gnuplot-nox",
    "vagrant",
    "debootstrap",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step.
pub fn all() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    bpffs()
}

fn rust_src() -> Result<()> {
    let installed =
        output(cmd("rustup", &["component", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == "rust-src") {
        return Ok(());
    }
    run(cmd("rustup", &["component", "add", "rust-src"]))
}

fn bpf_linker() -> Result<()> {
    // It must run (finds its libLLVM through the rpath) and be the pinned version.
    if let Some(v) = output(cmd("bpf-linker", &["--version"])) {
        if v.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
    }
    let sysroot = output(cmd("rustc", &["--print", "sysroot"]))
        .context("rustc --print sysroot")?
        .trim()
        .to_string();
    let libdir = Path::new(&sysroot).join("lib");
    // The real library, not the `libLLVM-*.so` linker script beside it.
    let lib = std::fs::read_dir(&libdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    let prefix = std::env::temp_dir().join("halb-llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    let mut c = cmd(
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
        ],
    );
    c.env("LLVM_PREFIX", &prefix).env(
        "RUSTFLAGS",
        format!("-C link-arg=-Wl,-rpath,{}", libdir.display()),
    );
    run(c)
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            output(cmd("dpkg-query", &["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    let mut update = cmd("apt-get", &["update", "-q"]);
    update.env("DEBIAN_FRONTEND", "noninteractive");
    run(update)?;
    let mut install = cmd(
        "apt-get",
        &["install", "-y", "-q", "--no-install-recommends"],
    );
    install
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    let status = Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()?;
    if !status.success() {
        bail!("cannot mount bpffs at /sys/fs/bpf (are you root?)");
    }
    Ok(())
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}
