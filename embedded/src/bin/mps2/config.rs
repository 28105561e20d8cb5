//! Static configuration of the QEMU firmware.

use embassy_net::{Ipv4Address, Ipv4Cidr, StaticConfigV4};
use socksgate_embedded::GatewayConfig;

/// Concurrent SOCKS sessions.
pub(crate) const SESSIONS: usize = 4;
/// Sessions that can be UDP associations at the same time (≈ 14.6 KiB each).
pub(crate) const UDP_SLOTS: usize = 1;
/// Sockets: the gateway's plus one spare.
pub(crate) const SOCKETS: usize = socksgate_embedded::pool::sockets_needed(SESSIONS, UDP_SLOTS) + 1;

/// No users: SOCKS5 without authentication, SOCKS4/4a allowed (a lab image behind QEMU's
/// loopback-only port forward). See the README for a credential table.
pub(crate) static GATEWAY: GatewayConfig = GatewayConfig::new(1080, &[]);

/// 10.0.2.15/24 via 10.0.2.2, DNS 10.0.2.3: QEMU user-mode networking's defaults.
pub(crate) fn network() -> StaticConfigV4 {
    let mut config = StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        dns_servers: Default::default(),
    };
    let _ = config.dns_servers.push(Ipv4Address::new(10, 0, 2, 3));
    config
}
