//! The server side of the SOCKS handshake, sans-IO.
//!
//! A [`Server`] is driven by its caller, which owns the socket, DNS, clocks and the relay:
//!
//! 1. [`Server::feed`] the bytes read from the client. It returns how many it consumed; it
//!    stops early when it needs a decision from you or when the handshake is over, so keep
//!    the unconsumed rest and feed it again after handling events.
//! 2. After every `feed` and every answer, send what [`Server::poll_transmit`] gives until it
//!    returns 0, and handle every [`Server::poll_event`]:
//!    [`Event::Authenticate`] → [`Server::authenticate`];
//!    [`Event::Request`] → connect/bind/associate, then [`Server::respond`] (and for BIND,
//!    later, [`Server::respond_bind_peer`]);
//!    the GSS-API events → see [`crate::gssapi`] (the [`Session`](crate::session::Session)
//!    table there names the `Server` calls' session counterparts).
//! 3. When [`Server::is_established`] is true the handshake is done: bytes not consumed by
//!    `feed` are the client's first payload (clients may pipeline data right after the
//!    request) and go upstream. When [`Server::is_closed`] is true, flush and close.
//!
//! If `feed` returns an error, a reply saying so may be queued: drain `poll_transmit`, then
//! close the connection. Events and output bytes are the same whatever way the input is split.
//!
//! ```
//! use socksgate_core::server::{Config, Event, Server};
//! use socksgate_core::wire::ReplyCode;
//!
//! let mut server = Server::new(Config::default());
//! // Greeting, CONNECT 127.0.0.1:80, and early payload, all in one read:
//! let input = [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80, b'G', b'E', b'T'];
//! let mut pending = &input[..];
//! let mut wire = [0u8; 512];
//! let mut sent = Vec::new();
//! while !server.is_established() && !server.is_closed() {
//!     let n = server.feed(pending).expect("valid handshake");
//!     pending = &pending[n..];
//!     while let Some(event) = server.poll_event() {
//!         match event {
//!             Event::Request(req) => {
//!                 assert_eq!(req.target.to_string(), "127.0.0.1:80");
//!                 // ... connect upstream, then report the local address of that socket:
//!                 server.respond(Ok("192.0.2.1:40000".parse().unwrap())).unwrap();
//!             }
//!             other => panic!("unexpected {other:?}"),
//!         }
//!     }
//!     loop {
//!         let n = server.poll_transmit(&mut wire);
//!         if n == 0 { break; }
//!         sent.extend_from_slice(&wire[..n]);
//!     }
//! }
//! assert_eq!(sent, [5, 0, 5, 0, 0, 1, 192, 0, 2, 1, 0x9c, 0x40]);
//! assert_eq!(pending, b"GET"); // payload for the upstream connection
//! ```

use core::fmt;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::addr::{Addr, Target};
use crate::buffers::{InBuffer, Next, OutBuffer};
use crate::gssapi::GssapiError;
use crate::policy::{Authentication, GssapiPolicy, MethodPreference};
use crate::wire::gssapi::{GssapiHeader, GssapiMessage, GssapiMessageType, ProtectionLevel};
use crate::wire::method::{MethodReply, MethodRequest};
use crate::wire::socks4::{Socks4Reply, Socks4Request};
use crate::wire::userpass::{UserPassReply, UserPassRequest};
use crate::wire::{self, Command, Method, ReplyCode, Socks4Code, Status, WireError, socks5};

/// Largest handshake message the server buffers: a SOCKS4a request with a 255-octet USERID
/// and hostname (8 + 256 + 256). RFC 1929 needs 513, a SOCKS5 request 262.
pub const MAX_MESSAGE_LEN: usize = 520;
/// Largest GSS-API token that fits one buffered handshake message (the
/// [observer](crate::observe) reports longer ones by their span). The server itself streams
/// tokens of any length the framing allows (65,535 octets) without buffering them.
pub const MAX_GSSAPI_TOKEN: usize = MAX_MESSAGE_LEN - 4;
const OUT_LEN: usize = MAX_MESSAGE_LEN;

/// A username, password, SOCKS4 USERID or similar octet string of at most 255 octets.
pub type Octets = heapless::Vec<u8, 255>;

