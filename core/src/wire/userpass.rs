//! RFC 1929 username/password sub-negotiation.

use core::ops::Range;

use core::fmt;

use nom::number::streaming::be_u8;

use super::{BufferTooSmall, ParseResult, WireError, Writer, fail, len_prefixed, run, version};

/// Sub-negotiation version (RFC 1929: X'01', not 5).
pub const VERSION: u8 = 1;

/// `VER=1 | ULEN | UNAME | PLEN | PASSWD`, both fields 1–255 octets.
///
/// `Debug` masks the password so that logging a request never leaks it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserPassRequest<'a> {
    username: &'a [u8],
    password: &'a [u8],
}

impl<'a> UserPassRequest<'a> {
    /// Checks that both fields are 1–255 octets.
    pub fn new(username: &'a [u8], password: &'a [u8]) -> Result<Self, WireError> {
        match (username.len(), password.len()) {
            (0, _) => Err(WireError::EmptyUsername),
            (_, 0) => Err(WireError::EmptyPassword),
            (1..=255, 1..=255) => Ok(Self { username, password }),
            _ => Err(WireError::Truncated),
        }
    }

    /// Parses a request; see the [module contract](super).
    pub fn parse(buf: &'a [u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            if i.first() == Some(&0) {
                return fail(WireError::EmptyUsername);
            }
            let (i, username) = len_prefixed(i)?;
            if i.first() == Some(&0) {
                return fail(WireError::EmptyPassword);
            }
            let (i, password) = len_prefixed(i)?;
            Ok((i, Self { username, password }))
        })
    }

    /// The username octets.
    pub const fn username(&self) -> &'a [u8] {
        self.username
    }

    /// The password octets. Never log them.
    pub const fn password(&self) -> &'a [u8] {
        self.password
    }

    /// Where UNAME sits in the encoded request (after VER and ULEN).
    pub const fn username_span(&self) -> Range<usize> {
        2..2 + self.username.len()
    }

    /// Where PASSWD sits in the encoded request (after ULEN, UNAME and PLEN).
    pub const fn password_span(&self) -> Range<usize> {
        let at = 3 + self.username.len();
        at..at + self.password.len()
    }

    /// Encoded length.
    pub const fn buffer_len(&self) -> usize {
        3 + self.username.len() + self.password.len()
    }

    /// Writes the request; see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, self.buffer_len())?;
        w.u8(VERSION);
        // `new` and `parse` bound both fields to 1..=255 octets.
        w.u8(self.username.len() as u8);
        w.bytes(self.username);
        w.u8(self.password.len() as u8);
        w.bytes(self.password);
        Ok(w.finish())
    }
}

impl fmt::Debug for UserPassRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPassRequest")
            .field("username", &crate::addr::Domain::new(self.username).ok())
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for UserPassRequest<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "UserPassRequest {{ username: {=[u8]:a}, password: <redacted> }}",
            self.username
        )
    }
}

/// `VER=1 | STATUS`; status 0 is success, anything else failure (the server then closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UserPassReply {
    /// The raw status octet.
    pub status: u8,
}

impl UserPassReply {
    /// Success.
    pub const SUCCESS: Self = Self { status: 0 };
    /// Failure (any non-zero status; 1 is what servers send).
    pub const FAILURE: Self = Self { status: 1 };

    /// Whether the status is success.
    pub const fn is_success(&self) -> bool {
        self.status == 0
    }

    /// Parses a status reply; see the [module contract](super).
    pub fn parse(buf: &[u8]) -> ParseResult<Self> {
        run(buf, |i| {
            let (i, _) = version(VERSION)(i)?;
            let (i, status) = be_u8(i)?;
            Ok((i, Self { status }))
        })
    }

    /// Encoded length: always 2.
    pub const fn buffer_len(&self) -> usize {
        2
    }

    /// Writes the status reply; see the [module contract](super).
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out, 2)?;
        w.u8(VERSION);
        w.u8(self.status);
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    #[test]
    fn request_vector() {
        let bytes = b"\x01\x05alice\x06s3cret";
        let (r, n) = UserPassRequest::parse(bytes).unwrap().complete().unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(
            (r.username(), r.password()),
            (&b"alice"[..], &b"s3cret"[..])
        );
        let mut out = [0u8; 32];
        assert_eq!(r.emit(&mut out), Ok(bytes.len()));
        assert_eq!(&out[..bytes.len()], bytes);
    }

    #[test]
    fn request_errors_surface_early() {
        assert_eq!(
            UserPassRequest::parse(&[1, 0]),
            Err(WireError::EmptyUsername)
        );
        assert_eq!(
            UserPassRequest::parse(&[1, 1, b'a', 0]),
            Err(WireError::EmptyPassword)
        );
        assert_eq!(
            UserPassRequest::parse(&[5, 1, b'a']),
            Err(WireError::BadVersion(5))
        );
        assert_eq!(UserPassRequest::parse(&[1, 2, b'a']), Ok(Status::Partial));
        assert_eq!(
            UserPassRequest::parse(&[1, 1, b'a', 2, b'x']),
            Ok(Status::Partial)
        );
    }

    #[test]
    fn debug_masks_password() {
        let r = UserPassRequest::new(b"bob", b"hunter2").unwrap();
        let text = format!("{r:?}");
        assert!(text.contains("bob") && !text.contains("hunter2"), "{text}");
    }

    #[test]
    fn reply_vectors() {
        assert_eq!(
            UserPassReply::parse(&[1, 0]),
            Ok(Status::Complete((UserPassReply::SUCCESS, 2)))
        );
        assert!(
            !UserPassReply::parse(&[1, 1])
                .unwrap()
                .complete()
                .unwrap()
                .0
                .is_success()
        );
        let mut out = [0u8; 2];
        assert_eq!(UserPassReply::FAILURE.emit(&mut out), Ok(2));
        assert_eq!(out, [1, 1]);
    }
}
