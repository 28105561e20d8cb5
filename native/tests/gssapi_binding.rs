//! `socksgate::gssapi` against a real MIT KDC: contexts between our acceptor and initiator,
//! wrap/unwrap with and without confidentiality (also in place), the §5 stream
//! (`socksgate::protected`) over them, and every failure's [`Cause`].
//!
//! One test function on purpose: the library reads `KRB5_CONFIG` and `KRB5CCNAME` from the
//! process environment, which is set here once, before any other thread exists: the one
//! `unsafe` this file needs (`std::env::set_var`).
#![allow(unsafe_code)]

use std::path::Path;

use socksgate::gssapi::{Acceptor, Cause, Context, Initiator, ServiceName, Step};
use socksgate::protected::{MAX_PLAIN_PER_MESSAGE, ProtectedStream, Protection};
use socksgate_core::gssapi::ProtectionLevel;
use socksgate_tests::kerberos::Kdc;

/// Runs the whole exchange between `initiator` and `acceptor` in memory.
fn establish(
    target: &ServiceName,
    acceptor: &Acceptor,
) -> Result<(Context, Context), (bool, socksgate::gssapi::GssError)> {
    let mut client = Initiator::start(target).map_err(|e| (false, e))?;
    let mut server = acceptor.start();
    loop {
        let (token, c) = match client {
            Step::Continue(token, c) => (token, Some(c)),
            Step::Done(Some(_), _) => panic!("initiator done with a token before the acceptor"),
            Step::Done(None, _) => panic!("initiator done without the acceptor"),
        };
        match server.step(&token).map_err(|e| (true, e))? {
            Step::Continue(reply, s) => {
                server = s;
                client = c
                    .expect("client context")
                    .step(Some(&reply))
                    .map_err(|e| (false, e))?;
            }
            Step::Done(reply, server_ctx) => {
                let c = c.expect("client context");
                match c.step(reply.as_deref()).map_err(|e| (false, e))? {
                    Step::Done(None, client_ctx) => return Ok((client_ctx, server_ctx)),
                    other => panic!("initiator not done after the acceptor: {other:?}"),
                }
            }
        }
    }
}

/// The §5 stream over two contexts ([`Protection`], [`ProtectedStream`]): messages of every
/// size up to the most one carries, each token within the framing's 65,535 octets, opened from
/// input cut anywhere — the receive buffer collects tokens in one piece and moves them only
/// when they would not fit — and through a stream with bytes already read.
fn protected_streams(acceptor: &Acceptor) {
    let sizes = [
        1,
        100,
        16_384,
        MAX_PLAIN_PER_MESSAGE,
        2 * MAX_PLAIN_PER_MESSAGE + 5,
        40_000,
        3,
        65_000,
    ];
    let plain: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 31 + j * 7) as u8).collect())
        .collect();
    let whole: Vec<u8> = plain.concat();
    for level in [ProtectionLevel::Integrity, ProtectionLevel::Confidentiality] {
        for cut in [1, 5, 4_099, 65_539, 300_000] {
            let (c, s) = establish(&rcmd(), acceptor).expect("context");
            let (mut sender, mut receiver) = (Protection::new(c, level), Protection::new(s, level));
            let mut wire = Vec::new();
            for p in &plain {
                sender.seal(p, &mut wire).expect("seal");
            }
            // Every message within the framing, and full ones as large as allowed.
            let (mut at, mut largest) = (0, 0);
            while at < wire.len() {
                assert_eq!(&wire[at..at + 2], &[1, 3]);
                let len = usize::from(u16::from_be_bytes([wire[at + 2], wire[at + 3]]));
                largest = largest.max(len);
                at += 4 + len;
            }
            assert_eq!(at, wire.len());
            assert!(
                largest > MAX_PLAIN_PER_MESSAGE && largest <= 65_535,
                "{largest}"
            );
            let mut opened = Vec::new();
            for chunk in wire.chunks(cut) {
                receiver.open(chunk, &mut opened).expect("open");
            }
            assert!(receiver.at_boundary());
            assert!(opened == whole, "{level:?}, cut {cut}: plaintext differs");
        }
    }

    // The stream: the first bytes already read (held before the rest), then a duplex pipe.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (c, s) = establish(&rcmd(), acceptor).expect("context");
        let level = ProtectionLevel::Confidentiality;
        let mut sender = Protection::new(c, level);
        let mut wire = Vec::new();
        sender.seal(&whole, &mut wire).expect("seal");
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let split = MAX_PLAIN_PER_MESSAGE + 1_000;
        let mut stream =
            ProtectedStream::new(near, Protection::new(s, level), &wire[..split]).expect("new");
        let rest = wire[split..].to_vec();
        let writer = tokio::spawn(async move {
            far.write_all(&rest).await.unwrap();
            far.shutdown().await.unwrap();
            far
        });
        let mut read = Vec::new();
        stream.read_to_end(&mut read).await.expect("read");
        assert!(read == whole, "stream plaintext differs");
        drop(writer.await.unwrap());
        // And the other way: writes of any size become messages the peer opens.
        let (c, s) = establish(&rcmd(), acceptor).expect("context");
        let (a, mut far) = tokio::io::duplex(64 * 1024);
        let mut back = ProtectedStream::new(a, Protection::new(c, level), &[]).expect("new");
        let mut receiver = Protection::new(s, level);
        let sending = whole.clone();
        let writer = tokio::spawn(async move {
            back.write_all(&sending).await.unwrap();
            back.shutdown().await.unwrap();
        });
        let mut raw = Vec::new();
        far.read_to_end(&mut raw).await.unwrap();
        writer.await.unwrap();
        let mut opened = Vec::new();
        receiver.open(&raw, &mut opened).expect("open");
        assert!(opened == whole, "written plaintext differs");
    });
}

