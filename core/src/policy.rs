//! What a server allows: authentication, access rules, commands and time limits.
//!
//! A [`Policy`] is the whole of a front end's configuration that bears on the protocol. The
//! [session](crate::session) applies it; front ends only build it (from a config file, a
//! firmware's statics, a test's literals).
//!
//! [`Authentication`] is built so that a policy cannot require authentication and still let
//! SOCKS4 clients in: SOCKS4 cannot authenticate, so it is only ever accepted together with
//! SOCKS5's "no authentication".

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use crate::family::{AddressFamilies, AddressFamily};
use crate::rules::{Action, Cidr, CommandSet, ParseError, Rules};
use crate::wire::Method;
use crate::wire::gssapi::ProtectionLevel;

/// How clients prove who they are. SOCKS4/4a can be accepted only when nothing is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Authentication {
    /// Nothing required: SOCKS5 method 0 ("no authentication"), and SOCKS4/4a when `socks4`.
    None {
        /// Also accept SOCKS4 and SOCKS4a requests.
        socks4: bool,
    },
    /// Every client authenticates with one of the enabled SOCKS5 methods; SOCKS4/4a requests
    /// are refused (CD 91). With neither method enabled, every client is refused.
    Required {
        /// RFC 1929 username/password (method 2).
        password: bool,
        /// GSS-API (method 1, RFC 1961). Offer it only when the front end can accept a
        /// context (a keytab is configured); [`GssapiPolicy`] says how. When a client offers
        /// both enabled methods, [`GssapiPolicy::prefer`] picks one.
        gssapi: bool,
    },
}

impl Authentication {
    /// RFC 1929 username/password for every client; no SOCKS4.
    pub const PASSWORD: Self = Self::Required {
        password: true,
        gssapi: false,
    };

    /// Whether SOCKS5 `method` is accepted.
    pub const fn accepts(self, method: Method) -> bool {
        match (self, method) {
            (Self::None { .. }, Method::NoAuth) => true,
            (Self::Required { password, .. }, Method::UserPass) => password,
            (Self::Required { gssapi, .. }, Method::Gssapi) => gssapi,
            _ => false,
        }
    }

    /// Whether SOCKS4 and SOCKS4a requests are accepted: only when no authentication is
    /// required.
    pub const fn accepts_socks4(self) -> bool {
        matches!(self, Self::None { socks4: true })
    }

    /// Whether clients must authenticate.
    pub const fn is_required(self) -> bool {
        matches!(self, Self::Required { .. })
    }
}

impl Default for Authentication {
    /// No authentication, SOCKS4/4a and SOCKS5: what `socksgate serve` does with no flags.
    fn default() -> Self {
        Self::None { socks4: true }
    }
}

/// Which RFC 1961 §4 protection levels a server grants. The server grants the strongest
/// allowed level that does not exceed the client's request (selective counting as
/// confidentiality), and never grants selective itself: every message then gets the same
/// protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProtectionLevels {
    /// No per-message protection (level 0): what curl accepts.
    pub none: bool,
    /// Per-message integrity (level 1).
    pub integrity: bool,
    /// Per-message integrity and confidentiality (level 2).
    pub confidentiality: bool,
}

impl ProtectionLevels {
    /// Every level.
    pub const ALL: Self = Self {
        none: true,
        integrity: true,
        confidentiality: true,
    };

    /// Only `level` (nothing for selective or an unknown octet).
    pub const fn only(level: ProtectionLevel) -> Self {
        Self {
            none: matches!(level, ProtectionLevel::None),
            integrity: matches!(level, ProtectionLevel::Integrity),
            confidentiality: matches!(level, ProtectionLevel::Confidentiality),
        }
    }

    /// Whether `level` may be granted.
    pub const fn allows(self, level: ProtectionLevel) -> bool {
        match level {
            ProtectionLevel::None => self.none,
            ProtectionLevel::Integrity => self.integrity,
            ProtectionLevel::Confidentiality => self.confidentiality,
            ProtectionLevel::Selective | ProtectionLevel::Unknown(_) => false,
        }
    }

    /// The level to grant a client that asked for `requested`: the strongest allowed one
    /// not stronger than the request. `None` when there is none (or `requested` is not a
    /// known level): the server aborts.
    pub const fn grant(self, requested: ProtectionLevel) -> Option<ProtectionLevel> {
        let Some(asked) = requested.strength() else {
            return None;
        };
        if asked >= 2 && self.confidentiality {
            Some(ProtectionLevel::Confidentiality)
        } else if asked >= 1 && self.integrity {
            Some(ProtectionLevel::Integrity)
        } else if self.none {
            Some(ProtectionLevel::None)
        } else {
            None
        }
    }
}

