//! The connection table: routes every packet to its TCP connection (reassembly, detection,
//! decoding) or to a UDP association, then turns connections into report sessions.

use core::net::{IpAddr, SocketAddr};
use std::collections::{HashMap, VecDeque};

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;

use crate::Options;
use crate::capture::Frame;
use crate::detect::{self, Verdict};
use crate::encapsulation::Encapsulation;
use crate::link::{self, Packet, TcpMeta, Transport};
use crate::report::{Dir, Message, Session, address_text};
use crate::session::{self, Decoder, GSSAPI_RETAIN, Retained, Spare};
use crate::socks::{self, command_name};
use crate::tcp_reassembly::{Delivered, HalfStream, Origin};
use crate::udp_match::{UdpMatcher, Way};

/// Most gap anomalies listed per connection.
const MAX_GAP_NOTES: usize = 4;
/// Most UDP datagrams listed as messages per session.
const MAX_UDP_MESSAGES: usize = 16;

#[derive(Debug)]
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    up: HalfStream,
    down: HalfStream,
    up_buf: Retained,
    down_buf: Retained,
    verdict: Verdict,
    decoder: Option<Box<Decoder>>,
    /// Counts the encapsulated messages once a GSS-API session's protected part starts.
    encapsulation: Option<Box<Encapsulation>>,
    start: f64,
    end: f64,
    /// The capture clock at the last packet (for the idle timeout).
    last_seen: f64,
    first_frame: u64,
    seen_payload: bool,
    server_first: bool,
    rst: bool,
    closed: bool,
    /// Sequence number of the client's SYN, if seen.
    syn_seq: Option<u32>,
    snap_truncated: bool,
    gaps: Vec<String>,
    gap_count: usize,
    udp_registered: bool,
    udp_relay: Option<SocketAddr>,
    udp_up: u64,
    udp_down: u64,
    udp_destinations: Vec<String>,
    udp_messages: Vec<Message>,
    udp_anomalies: Vec<String>,
}

impl Conn {
    fn new(
        client: SocketAddr,
        server: SocketAddr,
        cap: usize,
        frame: &Frame<'_>,
        spare: &mut Spare,
    ) -> Self {
        Self {
            client,
            server,
            up: HalfStream::new(cap),
            down: HalfStream::new(cap),
            up_buf: spare.retained(),
            down_buf: spare.retained(),
            verdict: Verdict::Undecided,
            decoder: None,
            encapsulation: None,
            start: frame.ts,
            end: frame.ts,
            last_seen: f64::NEG_INFINITY,
            first_frame: frame.number,
            seen_payload: false,
            server_first: false,
            rst: false,
            closed: false,
            syn_seq: None,
            snap_truncated: false,
            gaps: Vec::new(),
            gap_count: 0,
            udp_registered: false,
            udp_relay: None,
            udp_up: 0,
            udp_down: 0,
            udp_destinations: Vec::new(),
            udp_messages: Vec::new(),
            udp_anomalies: Vec::new(),
        }
    }

    fn note_gap(gaps: &mut Vec<String>, count: &mut usize, dir: &str, offset: u64, len: u64) {
        *count += 1;
        if gaps.len() < MAX_GAP_NOTES {
            gaps.push(format!(
                "gap: {len} bytes missing {dir} at stream offset {offset}"
            ));
        }
    }

    /// Feeds a TCP segment travelling up (client → server) or down.
    fn segment(&mut self, is_up: bool, tcp: &TcpMeta, payload: &[u8], origin: Origin) {
        let Self {
            up,
            down,
            up_buf,
            down_buf,
            gaps,
            gap_count,
            encapsulation,
            ..
        } = self;
        let (half, buf, other, other_buf, dir, other_dir) = if is_up {
            (up, up_buf, down, down_buf, "client→server", "server→client")
        } else {
            (down, down_buf, up, up_buf, "server→client", "client→server")
        };
        half.segment(tcp.seq, tcp.syn, tcp.fin, payload, origin, &mut |d| {
            if let Delivered::Gap { offset, len } = d {
                Self::note_gap(gaps, gap_count, dir, offset, len);
            }
            if let Some(e) = encapsulation.as_mut() {
                e.deliver(is_up, &d);
            }
            buf.push(&d);
        });
        if tcp.ack_flag {
            other.peer_ack(tcp.ack, &mut |d| {
                if let Delivered::Gap { offset, len } = d {
                    Self::note_gap(gaps, gap_count, other_dir, offset, len);
                }
                if let Some(e) = encapsulation.as_mut() {
                    e.deliver(!is_up, &d);
                }
                other_buf.push(&d);
            });
        }
    }

