//! Helpers for the reliability tests (issue 7): process statistics of the server under test,
//! bounded polling, a continuous curl client, seeded byte streams and "how did the server end
//! this connection" reads.
//!
//! Everything is Linux-specific where it reads `/proc`, and talks to loopback only.

use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::origin::{self, TcpService};
use crate::tools;

/// Whether the long soak versions run (`SOCKSGATE_SOAK=1`).
pub fn soak() -> bool {
    std::env::var("SOCKSGATE_SOAK").is_ok_and(|v| v == "1")
}

/// `short` in the default run, `long` under `SOCKSGATE_SOAK=1`.
pub fn pick<T>(short: T, long: T) -> T {
    if soak() { long } else { short }
}

/// Resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Number of open file descriptors of `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // "pid (comm) S ...": the state follows the last ')'.
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns its last answer.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the server's RSS is at most `baseline_kib + tolerance_kib`; returns
/// the last RSS seen.
pub fn settle_rss(pid: u32, baseline_kib: u64, tolerance_kib: u64, timeout: Duration) -> u64 {
    let mut last = 0;
    poll_until(timeout, || {
        last = rss_kib(pid).unwrap_or(u64::MAX);
        last <= baseline_kib + tolerance_kib
    });
    last
}

/// Waits (bounded) until the server has at most `baseline` open fds; returns the last count.
pub fn settle_fds(pid: u32, baseline: usize, timeout: Duration) -> usize {
    let mut last = 0;
    poll_until(timeout, || {
        last = fd_count(pid).unwrap_or(usize::MAX);
        last <= baseline
    });
    last
}

/// A small, fast, seeded generator (xorshift64*), for reproducible traffic and fuzz input.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi - lo + 1) as u64;
        lo + (self.next_u64() % span) as usize
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

/// How the server ended a connection, with every byte it sent before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly close (read returned 0).
    Eof(Vec<u8>),
    /// Reset (or aborted).
    Reset(Vec<u8>),
    /// Still open when the time ran out.
    Open(Vec<u8>),
    /// Another read error.
    Error(Vec<u8>, String),
}

impl End {
    /// The bytes received before the end.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Eof(b) | Self::Reset(b) | Self::Open(b) | Self::Error(b, _) => b,
        }
    }

    /// Whether the server closed the connection (orderly or by reset).
    pub fn closed(&self) -> bool {
        matches!(self, Self::Eof(_) | Self::Reset(_))
    }
}

/// Reads everything until the peer closes, resets, or `deadline` passes.
pub fn read_until_end(stream: &mut TcpStream, deadline: Instant) -> End {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return End::Open(got);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return End::Eof(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => match e.kind() {
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    return End::Reset(got);
                }
                ErrorKind::WouldBlock | ErrorKind::TimedOut => return End::Open(got),
                ErrorKind::Interrupted => {}
                _ => return End::Error(got, e.to_string()),
            },
        }
    }
}

/// Lines of `log` containing `needle`.
pub fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// One way curl reaches the origin through the proxy.
#[derive(Clone, Copy, Debug)]
pub enum CurlMode {
    /// `--socks5` (the client resolves; the request carries an IP).
    Socks5,
    /// `--socks5-hostname` (the request carries the host as given).
    Socks5h,
    /// `--socks4`.
    Socks4,
    /// `--socks4a`.
    Socks4a,
}

impl CurlMode {
    fn flag(self) -> &'static str {
        match self {
            Self::Socks5 => "--socks5",
            Self::Socks5h => "--socks5-hostname",
            Self::Socks4 => "--socks4",
            Self::Socks4a => "--socks4a",
        }
    }
}

/// What a [`CurlLoop`] saw.
#[derive(Debug, Default)]
pub struct CurlReport {
    /// Fetches that returned the right body.
    pub ok: usize,
    /// Every failure: mode, exit status, stderr, or a body mismatch.
    pub failures: Vec<String>,
}

/// Real curl sessions through a proxy, one after another on each of `parallel` threads, until
/// stopped; every one must fetch the exact body.
#[derive(Debug)]
pub struct CurlLoop {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    report: Arc<Mutex<CurlReport>>,
    started: Arc<AtomicUsize>,
    _origin: Arc<TcpService>,
}

impl CurlLoop {
    /// Starts the loop against `proxy` (host:port), cycling through `modes`; `user` is
    /// `--proxy-user` (SOCKS5 modes only make sense with it). `None` after printing why when
    /// curl is missing and skipping is allowed.
    #[track_caller]
    pub fn start(
        test: &str,
        proxy: SocketAddr,
        user: Option<&str>,
        modes: &[CurlMode],
        parallel: usize,
        body_len: usize,
    ) -> Option<Self> {
        let curl: PathBuf = tools::require(test, &["curl"])?.remove(0);
        let origin = Arc::new(origin::http_origin());
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(CurlReport::default()));
        let started = Arc::new(AtomicUsize::new(0));
        let want = Arc::new(crate::body(body_len));
        let mut threads = Vec::new();
        for t in 0..parallel {
            let (curl, origin, stop, report, started, want) = (
                curl.clone(),
                Arc::clone(&origin),
                Arc::clone(&stop),
                Arc::clone(&report),
                Arc::clone(&started),
                Arc::clone(&want),
            );
            let modes = modes.to_vec();
            let user = user.map(String::from);
            threads.push(std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    let mode = modes[i % modes.len()];
                    i += 1;
                    started.fetch_add(1, Ordering::SeqCst);
                    // `tools::run` panics if curl overruns its bound; that is a failure too.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        fetch_once(&curl, mode, proxy, user.as_deref(), &origin, &want)
                    }))
                    .unwrap_or_else(|_| Err(format!("curl {mode:?} did not finish in time")));
                    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(()) => r.ok += 1,
                        Err(e) => r.failures.push(e),
                    }
                }
            }));
        }
        Some(Self {
            stop,
            threads,
            report,
            started,
            _origin: origin,
        })
    }

    /// Fetches started so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Fetches completed successfully so far.
    pub fn ok(&self) -> usize {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).ok
    }

    /// Stops after the fetches in flight finish; returns the report.
    pub fn stop(mut self) -> CurlReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        core::mem::take(&mut *self.report.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for CurlLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn fetch_once(
    curl: &PathBuf,
    mode: CurlMode,
    proxy: SocketAddr,
    user: Option<&str>,
    origin: &TcpService,
    want: &[u8],
) -> Result<(), String> {
    let url = format!(
        "http://127.0.0.1:{}{}",
        origin.port(),
        origin::http_path(want.len())
    );
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--fail", "--noproxy", "", "--max-time", "20"])
        .args([mode.flag(), &proxy.to_string()]);
    if let Some(u) = user {
        cmd.args(["--proxy-user", u]);
    }
    cmd.arg(&url);
    let start = Instant::now();
    let out = tools::run(&mut cmd, b"", Duration::from_secs(30));
    if !out.status.success() {
        return Err(format!(
            "curl {mode:?} {url}: {} after {:?}: {}",
            out.status,
            start.elapsed(),
            out.stderr_text().trim()
        ));
    }
    if out.stdout != want {
        return Err(format!(
            "curl {mode:?} {url}: body of {} bytes differs from the expected {}",
            out.stdout.len(),
            want.len()
        ));
    }
    Ok(())
}
