//! Capture files: legacy pcap (both byte orders, µs and ns timestamps) and pcapng (any number
//! of sections and interfaces), read zero-copy with `pcap-parser`.
//!
//! [`Reader`] takes the file in chunks of any size and hands every packet to a callback as a
//! [`Frame`] that borrows the input, located in the file (for hex highlighting) by its
//! [`Frame::file_offset`]; [`read`] is the one-chunk case.

use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le, parse_sectionheaderblock};
use pcap_parser::traits::PcapNGPacketBlock as _;
use pcap_parser::{Linktype, PcapError, parse_pcap_frame, parse_pcap_frame_be, parse_pcap_header};

use crate::InspectError;

/// The container format of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Legacy libpcap format.
    Pcap,
    /// pcapng.
    Pcapng,
}

impl Format {
    /// The name used in the JSON report (`"pcap"` or `"pcapng"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pcap => "pcap",
            Self::Pcapng => "pcapng",
        }
    }
}

/// One captured packet.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// 1-based frame number, as Wireshark counts.
    pub number: u64,
    /// Capture timestamp in seconds since the epoch.
    pub ts: f64,
    /// The link-layer type of the interface the packet was captured on.
    pub link_type: i32,
    /// The captured bytes (at most the snapshot length).
    pub data: &'a [u8],
    /// Offset of `data` in the capture file.
    pub file_offset: usize,
    /// The packet's length on the wire (larger than `data.len()` when truncated by snaplen).
    pub orig_len: u32,
}

/// What [`read`] learned about the file itself.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Container format.
    pub format: Format,
    /// Number of packets read.
    pub packets: u64,
    /// Link-layer types of the interfaces that carried packets, in order of first use.
    pub link_types: Vec<i32>,
    /// Set when the file ends in the middle of a record (a capture cut short).
    pub truncated: bool,
}

const PCAPNG_SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The offset of `part` inside `whole` (`part` must be a sub-slice of `whole`).
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Most bytes [`Reader`] holds while waiting for the rest of one record or block. A record
/// claiming more than this is treated as the end of the readable capture (as a cut-off record
/// is), so a corrupt length field cannot make the reader buffer the whole input.
pub const MAX_PENDING: usize = 16 << 20;

/// Per-interface facts a pcapng section's packets refer to.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: i32,
    /// Timestamp units per second.
    resolution: u64,
    /// Seconds added to every timestamp.
    offset: i64,
}

/// Where the reader is in the file.
#[derive(Debug)]
enum State {
    /// Before the file header.
    Start,
    /// Inside a legacy pcap file.
    Pcap {
        big_endian: bool,
        divisor: f64,
        link_type: i32,
    },
    /// Inside a pcapng file.
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Interface>,
        /// The first section header block is still to be read.
        first: bool,
    },
    /// A broken record ended the readable part: later bytes are ignored.
    Stopped,
}

