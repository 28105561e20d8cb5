//! The command line: `serve`, `passwd`, `connect`, `socksify`, `check-config`, `inspect`.
//!
//! The spellings documented under "Command line" in native/README.md are a fixed interface;
//! every `serve` flag also has a config-file key (see [`crate::config`]), and a flag given on
//! the command line wins over the file.

use core::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `socksgate`: SOCKS4/4a/5 server, client and password tool.
#[derive(Debug, Parser)]
#[command(name = "socksgate", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SOCKS server (default: 127.0.0.1:1080, no authentication).
    Serve(ServeArgs),
    /// Add or replace a user in a users file; the password is read from stdin.
    Passwd(PasswdArgs),
    /// Relay stdin/stdout to HOST:PORT through a SOCKS proxy (for ssh's ProxyCommand).
    Connect(ConnectArgs),
    /// Run a program with its TCP connections, UDP datagrams, active-mode FTP data
    /// connections and name lookups going through a SOCKS proxy (preloads
    /// libsocksgate_socksify.so; dynamically linked programs only).
    Socksify(SocksifyArgs),
    /// Validate a config file and print the effective configuration.
    CheckConfig(CheckConfigArgs),
    /// Find and decode SOCKS sessions in a pcap or pcapng capture.
    Inspect(InspectArgs),
}

/// Log output format.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `socksgate serve`.
#[derive(Clone, Debug, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on (repeatable; IPv4 `127.0.0.1:1080` or IPv6 `[::1]:1080`).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Users file (written by `socksgate passwd`); enables username/password authentication.
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Allow a non-loopback listener without authentication or allow rules (an open proxy).
    #[arg(long)]
    pub allow_open: bool,
    /// Log format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// After opening the listeners, switch to this user (and its group) and drop root.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
}

/// `socksgate passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The users file to create or update.
    #[arg(long, value_name = "FILE")]
    pub users: PathBuf,
    /// The user name to add or replace.
    #[arg(value_name = "USER")]
    pub user: String,
}

/// `socksgate connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Proxy URL: `socks4://`, `socks4a://`, `socks5://` or `socks5h://[user:pass@]host:port`;
    /// `socks5+tls://` and the like speak SOCKS inside TLS; `socks5h+gssapi://host:port
    /// ?service=rcmd&protection=confidentiality` authenticates with Kerberos (`kinit`).
    #[arg(
        long,
        value_name = "URL",
        help = "Proxy URL: socks4://, socks4a://, socks5:// or socks5h://[user:pass@]host:port; socks5+tls://, socks5h+tls:// (also socks4+tls, socks4a+tls) speak SOCKS inside TLS; socks5h+gssapi://host:port?service=rcmd&protection=confidentiality|integrity|none uses Kerberos (kinit)"
    )]
    pub proxy: String,
    /// For a `+tls` proxy: CA certificates (PEM) its certificate must chain to, instead of
    /// the system's trust store.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For a `+tls` proxy that asks for one: our client certificate chain (PEM), with `--key`.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `--cert`.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Destination host (name or IP address).
    #[arg(value_name = "HOST")]
    pub host: String,
    /// Destination port.
    #[arg(value_name = "PORT")]
    pub port: u16,
    /// On EOF from stdin, keep sending open instead of shutting down the connection's write
    /// side (for proxies such as microsocks that drop the whole connection on a half-close).
    #[arg(long)]
    pub no_shutdown: bool,
}

/// `socksgate socksify`. Each setting: flag, else environment variable, else config file,
/// else default (see "socksify" in native/README.md).
#[derive(Debug, Args)]
pub struct SocksifyArgs {
    /// Proxy URL: socks5h:// (default socks5h://127.0.0.1:1080; the proxy resolves names),
    /// socks5://, socks4a:// or socks4://, with optional user:pass@ [env
    /// SOCKSGATE_SOCKSIFY_PROXY].
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Destinations reached without the proxy: comma-separated `loopback`, `local` (the
    /// networks of this machine's interfaces), CIDR networks, or `none` (default
    /// loopback,local) [env SOCKSGATE_SOCKSIFY_DIRECT].
    #[arg(long, value_name = "NETS")]
    pub direct: Option<String>,
    /// TOML config file with the keys proxy, direct, connect_timeout, verbose, log_file [env
    /// SOCKSGATE_SOCKSIFY_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log each interposed call and what the proxy answered, to stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Log as `--verbose` does, to this file (appended; children write to it too).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Seconds for reaching the proxy and its answer (default 30) [env
    /// SOCKSGATE_SOCKSIFY_CONNECT_TIMEOUT].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
    /// The program and its arguments (after `--`).
    #[arg(
        value_name = "PROGRAM",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<std::ffi::OsString>,
}

/// `socksgate check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML configuration file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `socksgate inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The capture file (pcap or pcapng, optionally gzip- or zstd-compressed); `-` reads
    /// stdin (e.g. `tcpdump -i lo -w - -U | socksgate inspect - --json-lines`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the JSON document (the same one the web inspector produces).
    #[arg(long, conflicts_with = "json_lines")]
    pub json: bool,
    /// Print one JSON session per line as each connection ends, then a last line
    /// `{"capture": {...}}` with the facts about the file.
    #[arg(long)]
    pub json_lines: bool,
    /// Show RFC 1929 passwords instead of masking them.
    #[arg(long)]
    pub show_secrets: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags() {
        let cli = Cli::try_parse_from([
            "socksgate",
            "serve",
            "--listen",
            "127.0.0.1:1080",
            "--listen",
            "[::1]:1081",
            "--allow-open",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.len(), 2);
        assert!(args.listen[1].is_ipv6());
        assert!(args.allow_open);
        assert_eq!(args.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn connect_args() {
        let cli = Cli::try_parse_from([
            "socksgate",
            "connect",
            "--proxy",
            "socks5h://p:1080",
            "h",
            "22",
        ])
        .unwrap();
        let Command::Connect(args) = cli.command else {
            panic!("not connect")
        };
        assert_eq!(args.port, 22);
    }
}
