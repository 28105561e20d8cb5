//! Receiving a UDP socket's waiting datagrams, many per system call, for the UDP relay.
//!
//! tokio registers sockets edge-triggered: a socket's readiness is cleared only when the
//! program has seen its queue empty, which with `recvfrom` costs one more call per wake-up
//! that fails with EAGAIN. On Linux, [`recv_some`] asks `recvmmsg` for up to [`PER_CALL`]
//! datagrams; a call that returns fewer has seen the queue empty, so the readiness is
//! cleared in the same call. A relay that handles one datagram per wake-up (a client waiting
//! for each answer) makes three system calls per datagram instead of four, and a relay under
//! a flood takes a whole batch per call, which it can then send on in one call per
//! destination (see `udp_socket`'s segmented sends). Elsewhere it receives one datagram per
//! call.
//!
//! The buffers are the thread's ([`with_thread_bufs`]), not an association's: a batch is
//! received and handled without waiting in between, so one set per thread serves every
//! association that runs there, and an association holds no receive buffer of its own.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;

use crate::udp_socket::RelaySocket;

/// Datagrams asked for per call: enough for a whole segmented send, few enough that one
/// association's burst cannot hold a worker long.
pub(crate) const PER_CALL: usize = 32;

/// Largest UDP payload plus the largest SOCKS UDP header: what one buffer
/// must hold so that no datagram is cut short.
pub(crate) const DATAGRAM: usize = 65_535 + MAX_HEADER;

/// The largest SOCKS UDP header: RSV, FRAG, ATYP, a 255-octet name and the port.
pub(crate) const MAX_HEADER: usize = 4 + 1 + 255 + 2;

/// One receive buffer per datagram of a call, `recvmmsg`'s message headers, and room to
/// lay out datagrams for a segmented send.
pub(crate) struct RecvBufs {
    /// [`PER_CALL`] buffers of [`DATAGRAM`] bytes, one after the other.
    space: Vec<u8>,
    /// Datagrams being built to send, end to end.
    out: Vec<u8>,
    /// One set of headers per address family: nix does not reset each header's address
    /// length before a call, so after an IPv4 source (16 bytes) an IPv6 one (28) would come
    /// back cut short, its last 8 address bytes and scope stale.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    headers_v4: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    headers_v6: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl std::fmt::Debug for RecvBufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBufs").finish_non_exhaustive()
    }
}

impl RecvBufs {
    pub(crate) fn new() -> Self {
        Self {
            // One zeroed allocation, large enough to be mapped fresh: the kernel backs it with
            // pages only as datagrams touch them.
            space: vec![0u8; PER_CALL * DATAGRAM],
            out: vec![0u8; DATAGRAM],
            #[cfg(any(target_os = "linux", target_os = "android"))]
            headers_v4: nix::sys::socket::MultiHeaders::preallocate(PER_CALL, None),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            headers_v6: nix::sys::socket::MultiHeaders::preallocate(PER_CALL, None),
        }
    }

    /// The `i`-th datagram of the last call, `len` bytes long.
    pub(crate) fn datagram(&self, i: usize, len: usize) -> &[u8] {
        let start = i * DATAGRAM;
        self.space
            .get(start..start + len.min(DATAGRAM))
            .unwrap_or_default()
    }

    /// [`Self::datagram`], and the room for datagrams to send ([`DATAGRAM`] bytes).
    pub(crate) fn datagram_and_out(&mut self, i: usize, len: usize) -> (&[u8], &mut [u8]) {
        let start = i * DATAGRAM;
        let datagram = self
            .space
            .get(start..start + len.min(DATAGRAM))
            .unwrap_or_default();
        (datagram, &mut self.out)
    }

    /// The room for datagrams to send, as [`Self::datagram_and_out`] left it.
    pub(crate) fn out(&self) -> &[u8] {
        &self.out
    }
}

/// Runs `f` with this thread's receive buffers.
///
/// The buffers hold raw pointers (the headers) and are borrowed only while `f` runs, so a
/// session's future, which moves between threads, never holds them across an `.await`. A
/// nested call (there is none) would get buffers of its own rather than fail.
pub(crate) fn with_thread_bufs<R>(f: impl FnOnce(&mut RecvBufs) -> R) -> R {
    thread_local! {
        static BUFS: RefCell<Option<RecvBufs>> = const { RefCell::new(None) };
    }
    BUFS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(RecvBufs::new)),
        Err(_) => f(&mut RecvBufs::new()),
    })
}

