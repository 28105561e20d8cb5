//! What sealing one message costs with the allocating `gss_wrap` (`Context::wrap`, as
//! `DatagramProtection::seal` and the protection-level exchange use it) against wrapping in
//! place (`Context::wrap_in_place`, as the TCP relay's `Protection::seal_message` does), for
//! messages of 64 to 8,192 octets with integrity and with confidentiality, through a real
//! Kerberos context (a KDC of its own). The figures decided which path each use takes.
//!
//! A measurement, not a check of speed: it runs only with `SOCKSGATE_CI_SOAK=1` and prints
//! the best of many short alternating blocks (robust to a loaded machine); what it asserts is
//! that both paths give tokens the peer unwraps to the plaintext.
//!
//! ```sh
//! SOCKSGATE_CI_SOAK=1 cargo test --release -p socksgate --test gssapi_seal_cost -- --nocapture
//! ```
#![allow(unsafe_code)]

use socksgate::gssapi::{Acceptor, Context, Initiator, ServiceName, Step};
use socksgate::protected::Protection;
use socksgate::protected_datagram::DatagramProtection;
use socksgate_core::gssapi::ProtectionLevel;
use socksgate_tests::kerberos::Kdc;

/// A client and a server context, established in memory (Kerberos takes one round), as for
/// datagrams: replay detection without sequence checks, so that a token unwraps after a gap.
fn establish(target: &ServiceName, acceptor: &Acceptor) -> (Context, Context) {
    let Step::Continue(token, client) = Initiator::start_for_datagrams(target).expect("initiator")
    else {
        panic!("a Kerberos initiator sends a token first");
    };
    let Step::Done(reply, server) = acceptor.start().step(&token).expect("acceptor") else {
        panic!("a Kerberos acceptor is done after one token");
    };
    let Step::Done(None, client) = client.step(reply.as_deref()).expect("initiator") else {
        panic!("the initiator is done after the acceptor's reply");
    };
    (client, server)
}

#[test]
fn sealing_in_place_against_gss_wrap() {
    if std::env::var_os("SOCKSGATE_CI_SOAK").is_none() {
        eprintln!("gssapi_seal_cost: a measurement, run with SOCKSGATE_CI_SOAK=1");
        return;
    }
    let Some(kdc) = Kdc::start("gssapi_seal_cost", "COST.TEST") else {
        return;
    };
    for (k, v) in kdc.env() {
        // SAFETY: this binary's one test sets the environment before any other thread or
        // Kerberos call exists.
        unsafe { std::env::set_var(k, v) };
    }
    kdc.add_user("alice", "alice-pw");
    kdc.add_service("rcmd/localhost");
    let keytab = kdc.keytab("cost.keytab", &["rcmd/localhost"]);
    let acceptor = Acceptor::from_keytab(&keytab, None).expect("acceptor");
    let cache = kdc.kinit("alice", "alice-pw", "main", "10h");
    // SAFETY: as above.
    unsafe { std::env::set_var("KRB5CCNAME", cache) };
    let target = ServiceName {
        service: "rcmd".into(),
        host: "localhost".into(),
    };
    const BLOCK: u32 = 200;
    const BLOCKS: u32 = 500;
    for size in [64usize, 512, 1200, 8192] {
        let plain = vec![0x5a; size];
        for level in [ProtectionLevel::Integrity, ProtectionLevel::Confidentiality] {
            let (client, mut server) = establish(&target, &acceptor);
            let mut allocating = DatagramProtection::new(Protection::new(client, level));
            let (client, mut in_place_server) = establish(&target, &acceptor);
            let mut in_place = Protection::new(client, level);
            let (mut datagram, mut message) = (Vec::new(), Vec::new());
            let (mut best_allocating, mut best_in_place) = (f64::MAX, f64::MAX);
            for _ in 0..BLOCKS {
                let t = std::time::Instant::now();
                for _ in 0..BLOCK {
                    allocating.seal(&plain, &mut datagram).expect("seal");
                }
                best_allocating = best_allocating.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                for _ in 0..BLOCK {
                    in_place.seal_message(&plain, &mut message).expect("seal");
                }
                best_in_place = best_in_place.min(t.elapsed().as_secs_f64());
            }
            // The last token of each unwraps (no sequence checks: a gap is no error).
            let opened = server
                .unwrap_to_vec(&datagram[4..])
                .expect("unwrap allocating");
            assert_eq!(opened, plain);
            let at = in_place.seal_message(&plain, &mut message).expect("seal");
            let opened = in_place_server
                .unwrap_to_vec(&message[at.start + 4..at.end])
                .expect("unwrap in place");
            assert_eq!(opened, plain);
            let per = |best: f64| best * 1e9 / f64::from(BLOCK);
            println!(
                "{size:5} octets, {level}: gss_wrap {:.0} ns, in place {:.0} ns ({:+.1} %)",
                per(best_allocating),
                per(best_in_place),
                (best_in_place / best_allocating - 1.0) * 100.0
            );
        }
    }
}