    fn finish_streams(&mut self) {
        for is_up in [true, false] {
            let Self {
                up,
                down,
                up_buf,
                down_buf,
                gaps,
                gap_count,
                encapsulation,
                ..
            } = self;
            let (half, buf, dir) = if is_up {
                (up, up_buf, "client→server")
            } else {
                (down, down_buf, "server→client")
            };
            half.finish(&mut |d| {
                if let Delivered::Gap { offset, len } = d {
                    Self::note_gap(gaps, gap_count, dir, offset, len);
                }
                if let Some(e) = encapsulation.as_mut() {
                    e.deliver(is_up, &d);
                }
                buf.push(&d);
            });
        }
    }

    /// Detection and decoding after new bytes. `last` = end of capture.
    fn progress(
        &mut self,
        idx: usize,
        udp: &mut UdpMatcher,
        spare: &mut Spare,
        opts: &Options,
        last: bool,
    ) {
        if self.verdict == Verdict::Undecided {
            let stuck = self.up_buf.full && (self.down_buf.full || self.down.fin || self.rst);
            self.verdict = detect::judge(
                &self.up_buf.data,
                &self.down_buf.data,
                self.server_first,
                last || stuck,
            );
            match self.verdict {
                Verdict::Undecided => return,
                Verdict::NotSocks => {
                    self.up_buf.release_into(spare);
                    self.down_buf.release_into(spare);
                    return;
                }
                Verdict::Socks4 | Verdict::Socks5 => {
                    self.decoder = Some(spare.decoder(self.verdict, opts.show_secrets));
                }
            }
        }
        let Some(dec) = self.decoder.as_mut() else {
            return;
        };
        if !dec.finished() {
            dec.advance(&self.up_buf, &self.down_buf, last);
            if dec.facts.gssapi.is_some() {
                self.up_buf.allow(GSSAPI_RETAIN);
                self.down_buf.allow(GSSAPI_RETAIN);
            }
            if dec.finished() {
                if dec.encapsulated() {
                    let (up, down) = dec.handshake_len();
                    self.encapsulation = Some(Box::new(Encapsulation::new(
                        [up, down],
                        [&self.up_buf, &self.down_buf],
                    )));
                }
                self.up_buf.release_into(spare);
                self.down_buf.release_into(spare);
            }
        }
        let f = &dec.facts;
        if !self.udp_registered && f.command == Some(3) && f.reply_code == Some(0) {
            self.udp_registered = true;
            if let Some(bound) = f.bound_addr {
                let ip = if bound.ip().is_unspecified() {
                    self.server.ip()
                } else {
                    bound.ip()
                };
                let relay = SocketAddr::new(ip, bound.port());
                self.udp_relay = Some(relay);
                // The request's DST.PORT is the port the client will send from (0 = unknown),
                // meaningful only when DST.ADDR is an IP address.
                let port = match f.dst_host.as_deref().map(str::parse::<IpAddr>) {
                    Some(Ok(_)) => f.dst_port.unwrap_or(0),
                    _ => 0,
                };
                udp.register(idx, relay, self.client.ip(), port);
            } else {
                self.udp_anomalies
                    .push("UDP relay given as a domain name: datagrams not matched".into());
            }
        }
        if self.closed && self.udp_registered {
            udp.close(idx);
        }
    }

