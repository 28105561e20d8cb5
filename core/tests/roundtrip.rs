//! Property tests: every message emits and parses back to itself, consuming exactly its
//! encoded length, and every strict prefix parses as `Partial`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use proptest::prelude::*;
use socksgate_core::wire::gssapi::{GssapiMessage, GssapiMessageType};
use socksgate_core::wire::method::{MethodReply, MethodRequest};
use socksgate_core::wire::socks4::{Socks4Dst, Socks4Reply, Socks4Request};
use socksgate_core::wire::userpass::{UserPassReply, UserPassRequest};
use socksgate_core::wire::{Command, Emit, ReplyCode, Socks4Code, socks5};
use socksgate_core::{Addr, Domain, Status};

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 1..=255)
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        any::<(u32, u16)>().prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
        any::<(u128, u16)>()
            .prop_map(|(ip, port)| SocketAddr::from((std::net::Ipv6Addr::from(ip), port))),
    ]
}

/// Checks the whole parse/emit contract for one encoded message.
fn check<'a, M, P>(msg: &M, buf: &'a mut Vec<u8>, parse: P)
where
    M: Emit + PartialEq + std::fmt::Debug,
    P: Fn(&'a [u8]) -> Result<Status<(M, usize)>, socksgate_core::WireError>,
{
    let len = msg.buffer_len();
    buf.resize(len + 3, 0xee);
    assert_eq!(
        msg.emit(&mut buf[..len.saturating_sub(1)])
            .map(|_| ())
            .unwrap_err()
            .required,
        len
    );
    assert_eq!(msg.emit(buf), Ok(len));
    let buf: &'a [u8] = buf;
    for cut in 0..len {
        assert_eq!(
            parse(&buf[..cut]),
            Ok(Status::Partial),
            "prefix of {cut} bytes"
        );
    }
    // The message comes back equal, and the trailing bytes are left alone.
    let (parsed, consumed) = parse(buf).unwrap().complete().unwrap();
    assert_eq!((&parsed, consumed), (msg, len));
}

proptest! {
    #[test]
    fn method_request(methods in prop::collection::vec(any::<u8>(), 1..=255)) {
        let msg = MethodRequest::new(&methods).unwrap();
        let mut buf = Vec::new();
        check(&msg, &mut buf, MethodRequest::parse);
        let (parsed, _) = MethodRequest::parse(&buf).unwrap().complete().unwrap();
        prop_assert_eq!(parsed.raw_methods(), &methods[..]);
    }

    #[test]
    fn method_reply(m in any::<u8>()) {
        let msg = MethodReply { method: m.into() };
        check(&msg, &mut Vec::new(), MethodReply::parse);
        prop_assert_eq!(u8::from(msg.method), m);
    }

    #[test]
    fn userpass(user in prop::collection::vec(any::<u8>(), 1..=255),
                pass in prop::collection::vec(any::<u8>(), 1..=255), status in any::<u8>()) {
        let msg = UserPassRequest::new(&user, &pass).unwrap();
        let mut buf = Vec::new();
        check(&msg, &mut buf, UserPassRequest::parse);
        let (parsed, _) = UserPassRequest::parse(&buf).unwrap().complete().unwrap();
        prop_assert_eq!((parsed.username(), parsed.password()), (&user[..], &pass[..]));
        check(&UserPassReply { status }, &mut Vec::new(), UserPassReply::parse);
    }

    #[test]
    fn gssapi(kind in any::<u8>(), token in prop::collection::vec(any::<u8>(), 0..600)) {
        let kind = GssapiMessageType::from(kind);
        let token = if kind == GssapiMessageType::Abort { &[][..] } else { &token[..] };
        check(&GssapiMessage { kind, token }, &mut Vec::new(), GssapiMessage::parse);
    }

    #[test]
    fn socks5_request_and_reply(cmd in any::<u8>(), code in any::<u8>(), ip in socket_addr(),
                                host in name(), port in any::<u16>(), use_name in any::<bool>()) {
        let dst = if use_name { Addr::Domain(Domain::new(&host).unwrap(), port) } else { Addr::Ip(ip) };
        check(&socks5::Request { command: cmd.into(), dst }, &mut Vec::new(), socks5::Request::parse);
        check(&socks5::Reply { code: ReplyCode::from(code), bound: dst }, &mut Vec::new(), socks5::Reply::parse);
    }

    #[test]
    fn socks4_request_and_reply(cmd in any::<u8>(), port in any::<u16>(), ip in any::<u32>(),
                                host in name(), user in prop::collection::vec(1u8..=255, 0..=255),
                                use_name in any::<bool>(), code in any::<u8>()) {
        let ip = Ipv4Addr::from(ip);
        // An IP of the form 0.0.0.x (x != 0) means 4a on the wire, so plain SOCKS4 avoids it.
        let is_4a_form = ip.octets()[..3] == [0, 0, 0] && ip.octets()[3] != 0;
        let dst = if use_name || is_4a_form { Socks4Dst::Domain(Domain::new(&host).unwrap()) } else { Socks4Dst::Ip(ip) };
        let msg = Socks4Request { command: Command::from(cmd), port, dst, user_id: &user };
        check(&msg, &mut Vec::new(), Socks4Request::parse);
        let reply = Socks4Reply { code: Socks4Code::from(code), addr: SocketAddrV4::new(ip, port) };
        check(&reply, &mut Vec::new(), Socks4Reply::parse);
    }
}

/// Decodes a §5 stream in chunks of the given sizes (cycled) into whole tokens, the token
/// cut off at the end, and the error that ended it.
fn decapsulate(
    stream: &[u8],
    sizes: &[usize],
) -> (
    Vec<Vec<u8>>,
    Vec<u8>,
    Option<socksgate_core::gssapi::GssapiError>,
) {
    let mut d = socksgate_core::gssapi::Decapsulator::new();
    let (mut tokens, mut token) = (Vec::new(), Vec::new());
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (mut chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        while !chunk.is_empty() {
            match d.decode(chunk) {
                Ok((n, piece)) => {
                    chunk = &chunk[n..];
                    if let Some(p) = piece {
                        token.extend_from_slice(p.bytes);
                        if p.last {
                            tokens.push(std::mem::take(&mut token));
                        }
                    }
                }
                Err(e) => return (tokens, token, Some(e)),
            }
        }
    }
    (tokens, token, None)
}

fn encapsulated(tokens: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for t in tokens {
        stream.extend(socksgate_core::gssapi::encapsulation_header(t.len()).unwrap());
        stream.extend_from_slice(t);
    }
    stream
}

proptest! {
    #[test]
    fn gssapi_header(kind in any::<u8>(), len in any::<u16>()) {
        use socksgate_core::wire::gssapi::GssapiHeader;
        let kind = GssapiMessageType::from(kind);
        let len = if kind == GssapiMessageType::Abort { 0 } else { len };
        let header = GssapiHeader::new(kind, len.into()).unwrap();
        check(&header, &mut Vec::new(), GssapiHeader::parse);
    }

    /// Wrapped tokens of any length up to the framing's limit come back whole from a §5
    /// stream however it is cut, and a cut-off stream yields the same prefix.
    #[test]
    fn gssapi_encapsulation_any_chunking(
        tokens in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..6),
        long in prop::option::of(prop_oneof![Just(12_000usize), Just(65_535usize)]),
        sizes in prop::collection::vec(1usize..5000, 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut tokens = tokens;
        if let Some(n) = long {
            tokens.insert(tokens.len() / 2, vec![0xa5; n]);
        }
        let stream = encapsulated(&tokens);
        prop_assert_eq!(decapsulate(&stream, &sizes), (tokens.clone(), vec![], None));
        prop_assert_eq!(decapsulate(&stream, &[usize::MAX]), (tokens, vec![], None));
        let cut = if stream.is_empty() { 0 } else { cut.index(stream.len()) };
        prop_assert_eq!(decapsulate(&stream[..cut], &sizes), decapsulate(&stream[..cut], &[usize::MAX]));
    }
}

#[test]
fn gssapi_encapsulation_errors() {
    use socksgate_core::WireError;
    use socksgate_core::gssapi::GssapiError;
    let good = encapsulated(&[b"abc".to_vec()]);
    for (tail, error) in [
        (
            &[2u8, 3, 0, 0][..],
            GssapiError::Malformed(WireError::BadVersion(2)),
        ),
        (
            &[1, 1, 0, 0][..],
            GssapiError::UnexpectedMessage(GssapiMessageType::Context),
        ),
        (
            &[1, 2, 0, 1, 0][..],
            GssapiError::UnexpectedMessage(GssapiMessageType::Protection),
        ),
        (&[1, 0xff][..], GssapiError::Aborted),
    ] {
        let mut stream = good.clone();
        stream.extend_from_slice(tail);
        for sizes in [&[1usize][..], &[2, 5][..], &[usize::MAX][..]] {
            assert_eq!(
                decapsulate(&stream, sizes),
                (vec![b"abc".to_vec()], vec![], Some(error)),
                "{tail:?} {sizes:?}"
            );
        }
    }
    // Truncated: a token cut short is no error, only unfinished.
    let long = encapsulated(&[vec![7; 65_535]]);
    assert_eq!(
        decapsulate(&long[..40_000], &[1000]),
        (vec![], vec![7; 39_996], None)
    );
}
