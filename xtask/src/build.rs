//! `cargo xtask build`: the eBPF object (bpfel, `-Z build-std=core` on
//! stable via RUSTC_BOOTSTRAP) and then the `halb` binary that embeds it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::util::{root, run};

/// What a build produced.
pub struct Binaries {
    /// The `halb` binary.
    pub halb: PathBuf,
}

/// Directory holding the built eBPF objects (`halb-xdp`, `halb-pass`).
pub fn ebpf_dir() -> PathBuf {
    root().join("ha-ebpf/target/bpfel-unknown-none/release")
}

/// Builds the eBPF programs.
pub fn ebpf() -> Result<PathBuf> {
    let mut c = Command::new("cargo");
    c.current_dir(root().join("ha-ebpf"))
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
        );
    // The outer cargo's settings must not leak into the BPF build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
    ] {
        c.env_remove(var);
    }
    run(c)?;
    Ok(ebpf_dir())
}

/// Builds the eBPF programs and the userspace binaries.
pub fn all(release: bool) -> Result<Binaries> {
    let dir = ebpf()?;
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["build", "-p", "ha-userspace", "--bins"])
        .env("HALB_EBPF_DIR", &dir);
    if release {
        c.arg("--release");
    }
    run(c)?;
    Ok(Binaries {
        halb: target_dir()
            .join(if release { "release" } else { "debug" })
            .join("halb"),
    })
}

/// The root workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds the lab driver (`halb-lab`), which embeds the eBPF objects too.
pub fn lab_driver(release: bool) -> Result<PathBuf> {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .args(["build", "-p", "halb-lab", "--bin", "halb-lab"])
        .env("HALB_EBPF_DIR", ebpf_dir());
    if release {
        c.arg("--release");
    }
    run(c)?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("halb-lab"))
}
