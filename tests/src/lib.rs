//! Shared harness for socksgate's end-to-end and interop tests.
//!
//! Everything here is plain `std` and talks to loopback addresses only (127.0.0.0/8, ::1), or
//! inside network namespaces it creates ([`netns`]):
//!
//! * [`socksgate`] finds (building it once if needed) and runs the `socksgate` binary: a
//!   [`socksgate::Server`] listens on a free loopback port and is killed on drop.
//! * [`origin`] has the local peers the proxy connects to: an HTTP origin serving
//!   deterministic bodies, a TCP echo server, a "reply after EOF" server and a UDP echo.
//! * [`kerberos`] runs a real MIT KDC with a fresh realm for the GSS-API tests.
//! * [`peers`] starts Debian's `danted` and `microsocks` as reference SOCKS servers.
//! * [`netns`] creates network namespaces (veth links, addresses, `/etc/netns` files) for
//!   the tests that need more than loopback, and runs code inside them.
//! * [`tools`] locates external programs and runs them with bounded timeouts.
//! * [`reliability`] has process statistics (RSS, open fds), a curl loop, seeded byte
//!   streams and close-outcome reads for the reliability tests.
//! * [`socks`] is the SOCKS4/4a/5 test client on socksgate-core's types: scripted for
//!   byte-exact tests, and a lean handshake on the core's client state machine.
//!
//! native's integration tests and inspect's real-traffic test (through dev-dependencies) and the
//! `socksbench` binary use the same [`free_port`], [`peers`] and [`socks`] rather than copies
//! of their own.
//!
//! External tools are required: a missing one fails the test unless `SOCKSGATE_ALLOW_SKIP=1`
//! is set, in which case the test prints why it skipped and returns.
#![forbid(unsafe_code)]

pub mod capture;
pub mod kerberos;
pub mod netns;
pub mod origin;
pub mod peers;
pub mod reliability;
pub mod socks;
pub mod socksgate;
pub mod tmp;
pub mod tools;

use core::net::SocketAddr;
use core::time::Duration;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// The upper bound for anything that should take milliseconds on an idle machine; generous
/// because tests share two cores with parallel compiles.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback port that was free on 127.0.0.1 and ::1 a moment ago, for a server the test
/// starts (or a port that must stay closed).
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`), at random, and
/// never twice per process: a port handed out here is not taken meanwhile by the many
/// `bind(…:0)` and outgoing sockets of concurrently running tests, which would make a test
/// talk to someone else's listener.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (15000u16, ephemeral_start.min(32768));
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1)
        ^ std::process::id().rotate_left(16)
        | 1;
    if hi > lo + 1000 {
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let port = lo + u16::try_from(state % u32::from(hi - lo)).unwrap_or(0);
            let mut used = USED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if used.contains(&port) {
                continue;
            }
            let v4 = TcpListener::bind(("127.0.0.1", port)).is_ok();
            let v6 = TcpListener::bind(("::1", port)).is_ok();
            if v4 && v6 {
                used.push(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range: fall back to the kernel's choice.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls until something accepts TCP connections on `addr`, or `timeout` passes.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The deterministic body of `len` bytes the HTTP origin serves (not periodic in any small
/// power of two, so a dropped or duplicated chunk changes it).
pub fn body(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Asserts two byte strings are equal without printing a megabyte on failure.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, want {}; first difference at {:?}; got starts {:?}",
        got.len(),
        want.len(),
        first,
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
}