impl Default for ProtectionLevels {
    /// [`ALL`](Self::ALL): the client's request decides.
    fn default() -> Self {
        Self::ALL
    }
}

/// Which of two enabled methods a client offering both gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MethodPreference {
    /// GSS-API (method 1) before username/password (method 2).
    #[default]
    Gssapi,
    /// Username/password (method 2) before GSS-API (method 1).
    Password,
}

/// How a server runs the GSS-API sub-negotiation (RFC 1961), when
/// [`Authentication::Required`] enables it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GssapiPolicy {
    /// The protection levels granted.
    pub protection: ProtectionLevels,
    /// Accept the protection-level exchange in the unprotected NEC form (curl's
    /// `--socks5-gssapi-nec`), which a man in the middle can alter; the server then answers
    /// in that form too.
    pub accept_nec: bool,
    /// A client offering GSS-API and username/password, both enabled, gets this one.
    pub prefer: MethodPreference,
}

impl GssapiPolicy {
    /// Every level, the RFC's protected form only, GSS-API preferred.
    pub const DEFAULT: Self = Self {
        protection: ProtectionLevels::ALL,
        accept_nec: false,
        prefer: MethodPreference::Gssapi,
    };
}

impl Default for GssapiPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One entry of [`AuthenticationRules`]: clients from `client` (any when `None`) that
/// connected to `listener` (any when `None`) get `authentication`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AuthenticationRule {
    /// The client network.
    pub client: Option<Cidr>,
    /// The listening address: a connection matches when its local address is this one, or
    /// for an unspecified address (`0.0.0.0`, `::`), any address of that family, on the
    /// same port.
    pub listener: Option<SocketAddr>,
    /// What these clients must do.
    pub authentication: Authentication,
}

impl AuthenticationRule {
    /// Whether a connection from `client` accepted on `local` matches.
    pub fn matches(&self, client: IpAddr, local: SocketAddr) -> bool {
        self.client.is_none_or(|net| net.contains(client))
            && self.listener.is_none_or(|l| {
                let (want, got) = (l.ip().to_canonical(), local.ip().to_canonical());
                l.port() == local.port()
                    && (want == got || (want.is_unspecified() && want.is_ipv4() == got.is_ipv4()))
            })
    }
}

/// Authentication by client network and listener, first match wins (Dante's `socksmethod`
/// per rule, 3proxy's `auth iponly strong`): the LAN without a password, everyone else
/// with one. Each entry is a whole [`Authentication`], so "required, yet SOCKS4" stays
/// impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AuthenticationRules<'r> {
    /// The entries, in order.
    pub rules: &'r [AuthenticationRule],
    /// For connections no entry matches.
    pub default: Authentication,
}

impl<'r> AuthenticationRules<'r> {
    /// `default` for everyone.
    pub const fn new(default: Authentication) -> Self {
        Self {
            rules: &[],
            default,
        }
    }

    /// The same default, after `rules`.
    #[must_use]
    pub const fn with_rules(mut self, rules: &'r [AuthenticationRule]) -> Self {
        self.rules = rules;
        self
    }

    /// The authentication for a connection from `client` accepted on `local`.
    pub fn for_client(&self, client: IpAddr, local: SocketAddr) -> Authentication {
        self.rules
            .iter()
            .find(|r| r.matches(client, local))
            .map_or(self.default, |r| r.authentication)
    }
}

/// How clients are grouped for per-client limits (session rate, concurrency, login
/// back-off): by the network of `ipv4` bits around an IPv4 address and `ipv6` bits around an
/// IPv6 one. One host usually owns a whole IPv6 /64, so keying it by address would let a
/// client escape its limits by rotating addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientPrefixes {
    ipv4: u8,
    ipv6: u8,
}

impl ClientPrefixes {
    /// IPv4 /32 (one address), IPv6 /64 (one subnet).
    pub const DEFAULT: Self = Self { ipv4: 32, ipv6: 64 };

    /// `ipv4` in 1–32 and `ipv6` in 1–128 ([`ParseError::InvalidPrefix`] otherwise: a
    /// prefix of 0 would put every client under one key).
    pub const fn new(ipv4: u8, ipv6: u8) -> Result<Self, ParseError> {
        if ipv4 == 0 || ipv4 > 32 || ipv6 == 0 || ipv6 > 128 {
            return Err(ParseError::InvalidPrefix);
        }
        Ok(Self { ipv4, ipv6 })
    }

