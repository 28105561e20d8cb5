//! One client connection: the SOCKS handshake (driven by `socksgate_core::server`), then the
//! command.
//!
//! Every protocol byte goes through the core: this module only moves bytes between the socket
//! and the state machine, answers its events (credentials, the request) and runs the command.
//! On any failure the queued reply is flushed and the connection closed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use socksgate_core::Addr;
use socksgate_core::server::{self, Event, Request, Server, ServerError, Version};
use socksgate_core::wire::{Command, ReplyCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, warn};

use crate::access::{AccessRules, Query};
use crate::config::Config;
use crate::connect::ConnectError;
use crate::resolve::Resolver;
use crate::users::Users;
use crate::{bind, relay, udp_relay};

/// Read buffer for the handshake; also bounds the early payload a client may pipeline.
const READ_BUF: usize = 4096;

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

/// The connection's handshake state: the core, the socket and the unconsumed input.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) server: Server,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: [u8; 600],
}

impl Conn {
    fn new(stream: TcpStream, config: server::Config) -> Self {
        Self {
            stream,
            server: Server::new(config),
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            out: [0; 600],
        }
    }

    /// Sends everything the core has queued.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        loop {
            let n = self.server.poll_transmit(&mut self.out);
            if n == 0 {
                return Ok(());
            }
            self.stream
                .write_all(self.out.get(..n).unwrap_or_default())
                .await?;
        }
    }

    /// Flushes the failure reply and closes our write side, so the client sees the reply and
    /// then EOF.
    pub(crate) async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    /// Client bytes read but not consumed by the handshake (early payload once established).
    pub(crate) fn leftover(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Feeds buffered input to the core.
    fn feed(&mut self) -> Result<(), ServerError> {
        let input = self.buf.get(self.start..self.end).unwrap_or_default();
        let n = self.server.feed(input)?;
        self.start += n;
        Ok(())
    }

    /// Reads more input; `false` on EOF.
    async fn read_more(&mut self) -> std::io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        let n = self.stream.read(free).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// Answers the request: reports the reply, flushes it.
    pub(crate) async fn respond(
        &mut self,
        outcome: Result<SocketAddr, ReplyCode>,
    ) -> std::io::Result<()> {
        let _ = self.server.respond(outcome);
        self.flush().await
    }

    /// BIND's second reply.
    pub(crate) async fn respond_bind_peer(
        &mut self,
        outcome: Result<SocketAddr, ReplyCode>,
    ) -> std::io::Result<()> {
        let _ = self.server.respond_bind_peer(outcome);
        self.flush().await
    }
}

/// Serves one accepted connection to the end.
pub async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = tracing::info_span!("session", client = %peer);
    async move {
        if let Err(e) = run(stream, peer, &shared).await {
            match e {
                SessionError::Io(_) | SessionError::Eof => debug!("session ended: {e}"),
                _ => info!("session ended: {e}"),
            }
        }
    }
    .instrument(span)
    .await;
}

async fn run(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<(), SessionError> {
    let local = stream.local_addr()?;
    let mut conn = Conn::new(stream, shared.server_config());
    let handshake = tokio::time::timeout(
        shared.config.timeouts.handshake(),
        handshake(&mut conn, shared),
    );
    let (request, user) = match handshake.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            conn.close().await;
            return Err(e);
        }
        Err(_) => {
            conn.close().await;
            return Err(SessionError::HandshakeTimeout);
        }
    };
    let user_name = user.as_deref().map(String::from_utf8_lossy);
    info!(
        version = ?request.version,
        command = %command_name(request.command),
        target = %request.target,
        user = user_name.as_deref().unwrap_or("-"),
        "request"
    );
    let ctx = Ctx {
        peer,
        local,
        user: user.as_deref(),
        shared,
    };
    let result = match request.command {
        Command::Connect => connect(&mut conn, &request, &ctx).await,
        Command::Bind => bind::run(&mut conn, &request, &ctx).await,
        Command::UdpAssociate if request.version == Version::Socks5 => {
            udp_relay::run(&mut conn, &request, &ctx).await
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
    /// The authenticated user (RFC 1929) or the SOCKS4 USERID, if any.
    pub(crate) user: Option<&'a [u8]>,
    pub(crate) shared: &'a Shared,
}

impl Ctx<'_> {
    /// Checks the access rules; a denial is logged with the rule that matched.
    pub(crate) fn check(&self, command: Command, dest: Addr<'_>) -> Result<(), ConnectError> {
        let query = Query {
            client: self.peer.ip(),
            user: self.user,
            command,
            dest,
        };
        self.shared
            .rules
            .check(&query)
            .inspect_err(|e| warn!(target = %dest, "denied: {e}"))
    }
}

