//! PROXY protocol input (`[[proxy_protocol]]`): listeners behind a load balancer that puts a
//! PROXY header (version 1 or 2) in front of each connection. The core parses the header and
//! decides whom to believe ([`BalancerTrust`]); this module reads it off the socket.

use std::net::SocketAddr;
use std::time::Duration;

use socksgate_core::Status;
use socksgate_core::balancer::{BalancerRefusal, BalancerTrust, Expectation};
use socksgate_core::rules::Cidr;
use socksgate_core::wire::proxy::{ProxyHeader, ProxyHeaderError};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::ProxyProtocolConfig;

/// The longest header accepted, TLVs included. HAProxy's headers with TLVs (SSL details, a
/// unique ID) are a few hundred bytes; the format allows 64 KiB, which a trusted balancer
/// has no reason to send.
const MAX_HEADER: usize = 4096;

/// The compiled `[[proxy_protocol]]` entries.
#[derive(Clone, Debug, Default)]
pub struct Balancers {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    listener: SocketAddr,
    trusted: Vec<Cidr>,
    required: bool,
}

impl Balancers {
    /// Compiles checked entries (see `Config::parse`); networks that do not parse are left
    /// out, which a checked configuration never has.
    pub fn new(config: &[ProxyProtocolConfig]) -> Self {
        let entries = config
            .iter()
            .flat_map(|c| {
                let trusted: Vec<Cidr> = c
                    .from
                    .iter()
                    .filter_map(|s| s.get_ref().parse().ok())
                    .collect();
                c.listeners.iter().map(move |l| Entry {
                    listener: *l.get_ref(),
                    trusted: trusted.clone(),
                    required: c.required,
                })
            })
            .collect();
        Self { entries }
    }

    /// The PROXY protocol settings of the listener bound to `listener`, if it takes headers.
    pub fn for_listener(&self, listener: SocketAddr) -> Option<BalancerTrust<'_>> {
        self.entries
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| BalancerTrust {
                trusted: &e.trusted,
                required: e.required,
            })
    }
}

/// Why a connection on a PROXY protocol listener is closed before its SOCKS greeting.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// The core's decision.
    #[error("{0}")]
    Refused(BalancerRefusal),
    /// The bytes began a header but are not a valid one.
    #[error("{0}")]
    Malformed(ProxyHeaderError),
    /// A header longer than 4 KiB.
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    /// The connection closed before the header was complete.
    #[error("closed before the end of the PROXY protocol header")]
    Eof,
    /// No complete header within the handshake timeout.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// Reading failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header a connection from `source` begins with, as `trust` expects, and
/// returns the client the connection stands for. Only the header's bytes are consumed: the
/// SOCKS greeting after it stays in the socket for the session.
pub async fn accept(
    stream: &mut TcpStream,
    source: SocketAddr,
    trust: BalancerTrust<'_>,
    timeout: Duration,
) -> Result<SocketAddr, BalancerError> {
    if trust.expect(source.ip()) == Expectation::Refused {
        return Err(BalancerError::Refused(BalancerRefusal::UntrustedSource));
    }
    let header = tokio::time::timeout(timeout, read_header(stream))
        .await
        .map_err(|_| BalancerError::Timeout(timeout))??;
    trust
        .client(source, header.as_ref())
        .map_err(BalancerError::Refused)
}

/// The header at the start of `stream`, or `None` if the stream does not start with one.
///
/// Peeks, and consumes only bytes known to belong to the header: all of a prefix the core
/// calls `Partial` (so the next peek waits for new bytes instead of returning the same ones),
/// and exactly the header's length once it is complete.
async fn read_header(stream: &mut TcpStream) -> Result<Option<ProxyHeader>, BalancerError> {
    let mut held: Vec<u8> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.peek(&mut buf).await?;
        let Some(peeked) = buf.get(..n).filter(|p| !p.is_empty()) else {
            return Err(BalancerError::Eof);
        };
        let before = held.len();
        held.extend_from_slice(peeked);
        match ProxyHeader::parse(&held) {
            Ok(Status::Complete((header, used))) => {
                discard(stream, used.saturating_sub(before)).await?;
                return Ok(Some(header));
            }
            Ok(Status::Partial) if held.len() > MAX_HEADER => return Err(BalancerError::TooLong),
            Ok(Status::Partial) => discard(stream, n).await?,
            Err(ProxyHeaderError::Missing) if before == 0 => return Ok(None),
            Err(e) => return Err(BalancerError::Malformed(e)),
        }
    }
}