/// What the server offers: the methods and versions of an [`Authentication`], which makes
/// "authentication required, yet SOCKS4 accepted" impossible to configure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    authentication: Authentication,
    #[cfg(feature = "gssapi")]
    gssapi: GssapiPolicy,
}

impl Config {
    /// The handshake for `authentication`, with the default [`GssapiPolicy`].
    pub const fn new(authentication: Authentication) -> Self {
        Self {
            authentication,
            #[cfg(feature = "gssapi")]
            gssapi: GssapiPolicy::DEFAULT,
        }
    }

    /// The same handshake, running GSS-API (when `authentication` offers it) by `gssapi`.
    /// Without the `gssapi` feature there is no GSS-API to run: this does nothing.
    #[must_use]
    #[cfg_attr(not(feature = "gssapi"), allow(unused_variables, unused_mut))]
    pub const fn with_gssapi(mut self, gssapi: GssapiPolicy) -> Self {
        #[cfg(feature = "gssapi")]
        {
            self.gssapi = gssapi;
        }
        self
    }

    /// The authentication this handshake requires.
    pub const fn authentication(&self) -> Authentication {
        self.authentication
    }

    /// How GSS-API runs.
    pub const fn gssapi(&self) -> GssapiPolicy {
        #[cfg(feature = "gssapi")]
        return self.gssapi;
        #[cfg(not(feature = "gssapi"))]
        GssapiPolicy::DEFAULT
    }
}

impl From<Authentication> for Config {
    fn from(authentication: Authentication) -> Self {
        Self::new(authentication)
    }
}

/// The protocol a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Version {
    /// SOCKS4 (IPv4 destinations).
    Socks4,
    /// SOCKS4a (hostname destinations).
    Socks4a,
    /// SOCKS5.
    Socks5,
}

/// A client's request, owned so it can be held across an `.await`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request {
    /// The protocol of the request (and of the reply the server will send).
    pub version: Version,
    /// The command; answer unsupported ones with [`ReplyCode::CommandNotSupported`].
    pub command: Command,
    /// The destination as sent: an IP address or a name to resolve. For BIND it is the
    /// expected peer; for UDP ASSOCIATE the client's expected UDP source (zeros = unknown).
    pub target: Target,
    /// The SOCKS4 USERID (empty for SOCKS5). Not authenticated.
    pub user_id: Octets,
}

/// Something the caller must act on.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// RFC 1929 credentials: check them and call [`Server::authenticate`].
    Authenticate {
        /// The username.
        username: Octets,
        /// The password. Never log it (`Debug` redacts it).
        password: Octets,
    },
    /// A piece of the client's current GSS-API token: the last `len` octets the `feed` call
    /// consumed. More pieces follow; no answer.
    GssapiPiece {
        /// Octets in the piece.
        len: usize,
    },
    /// The client's context-establishment token (§3) is complete; its last piece is the last
    /// `len` octets the `feed` call consumed (the whole token when it came in one read):
    /// accept it, then [`Server::send_gssapi_token`], [`Server::gssapi_established`] or
    /// [`Server::gssapi_failed`].
    GssapiContext {
        /// Octets in the last piece.
        len: usize,
    },
    /// The client's protected-form protection-level message (§4) is complete (last piece as
    /// for [`GssapiContext`](Self::GssapiContext)): unwrap it, then
    /// [`Server::gssapi_protection`].
    GssapiProtection {
        /// Octets in the last piece.
        len: usize,
    },
    /// The protection level is agreed; with a level that
    /// [encapsulates](ProtectionLevel::encapsulates), input after what `feed` consumed and all
    /// output queued from now on are §5 plaintext (see [`crate::gssapi`]). No answer.
    GssapiProtected(ProtectionLevel),
    /// The request: act on it and call [`Server::respond`].
    Request(Request),
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authenticate { username, .. } => f
                .debug_struct("Authenticate")
                .field("username", &crate::addr::Domain::new(username).ok())
                .field("password", &"<redacted>")
                .finish(),
            Self::GssapiPiece { len } => f.debug_struct("GssapiPiece").field("len", len).finish(),
            Self::GssapiContext { len } => {
                f.debug_struct("GssapiContext").field("len", len).finish()
            }
            Self::GssapiProtection { len } => f
                .debug_struct("GssapiProtection")
                .field("len", len)
                .finish(),
            Self::GssapiProtected(level) => f.debug_tuple("GssapiProtected").field(level).finish(),
            Self::Request(r) => f.debug_tuple("Request").field(r).finish(),
        }
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Event {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Self::Authenticate { username, .. } => {
                defmt::write!(f, "Authenticate {{ username: {=[u8]:a} }}", username)
            }
            Self::GssapiPiece { len } => defmt::write!(f, "GssapiPiece({=usize})", len),
            Self::GssapiContext { len } => defmt::write!(f, "GssapiContext({=usize})", len),
            Self::GssapiProtection { len } => defmt::write!(f, "GssapiProtection({=usize})", len),
            Self::GssapiProtected(level) => defmt::write!(f, "GssapiProtected({})", level),
            Self::Request(r) => defmt::write!(f, "Request({})", r),
        }
    }
}