    /// The connection's session, if it is SOCKS; its buffers and decoder go to `spare`.
    fn into_session(mut self, opts: &Options, spare: &mut Spare) -> Option<Session> {
        self.up_buf.release_into(spare);
        self.down_buf.release_into(spare);
        let mut dec = self.decoder?;
        let (hs_up, hs_down) = dec.handshake_len();
        // Taken out of the box rather than moving the whole decoder (~1.8 KiB) out of it.
        let f = core::mem::take(&mut dec.facts);
        let dec_messages = core::mem::take(&mut dec.messages);
        let dec_anomalies = core::mem::take(&mut dec.anomalies);
        spare.put_decoder(dec);
        let midstream = self.up.midstream || self.down.midstream;
        let mut anomalies = if midstream {
            let mut a = Vec::with_capacity(dec_anomalies.len() + 1);
            a.push("truncated: capture starts mid-connection (no SYN seen)".to_owned());
            a.extend(dec_anomalies);
            a
        } else {
            // Usually empty: nothing allocated.
            dec_anomalies
        };
        anomalies.extend(self.gaps);
        if self.gap_count > MAX_GAP_NOTES {
            anomalies.push(format!(
                "gap: {} more gaps not listed",
                self.gap_count - MAX_GAP_NOTES
            ));
        }
        if self.up.cap_hit || self.down.cap_hit {
            anomalies.push(format!(
                "gap: reassembly buffer cap ({} bytes) reached, holes skipped",
                opts.reassembly_cap
            ));
        }
        if self.snap_truncated {
            anomalies.push("truncated: packets cut by the snapshot length".to_owned());
        }
        anomalies.extend(self.udp_anomalies);
        let mut gssapi = f.gssapi.map(Box::new);
        if let (Some(g), Some(e)) = (gssapi.as_mut(), self.encapsulation.as_deref()) {
            let ([up, down], notes) = e.report();
            g.encapsulated_up = up;
            g.encapsulated_down = down;
            anomalies.extend(notes);
        }
        let mut messages = dec_messages;
        messages.extend(self.udp_messages);
        // Kept as long as the session: without the doubling's spare room (freed in place).
        messages.shrink_to_fit();
        let (tunnelled, sni) = match f.tunnelled {
            Some(crate::tunnel::Tunnelled::Tls { sni }) => (Some("tls"), sni),
            Some(t) => (Some(t.name()), None),
            None => (None, None),
        };
        Some(Session {
            client: address_text(self.client),
            server: address_text(self.server),
            version: f.version,
            methods_offered: f.methods_offered,
            method: f.method,
            username: f.username,
            password: if opts.show_secrets { f.password } else { None },
            auth_ok: f.auth_ok,
            command: f.command.map(command_name),
            dst_host: f.dst_host,
            dst_port: f.dst_port,
            reply_code: f.reply_code,
            bound: f.bound,
            bind_peer: f.bind_peer,
            bytes_up: self.up.next_offset().saturating_sub(hs_up),
            bytes_down: self.down.next_offset().saturating_sub(hs_down),
            udp_datagrams_up: self.udp_up,
            udp_datagrams_down: self.udp_down,
            start: self.start,
            end: self.end,
            tunnelled,
            sni,
            anomalies,
            first_frame: self.first_frame,
            udp_relay: self.udp_relay.map(address_text),
            udp_destinations: self.udp_destinations,
            messages,
            gssapi,
        })
    }
}

/// How long (capture seconds) a closed connection still takes its late packets (the last ACK,
/// a retransmitted FIN) before it is reported.
pub(crate) const CLOSE_LINGER: f64 = 1.0;
/// How long (capture seconds) the 4-tuple of a reported, closed connection is remembered, so
/// stray packets after the close do not open a new connection (TCP's TIME_WAIT is 60 s).
const TOMBSTONE: f64 = 60.0;

/// The hasher of the engine's tables: foldhash keyed with [`Options::hash_seed`] (SipHash,
/// std's default, was a visible share of the time per packet).
pub(crate) type Hasher = SeedableRandomState;

