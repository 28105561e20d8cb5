//! CONNECT's outbound connection, and how an outbound error is classified for the core.
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
use std::net::SocketAddr;

use socksgate_core::Failure;
use socksgate_core::rules::Decision;
use socksgate_core::session::Event;
use socksgate_core::wire::Command;
use tracing::debug;

use crate::clock;
use crate::resolve;
use crate::session::{Conn, Upstream};

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
    Denied(Decision),
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

/// Answers a CONNECT's [`Event::Resolve`] or [`Event::Connect`]: through the `[[upstream]]`
/// the deciding rule names, or directly — one address, or a name with Happy Eyeballs, each
/// address checked by the session's rules before it is tried — within the session's connect
/// deadline. Reports the outcome to the session; returns the connection on success.
pub(crate) async fn open(conn: &mut Conn<'_>, event: Event) -> Option<Upstream> {
    let shared = conn.shared;
    if let Some(name) = conn
        .session
        .decision()
        .and_then(|d| shared.rules.upstream(d))
        && let Some(url) = shared.config.upstream(name)
    {
        return crate::chain::open(conn, name, &url).await;
    }
    let started = std::time::Instant::now();
    let deadline = conn.session.poll_timeout().map(clock::deadline);
    let attempt = async {
        match (event, conn.session.request()) {
            (Event::Connect(Some(sa)), _) => {
                resolve::connect_tcp(sa).await.map_err(ConnectError::from)
            }
            (_, Some(request)) if request.command == Command::Connect => {
                let session = &*conn.session;
                let policy = &conn.policy;
                let allow = |sa: SocketAddr| {
                    session
                        .check_resolved(policy, sa.ip())
                        .map_err(ConnectError::Denied)
                };
                Box::pin(shared.resolver.connect(&request.target, allow)).await
            }
            _ => Err(ConnectError::Io(io::ErrorKind::InvalidInput.into())),
        }
    };
    let outcome = match deadline {
        Some(at) => tokio::time::timeout_at(at, attempt)
            .await
            .unwrap_or(Err(ConnectError::TimedOut)),
        None => attempt.await,
    };
    shared.metrics.connect_done(started.elapsed());
    let stream = match outcome {
        Ok(stream) => stream,
        Err(ConnectError::Denied(d)) => {
            let _ = conn.session.handle_denied(d);
            return None;
        }
        Err(e) => {
            debug!("connect failed: {e}");
            let _ = conn.session.handle_failure(e.failure());
            return None;
        }
    };
    match stream.local_addr() {
        Ok(bound) => {
            debug!(%bound, remote = ?stream.peer_addr().ok(), "connected");
            let _ = conn
                .session
                .handle_opened(&conn.policy, bound, clock::now());
            Some(Upstream {
                stream,
                early_down: Vec::new(),
            })
        }
        Err(e) => {
            let _ = conn.session.handle_failure(io_failure(&e));
            None
        }
    }
}

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
