//! `cargo xtask`: the project's task runner (setup, build, run, lab, demo,
//! bench, failover, vm, ci). Every task but `setup` runs `setup` first.

mod build;
mod ci;
mod fuzz;
mod package;
mod setup;
mod util;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "halb's task runner")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (rust-src, bpf-linker, Debian packages); idempotent.
    Setup,
    /// Build the eBPF programs and the `halb` binary with them embedded.
    Build {
        /// Release profile for the userspace binary.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `halb run -c CONFIG` in the foreground.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/halb/halb.toml")]
        config: PathBuf,
        /// Extra arguments for `halb run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The demo: an active-active halb pair, three nginx backends and a
    /// client in namespaces (--scale-out: three nodes behind an ECMP router).
    Demo {
        /// The BGP scale-out demo.
        #[arg(long)]
        scale_out: bool,
    },
    /// The namespace lab for hands-on use: up, down, status.
    Lab {
        /// What to do.
        #[arg(value_parser = ["up", "down", "status"])]
        action: String,
        /// `up`: the scale-out lab (a BIRD router, three BGP nodes).
        #[arg(long)]
        scale_out: bool,
        /// `up`: the routed lab (backends behind a router, reached by IP in
        /// IP and GUE, each running `halb backend`).
        #[arg(long, conflicts_with = "scale_out")]
        routed: bool,
    },
    /// Benchmarks; writes target/halb-report/.
    Bench {
        /// What to measure (default: halb against HAProxy and the backends).
        #[arg(value_enum, default_value = "compare")]
        what: BenchWhat,
        /// `live`: the short run CI does (seconds).
        #[arg(long)]
        smoke: bool,
        /// `live`: passed on to the lab driver's `bench-live`, after `--`
        /// (`--flows 1,1000000 --proto udp --family ipv4 --cores 1 --rounds 9
        /// --frames N --no-storm --no-drained`).
        #[arg(last = true)]
        live_args: Vec<String>,
    },
    /// Failover measurements against keepalived + HAProxy; writes target/halb-report/.
    Failover {
        /// Events of each kind (crash, node down) per stack.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// VRRP advertisement interval.
        #[arg(long, default_value_t = 100)]
        advert_ms: u32,
        /// The scale-out events instead (kill, link-down, drain, join; `--kills` rounds).
        #[arg(long)]
        scale_out: bool,
    },
    /// The pair on two real VMs (qemu): up, test, down.
    Vm {
        /// What to do.
        #[arg(value_parser = ["up", "test", "down"])]
        action: String,
    },
    /// The fuzz targets (cargo-fuzz, libFuzzer), each for a while.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Targets (default: all).
        targets: Vec<String>,
    },
    /// The Debian package target/halb_<version>_amd64.deb (lintian-checked).
    Package {
        /// Package the debug build instead of a release build.
        #[arg(long)]
        debug: bool,
    },
    /// Everything CI runs: fmt, clippy, unit tests, privileged end-to-end
    /// tests, a short fuzz run of every target, the two-VM test.
    Ci,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchWhat {
    /// wrk: one backend, three backends, HAProxy, halb (bench.md, bench.png).
    Compare,
    /// Per-packet cost through BPF_PROG_TEST_RUN, and Maglev build time.
    Dataplane,
    /// Real frames through the native XDP driver path on veth: the empty
    /// program, an LRU-hash reference and halb (live.md, live.json, live.png).
    Live,
    /// API latency under load and /metrics with 1000 backends.
    Api,
    /// A rolling update by reload under 64 clients and 10 downloads (rolling.md).
    Rolling,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::all(),
        Task::Build { release } => {
            setup::all()?;
            build::all(release).map(|_| ())
        }
        Task::Run { config, args } => {
            setup::all()?;
            let bins = build::all(false)?;
            // Prepare this machine as a load-balancer node, as Vagrant and the lab do.
            let mut prep = std::process::Command::new("bash");
            prep.arg(util::root().join("deploy/provision.sh"))
                .args(["lb", "--no-packages"]);
            util::run(prep)?;
            let mut cmd = std::process::Command::new(&bins.halb);
            cmd.arg("run").arg("-c").arg(config).args(args);
            util::exec(cmd)
        }
        Task::Lab {
            action,
            scale_out,
            routed,
        } => {
            setup::all()?;
            let bins = build::all(false)?;
            let lab = build::lab_driver(false)?;
            let mut cmd = std::process::Command::new(lab);
            cmd.arg("lab")
                .arg(&action)
                .arg("--state")
                .arg(build::target_dir().join("halb-lab/state.json"))
                .env("HALB_BIN", &bins.halb);
            if scale_out {
                cmd.arg("--scale-out");
            }
            if routed {
                cmd.arg("--routed");
            }
            util::run(cmd)
        }
        Task::Demo { scale_out } => {
            setup::all()?;
            let bins = build::all(false)?;
            let lab = build::lab_driver(false)?;
            let mut cmd = std::process::Command::new(lab);
            cmd.arg("demo").env("HALB_BIN", &bins.halb);
            if scale_out {
                cmd.arg("--scale-out");
            }
            util::run(cmd)
        }
        Task::Bench {
            what,
            smoke,
            live_args,
        } => {
            setup::all()?;
            let bins = build::all(true)?;
            let lab = build::lab_driver(true)?;
            let out = build::target_dir().join("halb-report");
            let mut cmd = std::process::Command::new(lab);
            match what {
                BenchWhat::Compare => {
                    cmd.arg("bench-compare")
                        .arg("--out")
                        .arg(out)
                        .env("HALB_BIN", &bins.halb);
                }
                BenchWhat::Dataplane => {
                    cmd.arg("bench-dataplane").arg("--out").arg(out);
                }
                BenchWhat::Live => {
                    cmd.arg("bench-live")
                        .arg("--out")
                        .arg(out)
                        .env("HALB_BIN", &bins.halb);
                    if smoke {
                        cmd.arg("--smoke");
                    }
                    cmd.args(&live_args);
                }
                BenchWhat::Rolling => {
                    cmd.arg("bench-rolling")
                        .arg("--out")
                        .arg(out)
                        .env("HALB_BIN", &bins.halb);
                }
                BenchWhat::Api => {
                    cmd.arg("bench-api")
                        .arg("--out")
                        .arg(out)
                        .env("HALB_BIN", &bins.halb);
                }
            }
            util::run(cmd)
        }
        Task::Failover {
            kills,
            scale_out: true,
            ..
        } => {
            setup::all()?;
            let bins = build::all(true)?;
            let lab = build::lab_driver(true)?;
            let out = build::target_dir().join("halb-report");
            let mut cmd = std::process::Command::new(&lab);
            cmd.arg("failover-scale-out")
                .arg("--rounds")
                .arg(kills.min(10).to_string())
                .arg("--out")
                .arg(&out)
                .env("HALB_BIN", &bins.halb);
            util::run(cmd)
        }
        Task::Failover {
            kills, advert_ms, ..
        } => {
            setup::all()?;
            let bins = build::all(true)?;
            let lab = build::lab_driver(true)?;
            let out = build::target_dir().join("halb-report");
            for task in ["failover-outage", "failover-vrrp"] {
                let mut cmd = std::process::Command::new(&lab);
                cmd.arg(task)
                    .arg(if task == "failover-vrrp" {
                        "--kills"
                    } else {
                        "--events"
                    })
                    .arg(kills.to_string())
                    .arg("--advert-ms")
                    .arg(advert_ms.to_string())
                    .arg("--out")
                    .arg(&out)
                    .env("HALB_BIN", &bins.halb);
                util::run(cmd)?;
            }
            Ok(())
        }
        Task::Vm { action } => {
            setup::all()?;
            vm(&action)
        }
        Task::Fuzz { seconds, targets } => {
            setup::all()?;
            fuzz::run_targets(seconds, &targets)
        }
        Task::Package { debug } => {
            setup::all()?;
            package::build(!debug).map(|_| ())
        }
        Task::Ci => {
            setup::all()?;
            ci::run_all()
        }
    }
}

/// `cargo xtask vm up|test|down` (also run by `ci`).
pub fn vm(action: &str) -> Result<()> {
    // The guests install the package (the debug build: CI has it already).
    let deb = package::build(false)?;
    let bins = build::all(false)?;
    let lab = build::lab_driver(false)?;
    let mut cmd = std::process::Command::new(lab);
    match action {
        "test" => {
            cmd.arg("vm-test")
                .arg("--out")
                .arg(build::target_dir().join("halb-report"));
        }
        other => {
            cmd.arg("vm")
                .arg(other)
                .arg("--state")
                .arg(build::target_dir().join("halb-vm/state.json"));
        }
    }
    cmd.env("HALB_BIN", &bins.halb).env("HALB_DEB", &deb);
    util::run(cmd)
}
