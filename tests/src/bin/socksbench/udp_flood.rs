//! UDP throughput: associations pushing datagrams through the relay to the UDP echo as fast as
//! they can, for a fixed time, with no pacing and no window. Each client counts what it sent
//! and checks and counts every echo that came back to it, so the loss is exactly "sent but
//! never echoed back to the client"; the echo server's own count splits it into the way out
//! and the way back, and the kernel's drop counters of the load generator's own sockets say
//! how much of it was the generator's.

use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::Barrier;
use std::time::Instant;

use crate::error::{BenchError, Context, Result};
use crate::pattern;
use crate::procfs;
use crate::servers::{UDP_RCVBUF, enlarge_rcvbuf};
use crate::via::{self, Via};

/// Payload bytes per datagram (the SOCKS UDP header comes on top when proxied).
pub(crate) const DATAGRAM: usize = 1400;
/// Association id and sequence number at the start of each payload; the pattern follows.
const HEAD: usize = 16;
/// After sending stops: how long a client waits for one more echo before it stops reading.
const QUIET: Duration = Duration::from_millis(200);
/// After sending stops: how long a client reads echoes at most.
const DRAIN_MAX: Duration = Duration::from_secs(2);

/// The outcome of a UDP throughput run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flood {
    /// Datagrams the clients' `sendto` accepted.
    pub(crate) sent: u64,
    /// Datagrams that came back to the client that sent them, checked.
    pub(crate) echoed: u64,
    /// Datagrams the kernel dropped at the clients' own sockets (receive queue full).
    pub(crate) client_drops: u64,
}

/// `clients` threads, each with its own association (or plain socket when direct): once all
/// are set up, each sends [`DATAGRAM`]-byte datagrams to the UDP echo for `duration`, as fast
/// as `sendto` takes them, reading whatever echoes have arrived after each send; then reads
/// the stragglers until [`QUIET`] passes without one. `Ok(None)` when the proxy refuses UDP
/// ASSOCIATE.
pub(crate) fn flood(
    via: Via,
    echo: SocketAddr,
    clients: usize,
    duration: Duration,
) -> Result<Option<Flood>> {
    let refused = AtomicBool::new(false);
    let ready = Barrier::new(clients);
    let results: Vec<Result<Flood>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|id| {
                let (refused, ready) = (&refused, &ready);
                scope.spawn(move || {
                    // Every thread reaches the barrier, set up or not, so none waits forever.
                    let client = Client::new(via, echo, id as u64, refused);
                    ready.wait();
                    client?.run(duration)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(BenchError::Setup("UDP flood client panicked".into())))
            })
            .collect()
    });
    if refused.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let mut total = Flood::default();
    for r in results {
        let r = r?;
        total.sent += r.sent;
        total.echoed += r.echoed;
        total.client_drops += r.client_drops;
    }
    Ok(Some(total))
}

/// One association's sender and receiver.
#[derive(Debug)]
struct Client {
    sock: UdpSocket,
    /// Where datagrams go: the relay, or the echo itself when direct.
    relay: SocketAddr,
    /// Keeps the association open.
    _association: Option<via::Association>,
    /// The echo, which relayed datagrams must say they came from.
    echo: SocketAddr,
    /// SOCKS UDP header length (0 when direct).
    header_len: usize,
    id: u64,
    sent: u64,
    echoed: u64,
    /// Bit `seq` set once datagram `seq` came back: a second copy is an error.
    seen: Vec<u64>,
}

impl Client {
    fn new(via: Via, echo: SocketAddr, id: u64, refused: &AtomicBool) -> Result<Self> {
        let sock = via::udp_socket(QUIET)?;
        enlarge_rcvbuf(&sock, UDP_RCVBUF);
        let local = sock.local_addr().ctx(|| "UDP local_addr".into())?;
        let (relay, association, header_len) = match via {
            Via::Direct => (echo, None, 0),
            Via::Socks(proxy) => match via::udp_associate(proxy, local)? {
                Ok(a) => {
                    let mut header = [0u8; 64];
                    let n = via::udp_header(echo, &mut header)?;
                    (a.relay, Some(a), n)
                }
                Err(via::Refused(code)) => {
                    refused.store(true, Ordering::SeqCst);
                    return Err(BenchError::Socks(format!(
                        "UDP ASSOCIATE refused: {code:?}"
                    )));
                }
            },
        };
        Ok(Self {
            sock,
            relay,
            _association: association,
            echo,
            header_len,
            id,
            sent: 0,
            echoed: 0,
            seen: Vec::new(),
        })
    }