/// One datagram of a [`recv_some`] call: its bytes are `RecvBufs::datagram(slot, len)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Datagram {
    pub(crate) slot: usize,
    pub(crate) len: usize,
    pub(crate) src: SocketAddr,
}

/// What one [`recv_some`] call received, in order.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) datagrams: heapless::Vec<Datagram, PER_CALL>,
    /// The queue was seen empty and the socket's readiness cleared: the next datagram is a
    /// new readiness event, so the caller can stop here.
    pub(crate) drained: bool,
}

/// Receives the datagrams waiting on `sock` (at most [`PER_CALL`]) without waiting into
/// `out` (emptied first; filled in place: it is over a kilobyte, too large to move around
/// for every datagram); `v6` is the socket's family.
///
/// `Err(WouldBlock)` when none was waiting (the readiness is then cleared too); other errors
/// are the socket's.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn recv_some(
    sock: &RelaySocket,
    v6: bool,
    bufs: &mut RecvBufs,
    out: &mut Received,
) -> io::Result<()> {
    use std::io::IoSliceMut;
    use std::net::{SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{MsgFlags, recvmmsg};

    let RecvBufs {
        space,
        headers_v4,
        headers_v6,
        ..
    } = bufs;
    let headers = if v6 { headers_v6 } else { headers_v4 };
    out.datagrams.clear();
    out.drained = false;
    // Messages the call returned, usable or not.
    let mut count = 0;
    let result = sock.try_recv_with(|sock| {
        let mut chunks = space.chunks_mut(DATAGRAM);
        let mut slices: [[IoSliceMut<'_>; 1]; PER_CALL] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
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
                let _ = out.datagrams.push(Datagram {
                    slot: count - 1,
                    len: msg.bytes,
                    src,
                });
            }
        }
        if count < PER_CALL {
            // Fewer than asked for: the queue was empty when the call returned. Saying
            // WouldBlock here makes tokio clear the readiness it saw before the call; a
            // datagram arriving since is a newer readiness event and is not lost.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(()),
        // Not `datagrams.is_empty()`: a call that got one unusable datagram still drained.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && count > 0 => {
            out.drained = true;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Receives the datagrams waiting on `sock` (at most [`PER_CALL`]) without waiting into
/// `out` (emptied first).
///
/// `Err(WouldBlock)` when none was waiting (the readiness is then cleared too); other errors
/// are the socket's.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn recv_some(
    sock: &RelaySocket,
    _v6: bool,
    bufs: &mut RecvBufs,
    out: &mut Received,
) -> io::Result<()> {
    out.datagrams.clear();
    out.drained = false;
    let first = bufs.space.get_mut(..DATAGRAM).unwrap_or_default();
    let (len, src) = sock.try_recv_from(first)?;
    let _ = out.datagrams.push(Datagram { slot: 0, len, src });
    Ok(())
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
        let mut got = Received::default();
        while !drained {
            match recv_some(&rx, false, &mut bufs, &mut got) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            for d in &got.datagrams {
                assert_eq!(d.src, from);
                seen.push(bufs.datagram(d.slot, d.len).to_vec());
            }
            drained = got.drained;
        }
        assert_eq!(seen, [&b"one"[..], b"two", b"three"]);
        // Nothing waits now: the next call says so.
        let e = recv_some(&rx, false, &mut bufs, &mut got).unwrap_err();
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
                    let mut got = Received::default();
                    match recv_some(&rx, false, &mut bufs, &mut got) {
                        Ok(()) => break got,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
            .await
            .expect("the datagram woke the socket");
            assert_eq!(got.datagrams.len(), 1);
            let d = got.datagrams[0];
            assert_eq!(bufs.datagram(d.slot, d.len), [round]);
        }
    }

    #[tokio::test]
    async fn a_full_size_datagram_is_not_cut() {
        let (rx, tx) = pair().await;
        let big: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
        tx.send_to(&big, rx.local_addr().unwrap()).await.unwrap();
        readable(&rx).await;
        let mut bufs = RecvBufs::new();
        let mut got = Received::default();
        recv_some(&rx, false, &mut bufs, &mut got).unwrap();
        let d = got.datagrams[0];
        assert_eq!(bufs.datagram(d.slot, d.len), &big[..]);
    }
}
