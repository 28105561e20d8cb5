//! Collected numbers and the Markdown report: the table, the targets, notes and failures.

use core::fmt::Write as _;
use core::time::Duration;
use std::collections::HashMap;
use std::process::Command;

use crate::Config;
use crate::netns::{self, Network};
use crate::procfs::CpuTimes;
use crate::proxies::{Kind, Target};

/// A measurement, as `--only` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Metric {
    /// RSS per idle connection (first, while the proxies are fresh).
    Memory,
    /// CONNECT + echo sessions per second, latency.
    Sessions,
    /// Single-stream throughput up and down, CPU per GB.
    Throughput,
    /// UDP ASSOCIATE round trips per second on 1 and on 4 associations.
    Udp,
    /// UDP datagrams per second and loss, associations sending as fast as they can.
    UdpThroughput,
}

impl Metric {
    /// In run order.
    pub(crate) const ALL: [Self; 5] = [
        Self::Memory,
        Self::Sessions,
        Self::Throughput,
        Self::Udp,
        Self::UdpThroughput,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sessions => "sessions",
            Self::Throughput => "throughput",
            Self::Udp => "udp",
            Self::UdpThroughput => "udp-throughput",
        }
    }
}

/// Everything measured for one system.
#[derive(Debug, Default)]
struct Column {
    memory_kib: Option<f64>,
    sessions: Vec<f64>,
    latencies_us: Vec<u32>,
    session_cpu: CpuTimes,
    session_count: u64,
    generator_sessions: GeneratorLoad,
    up: Vec<f64>,
    down: Vec<f64>,
    cpu_seconds: f64,
    cpu_bytes: u64,
    udp: Vec<f64>,
    /// Round trips per second on a single association.
    udp_single: Vec<f64>,
    udp_unsupported: bool,
    udp_cpu: CpuTimes,
    udp_count: u64,
    generator_udp: GeneratorLoad,
    /// Echoed datagrams per second of each UDP throughput round.
    flood: Vec<f64>,
    /// Loss (share of sent) of each UDP throughput round.
    flood_loss: Vec<f64>,
    /// The UDP throughput rounds summed.
    flood_total: FloodTotal,
    flood_cpu: CpuTimes,
    failed: Vec<Metric>,
}

/// What the UDP throughput rounds of one system sent, echoed and lost, summed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FloodTotal {
    /// Datagrams the clients sent.
    pub(crate) sent: u64,
    /// Datagrams the echo server received.
    pub(crate) echo_got: u64,
    /// Datagrams that came back to the clients.
    pub(crate) echoed: u64,
    /// Datagrams the kernel dropped at the clients' sockets.
    pub(crate) client_drops: u64,
    /// Datagrams the kernel dropped at the echo server's socket.
    pub(crate) echo_drops: u64,
    /// Datagrams the kernel dropped at full receive queues in the whole network namespace
    /// (the proxy's sockets and the generator's; on the host's network, anyone's).
    pub(crate) queue_drops: u64,
}

impl FloodTotal {
    /// Sent but not echoed back, as a share of sent (0 when nothing was sent).
    fn loss(self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.sent.saturating_sub(self.echoed) as f64 / self.sent as f64
        }
    }
}

impl std::ops::AddAssign for FloodTotal {
    fn add_assign(&mut self, more: Self) {
        self.sent += more.sent;
        self.echo_got += more.echo_got;
        self.echoed += more.echoed;
        self.client_drops += more.client_drops;
        self.echo_drops += more.echo_drops;
        self.queue_drops += more.queue_drops;
    }
}

/// The load generator's own CPU over the runs of one measurement.
#[derive(Debug, Default)]
struct GeneratorLoad {
    cpu: f64,
    /// Sessions or round trips done.
    count: u64,
    /// Wall time of the runs.
    wall: f64,
}

/// Busy share of the cores above which a rate counts as bound by CPU.
const CPU_BOUND: f64 = 0.9;

/// What one unit of work (a session, a UDP round trip) cost through one system.
#[derive(Clone, Copy, Debug)]
struct Cost {
    /// The proxy's CPU, µs.
    proxy_us: f64,
    /// The part of `proxy_us` spent in the kernel, µs.
    proxy_system_us: f64,
    /// The load generator's own CPU (clients and the servers behind the proxy), µs.
    generator_us: f64,
    /// Share of the machine's cores the two kept busy during the runs.
    busy: f64,
}

