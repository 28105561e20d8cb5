//! The four measurements. Each takes a [`Via`] (direct or a proxy) and returns raw numbers;
//! a wrong byte or a failed SOCKS exchange is an error, slowness is not.

use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use rustix::net::sockopt;

use crate::error::{BenchError, Context, Result};
use crate::pattern::{self, CHUNK};
use crate::servers::{DOWNLOAD, STATUS_OK, UPLOAD};
use crate::via::{self, Via};

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

/// Moves `total` pattern bytes over one connection and checks every one; returns the time
/// from the request to the last byte (download) or to the server's verdict (upload).
pub(crate) fn transfer(via: Via, bulk: SocketAddr, dir: Direction, total: u64) -> Result<Duration> {
    let mut s = via::connect(via, bulk)?;
    let mut head = [0u8; 9];
    head[0] = match dir {
        Direction::Up => UPLOAD,
        Direction::Down => DOWNLOAD,
    };
    head[1..].copy_from_slice(&total.to_be_bytes());
    let start = Instant::now();
    s.write_all(&head).ctx(|| "send bulk request".into())?;
    let mut pos = 0u64;
    match dir {
        Direction::Up => {
            while pos < total {
                let want = chunk(total - pos);
                let n = s
                    .write(pattern::window(pos, want))
                    .ctx(|| format!("upload at byte {pos}"))?;
                if n == 0 {
                    return Err(BenchError::Corrupt(format!("upload stalled at byte {pos}")));
                }
                pos += n as u64;
            }
            let mut status = [0u8; 1];
            s.read_exact(&mut status)
                .ctx(|| format!("read the sink's verdict after {total} bytes"))?;
            if status[0] != STATUS_OK {
                return Err(BenchError::Corrupt(format!(
                    "the sink saw wrong bytes in a {total}-byte upload"
                )));
            }
        }
        Direction::Down => {
            let mut buf = vec![0u8; CHUNK];
            while pos < total {
                let want = chunk(total - pos);
                let n = s
                    .read(&mut buf[..want])
                    .ctx(|| format!("download at byte {pos}"))?;
                if n == 0 {
                    return Err(BenchError::Corrupt(format!(
                        "download ended after {pos} of {total} bytes"
                    )));
                }
                if let Err(i) = pattern::check(pos, &buf[..n]) {
                    return Err(BenchError::Corrupt(format!(
                        "download: wrong byte at offset {}",
                        pos + i as u64
                    )));
                }
                pos += n as u64;
            }
        }
    }
    Ok(start.elapsed())
}

fn chunk(remaining: u64) -> usize {
    usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK)
}

/// The outcome of a sessions run.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    /// Completed sessions.
    pub(crate) done: u64,
    /// Failed sessions.
    pub(crate) failed: u64,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
    /// Each completed session's duration in µs.
    pub(crate) latencies_us: Vec<u32>,
}

