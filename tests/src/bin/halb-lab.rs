//! `halb-lab`: the lab driver behind `cargo xtask demo` and `cargo xtask
//! bench` (xtask builds and invokes it; it is not meant to be run by hand).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "halb-lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-packet cost of the XDP program and Maglev build time.
    BenchDataplane {
        /// Repeats for the repeated runs (at least 1,000,000 for reported figures).
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Distinct new flows timed one call each.
        #[arg(long, default_value_t = 100_000)]
        flows: u32,
        /// Where to write `dataplane.md`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Real frames through the native driver path: empty, LRU reference, halb.
    BenchLive {
        /// The short run CI does (seconds).
        #[arg(long)]
        smoke: bool,
        /// Only these concurrent-flow counts (comma-separated).
        #[arg(long, value_delimiter = ',')]
        flows: Option<Vec<u32>>,
        /// Only these protocols (udp, tcp).
        #[arg(long, value_delimiter = ',')]
        proto: Option<Vec<String>>,
        /// Only these families (ipv4, ipv6).
        #[arg(long, value_delimiter = ',')]
        family: Option<Vec<String>>,
        /// Only these generator core counts.
        #[arg(long, value_delimiter = ',')]
        cores: Option<Vec<u32>>,
        /// Frames per core in a round.
        #[arg(long)]
        frames: Option<u32>,
        /// Rounds per case.
        #[arg(long)]
        rounds: Option<usize>,
        /// Leave out the new-flow storm.
        #[arg(long)]
        no_storm: bool,
        /// Leave out the cases with a backend drained.
        #[arg(long)]
        no_drained: bool,
        /// Where to write `live.md`, `live.json` and `live.png`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The demo: an active-active pair (or, with --scale-out, three nodes
    /// behind an ECMP router), three nginx backends, a client.
    Demo {
        /// The BGP scale-out demo.
        #[arg(long)]
        scale_out: bool,
    },
    /// Prepares the VM lab's caches (qemu prefix, guest image).
    VmPrepare,
    /// The pair on two VMs, left running (`down` stops them).
    Vm {
        /// up or down.
        action: String,
        /// State file.
        #[arg(long)]
        state: PathBuf,
    },
    /// The pair on two VMs, checked end to end.
    VmTest {
        /// Where to write `vm.md`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The hands-on lab: up, down or status.
    Lab {
        /// up, down or status.
        action: String,
        /// State file.
        #[arg(long)]
        state: PathBuf,
        /// `up`: the scale-out lab (router, three BGP nodes).
        #[arg(long)]
        scale_out: bool,
        /// `up`: the routed lab (backends behind a router, IP in IP and GUE).
        #[arg(long)]
        routed: bool,
    },
    /// The scale-out events (kill, link-down, drain, join), measured.
    FailoverScaleOut {
        /// Rounds of the four events.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Where to write `scale-out.md` and `scale-out.json`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// wrk against one backend, three backends, HAProxy and halb.
    BenchCompare {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        secs: u32,
        /// Where to write `bench.md` and `bench.png`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A rolling update by reload under load (clients and downloads).
    BenchRolling {
        /// Request loops.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Long downloads.
        #[arg(long, default_value_t = 10)]
        downloads: usize,
        /// Where to write `rolling.md`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// API latency under load and /metrics scrape time with 1000 backends.
    BenchApi {
        /// Where to write `api.md`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Client-visible outage and stream survival: halb and keepalived + HAProxy.
    FailoverOutage {
        /// Events of each kind per stack.
        #[arg(long, default_value_t = 10)]
        events: usize,
        /// Advertisement interval.
        #[arg(long, default_value_t = 100)]
        advert_ms: u32,
        /// Where to write `failover.md`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// VRRP takeover after crashes, halb beside keepalived.
    FailoverVrrp {
        /// Crashes per daemon.
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Advertisement interval.
        #[arg(long, default_value_t = 100)]
        advert_ms: u32,
        /// Where to write `vrrp-takeover.md`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BenchDataplane { repeat, flows, out } => {
            let figures = halb_lab::bench::dataplane(repeat, flows)?;
            let table = halb_lab::bench::markdown(&figures);
            println!("{table}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                let path = dir.join("dataplane.md");
                std::fs::write(
                    &path,
                    format!(
                        "# halb data plane benchmark\n\nCommand: `cargo xtask bench dataplane` \
                         (BPF_PROG_TEST_RUN through aya's TestRun).\n\n{table}"
                    ),
                )?;
                println!("written to {}", path.display());
            }
            Ok(())
        }
        Command::BenchLive {
            smoke,
            flows,
            proto,
            family,
            cores,
            frames,
            rounds,
            no_storm,
            no_drained,
            out,
        } => {
            let mut opts = if smoke {
                halb_lab::live::Opts::smoke()
            } else {
                halb_lab::live::Opts::full()
            };
            if let Some(f) = flows {
                opts.flows = f;
            }
            if let Some(p) = proto {
                let names = [
                    ("udp", ha_common::IPPROTO_UDP),
                    ("tcp", ha_common::IPPROTO_TCP),
                ];
                opts.protos = named("--proto", &p, &names)?;
            }
            if let Some(f) = family {
                let names = [
                    ("ipv4", ha_common::FAMILY_IPV4),
                    ("ipv6", ha_common::FAMILY_IPV6),
                ];
                opts.families = named("--family", &f, &names)?;
            }
            if let Some(c) = cores {
                opts.cores = c;
            }
            if let Some(f) = frames {
                opts.frames = f;
            }
            if let Some(r) = rounds {
                opts.rounds = r.max(1);
            }
            opts.storm &= !no_storm;
            opts.drained &= !no_drained;
            let rows = halb_lab::live::run_bench(&opts)?;
            let md = halb_lab::live::markdown(&rows);
            println!("{md}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("live.md"), &md)?;
                std::fs::write(dir.join("live.json"), serde_json::to_string_pretty(&rows)?)?;
                halb_lab::live::plot(&rows, &dir)?;
                println!("written to {}", dir.join("live.md").display());
            }
            Ok(())
        }
        Command::Demo { scale_out: false } => halb_lab::demo::run(),
        Command::Demo { scale_out: true } => halb_lab::scaleout_demo::demo(),
        Command::FailoverScaleOut { rounds, out } => {
            let m = halb_lab::scaleout::measure(rounds)?;
            let md = halb_lab::scaleout::markdown(&m);
            println!("{md}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("scale-out.md"), &md)?;
                std::fs::write(
                    dir.join("scale-out.json"),
                    serde_json::to_string_pretty(&m)?,
                )?;
            }
            Ok(())
        }
        Command::BenchRolling {
            clients,
            downloads,
            out,
        } => {
            let o = halb_lab::rolling::run(clients, downloads)?;
            let md = halb_lab::rolling::markdown(&o, clients);
            println!("{md}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("rolling.md"), &md)?;
            }
            if o.requests_failed > 0 || o.downloads_ok != o.downloads {
                anyhow::bail!("the rolling update lost requests or downloads");
            }
            Ok(())
        }
        Command::VmPrepare => {
            let q = halb_lab::vm::qemu()?;
            let i = halb_lab::vm::image()?;
            println!("qemu {} / image {}", q.bin.display(), i.raw.display());
            Ok(())
        }
        Command::Vm { action, state } => match action.as_str() {
            "up" => halb_lab::vm::up(&halb_lab::vm::deb()?, &state),
            "down" => halb_lab::vm::down(&state),
            other => anyhow::bail!("vm {other}: expected up or down"),
        },
        Command::VmTest { out } => {
            let r = halb_lab::vm::test(&halb_lab::vm::deb()?)?;
            let md = format!(
                "# halb on two VMs\n\nCommand: `cargo xtask vm test`. qemu under software emulation (TCG): \
                 times are not comparable with the namespace figures.\n\n\
                 | measurement | value |\n|---|---:|\n\
                 | both agents running after | {:.1} s |\n\
                 | takeover after lb1's qemu was killed (client ARP → lb2) | {} ms |\n\
                 | downloads that survived | {}/{} |\n\
                 | longest download pause across the death | {} ms |\n\
                 | lb1 booted again until it held the VIP (preempt) | {:.1} s |\n\
                 | whole test | {:.1} s |\n",
                r.boot.as_secs_f64(),
                r.takeover.as_millis(),
                r.streams_survived,
                r.streams,
                r.stream_gap.as_millis(),
                r.preempt_back.as_secs_f64(),
                r.total.as_secs_f64()
            ) + &format!(
                "\nThe guests installed `{}` with dpkg and report:\n\n{}\n",
                halb_lab::vm::deb()?.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                r.checks.iter().map(|c| format!("- {c}")).collect::<Vec<_>>().join("\n")
            );
            println!("{md}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("vm.md"), &md)?;
            }
            if r.streams_survived != r.streams {
                anyhow::bail!(
                    "{} of {} downloads died across the VM failover",
                    r.streams - r.streams_survived,
                    r.streams
                );
            }
            Ok(())
        }
        Command::Lab {
            action,
            state,
            scale_out,
            routed,
        } => match action.as_str() {
            "up" if scale_out => halb_lab::scaleout_demo::up(&state, halb_lab::labcmd::PREFIX),
            "up" if routed => halb_lab::routed::up(&state, halb_lab::labcmd::PREFIX),
            "up" => halb_lab::labcmd::up(&state),
            "down" => halb_lab::labcmd::down(&state),
            "status" => halb_lab::labcmd::status(&state),
            other => anyhow::bail!("lab {other}: expected up, down or status"),
        },
        Command::BenchCompare { secs, out } => {
            let rows = halb_lab::compare::run_all(secs)?;
            let md = halb_lab::compare::markdown(&rows, secs);
            println!("{md}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("bench.md"), &md)?;
                halb_lab::compare::plot(&rows, &dir)?;
                println!("written to {}", dir.join("bench.md").display());
            }
            Ok(())
        }
        Command::BenchApi { out } => {
            let b = halb_lab::apibench::run_bench()?;
            let table = format!(
                "| measurement | median ms | p99 ms | max ms | goal |\n|---|---:|---:|---:|---|\n\
                 | GET /api/v1/status, 3 backends, while wrk drives the VIP ({:.0} req/s, {} requests) | {:.2} | {:.2} | {:.2} | p99 ≤ 10 ms |\n\
                 | GET /metrics with {} backends ({} bytes, 50 scrapes) | {:.2} | {:.2} | {:.2} | < 50 ms |\n\
                 | GET /api/v1/status, {} backends ({} bytes), while wrk drives the VIP ({:.0} req/s) | {:.2} | {:.2} | {:.2} | informational |\n",
                b.wrk_rps, b.status_n, b.status_ms.0, b.status_ms.1, b.status_ms.2,
                b.backends, b.metrics_bytes, b.metrics_ms.0, b.metrics_ms.1, b.metrics_ms.2,
                b.backends, b.status_big_bytes, b.wrk_big_rps, b.status_big_ms.0, b.status_big_ms.1, b.status_big_ms.2
            );
            println!("{table}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(
                    dir.join("api.md"),
                    format!("# halb API benchmark\n\nCommand: `cargo xtask bench api`.\n\n{table}"),
                )?;
            }
            Ok(())
        }
        Command::FailoverOutage {
            events,
            advert_ms,
            out,
        } => {
            use halb_lab::outage::{markdown, measure, Stack};
            let mut results = Vec::new();
            for stack in [Stack::Halb, Stack::KeepalivedHaproxy] {
                let (c, d) = measure(stack, events, advert_ms)?;
                results.push((stack, c, d));
            }
            let md = markdown(advert_ms, &results);
            println!("{md}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                let name = if advert_ms == 100 {
                    "failover.md".to_string()
                } else {
                    format!("failover-{advert_ms}ms.md")
                };
                std::fs::write(dir.join(name), &md)?;
            }
            Ok(())
        }
        Command::FailoverVrrp {
            kills,
            advert_ms,
            out,
        } => {
            use halb_lab::failover::{summary, takeovers, takeovers_active_active, Daemon};
            let mut table = format!(
                "VRRPv3, {advert_ms} ms adverts, priorities 150/100, {kills} crashes (SIGSTOP+SIGKILL) each; \
                 time from the crash until the client's ARP entry for the VIP names the backup.\n\n\
                 | daemon | min ms | median ms | max ms | all (ms) |\n|---|---:|---:|---:|---|\n"
            );
            for d in [Daemon::Halb, Daemon::Keepalived] {
                let t = takeovers(d, kills, advert_ms)?;
                let (a, b, c) = summary(&t);
                let all: Vec<String> = t.iter().map(|x| format!("{}", x.as_millis())).collect();
                table.push_str(&format!(
                    "| {} | {a:.0} | {b:.0} | {c:.0} | {} |\n",
                    d.name(),
                    all.join(" ")
                ));
            }
            table.push_str(&format!(
                "\nActive-active pair: two instances per node with swapped priorities \
                 (lb1 masters VI_1, lb2 masters VI_2), {advert_ms} ms adverts; each round \
                 crashes lb1 (VI_1 moves to lb2), brings it back, then crashes lb2 (VI_2 \
                 moves to lb1); the survivor's own VIP is checked not to move.\n\n\
                 | daemon | instance | min ms | median ms | max ms | all (ms) |\n\
                 |---|---|---:|---:|---:|---|\n"
            ));
            // The goal: a takeover within the master-down interval and a
            // little (400 ms at 100 ms adverts, 100 ms at 20 ms).
            let goal = (4.0 * advert_ms as f64).max(100.0);
            let mut worst: f64 = 0.0;
            for d in [Daemon::Halb, Daemon::Keepalived] {
                let per = takeovers_active_active(d, kills, advert_ms)?;
                for (i, t) in per.iter().enumerate() {
                    let (a, b, c) = summary(t);
                    if d == Daemon::Halb {
                        worst = worst.max(c);
                    }
                    let all: Vec<String> = t.iter().map(|x| format!("{}", x.as_millis())).collect();
                    table.push_str(&format!(
                        "| {} | VI_{} | {a:.0} | {b:.0} | {c:.0} | {} |\n",
                        d.name(),
                        i + 1,
                        all.join(" ")
                    ));
                }
            }
            table.push_str(&format!(
                "\nGoal per halb instance: ≤ {goal:.0} ms; worst {worst:.0} ms: {}.\n",
                if worst <= goal { "met" } else { "NOT met" }
            ));
            println!("{table}");
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("vrrp-takeover.md"), &table)?;
            }
            Ok(())
        }
    }
}

/// The values of option `flag`'s `given` names, each one of `names`.
fn named(flag: &str, given: &[String], names: &[(&str, u8)]) -> Result<Vec<u8>> {
    given
        .iter()
        .map(|g| {
            names
                .iter()
                .find(|(n, _)| n == g)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let all: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                    anyhow::anyhow!("{flag} {g}: one of {}", all.join(", "))
                })
        })
        .collect()
}
