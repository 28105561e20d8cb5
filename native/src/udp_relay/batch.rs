//! The relay's batched path: one `recvmmsg` batch handled without waiting, its datagrams
//! sent on in runs.
//!
//! A run is consecutive datagrams of one batch to one destination that leave in one
//! segmented send ([`RelaySocket::send_segments`]): all of one size but the last, which may
//! be shorter. Under a flood, a client's batch to its one destination, or a destination's
//! answers to the client, cross the kernel's stack once instead of once per datagram; a
//! datagram alone (a client waiting for each answer) is sent with `sendto` as before. Every
//! datagram is still decided by the association, one by one and in order, and counted
//! against the traffic limits before it joins a run.
//!
//! A client's datagram that needs waiting — its destination a name not resolved yet for this
//! association, a fragment, or any datagram of a protected association — is copied to the
//! [`Backlog`] with every datagram after it in the batch, and relayed one at a time by
//! [`Relay::forward_up`] once the runs before it have left.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;

use socksgate_core::Addr;
use socksgate_core::udp::Outbound as Next;
use socksgate_core::wire::udp::UdpHeader;
use tracing::debug;

use super::{Relay, within};
use crate::clock;
use crate::udp_recv::{DATAGRAM, MAX_HEADER, PER_CALL, Received, RecvBufs, recv_some};
use crate::udp_socket::{MAX_SEGMENTED_BYTES, MAX_SEGMENTS, RelaySocket};

/// Datagrams to one destination about to leave together.
#[derive(Clone, Copy, Debug)]
struct Run {
    to: SocketAddr,
    /// Every datagram's length but the last's.
    segment: usize,
    count: usize,
    /// Bytes sent: the datagrams' lengths.
    bytes: usize,
    /// Payload bytes, as the counters count them.
    payload: u64,
    /// The last datagram is shorter than `segment`: none may follow it.
    closed: bool,
}

impl Run {
    fn new(to: SocketAddr, len: usize, payload: usize) -> Self {
        Self {
            to,
            segment: len,
            count: 1,
            bytes: len,
            payload: payload as u64,
            closed: false,
        }
    }

    /// Whether a datagram of `len` bytes to `to` may join (an empty one never does: it would
    /// vanish into the end of the run).
    fn accepts(&self, to: SocketAddr, len: usize) -> bool {
        !self.closed
            && self.to == to
            && len > 0
            && len <= self.segment
            && self.count < MAX_SEGMENTS
            && self.bytes + len <= MAX_SEGMENTED_BYTES
    }

    fn push(&mut self, len: usize, payload: usize) {
        self.count += 1;
        self.bytes += len;
        self.payload += payload as u64;
        self.closed = len < self.segment;
    }
}

/// Sends `datagrams` (a run's, in order) to `to` on `sock`: in one segmented send when
/// there are several and the socket can, else one by one. Returns how many left and their
/// payload bytes (`payload(i)` gives datagram `i`'s).
fn send_run(
    sock: &RelaySocket,
    run: &Run,
    datagrams: &[IoSlice<'_>],
    payload: impl Fn(usize) -> u64,
) -> (u64, u64) {
    if datagrams.len() > 1 {
        match sock.send_segments(datagrams, run.segment, run.to) {
            Ok(_) => return (run.count as u64, run.payload),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!(to = %run.to, count = run.count, "udp: send failed: {e}");
                return (0, 0);
            }
            Err(_) => {} // one by one, below
        }
    }
    let (mut sent, mut bytes) = (0, 0);
    for (i, d) in datagrams.iter().enumerate() {
        match sock.send_to(d, run.to) {
            Ok(_) => {
                sent += 1;
                bytes += payload(i);
            }
            Err(e) => debug!(to = %run.to, "udp: send failed: {e}"),
        }
    }
    (sent, bytes)
}

/// The client's datagrams that wait to be relayed one at a time, copied out of the thread's
/// buffers, in arrival order.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    bytes: Vec<u8>,
    datagrams: Vec<(SocketAddr, Range<usize>)>,
}

