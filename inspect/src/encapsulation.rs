//! Following the protected part of an RFC 1961 session: once the client encapsulates its
//! request (§5), both directions are sequences of encapsulated messages until the end. They
//! cannot be read without the GSS-API context, so each direction's messages are counted (by
//! the core's [`MessageCounter`], in fixed memory, over the whole connection — not just the
//! bytes the handshake decoder keeps).

use socksgate_core::wire::gssapi::{CountStop, MessageCounter};

use crate::report::Encapsulated;
use crate::session::Retained;
use crate::tcp_reassembly::Delivered;

/// One direction.
#[derive(Debug)]
struct Half {
    counter: MessageCounter,
    /// Stream offset of the first encapsulated message.
    start: u64,
    /// Stream offset of the next byte to count.
    next: u64,
    /// Counting stopped at this stream offset because bytes are missing there.
    gap: Option<u64>,
}

impl Half {
    fn feed(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        if self.gap.is_some() || end <= self.next {
            return;
        }
        if offset > self.next {
            self.gap = Some(self.next);
            return;
        }
        // `next - offset` < `bytes.len()`, checked above.
        let skip = usize::try_from(self.next - offset).unwrap_or(usize::MAX);
        self.counter.feed(bytes.get(skip..).unwrap_or_default());
        self.next = end;
    }

    fn anomaly(&self, dir: &str) -> Option<String> {
        if let Some(stop) = self.counter.stopped() {
            let at = |rel: u64| self.start + rel;
            return Some(match stop {
                CountStop::Abort { at: rel } => {
                    format!("GSS-API context aborted {dir} at stream offset {}", at(rel))
                }
                CountStop::BadVersion { at: rel, version } => format!(
                    "malformed GSS-API encapsulated message {dir} at stream offset {}: version {version}; not counted further",
                    at(rel)
                ),
                CountStop::UnexpectedType { at: rel, kind } => format!(
                    "GSS-API {} message {dir} at stream offset {} among encapsulated messages; not counted further",
                    kind.describe(),
                    at(rel)
                ),
            });
        }
        if let Some(at) = self.gap {
            return Some(format!(
                "gap: encapsulated messages {dir} not counted after stream offset {at}"
            ));
        }
        (!self.counter.at_boundary())
            .then(|| format!("truncated: last encapsulated message {dir} incomplete"))
    }
}

/// Both directions of a session's encapsulated part.
#[derive(Debug)]
pub(crate) struct Encapsulation {
    halves: [Half; 2],
}

impl Encapsulation {
    /// Counting from stream offsets `start` (client → server, server → client), catching up
    /// with the bytes already kept in `retained` (same order).
    pub(crate) fn new(start: [u64; 2], retained: [&Retained; 2]) -> Self {
        let mut halves = start.map(|start| Half {
            counter: MessageCounter::new(),
            start,
            next: start,
            gap: None,
        });
        for (half, kept) in halves.iter_mut().zip(retained) {
            half.feed(0, &kept.data);
        }
        Self { halves }
    }

    /// Bytes delivered in stream order to direction `up` (client → server) or down.
    pub(crate) fn deliver(&mut self, up: bool, d: &Delivered<'_>) {
        let half = &mut self.halves[usize::from(!up)];
        match *d {
            Delivered::Data { offset, bytes, .. } => half.feed(offset, bytes),
            Delivered::Gap { offset, len } => {
                if half.gap.is_none() && offset + len > half.next {
                    half.gap = Some(half.next.max(offset));
                }
            }
        }
    }

    /// The counts (client → server, server → client) and what stopped them, if anything.
    pub(crate) fn report(&self) -> ([Encapsulated; 2], Vec<String>) {
        let counts = [&self.halves[0], &self.halves[1]].map(|h| Encapsulated {
            messages: h.counter.messages(),
            bytes: h.counter.token_bytes(),
        });
        let anomalies = self.halves[0]
            .anomaly("client→server")
            .into_iter()
            .chain(self.halves[1].anomaly("server→client"))
            .collect();
        (counts, anomalies)
    }
}
