//! Scripted handshakes through the server and client state machines: exact RFC bytes for
//! every version, command and auth outcome, and the property that any chunking of the input
//! gives the same events, the same output bytes and the same leftover payload.

use std::net::SocketAddr;

use proptest::prelude::*;
use socksgate_core::client::{Client, ClientConfig, ClientError, ClientEvent, Credentials};
use socksgate_core::server::{Config, Event, Server, ServerError, Version};
use socksgate_core::wire::{Command, ReplyCode};
use socksgate_core::{Addr, Authentication, Domain, Target, WireError};

/// How the test's "caller" answers the server's events.
#[derive(Clone, Debug)]
struct Answers {
    password_ok: bool,
    outcome: Result<SocketAddr, ReplyCode>,
    bind_peer: Result<SocketAddr, ReplyCode>,
}

impl Answers {
    fn ok() -> Self {
        Self {
            password_ok: true,
            outcome: Ok(addr("10.0.0.1:4000")),
            bind_peer: Ok(addr("10.9.9.9:2222")),
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Debug, PartialEq, Eq)]
struct ServerTranscript {
    events: Vec<Event>,
    output: Vec<u8>,
    leftover: Vec<u8>,
    established: bool,
    closed: bool,
    error: Option<ServerError>,
}

/// Feeds `input` to a server in the given chunk sizes (cycled), answering events.
fn run_server(
    config: Config,
    input: &[u8],
    chunks: &[usize],
    answers: &Answers,
) -> ServerTranscript {
    let mut server = Server::new(config);
    let mut t = ServerTranscript {
        events: vec![],
        output: vec![],
        leftover: vec![],
        established: false,
        closed: false,
        error: None,
    };
    let mut pending = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied().cycle();
    let mut out = [0u8; 512];
    loop {
        if !rest.is_empty() {
            let n = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
            pending.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        loop {
            match server.feed(&pending) {
                Ok(n) => {
                    assert!(n <= pending.len());
                    pending.drain(..n);
                }
                Err(e) => {
                    t.error = Some(e);
                    t.closed = true;
                }
            }
            let mut progressed = false;
            while let Some(event) = server.poll_event() {
                progressed = true;
                match &event {
                    Event::Authenticate { .. } => server.authenticate(answers.password_ok).unwrap(),
                    Event::Request(_) => server.respond(answers.outcome).unwrap(),
                    Event::GssapiContext { .. } | Event::GssapiProtection { .. } => {
                        server.gssapi_failed().unwrap();
                    }
                    Event::GssapiPiece { .. } | Event::GssapiProtected(_) => {}
                    _ => unreachable!(),
                }
                t.events.push(event);
            }
            if server.command() == Some(Command::Bind)
                && server.respond_bind_peer(answers.bind_peer).is_ok()
            {
                progressed = true;
            }
            loop {
                let n = server.poll_transmit(&mut out);
                if n == 0 {
                    break;
                }
                t.output.extend_from_slice(&out[..n]);
            }
            if t.error.is_some() || !progressed {
                break;
            }
        }
        if t.error.is_some() || rest.is_empty() {
            break;
        }
    }
    t.established = server.is_established();
    t.closed |= server.is_closed();
    // After a failure the connection closes: unconsumed bytes are discarded, not payload.
    t.leftover = if t.error.is_some() { vec![] } else { pending };
    t
}

fn userpass() -> Config {
    Config::new(Authentication::PASSWORD)
}

/// Every scripted client conversation: (name, config, client bytes, answers).
fn server_scripts() -> Vec<(&'static str, Config, Vec<u8>, Answers)> {
    let refused = Answers {
        outcome: Err(ReplyCode::ConnectionRefused),
        ..Answers::ok()
    };
    let mut v6_connect = vec![5, 1, 0, 5, 1, 0, 4];
    v6_connect.extend_from_slice(&[0; 15]);
    v6_connect.extend_from_slice(&[1, 0, 22]);
    vec![
        (
            "socks5 connect ipv4 + payload",
            Config::default(),
            b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50GET / HTTP/1.1\r\n".to_vec(),
            Answers::ok(),
        ),
        (
            "socks5 connect ipv6",
            Config::default(),
            v6_connect,
            Answers::ok(),
        ),
        (
            "socks5 userpass ok, domain",
            userpass(),
            b"\x05\x02\x00\x02\x01\x05alice\x06s3cret\x05\x01\x00\x03\x0bexample.com\x01\xbbdata"
                .to_vec(),
            Answers::ok(),
        ),
        (
            "socks5 userpass wrong",
            userpass(),
            b"\x05\x01\x02\x01\x05alice\x05wrong\x05\x01\x00\x01\x01\x02\x03\x04\x00\x50".to_vec(),
            Answers {
                password_ok: false,
                ..Answers::ok()
            },
        ),
        (
            "socks5 bind",
            Config::default(),
            vec![5, 1, 0, 5, 2, 0, 1, 10, 9, 9, 9, 0, 0],
            Answers::ok(),
        ),
        (
            "socks5 udp associate",
            Config::default(),
            vec![5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0],
            Answers::ok(),
        ),
        (
            "socks5 refused",
            Config::default(),
            vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 9],
            refused.clone(),
        ),
        (
            "socks5 unknown command",
            Config::default(),
            vec![5, 1, 0, 5, 0x09, 0, 1, 127, 0, 0, 1, 0, 9],
            Answers {
                outcome: Err(ReplyCode::CommandNotSupported),
                ..Answers::ok()
            },
        ),
        (
            "socks5 no acceptable method",
            userpass(),
            vec![5, 1, 0, 5, 1, 0],
            Answers::ok(),
        ),
        (
            "socks5 nmethods 0",
            Config::default(),
            vec![5, 0, 5, 1, 0],
            Answers::ok(),
        ),
        (
            "socks5 bad atyp",
            Config::default(),
            vec![5, 1, 0, 5, 1, 0, 7, 1, 2],
            Answers::ok(),
        ),
        (
            "socks5 empty username",
            userpass(),
            vec![5, 1, 2, 1, 0, 1, b'x'],
            Answers::ok(),
        ),
        (
            "socks4 connect",
            Config::default(),
            b"\x04\x01\x00\x50\x7f\x00\x00\x01fred\x00payload".to_vec(),
            Answers::ok(),
        ),
        (
            "socks4a connect",
            Config::default(),
            b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00".to_vec(),
            Answers::ok(),
        ),
        (
            "socks4 bind",
            Config::default(),
            b"\x04\x02\x00\x00\x0a\x09\x09\x09\x00".to_vec(),
            Answers::ok(),
        ),
        (
            "socks4 refused",
            Config::default(),
            b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00".to_vec(),
            refused,
        ),
        (
            "socks4 disabled",
            userpass(),
            b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00".to_vec(),
            Answers::ok(),
        ),
        (
            "bad version",
            Config::default(),
            vec![0x47, 0x45, 0x54],
            Answers::ok(),
        ),
    ]
}

fn script(name: &str) -> ServerTranscript {
    let (_, config, input, answers) = server_scripts().into_iter().find(|s| s.0 == name).unwrap();
    run_server(config, &input, &[usize::MAX], &answers)
}

#[test]
fn socks5_connect_keeps_pipelined_payload() {
    let t = script("socks5 connect ipv4 + payload");
    assert_eq!(t.output, [5, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0x0f, 0xa0]);
    assert_eq!(t.leftover, b"GET / HTTP/1.1\r\n");
    assert!(t.established);
    let [Event::Request(req)] = &t.events[..] else {
        panic!("{:?}", t.events)
    };
    assert_eq!(
        (req.version, req.command),
        (Version::Socks5, Command::Connect)
    );
    assert_eq!(req.target, Target::Ip(addr("127.0.0.1:80")));
}

#[test]
fn socks5_ipv6_target() {
    let t = script("socks5 connect ipv6");
    let [Event::Request(req)] = &t.events[..] else {
        panic!()
    };
    assert_eq!(req.target, Target::Ip(addr("[::1]:22")));
}

#[test]
fn rfc1929_success_and_failure() {
    let ok = script("socks5 userpass ok, domain");
    assert_eq!(
        &ok.output[..4],
        &[5, 2, 1, 0],
        "method 2 chosen, then status success"
    );
    let Event::Authenticate { username, password } = &ok.events[0] else {
        panic!()
    };
    assert_eq!(
        (&username[..], &password[..]),
        (&b"alice"[..], &b"s3cret"[..])
    );
    let Event::Request(req) = &ok.events[1] else {
        panic!()
    };
    assert_eq!(req.target.to_string(), "example.com:443");
    assert_eq!(ok.leftover, b"data");

    let bad = script("socks5 userpass wrong");
    assert_eq!(bad.output, [5, 2, 1, 1], "failure status, then nothing");
    assert!(bad.closed && !bad.established);
    assert_eq!(
        bad.events.len(),
        1,
        "no request is processed after a failed login"
    );
    // The password never appears in debug output.
    assert!(!format!("{:?}", bad.events).contains("wrong"));
}

#[test]
fn bind_sends_two_replies() {
    let t = script("socks5 bind");
    assert_eq!(
        t.output,
        [
            5, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0x0f, 0xa0, 5, 0, 0, 1, 10, 9, 9, 9, 0x08, 0xae
        ]
    );
    assert!(t.established);
    let t4 = script("socks4 bind");
    assert_eq!(
        t4.output,
        [
            0, 90, 0x0f, 0xa0, 10, 0, 0, 1, 0, 90, 0x08, 0xae, 10, 9, 9, 9
        ]
    );
}

#[test]
fn udp_associate_is_a_request() {
    let t = script("socks5 udp associate");
    let [Event::Request(req)] = &t.events[..] else {
        panic!()
    };
    assert_eq!(req.command, Command::UdpAssociate);
    assert!(t.established);
}

#[test]
fn failures_reply_with_the_right_code() {
    let refused = script("socks5 refused");
    assert_eq!(refused.output, [5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert!(refused.closed);
    assert_eq!(script("socks5 unknown command").output[3], 7);
    assert_eq!(script("socks4 refused").output, [0, 91, 0, 0, 0, 0, 0, 0]);

    let none = script("socks5 no acceptable method");
    assert_eq!(
        (none.output, none.error),
        (vec![5, 0xff], Some(ServerError::NoAcceptableMethod))
    );
    let zero = script("socks5 nmethods 0");
    assert_eq!(
        (zero.output, zero.error),
        (vec![5, 0xff], Some(ServerError::Wire(WireError::NoMethods)))
    );
    let atyp = script("socks5 bad atyp");
    assert_eq!(atyp.output, [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
    let empty_user = script("socks5 empty username");
    assert_eq!(empty_user.output, [5, 2, 1, 1]);
    let v4off = script("socks4 disabled");
    assert_eq!(
        (v4off.output, v4off.error),
        (
            vec![0, 91, 0, 0, 0, 0, 0, 0],
            Some(ServerError::Socks4Disabled)
        )
    );
    let http = script("bad version");
    assert_eq!(
        (http.output, http.error),
        (vec![], Some(ServerError::Wire(WireError::BadVersion(0x47))))
    );
}

#[test]
fn socks4_and_4a_requests() {
    let t = script("socks4 connect");
    let [Event::Request(req)] = &t.events[..] else {
        panic!()
    };
    assert_eq!(
        (req.version, &req.user_id[..]),
        (Version::Socks4, &b"fred"[..])
    );
    assert_eq!(t.output, [0, 90, 0x0f, 0xa0, 10, 0, 0, 1]);
    assert_eq!(t.leftover, b"payload");
    let t = script("socks4a connect");
    let [Event::Request(req)] = &t.events[..] else {
        panic!()
    };
    assert_eq!(
        (req.version, req.target.to_string()),
        (Version::Socks4a, "example.com:443".into())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn server_chunking_is_invisible(chunks in prop::collection::vec(1usize..8, 1..16)) {
        for (name, config, input, answers) in server_scripts() {
            let whole = run_server(config, &input, &[usize::MAX], &answers);
            let bytewise = run_server(config, &input, &[1], &answers);
            let chunked = run_server(config, &input, &chunks, &answers);
            prop_assert_eq!(&whole, &bytewise, "{} one byte at a time", name);
            prop_assert_eq!(&whole, &chunked, "{} chunked {:?}", name, chunks);
        }
    }
}

// ---- client side ------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct ClientTranscript {
    events: Vec<ClientEvent>,
    sent: Vec<u8>,
    leftover: Vec<u8>,
    established: bool,
    error: Option<ClientError>,
}

fn run_client(config: ClientConfig<'_>, proxy_bytes: &[u8], chunks: &[usize]) -> ClientTranscript {
    let mut client = Client::new(config).unwrap();
    let mut t = ClientTranscript {
        events: vec![],
        sent: vec![],
        leftover: vec![],
        established: false,
        error: None,
    };
    let mut out = [0u8; 600];
    let mut pending = Vec::new();
    let mut rest = proxy_bytes;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        loop {
            let n = client.poll_transmit(&mut out);
            if n == 0 {
                break;
            }
            t.sent.extend_from_slice(&out[..n]);
        }
        if rest.is_empty() || t.error.is_some() {
            break;
        }
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
        pending.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match client.feed(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) => {
                    t.error = Some(e);
                    break;
                }
            }
            let Some(event) = client.poll_event() else {
                break;
            };
            t.events.push(event);
        }
    }
    t.established = client.is_established();
    t.leftover = if t.error.is_some() { vec![] } else { pending };
    t
}

const TARGET_V4: &str = "192.0.2.10:80";

fn client_scripts() -> Vec<(&'static str, ClientConfig<'static>, Vec<u8>)> {
    let v4 = Addr::Ip(addr(TARGET_V4));
    let name = Addr::Domain(Domain::new(b"example.com").unwrap(), 443);
    let creds = Some(Credentials {
        username: b"alice",
        password: b"s3cret",
    });
    let s5 = |cmd, target| ClientConfig::new(Version::Socks5, cmd, target);
    vec![
        (
            "socks5 connect",
            s5(Command::Connect, v4),
            vec![5, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0x0f, 0xa0, b'h', b'i'],
        ),
        (
            "socks5 auth ok",
            ClientConfig {
                credentials: creds,
                ..s5(Command::Connect, name)
            },
            vec![5, 2, 1, 0, 5, 0, 0, 3, 3, b'a', b'.', b'b', 0, 1],
        ),
        (
            "socks5 auth fails",
            ClientConfig {
                credentials: creds,
                ..s5(Command::Connect, name)
            },
            vec![5, 2, 1, 1],
        ),
        (
            "socks5 refused",
            s5(Command::Connect, v4),
            vec![5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        ("socks5 no method", s5(Command::Connect, v4), vec![5, 0xff]),
        (
            "socks5 bind",
            s5(Command::Bind, v4),
            vec![
                5, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0x0f, 0xa0, 5, 0, 0, 1, 192, 0, 2, 10, 0x30, 0x39,
                b'x',
            ],
        ),
        (
            "socks5 udp",
            s5(Command::UdpAssociate, Addr::Ip(addr("0.0.0.0:0"))),
            vec![5, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40],
        ),
        (
            "socks4 connect",
            ClientConfig {
                user_id: b"fred",
                ..ClientConfig::new(Version::Socks4, Command::Connect, v4)
            },
            vec![0, 90, 0, 0, 0, 0, 0, 0, b'!'],
        ),
        (
            "socks4a rejected",
            ClientConfig::new(Version::Socks4a, Command::Connect, name),
            vec![0, 91, 0, 0, 0, 0, 0, 0],
        ),
        (
            "socks4 bind",
            ClientConfig::new(Version::Socks4, Command::Bind, v4),
            vec![
                0, 90, 0x0f, 0xa0, 10, 0, 0, 1, 0, 90, 0x30, 0x39, 192, 0, 2, 10,
            ],
        ),
    ]
}

fn client_script(name: &str) -> ClientTranscript {
    let (_, config, bytes) = client_scripts().into_iter().find(|s| s.0 == name).unwrap();
    run_client(config, &bytes, &[usize::MAX])
}

#[test]
fn client_socks5_bytes() {
    let t = client_script("socks5 connect");
    assert_eq!(t.sent, [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 10, 0, 80]);
    assert_eq!(
        t.events,
        [ClientEvent::Replied {
            bound: Target::Ip(addr("10.0.0.1:4000"))
        }]
    );
    assert_eq!((t.established, &t.leftover[..]), (true, &b"hi"[..]));

    let t = client_script("socks5 auth ok");
    assert_eq!(
        t.sent,
        b"\x05\x02\x00\x02\x01\x05alice\x06s3cret\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    );
    assert!(t.established);
    assert_eq!(
        client_script("socks5 auth fails").error,
        Some(ClientError::AuthFailed)
    );
    assert_eq!(
        client_script("socks5 refused").error,
        Some(ClientError::Rejected(ReplyCode::ConnectionRefused))
    );
    assert_eq!(
        client_script("socks5 no method").error,
        Some(ClientError::NoAcceptableMethod)
    );
}

#[test]
fn client_bind_and_udp() {
    let t = client_script("socks5 bind");
    assert_eq!(
        t.events,
        [
            ClientEvent::Replied {
                bound: Target::Ip(addr("10.0.0.1:4000"))
            },
            ClientEvent::BindPeer {
                peer: Target::Ip(addr("192.0.2.10:12345"))
            },
        ]
    );
    assert_eq!((t.established, &t.leftover[..]), (true, &b"x"[..]));
    let t = client_script("socks5 udp");
    assert_eq!(t.sent[3..], [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        t.events,
        [ClientEvent::Replied {
            bound: Target::Ip(addr("127.0.0.1:40000"))
        }]
    );
}

#[test]
fn client_socks4() {
    let t = client_script("socks4 connect");
    assert_eq!(t.sent, b"\x04\x01\x00\x50\xc0\x00\x02\x0afred\x00");
    assert_eq!((t.established, &t.leftover[..]), (true, &b"!"[..]));
    let t = client_script("socks4a rejected");
    assert_eq!(
        t.sent,
        b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00"
    );
    assert_eq!(t.error, Some(ClientError::Socks4Rejected(91.into())));
    let t = client_script("socks4 bind");
    assert_eq!(t.events.len(), 2);
    assert!(t.established);
}

#[test]
fn client_refuses_what_socks4_cannot_carry() {
    let name = Addr::Domain(Domain::new(b"example.com").unwrap(), 80);
    assert_eq!(
        Client::new(ClientConfig::new(Version::Socks4, Command::Connect, name)).unwrap_err(),
        ClientError::AddressNotSupported
    );
    let v6 = Addr::Ip(addr("[::1]:80"));
    assert_eq!(
        Client::new(ClientConfig::new(Version::Socks4a, Command::Connect, v6)).unwrap_err(),
        ClientError::AddressNotSupported
    );
    let any = Addr::Ip(addr("0.0.0.0:0"));
    assert_eq!(
        Client::new(ClientConfig::new(
            Version::Socks4,
            Command::UdpAssociate,
            any
        ))
        .unwrap_err(),
        ClientError::CommandNotSupported
    );
}

/// A client and a server state machine talk to each other directly.
#[test]
fn client_and_server_agree() {
    let creds = Credentials {
        username: b"u",
        password: b"p",
    };
    let target = Addr::Domain(Domain::new(b"svc.internal").unwrap(), 8443);
    let mut client = Client::new(ClientConfig {
        credentials: Some(creds),
        ..ClientConfig::new(Version::Socks5, Command::Connect, target)
    })
    .unwrap();
    let mut server = Server::new(userpass());
    let mut buf = [0u8; 600];
    for _ in 0..10 {
        let n = client.poll_transmit(&mut buf);
        assert_eq!(server.feed(&buf[..n]), Ok(n));
        match server.poll_event() {
            Some(Event::Authenticate { username, password }) => server
                .authenticate(&username[..] == b"u" && &password[..] == b"p")
                .unwrap(),
            Some(Event::Request(req)) => {
                assert_eq!(req.target.to_string(), "svc.internal:8443");
                server.respond(Ok(addr("[2001:db8::1]:5555"))).unwrap();
            }
            _ => {}
        }
        let n = server.poll_transmit(&mut buf);
        assert_eq!(client.feed(&buf[..n]), Ok(n));
        if client.is_established() {
            break;
        }
    }
    assert!(server.is_established() && client.is_established());
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Replied {
            bound: Target::Ip(addr("[2001:db8::1]:5555"))
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn client_chunking_is_invisible(chunks in prop::collection::vec(1usize..8, 1..16)) {
        for (name, config, bytes) in client_scripts() {
            let whole = run_client(config, &bytes, &[usize::MAX]);
            prop_assert_eq!(&whole, &run_client(config, &bytes, &[1]), "{} bytewise", name);
            prop_assert_eq!(&whole, &run_client(config, &bytes, &chunks), "{} chunked", name);
        }
    }
}

// ---- GSS-API (RFC 1961): the client and the server state machines together ----------------

mod gss {
    //! A toy mechanism (`wrap(d) = 5A d sum`) and a GSS-API client and server talking over
    //! two in-memory pipes, each side decapsulating (§5) once its protection level says so.

    use socksgate_core::client::{Client, ClientError, ClientEvent};
    use socksgate_core::gssapi::{Decapsulator, encapsulation_header};
    use socksgate_core::server::{Event, Server, ServerError};
    use socksgate_core::wire::gssapi::ProtectionLevel;

    pub(crate) fn wrap(data: &[u8]) -> Vec<u8> {
        let sum = data.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        let mut v = vec![0x5a];
        v.extend_from_slice(data);
        v.push(sum);
        v
    }

    pub(crate) fn unwrap(token: &[u8]) -> Option<Vec<u8>> {
        let (&marker, rest) = token.split_first()?;
        let (&sum, data) = rest.split_last()?;
        (marker == 0x5a && data.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == sum)
            .then(|| data.to_vec())
    }

    fn encapsulate(data: &[u8]) -> Vec<u8> {
        let token = wrap(data);
        let mut v = encapsulation_header(token.len()).unwrap().to_vec();
        v.extend_from_slice(&token);
        v
    }

    /// One side's receiving end: raw bytes, or §5 messages unwrapped into plaintext.
    #[derive(Default)]
    struct Inbox {
        raw: Vec<u8>,
        decoder: Option<Decapsulator>,
        wrapped: Vec<u8>,
        plain: Vec<u8>,
    }

    impl Inbox {
        /// Moves up to `chunk` raw octets along; returns the octets the machine may read.
        fn readable(&mut self, chunk: usize) -> Vec<u8> {
            let Some(d) = self.decoder.as_mut() else {
                return self.raw[..chunk.min(self.raw.len())].to_vec();
            };
            let take = chunk.min(self.raw.len());
            let mut input: &[u8] = &self.raw[..take];
            while !input.is_empty() {
                let (n, piece) = d.decode(input).expect("well-formed §5");
                input = &input[n..];
                if let Some(p) = piece {
                    self.wrapped.extend_from_slice(p.bytes);
                    if p.last {
                        self.plain
                            .extend(unwrap(&std::mem::take(&mut self.wrapped)).expect("intact"));
                    }
                }
            }
            self.raw.drain(..take);
            self.plain.clone()
        }

        fn consumed(&mut self, n: usize) {
            match self.decoder {
                Some(_) => drop(self.plain.drain(..n)),
                None => drop(self.raw.drain(..n)),
            }
        }
    }

    /// What a conversation came to.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) struct Outcome {
        pub(crate) client: Result<Option<ProtectionLevel>, ClientError>,
        pub(crate) server: Result<Option<ProtectionLevel>, ServerError>,
        /// The tokens each side reassembled from the other's pieces.
        pub(crate) client_saw: Vec<Vec<u8>>,
        pub(crate) server_saw: Vec<Vec<u8>>,
        pub(crate) request: Option<String>,
        pub(crate) established: bool,
    }

    /// Runs `client` against `server`: the client's context tokens are `client_tokens` (its
    /// context completes after the last), the server answers each with a token of
    /// `server_len` octets and completes with the last. Each side reads `chunk` octets at a
    /// time.
    pub(crate) fn converse(
        mut client: Client,
        mut server: Server,
        client_tokens: &[Vec<u8>],
        server_len: usize,
        chunk: usize,
    ) -> Outcome {
        let (mut to_server, mut to_client) = (Inbox::default(), Inbox::default());
        let mut out = Outcome {
            client: Ok(None),
            server: Ok(None),
            client_saw: vec![],
            server_saw: vec![],
            request: None,
            established: false,
        };
        let (mut c_token, mut s_token) = (vec![], vec![]);
        let mut next_token = 0;
        let mut client_protected = false;
        let mut server_protected = false;
        let mut buf = [0u8; 600];
        // The side's queued output, wrapped once protected, onto the pipe.
        let send = |inbox: &mut Inbox, bytes: &[u8], protected: bool| {
            if protected && !bytes.is_empty() {
                inbox.raw.extend(encapsulate(bytes));
            } else {
                inbox.raw.extend_from_slice(bytes);
            }
        };
        for _ in 0..200_000 {
            let mut moved = false;
            // Client: transmit, read, answer.
            let n = client.poll_transmit(&mut buf);
            send(&mut to_server, &buf[..n], client_protected);
            moved |= n > 0;
            if out.client.is_ok() && !client.is_established() {
                let before = to_client.raw.len();
                let input = to_client.readable(chunk);
                moved |= to_client.raw.len() != before;
                match client.feed(&input) {
                    Ok(n) => {
                        to_client.consumed(n);
                        moved |= n > 0;
                        while let Some(event) = client.poll_event() {
                            moved = true;
                            let mut owed = vec![];
                            match event {
                                ClientEvent::GssapiPiece { len } => {
                                    c_token.extend_from_slice(&input[n - len..n]);
                                }
                                ClientEvent::GssapiInit | ClientEvent::GssapiContinue { .. } => {
                                    if let ClientEvent::GssapiContinue { len } = event {
                                        c_token.extend_from_slice(&input[n - len..n]);
                                        out.client_saw.push(std::mem::take(&mut c_token));
                                    }
                                    let token = &client_tokens[next_token];
                                    next_token += 1;
                                    if next_token == client_tokens.len() {
                                        client.gssapi_established(Some(token.len())).unwrap();
                                    } else {
                                        client.send_gssapi_token(token.len()).unwrap();
                                    }
                                    owed = token.clone();
                                }
                                ClientEvent::GssapiWrapProtection(level) => {
                                    owed = wrap(&[level.into()]);
                                    client.send_gssapi_protection(owed.len()).unwrap();
                                }
                                ClientEvent::GssapiUnwrapProtection { len } => {
                                    c_token.extend_from_slice(&input[n - len..n]);
                                    let t = std::mem::take(&mut c_token);
                                    out.client_saw.push(t.clone());
                                    let level = unwrap(&t).expect("intact");
                                    if let Err(e) = client.gssapi_protection(&level).unwrap() {
                                        out.client = Err(e);
                                    }
                                }
                                ClientEvent::GssapiProtected(_) => {
                                    // Taking the event queued the request: wrap from now on;
                                    // what `feed` left unread is encapsulated already.
                                    client_protected = true;
                                    to_client.decoder = Some(Decapsulator::new());
                                }
                                ClientEvent::Replied { .. } | ClientEvent::BindPeer { .. } => {}
                                other => panic!("{other:?}"),
                            }
                            let n = client.poll_transmit(&mut buf);
                            send(&mut to_server, &buf[..n], client_protected);
                            to_server.raw.extend(owed);
                        }
                    }
                    Err(e) => out.client = Err(e),
                }
            }
            // Server.
            if out.server.is_ok() && !server.is_established() && !server.is_closed() {
                let before = to_server.raw.len();
                let input = to_server.readable(chunk);
                moved |= to_server.raw.len() != before;
                let fed = server.feed(&input);
                let n = match fed {
                    Ok(n) => n,
                    Err(e) => {
                        out.server = Err(e);
                        0
                    }
                };
                to_server.consumed(n);
                moved |= n > 0;
                while let Some(event) = server.poll_event() {
                    moved = true;
                    let mut owed = vec![];
                    match event {
                        Event::GssapiPiece { len } => s_token.extend_from_slice(&input[n - len..n]),
                        Event::GssapiContext { len } => {
                            s_token.extend_from_slice(&input[n - len..n]);
                            out.server_saw.push(std::mem::take(&mut s_token));
                            owed = vec![0xb0; server_len];
                            if out.server_saw.len() < client_tokens.len() {
                                server.send_gssapi_token(owed.len()).unwrap();
                            } else {
                                server.gssapi_established(owed.len()).unwrap();
                            }
                        }
                        Event::GssapiProtection { len } => {
                            s_token.extend_from_slice(&input[n - len..n]);
                            let t = std::mem::take(&mut s_token);
                            out.server_saw.push(t.clone());
                            let level = unwrap(&t).expect("intact");
                            match server.gssapi_protection(&level).unwrap() {
                                Ok(granted) => {
                                    owed = wrap(&[granted.into()]);
                                    server.send_gssapi_protection(owed.len()).unwrap();
                                }
                                Err(e) => out.server = Err(e),
                            }
                        }
                        Event::GssapiProtected(level) => {
                            // Queued raw output (the NEC answer) goes first.
                            let n = server.poll_transmit(&mut buf);
                            send(&mut to_client, &buf[..n], false);
                            if level.encapsulates() {
                                server_protected = true;
                                to_server.decoder = Some(Decapsulator::new());
                            }
                        }
                        Event::Request(req) => {
                            out.request = Some(req.target.to_string());
                            server
                                .respond(Ok("10.0.0.1:4000".parse().unwrap()))
                                .unwrap();
                        }
                        other => panic!("{other:?}"),
                    }
                    let n = server.poll_transmit(&mut buf);
                    send(&mut to_client, &buf[..n], server_protected);
                    to_client.raw.extend(owed);
                }
                let n = server.poll_transmit(&mut buf);
                send(&mut to_client, &buf[..n], server_protected);
            }
            if client.is_established() || !moved {
                break;
            }
        }
        out.client = out.client.map(|_| client.protection());
        out.server = out.server.map(|_| server.protection());
        out.established = client.is_established() && server.is_established();
        out
    }
}

#[test]
fn gssapi_client_and_server_agree_in_both_forms() {
    use socksgate_core::client::GssapiOptions;
    use socksgate_core::policy::{GssapiPolicy, ProtectionLevels};
    use socksgate_core::wire::gssapi::ProtectionLevel::{self, Confidentiality, Integrity};
    let none = ProtectionLevel::None;
    let target = Addr::Domain(Domain::new(b"svc.internal").unwrap(), 8443);
    let long: Vec<u8> = (0..65_535u32).map(|i| (i % 253) as u8).collect();
    let kb12: Vec<u8> = (0..12_000u32).map(|i| (i % 7) as u8).collect();
    for nec in [false, true] {
        for (levels, asked, minimum, want) in [
            (
                ProtectionLevels::ALL,
                Confidentiality,
                none,
                Ok(Confidentiality),
            ),
            (ProtectionLevels::ALL, Integrity, Integrity, Ok(Integrity)),
            (
                ProtectionLevels::only(none),
                Confidentiality,
                none,
                Ok(none),
            ),
            (
                ProtectionLevels::only(Integrity),
                Confidentiality,
                Confidentiality,
                Err(()),
            ),
        ] {
            for tokens in [vec![long.clone()], vec![kb12.clone(), b"second".to_vec()]] {
                let policy = GssapiPolicy {
                    protection: levels,
                    accept_nec: nec,
                    ..GssapiPolicy::DEFAULT
                };
                let config = Config::new(Authentication::Required {
                    password: false,
                    gssapi: true,
                })
                .with_gssapi(policy);
                let options = GssapiOptions {
                    protection: asked,
                    minimum,
                    nec,
                };
                let what = format!("nec {nec} {levels:?} asked {asked} min {minimum}");
                let mut first = None;
                for chunk in [usize::MAX, 1, 1000] {
                    let client = Client::with_gssapi(
                        ClientConfig::new(Version::Socks5, Command::Connect, target),
                        options,
                    )
                    .unwrap();
                    let out = gss::converse(client, Server::new(config), &tokens, 1_500, chunk);
                    assert_eq!(out.server_saw[..tokens.len()], tokens[..], "{what}");
                    match want {
                        Ok(level) => {
                            assert!(out.established, "{what}: {out:?}");
                            assert_eq!(out.client, Ok(Some(level)), "{what}");
                            assert_eq!(out.server, Ok(Some(level)), "{what}");
                            assert_eq!(out.request.as_deref(), Some("svc.internal:8443"));
                        }
                        Err(()) => {
                            // The server grants integrity, the client wants confidentiality.
                            assert_eq!(
                                out.client,
                                Err(ClientError::Gssapi(
                                    socksgate_core::gssapi::GssapiError::ProtectionRefused(
                                        Integrity
                                    )
                                )),
                                "{what}"
                            );
                            assert!(!out.established);
                        }
                    }
                    // The same conversation however the pipes are read.
                    match &first {
                        None => first = Some(out),
                        Some(f) => assert_eq!(&out, f, "{what}: chunks of {chunk}"),
                    }
                }
            }
        }
    }
}

#[test]
fn gssapi_client_failures() {
    use socksgate_core::client::GssapiOptions;
    use socksgate_core::gssapi::GssapiError;
    use socksgate_core::wire::gssapi::{GssapiMessageType, ProtectionLevel};
    let target = Addr::Ip(addr("192.0.2.1:80"));
    let new = |nec| {
        let mut o = GssapiOptions::new(ProtectionLevel::Integrity);
        o.nec = nec;
        Client::with_gssapi(
            ClientConfig::new(Version::Socks5, Command::Connect, target),
            o,
        )
        .unwrap()
    };
    let mut out = [0u8; 64];
    // The greeting offers GSS-API only (no "no authentication").
    let mut c = new(false);
    let n = c.poll_transmit(&mut out);
    assert_eq!(&out[..n], [5, 1, 1]);
    // The server aborts after the client's token.
    assert_eq!(c.feed(&[5, 1]), Ok(2));
    assert_eq!(c.poll_event(), Some(ClientEvent::GssapiInit));
    c.send_gssapi_token(3).unwrap();
    assert_eq!(c.poll_transmit(&mut out), 4);
    assert_eq!(
        c.feed(&[1, 0xff]),
        Err(ClientError::Gssapi(GssapiError::Aborted))
    );
    // A wrong message type, a wrong version.
    for (bytes, err) in [
        (
            &[1u8, 3, 0, 0][..],
            GssapiError::UnexpectedMessage(GssapiMessageType::Encapsulated),
        ),
        (
            &[9, 1, 0, 0][..],
            GssapiError::Malformed(WireError::BadVersion(9)),
        ),
    ] {
        let mut c = new(false);
        let _ = c.poll_transmit(&mut out);
        c.feed(&[5, 1]).unwrap();
        let _ = c.poll_event();
        c.send_gssapi_token(1).unwrap();
        assert_eq!(c.feed(bytes), Err(ClientError::Gssapi(err)));
    }
    // NEC: the server grants more than asked, or an unknown level, or not one octet.
    for (answer, err) in [
        (
            &[1u8, 2, 0, 1, 2][..],
            GssapiError::ProtectionRefused(ProtectionLevel::Confidentiality),
        ),
        (&[1, 2, 0, 1, 9][..], GssapiError::UnknownProtectionLevel(9)),
        (&[1, 2, 0, 2, 1, 1][..], GssapiError::BadProtectionMessage),
        (
            &[1, 2, 0, 1, 0][..],
            GssapiError::ProtectionRefused(ProtectionLevel::None),
        ),
    ] {
        let mut c = new(true);
        let _ = c.poll_transmit(&mut out);
        c.feed(&[5, 1]).unwrap();
        let _ = c.poll_event();
        c.gssapi_established(None).unwrap();
        let n = c.poll_transmit(&mut out);
        assert_eq!(&out[..n], [1, 2, 0, 1, 1], "the NEC request, raw");
        assert_eq!(c.feed(answer), Err(ClientError::Gssapi(err)), "{answer:?}");
    }
    // Answers out of order change nothing.
    let mut c = new(false);
    assert_eq!(
        c.send_gssapi_token(1),
        Err(socksgate_core::server::UnexpectedCall)
    );
    assert_eq!(
        c.gssapi_protection(&[1]),
        Err(socksgate_core::server::UnexpectedCall)
    );
    // SOCKS4 cannot authenticate.
    assert_eq!(
        Client::with_gssapi(
            ClientConfig::new(Version::Socks4, Command::Connect, target),
            GssapiOptions::new(ProtectionLevel::None)
        )
        .unwrap_err(),
        ClientError::NoAcceptableMethod
    );
}
