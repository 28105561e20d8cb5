//! Browser and edge-runtime binding of the socksgate capture inspector.
//!
//! Pure functions: bytes in, the inspector's JSON document (the JSON contract in
//! inspect/README.md, plus `messages` for the detail pane) out. Nothing is fetched or stored;
//! the capture never leaves the caller.
//!
//! ```js
//! import init, { inspect } from "./pkg/socksgate_wasm.js";
//! await init();
//! const report = JSON.parse(inspect(new Uint8Array(await file.arrayBuffer()), false));
//! ```
#![forbid(unsafe_code)]

mod deflated;
#[cfg(target_arch = "wasm32")]
mod heap;
mod table;
mod zstd;
pub use deflated::Deflated;
pub use table::{SessionTable, session_table};
pub use zstd::ZstdDecoder;

use socksgate_inspect::{Options, Progress};
use wasm_bindgen::prelude::*;

/// The inspector's options, its hash keyed from the host's random source: std has none on
/// `wasm32-unknown-unknown`, where `Options::default()` would key every inspection alike
/// (see `Options::hash_seed`). `Math.random()` is in every runtime the package runs in and
/// is seeded by the engine from the OS; unpredictable enough for a hash key.
fn options(reveal_secrets: bool) -> Options {
    let mut options = Options::with_secrets(reveal_secrets);
    options.hash_seed = hash_seed();
    options
}

/// A random hash key: from `Math.random()` in wasm (see [`options`]), from std elsewhere.
fn hash_seed() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        // 53 random bits per call (the f64's mantissa).
        let bits = || (js_sys::Math::random() * (1u64 << 53) as f64) as u64;
        (bits() << 11) ^ bits()
    }
    #[cfg(not(target_arch = "wasm32"))]
    socksgate_inspect::random_hash_seed()
}

/// Inspects a pcap/pcapng capture; returns the report as a JSON string.
///
/// `reveal_secrets` adds RFC 1929 passwords (`"password"`) and unmasks them in message hex.
/// Throws an `Error` with a readable message for files that are not captures.
#[wasm_bindgen]
pub fn inspect(bytes: &[u8], reveal_secrets: bool) -> Result<String, JsError> {
    inspect_json(bytes, reveal_secrets, &mut |_| {}).map_err(|e| JsError::new(&e))
}

/// [`inspect`], calling `on_progress(done, total)` (bytes) about every MiB.
#[wasm_bindgen(js_name = inspectWithProgress)]
pub fn inspect_with_progress(
    bytes: &[u8],
    reveal_secrets: bool,
    on_progress: &js_sys::Function,
) -> Result<String, JsError> {
    let mut report = |p: Progress| {
        let _ = on_progress.call2(
            &JsValue::NULL,
            &JsValue::from_f64(p.done as f64),
            &JsValue::from_f64(p.total as f64),
        );
    };
    inspect_json(bytes, reveal_secrets, &mut report).map_err(|e| JsError::new(&e))
}

/// The CLI's text rendering of the report.
#[wasm_bindgen(js_name = inspectText)]
pub fn inspect_text(bytes: &[u8], reveal_secrets: bool) -> Result<String, JsError> {
    socksgate_inspect::inspect(bytes, &options(reveal_secrets))
        .map(|r| r.to_string())
        .map_err(|e| JsError::new(&e.to_string()))
}

