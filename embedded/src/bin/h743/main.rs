//! stub
#![cfg_attr(target_os = "none", no_std, no_main)]
#[cfg(not(target_os = "none"))]
fn main() {}
#[cfg(target_os = "none")]
#[cortex_m_rt::entry]
fn main() -> ! {
    loop {}
}
#[cfg(target_os = "none")]
use panic_semihosting as _;
