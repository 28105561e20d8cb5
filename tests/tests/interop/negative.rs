//! Failures: the exact reply a client receives, and that the server then closes.

use core::time::Duration;

use socksgate_tests::socks::{self, Client, Command, Dst, Method, ReplyCode, Socks4Code};
use socksgate_tests::socksgate::Server;
use socksgate_tests::{free_port, origin};

use crate::{PASS, USER};

/// RFC 1928 asks servers to close within 10 s of a failure reply; allow for a loaded machine.
const CLOSE_WITHIN: Duration = Duration::from_secs(20);

/// A name no resolver can look up and none will send to a DNS server: under the reserved
/// `.invalid` TLD (RFC 2606), with a 64-octet label (longer than DNS allows, RFC 1035), so
/// glibc's resolver fails while building the query and nothing leaves the machine.
fn unresolvable_name() -> String {
    format!("{}.invalid", "x".repeat(64))
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

#[test]
fn wrong_password_gets_failure_status_and_close() {
    let server = Server::builder().user(USER, PASS).start();
    let mut c = Client::connect(server.addr());
    let status = c.login(USER, "not-the-password");
    assert_ne!(status, 0, "RFC 1929 STATUS must be a failure");
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn unknown_user_gets_failure_status_and_close() {
    let server = Server::builder().user(USER, PASS).start();
    let mut c = Client::connect(server.addr());
    assert_ne!(c.login("mallory", PASS), 0);
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn no_credentials_when_required_gets_no_acceptable_method() {
    let server = Server::builder().user(USER, PASS).start();
    let mut c = Client::connect(server.addr());
    assert_eq!(c.greet(&[Method::NoAuth]), Method::NoAcceptable);
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn socks4_rejected_when_auth_required() {
    // SOCKS4 cannot carry a password, so a server that requires one must refuse it.
    let server = Server::builder().user(USER, PASS).start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    let r = c.request4(Command::Connect, &Dst::Ip(echo.addr()), USER);
    assert_eq!(r.cd, Socks4Code::Rejected, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
    assert_eq!(echo.accepted(), 0, "the destination must not be contacted");
}

#[test]
fn correct_password_is_accepted() {
    let server = Server::builder().user(USER, PASS).start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    assert_eq!(c.login(USER, PASS), 0);
    let r = c.request5(Command::Connect, &Dst::Ip(echo.addr()));
    assert_eq!(r.rep, ReplyCode::Succeeded, "{r:?}");
    c.send(b"authenticated");
    assert_eq!(c.read_exact(13), b"authenticated");
}

#[test]
fn refused_port_socks5() {
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let r = c.request5(Command::Connect, &socks::v4(closed_port()));
    assert_eq!(r.rep, ReplyCode::ConnectionRefused, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn refused_port_socks4() {
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    let r = c.request4(Command::Connect, &socks::v4(closed_port()), "");
    assert_eq!(r.cd, Socks4Code::Rejected, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn refused_port_by_name_socks5() {
    // `localhost` resolves (from /etc/hosts) but nothing listens on the port.
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let r = c.request5(
        Command::Connect,
        &Dst::Name("localhost".into(), closed_port()),
    );
    assert_eq!(r.rep, ReplyCode::ConnectionRefused, "{r:?}");
}

#[test]
fn unresolvable_name_socks5() {
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let r = c.request5(Command::Connect, &Dst::Name(unresolvable_name(), 80));
    assert_eq!(r.rep, ReplyCode::HostUnreachable, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn unresolvable_name_socks4a() {
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    let r = c.request4(Command::Connect, &Dst::Name(unresolvable_name(), 80), "");
    assert_eq!(r.cd, Socks4Code::Rejected, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn unsupported_command_socks5() {
    let server = Server::start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    // CMD 0x04 is not defined by RFC 1928.
    let r = c.request5(Command::from(0x04), &Dst::Ip(echo.addr()));
    assert_eq!(r.rep, ReplyCode::CommandNotSupported, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn unsupported_command_socks4() {
    // SOCKS4 has CONNECT (1) and BIND (2) only; UDP ASSOCIATE's number is not a SOCKS4 command.
    let server = Server::start();
    let echo = origin::echo();
    let mut c = Client::connect(server.addr());
    let r = c.request4(Command::UdpAssociate, &Dst::Ip(echo.addr()), "");
    assert_eq!(r.cd, Socks4Code::Rejected, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn unsupported_address_type_socks5() {
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    // ATYP 0x05 does not exist; the request cannot be framed, so the server answers 0x08.
    c.send(&[5, u8::from(Command::Connect), 0, 5, 127, 0, 0, 1, 0, 80]);
    let r = c.read_reply5();
    assert_eq!(r.rep, ReplyCode::AddressTypeNotSupported, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
}

#[test]
fn empty_method_list_is_closed() {
    // NMETHODS = 0 is malformed: the server may answer X'FF' but must not pick a method,
    // and closes either way.
    let server = Server::start();
    let mut c = Client::connect(server.addr());
    c.send(&[5, 0]);
    c.stream()
        .set_read_timeout(Some(CLOSE_WITHIN))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        match std::io::Read::read(&mut c.stream(), &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                break;
            }
            Err(e) => panic!("no close within {CLOSE_WITHIN:?} after NMETHODS 0: {e}"),
        }
    }
    assert!(
        got.is_empty() || got == [5, u8::from(Method::NoAcceptable)],
        "NMETHODS 0 answered with {got:?}"
    );
}

#[test]
fn failure_replies_leave_server_usable() {
    // After a refused connect, the same server still serves new clients.
    let server = Server::start();
    let echo = origin::echo();
    for _ in 0..3 {
        let mut c = Client::connect(server.addr());
        c.greet_no_auth();
        let r = c.request5(Command::Connect, &socks::v4(closed_port()));
        assert_eq!(r.rep, ReplyCode::ConnectionRefused);
    }
    let mut c = socks::connect5(server.addr(), &Dst::Ip(echo.addr()));
    c.send(b"still up");
    assert_eq!(c.read_exact(8), b"still up");
}

/// A server whose `--config` denies 127.0.0.1:`port` (by IP, so names resolving to it too).
fn server_denying(port: u16) -> Server {
    Server::builder()
        .config(&format!(
            "[[rule]]\naction = \"deny\"\nto = [\"127.0.0.1/32\"]\nports = [\"{port}\"]\n"
        ))
        .start()
}

#[test]
fn denied_destination_socks5() {
    let denied = origin::echo();
    let allowed = origin::echo();
    let server = server_denying(denied.port());
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let r = c.request5(Command::Connect, &Dst::Ip(denied.addr()));
    assert_eq!(r.rep, ReplyCode::NotAllowed, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
    // The rule is specific: another port on the same host is allowed.
    let mut c = socks::connect5(server.addr(), &Dst::Ip(allowed.addr()));
    c.send(b"allowed");
    assert_eq!(c.read_exact(7), b"allowed");
    assert_eq!(
        denied.accepted(),
        0,
        "a denied destination must not be contacted"
    );
}

#[test]
fn denied_destination_by_name_socks5() {
    // `localhost` resolves to the denied 127.0.0.1: rules apply to the resolved address.
    let denied = origin::echo();
    let server = server_denying(denied.port());
    let mut c = Client::connect(server.addr());
    c.greet_no_auth();
    let r = c.request5(
        Command::Connect,
        &Dst::Name("localhost".into(), denied.port()),
    );
    // Where `localhost` also resolves to ::1 (Debian's /etc/hosts) the server may reach the
    // echo there; only 127.0.0.1 is denied. Either way the denied address is never contacted
    // over IPv4, and without an IPv6 entry the reply must be "not allowed".
    if r.rep == ReplyCode::Succeeded {
        assert!(
            std::fs::read_to_string("/etc/hosts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("::1") && l.contains("localhost")),
            "CONNECT to a denied destination by name succeeded: {r:?}"
        );
    } else {
        assert_eq!(r.rep, ReplyCode::NotAllowed, "{r:?}");
    }
}

#[test]
fn denied_destination_socks4() {
    let denied = origin::echo();
    let server = server_denying(denied.port());
    let mut c = Client::connect(server.addr());
    let r = c.request4(Command::Connect, &Dst::Ip(denied.addr()), "");
    assert_eq!(r.cd, Socks4Code::Rejected, "{r:?}");
    c.assert_closed(CLOSE_WITHIN);
    assert_eq!(denied.accepted(), 0);
}
