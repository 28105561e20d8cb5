//! SOCKS messages in report terms. The messages themselves, their order and their positions
//! come from the core's observer (`socksgate_core::observe`, driven by [`crate::session`]);
//! this module names them ([`kind`]), and describes one — a summary and [`Field`]s, each at
//! the byte range the wire type's span accessors give — only when it is shown ([`describe`],
//! from the bytes kept in the report).

use core::net::SocketAddr;
use core::ops::Range;

use socksgate_core::addr::Addr;
use socksgate_core::observe::Message;
use socksgate_core::wire::gssapi::{GssapiMessage, GssapiMessageType};
use socksgate_core::wire::method::{MethodReply, MethodRequest};
use socksgate_core::wire::socks4::{Socks4Dst, Socks4Reply, Socks4Request};
use socksgate_core::wire::socks5::{Reply, Request};
use socksgate_core::wire::udp::UdpHeader;
use socksgate_core::wire::userpass::{UserPassReply, UserPassRequest};
use socksgate_core::wire::{AddrSpans, AddrType, Command, Method, ParseResult, Status, WireError};

use crate::kerberos;
use crate::report::Field;

fn field(name: &'static str, value: impl Into<String>, at: Range<usize>) -> Field {
    Field {
        name,
        value: value.into(),
        offset: at.start,
        len: at.len(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's report name: the core's spelling (`"connect"`, …, `"unknown:0xNN"`).
pub(crate) fn command_name(code: u8) -> String {
    let command = Command::from(code);
    // Known names copied as they are (once per session), without the formatting machinery.
    match command.name() {
        Some(name) => name.to_owned(),
        None => command.to_string(),
    }
}

/// `"N (name)"` for a method code.
fn method_text(m: u8) -> String {
    format!("{m} ({})", Method::from(m).describe())
}

/// The report's machine name of a message (the `kind` of [`crate::report::Message`]).
pub(crate) fn kind(m: &Message<'_>) -> &'static str {
    match m {
        Message::Greeting(_) => "method_request",
        Message::MethodSelection(_) => "method_reply",
        Message::UserPass(_) => "userpass_request",
        Message::UserPassStatus(_) => "userpass_reply",
        // A token longer than the observer's buffer is reported by position only; the
        // message's bytes are in the retained stream and described from there like any other.
        Message::Gssapi(_) | Message::GssapiLong { .. } => "gssapi",
        Message::Socks4Request(_) => "socks4_request",
        Message::Socks4Reply(_) => "socks4_reply",
        Message::Request(_) => "request",
        Message::Reply(_) => "reply",
        _ => "unknown",
    }
}

/// Parses kept bytes as the message `kind` names (the inverse of [`kind`]).
fn parse_kept<'a>(kind: &str, b: &'a [u8]) -> Option<Message<'a>> {
    fn whole<'a, T>(r: ParseResult<T>, f: impl FnOnce(T) -> Message<'a>) -> Option<Message<'a>> {
        match r {
            Ok(Status::Complete((m, _))) => Some(f(m)),
            _ => None,
        }
    }
    match kind {
        "method_request" => whole(MethodRequest::parse(b), Message::Greeting),
        "method_reply" => whole(MethodReply::parse(b), Message::MethodSelection),
        "userpass_request" => whole(UserPassRequest::parse(b), Message::UserPass),
        "userpass_reply" => whole(UserPassReply::parse(b), Message::UserPassStatus),
        "gssapi" => whole(GssapiMessage::parse(b), Message::Gssapi),
        "socks4_request" => whole(Socks4Request::parse(b), Message::Socks4Request),
        "socks4_reply" => whole(Socks4Reply::parse(b), Message::Socks4Reply),
        "request" => whole(Request::parse(b), Message::Request),
        "reply" => whole(Reply::parse(b), Message::Reply),
        _ => None,
    }
}

