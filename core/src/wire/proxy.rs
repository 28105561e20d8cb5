//! The PROXY protocol header, versions 1 (text) and 2 (binary), as HAProxy specifies it: what
//! a load balancer sends before a connection's first byte to say which client it carries.
//!
//! [`ProxyHeader::parse`] follows the [module contract](super): `Partial` while the bytes
//! are a prefix of a header, `Complete((header, consumed))` once a whole one is in (the bytes
//! after it are the client's SOCKS greeting), or a [`ProxyHeaderError`]. TLVs of version 2
//! are skipped. [`ProxyHeader::emit`] writes version 2.
//!
//! Written here rather than taken from a PROXY protocol crate: the maintained ones need
//! `std` or `alloc`, and the core parses incrementally into no storage of its own.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::str::FromStr;

use super::{BufferTooSmall, Status};

/// The 12 octets every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The start of every version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The longest version 1 header, CRLF included (the specification's figure).
pub const V1_MAX_LEN: usize = 107;

/// Version 2's fixed part: signature, version/command, family/protocol, length.
const V2_FIXED_LEN: usize = 16;

/// A parsed PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProxyHeader {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// The client and the address it connected to, as the balancer saw them; `None` when the
    /// header carries no addresses: a version 2 `LOCAL` connection (the balancer's own, e.g.
    /// a health check), version 1 `UNKNOWN`, or a family other than TCP over IPv4/IPv6. The
    /// receiver then uses the connection's own addresses.
    pub addresses: Option<ProxiedAddresses>,
}

/// The addresses a PROXY header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProxiedAddresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to (the balancer's frontend).
    pub destination: SocketAddr,
}

/// Why bytes are not a PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProxyHeaderError {
    /// The bytes begin neither signature: the connection does not start with a PROXY header.
    Missing,
    /// A version 2 header with a version other than 2.
    BadVersion(u8),
    /// A version 2 command other than `LOCAL` (0) and `PROXY` (1).
    BadCommand(u8),
    /// A version 2 address block shorter than its family needs.
    ShortAddresses,
    /// A version 1 line that is not `PROXY TCP4|TCP6|UNKNOWN …\r\n` with valid addresses
    /// and ports, or longer than 107 octets.
    BadV1Line,
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no PROXY protocol header"),
            Self::BadVersion(v) => write!(f, "PROXY protocol version {v} (expected 2)"),
            Self::BadCommand(c) => write!(f, "PROXY protocol v2 command {c} (expected 0 or 1)"),
            Self::ShortAddresses => f.write_str("PROXY protocol v2 address block too short"),
            Self::BadV1Line => f.write_str("malformed PROXY protocol v1 line"),
        }
    }
}

impl core::error::Error for ProxyHeaderError {}

/// The result of [`ProxyHeader::parse`].
pub type ProxyParseResult = Result<Status<(ProxyHeader, usize)>, ProxyHeaderError>;

impl ProxyHeader {
    /// Parses a version 1 or 2 header at the start of `buf`: see the [module
    /// documentation](self).
    pub fn parse(buf: &[u8]) -> ProxyParseResult {
        if is_prefix_of(buf, &V2_SIGNATURE) {
            return parse_v2(buf);
        }
        if is_prefix_of(buf, V1_PREFIX) {
            return parse_v1(buf);
        }
        Err(ProxyHeaderError::Missing)
    }

    /// The length [`emit`](Self::emit) writes: 16 octets, plus 12 for IPv4 or 36 for IPv6
    /// addresses.
    pub const fn buffer_len(&self) -> usize {
        V2_FIXED_LEN + address_block_len(self.addresses)
    }

