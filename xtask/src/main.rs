//! `cargo xtask`: the project's task runner (setup, build, run, lab, demo,
//! bench, failover, vm, ci). Every task but `setup` runs `setup` first.

mod build;
mod ci;
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
    /// Everything CI runs: fmt, clippy, unit tests, privileged end-to-end tests.
    Ci,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Build { release } => {
            setup::run()?;
            build::all(release).map(|_| ())
        }
        Task::Run { config, args } => {
            setup::run()?;
            let bins = build::all(false)?;
            let mut cmd = std::process::Command::new(&bins.halb);
            cmd.arg("run").arg("-c").arg(config).args(args);
            util::exec(cmd)
        }
        Task::Ci => {
            setup::run()?;
            ci::run_all()
        }
    }
}
