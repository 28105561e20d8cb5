//! Access rules: the allocation-free evaluator every front end shares.
//!
//! A [`Rules`] value is an ordered list of [`Rule`]s in caller storage (a native server's
//! `Vec<Rule>`, firmware's static array) and a default [`Action`]. Each rule may restrict
//!
//! * the client address ([`Cidr`], IPv4 or IPv6),
//! * the authenticated user ([`UserName`], compared exactly, octet for octet),
//! * the command ([`CommandSet`]),
//! * the destination host ([`HostPattern`]: any, a CIDR, an exact domain name, or a domain
//!   suffix such as `.example.com` matching `example.com` and every name below it;
//!   names compare ASCII case-insensitively and ignore one trailing dot),
//! * the destination port ([`PortRange`]).
//!
//! The first rule whose every restriction matches decides; if none does, the default does.
//! [`Decision::rule`] names the deciding rule's index for logs.
//!
//! # Names, addresses and DNS
//!
//! A destination sent as a name that spells an IP literal (`"10.0.0.1"`, `"::1"`) is treated
//! as that address ([`Addr::normalized`]). Addresses are compared in canonical form: an
//! IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is the IPv4 address, for clients,
//! destinations and CIDRs written that way (prefix ≥ 96), so a dual-stack socket cannot
//! sidestep an IPv4 rule. Other IPv4-embedding forms (NAT64, 6to4) are not folded.
//!
//! A domain name never matches a CIDR rule by itself: whether `intranet.example` is in
//! `10.0.0.0/8` is only known after resolution, and a name like `167772161`, which the
//! system resolver may read as 10.0.0.1, is not an IP literal here. So evaluation is in two
//! steps, and drivers MUST follow them:
//!
//! 1. [`Rules::evaluate`] before resolving. It returns [`Verdict::Decided`] when the outcome
//!    cannot depend on the address (always for IP destinations) — a denied name is then
//!    refused without a DNS query — or [`Verdict::NeedsResolution`] when a CIDR rule that
//!    might match comes before the deciding rule.
//! 2. On `NeedsResolution`, resolve, and call [`Rules::evaluate_resolved`] with **each**
//!    address before connecting to it. That evaluation knows both the name (for name rules)
//!    and the address (for CIDR rules), so `deny 10.0.0.0/8` cannot be bypassed with a name
//!    and `allow .example.com` still applies after resolution.
//!
//! For UDP ASSOCIATE the request's DST is the client's own source, not a destination:
//! drivers evaluate each datagram (command [`Command::UdpAssociate`], the datagram's DST)
//! in the same two steps. Only pass [`Query::user`] names that were authenticated (RFC 1929,
//! GSS-API), not a SOCKS4 USERID taken on trust, unless that is the policy intended.
//!
//! ```
//! use socksgate_core::rules::{Action, CommandSet, Query, Rule, Rules, Verdict};
//! use socksgate_core::wire::Command;
//! use socksgate_core::{Addr, Domain};
//!
//! let rules = [
//!     Rule::deny().dst("10.0.0.0/8".parse().unwrap()),
//!     Rule::allow().dst(".example.com".parse().unwrap()).ports("443".parse().unwrap()),
//!     Rule::allow().commands(CommandSet::CONNECT).client("192.0.2.0/24".parse().unwrap()),
//! ];
//! let rules = Rules::new(&rules, Action::Deny);
//!
//! let name = Domain::new(b"WWW.Example.COM.").unwrap();
//! let query = Query {
//!     client: "198.51.100.9".parse().unwrap(),
//!     user: None,
//!     command: Command::Connect,
//!     dst: Addr::Domain(name, 443),
//! };
//! // Rule 0 might match once the name is resolved.
//! assert_eq!(rules.evaluate(&query), Verdict::NeedsResolution);
//! let d = rules.evaluate_resolved(&query, "93.184.215.14".parse().unwrap());
//! assert_eq!((d.action, d.rule), (Action::Allow, Some(1)));
//! let d = rules.evaluate_resolved(&query, "10.1.2.3".parse().unwrap());
//! assert_eq!((d.action, d.rule), (Action::Deny, Some(0)));
//!
//! // An IP destination is decided at once.
//! let query = Query { dst: Addr::Ip("10.0.0.1:22".parse().unwrap()), ..query };
//! let d = rules.evaluate(&query).decision().unwrap();
//! assert_eq!((d.action, d.rule), (Action::Deny, Some(0)));
//! ```

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ops::BitOr;
use core::str::FromStr;

use crate::addr::{Addr, Domain, DomainBuf, MAX_DOMAIN_LEN};
use crate::wire::Command;

/// What a rule (or the default) does with a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Refuse it (SOCKS5 REP 2, "connection not allowed by ruleset").
    Deny,
}

impl FromStr for Action {
    type Err = ParseError;

    /// `"allow"` or `"deny"`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            _ => Err(ParseError::InvalidAction),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// Why a rule component's text does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParseError {
    /// Not `allow` or `deny`.
    InvalidAction,
    /// Not an IPv4 or IPv6 address (also for names made only of digits and dots, which are
    /// almost certainly mistyped addresses).
    InvalidAddress,
    /// The prefix length is not a number, or longer than the address (32 or 128).
    InvalidPrefix,
    /// The address has bits set beyond the prefix (`10.0.0.1/8`): write `10.0.0.0/8`, or
    /// `10.0.0.1/32` for one host.
    HostBitsSet,
    /// A port is not a number 0–65535.
    InvalidPort,
    /// A port range's start is after its end.
    ReversedRange,
    /// An empty name, user or list.
    Empty,
    /// A name longer than 255 octets.
    TooLong,
    /// A domain pattern with a character other than letters, digits, `-`, `_`, `.` or
    /// non-ASCII (UTF-8) text.
    InvalidName,
    /// A domain pattern with an empty label (`a..b`).
    EmptyLabel,
    /// A `*` other than the whole pattern: write `.example.com` for "example.com and every
    /// name below it".
    Wildcard,
    /// A command other than `connect`, `bind`, `udp_associate` or `*`.
    UnknownCommand,
    /// An address family other than `prefer_ipv6`, `prefer_ipv4`, `ipv4_only`, `ipv6_only`.
    AddressFamily,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidAction => "expected `allow` or `deny`",
            Self::InvalidAddress => "invalid IP address",
            Self::InvalidPrefix => "invalid prefix length",
            Self::HostBitsSet => "address has bits set beyond the prefix length",
            Self::InvalidPort => "invalid port (expected 0-65535)",
            Self::ReversedRange => "port range start is after its end",
            Self::Empty => "empty value",
            Self::TooLong => "longer than 255 octets",
            Self::InvalidName => "invalid character in domain name",
            Self::EmptyLabel => "empty label in domain name",
            Self::Wildcard => "`*` is only valid alone; use `.example.com` for subdomains",
            Self::UnknownCommand => "expected `connect`, `bind`, `udp_associate` or `*`",
            Self::AddressFamily => {
                "expected `prefer_ipv6`, `prefer_ipv4`, `ipv4_only` or `ipv6_only`"
            }
        })
    }
}

