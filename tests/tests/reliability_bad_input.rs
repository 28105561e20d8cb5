//! Issue 7, item 1: bad input never costs other users.
//!
//! For a while (15 s; 120 s with `SOCKSGATE_SOAK=1`) two servers — one without authentication
//! (SOCKS4, 4a and 5 fields) and one requiring RFC 1929 (username/password fields) — receive
//! random bytes, truncated and oversized messages and every invalid field, each built byte by
//! byte, plus waves of 300 slowloris connections that send one byte and wait. Meanwhile real
//! curl sessions run continuously through both. Checked:
//!
//! * every curl fetch succeeds with the exact body;
//! * every bad connection gets exactly the reply the protocol requires (parsed with
//!   socksgate-core's parsers) and is then closed, well before the handshake timeout;
//! * every slowloris connection is closed by the server (EOF or reset, nothing sent) within
//!   20 s of opening — the handshake timeout is 10 s by default;
//! * afterwards the servers' open file descriptors return to the post-warm-up baseline and
//!   their RSS to within 2 MiB of it.
#![forbid(unsafe_code)]

use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use socksgate_tests::free_port;
use socksgate_tests::reliability::{
    self, CurlLoop, CurlMode, End, Rng, fd_count, pick, read_until_end, rss_kib,
};
use socksgate_tests::socks::{self, Command, Method, ReplyCode, Socks4Code, decode};
use socksgate_tests::socksgate::Server;

const USER: &str = "alice";
const PASS: &str = "s3cret-pw";

/// How long a bad connection may take to get its reply and be closed. Well under the 10 s
/// handshake timeout, so a close that only came from the timeout is caught.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Slowloris connections per wave.
const SLOWLORIS: usize = 300;
/// Each slowloris connection must be closed within this long of opening.
const SLOWLORIS_CLOSED_WITHIN: Duration = Duration::from_secs(20);
/// RSS may end at most this much over the post-warm-up baseline.
const RSS_TOLERANCE_KIB: u64 = 2048;
/// Bad connections per second per worker (keeps TIME_WAIT entries well below the ephemeral
/// port range even in the soak run).
const PER_WORKER_RATE: u32 = 100;

/// What the server must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Close without sending anything.
    Close,
    /// Method selection reply with this METHOD, then close.
    Method(Method),
    /// Method 2 selected, then an RFC 1929 failure status, then close.
    AuthFailure,
    /// Method 0 selected, then nothing, then close (truncated request and EOF).
    MethodThenClose,
    /// Method 0 selected, then a SOCKS5 reply with this REP, then close.
    Reply5(ReplyCode),
    /// A SOCKS4 reply with this CD, then close.
    Reply4(Socks4Code),
}

/// Which server a case targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Open,
    Auth,
}

/// One malformed connection: what to send, whether to half-close after it, what must come back.
#[derive(Debug)]
struct Case {
    target: Target,
    bytes: Vec<u8>,
    half_close: bool,
    expect: Expect,
}

const CASES: &[&str] = &[
    "random bytes",
    "NMETHODS 0",
    "oversized greeting",
    "truncated greeting",
    "truncated request",
    "unknown ATYP",
    "domain length 0",
    "NUL in domain",
    "unknown CMD",
    "SOCKS4 USERID over limit",
    "SOCKS4a hostname over limit",
    "ULEN 0",
    "PLEN 0",
];

/// A SOCKS5 request with an IPv4 destination, byte by byte.
fn request_v4(cmd: u8, port: u16) -> Vec<u8> {
    let mut v = vec![5, cmd, 0, 1, 127, 0, 0, 1];
    v.extend_from_slice(&port.to_be_bytes());
    v
}

