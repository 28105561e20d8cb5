//! RFC 1928 §7 fragment reassembly with fixed capacity.
//!
//! The header itself lives in [`wire::udp`](crate::wire::udp). This module holds the
//! [`Reassembler`]: one reassembly queue and timer, as §7 gives "each receiver". An
//! [`Association`](super::Association) keeps one (for the client → relay direction; the relay
//! never fragments what it sends back).
//!
//! The core has no clock: every call takes the current time as an [`Instant`] the driver
//! builds from its own monotonic clock, and [`Reassembler::poll_timeout`] tells the driver
//! when to call [`Reassembler::handle_timeout`].
//!
//! # Semantics
//!
//! RFC 1928 §7: FRAG 0 is a standalone datagram; 1–127 is the fragment position, with the high
//! bit (0x80) set on the last fragment. The queue is abandoned "whenever the REASSEMBLY TIMER
//! expires, or a new datagram arrives carrying a FRAG field whose value is less than the
//! highest FRAG value processed for this fragment sequence", and the timer is at least 5 s.
//! A position can therefore only ever extend the queue by being exactly one more than the
//! highest so far; this type decides the remaining cases as follows.
//!
//! | fragment (position `p`, highest so far `h`) | outcome |
//! |---|---|
//! | FRAG = 0 | delivered at once, zero-copy; a pending queue is abandoned (0 < `h`) |
//! | `p` = 1, no queue or any queue | starts a new queue (a pending one is abandoned), except `p` = `h` = 1 below |
//! | `p` = `h` + 1, same destination | appended; if the last bit is set, the datagram is delivered |
//! | `p` = `h` (a duplicate) | [`Duplicate`](ReassemblyError::Duplicate): dropped, queue kept |
//! | 1 < `p` < `h` | [`OutOfOrder`](ReassemblyError::OutOfOrder): queue abandoned (RFC restart), fragment dropped (its sequence lacks position 1) |
//! | `p` > `h` + 1 | [`Gap`](ReassemblyError::Gap): queue abandoned (the missing position can no longer arrive), fragment dropped |
//! | `p` > 1, no queue | [`MissingStart`](ReassemblyError::MissingStart): dropped |
//! | `p` = `h` + 1, other destination | [`DestinationMismatch`](ReassemblyError::DestinationMismatch): queue and fragment dropped |
//! | data beyond capacity `N` | [`TooLarge`](ReassemblyError::TooLarge): queue and fragment dropped |
//! | FRAG = 0x80 (last bit, position 0) | [`InvalidFrag`](ReassemblyError::InvalidFrag): queue abandoned (0 < `h`), fragment dropped |
//!
//! The timer starts with position 1 and is not extended by later fragments: a queue is
//! abandoned at `first + timeout` (a fragment arriving at exactly that instant finds it gone).
//! Destinations are compared as sent (a name is not equal to the address it resolves to;
//! names compare octet for octet).
//!
//! ```
//! use core::time::Duration;
//! use socksgate_core::udp::{Instant, Reassembler};
//! use socksgate_core::Addr;
//!
//! let mut r = Reassembler::<2048>::new();
//! let dst = Addr::Ip("192.0.2.7:53".parse().unwrap());
//! let t0 = Instant::from_millis(1_000);
//! assert_eq!(r.push(t0, 1, dst, b"hello, "), Ok(None));
//! assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(5)));
//! let whole = r.push(t0, 2 | 0x80, dst, b"world").unwrap().unwrap();
//! assert_eq!(whole.dst, dst);
//! assert_eq!(whole.data, b"hello, world");
//! ```

use core::fmt;
use core::time::Duration;

use crate::addr::{Addr, Target};
use crate::time::Instant;
use crate::wire::WireError;
use crate::wire::udp::{FRAG_LAST, UdpHeader};

