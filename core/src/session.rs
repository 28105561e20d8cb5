//! One client connection of a SOCKS server: the handshake *and* every decision about it.
//!
//! A [`Session`] owns everything about a connection that is not I/O — the handshake's bytes
//! (through the [`server`] machine), the methods and versions offered, the
//! access rules before and after resolution, the reply code for every outcome, the BIND peer
//! check and the time limits. Its driver owns the socket, the clock, DNS, outbound sockets
//! and the relay, and hands the session *facts*: bytes read, the time, resolved addresses,
//! the result of a connect. The same session runs under tokio (native), embassy (firmware)
//! and the tests' in-memory driver, so every front end decides the same way.
//!
//! # Driving a session
//!
//! ```text
//! let mut s = Session::<N>::new(&policy, client_addr, now);
//! loop {
//!     while let Some(event) = s.poll_event() { act on it (below) }
//!     send s.pending_transmit(), then s.consume_transmit(n)   // until empty
//!     if established or closed: break
//!     read into s.recv_buffer() until s.poll_timeout():
//!         n bytes → s.handle_received(&policy, n, now)
//!         time's up → s.handle_timeout(now)
//!         EOF → the client left; drop the session
//! }
//! ```
//!
//! | [`Event`] | the driver | then calls |
//! |---|---|---|
//! | [`Authenticate`](Event::Authenticate) | checks [`credentials`](Session::credentials) | [`handle_auth`](Session::handle_auth) |
//! | [`GssapiPiece`](Event::GssapiPiece) | appends [`gssapi_token_piece`](Session::gssapi_token_piece) to the client's token | — |
//! | [`GssapiAccept`](Event::GssapiAccept) | appends the last piece, accepts the context token | [`send_gssapi_token`](Session::send_gssapi_token) or [`handle_gssapi_established`](Session::handle_gssapi_established), sends its token, [`handle_gssapi_sent`](Session::handle_gssapi_sent); or [`handle_gssapi_failed`](Session::handle_gssapi_failed) |
//! | [`GssapiUnwrapProtection`](Event::GssapiUnwrapProtection) | appends the last piece, unwraps it | [`handle_gssapi_protection`](Session::handle_gssapi_protection), then [`send_gssapi_protection`](Session::send_gssapi_protection), sends its token, `handle_gssapi_sent` |
//! | [`GssapiProtected`](Event::GssapiProtected) | switches to §5: [`take_encapsulated_input`](Session::take_encapsulated_input) | [`handle_input`](Session::handle_input) with unwrapped plaintext from now on |
//! | [`Resolve`](Event::Resolve) | resolves [`destination`](Session::destination)'s name | [`handle_resolved`](Session::handle_resolved) or [`handle_failure`](Session::handle_failure) |
//! | [`Connect`](Event::Connect) | connects | [`handle_opened`](Session::handle_opened) with the local address, or `handle_failure` |
//! | [`Bind`](Event::Bind) | listens | `handle_opened` with the listening address, then [`handle_bind_peer`](Session::handle_bind_peer) for each inbound connection |
//! | [`Associate`](Event::Associate) | opens a UDP relay socket | `handle_opened` with its address |
//! | [`Established`](Event::Established) | relays, starting with [`payload`](Session::payload) | — |
//! | [`Closed`](Event::Closed) | sends what is queued, then closes | — |
//!
//! The GSS-API rows are explained in [`crate::gssapi`]: the session streams the client's
//! tokens to the driver in pieces and never stores one, so GSS-API costs a session a few
//! octets of state and a front end that does not offer it nothing more.
//!
//! An answer may queue output and further events: after every `handle_*` call, poll events
//! and transmit again. [`poll_timeout`](Session::poll_timeout) is the next deadline (the
//! handshake, the connect, a BIND's wait); a driver that reaches it calls
//! [`handle_timeout`](Session::handle_timeout), which queues the reply the deadline calls for.
//!
//! # Guarantees
//!
//! * Input may be split or coalesced in any way: the events and bytes out are the same.
//! * Bytes a client pipelines after its request are never lost: once established, they are
//!   [`payload`](Session::payload), in order.
//! * A name the rules deny is refused before it is resolved; each resolved address is checked
//!   before the driver may connect to it ([`handle_resolved`](Session::handle_resolved) keeps
//!   only the allowed ones).
//! * With [protected destinations](crate::rules::ProtectedDestinations) on, no connection
//!   goes to a loopback, link-local, unspecified, multicast or own address — given as an
//!   address or resolved from a name — unless the deciding allow rule names it by address:
//!   the request gets REP 2 (SOCKS4: CD 91) and closes with [`Close::Protected`].
//! * Every request gets exactly one reply (two for a BIND that connects), in the client's
//!   protocol version, and a session ends with exactly one [`Event::Closed`] or
//!   [`Event::Established`].

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use crate::addr::Addr;
use crate::failure::Failure;
use crate::family::AddressFamily;
use crate::gssapi::GssapiError;
use crate::policy::{Authentication, Policy};
use crate::rules::{Action, Decision, Protection, Query, Refusal, Verdict};
use crate::server::{self, Octets, Request, Server, ServerError, Version};
use crate::time::Instant;
use crate::wire::gssapi::ProtectionLevel;
use crate::wire::{Command, Method, ReplyCode};

