//! The client library's GSS-API (`Auth::Gssapi`) against socksgate's server and a real MIT
//! KDC: a chain whose second proxy needs Kerberos with confidentiality (the first hop plain),
//! and a single hop with integrity, bytes checked both ways.
//!
//! One test function on purpose: the library reads `KRB5_CONFIG` and `KRB5CCNAME` from the
//! process environment, which is set here once, before any other thread exists: the one
//! `unsafe` this file needs (`std::env::set_var`).
#![allow(unsafe_code)]

use std::time::Duration;

use socksgate::client::{Connector, Proxy};
use socksgate_tests::kerberos::Realm;
use socksgate_tests::origin;
use socksgate_tests::socksgate::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `payload` through `connector` to the echo service at `port` and reads it back.
async fn echo_through(connector: &Connector, port: u16, payload: &[u8]) -> Vec<u8> {
    let stream = connector
        .connect(("127.0.0.1", port))
        .await
        .expect("connect through the chain");
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async {
        w.write_all(payload).await.expect("write");
        w.shutdown().await.expect("shutdown");
    };
    let mut got = Vec::new();
    let reader = r.read_to_end(&mut got);
    let ((), read) = tokio::join!(writer, reader);
    read.expect("read");
    got
}

#[test]
fn client_library_gssapi_against_a_real_kdc() {
    let Some(realm) = Realm::start(
        "client_library_gssapi",
        "CLIENT.TEST",
        &["alice"],
        &["rcmd/localhost"],
        &["rcmd/localhost"],
    ) else {
        return;
    };
    for (k, v) in realm.kdc.env() {
        // SAFETY: one thread (the set-up's helper threads have ended), before any Kerberos
        // call of this process or other thread.
        unsafe { std::env::set_var(k, v) };
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("KRB5CCNAME", realm.cache("alice")) };

    let kerberos = realm
        .server()
        .gssapi("protection = [\"integrity\", \"confidentiality\"]")
        .start();
    let plain = Server::start();
    let echo = origin::echo();
    let mut payload = b"CHAINED-SECRET-".repeat(1000);
    payload.extend(socksgate_tests::body(100_000));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let kerberos_port = kerberos.addr().port();
        // plain → kerberos (confidentiality) → echo.
        let chain = Connector::chain([
            format!("socks5h://{}", plain.addr())
                .parse::<Proxy>()
                .unwrap(),
            format!("socks5h+gssapi://localhost:{kerberos_port}?protection=confidentiality")
                .parse::<Proxy>()
                .unwrap(),
        ])
        .unwrap()
        .with_timeout(Duration::from_secs(30));
        let got = echo_through(&chain, echo.port(), &payload).await;
        assert!(
            got == payload,
            "chain: {} of {} bytes back",
            got.len(),
            payload.len()
        );

        // One hop, integrity.
        let one = Connector::new(
            format!("socks5h+gssapi://localhost:{kerberos_port}?protection=integrity")
                .parse::<Proxy>()
                .unwrap(),
        )
        .with_timeout(Duration::from_secs(30));
        let got = echo_through(&one, echo.port(), &payload).await;
        assert!(
            got == payload,
            "integrity: {} of {} bytes back",
            got.len(),
            payload.len()
        );
    });
    // The server saw alice, at each level.
    let log = kerberos.log();
    assert!(log.contains("alice@CLIENT.TEST"), "{log}");
}
