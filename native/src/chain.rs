//! CONNECT through an `[[upstream]]` SOCKS proxy (the core's client state machine): the
//! upstream resolves and connects; its failure reply is passed on. An upstream with
//! `proxy_protocol = true` first gets a PROXY v2 header naming the session's client.

use socksgate_core::Failure;
use socksgate_core::client::ClientError;
use socksgate_core::wire::proxy::{ProxiedAddresses, ProxyHeader};
use tracing::debug;

use crate::client::{Error, Proxy};
use crate::clock;
use crate::conn::{Conn, Upstream};
use crate::failure::io_failure;

/// Opens the request's destination through the upstream `name` at `url`, within the
/// session's connect deadline, and reports the outcome to the session. The connection to
/// the upstream leaves by `egress` when given.
pub(crate) async fn open(
    conn: &mut Conn<'_>,
    name: &str,
    url: &Proxy,
    egress: Option<crate::egress::Egress<'_>>,
) -> Option<Upstream> {
    let shared = conn.shared;
    let target = conn.session.destination()?.to_target();
    let started = std::time::Instant::now();
    let header = proxy_header(conn, name);
    let mut url = url.clone();
    url.tls_config = shared.tls.for_upstream(name);
    let attempt = crate::client::connect_upstream(&url, target, &shared.resolver, egress, &header);
    let opened = match conn.session.poll_timeout() {
        Some(at) => tokio::time::timeout_at(clock::deadline(at), attempt)
            .await
            .ok(),
        None => Some(attempt.await),
    };
    shared.metrics.connect_done(started.elapsed());
    let failure = match opened {
        Some(Ok((stream, early_down))) => match stream.socket().local_addr() {
            Ok(bound) => {
                debug!(upstream = name, "connected through upstream");
                let _ = conn
                    .session
                    .handle_opened(&conn.policy, bound, clock::now());
                return Some(Upstream { stream, early_down });
            }
            Err(e) => io_failure(&e),
        },
        Some(Err(Error::Handshake {
            source: ClientError::Rejected(code),
            ..
        })) => Failure::Upstream(code),
        Some(Err(Error::Connect { source, .. })) => source.failure(),
        Some(Err(e)) => {
            debug!(upstream = name, "upstream failed: {e}");
            Failure::Other
        }
        None => Failure::TimedOut,
    };
    debug!(upstream = name, %failure, "connect through upstream failed");
    let _ = conn.session.handle_failure(failure);
    None
}

/// The PROXY protocol v2 header for the upstream `name` — the session's client and the
/// address it reached us on — or nothing if the upstream does not take one.
fn proxy_header(conn: &Conn<'_>, name: &str) -> Vec<u8> {
    if !conn.shared.config.upstream_takes_proxy_header(name) {
        return Vec::new();
    }
    let header = ProxyHeader {
        version: 2,
        addresses: Some(ProxiedAddresses {
            source: conn.peer,
            destination: conn.local,
        }),
    };
    let mut out = vec![0u8; header.buffer_len()];
    let n = header.emit(&mut out).unwrap_or(0);
    out.truncate(n);
    out
}
