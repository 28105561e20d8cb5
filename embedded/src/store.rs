//! The settings record in flash: two slots, each one erase unit, written alternately.
//!
//! A slot holds a 16-byte header and the body (the [settings text](crate::settings)):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SGCF` |
//! | 4 | 2 | format version (little endian), [`FORMAT_VERSION`] |
//! | 6 | 2 | body length |
//! | 8 | 4 | sequence number, +1 per save |
//! | 12 | 4 | CRC-32 (ISO-HDLC) of bytes 4..12 and the body |
//! | 16 | len | body |
//!
//! A save erases the slot *not* holding the newest good record and writes there with the
//! next sequence number, so the previous record survives until the new one is complete:
//! an interrupted write or a corrupted slot fails its checksum and [`load`](ConfigStore::load)
//! falls back to the other slot.
//!
//! Written here over `embedded-storage` rather than with `sequential-storage`: that crate's
//! map keeps only the newest copy of a key once it migrates a page, so a corrupted newest
//! item can leave nothing to fall back to, and it needs the async flash traits; two fixed
//! slots give the fallback this record promises with a page of code.

use embedded_storage::nor_flash::NorFlash;

/// Record format this firmware writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Header size.
pub const HEADER_LEN: usize = 16;
/// Largest body (the settings text).
pub const MAX_BODY: usize = 2048;
const MAGIC: [u8; 4] = *b"SGCF";
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// What one slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Erased or never written (no magic).
    Empty,
    /// A record of another format version.
    UnknownVersion(u16),
    /// The header or body does not match its checksum (an interrupted write, corruption).
    Corrupt,
    /// A good record.
    Good {
        /// Its sequence number.
        sequence: u32,
        /// Its body length.
        len: usize,
    },
}

/// The result of [`ConfigStore::load`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The state of each slot.
    pub slots: [SlotState; 2],
    /// The slot whose body was loaded (the good one with the higher sequence), if any.
    pub chosen: Option<usize>,
}

/// Flash errors, or a body too large for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError<E> {
    /// The flash driver failed.
    Flash(E),
    /// The body does not fit ([`MAX_BODY`] or the slot size).
    TooLarge,
}

/// Two slots of `F` at `base` and `base + slot_size` (each a whole number of erase units).
#[derive(Debug)]
pub struct ConfigStore<F> {
    flash: F,
    base: u32,
    slot_size: u32,
}

impl<F: NorFlash> ConfigStore<F> {
    /// Slots at `base` and `base + slot_size`. `slot_size` must be a multiple of
    /// `F::ERASE_SIZE` and hold a header and [`MAX_BODY`].
    pub fn new(flash: F, base: u32, slot_size: u32) -> Self {
        Self {
            flash,
            base,
            slot_size,
        }
    }

    fn slot_offset(&self, slot: usize) -> u32 {
        self.base + if slot == 0 { 0 } else { self.slot_size }
    }

