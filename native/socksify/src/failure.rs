//! Why a proxied call failed, and the errno the program sees for it.
#![forbid(unsafe_code)]

use std::fmt;

use socksgate_core::client::ClientError;
use socksgate_core::wire::{ReplyCode, Socks4Code};

use crate::sys::Errno;

/// A failed exchange with the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The configuration names no usable proxy (fail closed).
    NoProxy,
    /// A socket call on the way failed (reaching the proxy: its errno, e.g. ECONNREFUSED).
    Io(Errno),
    /// The proxy did not answer within the connect timeout.
    TimedOut,
    /// The proxy closed the connection during the handshake.
    Closed,
    /// The handshake failed: a refusal, an authentication failure, a malformed reply.
    Proxy(ClientError),
}

impl Failure {
    /// The errno a program expects for this failure.
    ///
    /// | failure | errno |
    /// |---|---|
    /// | reply 1 general failure, SOCKS4 91 | ECONNREFUSED |
    /// | reply 2 not allowed by ruleset, authentication failed, no acceptable method, SOCKS4 92/93 | EACCES |
    /// | reply 3 network unreachable | ENETUNREACH |
    /// | reply 4 host unreachable (also: the proxy could not resolve the name) | EHOSTUNREACH |
    /// | reply 5 connection refused | ECONNREFUSED |
    /// | reply 6 TTL expired, no answer within the timeout | ETIMEDOUT |
    /// | reply 7 command not supported | EOPNOTSUPP |
    /// | reply 8 address type not supported, SOCKS4 with an IPv6 destination | EAFNOSUPPORT |
    /// | the proxy closed the connection, malformed reply | ECONNRESET, EPROTO |
    /// | the proxy itself unreachable | the errno of connecting to it (ECONNREFUSED, ENETUNREACH, …) |
    /// | no usable proxy configured | ECONNREFUSED |
    pub(crate) fn errno(self) -> Errno {
        match self {
            Self::NoProxy => libc::ECONNREFUSED,
            Self::Io(e) => e,
            Self::TimedOut => libc::ETIMEDOUT,
            Self::Closed => libc::ECONNRESET,
            Self::Proxy(e) => match e {
                ClientError::Rejected(code) => match code {
                    ReplyCode::NotAllowed => libc::EACCES,
                    ReplyCode::NetworkUnreachable => libc::ENETUNREACH,
                    ReplyCode::HostUnreachable => libc::EHOSTUNREACH,
                    ReplyCode::TtlExpired => libc::ETIMEDOUT,
                    ReplyCode::CommandNotSupported => libc::EOPNOTSUPP,
                    ReplyCode::AddressTypeNotSupported => libc::EAFNOSUPPORT,
                    _ => libc::ECONNREFUSED,
                },
                ClientError::Socks4Rejected(code) => match code {
                    Socks4Code::NoIdentd | Socks4Code::IdentMismatch => libc::EACCES,
                    _ => libc::ECONNREFUSED,
                },
                ClientError::AuthFailed
                | ClientError::NoAcceptableMethod
                | ClientError::InvalidCredentials => libc::EACCES,
                ClientError::AddressNotSupported => libc::EAFNOSUPPORT,
                ClientError::CommandNotSupported => libc::EOPNOTSUPP,
                _ => libc::EPROTO,
            },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoProxy => f.write_str("no usable proxy configured"),
            Self::Io(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
            Self::TimedOut => f.write_str("the proxy did not answer in time"),
            Self::Closed => f.write_str("the proxy closed the connection during the handshake"),
            Self::Proxy(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_become_errnos() {
        let of = |code: u8| Failure::Proxy(ClientError::Rejected(ReplyCode::from(code))).errno();
        assert_eq!(of(1), libc::ECONNREFUSED);
        assert_eq!(of(2), libc::EACCES);
        assert_eq!(of(3), libc::ENETUNREACH);
        assert_eq!(of(4), libc::EHOSTUNREACH);
        assert_eq!(of(5), libc::ECONNREFUSED);
        assert_eq!(of(6), libc::ETIMEDOUT);
        assert_eq!(of(7), libc::EOPNOTSUPP);
        assert_eq!(of(8), libc::EAFNOSUPPORT);
        assert_eq!(
            Failure::Proxy(ClientError::AuthFailed).errno(),
            libc::EACCES
        );
        assert_eq!(Failure::Io(libc::ECONNREFUSED).errno(), libc::ECONNREFUSED);
    }
}