fn make_case(name: &'static str, rng: &mut Rng, closed_port: u16) -> Case {
    let port = closed_port.to_be_bytes();
    let mut case = Case {
        target: Target::Open,
        bytes: Vec::new(),
        half_close: false,
        expect: Expect::Close,
    };
    match name {
        "random bytes" => {
            // Any first octet except the two SOCKS versions: the server must close without a
            // reply. Sometimes large (up to 64 KiB) to be oversized as well.
            let len = if rng.range(0, 9) == 0 {
                rng.range(4096, 64 * 1024)
            } else {
                rng.range(1, 600)
            };
            case.bytes = rng.bytes(len);
            while matches!(case.bytes[0], 4 | 5) {
                case.bytes[0] = rng.byte();
            }
            case.half_close = rng.range(0, 1) == 0;
        }
        "NMETHODS 0" => {
            case.bytes = vec![5, 0];
            case.expect = Expect::Method(Method::NoAcceptable);
        }
        "oversized greeting" => {
            // 255 methods (the most there can be), none of them "no authentication".
            case.bytes = vec![5, 255];
            case.bytes.extend(1..=255u8);
            case.expect = Expect::Method(Method::NoAcceptable);
        }
        "truncated greeting" => {
            let n = rng.range(2, 255);
            case.bytes = vec![5, n as u8];
            let have = rng.range(0, n - 1);
            case.bytes.extend(core::iter::repeat_n(0u8, have));
            case.half_close = true;
        }
        "truncated request" => {
            case.bytes = vec![5, 1, 0];
            let req = request_v4(1, closed_port);
            let cut = rng.range(1, req.len() - 1);
            case.bytes.extend_from_slice(&req[..cut]);
            case.half_close = true;
            case.expect = Expect::MethodThenClose;
        }
        "unknown ATYP" => {
            let mut atyp = rng.byte();
            while matches!(atyp, 1 | 3 | 4) {
                atyp = rng.byte();
            }
            case.bytes = vec![5, 1, 0, 5, 1, 0, atyp];
            let tail = rng.range(0, 18);
            case.bytes.extend(rng.bytes(tail));
            case.expect = Expect::Reply5(ReplyCode::AddressTypeNotSupported);
        }
        "domain length 0" => {
            case.bytes = vec![5, 1, 0, 5, 1, 0, 3, 0];
            case.bytes.extend_from_slice(&port);
            case.expect = Expect::Reply5(ReplyCode::GeneralFailure);
        }
        "NUL in domain" => {
            let mut name = b"localhost".to_vec();
            let at = rng.range(0, name.len());
            name.insert(at, 0);
            case.bytes = vec![5, 1, 0, 5, 1, 0, 3, name.len() as u8];
            case.bytes.extend_from_slice(&name);
            case.bytes.extend_from_slice(&port);
            case.expect = Expect::Reply5(ReplyCode::GeneralFailure);
        }
        "unknown CMD" => {
            // 0 and 4..=255, except Tor's RESOLVE extensions 0xF0/0xF1.
            let mut cmd = rng.byte();
            while matches!(cmd, 1..=3 | 0xf0 | 0xf1) {
                cmd = rng.byte();
            }
            case.bytes = vec![5, 1, 0];
            case.bytes.extend(request_v4(cmd, closed_port));
            case.expect = Expect::Reply5(ReplyCode::CommandNotSupported);
        }
        "SOCKS4 USERID over limit" => {
            case.bytes = vec![4, 1, port[0], port[1], 127, 0, 0, 1];
            let len = rng.range(256, 1500);
            case.bytes.extend(core::iter::repeat_n(b'u', len));
            case.expect = Expect::Reply4(Socks4Code::Rejected);
        }
        "SOCKS4a hostname over limit" => {
            case.bytes = vec![4, 1, port[0], port[1], 0, 0, 0, 1];
            case.bytes.extend_from_slice(b"user\0");
            let len = rng.range(256, 1500);
            case.bytes.extend(core::iter::repeat_n(b'h', len));
            case.expect = Expect::Reply4(Socks4Code::Rejected);
        }
        "ULEN 0" => {
            case.target = Target::Auth;
            case.bytes = vec![5, 1, 2, 1, 0, PASS.len() as u8];
            case.bytes.extend_from_slice(PASS.as_bytes());
            case.expect = Expect::AuthFailure;
        }
        "PLEN 0" => {
            case.target = Target::Auth;
            case.bytes = vec![5, 1, 2, 1, USER.len() as u8];
            case.bytes.extend_from_slice(USER.as_bytes());
            case.bytes.push(0);
            case.expect = Expect::AuthFailure;
        }
        other => unreachable!("unknown case {other}"),
    }
    case
}