impl Backlog {
    pub(super) fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    fn push(&mut self, src: SocketAddr, datagram: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.datagrams.push((src, start..self.bytes.len()));
    }
}

/// Where a run's datagram to a destination sits in the thread's buffers: its payload
/// (`offset..len` of datagram `slot`).
#[derive(Clone, Copy, Debug)]
struct Member {
    slot: usize,
    offset: usize,
    len: usize,
}

/// The run being built on the way up and its members.
#[derive(Debug, Default)]
struct UpRun {
    run: Option<Run>,
    members: heapless::Vec<Member, PER_CALL>,
}

impl Relay<'_> {
    /// Receives one batch from the client-facing socket and relays it: in runs, and through
    /// the backlog from the first datagram that needs waiting. Returns `true` when more may
    /// be waiting.
    pub(super) fn client_batch(&mut self, bufs: &mut RecvBufs) -> bool {
        let mut got = Received::default();
        match recv_some(&self.socket, self.client_v6, bufs, &mut got) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                debug!("udp: client socket: {e}");
                return false;
            }
        };
        let now = clock::now();
        let mut up = UpRun::default();
        for d in &got.datagrams {
            let datagram = bufs.datagram(d.slot, d.len);
            if self.protected.is_some() || !self.backlog.is_empty() || self.must_wait(datagram) {
                self.backlog.push(d.src, datagram);
                continue;
            }
            let Self {
                rules,
                association,
                names,
                ..
            } = self;
            let (to, data) = match association.handle_client_datagram(rules, d.src, datagram, now) {
                Ok(Next::Send { to, data }) => (to, data),
                Ok(Next::Resolve(pending)) => {
                    // Cached: `must_wait` sent the others to the backlog.
                    let Some(&ip) = names.get(&pending.name().to_string()) else {
                        debug!(src = %d.src, "udp: name not resolved yet");
                        continue;
                    };
                    match pending.resolved(rules, ip) {
                        Ok(sent) => sent,
                        Err(dropped) => {
                            debug!(src = %d.src, "udp: {dropped}");
                            continue;
                        }
                    }
                }
                Ok(Next::Queued) => continue,
                Err(dropped) => {
                    debug!(src = %d.src, "udp: {dropped}");
                    continue;
                }
            };
            // A standalone datagram's payload is its tail (checked: the address, not just
            // the length), so the run can refer to it in the buffer.
            let offset = d.len - data.len();
            if !datagram
                .get(offset..)
                .is_some_and(|tail| std::ptr::eq(tail, data))
            {
                debug!(src = %d.src, "udp: payload not in the datagram; dropped");
                continue;
            }
            let len = data.len();
            let limit = self.limits.as_ref().and_then(|l| l.up.as_ref());
            if !within(limit, len, &mut self.quota_spent) {
                continue;
            }
            let member = Member {
                slot: d.slot,
                offset,
                len,
            };
            match &mut up.run {
                Some(run) if run.accepts(to, len) => run.push(len, len),
                _ => {
                    self.flush_up(bufs, &mut up);
                    up.run = Some(Run::new(to, len, len));
                }
            }
            let _ = up.members.push(member);
        }
        self.flush_up(bufs, &mut up);
        !got.drained
    }

    /// Whether a client's datagram must be relayed one at a time, by [`Relay::forward_up`]:
    /// it is a fragment, or names a destination not resolved yet.
    fn must_wait(&self, datagram: &[u8]) -> bool {
        match UdpHeader::parse(datagram) {
            // The association drops what does not parse.
            Err(_) => false,
            Ok((header, _)) => {
                !header.is_standalone()
                    || matches!(header.dst, Addr::Domain(name, _)
                        if !self.names.contains_key(&name.to_string()))
            }
        }
    }

    /// Sends the run being built on the way up, if any.
    fn flush_up(&mut self, bufs: &RecvBufs, up: &mut UpRun) {
        let Some(run) = up.run.take() else {
            return;
        };
        let members = std::mem::take(&mut up.members);
        let sock = match self.out.socket(run.to.is_ipv6()) {
            Ok(s) => s,
            Err(e) => {
                debug!("udp: outbound socket: {e}");
                return;
            }
        };
        let mut iov: heapless::Vec<IoSlice<'_>, PER_CALL> = heapless::Vec::new();
        for m in &members {
            let datagram = bufs.datagram(m.slot, m.offset + m.len);
            let _ = iov.push(IoSlice::new(datagram.get(m.offset..).unwrap_or_default()));
        }
        let (sent, bytes) = send_run(sock, &run, &iov, |i| {
            members.get(i).map_or(0, |m| m.len as u64)
        });
        self.counters.datagrams_up += sent;
        self.counters.up += bytes;
    }

    /// Relays the backlog one datagram at a time, in order, and empties it.
    pub(super) async fn forward_backlog(&mut self) {
        let mut backlog = std::mem::take(&mut self.backlog);
        for (src, range) in &backlog.datagrams {
            let datagram = backlog.bytes.get(range.clone()).unwrap_or_default();
            if self.protected.is_none() {
                self.forward_up(*src, datagram).await;
            } else {
                self.forward_up_protected(*src, datagram).await;
            }
        }
        backlog.bytes.clear();
        backlog.datagrams.clear();
        // Kept for its capacity, unless a burst made it large.
        if backlog.bytes.capacity() <= 4 * DATAGRAM {
            self.backlog = backlog;
        }
    }

    /// Relays one batch from an outbound socket to the client: in runs laid out end to end
    /// in the thread's buffers, or one at a time when the association is protected.
    pub(super) fn back_batch(&mut self, bufs: &mut RecvBufs, got: &Received) {
        let now = clock::now();
        if self.protected.is_some() {
            for d in &got.datagrams {
                self.forward_back(d.src, bufs.datagram(d.slot, d.len), now);
            }
            return;
        }
        let mut run: Option<Run> = None;
        // The run is `out[start..end]`; its datagrams' payload lengths, in order.
        let (mut start, mut end) = (0, 0);
        let mut payloads: heapless::Vec<usize, PER_CALL> = heapless::Vec::new();
        for d in &got.datagrams {
            let (payload, out) = bufs.datagram_and_out(d.slot, d.len);
            if end + payload.len() + MAX_HEADER > out.len() {
                if let Some(r) = run.take() {
                    self.flush_back(out, &r, start..end, &payloads);
                }
                payloads.clear();
                (start, end) = (0, 0);
            }
            let decided = self.association.handle_remote_datagram(
                d.src,
                payload,
                out.get_mut(end..).unwrap_or_default(),
                now,
            );
            let (client, n) = match decided {
                Ok(to) => to,
                Err(dropped) => {
                    debug!(src = %d.src, "udp: {dropped}");
                    continue;
                }
            };
            let limit = self.limits.as_ref().and_then(|l| l.down.as_ref());
            if !within(limit, payload.len(), &mut self.quota_spent) {
                continue;
            }
            match &mut run {
                Some(r) if r.accepts(client, n) => r.push(n, payload.len()),
                _ => {
                    if let Some(r) = run.take() {
                        self.flush_back(out, &r, start..end, &payloads);
                    }
                    payloads.clear();
                    start = end;
                    run = Some(Run::new(client, n, payload.len()));
                }
            }
            let _ = payloads.push(payload.len());
            end += n;
        }
        if let Some(r) = run {
            self.flush_back(bufs.out(), &r, start..end, &payloads);
        }
    }

    /// Sends a run to the client: the datagrams laid end to end in `out[range]`, carrying
    /// `payloads` bytes of payload each.
    fn flush_back(&mut self, out: &[u8], run: &Run, range: Range<usize>, payloads: &[usize]) {
        let laid = out.get(range).unwrap_or_default();
        let mut datagrams: heapless::Vec<IoSlice<'_>, PER_CALL> = heapless::Vec::new();
        for d in laid.chunks(run.segment.max(1)) {
            let _ = datagrams.push(IoSlice::new(d));
        }
        let (sent, bytes) = send_run(&self.socket, run, &datagrams, |i| {
            payloads.get(i).map_or(0, |&n| n as u64)
        });
        self.counters.datagrams_down += sent;
        self.counters.down += bytes;
    }
}
