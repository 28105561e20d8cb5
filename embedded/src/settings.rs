//! The gateway's settings at run time, as text lines: one `key value…` per line.
//!
//! The same lines are the body of the record kept in flash ([`crate::store`]), what the
//! console's `show` prints and what its `set` takes, so one parser serves all three and a
//! saved record can be read by eye from a flash dump.
//!
//! ```text
//! port 1080
//! address dhcp                       | address 192.168.1.80/24 gateway 192.168.1.1
//! dns none                           | dns 192.168.1.1
//! hostname socksgate
//! socks4 on                          (only without users: with users it is always refused)
//! max-sessions 0                     (sessions at once; 0: every slot of the pool)
//! per-client 0                       (sessions one client, IPv4 address or IPv6 /64, may hold; 0: no cap)
//! login-throttle 5 60                (failures per client, then refused for N seconds)
//! timeouts 10 10 300                 (handshake, connect, relay idle; seconds)
//! default allow
//! user alice 4096 SALT-HEX HASH-HEX  (PBKDF2-HMAC-SHA256; never the password)
//! rule deny dst 127.0.0.0/8 port 25 user bob client 10.0.0.0/8 cmd connect,udp_associate
//! ```
//!
//! Access decisions stay the core's: [`Settings::policy`] builds its
//! [`Policy`] from the rules, the default action and the users.

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

use embassy_time::Duration;
use socksgate_core::policy::{Authentication, Policy, Timeouts};
use socksgate_core::rules::{
    Action, Cidr, CommandSet, HostPattern, PortRange, ProtectedDestinations, Rule, Rules, UserName,
};

use crate::password::PasswordHash;

/// Users a record holds.
pub const MAX_USERS: usize = 8;
/// Rules a record holds (each ≈ 550 B in RAM: a rule may name a 255-octet user and host).
pub const MAX_RULES: usize = 8;
/// Longest user name, in bytes.
pub const MAX_USER_NAME: usize = 32;
/// Longest DHCP hostname.
pub const MAX_HOSTNAME: usize = 32;

/// One user: a name and the salted hash of the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    /// The RFC 1929 user name (printable ASCII, no spaces).
    pub name: heapless::String<MAX_USER_NAME>,
    /// The password's salted hash.
    pub password: PasswordHash,
}

/// How the gateway gets its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// DHCP (the lease's DNS servers are used unless [`Settings::dns`] is set).
    Dhcp,
    /// A fixed address.
    Static {
        /// The address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
        /// The default gateway, if any.
        gateway: Option<Ipv4Addr>,
    },
}

/// Failed logins allowed per client before it is locked out, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures within the lockout window that lock the client out; 0: never.
    pub failures: u8,
    /// Lockout (and counting window) in seconds.
    pub lockout_secs: u16,
}

/// Everything configurable at run time. See the [module documentation](self) for the text
/// form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The SOCKS port.
    pub port: u16,
    /// DHCP or a static address (applied at boot).
    pub addressing: Addressing,
    /// The DNS server; with DHCP, `None` uses the lease's.
    pub dns: Option<Ipv4Addr>,
    /// The name sent in DHCP requests (option 12).
    pub hostname: heapless::String<MAX_HOSTNAME>,
    /// Whether SOCKS4/4a is served when there are no users (never with users).
    pub socks4: bool,
    /// Sessions at once across all clients; 0: every slot of the pool (a larger number
    /// than the pool's slots has the same effect: the pool is built at compile time).
    pub max_sessions: u16,
    /// Sessions one client address may hold at once; 0: no cap beyond the pool.
    pub per_client: u8,
    /// The failed-login throttle.
    pub login_throttle: LoginThrottle,
    /// Handshake time limit, seconds.
    pub handshake_secs: u16,
    /// Connect (resolution included) time limit, seconds.
    pub connect_secs: u16,
    /// Relay idle limit, seconds.
    pub idle_secs: u32,
    /// What happens when no rule matches.
    pub default_action: Action,
    /// RFC 1929 users; with any, every client must authenticate.
    pub users: heapless::Vec<UserEntry, MAX_USERS>,
    /// Access rules, first match wins.
    pub rules: heapless::Vec<Rule, MAX_RULES>,
}

