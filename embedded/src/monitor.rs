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
struct State<const SLOTS: usize> {
    counters: Counters,
    /// One entry per session in progress: room for every slot of the pool.
    active: heapless::Vec<ActiveSession, SLOTS>,
    /// Where slot `s`'s entry is in `active` (valid when that entry's slot is `s`): a relay
    /// updates its own entry without searching. (An array of entries indexed by slot would
    /// do without it, but `Monitor::new` then builds it on the stack and copies it — 6 KB
    /// for 32 slots; an empty `Vec` is built in place.)
    position: [u16; SLOTS],
    throttle: LoginThrottle<ThrottlePlaces>,
}

impl<const SLOTS: usize> State<SLOTS> {
    fn index(&self, slot: usize) -> Option<usize> {
        let i = usize::from(*self.position.get(slot)?);
        (self.active.get(i)?.slot == slot).then_some(i)
    }

    fn entry(&self, slot: usize) -> Option<&ActiveSession> {
        self.active.get(self.index(slot)?)
    }

    fn entry_mut(&mut self, slot: usize) -> Option<&mut ActiveSession> {
        let i = self.index(slot)?;
        self.active.get_mut(i)
    }

    /// Removes slot `slot`'s entry; the last entry takes its place.
    fn remove(&mut self, slot: usize) {
        let Some(i) = self.index(slot) else {
            return;
        };
        self.active.swap_remove(i);
        if let Some(moved) = self.active.get(i)
            && let Some(position) = self.position.get_mut(moved.slot)
        {
            // `i < SLOTS`, which `Monitor::new` bounds to fit.
            *position = i as u16;
        }
    }
}

/// Counters, the sessions in progress of a pool of `SLOTS` sessions (every one of them: the
/// gateway of `N` sessions takes a `Monitor<N>`) and the login throttle; see the
/// [module documentation](self).
pub struct Monitor<const SLOTS: usize> {
    state: Mutex<CriticalSectionRawMutex, RefCell<State<SLOTS>>>,
}

