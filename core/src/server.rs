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
//!    [`Event::Gssapi`] → [`Server::send_gssapi`] / [`Server::gssapi_complete`].
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
use crate::policy::Authentication;
use crate::wire::gssapi::{GssapiMessage, GssapiMessageType};
use crate::wire::method::{MethodReply, MethodRequest};
use crate::wire::socks4::{Socks4Reply, Socks4Request};
use crate::wire::userpass::{UserPassReply, UserPassRequest};
use crate::wire::{self, Command, Method, ReplyCode, Socks4Code, Status, WireError, socks5};

/// Largest handshake message the server buffers: a SOCKS4a request with a 255-octet USERID
/// and hostname (8 + 256 + 256). RFC 1929 needs 513, a SOCKS5 request 262.
pub const MAX_MESSAGE_LEN: usize = 520;
/// Largest GSS-API token the server accepts (the message must fit the input buffer).
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
}

impl Config {
    /// The handshake for `authentication`.
    pub const fn new(authentication: Authentication) -> Self {
        Self { authentication }
    }

    /// The authentication this handshake requires.
    pub const fn authentication(&self) -> Authentication {
        self.authentication
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
    /// A GSS-API message from the client: answer with [`Server::send_gssapi`] and finish
    /// with [`Server::gssapi_complete`].
    Gssapi {
        /// Message type.
        kind: GssapiMessageType,
        /// The token.
        token: heapless::Vec<u8, MAX_GSSAPI_TOKEN>,
    },
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
            Self::Gssapi { kind, token } => f
                .debug_struct("Gssapi")
                .field("kind", kind)
                .field("token_len", &token.len())
                .finish(),
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
            Self::Gssapi { kind, token } => {
                defmt::write!(f, "Gssapi {{ {}, {} octets }}", kind, token.len())
            }
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
    /// A GSS-API token longer than [`MAX_GSSAPI_TOKEN`].
    MessageTooLong,
    /// The client aborted the GSS-API exchange.
    GssapiAborted,
}

impl ServerError {
    /// The SOCKS5 reply code this failure corresponds to.
    pub const fn reply(self) -> ReplyCode {
        match self {
            Self::Wire(e) => e.reply(),
            Self::NoAcceptableMethod | Self::Socks4Disabled => ReplyCode::NotAllowed,
            Self::MessageTooLong | Self::GssapiAborted => ReplyCode::GeneralFailure,
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
            Self::GssapiAborted => f.write_str("client aborted GSS-API negotiation"),
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
    Gssapi,
    AwaitGssapi,
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
            Self::Start | Self::UserPass | Self::Gssapi | Self::Socks5Request
        )
    }
}

/// An owned, parsed client message.
enum Message {
    Greeting(Method),
    Socks4(Request),
    UserPass(Octets, Octets),
    Gssapi(GssapiMessageType, heapless::Vec<u8, MAX_GSSAPI_TOKEN>),
    Socks5(Request),
}

fn octets(bytes: &[u8]) -> Octets {
    // Callers pass wire fields bounded to 255 octets.
    let mut v = Octets::new();
    let _ = v.extend_from_slice(bytes.get(..255).unwrap_or(bytes));
    v
}

/// The method for a greeting: GSS-API before a password before none, among those enabled.
fn choose_method(config: &Config, greeting: &MethodRequest<'_>) -> Method {
    // One pass over the offer: bit `code` set for each of the three codes offered.
    let offered = greeting.raw_methods().iter().fold(0u8, |set, &code| {
        set | (1u8.checked_shl(u32::from(code)).unwrap_or(0) & 0b111)
    });
    [Method::Gssapi, Method::UserPass, Method::NoAuth]
        .into_iter()
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
        State::Gssapi => match GssapiMessage::parse(bytes)? {
            Status::Partial => Ok(Status::Partial),
            Status::Complete((m, n)) => {
                let mut token = heapless::Vec::new();
                token
                    .extend_from_slice(m.token)
                    .map_err(|_| ServerError::MessageTooLong)?;
                Ok(Status::Complete((Message::Gssapi(m.kind, token), n)))
            }
        },
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
                    Method::Gssapi => State::Gssapi,
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
            Message::Gssapi(GssapiMessageType::Abort, _) => {
                self.state = State::Closed;
                return Err(ServerError::GssapiAborted);
            }
            Message::Gssapi(kind, token) => {
                self.event = Some(Event::Gssapi { kind, token });
                self.state = State::AwaitGssapi;
            }
            Message::Socks5(req) => {
                self.command = Some(req.command);
                self.event = Some(Event::Request(req));
                self.state = State::AwaitResponse;
            }
        }
        Ok(())
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
            (State::Gssapi, _) => self.queue(&GssapiMessage {
                kind: GssapiMessageType::Abort,
                token: &[],
            }),
            (State::Socks5Request, _) => self.queue_socks5(error.reply(), UNSPECIFIED),
            _ => {}
        }
        self.state = State::Closed;
    }

    fn queue(&mut self, msg: &impl wire::Emit) {
        // OUT_LEN holds the largest message; only caller-supplied GSS-API tokens can exceed it
        // and `send_gssapi` checks those first.
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

    /// Queues a GSS-API message for the client (an answer to [`Event::Gssapi`]); the server
    /// then waits for the client's next GSS-API message.
    pub fn send_gssapi(
        &mut self,
        kind: GssapiMessageType,
        token: &[u8],
    ) -> Result<(), UnexpectedCall> {
        if self.state != State::AwaitGssapi || token.len() > MAX_GSSAPI_TOKEN {
            return Err(UnexpectedCall);
        }
        self.queue(&GssapiMessage { kind, token });
        self.state = State::Gssapi;
        Ok(())
    }

    /// Ends the GSS-API exchange: on success the request follows (decapsulated by the
    /// caller if protection was negotiated); on failure an abort is queued and the server closes.
    pub fn gssapi_complete(&mut self, ok: bool) -> Result<(), UnexpectedCall> {
        if !matches!(self.state, State::AwaitGssapi | State::Gssapi) {
            return Err(UnexpectedCall);
        }
        if ok {
            self.state = State::Socks5Request;
        } else {
            self.queue(&GssapiMessage {
                kind: GssapiMessageType::Abort,
                token: &[],
            });
            self.state = State::Closed;
        }
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

    /// The requested command, once the request has arrived.
    pub const fn command(&self) -> Option<Command> {
        self.command
    }
}