/// Why a settings line was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingsError {
    /// The key is not one of the settings.
    UnknownKey,
    /// The value is missing or malformed (the text says which).
    Invalid(&'static str),
    /// The user or rule table is full.
    Full,
    /// No such user or rule.
    NotFound,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey => f.write_str("unknown key"),
            Self::Invalid(why) => f.write_str(why),
            Self::Full => f.write_str("table full"),
            Self::NotFound => f.write_str("not found"),
        }
    }
}

/// A settings text that did not parse: the 1-based line and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub error: SettingsError,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl Settings {
    /// Defaults: `port`, DHCP, the lease's DNS, hostname `socksgate`, SOCKS4 on, every slot
    /// of the pool, no per-client cap, 5 failed logins lock a client out for 60 s, 10/10/300 s timeouts,
    /// default `default_action`, no users, no rules.
    pub fn new(port: u16, default_action: Action) -> Self {
        let mut hostname = heapless::String::new();
        let _ = hostname.push_str("socksgate");
        Self {
            port,
            addressing: Addressing::Dhcp,
            dns: None,
            hostname,
            socks4: true,
            max_sessions: 0,
            per_client: 0,
            login_throttle: LoginThrottle {
                failures: 5,
                lockout_secs: 60,
            },
            handshake_secs: 10,
            connect_secs: 10,
            idle_secs: 300,
            default_action,
            users: heapless::Vec::new(),
            rules: heapless::Vec::new(),
        }
    }

    /// The core's policy for these settings: with users, RFC 1929 is required and SOCKS4
    /// refused; CONNECT and UDP ASSOCIATE; protected destinations on.
    pub fn policy(&self) -> Policy<'_> {
        let authentication = if self.users.is_empty() {
            Authentication::None {
                socks4: self.socks4,
            }
        } else {
            Authentication::PASSWORD
        };
        let rules = Rules::new(&self.rules, self.default_action)
            .with_protected(ProtectedDestinations::on(&[]));
        let mut policy = Policy::new(authentication, rules);
        policy.commands = CommandSet::CONNECT.union(CommandSet::UDP_ASSOCIATE);
        policy.timeouts = Timeouts {
            handshake: core::time::Duration::from_secs(u64::from(self.handshake_secs)),
            connect: core::time::Duration::from_secs(u64::from(self.connect_secs)),
            ..Timeouts::DEFAULT
        };
        policy
    }

    /// The embassy-net configuration: DHCP (sending [`hostname`](Self::hostname)) or the
    /// static address with [`dns`](Self::dns).
    pub fn net_config(&self) -> embassy_net::Config {
        use embassy_net::{Config, DhcpConfig, Ipv4Cidr, StaticConfigV4};
        match self.addressing {
            Addressing::Dhcp => {
                let mut dhcp = DhcpConfig::default();
                dhcp.hostname = self.hostname.as_str().try_into().ok();
                Config::dhcpv4(dhcp)
            }
            Addressing::Static {
                address,
                prefix,
                gateway,
            } => {
                let mut config = StaticConfigV4 {
                    address: Ipv4Cidr::new(address, prefix),
                    gateway,
                    dns_servers: Default::default(),
                };
                if let Some(dns) = self.dns {
                    let _ = config.dns_servers.push(dns);
                }
                Config::ipv4_static(config)
            }
        }
    }

    /// The relay's idle limit.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.idle_secs))
    }

    /// Checks a username/password pair (see [`password::check`](crate::password::check)).
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> bool {
        crate::password::check(self.find_user(name).as_ref(), password)
    }

    /// The stored hash of user `name`. Every name is compared, in constant time, so the
    /// time does not tell which (or whether one) matched.
    pub fn find_user(&self, name: &[u8]) -> Option<PasswordHash> {
        use subtle::ConstantTimeEq;
        self.users.iter().fold(None, |found, user| {
            let same: bool = user.name.as_bytes().ct_eq(name).into();
            if same { Some(user.password) } else { found }
        })
    }

    /// Adds (or replaces) `name` with the already hashed `password`.
    pub fn set_user(&mut self, name: &str, password: PasswordHash) -> Result<(), SettingsError> {
        let name = user_name(name)?;
        if let Some(user) = self.users.iter_mut().find(|u| u.name == name) {
            user.password = password;
            return Ok(());
        }
        self.users
            .push(UserEntry { name, password })
            .map_err(|_| SettingsError::Full)
    }

    /// Removes `name`.
    pub fn remove_user(&mut self, name: &str) -> Result<(), SettingsError> {
        let index = self
            .users
            .iter()
            .position(|u| u.name == name)
            .ok_or(SettingsError::NotFound)?;
        self.users.remove(index);
        Ok(())
    }

    /// Appends a rule written as `allow|deny [dst P] [port R] [user U] [client C] [cmd S]`.
    pub fn add_rule(&mut self, text: &str) -> Result<(), SettingsError> {
        let rule = parse_rule(text)?;
        self.rules.push(rule).map_err(|_| SettingsError::Full)
    }

    /// Removes rule `index` (0-based, as `show` numbers them).
    pub fn remove_rule(&mut self, index: usize) -> Result<(), SettingsError> {
        if index >= self.rules.len() {
            return Err(SettingsError::NotFound);
        }
        self.rules.remove(index);
        Ok(())
    }

    /// Applies one line of the text form (a `user` line carries a hash; a `rule` line is
    /// appended).
    pub fn apply_line(&mut self, line: &str) -> Result<(), SettingsError> {
        let line = line.trim();
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let mut words = rest.split_ascii_whitespace();
        let arity = match key {
            "port" | "max-sessions" | "per-client" | "default" | "socks4" => Some(1),
            "login-throttle" => Some(2),
            "timeouts" => Some(3),
            "user" => Some(4),
            _ => None,
        };
        if arity.is_some_and(|n| n != rest.split_ascii_whitespace().count()) {
            return Err(SettingsError::Invalid(match key {
                "login-throttle" => "login-throttle: FAILURES SECONDS",
                "timeouts" => "timeouts: HANDSHAKE CONNECT IDLE (seconds, at least 1)",
                "user" => "user: NAME ITERATIONS SALT-HEX HASH-HEX",
                _ => "one value expected",
            }));
        }
        match key {
            "port" => {
                let port: u16 = number(words.next(), "port: a number 1-65535")?;
                if port == 0 {
                    return Err(SettingsError::Invalid("port: a number 1-65535"));
                }
                self.port = port;
            }
            "address" => self.addressing = parse_addressing(rest)?,
            "dns" => {
                self.dns = match rest {
                    "none" => None,
                    text => Some(
                        text.parse()
                            .map_err(|_| SettingsError::Invalid("dns: an IPv4 address or none"))?,
                    ),
                }
            }
            "hostname" => {
                if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(SettingsError::Invalid("hostname: letters, digits and -"));
                }
                self.hostname = heapless::String::try_from(rest)
                    .map_err(|_| SettingsError::Invalid("hostname: at most 32 characters"))?;
            }
            "socks4" => {
                self.socks4 = match rest {
                    "on" => true,
                    "off" => false,
                    _ => return Err(SettingsError::Invalid("socks4: on or off")),
                }
            }
            "max-sessions" => self.max_sessions = number(words.next(), "max-sessions: 0-65535")?,
            "per-client" => self.per_client = number(words.next(), "per-client: 0-255")?,
            "login-throttle" => {
                self.login_throttle = LoginThrottle {
                    failures: number(words.next(), "login-throttle: FAILURES SECONDS")?,
                    lockout_secs: number(words.next(), "login-throttle: FAILURES SECONDS")?,
                }
            }
            "timeouts" => {
                const WHY: &str = "timeouts: HANDSHAKE CONNECT IDLE (seconds, at least 1)";
                let handshake: u16 = number(words.next(), WHY)?;
                let connect: u16 = number(words.next(), WHY)?;
                let idle: u32 = number(words.next(), WHY)?;
                if handshake == 0 || connect == 0 || idle == 0 {
                    return Err(SettingsError::Invalid(WHY));
                }
                (self.handshake_secs, self.connect_secs, self.idle_secs) =
                    (handshake, connect, idle);
            }
            "default" => {
                self.default_action = rest
                    .parse()
                    .map_err(|_| SettingsError::Invalid("default: allow or deny"))?
            }
            "user" => {
                const WHY: &str = "user: NAME ITERATIONS SALT-HEX HASH-HEX";
                let name = words.next().ok_or(SettingsError::Invalid(WHY))?;
                let iterations: u32 = number(words.next(), WHY)?;
                let salt = hex(words.next(), WHY)?;
                let hash = hex(words.next(), WHY)?;
                if iterations == 0 {
                    return Err(SettingsError::Invalid(WHY));
                }
                self.set_user(
                    name,
                    PasswordHash {
                        iterations,
                        salt,
                        hash,
                    },
                )?;
            }
            "rule" => self.add_rule(rest)?,
            _ => return Err(SettingsError::UnknownKey),
        }
        Ok(())
    }

    /// Parses a whole text: `base` with every line applied in order (blank lines and `#`
    /// comments skipped).
    pub fn parse(base: Self, text: &str) -> Result<Self, LineError> {
        let mut settings = base;
        settings.parse_over(text)?;
        Ok(settings)
    }

    /// [`parse`](Self::parse) in place, with `self` as the base: no second `Settings` on the
    /// stack (≈ 5 KB, which counts on the RP2040). On an error `self` is partly changed.
    pub fn parse_over(&mut self, text: &str) -> Result<(), LineError> {
        self.users.clear();
        self.rules.clear();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.apply_line(line).map_err(|error| LineError {
                line: index + 1,
                error,
            })?;
        }
        Ok(())
    }

    /// Writes the text form (what `parse` reads back) to `out`.
    pub fn write_text(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(out, "port {}", self.port)?;
        match self.addressing {
            Addressing::Dhcp => writeln!(out, "address dhcp")?,
            Addressing::Static {
                address,
                prefix,
                gateway,
            } => {
                write!(out, "address {address}/{prefix}")?;
                if let Some(gateway) = gateway {
                    write!(out, " gateway {gateway}")?;
                }
                writeln!(out)?;
            }
        }
        match self.dns {
            Some(dns) => writeln!(out, "dns {dns}")?,
            None => writeln!(out, "dns none")?,
        }
        writeln!(out, "hostname {}", self.hostname)?;
        writeln!(out, "socks4 {}", if self.socks4 { "on" } else { "off" })?;
        writeln!(out, "max-sessions {}", self.max_sessions)?;
        writeln!(out, "per-client {}", self.per_client)?;
        writeln!(
            out,
            "login-throttle {} {}",
            self.login_throttle.failures, self.login_throttle.lockout_secs
        )?;
        writeln!(
            out,
            "timeouts {} {} {}",
            self.handshake_secs, self.connect_secs, self.idle_secs
        )?;
        writeln!(out, "default {}", self.default_action)?;
        for user in &self.users {
            write!(out, "user {} {} ", user.name, user.password.iterations)?;
            write_hex(out, &user.password.salt)?;
            out.write_char(' ')?;
            write_hex(out, &user.password.hash)?;
            writeln!(out)?;
        }
        for rule in &self.rules {
            out.write_str("rule ")?;
            write_rule(out, rule)?;
            writeln!(out)?;
        }
        Ok(())
    }
}

