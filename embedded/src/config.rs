//! What a gateway asks its configuration ([`Configuration`]), and a static one.
//!
//! [`GatewayConfig`] is fixed at build time (`const` builder calls, used by the host
//! tests); [`SharedSettings`](crate::live::SharedSettings) is the run-time one the firmware
//! loads from flash and the console edits. A gateway reads its configuration again for
//! every decision, so a change applies to the next session without a restart.
//!
//! The protocol side of the configuration is a [`socksgate_core::Policy`], built here and
//! nowhere else: the credential table decides the authentication, so a gateway with users
//! always requires them and never accepts SOCKS4 (which cannot authenticate).

use embassy_time::Duration;
use socksgate_core::policy::{Authentication, Policy, Timeouts};
use socksgate_core::rules::{Action, CommandSet, ProtectedDestinations, Rules};

/// What the gateway reads from its configuration. Every call is short and synchronous:
/// an implementation may hold a lock for its duration.
pub trait Configuration {
    /// The TCP port the sessions listen on (read when a slot starts listening).
    fn port(&self) -> u16;
    /// Runs `f` with the core's policy as it is now.
    fn with_policy<R>(&self, f: impl FnOnce(&Policy<'_>) -> R) -> R;
    /// Checks an RFC 1929 username/password pair, in time independent of where or
    /// whether it differs.
    fn authenticate(&self, name: &[u8], password: &[u8]) -> bool;
    /// The relay's idle limit.
    fn idle_timeout(&self) -> Duration;
    /// The orderly close's limit.
    fn close_timeout(&self) -> Duration;
    /// Sessions at once across all clients; 0 (or anything at least the pool's size):
    /// every slot of the pool. A client over it is answered as when the pool is full.
    fn max_sessions(&self) -> usize {
        0
    }
    /// Sessions one client (IPv4 address, IPv6 /64) may hold at once; 0: no cap beyond the
    /// pool.
    fn per_client(&self) -> usize {
        0
    }
    /// Failed logins that lock a client out, and for how long; `None`: never.
    fn login_throttle(&self) -> Option<(u32, Duration)> {
        None
    }
}

impl Configuration for GatewayConfig {
    fn port(&self) -> u16 {
        self.port
    }
    fn with_policy<R>(&self, f: impl FnOnce(&Policy<'_>) -> R) -> R {
        f(&self.policy)
    }
    fn authenticate(&self, name: &[u8], password: &[u8]) -> bool {
        Self::authenticate(self, name, password)
    }
    fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
    fn close_timeout(&self) -> Duration {
        self.close_timeout
    }
    fn per_client(&self) -> usize {
        self.per_client
    }
    fn login_throttle(&self) -> Option<(u32, Duration)> {
        self.login_throttle
    }
}

/// One RFC 1929 username/password pair.
#[derive(Clone, Copy, Debug)]
pub struct User {
    /// Username as sent on the wire (compared byte for byte).
    pub name: &'static str,
    /// Password as sent on the wire (compared byte for byte).
    pub password: &'static str,
}

/// Everything a gateway needs to know, fixed at build time.
///
/// ```
/// use socksgate_core::rules::{Action, Rules};
/// use socksgate_embedded::GatewayConfig;
///
/// static GATEWAY: GatewayConfig =
///     GatewayConfig::new(1080, &[]).with_rules(Rules::new(&[], Action::Allow));
/// assert!(GATEWAY.policy().authentication.accepts_socks4());
/// ```
#[derive(Debug)]
pub struct GatewayConfig {
    port: u16,
    users: &'static [User],
    policy: Policy<'static>,
    idle_timeout: Duration,
    close_timeout: Duration,
    per_client: usize,
    login_throttle: Option<(u32, Duration)>,
}

impl GatewayConfig {
    /// SOCKS on `port` with the credential table `users`.
    ///
    /// With users, every client authenticates with RFC 1929 username/password and SOCKS4 is
    /// refused; without, SOCKS5 "no authentication" and SOCKS4/4a are offered. No rules
    /// (everything allowed), CONNECT and UDP ASSOCIATE (BIND gets "command not supported"),
    /// the core's default handshake, connect and UDP idle timeouts, 5 min relay idle, 5 s
    /// close. [Protected destinations](ProtectedDestinations) are on (the gateway listens on
    /// a network address): loopback, link-local, unspecified and multicast destinations are
    /// refused unless an allow rule names them by address.
    pub const fn new(port: u16, users: &'static [User]) -> Self {
        let authentication = if users.is_empty() {
            Authentication::None { socks4: true }
        } else {
            Authentication::PASSWORD
        };
        let rules = Rules::new(&[], Action::Allow).with_protected(ProtectedDestinations::on(&[]));
        let mut policy = Policy::new(authentication, rules);
        policy.commands = CommandSet::CONNECT.union(CommandSet::UDP_ASSOCIATE);
        Self {
            port,
            users,
            policy,
            idle_timeout: Duration::from_secs(300),
            close_timeout: Duration::from_secs(5),
            per_client: 0,
            login_throttle: None,
        }
    }

    /// At most `sessions` sessions per client (IPv4 address, IPv6 /64; 0: no cap).
    #[must_use]
    pub const fn with_per_client(mut self, sessions: usize) -> Self {
        self.per_client = sessions;
        self
    }

    /// After `failures` failed logins within `lockout`, a client's logins fail unchecked
    /// until `lockout` has passed since the first of them.
    #[must_use]
    pub const fn with_login_throttle(mut self, failures: u32, lockout: Duration) -> Self {
        self.login_throttle = Some((failures, lockout));
        self
    }

    /// Access rules (the core's evaluator), for every request and every UDP datagram. The
    /// protected destinations stay as they are ([`with_protected`](Self::with_protected)).
    #[must_use]
    pub const fn with_rules(mut self, rules: Rules<'static>) -> Self {
        self.policy.rules = rules.with_protected(self.policy.rules.protected);
        self
    }

    /// Which destinations only a rule naming them opens: on by default (without the
    /// gateway's own address, which DHCP may change); [`ProtectedDestinations::OFF`] lets
    /// clients reach loopback and link-local addresses, [`ProtectedDestinations::on`] with
    /// a static address list adds those.
    #[must_use]
    pub const fn with_protected(mut self, protected: ProtectedDestinations<'static>) -> Self {
        self.policy.rules.protected = protected;
        self
    }

    /// Refuses SOCKS4/4a also when there are no users (with users it is always refused).
    #[must_use]
    pub const fn without_socks4(mut self) -> Self {
        if let Authentication::None { .. } = self.policy.authentication {
            self.policy.authentication = Authentication::None { socks4: false };
        }
        self
    }

    /// The session time limits: handshake, connect (resolution included) and UDP association
    /// idle. (`bind` is unused: BIND is not served.)
    #[must_use]
    pub const fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.policy.timeouts = timeouts;
        self
    }

    /// A relayed TCP connection with no byte in either direction for `idle` is closed.
    #[must_use]
    pub const fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Bound on the orderly close (FIN exchange) before a socket is aborted.
    #[must_use]
    pub const fn with_close_timeout(mut self, close: Duration) -> Self {
        self.close_timeout = close;
        self
    }

    /// The TCP port the sessions listen on.
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// What the core decides with: authentication, rules, commands, session timeouts.
    pub const fn policy(&self) -> &Policy<'static> {
        &self.policy
    }

    /// The relay's idle limit.
    pub const fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The orderly close's limit.
    pub const fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// Checks a username/password pair against the table, in constant time per entry.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> bool {
        self.users.iter().fold(false, |found, user| {
            found | (ct_eq(user.name.as_bytes(), name) & ct_eq(user.password.as_bytes(), password))
        })
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use socksgate_core::wire::Command;

    use super::*;

    static USERS: [User; 2] = [
        User {
            name: "alice",
            password: "secret",
        },
        User {
            name: "bob",
            password: "",
        },
    ];

    #[test]
    fn authenticate_matches_name_and_password_exactly() {
        let config = GatewayConfig::new(1080, &USERS);
        assert!(config.authenticate(b"alice", b"secret"));
        assert!(config.authenticate(b"bob", b""));
        assert!(!config.authenticate(b"alice", b"secret2"));
        assert!(!config.authenticate(b"alice", b"secre"));
        assert!(!config.authenticate(b"Alice", b"secret"));
        assert!(!config.authenticate(b"bob", b"secret"));
        assert!(!config.authenticate(b"", b""));
    }

    #[test]
    fn users_require_a_password_and_refuse_socks4() {
        let open = GatewayConfig::new(1080, &[]);
        assert_eq!(
            open.policy().authentication,
            Authentication::None { socks4: true }
        );
        assert_eq!(
            GatewayConfig::new(1080, &[])
                .without_socks4()
                .policy()
                .authentication,
            Authentication::None { socks4: false }
        );
        let auth = GatewayConfig::new(1080, &USERS);
        assert_eq!(auth.policy().authentication, Authentication::PASSWORD);
        assert!(!auth.policy().authentication.accepts_socks4());
        // Nothing turns SOCKS4 back on once users are listed.
        assert_eq!(
            GatewayConfig::new(1080, &USERS)
                .without_socks4()
                .policy()
                .authentication,
            Authentication::PASSWORD
        );
        assert!(open.policy().rules.rules.is_empty());
        assert!(open.policy().rules.protected.is_on());
        let ruled = GatewayConfig::new(1080, &[]).with_rules(Rules::new(&[], Action::Deny));
        assert!(ruled.policy().rules.protected.is_on());
        let off = ruled.with_protected(ProtectedDestinations::OFF);
        assert!(!off.policy().rules.protected.is_on());
    }

    #[test]
    fn bind_is_not_served() {
        let commands = GatewayConfig::new(1080, &[]).policy().commands;
        assert!(commands.contains(Command::Connect));
        assert!(commands.contains(Command::UdpAssociate));
        assert!(!commands.contains(Command::Bind));
        assert!(!commands.contains(Command::Unknown(9)));
    }
}
