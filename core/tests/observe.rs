//! `observe::Conversation`: the events do not depend on how the two streams are chunked or
//! interleaved (payload spans aside, which are compared as covered ranges), and any input is
//! handled without panicking.

use proptest::prelude::*;
use socksgate_core::observe::{Conversation, Direction, Event};

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

proptest! {
    #[test]
    fn chunking_and_interleaving_do_not_change_events(
        pick in 0usize..12,
        sizes in prop::collection::vec(1usize..16, 1..8),
        order in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let (up, down) = &scripts()[pick];
        let whole = run(up, down, &[usize::MAX], &[false]);
        prop_assert_eq!(&run(up, down, &sizes, &order), &whole);
        prop_assert_eq!(&run(up, down, &[1], &[true]), &whole);
    }

    #[test]
    fn damaged_handshakes_are_chunking_invariant(
        pick in 0usize..12,
        cut in (0usize..80, 0usize..80),
        at in (0usize..80, 0usize..80),
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
        let (a, b) = (
            conv.feed(Direction::ClientToServer, &up),
            conv.feed(Direction::ServerToClient, &down),
        );
        assert_eq!((a, b), (up.len(), down.len()));
        while let Some(e) = conv.poll() {
            let (dir, span) = match e {
                Event::Message(m) => (m.dir, m.span),
                Event::Payload { dir, span } => (dir, span),
                _ => continue,
            };
            assert_eq!(span.offset, covered[dir as usize], "{e:?}");
            covered[dir as usize] += span.len as u64;
        }
        assert_eq!(covered, [up.len() as u64, down.len() as u64]);
    }
}
