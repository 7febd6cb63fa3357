//! `cargo xtask bench`: the same client load (wrk) in one run against one
//! backend directly, the three backends directly in parallel, HAProxy
//! (roundrobin, as in the usual keepalived + HAProxy pair) and halb (DSR),
//! with the load balancer's CPU per 1000 requests: HAProxy's process CPU;
//! for halb the XDP program's run time (`kernel.bpf_stats_enabled`) plus
//! the agent's CPU. Writes `bench.md` and `bench.png`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::lab::{backend_addr, lb_addr, node_config, run, Lab, CLIENT, VIP};

/// One row of the comparison.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Load-balancer CPU per 1000 requests, ms (None: no load balancer).
    pub lb_cpu_ms_per_1000: Option<f64>,
    /// How the CPU figure was obtained.
    pub cpu_note: String,
}

/// One wrk run's figures.
#[derive(Debug, Clone, Default)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors and non-2xx answers.
    pub errors: u64,
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().context("rps")?,
            ["50%", v] => w.p50_ms = ms(v).context("p50")?,
            ["99%", v] => w.p99_ms = ms(v).context("p99")?,
            [n, "requests", "in", ..] => w.requests = n.parse().context("requests")?,
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest
                    .iter()
                    .filter_map(|s| s.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    if w.rps == 0.0 || w.requests == 0 {
        bail!("no result in wrk output:\n{out}");
    }
    Ok(w)
}

/// The load: three wrk processes (-t1 -c17 each) in parallel from the
/// client, one per URL; the same shape for every target, so that only the
/// target differs. Requests and rates add up; latency is the worst of the three.
fn load(lab: &Lab, urls: [&str; 3], secs: u32) -> Result<Wrk> {
    let mut handles = Vec::new();
    for url in urls {
        let mut c = lab.cmd("client", "wrk");
        c.args([
            "-t1".to_string(),
            "-c17".into(),
            format!("-d{secs}s"),
            "--latency".into(),
            url.to_string(),
        ]);
        handles.push(std::thread::spawn(move || {
            run(&mut c).and_then(|o| parse_wrk(&o))
        }));
    }
    let mut all = Wrk::default();
    for h in handles {
        let w = h.join().map_err(|_| anyhow::anyhow!("wrk thread"))??;
        all.rps += w.rps;
        all.requests += w.requests;
        all.errors += w.errors;
        all.p50_ms = all.p50_ms.max(w.p50_ms);
        all.p99_ms = all.p99_ms.max(w.p99_ms);
    }
    if all.errors > 0 {
        bail!("{} failed requests", all.errors);
    }
    Ok(all)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / hz)
}

