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
    /// UDP ASSOCIATE round trips per second.
    Udp,
}

impl Metric {
    /// In run order.
    pub(crate) const ALL: [Self; 4] = [Self::Memory, Self::Sessions, Self::Throughput, Self::Udp];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sessions => "sessions",
            Self::Throughput => "throughput",
            Self::Udp => "udp",
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
    udp_unsupported: bool,
    udp_cpu: CpuTimes,
    udp_count: u64,
    generator_udp: GeneratorLoad,
    failed: Vec<Metric>,
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
             clients, {} idle connections, UDP {:.1} s × {} associations",
            human_bytes(cfg.bytes),
            cfg.rounds,
            cfg.session_time.as_secs_f64(),
            cfg.clients,
            cfg.idle,
            cfg.udp_time.as_secs_f64(),
            cfg.udp_clients
        );
        Self {
            columns: kinds.iter().map(|&k| (k, Column::default())).collect(),
            kinds,
            settings,
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
        let m = match what {
            "memory" => Some(Metric::Memory),
            "sessions" => Some(Metric::Sessions),
            "throughput" => Some(Metric::Throughput),
            "udp" => Some(Metric::Udp),
            _ => None,
        };
        if let Some(m) = m {
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
        row(
            Metric::Udp,
            "UDP ASSOCIATE echo round trips/s",
            Better::Higher,
            0,
            &mut |k, c| {
                if !k.has_udp() {
                    (None, "n/a")
                } else if c.udp_unsupported {
                    (None, "refused")
                } else {
                    (median(&c.udp), na(c, Metric::Udp))
                }
            },
        );
        row(
            Metric::Udp,
            "Proxy CPU per UDP round trip (µs) ↓",
            Better::Lower,
            1,
            &mut |k, c| {
                if !k.has_udp() || k == Kind::Direct {
                    (None, "n/a")
                } else if c.udp_count == 0 {
                    (None, na(c, Metric::Udp))
                } else {
                    (Some(c.udp_cpu.total() * 1e6 / c.udp_count as f64), "")
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
        let _ = writeln!(out, "- peers: {}", peer_versions());
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
        let udp = value("UDP ASSOCIATE echo round trips/s", Kind::Socksgate)
            .zip(value("UDP ASSOCIATE echo round trips/s", Kind::Dante))
            .map(|(a, b)| a / b);
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
                "- MISS: UDP round trips ≥ 1.2× Dante — socksgate refused UDP ASSOCIATE"
            );
        } else {
            target(
                &mut out,
                "UDP round trips ≥ 1.2× Dante",
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
        let cpu_udp = value("Proxy CPU per UDP round trip (µs) ↓", Kind::Socksgate)
            .zip(value("Proxy CPU per UDP round trip (µs) ↓", Kind::Dante))
            .map(|(a, b)| a / b);
        target(
            &mut out,
            "(generator-independent view of the UDP target) proxy CPU per round trip ≤ Dante's \
             ÷ 1.2, i.e. ratio ≤ 0.83×",
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

        let mut cost_notes = Vec::new();
        type Pick = (fn(&Column) -> Option<Cost>, fn(&Column) -> &Vec<f64>);
        let sessions: Pick = (Column::session_cost, |c| &c.sessions);
        let udp: Pick = (Column::udp_cost, |c| &c.udp);
        for (what, unit, peers, target, (cost, rates)) in [
            (
                "sessions",
                "session",
                &[Kind::Dante, Kind::Microsocks][..],
                1.5,
                sessions,
            ),
            ("UDP", "round trip", &[Kind::Dante][..], 1.2, udp),
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

fn ratio(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}×"))
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

fn peer_versions() -> String {
    ["dante-server", "microsocks"]
        .iter()
        .map(|p| {
            let v = cmd_line("dpkg-query", &["-W", "-f=${Version}", p]);
            format!("{p} {}", if v.is_empty() { "?" } else { &v })
        })
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
}
