//! Gives each firmware binary its own memory map and the cortex-m-rt linker script.
//!
//! The QEMU and H743 boards share the `thumbv7em-none-eabihf` target, so one `memory.x` in the
//! search path would not do: each map lives in its own directory, added to the search path of
//! its binary only. The W5500-EVB-Pico (RP2040) also gets embassy-rp's `link-rp.x`, which puts
//! the second-stage bootloader in the first 256 bytes of flash. Host builds get nothing.

use std::path::PathBuf;
use std::{env, fs};

const BOARDS: [(&str, &str); 3] = [
    ("socksgate-mps2", "mps2"),
    ("socksgate-h743", "h743"),
    ("socksgate-w5500-pico", "w5500_pico"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (bin, board) in BOARDS {
        let src = format!("memory/{board}/memory.x");
        println!("cargo:rerun-if-changed={src}");
        let dir = out.join(board);
        fs::create_dir_all(&dir).expect("create memory map directory");
        fs::copy(&src, dir.join("memory.x")).expect("copy memory.x");
        println!("cargo:rustc-link-arg-bin={bin}=-L{}", dir.display());
        println!("cargo:rustc-link-arg-bin={bin}=-Tlink.x");
    }
    if env::var("CARGO_FEATURE_W5500_PICO").is_ok() {
        println!("cargo:rustc-link-arg-bin=socksgate-w5500-pico=-Tlink-rp.x");
        println!("cargo:rustc-link-arg-bin=socksgate-w5500-pico=--nmagic");
    }
    // The H743 image logs with defmt (over RTT); the QEMU image does not link defmt.
    println!("cargo:rustc-link-arg-bin=socksgate-h743=-Tdefmt.x");
}
