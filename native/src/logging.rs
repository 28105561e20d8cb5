//! Logging: `tracing` to stderr, as text or one JSON object per line.
//!
//! The level comes from `RUST_LOG` (default `info`). Passwords are never logged: only user
//! names and outcomes. Text logs are coloured only on a terminal (and not with `NO_COLOR`
//! set): a file, a pipe or the journal gets plain text.
//!
//! When stderr is the systemd journal (the stream `JOURNAL_STREAM` names, as systemd sets it
//! for a service), every line starts with its syslog priority (`<3>` error, `<4>` warning,
//! `<6>` info, `<7>` debug and trace; sd-daemon(3)), which journald strips and records as
//! `PRIORITY`, and text lines carry no timestamp of their own: journald stamps each line.

use std::fmt;
use std::io::IsTerminal as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::LogFormat;

/// Installs the global subscriber. Later calls do nothing (tests may call it repeatedly).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let text = format::format().with_ansi(ansi);
    let json = format::format()
        .json()
        .flatten_event(true)
        .with_current_span(false);
    let _ = match (format, journal) {
        (LogFormat::Text, false) => builder.event_format(text).try_init(),
        (LogFormat::Text, true) => builder
            .event_format(JournalPriority(text.without_time()))
            .try_init(),
        (LogFormat::Json, false) => builder
            .fmt_fields(JsonFields::new())
            .event_format(json)
            .try_init(),
        // JSON keeps its `timestamp` field: it is part of the object consumers parse.
        (LogFormat::Json, true) => builder
            .fmt_fields(JsonFields::new())
            .event_format(JournalPriority(json))
            .try_init(),
    };
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` holds its
/// `device:inode`, and a child that inherited the variable but not the stream must not match.
fn stderr_is_journal() -> bool {
    std::env::var("JOURNAL_STREAM").is_ok_and(|stream| matches_stderr(&stream))
}

#[cfg(unix)]
fn matches_stderr(journal_stream: &str) -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;

    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // fstat through a duplicate of fd 2, so no unsafe code is needed.
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(stderr)
        .metadata()
        .is_ok_and(|meta| meta.dev() == dev && meta.ino() == ino)
}

#[cfg(not(unix))]
fn matches_stderr(_journal_stream: &str) -> bool {
    false
}

/// Prefixes each line with its syslog priority for journald (sd-daemon(3)).
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
