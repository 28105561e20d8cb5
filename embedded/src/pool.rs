//! The fixed pool of sessions.
//!
//! embassy-net has no listen backlog: a SYN that finds no socket in `Listen` is answered
//! with a reset. So every session keeps a socket listening on the SOCKS port while it is
//! idle, and one extra *refusal* socket listens only while all `N` sessions are busy: it
//! runs the handshake and answers the request with "general failure" (SOCKS5) or "rejected"
//! (SOCKS4), then closes in order. A client refused this way can retry and is served as
//! soon as a session is free.

use core::cell::{Cell, RefCell};
use core::net::SocketAddr;

use embassy_futures::join::{join, join_array};
use embassy_futures::select::{Either, select};
use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;

use socksgate_core::client_limits::ClientSessions;
use socksgate_core::client_table::Place;
use socksgate_core::policy::ClientPrefixes;

use crate::config::Configuration;
use crate::monitor::{Monitor, SessionRecord};
use crate::relay;
use crate::session::{self, Context, Refusal};
use crate::udp::UdpBuffers;

/// Default size of each TCP socket buffer of a session (receive window and send queue):
/// 4 KiB suits a LAN; a WAN path wants 8–16 KiB (throughput ≲ window / RTT).
pub const SOCKET_BUF: usize = 4096;
/// Socket buffers of the refusal slot: a handshake and a reply fit.
pub const REFUSAL_BUF: usize = 1024;

/// embassy-net sockets a gateway of `sessions` sessions and `udp` UDP association slots
/// uses: two per session, one per UDP slot, one for the refusal slot, one for DNS. Size
/// `StackResources` at least this large.
pub const fn sockets_needed(sessions: usize, udp: usize) -> usize {
    2 * sessions + udp + 2
}

/// Socket buffers of one session: client and upstream, receive and send. (The session
/// itself, with its input buffer, lives in the gateway's future.)
#[derive(Debug)]
pub struct SessionBuffers<const B: usize = SOCKET_BUF> {
    client_rx: [u8; B],
    client_tx: [u8; B],
    upstream_rx: [u8; B],
    upstream_tx: [u8; B],
}

impl<const B: usize> SessionBuffers<B> {
    /// Zeroed buffers (`const`, so they can live in a `static`).
    pub const fn new() -> Self {
        Self {
            client_rx: [0; B],
            client_tx: [0; B],
            upstream_rx: [0; B],
            upstream_tx: [0; B],
        }
    }
}

impl<const B: usize> Default for SessionBuffers<B> {
    fn default() -> Self {
        Self::new()
    }
}

/// Memory of the refusal slot.
#[derive(Debug)]
struct RefusalBuffers {
    rx: [u8; REFUSAL_BUF],
    tx: [u8; REFUSAL_BUF],
}

/// All memory of a gateway of `N` sessions, of which at most `U` can be UDP associations
/// at a time, with `B`-byte TCP socket buffers, allocated up front. `U = 0` turns UDP
/// ASSOCIATE off ("command not supported").
///
/// Build it at run time, in place: e.g. `STORAGE.init_with(GatewayStorage::default)` on a
/// `StaticCell`. The UDP slots are not all zero bytes (packet metadata,
/// the empty association), so the constant [`new`](Self::new) makes is a flash image of them,
/// and an initialised `static` of it would put all of it in `.data`.
///
/// To place the session buffers apart from the rest (e.g. in other RAM banks), give
/// [`Gateway::from_parts`] one [`SessionBuffers`] per session and a [`UdpRefusalBuffers`]
/// instead.
#[derive(Debug)]
pub struct GatewayStorage<const N: usize, const U: usize, const B: usize = SOCKET_BUF> {
    sessions: [SessionBuffers<B>; N],
    rest: UdpRefusalBuffers<U>,
}

impl<const N: usize, const U: usize, const B: usize> GatewayStorage<N, U, B> {
    /// Zeroed storage, as a constant (for `const` contexts; see the type's documentation
    /// for the run-time [`default`](Self::default)).
    pub const fn new() -> Self {
        Self {
            sessions: [const { SessionBuffers::new() }; N],
            rest: UdpRefusalBuffers::new(),
        }
    }
}

impl<const N: usize, const U: usize, const B: usize> Default for GatewayStorage<N, U, B> {
    /// The same as [`new`](Self::new), built at run time field by field: no flash image of
    /// the UDP slots, and in place when the caller writes it straight into its destination.
    fn default() -> Self {
        Self {
            sessions: [const { SessionBuffers::new() }; N],
            rest: UdpRefusalBuffers::default(),
        }
    }
}

