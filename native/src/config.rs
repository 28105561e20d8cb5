//! The configuration file (TOML) and the effective configuration of `serve`.
//!
//! Every `serve` flag has a key here (`listen`, `users`, `allow_open`, `log_format`,
//! `metrics`); flags given on the command line override the file. Unknown keys are errors, and
//! every error names the file, line and column.
//!
//! ```toml
//! listen = ["0.0.0.0:1080", "[::]:1080"]
//! users = "/etc/socksgate/users"
//! log_format = "json"
//!
//! [timeouts]
//! handshake = 10
//! connect = 10
//!
//! [[rule]]
//! action = "deny"
//! to = ["10.0.0.0/8"]
//! ```

use core::fmt::Write as _;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use socksgate_core::family::AddressFamily;

use crate::cli::{LogFormat, ServeArgs};

/// The default listener: loopback only, so a bare `socksgate serve` is never an open proxy.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1080";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (the message shows the line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and a snippet.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The configuration would run an open proxy on a non-loopback address.
    #[error("{0}")]
    OpenProxy(String),
    /// A setting that is recognised but not implemented yet.
    #[error("{0}")]
    Unsupported(String),
}

impl ConfigError {
    /// [`ConfigError::Invalid`] at byte `span.start` of `text`, the contents of `path`.
    pub fn at(text: &str, path: &Path, span: core::ops::Range<usize>, message: String) -> Self {
        let (line, column) = line_column(text, span.start);
        Self::Invalid {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    }
}

/// Timeouts, in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// From accept to the end of the SOCKS handshake (the request).
    pub handshake: u64,
    /// Resolving and connecting to a CONNECT destination.
    pub connect: u64,
    /// Waiting for the inbound peer of a BIND.
    pub bind: u64,
    /// An idle UDP association (no datagram in either direction) is closed after this.
    pub udp_idle: u64,
    /// A relayed TCP session (CONNECT, BIND) with no byte in either direction for this long is
    /// closed; 0 = never.
    pub tcp_idle: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: 10,
            connect: 10,
            bind: 120,
            udp_idle: 300,
            tcp_idle: 0,
        }
    }
}

impl Timeouts {
    /// `handshake` as a duration.
    pub fn handshake(&self) -> Duration {
        Duration::from_secs(self.handshake)
    }
    /// `connect` as a duration.
    pub fn connect(&self) -> Duration {
        Duration::from_secs(self.connect)
    }
    /// `bind` as a duration.
    pub fn bind(&self) -> Duration {
        Duration::from_secs(self.bind)
    }
    /// `tcp_idle` as a duration; `None` when off.
    pub fn tcp_idle(&self) -> Option<Duration> {
        (self.tcp_idle > 0).then(|| Duration::from_secs(self.tcp_idle))
    }
    /// `udp_idle` as a duration.
    pub fn udp_idle(&self) -> Duration {
        Duration::from_secs(self.udp_idle)
    }
}

/// BIND settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BindSettings {
    /// Accept the inbound connection from any address, not only the one the client named
    /// (RFC 1928 says the server should check it; some clients send 0.0.0.0).
    pub any_peer: bool,
}

/// `[access]`: destination safety beyond the rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSettings {
    /// Refuse destinations on this host and its links — loopback, link-local (the cloud
    /// metadata service 169.254.169.254), unspecified, multicast and the host's own addresses
    /// — unless an allow rule names them by address. Unset: on for connections accepted on a
    /// non-loopback listener, off on loopback ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protect_local_destinations: Option<bool>,
}

impl AccessSettings {
    /// Whether sessions accepted on `local` have protected destinations.
    pub fn protects(&self, local: IpAddr) -> bool {
        self.protect_local_destinations
            .unwrap_or_else(|| !local.to_canonical().is_loopback())
    }

    /// What `check-config` says about it: a TOML comment line.
    pub fn describe(&self) -> &'static str {
        match self.protect_local_destinations {
            None => {
                "# protected destinations: on for non-loopback listeners, off on loopback ones \
                 (loopback, link-local incl. 169.254.169.254, unspecified, multicast, this \
                 host's addresses; an allow rule naming an address by CIDR re-opens it)\n"
            }
            Some(true) => {
                "# protected destinations: on for every listener (loopback, link-local incl. \
                 169.254.169.254, unspecified, multicast, this host's addresses; an allow rule \
                 naming an address by CIDR re-opens it)\n"
            }
            Some(false) => {
                "# protected destinations: off (clients may reach this host's own services and \
                 the link-local metadata service)\n"
            }
        }
    }
}

/// UDP ASSOCIATE settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpSettings {
    /// The address advertised in the UDP ASSOCIATE reply instead of the relay socket's own
    /// (for a server behind NAT, or a fleet node behind a TCP balancer). The port is always
    /// the relay socket's, which is bound to this address when it is one of the host's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<IpAddr>,
    /// Local ports for relay sockets (`"40000-40999"`), so a firewall or NAT can forward a
    /// known range; default: any ephemeral port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Spanned<String>>,
    /// After a datagram, the relay thread that carried it keeps polling its sockets without
    /// sleeping for this long (`"200us"`; `"0"` or unset: off), so that the next datagram
    /// finds it awake. At most [`MAX_BUSY_POLL`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_poll: Option<Spanned<String>>,
}

/// The longest `[udp] busy_poll`: it is meant to bridge the gaps between the datagrams of a
/// flow, not its pauses.
pub const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

/// A `[udp] busy_poll` value: a duration with its unit, at most [`MAX_BUSY_POLL`].
fn parse_busy_poll(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text).map_err(|e| {
        format!("[udp] busy_poll {text:?}: {e}; expected a duration such as \"200us\" (\"0\": off)")
    })?;
    if window > MAX_BUSY_POLL {
        return Err(format!(
            "[udp] busy_poll {text:?}: at most \"1s\" (it keeps a core busy that long after \
             each datagram)"
        ));
    }
    Ok(window)
}

