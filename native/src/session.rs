//! One client connection, from accept to its access record.
//!
//! The core's session decides everything about the connection — methods, rules, reply codes,
//! the BIND peer, deadlines; `conn` drives it. This module answers its events with I/O:
//! password checks (`login`), CONNECT (`connect`, `chain`), BIND (`bind`) and UDP ASSOCIATE
//! (`udp_relay`); then it relays and writes the access record.

use std::net::SocketAddr;
use std::sync::Arc;

use socksgate_core::session::Event;
use socksgate_core::wire::Command;
use tokio::net::TcpStream;
use tracing::{Instrument, debug, warn};

use crate::access_log::{Dst, Outcome, Record, command_name};
use crate::clock;
use crate::conn::{Conn, SessionError, Upstream};
use crate::limits::Slot;
use crate::pool::Lease;
use crate::shared::Shared;
use crate::stream::Stream;
use crate::{balancer, bind, connect, gssapi_session, login, relay, udp_relay};

/// Serves one accepted connection to the end, then writes its access record: client, user,
/// command, destination, reply code, bytes each way, duration, outcome and the error that
/// ended it, if any. `local` is the connection's local address when the caller knows it (a
/// listener on a specific address); `None` asks the socket. `listener` is the address the
/// listener is bound to: on a `[[proxy_protocol]]` listener the connection first gives the
/// client it stands for, which is the session's client from then on.
pub async fn handle(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    local: Option<SocketAddr>,
    listener: Option<SocketAddr>,
    shared: Arc<Shared>,
) {
    if let Some(trust) = listener.and_then(|l| shared.balancers.for_listener(l)) {
        let timeout = shared.config.timeouts.handshake();
        match balancer::accept(&mut stream, peer, trust, timeout).await {
            Ok(client) => peer = client,
            Err(e) => {
                warn!(source = %peer, "connection closed: {e}");
                return;
            }
        }
    }
    let span = tracing::info_span!("session", client = %peer);
    async move {
        let started = std::time::Instant::now();
        let mut record = Record::default();
        // The access-log line is the one record of a session; its error, if any, goes
        // there rather than into a line of its own.
        let error = run(stream, peer, local, &shared, &mut record).await.err();
        if record.outcome == Outcome::Limited && record.command.is_none() {
            // Closed before the handshake by a per-client limit: the burst log has the
            // one line for all of them (a flood must not write a line per connection).
            shared
                .metrics
                .session("none".into(), Outcome::Limited.as_str());
            return;
        }
        record.log(
            peer,
            started.elapsed(),
            error.as_ref().map(|e| e as &dyn std::fmt::Display),
            &shared.metrics,
        );
    }
    .instrument(span)
    .await;
}

async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: &Arc<Shared>,
    record: &mut Record,
) -> Result<(), SessionError> {
    let local = match local {
        Some(local) => local,
        None => stream.local_addr()?,
    };
    let _active = shared.metrics.accepted();
    let Some(mut slot) = admit(shared, peer) else {
        record.outcome = Outcome::Limited;
        return Ok(());
    };
    // Boxed: the handshake's state would otherwise size every session task, idle relays
    // included.
    let Some(mut established) =
        Box::pin(establish(stream, peer, local, shared, record, &mut slot)).await?
    else {
        return Ok(());
    };
    // From here on the session holds its two sockets and the relay's few words (and its
    // traffic limits, if any).
    let limits = shared.traffic_limits(record.user.as_deref(), peer.ip());
    // Two plain sockets: the splice relay, inline (the common case); TLS or GSS-API
    // protection on either side: the boxed copy relay, so that plain sessions do not carry
    // its state.
    let totals = match (&mut established.client, &mut established.upstream) {
        (Stream::Plain(client), Stream::Plain(upstream)) => {
            relay::relay_limited(
                relay::Mode::Auto,
                shared.config.timeouts.tcp_idle(),
                limits,
                client,
                upstream,
                &established.early,
            )
            .await
        }
        (client, upstream) => {
            Box::pin(relay::relay_streams(
                shared.config.timeouts.tcp_idle(),
                limits,
                client,
                upstream,
                &established.early,
            ))
            .await
        }
    };
    match totals {
        Ok(t) => {
            let down = t.down + established.sent_down;
            shared.metrics.relayed(record.user.as_deref(), t.up, down);
            record.bytes = (t.up, down);
        }
        Err(e) => match crate::protected::ProtectionError::in_io(&e) {
            // A protected message that failed (either side: the client's or an upstream's).
            Some(failure) => {
                if let Some(cause) = failure.cause() {
                    shared.metrics.gssapi_failed(cause);
                }
                warn!("protected relay ended: {failure}");
            }
            None => debug!("relay ended: {e}"),
        },
    }
    Ok(())
}

