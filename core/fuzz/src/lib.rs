//! Shared checks for the socksgate-core fuzz targets.
//!
//! * [`check_parser!`] — the wire-layer contracts of one message type.
//! * [`ServerPlan`] / [`drive_server`] and [`ClientPlan`] / [`drive_client`] — run a state
//!   machine over an input split into chunks, answering events, and record what it did, so a
//!   target can compare a chunked run with a one-shot run.
//!
//! Inputs of the state-machine targets are `[H, header (H bytes), input…]`: the header picks
//! the configuration, chunk sizes and answers (missing bytes read as 0, which means the
//! default configuration, 1-byte chunks and "accept"), the rest is the peer's byte stream.
//! Seeds are therefore easy to write by hand: `00` followed by a valid handshake.

use core::fmt::Debug;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use arbitrary::{Arbitrary, Unstructured};
use socksgate_core::client::{
    Client, ClientConfig, ClientError, ClientEvent, Credentials, GssapiOptions,
};
use socksgate_core::policy::{GssapiPolicy, MethodPreference, ProtectionLevels};
use socksgate_core::server::{Config, Event, Server, ServerError, UnexpectedCall, Version};
use socksgate_core::wire::gssapi::ProtectionLevel;
use socksgate_core::wire::{Command, Emit, ReplyCode};
use socksgate_core::{Addr, Authentication, BufferTooSmall, Domain, Status};

pub mod gssapi;
pub mod observe;
pub mod rules;
pub mod session;
pub mod udp;

/// Checks every prefix of `data` (every one up to 1 KiB, a sample beyond) against the whole:
/// a prefix is `Partial` or decides exactly like the whole input (same message and length,
/// or same error). In particular every proper prefix of a complete message is `Partial`.
/// Returns the complete message, if any.
pub fn check_prefixes<'a, T: PartialEq + Debug, E: PartialEq + Debug + core::fmt::Display>(
    data: &'a [u8],
    parse: impl Fn(&'a [u8]) -> Result<Status<(T, usize)>, E>,
) -> Option<(T, usize)> {
    let full = parse(data);
    let _ = format!("{full:?}");
    if let Err(e) = &full {
        let _ = e.to_string();
    }
    let complete_len = match &full {
        Ok(Status::Complete((_, n))) => {
            assert!(*n <= data.len(), "consumed {n} of {} bytes", data.len());
            assert!(*n > 0, "a message is never empty");
            Some(*n)
        }
        _ => None,
    };
    let step = if data.len() <= 1024 {
        1
    } else {
        data.len() / 512
    };
    let mut cuts: Vec<usize> = (0..data.len()).step_by(step).collect();
    if let Some(n) = complete_len {
        cuts.extend([n.saturating_sub(1), n]);
    }
    for k in cuts {
        let prefix = parse(&data[..k]);
        match prefix {
            Ok(Status::Partial) => {
                if let Some(n) = complete_len {
                    assert!(
                        k < n,
                        "prefix of {k} bytes is Partial, whole message is {n}"
                    );
                }
            }
            _ => assert_eq!(
                prefix,
                full,
                "prefix of {k} bytes decided differently from all {} bytes",
                data.len()
            ),
        }
    }
    full.ok().and_then(Status::complete)
}

/// Checks `buffer_len`/`emit` of a message parsed from `n` bytes and returns its encoding.
pub fn check_emit<T: Emit + Debug>(msg: &T, n: usize) -> Vec<u8> {
    assert_eq!(msg.buffer_len(), n, "buffer_len of {msg:?}");
    let mut out = vec![0u8; n + 8];
    assert_eq!(msg.emit(&mut out), Ok(n), "emit of {msg:?}");
    assert!(out[n..].iter().all(|&b| b == 0), "emit wrote past {n}");
    out.truncate(n);
    // Too small: error with the size, and the buffer untouched.
    let mut short = vec![0xa5u8; n - 1];
    assert_eq!(msg.emit(&mut short), Err(BufferTooSmall { required: n }));
    assert!(short.iter().all(|&b| b == 0xa5), "failed emit wrote bytes");
    out
}

