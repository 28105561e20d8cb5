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
}

impl Inspector {
    /// A new inspection.
    pub fn new(options: Options) -> Self {
        Self {
            reader: Reader::new(),
            engine: Engine::new(options),
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

    /// Bytes pushed so far.
    pub fn bytes_read(&self) -> usize {
        self.reader.bytes_read()
    }

    /// Connections currently held in memory (not yet reported).
    pub fn live_connections(&self) -> usize {
        self.engine.live_connections()
    }

    /// End of input: reports every session not yet taken (those ended but not taken first,
    /// then those still open, in order of first packet) with the facts about the file.
    pub fn finish(self) -> Result<Report, InspectError> {
        let Self { reader, mut engine } = self;
        let total = reader.bytes_read();
        let summary = reader.finish(&mut |frame| engine.frame(frame))?;
        let mut sessions = engine.take_ready();
        sessions.extend(engine.finish());
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
