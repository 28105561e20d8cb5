//! The binding under Node (wasm-bindgen-test-runner): JSON out, errors as JS `Error`s,
//! progress callbacks. Run by wasm/ci.sh:
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p socksgate-wasm --target wasm32-unknown-unknown`
#![cfg(target_arch = "wasm32")]

use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

/// `cargo run -p socksgate-inspect --example synth -- wasm/tests/fixtures/sample.pcap 0.02`
const SAMPLE: &[u8] = include_bytes!("fixtures/sample.pcap");

fn parse(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

#[wasm_bindgen_test]
fn inspect_returns_the_contract_document() {
    let json = socksgate_wasm::inspect(SAMPLE, false).unwrap();
    let report = parse(&json);
    assert_eq!(
        get(&get(&report, "capture"), "format").as_string().unwrap(),
        "pcap"
    );
    let sessions: js_sys::Array = get(&report, "sessions").into();
    assert_eq!(sessions.length(), 6);
    let first = sessions.get(0);
    assert_eq!(get(&first, "version").as_string().unwrap(), "socks5");
    assert_eq!(get(&first, "username").as_string().unwrap(), "alice");
    assert_eq!(get(&first, "sni").as_string().unwrap(), "example.com");
    assert!(get(&first, "password").is_undefined());
    assert!(!json.contains("s3cret"));
}

#[wasm_bindgen_test]
fn secrets_only_when_revealed() {
    let json = socksgate_wasm::inspect(SAMPLE, true).unwrap();
    let sessions: js_sys::Array = get(&parse(&json), "sessions").into();
    assert_eq!(
        get(&sessions.get(0), "password").as_string().unwrap(),
        "s3cret"
    );
}

#[wasm_bindgen_test]
fn not_a_capture_throws_a_readable_error() {
    let err = socksgate_wasm::inspect(b"<html>not a capture</html>", false).unwrap_err();
    let value: JsValue = err.into();
    let error: js_sys::Error = value.into();
    let message = String::from(error.message());
    assert!(message.starts_with("not a capture file"), "{message}");
}

#[wasm_bindgen_test]
fn progress_is_reported() {
    let calls = js_sys::Array::new();
    let push = js_sys::Function::new_with_args(
        "calls",
        "return (done, total) => calls.push([done, total])",
    );
    let cb: js_sys::Function = push.call1(&JsValue::NULL, &calls).unwrap().into();
    socksgate_wasm::inspect_with_progress(SAMPLE, false, &cb).unwrap();
    assert!(calls.length() >= 1);
    let last: js_sys::Array = calls.get(calls.length() - 1).into();
    assert_eq!(last.get(0).as_f64(), Some(SAMPLE.len() as f64));
    assert_eq!(last.get(1).as_f64(), Some(SAMPLE.len() as f64));
}

#[wasm_bindgen_test]
fn text_rendering() {
    let text = socksgate_wasm::inspect_text(SAMPLE, false).unwrap();
    assert!(text.starts_with("pcap capture:"));
}

#[wasm_bindgen_test]
fn inspection_handle_gives_table_then_detail() {
    let mut inspection = socksgate_wasm::Inspection::new(SAMPLE, false, None).unwrap();
    let summary = parse(&inspection.summary_json());
    let sessions: js_sys::Array = get(&summary, "sessions").into();
    assert_eq!(sessions.length(), 6);
    let messages: js_sys::Array = get(&sessions.get(0), "messages").into();
    assert_eq!(messages.length(), 0, "the table comes without messages");
    let one = parse(&inspection.session_json(0).unwrap());
    let messages: js_sys::Array = get(&one, "messages").into();
    assert_eq!(messages.length(), 6);
    assert!(inspection.session_json(99).is_err());
    assert!(inspection.full_json().contains("\"messages\":[{"));
}

#[wasm_bindgen_test]
fn the_chunked_inspector_finds_every_session() {
    let mut inspector = socksgate_wasm::StreamingInspector::new(false);
    let mut ended = 0;
    for chunk in SAMPLE.chunks(777) {
        let batch: js_sys::Array = parse(&inspector.push(chunk).unwrap()).into();
        ended += batch.length();
    }
    assert_eq!(inspector.bytes_read(), SAMPLE.len() as f64);
    let report = parse(&inspector.finish().unwrap());
    let rest: js_sys::Array = get(&report, "sessions").into();
    assert_eq!(ended + rest.length(), 6);
    assert!(inspector.push(SAMPLE).is_err(), "finished");

    let mut not_a_capture = socksgate_wasm::StreamingInspector::new(false);
    assert!(not_a_capture.push(b"<!doctype html>").is_err());
}

#[wasm_bindgen_test]
fn push_keep_gives_the_batch_inspection() {
    let mut inspector = socksgate_wasm::StreamingInspector::new(false);
    for chunk in SAMPLE.chunks(333) {
        inspector.push_keep(chunk).unwrap();
    }
    let streamed = inspector.finish_inspection().unwrap();
    let batch = socksgate_wasm::Inspection::new(SAMPLE, false, None).unwrap();
    assert_eq!(streamed.full_json(), batch.full_json());
    assert_eq!(
        streamed.session_json(4).unwrap(),
        batch.session_json(4).unwrap()
    );
}

#[wasm_bindgen_test]
fn json_lines_carry_every_session_then_the_capture() {
    let mut inspector = socksgate_wasm::StreamingInspector::new(false);
    let mut text = String::new();
    for chunk in SAMPLE.chunks(555) {
        text.push_str(&inspector.push_lines(chunk).unwrap());
    }
    text.push_str(&inspector.finish_lines().unwrap());
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "six sessions and the capture line");
    for line in &lines[..6] {
        assert!(get(&parse(line), "client").is_string(), "{line}");
    }
    // The capture line is the batch document's `capture`, as `--json-lines` ends.
    let batch = parse(&socksgate_wasm::inspect(SAMPLE, false).unwrap());
    let capture = get(&parse(lines[6]), "capture");
    assert_eq!(
        js_sys::JSON::stringify(&capture).unwrap(),
        js_sys::JSON::stringify(&get(&batch, "capture")).unwrap()
    );
    assert!(inspector.push_lines(SAMPLE).is_err(), "finished");
}
