//! TEMPORARY stand-in for `socksgate_core::wire::{method, userpass, gssapi, socks4, socks5,
//! udp}` with the announced API, until main lands the real parsers. Deleted at the merge:
//! the inspector must not parse SOCKS bytes itself.
#![allow(
    clippy::all,
    clippy::use_self,
    missing_docs,
    unreachable_pub,
    dead_code,
    missing_debug_implementations
)]

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use socksgate_core::wire::{Command, Method, ReplyCode, Socks4Code, Status, WireError};
use socksgate_core::{Addr, Domain};

type R<T> = Result<Status<(T, usize)>, WireError>;

fn need<T>(buf: &[u8], n: usize) -> Option<R<T>> {
    (buf.len() < n).then_some(Ok(Status::Partial))
}

fn addr(buf: &[u8], at: usize) -> Result<Option<(Addr<'_>, usize)>, WireError> {
    let Some(&t) = buf.get(at) else {
        return Ok(None);
    };
    let (len, a) = match t {
        1 => {
            let Some(b) = buf.get(at + 1..at + 7) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            (
                7,
                Addr::Ip(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be_bytes([b[4], b[5]]),
                ))),
            )
        }
        4 => {
            let Some(b) = buf.get(at + 1..at + 19) else {
                return Ok(None);
            };
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            (
                19,
                Addr::Ip(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(o),
                    u16::from_be_bytes([b[16], b[17]]),
                    0,
                    0,
                ))),
            )
        }
        3 => {
            let Some(&l) = buf.get(at + 1) else {
                return Ok(None);
            };
            let l = l as usize;
            let Some(b) = buf.get(at + 2..at + 4 + l) else {
                return Ok(None);
            };
            let d = Domain::new(&b[..l])?;
            (4 + l, Addr::Domain(d, u16::from_be_bytes([b[l], b[l + 1]])))
        }
        o => return Err(WireError::UnknownAddrType(o)),
    };
    Ok(Some((a, len)))
}

pub mod method {
    use super::*;
    pub struct MethodRequest<'a> {
        pub methods: &'a [u8],
    }
    impl<'a> MethodRequest<'a> {
        pub fn parse(buf: &'a [u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 5 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 2) {
                return p;
            }
            let n = buf[1] as usize;
            if n == 0 {
                return Err(WireError::NoMethods);
            }
            if let Some(p) = need(buf, 2 + n) {
                return p;
            }
            Ok(Status::Complete((
                Self {
                    methods: &buf[2..2 + n],
                },
                2 + n,
            )))
        }
    }
    pub struct MethodReply {
        pub method: Method,
    }
    impl MethodReply {
        pub fn parse(buf: &[u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 5 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 2) {
                return p;
            }
            Ok(Status::Complete((
                Self {
                    method: Method::from(buf[1]),
                },
                2,
            )))
        }
    }
}

pub mod userpass {
    use super::*;
    pub struct UserPassRequest<'a> {
        pub username: &'a [u8],
        pub password: &'a [u8],
    }
    impl<'a> UserPassRequest<'a> {
        pub fn parse(buf: &'a [u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 1 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 2) {
                return p;
            }
            let u = buf[1] as usize;
            if u == 0 {
                return Err(WireError::EmptyUsername);
            }
            if let Some(p) = need(buf, 3 + u) {
                return p;
            }
            let pl = buf[2 + u] as usize;
            if pl == 0 {
                return Err(WireError::EmptyPassword);
            }
            if let Some(p) = need(buf, 3 + u + pl) {
                return p;
            }
            Ok(Status::Complete((
                Self {
                    username: &buf[2..2 + u],
                    password: &buf[3 + u..3 + u + pl],
                },
                3 + u + pl,
            )))
        }
    }
    pub struct UserPassReply {
        pub status: u8,
    }
    impl UserPassReply {
        pub fn parse(buf: &[u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 1 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 2) {
                return p;
            }
            Ok(Status::Complete((Self { status: buf[1] }, 2)))
        }
    }
}

pub mod gssapi {
    use super::*;
    #[derive(Clone, Copy)]
    pub struct GssapiMessageType(pub u8);
    impl From<GssapiMessageType> for u8 {
        fn from(v: GssapiMessageType) -> u8 {
            v.0
        }
    }
    pub struct GssapiMessage<'a> {
        pub mtyp: GssapiMessageType,
        pub token: &'a [u8],
    }
    impl<'a> GssapiMessage<'a> {
        pub fn parse(buf: &'a [u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 1 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 4) {
                return p;
            }
            let l = u16::from_be_bytes([buf[2], buf[3]]) as usize;
            if let Some(p) = need(buf, 4 + l) {
                return p;
            }
            Ok(Status::Complete((
                Self {
                    mtyp: GssapiMessageType(buf[1]),
                    token: &buf[4..4 + l],
                },
                4 + l,
            )))
        }
    }
}