    /// Writes this header as version 2 (`PROXY` with TCP addresses, or `LOCAL` without),
    /// whatever [`version`](Self::version) says. Addresses of different families are
    /// written as IPv6, the IPv4 one mapped.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.buffer_len();
        let Some(out) = out.get_mut(..len) else {
            return Err(BufferTooSmall { required: len });
        };
        let mut header = [0u8; V2_FIXED_LEN + 36];
        header[..12].copy_from_slice(&V2_SIGNATURE);
        let block = address_block_len(self.addresses);
        // At most 36: fits the length field.
        header[14..16].copy_from_slice(&(block as u16).to_be_bytes());
        let v6 = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        match self.addresses {
            None => header[12] = 0x20,
            Some(ProxiedAddresses {
                source: SocketAddr::V4(s),
                destination: SocketAddr::V4(d),
            }) => {
                header[12..14].copy_from_slice(&[0x21, 0x11]);
                header[16..20].copy_from_slice(&s.ip().octets());
                header[20..24].copy_from_slice(&d.ip().octets());
                header[24..26].copy_from_slice(&s.port().to_be_bytes());
                header[26..28].copy_from_slice(&d.port().to_be_bytes());
            }
            Some(a) => {
                header[12..14].copy_from_slice(&[0x21, 0x21]);
                header[16..32].copy_from_slice(&v6(a.source.ip()).octets());
                header[32..48].copy_from_slice(&v6(a.destination.ip()).octets());
                header[48..50].copy_from_slice(&a.source.port().to_be_bytes());
                header[50..52].copy_from_slice(&a.destination.port().to_be_bytes());
            }
        }
        out.copy_from_slice(header.get(..len).unwrap_or_default());
        Ok(len)
    }
}

const fn address_block_len(addresses: Option<ProxiedAddresses>) -> usize {
    match addresses {
        None => 0,
        Some(ProxiedAddresses {
            source: SocketAddr::V4(_),
            destination: SocketAddr::V4(_),
        }) => 12,
        Some(_) => 36,
    }
}

/// Whether `buf` and `signature` agree on their common length (so `buf` may still become,
/// or already starts with, `signature`).
fn is_prefix_of(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf.get(..n) == signature.get(..n)
}

fn parse_v2(buf: &[u8]) -> ProxyParseResult {
    let Some(fixed) = buf.get(..V2_FIXED_LEN) else {
        return Ok(Status::Partial);
    };
    let &[.., ver_cmd, family, len_hi, len_lo] = fixed else {
        return Ok(Status::Partial);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyHeaderError::BadVersion(ver_cmd >> 4));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(ProxyHeaderError::BadCommand(command));
    }
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Status::Partial);
    };
    // LOCAL connections carry no client; other families (UNIX, UDP, unspecified) give no
    // TCP client address either, and the receiver falls back to the connection's own.
    let addresses = match (command, family) {
        (1, 0x11) => Some(read_v4(block)?),
        (1, 0x21) => Some(read_v6(block)?),
        _ => None,
    };
    Ok(Status::Complete((
        ProxyHeader {
            version: 2,
            addresses,
        },
        total,
    )))
}

fn read_v4(block: &[u8]) -> Result<ProxiedAddresses, ProxyHeaderError> {
    let Some(&[a, b, c, d, e, f, g, h, sp0, sp1, dp0, dp1]) = block.get(..12) else {
        return Err(ProxyHeaderError::ShortAddresses);
    };
    Ok(ProxiedAddresses {
        source: SocketAddr::new(
            Ipv4Addr::new(a, b, c, d).into(),
            u16::from_be_bytes([sp0, sp1]),
        ),
        destination: SocketAddr::new(
            Ipv4Addr::new(e, f, g, h).into(),
            u16::from_be_bytes([dp0, dp1]),
        ),
    })
}

fn read_v6(block: &[u8]) -> Result<ProxiedAddresses, ProxyHeaderError> {
    let (Some(src), Some(dst), Some(&[sp0, sp1, dp0, dp1])) = (
        block.get(..16).and_then(|s| <[u8; 16]>::try_from(s).ok()),
        block.get(16..32).and_then(|s| <[u8; 16]>::try_from(s).ok()),
        block.get(32..36),
    ) else {
        return Err(ProxyHeaderError::ShortAddresses);
    };
    Ok(ProxiedAddresses {
        source: SocketAddr::new(Ipv6Addr::from(src).into(), u16::from_be_bytes([sp0, sp1])),
        destination: SocketAddr::new(Ipv6Addr::from(dst).into(), u16::from_be_bytes([dp0, dp1])),
    })
}

