//! The UDP ASSOCIATE request header (RFC 1928 §7).
//!
//! Every datagram between a client and the relay starts with
//!
//! ```text
//! +-----+------+------+----------+----------+----------+
//! | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//! +-----+------+------+----------+----------+----------+
//! |  2  |  1   |  1   | Variable |    2     | Variable |
//! +-----+------+------+----------+----------+----------+
//! ```
//!
//! Datagrams arrive whole, so unlike the TCP messages there is no [`Status::Partial`]: a
//! datagram shorter than its header is [`WireError::Truncated`].
//!
//! ```
//! use socksgate_core::wire::udp::{UdpHeader, encapsulate};
//! use socksgate_core::Addr;
//!
//! let dst = Addr::Ip("192.0.2.7:53".parse().unwrap());
//! let mut buf = [0u8; 64];
//! let n = encapsulate(dst, b"query", &mut buf).unwrap();
//! assert_eq!(&buf[..n], b"\0\0\0\x01\xc0\x00\x02\x07\x00\x35query");
//!
//! let (header, payload) = UdpHeader::parse(&buf[..n]).unwrap();
//! assert_eq!(header, UdpHeader { frag: 0, dst });
//! assert!(header.is_standalone());
//! assert_eq!(payload, b"query");
//! ```
//!
//! [`Status::Partial`]: crate::Status::Partial

use nom::number::streaming::{be_u8, be_u16};

use super::{
    AddrSpans, BufferTooSmall, IResult, Status, WireError, Writer, fail, put_socks5_addr, run,
    socks5_addr, socks5_addr_len,
};
use crate::addr::Addr;

/// The FRAG bit that marks the last fragment of a sequence.
pub const FRAG_LAST: u8 = 0x80;

/// The header of a UDP ASSOCIATE datagram: fragment number and destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UdpHeader<'a> {
    /// FRAG: 0 for a standalone datagram; otherwise the fragment position (1–127) in the low
    /// seven bits, with [`FRAG_LAST`] set on the last fragment.
    pub frag: u8,
    /// DST.ADDR and DST.PORT: where the relay sends the data (client → relay), or where the
    /// data came from (relay → client).
    pub dst: Addr<'a>,
}

impl<'a> UdpHeader<'a> {
    /// Splits a whole datagram into its header and its payload (DATA, possibly empty).
    ///
    /// Never panics. Errors: [`WireError::Truncated`] when the datagram ends inside the
    /// header, [`WireError::NonZeroReserved`] (with the first non-zero RSV octet) when RSV is
    /// not zero, [`WireError::UnknownAddrType`] for an ATYP other than 1, 3 or 4, and the
    /// domain-name errors of [`Domain::new`](crate::Domain::new).
    pub fn parse(datagram: &'a [u8]) -> Result<(Self, &'a [u8]), WireError> {
        match run(datagram, header) {
            Ok(Status::Complete((header, consumed))) => {
                let payload = datagram.get(consumed..).ok_or(WireError::Truncated)?;
                Ok((header, payload))
            }
            Ok(Status::Partial) => Err(WireError::Truncated),
            Err(e) => Err(e),
        }
    }

    /// Where ATYP, DST.ADDR and DST.PORT sit in the header (after RSV and FRAG).
    pub fn dst_spans(&self) -> AddrSpans {
        AddrSpans::at(3, &self.dst)
    }

    /// The encoded header length (RSV + FRAG + address), without the payload.
    pub fn buffer_len(&self) -> usize {
        3 + socks5_addr_len(&self.dst)
    }

    /// Writes the header (not the payload) to the start of `out` and returns its length,
    /// [`buffer_len`](Self::buffer_len). If `out` is shorter, returns [`BufferTooSmall`] and
    /// leaves `out` untouched.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, self.buffer_len())?;
        w.u16(0);
        w.u8(self.frag);
        put_socks5_addr(&mut w, &self.dst);
        Ok(w.finish())
    }

    /// Whether this is a standalone datagram (FRAG = 0), not part of a fragment sequence.
    pub const fn is_standalone(&self) -> bool {
        self.frag == 0
    }

    /// The fragment position, 1–127 (0 for a standalone datagram).
    pub const fn fragment_position(&self) -> u8 {
        self.frag & !FRAG_LAST
    }

    /// Whether the FRAG high bit marks this as the last fragment of its sequence.
    pub const fn is_last_fragment(&self) -> bool {
        self.frag & FRAG_LAST != 0
    }
}

/// Writes a standalone datagram (FRAG = 0): the header for `dst`, then `payload`, to the
/// start of `out`, and returns the total length. If `out` is shorter, returns
/// [`BufferTooSmall`] (with the total length required) and leaves `out` untouched.
///
/// This is what the relay sends to the client for each datagram received from `dst`.
pub fn encapsulate(dst: Addr<'_>, payload: &[u8], out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    let header = UdpHeader { frag: 0, dst };
    let required = header
        .buffer_len()
        .checked_add(payload.len())
        .ok_or(BufferTooSmall {
            required: usize::MAX,
        })?;
    let mut w = Writer::new(out, required)?;
    w.u16(0);
    w.u8(header.frag);
    put_socks5_addr(&mut w, &header.dst);
    w.bytes(payload);
    Ok(w.finish())
}

fn header(i: &[u8]) -> IResult<'_, UdpHeader<'_>> {
    let (i, rsv) = be_u16(i)?;
    if rsv != 0 {
        let [hi, lo] = rsv.to_be_bytes();
        return fail(WireError::NonZeroReserved(if hi != 0 { hi } else { lo }));
    }
    let (i, frag) = be_u8(i)?;
    let (i, dst) = socks5_addr(i)?;
    Ok((i, UdpHeader { frag, dst }))
}

