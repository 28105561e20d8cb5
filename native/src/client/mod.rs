//! The SOCKS client library: CONNECT, BIND and UDP ASSOCIATE through one proxy or a chain
//! of them, over SOCKS4, SOCKS4a and SOCKS5, with username/password authentication,
//! Kerberos (GSS-API, RFC 1961, with integrity or confidentiality: [`Auth::Gssapi`],
//! `socks5h+gssapi://` URLs) and SOCKS inside TLS (with client certificates). `socksgate connect` and the server's
//! `[[upstream]]` chaining use it.
//!
//! The protocol — every byte sent and every decision on a reply — is the core's client
//! state machine ([`socksgate_core::client`]); this module only moves bytes with tokio.
//!
//! * [`Proxy`] — one proxy, usually parsed from a URL such as
//!   `socks5h://user:pass@proxy.example:1080` (see its docs for every scheme), with
//!   [`Auth`] and optional TLS settings;
//! * [`Connector`] — a proxy or a chain of proxies, a timeout and a resolver; it opens
//!   [`SocksStream`]s ([`Connector::connect`]), [`BindListener`]s ([`Connector::bind`]) and
//!   [`SocksDatagram`]s ([`Connector::udp_associate`]);
//! * [`Error`] — what failed, at which [`Stage`], with which proxy; a refusal names its
//!   reply code and cause.
//!
//! # Example
//!
//! A CONNECT through socksgate's own server on the loopback interface, to an echo server:
//!
//! ```
//! use socksgate::client::{Connector, Proxy};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let listener = socksgate::server::listen("127.0.0.1:0".parse()?)?;
//! # let proxy_addr = listener.local_addr()?;
//! # let shared = socksgate::shared::Shared::new(
//! #     Default::default(), None, socksgate::resolve::Resolver::from_system())?;
//! # tokio::spawn(socksgate::server::serve(
//! #     vec![listener], std::sync::Arc::new(shared), std::future::pending()));
//! # let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let echo_addr = origin.local_addr()?;
//! # tokio::spawn(async move {
//! #     let (mut s, _) = origin.accept().await.unwrap();
//! #     let (mut r, mut w) = s.split();
//! #     tokio::io::copy(&mut r, &mut w).await.unwrap();
//! # });
//! // proxy_addr: a SOCKS5 server; echo_addr: an echo server it can reach.
//! let proxy: Proxy = format!("socks5h://{proxy_addr}").parse()?;
//! let connector = Connector::new(proxy).with_timeout(std::time::Duration::from_secs(10));
//! let mut stream = connector.connect(echo_addr).await?;
//! stream.write_all(b"ping").await?;
//! let mut answer = [0u8; 4];
//! stream.read_exact(&mut answer).await?;
//! assert_eq!(&answer, b"ping");
//! # Ok(())
//! # }
//! ```
//!
//! `native/examples/fetch.rs` fetches a URL through a proxy and
//! `native/examples/dns_over_udp.rs` sends a DNS query over UDP ASSOCIATE.
//!
//! # Adding an authentication method
//!
//! [`Auth`] is `#[non_exhaustive]`, so a method is a new variant and no caller breaks. The
//! variant is turned into the core's [`ClientConfig`](socksgate_core::client::ClientConfig)
//! in one place (`handshake::start`), and the core offers and negotiates it. A method with
//! round trips of its own (GSS-API, RFC 1961) gets its tokens from the core as events and
//! answers them in the one loop that drives every handshake (`handshake::drive`); errors of
//! its stage are [`Stage::Authentication`].

mod bind;
mod error;
mod handshake;
mod io;
mod proxy;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socksgate_core::client::Client;
use socksgate_core::family::AddressFamily;
use socksgate_core::wire::Command;
use socksgate_core::{DomainBuf, Target};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::resolve::Resolver;
use crate::stream::Stream;

pub use bind::BindListener;
pub use error::{Error, Stage};
pub use io::SocksStream;
pub use proxy::{Auth, Proxy};
pub use udp::SocksDatagram;

use io::Io;

/// A destination: an address, or a host name (or IP literal) and port.
///
/// ```
/// use socksgate::client::IntoTarget;
/// use socksgate_core::Target;
///
/// let by_name = ("example.com", 443).into_target()?;
/// assert!(matches!(by_name, Target::Domain(..)));
/// let literal = ("[::1]", 22).into_target()?;
/// assert_eq!(literal, Target::Ip("[::1]:22".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait IntoTarget {
    /// The destination, or [`Error::Destination`] for a name that cannot be sent (empty,
    /// longer than 255 octets).
    fn into_target(self) -> Result<Target, Error>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target, Error> {
        Ok(self)
    }
}

