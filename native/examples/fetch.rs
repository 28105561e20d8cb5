//! Fetches a plain-HTTP URL through a SOCKS proxy (or a chain of them) with the client
//! library, and prints the response to stdout.
//!
//! ```text
//! cargo run -p socksgate --example fetch -- http://example.com/ socks5h://127.0.0.1:1080
//! cargo run -p socksgate --example fetch -- http://intranet.example/ \
//!     socks5://gateway.example:1080 socks5h+tls://alice:s3cret@inner.example:1443
//! ```
//!
//! The proxies are tried in order, the first reached directly. Only `http://` URLs: TLS to
//! the origin is beyond this example.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use socksgate::client::{Connector, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), proxies) = (args.next(), args.collect::<Vec<_>>()) else {
        bail!("usage: fetch http://HOST[:PORT]/PATH PROXY_URL [PROXY_URL…]");
    };
    let proxies = proxies
        .iter()
        .map(|p| p.parse::<Proxy>())
        .collect::<Result<Vec<_>, _>>()?;
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: [::1] or [::1]:8080.
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, 80),
            Some((h, p)) => (h, p.trim_start_matches(':').parse().context("bad port")?),
            None => bail!("unclosed '[' in {authority}"),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().context("bad port")?),
            None => (authority, 80),
        },
    };

    let connector = Connector::chain(proxies)?.with_timeout(Duration::from_secs(30));
    let mut stream = connector.connect((host, port)).await?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: socksgate-fetch\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    std::io::stdout().write_all(&response)?;
    Ok(())
}
