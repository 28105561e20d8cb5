//! `wire::udp::UdpHeader::parse` on a whole datagram: never panics; on success the header
//! length plus the payload is the datagram, emit gives back the same header bytes, emit ->
//! parse round-trips, `encapsulate` rebuilds a standalone datagram, and a datagram cut inside
//! its header is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksgate_core::BufferTooSmall;
use socksgate_core::wire::udp::{UdpHeader, encapsulate};

fuzz_target!(|data: &[u8]| {
    let Ok((header, payload)) = UdpHeader::parse(data) else {
        return;
    };
    let n = header.buffer_len();
    assert_eq!(n + payload.len(), data.len());
    assert_eq!(payload, &data[n..]);
    let mut out = vec![0u8; n];
    assert_eq!(header.emit(&mut out), Ok(n));
    assert_eq!(out, data[..n]);
    assert_eq!(
        header.emit(&mut out[..n - 1]),
        Err(BufferTooSmall { required: n })
    );
    for k in 0..n {
        assert!(UdpHeader::parse(&data[..k]).is_err(), "cut at {k} parses");
    }
    assert_eq!(UdpHeader::parse(&data[..n]), Ok((header, &[][..])));
    let mut whole = vec![0u8; data.len()];
    assert_eq!(encapsulate(header.dst, payload, &mut whole), Ok(data.len()));
    if header.is_standalone() {
        assert_eq!(whole, data);
    }
    let _ = (
        header.fragment_position(),
        header.is_last_fragment(),
        format!("{header:?}"),
    );
});
