//! SIGHUP: re-read the configuration file, the users file and the rules without dropping
//! established sessions.
//!
//! Each session keeps the [`Shared`] it started with; the accept loops hand new sessions the
//! newest one (a `watch` channel). A file that fails to load or validate is refused with a
//! log line and the running configuration stays. Counters (traffic quota counts among them),
//! open-session counts (limits, draining), the shared traffic buckets (retuned to the new
//! rates), the session-rate buckets and the resolver carry over. Settings bound at start —
//! listeners, the metrics address, the log format — need a restart; a reload that changes
//! them says so.

use std::sync::Arc;

use tracing::warn;

use crate::access;
use crate::cli::ServeArgs;
use crate::config::{Config, ConfigError};
use crate::shared::Shared;
use crate::users::{Users, UsersError};

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The users file.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// The rules.
    #[error("{0}")]
    Rules(String),
    /// A `[[tls]]` or `+tls` `[[upstream]]` certificate, key or CA file.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The `[gssapi]` keytab.
    #[error(transparent)]
    Gssapi(#[from] crate::gssapi::GssError),
}

/// Builds the next [`Shared`] from the files named by `args`, keeping `old`'s counters,
/// session counts and resolver.
pub fn load(args: &ServeArgs, old: &Shared) -> Result<Shared, ReloadError> {
    let mut config = Config::from_args(args)?;
    if crate::systemd::socket_activated() {
        // The listeners are systemd's; the file's `listen` does not apply.
        config.listen.clone_from(&old.config.listen);
    }
    config.check_supported()?;
    config.check_open_proxy()?;
    let users = match &config.users {
        Some(path) => Some(Arc::new(Users::load(path)?)),
        None => None,
    };
    let rules = access::compile(&config.rules, config.default_action, &config.rule_lines)
        .map_err(|e| ReloadError::Rules(e.to_string()))?;
    let auth_rules = crate::authentication::compile(
        &config.auth,
        users.is_some(),
        config.gssapi.is_some(),
        config.socks4,
    )
    .map_err(|e| ReloadError::Rules(e.to_string()))?;
    let tls = crate::tls::Contexts::load(&config)?;
    let gssapi = crate::gssapi::load(&config)?;
    for (what, changed) in [
        ("listen", config.listen != old.config.listen),
        ("metrics", config.metrics != old.config.metrics),
        ("log_format", config.log_format != old.config.log_format),
    ] {
        if changed {
            warn!("reload: `{what}` changed; it takes effect only after a restart");
        }
    }
    // Running sessions that share a user's or client's bucket move at the new rate at once.
    old.traffic_buckets.retune(&config.traffic_rules);
    Ok(Shared {
        balancers: crate::balancer::Balancers::new(&config.proxy_protocol),
        egress: crate::egress::Profiles::compile(&config),
        tls,
        gssapi,
        config,
        users,
        rules,
        resolver: old.resolver.clone(),
        metrics: Arc::clone(&old.metrics),
        auth_throttle: Arc::clone(&old.auth_throttle),
        sessions: Arc::clone(&old.sessions),
        traffic_buckets: Arc::clone(&old.traffic_buckets),
        session_rates: Arc::clone(&old.session_rates),
        auth_rules,
        own_addresses: crate::shared::own_addresses(),
    })
}

/// Reloads on every SIGHUP until the process ends; `notify` is called with `RELOADING=1` and
/// `READY=1` around each attempt (sd_notify).
#[cfg(unix)]
pub async fn on_sighup(
    args: ServeArgs,
    current: tokio::sync::watch::Sender<Arc<Shared>>,
    notify: fn(&str),
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler: reloading is off");
        return;
    };
    let args = Arc::new(args);
    while hup.recv().await.is_some() {
        notify("RELOADING=1");
        let old = Arc::clone(&current.borrow());
        let args = Arc::clone(&args);
        // Argon2 hashes are only parsed, but the files are read: off the async threads.
        match tokio::task::spawn_blocking(move || load(&args, &old)).await {
            Ok(Ok(next)) => {
                tracing::info!(
                    rules = next.config.rules.len(),
                    users = next.users.as_ref().map_or(0, |u| u.len()),
                    "reloaded: new sessions use the new configuration"
                );
                current.send_replace(Arc::new(next));
            }
            Ok(Err(e)) => tracing::error!("reload refused, keeping the running configuration: {e}"),
            Err(e) => tracing::error!("reload failed: {e}"),
        }
        notify("READY=1");
    }
}
