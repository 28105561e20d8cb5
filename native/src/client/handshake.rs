//! Driving the core's client state machine over a stream: the bytes and the decisions are
//! the core's, this moves them.

use socksgate_core::client::{Client, ClientConfig, ClientEvent, Credentials, Phase};
use socksgate_core::server::Version;
use socksgate_core::wire::Command;
use socksgate_core::{Addr, Target};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Auth, Error, Proxy, Stage};

/// Starts the core client for `command` to `target` through `proxy`. `target` is final:
/// names have been resolved already when the proxy does not resolve them.
pub(super) fn start(proxy: &Proxy, command: Command, target: &Target) -> Result<Client, Error> {
    // SOCKS4a sends names only; an address goes as plain SOCKS4.
    let version = match (proxy.version, target) {
        (Version::Socks4a, Target::Ip(_)) => Version::Socks4,
        (v, _) => v,
    };
    let mut config = ClientConfig::new(version, command, target.as_addr());
    match &proxy.auth {
        Auth::None => {}
        Auth::Password { username, password } => {
            if version == Version::Socks5 {
                config.credentials = Some(Credentials { username, password });
            } else {
                config.user_id = username;
            }
        }
    }
    // The core refuses what the protocol cannot carry (SOCKS4 and IPv6, UDP) before
    // anything is sent: a fault of the request.
    Client::new(config).map_err(|e| Error::handshake(&proxy.label(), Phase::Request, e))
}

/// Drives `client` over `stream` until it is established or, with `until_first_reply`,
/// until the first reply (BIND's listening address). `pending` holds bytes already read
/// from the proxy. Returns the address of the last reply (BND, or BIND's peer) and the
/// bytes read past it (the destination's first payload).
pub(super) async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    proxy: &str,
    stream: &mut S,
    pending: Vec<u8>,
    until_first_reply: bool,
) -> Result<(Target, Vec<u8>), Error> {
    let mut out = [0u8; 600];
    let mut buf = pending;
    let mut start = 0usize;
    let mut end = buf.len();
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut last = None;
    let io = |phase: Phase, e| Error::io(Stage::of(phase), proxy, e);
    loop {
        loop {
            let n = client.poll_transmit(&mut out);
            if n == 0 {
                break;
            }
            let phase = client.phase();
            stream
                .write_all(out.get(..n).unwrap_or_default())
                .await
                .map_err(|e| io(phase, e))?;
        }
        // TLS holds written records until flushed.
        stream.flush().await.map_err(|e| io(client.phase(), e))?;
        if client.is_established() || (until_first_reply && last.is_some()) {
            let rest = buf.get(start..end).unwrap_or_default().to_vec();
            return last.map(|t| (t, rest)).ok_or(Error::Closed {
                proxy: proxy.to_owned(),
                stage: Stage::Request,
            });
        }
        let phase = client.phase();
        if start == end {
            start = 0;
            end = stream
                .read(buf.get_mut(..).unwrap_or_default())
                .await
                .map_err(|e| io(phase, e))?;
            if end == 0 {
                return Err(Error::Closed {
                    proxy: proxy.to_owned(),
                    stage: Stage::of(phase),
                });
            }
        }
        let n = client
            .feed(buf.get(start..end).unwrap_or_default())
            .map_err(|e| Error::handshake(proxy, phase, e))?;
        start += n;
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Replied { bound } => last = Some(bound),
                ClientEvent::BindPeer { peer } => last = Some(peer),
                _ => {}
            }
        }
    }
}

/// `target` as the proxy is to receive it: a name stays a name when the proxy resolves
/// names, else it is resolved here (SOCKS4: to an IPv4 address).
pub(super) async fn destination(
    proxy: &Proxy,
    target: Target,
    resolver: &crate::resolve::Resolver,
) -> Result<Target, Error> {
    let (name, port) = match &target.as_addr().normalized() {
        Addr::Ip(sa) => return Ok(Target::Ip(*sa)),
        Addr::Domain(name, port) => (*name, *port),
    };
    if proxy.remote_dns {
        return Ok(target);
    }
    let host = name
        .as_str()
        .ok_or_else(|| Error::Destination(format!("{name}: not UTF-8")))?;
    let ips = resolver
        .lookup(host)
        .await
        .map_err(|source| Error::Connect {
            stage: Stage::Resolve,
            what: host.to_owned(),
            source,
        })?;
    let pick = if proxy.version == Version::Socks5 {
        ips.first()
    } else {
        ips.iter().find(|ip| ip.is_ipv4())
    };
    let ip =
        pick.ok_or_else(|| Error::Destination(format!("{host} has no IPv4 address for SOCKS4")))?;
    Ok(Target::Ip(std::net::SocketAddr::new(*ip, port)))
}
