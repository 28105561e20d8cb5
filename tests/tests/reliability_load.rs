//! Issue 7, item 3: load and soak.
//!
//! * Many concurrent proxied connections (200 for 5 s; 1 000 for 60 s with `SOCKSGATE_SOAK=1`)
//!   move seeded pseudo-random data both ways through the server to an echo origin; every
//!   byte is compared end to end (none lost, duplicated or reordered) and each stream's
//!   checksum is reported. Afterwards the server's open fds return to the post-warm-up
//!   baseline and its RSS to within 2 MiB of it.
//! * UDP associations (500; 10 000 with `SOCKSGATE_SOAK=1`) are opened, used for one echoed
//!   datagram and closed; the server must not keep a socket of any of them.
#![forbid(unsafe_code)]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use socksgate_tests::reliability::{self, Rng, fd_count, pick, rss_kib};
use socksgate_tests::socks::{self, Client, Dst, ReplyCode, decode, encode};
use socksgate_tests::socksgate::Server;
use socksgate_tests::{origin, tools};

/// RSS may end at most this much over the post-warm-up baseline.
const RSS_TOLERANCE_KIB: u64 = 2048;
/// How long resources may take to be given back after the load ends.
const SETTLE: Duration = Duration::from_secs(30);

/// The soft RLIMIT_NOFILE of `pid` (from `/proc/PID/limits`).
fn nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Makes sure `pid` may open `need` fds, raising its soft limit with `prlimit` if needed.
#[track_caller]
fn ensure_nofile(test: &str, pid: u32, need: u64) {
    if nofile(pid).is_some_and(|n| n >= need) {
        return;
    }
    let Some(prlimit) = tools::require(test, &["prlimit"]) else {
        panic!(
            "{test}: process {pid} may open only {:?} fds, {need} needed",
            nofile(pid)
        );
    };
    tools::run(
        Command::new(&prlimit[0])
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={need}")),
        b"",
        Duration::from_secs(10),
    )
    .assert_success("prlimit");
}

/// What one connection did.
#[derive(Debug, Default)]
struct Stream {
    bytes: u64,
    checksum: u64,
}

/// FNV-1a over the bytes, continued from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One proxied connection for `duration` after `start` (all connections wait at it): sends
/// seeded chunks and reads their echo with one chunk in flight each way, then half-closes and
/// expects EOF. Returns the byte count and the checksum of the stream received.
fn one_connection(
    proxy: SocketAddr,
    echo: SocketAddr,
    seed: u64,
    start: &Barrier,
    duration: Duration,
) -> Result<Stream, String> {
    let conn = std::panic::catch_unwind(|| socks::connect5(proxy, &Dst::Ip(echo)));
    // Wait even after a failed handshake, so the others are not held up forever.
    start.wait();
    let mut c = conn.map_err(|p| format!("seed {seed}: handshake: {}", panic_text(&*p)))?;
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = Instant::now() + duration;
        let mut tx = Rng::new(seed);
        let mut rx = Rng::new(seed);
        let (mut sent_sum, mut got_sum) = (0xcbf2_9ce4_8422_2325u64, 0xcbf2_9ce4_8422_2325u64);
        let mut bytes = 0u64;
        let mut in_flight: Option<usize> = None;
        loop {
            let more = Instant::now() < deadline;
            let next = more.then(|| {
                let len = tx.range(1, 16 * 1024);
                let chunk = tx.bytes(len);
                sent_sum = fnv(sent_sum, &chunk);
                c.send(&chunk);
                len
            });
            if let Some(len) = in_flight {
                let got = c.read_exact(len);
                let want = rx_chunk(&mut rx);
                if got != want {
                    let at = got.iter().zip(&want).position(|(a, b)| a != b);
                    return Err(format!(
                        "seed {seed}: echoed chunk of {len} bytes differs at {at:?} after {bytes} \
                         good bytes"
                    ));
                }
                got_sum = fnv(got_sum, &got);
                bytes += len as u64;
            }
            in_flight = next;
            if in_flight.is_none() {
                break;
            }
        }
        c.shutdown_write();
        let rest = c.read_to_end();
        if !rest.is_empty() {
            return Err(format!(
                "seed {seed}: {} extra bytes before EOF",
                rest.len()
            ));
        }
        if got_sum != sent_sum {
            return Err(format!(
                "seed {seed}: checksum {got_sum:#x}, sent {sent_sum:#x}"
            ));
        }
        Ok(Stream {
            bytes,
            checksum: got_sum,
        })
    }));
    run.unwrap_or_else(|p| Err(format!("seed {seed}: {}", panic_text(&*p))))
}

