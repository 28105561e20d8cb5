//! Interrupt-driven embassy-net driver for the SMSC LAN9118 of QEMU's mps2-an386.
//!
//! Programmed I/O through the RX/TX data FIFOs (register model: QEMU `hw/net/lan9118.c`).
//! The chip raises IRQ 13 when a frame's status enters the RX status FIFO (`RSFL`); the
//! handler acknowledges it and wakes the network runner, which then drains every pending
//! frame. QEMU transmits synchronously while the TX FIFO is written, so TX never waits. The
//! link state is the PHY's status bit (through the MAC's MII registers), read every 250 ms:
//! the monitor's `set_link n0 off|on` is seen within that time.
#![allow(unsafe_code)] // MMIO and the NVIC: every block carries its SAFETY argument.

use core::future::Future;
use core::marker::PhantomData;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Context;

use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::NVIC;
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::waitqueue::AtomicWaker;

/// Base address of the LAN9118 register window on mps2-an386.
const BASE: usize = 0x4020_0000;

mod reg {
    pub(super) const RX_DATA: usize = 0x00;
    pub(super) const TX_DATA: usize = 0x20;
    pub(super) const RX_STATUS: usize = 0x40;
    pub(super) const TX_STATUS: usize = 0x48;
    pub(super) const IRQ_CFG: usize = 0x54;
    pub(super) const INT_STS: usize = 0x58;
    pub(super) const INT_EN: usize = 0x5C;
    pub(super) const BYTE_TEST: usize = 0x64;
    pub(super) const TX_CFG: usize = 0x70;
    pub(super) const HW_CFG: usize = 0x74;
    pub(super) const RX_FIFO_INF: usize = 0x7C;
    pub(super) const TX_FIFO_INF: usize = 0x80;
    pub(super) const MAC_CSR_CMD: usize = 0xA4;
    pub(super) const MAC_CSR_DATA: usize = 0xA8;
}

const BYTE_TEST_MAGIC: u32 = 0x8765_4321;
const HW_CFG_SRST: u32 = 1 << 0;
const TX_CFG_TX_ON: u32 = 1 << 1;
const IRQ_CFG_EN: u32 = 1 << 8;
const IRQ_CFG_POL_HIGH: u32 = 1 << 4;
const IRQ_CFG_PUSH_PULL: u32 = 1 << 0;
/// RX status FIFO level interrupt: a frame arrived.
const INT_RSFL: u32 = 1 << 3;

const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
/// MII access and data (the PHY's registers through the MAC).
const MAC_MII_ACC: u32 = 6;
const MAC_MII_DATA: u32 = 7;
/// PHY basic status register and its link bit.
const PHY_BSR: u32 = 1;
const PHY_BSR_LINK: u32 = 1 << 2;
/// How often the link is read from the PHY (QEMU's model raises no interrupt for it).
const LINK_POLL: embassy_time::Duration = embassy_time::Duration::from_millis(250);
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_FDPX: u32 = 1 << 20;
/// RX status error summary bit.
const RX_STATUS_ES: u32 = 1 << 15;
/// TX command A: first and last segment of a frame.
const TX_CMD_A_FIRST_LAST: u32 = (1 << 13) | (1 << 12);

/// Largest frame embassy-net hands us (Ethernet header + 1500-byte MTU).
const MTU: usize = 1514;
/// Largest RX FIFO entry QEMU produces (frames < 2048 bytes + 4-byte FCS).
const RX_MAX: usize = 2048 + 4;

/// NIC interrupt line on mps2-an386.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Irq;

// SAFETY: 13 is the LAN9118 line of mps2-an386 and a valid external interrupt number.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        13
    }
}

static RX_WAKER: AtomicWaker = AtomicWaker::new();
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Why the NIC did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InitError {
    /// The driver was already created once.
    AlreadyTaken,
    /// BYTE_TEST did not read back the magic value: no LAN9118 at [`BASE`].
    NoDevice,
}

/// The LAN9118, owned: [`Lan9118::take`] hands it out once.
#[derive(Debug)]
pub(crate) struct Lan9118 {
    mac: [u8; 6],
    /// When to read the PHY's link bit next (QEMU: `set_link` in the monitor).
    link_check: embassy_time::Instant,
    link_up: bool,
}

