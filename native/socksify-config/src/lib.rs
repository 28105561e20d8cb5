//! The settings `socksgate socksify` passes to the library it preloads
//! (`libsocksgate_socksify.so`), through environment variables that the program's children
//! inherit. Both sides parse them with this crate, so the command validates exactly what the
//! library will read.
//!
//! | variable | value |
//! |---|---|
//! | [`PROXY_ENV`] | `socks5h://[user:pass@]IP:PORT` (also `socks5`, `socks4a`, `socks4`); the host is an IP literal |
//! | [`DIRECT_ENV`] | comma-separated `loopback`, `local`, CIDR networks or addresses, or `none` (default `loopback,local`) |
//! | [`LOG_ENV`] | unset: quiet; `stderr` or a file path: one line per interposed call |
//! | [`TIMEOUT_ENV`] | seconds for reaching the proxy and its answers (default 30) |
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use socksgate_core::server::Version;

/// Environment variable: the proxy URL, canonical form (see [`Proxy`]).
pub const PROXY_ENV: &str = "SOCKSGATE_SOCKSIFY_PROXY";
/// Environment variable: destinations that bypass the proxy (see [`DirectList`]).
pub const DIRECT_ENV: &str = "SOCKSGATE_SOCKSIFY_DIRECT";
/// Environment variable: where `--verbose` lines go (`stderr` or a file).
pub const LOG_ENV: &str = "SOCKSGATE_SOCKSIFY_LOG";
/// Environment variable: the connect timeout in seconds.
pub const TIMEOUT_ENV: &str = "SOCKSGATE_SOCKSIFY_CONNECT_TIMEOUT";
/// The connect timeout when none is given, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The `--direct` list when none is given.
pub const DEFAULT_DIRECT: &str = "loopback,local";

/// The proxy the library uses.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Protocol.
    pub version: Version,
    /// Whether the proxy resolves names (socks5h, socks4a).
    pub remote_dns: bool,
    /// The proxy's address.
    pub address: SocketAddr,
    /// RFC 1929 username and password (SOCKS5), or the USERID (SOCKS4: the username).
    pub credentials: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("version", &self.version)
            .field("remote_dns", &self.remote_dns)
            .field("address", &self.address)
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

impl Proxy {
    /// Parses the canonical form `scheme://[user:pass@]IP[:PORT]` (port 1080 by default;
    /// `user` and `pass` percent-encoded).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
        let (version, remote_dns) = scheme_of(scheme)?;
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let credentials = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Some((
                    percent_decode(user).ok_or("bad %-escape")?,
                    percent_decode(pass).ok_or("bad %-escape")?,
                ))
            }
            None => None,
        };
        let address = hostport
            .parse::<SocketAddr>()
            .or_else(|_| {
                hostport
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 1080))
            })
            .map_err(|_| format!("{hostport:?} is not IP:PORT"))?;
        Ok(Self {
            version,
            remote_dns,
            address,
            credentials,
        })
    }

    /// The canonical form [`Proxy::parse`] reads.
    pub fn to_url(&self) -> String {
        let scheme = match (self.version, self.remote_dns) {
            (Version::Socks5, true) => "socks5h",
            (Version::Socks5, false) => "socks5",
            (Version::Socks4a, _) | (Version::Socks4, true) => "socks4a",
            (Version::Socks4, false) => "socks4",
        };
        let userinfo = match &self.credentials {
            Some((user, pass)) => format!("{}:{}@", percent_encode(user), percent_encode(pass)),
            None => String::new(),
        };
        format!("{scheme}://{userinfo}{}", self.address)
    }
}

/// The protocol of a URL scheme and whether the proxy resolves names.
pub fn scheme_of(scheme: &str) -> Result<(Version, bool), String> {
    Ok(match scheme.to_ascii_lowercase().as_str() {
        "socks4" => (Version::Socks4, false),
        "socks4a" => (Version::Socks4a, true),
        "socks5" => (Version::Socks5, false),
        "socks5h" => (Version::Socks5, true),
        other => {
            return Err(format!(
                "unknown scheme {other:?} (socks4, socks4a, socks5, socks5h)"
            ));
        }
    })
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One item of a `--direct` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectItem {
    /// 127.0.0.0/8 and ::1.
    Loopback,
    /// The networks of the machine's interfaces when the program starts.
    Local,
    /// A network: address and prefix length.
    Network(IpAddr, u8),
}

/// A parsed `--direct` list: `none`, or comma-separated `loopback`, `local`, `10.0.0.0/8`,
/// `fd00::/8`, `192.0.2.1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectList(pub Vec<DirectItem>);

impl DirectList {
    /// Parses a list.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut items = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "none" => {}
                "loopback" => items.push(DirectItem::Loopback),
                "local" => items.push(DirectItem::Local),
                cidr => {
                    let (ip, prefix) = parse_cidr(cidr)?;
                    items.push(DirectItem::Network(ip, prefix));
                }
            }
        }
        Ok(Self(items))
    }
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| {
        format!("{s:?} is not a network (loopback, local, none, 10.0.0.0/8, fd00::/8)")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
        None => max,
    };
    Ok((ip, prefix))
}

/// Whether `ip` is inside `net/prefix` (same family only).
pub fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("socks5h://al%40ice:pw@127.0.0.1:1081").unwrap();
        assert_eq!(p.version, Version::Socks5);
        assert!(p.remote_dns);
        assert_eq!(p.address, "127.0.0.1:1081".parse().unwrap());
        assert_eq!(p.credentials, Some((b"al@ice".to_vec(), b"pw".to_vec())));
        assert_eq!(Proxy::parse(&p.to_url()).unwrap(), p);
        let p = Proxy::parse("socks4://[::1]:9").unwrap();
        assert_eq!((p.version, p.remote_dns), (Version::Socks4, false));
        assert_eq!(
            Proxy::parse("socks4a://[::1]").unwrap().address.port(),
            1080
        );
        assert!(Proxy::parse("socks5://proxy.example:1080").is_err());
        assert!(Proxy::parse("http://127.0.0.1:1").is_err());
    }

    #[test]
    fn direct_lists() {
        let d = DirectList::parse("loopback, local,10.0.0.0/8,fd00::/8,192.0.2.1").unwrap();
        assert_eq!(d.0.len(), 5);
        assert_eq!(
            d.0[4],
            DirectItem::Network("192.0.2.1".parse().unwrap(), 32)
        );
        assert_eq!(DirectList::parse("none").unwrap().0, []);
        assert!(DirectList::parse("10.0.0.0/33").is_err());
        assert!(DirectList::parse("lan").is_err());
        assert!(in_network(
            "10.1.2.3".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
        assert!(in_network(
            "8.8.8.8".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            0
        ));
        assert!(!in_network(
            "11.0.0.1".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
    }
}
