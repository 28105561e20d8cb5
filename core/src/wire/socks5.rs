//! SOCKS5 requests and replies (RFC 1928 §4–§6).
//!
//! Request: `VER=5 | CMD | RSV=0 | ATYP | DST.ADDR | DST.PORT`.
//! Reply: `VER=5 | REP | RSV=0 | ATYP | BND.ADDR | BND.PORT`.

use nom::number::streaming::be_u8;

use super::{
    AddrSpans, BufferTooSmall, Command, ParseResult, ReplyCode, WireError, Writer, fail,
    put_socks5_addr, run, socks5_addr, socks5_addr_len, version,
};
use crate::addr::Addr;

/// SOCKS protocol version 5.
pub const VERSION: u8 = 5;

fn reserved(i: &[u8]) -> super::IResult<'_, ()> {
    let (i, rsv) = be_u8(i)?;
    if rsv == 0 {
        Ok((i, ()))
    } else {
        fail(WireError::NonZeroReserved(rsv))
    }
}

/// A SOCKS5 request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// CMD; unknown commands parse as `Command::Unknown` (the server answers REP 7).
    pub command: Command,
    /// DST.ADDR and DST.PORT.
    pub dst: Addr<'a>,
}

impl<'a> Request<'a> {
    /// Parses a request; see the [module contract](super).
    pub fn parse(buf: &'a [u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, command) = be_u8(i)?;
            let (i, ()) = reserved(i)?;
            let (i, dst) = socks5_addr(i)?;
            Ok((
                i,
                Self {
                    command: command.into(),
                    dst,
                },
            ))
        })
    }

    /// Where ATYP, DST.ADDR and DST.PORT sit in the encoded request (after VER, CMD, RSV).
    pub fn dst_spans(&self) -> AddrSpans {
        AddrSpans::at(3, &self.dst)
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        3 + socks5_addr_len(&self.dst)
    }

    /// Writes the request; see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, self.buffer_len())?;
        w.u8(VERSION);
        w.u8(self.command.into());
        w.u8(0);
        put_socks5_addr(&mut w, &self.dst);
        Ok(w.finish())
    }
}

/// A SOCKS5 reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reply<'a> {
    /// REP.
    pub code: ReplyCode,
    /// BND.ADDR and BND.PORT: the server's outbound address (CONNECT), listening address
    /// (BIND, first reply), connecting peer (BIND, second reply) or relay (UDP ASSOCIATE).
    pub bound: Addr<'a>,
}

impl<'a> Reply<'a> {
    /// Parses a reply; see the [module contract](super).
    pub fn parse(buf: &'a [u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, code) = be_u8(i)?;
            let (i, ()) = reserved(i)?;
            let (i, bound) = socks5_addr(i)?;
            Ok((
                i,
                Self {
                    code: code.into(),
                    bound,
                },
            ))
        })
    }

    /// Where ATYP, BND.ADDR and BND.PORT sit in the encoded reply (after VER, REP, RSV).
    pub fn bound_spans(&self) -> AddrSpans {
        AddrSpans::at(3, &self.bound)
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        3 + socks5_addr_len(&self.bound)
    }

    /// Writes the reply; see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, self.buffer_len())?;
        w.u8(VERSION);
        w.u8(self.code.into());
        w.u8(0);
        put_socks5_addr(&mut w, &self.bound);
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Domain;
    use crate::wire::Status;

    fn roundtrip(bytes: &[u8]) -> Request<'_> {
        let (req, n) = Request::parse(bytes).unwrap().complete().unwrap();
        assert_eq!(n, bytes.len());
        let mut out = [0u8; 300];
        assert_eq!(req.emit(&mut out), Ok(bytes.len()));
        assert_eq!(&out[..n], bytes);
        for cut in 0..bytes.len() {
            assert_eq!(
                Request::parse(&bytes[..cut]),
                Ok(Status::Partial),
                "cut at {cut}"
            );
        }
        req
    }

    #[test]
    fn connect_ipv4_ipv6_domain() {
        let v4 = roundtrip(&[5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]);
        assert_eq!(v4.dst, Addr::Ip("127.0.0.1:8080".parse().unwrap()));
        let mut v6 = [0u8; 22];
        v6[..4].copy_from_slice(&[5, 1, 0, 4]);
        v6[19] = 1;
        v6[20..].copy_from_slice(&[0x01, 0xbb]);
        assert_eq!(roundtrip(&v6).dst, Addr::Ip("[::1]:443".parse().unwrap()));
        let d = roundtrip(b"\x05\x01\x00\x03\x0bexample.com\x00\x50");
        assert_eq!(
            d.dst,
            Addr::Domain(Domain::new(b"example.com").unwrap(), 80)
        );
    }

    #[test]
    fn bind_udp_unknown_commands() {
        assert_eq!(
            roundtrip(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).command,
            Command::Bind
        );
        assert_eq!(
            roundtrip(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).command,
            Command::UdpAssociate
        );
        assert_eq!(
            roundtrip(&[5, 0xf0, 0, 1, 0, 0, 0, 0, 0, 0]).command,
            Command::Unknown(0xf0)
        );
    }

    #[test]
    fn invalid_fields() {
        assert_eq!(
            Request::parse(&[5, 1, 1]),
            Err(WireError::NonZeroReserved(1))
        );
        assert_eq!(
            Request::parse(&[5, 1, 0, 2]),
            Err(WireError::UnknownAddrType(2))
        );
        assert_eq!(
            Request::parse(&[5, 1, 0, 3, 0]),
            Err(WireError::EmptyDomain)
        );
        assert_eq!(
            Request::parse(&[5, 1, 0, 3, 2, b'a', 0, 0, 80]),
            Err(WireError::NulInDomain)
        );
        assert_eq!(Request::parse(&[4, 1]), Err(WireError::BadVersion(4)));
        assert_eq!(
            WireError::UnknownAddrType(9).reply(),
            ReplyCode::AddressTypeNotSupported
        );
    }

    #[test]
    fn reply_vector() {
        let bytes = [5, 0, 0, 1, 10, 0, 0, 2, 0x9a, 0x7f];
        let (rep, n) = Reply::parse(&bytes).unwrap().complete().unwrap();
        assert_eq!((n, rep.code), (10, ReplyCode::Succeeded));
        assert_eq!(rep.bound, Addr::Ip("10.0.0.2:39551".parse().unwrap()));
        let mut out = [0u8; 4];
        assert_eq!(rep.emit(&mut out), Err(BufferTooSmall { required: 10 }));
    }
}
