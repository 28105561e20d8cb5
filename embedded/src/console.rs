//! The serial console: show, change and save the settings, manage users and rules, list
//! sessions and counters, reboot — over any `embedded-io-async` byte stream (a UART), and
//! the session log lines written between commands.
//!
//! Lines end with CR or LF; typed characters are echoed, backspace edits. Every command's
//! output ends with the prompt `> ` on a new line. Commands (see [`HELP`]):
//!
//! ```text
//! show                     the settings, in the text form they are saved in
//! set KEY VALUE…           change one setting (a line of that form, e.g. `set per-client 2`)
//! user add NAME PASSWORD   add or replace a user (stored as a salted hash)
//! user del NAME            remove a user
//! rule add RULE            append a rule (`deny dst .example.com port 25`)
//! rule del INDEX           remove a rule (0-based, as `show` lists them)
//! save                     write the settings to flash (the other slot)
//! sessions                 sessions in progress, with bytes each way so far
//! stats                    counters since boot, and the time since boot
//! reboot                   restart the board
//! ```
//!
//! Users and rules apply to the next session at once; `port`, `address`, `dns` and
//! `hostname` apply after `save` and `reboot`.

use core::cell::Cell;
use core::fmt::{self, Write as _};

use embassy_futures::select::{Either, select};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::pipe::Pipe;
use embassy_time::Instant;
use embedded_io_async::{Read, Write};
use embedded_storage::nor_flash::NorFlash;

use crate::live::SharedSettings;
use crate::monitor::{ActiveSession, Monitor};
use crate::password::{PasswordHash, SALT_LEN};
use crate::session::Refusal;
use crate::settings::{LineError, MAX_RULES, Settings, SettingsError};
use crate::store::{ConfigStore, MAX_BODY, SlotState};

/// The command summary `help` prints.
pub const HELP: &str = "commands: show | set KEY VALUE | user add NAME PASSWORD | user del NAME | \
rule add RULE | rule del INDEX | save | sessions | stats | reboot | help";

/// Longest command line.
const LINE: usize = 160;
/// Bytes of log lines waiting for the console.
const LOG_BUFFER: usize = 2048;

/// Log lines from other tasks, written to the console between its own output. Lines that
/// do not fit while the console is busy are dropped (and counted), never waited for.
pub struct ConsoleLog {
    pipe: Pipe<CriticalSectionRawMutex, LOG_BUFFER>,
    // A lock rather than an atomic: thumbv6m (the RP2040) has no atomic read-modify-write.
    dropped: Mutex<CriticalSectionRawMutex, Cell<u32>>,
}

impl fmt::Debug for ConsoleLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleLog").finish_non_exhaustive()
    }
}

impl Default for ConsoleLog {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleLog {
    /// An empty log (`const`, for a `static`).
    pub const fn new() -> Self {
        Self {
            pipe: Pipe::new(),
            dropped: Mutex::new(Cell::new(0)),
        }
    }

    /// Queues one line (a newline is added); dropped whole if it does not fit.
    pub fn line(&self, args: fmt::Arguments<'_>) {
        let mut text: heapless::String<320> = heapless::String::new();
        let _ = fmt::write(&mut text, args);
        let _ = text.push_str("\r\n");
        let bytes = text.as_bytes();
        // All or nothing, so lines never interleave half-written.
        if LOG_BUFFER - self.pipe.len() < bytes.len()
            || self.pipe.try_write(bytes) != Ok(bytes.len())
        {
            self.dropped
                .lock(|dropped| dropped.set(dropped.get().wrapping_add(1)));
        }
    }

    /// Lines dropped because the console was not keeping up.
    pub fn dropped(&self) -> u32 {
        self.dropped.lock(Cell::get)
    }
}

/// What the console needs from its board.
pub trait Board {
    /// Fills a fresh random salt (a hardware RNG where there is one).
    fn salt(&mut self) -> [u8; SALT_LEN];
    /// Restarts the board.
    fn reboot(&mut self) -> !;
}

/// The console over `io` for a gateway of `SLOTS` sessions; see the
/// [module documentation](self).
pub struct Console<'a, IO, F, B, const SLOTS: usize> {
    io: IO,
    settings: &'a SharedSettings,
    monitor: &'a Monitor<SLOTS>,
    store: &'a mut ConfigStore<F>,
    log: &'a ConsoleLog,
    board: B,
}