/// A decoder's answer: `(value, length)`, `None` for "incomplete", or why it is malformed.
type Decoded = Result<Option<(u8, usize)>, String>;

/// Parses `got` against `expect` with the core's parsers; `Err` says what is wrong.
fn check_reply(expect: Expect, got: &[u8]) -> Result<(), String> {
    let mut rest = got;
    let mut take = |what: &str, f: &dyn Fn(&[u8]) -> Decoded| -> Result<u8, String> {
        match f(rest) {
            Ok(Some((v, n))) => {
                rest = &rest[n..];
                Ok(v)
            }
            Ok(None) => Err(format!("{what}: incomplete")),
            Err(e) => Err(format!("{what}: {e}")),
        }
    };
    let method = |b: &[u8]| decode::method(b).map(|o| o.map(|(m, n)| (u8::from(m), n)));
    let status = |b: &[u8]| decode::auth_status(b);
    let reply5 = |b: &[u8]| decode::reply5(b).map(|o| o.map(|(r, n)| (u8::from(r.rep), n)));
    let reply4 = |b: &[u8]| decode::reply4(b).map(|o| o.map(|(r, n)| (u8::from(r.cd), n)));
    match expect {
        Expect::Close => {}
        Expect::Method(m) => {
            let got = take("method reply", &method)?;
            let m = u8::from(m);
            if got != m {
                return Err(format!("METHOD {got:#04x}, want {m:#04x}"));
            }
        }
        Expect::AuthFailure => {
            let got = take("method reply", &method)?;
            if got != 2 {
                return Err(format!("METHOD {got:#04x}, want 0x02"));
            }
            let st = take("RFC 1929 reply", &status)?;
            if st == 0 {
                return Err("RFC 1929 STATUS 0 (success) for a malformed request".into());
            }
        }
        Expect::MethodThenClose => {
            let got = take("method reply", &method)?;
            if got != 0 {
                return Err(format!("METHOD {got:#04x}, want 0x00"));
            }
        }
        Expect::Reply5(code) => {
            let got = take("method reply", &method)?;
            if got != 0 {
                return Err(format!("METHOD {got:#04x}, want 0x00"));
            }
            let (r, code) = (take("SOCKS5 reply", &reply5)?, u8::from(code));
            if r != code {
                return Err(format!("REP {r}, want {code}"));
            }
        }
        Expect::Reply4(cd) => {
            let (r, cd) = (take("SOCKS4 reply", &reply4)?, u8::from(cd));
            if r != cd {
                return Err(format!("CD {r}, want {cd}"));
            }
        }
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected extra bytes {rest:?}"))
    }
}

/// Runs one case against `addr`; `Err` describes a wrong answer.
fn run_case(case: &Case, addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, ANSWER_WITHIN)
        .map_err(|e| format!("connect to the server: {e}"))?;
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(ANSWER_WITHIN));
    let start = Instant::now();
    // The server may close before reading everything (random bytes): a failed write is fine.
    if s.write_all(&case.bytes).is_ok() && case.half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let end = read_until_end(&mut s, start + ANSWER_WITHIN);
    match &end {
        End::Eof(got) => check_reply(case.expect, got),
        // A reset is a close; the reply must still have arrived before it.
        End::Reset(got) if case.expect == Expect::Close || !got.is_empty() => {
            check_reply(case.expect, got)
        }
        End::Reset(_) => Err("reset before any reply".into()),
        End::Open(got) => Err(format!(
            "still open after {ANSWER_WITHIN:?} (received {got:?})"
        )),
        End::Error(got, e) => Err(format!("read error {e} after {got:?}")),
    }
}

