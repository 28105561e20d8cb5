//! `socksbench`: socksgate against a direct connection, Dante, microsocks and any peer given
//! with `--peer`, in one run on loopback. Not part of `cargo test`; `tests/ci.sh` runs `socksbench --quick` as a smoke test
//! and tests/README.md ("Benchmark") carries the latest full table and its command.
//!
//! ```text
//! cargo build --release -p socksgate -p socksgate-tests --bin socksgate --bin socksbench
//! target/release/socksbench [--quick] [--bytes N] [--only NAME[,NAME…]] [--rounds N]
//!                           [--net private|host] [--cc NAME|default]
//!                           [--peer NAME=COMMAND [--peer-config NAME=FILE]]...
//! ```
//!
//! By default the whole run (load generator, its servers, every proxy) happens in a private
//! network namespace with only `lo` and TCP congestion control cubic, else reno (`--net`,
//! `--cc`; see `netns`), falling back to the host's loopback when no namespace can be
//! created; the report's `network:` line says which.
//!
//! Measurements (each proxy on its own 127.0.0.1 port, rounds interleaved across systems):
//! single-stream throughput up and down (fixed byte count, every byte checked), proxy CPU
//! seconds per GB relayed, CONNECT + 1-byte echo sessions per second with 16 concurrent
//! clients and p50/p99 latency, RSS growth per idle proxied connection, UDP ASSOCIATE echo
//! round trips per second on 1 and 4 associations, and UDP throughput: datagrams per second
//! and loss with 16 associations sending 1,400-byte datagrams as fast as they can. Exit status 0 even when a target is missed; non-zero when a
//! measurement breaks (wrong bytes, a SOCKS failure, a proxy exiting).
#![forbid(unsafe_code)]

mod added_peer;
mod error;
mod gssapi;
mod measure;
mod netns;
mod pattern;
mod procfs;
mod proxies;
mod report;
mod run;
mod servers;
mod udp_flood;
mod via;

use core::time::Duration;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::added_peer::AddedPeer;
use crate::netns::{Entered, Net};
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
    /// Concurrent UDP associations of the round-trip runs (a run on one association comes
    /// first).
    pub(crate) udp_clients: usize,
    /// Concurrent UDP associations of the throughput runs.
    pub(crate) flood_clients: usize,
    /// Peers given with `--peer` (their columns are `Kind::Added`).
    pub(crate) peers: Vec<AddedPeer>,
    /// Systems to measure (the direct baseline always runs).
    pub(crate) kinds: Vec<Kind>,
    /// Measurements to run.
    pub(crate) metrics: Vec<Metric>,
    /// The socksgate executable.
    pub(crate) socksgate: PathBuf,
    /// Another socksgate build measured beside it (`--baseline`), e.g. the commit before a
    /// change.
    pub(crate) baseline: Option<PathBuf>,
    /// Where the run happens.
    pub(crate) net: Net,
    /// The TCP congestion control to set in the private namespace (`None`: leave the
    /// kernel's default).
    pub(crate) cc: Option<String>,
    /// `--gssapi`: also measure Kerberos (the opt-in section of [`gssapi`]).
    pub(crate) gssapi: bool,
    /// Whether `--cc NAME` asked for `cc`: the run fails if it cannot be set. Otherwise `cc`
    /// is the default preference, cubic, with reno in its place where the kernel refuses it.
    pub(crate) cc_required: bool,
}

const USAGE: &str = "\
usage: socksbench [--quick] [--bytes N[K|M|G]] [--only NAME[,NAME...]] [--rounds N]
                  [--secs S] [--conns N] [--socksgate PATH] [--baseline PATH]
                  [--net private|host] [--cc NAME|default]
                  [--peer NAME=COMMAND [--peer-config NAME=FILE]]... [--gssapi]

  --quick        seconds-long smoke run (CI): 64 MiB transfers, 1 round, 200 idle conns
  --bytes N      bytes per transfer and direction (default 1G; K/M/G are binary)
  --only NAMES   systems (socksgate, dante, microsocks) and/or measurements (throughput,
                 sessions, memory, udp, udp-throughput); the direct baseline and the
                 --peer peers always run
  --rounds N     rounds per measurement, interleaved across systems (default 5)
  --secs S       seconds per sessions run (default 5; UDP runs take 3/5 of it)
  --conns N      idle connections for the memory measurement (default 2000)
  --socksgate P  the socksgate binary (default $SOCKSGATE_BIN or target/release/socksgate)
  --baseline P   also measure another socksgate binary (column `baseline`), in the same
                 interleaved rounds: before/after figures for a change (with --gssapi,
                 also rows `gss-integrity (baseline)` and `gss-confidentiality (baseline)`)
  --net private  run everything in a new network namespace with only lo (default; needs
                 root or CAP_SYS_ADMIN, util-linux unshare and iproute2 ip, else the run
                 falls back to `host` with a warning)
  --net host     run on the host's loopback, with its congestion control
  --cc NAME      TCP congestion control in the private namespace (e.g. cubic, bbr, reno;
                 the run fails if the kernel refuses it); `default` keeps the kernel's
                 default. Without --cc: cubic, or reno where the kernel does not let a
                 namespace choose cubic (the report says which). Only `default` with
                 --net host
  --peer NAME=COMMAND
                 also measure the SOCKS5 server that the shell command COMMAND starts on
                 127.0.0.1:{port} ({port} is replaced by a free port), as the column NAME;
                 repeatable. It runs inside the private namespace like the other peers, must
                 stay in the foreground, and is stopped (with its child processes) at the end
  --peer-config NAME=FILE
                 FILE's text, with {port} replaced, is written to a fresh file whose path
                 replaces {config} in NAME's command (for servers that take a config file)
  --gssapi       also measure Kerberos: a KDC of its own (krb5-kdc, krb5-user), then
                 handshakes/s, throughput and CPU per GB of socksgate chained to socksgate
                 with GSS-API none/integrity/confidentiality, beside no authentication,
                 RFC 1929 and TLS (a section after the table); `--only gssapi` runs that
                 section alone";

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

