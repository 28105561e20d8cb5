//! The run: start the servers and systems, measure in interleaved rounds, collect results.

use core::time::Duration;
use std::time::Instant;

use socksgate_tests::tools;

use crate::Config;
use crate::error::BenchError;
use crate::measure::{self, Direction};
use crate::netns::Network;
use crate::procfs;
use crate::proxies::{Kind, Target};
use crate::report::{FloodTotal, Metric, Results};
use crate::servers::{Bulk, Echo, Idle, UdpEcho};
use crate::udp_flood;

/// Echo server threads: enough that 16 clients never wait for one even when a proxy is slow
/// to close its upstream connections.
const ECHO_THREADS: usize = 64;

/// Largest share of failed sessions that still counts as a measurement.
const MAX_FAILED_SESSIONS: f64 = 0.01;

/// Starts everything, measures, prints the report; `Ok(false)` if a measurement broke.
pub(crate) fn run(cfg: &Config, network: &Network) -> anyhow::Result<bool> {
    let bulk = Bulk::start()?;
    let echo = Echo::start(ECHO_THREADS)?;
    let idle = Idle::start()?;
    let udp_echo = UdpEcho::start(2)?;

    let mut targets = Vec::new();
    let mut notes = Vec::new();
    for &kind in &cfg.kinds {
        match kind {
            Kind::Direct => targets.push(Target::direct()),
            Kind::Socksgate => {
                if !cfg.socksgate.is_file() {
                    anyhow::bail!(
                        "{} not found: build it with `cargo build --release -p socksgate` \
                         or pass --socksgate PATH",
                        cfg.socksgate.display()
                    );
                }
                targets.push(Target::socksgate(Kind::Socksgate, &cfg.socksgate)?);
            }
            Kind::Baseline => match &cfg.baseline {
                Some(exe) if exe.is_file() => {
                    targets.push(Target::socksgate(Kind::Baseline, exe)?);
                }
                Some(exe) => anyhow::bail!("--baseline {}: not found", exe.display()),
                None => {}
            },
            Kind::Dante => match tools::which("danted") {
                Some(exe) => targets.push(Target::dante(&exe)?),
                None => notes.push(
                    "dante: `danted` not installed (Debian: dante-server); not measured".into(),
                ),
            },
            Kind::Microsocks => match tools::which("microsocks") {
                Some(exe) => targets.push(Target::microsocks(&exe)?),
                None => notes
                    .push("microsocks: not installed (Debian: microsocks); not measured".into()),
            },
            Kind::Added(name) => {
                let peer = cfg
                    .peers
                    .iter()
                    .find(|p| p.name == name)
                    .ok_or_else(|| anyhow::anyhow!("--peer {name}: lost its command"))?;
                targets.push(Target::added(peer)?);
            }
        }
    }
    for name in ["3proxy", "hev-socks5-server"] {
        if !cfg.peers.iter().any(|p| p.command.contains(name)) {
            notes.push(format!(
                "{name}: not measured — not a Debian 12 package (`apt-cache policy {name}` \
                 has no candidate); a build of it can be added with --peer (tests/README.md)"
            ));
        }
    }

    let mut res = Results::new(cfg, network, &targets);
    res.notes.extend(notes);
    res.load_before = loadavg();
    let started = Instant::now();

    for &metric in &Metric::ALL {
        if !cfg.metrics.contains(&metric) {
            continue;
        }
        eprintln!("socksbench: {}…", metric.name());
        match metric {
            Metric::Memory => memory(cfg, &mut targets, &idle, &mut res),
            Metric::Sessions => sessions(cfg, &mut targets, echo.addr(), &mut res),
            Metric::Throughput => throughput(cfg, &mut targets, &bulk, &mut res),
            Metric::Udp => udp(cfg, &mut targets, udp_echo.addr(), &mut res),
            Metric::UdpThroughput => udp_throughput(cfg, &mut targets, &udp_echo, &mut res),
        }
    }
    if bulk.corrupt() != 0 {
        res.fail(
            Kind::Direct,
            "bulk sink",
            format!("{} corrupt uploads", bulk.corrupt()),
        );
    }
    for t in &mut targets {
        if let Err(e) = t.check_alive() {
            res.fail(t.kind, "after the run", e.to_string());
        }
    }
    let gssapi = if cfg.gssapi {
        Some(crate::gssapi::run(cfg, &bulk, echo.addr())?)
    } else {
        None
    };
    res.load_after = loadavg();
    res.wall = started.elapsed();
    res.print();
    let mut ok = res.failures.is_empty();
    if let Some((section, complete)) = gssapi {
        println!("{section}");
        ok &= complete;
    }
    Ok(ok)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn memory(cfg: &Config, targets: &mut [Target], idle: &Idle, res: &mut Results) {
    for t in targets.iter_mut() {
        let Some(pid) = t.pid() else { continue };
        let r = (|| -> Result<(u64, u64, u64, usize), BenchError> {
            std::thread::sleep(Duration::from_millis(300));
            let before = procfs::rss_kib(pid)?;
            let pss_before = procfs::pss_kib(pid)?;
            let held = measure::open_idle(t.via, idle.addr(), cfg.idle)?;
            // The proxy has connected upstream once it replied; wait until the sink saw them all.
            let deadline = Instant::now() + Duration::from_secs(30);
            while idle.held() < cfg.idle && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_secs(1));
            let after = procfs::rss_kib(pid)?;
            let pss_after = procfs::pss_kib(pid)?;
            let procs = procfs::processes(pid);
            drop(held);
            std::thread::sleep(Duration::from_millis(500));
            idle.clear();
            std::thread::sleep(Duration::from_millis(500));
            Ok((
                after.saturating_sub(before),
                pss_after.saturating_sub(pss_before),
                after,
                procs,
            ))
        })();
        match r {
            Ok((grew, pss_grew, after, procs)) => {
                let per = grew as f64 / cfg.idle as f64;
                res.set(t.kind, Metric::Memory, 0, per);
                res.memory_detail.push(format!(
                    "{}: VmRSS +{grew} KiB over {} idle sessions (total {after} KiB in {procs} \
                     process{}); PSS +{pss_grew} KiB = {:.2} KiB/conn",
                    t.kind,
                    cfg.idle,
                    if procs == 1 { "" } else { "es" },
                    pss_grew as f64 / cfg.idle as f64
                ));
            }
            Err(e) => {
                idle.clear();
                res.fail(t.kind, "memory", format!("{e}\n{}", t.log_tail()));
            }
        }
    }
}

