//! Why an outbound connection failed, and which reply code says so.
//!
//! The table (SOCKS5 REP; SOCKS4 has only 91 "rejected or failed" for every failure):
//!
//! | cause | `io::ErrorKind` / errno | REP |
//! |---|---|---|
//! | refused by the destination | `ConnectionRefused` (ECONNREFUSED), `ConnectionReset` | 5 connection refused |
//! | no route to the network | `NetworkUnreachable` (ENETUNREACH), `NetworkDown` (ENETDOWN) | 3 network unreachable |
//! | no route to the host | `HostUnreachable` (EHOSTUNREACH, EHOSTDOWN) | 4 host unreachable |
//! | name does not resolve (NXDOMAIN, no A/AAAA) | — | 4 host unreachable |
//! | connect or resolve timed out | `TimedOut` (ETIMEDOUT), our own timer | 6 TTL expired |
//! | local firewall / policy | `PermissionDenied` (EACCES, EPERM) | 2 not allowed |
//! | denied by socksgate's rules | — | 2 not allowed |
//! | unusable destination address | `AddrNotAvailable` (EADDRNOTAVAIL), `InvalidInput` | 4 host unreachable |
//! | anything else (EMFILE, DNS server failure, …) | — | 1 general failure |
//!
//! No reply code exists for DNS failures; like Dante and most peers, a name that does not
//! resolve is "host unreachable", while a resolver that cannot answer at all is a general
//! failure of the proxy.

use std::io;

use socksgate_core::wire::ReplyCode;

/// Why CONNECT (or the outbound side of another command) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Every connection attempt failed; this is the most telling error among them.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The name has no A/AAAA records, or does not exist.
    #[error("name not found: {0}")]
    NameNotFound(String),
    /// The resolver could not answer (no server reachable, SERVFAIL, …).
    #[error("resolver failed: {0}")]
    Resolver(String),
    /// Resolving and connecting took longer than the connect timeout.
    #[error("timed out")]
    TimedOut,
    /// The access rules refuse the destination (possibly only once resolved).
    #[error("denied by {0}")]
    Denied(String),
}

impl ConnectError {
    /// The SOCKS5 reply code for this failure.
    pub fn reply(&self) -> ReplyCode {
        match self {
            Self::Io(e) => io_reply(e),
            Self::NameNotFound(_) => ReplyCode::HostUnreachable,
            Self::Resolver(_) => ReplyCode::GeneralFailure,
            Self::TimedOut => ReplyCode::TtlExpired,
            Self::Denied(_) => ReplyCode::NotAllowed,
        }
    }
}

/// Maps an I/O error from `connect`/`bind`/`send` to a SOCKS5 reply code (see the table above).
pub fn io_reply(e: &io::Error) -> ReplyCode {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused | K::ConnectionReset => ReplyCode::ConnectionRefused,
        K::NetworkUnreachable | K::NetworkDown => ReplyCode::NetworkUnreachable,
        K::HostUnreachable | K::AddrNotAvailable | K::InvalidInput => ReplyCode::HostUnreachable,
        K::TimedOut => ReplyCode::TtlExpired,
        K::PermissionDenied => ReplyCode::NotAllowed,
        _ => match e.raw_os_error() {
            // EHOSTDOWN has no ErrorKind of its own.
            Some(EHOSTDOWN) => ReplyCode::HostUnreachable,
            _ => ReplyCode::GeneralFailure,
        },
    }
}

#[cfg(target_os = "linux")]
const EHOSTDOWN: i32 = 112;
#[cfg(not(target_os = "linux"))]
const EHOSTDOWN: i32 = 64;

/// How specific an error is, to pick the one worth reporting among several attempts: a
/// destination that answered (refused) beats a route error, which beats a timeout.
pub(crate) fn rank(e: &io::Error) -> u8 {
    match io_reply(e) {
        ReplyCode::ConnectionRefused => 4,
        ReplyCode::HostUnreachable | ReplyCode::NetworkUnreachable => 3,
        ReplyCode::NotAllowed => 2,
        ReplyCode::TtlExpired => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> ReplyCode {
        io_reply(&io::Error::from_raw_os_error(code))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn errno_table() {
        // Linux errno values.
        assert_eq!(os(111), ReplyCode::ConnectionRefused); // ECONNREFUSED
        assert_eq!(os(104), ReplyCode::ConnectionRefused); // ECONNRESET
        assert_eq!(os(101), ReplyCode::NetworkUnreachable); // ENETUNREACH
        assert_eq!(os(100), ReplyCode::NetworkUnreachable); // ENETDOWN
        assert_eq!(os(113), ReplyCode::HostUnreachable); // EHOSTUNREACH
        assert_eq!(os(112), ReplyCode::HostUnreachable); // EHOSTDOWN
        assert_eq!(os(99), ReplyCode::HostUnreachable); // EADDRNOTAVAIL
        assert_eq!(os(110), ReplyCode::TtlExpired); // ETIMEDOUT
        assert_eq!(os(13), ReplyCode::NotAllowed); // EACCES
        assert_eq!(os(1), ReplyCode::NotAllowed); // EPERM
        assert_eq!(os(24), ReplyCode::GeneralFailure); // EMFILE
    }

    #[test]
    fn other_causes() {
        assert_eq!(
            ConnectError::NameNotFound("x".into()).reply(),
            ReplyCode::HostUnreachable
        );
        assert_eq!(ConnectError::TimedOut.reply(), ReplyCode::TtlExpired);
        assert_eq!(
            ConnectError::Denied("rule 1".into()).reply(),
            ReplyCode::NotAllowed
        );
        assert_eq!(
            ConnectError::Resolver("x".into()).reply(),
            ReplyCode::GeneralFailure
        );
    }

    #[tokio::test]
    async fn refused_on_loopback() {
        // Bind then drop a listener: the port is (almost certainly) closed now.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_err();
        assert_eq!(io_reply(&e), ReplyCode::ConnectionRefused);
    }
}