pub mod socks4 {
    use super::*;
    pub enum Socks4Dst<'a> {
        Ip(Ipv4Addr),
        Domain(Domain<'a>),
    }
    pub struct Socks4Request<'a> {
        pub command: Command,
        pub port: u16,
        pub dst: Socks4Dst<'a>,
        pub user_id: &'a [u8],
    }
    impl<'a> Socks4Request<'a> {
        pub fn parse(buf: &'a [u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 4 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 8) {
                return p;
            }
            let Some(nul) = buf[8..].iter().position(|&b| b == 0) else {
                return if buf.len() > 8 + 255 {
                    Err(WireError::UserIdTooLong)
                } else {
                    Ok(Status::Partial)
                };
            };
            let user_id = &buf[8..8 + nul];
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            let mut end = 9 + nul;
            let dst = if buf[4] == 0 && buf[5] == 0 && buf[6] == 0 && buf[7] != 0 {
                let Some(n2) = buf[end..].iter().position(|&b| b == 0) else {
                    return if buf.len() > end + 255 {
                        Err(WireError::HostnameTooLong)
                    } else {
                        Ok(Status::Partial)
                    };
                };
                let d = Domain::new(&buf[end..end + n2])?;
                end += n2 + 1;
                Socks4Dst::Domain(d)
            } else {
                Socks4Dst::Ip(ip)
            };
            Ok(Status::Complete((
                Self {
                    command: Command::from(buf[1]),
                    port: u16::from_be_bytes([buf[2], buf[3]]),
                    dst,
                    user_id,
                },
                end,
            )))
        }
    }
    pub struct Socks4Reply {
        pub code: Socks4Code,
        pub addr: SocketAddrV4,
    }
    impl Socks4Reply {
        pub fn parse(buf: &[u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 0 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 8) {
                return p;
            }
            let addr = SocketAddrV4::new(
                Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]),
                u16::from_be_bytes([buf[2], buf[3]]),
            );
            Ok(Status::Complete((
                Self {
                    code: Socks4Code::from(buf[1]),
                    addr,
                },
                8,
            )))
        }
    }
}

pub mod socks5 {
    use super::*;
    pub struct Request<'a> {
        pub command: Command,
        pub dst: Addr<'a>,
    }
    impl<'a> Request<'a> {
        pub fn parse(buf: &'a [u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 5 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 3) {
                return p;
            }
            if buf[2] != 0 {
                return Err(WireError::NonZeroReserved(buf[2]));
            }
            match addr(buf, 3)? {
                None => Ok(Status::Partial),
                Some((dst, l)) => Ok(Status::Complete((
                    Self {
                        command: Command::from(buf[1]),
                        dst,
                    },
                    3 + l,
                ))),
            }
        }
    }
    pub struct Reply<'a> {
        pub code: ReplyCode,
        pub bound: Addr<'a>,
    }
    impl<'a> Reply<'a> {
        pub fn parse(buf: &'a [u8]) -> R<Self> {
            if let Some(p) = need(buf, 1) {
                return p;
            }
            if buf[0] != 5 {
                return Err(WireError::BadVersion(buf[0]));
            }
            if let Some(p) = need(buf, 3) {
                return p;
            }
            match addr(buf, 3)? {
                None => Ok(Status::Partial),
                Some((bound, l)) => Ok(Status::Complete((
                    Self {
                        code: ReplyCode::from(buf[1]),
                        bound,
                    },
                    3 + l,
                ))),
            }
        }
    }
}

pub mod udp {
    use super::*;
    pub struct UdpHeader<'a> {
        pub frag: u8,
        pub dst: Addr<'a>,
    }
    impl<'a> UdpHeader<'a> {
        pub fn parse(buf: &'a [u8]) -> Result<(Self, &'a [u8]), WireError> {
            if buf.len() < 4 {
                return Err(WireError::Truncated);
            }
            if buf[0] != 0 || buf[1] != 0 {
                return Err(WireError::NonZeroReserved(buf[0] | buf[1]));
            }
            match addr(buf, 3)? {
                None => Err(WireError::Truncated),
                Some((dst, l)) => Ok((Self { frag: buf[2], dst }, &buf[3 + l..])),
            }
        }
    }
}
