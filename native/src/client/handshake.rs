//! Driving the core's client state machine over a stream: the bytes and the decisions are
//! the core's, this moves them.

use socksgate_core::client::{
    Client, ClientConfig, ClientEvent, Credentials, GssapiOptions, Phase,
};
use socksgate_core::server::Version;
use socksgate_core::wire::Command;
use socksgate_core::{Addr, Target};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::io::Io;
use super::{Auth, Error, Proxy, Stage};
use crate::gssapi::{Context, GssError, Initiator, ServiceName, Step};
use crate::protected::{ProtectedStream, Protection};
use crate::stream::Stream;

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
        Auth::Gssapi {
            protection, nec, ..
        } => {
            let options = GssapiOptions {
                nec: *nec,
                ..GssapiOptions::new(*protection)
            };
            return Client::with_gssapi(config, options)
                .map_err(|e| Error::handshake(&proxy.label(), Phase::Greeting, e));
        }
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
    match drive_until(client, proxy, None, stream, pending, until_first_reply).await? {
        Driven::Replied(t, rest) => Ok((t, rest)),
        Driven::Protected(..) => Err(Error::Unsupported(format!(
            "{proxy}: a protected GSS-API stream on this connection"
        ))),
    }
}

/// [`drive`] over the connection to `proxy` itself, running GSS-API when its [`Auth`] asks
/// for it: once a level that encapsulates is agreed, `io` is wrapped so that the request,
/// the reply and everything after travel protected. Returns the (maybe wrapped) connection.
pub(super) async fn drive_io(
    client: &mut Client,
    proxy: &Proxy,
    io: Io,
    pending: Vec<u8>,
    until_first_reply: bool,
) -> Result<(Io, Target, Vec<u8>), Error> {
    let label = proxy.label();
    let service = service_of(proxy);
    let mut io = io;
    let driven = drive_until(
        client,
        &label,
        service.as_ref(),
        &mut io,
        pending,
        until_first_reply,
    )
    .await?;
    match driven {
        Driven::Replied(t, rest) => Ok((io, t, rest)),
        Driven::Protected(protection, raw) => {
            let local = io
                .local_addr()
                .map_err(|e| Error::io(Stage::Authentication, label.clone(), e))?;
            let protected = ProtectedStream::new(io, protection, &raw)
                .map_err(|e| Error::io(Stage::Request, label.clone(), invalid_data(e)))?;
            let mut io = Io::Tunneled(Box::new(protected), local);
            let (t, rest) = drive(client, &label, &mut io, Vec::new(), until_first_reply).await?;
            Ok((io, t, rest))
        }
    }
}

/// [`drive_io`] for UDP ASSOCIATE: when a level that encapsulates is agreed, the request
/// and reply travel protected and the context is returned for the datagrams (nothing else
/// travels on the control connection), with the connection unwrapped again.
pub(super) async fn drive_io_datagrams(
    client: &mut Client,
    proxy: &Proxy,
    io: Io,
) -> Result<(Io, Target, Option<Protection>), Error> {
    let label = proxy.label();
    let service = service_of(proxy);
    let mut io = io;
    let driven = drive_until(client, &label, service.as_ref(), &mut io, Vec::new(), false).await?;
    match driven {
        Driven::Replied(t, _) => Ok((io, t, None)),
        Driven::Protected(protection, raw) => {
            let mut protected = ProtectedStream::new(io, protection, &raw)
                .map_err(|e| Error::io(Stage::Request, label.clone(), invalid_data(e)))?;
            let (t, _) = drive(client, &label, &mut protected, Vec::new(), false).await?;
            let (io, protection) = protected.into_parts();
            Ok((io, t, Some(protection)))
        }
    }
}

/// [`drive`] over the server's connection to an `[[upstream]]` proxy, running GSS-API when
/// `proxy` asks for it: once a level that encapsulates is agreed, the connection becomes a
/// [`Stream::Protected`], which the request, the reply and the relay then go through.
/// Returns the (maybe protected) connection and the plaintext read past the reply.
pub(super) async fn drive_stream(
    client: &mut Client,
    proxy: &Proxy,
    mut stream: Stream,
) -> Result<(Stream, Vec<u8>), Error> {
    let label = proxy.label();
    let service = service_of(proxy);
    match drive_until(
        client,
        &label,
        service.as_ref(),
        &mut stream,
        Vec::new(),
        false,
    )
    .await?
    {
        Driven::Replied(_, rest) => Ok((stream, rest)),
        Driven::Protected(protection, raw) => {
            let protected = ProtectedStream::new(stream, protection, &raw)
                .map_err(|e| Error::io(Stage::Request, label.clone(), invalid_data(e)))?;
            let mut stream = Stream::Protected(Box::new(protected));
            let (_, rest) = drive(client, &label, &mut stream, Vec::new(), false).await?;
            Ok((stream, rest))
        }
    }
}

/// The GSS-API service `proxy` is to be authenticated as, when its [`Auth`] is GSS-API.
fn service_of(proxy: &Proxy) -> Option<ServiceName> {
    match &proxy.auth {
        Auth::Gssapi { service, .. } => Some(ServiceName {
            service: service.clone(),
            host: proxy.host.clone(),
        }),
        _ => None,
    }
}

