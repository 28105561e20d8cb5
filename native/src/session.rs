//! One client connection: the SOCKS handshake (driven by `socksgate_core::server`), then the
//! command.
//!
//! Every protocol byte goes through the core: this module only moves bytes between the socket
//! and the state machine, answers its events (credentials, the request) and runs the command.
//! On any failure the queued reply is flushed and the connection closed.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use socksgate_core::server::{self, Event, Octets, Request, ServerError, Version};
use socksgate_core::wire::{Command, ReplyCode};
use socksgate_core::{Addr, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, warn};

use crate::access::{AccessRules, Pass};
use crate::config::Config;
use crate::connect::ConnectError;
use crate::limits::{Sessions, Slot};
use crate::metrics::Metrics;
use crate::pool::{Handshake, HandshakeIo, Lease};
use crate::resolve::{self, Resolver};
use crate::throttle::{Admission, AuthThrottle};
use crate::users::Users;
use crate::{bind, relay, udp_relay};
use socksgate_core::rules::Query;

/// Password checks (Argon2) allowed to run at the same time.
static AUTH_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// How long a failed connection waits for the client to close after the failure reply.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything connections share.
#[derive(Debug)]
pub struct Shared {
    /// The effective configuration.
    pub config: Config,
    /// Users, when username/password authentication is required.
    pub users: Option<Arc<Users>>,
    /// Compiled access rules.
    pub rules: AccessRules,
    /// The resolver.
    pub resolver: Resolver,
    /// Counters for `--metrics`.
    pub metrics: Arc<Metrics>,
    /// Per-client back-off after failed logins (kept across reloads).
    pub auth_throttle: Arc<AuthThrottle>,
    /// Open sessions, for the `[limits]` and draining (kept across reloads).
    pub sessions: Arc<Sessions>,
}

impl Shared {
    /// The core's handshake configuration for these settings.
    pub fn server_config(&self) -> server::Config {
        let auth = self.users.is_some();
        server::Config {
            no_auth: !auth,
            user_pass: auth,
            gssapi: false,
            socks4: self.config.socks4 && !auth,
        }
    }
}

/// Why a session ended early (logged at debug or info level; the client already got its reply).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (the core queued the matching failure reply).
    #[error("protocol: {0}")]
    Protocol(ServerError),
    /// The client closed before finishing the handshake.
    #[error("client closed during handshake")]
    Eof,
    /// The handshake took longer than the handshake timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Username/password rejected.
    #[error("authentication failed for user {0:?}")]
    AuthFailed(String),
    /// The request failed or was refused (reply already sent).
    #[error("{0}")]
    Refused(String),
}

/// A client connection while it negotiates and runs its command: the socket, the leased
/// handshake state (the core and unconsumed input) and what the access log needs.
pub(crate) struct Conn<'h> {
    pub(crate) stream: TcpStream,
    metrics: &'h Metrics,
    io: &'h mut HandshakeIo,
    /// The first reply sent (for the access log).
    pub(crate) reply: Option<ReplyCode>,
    /// Payload bytes relayed (up, down), set when the command ends (for the access log).
    pub(crate) bytes: (u64, u64),
}

impl<'h> Conn<'h> {
    fn new(stream: TcpStream, io: &'h mut HandshakeIo, metrics: &'h Metrics) -> Self {
        Self {
            stream,
            metrics,
            io,
            reply: None,
            bytes: (0, 0),
        }
    }