/// A table keyed by connection 4-tuples or ids, hashed with [`Hasher`].
pub(crate) type Table<K, V> = HashMap<K, V, Hasher>;

/// An empty [`Table`] keyed with `seed`.
pub(crate) fn table<K, V>(seed: u64) -> Table<K, V> {
    HashMap::with_hasher(SeedableRandomState::with_seed(
        seed,
        SharedSeed::global_random(),
    ))
}

/// All state of one inspection run: the live connections only. A connection is reported (its
/// [`Session`] moved to the ready list, its state dropped) [`CLOSE_LINGER`] after it closed
/// (FIN both ways, or RST), after [`Options::idle_timeout`] without packets, or at the end.
#[derive(Debug)]
pub(crate) struct Engine {
    opts: Options,
    conns: Table<usize, Conn>,
    index: Table<ConnKey, usize>,
    udp: UdpMatcher,
    /// Buffers and decoders of reported connections, for the next ones.
    spare: Spare,
    /// Ids given so far (the next connection's id): TCP connections seen.
    next_id: usize,
    /// The capture clock: the latest time seen in two consecutive frames, so that one frame
    /// with a wild timestamp does not expire every connection.
    now: f64,
    /// The previous frame's timestamp.
    prev_ts: f64,
    /// Closed connections waiting for their linger to pass: (report time, id), oldest first.
    closing: VecDeque<(f64, usize)>,
    /// 4-tuples of reported closed connections, with the time they are forgotten.
    tombstones: Table<ConnKey, f64>,
    /// Capture time of the next sweep for idle connections and old tombstones.
    next_sweep: f64,
    /// Sessions reported and not yet taken.
    ready: Vec<Session>,
}

/// A connection's 4-tuple as the tables key it: both endpoints, in a fixed order (the same
/// for either direction of a packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnKey {
    /// Two IPv4 endpoints packed in one integer: the addresses in the high half, the ports
    /// in the low half.
    V4(u128),
    /// Anything else (IPv6, or a mix).
    Other(SocketAddr, SocketAddr),
}

impl core::hash::Hash for ConnKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // IPv4 (nearly every packet) in one write: foldhash then mixes it with a single
        // multiply, where `SocketAddr`'s derived hash feeds it field by field (a visible
        // share of the time per packet). A V4 key and an Other key hashing alike is harmless:
        // equality still tells them apart.
        match self {
            Self::V4(packed) => state.write_u128(*packed),
            Self::Other(a, b) => {
                a.hash(state);
                b.hash(state);
            }
        }
    }
}

fn key(a: SocketAddr, b: SocketAddr) -> ConnKey {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    match (a, b) {
        (SocketAddr::V4(a), SocketAddr::V4(b)) => {
            let ips = u64::from(a.ip().to_bits()) << 32 | u64::from(b.ip().to_bits());
            let ports = u64::from(a.port()) << 16 | u64::from(b.port());
            ConnKey::V4(u128::from(ips) << 64 | u128::from(ports))
        }
        _ => ConnKey::Other(a, b),
    }
}

impl Engine {
    pub(crate) fn new(opts: Options) -> Self {
        let seed = opts.hash_seed;
        Self {
            opts,
            conns: table(seed),
            index: table(seed),
            udp: UdpMatcher::new(seed),
            spare: Spare::default(),
            next_id: 0,
            now: f64::NEG_INFINITY,
            prev_ts: f64::NEG_INFINITY,
            closing: VecDeque::new(),
            tombstones: table(seed),
            next_sweep: f64::NEG_INFINITY,
            ready: Vec::new(),
        }
    }

    /// Number of TCP connections seen.
    pub(crate) fn tcp_connections(&self) -> u64 {
        self.next_id as u64
    }

    /// Number of connections held (not yet reported).
    pub(crate) fn live_connections(&self) -> usize {
        self.conns.len()
    }

