//! `Socks4Reply::parse`: never panics, prefixes are Partial or decide like the whole input,
//! `buffer_len`/`emit` agree with the bytes consumed, and emit -> parse round-trips.
//! VN 4 is accepted on parse but emitted as 0, so only the other seven octets must match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core::wire::socks4::Socks4Reply;

fuzz_target!(|data: &[u8]| {
    if let Some((out, n)) = socksgate_core_fuzz::check_parser!(data, Socks4Reply, |_| false) {
        assert_eq!(out[0], 0);
        assert_eq!(out[1..], data[1..n]);
    }
});
