//! Why an outbound operation failed, classified for the core.
//!
//! The core chooses every reply code (`socksgate_core::failure` has the table); this module
//! only says which [`Failure`] an `io::Error` or a resolver error is:
//!
//! | `io::ErrorKind` / errno | [`Failure`] |
//! |---|---|
//! | `ConnectionRefused` (ECONNREFUSED), `ConnectionReset` | `Refused` |
//! | `NetworkUnreachable` (ENETUNREACH), `NetworkDown` (ENETDOWN) | `NetworkUnreachable` |
//! | `HostUnreachable` (EHOSTUNREACH), EHOSTDOWN | `HostUnreachable` |
//! | `AddrNotAvailable` (EADDRNOTAVAIL), `InvalidInput` | `AddressUnusable` |
//! | `TimedOut` (ETIMEDOUT) | `TimedOut` |
//! | `PermissionDenied` (EACCES, EPERM) | `PermissionDenied` |
//! | anything else (EMFILE, …) | `Other` |

use std::io;

use socksgate_core::Failure;
use socksgate_core::rules::Refusal;

/// Why resolving or connecting failed.
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
    /// The access rules refuse every address the name resolved to.
    #[error("denied by the rules")]
    Denied(Refusal),
}

impl ConnectError {
    /// What the core is told (a denial goes to `Session::handle_denied` instead).
    pub fn failure(&self) -> Failure {
        match self {
            Self::Io(e) => io_failure(e),
            Self::NameNotFound(_) => Failure::NameNotFound,
            Self::Resolver(_) => Failure::ResolverFailed,
            Self::TimedOut => Failure::TimedOut,
            Self::Denied(_) => Failure::PermissionDenied,
        }
    }
}

/// Classifies an I/O error from `connect`/`bind`/`send` (see the table above).
pub fn io_failure(e: &io::Error) -> Failure {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused | K::ConnectionReset => Failure::Refused,
        K::NetworkUnreachable | K::NetworkDown => Failure::NetworkUnreachable,
        K::HostUnreachable => Failure::HostUnreachable,
        K::AddrNotAvailable | K::InvalidInput => Failure::AddressUnusable,
        K::TimedOut => Failure::TimedOut,
        K::PermissionDenied => Failure::PermissionDenied,
        _ => match e.raw_os_error() {
            // EHOSTDOWN has no ErrorKind of its own.
            Some(EHOSTDOWN) => Failure::HostUnreachable,
            _ => Failure::Other,
        },
    }
}

#[cfg(target_os = "linux")]
const EHOSTDOWN: i32 = 112;
#[cfg(not(target_os = "linux"))]
const EHOSTDOWN: i32 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> Failure {
        io_failure(&io::Error::from_raw_os_error(code))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn errno_table() {
        // Linux errno values.
        assert_eq!(os(111), Failure::Refused); // ECONNREFUSED
        assert_eq!(os(104), Failure::Refused); // ECONNRESET
        assert_eq!(os(101), Failure::NetworkUnreachable); // ENETUNREACH
        assert_eq!(os(100), Failure::NetworkUnreachable); // ENETDOWN
        assert_eq!(os(113), Failure::HostUnreachable); // EHOSTUNREACH
        assert_eq!(os(112), Failure::HostUnreachable); // EHOSTDOWN
        assert_eq!(os(99), Failure::AddressUnusable); // EADDRNOTAVAIL
        assert_eq!(os(110), Failure::TimedOut); // ETIMEDOUT
        assert_eq!(os(13), Failure::PermissionDenied); // EACCES
        assert_eq!(os(1), Failure::PermissionDenied); // EPERM
        assert_eq!(os(24), Failure::Other); // EMFILE
    }

    #[test]
    fn other_causes() {
        assert_eq!(
            ConnectError::NameNotFound("x".into()).failure(),
            Failure::NameNotFound
        );
        assert_eq!(ConnectError::TimedOut.failure(), Failure::TimedOut);
        assert_eq!(
            ConnectError::Resolver("x".into()).failure(),
            Failure::ResolverFailed
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
        assert_eq!(io_failure(&e), Failure::Refused);
    }
}