/// All wire contracts of one message type: `check_parser!(data, Type, |msg| canonical)`,
/// where `canonical` says whether the message's encoding must equal the input bytes.
/// Evaluates to the encoding and the length consumed when the input held a whole message.
#[macro_export]
macro_rules! check_parser {
    ($data:expr, $ty:ty, $canonical:expr) => {{
        let data: &[u8] = $data;
        if let Some((msg, n)) = $crate::check_prefixes(data, <$ty>::parse) {
            let out = $crate::check_emit(&msg, n);
            match <$ty>::parse(&out) {
                Ok(socksgate_core::Status::Complete((again, m))) => {
                    assert_eq!(m, n, "re-parse consumed a different length");
                    assert_eq!(again, msg, "emit -> parse changed the message");
                }
                other => panic!("emitted {out:02x?} of {msg:?} re-parses as {other:?}"),
            }
            let canonical: fn(&$ty) -> bool = $canonical;
            if canonical(&msg) {
                assert_eq!(&out[..], &data[..n], "emit is not byte-identical");
            }
            Some((out, n))
        } else {
            None
        }
    }};
}

/// Splits a state-machine input into its header and the byte stream.
pub fn split(data: &[u8]) -> (Unstructured<'_>, &[u8]) {
    match data.split_first() {
        Some((&len, rest)) => {
            let (header, input) = rest.split_at(usize::from(len).min(rest.len()));
            (Unstructured::new(header), input)
        }
        None => (Unstructured::new(&[]), &[]),
    }
}

fn byte(u: &mut Unstructured<'_>) -> u8 {
    u8::arbitrary(u).unwrap_or(0)
}

fn take<'a>(u: &mut Unstructured<'a>, n: usize) -> &'a [u8] {
    let n = n.min(u.len());
    u.bytes(n).unwrap_or_default()
}

/// Chunk sizes (1–256) and transmit-buffer sizes (1–256) for the chunked run.
#[derive(Clone, Debug)]
pub struct Split {
    chunks: Vec<usize>,
    out: Vec<usize>,
}

impl Split {
    fn new(u: &mut Unstructured<'_>) -> Self {
        Self {
            chunks: (0..8).map(|_| usize::from(byte(u)) + 1).collect(),
            out: (0..4).map(|_| usize::from(byte(u)) + 1).collect(),
        }
    }
}

/// A socket address drawn from the header.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum FuzzSocketAddr {
    /// IPv4.
    V4([u8; 4], u16),
    /// IPv6.
    V6([u8; 16], u16),
}

impl From<FuzzSocketAddr> for SocketAddr {
    fn from(a: FuzzSocketAddr) -> Self {
        match a {
            FuzzSocketAddr::V4(ip, port) => SocketAddrV4::new(Ipv4Addr::from(ip), port).into(),
            FuzzSocketAddr::V6(ip, port) => {
                SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0).into()
            }
        }
    }
}

/// How to answer a GSS-API event.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum GssAnswer {
    /// `send_gssapi_token(len)` (context) or `send_gssapi_protection(len)` after granting
    /// (protection); the driver then sends `len` octets of `fill`.
    Send {
        /// The token's octets.
        fill: u8,
        /// Token length.
        len: u16,
    },
    /// `gssapi_established(len)`.
    Established(u16),
    /// `gssapi_failed()`.
    Failed,
    /// `gssapi_protection` with this octet (twice when the flag is set: not one octet).
    Unwrapped(u8, bool),
}

/// A GSS-API policy from one octet: bits 0–2 the levels granted, bit 3 NEC accepted, bit 4
/// password preferred. 0 is the default policy.
pub fn gssapi_policy(bits: u8) -> GssapiPolicy {
    let bits = bits ^ 0b0111; // 0 = every level
    GssapiPolicy {
        protection: ProtectionLevels {
            none: bits & 1 != 0,
            integrity: bits & 2 != 0,
            confidentiality: bits & 4 != 0,
        },
        accept_nec: bits & 8 != 0,
        prefer: if bits & 16 != 0 {
            MethodPreference::Password
        } else {
            MethodPreference::Gssapi
        },
    }
}