impl<IO, F, B, const SLOTS: usize> fmt::Debug for Console<'_, IO, F, B, SLOTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// A `fmt::Write` into a fixed buffer that keeps what fits.
struct Text<const N: usize>(heapless::String<N>);

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c == '\n' {
                let _ = self.0.push('\r');
            }
            let _ = self.0.push(c);
        }
        Ok(())
    }
}

impl<'a, IO: Read + Write, F: NorFlash, B: Board, const SLOTS: usize> Console<'a, IO, F, B, SLOTS> {
    /// A console on `io` for these settings, counters, flash record and log.
    pub fn new(
        io: IO,
        settings: &'a SharedSettings,
        monitor: &'a Monitor<SLOTS>,
        store: &'a mut ConfigStore<F>,
        log: &'a ConsoleLog,
        board: B,
    ) -> Self {
        Self {
            io,
            settings,
            monitor,
            store,
            log,
            board,
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    async fn print(&mut self, args: fmt::Arguments<'_>) {
        let mut text = Text::<512>(heapless::String::new());
        let _ = text.write_fmt(args);
        let _ = text.write_str("\n");
        self.write(text.0.as_bytes()).await;
    }

    /// Serves the console forever.
    pub async fn run(mut self) -> ! {
        let mut line: heapless::Vec<u8, LINE> = heapless::Vec::new();
        self.write(b"\r\n> ").await;
        loop {
            let mut byte = [0u8; 1];
            let mut logged = [0u8; 128];
            // Log lines wait while a command is being typed, so they never split its echo.
            let log = async {
                if line.is_empty() {
                    self.log.pipe.read(&mut logged).await
                } else {
                    core::future::pending().await
                }
            };
            let event = select(self.io.read(&mut byte), log).await;
            match event {
                Either::Second(mut n) => {
                    // Lines enter the pipe whole: finish the one begun before reading input.
                    while let Some(bytes) = logged.get(..n) {
                        self.write(bytes).await;
                        if bytes.last() == Some(&b'\n') || self.log.pipe.is_empty() {
                            break;
                        }
                        n = self.log.pipe.read(&mut logged).await;
                    }
                }
                Either::First(Ok(1)) => match byte[0] {
                    b'\r' | b'\n' => {
                        self.write(b"\r\n").await;
                        if !line.is_empty() {
                            let text = core::str::from_utf8(&line).unwrap_or("");
                            let mut copy: heapless::String<LINE> = heapless::String::new();
                            let _ = copy.push_str(text);
                            self.command(copy.trim()).await;
                            line.clear();
                        }
                        self.write(b"> ").await;
                    }
                    0x08 | 0x7f if line.pop().is_some() => {
                        self.write(b"\x08 \x08").await;
                    }
                    c if (c.is_ascii_graphic() || c == b' ') && line.push(c).is_ok() => {
                        self.write(&[c]).await;
                    }
                    _ => {}
                },
                Either::First(_) => {}
            }
        }
    }

    async fn command(&mut self, line: &str) {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match verb {
            "help" | "?" => self.print(format_args!("{HELP}")).await,
            "show" => self.show().await,
            "set" => {
                let result = self.settings.update(|s| s.apply_line(rest));
                self.done(result.map(|()| "ok")).await;
            }
            "user" => self.user(rest).await,
            "rule" => self.rule(rest).await,
            "save" => self.save().await,
            "sessions" => self.sessions().await,
            "stats" => self.stats().await,
            "reboot" => {
                self.print(format_args!("rebooting")).await;
                self.board.reboot()
            }
            _ => {
                self.print(format_args!("error: unknown command; {HELP}"))
                    .await
            }
        }
    }

    async fn done(&mut self, result: Result<&str, SettingsError>) {
        match result {
            Ok(text) => self.print(format_args!("{text}")).await,
            Err(e) => self.print(format_args!("error: {e}")).await,
        }
    }

    async fn show(&mut self) {
        let mut text = Text::<{ MAX_BODY + 256 }>(heapless::String::new());
        let _ = self.settings.read(|s| s.write_text(&mut text));
        self.write(text.0.as_bytes()).await;
    }

    async fn user(&mut self, args: &str) {
        let mut words = args.split_ascii_whitespace();
        let result = match (words.next(), words.next(), words.next(), words.next()) {
            (Some("add"), Some(name), Some(password), None) => {
                // Hashing takes a while: done outside the settings lock.
                let hash = PasswordHash::new(password.as_bytes(), self.board.salt());
                self.settings
                    .update(|s| s.set_user(name, hash))
                    .map(|()| "ok")
            }
            (Some("del"), Some(name), None, None) => {
                self.settings.update(|s| s.remove_user(name)).map(|()| "ok")
            }
            _ => Err(SettingsError::Invalid(
                "user add NAME PASSWORD | user del NAME",
            )),
        };
        self.done(result).await;
    }

    async fn rule(&mut self, args: &str) {
        let (verb, rest) = args.split_once(' ').unwrap_or((args, ""));
        let result = match verb {
            "add" => self
                .settings
                .update(|s| s.add_rule(rest.trim()))
                .map(|()| "ok"),
            "del" => match rest.trim().parse::<usize>() {
                Ok(index) if index < MAX_RULES => self
                    .settings
                    .update(|s| s.remove_rule(index))
                    .map(|()| "ok"),
                _ => Err(SettingsError::NotFound),
            },
            _ => Err(SettingsError::Invalid("rule add RULE | rule del INDEX")),
        };
        self.done(result).await;
    }

    async fn save(&mut self) {
        let mut body: heapless::String<MAX_BODY> = heapless::String::new();
        if self.settings.read(|s| s.write_text(&mut body)).is_err() {
            self.print(format_args!("error: settings larger than a record"))
                .await;
            return;
        }
        match self.store.save(body.as_bytes()) {
            Ok((slot, sequence)) => {
                self.print(format_args!(
                    "saved: slot {slot} sequence {sequence} ({} bytes)",
                    body.len()
                ))
                .await;
            }
            Err(e) => self.print(format_args!("error: save failed: {e:?}")).await,
        }
    }

    /// One line per session in progress, every slot of the pool in slot order (see
    /// [`write_session`]), then the count. Streamed: each session is copied out of the
    /// monitor and written on its own, so the lock is never held across the UART write and
    /// one line's buffer is all the memory it takes, however large the pool. Each line is
    /// the session as it was when that line was written (a session that starts or ends
    /// during the listing may or may not be in it); the count is of the lines written.
    async fn sessions(&mut self) {
        let mut count = 0;
        for slot in 0..SLOTS {
            let Some(session) = self.monitor.active(slot) else {
                continue;
            };
            count += 1;
            // The longest line (an IPv6 client with a scope, 64-character destination,
            // 20-digit counts) is under 300 characters.
            let mut text = Text::<320>(heapless::String::new());
            let _ = write_session(&mut text, &session, Instant::now());
            self.write(text.0.as_bytes()).await;
        }
        self.print(format_args!("{count} in progress")).await;
    }

    async fn stats(&mut self) {
        let c = self.monitor.counters();
        let mut text = Text::<512>(heapless::String::new());
        let _ = writeln!(
            text,
            "sessions {} relayed {} dropped {} bytes-up {} bytes-down {} login-failures {} log-dropped {} uptime-ms {}",
            c.sessions,
            c.relayed,
            c.dropped,
            c.bytes_up,
            c.bytes_down,
            c.login_failures,
            self.log.dropped(),
            Instant::now().as_millis()
        );
        let _ = write!(text, "refused");
        for why in Refusal::ALL {
            let _ = write!(
                text,
                " {} {}",
                why.name(),
                c.refused.get(why.index()).unwrap_or(&0)
            );
        }
        let _ = writeln!(text);
        self.write(text.0.as_bytes()).await;
    }
}

/// One line of `sessions`: `slot S client ADDR:PORT CMD DST for T s up U down D idle I ms`
/// — the age in whole seconds, the bytes relayed each way so far (updated as they move) and
/// the milliseconds since bytes last moved either way (since the accept, before any did).
/// `CMD` and `DST` are `-` until the request is known.
fn write_session(out: &mut impl fmt::Write, session: &ActiveSession, now: Instant) -> fmt::Result {
    writeln!(
        out,
        "slot {} client {} {} {} for {} s up {} down {} idle {} ms",
        session.slot,
        session.client,
        session.command.and_then(|c| c.name()).unwrap_or("-"),
        if session.destination.is_empty() {
            "-"
        } else {
            session.destination.as_str()
        },
        now.saturating_duration_since(session.started).as_secs(),
        session.up,
        session.down,
        now.saturating_duration_since(session.moved).as_millis()
    )
}

/// The settings at boot: the newest good record in `store` parsed over `defaults`; if it
/// does not parse (a record saved by firmware that knew settings this one does not), the
/// other slot's good record; else the defaults. Reports what it found through `say` (one
/// line each), e.g. a corrupt slot. Records are parsed in place over one copy of the
/// defaults, to keep the boot stack small.
pub fn load_settings<F: NorFlash>(
    store: &mut ConfigStore<F>,
    defaults: Settings,
    mut say: impl FnMut(fmt::Arguments<'_>),
) -> Settings {
    let mut body = [0u8; MAX_BODY];
    let loaded = match store.load(&mut body) {
        Ok(loaded) => loaded,
        Err(e) => {
            say(format_args!("config: flash read failed ({e:?}): defaults"));
            return defaults;
        }
    };
    for (slot, state) in loaded.slots.iter().enumerate() {
        say(format_args!("config: slot {slot}: {state:?}"));
    }
    let Some(chosen) = loaded.chosen else {
        say(format_args!("config: no saved settings: defaults"));
        return defaults;
    };
    let mut settings = defaults.clone();
    match parse_record(&body, loaded.slots.get(chosen), &mut settings) {
        Ok(()) => {
            say(format_args!("config: loaded slot {chosen}"));
            return settings;
        }
        Err(e) => say(format_args!("config: slot {chosen} does not parse ({e})")),
    }
    let other = 1 - chosen;
    if !matches!(loaded.slots.get(other), Some(SlotState::Good { .. })) {
        say(format_args!("config: no older good record: defaults"));
        return defaults;
    }
    // The older record is read again: `body` holds the newest.
    let state = match store.read_slot(other, &mut body) {
        Ok(state) => state,
        Err(e) => {
            say(format_args!("config: flash read failed ({e:?}): defaults"));
            return defaults;
        }
    };
    settings.clone_from(&defaults);
    match parse_record(&body, Some(&state), &mut settings) {
        Ok(()) => {
            say(format_args!("config: loaded the older slot {other}"));
            settings
        }
        Err(e) => {
            say(format_args!(
                "config: slot {other} does not parse either ({e}): defaults"
            ));
            defaults
        }
    }
}

/// A good slot's body in `body`, parsed over `settings` (left partly changed on an error).
fn parse_record(
    body: &[u8; MAX_BODY],
    state: Option<&SlotState>,
    settings: &mut Settings,
) -> Result<(), LineError> {
    let len = match state {
        Some(SlotState::Good { len, .. }) => *len,
        _ => 0,
    };
    let bytes = body.get(..len).unwrap_or_default();
    let text = core::str::from_utf8(bytes).map_err(|e| LineError {
        line: 1 + bytes
            .get(..e.valid_up_to())
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        error: SettingsError::Invalid("not UTF-8"),
    })?;
    settings.parse_over(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ram_flash::RamFlash;
    use socksgate_core::rules::Action;

    #[test]
    fn a_session_line_shows_its_bytes_so_far() {
        let started = Instant::from_millis(1_000);
        let mut destination = heapless::String::new();
        destination.push_str("origin.test:7007").unwrap();
        let session = ActiveSession {
            slot: 2,
            client: "10.0.2.2:40000".parse().unwrap(),
            started,
            command: Some(socksgate_core::wire::Command::Connect),
            destination,
            up: 12_345,
            down: 678_901,
            moved: Instant::from_millis(13_750),
        };
        let mut line = String::new();
        write_session(&mut line, &session, Instant::from_millis(14_000)).unwrap();
        assert_eq!(
            line,
            "slot 2 client 10.0.2.2:40000 connect origin.test:7007 for 13 s up 12345 down 678901 idle 250 ms\n"
        );
        // Before the request: no command, no destination, nothing moved.
        let waiting = ActiveSession {
            command: None,
            destination: heapless::String::new(),
            up: 0,
            down: 0,
            moved: started,
            ..session
        };
        let mut line = String::new();
        write_session(&mut line, &waiting, Instant::from_millis(1_500)).unwrap();
        assert_eq!(
            line,
            "slot 2 client 10.0.2.2:40000 - - for 0 s up 0 down 0 idle 500 ms\n"
        );
    }

    fn store() -> ConfigStore<RamFlash> {
        ConfigStore::new(RamFlash(vec![0xFF; 2 * 4096]), 0, 4096)
    }

    fn boot(store: &mut ConfigStore<RamFlash>) -> (Settings, Vec<String>) {
        let mut lines = Vec::new();
        let settings = load_settings(store, Settings::new(1080, Action::Deny), |line| {
            lines.push(line.to_string())
        });
        (settings, lines)
    }

    #[test]
    fn the_newest_record_is_loaded() {
        let mut store = store();
        store.save(b"port 1081\n").unwrap();
        store.save(b"port 1082\n").unwrap();
        let (settings, lines) = boot(&mut store);
        assert_eq!(settings.port, 1082);
        assert!(
            lines.contains(&"config: loaded slot 1".to_string()),
            "{lines:?}"
        );
    }

    #[test]
    fn a_newest_record_that_does_not_parse_falls_back_to_the_older_one() {
        let mut store = store();
        store.save(b"port 1081\ndefault allow\n").unwrap();
        // Good checksum, but a key this firmware does not know (a newer firmware's record).
        store.save(b"port 1082\nfuture-key 1\n").unwrap();
        let (settings, lines) = boot(&mut store);
        assert_eq!(settings.port, 1081, "{lines:?}");
        assert_eq!(settings.default_action, Action::Allow);
        assert!(
            lines.contains(&"config: slot 1 does not parse (line 2: unknown key)".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"config: loaded the older slot 0".to_string()),
            "{lines:?}"
        );

        // The same with the newest in slot 0 and bytes that are not UTF-8.
        assert_eq!(store.save(b"port 1083\n").unwrap(), (0, 3));
        assert_eq!(store.save(b"port 1084\n").unwrap(), (1, 4));
        assert_eq!(store.save(b"port \xff\n").unwrap(), (0, 5));
        let (settings, lines) = boot(&mut store);
        assert_eq!(settings.port, 1084, "{lines:?}");
        assert!(
            lines.contains(&"config: slot 0 does not parse (line 1: not UTF-8)".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"config: loaded the older slot 1".to_string()),
            "{lines:?}"
        );
    }

    #[test]
    fn neither_record_parsing_gives_the_factory_settings() {
        let mut store = store();
        store.save(b"port x\n").unwrap();
        store.save(b"bogus\n").unwrap();
        let (settings, lines) = boot(&mut store);
        assert_eq!(settings, Settings::new(1080, Action::Deny));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("config: slot 0 does not parse either")),
            "{lines:?}"
        );
        // A lone record that does not parse: no older one to try.
        let mut store = self::store();
        store.save(b"bogus\n").unwrap();
        let (settings, lines) = boot(&mut store);
        assert_eq!(settings, Settings::new(1080, Action::Deny));
        assert!(
            lines.contains(&"config: no older good record: defaults".to_string()),
            "{lines:?}"
        );
    }
}
