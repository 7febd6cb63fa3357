//! The `halb` command line: `run`, `check-config`, and the operator commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use halb::agent::{self, RunOptions};
use halb::api::client::Client;
use halb::api::model::{BackendChange, ErrorBody, Status};
use halb::config;
use halb::logging::{self, LogFormat};

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
        /// Log format (overrides `[node] log_format`).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Validate a configuration file: prints `ok` or the errors.
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/halb/halb.toml")]
        config: PathBuf,
    },
    /// Show the running agent's state: role, VIPs, backends.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the JSON status document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a backend: it keeps its flows and gets no new ones.
    Drain {
        #[command(flatten)]
        target: Target,
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
    },
    /// Undo a drain.
    Enable {
        #[command(flatten)]
        target: Target,
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
    },
    /// Set a backend's weight (until the config changes that backend).
    Weight {
        #[command(flatten)]
        target: Target,
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
        /// New weight (0 drains).
        weight: u32,
    },
    /// Make the running agent re-read its config file (like SIGHUP).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// BGP mode: withdraw every announcement while forwarding goes on
    /// (`drain`), or announce again (`enable`).
    Node {
        #[command(flatten)]
        target: Target,
        /// `drain` or `enable`.
        #[arg(value_parser = ["drain", "enable"])]
        action: String,
    },
    /// Print the BIRD 2 configuration for this node's [bgp] section.
    BirdConfig {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/halb/halb.toml")]
        config: PathBuf,
        /// BGP router id when [bgp] router_id is not set (default: the first
        /// IPv4 address of [node] interface).
        #[arg(long)]
        router_id: Option<std::net::Ipv4Addr>,
    },
}

/// Where the running agent is.
#[derive(clap::Args)]
struct Target {
    /// Configuration file of the agent (its [api] section says where it listens).
    #[arg(short, long, default_value = "/etc/halb/halb.toml")]
    config: PathBuf,
    /// The agent's API address, overriding the config.
    #[arg(long)]
    api: Option<std::net::SocketAddr>,
}

impl Target {
    fn client(&self) -> anyhow::Result<Client> {
        let cfg = config::load(&self.config);
        let addr = match (self.api, &cfg) {
            (Some(a), _) => a,
            (None, Ok(c)) => c.api.addr(),
            (None, Err(_)) if !self.config.exists() => {
                std::net::SocketAddr::from(([127, 0, 0, 1], 8480))
            }
            (None, Err(e)) => anyhow::bail!("{e}"),
        };
        let token = match &cfg {
            Ok(c) => halb::agent::read_token(c)?,
            Err(_) => None,
        };
        Ok(Client::new(addr, token))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Status { target, json } => report(status(&target, json)),
        Command::Drain {
            target,
            vip,
            backend,
        } => report(backend_op(&target, &vip, &backend, "drain", None)),
        Command::Enable {
            target,
            vip,
            backend,
        } => report(backend_op(&target, &vip, &backend, "enable", None)),
        Command::Weight {
            target,
            vip,
            backend,
            weight,
        } => report(backend_op(
            &target,
            &vip,
            &backend,
            "weight",
            Some(format!("{{\"weight\": {weight}}}")),
        )),
        Command::Reload { target } => report(reload(&target)),
        Command::Node { target, action } => report(node_op(&target, &action)),
        Command::BirdConfig { config, router_id } => report(bird_config(&config, router_id)),
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
            log_format,
        } => {
            // A bad file exits here, before anything touches the network.
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            logging::init(log_format.unwrap_or(cfg.node.log_format));
            let opts = RunOptions {
                config_path: config,
                keep_dataplane,
                reset_dataplane,
            };
            match run_agent(cfg, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Through the log, in its format (JSON lines stay JSON).
                    tracing::error!("halb: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An error body's message, or the raw body.
fn api_error(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.to_string())
}

fn status(target: &Target, json: bool) -> anyhow::Result<()> {
    let client = target.client()?;
    let a = client.get("/api/v1/status")?;
    if a.status != 200 {
        anyhow::bail!("status: HTTP {}: {}", a.status, api_error(&a.body));
    }
    if json {
        println!("{}", a.body);
        return Ok(());
    }
    let s: Status = serde_json::from_str(&a.body).context("status document")?;
    print!("{}", halb::api::table::render(&s));
    Ok(())
}

fn backend_op(
    target: &Target,
    vip: &str,
    backend: &str,
    action: &str,
    body: Option<String>,
) -> anyhow::Result<()> {
    let client = target.client()?;
    let a = client.post(
        &format!("/api/v1/vips/{vip}/backends/{backend}/{action}"),
        body.as_deref(),
    )?;
    if a.status != 200 {
        anyhow::bail!("{action} {vip}/{backend}: {}", api_error(&a.body));
    }
    let c: BackendChange = serde_json::from_str(&a.body).context("answer")?;
    println!(
        "{}/{}: weight {}{}",
        c.vip,
        c.backend,
        c.weight,
        if c.drained { " (drained)" } else { "" }
    );
    Ok(())
}

fn node_op(target: &Target, action: &str) -> anyhow::Result<()> {
    let client = target.client()?;
    let a = client.post(&format!("/api/v1/node/{action}"), None)?;
    if a.status != 200 {
        anyhow::bail!("node {action}: {}", api_error(&a.body));
    }
    let c: halb::api::model::NodeChange = serde_json::from_str(&a.body).context("answer")?;
    println!(
        "node {}; announced: {}",
        if c.drained { "drained" } else { "enabled" },
        if c.announced.is_empty() {
            "nothing".to_string()
        } else {
            c.announced.join(", ")
        }
    );
    Ok(())
}

fn bird_config(
    path: &std::path::Path,
    router_id: Option<std::net::Ipv4Addr>,
) -> anyhow::Result<()> {
    let cfg = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(bgp) = &cfg.bgp else {
        anyhow::bail!("{}: no [bgp] section", path.display());
    };
    let bgp = bgp.get_ref();
    let rid = match bgp.router_id.or(router_id) {
        Some(r) => r,
        None => {
            let iface = cfg.node.interface.get_ref().clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(async move {
                let (nl, task) = halb::net::Netlink::open()?;
                let link = nl.link(&iface).await?;
                let addrs = nl.addresses(link.index).await?;
                task.abort();
                addrs.first().map(|(a, _)| *a).with_context(|| {
                    format!("{iface} has no IPv4 address: set [bgp] router_id or --router-id")
                })
            })?
        }
    };
    print!(
        "{}",
        halb::announce::bird::render(bgp, &halb::agent::node_name(&cfg), rid)
    );
    Ok(())
}

fn reload(target: &Target) -> anyhow::Result<()> {
    let client = target.client()?;
    let a = client.post("/api/v1/reload", None)?;
    if a.status != 200 {
        anyhow::bail!("{}", api_error(&a.body));
    }
    let v: serde_json::Value = serde_json::from_str(&a.body).context("answer")?;
    println!("reloaded: {}", v["reloaded"].as_str().unwrap_or(""));
    Ok(())
}

/// Unblocks the signals the agent acts on: a parent may have blocked them
/// (the mask is inherited), and SIGTERM must always stop the agent cleanly.
fn unblock_signals() {
    // SAFETY: plain signal-mask calls on a zeroed, then filled, sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

fn run_agent(cfg: config::Config, opts: RunOptions) -> anyhow::Result<()> {
    unblock_signals();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(agent::run(cfg, opts))?;
    Ok(())
}
