//! `socksgate-mps2`: the SOCKS gateway firmware for QEMU's mps2-an386 (Cortex-M4F, LAN9118).
//!
//! Network contract (QEMU user-mode networking): DHCP (10.0.2.15 from slirp), SOCKS on port
//! 1080, unless saved settings say otherwise. Logs go to the host through semihosting; the
//! line `gateway up` means the port is listening. The console is on UART0 (`-serial`); the
//! settings record lives in the PSRAM, which a memory-backend-file keeps across restarts.
//!
//! On the host this binary is an empty stub so that workspace-wide host builds and
//! `cargo clippy --all-targets` work; the firmware exists only for `target_os = "none"`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod config;
#[cfg(target_os = "none")]
mod firmware;
#[cfg(target_os = "none")]
mod flash;
#[cfg(target_os = "none")]
mod lan9118;
#[cfg(target_os = "none")]
mod time_driver;
#[cfg(target_os = "none")]
mod uart;
#[cfg(target_os = "none")]
mod vectors;
