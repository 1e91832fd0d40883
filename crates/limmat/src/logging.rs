//! Logging on stderr, set up once at start-up for every subcommand.
//!
//! `--log-format text` (the default) writes one human-readable line per event, coloured when
//! stderr is a terminal. `--log-format json` writes one JSON object per line for log
//! collectors: `timestamp`, `level`, `target`, the event's `message` and its fields at the top
//! level (so the relay's access-log line reads
//! `{"message":"request","method":"GET","domain":"…","status":200,"up":123,…}`), and the enclosing
//! spans, if any, under `span` and `spans`. Numbers stay numbers; values logged with `%` or
//! `?` are strings.
//!
//! Which events are written is chosen by `RUST_LOG` in either format; without it, by the
//! command's default (`info`; `limmat demo` shows only warnings unless given `-v`).

use clap::ValueEnum;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The values of `--log-format` (and `LIMMAT_LOG_FORMAT`).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr in `format`, with `RUST_LOG`'s filter or
/// else `default_filter`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A log line that cannot be written (stderr closed, a full disk) is dropped. The fallback
    // of reporting it with `eprintln!` would panic whichever task logged, and a relay must keep
    // serving and stop on SIGTERM even when its log reader went away.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
}
