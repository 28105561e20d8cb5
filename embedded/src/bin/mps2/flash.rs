//! The settings "flash" of the QEMU image: the first 8 KiB of the 16 MiB PSRAM at
//! 0x2100_0000, behaving as NOR flash (erase sets 0xFF, a write only clears bits).
//!
//! The PSRAM is QEMU's machine RAM, so `-machine mps2-an386,memory-backend=ID` with
//! `-object memory-backend-file,id=ID,size=16M,mem-path=FILE,share=on` backs it with a host
//! file: what the firmware saves survives a reset (the `reboot` command) and a QEMU restart,
//! and a test can corrupt a slot by editing the file. Without such a backend the region is
//! plain RAM, zeroed at start (no magic: no saved settings).
#![allow(unsafe_code)] // MMIO-like access to a fixed RAM window.

use core::ptr::{read_volatile, write_volatile};

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// PSRAM base on mps2-an386.
const BASE: usize = 0x2100_0000;
/// Two 4 KiB slots.
pub(crate) const SIZE: usize = 8 * 1024;
/// One slot (and erase unit).
pub(crate) const SECTOR: u32 = 4096;

/// An access outside the region.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutOfBounds;

impl NorFlashError for OutOfBounds {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::OutOfBounds
    }
}

/// The PSRAM window as NOR flash. Create it once.
#[derive(Debug)]
pub(crate) struct PsramFlash(());

impl PsramFlash {
    pub(crate) fn new() -> Self {
        Self(())
    }
}

fn check(offset: u32, len: usize) -> Result<usize, OutOfBounds> {
    let start = offset as usize;
    match start.checked_add(len) {
        Some(end) if end <= SIZE => Ok(start),
        _ => Err(OutOfBounds),
    }
}

impl ErrorType for PsramFlash {
    type Error = OutOfBounds;
}

impl ReadNorFlash for PsramFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), OutOfBounds> {
        let start = check(offset, bytes.len())?;
        for (i, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: `check` keeps BASE + start + i inside the 8 KiB window of PSRAM that
            // nothing else uses (the linker places nothing at 0x2100_0000).
            *byte = unsafe { read_volatile((BASE + start + i) as *const u8) };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl NorFlash for PsramFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), OutOfBounds> {
        let start = check(from, to.saturating_sub(from) as usize)?;
        for i in start..to as usize {
            // SAFETY: inside the window (checked above).
            unsafe { write_volatile((BASE + i) as *mut u8, 0xFF) };
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), OutOfBounds> {
        let start = check(offset, bytes.len())?;
        for (i, byte) in bytes.iter().enumerate() {
            let at = (BASE + start + i) as *mut u8;
            // SAFETY: inside the window (checked above). NOR semantics: bits only clear.
            unsafe { write_volatile(at, read_volatile(at) & byte) };
        }
        Ok(())
    }
}
