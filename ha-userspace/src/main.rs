//! The `halb` command line: `run`, `check-config`, and the operator commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Translate a keepalived.conf and/or a haproxy.cfg into a halb config,
    /// with a report of what every line became.
    Import {
        /// keepalived.conf (VRRP instances, LVS virtual_server blocks).
        #[arg(long)]
        keepalived: Option<PathBuf>,
        /// haproxy.cfg (frontends, backends, listens).
        #[arg(long)]
        haproxy: Option<PathBuf>,
        /// Write the config here (default: standard output, the report to
        /// standard error).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write the report here (default: standard output when -o is
        /// given, else standard error).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// The backend side of routed VIPs (`mode = "ipip"` or `"gue"`): attach
    /// the decapsulation program to an interface, put the VIPs on lo, and
    /// undo both on SIGTERM.
    Backend {
        /// The interface tunnel packets arrive on.
        #[arg(short, long)]
        interface: String,
        /// A VIP served here (repeat for each).
        #[arg(long = "vip", required = true)]
        vips: Vec<std::net::IpAddr>,
        /// Decapsulate GUE on this UDP port (the VIPs' `gue_port`).
        #[arg(long)]
        gue_port: Option<u16>,
        /// Do not decapsulate IP in IP.
        #[arg(long)]
        no_ipip: bool,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpModeArg,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Where a run records what it changed, so that the next start after
        /// a crash still undoes it.
        #[arg(long, default_value = "/run/halb-backend")]
        state_dir: PathBuf,
    },
    /// Print a shell completion script (bash, zsh or fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (halb.8 and one per command) into a directory.
    #[command(hide = true)]
    Man {
        /// Output directory.
        dir: PathBuf,
    },
}

/// `--xdp-mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum XdpModeArg {
    /// Native where the driver supports it, generic otherwise.
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (SKB) mode.
    Generic,
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
        Command::Import {
            keepalived,
            haproxy,
            output,
            report: report_path,
        } => report(import(keepalived, haproxy, output, report_path)),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "halb", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => report(man_pages(&dir)),
        Command::Backend {
            interface,
            vips,
            gue_port,
            no_ipip,
            xdp_mode,
            log_format,
            state_dir,
        } => {
            logging::init(log_format);
            let opts = agent::backend::BackendOptions {
                interface,
                vips,
                ipip: !no_ipip,
                gue_port,
                xdp_mode: match xdp_mode {
                    XdpModeArg::Auto => halb::dataplane::ModeWanted::Auto,
                    XdpModeArg::Native => halb::dataplane::ModeWanted::Native,
                    XdpModeArg::Generic => halb::dataplane::ModeWanted::Generic,
                },
                state_dir,
            };
            match run_backend(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("halb backend: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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

fn import(
    keepalived: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    output: Option<PathBuf>,
    report_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    if keepalived.is_none() && haproxy.is_none() {
        anyhow::bail!("nothing to import: give --keepalived FILE and/or --haproxy FILE");
    }
    let r = halb::import::import(keepalived.as_deref(), haproxy.as_deref())?;
    let text = r.report.to_string();
    match &output {
        // 0600: the config may hold the VRRP password and the hash seed.
        Some(p) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
                .and_then(|mut f| f.write_all(r.config.as_bytes()))
                .with_context(|| format!("write {}", p.display()))?
        }
        None => print!("{}", r.config),
    }
    match (&report_path, &output) {
        (Some(p), _) => {
            std::fs::write(p, &text).with_context(|| format!("write {}", p.display()))?
        }
        (None, Some(_)) => print!("{text}"),
        (None, None) => eprint!("{text}"),
    }
    Ok(())
}

/// halb.8, and halb-<command>.8 for every visible command, rendered from
/// the CLI definition (section 8: system administration).
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // No `help` command in the pages: there is no halb-help(8).
    let cmd = Cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true);
    let pages: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("halb-{}", s.get_name()))
        .collect();
    let write = |name: &str, c: clap::Command, tail: &str| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.8"));
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .section("8")
            .manual("halb manual")
            .source(format!("halb {}", env!("CARGO_PKG_VERSION")))
            .render(&mut out)
            .context("render man page")?;
        out.extend_from_slice(tail.as_bytes());
        std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))
    };
    let see_also = |list: &[String]| {
        list.iter()
            .map(|p| format!(".BR {p} (8)"))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("halb-{}", sub.get_name());
        // clap takes static names (without its "string" feature); this runs once.
        let static_name: &'static str = name.clone().leak();
        let invoked: &'static str = format!("halb {}", sub.get_name()).leak();
        let page = sub.clone().name(static_name).bin_name(invoked);
        let files = if sub.get_arguments().any(|a| a.get_id() == "config") {
            ".SH FILES\n.TP\n/etc/halb/halb.toml\nThe configuration (the default of \\fB-c\\fR).\n"
        } else {
            ""
        };
        let tail = format!("{files}.SH SEE ALSO\n{}\n", see_also(&["halb".to_string()]));
        write(&name, page.version(env!("CARGO_PKG_VERSION")), &tail)?;
    }
    let tail = format!(
        ".SH FILES\n.TP\n/etc/halb/halb.toml\nThe configuration: every key is described in \
         /usr/share/doc/halb/docs/configuration.md; \\fBhalb check-config\\fR validates it.\n\
         .TP\n/sys/fs/bpf/halb/\\fInode\\fR/\nThe pinned XDP program and its maps.\n\
         .TP\n/usr/share/doc/halb/\nREADME, the docs (architecture, configuration, operations, \
         migration from keepalived and HAProxy) and examples (BIRD, Prometheus rules, a Grafana \
         dashboard).\n.SH SEE ALSO\n{},\n.BR keepalived (8),\n.BR haproxy (1),\n.BR bird (8)\n",
        see_also(&pages)
    );
    write("halb", cmd, &tail)
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
                addrs
                    .iter()
                    .find_map(|(a, _)| match a {
                        std::net::IpAddr::V4(a) => Some(*a),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .with_context(|| {
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

fn run_backend(opts: agent::backend::BackendOptions) -> anyhow::Result<()> {
    unblock_signals();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(agent::backend::run(opts))?;
    Ok(())
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
