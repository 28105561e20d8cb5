//! Session buffers spread over the H743's RAM banks (see `memory/h743/memory.x`): SRAM1–3 and
//! DTCM hold socket buffers, which only the CPU touches, so the AXI SRAM keeps the Ethernet
//! DMA's frames, the tasks and the stack. The banks' sessions come first, so the AXI share is
//! only what the other banks cannot hold.
#![allow(unsafe_code)] // NOLOAD statics zeroed in place and handed out once; SAFETY below.

use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;

use socksgate_embedded::{SessionBuffers, UdpRefusalBuffers};
use static_cell::StaticCell;

use crate::config::{
    SESSIONS, SESSIONS_IN_AXI, SESSIONS_IN_DTCM, SESSIONS_IN_SRAM123, SOCKET_BUF, UDP_SLOTS,
};

type Sessions<const K: usize> = [SessionBuffers<SOCKET_BUF>; K];

#[unsafe(link_section = ".sram123.sessions")]
static mut IN_SRAM123: MaybeUninit<Sessions<SESSIONS_IN_SRAM123>> = MaybeUninit::uninit();
#[unsafe(link_section = ".dtcm.sessions")]
static mut IN_DTCM: MaybeUninit<Sessions<SESSIONS_IN_DTCM>> = MaybeUninit::uninit();
/// The rest in the AXI SRAM's `.bss`, zeroed by cortex-m-rt.
static IN_AXI: StaticCell<Sessions<SESSIONS_IN_AXI>> = StaticCell::new();
static REST: StaticCell<UdpRefusalBuffers<UDP_SLOTS>> = StaticCell::new();

/// RCC_AHB2ENR (RM0433, RCC chapter; stm32-metapac agrees): SRAM1EN, SRAM2EN, SRAM3EN are
/// bits 29–31.
const RCC_AHB2ENR: *mut u32 = 0x5802_40DC as *mut u32;
const SRAM123_ENABLE: u32 = 0b111 << 29;

/// Every session's buffers and the UDP/refusal slots, each handed out once.
///
/// Panics when called twice (the `StaticCell`s refuse a second initialisation).
pub(crate) fn session_storage() -> (
    [&'static mut SessionBuffers<SOCKET_BUF>; SESSIONS],
    &'static mut UdpRefusalBuffers<UDP_SLOTS>,
) {
    // Taken first: a second call panics here, before touching the NOLOAD banks again.
    let in_axi = IN_AXI.init_with(|| [const { SessionBuffers::new() }; SESSIONS_IN_AXI]);
    let rest = REST.init_with(UdpRefusalBuffers::default);
    // SAFETY: the AHB2ENR write only sets the clock-enable bits of SRAM1–3, keeping the
    // others (read-modify-write of a register nothing else writes concurrently at boot),
    // so the banks are clocked in every CPU mode before they are first written.
    unsafe {
        RCC_AHB2ENR.write_volatile(RCC_AHB2ENR.read_volatile() | SRAM123_ENABLE);
    }
    cortex_m::asm::dsb();
    // SAFETY: this is the only access to the two statics, and it runs once (guarded by
    // IN_AXI above), so the `&'static mut` are unique. `SessionBuffers` is four byte arrays,
    // for which all-zero bytes are a valid (the `new()`) value; zeroing in place avoids a
    // stack copy of tens of KiB.
    let (in_sram123, in_dtcm) = unsafe {
        let sram123 = addr_of_mut!(IN_SRAM123).cast::<Sessions<SESSIONS_IN_SRAM123>>();
        sram123.write_bytes(0, 1);
        let dtcm = addr_of_mut!(IN_DTCM).cast::<Sessions<SESSIONS_IN_DTCM>>();
        dtcm.write_bytes(0, 1);
        (&mut *sram123, &mut *dtcm)
    };
    let mut banks = in_sram123
        .iter_mut()
        .chain(in_dtcm.iter_mut())
        .chain(in_axi.iter_mut());
    let sessions = core::array::from_fn(|_| match banks.next() {
        Some(buffers) => buffers,
        None => unreachable!("SESSIONS is the sum of the three banks' shares"),
    });
    (sessions, rest)
}
