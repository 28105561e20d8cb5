//! Input and reference model for the `rules_eval` target.
//!
//! Rules are built from text through the components' `FromStr` (each component is either raw
//! fuzzer text or text formatted from structured values, so that valid rules are common), and
//! queries draw names from the same few labels so that name rules actually match.
//! [`naive_verdict`] re-implements first-match evaluation from the module documentation of
//! `socksgate_core::rules`, without using `Rule`'s own matching.

use core::net::{IpAddr, SocketAddr};
use core::str::FromStr;

use arbitrary::Arbitrary;
use socksgate_core::rules::{
    Action, Cidr, CommandSet, Decision, HostPattern, PortRange, Query, Rule, UserName, Verdict,
};
use socksgate_core::wire::Command;
use socksgate_core::{Addr, Domain};

const LABELS: [&str; 6] = ["example", "com", "a", "EXAMPLE", "b-c", "xn--bcher-kva"];
const USERS: [&str; 3] = ["alice", "bob", "Alice"];

/// A few labels joined with dots, e.g. `a.example.com`.
#[derive(Arbitrary, Clone, Debug)]
pub struct Name {
    labels: Vec<u8>,
    trailing_dot: bool,
}

impl Name {
    fn text(&self) -> String {
        let mut s: Vec<&str> = self
            .labels
            .iter()
            .take(4)
            .map(|&l| LABELS[usize::from(l) % LABELS.len()])
            .collect();
        if s.is_empty() {
            s.push("com");
        }
        let mut s = s.join(".");
        if self.trailing_dot {
            s.push('.');
        }
        s
    }
}

/// An address text (possibly IPv4-mapped) with a prefix length, host bits cleared or not.
#[derive(Arbitrary, Clone, Debug)]
pub struct Net {
    ip: IpAddr,
    prefix: u8,
    clear_host_bits: bool,
    mapped: bool,
}

impl Net {
    fn text(&self) -> String {
        let max = if self.mapped || self.ip.is_ipv6() {
            128
        } else {
            32
        };
        let prefix = self.prefix % (max + 2);
        let mut ip = match self.ip {
            IpAddr::V4(v4) if self.mapped => IpAddr::V6(v4.to_ipv6_mapped()),
            ip => ip,
        };
        if self.clear_host_bits {
            ip = mask(ip, prefix.min(max));
        }
        format!("{ip}/{prefix}")
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((a.to_bits() & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((a.to_bits() & m).into())
        }
    }
}

/// Destination pattern text.
#[derive(Arbitrary, Clone, Debug)]
pub enum DstText<'a> {
    /// Raw text.
    Raw(&'a str),
    /// `*`.
    Any,
    /// A network.
    Net(Net),
    /// A bare address.
    Host(IpAddr),
    /// `name` or `.name`.
    Name(Name, bool),
}

/// Port range text.
#[derive(Arbitrary, Clone, Debug)]
pub enum PortsText<'a> {
    /// Raw text.
    Raw(&'a str),
    /// `*`.
    Any,
    /// `n`.
    Single(u16),
    /// `a-b`.
    Range(u16, u16),
}

/// Command set text.
#[derive(Arbitrary, Clone, Debug)]
pub enum CommandsText<'a> {
    /// Raw text.
    Raw(&'a str),
    /// `*`.
    Any,
    /// A comma-separated subset of connect, bind, udp_associate.
    Set(u8),
}

/// User text.
#[derive(Arbitrary, Clone, Debug)]
pub enum UserText<'a> {
    /// Raw text.
    Raw(&'a str),
    /// One of a few names.
    Pick(u8),
}

/// One rule as text.
#[derive(Arbitrary, Clone, Debug)]
pub struct RuleText<'a> {
    action: Option<&'a str>,
    deny: bool,
    client: Option<Net>,
    client_raw: Option<&'a str>,
    user: Option<UserText<'a>>,
    commands: Option<CommandsText<'a>>,
    dst: Option<DstText<'a>>,
    ports: Option<PortsText<'a>>,
}

