//! SOCKS5 method selection (RFC 1928 §3): the client's greeting and the server's choice.

use core::ops::Range;

use nom::Parser;
use nom::bytes::streaming::take;
use nom::number::streaming::be_u8;

use super::{BufferTooSmall, Method, ParseResult, WireError, Writer, fail, run, version};

/// SOCKS protocol version 5.
pub(crate) const VERSION: u8 = 5;

/// The client's greeting: `VER=5 | NMETHODS | METHODS…`.
///
/// ```
/// use socksgate_core::wire::{Method, method::MethodRequest};
/// use socksgate_core::Status;
///
/// let (greeting, consumed) = MethodRequest::parse(&[5, 2, 0, 2]).unwrap().complete().unwrap();
/// assert_eq!(consumed, 4);
/// assert!(greeting.offers(Method::UserPass));
/// assert_eq!(MethodRequest::parse(&[5, 2, 0]), Ok(Status::Partial));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MethodRequest<'a> {
    methods: &'a [u8],
}

impl<'a> MethodRequest<'a> {
    /// A greeting offering `methods` (raw method codes): 1–255 of them.
    pub fn new(methods: &'a [u8]) -> Result<Self, WireError> {
        match methods.len() {
            0 => Err(WireError::NoMethods),
            1..=255 => Ok(Self { methods }),
            _ => Err(WireError::Truncated),
        }
    }

    /// Parses a greeting; see the [module contract](super).
    pub fn parse(buf: &'a [u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, n) = be_u8(i)?;
            if n == 0 {
                return fail(WireError::NoMethods);
            }
            let (i, methods) = take(n).parse(i)?;
            Ok((i, Self { methods }))
        })
    }

    /// The raw method codes in the order offered.
    pub const fn raw_methods(&self) -> &'a [u8] {
        self.methods
    }

    /// The methods in the order offered.
    pub fn methods(&self) -> impl Iterator<Item = Method> + 'a {
        self.methods.iter().map(|&m| Method::from(m))
    }

    /// Whether `method` is among those offered.
    pub fn offers(&self, method: Method) -> bool {
        self.methods.contains(&u8::from(method))
    }

    /// Where METHODS sits in the encoded message (after VER and NMETHODS).
    pub const fn methods_span(&self) -> Range<usize> {
        2..2 + self.methods.len()
    }

    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        2 + self.methods.len()
    }

    /// Writes the greeting; see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, self.buffer_len())?;
        w.u8(VERSION);
        // `new` and `parse` bound the list to 1..=255 entries.
        w.u8(self.methods.len() as u8);
        w.bytes(self.methods);
        Ok(w.finish())
    }
}

/// The server's choice: `VER=5 | METHOD`. [`Method::NoAcceptable`] means the server closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MethodReply {
    /// The selected method.
    pub method: Method,
}

impl MethodReply {
    /// Encoded length: always 2.
    pub const LEN: usize = 2;

    /// Parses a method selection; see the [module contract](super).
    pub fn parse(buf: &[u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, m) = be_u8(i)?;
            Ok((i, Self { method: m.into() }))
        })
    }

    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        Self::LEN
    }

    /// Writes the method selection; see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, Self::LEN)?;
        w.u8(VERSION);
        w.u8(self.method.into());
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    #[test]
    fn greeting_rfc_vectors() {
        let bytes = [0x05, 0x02, 0x00, 0x02];
        let (g, n) = MethodRequest::parse(&bytes).unwrap().complete().unwrap();
        assert_eq!(n, 4);
        assert_eq!(g.raw_methods(), &[0, 2]);
        assert!(g.offers(Method::NoAuth) && g.offers(Method::UserPass));
        assert!(!g.offers(Method::Gssapi));
        let mut out = [0u8; 4];
        assert_eq!(g.emit(&mut out), Ok(4));
        assert_eq!(out, bytes);
    }

    #[test]
    fn greeting_partial_and_errors() {
        assert_eq!(MethodRequest::parse(&[]), Ok(Status::Partial));
        assert_eq!(MethodRequest::parse(&[5]), Ok(Status::Partial));
        assert_eq!(MethodRequest::parse(&[5, 3, 0, 1]), Ok(Status::Partial));
        assert_eq!(MethodRequest::parse(&[5, 0]), Err(WireError::NoMethods));
        assert_eq!(
            MethodRequest::parse(&[4, 1, 0]),
            Err(WireError::BadVersion(4))
        );
        assert_eq!(MethodRequest::new(&[]), Err(WireError::NoMethods));
    }

    #[test]
    fn greeting_leaves_trailing_bytes() {
        let (_, n) = MethodRequest::parse(&[5, 1, 0, 5, 1, 0])
            .unwrap()
            .complete()
            .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn method_reply_vectors() {
        assert_eq!(
            MethodReply::parse(&[5, 0xff]),
            Ok(Status::Complete((
                MethodReply {
                    method: Method::NoAcceptable
                },
                2
            )))
        );
        assert_eq!(
            MethodReply::parse(&[5, 0x80]),
            Ok(Status::Complete((
                MethodReply {
                    method: Method::Unknown(0x80)
                },
                2
            )))
        );
        let mut out = [0u8; 1];
        assert_eq!(
            MethodReply {
                method: Method::UserPass
            }
            .emit(&mut out),
            Err(BufferTooSmall { required: 2 })
        );
        assert_eq!(out, [0]);
    }
}
