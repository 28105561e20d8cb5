//! What the gateway is doing: counters, the sessions in progress, the failed-login
//! throttle — shared with the console, and one [`SessionRecord`] per finished session.

use core::cell::RefCell;
use core::fmt;
use core::net::SocketAddr;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, Instant};
use socksgate_core::client_table::{Place, places_for};
use socksgate_core::login_throttle::{Attempts, LoginThrottle, Outcome, Schedule, Verdict};
use socksgate_core::rules::Cidr;
use socksgate_core::wire::Command;

use crate::relay::Traffic;
use crate::session::{Refusal, SessionEnd};

/// Sessions in progress the table lists: slots `0..MAX_LISTED` (a pool larger than this
/// still works; the sessions of further slots are counted, also against the per-client cap,
/// but not listed).
pub const MAX_LISTED: usize = 32;
/// Clients the failed-login throttle remembers at once (the least recently used is
/// forgotten to make room).
pub const THROTTLED_CLIENTS: usize = 16;

/// Running totals since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted (the refusal slot's included).
    pub sessions: u64,
    /// Sessions that relayed (CONNECT established or UDP association opened).
    pub relayed: u64,
    /// Bytes from clients to destinations (TCP payload and UDP datagram payloads).
    pub bytes_up: u64,
    /// Bytes from destinations to clients.
    pub bytes_down: u64,
    /// Failed RFC 1929 logins (throttled ones included).
    pub login_failures: u64,
    /// Refusals by cause, indexed by [`Refusal::index`].
    pub refused: [u64; Refusal::COUNT],
    /// Clients that left or broke the protocol or timed out before a request.
    pub dropped: u64,
}

/// One session in progress, as the console lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveSession {
    /// The pool slot.
    pub slot: usize,
    /// The client.
    pub client: SocketAddr,
    /// When it was accepted.
    pub started: Instant,
    /// The request's command, once known.
    pub command: Option<Command>,
    /// The destination as requested (truncated to 64 characters), once known.
    pub destination: heapless::String<64>,
    /// Bytes from the client to the destination(s) so far (updated as the relay moves them).
    pub up: u64,
    /// Bytes from the destination(s) to the client so far.
    pub down: u64,
    /// When bytes last moved either way (when it was accepted, before any did).
    pub moved: Instant,
}

/// The throttle's storage: room for [`THROTTLED_CLIENTS`].
type ThrottlePlaces = [Place<Attempts>; places_for(THROTTLED_CLIENTS)];

#[derive(Debug)]
struct State {
    counters: Counters,
    /// Indexed by slot: a relay updates its own entry without searching.
    active: [Option<ActiveSession>; MAX_LISTED],
    throttle: LoginThrottle<ThrottlePlaces>,
}

