//! One proxy of a chain: its protocol, address, authentication and TLS, and the proxy URL
//! syntax — parsed here and nowhere else.

use std::fmt;
use std::sync::Arc;

use socksgate_core::gssapi::ProtectionLevel;
use socksgate_core::server::Version;

use super::Error;

/// How the client authenticates to a proxy, besides TLS client certificates (those belong
/// to the proxy's [TLS settings](Proxy::with_tls)).
///
/// New methods (GSS-API, RFC 1961) arrive as new variants: match with a `_` arm.
///
/// ```
/// use socksgate::client::Auth;
///
/// let auth = Auth::password("alice", "s3cret");
/// assert!(!format!("{auth:?}").contains("s3cret"));
/// assert_eq!(Auth::default(), Auth::None);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication (SOCKS5 method 0; SOCKS4 with an empty USERID).
    #[default]
    None,
    /// RFC 1929 username/password (SOCKS5 offers methods 0 and 2; the proxy picks). Over
    /// SOCKS4/4a the username is sent as the USERID and the password is not sent.
    Password {
        /// Username, 1–255 octets.
        username: Vec<u8>,
        /// Password, 1–255 octets.
        password: Vec<u8>,
    },
    /// GSS-API with Kerberos (RFC 1961), from the user's credential cache (`kinit`,
    /// `KRB5CCNAME`): SOCKS5 only; only method 1 is offered, so a proxy cannot drop it.
    /// After the context, the client asks for `protection` and accepts nothing weaker or
    /// stronger; with integrity or confidentiality every later byte — the request, the
    /// reply and the stream — travels wrapped (RFC 1961 §5). URL form:
    /// `socks5+gssapi://host:port?service=rcmd&protection=confidentiality`.
    Gssapi {
        /// The proxy's service: `rcmd` (curl's default) names `rcmd@<proxy host>`
        /// (`rcmd/<proxy host>@REALM`); a name with a `/` is a full principal.
        service: String,
        /// The level asked for and required: none, integrity or confidentiality.
        protection: ProtectionLevel,
        /// Send the level unwrapped, as NEC's reference client and curl's
        /// `--socks5-gssapi-nec` do.
        nec: bool,
    },
}

