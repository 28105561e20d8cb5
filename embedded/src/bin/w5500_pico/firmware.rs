//! Boot: reset cause, watchdog, settings from the QSPI flash, MAC from the flash chip's unique
//! ID, W5500 reset and MACRAW setup over SPI0, stack (DHCP or static), gateway, console and
//! session log on UART0.
#![allow(unsafe_code)] // the panic handler and the console's reboot take the watchdog back.

use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use embassy_net_wiznet::chip::W5500;
use embassy_net_wiznet::{Device, State};
use embassy_rp::clocks::RoscRng;
use embassy_rp::flash::{Blocking, Flash};
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::{DMA_CH0, DMA_CH1, FLASH, SPI0, UART0, WATCHDOG};
use embassy_rp::spi::{self, Async, Spi};
use embassy_rp::uart::{self, BufferedUart};
use embassy_rp::watchdog::{ResetReason, Watchdog};
use embassy_rp::{bind_interrupts, dma};
use embassy_time::{Delay, Duration, Timer};
use embedded_hal_bus::spi::ExclusiveDevice;
use socksgate_embedded::console::{Board, Console, ConsoleLog, load_settings};
use socksgate_embedded::live::SharedSettings;
use socksgate_embedded::monitor::Monitor;
use socksgate_embedded::store::ConfigStore;
use socksgate_embedded::{Configuration, Gateway, GatewayStorage};
use static_cell::StaticCell;

use crate::config::{
    FLASH_SIZE, SESSIONS, SETTINGS_FLASH, SETTINGS_SLOT, SOCKET_BUF, SOCKETS, UDP_SLOTS, defaults,
};

bind_interrupts!(struct Irqs {
    DMA_IRQ_0 => dma::InterruptHandler<DMA_CH0>, dma::InterruptHandler<DMA_CH1>;
    UART0_IRQ => uart::BufferedInterruptHandler<UART0>;
});

/// The W5500 on SPI0 with its chip select (GP17), interrupt (GP21) and reset (GP20) lines.
type WiznetRunner = embassy_net_wiznet::Runner<
    'static,
    W5500,
    ExclusiveDevice<Spi<'static, SPI0, Async>, Output<'static>, Delay>,
    Input<'static>,
    Output<'static>,
>;
type SettingsFlash = Flash<'static, FLASH, Blocking, FLASH_SIZE>;

/// Console output and session log lines share UART0 through this.
static LOG: ConsoleLog = ConsoleLog::new();

/// Watchdog scratch register holding [`PANICKED`] across the reset a panic causes (the
/// scratch registers survive a watchdog reset; the boot ROM uses 4–7, not 0).
const PANIC_SCRATCH: usize = 0;
const PANICKED: u32 = 0x5041_4e43; // "PANC"
/// The watchdog's timeout; fed every 500 ms. A 4 KiB erase takes at most 400 ms with
/// interrupts off (W25Q16JV), well inside it.
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(4);

/// The watchdog peripheral, taken back where its owner cannot be reached: the panic handler
/// and the console's `reboot`, both of which only reset the board.
fn watchdog_for_reset() -> Watchdog {
    // SAFETY: used only to write a scratch register and trigger the reset; the feeding
    // task's copy is never used again afterwards.
    Watchdog::new(unsafe { WATCHDOG::steal() })
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // No logger that can run here (the console is a task): mark the panic for the next boot
    // and reset rather than stop, so that the gateway comes back by itself.
    let mut watchdog = watchdog_for_reset();
    watchdog.set_scratch(PANIC_SCRATCH, PANICKED);
    watchdog.trigger_reset();
    loop {
        cortex_m::asm::nop();
    }
}

/// Why the board (re)started: the watchdog's reason register and the panic marker, which
/// is then cleared.
fn reset_cause(watchdog: &mut Watchdog) -> &'static str {
    let panicked = watchdog.get_scratch(PANIC_SCRATCH) == PANICKED;
    watchdog.set_scratch(PANIC_SCRATCH, 0);
    match watchdog.reset_reason() {
        Some(ResetReason::Forced) if panicked => "panic",
        Some(ResetReason::Forced) => "watchdog reset (console reboot)",
        Some(ResetReason::TimedOut) => "watchdog timeout",
        None => "power on / reset pin",
    }
}

fn say(args: core::fmt::Arguments<'_>) {
    LOG.line(args);
}

#[embassy_executor::task]
async fn wiznet_task(runner: WiznetRunner) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Device<'static>>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn link_task(stack: Stack<'static>) -> ! {
    socksgate_embedded::link::watch(stack, say).await
}

/// Feeds the watchdog every 500 ms from the same executor as the gateway: if a task stops
/// yielding or the timer queue stalls, the feeding stops and the watchdog resets the board.
/// No interrupt feeds it.
#[embassy_executor::task]
async fn watchdog_task(mut watchdog: Watchdog) -> ! {
    watchdog.start(WATCHDOG_TIMEOUT);
    loop {
        watchdog.feed(WATCHDOG_TIMEOUT);
        Timer::after_millis(500).await;
    }
}

#[embassy_executor::task]
async fn gateway_task(
    stack: Stack<'static>,
    storage: &'static mut GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>,
    settings: &'static SharedSettings,
    monitor: &'static Monitor<SESSIONS>,
) -> ! {
    stack.wait_config_up().await;
    say(format_args!(
        "gateway up: port {} ({} sessions)",
        settings.port(),
        SESSIONS
    ));
    Gateway::new(stack, settings, storage, monitor)
        .with_report(&|record| say(format_args!("{record}")))
        .run()
        .await
}

