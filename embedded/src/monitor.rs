//! What the gateway is doing: counters, the sessions in progress, the failed-login
//! throttle — shared with the console, and one [`SessionRecord`] per finished session.

use core::cell::RefCell;
use core::fmt;
use core::net::{IpAddr, SocketAddr};

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, Instant};
use socksgate_core::wire::Command;

use crate::session::{Refusal, SessionEnd};

/// Sessions in progress the table lists (a pool larger than this still works; the extra
/// sessions are counted but not listed, and not counted against the per-client cap).
pub const MAX_LISTED: usize = 32;
/// Clients the failed-login throttle remembers at once (the oldest entry is reused).
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
}

#[derive(Clone, Copy, Debug)]
struct LoginFailures {
    client: IpAddr,
    count: u32,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    counters: Counters,
    active: heapless::Vec<ActiveSession, MAX_LISTED>,
    failures: heapless::Vec<LoginFailures, THROTTLED_CLIENTS>,
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
            state: Mutex::new(RefCell::new(State::default())),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.state.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// The totals so far.
    pub fn counters(&self) -> Counters {
        self.with(|s| s.counters)
    }

    /// Calls `f` with each session in progress (under the lock: `f` must be quick).
    pub fn for_each_active(&self, mut f: impl FnMut(&ActiveSession)) {
        self.with(|s| s.active.iter().for_each(&mut f));
    }

    /// Sessions in progress from `client`.
    pub(crate) fn sessions_of(&self, client: IpAddr) -> usize {
        self.with(|s| s.active.iter().filter(|a| a.client.ip() == client).count())
    }

    /// Slot `slot` accepted `client`.
    pub(crate) fn started(&self, slot: usize, client: SocketAddr) {
        self.with(|s| {
            s.counters.sessions += 1;
            let _ = s.active.push(ActiveSession {
                slot,
                client,
                started: Instant::now(),
                command: None,
                destination: heapless::String::new(),
            });
        });
    }

    /// Slot `slot`'s request: `command` to `destination`.
    pub(crate) fn requested(
        &self,
        slot: usize,
        command: Option<Command>,
        destination: &dyn fmt::Display,
    ) {
        self.with(|s| {
            if let Some(entry) = s.active.iter_mut().find(|a| a.slot == slot) {
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
            if let Some(slot) = slot
                && let Some(i) = s.active.iter().position(|a| a.slot == slot)
            {
                s.active.swap_remove(i);
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

    /// Whether `client` is locked out: `failures` failed logins since the first of them,
    /// less than `lockout` ago.
    pub(crate) fn login_locked(&self, client: IpAddr, failures: u32, lockout: Duration) -> bool {
        let now = Instant::now();
        self.with(|s| {
            s.failures
                .iter()
                .any(|f| f.client == client && f.count >= failures && now < f.since + lockout)
        })
    }

    /// `client` failed a login; its window restarts once `lockout` has passed.
    pub(crate) fn login_failed(&self, client: IpAddr, lockout: Duration) {
        let now = Instant::now();
        self.with(|s| {
            s.counters.login_failures += 1;
            if let Some(entry) = s.failures.iter_mut().find(|f| f.client == client) {
                if now >= entry.since + lockout {
                    *entry = LoginFailures {
                        client,
                        count: 1,
                        since: now,
                    };
                } else {
                    entry.count = entry.count.saturating_add(1);
                }
                return;
            }
            let fresh = LoginFailures {
                client,
                count: 1,
                since: now,
            };
            if s.failures.push(fresh).is_err() {
                // Full: reuse the entry whose window started first.
                if let Some(oldest) = s.failures.iter_mut().min_by_key(|f| f.since) {
                    *oldest = fresh;
                }
            }
        });
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
