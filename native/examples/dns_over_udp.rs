//! Sends a DNS query over UDP ASSOCIATE with the client library and prints the answers.
//!
//! ```text
//! cargo run -p socksgate --example dns_over_udp -- socks5://127.0.0.1:1080 192.0.2.53:53 example.com
//! ```
//!
//! The DNS server may be given by name (`ns.example:53`): with `socks5h://` the proxy
//! resolves it. The message is built and parsed with hickory's DNS library.

use std::time::Duration;

use anyhow::{Context, bail};
use hickory_resolver::proto::op::{Message, Query};
use hickory_resolver::proto::rr::{Name, RecordType};
use socksgate::client::{Connector, Proxy};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [proxy, server, name] = args.as_slice() else {
        bail!("usage: dns_over_udp PROXY_URL DNS_SERVER:PORT NAME");
    };
    let proxy: Proxy = proxy.parse()?;
    let (server_host, server_port) = server
        .rsplit_once(':')
        .context("the DNS server needs a port, as 192.0.2.53:53")?;
    let server_port: u16 = server_port.parse().context("bad port")?;

    let mut query = Message::new();
    query
        .set_id(std::process::id() as u16)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let query = query.to_vec()?;

    let udp = Connector::new(proxy)
        .with_timeout(Duration::from_secs(10))
        .udp_associate()
        .await?;
    eprintln!("relay {} from {}", udp.relay_addr(), udp.local_addr()?);
    udp.send_to(&query, (server_host, server_port)).await?;
    let mut buf = [0u8; 4096];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .context("no answer within 5 s")??;
    let answer = Message::from_vec(&buf[..n])?;
    println!("{} from {from}: {}", name, answer.response_code());
    for record in answer.answers() {
        println!("{record}");
    }
    Ok(())
}
