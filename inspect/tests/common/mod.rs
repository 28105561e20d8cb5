//! Synthetic capture builder for tests: TCP conversations and UDP datagrams over IPv4/IPv6,
//! wrapped in any supported link type, written as pcap (either byte order, µs or ns) or
//! pcapng (several interfaces and sections, either byte order).
#![allow(dead_code, unreachable_pub)]

use core::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;

mod tls;
pub use tls::tls_hello;

/// Link-layer framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    EthernetVlan,
    Sll,
    Sll2,
    Raw,
    /// BSD loopback, host (little-endian) byte order.
    Null,
}

impl Link {
    pub fn linktype(self) -> u32 {
        match self {
            Self::Ethernet | Self::EthernetVlan => 1,
            Self::Sll => 113,
            Self::Sll2 => 276,
            Self::Raw => 101,
            Self::Null => 0,
        }
    }

    fn wrap(self, ip: &[u8]) -> Vec<u8> {
        let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
        let ethertype: [u8; 2] = if v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
        let mut out = Vec::new();
        match self {
            Self::Ethernet | Self::EthernetVlan => {
                out.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
                if self == Self::EthernetVlan {
                    out.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
                }
                out.extend_from_slice(&ethertype);
            }
            Self::Sll => {
                out.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                out.extend_from_slice(&ethertype);
            }
            Self::Sll2 => {
                out.extend_from_slice(&ethertype);
                out.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            }
            Self::Raw => {}
            Self::Null => out.extend_from_slice(&(if v6 { 30u32 } else { 2u32 }).to_le_bytes()),
        }
        out.extend_from_slice(ip);
        out
    }
}

/// One packet to write.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub ts_ns: u64,
    pub iface: u32,
    pub data: Vec<u8>,
}

/// A capture under construction.
#[derive(Debug)]
pub struct Cap {
    pub link: Link,
    pub packets: Vec<Pkt>,
    pub clock_ns: u64,
    pub iface: u32,
}

pub const T0_NS: u64 = 1_795_708_650_000_000_000;

#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

impl Cap {
    pub fn new(link: Link) -> Self {
        Self {
            link,
            packets: Vec::new(),
            clock_ns: T0_NS,
            iface: 0,
        }
    }

    fn push_ip(&mut self, ip: Vec<u8>) {
        self.clock_ns += 1_000_000; // 1 ms per packet
        let data = self.link.wrap(&ip);
        self.packets.push(Pkt {
            ts_ns: self.clock_ns,
            iface: self.iface,
            data,
        });
    }

    pub fn tcp(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        f: Flags,
        payload: &[u8],
    ) {
        let b = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed families"),
        };
        let mut b = b.tcp(src.port(), dst.port(), seq, 65535);
        if f.ack {
            b = b.ack(ack);
        }
        if f.syn {
            b = b.syn();
        }
        if f.fin {
            b = b.fin();
        }
        if f.rst {
            b = b.rst();
        }
        let mut ip = Vec::new();
        b.write(&mut ip, payload).unwrap();
        self.push_ip(ip);
    }

    pub fn udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let b = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => panic!("mixed families"),
        };
        let mut ip = Vec::new();
        b.udp(src.port(), dst.port())
            .write(&mut ip, payload)
            .unwrap();
        self.push_ip(ip);
    }

    /// Legacy pcap.
    pub fn pcap(&self, big_endian: bool, nanos: bool) -> Vec<u8> {
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        out.extend_from_slice(&w16(2));
        out.extend_from_slice(&w16(4));
        out.extend_from_slice(&w32(0));
        out.extend_from_slice(&w32(0));
        out.extend_from_slice(&w32(262_144));
        out.extend_from_slice(&w32(self.link.linktype()));
        for p in &self.packets {
            let secs = (p.ts_ns / 1_000_000_000) as u32;
            let frac = p.ts_ns % 1_000_000_000;
            let frac = if nanos { frac } else { frac / 1000 } as u32;
            out.extend_from_slice(&w32(secs));
            out.extend_from_slice(&w32(frac));
            out.extend_from_slice(&w32(p.data.len() as u32));
            out.extend_from_slice(&w32(p.data.len() as u32));
            out.extend_from_slice(&p.data);
        }
        out
    }

    /// pcapng with `sections` sections (packets split evenly) and `ifaces` interfaces per
    /// section (all of this capture's link type; interface `i` used by packets with
    /// `iface == i`). Timestamps in ns (if_tsresol = 9).
    pub fn pcapng(&self, big_endian: bool, sections: usize, ifaces: u32) -> Vec<u8> {
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let block = |out: &mut Vec<u8>, ty: u32, body: &[u8]| {
            let len = 12 + body.len() as u32;
            out.extend_from_slice(&w32(ty));
            out.extend_from_slice(&w32(len));
            out.extend_from_slice(body);
            out.extend_from_slice(&w32(len));
        };
        let mut out = Vec::new();
        let per = self.packets.len().div_ceil(sections.max(1)).max(1);
        for chunk in self.packets.chunks(per) {
            let mut shb = Vec::new();
            shb.extend_from_slice(&w32(0x1a2b_3c4d));
            shb.extend_from_slice(&w16(1));
            shb.extend_from_slice(&w16(0));
            shb.extend_from_slice(&[0xff; 8]);
            block(&mut out, 0x0a0d_0d0a, &shb);
            for _ in 0..ifaces {
                let mut idb = Vec::new();
                idb.extend_from_slice(&w16(self.link.linktype() as u16));
                idb.extend_from_slice(&w16(0));
                idb.extend_from_slice(&w32(262_144));
                idb.extend_from_slice(&w16(9)); // if_tsresol
                idb.extend_from_slice(&w16(1));
                idb.extend_from_slice(&[9, 0, 0, 0]);
                idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
                block(&mut out, 1, &idb);
            }
            for p in chunk {
                let mut epb = Vec::new();
                epb.extend_from_slice(&w32(p.iface));
                epb.extend_from_slice(&w32((p.ts_ns >> 32) as u32));
                epb.extend_from_slice(&w32(p.ts_ns as u32));
                epb.extend_from_slice(&w32(p.data.len() as u32));
                epb.extend_from_slice(&w32(p.data.len() as u32));
                epb.extend_from_slice(&p.data);
                while epb.len() % 4 != 0 {
                    epb.push(0);
                }
                block(&mut out, 6, &epb);
            }
        }
        out
    }
}

