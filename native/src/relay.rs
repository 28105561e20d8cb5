//! The TCP relay: both directions at once, with half-close.
//!
//! When one side finishes sending (EOF), the relay shuts down the write side of the other
//! connection and keeps copying the opposite direction until it ends too, so a client that
//! shuts down its write side still receives the whole response.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Buffer per direction. Larger buffers move more per syscall (see notes/performance.md);
/// 16 KiB keeps an idle session's memory moderate.
pub const BUFFER: usize = 16 * 1024;

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
pub async fn relay<C, U>(client: &mut C, upstream: &mut U, early: &[u8]) -> std::io::Result<Totals>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    if !early.is_empty() {
        upstream.write_all(early).await?;
    }
    let (up, down) =
        tokio::io::copy_bidirectional_with_sizes(client, upstream, BUFFER, BUFFER).await?;
    Ok(Totals {
        up: up + early.len() as u64,
        down,
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

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
            let body = vec![b'x'; 1 << 20];
            server.write_all(&body).await.unwrap();
            server.shutdown().await.unwrap();
            req
        });

        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap(); // half-close: no more requests
        let mut resp = Vec::new();
        client.read_to_end(&mut resp).await.unwrap();
        assert_eq!(resp.len(), 1 << 20);
        assert_eq!(server.await.unwrap(), b"early:request");
        let totals = relay.await.unwrap().unwrap();
        assert_eq!(
            totals,
            Totals {
                up: 13,
                down: 1 << 20
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
}