    /// Sends everything the core has queued.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        // Written straight from the core's queue: no copy, no buffer in the session.
        while !self.io.server.pending_transmit().is_empty() {
            let n = self.stream.write(self.io.server.pending_transmit()).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.io.server.consume_transmit(n);
        }
        Ok(())
    }

    /// Flushes the failure reply and closes our write side, so the client sees the reply and
    /// then EOF.
    pub(crate) async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        // Lingering close: closing with unread client bytes (a pipelined payload) makes the
        // kernel send RST, which can destroy the reply before the client reads it. Read and
        // discard (into the handshake buffer, no longer needed) until the client closes too,
        // for a short while.
        let Self { stream, io, .. } = self;
        let drain = async {
            while let Ok(n) = stream.read(&mut io.buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Client bytes that arrived after the request (the early payload), copied out of the
    /// handshake buffer; usually empty, which allocates nothing.
    pub(crate) fn take_leftover(&mut self) -> Vec<u8> {
        let early = self
            .io
            .buf
            .get(self.io.start..self.io.end)
            .unwrap_or_default()
            .to_vec();
        self.io.start = 0;
        self.io.end = 0;
        early
    }

    /// Feeds buffered input to the core.
    fn feed(&mut self) -> Result<(), ServerError> {
        let io = &mut *self.io;
        let input = io.buf.get(io.start..io.end).unwrap_or_default();
        let n = io.server.feed(input)?;
        io.start += n;
        Ok(())
    }

    /// Reads more input once everything buffered has been fed; `false` on EOF.
    async fn read_more(&mut self) -> std::io::Result<bool> {
        let io = &mut *self.io;
        io.start = 0;
        io.end = 0;
        let n = self.stream.read(&mut io.buf).await?;
        io.end = n;
        Ok(n > 0)
    }

    /// Answers the request: reports the reply, flushes it.
    pub(crate) async fn respond(
        &mut self,
        outcome: Result<SocketAddr, ReplyCode>,
    ) -> std::io::Result<()> {
        let code = outcome.err().unwrap_or(ReplyCode::Succeeded);
        self.metrics.reply(code);
        self.reply.get_or_insert(code);
        let _ = self.io.server.respond(outcome);
        self.flush().await
    }

    /// BIND's second reply.
    pub(crate) async fn respond_bind_peer(
        &mut self,
        outcome: Result<SocketAddr, ReplyCode>,
    ) -> std::io::Result<()> {
        let _ = self.io.server.respond_bind_peer(outcome);
        self.flush().await
    }
}

/// How a session ended, for the access log and `socksgate_sessions_total{outcome}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    /// The request succeeded (reply 0 / 90) and the command ran to its end.
    Succeeded,
    /// The request got a failure reply (denied, unreachable, refused, …).
    Refused,
    /// Username/password rejected.
    AuthFailed,
    /// Malformed, timed out or abandoned before a request.
    #[default]
    HandshakeFailed,
    /// Refused by a `[limits]` setting.
    Limited,
    /// A request arrived but the connection failed before a reply.
    Error,
}

impl Outcome {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Refused => "refused",
            Self::AuthFailed => "auth_failed",
            Self::HandshakeFailed => "handshake_failed",
            Self::Limited => "limited",
            Self::Error => "error",
        }
    }
}

/// The destination as the access log shows it: an address as such (no text kept), a name
/// as text (names are rarer and cost a lookup anyway), `-` before a request.
#[derive(Debug, Default)]
enum Dst {
    #[default]
    None,
    Ip(SocketAddr),
    Name(String),
}

impl std::fmt::Display for Dst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(sa) => sa.fmt(f),
            Self::Name(name) => f.write_str(name),
            Self::None => f.write_str("-"),
        }
    }
}

/// What the access log line says about a session.
#[derive(Debug, Default)]
struct Record {
    version: Option<Version>,
    command: Option<Command>,
    dst: Dst,
    /// The user name as sent (RFC 1929 names are octets).
    user: Option<Vec<u8>>,
    reply: Option<ReplyCode>,
    bytes: (u64, u64),
    outcome: Outcome,
}

impl Record {
    /// The reply code as sent: SOCKS5 REP, or SOCKS4 CD (90 granted, 91 rejected).
    fn reply_code(&self) -> Option<u8> {
        let code = self.reply?;
        Some(match self.version {
            Some(Version::Socks5) | None => u8::from(code),
            Some(_) if code == ReplyCode::Succeeded => 90,
            Some(_) => 91,
        })
    }
}

