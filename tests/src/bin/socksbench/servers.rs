//! The servers the proxies connect to, all in this process on 127.0.0.1: a bulk sink/source,
//! a TCP echo, an idle sink and a UDP echo. They are built to cost as little CPU per byte and
//! per session as the client side, and the same for every proxy and for the direct baseline.

use core::net::{Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};

use crate::error::{Context, Result};
use crate::pattern::{self, CHUNK};

/// Bulk request: `U` + u64 BE length (client uploads that many pattern bytes, the server
/// checks them and answers one status octet) or `D` + length (the server sends them).
pub(crate) const UPLOAD: u8 = b'U';
/// See [`UPLOAD`].
pub(crate) const DOWNLOAD: u8 = b'D';
/// Status octet after a checked upload.
pub(crate) const STATUS_OK: u8 = 0;
/// Status octet after an upload with a wrong byte.
pub(crate) const STATUS_CORRUPT: u8 = 1;

/// Idle timeout on server-side sockets (bounded threads even if a proxy leaks a connection).
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

fn listen() -> Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ctx(|| "bind 127.0.0.1:0".into())
}

fn addr(l: &TcpListener) -> Result<SocketAddr> {
    l.local_addr().ctx(|| "local_addr".into())
}

fn prepare(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(SERVER_TIMEOUT));
    let _ = s.set_write_timeout(Some(SERVER_TIMEOUT));
}

/// The bulk sink/source: a thread per connection (transfers are few and long).
#[derive(Debug)]
pub(crate) struct Bulk {
    addr: SocketAddr,
    /// Uploads whose bytes did not match the pattern.
    corrupt: Arc<AtomicU64>,
}

impl Bulk {
    pub(crate) fn start() -> Result<Self> {
        let l = listen()?;
        let addr = addr(&l)?;
        let corrupt = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&corrupt);
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    if let Err(true) = serve_bulk(s) {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Ok(Self { addr, corrupt })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn corrupt(&self) -> u64 {
        self.corrupt.load(Ordering::SeqCst)
    }
}

/// `Err(true)` if an upload was corrupt, `Err(false)` on an I/O error.
fn serve_bulk(mut s: TcpStream) -> core::result::Result<(), bool> {
    prepare(&s);
    let mut head = [0u8; 9];
    s.read_exact(&mut head).map_err(|_| false)?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[1..]);
    let total = u64::from_be_bytes(len);
    let mut pos = 0u64;
    match head[0] {
        UPLOAD => {
            let mut buf = vec![0u8; CHUNK];
            let mut ok = true;
            while pos < total {
                let want = usize::try_from((total - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
                let n = s.read(&mut buf[..want]).map_err(|_| false)?;
                if n == 0 {
                    return Err(false);
                }
                ok &= pattern::check(pos, &buf[..n]).is_ok();
                pos += n as u64;
            }
            let status = if ok { STATUS_OK } else { STATUS_CORRUPT };
            s.write_all(&[status]).map_err(|_| false)?;
            if ok { Ok(()) } else { Err(true) }
        }
        DOWNLOAD => {
            while pos < total {
                let want = usize::try_from((total - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
                let n = s.write(pattern::window(pos, want)).map_err(|_| false)?;
                if n == 0 {
                    return Err(false);
                }
                pos += n as u64;
            }
            // Wait for the client to close, so the connection ends the same way every time.
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
            Ok(())
        }
        _ => Err(false),
    }
}

/// Echo server: a fixed pool of threads blocked in `accept` on one listener, each serving one
/// connection at a time (no thread creation per session).
#[derive(Debug)]
pub(crate) struct Echo {
    addr: SocketAddr,
}

impl Echo {
    pub(crate) fn start(threads: usize) -> Result<Self> {
        let l = listen()?;
        let addr = addr(&l)?;
        for _ in 0..threads {
            let l = l.try_clone().ctx(|| "dup listener".into())?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok((mut s, _)) = l.accept() {
                    prepare(&s);
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        Ok(Self { addr })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Accepts connections and holds them open, idle, until [`Idle::clear`].
#[derive(Debug)]
pub(crate) struct Idle {
    addr: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Idle {
    pub(crate) fn start() -> Result<Self> {
        let l = listen()?;
        let addr = addr(&l)?;
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = Arc::clone(&held);
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                h.lock().expect("idle lock").push(s);
            }
        });
        Ok(Self { addr, held })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections are held.
    pub(crate) fn held(&self) -> usize {
        self.held.lock().expect("idle lock").len()
    }

    /// Closes every held connection.
    pub(crate) fn clear(&self) {
        self.held.lock().expect("idle lock").clear();
    }
}

/// Receive buffer of the load generator's UDP sockets (the echo's and the throughput
/// clients'): large, so that under a flood the datagrams are lost in the proxy rather than in
/// the load generator (whose own drops the report counts apart anyway).
pub(crate) const UDP_RCVBUF: usize = 4 << 20;

/// Gives `s` a receive buffer of `bytes`: past `net.core.rmem_max` where the process may
/// (SO_RCVBUFFORCE, root), else as much as the kernel allows.
pub(crate) fn enlarge_rcvbuf(s: &UdpSocket, bytes: usize) {
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(s, bytes).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(s, bytes);
    }
}

/// UDP echo: a few threads on one socket send every datagram back to its source, and count
/// what they received.
#[derive(Debug)]
pub(crate) struct UdpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
}

impl UdpEcho {
    pub(crate) fn start(threads: usize) -> Result<Self> {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ctx(|| "bind UDP echo".into())?;
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .ctx(|| "UDP echo timeout".into())?;
        enlarge_rcvbuf(&s, UDP_RCVBUF);
        let addr = s.local_addr().ctx(|| "UDP local_addr".into())?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        for _ in 0..threads {
            let s = s.try_clone().ctx(|| "dup UDP socket".into())?;
            let stop = Arc::clone(&stop);
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        received.fetch_add(1, Ordering::Relaxed);
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            });
        }
        Ok(Self {
            addr,
            stop,
            received,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Datagrams the kernel dropped at the echo's socket so far (its receive queue full).
    pub(crate) fn drops(&self) -> u64 {
        crate::procfs::udp_drops(self.addr.port()).unwrap_or(0)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
