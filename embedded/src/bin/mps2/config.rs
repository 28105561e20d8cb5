//! Sizes and factory settings of the QEMU firmware. Everything else is set at run time over
//! the console and kept in the PSRAM "flash" (`flash.rs`).

use socksgate_core::rules::Action;
use socksgate_embedded::settings::Settings;

/// Concurrent SOCKS sessions (`SOCKSGATE_MPS2_SESSIONS` at build time, default 4).
pub(crate) const SESSIONS: usize = build_setting(option_env!("SOCKSGATE_MPS2_SESSIONS"), 4);
/// Size of each of a session's four TCP socket buffers, i.e. its receive window and send
/// queue (`SOCKSGATE_MPS2_SOCKET_BUF` at build time, default the library's 4 KiB): the
/// throughput figures compare windows over a delayed link with it.
pub(crate) const SOCKET_BUF: usize = build_setting(
    option_env!("SOCKSGATE_MPS2_SOCKET_BUF"),
    socksgate_embedded::pool::SOCKET_BUF,
);
/// Frames the NIC driver declares it can take back to back (`max_burst_size`). smoltcp
/// clamps every TCP window it advertises to that many full segments, so this must cover
/// `SOCKET_BUF` or the socket buffer is not the window: with the 4 frames this driver first
/// declared, every build advertised at most 5 848 B, whatever its buffers (the ~0.25 MB/s
/// cap `./ci.sh wan` saw at 16 KiB). At least 4; for larger buffers, as many frames as a
/// window of `SOCKET_BUF` fills (1 440-byte segments, the IPv6 size). QEMU's LAN9118 RX
/// data FIFO holds 10 560 B, about 6 full frames: a larger window arriving in one
/// back-to-back burst can overflow it and the sender retransmits (`./ci.sh wan` counts it).
pub(crate) const NIC_BURST_FRAMES: usize = {
    let frames = SOCKET_BUF.div_ceil(1440);
    if frames > 4 { frames } else { 4 }
};
/// Sessions that can be UDP associations at the same time (≈ 14.6 KiB each).
pub(crate) const UDP_SLOTS: usize = 1;
/// Sockets: the gateway's, DHCP, and one spare.
pub(crate) const SOCKETS: usize = socksgate_embedded::pool::sockets_needed(SESSIONS, UDP_SLOTS) + 2;

/// Factory settings (no record saved): SOCKS on 1080 by DHCP, no users, everything allowed
/// but the protected destinations — a lab image behind QEMU's loopback-only forward.
pub(crate) fn defaults() -> Settings {
    Settings::new(1080, Action::Allow)
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