/// Something the driver must act on; see the [module documentation](self) for the answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// Check the RFC 1929 [`credentials`](Session::credentials).
    Authenticate,
    /// A piece of the client's GSS-API token is in
    /// [`gssapi_token_piece`](Session::gssapi_token_piece): append it; more follow. No answer.
    GssapiPiece,
    /// The client's context-establishment token is complete: append the last piece
    /// ([`gssapi_token_piece`](Session::gssapi_token_piece)), run `gss_accept_sec_context`
    /// on the token and answer with [`send_gssapi_token`](Session::send_gssapi_token) or
    /// [`handle_gssapi_established`](Session::handle_gssapi_established) — send the queued
    /// output, your token, then [`handle_gssapi_sent`](Session::handle_gssapi_sent) — or with
    /// [`handle_gssapi_failed`](Session::handle_gssapi_failed).
    GssapiAccept,
    /// The client's protected-form protection-level message is complete: append the last
    /// piece, `gss_unwrap` it and answer with
    /// [`handle_gssapi_protection`](Session::handle_gssapi_protection), then wrap the granted
    /// level and [`send_gssapi_protection`](Session::send_gssapi_protection) — queued output,
    /// your token, `handle_gssapi_sent` (or `handle_gssapi_failed`).
    GssapiUnwrapProtection,
    /// A protection level that encapsulates is agreed: send the queued output unprotected,
    /// then decode [`take_encapsulated_input`](Session::take_encapsulated_input) and all later
    /// input as §5 messages, give the session their unwrapped plaintext, and wrap all its
    /// output from now on ([`crate::gssapi`]).
    GssapiProtected(ProtectionLevel),
    /// Resolve the [`destination`](Session::destination)'s name (a CONNECT's destination or
    /// a BIND's expected peer).
    Resolve,
    /// Open a CONNECT's outbound connection: to this address, or with `None`, to the
    /// addresses [`handle_resolved`](Session::handle_resolved) kept, at the destination's
    /// port.
    Connect(Option<SocketAddr>),
    /// Listen for a BIND's inbound connection (from [`bind_peer`](Session::bind_peer)).
    Bind,
    /// Open the relay socket of a UDP ASSOCIATE.
    Associate,
    /// The handshake is over: relay (or run the association), starting with
    /// [`payload`](Session::payload).
    Established,
    /// The session is over: send what is queued, then close.
    Closed(Close),
}

/// Why a session ended without being established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Close {
    /// The client broke the protocol (its failure reply, if one exists, is queued).
    Protocol(ServerError),
    /// The credentials were rejected (the RFC 1929 failure status is queued).
    AuthFailed,
    /// The GSS-API sub-negotiation failed: the driver's GSS-API step
    /// ([`GssapiError::Failed`]), or the client's messages (the abort message is queued
    /// unless the client aborted).
    Gssapi(GssapiError),
    /// The client did not finish its handshake in time.
    HandshakeTimeout,
    /// The access rules deny the request (REP 2 is queued).
    Denied(Decision),
    /// The rules allow the destination, but not by naming its address, and it is protected
    /// ([`ProtectedDestinations`](crate::rules::ProtectedDestinations); REP 2 is queued).
    Protected(Protection),
    /// The command is not served here (REP 7 is queued).
    Unsupported(Command),
    /// The outbound side failed (its reply is queued).
    Failed(Failure),
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(e) => write!(f, "protocol: {e}"),
            Self::AuthFailed => f.write_str("authentication failed"),
            Self::Gssapi(e) => write!(f, "GSS-API: {e}"),
            Self::HandshakeTimeout => f.write_str("handshake timed out"),
            Self::Denied(d) => match d.rule {
                Some(i) => write!(f, "denied by rule {i}"),
                None => f.write_str("denied by the default action"),
            },
            Self::Protected(p) => write!(f, "protected destination ({p})"),
            Self::Unsupported(c) => write!(f, "command {c} not supported"),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

/// An answer came in a state where it does not apply (a driver bug); nothing changed.
pub use crate::server::UnexpectedCall;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Phase {
    /// Reading client messages.
    Handshake,
    Authenticating,
    /// The driver accepts a context token.
    GssapiAccept,
    /// The driver unwraps the protection-level message.
    GssapiUnwrap,
    /// The driver wraps the granted level.
    GssapiWrap,
    /// The driver sends its token after the queued header.
    GssapiSending,
    /// Protection agreed: the driver takes the still-encapsulated input.
    GssapiSwitch,
    Resolving,
    Connecting,
    Binding,
    /// BIND's first reply is out; waiting for the peer.
    AwaitingPeer,
    Associating,
    Established,
    Closed,
}

/// What the session holds for the driver while it acts.
#[derive(Clone)]
enum Held {
    None,
    Credentials {
        username: Octets,
        password: Octets,
    },
    /// A piece of a GSS-API token: `buf[start..end]`.
    GssapiPiece {
        start: usize,
        end: usize,
    },
    Request(Request),
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            // Never the password.
            Self::Credentials { username, .. } => f
                .debug_struct("Credentials")
                .field("username_len", &username.len())
                .finish_non_exhaustive(),
            Self::GssapiPiece { start, end } => write!(f, "GssapiPiece({start}..{end})"),
            Self::Request(r) => f.debug_tuple("Request").field(r).finish(),
        }
    }
}