impl<const SLOTS: usize> fmt::Debug for Monitor<SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl<const SLOTS: usize> Default for Monitor<SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize> Monitor<SLOTS> {
    /// Nothing counted yet. Its size grows with `SLOTS` by one [`ActiveSession`] and a
    /// position (≈ 136 B) a slot.
    pub fn new() -> Self {
        const { assert!(SLOTS <= 1 << 16, "positions are kept as u16") };
        Self {
            state: Mutex::new(RefCell::new(State {
                counters: Counters::default(),
                active: heapless::Vec::new(),
                position: [0; SLOTS],
                // Sixteen clients: nobody can crowd a probe sequence that matters, so the
                // hash key need not be secret.
                throttle: LoginThrottle::new([Place::EMPTY; places_for(THROTTLED_CLIENTS)], [0, 0]),
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State<SLOTS>) -> R) -> R {
        self.state.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// The totals so far.
    pub fn counters(&self) -> Counters {
        self.with(|s| s.counters)
    }

    /// Calls `f` with each session in progress, in no particular order (under the lock:
    /// `f` must be quick).
    pub fn for_each_active(&self, mut f: impl FnMut(&ActiveSession)) {
        self.with(|s| s.active.iter().for_each(&mut f));
    }

    /// The session in progress in slot `slot`, if any, as it is now: a copy, so that the
    /// caller can format it without holding the lock.
    pub fn active(&self, slot: usize) -> Option<ActiveSession> {
        self.with(|s| s.entry(slot).cloned())
    }

    /// Slot `slot` accepted `client`.
    pub(crate) fn started(&self, slot: usize, client: SocketAddr) {
        let now = Instant::now();
        self.with(|s| {
            s.counters.sessions += 1;
            let Some(position) = s.position.get_mut(slot) else {
                return; // not a slot of this pool: counted only
            };
            let pushed = s.active.push(ActiveSession {
                slot,
                client,
                started: now,
                command: None,
                destination: heapless::String::new(),
                up: 0,
                down: 0,
                moved: now,
            });
            if pushed.is_ok() {
                // At most SLOTS entries, which `new` bounds: the index fits.
                *position = (s.active.len() - 1) as u16;
            }
        });
    }

    /// The place where slot `slot`'s session reports its bytes while it relays.
    pub(crate) fn live(&self, slot: usize) -> LiveTraffic<'_, SLOTS> {
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
            if let Some(entry) = s.entry_mut(slot) {
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
            if let Some(slot) = slot {
                s.remove(slot);
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
pub(crate) struct LiveTraffic<'a, const SLOTS: usize> {
    monitor: &'a Monitor<SLOTS>,
    slot: usize,
}

impl<const SLOTS: usize> LiveTraffic<'_, SLOTS> {
    /// `traffic` is what moved so far, the last of it at `at`. One short critical section
    /// and an indexed store: cheap enough to call for every chunk relayed.
    pub(crate) fn publish(&self, traffic: &Traffic, at: Instant) {
        self.monitor.with(|s| {
            if let Some(entry) = s.entry_mut(self.slot) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelayEnd;

    fn finish<const SLOTS: usize>(monitor: &Monitor<SLOTS>, slot: usize) {
        let record = SessionRecord {
            client: None,
            user: None,
            command: None,
            destination: None,
            reply: None,
            up: 0,
            down: 0,
            duration: Duration::from_millis(0),
            end: SessionEnd::Relayed(RelayEnd::Finished),
        };
        monitor.finished(Some(slot), &record);
    }

    fn bytes<const SLOTS: usize>(monitor: &Monitor<SLOTS>, slot: usize) -> Option<(u64, u64)> {
        monitor.active(slot).map(|a| (a.up, a.down))
    }

    #[test]
    fn each_slot_publishes_into_its_own_entry_as_entries_come_and_go() {
        let monitor = Monitor::<3>::new();
        let client = "10.0.0.2:1000".parse().unwrap();
        for slot in [0, 1, 2, 3] {
            monitor.started(slot, client);
        }
        assert_eq!(
            monitor.active(3),
            None,
            "not a slot of the pool: not listed"
        );
        assert_eq!(monitor.counters().sessions, 4, "but counted");
        let at = Instant::from_millis(5);
        for slot in 0..3 {
            let n = slot as u64 + 1;
            let traffic = Traffic {
                up: n,
                down: 10 * n,
            };
            monitor.live(slot).publish(&traffic, at);
        }
        // Slot 0's entry leaves; the last one (slot 2) moves into its place.
        finish(&monitor, 0);
        assert_eq!(bytes(&monitor, 0), None);
        assert_eq!(bytes(&monitor, 1), Some((2, 20)));
        assert_eq!(bytes(&monitor, 2), Some((3, 30)));
        monitor.live(2).publish(&Traffic { up: 7, down: 70 }, at);
        monitor.live(0).publish(&Traffic { up: 9, down: 90 }, at);
        assert_eq!(bytes(&monitor, 2), Some((7, 70)));
        assert_eq!(
            bytes(&monitor, 0),
            None,
            "a slot without a session changes nothing"
        );
        // A new session in slot 0 starts from zero.
        monitor.started(0, client);
        assert_eq!(bytes(&monitor, 0), Some((0, 0)));
        finish(&monitor, 2);
        finish(&monitor, 1);
        assert_eq!(bytes(&monitor, 0), Some((0, 0)));
        assert_eq!((bytes(&monitor, 1), bytes(&monitor, 2)), (None, None));
        let mut listed = 0;
        monitor.for_each_active(|_| listed += 1);
        assert_eq!(listed, 1);
    }

    /// Every slot of a pool larger than the 32 the table used to be limited to is listed,
    /// with its own counts, while sessions start and end in an order unlike their slots'
    /// (checked against a plain model after every step).
    #[test]
    fn every_slot_of_a_large_pool_is_listed() {
        const SLOTS: usize = 40;
        let monitor = Monitor::<SLOTS>::new();
        let mut model: [Option<(SocketAddr, u64, u64)>; SLOTS] = [None; SLOTS];
        let check = |model: &[Option<(SocketAddr, u64, u64)>; SLOTS]| {
            let mut seen = [false; SLOTS];
            let mut listed = 0;
            monitor.for_each_active(|a| {
                assert!(!seen[a.slot], "slot {} listed twice", a.slot);
                seen[a.slot] = true;
                listed += 1;
                assert_eq!(Some((a.client, a.up, a.down)), model[a.slot]);
            });
            assert_eq!(listed, model.iter().flatten().count());
            for (slot, expected) in model.iter().enumerate() {
                let found = monitor.active(slot).map(|a| (a.client, a.up, a.down));
                assert_eq!(found, *expected, "slot {slot}");
            }
        };
        let at = Instant::from_millis(1);
        // Slots start in a scrambled order (17 is coprime with 40), each publishes its own.
        for i in 0..SLOTS {
            let slot = (i * 17) % SLOTS;
            let client = SocketAddr::from(([10, 0, 0, 2], 40_000 + slot as u16));
            monitor.started(slot, client);
            let traffic = Traffic {
                up: slot as u64 * 1000 + 1,
                down: slot as u64 * 1000 + 2,
            };
            monitor.live(slot).publish(&traffic, at);
            model[slot] = Some((client, traffic.up, traffic.down));
            check(&model);
        }
        // Every third slot ends, from the top; each survivor publishes again.
        for slot in (0..SLOTS).rev().filter(|s| s % 3 == 0) {
            finish(&monitor, slot);
            model[slot] = None;
            for (other, entry) in model.iter_mut().enumerate() {
                if let Some((_, up, down)) = entry {
                    *up += 1;
                    *down += 3;
                    let traffic = Traffic {
                        up: *up,
                        down: *down,
                    };
                    monitor.live(other).publish(&traffic, at);
                }
            }
            check(&model);
        }
        // The freed slots fill again.
        for slot in (0..SLOTS).filter(|s| s % 3 == 0) {
            let client = SocketAddr::from(([10, 0, 0, 3], 50_000 + slot as u16));
            monitor.started(slot, client);
            model[slot] = Some((client, 0, 0));
        }
        check(&model);
        assert_eq!(
            monitor.counters().sessions,
            (SLOTS + SLOTS.div_ceil(3)) as u64
        );
    }
}
