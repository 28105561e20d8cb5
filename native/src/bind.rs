//! BIND (SOCKS4 and SOCKS5): listen, tell the client where, accept the expected peer, tell
//! the client who, relay.
//!
//! The listening socket uses the address this host would use to reach the peer the client
//! named (its outbound address), falling back to the address the client reached us on. Which
//! inbound connection is the peer is the core's decision (`Session::handle_bind_peer`: the
//! named address, and its port when the request gave one, unless `[bind] any_peer`); others
//! are logged and closed. The wait ends at the session's BIND deadline (reply 6) or when the
//! client closes the control connection. Bytes the client sends while waiting are kept for
//! the relay.
//!
//! Under GSS-API integrity or confidentiality both replies go out sealed (RFC 1961 §5), the
//! bytes the client sends while waiting are opened, and the peer's connection is relayed
//! with the client's stream wrapped ([`Stream::Protected`](crate::stream::Stream::Protected)),
//! by the copy relay.

use std::net::{IpAddr, SocketAddr};

use socksgate_core::Failure;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info, warn};

use crate::clock;
use crate::conn::{Conn, SessionError};
use crate::egress::Egress;
use crate::failure::io_failure;
use crate::relay;

/// The local IP this host uses to reach `dest` (a connected UDP socket sends nothing), from
/// a socket leaving by `egress` when given (its interface and mark can change the route, and
/// so the address).
pub(crate) async fn outbound_ip(dest: IpAddr, egress: Option<Egress<'_>>) -> Option<IpAddr> {
    if dest.is_unspecified() {
        return None;
    }
    let any: SocketAddr = if dest.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = match egress {
        Some(e) => e.udp_socket(dest.is_ipv6()).ok()?,
        None => UdpSocket::bind(any).await.ok()?,
    };
    sock.connect((dest, 9)).await.ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// The IP to report for "this server" when a socket is bound to a wildcard address.
pub(crate) fn concrete_ip(bound: IpAddr, fallback: IpAddr) -> IpAddr {
    if bound.is_unspecified() {
        fallback
    } else {
        bound
    }
}

/// Answers a BIND's [`Event::Resolve`](socksgate_core::session::Event::Resolve): the expected
/// peer's addresses, which the session checks against the rules.
pub(crate) async fn resolve(conn: &mut Conn<'_>) -> Result<(), SessionError> {
    let Some(socksgate_core::Addr::Domain(name, _)) = conn.session.destination() else {
        return Ok(());
    };
    let family = conn.session.address_family(&conn.policy);
    let found = conn
        .shared
        .resolver
        .lookup_in(&name.to_string(), family)
        .await;
    match found {
        Ok(mut ips) => {
            let _ = conn.session.handle_resolved(&conn.policy, &mut ips);
        }
        Err(e) => {
            debug!("bind: {e}");
            let _ = conn.session.handle_failure(e.failure());
        }
    }
    Ok(())
}

/// Answers [`Event::Bind`](socksgate_core::session::Event::Bind): listens, waits for the
/// peer the session accepts, and relays to the end.
pub(crate) async fn run(conn: &mut Conn<'_>) -> Result<(), SessionError> {
    let expected = conn.session.bind_peer();
    let egress = crate::egress::of_session(conn);
    let listen_ip = match expected {
        Some(peer) => outbound_ip(peer.ip(), egress)
            .await
            .unwrap_or(conn.local.ip()),
        None => conn.local.ip(),
    };
    let opened = match egress {
        // The peer's family decides which of the profile's addresses is listened on.
        Some(e) => e.tcp_listener(
            expected.map_or(conn.local.is_ipv6(), |p| p.ip().to_canonical().is_ipv6()),
            listen_ip,
        ),
        None => TcpListener::bind((listen_ip, 0)).await,
    };
    let listener = match opened {
        Ok(l) => l,
        Err(e) => {
            warn!("bind: cannot listen on {listen_ip}: {e}");
            let _ = conn.session.handle_failure(io_failure(&e));
            return Ok(());
        }
    };
    let mut listening = listener.local_addr()?;
    listening.set_ip(concrete_ip(listening.ip(), conn.local.ip()));
    let _ = conn
        .session
        .handle_opened(&conn.policy, listening, clock::now());
    conn.flush().await?;
    debug!(%listening, ?expected, "bind: listening");

    // Client bytes while waiting, copied into the session (which keeps them as payload), or
    // when protected opened into `gss.plain`, which is read into only while it holds less
    // than a session buffer (as the session bounds the plain case).
    let protected = conn.gss.as_ref().is_some_and(|g| g.protection.is_some());
    let mut waiting = [0u8; 512];
    let peer_stream = loop {
        let deadline = conn.session.poll_timeout().map(clock::deadline);
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let room = if protected {
            let held = conn.gss.as_ref().map_or(0, |g| g.plain.len());
            if held < crate::pool::READ_BUF {
                waiting.len()
            } else {
                0
            }
        } else {
            conn.session.recv_buffer().len().min(waiting.len())
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if conn.session.handle_bind_peer(peer).unwrap_or(false) {
                        info!(%peer, "bind: peer connected");
                        break stream;
                    }
                    warn!(%peer, expected = ?expected, "bind: refused a connection from an unexpected address");
                }
                Err(e) => {
                    warn!("bind: accept failed: {e}");
                    let _ = conn.session.handle_failure(Failure::Other);
                    return Ok(());
                }
            },
            read = conn.stream.read(&mut waiting[..room]), if room > 0 => match read {
                Ok(0) | Err(_) => {
                    return Err(SessionError::Refused("bind: the client closed while waiting".into()));
                }
                Ok(n) => {
                    let input = waiting.get(..n).unwrap_or_default();
                    if protected {
                        conn.open_from_client(input)?;
                    } else {
                        let _ = conn.session.handle_input(&conn.policy, input, clock::now());
                    }
                }
            },
            () = timer => {
                conn.session.handle_timeout(clock::now());
                if conn.session.is_closed() {
                    return Ok(());
                }
            }
        }
    };
    drop(listener);
    let _ = peer_stream.set_nodelay(true);
    conn.flush().await?;
    let mut early = conn.session.payload().to_vec();
    let idle = conn.shared.config.timeouts.tcp_idle();
    let limits = conn
        .shared
        .traffic_limits(conn.session.user(), conn.peer.ip());
    let relayed = if let Some(gss) = conn.gss.as_mut()
        && let Some(protection) = gss.protection.take()
    {
        early.append(&mut gss.plain);
        // Every byte to and from the client passes through the protection: the client's
        // stream is wrapped, which needs it owned, so the peer's takes its place in `conn`
        // (nothing else is sent on either after the relay).
        let client = std::mem::replace(&mut conn.stream, peer_stream.into());
        let mut client = crate::stream::Stream::Protected(Box::new(
            crate::protected::ProtectedStream::new(client, protection, &[])
                .map_err(SessionError::Protected)?,
        ));
        relay::relay_streams(idle, limits, &mut client, &mut conn.stream, &early).await
    } else {
        relay::relay_streams(
            idle,
            limits,
            &mut conn.stream,
            &mut peer_stream.into(),
            &early,
        )
        .await
    };
    match relayed {
        Ok(t) => {
            conn.shared
                .metrics
                .relayed(conn.session.user(), t.up, t.down);
            conn.bytes = (t.up, t.down);
            debug!(up = t.up, down = t.down, "bind: closed");
        }
        Err(e) => match crate::protected::ProtectionError::in_io(&e) {
            // A protected message from the client that failed.
            Some(failure) => {
                if let Some(cause) = failure.cause() {
                    conn.shared.metrics.gssapi_failed(cause);
                }
                warn!("bind: protected relay ended: {failure}");
            }
            None => debug!("bind relay ended: {e}"),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbound_ip_of_loopback_is_loopback() {
        assert_eq!(
            outbound_ip("127.0.0.1".parse().unwrap(), None).await,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(outbound_ip("0.0.0.0".parse().unwrap(), None).await, None);
    }
}
