//! embassy-time driver for the mps2-an386 image: SysTick at 1 kHz.
//!
//! `now()` has 1 ms resolution (the tick rate stays embassy-time's default 1 MHz, which both
//! boards share, so no `tick-hz-*` feature has to differ between the binaries). Alarms are
//! checked on every SysTick interrupt, so a timer fires at most 1 ms late.
#![allow(unsafe_code)] // one `#[exception]` handler; the driver itself is safe code.

use core::cell::RefCell;
use core::task::Waker;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::{Driver, TICK_HZ, time_driver_impl};
use embassy_time_queue_utils::Queue;

/// Core clock of mps2-an386 (QEMU models 25 MHz).
const CORE_HZ: u32 = 25_000_000;
/// SysTick interrupts per second.
const SYSTICK_HZ: u32 = 1_000;
/// embassy-time ticks per SysTick interrupt.
const TICKS_PER_IRQ: u64 = TICK_HZ / SYSTICK_HZ as u64;
const _: () = assert!(TICK_HZ.is_multiple_of(SYSTICK_HZ as u64));

struct State {
    now: u64,
    queue: Queue,
}

struct SysTickDriver {
    state: Mutex<RefCell<State>>,
}

time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    state: Mutex::new(RefCell::new(State { now: 0, queue: Queue::new() })),
});

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.state.borrow_ref(cs).now)
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut state = self.state.borrow_ref_mut(cs);
            let now = state.now;
            state.queue.schedule_wake(at, waker);
            // Expired already: wake now rather than on the next tick.
            state.queue.next_expiration(now);
        });
    }
}

/// Starts SysTick. Call once, before the executor runs.
pub(crate) fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / SYSTICK_HZ - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let mut state = DRIVER.state.borrow_ref_mut(cs);
        state.now += TICKS_PER_IRQ;
        let now = state.now;
        state.queue.next_expiration(now);
    });
}
