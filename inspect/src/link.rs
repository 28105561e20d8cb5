//! Link and network layers: from a frame's bytes to an IP packet carrying TCP or UDP.
//!
//! Supported link types: Ethernet (with VLAN/QinQ tags, via `etherparse`), Linux cooked
//! capture v1 (SLL) and v2 (SLL2), raw IPv4/IPv6 (`RAW`, `IPV4`, `IPV6`) and BSD
//! loopback (`NULL` in host byte order, `LOOP` in network byte order). IP fragments and other
//! transports are skipped.

use core::net::{IpAddr, SocketAddr};

use etherparse::{
    EtherType, Ethernet2Slice, IpNumber, LaxIpPayloadSlice, LaxIpSlice, LaxNetSlice,
    LaxSlicedPacket, TcpSlice, TransportSlice, UdpSlice,
};

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
    // IP straight after the link header takes the light path (`from_ip`); anything else
    // (VLAN tags, ARP, …) goes through etherparse's whole-packet slicer.
    let ip = match link_type {
        // LINKTYPE_ETHERNET
        1 => {
            let ethernet = Ethernet2Slice::from_slice_without_fcs(data).ok()?;
            let payload = ethernet.payload();
            if !is_ip(payload.ether_type) {
                return from_sliced(data, &LaxSlicedPacket::from_ethernet(data).ok()?);
            }
            payload.payload
        }
        // LINKTYPE_NULL: 4-byte address family in the capturing host's byte order;
        // LINKTYPE_LOOP: the same in network byte order. AF_INET is 2 everywhere, AF_INET6
        // is 24, 28 or 30 depending on the BSD, 10 on Linux; peek at the IP version instead.
        0 | 108 => data.get(4..)?,
        // LINKTYPE_RAW (and the DLT_RAW values some systems write), IPV4, IPV6
        101 | 12 | 14 | 228 | 229 => data,
        // LINKTYPE_LINUX_SLL: 16-byte header, protocol type at offset 14.
        113 => match from_ethertype(data, be16(data, 14)?, data.get(16..)?) {
            Ok(ip) => ip,
            Err(other) => return other,
        },
        // LINKTYPE_LINUX_SLL2: 20-byte header, protocol type at offset 0.
        276 => match from_ethertype(data, be16(data, 0)?, data.get(20..)?) {
            Ok(ip) => ip,
            Err(other) => return other,
        },
        _ => return None,
    };
    from_ip(data, ip)
}

fn is_ip(ether_type: EtherType) -> bool {
    ether_type == EtherType::IPV4 || ether_type == EtherType::IPV6
}

/// The IP packet after a link header naming `ether_type`, or — for another protocol (a VLAN
/// tag, …) — the packet decoded by etherparse's whole-packet slicer, as the outer `Err`.
fn from_ethertype<'a>(
    frame: &'a [u8],
    ether_type: u16,
    data: &'a [u8],
) -> Result<&'a [u8], Option<Packet<'a>>> {
    let ether_type = EtherType(ether_type);
    if is_ip(ether_type) {
        Ok(data)
    } else {
        Err(from_sliced(
            frame,
            &LaxSlicedPacket::from_ether_type(ether_type, data),
        ))
    }
}

/// The packet in `ip` (IPv4 or IPv6 and what it carries), a part of `frame`: what
/// `LaxSlicedPacket::from_ip` and [`from_sliced`] give, without building the whole-packet
/// slice, which is large and was moved several times per packet (a sixth of the time per
/// packet on captures of small packets).
fn from_ip<'a>(frame: &'a [u8], ip: &'a [u8]) -> Option<Packet<'a>> {
    let (ip, stop) = LaxIpSlice::from_slice(ip).ok()?;
    if stop.is_some() {
        // The slicer stops before the transport layer: no packet, as there.
        return None;
    }
    let (src_ip, dst_ip, ip_payload) = match &ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
            )
        }
    };
    if ip_payload.fragmented {
        return None;
    }
    let transport = match ip_payload.ip_number {
        IpNumber::TCP => TransportSlice::Tcp(TcpSlice::from_slice(ip_payload.payload).ok()?),
        IpNumber::UDP => TransportSlice::Udp(UdpSlice::from_slice_lax(ip_payload.payload).ok()?),
        _ => return None,
    };
    packet(frame, src_ip, dst_ip, ip_payload, &transport)
}

