//! `observe::Conversation`: the events do not depend on how the two streams are chunked or
//! interleaved (payload spans aside, which are compared as covered ranges), and any input is
//! handled without panicking.

use proptest::prelude::*;
use socksgate_core::observe::{Conversation, Direction, Event, Message, Phase, Span};
use socksgate_core::server::{MAX_GSSAPI_TOKEN, MAX_MESSAGE_LEN};
use socksgate_core::wire::gssapi::GssapiMessageType;

/// What a run saw: every non-payload event in order, and each direction's payload as
/// merged `(start, end)` ranges.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    events: Vec<String>,
    payload: [Vec<(u64, u64)>; 2],
}

/// Feeds `up` and `down` in chunks of the given sizes, the direction of each step picked by
/// `order`, polling after every feed and re-offering what was not accepted.
fn run(up: &[u8], down: &[u8], sizes: &[usize], order: &[bool]) -> Seen {
    let mut conv = Conversation::new();
    let mut rest = [up, down];
    let mut seen = Seen {
        events: Vec::new(),
        payload: [Vec::new(), Vec::new()],
    };
    let mut step = 0usize;
    loop {
        let mut progress = false;
        let first = order
            .get(step % order.len().max(1))
            .copied()
            .unwrap_or(false);
        for pass in 0..2 {
            let i = usize::from(first) ^ pass;
            let dir = [Direction::ClientToServer, Direction::ServerToClient][i];
            let size = sizes
                .get(step % sizes.len().max(1))
                .copied()
                .unwrap_or(usize::MAX);
            step += 1;
            let chunk = &rest[i][..rest[i].len().min(size.max(1))];
            let n = conv.feed(dir, chunk);
            assert!(n <= chunk.len());
            rest[i] = &rest[i][n..];
            progress |= n > 0;
            while let Some(event) = conv.poll() {
                progress = true;
                match event {
                    Event::Payload { dir, span } => {
                        let ranges = &mut seen.payload[dir as usize];
                        let (start, end) = (span.offset, span.offset + span.len as u64);
                        match ranges.last_mut() {
                            Some(last) if last.1 == start => last.1 = end,
                            _ => ranges.push((start, end)),
                        }
                    }
                    other => seen.events.push(format!("{other:?}")),
                }
            }
        }
        if !progress {
            return seen;
        }
    }
}

/// An RFC 1961 message of type `mtyp` with a `len`-byte token (bytes `fill`, `fill + 1`, …).
fn gss(mtyp: u8, len: usize, fill: u8) -> Vec<u8> {
    let mut v = vec![1, mtyp];
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
    v
}

fn greeting(methods: &[u8]) -> Vec<u8> {
    let mut v = vec![5, methods.len() as u8];
    v.extend_from_slice(methods);
    v
}