fn read(offset: usize) -> u32 {
    // SAFETY: BASE..BASE+0x100 is the LAN9118 register window on mps2-an386; every offset
    // used is a 32-bit aligned register in it. Reads of the FIFO ports pop entries, which
    // only the single `Lan9118` instance (or the IRQ handler, for INT_STS) does.
    unsafe { read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`: an aligned register of the LAN9118 window, owned by this driver.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

fn mac_csr_wait() {
    while read(reg::MAC_CSR_CMD) & CSR_BUSY != 0 {}
}

fn mac_csr_read(index: u32) -> u32 {
    mac_csr_wait();
    write(reg::MAC_CSR_CMD, CSR_BUSY | CSR_READ | index);
    mac_csr_wait();
    read(reg::MAC_CSR_DATA)
}

fn mac_csr_write(index: u32, value: u32) {
    mac_csr_wait();
    write(reg::MAC_CSR_DATA, value);
    write(reg::MAC_CSR_CMD, CSR_BUSY | index);
    mac_csr_wait();
}

fn phy_read(register: u32) -> u32 {
    mac_csr_write(MAC_MII_ACC, register << 6);
    mac_csr_read(MAC_MII_DATA) & 0xFFFF
}

impl Lan9118 {
    /// Resets and starts the NIC, enables its RX interrupt and unmasks IRQ 13.
    ///
    /// Returns [`InitError::AlreadyTaken`] on a second call: the driver owns the FIFOs.
    pub(crate) fn take() -> Result<Self, InitError> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(InitError::AlreadyTaken);
        }
        if read(reg::BYTE_TEST) != BYTE_TEST_MAGIC {
            return Err(InitError::NoDevice);
        }
        write(reg::HW_CFG, HW_CFG_SRST);
        while read(reg::HW_CFG) & HW_CFG_SRST != 0 {}

        let lo = mac_csr_read(MAC_ADDRL).to_le_bytes();
        let hi = mac_csr_read(MAC_ADDRH).to_le_bytes();
        let mut mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        if mac == [0; 6] || mac[0] & 1 != 0 {
            // No usable address from the EEPROM: a locally administered one.
            mac = [0x02, 0x00, 0x50, 0x53, 0x4B, 0x01];
            mac_csr_write(
                MAC_ADDRL,
                u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            );
            mac_csr_write(MAC_ADDRH, u32::from_le_bytes([mac[4], mac[5], 0, 0]));
        }
        // Exact unicast match plus broadcast (ARP); promiscuous mode (the reset value) off.
        mac_csr_write(MAC_CR, MAC_CR_RXEN | MAC_CR_TXEN | MAC_CR_FDPX);
        write(reg::TX_CFG, TX_CFG_TX_ON);

        write(reg::INT_STS, u32::MAX);
        write(reg::INT_EN, INT_RSFL);
        write(
            reg::IRQ_CFG,
            IRQ_CFG_EN | IRQ_CFG_POL_HIGH | IRQ_CFG_PUSH_PULL,
        );
        // SAFETY: `on_interrupt` (the handler of this line) only touches INT_STS and the
        // waker, both interrupt-safe; unmasking cannot break a critical section because
        // none is held here.
        unsafe { NVIC::unmask(Irq) };
        Ok(Self {
            mac,
            link_check: embassy_time::Instant::now() + LINK_POLL,
            link_up: phy_read(PHY_BSR) & PHY_BSR_LINK != 0,
        })
    }

    /// The station address in use.
    pub(crate) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn rx_pending() -> bool {
        (read(reg::RX_FIFO_INF) >> 16) & 0xFF != 0
    }

    fn tx_free() -> usize {
        (read(reg::TX_FIFO_INF) & 0xFFFF) as usize
    }
}

/// IRQ 13 handler body: acknowledges the NIC and wakes the network runner.
pub(crate) fn on_interrupt() {
    let status = read(reg::INT_STS);
    write(reg::INT_STS, status);
    RX_WAKER.wake();
}

/// Receives one frame: reads it from the RX FIFO on `consume`.
#[derive(Debug)]
pub(crate) struct Rx<'a>(PhantomData<&'a Lan9118>);

/// Transmits one frame through the TX FIFO on `consume`.
#[derive(Debug)]
pub(crate) struct Tx<'a>(PhantomData<&'a Lan9118>);

impl RxToken for Rx<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let status = read(reg::RX_STATUS);
        let len = ((status >> 16) & 0x3FFF) as usize;
        let mut buf = [0u8; RX_MAX];
        let words = len.div_ceil(4).min(RX_MAX / 4);
        for chunk in buf.chunks_exact_mut(4).take(words) {
            chunk.copy_from_slice(&read(reg::RX_DATA).to_le_bytes());
        }
        // Drain any excess so the FIFO stays in frame sync.
        for _ in words..len.div_ceil(4) {
            let _ = read(reg::RX_DATA);
        }
        let frame_len = if status & RX_STATUS_ES != 0 || !(4 + 14..=RX_MAX).contains(&len) {
            0 // an empty frame is dropped by the stack
        } else {
            len - 4 // strip the FCS
        };
        f(&mut buf[..frame_len])
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = [0u8; MTU + 3];
        let len = len.min(MTU);
        let result = f(&mut buf[..len]);
        write(reg::TX_DATA, TX_CMD_A_FIRST_LAST | len as u32);
        write(reg::TX_DATA, len as u32);
        for chunk in buf[..len.div_ceil(4) * 4].chunks_exact(4) {
            write(
                reg::TX_DATA,
                u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            );
        }
        // Pop TX status entries so that FIFO never fills.
        while (read(reg::TX_FIFO_INF) >> 16) & 0xFF != 0 {
            let _ = read(reg::TX_STATUS);
        }
        result
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(Rx<'_>, Tx<'_>)> {
        // Register before checking: a frame arriving in between still wakes us.
        RX_WAKER.register(cx.waker());
        if Self::rx_pending() {
            Some((Rx(PhantomData), Tx(PhantomData)))
        } else {
            None
        }
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<Tx<'_>> {
        if Self::tx_free() >= MTU + 16 {
            Some(Tx(PhantomData))
        } else {
            // QEMU drains the FIFO synchronously; a full FIFO is transient, so poll again.
            cx.waker().wake_by_ref();
            None
        }
    }

    fn link_state(&mut self, cx: &mut Context<'_>) -> LinkState {
        let now = embassy_time::Instant::now();
        if now >= self.link_check {
            self.link_up = phy_read(PHY_BSR) & PHY_BSR_LINK != 0;
            self.link_check = now + LINK_POLL;
        }
        // Always wake the runner for the next check. (A `Ticker` polled here registered no
        // wake-up on the poll that found it due, so after link loss, with no traffic to wake
        // the runner, the link was read again only when some other timer fired — often
        // smoltcp's 10 s DHCP discover retry: the gateway served again up to ~13 s after
        // the link returned.)
        let _ = core::pin::pin!(embassy_time::Timer::at(self.link_check)).poll(cx);
        if self.link_up {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(crate::config::NIC_BURST_FRAMES);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