/// Serves one accepted connection to the end, then writes its access-log line (target
/// `socksgate::access`): client, user, command, destination, reply code, bytes each way,
/// duration, outcome and the error that ended it, if any. `local` is the connection's local
/// address when the caller knows it (a listener on a specific address); `None` asks the
/// socket.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: Arc<Shared>,
) {
    let span = tracing::info_span!("session", client = %peer);
    async move {
        let started = std::time::Instant::now();
        let mut record = Record::default();
        // The access-log line below is the one record of a session; its error, if any,
        // goes there rather than into a line of its own.
        let error = run(stream, peer, local, &shared, &mut record).await.err();
        let duration = started.elapsed();
        let command = record.command.map_or_else(|| "none".into(), command_name);
        info!(
            target: "socksgate::access",
            client = %peer,
            user = %record.user.as_deref().map_or("-".into(), String::from_utf8_lossy),
            %command,
            dst = %record.dst,
            reply = record.reply_code().map_or(-1, i16::from),
            up = record.bytes.0,
            down = record.bytes.1,
            duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            outcome = record.outcome.as_str(),
            error = error.as_ref().map(tracing::field::display),
            "session"
        );
        shared.metrics.session(command, record.outcome.as_str());
    }
    .instrument(span)
    .await;
}

async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: &Shared,
    record: &mut Record,
) -> Result<(), SessionError> {
    let local = match local {
        Some(local) => local,
        None => stream.local_addr()?,
    };
    let _active = shared.metrics.accepted();
    // Global and per-address limits: close before the handshake.
    let mut slot = match shared.sessions.admit(peer.ip(), &shared.config.limits) {
        Ok(slot) => slot,
        Err(e) => {
            warn!("connection refused: {e}");
            record.outcome = Outcome::Limited;
            return Ok(());
        }
    };
    let Some((mut client, mut established)) =
        establish(stream, peer, local, shared, record, &mut slot).await?
    else {
        return Ok(());
    };
    // From here on the session holds its two sockets and the relay's few words.
    let totals = relay::relay_with(
        relay::Mode::Auto,
        shared.config.timeouts.tcp_idle(),
        &mut client,
        &mut established.upstream,
        &established.early,
    )
    .await;
    match totals {
        Ok(t) => {
            let down = t.down + established.sent_down;
            shared.metrics.relayed(record.user.as_deref(), t.up, down);
            record.bytes = (t.up, down);
        }
        Err(e) => debug!("relay ended: {e}"),
    }
    Ok(())
}

/// The session up to its relay: handshake, request, command. Returns the client socket and
/// the destination of a successful CONNECT; every other command runs to its end here. The
/// handshake state is leased from the pool for this phase only (and the rarer commands and
/// branches are boxed), so that the session task, idle relays included, is sized by the
/// relay.
async fn establish(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Shared,
    record: &mut Record,
    slot: &mut Slot<'_>,
) -> Result<Option<(TcpStream, Established)>, SessionError> {
    let accepted = std::time::Instant::now();
    let mut lease = Lease::take(shared.server_config());
    let Handshake { io, request } = &mut *lease;
    let mut conn = Conn::new(stream, io, &shared.metrics);
    let handshake = tokio::time::timeout(
        shared.config.timeouts.handshake(),
        handshake(&mut conn, shared, peer.ip(), request),
    );
    let (request, user) = match handshake.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            match e {
                SessionError::AuthFailed(ref name) => {
                    shared.metrics.auth_failed();
                    record.outcome = Outcome::AuthFailed;
                    record.user = Some(name.clone().into_bytes());
                }
                _ => shared.metrics.handshake_failed(),
            }
            conn.close().await;
            return Err(e);
        }
        Err(_) => {
            shared.metrics.handshake_failed();
            conn.close().await;
            return Err(SessionError::HandshakeTimeout);
        }
    };
    shared.metrics.handshake_done(accepted.elapsed());
    record.version = Some(request.version);
    record.command = Some(request.command);
    record.dst = match request.target {
        Target::Ip(sa) => Dst::Ip(sa),
        Target::Domain(..) => Dst::Name(request.target.to_string()),
    };
    record.user = user;
    record.outcome = Outcome::Error;
    if let Some(name) = &record.user
        && let Err(e) = slot.admit_user(name, &shared.config.limits)
    {
        warn!(user = %String::from_utf8_lossy(name), "request refused: {e}");
        conn.respond(Err(ReplyCode::GeneralFailure)).await?;
        record.reply = conn.reply;
        record.outcome = Outcome::Limited;
        conn.close().await;
        return Ok(None);
    }
    let result = command(
        &mut conn,
        request,
        record.user.as_deref(),
        peer,
        local,
        shared,
    )
    .await;
    record.reply = conn.reply;
    record.bytes = conn.bytes;
    record.outcome = match conn.reply {
        Some(ReplyCode::Succeeded) => Outcome::Succeeded,
        Some(_) => Outcome::Refused,
        None => Outcome::Error,
    };
    Ok(result?.map(|established| (conn.stream, established)))
}