/// One client connection with an input buffer of `N` bytes; see the
/// [module documentation](self).
///
/// `N` bounds how much a client may pipeline before its reply: what does not fit stays in
/// the socket until the session is established. Any `N` ≥ 1 works; a read's worth (a few
/// KiB) saves calls.
#[derive(Debug)]
pub struct Session<const N: usize> {
    server: Server,
    client: SocketAddr,
    phase: Phase,
    held: Held,
    /// The user authenticated with RFC 1929 or by the transport, for the rules and logs.
    user: Option<Octets>,
    /// Step one of the rules for the request.
    verdict: Option<Verdict>,
    /// A BIND's expected peer, once known (port 0: any port).
    bind_peer: Option<SocketAddr>,
    deadline: Option<Instant>,
    event: Option<Event>,
    /// The first reply code sent.
    reply: Option<ReplyCode>,
    /// Client bytes not yet given to the handshake machine: `buf[start..end]`.
    buf: [u8; N],
    start: usize,
    end: usize,
}

impl<const N: usize> Session<N> {
    /// A session for a client connected from `client` at `now`; the handshake must finish by
    /// `now` + the policy's handshake timeout.
    pub fn new(policy: &Policy<'_>, client: SocketAddr, now: Instant) -> Self {
        Self {
            server: Server::new(server_config(policy)),
            client,
            phase: Phase::Handshake,
            held: Held::None,
            user: None,
            verdict: None,
            bind_peer: None,
            deadline: Some(now + policy.timeouts.handshake),
            event: None,
            reply: None,
            buf: [0; N],
            start: 0,
            end: 0,
        }
    }

    /// Makes this a new session, as [`new`](Self::new) would, for drivers that recycle
    /// sessions: the buffer's old bytes are not cleared (they are never read before being
    /// overwritten).
    pub fn reset(&mut self, policy: &Policy<'_>, client: SocketAddr, now: Instant) {
        self.server = Server::new(server_config(policy));
        self.client = client;
        self.phase = Phase::Handshake;
        self.held = Held::None;
        self.user = None;
        self.verdict = None;
        self.bind_peer = None;
        self.deadline = Some(now + policy.timeouts.handshake);
        self.event = None;
        self.reply = None;
        self.start = 0;
        self.end = 0;
    }

    /// Starts the session with `user` already authenticated by the transport (a verified
    /// TLS client certificate), before any client byte: the user then counts for the rules,
    /// limits and records as if it had logged in, and the handshake asks for nothing more.
    /// SOCKS5 clients get method 0 ("no authentication"); SOCKS4/4a requests are accepted too,
    /// since the transport authenticated the client (their USERID stays a claim only).
    ///
    /// Errors: the session has already taken input or is past its handshake, or `user` is
    /// longer than 255 bytes (the longest RFC 1929 name).
    pub fn with_authenticated_user(&mut self, user: &[u8]) -> Result<(), UnexpectedCall> {
        let fresh = self.phase == Phase::Handshake
            && self.end == 0
            && self.user.is_none()
            && matches!(self.held, Held::None)
            && self.event.is_none();
        if !fresh {
            return Err(UnexpectedCall);
        }
        let name = Octets::from_slice(user).map_err(|_| UnexpectedCall)?;
        self.server = Server::new(server::Config::new(Authentication::None { socks4: true }));
        self.user = Some(name);
        Ok(())
    }

    // ---- input -------------------------------------------------------------------------

