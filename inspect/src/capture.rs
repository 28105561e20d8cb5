//! Capture files: legacy pcap (both byte orders, µs and ns timestamps) and pcapng (any number
//! of sections and interfaces), read zero-copy with `pcap-parser`.
//!
//! [`read`] walks the file once and hands every packet to a callback as a [`Frame`] that
//! borrows the input, so a frame's bytes can be located in the file (for hex highlighting)
//! by their [`Frame::file_offset`].

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

/// Reads every packet of `bytes`, calling `on_frame` for each and `on_progress(done)` with the
/// number of bytes read so far roughly every MiB.
///
/// Errors only when the file is not a capture at all or its first header is broken; a file
/// cut short after some packets is reported through [`Summary::truncated`].
pub fn read<'a>(
    bytes: &'a [u8],
    mut on_frame: impl FnMut(&Frame<'a>),
    mut on_progress: impl FnMut(usize),
) -> Result<Summary, InspectError> {
    if bytes.is_empty() {
        return Err(InspectError::Empty);
    }
    let magic = bytes.get(..4).unwrap_or(bytes);
    let mut summary = Summary {
        format: Format::Pcap,
        packets: 0,
        link_types: Vec::new(),
        truncated: false,
    };
    let mut progress_mark = 0usize;
    let mut tick = |pos: usize, on_progress: &mut dyn FnMut(usize)| {
        if pos >= progress_mark {
            progress_mark = pos + (1 << 20);
            on_progress(pos);
        }
    };
    if magic == PCAPNG_SHB {
        summary.format = Format::Pcapng;
        read_pcapng(bytes, &mut summary, &mut on_frame, &mut |p| {
            tick(p, &mut on_progress)
        })?;
    } else {
        let (mut rest, header) = parse_pcap_header(bytes).map_err(|e| match e {
            nom::Err::Incomplete(_) => InspectError::Truncated { offset: 0 },
            _ => InspectError::NotACapture {
                magic: hex_prefix(bytes),
            },
        })?;
        let big_endian = header.is_bigendian();
        let nanos = header.is_nanosecond_precision();
        if header.is_modified_format() {
            return Err(InspectError::Unsupported(
                "the \"modified\" (Kuznetzov) pcap format".into(),
            ));
        }
        let link_type = header.network.0;
        let divisor = if nanos { 1e9 } else { 1e6 };
        while !rest.is_empty() {
            let parsed = if big_endian {
                parse_pcap_frame_be(rest)
            } else {
                parse_pcap_frame(rest)
            };
            match parsed {
                Ok((next, block)) => {
                    summary.packets += 1;
                    if !summary.link_types.contains(&link_type) {
                        summary.link_types.push(link_type);
                    }
                    on_frame(&Frame {
                        number: summary.packets,
                        ts: f64::from(block.ts_sec) + f64::from(block.ts_usec) / divisor,
                        link_type,
                        data: block.data,
                        file_offset: offset_in(bytes, block.data),
                        orig_len: block.origlen,
                    });
                    rest = next;
                    tick(offset_in(bytes, rest), &mut on_progress);
                }
                Err(_) => {
                    summary.truncated = true;
                    break;
                }
            }
        }
    }
    on_progress(bytes.len());
    Ok(summary)
}

/// Per-interface facts a pcapng section's packets refer to.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: i32,
    /// Timestamp units per second.
    resolution: u64,
    /// Seconds added to every timestamp.
    offset: i64,
}

fn read_pcapng<'a>(
    bytes: &'a [u8],
    summary: &mut Summary,
    on_frame: &mut impl FnMut(&Frame<'a>),
    on_progress: &mut dyn FnMut(usize),
) -> Result<(), InspectError> {
    let mut rest = bytes;
    let mut big_endian = false;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut first = true;
    while !rest.is_empty() {
        let block = if rest.get(..4) == Some(&PCAPNG_SHB[..]) {
            parse_sectionheaderblock(rest).map(|(r, shb)| {
                big_endian = shb.big_endian();
                interfaces.clear();
                (r, None)
            })
        } else if big_endian {
            parse_block_be(rest).map(|(r, b)| (r, Some(b)))
        } else {
            parse_block_le(rest).map(|(r, b)| (r, Some(b)))
        };
        let (next, block) = match block {
            Ok(ok) => ok,
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
                summary.truncated = true;
                break;
            }
            Err(e) => {
                return Err(InspectError::Malformed {
                    offset: offset_in(bytes, rest),
                    reason: describe(&e),
                });
            }
        };
        first = false;
        match block {
            Some(Block::InterfaceDescription(idb)) => interfaces.push(Interface {
                link_type: idb.linktype.0,
                resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                offset: idb.if_tsoffset,
            }),
            Some(Block::EnhancedPacket(epb)) => {
                let iface = interfaces.get(epb.if_id as usize).copied().ok_or_else(|| {
                    InspectError::Malformed {
                        offset: offset_in(bytes, rest),
                        reason: format!("packet refers to undeclared interface {}", epb.if_id),
                    }
                })?;
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let secs = units / iface.resolution;
                let frac = units % iface.resolution;
                let ts = secs as f64 + frac as f64 / iface.resolution as f64 + iface.offset as f64;
                // `data` includes padding; the packet is its first `caplen` bytes.
                let data: &'a [u8] = epb.data;
                let data = data.get(..epb.caplen as usize).unwrap_or(data);
                emit(
                    bytes,
                    summary,
                    on_frame,
                    iface.link_type,
                    ts,
                    data,
                    epb.orig_len(),
                );
            }
            Some(Block::SimplePacket(spb)) => {
                // A simple packet belongs to interface 0 and carries no timestamp.
                let iface = interfaces
                    .first()
                    .copied()
                    .ok_or_else(|| InspectError::Malformed {
                        offset: offset_in(bytes, rest),
                        reason: "simple packet block before any interface".into(),
                    })?;
                let data: &'a [u8] = spb.data;
                let data = data.get(..spb.origlen as usize).unwrap_or(data);
                emit(
                    bytes,
                    summary,
                    on_frame,
                    iface.link_type,
                    0.0,
                    data,
                    spb.orig_len(),
                );
            }
            _ => {}
        }
        rest = next;
        on_progress(offset_in(bytes, rest));
    }
    Ok(())
}

fn emit<'a>(
    bytes: &'a [u8],
    summary: &mut Summary,
    on_frame: &mut impl FnMut(&Frame<'a>),
    link_type: i32,
    ts: f64,
    data: &'a [u8],
    orig_len: u32,
) {
    summary.packets += 1;
    if !summary.link_types.contains(&link_type) {
        summary.link_types.push(link_type);
    }
    on_frame(&Frame {
        number: summary.packets,
        ts,
        link_type,
        data,
        file_offset: offset_in(bytes, data),
        orig_len,
    });
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
