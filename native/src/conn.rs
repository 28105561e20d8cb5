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
    /// The GSS-API context could not be established, or a protection message failed.
    #[error("GSS-API: {0}")]
    Gssapi(crate::gssapi::GssError),
    /// The protected stream (RFC 1961 §5) failed.
    #[error("{0}")]
    Protected(crate::protected::ProtectionError),
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
    pub(crate) shared: &'a std::sync::Arc<Shared>,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Our end of the control connection.
    pub(crate) local: SocketAddr,
    /// Payload bytes relayed (up, down), set when the command ends (for the access log).
    pub(crate) bytes: (u64, u64),
    /// GSS-API state, once the client sends a token; with a protection level that
    /// encapsulates, all I/O after the negotiation goes through it.
    pub(crate) gss: Option<Box<crate::gssapi_session::GssState>>,
}

impl Conn<'_> {
    /// Sends everything the session has queued, straight from its buffer (sealed first when
    /// a GSS-API protection level is in force).
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if let Some(protection) = self.gss.as_mut().and_then(|g| g.protection.as_mut()) {
            let plain = self.session.pending_transmit();
            if !plain.is_empty() {
                let mut sealed = Vec::new();
                protection
                    .seal(plain, &mut sealed)
                    .map_err(std::io::Error::other)?;
                let n = plain.len();
                self.session.consume_transmit(n);
                self.stream.write_all(&sealed).await?;
            }
            return self.stream.flush().await;
        }
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

    /// Sends `plain` to the client on the destination's behalf (sealed when protected).
    pub(crate) async fn send_to_client(&mut self, plain: &[u8]) -> std::io::Result<()> {
        match self.gss.as_mut().and_then(|g| g.protection.as_mut()) {
            Some(protection) => {
                let mut sealed = Vec::new();
                protection
                    .seal(plain, &mut sealed)
                    .map_err(std::io::Error::other)?;
                self.stream.write_all(&sealed).await?;
            }
            None => self.stream.write_all(plain).await?,
        }
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
            if self.gss.as_ref().is_some_and(|g| g.protection.is_some()) {
                self.next_protected_input(deadline).await?;
                continue;
            }
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

    /// With a protection level in force: gives the session the plaintext already opened, or
    /// reads and opens more (within `deadline`).
    async fn next_protected_input(
        &mut self,
        deadline: Option<socksgate_core::time::Instant>,
    ) -> Result<(), SessionError> {
        let Some(gss) = self.gss.as_mut() else {
            return Ok(());
        };
        if !gss.plain.is_empty() {
            let taken = self
                .session
                .handle_input(&self.policy, &gss.plain, clock::now());
            gss.plain.drain(..taken);
            if taken > 0 {
                return Ok(());
            }
            // The session takes nothing while it waits for an answer: a driver bug.
            return Err(SessionError::Refused("no input wanted".into()));
        }
        let mut raw = [0u8; 4096];
        let read = self.stream.read(&mut raw);
        let n = match deadline {
            Some(at) => match tokio::time::timeout_at(clock::deadline(at), read).await {
                Ok(r) => r?,
                Err(_) => {
                    self.session.handle_timeout(clock::now());
                    return Ok(());
                }
            },
            None => read.await?,
        };
        if n == 0 {
            return Err(SessionError::Eof);
        }
        self.open_from_client(raw.get(..n).unwrap_or_default())
    }

    /// With a protection level in force: opens `raw` bytes read from the client, appending
    /// their plaintext to what is held for the session (`gss.plain`).
    pub(crate) fn open_from_client(&mut self, raw: &[u8]) -> Result<(), SessionError> {
        let Some(gss) = self.gss.as_mut() else {
            return Ok(());
        };
        let mut plain = std::mem::take(&mut gss.plain);
        let opened = match gss.protection.as_mut() {
            Some(p) => p.open(raw, &mut plain),
            None => Ok(()),
        };
        gss.plain = plain;
        opened.map_err(|e| crate::gssapi_session::fail_stream(self, e))
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
            Close::Gssapi(e) => {
                // Failures of our own step were counted with their cause when they happened.
                if e != socksgate_core::gssapi::GssapiError::Failed {
                    self.shared.metrics.gssapi_failed("protocol");
                }
                SessionError::Refused(format!("GSS-API: {e}"))
            }
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