/// A CONNECT that succeeded (reply sent): what the relay needs once the handshake is over.
#[derive(Debug)]
struct Established {
    upstream: TcpStream,
    /// Client bytes pipelined after the request, sent upstream first.
    early: Vec<u8>,
    /// Bytes already passed to the client on the destination's behalf (an upstream proxy's
    /// reply can carry the first payload bytes).
    sent_down: u64,
}

/// Logs the request and runs the command, except a successful CONNECT's relay, which is
/// returned for the caller to run (without the handshake state). Closes the connection on
/// failure.
async fn command(
    conn: &mut Conn<'_>,
    request: &Request,
    user: Option<&[u8]>,
    peer: SocketAddr,
    local: SocketAddr,
    shared: &Shared,
) -> Result<Option<Established>, SessionError> {
    let user_name = user.map(String::from_utf8_lossy);
    let command = command_name(request.command);
    let user_shown = user_name.as_deref().unwrap_or("-");
    // At debug level: the access-log line at the end says the same for every session.
    if request.user_id.is_empty() {
        debug!(version = ?request.version, %command, dst = %request.target, user = user_shown, "request");
    } else {
        // A SOCKS4 USERID is the client's claim, not an authenticated name.
        let userid = String::from_utf8_lossy(&request.user_id);
        debug!(version = ?request.version, %command, dst = %request.target, user = user_shown, %userid, "request");
    }
    shared.metrics.request(request.command);
    shared.metrics.user_session(user);
    let ctx = Ctx {
        peer,
        local,
        user,
        shared,
    };
    let result = match request.command {
        Command::Connect => connect(conn, request, &ctx).await.map(Some),
        Command::Bind => Box::pin(bind::run(conn, request, &ctx))
            .await
            .map(|()| None),
        Command::UdpAssociate if request.version == Version::Socks5 => {
            Box::pin(udp_relay::run(conn, request, &ctx))
                .await
                .map(|()| None)
        }
        other => {
            conn.respond(Err(ReplyCode::CommandNotSupported)).await?;
            Err(SessionError::Refused(format!(
                "command {} not supported",
                command_name(other)
            )))
        }
    };
    if result.is_err() {
        conn.close().await;
    }
    result
}

/// The parts of a session that commands need.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// Our end of the control connection.
    pub(crate) local: SocketAddr,
    /// The user authenticated with RFC 1929, if any (rules match only authenticated names).
    pub(crate) user: Option<&'a [u8]>,
    pub(crate) shared: &'a Shared,
}