    /// Free space to read client bytes into, then report them with
    /// [`handle_received`](Self::handle_received). Empty when the session takes no more input
    /// now: after the handshake, or while `N` bytes wait for the driver's answer.
    pub fn recv_buffer(&mut self) -> &mut [u8] {
        if matches!(
            self.phase,
            Phase::Established | Phase::Closed | Phase::GssapiSwitch
        ) {
            return &mut [];
        }
        // A piece handed out is gone once the buffer moves.
        if matches!(self.held, Held::GssapiPiece { .. }) {
            self.held = Held::None;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == N && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Takes `n` bytes the driver read into [`recv_buffer`](Self::recv_buffer) at `now`.
    pub fn handle_received(&mut self, policy: &Policy<'_>, n: usize, now: Instant) {
        if matches!(self.held, Held::GssapiPiece { .. }) {
            self.held = Held::None;
        }
        self.end = self.end.saturating_add(n).min(N);
        self.process(policy, now);
    }

    /// Copies as much of `input` as the session takes now and processes it; returns how many
    /// bytes it took (offer the rest again after the next answer). For drivers that own
    /// their buffer; [`recv_buffer`](Self::recv_buffer) saves the copy.
    pub fn handle_input(&mut self, policy: &Policy<'_>, input: &[u8], now: Instant) -> usize {
        let free = self.recv_buffer();
        let n = free.len().min(input.len());
        if let (Some(dst), Some(src)) = (free.get_mut(..n), input.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.handle_received(policy, n, now);
        n
    }

    /// Feeds buffered input to the handshake machine until it needs an answer, the
    /// handshake ends, or the input runs out.
    fn process(&mut self, policy: &Policy<'_>, now: Instant) {
        while self.phase == Phase::Handshake && self.event.is_none() {
            let input = self.buf.get(self.start..self.end).unwrap_or_default();
            match self.server.feed(input) {
                Ok(n) => self.start += n,
                Err(ServerError::Gssapi(e)) => return self.close(Close::Gssapi(e)),
                Err(e) => return self.close(Close::Protocol(e)),
            }
            match self.server.poll_event() {
                Some(server::Event::Authenticate { username, password }) => {
                    self.held = Held::Credentials { username, password };
                    self.wait(Phase::Authenticating, Event::Authenticate);
                }
                Some(server::Event::GssapiPiece { len }) => {
                    self.hold_piece(len);
                    // Input is used up: the next read brings the rest of the token.
                    self.event = Some(Event::GssapiPiece);
                }
                Some(server::Event::GssapiContext { len }) => {
                    self.hold_piece(len);
                    self.wait(Phase::GssapiAccept, Event::GssapiAccept);
                }
                Some(server::Event::GssapiProtection { len }) => {
                    self.hold_piece(len);
                    self.wait(Phase::GssapiUnwrap, Event::GssapiUnwrapProtection);
                }
                Some(server::Event::GssapiProtected(level)) => {
                    if level.encapsulates() {
                        // Input still buffered is §5 messages: the driver's to decode.
                        self.wait(Phase::GssapiSwitch, Event::GssapiProtected(level));
                    }
                }
                Some(server::Event::Request(request)) => {
                    let (version, command) = (request.version, request.command);
                    self.held = Held::Request(request);
                    self.on_request(policy, version, command, now);
                }
                None => return, // needs more input
            }
        }
    }

    /// The last `len` octets the server consumed are a token piece.
    fn hold_piece(&mut self, len: usize) {
        self.held = Held::GssapiPiece {
            start: self.start.saturating_sub(len),
            end: self.start,
        };
    }

    fn wait(&mut self, phase: Phase, event: Event) {
        self.phase = phase;
        self.event = Some(event);
    }

    fn close(&mut self, reason: Close) {
        self.phase = Phase::Closed;
        self.deadline = None;
        // Credentials go at once; a request stays for the driver's records.
        if !matches!(self.held, Held::Request(_)) {
            self.held = Held::None;
        }
        self.event = Some(Event::Closed(reason));
    }

    fn query<'q>(&'q self, command: Command, dst: Addr<'q>) -> Query<'q> {
        Query {
            client: self.client.ip(),
            user: self.user.as_deref(),
            command,
            dst,
        }
    }

    /// The held request's first decisions: the command, then the rules before resolving.
    fn on_request(
        &mut self,
        policy: &Policy<'_>,
        version: Version,
        command: Command,
        now: Instant,
    ) {
        let served = match command {
            Command::Connect | Command::Bind => true,
            // RFC 1928 only: SOCKS4 has no UDP.
            Command::UdpAssociate => version == Version::Socks5,
            Command::Unknown(_) => false,
        };
        if !served || !policy.commands.contains(command) {
            return self.refuse(ReplyCode::CommandNotSupported, Close::Unsupported(command));
        }
        if command == Command::UdpAssociate {
            // DST is the client's own UDP source: datagrams meet the rules one by one.
            self.deadline = None;
            return self.wait(Phase::Associating, Event::Associate);
        }
        let Some(dst) = self.destination() else {
            return;
        };
        let verdict = policy.rules.evaluate(&self.query(command, dst));
        let ip = match dst {
            Addr::Ip(sa) => Some(sa),
            Addr::Domain(..) => None,
        };
        if let Verdict::Decided(d) = verdict {
            if !d.is_allowed() {
                return self.refuse(ReplyCode::NotAllowed, Close::Denied(d));
            }
            // A BIND peer of 0.0.0.0 is "any peer", not a destination.
            if let Some(sa) = ip
                && !(command == Command::Bind && sa.ip().is_unspecified())
                && let Err(p) = policy.rules.screen(d, sa.ip())
            {
                return self.refuse(ReplyCode::NotAllowed, Close::Protected(p));
            }
        }
        self.verdict = Some(verdict);
        self.deadline = Some(now + policy.timeouts.connect);
        match (ip, command) {
            (None, _) => self.wait(Phase::Resolving, Event::Resolve),
            (Some(sa), Command::Connect) => {
                self.wait(Phase::Connecting, Event::Connect(Some(sa)));
            }
            (Some(sa), _) => self.expect_peer(policy, sa),
        }
    }

    /// BIND: the expected peer is known; ask the driver to listen.
    fn expect_peer(&mut self, policy: &Policy<'_>, peer: SocketAddr) {
        let any = policy.bind_any_peer || peer.ip().is_unspecified();
        self.bind_peer = (!any).then_some(peer);
        // Listening is local and quick; the peer's wait is timed once the first reply is out.
        self.deadline = None;
        self.wait(Phase::Binding, Event::Bind);
    }

    /// Queues a failure reply to the request and closes.
    fn refuse(&mut self, code: ReplyCode, reason: Close) {
        let _ = self.server.respond(Err(code));
        self.reply.get_or_insert(code);
        self.close(reason);
    }

    // ---- answers -----------------------------------------------------------------------

    /// Answers [`Event::Authenticate`]: `ok` accepts the credentials (the user name then
    /// counts for the rules); otherwise the failure status is queued and the session closes.
    pub fn handle_auth(
        &mut self,
        policy: &Policy<'_>,
        ok: bool,
        now: Instant,
    ) -> Result<(), UnexpectedCall> {
        if self.phase != Phase::Authenticating {
            return Err(UnexpectedCall);
        }
        self.server.authenticate(ok)?;
        match core::mem::replace(&mut self.held, Held::None) {
            Held::Credentials { username, .. } if ok => {
                self.user = Some(username);
                self.resume(policy, now);
            }
            _ => self.close(Close::AuthFailed),
        }
        Ok(())
    }

    /// Back to reading the client once an answer let the handshake go on.
    fn resume(&mut self, policy: &Policy<'_>, now: Instant) {
        self.held = Held::None;
        self.phase = Phase::Handshake;
        self.process(policy, now);
    }

    /// Answers [`Event::GssapiAccept`] when `gss_accept_sec_context` needs another round:
    /// queues the header of the driver's output token of `len` octets. Send the queued
    /// output, then the token itself, then call [`handle_gssapi_sent`](Self::handle_gssapi_sent);
    /// the session then reads the client's next token.
    ///
    /// Errors (nothing changed): no context token awaits an answer, or `len` > 65,535.
    pub fn send_gssapi_token(&mut self, len: usize) -> Result<(), UnexpectedCall> {
        if self.phase != Phase::GssapiAccept {
            return Err(UnexpectedCall);
        }
        self.server.send_gssapi_token(len)?;
        self.sending();
        Ok(())
    }

    /// Waits for [`handle_gssapi_sent`](Self::handle_gssapi_sent): input the client
    /// pipelined must not be answered before the driver's token is out.
    fn sending(&mut self) {
        self.held = Held::None;
        self.phase = Phase::GssapiSending;
    }

    /// Reports that the driver sent its token (after the output queued with its header by
    /// [`send_gssapi_token`](Self::send_gssapi_token),
    /// [`handle_gssapi_established`](Self::handle_gssapi_established) or
    /// [`send_gssapi_protection`](Self::send_gssapi_protection)): the session goes on with
    /// the client's input, buffered or to come.
    pub fn handle_gssapi_sent(
        &mut self,
        policy: &Policy<'_>,
        now: Instant,
    ) -> Result<(), UnexpectedCall> {
        if self.phase != Phase::GssapiSending {
            return Err(UnexpectedCall);
        }
        self.resume(policy, now);
        Ok(())
    }

    /// Answers [`Event::GssapiAccept`] when the context is established: `principal` (the
    /// display name of the client's principal, e.g. `alice@EXAMPLE.ORG`) becomes the
    /// session's [`user`](Self::user) for the rules, limits and records, and the header of
    /// the driver's last output token of `len` octets is queued (0 when there is none: an
    /// empty token tells the client the server is ready, RFC 1961 §3.4). Send the queued
    /// output, then the token, then call [`handle_gssapi_sent`](Self::handle_gssapi_sent);
    /// the protection-level negotiation follows.
    ///
    /// A principal longer than 255 octets cannot be a user: the abort message is queued and
    /// the session closes with [`GssapiError::PrincipalTooLong`].
    ///
    /// Errors (nothing changed): no context token awaits an answer, or `len` > 65,535.
    pub fn handle_gssapi_established(
        &mut self,
        principal: &[u8],
        len: usize,
    ) -> Result<(), UnexpectedCall> {
        if self.phase != Phase::GssapiAccept || len > usize::from(u16::MAX) {
            return Err(UnexpectedCall);
        }
        let Ok(name) = Octets::from_slice(principal) else {
            self.server.gssapi_failed()?;
            self.close(Close::Gssapi(GssapiError::PrincipalTooLong));
            return Ok(());
        };
        self.server.gssapi_established(len)?;
        self.user = Some(name);
        self.sending();
        Ok(())
    }

    /// Reports that the driver's GSS-API step failed — accepting the context, unwrapping or
    /// wrapping the protection level: queues the abort message and closes with
    /// [`Close::Gssapi`]`(`[`GssapiError::Failed`]`)`. Log the GSS-API status yourself.
    pub fn handle_gssapi_failed(&mut self) -> Result<(), UnexpectedCall> {
        if !matches!(
            self.phase,
            Phase::GssapiAccept | Phase::GssapiUnwrap | Phase::GssapiWrap
        ) {
            return Err(UnexpectedCall);
        }
        self.server.gssapi_failed()?;
        self.close(Close::Gssapi(GssapiError::Failed));
        Ok(())
    }

    /// Answers [`Event::GssapiUnwrapProtection`] with the unwrapped message, which must be
    /// the one octet of the level the client requires. Returns the level granted
    /// ([`ProtectionLevels::grant`](crate::policy::ProtectionLevels::grant) of the policy):
    /// wrap that octet (`conf_req_flag` FALSE) and answer with
    /// [`send_gssapi_protection`](Self::send_gssapi_protection). `None`: refused — the
    /// abort message is queued and the session closes with [`Close::Gssapi`].
    pub fn handle_gssapi_protection(
        &mut self,
        unwrapped: &[u8],
    ) -> Result<Option<ProtectionLevel>, UnexpectedCall> {
        if self.phase != Phase::GssapiUnwrap {
            return Err(UnexpectedCall);
        }
        match self.server.gssapi_protection(unwrapped)? {
            Ok(level) => {
                self.held = Held::None;
                self.phase = Phase::GssapiWrap;
                Ok(Some(level))
            }
            Err(ServerError::Gssapi(e)) => {
                self.close(Close::Gssapi(e));
                Ok(None)
            }
            Err(e) => {
                self.close(Close::Protocol(e));
                Ok(None)
            }
        }
    }

    /// Queues the header of the driver's wrapped level octet (`len` octets): send the queued
    /// output, then the token, then call [`handle_gssapi_sent`](Self::handle_gssapi_sent).
    /// With a level that encapsulates, [`Event::GssapiProtected`] follows; with none, the
    /// request is read as usual.
    ///
    /// Errors (nothing changed): no granted level waits, or `len` > 65,535.
    pub fn send_gssapi_protection(&mut self, len: usize) -> Result<(), UnexpectedCall> {
        if self.phase != Phase::GssapiWrap {
            return Err(UnexpectedCall);
        }
        self.server.send_gssapi_protection(len)?;
        self.sending();
        Ok(())
    }

    /// After [`Event::GssapiProtected`]: the octets the session had read past the
    /// negotiation, still encapsulated — decode them first, then what the socket gives. From
    /// then on [`recv_buffer`](Self::recv_buffer), `handle_received` and `handle_input` take
    /// unwrapped plaintext. The slice stays valid until the next call that takes input.
    pub fn take_encapsulated_input(&mut self) -> &[u8] {
        if self.phase != Phase::GssapiSwitch {
            return &[];
        }
        self.phase = Phase::Handshake;
        let (start, end) = (self.start, self.end);
        self.start = end;
        self.buf.get(start..end).unwrap_or_default()
    }

    /// Answers [`Event::Resolve`] with the name's addresses, in the order to try them.
    ///
    /// Applies the rules to each address (step two, when step one left the outcome to the
    /// address), moves the allowed ones to the front in their order and returns how many
    /// there are: the driver connects only to `addrs[..n]`. With none allowed the session
    /// refuses (REP 2; REP 4 for an empty list) and closes, and `n` is 0.
    pub fn handle_resolved(
        &mut self,
        policy: &Policy<'_>,
        addrs: &mut [IpAddr],
    ) -> Result<usize, UnexpectedCall> {
        if self.phase != Phase::Resolving {
            return Err(UnexpectedCall);
        }
        let (Some(dst), Some(command)) = (self.destination(), self.command()) else {
            return Err(UnexpectedCall);
        };
        let port = dst.port();
        if addrs.is_empty() {
            self.refuse(
                ReplyCode::HostUnreachable,
                Close::Failed(Failure::NameNotFound),
            );
            return Ok(0);
        }
        let mut kept = 0;
        let mut refusal: Refusal = Refusal::Denied(Decision {
            action: Action::Deny,
            rule: None,
        });
        for i in 0..addrs.len() {
            let Some(&ip) = addrs.get(i) else { break };
            if let Err(r) = self.check_resolved(policy, ip) {
                refusal = r;
                continue;
            }
            addrs.swap(kept, i);
            kept += 1;
        }
        // The preferred family first (the kept ones are all of a family in use).
        let preference = if self.address_family(policy).prefers_ipv6() {
            AddressFamily::PreferIpv6
        } else {
            AddressFamily::PreferIpv4
        };
        preference.order(addrs.get_mut(..kept).unwrap_or_default());
        match addrs.first().filter(|_| kept > 0) {
            None => {
                // Every address was refused by step two or is protected.
                let _ = self.handle_denied(refusal);
            }
            Some(&ip) if command == Command::Bind => {
                self.expect_peer(policy, SocketAddr::new(ip, port));
            }
            Some(_) => self.wait(Phase::Connecting, Event::Connect(None)),
        }
        Ok(kept)
    }

    /// Step two of the rules for one resolved address, for drivers that connect while
    /// still resolving (Happy Eyeballs) instead of calling
    /// [`handle_resolved`](Self::handle_resolved): `Err` when the driver must not connect to
    /// `ip` — the rules deny it (with the deciding rule), or it is a protected address
    /// ([`ProtectedDestinations`](crate::rules::ProtectedDestinations)) the deciding rule does
    /// not name. When every address was refused, report it with
    /// [`handle_denied`](Self::handle_denied).
    pub fn check_resolved(&self, policy: &Policy<'_>, ip: IpAddr) -> Result<(), Refusal> {
        let deny = Refusal::Denied(Decision {
            action: Action::Deny,
            rule: None,
        });
        let (Some(dst), Some(command)) = (self.destination(), self.command()) else {
            return Err(deny);
        };
        let d = match self.verdict {
            Some(Verdict::Decided(d)) if d.is_allowed() => d,
            Some(Verdict::NeedsResolution) => {
                let d = policy
                    .rules
                    .evaluate_resolved(&self.query(command, dst), ip);
                if !d.is_allowed() {
                    return Err(Refusal::Denied(d));
                }
                d
            }
            _ => return Err(deny),
        };
        // A BIND peer of 0.0.0.0 is "any peer", not a destination.
        if command == Command::Bind && ip.is_unspecified() {
            return Ok(());
        }
        // The family applies to names; an address given as such is taken as given.
        if let Addr::Domain(..) = dst {
            let family = policy.address_families.for_decision(Some(d));
            if !family.allows(ip) {
                return Err(Refusal::Family(family));
            }
        }
        policy.rules.screen(d, ip).map_err(Refusal::Protected)
    }

    /// The address family to resolve the request's name in: the family of the rule that
    /// allowed the request before resolving, or the policy's default when no rule decided
    /// yet (each resolved address is then checked against its own deciding rule's family by
    /// [`check_resolved`](Self::check_resolved)). Query only the families it
    /// [uses](AddressFamily::uses_ipv4), the [preferred](AddressFamily::prefers_ipv6) one
    /// first.
    pub fn address_family(&self, policy: &Policy<'_>) -> AddressFamily {
        policy.address_families.for_decision(self.decision())
    }

    /// Reports that [`check_resolved`](Self::check_resolved) refused every address of the
    /// name (the last refusal given; a [`Decision`] converts): queues REP 2 (REP 4 when the
    /// addresses were of a family not in use) and closes.
    pub fn handle_denied(&mut self, refusal: impl Into<Refusal>) -> Result<(), UnexpectedCall> {
        if self.phase != Phase::Resolving {
            return Err(UnexpectedCall);
        }
        match refusal.into() {
            Refusal::Denied(d) => self.refuse(ReplyCode::NotAllowed, Close::Denied(d)),
            Refusal::Protected(p) => self.refuse(ReplyCode::NotAllowed, Close::Protected(p)),
            Refusal::Family(_) => {
                let failure = Failure::NoAddressInFamily;
                self.refuse(failure.reply(), Close::Failed(failure));
            }
        }
        Ok(())
    }

    /// Reports that the outbound side is open: `bound` is what the reply carries — the
    /// outbound connection's local address (CONNECT), the listening socket (BIND) or the
    /// relay socket (UDP ASSOCIATE). Report success only once the socket really exists.
    ///
    /// A CONNECT may also be answered straight from [`Event::Resolve`] by a driver that
    /// reaches the destination another way (through an upstream proxy, which resolves).
    pub fn handle_opened(
        &mut self,
        policy: &Policy<'_>,
        bound: SocketAddr,
        now: Instant,
    ) -> Result<(), UnexpectedCall> {
        let next = match (self.phase, self.command()) {
            (Phase::Connecting | Phase::Resolving, Some(Command::Connect))
            | (Phase::Associating, _) => Phase::Established,
            (Phase::Binding, _) => Phase::AwaitingPeer,
            _ => return Err(UnexpectedCall),
        };
        self.server.respond(Ok(bound))?;
        self.reply.get_or_insert(ReplyCode::Succeeded);
        match next {
            Phase::AwaitingPeer => {
                self.phase = next;
                self.deadline = Some(now + policy.timeouts.bind);
            }
            _ => self.establish(),
        }
        Ok(())
    }

    fn establish(&mut self) {
        self.phase = Phase::Established;
        self.deadline = None;
        self.event = Some(Event::Established);
    }

    /// Reports that resolving, connecting, listening or accepting failed: queues the reply
    /// for `failure` and closes.
    pub fn handle_failure(&mut self, failure: Failure) -> Result<(), UnexpectedCall> {
        match self.phase {
            Phase::Resolving | Phase::Connecting | Phase::Binding | Phase::Associating => {
                self.refuse(failure.reply(), Close::Failed(failure));
            }
            Phase::AwaitingPeer => {
                let _ = self.server.respond_bind_peer(Err(failure.reply()));
                self.close(Close::Failed(failure));
            }
            _ => return Err(UnexpectedCall),
        }
        Ok(())
    }

    /// Offers a BIND's inbound connection from `peer`. Returns `Ok(true)` when it is the
    /// expected peer — its address, and its port when the request named one — or any peer was
    /// allowed: the second reply is queued and the session is established. `Ok(false)`: a
    /// stranger; close that connection and keep waiting.
    pub fn handle_bind_peer(&mut self, peer: SocketAddr) -> Result<bool, UnexpectedCall> {
        if self.phase != Phase::AwaitingPeer {
            return Err(UnexpectedCall);
        }
        let expected = self.bind_peer.is_none_or(|want| {
            want.ip().to_canonical() == peer.ip().to_canonical()
                && (want.port() == 0 || want.port() == peer.port())
        });
        if expected {
            self.server.respond_bind_peer(Ok(peer))?;
            self.establish();
        }
        Ok(expected)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if a deadline is running.
    #[must_use]
    pub const fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Tells the session the time; past its deadline it ends: a handshake that did not
    /// finish closes, a CONNECT or BIND still waiting gets REP 6 (SOCKS4: CD 91).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|due| now < due) {
            return;
        }
        match self.phase {
            Phase::Handshake
            | Phase::Authenticating
            | Phase::GssapiAccept
            | Phase::GssapiUnwrap
            | Phase::GssapiWrap
            | Phase::GssapiSending
            | Phase::GssapiSwitch => {
                self.close(Close::HandshakeTimeout);
            }
            _ => {
                let _ = self.handle_failure(Failure::TimedOut);
            }
        }
    }

    // ---- output ------------------------------------------------------------------------

    /// The next event. Poll after every `handle_*` call until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// Moves queued output into `out`; returns its length. Send output after every
    /// `handle_*` call until this returns 0; [`server::MAX_MESSAGE_LEN`] bytes always suffice.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        self.server.poll_transmit(out)
    }

    /// The queued output, for drivers that write from it directly; follow with
    /// [`consume_transmit`](Self::consume_transmit).
    pub fn pending_transmit(&self) -> &[u8] {
        self.server.pending_transmit()
    }

    /// Drops the first `n` bytes of queued output (after writing them).
    pub fn consume_transmit(&mut self, n: usize) {
        self.server.consume_transmit(n);
    }

    /// Once established: the bytes the client sent after its request, to relay first.
    pub fn payload(&self) -> &[u8] {
        match self.phase {
            Phase::Established => self.buf.get(self.start..self.end).unwrap_or_default(),
            _ => &[],
        }
    }

    /// Once established: the whole input buffer, for a driver that reuses it for the relay,
    /// with the [`payload`](Self::payload) moved to its start; returns the buffer and the
    /// payload's length.
    pub fn release_buffer(&mut self) -> Option<(&mut [u8; N], usize)> {
        if self.phase != Phase::Established {
            return None;
        }
        self.buf.copy_within(self.start..self.end, 0);
        let len = self.end - self.start;
        self.start = 0;
        self.end = len;
        Some((&mut self.buf, len))
    }

    // ---- what the session knows -------------------------------------------------------

    /// The RFC 1929 credentials while [`Event::Authenticate`] awaits its answer. The
    /// password must never be logged or stored.
    pub fn credentials(&self) -> Option<(&[u8], &[u8])> {
        match &self.held {
            Held::Credentials { username, password } => Some((username, password)),
            _ => None,
        }
    }

    /// The piece of the client's GSS-API token that [`Event::GssapiPiece`],
    /// [`Event::GssapiAccept`] or [`Event::GssapiUnwrapProtection`] announced (empty for an
    /// empty token); `None` otherwise. Valid until the next call that takes input.
    pub fn gssapi_token_piece(&self) -> Option<&[u8]> {
        match self.held {
            Held::GssapiPiece { start, end } => self.buf.get(start..end),
            _ => None,
        }
    }

    /// The request, once it has arrived.
    pub fn request(&self) -> Option<&Request> {
        match &self.held {
            Held::Request(r) => Some(r),
            _ => None,
        }
    }

    /// The request's destination as the rules see it: a name that spells an IP address is
    /// that address. For BIND, the expected peer as sent; for UDP ASSOCIATE, the client's
    /// announced source.
    pub fn destination(&self) -> Option<Addr<'_>> {
        self.request().map(|r| r.target.as_addr().normalized())
    }