impl UdpSettings {
    /// `busy_poll` as a duration (zero: off, as when it is unset or invalid, which
    /// [`Config::parse`] refuses).
    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
            .as_ref()
            .and_then(|b| parse_busy_poll(b.get_ref()).ok())
            .unwrap_or_default()
    }

    /// The relay port range, if configured and valid.
    pub fn port_range(&self) -> Option<(u16, u16)> {
        let text = self.ports.as_ref()?;
        let range: socksgate_core::rules::PortRange = text.get_ref().parse().ok()?;
        Some((range.start(), range.end()))
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Let the request through.
    #[default]
    Allow,
    /// Refuse it (reply 2, "connection not allowed by ruleset").
    Deny,
}

/// One `[[rule]]`: every present field must match; absent fields match anything.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What to do when the rule matches.
    pub action: RuleAction,
    /// Client addresses (CIDR: `10.0.0.0/8`, `::1/128`, or a single IP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Spanned<String>>,
    /// Destinations: CIDR, `example.com` (exactly), `.example.com` (the domain and below).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Spanned<String>>,
    /// Destination ports: `443` or `8000-8999`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Spanned<String>>,
    /// Commands: `connect`, `bind`, `udp_associate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Spanned<String>>,
    /// Authenticated user names (RFC 1929) or SOCKS4 user ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Spanned<String>>,
    /// For an allow rule: send matching CONNECT requests through this `[[upstream]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Spanned<String>>,
    /// For an allow rule: matching sessions leave by this `[[egress]]` profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Spanned<String>>,
    /// For an allow rule: the address family for names it lets through (instead of the
    /// top-level `address_family`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_family: Option<Spanned<FamilySetting>>,
}

/// An address family for names, as the file spells it: `prefer_ipv6`, `prefer_ipv4`,
/// `ipv4_only`, `ipv6_only` (the core's [`AddressFamily`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct FamilySetting(pub AddressFamily);

impl TryFrom<String> for FamilySetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
            .map(Self)
            .map_err(|e| format!("address_family {s:?}: {e}"))
    }
}

impl From<FamilySetting> for String {
    fn from(f: FamilySetting) -> Self {
        f.0.as_str().to_owned()
    }
}

/// One `[[auth]]`: how clients from `from` (any when empty) connected to one of `listeners`
/// (any when empty) authenticate. First match wins; unmatched clients use the default
/// (a password when a users file is set, otherwise none).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Client networks (CIDR or single addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Spanned<String>>,
    /// Listening addresses (`"0.0.0.0:1080"` matches every IPv4 address on port 1080).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Spanned<String>>,
    /// `["none"]` (SOCKS5 without authentication, and SOCKS4 unless `socks4 = false`) or
    /// `["password"]` (RFC 1929 against the users file; SOCKS4 refused).
    pub methods: Spanned<Vec<Spanned<String>>>,
}

/// One `[[upstream]]`: a SOCKS proxy that rules can chain CONNECT requests through.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name rules use (`upstream = "corp"`).
    pub name: String,
    /// `socks5://`, `socks5h://`, `socks4://` or `socks4a://`, with `user:pass@` if needed.
    /// `check-config` shows the password as `***`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: Spanned<String>,
    /// Send a PROXY protocol v2 header (the session's client and the address it reached us
    /// on) before the SOCKS greeting, for an upstream whose listener takes them.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// For a `+tls` URL: the CA certificates (PEM) that the upstream's certificate must
    /// chain to; the system's trust store when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// For a `+tls` URL to an upstream that asks for client certificates: our certificate
    /// chain (PEM), with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// The private key (PEM) of `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// One `[[tls]]`: listeners that speak SOCKS inside TLS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Listen addresses (as written in `listen`) that take TLS.
    pub listeners: Vec<Spanned<SocketAddr>>,
    /// The server's certificate chain (PEM), leaf first.
    pub certificate: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to: enables mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether every client must present a certificate.
    #[serde(default)]
    pub client_certificate: ClientCertificate,
}

/// Whether a `[[tls]]` listener with a `client_ca` requires client certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificate {
    /// Every client presents a certificate that chains to `client_ca` (default).
    #[default]
    Required,
    /// A client may present one (it must then chain to `client_ca`) or none.
    Optional,
}

/// One `[[proxy_protocol]]`: listeners behind a load balancer that puts a PROXY protocol
/// header (v1 or v2) in front of each connection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Listen addresses (as written in `listen`) that take PROXY headers.
    pub listeners: Vec<Spanned<SocketAddr>>,
    /// The balancers' networks (CIDR or single addresses): only their headers are believed.
    pub from: Vec<Spanned<String>>,
    /// Every connection must come from `from` with a header (default). `false`: sources in
    /// `from` may send one, other clients connect directly and a header from them is refused.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// A per-message protection level of RFC 1961 §4, as `[gssapi] protection` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtectionLevel {
    /// No per-message protection after authentication: the relay is plain TCP (what curl
    /// supports).
    None,
    /// Every message after authentication is a GSS-API wrap token with an integrity check.
    Integrity,
    /// Every message after authentication is encrypted and integrity-checked.
    Confidentiality,
}

impl ProtectionLevel {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Integrity => "integrity",
            Self::Confidentiality => "confidentiality",
        }
    }
}

/// Which method a client that offers both GSS-API and username/password gets, where both
/// are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PreferredMethod {
    /// GSS-API (method 1; default: no password crosses the network).
    #[default]
    Gssapi,
    /// Username/password (method 2).
    Password,
}

/// `[gssapi]`: GSS-API/Kerberos authentication (RFC 1961), offered when present.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GssapiConfig {
    /// The keytab file with the service's keys (relative: to the config file's directory).
    pub keytab: Spanned<PathBuf>,
    /// The one service principal accepted (`rcmd/proxy.example.com@EXAMPLE.COM`, or without
    /// the realm for any realm); unset: any principal in the keytab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Spanned<String>>,
    /// The protection levels the server grants; it grants the strongest one listed that does
    /// not exceed what the client asks for.
    #[serde(default = "default_protection")]
    pub protection: Spanned<Vec<ProtectionLevel>>,
    /// Accept the NEC reference implementation's form of the protection-level exchange
    /// (unprotected octets, as curl's `--socks5-gssapi-nec` sends), besides RFC 1961's
    /// protected form.
    #[serde(default = "yes")]
    pub accept_nec: bool,
    /// The method for a client that offers both GSS-API and a password where both are
    /// accepted.
    #[serde(default)]
    pub prefer: PreferredMethod,
}

