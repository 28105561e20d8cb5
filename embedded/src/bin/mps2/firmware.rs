//! Boot: clocks, NIC, settings from the PSRAM "flash", stack (DHCP or static), gateway,
//! console on UART0.

use cortex_m_semihosting::hprintln;
use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use socksgate_embedded::console::{Board, Console, ConsoleLog, load_settings};
use socksgate_embedded::live::SharedSettings;
use socksgate_embedded::monitor::Monitor;
use socksgate_embedded::store::ConfigStore;
use socksgate_embedded::{Configuration, Gateway, GatewayStorage};
use static_cell::StaticCell;

use crate::config::{SESSIONS, SOCKET_BUF, SOCKETS, UDP_SLOTS, defaults};
use crate::flash::{PsramFlash, SECTOR};
use crate::lan9118::Lan9118;
use crate::time_driver;
use crate::uart::Uart;

/// Session log lines and console output share UART0 through this.
static LOG: ConsoleLog = ConsoleLog::new();

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("panic: {}", info);
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn link_task(stack: Stack<'static>) -> ! {
    socksgate_embedded::link::watch(stack, |line| {
        hprintln!("{}", line);
        LOG.line(line);
    })
    .await
}

#[embassy_executor::task]
async fn gateway_task(
    stack: Stack<'static>,
    storage: &'static mut GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>,
    settings: &'static SharedSettings,
    monitor: &'static Monitor<SESSIONS>,
) -> ! {
    stack.wait_config_up().await;
    hprintln!(
        "gateway up: port {} ({} sessions, {} B socket buffers)",
        settings.port(),
        SESSIONS,
        SOCKET_BUF
    );
    Gateway::new(stack, settings, storage, monitor)
        .with_report(&|record| {
            hprintln!("{}", record);
            LOG.line(format_args!("{record}"));
        })
        .run()
        .await
}

/// QEMU: salts from SHA-256 of a counter, the time and the MAC (no RNG on this board; a
/// salt must be unique, not secret), reboot by SYSRESETREQ.
struct Mps2 {
    mac: [u8; 6],
    count: u32,
}

impl Board for Mps2 {
    fn salt(&mut self) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        self.count = self.count.wrapping_add(1);
        let mut hasher = Sha256::new();
        hasher.update(self.count.to_le_bytes());
        hasher.update(embassy_time::Instant::now().as_ticks().to_le_bytes());
        hasher.update(self.mac);
        let digest = hasher.finalize();
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&digest[..16]);
        salt
    }

    fn reboot(&mut self) -> ! {
        cortex_m::peripheral::SCB::sys_reset()
    }
}

#[embassy_executor::task]
async fn console_task(
    settings: &'static SharedSettings,
    monitor: &'static Monitor<SESSIONS>,
    store: &'static mut ConfigStore<PsramFlash>,
    mac: [u8; 6],
) -> ! {
    Console::new(
        Uart::new(),
        settings,
        monitor,
        store,
        &LOG,
        Mps2 { mac, count: 0 },
    )
    .run()
    .await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let Some(core) = cortex_m::Peripherals::take() else {
        return;
    };
    time_driver::init(core.SYST);
    let nic = match Lan9118::take() {
        Ok(nic) => nic,
        Err(e) => panic!("LAN9118: {e:?}"),
    };
    let mac = nic.mac();
    hprintln!("socksgate-mps2: LAN9118 {:02x?}", mac);

    static STORE: StaticCell<ConfigStore<PsramFlash>> = StaticCell::new();
    static SETTINGS: StaticCell<SharedSettings> = StaticCell::new();
    static MONITOR: StaticCell<Monitor<SESSIONS>> = StaticCell::new();
    let store = STORE.init(ConfigStore::new(PsramFlash::new(), 0, SECTOR));
    let loaded = load_settings(store, defaults(), |line| hprintln!("{}", line));
    let net = loaded.net_config();
    if loaded.dns.is_some() && loaded.addressing == socksgate_embedded::settings::Addressing::Dhcp {
        hprintln!("config: dns applies to a static address; DHCP's servers are used");
    }
    let settings = SETTINGS.init_with(|| SharedSettings::new(loaded));
    let monitor = MONITOR.init_with(Monitor::new);

    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    static STORAGE: StaticCell<GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>> = StaticCell::new();
    // No entropy source on this board: the seed only spreads TCP ports and sequence
    // numbers, derive it from the MAC (unique per QEMU NIC).
    let seed = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x5a, 0xc5]);
    let (stack, runner) =
        embassy_net::new(nic, net, RESOURCES.init_with(StackResources::new), seed);
    // Built in place at run time: no flash image of it, no copy of it on the stack.
    let storage = STORAGE.init_with(GatewayStorage::default);
    spawner.spawn(net_task(runner).unwrap());
    spawner.spawn(link_task(stack).unwrap());
    spawner.spawn(gateway_task(stack, storage, settings, monitor).unwrap());
    spawner.spawn(console_task(settings, monitor, store, mac).unwrap());
}