fn parse_v1(buf: &[u8]) -> ProxyParseResult {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_LEN || window.contains(&b'\n') {
            Err(ProxyHeaderError::BadV1Line)
        } else {
            Ok(Status::Partial)
        };
    };
    let line = window.get(V1_PREFIX.len()..end).unwrap_or_default();
    // A bare CR or LF inside the line is malformed, as it is before the CRLF has arrived.
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(ProxyHeaderError::BadV1Line);
    }
    let line = core::str::from_utf8(line).map_err(|_| ProxyHeaderError::BadV1Line)?;
    let addresses = v1_addresses(line).ok_or(ProxyHeaderError::BadV1Line)?;
    Ok(Status::Complete((
        ProxyHeader {
            version: 1,
            addresses,
        },
        end + 2,
    )))
}

/// `TCP4 src dst sport dport`, `TCP6 …`, or `UNKNOWN` followed by anything.
fn v1_addresses(line: &str) -> Option<Option<ProxiedAddresses>> {
    let mut fields = line.split(' ');
    let v6 = match fields.next()? {
        "TCP4" => false,
        "TCP6" => true,
        "UNKNOWN" => return Some(None),
        _ => return None,
    };
    let ip = |s: &str| -> Option<IpAddr> {
        if v6 {
            Ipv6Addr::from_str(s).ok().map(IpAddr::V6)
        } else {
            Ipv4Addr::from_str(s).ok().map(IpAddr::V4)
        }
    };
    let port = |s: &str| -> Option<u16> {
        // Decimal without a sign or leading zeros, as the specification writes ports.
        let canonical = s == "0"
            || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()));
        canonical.then(|| s.parse().ok()).flatten()
    };
    let source = ip(fields.next()?)?;
    let destination = ip(fields.next()?)?;
    let sport = port(fields.next()?)?;
    let dport = port(fields.next()?)?;
    if fields.next().is_some() {
        return None;
    }
    Some(Some(ProxiedAddresses {
        source: SocketAddr::new(source, sport),
        destination: SocketAddr::new(destination, dport),
    }))
}

#[cfg(test)]
mod test {
    use super::*;

