//! The report: the inspector's JSON contract (see "JSON contract" in inspect/README.md) plus
//! extra keys for the web page, and a human-readable text rendering for the CLI.

use core::fmt::{self, Write as _};
use core::net::{IpAddr, SocketAddr};

use serde::Serialize;
use smallvec::SmallVec;

/// Everything the inspector found in one capture. Serializes to the JSON contract.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Facts about the file.
    pub capture: CaptureInfo,
    /// SOCKS sessions in order of their first packet.
    pub sessions: Vec<Session>,
}

/// Facts about the capture file.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureInfo {
    /// `"pcap"` or `"pcapng"`.
    pub format: &'static str,
    /// Number of packets (frames) in the file.
    pub packets: u64,
    /// Link-layer type names of the interfaces that carried packets (`"ETHERNET"`, …).
    pub link_types: Vec<String>,
    /// Extra: file size in bytes.
    pub bytes: usize,
    /// Extra: TCP connections seen (SOCKS or not).
    pub tcp_connections: u64,
    /// Extra: the file ends in the middle of a record.
    pub truncated: bool,
}

/// One SOCKS control connection. Field meanings are those of the JSON contract in
/// inspect/README.md.
#[derive(Clone, Debug, Serialize)]
pub struct Session {
    /// `ip:port` of the client (`[v6]:port` for IPv6).
    pub client: String,
    /// `ip:port` of the SOCKS server.
    pub server: String,
    /// `"socks4"`, `"socks4a"` or `"socks5"`.
    pub version: &'static str,
    /// SOCKS5 method codes offered; empty for SOCKS4.
    pub methods_offered: Vec<u8>,
    /// Method selected by the server; `None` if not seen.
    pub method: Option<u8>,
    /// RFC 1929 username or SOCKS4 USERID.
    pub username: Option<String>,
    /// RFC 1929 password: present only when secrets are shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// RFC 1929 status is 0; `None` without sub-negotiation.
    pub auth_ok: Option<bool>,
    /// `"connect"`, `"bind"`, `"udp_associate"` or `"unknown:0xNN"`.
    pub command: Option<String>,
    /// Requested destination host as sent (IP literal or name).
    pub dst_host: Option<String>,
    /// Requested destination port.
    pub dst_port: Option<u16>,
    /// Raw reply code of the first reply.
    pub reply_code: Option<u8>,
    /// BND.ADDR:BND.PORT of the first reply.
    pub bound: Option<String>,
    /// Address in BIND's second reply.
    pub bind_peer: Option<String>,
    /// Payload bytes after the handshake, client → server.
    pub bytes_up: u64,
    /// Payload bytes after the handshake, server → client.
    pub bytes_down: u64,
    /// UDP ASSOCIATE datagrams client → relay.
    pub udp_datagrams_up: u64,
    /// UDP ASSOCIATE datagrams relay → client.
    pub udp_datagrams_down: u64,
    /// Timestamp of the first packet.
    pub start: f64,
    /// Timestamp of the last packet.
    pub end: f64,
    /// `"http"`, `"tls"`, `"ssh"` or `None`.
    pub tunnelled: Option<&'static str>,
    /// TLS server name.
    pub sni: Option<String>,
    /// Short descriptions of what went wrong.
    pub anomalies: Vec<String>,
    /// Extra: frame number of the first packet.
    pub first_frame: u64,
    /// Extra: UDP relay address (`BND` of a UDP ASSOCIATE reply, unspecified IP replaced by the
    /// server's).
    pub udp_relay: Option<String>,
    /// Extra: destinations of the first UDP datagrams sent through the relay.
    pub udp_destinations: Vec<String>,
    /// Extra: every SOCKS message decoded, in order, with field positions.
    pub messages: Vec<Message>,
    /// The RFC 1961 GSS-API exchange, when the server selected method 1 (absent otherwise).
    /// Boxed: most sessions have none, and a kept session is smaller without it inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gssapi: Option<Box<Gssapi>>,
}