fn user_name(name: &str) -> Result<heapless::String<MAX_USER_NAME>, SettingsError> {
    const WHY: &str = "user name: 1-32 printable characters, no spaces";
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SettingsError::Invalid(WHY));
    }
    heapless::String::try_from(name).map_err(|_| SettingsError::Invalid(WHY))
}

fn number<T: FromStr>(word: Option<&str>, why: &'static str) -> Result<T, SettingsError> {
    word.and_then(|w| w.parse().ok())
        .ok_or(SettingsError::Invalid(why))
}

fn hex<const L: usize>(word: Option<&str>, why: &'static str) -> Result<[u8; L], SettingsError> {
    let word = word.ok_or(SettingsError::Invalid(why))?.as_bytes();
    if word.len() != 2 * L {
        return Err(SettingsError::Invalid(why));
    }
    let mut out = [0u8; L];
    for (byte, pair) in out.iter_mut().zip(word.chunks_exact(2)) {
        let text = core::str::from_utf8(pair).map_err(|_| SettingsError::Invalid(why))?;
        *byte = u8::from_str_radix(text, 16).map_err(|_| SettingsError::Invalid(why))?;
    }
    Ok(out)
}

fn write_hex(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(out, "{b:02x}"))
}

fn parse_addressing(text: &str) -> Result<Addressing, SettingsError> {
    const WHY: &str = "address: dhcp, or A.B.C.D/PREFIX [gateway A.B.C.D]";
    if text == "dhcp" {
        return Ok(Addressing::Dhcp);
    }
    let mut words = text.split_ascii_whitespace();
    let (address, prefix) = words
        .next()
        .and_then(|w| w.split_once('/'))
        .ok_or(SettingsError::Invalid(WHY))?;
    let address: Ipv4Addr = address.parse().map_err(|_| SettingsError::Invalid(WHY))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|&p| p <= 32)
        .ok_or(SettingsError::Invalid(WHY))?;
    let gateway = match (words.next(), words.next()) {
        (None, _) => None,
        (Some("gateway"), Some(gw)) => Some(gw.parse().map_err(|_| SettingsError::Invalid(WHY))?),
        _ => return Err(SettingsError::Invalid(WHY)),
    };
    if words.next().is_some() {
        return Err(SettingsError::Invalid(WHY));
    }
    Ok(Addressing::Static {
        address,
        prefix,
        gateway,
    })
}

