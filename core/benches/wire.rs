//! Wire-layer and handshake micro-benchmarks: `cargo bench -p socksgate-core --bench wire`.
//!
//! Goals (see core/README.md, "Performance"): greeting + IPv4 CONNECT parse ≤ 20 ns,
//! request with a 255-octet domain ≤ 60 ns.

use core::hint::black_box;
use core::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use socksgate_core::server::{Config, Event, Server};
use socksgate_core::wire::method::MethodRequest;
use socksgate_core::wire::socks5::Request;
use socksgate_core::wire::udp::{UdpHeader, encapsulate};
use socksgate_core::wire::{Command, Status};
use socksgate_core::{Addr, Domain};

/// Greeting (no authentication) and CONNECT 127.0.0.1:8080, as one client write.
const GREETING_CONNECT_V4: [u8; 13] = [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];

/// A 255-octet name: four 63-octet labels and three dots.
fn long_name() -> [u8; 255] {
    let mut name = [b'a'; 255];
    for i in [63, 127, 191] {
        name[i] = b'.';
    }
    name
}

fn connect_domain(name: &[u8]) -> Vec<u8> {
    let req = Request {
        command: Command::Connect,
        dst: Addr::Domain(Domain::new(name).unwrap(), 443),
    };
    let mut buf = vec![0u8; req.buffer_len()];
    req.emit(&mut buf).unwrap();
    buf
}

fn parse_greeting_connect(buf: &[u8]) -> Option<(Request<'_>, usize)> {
    let Ok(Status::Complete((greeting, n))) = MethodRequest::parse(buf) else {
        return None;
    };
    black_box(greeting);
    match Request::parse(buf.get(n..)?) {
        Ok(Status::Complete((req, m))) => Some((req, n + m)),
        _ => None,
    }
}

fn wire(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");

    let input = GREETING_CONNECT_V4;
    assert!(parse_greeting_connect(&input).is_some());
    g.bench_function("parse greeting+connect ipv4", |b| {
        b.iter(|| parse_greeting_connect(black_box(&input)))
    });

    g.bench_function("parse greeting", |b| {
        b.iter(|| MethodRequest::parse(black_box(&input[..3])))
    });
    g.bench_function("parse connect ipv4", |b| {
        b.iter(|| Request::parse(black_box(&input[3..])))
    });

    let greeting = MethodRequest::new(&[0]).unwrap();
    let connect = Request {
        command: Command::Connect,
        dst: Addr::Ip("127.0.0.1:8080".parse().unwrap()),
    };
    g.bench_function("emit greeting+connect ipv4", |b| {
        let mut out = [0u8; 32];
        b.iter(|| {
            let n = black_box(&greeting).emit(&mut out).unwrap();
            let m = black_box(&connect).emit(&mut out[n..]).unwrap();
            black_box(&out);
            n + m
        })
    });

    let name = long_name();
    let domain = connect_domain(&name);
    assert_eq!(domain.len(), 262);
    g.bench_function("parse connect domain255", |b| {
        b.iter(|| Request::parse(black_box(&domain)))
    });
    let (domain_req, _) = Request::parse(&domain).unwrap().complete().unwrap();
    g.bench_function("emit connect domain255", |b| {
        let mut out = [0u8; 262];
        b.iter(|| {
            let n = black_box(&domain_req).emit(&mut out).unwrap();
            black_box(&out);
            n
        })
    });

    let mut datagram = [0u8; 64];
    let dns: SocketAddr = "192.0.2.7:53".parse().unwrap();
    let n = encapsulate(Addr::Ip(dns), &[0x5a; 32], &mut datagram).unwrap();
    let datagram = &datagram[..n];
    g.bench_function("parse udp header ipv4", |b| {
        b.iter(|| UdpHeader::parse(black_box(datagram)))
    });
    let (header, _) = UdpHeader::parse(datagram).unwrap();
    g.bench_function("emit udp header ipv4", |b| {
        let mut out = [0u8; 16];
        b.iter(|| {
            let n = black_box(&header).emit(&mut out).unwrap();
            black_box(&out);
            n
        })
    });

    let bound: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    g.bench_function("server handshake greeting+connect ipv4", |b| {
        let mut out = [0u8; 64];
        b.iter(|| {
            let mut server = Server::new(Config::default());
            let consumed = server.feed(black_box(&input)).unwrap();
            match server.poll_event() {
                Some(Event::Request(req)) => {
                    black_box(&req);
                }
                _ => unreachable!(),
            }
            server.respond(Ok(bound)).unwrap();
            let sent = server.poll_transmit(&mut out);
            debug_assert!(server.is_established());
            black_box(&out);
            (consumed, sent)
        })
    });

    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
