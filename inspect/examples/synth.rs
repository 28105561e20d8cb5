//! Writes a synthetic capture: a mix of SOCKS sessions (SOCKS5 with and without
//! username/password, SOCKS4a, BIND, UDP ASSOCIATE, TLS/HTTP/SSH inside) and non-SOCKS
//! connections, repeated until the file reaches the requested size. For benchmarks and
//! fixtures.
//!
//! ```text
//! cargo run --release -p socksgate-inspect --example synth -- OUT.pcap [MEGABYTES] [--pcapng] [--bulk N]
//! ```
//!
//! `--bulk N`: 1400-byte payload segments per connection (default 100; 0 gives a
//! handshake-heavy capture with many small connections).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;

fn round(cap: &mut Cap, i: u32, bulk_segments: usize) {
    let port = 20_000 + (i % 40_000) as u16;
    let client = |p: u16| format!("127.0.{}.{}:{p}", (i / 40_000) % 250, 1 + (i % 7));
    let chunk = vec![0xa5u8; 1400];
    match i % 6 {
        0 | 1 => {
            let mut c = Conv::new(&client(port), "127.0.0.1:1080");
            c.open(cap);
            c.up(cap, &greeting(&[0, 2]));
            c.down(cap, &[5, 2]);
            c.up(cap, &userpass("alice", "s3cret"));
            c.down(cap, &[1, 0]);
            c.up(cap, &request5(1, "example.com", 443));
            c.down(cap, &reply5(0, "127.0.0.1", 37247));
            c.up(cap, &tls_hello("example.com"));
            for _ in 0..bulk_segments {
                c.down(cap, &chunk);
            }
            c.close(cap);
        }
        2 => {
            let mut c = Conv::new(&client(port), "127.0.0.1:9050");
            c.open(cap);
            c.up(cap, &request4(1, [0, 0, 0, 1], 80, "", Some("example.org")));
            c.down(cap, &reply4(90, [0, 0, 0, 0], 0));
            c.up(cap, HTTP_GET);
            for _ in 0..bulk_segments {
                c.down(cap, &chunk);
            }
            c.close(cap);
        }
        3 => {
            let mut c = Conv::new(&format!("[::1]:{port}"), "[::1]:1080");
            c.cseq = 0xffff_ff00;
            c.open(cap);
            let mut up = greeting(&[0]);
            up.extend(request5(2, "::1", 2121));
            c.up(cap, &up);
            c.down(cap, &[5, 0]);
            c.down(cap, &reply5(0, "::1", 45000));
            c.down(cap, &reply5(0, "::1", 2020));
            c.down(cap, b"SSH-2.0-OpenSSH_9.2\r\n");
            for _ in 0..bulk_segments / 2 {
                c.up(cap, &chunk);
            }
            c.close(cap);
        }
        4 => {
            let mut c = Conv::new(&client(port), "127.0.0.1:1080");
            c.open(cap);
            c.up(cap, &greeting(&[0]));
            c.down(cap, &[5, 0]);
            c.up(cap, &request5(3, "0.0.0.0", 0));
            c.down(cap, &reply5(0, "127.0.0.1", 50_000 + (i % 1000) as u16));
            let cu = sa(&client(port.wrapping_add(1)));
            let relay = sa(&format!("127.0.0.1:{}", 50_000 + (i % 1000) as u16));
            for _ in 0..4 {
                cap.udp(cu, relay, &udp_dgram("127.0.0.53", 53, b"dns query"));
                cap.udp(relay, cu, &udp_dgram("127.0.0.53", 53, b"dns answer"));
            }
            c.close(cap);
        }
        _ => {
            // The proxy's outbound leg: not SOCKS.
            let mut c = Conv::new(&client(port), "127.0.0.1:8080");
            c.open(cap);
            c.up(cap, HTTP_GET);
            for _ in 0..bulk_segments {
                c.down(cap, &chunk);
            }
            c.close(cap);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .expect("usage: synth OUT [MEGABYTES] [--pcapng]");
    let mb: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    assert!(
        !out.starts_with("--"),
        "usage: synth OUT [MEGABYTES] [--pcapng] [--bulk N]"
    );
    let ng = args.iter().any(|a| a == "--pcapng");
    let target = (mb * 1_048_576.0) as usize;
    let mut cap = Cap::new(Link::Ethernet);
    let bulk = args
        .iter()
        .position(|a| a == "--bulk")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if mb < 1.0 { 2 } else { 100 });
    let mut size = 24usize;
    let mut i = 0;
    while size < target {
        let before = cap.packets.len();
        round(&mut cap, i, bulk);
        size += cap.packets[before..]
            .iter()
            .map(|p| p.data.len() + 16)
            .sum::<usize>();
        i += 1;
    }
    let bytes = if ng {
        cap.pcapng(false, 1, 1)
    } else {
        cap.pcap(false, false)
    };
    std::fs::write(out, &bytes).expect("write");
    eprintln!(
        "{out}: {} bytes, {} packets, {i} connections",
        bytes.len(),
        cap.packets.len()
    );
}