impl core::error::Error for ParseError {}

// ---- CIDR ----------------------------------------------------------------------------------

/// An IPv4 or IPv6 network: an address with its host bits zero and a prefix length.
///
/// IPv4-mapped IPv6 networks with a prefix of at least 96 are stored as the IPv4 network
/// (`::ffff:10.0.0.0/104` is `10.0.0.0/8`), matching how addresses are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix`. Errors: [`ParseError::InvalidPrefix`] if `prefix` exceeds the address
    /// length, [`ParseError::HostBitsSet`] if `addr` has bits set beyond it.
    pub const fn new(addr: IpAddr, prefix: u8) -> Result<Self, ParseError> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 && prefix <= 128 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    Err(ParseError::InvalidPrefix)
                } else if a.to_bits() & !mask32(prefix) != 0 {
                    Err(ParseError::HostBitsSet)
                } else {
                    Ok(Self { addr, prefix })
                }
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    Err(ParseError::InvalidPrefix)
                } else if a.to_bits() & !mask128(prefix) != 0 {
                    Err(ParseError::HostBitsSet)
                } else {
                    Ok(Self { addr, prefix })
                }
            }
        }
    }

    /// The network of `prefix` bits around `ip` (IPv4-mapped IPv6 counts as IPv4): the host
    /// bits are cleared, and a prefix longer than the address is the address itself.
    pub const fn around(ip: IpAddr, prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let prefix = if prefix > 32 { 32 } else { prefix };
                Self {
                    addr: IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask32(prefix))),
                    prefix,
                }
            }
            IpAddr::V6(a) => {
                let prefix = if prefix > 128 { 128 } else { prefix };
                Self {
                    addr: IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask128(prefix))),
                    prefix,
                }
            }
        }
    }

    /// The network of one address (`/32` or `/128`).
    pub const fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        let prefix = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Self { addr, prefix }
    }

    /// The network address.
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (in canonical form: IPv4-mapped IPv6 counts as IPv4) is in the network.
    /// IPv4 networks contain only IPv4 addresses and IPv6 networks only IPv6 ones.
    pub const fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                ip.to_bits() & mask32(self.prefix) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                ip.to_bits() & mask128(self.prefix) == net.to_bits()
            }
            _ => false,
        }
    }
}

const fn mask32(prefix: u8) -> u32 {
    match u32::MAX.checked_shl(32u32.saturating_sub(prefix as u32)) {
        Some(m) => m,
        None => 0,
    }
}

const fn mask128(prefix: u8) -> u128 {
    match u128::MAX.checked_shl(128u32.saturating_sub(prefix as u32)) {
        Some(m) => m,
        None => 0,
    }
}

impl FromStr for Cidr {
    type Err = ParseError;

    /// `"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare address for one host (`"192.0.2.1"`).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr = addr.parse().map_err(|_| ParseError::InvalidAddress)?;
                if prefix.is_empty()
                    || prefix.len() > 3
                    || !prefix.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(ParseError::InvalidPrefix);
                }
                let prefix = prefix.parse().map_err(|_| ParseError::InvalidPrefix)?;
                Self::new(addr, prefix)
            }
            None => s
                .parse()
                .map(Self::host)
                .map_err(|_| ParseError::InvalidAddress),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

// ---- host patterns ---------------------------------------------------------------------------

/// What a rule requires of the destination host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HostPattern {
    /// Any destination (`"*"`).
    #[default]
    Any,
    /// An IP destination in this network (`"10.0.0.0/8"`, `"192.0.2.1"`). Matches names only
    /// once resolved (see the [module documentation](self)).
    Cidr(Cidr),
    /// Exactly this name (`"example.com"`), stored lower-case without a trailing dot.
    Exact(DomainBuf),
    /// This name or any name below it (`".example.com"`), stored lower-case without leading
    /// or trailing dots.
    Suffix(DomainBuf),
}

impl HostPattern {
    /// Whether the destination name `name` matches: always for [`Any`](Self::Any), never for
    /// a [`Cidr`](Self::Cidr). One trailing dot is ignored; ASCII letters compare
    /// case-insensitively.
    pub fn matches_name(&self, name: Domain<'_>) -> bool {
        let name = name.as_bytes();
        let name = name.strip_suffix(b".").unwrap_or(name);
        match self {
            Self::Any => true,
            Self::Cidr(_) => false,
            Self::Exact(p) => name.eq_ignore_ascii_case(p.as_domain().as_bytes()),
            Self::Suffix(p) => {
                let p = p.as_domain().as_bytes();
                if name.eq_ignore_ascii_case(p) {
                    return true;
                }
                let Some(dot) = name.len().checked_sub(p.len() + 1) else {
                    return false;
                };
                name.get(dot) == Some(&b'.')
                    && name
                        .get(dot + 1..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(p))
            }
        }
    }

    /// Whether the address `ip` matches (never for name patterns).
    pub const fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Cidr(c) => c.contains(ip),
            Self::Exact(_) | Self::Suffix(_) => false,
        }
    }
}

impl FromStr for HostPattern {
    type Err = ParseError;

    /// `"*"`; a CIDR or an address (see [`Cidr`]'s `FromStr`); `".example.com"` (suffix); or
    /// `"example.com"` (exact). One trailing dot is dropped and names are lower-cased.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if s.contains('/') {
            return s.parse().map(Self::Cidr);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Cidr(Cidr::host(ip)));
        }
        if s.contains('*') {
            return Err(ParseError::Wildcard);
        }
        let (suffix, name) = match s.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(ParseError::Empty);
        }
        if name.len() > MAX_DOMAIN_LEN {
            return Err(ParseError::TooLong);
        }
        if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(ParseError::InvalidAddress);
        }
        if !name
            .bytes()
            .all(|b| !b.is_ascii() || b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ParseError::InvalidName);
        }
        if name.split('.').any(str::is_empty) {
            return Err(ParseError::EmptyLabel);
        }
        let mut lower = [0u8; MAX_DOMAIN_LEN];
        let mut len = 0;
        for (dst, b) in lower.iter_mut().zip(name.bytes()) {
            *dst = b.to_ascii_lowercase();
            len += 1;
        }
        let name = lower.get(..len).ok_or(ParseError::TooLong)?;
        let name = DomainBuf::new(name).map_err(|_| ParseError::InvalidName)?;
        Ok(if suffix {
            Self::Suffix(name)
        } else {
            Self::Exact(name)
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Cidr(c) => fmt::Display::fmt(c, f),
            Self::Exact(name) => fmt::Display::fmt(name, f),
            Self::Suffix(name) => write!(f, ".{name}"),
        }
    }
}