/// `clients` threads, each looping for `duration`: connect (and SOCKS5 CONNECT to `echo`),
/// send one byte, read it back, close with RST (SO_LINGER 0: no TIME_WAIT on the client).
pub(crate) fn sessions(via: Via, echo: SocketAddr, clients: usize, duration: Duration) -> Sessions {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let results: Vec<Sessions> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                scope.spawn(move || {
                    let mut r = Sessions::default();
                    let mut byte = [0u8; 1];
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        let sent = [u8::try_from(i % 251).unwrap_or(0)];
                        match one_session(via, echo, sent, &mut byte) {
                            Ok(()) => {
                                r.done += 1;
                                let us = t0.elapsed().as_micros();
                                r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                            }
                            Err(e) => {
                                r.failed += 1;
                                r.first_error.get_or_insert_with(|| e.to_string());
                                // Back off a little so a refusing proxy is not hammered.
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut total = Sessions {
        elapsed: start.elapsed(),
        ..Sessions::default()
    };
    for r in results {
        total.done += r.done;
        total.failed += r.failed;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
        total.latencies_us.extend(r.latencies_us);
    }
    total
}

fn one_session(via: Via, echo: SocketAddr, sent: [u8; 1], byte: &mut [u8; 1]) -> Result<()> {
    let mut s = via::connect(via, echo)?;
    s.write_all(&sent).ctx(|| "send echo byte".into())?;
    s.read_exact(byte).ctx(|| "read echo byte".into())?;
    if *byte != sent {
        return Err(BenchError::Corrupt(format!(
            "echo returned {byte:?}, sent {sent:?}"
        )));
    }
    abort(&s);
    Ok(())
}

/// Makes the next close send RST (SO_LINGER with a zero timeout).
fn abort(s: &TcpStream) {
    let _ = sockopt::set_socket_linger(s, Some(Duration::ZERO));
}

/// Opens `n` CONNECT sessions to the idle sink and returns them (kept open by the caller).
pub(crate) fn open_idle(via: Via, sink: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let s = via::connect(via, sink).map_err(|e| match e {
            BenchError::Io { what, source } => BenchError::Io {
                what: format!("idle session {i} of {n}: {what}"),
                source,
            },
            other => other,
        })?;
        held.push(s);
    }
    Ok(held)
}

/// The outcome of a UDP run.
#[derive(Debug, Default)]
pub(crate) struct Udp {
    /// Answered round trips.
    pub(crate) round_trips: u64,
    /// Datagrams with no answer within the timeout.
    pub(crate) lost: u64,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
}

/// The payload of datagram `seq` from client `id`.
fn udp_payload(id: u64, seq: u64) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..8].copy_from_slice(&id.to_be_bytes());
    p[8..16].copy_from_slice(&seq.to_be_bytes());
    p[16..].copy_from_slice(pattern::window(seq, 16));
    p
}

/// Wait for an answer before counting a datagram lost.
const UDP_WAIT: Duration = Duration::from_millis(200);

/// `clients` threads, each with its own association (or plain socket when direct), sending one
/// 32-byte datagram to the UDP echo and waiting for it before sending the next.
/// `Ok(None)` when the proxy refuses UDP ASSOCIATE.
pub(crate) fn udp(
    via: Via,
    echo: SocketAddr,
    clients: usize,
    duration: Duration,
) -> Result<Option<Udp>> {
    let refused = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + duration;
    let results: Vec<Result<Udp>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|id| {
                let refused = &refused;
                scope.spawn(move || udp_client(via, echo, id as u64, deadline, refused))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::Setup("UDP client panicked".into())))
            })
            .collect()
    });
    if refused.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let mut total = Udp {
        elapsed: start.elapsed(),
        ..Udp::default()
    };
    for r in results {
        let r = r?;
        total.round_trips += r.round_trips;
        total.lost += r.lost;
    }
    Ok(Some(total))
}

fn udp_client(
    via: Via,
    echo: SocketAddr,
    id: u64,
    deadline: Instant,
    refused: &AtomicBool,
) -> Result<Udp> {
    let sock = via::udp_socket(UDP_WAIT)?;
    let local = sock.local_addr().ctx(|| "UDP local_addr".into())?;
    let (relay, _assoc, header_len, mut out) = match via {
        Via::Direct => (echo, None, 0, [0u8; 64]),
        Via::Socks(proxy) => match via::udp_associate(proxy, local)? {
            Ok(a) => {
                let mut out = [0u8; 64];
                let n = via::udp_header(echo, &mut out)?;
                (a.relay, Some(a), n, out)
            }
            Err(via::Refused(code)) => {
                refused.store(true, Ordering::SeqCst);
                return Err(BenchError::Socks(format!(
                    "UDP ASSOCIATE refused: {code:?}"
                )));
            }
        },
    };
    let mut r = Udp::default();
    let mut buf = [0u8; 2048];
    let mut seq = 0u64;
    while Instant::now() < deadline {
        seq += 1;
        let payload = udp_payload(id, seq);
        out[header_len..header_len + payload.len()].copy_from_slice(&payload);
        sock.send_to(&out[..header_len + payload.len()], relay)
            .ctx(|| format!("send datagram to {relay}"))?;
        // Read until this datagram's echo arrives (late echoes of lost ones are skipped).
        loop {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    r.lost += 1;
                    break;
                }
                Err(e) => {
                    return Err(BenchError::Io {
                        what: "receive datagram".into(),
                        source: e,
                    });
                }
            };
            if from != relay {
                return Err(BenchError::Corrupt(format!(
                    "datagram from {from}, expected the relay {relay}"
                )));
            }
            let body = if header_len == 0 {
                &buf[..n]
            } else {
                let (src, off) = via::parse_udp(&buf[..n])?;
                if src != echo {
                    return Err(BenchError::Corrupt(format!(
                        "relayed datagram says it came from {src}, not {echo}"
                    )));
                }
                &buf[off..n]
            };
            if body == payload {
                r.round_trips += 1;
                break;
            }
            let got_seq = body
                .get(8..16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            if body.len() != payload.len() || got_seq.is_none_or(|s| s >= seq) {
                return Err(BenchError::Corrupt(format!(
                    "UDP echo payload {body:?} does not match seq {seq}"
                )));
            }
        }
    }
    Ok(r)
}