/// Why the handshake failed. After it, drain [`Server::poll_transmit`] and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ServerError {
    /// The client sent a malformed message.
    Wire(WireError),
    /// None of the client's methods is enabled (X'FF' was queued).
    NoAcceptableMethod,
    /// A SOCKS4 request while SOCKS4 is disabled (CD 91 was queued).
    Socks4Disabled,
    /// A handshake message longer than [`MAX_MESSAGE_LEN`].
    MessageTooLong,
    /// The GSS-API sub-negotiation failed (the abort message is queued unless the client
    /// aborted).
    Gssapi(GssapiError),
}

impl ServerError {
    /// The SOCKS5 reply code this failure corresponds to.
    pub const fn reply(self) -> ReplyCode {
        match self {
            Self::Wire(e) => e.reply(),
            Self::NoAcceptableMethod | Self::Socks4Disabled => ReplyCode::NotAllowed,
            Self::MessageTooLong | Self::Gssapi(_) => ReplyCode::GeneralFailure,
        }
    }
}

impl From<WireError> for ServerError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => write!(f, "malformed message: {e}"),
            Self::NoAcceptableMethod => f.write_str("no acceptable authentication method"),
            Self::Socks4Disabled => f.write_str("SOCKS4 is disabled"),
            Self::MessageTooLong => f.write_str("handshake message too long"),
            Self::Gssapi(e) => write!(f, "GSS-API: {e}"),
        }
    }
}

impl core::error::Error for ServerError {}

/// An answer method was called in a state where it does not apply (a caller bug); nothing
/// was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UnexpectedCall;

impl fmt::Display for UnexpectedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server state machine called out of order")
    }
}

impl core::error::Error for UnexpectedCall {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum State {
    /// Waiting for the first message (version octet decides SOCKS4 or SOCKS5).
    Start,
    UserPass,
    AwaitAuth,
    /// The header of the client's next context-establishment token.
    GssapiContext,
    /// The header of the client's protection-level message.
    GssapiProtection,
    /// The octets of a token ([`GssapiProgress::remaining`] still to come).
    GssapiToken(Token),
    /// The caller runs `gss_accept_sec_context`.
    AwaitGssapiContext,
    /// The caller unwraps the protection-level message.
    AwaitGssapiUnwrap,
    /// The caller wraps the granted level ([`GssapiProgress::level`]).
    AwaitGssapiWrap,
    Socks5Request,
    AwaitResponse,
    AwaitBindPeer,
    Established,
    Closed,
}

impl State {
    const fn reads_input(self) -> bool {
        matches!(
            self,
            Self::Start
                | Self::UserPass
                | Self::GssapiContext
                | Self::GssapiProtection
                | Self::GssapiToken(_)
                | Self::Socks5Request
        )
    }

    const fn is_gssapi(self) -> bool {
        matches!(
            self,
            Self::GssapiContext
                | Self::GssapiProtection
                | Self::GssapiToken(_)
                | Self::AwaitGssapiContext
                | Self::AwaitGssapiUnwrap
                | Self::AwaitGssapiWrap
        )
    }
}

/// What a server remembers of a GSS-API exchange besides its [`State`]: the octets of the
/// token being read and the level granted. Kept apart from `State` (which then stays one
/// octet) and, without the `gssapi` feature, of size zero: a server that cannot choose
/// method 1 pays nothing for it.
#[cfg(feature = "gssapi")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct GssapiProgress {
    remaining: u16,
    level: Option<ProtectionLevel>,
}