// ---- ports -----------------------------------------------------------------------------------

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// Every port, 0–65535.
    pub const ANY: Self = Self {
        start: 0,
        end: u16::MAX,
    };

    /// `start..=end`, or [`ParseError::ReversedRange`] if `start > end`.
    pub const fn new(start: u16, end: u16) -> Result<Self, ParseError> {
        if start > end {
            Err(ParseError::ReversedRange)
        } else {
            Ok(Self { start, end })
        }
    }

    /// One port.
    pub const fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    /// The first port.
    pub const fn start(&self) -> u16 {
        self.start
    }

    /// The last port (inclusive).
    pub const fn end(&self) -> u16 {
        self.end
    }

    /// Whether `port` is in the range.
    pub const fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::ANY
    }
}

fn parse_port(s: &str) -> Result<u16, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidPort);
    }
    s.parse().map_err(|_| ParseError::InvalidPort)
}

impl FromStr for PortRange {
    type Err = ParseError;

    /// `"443"`, `"8000-8999"` (inclusive), or `"*"` for every port.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s == "*" {
            return Ok(Self::ANY);
        }
        match s.split_once('-') {
            Some((start, end)) => Self::new(parse_port(start)?, parse_port(end)?),
            None => parse_port(s).map(Self::single),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ANY {
            f.write_str("*")
        } else if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

// ---- commands --------------------------------------------------------------------------------

/// A set of commands. [`ANY`](Self::ANY) also contains commands this crate does not name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CommandSet(u8);

impl CommandSet {
    /// No command.
    pub const NONE: Self = Self(0);
    /// CONNECT.
    pub const CONNECT: Self = Self(1);
    /// BIND.
    pub const BIND: Self = Self(2);
    /// UDP ASSOCIATE.
    pub const UDP_ASSOCIATE: Self = Self(4);
    /// Every command, including unknown ones.
    pub const ANY: Self = Self(0xff);

    /// The set of the single command `command` (empty for an unknown command).
    pub const fn of(command: Command) -> Self {
        match command {
            Command::Connect => Self::CONNECT,
            Command::Bind => Self::BIND,
            Command::UdpAssociate => Self::UDP_ASSOCIATE,
            Command::Unknown(_) => Self::NONE,
        }
    }

    /// Both sets' commands.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether `command` is in the set.
    pub const fn contains(&self, command: Command) -> bool {
        match command {
            Command::Unknown(_) => self.0 == Self::ANY.0,
            known => self.0 & Self::of(known).0 != 0,
        }
    }
}

impl Default for CommandSet {
    fn default() -> Self {
        Self::ANY
    }
}

impl BitOr for CommandSet {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// The commands a set can name, by the core's names (`Command::name`).
const NAMED: [Command; 3] = [Command::Connect, Command::Bind, Command::UdpAssociate];

impl FromStr for CommandSet {
    type Err = ParseError;

    /// `"*"`, or a comma-separated list of `connect`, `bind`, `udp_associate` (spaces around
    /// the names are ignored).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.trim() == "*" {
            return Ok(Self::ANY);
        }
        if s.trim().is_empty() {
            return Err(ParseError::Empty);
        }
        s.split(',').try_fold(Self::NONE, |set, name| {
            let command = NAMED
                .into_iter()
                .find(|c| c.name() == Some(name.trim()))
                .ok_or(ParseError::UnknownCommand)?;
            Ok(set | Self::of(command))
        })
    }
}

impl fmt::Display for CommandSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ANY {
            return f.write_str("*");
        }
        let mut sep = "";
        for command in NAMED.into_iter().filter(|&c| self.contains(c)) {
            write!(f, "{sep}{command}")?;
            sep = ",";
        }
        Ok(())
    }
}

// ---- users -----------------------------------------------------------------------------------

/// A user name a rule requires: 1–255 octets, compared exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UserName(heapless::Vec<u8, 255>);

impl UserName {
    /// Copies `name`; [`ParseError::Empty`] or [`ParseError::TooLong`] otherwise.
    pub fn new(name: &[u8]) -> Result<Self, ParseError> {
        if name.is_empty() {
            return Err(ParseError::Empty);
        }
        heapless::Vec::from_slice(name)
            .map(Self)
            .map_err(|_| ParseError::TooLong)
    }

    /// The name's octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::new(s.as_bytes())
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

// ---- rules -----------------------------------------------------------------------------------

/// One access rule: an action and the restrictions a request must meet for it to apply.
/// Unset restrictions match everything.
///
/// Build with [`Rule::allow`] / [`Rule::deny`] and the builder methods, or set the fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rule {
    /// What to do with a matching request.
    pub action: Action,
    /// The client's address must be in this network.
    pub client: Option<Cidr>,
    /// The request must carry exactly this authenticated user.
    pub user: Option<UserName>,
    /// The command must be in this set.
    pub commands: CommandSet,
    /// The destination host must match.
    pub dst: HostPattern,
    /// The destination port must be in this range.
    pub ports: PortRange,
}

impl Rule {
    /// A rule with `action` that matches every request.
    pub const fn new(action: Action) -> Self {
        Self {
            action,
            client: None,
            user: None,
            commands: CommandSet::ANY,
            dst: HostPattern::Any,
            ports: PortRange::ANY,
        }
    }

    /// An allow rule matching every request.
    pub const fn allow() -> Self {
        Self::new(Action::Allow)
    }

    /// A deny rule matching every request.
    pub const fn deny() -> Self {
        Self::new(Action::Deny)
    }

    /// Restricts the client address.
    #[must_use]
    pub const fn client(mut self, net: Cidr) -> Self {
        self.client = Some(net);
        self
    }

    /// Restricts the authenticated user.
    #[must_use]
    pub fn user(mut self, user: UserName) -> Self {
        self.user = Some(user);
        self
    }

    /// Restricts the command.
    #[must_use]
    pub const fn commands(mut self, commands: CommandSet) -> Self {
        self.commands = commands;
        self
    }

    /// Restricts the destination host.
    #[must_use]
    pub fn dst(mut self, dst: HostPattern) -> Self {
        self.dst = dst;
        self
    }

    /// Restricts the destination port.
    #[must_use]
    pub const fn ports(mut self, ports: PortRange) -> Self {
        self.ports = ports;
        self
    }

