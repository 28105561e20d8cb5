//! Issue 7, item 4: faults. An upstream that resets mid-transfer, an upstream that never
//! answers (connect timeout), a name that does not resolve, a client that vanishes without a
//! FIN, and file-descriptor exhaustion (a lowered RLIMIT_NOFILE). In every case the server
//! stays up, serves new clients once resources are free again, gives back what the failed
//! sessions held, and logs each event once (no log floods).
#![forbid(unsafe_code)]

use core::net::{Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, SockRef, Socket, Type};
use socksgate_tests::reliability::{self, End, fd_count, read_until_end};
use socksgate_tests::socks::{self, Client, Dst, Method, ReplyCode, Socks4Code};
use socksgate_tests::socksgate::Server;
use socksgate_tests::{body, origin, tools};

/// Bound for anything that should be prompt on loopback, even on a loaded machine.
const PROMPT: Duration = Duration::from_secs(10);

/// Closes `stream` with a reset instead of a FIN (SO_LINGER 0).
fn reset(stream: TcpStream) {
    SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

/// A SOCKS5 CONNECT to the IPv4 `dst` on a plain stream, reading exactly the replies (so no
/// relayed byte is consumed with them); panics unless it succeeds.
#[track_caller]
fn raw_connect5(proxy: SocketAddr, dst: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&proxy, PROMPT).expect("connect to the proxy");
    s.set_read_timeout(Some(PROMPT)).expect("timeout");
    let mut msg = socks::encode::greeting(&[Method::NoAuth]);
    msg.extend(socks::encode::request(
        socks::Command::Connect,
        &Dst::Ip(dst),
    ));
    s.write_all(&msg).expect("greeting and request");
    // Method reply (2) and a reply with an IPv4 BND (10): the proxy answers from 127.0.0.1.
    let mut got = [0u8; 12];
    s.read_exact(&mut got).expect("replies");
    assert_eq!(
        socks::decode::method(&got[..2]),
        Ok(Some((Method::NoAuth, 2)))
    );
    let reply = socks::decode::reply5(&got[2..]).expect("a SOCKS5 reply");
    match reply {
        Some((r, 10)) if r.rep == ReplyCode::Succeeded => s,
        other => panic!("CONNECT {dst}: {other:?} from {got:?}"),
    }
}

/// The server still relays: a fresh client gets an echo through it.
#[track_caller]
fn assert_serves(server: &mut Server) {
    server.assert_running();
    let echo = origin::echo();
    let mut c = socks::connect5(server.addr(), &Dst::Ip(echo.addr()));
    c.send(b"still here");
    assert_eq!(c.read_exact(10), b"still here");
}

/// Waits until the server is back to `baseline` fds; panics with the count otherwise.
#[track_caller]
fn assert_fds_back(server: &Server, baseline: usize) {
    let n = reliability::settle_fds(server.pid(), baseline, PROMPT * 2);
    assert!(
        n <= baseline,
        "server holds {n} fds after the sessions ended, baseline {baseline}"
    );
}

/// The server's fd count once it is idle (after one served session, so lazily created
/// resources exist).
fn idle_fds(server: &mut Server) -> usize {
    assert_serves(server);
    let pid = server.pid();
    let mut last = usize::MAX;
    // Stable for 300 ms.
    reliability::poll_until(PROMPT, || {
        let a = fd_count(pid).unwrap_or(usize::MAX);
        std::thread::sleep(Duration::from_millis(300));
        let b = fd_count(pid).unwrap_or(usize::MAX);
        last = b;
        a == b
    });
    last
}

#[track_caller]
fn assert_logged_at_most(server: &Server, needle: &str, max: usize, what: &str) {
    let log = server.log();
    let needle = needle.to_lowercase();
    let hits: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains(&needle))
        .collect();
    assert!(
        hits.len() <= max,
        "{what}: {} log lines mention {needle:?} (at most {max} expected); the first:\n{}",
        hits.len(),
        hits[..hits.len().min(5)].join("\n")
    );
}

#[test]
fn upstream_reset_mid_transfer() {
    let mut server = Server::start();
    let baseline = idle_fds(&mut server);
    // An origin that sends 256 KiB, then resets the connection once the client has said it
    // is receiving (a reset before the proxy has seen its connect complete is a failed
    // CONNECT, reply 5, not a reset mid-transfer).
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    const SENT: usize = 256 * 1024;
    let origin = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.write_all(&body(SENT)).expect("write to proxy");
        let mut receiving = [0u8; 1];
        s.read_exact(&mut receiving).expect("the client's signal");
        reset(s);
    });
    let mut c = raw_connect5(server.addr(), SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    c.write_all(b"r").expect("signal the origin");
    let end = read_until_end(&mut c, Instant::now() + PROMPT);
    origin.join().expect("origin");
    assert!(
        end.closed(),
        "the client must see the connection end after the upstream reset: {:?} after {} bytes",
        match &end {
            End::Open(_) => "still open".to_string(),
            other => format!("{other:?}").chars().take(40).collect(),
        },
        end.bytes().len()
    );
    let got = end.bytes();
    assert!(got.len() <= SENT);
    assert!(
        got == &body(SENT)[..got.len()],
        "bytes relayed before the reset differ from what the origin sent"
    );
    drop(c);
    assert_fds_back(&server, baseline);
    assert_serves(&mut server);
    assert_logged_at_most(&server, &format!(":{port}"), 3, "upstream reset");
}

