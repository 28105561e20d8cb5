//! The run-time configuration: [`Settings`] behind a lock, shared by the gateway and the
//! console.
//!
//! The lock is a critical section held only for the length of one decision (a rule
//! evaluation, a copy of a user's hash); the password hash itself is computed outside it,
//! so interrupts are never held off for the 30 ms a check takes.

use core::cell::RefCell;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::Duration;
use socksgate_core::Policy;

use crate::config::Configuration;
use crate::settings::Settings;

/// [`Settings`] shared between tasks; see the [module documentation](self).
pub struct SharedSettings {
    settings: Mutex<CriticalSectionRawMutex, RefCell<Settings>>,
    close_timeout: Duration,
}

impl core::fmt::Debug for SharedSettings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedSettings").finish_non_exhaustive()
    }
}

impl SharedSettings {
    /// Shares `settings` (a 5 s orderly close bound).
    pub fn new(settings: Settings) -> Self {
        Self {
            settings: Mutex::new(RefCell::new(settings)),
            close_timeout: Duration::from_secs(5),
        }
    }

    /// Runs `f` on the settings (briefly: the lock is a critical section).
    pub fn read<R>(&self, f: impl FnOnce(&Settings) -> R) -> R {
        self.settings.lock(|cell| f(&cell.borrow()))
    }

    /// Runs `f` on the settings to change them; sessions that start afterwards see the
    /// change (running ones see it at their next decision).
    pub fn update<R>(&self, f: impl FnOnce(&mut Settings) -> R) -> R {
        self.settings.lock(|cell| f(&mut cell.borrow_mut()))
    }
}

impl Configuration for SharedSettings {
    fn port(&self) -> u16 {
        self.read(|s| s.port)
    }

    fn with_policy<R>(&self, f: impl FnOnce(&Policy<'_>) -> R) -> R {
        self.read(|s| f(&s.policy()))
    }

    fn authenticate(&self, name: &[u8], password: &[u8]) -> bool {
        // Find the user under the lock, hash outside it.
        let found = self.read(|s| s.find_user(name));
        crate::password::check(found.as_ref(), password)
    }

    fn idle_timeout(&self) -> Duration {
        self.read(Settings::idle_timeout)
    }

    fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    fn max_sessions(&self) -> usize {
        self.read(|s| usize::from(s.max_sessions))
    }

    fn per_client(&self) -> usize {
        self.read(|s| usize::from(s.per_client))
    }

    fn login_throttle(&self) -> Option<(u32, Duration)> {
        self.read(|s| {
            let t = s.login_throttle;
            (t.failures > 0).then(|| {
                (
                    u32::from(t.failures),
                    Duration::from_secs(u64::from(t.lockout_secs)),
                )
            })
        })
    }
}