    /// Three-valued match: `None` when only the destination address (not yet resolved)
    /// could tell.
    fn matches(&self, q: &Query<'_>, dst: &Dst<'_>) -> Option<bool> {
        let client_ok = self.client.is_none_or(|net| net.contains(q.client));
        let user_ok = match (&self.user, q.user) {
            (None, _) => true,
            (Some(want), Some(got)) => want.as_bytes() == got,
            (Some(_), None) => false,
        };
        if !(client_ok
            && user_ok
            && self.commands.contains(q.command)
            && self.ports.contains(dst.port))
        {
            return Some(false);
        }
        match (&self.dst, dst.name, dst.ip) {
            (HostPattern::Any, _, _) => Some(true),
            (HostPattern::Cidr(net), _, Some(ip)) => Some(net.contains(ip)),
            (HostPattern::Cidr(_), _, None) => None,
            (pattern, Some(name), _) => Some(pattern.matches_name(name)),
            (_, None, _) => Some(false),
        }
    }
}

/// The request being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Query<'a> {
    /// The client's address (of the TCP control connection, or the UDP datagram's source).
    pub client: IpAddr,
    /// The authenticated user name, if any.
    pub user: Option<&'a [u8]>,
    /// The command.
    pub command: Command,
    /// The destination as requested (for UDP: the datagram's DST).
    pub dst: Addr<'a>,
}

/// The outcome of evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The index in [`Rules::rules`] of the rule that decided, or `None` for the default.
    pub rule: Option<usize>,
}

impl Decision {
    /// Whether the action is [`Action::Allow`].
    pub const fn is_allowed(&self) -> bool {
        matches!(self.action, Action::Allow)
    }
}

/// The outcome of [`Rules::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use]
pub enum Verdict {
    /// Decided; resolution cannot change it.
    Decided(Decision),
    /// The destination is a name and a CIDR rule before the deciding one might match its
    /// address: resolve it and call [`Rules::evaluate_resolved`] for each address.
    NeedsResolution,
}

impl Verdict {
    /// The decision, if decided.
    pub const fn decision(self) -> Option<Decision> {
        match self {
            Self::Decided(d) => Some(d),
            Self::NeedsResolution => None,
        }
    }
}

/// The destination as the matcher sees it.
struct Dst<'a> {
    name: Option<Domain<'a>>,
    ip: Option<IpAddr>,
    port: u16,
}

// ---- protected destinations ----------------------------------------------------------------

/// Why a destination address is protected: see [`ProtectedDestinations`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Protection {
    /// 127.0.0.0/8 or `::1`: the proxy host's own services.
    Loopback,
    /// 169.254.0.0/16 (the cloud metadata service 169.254.169.254) or `fe80::/10`.
    LinkLocal,
    /// 0.0.0.0 or `::`, which a connect reaches the proxy host with.
    Unspecified,
    /// 224.0.0.0/4 or `ff00::/8`.
    Multicast,
    /// One of the proxy host's own addresses.
    OwnAddress,
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::OwnAddress => "the proxy host's own address",
        })
    }
}

/// Destination addresses refused unless an allow rule names them by address: the defence
/// against a proxy being used to reach its own host (SSRF).
///
/// When on, a destination address is *protected* if it is loopback (127.0.0.0/8, `::1`),
/// link-local (169.254.0.0/16 — the cloud metadata service 169.254.169.254 — and
/// `fe80::/10`), unspecified (0.0.0.0, `::`), multicast (224.0.0.0/4, `ff00::/8`), or one of
/// the [`own`](Self::own) addresses the driver supplies; IPv4-mapped IPv6 forms count as
/// the IPv4 address. A protected address is refused even though the rules allow it, unless
/// the deciding rule is an allow rule whose destination is a CIDR (or single address) that
/// contains it ([`Rules::screen`]): `HostPattern::Any`, `0.0.0.0/0` and `::/0` (which name no
/// address in particular), a name pattern or the default action never open one.
///
/// The [session](crate::session) applies it to CONNECT destinations and BIND peers (an IP
/// destination before anything else, each resolved address of a name) and
/// [associations](crate::udp::association) to every datagram's destination; a refused
/// request gets REP 2 (SOCKS4: CD 91) with `Close::Protected`, a refused datagram is
/// `Dropped::Protected`. A BIND peer of 0.0.0.0 means "any peer", not a destination, and is
/// not refused. Off by default ([`Rules::new`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProtectedDestinations<'r> {
    on: bool,
    own: &'r [IpAddr],
}

impl<'r> ProtectedDestinations<'r> {
    /// Nothing protected.
    pub const OFF: Self = Self {
        on: false,
        own: &[],
    };

    /// On, with `own` as the proxy host's addresses (in any form; compared canonically).
    pub const fn on(own: &'r [IpAddr]) -> Self {
        Self { on: true, own }
    }

    /// Whether destinations are protected.
    pub const fn is_on(&self) -> bool {
        self.on
    }

    /// The proxy host's addresses, protected as [`Protection::OwnAddress`].
    pub const fn own(&self) -> &'r [IpAddr] {
        self.own
    }

    /// Why `ip` is protected, or `None` when it is not (or protection is off).
    pub fn protection(&self, ip: IpAddr) -> Option<Protection> {
        if !self.on {
            return None;
        }
        let ip = ip.to_canonical();
        let kind = match ip {
            IpAddr::V4(a) if a.is_loopback() => Protection::Loopback,
            IpAddr::V4(a) if a.is_link_local() => Protection::LinkLocal,
            IpAddr::V4(a) if a.is_unspecified() => Protection::Unspecified,
            IpAddr::V4(a) if a.is_multicast() => Protection::Multicast,
            IpAddr::V6(a) if a.is_loopback() => Protection::Loopback,
            IpAddr::V6(a) if a.is_unicast_link_local() => Protection::LinkLocal,
            IpAddr::V6(a) if a.is_unspecified() => Protection::Unspecified,
            IpAddr::V6(a) if a.is_multicast() => Protection::Multicast,
            _ if self.own.iter().any(|o| o.to_canonical() == ip) => Protection::OwnAddress,
            _ => return None,
        };
        Some(kind)
    }
}

/// Why a destination is refused: the rules deny it, or it is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// The rules deny it.
    Denied(Decision),
    /// The rules allow it, but not by naming its address, and it is protected
    /// ([`ProtectedDestinations`]).
    Protected(Protection),
    /// The rules allow it, but its family is not the one the deciding rule (or the default)
    /// uses for names ([`AddressFamily`](crate::family::AddressFamily)).
    Family(crate::family::AddressFamily),
}

impl From<Decision> for Refusal {
    fn from(d: Decision) -> Self {
        Self::Denied(d)
    }
}

/// Ordered rules in caller storage, the action when none matches, and the destinations only
/// a rule naming them opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rules<'r> {
    /// The rules, first match wins.
    pub rules: &'r [Rule],
    /// The action when no rule matches.
    pub default: Action,
    /// Destination addresses refused unless an allow rule names them by address; off by
    /// default.
    pub protected: ProtectedDestinations<'r>,
}