/// A capture inspected chunk by chunk (a `ReadableStream`, a streamed request body): memory
/// stays bounded by the connections alive at one point of the capture, not by its size.
///
/// ```js
/// const inspector = new Inspector(false);
/// const sessions = [];
/// for await (const chunk of body) sessions.push(...JSON.parse(inspector.push(chunk)));
/// const report = JSON.parse(inspector.finish()); // { capture, sessions: the rest }
/// report.sessions = sessions.concat(report.sessions).sort((a, b) => a.first_frame - b.first_frame);
/// ```
#[wasm_bindgen(js_name = Inspector)]
#[derive(Debug)]
pub struct StreamingInspector {
    inner: Option<socksgate_inspect::Inspector>,
    /// Sessions kept by `pushKeep` for `finishInspection`.
    kept: Vec<socksgate_inspect::Session>,
    /// The document written by `pushDocument`/`finishDocument`.
    document: socksgate_inspect::DocumentWriter,
    /// The document's head, known once `finishDocument` has run.
    head: Option<String>,
    /// The document kept by `pushDocumentKept`: its `sessions` deflated, then (once
    /// `finishDocumentKept` has run) the rest, read back by `readDocument`.
    kept_document: Option<KeptDocument>,
}

/// The document of `pushDocumentKept`/`finishDocumentKept`/`readDocument`.
#[derive(Debug, Default)]
struct KeptDocument {
    sessions: Deflated,
    /// Head and rest, after `finishDocumentKept`; the head is sent first.
    head: Option<Vec<u8>>,
    rest: Option<Vec<u8>>,
}

#[wasm_bindgen(js_class = Inspector)]
impl StreamingInspector {
    /// A new inspection; `reveal_secrets` as for [`inspect`].
    #[wasm_bindgen(constructor)]
    pub fn new(reveal_secrets: bool) -> Self {
        Self {
            inner: Some(socksgate_inspect::Inspector::new(options(reveal_secrets))),
            kept: Vec::new(),
            document: socksgate_inspect::DocumentWriter::new(),
            head: None,
            kept_document: None,
        }
    }

    /// Feeds the next bytes; returns the sessions whose connections ended, as a JSON array
    /// (in the order they ended). Throws as soon as the bytes show the input is not a
    /// capture; the inspector is unusable after a throw.
    pub fn push(&mut self, chunk: &[u8]) -> Result<String, JsError> {
        push_json(&mut self.inner, chunk).map_err(|e| JsError::new(&e))
    }

    /// End of input: the JSON document (the contract's `capture` and the `sessions` not yet
    /// returned by `push`, in order of first packet).
    pub fn finish(&mut self) -> Result<String, JsError> {
        finish_json(&mut self.inner).map_err(|e| JsError::new(&e))
    }

    /// Feeds the next bytes; returns the sessions whose connections ended as JSON lines (one
    /// session object and `\n` each, in the order they ended; `""` if none) — the lines of
    /// `socksgate inspect --json-lines`. Throws as `push` does.
    #[wasm_bindgen(js_name = pushLines)]
    pub fn push_lines(&mut self, chunk: &[u8]) -> Result<String, JsError> {
        push_lines(&mut self.inner, chunk).map_err(|e| JsError::new(&e))
    }

    /// End of input after `pushLines`: the sessions still open as JSON lines, then the last
    /// line `{"capture": {...}}` — the end of `socksgate inspect --json-lines`.
    #[wasm_bindgen(js_name = finishLines)]
    pub fn finish_lines(&mut self) -> Result<String, JsError> {
        finish_lines(&mut self.inner).map_err(|e| JsError::new(&e))
    }

    /// `pushLines` returning the lines as UTF-8 bytes (a `Uint8Array`): what a stream of
    /// bytes (an HTTP answer) wants, without decoding into a JS string and encoding back.
    #[wasm_bindgen(js_name = pushLinesBytes)]
    pub fn push_lines_bytes(&mut self, chunk: &[u8]) -> Result<Vec<u8>, JsError> {
        push_lines_bytes(&mut self.inner, chunk).map_err(|e| JsError::new(&e))
    }

    /// `finishLines` returning UTF-8 bytes, as `pushLinesBytes`.
    #[wasm_bindgen(js_name = finishLinesBytes)]
    pub fn finish_lines_bytes(&mut self) -> Result<Vec<u8>, JsError> {
        finish_lines_bytes(&mut self.inner).map_err(|e| JsError::new(&e))
    }

