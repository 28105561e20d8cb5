//! Egress profiles: the source address, interface (`SO_BINDTODEVICE`) and firewall mark
//! (`SO_MARK`) that outbound sockets — CONNECT (every Happy Eyeballs attempt, and the
//! connection to an `[[upstream]]`), the BIND listener and the UDP relay's outbound
//! sockets — are opened with.
//!
//! Which profile applies to a session and which address of its pool the session gets are the
//! core's decisions (`socksgate_core::egress`: rule > user > listener > global; rotation per
//! session, sticky per user, or the address the client connected to). This module checks
//! the `[[egress]]` tables against the host when a configuration is loaded (the addresses
//! are this host's, the interfaces exist, marks can be set), keeps the compiled profiles and
//! applies a profile to a socket.
//!
//! Sessions with no profile pay nothing: without any `[[egress]]` the lookup is one branch.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};
use socksgate_core::egress::{self as decide, Pool, Rotation, SessionKey, Source};
use toml::Spanned;

use crate::config::{Config, ConfigError, RuleAction};

/// How a profile's addresses rotate among sessions (`rotation = "..."`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationSetting {
    /// Round robin, one step per session (default).
    #[default]
    Session,
    /// The same address for all of a user's sessions.
    User,
    /// The address the client connected to (Dante's "same-same").
    Same,
}

impl From<RotationSetting> for Rotation {
    fn from(r: RotationSetting) -> Self {
        match r {
            RotationSetting::Session => Self::Session,
            RotationSetting::User => Self::User,
            RotationSetting::Same => Self::Same,
        }
    }
}

/// One `[[egress]]` profile.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The name `default_egress` and rules use.
    pub name: Spanned<String>,
    /// Source addresses (IPv4 and IPv6): a session uses those of its destination's family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<Spanned<String>>,
    /// Interface outbound sockets are bound to (`SO_BINDTODEVICE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<Spanned<String>>,
    /// Firewall mark of outbound sockets (`SO_MARK`; needs `CAP_NET_ADMIN` or, since Linux
    /// 5.17, `CAP_NET_RAW`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Spanned<u32>>,
    /// How sessions share the addresses.
    #[serde(default)]
    pub rotation: RotationSetting,
    /// Sessions accepted on these listen addresses use this profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Spanned<String>>,
    /// These users' sessions use this profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Spanned<String>>,
}

/// A compiled profile.
#[derive(Debug)]
pub struct Profile {
    name: String,
    addresses: Vec<IpAddr>,
    interface: Option<String>,
    mark: Option<u32>,
    rotation: Rotation,
    /// Sessions that used this profile so far: the round robin's position.
    sessions: AtomicU32,
}

impl Profile {
    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Every profile of a configuration, and which applies to what.
#[derive(Debug, Default)]
pub struct Profiles {
    profiles: Vec<Profile>,
    global: Option<usize>,
    listeners: Vec<(SocketAddr, usize)>,
    users: HashMap<Vec<u8>, usize>,
}

impl Profiles {
    /// Compiles the profiles of a configuration [`check`] accepted (anything it would refuse
    /// is skipped).
    pub fn compile(config: &Config) -> Self {
        let mut out = Self::default();
        for (i, e) in config.egress.iter().enumerate() {
            out.profiles.push(Profile {
                name: e.name.get_ref().clone(),
                addresses: e
                    .address
                    .iter()
                    .filter_map(|a| a.get_ref().parse().ok())
                    .collect(),
                interface: e.interface.as_ref().map(|s| s.get_ref().clone()),
                mark: e.mark.as_ref().map(|m| *m.get_ref()),
                rotation: e.rotation.into(),
                sessions: AtomicU32::new(0),
            });
            for l in &e.listeners {
                if let Ok(addr) = l.get_ref().parse() {
                    out.listeners.push((addr, i));
                }
            }
            for u in &e.users {
                out.users.insert(u.get_ref().as_bytes().to_vec(), i);
            }
        }
        out.global = config
            .default_egress
            .as_ref()
            .and_then(|name| out.index(name.get_ref()));
        out
    }

    /// Whether there are no profiles (then no session has one).
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.profiles.iter().position(|p| p.name == name)
    }