impl Cost {
    fn new(proxy: (CpuTimes, u64), generator: (f64, u64), wall: f64) -> Option<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        // No proxy count: the direct baseline (no proxy process).
        let per = |seconds: f64| {
            if proxy.1 > 0 {
                seconds * 1e6 / proxy.1 as f64
            } else {
                0.0
            }
        };
        (generator.1 > 0 && wall > 0.0).then(|| Self {
            proxy_us: per(proxy.0.total()),
            proxy_system_us: per(proxy.0.system),
            generator_us: generator.0 * 1e6 / generator.1 as f64,
            busy: (proxy.0.total() + generator.0) / (wall * cores),
        })
    }

    /// The proxy CPU per unit that would reach `target`× `peer`'s rate, were the run bound
    /// by CPU alone and the generator's cost through socksgate what it is.
    fn budget_against(self, peer: Self, target: f64) -> f64 {
        (peer.proxy_us + peer.generator_us) / target - self.generator_us
    }

    /// `12.3 µs (10.1 in the kernel)`.
    fn proxy_split(self) -> String {
        format!(
            "{:.1} µs ({:.1} in the kernel)",
            self.proxy_us, self.proxy_system_us
        )
    }

    /// The most a proxy using no CPU at all could reach against `peer`'s rate, were the run
    /// bound by CPU alone: the peer's whole cost over the generator's own through socksgate.
    fn ceiling_against(self, peer: Self) -> f64 {
        (peer.proxy_us + peer.generator_us) / self.generator_us
    }
}

impl Column {
    fn session_cost(&self) -> Option<Cost> {
        Cost::new(
            (self.session_cpu, self.session_count),
            (self.generator_sessions.cpu, self.generator_sessions.count),
            self.generator_sessions.wall,
        )
    }

    fn udp_cost(&self) -> Option<Cost> {
        Cost::new(
            (self.udp_cpu, self.udp_count),
            (self.generator_udp.cpu, self.generator_udp.count),
            self.generator_udp.wall,
        )
    }
}

/// The run's results.
#[derive(Debug)]
pub(crate) struct Results {
    kinds: Vec<Kind>,
    columns: HashMap<Kind, Column>,
    settings: String,
    /// The added peers' commands, for the `peers:` line.
    peers: Vec<String>,
    network: String,
    quick: bool,
    metrics: Vec<Metric>,
    /// Remarks printed under the table.
    pub(crate) notes: Vec<String>,
    /// Per-system memory details.
    pub(crate) memory_detail: Vec<String>,
    /// Broken measurements: any makes the exit status non-zero.
    pub(crate) failures: Vec<String>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) wall: Duration,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// The `q` quantile (0..=1) of `v`, sorted in place.
fn quantile(v: &mut [u32], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * q) as usize).min(v.len() - 1);
    Some(f64::from(v[i]))
}

/// Row labels the targets look up.
const UDP_ROUND_TRIPS: &str = "UDP echo round trips/s, 4 associations";
const UDP_SINGLE: &str = "UDP echo round trips/s, 1 association";
const UDP_CPU: &str = "Proxy CPU per UDP round trip (µs) ↓";
const UDP_FLOOD: &str = "UDP throughput, 16 associations × 1400 B (echoed datagrams/s)";
const UDP_FLOOD_LOSS: &str = "UDP throughput loss, sent but not echoed back (%) ↓";
const UDP_FLOOD_CPU: &str = "Proxy CPU per echoed datagram (µs) ↓";

