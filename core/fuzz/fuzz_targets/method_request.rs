//! `MethodRequest::parse`: never panics, prefixes are Partial or decide like the whole input,
//! `buffer_len`/`emit` agree with the bytes consumed, and emit -> parse round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core::wire::method::MethodRequest;

fuzz_target!(|data: &[u8]| {
    socksgate_core_fuzz::check_parser!(data, MethodRequest<'_>, |_| true);
});
