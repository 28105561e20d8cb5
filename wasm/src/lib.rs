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

use socksgate_inspect::{Options, Progress};
use wasm_bindgen::prelude::*;

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
    socksgate_inspect::inspect(bytes, &Options::with_secrets(reveal_secrets))
        .map(|r| r.to_string())
        .map_err(|e| JsError::new(&e.to_string()))
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
    socksgate_inspect::inspect_with_progress(
        bytes,
        &Options::with_secrets(reveal_secrets),
        progress,
    )
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
            &Options::with_secrets(reveal_secrets),
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
    fn not_a_capture_is_a_readable_error() {
        let e = super::inspect_json(b"hello", false, &mut |_| {}).unwrap_err();
        assert!(e.starts_with("not a capture file"), "{e}");
    }
}