    /// Step one of the rules for the request, when it decided without the address: which
    /// rule allowed it (a driver may route by it, e.g. through an upstream proxy).
    pub fn decision(&self) -> Option<Decision> {
        self.verdict.and_then(Verdict::decision)
    }

    /// A BIND's expected peer once known: only connections from its address (and its port,
    /// unless 0) are accepted. `None`: any peer.
    pub const fn bind_peer(&self) -> Option<SocketAddr> {
        self.bind_peer
    }

    /// The client's address.
    pub const fn client(&self) -> SocketAddr {
        self.client
    }

    /// The user authenticated with RFC 1929, GSS-API (the principal's display name) or by
    /// the transport ([`with_authenticated_user`](Self::with_authenticated_user)), if any (not
    /// a SOCKS4 USERID).
    pub fn user(&self) -> Option<&[u8]> {
        self.user.as_deref()
    }

    /// The client's protocol, once known.
    pub const fn version(&self) -> Option<Version> {
        self.server.version()
    }

    /// The SOCKS5 method selected, once negotiated.
    pub const fn method(&self) -> Option<Method> {
        self.server.method()
    }

    /// The GSS-API protection level, once agreed: with any but
    /// [`None`](ProtectionLevel::None), everything after the negotiation is encapsulated.
    pub const fn gssapi_protection(&self) -> Option<ProtectionLevel> {
        self.server.protection()
    }

    /// The requested command, once the request has arrived.
    pub const fn command(&self) -> Option<Command> {
        self.server.command()
    }

    /// The first reply's code (for SOCKS4, the SOCKS5 code it was converted from), once sent.
    pub const fn reply(&self) -> Option<ReplyCode> {
        self.reply
    }

    /// Whether the handshake succeeded ([`Event::Established`] was queued).
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// Whether the session ended without being established ([`Event::Closed`] was queued).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
}

/// The handshake a policy asks for.
fn server_config(policy: &Policy<'_>) -> server::Config {
    let config = server::Config::new(policy.authentication);
    #[cfg(feature = "gssapi")]
    let config = config.with_gssapi(policy.gssapi);
    config
}
