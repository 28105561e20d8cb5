//! The CMSDK APB UART0 of mps2-an386 (QEMU's `-serial`) as an `embedded-io-async` stream:
//! the console's transport.
//!
//! Polled: a read waits in 2 ms steps for the RX-full flag (QEMU holds further input back
//! while the one-byte receive register is full, so nothing is lost), a write waits for
//! TX-full to clear. Register model: QEMU `hw/char/cmsdk-apb-uart.c`.
#![allow(unsafe_code)] // MMIO: every access carries its SAFETY argument.

use core::ptr::{read_volatile, write_volatile};

use embassy_time::Timer;
use embedded_io_async::{ErrorType, Read, Write};

/// UART0 on mps2-an386.
const BASE: usize = 0x4000_4000;
const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
/// 25 MHz / 115 200 baud.
const DIVIDER: u32 = 217;

fn read(offset: usize) -> u32 {
    // SAFETY: BASE..BASE+0x14 is UART0's register window on mps2-an386; offsets are aligned
    // 32-bit registers. Only the single `Uart` (created once in `firmware.rs`) touches it.
    unsafe { read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

/// UART0, enabled for both directions.
#[derive(Debug)]
pub(crate) struct Uart(());

impl Uart {
    /// Enables UART0. Create it once.
    pub(crate) fn new() -> Self {
        write(BAUDDIV, DIVIDER);
        write(CTRL, CTRL_TX_EN | CTRL_RX_EN);
        Self(())
    }
}

impl ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl Read for Uart {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if read(STATE) & STATE_RX_FULL != 0 {
                buf[0] = read(DATA) as u8;
                return Ok(1);
            }
            Timer::after_millis(2).await;
        }
    }
}

impl Write for Uart {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &byte in buf {
            while read(STATE) & STATE_TX_FULL != 0 {
                embassy_futures::yield_now().await;
            }
            write(DATA, u32::from(byte));
        }
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        while read(STATE) & STATE_TX_FULL != 0 {
            embassy_futures::yield_now().await;
        }
        Ok(())
    }
}