/// Runs the handshake up to the request; returns it with the user name, if any.
async fn handshake(
    conn: &mut Conn,
    shared: &Shared,
) -> Result<(Request, Option<Vec<u8>>), SessionError> {
    let mut user: Option<Vec<u8>> = None;
    loop {
        if let Err(e) = conn.feed() {
            conn.flush().await?;
            return Err(SessionError::Protocol(e));
        }
        conn.flush().await?;
        while let Some(event) = conn.server.poll_event() {
            match event {
                Event::Authenticate { username, password } => {
                    let ok = match &shared.users {
                        Some(users) => {
                            let users = Arc::clone(users);
                            let (u, p) = (username.clone(), password);
                            tokio::task::spawn_blocking(move || users.verify(&u, &p))
                                .await
                                .unwrap_or(false)
                        }
                        None => false,
                    };
                    let _ = conn.server.authenticate(ok);
                    conn.flush().await?;
                    let name = String::from_utf8_lossy(&username).into_owned();
                    if !ok {
                        warn!(user = %name, "authentication failed");
                        return Err(SessionError::AuthFailed(name));
                    }
                    debug!(user = %name, "authenticated");
                    user = Some(username.to_vec());
                }
                Event::Request(request) => {
                    if request.version != Version::Socks5 && !request.user_id.is_empty() {
                        user = Some(request.user_id.to_vec());
                    }
                    return Ok((request, user));
                }
                _ => {
                    // GSS-API is not offered, so this cannot happen; refuse politely.
                    let _ = conn.server.gssapi_complete(false);
                    conn.flush().await?;
                    return Err(SessionError::Refused("unexpected GSS-API message".into()));
                }
            }
        }
        if conn.server.is_closed() {
            return Err(SessionError::Eof);
        }
        if conn.start == conn.end && !conn.read_more().await? {
            return Err(SessionError::Eof);
        }
    }
}

/// CONNECT: resolve, connect (Happy Eyeballs, connect timeout), reply with the real local
/// address, relay.
async fn connect(conn: &mut Conn, request: &Request, ctx: &Ctx<'_>) -> Result<(), SessionError> {
    let dest = request.target.as_addr().normalized();
    let outcome = match ctx.check(Command::Connect, dest) {
        Err(e) => Err(e),
        Ok(()) => {
            let allow = |sa: SocketAddr| match dest {
                // A name was checked by name; check what it resolved to as well.
                Addr::Domain(..) => ctx.check(Command::Connect, Addr::Ip(sa)),
                Addr::Ip(_) => Ok(()),
            };
            let target = dest.to_target();
            match tokio::time::timeout(
                ctx.shared.config.timeouts.connect(),
                ctx.shared.resolver.connect(&target, allow),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(ConnectError::TimedOut),
            }
        }
    };
    let mut upstream = match outcome {
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
    let remote = upstream.peer_addr()?;
    conn.respond(Ok(bound)).await?;
    debug!(%bound, %remote, "connected");
    let early = conn.leftover().to_vec();
    let totals = relay::relay(&mut conn.stream, &mut upstream, &early).await;
    match totals {
        Ok(t) => info!(target = %request.target, %remote, up = t.up, down = t.down, "closed"),
        Err(e) => debug!(target = %request.target, "relay ended: {e}"),
    }
    Ok(())
}

/// A command's name as in the rules and logs.
pub fn command_name(c: Command) -> String {
    match c {
        Command::Connect => "connect".into(),
        Command::Bind => "bind".into(),
        Command::UdpAssociate => "udp_associate".into(),
        Command::Unknown(n) => format!("unknown:{n:#04x}"),
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