/// The per-client session rate, then the global and per-client concurrency limits, before
/// the handshake: a place for the session, or `None` (close it; the refusal is logged once
/// per burst). A plain function, so that nothing of it stays in the session task's state.
fn admit<'s>(shared: &'s Shared, peer: SocketAddr) -> Option<Slot<'s>> {
    let limits = &shared.config.limits;
    let key = limits.prefixes().key(peer.ip());
    let refusals = &shared.session_rates.client_refusals;
    if let Some(rate) = limits.client_rate()
        && !shared.session_rates.admit_client(key, rate, clock::now())
    {
        let why = format_args!(
            "sessions_per_second_per_client ({}, burst {}) exceeded by {key}",
            rate.per_second, rate.burst
        );
        refusals.refused(&key, &why, std::time::Instant::now());
        return None;
    }
    match shared.sessions.admit(key, limits) {
        Ok(slot) => {
            refusals.admitted(&key);
            Some(slot)
        }
        Err(e) => {
            refusals.refused(&key, &e, std::time::Instant::now());
            None
        }
    }
}

/// A CONNECT that succeeded (reply sent): what the relay needs once the handshake is over.
#[derive(Debug)]
struct Established {
    client: Stream,
    upstream: Stream,
    /// Client bytes pipelined after the request, sent upstream first.
    early: Vec<u8>,
    /// Bytes already passed to the client on the destination's behalf (an upstream proxy's
    /// reply can carry the first payload bytes).
    sent_down: u64,
}