/// Reads and drops `n` bytes already peeked.
async fn discard(stream: &mut TcpStream, mut n: usize) -> std::io::Result<()> {
    let mut sink = [0u8; 512];
    while n > 0 {
        let chunk = sink.len().min(n);
        let got = stream
            .read(sink.get_mut(..chunk).unwrap_or_default())
            .await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n -= got;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Sends `chunks` (with pauses between them) on a new connection; returns what `accept`
    /// made of it and the bytes left for the session.
    async fn run(
        chunks: &[&[u8]],
        trusted: &str,
        required: bool,
    ) -> (Result<SocketAddr, BalancerError>, Vec<u8>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            for chunk in chunks {
                c.write_all(&chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            c.shutdown().await.unwrap();
            // Keep the socket until the reader has seen EOF.
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest).await;
        });
        let (mut s, source) = l.accept().await.unwrap();
        let nets = [trusted.parse::<Cidr>().unwrap()];
        let trust = BalancerTrust {
            trusted: &nets,
            required,
        };
        let r = accept(&mut s, source, trust, Duration::from_secs(5)).await;
        let mut rest = Vec::new();
        if r.is_ok() {
            s.read_to_end(&mut rest).await.unwrap();
        }
        drop(s);
        writer.await.unwrap();
        (r, rest)
    }

    #[tokio::test]
    async fn headers_split_anywhere_leave_the_greeting_untouched() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 1080\r\n";
        let mut v2 = vec![0u8; 28];
        ProxyHeader {
            version: 2,
            addresses: Some(socksgate_core::wire::proxy::ProxiedAddresses {
                source: "192.0.2.7:51000".parse().unwrap(),
                destination: "127.0.0.1:1080".parse().unwrap(),
            }),
        }
        .emit(&mut v2)
        .unwrap();
        for header in [&v1[..], &v2[..]] {
            for split in [1, 5, 13, header.len() - 1] {
                let (a, b) = header.split_at(split);
                let (r, rest) = run(&[a, b, b"\x05\x01\x00"], "127.0.0.1", true).await;
                assert_eq!(r.unwrap(), "192.0.2.7:51000".parse().unwrap());
                assert_eq!(rest, b"\x05\x01\x00");
            }
            let mut whole = header.to_vec();
            whole.extend_from_slice(b"\x05\x01\x00");
            let (r, rest) = run(&[&whole], "127.0.0.1", true).await;
            assert!(r.is_ok());
            assert_eq!(rest, b"\x05\x01\x00");
        }
    }

    #[tokio::test]
    async fn refusals() {
        // Required, but no header.
        let (r, _) = run(&[b"\x05\x01\x00"], "127.0.0.1", true).await;
        assert!(matches!(
            r,
            Err(BalancerError::Refused(BalancerRefusal::MissingHeader))
        ));
        // A header from an untrusted source on an optional listener.
        let (r, _) = run(&[b"PROXY UNKNOWN\r\n"], "10.0.0.0/8", false).await;
        assert!(matches!(
            r,
            Err(BalancerError::Refused(BalancerRefusal::UntrustedHeader))
        ));
        // A direct client on an optional listener: served as itself, nothing consumed.
        let (r, rest) = run(&[b"\x05\x01\x00"], "10.0.0.0/8", false).await;
        assert!(r.unwrap().ip().is_loopback());
        assert_eq!(rest, b"\x05\x01\x00");
        // Untrusted source on a required listener: closed without reading.
        let (r, _) = run(&[b"PROXY UNKNOWN\r\n"], "10.0.0.0/8", true).await;
        assert!(matches!(
            r,
            Err(BalancerError::Refused(BalancerRefusal::UntrustedSource))
        ));
        // Garbled, truncated, endless.
        let (r, _) = run(&[b"PROXY TCP4 nonsense\r\n"], "127.0.0.1", true).await;
        assert!(matches!(r, Err(BalancerError::Malformed(_))), "{r:?}");
        let (r, _) = run(&[b"PROXY TCP4 192.0.2.7"], "127.0.0.1", true).await;
        assert!(matches!(r, Err(BalancerError::Eof)), "{r:?}");
        let mut endless = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
        endless.resize(MAX_HEADER + 600, 0);
        let (r, _) = run(&[&endless], "127.0.0.1", true).await;
        assert!(matches!(r, Err(BalancerError::TooLong)), "{r:?}");
    }
}