/// Why a fragment was not added to the queue. Each variant says what happened to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The fragment repeats the highest position so far. The fragment is dropped; the queue
    /// is kept.
    Duplicate,
    /// The position is lower than the highest so far but not 1. The queue is abandoned (RFC
    /// 1928 §7 restart) and the fragment dropped: the sequence it begins lacks position 1.
    OutOfOrder,
    /// The position skips one or more positions. The queue is abandoned (the missing
    /// position would now be lower than the highest, so could never be accepted) and the
    /// fragment dropped.
    Gap,
    /// A fragment after position 1 with no queue pending (its predecessors were lost, dropped
    /// or timed out). The fragment is dropped.
    MissingStart,
    /// The fragment's destination differs from the queue's. Queue and fragment are dropped.
    DestinationMismatch,
    /// The reassembled data would exceed the reassembler's capacity. Queue and fragment are
    /// dropped.
    TooLarge,
    /// FRAG = 0x80: "last fragment" at position 0, which does not exist. The queue is
    /// abandoned and the fragment dropped.
    InvalidFrag,
    /// [`Reassembler::push_datagram`] was given a datagram whose header does not parse. The
    /// queue is kept.
    Malformed(WireError),
}

impl fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duplicate => f.write_str("duplicate UDP fragment dropped"),
            Self::OutOfOrder => f.write_str("UDP fragment out of order: reassembly restarted"),
            Self::Gap => f.write_str("UDP fragment skipped a position: reassembly abandoned"),
            Self::MissingStart => f.write_str("UDP fragment without its first fragment dropped"),
            Self::DestinationMismatch => {
                f.write_str("UDP fragment for another destination: reassembly abandoned")
            }
            Self::TooLarge => f.write_str("reassembled UDP datagram exceeds capacity"),
            Self::InvalidFrag => f.write_str("invalid FRAG 0x80 (last fragment at position 0)"),
            Self::Malformed(e) => write!(f, "malformed UDP datagram: {e}"),
        }
    }
}

impl core::error::Error for ReassemblyError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

/// A whole datagram: a standalone one as received, or the concatenated fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reassembled<'a> {
    /// Where the relay should send it.
    pub dst: Addr<'a>,
    /// The data, without any SOCKS header.
    pub data: &'a [u8],
    /// How many fragments it was built from (0 for a standalone datagram).
    pub fragments: u8,
}

/// One RFC 1928 §7 reassembly queue and timer, holding up to `N` bytes of data.
///
/// Storage is inline (`N` bytes plus one owned destination, about 300 bytes), so it can live
/// in a `static`, on an embedded task's stack, or boxed per association. A whole UDP/IPv4
/// datagram carries at most 65 507 bytes; with smaller `N`, longer sequences fail with
/// [`ReassemblyError::TooLarge`].
///
/// See the [module documentation](self) for the exact handling of every fragment.
#[derive(Clone, Debug)]
pub struct Reassembler<const N: usize> {
    /// The pending queue's data, or the datagram last delivered (until the next call).
    data: heapless::Vec<u8, N>,
    /// The destination belonging to `data`.
    dst: Option<Target>,
    /// Highest position queued; 0 when no queue is pending.
    highest: u8,
    /// When the pending queue expires.
    deadline: Instant,
    timeout: Duration,
}

impl<const N: usize> Default for Reassembler<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Reassembler<N> {
    /// The shortest reassembly timer RFC 1928 §7 allows, and the default.
    pub const MIN_TIMEOUT: Duration = Duration::from_secs(5);

    /// An empty reassembler with the minimum timer (5 s).
    pub const fn new() -> Self {
        Self::with_timeout(Self::MIN_TIMEOUT)
    }

    /// An empty reassembler whose queues live for `timeout`, raised to
    /// [`MIN_TIMEOUT`](Self::MIN_TIMEOUT) if shorter.
    pub const fn with_timeout(timeout: Duration) -> Self {
        let timeout = if timeout.as_millis() < Self::MIN_TIMEOUT.as_millis() {
            Self::MIN_TIMEOUT
        } else {
            timeout
        };
        Self {
            data: heapless::Vec::new(),
            dst: None,
            highest: 0,
            deadline: Instant::from_millis(0),
            timeout,
        }
    }

    /// The reassembly timer in use.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a fragment sequence is pending.
    pub const fn is_pending(&self) -> bool {
        self.highest != 0
    }

    /// Bytes of data held by the pending queue (0 when none is pending).
    pub fn pending_len(&self) -> usize {
        if self.is_pending() {
            self.data.len()
        } else {
            0
        }
    }

    /// Abandons any pending queue.
    pub fn reset(&mut self) {
        self.highest = 0;
        self.data.clear();
        self.dst = None;
    }