    /// The profile of the listener a session was accepted on: the one naming its local
    /// address exactly, else one naming the wildcard address of its family and port.
    fn listener(&self, local: SocketAddr) -> Option<usize> {
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let exact = self.listeners.iter().find(|(l, _)| *l == local);
        exact
            .or_else(|| {
                self.listeners.iter().find(|(l, _)| {
                    l.port() == local.port()
                        && l.ip().is_unspecified()
                        && l.is_ipv6() == local.is_ipv6()
                })
            })
            .map(|(_, i)| *i)
    }

    /// The egress of a session: the profile the core selects among the deciding rule's
    /// (`rule`, a profile name), the user's, the listener's (`local`) and the global one,
    /// with its source address for each family. `None`: the kernel decides.
    pub fn for_session(
        &self,
        rule: Option<&str>,
        user: Option<&[u8]>,
        local: SocketAddr,
    ) -> Option<Egress<'_>> {
        if self.profiles.is_empty() {
            return None;
        }
        let chosen = decide::select(
            rule.and_then(|name| self.index(name)),
            user.and_then(|u| self.users.get(u).copied()),
            self.listener(local),
            self.global,
        )?;
        let profile = self.profiles.get(chosen)?;
        let pool = Pool {
            addresses: &profile.addresses,
            rotation: profile.rotation,
        };
        let sequence = if pool.constrains() {
            profile.sessions.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let key = SessionKey {
            sequence,
            user,
            local: local.ip(),
        };
        Some(Egress {
            profile,
            v4: pool.source(false, key),
            v6: pool.source(true, key),
        })
    }
}

/// The egress of the session `conn` drives, for its command (the rule that allowed it, its
/// user, the listener it came in on).
pub(crate) fn of_session<'a>(conn: &crate::conn::Conn<'a>) -> Option<Egress<'a>> {
    let shared: &'a crate::shared::Shared = conn.shared;
    of_parts(
        shared,
        conn.session.decision(),
        conn.session.user(),
        conn.local,
    )
}

/// [`of_session`] from the parts of a session it reads: the access decision, the user and
/// the listener's address.
pub(crate) fn of_parts<'a>(
    shared: &'a crate::shared::Shared,
    decision: Option<socksgate_core::rules::Decision>,
    user: Option<&[u8]>,
    local: SocketAddr,
) -> Option<Egress<'a>> {
    if shared.egress.is_empty() {
        return None;
    }
    let rule = decision.and_then(|d| shared.rules.egress(d));
    let egress = shared.egress.for_session(rule, user, local)?;
    tracing::debug!(egress = egress.name(), v4 = ?egress.v4, v6 = ?egress.v6, "egress");
    Some(egress)
}

/// One session's egress: a profile and the source address it gave for each family.
#[derive(Clone, Copy, Debug)]
pub struct Egress<'a> {
    profile: &'a Profile,
    v4: Source,
    v6: Source,
}

