//! `socksgate connect --proxy URL HOST PORT`: relay stdin/stdout to HOST:PORT through a SOCKS
//! proxy (usable as ssh's `ProxyCommand`), with [`crate::client`]. The URL schemes are
//! [`Proxy`]'s; `--ca`, `--cert` and `--key` are the TLS settings of a `+tls` proxy.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Connector, Error, Proxy};

/// Why `socksgate connect` failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// Reaching the destination through the proxy failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// The TLS settings (`--ca`, `--cert`, `--key`) could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Relaying stdin and stdout failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// `socksgate connect`: handshake, then relay stdin → proxy and proxy → stdout, with
/// half-close (stdin EOF shuts down the proxy connection's write side, unless
/// `no_shutdown`). The session ends when the proxy side ends.
pub async fn run(args: &crate::cli::ConnectArgs) -> Result<(), ConnectFailure> {
    let mut proxy: Proxy = args.proxy.parse()?;
    let no_shutdown = args.no_shutdown;
    let has_tls_files = args.ca.is_some() || args.cert.is_some();
    if has_tls_files && !proxy.tls {
        return Err(ConnectFailure::Client(Error::Url(
            "--ca, --cert and --key need a +tls proxy URL (socks5+tls://, socks5h+tls://, …)"
                .into(),
        )));
    }
    if proxy.tls {
        let identity = args.cert.as_deref().zip(args.key.as_deref());
        proxy = proxy.with_tls(crate::tls::client_config(args.ca.as_deref(), identity)?);
    }
    let stream = Connector::new(proxy)
        .connect((args.host.as_str(), args.port))
        .await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let up = async {
        let mut stdin = tokio::io::stdin();
        // Not tokio::io::copy: TLS needs each chunk flushed, for interactive use (ssh).
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            wr.write_all(buf.get(..n).unwrap_or_default()).await?;
            wr.flush().await?;
        }
        if no_shutdown {
            // Keep the write side open until the proxy side ends.
            std::future::pending::<()>().await;
        }
        wr.shutdown().await
    };
    let down = async {
        let mut stdout = tokio::io::stdout();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let written = async {
                stdout.write_all(buf.get(..n).unwrap_or_default()).await?;
                stdout.flush().await
            };
            match written.await {
                Ok(()) => {}
                // Whoever reads our stdout has gone: that ends the session, quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(e) => return Err(e),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    // The session is over when the proxy side ends; stdin may stay open (ssh does that).
    // `down` is never cancelled: dropping it while a chunk is on its way to stdout (tokio
    // writes stdout on a blocking thread) would lose that chunk, as the runtime is shut down
    // without waiting for it. `up` only ends the session early with an error.
    let up_failed = async {
        match up.await {
            Ok(()) => std::future::pending().await,
            Err(e) => e,
        }
    };
    tokio::select! {
        r = down => r?,
        e = up_failed => return Err(e.into()),
    }
    Ok(())
}
