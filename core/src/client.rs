//! The client side of the SOCKS handshake, sans-IO: for upstream chaining and
//! `socksgate connect`.
//!
//! Create a [`Client`] with the request, send what [`Client::poll_transmit`] gives, [`feed`]
//! the proxy's bytes, handle [`ClientEvent`]s, repeat until [`Client::is_established`]. Bytes
//! `feed` does not consume after that are the first payload from the destination. The client
//! sends one message per round trip (greeting, credentials, request), which every server
//! understands; it never pipelines.
//!
//! [`Client::with_gssapi`] authenticates with GSS-API (RFC 1961): the client asks its caller
//! to init the context and to wrap and unwrap, as [`crate::gssapi`] describes.
//!
//! [`feed`]: Client::feed
//!
//! ```
//! use socksgate_core::client::{Client, ClientConfig, ClientEvent};
//! use socksgate_core::server::Version;
//! use socksgate_core::wire::Command;
//! use socksgate_core::Addr;
//!
//! let target = Addr::Ip("127.0.0.1:80".parse().unwrap());
//! let mut client = Client::new(ClientConfig::new(Version::Socks5, Command::Connect, target)).unwrap();
//! let mut out = [0u8; 512];
//! let n = client.poll_transmit(&mut out);
//! assert_eq!(&out[..n], &[5, 1, 0]); // greeting: no authentication
//! assert_eq!(client.feed(&[5, 0]), Ok(2));
//! let n = client.poll_transmit(&mut out);
//! assert_eq!(&out[..n], &[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
//! assert_eq!(client.feed(&[5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, b'h', b'i']), Ok(10));
//! assert!(matches!(client.poll_event(), Some(ClientEvent::Replied { .. })));
//! assert!(client.is_established());
//! ```

use core::fmt;
use core::net::SocketAddr;

use crate::addr::{Addr, Target};
use crate::buffers::{InBuffer, Next, OutBuffer};
use crate::gssapi::GssapiError;
use crate::server::{Octets, UnexpectedCall, Version};
use crate::wire::gssapi::{GssapiHeader, GssapiMessage, GssapiMessageType, ProtectionLevel};
use crate::wire::method::{MethodReply, MethodRequest};
use crate::wire::socks4::{Socks4Dst, Socks4Reply, Socks4Request};
use crate::wire::userpass::{UserPassReply, UserPassRequest};
use crate::wire::{Command, Emit, Method, ReplyCode, Socks4Code, Status, WireError, socks5};

/// Largest reply the client buffers (a SOCKS5 reply with a 255-octet domain).
const IN_LEN: usize = 262;
/// Largest message the client queues (RFC 1929 with 255-octet fields).
const OUT_LEN: usize = 513;

/// RFC 1929 credentials.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// Username, 1–255 octets.
    pub username: &'a [u8],
    /// Password, 1–255 octets.
    pub password: &'a [u8],
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &crate::addr::Domain::new(self.username).ok())
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What to ask the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig<'a> {
    /// Protocol. SOCKS4 needs an IPv4 target, SOCKS4a sends names to the proxy.
    pub version: Version,
    /// Username/password for SOCKS5 (offered as method 2 besides method 0).
    pub credentials: Option<Credentials<'a>>,
    /// The command.
    pub command: Command,
    /// The destination (for UDP ASSOCIATE: the address the client will send from, or zeros).
    pub target: Addr<'a>,
    /// SOCKS4/4a USERID (ignored by SOCKS5).
    pub user_id: &'a [u8],
}

impl<'a> ClientConfig<'a> {
    /// No credentials, empty USERID.
    pub const fn new(version: Version, command: Command, target: Addr<'a>) -> Self {
        Self {
            version,
            credentials: None,
            command,
            target,
            user_id: &[],
        }
    }
}

/// How the client runs GSS-API ([`Client::with_gssapi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GssapiOptions {
    /// The protection level to ask for.
    pub protection: ProtectionLevel,
    /// The weakest level accepted from the server (none accepts whatever it grants up to
    /// the request); a server granting less, or more than asked, fails the handshake.
    pub minimum: ProtectionLevel,
    /// Send the level in the unprotected NEC form (curl's `--socks5-gssapi-nec`) instead of
    /// wrapped as RFC 1961 says.
    pub nec: bool,
}