    /// Feeds the next bytes and keeps the sessions that ended in wasm memory (compact, no
    /// JSON) for [`StreamingInspector::finish_inspection`]; returns how many are kept. For
    /// pages that show a large capture: cheaper than `push` when every session is wanted.
    #[wasm_bindgen(js_name = pushKeep)]
    pub fn push_keep(&mut self, chunk: &[u8]) -> Result<u32, JsError> {
        let i = pushed(&mut self.inner, chunk).map_err(|e| JsError::new(&e))?;
        self.kept.append(&mut i.take_sessions());
        Ok(u32::try_from(self.kept.len()).unwrap_or(u32::MAX))
    }

    /// End of input after `pushKeep`: an [`Inspection`] holding every session in order of
    /// first packet — the same as `new Inspection(wholeFile)`.
    #[wasm_bindgen(js_name = finishInspection)]
    pub fn finish_inspection(&mut self) -> Result<Inspection, JsError> {
        let i = finishing(&mut self.inner).map_err(|e| JsError::new(&e))?;
        let mut report = i.finish().map_err(|e| JsError::new(&e.to_string()))?;
        let mut sessions = core::mem::take(&mut self.kept);
        sessions.append(&mut report.sessions);
        sessions.sort_by_key(|s| s.first_frame);
        report.sessions = sessions;
        Ok(Inspection { report })
    }

    /// Feeds the next bytes; returns the next part of the compact JSON document's `sessions`
    /// array as UTF-8 (the sessions whose place in first-packet order is settled, with their
    /// commas; empty if none). The head that precedes them (`{"capture":…,"sessions":[`) is
    /// known only at the end: [`StreamingInspector::document_head`]. Memory holds the live
    /// connections and the sessions that ended while an older one was still open, never the
    /// document. Throws as `push` does.
    #[wasm_bindgen(js_name = pushDocument)]
    pub fn push_document(&mut self, chunk: &[u8]) -> Result<Vec<u8>, JsError> {
        push_document(&mut self.inner, &mut self.document, chunk).map_err(|e| JsError::new(&e))
    }

    /// End of input after `pushDocument`: the rest of the `sessions` array and the document's
    /// end (`]}`), as UTF-8. `documentHead()` then gives what goes before everything
    /// `pushDocument` returned: head + every `pushDocument` part + this = `inspect(file)`.
    #[wasm_bindgen(js_name = finishDocument)]
    pub fn finish_document(&mut self) -> Result<Vec<u8>, JsError> {
        let (head, rest) =
            finish_document(&mut self.inner, &mut self.document).map_err(|e| JsError::new(&e))?;
        self.head = Some(head);
        Ok(rest)
    }

    /// The document's head, `{"capture":{…},"sessions":[`, after `finishDocument`.
    #[wasm_bindgen(js_name = documentHead)]
    pub fn document_head(&self) -> Result<String, JsError> {
        self.head
            .clone()
            .ok_or_else(|| JsError::new("the document's head is known after finishDocument()"))
    }

    /// `pushDocument` keeping the part in wasm memory, deflated, instead of returning it: no
    /// part crosses into JS (in workerd their garbage, collected late, grew the process by
    /// hundreds of MiB on large documents). Returns the compressed bytes held so far. Do not
    /// mix with `pushDocument`.
    #[wasm_bindgen(js_name = pushDocumentKept)]
    pub fn push_document_kept(&mut self, chunk: &[u8]) -> Result<f64, JsError> {
        let kept = self.kept_document.get_or_insert_with(KeptDocument::default);
        let part = push_document(&mut self.inner, &mut self.document, chunk)
            .map_err(|e| JsError::new(&e))?;
        if !part.is_empty() {
            kept.sessions.write(&part).map_err(|e| JsError::new(&e))?;
        }
        Ok(kept.sessions.compressed_len() as f64)
    }

