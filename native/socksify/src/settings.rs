//! The shim's configuration, read once from the environment that `socksgate socksify` sets
//! (the variables of [`socksgate_socksify_config`]; children inherit them, so programs
//! started by the program stay socksified).
//!
//! A program started with `LD_PRELOAD` by hand and a bad value gets one message on stderr
//! and every connection that should be proxied fails (fail closed: traffic never silently
//! goes direct).
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Duration;

pub(crate) use socksgate_socksify_config::Proxy;
use socksgate_socksify_config::{
    DEFAULT_DIRECT, DEFAULT_TIMEOUT_SECS, DIRECT_ENV, DirectList, PROXY_ENV, TIMEOUT_ENV,
};

use crate::direct::DirectNetworks;

/// Everything the hooks need.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The proxy, or why the configuration is unusable (then proxied connections fail).
    pub(crate) proxy: Result<Proxy, String>,
    /// Destinations that bypass the proxy.
    pub(crate) direct: DirectNetworks,
    /// Deadline for reaching the proxy and its answers.
    pub(crate) connect_timeout: Duration,
}

/// The settings of this process, read from the environment on first use.
pub(crate) fn get() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let settings = from_env(|name| std::env::var(name).ok());
        if let Err(why) = &settings.proxy {
            crate::log::always(format_args!(
                "no usable proxy ({why}): connections that should go through the proxy fail"
            ));
        }
        settings
    })
}

/// Builds settings from variables looked up with `var`.
pub(crate) fn from_env(var: impl Fn(&str) -> Option<String>) -> Settings {
    let proxy = match var(PROXY_ENV) {
        Some(url) => Proxy::parse(&url).map_err(|e| format!("{PROXY_ENV}: {e}")),
        None => Err(format!("{PROXY_ENV} is not set")),
    };
    let list = var(DIRECT_ENV).unwrap_or_else(|| DEFAULT_DIRECT.to_owned());
    let direct = match DirectList::parse(&list) {
        Ok(list) => DirectNetworks::new(&list),
        Err(e) => {
            crate::log::always(format_args!("{DIRECT_ENV}: {e}; nothing goes direct"));
            DirectNetworks::default()
        }
    };
    let connect_timeout = var(TIMEOUT_ENV)
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    Settings {
        proxy,
        direct,
        connect_timeout: Duration::from_secs(connect_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment() {
        let s = from_env(|name| match name {
            PROXY_ENV => Some("socks5://127.0.0.1:1080".into()),
            DIRECT_ENV => Some("none".into()),
            TIMEOUT_ENV => Some("5".into()),
            _ => None,
        });
        assert!(s.proxy.is_ok());
        assert!(!s.direct.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        let defaults = from_env(|_| None);
        assert!(defaults.proxy.is_err());
        assert!(defaults.direct.contains("127.0.0.1".parse().unwrap()));
    }
}