/// The caller's answer to one server event.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Answer {
    /// Refuse (authenticate false / respond Err).
    pub reject: bool,
    /// Reply code for a refusal.
    pub code: u8,
    /// Bound address for a success.
    pub bound: FuzzSocketAddr,
    /// Refuse BIND's second reply.
    pub peer_reject: bool,
    /// BIND peer address.
    pub peer: FuzzSocketAddr,
    /// GSS-API answer.
    pub gssapi: GssAnswer,
    /// Also call answer methods that do not apply, which must fail and change nothing.
    pub misuse: bool,
}

impl Default for Answer {
    fn default() -> Self {
        Self {
            reject: false,
            code: 0,
            bound: FuzzSocketAddr::V4([0; 4], 0),
            peer_reject: false,
            peer: FuzzSocketAddr::V4([0; 4], 0),
            gssapi: GssAnswer::Send { fill: 0, len: 0 },
            misuse: false,
        }
    }
}

/// Everything a server run depends on besides the input.
#[derive(Clone, Debug)]
pub struct ServerPlan {
    /// The server configuration.
    pub config: Config,
    split: Split,
    answers: Vec<Answer>,
}

impl ServerPlan {
    /// Header layout: config flags (XOR 0b1001, so 0 = `Config::default()`: bit 0 no
    /// authentication, with bit 3 SOCKS4 too; else bit 1 password, bit 2 GSS-API required),
    /// the GSS-API policy ([`gssapi_policy`]), 8 chunk-size bytes, 4 transmit-size bytes,
    /// then answers.
    pub fn new(u: &mut Unstructured<'_>) -> Self {
        let flags = byte(u) ^ 0b1001;
        let gssapi = gssapi_policy(byte(u));
        let config = Config::new(if flags & 1 != 0 {
            Authentication::None {
                socks4: flags & 8 != 0,
            }
        } else {
            Authentication::Required {
                password: flags & 2 != 0,
                gssapi: flags & 4 != 0,
            }
        })
        .with_gssapi(gssapi);
        let split = Split::new(u);
        let answers = (0..4)
            .map(|_| Answer::arbitrary(u).unwrap_or_default())
            .collect();
        Self {
            config,
            split,
            answers,
        }
    }
}

/// What a server did with an input.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerTrace {
    /// Events in order, except `GssapiPiece` (how a token is cut depends on the reads); the
    /// `len` of `GssapiContext`/`GssapiProtection` is the whole token's.
    pub events: Vec<Event>,
    /// The client's GSS-API tokens, reassembled from their pieces.
    pub tokens: Vec<Vec<u8>>,
    /// All bytes transmitted.
    pub output: Vec<u8>,
    /// The error `feed` returned, if any.
    pub error: Option<ServerError>,
    /// Final state.
    pub established: bool,
    /// Final state.
    pub closed: bool,
    /// Input not consumed (the payload, once established); empty after an error.
    pub leftover: Vec<u8>,
}

struct Drain<'p> {
    sizes: &'p [usize],
    next: usize,
    chunked: bool,
}

impl Drain<'_> {
    fn size(&mut self) -> usize {
        if !self.chunked {
            return 1024;
        }
        let s = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        s
    }

    /// Drains queued output through `poll_transmit` or `pending_transmit`/`consume_transmit`.
    fn server(&mut self, server: &mut Server, out: &mut Vec<u8>) {
        let mut buf = [0u8; 1024];
        loop {
            let size = self.size();
            let n = if size % 3 == 0 {
                let pending = server.pending_transmit();
                let n = size.min(pending.len());
                out.extend_from_slice(&pending[..n]);
                server.consume_transmit(n);
                n
            } else {
                let n = server.poll_transmit(&mut buf[..size]);
                assert!(n <= size);
                out.extend_from_slice(&buf[..n]);
                n
            };
            if n == 0 {
                return;
            }
        }
    }

    fn client(&mut self, client: &mut Client, out: &mut Vec<u8>) {
        let mut buf = [0u8; 1024];
        loop {
            let size = self.size();
            let n = client.poll_transmit(&mut buf[..size]);
            assert!(n <= size);
            out.extend_from_slice(&buf[..n]);
            if n == 0 {
                return;
            }
        }
    }
}

