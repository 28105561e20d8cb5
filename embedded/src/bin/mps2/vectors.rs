//! Device interrupt vectors of mps2-an386 (only the LAN9118 line is used).
//!
//! There is no PAC for this QEMU board: the table is written here. cortex-m-rt's `device`
//! feature is on (the STM32 HAL of the other binary turns it on for the whole target), so
//! it expects exactly this `__INTERRUPTS` symbol.
#![allow(unsafe_code)] // the vector table is an unmangled static the linker places.

unsafe extern "C" {
    fn DefaultHandler();
}

/// Entry 13: the LAN9118.
unsafe extern "C" fn lan9118_irq() {
    crate::lan9118::on_interrupt();
}

/// Number of device interrupts in the table (mps2-an386 uses 0..32).
const COUNT: usize = 32;

// SAFETY: the table holds only valid handlers with the signature the NVIC expects; the
// section name and symbol are those cortex-m-rt's linker script places after the exceptions.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); COUNT] = {
    let mut table: [unsafe extern "C" fn(); COUNT] = [DefaultHandler; COUNT];
    table[13] = lan9118_irq;
    table
};