impl Auth {
    /// [`Auth::Password`] from text.
    pub fn password(username: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> Self {
        Self::Password {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Gssapi {
                service,
                protection,
                nec,
            } => f
                .debug_struct("Gssapi")
                .field("service", service)
                .field("protection", &protection.to_string())
                .field("nec", nec)
                .finish(),
            Self::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", &String::from_utf8_lossy(username))
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// A SOCKS proxy: protocol, address, authentication and whether SOCKS runs inside TLS.
///
/// Usually parsed from a proxy URL:
///
/// | scheme | protocol | destination names resolved by |
/// |---|---|---|
/// | `socks4://` | SOCKS4 | this client (IPv4 only) |
/// | `socks4a://` | SOCKS4a | the proxy |
/// | `socks5://` | SOCKS5 | this client |
/// | `socks5h://` | SOCKS5 | the proxy |
///
/// `user:pass@` (percent-encoded) gives [`Auth::Password`]. `socks5+tls://`,
/// `socks5h+tls://`, `socks4+tls://` and `socks4a+tls://` speak the same inside TLS: the
/// proxy's certificate must be valid for the URL's host (the system's trust store unless
/// [`with_tls`](Self::with_tls) gives other settings, such as a client certificate). The
/// port defaults to 1080.
///
/// `socks5+gssapi://` and `socks5h+gssapi://` (also with `+tls`) give [`Auth::Gssapi`]:
/// Kerberos with the user's tickets, options in the query — `service` (default `rcmd`,
/// the principal `rcmd/<host>@REALM`; one with a `/` is a full principal), `protection`
/// (`confidentiality`, the default, `integrity` or `none`: asked for and required) and
/// `nec=1` (the level sent unwrapped, NEC style). No `user:pass@` then.
///
/// ```
/// use socksgate::client::{Auth, Proxy};
/// use socksgate_core::gssapi::ProtectionLevel;
///
/// let proxy: Proxy = "socks5h+gssapi://proxy.example:1080?service=socks&protection=integrity"
///     .parse()?;
/// assert_eq!(
///     proxy.auth,
///     Auth::Gssapi {
///         service: "socks".into(),
///         protection: ProtectionLevel::Integrity,
///         nec: false
///     }
/// );
/// assert!("socks4+gssapi://proxy.example".parse::<Proxy>().is_err());
/// # Ok::<(), socksgate::client::Error>(())
/// ```
///
/// ```
/// use socksgate::client::{Auth, Proxy};
///
/// let proxy: Proxy = "socks5h://alice:s%40cret@proxy.example:1081".parse()?;
/// assert!(proxy.remote_dns);
/// assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.example", 1081));
/// assert_eq!(proxy.auth, Auth::password("alice", "s@cret"));
/// assert!("http://proxy.example".parse::<Proxy>().is_err());
/// # Ok::<(), socksgate::client::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Proxy {
    /// Protocol.
    pub version: Version,
    /// Whether destination names go to the proxy (socks4a, socks5h) rather than being
    /// resolved by this client.
    pub remote_dns: bool,
    /// Host (a name or an IP literal, without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Authentication.
    pub auth: Auth,
    /// SOCKS inside TLS (`+tls` schemes).
    pub tls: bool,
    /// The TLS settings when `tls` (the system's trust store and no client certificate
    /// when `None`).
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl Proxy {
    /// A proxy at `host:port` speaking `version`, without authentication or TLS; names are
    /// sent to the proxy when the protocol can carry them (SOCKS4a, SOCKS5).
    ///
    /// ```
    /// use socksgate::client::Proxy;
    /// use socksgate_core::server::Version;
    ///
    /// let proxy = Proxy::new(Version::Socks5, "127.0.0.1", 1080);
    /// assert_eq!(proxy.to_string(), "socks5h://127.0.0.1:1080");
    /// ```
    pub fn new(version: Version, host: impl Into<String>, port: u16) -> Self {
        Self {
            version,
            remote_dns: version != Version::Socks4,
            host: host.into(),
            port,
            auth: Auth::None,
            tls: false,
            tls_config: None,
        }
    }

    /// The same proxy with `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The same proxy spoken to inside TLS with `config` (trusted roots, client
    /// certificate; see [`crate::tls::client_config`]).
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use socksgate::client::Proxy;
    ///
    /// let identity = (Path::new("client.pem"), Path::new("client.key"));
    /// let config = socksgate::tls::client_config(Some(Path::new("ca.pem")), Some(identity))?;
    /// let proxy = "socks5h+tls://proxy.example:1443".parse::<Proxy>()?.with_tls(config);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = true;
        self.tls_config = Some(config);
        self
    }

    /// `host:port`, brackets around IPv6 literals.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `proxy host:port`, as errors name it.
    pub(crate) fn label(&self) -> String {
        format!("proxy {}", self.authority())
    }

    fn scheme(&self) -> &'static str {
        match (self.version, self.remote_dns, self.tls) {
            (Version::Socks4, _, false) => "socks4",
            (Version::Socks4, _, true) => "socks4+tls",
            (Version::Socks4a, _, false) => "socks4a",
            (Version::Socks4a, _, true) => "socks4a+tls",
            (Version::Socks5, false, false) => "socks5",
            (Version::Socks5, false, true) => "socks5+tls",
            (Version::Socks5, true, false) => "socks5h",
            (Version::Socks5, true, true) => "socks5h+tls",
        }
    }
}

impl PartialEq for Proxy {
    fn eq(&self, other: &Self) -> bool {
        let same_tls_config = match (&self.tls_config, &other.tls_config) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.version == other.version
            && self.remote_dns == other.remote_dns
            && self.host == other.host
            && self.port == other.port
            && self.auth == other.auth
            && self.tls == other.tls
            && same_tls_config
    }
}

impl Eq for Proxy {}

/// The URL without the password.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gssapi = if matches!(self.auth, Auth::Gssapi { .. }) {
            "+gssapi"
        } else {
            ""
        };
        let (scheme, tls) = match self.scheme().strip_suffix("+tls") {
            Some(s) => (s, "+tls"),
            None => (self.scheme(), ""),
        };
        write!(f, "{scheme}{gssapi}{tls}://")?;
        if let Auth::Password { username, .. } = &self.auth {
            write!(f, "{}@", String::from_utf8_lossy(username))?;
        }
        f.write_str(&self.authority())?;
        if let Auth::Gssapi {
            service,
            protection,
            nec,
        } = &self.auth
        {
            write!(f, "?service={service}&protection={protection}")?;
            if *nec {
                f.write_str("&nec=1")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("version", &self.version)
            .field("remote_dns", &self.remote_dns)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("tls_config", &self.tls_config.is_some())
            .finish()
    }
}

impl std::str::FromStr for Proxy {
    type Err = Error;

    /// Parses a proxy URL (see the [type docs](Proxy)).
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |m: &str| {
            Error::Url(format!(
                "{m} (expected socks4://, socks4a://, socks5:// or socks5h://[user:pass@]host:port, or socks5+tls:// etc.)"
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let (scheme, tls) = match scheme.strip_suffix("+tls") {
            Some(inner) => (inner, true),
            None => (scheme.as_str(), false),
        };
        let (scheme, gssapi) = match scheme.strip_suffix("+gssapi") {
            Some(inner) => (inner, true),
            None => (scheme, false),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) if gssapi => (r, Some(q)),
            Some(_) => return Err(bad("a query is only for +gssapi")),
            None => (rest, None),
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
        let auth = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Auth::Password {
                    username: percent_decode(user).ok_or_else(|| bad("bad %-escape"))?,
                    password: percent_decode(pass).ok_or_else(|| bad("bad %-escape"))?,
                }
            }
            None => Auth::None,
        };
        let auth = match (gssapi, auth, version) {
            (false, auth, _) => auth,
            (true, Auth::None, Version::Socks5) => gssapi_auth(query.unwrap_or_default())
                .map_err(|m| Error::Url(format!("{url}: {m}")))?,
            (true, Auth::None, _) => return Err(bad("GSS-API needs SOCKS5")),
            (true, _, _) => return Err(bad("+gssapi takes no user:pass@")),
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
            auth,
            tls,
            tls_config: None,
        })
    }
}