/// A loopback listener that never accepts, with its accept queue full, so new SYNs to it are
/// dropped: connecting to it hangs until the connector gives up. Holds its sockets.
#[derive(Debug)]
struct Blackhole {
    _listener: Socket,
    _fillers: Vec<TcpStream>,
    addr: SocketAddr,
}

impl Blackhole {
    fn new() -> Self {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        listener
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        listener.listen(1).expect("listen(1)");
        let addr = listener
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        // Fill the accept queue (backlog 1 holds two) until a connect no longer completes.
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => fillers.push(s),
                Err(_) => {
                    return Self {
                        _listener: listener,
                        _fillers: fillers,
                        addr,
                    };
                }
            }
        }
        panic!("the listen(1) queue never filled: connects to {addr} keep completing");
    }
}

#[test]
fn upstream_never_answers_gets_ttl_expired_after_connect_timeout() {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    let mut server = Server::builder()
        .config("[timeouts]\nconnect = 1\n")
        .start();
    let baseline = idle_fds(&mut server);
    let hole = Blackhole::new();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let start = Instant::now();
    let r = c.request5(socks::Command::Connect, &Dst::Ip(hole.addr));
    let took = start.elapsed();
    assert_eq!(r.rep, ReplyCode::TtlExpired, "{r:?}");
    assert!(
        took >= CONNECT_TIMEOUT - Duration::from_millis(100) && took <= CONNECT_TIMEOUT * 5,
        "REP 6 after {took:?}; the connect timeout is {CONNECT_TIMEOUT:?}"
    );
    c.assert_closed(PROMPT);
    // The same through SOCKS4: CD 91.
    let mut c4 = Client::connect(server.addr());
    let r4 = c4.request4(socks::Command::Connect, &Dst::Ip(hole.addr), "");
    assert_eq!(r4.cd, Socks4Code::Rejected, "{r4:?}");
    c4.assert_closed(PROMPT);
    assert_fds_back(&server, baseline);
    assert_serves(&mut server);
    let port = format!(":{}", hole.addr.port());
    assert_logged_at_most(&server, &port, 4, "connect timeouts");
}

/// A name under the reserved `.invalid` TLD (RFC 6761 §6.4). The server's resolver (hickory)
/// answers NXDOMAIN for `.invalid` itself, without sending a query (checked with strace: no
/// connect or sendto besides the client's socket), so nothing leaves the machine. (A label
/// longer than 63 octets would not do: the resolver rejects such a name as malformed, which
/// is a resolver failure, REP 1, not a DNS failure.)
fn unresolvable() -> String {
    "no-such-host.reliability.invalid".into()
}

#[test]
fn dns_failure_gets_host_unreachable() {
    let mut server = Server::start();
    let baseline = idle_fds(&mut server);
    let name = unresolvable();
    let mut handles = Vec::new();
    for i in 0..10 {
        let (addr, name) = (server.addr(), name.clone());
        handles.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            if i % 2 == 0 {
                c.greet_no_auth();
                let r = c.request5(socks::Command::Connect, &Dst::Name(name, 80));
                assert_eq!(r.rep, ReplyCode::HostUnreachable, "{r:?}");
            } else {
                let r = c.request4(socks::Command::Connect, &Dst::Name(name, 80), "");
                assert_eq!(r.cd, Socks4Code::Rejected, "{r:?}");
            }
            c.assert_closed(PROMPT);
        }));
    }
    for h in handles {
        h.join().expect("client");
    }
    assert_fds_back(&server, baseline);
    assert_serves(&mut server);
    // Each failed request: at most its request line and its outcome line.
    assert_logged_at_most(&server, &name, 20, "ten DNS failures");
}

/// An origin that streams data until its peer goes away, counting connections that ended.
fn endless_source() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ended = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ended);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
                let chunk = body(16 * 1024);
                while s.write_all(&chunk).is_ok() {}
                counter.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, ended)
}