/// `allow|deny [dst P] [port R] [user U] [client C] [cmd S]`, each at most once.
fn parse_rule(text: &str) -> Result<Rule, SettingsError> {
    const WHY: &str =
        "rule: allow|deny [dst HOST] [port P[-Q]] [user NAME] [client CIDR] [cmd LIST]";
    let mut words = text.split_ascii_whitespace();
    let action: Action = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or(SettingsError::Invalid(WHY))?;
    let mut rule = Rule::new(action);
    let (mut dst, mut port, mut user, mut client, mut cmd) = (false, false, false, false, false);
    while let Some(key) = words.next() {
        let value = words.next().ok_or(SettingsError::Invalid(WHY))?;
        let seen = match key {
            "dst" => {
                rule.dst = HostPattern::from_str(value)
                    .map_err(|_| SettingsError::Invalid("rule: bad dst"))?;
                &mut dst
            }
            "port" => {
                rule.ports = PortRange::from_str(value)
                    .map_err(|_| SettingsError::Invalid("rule: bad port"))?;
                &mut port
            }
            "user" => {
                rule.user = Some(
                    UserName::from_str(value)
                        .map_err(|_| SettingsError::Invalid("rule: bad user"))?,
                );
                &mut user
            }
            "client" => {
                rule.client = Some(
                    Cidr::from_str(value)
                        .map_err(|_| SettingsError::Invalid("rule: bad client"))?,
                );
                &mut client
            }
            "cmd" => {
                rule.commands = CommandSet::from_str(value)
                    .map_err(|_| SettingsError::Invalid("rule: bad cmd"))?;
                &mut cmd
            }
            _ => return Err(SettingsError::Invalid(WHY)),
        };
        if core::mem::replace(seen, true) {
            return Err(SettingsError::Invalid(WHY));
        }
    }
    Ok(rule)
}