/// `service=…&protection=…&nec=1` of a `+gssapi` URL; defaults `rcmd`, confidentiality.
fn gssapi_auth(query: &str) -> Result<Auth, String> {
    let mut service = crate::gssapi::DEFAULT_SERVICE.to_owned();
    let mut protection = ProtectionLevel::Confidentiality;
    let mut nec = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| format!("bad %-escape in {key}"))?;
        match key {
            "service" if !value.is_empty() => service = value,
            "protection" => {
                protection = match value.as_str() {
                    "none" => ProtectionLevel::None,
                    "integrity" => ProtectionLevel::Integrity,
                    "confidentiality" => ProtectionLevel::Confidentiality,
                    other => {
                        return Err(format!(
                            "protection={other}: expected none, integrity or confidentiality"
                        ));
                    }
                }
            }
            "nec" => {
                nec = match value.as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    other => return Err(format!("nec={other}: expected 1 or 0")),
                }
            }
            _ => return Err(format!("unknown or empty query parameter {key:?}")),
        }
    }
    Ok(Auth::Gssapi {
        service,
        protection,
        nec,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: Proxy = "socks5h://al%3Ace:p%40ss@proxy.example:1081"
            .parse()
            .unwrap();
        assert_eq!(u.version, Version::Socks5);
        assert!(u.remote_dns);
        assert_eq!(u.host, "proxy.example");
        assert_eq!(u.port, 1081);
        assert_eq!(u.auth, Auth::password("al:ce", "p@ss"));
        let u: Proxy = "socks4://[::1]:1080".parse().unwrap();
        assert_eq!(
            (u.version, u.remote_dns, u.host.as_str(), u.port),
            (Version::Socks4, false, "::1", 1080)
        );
        assert_eq!(u.to_string(), "socks4://[::1]:1080");
        let u: Proxy = "socks4a://127.0.0.1".parse().unwrap();
        assert_eq!(
            (u.version, u.remote_dns, u.port),
            (Version::Socks4a, true, 1080)
        );
        let u: Proxy = "SOCKS5://h:1/".parse().unwrap();
        assert!(!u.remote_dns);
        assert!("http://h:1".parse::<Proxy>().is_err());
        assert!("socks5://h:x".parse::<Proxy>().is_err());
        assert!("socks5://:1".parse::<Proxy>().is_err());
        let u: Proxy = "socks5h+tls://proxy.example:1443".parse().unwrap();
        assert!(u.tls && u.remote_dns);
        assert_eq!((u.host.as_str(), u.port), ("proxy.example", 1443));
        assert_eq!(u.to_string(), "socks5h+tls://proxy.example:1443");
        assert!(!"socks5h://h:1".parse::<Proxy>().unwrap().tls);
        assert!("socks5+tcp://h:1".parse::<Proxy>().is_err());
        let u: Proxy = "socks5+gssapi://h:1".parse().unwrap();
        assert_eq!(
            u.auth,
            Auth::Gssapi {
                service: "rcmd".into(),
                protection: ProtectionLevel::Confidentiality,
                nec: false
            }
        );
        assert!(!u.remote_dns && !u.tls);
        assert_eq!(
            u.to_string(),
            "socks5+gssapi://h:1?service=rcmd&protection=confidentiality"
        );
        let u: Proxy = "socks5h+gssapi+tls://h:1?service=socks%2Fh%40R&protection=none&nec=1"
            .parse()
            .unwrap();
        assert!(u.tls && u.remote_dns);
        assert_eq!(
            u.to_string(),
            "socks5h+gssapi+tls://h:1?service=socks/h@R&protection=none&nec=1"
        );
        assert_eq!(u.to_string().parse::<Proxy>().unwrap(), u);
        for bad in [
            "socks5+gssapi://h:1?protection=selective",
            "socks5+gssapi://h:1?servce=x",
            "socks5+gssapi://u:p@h:1",
            "socks4a+gssapi://h:1",
            "socks5://h:1?service=rcmd",
        ] {
            assert!(bad.parse::<Proxy>().is_err(), "{bad}");
        }
        // The password never shows in Debug or Display.
        let u: Proxy = "socks5://u:secret@h:1".parse().unwrap();
        assert!(!format!("{u:?}").contains("secret"));
        assert_eq!(u.to_string(), "socks5://u@h:1");
    }
}
