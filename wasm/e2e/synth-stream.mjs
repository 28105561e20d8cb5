// A large synthetic capture generated as a stream (never written to disk): legacy pcap,
// Ethernet, `connections` SOCKS5 CONNECT sessions to example.com:443 from 127.0.0.2 (and
// 127.0.1.2, … past 40,000 connections), each
// followed by `segments` 1400-byte client→server payload segments and a FIN close.
// 110 connections × 1000 segments ≈ 162 MB (> 150 MiB).

const PAYLOAD = 1400;

function ethIpTcp(src, dst, sport, dport, seq, ack, flags, payload) {
  const len = 14 + 20 + 20 + payload.length;
  const b = Buffer.alloc(len);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  b.writeUInt16BE(20 + 20 + payload.length, 16);
  b.writeUInt16BE(0x4000, 20);
  b[22] = 64;
  b[23] = 6;
  b.set(src, 26);
  b.set(dst, 30);
  b.writeUInt16BE(sport, 34);
  b.writeUInt16BE(dport, 36);
  b.writeUInt32BE(seq >>> 0, 38);
  b.writeUInt32BE(ack >>> 0, 42);
  b[46] = 0x50;
  b[47] = flags;
  b.writeUInt16BE(0xffff, 48);
  b.set(payload, 54);
  return b;
}

function record(tsMicros, frame) {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(Math.floor(tsMicros / 1e6), 0);
  h.writeUInt32LE(tsMicros % 1e6, 4);
  h.writeUInt32LE(frame.length, 8);
  h.writeUInt32LE(frame.length, 12);
  return [h, frame];
}

export const PCAP_HEADER = (() => {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(0xa1b2c3d4, 0);
  h.writeUInt16LE(2, 4);
  h.writeUInt16LE(4, 6);
  h.writeUInt32LE(65535, 16);
  h.writeUInt32LE(1, 20); // ETHERNET
  return h;
})();

/** Yields the capture in chunks (one Buffer per connection). */
export function* synthCapture({ connections = 110, segments = 1000 } = {}) {
  yield PCAP_HEADER;
  const server = [127, 0, 0, 1];
  const bulk = Buffer.alloc(PAYLOAD, 0xa5);
  const host = Buffer.from("example.com");
  const request = Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), host, Buffer.from([1, 187])]);
  let ts = 1_795_708_650_000_000;
  for (let i = 0; i < connections; i++) {
    // 40,000 source ports per client address: 127.0.0.2, then 127.0.1.2, …
    const client = [127, 0, Math.floor(i / 40000), 2];
    const port = 20000 + (i % 40000);
    let cseq = 1000 + i * 7919;
    let sseq = 500000 + i * 104729;
    const parts = [];
    const up = (flags, payload = Buffer.alloc(0)) => {
      ts += 50;
      parts.push(...record(ts, ethIpTcp(client, server, port, 1080, cseq, sseq, flags, payload)));
      cseq += payload.length + (flags & 0x03 ? 1 : 0);
    };
    const down = (flags, payload = Buffer.alloc(0)) => {
      ts += 50;
      parts.push(...record(ts, ethIpTcp(server, client, 1080, port, sseq, cseq, flags, payload)));
      sseq += payload.length + (flags & 0x03 ? 1 : 0);
    };
    up(0x02); // SYN
    down(0x12); // SYN-ACK (ack = client ISN + 1)
    up(0x10);
    up(0x18, Buffer.from([5, 1, 0]));
    down(0x18, Buffer.from([5, 0]));
    up(0x18, request);
    down(0x18, Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0x91, 0x7f]));
    for (let s = 0; s < segments; s++) {
      up(0x18, bulk);
      if (s % 10 === 9) down(0x10);
    }
    up(0x11); // FIN
    down(0x11);
    up(0x10);
    yield Buffer.concat(parts);
  }
}

/** What the inspector must find in synthCapture(options). */
export function expectedSessions({ connections = 110, segments = 1000 } = {}) {
  return { count: connections, bytesUp: segments * PAYLOAD };
}