/// What an RFC 1961 GSS-API session showed in clear. See "JSON contract" in inspect/README.md.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Gssapi {
    /// The context-establishment and protection-level messages, in stream order per
    /// direction (client's first, then the server's).
    pub tokens: Vec<GssapiToken>,
    /// The mechanism of the client's initial context token: `"kerberos"`
    /// (1.2.840.113554.1.2.2), `"spnego"`, or the OID in dotted form.
    pub mechanism: Option<String>,
    /// The Kerberos ticket's service principal, `service/host@REALM` (from the AP-REQ's
    /// ticket, which is not encrypted).
    pub service_principal: Option<String>,
    /// The ticket's realm.
    pub realm: Option<String>,
    /// The protection-level exchange (RFC 1961 §4), when one was sent.
    pub protection: Option<Protection>,
    /// Encapsulated messages (RFC 1961 §5) client → server after the exchange.
    pub encapsulated_up: Encapsulated,
    /// Encapsulated messages server → client.
    pub encapsulated_down: Encapsulated,
}

/// One GSS-API message of the exchange.
#[derive(Clone, Debug, Serialize)]
pub struct GssapiToken {
    /// `"up"` (client → server) or `"down"`.
    pub dir: Dir,
    /// `"context"` (MTYP 1), `"protection"` (2), `"abort"` (0xff) or `"unknown:0xNN"`.
    pub kind: String,
    /// Token length (LEN); 0 for an abort.
    pub len: usize,
}

/// The protection-level sub-negotiation.
#[derive(Clone, Debug, Serialize)]
pub struct Protection {
    /// `"nec"` when the level octet is sent unwrapped (the NEC reference implementation,
    /// curl's `--socks5-gssapi-nec`), `"wrapped"` when it is protected as RFC 1961 §4 says.
    pub form: &'static str,
    /// The level the client asked for (visible in the NEC form only): `"none"` (0),
    /// `"integrity"` (1), `"confidentiality"` (2), `"selective"` (3) or `"unknown:N"`.
    pub requested: Option<String>,
    /// The level the server granted (NEC form only), named as `requested`.
    pub granted: Option<String>,
}

/// A count of encapsulated messages in one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Encapsulated {
    /// Whole messages.
    pub messages: u64,
    /// Sum of their token lengths (LEN), headers excluded.
    pub bytes: u64,
}

/// Direction of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Client → server on the control connection.
    Up,
    /// Server → client on the control connection.
    Down,
    /// Client → relay UDP datagram.
    UdpUp,
    /// Relay → client UDP datagram.
    UdpDown,
}

impl Dir {
    fn arrow(self) -> &'static str {
        match self {
            Self::Up => "C→S",
            Self::Down => "S→C",
            Self::UdpUp => "C→R udp",
            Self::UdpDown => "R→C udp",
        }
    }
}

/// `addr` as its `Display` writes it (`a.b.c.d:port`; `[v6]:port` for IPv6), IPv4 without
/// the formatting machinery: the addresses of each session reported were a visible share of
/// the time on captures of many short connections.
pub(crate) fn address_text(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => {
            let mut text = String::with_capacity(21);
            push_ipv4(&mut text, v4.ip().octets());
            text.push(':');
            push_decimal(&mut text, u32::from(v4.port()));
            text
        }
        SocketAddr::V6(_) => addr.to_string(),
    }
}

/// `ip` as its `Display` writes it (IPv4 without the formatting machinery).
pub(crate) fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            push_ipv4(&mut text, v4.octets());
            text
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

fn push_ipv4(text: &mut String, octets: [u8; 4]) {
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(text, u32::from(octet));
    }
}

/// `n` in decimal, no leading zeros.
fn push_decimal(text: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &d in digits.get(at..).unwrap_or_default() {
        text.push(char::from(d));
    }
}

