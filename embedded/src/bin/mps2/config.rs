//! Static configuration of the QEMU firmware.

use embassy_net::{Ipv4Address, Ipv4Cidr, StaticConfigV4};
use socksgate_embedded::GatewayConfig;

/// Concurrent SOCKS sessions (`SOCKSGATE_MPS2_SESSIONS` at build time, default 4).
pub(crate) const SESSIONS: usize = build_setting(option_env!("SOCKSGATE_MPS2_SESSIONS"), 4);
/// Size of each of a session's four TCP socket buffers, i.e. its receive window and send
/// queue (`SOCKSGATE_MPS2_SOCKET_BUF` at build time, default the library's 4 KiB): the
/// throughput figures compare windows over a delayed link with it.
pub(crate) const SOCKET_BUF: usize = build_setting(
    option_env!("SOCKSGATE_MPS2_SOCKET_BUF"),
    socksgate_embedded::pool::SOCKET_BUF,
);
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

/// A positive decimal number from a build-time environment variable, else `default`; any other
/// text stops the build (a `const` panic).
const fn build_setting(value: Option<&str>, default: usize) -> usize {
    let Some(text) = value else {
        return default;
    };
    let digits = text.as_bytes();
    assert!(!digits.is_empty(), "empty SOCKSGATE_MPS2_* setting");
    let mut n: usize = 0;
    let mut i = 0;
    while i < digits.len() {
        let d = digits[i];
        assert!(
            d.is_ascii_digit(),
            "SOCKSGATE_MPS2_* settings are decimal numbers"
        );
        n = n * 10 + (d - b'0') as usize;
        i += 1;
    }
    assert!(n > 0, "SOCKSGATE_MPS2_* settings are positive");
    n
}