fn default_protection() -> Spanned<Vec<ProtectionLevel>> {
    Spanned::new(
        0..0,
        vec![ProtectionLevel::Integrity, ProtectionLevel::Confidentiality],
    )
}

impl GssapiConfig {
    /// The granted levels, as a set.
    pub fn grants(&self, level: ProtectionLevel) -> bool {
        self.protection.get_ref().contains(&level)
    }

    /// `protection` names at least one level, each once; `principal` looks like a principal.
    fn check(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let levels = self.protection.get_ref();
        if levels.is_empty() {
            return Err(ConfigError::at(
                text,
                path,
                self.protection.span(),
                "[gssapi] protection is empty: expected one or more of \"none\", \"integrity\", \"confidentiality\"".into(),
            ));
        }
        let mut sorted = levels.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != levels.len() {
            return Err(ConfigError::at(
                text,
                path,
                self.protection.span(),
                "[gssapi] protection names a level twice".into(),
            ));
        }
        if let Some(p) = &self.principal {
            let name = p.get_ref();
            let (service, realm) = name.split_once('@').unwrap_or((name, "x"));
            if service.is_empty()
                || realm.is_empty()
                || realm.contains('@')
                || name.contains(char::is_whitespace)
            {
                return Err(ConfigError::at(
                    text,
                    path,
                    p.span(),
                    format!(
                        "[gssapi] principal {name:?}: expected a service principal such as \"rcmd/proxy.example.com@EXAMPLE.COM\" or \"rcmd/proxy.example.com\""
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The URL with the password of its `user:pass@` part replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = url.get(scheme_end..).unwrap_or_default();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or_default();
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            url.get(..scheme_end).unwrap_or_default(),
            rest.get(..colon).unwrap_or_default(),
            rest.get(at..).unwrap_or_default()
        ),
        _ => url.to_owned(),
    }
}

fn serialize_redacted_url<S: serde::Serializer>(
    url: &Spanned<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.get_ref()))
}

/// The whole file; also the effective configuration after flags are applied.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Users file; when set, username/password authentication is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<PathBuf>,
    /// Accept running as an open proxy on a non-loopback address.
    pub allow_open: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Prometheus metrics listener (`GET /metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Switch to this user after opening the listeners (`--user`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Accept SOCKS4 and SOCKS4a requests (they carry no password).
    pub socks4: bool,
    /// Action when no rule matches.
    pub default_action: RuleAction,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// BIND settings.
    pub bind: BindSettings,
    /// Destination safety (`[access]`).
    pub access: AccessSettings,
    /// UDP ASSOCIATE settings.
    pub udp: UdpSettings,
    /// Session limits.
    pub limits: crate::limits::LimitSettings,
    /// Seconds that SIGTERM/SIGINT wait for open sessions to end after listeners close.
    pub drain_timeout: u64,
    /// Set SO_REUSEPORT on the listeners (several processes on one port).
    pub reuse_port: bool,
    /// Listeners behind load balancers that send PROXY protocol headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy_protocol: Vec<ProxyProtocolConfig>,
    /// The address family for names (a rule's own `address_family` wins).
    pub address_family: FamilySetting,
    /// Authentication by client network and listener, first match wins.
    #[serde(rename = "auth", skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<AuthConfig>,
    /// Listeners that speak SOCKS over TLS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsConfig>,
    /// GSS-API/Kerberos authentication (`[gssapi]`), offered when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gssapi: Option<GssapiConfig>,
    /// Upstream proxies for rules with `upstream = "name"`.
    #[serde(rename = "upstream", skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamConfig>,
    /// The `[[egress]]` profile every session uses unless a listener, user or rule names
    /// another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_egress: Option<Spanned<String>>,
    /// Egress profiles: source addresses, interface and firewall mark of outbound sockets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<crate::egress::EgressConfig>,
    /// Access rules, first match wins.
    #[serde(rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// Bandwidth limits and quotas (`[[traffic]]`), first match applies.
    #[serde(rename = "traffic", skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<crate::traffic::TrafficConfig>,
    /// `traffic`, compiled by [`Config::parse`].
    #[serde(skip)]
    pub traffic_rules: crate::traffic::TrafficRules,
    /// The line of each rule in the file, when known (for log messages).
    #[serde(skip)]
    pub rule_lines: Vec<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            users: None,
            allow_open: false,
            log_format: LogFormat::Text,
            metrics: None,
            user: None,
            socks4: true,
            default_action: RuleAction::Allow,
            timeouts: Timeouts::default(),
            bind: BindSettings::default(),
            access: AccessSettings::default(),
            udp: UdpSettings::default(),
            limits: crate::limits::LimitSettings::default(),
            drain_timeout: 30,
            reuse_port: false,
            proxy_protocol: Vec::new(),
            address_family: FamilySetting::default(),
            auth: Vec::new(),
            tls: Vec::new(),
            gssapi: None,
            upstreams: Vec::new(),
            default_egress: None,
            egress: Vec::new(),
            rules: Vec::new(),
            rule_lines: Vec::new(),
            traffic: Vec::new(),
            traffic_rules: crate::traffic::TrafficRules::default(),
        }
    }
}

impl Config {
    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(text, path, false)
    }

    /// [`parse`](Self::parse), knowing whether a users file comes from the command line
    /// (`--users`), which `[[auth]]` methods = ["password"] needs if the file sets none.
    fn parse_with(text: &str, path: &Path, users_from_flag: bool) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // A relative users path is relative to the config file, not to the working directory.
        if let (Some(users), Some(dir)) = (&config.users, path.parent())
            && users.is_relative()
            && !dir.as_os_str().is_empty()
        {
            config.users = Some(dir.join(users));
        }
        config.resolve_tls_paths(path);
        if let Some(ports) = &config.udp.ports
            && config.udp.port_range().is_none_or(|(start, _)| start == 0)
        {
            return Err(ConfigError::at(
                text,
                path,
                ports.span(),
                format!(
                    "[udp] ports {:?}: expected a port or range such as \"40000-40999\" (not 0)",
                    ports.get_ref()
                ),
            ));
        }
        if let Some(busy_poll) = &config.udp.busy_poll
            && let Err(message) = parse_busy_poll(busy_poll.get_ref())
        {
            return Err(ConfigError::at(text, path, busy_poll.span(), message));
        }
        config.check_upstreams(text, path)?;
        config.check_proxy_protocol(text, path)?;
        config.check_tls(text, path)?;
        if let Some(g) = &config.gssapi {
            g.check(text, path)?;
        }
        crate::egress::check(&config, text, path)?;
        config
            .limits
            .check()
            .map_err(|e| ConfigError::at(text, path, e.span.clone(), e.to_string()))?;
        config.rule_lines = rule_lines(text);
        crate::access::compile(&config.rules, config.default_action, &config.rule_lines)
            .map_err(|e| e.locate(text, path))?;
        config.traffic_rules =
            crate::traffic::compile(&config.traffic).map_err(|e| e.locate(text, path))?;
        crate::authentication::compile(
            &config.auth,
            config.users.is_some() || users_from_flag,
            config.gssapi.is_some(),
            config.socks4,
        )
        .map_err(|e| e.locate(text, path))?;
        Ok(config)
    }

    /// Upstream URLs parse; rules name defined upstreams.
    fn check_upstreams(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |span, message| ConfigError::at(text, path, span, message);
        for u in &self.upstreams {
            if let Err(e) = u.url.get_ref().parse::<crate::client::Proxy>() {
                return Err(invalid(
                    u.url.span(),
                    format!("[[upstream]] {:?}: {e}", u.name),
                ));
            }
        }
        for r in &self.rules {
            if let Some(name) = &r.upstream {
                if !self.upstreams.iter().any(|u| &u.name == name.get_ref()) {
                    return Err(invalid(
                        name.span(),
                        format!(
                            "upstream {:?} is not defined by an [[upstream]]",
                            name.get_ref()
                        ),
                    ));
                }
                if r.action != RuleAction::Allow {
                    return Err(invalid(
                        name.span(),
                        "upstream is only meaningful on an allow rule".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The listeners of one `table` entry are listen addresses (when the file sets `listen`)
    /// and in no other entry of that table (`seen` collects them): else the span and why.
    fn check_listeners(
        &self,
        table: &str,
        listeners: &[Spanned<SocketAddr>],
        seen: &mut Vec<SocketAddr>,
    ) -> Result<(), (core::ops::Range<usize>, String)> {
        for l in listeners {
            let addr = *l.get_ref();
            if !self.listen.is_empty() && !self.listen.contains(&addr) {
                return Err((
                    l.span(),
                    format!("{table} listener {addr} is not in `listen`"),
                ));
            }
            if seen.contains(&addr) {
                return Err((
                    l.span(),
                    format!("listener {addr} is in more than one {table}"),
                ));
            }
            seen.push(addr);
        }
        Ok(())
    }

    /// `[[proxy_protocol]]`: networks parse, listeners are listen addresses, each at most once.
    fn check_proxy_protocol(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |span, message| ConfigError::at(text, path, span, message);
        let mut seen = Vec::new();
        for entry in &self.proxy_protocol {
            if entry.from.is_empty() || entry.listeners.is_empty() {
                let at = entry
                    .listeners
                    .first()
                    .map(Spanned::span)
                    .or_else(|| entry.from.first().map(Spanned::span))
                    .unwrap_or(0..0);
                return Err(invalid(
                    at,
                    "[[proxy_protocol]] needs `listeners` and `from` (the balancers' networks)"
                        .into(),
                ));
            }
            for net in &entry.from {
                if let Err(e) = net.get_ref().parse::<socksgate_core::rules::Cidr>() {
                    return Err(invalid(
                        net.span(),
                        format!("[[proxy_protocol]] from {:?}: {e}", net.get_ref()),
                    ));
                }
            }
            self.check_listeners("[[proxy_protocol]]", &entry.listeners, &mut seen)
                .map_err(|(span, message)| invalid(span, message))?;
        }
        Ok(())
    }

    /// Makes the `[[tls]]` and `[[upstream]]` file paths relative to the config file's
    /// directory, like `users`.
    fn resolve_tls_paths(&mut self, path: &Path) {
        let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return;
        };
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for t in &mut self.tls {
            fix(&mut t.certificate);
            fix(&mut t.key);
            t.client_ca.as_mut().map(fix);
        }
        for u in &mut self.upstreams {
            for p in [&mut u.ca, &mut u.certificate, &mut u.key] {
                p.as_mut().map(fix);
            }
        }
        if let Some(g) = &mut self.gssapi {
            fix(g.keytab.get_mut());
        }
    }

    /// `[[tls]]`: listeners are listen addresses, each at most once;
    /// `[[upstream]]`: `ca`, `certificate` and `key` only with a `+tls` URL, `certificate`
    /// and `key` together. (The files themselves are read by `tls::Listeners::load`.)
    fn check_tls(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |span, message| ConfigError::at(text, path, span, message);
        let mut seen = Vec::new();
        for entry in &self.tls {
            if entry.listeners.is_empty() {
                return Err(invalid(0..0, "[[tls]] needs `listeners`".into()));
            }
            self.check_listeners("[[tls]]", &entry.listeners, &mut seen)
                .map_err(|(span, message)| invalid(span, message))?;
        }
        for u in &self.upstreams {
            let tls = u
                .url
                .get_ref()
                .parse::<crate::client::Proxy>()
                .is_ok_and(|url| url.tls);
            let has_files = u.ca.is_some() || u.certificate.is_some() || u.key.is_some();
            if has_files && !tls {
                return Err(invalid(
                    u.url.span(),
                    format!(
                        "[[upstream]] {:?}: `ca`, `certificate` and `key` need a socks5+tls:// or socks5h+tls:// URL",
                        u.name
                    ),
                ));
            }
            if u.certificate.is_some() != u.key.is_some() {
                return Err(invalid(
                    u.url.span(),
                    format!(
                        "[[upstream]] {:?}: `certificate` and `key` go together",
                        u.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The upstream named `name`, parsed.
    pub fn upstream(&self, name: &str) -> Option<crate::client::Proxy> {
        let u = self.upstreams.iter().find(|u| u.name == name)?;
        u.url.get_ref().parse().ok()
    }

    /// Whether the upstream named `name` is sent a PROXY protocol header.
    pub fn upstream_takes_proxy_header(&self, name: &str) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.name == name && u.proxy_protocol)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, false)
    }

    fn load_with(path: &Path, users_from_flag: bool) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_with(&text, path, users_from_flag)
    }

    /// The effective configuration of `serve`: the file (if any), then the flags.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::load_with(path, args.users.is_some())?,
            None => Self::default(),
        };
        if !args.listen.is_empty() {
            config.listen.clone_from(&args.listen);
        }
        if args.users.is_some() {
            config.users.clone_from(&args.users);
        }
        config.allow_open |= args.allow_open;
        if let Some(format) = args.log_format {
            config.log_format = format;
        }
        if args.metrics.is_some() {
            config.metrics = args.metrics;
        }
        if args.user.is_some() {
            config.user.clone_from(&args.user);
        }
        config.finish();
        Ok(config)
    }

    /// Fills in defaults that depend on other settings (the default listener).
    pub fn finish(&mut self) {
        if self.listen.is_empty() {
            self.listen.push(
                DEFAULT_LISTEN
                    .parse()
                    .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1080))),
            );
        }
    }

    /// Whether authentication is required by default: username/password (a users file),
    /// GSS-API (`[gssapi]`), or both.
    pub fn requires_auth(&self) -> bool {
        self.users.is_some() || self.gssapi.is_some()
    }

    /// Whether the `[[tls]]` entry of `listener` requires client certificates: its clients
    /// are authenticated.
    pub fn requires_client_certificate(&self, listener: SocketAddr) -> bool {
        self.tls.iter().any(|t| {
            t.client_ca.is_some()
                && t.client_certificate == ClientCertificate::Required
                && t.listeners.iter().any(|l| *l.get_ref() == listener)
        })
    }

    /// Refuses to run an open proxy by accident.
    ///
    /// A listener on a non-loopback address where some clients need no authentication — no
    /// users file, or an `[[auth]]` entry with `methods = ["none"]` for clients beyond this
    /// host's loopback — is open unless the rules deny by default and explicitly allow
    /// something (then the operator has said who may use it), or it is a `[[tls]]` listener
    /// that requires client certificates. `allow_open` accepts the risk.
    pub fn check_open_proxy(&self) -> Result<(), ConfigError> {
        if self.allow_open {
            return Ok(());
        }
        let restricted = self.default_action == RuleAction::Deny
            && self.rules.iter().any(|r| r.action == RuleAction::Allow);
        if restricted {
            return Ok(());
        }
        let exposed: Vec<String> = self
            .listen
            .iter()
            .filter(|a| {
                !a.ip().is_loopback()
                    && self.unauthenticated_on(**a)
                    && !self.requires_client_certificate(**a)
            })
            .map(ToString::to_string)
            .collect();
        if exposed.is_empty() {
            return Ok(());
        }
        let why = if self.requires_auth() {
            "an [[auth]] entry letting clients in without authentication"
        } else {
            "no authentication"
        };
        Err(ConfigError::OpenProxy(format!(
            "refusing to start: listening on {} (not loopback) with {why} and no \
             allow rule would make an open proxy that anyone who can reach it may use. \
             Add users (--users FILE, see `socksgate passwd`), or rules with \
             default_action = \"deny\" and an allow rule in --config, or pass --allow-open \
             if an open proxy is really intended",
            exposed.join(", ")
        )))
    }

    /// Whether some client beyond this host's loopback may use `listener` without
    /// authenticating: with no users file, everyone (`[[auth]]` can only add "none");
    /// otherwise whoever an `[[auth]]` entry with "none" may match there.
    fn unauthenticated_on(&self, listener: SocketAddr) -> bool {
        if !self.requires_auth() {
            return true;
        }
        self.auth.iter().any(|a| {
            let none = a.methods.get_ref().iter().any(|m| m.get_ref() == "none");
            let here = a.listeners.is_empty()
                || a.listeners.iter().any(|l| {
                    l.get_ref()
                        .parse::<SocketAddr>()
                        .is_ok_and(|l| may_accept_for(listener, l))
                });
            let remote = a.from.is_empty()
                || a.from.iter().any(|f| {
                    f.get_ref()
                        .parse::<socksgate_core::rules::Cidr>()
                        .is_ok_and(|net| !is_loopback_net(net))
                });
            none && here && remote
        })
    }

    /// Rejects settings that cannot work with the effective configuration: egress profiles
    /// whose listeners are not listened on, or with a mark when running as another user.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        crate::egress::check_effective(self)
    }

    /// The effective configuration as TOML (what `check-config` prints).
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# effective configuration\n");
        match toml::to_string_pretty(self) {
            Ok(text) => out.push_str(&text),
            Err(e) => {
                let _ = writeln!(out, "# cannot display: {e}");
            }
        }
        out
    }
}

/// Whether connections accepted on `listener` may carry the local address `entry` (an
/// `[[auth]]` listener): the same port, and the same address or either one unspecified.
fn may_accept_for(listener: SocketAddr, entry: SocketAddr) -> bool {
    let (a, b) = (listener.ip().to_canonical(), entry.ip().to_canonical());
    listener.port() == entry.port()
        && (a == b || ((a.is_unspecified() || b.is_unspecified()) && a.is_ipv4() == b.is_ipv4()))
}

/// Whether every address of `net` is loopback (127.0.0.0/8, ::1).
fn is_loopback_net(net: socksgate_core::rules::Cidr) -> bool {
    match net.addr() {
        IpAddr::V4(a) => net.prefix_len() >= 8 && a.is_loopback(),
        IpAddr::V6(a) => net.prefix_len() == 128 && a.is_loopback(),
    }
}

/// The lines of the `[[rule]]` headers, in order.
fn rule_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim();
            l.strip_prefix("[[")
                .and_then(|l| l.split(']').next())
                .is_some_and(|name| name.trim() == "rule")
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_default() {
        let mut c = parse("").unwrap();
        c.finish();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:1080".parse::<SocketAddr>().unwrap()]
        );
        assert!(!c.requires_auth());
        assert_eq!(c.timeouts.handshake, 10);
        assert!(c.check_open_proxy().is_ok());
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
listen = ["0.0.0.0:1080", "[::]:1080"]
users = "/etc/socksgate/users"
log_format = "json"
socks4 = false
default_action = "deny"

[timeouts]
handshake = 5
connect = 7

[bind]
any_peer = true

[udp]
public_address = "203.0.113.9"
ports = "40000-40999"

[[rule]]
action = "allow"
from = ["10.0.0.0/8"]
ports = ["443", "8000-8999"]
commands = ["connect"]
users = ["alice"]
"#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[1].is_ipv6());
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(!c.socks4);
        assert_eq!(c.timeouts.connect, 7);
        assert_eq!(c.timeouts.bind, 120);
        assert!(c.bind.any_peer);
        assert_eq!(c.udp.public_address, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(c.udp.port_range(), Some((40000, 40999)));
        let e = parse("[udp]\nports = \"9-1\"\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml:2:9"), "{e}");
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].users[0].get_ref(), "alice");
    }

    #[test]
    fn udp_busy_poll_is_a_duration_of_at_most_a_second() {
        assert_eq!(Config::default().udp.busy_poll(), Duration::ZERO);
        for (text, window) in [
            ("\"200us\"", Duration::from_micros(200)),
            ("\"1ms\"", Duration::from_millis(1)),
            ("\"0\"", Duration::ZERO),
            ("\"1s\"", Duration::from_secs(1)),
        ] {
            let c = parse(&format!("[udp]\nbusy_poll = {text}\n")).unwrap();
            assert_eq!(c.udp.busy_poll(), window, "{text}");
        }
        for (text, reason) in [
            ("\"200\"", "time unit needed"),
            ("\"fast\"", "expected a duration such as \"200us\""),
            ("\"2s\"", "at most \"1s\""),
        ] {
            let e = parse(&format!("\n[udp]\nbusy_poll = {text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("test.toml:3:13: [udp] busy_poll"), "{e}");
            assert!(e.contains(reason), "{e}");
        }
        let e = parse("[udp]\nbusy_poll = 200\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn syntax_error_points_at_the_line() {
        let err = parse("listen = [\"127.0.0.1:1080\"]\nallow_open = yes\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err = parse("\n\nlistn = []\n").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn proxy_protocol_entries_are_checked_with_their_line() {
        let head = "listen = [\"0.0.0.0:1080\", \"0.0.0.0:1081\"]\n\n[[proxy_protocol]]\n";
        let ok = parse(&format!(
            "{head}listeners = [\"0.0.0.0:1080\"]\nfrom = [\"10.0.0.0/24\", \"::1\"]\n"
        ))
        .unwrap();
        assert!(ok.proxy_protocol[0].required, "required by default");
        assert!(ok.to_toml().contains("[[proxy_protocol]]"));
        for (body, line, what) in [
            (
                "listeners = [\"0.0.0.0:1080\"]\nfrom = [\"10.0.0.1/8\"]\n",
                5,
                "bits set beyond",
            ),
            (
                "listeners = [\"0.0.0.0:1080\"]\nfrom = [\"ten\"]\n",
                5,
                "from \"ten\"",
            ),
            (
                "listeners = [\"0.0.0.0:1082\"]\nfrom = [\"10.0.0.1\"]\n",
                4,
                "not in `listen`",
            ),
            (
                "listeners = [\"0.0.0.0:1080\"]\nfrom = []\n",
                4,
                "needs `listeners` and `from`",
            ),
            (
                "listeners = [\"0.0.0.0:1080\"]\nfrom = [\"10.0.0.1\"]\n[[proxy_protocol]]\nlisteners = [\"0.0.0.0:1080\"]\nfrom = [\"10.0.0.2\"]\n",
                7,
                "more than one",
            ),
        ] {
            let err = parse(&format!("{head}{body}")).unwrap_err().to_string();
            assert!(err.starts_with(&format!("test.toml:{line}:")), "{err}");
            assert!(err.contains(what), "{err}");
        }
    }

    #[test]
    fn bad_address_is_an_error() {
        let err = parse("listen = [\"localhost:99999\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen = [\"127.0.0.2:1080\"]\nusers = \"users\"\n").unwrap();
        let args = ServeArgs {
            listen: vec!["127.0.0.3:1081".parse().unwrap()],
            config: Some(path),
            log_format: Some(LogFormat::Json),
            ..ServeArgs::default()
        };
        let c = Config::from_args(&args).unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.3:1081".parse::<SocketAddr>().unwrap()]
        );
        // Relative to the config file's directory.
        assert_eq!(c.users.as_deref(), Some(dir.path().join("users").as_path()));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn user_key_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "user = \"nobody\"\n").unwrap();
        let mut args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let c = Config::from_args(&args).unwrap();
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert!(c.to_toml().contains("user = \"nobody\""));
        args.user = Some("daemon".into());
        assert_eq!(
            Config::from_args(&args).unwrap().user.as_deref(),
            Some("daemon")
        );
    }

    fn with_listen(addr: &str) -> Config {
        Config {
            listen: vec![addr.parse().unwrap()],
            ..Config::default()
        }
    }

    #[test]
    fn open_proxy_check() {
        // Loopback, v4 and v6: fine.
        assert!(with_listen("127.0.0.1:1080").check_open_proxy().is_ok());
        assert!(with_listen("[::1]:1080").check_open_proxy().is_ok());
        // Wildcard or public without auth: refused, and the message says why.
        for addr in ["0.0.0.0:1080", "[::]:1080", "192.0.2.1:1080"] {
            let err = with_listen(addr)
                .check_open_proxy()
                .unwrap_err()
                .to_string();
            assert!(err.contains("open proxy"), "{err}");
            assert!(err.contains("--allow-open"), "{err}");
        }
        // --allow-open.
        let mut c = with_listen("0.0.0.0:1080");
        c.allow_open = true;
        assert!(c.check_open_proxy().is_ok());
        // Users.
        let mut c = with_listen("0.0.0.0:1080");
        c.users = Some("u".into());
        assert!(c.check_open_proxy().is_ok());
        // Deny by default plus an allow rule.
        let mut c = parse(
            "listen = [\"0.0.0.0:1080\"]\ndefault_action = \"deny\"\n[[rule]]\naction = \"allow\"\nfrom = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert!(c.check_open_proxy().is_ok());
        // Allow by default with only deny rules is still open.
        c.default_action = RuleAction::Allow;
        c.rules[0].action = RuleAction::Deny;
        assert!(c.check_open_proxy().is_err());
        // One exposed listener among loopback ones is enough to refuse.
        let mut c = with_listen("127.0.0.1:1080");
        c.listen.push("0.0.0.0:1081".parse().unwrap());
        assert!(c.check_open_proxy().is_err());
    }

    #[test]
    fn open_proxy_check_counts_auth_entries_without_a_password() {
        let check = |text: &str| {
            parse(&format!("users = \"u\"\n{text}"))
                .unwrap()
                .check_open_proxy()
                .map_err(|e| e.to_string())
        };
        let public = "listen = [\"0.0.0.0:1080\"]\n";
        // A password for everyone: fine.
        assert!(check(public).is_ok());
        // Some networks without one, on a public listener: open, unless the rules restrict
        // who may use it or allow_open says so.
        let lan = "[[auth]]\nfrom = [\"10.0.0.0/8\"]\nmethods = [\"none\"]\n";
        let e = check(&format!("{public}{lan}")).unwrap_err();
        assert!(e.contains("[[auth]]") && e.contains("0.0.0.0:1080"), "{e}");
        assert!(check(&format!("allow_open = true\n{public}{lan}")).is_ok());
        assert!(
            check(&format!(
                "{public}default_action = \"deny\"\n{lan}[[rule]]\naction = \"allow\"\nfrom = [\"10.0.0.0/8\"]\n"
            ))
            .is_ok()
        );
        // Everyone without a password ("from" left out) is open too.
        assert!(check(&format!("{public}[[auth]]\nmethods = [\"none\"]\n")).is_err());
        // Loopback clients only, or a "none" entry for a loopback listener: not open.
        assert!(
            check(&format!(
                "{public}[[auth]]\nfrom = [\"127.0.0.0/8\", \"::1\"]\nmethods = [\"none\"]\n"
            ))
            .is_ok()
        );
        assert!(
            check(
                "listen = [\"0.0.0.0:1080\", \"127.0.0.1:1081\"]\n[[auth]]\nlisteners = [\"127.0.0.1:1081\"]\nmethods = [\"none\"]\n"
            )
            .is_ok()
        );
        // ...but one on the public listener's port is.
        assert!(
            check(&format!(
                "{public}[[auth]]\nlisteners = [\"192.0.2.1:1080\"]\nmethods = [\"none\"]\n"
            ))
            .is_err()
        );
        // A "password" entry changes nothing; without users, [[auth]] cannot close it.
        assert!(check(&format!("{public}[[auth]]\nmethods = [\"password\"]\n")).is_ok());
        let c = parse(&format!("{public}[[auth]]\nmethods = [\"none\"]\n")).unwrap();
        assert!(c.check_open_proxy().is_err());
    }

    #[test]
    fn limits_and_families_bad_values_name_file_line_and_column() {
        for (text, needle) in [
            (
                "[limits]\nsessions_per_second_per_client = 0\n",
                "test.toml:2:34: [limits] sessions_per_second_per_client = 0",
            ),
            (
                "[limits]\nmax_sessions = 3\nsessions_burst_per_user = 0\n",
                "test.toml:3:27:",
            ),
            (
                "[limits]\n\nclient_prefix_ipv6 = 129\n",
                "test.toml:3:22: [limits] client_prefix_ipv6 = 129: expected a prefix length from 1 to 128",
            ),
            ("[limits]\nclient_prefix_ipv4 = 0\n", "test.toml:2:22:"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(needle), "{e} (wanted {needle})");
        }
        let e = parse("address_family = \"ipv5_only\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("ipv4_only"), "{e}");
    }

    #[test]
    fn new_keys_show_in_the_effective_configuration() {
        let mut c = parse(
            "address_family = \"ipv4_only\"\n[limits]\nsessions_per_second_per_client = 20\nsessions_per_second_per_user = 5\nsessions_burst_per_user = 10\n[[auth]]\nfrom = [\"10.0.0.0/8\"]\nmethods = [\"none\"]\n[[rule]]\naction = \"allow\"\naddress_family = \"prefer_ipv4\"\n",
        )
        .unwrap();
        c.finish();
        let text = c.to_toml();
        for key in [
            "address_family = \"ipv4_only\"",
            "sessions_per_second_per_client = 20",
            "sessions_burst_per_user = 10",
            "client_prefix_ipv4 = 32",
            "client_prefix_ipv6 = 64",
            "[[auth]]",
            "methods = [\"none\"]",
            "address_family = \"prefer_ipv4\"",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        let back = parse(&text).unwrap();
        assert_eq!(back.limits, c.limits);
        assert_eq!(back.auth, c.auth);
        assert_eq!(back.address_family, c.address_family);
        // The defaults show too.
        let text = parse("").unwrap().to_toml();
        assert!(text.contains("address_family = \"prefer_ipv6\""), "{text}");
    }

    #[test]
    fn gssapi_table_parses_checks_and_shows() {
        let mut c = parse(
            "[gssapi]\nkeytab = \"/etc/socksgate/socks.keytab\"\nprincipal = \"rcmd/proxy@EX.COM\"\nprotection = [\"none\", \"confidentiality\"]\naccept_nec = false\nprefer = \"password\"\n",
        )
        .unwrap();
        c.finish();
        let g = c.gssapi.as_ref().unwrap();
        assert!(g.grants(ProtectionLevel::None) && !g.grants(ProtectionLevel::Integrity));
        assert_eq!(g.prefer, PreferredMethod::Password);
        assert!(c.requires_auth());
        let text = c.to_toml();
        for key in [
            "[gssapi]",
            "keytab = \"/etc/socksgate/socks.keytab\"",
            "principal = \"rcmd/proxy@EX.COM\"",
            "protection = [\n    \"none\",\n    \"confidentiality\",\n]",
            "accept_nec = false",
            "prefer = \"password\"",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(parse(&text).unwrap().gssapi, c.gssapi);
        // Defaults: integrity and confidentiality, the NEC form accepted, GSS-API preferred.
        let mut c = parse("[gssapi]\nkeytab = \"k.keytab\"\n").unwrap();
        c.finish();
        let g = c.gssapi.as_ref().unwrap();
        assert_eq!(
            g.protection.get_ref(),
            &[ProtectionLevel::Integrity, ProtectionLevel::Confidentiality]
        );
        assert!(g.accept_nec && g.prefer == PreferredMethod::Gssapi);
        let text = c.to_toml();
        assert!(
            text.contains("accept_nec = true") && text.contains("prefer = \"gssapi\""),
            "{text}"
        );
        // A relative keytab is relative to the config file.
        let c = Config::parse(
            "[gssapi]\nkeytab = \"k.keytab\"\n",
            Path::new("/etc/sg/c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.gssapi.unwrap().keytab.get_ref(),
            Path::new("/etc/sg/k.keytab")
        );
        for (text, needle, why) in [
            ("[gssapi]\nprincipal = \"x/y\"\n", "test.toml", "keytab"),
            (
                "[gssapi]\nkeytab = \"k\"\nprotection = []\n",
                "test.toml:3:14",
                "empty",
            ),
            (
                "[gssapi]\nkeytab = \"k\"\nprotection = [\"none\", \"none\"]\n",
                "test.toml:3:14",
                "twice",
            ),
            (
                "[gssapi]\nkeytab = \"k\"\nprotection = [\"secret\"]\n",
                "test.toml",
                "confidentiality",
            ),
            (
                "[gssapi]\nkeytab = \"k\"\nprincipal = \"rcmd/x@\"\n",
                "test.toml:3:13",
                "service principal",
            ),
            (
                "[gssapi]\nkeytab = \"k\"\nprincipal = \"@EX.COM\"\n",
                "test.toml:3:13",
                "service principal",
            ),
            (
                "[gssapi]\nkeytab = \"k\"\nservice = \"rcmd\"\n",
                "test.toml",
                "unknown field",
            ),
            (
                "[gssapi]\nkeytab = \"k\"\nprefer = \"none\"\n",
                "test.toml",
                "gssapi",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(needle) && e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn password_entries_accept_a_users_file_from_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[[auth]]\nmethods = [\"password\"]\n").unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let e = Config::from_args(&args).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:12:", path.display())), "{e}");
        args.users = Some(dir.path().join("users"));
        assert!(Config::from_args(&args).is_ok());
    }

    #[test]
    fn effective_config_round_trips() {
        let mut c = parse(
            "default_action = \"deny\"\n[[rule]]\naction = \"allow\"\nfrom = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        c.finish();
        let text = c.to_toml();
        let back = parse(&text).unwrap();
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.rules.len(), 1);
        assert_eq!(back.rules[0].from[0].get_ref(), "10.0.0.0/8");
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn tls_listeners_that_require_client_certificates_are_not_open() {
        let tls =
            "[[tls]]\nlisteners = [\"192.0.2.1:1443\"]\ncertificate = \"c.pem\"\nkey = \"k.pem\"\n";
        let head = "listen = [\"192.0.2.1:1443\"]\n";
        let open = Config::parse(&format!("{head}{tls}"), Path::new("/etc/s/t.toml")).unwrap();
        assert!(open.check_open_proxy().is_err());
        assert_eq!(
            open.tls[0].key,
            PathBuf::from("/etc/s/k.pem"),
            "relative to the file"
        );
        let mtls = Config::parse(
            &format!("{head}{tls}client_ca = \"ca.pem\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(mtls.check_open_proxy().is_ok());
        let optional = Config::parse(
            &format!("{head}{tls}client_ca = \"ca.pem\"\nclient_certificate = \"optional\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(optional.check_open_proxy().is_err());
        let err = Config::parse(
            &format!("{head}{tls}client_certificate = \"maybe\"\n"),
            Path::new("t.toml"),
        );
        assert!(err.is_err());
        let err = Config::parse(
            "[[upstream]]\nname = \"u\"\nurl = \"socks5://127.0.0.1:1\"\nca = \"ca.pem\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.toml:3:") && err.contains("+tls"), "{err}");
    }

    #[test]
    fn upstream_passwords_are_redacted() {
        assert_eq!(
            redact_url("socks5h://bob:s3cret@proxy.example:1080"),
            "socks5h://bob:***@proxy.example:1080"
        );
        assert_eq!(redact_url("socks5://bob@h:1"), "socks5://bob@h:1");
        assert_eq!(redact_url("socks4://h:1"), "socks4://h:1");
        let c = Config::parse(
            "[[upstream]]\nname = \"u\"\nurl = \"socks5://a:pw@127.0.0.1:1\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let text = c.to_toml();
        assert!(
            text.contains("socks5://a:***@127.0.0.1:1") && !text.contains("pw@"),
            "{text}"
        );
        assert!(text.contains("proxy_protocol = false"), "{text}");
        assert!(!c.upstream_takes_proxy_header("u"));
        let c = Config::parse(
            "[[upstream]]\nname = \"u\"\nurl = \"socks5://127.0.0.1:1\"\nproxy_protocol = true\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.upstream_takes_proxy_header("u"));
        assert!(c.to_toml().contains("proxy_protocol = true"));
        let e = Config::parse(
            "[[upstream]]\nname = \"u\"\nurl = \"socks5://127.0.0.1:1\"\nproxy_protocol = 1\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 4"), "{e}");
    }
}
