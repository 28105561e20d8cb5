//! The only place the inspector touches SOCKS bytes: every message is parsed by
//! `socksgate-core`'s wire parsers. [`facts`] gives the decoder what a message means (cheap:
//! no text); the describing functions ([`request`], [`reply`], …, used by [`describe`]) give a
//! summary and [`Field`]s (where each part sits inside the message, for the hex view), only
//! for messages that are shown.
//!
//! Field positions are laid out from the decoded value (lengths of names, address types), never
//! by reading the bytes again.

use core::net::{SocketAddr, SocketAddrV4};

use socksgate_core::addr::Addr;
use socksgate_core::wire::gssapi::{GssapiMessage, GssapiMessageType};
use socksgate_core::wire::method::{MethodReply, MethodRequest};
use socksgate_core::wire::socks4::{Socks4Dst, Socks4Reply, Socks4Request};
use socksgate_core::wire::socks5::{Reply, Request};
use socksgate_core::wire::udp::UdpHeader;
use socksgate_core::wire::userpass::{UserPassReply, UserPassRequest};
use socksgate_core::wire::{AddrType, Command, Method, ReplyCode, Status, WireError};

use crate::report::Field;

/// Outcome of trying to parse one message at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Step {
    /// A message of `len` bytes.
    Done(Parsed),
    /// A valid prefix; wait for more bytes.
    Partial,
    /// Not this message.
    Bad,
}

/// A decoded message.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// One-line description.
    pub(crate) summary: String,
    /// Parts with their byte ranges inside the message.
    pub(crate) fields: Vec<Field>,
}

/// The facts a message contributes to the session.
#[derive(Debug)]
pub(crate) enum Info {
    Greeting {
        methods: Vec<u8>,
    },
    MethodChoice {
        method: u8,
    },
    UserPass {
        username: String,
        password: String,
    },
    AuthStatus {
        status: u8,
    },
    Gssapi {
        mtyp: u8,
    },
    Socks4Request {
        command: u8,
        host: String,
        port: u16,
        socks4a: bool,
        user_id: String,
    },
    Socks4Reply {
        code: u8,
        addr: SocketAddrV4,
    },
    Request {
        command: u8,
        host: String,
        port: u16,
    },
    Reply {
        code: u8,
        bound: String,
        bound_addr: Option<SocketAddr>,
    },
}