/// The packet etherparse's whole-packet slicer found in `frame`.
fn from_sliced<'a>(frame: &'a [u8], sliced: &LaxSlicedPacket<'a>) -> Option<Packet<'a>> {
    let (src_ip, dst_ip, ip_payload) = match sliced.net.as_ref()? {
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
    packet(
        frame,
        src_ip,
        dst_ip,
        ip_payload,
        sliced.transport.as_ref()?,
    )
}

/// The TCP segment or UDP datagram `transport`, from `src_ip` to `dst_ip`, in `frame`.
fn packet<'a>(
    frame: &'a [u8],
    src_ip: IpAddr,
    dst_ip: IpAddr,
    ip_payload: &LaxIpPayloadSlice<'a>,
    transport: &TransportSlice<'a>,
) -> Option<Packet<'a>> {
    let truncated = ip_payload.incomplete;
    let (src_port, dst_port, transport, payload) = match transport {
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
        payload_offset: crate::capture::offset_in(frame, payload),
        truncated,
    })
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at + 2)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

#[cfg(test)]
mod tests {
    use etherparse::{LaxSlicedPacket, PacketBuilder};

    use super::{decode, from_sliced};

    /// What etherparse's whole-packet slicer gives for `data` on `link_type`: the light path
    /// of [`decode`] must agree with it on every input.
    fn sliced(link_type: i32, data: &[u8]) -> Option<String> {
        let sliced = match link_type {
            1 => LaxSlicedPacket::from_ethernet(data).ok()?,
            101 => LaxSlicedPacket::from_ip(data).ok()?,
            113 => LaxSlicedPacket::from_ether_type(
                etherparse::EtherType(u16::from_be_bytes([*data.get(14)?, *data.get(15)?])),
                data.get(16..)?,
            ),
            _ => unreachable!(),
        };
        from_sliced(data, &sliced).map(|p| format!("{p:?}"))
    }

    fn frames() -> Vec<(i32, Vec<u8>)> {
        let mut out = Vec::new();
        let tcp = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 2], 64)
            .tcp(40000, 1080, 7, 1000)
            .ack(99)
            .syn();
        let mut f = Vec::new();
        tcp.write(&mut f, &[5, 1, 0]).unwrap();
        out.push((1, f));
        let udp = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6([1; 16], [2; 16], 64)
            .udp(5353, 50000);
        let mut f = Vec::new();
        udp.write(&mut f, &[0, 0, 0, 1, 127, 0, 0, 53, 0, 53, 1, 2])
            .unwrap();
        out.push((1, f));
        let vlan = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(7).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4);
        let mut f = Vec::new();
        vlan.write(&mut f, b"abc").unwrap();
        out.push((1, f));
        let raw = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, 3, 4);
        let mut f = Vec::new();
        raw.write(&mut f, b"hello").unwrap();
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(&f);
        out.push((101, f));
        out.push((113, sll));
        out
    }

    #[test]
    fn the_light_path_decodes_as_the_whole_packet_slicer() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut decoded = 0;
        for (link, frame) in frames() {
            assert!(decode(link, &frame).is_some(), "{link} {frame:02x?}");
            let mut check = |f: &[u8]| {
                let light = decode(link, f).map(|p| format!("{p:?}"));
                decoded += usize::from(light.is_some());
                assert_eq!(light, sliced(link, f), "{link} {f:02x?}");
            };
            // Every truncation, every byte set to a few telling values, random damage.
            for len in 0..=frame.len() {
                check(&frame[..len]);
            }
            for at in 0..frame.len() {
                for value in [0, 1, 4, 5, 6, 0x11, 0x20, 0x40, 0x45, 0x60, 0x81, 0xff] {
                    let mut f = frame.clone();
                    f[at] = value;
                    check(&f);
                }
            }
            for _ in 0..2000 {
                let mut f = frame.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % f.len();
                    f[at] = next() as u8;
                }
                f.truncate(f.len() - (next() as usize % 4).min(f.len()));
                check(&f);
            }
        }
        assert!(decoded > 1000, "{decoded}");
    }
}
