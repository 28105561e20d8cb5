//! What went wrong, at which stage, with which proxy.

use std::fmt;
use std::time::Duration;

use socksgate_core::client::{ClientError, Phase};
use socksgate_core::wire::{ReplyCode, Socks4Code};

use crate::failure::ConnectError;

/// The step of an operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Resolving the destination's name locally (`socks4://`, `socks5://`).
    Resolve,
    /// Opening the TCP connection to the first proxy.
    ConnectToProxy,
    /// The TLS handshake with a `+tls` proxy.
    Tls,
    /// The SOCKS5 method negotiation.
    Greeting,
    /// Authentication (RFC 1929 username/password).
    Authentication,
    /// The request's reply (for BIND: the first one, with the listening address); for a
    /// proxy further down a chain, the previous proxy's CONNECT to it.
    Request,
    /// BIND's second reply: the peer's connection.
    BindPeer,
    /// Setting up or using the UDP association's datagram socket.
    Udp,
}

impl Stage {
    pub(crate) fn of(phase: Phase) -> Self {
        match phase {
            Phase::Greeting => Self::Greeting,
            Phase::Authentication => Self::Authentication,
            Phase::BindPeer => Self::BindPeer,
            _ => Self::Request,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Resolve => "resolving the destination",
            Self::ConnectToProxy => "connecting to the proxy",
            Self::Tls => "TLS handshake",
            Self::Greeting => "method negotiation",
            Self::Authentication => "authentication",
            Self::Request => "request",
            Self::BindPeer => "waiting for the BIND peer",
            Self::Udp => "UDP relay",
        })
    }
}

/// Why a client operation failed. The `Display` text names the proxy, the stage and the
/// cause, e.g. `proxy 127.0.0.1:1080, request: proxy refused: connection refused by the
/// destination (REP 5)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The proxy URL is not usable.
    #[error("invalid proxy URL: {0}")]
    Url(String),
    /// The destination cannot be sent with this protocol, or is not a valid name.
    #[error("invalid destination: {0}")]
    Destination(String),
    /// The operation cannot be done with this client (UDP ASSOCIATE through a chain,
    /// through SOCKS4, …).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The proxy refused, or the handshake failed: the core's reason, and the stage.
    /// A refusal reads `proxy refused: <cause> (REP n)` (SOCKS4: `(SOCKS4 CD n)`); see
    /// [`Error::reply_code`].
    #[error("{proxy}, {stage}: {}", Explained(source))]
    Handshake {
        /// The proxy (`proxy host:port`).
        proxy: String,
        /// The stage.
        stage: Stage,
        /// The core's reason.
        source: ClientError,
    },
    /// The GSS-API library failed: no ticket (`kinit`), an expired one, no ticket for
    /// the proxy's service, a message that fails its check.
    #[error("{proxy}, authentication: GSS-API: {source}")]
    Gssapi {
        /// The proxy (`proxy host:port`).
        proxy: String,
        /// The library's reason.
        source: crate::gssapi::GssError,
    },
    /// The proxy closed the connection before answering.
    #[error("{proxy}, {stage}: proxy closed the connection")]
    Closed {
        /// The proxy (`proxy host:port`).
        proxy: String,
        /// The stage.
        stage: Stage,
    },
    /// Resolving the destination or the first proxy, or connecting to it, failed.
    #[error("{stage} {what}: {source}")]
    Connect {
        /// [`Stage::Resolve`] or [`Stage::ConnectToProxy`].
        stage: Stage,
        /// The name or address.
        what: String,
        /// The cause.
        source: ConnectError,
    },
    /// The TLS settings could not be loaded.
    #[error("TLS: {0}")]
    TlsConfig(#[from] crate::tls::TlsError),
    /// The TLS handshake with a `+tls` proxy failed.
    #[error("TLS handshake with {proxy}: {source}")]
    Tls {
        /// The proxy (`proxy host:port`).
        proxy: String,
        /// The cause (an untrusted certificate, one for another name, …).
        source: std::io::Error,
    },
    /// Socket I/O failed.
    #[error("{stage}: {context}: {source}")]
    Io {
        /// The stage.
        stage: Stage,
        /// What was being done, and with whom.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The operation took longer than the [timeout](super::Connector::with_timeout).
    #[error("timed out after {after:?}")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The proxy closed the UDP association's control connection: the association is over.
    #[error("{proxy} ended the UDP association (its control connection closed)")]
    AssociationClosed {
        /// The proxy (`proxy host:port`).
        proxy: String,
    },
}

impl Error {
    /// The SOCKS5 reply code (REP), if the proxy refused with one.
    ///
    /// ```
    /// use socksgate::client::{Error, Stage};
    /// use socksgate_core::client::ClientError;
    /// use socksgate_core::wire::ReplyCode;
    ///
    /// let e = Error::Handshake {
    ///     proxy: "proxy 127.0.0.1:1080".into(),
    ///     stage: Stage::Request,
    ///     source: ClientError::Rejected(ReplyCode::ConnectionRefused),
    /// };
    /// assert_eq!(e.reply_code(), Some(ReplyCode::ConnectionRefused));
    /// assert_eq!(
    ///     e.to_string(),
    ///     "proxy 127.0.0.1:1080, request: proxy refused: connection refused by the destination (REP 5)"
    /// );
    /// ```
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Self::Handshake {
                source: ClientError::Rejected(code),
                ..
            } => Some(*code),
            _ => None,
        }
    }

    /// The SOCKS4 reply code (CD), if the proxy refused with one.
    pub fn socks4_code(&self) -> Option<Socks4Code> {
        match self {
            Self::Handshake {
                source: ClientError::Socks4Rejected(code),
                ..
            } => Some(*code),
            _ => None,
        }
    }

    /// The core's handshake error, if the handshake itself failed.
    pub fn handshake_error(&self) -> Option<ClientError> {
        match self {
            Self::Handshake { source, .. } => Some(*source),
            _ => None,
        }
    }

    pub(crate) fn handshake(proxy: &str, phase: Phase, source: ClientError) -> Self {
        Self::Handshake {
            proxy: proxy.to_owned(),
            stage: Stage::of(phase),
            source,
        }
    }

    pub(crate) fn io(stage: Stage, context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            stage,
            context: context.into(),
            source,
        }
    }
}

/// A core error in words, refusals with their cause and code.
struct Explained<'a>(&'a ClientError);

impl fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ClientError::Rejected(code) => write!(
                f,
                "proxy refused: {} (REP {})",
                reply_cause(*code),
                u8::from(*code)
            ),
            ClientError::Socks4Rejected(code) => write!(
                f,
                "proxy refused: {} (SOCKS4 CD {})",
                code.describe(),
                u8::from(*code)
            ),
            other => write!(f, "{other}"),
        }
    }
}

/// REP in words, as seen from the client: who refused and why.
fn reply_cause(code: ReplyCode) -> &'static str {
    match code {
        ReplyCode::GeneralFailure => "general SOCKS server failure",
        ReplyCode::NotAllowed => "not allowed by the proxy's rules",
        ReplyCode::NetworkUnreachable => "network unreachable from the proxy",
        ReplyCode::HostUnreachable => "host unreachable from the proxy (or its name not found)",
        ReplyCode::ConnectionRefused => "connection refused by the destination",
        ReplyCode::TtlExpired => "TTL expired (or the proxy's connect timed out)",
        ReplyCode::CommandNotSupported => "command not supported by the proxy",
        ReplyCode::AddressTypeNotSupported => "address type not supported by the proxy",
        other => other.describe(),
    }
}
