// A pcap of just the shown sessions' packets.
//
// The engine reports, per session, its endpoints (client, server, udp_relay) and its time span
// (start, end) but not every frame, so the capture is re-read here and a packet is kept when
// its TCP endpoints are a session's client and server (either direction), or it is UDP to or
// from the session's relay, and its timestamp lies within that session's [start, end]. Link
// types: Ethernet (with VLAN tags), raw IP, Linux cooked (SLL, SLL2), BSD loopback. Input: pcap
// (µs or ns) or pcapng, gzip- or zstd-compressed too; output: a classic nanosecond pcap with the link
// type of the packets kept (a pcapng mixing link types among the kept packets is refused). The
// file is read whole into memory for this.

import { decompressed } from "./decompress.js";

const LINK = { NULL: 0, ETHERNET: 1, RAW: 101, LOOP: 108, SLL: 113, IPV4: 228, IPV6: 229, SLL2: 276 };

async function bytesOf(file) {
  const stream = await decompressed(file, file.stream());
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Yields [linkType, [seconds, nanoseconds] (integers), bytes (captured), originalLength] per packet. */
function* packets(buf) {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0, false);
  if (magic === 0x0a0d0d0a) { yield* pcapngPackets(buf, dv); return; }
  const kinds = { 0xa1b2c3d4: [false, 1000], 0xd4c3b2a1: [true, 1000], 0xa1b23c4d: [false, 1], 0x4d3cb2a1: [true, 1] };
  if (!(magic in kinds)) throw new Error("not a pcap or pcapng file");
  const [le, nsPerUnit] = kinds[magic];
  const link = dv.getUint32(20, le) & 0xffff;
  for (let off = 24; off + 16 <= buf.length;) {
    const len = dv.getUint32(off + 8, le);
    const orig = dv.getUint32(off + 12, le);
    const t = [dv.getUint32(off, le), dv.getUint32(off + 4, le) * nsPerUnit];
    if (off + 16 + len > buf.length) return; // truncated last record
    yield [link, t, buf.subarray(off + 16, off + 16 + len), orig];
    off += 16 + len;
  }
}

function* pcapngPackets(buf, dv) {
  let le = true;
  let ifaces = [];
  for (let off = 0; off + 12 <= buf.length;) {
    const type = dv.getUint32(off, le);
    if (type === 0x0a0d0d0a) {
      le = dv.getUint32(off + 8, true) === 0x1a2b3c4d;
      ifaces = [];
    }
    const total = dv.getUint32(off + 4, le);
    if (total < 12 || off + total > buf.length) return;
    if (type === 1) {
      // Interface description: link type, then options (if_tsresol = 9): units per second.
      let perSecond = 1_000_000n;
      for (let o = off + 16; o + 4 <= off + total - 4;) {
        const code = dv.getUint16(o, le), olen = dv.getUint16(o + 2, le);
        if (code === 0) break;
        if (code === 9 && olen >= 1) {
          const r = buf[o + 4];
          perSecond = r & 0x80 ? 2n ** BigInt(r & 0x7f) : 10n ** BigInt(r);
        }
        o += 4 + ((olen + 3) & ~3);
      }
      ifaces.push([dv.getUint16(off + 8, le), perSecond]);
    } else if (type === 6) {
      const [link, perSecond] = ifaces[dv.getUint32(off + 8, le)] ?? [null, 1n];
      const units = (BigInt(dv.getUint32(off + 12, le)) << 32n) | BigInt(dv.getUint32(off + 16, le));
      const ts = [Number(units / perSecond), Number(((units % perSecond) * 1_000_000_000n) / perSecond)];
      const len = dv.getUint32(off + 20, le), orig = dv.getUint32(off + 24, le);
      if (link !== null) yield [link, ts, buf.subarray(off + 28, off + 28 + len), orig];
    } else if (type === 3) {
      const [link] = ifaces[0] ?? [null];
      const orig = dv.getUint32(off + 8, le);
      const len = Math.min(orig, total - 16);
      if (link !== null) yield [link, [0, 0], buf.subarray(off + 12, off + 12 + len), orig];
    }
    off += total;
  }
}

