//! Static gateway configuration.
//!
//! Firmware builds one [`GatewayConfig`] in a `static` (see each board's `config.rs`); nothing
//! here allocates or changes at run time.

use embassy_time::Duration;
use socksgate_core::rules::{Action, Rules};

/// One RFC 1929 username/password pair.
#[derive(Clone, Copy, Debug)]
pub struct User {
    /// Username as sent on the wire (compared byte for byte).
    pub name: &'static str,
    /// Password as sent on the wire (compared byte for byte).
    pub password: &'static str,
}

/// Everything a gateway needs to know, fixed at build time.
#[derive(Debug)]
pub struct GatewayConfig {
    /// TCP port the sessions listen on (1080 in the firmware).
    pub port: u16,
    /// Credential table. Empty: SOCKS5 "no authentication" is offered instead of method 2.
    pub users: &'static [User],
    /// Access rules (the core's evaluator): checked before resolution and again with the
    /// resolved address; a denied request gets "not allowed by ruleset".
    pub rules: Rules<'static>,
    /// Accept SOCKS4 and SOCKS4a requests (they cannot authenticate with a password: only
    /// allowed when `users` is empty).
    pub socks4: bool,
    /// The client must send its whole handshake (greeting to request) within this time.
    /// Resolution and the upstream connect are bounded separately (smoltcp's DNS timeout,
    /// `connect_timeout`), so a request being worked on always gets its reply.
    pub handshake_timeout: Duration,
    /// Upstream TCP connect (after resolution) must finish within this time.
    pub connect_timeout: Duration,
    /// A relayed connection with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Bound on the orderly close (FIN exchange) before a socket is aborted.
    pub close_timeout: Duration,
}

impl GatewayConfig {
    /// Defaults for `port` with the given users: no rules (everything allowed), SOCKS4
    /// only when there are no users, 10 s handshake and connect, 5 min idle, 5 s close.
    pub const fn new(port: u16, users: &'static [User]) -> Self {
        Self {
            port,
            users,
            rules: Rules::new(&[], Action::Allow),
            socks4: users.is_empty(),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            close_timeout: Duration::from_secs(5),
        }
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
    fn defaults_follow_the_user_table() {
        assert!(GatewayConfig::new(1080, &[]).socks4);
        assert!(!GatewayConfig::new(1080, &USERS).socks4);
        assert!(GatewayConfig::new(1080, &[]).rules.rules.is_empty());
    }
}