/// SOCKS5 address fields (RFC 1928 §5) at the positions `spans` gives.
fn addr_fields(names: [&'static str; 2], addr: &Addr<'_>, spans: AddrSpans) -> [Field; 3] {
    let t = AddrType::of(addr);
    let host = match addr {
        Addr::Ip(sa) => sa.ip().to_string(),
        Addr::Domain(name, _) => name.to_string(),
    };
    [
        field("ATYP", format!("{} ({t})", u8::from(t)), spans.atyp),
        field(names[0], host, spans.addr),
        field(names[1], addr.port().to_string(), spans.port),
    ]
}

fn ver(v: u8) -> Field {
    field("VER", v.to_string(), 0..1)
}

/// Summary and fields of one message; `masked` = the password bytes were replaced.
fn describe_message(m: &Message<'_>, masked: bool) -> Option<(String, Vec<Field>)> {
    Some(match m {
        Message::Greeting(g) => {
            let list: Vec<String> = g.raw_methods().iter().map(|&x| method_text(x)).collect();
            let span = g.methods_span();
            (
                format!("SOCKS5 greeting, methods {}", list.join(", ")),
                vec![
                    ver(5),
                    field("NMETHODS", span.len().to_string(), 1..span.start),
                    field("METHODS", list.join(", "), span),
                ],
            )
        }
        Message::MethodSelection(r) => {
            let method = method_text(u8::from(r.method));
            (
                format!("method selected: {method}"),
                vec![ver(5), field("METHOD", method, 1..2)],
            )
        }
        Message::UserPass(u) => {
            let (user, pass) = (u.username_span(), u.password_span());
            let shown = if masked {
                "********".to_owned()
            } else {
                text(u.password())
            };
            (
                format!("username/password: user \"{}\"", text(u.username())),
                vec![
                    ver(1),
                    field("ULEN", user.len().to_string(), 1..user.start),
                    field("UNAME", text(u.username()), user.clone()),
                    field("PLEN", pass.len().to_string(), user.end..pass.start),
                    field("PASSWD", shown, pass),
                ],
            )
        }
        Message::UserPassStatus(s) => {
            let verdict = if s.is_success() { "success" } else { "failure" };
            (
                format!("authentication {verdict} (status {})", s.status),
                vec![
                    ver(1),
                    field("STATUS", format!("{} ({verdict})", s.status), 1..2),
                ],
            )
        }
        Message::Gssapi(g) => {
            let what = g.kind.describe();
            let mut fields = vec![
                ver(1),
                field("MTYP", format!("{:#04x} ({what})", u8::from(g.kind)), 1..2),
            ];
            let mut summary = format!("GSS-API {what} message, {}-byte token", g.token.len());
            if let Some(token) = g.token_span() {
                fields.push(field("LEN", token.len().to_string(), 2..token.start));
                fields.push(field(
                    "TOKEN",
                    format!("{} bytes", token.len()),
                    token.clone(),
                ));
                summary.push_str(&describe_token(g, token.start, &mut fields));
            }
            (summary, fields)
        }
        Message::Socks4Request(r) => {
            let command = u8::from(r.command);
            let name = command_name(command);
            let mut fields = vec![
                field("VN", "4", 0..1),
                field("CD", format!("{command} ({name})"), 1..2),
                field("DSTPORT", r.port.to_string(), 2..4),
            ];
            let host = match r.dst {
                Socks4Dst::Ip(ip) => {
                    fields.push(field("DSTIP", ip.to_string(), 4..8));
                    fields.push(field("USERID", text(r.user_id), r.user_id_span()));
                    ip.to_string()
                }
                Socks4Dst::Domain(name) => {
                    fields.push(field("DSTIP", "0.0.0.x (SOCKS4a: name follows)", 4..8));
                    fields.push(field("USERID", text(r.user_id), r.user_id_span()));
                    let at = r.hostname_span().unwrap_or_default();
                    fields.push(field("HOSTNAME", name.to_string(), at));
                    name.to_string()
                }
            };
            (
                format!(
                    "SOCKS4{} {name} {host}:{}",
                    if r.is_4a() { "a" } else { "" },
                    r.port
                ),
                fields,
            )
        }
        Message::Socks4Reply(r) => {
            let code = u8::from(r.code);
            let meaning = r.code.describe();
            (
                format!("SOCKS4 reply {code} ({meaning}), {}", r.addr),
                vec![
                    field("VN", "reply version (0)", 0..1),
                    field("CD", format!("{code} ({meaning})"), 1..2),
                    field("DSTPORT", r.addr.port().to_string(), 2..4),
                    field("DSTIP", r.addr.ip().to_string(), 4..8),
                ],
            )
        }
        Message::Request(r) => {
            let command = u8::from(r.command);
            let mut fields = vec![
                ver(5),
                field(
                    "CMD",
                    format!("{command} ({})", command_name(command)),
                    1..2,
                ),
                field("RSV", "0", 2..3),
            ];
            fields.extend(addr_fields(["DST.ADDR", "DST.PORT"], &r.dst, r.dst_spans()));
            (format!("{} {}", command_name(command), r.dst), fields)
        }
        Message::Reply(r) => {
            let code = u8::from(r.code);
            let meaning = r.code.describe();
            let mut fields = vec![
                ver(5),
                field("REP", format!("{code} ({meaning})"), 1..2),
                field("RSV", "0", 2..3),
            ];
            fields.extend(addr_fields(
                ["BND.ADDR", "BND.PORT"],
                &r.bound,
                r.bound_spans(),
            ));
            (
                format!("reply {code} ({meaning}), bound {}", r.bound),
                fields,
            )
        }
        _ => return None,
    })
}

/// What a GSS-API token shows in clear, as fields (offsets in the message: the token starts
/// at `at`) and a summary suffix: the initial context token's mechanism and Kerberos
/// service, or the protection level of an unwrapped (NEC) protection-level message.
fn describe_token(g: &GssapiMessage<'_>, at: usize, fields: &mut Vec<Field>) -> String {
    let shift = |r: Range<usize>| r.start + at..r.end + at;
    match (g.kind, g.token) {
        (GssapiMessageType::Protection, &[level]) => {
            let name = crate::session::level_name(level);
            fields.push(field("LEVEL", format!("{level} ({name})"), at..at + 1));
            format!(": level {level} ({name}), unwrapped (NEC form)")
        }
        (GssapiMessageType::Protection, _) => ": level wrapped (RFC 1961 form)".to_owned(),
        (GssapiMessageType::Context, token) => {
            let Some(t) = kerberos::initial_context_token(token) else {
                return String::new();
            };
            let mech = kerberos::mech_name(&t.mech);
            fields.push(field(
                "MECH",
                format!("{} ({mech})", t.mech),
                shift(t.mech_at.clone()),
            ));
            match t.ap_req {
                Some(req) => {
                    let principal = req.principal();
                    fields.push(field("TOK_ID", "01 00 (AP-REQ)", shift(req.tok_id_at)));
                    fields.push(field(
                        "AP-REQ",
                        format!("ticket for {principal}"),
                        shift(req.at),
                    ));
                    format!(": Kerberos AP-REQ for {principal}")
                }
                None => match t.tok_id {
                    Some(id) => {
                        let name = kerberos::tok_id_name(id);
                        let end = t.mech_at.end;
                        fields.push(field(
                            "TOK_ID",
                            format!("{:02x} {:02x} ({name})", id[0], id[1]),
                            shift(end..end + 2),
                        ));
                        format!(": Kerberos {name}")
                    }
                    None => format!(": {mech} token"),
                },
            }
        }
        _ => String::new(),
    }
}

/// A decoded UDP ASSOCIATE datagram header.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) header_len: usize,
    pub(crate) frag: u8,
    pub(crate) target: String,
    pub(crate) fields: Vec<Field>,
}

