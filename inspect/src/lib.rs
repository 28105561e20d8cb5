//! # socksgate-inspect
//!
//! The capture inspector engine behind `socksgate inspect` and the browser page: reads a
//! pcap or pcapng capture, reassembles TCP, finds SOCKS4/4a/5 control connections on any port,
//! decodes their handshakes with `socksgate-core`'s parsers, matches UDP ASSOCIATE datagrams,
//! and reports one [`Session`] per SOCKS connection — the JSON contract in inspect/README.md.
//!
//! ```no_run
//! let bytes = std::fs::read("capture.pcapng").unwrap();
//! let report = socksgate_inspect::inspect(&bytes, &socksgate_inspect::Options::default()).unwrap();
//! println!("{}", report.to_json()); // or `{report}` for text
//! ```
//!
//! Modules, in data-flow order: [`capture`] (file formats) → [`link`] (link/IP/TCP/UDP) →
//! [`tcp_reassembly`] → [`detect`] (is it SOCKS?) → `socks` (the core's parsers) →
//! [`session`] (handshake decoder) → [`udp_match`] → [`tunnel`] (HTTP/TLS/SSH) → [`report`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capture;
pub mod detect;
mod document;
mod encapsulation;
mod engine;
mod inspector;
mod kerberos;
pub mod link;
pub mod report;
pub mod session;
mod socks;
pub mod tcp_reassembly;
pub mod tunnel;
pub mod udp_match;

pub use document::{DocumentWriter, PrettyJson};
pub use inspector::Inspector;
pub use report::{
    CaptureInfo, Dir, Encapsulated, Field, Gssapi, GssapiToken, Message, Protection, Report,
    Session,
};

/// Inspection settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Include RFC 1929 passwords (`"password"` key, and the bytes in message hex). Off by
    /// default: passwords are masked.
    pub show_secrets: bool,
    /// Most out-of-order bytes buffered per TCP direction before a hole is declared a gap.
    pub reassembly_cap: usize,
    /// Capture seconds without a packet after which an open connection is reported as it
    /// stands (default 900 s: a live capture reports a stalled connection without waiting for
    /// the end of input); packets after that start a new connection. `None`: never.
    pub idle_timeout: Option<f64>,
    /// Key of the connection table's hash (foldhash). The inspector reads untrusted captures,
    /// whose 4-tuples an attacker chooses: with a key they cannot guess, they cannot craft
    /// tuples that collide in the table (HashDoS). Random by default where the standard
    /// library has a random source (the OS); on `wasm32-unknown-unknown` it has none, so the
    /// wasm binding draws it from JavaScript's `Math.random()`.
    pub hash_seed: u64,
}

/// A random [`Options::hash_seed`]: from std's `RandomState`, whose keys come from the OS (on
/// `wasm32-unknown-unknown` they are fixed: set the seed from the host there).
pub fn random_hash_seed() -> u64 {
    use core::hash::BuildHasher as _;
    std::hash::RandomState::new().hash_one(0x5eed_u64)
}

/// Default [`Options::idle_timeout`]: 15 minutes of capture time.
pub const DEFAULT_IDLE_TIMEOUT: f64 = 900.0;

impl Default for Options {
    fn default() -> Self {
        Self {
            show_secrets: false,
            reassembly_cap: tcp_reassembly::DEFAULT_CAP,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            hash_seed: random_hash_seed(),
        }
    }
}

impl Options {
    /// Default options with `show_secrets` set as given.
    pub fn with_secrets(show_secrets: bool) -> Self {
        Self {
            show_secrets,
            ..Self::default()
        }
    }
}

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// Zero bytes.
    #[error("the file is empty")]
    Empty,
    /// The first bytes are neither a pcap nor a pcapng magic number.
    #[error(
        "not a capture file: expected pcap (magic a1b2c3d4 / a1b23c4d, either byte order) or \
         pcapng (0a0d0d0a), found {magic}"
    )]
    NotACapture {
        /// The first bytes, as hex.
        magic: String,
    },
    /// The file ends inside its header.
    #[error("the capture file is cut short inside its header (at byte {offset})")]
    Truncated {
        /// Where it ends.
        offset: usize,
    },
    /// A block or record could not be parsed.
    #[error("malformed capture at byte {offset}: {reason}")]
    Malformed {
        /// File offset of the bad block.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A capture variant this inspector does not read.
    #[error("unsupported capture format: {0}")]
    Unsupported(String),
}

/// Progress of a running inspection, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the file processed.
    pub done: usize,
    /// File size.
    pub total: usize,
}

/// Inspects a whole capture held in memory.
///
/// Returns every SOCKS session found (in order of first packet) and facts about the file.
/// Errors only when `capture` is not a readable pcap/pcapng file; damage after the first
/// packets (a cut-off last record) is reported in [`CaptureInfo::truncated`].
pub fn inspect(capture: &[u8], options: &Options) -> Result<Report, InspectError> {
    inspect_with_progress(capture, options, &mut |_| {})
}

/// What `socksgate inspect FILE [--json] [--show-secrets]` prints: the JSON contract document
/// (pretty) with `json`, else the text rendering. The CLI reads FILE, calls this, prints the
/// result, and on error prints `FILE: {error}` and exits non-zero.
pub fn render(capture: &[u8], json: bool, show_secrets: bool) -> Result<String, InspectError> {
    let report = inspect(capture, &Options::with_secrets(show_secrets))?;
    Ok(if json {
        report.to_json()
    } else {
        report.to_string()
    })
}

/// [`inspect`], calling `progress` about every MiB and once at the end (`done == total`).
///
/// A thin wrapper of [`Inspector`]: pushes the capture in 1 MiB chunks and returns the
/// sessions in order of first packet.
pub fn inspect_with_progress(
    capture: &[u8],
    options: &Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, InspectError> {
    const CHUNK: usize = 1 << 20;
    let total = capture.len();
    let mut inspector = Inspector::new(options.clone());
    let mut sessions = Vec::new();
    for chunk in capture.chunks(CHUNK) {
        inspector.push(chunk)?;
        sessions.extend(inspector.take_sessions());
        let done = inspector.bytes_read();
        if done < total {
            progress(Progress { done, total });
        }
    }
    let mut report = inspector.finish()?;
    sessions.append(&mut report.sessions);
    // One connection per first frame: the order of first packets.
    sessions.sort_by_key(|s| s.first_frame);
    report.sessions = sessions;
    progress(Progress { done: total, total });
    Ok(report)
}
