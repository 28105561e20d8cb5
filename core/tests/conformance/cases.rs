//! The conformance table: one set of cases that every front end — the core session in
//! memory, native over loopback, the embedded gateway on its host stacks — must decide the
//! same way.
//!
//! A case says what the proxy is configured with (users, rules), what the client sends, and
//! which bytes the client must receive before the proxy closes the connection. Destinations
//! are symbolic ([`Dst`]); each front end's runner supplies a [`World`] that maps them to
//! real addresses on its network, and renders the rules for its own configuration.
//!
//! This file is shared: the native and embedded test crates include it by path. It depends
//! only on `socksgate_core` and std.
//!
//! UDP and BIND decisions need more than one connection; the core's own tables cover them
//! (`core/tests/session.rs`, `core/tests/association.rs`), and each front end has tests of
//! its own for them.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use socksgate_core::wire::method::{MethodReply, MethodRequest};
use socksgate_core::wire::socks4::{Socks4Dst, Socks4Reply, Socks4Request};
use socksgate_core::wire::socks5;
use socksgate_core::wire::userpass::{UserPassReply, UserPassRequest};
use socksgate_core::wire::{Command, Emit, Method, ReplyCode, Socks4Code};
use socksgate_core::{Addr, Domain, Status};

/// The user every runner configures when a case has users.
pub const USER: &str = "alice";
/// Her password.
pub const PASSWORD: &str = "secret";
/// A name every world resolves to its echo server's address.
pub const ECHO_NAME: &str = "echo.test";
/// A name no world resolves.
pub const MISSING_NAME: &str = "missing.test";

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dst {
    /// A listening echo server (by address).
    Echo,
    /// [`ECHO_NAME`].
    EchoName,
    /// [`MISSING_NAME`].
    Missing,
    /// An address where nothing listens: the connection is refused.
    Closed,
    /// An address that never answers: the connect times out.
    Blackhole,
}

/// A rule of a case, rendered by each front end into its own configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleSpec {
    /// Deny the network the echo server is on ([`World::echo_net`]).
    DenyEchoNet,
    /// Deny [`ECHO_NAME`] by name.
    DenyEchoName,
}

/// What the client sends.
#[derive(Clone, Copy, Debug)]
pub enum Send {
    /// A SOCKS5 greeting offering `methods`, RFC 1929 credentials when `login`, then a
    /// request (`command` as a raw CMD) to `dst`.
    Socks5 {
        methods: &'static [u8],
        login: Option<(&'static str, &'static str)>,
        command: u8,
        dst: Dst,
    },
    /// A SOCKS5 greeting alone.
    Greeting(&'static [u8]),
    /// A greeting, then a request cut short: the client then waits.
    Stalled,
    /// A greeting and a request with an address type that does not exist.
    BadAddressType,
    /// A SOCKS4 CONNECT to `dst` (an address).
    Socks4(Dst),
}

/// What the client must receive, then the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The method reply only.
    Method(Method),
    /// The method reply, RFC 1929 success when the case logs in, then a SOCKS5 failure reply.
    Reply(ReplyCode),
    /// The method reply, then nothing.
    Silence,
    /// A SOCKS4 reply.
    Socks4(Socks4Code),
}

/// One case.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// What it checks.
    pub name: &'static str,
    /// [`USER`] is configured (so authentication is required).
    pub users: bool,
    /// The rules, first match wins, default allow.
    pub rules: &'static [RuleSpec],
    /// What the client sends.
    pub send: Send,
    /// What it must receive.
    pub expect: Expect,
}

/// A front end's network, as the cases need it.
#[derive(Clone, Debug)]
pub struct World {
    /// An echo server.
    pub echo: SocketAddr,
    /// A CIDR containing `echo`'s address (and not the client's, where they differ).
    pub echo_net: &'static str,
    /// Nothing listens here.
    pub closed: SocketAddr,
    /// Nothing answers here.
    pub blackhole: SocketAddr,
}

impl World {
    fn addr(&self, dst: Dst) -> Addr<'static> {
        match dst {
            Dst::Echo => Addr::Ip(self.echo),
            Dst::Closed => Addr::Ip(self.closed),
            Dst::Blackhole => Addr::Ip(self.blackhole),
            Dst::EchoName => name(ECHO_NAME, self.echo.port()),
            Dst::Missing => name(MISSING_NAME, self.echo.port()),
        }
    }
}