fn write_rule(out: &mut impl fmt::Write, rule: &Rule) -> fmt::Result {
    write!(out, "{}", rule.action)?;
    if rule.dst != HostPattern::Any {
        write!(out, " dst {}", rule.dst)?;
    }
    if rule.ports != PortRange::ANY {
        write!(out, " port {}", rule.ports)?;
    }
    if let Some(user) = &rule.user {
        write!(out, " user {user}")?;
    }
    if let Some(client) = &rule.client {
        write!(out, " client {client}")?;
    }
    if rule.commands != CommandSet::ANY {
        write!(out, " cmd {}", rule.commands)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(settings: &Settings) -> String {
        let mut out = String::new();
        settings.write_text(&mut out).unwrap();
        out
    }

    #[test]
    fn text_form_round_trips() {
        let mut s = Settings::new(1080, Action::Allow);
        s.apply_line("address 192.168.1.80/24 gateway 192.168.1.1")
            .unwrap();
        s.apply_line("dns 192.168.1.1").unwrap();
        s.apply_line("per-client 3").unwrap();
        s.apply_line("max-sessions 12").unwrap();
        assert_eq!(s.max_sessions, 12);
        s.apply_line("timeouts 5 7 60").unwrap();
        s.apply_line("hostname gw-1").unwrap();
        s.set_user("alice", PasswordHash::with_iterations(b"pw", [1; 16], 2))
            .unwrap();
        s.add_rule("deny dst .example.com port 25 user alice client 10.0.0.0/8 cmd connect")
            .unwrap();
        s.add_rule("deny dst 127.0.0.0/8").unwrap();
        let written = text(&s);
        let back = Settings::parse(Settings::new(1, Action::Deny), &written).unwrap();
        assert_eq!(back, s);
        assert_eq!(text(&back), written);
        assert!(written.contains("address 192.168.1.80/24 gateway 192.168.1.1\n"));
        assert!(written.contains(
            "rule deny dst .example.com port 25 user alice client 10.0.0.0/8 cmd connect\n"
        ));
        assert!(!written.contains("pw "));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let err = Settings::parse(Settings::new(1080, Action::Allow), "port 1\nport x\n");
        assert_eq!(err.unwrap_err().line, 2);
        let err = Settings::parse(Settings::new(1080, Action::Allow), "colour blue");
        assert_eq!(err.unwrap_err().error, SettingsError::UnknownKey);
        let mut s = Settings::new(1080, Action::Allow);
        assert!(s.apply_line("port 0").is_err());
        assert!(s.apply_line("port 1 2").is_err());
        assert!(s.apply_line("max-sessions 65536").is_err());
        assert!(s.apply_line("max-sessions -1").is_err());
        assert!(s.apply_line("rule maybe dst *").is_err());
        assert!(s.apply_line("rule deny dst a.test dst b.test").is_err());
        assert!(s.apply_line("address 10.0.0.1/33").is_err());
        assert!(s.apply_line("user bob 1 00 00").is_err());
        assert_eq!(s.remove_user("nobody"), Err(SettingsError::NotFound));
        assert_eq!(s.remove_rule(0), Err(SettingsError::NotFound));
        assert_eq!(s, Settings::new(1080, Action::Allow));
    }

    #[test]
    fn users_require_a_password_and_refuse_socks4() {
        let mut s = Settings::new(1080, Action::Allow);
        assert_eq!(
            s.policy().authentication,
            Authentication::None { socks4: true }
        );
        s.socks4 = false;
        assert_eq!(
            s.policy().authentication,
            Authentication::None { socks4: false }
        );
        s.socks4 = true;
        s.set_user(
            "alice",
            PasswordHash::with_iterations(b"secret", [2; 16], 8),
        )
        .unwrap();
        s.set_user("bob", PasswordHash::with_iterations(b"", [3; 16], 8))
            .unwrap();
        assert_eq!(s.policy().authentication, Authentication::PASSWORD);
        assert!(s.authenticate(b"alice", b"secret"));
        assert!(s.authenticate(b"bob", b""));
        assert!(!s.authenticate(b"alice", b"secret2"));
        assert!(!s.authenticate(b"Alice", b"secret"));
        assert!(!s.authenticate(b"bob", b"secret"));
        assert!(!s.authenticate(b"", b""));
        // A replaced password: only the new one works.
        s.set_user("alice", PasswordHash::with_iterations(b"new", [4; 16], 8))
            .unwrap();
        assert!(!s.authenticate(b"alice", b"secret"));
        assert!(s.authenticate(b"alice", b"new"));
        s.remove_user("alice").unwrap();
        assert!(!s.authenticate(b"alice", b"new"));
    }
}
