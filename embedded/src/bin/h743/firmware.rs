//! Boot: clocks, RNG seed, Ethernet, stack, gateway.

use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use embassy_stm32::bind_interrupts;
use embassy_stm32::eth::{self, Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA, RNG};
use embassy_stm32::rng::{self, Rng};
use socksgate_embedded::{Gateway, SessionBuffers, UdpRefusalBuffers};
use static_cell::StaticCell;

use crate::config::{GATEWAY, MAC, SESSIONS, SOCKET_BUF, SOCKETS, UDP_SLOTS, static_address};
use crate::ram_banks;

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<RNG>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // No logger on this image: stop where a debugger (probe-rs) shows the location.
    loop {
        cortex_m::asm::bkpt();
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn gateway_task(
    stack: Stack<'static>,
    sessions: [&'static mut SessionBuffers<SOCKET_BUF>; SESSIONS],
    rest: &'static mut UdpRefusalBuffers<UDP_SLOTS>,
) -> ! {
    stack.wait_config_up().await;
    Gateway::from_parts(stack, &GATEWAY, sessions, rest)
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

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks());
    let seed = Rng::new(p.RNG, Irqs).next_u64();

    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    // NUCLEO-H743ZI2 RMII wiring (UM2407): REF_CLK PA1, CRS_DV PA7, RXD0 PC4, RXD1 PC5,
    // TXD0 PG13, TXD1 PB13, TX_EN PG11, MDIO PA2, MDC PC1.
    let device: Device = Ethernet::new(
        PACKETS.init_with(PacketQueue::new),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        MAC,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );
    let net_config = match static_address() {
        Some(address) => embassy_net::Config::ipv4_static(address),
        None => embassy_net::Config::dhcpv4(Default::default()),
    };
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        net_config,
        RESOURCES.init_with(StackResources::new),
        seed,
    );
    // Session buffers spread over SRAM1–3, DTCM and AXI SRAM (ram_banks.rs).
    let (sessions, rest) = ram_banks::session_storage();
    spawner.spawn(net_task(runner).unwrap());
    spawner.spawn(gateway_task(stack, sessions, rest).unwrap());
}
