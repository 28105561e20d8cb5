//! Boot: W5500 reset and MACRAW setup over SPI0, MAC from the flash chip's unique ID, stack,
//! gateway.

use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use embassy_net_wiznet::chip::W5500;
use embassy_net_wiznet::{Device, State};
use embassy_rp::clocks::RoscRng;
use embassy_rp::flash::{Blocking, Flash};
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::{DMA_CH0, DMA_CH1, SPI0};
use embassy_rp::spi::{self, Async, Spi};
use embassy_rp::{bind_interrupts, dma};
use embassy_time::Delay;
use embedded_hal_bus::spi::ExclusiveDevice;
use socksgate_embedded::{Gateway, GatewayStorage};
use static_cell::StaticCell;

use crate::config::{GATEWAY, SESSIONS, SOCKET_BUF, SOCKETS, UDP_SLOTS, static_address};

bind_interrupts!(struct Irqs {
    DMA_IRQ_0 => dma::InterruptHandler<DMA_CH0>, dma::InterruptHandler<DMA_CH1>;
});

/// The W5500 on SPI0 with its chip select (GP17), interrupt (GP21) and reset (GP20) lines.
type WiznetRunner = embassy_net_wiznet::Runner<
    'static,
    W5500,
    ExclusiveDevice<Spi<'static, SPI0, Async>, Output<'static>, Delay>,
    Input<'static>,
    Output<'static>,
>;

/// Size of the on-board flash (W25Q16JV), for the unique-ID read.
const FLASH_SIZE: usize = 2 * 1024 * 1024;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // No logger on this image: stop where a debugger (probe-rs) shows the location.
    loop {
        cortex_m::asm::bkpt();
    }
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
async fn gateway_task(
    stack: Stack<'static>,
    storage: &'static mut GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>,
) -> ! {
    stack.wait_config_up().await;
    Gateway::new(stack, &GATEWAY, storage).run().await
}

/// A locally administered unicast MAC from the flash chip's 64-bit unique ID, so that every
/// board has its own without editing the source (the RP2040 itself has no unique ID).
fn mac_from_flash_id(
    flash: &mut Flash<'_, embassy_rp::peripherals::FLASH, Blocking, FLASH_SIZE>,
) -> [u8; 6] {
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
    let mac = mac_from_flash_id(&mut Flash::new_blocking(p.FLASH));
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

    // Two frames each way between the W5500 runner and the stack.
    static WIZNET: StaticCell<State<2, 2>> = StaticCell::new();
    let wiznet = embassy_net_wiznet::new(mac, WIZNET.init(State::new()), spi, interrupt, reset);
    let Ok((device, wiznet_runner)) = wiznet.await else {
        panic!("W5500 did not answer on SPI0")
    };
    spawner.spawn(wiznet_task(wiznet_runner).unwrap());

    let net_config = match static_address() {
        Some(address) => embassy_net::Config::ipv4_static(address),
        None => embassy_net::Config::dhcpv4(Default::default()),
    };
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    static STORAGE: StaticCell<GatewayStorage<SESSIONS, UDP_SLOTS, SOCKET_BUF>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        net_config,
        RESOURCES.init_with(StackResources::new),
        seed,
    );
    // Built in place at run time: no flash image of it, no copy of it on the stack.
    let storage = STORAGE.init_with(GatewayStorage::default);
    spawner.spawn(net_task(runner).unwrap());
    spawner.spawn(gateway_task(stack, storage).unwrap());
}
