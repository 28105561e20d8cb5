//! `socksifybench`: the connect latency that `socksgate socksify`, proxychains4 and Dante's
//! `socksify` add to an unmodified program, through the same socksgate server, against a
//! direct connection and an in-process SOCKS5 client (PySocks) in the same run.
//!
//! ```text
//! cargo build --release -p socksgate -p socksgate-socksify -p socksgate-tests \
//!     --bin socksgate --bin socksifybench
//! target/release/socksifybench [--connects N] [--rounds N] [--socksgate PATH]
//! ```
//!
//! The measured program is Debian's python3 running one script: N times `connect()` to a
//! loopback origin that writes one byte and closes, timing only the `connect` call (for a
//! wrapped program that is the whole SOCKS exchange, which happens inside `connect`), then
//! reading the byte (checked) and closing. Every wrapper runs the same script; rounds are
//! interleaved across wrappers and the report gives the median of the rounds' medians and
//! its ratio to the direct connection. The run happens in a network namespace of its own
//! (socksifybench re-runs itself under util-linux `unshare --net`): the proxy listens on
//! 127.0.0.1 and the origin on 10.83.0.1, delivered locally by a `local` route but on no
//! interface (Dante's socksify sends loopback destinations and the interfaces' own
//! addresses direct, whatever its routes say). After each proxied run the proxy's
//! access log must hold one CONNECT per connect, so a wrapper that went direct gets no figure
//! in its
//! row instead of posting a figure. Exit status non-zero when a run breaks (a wrong byte, a
//! failed connect, a tool missing). Needs root.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Set in the re-run inside the benchmark's network namespace.
const IN_NAMESPACE: &str = "SOCKSIFYBENCH_IN_NAMESPACE";
/// The origin's address (a `local` route in the namespace, on no interface).
const ORIGIN: &str = "10.83.0.1";

/// The measuring program: prints the median and the mean connect time in nanoseconds.
const SCRIPT: &str = r#"
import socket, statistics, sys, time
host, port, count, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "pysocks":
    import socks
    proxy_port = int(sys.argv[5])
times = []
for _ in range(count):
    if mode == "pysocks":
        s = socks.socksocket()
        s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port)
    else:
        s = socket.socket()
    t = time.perf_counter_ns()
    s.connect((host, port))
    times.append(time.perf_counter_ns() - t)
    if s.recv(1) != b"x":
        sys.exit("wrong byte from the origin")
    s.close()
print(int(statistics.median(times)), int(statistics.mean(times)))
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    PySocks,
    Socksify,
    Proxychains,
    DanteSocksify,
}

impl Way {
    const ALL: [Self; 5] = [
        Self::Direct,
        Self::PySocks,
        Self::Socksify,
        Self::Proxychains,
        Self::DanteSocksify,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct (no proxy)",
            Self::PySocks => "in-process SOCKS5 (PySocks)",
            Self::Socksify => "socksgate socksify",
            Self::Proxychains => "proxychains4",
            Self::DanteSocksify => "Dante socksify",
        }
    }
}

fn which(name: &str) -> Result<PathBuf> {
    socksgate_tests::tools::which(name)
        .with_context(|| format!("`{name}` is not installed (the root ci.sh installs it)"))
}