    /// When the pending queue expires, if there is one. The driver should call
    /// [`handle_timeout`](Self::handle_timeout) at (or after) that instant, and poll again
    /// after every [`push`](Self::push).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.is_pending().then_some(self.deadline)
    }

    /// Abandons the pending queue if its timer has expired at `now` (`now >= deadline`).
    /// Returns whether a queue was abandoned. [`push`](Self::push) does this itself first, so
    /// calling it is only needed to drop stale fragments (and count expiries) promptly.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.is_pending() && now >= self.deadline {
            self.reset();
            true
        } else {
            false
        }
    }

    /// Parses `datagram`'s header and [`push`](Self::push)es its payload.
    ///
    /// A datagram whose header does not parse is [`ReassemblyError::Malformed`]; the queue
    /// is not touched.
    pub fn push_datagram<'a>(
        &'a mut self,
        now: Instant,
        datagram: &'a [u8],
    ) -> Result<Option<Reassembled<'a>>, ReassemblyError> {
        let (header, payload) = UdpHeader::parse(datagram).map_err(ReassemblyError::Malformed)?;
        self.push(now, header.frag, header.dst, payload)
    }

    /// Offers one datagram's FRAG, destination and payload (its DATA) at time `now`.
    ///
    /// Returns `Ok(Some(datagram))` when a datagram is whole — at once for FRAG = 0 (borrowing
    /// `dst` and `payload`), or when the last fragment completes a sequence (borrowing this
    /// reassembler until the result is dropped; no queue is then pending) — `Ok(None)` when
    /// the fragment was queued, or an error saying why it was dropped and what happened to
    /// the queue (see the [module documentation](self)). A queue whose timer expired at `now`
    /// is abandoned before the fragment is looked at. Never panics.
    pub fn push<'a>(
        &'a mut self,
        now: Instant,
        frag: u8,
        dst: Addr<'a>,
        payload: &'a [u8],
    ) -> Result<Option<Reassembled<'a>>, ReassemblyError> {
        self.handle_timeout(now);
        if !self.is_pending() {
            // Drop the datagram delivered last time, if any.
            self.reset();
        }
        if frag == 0 {
            self.reset();
            return Ok(Some(Reassembled {
                dst,
                data: payload,
                fragments: 0,
            }));
        }
        let position = frag & !FRAG_LAST;
        let last = frag & FRAG_LAST != 0;
        let highest = self.highest;
        if position == 0 {
            self.reset();
            return Err(ReassemblyError::InvalidFrag);
        } else if position == highest {
            return Err(ReassemblyError::Duplicate);
        } else if position == 1 {
            self.reset();
            self.dst = Some(dst.to_target());
            self.deadline = now + self.timeout;
        } else if highest == 0 {
            return Err(ReassemblyError::MissingStart);
        } else if position < highest {
            self.reset();
            return Err(ReassemblyError::OutOfOrder);
        } else if Some(position) != highest.checked_add(1) {
            self.reset();
            return Err(ReassemblyError::Gap);
        } else if self.dst.as_ref().map(Target::as_addr) != Some(dst) {
            self.reset();
            return Err(ReassemblyError::DestinationMismatch);
        }
        if self.data.extend_from_slice(payload).is_err() {
            self.reset();
            return Err(ReassemblyError::TooLarge);
        }
        self.highest = position;
        if !last {
            return Ok(None);
        }
        // Complete: no queue is pending any more; data and destination stay until the next
        // call so the result can borrow them.
        self.highest = 0;
        match &self.dst {
            Some(target) => Ok(Some(Reassembled {
                dst: target.as_addr(),
                data: self.data.as_slice(),
                fragments: position,
            })),
            None => Err(ReassemblyError::MissingStart),
        }
    }
}

#[cfg(test)]
mod test {
    use core::net::SocketAddr;

    use super::*;
    use crate::addr::Domain;
    use crate::wire::udp::encapsulate;

    const LAST: u8 = FRAG_LAST;

