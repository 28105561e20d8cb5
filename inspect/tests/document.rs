//! The JSON document written piece by piece ([`DocumentWriter`] over
//! [`Inspector::take_sessions_in_order`]) is byte for byte the batch document, compact and
//! through [`PrettyJson`] pretty, whatever the chunking; sessions are held only while an older
//! connection that may be SOCKS is open.

#[allow(unused_imports)]
mod common;

use common::*;
use std::io::Write as _;

use socksgate_inspect::{DocumentWriter, Inspector, Options, PrettyJson, inspect};

const SAMPLE: &[u8] = include_bytes!("../../wasm/tests/fixtures/sample.pcap");
const CURL_LO: &[u8] = include_bytes!("../../wasm/tests/fixtures/curl-lo.pcapng");
const GSSAPI_PYTHON: &[u8] = include_bytes!("captures/gssapi-python3-lo.pcap");
const GSSAPI_CURL: &[u8] = include_bytes!("captures/gssapi-curl-refused-lo.pcap");

/// The document as `socksgate inspect --json` now writes it: sessions as they settle, then the
/// head and the tail around them (pretty: all of it through `PrettyJson`, in pieces of
/// `pretty_piece` bytes). Also returns the most sessions held at once.
fn streamed_document(bytes: &[u8], chunk: usize, pretty_piece: Option<usize>) -> (String, usize) {
    let mut inspector = Inspector::new(Options::default());
    let mut document = DocumentWriter::new();
    let mut body = Vec::new();
    let mut most_held = 0;
    for piece in bytes.chunks(chunk) {
        inspector.push(piece).unwrap();
        for session in inspector.take_sessions_in_order() {
            document.write_session(&mut body, &session).unwrap();
        }
        most_held = most_held.max(inspector.held_sessions());
    }
    let rest = inspector.finish().unwrap();
    for session in &rest.sessions {
        document.write_session(&mut body, session).unwrap();
    }
    let mut compact = document.head(&rest.capture).into_bytes();
    compact.extend_from_slice(&body);
    compact.extend_from_slice(document.tail().as_bytes());
    let text = match pretty_piece {
        None => compact,
        Some(n) => {
            let mut pretty = PrettyJson::new(Vec::new());
            for piece in compact.chunks(n) {
                pretty.write_all(piece).unwrap();
            }
            pretty.into_inner().unwrap()
        }
    };
    (String::from_utf8(text).unwrap(), most_held)
}

fn sessions(count: u16, gap_ns: u64) -> Cap {
    let mut cap = Cap::new(Link::Ethernet);
    for i in 0..count {
        let mut conv = Conv::new(&format!("127.0.0.1:{}", 40000 + i), "127.0.0.1:1080");
        conv.open(&mut cap);
        conv.up(&mut cap, &greeting(&[0, 2]));
        conv.down(&mut cap, &[5, 2]);
        conv.up(&mut cap, &userpass("alice", "secret"));
        conv.down(&mut cap, &[1, 0]);
        conv.up(&mut cap, &request5(1, "example.com", 80));
        conv.down(&mut cap, &reply5(0, "127.0.0.1", 4000 + i));
        conv.up(&mut cap, HTTP_GET);
        conv.down(&mut cap, HTTP_OK);
        conv.close(&mut cap);
        cap.clock_ns += gap_ns;
    }
    cap
}

