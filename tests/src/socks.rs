//! A blocking, scripted SOCKS client for byte-exact tests. Messages are built and parsed one
//! at a time; bytes that arrive after a reply stay buffered for the relayed-data reads.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};

use socksgate_core::{Addr, Domain};

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

/// A SOCKS4 reply (VN already checked to be 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply4 {
    /// CD (90–93).
    pub cd: u8,
    /// DSTPORT and DSTIP.
    pub addr: SocketAddr,
}

impl Dst {
    /// The core's borrowed address type, for `emit`.
    #[track_caller]
    pub fn as_addr(&self) -> Addr<'_> {
        match self {
            Self::Ip(a) => Addr::Ip(*a),
            Self::Name(name, port) => Addr::Domain(
                Domain::new(name.as_bytes()).expect("a valid domain name"),
                *port,
            ),
        }
    }

    /// From the core's address type.
    pub fn from_addr(addr: &Addr<'_>) -> Self {
        match addr {
            Addr::Ip(a) => Self::Ip(*a),
            Addr::Domain(name, port) => {
                Self::Name(String::from_utf8_lossy(name.as_bytes()).into_owned(), *port)
            }
        }
    }
}

/// Byte encodings of client messages, built with socksgate-core's `emit`.
pub mod encode {
    use super::Dst;
    use core::net::SocketAddr;
    use socksgate_core::wire::Command;
    use socksgate_core::wire::method::MethodRequest;
    use socksgate_core::wire::socks4::{Socks4Dst, Socks4Request};
    use socksgate_core::wire::socks5::Request;
    use socksgate_core::wire::udp::UdpHeader;
    use socksgate_core::wire::userpass::UserPassRequest;
    use socksgate_core::{BufferTooSmall, Domain};

    fn emit(len: usize, f: impl FnOnce(&mut [u8]) -> Result<usize, BufferTooSmall>) -> Vec<u8> {
        let mut v = vec![0; len];
        let n = f(&mut v).expect("buffer_len is enough");
        v.truncate(n);
        v
    }

    /// SOCKS5 method selection: VER 5, NMETHODS, METHODS.
    #[track_caller]
    pub fn greeting(methods: &[u8]) -> Vec<u8> {
        let m = MethodRequest::new(methods).expect("1..=255 methods");
        emit(m.buffer_len(), |b| m.emit(b))
    }

    /// RFC 1929 request: VER 1, ULEN, UNAME, PLEN, PASSWD.
    #[track_caller]
    pub fn userpass(user: &str, pass: &str) -> Vec<u8> {
        let m = UserPassRequest::new(user.as_bytes(), pass.as_bytes()).expect("1..=255 octets");
        emit(m.buffer_len(), |b| m.emit(b))
    }

    /// SOCKS5 request: VER 5, CMD, RSV 0, DST.
    #[track_caller]
    pub fn request(cmd: u8, dst: &Dst) -> Vec<u8> {
        let m = Request {
            command: Command::from(cmd),
            dst: dst.as_addr(),
        };
        emit(m.buffer_len(), |b| m.emit(b))
    }

    /// SOCKS4 request (SOCKS4a for a name): VN 4, CD, DSTPORT, DSTIP, USERID NUL [HOST NUL].
    #[track_caller]
    pub fn socks4(cmd: u8, dst: &Dst, userid: &str) -> Vec<u8> {
        let (dst, port) = match dst {
            Dst::Ip(SocketAddr::V4(a)) => (Socks4Dst::Ip(*a.ip()), a.port()),
            Dst::Ip(SocketAddr::V6(_)) => panic!("SOCKS4 cannot carry IPv6"),
            Dst::Name(name, port) => (
                Socks4Dst::Domain(Domain::new(name.as_bytes()).expect("valid name")),
                *port,
            ),
        };
        let m = Socks4Request {
            command: Command::from(cmd),
            port,
            dst,
            user_id: userid.as_bytes(),
        };
        emit(m.buffer_len(), |b| m.emit(b))
    }

    /// A UDP ASSOCIATE datagram: header (RSV, FRAG 0, DST) followed by `data`.
    #[track_caller]
    pub fn udp_datagram(dst: &Dst, data: &[u8]) -> Vec<u8> {
        let h = UdpHeader {
            frag: 0,
            dst: dst.as_addr(),
        };
        let mut v = emit(h.buffer_len(), |b| h.emit(b));
        v.extend_from_slice(data);
        v
    }
}

/// Byte decodings of server messages with socksgate-core's `parse`: `Ok(None)` means "need
/// more bytes".
pub mod decode {
    use super::{Dst, Reply4, Reply5};
    use core::net::SocketAddr;
    use socksgate_core::Status;
    use socksgate_core::wire::ParseResult;
    use socksgate_core::wire::method::MethodReply;
    use socksgate_core::wire::socks4::Socks4Reply;
    use socksgate_core::wire::socks5::Reply;
    use socksgate_core::wire::udp::UdpHeader;
    use socksgate_core::wire::userpass::UserPassReply;

    type Decoded<T> = Result<Option<(T, usize)>, String>;

    fn map<T, U>(r: ParseResult<T>, f: impl FnOnce(T) -> U) -> Decoded<U> {
        match r {
            Ok(Status::Complete((m, n))) => Ok(Some((f(m), n))),
            Ok(Status::Partial) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A method-selection reply: the METHOD octet (VER checked).
    pub fn method(b: &[u8]) -> Decoded<u8> {
        map(MethodReply::parse(b), |m| m.method.into())
    }

    /// An RFC 1929 reply: STATUS (VER 1 checked).
    pub fn auth_status(b: &[u8]) -> Decoded<u8> {
        map(UserPassReply::parse(b), |m| m.status)
    }

    /// A SOCKS5 reply.
    pub fn reply5(b: &[u8]) -> Decoded<Reply5> {
        map(Reply::parse(b), |r| Reply5 {
            rep: r.code.into(),
            bound: Dst::from_addr(&r.bound),
        })
    }

    /// A SOCKS4 reply (8 bytes); VN must be 0.
    pub fn reply4(b: &[u8]) -> Decoded<Reply4> {
        if let Some(&vn) = b.first()
            && vn != 0
        {
            return Err(format!("SOCKS4 reply VN {vn}, must be 0"));
        }
        map(Socks4Reply::parse(b), |r| Reply4 {
            cd: r.code.into(),
            addr: SocketAddr::V4(r.addr),
        })
    }

    /// A UDP ASSOCIATE datagram: (FRAG, DST, data offset).
    pub fn udp_datagram(b: &[u8]) -> Result<(u8, Dst, usize), String> {
        let (h, payload) = UdpHeader::parse(b).map_err(|e| e.to_string())?;
        Ok((h.frag, Dst::from_addr(&h.dst), b.len() - payload.len()))
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

    /// Reads the method-selection reply (VER must be 5): METHOD.
    #[track_caller]
    pub fn read_method(&mut self) -> u8 {
        self.read_msg("method selection reply", decode::method)
    }

    /// Reads the RFC 1929 reply (VER must be 1): STATUS.
    #[track_caller]
    pub fn read_auth_status(&mut self) -> u8 {
        self.read_msg("RFC 1929 reply", decode::auth_status)
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
        self.read_method()
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
        self.read_auth_status()
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
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
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
