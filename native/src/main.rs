//! `socksgate`: the native SOCKS server, client and password tool.
fn main() {
    println!("socksgate {}", env!("CARGO_PKG_VERSION"));
}
