//! TCP reassembly of one direction of a connection.
//!
//! [`HalfStream`] turns segments in capture order into the byte stream the receiver saw:
//!
//! * out-of-order segments wait in a map keyed by stream offset until the hole before them is
//!   filled;
//! * retransmissions and overlaps keep the **first** copy of every byte (later copies are
//!   counted in [`HalfStream::retransmitted`], never delivered twice);
//! * sequence numbers wrap: offsets are 64-bit, unwrapped relative to the next expected byte;
//! * a hole that cannot be filled becomes a [`Delivered::Gap`]: when the peer acknowledges past
//!   it, when the buffered bytes exceed the cap, or at [`HalfStream::finish`];
//! * a stream whose SYN was not captured starts at the first segment seen
//!   ([`HalfStream::midstream`]).
//!
//! Offsets are 0 for the first byte after the SYN (or the first byte seen).

use std::collections::BTreeMap;

/// Where a delivered chunk's bytes are in the capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Frame number (1-based).
    pub frame: u64,
    /// File offset of the chunk's first byte.
    pub file_offset: usize,
}

/// What [`HalfStream`] hands to its consumer, strictly in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered<'b> {
    /// Contiguous bytes starting at stream offset `offset`.
    Data {
        /// Stream offset of `bytes[0]`.
        offset: u64,
        /// The bytes.
        bytes: &'b [u8],
        /// Where they are in the file.
        origin: Origin,
    },
    /// `len` bytes at `offset` were never captured.
    Gap {
        /// Stream offset of the hole.
        offset: u64,
        /// Length of the hole.
        len: u64,
    },
}

#[derive(Debug)]
struct Pending {
    data: Vec<u8>,
    origin: Origin,
}

/// Default cap on out-of-order bytes buffered per direction.
pub const DEFAULT_CAP: usize = 4 << 20;

/// One direction of a TCP connection.
#[derive(Debug)]
pub struct HalfStream {
    base: Option<u32>,
    next: u64,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    cap: usize,
    /// Bytes delivered so far (equals the next expected offset minus gap bytes).
    pub delivered: u64,
    /// Bytes that arrived again after a first copy (retransmissions and overlaps).
    pub retransmitted: u64,
    /// Total length of gaps.
    pub gap_bytes: u64,
    /// The first segment seen was not a SYN: offsets start at an arbitrary point.
    pub midstream: bool,
    /// The cap on buffered bytes forced a gap at least once.
    pub cap_hit: bool,
    /// A FIN was seen.
    pub fin: bool,
    highest_ack: Option<u64>,
}