#[test]
fn client_vanishing_without_fin_releases_the_session() {
    let mut server = Server::start();
    let baseline = idle_fds(&mut server);
    let (source, ended) = endless_source();
    // Mid-transfer: data flowing towards the client, which resets.
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = socks::connect5(server.addr(), &Dst::Ip(source));
        let got = c.read_exact(64 * 1024);
        assert_eq!(got, body(16 * 1024).repeat(4), "relayed bytes");
        clients.push(c);
    }
    for c in clients {
        reset(c.stream().try_clone().expect("clone"));
        drop(c);
    }
    assert!(
        reliability::poll_until(PROMPT, || ended.load(Ordering::SeqCst) == 5),
        "the server kept {} of 5 upstream connections open after their clients reset",
        5 - ended.load(Ordering::SeqCst)
    );
    // Mid-handshake: greeting sent, then a reset.
    for _ in 0..5 {
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        s.write_all(&socks::encode::greeting(&[Method::NoAuth]))
            .expect("greeting");
        let mut m = [0u8; 2];
        s.read_exact(&mut m).expect("method reply");
        reset(s);
    }
    assert_fds_back(&server, baseline);
    assert_serves(&mut server);
    assert_logged_at_most(
        &server,
        &format!(":{}", source.port()),
        10,
        "five vanished clients",
    );
}

/// Lowers the running server's RLIMIT_NOFILE to `n` with util-linux `prlimit --pid`.
fn limit_fds(test: &str, pid: u32, n: usize) -> bool {
    let Some(prlimit) = tools::require(test, &["prlimit"]) else {
        return false;
    };
    tools::run(
        Command::new(&prlimit[0])
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={n}:{n}")),
        b"",
        PROMPT,
    )
    .assert_success("prlimit");
    true
}

/// Lowers the server's fd limit to 64, opens twice as many CONNECT sessions as it can hold,
/// keeps them for `hold`, closes them. Returns false if `prlimit` is missing (skip allowed).
fn exhaust(test: &str, server: &mut Server, hold: Duration) -> bool {
    const LIMIT: usize = 64;
    let echo = origin::echo();
    if !limit_fds(test, server.pid(), LIMIT) {
        return false;
    }
    let mut req = socks::encode::greeting(&[Method::NoAuth]);
    req.extend(socks::encode::request(
        socks::Command::Connect,
        &Dst::Ip(echo.addr()),
    ));
    let mut clients = Vec::new();
    for _ in 0..LIMIT * 2 {
        // The kernel completes these handshakes into the listen queue even when the server
        // cannot accept; greeting and request are pipelined.
        let mut s = TcpStream::connect_timeout(&server.addr(), PROMPT).expect("connect");
        s.write_all(&req).expect("request");
        clients.push(s);
    }
    let pid = server.pid();
    assert!(
        reliability::poll_until(PROMPT, || fd_count(pid).is_some_and(|n| n + 2 >= LIMIT)),
        "the server never reached its fd limit ({:?} open)",
        fd_count(pid)
    );
    // The exhaustion episode itself: the server must ride it out.
    std::thread::sleep(hold);
    server.assert_running();
    assert!(reliability::alive(pid));
    drop(clients);
    true
}

#[test]
fn fd_exhaustion_server_survives_and_recovers() {
    const TEST: &str = "fd_exhaustion_server_survives_and_recovers";
    let mut server = Server::start();
    let baseline = idle_fds(&mut server);
    if !exhaust(TEST, &mut server, Duration::from_secs(3)) {
        return;
    }
    // Once the clients are gone the server must serve again (bounded, polled).
    let echo = origin::echo();
    let served = reliability::poll_until(PROMPT * 2, || {
        let Ok(s) = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut s = s;
        let mut req = socks::encode::greeting(&[Method::NoAuth]);
        req.extend(socks::encode::request(
            socks::Command::Connect,
            &Dst::Ip(echo.addr()),
        ));
        req.extend_from_slice(b"ping");
        if s.write_all(&req).is_err() {
            return false;
        }
        // Method reply (2), a reply with an IPv4 BND (10), the echo (4).
        let mut got = [0u8; 2 + 10 + 4];
        s.read_exact(&mut got).is_ok()
            && socks::decode::method(&got[..2]) == Ok(Some((Method::NoAuth, 2)))
            && matches!(
                socks::decode::reply5(&got[2..12]),
                Ok(Some((r, 10))) if r.rep == ReplyCode::Succeeded
            )
            && &got[12..] == b"ping"
    });
    assert!(
        served,
        "the server does not serve new clients after fds were freed"
    );
    assert_fds_back(&server, baseline);
    assert_serves(&mut server);
}

#[test]
fn fd_exhaustion_logged_once() {
    const TEST: &str = "fd_exhaustion_logged_once";
    let mut server = Server::start();
    if !exhaust(TEST, &mut server, Duration::from_secs(3)) {
        return;
    }
    // One exhaustion episode of 3 s: a line when it starts (and perhaps one when it ends or a
    // periodic summary), not one per failed accept() or per back-off tick.
    assert_logged_at_most(&server, "accept", 3, "one 3-second fd exhaustion");
}