/// Opens `n` connections that send one byte (the SOCKS5 version) and wait; returns failures.
fn slowloris_wave(addr: SocketAddr, n: usize) -> (Vec<String>, Duration, Duration) {
    let mut conns = Vec::with_capacity(n);
    let mut failures = Vec::new();
    for i in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut s) => {
                let opened = Instant::now();
                if let Err(e) = s.write_all(&[5]) {
                    failures.push(format!("slowloris {i}: write: {e}"));
                }
                conns.push((s, opened));
            }
            Err(e) => failures.push(format!("slowloris {i}: connect: {e}")),
        }
    }
    let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
    for (i, (mut s, opened)) in conns.into_iter().enumerate() {
        let end = read_until_end(&mut s, opened + SLOWLORIS_CLOSED_WITHIN);
        let took = opened.elapsed();
        match end {
            End::Eof(b) | End::Reset(b) if b.is_empty() => {
                first = first.min(took);
                last = last.max(took);
            }
            other => failures.push(format!(
                "slowloris {i}: not closed cleanly within {SLOWLORIS_CLOSED_WITHIN:?}: {other:?}"
            )),
        }
    }
    (failures, first, last)
}

#[derive(Debug, Default)]
struct Tally {
    runs: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

/// Two threads opening bad connections (paced) until `stop`, recording into `tally`.
fn spawn_workers(
    open_addr: SocketAddr,
    auth_addr: SocketAddr,
    closed_port: u16,
    seed: u64,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Mutex<Tally>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..2u64)
        .map(|w| {
            let (stop, tally) = (Arc::clone(stop), Arc::clone(tally));
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed + w);
                let begun = Instant::now();
                let mut done: u32 = 0;
                while !stop.load(Ordering::SeqCst) {
                    // Pace to PER_WORKER_RATE connections per second.
                    let due = begun + Duration::from_secs(1) * done / PER_WORKER_RATE;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    done += 1;
                    let name = CASES[rng.range(0, CASES.len() - 1)];
                    let case = make_case(name, &mut rng, closed_port);
                    let addr = match case.target {
                        Target::Open => open_addr,
                        Target::Auth => auth_addr,
                    };
                    let result = run_case(&case, addr);
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    *t.runs.entry(name).or_default() += 1;
                    if let Err(e) = result
                        && t.failures.len() < 50
                    {
                        let shown = &case.bytes[..case.bytes.len().min(64)];
                        t.failures.push(format!("{name}: {e} (sent {shown:?}…)"));
                    }
                }
            })
        })
        .collect()
}