impl<'r> Rules<'r> {
    /// Wraps `rules` with a `default` action; protected destinations are off.
    pub const fn new(rules: &'r [Rule], default: Action) -> Self {
        Self {
            rules,
            default,
            protected: ProtectedDestinations::OFF,
        }
    }

    /// The same rules with `protected` destinations.
    #[must_use]
    pub const fn with_protected(mut self, protected: ProtectedDestinations<'r>) -> Self {
        self.protected = protected;
        self
    }

    /// The protected-destination check for a connection to (or datagram for) `ip` that
    /// `decision` allowed: `Err` when `ip` is [protected](ProtectedDestinations) and the
    /// deciding rule is not an allow rule whose CIDR destination (longer than `/0`) contains
    /// `ip`. Drivers that
    /// use the session or the association never call this: they apply it.
    pub fn screen(&self, decision: Decision, ip: IpAddr) -> Result<(), Protection> {
        let Some(kind) = self.protected.protection(ip) else {
            return Ok(());
        };
        let named = decision.is_allowed()
            && decision
                .rule
                .and_then(|i| self.rules.get(i))
                .is_some_and(|r| match r.dst {
                    HostPattern::Cidr(net) => net.prefix_len() > 0 && net.contains(ip),
                    _ => false,
                });
        if named { Ok(()) } else { Err(kind) }
    }

    /// Both checks for a connection to `ip`, the resolved address of `query`'s destination
    /// (or the address itself): [`evaluate_resolved`](Self::evaluate_resolved), then
    /// [`screen`](Self::screen).
    pub fn check_resolved(&self, query: &Query<'_>, ip: IpAddr) -> Result<Decision, Refusal> {
        let d = self.evaluate_resolved(query, ip);
        if !d.is_allowed() {
            return Err(Refusal::Denied(d));
        }
        self.screen(d, ip).map_err(Refusal::Protected)?;
        Ok(d)
    }

    /// Evaluates `query` before its destination is resolved. See the
    /// [module documentation](self) for the two-step protocol drivers MUST follow.
    pub fn evaluate(&self, query: &Query<'_>) -> Verdict {
        let dst = match query.dst.normalized() {
            Addr::Ip(sa) => Dst {
                name: None,
                ip: Some(sa.ip()),
                port: sa.port(),
            },
            Addr::Domain(name, port) => Dst {
                name: Some(name),
                ip: None,
                port,
            },
        };
        self.run(query, &dst)
    }

    /// Evaluates `query` for a connection to `ip`, the resolved address of its destination
    /// (or, for an IP destination, the address itself). Name rules match `query.dst`'s name;
    /// CIDR rules match `ip`. Call it for every address before connecting to it.
    pub fn evaluate_resolved(&self, query: &Query<'_>, ip: IpAddr) -> Decision {
        let name = match query.dst.normalized() {
            Addr::Domain(name, _) => Some(name),
            Addr::Ip(_) => None,
        };
        let dst = Dst {
            name,
            ip: Some(ip),
            port: query.dst.port(),
        };
        match self.run(query, &dst) {
            Verdict::Decided(d) => d,
            // Unreachable: with the address known every rule decides. Fail closed anyway.
            Verdict::NeedsResolution => Decision {
                action: Action::Deny,
                rule: None,
            },
        }
    }

    fn run(&self, query: &Query<'_>, dst: &Dst<'_>) -> Verdict {
        let mut undecided = false;
        for (index, rule) in self.rules.iter().enumerate() {
            match rule.matches(query, dst) {
                Some(true) if undecided => return Verdict::NeedsResolution,
                Some(true) => {
                    return Verdict::Decided(Decision {
                        action: rule.action,
                        rule: Some(index),
                    });
                }
                Some(false) => {}
                None => undecided = true,
            }
        }
        if undecided {
            Verdict::NeedsResolution
        } else {
            Verdict::Decided(Decision {
                action: self.default,
                rule: None,
            })
        }
    }
}