    /// End of input after `pushDocumentKept`; then `readDocument` gives the whole document.
    #[wasm_bindgen(js_name = finishDocumentKept)]
    pub fn finish_document_kept(&mut self) -> Result<(), JsError> {
        let kept = self.kept_document.get_or_insert_with(KeptDocument::default);
        let (head, rest) =
            finish_document(&mut self.inner, &mut self.document).map_err(|e| JsError::new(&e))?;
        kept.sessions.finish().map_err(|e| JsError::new(&e))?;
        kept.head = Some(head.into_bytes());
        kept.rest = Some(rest);
        Ok(())
    }

    /// After `finishDocumentKept`: the next piece of the compact JSON document (UTF-8, the
    /// sessions in pieces of at most `max` bytes; the head and the end whole), empty once all
    /// is read. The pieces together are byte for byte `inspect(wholeFile)`.
    #[wasm_bindgen(js_name = readDocument)]
    pub fn read_document(&mut self, max: u32) -> Result<Vec<u8>, JsError> {
        let kept = self
            .kept_document
            .as_mut()
            .filter(|k| k.rest.is_some())
            .ok_or_else(|| JsError::new("readDocument() comes after finishDocumentKept()"))?;
        if let Some(head) = kept.head.take() {
            return Ok(head);
        }
        let piece = kept
            .sessions
            .read(max as usize)
            .map_err(|e| JsError::new(&e))?;
        if !piece.is_empty() {
            return Ok(piece);
        }
        Ok(kept.rest.replace(Vec::new()).unwrap_or_default())
    }

    /// Bytes pushed so far.
    #[wasm_bindgen(getter, js_name = bytesRead)]
    pub fn bytes_read(&self) -> f64 {
        self.inner.as_ref().map_or(0.0, |i| i.bytes_read() as f64)
    }
}

/// Feeds `chunk` to a live inspector and returns it; a failed push ends the inspector (the
/// error says why, later calls say it has failed).
fn pushed<'a>(
    inspector: &'a mut Option<socksgate_inspect::Inspector>,
    chunk: &[u8],
) -> Result<&'a mut socksgate_inspect::Inspector, String> {
    let i = inspector.as_mut().ok_or_else(|| FINISHED.to_owned())?;
    let pushed = i.push(chunk);
    #[cfg(target_arch = "wasm32")]
    heap::reserve_ahead();
    if let Err(e) = pushed {
        *inspector = None;
        return Err(e.to_string());
    }
    inspector.as_mut().ok_or_else(|| FINISHED.to_owned())
}

/// Takes a live inspector for its end of input.
fn finishing(
    inspector: &mut Option<socksgate_inspect::Inspector>,
) -> Result<socksgate_inspect::Inspector, String> {
    inspector.take().ok_or_else(|| FINISHED.to_owned())
}

const FINISHED: &str = "this Inspector has finished or failed";

/// The target-independent part of `Inspector.push`.
pub fn push_json(
    inspector: &mut Option<socksgate_inspect::Inspector>,
    chunk: &[u8],
) -> Result<String, String> {
    let i = pushed(inspector, chunk)?;
    serde_json::to_string(&i.take_sessions()).map_err(|e| e.to_string())
}

/// The target-independent part of `Inspector.pushLines`.
pub fn push_lines(
    inspector: &mut Option<socksgate_inspect::Inspector>,
    chunk: &[u8],
) -> Result<String, String> {
    push_lines_bytes(inspector, chunk).and_then(utf8)
}

/// The target-independent part of `Inspector.pushLinesBytes`.
pub fn push_lines_bytes(
    inspector: &mut Option<socksgate_inspect::Inspector>,
    chunk: &[u8],
) -> Result<Vec<u8>, String> {
    let i = pushed(inspector, chunk)?;
    let mut lines = Vec::new();
    write_lines(&mut lines, &i.take_sessions())?;
    Ok(lines)
}

/// The target-independent part of `Inspector.finishLines`.
pub fn finish_lines(
    inspector: &mut Option<socksgate_inspect::Inspector>,
) -> Result<String, String> {
    finish_lines_bytes(inspector).and_then(utf8)
}