fn name(n: &'static str, port: u16) -> Addr<'static> {
    Addr::Domain(Domain::new(n.as_bytes()).expect("valid name"), port)
}

fn push(out: &mut Vec<u8>, msg: &impl Emit) {
    let start = out.len();
    out.resize(start + msg.buffer_len(), 0);
    msg.emit(&mut out[start..]).expect("sized");
}

impl Case {
    /// The bytes the client sends in `world`.
    pub fn client_bytes(&self, world: &World) -> Vec<u8> {
        let mut out = Vec::new();
        match self.send {
            Send::Socks5 {
                methods,
                login,
                command,
                dst,
            } => {
                push(&mut out, &MethodRequest::new(methods).expect("methods"));
                if let Some((user, pass)) = login {
                    push(
                        &mut out,
                        &UserPassRequest::new(user.as_bytes(), pass.as_bytes()).expect("creds"),
                    );
                }
                push(
                    &mut out,
                    &socks5::Request {
                        command: Command::from(command),
                        dst: world.addr(dst),
                    },
                );
            }
            Send::Greeting(methods) => {
                push(&mut out, &MethodRequest::new(methods).expect("methods"));
            }
            Send::Stalled => {
                push(&mut out, &MethodRequest::new(&[0]).expect("methods"));
                out.extend_from_slice(&[5, 1]);
            }
            Send::BadAddressType => {
                push(&mut out, &MethodRequest::new(&[0]).expect("methods"));
                // ATYP 9 does not exist; the bytes after it are never read.
                out.extend_from_slice(&[5, 1, 0, 9, 0, 0, 0, 0, 0, 0]);
            }
            Send::Socks4(dst) => {
                let Addr::Ip(SocketAddr::V4(sa)) = world.addr(dst) else {
                    panic!("SOCKS4 cases go to IPv4 addresses");
                };
                push(
                    &mut out,
                    &Socks4Request {
                        command: Command::Connect,
                        port: sa.port(),
                        dst: Socks4Dst::Ip(*sa.ip()),
                        user_id: b"fred",
                    },
                );
            }
        }
        out
    }

    /// Checks everything the client received up to the proxy's close.
    pub fn check(&self, received: &[u8]) -> Result<(), String> {
        let mut want = Vec::new();
        match self.expect {
            Expect::Method(method) => push(&mut want, &MethodReply { method }),
            Expect::Silence => push(
                &mut want,
                &MethodReply {
                    method: Method::NoAuth,
                },
            ),
            Expect::Reply(code) => {
                let login = matches!(self.send, Send::Socks5 { login: Some(_), .. });
                let method = if login {
                    Method::UserPass
                } else {
                    Method::NoAuth
                };
                push(&mut want, &MethodReply { method });
                if login {
                    push(&mut want, &UserPassReply::SUCCESS);
                }
                // The bound address of a failure reply is not part of the decision.
                let Some(rest) = received.strip_prefix(want.as_slice()) else {
                    return Err(format!(
                        "{}: got {received:?}, want {want:?} first",
                        self.name
                    ));
                };
                return match socks5::Reply::parse(rest) {
                    Ok(Status::Complete((reply, n))) if reply.code == code && n == rest.len() => {
                        Ok(())
                    }
                    other => Err(format!(
                        "{}: want REP {} and the end, got {other:?} ({received:?})",
                        self.name,
                        u8::from(code)
                    )),
                };
            }
            Expect::Socks4(code) => {
                return match Socks4Reply::parse(received) {
                    Ok(Status::Complete((reply, n)))
                        if reply.code == code && n == received.len() =>
                    {
                        Ok(())
                    }
                    other => Err(format!(
                        "{}: want CD {}, got {other:?} ({received:?})",
                        self.name,
                        u8::from(code)
                    )),
                };
            }
        }
        if received == want.as_slice() {
            Ok(())
        } else {
            Err(format!("{}: got {received:?}, want {want:?}", self.name))
        }
    }
}

const CONNECT: u8 = 1;
const NO_AUTH: &[u8] = &[0];
const LOGIN: Option<(&str, &str)> = Some((USER, PASSWORD));

/// Every case.
pub const CASES: &[Case] = &[
    Case {
        name: "SOCKS4 with users configured: rejected",
        users: true,
        rules: &[],
        send: Send::Socks4(Dst::Echo),
        expect: Expect::Socks4(Socks4Code::Rejected),
    },
    Case {
        name: "users configured, client offers only no-auth: no acceptable method",
        users: true,
        rules: &[],
        send: Send::Greeting(&[0]),
        expect: Expect::Method(Method::NoAcceptable),
    },
    Case {
        name: "no users, client offers only username/password: no acceptable method",
        users: false,
        rules: &[],
        send: Send::Greeting(&[2]),
        expect: Expect::Method(Method::NoAcceptable),
    },
    Case {
        name: "users configured, client offers both: username/password, then the request",
        users: true,
        rules: &[RuleSpec::DenyEchoNet],
        send: Send::Socks5 {
            methods: &[0, 2],
            login: LOGIN,
            command: CONNECT,
            dst: Dst::Echo,
        },
        expect: Expect::Reply(ReplyCode::NotAllowed),
    },
    Case {
        name: "denied address: REP 2",
        users: false,
        rules: &[RuleSpec::DenyEchoNet],
        send: Send::Socks5 {
            methods: NO_AUTH,
            login: None,
            command: CONNECT,
            dst: Dst::Echo,
        },
        expect: Expect::Reply(ReplyCode::NotAllowed),
    },
    Case {
        name: "denied name that resolves to an allowed address: REP 2",
        users: false,
        rules: &[RuleSpec::DenyEchoName],
        send: Send::Socks5 {
            methods: NO_AUTH,
            login: None,
            command: CONNECT,
            dst: Dst::EchoName,
        },
        expect: Expect::Reply(ReplyCode::NotAllowed),
    },
    Case {
        name: "allowed name that resolves to a denied address: REP 2",
        users: false,
        rules: &[RuleSpec::DenyEchoNet],
        send: Send::Socks5 {
            methods: NO_AUTH,
            login: None,
            command: CONNECT,
            dst: Dst::EchoName,
        },
        expect: Expect::Reply(ReplyCode::NotAllowed),
    },
    Case {
        name: "name that does not resolve: REP 4",
        users: false,
        rules: &[],
        send: Send::Socks5 {
            methods: NO_AUTH,
            login: None,
            command: CONNECT,
            dst: Dst::Missing,
        },
        expect: Expect::Reply(ReplyCode::HostUnreachable),
    },
    Case {
        name: "connection refused: REP 5",
        users: false,
        rules: &[],
        send: Send::Socks5 {
            methods: NO_AUTH,
            login: None,
            command: CONNECT,
            dst: Dst::Closed,
        },
        expect: Expect::Reply(ReplyCode::ConnectionRefused),
    },
    Case {
        name: "connect timed out: REP 6",
        users: false,
        rules: &[],
        send: Send::Socks5 {
            methods: NO_AUTH,
            login: None,
            command: CONNECT,
            dst: Dst::Blackhole,
        },
        expect: Expect::Reply(ReplyCode::TtlExpired),
    },
    Case {
        name: "unknown command: REP 7",
        users: false,
        rules: &[],
        send: Send::Socks5 {
            methods: NO_AUTH,
            login: None,
            command: 9,
            dst: Dst::Echo,
        },
        expect: Expect::Reply(ReplyCode::CommandNotSupported),
    },
    Case {
        name: "unknown address type: REP 8",
        users: false,
        rules: &[],
        send: Send::BadAddressType,
        expect: Expect::Reply(ReplyCode::AddressTypeNotSupported),
    },
    Case {
        name: "request past the handshake deadline: closed without a reply",
        users: false,
        rules: &[],
        send: Send::Stalled,
        expect: Expect::Silence,
    },
    Case {
        name: "SOCKS4 refused connection: rejected",
        users: false,
        rules: &[],
        send: Send::Socks4(Dst::Closed),
        expect: Expect::Socks4(Socks4Code::Rejected),
    },
];
