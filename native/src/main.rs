//! `socksgate`: the native SOCKS server, client and inspector.
fn main() {
    println!("socksgate {}", env!("CARGO_PKG_VERSION"));
}