    /// The IPv4 prefix length.
    pub const fn ipv4(self) -> u8 {
        self.ipv4
    }

    /// The IPv6 prefix length.
    pub const fn ipv6(self) -> u8 {
        self.ipv6
    }

    /// The key of a client: its network (IPv4-mapped IPv6 counts as IPv4).
    pub const fn key(self, ip: IpAddr) -> Cidr {
        match ip.to_canonical() {
            IpAddr::V4(_) => Cidr::around(ip, self.ipv4),
            IpAddr::V6(_) => Cidr::around(ip, self.ipv6),
        }
    }
}

impl Default for ClientPrefixes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The time limits a session enforces through its `poll_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Timeouts {
    /// From the connection to the complete request (credential checks included).
    pub handshake: Duration,
    /// From the request to the outbound connection (resolving included); on expiry the
    /// client gets REP 6.
    pub connect: Duration,
    /// A BIND's wait for its peer after the first reply; on expiry the client gets REP 6.
    pub bind: Duration,
    /// A UDP association with no datagram relayed either way for this long ends.
    pub udp_idle: Duration,
}

impl Timeouts {
    /// 10 s handshake, 10 s connect, 120 s BIND wait, 300 s UDP idle.
    pub const DEFAULT: Self = Self {
        handshake: Duration::from_secs(10),
        connect: Duration::from_secs(10),
        bind: Duration::from_secs(120),
        udp_idle: Duration::from_secs(300),
    };
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Everything the core decides with: see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Policy<'r> {
    /// Methods and versions offered.
    pub authentication: Authentication,
    /// How GSS-API runs when `authentication` offers it (with the `gssapi` feature; without
    /// it method 1 is never chosen and a policy does not carry this).
    #[cfg(feature = "gssapi")]
    pub gssapi: GssapiPolicy,
    /// Access rules, applied to every request before resolving and to each resolved
    /// address, and to every UDP datagram; with their
    /// [protected destinations](crate::rules::ProtectedDestinations) (off unless set with
    /// [`Rules::with_protected`]), which refuse the proxy host's own and loopback,
    /// link-local, unspecified and multicast addresses unless an allow rule names them.
    pub rules: Rules<'r>,
    /// Commands this front end serves; others are answered "command not supported" (REP 7).
    pub commands: CommandSet,
    /// Accept a BIND's inbound connection from any address, not only the expected peer.
    pub bind_any_peer: bool,
    /// Time limits.
    pub timeouts: Timeouts,
    /// The address family names are used in: the deciding rule's, or the default.
    pub address_families: AddressFamilies<'r>,
}

impl<'r> Policy<'r> {
    /// `authentication` and `rules`, every command, the expected BIND peer only, and the
    /// default timeouts.
    pub const fn new(authentication: Authentication, rules: Rules<'r>) -> Self {
        Self {
            authentication,
            #[cfg(feature = "gssapi")]
            gssapi: GssapiPolicy::DEFAULT,
            rules,
            commands: CommandSet::ANY,
            bind_any_peer: false,
            timeouts: Timeouts::DEFAULT,
            address_families: AddressFamilies::new(AddressFamily::PreferIpv6),
        }
    }
}

impl Default for Policy<'_> {
    /// No authentication, SOCKS4 and SOCKS5, no rules (everything allowed), every command.
    fn default() -> Self {
        Self::new(Authentication::default(), Rules::new(&[], Action::Allow))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_authentication_first_match_by_network_and_listener() {
        let open = Authentication::None { socks4: true };
        let rules = [
            AuthenticationRule {
                client: Some("10.0.0.0/8".parse().unwrap()),
                listener: None,
                authentication: open,
            },
            AuthenticationRule {
                client: Some("127.0.0.2".parse().unwrap()),
                listener: Some(sa("0.0.0.0:1080")),
                authentication: open,
            },
            AuthenticationRule {
                client: None,
                listener: Some(sa("[::1]:1081")),
                authentication: open,
            },
        ];
        let auth = AuthenticationRules::new(Authentication::PASSWORD).with_rules(&rules);
        let on = sa("192.0.2.1:1080");
        assert_eq!(auth.for_client(ip("10.1.2.3"), on), open);
        assert_eq!(auth.for_client(ip("::ffff:10.1.2.3"), on), open, "mapped");
        assert_eq!(
            auth.for_client(ip("11.0.0.1"), on),
            Authentication::PASSWORD
        );
        // Entry 2: this client, any IPv4 address on port 1080 (a wildcard listener).
        assert_eq!(auth.for_client(ip("127.0.0.2"), sa("127.0.0.1:1080")), open);
        assert_eq!(
            auth.for_client(ip("127.0.0.2"), sa("127.0.0.1:1081")),
            Authentication::PASSWORD
        );
        assert_eq!(
            auth.for_client(ip("127.0.0.3"), sa("127.0.0.1:1080")),
            Authentication::PASSWORD
        );
        // Entry 3: any client on exactly [::1]:1081.
        assert_eq!(auth.for_client(ip("2001:db8::1"), sa("[::1]:1081")), open);
        assert_eq!(
            auth.for_client(ip("192.0.2.9"), sa("127.0.0.1:1081")),
            Authentication::PASSWORD
        );
        // No entries: the default.
        let none = AuthenticationRules::new(open);
        assert_eq!(none.for_client(ip("192.0.2.9"), on), open);
        // An unspecified IPv6 listener does not match IPv4 connections.
        let v6 = [AuthenticationRule {
            client: None,
            listener: Some(sa("[::]:1080")),
            authentication: open,
        }];
        let auth = AuthenticationRules::new(Authentication::PASSWORD).with_rules(&v6);
        assert_eq!(auth.for_client(ip("::1"), sa("[::1]:1080")), open);
        assert_eq!(
            auth.for_client(ip("127.0.0.1"), sa("127.0.0.1:1080")),
            Authentication::PASSWORD
        );
    }

    #[test]
    fn test_client_prefixes() {
        let p = ClientPrefixes::DEFAULT;
        assert_eq!(p.key(ip("192.0.2.7")), "192.0.2.7/32".parse().unwrap());
        assert_eq!(p.key(ip("::ffff:192.0.2.7")), p.key(ip("192.0.2.7")));
        assert_eq!(p.key(ip("2001:db8::1")), p.key(ip("2001:db8::ffff:1")));
        assert_ne!(p.key(ip("2001:db8::1")), p.key(ip("2001:db8:0:1::1")));
        let wide = ClientPrefixes::new(24, 48).unwrap();
        assert_eq!(wide.key(ip("192.0.2.7")), wide.key(ip("192.0.2.200")));
        assert_eq!(
            wide.key(ip("2001:db8:0:1::1")),
            wide.key(ip("2001:db8:0:2::1"))
        );
        for (v4, v6) in [(0, 64), (33, 64), (32, 0), (32, 129)] {
            assert_eq!(
                ClientPrefixes::new(v4, v6),
                Err(ParseError::InvalidPrefix),
                "{v4} {v6}"
            );
        }
    }

    #[test]
    fn test_protection_grant_is_the_strongest_allowed_not_above_the_request() {
        use ProtectionLevel::{Confidentiality, Integrity, None as Clear, Selective};
        let all = ProtectionLevels::ALL;
        assert_eq!(all.grant(Clear), Some(Clear));
        assert_eq!(all.grant(Integrity), Some(Integrity));
        assert_eq!(all.grant(Confidentiality), Some(Confidentiality));
        assert_eq!(all.grant(Selective), Some(Confidentiality));
        assert_eq!(all.grant(ProtectionLevel::Unknown(4)), None);
        let clear = ProtectionLevels::only(Clear);
        assert_eq!(clear.grant(Confidentiality), Some(Clear));
        let integrity = ProtectionLevels::only(Integrity);
        assert_eq!(integrity.grant(Confidentiality), Some(Integrity));
        assert_eq!(integrity.grant(Clear), None, "never above the request");
        let strong = ProtectionLevels {
            none: false,
            integrity: true,
            confidentiality: true,
        };
        assert_eq!(strong.grant(Integrity), Some(Integrity));
        assert_eq!(strong.grant(Clear), None);
        assert!(!all.allows(Selective));
    }

    #[test]
    fn test_socks4_only_without_authentication() {
        assert!(Authentication::None { socks4: true }.accepts_socks4());
        assert!(!Authentication::None { socks4: false }.accepts_socks4());
        for password in [false, true] {
            for gssapi in [false, true] {
                let auth = Authentication::Required { password, gssapi };
                assert!(!auth.accepts_socks4());
                assert!(!auth.accepts(Method::NoAuth));
                assert_eq!(auth.accepts(Method::UserPass), password);
                assert_eq!(auth.accepts(Method::Gssapi), gssapi);
            }
        }
    }
}