fn invalid_data(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// How [`drive_until`] stopped.
enum Driven {
    /// The reply (as [`drive`] returns it).
    Replied(Target, Vec<u8>),
    /// A level that encapsulates was agreed: what follows is protected; the raw bytes read
    /// past the negotiation.
    Protected(Protection, Vec<u8>),
}

/// The context being built, then established.
enum Gss {
    Idle,
    Initiating(Initiator),
    Established(Context),
}

async fn drive_until<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    proxy: &str,
    service: Option<&ServiceName>,
    stream: &mut S,
    pending: Vec<u8>,
    until_first_reply: bool,
) -> Result<Driven, Error> {
    let mut gss = Gss::Idle;
    let mut token: Vec<u8> = Vec::new();
    let gss_err = |e: GssError| Error::Gssapi {
        proxy: proxy.to_owned(),
        source: e,
    };
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
            return last.map(|t| Driven::Replied(t, rest)).ok_or(Error::Closed {
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
            // A GSS-API piece is the last `len` octets `feed` consumed.
            let piece = |len: usize| {
                buf.get(start.saturating_sub(len)..start)
                    .unwrap_or_default()
            };
            match ev {
                ClientEvent::Replied { bound } => last = Some(bound),
                ClientEvent::BindPeer { peer } => last = Some(peer),
                ClientEvent::GssapiPiece { len } => token.extend_from_slice(piece(len)),
                ClientEvent::GssapiInit | ClientEvent::GssapiContinue { .. } => {
                    if let ClientEvent::GssapiContinue { len } = ev {
                        token.extend_from_slice(piece(len));
                    }
                    let step = match (std::mem::replace(&mut gss, Gss::Idle), service) {
                        (Gss::Idle, Some(service)) if client.command() == Command::UdpAssociate => {
                            Initiator::start_for_datagrams(service)
                        }
                        (Gss::Idle, Some(service)) => Initiator::start(service),
                        (Gss::Initiating(init), _) => init.step(Some(&token)),
                        _ => {
                            let _ = client.gssapi_failed();
                            return Err(Error::Unsupported(format!(
                                "{proxy}: GSS-API without a service name"
                            )));
                        }
                    };
                    token.clear();
                    let step = match step {
                        Ok(step) => step,
                        Err(e) => {
                            let _ = client.gssapi_failed();
                            return Err(gss_err(e));
                        }
                    };
                    let (answered, send) = match step {
                        Step::Continue(t, init) => {
                            gss = Gss::Initiating(init);
                            (client.send_gssapi_token(t.len()), Some(t))
                        }
                        Step::Done(t, ctx) => {
                            gss = Gss::Established(ctx);
                            (client.gssapi_established(t.as_ref().map(|t| t.len())), t)
                        }
                    };
                    answered.map_err(|_| unexpected(proxy))?;
                    send_after_header(client, stream, send.as_deref(), &mut out)
                        .await
                        .map_err(|e| io(Phase::Authentication, e))?;
                }
                ClientEvent::GssapiWrapProtection(level) => {
                    let Gss::Established(ctx) = &mut gss else {
                        return Err(unexpected(proxy));
                    };
                    let wrapped = ctx.wrap(false, &[level.into()]).map_err(gss_err)?;
                    client
                        .send_gssapi_protection(wrapped.len())
                        .map_err(|_| unexpected(proxy))?;
                    send_after_header(client, stream, Some(&wrapped), &mut out)
                        .await
                        .map_err(|e| io(Phase::Authentication, e))?;
                }
                ClientEvent::GssapiUnwrapProtection { len } => {
                    token.extend_from_slice(piece(len));
                    let Gss::Established(ctx) = &mut gss else {
                        return Err(unexpected(proxy));
                    };
                    let plain = ctx.unwrap_to_vec(&token).map_err(gss_err)?;
                    token.clear();
                    client
                        .gssapi_protection(&plain)
                        .map_err(|_| unexpected(proxy))?
                        .map_err(|e| Error::handshake(proxy, Phase::Authentication, e))?;
                }
                ClientEvent::GssapiProtected(level) => {
                    let Gss::Established(ctx) = std::mem::replace(&mut gss, Gss::Idle) else {
                        return Err(unexpected(proxy));
                    };
                    let rest = buf.get(start..end).unwrap_or_default().to_vec();
                    return Ok(Driven::Protected(Protection::new(ctx, level), rest));
                }
                _ => {}
            }
        }
    }
}

/// The core refused an answer it asked for: a bug here, not the proxy's fault.
fn unexpected(proxy: &str) -> Error {
    Error::Unsupported(format!("{proxy}: GSS-API answer out of order"))
}

/// Writes the header the core just queued, then `token`.
async fn send_after_header<S: AsyncWrite + Unpin>(
    client: &mut Client,
    stream: &mut S,
    token: Option<&[u8]>,
    out: &mut [u8],
) -> std::io::Result<()> {
    loop {
        let n = client.poll_transmit(out);
        if n == 0 {
            break;
        }
        stream.write_all(out.get(..n).unwrap_or_default()).await?;
    }
    if let Some(token) = token {
        stream.write_all(token).await?;
    }
    stream.flush().await
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
