//! The fleet of `fleet.rs` under faults, with continuous load: client threads doing SOCKS5
//! CONNECT sessions through HAProxy to a TCP echo, each checking every byte that comes back.
//!
//! * a node killed (SIGKILL): sessions in flight on it fail; new ones succeed through the
//!   others once HAProxy's check (every 200 ms, `fall 1`) has seen it go;
//! * a node drained (SIGTERM): its in-flight sessions finish byte-exact, `/readyz` says 503,
//!   HAProxy marks it down and no session starts on it after the drain began;
//! * HAProxy reloaded (master-worker, SIGUSR2) under load: no session lost;
//! * 1 % packet loss and 50 ms delay (`tc netem`) inside a network namespace the test
//!   creates: every transfer byte-exact.
//!
//! Each prints the sessions attempted, succeeded and failed.

use core::net::SocketAddr;
use core::time::Duration;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use socksgate_core::Addr;
use socksgate_core::client::ClientConfig;
use socksgate_core::server::Version;
use socksgate_tests::reliability::{Rng, poll_until};
use socksgate_tests::socks::{self, Command as SocksCommand};
use socksgate_tests::{TIMEOUT, origin, tools};

use crate::fleet::{Fleet, fleet_with};

/// Bytes each load session sends and expects back.
const SESSION_BYTES: usize = 64 * 1024;
/// Client threads of the continuous load.
const LOAD_THREADS: usize = 3;
/// How long a session may wait for a read or write before it counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One session's outcome: when it started and ended, and why it failed.
#[derive(Debug)]
struct Session {
    started: Instant,
    error: Option<String>,
}

/// One SOCKS5 CONNECT through `proxy` to the echo at `echo`: `len` bytes from `seed` up (in
/// 16 KiB writes, `pace` apart), the same bytes back, checked.
fn echo_session(
    proxy: SocketAddr,
    echo: SocketAddr,
    seed: u64,
    len: usize,
    pace: Duration,
) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(10))
        .map_err(|e| format!("connect to the balancer: {e}"))?;
    for set in [TcpStream::set_read_timeout, TcpStream::set_write_timeout] {
        set(&stream, Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    }
    let mut buf = [0u8; 512];
    let config = ClientConfig::new(Version::Socks5, SocksCommand::Connect, Addr::Ip(echo));
    let (_, early) = socks::handshake(&mut stream, config, &mut buf).map_err(|e| e.to_string())?;
    if early != 0 {
        return Err(format!("{early} unexpected bytes after the reply"));
    }
    let data = Rng::new(seed).bytes(len);
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let up = data.clone();
    let sender = std::thread::spawn(move || -> Result<(), String> {
        for (i, chunk) in up.chunks(16 * 1024).enumerate() {
            if i > 0 && !pace.is_zero() {
                std::thread::sleep(pace);
            }
            writer.write_all(chunk).map_err(|e| format!("write: {e}"))?;
        }
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))
    });
    let mut got = Vec::with_capacity(len);
    let read = stream.read_to_end(&mut got);
    let sent = sender
        .join()
        .unwrap_or_else(|_| Err("writer panicked".into()));
    if let Err(e) = read {
        return Err(format!("read after {} of {len} bytes: {e}", got.len()));
    }
    sent?;
    if got != data {
        let first = got.iter().zip(&data).position(|(a, b)| a != b);
        return Err(format!(
            "got {} of {len} bytes back, first difference at {first:?}",
            got.len()
        ));
    }
    Ok(())
}

/// Client threads running [`echo_session`]s back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Session>>>,
}

impl Load {
    fn start(proxy: SocketAddr, echo: SocketAddr, threads: usize, len: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut sessions = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let seed = ((t as u64) << 32) | n;
                        let error = echo_session(proxy, echo, seed, len, Duration::ZERO).err();
                        sessions.push(Session { started, error });
                        n += 1;
                    }
                    sessions
                })
            })
            .collect();
        Self { stop, threads }
    }

    fn stop(self) -> Vec<Session> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect()
    }
}

