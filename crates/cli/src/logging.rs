//! Logging for `tenure run` and the `--exec` guard: tracing to stderr, text (coloured only on a
//! terminal, and never under `NO_COLOR`) or JSON with the election's fields flattened.

use crate::args::LogFormat;

/// Colour codes in text logs only when standard error is a terminal and `NO_COLOR` is unset or
/// empty (no-color.org): a log file or journald should read as plain text.
fn use_colour() -> bool {
    use std::io::IsTerminal;
    colour_allowed(std::env::var_os("NO_COLOR").as_deref()) && std::io::stderr().is_terminal()
}

fn colour_allowed(no_color: Option<&std::ffi::OsStr>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

/// Logs to stderr (journald takes it from there) as text or JSON; `TENURE_LOG` filters.
pub(crate) fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TENURE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
