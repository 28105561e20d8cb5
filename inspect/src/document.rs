//! The JSON document of the contract written piece by piece, so that a caller never holds the
//! whole [`Report`](crate::Report): the sessions one at a time as they are settled in
//! first-packet order ([`crate::Inspector::take_sessions_in_order`]), then the head — whose
//! `capture` facts are known only at the end of input — and the tail. Put together (head,
//! sessions, tail) the pieces are byte for byte
//! [`Report::to_json_compact`](crate::Report::to_json_compact); passed through
//! [`PrettyJson`], byte for byte [`Report::to_json`](crate::Report::to_json).
//!
//! ```no_run
//! # use std::io::Write as _;
//! # fn main() -> std::io::Result<()> {
//! # let chunks: Vec<Vec<u8>> = Vec::new();
//! let mut inspector = socksgate_inspect::Inspector::new(Default::default());
//! let mut document = socksgate_inspect::DocumentWriter::new();
//! let mut body = Vec::new(); // or a temporary file: the head goes first but comes last
//! for chunk in &chunks {
//!     inspector.push(chunk).unwrap();
//!     for session in inspector.take_sessions_in_order() {
//!         document.write_session(&mut body, &session)?;
//!     }
//! }
//! let rest = inspector.finish().unwrap();
//! for session in &rest.sessions {
//!     document.write_session(&mut body, session)?;
//! }
//! let mut out = socksgate_inspect::PrettyJson::new(std::io::stdout().lock());
//! out.write_all(document.head(&rest.capture).as_bytes())?;
//! out.write_all(&body)?;
//! out.write_all(document.tail().as_bytes())?;
//! out.flush()?;
//! # Ok(()) }
//! ```

use std::io::{self, Write};

use crate::{CaptureInfo, Session};

/// Writes the compact document's pieces; remembers whether a session was written (for the
/// separators).
#[derive(Debug, Clone, Copy, Default)]
pub struct DocumentWriter {
    sessions: u64,
}

impl DocumentWriter {
    /// A document with no session written yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions written so far.
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    /// Appends the next session of the `sessions` array (with its separator) to `out`.
    /// Sessions must come in first-packet order, as in the document.
    pub fn write_session(&mut self, out: &mut impl Write, session: &Session) -> io::Result<()> {
        if self.sessions > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, session).map_err(io::Error::other)?;
        self.sessions += 1;
        Ok(())
    }

    /// The document up to the first session: `{"capture":{…},"sessions":[`.
    pub fn head(&self, capture: &CaptureInfo) -> String {
        // Serialising these plain types cannot fail.
        let capture = serde_json::to_string(capture).unwrap_or_default();
        format!("{{\"capture\":{capture},\"sessions\":[")
    }

    /// The document after the last session.
    pub fn tail(&self) -> &'static str {
        "]}"
    }
}

/// Re-indents compact JSON (as serde_json writes it: no whitespace outside strings) into the
/// form of `serde_json::to_string_pretty` — two spaces per level, `": "`, empty `[]` and `{}`
/// kept on one line — as it streams through, whatever the pieces it is written in.
///
/// Hand-written rather than `serde_json` re-serialising a parsed value: it needs no memory
/// for the value (a document can be gigabytes) and is a single pass over the bytes.
#[derive(Debug)]
pub struct PrettyJson<W: Write> {
    out: W,
    buf: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// A `{` or `[` was just written: a line break follows unless it closes at once.
    opened: bool,
}

/// Bytes gathered before they are written to the inner writer.
const PRETTY_BUFFER: usize = 64 * 1024;

impl<W: Write> PrettyJson<W> {
    /// Re-indents into `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(PRETTY_BUFFER + 1024),
            depth: 0,
            in_string: false,
            escaped: false,
            opened: false,
        }
    }

    /// Flushes and returns the inner writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        let Self { out, .. } = self;
        Ok(out)
    }

    fn newline(&mut self) {
        self.buf.push(b'\n');
        for _ in 0..self.depth {
            self.buf.extend_from_slice(b"  ");
        }
    }

    fn push(&mut self, input: &[u8]) {
        let mut rest = input;
        while let Some((&b, after)) = rest.split_first() {
            if self.in_string {
                if self.escaped {
                    // The character after a backslash, whatever it is.
                    self.escaped = false;
                    self.buf.push(b);
                    rest = after;
                    continue;
                }
                // Copy up to the next quote or backslash in one go.
                let run = rest
                    .iter()
                    .position(|&c| c == b'"' || c == b'\\')
                    .unwrap_or(rest.len());
                let (plain, tail) = rest.split_at(run);
                self.buf.extend_from_slice(plain);
                let Some((&c, after)) = tail.split_first() else {
                    break;
                };
                self.buf.push(c);
                if c == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                }
                rest = after;
                continue;
            }
            if self.opened {
                self.opened = false;
                if b == b'}' || b == b']' {
                    self.depth = self.depth.saturating_sub(1);
                    self.buf.push(b);
                    rest = after;
                    continue;
                }
                self.newline();
            }
            match b {
                b'{' | b'[' => {
                    self.buf.push(b);
                    self.depth += 1;
                    self.opened = true;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.newline();
                    self.buf.push(b);
                }
                b',' => {
                    self.buf.push(b',');
                    self.newline();
                }
                b':' => self.buf.extend_from_slice(b": "),
                b'"' => {
                    self.buf.push(b'"');
                    self.in_string = true;
                }
                _ => self.buf.push(b),
            }
            rest = after;
        }
    }
}

impl<W: Write> Write for PrettyJson<W> {
    fn write(&mut self, input: &[u8]) -> io::Result<usize> {
        self.push(input);
        if self.buf.len() >= PRETTY_BUFFER {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(input.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}
