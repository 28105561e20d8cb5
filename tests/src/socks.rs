//! The one SOCKS test client, blocking, built on socksgate-core: messages are emitted and
//! parsed with the core's wire types, whole handshakes run on the core's client state machine.
//!
//! * [`Client`] is scripted, for byte-exact tests: messages are sent and read one at a time
//!   ([`encode`], [`decode`]), raw bytes can be sent where a test is about malformed input,
//!   and bytes that arrive after a reply stay buffered for the relayed-data reads. It panics
//!   on anything unexpected.
//! * [`handshake`] drives [`socksgate_core::client::Client`] over any blocking stream and
//!   returns errors instead of panicking; with [`udp_header`] and [`udp_source`] it is lean
//!   enough for socksbench's per-session loop (no allocation, one message per round trip).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};

use socksgate_core::client::{ClientConfig, ClientError, ClientEvent};
use socksgate_core::wire::udp::UdpHeader;
use socksgate_core::{Addr, BufferTooSmall, Domain, Target};

use crate::TIMEOUT;

pub use socksgate_core::wire::{Command, Method, ReplyCode, Socks4Code};

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
    pub rep: ReplyCode,
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
    /// CD.
    pub cd: Socks4Code,
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
    use socksgate_core::wire::method::MethodRequest;
    use socksgate_core::wire::socks4::{Socks4Dst, Socks4Request};
    use socksgate_core::wire::socks5::Request;
    use socksgate_core::wire::udp::UdpHeader;
    use socksgate_core::wire::userpass::UserPassRequest;
    use socksgate_core::wire::{Command, Method};
    use socksgate_core::{BufferTooSmall, Domain};

    fn emit(len: usize, f: impl FnOnce(&mut [u8]) -> Result<usize, BufferTooSmall>) -> Vec<u8> {
        let mut v = vec![0; len];
        let n = f(&mut v).expect("buffer_len is enough");
        v.truncate(n);
        v
    }

    /// SOCKS5 method selection: VER 5, NMETHODS, METHODS.
    #[track_caller]
    pub fn greeting(methods: &[Method]) -> Vec<u8> {
        let methods: Vec<u8> = methods.iter().map(|&m| m.into()).collect();
        let m = MethodRequest::new(&methods).expect("1..=255 methods");
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
    pub fn request(command: Command, dst: &Dst) -> Vec<u8> {
        let m = Request {
            command,
            dst: dst.as_addr(),
        };
        emit(m.buffer_len(), |b| m.emit(b))
    }

    /// SOCKS4 request (SOCKS4a for a name): VN 4, CD, DSTPORT, DSTIP, USERID NUL [HOST NUL].
    #[track_caller]
    pub fn socks4(command: Command, dst: &Dst, userid: &str) -> Vec<u8> {
        let (dst, port) = match dst {
            Dst::Ip(SocketAddr::V4(a)) => (Socks4Dst::Ip(*a.ip()), a.port()),
            Dst::Ip(SocketAddr::V6(_)) => panic!("SOCKS4 cannot carry IPv6"),
            Dst::Name(name, port) => (
                Socks4Dst::Domain(Domain::new(name.as_bytes()).expect("valid name")),
                *port,
            ),
        };
        let m = Socks4Request {
            command,
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
    use socksgate_core::wire::Method;
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

    /// A method-selection reply: METHOD (VER checked).
    pub fn method(b: &[u8]) -> Decoded<Method> {
        map(MethodReply::parse(b), |m| m.method)
    }

    /// An RFC 1929 reply: STATUS (VER 1 checked).
    pub fn auth_status(b: &[u8]) -> Decoded<u8> {
        map(UserPassReply::parse(b), |m| m.status)
    }

    /// A SOCKS5 reply.
    pub fn reply5(b: &[u8]) -> Decoded<Reply5> {
        map(Reply::parse(b), |r| Reply5 {
            rep: r.code,
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
            cd: r.code,
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
    pub fn read_method(&mut self) -> Method {
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
    pub fn greet(&mut self, methods: &[Method]) -> Method {
        self.send(&encode::greeting(methods));
        self.read_method()
    }

    /// Offers no-auth only and asserts the server takes it.
    #[track_caller]
    pub fn greet_no_auth(&mut self) {
        assert_eq!(self.greet(&[Method::NoAuth]), Method::NoAuth);
    }

    /// Offers username/password, asserts it is selected and authenticates; returns STATUS.
    #[track_caller]
    pub fn login(&mut self, user: &str, pass: &str) -> u8 {
        assert_eq!(self.greet(&[Method::UserPass]), Method::UserPass);
        self.send(&encode::userpass(user, pass));
        self.read_auth_status()
    }

    /// Sends a SOCKS5 request and reads the reply.
    #[track_caller]
    pub fn request5(&mut self, command: Command, dst: &Dst) -> Reply5 {
        self.send(&encode::request(command, dst));
        self.read_reply5()
    }

    /// Sends a SOCKS4/4a request and reads the reply.
    #[track_caller]
    pub fn request4(&mut self, command: Command, dst: &Dst, userid: &str) -> Reply4 {
        self.send(&encode::socks4(command, dst, userid));
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
    let r = c.request5(Command::Connect, dst);
    assert_eq!(r.rep, ReplyCode::Succeeded, "CONNECT {dst:?} reply: {r:?}");
    c
}

/// 127.0.0.1 with `port`.
pub fn v4(port: u16) -> Dst {
    Dst::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

/// Why [`handshake`] failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// Reading from or writing to the proxy failed.
    Io(std::io::Error),
    /// The proxy closed the connection before its reply.
    Closed,
    /// The core's client state machine gave up: a refusal ([`ClientError::Rejected`],
    /// [`ClientError::Socks4Rejected`], [`ClientError::AuthFailed`], …) or a malformed message.
    Socks(ClientError),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "SOCKS handshake: {e}"),
            Self::Closed => f.write_str("SOCKS handshake: the proxy closed the connection"),
            Self::Socks(e) => write!(f, "SOCKS handshake: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Runs the handshake `config` describes over `stream` with the core's client state machine,
/// up to the proxy's (first) reply: one message per round trip, nothing allocated. `buf`
/// receives the proxy's bytes and MUST hold at least one byte; on success it starts with the
/// bytes that followed the reply (the destination's first payload, or BIND's second reply)
/// and their count is returned with the reply's bound address.
pub fn handshake<S: Read + Write>(
    stream: &mut S,
    config: ClientConfig<'_>,
    buf: &mut [u8],
) -> Result<(Target, usize), HandshakeError> {
    let mut client = socksgate_core::client::Client::new(config).map_err(HandshakeError::Socks)?;
    // The largest client message (RFC 1929 with 255-octet fields).
    let mut out = [0u8; 513];
    loop {
        let n = client.poll_transmit(&mut out);
        if n > 0 {
            stream.write_all(&out[..n]).map_err(HandshakeError::Io)?;
        }
        let got = stream.read(buf).map_err(HandshakeError::Io)?;
        if got == 0 {
            return Err(HandshakeError::Closed);
        }
        let used = client.feed(&buf[..got]).map_err(HandshakeError::Socks)?;
        if let Some(ClientEvent::Replied { bound }) = client.poll_event() {
            buf.copy_within(used..got, 0);
            return Ok((bound, got - used));
        }
    }
}

/// Writes a UDP ASSOCIATE datagram header (RSV, FRAG 0, DST) for `dst` into `out`; returns
/// its length.
pub fn udp_header(dst: SocketAddr, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
    UdpHeader {
        frag: 0,
        dst: Addr::Ip(dst),
    }
    .emit(out)
}

/// A relayed datagram's source address and payload offset; an error for a malformed header,
/// a fragment or a domain-name source.
pub fn udp_source(datagram: &[u8]) -> Result<(SocketAddr, usize), String> {
    let (h, payload) = UdpHeader::parse(datagram).map_err(|e| e.to_string())?;
    if !h.is_standalone() {
        return Err(format!("datagram with FRAG {}", h.frag));
    }
    match h.dst {
        Addr::Ip(src) => Ok((src, datagram.len() - payload.len())),
        Addr::Domain(..) => Err("datagram from a domain name".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_header_round_trips() {
        let dst: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let mut buf = [0u8; 64];
        let n = udp_header(dst, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0, 0, 0, 1, 127, 0, 0, 1, 0x14, 0xe9]);
        buf[n..n + 3].copy_from_slice(b"abc");
        assert_eq!(udp_source(&buf[..n + 3]).unwrap(), (dst, n));
        buf[2] = 1;
        assert!(udp_source(&buf[..n + 3]).is_err(), "a fragment");
    }

    /// A scripted proxy on the other end of a socket pair: the exchange [`handshake`] must
    /// produce, byte for byte, and the payload after the reply left in `buf`.
    #[test]
    fn handshake_sends_one_message_per_round_trip_and_keeps_early_payload() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut greeting = [0u8; 3];
            s.read_exact(&mut greeting).unwrap();
            s.write_all(&[5, 0]).unwrap();
            let mut request = [0u8; 10];
            s.read_exact(&mut request).unwrap();
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, b'h', b'i'])
                .unwrap();
            (greeting, request)
        });
        let mut s = TcpStream::connect(addr).unwrap();
        let dst = Addr::Ip("127.0.0.1:80".parse().unwrap());
        let config = ClientConfig::new(
            socksgate_core::server::Version::Socks5,
            Command::Connect,
            dst,
        );
        let mut buf = [0u8; 64];
        let (bound, extra) = handshake(&mut s, config, &mut buf).unwrap();
        let (greeting, request) = proxy.join().unwrap();
        assert_eq!(greeting, [5, 1, 0]);
        assert_eq!(request, [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        assert_eq!(bound, Target::Ip("127.0.0.1:40000".parse().unwrap()));
        // Both payload bytes may come in a later segment than the reply.
        let mut payload = buf[..extra].to_vec();
        while payload.len() < 2 {
            let mut more = [0u8; 2];
            let n = s.read(&mut more).unwrap();
            assert_ne!(n, 0, "EOF before the payload");
            payload.extend_from_slice(&more[..n]);
        }
        assert_eq!(payload, b"hi");
    }
}