impl IntoTarget for SocketAddr {
    fn into_target(self) -> Result<Target, Error> {
        Ok(Target::Ip(self))
    }
}

impl IntoTarget for (IpAddr, u16) {
    fn into_target(self) -> Result<Target, Error> {
        Ok(Target::Ip(SocketAddr::new(self.0, self.1)))
    }
}

impl IntoTarget for (&str, u16) {
    fn into_target(self) -> Result<Target, Error> {
        let (host, port) = self;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Target::Ip(SocketAddr::new(ip, port)));
        }
        let name = DomainBuf::new(host.as_bytes())
            .map_err(|e| Error::Destination(format!("{host}: {e}")))?;
        Ok(Target::Domain(name, port))
    }
}

impl IntoTarget for (String, u16) {
    fn into_target(self) -> Result<Target, Error> {
        (self.0.as_str(), self.1).into_target()
    }
}

/// Opens connections through a proxy or a chain of proxies.
///
/// A chain `A → B → C` reaches the destination as C's client: this client connects to A,
/// asks A to CONNECT to B, speaks to B through that tunnel (TLS included) and asks B for C,
/// then gives C the request. Each proxy's `remote_dns` says whether the next one's name is
/// resolved here or by it. Cloning is cheap enough to do per connection.
///
/// ```no_run
/// use socksgate::client::{Connector, Proxy};
///
/// # async fn run() -> Result<(), socksgate::client::Error> {
/// let connector = Connector::chain([
///     "socks5://gateway.example:1080".parse::<Proxy>()?,
///     "socks5h+tls://alice:s3cret@inner.example:1443".parse::<Proxy>()?,
/// ])?
/// .with_timeout(std::time::Duration::from_secs(15));
/// let stream = connector.connect(("intranet.example", 80)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Connector {
    hops: Vec<Proxy>,
    timeout: Option<Duration>,
    resolver: Resolver,
}

impl Connector {
    /// Through `proxy` alone, no timeout, names resolved with the system's resolver
    /// configuration.
    pub fn new(proxy: Proxy) -> Self {
        Self {
            hops: vec![proxy],
            timeout: None,
            resolver: Resolver::from_system(),
        }
    }

    /// Through `proxies` in order, the first one reached directly; [`Error::Unsupported`]
    /// if there are none.
    pub fn chain(proxies: impl IntoIterator<Item = Proxy>) -> Result<Self, Error> {
        let mut proxies = proxies.into_iter();
        let first = proxies
            .next()
            .ok_or_else(|| Error::Unsupported("a chain of no proxies".into()))?;
        Ok(proxies.fold(Self::new(first), Self::through))
    }

    /// The same chain extended by `next`, reached through the proxies so far.
    #[must_use]
    pub fn through(mut self, next: Proxy) -> Self {
        self.hops.push(next);
        self
    }

    /// Bounds each operation — resolving, connecting, every TLS and SOCKS handshake up to
    /// the proxy's (first) reply — by `limit`; past it the operation fails with
    /// [`Error::TimedOut`]. Waiting for a BIND peer ([`BindListener::accept`]) and
    /// the data transfer are not bounded.
    #[must_use]
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Resolves names (of proxies, and of destinations for `socks4://` and `socks5://`) with
    /// `resolver`.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The proxies, the first one reached directly.
    pub fn proxies(&self) -> &[Proxy] {
        &self.hops
    }

    /// CONNECT: a stream to `destination` through the proxies.
    ///
    /// See the [module example](self).
    pub async fn connect(&self, destination: impl IntoTarget) -> Result<SocksStream, Error> {
        let target = destination.into_target()?;
        self.within(async {
            let (io, _client, bound, early) = self.request(Command::Connect, target).await?;
            Ok(SocksStream::new(io, early, bound))
        })
        .await
    }