    /// The first frame of the oldest connection held that may still become a session (one
    /// not already judged not SOCKS); `None` when there is none. Every session reported later
    /// starts at or after it.
    pub(crate) fn oldest_possible_session(&self) -> Option<u64> {
        self.conns
            .values()
            .filter(|c| c.verdict != Verdict::NotSocks)
            .map(|c| c.first_frame)
            .min()
    }

    /// Sessions reported since the last call, in the order they were reported.
    pub(crate) fn take_ready(&mut self) -> Vec<Session> {
        // The next batch is likely about as large: one allocation for it, not a doubling
        // from 4 (this is called after every chunk pushed).
        let room = self.ready.len();
        core::mem::replace(&mut self.ready, Vec::with_capacity(room))
    }

    /// Processes one frame.
    pub(crate) fn frame(&mut self, frame: &Frame<'_>) {
        // The first frame sets the clock alone.
        let confirmed = if self.prev_ts == f64::NEG_INFINITY {
            frame.ts
        } else {
            frame.ts.min(self.prev_ts)
        };
        self.prev_ts = frame.ts;
        if confirmed > self.now {
            self.now = confirmed;
            self.expire();
        }
        let Some(pkt) = link::decode(frame.link_type, frame.data) else {
            return;
        };
        match pkt.transport {
            Transport::Tcp(tcp) => self.tcp(frame, &pkt, &tcp),
            Transport::Udp => self.udp(frame, &pkt),
        }
    }