    fn a() -> Addr<'static> {
        Addr::Ip("192.0.2.1:53".parse::<SocketAddr>().unwrap())
    }

    fn b() -> Addr<'static> {
        Addr::Domain(Domain::new(b"example.com").unwrap(), 53)
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    /// Pushes and copies the outcome out, so the borrow ends.
    fn push<const N: usize>(
        r: &mut Reassembler<N>,
        now: u64,
        frag: u8,
        dst: Addr<'_>,
        payload: &[u8],
    ) -> Result<Option<(Target, Vec<u8>, u8)>, ReassemblyError> {
        r.push(ms(now), frag, dst, payload)
            .map(|o| o.map(|d| (d.dst.to_target(), d.data.to_vec(), d.fragments)))
    }

    fn whole(dst: Addr<'_>, data: &[u8], n: u8) -> Option<(Target, Vec<u8>, u8)> {
        Some((dst.to_target(), data.to_vec(), n))
    }

    #[test]
    fn test_const_construction() {
        static R: Reassembler<64> = Reassembler::new();
        assert!(!R.is_pending());
        assert_eq!(R.timeout(), Duration::from_secs(5));
    }

    #[test]
    fn test_standalone() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 0, a(), b"abc"), Ok(whole(a(), b"abc", 0)));
        assert!(!r.is_pending());
        assert_eq!(r.poll_timeout(), None);
        // Standalone data is not copied, so it may exceed the capacity.
        let big = [7u8; 100];
        assert_eq!(push(&mut r, 0, 0, a(), &big), Ok(whole(a(), &big, 0)));
    }

    #[test]
    fn test_in_order() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 1, b(), b"ab"), Ok(None));
        assert_eq!(push(&mut r, 10, 2, b(), b"cd"), Ok(None));
        assert_eq!(r.pending_len(), 4);
        assert_eq!(
            push(&mut r, 20, 3 | LAST, b(), b"ef"),
            Ok(whole(b(), b"abcdef", 3))
        );
        assert!(!r.is_pending());
        assert_eq!(r.pending_len(), 0);
        // A new sequence starts from scratch.
        assert_eq!(
            push(&mut r, 30, 1 | LAST, a(), b"x"),
            Ok(whole(a(), b"x", 1))
        );
    }

    #[test]
    fn test_empty_fragments() {
        let mut r = Reassembler::<0>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b""), Ok(None));
        assert_eq!(push(&mut r, 0, 2 | LAST, a(), b""), Ok(whole(a(), b"", 2)));
    }

    #[test]
    fn test_127_fragments() {
        let mut r = Reassembler::<127>::new();
        for p in 1..127u8 {
            assert_eq!(push(&mut r, 0, p, a(), &[p]), Ok(None));
        }
        let all: Vec<u8> = (1..=127).collect();
        assert_eq!(
            push(&mut r, 0, 127 | LAST, a(), &[127]),
            Ok(whole(a(), &all, 127))
        );
    }

    #[test]
    fn test_position_127_without_last_cannot_continue() {
        let mut r = Reassembler::<256>::new();
        for p in 1..=127u8 {
            assert_eq!(push(&mut r, 0, p, a(), b"x"), Ok(None));
        }
        // Nothing can follow 127: every position is now lower or equal.
        assert_eq!(
            push(&mut r, 0, 127 | LAST, a(), b"x"),
            Err(ReassemblyError::Duplicate)
        );
        assert_eq!(
            push(&mut r, 0, 5, a(), b"x"),
            Err(ReassemblyError::OutOfOrder)
        );
        assert!(!r.is_pending());
    }

    #[test]
    fn test_out_of_order_restarts() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(push(&mut r, 0, 3, a(), b"c"), Err(ReassemblyError::Gap));
        assert!(!r.is_pending());
        assert_eq!(
            push(&mut r, 0, 2, a(), b"b"),
            Err(ReassemblyError::MissingStart)
        );

        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(push(&mut r, 0, 2, a(), b"b"), Ok(None));
        assert_eq!(push(&mut r, 0, 3, a(), b"c"), Ok(None));
        assert_eq!(
            push(&mut r, 0, 2 | LAST, a(), b"b"),
            Err(ReassemblyError::OutOfOrder)
        );
        assert!(!r.is_pending());
    }

    #[test]
    fn test_restart_with_position_one() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b"old"), Ok(None));
        assert_eq!(push(&mut r, 1, 2, a(), b"old"), Ok(None));
        // Position 1 < 2: the RFC restarts the queue, and 1 begins the new one.
        assert_eq!(push(&mut r, 2, 1, b(), b"new"), Ok(None));
        assert_eq!(r.poll_timeout(), Some(ms(5002)));
        assert_eq!(
            push(&mut r, 3, 2 | LAST, b(), b"!"),
            Ok(whole(b(), b"new!", 2))
        );
    }

    #[test]
    fn test_duplicate_kept() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(
            push(&mut r, 0, 1, a(), b"a"),
            Err(ReassemblyError::Duplicate)
        );
        assert_eq!(push(&mut r, 0, 2, a(), b"b"), Ok(None));
        assert_eq!(
            push(&mut r, 0, 2, a(), b"b"),
            Err(ReassemblyError::Duplicate)
        );
        assert_eq!(
            push(&mut r, 0, 3 | LAST, a(), b"c"),
            Ok(whole(a(), b"abc", 3))
        );
        // A repeated last fragment after completion has no queue to join.
        assert_eq!(
            push(&mut r, 0, 3 | LAST, a(), b"c"),
            Err(ReassemblyError::MissingStart)
        );
    }

    #[test]
    fn test_missing_start() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(
            push(&mut r, 0, 2 | LAST, a(), b"b"),
            Err(ReassemblyError::MissingStart)
        );
        assert!(!r.is_pending());
    }

    #[test]
    fn test_destination_mismatch() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(
            push(&mut r, 0, 2, b(), b"b"),
            Err(ReassemblyError::DestinationMismatch)
        );
        assert!(!r.is_pending());
        // Same address, different port.
        let a2 = Addr::Ip("192.0.2.1:54".parse::<SocketAddr>().unwrap());
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(
            push(&mut r, 0, 2, a2, b"b"),
            Err(ReassemblyError::DestinationMismatch)
        );
    }

    #[test]
    fn test_standalone_mid_sequence_abandons_queue() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(push(&mut r, 0, 0, b(), b"solo"), Ok(whole(b(), b"solo", 0)));
        assert!(!r.is_pending());
        assert_eq!(
            push(&mut r, 0, 2 | LAST, a(), b"b"),
            Err(ReassemblyError::MissingStart)
        );
    }

    #[test]
    fn test_invalid_frag() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(
            push(&mut r, 0, LAST, a(), b"b"),
            Err(ReassemblyError::InvalidFrag)
        );
        assert!(!r.is_pending());
    }

    #[test]
    fn test_overflow_drops_queue() {
        let mut r = Reassembler::<4>::new();
        assert_eq!(push(&mut r, 0, 1, a(), b"abc"), Ok(None));
        assert_eq!(
            push(&mut r, 0, 2, a(), b"de"),
            Err(ReassemblyError::TooLarge)
        );
        assert!(!r.is_pending());
        assert_eq!(r.pending_len(), 0);
        assert_eq!(
            push(&mut r, 0, 1, a(), b"abcde"),
            Err(ReassemblyError::TooLarge)
        );
        // Exactly the capacity fits.
        assert_eq!(push(&mut r, 0, 1, a(), b"ab"), Ok(None));
        assert_eq!(
            push(&mut r, 0, 2 | LAST, a(), b"cd"),
            Ok(whole(a(), b"abcd", 2))
        );
    }

    #[test]
    fn test_timeout_boundary() {
        let mut r = Reassembler::<16>::new();
        assert_eq!(push(&mut r, 1000, 1, a(), b"a"), Ok(None));
        assert_eq!(r.poll_timeout(), Some(ms(6000)));
        assert!(!r.handle_timeout(ms(5999)));
        // The timer is not extended by later fragments.
        assert_eq!(push(&mut r, 5999, 2, a(), b"b"), Ok(None));
        assert_eq!(r.poll_timeout(), Some(ms(6000)));
        assert!(r.handle_timeout(ms(6000)));
        assert!(!r.handle_timeout(ms(6000)));
        assert_eq!(r.poll_timeout(), None);

        // A fragment at exactly the deadline finds the queue gone.
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(push(&mut r, 4999, 2, a(), b"b"), Ok(None));
        assert_eq!(
            push(&mut r, 5000, 3 | LAST, a(), b"c"),
            Err(ReassemblyError::MissingStart)
        );
        // ... one millisecond earlier it completes.
        assert_eq!(push(&mut r, 0, 1, a(), b"a"), Ok(None));
        assert_eq!(
            push(&mut r, 4999, 2 | LAST, a(), b"b"),
            Ok(whole(a(), b"ab", 2))
        );
    }

    #[test]
    fn test_timeout_configuration() {
        assert_eq!(
            Reassembler::<1>::with_timeout(Duration::from_secs(1)).timeout(),
            Duration::from_secs(5)
        );
        let mut r = Reassembler::<8>::with_timeout(Duration::from_secs(30));
        assert_eq!(push(&mut r, u64::MAX - 10, 1, a(), b"a"), Ok(None));
        // Saturates instead of overflowing.
        assert_eq!(r.poll_timeout(), Some(ms(u64::MAX)));
        // A clock going backwards does not expire anything.
        assert!(!r.handle_timeout(ms(0)));
    }

    #[test]
    fn test_push_datagram() {
        let mut r = Reassembler::<16>::new();
        let mut buf = [0u8; 64];
        let n = encapsulate(a(), b"hey", &mut buf).unwrap();
        let got = r.push_datagram(ms(0), &buf[..n]).unwrap().unwrap();
        assert_eq!((got.dst, got.data, got.fragments), (a(), &b"hey"[..], 0));
        buf[2] = 1;
        assert_eq!(r.push_datagram(ms(0), &buf[..n]), Ok(None));
        assert!(r.is_pending());
        assert_eq!(
            r.push_datagram(ms(0), &buf[..3]),
            Err(ReassemblyError::Malformed(WireError::Truncated))
        );
        assert!(r.is_pending());
        buf[2] = 2 | LAST;
        let got = r.push_datagram(ms(1), &buf[..n]).unwrap().unwrap();
        assert_eq!(got.data, b"heyhey");
    }

    #[test]
    fn test_error_display() {
        let e = ReassemblyError::Malformed(WireError::Truncated);
        assert_eq!(
            e.to_string(),
            "malformed UDP datagram: datagram shorter than its header"
        );
        assert!(core::error::Error::source(&e).is_some());
        assert!(!ReassemblyError::Gap.to_string().is_empty());
    }

    /// A naive model of the documented rules.
    #[derive(Default)]
    struct Model {
        queue: Vec<u8>,
        highest: u8,
        dst_is_a: bool,
    }

    proptest::proptest! {
        #[test]
        fn prop_matches_model(
            steps in proptest::collection::vec(
                (proptest::num::u8::ANY, proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..6)),
                0..60,
            )
        ) {
            let mut r = Reassembler::<24>::new();
            let mut m = Model::default();
            for (frag, is_a, payload) in steps {
                let frag = (frag % 6) | (frag & LAST);
                let dst = if is_a { a() } else { b() };
                let got = push(&mut r, 0, frag, dst, &payload);
                let pos = frag & !LAST;
                let want = if frag == 0 {
                    m.highest = 0;
                    Ok(whole(dst, &payload, 0))
                } else if pos == 0 {
                    m.highest = 0;
                    Err(ReassemblyError::InvalidFrag)
                } else if pos == m.highest {
                    Err(ReassemblyError::Duplicate)
                } else if pos == 1 || (pos == m.highest + 1 && m.dst_is_a == is_a) {
                    if pos == 1 {
                        m.queue.clear();
                        m.dst_is_a = is_a;
                    }
                    m.queue.extend_from_slice(&payload);
                    m.highest = pos;
                    if m.queue.len() > 24 {
                        m.highest = 0;
                        Err(ReassemblyError::TooLarge)
                    } else if frag & LAST != 0 {
                        m.highest = 0;
                        Ok(whole(dst, &m.queue, pos))
                    } else {
                        Ok(None)
                    }
                } else if m.highest == 0 {
                    Err(ReassemblyError::MissingStart)
                } else {
                    let e = if pos < m.highest {
                        ReassemblyError::OutOfOrder
                    } else if pos > m.highest + 1 {
                        ReassemblyError::Gap
                    } else {
                        ReassemblyError::DestinationMismatch
                    };
                    m.highest = 0;
                    Err(e)
                };
                proptest::prop_assert_eq!(got, want);
                proptest::prop_assert_eq!(r.is_pending(), m.highest != 0);
            }
        }
    }
}
