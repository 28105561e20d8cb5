//! Driver for the `observe_chunks` target: runs `observe::Conversation` over two streams fed
//! in chunks, and records what it saw in a form that does not depend on the chunking.
//!
//! Random bytes hardly ever frame a GSS-API exchange with tokens longer than the observer's
//! buffer (which it skips instead of holding), so an input may ask for one to be put in
//! front of its streams ([`Input::gssapi`]).

use arbitrary::Arbitrary;
use socksgate_core::observe::{Conversation, Direction, Event};

/// Two streams and a way to cut and interleave them.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Client → server bytes.
    pub up: Vec<u8>,
    /// Server → client bytes.
    pub down: Vec<u8>,
    /// Chunk sizes, cycled (0 reads as 1).
    pub sizes: Vec<u8>,
    /// Which direction each round feeds first, cycled.
    pub order: Vec<bool>,
    /// A SOCKS5 GSS-API handshake put in front of `up` and `down`, if any.
    pub gssapi: Option<Gssapi>,
}

/// A SOCKS5 greeting offering GSS-API and its selection, then RFC 1961 messages framed with
/// these `(MTYP, LEN)` (at most four per direction, tokens of LEN pattern bytes: up to
/// 65 535, so mostly longer than the observer's buffer).
#[derive(Arbitrary, Debug)]
pub struct Gssapi {
    /// The client's messages.
    pub up: Vec<(u8, u16)>,
    /// The server's messages.
    pub down: Vec<(u8, u16)>,
}

impl Input {
    /// The client and server streams: [`Input::gssapi`]'s handshake, then `up` and `down`.
    pub fn streams(&self) -> (Vec<u8>, Vec<u8>) {
        let Some(g) = &self.gssapi else {
            return (self.up.clone(), self.down.clone());
        };
        let frame = |mut out: Vec<u8>, msgs: &[(u8, u16)], tail: &[u8]| {
            for (i, &(mtyp, len)) in msgs.iter().take(4).enumerate() {
                out.extend_from_slice(&[1, mtyp]);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend((0..len).map(|b| (b as u8).wrapping_add(i as u8)));
            }
            out.extend_from_slice(tail);
            out
        };
        (
            frame(vec![5, 1, 1], &g.up, &self.up),
            frame(vec![5, 1], &g.down, &self.down),
        )
    }
}

/// Every non-payload event in order, and each direction's payload as merged ranges.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    /// `Debug` of each message and anomaly.
    pub events: Vec<String>,
    /// Payload `(start, end)` ranges per direction.
    pub payload: [Vec<(u64, u64)>; 2],
}

/// Feeds the streams (in one piece each when `chunked` is false), polling after every feed
/// and offering again what was not accepted, until nothing moves. Checks on the way that
/// `feed` never takes more than offered and that messages and payload tile each stream.
pub fn drive_observer(input: &Input, chunked: bool) -> Seen {
    let mut conv = Conversation::new();
    let (up, down) = input.streams();
    let mut rest = [up.as_slice(), down.as_slice()];
    let mut tiled = [0u64; 2];
    let mut seen = Seen {
        events: Vec::new(),
        payload: [Vec::new(), Vec::new()],
    };
    let mut step = 0usize;
    loop {
        let mut progress = false;
        let first = chunked
            && input
                .order
                .get(step % input.order.len().max(1))
                .copied()
                .unwrap_or(false);
        for pass in 0..2 {
            let i = usize::from(first) ^ pass;
            let dir = [Direction::ClientToServer, Direction::ServerToClient][i];
            let size = match input.sizes.get(step % input.sizes.len().max(1)) {
                Some(&n) if chunked => usize::from(n.max(1)),
                _ => usize::MAX,
            };
            step += 1;
            let chunk = &rest[i][..rest[i].len().min(size)];
            let n = conv.feed(dir, chunk);
            assert!(n <= chunk.len(), "feed took {n} of {} bytes", chunk.len());
            rest[i] = &rest[i][n..];
            progress |= n > 0;
            while let Some(event) = conv.poll() {
                progress = true;
                let (dir, span) = match event {
                    Event::Message(m) => (m.dir, m.span),
                    Event::Payload { dir, span } => (dir, span),
                    Event::Anomaly(a) => {
                        let _ = a.to_string();
                        seen.events.push(format!("{a:?}"));
                        continue;
                    }
                    other => {
                        seen.events.push(format!("{other:?}"));
                        continue;
                    }
                };
                let d = dir as usize;
                assert_eq!(
                    span.offset, tiled[d],
                    "{event:?} does not follow the last span"
                );
                tiled[d] += span.len as u64;
                if let Event::Payload { .. } = event {
                    let ranges = &mut seen.payload[d];
                    let end = span.offset + span.len as u64;
                    match ranges.last_mut() {
                        Some(last) if last.1 == span.offset => last.1 = end,
                        _ => ranges.push((span.offset, end)),
                    }
                } else {
                    seen.events.push(format!("{event:?}"));
                }
            }
        }
        if !progress {
            return seen;
        }
    }
}