impl Ctx<'_> {
    fn query<'q>(&'q self, command: Command, dst: Addr<'q>) -> Query<'q> {
        Query {
            client: self.peer.ip(),
            user: self.user,
            command,
            dst,
        }
    }

    /// Access rules, step one (before resolving); a denial is logged with the rule.
    pub(crate) fn check(&self, command: Command, dst: Addr<'_>) -> Result<Pass, ConnectError> {
        self.shared
            .rules
            .check(&self.query(command, dst))
            .inspect_err(|e| warn!(command = %command_name(command), dst = %dst, "{e}"))
    }

    /// Access rules, step two: `dst` resolved to `ip`.
    pub(crate) fn check_resolved(
        &self,
        command: Command,
        dst: Addr<'_>,
        ip: IpAddr,
    ) -> Result<(), ConnectError> {
        self.shared
            .rules
            .check_resolved(&self.query(command, dst), ip)
            .inspect_err(
                |e| warn!(command = %command_name(command), dst = %dst, resolved = %ip, "{e}"),
            )
    }

    /// Both steps, for a destination with a known address.
    pub(crate) fn check_addr(
        &self,
        command: Command,
        dst: Addr<'_>,
        ip: Option<IpAddr>,
    ) -> Result<(), ConnectError> {
        match self.check(command, dst)? {
            Pass::Allowed => Ok(()),
            Pass::PerAddress => match (ip, dst) {
                (Some(ip), _) => self.check_resolved(command, dst, ip),
                (None, Addr::Ip(sa)) => self.check_resolved(command, dst, sa.ip()),
                (None, Addr::Domain(..)) => Err(ConnectError::Denied(
                    "rules that need the resolved address".into(),
                )),
            },
        }
    }
}

/// Runs the handshake up to the request, which it stores in `slot`; returns it with the
/// authenticated user name, if any.
async fn handshake<'r>(
    conn: &mut Conn<'_>,
    shared: &Shared,
    client: IpAddr,
    slot: &'r mut Option<Request>,
) -> Result<(&'r Request, Option<Vec<u8>>), SessionError> {
    let mut user = None;
    let mut refused = false;
    loop {
        if let Err(e) = conn.feed() {
            conn.flush().await?;
            return Err(SessionError::Protocol(e));
        }
        conn.flush().await?;
        loop {
            // The event (up to 544 bytes) is not kept across an await: it would size every
            // session task.
            let login = match conn.io.server.poll_event() {
                None => break,
                // Boxed: only sessions that log in pay for the credentials' room.
                Some(Event::Authenticate { username, password }) => {
                    Box::pin(login(conn, shared, client, username, password))
                }
                Some(Event::Request(request)) => return Ok((slot.insert(request), user)),
                Some(_) => {
                    // GSS-API is not offered, so this cannot happen; refuse politely.
                    let _ = conn.io.server.gssapi_complete(false);
                    refused = true;
                    break;
                }
            };
            user = Some(login.await?);
        }
        if refused {
            conn.flush().await?;
            return Err(SessionError::Refused("unexpected GSS-API message".into()));
        }
        if conn.io.server.is_closed() {
            return Err(SessionError::Eof);
        }
        if conn.io.start == conn.io.end && !conn.read_more().await? {
            return Err(SessionError::Eof);
        }
    }
}

/// RFC 1929: checks the credentials, answers, and returns the user name once it is accepted.
async fn login(
    conn: &mut Conn<'_>,
    shared: &Shared,
    client: IpAddr,
    username: Octets,
    password: Octets,
) -> Result<Vec<u8>, SessionError> {
    let ok = check_password(shared, client, &username, password).await;
    let _ = conn.io.server.authenticate(ok);
    conn.flush().await?;
    let name = String::from_utf8_lossy(&username);
    if !ok {
        warn!(user = %name, "authentication failed");
        return Err(SessionError::AuthFailed(name.into_owned()));
    }
    debug!(user = %name, "authenticated");
    Ok(username.to_vec())
}

