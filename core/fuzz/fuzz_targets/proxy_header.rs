//! `wire::proxy::ProxyHeader::parse`: never panics; every prefix is `Partial` or decides like
//! the whole input (so a header split across reads parses the same); a parsed header with
//! addresses survives emit -> parse as version 2, and the SOCKS bytes after it are untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core::Status;
use socksgate_core::wire::proxy::ProxyHeader;
use socksgate_core_fuzz::check_prefixes;

fuzz_target!(|data: &[u8]| {
    let Some((header, n)) = check_prefixes(data, ProxyHeader::parse) else {
        return;
    };
    let mut out = vec![0u8; header.buffer_len()];
    assert_eq!(header.emit(&mut out), Ok(out.len()));
    let again = ProxyHeader {
        version: 2,
        ..header
    };
    assert_eq!(
        ProxyHeader::parse(&out),
        Ok(Status::Complete((again, out.len())))
    );
    let mut followed = out.clone();
    followed.extend_from_slice(&data[n..]);
    assert_eq!(
        ProxyHeader::parse(&followed),
        Ok(Status::Complete((again, out.len())))
    );
});