    fn run(mut self, duration: Duration) -> Result<Flood> {
        let mut out = vec![0u8; self.header_len + DATAGRAM];
        if self.header_len > 0 {
            via::udp_header(self.echo, &mut out)?;
        }
        let mut buf = vec![0u8; 4096];
        self.sock
            .set_nonblocking(true)
            .ctx(|| "UDP O_NONBLOCK".into())?;
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            payload(self.id, self.sent, &mut out[self.header_len..]);
            match self.sock.send_to(&out, self.relay) {
                Ok(_) => self.sent += 1,
                // The socket's send buffer is full, or the kernel is short of buffers for a
                // moment: the datagram was not sent (and is not counted); send again.
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {}
                Err(e) => {
                    return Err(BenchError::Io {
                        what: format!("send datagram to {}", self.relay),
                        source: e,
                    });
                }
            }
            while let Some(n) = self.receive(&mut buf)? {
                self.check(&buf[..n])?;
            }
        }
        self.sock
            .set_nonblocking(false)
            .ctx(|| "UDP blocking".into())?;
        let drain_end = Instant::now() + DRAIN_MAX;
        while Instant::now() < drain_end {
            match self.receive(&mut buf)? {
                Some(n) => self.check(&buf[..n])?,
                None => break,
            }
        }
        let port = self
            .sock
            .local_addr()
            .ctx(|| "UDP local_addr".into())?
            .port();
        Ok(Flood {
            sent: self.sent,
            echoed: self.echoed,
            client_drops: procfs::udp_drops(port).unwrap_or(0),
        })
    }

    /// One datagram's length, or `None` when none is waiting (or none came within [`QUIET`]).
    fn receive(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        match self.sock.recv_from(buf) {
            Ok((n, from)) if from == self.relay => Ok(Some(n)),
            Ok((_, from)) => Err(BenchError::Corrupt(format!(
                "datagram from {from}, expected the relay {}",
                self.relay
            ))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(BenchError::Io {
                what: "receive datagram".into(),
                source: e,
            }),
        }
    }

    /// Checks an echo (header, association, sequence number, every payload byte) and counts it.
    fn check(&mut self, dgram: &[u8]) -> Result<()> {
        let body = if self.header_len == 0 {
            dgram
        } else {
            let (src, off) = via::parse_udp(dgram)?;
            if src != self.echo {
                return Err(BenchError::Corrupt(format!(
                    "relayed datagram says it came from {src}, not {}",
                    self.echo
                )));
            }
            dgram.get(off..).unwrap_or_default()
        };
        let seq = check_payload(self.id, self.sent, body)?;
        mark_seen(&mut self.seen, seq).map_err(|()| {
            BenchError::Corrupt(format!(
                "datagram {seq} of association {} came back twice",
                self.id
            ))
        })?;
        self.echoed += 1;
        Ok(())
    }
}

/// Fills `out` ([`DATAGRAM`] bytes) with datagram `seq` of association `id`.
fn payload(id: u64, seq: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&id.to_be_bytes());
    out[8..HEAD].copy_from_slice(&seq.to_be_bytes());
    out[HEAD..DATAGRAM].copy_from_slice(pattern::window(seq, DATAGRAM - HEAD));
}

/// The sequence number of `body` if it is one of the first `sent` datagrams of association
/// `id`, byte for byte.
fn check_payload(id: u64, sent: u64, body: &[u8]) -> Result<u64> {
    let field = |r: core::ops::Range<usize>| {
        body.get(r)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    };
    let (Some(got_id), Some(seq)) = (field(0..8), field(8..HEAD)) else {
        return Err(BenchError::Corrupt(format!(
            "UDP echo of {} bytes, sent {DATAGRAM}",
            body.len()
        )));
    };
    if body.len() != DATAGRAM || got_id != id || seq >= sent {
        return Err(BenchError::Corrupt(format!(
            "UDP echo of {} bytes for association {got_id} seq {seq}; association {id} sent \
             {sent} of {DATAGRAM} bytes",
            body.len()
        )));
    }
    if pattern::check(seq, &body[HEAD..]).is_err() {
        return Err(BenchError::Corrupt(format!(
            "UDP echo seq {seq} of association {id}: wrong payload bytes"
        )));
    }
    Ok(seq)
}

/// Sets bit `seq`; `Err` if it was set already.
fn mark_seen(seen: &mut Vec<u64>, seq: u64) -> core::result::Result<(), ()> {
    let word = usize::try_from(seq / 64).map_err(|_| ())?;
    if seen.len() <= word {
        seen.resize(word + 1, 0);
    }
    let bit = 1u64 << (seq % 64);
    if seen[word] & bit != 0 {
        return Err(());
    }
    seen[word] |= bit;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_check_byte_for_byte() {
        let mut p = vec![0u8; DATAGRAM];
        payload(3, 41, &mut p);
        assert_eq!(check_payload(3, 42, &p).unwrap(), 41);
        // Not sent yet, another association, short, a flipped byte.
        assert!(check_payload(3, 41, &p).is_err());
        assert!(check_payload(4, 42, &p).is_err());
        assert!(check_payload(3, 42, &p[..DATAGRAM - 1]).is_err());
        assert!(check_payload(3, 42, &p[..10]).is_err());
        p[DATAGRAM - 1] ^= 1;
        assert!(check_payload(3, 42, &p).is_err());
    }

    #[test]
    fn a_datagram_counts_once() {
        let mut seen = Vec::new();
        assert_eq!(mark_seen(&mut seen, 0), Ok(()));
        assert_eq!(mark_seen(&mut seen, 200), Ok(()));
        assert_eq!(mark_seen(&mut seen, 63), Ok(()));
        assert_eq!(mark_seen(&mut seen, 200), Err(()));
        assert_eq!(mark_seen(&mut seen, 0), Err(()));
    }

    /// The whole path against a local echo, no proxy: nothing corrupt, nothing counted twice,
    /// and no more echoed than sent.
    #[test]
    fn a_direct_flood_against_a_local_echo() {
        let echo = crate::servers::UdpEcho::start(2).unwrap();
        let f = flood(Via::Direct, echo.addr(), 2, Duration::from_millis(100))
            .unwrap()
            .unwrap();
        assert!(f.sent > 0 && f.echoed > 0, "{f:?}");
        assert!(f.echoed <= f.sent, "{f:?}");
    }
}