impl HalfStream {
    /// A direction that buffers at most `cap` out-of-order bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            base: None,
            next: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            cap,
            delivered: 0,
            retransmitted: 0,
            gap_bytes: 0,
            midstream: false,
            cap_hit: false,
            fin: false,
            highest_ack: None,
        }
    }

    /// Whether the initial sequence number is known (SYN or first segment seen).
    pub fn started(&self) -> bool {
        self.base.is_some()
    }

    /// The next stream offset expected.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The 64-bit stream offset of `seq`, closest to the next expected byte.
    fn unwrap(&self, base: u32, seq: u32) -> u64 {
        const WRAP: u64 = 1 << 32;
        let r = u64::from(seq.wrapping_sub(base));
        let cand = (self.next & !(WRAP - 1)) | r;
        let mut best = cand;
        let dist = |x: u64| x.abs_diff(self.next);
        if cand >= WRAP && dist(cand - WRAP) < dist(best) {
            best = cand - WRAP;
        }
        if dist(cand + WRAP) < dist(best) {
            best = cand + WRAP;
        }
        best
    }

    /// Feeds one segment. `out` receives everything that became contiguous.
    pub fn segment(
        &mut self,
        seq: u32,
        syn: bool,
        fin: bool,
        payload: &[u8],
        origin: Origin,
        out: &mut dyn FnMut(Delivered<'_>),
    ) {
        if syn {
            if self.base.is_none() {
                self.base = Some(seq.wrapping_add(1));
            }
            // SYN carries no stream byte; any data follows it.
            if payload.is_empty() {
                return;
            }
            return self.segment(seq.wrapping_add(1), false, fin, payload, origin, out);
        }
        self.fin |= fin;
        let base = *self.base.get_or_insert_with(|| {
            self.midstream = true;
            seq
        });
        if payload.is_empty() {
            return;
        }
        let start = self.unwrap(base, seq);
        let end = start + payload.len() as u64;
        if end <= self.next {
            self.retransmitted += payload.len() as u64;
            return;
        }
        if start <= self.next {
            let skip = (self.next - start) as usize;
            self.retransmitted += skip as u64;
            let bytes = payload.get(skip..).unwrap_or_default();
            let origin = Origin {
                frame: origin.frame,
                file_offset: origin.file_offset + skip,
            };
            let new_end = self.next + bytes.len() as u64;
            match self.pending.first_key_value() {
                // Bytes buffered earlier overlap this segment: they win.
                Some((&first, _)) if first < new_end => {
                    let at = self.next;
                    self.insert(at, bytes, origin);
                }
                _ => self.deliver(bytes, origin, out),
            }
            self.drain(out);
            return;
        }
        self.insert(start, payload, origin);
        if self.pending_bytes > self.cap {
            self.cap_hit = true;
            while self.pending_bytes > self.cap / 2 {
                if !self.skip_to_first(out) {
                    break;
                }
            }
        }
    }

    /// Notes an acknowledgment sent by the peer. Bytes the peer acknowledged but the capture
    /// never showed become a gap as soon as buffered data after them is waiting.
    pub fn peer_ack(&mut self, ack: u32, out: &mut dyn FnMut(Delivered<'_>)) {
        let Some(base) = self.base else { return };
        let acked = self.unwrap(base, ack);
        if acked > self.next {
            self.highest_ack = Some(self.highest_ack.map_or(acked, |h| h.max(acked)));
            while let Some((&first, _)) = self.pending.first_key_value() {
                if first > acked {
                    break;
                }
                self.skip_to_first(out);
            }
        }
    }

    /// End of capture: every remaining hole becomes a gap and buffered bytes are delivered.
    pub fn finish(&mut self, out: &mut dyn FnMut(Delivered<'_>)) {
        while self.skip_to_first(out) {}
        if let Some(acked) = self.highest_ack {
            // The FIN consumes one sequence number after the last byte.
            let last = if self.fin {
                acked.saturating_sub(1)
            } else {
                acked
            };
            if last > self.next {
                let len = last - self.next;
                out(Delivered::Gap {
                    offset: self.next,
                    len,
                });
                self.gap_bytes += len;
                self.next = last;
            }
        }
    }

    /// Declares a gap up to the first buffered segment and drains. False if nothing waits.
    fn skip_to_first(&mut self, out: &mut dyn FnMut(Delivered<'_>)) -> bool {
        let Some((&first, _)) = self.pending.first_key_value() else {
            return false;
        };
        if first > self.next {
            let len = first - self.next;
            out(Delivered::Gap {
                offset: self.next,
                len,
            });
            self.gap_bytes += len;
            self.next = first;
        }
        self.drain(out);
        true
    }

    fn deliver(&mut self, bytes: &[u8], origin: Origin, out: &mut dyn FnMut(Delivered<'_>)) {
        if bytes.is_empty() {
            return;
        }
        out(Delivered::Data {
            offset: self.next,
            bytes,
            origin,
        });
        self.next += bytes.len() as u64;
        self.delivered += bytes.len() as u64;
    }

    /// Delivers buffered segments that start at or before the next expected byte.
    fn drain(&mut self, out: &mut dyn FnMut(Delivered<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.next {
                break;
            }
            let p = entry.remove();
            self.pending_bytes -= p.data.len();
            let end = start + p.data.len() as u64;
            if end <= self.next {
                self.retransmitted += p.data.len() as u64;
                continue;
            }
            let skip = (self.next - start) as usize;
            self.retransmitted += skip as u64;
            let origin = Origin {
                frame: p.origin.frame,
                file_offset: p.origin.file_offset + skip,
            };
            self.deliver(p.data.get(skip..).unwrap_or_default(), origin, out);
        }
    }

    /// Buffers the parts of `[start, start + payload.len())` not already buffered (first copy
    /// wins).
    fn insert(&mut self, start: u64, payload: &[u8], origin: Origin) {
        let end = start + payload.len() as u64;
        // Intervals already buffered that overlap [start, end), in order.
        let mut covered: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, p)) = self.pending.range(..start).next_back() {
            let e = s + p.data.len() as u64;
            if e > start {
                covered.push((s, e));
            }
        }
        for (&s, p) in self.pending.range(start..end) {
            covered.push((s, s + p.data.len() as u64));
        }
        let mut cursor = start;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        for (s, e) in covered {
            if s > cursor {
                pieces.push((cursor, s.min(end)));
            }
            cursor = cursor.max(e);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            pieces.push((cursor, end));
        }
        let kept: u64 = pieces.iter().map(|(s, e)| e - s).sum();
        self.retransmitted += payload.len() as u64 - kept;
        for (s, e) in pieces {
            let from = (s - start) as usize;
            let to = (e - start) as usize;
            let data = payload.get(from..to).unwrap_or_default().to_vec();
            self.pending_bytes += data.len();
            self.pending.insert(
                s,
                Pending {
                    data,
                    origin: Origin {
                        frame: origin.frame,
                        file_offset: origin.file_offset + from,
                    },
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(frame: u64) -> Origin {
        Origin {
            frame,
            file_offset: 0,
        }
    }

    /// Feeds segments and returns the delivered stream, with `?` for gap bytes.
    fn run(isn: u32, segs: &[(u32, &[u8])], acks: &[(usize, u32)]) -> (Vec<u8>, HalfStream) {
        let mut h = HalfStream::new(64);
        let mut stream = Vec::new();
        let mut sink = |d: Delivered<'_>| match d {
            Delivered::Data { offset, bytes, .. } => {
                assert_eq!(offset as usize, stream.len());
                stream.extend_from_slice(bytes);
            }
            Delivered::Gap { offset, len } => {
                assert_eq!(offset as usize, stream.len());
                stream.extend(core::iter::repeat_n(b'?', len as usize));
            }
        };
        h.segment(isn, true, false, &[], o(0), &mut sink);
        for (i, (seq, data)) in segs.iter().enumerate() {
            h.segment(*seq, false, false, data, o(i as u64 + 1), &mut sink);
            for (after, ack) in acks {
                if *after == i {
                    h.peer_ack(*ack, &mut sink);
                }
            }
        }
        h.finish(&mut sink);
        (stream, h)
    }

    #[test]
    fn in_order_and_out_of_order() {
        let (s, h) = run(99, &[(100, b"abc"), (106, b"ghi"), (103, b"def")], &[]);
        assert_eq!(s, b"abcdefghi");
        assert_eq!(h.retransmitted, 0);
    }

    #[test]
    fn retransmission_and_overlap_first_copy_wins() {
        let (s, h) = run(
            0,
            &[
                (1, b"abcd"),
                (1, b"XXXX"),
                (3, b"YYef"),
                (9, b"ij"),
                (8, b"ZZZ"),
                (7, b"gh"),
            ],
            &[],
        );
        // "ZZZ" at offsets 7..10 arrived before "gh" (6..8): its first byte wins at 7, "ij"
        // (8..10) arrived first of all at 8..10.
        assert_eq!(s, b"abcdefgZij");
        assert_eq!(h.retransmitted, 4 + 2 + 2 + 1);
    }

    #[test]
    fn wraparound() {
        let isn = u32::MAX - 2;
        let (s, _) = run(
            isn,
            &[
                (isn.wrapping_add(1), b"ab"),
                (isn.wrapping_add(5), b"ef"),
                (isn.wrapping_add(3), b"cd"),
            ],
            &[],
        );
        assert_eq!(s, b"abcdef");
    }

    #[test]
    fn gap_at_finish_and_on_ack() {
        let (s, h) = run(0, &[(1, b"ab"), (5, b"ef")], &[]);
        assert_eq!(s, b"ab??ef");
        assert_eq!(h.gap_bytes, 2);
        let (s, _) = run(0, &[(1, b"ab"), (5, b"ef"), (7, b"gh")], &[(1, 7)]);
        assert_eq!(s, b"ab??efgh");
    }

    #[test]
    fn cap_forces_gap() {
        let big = [b'x'; 40];
        let (s, h) = run(0, &[(1, b"a"), (10, &big), (60, &big)], &[]);
        assert!(h.cap_hit);
        assert_eq!(s.len(), 99);
    }

    #[test]
    fn midstream_start() {
        let mut h = HalfStream::new(64);
        let mut got = Vec::new();
        h.segment(5000, false, false, b"xy", o(1), &mut |d| {
            if let Delivered::Data { bytes, .. } = d {
                got.extend_from_slice(bytes)
            }
        });
        assert!(h.midstream);
        assert_eq!(got, b"xy");
    }
}
