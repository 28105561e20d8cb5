//! `socksgate connect --proxy URL HOST PORT`: relay stdin/stdout to HOST:PORT through a SOCKS
//! proxy (usable as ssh's `ProxyCommand`). The handshake is `socksgate_core::client`.
//!
//! | scheme | protocol | names resolved by |
//! |---|---|---|
//! | `socks4://` | SOCKS4 | this client (IPv4 only) |
//! | `socks4a://` | SOCKS4a | the proxy |
//! | `socks5://` | SOCKS5 | this client |
//! | `socks5h://` | SOCKS5 | the proxy |
//!
//! `user:pass@` (percent-encoded) sends RFC 1929 credentials (SOCKS5) or a USERID (SOCKS4).
//!
//! `socks5+tls://`, `socks5h+tls://`, `socks4+tls://` and `socks4a+tls://` speak the same inside
//! TLS (see [`crate::tls`]): the proxy's certificate is checked against `--ca` (or the
//! system's trust store) for the URL's host.

use std::net::{IpAddr, SocketAddr};

use socksgate_core::client::{Client, ClientConfig, ClientError, ClientEvent, Credentials};
use socksgate_core::family::AddressFamily;
use socksgate_core::server::Version;
use socksgate_core::wire::Command;
use socksgate_core::{Addr, Domain, Target};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::stream::Stream;

use crate::failure::ConnectError;
use crate::resolve::Resolver;

/// Why `connect` failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientFailure {
    /// The proxy URL is not usable.
    #[error("invalid proxy URL: {0}")]
    Url(String),
    /// The destination is not usable.
    #[error("invalid destination: {0}")]
    Destination(String),
    /// Reaching the proxy, or resolving the destination locally, failed.
    #[error("{what}: {source}")]
    Connect {
        /// What was being done.
        what: String,
        /// The cause.
        source: ConnectError,
    },
    /// The SOCKS handshake failed.
    #[error("proxy: {0}")]
    Handshake(ClientError),
    /// The proxy closed the connection during the handshake.
    #[error("proxy closed the connection during the handshake")]
    Eof,
    /// The TLS settings (`--ca`, `--cert`, `--key`) could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The TLS handshake with the proxy failed.
    #[error("TLS handshake with proxy {proxy}: {source}")]
    TlsHandshake {
        /// The proxy's host.
        proxy: String,
        /// The cause (an untrusted certificate, one for another name, …).
        source: std::io::Error,
    },
    /// Socket or stdio failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A parsed proxy URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Protocol.
    pub version: Version,
    /// Whether the proxy resolves destination names (socks4a, socks5h).
    pub remote_dns: bool,
    /// Proxy host (name or IP literal, without brackets).
    pub host: String,
    /// Proxy port (default 1080).
    pub port: u16,
    /// Username and password, percent-decoded.
    pub credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// SOCKS inside TLS (`+tls` schemes); the certificate must be valid for `host`.
    pub tls: bool,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUrl")
            .field("version", &self.version)
            .field("remote_dns", &self.remote_dns)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "user",
                &self
                    .credentials
                    .as_ref()
                    .map(|(u, _)| String::from_utf8_lossy(u)),
            )
            .finish()
    }
}