/// A TCP conversation that keeps sequence numbers.
#[derive(Debug)]
pub struct Conv {
    pub c: SocketAddr,
    pub s: SocketAddr,
    pub cseq: u32,
    pub sseq: u32,
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl Conv {
    pub fn new(c: &str, s: &str) -> Self {
        Self::with_isn(c, s, 1000, 5000)
    }

    pub fn with_isn(c: &str, s: &str, cisn: u32, sisn: u32) -> Self {
        Self {
            c: sa(c),
            s: sa(s),
            cseq: cisn,
            sseq: sisn,
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn open(&mut self, cap: &mut Cap) {
        let syn = Flags {
            syn: true,
            ..Flags::default()
        };
        cap.tcp(self.c, self.s, self.cseq, 0, syn, &[]);
        self.cseq = self.cseq.wrapping_add(1);
        cap.tcp(
            self.s,
            self.c,
            self.sseq,
            self.cseq,
            Flags {
                syn: true,
                ack: true,
                ..Flags::default()
            },
            &[],
        );
        self.sseq = self.sseq.wrapping_add(1);
        cap.tcp(self.c, self.s, self.cseq, self.sseq, ack(), &[]);
    }

    pub fn up(&mut self, cap: &mut Cap, data: &[u8]) {
        cap.tcp(self.c, self.s, self.cseq, self.sseq, ack(), data);
        self.cseq = self.cseq.wrapping_add(data.len() as u32);
    }

    pub fn down(&mut self, cap: &mut Cap, data: &[u8]) {
        cap.tcp(self.s, self.c, self.sseq, self.cseq, ack(), data);
        self.sseq = self.sseq.wrapping_add(data.len() as u32);
    }

    /// Sends `data` one byte per segment.
    pub fn up_bytewise(&mut self, cap: &mut Cap, data: &[u8]) {
        for b in data {
            self.up(cap, &[*b]);
        }
    }

    pub fn down_bytewise(&mut self, cap: &mut Cap, data: &[u8]) {
        for b in data {
            self.down(cap, &[*b]);
        }
    }

    /// FIN from both sides.
    pub fn close(&mut self, cap: &mut Cap) {
        let fin = Flags {
            fin: true,
            ack: true,
            ..Flags::default()
        };
        cap.tcp(self.c, self.s, self.cseq, self.sseq, fin, &[]);
        self.cseq = self.cseq.wrapping_add(1);
        cap.tcp(self.s, self.c, self.sseq, self.cseq, fin, &[]);
        self.sseq = self.sseq.wrapping_add(1);
        cap.tcp(self.c, self.s, self.cseq, self.sseq, ack(), &[]);
    }
}

pub fn ack() -> Flags {
    Flags {
        ack: true,
        ..Flags::default()
    }
}

// ---- SOCKS message bytes (test fixtures, RFC 1928/1929/1961 and SOCKS4 layouts) ------------

pub fn greeting(methods: &[u8]) -> Vec<u8> {
    let mut v = vec![5, methods.len() as u8];
    v.extend_from_slice(methods);
    v
}

pub fn userpass(user: &str, pass: &str) -> Vec<u8> {
    let mut v = vec![1, user.len() as u8];
    v.extend_from_slice(user.as_bytes());
    v.push(pass.len() as u8);
    v.extend_from_slice(pass.as_bytes());
    v
}

/// SOCKS5 address: IP literal or domain name.
pub fn addr5(host: &str, port: u16) -> Vec<u8> {
    let mut v = Vec::new();
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            v.push(1);
            v.extend_from_slice(&ip.octets());
        }
        Ok(IpAddr::V6(ip)) => {
            v.push(4);
            v.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            v.push(3);
            v.push(host.len() as u8);
            v.extend_from_slice(host.as_bytes());
        }
    }
    v.extend_from_slice(&port.to_be_bytes());
    v
}

pub fn request5(cmd: u8, host: &str, port: u16) -> Vec<u8> {
    let mut v = vec![5, cmd, 0];
    v.extend(addr5(host, port));
    v
}

pub fn reply5(rep: u8, host: &str, port: u16) -> Vec<u8> {
    let mut v = vec![5, rep, 0];
    v.extend(addr5(host, port));
    v
}

pub fn request4(cmd: u8, ip: [u8; 4], port: u16, user: &str, host: Option<&str>) -> Vec<u8> {
    let mut v = vec![4, cmd];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&ip);
    v.extend_from_slice(user.as_bytes());
    v.push(0);
    if let Some(h) = host {
        v.extend_from_slice(h.as_bytes());
        v.push(0);
    }
    v
}

pub fn reply4(cd: u8, ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut v = vec![0, cd];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&ip);
    v
}

pub fn udp_dgram(host: &str, port: u16, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0];
    v.extend(addr5(host, port));
    v.extend_from_slice(data);
    v
}

pub fn gss(mtyp: u8, token: &[u8]) -> Vec<u8> {
    let mut v = vec![1, mtyp];
    v.extend_from_slice(&(token.len() as u16).to_be_bytes());
    v.extend_from_slice(token);
    v
}

pub const HTTP_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
pub const HTTP_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
