//! `socksgate::gssapi` against a real MIT KDC: contexts between our acceptor and initiator,
//! wrap/unwrap with and without confidentiality, and every failure's [`Cause`].
//!
//! One test function on purpose: the library reads `KRB5_CONFIG` and `KRB5CCNAME` from the
//! process environment, which is set here once, before any other thread exists: the one
//! `unsafe` this file needs (`std::env::set_var`).
#![allow(unsafe_code)]

use std::path::Path;

use socksgate::gssapi::{Acceptor, Cause, Context, Initiator, ServiceName, Step};
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