impl std::str::FromStr for ProxyUrl {
    type Err = ClientFailure;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |m: &str| {
            ClientFailure::Url(format!(
                "{m} (expected socks4://, socks4a://, socks5:// or socks5h://[user:pass@]host:port, or socks5+tls:// etc.)"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let (scheme, tls) = match scheme.strip_suffix("+tls") {
            Some(inner) => (inner, true),
            None => (scheme.as_str(), false),
        };
        let (version, remote_dns) = match scheme {
            "socks4" => (Version::Socks4, false),
            "socks4a" => (Version::Socks4a, true),
            "socks5" => (Version::Socks5, false),
            "socks5h" => (Version::Socks5, true),
            _ => return Err(bad(&format!("unknown scheme {scheme:?}"))),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Some((
                    percent_decode(user).ok_or_else(|| bad("bad %-escape"))?,
                    percent_decode(pass).ok_or_else(|| bad("bad %-escape"))?,
                ))
            }
            None => None,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => 1080,
                None => return Err(bad("junk after ']'")),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (hostport.to_owned(), 1080),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            version,
            remote_dns,
            host,
            port,
            credentials,
            tls,
        })
    }
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// Connects to the proxy and completes a CONNECT handshake; returns the stream and any
/// payload from the destination that arrived with the reply.
/// `tls`: the TLS settings of a `+tls` proxy (the system's trust store when `None`).
pub async fn open(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    resolver: &Resolver,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Stream, Vec<u8>, Target), ClientFailure> {
    open_from(proxy, host, port, resolver, None, &[], tls).await
}

/// [`open`] for a server chaining through an `[[upstream]]`: the connection to the proxy
/// leaves by `egress` when given, and `preamble` (a PROXY protocol header) goes to the proxy
/// before the SOCKS greeting.
pub async fn open_from(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    resolver: &Resolver,
    egress: Option<crate::egress::Egress<'_>>,
    preamble: &[u8],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Stream, Vec<u8>, Target), ClientFailure> {
    // The destination as sent: resolved here unless the proxy resolves names.
    let literal: Option<IpAddr> = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok();
    let dest_ip: Option<SocketAddr> = match (literal, proxy.remote_dns) {
        (Some(ip), _) => Some(SocketAddr::new(ip, port)),
        (None, true) => None,
        (None, false) => {
            let ips = resolver
                .lookup(host)
                .await
                .map_err(|source| ClientFailure::Connect {
                    what: format!("resolving {host}"),
                    source,
                })?;
            let pick = if proxy.version == Version::Socks5 {
                ips.first()
            } else {
                ips.iter().find(|ip| ip.is_ipv4())
            };
            let ip = pick.ok_or_else(|| {
                ClientFailure::Destination(format!("{host} has no IPv4 address for SOCKS4"))
            })?;
            Some(SocketAddr::new(*ip, port))
        }
    };
    let target = match dest_ip {
        Some(sa) => Addr::Ip(sa),
        None => Addr::Domain(
            Domain::new(host.as_bytes())
                .map_err(|e| ClientFailure::Destination(format!("{host}: {e}")))?,
            port,
        ),
    };
    let version = match (proxy.version, target) {
        (Version::Socks4a, Addr::Ip(_)) => Version::Socks4,
        (v, _) => v,
    };
    let (user, pass) = match &proxy.credentials {
        Some((u, p)) => (u.as_slice(), p.as_slice()),
        None => (&[][..], &[][..]),
    };
    let config = ClientConfig {
        version,
        credentials: (version == Version::Socks5 && proxy.credentials.is_some()).then_some(
            Credentials {
                username: user,
                password: pass,
            },
        ),
        command: Command::Connect,
        target,
        user_id: if version == Version::Socks5 {
            &[]
        } else {
            user
        },
    };
    let mut client = Client::new(config).map_err(ClientFailure::Handshake)?;
    let proxy_target = match proxy.host.parse::<IpAddr>() {
        Ok(ip) => Target::Ip(SocketAddr::new(ip, proxy.port)),
        Err(_) => Target::Domain(
            socksgate_core::DomainBuf::new(proxy.host.as_bytes())
                .map_err(|e| ClientFailure::Url(format!("{}: {e}", proxy.host)))?,
            proxy.port,
        ),
    };
    let mut socket = resolver
        .connect_from(&proxy_target, AddressFamily::PreferIpv6, |_| Ok(()), egress)
        .await
        .map_err(|source| ClientFailure::Connect {
            what: format!("connecting to proxy {proxy_target}"),
            source,
        })?;
    // A PROXY header goes before TLS, as a balancer in front of a TLS listener sends it.
    if !preamble.is_empty() {
        socket.write_all(preamble).await?;
    }
    let mut stream = if proxy.tls {
        let config = match tls {
            Some(c) => c,
            None => crate::tls::client_config(None, None)?,
        };
        crate::tls::connect(config, &proxy.host, socket)
            .await
            .map_err(|source| ClientFailure::TlsHandshake {
                proxy: proxy.host.clone(),
                source,
            })?
    } else {
        Stream::Plain(socket)
    };
    let (bound, rest) = handshake(&mut client, &mut stream).await?;
    Ok((stream, rest, bound))
}

/// Drives the core client over `stream` until established; returns the last address the
/// proxy reported (BND for CONNECT, the peer for BIND) and payload that followed the reply.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    stream: &mut S,
) -> Result<(Target, Vec<u8>), ClientFailure> {
    drive(client, stream, Vec::new(), false).await
}

/// Like [`handshake`] but returns at the first reply (BIND: the listening address); pass the
/// returned bytes to [`drive`] to wait for the second reply.
pub async fn handshake_until_reply<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    stream: &mut S,
) -> Result<(Target, Vec<u8>), ClientFailure> {
    drive(client, stream, Vec::new(), true).await
}