/// Answers one event; returns the octets of a token the caller must send after the output.
fn answer(server: &mut Server, event: &Event, a: &Answer) -> Vec<u8> {
    let code = ReplyCode::from(a.code);
    match event {
        Event::Authenticate { .. } => {
            if a.misuse {
                assert_eq!(server.respond(Err(code)), Err(UnexpectedCall));
                assert_eq!(server.respond_bind_peer(Err(code)), Err(UnexpectedCall));
                assert_eq!(server.gssapi_failed(), Err(UnexpectedCall));
            }
            server
                .authenticate(!a.reject)
                .expect("authenticate answers Event::Authenticate");
        }
        Event::GssapiContext { .. } => {
            if a.misuse {
                assert_eq!(server.authenticate(true), Err(UnexpectedCall));
                assert_eq!(server.respond(Err(code)), Err(UnexpectedCall));
                assert_eq!(server.send_gssapi_protection(1), Err(UnexpectedCall));
                assert_eq!(server.gssapi_protection(&[0]), Err(UnexpectedCall));
                assert_eq!(server.send_gssapi_token(65_536), Err(UnexpectedCall));
            }
            match a.gssapi {
                GssAnswer::Send { fill, len } => {
                    server
                        .send_gssapi_token(len.into())
                        .expect("send_gssapi_token answers GssapiContext");
                    return vec![fill; len.into()];
                }
                GssAnswer::Established(len) => {
                    server
                        .gssapi_established(len.into())
                        .expect("gssapi_established answers GssapiContext");
                    return vec![0xe5; len.into()];
                }
                GssAnswer::Failed | GssAnswer::Unwrapped(..) => server
                    .gssapi_failed()
                    .expect("gssapi_failed answers GssapiContext"),
            }
        }
        Event::GssapiProtection { .. } => {
            if a.misuse {
                assert_eq!(server.send_gssapi_token(1), Err(UnexpectedCall));
                assert_eq!(server.gssapi_established(1), Err(UnexpectedCall));
                assert_eq!(server.send_gssapi_protection(1), Err(UnexpectedCall));
            }
            let (octet, twice) = match a.gssapi {
                GssAnswer::Unwrapped(octet, twice) => (octet, twice),
                GssAnswer::Send { fill, .. } => (fill % 4, false),
                GssAnswer::Established(_) => (2, false),
                GssAnswer::Failed => {
                    server
                        .gssapi_failed()
                        .expect("gssapi_failed answers GssapiProtection");
                    return Vec::new();
                }
            };
            let unwrapped = if twice { vec![octet; 2] } else { vec![octet] };
            let granted = server
                .gssapi_protection(&unwrapped)
                .expect("gssapi_protection answers GssapiProtection");
            match granted {
                Ok(level) => {
                    assert!(!twice, "two octets granted {level}");
                    let wrapped = [0x77, u8::from(level), 0x77];
                    server
                        .send_gssapi_protection(wrapped.len())
                        .expect("send_gssapi_protection after a grant");
                    return wrapped.to_vec();
                }
                Err(e) => {
                    let _ = e.to_string();
                    assert!(server.is_closed(), "refused {e:?} but not closed");
                }
            }
        }
        Event::Request(req) => {
            if a.misuse {
                assert_eq!(server.authenticate(true), Err(UnexpectedCall));
                assert_eq!(server.respond_bind_peer(Err(code)), Err(UnexpectedCall));
                assert_eq!(server.send_gssapi_token(0), Err(UnexpectedCall));
            }
            let _ = req.target.to_string();
            let outcome = if a.reject {
                Err(code)
            } else {
                Ok(a.bound.into())
            };
            server
                .respond(outcome)
                .expect("respond answers Event::Request");
            if outcome.is_ok() && req.command == Command::Bind {
                let peer = if a.peer_reject {
                    Err(code)
                } else {
                    Ok(a.peer.into())
                };
                server
                    .respond_bind_peer(peer)
                    .expect("respond_bind_peer after a successful BIND reply");
            }
        }
        _ => {}
    }
    Vec::new()
}

