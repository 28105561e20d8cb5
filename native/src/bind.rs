//! BIND (SOCKS4 and SOCKS5): listen, tell the client where, accept the expected peer, tell
//! the client who, relay.
//!
//! The listening socket uses the address this host would use to reach the peer the client
//! named (its outbound address), falling back to the address the client reached us on. Only a
//! connection from the named peer's IP is accepted (RFC 1928 §6; the port is not compared, as
//! the peer's source port is ephemeral) unless `[bind] any_peer = true` or the client named
//! 0.0.0.0 / `::`. Others are logged and closed. The wait ends after the `bind` timeout
//! (reply 6) or when the client closes the control connection.

use std::net::{IpAddr, SocketAddr};

use socksgate_core::Addr;
use socksgate_core::server::Request;
use socksgate_core::wire::{Command, ReplyCode};
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info, warn};

use crate::access::Pass;
use crate::connect::{ConnectError, io_reply};
use crate::relay;
use crate::session::{Conn, Ctx, SessionError, concrete_ip};

/// The local IP this host uses to reach `dest` (a connected UDP socket sends nothing).
pub(crate) async fn outbound_ip(dest: IpAddr) -> Option<IpAddr> {
    if dest.is_unspecified() {
        return None;
    }
    let any: SocketAddr = if dest.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(any).await.ok()?;
    sock.connect((dest, 9)).await.ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

pub(crate) async fn run(
    conn: &mut Conn<'_>,
    request: &Request,
    ctx: &Ctx<'_>,
) -> Result<(), SessionError> {
    let dest = request.target.as_addr().normalized();
    // Rules by name first (a denied name is not even resolved), then by address.
    let pass = match ctx.check(Command::Bind, dest) {
        Ok(p) => p,
        Err(e) => return refuse(conn, e).await,
    };
    // The expected peer: an IP literal, or a name we resolve.
    let expected: Option<IpAddr> = match dest {
        Addr::Ip(sa) => Some(sa.ip()),
        Addr::Domain(name, _) => {
            let name = name.as_str().unwrap_or_default().to_owned();
            match ctx.shared.resolver.lookup(&name).await {
                Ok(ips) => ips.first().copied(),
                Err(e) => return refuse(conn, e).await,
            }
        }
    };
    if pass == Pass::PerAddress
        && let Err(e) = ctx.check_addr(Command::Bind, dest, expected)
    {
        return refuse(conn, e).await;
    }
    let expected = expected.filter(|ip| !ip.is_unspecified() && !ctx.shared.config.bind.any_peer);
    let listen_ip = match expected {
        Some(ip) => outbound_ip(ip).await.unwrap_or(ctx.local.ip()),
        None => ctx.local.ip(),
    };
    let listener = match TcpListener::bind((listen_ip, 0)).await {
        Ok(l) => l,
        Err(e) => {
            conn.respond(Err(io_reply(&e))).await?;
            return Err(SessionError::Refused(format!(
                "bind: cannot listen on {listen_ip}: {e}"
            )));
        }
    };
    let mut listening = listener.local_addr()?;
    listening.set_ip(concrete_ip(listening.ip(), ctx.local.ip()));
    conn.respond(Ok(listening)).await?;
    debug!(%listening, ?expected, "bind: listening");

    let accepted = tokio::select! {
        a = accept_expected(&listener, expected) => a,
        () = tokio::time::sleep(ctx.shared.config.timeouts.bind()) => {
            conn.respond_bind_peer(Err(ConnectError::TimedOut.reply())).await?;
            return Err(SessionError::Refused("bind: no peer before the timeout".into()));
        }
        () = client_gone(&conn.stream) => {
            return Err(SessionError::Refused("bind: the client closed while waiting".into()));
        }
    };
    let Some((mut peer_stream, peer)) = accepted else {
        conn.respond_bind_peer(Err(ReplyCode::GeneralFailure))
            .await?;
        return Err(SessionError::Refused("bind: accept failed".into()));
    };
    let _ = peer_stream.set_nodelay(true);
    drop(listener);
    conn.respond_bind_peer(Ok(peer)).await?;
    info!(%peer, "bind: peer connected");
    let early = conn.take_leftover();
    let idle = ctx.shared.config.timeouts.tcp_idle();
    match relay::relay_with(
        relay::Mode::Auto,
        idle,
        &mut conn.stream,
        &mut peer_stream,
        &early,
    )
    .await
    {
        Ok(t) => {
            ctx.shared.metrics.relayed(ctx.user, t.up, t.down);
            conn.bytes = (t.up, t.down);
            debug!(%peer, up = t.up, down = t.down, "closed");
        }
        Err(e) => debug!("bind relay ended: {e}"),
    }
    Ok(())
}

async fn refuse(conn: &mut Conn<'_>, e: ConnectError) -> Result<(), SessionError> {
    conn.respond(Err(e.reply())).await?;
    Err(SessionError::Refused(format!("bind: {e}")))
}

/// Completes when the client closes the control connection. Early payload the client sends
/// while waiting stays queued for the relay.
async fn client_gone(stream: &tokio::net::TcpStream) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Accepts connections until one comes from the expected peer; `None` if accepting fails.
async fn accept_expected(
    listener: &TcpListener,
    expected: Option<IpAddr>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!("bind: accept failed: {e}");
                return None;
            }
        };
        match expected {
            Some(ip) if !same_ip(ip, peer.ip()) => {
                warn!(%peer, expected = %ip, "bind: refused a connection from an unexpected address");
            }
            _ => return Some((s, peer)),
        }
    }
}

/// Compares addresses, treating IPv4-mapped IPv6 as IPv4.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbound_ip_of_loopback_is_loopback() {
        assert_eq!(
            outbound_ip("127.0.0.1".parse().unwrap()).await,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(outbound_ip("0.0.0.0".parse().unwrap()).await, None);
    }

    #[test]
    fn mapped_addresses_compare_equal() {
        assert!(same_ip(
            "127.0.0.1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        assert!(!same_ip(
            "127.0.0.1".parse().unwrap(),
            "127.0.0.2".parse().unwrap()
        ));
    }
}
