//! `socksgate-w5500-pico`: the SOCKS gateway firmware for the WIZnet W5500-EVB-Pico (RP2040,
//! W5500 Ethernet controller on SPI0).
//!
//! The W5500 runs in MACRAW mode (embassy-net-wiznet): it only moves Ethernet frames, and the
//! same embassy-net/smoltcp stack and gateway library as the other boards run on the RP2040.
//! Users, rules, port, address and limits are set at run time over the console on UART0
//! (GP0 TX, GP1 RX, 115200 8N1) and kept in the last two sectors of the QSPI flash; sizes and
//! factory settings live in `config.rs` next to this file. Build: `cargo build --release
//! --target thumbv6m-none-eabi --features w5500-pico --bin socksgate-w5500-pico` (see the
//! README).
//!
//! On the host this binary is an empty stub so that host builds and `cargo clippy
//! --all-targets --features w5500-pico` work; the firmware exists only for `target_os = "none"`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod config;
#[cfg(target_os = "none")]
mod firmware;