/// The message of a caught panic.
fn panic_text(p: &(dyn core::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_default()
}

/// The next chunk the sender with the same seed produced.
fn rx_chunk(rx: &mut Rng) -> Vec<u8> {
    let len = rx.range(1, 16 * 1024);
    rx.bytes(len)
}

/// Runs `n` concurrent connections for `duration`; returns their results, the server's fd
/// count sampled while all were open and its RSS halfway through.
fn load(
    server: &Server,
    echo: SocketAddr,
    n: usize,
    duration: Duration,
    seed: u64,
) -> (Vec<Result<Stream, String>>, usize, u64) {
    let start = Arc::new(Barrier::new(n + 1));
    let results = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let proxy = server.addr();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (start, results) = (Arc::clone(&start), Arc::clone(&results));
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let r = one_connection(proxy, echo, seed + i as u64, &start, duration);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                })
                .expect("spawn client thread")
        })
        .collect();
    // Every connection is established once the barrier opens (a failed handshake panics in
    // its thread before the barrier, which would hang it: bound that with the join below).
    start.wait();
    let during = fd_count(server.pid()).unwrap_or(0);
    // RSS halfway through, for the report.
    std::thread::sleep(duration / 2);
    let rss_during = rss_kib(server.pid()).unwrap_or(0);
    for t in threads {
        t.join().expect("client thread");
    }
    let results = core::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    (results, during, rss_during)
}

#[test]
fn concurrent_connections_checksummed_end_to_end() {
    const TEST: &str = "concurrent_connections_checksummed_end_to_end";
    let n = pick(200, 1000);
    let duration = pick(Duration::from_secs(5), Duration::from_secs(60));
    // Client sockets, plus the echo origin's, plus slack.
    ensure_nofile(TEST, std::process::id(), 2 * n as u64 + 256);
    let mut server = Server::start();
    ensure_nofile(TEST, server.pid(), 2 * n as u64 + 256);
    let echo = origin::echo();

    // Warm-up at the same concurrency: the baseline is that of a server that has held this
    // many busy connections (long enough in the soak for relay buffers to reach full size).
    let warm_up = pick(Duration::from_secs(1), Duration::from_secs(10));
    let (warm, _, rss_warm) = load(&server, echo.addr(), n, warm_up, 1_000_000);
    let warm_failures: Vec<_> = warm.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        warm_failures.is_empty(),
        "warm-up failures: {warm_failures:?}"
    );
    let pid = server.pid();
    let fds0 = {
        let mut last = usize::MAX;
        reliability::poll_until(SETTLE, || {
            let a = fd_count(pid).unwrap_or(usize::MAX);
            std::thread::sleep(Duration::from_millis(300));
            last = fd_count(pid).unwrap_or(usize::MAX);
            a == last
        });
        last
    };
    let rss0 = rss_kib(pid).expect("RSS");

    let begun = Instant::now();
    let (results, during, rss_during) = load(&server, echo.addr(), n, duration, 0);
    let took = begun.elapsed();
    server.assert_running();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let streams: Vec<&Stream> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let total: u64 = streams.iter().map(|s| s.bytes).sum();
    let idle = streams.iter().filter(|s| s.bytes == 0).count();
    let combined = streams.iter().fold(0u64, |h, s| h ^ s.checksum);
    println!(
        "{TEST}: {n} connections for {duration:?} ({took:?} in all): {} ok, {} failed, {total} \
         bytes each way, combined checksum {combined:#018x}; server fds {fds0} idle, {during} \
         with all open",
        streams.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} connections failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(streams.len(), n);
    assert_eq!(idle, 0, "{idle} connections moved no data at all");
    assert!(
        during >= fds0 + 2 * n,
        "the server had {during} fds open with {n} connections established (idle {fds0}): \
         they were not concurrent"
    );

    let fds = reliability::settle_fds(pid, fds0, SETTLE);
    let rss = reliability::settle_rss(pid, rss0, RSS_TOLERANCE_KIB, SETTLE);
    println!(
        "{TEST}: after: fds {fds0} -> {fds}, RSS {rss_warm} KiB (warm-up, halfway) -> {rss0} \
         KiB (baseline) -> {rss_during} KiB (halfway) -> {rss} KiB"
    );
    assert!(
        fds <= fds0,
        "{fds} fds open after the load, baseline {fds0}"
    );
    assert!(
        rss <= rss0 + RSS_TOLERANCE_KIB,
        "RSS {rss} KiB after the load, baseline {rss0} KiB (tolerance {RSS_TOLERANCE_KIB} KiB)"
    );
}