fn rcmd() -> ServiceName {
    ServiceName {
        service: "rcmd".into(),
        host: "localhost".into(),
    }
}

fn set_cache(cache: &str) {
    // SAFETY: this test binary has one test and sets the environment on its only thread
    // before the library reads it (no other thread runs while it changes).
    unsafe { std::env::set_var("KRB5CCNAME", cache) };
}

#[test]
fn binding_against_a_real_kdc() {
    let Some(kdc) = Kdc::start("binding_against_a_real_kdc", "BINDING.TEST") else {
        return;
    };
    for (k, v) in kdc.env() {
        // SAFETY: as in `set_cache`: one thread, before any Kerberos call.
        unsafe { std::env::set_var(k, v) };
    }
    kdc.add_user("alice", "alice-pw");
    kdc.add_service("rcmd/localhost");
    kdc.add_service("other/localhost");
    let keytab = kdc.keytab("socks.keytab", &["rcmd/localhost"]);
    let other_keytab = kdc.keytab("other.keytab", &["other/localhost"]);
    let acceptor = Acceptor::from_keytab(&keytab, None).expect("acceptor");
    set_cache(&kdc.kinit("alice", "alice-pw", "main", "10h"));

    // Established both ways, with the right names.
    let (mut client, mut server) = establish(&rcmd(), &acceptor).expect("context");
    assert_eq!(server.peer(), "alice@BINDING.TEST");
    assert_eq!(server.local(), "rcmd/localhost@BINDING.TEST");
    assert_eq!(client.peer(), "rcmd/localhost@BINDING.TEST");
    assert!(server.confidentiality_available());

    // Integrity only: the plaintext is in the token; confidentiality: it is not.
    let secret = b"the payload that must not be seen in clear on the wire";
    let signed = client.wrap(false, secret).expect("wrap");
    assert!(signed.windows(secret.len()).any(|w| w == secret));
    assert_eq!(&*server.unwrap_to_vec(&signed).expect("unwrap"), secret);
    let sealed = client.wrap(true, secret).expect("wrap");
    assert!(
        !sealed
            .windows(16)
            .any(|w| secret.windows(16).any(|s| s == w))
    );
    assert_eq!(&*server.unwrap_to_vec(&sealed).expect("unwrap"), secret);
    // And back.
    let reply = server.wrap(true, b"reply").expect("wrap");
    assert_eq!(&*client.unwrap_to_vec(&reply).expect("unwrap"), b"reply");

    // Sealed in place: a plain wrap token the peer unwraps; room too small: nothing written.
    let mut buf = vec![0u8; 300 + secret.len() + 300];
    buf[300..300 + secret.len()].copy_from_slice(secret);
    for encrypt in [false, true] {
        let mut b = buf.clone();
        let token = client
            .wrap_in_place(encrypt, &mut b, 300..300 + secret.len())
            .expect("wrap_in_place")
            .expect("room enough");
        assert!(token.start < 300 && token.end > 300 + secret.len());
        assert_eq!(
            b[token.clone()].windows(secret.len()).any(|w| w == secret),
            !encrypt
        );
        assert_eq!(&*server.unwrap_to_vec(&b[token]).expect("unwrap"), secret);
    }
    let mut cramped = secret.to_vec();
    let len = cramped.len();
    assert_eq!(
        client.wrap_in_place(true, &mut cramped, 0..len).unwrap(),
        None
    );
    assert_eq!(cramped, secret);

    protected_streams(&acceptor);

    // The same message twice: sequence.
    let once = client.wrap(false, b"once").expect("wrap").to_vec();
    server.unwrap_to_vec(&once).expect("first");
    let replayed = server.unwrap_to_vec(&once).unwrap_err();
    assert_eq!(replayed.cause, Cause::Sequence, "{replayed}");
    // A flipped bit: integrity (the context is unusable after any failure: the
    // sequence now has a gap).
    let mut tampered = client.wrap(true, secret).expect("wrap").to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        server.unwrap_to_vec(&tampered).unwrap_err().cause,
        Cause::Integrity
    );
    // Garbage where a token should be.
    let garbled = server.unwrap_to_vec(b"\x60\x01garbage").unwrap_err();
    assert_eq!(garbled.cause, Cause::DefectiveToken, "{garbled}");
    let garbled_ctx = acceptor.start().step(b"not a kerberos token").unwrap_err();
    assert_eq!(garbled_ctx.cause, Cause::DefectiveToken, "{garbled_ctx}");
    // A truncated context token.
    let Step::Continue(first, _) = Initiator::start(&rcmd()).expect("initiator") else {
        panic!("one-token initiator expected a continue");
    };
    let truncated = acceptor
        .start()
        .step(&first[..first.len() / 2])
        .unwrap_err();
    assert_eq!(truncated.cause, Cause::DefectiveToken, "{truncated}");

    // A principal named in the configuration: the ticket must be for it.
    let strict = Acceptor::from_keytab(&keytab, Some("rcmd/localhost@BINDING.TEST")).unwrap();
    establish(&rcmd(), &strict).expect("the named principal");
    let strict = Acceptor::from_keytab(&keytab, Some("rcmd/localhost")).unwrap();
    establish(&rcmd(), &strict).expect("the named principal, any realm");
    let wrong = Acceptor::from_keytab(&keytab, Some("socks/localhost")).unwrap();
    let (on_server, e) = establish(&rcmd(), &wrong).unwrap_err();
    assert!(on_server && e.cause == Cause::WrongService, "{e}");

    // A ticket for a service whose key the acceptor lacks.
    let other = ServiceName {
        service: "other".into(),
        host: "localhost".into(),
    };
    let (on_server, e) = establish(&other, &acceptor).unwrap_err();
    assert!(on_server && e.cause == Cause::WrongService, "{e}");
    // A keytab for another service only.
    let only_other = Acceptor::from_keytab(&other_keytab, None).unwrap();
    let (on_server, e) = establish(&rcmd(), &only_other).unwrap_err();
    assert!(on_server && e.cause == Cause::WrongService, "{e}");
    // A service the KDC does not know: the client cannot get a ticket.
    let unknown = ServiceName {
        service: "nosuch".into(),
        host: "localhost".into(),
    };
    let (on_server, e) = establish(&unknown, &acceptor).unwrap_err();
    assert!(!on_server, "{e}");

    // A stale keytab (the service's key changed since): wrong service (old key version).
    let stale = Acceptor::from_keytab(&keytab, None).unwrap();
    kdc.keytab("rekeyed.keytab", &["rcmd/localhost"]);
    set_cache(&kdc.kinit("alice", "alice-pw", "after-rekey", "10h"));
    let (on_server, e) = establish(&rcmd(), &stale).unwrap_err();
    assert!(on_server && e.cause == Cause::WrongService, "{e}");

    // Expired tickets (the client's library refuses to use them).
    set_cache(&kdc.kinit("alice", "alice-pw", "short", "1s"));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (on_server, e) = establish(&rcmd(), &acceptor).unwrap_err();
    assert!(!on_server && e.cause == Cause::Expired, "{e}");

    // No tickets at all.
    set_cache(&kdc.empty_cache("none"));
    let (on_server, e) = establish(&rcmd(), &acceptor).unwrap_err();
    assert!(!on_server && e.cause == Cause::NoCredentials, "{e}");

    // Missing keytab.
    let e = Acceptor::from_keytab(Path::new("/nonexistent.keytab"), None).unwrap_err();
    assert_eq!(e.cause, Cause::NoCredentials);
}
