//! The server's answers to the core's GSS-API events (RFC 1961) for one session: collecting
//! the client's token pieces, accepting the context from the `[gssapi]` keytab, unwrapping
//! the protection-level request and wrapping the grant, and switching the connection to the
//! protected stream ([`crate::protected`]) when the level encapsulates.
//!
//! The core decides everything about the exchange (message order, which level is granted,
//! the NEC form); this module does the cryptography and the I/O it asks for. Context
//! failures are throttled per client like RFC 1929 failures ([`crate::throttle`]) and end the
//! session with [`SessionError::Gssapi`], whose cause is the access record's error and the
//! label of `socksgate_gssapi_failures_total`.

use socksgate_core::gssapi::ProtectionLevel;
use socksgate_core::session::Event;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::clock;
use crate::conn::{Conn, SessionError};
use crate::gssapi::{AcceptContext, Cause, Context, GssError, Step};
use crate::protected::Protection;
use crate::throttle::Verdict;

/// A session's GSS-API state, from its first token piece on (boxed in [`Conn`]: sessions
/// that do not use GSS-API do not carry it).
#[derive(Debug, Default)]
pub(crate) struct GssState {
    /// The client's token collected so far.
    token: Vec<u8>,
    /// The acceptor context between rounds (Kerberos needs one round; other mechanisms
    /// more).
    accepting: Option<AcceptContext>,
    /// The established context, until the protection level is settled.
    context: Option<Context>,
    /// The level granted in the protected form (the NEC form is answered by the core).
    pub(crate) granted: Option<ProtectionLevel>,
    /// The protected stream once a level that encapsulates is in force.
    pub(crate) protection: Option<Protection>,
    /// Plaintext opened from the client that the session has not taken yet.
    pub(crate) plain: Vec<u8>,
}

impl GssState {
    /// Whether the context is established (the session's user is its principal).
    pub(crate) fn established(&self) -> bool {
        self.context.is_some() || self.protection.is_some() || self.granted.is_some()
    }
}

