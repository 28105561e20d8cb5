//! Gives each firmware binary its own memory map and the cortex-m-rt linker script.
//!
//! Both boards share the `thumbv7em-none-eabihf` target, so one `memory.x` in the search path
//! would not do: each map lives in its own directory, added to the search path of its binary
//! only. Host builds get nothing.

use std::path::PathBuf;
use std::{env, fs};

const BOARDS: [(&str, &str); 2] = [("socksgate-mps2", "mps2"), ("socksgate-h743", "h743")];

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
}