/// Prints the sessions attempted, succeeded and failed under `fault` (and the first few
/// failures); returns the failed ones.
fn report<'a>(fault: &str, sessions: &'a [Session]) -> Vec<&'a Session> {
    let failed: Vec<&Session> = sessions.iter().filter(|s| s.error.is_some()).collect();
    let attempted = sessions.len();
    let share = if attempted == 0 {
        0.0
    } else {
        100.0 * failed.len() as f64 / attempted as f64
    };
    println!(
        "fleet fault {fault}: sessions attempted {attempted}, succeeded {}, failed {} ({share:.1} %)",
        attempted - failed.len(),
        failed.len()
    );
    for s in failed.iter().take(5) {
        println!("  failed: {}", s.error.as_deref().unwrap_or_default());
    }
    failed
}

/// Sends `signal` (`-KILL`, `-TERM`, `-USR2`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// `GET /readyz` on a metrics listener: the status line's code.
fn readyz(metrics: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Seconds since midnight of a log line's RFC 3339 timestamp (`2026-12-03T12:22:40.525380Z`).
fn log_time(line: &str) -> Option<f64> {
    let time = line.get(11..26)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The value of `key=` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line.get(start..)?.split_whitespace().next()
}

fn three_nodes(test: &str, config: &str, master_worker: bool) -> Option<Fleet> {
    fleet_with(test, &|_| config.to_owned(), false, master_worker)
}

/// A node killed with SIGKILL under continuous load: sessions in flight on it fail, and
/// from one second after the kill (HAProxy checks every 200 ms; `fall 1`) every session
/// succeeds through the other two.
#[test]
fn fleet_fault_node_killed_under_load() {
    let test = "fleet_fault_node_killed_under_load";
    let Some(fleet) = three_nodes(test, "", false) else {
        return;
    };
    let echo = origin::echo();
    let load = Load::start(
        fleet.balancer.addr(),
        echo.addr(),
        LOAD_THREADS,
        SESSION_BYTES,
    );
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    signal(fleet.nodes[0].pid(), "-KILL");
    std::thread::sleep(Duration::from_secs(3));
    let sessions = load.stop();
    let failed = report("SIGKILL of one node of three", &sessions);

    // The window in which a failure is the kill's: sessions in flight on the killed node,
    // and new ones before HAProxy's check noticed.
    let window = Duration::from_secs(1);
    let late: Vec<&&Session> = failed
        .iter()
        .filter(|s| s.started > killed + window)
        .collect();
    assert!(
        late.is_empty(),
        "{} sessions started more than {window:?} after the kill failed: {:?}",
        late.len(),
        late.iter().map(|s| &s.error).collect::<Vec<_>>()
    );
    let before = sessions.iter().filter(|s| s.started < killed).count();
    let after = sessions
        .iter()
        .filter(|s| s.started > killed + window)
        .count();
    println!("  sessions started before the kill {before}, more than {window:?} after it {after}");
    if let Some(last) = failed.iter().map(|s| s.started).max() {
        match last.checked_duration_since(killed) {
            Some(d) => println!(
                "  last failed session started {} ms after the kill",
                d.as_millis()
            ),
            None => println!("  every failed session started before the kill (in flight)"),
        }
    }
    assert!(before >= LOAD_THREADS, "too little load before the kill");
    assert!(
        after >= 10,
        "too few sessions after the kill to tell: {after}"
    );
    assert!(
        failed.len() <= LOAD_THREADS * 2,
        "more failures than sessions that can have been in flight on the killed node"
    );
    let log = fleet.balancer.log();
    assert!(
        log.contains("nodes/node0 is DOWN"),
        "HAProxy did not mark the killed node down:\n{log}"
    );
}

/// A node drained with SIGTERM under continuous load: a long transfer on it finishes
/// byte-exact, its `/readyz` turns 503, HAProxy marks it down, no session starts on it after
/// the drain began (its access log), the others take the new sessions, and it exits once its
/// sessions ended.
#[test]
fn fleet_fault_node_drained_under_load() {
    let test = "fleet_fault_node_drained_under_load";
    let Some(mut fleet) = three_nodes(test, "drain_timeout = 60\n", false) else {
        return;
    };
    let echo = origin::echo();
    let proxy = fleet.balancer.addr();
    let echo_addr = echo.addr();
    // Three long transfers (1 MiB, paced over about 4 s), one per node (round robin).
    let long: Vec<JoinHandle<Result<(), String>>> = (0..3u64)
        .map(|i| {
            let t = std::thread::spawn(move || {
                echo_session(
                    proxy,
                    echo_addr,
                    1000 + i,
                    1 << 20,
                    Duration::from_millis(60),
                )
            });
            std::thread::sleep(Duration::from_millis(150));
            t
        })
        .collect();
    let load = Load::start(proxy, echo_addr, LOAD_THREADS, SESSION_BYTES);
    std::thread::sleep(Duration::from_millis(500));
    let drained = Instant::now();
    signal(fleet.nodes[0].pid(), "-TERM");
    assert!(
        poll_until(Duration::from_secs(5), || readyz(fleet.metrics[0])
            == Some(503)),
        "node 0's /readyz did not turn 503"
    );
    assert!(
        poll_until(Duration::from_secs(10), || fleet
            .balancer
            .log()
            .contains("nodes/node0 is DOWN")),
        "HAProxy did not mark the draining node down:\n{}",
        fleet.balancer.log()
    );
    let down = drained.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let sessions = load.stop();
    let failed = report("SIGTERM drain of one node of three", &sessions);
    println!(
        "  HAProxy marked the node down {} ms after SIGTERM",
        down.as_millis()
    );
    for (i, t) in long.into_iter().enumerate() {
        t.join()
            .expect("long transfer thread")
            .unwrap_or_else(|e| panic!("long transfer {i} across the drain: {e}"));
    }
    println!("  3 long transfers (1 MiB each, one per node) across the drain: byte-exact");
    assert!(
        failed.is_empty(),
        "sessions failed during a drain: {:?}",
        failed.iter().map(|s| &s.error).collect::<Vec<_>>()
    );

    // The drained node: it waited for its sessions, then exited by itself.
    assert!(
        poll_until(Duration::from_secs(30), || fleet.nodes[0]
            .exited()
            .is_some()),
        "the drained node did not exit after its sessions ended:\n{}",
        fleet.nodes[0].log()
    );
    let log = fleet.nodes[0].log();
    let drain_line = log
        .lines()
        .find(|l| l.contains("shutting down: listeners closed"))
        .unwrap_or_else(|| panic!("no drain line:\n{log}"));
    let open: usize = field(drain_line, "sessions")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no session count in {drain_line:?}"));
    assert!(
        open >= 1,
        "the long transfer was not in flight on the drained node"
    );
    assert!(log.contains("all sessions ended"), "{log}");
    // No session started after the drain began: each access line's start (its time minus
    // its duration) is before the drain line (50 ms of slack: a connection accepted just
    // before can be logged as starting a little later).
    let drain_at = log_time(drain_line).expect("drain line time");
    let mut during = 0;
    for line in log
        .lines()
        .filter(|l| l.contains("socksgate::access") && l.contains(&format!("dst={echo_addr}")))
    {
        let end = log_time(line).expect("access line time");
        let ms: f64 = field(line, "duration_ms")
            .and_then(|d| d.parse().ok())
            .expect("duration_ms");
        let start = end - ms / 1000.0;
        assert!(
            start <= drain_at + 0.05,
            "a session started on the drained node after the drain:\n{line}\n{drain_line}"
        );
        if end >= drain_at {
            during += 1;
        }
    }
    println!(
        "  drained node: {open} sessions open at SIGTERM, {during} access lines after it, none started after it"
    );
    assert!(during >= 1, "no session ended during the drain:\n{log}");
    // The other nodes took over.
    for i in 1..3 {
        assert!(
            fleet.nodes[i].log().contains(&format!("dst={echo_addr}")),
            "node {i} served nothing"
        );
    }
}

/// HAProxy reloaded (master-worker mode, SIGUSR2: a new worker takes over the listening
/// sockets, the old one finishes its connections) while long transfers and continuous load
/// run: no session lost.
#[test]
fn fleet_fault_haproxy_reloaded_under_load() {
    let test = "fleet_fault_haproxy_reloaded_under_load";
    let Some(fleet) = three_nodes(test, "", true) else {
        return;
    };
    let echo = origin::echo();
    let proxy = fleet.balancer.addr();
    let echo_addr = echo.addr();
    let long: Vec<JoinHandle<Result<(), String>>> = (0..3u64)
        .map(|i| {
            std::thread::spawn(move || {
                echo_session(
                    proxy,
                    echo_addr,
                    2000 + i,
                    1 << 20,
                    Duration::from_millis(60),
                )
            })
        })
        .collect();
    let load = Load::start(proxy, echo_addr, LOAD_THREADS, SESSION_BYTES);
    std::thread::sleep(Duration::from_secs(1));
    let workers = |log: &str| log.matches("New worker").count();
    assert_eq!(
        workers(&fleet.balancer.log()),
        1,
        "{}",
        fleet.balancer.log()
    );
    signal(fleet.balancer.pid(), "-USR2");
    assert!(
        poll_until(Duration::from_secs(10), || workers(&fleet.balancer.log())
            == 2),
        "HAProxy did not reload:\n{}",
        fleet.balancer.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let sessions = load.stop();
    let failed = report("HAProxy reload (master-worker, SIGUSR2)", &sessions);
    for (i, t) in long.into_iter().enumerate() {
        t.join()
            .expect("long transfer thread")
            .unwrap_or_else(|e| panic!("long transfer {i} across the reload: {e}"));
    }
    println!("  3 long transfers (1 MiB each) across the reload: byte-exact");
    assert!(
        failed.is_empty(),
        "sessions failed across a reload: {:?}",
        failed.iter().map(|s| &s.error).collect::<Vec<_>>()
    );
    // The old worker left once its connections (the long transfers) ended.
    assert!(
        poll_until(Duration::from_secs(10), || fleet
            .balancer
            .log()
            .contains("Former worker")),
        "the old HAProxy worker did not finish:\n{}",
        fleet.balancer.log()
    );
}

/// Set by [`fleet_fault_packet_loss_and_delay`] for the test it runs in a new network
/// namespace.
const NETNS_ENV: &str = "SOCKSGATE_FLEET_NETNS";

/// The whole fleet in a network namespace of its own with 1 % loss and 50 ms delay on `lo`:
/// this test re-runs [`packet_loss_and_delay_in_namespace`] under `unshare -n`.
#[test]
fn fleet_fault_packet_loss_and_delay() {
    let test = "fleet_fault_packet_loss_and_delay";
    let Some(_) = tools::require(test, &["haproxy", "unshare", "ip", "tc", "iptables"]) else {
        return;
    };
    let exe = std::env::current_exe().expect("test executable");
    let out = tools::run(
        Command::new("unshare")
            .args(["--net", "--"])
            .arg(exe)
            .args([
                "fleet_faults::packet_loss_and_delay_in_namespace",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NETNS_ENV, "1")
            .env("SOCKSGATE_BIN", socksgate_tests::socksgate::bin()),
        b"",
        TIMEOUT * 2,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("fleet fault") || l.starts_with("  ") || l.starts_with("netem:"))
    {
        println!("{line}");
    }
    out.assert_success(&format!("{test}: the fleet in its namespace\n{stdout}"));
    assert!(
        stdout.contains("1 passed"),
        "the namespace test did not run:\n{stdout}"
    );
}

/// Run by [`fleet_fault_packet_loss_and_delay`] inside its own network namespace (refuses to
/// run elsewhere: it changes `lo`'s queueing).
#[test]
#[ignore = "run by fleet_fault_packet_loss_and_delay in a network namespace of its own"]
fn packet_loss_and_delay_in_namespace() {
    assert!(
        std::env::var_os(NETNS_ENV).is_some(),
        "run fleet_fault_packet_loss_and_delay instead: this one must be in a new namespace"
    );
    let run = |cmd: &[&str]| {
        Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    };
    // An Ethernet-sized MTU: loopback's 64 KiB packets would make 1 % loss of packets a
    // much smaller loss of data.
    assert!(
        run(&["ip", "link", "set", "lo", "mtu", "1500", "up"])
            .status
            .success()
    );
    let netem = run(&[
        "tc", "qdisc", "add", "dev", "lo", "root", "netem", "loss", "1%", "delay", "50ms",
    ]);
    let (fault, dropped): (&str, fn() -> Option<u64>) = if netem.status.success() {
        println!("\nnetem: 1 % loss and 50 ms delay on lo (MTU 1500)");
        ("netem 1 % loss, 50 ms delay", netem_drops)
    } else {
        // Kernels built without sch_netem (some VM kernels): the same loss with netfilter's
        // random drop on every packet lo delivers; there is no other way to delay.
        let why = String::from_utf8_lossy(&netem.stderr).trim().to_owned();
        let drop = run(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            "lo",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.01",
            "-j",
            "DROP",
        ]);
        assert!(
            drop.status.success(),
            "neither netem ({why}) nor iptables' statistic match: {}",
            String::from_utf8_lossy(&drop.stderr)
        );
        println!(
            "\nnetem: not in this kernel (tc: {why}); 1 % loss with iptables' statistic match \
             instead, no added delay (lo MTU 1500)"
        );
        (
            "1 % loss (iptables; no netem for the delay)",
            iptables_drops,
        )
    };
    let test = "packet_loss_and_delay_in_namespace";
    let fleet = three_nodes(test, "", false).expect("haproxy");
    let echo = origin::echo();
    let (proxy, echo_addr) = (fleet.balancer.addr(), echo.addr());
    // Four client threads, five 256 KiB round trips each.
    let started = Instant::now();
    let threads: Vec<JoinHandle<Vec<Session>>> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                (0..5u64)
                    .map(|n| {
                        let started = Instant::now();
                        let error = echo_session(
                            proxy,
                            echo_addr,
                            (t << 32) | n,
                            256 * 1024,
                            Duration::ZERO,
                        )
                        .err();
                        Session { started, error }
                    })
                    .collect()
            })
        })
        .collect();
    let sessions: Vec<Session> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let failed = report(fault, &sessions);
    let dropped = dropped().expect("the drop counter");
    println!(
        "  {} transfers of 256 KiB in {:.1} s; {dropped} packets dropped",
        sessions.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        dropped > 0,
        "no packet was dropped: the fault was not applied"
    );
    if !failed.is_empty() {
        // What the nodes and the balancer saw of the failures.
        for (i, node) in fleet.nodes.iter().enumerate() {
            for line in node.log().lines().filter(|l| l.contains("error=")) {
                println!("  node {i}: {line}");
            }
        }
        println!("  haproxy:\n{}", fleet.balancer.log());
    }
    assert!(
        failed.is_empty(),
        "transfers failed or differed under loss: {:?}",
        failed.iter().map(|s| &s.error).collect::<Vec<_>>()
    );
}

/// Packets netem dropped on `lo` (`tc -s qdisc`: "dropped N").
fn netem_drops() -> Option<u64> {
    let out = Command::new("tc")
        .args(["-s", "qdisc", "show", "dev", "lo"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let after = text.split("dropped ").nth(1)?;
    after.split([',', ' ']).next()?.parse().ok()
}

/// Packets the statistic rule dropped (`iptables -L INPUT -v -x`: the first column).
fn iptables_drops() -> Option<u64> {
    let out = Command::new("iptables")
        .args(["-L", "INPUT", "-v", "-n", "-x"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("statistic"))?;
    line.split_whitespace().next()?.parse().ok()
}
