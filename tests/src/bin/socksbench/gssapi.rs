//! `--gssapi`: Kerberos (GSS-API, RFC 1961) figures, an opt-in section of its own after the
//! main table. It starts a real MIT KDC with a fresh realm through the test harness
//! ([`socksgate_tests::kerberos::Realm`]), then measures socksgate's server (`B`) reached
//! through a second socksgate (`A`) that chains to it with an `[[upstream]]`, one pair per
//! row, all in the same interleaved rounds:
//!
//! * `plain` — A → B without authentication: the unprotected relay (splice on both);
//! * `password` — RFC 1929 with B's Argon2 check (handshakes only);
//! * `tls` — A → B over SOCKS inside TLS (B's `[[tls]]` listener, rustls, a P-256 key);
//! * `gss-none`, `gss-integrity`, `gss-confidentiality` — A → B with Kerberos at that level
//!   (A holds a user's tickets; B accepts with a keytab).
//!
//! The load generator speaks plain SOCKS5 to A, so every session of a row pays one A → B
//! handshake of that row's kind: "handshakes/s" is CONNECT + 1-byte echo sessions per second
//! through the pair. Throughput is one stream up and one down through the pair, every byte
//! checked; "CPU s/GB" is B's CPU time per GB relayed (A does the mirror work: wrap where B
//! unwraps). Ratios are against `plain` and against `tls` of the same run.
//!
//! With `--baseline`, the protected rows (`gss-integrity`, `gss-confidentiality`) are also
//! measured with that build as A and B (`… (baseline)`), in the same rounds: before/after
//! figures for a change to the protected relay.

use core::net::SocketAddr;
use core::time::Duration;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use socksgate_tests::kerberos::Realm;
use socksgate_tests::peers::Process;
use socksgate_tests::tmp::TempDir;
use socksgate_tests::tools;

use crate::Config;
use crate::error::{BenchError, Result};
use crate::measure::{self, Direction};
use crate::procfs;
use crate::servers::Bulk;
use crate::via::Via;

/// One row: how A reaches B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    Plain,
    Password,
    Tls,
    Gssapi(&'static str),
}

impl Hop {
    const ALL: [Self; 6] = [
        Self::Plain,
        Self::Password,
        Self::Tls,
        Self::Gssapi("none"),
        Self::Gssapi("integrity"),
        Self::Gssapi("confidentiality"),
    ];

    fn name(self) -> String {
        match self {
            Self::Plain => "plain".into(),
            Self::Password => "password".into(),
            Self::Tls => "tls".into(),
            Self::Gssapi(level) => format!("gss-{level}"),
        }
    }

    /// Whether its relay differs from `plain`'s (the password only changes the handshake).
    fn has_throughput(self) -> bool {
        self != Self::Password
    }
}

/// A pair: A (what the load generator talks to) and B (the server measured).
struct Pair {
    hop: Hop,
    /// Whether A and B are the `--baseline` build.
    baseline: bool,
    a: Process,
    b: Process,
    handshakes: Vec<f64>,
    failed: u64,
    first_error: Option<String>,
    up: Vec<f64>,
    down: Vec<f64>,
    b_cpu: f64,
    a_cpu: f64,
    bytes: u64,
}

/// What the run needs from the realm and the PKI.
struct Setup<'a> {
    realm: &'a Realm,
    pki: &'a TempDir,
    users: &'a Path,
}

impl Pair {
    fn start(setup: &Setup<'_>, hop: Hop, exe: &Path, baseline: bool) -> Result<Self> {
        let b = start_b(setup, hop, exe)?;
        let a = start_a(setup, hop, b.addr(), exe)?;
        Ok(Self {
            hop,
            baseline,
            a,
            b,
            handshakes: Vec::new(),
            failed: 0,
            first_error: None,
            up: Vec::new(),
            down: Vec::new(),
            b_cpu: 0.0,
            a_cpu: 0.0,
            bytes: 0,
        })
    }

    /// The row's name: its hop, and which build.
    fn name(&self) -> String {
        if self.baseline {
            format!("{} (baseline)", self.hop.name())
        } else {
            self.hop.name()
        }
    }

    fn via(&self) -> Via {
        Via::Socks(self.a.addr())
    }