/// Runs a server over `input`, all at once or in the plan's chunks, answering every event.
pub fn drive_server(plan: &ServerPlan, input: &[u8], chunked: bool) -> ServerTrace {
    let mut server = Server::new(plan.config);
    let mut drain = Drain {
        sizes: &plan.split.out,
        next: 0,
        chunked,
    };
    let mut trace = ServerTrace {
        events: Vec::new(),
        tokens: Vec::new(),
        output: Vec::new(),
        error: None,
        established: false,
        closed: false,
        leftover: Vec::new(),
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut token: Vec<u8> = Vec::new();
    let (mut pos, mut chunk, mut answers) = (0, 0, 0);
    'input: loop {
        let size = if chunked {
            plan.split.chunks[chunk % plan.split.chunks.len()]
        } else {
            input.len()
        };
        chunk += 1;
        let end = (pos + size).min(input.len());
        pending.extend_from_slice(&input[pos..end]);
        pos = end;
        loop {
            let result = server.feed(&pending);
            drain.server(&mut server, &mut trace.output);
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    let _ = (e.to_string(), e.reply());
                    assert!(
                        server.is_closed(),
                        "feed failed with {e:?} but is not closed"
                    );
                    trace.error = Some(e);
                    pending.clear();
                    break 'input;
                }
            };
            assert!(n <= pending.len(), "feed consumed {n} of {}", pending.len());
            let fed: Vec<u8> = pending.drain(..n).collect();
            let mut answered = false;
            while let Some(event) = server.poll_event() {
                let _ = format!("{event:?}");
                answered = true;
                // A piece is the last `len` octets this feed consumed.
                let event = match event {
                    Event::GssapiPiece { len }
                    | Event::GssapiContext { len }
                    | Event::GssapiProtection { len } => {
                        assert!(len <= n, "piece of {len} after consuming {n}");
                        token.extend_from_slice(&fed[n - len..]);
                        match event {
                            Event::GssapiPiece { .. } => continue,
                            Event::GssapiContext { .. } => {
                                Event::GssapiContext { len: token.len() }
                            }
                            _ => Event::GssapiProtection { len: token.len() },
                        }
                    }
                    other => other,
                };
                if matches!(
                    event,
                    Event::GssapiContext { .. } | Event::GssapiProtection { .. }
                ) {
                    trace.tokens.push(core::mem::take(&mut token));
                }
                let owed = answer(
                    &mut server,
                    &event,
                    &plan.answers[answers % plan.answers.len()],
                );
                answers += 1;
                trace.events.push(event);
                drain.server(&mut server, &mut trace.output);
                trace.output.extend_from_slice(&owed);
            }
            if server.is_established() || server.is_closed() {
                break 'input;
            }
            if n == 0 && !answered {
                break;
            }
        }
        if pos == input.len() {
            break;
        }
    }
    trace.established = server.is_established();
    trace.closed = server.is_closed();
    assert!(!(trace.established && trace.closed));
    if trace.established || trace.closed {
        assert_eq!(
            server.feed(b"\x05\x01\x00"),
            Ok(0),
            "feed after the handshake"
        );
        assert_eq!(server.poll_event(), None);
    }
    if trace.error.is_none() {
        pending.extend_from_slice(&input[pos..]);
        trace.leftover = pending;
    }
    trace
}

/// Everything a client run depends on besides the proxy's bytes.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    version: Version,
    command: Command,
    credentials: Option<(Vec<u8>, Vec<u8>)>,
    target: (u8, Vec<u8>, u16),
    user_id: Vec<u8>,
    split: Split,
    gssapi: Option<GssapiOptions>,
}