/// The memory of a gateway other than its session buffers: `U` UDP association slots and
/// the refusal slot (about 14.2 KB per UDP slot plus 2 KiB).
#[derive(Debug)]
pub struct UdpRefusalBuffers<const U: usize> {
    udp: [RefCell<UdpBuffers>; U],
    refusal: RefusalBuffers,
}

impl<const U: usize> UdpRefusalBuffers<U> {
    /// Empty slots, as a constant (see [`GatewayStorage`] on why the run-time
    /// [`default`](Self::default) is preferable).
    pub const fn new() -> Self {
        Self {
            udp: [const { RefCell::new(UdpBuffers::new()) }; U],
            refusal: RefusalBuffers {
                rx: [0; REFUSAL_BUF],
                tx: [0; REFUSAL_BUF],
            },
        }
    }
}

impl<const U: usize> Default for UdpRefusalBuffers<U> {
    /// The same as [`new`](Self::new), built at run time field by field.
    fn default() -> Self {
        Self {
            udp: core::array::from_fn(|_| RefCell::new(UdpBuffers::new())),
            refusal: RefusalBuffers {
                rx: [0; REFUSAL_BUF],
                tx: [0; REFUSAL_BUF],
            },
        }
    }
}

/// Occupancy shared by the sessions and the refusal slot (all in one task).
struct Occupancy {
    busy: Cell<usize>,
    /// Sessions being served (admitted, not refused), for the run-time session limit.
    serving: Cell<usize>,
    changed: Signal<NoopRawMutex, ()>,
}

impl Occupancy {
    fn update(&self, delta: isize) {
        self.busy.set(self.busy.get().saturating_add_signed(delta));
        self.changed.signal(());
    }
}

/// A SOCKS gateway of `N` concurrent sessions on one embassy-net stack, configured by `C`
/// (a static [`GatewayConfig`](crate::GatewayConfig) or the run-time
/// [`SharedSettings`](crate::live::SharedSettings)).
pub struct Gateway<'s, C, const N: usize, const U: usize, const B: usize = SOCKET_BUF> {
    stack: Stack<'static>,
    config: &'s C,
    sessions: [&'s mut SessionBuffers<B>; N],
    rest: &'s mut UdpRefusalBuffers<U>,
    monitor: &'s Monitor<N>,
    report: &'s dyn Fn(&SessionRecord<'_>),
}

impl<C, const N: usize, const U: usize, const B: usize> core::fmt::Debug
    for Gateway<'_, C, N, U, B>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gateway")
            .field("sessions", &N)
            .finish_non_exhaustive()
    }
}

impl<'s, C: Configuration, const N: usize, const U: usize, const B: usize> Gateway<'s, C, N, U, B> {
    /// A gateway serving `config` on `stack` with the sockets in `storage`, counting into
    /// `monitor` and listing every session in progress there (for a console; the login
    /// throttle lives there too).
    ///
    /// `stack` must have room for [`sockets_needed`]`(N, U)` sockets.
    pub fn new(
        stack: Stack<'static>,
        config: &'s C,
        storage: &'s mut GatewayStorage<N, U, B>,
        monitor: &'s Monitor<N>,
    ) -> Self {
        let GatewayStorage { sessions, rest } = storage;
        Self::from_parts(stack, config, sessions.each_mut(), rest, monitor)
    }

    /// A gateway whose session buffers are given one by one (so a board can place them in
    /// different RAM banks), with the UDP slots and the refusal slot's buffers in `rest`;
    /// otherwise as [`new`](Self::new).
    ///
    /// `stack` must have room for [`sockets_needed`]`(N, U)` sockets.
    pub fn from_parts(
        stack: Stack<'static>,
        config: &'s C,
        sessions: [&'s mut SessionBuffers<B>; N],
        rest: &'s mut UdpRefusalBuffers<U>,
        monitor: &'s Monitor<N>,
    ) -> Self {
        Self {
            stack,
            config,
            sessions,
            rest,
            monitor,
            report: &|_| {},
        }
    }

    /// Calls `report` with the record of every session (including clients the refusal
    /// slot answered), after both its sockets are closed: for the session log. It runs in
    /// the gateway's task, so it must be quick.
    #[must_use]
    pub fn with_report(mut self, report: &'s dyn Fn(&SessionRecord<'_>)) -> Self {
        self.report = report;
        self
    }

