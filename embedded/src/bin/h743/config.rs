//! Sizes, flash slots and factory settings of the NUCLEO-H743ZI2 firmware. Users, rules,
//! port, address and limits are set at run time over the console (USART3, the ST-LINK
//! virtual COM port) and kept in flash.

use socksgate_core::rules::Action;
use socksgate_embedded::settings::Settings;

/// Size of each of a session's four TCP socket buffers: the receive window it advertises
/// and its send queue. A session's throughput is at most about window / round-trip time.
pub(crate) const SOCKET_BUF: usize = 8192;
/// Ethernet DMA descriptors and frame buffers each way (`PacketQueue`, AXI SRAM, ≈ 3 KB a
/// pair). embassy-stm32 declares its TX count as the burst the NIC takes (`max_burst_size`)
/// and smoltcp clamps every TCP window it advertises to that many full segments, so the
/// count must cover `SOCKET_BUF` or the socket buffer is not the window (4 frames, as first
/// built, cut every window to 5 840 B). As many frames as a window of `SOCKET_BUF` fills
/// (1 440-byte segments, the IPv6 size), at least 4; the RX ring as large, so it can hold
/// a whole window arriving back to back.
pub(crate) const ETH_FRAMES: usize = {
    let frames = SOCKET_BUF.div_ceil(1440);
    if frames > 4 { frames } else { 4 }
};
/// Sessions whose socket buffers (4 × `SOCKET_BUF` each) live in SRAM1–3 (288 KiB).
pub(crate) const SESSIONS_IN_SRAM123: usize = 9;
/// Sessions whose socket buffers live in the DTCM (128 KiB).
pub(crate) const SESSIONS_IN_DTCM: usize = 4;
/// Sessions whose socket buffers live in the AXI SRAM, with the stack and everything else.
pub(crate) const SESSIONS_IN_AXI: usize = 3;
/// Concurrent SOCKS sessions; each also costs ≈ 5.0 KB of AXI SRAM (its state in the
/// gateway's future and two socket entries). Maxima per buffer size: see the README.
pub(crate) const SESSIONS: usize = SESSIONS_IN_SRAM123 + SESSIONS_IN_DTCM + SESSIONS_IN_AXI;
/// Sessions that can be UDP associations at the same time (≈ 14.6 KiB each).
pub(crate) const UDP_SLOTS: usize = 2;
/// Sockets: the gateway's, plus DHCP, plus one spare.
pub(crate) const SOCKETS: usize = socksgate_embedded::pool::sockets_needed(SESSIONS, UDP_SLOTS) + 2;

/// The settings record: the last two 128 KiB sectors of bank 2 (offsets from 0x0800_0000).
/// `memory.x` ends the program's FLASH before them.
pub(crate) const SETTINGS_FLASH: u32 = 0x001C_0000;
/// One slot: one sector.
pub(crate) const SETTINGS_SLOT: u32 = 128 * 1024;

/// Factory settings (no record saved): DHCP, port 1080, no users and every request refused
/// (`default deny`) until a user and an allow rule (or `set default allow`) are added over
/// the console — a board on a real LAN is never an open proxy by accident.
pub(crate) fn defaults() -> Settings {
    Settings::new(1080, Action::Deny)
}
