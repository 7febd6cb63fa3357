//! The `halb` command line: `run`, `check-config`, and the operator commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use halb::agent::{self, RunOptions};
use halb::config;

#[derive(Parser)]
#[command(name = "halb", version, about = "High-availability XDP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground (SIGHUP reloads, SIGTERM stops).
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/halb/halb.toml")]
        config: PathBuf,
        /// On exit, leave the XDP program attached and forwarding.
        #[arg(long)]
        keep_dataplane: bool,
        /// Remove a pinned data plane (e.g. of an incompatible version) before starting.
        #[arg(long)]
        reset_dataplane: bool,
    },
    /// Validate a configuration file: prints `ok` or the errors.
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/halb/halb.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match config::load(&config) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            keep_dataplane,
            reset_dataplane,
        } => {
            init_logging();
            // A bad file exits here, before anything touches the network.
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = RunOptions {
                config_path: config,
                keep_dataplane,
                reset_dataplane,
            };
            match run_agent(cfg, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("halb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_agent(cfg: config::Config, opts: RunOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(agent::run(cfg, opts))?;
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