/// The handshake loop: `pending` holds bytes already read from the proxy.
pub async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client,
    stream: &mut S,
    pending: Vec<u8>,
    until_reply: bool,
) -> Result<(Target, Vec<u8>), ClientFailure> {
    let mut out = [0u8; 600];
    let mut buf = pending;
    let mut start = 0usize;
    let mut end = buf.len();
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut last = None;
    loop {
        loop {
            let n = client.poll_transmit(&mut out);
            if n == 0 {
                break;
            }
            stream.write_all(out.get(..n).unwrap_or_default()).await?;
        }
        // TLS holds written records until flushed.
        stream.flush().await?;
        if client.is_established() || (until_reply && last.is_some()) {
            let rest = buf.get(start..end).unwrap_or_default().to_vec();
            return last.map(|t| (t, rest)).ok_or(ClientFailure::Eof);
        }
        if start == end {
            start = 0;
            end = stream.read(buf.get_mut(..).unwrap_or_default()).await?;
            if end == 0 {
                return Err(ClientFailure::Eof);
            }
        }
        let n = client
            .feed(buf.get(start..end).unwrap_or_default())
            .map_err(ClientFailure::Handshake)?;
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

/// `socksgate connect`: handshake, then relay stdin → proxy and proxy → stdout, with
/// half-close (stdin EOF shuts down the proxy connection's write side, unless
/// `no_shutdown`). The session ends when the proxy side ends.
pub async fn run(args: &crate::cli::ConnectArgs) -> Result<(), ClientFailure> {
    let proxy: ProxyUrl = args.proxy.parse()?;
    let no_shutdown = args.no_shutdown;
    let has_tls_files = args.ca.is_some() || args.cert.is_some();
    if has_tls_files && !proxy.tls {
        return Err(ClientFailure::Url(
            "--ca, --cert and --key need a +tls proxy URL (socks5+tls://, socks5h+tls://, …)"
                .into(),
        ));
    }
    let tls = if proxy.tls {
        let identity = args.cert.as_deref().zip(args.key.as_deref());
        Some(crate::tls::client_config(args.ca.as_deref(), identity)?)
    } else {
        None
    };
    let resolver = Resolver::from_system();
    let (stream, early, _bound) = open(&proxy, &args.host, args.port, &resolver, tls).await?;
    let mut stdout = tokio::io::stdout();
    if !early.is_empty() {
        stdout.write_all(&early).await?;
        stdout.flush().await?;
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let up = async {
        let mut stdin = tokio::io::stdin();
        // Not tokio::io::copy: TLS needs each chunk flushed, for interactive use (ssh).
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            wr.write_all(buf.get(..n).unwrap_or_default()).await?;
            wr.flush().await?;
        }
        if no_shutdown {
            // Keep the write side open until the proxy side ends.
            std::future::pending::<()>().await;
        }
        wr.shutdown().await
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let written = async {
                stdout.write_all(buf.get(..n).unwrap_or_default()).await?;
                stdout.flush().await
            };
            match written.await {
                Ok(()) => {}
                // Whoever reads our stdout has gone: that ends the session, quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(e) => return Err(e),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    // The session is over when the proxy side ends; stdin may stay open (ssh does that).
    tokio::pin!(up);
    tokio::select! {
        r = down => r?,
        r = &mut up => {
            r?;
            // stdin finished first: keep draining the response.
            let mut stdout = tokio::io::stdout();
            tokio::io::copy(&mut rd, &mut stdout).await?;
            stdout.flush().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: ProxyUrl = "socks5h://al%3Ace:p%40ss@proxy.example:1081"
            .parse()
            .unwrap();
        assert_eq!(u.version, Version::Socks5);
        assert!(u.remote_dns);
        assert_eq!(u.host, "proxy.example");
        assert_eq!(u.port, 1081);
        assert_eq!(u.credentials, Some((b"al:ce".to_vec(), b"p@ss".to_vec())));
        let u: ProxyUrl = "socks4://[::1]:1080".parse().unwrap();
        assert_eq!(
            (u.version, u.remote_dns, u.host.as_str(), u.port),
            (Version::Socks4, false, "::1", 1080)
        );
        let u: ProxyUrl = "socks4a://127.0.0.1".parse().unwrap();
        assert_eq!(
            (u.version, u.remote_dns, u.port),
            (Version::Socks4a, true, 1080)
        );
        let u: ProxyUrl = "SOCKS5://h:1/".parse().unwrap();
        assert!(!u.remote_dns);
        assert!("http://h:1".parse::<ProxyUrl>().is_err());
        assert!("socks5://h:x".parse::<ProxyUrl>().is_err());
        assert!("socks5://:1".parse::<ProxyUrl>().is_err());
        let u: ProxyUrl = "socks5h+tls://proxy.example:1443".parse().unwrap();
        assert!(u.tls && u.remote_dns);
        assert_eq!((u.host.as_str(), u.port), ("proxy.example", 1443));
        assert!(!"socks5h://h:1".parse::<ProxyUrl>().unwrap().tls);
        assert!("socks5+tcp://h:1".parse::<ProxyUrl>().is_err());
        // The password never shows in Debug.
        let u: ProxyUrl = "socks5://u:secret@h:1".parse().unwrap();
        assert!(!format!("{u:?}").contains("secret"));
    }
}
