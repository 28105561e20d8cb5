//! Following the protected part of an RFC 1961 session: once the client encapsulates its
//! request (§5), both directions are sequences of encapsulated messages until the end. They
//! cannot be read without the GSS-API context, so each direction's messages are counted as
//! the core's [`Decapsulator`] frames them (in fixed memory, over the whole connection — not
//! just the bytes the handshake decoder keeps; the token pieces are counted, never kept).

use socksgate_core::gssapi::{Decapsulator, GssapiError};
use socksgate_core::wire::WireError;

use crate::report::Encapsulated;
use crate::session::Retained;
use crate::tcp_reassembly::Delivered;

/// Counts one direction's encapsulated messages from [`Decapsulator`]'s output. Fed the
/// direction's bytes in order from the first encapsulated message's header; the positions it
/// reports count from there.
#[derive(Debug, Default)]
struct MessageCounter {
    decoder: Decapsulator,
    /// Bytes the decoder took so far.
    fed: u64,
    /// Where the message being read (or the next one) starts.
    message_start: u64,
    /// Token bytes of the message being read, counted only once it is whole.
    token_so_far: u64,
    messages: u64,
    token_bytes: u64,
    /// What stopped counting, and where the offending message starts.
    stop: Option<(u64, GssapiError)>,
}

impl MessageCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while self.stop.is_none() && !bytes.is_empty() {
            if self.decoder.at_boundary() {
                self.message_start = self.fed;
            }
            match self.decoder.decode(bytes) {
                Ok((consumed, piece)) => {
                    bytes = bytes.get(consumed..).unwrap_or_default();
                    self.fed += consumed as u64;
                    if let Some(piece) = piece {
                        self.token_so_far += piece.bytes.len() as u64;
                        if piece.last {
                            self.messages += 1;
                            self.token_bytes += std::mem::take(&mut self.token_so_far);
                        }
                    }
                }
                // The decoder never crosses a message boundary in one call, so the error
                // belongs to the message starting at `message_start`.
                Err(e) => self.stop = Some((self.message_start, e)),
            }
        }
    }

    /// True between messages (nothing of a message fed but not finished).
    fn at_boundary(&self) -> bool {
        self.decoder.at_boundary()
    }
}

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
    fn new(start: u64) -> Self {
        Self {
            counter: MessageCounter::default(),
            start,
            next: start,
            gap: None,
        }
    }

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
        if let Some((rel, stop)) = self.counter.stop {
            let at = self.start + rel;
            return Some(match stop {
                GssapiError::Aborted => {
                    format!("GSS-API context aborted {dir} at stream offset {at}")
                }
                GssapiError::Malformed(WireError::BadVersion(version)) => format!(
                    "malformed GSS-API encapsulated message {dir} at stream offset {at}: version {version}; not counted further"
                ),
                GssapiError::UnexpectedMessage(kind) => format!(
                    "GSS-API {} message {dir} at stream offset {at} among encapsulated messages; not counted further",
                    kind.describe(),
                ),
                // The decoder reports nothing else today; say what it said if it ever does.
                other => format!(
                    "GSS-API encapsulated message {dir} at stream offset {at}: {other}; not counted further"
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
        let mut halves = start.map(Half::new);
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
            messages: h.counter.messages,
            bytes: h.counter.token_bytes,
        });
        let anomalies = self.halves[0]
            .anomaly("client→server")
            .into_iter()
            .chain(self.halves[1].anomaly("server→client"))
            .collect();
        (counts, anomalies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksgate_core::gssapi::encapsulation_header;
    use socksgate_core::wire::gssapi::GssapiMessageType;

    /// Three messages with tokens of 3, 0 and 20 octets.
    fn stream() -> Vec<u8> {
        let mut stream = Vec::new();
        for len in [3usize, 0, 20] {
            stream.extend_from_slice(&encapsulation_header(len).unwrap());
            stream.extend(std::iter::repeat_n(0xab, len));
        }
        stream
    }

    #[test]
    fn counts_the_same_across_any_chunking() {
        let stream = stream();
        for chunk in 1..=stream.len() {
            let mut c = MessageCounter::default();
            for part in stream.chunks(chunk) {
                c.feed(part);
            }
            assert_eq!((c.messages, c.token_bytes), (3, 23), "chunk {chunk}");
            assert!(c.at_boundary() && c.stop.is_none(), "chunk {chunk}");
        }
    }

    #[test]
    fn a_cut_last_message_counts_in_neither() {
        let stream = stream();
        let mut half = Half::new(100);
        half.feed(100, &stream[..stream.len() - 1]);
        assert_eq!((half.counter.messages, half.counter.token_bytes), (2, 3));
        assert_eq!(
            half.anomaly("up").as_deref(),
            Some("truncated: last encapsulated message up incomplete")
        );
    }

    #[test]
    fn stops_at_abort_other_type_and_bad_version() {
        let cases: [(&[u8], u64, GssapiError, &str); 4] = [
            (
                &[1, 3, 0, 1, 9, 1, 0xff, 1, 3],
                1,
                GssapiError::Aborted,
                "GSS-API context aborted up at stream offset 15",
            ),
            (
                &[5, 1],
                0,
                GssapiError::Malformed(WireError::BadVersion(5)),
                "malformed GSS-API encapsulated message up at stream offset 10: version 5; not counted further",
            ),
            (
                &[1, 3, 0, 0, 1, 1, 0, 0, 1, 3, 0, 0],
                1,
                GssapiError::UnexpectedMessage(GssapiMessageType::Context),
                "GSS-API authentication message up at stream offset 14 among encapsulated messages; not counted further",
            ),
            // A stream cut right after the wrong type still says why it stopped.
            (
                &[1, 3, 0, 0, 1, 2],
                1,
                GssapiError::UnexpectedMessage(GssapiMessageType::Protection),
                "",
            ),
        ];
        for (bytes, messages, error, text) in cases {
            for chunk in 1..=bytes.len() {
                let mut half = Half::new(10);
                let mut offset = 10;
                for part in bytes.chunks(chunk) {
                    half.feed(offset, part);
                    offset += part.len() as u64;
                }
                assert_eq!(half.counter.messages, messages, "{bytes:?} by {chunk}");
                assert_eq!(half.counter.stop.map(|s| s.1), Some(error));
                if !text.is_empty() {
                    assert_eq!(half.anomaly("up").as_deref(), Some(text));
                }
            }
        }
    }
}
