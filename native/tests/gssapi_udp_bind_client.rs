//! The client library's UDP ASSOCIATE ([`SocksDatagram`](socksgate::client::SocksDatagram))
//! and BIND under `Auth::Gssapi` with integrity and confidentiality, against socksgate's
//! server and a real MIT KDC: datagrams to a UDP echo and back, a BIND whose peer connects
//! back, bytes checked both ways; a capture on `lo` (Debian's tcpdump) of the datagrams
//! between client and relay holds the payload in clear only at integrity.
//!
//! One test function on purpose: the library reads `KRB5_CONFIG` and `KRB5CCNAME` from the
//! process environment, which is set here once, before any other thread exists: the one
//! `unsafe` this file needs (`std::env::set_var`).
#![allow(unsafe_code)]

use std::time::Duration;

use socksgate::client::{Connector, Proxy};
use socksgate_core::Target;
use socksgate_tests::capture::LoCapture;
use socksgate_tests::kerberos::Kdc;
use socksgate_tests::origin::UdpEcho;
use socksgate_tests::socksgate::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends `payload` in datagrams of 1000 octets through `connector` to `echo` and checks each
/// answer; returns the number of datagrams.
async fn udp_round_trips(
    connector: &Connector,
    echo: std::net::SocketAddr,
    payload: &[u8],
) -> usize {
    let udp = connector.udp_associate().await.expect("udp associate");
    assert!(udp.is_protected());
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    for chunk in payload.chunks(1000) {
        udp.send_to(chunk, echo).await.expect("send_to");
        let (len, from) = tokio::time::timeout(Duration::from_secs(10), udp.recv_from(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("recv_from");
        assert_eq!(from, Target::Ip(echo));
        assert!(&buf[..len] == chunk, "datagram {n} differs");
        n += 1;
    }
    n
}

/// BIND through `connector`; a peer connects back, sends `payload`, and gets it reversed.
async fn bind_both_ways(connector: &Connector, payload: &[u8]) {
    let listener = connector.bind(("127.0.0.1", 0)).await.expect("bind");
    let Target::Ip(listening) = *listener.listen_addr() else {
        panic!("listening on a name")
    };
    let mut peer = tokio::net::TcpStream::connect(listening)
        .await
        .expect("peer connects");
    let (stream, from) = listener.accept().await.expect("second reply");
    assert_eq!(from, Target::Ip(peer.local_addr().unwrap()));
    let (mut r, mut w) = tokio::io::split(stream);
    let (mut pr, mut pw) = peer.split();
    let reversed: Vec<u8> = payload.iter().rev().copied().collect();
    let peer_side = async {
        pw.write_all(payload).await.expect("peer write");
        let mut back = vec![0u8; payload.len()];
        pr.read_exact(&mut back).await.expect("peer read");
        back
    };
    let client_side = async {
        let mut got = vec![0u8; payload.len()];
        r.read_exact(&mut got).await.expect("client read");
        w.write_all(&reversed).await.expect("client write");
        w.flush().await.expect("flush");
        got
    };
    let (back, got) = tokio::join!(peer_side, client_side);
    assert!(got == payload, "peer → client differs");
    assert!(back == reversed, "client → peer differs");
}

#[test]
fn client_library_udp_and_bind_under_gssapi_protection() {
    let Some(kdc) = Kdc::start("client_library_gssapi_udp_bind", "CLIENTUDP.TEST") else {
        return;
    };
    for (k, v) in kdc.env() {
        // SAFETY: one thread, before any Kerberos call or other thread.
        unsafe { std::env::set_var(k, v) };
    }
    kdc.add_user("alice", "alice-pw");
    kdc.add_service("rcmd/localhost");
    let keytab = kdc.keytab("socks.keytab", &["rcmd/localhost"]);
    let cache = kdc.kinit("alice", "alice-pw", "main", "10h");
    // SAFETY: as above.
    unsafe { std::env::set_var("KRB5CCNAME", &cache) };

    let server = Server::builder()
        .config(&format!(
            "[gssapi]\nkeytab = \"{}\"\nprotection = [\"integrity\", \"confidentiality\"]\n",
            keytab.display()
        ))
        .envs(kdc.env())
        .start();
    let echo = UdpEcho::start();
    let marker = b"LIBRARY-UDP-SECRET-";
    let mut payload = marker.repeat(60);
    payload.extend(socksgate_tests::body(20_000));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let port = server.addr().port();
        for level in ["confidentiality", "integrity"] {
            // Everything on lo but the relay's leg to the echo (the destination's plaintext).
            let capture = LoCapture::start(&format!("udp and not port {}", echo.addr().port()));
            let connector = Connector::new(
                format!("socks5h+gssapi://localhost:{port}?protection={level}")
                    .parse::<Proxy>()
                    .unwrap(),
            )
            .with_timeout(Duration::from_secs(30));
            let n = udp_round_trips(&connector, echo.addr(), &payload).await;
            assert_eq!(n, payload.len().div_ceil(1000), "{level}");
            let wire = capture.stop_after(payload.len());
            assert!(
                wire.len() > payload.len(),
                "{level}: {} octets captured",
                wire.len()
            );
            assert_eq!(
                contains(&wire, marker),
                level == "integrity",
                "{level}: payload in clear"
            );
            bind_both_ways(&connector, &payload).await;
        }
    });
    assert!(echo.received() >= 2 * payload.len().div_ceil(1000));
    let log = server.log();
    assert!(log.contains("alice@CLIENTUDP.TEST"), "{log}");
    assert!(log.contains("udp associate ended"), "{log}");
    // The library sealed every datagram: none from a protected association was dropped
    // (the server warns of each burst).
    assert!(!log.contains("protected datagram dropped"), "{log}");
}