/// Checks RFC 1929 credentials after the client's back-off (see `throttle`): a client that
/// keeps failing waits longer before each check, or is refused unchecked.
async fn check_password(
    shared: &Shared,
    client: IpAddr,
    username: &Octets,
    password: Octets,
) -> bool {
    let throttle = &shared.auth_throttle;
    let max_wait = throttle
        .policy()
        .cap
        .min(shared.config.timeouts.handshake() / 2);
    match throttle.admit(client, std::time::Instant::now(), max_wait) {
        Admission::Refuse => {
            shared.metrics.auth_throttled(true);
            warn!(
                user = %String::from_utf8_lossy(username),
                "too many failed logins from this client: refused without checking"
            );
            false
        }
        Admission::Wait(wait) => {
            let pending = throttle.pending(client);
            if !wait.is_zero() {
                shared.metrics.auth_throttled(false);
                debug!(?wait, "failed logins from this client: delaying the check");
                tokio::time::sleep(wait).await;
            }
            let ok = match &shared.users {
                Some(users) => {
                    // Each Argon2 check takes ~19 MiB and a core for tens of ms: bound how
                    // many run at once, so a flood of bogus logins queues instead of
                    // exhausting memory.
                    let _slot = AUTH_SLOTS.acquire().await;
                    let users = Arc::clone(users);
                    let username = username.clone();
                    tokio::task::spawn_blocking(move || users.verify(&username, &password))
                        .await
                        .unwrap_or(false)
                }
                None => false,
            };
            pending.finish(ok);
            ok
        }
    }
}

/// CONNECT: resolve, connect (Happy Eyeballs, connect timeout), reply with the real local
/// address; the caller relays.
async fn connect(
    conn: &mut Conn<'_>,
    request: &Request,
    ctx: &Ctx<'_>,
) -> Result<Established, SessionError> {
    let dest = request.target.as_addr().normalized();
    let pass = ctx.check(Command::Connect, dest);
    if matches!(pass, Ok(Pass::Allowed))
        && let Some(name) = ctx
            .shared
            .rules
            .upstream(&ctx.query(Command::Connect, dest))
        && let Some(url) = ctx.shared.config.upstream(name)
    {
        return Box::pin(chain(conn, request, ctx, name, &url)).await;
    }
    let outcome = match pass {
        Err(e) => Err(e),
        Ok(pass) => {
            // When the decision depends on the address, every resolved address is checked.
            let allow = |sa: SocketAddr| match pass {
                Pass::Allowed => Ok(()),
                Pass::PerAddress => ctx.check_resolved(Command::Connect, dest, sa.ip()),
            };
            let started = std::time::Instant::now();
            let limit = ctx.shared.config.timeouts.connect();
            let r = match dest {
                // The common case stays inline; names go through the resolver's larger,
                // boxed future.
                Addr::Ip(sa) => match allow(sa) {
                    Ok(()) => tokio::time::timeout(limit, resolve::connect_tcp(sa))
                        .await
                        .map(|r| r.map_err(ConnectError::from)),
                    Err(e) => Ok(Err(e)),
                },
                Addr::Domain(..) => {
                    let target = dest.to_target();
                    tokio::time::timeout(
                        limit,
                        Box::pin(ctx.shared.resolver.connect(&target, allow)),
                    )
                    .await
                }
            };
            ctx.shared.metrics.connect_done(started.elapsed());
            r.unwrap_or(Err(ConnectError::TimedOut))
        }
    };
    let upstream = match outcome {
        Ok(s) => s,
        Err(e) => {
            let code = e.reply();
            conn.respond(Err(code)).await?;
            return Err(SessionError::Refused(format!(
                "connect to {} failed: {e} (reply {})",
                request.target,
                u8::from(code)
            )));
        }
    };
    let bound = upstream.local_addr()?;
    conn.respond(Ok(bound)).await?;
    debug!(%bound, remote = ?upstream.peer_addr().ok(), "connected");
    Ok(Established {
        upstream,
        early: conn.take_leftover(),
        sent_down: 0,
    })
}

