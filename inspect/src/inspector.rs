//! The streaming inspector: capture bytes pushed in chunks of any size, sessions handed out as
//! their connections end.
//!
//! Memory is bounded by the connections alive at one point of the capture (each holding at
//! most its out-of-order bytes, [`Options::reassembly_cap`] per direction, and the first
//! [`crate::session::RETAIN`] bytes per direction until its handshake is decoded), by the
//! messages kept per session, and by one capture record being completed
//! ([`crate::capture::MAX_PENDING`]) — not by the size of the file.

use crate::capture::{self, Reader};
use crate::engine::Engine;
use crate::{CaptureInfo, InspectError, Options, Report, Session};

/// A capture inspection fed chunk by chunk.
///
/// ```
/// # let file: Vec<u8> = Vec::new();
/// let mut inspector = socksgate_inspect::Inspector::new(socksgate_inspect::Options::default());
/// for chunk in file.chunks(64 * 1024) {
///     inspector.push(chunk)?;
///     for session in inspector.take_sessions() {
///         println!("{}", serde_json::to_string(&session).unwrap());
///     }
/// }
/// # if file.is_empty() { return Ok::<(), socksgate_inspect::InspectError>(()); }
/// let rest = inspector.finish()?; // the sessions still open at the end, and the file facts
/// # Ok::<(), socksgate_inspect::InspectError>(())
/// ```
///
/// A session is reported once, when its connection ends: one second of capture time after
/// its FIN in both directions or its RST (so that the last ACKs still count towards its
/// `end`), after [`Options::idle_timeout`] of capture time without a packet, or at
/// [`Inspector::finish`]. Sessions come in the order they end; [`crate::inspect`] sorts them
/// by first packet. The same bytes give the same sessions whatever the chunk sizes.
#[derive(Debug)]
pub struct Inspector {
    reader: Reader,
    engine: Engine,
    /// Sessions that ended while an older connection that may be SOCKS was still open, held by
    /// [`Inspector::take_sessions_in_order`] until that one is reported.
    held: Vec<Session>,
    /// [`Inspector::take_sessions_in_order`] was used: `finish` sorts what it returns.
    in_order: bool,
}

impl Inspector {
    /// A new inspection.
    pub fn new(options: Options) -> Self {
        Self {
            reader: Reader::new(),
            engine: Engine::new(options),
            held: Vec::new(),
            in_order: false,
        }
    }

    /// Feeds the next bytes of the capture.
    ///
    /// Errors as soon as the first bytes show the input is not a pcap/pcapng capture, or on a
    /// malformed pcapng block; the inspector must not be used after an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), InspectError> {
        let engine = &mut self.engine;
        self.reader.push(chunk, &mut |frame| engine.frame(frame))
    }

    /// The sessions that ended since the last call, in the order they ended.
    pub fn take_sessions(&mut self) -> Vec<Session> {
        self.engine.take_ready()
    }

    /// The sessions that ended and whose place in first-packet order is settled — every
    /// connection still open that may be SOCKS started after them — in order of first packet.
    /// The others are held until it is; [`Inspector::finish`] returns them with the rest.
    ///
    /// Writes the document's `sessions` array as the capture is read (`socksgate inspect
    /// --json`, the edge worker) while memory holds, beyond the live connections, only the
    /// sessions that ended while an older one was still open. Use either this or
    /// [`Inspector::take_sessions`] on one inspection, not both.
    pub fn take_sessions_in_order(&mut self) -> Vec<Session> {
        self.in_order = true;
        let ended = self.engine.take_ready();
        if ended.is_empty() && self.held.is_empty() {
            return ended;
        }
        self.held.extend(ended);
        // Connection ids follow first frames, so first frames are distinct: no ties.
        self.held.sort_unstable_by_key(|s| s.first_frame);
        let settled = match self.engine.oldest_possible_session() {
            None => self.held.len(),
            Some(oldest) => self.held.partition_point(|s| s.first_frame < oldest),
        };
        let rest = self.held.split_off(settled);
        core::mem::replace(&mut self.held, rest)
    }

    /// Sessions ended but held by [`Inspector::take_sessions_in_order`] (waiting for an older
    /// connection to end).
    pub fn held_sessions(&self) -> usize {
        self.held.len()
    }

    /// Bytes pushed so far.
    pub fn bytes_read(&self) -> usize {
        self.reader.bytes_read()
    }

    /// Connections currently held in memory (not yet reported).
    pub fn live_connections(&self) -> usize {
        self.engine.live_connections()
    }

    /// End of input: reports every session not yet taken (those ended but not taken first,
    /// then those still open, in order of first packet; after
    /// [`Inspector::take_sessions_in_order`], all of them in order of first packet) with the
    /// facts about the file.
    pub fn finish(self) -> Result<Report, InspectError> {
        let Self {
            reader,
            mut engine,
            held,
            in_order,
        } = self;
        let total = reader.bytes_read();
        let summary = reader.finish(&mut |frame| engine.frame(frame))?;
        let mut sessions = engine.take_ready();
        sessions.extend(engine.finish());
        if in_order {
            sessions.extend(held);
            sessions.sort_by_key(|s| s.first_frame);
        }
        Ok(Report {
            capture: CaptureInfo {
                format: summary.format.name(),
                packets: summary.packets,
                link_types: summary
                    .link_types
                    .iter()
                    .map(|&l| capture::link_type_name(l))
                    .collect(),
                bytes: total,
                tcp_connections: engine.tcp_connections(),
                truncated: summary.truncated,
            },
            sessions,
        })
    }
}