/// Parses `text` with `FromStr`, checks Display -> FromStr gives the value back, and
/// returns it (or `None` if the text is invalid).
fn parse<T>(text: &str) -> Option<T>
where
    T: FromStr + ToString + PartialEq + core::fmt::Debug,
    T::Err: ToString,
{
    match text.parse::<T>() {
        Ok(v) => {
            let shown = v.to_string();
            match shown.parse::<T>() {
                Ok(again) => assert_eq!(again, v, "{text:?} displays as {shown:?}"),
                Err(e) => panic!(
                    "{text:?} parses but its display {shown:?} does not: {}",
                    e.to_string()
                ),
            }
            Some(v)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

impl RuleText<'_> {
    /// Builds the rule; components whose text does not parse are left unrestricted.
    pub fn build(&self) -> Rule {
        let action = self
            .action
            .and_then(parse::<Action>)
            .unwrap_or(if self.deny {
                Action::Deny
            } else {
                Action::Allow
            });
        let mut rule = Rule::new(action);
        let client = match (&self.client_raw, &self.client) {
            (Some(raw), _) => parse::<Cidr>(raw),
            (None, Some(net)) => parse::<Cidr>(&net.text()),
            (None, None) => None,
        };
        if let Some(c) = client {
            rule = rule.client(c);
        }
        let user = self.user.as_ref().and_then(|u| match u {
            UserText::Raw(s) => parse::<UserName>(s),
            UserText::Pick(i) => parse::<UserName>(USERS[usize::from(*i) % USERS.len()]),
        });
        if let Some(u) = user {
            rule = rule.user(u);
        }
        let commands = self.commands.as_ref().and_then(|c| match c {
            CommandsText::Raw(s) => parse::<CommandSet>(s),
            CommandsText::Any => parse::<CommandSet>("*"),
            CommandsText::Set(bits) => {
                let names: Vec<&str> = ["connect", "bind", "udp_associate"]
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, n)| n)
                    .collect();
                parse::<CommandSet>(&names.join(","))
            }
        });
        if let Some(c) = commands {
            rule = rule.commands(c);
        }
        let dst = self.dst.as_ref().and_then(|d| match d {
            DstText::Raw(s) => parse::<HostPattern>(s),
            DstText::Any => parse::<HostPattern>("*"),
            DstText::Net(n) => parse::<HostPattern>(&n.text()),
            DstText::Host(ip) => parse::<HostPattern>(&ip.to_string()),
            DstText::Name(n, suffix) => {
                let dot = if *suffix { "." } else { "" };
                parse::<HostPattern>(&format!("{dot}{}", n.text()))
            }
        });
        if let Some(d) = dst {
            rule = rule.dst(d);
        }
        let ports = self.ports.as_ref().and_then(|p| match p {
            PortsText::Raw(s) => parse::<PortRange>(s),
            PortsText::Any => parse::<PortRange>("*"),
            PortsText::Single(n) => parse::<PortRange>(&n.to_string()),
            PortsText::Range(a, b) => parse::<PortRange>(&format!("{a}-{b}")),
        });
        if let Some(p) = ports {
            rule = rule.ports(p);
        }
        rule
    }
}

/// A query's destination.
#[derive(Arbitrary, Clone, Debug)]
pub enum DstInput<'a> {
    /// An IP destination.
    Ip(SocketAddr),
    /// A name from the shared labels.
    Name(Name, u16),
    /// A name spelling an IP literal.
    Literal(IpAddr, u16),
    /// Raw octets (used if they form a valid name).
    Raw(&'a [u8], u16),
}

/// One query and the addresses its name resolves to.
#[derive(Arbitrary, Clone, Debug)]
pub struct QueryInput<'a> {
    /// Client address.
    pub client: IpAddr,
    user: Option<UserText<'a>>,
    command: u8,
    /// Destination.
    pub dst: DstInput<'a>,
    /// Resolved addresses to try.
    pub resolved: Vec<IpAddr>,
}

