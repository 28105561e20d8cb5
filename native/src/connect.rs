//! CONNECT's outbound connection: directly (one address, or a name with Happy Eyeballs) or
//! through an `[[upstream]]` proxy.

use std::io;
use std::net::SocketAddr;

use socksgate_core::family::AddressFamily;
use socksgate_core::session::Event;
use socksgate_core::wire::Command;
use tracing::{debug, info};

use crate::clock;
use crate::conn::{Conn, Upstream};
use crate::failure::{ConnectError, io_failure};
use crate::resolve;

/// Answers a CONNECT's [`Event::Resolve`] or [`Event::Connect`]: through the `[[upstream]]`
/// the deciding rule names, or directly — one address, or a name with Happy Eyeballs, each
/// address checked by the session's rules before it is tried — within the session's connect
/// deadline. Reports the outcome to the session; returns the connection on success.
pub(crate) async fn open(conn: &mut Conn<'_>, event: Event) -> Option<Upstream> {
    let shared = conn.shared;
    let egress = crate::egress::of_session(conn);
    if let Some(name) = conn
        .session
        .decision()
        .and_then(|d| shared.rules.upstream(d))
        && let Some(url) = shared.config.upstream(name)
    {
        return crate::chain::open(conn, name, &url, egress).await;
    }
    let started = std::time::Instant::now();
    let deadline = conn.session.poll_timeout().map(clock::deadline);
    let family = conn.session.address_family(&conn.policy);
    let attempt = async {
        match (event, conn.session.request()) {
            (Event::Connect(Some(sa)), _) => resolve::connect_tcp_from(sa, egress)
                .await
                .map_err(ConnectError::from),
            (_, Some(request)) if request.command == Command::Connect => {
                let session = &*conn.session;
                let policy = &conn.policy;
                let allow = |sa: SocketAddr| {
                    session
                        .check_resolved(policy, sa.ip())
                        .map_err(ConnectError::Denied)
                };
                Box::pin(
                    shared
                        .resolver
                        .connect_from(&request.target, family, allow, egress),
                )
                .await
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
        Err(e @ ConnectError::NameNotFound(_)) if one_family(family) => {
            // Only one family was asked for: say so, or "not found" would mislead.
            let dst = conn.session.request().map(|r| r.target.to_string());
            info!(
                dst = dst.as_deref().unwrap_or("-"),
                "no address of the family in use (address_family = {family}): {e}"
            );
            let _ = conn.session.handle_failure(e.failure());
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
                stream: stream.into(),
                early_down: Vec::new(),
            })
        }
        Err(e) => {
            let _ = conn.session.handle_failure(io_failure(&e));
            None
        }
    }
}

/// Whether `family` uses one family only (the other is never queried).
fn one_family(family: AddressFamily) -> bool {
    !(family.uses_ipv4() && family.uses_ipv6())
}
