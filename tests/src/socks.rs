//! A blocking, scripted SOCKS client for byte-exact tests. Messages are built and parsed one
//! at a time; bytes that arrive after a reply stay buffered for the relayed-data reads.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};

use crate::TIMEOUT;

/// SOCKS5 and SOCKS4 command codes.
pub mod cmd {
    /// CONNECT.
    pub const CONNECT: u8 = 1;
    /// BIND.
    pub const BIND: u8 = 2;
    /// UDP ASSOCIATE (SOCKS5 only).
    pub const UDP_ASSOCIATE: u8 = 3;
}

/// SOCKS5 reply codes (REP) and SOCKS4 result codes (CD).
pub mod rep {
    /// Succeeded.
    pub const SUCCEEDED: u8 = 0;
    /// General SOCKS server failure.
    pub const GENERAL_FAILURE: u8 = 1;
    /// Connection not allowed by ruleset.
    pub const NOT_ALLOWED: u8 = 2;
    /// Network unreachable.
    pub const NETWORK_UNREACHABLE: u8 = 3;
    /// Host unreachable (also: name does not resolve).
    pub const HOST_UNREACHABLE: u8 = 4;
    /// Connection refused.
    pub const CONNECTION_REFUSED: u8 = 5;
    /// Command not supported.
    pub const COMMAND_NOT_SUPPORTED: u8 = 7;
    /// Address type not supported.
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;
    /// SOCKS4: request granted.
    pub const V4_GRANTED: u8 = 90;
    /// SOCKS4: request rejected or failed.
    pub const V4_REJECTED: u8 = 91;
}

/// SOCKS5 method codes.
pub mod method {
    /// No authentication.
    pub const NO_AUTH: u8 = 0;
    /// Username/password (RFC 1929).
    pub const USER_PASS: u8 = 2;
    /// No acceptable methods.
    pub const NO_ACCEPTABLE: u8 = 0xff;
}

/// A request destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dst {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A domain name and port, resolved by the server.
    Name(String, u16),
}

impl From<SocketAddr> for Dst {
    fn from(a: SocketAddr) -> Self {
        Self::Ip(a)
    }
}

/// A SOCKS5 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply5 {
    /// REP.
    pub rep: u8,
    /// BND.ADDR and BND.PORT.
    pub bound: Dst,
}

impl Reply5 {
    /// BND as a socket address; panics for a domain name.
    #[track_caller]
    pub fn bound_addr(&self) -> SocketAddr {
        match &self.bound {
            Dst::Ip(a) => *a,
            Dst::Name(n, p) => panic!("BND is a domain name {n}:{p}"),
        }
    }
}

/// A SOCKS4 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply4 {
    /// VN (must be 0).
    pub vn: u8,
    /// CD (90–93).
    pub cd: u8,
    /// DSTPORT and DSTIP.
    pub addr: SocketAddr,
}

/// Byte encodings of client messages.
pub mod encode {
    use super::Dst;
    use core::net::{IpAddr, SocketAddr};

    /// SOCKS5 method selection: VER 5, NMETHODS, METHODS.
    pub fn greeting(methods: &[u8]) -> Vec<u8> {
        let mut v = vec![5, u8::try_from(methods.len()).expect("<= 255 methods")];
        v.extend_from_slice(methods);
        v
    }

    /// RFC 1929 request: VER 1, ULEN, UNAME, PLEN, PASSWD.
    pub fn userpass(user: &str, pass: &str) -> Vec<u8> {
        let mut v = vec![1, u8::try_from(user.len()).expect("ULEN")];
        v.extend_from_slice(user.as_bytes());
        v.push(u8::try_from(pass.len()).expect("PLEN"));
        v.extend_from_slice(pass.as_bytes());
        v
    }

    /// ATYP, address and port.
    pub fn socks5_addr(dst: &Dst) -> Vec<u8> {
        let mut v = Vec::new();
        match dst {
            Dst::Ip(SocketAddr::V4(a)) => {
                v.push(1);
                v.extend_from_slice(&a.ip().octets());
                v.extend_from_slice(&a.port().to_be_bytes());
            }
            Dst::Ip(SocketAddr::V6(a)) => {
                v.push(4);
                v.extend_from_slice(&a.ip().octets());
                v.extend_from_slice(&a.port().to_be_bytes());
            }
            Dst::Name(name, port) => {
                v.push(3);
                v.push(u8::try_from(name.len()).expect("name <= 255"));
                v.extend_from_slice(name.as_bytes());
                v.extend_from_slice(&port.to_be_bytes());
            }
        }
        v
    }

    /// SOCKS5 request: VER 5, CMD, RSV 0, DST.
    pub fn request(cmd: u8, dst: &Dst) -> Vec<u8> {
        let mut v = vec![5, cmd, 0];
        v.extend(socks5_addr(dst));
        v
    }