impl QueryInput<'_> {
    /// The destination name's octets, or the IP, owned.
    pub fn dst_text(&self) -> (Vec<u8>, u16, Option<SocketAddr>) {
        match &self.dst {
            DstInput::Ip(sa) => (Vec::new(), sa.port(), Some(*sa)),
            DstInput::Name(n, port) => (n.text().into_bytes(), *port, None),
            DstInput::Literal(ip, port) => (ip.to_string().into_bytes(), *port, None),
            DstInput::Raw(b, port) => (b.to_vec(), *port, None),
        }
    }

    /// The user octets.
    pub fn user(&self) -> Option<Vec<u8>> {
        self.user.as_ref().map(|u| match u {
            UserText::Raw(s) => s.as_bytes().to_vec(),
            UserText::Pick(i) => USERS[usize::from(*i) % USERS.len()].as_bytes().to_vec(),
        })
    }

    /// The command.
    pub fn command(&self) -> Command {
        Command::from(self.command % 5)
    }
}

/// Builds the query's destination address from owned parts.
pub fn dst_addr<'a>(name: &'a [u8], port: u16, ip: Option<SocketAddr>) -> Addr<'a> {
    match ip {
        Some(sa) => Addr::Ip(sa),
        None => match Domain::new(name) {
            Ok(d) => Addr::Domain(d, port),
            Err(_) => Addr::Domain(Domain::new(b"example.com").expect("valid"), port),
        },
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// Bit-by-bit prefix comparison of canonical addresses.
fn naive_in(net: &Cidr, ip: IpAddr) -> bool {
    let bits = |ip: IpAddr| -> Vec<bool> {
        let octets = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        octets
            .iter()
            .flat_map(|o| (0..8).rev().map(move |i| o >> i & 1 == 1))
            .collect()
    };
    let (a, b) = (bits(canonical(net.addr())), bits(canonical(ip)));
    a.len() == b.len() && a[..usize::from(net.prefix_len())] == b[..usize::from(net.prefix_len())]
}

fn naive_name(pattern: &HostPattern, name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name).to_ascii_lowercase();
    match pattern {
        HostPattern::Any => true,
        HostPattern::Cidr(_) => false,
        HostPattern::Exact(p) => name == p.as_domain().as_bytes().to_ascii_lowercase(),
        HostPattern::Suffix(p) => {
            let p = p.as_domain().as_bytes().to_ascii_lowercase();
            let mut dotted = b".".to_vec();
            dotted.extend_from_slice(&p);
            name == p || name.ends_with(&dotted)
        }
    }
}

/// First-match evaluation from the documentation: the destination is a name (`name`, unless
/// the query's destination is an IP or an IP literal) and/or an address (`ip`, once known).
/// A CIDR rule against an unknown address is "maybe"; a maybe before the first definite
/// match means the answer needs resolution.
pub fn naive_verdict(
    rules: &[Rule],
    default: Action,
    q: &Query<'_>,
    name: Option<&[u8]>,
    ip: Option<IpAddr>,
    port: u16,
) -> Verdict {
    let mut maybe = false;
    for (i, r) in rules.iter().enumerate() {
        let client = r.client.as_ref().is_none_or(|c| naive_in(c, q.client));
        let user = match (&r.user, q.user) {
            (None, _) => true,
            (Some(w), Some(g)) => w.as_bytes() == g,
            (Some(_), None) => false,
        };
        let command = r.commands.contains(q.command);
        let ports = r.ports.start() <= port && port <= r.ports.end();
        if !(client && user && command && ports) {
            continue;
        }
        let dst = match (&r.dst, ip) {
            (HostPattern::Any, _) => Some(true),
            (HostPattern::Cidr(c), Some(ip)) => Some(naive_in(c, ip)),
            (HostPattern::Cidr(_), None) => None,
            (p, _) => Some(name.is_some_and(|n| naive_name(p, n))),
        };
        match dst {
            Some(true) if maybe => return Verdict::NeedsResolution,
            Some(true) => {
                return Verdict::Decided(Decision {
                    action: r.action,
                    rule: Some(i),
                });
            }
            Some(false) => {}
            None => maybe = true,
        }
    }
    if maybe {
        Verdict::NeedsResolution
    } else {
        Verdict::Decided(Decision {
            action: default,
            rule: None,
        })
    }
}