/// CONNECT through an `[[upstream]]` proxy (the core's client state machine): the upstream
/// resolves and connects; its failure reply is passed on.
async fn chain(
    conn: &mut Conn<'_>,
    request: &Request,
    ctx: &Ctx<'_>,
    name: &str,
    url: &crate::client::ProxyUrl,
) -> Result<Established, SessionError> {
    use crate::client::ClientFailure;
    use socksgate_core::client::ClientError;
    let (host, port) = match request.target.as_addr().normalized() {
        Addr::Ip(sa) => (sa.ip().to_string(), sa.port()),
        Addr::Domain(d, port) => (d.to_string(), port),
    };
    let started = std::time::Instant::now();
    let opened = tokio::time::timeout(
        ctx.shared.config.timeouts.connect(),
        crate::client::open(url, &host, port, &ctx.shared.resolver),
    )
    .await;
    ctx.shared.metrics.connect_done(started.elapsed());
    let (upstream, from_upstream) = match opened {
        Ok(Ok((stream, rest, _))) => (stream, rest),
        Ok(Err(e)) => {
            let code = match &e {
                ClientFailure::Handshake(ClientError::Rejected(code)) => *code,
                ClientFailure::Connect { source, .. } => source.reply(),
                _ => ReplyCode::GeneralFailure,
            };
            conn.respond(Err(code)).await?;
            return Err(SessionError::Refused(format!(
                "connect to {} through upstream {name} failed: {e} (reply {})",
                request.target,
                u8::from(code)
            )));
        }
        Err(_) => {
            let code = ConnectError::TimedOut.reply();
            conn.respond(Err(code)).await?;
            return Err(SessionError::Refused(format!(
                "connect to {} through upstream {name} timed out (reply {})",
                request.target,
                u8::from(code)
            )));
        }
    };
    let bound = upstream.local_addr()?;
    conn.respond(Ok(bound)).await?;
    if !from_upstream.is_empty() {
        conn.stream.write_all(&from_upstream).await?;
    }
    debug!(upstream = name, "connected through upstream");
    Ok(Established {
        upstream,
        early: conn.take_leftover(),
        sent_down: from_upstream.len() as u64,
    })
}

/// A command's name as in the rules and logs.
pub fn command_name(c: Command) -> Cow<'static, str> {
    match c {
        Command::Connect => "connect".into(),
        Command::Bind => "bind".into(),
        Command::UdpAssociate => "udp_associate".into(),
        Command::Unknown(n) => format!("unknown:{n:#04x}").into(),
    }
}

/// The IP to report for "this server" when a socket is bound to a wildcard address.
pub(crate) fn concrete_ip(bound: IpAddr, fallback: IpAddr) -> IpAddr {
    if bound.is_unspecified() {
        fallback
    } else {
        bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session task is as large as its largest state, and idle relays keep that memory: the
    /// handshake state lives in the pool and the rare branches are boxed so that it stays
    /// close to the relay's own size (notes/performance.md: ≤ 4 KiB per idle session).
    #[tokio::test]
    async fn session_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let config = Config::default();
        let rules =
            crate::access::compile(&config.rules, config.default_action, &config.rule_lines)
                .unwrap();
        let shared = Arc::new(Shared {
            config,
            users: None,
            rules,
            resolver: Resolver::with_hosts(Default::default()),
            metrics: Default::default(),
            auth_throttle: Default::default(),
            sessions: Default::default(),
        });
        let peer = client.local_addr().unwrap();
        let session = handle(client, peer, None, shared);
        // 2.1 KiB in a debug build, 2.0 KiB optimised (6.6 KiB before the handshake state
        // moved to the pool); the relay alone is 1.4 KiB.
        let size = size_of_val(&session);
        assert!(size <= 2560, "a session task takes {size} bytes");
    }
}
