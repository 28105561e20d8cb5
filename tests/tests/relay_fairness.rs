//! A bulk transfer does not hold the server's worker thread: on a one-worker runtime
//! (`TOKIO_WORKER_THREADS=1`), a small session's echoes keep coming back while a download runs
//! beside it, unlimited or under a traffic limit far above what loopback moves (which never
//! makes it wait for tokens). It fails for a relay whose bulk direction keeps the worker for
//! as long as its source has data.
#![forbid(unsafe_code)]

use core::time::Duration;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use socksgate_tests::origin;
use socksgate_tests::socks::{Client, Command, Dst, ReplyCode};
use socksgate_tests::socksgate::{Server, ServerBuilder};

/// A CONNECT through `proxy` to `dst`, ready to relay.
fn connect(proxy: std::net::SocketAddr, dst: std::net::SocketAddr) -> Client {
    let mut c = Client::connect(proxy);
    c.greet_no_auth();
    let r = c.request5(Command::Connect, &Dst::Ip(dst));
    assert_eq!(r.rep, ReplyCode::Succeeded, "CONNECT {dst}");
    c
}

/// A TCP origin that sends to each client as fast as it takes the bytes, until it goes away.
fn firehose() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let chunk = vec![0x5a_u8; 256 * 1024];
                while conn.write_all(&chunk).is_ok() {}
            });
        }
    });
    addr
}

/// How long the echoes are measured.
const MEASURE: Duration = Duration::from_secs(3);
/// An echo's round trip that the machine's load alone may cause (other processes' time
/// slices); only what is beyond it counts as waiting behind the download.
const SCHEDULER: Duration = Duration::from_millis(20);

#[test]
fn a_bulk_download_does_not_stall_a_small_session_on_the_same_worker() {
    echoes_beside_a_download(Server::builder());
}

#[test]
fn a_limited_bulk_download_does_not_stall_a_small_session_on_the_same_worker() {
    // 1 TB/s each way, per session: every session runs the limited relay loops, and no grant
    // ever waits for tokens.
    echoes_beside_a_download(
        Server::builder().config("[[traffic]]\nper = \"session\"\nup = \"1T\"\ndown = \"1T\"\n"),
    );
}

/// Measures a small session's 1-byte echoes through a one-worker `server` for [`MEASURE`]
/// while a download runs through it, and fails if they waited behind the download.
fn echoes_beside_a_download(server: ServerBuilder) {
    let server = server
        .envs([("TOKIO_WORKER_THREADS".to_owned(), "1".to_owned())])
        .start();
    let echo = origin::echo();
    let mut small = connect(server.addr(), echo.addr());
    // Warm up the small session before the download starts.
    small.send(b"x");
    assert_eq!(small.read_exact(1), b"x");

    let bulk = connect(server.addr(), firehose());
    let stop = Arc::new(AtomicBool::new(false));
    let downloaded = Arc::new(AtomicU64::new(0));
    let sink = {
        let (stop, downloaded) = (Arc::clone(&stop), Arc::clone(&downloaded));
        let mut stream: TcpStream = bulk.stream().try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => downloaded.fetch_add(n as u64, Ordering::Relaxed),
                };
            }
        })
    };
    // Let the download reach full speed (its pipes grow to bulk size).
    let started = Instant::now();
    while downloaded.load(Ordering::Relaxed) < 256 << 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the download did not get going"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut rtts = Vec::new();
    let before = downloaded.load(Ordering::Relaxed);
    let measuring = Instant::now();
    while measuring.elapsed() < MEASURE {
        let sent = Instant::now();
        small.send(b"y");
        assert_eq!(small.read_exact(1), b"y");
        rtts.push(sent.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    }
    let during = downloaded.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    drop(bulk);
    sink.join().unwrap();

    rtts.sort();
    // Time spent waiting beyond what a loaded two-core machine's scheduler alone explains.
    let stalled: Duration = rtts.iter().map(|r| r.saturating_sub(SCHEDULER)).sum();
    eprintln!(
        "{} echoes during {} MiB of download: median {:?}, p99 {:?}, max {:?}; {stalled:?} \
         beyond {SCHEDULER:?} each",
        rtts.len(),
        during >> 20,
        rtts[rtts.len() / 2],
        rtts[rtts.len() * 99 / 100],
        rtts[rtts.len() - 1],
    );
    assert!(during > 64 << 20, "the download ran during the echoes");
    assert!(
        stalled < MEASURE / 20,
        "the echoes waited {stalled:?} beyond {SCHEDULER:?} each in {MEASURE:?} beside a \
         bulk download (longest {:?})",
        rtts[rtts.len() - 1]
    );
}
