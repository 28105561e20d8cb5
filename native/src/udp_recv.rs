//! Receiving a UDP socket's waiting datagrams, two per system call, for the UDP relay.
//!
//! tokio registers sockets edge-triggered: a socket's readiness is cleared only when the
//! program has seen its queue empty, which with `recvfrom` costs one more call per wake-up
//! that fails with EAGAIN. On Linux, [`recv_some`] asks `recvmmsg` for two datagrams; a call
//! that returns one has seen the queue empty, so the readiness is cleared in the same call.
//! A relay that handles one datagram per wake-up (a client waiting for each answer) makes
//! three system calls per datagram instead of four. Elsewhere it receives one datagram per
//! call.

use std::io;
use std::net::SocketAddr;

use crate::udp_socket::RelaySocket;

/// Datagrams asked for per call: two is the fewest that tells an empty queue apart.
pub(crate) const PER_CALL: usize = 2;

/// Largest UDP payload plus the largest SOCKS UDP header (4 + 1 + 255 + 2): what one buffer
/// must hold so that no datagram is cut short.
pub(crate) const DATAGRAM: usize = 65_535 + 262;

/// One receive buffer per datagram of a call.
#[derive(Debug)]
pub(crate) struct RecvBufs([Vec<u8>; PER_CALL]);

impl RecvBufs {
    pub(crate) fn new() -> Self {
        // Zeroed allocations: the kernel backs them with pages only as datagrams touch them.
        Self(std::array::from_fn(|_| vec![0u8; DATAGRAM]))
    }

    /// The `i`-th datagram of the last call, `len` bytes long.
    pub(crate) fn datagram(&self, i: usize, len: usize) -> &[u8] {
        self.0.get(i).and_then(|b| b.get(..len)).unwrap_or_default()
    }
}

/// What one [`recv_some`] call received: for datagram `i`, its length and source, in
/// `RecvBufs::datagram(i, len)`.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) datagrams: heapless::Vec<(usize, SocketAddr), PER_CALL>,
    /// The queue was seen empty and the socket's readiness cleared: the next datagram is a
    /// new readiness event, so the caller can stop here.
    pub(crate) drained: bool,
}

/// Receives the datagrams waiting on `sock` (at most [`PER_CALL`]) without waiting; `v6`
/// is the socket's family.
///
/// `Err(WouldBlock)` when none was waiting (the readiness is then cleared too); other errors
/// are the socket's.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn recv_some(sock: &RelaySocket, v6: bool, bufs: &mut RecvBufs) -> io::Result<Received> {
    use std::cell::RefCell;
    use std::io::IoSliceMut;
    use std::net::{SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

    thread_local! {
        // recvmmsg's message headers: allocated once per thread, as they hold raw pointers
        // and so cannot live in a session's future, which moves between threads. One set per
        // address family: nix does not reset each header's address length before a call, so
        // after an IPv4 source (16 bytes) an IPv6 one (28) would come back cut short, its
        // last 8 address bytes and scope stale.
        static HEADERS_V4: RefCell<MultiHeaders<SockaddrStorage>> =
            RefCell::new(MultiHeaders::preallocate(PER_CALL, None));
        static HEADERS_V6: RefCell<MultiHeaders<SockaddrStorage>> =
            RefCell::new(MultiHeaders::preallocate(PER_CALL, None));
    }
    let headers = if v6 { &HEADERS_V6 } else { &HEADERS_V4 };
    let mut out = Received::default();
    // Messages the call returned, usable or not.
    let mut count = 0;
    let result = sock.try_recv_with(|sock| {
        headers.with_borrow_mut(|headers| {
            let [first, second] = &mut bufs.0;
            let mut slices = [
                [IoSliceMut::new(first.as_mut_slice())],
                [IoSliceMut::new(second.as_mut_slice())],
            ];
            let received = recvmmsg(
                sock.as_raw_fd(),
                headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            for msg in received {
                count += 1;
                let src = msg.address.and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::V4(SocketAddrV4::from(*v4)))
                        .or_else(|| {
                            a.as_sockaddr_in6()
                                .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
                        })
                });
                // An IP socket always reports an IP source; anything else is dropped.
                if let Some(src) = src {
                    let _ = out.datagrams.push((msg.bytes, src));
                }
            }
            if count < PER_CALL {
                // Fewer than asked for: the queue was empty when the call returned. Saying
                // WouldBlock here makes tokio clear the readiness it saw before the call; a
                // datagram arriving since is a newer readiness event and is not lost.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        })
    });
    match result {
        Ok(()) => Ok(out),
        // Not `datagrams.is_empty()`: a call that got one unusable datagram still drained.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && count > 0 => {
            out.drained = true;
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// Receives the datagrams waiting on `sock` (at most [`PER_CALL`]) without waiting.
///
/// `Err(WouldBlock)` when none was waiting (the readiness is then cleared too); other errors
/// are the socket's.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn recv_some(
    sock: &RelaySocket,
    _v6: bool,
    bufs: &mut RecvBufs,
) -> io::Result<Received> {
    let (n, src) = sock.try_recv_from(&mut bufs.0[0])?;
    let mut out = Received::default();
    let _ = out.datagrams.push((n, src));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::net::UdpSocket;

    async fn pair() -> (RelaySocket, UdpSocket) {
        let a = RelaySocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (a, b)
    }

    async fn readable(s: &RelaySocket) {
        std::future::poll_fn(|cx| s.poll_recv_ready(cx))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn takes_what_is_waiting_and_says_when_the_queue_ran_dry() {
        let (rx, tx) = pair().await;
        let to = rx.local_addr().unwrap();
        let from = tx.local_addr().unwrap();
        let mut bufs = RecvBufs::new();
        for d in [&b"one"[..], b"two", b"three"] {
            tx.send_to(d, to).await.unwrap();
        }
        readable(&rx).await;
        let mut seen = Vec::new();
        let mut drained = false;
        while !drained {
            let got = match recv_some(&rx, false, &mut bufs) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            };
            for (i, &(n, src)) in got.datagrams.iter().enumerate() {
                assert_eq!(src, from);
                seen.push(bufs.datagram(i, n).to_vec());
            }
            drained = got.drained;
        }
        assert_eq!(seen, [&b"one"[..], b"two", b"three"]);
        // Nothing waits now: the next call says so.
        let e = recv_some(&rx, false, &mut bufs).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    /// A datagram that arrives after the queue was seen empty wakes the socket again: the
    /// cleared readiness does not hide it.
    #[tokio::test]
    async fn a_datagram_after_the_queue_ran_dry_is_a_new_readiness() {
        let (rx, tx) = pair().await;
        let to = rx.local_addr().unwrap();
        let mut bufs = RecvBufs::new();
        for round in 0..50u8 {
            tx.send_to(&[round], to).await.unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    readable(&rx).await;
                    match recv_some(&rx, false, &mut bufs) {
                        Ok(got) => break got,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
            .await
            .expect("the datagram woke the socket");
            assert_eq!(got.datagrams.len(), 1);
            assert_eq!(bufs.datagram(0, got.datagrams[0].0), [round]);
        }
    }

    #[tokio::test]
    async fn a_full_size_datagram_is_not_cut() {
        let (rx, tx) = pair().await;
        let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
        tx.send_to(&big, rx.local_addr().unwrap()).await.unwrap();
        readable(&rx).await;
        let mut bufs = RecvBufs::new();
        let got = recv_some(&rx, false, &mut bufs).unwrap();
        let (n, _) = got.datagrams[0];
        assert_eq!(bufs.datagram(0, n), &big[..]);
    }
}
