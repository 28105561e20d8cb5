//! Logging: `tracing` to stderr, as text or one JSON object per line.
//!
//! The level comes from `RUST_LOG` (default `info`). Passwords are never logged: only user
//! names and outcomes. Text logs are coloured only on a terminal (and not with `NO_COLOR`
//! set): a file, a pipe or the journal gets plain text.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. Later calls do nothing (tests may call it repeatedly).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