fn field(name: &'static str, value: impl Into<String>, offset: usize, len: usize) -> Field {
    Field {
        name,
        value: value.into(),
        offset,
        len,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn step<T>(
    r: Result<Status<(T, usize)>, WireError>,
    describe: impl FnOnce(T, usize) -> Parsed,
) -> Step {
    match r {
        Ok(Status::Complete((msg, len))) => Step::Done(describe(msg, len)),
        Ok(Status::Partial) => Step::Partial,
        Err(_) => Step::Bad,
    }
}

/// A command's report name: the core's spelling (`"connect"`, …, `"unknown:0xNN"`).
pub(crate) fn command_name(code: u8) -> String {
    Command::from(code).to_string()
}

fn method_name(m: u8) -> &'static str {
    Method::from(m).describe()
}

/// SOCKS5 address fields (ATYP at `at`), as laid out by RFC 1928 §5. Returns the fields,
/// the host text and the port.
fn addr_fields(prefix: &'static str, addr: &Addr<'_>, at: usize) -> (Vec<Field>, String, u16) {
    let names = match prefix {
        "dst" => ["ATYP", "DST.ADDR", "DST.PORT"],
        "bnd" => ["ATYP", "BND.ADDR", "BND.PORT"],
        _ => ["ATYP", "ADDR", "PORT"],
    };
    let t = AddrType::of(addr);
    let atyp = format!("{} ({t})", u8::from(t));
    let (host, host_len, port) = match addr {
        Addr::Ip(SocketAddr::V4(sa)) => (sa.ip().to_string(), 4, sa.port()),
        Addr::Ip(SocketAddr::V6(sa)) => (sa.ip().to_string(), 16, sa.port()),
        Addr::Domain(name, port) => (name.to_string(), 1 + name.as_bytes().len(), *port),
    };
    let fields = vec![
        field(names[0], atyp, at, 1),
        field(names[1], host.clone(), at + 1, host_len),
        field(names[2], port.to_string(), at + 1 + host_len, 2),
    ];
    (fields, host, port)
}

fn ver(at: usize, v: u8) -> Field {
    field("VER", v.to_string(), at, 1)
}

/// SOCKS5 greeting (RFC 1928 §3).
pub(crate) fn method_request(buf: &[u8]) -> Step {
    step(MethodRequest::parse(buf), |m, _| {
        let methods = m.raw_methods().to_vec();
        let list: Vec<String> = methods
            .iter()
            .map(|&x| format!("{x} ({})", method_name(x)))
            .collect();
        Parsed {
            summary: format!("SOCKS5 greeting, methods {}", list.join(", ")),
            fields: vec![
                ver(0, 5),
                field("NMETHODS", methods.len().to_string(), 1, 1),
                field("METHODS", list.join(", "), 2, methods.len()),
            ],
        }
    })
}

/// SOCKS5 method selection.
pub(crate) fn method_reply(buf: &[u8]) -> Step {
    step(MethodReply::parse(buf), |m, _| {
        let method = u8::from(m.method);
        Parsed {
            summary: format!("method selected: {method} ({})", method_name(method)),
            fields: vec![
                ver(0, 5),
                field(
                    "METHOD",
                    format!("{method} ({})", method_name(method)),
                    1,
                    1,
                ),
            ],
        }
    })
}

/// RFC 1929 request.
pub(crate) fn userpass_request(buf: &[u8], show_secrets: bool) -> Step {
    step(UserPassRequest::parse(buf), |m, _| {
        let user: &[u8] = m.username();
        let pass: &[u8] = m.password();
        let ulen = user.len();
        let plen = pass.len();
        let shown = if show_secrets {
            text(pass)
        } else {
            "********".into()
        };
        Parsed {
            summary: format!("username/password: user \"{}\"", text(user)),
            fields: vec![
                ver(0, 1),
                field("ULEN", ulen.to_string(), 1, 1),
                field("UNAME", text(user), 2, ulen),
                field("PLEN", plen.to_string(), 2 + ulen, 1),
                field("PASSWD", shown, 3 + ulen, plen),
            ],
        }
    })
}

/// RFC 1929 reply.
pub(crate) fn userpass_reply(buf: &[u8]) -> Step {
    step(UserPassReply::parse(buf), |m, _| {
        let status = m.status;
        let verdict = if status == 0 { "success" } else { "failure" };
        Parsed {
            summary: format!("authentication {verdict} (status {status})"),
            fields: vec![
                ver(0, 1),
                field("STATUS", format!("{status} ({verdict})"), 1, 1),
            ],
        }
    })
}

/// RFC 1961 message (either direction).
pub(crate) fn gssapi(buf: &[u8]) -> Step {
    step(GssapiMessage::parse(buf), |m, _| {
        let mtyp = u8::from(m.kind);
        let token_len = m.token.len();
        let what = m.kind.describe();
        let mut fields = vec![
            ver(0, 1),
            field("MTYP", format!("{mtyp:#04x} ({what})"), 1, 1),
        ];
        // An abort is two octets: no length, no token.
        if m.kind != GssapiMessageType::Abort {
            fields.push(field("LEN", token_len.to_string(), 2, 2));
            fields.push(field("TOKEN", format!("{token_len} bytes"), 4, token_len));
        }
        Parsed {
            summary: format!("GSS-API {what} message, {token_len}-byte token"),
            fields,
        }
    })
}

/// SOCKS4/4a request.
pub(crate) fn socks4_request(buf: &[u8]) -> Step {
    step(Socks4Request::parse(buf), |m, len| {
        let command = u8::from(m.command);
        let user: &[u8] = m.user_id;
        let ulen = user.len();
        let mut fields = vec![
            field("VN", "4", 0, 1),
            field("CD", format!("{command} ({})", command_name(command)), 1, 1),
            field("DSTPORT", m.port.to_string(), 2, 2),
        ];
        let (host, socks4a) = match m.dst {
            Socks4Dst::Ip(ip) => {
                fields.push(field("DSTIP", ip.to_string(), 4, 4));
                fields.push(field("USERID", text(user), 8, ulen));
                (ip.to_string(), false)
            }
            Socks4Dst::Domain(name) => {
                let name_at = 8 + ulen + 1;
                fields.push(field("DSTIP", "0.0.0.x (SOCKS4a: name follows)", 4, 4));
                fields.push(field("USERID", text(user), 8, ulen));
                fields.push(field(
                    "HOSTNAME",
                    name.to_string(),
                    name_at,
                    len.saturating_sub(name_at + 1),
                ));
                (name.to_string(), true)
            }
        };
        Parsed {
            summary: format!(
                "SOCKS4{} {} {host}:{}",
                if socks4a { "a" } else { "" },
                command_name(command),
                m.port
            ),
            fields,
        }
    })
}

/// SOCKS4 reply (also BIND's second reply).
pub(crate) fn socks4_reply(buf: &[u8]) -> Step {
    step(Socks4Reply::parse(buf), |m, _| {
        let code = u8::from(m.code);
        let meaning = m.code.describe();
        Parsed {
            summary: format!("SOCKS4 reply {code} ({meaning}), {}", m.addr),
            fields: vec![
                field("VN", "reply version (0)", 0, 1),
                field("CD", format!("{code} ({meaning})"), 1, 1),
                field("DSTPORT", m.addr.port().to_string(), 2, 2),
                field("DSTIP", m.addr.ip().to_string(), 4, 4),
            ],
        }
    })
}

/// SOCKS5 request.
pub(crate) fn request(buf: &[u8]) -> Step {
    step(Request::parse(buf), |m, _| {
        let command = u8::from(m.command);
        let (afields, _, _) = addr_fields("dst", &m.dst, 3);
        let mut fields = vec![
            ver(0, 5),
            field(
                "CMD",
                format!("{command} ({})", command_name(command)),
                1,
                1,
            ),
            field("RSV", "0", 2, 1),
        ];
        fields.extend(afields);
        Parsed {
            summary: format!("{} {}", command_name(command), m.dst),
            fields,
        }
    })
}

fn reply_meaning(code: u8) -> &'static str {
    ReplyCode::from(code).describe()
}