/// One decoded SOCKS message.
///
/// Kept compact (its bytes and where they came from); the summary, fields and hex are derived
/// on demand by parsing the bytes again with the core's parsers. Serializes with `summary`,
/// `hex` and `fields` keys.
#[derive(Clone, Debug)]
pub struct Message {
    /// Direction.
    pub dir: Dir,
    /// Machine name (`"method_request"`, `"reply"`, `"udp_header"`, …).
    pub kind: &'static str,
    /// Offset of the first byte in its direction's TCP stream (0 for UDP).
    pub stream_offset: u64,
    /// Length in bytes (for UDP: the whole datagram).
    pub len: usize,
    /// The message bytes (for UDP: the header and at most 64 payload bytes). Secret bytes are
    /// replaced by `*` unless secrets are shown.
    pub bytes: MessageBytes,
    /// The masked range of `bytes`, if any (`[offset, len]`).
    pub secret: Option<[usize; 2]>,
    /// Frames that carried the message's bytes.
    pub frames: SmallVec<[u64; 1]>,
    /// Where the bytes are in the capture file: `[offset, len]` pairs, in message order.
    pub file_ranges: SmallVec<[[usize; 2]; 1]>,
}

/// A [`Message`]'s bytes: held inline up to 24 bytes (every handshake message but requests
/// and replies with long names, RFC 1929 credentials and GSS-API tokens), so that keeping
/// most messages allocates nothing.
pub type MessageBytes = SmallVec<[u8; 24]>;

impl Message {
    /// One-line description and the message's parts.
    pub fn describe(&self) -> (String, Vec<Field>) {
        crate::socks::describe(self)
    }

    /// One-line description.
    pub fn summary(&self) -> String {
        self.describe().0
    }

    /// The bytes as lowercase hex; masked bytes are `**`.
    pub fn hex(&self) -> String {
        // A digit table rather than `write!("{:02x}")` per byte: the formatting machinery
        // was a visible share of writing a session's JSON (profiled in workerd).
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(self.bytes.len() * 2);
        for (i, &b) in self.bytes.iter().enumerate() {
            match self.secret {
                Some([at, len]) if i >= at && i < at + len => s.push_str("**"),
                _ => {
                    s.push(char::from(DIGITS[usize::from(b >> 4)]));
                    s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
                }
            }
        }
        s
    }
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let (summary, fields) = self.describe();
        let mut st = serializer.serialize_struct("Message", 9)?;
        st.serialize_field("dir", &self.dir)?;
        st.serialize_field("kind", self.kind)?;
        st.serialize_field("summary", &summary)?;
        st.serialize_field("stream_offset", &self.stream_offset)?;
        st.serialize_field("len", &self.len)?;
        st.serialize_field("hex", &self.hex())?;
        st.serialize_field("fields", &fields)?;
        st.serialize_field("frames", self.frames.as_slice())?;
        st.serialize_field("file_ranges", self.file_ranges.as_slice())?;
        st.end()
    }
}

/// A part of a message.
#[derive(Clone, Debug, Serialize)]
pub struct Field {
    /// RFC name (`"VER"`, `"DST.ADDR"`, …).
    pub name: &'static str,
    /// Decoded value as text.
    pub value: String,
    /// Offset inside the message.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Report {
    /// The JSON document of the contract (pretty-printed).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The compact document with every session's `messages` left empty: the table of a
    /// large capture without the per-message detail, which [`Report::session_json`] gives one
    /// session at a time.
    pub fn to_json_without_messages(&mut self) -> String {
        let kept: Vec<Vec<Message>> = self
            .sessions
            .iter_mut()
            .map(|s| core::mem::take(&mut s.messages))
            .collect();
        let json = self.to_json_compact();
        for (s, m) in self.sessions.iter_mut().zip(kept) {
            s.messages = m;
        }
        json
    }

    /// One session (index into `sessions`) as compact JSON, with its `messages`.
    pub fn session_json(&self, index: usize) -> Option<String> {
        self.sessions
            .get(index)
            .and_then(|s| serde_json::to_string(s).ok())
    }

