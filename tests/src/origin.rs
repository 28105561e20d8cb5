//! Local servers the proxy connects to. Each listens on 127.0.0.1 (and, for TCP, on ::1 at the
//! same port when possible), serves every connection on its own thread, counts connections and
//! stops accepting on drop.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;

use crate::TIMEOUT;

type Handler = fn(TcpStream);

/// A TCP service on loopback; see the module docs.
#[derive(Debug)]
pub struct TcpService {
    port: u16,
    has_v6: bool,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl TcpService {
    fn start(handler: Handler) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        // Prefer a port that is free on both loopbacks, so a name resolving to either (as
        // `localhost` may) reaches the service.
        let mut listeners = None;
        for _ in 0..20 {
            let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
            let port = v4.local_addr().expect("local_addr").port();
            if let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
                listeners = Some((v4, Some(v6)));
                break;
            }
            listeners = Some((v4, None));
        }
        let (v4, v6) = listeners.expect("a listener");
        let port = v4.local_addr().expect("local_addr").port();
        let has_v6 = v6.is_some();
        for l in core::iter::once(v4).chain(v6) {
            let stop = Arc::clone(&stop);
            let accepted = Arc::clone(&accepted);
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let _ = conn.set_read_timeout(Some(TIMEOUT));
                    let _ = conn.set_write_timeout(Some(TIMEOUT));
                    std::thread::spawn(move || handler(conn));
                }
            });
        }
        Self {
            port,
            has_v6,
            stop,
            accepted,
        }
    }

    /// The port (the same on 127.0.0.1 and, if [`Self::has_v6`], ::1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// 127.0.0.1:port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// `[::1]:port`, if the service listens there.
    pub fn addr_v6(&self) -> Option<SocketAddr> {
        self.has_v6
            .then(|| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), self.port))
    }

    /// Whether it also listens on ::1.
    pub fn has_v6(&self) -> bool {
        self.has_v6
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loops so they see the flag.
        let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1));
        if let Some(a) = self.addr_v6() {
            let _ = TcpStream::connect_timeout(&a, Duration::from_secs(1));
        }
    }
}

/// An HTTP/1.x origin: `GET /N` answers `200` with the `N`-byte [`crate::body`]
/// (`Connection: close`); anything else gets `404`.
pub fn http_origin() -> TcpService {
    TcpService::start(serve_http)
}

/// The URL path for a body of `len` bytes.
pub fn http_path(len: usize) -> String {
    format!("/{len}")
}

fn serve_http(mut conn: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let len = text
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|path| path.strip_prefix('/'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n <= 64 << 20);
    let response = match len {
        Some(n) => {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {n}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            r.extend_from_slice(&crate::body(n));
            r
        }
        None => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    };
    let _ = conn.write_all(&response);
    let _ = conn.shutdown(Shutdown::Write);
    // Drain until the client closes, so the close is orderly (no RST over unread bytes).
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// Echoes every byte as it arrives; after the client's EOF it shuts down its write side.
pub fn echo() -> TcpService {
    TcpService::start(|mut conn| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = conn.shutdown(Shutdown::Write);
    })
}

/// Reads until the client's EOF and only then answers: `"got N bytes\n"` followed by the bytes
/// reversed, then closes. Through a proxy this works only if the proxy forwards the client's
/// half-close and still relays the other direction.
pub fn reply_after_eof() -> TcpService {
    TcpService::start(|mut conn| {
        let mut got = Vec::new();
        if conn.read_to_end(&mut got).is_err() {
            return;
        }
        let _ = conn.write_all(&reply_after_eof_response(&got));
        let _ = conn.shutdown(Shutdown::Write);
    })
}

/// What [`reply_after_eof`] answers to `request`.
pub fn reply_after_eof_response(request: &[u8]) -> Vec<u8> {
    let mut r = format!("got {} bytes\n", request.len()).into_bytes();
    r.extend(request.iter().rev());
    r
}

/// A UDP echo server on 127.0.0.1: every datagram goes back to its sender unchanged.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

impl UdpEcho {
    /// Starts the echo on a free 127.0.0.1 port.
    pub fn start() -> Self {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts the echo on a free port of `ip` (a loopback address).
    pub fn start_on(ip: IpAddr) -> Self {
        let sock = UdpSocket::bind((ip, 0)).expect("bind udp");
        let addr = sock.local_addr().expect("local_addr");
        let received = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        Self { addr, received }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// Splits an HTTP/1.x response into (status code, body); panics if it has no header end.
#[track_caller]
pub fn split_http_response(resp: &[u8]) -> (u16, &[u8]) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&resp[..resp.len().min(200)])
            )
        });
    let status = String::from_utf8_lossy(&resp[..end])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, &resp[end + 4..])
}

/// A raw `GET /N` request for the origin.
pub fn http_request(host: &str, len: usize) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: socksgate-tests\r\n\r\n",
        http_path(len)
    )
    .into_bytes()
}
