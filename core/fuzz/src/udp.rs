//! Input and reference model for the `udp_reassembly` target: the outcome table of
//! `socksgate_core::udp`'s module documentation, written out with a `Vec`.

use core::net::SocketAddr;
use core::time::Duration;

use arbitrary::Arbitrary;
use socksgate_core::udp::{Instant, ReassemblyError};
use socksgate_core::wire::udp::UdpHeader;
use socksgate_core::{Addr, Domain, Target};

/// Reassembler capacity under test (small, so `TooLarge` is reachable).
pub const CAPACITY: usize = 64;

/// A few destinations, so that mismatches and matches are both common.
pub fn destination(i: u8) -> Addr<'static> {
    const NAMES: [&[u8]; 2] = [b"example.com", b"EXAMPLE.com"];
    match i % 4 {
        0 => Addr::Ip(SocketAddr::from(([192, 0, 2, 7], 53))),
        1 => Addr::Ip(SocketAddr::from(([192, 0, 2, 7], 54))),
        n => Addr::Domain(Domain::new(NAMES[usize::from(n - 2)]).expect("valid"), 53),
    }
}

/// How time moves before an operation.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Clock {
    /// Forward by this many milliseconds.
    Advance(u16),
    /// Forward by this many seconds.
    AdvanceSecs(u8),
    /// To this absolute instant (possibly backwards, or near the end of time).
    Set(u64),
}

/// One operation on the reassembler.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op<'a> {
    /// `push(now, frag, destination(dst), payload)`.
    Push {
        /// FRAG.
        frag: u8,
        /// Destination index.
        dst: u8,
        /// DATA.
        payload: &'a [u8],
    },
    /// `push_datagram` of an emitted header and payload.
    Datagram {
        /// FRAG.
        frag: u8,
        /// Destination index.
        dst: u8,
        /// DATA.
        payload: &'a [u8],
    },
    /// `push_datagram` of raw bytes.
    Raw(&'a [u8]),
    /// `handle_timeout(now)`.
    Timeout,
    /// `reset()`.
    Reset,
}

/// What the model keeps for a pending queue.
#[derive(Clone, Debug)]
struct Queue {
    dst: Target,
    data: Vec<u8>,
    highest: u8,
    deadline: u64,
}

/// The reference model.
#[derive(Clone, Debug)]
pub struct Model {
    queue: Option<Queue>,
    timeout_ms: u64,
}

/// An owned push outcome: `(destination, data, fragments)` when whole.
pub type Outcome = Result<Option<(Target, Vec<u8>, u8)>, ReassemblyError>;

impl Model {
    /// A model with the reassembler's effective timeout.
    pub fn new(timeout: Duration) -> Self {
        Self {
            queue: None,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Pending state as the reassembler reports it: (is_pending, pending_len, poll_timeout).
    pub fn pending(&self) -> (bool, usize, Option<Instant>) {
        match &self.queue {
            Some(q) => (true, q.data.len(), Some(Instant::from_millis(q.deadline))),
            None => (false, 0, None),
        }
    }

    /// `handle_timeout`.
    pub fn timeout(&mut self, now: u64) -> bool {
        if self.queue.as_ref().is_some_and(|q| now >= q.deadline) {
            self.queue = None;
            true
        } else {
            false
        }
    }

    /// `reset`.
    pub fn reset(&mut self) {
        self.queue = None;
    }

    /// `push`.
    pub fn push(&mut self, now: u64, frag: u8, dst: Addr<'_>, payload: &[u8]) -> Outcome {
        self.timeout(now);
        if frag == 0 {
            self.queue = None;
            return Ok(Some((dst.to_target(), payload.to_vec(), 0)));
        }
        let (p, last) = (frag & 0x7f, frag & 0x80 != 0);
        if p == 0 {
            self.queue = None;
            return Err(ReassemblyError::InvalidFrag);
        }
        let h = self.queue.as_ref().map_or(0, |q| q.highest);
        if self.queue.is_some() && p == h {
            return Err(ReassemblyError::Duplicate);
        }
        if p == 1 {
            self.queue = Some(Queue {
                dst: dst.to_target(),
                data: Vec::new(),
                highest: 0,
                deadline: now.saturating_add(self.timeout_ms),
            });
        } else if self.queue.is_none() {
            return Err(ReassemblyError::MissingStart);
        } else if p < h {
            self.queue = None;
            return Err(ReassemblyError::OutOfOrder);
        } else if p > h + 1 {
            self.queue = None;
            return Err(ReassemblyError::Gap);
        } else if self
            .queue
            .as_ref()
            .is_some_and(|q| q.dst != dst.to_target())
        {
            self.queue = None;
            return Err(ReassemblyError::DestinationMismatch);
        }
        let q = self.queue.as_mut().expect("queue exists here");
        if q.data.len() + payload.len() > CAPACITY {
            self.queue = None;
            return Err(ReassemblyError::TooLarge);
        }
        q.data.extend_from_slice(payload);
        q.highest = p;
        if !last {
            return Ok(None);
        }
        let q = self.queue.take().expect("queue exists here");
        Ok(Some((q.dst, q.data, p)))
    }

    /// `push_datagram`.
    pub fn push_datagram(&mut self, now: u64, datagram: &[u8]) -> Outcome {
        match UdpHeader::parse(datagram) {
            Ok((h, payload)) => self.push(now, h.frag, h.dst, payload),
            Err(e) => Err(ReassemblyError::Malformed(e)),
        }
    }
}