fn main() -> Result<()> {
    let mut connects = 2000usize;
    let mut rounds = 5usize;
    let mut socksgate = std::env::var_os("SOCKSGATE_BIN")
        .map_or_else(|| PathBuf::from("target/release/socksgate"), PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connects" => connects = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            "--socksgate" => socksgate = PathBuf::from(value()?),
            other => bail!("unknown argument {other} (--connects N, --rounds N, --socksgate PATH)"),
        }
    }
    if std::env::var_os(IN_NAMESPACE).is_none() {
        // Re-run inside a network namespace of our own, where 10.83.0.1 can be the origin.
        let status = Command::new(which("unshare")?)
            .arg("--net")
            .arg("--")
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(IN_NAMESPACE, "1")
            .status()
            .context("unshare --net (needs root)")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    for cmd in [
        &["link", "set", "lo", "up"][..],
        &["route", "add", "local", "10.83.0.1/32", "dev", "lo"],
    ] {
        let ok = Command::new("ip")
            .args(cmd)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("ip {} failed in the benchmark's namespace", cmd.join(" "));
        }
    }
    let python = PathBuf::from("/usr/bin/python3");
    let proxychains = which("proxychains4")?;
    let dante_socksify = which("socksify")?;
    if !socksgate.is_file() {
        bail!("{} not found (--socksgate PATH)", socksgate.display());
    }

    let dir = tempfile_dir()?;
    let script = dir.join("connect.py");
    std::fs::write(&script, SCRIPT)?;

    // The origin: one byte, then close.
    let origin = TcpListener::bind((ORIGIN, 0))?;
    let origin_port = origin.local_addr()?.port();
    std::thread::spawn(move || {
        for mut s in origin.incoming().flatten() {
            let _ = s.write_all(b"x");
        }
    });

    let proxy_port = socksgate_tests::free_port();
    let log_path = dir.join("socksgate.log");
    let log = std::fs::File::create(&log_path)?;
    let sessions = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("command=connect")
            .count()
    };
    let _server = Killed(
        Command::new(&socksgate)
            .args(["serve", "--listen", &format!("127.0.0.1:{proxy_port}")])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting socksgate serve")?,
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("socksgate does not listen on 127.0.0.1:{proxy_port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let proxychains_conf = dir.join("proxychains.conf");
    std::fs::write(
        &proxychains_conf,
        format!("strict_chain\nquiet_mode\n[ProxyList]\nsocks5 127.0.0.1 {proxy_port}\n"),
    )?;
    let dante_conf = dir.join("socks.conf");
    std::fs::write(
        &dante_conf,
        format!(
            "logoutput: stderr\n\
             route {{ from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = {proxy_port}\n\
             proxyprotocol: socks_v5\nmethod: none }}\n"
        ),
    )?;

    let run = |way: Way| -> Result<(u64, u64, String)> {
        let count = connects.to_string();
        let origin_port = origin_port.to_string();
        let mut py_args: Vec<String> = vec![
            script.display().to_string(),
            ORIGIN.into(),
            origin_port,
            count,
            if way == Way::PySocks {
                "pysocks"
            } else {
                "plain"
            }
            .into(),
        ];
        if way == Way::PySocks {
            py_args.push(proxy_port.to_string());
        }
        let mut cmd = match way {
            Way::Direct | Way::PySocks => Command::new(&python),
            Way::Socksify => {
                let mut c = Command::new(&socksgate);
                c.args([
                    "socksify",
                    "--proxy",
                    &format!("socks5://127.0.0.1:{proxy_port}"),
                ])
                .args(["--direct", "none", "--"])
                .arg(&python);
                c
            }
            Way::Proxychains => {
                let mut c = Command::new(&proxychains);
                c.arg("-q").arg("-f").arg(&proxychains_conf).arg(&python);
                c
            }
            Way::DanteSocksify => {
                let mut c = Command::new(&dante_socksify);
                c.env("SOCKS_CONF", &dante_conf).arg(&python);
                c
            }
        };
        let out = cmd
            .args(&py_args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", way.name()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut numbers = text.split_whitespace().map(str::parse::<u64>);
        match (out.status.success(), numbers.next(), numbers.next()) {
            (true, Some(Ok(median)), Some(Ok(mean))) => Ok((
                median,
                mean,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )),
            _ => bail!(
                "{} broke: {}\n{}",
                way.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };

    let mut medians: Vec<Vec<u64>> = vec![Vec::new(); Way::ALL.len()];
    let mut means: Vec<Vec<u64>> = vec![Vec::new(); Way::ALL.len()];
    let mut bypassed: Vec<Option<usize>> = vec![None; Way::ALL.len()];
    for round in 0..rounds {
        for (i, way) in Way::ALL.into_iter().enumerate() {
            let before = sessions();
            let (median, mean, stderr) = run(way)?;
            // The access log is written as each session ends: give the last ones a moment.
            let expected = if way == Way::Direct { 0 } else { connects };
            let waited = Instant::now();
            while sessions() - before < expected && waited.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let proxied = sessions() - before;
            if proxied != expected {
                // Not a figure for the wrapper: its connections did not all take the proxy.
                eprintln!(
                    "socksifybench: {}: {proxied} proxied sessions for {connects} connects; \
                     its stderr begins:\n{}",
                    way.name(),
                    stderr.lines().take(10).collect::<Vec<_>>().join("\n")
                );
                bypassed[i] = Some(proxied);
                continue;
            }
            medians[i].push(median);
            means[i].push(mean);
        }
        eprintln!("socksifybench: round {}/{rounds} done", round + 1);
    }
    let middle = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let direct = middle(&mut medians[0].clone()) as f64;
    let mut report = format!(
        "connect latency, {connects} connects × {rounds} rounds, python3 to {ORIGIN}, \
         proxy: socksgate serve on 127.0.0.1 (SOCKS5, no authentication)\n\n\
         | program runs | median connect µs | mean connect µs | ratio to direct |\n\
         |---|---|---|---|\n"
    );
    for (i, way) in Way::ALL.into_iter().enumerate() {
        if let Some(proxied) = bypassed[i] {
            let _ = writeln!(
                report,
                "| {} | – | – | not measured: {proxied} of {connects} connects reached the proxy |",
                way.name()
            );
            continue;
        }
        let median = middle(&mut medians[i]) as f64;
        let mean = middle(&mut means[i]) as f64;
        let _ = writeln!(
            report,
            "| {} | {:.1} | {:.1} | {:.1}× |",
            way.name(),
            median / 1000.0,
            mean / 1000.0,
            median / direct
        );
    }
    print!("{report}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("socksifybench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