    fn logs(&self) -> String {
        format!("A:\n{}\nB:\n{}", tail(&self.a.log()), tail(&self.b.log()))
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// B: `serve` on its port with the row's authentication (or TLS listener).
fn start_b(setup: &Setup<'_>, hop: Hop, exe: &Path) -> Result<Process> {
    let exe = exe.to_owned();
    let keytab = setup.realm.keytab.clone();
    let pki = setup.pki.path().to_owned();
    let users = setup.users.to_owned();
    let env = setup.realm.kdc.env();
    Process::spawn("socksgate-b", TempDir::new(), move |port, dir| {
        let listen = format!("127.0.0.1:{port}");
        let config = match hop {
            Hop::Plain | Hop::Password => String::new(),
            Hop::Tls => format!(
                "[[tls]]\nlisteners = [\"{listen}\"]\ncertificate = \"{}\"\nkey = \"{}\"\n",
                pki.join("server.pem").display(),
                pki.join("server.key").display()
            ),
            Hop::Gssapi(_) => format!(
                "[gssapi]\nkeytab = \"{}\"\nprotection = [\"none\", \"integrity\", \"confidentiality\"]\n",
                keytab.display()
            ),
        };
        let file = dir.write(&format!("b-{port}.toml"), config);
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", "--listen", &listen, "--config"])
            .arg(file)
            .envs(env.iter().map(|(k, v)| (k, v)));
        if hop == Hop::Password {
            cmd.arg("--users").arg(&users);
        }
        cmd
    })
    .map_err(BenchError::Setup)
}

/// A: `serve` on its port, every CONNECT through B as the row says.
fn start_a(setup: &Setup<'_>, hop: Hop, b: SocketAddr, exe: &Path) -> Result<Process> {
    let exe = exe.to_owned();
    let mut env = setup.realm.kdc.env();
    env.push(("KRB5CCNAME".into(), setup.realm.cache("bench").to_owned()));
    let ca = setup.pki.join("ca.pem");
    Process::spawn("socksgate-a", TempDir::new(), move |port, dir| {
        let url = match hop {
            Hop::Plain => format!("socks5://{b}"),
            Hop::Password => format!("socks5://bench:bench-pw@{b}"),
            Hop::Tls => format!("socks5+tls://{b}"),
            // The full principal: B is reached by address, not by the name in the keytab.
            Hop::Gssapi(level) => {
                format!("socks5+gssapi://{b}?service=rcmd%2Flocalhost&protection={level}")
            }
        };
        let ca_line = if hop == Hop::Tls {
            format!("ca = \"{}\"\n", ca.display())
        } else {
            String::new()
        };
        let config = format!(
            "[[upstream]]\nname = \"b\"\nurl = \"{url}\"\n{ca_line}\n\
             [[rule]]\naction = \"allow\"\nupstream = \"b\"\n"
        );
        let file = dir.write(&format!("a-{port}.toml"), config);
        let mut cmd = Command::new(&exe);
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(file)
        .envs(env.iter().map(|(k, v)| (k, v)));
        cmd
    })
    .map_err(BenchError::Setup)
}

/// A CA and a server certificate for 127.0.0.1 (P-256, like a typical deployment), made
/// with the `openssl` command.
fn pki() -> Result<TempDir> {
    let dir = TempDir::new();
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .map_err(|e| BenchError::Setup(format!("openssl (Debian: openssl): {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(BenchError::Setup(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=socksbench CA",
        "-days",
        "2",
    ]);
    openssl(&ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&csr)?;
    dir.write(
        "server.ext",
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])?;
    Ok(dir)
}

/// Runs the section: the realm, the pairs, the interleaved rounds; returns the report's
/// Markdown, and whether every measurement completed.
pub(crate) fn run(cfg: &Config, bulk: &Bulk, echo: SocketAddr) -> anyhow::Result<(String, bool)> {
    let baseline_pairs = if cfg.baseline.is_some() { 2 } else { 0 };
    eprintln!(
        "socksbench: gssapi (KDC, {} pairs)…",
        Hop::ALL.len() + baseline_pairs
    );
    let Some(realm) = Realm::start(
        "socksbench --gssapi",
        "SOCKSBENCH.TEST",
        &["bench"],
        &["rcmd/localhost"],
        &["rcmd/localhost"],
    ) else {
        anyhow::bail!("--gssapi: the Kerberos tools are missing");
    };
    tools::require("socksbench --gssapi", &["openssl"]);
    let pki = pki()?;
    let users = pki.join("users");
    let out = tools::run(
        Command::new(&cfg.socksgate)
            .args(["passwd", "--users"])
            .arg(&users)
            .arg("bench"),
        b"bench-pw\n",
        Duration::from_secs(60),
    );
    if !out.status.success() {
        anyhow::bail!("socksgate passwd: {}", out.stderr_text());
    }
    let setup = Setup {
        realm: &realm,
        pki: &pki,
        users: &users,
    };
    let mut pairs = Hop::ALL
        .iter()
        .map(|&hop| Pair::start(&setup, hop, &cfg.socksgate, false))
        .collect::<Result<Vec<_>>>()?;
    if let Some(exe) = &cfg.baseline {
        for hop in [Hop::Gssapi("integrity"), Hop::Gssapi("confidentiality")] {
            pairs.push(Pair::start(&setup, hop, exe, true)?);
        }
    }
    let mut failures = Vec::new();
    for round in 0..cfg.rounds {
        let n = pairs.len();
        for i in 0..n {
            // Rotate the order each round, so no row always runs right after another.
            let p = &mut pairs[(i + round) % n];
            let s = measure::sessions(p.via(), echo, cfg.clients, cfg.session_time);
            if s.done == 0 {
                failures.push(format!(
                    "{} handshakes: none completed ({}); {}",
                    p.name(),
                    s.first_error.unwrap_or_default(),
                    p.logs()
                ));
                continue;
            }
            p.failed += s.failed;
            if p.first_error.is_none() {
                p.first_error = s.first_error;
            }
            p.handshakes.push(s.done as f64 / s.elapsed.as_secs_f64());
            std::thread::sleep(Duration::from_millis(300));
            if !p.hop.has_throughput() {
                continue;
            }
            let cpu = |p: &Pair| {
                Some((
                    procfs::cpu_seconds(p.b.pid()).ok()?,
                    procfs::cpu_seconds(p.a.pid()).ok()?,
                ))
            };
            let before = cpu(p);
            let moved = (|| -> Result<(Duration, Duration)> {
                let up = measure::transfer(p.via(), bulk.addr(), Direction::Up, cfg.bytes)?;
                let down = measure::transfer(p.via(), bulk.addr(), Direction::Down, cfg.bytes)?;
                Ok((up, down))
            })();
            let after = cpu(p);
            match (moved, before, after) {
                (Ok((up, down)), Some((b0, a0)), Some((b1, a1))) => {
                    p.up.push(gbit(cfg.bytes, up));
                    p.down.push(gbit(cfg.bytes, down));
                    p.b_cpu += b1 - b0;
                    p.a_cpu += a1 - a0;
                    p.bytes += 2 * cfg.bytes;
                }
                (Err(e), ..) => {
                    failures.push(format!("{} throughput: {e}; {}", p.name(), p.logs()));
                }
                _ => failures.push(format!("{}: CPU times unreadable", p.name())),
            }
        }
    }
    Ok((report(cfg, &pairs, &failures), failures.is_empty()))
}

fn gbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// `x` over the same figure of the row named `of`, as `0.52×`; `-` where either is missing.
fn ratio(x: Option<f64>, of: Option<f64>) -> String {
    match (x, of) {
        (Some(x), Some(of)) if of > 0.0 => format!("{:.2}×", x / of),
        _ => "-".into(),
    }
}

fn report(cfg: &Config, pairs: &[Pair], failures: &[String]) -> String {
    let row = |name: &str| pairs.iter().find(|p| p.name() == name);
    let handshakes = |p: &Pair| median(&p.handshakes);
    let throughput = |p: &Pair| Some((median(&p.up)? + median(&p.down)?) / 2.0);
    let cpu_per_gb = |p: &Pair| (p.bytes > 0).then(|| p.b_cpu / (p.bytes as f64 / 1e9));
    let a_cpu_per_gb = |p: &Pair| (p.bytes > 0).then(|| p.a_cpu / (p.bytes as f64 / 1e9));
    let (plain, tls) = (row("plain"), row("tls"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## GSS-API (Kerberos) — socksgate A → socksgate B, B measured\n\n\
         {} rounds, {} MiB per transfer and direction, {} clients × {:.1} s of handshakes; \
         one A → B handshake per session. ×plain / ×tls: the row over that row's figure.\n",
        cfg.rounds,
        cfg.bytes >> 20,
        cfg.clients,
        cfg.session_time.as_secs_f64()
    );
    out.push_str(
        "| A → B | handshakes/s | ×plain | up Gbit/s | down Gbit/s | ×plain | ×tls \
         | B CPU s/GB | ×plain | ×tls | A CPU s/GB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let num =
        |x: Option<f64>, digits: usize| x.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"));
    for p in pairs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name(),
            num(handshakes(p), 0),
            ratio(handshakes(p), plain.and_then(handshakes)),
            num(median(&p.up), 2),
            num(median(&p.down), 2),
            ratio(throughput(p), plain.and_then(throughput)),
            ratio(throughput(p), tls.and_then(throughput)),
            num(cpu_per_gb(p), 2),
            ratio(cpu_per_gb(p), plain.and_then(cpu_per_gb)),
            ratio(cpu_per_gb(p), tls.and_then(cpu_per_gb)),
            num(a_cpu_per_gb(p), 2),
        );
    }
    for p in pairs.iter().filter(|p| p.failed > 0) {
        let _ = writeln!(
            out,
            "\n- {}: {} handshake sessions failed (first: {})",
            p.name(),
            p.failed,
            p.first_error.as_deref().unwrap_or("-")
        );
    }
    for f in failures {
        let _ = writeln!(out, "\n- FAILED: {f}");
    }
    out
}