/// (run_time_ns, run_cnt) of BPF program `id`.
fn prog_stats(id: u64) -> Result<(u64, u64)> {
    let out = run(Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// Id of the XDP program on `host`'s eth0.
fn xdp_prog_id(lab: &Lab, host: &str) -> Result<u64> {
    let out = lab.ip(host, &["-d", "-j", "link", "show", "dev", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .context("no XDP program on eth0")
}

/// Sets `kernel.bpf_stats_enabled`, returning the previous value.
fn bpf_stats(on: bool) -> Result<String> {
    let path = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(path)?.trim().to_string();
    std::fs::write(path, if on { "1" } else { "0" })?;
    Ok(before)
}

fn row(name: &str, w: &Wrk, cpu: Option<f64>, note: &str) -> Row {
    Row {
        name: name.into(),
        rps: w.rps,
        p50_ms: w.p50_ms,
        p99_ms: w.p99_ms,
        requests: w.requests,
        lb_cpu_ms_per_1000: cpu.map(|c| c * 1000.0 / w.requests as f64 * 1000.0),
        cpu_note: note.into(),
    }
}

/// Runs the comparison; `secs` per measurement.
pub fn run_all(secs: u32) -> Result<Vec<Row>> {
    let mut lab = Lab::new("cmp")?;
    lab.add_host("client", CLIENT)?;
    // halb runs in generic mode here, which needs no XDP program on the
    // veth peer (and is the cheaper path through veth).
    lab.add_host("lb1", lb_addr(1))?;
    for i in 1..=3u8 {
        lab.add_backend(&format!("web{i}"), backend_addr(i), VIP)?;
    }
    let mut rows = Vec::new();

    let vip = format!("http://{VIP}/");
    let direct: Vec<String> = (1..=3u8)
        .map(|i| format!("http://{}/", backend_addr(i)))
        .collect();

    // (a) One backend, directly.
    let w = load(&lab, [&direct[0], &direct[0], &direct[0]], secs)?;
    rows.push(row("one backend, direct", &w, None, ""));

    // (b) The three backends directly, in parallel (the ceiling for any balancer).
    let w = load(&lab, [&direct[0], &direct[1], &direct[2]], secs)?;
    rows.push(row("three backends, direct in parallel", &w, None, ""));

    // (c) HAProxy on lb1, roundrobin over the three, listening on the VIP.
    lab.ip("lb1", &["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
    let cfg = lab.dir.join("haproxy.cfg");
    std::fs::write(&cfg, crate::lab::haproxy_config(8000))?;
    let mut c = lab.cmd("lb1", "haproxy");
    c.arg("-db").arg("-f").arg(&cfg);
    let pid = lab.spawn("haproxy", c)?.pid();
    lab.wait_for(
        "haproxy",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            lab.in_ns("client", || std::net::TcpStream::connect((VIP, 80)).is_ok())
                .unwrap_or(false)
        },
    )?;
    let before = cpu_seconds(pid)?;
    let w = load(&lab, [&vip, &vip, &vip], secs)?;
    let cpu = cpu_seconds(pid)? - before;
    rows.push(row(
        "HAProxy 2.6, roundrobin",
        &w,
        Some(cpu),
        "HAProxy process CPU",
    ));
    lab.stop("haproxy");

    // (d) halb, DSR (standalone: it owns the VIP).
    let node = node_config(&lab, "lb1", "generic", 3, None, None);
    let pid = lab.start_halb("lb1", &node, &[])?.pid();
    lab.proc_mut("halb-lb1")
        .context("halb")?
        .wait_log("API and stats page listening", Duration::from_secs(20))?;
    let prog = xdp_prog_id(&lab, "lb1")?;
    let was = bpf_stats(true)?;
    let (t0, n0) = prog_stats(prog)?;
    let a0 = cpu_seconds(pid)?;
    let result = load(&lab, [&vip, &vip, &vip], secs);
    let (t1, n1) = prog_stats(prog)?;
    let a1 = cpu_seconds(pid)?;
    let _ = bpf_stats(was == "1");
    let w = result?;
    let xdp = (t1 - t0) as f64 / 1e9;
    let agent = a1 - a0;
    let per_packet = if n1 > n0 {
        (t1 - t0) as f64 / (n1 - n0) as f64
    } else {
        0.0
    };
    rows.push(row(
        "halb, DSR (XDP)",
        &w,
        Some(xdp + agent),
        &format!(
            "XDP run time {:.3} s over {} packets ({per_packet:.0} ns each) + agent {agent:.2} s",
            xdp,
            n1 - n0
        ),
    ));
    Ok(rows)
}

/// The report: table, ratios against the goals.
pub fn markdown(rows: &[Row], secs: u32) -> String {
    let mut s = format!(
        "# halb benchmark\n\nCommand: `cargo xtask bench`. Load: three wrk -t1 -c17 -d{secs}s --latency in parallel \
         from the client namespace (51 keep-alive connections) for every target; nginx backends; all in one run on \
         this 2-core machine (client, balancer and backends share both cores).\n\n\
         | target | req/s | p50 ms | p99 ms | requests | LB CPU per 1000 req (ms) | CPU measured as |\n\
         |---|---:|---:|---:|---:|---:|---|\n"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
            r.name,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.requests,
            r.lb_cpu_ms_per_1000
                .map_or("–".into(), |c| format!("{c:.2}")),
            r.cpu_note
        );
    }
    let find = |p: &str| rows.iter().find(|r| r.name.starts_with(p));
    if let (Some(h), Some(x), Some(d3)) = (find("halb"), find("HAProxy"), find("three")) {
        let _ = writeln!(s, "\nRatios in this run:\n");
        let _ = writeln!(
            s,
            "- halb / HAProxy requests/s: {:.2} (goal ≥ 1.5)",
            h.rps / x.rps
        );
        let _ = writeln!(
            s,
            "- halb / three backends direct: {:.2} (goal ≥ 0.9)",
            h.rps / d3.rps
        );
        if let (Some(hc), Some(xc)) = (h.lb_cpu_ms_per_1000, x.lb_cpu_ms_per_1000) {
            let _ = writeln!(
                s,
                "- halb / HAProxy LB CPU per 1000 requests: {:.3} (goal ≤ 0.1)",
                hc / xc
            );
        }
    }
    s
}

/// Draws `bench.png` with gnuplot (Debian's gnuplot-nox): requests/s and p99.
pub fn plot(rows: &[Row], dir: &Path) -> Result<()> {
    let data = dir.join("bench.dat");
    let mut d = String::new();
    for r in rows {
        let _ = writeln!(
            d,
            "\"{}\" {:.0} {:.3}",
            r.name.replace(", ", "\\n"),
            r.rps,
            r.p99_ms
        );
    }
    std::fs::write(&data, d)?;
    let png = dir.join("bench.png");
    let script = format!(
        "set terminal pngcairo size 1100,500 font ',10'\nset output '{}'\nset multiplot layout 1,2\n\
         set style fill solid 0.8\nset bmargin 4\nset boxwidth 0.6\nset grid ytics\nset yrange [0:*]\nset xtics font ',8'\n\
         set title 'requests per second (higher is better)'\nplot '{}' using 0:2:xtic(1) with boxes notitle lc rgb '#1565c0'\n\
         set title 'p99 latency, ms (lower is better)'\nplot '{}' using 0:3:xtic(1) with boxes notitle lc rgb '#c62828'\n\
         unset multiplot\n",
        png.display(),
        data.display(),
        data.display()
    );
    let gp = dir.join("bench.gp");
    std::fs::write(&gp, script)?;
    run(Command::new("gnuplot").arg(&gp))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let out = "Running 10s test @ http://10.77.0.100/\n  2 threads and 50 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   812.34us  1.2ms  30.1ms   95.00%\n  Latency Distribution\n     50%  650.00us\n     75%    1.02ms\n     90%    1.50ms\n     99%    4.20ms\n  643210 requests in 10.00s, 120.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  64321.00\nTransfer/sec:     12.00MB\n";
        let w = parse_wrk(out).expect("parse");
        assert_eq!(w.requests, 643210);
        assert!((w.rps - 64321.0).abs() < 0.5);
        assert!((w.p50_ms - 0.65).abs() < 1e-9);
        assert!((w.p99_ms - 4.2).abs() < 1e-9);
        assert_eq!(w.errors, 3);
    }
}