/// Parses the arguments after the program name; `Ok(None)` after printing the help.
fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Config>> {
    let mut args = args.into_iter();
    let mut quick = false;
    let mut bytes = None;
    let mut rounds = None;
    let mut secs: Option<f64> = None;
    let mut idle = None;
    let mut only: Vec<String> = Vec::new();
    let mut socksgate = None;
    let mut baseline = None;
    let mut net = Net::Private;
    let mut cc: Option<Option<String>> = None;
    let mut peer_args = Vec::new();
    let mut peer_config_args = Vec::new();
    let mut gssapi = false;
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
            "--baseline" => baseline = Some(PathBuf::from(value("--baseline")?)),
            "--net" => net = Net::parse(&value("--net")?)?,
            "--cc" => cc = Some(netns::parse_cc(&value("--cc")?)?),
            "--peer" => peer_args.push(value("--peer")?),
            "--peer-config" => peer_config_args.push(value("--peer-config")?),
            "--gssapi" => gssapi = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let reserved: Vec<&str> = Kind::ALL
        .iter()
        .chain(&[Kind::Baseline])
        .map(|k| k.name())
        .chain(Metric::ALL.iter().map(|m| m.name()))
        .collect();
    let peers = added_peer::parse(&peer_args, &peer_config_args, &reserved)?;
    let mut kinds = Vec::new();
    let mut metrics = Vec::new();
    let gssapi_only = !only.is_empty() && only.iter().all(|n| n == "gssapi");
    for name in only.iter().filter(|n| !n.is_empty()) {
        if name == "gssapi" {
            gssapi = true;
        } else if let Some(k) = Kind::ALL.iter().find(|k| k.name() == name) {
            kinds.push(*k);
        } else if let Some(m) = Metric::ALL.iter().find(|m| m.name() == name) {
            metrics.push(*m);
        } else if peers.iter().any(|p| p.name == name) {
            // Measured anyway, like --baseline: naming it in --only changes nothing.
        } else {
            bail!("--only: unknown name {name:?}\n{USAGE}");
        }
    }
    if gssapi_only {
        // The section starts its own servers; nothing else runs.
        kinds = vec![Kind::Direct];
    } else if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    } else if !kinds.contains(&Kind::Direct) {
        kinds.insert(0, Kind::Direct);
    }
    if baseline.is_some() && !kinds.contains(&Kind::Baseline) {
        let after = kinds
            .iter()
            .position(|&k| k == Kind::Socksgate)
            .map_or(1, |i| i + 1);
        kinds.insert(after.min(kinds.len()), Kind::Baseline);
    }
    kinds.extend(peers.iter().map(|p| Kind::Added(p.name)));
    if metrics.is_empty() && !gssapi_only {
        metrics = Metric::ALL.to_vec();
    }
    let secs = secs.unwrap_or(if quick { 1.0 } else { 5.0 });
    if !(0.05..=600.0).contains(&secs) {
        bail!("--secs must be between 0.05 and 600");
    }
    let cc_required = matches!(cc, Some(Some(_)));
    let cc = match (net, cc) {
        (Net::Host, Some(Some(name))) => bail!(
            "--cc {name} needs --net private: socksbench never changes the host's congestion \
             control (with --net host, leave --cc out or pass --cc default)"
        ),
        (Net::Host, _) => None,
        (Net::Private, None) => Some("cubic".to_owned()),
        (Net::Private, Some(cc)) => cc,
    };
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
        flood_clients: 16,
        peers,
        kinds,
        metrics,
        socksgate: socksgate.unwrap_or_else(default_socksgate),
        baseline,
        net,
        cc,
        cc_required,
        gssapi,
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("socksbench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Success when every measurement completed (targets may still be missed).
fn run() -> anyhow::Result<ExitCode> {
    let Some(mut cfg) = parse_args(std::env::args().skip(1))? else {
        return Ok(ExitCode::SUCCESS);
    };
    // First, while this process has one thread: it may re-run itself in a new namespace.
    let network = match netns::enter(&mut cfg)? {
        Entered::Ran(code) => return Ok(code),
        Entered::Here(network) => network,
    };
    // Client + sink side in this process, plus slack.
    raise_nofile(2 * cfg.idle as u64 + 512)?;
    Ok(if run::run(&cfg, &network)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        parse_args(args.iter().map(|&a| a.to_owned())).map(|c| c.expect("not --help"))
    }

    #[test]
    fn a_baseline_is_measured_right_after_socksgate() {
        let c = parse(&[
            "--baseline",
            "/old/socksgate",
            "--only",
            "socksgate,sessions",
        ])
        .unwrap();
        assert_eq!(c.kinds, [Kind::Direct, Kind::Socksgate, Kind::Baseline]);
        assert_eq!(
            c.baseline.as_deref(),
            Some(std::path::Path::new("/old/socksgate"))
        );
        assert!(!parse(&[]).unwrap().kinds.contains(&Kind::Baseline));
    }

    #[test]
    fn added_peers_are_measured_after_the_others() {
        let dir = socksgate_tests::tmp::TempDir::new();
        let conf = dir.write("hev.yml", "main:\n  port: {port}\n");
        let c = parse(&[
            "--peer",
            "hev=hev-socks5-server {config}",
            "--peer-config",
            &format!("hev={}", conf.display()),
            "--peer",
            "ms2=microsocks -i 127.0.0.1 -p {port}",
            "--only",
            "socksgate,hev,udp-throughput",
        ])
        .unwrap();
        assert_eq!(
            c.kinds,
            [
                Kind::Direct,
                Kind::Socksgate,
                Kind::Added("hev"),
                Kind::Added("ms2")
            ]
        );
        assert_eq!(c.metrics, [Metric::UdpThroughput]);
        assert_eq!(c.peers.len(), 2);
        assert_eq!(
            c.peers[0].config_for(7).as_deref(),
            Some("main:\n  port: 7\n")
        );
        let all = parse(&["--peer", "x=srv -p {port}"]).unwrap();
        assert_eq!(all.kinds.last(), Some(&Kind::Added("x")));
        assert!(all.kinds.contains(&Kind::Dante));
    }

    #[test]
    fn bad_peer_flags_stop_the_run_with_the_reason() {
        for (args, want) in [
            (&["--peer"][..], "--peer needs a value"),
            (&["--peer", "hev"], "expected NAME=COMMAND"),
            (&["--peer", "=hev {port}"], "name before `=` is empty"),
            (&["--peer", "hev="], "COMMAND after `=` is empty"),
            (&["--peer", "socksgate=x {port}"], "already uses"),
            (&["--peer", "baseline=x {port}"], "already uses"),
            (&["--peer", "sessions=x {port}"], "already uses"),
            (&["--peer", "hev=hev-socks5-server /etc/hev.yml"], "{port}"),
            (
                &["--peer", "hev=hev-socks5-server {config}"],
                "--peer-config hev=FILE",
            ),
            (&["--peer-config", "hev=/nonexistent.yml"], "cannot read"),
        ] {
            let e = format!("{:#}", parse(args).unwrap_err());
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn only_gssapi_runs_the_kerberos_section_alone() {
        let c = parse(&["--only", "gssapi"]).unwrap();
        assert!(c.gssapi);
        assert!(c.metrics.is_empty());
        assert_eq!(c.kinds, [Kind::Direct]);
        let c = parse(&["--gssapi", "--only", "sessions"]).unwrap();
        assert!(c.gssapi);
        assert_eq!(c.metrics, [Metric::Sessions]);
        assert!(!parse(&[]).unwrap().gssapi);
    }

    #[test]
    fn network_defaults_to_a_private_namespace_with_cubic() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.net, Net::Private);
        assert_eq!(c.cc.as_deref(), Some("cubic"));
        assert!(!c.cc_required, "cubic is a preference, not a requirement");
        let c = parse(&["--quick", "--only", "socksgate"]).unwrap();
        assert_eq!((c.net, c.cc.as_deref()), (Net::Private, Some("cubic")));
    }

    #[test]
    fn cc_choices_in_the_private_namespace() {
        let c = parse(&["--cc", "bbr"]).unwrap();
        assert_eq!((c.net, c.cc.as_deref()), (Net::Private, Some("bbr")));
        assert!(c.cc_required);
        let c = parse(&["--net", "private", "--cc", "default"]).unwrap();
        assert_eq!((c.net, c.cc, c.cc_required), (Net::Private, None, false));
        assert!(parse(&["--cc"]).is_err());
        assert!(parse(&["--cc", "not a name"]).is_err());
    }

    #[test]
    fn host_network_never_sets_a_congestion_control() {
        let c = parse(&["--net", "host"]).unwrap();
        assert_eq!((c.net, c.cc), (Net::Host, None));
        let c = parse(&["--cc", "default", "--net", "host"]).unwrap();
        assert_eq!((c.net, c.cc), (Net::Host, None));
        for args in [
            &["--net", "host", "--cc", "cubic"][..],
            &["--cc", "bbr", "--net", "host"],
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains("never changes the host"), "{e}");
        }
        assert!(parse(&["--net", "bridge"]).is_err());
    }
}
