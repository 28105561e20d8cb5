//! `--verbose`: one line per interposed call and what the proxy answered, to stderr or a
//! file (`SOCKSGATE_SOCKSIFY_LOG`).
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

enum Sink {
    Quiet,
    Stderr,
    File(Mutex<File>),
}

fn sink() -> &'static Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    SINK.get_or_init(|| match std::env::var(socksgate_socksify_config::LOG_ENV) {
        Err(_) => Sink::Quiet,
        Ok(v) if v.is_empty() || v == "stderr" => Sink::Stderr,
        // O_APPEND: the program's children (and their children) write to the same file.
        Ok(path) => match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => Sink::File(Mutex::new(file)),
            Err(e) => {
                always(format_args!(
                    "cannot open log file {path}: {e}; logging to stderr"
                ));
                Sink::Stderr
            }
        },
    })
}

/// Logs one line, if `--verbose` is on.
pub(crate) fn event(args: fmt::Arguments<'_>) {
    let line = match sink() {
        Sink::Quiet => return,
        _ => format!("socksify[{}]: {args}\n", std::process::id()),
    };
    write_line(&line);
}

/// Logs one line to the `--verbose` sink, or to stderr when `--verbose` is off: for
/// problems the user must see (an unusable configuration).
pub(crate) fn always(args: fmt::Arguments<'_>) {
    let line = format!("socksify[{}]: {args}\n", std::process::id());
    write_line(&line);
}

fn write_line(line: &str) {
    // One write per line, so lines of concurrent threads and processes do not interleave.
    match sink() {
        Sink::File(file) => {
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
        Sink::Stderr | Sink::Quiet => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}