#[test]
fn bad_input_never_costs_other_users() {
    const TEST: &str = "bad_input_never_costs_other_users";
    let duration = pick(Duration::from_secs(15), Duration::from_secs(120));
    // An empty `[timeouts]` table keeps the harness from lengthening the handshake timeout:
    // the slowloris waves must meet the server's own default (10 s). The authenticating
    // server keeps the harness's long one (a debug build's Argon2 on a loaded machine can
    // outlast 10 s); no slowloris goes there.
    let open = Server::builder().config("[timeouts]\n").start();
    let auth = Server::builder().user(USER, PASS).start();
    let creds = format!("{USER}:{PASS}");
    let Some(curl_open) = CurlLoop::start(
        TEST,
        open.addr(),
        None,
        &[
            CurlMode::Socks5,
            CurlMode::Socks5h,
            CurlMode::Socks4,
            CurlMode::Socks4a,
        ],
        2,
        64 * 1024,
    ) else {
        return;
    };
    let Some(curl_auth) = CurlLoop::start(
        TEST,
        auth.addr(),
        Some(&creds),
        &[CurlMode::Socks5, CurlMode::Socks5h],
        1,
        64 * 1024,
    ) else {
        return;
    };
    let closed_port = free_port();

    // Warm-up: every case once on each path, a few fetches, a small slowloris wave.
    let mut rng = Rng::new(7);
    let addr_of = |t: Target| match t {
        Target::Open => open.addr(),
        Target::Auth => auth.addr(),
    };
    for name in CASES {
        let case = make_case(name, &mut rng, closed_port);
        if let Err(e) = run_case(&case, addr_of(case.target)) {
            panic!("warm-up case {name:?}: {e}\nbytes {:?}", case.bytes);
        }
    }
    // A burst of the same mix, so the baseline is that of a server that has seen this load.
    let (open_addr, auth_addr) = (open.addr(), auth.addr());
    let stop = Arc::new(AtomicBool::new(false));
    let warm_tally = Arc::new(Mutex::new(Tally::default()));
    let warm_start = Instant::now();
    let warm_workers = spawn_workers(open_addr, auth_addr, closed_port, 500, &stop, &warm_tally);
    assert!(
        reliability::poll_until(Duration::from_secs(60), || curl_open.ok() >= 4
            && curl_auth.ok() >= 2),
        "curl did not complete its warm-up fetches"
    );
    // The slowloris peak, once, closed by us: the allocator's high-water mark for 300 pending
    // handshakes belongs in the baseline (a leak still shows: the run repeats it many times).
    let fds_before = fd_count(open.pid()).expect("server fds");
    let warm: Vec<TcpStream> = (0..SLOWLORIS)
        .filter_map(|_| {
            let mut s = TcpStream::connect_timeout(&open.addr(), Duration::from_secs(5)).ok()?;
            s.write_all(&[5]).ok()?;
            Some(s)
        })
        .collect();
    // The two workers and the curl loops keep a few sessions (two sockets each) open and
    // closing meanwhile, so the count around the slowloris peak moves by up to that many.
    const IN_FLIGHT: usize = 2 * 4;
    assert!(
        reliability::poll_until(Duration::from_secs(20), || fd_count(open.pid())
            .is_some_and(|n| n + IN_FLIGHT >= fds_before + warm.len())),
        "the server did not accept the warm-up slowloris connections"
    );
    drop(warm);
    // The warm-up burst of bad input (with curl running) lasts at least this long: in the
    // soak, long enough for the allocator's per-thread arenas to reach their steady size.
    let warm_up = pick(Duration::from_secs(5), Duration::from_secs(30));
    if let Some(rest) = warm_up.checked_sub(warm_start.elapsed()) {
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::SeqCst);
    for w in warm_workers {
        w.join().expect("warm-up worker");
    }
    let warm_failures = core::mem::take(
        &mut warm_tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures,
    );
    assert!(
        warm_failures.is_empty(),
        "bad connections got wrong answers during warm-up:\n{}",
        warm_failures.join("\n")
    );
    reliability::settle_fds(open.pid(), fds_before, Duration::from_secs(20));
    let baseline: Vec<(u32, u64, usize)> = [&open, &auth]
        .iter()
        .map(|s| {
            let pid = s.pid();
            (
                pid,
                rss_kib(pid).expect("server RSS"),
                fd_count(pid).expect("server fds"),
            )
        })
        .collect();
    let (curl_open_before, curl_auth_before) = (curl_open.ok(), curl_auth.ok());

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers = spawn_workers(open_addr, auth_addr, closed_port, 1000, &stop, &tally);

    // Slowloris waves while the bad input runs: a new wave as long as it can finish in time.
    let mut slow_failures = Vec::new();
    let mut waves = 0;
    let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
    loop {
        waves += 1;
        let (f, a, b) = slowloris_wave(open_addr, SLOWLORIS);
        slow_failures.extend(f);
        first = first.min(a);
        last = last.max(b);
        if start.elapsed() + Duration::from_secs(10) >= duration {
            break;
        }
    }
    if let Some(rest) = duration.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("bad-input worker");
    }
    let curl_open = curl_open.stop();
    let curl_auth = curl_auth.stop();
    let tally = core::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "{TEST}: {:?} of bad input, {} slowloris wave(s) of {SLOWLORIS} closed between {first:?} \
         and {last:?} after opening; bad connections per case: {:?}; curl fetches ok: {} \
         (open server), {} (auth server)",
        start.elapsed(),
        waves,
        tally.runs,
        curl_open.ok,
        curl_auth.ok
    );

    let mut open = open;
    let mut auth = auth;
    open.assert_running();
    auth.assert_running();
    assert!(
        curl_open.failures.is_empty() && curl_auth.failures.is_empty(),
        "curl failed while bad input ran:\n{}\n{}",
        curl_open.failures.join("\n"),
        curl_auth.failures.join("\n")
    );
    assert!(
        curl_open.ok > curl_open_before && curl_auth.ok > curl_auth_before,
        "curl made no progress during the bad input"
    );
    assert!(
        tally.failures.is_empty(),
        "bad connections got wrong answers:\n{}",
        tally.failures.join("\n")
    );
    for name in CASES {
        assert!(
            tally.runs.get(name).copied().unwrap_or(0) > 0,
            "case {name:?} never ran"
        );
    }
    assert!(
        slow_failures.is_empty(),
        "{} of {} slowloris connections were not closed by the server within \
         {SLOWLORIS_CLOSED_WITHIN:?}; first: {:?}",
        slow_failures.len(),
        SLOWLORIS * waves,
        &slow_failures[..slow_failures.len().min(5)]
    );

    // Resources back to the post-warm-up baseline once everything is closed.
    let mut problems = Vec::new();
    let auth_pid = auth.pid();
    for (server, (pid, rss0, fds0)) in [&open, &auth].iter().zip(baseline) {
        let fds = reliability::settle_fds(pid, fds0, Duration::from_secs(20));
        if fds > fds0 {
            problems.push(format!(
                "server {}: {fds} fds open after the run, baseline {fds0}",
                server.addr()
            ));
        }
        // The authenticating server's RSS is dominated by argon2's working memory, which
        // `logins_leave_rss_at_baseline` checks on its own.
        let rss = if pid == auth_pid {
            rss_kib(pid).unwrap_or(0)
        } else {
            reliability::settle_rss(pid, rss0, RSS_TOLERANCE_KIB, Duration::from_secs(20))
        };
        if pid != auth_pid && rss > rss0 + RSS_TOLERANCE_KIB {
            problems.push(format!(
                "server {}: RSS {rss} KiB after the run, baseline {rss0} KiB (tolerance \
                 {RSS_TOLERANCE_KIB} KiB)",
                server.addr()
            ));
        }
        println!(
            "{TEST}: server {}: fds {fds0} -> {fds}, RSS {rss0} KiB -> {rss} KiB",
            server.addr()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Successful RFC 1929 logins (each verifies an argon2 hash) must not leave the server's RSS
/// higher than after the first few.
#[test]
fn logins_leave_rss_at_baseline() {
    let duration = pick(Duration::from_secs(8), Duration::from_secs(60));
    let server = Server::builder().user(USER, PASS).start();
    let echo = socksgate_tests::origin::echo();
    let login = |addr: SocketAddr| {
        let mut c = socks::Client::connect(addr);
        assert_eq!(c.login(USER, PASS), 0, "login");
        let r = c.request5(Command::Connect, &socks::Dst::Ip(echo.addr()));
        assert_eq!(r.rep, ReplyCode::Succeeded, "{r:?}");
        c.send(b"hi");
        assert_eq!(c.read_exact(2), b"hi");
    };
    // Warm-up: a few logins, two at a time as below.
    for _ in 0..2 {
        std::thread::scope(|s| {
            s.spawn(|| login(server.addr()));
            s.spawn(|| login(server.addr()));
        });
    }
    let pid = server.pid();
    let rss0 = rss_kib(pid).expect("RSS");
    let start = Instant::now();
    let mut logins = 0;
    while start.elapsed() < duration {
        std::thread::scope(|s| {
            s.spawn(|| login(server.addr()));
            s.spawn(|| login(server.addr()));
        });
        logins += 2;
    }
    let rss = reliability::settle_rss(pid, rss0, RSS_TOLERANCE_KIB, Duration::from_secs(20));
    println!("logins_leave_rss_at_baseline: {logins} logins, RSS {rss0} KiB -> {rss} KiB");
    assert!(
        rss <= rss0 + RSS_TOLERANCE_KIB,
        "RSS {rss} KiB after {logins} logins, baseline {rss0} KiB after 4 (tolerance \
         {RSS_TOLERANCE_KIB} KiB)"
    );
}