/// One UDP association: ASSOCIATE, one datagram to the echo and back through the relay, close.
fn one_association(proxy: SocketAddr, echo: SocketAddr, i: usize) -> Result<(), String> {
    let run = std::panic::catch_unwind(|| -> Result<(), String> {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
        let mut c = Client::connect(proxy);
        c.greet_no_auth();
        let r = c.request5(
            socks::Command::UdpAssociate,
            &Dst::Ip(udp.local_addr().map_err(|e| e.to_string())?),
        );
        if r.rep != ReplyCode::Succeeded {
            return Err(format!("association {i}: UDP ASSOCIATE reply {r:?}"));
        }
        let mut relay = r.bound_addr();
        if relay.ip().is_unspecified() {
            relay.set_ip(proxy.ip());
        }
        let payload = format!("association {i}").into_bytes();
        let datagram = encode::udp_datagram(&Dst::Ip(echo), &payload);
        udp.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            udp.send_to(&datagram, relay).map_err(|e| e.to_string())?;
            let Ok((n, from)) = udp.recv_from(&mut buf) else {
                continue;
            };
            if from != relay {
                return Err(format!(
                    "association {i}: datagram from {from}, relay is {relay}"
                ));
            }
            let (frag, src, at) = decode::udp_datagram(&buf[..n])?;
            if frag != 0 || src != Dst::Ip(echo) || buf[at..n] != payload[..] {
                return Err(format!(
                    "association {i}: wrong datagram {:?}",
                    &buf[..n.min(64)]
                ));
            }
            return Ok(());
        }
        Err(format!(
            "association {i}: no echo through {relay} after 3 tries"
        ))
    });
    run.unwrap_or_else(|p| Err(format!("association {i}: {}", panic_text(&*p))))
}

#[test]
fn udp_associations_leave_no_sockets() {
    const TEST: &str = "udp_associations_leave_no_sockets";
    let total = pick(500, 10_000);
    const PARALLEL: usize = 16;
    let mut server = Server::start();
    let echo = origin::UdpEcho::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let pid = server.pid();
    // Warm-up, then the idle baseline.
    for i in 0..PARALLEL {
        one_association(server.addr(), echo.addr(), i).unwrap_or_else(|e| panic!("{e}"));
    }
    let fds0 = reliability::settle_fds(pid, fd_count(pid).unwrap_or(0), SETTLE);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let peak = Arc::new(AtomicUsize::new(0));
    let begun = Instant::now();
    let proxy = server.addr();
    let echo_addr = echo.addr();
    let threads: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (next, failures, peak) =
                (Arc::clone(&next), Arc::clone(&failures), Arc::clone(&peak));
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    if let Err(e) = one_association(proxy, echo_addr, i) {
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        if f.len() < 20 {
                            f.push(e);
                        }
                    }
                    if i % 50 == 0 {
                        peak.fetch_max(fd_count(pid).unwrap_or(0), Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("association thread");
    }
    server.assert_running();
    let failures = core::mem::take(&mut *failures.lock().unwrap_or_else(|e| e.into_inner()));
    let fds = reliability::settle_fds(pid, fds0, SETTLE);
    println!(
        "{TEST}: {total} associations in {:?}, {PARALLEL} at a time; server fds {fds0} before, \
         peak {} sampled, {fds} after; echo received {} datagrams",
        begun.elapsed(),
        peak.load(Ordering::SeqCst),
        echo.received()
    );
    assert!(
        failures.is_empty(),
        "associations failed; first: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        fds <= fds0,
        "{fds} fds open after {total} associations were closed, baseline {fds0}: leaked sockets"
    );
}
