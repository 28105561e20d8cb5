//! The tokio driver of one core [`Session`]: reads the client under the session's deadline,
//! writes what it queues, and hands each event to the code that answers it.

use std::net::SocketAddr;

use socksgate_core::Policy;
use socksgate_core::server::ServerError;
use socksgate_core::session::{Close, Event, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

use crate::clock;
use crate::pool::READ_BUF;
use crate::shared::Shared;
use crate::stream::Stream;

/// How long a failed connection waits for the client to close after the failure reply.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a session ended early (the access record's `error`; the client already got its reply).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// Socket I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (the core queued the matching failure reply).
    #[error("protocol: {0}")]
    Protocol(ServerError),
    /// The TLS handshake failed, or a client certificate named no usable user.
    #[error("{0}")]
    Tls(#[from] crate::tls::AcceptError),
    /// The client closed before finishing the handshake.
    #[error("client closed during handshake")]
    Eof,
    /// The handshake took longer than the handshake timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Username/password rejected.
    #[error("authentication failed for user {0:?}")]
    AuthFailed(String),
    /// The request failed or was refused (reply already sent).
    #[error("{0}")]
    Refused(String),
}

/// A client connection while it negotiates and runs its command: the socket, the leased
/// session, and what its answers need.
pub(crate) struct Conn<'a> {
    pub(crate) stream: Stream,
    pub(crate) session: &'a mut Session<READ_BUF>,
    pub(crate) policy: Policy<'a>,
    pub(crate) shared: &'a Shared,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Our end of the control connection.
    pub(crate) local: SocketAddr,
    /// Payload bytes relayed (up, down), set when the command ends (for the access log).
    pub(crate) bytes: (u64, u64),
}

impl Conn<'_> {
    /// Sends everything the session has queued, straight from its buffer.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        while !self.session.pending_transmit().is_empty() {
            let n = self.stream.write(self.session.pending_transmit()).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.session.consume_transmit(n);
        }
        // TLS holds written records until flushed; a socket has nothing to flush.
        self.stream.flush().await
    }

    /// Sends what is queued, then reads client bytes until the session has an event, within
    /// its deadline (on expiry the session decides what happens).
    pub(crate) async fn next_event(&mut self) -> Result<Event, SessionError> {
        loop {
            self.flush().await?;
            if let Some(event) = self.session.poll_event() {
                return Ok(event);
            }
            let deadline = self.session.poll_timeout();
            let buf = self.session.recv_buffer();
            if buf.is_empty() {
                // Only while an answer is outstanding, which the caller gives before asking
                // again; a driver bug otherwise.
                return Err(SessionError::Refused("no input wanted".into()));
            }
            let read = self.stream.read(buf);
            let n = match deadline {
                Some(at) => match tokio::time::timeout_at(clock::deadline(at), read).await {
                    Ok(r) => r?,
                    Err(_) => {
                        self.session.handle_timeout(clock::now());
                        continue;
                    }
                },
                None => read.await?,
            };
            if n == 0 {
                return Err(SessionError::Eof);
            }
            self.session.handle_received(&self.policy, n, clock::now());
        }
    }

    /// Flushes the failure reply and closes our write side, so the client sees the reply and
    /// then EOF.
    pub(crate) async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        // Lingering close: closing with unread client bytes (a pipelined payload) makes the
        // kernel send RST, which can destroy the reply before the client reads it. Read and
        // discard until the client closes too, for a short while.
        let mut sink = [0u8; 512];
        let drain = async {
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Why the session closed, for the access record; logs denials with their rule.
    pub(crate) fn closed(&self, reason: Close) -> SessionError {
        match reason {
            Close::Protocol(e) => SessionError::Protocol(e),
            Close::HandshakeTimeout => SessionError::HandshakeTimeout,
            Close::AuthFailed => SessionError::AuthFailed(
                String::from_utf8_lossy(self.session.credentials().map_or(&[][..], |(u, _)| u))
                    .into_owned(),
            ),
            Close::Denied(d) => {
                let rule = self.shared.rules.label(d);
                let dst = self.session.request().map(|r| r.target.to_string());
                warn!(dst = dst.as_deref().unwrap_or("-"), "denied by {rule}");
                SessionError::Refused(format!("denied by {rule}"))
            }
            Close::Protected(p) => {
                let dst = self.session.request().map(|r| r.target.to_string());
                warn!(
                    dst = dst.as_deref().unwrap_or("-"),
                    "refused: protected destination ({p}); see [access] protect_local_destinations"
                );
                SessionError::Refused(format!("protected destination ({p})"))
            }
            other => SessionError::Refused(other.to_string()),
        }
    }
}

/// The outbound side a CONNECT opened.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) stream: Stream,
    /// Bytes an upstream proxy sent after its reply, already the destination's.
    pub(crate) early_down: Vec<u8>,
}