/// The length and destination of a datagram's RFC 1928 §7 header: what the engine needs
/// for every datagram matched, without [`udp_header`]'s fields.
pub(crate) fn udp_destination(datagram: &[u8]) -> Result<(usize, Addr<'_>), WireError> {
    let (h, payload) = UdpHeader::parse(datagram)?;
    Ok((datagram.len() - payload.len(), h.dst))
}

/// RFC 1928 §7 UDP request header.
pub(crate) fn udp_header(datagram: &[u8]) -> Result<Datagram, WireError> {
    let (h, payload) = UdpHeader::parse(datagram)?;
    let header_len = datagram.len() - payload.len();
    let mut fields = vec![
        field("RSV", "0", 0..2),
        field("FRAG", h.frag.to_string(), 2..3),
    ];
    fields.extend(addr_fields(["DST.ADDR", "DST.PORT"], &h.dst, h.dst_spans()));
    fields.push(field(
        "DATA",
        format!("{} bytes", payload.len()),
        header_len..datagram.len(),
    ));
    Ok(Datagram {
        header_len,
        frag: h.frag,
        target: h.dst.to_string(),
        fields,
    })
}

/// Summary and fields of a kept message, from its kept bytes (see
/// [`crate::report::Message`]).
pub(crate) fn describe(m: &crate::report::Message) -> (String, Vec<Field>) {
    let b = m.bytes.as_slice();
    if m.kind == "udp_header" {
        return match udp_header(b) {
            Ok(mut d) => {
                let payload = m.len.saturating_sub(d.header_len);
                if let Some(data) = d.fields.last_mut() {
                    data.value = format!("{payload} bytes");
                }
                let to = if m.dir == crate::report::Dir::UdpUp {
                    "to"
                } else {
                    "from"
                };
                let frag = if d.frag == 0 {
                    String::new()
                } else {
                    format!(", fragment {}", d.frag)
                };
                (
                    format!("UDP {to} {} ({payload} payload bytes{frag})", d.target),
                    d.fields,
                )
            }
            Err(e) => (format!("malformed UDP header: {e}"), Vec::new()),
        };
    }
    // Masked passwords were overwritten with `*` when the message was kept.
    parse_kept(m.kind, b)
        .and_then(|msg| describe_message(&msg, m.secret.is_some()))
        .unwrap_or_else(|| (m.kind.to_owned(), Vec::new()))
}

/// The bound address of a reply, when it is an IP address.
pub(crate) fn bound_ip(addr: &Addr<'_>) -> Option<SocketAddr> {
    match addr {
        Addr::Ip(sa) => Some(*sa),
        Addr::Domain(..) => None,
    }
}

/// A destination's host as text (an IP address without the port, or the name).
pub(crate) fn host_of(addr: &Addr<'_>) -> String {
    match addr {
        Addr::Ip(sa) => crate::report::ip_text(sa.ip()),
        Addr::Domain(name, _) => name.to_string(),
    }
}

/// An address as `Addr`'s `Display` writes it (`ip:port` or `name:port`), IPv4 without the
/// formatting machinery.
pub(crate) fn addr_text(addr: &Addr<'_>) -> String {
    match addr {
        Addr::Ip(sa) => crate::report::address_text(*sa),
        Addr::Domain(..) => addr.to_string(),
    }
}