    /// SOCKS4 request (SOCKS4a for a name): VN 4, CD, DSTPORT, DSTIP, USERID NUL [HOST NUL].
    pub fn socks4(cmd: u8, dst: &Dst, userid: &str) -> Vec<u8> {
        let (ip, port, host) = match dst {
            Dst::Ip(SocketAddr::V4(a)) => (a.ip().octets(), a.port(), None),
            Dst::Ip(SocketAddr::V6(_)) => panic!("SOCKS4 cannot carry IPv6"),
            Dst::Name(name, port) => ([0, 0, 0, 1], *port, Some(name)),
        };
        let mut v = vec![4, cmd];
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&ip);
        v.extend_from_slice(userid.as_bytes());
        v.push(0);
        if let Some(name) = host {
            v.extend_from_slice(name.as_bytes());
            v.push(0);
        }
        v
    }

    /// A UDP ASSOCIATE datagram header (RSV, FRAG 0, DST) followed by `data`.
    pub fn udp_datagram(dst: &Dst, data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0];
        v.extend(socks5_addr(dst));
        v.extend_from_slice(data);
        v
    }

    /// An IP as a `Dst` with port.
    pub fn ip(ip: IpAddr, port: u16) -> Dst {
        Dst::Ip(SocketAddr::new(ip, port))
    }
}

/// Byte decodings of server messages: `Ok(None)` means "need more bytes".
pub mod decode {
    use super::{Dst, Reply4, Reply5};
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    /// ATYP, address, port at the start of `b`: the address and its length.
    pub fn socks5_addr(b: &[u8]) -> Result<Option<(Dst, usize)>, String> {
        let Some(&atyp) = b.first() else {
            return Ok(None);
        };
        let (len, dst) = match atyp {
            1 => {
                if b.len() < 7 {
                    return Ok(None);
                }
                let ip = Ipv4Addr::new(b[1], b[2], b[3], b[4]);
                let port = u16::from_be_bytes([b[5], b[6]]);
                (7, Dst::Ip(SocketAddr::from((ip, port))))
            }
            4 => {
                if b.len() < 19 {
                    return Ok(None);
                }
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[1..17]);
                let port = u16::from_be_bytes([b[17], b[18]]);
                (19, Dst::Ip(SocketAddr::from((Ipv6Addr::from(o), port))))
            }
            3 => {
                let Some(&n) = b.get(1) else { return Ok(None) };
                let n = usize::from(n);
                if b.len() < 2 + n + 2 {
                    return Ok(None);
                }
                let name = String::from_utf8_lossy(&b[2..2 + n]).into_owned();
                let port = u16::from_be_bytes([b[2 + n], b[3 + n]]);
                (4 + n, Dst::Name(name, port))
            }
            other => return Err(format!("unknown ATYP {other}")),
        };
        Ok(Some((dst, len)))
    }

    /// A SOCKS5 reply.
    pub fn reply5(b: &[u8]) -> Result<Option<(Reply5, usize)>, String> {
        if b.len() < 4 {
            return Ok(None);
        }
        if b[0] != 5 {
            return Err(format!("reply VER {} (want 5)", b[0]));
        }
        if b[2] != 0 {
            return Err(format!("reply RSV {} (want 0)", b[2]));
        }
        Ok(socks5_addr(&b[3..])?.map(|(bound, n)| (Reply5 { rep: b[1], bound }, 3 + n)))
    }

    /// A SOCKS4 reply (8 bytes).
    pub fn reply4(b: &[u8]) -> Result<Option<(Reply4, usize)>, String> {
        if b.len() < 8 {
            return Ok(None);
        }
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Ok(Some((
            Reply4 {
                vn: b[0],
                cd: b[1],
                addr: SocketAddr::from((ip, port)),
            },
            8,
        )))
    }

    /// A UDP ASSOCIATE datagram: (FRAG, DST, data offset).
    pub fn udp_datagram(b: &[u8]) -> Result<(u8, Dst, usize), String> {
        if b.len() < 4 {
            return Err("datagram shorter than its header".into());
        }
        match socks5_addr(&b[3..])? {
            Some((dst, n)) => Ok((b[2], dst, 3 + n)),
            None => Err("datagram shorter than its header".into()),
        }
    }
}

