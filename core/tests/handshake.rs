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