impl Egress<'_> {
    /// The profile's name (for logs).
    pub fn name(&self) -> &str {
        &self.profile.name
    }

    /// The source for a destination of family `v6`.
    pub fn source(&self, v6: bool) -> Source {
        if v6 { self.v6 } else { self.v4 }
    }

    /// Prepares a new, unbound socket of family `v6` to leave by this egress: interface,
    /// mark, then the source address (port 0) when the profile gives one. An error of kind
    /// `AddrNotAvailable` (reply 4) when the profile has no address of that family.
    /// Returns whether the socket was bound.
    pub fn apply(&self, socket: &socket2::Socket, v6: bool) -> io::Result<bool> {
        let source = self.available(v6)?;
        if let Some(interface) = &self.profile.interface {
            bind_device(socket, interface)?;
        }
        if let Some(mark) = self.profile.mark {
            set_mark(socket, mark)?;
        }
        match source {
            Source::Address(ip) => {
                socket.bind(&SocketAddr::new(ip, 0).into())?;
                Ok(true)
            }
            Source::Kernel | Source::Unavailable => Ok(false),
        }
    }

    /// The source for family `v6`, or the `AddrNotAvailable` error (reply 4) when the profile
    /// has none of that family — checked before any socket is opened.
    fn available(&self, v6: bool) -> io::Result<Source> {
        match self.source(v6) {
            Source::Unavailable => Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!(
                    "egress {:?} has no IPv{} source address",
                    self.profile.name,
                    if v6 { 6 } else { 4 }
                ),
            )),
            source => Ok(source),
        }
    }

    /// A TCP socket for a connection to a destination of family `v6`, ready to connect.
    pub fn tcp_socket(&self, v6: bool) -> io::Result<tokio::net::TcpSocket> {
        self.available(v6)?;
        let socket = if v6 {
            tokio::net::TcpSocket::new_v6()?
        } else {
            tokio::net::TcpSocket::new_v4()?
        };
        self.apply(&socket2::SockRef::from(&socket), v6)?;
        Ok(socket)
    }

    /// A UDP socket of family `v6`, bound (to the source address, or the wildcard).
    pub fn udp_socket(&self, v6: bool) -> io::Result<tokio::net::UdpSocket> {
        self.available(v6)?;
        let domain = if v6 {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
        if v6 {
            socket.set_only_v6(true)?;
        }
        if !self.apply(&socket, v6)? {
            socket.bind(&unspecified(v6).into())?;
        }
        socket.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(socket.into())
    }

    /// A BIND listener for a peer of family `v6`: on the profile's source address, else on
    /// `fallback` (the address this host would use; the wildcard if of the other family),
    /// with the interface and mark.
    pub fn tcp_listener(&self, v6: bool, fallback: IpAddr) -> io::Result<tokio::net::TcpListener> {
        self.available(v6)?;
        let domain = if v6 {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        if v6 {
            socket.set_only_v6(true)?;
        }
        if !self.apply(&socket, v6)? {
            let fallback = fallback.to_canonical();
            let at = if fallback.is_ipv6() == v6 {
                SocketAddr::new(fallback, 0)
            } else {
                unspecified(v6)
            };
            socket.bind(&at.into())?;
        }
        socket.set_nonblocking(true)?;
        socket.listen(1)?;
        tokio::net::TcpListener::from_std(socket.into())
    }
}

fn unspecified(v6: bool) -> SocketAddr {
    if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

#[cfg(target_os = "linux")]
fn bind_device(socket: &socket2::Socket, interface: &str) -> io::Result<()> {
    socket.bind_device(Some(interface.as_bytes()))
}

#[cfg(target_os = "linux")]
fn set_mark(socket: &socket2::Socket, mark: u32) -> io::Result<()> {
    socket.set_mark(mark)
}

#[cfg(not(target_os = "linux"))]
fn bind_device(_: &socket2::Socket, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "egress interface is only supported on Linux",
    ))
}

#[cfg(not(target_os = "linux"))]
fn set_mark(_: &socket2::Socket, _: u32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "egress mark is only supported on Linux",
    ))
}

/// Whether this host has an interface called `name`.
fn interface_exists(name: &str) -> bool {
    #[cfg(unix)]
    {
        nix::net::if_::if_nametoindex(name).is_ok()
    }
    #[cfg(not(unix))]
    {
        let _ = name;
        false
    }
}

/// Why this process cannot set `mark` on a socket, if it cannot (tried on a throwaway one).
fn mark_refused(mark: u32) -> Option<String> {
    let socket = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot open a socket to try it: {e}")),
    };
    match set_mark(&socket, mark) {
        Ok(()) => None,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Some(format!(
            "cannot set SO_MARK: {e} (setting a firewall mark needs CAP_NET_ADMIN, or \
             CAP_NET_RAW since Linux 5.17)"
        )),
        Err(e) => Some(format!("cannot set SO_MARK: {e}")),
    }
}