#[cfg(feature = "gssapi")]
impl GssapiProgress {
    const fn new() -> Self {
        Self {
            remaining: 0,
            level: None,
        }
    }

    const fn remaining(self) -> u16 {
        self.remaining
    }

    fn set_remaining(&mut self, remaining: u16) {
        self.remaining = remaining;
    }

    const fn level(self) -> Option<ProtectionLevel> {
        self.level
    }

    fn set_level(&mut self, level: ProtectionLevel) {
        self.level = Some(level);
    }
}

/// Without the `gssapi` feature method 1 is never chosen, so nothing is ever stored.
#[cfg(not(feature = "gssapi"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct GssapiProgress;

#[cfg(not(feature = "gssapi"))]
impl GssapiProgress {
    const fn new() -> Self {
        Self
    }

    const fn remaining(self) -> u16 {
        0
    }

    fn set_remaining(&mut self, _: u16) {}

    const fn level(self) -> Option<ProtectionLevel> {
        None
    }

    fn set_level(&mut self, _: ProtectionLevel) {}
}

/// Which token the server is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Token {
    Context,
    /// Protected form: a wrapped level octet.
    Protection,
    /// NEC form: the raw level octet.
    Nec,
}

/// An owned, parsed client message.
enum Message {
    Greeting(Method),
    Socks4(Request),
    UserPass(Octets, Octets),
    /// A GSS-API header, read in the context (`false`) or protection (`true`) stage.
    Gssapi(bool, GssapiHeader),
    Socks5(Request),
}

fn octets(bytes: &[u8]) -> Octets {
    // Callers pass wire fields bounded to 255 octets.
    let mut v = Octets::new();
    let _ = v.extend_from_slice(bytes.get(..255).unwrap_or(bytes));
    v
}

/// The method for a greeting, among those enabled: GSS-API and a password in the order of
/// the policy's preference, then none.
fn choose_method(config: &Config, greeting: &MethodRequest<'_>) -> Method {
    // One pass over the offer: bit `code` set for each of the three codes offered.
    let offered = greeting.raw_methods().iter().fold(0u8, |set, &code| {
        set | (1u8.checked_shl(u32::from(code)).unwrap_or(0) & 0b111)
    });
    let order = match config.gssapi().prefer {
        MethodPreference::Gssapi => [Method::Gssapi, Method::UserPass, Method::NoAuth],
        MethodPreference::Password => [Method::UserPass, Method::Gssapi, Method::NoAuth],
    };
    order
        .into_iter()
        // Without the `gssapi` feature the server keeps no GSS-API state: never method 1.
        .filter(|&m| m != Method::Gssapi || cfg!(feature = "gssapi"))
        .find(|&m| offered & (1 << u8::from(m)) != 0 && config.authentication.accepts(m))
        .unwrap_or(Method::NoAcceptable)
}

fn parse_message(
    state: State,
    config: &Config,
    bytes: &[u8],
) -> Result<Status<(Message, usize)>, ServerError> {
    let map = |r: Status<(Message, usize)>| Ok(r);
    match state {
        State::Start => match bytes.first() {
            None => Ok(Status::Partial),
            Some(&4) => map(match Socks4Request::parse(bytes)? {
                Status::Partial => Status::Partial,
                Status::Complete((req, n)) => {
                    let version = if req.is_4a() {
                        Version::Socks4a
                    } else {
                        Version::Socks4
                    };
                    let request = Request {
                        version,
                        command: req.command,
                        target: req.dst_addr().to_target(),
                        user_id: octets(req.user_id),
                    };
                    Status::Complete((Message::Socks4(request), n))
                }
            }),
            Some(_) => map(match MethodRequest::parse(bytes)? {
                Status::Partial => Status::Partial,
                Status::Complete((g, n)) => {
                    Status::Complete((Message::Greeting(choose_method(config, &g)), n))
                }
            }),
        },
        State::UserPass => map(match UserPassRequest::parse(bytes)? {
            Status::Partial => Status::Partial,
            Status::Complete((r, n)) => Status::Complete((
                Message::UserPass(octets(r.username()), octets(r.password())),
                n,
            )),
        }),
        State::GssapiContext | State::GssapiProtection => {
            let protection = state == State::GssapiProtection;
            match GssapiHeader::parse(bytes)
                .map_err(|e| ServerError::Gssapi(GssapiError::Malformed(e)))?
            {
                Status::Partial => Ok(Status::Partial),
                Status::Complete((h, n)) => {
                    Ok(Status::Complete((Message::Gssapi(protection, h), n)))
                }
            }
        }
        State::Socks5Request => map(match socks5::Request::parse(bytes)? {
            Status::Partial => Status::Partial,
            Status::Complete((r, n)) => Status::Complete((
                Message::Socks5(Request {
                    version: Version::Socks5,
                    command: r.command,
                    target: r.dst.to_target(),
                    user_id: Octets::new(),
                }),
                n,
            )),
        }),
        _ => Ok(Status::Partial),
    }
}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// The server side of one client's handshake. See the [module docs](self) for the protocol.
#[derive(Debug)]
pub struct Server {
    config: Config,
    state: State,
    version: Option<Version>,
    method: Option<Method>,
    command: Option<Command>,
    input: InBuffer<MAX_MESSAGE_LEN>,
    output: OutBuffer<OUT_LEN>,
    event: Option<Event>,
    gssapi: GssapiProgress,
}