/// Counters, sessions in progress and the login throttle; see the
/// [module documentation](self).
pub struct Monitor {
    state: Mutex<CriticalSectionRawMutex, RefCell<State>>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(RefCell::new(State {
                counters: Counters::default(),
                active: [const { None }; MAX_LISTED],
                // Sixteen clients: nobody can crowd a probe sequence that matters, so the
                // hash key need not be secret.
                throttle: LoginThrottle::new([Place::EMPTY; places_for(THROTTLED_CLIENTS)], [0, 0]),
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.state.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// The totals so far.
    pub fn counters(&self) -> Counters {
        self.with(|s| s.counters)
    }

    /// Calls `f` with each session in progress, in slot order (under the lock: `f` must be
    /// quick).
    pub fn for_each_active(&self, mut f: impl FnMut(&ActiveSession)) {
        self.with(|s| s.active.iter().flatten().for_each(&mut f));
    }

    /// The session in progress in slot `slot`, if any (and listed: `slot < MAX_LISTED`),
    /// as it is now: a copy, so that the caller can format it without holding the lock.
    pub fn active(&self, slot: usize) -> Option<ActiveSession> {
        self.with(|s| s.active.get(slot).cloned().flatten())
    }

    /// Slot `slot` accepted `client`.
    pub(crate) fn started(&self, slot: usize, client: SocketAddr) {
        let now = Instant::now();
        self.with(|s| {
            s.counters.sessions += 1;
            if let Some(entry) = s.active.get_mut(slot) {
                *entry = Some(ActiveSession {
                    slot,
                    client,
                    started: now,
                    command: None,
                    destination: heapless::String::new(),
                    up: 0,
                    down: 0,
                    moved: now,
                });
            }
        });
    }

    /// The place where slot `slot`'s session reports its bytes while it relays.
    pub(crate) fn live(&self, slot: usize) -> LiveTraffic<'_> {
        LiveTraffic {
            monitor: self,
            slot,
        }
    }

    /// Slot `slot`'s request: `command` to `destination`.
    pub(crate) fn requested(
        &self,
        slot: usize,
        command: Option<Command>,
        destination: &dyn fmt::Display,
    ) {
        self.with(|s| {
            if let Some(Some(entry)) = s.active.get_mut(slot) {
                entry.command = command;
                entry.destination.clear();
                let _ = fmt::write(
                    &mut Truncating(&mut entry.destination),
                    format_args!("{destination}"),
                );
            }
        });
    }

    /// The refusal slot answered a client (it is not listed as in progress).
    pub(crate) fn refusal_slot_used(&self) {
        self.with(|s| s.counters.sessions += 1);
    }

    /// Slot `slot` ended (or, with `None`, the refusal slot): counts `record`.
    pub(crate) fn finished(&self, slot: Option<usize>, record: &SessionRecord<'_>) {
        self.with(|s| {
            if let Some(entry) = slot.and_then(|slot| s.active.get_mut(slot)) {
                *entry = None;
            }
            let c = &mut s.counters;
            c.bytes_up += record.up;
            c.bytes_down += record.down;
            match record.end {
                SessionEnd::Relayed(_) => c.relayed += 1,
                SessionEnd::Refused(why) => {
                    if let Some(n) = c.refused.get_mut(why.index()) {
                        *n += 1;
                    }
                }
                SessionEnd::ClientGone
                | SessionEnd::HandshakeTimeout
                | SessionEnd::ProtocolError => c.dropped += 1,
            }
        });
    }

    /// The core's throttle decides whether `client`'s credentials are checked now, under a
    /// lockout after `failures` failures (0: never) within `window`; a lockout never waits,
    /// so a locked-out client is refused.
    pub(crate) fn login_admit(&self, client: Cidr, failures: u32, window: Duration) -> Verdict {
        let schedule = lockout(failures, window);
        let now = crate::session::now();
        self.with(|s| {
            s.throttle
                .admit(client, &schedule, now, core::time::Duration::ZERO)
        })
    }

    /// An admitted login of `client` ended with `outcome` (the lockout as for
    /// [`login_admit`](Self::login_admit)).
    pub(crate) fn login_finished(
        &self,
        client: Cidr,
        failures: u32,
        window: Duration,
        outcome: Outcome,
    ) {
        let schedule = lockout(failures, window);
        let now = crate::session::now();
        self.with(|s| s.throttle.finish(client, &schedule, now, outcome));
    }

    /// A login failed (refused by the throttle or with wrong credentials).
    pub(crate) fn login_failed(&self) {
        self.with(|s| s.counters.login_failures += 1);
    }
}

/// One session's entry in the [`Monitor`]'s table, where its relay publishes the bytes moved
/// so far: the console's `sessions` shows them while the session runs.
#[derive(Clone, Copy)]
pub(crate) struct LiveTraffic<'a> {
    monitor: &'a Monitor,
    slot: usize,
}

impl LiveTraffic<'_> {
    /// `traffic` is what moved so far, the last of it at `at`. One short critical section
    /// and an indexed store: cheap enough to call for every chunk relayed.
    pub(crate) fn publish(&self, traffic: &Traffic, at: Instant) {
        self.monitor.with(|s| {
            if let Some(Some(entry)) = s.active.get_mut(self.slot) {
                entry.up = traffic.up;
                entry.down = traffic.down;
                entry.moved = at;
            }
        });
    }
}

/// The firmware's schedule. Built here, where the throttle is called, so that the
/// back-off's code, which the firmware never uses, is left out of the build.
fn lockout(failures: u32, window: Duration) -> Schedule {
    Schedule::Lockout {
        failures,
        window: core::time::Duration::from_millis(window.as_millis()),
    }
}

/// Writes into a fixed string, dropping what does not fit.
struct Truncating<'a, const N: usize>(&'a mut heapless::String<N>);

impl<const N: usize> fmt::Write for Truncating<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// One finished session, for the log: `Display` writes it as one line.
#[derive(Clone, Copy, Debug)]
pub struct SessionRecord<'a> {
    /// The client.
    pub client: Option<SocketAddr>,
    /// The authenticated user, if any.
    pub user: Option<&'a [u8]>,
    /// The request's command, once known.
    pub command: Option<Command>,
    /// The requested destination, once known.
    pub destination: Option<socksgate_core::Addr<'a>>,
    /// The first reply's code (SOCKS5 numbering), once sent.
    pub reply: Option<u8>,
    /// Bytes from the client to the destination(s).
    pub up: u64,
    /// Bytes from the destination(s) to the client.
    pub down: u64,
    /// From accept to the end of the close.
    pub duration: Duration,
    /// How it ended.
    pub end: SessionEnd,
}

impl fmt::Display for SessionRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("session client=")?;
        match self.client {
            Some(client) => write!(f, "{client}")?,
            None => f.write_str("-")?,
        }
        f.write_str(" user=")?;
        match self.user {
            Some(user) => {
                for chunk in user.utf8_chunks() {
                    // Printable ASCII only: a user name cannot forge a log line.
                    for c in chunk.valid().chars() {
                        if c.is_ascii_graphic() {
                            f.write_fmt(format_args!("{c}"))?;
                        } else {
                            write!(f, "\\u{{{:x}}}", u32::from(c))?;
                        }
                    }
                    for b in chunk.invalid() {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
            }
            None => f.write_str("-")?,
        }
        f.write_str(" cmd=")?;
        match self.command.and_then(|c| c.name()) {
            Some(name) => f.write_str(name)?,
            None => f.write_str("-")?,
        }
        f.write_str(" dst=")?;
        match &self.destination {
            Some(dst) => write!(f, "{dst}")?,
            None => f.write_str("-")?,
        }
        f.write_str(" reply=")?;
        match self.reply {
            Some(code) => write!(f, "{code}")?,
            None => f.write_str("-")?,
        }
        write!(
            f,
            " up={} down={} ms={} end={}",
            self.up,
            self.down,
            self.duration.as_millis(),
            self.end
        )
    }
}