impl GssapiOptions {
    /// Ask for `protection`, accept nothing weaker, RFC 1961's protected form.
    pub const fn new(protection: ProtectionLevel) -> Self {
        Self {
            protection,
            minimum: protection,
            nec: false,
        }
    }
}

/// What the proxy said.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ClientEvent {
    /// The request succeeded. `bound` is the proxy's outbound address (CONNECT), the
    /// listening address to give the peer (BIND) or the UDP relay (UDP ASSOCIATE).
    Replied {
        /// BND.ADDR/BND.PORT (SOCKS4: DSTIP/DSTPORT).
        bound: Target,
    },
    /// BIND's second reply: the peer connected from this address.
    BindPeer {
        /// The peer's address.
        peer: Target,
    },
    /// The proxy chose GSS-API: call `gss_init_sec_context` with no input token, then
    /// [`Client::send_gssapi_token`], [`Client::gssapi_established`] or
    /// [`Client::gssapi_failed`].
    GssapiInit,
    /// The last `len` octets `feed` consumed are a piece of the proxy's context token;
    /// more follow.
    GssapiPiece {
        /// Octets in the piece.
        len: usize,
    },
    /// The proxy's context token is complete; its last piece is the last `len` octets `feed`
    /// consumed: call `gss_init_sec_context` with the token and answer as for
    /// [`GssapiInit`](Self::GssapiInit).
    GssapiContinue {
        /// Octets in the last piece.
        len: usize,
    },
    /// Wrap this level octet (`conf_req_flag` FALSE), then
    /// [`Client::send_gssapi_protection`].
    GssapiWrapProtection(ProtectionLevel),
    /// The proxy's protection-level answer is complete (last piece: the last `len` octets
    /// `feed` consumed): unwrap it, then [`Client::gssapi_protection`].
    GssapiUnwrapProtection {
        /// Octets in the last piece.
        len: usize,
    },
    /// A protection level that encapsulates is agreed. Taking this event queues the SOCKS
    /// request: from now on wrap everything [`Client::poll_transmit`] gives, and feed only
    /// unwrapped plaintext (input `feed` has not consumed is already encapsulated).
    GssapiProtected(ProtectionLevel),
}

/// Why the handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ClientError {
    /// The proxy sent a malformed message.
    Wire(WireError),
    /// The proxy accepts none of the offered methods.
    NoAcceptableMethod,
    /// The proxy chose a method that was not offered.
    UnexpectedMethod(Method),
    /// The proxy rejected the username/password.
    AuthFailed,
    /// The proxy refused the request (SOCKS5 REP).
    Rejected(ReplyCode),
    /// The proxy refused the request (SOCKS4 CD).
    Socks4Rejected(Socks4Code),
    /// SOCKS4 can only carry IPv4 destinations: use SOCKS4a or SOCKS5.
    AddressNotSupported,
    /// SOCKS4 has no UDP ASSOCIATE.
    CommandNotSupported,
    /// Credentials that are empty or longer than 255 octets.
    InvalidCredentials,
    /// The GSS-API sub-negotiation failed.
    Gssapi(GssapiError),
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => write!(f, "malformed reply from proxy: {e}"),
            Self::NoAcceptableMethod => f.write_str("proxy accepts none of the offered methods"),
            Self::UnexpectedMethod(m) => write!(
                f,
                "proxy chose method {:#04x}, which was not offered",
                u8::from(*m)
            ),
            Self::AuthFailed => f.write_str("proxy rejected the username/password"),
            Self::Rejected(code) => {
                write!(f, "proxy refused the request (reply {})", u8::from(*code))
            }
            Self::Socks4Rejected(code) => write!(
                f,
                "proxy refused the request (SOCKS4 code {})",
                u8::from(*code)
            ),
            Self::AddressNotSupported => f.write_str("SOCKS4 carries IPv4 destinations only"),
            Self::CommandNotSupported => f.write_str("SOCKS4 has no UDP ASSOCIATE"),
            Self::InvalidCredentials => f.write_str("username and password must be 1-255 octets"),
            Self::Gssapi(e) => write!(f, "GSS-API: {e}"),
        }
    }
}