impl ClientPlan {
    /// Header layout (all single octets unless noted; 0 = the default):
    /// version (mod 3: SOCKS5, SOCKS4, SOCKS4a), command (XOR 1, so 0 = CONNECT),
    /// credentials flag (odd = present), ULEN, PLEN, username, password,
    /// target kind (mod 3: IPv4, IPv6, domain), address length for a domain, the address
    /// octets (4, 16 or that length), port (2, big-endian), USERID length, USERID,
    /// 8 chunk sizes, 4 transmit sizes, GSS-API (0: none; else bit 0 NEC, bits 1–2 the level
    /// asked, bits 3–4 the minimum).
    pub fn new(u: &mut Unstructured<'_>) -> Self {
        let version =
            [Version::Socks5, Version::Socks4, Version::Socks4a][usize::from(byte(u) % 3)];
        let command = Command::from(byte(u) ^ 1);
        let has_credentials = byte(u) % 2 == 1;
        let (ulen, plen) = (usize::from(byte(u)), usize::from(byte(u)));
        let username = take(u, ulen).to_vec();
        let password = take(u, plen).to_vec();
        let credentials = has_credentials.then_some((username, password));
        let kind = byte(u) % 3;
        let len = match kind {
            0 => 4,
            1 => 16,
            _ => usize::from(byte(u)),
        };
        let addr = take(u, len).to_vec();
        let port = u16::from_be_bytes([byte(u), byte(u)]);
        let user_id_len = usize::from(byte(u));
        let user_id = take(u, user_id_len).to_vec();
        let split = Split::new(u);
        let g = byte(u);
        let gssapi = (g != 0).then(|| GssapiOptions {
            protection: ProtectionLevel::from((g >> 1) & 3),
            minimum: ProtectionLevel::from((g >> 3) & 3),
            nec: g & 1 != 0,
        });
        Self {
            version,
            command,
            credentials,
            target: (kind, addr, port),
            user_id,
            split,
            gssapi,
        }
    }

    fn target(&self) -> Addr<'_> {
        let (kind, bytes, port) = &self.target;
        let mut v6 = [0u8; 16];
        let mut v4 = [0u8; 4];
        match kind {
            0 => {
                v4[..bytes.len()].copy_from_slice(bytes);
                Addr::Ip(SocketAddrV4::new(v4.into(), *port).into())
            }
            1 => {
                v6[..bytes.len()].copy_from_slice(bytes);
                Addr::Ip(SocketAddrV6::new(v6.into(), *port, 0, 0).into())
            }
            _ => match Domain::new(bytes) {
                Ok(name) => Addr::Domain(name, *port),
                Err(_) => Addr::Domain(Domain::new(b"example.com").expect("valid"), *port),
            },
        }
    }

    /// The client configuration.
    pub fn config(&self) -> ClientConfig<'_> {
        let mut config = ClientConfig::new(self.version, self.command, self.target());
        config.credentials = self.credentials.as_ref().map(|(u, p)| Credentials {
            username: u,
            password: p,
        });
        config.user_id = &self.user_id;
        config
    }
}

/// What a client did with the proxy's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientTrace {
    /// Events in order, except `GssapiPiece`; the `len` of `GssapiContinue` and
    /// `GssapiUnwrapProtection` is the whole token's.
    pub events: Vec<ClientEvent>,
    /// The proxy's GSS-API tokens, reassembled from their pieces.
    pub tokens: Vec<Vec<u8>>,
    /// All bytes transmitted (including the first message).
    pub output: Vec<u8>,
    /// The error `feed` returned, if any.
    pub error: Option<ClientError>,
    /// Final state.
    pub established: bool,
    /// Input not consumed (payload from the destination, once established).
    pub leftover: Vec<u8>,
}