/// The target-independent part of `Inspector.finishLinesBytes`.
pub fn finish_lines_bytes(
    inspector: &mut Option<socksgate_inspect::Inspector>,
) -> Result<Vec<u8>, String> {
    let i = finishing(inspector)?;
    let report = i.finish().map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    write_lines(&mut lines, &report.sessions)?;
    // The last line, as the CLI writes it (its one-field struct serialises to exactly this).
    lines.extend_from_slice(b"{\"capture\":");
    serde_json::to_writer(&mut lines, &report.capture).map_err(|e| e.to_string())?;
    lines.extend_from_slice(b"}\n");
    Ok(lines)
}

/// Appends one line per session, serialised straight into `lines` (one growing buffer rather
/// than a string per session: allocation was a visible share of the time in workerd).
fn write_lines(lines: &mut Vec<u8>, sessions: &[socksgate_inspect::Session]) -> Result<(), String> {
    for session in sessions {
        serde_json::to_writer(&mut *lines, session).map_err(|e| e.to_string())?;
        lines.push(b'\n');
    }
    Ok(())
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// The target-independent part of `Inspector.pushDocument`.
pub fn push_document(
    inspector: &mut Option<socksgate_inspect::Inspector>,
    document: &mut socksgate_inspect::DocumentWriter,
    chunk: &[u8],
) -> Result<Vec<u8>, String> {
    let i = pushed(inspector, chunk)?;
    let mut part = Vec::new();
    for session in i.take_sessions_in_order() {
        document
            .write_session(&mut part, &session)
            .map_err(|e| e.to_string())?;
    }
    Ok(part)
}

/// The target-independent part of `Inspector.finishDocument`: the head and the rest.
pub fn finish_document(
    inspector: &mut Option<socksgate_inspect::Inspector>,
    document: &mut socksgate_inspect::DocumentWriter,
) -> Result<(String, Vec<u8>), String> {
    let i = finishing(inspector)?;
    let report = i.finish().map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    for session in &report.sessions {
        document
            .write_session(&mut rest, session)
            .map_err(|e| e.to_string())?;
    }
    rest.extend_from_slice(document.tail().as_bytes());
    Ok((document.head(&report.capture), rest))
}

/// The target-independent part of `Inspector.finish`.
pub fn finish_json(inspector: &mut Option<socksgate_inspect::Inspector>) -> Result<String, String> {
    let i = finishing(inspector)?;
    i.finish()
        .map(|r| r.to_json_compact())
        .map_err(|e| e.to_string())
}

/// The crate version, for the page footer.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The target-independent part of [`inspect`]: JSON or the error's message.
pub fn inspect_json(
    bytes: &[u8],
    reveal_secrets: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, String> {
    socksgate_inspect::inspect_with_progress(bytes, &options(reveal_secrets), progress)
        .map(|r| r.to_json_compact())
        .map_err(|e| e.to_string())
}

/// A finished inspection kept in wasm memory, for pages showing large captures: the session
/// table without messages first, then one session's messages when it is opened.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Inspection {
    report: socksgate_inspect::Report,
}

#[wasm_bindgen]
impl Inspection {
    /// Inspects `bytes`; `on_progress(done, total)` is called about every MiB if given.
    #[wasm_bindgen(constructor)]
    pub fn new(
        bytes: &[u8],
        reveal_secrets: bool,
        on_progress: Option<js_sys::Function>,
    ) -> Result<Self, JsError> {
        let mut report_progress = |p: Progress| {
            if let Some(f) = &on_progress {
                let _ = f.call2(
                    &JsValue::NULL,
                    &JsValue::from_f64(p.done as f64),
                    &JsValue::from_f64(p.total as f64),
                );
            }
        };
        socksgate_inspect::inspect_with_progress(
            bytes,
            &options(reveal_secrets),
            &mut report_progress,
        )
        .map(|report| Self { report })
        .map_err(|e| JsError::new(&e.to_string()))
    }

    /// The report as JSON with every session's `messages` empty.
    #[wasm_bindgen(js_name = summaryJson)]
    pub fn summary_json(&mut self) -> String {
        self.report.to_json_without_messages()
    }

    /// The report's `capture` object as JSON (format, packets, link types, …).
    #[wasm_bindgen(js_name = captureJson)]
    pub fn capture_json(&self) -> String {
        serde_json::to_string(&self.report.capture)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Every session without its messages, in columns (see [`SessionTable`]): what
    /// `summaryJson` gives, for a fraction of its cost; `www/table.js` reads it back.
    pub fn table(&self) -> SessionTable {
        session_table(&self.report.sessions, hash_seed())
    }

    /// Session `index` (0-based, as in `sessions`) as JSON with its messages.
    #[wasm_bindgen(js_name = sessionJson)]
    pub fn session_json(&self, index: usize) -> Result<String, JsError> {
        self.report
            .session_json(index)
            .ok_or_else(|| JsError::new(&format!("no session {index}")))
    }

    /// The whole report as JSON (the contract document, messages included).
    #[wasm_bindgen(js_name = fullJson)]
    pub fn full_json(&self) -> String {
        self.report.to_json_compact()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn streaming_binding_matches_the_batch_document() {
        let sample = include_bytes!("../tests/fixtures/curl-lo.pcapng");
        let batch: serde_json::Value =
            serde_json::from_str(&super::inspect_json(sample, false, &mut |_| {}).unwrap())
                .unwrap();
        let mut inspector = Some(socksgate_inspect::Inspector::new(
            socksgate_inspect::Options::default(),
        ));
        let mut sessions = Vec::new();
        for chunk in sample.chunks(1000) {
            let ended: Vec<serde_json::Value> =
                serde_json::from_str(&super::push_json(&mut inspector, chunk).unwrap()).unwrap();
            sessions.extend(ended);
        }
        let mut doc: serde_json::Value =
            serde_json::from_str(&super::finish_json(&mut inspector).unwrap()).unwrap();
        sessions.extend(doc["sessions"].as_array().unwrap().iter().cloned());
        sessions.sort_by_key(|s| s["first_frame"].as_u64());
        doc["sessions"] = sessions.into();
        assert_eq!(doc, batch);
        assert!(super::push_json(&mut inspector, b"x").is_err(), "finished");
    }

    #[test]
    fn the_document_in_parts_is_the_batch_document() {
        for sample in [
            &include_bytes!("../tests/fixtures/curl-lo.pcapng")[..],
            &include_bytes!("../tests/fixtures/sample.pcap")[..],
        ] {
            let batch = super::inspect_json(sample, false, &mut |_| {}).unwrap();
            let mut inspector = Some(socksgate_inspect::Inspector::new(
                socksgate_inspect::Options::default(),
            ));
            let mut document = socksgate_inspect::DocumentWriter::new();
            let mut body = Vec::new();
            for chunk in sample.chunks(999) {
                body.extend(super::push_document(&mut inspector, &mut document, chunk).unwrap());
            }
            let (head, rest) = super::finish_document(&mut inspector, &mut document).unwrap();
            body.extend(rest);
            assert_eq!(head + core::str::from_utf8(&body).unwrap(), batch);
        }
    }

    #[test]
    fn streaming_binding_rejects_a_non_capture_early() {
        let mut inspector = Some(socksgate_inspect::Inspector::new(
            socksgate_inspect::Options::default(),
        ));
        let e = super::push_json(&mut inspector, b"POST / HTTP/1.1\r\n").unwrap_err();
        assert!(e.starts_with("not a capture file"), "{e}");
    }

    #[test]
    fn not_a_capture_is_a_readable_error() {
        let e = super::inspect_json(b"hello", false, &mut |_| {}).unwrap_err();
        assert!(e.starts_with("not a capture file"), "{e}");
    }
}