/// SOCKS5 reply (also BIND's second reply).
pub(crate) fn reply(buf: &[u8]) -> Step {
    step(Reply::parse(buf), |m, _| {
        let code = u8::from(m.code);
        let (afields, _, _) = addr_fields("bnd", &m.bound, 3);
        let mut fields = vec![
            ver(0, 5),
            field("REP", format!("{code} ({})", reply_meaning(code)), 1, 1),
            field("RSV", "0", 2, 1),
        ];
        fields.extend(afields);
        Parsed {
            summary: format!("reply {code} ({}), bound {}", reply_meaning(code), m.bound),
            fields,
        }
    })
}

/// A decoded UDP ASSOCIATE datagram header.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) header_len: usize,
    pub(crate) frag: u8,
    pub(crate) target: String,
    pub(crate) fields: Vec<Field>,
}

/// RFC 1928 §7 UDP request header.
pub(crate) fn udp_header(datagram: &[u8]) -> Result<Datagram, WireError> {
    let (h, payload) = UdpHeader::parse(datagram)?;
    let header_len = datagram.len() - payload.len();
    let (afields, _, _) = addr_fields("dst", &h.dst, 3);
    let mut fields = vec![
        field("RSV", "0", 0, 2),
        field("FRAG", h.frag.to_string(), 2, 1),
    ];
    fields.extend(afields);
    fields.push(field(
        "DATA",
        format!("{} bytes", payload.len()),
        header_len,
        payload.len(),
    ));
    Ok(Datagram {
        header_len,
        frag: h.frag,
        target: h.dst.to_string(),
        fields,
    })
}

