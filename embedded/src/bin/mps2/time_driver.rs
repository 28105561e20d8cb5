//! embassy-time driver for the mps2-an386 image: the time from the CMSDK APB timer 0, alarms
//! on SysTick at 1 kHz.
//!
//! `now()` reads timer 0, a 32-bit down-counter at the 25 MHz core clock left free-running
//! from its 0xFFFF_FFFF reload, and extends it to 64 bits (it wraps every 171 s; SysTick
//! reads it a thousand times a second). Counting SysTick interrupts instead loses time in
//! QEMU: its timer callbacks run on the emulator's main loop, and when that is busy (a burst
//! of network I/O) several 1 ms periods end in one late callback, one interrupt — the guest
//! clock then ran up to 30 % slow under load, so every duration the firmware reported was
//! short. A counter register is read from QEMU's virtual clock, which follows the host's.
//! The tick rate stays embassy-time's default 1 MHz, which both boards share, so no
//! `tick-hz-*` feature has to differ between the binaries. Alarms are checked on every
//! SysTick interrupt, so a timer fires about 1 ms late at most.
#![allow(unsafe_code)] // timer 0's registers (MMIO) and one `#[exception]` handler.

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
/// Timer 0 counts core clock cycles; embassy-time ticks are this many cycles.
const CYCLES_PER_TICK: u64 = CORE_HZ as u64 / TICK_HZ;
const _: () = assert!((CORE_HZ as u64).is_multiple_of(TICK_HZ));

/// CMSDK APB timer 0 (ARM DDI0479C §4.4): CTRL, VALUE (counts down), RELOAD.
const TIMER0_CTRL: *mut u32 = 0x4000_0000 as *mut u32;
const TIMER0_VALUE: *mut u32 = 0x4000_0004 as *mut u32;
const TIMER0_RELOAD: *mut u32 = 0x4000_0008 as *mut u32;

fn timer0_value() -> u32 {
    // SAFETY: an aligned read of timer 0's VALUE register, which has no side effect.
    unsafe { TIMER0_VALUE.read_volatile() }
}

struct State {
    /// Core clock cycles since `init`.
    cycles: u64,
    /// Timer 0's value when `cycles` was last brought up to date.
    last: u32,
    queue: Queue,
}

impl State {
    /// Brings `cycles` up to date; returns the time in embassy-time ticks.
    fn now(&mut self) -> u64 {
        let value = timer0_value();
        // A down-counter: the cycles since the last read, across one wrap at most.
        self.cycles += u64::from(self.last.wrapping_sub(value));
        self.last = value;
        self.cycles / CYCLES_PER_TICK
    }
}

struct SysTickDriver {
    state: Mutex<RefCell<State>>,
}

time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    // `last` is set by `init`; all-zero here keeps the state in `.bss`.
    state: Mutex::new(RefCell::new(State { cycles: 0, last: 0, queue: Queue::new() })),
});

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.state.borrow_ref_mut(cs).now())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut state = self.state.borrow_ref_mut(cs);
            let now = state.now();
            state.queue.schedule_wake(at, waker);
            // Expired already: wake now rather than on the next tick.
            state.queue.next_expiration(now);
        });
    }
}

/// Starts timer 0 and SysTick. Call once, before the executor runs.
pub(crate) fn init(mut syst: SYST) {
    // SAFETY: aligned writes to timer 0's registers; nothing else uses timer 0. Reload and
    // value first, then enable (CTRL bit 0) without its interrupt.
    unsafe {
        TIMER0_RELOAD.write_volatile(u32::MAX);
        TIMER0_VALUE.write_volatile(u32::MAX);
        TIMER0_CTRL.write_volatile(1);
    }
    critical_section::with(|cs| DRIVER.state.borrow_ref_mut(cs).last = timer0_value());
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
        let now = state.now();
        state.queue.next_expiration(now);
    });
}
