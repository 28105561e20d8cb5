//! `socksgate`: the native SOCKS server, client and password tool. The logic lives in the
//! library; this file only dispatches subcommands and reports errors.
#![forbid(unsafe_code)]

mod inspect_command;

use std::io::IsTerminal as _;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use socksgate::cli::{Cli, Command, ServeArgs};
use socksgate::config::Config;
use socksgate::metrics::{self, Metrics};
use socksgate::resolve::Resolver;
use socksgate::shared::Shared;
use socksgate::users::{self, Users};
use socksgate::{connect_command, logging, reload, server, systemd};

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // The chain, without repeating causes a message already includes.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let cause = cause.to_string();
            if !msg.contains(&cause) {
                msg.push_str(": ");
                msg.push_str(&cause);
            }
        }
        eprintln!("socksgate: {msg}");
        std::process::exit(1);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Passwd(args) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "password for {} (input is echoed; end with Enter):",
                    args.user
                );
            }
            let password =
                users::read_password(stdin.lock()).context("reading the password from stdin")?;
            users::set_password(&args.users, &args.user, &password)?;
            eprintln!(
                "socksgate: user {} set in {}",
                args.user,
                args.users.display()
            );
            Ok(())
        }
        Command::Connect(args) => {
            let rt = runtime()?;
            let result = rt.block_on(connect_command::run(&args));
            // tokio's stdin reads on a blocking thread that may never return (ssh keeps our
            // stdin open): do not wait for it when the session is over.
            rt.shutdown_background();
            result?;
            Ok(())
        }
        Command::Socksify(args) => match socksgate::socksify::run(&args)? {},
        Command::Inspect(args) => inspect_command::run(&args),
        Command::CheckConfig(args) => {
            let mut config = Config::load(&args.file)?;
            config.finish();
            if let Some(path) = &config.users {
                let users = Users::load(path)?;
                if users.is_empty() {
                    eprintln!(
                        "socksgate: warning: {} has no users: nobody can log in",
                        path.display()
                    );
                }
            }
            // The certificate, key and CA files are read as `serve` would.
            socksgate::tls::Contexts::load(&config)?;
            // The keytab too: missing, unreadable or empty fails here.
            socksgate::gssapi::load(&config)?;
            config.check_open_proxy()?;
            config.check_supported()?;
            print!("{}", config.to_toml());
            print!("{}", config.access.describe());
            print!("{}", config.limits.describe());
            eprintln!("socksgate: {} is valid", args.file.display());
            Ok(())
        }
    }
}

fn serve(args: &ServeArgs) -> Result<()> {
    let mut config = Config::from_args(args)?;
    logging::init(config.log_format);
    // systemd socket activation: the inherited sockets replace `listen` (and are what the
    // open-proxy guard checks).
    let inherited = systemd::listeners().context("socket activation (LISTEN_FDS)")?;
    if let Some(listeners) = &inherited {
        config.listen = listeners
            .iter()
            .map(std::net::TcpListener::local_addr)
            .collect::<std::io::Result<_>>()?;
    }
    config.check_supported()?;
    config.check_open_proxy()?;
    let users = match &config.users {
        Some(path) => {
            let users = Users::load(path)?;
            if users.is_empty() {
                tracing::warn!(file = %path.display(), "the users file has no users: nobody can log in");
            }
            Some(Arc::new(users))
        }
        None => None,
    };
    // Bad rules fail now, before any socket is opened.
    let mut shared =
        Shared::new(config, users, Resolver::from_system()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Certificates and keys are read now, before any socket is opened (and before `--user`
    // drops the privileges that may be needed to read the key).
    shared.tls = socksgate::tls::Contexts::load(&shared.config)?;
    // The keytab is read now, as root if started so (it must stay readable for `--user`:
    // the library reads the keys again for each client).
    shared.gssapi = socksgate::gssapi::load(&shared.config)?;
    // `--user`: an unknown name fails now, before any socket is opened.
    #[cfg(target_os = "linux")]
    let account = shared
        .config
        .user
        .as_deref()
        .map(socksgate::privdrop::lookup)
        .transpose()?;
    #[cfg(not(target_os = "linux"))]
    if shared.config.user.is_some() {
        anyhow::bail!("--user is only supported on Linux");
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let mut listeners = Vec::new();
        if let Some(inherited) = inherited {
            for l in inherited {
                let l = tokio::net::TcpListener::from_std(l)?;
                tracing::info!(listen = %l.local_addr()?, "listening (socket activation)");
                listeners.push(l);
            }
        } else {
            for addr in &shared.config.listen {
                let l = server::listen_with(*addr, shared.config.reuse_port)
                    .with_context(|| format!("cannot listen on {addr}"))?;
                tracing::info!(listen = %l.local_addr()?, "listening");
                listeners.push(l);
            }
        }
        tracing::info!(
            auth = match (shared.users.is_some(), shared.gssapi.is_some()) {
                (true, true) => "gssapi, username/password",
                (false, true) => "gssapi",
                (true, false) => "username/password",
                (false, false) => "none",
            },
            rules = shared.config.rules.len(),
            "socksgate {} ready",
            env!("CARGO_PKG_VERSION")
        );
        let metrics = Arc::new(Metrics::default());
        if let Some(addr) = shared.config.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            tracing::info!(metrics = %l.local_addr()?, "serving Prometheus metrics at /metrics, health checks at /healthz and /readyz");
            tokio::spawn(metrics::serve(l, Arc::clone(&metrics)));
        }
        shared.metrics = Arc::clone(&metrics);
        let shared = Arc::new(shared);
        // Every listener is open, the users file and the resolver configuration are read:
        // give up root (see `privdrop`).
        #[cfg(target_os = "linux")]
        if let Some(account) = &account {
            socksgate::privdrop::drop_to(account)?;
            tracing::info!(user = %account.name, uid = account.uid, gid = account.gid, "dropped privileges");
        }
        if let Err(e) = systemd::notify("READY=1") {
            tracing::warn!("cannot notify systemd: {e}");
        }
        let shutdown = async move {
            shutdown_signal().await;
            metrics.start_draining();
            let _ = systemd::notify("STOPPING=1");
        };
        let (current, updates) = tokio::sync::watch::channel(shared);
        #[cfg(unix)]
        tokio::spawn(reload::on_sighup(args.clone(), current, |state| {
            let _ = systemd::notify(state);
        }));
        #[cfg(not(unix))]
        drop(current);
        server::serve_reloadable(listeners, updates, shutdown).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
