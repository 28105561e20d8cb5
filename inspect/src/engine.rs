//! The connection table: routes every packet to its TCP connection (reassembly, detection,
//! decoding) or to a UDP association, then turns connections into report sessions.

use core::net::{IpAddr, SocketAddr};
use std::collections::HashMap;

use crate::Options;
use crate::capture::Frame;
use crate::detect::{self, Verdict};
use crate::link::{self, Packet, TcpMeta, Transport};
use crate::report::{Dir, Message, Session};
use crate::session::{self, Decoder, Retained};
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
    start: f64,
    end: f64,
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
    fn new(client: SocketAddr, server: SocketAddr, cap: usize, frame: &Frame<'_>) -> Self {
        Self {
            client,
            server,
            up: HalfStream::new(cap),
            down: HalfStream::new(cap),
            up_buf: Retained::default(),
            down_buf: Retained::default(),
            verdict: Verdict::Undecided,
            decoder: None,
            start: frame.ts,
            end: frame.ts,
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
            buf.push(&d);
        });
        if tcp.ack_flag {
            other.peer_ack(tcp.ack, &mut |d| {
                if let Delivered::Gap { offset, len } = d {
                    Self::note_gap(gaps, gap_count, other_dir, offset, len);
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
                buf.push(&d);
            });
        }
    }

    /// Detection and decoding after new bytes. `last` = end of capture.
    fn progress(&mut self, idx: usize, udp: &mut UdpMatcher, opts: &Options, last: bool) {
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
                    self.up_buf.release();
                    self.down_buf.release();
                    return;
                }
                Verdict::Socks4 | Verdict::Socks5 => {
                    self.decoder = Some(Box::new(Decoder::new(self.verdict, opts.show_secrets)));
                }
            }
        }
        let Some(dec) = self.decoder.as_mut() else {
            return;
        };
        if !dec.finished() {
            dec.advance(&self.up_buf, &self.down_buf, last);
            if dec.finished() {
                self.up_buf.release();
                self.down_buf.release();
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

    fn into_session(self, opts: &Options) -> Option<Session> {
        let dec = *self.decoder?;
        let (hs_up, hs_down) = dec.handshake_len();
        let f = dec.facts;
        let mut anomalies = Vec::new();
        if self.up.midstream || self.down.midstream {
            anomalies.push("truncated: capture starts mid-connection (no SYN seen)".to_owned());
        }
        anomalies.extend(dec.anomalies);
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
        let mut messages = dec.messages;
        messages.extend(self.udp_messages);
        let (tunnelled, sni) = match f.tunnelled {
            Some(crate::tunnel::Tunnelled::Tls { sni }) => (Some("tls"), sni),
            Some(t) => (Some(t.name()), None),
            None => (None, None),
        };
        Some(Session {
            client: self.client.to_string(),
            server: self.server.to_string(),
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
            udp_relay: self.udp_relay.map(|r| r.to_string()),
            udp_destinations: self.udp_destinations,
            messages,
        })
    }
}

/// All state of one inspection run.
#[derive(Debug)]
pub(crate) struct Engine<'o> {
    opts: &'o Options,
    conns: Vec<Conn>,
    index: HashMap<(SocketAddr, SocketAddr), usize>,
    udp: UdpMatcher,
}

fn key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

impl<'o> Engine<'o> {
    pub(crate) fn new(opts: &'o Options) -> Self {
        Self {
            opts,
            conns: Vec::new(),
            index: HashMap::new(),
            udp: UdpMatcher::default(),
        }
    }

    /// Number of TCP connections seen.
    pub(crate) fn tcp_connections(&self) -> u64 {
        self.conns.len() as u64
    }

    /// Processes one frame.
    pub(crate) fn frame(&mut self, frame: &Frame<'_>) {
        let Some(pkt) = link::decode(frame.link_type, frame.data) else {
            return;
        };
        match pkt.transport {
            Transport::Tcp(tcp) => self.tcp(frame, &pkt, &tcp),
            Transport::Udp => self.udp(frame, &pkt),
        }
    }

    fn tcp(&mut self, frame: &Frame<'_>, pkt: &Packet<'_>, tcp: &TcpMeta) {
        let k = key(pkt.src, pkt.dst);
        let existing = self.index.get(&k).copied();
        // A new SYN (not a retransmitted one) on a known 4-tuple starts a new connection.
        let fresh_syn = |c: &Conn| c.closed || c.syn_seq.is_some_and(|s| s != tcp.seq);
        let idx = match existing {
            Some(i) if !(tcp.syn && !tcp.ack_flag && self.conns.get(i).is_some_and(fresh_syn)) => i,
            _ => {
                let (client, server) = if tcp.syn && tcp.ack_flag {
                    (pkt.dst, pkt.src)
                } else {
                    (pkt.src, pkt.dst)
                };
                self.conns
                    .push(Conn::new(client, server, self.opts.reassembly_cap, frame));
                let i = self.conns.len() - 1;
                self.index.insert(k, i);
                i
            }
        };
        let Some(conn) = self.conns.get_mut(idx) else {
            return;
        };
        conn.end = frame.ts;
        if tcp.syn && !tcp.ack_flag {
            conn.syn_seq = Some(tcp.seq);
        }
        if conn.verdict == Verdict::NotSocks {
            return;
        }
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
        conn.rst |= tcp.rst;
        conn.closed = conn.rst || (conn.up.fin && conn.down.fin);
        conn.progress(idx, &mut self.udp, self.opts, false);
    }

    fn udp(&mut self, frame: &Frame<'_>, pkt: &Packet<'_>) {
        if self.udp.is_empty() {
            return;
        }
        let payload = pkt.payload;
        let mut header_ok = || socks::udp_header(payload).is_ok();
        let Some((idx, way)) = self.udp.classify(pkt.src, pkt.dst, &mut header_ok) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(idx) else {
            return;
        };
        conn.end = conn.end.max(frame.ts);
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
        match socks::udp_header(payload) {
            Ok(d) => {
                if conn.udp_destinations.len() < MAX_UDP_MESSAGES
                    && !conn.udp_destinations.contains(&d.target)
                    && way == Way::Up
                {
                    conn.udp_destinations.push(d.target.clone());
                }
                if conn.udp_messages.len() < MAX_UDP_MESSAGES {
                    // Keep the header and at most 64 payload bytes.
                    let shown = payload.len().min(d.header_len + 64);
                    let offset = frame.file_offset + pkt.payload_offset;
                    conn.udp_messages.push(session::message(
                        dir,
                        "udp_header",
                        None,
                        payload.get(..shown).unwrap_or_default(),
                        payload.len(),
                        0,
                        vec![frame.number],
                        vec![[offset, shown]],
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

    /// End of capture: flush reassembly, finish decoding, build sessions.
    pub(crate) fn finish(mut self) -> Vec<Session> {
        for (idx, conn) in self.conns.iter_mut().enumerate() {
            if conn.verdict == Verdict::NotSocks {
                continue;
            }
            conn.finish_streams();
            conn.progress(idx, &mut self.udp, self.opts, true);
        }
        let opts = self.opts;
        self.conns
            .into_iter()
            .filter_map(|c| c.into_session(opts))
            .collect()
    }
}