    /// BIND: asks the last proxy to listen for one connection from `expected_peer` (the
    /// address the proxy's rules expect to connect, usually the server of the protocol that
    /// needs it, as FTP's active mode). Returns after the first reply, with the listening
    /// address to give that peer; [`BindListener::accept`] waits for the second reply.
    ///
    /// ```
    /// use socksgate::client::{Connector, Proxy};
    /// use socksgate_core::Target;
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let listener = socksgate::server::listen("127.0.0.1:0".parse()?)?;
    /// # let proxy_addr = listener.local_addr()?;
    /// # let shared = socksgate::shared::Shared::new(
    /// #     Default::default(), None, socksgate::resolve::Resolver::from_system())?;
    /// # tokio::spawn(socksgate::server::serve(
    /// #     vec![listener], std::sync::Arc::new(shared), std::future::pending()));
    /// // proxy_addr: a SOCKS5 server on the loopback interface.
    /// let connector = Connector::new(format!("socks5://{proxy_addr}").parse::<Proxy>()?);
    /// let listener = connector.bind(("127.0.0.1", 0)).await?;
    /// let Target::Ip(listening) = *listener.listen_addr() else { unreachable!() };
    /// // The peer (here, this program) connects to the proxy's listening address.
    /// let mut peer = tokio::net::TcpStream::connect(listening).await?;
    /// let (mut stream, from) = listener.accept().await?;
    /// assert_eq!(from, Target::Ip(peer.local_addr()?));
    /// peer.write_all(b"hello").await?;
    /// let mut got = [0u8; 5];
    /// stream.read_exact(&mut got).await?;
    /// assert_eq!(&got, b"hello");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind(&self, expected_peer: impl IntoTarget) -> Result<BindListener, Error> {
        let target = expected_peer.into_target()?;
        self.within(async {
            let (io, client, listening, pending) = self.request(Command::Bind, target).await?;
            let label = self.last()?.label();
            Ok(BindListener::new(io, client, label, listening, pending))
        })
        .await
    }

    /// UDP ASSOCIATE: a datagram socket whose datagrams the proxy relays. Needs a SOCKS5
    /// proxy reached directly (datagrams cannot pass through another proxy's TCP tunnel,
    /// so a chain gets [`Error::Unsupported`]).
    ///
    /// ```
    /// use socksgate::client::{Connector, Proxy};
    /// use socksgate_core::Target;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let listener = socksgate::server::listen("127.0.0.1:0".parse()?)?;
    /// # let proxy_addr = listener.local_addr()?;
    /// # let shared = socksgate::shared::Shared::new(
    /// #     Default::default(), None, socksgate::resolve::Resolver::from_system())?;
    /// # tokio::spawn(socksgate::server::serve(
    /// #     vec![listener], std::sync::Arc::new(shared), std::future::pending()));
    /// # let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    /// # let echo_addr = echo.local_addr()?;
    /// # tokio::spawn(async move {
    /// #     let mut buf = [0u8; 1500];
    /// #     let (n, from) = echo.recv_from(&mut buf).await.unwrap();
    /// #     echo.send_to(&buf[..n], from).await.unwrap();
    /// # });
    /// // proxy_addr: a SOCKS5 server; echo_addr: a UDP echo server it can reach.
    /// let connector = Connector::new(format!("socks5h://{proxy_addr}").parse::<Proxy>()?);
    /// let udp = connector.udp_associate().await?;
    /// udp.send_to(b"hello", echo_addr).await?;
    /// let mut buf = [0u8; 1500];
    /// let (n, from) = udp.recv_from(&mut buf).await?;
    /// assert_eq!((&buf[..n], from), (&b"hello"[..], Target::Ip(echo_addr)));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn udp_associate(&self) -> Result<SocksDatagram, Error> {
        if self.hops.len() > 1 {
            return Err(Error::Unsupported(
                "UDP ASSOCIATE through a chain of proxies: datagrams go to the last proxy directly"
                    .into(),
            ));
        }
        self.within(async {
            let proxy = self.last()?;
            let io = self.tunnel().await?;
            let local = io
                .local_addr()
                .map_err(|e| Error::io(Stage::Udp, "local address", e))?;
            // The socket the datagrams leave from, announced in the request: same address
            // as the control connection, so the proxy sees one client.
            let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0))
                .await
                .map_err(|e| Error::io(Stage::Udp, "binding the UDP socket", e))?;
            let announced = socket
                .local_addr()
                .map_err(|e| Error::io(Stage::Udp, "UDP socket address", e))?;
            let mut client =
                handshake::start(proxy, Command::UdpAssociate, &Target::Ip(announced))?;
            let (io, relay, protection) =
                handshake::drive_io_datagrams(&mut client, proxy, io).await?;
            let relay = self.reachable(relay, &io, local).await?;
            socket
                .connect(relay)
                .await
                .map_err(|e| Error::io(Stage::Udp, format!("relay {relay}"), e))?;
            Ok(SocksDatagram::new(
                socket,
                io,
                relay,
                proxy.clone(),
                self.resolver.clone(),
                protection,
            ))
        })
        .await
    }

    /// A reply's address as this client can reach it: the proxy's own address when the
    /// reply leaves it unspecified (RFC 1928 §6), a name resolved here.
    async fn reachable(
        &self,
        reply: Target,
        io: &Io,
        local: SocketAddr,
    ) -> Result<SocketAddr, Error> {
        match reply {
            Target::Ip(sa) if sa.ip().is_unspecified() => {
                let proxy = io
                    .first_hop()
                    .and_then(|s| s.peer_addr().ok())
                    .ok_or_else(|| Error::Unsupported("an unspecified relay address".into()))?;
                Ok(SocketAddr::new(proxy.ip(), sa.port()))
            }
            Target::Ip(sa) => Ok(sa),
            Target::Domain(name, port) => {
                let host = name.as_domain().to_string();
                let ips = self
                    .resolver
                    .lookup(&host)
                    .await
                    .map_err(|source| Error::Connect {
                        stage: Stage::Udp,
                        what: host,
                        source,
                    })?;
                let ip = ips
                    .iter()
                    .find(|ip| ip.is_ipv4() == local.is_ipv4())
                    .or(ips.first())
                    .ok_or_else(|| Error::Unsupported("a relay name without addresses".into()))?;
                Ok(SocketAddr::new(*ip, port))
            }
        }
    }

    fn last(&self) -> Result<&Proxy, Error> {
        self.hops
            .last()
            .ok_or_else(|| Error::Unsupported("a chain of no proxies".into()))
    }

    /// `operation` within the timeout.
    async fn within<T>(
        &self,
        operation: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match self.timeout {
            Some(after) => tokio::time::timeout(after, operation)
                .await
                .unwrap_or(Err(Error::TimedOut { after })),
            None => operation.await,
        }
    }

    /// Sends `command` for `target` to the last proxy and waits for its (first) reply.
    async fn request(
        &self,
        command: Command,
        target: Target,
    ) -> Result<(Io, Client, Target, Vec<u8>), Error> {
        let proxy = self.last()?;
        let target = handshake::destination(proxy, target, &self.resolver).await?;
        let mut client = handshake::start(proxy, command, &target)?;
        let io = self.tunnel().await?;
        let (io, reply, rest) =
            handshake::drive_io(&mut client, proxy, io, Vec::new(), true).await?;
        let reply = match (command, reply) {
            // BIND's listening address is given to a peer: make it one the peer can use.
            (Command::Bind, Target::Ip(sa)) if sa.ip().is_unspecified() => {
                match io.first_hop().and_then(|s| s.peer_addr().ok()) {
                    Some(proxy) => Target::Ip(SocketAddr::new(proxy.ip(), sa.port())),
                    None => Target::Ip(sa),
                }
            }
            (_, reply) => reply,
        };
        Ok((io, client, reply, rest))
    }

    /// A connection to the last proxy, through the others, before its greeting.
    async fn tunnel(&self) -> Result<Io, Error> {
        let Some((first, _)) = self.hops.split_first() else {
            return Err(Error::Unsupported("a chain of no proxies".into()));
        };
        let stream = open_first(first, &self.resolver, None, &[]).await?;
        let local = stream
            .socket()
            .local_addr()
            .map_err(|e| Error::io(Stage::ConnectToProxy, first.label(), e))?;
        let mut io = Io::Direct(stream);
        for pair in self.hops.windows(2) {
            let [via, next] = pair else { continue };
            let hop = (next.host.as_str(), next.port).into_target()?;
            let hop = handshake::destination(via, hop, &self.resolver).await?;
            let mut client = handshake::start(via, Command::Connect, &hop)?;
            let (through, _, early) =
                handshake::drive_io(&mut client, via, io, Vec::new(), false).await?;
            io = through;
            if !early.is_empty() {
                // A SOCKS server speaks only when spoken to.
                return Err(Error::Unsupported(format!(
                    "{} spoke before the greeting",
                    next.label()
                )));
            }
            if next.tls {
                let config = tls_config(next)?;
                let name = server_name(next)?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, io)
                    .await
                    .map_err(|source| Error::Tls {
                        proxy: next.label(),
                        source,
                    })?;
                io = Io::Tunneled(Box::new(tls), local);
            }
        }
        Ok(io)
    }
}