impl core::error::Error for ClientError {}

/// Where a handshake stands: what the client waits for from the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Phase {
    /// The SOCKS5 method selection reply.
    Greeting,
    /// The RFC 1929 username/password reply.
    Authentication,
    /// The reply to the request (for BIND: the first, with the listening address).
    Request,
    /// BIND's second reply: the peer's connection.
    BindPeer,
    /// The handshake succeeded.
    Established,
    /// The handshake failed.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    Auth,
    /// The caller runs `gss_init_sec_context`.
    GssapiAwaitInit,
    /// The header of the proxy's next context token.
    GssapiContext,
    /// The header of the proxy's answer to the client's last context token.
    GssapiFinal,
    /// The octets of a token, `remaining` still to come.
    GssapiToken {
        token: Token,
        remaining: u16,
    },
    /// The caller wraps the requested level.
    GssapiAwaitWrap,
    /// The header of the proxy's protection-level answer.
    GssapiProtection,
    /// The caller unwraps the proxy's answer.
    GssapiAwaitUnwrap,
    Reply,
    BindPeer,
    Established,
    Failed,
}

impl State {
    const fn reads_input(self) -> bool {
        matches!(
            self,
            Self::Greeting
                | Self::Auth
                | Self::GssapiContext
                | Self::GssapiFinal
                | Self::GssapiToken { .. }
                | Self::GssapiProtection
                | Self::Reply
                | Self::BindPeer
        )
    }
}

/// Which token the client is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Context,
    /// The proxy's token after the client's context was complete: read past.
    Final,
    Protection,
    Nec,
}

enum Message {
    Method(Method),
    Auth(bool),
    Gssapi(GssapiHeader),
    Reply(Result<Target, ClientError>),
}

/// One client handshake with a SOCKS proxy. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    version: Version,
    command: Command,
    target: Target,
    user_id: Octets,
    username: Octets,
    password: Octets,
    gssapi: Option<GssapiOptions>,
    protection: Option<ProtectionLevel>,
    state: State,
    input: InBuffer<IN_LEN>,
    output: OutBuffer<OUT_LEN>,
    event: Option<ClientEvent>,
}

fn copy(bytes: &[u8]) -> Result<Octets, ClientError> {
    let mut v = Octets::new();
    v.extend_from_slice(bytes)
        .map_err(|_| ClientError::InvalidCredentials)?;
    Ok(v)
}

impl Client {
    /// Starts a handshake; the first message is queued for [`poll_transmit`](Self::poll_transmit).
    pub fn new(config: ClientConfig<'_>) -> Result<Self, ClientError> {
        Self::start(config, None)
    }

    /// Starts a SOCKS5 handshake that offers GSS-API (method 1), and username/password when
    /// `config` has credentials — not "no authentication", so a proxy cannot quietly drop
    /// the protection asked for. SOCKS4/4a cannot authenticate: a SOCKS4 `config` is refused
    /// with [`ClientError::NoAcceptableMethod`].
    pub fn with_gssapi(
        config: ClientConfig<'_>,
        gssapi: GssapiOptions,
    ) -> Result<Self, ClientError> {
        if config.version != Version::Socks5 {
            return Err(ClientError::NoAcceptableMethod);
        }
        Self::start(config, Some(gssapi))
    }

