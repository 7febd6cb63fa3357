//! `cargo xtask setup`: installs what building and testing halb need, each
//! step skipped when already done (the recipe of docs/toolchain.md).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{output, run};

/// Debian packages the build, the lab, the tests and the comparisons need,
/// each with the programs of it that halb's code executes. A test
/// (`every_executed_program_is_installed_by_setup`) scans the sources for
/// programs started and fails when one is missing here.
pub const PACKAGES: &[(&str, &[&str])] = &[
    ("bpftool", &["bpftool"]),
    ("iproute2", &["ip"]),
    ("iputils-ping", &["ping"]),
    ("nftables", &["nft"]),
    ("ethtool", &["ethtool"]),
    ("procps", &["sysctl"]),
    ("util-linux", &["nsenter", "setpriv", "mount", "prlimit"]),
    ("coreutils", &["chroot", "md5sum"]),
    ("gzip", &["gzip"]),
    ("binutils", &["strip"]),
    ("bash", &["bash"]),
    ("curl", &["curl"]),
    ("nginx-light", &["nginx"]),
    ("haproxy", &["haproxy"]),
    ("keepalived", &["keepalived"]),
    ("bird2", &["bird", "birdc"]),
    ("wrk", &["wrk"]),
    ("tcpdump", &["tcpdump"]),
    ("python3", &["python3"]),
    ("python3-scapy", &[]),
    ("python3-prometheus-client", &[]),
    ("chromium", &["chromium"]),
    ("chromium-driver", &["chromedriver"]),
    ("gnuplot-nox", &["gnuplot"]),
    ("prometheus", &["promtool"]),
    ("lintian", &["lintian"]),
    ("vagrant", &["vagrant"]),
    ("debootstrap", &["debootstrap"]),
    ("e2fsprogs", &["mkfs.ext4"]),
    ("qemu-utils", &["qemu-img"]),
    ("dpkg", &["dpkg-deb", "dpkg-query"]),
    ("apt", &["apt-get", "apt-cache"]),
    ("systemd", &["systemd-analyze"]),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Runs every step.
pub fn all() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    debian_packages()?;
    bpffs()
}

fn cargo_fuzz() -> Result<()> {
    if let Some(v) = output(cmd("cargo", &["fuzz", "--version"])) {
        if v.contains(CARGO_FUZZ_VERSION) {
            return Ok(());
        }
    }
    run(cmd(
        "cargo",
        &[
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ],
    ))
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
        .map(|(p, _)| *p)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Programs the code runs that setup does not install: they come with the
    /// machine's toolchain (cargo, rustup) or are the shell every system has.
    const TOOLCHAIN_PROGRAMS: &[&str] = &["cargo", "rustup", "rustc", "sh"];

    /// Program names the sources start: `Command::new(NAME)`, the lab's
    /// `cmd(host, NAME)` (run in a namespace), and system programs named by
    /// `Path::new` with a path under /usr/bin (run through `nsenter`), NAME a string
    /// literal. Programs inside shell scripts are not seen; the scripts the
    /// host runs (deploy/provision.sh) use only what the table lists.
    fn executed_programs() -> BTreeSet<String> {
        let root = crate::util::root();
        let mut out = BTreeSet::new();
        let mut stack = vec![
            root.join("tests"),
            root.join("xtask/src"),
            root.join("ha-userspace/src"),
        ];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    for name in programs_in(&text) {
                        out.insert(name);
                    }
                }
            }
        }
        out
    }

    /// The string literal right after each `Command::new(`, and the second
    /// argument of each `.cmd(` call, when it is a plain program name.
    fn programs_in(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for pat in ["Command::new(", "Path::new("] {
            for (i, _) in text.match_indices(&format!("{pat}\"")) {
                if let Some(name) = literal_at(&text[i + pat.len()..]) {
                    // Path::new names files too: only system programs count.
                    if pat == "Command::new("
                        || name.starts_with("/usr/bin/")
                        || name.starts_with("/usr/sbin/")
                    {
                        out.push(name);
                    }
                }
            }
        }
        for (i, _) in text.match_indices(".cmd(") {
            let rest = &text[i + ".cmd(".len()..];
            let Some(close) = rest.find(')') else {
                continue;
            };
            let args = &rest[..close];
            if let Some((_, second)) = args.split_once(", ") {
                if let Some(name) = literal_at(second.trim_start()) {
                    out.push(name);
                }
            }
        }
        // A path outside the system's program directories is a test
        // fixture (a hook that must not exist, say), not a dependency.
        let system = ["/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/"];
        out.into_iter()
            .filter(|n| !n.starts_with('/') || system.iter().any(|d| n.starts_with(d)))
            .map(|n| n.rsplit('/').next().unwrap_or(&n).to_string())
            .filter(|n| !n.is_empty() && !n.contains(' '))
            .collect()
    }

    fn literal_at(s: &str) -> Option<String> {
        let s = s.strip_prefix('"')?;
        let end = s.find('"')?;
        Some(s[..end].to_string())
    }

    #[test]
    fn every_executed_program_is_installed_by_setup() {
        let known: BTreeSet<&str> = PACKAGES
            .iter()
            .flat_map(|(_, progs)| progs.iter().copied())
            .chain(TOOLCHAIN_PROGRAMS.iter().copied())
            .collect();
        let found = executed_programs();
        assert!(found.contains("ip") && found.contains("nginx"), "{found:?}");
        let missing: Vec<&String> = found
            .iter()
            .filter(|p| !known.contains(p.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "programs executed by the code but not installed by `cargo xtask setup`: {missing:?}"
        );
    }

    /// After setup (CI runs it first), every program is on PATH.
    #[test]
    fn every_program_is_present_after_setup() {
        let path = std::env::var("PATH").unwrap_or_default();
        let dirs: Vec<&str> = path
            .split(':')
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
            .collect();
        let missing: Vec<&str> = PACKAGES
            .iter()
            .flat_map(|(_, progs)| progs.iter().copied())
            .chain(TOOLCHAIN_PROGRAMS.iter().copied())
            .filter(|p| {
                !dirs
                    .iter()
                    .any(|d| std::path::Path::new(d).join(p).is_file())
            })
            .collect();
        assert!(
            missing.is_empty(),
            "not installed: {missing:?} (run `cargo xtask setup`)"
        );
    }
}