/// Reads a capture pushed in chunks of any size, calling back for every packet as soon as
/// its record is complete.
///
/// Holds only the bytes of the record being completed (at most [`MAX_PENDING`]); a record
/// that lies whole inside a chunk is handed out without copying. Frames and errors are the
/// same whatever the chunking: [`Reader::finish`] after pushing a file in one piece or byte by
/// byte gives the same frames, offsets and [`Summary`].
#[derive(Debug)]
pub struct Reader {
    state: State,
    /// Unconsumed bytes carried over from earlier chunks.
    pending: Vec<u8>,
    /// File offset of `pending[0]` (of the next chunk's first byte when `pending` is empty).
    base: usize,
    /// Bytes pushed so far.
    total: usize,
    summary: Summary,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader at the start of a file.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            pending: Vec::new(),
            base: 0,
            total: 0,
            summary: Summary {
                format: Format::Pcap,
                packets: 0,
                link_types: Vec::new(),
                truncated: false,
            },
        }
    }

    /// Bytes pushed so far.
    pub fn bytes_read(&self) -> usize {
        self.total
    }

    /// The container format, once the file header has been read.
    pub fn format(&self) -> Option<Format> {
        match self.state {
            State::Start => None,
            _ => Some(self.summary.format),
        }
    }

    /// Feeds the next bytes of the file; `on_frame` receives every packet completed by them.
    ///
    /// Errors when the file is not a capture (as soon as its first bytes show it) or a pcapng
    /// block is malformed; the reader must not be used after an error.
    pub fn push(
        &mut self,
        chunk: &[u8],
        on_frame: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<(), InspectError> {
        self.total += chunk.len();
        if matches!(self.state, State::Stopped) {
            return Ok(());
        }
        if self.pending.is_empty() {
            // Fast path: parse in place, keep only an incomplete tail.
            let used = self.parse(chunk, false, on_frame)?;
            let tail = chunk.get(used..).unwrap_or_default();
            self.base += used;
            self.pending.extend_from_slice(tail);
        } else {
            let mut buf = core::mem::take(&mut self.pending);
            buf.extend_from_slice(chunk);
            let used = self.parse(&buf, false, on_frame)?;
            self.base += used;
            buf.drain(..used.min(buf.len()));
            self.pending = buf;
        }
        if self.pending.len() > MAX_PENDING {
            self.summary.truncated = true;
            self.state = State::Stopped;
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// End of input: reads what is left and returns what was learnt about the file.
    ///
    /// Errors when nothing was pushed, or the input ended inside the file header.
    pub fn finish(mut self, on_frame: &mut dyn FnMut(&Frame<'_>)) -> Result<Summary, InspectError> {
        if self.total == 0 {
            return Err(InspectError::Empty);
        }
        if !matches!(self.state, State::Stopped) {
            let buf = core::mem::take(&mut self.pending);
            self.parse(&buf, true, on_frame)?;
        }
        Ok(self.summary)
    }

    /// Reads as many whole records of `data` (file bytes from `self.base`) as there are;
    /// returns how many bytes they took. `at_end`: no more bytes will come.
    fn parse(
        &mut self,
        data: &[u8],
        at_end: bool,
        on_frame: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<usize, InspectError> {
        let mut used = 0;
        if matches!(self.state, State::Start) {
            if data.len() < 4 && !at_end {
                return Ok(0);
            }
            let magic = data.get(..4).unwrap_or(data);
            if magic == PCAPNG_SHB {
                self.summary.format = Format::Pcapng;
                self.state = State::Pcapng {
                    big_endian: false,
                    interfaces: Vec::new(),
                    first: true,
                };
            } else {
                let (rest, header) = match parse_pcap_header(data) {
                    Ok(ok) => ok,
                    Err(nom::Err::Incomplete(_)) if !at_end => return Ok(0),
                    Err(nom::Err::Incomplete(_)) => {
                        return Err(InspectError::Truncated { offset: 0 });
                    }
                    Err(_) => {
                        return Err(InspectError::NotACapture {
                            magic: hex_prefix(data),
                        });
                    }
                };
                if header.is_modified_format() {
                    return Err(InspectError::Unsupported(
                        "the \"modified\" (Kuznetzov) pcap format".into(),
                    ));
                }
                self.state = State::Pcap {
                    big_endian: header.is_bigendian(),
                    divisor: if header.is_nanosecond_precision() {
                        1e9
                    } else {
                        1e6
                    },
                    link_type: header.network.0,
                };
                used = offset_in(data, rest);
            }
        }
        let rest = data.get(used..).unwrap_or_default();
        let done = match self.state {
            State::Pcap {
                big_endian,
                divisor,
                link_type,
            } => self.read_pcap(data, rest, at_end, big_endian, divisor, link_type, on_frame),
            State::Pcapng { .. } => self.read_pcapng(data, rest, at_end, on_frame)?,
            State::Start | State::Stopped => rest,
        };
        Ok(offset_in(data, done))
    }

    /// Legacy pcap records of `rest` (a tail of `data`); returns what is left unread.
    #[allow(clippy::too_many_arguments)]
    fn read_pcap<'a>(
        &mut self,
        data: &'a [u8],
        mut rest: &'a [u8],
        at_end: bool,
        big_endian: bool,
        divisor: f64,
        link_type: i32,
        on_frame: &mut dyn FnMut(&Frame<'_>),
    ) -> &'a [u8] {
        while !rest.is_empty() {
            let parsed = if big_endian {
                parse_pcap_frame_be(rest)
            } else {
                parse_pcap_frame(rest)
            };
            match parsed {
                Ok((next, block)) => {
                    let ts = f64::from(block.ts_sec) + f64::from(block.ts_usec) / divisor;
                    let file_offset = self.base + offset_in(data, block.data);
                    self.emit(
                        on_frame,
                        link_type,
                        ts,
                        block.data,
                        file_offset,
                        block.origlen,
                    );
                    rest = next;
                }
                Err(nom::Err::Incomplete(_)) if !at_end => break,
                Err(_) => {
                    // A record cut short (or a broken one) ends the readable capture.
                    self.summary.truncated = true;
                    self.state = State::Stopped;
                    return data.get(data.len()..).unwrap_or_default();
                }
            }
        }
        rest
    }

    /// pcapng blocks of `rest` (a tail of `data`); returns what is left unread.
    fn read_pcapng<'a>(
        &mut self,
        data: &'a [u8],
        mut rest: &'a [u8],
        at_end: bool,
        on_frame: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<&'a [u8], InspectError> {
        while !rest.is_empty() {
            let State::Pcapng {
                big_endian, first, ..
            } = &self.state
            else {
                break;
            };
            let (big_endian, first) = (*big_endian, *first);
            let block = if rest.get(..4) == Some(&PCAPNG_SHB[..]) {
                parse_sectionheaderblock(rest).map(|(r, shb)| (r, Err(shb.big_endian())))
            } else if big_endian {
                parse_block_be(rest).map(|(r, b)| (r, Ok(b)))
            } else {
                parse_block_le(rest).map(|(r, b)| (r, Ok(b)))
            };
            let (next, block) = match block {
                Ok(ok) => ok,
                Err(nom::Err::Incomplete(_)) if !at_end => break,
                Err(e) if first => {
                    return Err(match e {
                        nom::Err::Incomplete(_) => InspectError::Truncated { offset: 0 },
                        _ => InspectError::Malformed {
                            offset: 0,
                            reason: "broken pcapng section header".into(),
                        },
                    });
                }
                Err(nom::Err::Incomplete(_)) => {
                    self.summary.truncated = true;
                    self.state = State::Stopped;
                    return Ok(data.get(data.len()..).unwrap_or_default());
                }
                Err(e) => {
                    return Err(InspectError::Malformed {
                        offset: self.base + offset_in(data, rest),
                        reason: describe(&e),
                    });
                }
            };
            let here = self.base + offset_in(data, rest);
            if let State::Pcapng { first, .. } = &mut self.state {
                *first = false;
            }
            match block {
                // A new section: its byte order, and no interfaces yet.
                Err(be) => {
                    if let State::Pcapng {
                        big_endian,
                        interfaces,
                        ..
                    } = &mut self.state
                    {
                        *big_endian = be;
                        interfaces.clear();
                    }
                }
                Ok(Block::InterfaceDescription(idb)) => {
                    if let State::Pcapng { interfaces, .. } = &mut self.state {
                        interfaces.push(Interface {
                            link_type: idb.linktype.0,
                            resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                            offset: idb.if_tsoffset,
                        });
                    }
                }
                Ok(Block::EnhancedPacket(epb)) => {
                    let iface = self.interface(epb.if_id as usize).ok_or_else(|| {
                        InspectError::Malformed {
                            offset: here,
                            reason: format!("packet refers to undeclared interface {}", epb.if_id),
                        }
                    })?;
                    let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                    let secs = units / iface.resolution;
                    let frac = units % iface.resolution;
                    let ts =
                        secs as f64 + frac as f64 / iface.resolution as f64 + iface.offset as f64;
                    // `data` includes padding; the packet is its first `caplen` bytes.
                    let bytes: &[u8] = epb.data;
                    let bytes = bytes.get(..epb.caplen as usize).unwrap_or(bytes);
                    let file_offset = self.base + offset_in(data, bytes);
                    self.emit(
                        on_frame,
                        iface.link_type,
                        ts,
                        bytes,
                        file_offset,
                        epb.orig_len(),
                    );
                }
                Ok(Block::SimplePacket(spb)) => {
                    // A simple packet belongs to interface 0 and carries no timestamp.
                    let iface = self.interface(0).ok_or_else(|| InspectError::Malformed {
                        offset: here,
                        reason: "simple packet block before any interface".into(),
                    })?;
                    let bytes: &[u8] = spb.data;
                    let bytes = bytes.get(..spb.origlen as usize).unwrap_or(bytes);
                    let file_offset = self.base + offset_in(data, bytes);
                    self.emit(
                        on_frame,
                        iface.link_type,
                        0.0,
                        bytes,
                        file_offset,
                        spb.orig_len(),
                    );
                }
                Ok(_) => {}
            }
            rest = next;
        }
        Ok(rest)
    }

    fn interface(&self, id: usize) -> Option<Interface> {
        match &self.state {
            State::Pcapng { interfaces, .. } => interfaces.get(id).copied(),
            _ => None,
        }
    }

    fn emit(
        &mut self,
        on_frame: &mut dyn FnMut(&Frame<'_>),
        link_type: i32,
        ts: f64,
        data: &[u8],
        file_offset: usize,
        orig_len: u32,
    ) {
        let summary = &mut self.summary;
        summary.packets += 1;
        if !summary.link_types.contains(&link_type) {
            summary.link_types.push(link_type);
        }
        on_frame(&Frame {
            number: summary.packets,
            ts,
            link_type,
            data,
            file_offset,
            orig_len,
        });
    }
}

/// Reads every packet of `bytes` at once, calling `on_frame` for each: [`Reader`] with the
/// whole file as one chunk.
///
/// Errors only when the file is not a capture at all or its first header is broken; a file
/// cut short after some packets is reported through [`Summary::truncated`].
pub fn read(bytes: &[u8], mut on_frame: impl FnMut(&Frame<'_>)) -> Result<Summary, InspectError> {
    let mut reader = Reader::new();
    reader.push(bytes, &mut on_frame)?;
    reader.finish(&mut on_frame)
}

fn describe(e: &nom::Err<PcapError<&[u8]>>) -> String {
    match e {
        nom::Err::Incomplete(_) => "block cut short".into(),
        nom::Err::Error(e) | nom::Err::Failure(e) => match e {
            PcapError::NomError(_, kind) => format!("invalid block ({kind:?})"),
            other => format!("{other:?}"),
        },
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The conventional name of a link-layer type (`"ETHERNET"`, `"LINUX_SLL"`, …).
pub fn link_type_name(link_type: i32) -> String {
    let name = match Linktype(link_type) {
        Linktype::NULL => "NULL",
        Linktype::ETHERNET => "ETHERNET",
        Linktype::RAW => "RAW",
        Linktype::LOOP => "LOOP",
        Linktype::LINUX_SLL => "LINUX_SLL",
        Linktype::LINUX_SLL2 => "LINUX_SLL2",
        Linktype::IPV4 => "IPV4",
        Linktype::IPV6 => "IPV6",
        _ => return format!("LINKTYPE_{link_type}"),
    };
    name.to_owned()
}