    fn start(config: ClientConfig<'_>, gssapi: Option<GssapiOptions>) -> Result<Self, ClientError> {
        let (username, password) = match config.credentials {
            Some(c) => {
                UserPassRequest::new(c.username, c.password)
                    .map_err(|_| ClientError::InvalidCredentials)?;
                (copy(c.username)?, copy(c.password)?)
            }
            None => (Octets::new(), Octets::new()),
        };
        let mut client = Self {
            version: config.version,
            command: config.command,
            target: config.target.to_target(),
            user_id: copy(config.user_id.get(..255).unwrap_or(config.user_id))?,
            username,
            password,
            gssapi,
            protection: None,
            state: State::Reply,
            input: InBuffer::default(),
            output: OutBuffer::default(),
            event: None,
        };
        match config.version {
            Version::Socks5 => {
                let methods: &[u8] = match (gssapi.is_some(), client.username.is_empty()) {
                    (false, true) => &[0],
                    (false, false) => &[0, 2],
                    (true, true) => &[1],
                    (true, false) => &[1, 2],
                };
                client.queue(&MethodRequest::new(methods)?);
                client.state = State::Greeting;
            }
            Version::Socks4 | Version::Socks4a => {
                if config.command == Command::UdpAssociate {
                    return Err(ClientError::CommandNotSupported);
                }
                let dst = match (config.target, config.version) {
                    (Addr::Ip(SocketAddr::V4(sa)), _) => Socks4Dst::Ip(*sa.ip()),
                    (Addr::Domain(name, _), Version::Socks4a) => Socks4Dst::Domain(name),
                    _ => return Err(ClientError::AddressNotSupported),
                };
                let user_id = client.user_id.clone();
                let port = config.target.port();
                client.queue(&Socks4Request {
                    command: config.command,
                    port,
                    dst,
                    user_id: &user_id,
                });
            }
        }
        Ok(client)
    }

    fn queue(&mut self, msg: &impl Emit) {
        // OUT_LEN holds the largest client message.
        let _ = self.output.push(msg);
    }

    fn queue_request(&mut self) {
        let target = self.target.clone();
        self.queue(&socks5::Request {
            command: self.command,
            dst: target.as_addr(),
        });
    }