fn tls_config(proxy: &Proxy) -> Result<Arc<rustls::ClientConfig>, Error> {
    match &proxy.tls_config {
        Some(c) => Ok(Arc::clone(c)),
        None => Ok(crate::tls::client_config(None, None)?),
    }
}

fn server_name(proxy: &Proxy) -> Result<rustls_pki_types::ServerName<'static>, Error> {
    rustls_pki_types::ServerName::try_from(proxy.host.clone()).map_err(|e| Error::Tls {
        proxy: proxy.label(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a TLS server name: {e}", proxy.host),
        ),
    })
}

/// The connection to the first proxy: TCP (leaving by `egress` when given), `preamble`
/// (a PROXY protocol header), then TLS for a `+tls` proxy.
async fn open_first(
    proxy: &Proxy,
    resolver: &Resolver,
    egress: Option<crate::egress::Egress<'_>>,
    preamble: &[u8],
) -> Result<Stream, Error> {
    let target = (proxy.host.as_str(), proxy.port)
        .into_target()
        .map_err(|e| Error::Url(e.to_string()))?;
    let mut socket = resolver
        .connect_from(&target, AddressFamily::PreferIpv6, |_| Ok(()), egress)
        .await
        .map_err(|source| Error::Connect {
            stage: Stage::ConnectToProxy,
            what: proxy.label(),
            source,
        })?;
    // A PROXY header goes before TLS, as a balancer in front of a TLS listener sends it.
    if !preamble.is_empty() {
        socket
            .write_all(preamble)
            .await
            .map_err(|e| Error::io(Stage::ConnectToProxy, proxy.label(), e))?;
    }
    if !proxy.tls {
        return Ok(Stream::Plain(socket));
    }
    crate::tls::connect(tls_config(proxy)?, &proxy.host, socket)
        .await
        .map_err(|source| Error::Tls {
            proxy: proxy.label(),
            source,
        })
}

