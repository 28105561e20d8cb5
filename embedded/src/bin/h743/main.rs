//! `socksgate-h743`: the SOCKS gateway firmware for the NUCLEO-H743ZI2 (STM32H743ZI,
//! LAN8742A RMII PHY on the board).
//!
//! Static configuration — address (DHCP or static), port, users — lives in `config.rs`
//! next to this file; flash with `probe-rs run --chip STM32H743ZITx` (see the README).
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
mod ram_banks;
