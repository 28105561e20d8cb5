//! Static configuration of the W5500-EVB-Pico firmware: edit, rebuild, flash.

use core::net::{IpAddr, Ipv4Addr};
use embassy_net::{Ipv4Address, Ipv4Cidr, StaticConfigV4};

use socksgate_core::rules::{Action, Cidr, CommandSet, HostPattern, PortRange, Rule, Rules};
use socksgate_embedded::{GatewayConfig, User};

/// Concurrent SOCKS sessions: 21 176 B of RAM each with 4 KiB socket buffers; at most 10
/// fit the RP2040's 264 KiB with room for the stack (see the README).
pub(crate) const SESSIONS: usize = 8;
/// Sessions that can be UDP associations at the same time (≈ 14.6 KiB each).
pub(crate) const UDP_SLOTS: usize = 1;
/// Size of each of a session's four TCP socket buffers (receive window, send queue).
pub(crate) const SOCKET_BUF: usize = socksgate_embedded::pool::SOCKET_BUF;
/// Sockets: the gateway's, plus DHCP, plus one spare.
pub(crate) const SOCKETS: usize = socksgate_embedded::pool::sockets_needed(SESSIONS, UDP_SLOTS) + 2;

/// `None`: DHCP. `Some(..)`: a static address, e.g. 192.168.1.81/24 via 192.168.1.1.
pub(crate) fn static_address() -> Option<StaticConfigV4> {
    const USE_STATIC: bool = false;
    if !USE_STATIC {
        return None;
    }
    let mut config = StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(192, 168, 1, 81), 24),
        gateway: Some(Ipv4Address::new(192, 168, 1, 1)),
        dns_servers: Default::default(),
    };
    let _ = config.dns_servers.push(Ipv4Address::new(192, 168, 1, 1));
    Some(config)
}

/// RFC 1929 credentials. A gateway on a real LAN requires them (SOCKS4, which cannot
/// authenticate, is then refused). Change these before flashing.
static USERS: [User; 1] = [User {
    name: "socks",
    password: "change-me",
}];

/// Access rules, first match wins (the core's evaluator; see `socksgate_core::rules`).
/// Here: nothing on loopback or link-local addresses, no SMTP, everything else allowed.
static RULES: [Rule; 3] = [
    deny_net(Ipv4Addr::new(127, 0, 0, 0), 8),
    deny_net(Ipv4Addr::new(169, 254, 0, 0), 16),
    Rule::deny().ports(PortRange::single(25)),
];

/// A rule denying every destination in `addr/prefix` (checked at compile time).
const fn deny_net(addr: Ipv4Addr, prefix: u8) -> Rule {
    let Ok(net) = Cidr::new(IpAddr::V4(addr), prefix) else {
        panic!("invalid CIDR in config.rs")
    };
    Rule {
        action: Action::Deny,
        client: None,
        user: None,
        commands: CommandSet::ANY,
        dst: HostPattern::Cidr(net),
        ports: PortRange::ANY,
    }
}

/// SOCKS on port 1080 with the users and rules above and the default timeouts.
pub(crate) static GATEWAY: GatewayConfig =
    GatewayConfig::new(1080, &USERS).with_rules(Rules::new(&RULES, Action::Allow));