    /// The same document without whitespace (for the browser binding).
    pub fn to_json_compact(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

impl fmt::Display for Report {
    /// The CLI's text rendering: a summary line, then one block per session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.capture;
        writeln!(
            f,
            "{} capture: {} packets, link types {}, {} TCP connections, {} SOCKS sessions{}",
            c.format,
            c.packets,
            c.link_types.join(", "),
            c.tcp_connections,
            self.sessions.len(),
            if c.truncated { " (file truncated)" } else { "" }
        )?;
        for (i, s) in self.sessions.iter().enumerate() {
            writeln!(f)?;
            writeln!(
                f,
                "#{} {} {} -> {}  frames from {}, {:.6}..{:.6} ({:.3} s)",
                i + 1,
                s.version,
                s.client,
                s.server,
                s.first_frame,
                s.start,
                s.end,
                s.end - s.start
            )?;
            let mut line = String::new();
            if !s.methods_offered.is_empty() || s.method.is_some() {
                let _ = write!(
                    line,
                    "methods {:?} selected {}  ",
                    s.methods_offered,
                    opt(&s.method)
                );
            }
            if let Some(u) = &s.username {
                let _ = write!(line, "user {u:?}  ");
            }
            if let Some(p) = &s.password {
                let _ = write!(line, "password {p:?}  ");
            }
            if let Some(ok) = s.auth_ok {
                let _ = write!(line, "auth {}  ", if ok { "ok" } else { "FAILED" });
            }
            if !line.is_empty() {
                writeln!(f, "   {}", line.trim_end())?;
            }
            let host = match &s.dst_host {
                Some(h) if h.contains(':') => format!("[{h}]"),
                other => opt(other),
            };
            writeln!(
                f,
                "   {} {host}:{}  reply {}  bound {}{}",
                opt(&s.command),
                opt(&s.dst_port),
                opt(&s.reply_code),
                opt(&s.bound),
                s.bind_peer
                    .as_ref()
                    .map(|p| format!("  bind peer {p}"))
                    .unwrap_or_default()
            )?;
            write!(f, "   payload up {} B, down {} B", s.bytes_up, s.bytes_down)?;
            if s.udp_relay.is_some() || s.udp_datagrams_up + s.udp_datagrams_down > 0 {
                write!(
                    f,
                    "  udp relay {} datagrams up {} down {}",
                    opt(&s.udp_relay),
                    s.udp_datagrams_up,
                    s.udp_datagrams_down
                )?;
            }
            if let Some(t) = s.tunnelled {
                write!(f, "  tunnelled {t}")?;
                if let Some(sni) = &s.sni {
                    write!(f, " (sni {sni})")?;
                }
            }
            writeln!(f)?;
            if let Some(g) = &s.gssapi {
                writeln!(f, "   {}", gssapi_line(g))?;
            }
            for a in &s.anomalies {
                writeln!(f, "   ! {a}")?;
            }
            for m in &s.messages {
                writeln!(f, "     {:8} {}", m.dir.arrow(), m.summary())?;
            }
        }
        Ok(())
    }
}

/// The text rendering's GSS-API line.
fn gssapi_line(g: &Gssapi) -> String {
    let mut line = format!("gssapi {}", opt(&g.mechanism));
    if let Some(p) = &g.service_principal {
        let _ = write!(line, " service {p}");
    }
    let tokens: Vec<String> = g
        .tokens
        .iter()
        .map(|t| format!("{} {} {}", t.dir.arrow(), t.kind, t.len))
        .collect();
    let _ = write!(line, "  tokens [{}]", tokens.join(", "));
    if let Some(p) = &g.protection {
        let _ = write!(
            line,
            "  protection {} requested {} granted {}",
            p.form,
            opt(&p.requested),
            opt(&p.granted)
        );
    }
    let (up, down) = (&g.encapsulated_up, &g.encapsulated_down);
    if up.messages + down.messages > 0 {
        let _ = write!(
            line,
            "  encapsulated up {} msgs {} B, down {} msgs {} B",
            up.messages, up.bytes, down.messages, down.bytes
        );
    }
    line
}

#[cfg(test)]
mod address_tests {
    use core::net::{IpAddr, SocketAddr};

    #[test]
    fn address_text_is_display() {
        for text in [
            "0.0.0.0:0",
            "127.0.0.1:1080",
            "255.255.255.255:65535",
            "10.20.3.100:9",
            "[::1]:1080",
            "[fe80::1%2]:22",
            "[::ffff:1.2.3.4]:443",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(super::address_text(addr), addr.to_string());
            assert_eq!(super::ip_text(addr.ip()), addr.ip().to_string());
        }
        for n in [0u32, 9, 10, 99, 100, 65535, u32::MAX] {
            let mut s = String::new();
            super::push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        assert_eq!(super::ip_text(IpAddr::from([1, 0, 10, 200])), "1.0.10.200");
    }
}