    /// Reports the connections whose linger or idle time has passed at `self.now`.
    fn expire(&mut self) {
        while let Some(&(due, id)) = self.closing.front() {
            if due >= self.now {
                break;
            }
            self.closing.pop_front();
            self.retire(id, true);
        }
        let Some(idle) = self.opts.idle_timeout else {
            return;
        };
        if self.now < self.next_sweep {
            return;
        }
        // Sweeping a quarter of the timeout apart bounds the overshoot and the cost.
        self.next_sweep = self.now + (idle / 4.0).max(1.0);
        let now = self.now;
        let idle_ids: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closed && now - c.last_seen > idle)
            .map(|(&id, _)| id)
            .collect();
        for id in idle_ids {
            self.retire(id, false);
        }
        self.tombstones.retain(|_, &mut until| until >= now);
    }

    /// Reports connection `id` now: flushes its streams, finishes decoding, queues its
    /// session and drops its state. `closed`: it ended by FIN/RST (its 4-tuple is remembered).
    fn retire(&mut self, id: usize, closed: bool) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let k = key(conn.client, conn.server);
        if self.index.get(&k) == Some(&id) {
            self.index.remove(&k);
            if closed {
                self.tombstones.insert(k, self.now + TOMBSTONE);
            }
        }
        if conn.verdict != Verdict::NotSocks {
            conn.finish_streams();
            conn.progress(id, &mut self.udp, &mut self.spare, &self.opts, true);
        }
        self.udp.remove(id);
        if let Some(session) = conn.into_session(&self.opts, &mut self.spare) {
            self.ready.push(session);
        }
    }

    fn tcp(&mut self, frame: &Frame<'_>, pkt: &Packet<'_>, tcp: &TcpMeta) {
        let k = key(pkt.src, pkt.dst);
        let new_syn = tcp.syn && !tcp.ack_flag;
        let existing = self.index.get(&k).copied();
        if existing.is_none() && !new_syn && self.tombstones.contains_key(&k) {
            // A late packet of a connection already reported.
            return;
        }
        // A new SYN (not a retransmitted one) on a known 4-tuple starts a new connection.
        let fresh_syn = |c: &Conn| c.closed || c.syn_seq.is_some_and(|s| s != tcp.seq);
        let idx = match existing {
            Some(i) if !(new_syn && self.conns.get(&i).is_some_and(fresh_syn)) => i,
            _ => {
                let (client, server) = if tcp.syn && tcp.ack_flag {
                    (pkt.dst, pkt.src)
                } else {
                    (pkt.src, pkt.dst)
                };
                let i = self.next_id;
                self.next_id += 1;
                self.conns.insert(
                    i,
                    Conn::new(
                        client,
                        server,
                        self.opts.reassembly_cap,
                        frame,
                        &mut self.spare,
                    ),
                );
                self.index.insert(k, i);
                self.tombstones.remove(&k);
                i
            }
        };
        let Some(conn) = self.conns.get_mut(&idx) else {
            return;
        };
        conn.end = frame.ts;
        conn.last_seen = self.now;
        if new_syn {
            conn.syn_seq = Some(tcp.seq);
        }
        let was_closed = conn.closed;
        if conn.verdict != Verdict::NotSocks {
            let is_up = pkt.src == conn.client;
            conn.snap_truncated |= pkt.truncated;
            let origin = Origin {
                frame: frame.number,
                file_offset: frame.file_offset + pkt.payload_offset,
            };
            conn.segment(is_up, tcp, pkt.payload, origin);
            // Who spoke first is decided by the first bytes delivered in stream order, so a
            // reordered capture does not make a client look like a server.
            let delivered = !conn.up_buf.data.is_empty() || !conn.down_buf.data.is_empty();
            if !conn.seen_payload && delivered {
                conn.seen_payload = true;
                conn.server_first = conn.up_buf.data.is_empty();
            }
        } else {
            // Not decoded, but its close still ends it.
            conn.up.fin |= tcp.fin && pkt.src == conn.client;
            conn.down.fin |= tcp.fin && pkt.src != conn.client;
        }
        conn.rst |= tcp.rst;
        conn.closed = conn.rst || (conn.up.fin && conn.down.fin);
        if conn.verdict != Verdict::NotSocks {
            conn.progress(idx, &mut self.udp, &mut self.spare, &self.opts, false);
        }
        if conn.closed && !was_closed {
            self.closing.push_back((self.now + CLOSE_LINGER, idx));
        }
    }

    fn udp(&mut self, frame: &Frame<'_>, pkt: &Packet<'_>) {
        if self.udp.is_empty() {
            return;
        }
        let payload = pkt.payload;
        let mut header_ok = || socks::udp_destination(payload).is_ok();
        let Some((idx, way)) = self.udp.classify(pkt.src, pkt.dst, &mut header_ok) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&idx) else {
            return;
        };
        conn.end = conn.end.max(frame.ts);
        conn.last_seen = self.now;
        let dir = match way {
            Way::Up => {
                conn.udp_up += 1;
                Dir::UdpUp
            }
            Way::Down => {
                conn.udp_down += 1;
                Dir::UdpDown
            }
        };
        match socks::udp_destination(payload) {
            Ok((header_len, dst)) => {
                if way == Way::Up && conn.udp_destinations.len() < MAX_UDP_MESSAGES {
                    let target = socks::addr_text(&dst);
                    if !conn.udp_destinations.contains(&target) {
                        conn.udp_destinations.push(target);
                    }
                }
                if conn.udp_messages.len() < MAX_UDP_MESSAGES {
                    // Keep the header and at most 64 payload bytes.
                    let shown = payload.len().min(header_len + 64);
                    let offset = frame.file_offset + pkt.payload_offset;
                    conn.udp_messages.push(session::message(
                        dir,
                        "udp_header",
                        None,
                        payload.get(..shown).unwrap_or_default(),
                        payload.len(),
                        0,
                        smallvec::smallvec![frame.number],
                        smallvec::smallvec![[offset, shown]],
                    ));
                }
            }
            Err(e) => {
                if conn.udp_anomalies.len() < MAX_GAP_NOTES {
                    conn.udp_anomalies.push(format!(
                        "malformed UDP datagram header (frame {}): {e}",
                        frame.number
                    ));
                }
            }
        }
    }

    /// End of capture: reports every connection still held, in order of first packet.
    pub(crate) fn finish(&mut self) -> Vec<Session> {
        self.closing.clear();
        let mut ids: Vec<usize> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let closed = self.conns.get(&id).is_some_and(|c| c.closed);
            self.retire(id, closed);
        }
        self.take_ready()
    }
}