#[cfg(test)]
mod test {
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    fn name(s: &str) -> Domain<'_> {
        Domain::new(s.as_bytes()).unwrap()
    }

    fn q<'a>(client: &str, user: Option<&'a str>, command: Command, dst: Addr<'a>) -> Query<'a> {
        Query {
            client: ip(client),
            user: user.map(str::as_bytes),
            command,
            dst,
        }
    }

    fn sa(s: &str) -> Addr<'static> {
        Addr::Ip(s.parse::<SocketAddr>().unwrap())
    }

    fn decided(action: Action, rule: Option<usize>) -> Verdict {
        Verdict::Decided(Decision { action, rule })
    }

    #[test]
    fn test_cidr_parse() {
        assert_eq!(cidr("10.0.0.0/8"), Cidr::new(ip("10.0.0.0"), 8).unwrap());
        assert_eq!(cidr("192.0.2.1").prefix_len(), 32);
        assert_eq!(cidr("::1").prefix_len(), 128);
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!("10.0.0.1/8".parse::<Cidr>(), Err(ParseError::HostBitsSet));
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(ParseError::InvalidPrefix)
        );
        assert_eq!("::/129".parse::<Cidr>(), Err(ParseError::InvalidPrefix));
        assert_eq!("10.0.0.0/".parse::<Cidr>(), Err(ParseError::InvalidPrefix));
        assert_eq!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(ParseError::InvalidPrefix)
        );
        assert_eq!(
            "10.0.0.0/0008".parse::<Cidr>(),
            Err(ParseError::InvalidPrefix)
        );
        assert_eq!("10.0.0/8".parse::<Cidr>(), Err(ParseError::InvalidAddress));
        assert_eq!(
            "example.com".parse::<Cidr>(),
            Err(ParseError::InvalidAddress)
        );
        assert_eq!("".parse::<Cidr>(), Err(ParseError::InvalidAddress));
    }

    #[test]
    fn test_cidr_around() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            Cidr::around(ip("192.0.2.77"), 24),
            "192.0.2.0/24".parse().unwrap()
        );
        assert_eq!(
            Cidr::around(ip("::ffff:192.0.2.77"), 32),
            "192.0.2.77/32".parse().unwrap()
        );
        assert_eq!(
            Cidr::around(ip("2001:db8:1:2:3:4:5:6"), 64),
            "2001:db8:1:2::/64".parse().unwrap()
        );
        assert_eq!(Cidr::around(ip("192.0.2.1"), 99).prefix_len(), 32);
        assert_eq!(Cidr::around(ip("::1"), 200).prefix_len(), 128);
        assert_eq!(Cidr::around(ip("192.0.2.1"), 0).addr(), ip("0.0.0.0"));
    }

    #[test]
    fn test_cidr_contains() {
        let net = cidr("10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("::a00:1")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("127.0.0.1")));
        assert!(cidr("fe80::/10").contains(ip("febf::1")));
        assert!(!cidr("fe80::/10").contains(ip("fec0::1")));
    }

    #[test]
    fn test_cidr_v4_mapped() {
        // Mapped clients and destinations are IPv4.
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!cidr("::/0").contains(ip("::ffff:10.1.2.3")));
        // Mapped networks are stored as IPv4.
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:0:0/96"), cidr("0.0.0.0/0"));
        assert_eq!(cidr("::ffff:10.0.0.1"), cidr("10.0.0.1/32"));
        assert_eq!(Cidr::host(ip("::ffff:10.0.0.1")), cidr("10.0.0.1"));
        // IPv4-compatible and NAT64 forms are not folded.
        assert!(!cidr("10.0.0.0/8").contains(ip("::10.0.0.1")));
        assert!(!cidr("10.0.0.0/8").contains(ip("64:ff9b::10.0.0.1")));
    }

    #[test]
    fn test_host_pattern_parse() {
        assert_eq!(pat("*"), HostPattern::Any);
        assert_eq!(pat("10.0.0.0/8"), HostPattern::Cidr(cidr("10.0.0.0/8")));
        assert_eq!(pat("::1"), HostPattern::Cidr(cidr("::1/128")));
        let ex = DomainBuf::new(b"example.com").unwrap();
        assert_eq!(pat("Example.COM."), HostPattern::Exact(ex.clone()));
        assert_eq!(pat(".example.com"), HostPattern::Suffix(ex.clone()));
        assert_eq!(pat(".example.com."), HostPattern::Suffix(ex));
        assert_eq!(pat("_srv.b-c.example").to_string(), "_srv.b-c.example");
        assert_eq!(pat(".bücher.example").to_string(), ".bücher.example");
        for (s, e) in [
            ("", ParseError::Empty),
            (".", ParseError::Empty),
            ("..", ParseError::Empty),
            ("a..b", ParseError::EmptyLabel),
            ("..example.com", ParseError::EmptyLabel),
            ("*.example.com", ParseError::Wildcard),
            ("ex*", ParseError::Wildcard),
            ("example.com:443", ParseError::InvalidName),
            ("[::1]", ParseError::InvalidName),
            ("exa mple", ParseError::InvalidName),
            ("a\0b", ParseError::InvalidName),
            ("10.0.0.256", ParseError::InvalidAddress),
            ("167772161", ParseError::InvalidAddress),
            ("10.0.0.1/8", ParseError::HostBitsSet),
        ] {
            assert_eq!(s.parse::<HostPattern>(), Err(e), "{s:?}");
        }
        let long = "a".repeat(256);
        assert_eq!(long.parse::<HostPattern>(), Err(ParseError::TooLong));
        assert!("a".repeat(255).parse::<HostPattern>().is_ok());
    }

    #[test]
    fn test_host_pattern_names() {
        let exact = pat("example.com");
        let suffix = pat(".example.com");
        for (n, e, s) in [
            ("example.com", true, true),
            ("EXAMPLE.com.", true, true),
            ("www.example.com", false, true),
            ("a.b.Example.Com.", false, true),
            ("badexample.com", false, false),
            ("example.com.evil", false, false),
            ("example.co", false, false),
            ("com", false, false),
            (".example.com", false, true),
            ("example.com..", false, false),
        ] {
            assert_eq!(exact.matches_name(name(n)), e, "{n}");
            assert_eq!(suffix.matches_name(name(n)), s, "{n}");
        }
        assert!(HostPattern::Any.matches_name(name("x")));
        assert!(!pat("10.0.0.0/8").matches_name(name("10.0.0.1")));
        assert!(!exact.matches_ip(ip("93.184.215.14")));
    }

    #[test]
    fn test_port_range() {
        assert_eq!("443".parse(), Ok(PortRange::single(443)));
        assert_eq!("8000-8999".parse(), PortRange::new(8000, 8999));
        assert_eq!("*".parse(), Ok(PortRange::ANY));
        assert_eq!("0-65535".parse(), Ok(PortRange::ANY));
        for (s, e) in [
            ("", ParseError::InvalidPort),
            ("65536", ParseError::InvalidPort),
            ("-1", ParseError::InvalidPort),
            ("+1", ParseError::InvalidPort),
            ("1-", ParseError::InvalidPort),
            ("1-2-3", ParseError::InvalidPort),
            ("http", ParseError::InvalidPort),
            ("9-8", ParseError::ReversedRange),
        ] {
            assert_eq!(s.parse::<PortRange>(), Err(e), "{s:?}");
        }
        let r = PortRange::new(8000, 8999).unwrap();
        assert!(r.contains(8000) && r.contains(8999) && !r.contains(7999) && !r.contains(9000));
        assert_eq!(r.to_string(), "8000-8999");
        assert_eq!(PortRange::single(1).to_string(), "1");
        assert_eq!(PortRange::ANY.to_string(), "*");
    }

    #[test]
    fn test_command_set() {
        let set: CommandSet = "connect, udp_associate".parse().unwrap();
        assert!(set.contains(Command::Connect));
        assert!(!set.contains(Command::Bind));
        assert!(set.contains(Command::UdpAssociate));
        assert!(!set.contains(Command::Unknown(9)));
        assert!(CommandSet::ANY.contains(Command::Unknown(9)));
        assert_eq!(set.to_string(), "connect,udp_associate");
        assert_eq!("*".parse(), Ok(CommandSet::ANY));
        assert_eq!("bind".parse(), Ok(CommandSet::BIND));
        assert_eq!("".parse::<CommandSet>(), Err(ParseError::Empty));
        assert_eq!(
            "connect,".parse::<CommandSet>(),
            Err(ParseError::UnknownCommand)
        );
        assert_eq!("udp".parse::<CommandSet>(), Err(ParseError::UnknownCommand));
        assert_eq!(
            CommandSet::CONNECT | CommandSet::BIND,
            "bind,connect".parse().unwrap()
        );
    }

    #[test]
    fn test_user_and_action() {
        assert_eq!("".parse::<UserName>(), Err(ParseError::Empty));
        assert_eq!(
            "a".repeat(256).parse::<UserName>(),
            Err(ParseError::TooLong)
        );
        assert_eq!(UserName::new(b"al\xffce").unwrap().to_string(), "al\\xffce");
        assert_eq!("allow".parse(), Ok(Action::Allow));
        assert_eq!("deny".parse(), Ok(Action::Deny));
        assert_eq!("Allow".parse::<Action>(), Err(ParseError::InvalidAction));
        assert_eq!(Action::Deny.to_string(), "deny");
        assert!(!ParseError::Wildcard.to_string().is_empty());
    }

    #[test]
    fn test_first_match_wins_and_default() {
        let rules = [
            Rule::deny().client(cidr("192.0.2.66")),
            Rule::allow().user("alice".parse().unwrap()),
            Rule::allow()
                .commands(CommandSet::CONNECT)
                .ports("443".parse().unwrap()),
        ];
        let r = Rules::new(&rules, Action::Deny);
        let dst = sa("198.51.100.1:443");
        assert_eq!(
            r.evaluate(&q("192.0.2.66", Some("alice"), Command::Connect, dst)),
            decided(Action::Deny, Some(0))
        );
        assert_eq!(
            r.evaluate(&q("192.0.2.1", Some("alice"), Command::Bind, dst)),
            decided(Action::Allow, Some(1))
        );
        assert_eq!(
            r.evaluate(&q("192.0.2.1", Some("alic"), Command::Connect, dst)),
            decided(Action::Allow, Some(2))
        );
        assert_eq!(
            r.evaluate(&q("192.0.2.1", Some("Alice"), Command::Bind, dst)),
            decided(Action::Deny, None)
        );
        assert_eq!(
            r.evaluate(&q(
                "192.0.2.1",
                None,
                Command::Connect,
                sa("198.51.100.1:80")
            )),
            decided(Action::Deny, None)
        );
        assert_eq!(
            r.evaluate(&q("192.0.2.1", None, Command::Unknown(7), dst)),
            decided(Action::Deny, None)
        );
        // Empty rule list: the default.
        let open = Rules::new(&[], Action::Allow);
        let d = open
            .evaluate(&q("192.0.2.1", None, Command::Bind, dst))
            .decision()
            .unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.rule, None);
    }

    #[test]
    fn test_names_and_resolution() {
        let rules = [
            Rule::deny().dst(pat("10.0.0.0/8")),
            Rule::deny().dst(pat(".internal.example")),
            Rule::allow().dst(pat(".example.com")),
        ];
        let r = Rules::new(&rules, Action::Deny);
        let c = "192.0.2.1";
        let host = |n| q(c, None, Command::Connect, Addr::Domain(name(n), 443));

        // A CIDR rule comes first, so names need resolution.
        assert_eq!(
            r.evaluate(&host("www.example.com")),
            Verdict::NeedsResolution
        );
        assert_eq!(
            r.evaluate_resolved(&host("www.example.com"), ip("93.184.215.14")),
            Decision {
                action: Action::Allow,
                rule: Some(2)
            }
        );
        assert_eq!(
            r.evaluate_resolved(&host("www.example.com"), ip("10.9.9.9")),
            Decision {
                action: Action::Deny,
                rule: Some(0)
            }
        );
        assert_eq!(
            r.evaluate_resolved(&host("www.example.com"), ip("::ffff:10.9.9.9")),
            Decision {
                action: Action::Deny,
                rule: Some(0)
            }
        );
        // A numeric name the system resolver may read as 10.0.0.1 is caught after resolution.
        assert_eq!(r.evaluate(&host("167772161")), Verdict::NeedsResolution);
        assert_eq!(
            r.evaluate_resolved(&host("167772161"), ip("10.0.0.1"))
                .action,
            Action::Deny
        );
        assert_eq!(
            r.evaluate_resolved(&host("other.org"), ip("192.0.2.9")),
            Decision {
                action: Action::Deny,
                rule: None
            }
        );
        // IP literals sent as names are addresses.
        assert_eq!(
            r.evaluate(&host("10.1.1.1")),
            decided(Action::Deny, Some(0))
        );
        assert_eq!(
            r.evaluate(&host("::ffff:10.1.1.1")),
            decided(Action::Deny, Some(0))
        );
        assert_eq!(
            r.evaluate(&host("192.0.2.200")),
            decided(Action::Deny, None)
        );
        // An IP destination never matches a name rule.
        assert_eq!(
            r.evaluate(&q(c, None, Command::Connect, sa("93.184.215.14:443"))),
            decided(Action::Deny, None)
        );

        // With name rules first, names are decided without DNS.
        let rules = [
            Rule::allow().dst(pat(".example.com")),
            Rule::deny().dst(pat("10.0.0.0/8")),
            Rule::allow(),
        ];
        let r = Rules::new(&rules, Action::Deny);
        assert_eq!(
            r.evaluate(&host("example.com")),
            decided(Action::Allow, Some(0))
        );
        assert_eq!(r.evaluate(&host("other.org")), Verdict::NeedsResolution);
        // A CIDR rule that cannot match for other reasons does not defer the decision.
        let rules = [
            Rule::deny()
                .dst(pat("10.0.0.0/8"))
                .ports(PortRange::single(22)),
            Rule::allow(),
        ];
        let r = Rules::new(&rules, Action::Deny);
        assert_eq!(
            r.evaluate(&host("example.com")),
            decided(Action::Allow, Some(1))
        );
        // Undecided to the end also needs resolution.
        let rules = [Rule::allow().dst(pat("192.0.2.0/24"))];
        let r = Rules::new(&rules, Action::Deny);
        assert_eq!(r.evaluate(&host("example.com")), Verdict::NeedsResolution);
        assert_eq!(
            r.evaluate_resolved(&host("example.com"), ip("192.0.2.7"))
                .rule,
            Some(0)
        );
    }

    /// Firmware keeps rules in a `static`: the constructors are `const`.
    static FIRMWARE_RULES: [Rule; 2] = [
        Rule::deny().commands(CommandSet::BIND),
        Rule::allow().ports(PortRange::single(1080)),
    ];

    #[test]
    fn test_static_rules() {
        let r = Rules::new(&FIRMWARE_RULES, Action::Deny);
        let dst = sa("192.0.2.1:1080");
        assert_eq!(
            r.evaluate(&q("10.0.2.2", None, Command::Bind, dst)),
            decided(Action::Deny, Some(0))
        );
        assert_eq!(
            r.evaluate(&q("10.0.2.2", None, Command::Connect, dst)),
            decided(Action::Allow, Some(1))
        );
    }

    #[test]
    fn test_protected_destinations() {
        let own = [ip("::ffff:198.51.100.7"), ip("2001:db8::7")];
        let on = ProtectedDestinations::on(&own);
        for (a, want) in [
            ("127.0.0.1", Some(Protection::Loopback)),
            ("::ffff:127.1.2.3", Some(Protection::Loopback)),
            ("::1", Some(Protection::Loopback)),
            ("169.254.169.254", Some(Protection::LinkLocal)),
            ("fe80::1", Some(Protection::LinkLocal)),
            ("febf::1", Some(Protection::LinkLocal)),
            ("0.0.0.0", Some(Protection::Unspecified)),
            ("::", Some(Protection::Unspecified)),
            ("239.1.1.1", Some(Protection::Multicast)),
            ("ff05::2", Some(Protection::Multicast)),
            ("198.51.100.7", Some(Protection::OwnAddress)),
            ("2001:db8::7", Some(Protection::OwnAddress)),
            ("198.51.100.8", None),
            ("169.255.0.1", None),
            ("fec0::1", None),
            ("10.0.0.1", None),
        ] {
            assert_eq!(on.protection(ip(a)), want, "{a}");
            assert_eq!(ProtectedDestinations::OFF.protection(ip(a)), None, "{a}");
        }
        // Only an allow rule whose CIDR (longer than /0) contains the address opens it.
        let rules = [
            Rule::deny().dst(pat("127.0.0.9/32")),
            Rule::allow().dst(pat("127.0.0.0/30")),
            Rule::allow().dst(pat("0.0.0.0/0")),
            Rule::allow().dst(pat(".example.com")),
            Rule::allow(),
        ];
        let r = Rules::new(&rules, Action::Allow).with_protected(on);
        let by = |rule| Decision {
            action: rules.get(rule).map_or(Action::Allow, |r: &Rule| r.action),
            rule: Some(rule),
        };
        assert_eq!(r.screen(by(1), ip("127.0.0.2")), Ok(()));
        assert_eq!(r.screen(by(1), ip("::ffff:127.0.0.2")), Ok(()));
        assert_eq!(r.screen(by(1), ip("127.0.0.5")), Err(Protection::Loopback));
        for rule in [0, 2, 3, 4] {
            assert_eq!(
                r.screen(by(rule), ip("127.0.0.2")),
                Err(Protection::Loopback)
            );
        }
        let default = Decision {
            action: Action::Allow,
            rule: None,
        };
        assert_eq!(r.screen(default, ip("::1")), Err(Protection::Loopback));
        assert_eq!(r.screen(default, ip("192.0.2.1")), Ok(()));
        let q = q("192.0.2.1", None, Command::Connect, sa("127.0.0.2:80"));
        assert_eq!(r.check_resolved(&q, ip("127.0.0.2")), Ok(by(1)));
        assert_eq!(
            r.check_resolved(&q, ip("127.0.0.9")),
            Err(Refusal::Denied(by(0)))
        );
        assert_eq!(
            Rules::new(&rules, Action::Allow).screen(default, ip("::1")),
            Ok(())
        );
    }

    #[test]
    fn test_client_v4_mapped() {
        let rules = [Rule::allow().client(cidr("127.0.0.0/8"))];
        let r = Rules::new(&rules, Action::Deny);
        let d = r.evaluate(&q(
            "::ffff:127.0.0.1",
            None,
            Command::Connect,
            sa("192.0.2.1:80"),
        ));
        assert_eq!(d, decided(Action::Allow, Some(0)));
    }

    /// The first `prefix` bits of two 128-bit values agree, bit by bit.
    fn naive_prefix_eq(a: u128, b: u128, bits: u32, prefix: u32) -> bool {
        (0..prefix).all(|i| {
            let shift = bits - 1 - i;
            (a >> shift) & 1 == (b >> shift) & 1
        })
    }

    proptest! {
        #[test]
        fn prop_cidr_v4_contains(net in any::<u32>(), prefix in 0u8..=32, addr in any::<u32>(), near in any::<bool>()) {
            let masked = (0..u32::from(prefix)).fold(0u32, |m, i| m | (1 << (31 - i))) & net;
            // Half the time probe an address sharing the network's prefix.
            let addr = if near { masked | (addr & !(0..u32::from(prefix)).fold(0u32, |m, i| m | (1 << (31 - i)))) } else { addr };
            let c = Cidr::new(Ipv4Addr::from(masked).into(), prefix).unwrap();
            let want = naive_prefix_eq(u128::from(masked), u128::from(addr), 32, u32::from(prefix));
            prop_assert_eq!(c.contains(Ipv4Addr::from(addr).into()), want);
            prop_assert!(!c.contains(Ipv6Addr::from(u128::from(addr) | (1 << 127)).into()));
            // Host bits set is an error exactly when the network was not masked.
            prop_assert_eq!(Cidr::new(Ipv4Addr::from(net).into(), prefix).is_ok(), net == masked);
            // Text round trip.
            prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
        }

        #[test]
        fn prop_cidr_v6_contains(net in any::<u128>(), prefix in 0u8..=128, addr in any::<u128>(), near in any::<bool>()) {
            let mask = (0..u32::from(prefix)).fold(0u128, |m, i| m | (1 << (127 - i)));
            let masked = net & mask;
            let addr = if near { masked | (addr & !mask) } else { addr };
            let Ok(c) = Cidr::new(Ipv6Addr::from(masked).into(), prefix) else {
                return Err(TestCaseError::fail("masked network rejected"));
            };
            let ip6 = Ipv6Addr::from(addr);
            let want = match (c.addr(), ip6.to_ipv4_mapped()) {
                // Both folded to IPv4: compare the 32-bit tails over the remaining prefix.
                (IpAddr::V4(n), Some(a)) => naive_prefix_eq(u128::from(n.to_bits()), u128::from(a.to_bits()), 32, u32::from(c.prefix_len())),
                (IpAddr::V6(_), None) => naive_prefix_eq(masked, addr, 128, u32::from(prefix)),
                _ => false,
            };
            prop_assert_eq!(c.contains(ip6.into()), want);
            prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
        }

        #[test]
        fn prop_suffix_vs_labels(
            labels in proptest::collection::vec("[a-cA-C]{1,3}", 1..5),
            pattern in proptest::collection::vec("[a-c]{1,3}", 1..4),
            dot in any::<bool>(),
        ) {
            let pattern_text = pattern.join(".");
            let mut host = labels.join(".");
            if dot {
                host.push('.');
            }
            let lower: Vec<String> = labels.iter().map(|l| l.to_ascii_lowercase()).collect();
            let want_suffix = lower.len() >= pattern.len() && lower[lower.len() - pattern.len()..] == pattern[..];
            let want_exact = lower == pattern;
            let n = Domain::new(host.as_bytes()).unwrap();
            prop_assert_eq!(pat(&format!(".{pattern_text}")).matches_name(n), want_suffix);
            prop_assert_eq!(pat(&pattern_text).matches_name(n), want_exact);
        }

        #[test]
        fn prop_parsers_never_panic(s in "\\PC{0,40}") {
            let _ = s.parse::<Cidr>();
            let _ = s.parse::<HostPattern>();
            let _ = s.parse::<PortRange>();
            let _ = s.parse::<CommandSet>();
            if let Ok(p) = s.parse::<HostPattern>() {
                prop_assert_eq!(p.to_string().parse::<HostPattern>(), Ok(p));
            }
            if let Ok(p) = s.parse::<PortRange>() {
                prop_assert_eq!(p.to_string().parse::<PortRange>(), Ok(p));
            }
        }
    }
}
