//! Boot: clocks, NIC, stack, gateway.

use cortex_m_semihosting::hprintln;
use embassy_executor::Spawner;
use embassy_net::{Config, Runner, Stack, StackResources};
use socksgate_embedded::{Gateway, GatewayStorage};
use static_cell::StaticCell;

use crate::config::{GATEWAY, SESSIONS, SOCKET_BUF, SOCKETS, UDP_SLOTS, network};
use crate::lan9118::Lan9118;
use crate::time_driver;

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
async fn gateway_task(
    stack: Stack<'static>,
    storage: &'static mut GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>,
) -> ! {
    stack.wait_config_up().await;
    hprintln!(
        "gateway up: 10.0.2.15:{} ({} sessions, {} B socket buffers)",
        GATEWAY.port(),
        SESSIONS,
        SOCKET_BUF
    );
    Gateway::new(stack, &GATEWAY, storage)
        .with_report(&|record| hprintln!("{}", record))
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

    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    static STORAGE: StaticCell<GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>> = StaticCell::new();
    // No entropy source on this board: the seed only spreads TCP ports and sequence
    // numbers, derive it from the MAC (unique per QEMU NIC).
    let seed = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x5a, 0xc5]);
    let (stack, runner) = embassy_net::new(
        nic,
        Config::ipv4_static(network()),
        RESOURCES.init_with(StackResources::new),
        seed,
    );
    // Built in place at run time: no flash image of it, no copy of it on the stack.
    let storage = STORAGE.init_with(GatewayStorage::default);
    spawner.spawn(net_task(runner).unwrap());
    spawner.spawn(gateway_task(stack, storage).unwrap());
}