    /// Reads one slot (0 or 1): its state, and its body into `body` if it is good (the
    /// length in `SlotState::Good`). For a caller that needs the older record when the newer
    /// one is unusable for reasons the checksum cannot see.
    pub fn read_slot(
        &mut self,
        slot: usize,
        body: &mut [u8; MAX_BODY],
    ) -> Result<SlotState, StoreError<F::Error>> {
        let offset = self.slot_offset(slot);
        let mut header = [0u8; HEADER_LEN];
        self.flash
            .read(offset, &mut header)
            .map_err(StoreError::Flash)?;
        if header[..4] != MAGIC {
            return Ok(SlotState::Empty);
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != FORMAT_VERSION {
            return Ok(SlotState::UnknownVersion(version));
        }
        let len = usize::from(u16::from_le_bytes([header[6], header[7]]));
        let sequence = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let Some(body) = body.get_mut(..len) else {
            return Ok(SlotState::Corrupt);
        };
        self.flash
            .read(offset + HEADER_LEN as u32, body)
            .map_err(StoreError::Flash)?;
        let mut digest = CRC.digest();
        digest.update(&header[4..12]);
        digest.update(body);
        if digest.finalize() != crc {
            return Ok(SlotState::Corrupt);
        }
        Ok(SlotState::Good { sequence, len })
    }

    /// Reads both slots and leaves the newest good body in `body` (its length in
    /// `SlotState::Good`).
    pub fn load(&mut self, body: &mut [u8; MAX_BODY]) -> Result<Loaded, StoreError<F::Error>> {
        let first = self.read_slot(0, body)?;
        let second = self.read_slot(1, body)?;
        let chosen = match (first, second) {
            (SlotState::Good { sequence: a, .. }, SlotState::Good { sequence: b, .. }) => {
                // Wrapping comparison: the later of two consecutive sequence numbers.
                Some(if b.wrapping_sub(a) as i32 > 0 { 1 } else { 0 })
            }
            (SlotState::Good { .. }, _) => Some(0),
            (_, SlotState::Good { .. }) => Some(1),
            _ => None,
        };
        // `body` holds the second slot's bytes; read the first again if it is the one.
        if chosen == Some(0) {
            self.read_slot(0, body)?;
        }
        Ok(Loaded {
            slots: [first, second],
            chosen,
        })
    }

    /// Writes `body` as the next record: into the slot not holding the newest good one,
    /// with the next sequence number. Returns the slot and sequence written.
    pub fn save(&mut self, body: &[u8]) -> Result<(usize, u32), StoreError<F::Error>> {
        if body.len() > MAX_BODY || HEADER_LEN + body.len() > self.slot_size as usize {
            return Err(StoreError::TooLarge);
        }
        let mut scratch = [0u8; MAX_BODY];
        let loaded = self.load(&mut scratch)?;
        let (slot, sequence) = match loaded.chosen {
            Some(current) => {
                let SlotState::Good { sequence, .. } = loaded.slots[current] else {
                    return Err(StoreError::TooLarge); // cannot happen: chosen is good
                };
                (1 - current, sequence.wrapping_add(1))
            }
            None => (0, 1),
        };
        let offset = self.slot_offset(slot);
        self.flash
            .erase(offset, offset + self.slot_size)
            .map_err(StoreError::Flash)?;
        let len = u16::try_from(body.len()).map_err(|_| StoreError::TooLarge)?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[6..8].copy_from_slice(&len.to_le_bytes());
        header[8..12].copy_from_slice(&sequence.to_le_bytes());
        let mut digest = CRC.digest();
        digest.update(&header[4..12]);
        digest.update(body);
        header[12..16].copy_from_slice(&digest.finalize().to_le_bytes());
        // Header and body go out in write-size units from one buffer (padding erased-0xFF).
        let write = F::WRITE_SIZE.max(1);
        let total = (HEADER_LEN + body.len()).div_ceil(write) * write;
        let mut image = [0xFFu8; HEADER_LEN + MAX_BODY + 64];
        let image = image.get_mut(..total).ok_or(StoreError::TooLarge)?;
        image[..HEADER_LEN].copy_from_slice(&header);
        image[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
        self.flash.write(offset, image).map_err(StoreError::Flash)?;
        Ok((slot, sequence))
    }

    /// The flash, back (for a board that shares it).
    pub fn into_inner(self) -> F {
        self.flash
    }
}

/// NOR flash in RAM for host tests.
#[cfg(test)]
pub(crate) mod ram_flash {
    use embedded_storage::nor_flash::{
        ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
    };

    /// NOR flash in RAM: erase sets 0xFF, a write can only clear bits (as the real thing).
    pub(crate) struct RamFlash(pub(crate) Vec<u8>);

    #[derive(Debug, PartialEq)]
    pub(crate) struct OutOfBounds;
    impl NorFlashError for OutOfBounds {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::OutOfBounds
        }
    }
    impl ErrorType for RamFlash {
        type Error = OutOfBounds;
    }
    impl ReadNorFlash for RamFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), OutOfBounds> {
            let at = offset as usize;
            bytes.copy_from_slice(self.0.get(at..at + bytes.len()).ok_or(OutOfBounds)?);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.0.len()
        }
    }
    impl NorFlash for RamFlash {
        const WRITE_SIZE: usize = 32;
        const ERASE_SIZE: usize = 4096;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), OutOfBounds> {
            self.0
                .get_mut(from as usize..to as usize)
                .ok_or(OutOfBounds)?
                .fill(0xFF);
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), OutOfBounds> {
            assert_eq!(bytes.len() % Self::WRITE_SIZE, 0);
            let at = offset as usize;
            let dst = self.0.get_mut(at..at + bytes.len()).ok_or(OutOfBounds)?;
            dst.iter_mut().zip(bytes).for_each(|(d, b)| *d &= b);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use embedded_storage::nor_flash::ReadNorFlash;

    use super::ram_flash::RamFlash;
    use super::*;

    fn store() -> ConfigStore<RamFlash> {
        ConfigStore::new(RamFlash(vec![0xFF; 3 * 4096]), 4096, 4096)
    }

    fn load(store: &mut ConfigStore<RamFlash>) -> (Loaded, Vec<u8>) {
        let mut body = [0u8; MAX_BODY];
        let loaded = store.load(&mut body).unwrap();
        let len = match loaded.chosen.map(|s| loaded.slots[s]) {
            Some(SlotState::Good { len, .. }) => len,
            _ => 0,
        };
        (loaded, body[..len].to_vec())
    }

    #[test]
    fn empty_flash_has_no_record() {
        let (loaded, _) = load(&mut store());
        assert_eq!(loaded.chosen, None);
        assert_eq!(loaded.slots, [SlotState::Empty, SlotState::Empty]);
    }

    #[test]
    fn saves_alternate_and_the_newest_wins() {
        let mut store = store();
        assert_eq!(store.save(b"port 1\n").unwrap(), (0, 1));
        assert_eq!(store.save(b"port 2\n").unwrap(), (1, 2));
        assert_eq!(store.save(b"port 3\n").unwrap(), (0, 3));
        let (loaded, body) = load(&mut store);
        assert_eq!(loaded.chosen, Some(0));
        assert_eq!(body, b"port 3\n");
        // Nothing outside the two slots was touched.
        assert!(store.flash.0[..4096].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn a_corrupted_or_interrupted_slot_falls_back_to_the_other() {
        let mut store = store();
        store.save(b"port 1\n").unwrap();
        store.save(b"port 2\n").unwrap(); // slot 1, the newest
        // One flipped bit in the newest body.
        store.flash.0[2 * 4096 + HEADER_LEN + 5] ^= 0x01;
        let (loaded, body) = load(&mut store);
        assert_eq!(loaded.slots[1], SlotState::Corrupt);
        assert_eq!(loaded.chosen, Some(0));
        assert_eq!(body, b"port 1\n");
        // The next save goes over the corrupt slot, keeping the good one.
        assert_eq!(store.save(b"port 3\n").unwrap(), (1, 2));
        assert_eq!(load(&mut store).1, b"port 3\n");
        // A write interrupted after the erase (header written, body still erased).
        store.flash.0[4096..2 * 4096].fill(0xFF);
        store.flash.0[4096..4096 + HEADER_LEN].copy_from_slice(&{
            let mut h = [0u8; HEADER_LEN];
            h[..4].copy_from_slice(b"SGCF");
            h[4..6].copy_from_slice(&1u16.to_le_bytes());
            h[6..8].copy_from_slice(&7u16.to_le_bytes());
            h[8..12].copy_from_slice(&9u32.to_le_bytes());
            h
        });
        let (loaded, body) = load(&mut store);
        assert_eq!(loaded.slots[0], SlotState::Corrupt);
        assert_eq!(body, b"port 3\n");
        // Another format version is not read.
        store.flash.0[2 * 4096 + 4] = 2;
        let (loaded, _) = load(&mut store);
        assert_eq!(loaded.slots[1], SlotState::UnknownVersion(2));
        assert_eq!(loaded.chosen, None);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut store = store();
        store.save(b"a").unwrap();
        // Pretend slot 0 holds sequence u32::MAX: the next save (1 - wrapping) must win.
        let offset = 4096;
        let mut header = [0u8; HEADER_LEN];
        store.flash.read(offset, &mut header).unwrap();
        header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut digest = CRC.digest();
        digest.update(&header[4..12]);
        digest.update(b"a");
        header[12..16].copy_from_slice(&digest.finalize().to_le_bytes());
        store.flash.0[4096..4096 + HEADER_LEN].copy_from_slice(&header);
        assert_eq!(store.save(b"b").unwrap(), (1, 0));
        assert_eq!(load(&mut store).1, b"b");
        assert_eq!(
            store.save(b"x".repeat(MAX_BODY + 1).as_slice()),
            Err(StoreError::TooLarge)
        );
    }
}
