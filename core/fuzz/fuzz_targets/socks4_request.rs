//! `Socks4Request::parse`: never panics, prefixes are Partial or decide like the whole input,
//! `buffer_len`/`emit` agree with the bytes consumed, and emit -> parse round-trips.
//! SOCKS4a accepts any DSTIP 0.0.0.x (x != 0) and emits 0.0.0.1; every other octet matches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core::wire::socks4::Socks4Request;

fuzz_target!(|data: &[u8]| {
    let canonical = |m: &Socks4Request<'_>| !m.is_4a();
    if let Some((out, n)) = socksgate_core_fuzz::check_parser!(data, Socks4Request<'_>, canonical) {
        assert_eq!(out[..7], data[..7]);
        assert_eq!(out[8..], data[8..n]);
    }
});