#[cfg(test)]
mod test {
    use core::net::SocketAddr;

    use super::*;
    use crate::addr::Domain;

    static V4_BYTES: [u8; 14] = [0, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, b'a', b'b', b'c', b'd'];

    static V6_BYTES: [u8; 23] = [
        0, 0, 0x83, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53, 0xff,
    ];

    static DOMAIN_BYTES: [u8; 20] = [
        0, 0, 0, 3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm', 1, 0xbb,
        b'h', b'i',
    ];

    fn ip(s: &str) -> Addr<'static> {
        Addr::Ip(s.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn test_parse_v4() {
        let (h, payload) = UdpHeader::parse(&V4_BYTES).unwrap();
        assert_eq!(
            h,
            UdpHeader {
                frag: 0,
                dst: ip("10.0.0.1:8080")
            }
        );
        assert_eq!(payload, b"abcd");
        assert_eq!(h.buffer_len(), 10);
    }

    #[test]
    fn test_parse_v6_fragment() {
        let (h, payload) = UdpHeader::parse(&V6_BYTES).unwrap();
        assert_eq!(h.dst, ip("[2001:db8::1]:53"));
        assert_eq!(h.frag, 0x83);
        assert!(!h.is_standalone());
        assert!(h.is_last_fragment());
        assert_eq!(h.fragment_position(), 3);
        assert_eq!(payload, &[0xff]);
    }

    #[test]
    fn test_parse_domain() {
        let (h, payload) = UdpHeader::parse(&DOMAIN_BYTES).unwrap();
        let name = Domain::new(b"example.com").unwrap();
        assert_eq!(h.dst, Addr::Domain(name, 443));
        assert_eq!(payload, b"hi");
    }

    #[test]
    fn test_parse_empty_payload() {
        let (_, payload) = UdpHeader::parse(V4_BYTES.get(..10).unwrap()).unwrap();
        assert!(payload.is_empty());
    }

    #[test]
    fn test_parse_truncated_everywhere() {
        for bytes in [&V4_BYTES[..10], &V6_BYTES[..22], &DOMAIN_BYTES[..18]] {
            for n in 0..bytes.len() {
                assert_eq!(
                    UdpHeader::parse(&bytes[..n]),
                    Err(WireError::Truncated),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn test_parse_errors() {
        let mut b = V4_BYTES;
        b[0] = 7;
        assert_eq!(UdpHeader::parse(&b), Err(WireError::NonZeroReserved(7)));
        let mut b = V4_BYTES;
        b[1] = 9;
        assert_eq!(UdpHeader::parse(&b), Err(WireError::NonZeroReserved(9)));
        let mut b = V4_BYTES;
        b[3] = 2;
        assert_eq!(UdpHeader::parse(&b), Err(WireError::UnknownAddrType(2)));
        let mut b = DOMAIN_BYTES;
        b[6] = 0;
        assert_eq!(UdpHeader::parse(&b), Err(WireError::NulInDomain));
        assert_eq!(
            UdpHeader::parse(&[0, 0, 0, 3, 0, 0, 80]),
            Err(WireError::EmptyDomain)
        );
    }

    #[test]
    fn test_emit_round_trip() {
        for bytes in [&V4_BYTES[..], &V6_BYTES[..], &DOMAIN_BYTES[..]] {
            let (h, payload) = UdpHeader::parse(bytes).unwrap();
            let mut out = [0u8; 64];
            let n = h.emit(&mut out).unwrap();
            assert_eq!(n, h.buffer_len());
            assert_eq!(&out[..n], &bytes[..bytes.len() - payload.len()]);
        }
    }

    #[test]
    fn test_emit_too_small_leaves_buffer() {
        let h = UdpHeader {
            frag: 1,
            dst: ip("10.0.0.1:1"),
        };
        let mut out = [0xaau8; 9];
        assert_eq!(h.emit(&mut out), Err(BufferTooSmall { required: 10 }));
        assert_eq!(out, [0xaa; 9]);
    }

    #[test]
    fn test_encapsulate() {
        let name = Domain::new(b"example.com").unwrap();
        let mut out = [0u8; 20];
        assert_eq!(
            encapsulate(Addr::Domain(name, 443), b"hi", &mut out),
            Ok(20)
        );
        assert_eq!(out, DOMAIN_BYTES);
        let mut short = [0u8; 19];
        assert_eq!(
            encapsulate(Addr::Domain(name, 443), b"hi", &mut short),
            Err(BufferTooSmall { required: 20 })
        );
        assert_eq!(short, [0u8; 19]);
    }

    proptest::proptest! {
        #[test]
        fn prop_parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = UdpHeader::parse(&bytes);
        }

        #[test]
        fn prop_encapsulate_round_trip(
            v4 in proptest::bool::ANY,
            a in proptest::num::u128::ANY,
            port in proptest::num::u16::ANY,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let sa: SocketAddr = if v4 {
                SocketAddr::new(core::net::Ipv4Addr::from(a as u32).into(), port)
            } else {
                SocketAddr::new(core::net::Ipv6Addr::from(a).into(), port)
            };
            let mut out = [0u8; 128];
            let n = encapsulate(Addr::Ip(sa), &payload, &mut out).unwrap();
            let (h, p) = UdpHeader::parse(&out[..n]).unwrap();
            proptest::prop_assert_eq!(h, UdpHeader { frag: 0, dst: Addr::Ip(sa) });
            proptest::prop_assert_eq!(p, &payload[..]);
        }
    }
}
