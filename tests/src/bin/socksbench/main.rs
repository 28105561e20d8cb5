//! `socksbench`: socksgate against a direct connection, Dante and microsocks, in one run on
//! loopback. Not part of `cargo test`; `tests/ci.sh` runs `socksbench --quick` as a smoke test
//! and tests/README.md ("Benchmark") carries the latest full table and its command.
//!
//! ```text
//! cargo build --release -p socksgate -p socksgate-tests --bin socksgate --bin socksbench
//! target/release/socksbench [--quick] [--bytes N] [--only NAME[,NAME…]] [--rounds N]
//! ```
//!
//! Measurements (each proxy on its own 127.0.0.1 port, rounds interleaved across systems):
//! single-stream throughput up and down (fixed byte count, every byte checked), proxy CPU
//! seconds per GB relayed, CONNECT + 1-byte echo sessions per second with 16 concurrent
//! clients and p50/p99 latency, RSS growth per idle proxied connection, UDP ASSOCIATE echo
//! round trips per second. Exit status 0 even when a target is missed; non-zero when a
//! measurement breaks (wrong bytes, a SOCKS failure, a proxy exiting).
#![forbid(unsafe_code)]

mod error;
mod measure;
mod pattern;
mod procfs;
mod proxies;
mod report;
mod run;
mod servers;
mod socks;

use core::time::Duration;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::proxies::Kind;
use crate::report::Metric;

/// Parsed command line.
#[derive(Debug)]
pub(crate) struct Config {
    /// The CI smoke variant: small sizes, one round.
    pub(crate) quick: bool,
    /// Bytes per transfer and direction.
    pub(crate) bytes: u64,
    /// Rounds of each measurement (the report shows the median).
    pub(crate) rounds: usize,
    /// Length of each sessions run.
    pub(crate) session_time: Duration,
    /// Concurrent session clients.
    pub(crate) clients: usize,
    /// Idle connections for the memory measurement.
    pub(crate) idle: usize,
    /// Length of each UDP run.
    pub(crate) udp_time: Duration,
    /// Concurrent UDP associations.
    pub(crate) udp_clients: usize,
    /// Systems to measure (the direct baseline always runs).
    pub(crate) kinds: Vec<Kind>,
    /// Measurements to run.
    pub(crate) metrics: Vec<Metric>,
    /// The socksgate executable.
    pub(crate) socksgate: PathBuf,
}

const USAGE: &str = "\
usage: socksbench [--quick] [--bytes N[K|M|G]] [--only NAME[,NAME...]] [--rounds N]
                  [--secs S] [--conns N] [--socksgate PATH]

  --quick        seconds-long smoke run (CI): 64 MiB transfers, 1 round, 200 idle conns
  --bytes N      bytes per transfer and direction (default 1G; K/M/G are binary)
  --only NAMES   systems (socksgate, dante, microsocks) and/or measurements (throughput,
                 sessions, memory, udp); the direct baseline always runs
  --rounds N     rounds per measurement, interleaved across systems (default 5)
  --secs S       seconds per sessions run (default 5; UDP runs take 3/5 of it)
  --conns N      idle connections for the memory measurement (default 2000)
  --socksgate P  the socksgate binary (default $SOCKSGATE_BIN or target/release/socksgate)";

fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad byte count {s:?}"))?;
    n.checked_mul(mult)
        .filter(|&n| n > 0)
        .with_context(|| format!("bad byte count {s:?}"))
}

fn default_socksgate() -> PathBuf {
    if let Some(p) = std::env::var_os("SOCKSGATE_BIN") {
        return PathBuf::from(p);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace.join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    target.join("release").join("socksgate")
}

fn parse_args() -> anyhow::Result<Option<Config>> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut bytes = None;
    let mut rounds = None;
    let mut secs: Option<f64> = None;
    let mut idle = None;
    let mut only: Vec<String> = Vec::new();
    let mut socksgate = None;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => quick = true,
            "--bytes" => bytes = Some(parse_bytes(&value("--bytes")?)?),
            "--rounds" => rounds = Some(value("--rounds")?.parse::<usize>().context("--rounds")?),
            "--secs" => secs = Some(value("--secs")?.parse::<f64>().context("--secs")?),
            "--conns" => idle = Some(value("--conns")?.parse::<usize>().context("--conns")?),
            "--only" => only.extend(value("--only")?.split(',').map(str::to_owned)),
            "--socksgate" => socksgate = Some(PathBuf::from(value("--socksgate")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mut kinds = Vec::new();
    let mut metrics = Vec::new();
    for name in only.iter().filter(|n| !n.is_empty()) {
        if let Some(k) = Kind::ALL.iter().find(|k| k.name() == name) {
            kinds.push(*k);
        } else if let Some(m) = Metric::ALL.iter().find(|m| m.name() == name) {
            metrics.push(*m);
        } else {
            bail!("--only: unknown name {name:?}\n{USAGE}");
        }
    }
    if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    } else if !kinds.contains(&Kind::Direct) {
        kinds.insert(0, Kind::Direct);
    }
    if metrics.is_empty() {
        metrics = Metric::ALL.to_vec();
    }
    let secs = secs.unwrap_or(if quick { 1.0 } else { 5.0 });
    if !(0.05..=600.0).contains(&secs) {
        bail!("--secs must be between 0.05 and 600");
    }
    let rounds = rounds.unwrap_or(if quick { 1 } else { 5 });
    if !(1..=20).contains(&rounds) {
        bail!("--rounds must be between 1 and 20");
    }
    Ok(Some(Config {
        quick,
        bytes: bytes.unwrap_or(if quick { 64 << 20 } else { 1 << 30 }),
        rounds,
        session_time: Duration::from_secs_f64(secs),
        clients: 16,
        idle: idle.unwrap_or(if quick { 200 } else { 2000 }),
        udp_time: Duration::from_secs_f64(secs * 0.6),
        udp_clients: 4,
        kinds,
        metrics,
        socksgate: socksgate.unwrap_or_else(default_socksgate),
    }))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (the proxies, started later, inherit it)
/// and checks that `need` descriptors fit.
fn raise_nofile(need: u64) -> anyhow::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => lim.maximum,
        Err(_) => lim.current,
    }
    .unwrap_or(u64::MAX);
    if soft < need {
        bail!(
            "RLIMIT_NOFILE is {soft}, the memory measurement needs about {need}: \
             raise it (ulimit -n) or pass a smaller --conns"
        );
    }
    Ok(soft)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("socksbench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(true)` when every measurement completed (targets may still be missed).
fn run() -> anyhow::Result<bool> {
    let Some(cfg) = parse_args()? else {
        return Ok(true);
    };
    // Client + sink side in this process, plus slack.
    raise_nofile(2 * cfg.idle as u64 + 512)?;
    let outcome = run::run(&cfg)?;
    Ok(outcome)
}