/// Runs a client over the proxy's `input`, all at once or in the plan's chunks. `None` when
/// `Client::new` refuses the configuration.
pub fn drive_client(plan: &ClientPlan, input: &[u8], chunked: bool) -> Option<ClientTrace> {
    let mut client = match plan.gssapi {
        Some(options) => Client::with_gssapi(plan.config(), options).ok()?,
        None => Client::new(plan.config()).ok()?,
    };
    let mut drain = Drain {
        sizes: &plan.split.out,
        next: 0,
        chunked,
    };
    let mut trace = ClientTrace {
        events: Vec::new(),
        tokens: Vec::new(),
        output: Vec::new(),
        error: None,
        established: false,
        leftover: Vec::new(),
    };
    drain.client(&mut client, &mut trace.output);
    let mut pending: Vec<u8> = Vec::new();
    let mut token: Vec<u8> = Vec::new();
    let (mut pos, mut chunk) = (0, 0);
    'input: loop {
        let size = if chunked {
            plan.split.chunks[chunk % plan.split.chunks.len()]
        } else {
            input.len()
        };
        chunk += 1;
        let end = (pos + size).min(input.len());
        pending.extend_from_slice(&input[pos..end]);
        pos = end;
        loop {
            let result = client.feed(&pending);
            drain.client(&mut client, &mut trace.output);
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    let _ = e.to_string();
                    assert_eq!(client.feed(&pending), Ok(0), "feed after {e:?}");
                    trace.error = Some(e);
                    pending.clear();
                    break 'input;
                }
            };
            assert!(n <= pending.len(), "feed consumed {n} of {}", pending.len());
            let fed: Vec<u8> = pending.drain(..n).collect();
            let mut events = false;
            while let Some(event) = client.poll_event() {
                let _ = format!("{event:?}");
                events = true;
                // The GSS-API answers of a caller whose every token is 3 octets.
                let mut owed = Vec::new();
                let event = match event {
                    ClientEvent::GssapiPiece { len }
                    | ClientEvent::GssapiContinue { len }
                    | ClientEvent::GssapiUnwrapProtection { len } => {
                        assert!(len <= n, "piece of {len} after consuming {n}");
                        token.extend_from_slice(&fed[n - len..]);
                        let whole = token.len();
                        match event {
                            ClientEvent::GssapiPiece { .. } => continue,
                            ClientEvent::GssapiContinue { .. } => {
                                client.gssapi_established(None).expect("answers Continue");
                                ClientEvent::GssapiContinue { len: whole }
                            }
                            _ => {
                                // The "unwrapped" level: the token's middle octet.
                                let t = &token;
                                let unwrapped = if whole == 3 { &t[1..2] } else { &t[..] };
                                let r =
                                    client.gssapi_protection(unwrapped).expect("answers Unwrap");
                                if let Err(e) = r {
                                    let _ = e.to_string();
                                    trace.error = Some(e);
                                }
                                ClientEvent::GssapiUnwrapProtection { len: whole }
                            }
                        }
                    }
                    ClientEvent::GssapiInit => {
                        client.send_gssapi_token(3).expect("answers Init");
                        owed = vec![0x60, 0x01, 0x02];
                        event
                    }
                    ClientEvent::GssapiWrapProtection(level) => {
                        client.send_gssapi_protection(3).expect("answers Wrap");
                        owed = vec![0x5a, level.into(), 0x5a];
                        event
                    }
                    other => other,
                };
                if matches!(
                    event,
                    ClientEvent::GssapiContinue { .. } | ClientEvent::GssapiUnwrapProtection { .. }
                ) {
                    trace.tokens.push(core::mem::take(&mut token));
                }
                trace.events.push(event);
                drain.client(&mut client, &mut trace.output);
                trace.output.extend_from_slice(&owed);
            }
            if trace.error.is_some() {
                pending.clear();
                break 'input;
            }
            if client.is_established() {
                break 'input;
            }
            if n == 0 && !events {
                break;
            }
        }
        if pos == input.len() {
            break;
        }
    }
    trace.established = client.is_established();
    if trace.established {
        assert_eq!(client.feed(b"\x05\x00"), Ok(0), "feed after the handshake");
    }
    if trace.error.is_none() {
        pending.extend_from_slice(&input[pos..]);
        trace.leftover = pending;
    }
    Some(trace)
}