    fn addrs(source: &str, destination: &str) -> Option<ProxiedAddresses> {
        Some(ProxiedAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        })
    }

    #[test]
    fn test_v1_tcp4_tcp6_unknown() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1080\r\nGREETING";
        let (h, n) = ProxyHeader::parse(line).unwrap().complete().unwrap();
        assert_eq!(n, line.len() - 8);
        assert_eq!(h.version, 1);
        assert_eq!(h.addresses, addrs("192.0.2.1:56324", "198.51.100.2:1080"));

        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n";
        let (h, _) = ProxyHeader::parse(line).unwrap().complete().unwrap();
        assert_eq!(h.addresses, addrs("[2001:db8::1]:0", "[2001:db8::2]:65535"));

        let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        let (h, n) = ProxyHeader::parse(line).unwrap().complete().unwrap();
        assert_eq!((h.addresses, n), (None, line.len()));
    }

    #[test]
    fn test_v1_rejects_malformed_lines() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1080 9\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
            b"PROXY UNKNOWN\n\r\n",
            b"PROXY UNKNOWN x\ry\r\n",
        ] {
            assert_eq!(
                ProxyHeader::parse(bad),
                Err(ProxyHeaderError::BadV1Line),
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
        // No CRLF within 107 octets.
        let mut long = [b'1'; 120];
        long[..14].copy_from_slice(b"PROXY UNKNOWN ");
        assert_eq!(ProxyHeader::parse(&long), Err(ProxyHeaderError::BadV1Line));
        assert_eq!(ProxyHeader::parse(&long[..106]), Ok(Status::Partial));
    }

    #[test]
    fn test_v2_round_trips_and_skips_tlvs() {
        for (src, dst) in [
            ("192.0.2.1:56324", "198.51.100.2:1080"),
            ("[2001:db8::1]:1", "[2001:db8::2]:2"),
        ] {
            let h = ProxyHeader {
                version: 2,
                addresses: addrs(src, dst),
            };
            let mut buf = [0u8; 80];
            let n = h.emit(&mut buf).unwrap();
            assert_eq!(n, h.buffer_len());
            assert_eq!(ProxyHeader::parse(&buf[..n]), Ok(Status::Complete((h, n))));
            // A TLV (type 4, NOOP, 3 octets) after the addresses: covered by the length.
            let len = u16::from_be_bytes([buf[14], buf[15]]) + 6;
            buf[14..16].copy_from_slice(&len.to_be_bytes());
            buf[n..n + 6].copy_from_slice(&[4, 0, 3, 0, 0, 0]);
            assert_eq!(
                ProxyHeader::parse(&buf[..n + 6]),
                Ok(Status::Complete((h, n + 6)))
            );
        }
    }

    #[test]
    fn test_v2_local_and_other_families_carry_no_client() {
        let local = ProxyHeader {
            version: 2,
            addresses: None,
        };
        let mut buf = [0u8; 16];
        assert_eq!(local.emit(&mut buf), Ok(16));
        assert_eq!(buf[12], 0x20);
        assert_eq!(ProxyHeader::parse(&buf), Ok(Status::Complete((local, 16))));
        // PROXY over UNIX sockets (family 0x31, 216 octets of addresses).
        let mut unix = [0u8; 16 + 216];
        unix[..12].copy_from_slice(&V2_SIGNATURE);
        unix[12] = 0x21;
        unix[13] = 0x31;
        unix[14..16].copy_from_slice(&216u16.to_be_bytes());
        assert_eq!(
            ProxyHeader::parse(&unix),
            Ok(Status::Complete((local, unix.len())))
        );
    }

    #[test]
    fn test_v2_errors() {
        let mut buf = [0u8; 28];
        let h = ProxyHeader {
            version: 2,
            addresses: addrs("192.0.2.1:1", "192.0.2.2:2"),
        };
        h.emit(&mut buf).unwrap();
        let mut bad = buf;
        bad[12] = 0x11;
        assert_eq!(
            ProxyHeader::parse(&bad),
            Err(ProxyHeaderError::BadVersion(1))
        );
        bad[12] = 0x22;
        assert_eq!(
            ProxyHeader::parse(&bad),
            Err(ProxyHeaderError::BadCommand(2))
        );
        let mut short = buf;
        short[15] = 8;
        assert_eq!(
            ProxyHeader::parse(&short[..24]),
            Err(ProxyHeaderError::ShortAddresses)
        );
        assert_eq!(
            ProxyHeader::parse(b"\x05\x01\x00"),
            Err(ProxyHeaderError::Missing)
        );
        assert_eq!(
            ProxyHeader::parse(b"\x04\x01"),
            Err(ProxyHeaderError::Missing)
        );
    }

    #[test]
    fn test_every_prefix_is_partial() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1080\r\n";
        let mut v2 = [0u8; 52];
        let n = ProxyHeader {
            version: 2,
            addresses: addrs("[2001:db8::1]:1", "[2001:db8::2]:2"),
        }
        .emit(&mut v2)
        .unwrap();
        for whole in [&v1[..], &v2[..n]] {
            for cut in 0..whole.len() {
                assert_eq!(
                    ProxyHeader::parse(&whole[..cut]),
                    Ok(Status::Partial),
                    "{cut}"
                );
            }
        }
    }

    #[test]
    fn test_emit_mixed_families_as_ipv6_and_short_buffer() {
        let h = ProxyHeader {
            version: 2,
            addresses: addrs("192.0.2.1:1", "[2001:db8::2]:2"),
        };
        let mut small = [0u8; 51];
        assert_eq!(h.emit(&mut small), Err(BufferTooSmall { required: 52 }));
        let mut buf = [0u8; 52];
        h.emit(&mut buf).unwrap();
        let (parsed, _) = ProxyHeader::parse(&buf).unwrap().complete().unwrap();
        let a = parsed.addresses.unwrap();
        assert_eq!(a.source, "[::ffff:192.0.2.1]:1".parse().unwrap());
    }
}
