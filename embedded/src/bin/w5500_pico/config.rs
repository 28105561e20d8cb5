//! Sizes, flash slots and factory settings of the W5500-EVB-Pico firmware. Users, rules,
//! port, address and limits are set at run time over the console (UART0 on GP0/GP1) and kept
//! in the QSPI flash.

use socksgate_core::rules::Action;
use socksgate_embedded::settings::Settings;

/// Concurrent SOCKS sessions: 21 360 B of RAM each with 4 KiB socket buffers. 8 is the
/// maximum that leaves the stack twice the largest frame (the main task's, 17.6 KB, which
/// loads the settings at boot) above `.bss` in the RP2040's 264 KiB; see the README.
pub(crate) const SESSIONS: usize = 8;
/// Sessions that can be UDP associations at the same time (≈ 14.6 KiB each).
pub(crate) const UDP_SLOTS: usize = 1;
/// Size of each of a session's four TCP socket buffers (receive window, send queue).
pub(crate) const SOCKET_BUF: usize = socksgate_embedded::pool::SOCKET_BUF;
/// Sockets: the gateway's, plus DHCP, plus one spare.
pub(crate) const SOCKETS: usize = socksgate_embedded::pool::sockets_needed(SESSIONS, UDP_SLOTS) + 2;

/// The on-board QSPI flash (W25Q16JV): 2 MiB.
pub(crate) const FLASH_SIZE: usize = 2 * 1024 * 1024;
/// One slot: one 4 KiB erase sector of the W25Q16JV.
pub(crate) const SETTINGS_SLOT: u32 = 4096;
/// The settings record: the flash's last two sectors (offsets from 0x1000_0000).
/// `memory/w5500_pico/memory.x` ends the program's FLASH before them.
pub(crate) const SETTINGS_FLASH: u32 = FLASH_SIZE as u32 - 2 * SETTINGS_SLOT;

/// Factory settings (no record saved): DHCP, port 1080, no users and every request refused
/// (`default deny`) until a user and an allow rule (or `set default allow`) are added over
/// the console — a board on a real LAN is never an open proxy by accident.
pub(crate) fn defaults() -> Settings {
    Settings::new(1080, Action::Deny)
}