/// Summary and fields of a kept message, by parsing its bytes again (see
/// [`crate::report::Message`]).
pub(crate) fn describe(m: &crate::report::Message) -> (String, Vec<Field>) {
    let b = m.bytes.as_slice();
    let step = match m.kind {
        "method_request" => method_request(b),
        "method_reply" => method_reply(b),
        // Masked passwords were overwritten with `*` when the message was kept.
        "userpass_request" => userpass_request(b, true),
        "userpass_reply" => userpass_reply(b),
        "gssapi" => gssapi(b),
        "socks4_request" => socks4_request(b),
        "socks4_reply" => socks4_reply(b),
        "request" => request(b),
        "reply" => reply(b),
        "udp_header" => {
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
        other => return (other.to_owned(), Vec::new()),
    };
    match step {
        Step::Done(mut p) => {
            if m.secret.is_some() {
                // Show the mask, not a run of `*` as if it were the password.
                if let Some(f) = p.fields.iter_mut().find(|f| f.name == "PASSWD") {
                    f.value = "********".into();
                }
            }
            (p.summary, p.fields)
        }
        Step::Partial | Step::Bad => (m.kind.to_owned(), Vec::new()),
    }
}

/// What the decoder needs from one message (facts, length, secret range), without the
/// descriptions: those are derived later, only for messages that are shown.
#[derive(Debug)]
pub(crate) enum Fast {
    /// A message of `len` bytes.
    Done {
        info: Info,
        len: usize,
        secret: Option<(usize, usize)>,
    },
    /// A valid prefix.
    Partial,
    /// Not this message.
    Bad(WireError),
}

fn fast<T>(
    r: Result<Status<(T, usize)>, WireError>,
    f: impl FnOnce(T) -> (Info, Option<(usize, usize)>),
) -> Fast {
    match r {
        Ok(Status::Complete((msg, len))) => {
            let (info, secret) = f(msg);
            Fast::Done { info, len, secret }
        }
        Ok(Status::Partial) => Fast::Partial,
        Err(e) => Fast::Bad(e),
    }
}

fn host_of(addr: &Addr<'_>) -> String {
    match addr {
        Addr::Ip(sa) => sa.ip().to_string(),
        Addr::Domain(name, _) => name.to_string(),
    }
}

/// Parses the message `kind` (a [`Parsed::kind`] name) at the start of `buf`.
pub(crate) fn facts(kind: &str, buf: &[u8], show_secrets: bool) -> Fast {
    match kind {
        "method_request" => fast(MethodRequest::parse(buf), |m| {
            (
                Info::Greeting {
                    methods: m.raw_methods().to_vec(),
                },
                None,
            )
        }),
        "method_reply" => fast(MethodReply::parse(buf), |m| {
            (
                Info::MethodChoice {
                    method: u8::from(m.method),
                },
                None,
            )
        }),
        "userpass_request" => fast(UserPassRequest::parse(buf), |m| {
            let (user, pass) = (m.username(), m.password());
            (
                Info::UserPass {
                    username: text(user),
                    password: if show_secrets {
                        text(pass)
                    } else {
                        String::new()
                    },
                },
                (!show_secrets).then_some((3 + user.len(), pass.len())),
            )
        }),
        "userpass_reply" => fast(UserPassReply::parse(buf), |m| {
            (Info::AuthStatus { status: m.status }, None)
        }),
        "gssapi" => fast(GssapiMessage::parse(buf), |m| {
            (
                Info::Gssapi {
                    mtyp: u8::from(m.kind),
                },
                None,
            )
        }),
        "socks4_request" => fast(Socks4Request::parse(buf), |m| {
            let (host, socks4a) = match m.dst {
                Socks4Dst::Ip(ip) => (ip.to_string(), false),
                Socks4Dst::Domain(name) => (name.to_string(), true),
            };
            (
                Info::Socks4Request {
                    command: u8::from(m.command),
                    host,
                    port: m.port,
                    socks4a,
                    user_id: text(m.user_id),
                },
                None,
            )
        }),
        "socks4_reply" => fast(Socks4Reply::parse(buf), |m| {
            (
                Info::Socks4Reply {
                    code: u8::from(m.code),
                    addr: m.addr,
                },
                None,
            )
        }),
        "request" => fast(Request::parse(buf), |m| {
            (
                Info::Request {
                    command: u8::from(m.command),
                    host: host_of(&m.dst),
                    port: m.dst.port(),
                },
                None,
            )
        }),
        "reply" => fast(Reply::parse(buf), |m| {
            let bound_addr = match m.bound {
                Addr::Ip(sa) => Some(sa),
                Addr::Domain(..) => None,
            };
            (
                Info::Reply {
                    code: u8::from(m.code),
                    bound: m.bound.to_string(),
                    bound_addr,
                },
                None,
            )
        }),
        _ => Fast::Bad(WireError::Truncated),
    }
}