/// A TCP connection to a SOCKS server, read message by message.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to the proxy, with [`TIMEOUT`] on reads and writes.
    #[track_caller]
    pub fn connect(proxy: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&proxy, TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to proxy {proxy}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// The underlying stream (buffered bytes are not in it: use [`Self::read_exact`]).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `bytes` in one write.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to proxy");
    }

    /// Shuts down the write side (half-close).
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one message with `decode`; panics on EOF, timeout or a malformed message.
    #[track_caller]
    pub fn read_msg<T>(
        &mut self,
        what: &str,
        decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, String>,
    ) -> T {
        loop {
            match decode(&self.buf) {
                Ok(Some((msg, n))) => {
                    self.buf.drain(..n);
                    return msg;
                }
                Ok(None) => {}
                Err(e) => panic!("{what}: malformed: {e}; bytes {:?}", self.buf),
            }
            match self.fill() {
                Ok(0) => panic!("{what}: connection closed after {:?}", self.buf),
                Ok(_) => {}
                Err(e) => panic!("{what}: read failed after {:?}: {e}", self.buf),
            }
        }
    }

    /// Reads the method-selection reply: (VER, METHOD).
    #[track_caller]
    pub fn read_method(&mut self) -> (u8, u8) {
        self.read_msg("method selection reply", |b| {
            Ok((b.len() >= 2).then(|| ((b[0], b[1]), 2)))
        })
    }

    /// Reads the RFC 1929 reply: (VER, STATUS).
    #[track_caller]
    pub fn read_auth_status(&mut self) -> (u8, u8) {
        self.read_msg("RFC 1929 reply", |b| {
            Ok((b.len() >= 2).then(|| ((b[0], b[1]), 2)))
        })
    }

    /// Reads a SOCKS5 reply.
    #[track_caller]
    pub fn read_reply5(&mut self) -> Reply5 {
        self.read_msg("SOCKS5 reply", decode::reply5)
    }

    /// Reads a SOCKS4 reply.
    #[track_caller]
    pub fn read_reply4(&mut self) -> Reply4 {
        self.read_msg("SOCKS4 reply", decode::reply4)
    }

    /// Method negotiation offering `methods`; returns the selected method (after checking VER).
    #[track_caller]
    pub fn greet(&mut self, methods: &[u8]) -> u8 {
        self.send(&encode::greeting(methods));
        let (ver, m) = self.read_method();
        assert_eq!(ver, 5, "method selection reply VER");
        m
    }

    /// Offers no-auth only and asserts the server takes it.
    #[track_caller]
    pub fn greet_no_auth(&mut self) {
        assert_eq!(self.greet(&[method::NO_AUTH]), method::NO_AUTH);
    }

    /// Offers username/password, asserts it is selected and authenticates; returns STATUS.
    #[track_caller]
    pub fn login(&mut self, user: &str, pass: &str) -> u8 {
        assert_eq!(self.greet(&[method::USER_PASS]), method::USER_PASS);
        self.send(&encode::userpass(user, pass));
        let (ver, status) = self.read_auth_status();
        assert_eq!(ver, 1, "RFC 1929 reply VER must be 1");
        status
    }

    /// Sends a SOCKS5 request and reads the reply.
    #[track_caller]
    pub fn request5(&mut self, cmd: u8, dst: &Dst) -> Reply5 {
        self.send(&encode::request(cmd, dst));
        self.read_reply5()
    }

    /// Sends a SOCKS4/4a request and reads the reply.
    #[track_caller]
    pub fn request4(&mut self, cmd: u8, dst: &Dst, userid: &str) -> Reply4 {
        self.send(&encode::socks4(cmd, dst, userid));
        self.read_reply4()
    }

    /// Reads exactly `n` relayed bytes.
    #[track_caller]
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(0) => panic!("EOF after {} of {n} bytes", self.buf.len()),
                Ok(_) => {}
                Err(e) => panic!("read failed after {} of {n} bytes: {e}", self.buf.len()),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads relayed bytes until EOF.
    #[track_caller]
    pub fn read_to_end(&mut self) -> Vec<u8> {
        loop {
            match self.fill() {
                Ok(0) => return core::mem::take(&mut self.buf),
                Ok(_) => {}
                Err(e) => panic!("read failed after {} bytes: {e}", self.buf.len()),
            }
        }
    }

    /// Asserts the server closes the connection (EOF or reset) within `timeout` without
    /// sending anything more.
    #[track_caller]
    pub fn assert_closed(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("timeout");
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("server did not close the connection within {timeout:?}: {e}"),
            }
        }
        assert!(
            self.buf.is_empty(),
            "server sent unexpected bytes before closing: {:?}",
            self.buf
        );
    }
}

/// Opens a SOCKS5 no-auth CONNECT to `dst` through `proxy`, asserting success.
#[track_caller]
pub fn connect5(proxy: SocketAddr, dst: &Dst) -> Client {
    let mut c = Client::connect(proxy);
    c.greet_no_auth();
    let r = c.request5(cmd::CONNECT, dst);
    assert_eq!(r.rep, rep::SUCCEEDED, "CONNECT {dst:?} reply: {r:?}");
    c
}

/// 127.0.0.1 with `port`.
pub fn v4(port: u16) -> Dst {
    Dst::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}
