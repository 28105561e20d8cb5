//! Link and network layers: from a frame's bytes to an IP packet carrying TCP or UDP.
//!
//! Supported link types: Ethernet (with VLAN/QinQ tags, via `etherparse`), Linux cooked
//! capture v1 (SLL) and v2 (SLL2), raw IPv4/IPv6 (`RAW`, `IPV4`, `IPV6`) and BSD
//! loopback (`NULL` in host byte order, `LOOP` in network byte order). IP fragments and other
//! transports are skipped.

use core::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// A TCP segment's header fields the reassembler needs.
#[derive(Clone, Copy, Debug)]
pub struct TcpMeta {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when `ack_flag`).
    pub ack: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack_flag: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
}

/// The transport layer of a decoded packet.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    /// A TCP segment.
    Tcp(TcpMeta),
    /// A UDP datagram.
    Udp,
}

/// A decoded TCP or UDP packet.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// TCP or UDP.
    pub transport: Transport,
    /// Transport payload as captured (may be shorter than sent when the snapshot length cut
    /// it; see `truncated`).
    pub payload: &'a [u8],
    /// Offset of `payload` within the frame's data.
    pub payload_offset: usize,
    /// The IP header announced more payload than was captured.
    pub truncated: bool,
}

/// Decodes `data` captured with `link_type`. Returns `None` for anything that is not an
/// unfragmented IPv4/IPv6 TCP or UDP packet, or that cannot be decoded.
pub fn decode(link_type: i32, data: &[u8]) -> Option<Packet<'_>> {
    let sliced = match link_type {
        // LINKTYPE_ETHERNET
        1 => LaxSlicedPacket::from_ethernet(data).ok()?,
        // LINKTYPE_NULL: 4-byte address family in the capturing host's byte order;
        // LINKTYPE_LOOP: the same in network byte order. AF_INET is 2 everywhere, AF_INET6
        // is 24, 28 or 30 depending on the BSD, 10 on Linux; peek at the IP version instead.
        0 | 108 => from_ip(data.get(4..)?)?,
        // LINKTYPE_RAW (and the DLT_RAW values some systems write), IPV4, IPV6
        101 | 12 | 14 | 228 | 229 => from_ip(data)?,
        // LINKTYPE_LINUX_SLL: 16-byte header, protocol type at offset 14.
        113 => from_ethertype(be16(data, 14)?, data.get(16..)?),
        // LINKTYPE_LINUX_SLL2: 20-byte header, protocol type at offset 0.
        276 => from_ethertype(be16(data, 0)?, data.get(20..)?),
        _ => return None,
    };
    let net = sliced.net.as_ref()?;
    let (src_ip, dst_ip, ip_payload) = match net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
            )
        }
        LaxNetSlice::Arp(_) => return None,
    };
    if ip_payload.fragmented {
        return None;
    }
    let truncated = ip_payload.incomplete;
    let (src_port, dst_port, transport, payload) = match sliced.transport.as_ref()? {
        TransportSlice::Tcp(tcp) => (
            tcp.source_port(),
            tcp.destination_port(),
            Transport::Tcp(TcpMeta {
                seq: tcp.sequence_number(),
                ack: tcp.acknowledgment_number(),
                syn: tcp.syn(),
                ack_flag: tcp.ack(),
                fin: tcp.fin(),
                rst: tcp.rst(),
            }),
            tcp.payload(),
        ),
        TransportSlice::Udp(udp) => (
            udp.source_port(),
            udp.destination_port(),
            Transport::Udp,
            udp.payload(),
        ),
        _ => return None,
    };
    Some(Packet {
        src: SocketAddr::new(src_ip, src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        transport,
        payload,
        payload_offset: crate::capture::offset_in(data, payload),
        truncated,
    })
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

fn from_ip(data: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    LaxSlicedPacket::from_ip(data).ok()
}

fn from_ethertype(ether_type: u16, data: &[u8]) -> LaxSlicedPacket<'_> {
    LaxSlicedPacket::from_ether_type(EtherType(ether_type), data)
}
