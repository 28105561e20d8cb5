//! The UDP relay's sockets: registered with the runtime for readability only, and written
//! without waiting.
//!
//! tokio's `UdpSocket` is registered edge-triggered for reading and writing. On Linux every
//! datagram sent then queues a write-readiness event — the kernel reports room in the send
//! buffer as soon as the datagram has left it, which on loopback is before `sendto` returns —
//! so a relay that sends and goes back to sleep finds `epoll_wait` returning at once with an
//! event nothing waits for, and sleeps on a second call. The relay never waits to write: a
//! datagram that finds the send buffer full is dropped ([`RelaySocket::send_to`] says
//! `WouldBlock`), as any full queue on its way would drop it, so its sockets are registered
//! for readability only.
//!
//! Several datagrams to one destination can leave in one call ([`RelaySocket::send_segments`],
//! UDP segmentation offload on Linux): the kernel walks its routing, IP output and — on
//! loopback — receive path once for the lot and splits it into datagrams at the end (or the
//! network card does). The receiver sees ordinary datagrams.

// tokio's registration with a chosen interest is `unsafe` (the caller vouches for the fd).
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

#[cfg(unix)]
use tokio::io::{Interest, unix::AsyncFd};

/// One of the relay's UDP sockets (facing the client or facing destinations).
#[derive(Debug)]
pub(crate) struct RelaySocket {
    #[cfg(unix)]
    io: AsyncFd<std::net::UdpSocket>,
    #[cfg(not(unix))]
    io: tokio::net::UdpSocket,
    /// Segmented sends work on this socket: cleared when the kernel refuses one (an old
    /// kernel, a device without checksum offload, IPsec, a segment over the path's MTU).
    segmenting: AtomicBool,
}

/// Most datagrams one segmented send carries (the kernel's `UDP_MAX_SEGMENTS` was 64 until
/// Linux 6.9).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Most bytes one segmented send carries: what one UDP/IPv4 datagram could.
pub(crate) const MAX_SEGMENTED_BYTES: usize = 65_507;

impl RelaySocket {
    /// Binds a socket to `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Self::from_std(socket)
    }

    /// Takes over a socket set up elsewhere (an egress profile's).
    pub(crate) fn from_tokio(socket: tokio::net::UdpSocket) -> io::Result<Self> {
        #[cfg(unix)]
        {
            Self::from_std(socket.into_std()?)
        }
        #[cfg(not(unix))]
        {
            Ok(Self { io: socket })
        }
    }

    /// Registers a non-blocking socket with the current runtime.
    pub(crate) fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
        #[cfg(unix)]
        {
            // SAFETY: the socket owns its descriptor and `as_raw_fd` always returns it; the
            // `AsyncFd` owns the socket, so the descriptor stays open and the same until it is
            // dropped.
            let io = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
                .map_err(io::Error::from)?;
            Ok(Self {
                io,
                segmenting: AtomicBool::new(cfg!(target_os = "linux")),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {
                io: tokio::net::UdpSocket::from_std(socket)?,
                segmenting: AtomicBool::new(false),
            })
        }
    }

    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        #[cfg(unix)]
        {
            self.io.get_ref().local_addr()
        }
        #[cfg(not(unix))]
        {
            self.io.local_addr()
        }
    }

    /// Asks for a receive buffer of `bytes` and returns what the kernel granted, as it reports
    /// it: on Linux the request capped at `net.core.rmem_max`, then doubled for the kernel's
    /// bookkeeping.
    pub(crate) fn set_recv_buffer(&self, bytes: usize) -> io::Result<usize> {
        #[cfg(unix)]
        let sock = socket2::SockRef::from(self.io.get_ref());
        #[cfg(not(unix))]
        let sock = socket2::SockRef::from(&self.io);
        sock.set_recv_buffer_size(bytes)?;
        sock.recv_buffer_size()
    }

    /// Ready when a datagram may be waiting, as `UdpSocket::poll_recv_ready`: the readiness
    /// stays set until a receive sees the queue empty, and polling counts against the task's
    /// cooperative budget.
    pub(crate) fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        #[cfg(unix)]
        {
            // The guard is dropped without clearing: receives clear on WouldBlock.
            self.io.poll_read_ready(cx).map_ok(|_| ())
        }
        #[cfg(not(unix))]
        {
            self.io.poll_recv_ready(cx)
        }
    }

    /// Runs the receive `f` on the socket when it is readable, clearing the readiness when
    /// `f` returns `WouldBlock` (as `UdpSocket::try_io`).
    #[cfg(unix)]
    pub(crate) fn try_recv_with<R>(
        &self,
        f: impl FnOnce(&std::net::UdpSocket) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io.try_io(Interest::READABLE, f)
    }

    /// Receives one datagram without waiting, as `UdpSocket::try_recv_from`.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        #[cfg(unix)]
        {
            self.try_recv_with(|s| s.recv_from(buf))
        }
        #[cfg(not(unix))]
        {
            self.io.try_recv_from(buf)
        }
    }

    /// Sends `buf` to `to` without waiting: `WouldBlock` when the send buffer is full (the
    /// datagram is not sent).
    pub(crate) fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        #[cfg(unix)]
        {
            self.io.get_ref().send_to(buf, to)
        }
        #[cfg(not(unix))]
        {
            self.io.try_send_to(buf, to)
        }
    }
}

