//! `gssapi::Decapsulator` over an arbitrary byte stream: never panics, never takes more than
//! offered, pieces are the last octets taken, errors are final; decoding in arbitrary
//! chunks gives the same tokens, cut-off token and error as decoding at once, and the same
//! tokens and error as parsing message by message (`GssapiMessage::parse`). The first
//! octet of the input says how many chunk sizes follow. Also the UDP datagram helpers on
//! the stream as one datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core_fuzz::gssapi::{check_datagram, decode_stream, model};

fuzz_target!(|data: &[u8]| {
    let (sizes, stream) = match data.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 16).min(rest.len())),
        None => (&[][..], &[][..]),
    };
    let whole = decode_stream(stream, &[]);
    let chunked = decode_stream(stream, sizes);
    assert_eq!(whole, chunked, "chunking changed the decoded stream");
    let (tokens, error) = model(stream);
    assert_eq!(
        whole.tokens, tokens,
        "decoder and parser disagree on the tokens"
    );
    assert_eq!(
        whole.error, error,
        "decoder and parser disagree on the error"
    );
    check_datagram(stream);
});