/// The session up to its relay: handshake, request, command. Returns the client socket and
/// the destination of a successful CONNECT; every other command runs to its end here. The
/// session is leased from the pool for this phase only.
/// On a `[[tls]]` listener, the TLS handshake comes first.
async fn establish(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Arc<Shared>,
    record: &mut Record,
    slot: &mut Slot<'_>,
) -> Result<Option<Established>, SessionError> {
    let accepted = std::time::Instant::now();
    // After the PROXY header, if any, under the handshake timeout; a failure is this
    // session's one log line (its access record).
    // Found by the connection's local address rather than passed down: a session task
    // holds every argument for its whole life.
    let (stream, tls_user) = match shared.tls.for_local(local) {
        None => (Stream::Plain(stream), None),
        Some(tls) => match tls.accept(stream, shared.config.timeouts.handshake()).await {
            Ok(accepted) => accepted,
            Err(e) => {
                shared.metrics.handshake_failed();
                record.outcome = Outcome::HandshakeFailed;
                return Err(e.into());
            }
        },
    };
    let policy = shared.policy(peer, local);
    let mut lease = Lease::take(&policy, peer, clock::now());
    let mut conn = Conn {
        stream,
        session: &mut lease,
        policy,
        shared,
        peer,
        local,
        bytes: (0, 0),
        gss: None,
    };
    if let Some(user) = tls_user.as_deref() {
        record.user = Some(user.as_bytes().to_vec());
        if conn
            .session
            .with_authenticated_user(user.as_bytes())
            .is_err()
        {
            // `user_of` allows 1 to 255 bytes and the session is new: not expected.
            return Err(SessionError::Refused(format!(
                "client certificate user {user:?} not usable"
            )));
        }
        debug!(user, "authenticated by client certificate");
    }
    let mut upstream = None;
    let result = loop {
        let event = match conn.next_event().await {
            Ok(event) => event,
            Err(e) => break Err(e),
        };
        if record.command.is_none()
            && conn.session.request().is_some()
            && on_request(&mut conn, record, slot, accepted)
        {
            // Refused by `[limits]` instead: the refusal's Closed event comes next.
            continue;
        }
        let answered = match event {
            Event::Authenticate => login(&mut conn).await,
            Event::GssapiPiece
            | Event::GssapiAccept
            | Event::GssapiUnwrapProtection
            | Event::GssapiProtected(_) => gssapi_session::answer(&mut conn, event).await,
            Event::Resolve if conn.session.command() == Some(Command::Bind) => {
                bind::resolve(&mut conn).await
            }
            Event::Resolve | Event::Connect(_) => {
                upstream = Box::pin(connect::open(&mut conn, event)).await;
                Ok(())
            }
            Event::Bind => Box::pin(bind::run(&mut conn)).await,
            Event::Associate => Box::pin(udp_relay::run(&mut conn)).await,
            Event::Established => break Ok(()),
            Event::Closed(reason) => break Err(conn.closed(reason)),
            other => break Err(SessionError::Refused(format!("unexpected {other:?}"))),
        };
        if let Err(e) = answered {
            break Err(e);
        }
    };
    record.reply = conn.session.reply();
    record.bytes = conn.bytes;
    record.outcome = match (&result, record.reply) {
        (Err(SessionError::Gssapi(_)), _) => Outcome::AuthFailed,
        (Err(SessionError::AuthFailed(name)), _) => {
            shared.metrics.auth_failed();
            record.user = Some(name.clone().into_bytes());
            Outcome::AuthFailed
        }
        (_, None) if record.command.is_none() => {
            shared.metrics.handshake_failed();
            Outcome::HandshakeFailed
        }
        (_, Some(socksgate_core::wire::ReplyCode::Succeeded)) => Outcome::Succeeded,
        (_, Some(_)) if record.outcome == Outcome::Limited => Outcome::Limited,
        (_, Some(_)) => Outcome::Refused,
        (_, None) => Outcome::Error,
    };
    if let Some(code) = record.reply {
        shared.metrics.reply(code);
    }
    if let Err(e) = result {
        conn.close().await;
        return Err(e);
    }
    if let Some(up) = &upstream
        && !up.early_down.is_empty()
    {
        conn.send_to_client(&up.early_down).await?;
    }
    let mut early = conn.session.payload().to_vec();
    let Conn {
        mut stream, gss, ..
    } = conn;
    if let Some(g) = gss {
        let g = *g;
        // Plaintext opened past the request (pipelined payload) follows what the session kept.
        early.extend_from_slice(&g.plain);
        if let Some(protection) = g.protection {
            // From here on every byte to and from the client passes through the protection.
            stream = Stream::Protected(Box::new(
                crate::protected::ProtectedStream::new(stream, protection, &[])
                    .map_err(SessionError::Protected)?,
            ));
        }
    }
    Ok(upstream.map(|up: Upstream| Established {
        client: stream,
        sent_down: up.early_down.len() as u64,
        upstream: up.stream,
        early,
    }))
}