/// Checks the `[[egress]]` profiles and every reference to them, against this host: names
/// unique and defined; addresses plain IPs this host has; interfaces existing; marks
/// non-zero and settable by this process; listeners valid socket addresses; a listener or
/// user in one profile only; rule profiles only on allow rules. Errors name the file, line
/// and column.
pub fn check(config: &Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let invalid = |span, message| ConfigError::at(text, path, span, message);
    if config.egress.is_empty() && config.default_egress.is_none() {
        if let Some(name) = config.rules.iter().find_map(|r| r.egress.as_ref()) {
            return Err(invalid(
                name.span(),
                format!(
                    "egress {:?} is not defined by an [[egress]]",
                    name.get_ref()
                ),
            ));
        }
        return Ok(());
    }
    let own = crate::shared::own_addresses();
    let mut listeners: HashMap<SocketAddr, &str> = HashMap::new();
    let mut users: HashMap<&str, &str> = HashMap::new();
    for (i, e) in config.egress.iter().enumerate() {
        let name = e.name.get_ref().as_str();
        let what = format!("[[egress]] {name:?}");
        if name.is_empty() {
            return Err(invalid(
                e.name.span(),
                "egress name must not be empty".into(),
            ));
        }
        if config
            .egress
            .iter()
            .take(i)
            .any(|other| other.name.get_ref() == name)
        {
            return Err(invalid(e.name.span(), format!("{what} is defined twice")));
        }
        for a in &e.address {
            let text = a.get_ref();
            let ip: IpAddr = text.parse().map_err(|_| {
                let reason = if text.contains('/') {
                    "an address, not a prefix, is expected"
                } else {
                    "not an IP address"
                };
                invalid(a.span(), format!("{what} address {text:?}: {reason}"))
            })?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(invalid(
                    a.span(),
                    format!("{what} address {text:?}: not a unicast address"),
                ));
            }
            if let IpAddr::V6(v6) = ip
                && v6.is_unicast_link_local()
            {
                // Binding one needs its interface's scope, which a profile does not carry.
                return Err(invalid(
                    a.span(),
                    format!("{what} address {text:?}: link-local addresses are not supported"),
                ));
            }
            if !own.contains(&ip.to_canonical()) {
                return Err(invalid(
                    a.span(),
                    format!("{what} address {text:?}: this host has no such address"),
                ));
            }
        }
        if let Some(interface) = &e.interface
            && !interface_exists(interface.get_ref())
        {
            return Err(invalid(
                interface.span(),
                format!(
                    "{what} interface {:?}: no such interface on this host",
                    interface.get_ref()
                ),
            ));
        }
        if let Some(mark) = &e.mark {
            if *mark.get_ref() == 0 {
                return Err(invalid(
                    mark.span(),
                    format!("{what} mark 0: 0 means no mark; leave `mark` out instead"),
                ));
            }
            if let Some(reason) = mark_refused(*mark.get_ref()) {
                return Err(invalid(
                    mark.span(),
                    format!("{what} mark {}: {reason}", mark.get_ref()),
                ));
            }
        }
        for l in &e.listeners {
            let addr: SocketAddr = l.get_ref().parse().map_err(|_| {
                invalid(
                    l.span(),
                    format!(
                        "{what} listener {:?}: expected a listen address such as \"0.0.0.0:1080\"",
                        l.get_ref()
                    ),
                )
            })?;
            if let Some(other) = listeners.insert(addr, name) {
                return Err(invalid(
                    l.span(),
                    format!("{what} listener {addr}: already given to [[egress]] {other:?}"),
                ));
            }
        }
        for u in &e.users {
            if u.get_ref().is_empty() || u.get_ref().len() > 255 {
                return Err(invalid(
                    u.span(),
                    format!("{what} user {:?}: 1 to 255 bytes", u.get_ref()),
                ));
            }
            if let Some(other) = users.insert(u.get_ref(), name) {
                return Err(invalid(
                    u.span(),
                    format!(
                        "{what} user {:?}: already given to [[egress]] {other:?}",
                        u.get_ref()
                    ),
                ));
            }
        }
    }
    let defined = |name: &Spanned<String>| -> Result<(), ConfigError> {
        if config
            .egress
            .iter()
            .any(|e| e.name.get_ref() == name.get_ref())
        {
            Ok(())
        } else {
            Err(invalid(
                name.span(),
                format!(
                    "egress {:?} is not defined by an [[egress]]",
                    name.get_ref()
                ),
            ))
        }
    };
    if let Some(name) = &config.default_egress {
        defined(name)?;
    }
    for r in &config.rules {
        if let Some(name) = &r.egress {
            defined(name)?;
            if r.action != RuleAction::Allow {
                return Err(invalid(
                    name.span(),
                    "egress is only meaningful on an allow rule".into(),
                ));
            }
            // A UDP association is not decided by a rule (each datagram is): its egress is
            // the user's, listener's or global one, so a rule for it alone would do nothing.
            if !r.commands.is_empty() && r.commands.iter().all(|c| c.get_ref() == "udp_associate") {
                return Err(invalid(
                    name.span(),
                    "egress on a rule applies to connect and bind; a UDP association uses \
                     its user's, listener's or the global profile"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the profiles against the effective settings: their listeners are listen
/// addresses, and no mark is configured for a server that gives up root (`user`), since
/// setting a mark needs `CAP_NET_ADMIN`.
pub fn check_effective(config: &Config) -> Result<(), ConfigError> {
    for e in &config.egress {
        let name = e.name.get_ref();
        if let (Some(mark), Some(user)) = (&e.mark, &config.user) {
            return Err(ConfigError::Unsupported(format!(
                "[[egress]] {name:?} mark {}: setting a firewall mark needs CAP_NET_ADMIN \
                 (or CAP_NET_RAW), which running as user {user:?} gives up",
                mark.get_ref()
            )));
        }
        for l in &e.listeners {
            if let Ok(addr) = l.get_ref().parse::<SocketAddr>()
                && !config.listen.contains(&addr)
            {
                return Err(ConfigError::Unsupported(format!(
                    "[[egress]] {name:?} listener {addr} is not one of the listen addresses ({})",
                    config
                        .listen
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn profiles_parse_and_show_in_the_effective_configuration() {
        let c = parse(
            r#"
default_egress = "lo"

[[egress]]
name = "lo"
address = ["127.0.0.1", "::1"]
interface = "lo"
rotation = "user"
listeners = ["127.0.0.1:1080"]
users = ["alice"]

[[rule]]
action = "allow"
egress = "lo"
"#,
        )
        .unwrap();
        assert_eq!(c.egress.len(), 1);
        let text = c.to_toml();
        assert!(text.contains("default_egress = \"lo\""), "{text}");
        assert!(text.contains("[[egress]]"), "{text}");
        assert!(text.contains("rotation = \"user\""), "{text}");
        assert!(text.contains("interface = \"lo\""), "{text}");
        let back = parse(&text).unwrap();
        assert_eq!(back.egress, c.egress);
        assert_eq!(back.rules[0].egress.as_ref().unwrap().get_ref(), "lo");
    }

    #[test]
    fn bad_profiles_point_at_their_line_and_column() {
        for (text, needle, reason) in [
            (
                "[[egress]]\nname = \"x\"\naddress = [\"192.0.2.77\"]\n",
                "t.toml:3:12",
                "this host has no such address",
            ),
            (
                "[[egress]]\nname = \"x\"\naddress = [\"127.0.0.1/8\"]\n",
                "t.toml:3:12",
                "not a prefix",
            ),
            (
                "[[egress]]\nname = \"x\"\naddress = [\"fe80::1\"]\n",
                "t.toml:3:12",
                "link-local addresses are not supported",
            ),
            (
                "[[egress]]\nname = \"x\"\naddress = [\"nonsense\"]\n",
                "t.toml:3:12",
                "not an IP address",
            ),
            (
                "[[egress]]\nname = \"x\"\ninterface = \"nosuch0\"\n",
                "t.toml:3:13",
                "no such interface",
            ),
            (
                "[[egress]]\nname = \"x\"\nmark = 0\n",
                "t.toml:3:8",
                "0 means no mark",
            ),
            (
                "[[egress]]\nname = \"x\"\nlisteners = [\"1080\"]\n",
                "t.toml:3:14",
                "expected a listen address",
            ),
            ("default_egress = \"nope\"\n", "t.toml:1:18", "not defined"),
            (
                "[[rule]]\naction = \"allow\"\negress = \"nope\"\n",
                "t.toml:3:10",
                "not defined",
            ),
            (
                "[[egress]]\nname = \"x\"\n[[rule]]\naction = \"deny\"\negress = \"x\"\n",
                "t.toml:5:10",
                "only meaningful on an allow rule",
            ),
            (
                "[[egress]]\nname = \"x\"\n[[rule]]\naction = \"allow\"\ncommands = [\"udp_associate\"]\negress = \"x\"\n",
                "t.toml:6:10",
                "applies to connect and bind",
            ),
            (
                "[[egress]]\nname = \"x\"\n[[egress]]\nname = \"x\"\n",
                "t.toml:4:8",
                "defined twice",
            ),
            (
                "[[egress]]\nname = \"x\"\nusers = [\"a\"]\n[[egress]]\nname = \"y\"\nusers = [\"a\"]\n",
                "t.toml:6:10",
                "already given",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(needle), "{e} (wanted {needle})");
            assert!(e.contains(reason), "{e} (wanted {reason})");
        }
        // Unknown keys and rotations are schema errors with their line.
        assert!(err("[[egress]]\nname = \"x\"\nrotation = \"random\"\n").contains("line 3"));
        assert!(err("[[egress]]\nname = \"x\"\nmtu = 1\n").contains("line 3"));
    }

    #[test]
    fn marks_are_refused_when_running_as_another_user_and_listeners_must_be_listened_on() {
        let mut c = parse("[[egress]]\nname = \"x\"\nlisteners = [\"127.0.0.1:1081\"]\n").unwrap();
        c.finish();
        let e = check_effective(&c).unwrap_err().to_string();
        assert!(e.contains("not one of the listen addresses"), "{e}");
        c.listen.push("127.0.0.1:1081".parse().unwrap());
        assert!(check_effective(&c).is_ok());
        // Root can set marks here; dropping to another user would lose the capability.
        let mut c = parse("user = \"nobody\"\n[[egress]]\nname = \"x\"\nmark = 42\n").unwrap();
        c.finish();
        let e = check_effective(&c).unwrap_err().to_string();
        assert!(e.contains("CAP_NET_ADMIN") && e.contains("nobody"), "{e}");
    }

    fn profiles(text: &str) -> Profiles {
        Profiles::compile(&parse(text).unwrap())
    }

    #[test]
    fn sessions_get_the_most_specific_profile() {
        let p = profiles(
            r#"
default_egress = "g"
[[egress]]
name = "g"
[[egress]]
name = "l"
listeners = ["0.0.0.0:1081", "127.0.0.1:1082"]
[[egress]]
name = "u"
users = ["alice"]
[[egress]]
name = "r"
"#,
        );
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let name = |e: Option<Egress<'_>>| e.map(|e| e.name().to_owned());
        assert_eq!(
            name(p.for_session(None, None, at("127.0.0.1:1080"))).as_deref(),
            Some("g")
        );
        // A wildcard listener matches any address of its family on its port.
        assert_eq!(
            name(p.for_session(None, None, at("10.1.2.3:1081"))).as_deref(),
            Some("l")
        );
        assert_eq!(
            name(p.for_session(None, None, at("[::1]:1081"))).as_deref(),
            Some("g")
        );
        assert_eq!(
            name(p.for_session(None, None, at("127.0.0.1:1082"))).as_deref(),
            Some("l")
        );
        assert_eq!(
            name(p.for_session(None, Some(b"alice"), at("127.0.0.1:1082"))).as_deref(),
            Some("u")
        );
        assert_eq!(
            name(p.for_session(Some("r"), Some(b"alice"), at("127.0.0.1:1082"))).as_deref(),
            Some("r")
        );
        assert!(
            Profiles::default()
                .for_session(None, None, at("127.0.0.1:1"))
                .is_none()
        );
    }

    #[test]
    fn session_rotation_steps_per_session() {
        let p = profiles(
            "default_egress = \"g\"\n[[egress]]\nname = \"g\"\naddress = [\"127.0.0.1\", \"::1\"]\n",
        );
        let local = "127.0.0.1:1080".parse().unwrap();
        let e = p.for_session(None, None, local).unwrap();
        assert_eq!(
            e.source(false),
            Source::Address("127.0.0.1".parse().unwrap())
        );
        assert_eq!(e.source(true), Source::Address("::1".parse().unwrap()));
        // One address per family: every session gets it.
        let e = p.for_session(None, None, local).unwrap();
        assert_eq!(
            e.source(false),
            Source::Address("127.0.0.1".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn sockets_leave_from_the_source_address_and_a_missing_family_is_unreachable() {
        let p = profiles(
            "default_egress = \"g\"\n[[egress]]\nname = \"g\"\naddress = [\"127.0.0.1\"]\ninterface = \"lo\"\n",
        );
        let e = p
            .for_session(None, None, "127.0.0.1:1080".parse().unwrap())
            .unwrap();
        let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = e
            .tcp_socket(false)
            .unwrap()
            .connect(origin.local_addr().unwrap())
            .await
            .unwrap();
        let (_, seen) = origin.accept().await.unwrap();
        assert_eq!(seen, stream.local_addr().unwrap());
        assert_eq!(seen.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        let udp = e.udp_socket(false).unwrap();
        assert_eq!(
            udp.local_addr().unwrap().ip(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        let refused = e.tcp_socket(true).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AddrNotAvailable);
        assert_eq!(
            crate::failure::io_failure(&refused).reply(),
            socksgate_core::wire::ReplyCode::HostUnreachable
        );
    }
}
