//! Boot: reset cause, clocks, watchdog, settings from flash, MAC from the unique ID,
//! Ethernet, stack (DHCP or static), gateway, console on USART3, logs over RTT (defmt).
#![allow(unsafe_code)] // the panic marker in `.uninit` survives a reset: raw pointer access;
// the Ethernet packet queue initialised in place.

use core::mem::MaybeUninit;
use core::ptr::{addr_of, addr_of_mut};

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use embassy_stm32::bind_interrupts;
use embassy_stm32::eth::{self, Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::flash::{Blocking, Flash};
use embassy_stm32::peripherals::{ETH, ETH_SMA, RNG};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::usart::{self, BufferedUart};
use embassy_stm32::wdg::IndependentWatchdog;
use embassy_time::Timer;
use socksgate_embedded::console::{Board, Console, ConsoleLog, load_settings};
use socksgate_embedded::live::SharedSettings;
use socksgate_embedded::monitor::Monitor;
use socksgate_embedded::store::ConfigStore;
use socksgate_embedded::{Configuration, Gateway, SessionBuffers, UdpRefusalBuffers};
use static_cell::StaticCell;

use crate::config::{
    ETH_FRAMES, SESSIONS, SETTINGS_FLASH, SETTINGS_SLOT, SOCKET_BUF, SOCKETS, UDP_SLOTS, defaults,
};
use crate::ram_banks;

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<RNG>;
    USART3 => usart::BufferedInterruptHandler<embassy_stm32::peripherals::USART3>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;
type SettingsFlash = Flash<'static, Blocking>;

/// Console output and session log lines share USART3 through this.
static LOG: ConsoleLog = ConsoleLog::new();

/// Set by the panic handler just before it resets the board, read (and cleared) at the
/// next boot: tells a panic from other software resets.
#[unsafe(link_section = ".uninit.PANIC_MARK")]
static mut PANIC_MARK: MaybeUninit<u32> = MaybeUninit::uninit();
const PANICKED: u32 = 0x5041_4e43; // "PANC"

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    // SAFETY: a plain word in `.uninit`; nothing else runs once a panic is handled.
    unsafe { addr_of_mut!(PANIC_MARK).write(MaybeUninit::new(PANICKED)) };
    // Reset rather than stop: a gateway must come back by itself.
    cortex_m::peripheral::SCB::sys_reset()
}

/// Why the board (re)started, from RCC_RSR, which is then cleared.
fn reset_cause() -> &'static str {
    let rcc = embassy_stm32::pac::RCC;
    let flags = rcc.rsr().read();
    // SAFETY: read once at boot, before anything can panic; garbage after a power-on reset
    // is never the marker's exact value by more than chance and is then overwritten.
    let panicked = unsafe { addr_of!(PANIC_MARK).read().assume_init() } == PANICKED;
    unsafe { addr_of_mut!(PANIC_MARK).write(MaybeUninit::new(0)) };
    rcc.rsr().modify(|w| w.set_rmvf(true));
    if flags.iwdg1rstf() {
        "independent watchdog"
    } else if flags.wwdg1rstf() {
        "window watchdog"
    } else if flags.sftrstf() && panicked {
        "panic"
    } else if flags.sftrstf() {
        "software reset (console reboot)"
    } else if flags.borrstf() || flags.porrstf() {
        "power on / brown out"
    } else if flags.pinrstf() {
        "reset pin"
    } else {
        "unknown"
    }
}

