//! The TCP relay: both directions at once, with half-close, and buffers only while data flows.
//!
//! When one side finishes sending (EOF), the relay shuts down the write side of the other
//! connection and keeps copying the opposite direction until it ends too, so a client that
//! shuts down its write side still receives the whole response. An error in either direction
//! ends both.
//!
//! Memory: a direction holds no buffer while its source is idle. A buffer is allocated when
//! the socket becomes readable and released once the socket is drained, so an idle session
//! costs only its sockets and a few words of state (notes/performance.md: ≤ 4 KiB per idle
//! session). Buffers start at [`SMALL`] and a direction that fills one switches to [`LARGE`]
//! (fewer syscalls for bulk transfers).

use tokio::io::{AsyncWriteExt, ErrorKind};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// First buffer size of a direction.
pub const SMALL: usize = 16 * 1024;
/// Buffer size once a direction has filled a small buffer.
pub const LARGE: usize = 64 * 1024;

/// Bytes moved by a finished relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Client → destination.
    pub up: u64,
    /// Destination → client.
    pub down: u64,
}

/// Writes `early` (client bytes that arrived with the handshake) upstream, then relays until
/// both directions have ended.
pub async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    early: &[u8],
) -> std::io::Result<Totals> {
    if !early.is_empty() {
        upstream.write_all(early).await?;
    }
    let (client_rd, client_wr) = client.split();
    let (up_rd, up_wr) = upstream.split();
    let (up, down) = tokio::try_join!(pump(client_rd, up_wr), pump(up_rd, client_wr))?;
    Ok(Totals {
        up: up + early.len() as u64,
        down,
    })
}

/// Copies `from` to `to` until EOF, then shuts down `to`'s write side.
async fn pump(from: ReadHalf<'_>, mut to: WriteHalf<'_>) -> std::io::Result<u64> {
    let source: &TcpStream = from.as_ref();
    let mut size = SMALL;
    let mut total = 0u64;
    loop {
        source.readable().await?;
        // Allocated only now that there is something to read; dropped when drained.
        let mut buf = vec![0u8; size];
        loop {
            match source.try_read(&mut buf) {
                Ok(0) => {
                    // EOF: pass the half-close on. The peer may already be gone.
                    match to.shutdown().await {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotConnected => {}
                        Err(e) => return Err(e),
                    }
                    return Ok(total);
                }
                Ok(n) => {
                    to.write_all(buf.get(..n).unwrap_or_default()).await?;
                    total += n as u64;
                    if n == buf.len() && size < LARGE {
                        size = LARGE;
                        buf = vec![0u8; size];
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn half_close_client_still_gets_the_whole_response() {
        // client <-> (c_in | relay | u_out) <-> server
        let (mut client, mut c_in) = pair().await;
        let (mut u_out, mut server) = pair().await;
        let relay = tokio::spawn(async move { relay(&mut c_in, &mut u_out, b"early:").await });

        // The server reads the whole request (until EOF), then answers with a large body.
        let server = tokio::spawn(async move {
            let mut req = Vec::new();
            server.read_to_end(&mut req).await.unwrap();
            let body: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
            server.write_all(&body).await.unwrap();
            server.shutdown().await.unwrap();
            (req, body)
        });

        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap(); // half-close: no more requests
        let mut resp = Vec::new();
        client.read_to_end(&mut resp).await.unwrap();
        let (req, body) = server.await.unwrap();
        assert_eq!(req, b"early:request");
        assert!(resp == body, "the response arrives whole and in order");
        let totals = relay.await.unwrap().unwrap();
        assert_eq!(
            totals,
            Totals {
                up: 13,
                down: 4 << 20
            }
        );
    }

    #[tokio::test]
    async fn half_close_from_the_server_side() {
        let (mut client, mut c_in) = pair().await;
        let (mut u_out, mut server) = pair().await;
        let relay = tokio::spawn(async move { relay(&mut c_in, &mut u_out, b"").await });
        // The server speaks first and closes its write side; the client keeps sending.
        server.write_all(b"banner").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"banner");
        client.write_all(b"after").await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"after");
        relay.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn interactive_ping_pong() {
        let (mut client, mut c_in) = pair().await;
        let (mut u_out, mut server) = pair().await;
        let relay = tokio::spawn(async move { relay(&mut c_in, &mut u_out, b"").await });
        for i in 0..100u8 {
            client.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).await.unwrap();
            server.write_all(&[b[0].wrapping_add(1)]).await.unwrap();
            client.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i.wrapping_add(1));
        }
        drop(client);
        drop(server);
        let _ = relay.await.unwrap();
    }

    #[tokio::test]
    async fn reset_ends_both_directions() {
        let (client, mut c_in) = pair().await;
        let (mut u_out, server) = pair().await;
        let relay = tokio::spawn(async move { relay(&mut c_in, &mut u_out, b"").await });
        // The destination vanishes with a reset; the client never sends or closes.
        let s2 = socket2::SockRef::from(&server);
        s2.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(server);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), relay).await;
        assert!(r.is_ok(), "the relay must end when one side resets");
        drop(client);
    }
}