/** The IP packet inside a frame, or null. */
function ipPayload(link, p) {
  let off;
  switch (link) {
    case LINK.ETHERNET: {
      off = 12;
      let type = (p[off] << 8) | p[off + 1];
      while (type === 0x8100 || type === 0x88a8) { off += 4; type = (p[off] << 8) | p[off + 1]; }
      off += 2;
      break;
    }
    case LINK.RAW: case LINK.IPV4: case LINK.IPV6: off = 0; break;
    case LINK.NULL: case LINK.LOOP: off = 4; break;
    case LINK.SLL: off = 16; break;
    case LINK.SLL2: off = 20; break;
    default: return null;
  }
  return off < p.length ? p.subarray(off) : null;
}

function v6Text(b) {
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
  // Canonical form (RFC 5952): the longest run of two or more zero groups becomes "::".
  let best = [-1, 0];
  for (let i = 0; i < 8;) {
    if (groups[i] !== "0") { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > best[1]) best = [i, j - i];
    i = j;
  }
  if (best[1] < 2) return groups.join(":");
  return groups.slice(0, best[0]).join(":") + "::" + groups.slice(best[0] + best[1]).join(":");
}

/** [proto, "src:port", "dst:port"] (IPv6 bracketed, as the engine prints), or null. */
function endpoints(ip) {
  let proto, src, dst, off;
  if (ip.length >= 20 && ip[0] >> 4 === 4) {
    proto = ip[9];
    off = (ip[0] & 15) * 4;
    src = Array.from(ip.subarray(12, 16)).join(".");
    dst = Array.from(ip.subarray(16, 20)).join(".");
  } else if (ip.length >= 40 && ip[0] >> 4 === 6) {
    proto = ip[6];
    off = 40;
    src = `[${v6Text(ip.subarray(8, 24))}]`;
    dst = `[${v6Text(ip.subarray(24, 40))}]`;
  } else return null;
  if ((proto !== 6 && proto !== 17) || off + 4 > ip.length) return null;
  const sp = (ip[off] << 8) | ip[off + 1], dp = (ip[off + 2] << 8) | ip[off + 3];
  return [proto, `${src}:${sp}`, `${dst}:${dp}`];
}

/**
 * Re-reads `file` and returns a pcap Blob of the packets of `sessions` (inspector sessions,
 * the summary form is enough). Throws if the file cannot be read as a capture.
 */
export async function selectPackets(file, sessions) {
  const buf = await bytesOf(file);
  // Endpoint pair -> time spans of the sessions using it (a 4-tuple may be reused).
  const tcp = new Map(), udp = new Map();
  const add = (map, key, span) => { if (!map.has(key)) map.set(key, []); map.get(key).push(span); };
  const slack = 1e-6; // timestamps are compared after a float round trip
  for (const s of sessions) {
    const span = [s.start - slack, s.end + slack];
    add(tcp, `${s.client}|${s.server}`, span);
    add(tcp, `${s.server}|${s.client}`, span);
    if (s.udp_relay) add(udp, s.udp_relay, span);
  }
  const inSpan = (spans, t) => spans?.some(([a, b]) => t >= a && t <= b) ?? false;
  const out = [];
  let link = null;
  for (const [lt, [sec, nsec], p, orig] of packets(buf)) {
    const t = sec + nsec / 1e9;
    const ip = ipPayload(lt, p);
    const e = ip && endpoints(ip);
    if (!e) continue;
    const keep = e[0] === 6 ? inSpan(tcp.get(`${e[1]}|${e[2]}`), t)
      : inSpan(udp.get(e[1]), t) || inSpan(udp.get(e[2]), t);
    if (!keep) continue;
    if (link === null) link = lt;
    else if (link !== lt) throw new Error("the kept packets have different link types; a pcap holds one");
    const rec = new DataView(new ArrayBuffer(16));
    rec.setUint32(0, sec, true);
    rec.setUint32(4, nsec, true);
    rec.setUint32(8, p.length, true);
    rec.setUint32(12, orig, true);
    out.push(rec.buffer, p.slice());
  }
  const header = new DataView(new ArrayBuffer(24));
  header.setUint32(0, 0xa1b23c4d, true); // nanosecond timestamps: pcapng's precision is kept
  header.setUint16(4, 2, true);
  header.setUint16(6, 4, true);
  header.setUint32(16, 262144, true);
  header.setUint32(20, link ?? LINK.ETHERNET, true);
  return new Blob([header.buffer, ...out], { type: "application/vnd.tcpdump.pcap" });
}