/// Handshakes in both directions, each followed by payload.
fn scripts() -> Vec<(Vec<u8>, Vec<u8>)> {
    let req = |cmd: u8| -> Vec<u8> {
        let mut v = vec![5, cmd, 0, 3, 11];
        v.extend_from_slice(b"example.com");
        v.extend_from_slice(&[1, 187]);
        v
    };
    let rep = |code: u8| vec![5, code, 0, 1, 127, 0, 0, 1, 0x30, 0x39];
    let cat = |parts: &[&[u8]]| parts.concat();
    vec![
        (
            cat(&[&greeting(&[0]), &req(1), b"GET / HTTP/1.1\r\n\r\n"]),
            cat(&[&[5, 0], &rep(0), b"HTTP/1.1 200 OK\r\n\r\n"]),
        ),
        (
            cat(&[
                &greeting(&[0, 2]),
                &[1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w'],
                &req(1),
                b"x",
            ]),
            cat(&[&[5, 2], &[1, 0], &rep(0), b"yz"]),
        ),
        (
            cat(&[&greeting(&[2]), &[1, 1, b'u', 1, b'p'], &req(1)]),
            cat(&[&[5, 2], &[1, 1]]),
        ),
        (
            cat(&[
                &greeting(&[1]),
                &[1, 1, 0, 3, 9, 9, 9],
                &[1, 1, 0, 1, 7],
                &req(1),
                b"data",
            ]),
            cat(&[&[5, 1], &[1, 1, 0, 2, 8, 8], &rep(0), b"back"]),
        ),
        (
            cat(&[&greeting(&[0]), &req(2), b"late"]),
            cat(&[&[5, 0], &rep(0), &rep(0), b"peer"]),
        ),
        (cat(&[&greeting(&[0]), &req(3)]), cat(&[&[5, 0], &rep(0)])),
        (cat(&[&greeting(&[0, 1]), &req(1)]), vec![5, 0x80]),
        (cat(&[&greeting(&[0]), &req(9)]), rep(7)),
        (
            cat(&[&[4, 1, 0, 80, 0, 0, 0, 1], b"fred\0example.org\0", b"GET"]),
            cat(&[&[0, 90, 0, 0, 0, 0, 0, 0], b"OK"]),
        ),
        (
            cat(&[&[4, 2, 0, 21, 10, 0, 0, 1, 0], b"more"]),
            cat(&[
                &[0, 90, 4, 0, 0, 0, 0, 0],
                &[0, 90, 4, 1, 10, 0, 0, 2],
                b"hi",
            ]),
        ),
        (
            vec![4, 1, 0, 80, 1, 2, 3, 4, 0],
            vec![0, 91, 0, 0, 0, 0, 0, 0],
        ),
        (vec![7, 7, 7], vec![1, 2, 3]),
        // GSS-API tokens longer than the buffer (Kerberos-sized, and the largest LEN), the
        // boundary on either side of it, a late long server token, and a long protected
        // message and an unknown type, which end the handshake or carry on.
        (
            cat(&[
                &greeting(&[1]),
                &gss(1, 2000, 0x60),
                &gss(2, 1, 1),
                &req(1),
                b"data",
            ]),
            cat(&[
                &[5, 1],
                &gss(1, 1200, 0x61),
                &gss(2, 1, 1),
                &rep(0),
                b"back",
            ]),
        ),
        (
            cat(&[
                &greeting(&[1]),
                &gss(1, MAX_GSSAPI_TOKEN, 1),
                &gss(1, MAX_GSSAPI_TOKEN + 1, 2),
                &gss(1, usize::from(u16::MAX), 3),
                &req(1),
                b"x",
            ]),
            cat(&[
                &[5, 1],
                &gss(1, MAX_GSSAPI_TOKEN + 1, 4),
                &gss(1, MAX_GSSAPI_TOKEN, 5),
                &gss(1, 3000, 6),
                &gss(1, 700, 7),
                &rep(0),
                b"y",
            ]),
        ),
        (
            cat(&[&greeting(&[1]), &gss(9, 600, 0), &gss(3, 900, 0), b"zz"]),
            cat(&[&[5, 1], &gss(9, 800, 0), b"w"]),
        ),
    ]
}

/// Cuts a stream at an arbitrary point and garbles a byte, to reach the error paths.
fn damage(mut v: Vec<u8>, cut: usize, at: usize, x: u8) -> Vec<u8> {
    if !v.is_empty() {
        let i = at % v.len();
        v[i] ^= x;
    }
    v.truncate(cut.min(v.len()));
    v
}

/// How many [`scripts`] there are.
const SCRIPTS: usize = 15;

proptest! {
    #[test]
    fn chunking_and_interleaving_do_not_change_events(
        pick in 0usize..SCRIPTS,
        sizes in prop::collection::vec(1usize..16, 1..8).prop_union(
            prop::collection::vec(1usize..3000, 1..8),
        ),
        order in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let (up, down) = &scripts()[pick];
        let whole = run(up, down, &[usize::MAX], &[false]);
        prop_assert_eq!(&run(up, down, &sizes, &order), &whole);
        prop_assert_eq!(&run(up, down, &[1], &[true]), &whole);
    }

    #[test]
    fn damaged_handshakes_are_chunking_invariant(
        pick in 0usize..SCRIPTS,
        cut in (0usize..80, 0usize..80).prop_union((0usize..70_000, 0usize..70_000)),
        at in (0usize..80, 0usize..80).prop_union((0usize..70_000, 0usize..70_000)),
        x in (any::<u8>(), any::<u8>()),
        sizes in prop::collection::vec(1usize..16, 1..8),
        order in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let (up, down) = scripts()[pick].clone();
        let up = damage(up, cut.0, at.0, x.0);
        let down = damage(down, cut.1, at.1, x.1);
        let whole = run(&up, &down, &[usize::MAX], &[false]);
        prop_assert_eq!(run(&up, &down, &sizes, &order), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_chunking_invariant(
        up in prop::collection::vec(any::<u8>(), 0..1200),
        down in prop::collection::vec(any::<u8>(), 0..1200),
        sizes in prop::collection::vec(1usize..600, 1..8),
        order in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let whole = run(&up, &down, &[usize::MAX], &[false]);
        prop_assert_eq!(run(&up, &down, &sizes, &order), whole);
    }
}

#[test]
fn messages_and_payload_cover_each_stream() {
    for (up, down) in scripts() {
        let mut conv = Conversation::new();
        let mut covered = [0u64; 2];
        let mut rest = [up.as_slice(), down.as_slice()];
        loop {
            let mut moved = false;
            for (i, dir) in [Direction::ClientToServer, Direction::ServerToClient]
                .into_iter()
                .enumerate()
            {
                let n = conv.feed(dir, rest[i]);
                rest[i] = &rest[i][n..];
                moved |= n > 0;
                while let Some(e) = conv.poll() {
                    moved = true;
                    let (dir, span) = match e {
                        Event::Message(m) => (m.dir, m.span),
                        Event::Payload { dir, span } => (dir, span),
                        _ => continue,
                    };
                    assert_eq!(span.offset, covered[dir as usize], "{e:?}");
                    covered[dir as usize] += span.len as u64;
                }
            }
            if !moved {
                break;
            }
        }
        assert_eq!(rest, [&[][..], &[][..]]);
        assert_eq!(covered, [up.len() as u64, down.len() as u64]);
    }
}

#[test]
fn scripts_count() {
    assert_eq!(scripts().len(), SCRIPTS);
}

/// Feeds both streams whole (re-offering what is not accepted) and returns every event.
fn events(up: &[u8], down: &[u8]) -> Vec<String> {
    let seen = run(up, down, &[usize::MAX], &[false]);
    let mut out = seen.events;
    out.extend(
        seen.payload
            .iter()
            .flatten()
            .map(|(a, b)| format!("payload {a}..{b}")),
    );
    out
}

/// A message's variant, with a long GSS-API message's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Long(GssapiMessageType, Span),
    Other(&'static str),
}

fn kind(m: &Message<'_>) -> Kind {
    match *m {
        Message::GssapiLong { kind, token } => Kind::Long(kind, token),
        Message::Gssapi(_) => Kind::Other("Gssapi"),
        Message::Greeting(_) => Kind::Other("Greeting"),
        Message::MethodSelection(_) => Kind::Other("MethodSelection"),
        Message::Request(_) => Kind::Other("Request"),
        Message::Reply(_) => Kind::Other("Reply"),
        _ => Kind::Other("other"),
    }
}

#[test]
fn long_gssapi_tokens_are_reported_by_span_and_skipped() {
    let (up, down) = &scripts()[12];
    let mut conv = Conversation::new();
    let mut rest = [up.as_slice(), down.as_slice()];
    let mut got = Vec::new();
    // One byte at a time, alternating.
    while !rest[0].is_empty() || !rest[1].is_empty() {
        let mut moved = false;
        for (i, dir) in [Direction::ClientToServer, Direction::ServerToClient]
            .into_iter()
            .enumerate()
        {
            let n = conv.feed(dir, &rest[i][..rest[i].len().min(1)]);
            rest[i] = &rest[i][n..];
            moved |= n > 0;
            while let Some(e) = conv.poll() {
                moved = true;
                if let Event::Message(m) = e {
                    got.push((m.dir, m.span, kind(&m.message)));
                }
            }
        }
        assert!(moved, "stuck");
    }
    // Fixed memory: two message buffers and bookkeeping, whatever the token lengths.
    assert!(size_of::<Conversation>() < 2 * MAX_MESSAGE_LEN + 256);
    let (up, down) = (Direction::ClientToServer, Direction::ServerToClient);
    let long = |offset: u64, len: usize| {
        let token = Span {
            offset: offset + 4,
            len,
        };
        let span = Span {
            offset,
            len: len + 4,
        };
        (span, Kind::Long(GssapiMessageType::Context, token))
    };
    let other = |dir, offset, len, name| (dir, Span { offset, len }, Kind::Other(name));
    let ((s1, k1), (s2, k2)) = (long(3, 2000), long(2, 1200));
    assert_eq!(
        got,
        [
            other(up, 0, 3, "Greeting"),
            other(down, 0, 2, "MethodSelection"),
            (up, s1, k1),
            (down, s2, k2),
            other(up, 2007, 5, "Gssapi"),
            other(down, 1206, 5, "Gssapi"),
            other(up, 2012, 18, "Request"),
            other(down, 1211, 10, "Reply"),
        ]
    );
    assert_eq!(conv.phase(), Phase::Established);
}

#[test]
fn gssapi_length_boundary_and_no_too_long() {
    let (up, down) = &scripts()[13];
    let ev = events(up, down);
    let text = ev.join("\n");
    assert!(!text.contains("TooLong"), "{text}");
    // 516-byte tokens fit the buffer: parsed whole; 517 and more are skipped.
    assert_eq!(text.matches("GssapiLong").count(), 5, "{text}");
    assert_eq!(text.matches("Gssapi(GssapiMessage").count(), 2, "{text}");
    assert!(text.contains("len: 65535"), "{text}");
    assert!(text.contains("Request("), "{text}");
    assert!(ev.last().unwrap().starts_with("payload"), "{text}");
    assert_eq!(MAX_GSSAPI_TOKEN + 4, MAX_MESSAGE_LEN);
}

#[test]
fn encapsulated_message_starts_the_protected_part() {
    let (up, down) = &scripts()[14];
    let text = events(up, down).join("\n");
    assert!(!text.contains("Anomaly"), "{text}");
    assert!(text.contains("kind: Unknown(9)"), "{text}");
    // The client's encapsulated message (offset 607) is not a handshake message: it and
    // everything after it, each way, is payload; the server's unknown-type token answered the
    // client's first one.
    assert!(!text.contains("offset: 607"), "{text}");
    assert!(text.contains("payload 607..1513"), "{text}");
    assert!(text.contains("payload 806..807"), "{text}");
    let mut conv = Conversation::new();
    let mut rest = [up.as_slice(), down.as_slice()];
    for _ in 0..16 {
        for (i, dir) in [Direction::ClientToServer, Direction::ServerToClient]
            .into_iter()
            .enumerate()
        {
            let n = conv.feed(dir, rest[i]);
            rest[i] = &rest[i][n..];
            while conv.poll().is_some() {}
        }
    }
    assert_eq!(conv.phase(), Phase::Encapsulated);
    assert!(conv.phase().is_over());
    assert_eq!(conv.phase().sender(), None);
}

/// The MTYP decides: a lone VER byte waits for it rather than parsing a token.
#[test]
fn encapsulation_is_decided_on_the_second_byte() {
    let mut conv = Conversation::new();
    assert_eq!(conv.feed(Direction::ClientToServer, &greeting(&[1])), 3);
    assert_eq!(conv.feed(Direction::ServerToClient, &[5, 1]), 2);
    while conv.poll().is_some() {}
    assert_eq!(conv.feed(Direction::ClientToServer, &[1]), 1);
    assert!(conv.poll().is_none());
    assert_eq!(conv.phase(), Phase::Gssapi);
    assert_eq!(conv.feed(Direction::ClientToServer, &[3, 0, 1, 0xaa]), 4);
    assert!(matches!(
        conv.poll(),
        Some(Event::Payload {
            dir: Direction::ClientToServer,
            span: Span { offset: 3, len: 5 }
        })
    ));
    assert_eq!(conv.phase(), Phase::Encapsulated);
}

#[test]
fn truncated_long_token_reports_nothing_and_keeps_its_position() {
    let up: Vec<u8> = [greeting(&[1]), gss(1, 2000, 0)].concat();
    let mut conv = Conversation::new();
    assert_eq!(conv.feed(Direction::ClientToServer, &up[..3]), 3);
    assert_eq!(conv.feed(Direction::ServerToClient, &[5, 1]), 2);
    while conv.poll().is_some() {}
    // The header and the first bytes fill the buffer; the rest of the token is skipped.
    let mut rest = &up[3..1500];
    while !rest.is_empty() {
        let n = conv.feed(Direction::ClientToServer, rest);
        assert!(n > 0);
        rest = &rest[n..];
        assert!(conv.poll().is_none());
    }
    assert_eq!(conv.phase(), Phase::Gssapi);
    assert_eq!(conv.position(Direction::ClientToServer), 3);
    assert_eq!(conv.buffered(Direction::ClientToServer), 1497);
    // The rest of the token and the next message's first byte.
    assert_eq!(conv.feed(Direction::ClientToServer, &up[1500..]), 507);
    assert_eq!(conv.feed(Direction::ClientToServer, &[1]), 1);
    assert!(matches!(
        conv.poll(),
        Some(Event::Message(m)) if m.span == Span { offset: 3, len: 2004 }
    ));
    assert!(conv.poll().is_none());
    assert_eq!(conv.phase(), Phase::GssapiReply);
    assert_eq!(conv.position(Direction::ClientToServer), 2007);
    assert_eq!(conv.buffered(Direction::ClientToServer), 1);
}