/// Answers one GSS-API event of the session.
pub(crate) async fn answer(conn: &mut Conn<'_>, event: Event) -> Result<(), SessionError> {
    let state = conn.gss.get_or_insert_with(Box::default);
    if let Some(piece) = conn.session.gssapi_token_piece() {
        state.token.extend_from_slice(piece);
    }
    match event {
        Event::GssapiPiece => Ok(()),
        Event::GssapiAccept => accept(conn).await,
        Event::GssapiUnwrapProtection => protection(conn).await,
        Event::GssapiProtected(level) => {
            // The grant went out unprotected; everything after it is encapsulated.
            conn.flush().await?;
            let state = conn.gss.get_or_insert_with(Box::default);
            let Some(context) = state.context.take() else {
                return Err(SessionError::Refused(
                    "protection agreed without a context".into(),
                ));
            };
            state.granted = Some(level);
            let mut protection = Protection::new(context, level);
            let mut plain = std::mem::take(&mut state.plain);
            let buffered = conn.session.take_encapsulated_input().to_vec();
            protection
                .open(&buffered, &mut plain)
                .map_err(|e| fail_stream(conn, e))?;
            let state = conn.gss.get_or_insert_with(Box::default);
            state.plain = plain;
            state.protection = Some(protection);
            conn.shared.metrics.gssapi_established(config_level(level));
            debug!(protection = %level, "GSS-API protection in force");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `GssapiAccept`: one `gss_accept_sec_context` step on the collected token, after the
/// client's back-off.
async fn accept(conn: &mut Conn<'_>) -> Result<(), SessionError> {
    let shared = conn.shared;
    let Some(acceptor) = &shared.gssapi else {
        // Method 1 is offered only with `[gssapi]`: not expected.
        let _ = conn.session.handle_gssapi_failed();
        return Err(SessionError::Refused("GSS-API is not configured".into()));
    };
    // The client network, as the session limits key it.
    let client = shared.config.limits.prefixes().key(conn.peer.ip());
    let throttle = &shared.auth_throttle;
    let max_wait = throttle.cap().min(shared.config.timeouts.handshake() / 2);
    let pending = match throttle.admit(client, max_wait) {
        Verdict::Refuse => {
            shared.metrics.auth_throttled(true);
            let _ = conn.session.handle_gssapi_failed();
            conn.flush().await?;
            return Err(SessionError::Gssapi(GssError {
                cause: Cause::Other,
                detail: "too many failed authentications from this client: refused without \
                         checking"
                    .into(),
            }));
        }
        Verdict::Check(wait) => {
            // Released unfinished if the session ends while waiting.
            let pending = throttle.pending(client);
            if !wait.is_zero() {
                shared.metrics.auth_throttled(false);
                tokio::time::sleep(wait).await;
            }
            pending
        }
    };
    let state = conn.gss.get_or_insert_with(Box::default);
    let context = state.accepting.take().unwrap_or_else(|| acceptor.start());
    let token = std::mem::take(&mut state.token);
    let step = context.step(&token);
    pending.finish(step.is_ok());
    match step {
        Ok(Step::Continue(out, next)) => {
            state.accepting = Some(next);
            let _ = conn.session.send_gssapi_token(out.len());
            send_token(conn, &out).await
        }
        Ok(Step::Done(out, context)) => {
            let principal = context.peer().to_owned();
            debug!(
                principal,
                service = context.local(),
                "GSS-API authenticated"
            );
            state.context = Some(context);
            let len = out.as_deref().map_or(0, <[u8]>::len);
            let _ = conn
                .session
                .handle_gssapi_established(principal.as_bytes(), len);
            send_token(conn, out.as_deref().unwrap_or_default()).await
        }
        Err(e) => {
            let _ = conn.session.handle_gssapi_failed();
            conn.flush().await?;
            Err(fail(conn, e))
        }
    }
}

/// `GssapiUnwrapProtection`: the protected-form level request, unwrapped; the grant the core
/// chooses, wrapped (integrity only, as RFC 1961 §4 says).
async fn protection(conn: &mut Conn<'_>) -> Result<(), SessionError> {
    let state = conn.gss.get_or_insert_with(Box::default);
    let mut token = std::mem::take(&mut state.token);
    let Some(context) = state.context.as_mut() else {
        let _ = conn.session.handle_gssapi_failed();
        return Err(SessionError::Refused(
            "protection level before the context".into(),
        ));
    };
    let request = match context.unwrap(&mut token) {
        Ok(range) => token.get(range).unwrap_or_default().to_vec(),
        Err(e) => {
            let _ = conn.session.handle_gssapi_failed();
            conn.flush().await?;
            return Err(fail(conn, e));
        }
    };
    let Ok(Some(level)) = conn.session.handle_gssapi_protection(&request) else {
        // Refused by the policy: the session closes with its reason.
        return Ok(());
    };
    // One octet once per session: the allocating `gss_wrap` is one library call where
    // `Context::wrap_in_place` needs two, and measured faster for small messages
    // (native/tests/gssapi_seal_cost.rs).
    let wrapped = match context.wrap(false, &[u8::from(level)]) {
        Ok(t) => t,
        Err(e) => {
            let _ = conn.session.handle_gssapi_failed();
            conn.flush().await?;
            return Err(fail(conn, e));
        }
    };
    state.granted = Some(level);
    if !level.encapsulates() {
        conn.shared.metrics.gssapi_established(config_level(level));
    }
    let _ = conn.session.send_gssapi_protection(wrapped.len());
    send_token(conn, &wrapped).await
}

/// Sends what the session queued (a header), then `token`, then tells the session, which
/// only then goes on with input the client pipelined.
async fn send_token(conn: &mut Conn<'_>, token: &[u8]) -> Result<(), SessionError> {
    conn.flush().await?;
    conn.stream.write_all(token).await?;
    conn.stream.flush().await?;
    let _ = conn.session.handle_gssapi_sent(&conn.policy, clock::now());
    Ok(())
}

/// Counts a failure of the context or of a protected message and makes it the session's
/// error.
fn fail(conn: &Conn<'_>, e: GssError) -> SessionError {
    conn.shared.metrics.gssapi_failed(e.cause.as_str());
    SessionError::Gssapi(e)
}

/// [`fail`] for the protected stream's errors.
pub(crate) fn fail_stream(conn: &Conn<'_>, e: crate::protected::ProtectionError) -> SessionError {
    if let Some(cause) = e.cause() {
        conn.shared.metrics.gssapi_failed(cause);
    }
    SessionError::Protected(e)
}

/// The configuration's name of a core level (selective, never granted, as confidentiality).
pub(crate) fn config_level(level: ProtectionLevel) -> crate::config::ProtectionLevel {
    match level {
        ProtectionLevel::None => crate::config::ProtectionLevel::None,
        ProtectionLevel::Integrity => crate::config::ProtectionLevel::Integrity,
        _ => crate::config::ProtectionLevel::Confidentiality,
    }
}