/// A SOCKS session open from the first packet to the last (`socks`) or a plain HTTP
/// connection (not SOCKS), with `inner` short sessions 2 s apart inside it.
fn long_connection_around(inner: u16, socks: bool) -> Cap {
    let mut cap = Cap::new(Link::Ethernet);
    let mut long = Conv::new("127.0.0.1:39999", "127.0.0.1:1080");
    long.open(&mut cap);
    if socks {
        long.up(&mut cap, &greeting(&[0]));
        long.down(&mut cap, &[5, 0]);
        long.up(&mut cap, &request5(1, "example.org", 443));
        long.down(&mut cap, &reply5(0, "127.0.0.1", 3999));
    } else {
        long.up(&mut cap, HTTP_GET);
        long.down(&mut cap, HTTP_OK);
    }
    for i in 0..inner {
        let mut conv = Conv::new(&format!("127.0.0.1:{}", 40000 + i), "127.0.0.1:1080");
        conv.open(&mut cap);
        conv.up(&mut cap, &greeting(&[0]));
        conv.down(&mut cap, &[5, 0]);
        conv.up(&mut cap, &request5(1, "example.com", 80));
        conv.down(&mut cap, &reply5(0, "127.0.0.1", 4000 + i));
        conv.close(&mut cap);
        cap.clock_ns += 2_000_000_000;
        if !socks {
            long.up(&mut cap, HTTP_GET);
        }
    }
    long.close(&mut cap);
    cap
}

#[test]
fn the_streamed_document_is_byte_for_byte_the_batch_document() {
    let files = [
        SAMPLE.to_vec(),
        CURL_LO.to_vec(),
        GSSAPI_PYTHON.to_vec(),
        GSSAPI_CURL.to_vec(),
        sessions(40, 2_000_000_000).pcap(false, false),
        sessions(5, 0).pcapng(true, 2, 2),
        long_connection_around(20, true).pcap(false, true),
        long_connection_around(20, false).pcap(false, true),
        // No session at all: the empty array has its own form.
        Cap::new(Link::Ethernet).pcap(false, false),
        // Cut off inside the last record.
        {
            let whole = sessions(5, 2_000_000_000).pcap(false, false);
            whole[..whole.len() - 10].to_vec()
        },
    ];
    for (n, bytes) in files.iter().enumerate() {
        let report = inspect(bytes, &Options::default()).unwrap();
        for chunk in [1, 7, 1000, 1 << 20] {
            assert_eq!(
                streamed_document(bytes, chunk, None).0,
                report.to_json_compact(),
                "file {n}, compact, chunks of {chunk}"
            );
        }
        for piece in [1, 2, 3, 64, 1 << 20] {
            assert_eq!(
                streamed_document(bytes, 4096, Some(piece)).0,
                report.to_json(),
                "file {n}, pretty, written in pieces of {piece}"
            );
        }
    }
}

#[test]
fn pretty_json_handles_every_json_form() {
    // Escapes (quotes, backslashes, a backslash before a quote), empty and nested containers,
    // numbers, literals: the same as serde_json's pretty printer, in any pieces.
    let value = serde_json::json!({
        "a": "q\"uo\\te\\\"x{[,:]}",
        "empty": [], "obj": {}, "nested": [[], [{}], {"k": [1, -2.5e-7, true, null]}],
        "s": "line\nbreak\ttab\u{1}",
        "n": 0
    });
    let compact = serde_json::to_string(&value).unwrap();
    let want = serde_json::to_string_pretty(&value).unwrap();
    for piece in 1..=compact.len() {
        let mut pretty = PrettyJson::new(Vec::new());
        for part in compact.as_bytes().chunks(piece) {
            pretty.write_all(part).unwrap();
        }
        assert_eq!(
            String::from_utf8(pretty.into_inner().unwrap()).unwrap(),
            want,
            "pieces of {piece}"
        );
    }
}

#[test]
fn sessions_settle_unless_an_older_socks_connection_is_open() {
    // Sequential sessions: nothing waits beyond the linger of the last ones.
    let (_, held) = streamed_document(&sessions(200, 2_000_000_000).pcap(false, false), 4096, None);
    assert!(held <= 1, "{held} held");
    // A SOCKS connection open throughout: every later session waits for it (its place in the
    // document is first).
    let (_, held) = streamed_document(
        &long_connection_around(30, true).pcap(false, false),
        512,
        None,
    );
    assert!(held >= 29, "{held} held");
    // A connection that is not SOCKS holds nothing back.
    let (_, held) = streamed_document(
        &long_connection_around(30, false).pcap(false, false),
        512,
        None,
    );
    assert!(held <= 1, "{held} held");
}
