//! What a server allows: authentication, access rules, commands and time limits.
//!
//! A [`Policy`] is the whole of a front end's configuration that bears on the protocol. The
//! [session](crate::session) applies it; front ends only build it (from a config file, a
//! firmware's statics, a test's literals).
//!
//! [`Authentication`] is built so that a policy cannot require authentication and still let
//! SOCKS4 clients in: SOCKS4 cannot authenticate, so it is only ever accepted together with
//! SOCKS5's "no authentication".

use core::time::Duration;

use crate::rules::{Action, CommandSet, Rules};
use crate::wire::Method;

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
        /// GSS-API (method 1, RFC 1961); preferred over a password when a client offers both.
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
}

impl<'r> Policy<'r> {
    /// `authentication` and `rules`, every command, the expected BIND peer only, and the
    /// default timeouts.
    pub const fn new(authentication: Authentication, rules: Rules<'r>) -> Self {
        Self {
            authentication,
            rules,
            commands: CommandSet::ANY,
            bind_any_peer: false,
            timeouts: Timeouts::DEFAULT,
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