fn say(args: core::fmt::Arguments<'_>) {
    defmt::info!("{}", defmt::Display2Format(&args));
    LOG.line(args);
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn link_task(stack: Stack<'static>) -> ! {
    socksgate_embedded::link::watch(stack, say).await
}

/// Feeds the independent watchdog (4 s) every 500 ms. It runs in the same executor as the
/// gateway: if a task stops yielding or the timer queue stalls, the feeding stops and the
/// watchdog resets the board. No interrupt feeds it.
#[embassy_executor::task]
async fn watchdog_task(
    mut watchdog: IndependentWatchdog<'static, embassy_stm32::peripherals::IWDG1>,
) -> ! {
    watchdog.unleash();
    loop {
        watchdog.pet();
        Timer::after_millis(500).await;
    }
}

#[embassy_executor::task]
async fn gateway_task(
    stack: Stack<'static>,
    sessions: [&'static mut SessionBuffers<SOCKET_BUF>; SESSIONS],
    rest: &'static mut UdpRefusalBuffers<UDP_SLOTS>,
    settings: &'static SharedSettings,
    monitor: &'static Monitor<SESSIONS>,
) -> ! {
    stack.wait_config_up().await;
    say(format_args!(
        "gateway up: port {} ({} sessions)",
        settings.port(),
        SESSIONS
    ));
    Gateway::from_parts(stack, settings, sessions, rest, monitor)
        .with_report(&|record| say(format_args!("{record}")))
        .run()
        .await
}

/// The NUCLEO: salts from the hardware RNG, reboot by SYSRESETREQ.
struct Nucleo {
    rng: Rng<'static, RNG>,
}

impl Board for Nucleo {
    fn salt(&mut self) -> [u8; 16] {
        let mut salt = [0u8; 16];
        self.rng.fill_bytes(&mut salt);
        salt
    }

    fn reboot(&mut self) -> ! {
        cortex_m::peripheral::SCB::sys_reset()
    }
}

#[embassy_executor::task]
async fn console_task(
    uart: BufferedUart<'static>,
    settings: &'static SharedSettings,
    monitor: &'static Monitor<SESSIONS>,
    store: &'static mut ConfigStore<SettingsFlash>,
    rng: Rng<'static, RNG>,
) -> ! {
    Console::new(uart, settings, monitor, store, &LOG, Nucleo { rng })
        .run()
        .await
}

/// 400 MHz from the HSI through PLL1 (HSI48 for the RNG), as embassy's H7 Ethernet example.
fn clocks() -> embassy_stm32::Config {
    use embassy_stm32::rcc::*;
    let mut config = embassy_stm32::Config::default();
    config.rcc.hsi = Some(HSIPrescaler::DIV1);
    config.rcc.csi = true;
    config.rcc.hsi48 = Some(Default::default());
    config.rcc.pll1 = Some(Pll {
        source: PllSource::HSI,
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL50,
        fracn: None,
        divp: Some(PllDiv::DIV2),
        divq: None,
        divr: None,
    });
    config.rcc.sys = Sysclk::PLL1_P; // 400 MHz
    config.rcc.ahb_pre = AHBPrescaler::DIV2; // 200 MHz
    config.rcc.apb1_pre = APBPrescaler::DIV2;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.apb3_pre = APBPrescaler::DIV2;
    config.rcc.apb4_pre = APBPrescaler::DIV2;
    config.rcc.voltage_scale = VoltageScale::Scale1;
    config
}

/// A locally administered unicast MAC from the chip's 96-bit unique ID (SHA-256, so
/// boards whose IDs differ only in a few bits still get unrelated addresses).
fn mac_from_uid() -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(embassy_stm32::uid::uid());
    [0x02, digest[0], digest[1], digest[2], digest[3], digest[4]]
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let cause = reset_cause();
    let p = embassy_stm32::init(clocks());
    say(format_args!("socksgate-h743: reset cause: {cause}"));
    let watchdog = IndependentWatchdog::new(p.IWDG1, 4_000_000);
    let mut rng = Rng::new(p.RNG, Irqs);
    let seed = rng.next_u64();

    static STORE: StaticCell<ConfigStore<SettingsFlash>> = StaticCell::new();
    static SETTINGS: StaticCell<SharedSettings> = StaticCell::new();
    static MONITOR: StaticCell<Monitor<SESSIONS>> = StaticCell::new();
    let store = STORE.init(ConfigStore::new(
        Flash::new_blocking(p.FLASH),
        SETTINGS_FLASH,
        SETTINGS_SLOT,
    ));
    let loaded = load_settings(store, defaults(), say);
    let net = loaded.net_config();
    let settings = SETTINGS.init_with(|| SharedSettings::new(loaded));
    let monitor = MONITOR.init_with(Monitor::new);

    let mac = mac_from_uid();
    say(format_args!("MAC {:02x?}", mac));
    static PACKETS: StaticCell<PacketQueue<ETH_FRAMES, ETH_FRAMES>> = StaticCell::new();
    // NUCLEO-H743ZI2 RMII wiring (UM2407): REF_CLK PA1, CRS_DV PA7, RXD0 PC4, RXD1 PC5,
    // TXD0 PG13, TXD1 PB13, TX_EN PG11, MDIO PA2, MDC PC1.
    // Zeroed in place: built by value it went through the main task's stack (≈ 18 KB at 6
    // frames each way, most of that task's frame).
    let packets = PACKETS.uninit();
    PacketQueue::init(packets);
    // SAFETY: `PacketQueue::init` zeroes the whole queue, the value embassy-stm32 documents
    // as initialised ("calling `assume_init` on the MaybeUninit is guaranteed safe").
    let packets = unsafe { packets.assume_init_mut() };
    let device: Device = Ethernet::new(
        packets, p.ETH, Irqs, p.PA1, p.PA7, p.PC4, p.PC5, p.PG13, p.PB13, p.PG11, mac, p.ETH_SMA,
        p.PA2, p.PC1,
    );
    // USART3 on PD8 (TX) / PD9 (RX): the ST-LINK virtual COM port, 115200 8N1.
    static UART_TX: StaticCell<[u8; 256]> = StaticCell::new();
    static UART_RX: StaticCell<[u8; 256]> = StaticCell::new();
    let uart = match BufferedUart::new(
        p.USART3,
        p.PD9,
        p.PD8,
        UART_TX.init([0; 256]),
        UART_RX.init([0; 256]),
        Irqs,
        usart::Config::default(),
    ) {
        Ok(uart) => uart,
        Err(e) => panic!("USART3: {e:?}"),
    };

    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) =
        embassy_net::new(device, net, RESOURCES.init_with(StackResources::new), seed);
    // Session buffers spread over SRAM1–3, DTCM and AXI SRAM (ram_banks.rs).
    let (sessions, rest) = ram_banks::session_storage();
    spawner.spawn(watchdog_task(watchdog).unwrap());
    spawner.spawn(net_task(runner).unwrap());
    spawner.spawn(link_task(stack).unwrap());
    spawner.spawn(gateway_task(stack, sessions, rest, settings, monitor).unwrap());
    spawner.spawn(console_task(uart, settings, monitor, store, rng).unwrap());
}
