//! Logging for `tenure run` and the `--exec` guard: tracing to stderr, text (coloured only on a
//! terminal, and never under `NO_COLOR`) or JSON with the election's fields flattened.

use crate::args::LogFormat;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    init_with_file(format, None);
}

/// As [`init`], and every record also to `file` (plain text or JSON, never coloured).
pub(crate) fn init_with_file(format: LogFormat, file: Option<Arc<LogFile>>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};
    type Boxed = Box<dyn Layer<Registry> + Send + Sync>;
    let filter = EnvFilter::try_from_env("TENURE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = |ansi: bool, writer: fmt::writer::BoxMakeWriter| -> Boxed {
        let l = fmt::layer().with_ansi(ansi).with_writer(writer);
        match format {
            LogFormat::Text => l.boxed(),
            LogFormat::Json => l.json().flatten_event(true).boxed(),
        }
    };
    let mut layers = vec![layer(
        use_colour(),
        fmt::writer::BoxMakeWriter::new(std::io::stderr),
    )];
    if let Some(f) = file {
        layers.push(layer(false, fmt::writer::BoxMakeWriter::new(f)));
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .init();
}

/// `--log-file`: appended to, one write per record, and reopened at the same path on SIGHUP
/// (after logrotate has moved the old file away).
pub(crate) struct LogFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl LogFile {
    /// Opens (creating, mode 0640) `path` for appending.
    pub(crate) fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(Self::open_file(path)?),
        })
    }

    fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again and writes there from now on; on failure keeps the old file.
    pub(crate) fn reopen(&self) -> std::io::Result<()> {
        let new = Self::open_file(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }
}

/// Each record is formatted first and written with one `write_all` (tracing-subscriber's
/// `Arc<W>` writer writes through `&W`).
impl std::io::Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `--log-file` with `{node}` replaced by the node's name.
pub(crate) fn log_file_path(template: &Path, node: &str) -> PathBuf {
    PathBuf::from(template.to_string_lossy().replace("{node}", node))
}