fn sessions(cfg: &Config, targets: &mut [Target], echo: core::net::SocketAddr, res: &mut Results) {
    for round in 0..cfg.rounds {
        let n = targets.len();
        for i in 0..n {
            // Rotate the order each round, so no system always runs right after another.
            let t = &mut targets[(i + round) % n];
            if res.failed(t.kind, Metric::Sessions) {
                continue;
            }
            // This process alone: its tree would include the proxies it started.
            let me = std::process::id();
            let gen0 = procfs::process_cpu_seconds(me).unwrap_or(0.0);
            let cpu0 = t.pid().and_then(|p| procfs::cpu_times(p).ok());
            let s = measure::sessions(t.via, echo, cfg.clients, cfg.session_time);
            let cpu1 = t.pid().and_then(|p| procfs::cpu_times(p).ok());
            let gen1 = procfs::process_cpu_seconds(me).unwrap_or(0.0);
            res.add_generator_cpu(t.kind, Metric::Sessions, gen1 - gen0, s.done, s.elapsed);
            let attempts = s.done + s.failed;
            if s.done == 0 || s.failed as f64 > MAX_FAILED_SESSIONS * attempts as f64 {
                res.fail(
                    t.kind,
                    "sessions",
                    format!(
                        "{} of {attempts} sessions failed; first: {}\n{}",
                        s.failed,
                        s.first_error.unwrap_or_default(),
                        t.log_tail()
                    ),
                );
                continue;
            }
            if s.failed > 0 {
                res.notes.push(format!(
                    "{} round {}: {} of {attempts} sessions failed ({})",
                    t.kind,
                    round + 1,
                    s.failed,
                    s.first_error.unwrap_or_default()
                ));
            }
            res.set(
                t.kind,
                Metric::Sessions,
                round,
                s.done as f64 / s.elapsed.as_secs_f64(),
            );
            res.latencies(t.kind).extend(s.latencies_us);
            if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
                res.add_session_cpu(t.kind, c1 - c0, s.done);
            }
            // Let the closed sessions' sockets drain before the next system.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn throughput(cfg: &Config, targets: &mut [Target], bulk: &Bulk, res: &mut Results) {
    for round in 0..cfg.rounds {
        let n = targets.len();
        for i in 0..n {
            // Rotate the order each round, so no system always runs right after another.
            let t = &mut targets[(i + round) % n];
            if res.failed(t.kind, Metric::Throughput) {
                continue;
            }
            let cpu0 = t.pid().map(procfs::cpu_seconds).transpose();
            let r = (|| -> Result<(f64, f64), BenchError> {
                let up = measure::transfer(t.via, bulk.addr(), Direction::Up, cfg.bytes)?;
                let down = measure::transfer(t.via, bulk.addr(), Direction::Down, cfg.bytes)?;
                Ok((gbit(cfg.bytes, up), gbit(cfg.bytes, down)))
            })();
            let cpu1 = t.pid().map(procfs::cpu_seconds).transpose();
            match (r, cpu0, cpu1) {
                (Ok((up, down)), Ok(c0), Ok(c1)) => {
                    res.set(t.kind, Metric::Throughput, round, up);
                    res.set_down(t.kind, round, down);
                    if let (Some(c0), Some(c1)) = (c0, c1) {
                        res.add_cpu(t.kind, c1 - c0, 2 * cfg.bytes);
                    }
                }
                (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                    res.fail(t.kind, "throughput", format!("{e}\n{}", t.log_tail()));
                }
            }
        }
    }
}

fn gbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

fn udp(cfg: &Config, targets: &mut [Target], echo: core::net::SocketAddr, res: &mut Results) {
    for round in 0..cfg.rounds {
        let n = targets.len();
        for i in 0..n {
            // Rotate the order each round, so no system always runs right after another.
            let t = &mut targets[(i + round) % n];
            if !t.kind.has_udp() || res.failed(t.kind, Metric::Udp) || res.unsupported(t.kind) {
                continue;
            }
            // One association first: the round trip's latency alone, nothing overlapping it.
            match measure::udp(t.via, echo, 1, cfg.udp_time) {
                Ok(Some(u)) if u.round_trips > 0 => {
                    res.set_udp_single(t.kind, u.round_trips as f64 / u.elapsed.as_secs_f64());
                }
                Ok(Some(_)) => {
                    res.fail(
                        t.kind,
                        "udp",
                        format!("no datagram came back on one association\n{}", t.log_tail()),
                    );
                    continue;
                }
                Ok(None) => {
                    res.set_unsupported(t.kind);
                    continue;
                }
                Err(e) => {
                    res.fail(t.kind, "udp", format!("{e}\n{}", t.log_tail()));
                    continue;
                }
            }
            // This process alone: its tree would include the proxies it started.
            let me = std::process::id();
            let gen0 = procfs::process_cpu_seconds(me).unwrap_or(0.0);
            let cpu0 = t.pid().and_then(|p| procfs::cpu_times(p).ok());
            let r = measure::udp(t.via, echo, cfg.udp_clients, cfg.udp_time);
            let cpu1 = t.pid().and_then(|p| procfs::cpu_times(p).ok());
            let gen1 = procfs::process_cpu_seconds(me).unwrap_or(0.0);
            if let Ok(Some(u)) = &r {
                res.add_generator_cpu(t.kind, Metric::Udp, gen1 - gen0, u.round_trips, u.elapsed);
                if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
                    res.add_udp_cpu(t.kind, c1 - c0, u.round_trips);
                }
            }
            match r {
                Ok(Some(u)) if u.round_trips > 0 => {
                    if u.lost > 0 {
                        res.notes.push(format!(
                            "{} UDP round {}: {} datagrams unanswered within 200 ms",
                            t.kind,
                            round + 1,
                            u.lost
                        ));
                    }
                    res.set(
                        t.kind,
                        Metric::Udp,
                        round,
                        u.round_trips as f64 / u.elapsed.as_secs_f64(),
                    );
                }
                Ok(Some(_)) => {
                    res.fail(
                        t.kind,
                        "udp",
                        format!("no datagram came back\n{}", t.log_tail()),
                    );
                }
                Ok(None) => res.set_unsupported(t.kind),
                Err(e) => res.fail(t.kind, "udp", format!("{e}\n{}", t.log_tail())),
            }
        }
    }
}