    /// Moves queued output into `out` and returns its length; call after `new` and after
    /// every `feed` until it returns 0. 513 bytes always suffice.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        self.output.drain_into(out)
    }

    /// The next event, if any. Call after every `feed` and every answer until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let event = self.event.take();
        if let Some(ClientEvent::GssapiProtected(_)) = event {
            // Queued only now, so a caller cannot send the request before it knows to wrap it.
            self.queue_request();
        }
        event
    }

    /// Consumes bytes from the proxy and returns how many it used. After the last reply
    /// (see [`is_established`](Self::is_established)) the rest is payload from the
    /// destination. A partial reply is buffered and counts as consumed.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ClientError> {
        let mut consumed = 0;
        while self.state.reads_input() && self.event.is_none() {
            let rest = input.get(consumed..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            if let State::GssapiToken { token, remaining } = self.state {
                let take = rest.len().min(usize::from(remaining));
                consumed += take;
                // `take` ≤ `remaining`, a u16.
                let left = remaining - take as u16;
                if let Err(e) = self.on_token(token, rest.first().copied(), take, left) {
                    self.state = State::Failed;
                    return Err(e);
                }
                continue;
            }
            let (state, version) = (self.state, self.version);
            match self.input.next(
                rest,
                |b| parse_reply(state, version, b),
                ClientError::Wire(WireError::Truncated),
            ) {
                Ok(Next::NeedMore(n)) => consumed += n,
                Ok(Next::Message(msg, n)) => {
                    consumed += n;
                    if let Err(e) = self.on_message(msg) {
                        self.state = State::Failed;
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
        Ok(consumed)
    }

    fn on_message(&mut self, msg: Message) -> Result<(), ClientError> {
        match msg {
            Message::Method(Method::NoAuth) => {
                self.queue_request();
                self.state = State::Reply;
            }
            Message::Method(Method::UserPass) if !self.username.is_empty() => {
                let (u, p) = (self.username.clone(), self.password.clone());
                self.queue(&UserPassRequest::new(&u, &p)?);
                self.state = State::Auth;
            }
            Message::Method(Method::Gssapi) if self.gssapi.is_some() => {
                self.event = Some(ClientEvent::GssapiInit);
                self.state = State::GssapiAwaitInit;
            }
            Message::Method(Method::NoAcceptable) => return Err(ClientError::NoAcceptableMethod),
            Message::Method(other) => return Err(ClientError::UnexpectedMethod(other)),
            Message::Auth(true) => {
                self.queue_request();
                self.state = State::Reply;
            }
            Message::Auth(false) => return Err(ClientError::AuthFailed),
            Message::Gssapi(h) => self.on_gssapi_header(h)?,
            Message::Reply(outcome) => {
                let target = outcome?;
                if self.state == State::BindPeer {
                    self.event = Some(ClientEvent::BindPeer { peer: target });
                    self.state = State::Established;
                } else {
                    self.event = Some(ClientEvent::Replied { bound: target });
                    self.state = if self.command == Command::Bind {
                        State::BindPeer
                    } else {
                        State::Established
                    };
                }
            }
        }
        Ok(())
    }

    /// What the client waits for; read it before [`feed`](Self::feed) to know which stage a
    /// failure belongs to.
    ///
    /// ```
    /// use socksgate_core::client::{Client, ClientConfig, ClientError, Credentials, Phase};
    /// use socksgate_core::server::Version;
    /// use socksgate_core::wire::{Command, ReplyCode};
    /// use socksgate_core::Addr;
    ///
    /// let mut config = ClientConfig::new(
    ///     Version::Socks5, Command::Connect, Addr::Ip("127.0.0.1:80".parse().unwrap()));
    /// config.credentials = Some(Credentials { username: b"alice", password: b"s3cret" });
    /// let mut client = Client::new(config).unwrap();
    /// let mut out = [0u8; 600];
    /// let _ = client.poll_transmit(&mut out);
    /// assert_eq!(client.phase(), Phase::Greeting);
    /// client.feed(&[5, 2]).unwrap(); // username/password chosen
    /// let _ = client.poll_transmit(&mut out);
    /// assert_eq!(client.phase(), Phase::Authentication);
    /// client.feed(&[1, 0]).unwrap();
    /// let _ = client.poll_transmit(&mut out);
    /// assert_eq!(client.phase(), Phase::Request);
    /// let refused = [5, 5, 0, 1, 0, 0, 0, 0, 0, 0];
    /// assert_eq!(client.feed(&refused), Err(ClientError::Rejected(ReplyCode::ConnectionRefused)));
    /// assert_eq!(client.phase(), Phase::Failed);
    /// ```
    pub const fn phase(&self) -> Phase {
        match self.state {
            State::Greeting => Phase::Greeting,
            State::Auth
            | State::GssapiAwaitInit
            | State::GssapiContext
            | State::GssapiFinal
            | State::GssapiToken { .. }
            | State::GssapiAwaitWrap
            | State::GssapiProtection
            | State::GssapiAwaitUnwrap => Phase::Authentication,
            State::Reply => Phase::Request,
            State::BindPeer => Phase::BindPeer,
            State::Established => Phase::Established,
            State::Failed => Phase::Failed,
        }
    }

    fn on_gssapi_header(&mut self, h: GssapiHeader) -> Result<(), ClientError> {
        let nec = self.gssapi.is_some_and(|g| g.nec);
        let token = match (self.state, h.kind) {
            (_, GssapiMessageType::Abort) => return Err(ClientError::Gssapi(GssapiError::Aborted)),
            (State::GssapiContext, GssapiMessageType::Context) => Token::Context,
            (State::GssapiFinal, GssapiMessageType::Context) => Token::Final,
            (State::GssapiProtection, GssapiMessageType::Protection) if nec => {
                if h.len != 1 {
                    return Err(ClientError::Gssapi(GssapiError::BadProtectionMessage));
                }
                Token::Nec
            }
            (State::GssapiProtection, GssapiMessageType::Protection) => Token::Protection,
            (_, kind) => return Err(ClientError::Gssapi(GssapiError::UnexpectedMessage(kind))),
        };
        if h.len == 0 {
            self.on_token(token, None, 0, 0)
        } else {
            self.state = State::GssapiToken {
                token,
                remaining: h.len,
            };
            Ok(())
        }
    }

    /// `take` more octets of `token` arrived (`first` is the first of them), `left` to come.
    fn on_token(
        &mut self,
        token: Token,
        first: Option<u8>,
        take: usize,
        left: u16,
    ) -> Result<(), ClientError> {
        if left > 0 {
            self.state = State::GssapiToken {
                token,
                remaining: left,
            };
            if token != Token::Final {
                self.event = Some(ClientEvent::GssapiPiece { len: take });
            }
            return Ok(());
        }
        match token {
            Token::Context => {
                self.state = State::GssapiAwaitInit;
                self.event = Some(ClientEvent::GssapiContinue { len: take });
            }
            Token::Final => self.request_protection(),
            Token::Protection => {
                self.state = State::GssapiAwaitUnwrap;
                self.event = Some(ClientEvent::GssapiUnwrapProtection { len: take });
            }
            Token::Nec => {
                let octet = first.ok_or(ClientError::Gssapi(GssapiError::BadProtectionMessage))?;
                self.protected(octet)?;
            }
        }
        Ok(())
    }

    /// The context is established: send the level required.
    fn request_protection(&mut self) {
        let Some(options) = self.gssapi else {
            return;
        };
        if options.nec {
            self.queue(&GssapiMessage {
                kind: GssapiMessageType::Protection,
                token: &[options.protection.into()],
            });
            self.state = State::GssapiProtection;
        } else {
            self.event = Some(ClientEvent::GssapiWrapProtection(options.protection));
            self.state = State::GssapiAwaitWrap;
        }
    }

    /// The proxy granted `octet`: check it against the options, then send the request.
    fn protected(&mut self, octet: u8) -> Result<ProtectionLevel, ClientError> {
        let granted = ProtectionLevel::from(octet);
        let Some(strength) = granted.strength() else {
            return Err(ClientError::Gssapi(GssapiError::UnknownProtectionLevel(
                octet,
            )));
        };
        let (asked, minimum) = self.gssapi.map_or((None, None), |g| {
            (g.protection.strength(), g.minimum.strength())
        });
        if asked.is_some_and(|a| strength > a) || minimum.is_some_and(|m| strength < m) {
            return Err(ClientError::Gssapi(GssapiError::ProtectionRefused(granted)));
        }
        self.protection = Some(granted);
        self.state = State::Reply;
        if granted.encapsulates() {
            // The request is queued when the caller takes this event.
            self.event = Some(ClientEvent::GssapiProtected(granted));
        } else {
            self.queue_request();
        }
        Ok(granted)
    }

    /// Answers [`ClientEvent::GssapiInit`] / [`ClientEvent::GssapiContinue`] when
    /// `gss_init_sec_context` needs another round: queues the header of the caller's token of
    /// `len` octets. Send the queued output, then the token; the proxy's token comes next.
    ///
    /// Errors (nothing changed): no init step awaits an answer, or `len` > 65,535.
    pub fn send_gssapi_token(&mut self, len: usize) -> Result<(), UnexpectedCall> {
        if self.state != State::GssapiAwaitInit {
            return Err(UnexpectedCall);
        }
        let header = GssapiHeader::new(GssapiMessageType::Context, len).ok_or(UnexpectedCall)?;
        self.queue(&header);
        self.state = State::GssapiContext;
        Ok(())
    }

    /// Answers [`ClientEvent::GssapiInit`] / [`ClientEvent::GssapiContinue`] when the
    /// context is established. `Some(len)`: `gss_init_sec_context` produced a last token of
    /// `len` octets — its header is queued (send the token after it) and the proxy's answer
    /// to it is read past (RFC 1961 §3.4: possibly empty). `None`: nothing more to send.
    /// The protection-level negotiation follows.
    ///
    /// Errors as for [`send_gssapi_token`](Self::send_gssapi_token).
    pub fn gssapi_established(&mut self, last_token: Option<usize>) -> Result<(), UnexpectedCall> {
        if self.state != State::GssapiAwaitInit {
            return Err(UnexpectedCall);
        }
        match last_token {
            Some(len) => {
                let header =
                    GssapiHeader::new(GssapiMessageType::Context, len).ok_or(UnexpectedCall)?;
                self.queue(&header);
                self.state = State::GssapiFinal;
            }
            None => self.request_protection(),
        }
        Ok(())
    }

    /// Reports that the caller's GSS-API step failed: the handshake fails (close the
    /// connection).
    pub fn gssapi_failed(&mut self) -> Result<(), UnexpectedCall> {
        if !matches!(
            self.state,
            State::GssapiAwaitInit | State::GssapiAwaitWrap | State::GssapiAwaitUnwrap
        ) {
            return Err(UnexpectedCall);
        }
        self.state = State::Failed;
        Ok(())
    }

    /// Answers [`ClientEvent::GssapiWrapProtection`]: queues the header of the wrapped level
    /// octet (`len` octets); send the queued output, then the token.
    ///
    /// Errors (nothing changed): no wrap awaits an answer, or `len` > 65,535.
    pub fn send_gssapi_protection(&mut self, len: usize) -> Result<(), UnexpectedCall> {
        if self.state != State::GssapiAwaitWrap {
            return Err(UnexpectedCall);
        }
        let header = GssapiHeader::new(GssapiMessageType::Protection, len).ok_or(UnexpectedCall)?;
        self.queue(&header);
        self.state = State::GssapiProtection;
        Ok(())
    }

    /// Answers [`ClientEvent::GssapiUnwrapProtection`] with the unwrapped answer (one octet).
    /// `Ok(Ok(level))`: agreed; with a level that encapsulates,
    /// [`ClientEvent::GssapiProtected`] follows, otherwise the request is queued.
    /// `Ok(Err(e))`: not one octet, an unknown level, more than asked or less than the
    /// minimum — the handshake failed.
    pub fn gssapi_protection(
        &mut self,
        unwrapped: &[u8],
    ) -> Result<Result<ProtectionLevel, ClientError>, UnexpectedCall> {
        if self.state != State::GssapiAwaitUnwrap {
            return Err(UnexpectedCall);
        }
        let result = match unwrapped {
            [octet] => self.protected(*octet),
            _ => Err(ClientError::Gssapi(GssapiError::BadProtectionMessage)),
        };
        if result.is_err() {
            self.state = State::Failed;
        }
        Ok(result)
    }

    /// The GSS-API protection level, once agreed.
    pub const fn protection(&self) -> Option<ProtectionLevel> {
        self.protection
    }

    /// The handshake succeeded (for BIND: after the second reply).
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// The protocol in use.
    pub const fn version(&self) -> Version {
        self.version
    }

    /// The command requested.
    pub const fn command(&self) -> Command {
        self.command
    }
}

fn parse_reply(
    state: State,
    version: Version,
    bytes: &[u8],
) -> Result<Status<(Message, usize)>, ClientError> {
    Ok(match (state, version) {
        (State::Greeting, _) => match MethodReply::parse(bytes)? {
            Status::Complete((r, n)) => Status::Complete((Message::Method(r.method), n)),
            Status::Partial => Status::Partial,
        },
        (State::Auth, _) => match UserPassReply::parse(bytes)? {
            Status::Complete((r, n)) => Status::Complete((Message::Auth(r.is_success()), n)),
            Status::Partial => Status::Partial,
        },
        (State::GssapiContext | State::GssapiFinal | State::GssapiProtection, _) => {
            match GssapiHeader::parse(bytes)
                .map_err(|e| ClientError::Gssapi(GssapiError::Malformed(e)))?
            {
                Status::Complete((h, n)) => Status::Complete((Message::Gssapi(h), n)),
                Status::Partial => Status::Partial,
            }
        }
        (_, Version::Socks5) => match socks5::Reply::parse(bytes)? {
            Status::Complete((r, n)) => {
                let outcome = match r.code {
                    ReplyCode::Succeeded => Ok(r.bound.to_target()),
                    code => Err(ClientError::Rejected(code)),
                };
                Status::Complete((Message::Reply(outcome), n))
            }
            Status::Partial => Status::Partial,
        },
        (_, Version::Socks4 | Version::Socks4a) => match Socks4Reply::parse(bytes)? {
            Status::Complete((r, n)) => {
                let outcome = match r.code {
                    Socks4Code::Granted => Ok(Target::Ip(SocketAddr::V4(r.addr))),
                    code => Err(ClientError::Socks4Rejected(code)),
                };
                Status::Complete((Message::Reply(outcome), n))
            }
            Status::Partial => Status::Partial,
        },
    })
}