/// Which way is better for a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// A table cell: the value, or why there is none.
type Cell = (Option<f64>, &'static str);

struct Row {
    label: String,
    better: Better,
    decimals: usize,
    values: Vec<(Kind, Option<f64>, &'static str)>,
}

impl Results {
    pub(crate) fn new(cfg: &Config, network: &Network, targets: &[Target]) -> Self {
        let kinds: Vec<Kind> = targets.iter().map(|t| t.kind).collect();
        let settings = format!(
            "{} per transfer, {} round(s) interleaved (median shown), sessions {:.1} s × {} \
             clients, {} idle connections, UDP round trips {:.1} s × 1 and × {} associations, \
             UDP throughput {:.1} s × {} associations × {} B",
            human_bytes(cfg.bytes),
            cfg.rounds,
            cfg.session_time.as_secs_f64(),
            cfg.clients,
            cfg.idle,
            cfg.udp_time.as_secs_f64(),
            cfg.udp_clients,
            cfg.udp_time.as_secs_f64(),
            cfg.flood_clients,
            crate::udp_flood::DATAGRAM,
        );
        let peers = cfg
            .peers
            .iter()
            .map(|p| {
                let config = p.config.as_ref().map_or(String::new(), |c| {
                    format!(" with --peer-config {}", c.source.display())
                });
                format!("{} `{}`{config}", p.name, p.command)
            })
            .collect();
        Self {
            columns: kinds.iter().map(|&k| (k, Column::default())).collect(),
            kinds,
            settings,
            peers,
            network: network.describe(),
            quick: cfg.quick,
            metrics: cfg.metrics.clone(),
            notes: Vec::new(),
            memory_detail: Vec::new(),
            failures: Vec::new(),
            load_before: String::new(),
            load_after: String::new(),
            wall: Duration::ZERO,
        }
    }

    fn col(&mut self, k: Kind) -> &mut Column {
        self.columns.entry(k).or_default()
    }

    /// Records a value (for throughput: the upload rate) of round `round`.
    pub(crate) fn set(&mut self, k: Kind, m: Metric, _round: usize, v: f64) {
        let c = self.col(k);
        match m {
            Metric::Memory => c.memory_kib = Some(v),
            Metric::Sessions => c.sessions.push(v),
            Metric::Throughput => c.up.push(v),
            Metric::Udp => c.udp.push(v),
            Metric::UdpThroughput => c.flood.push(v),
        }
    }

    /// Records the round trips per second of a single-association UDP run.
    pub(crate) fn set_udp_single(&mut self, k: Kind, v: f64) {
        self.col(k).udp_single.push(v);
    }

    /// Records a UDP throughput round: what went where, and the proxy's CPU (`None` direct).
    pub(crate) fn add_flood(
        &mut self,
        k: Kind,
        round: FloodTotal,
        per_second: f64,
        cpu: Option<CpuTimes>,
    ) {
        let c = self.col(k);
        c.flood.push(per_second);
        c.flood_loss.push(round.loss());
        c.flood_total += round;
        if let Some(cpu) = cpu {
            c.flood_cpu += cpu;
        }
    }

    /// Records a download rate.
    pub(crate) fn set_down(&mut self, k: Kind, _round: usize, v: f64) {
        self.col(k).down.push(v);
    }

    pub(crate) fn add_cpu(&mut self, k: Kind, seconds: f64, bytes: u64) {
        let c = self.col(k);
        c.cpu_seconds += seconds;
        c.cpu_bytes += bytes;
    }

    pub(crate) fn add_session_cpu(&mut self, k: Kind, cpu: CpuTimes, sessions: u64) {
        let c = self.col(k);
        c.session_cpu += cpu;
        c.session_count += sessions;
    }

    /// CPU the load generator itself (clients and servers) spent on a sessions or UDP run
    /// of `count` sessions or round trips.
    pub(crate) fn add_generator_cpu(
        &mut self,
        k: Kind,
        m: Metric,
        seconds: f64,
        count: u64,
        wall: Duration,
    ) {
        let c = self.col(k);
        let load = match m {
            Metric::Udp => &mut c.generator_udp,
            _ => &mut c.generator_sessions,
        };
        load.cpu += seconds;
        load.count += count;
        load.wall += wall.as_secs_f64();
    }

    pub(crate) fn add_udp_cpu(&mut self, k: Kind, cpu: CpuTimes, round_trips: u64) {
        let c = self.col(k);
        c.udp_cpu += cpu;
        c.udp_count += round_trips;
    }

    pub(crate) fn latencies(&mut self, k: Kind) -> &mut Vec<u32> {
        &mut self.col(k).latencies_us
    }

    pub(crate) fn set_unsupported(&mut self, k: Kind) {
        self.col(k).udp_unsupported = true;
    }

    pub(crate) fn unsupported(&self, k: Kind) -> bool {
        self.columns.get(&k).is_some_and(|c| c.udp_unsupported)
    }

    /// Marks `m` broken for `k` with a message.
    pub(crate) fn fail(&mut self, k: Kind, what: &str, msg: String) {
        eprintln!("socksbench: {k} {what} FAILED: {msg}");
        self.failures.push(format!("{k} {what}: {msg}"));
        if let Some(&m) = Metric::ALL.iter().find(|m| m.name() == what) {
            self.col(k).failed.push(m);
        }
    }

    /// socksgate's fastest round ÷ direct's fastest round (the least disturbed of each, on a
    /// machine where other work steals CPU in bursts).
    fn best_ratio(&self, pick: impl Fn(&Column) -> &Vec<f64>) -> Option<f64> {
        let best = |k: Kind| {
            self.columns
                .get(&k)
                .and_then(|c| pick(c).iter().copied().reduce(f64::max))
        };
        best(Kind::Socksgate)
            .zip(best(Kind::Direct))
            .map(|(a, b)| a / b)
    }

    pub(crate) fn failed(&self, k: Kind, m: Metric) -> bool {
        self.columns.get(&k).is_some_and(|c| c.failed.contains(&m))
    }

    fn rows(&mut self) -> Vec<Row> {
        let kinds = self.kinds.clone();
        let mut rows = Vec::new();
        let metrics = self.metrics.clone();
        let mut row = |metric: Metric,
                       label: &str,
                       better,
                       decimals,
                       f: &mut dyn FnMut(Kind, &mut Column) -> Cell| {
            if !metrics.contains(&metric) {
                return;
            }
            let values = kinds
                .iter()
                .map(|&k| {
                    let c = self.columns.entry(k).or_default();
                    let (v, why) = f(k, c);
                    (k, v, why)
                })
                .collect();
            rows.push(Row {
                label: label.to_owned(),
                better,
                decimals,
                values,
            });
        };
        let na = |c: &Column, m: Metric| {
            if c.failed.contains(&m) {
                "error"
            } else {
                "–"
            }
        };
        row(
            Metric::Throughput,
            "Throughput up, 1 stream (Gbit/s)",
            Better::Higher,
            2,
            &mut |_, c| (median(&c.up), na(c, Metric::Throughput)),
        );
        row(
            Metric::Throughput,
            "Throughput down, 1 stream (Gbit/s)",
            Better::Higher,
            2,
            &mut |_, c| (median(&c.down), na(c, Metric::Throughput)),
        );
        row(
            Metric::Throughput,
            "Proxy CPU per GB relayed (s) ↓",
            Better::Lower,
            3,
            &mut |k, c| {
                if k == Kind::Direct {
                    (None, "n/a")
                } else if c.cpu_bytes == 0 {
                    (None, na(c, Metric::Throughput))
                } else {
                    (Some(c.cpu_seconds / (c.cpu_bytes as f64 / 1e9)), "")
                }
            },
        );
        row(
            Metric::Sessions,
            "CONNECT + echo sessions/s, 16 clients",
            Better::Higher,
            0,
            &mut |_, c| (median(&c.sessions), na(c, Metric::Sessions)),
        );
        row(
            Metric::Sessions,
            "Session latency p50 (µs) ↓",
            Better::Lower,
            0,
            &mut |_, c| (quantile(&mut c.latencies_us, 0.5), na(c, Metric::Sessions)),
        );
        row(
            Metric::Sessions,
            "Session latency p99 (µs) ↓",
            Better::Lower,
            0,
            &mut |_, c| (quantile(&mut c.latencies_us, 0.99), na(c, Metric::Sessions)),
        );
        row(
            Metric::Sessions,
            "Proxy CPU per session (µs) ↓",
            Better::Lower,
            1,
            &mut |k, c| {
                if k == Kind::Direct {
                    (None, "n/a")
                } else if c.session_count == 0 {
                    (None, na(c, Metric::Sessions))
                } else {
                    (
                        Some(c.session_cpu.total() * 1e6 / c.session_count as f64),
                        "",
                    )
                }
            },
        );
        row(
            Metric::Memory,
            "RSS per idle connection (KiB) ↓",
            Better::Lower,
            2,
            &mut |k, c| {
                if k == Kind::Direct {
                    (None, "n/a")
                } else {
                    (c.memory_kib, na(c, Metric::Memory))
                }
            },
        );
        let udp_cell = |k: Kind, c: &Column, m: Metric, v: &[f64]| -> Cell {
            if !k.has_udp() {
                (None, "n/a")
            } else if c.udp_unsupported {
                (None, "refused")
            } else {
                (median(v), na(c, m))
            }
        };
        row(Metric::Udp, UDP_SINGLE, Better::Higher, 0, &mut |k, c| {
            udp_cell(k, c, Metric::Udp, &c.udp_single)
        });
        row(
            Metric::Udp,
            UDP_ROUND_TRIPS,
            Better::Higher,
            0,
            &mut |k, c| udp_cell(k, c, Metric::Udp, &c.udp),
        );
        row(Metric::Udp, UDP_CPU, Better::Lower, 1, &mut |k, c| {
            if k == Kind::Direct {
                (None, "n/a")
            } else if c.udp_count == 0 {
                udp_cell(k, c, Metric::Udp, &[])
            } else {
                (Some(c.udp_cpu.total() * 1e6 / c.udp_count as f64), "")
            }
        });
        row(
            Metric::UdpThroughput,
            UDP_FLOOD,
            Better::Higher,
            0,
            &mut |k, c| udp_cell(k, c, Metric::UdpThroughput, &c.flood),
        );
        row(
            Metric::UdpThroughput,
            UDP_FLOOD_LOSS,
            Better::Lower,
            2,
            &mut |k, c| {
                let (v, why) = udp_cell(k, c, Metric::UdpThroughput, &c.flood_loss);
                (v.map(|share| share * 100.0), why)
            },
        );
        row(
            Metric::UdpThroughput,
            UDP_FLOOD_CPU,
            Better::Lower,
            2,
            &mut |k, c| {
                if k == Kind::Direct {
                    (None, "n/a")
                } else if c.flood_total.echoed == 0 {
                    // n/a, refused or error, as in the rows above.
                    udp_cell(k, c, Metric::UdpThroughput, &[])
                } else {
                    (
                        Some(c.flood_cpu.total() * 1e6 / c.flood_total.echoed as f64),
                        "",
                    )
                }
            },
        );
        rows
    }

    /// Prints the whole report as Markdown on stdout.
    pub(crate) fn print(&mut self) {
        let rows = self.rows();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## socksbench{}\n",
            if self.quick { " --quick" } else { "" }
        );
        let _ = writeln!(
            out,
            "- date: {}",
            cmd_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        );
        let _ = writeln!(out, "- command: `{}`", netns::command_line());
        let _ = writeln!(out, "- machine: {}", machine());
        let _ = writeln!(out, "- network: {}", self.network);
        let _ = writeln!(
            out,
            "- load average before / after: {} / {} (shared machine: other work runs alongside)",
            self.load_before, self.load_after
        );
        let _ = writeln!(out, "- peers: {}", peer_versions(&self.peers));
        let _ = writeln!(out, "- settings: {}", self.settings);
        let _ = writeln!(out, "- wall time: {:.0} s\n", self.wall.as_secs_f64());

        let names: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        let with_baseline = self.kinds.contains(&Kind::Baseline);
        let _ = writeln!(
            out,
            "| metric | {} | socksgate/direct | socksgate/best peer |{}",
            names.join(" | "),
            if with_baseline {
                " socksgate/baseline |"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "|---|{}---|---|{}",
            "---:|".repeat(names.len()),
            if with_baseline { "---|" } else { "" }
        );
        let mut lookup: HashMap<String, (Option<f64>, Option<f64>)> = HashMap::new();
        for r in &rows {
            let get = |k: Kind| r.values.iter().find(|v| v.0 == k).and_then(|v| v.1);
            let cells: Vec<String> = r
                .values
                .iter()
                .map(|(_, v, why)| match v {
                    Some(v) => format!("{v:.*}", r.decimals),
                    None => (*why).to_owned(),
                })
                .collect();
            let sg = get(Kind::Socksgate);
            let vs_direct = sg.zip(get(Kind::Direct)).map(|(a, b)| a / b);
            let peers: Vec<f64> = r
                .values
                .iter()
                .filter(|v| v.0.is_peer())
                .filter_map(|v| v.1)
                .collect();
            let best = match r.better {
                Better::Higher => peers.iter().copied().reduce(f64::max),
                Better::Lower => peers.iter().copied().reduce(f64::min),
            };
            let vs_peer = sg.zip(best).map(|(a, b)| a / b);
            lookup.insert(r.label.clone(), (vs_direct, vs_peer));
            let vs_baseline = if with_baseline {
                format!(
                    " {} |",
                    ratio(sg.zip(get(Kind::Baseline)).map(|(a, b)| a / b))
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |{vs_baseline}",
                r.label,
                cells.join(" | "),
                ratio(vs_direct),
                ratio(vs_peer)
            );
        }
        let _ = writeln!(
            out,
            "\n↓ lower is better; ratios are socksgate ÷ the other.\n"
        );

        let _ = writeln!(out, "### Targets\n");
        let value = |label: &str, k: Kind| {
            rows.iter()
                .find(|r| r.label == label)
                .and_then(|r| r.values.iter().find(|v| v.0 == k))
                .and_then(|v| v.1)
        };
        let tp_up = lookup
            .get("Throughput up, 1 stream (Gbit/s)")
            .and_then(|v| v.0);
        let tp_down = lookup
            .get("Throughput down, 1 stream (Gbit/s)")
            .and_then(|v| v.0);
        let tp = tp_up.zip(tp_down).map(|(a, b)| a.min(b));
        let sess = lookup
            .get("CONNECT + echo sessions/s, 16 clients")
            .and_then(|v| v.1);
        let rss = value("RSS per idle connection (KiB) ↓", Kind::Socksgate);
        let udp = lookup.get(UDP_ROUND_TRIPS).and_then(|v| v.1);
        let target = |out: &mut String,
                      what: &str,
                      got: Option<f64>,
                      ok: &dyn Fn(f64) -> bool,
                      shown: String| {
            let verdict = match got {
                Some(v) if ok(v) => "PASS",
                Some(_) => "MISS",
                None => "not measured",
            };
            let _ = writeln!(out, "- {verdict}: {what} — measured {shown}");
        };
        target(
            &mut out,
            "throughput ≥ 0.6× direct (each direction)",
            tp,
            &|v| v >= 0.6,
            format!(
                "up {} / down {} (medians; best round against best round: up {} / down {})",
                ratio(tp_up),
                ratio(tp_down),
                ratio(self.best_ratio(|c| &c.up)),
                ratio(self.best_ratio(|c| &c.down))
            ),
        );
        target(
            &mut out,
            "sessions/s ≥ 1.5× the best peer",
            sess,
            &|v| v >= 1.5,
            ratio(sess),
        );
        target(
            &mut out,
            "≤ 4 KiB RSS per idle connection",
            rss,
            &|v| v <= 4.0,
            rss.map_or("–".into(), |v| format!("{v:.2} KiB")),
        );
        if self.unsupported(Kind::Socksgate) {
            let _ = writeln!(
                out,
                "- MISS: UDP round trips ≥ 1.2× the best peer — socksgate refused UDP ASSOCIATE"
            );
        } else {
            target(
                &mut out,
                "UDP round trips (4 associations) ≥ 1.2× the best peer",
                udp,
                &|v| v >= 1.2,
                ratio(udp),
            );
        }

        // The rates above share two cores with the load generator, which spends about twice
        // the proxy's CPU per session; the proxy's CPU per unit of work is the same comparison
        // without that dilution.
        let cpu_sess = lookup.get("Proxy CPU per session (µs) ↓").and_then(|v| v.1);
        target(
            &mut out,
            "(generator-independent view of the sessions target) proxy CPU per session ≤ best \
             peer ÷ 1.5, i.e. ratio ≤ 0.67×",
            cpu_sess,
            &|v| v <= 1.0 / 1.5,
            ratio(cpu_sess),
        );
        let cpu_udp = lookup.get(UDP_CPU).and_then(|v| v.1);
        target(
            &mut out,
            "(generator-independent view of the UDP target) proxy CPU per round trip ≤ best \
             peer ÷ 1.2, i.e. ratio ≤ 0.83×",
            cpu_udp,
            &|v| v <= 1.0 / 1.2,
            ratio(cpu_udp),
        );

        let spread = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for k in &self.kinds {
            if let Some(c) = self.columns.get(k)
                && !c.up.is_empty()
            {
                self.notes.push(format!(
                    "{k} throughput per round (Gbit/s, in run order): up {}; down {}",
                    spread(&c.up),
                    spread(&c.down)
                ));
            }
        }

        for k in &self.kinds {
            let Some(c) = self.columns.get(k) else {
                continue;
            };
            let t = c.flood_total;
            if t.sent == 0 {
                continue;
            }
            let share = |n: u64| n as f64 * 100.0 / t.sent as f64;
            let cpu = if *k == Kind::Direct || t.echoed == 0 {
                String::new()
            } else {
                let per = |s: f64| s * 1e6 / t.echoed as f64;
                format!(
                    "; proxy CPU {:.2} µs per echoed datagram ({:.2} in the kernel)",
                    per(c.flood_cpu.total()),
                    per(c.flood_cpu.system)
                )
            };
            self.notes.push(format!(
                "{k} UDP throughput, all rounds: {} datagrams sent, {} reached the echo server, \
                 {} came back ({:.2}% lost: {:.2}% on the way out, {:.2}% on the way back); the \
                 kernel dropped {} at full receive queues in the network namespace, {} of them \
                 at the load generator's sockets ({} at the clients, {} at the echo server){}; \
                 echoed payload {:.2} Gbit/s (median round){cpu}",
                t.sent,
                t.echo_got,
                t.echoed,
                t.loss() * 100.0,
                share(t.sent.saturating_sub(t.echo_got)),
                share(t.echo_got.saturating_sub(t.echoed)),
                t.queue_drops,
                t.client_drops + t.echo_drops,
                t.client_drops,
                t.echo_drops,
                if *k == Kind::Direct {
                    String::new()
                } else {
                    format!(
                        " and so {} at the proxy's",
                        t.queue_drops.saturating_sub(t.client_drops + t.echo_drops)
                    )
                },
                median(&c.flood).unwrap_or(0.0) * crate::udp_flood::DATAGRAM as f64 * 8.0 / 1e9,
            ));
        }

        let mut cost_notes = Vec::new();
        type Pick = (fn(&Column) -> Option<Cost>, fn(&Column) -> &Vec<f64>);
        let sessions: Pick = (Column::session_cost, |c| &c.sessions);
        let udp: Pick = (Column::udp_cost, |c| &c.udp);
        let peers: Vec<Kind> = self.kinds.iter().copied().filter(|k| k.is_peer()).collect();
        for (what, unit, target, (cost, rates)) in [
            ("sessions", "session", 1.5, sessions),
            ("UDP", "round trip", 1.2, udp),
        ] {
            let costs: Vec<(Kind, Cost)> = self
                .kinds
                .iter()
                .filter_map(|&k| Some((k, self.columns.get(&k).and_then(cost)?)))
                .collect();
            if costs.is_empty() {
                continue;
            }
            let per_system: Vec<String> = costs
                .iter()
                .map(|(k, c)| format!("{k} {:.1}", c.generator_us))
                .collect();
            cost_notes.push(format!(
                "load generator's own CPU per {unit} (µs; clients + the servers behind the proxy, \
                 same process): {}",
                per_system.join(", ")
            ));
            // The peer with the highest median rate, as in the table's "best peer".
            let rate = |k: Kind| median(rates(self.columns.get(&k)?));
            let best = peers
                .iter()
                .filter_map(|&k| Some((k, rate(k)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| k);
            let find = |k: Kind| costs.iter().find(|(c, _)| *c == k).map(|(_, c)| *c);
            if let (Some(peer), Some(sg)) = (best, find(Kind::Socksgate))
                && let Some(pc) = find(peer)
            {
                let busy = format!(
                    "during those runs the proxy and the load generator kept {:.0}% of the \
                     cores busy through socksgate and {:.0}% through {peer}",
                    sg.busy * 100.0,
                    pc.busy * 100.0
                );
                let split = format!(
                    "proxy CPU per {unit}: socksgate {}, {peer} {}",
                    sg.proxy_split(),
                    pc.proxy_split()
                );
                cost_notes.push(if sg.busy.min(pc.busy) >= CPU_BOUND {
                    let budget = sg.budget_against(pc, target);
                    let over = if sg.proxy_system_us > budget {
                        "; socksgate's kernel time alone is over that budget"
                    } else {
                        ""
                    };
                    format!(
                        "{what} ceiling on this machine: {busy}, so the rate is set by CPU per \
                         {unit}. {peer} and the generator spend {:.1} µs per {unit} together; \
                         the generator alone spends {:.1} µs through socksgate. Even a proxy \
                         using no CPU at all would reach at most {:.2}× {peer}'s rate. The \
                         target, {target}×, leaves socksgate {budget:.1} µs per {unit} of its \
                         own; {split}{over}.",
                        pc.proxy_us + pc.generator_us,
                        sg.generator_us,
                        sg.ceiling_against(pc),
                    )
                } else {
                    format!(
                        "{what}: {busy}; the cores were not saturated, so the rate is set by \
                         latency (each client waits for its {unit}) more than by CPU; {split}"
                    )
                });
            }
        }
        for (i, n) in cost_notes.into_iter().enumerate() {
            self.notes.insert(i, n);
        }
        if !self.memory_detail.is_empty() || !self.notes.is_empty() {
            let _ = writeln!(out, "\n### Notes\n");
            for n in self.memory_detail.iter().chain(&self.notes) {
                let _ = writeln!(out, "- {n}");
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\n### FAILED measurements\n");
            for f in &self.failures {
                let _ = writeln!(out, "```\n{f}\n```");
            }
        }
        print!("{out}");
    }
}

/// `1.23×`, or `–` when there is no ratio (a value missing, or a division by zero).
fn ratio(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{v:.2}×"))
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

fn cmd_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} × {cpu}, Linux {}", kernel.trim())
}

/// Debian's peers with their package versions, then the added peers' commands.
fn peer_versions(added: &[String]) -> String {
    ["dante-server", "microsocks"]
        .iter()
        .map(|p| {
            let v = cmd_line("dpkg-query", &["-W", "-f=${Version}", p]);
            format!("{p} {}", if v.is_empty() { "?" } else { &v })
        })
        .chain(added.iter().cloned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let mut v: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut v, 0.5), Some(51.0));
        assert_eq!(quantile(&mut v, 0.99), Some(100.0));
    }

    #[test]
    fn session_cost_budget() {
        let cpu = |user, system| CpuTimes { user, system };
        // 1000 sessions in 1 s of wall time: 0.1 s of proxy CPU (0.08 of it in the kernel)
        // is 100 µs per session; the generator's 0.2 s is 200 µs.
        let sg = Cost::new((cpu(0.02, 0.08), 1000), (0.2, 1000), 1.0).unwrap();
        assert!((sg.proxy_us - 100.0).abs() < 1e-9);
        assert!((sg.proxy_system_us - 80.0).abs() < 1e-9);
        assert!((sg.generator_us - 200.0).abs() < 1e-9);
        let peer = Cost::new((cpu(0.05, 0.10), 1000), (0.21, 1000), 1.0).unwrap();
        // A free proxy: (150 + 210) / 200.
        assert!((sg.ceiling_against(peer) - 1.8).abs() < 1e-9);
        // 1.5× the peer's rate: a session may cost (150 + 210) / 1.5 = 240 µs in all, of
        // which the generator takes 200.
        assert!((sg.budget_against(peer, 1.5) - 40.0).abs() < 1e-9);
        assert_eq!(sg.proxy_split(), "100.0 µs (80.0 in the kernel)");
        // The direct baseline has no proxy.
        let direct = Cost::new((CpuTimes::default(), 0), (0.1, 1000), 1.0).unwrap();
        assert_eq!(direct.proxy_us, 0.0);
    }

    #[test]
    fn flood_loss_is_what_did_not_come_back() {
        let t = FloodTotal {
            sent: 1000,
            echo_got: 900,
            echoed: 750,
            ..FloodTotal::default()
        };
        assert!((t.loss() - 0.25).abs() < 1e-12);
        assert_eq!(FloodTotal::default().loss(), 0.0);
        // A peer with no loss has no "socksgate ÷ peer" ratio.
        assert_eq!(ratio(Some(0.5 / 0.0)), "–");
        assert_eq!(ratio(Some(1.0 / 4.0)), "0.25×");
    }
}