/// The Pico: salts from the ring oscillator's random bit, reboot through the watchdog.
struct Pico;

impl Board for Pico {
    fn salt(&mut self) -> [u8; 16] {
        // The RP2040 has no TRNG; ROSC's RANDOMBIT is jittery but biased, so its bits are
        // hashed (a salt must be unique per user, not secret).
        use sha2::{Digest, Sha256};
        let mut bits = [0u8; 64];
        RoscRng.fill_bytes(&mut bits);
        let digest = Sha256::digest(bits);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&digest[..16]);
        salt
    }

    fn reboot(&mut self) -> ! {
        watchdog_for_reset().trigger_reset();
        loop {
            cortex_m::asm::nop();
        }
    }
}

#[embassy_executor::task]
async fn console_task(
    uart: BufferedUart,
    settings: &'static SharedSettings,
    monitor: &'static Monitor<SESSIONS>,
    store: &'static mut ConfigStore<SettingsFlash>,
) -> ! {
    Console::new(uart, settings, monitor, store, &LOG, Pico)
        .run()
        .await
}

/// A locally administered unicast MAC from the flash chip's 64-bit unique ID, so that every
/// board has its own without editing the source (the RP2040 itself has no unique ID).
fn mac_from_flash_id(flash: &mut SettingsFlash) -> [u8; 6] {
    let mut id = [0u8; 8];
    // On failure every board gets the same fallback ID; the address is still valid.
    let _ = flash.blocking_unique_id(&mut id);
    // Fold the 8 bytes into 5, and mark the first octet locally administered, unicast.
    [
        0x02,
        id[0] ^ id[5],
        id[1] ^ id[6],
        id[2] ^ id[7],
        id[3],
        id[4],
    ]
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());

    // UART0 on GP0 (TX) / GP1 (RX), the Pico's default UART: 115200 8N1.
    static UART_TX: StaticCell<[u8; 256]> = StaticCell::new();
    static UART_RX: StaticCell<[u8; 256]> = StaticCell::new();
    let uart = BufferedUart::new(
        p.UART0,
        p.PIN_0,
        p.PIN_1,
        Irqs,
        UART_TX.init([0; 256]),
        UART_RX.init([0; 256]),
        uart::Config::default(),
    );

    let mut watchdog = Watchdog::new(p.WATCHDOG);
    say(format_args!(
        "socksgate-w5500-pico: reset cause: {}",
        reset_cause(&mut watchdog)
    ));
    // A debugger halting the cores must not reset the board under it.
    watchdog.pause_on_debug(true);

    let mut flash = SettingsFlash::new_blocking(p.FLASH);
    let mac = mac_from_flash_id(&mut flash);
    say(format_args!("MAC {:02x?}", mac));
    static STORE: StaticCell<ConfigStore<SettingsFlash>> = StaticCell::new();
    static SETTINGS: StaticCell<SharedSettings> = StaticCell::new();
    static MONITOR: StaticCell<Monitor<SESSIONS>> = StaticCell::new();
    let store = STORE.init(ConfigStore::new(flash, SETTINGS_FLASH, SETTINGS_SLOT));
    let loaded = load_settings(store, defaults(), say);
    let net = loaded.net_config();
    let settings = SETTINGS.init_with(|| SharedSettings::new(loaded));
    let monitor = MONITOR.init_with(Monitor::new);
    let seed = RoscRng.next_u64();

    // W5500-EVB-Pico wiring: SCK GP18, MOSI GP19, MISO GP16, CSn GP17, RSTn GP20, INTn GP21.
    // SPI mode 0. The W5500 is guaranteed to 33.3 MHz (80 MHz only in theory); the RP2040
    // divides its 125 MHz peripheral clock by an even prescaler and a post-divider, and
    // 125 / 4 = 31.25 MHz is the fastest step under the guarantee.
    let mut spi_config = spi::Config::default();
    spi_config.frequency = 31_250_000;
    let spi = Spi::new(
        p.SPI0, p.PIN_18, p.PIN_19, p.PIN_16, p.DMA_CH0, p.DMA_CH1, Irqs, spi_config,
    );
    let cs = Output::new(p.PIN_17, Level::High);
    // Infallible: the chip select is an RP2040 GPIO.
    let Ok(spi) = ExclusiveDevice::new(spi, cs, Delay);
    let interrupt = Input::new(p.PIN_21, Pull::Up);
    let reset = Output::new(p.PIN_20, Level::High);

    // The watchdog runs from here on: a W5500 that never answers ends in a reset too.
    spawner.spawn(watchdog_task(watchdog).unwrap());
    spawner.spawn(console_task(uart, settings, monitor, store).unwrap());

    // Two frames each way between the W5500 runner and the stack.
    static WIZNET: StaticCell<State<2, 2>> = StaticCell::new();
    let wiznet = embassy_net_wiznet::new(mac, WIZNET.init(State::new()), spi, interrupt, reset);
    let Ok((device, wiznet_runner)) = wiznet.await else {
        panic!("W5500 did not answer on SPI0")
    };
    spawner.spawn(wiznet_task(wiznet_runner).unwrap());

    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    static STORAGE: StaticCell<GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>> = StaticCell::new();
    let (stack, runner) =
        embassy_net::new(device, net, RESOURCES.init_with(StackResources::new), seed);
    // Built in place at run time: no flash image of it, no copy of it on the stack.
    let storage = STORAGE.init_with(GatewayStorage::default);
    spawner.spawn(net_task(runner).unwrap());
    spawner.spawn(link_task(stack).unwrap());
    spawner.spawn(gateway_task(stack, storage, settings, monitor).unwrap());
}