impl RelaySocket {
    /// Sends the datagrams laid end to end in `iov` — each `segment` bytes long but the last,
    /// which may be shorter; at most [`MAX_SEGMENTS`] of them and [`MAX_SEGMENTED_BYTES`] in
    /// all — to `to` in one call, without waiting. Returns the bytes sent.
    ///
    /// `WouldBlock` when the send buffer cannot take them all (none is sent).
    /// `Unsupported` when they were not sent for any other reason: the caller sends them one
    /// by one, which gives each the outcome it would have had alone. After a refusal that
    /// says segmentation itself does not work here, the socket stops trying.
    #[cfg(target_os = "linux")]
    pub(crate) fn send_segments(
        &self,
        iov: &[IoSlice<'_>],
        segment: usize,
        to: SocketAddr,
    ) -> io::Result<usize> {
        use std::os::fd::AsRawFd as _;

        use nix::errno::Errno;
        use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};

        let unsupported = || io::Error::from(io::ErrorKind::Unsupported);
        if !self.segmenting.load(Ordering::Relaxed) {
            return Err(unsupported());
        }
        let size = u16::try_from(segment).map_err(|_| unsupported())?;
        let addr = SockaddrStorage::from(to);
        let fd = self.io.get_ref().as_raw_fd();
        match sendmsg(
            fd,
            iov,
            &[ControlMessage::UdpGsoSegments(&size)],
            MsgFlags::empty(),
            Some(&addr),
        ) {
            Ok(n) => Ok(n),
            Err(Errno::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => {
                if matches!(
                    e,
                    Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP
                ) {
                    tracing::debug!("udp: segmented send refused ({e}); sending one by one");
                    self.segmenting.store(false, Ordering::Relaxed);
                }
                Err(unsupported())
            }
        }
    }

    /// Segmented sends exist on Linux only: always `Unsupported` (send one by one).
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn send_segments(
        &self,
        _iov: &[IoSlice<'_>],
        _segment: usize,
        _to: SocketAddr,
    ) -> io::Result<usize> {
        let _ = &self.segmenting;
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;

    /// The events every epoll instance of this process watches on the socket `fd`, from
    /// `/proc/self/fdinfo` (lines `tfd: FD events: HEX data: HEX pos:0 ino:HEX ...`). The
    /// socket's inode tells it from a closed socket that had the same number.
    fn epoll_events_of(fd: i32) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt as _;

        let ino = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let ino = format!("ino:{ino:x}");
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let is_epoll = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]");
            if !is_epoll {
                continue;
            }
            let info = std::fs::read_to_string(
                std::path::Path::new("/proc/self/fdinfo").join(entry.file_name()),
            )
            .unwrap_or_default();
            for line in info.lines() {
                let mut words = line.split_whitespace();
                if words.next() == Some("tfd:")
                    && words.next() == Some(&fd.to_string())
                    && words.next() == Some("events:")
                    && line.split_whitespace().any(|w| w == ino)
                {
                    found.push(u32::from_str_radix(words.next().unwrap(), 16).unwrap());
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn registered_for_reading_only() {
        let relay = RelaySocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // The runtime's epoll instance may be reached through more than one descriptor (mio
        // duplicates it), so the same registration can be listed more than once.
        let events = epoll_events_of(relay.io.get_ref().as_raw_fd());
        assert!(!events.is_empty());
        for e in &events {
            assert_eq!(e & (EPOLLIN | EPOLLOUT), EPOLLIN, "{events:x?}");
        }
        // The control: tokio's own socket asks for write readiness too.
        let tokio = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let events = epoll_events_of(tokio.as_raw_fd());
        assert!(!events.is_empty());
        for e in &events {
            assert_eq!(e & EPOLLOUT, EPOLLOUT, "{events:x?}");
        }
    }

    #[tokio::test]
    async fn sends_and_receives() {
        let relay = RelaySocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(
            relay.send_to(b"ping", peer.local_addr().unwrap()).unwrap(),
            4
        );
        let mut buf = [0u8; 8];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"ping"[..], relay.local_addr().unwrap())
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_receive_buffer_reports_what_the_kernel_granted() {
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let relay = RelaySocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        for asked in [64 * 1024, 8 << 20] {
            assert_eq!(
                relay.set_recv_buffer(asked).unwrap(),
                2 * asked.min(rmem_max),
                "asked for {asked} under rmem_max {rmem_max}"
            );
        }
    }

    #[tokio::test]
    async fn a_segmented_send_arrives_as_separate_datagrams() {
        let relay = RelaySocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (a, b, c) = ([1u8; 300], [2u8; 300], [3u8; 120]);
        let iov = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        let sent = relay
            .send_segments(&iov, 300, peer.local_addr().unwrap())
            .unwrap();
        assert_eq!(sent, 720);
        let mut buf = [0u8; 1024];
        for want in [&a[..], &b[..], &c[..]] {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (want, relay.local_addr().unwrap()));
        }
    }

    #[tokio::test]
    async fn a_refused_segmented_send_says_unsupported_and_stops_trying() {
        let relay = RelaySocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // More segments than the kernel takes in one send: EINVAL.
        let one = [0u8; 1];
        let iov = vec![IoSlice::new(&one); 1024];
        let e = relay
            .send_segments(&iov, 1, peer.local_addr().unwrap())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        let two = [IoSlice::new(&one), IoSlice::new(&one)];
        let e = relay
            .send_segments(&two, 1, peer.local_addr().unwrap())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "no second try");
    }
}