fn udp_throughput(cfg: &Config, targets: &mut [Target], echo: &UdpEcho, res: &mut Results) {
    for round in 0..cfg.rounds {
        let n = targets.len();
        for i in 0..n {
            // Rotate the order each round, so no system always runs right after another.
            let t = &mut targets[(i + round) % n];
            if !t.kind.has_udp()
                || res.failed(t.kind, Metric::UdpThroughput)
                || res.unsupported(t.kind)
            {
                continue;
            }
            let (got0, drops0) = (echo.received(), echo.drops());
            let queue0 = procfs::udp_rcvbuf_errors().unwrap_or(0);
            let cpu0 = t.pid().and_then(|p| procfs::cpu_times(p).ok());
            let r = udp_flood::flood(t.via, echo.addr(), cfg.flood_clients, cfg.udp_time);
            let cpu1 = t.pid().and_then(|p| procfs::cpu_times(p).ok());
            let queue1 = procfs::udp_rcvbuf_errors().unwrap_or(0);
            match r {
                Ok(Some(f)) if f.echoed > 0 => {
                    let round_total = FloodTotal {
                        sent: f.sent,
                        echo_got: echo.received() - got0,
                        echoed: f.echoed,
                        client_drops: f.client_drops,
                        echo_drops: echo.drops().saturating_sub(drops0),
                        queue_drops: queue1.saturating_sub(queue0),
                    };
                    let cpu = cpu0.zip(cpu1).map(|(c0, c1)| c1 - c0);
                    // Per second of sending: every client sent for `udp_time`, and what came
                    // back during the drain after it was sent within it.
                    let rate = f.echoed as f64 / cfg.udp_time.as_secs_f64();
                    res.add_flood(t.kind, round_total, rate, cpu);
                }
                Ok(Some(f)) => res.fail(
                    t.kind,
                    Metric::UdpThroughput.name(),
                    format!("none of {} datagrams came back\n{}", f.sent, t.log_tail()),
                ),
                Ok(None) => res.set_unsupported(t.kind),
                Err(e) => res.fail(
                    t.kind,
                    Metric::UdpThroughput.name(),
                    format!("{e}\n{}", t.log_tail()),
                ),
            }
            // Let the queues empty before the next system.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}