/// CONNECT through one `[[upstream]]` proxy for the server: the connection leaves by
/// `egress` and starts with `preamble`. Returns the connection (plain or TLS over the
/// socket, under GSS-API protection when the proxy's URL asked for integrity or
/// confidentiality, for the relay) and the destination's first payload.
pub(crate) async fn connect_upstream(
    proxy: &Proxy,
    target: Target,
    resolver: &Resolver,
    egress: Option<crate::egress::Egress<'_>>,
    preamble: &[u8],
) -> Result<(Stream, Vec<u8>), Error> {
    let target = handshake::destination(proxy, target, resolver).await?;
    let mut client = handshake::start(proxy, Command::Connect, &target)?;
    let stream = open_first(proxy, resolver, egress, preamble).await?;
    handshake::drive_stream(&mut client, proxy, stream).await
}

/// Drives a core [`Client`] built by the caller over any stream until it is established:
/// the low-level entry for requests [`Connector`] does not make. Returns the address of
/// the last reply (BND, or BIND's peer) and the bytes read past it.
///
/// ```no_run
/// use socksgate_core::client::{Client, ClientConfig};
/// use socksgate_core::server::Version;
/// use socksgate_core::wire::Command;
/// use socksgate_core::Addr;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut stream = tokio::net::TcpStream::connect("127.0.0.1:1080").await?;
/// let target = Addr::Ip("127.0.0.1:80".parse()?);
/// let mut client = Client::new(ClientConfig::new(Version::Socks5, Command::Connect, target))?;
/// let (bound, early) = socksgate::client::handshake(&mut client, &mut stream).await?;
/// # Ok(())
/// # }
/// ```
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    stream: &mut S,
) -> Result<(Target, Vec<u8>), Error> {
    handshake::drive(client, "the proxy", stream, Vec::new(), false).await
}

/// [`handshake`] up to the first reply (BIND: the listening address); pass the returned
/// bytes to [`drive`] to wait for the second.
pub async fn handshake_until_reply<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    stream: &mut S,
) -> Result<(Target, Vec<u8>), Error> {
    handshake::drive(client, "the proxy", stream, Vec::new(), true).await
}

/// [`handshake`] with `pending` bytes already read from the proxy, up to the first reply
/// when `until_first_reply`.
pub async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    stream: &mut S,
    pending: Vec<u8>,
    until_first_reply: bool,
) -> Result<(Target, Vec<u8>), Error> {
    handshake::drive(client, "the proxy", stream, pending, until_first_reply).await
}