/// The request has arrived: record it, count it, and apply the per-user limit. Returns
/// whether the limit refused it (the session then answers with a general failure).
fn on_request(
    conn: &mut Conn<'_>,
    record: &mut Record,
    slot: &mut Slot<'_>,
    accepted: std::time::Instant,
) -> bool {
    let shared = conn.shared;
    let Some(request) = conn.session.request() else {
        return false;
    };
    shared.metrics.handshake_done(accepted.elapsed());
    record.version = Some(request.version);
    record.command = Some(request.command);
    record.dst = Dst::from(&request.target);
    record.user = conn.session.user().map(<[u8]>::to_vec);
    let command = command_name(request.command);
    let user = record.user.as_deref().map(String::from_utf8_lossy);
    let user_shown = user.as_deref().unwrap_or("-");
    // At debug level: the access-log line at the end says the same for every session.
    if request.user_id.is_empty() {
        debug!(version = ?request.version, %command, dst = %request.target, user = user_shown, "request");
    } else {
        // A SOCKS4 USERID is the client's claim, not an authenticated name.
        let userid = String::from_utf8_lossy(&request.user_id);
        debug!(version = ?request.version, %command, dst = %request.target, user = user_shown, %userid, "request");
    }
    shared.metrics.request(request.command);
    shared.metrics.user_session(conn.session.user());
    if let Some(gss) = &conn.gss
        && gss.established()
        && gss.granted.is_none()
    {
        // The NEC form with level none, answered by the core: no event told us.
        shared
            .metrics
            .gssapi_established(crate::config::ProtectionLevel::None);
    }
    if let Some(name) = conn.session.user()
        && let Some(rate) = shared.config.limits.user_rate()
    {
        let rates = &shared.session_rates;
        if rates.admit_user(name, rate, clock::now()) {
            rates.user_refusals.admitted(name);
        } else {
            let user = crate::session_rate::UserKey(name.to_vec());
            let now = std::time::Instant::now();
            let why = format_args!(
                "sessions_per_second_per_user ({}, burst {}) exceeded",
                rate.per_second, rate.burst
            );
            rates.user_refusals.refused(&user, &why, now);
            // Not allowed (REP 2; SOCKS4 has no users): the core answers it.
            if conn
                .session
                .handle_failure(socksgate_core::Failure::RateLimited)
                .is_ok()
            {
                record.outcome = Outcome::Limited;
                return true;
            }
        }
    }
    if let Some(name) = conn.session.user()
        && let Err(e) = slot.admit_user(name, &shared.config.limits)
    {
        warn!(user = %String::from_utf8_lossy(name), "request refused: {e}");
        // General failure: the core answers it, in the client's protocol.
        if conn
            .session
            .handle_failure(socksgate_core::Failure::Other)
            .is_ok()
        {
            record.outcome = Outcome::Limited;
            return true;
        }
    }
    // A spent traffic quota: REP 2 / CD 91 (the core's choice), logged with user and quota.
    if let Err(failure) = crate::traffic::admit(
        &shared.config.traffic_rules,
        &shared.metrics,
        conn.session.user(),
        conn.peer.ip(),
    ) && conn.session.handle_failure(failure).is_ok()
    {
        record.outcome = Outcome::Limited;
        return true;
    }
    false
}

/// Answers RFC 1929 credentials.
async fn login(conn: &mut Conn<'_>) -> Result<(), SessionError> {
    let Some((username, password)) = conn.session.credentials() else {
        return Ok(());
    };
    // Boxed: only sessions that log in pay for the check's state.
    let ok = Box::pin(login::check_password(
        conn.shared,
        conn.peer.ip(),
        username,
        password,
    ))
    .await;
    let name = String::from_utf8_lossy(username).into_owned();
    if ok {
        debug!(user = %name, "authenticated");
    } else {
        warn!(user = %name, "authentication failed");
    }
    let _ = conn.session.handle_auth(&conn.policy, ok, clock::now());
    if !ok {
        conn.flush().await?;
        return Err(SessionError::AuthFailed(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Resolver;

    /// A session task is as large as its largest state, and idle relays keep that memory:
    /// the session lives in the pool and the handshake phase is boxed, so that the task
    /// stays close to the relay's own size (an idle session's budget is 4 KiB in all).
    #[tokio::test]
    async fn session_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let shared = Arc::new(
            Shared::new(
                crate::config::Config::default(),
                None,
                Resolver::with_hosts(Default::default()),
            )
            .unwrap(),
        );
        let peer = client.local_addr().unwrap();
        let session = handle(client, peer, None, None, shared);
        let size = size_of_val(&session);
        assert!(size <= 2560, "a session task takes {size} bytes");
    }
}