    /// Serves forever: `N` sessions plus the refusal slot, all in the calling task.
    pub async fn run(self) -> ! {
        let Self {
            stack,
            config,
            sessions,
            rest,
            monitor,
            report,
        } = self;
        let occupancy = Occupancy {
            busy: Cell::new(0),
            serving: Cell::new(0),
            changed: Signal::new(),
        };
        let occupancy = &occupancy;
        let ctx = Context {
            stack,
            config,
            monitor,
            report,
            udp: U > 0,
        };
        let ctx = &ctx;
        let UdpRefusalBuffers { udp, refusal } = rest;
        let udp = &*udp;
        // The per-client cap's counts: one place per session, so the table never fills.
        // At most `N` clients, all served: the hash key need not be secret.
        let per_client = RefCell::new(ClientSessions::new([Place::EMPTY; N], [0, 0]));
        let per_client = &per_client;
        let mut slot = 0;
        let sessions = sessions.map(|buffers| {
            slot += 1;
            session_loop(ctx, occupancy, per_client, slot - 1, buffers, udp)
        });
        let refusal = refusal_loop::<N, C>(ctx, occupancy, refusal);
        let (_, never) = join(join_array(sessions), refusal).await;
        never
    }
}

/// One session slot: listen, serve, close, repeat.
async fn session_loop<C: Configuration, const N: usize, const B: usize>(
    ctx: &Context<'_, C, N>,
    occupancy: &Occupancy,
    per_client: &RefCell<ClientSessions<[Place<u32>; N]>>,
    slot: usize,
    buffers: &mut SessionBuffers<B>,
    udp: &[RefCell<UdpBuffers>],
) -> ! {
    let stack = ctx.stack;
    // Set while this slot still counts as busy after its session ended.
    let release_pending = Cell::new(false);
    loop {
        let SessionBuffers {
            client_rx,
            client_tx,
            upstream_rx,
            upstream_tx,
        } = &mut *buffers;
        let mut client = TcpSocket::new(stack, client_rx, client_tx);
        client.set_keep_alive(Some(embassy_time::Duration::from_secs(60)));
        // Listen first, then announce the slot is free: no window without a listener.
        let release = async {
            if release_pending.replace(false) {
                occupancy.update(-1);
            }
            core::future::pending::<()>().await
        };
        let accepted = match select(client.accept(ctx.config.port()), release).await {
            Either::First(result) => result,
            Either::Second(()) => continue,
        };
        if release_pending.replace(false) {
            occupancy.update(-1);
        }
        if accepted.is_err() {
            continue;
        }
        occupancy.update(1);
        release_pending.set(true);
        let Some(peer) = client.remote_endpoint().map(SocketAddr::from) else {
            relay::close(&mut client, ctx.config.close_timeout()).await;
            continue;
        };
        // The run-time limit below the pool's size counts the sessions being served, not
        // the slots busy refusing someone.
        let limit = ctx.config.max_sessions();
        if limit > 0 && occupancy.serving.get() >= limit {
            ctx.monitor.refusal_slot_used();
            session::refuse(ctx, None, &mut client, Refusal::PoolFull).await;
            continue;
        }
        // The core's per-client cap, on the key the login throttle uses too.
        let key = ClientPrefixes::DEFAULT.key(peer.ip());
        let admitted = per_client.borrow_mut().admit(key, ctx.config.per_client());
        if admitted.is_err() {
            ctx.monitor.refusal_slot_used();
            session::refuse(ctx, None, &mut client, Refusal::ClientCap).await;
            continue;
        }
        ctx.monitor.started(slot, peer);
        occupancy.serving.set(occupancy.serving.get() + 1);
        let mut upstream = TcpSocket::new(stack, upstream_rx, upstream_tx);
        session::serve(ctx, slot, &mut client, &mut upstream, udp).await;
        occupancy
            .serving
            .set(occupancy.serving.get().saturating_sub(1));
        per_client.borrow_mut().release(&key);
    }
}

/// The refusal slot: listens only while all `N` sessions are busy.
async fn refusal_loop<const N: usize, C: Configuration>(
    ctx: &Context<'_, C, N>,
    occupancy: &Occupancy,
    buffers: &mut RefusalBuffers,
) -> ! {
    loop {
        while occupancy.busy.get() < N {
            occupancy.changed.wait().await;
        }
        let RefusalBuffers { rx, tx } = &mut *buffers;
        let mut client = TcpSocket::new(ctx.stack, rx, tx);
        let slot_freed = async {
            while occupancy.busy.get() >= N {
                occupancy.changed.wait().await;
            }
        };
        match select(client.accept(ctx.config.port()), slot_freed).await {
            Either::First(Ok(())) => {
                ctx.monitor.refusal_slot_used();
                session::refuse(ctx, None, &mut client, Refusal::PoolFull).await;
            }
            // Still listening (or never connected): closing sends nothing.
            Either::First(Err(_)) | Either::Second(()) => client.abort(),
        }
    }
}
