//! The shim's configuration, read once from the environment that `socksgate socksify` sets
//! (and that children inherit, so programs started by the program stay socksified).
//!
//! | variable | value |
//! |---|---|
//! | `SOCKSGATE_SOCKSIFY_PROXY` | `socks5h://[user:pass@]IP:PORT` (also `socks5`, `socks4a`, `socks4`); the host is an IP literal |
//! | `SOCKSGATE_SOCKSIFY_DIRECT` | comma-separated `loopback`, `local`, CIDR networks, or `none` (default `loopback,local`) |
//! | `SOCKSGATE_SOCKSIFY_LOG` | unset: quiet; `stderr` or a file path: one line per interposed call |
//! | `SOCKSGATE_SOCKSIFY_CONNECT_TIMEOUT` | seconds for reaching the proxy and its answer (default 30) |
//!
//! `socksgate socksify` validates its flags, environment and config file and writes these
//! variables in this canonical form; a program started with `LD_PRELOAD` by hand and a bad
//! value gets one message on stderr and every proxied connection fails (fail closed: traffic
//! never silently goes direct).
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use socksgate_core::server::Version;

use crate::direct::DirectNetworks;

/// Environment variable: the proxy URL.
pub const PROXY_ENV: &str = "SOCKSGATE_SOCKSIFY_PROXY";
/// Environment variable: destinations that bypass the proxy.
pub const DIRECT_ENV: &str = "SOCKSGATE_SOCKSIFY_DIRECT";
/// Environment variable: where `--verbose` lines go.
pub const LOG_ENV: &str = "SOCKSGATE_SOCKSIFY_LOG";
/// Environment variable: the connect timeout in seconds.
pub const TIMEOUT_ENV: &str = "SOCKSGATE_SOCKSIFY_CONNECT_TIMEOUT";

/// The proxy to use.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    /// Protocol.
    pub(crate) version: Version,
    /// Whether the proxy resolves names (socks5h, socks4a): then getaddrinfo hands out
    /// placeholders (see [`crate::placeholder`]).
    pub(crate) remote_dns: bool,
    /// The proxy's address.
    pub(crate) address: SocketAddr,
    /// RFC 1929 username and password (SOCKS5), or the USERID (SOCKS4, username only).
    pub(crate) credentials: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Everything the hooks need.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The proxy, or why the configuration is unusable (then proxied connections fail).
    pub(crate) proxy: Result<Proxy, String>,
    /// Destinations that bypass the proxy.
    pub(crate) direct: DirectNetworks,
    /// Deadline for reaching the proxy and its answers.
    pub(crate) connect_timeout: Duration,
}

/// The settings of this process, read from the environment on first use.
pub(crate) fn get() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let settings = from_env(|name| std::env::var(name).ok());
        if let Err(why) = &settings.proxy {
            crate::log::always(format_args!(
                "no usable proxy ({why}): connections that should go through the proxy fail"
            ));
        }
        settings
    })
}

/// Builds settings from variables looked up with `var`.
pub(crate) fn from_env(var: impl Fn(&str) -> Option<String>) -> Settings {
    let proxy = match var(PROXY_ENV) {
        Some(url) => parse_proxy(&url).map_err(|e| format!("{PROXY_ENV}: {e}")),
        None => Err(format!("{PROXY_ENV} is not set")),
    };
    let direct = match var(DIRECT_ENV) {
        Some(list) => DirectNetworks::parse(&list).unwrap_or_else(|e| {
            crate::log::always(format_args!("{DIRECT_ENV}: {e}; using none"));
            DirectNetworks::none()
        }),
        None => DirectNetworks::default_networks(),
    };
    let connect_timeout = var(TIMEOUT_ENV)
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(Duration::from_secs(30), Duration::from_secs);
    Settings {
        proxy,
        direct,
        connect_timeout,
    }
}

/// Parses `scheme://[user:pass@]IP:PORT` (the canonical form; names are resolved by
/// `socksgate socksify` before the program starts).
pub(crate) fn parse_proxy(url: &str) -> Result<Proxy, String> {
    let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
    let (version, remote_dns) = match scheme.to_ascii_lowercase().as_str() {
        "socks4" => (Version::Socks4, false),
        "socks4a" => (Version::Socks4a, true),
        "socks5" => (Version::Socks5, false),
        "socks5h" => (Version::Socks5, true),
        other => {
            return Err(format!(
                "unknown scheme {other:?} (socks4, socks4a, socks5, socks5h)"
            ));
        }
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
                .parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 1080))
        })
        .map_err(|_| format!("{hostport:?} is not IP:PORT"))?;
    Ok(Proxy {
        version,
        remote_dns,
        address,
        credentials,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = parse_proxy("socks5h://al%40ice:pw@127.0.0.1:1081").unwrap();
        assert_eq!(p.version, Version::Socks5);
        assert!(p.remote_dns);
        assert_eq!(p.address, "127.0.0.1:1081".parse().unwrap());
        assert_eq!(p.credentials, Some((b"al@ice".to_vec(), b"pw".to_vec())));
        let p = parse_proxy("socks4://[::1]:9").unwrap();
        assert_eq!((p.version, p.remote_dns), (Version::Socks4, false));
        assert!(parse_proxy("socks5://proxy.example:1080").is_err());
        assert!(parse_proxy("http://127.0.0.1:1").is_err());
    }

    #[test]
    fn environment() {
        let s = from_env(|name| match name {
            PROXY_ENV => Some("socks5://127.0.0.1:1080".into()),
            DIRECT_ENV => Some("none".into()),
            TIMEOUT_ENV => Some("5".into()),
            _ => None,
        });
        assert!(s.proxy.is_ok());
        assert!(!s.direct.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert!(from_env(|_| None).proxy.is_err());
    }
}