impl Server {
    /// A server waiting for a client's first byte.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Start,
            version: None,
            method: None,
            command: None,
            input: InBuffer::default(),
            output: OutBuffer::default(),
            event: None,
            gssapi: GssapiProgress::new(),
        }
    }

    /// Consumes handshake bytes from the client and returns how many it used.
    ///
    /// It stops at the end of the handshake (the rest of `input` is payload) and while an
    /// event awaits an answer (feed the rest again afterwards). A partial message is
    /// buffered internally and counts as consumed. Returns `Ok(0)` when no input is wanted.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ServerError> {
        let mut consumed = 0;
        while self.state.reads_input() && self.event.is_none() {
            let rest = input.get(consumed..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            if let State::GssapiToken(token) = self.state {
                let remaining = self.gssapi.remaining();
                // Token octets stream through: the caller copies each piece.
                let take = rest.len().min(usize::from(remaining));
                consumed += take;
                // `take` ≤ `remaining`, a u16.
                let left = remaining - take as u16;
                self.on_token(token, rest.first().copied(), take, left)?;
                continue;
            }
            if self.state == State::Start && self.version.is_none() {
                // Known before the first message is complete, so a malformed one still gets
                // a failure reply in the right protocol.
                self.version = match rest.first() {
                    Some(4) => Some(Version::Socks4),
                    Some(5) => Some(Version::Socks5),
                    _ => None,
                };
            }
            let state = self.state;
            let config = self.config;
            let next = self.input.next(
                rest,
                |bytes| parse_message(state, &config, bytes),
                ServerError::MessageTooLong,
            );
            match next {
                Ok(Next::NeedMore(n)) => consumed += n,
                Ok(Next::Message(msg, n)) => {
                    consumed += n;
                    self.on_message(msg)?;
                }
                Err(e) => {
                    self.fail(e);
                    return Err(e);
                }
            }
        }
        Ok(consumed)
    }

    fn on_message(&mut self, msg: Message) -> Result<(), ServerError> {
        match msg {
            Message::Greeting(method) => {
                self.version = Some(Version::Socks5);
                self.method = Some(method);
                self.queue(&MethodReply { method });
                self.state = match method {
                    Method::NoAuth => State::Socks5Request,
                    Method::UserPass => State::UserPass,
                    Method::Gssapi => State::GssapiContext,
                    _ => {
                        self.state = State::Closed;
                        return Err(ServerError::NoAcceptableMethod);
                    }
                };
            }
            Message::Socks4(req) => {
                self.version = Some(req.version);
                if !self.config.authentication.accepts_socks4() {
                    self.fail(ServerError::Socks4Disabled);
                    return Err(ServerError::Socks4Disabled);
                }
                self.command = Some(req.command);
                self.event = Some(Event::Request(req));
                self.state = State::AwaitResponse;
            }
            Message::UserPass(username, password) => {
                self.event = Some(Event::Authenticate { username, password });
                self.state = State::AwaitAuth;
            }
            Message::Gssapi(
                _,
                GssapiHeader {
                    kind: GssapiMessageType::Abort,
                    ..
                },
            ) => {
                // The client gave up: nothing to answer.
                self.state = State::Closed;
                return Err(ServerError::Gssapi(GssapiError::Aborted));
            }
            Message::Gssapi(
                false,
                GssapiHeader {
                    kind: GssapiMessageType::Context,
                    len,
                },
            ) => self.read_token(Token::Context, len),
            Message::Gssapi(
                true,
                GssapiHeader {
                    kind: GssapiMessageType::Protection,
                    len: 1,
                },
            ) => {
                if !self.config.gssapi().accept_nec {
                    return Err(self.fail_gssapi(GssapiError::NecRefused));
                }
                self.read_token(Token::Nec, 1);
            }
            Message::Gssapi(
                true,
                GssapiHeader {
                    kind: GssapiMessageType::Protection,
                    len,
                },
            ) => self.read_token(Token::Protection, len),
            Message::Gssapi(_, h) => {
                return Err(self.fail_gssapi(GssapiError::UnexpectedMessage(h.kind)));
            }
            Message::Socks5(req) => {
                self.command = Some(req.command);
                self.event = Some(Event::Request(req));
                self.state = State::AwaitResponse;
            }
        }
        Ok(())
    }

    /// Starts reading a token of `len` octets; a zero-length one is complete at once.
    fn read_token(&mut self, token: Token, len: u16) {
        if len == 0 {
            // No octets to stream: the token is complete with an empty last piece.
            let _ = self.on_token(token, None, 0, 0);
        } else {
            self.gssapi.set_remaining(len);
            self.state = State::GssapiToken(token);
        }
    }

    /// `take` more octets of `token` arrived (`first` is the first of them), `left` to come.
    fn on_token(
        &mut self,
        token: Token,
        first: Option<u8>,
        take: usize,
        left: u16,
    ) -> Result<(), ServerError> {
        if left > 0 {
            self.gssapi.set_remaining(left);
            self.state = State::GssapiToken(token);
            self.event = Some(Event::GssapiPiece { len: take });
            return Ok(());
        }
        match token {
            Token::Context => {
                self.state = State::AwaitGssapiContext;
                self.event = Some(Event::GssapiContext { len: take });
            }
            Token::Protection => {
                self.state = State::AwaitGssapiUnwrap;
                self.event = Some(Event::GssapiProtection { len: take });
            }
            Token::Nec => {
                let level = first
                    .ok_or(GssapiError::BadProtectionMessage)
                    .and_then(|octet| self.grant(octet))
                    .map_err(|e| self.fail_gssapi(e))?;
                self.queue(&GssapiMessage {
                    kind: GssapiMessageType::Protection,
                    token: &[level.into()],
                });
                self.protected(level);
            }
        }
        Ok(())
    }

    /// The level to grant for the client's `octet`.
    fn grant(&self, octet: u8) -> Result<ProtectionLevel, GssapiError> {
        let requested = ProtectionLevel::from(octet);
        if requested.strength().is_none() {
            return Err(GssapiError::UnknownProtectionLevel(octet));
        }
        self.config
            .gssapi()
            .protection
            .grant(requested)
            .ok_or(GssapiError::ProtectionRefused(requested))
    }

    /// The protection level is agreed: the request follows.
    fn protected(&mut self, level: ProtectionLevel) {
        self.gssapi.set_level(level);
        self.state = State::Socks5Request;
        self.event = Some(Event::GssapiProtected(level));
    }

    /// Queues the abort message and closes; returns the error.
    fn fail_gssapi(&mut self, error: GssapiError) -> ServerError {
        let error = ServerError::Gssapi(error);
        self.fail(error);
        error
    }

    /// Queues the failure reply that fits the current stage, and closes.
    fn fail(&mut self, error: ServerError) {
        match (self.state, self.version) {
            (State::Start, Some(Version::Socks4 | Version::Socks4a)) => {
                self.queue_socks4(Socks4Code::Rejected, UNSPECIFIED);
            }
            // A malformed greeting gets "no acceptable methods".
            (State::Start, Some(Version::Socks5)) => {
                self.queue(&MethodReply {
                    method: Method::NoAcceptable,
                });
            }
            // An unknown version gets nothing: we cannot know what the peer would understand.
            (State::Start, None) => {}
            (State::UserPass, _) => self.queue(&UserPassReply::FAILURE),
            (state, _) if state.is_gssapi() => self.queue(&GssapiMessage {
                kind: GssapiMessageType::Abort,
                token: &[],
            }),
            (State::Socks5Request, _) => self.queue_socks5(error.reply(), UNSPECIFIED),
            _ => {}
        }
        self.state = State::Closed;
    }

    fn queue(&mut self, msg: &impl wire::Emit) {
        // OUT_LEN holds the largest message; GSS-API tokens are never queued (the caller
        // sends its own after the queued header).
        let _ = self.output.push(msg);
    }

    fn queue_socks5(&mut self, code: ReplyCode, bound: SocketAddr) {
        self.queue(&socks5::Reply {
            code,
            bound: Addr::Ip(bound),
        });
    }

    fn queue_socks4(&mut self, code: Socks4Code, addr: SocketAddr) {
        // SOCKS4 replies carry IPv4 only; an IPv6 address keeps its port and shows 0.0.0.0.
        let addr = match addr {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port()),
        };
        self.queue(&Socks4Reply { code, addr });
    }

    fn queue_reply(&mut self, outcome: Result<SocketAddr, ReplyCode>) {
        let (code, addr) = match outcome {
            Ok(addr) => (ReplyCode::Succeeded, addr),
            Err(code) => (code, UNSPECIFIED),
        };
        match self.version {
            Some(Version::Socks5) => self.queue_socks5(code, addr),
            _ => self.queue_socks4(code.into(), addr),
        }
    }

    /// The next event, if any. Call after every [`feed`](Self::feed) until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// Moves queued output into `out` and returns its length. Call after every `feed` and
    /// every answer until it returns 0; [`MAX_MESSAGE_LEN`] bytes always suffice.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        self.output.drain_into(out)
    }

    /// The queued output, for callers that write from it directly; follow with
    /// [`consume_transmit`](Self::consume_transmit).
    pub fn pending_transmit(&self) -> &[u8] {
        self.output.pending()
    }

    /// Drops the first `n` bytes of queued output (after writing them yourself).
    pub fn consume_transmit(&mut self, n: usize) {
        self.output.discard(n);
    }

    /// Answers [`Event::Authenticate`]. On `false` the failure status is queued and the
    /// server closes (RFC 1929 requires closing after a failure).
    pub fn authenticate(&mut self, ok: bool) -> Result<(), UnexpectedCall> {
        if self.state != State::AwaitAuth {
            return Err(UnexpectedCall);
        }
        if ok {
            self.queue(&UserPassReply::SUCCESS);
            self.state = State::Socks5Request;
        } else {
            self.queue(&UserPassReply::FAILURE);
            self.state = State::Closed;
        }
        Ok(())
    }

    /// Answers [`Event::GssapiContext`] when `gss_accept_sec_context` needs another round:
    /// queues the header of the caller's output token of `len` octets. Send the queued output,
    /// then the token; the server then reads the client's next token.
    ///
    /// Errors (nothing changed): no context token is waiting for an answer, or `len` is more
    /// than 65,535.
    pub fn send_gssapi_token(&mut self, len: usize) -> Result<(), UnexpectedCall> {
        if self.state != State::AwaitGssapiContext {
            return Err(UnexpectedCall);
        }
        let header = GssapiHeader::new(GssapiMessageType::Context, len).ok_or(UnexpectedCall)?;
        self.queue(&header);
        self.state = State::GssapiContext;
        Ok(())
    }

    /// Answers [`Event::GssapiContext`] when the context is established: queues the header
    /// of the caller's last output token of `len` octets — 0 when there is none: RFC 1961
    /// §3.4 then has the server send an empty token to say it is ready. Send the queued
    /// output, then the token; the protection-level message comes next.
    ///
    /// Errors as for [`send_gssapi_token`](Self::send_gssapi_token).
    pub fn gssapi_established(&mut self, len: usize) -> Result<(), UnexpectedCall> {
        if self.state != State::AwaitGssapiContext {
            return Err(UnexpectedCall);
        }
        let header = GssapiHeader::new(GssapiMessageType::Context, len).ok_or(UnexpectedCall)?;
        self.queue(&header);
        self.state = State::GssapiProtection;
        Ok(())
    }

    /// Reports that the caller's GSS-API step failed (accepting the context, unwrapping or
    /// wrapping the protection level): queues the abort message and closes.
    pub fn gssapi_failed(&mut self) -> Result<(), UnexpectedCall> {
        if !matches!(
            self.state,
            State::AwaitGssapiContext | State::AwaitGssapiUnwrap | State::AwaitGssapiWrap
        ) {
            return Err(UnexpectedCall);
        }
        self.fail(ServerError::Gssapi(GssapiError::Failed));
        Ok(())
    }

    /// Answers [`Event::GssapiProtection`] with the unwrapped message (one octet: the level
    /// the client requires). `Ok(Ok(level))`: the level granted — wrap that octet
    /// (`conf_req_flag` FALSE) and call [`send_gssapi_protection`](Self::send_gssapi_protection).
    /// `Ok(Err(e))`: refused (not one octet, an unknown level, nothing allowed at or below
    /// it); the abort message is queued and the server is closed.
    pub fn gssapi_protection(
        &mut self,
        unwrapped: &[u8],
    ) -> Result<Result<ProtectionLevel, ServerError>, UnexpectedCall> {
        if self.state != State::AwaitGssapiUnwrap {
            return Err(UnexpectedCall);
        }
        let granted = match unwrapped {
            [octet] => self.grant(*octet),
            _ => Err(GssapiError::BadProtectionMessage),
        };
        Ok(match granted {
            Ok(level) => {
                self.gssapi.set_level(level);
                self.state = State::AwaitGssapiWrap;
                Ok(level)
            }
            Err(e) => Err(self.fail_gssapi(e)),
        })
    }

    /// Queues the header of the caller's wrapped level octet (`len` octets): send the queued
    /// output, then the token. Queues [`Event::GssapiProtected`]; the request follows.
    ///
    /// Errors (nothing changed): no granted level waits to be sent, or `len` is more than
    /// 65,535.
    pub fn send_gssapi_protection(&mut self, len: usize) -> Result<(), UnexpectedCall> {
        let (State::AwaitGssapiWrap, Some(level)) = (self.state, self.gssapi.level()) else {
            return Err(UnexpectedCall);
        };
        let header = GssapiHeader::new(GssapiMessageType::Protection, len).ok_or(UnexpectedCall)?;
        self.queue(&header);
        self.protected(level);
        Ok(())
    }

    /// Answers [`Event::Request`]: `Ok(bound)` is the address to report — the local address
    /// of the outbound connection (CONNECT), the listening socket (BIND) or the UDP relay
    /// (UDP ASSOCIATE); `Err(code)` refuses with that code (SOCKS4 clients see CD 91) and
    /// closes. Send success only once the outbound connection really exists.
    pub fn respond(
        &mut self,
        outcome: Result<SocketAddr, ReplyCode>,
    ) -> Result<(), UnexpectedCall> {
        if self.state != State::AwaitResponse {
            return Err(UnexpectedCall);
        }
        self.queue_reply(outcome);
        self.state = match outcome {
            Ok(_) if self.command == Some(Command::Bind) => State::AwaitBindPeer,
            Ok(_) => State::Established,
            Err(_) => State::Closed,
        };
        Ok(())
    }

    /// Sends BIND's second reply: `Ok(peer)` once the expected peer connected (then the
    /// handshake is established), or `Err(code)` (e.g. on timeout) and close.
    pub fn respond_bind_peer(
        &mut self,
        outcome: Result<SocketAddr, ReplyCode>,
    ) -> Result<(), UnexpectedCall> {
        if self.state != State::AwaitBindPeer {
            return Err(UnexpectedCall);
        }
        self.queue_reply(outcome);
        self.state = if outcome.is_ok() {
            State::Established
        } else {
            State::Closed
        };
        Ok(())
    }

    /// The handshake succeeded: unconsumed input is payload.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// The handshake failed or was refused: send the queued output, then close.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The client's protocol, once known.
    pub const fn version(&self) -> Option<Version> {
        self.version
    }

    /// The SOCKS5 method selected, once negotiated.
    pub const fn method(&self) -> Option<Method> {
        self.method
    }

    /// The GSS-API protection level, once agreed.
    pub const fn protection(&self) -> Option<ProtectionLevel> {
        match self.state {
            // Granted, not yet sent.
            State::AwaitGssapiWrap => None,
            _ => self.gssapi.level(),
        }
    }

    /// The requested command, once the request has arrived.
    pub const fn command(&self) -> Option<Command> {
        self.command
    }
}
