//! The daemon's log, `$TETHER_HOME/daemon.log`, and its rotation (SPEC §4).
//!
//! The daemon's stdout and stderr *are* the log, so a panic message or a stray `eprintln!`
//! lands in it too, and tracing writes to stderr. Rotating therefore swaps the file under
//! descriptors 1 and 2: the full file becomes `daemon.log.1` (older ones shift up to
//! `daemon.log.3`; the oldest goes), a new file is opened with mode 0600 and `dup2`ed over 1 and 2.
//!
//! It happens at start and, while running, inside the tracing writer once the bytes written
//! since the last check pass the limit: no timer, nothing to do for a quiet daemon, and a busy
//! one (`TETHER_LOG=debug`) cannot fill the disk. Session hosts write nothing here (their
//! stderr is /dev/null), so the daemon is the only writer that matters.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Rotated files kept beside the live one (`daemon.log.1` … `daemon.log.3`).
pub const KEEP: u32 = 3;

/// The rotation threshold: `TETHER_LOG_MAX_BYTES` (bytes, or a number with K, M or G) or
/// [`tether_settings::DEFAULT_LOG_MAX_BYTES`] (8 MiB). A value that does not parse falls back
/// to the default rather than stopping the daemon from starting over a typo in its environment.
pub fn max_bytes() -> u64 {
    tether_settings::get().log_max_bytes
}

/// `daemon.log.N`.
pub fn numbered(log: &Path, n: u32) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts `log.2` to `log.3`, `log.1` to `log.2` and `log` to `log.1`. Missing files are
/// skipped: after a fresh install only some of them exist.
pub fn shift(log: &Path) {
    for n in (1..KEEP).rev() {
        let _ = std::fs::rename(numbered(log, n), numbered(log, n + 1));
    }
    let _ = std::fs::rename(log, numbered(log, 1));
}

/// Opens (creating) the log for appending, private to the user whatever the umask or the mode
/// an older version left on it.
fn open(log: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(tether_transport::at(log))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(tether_transport::at(log))?;
    Ok(f)
}

/// stdin from /dev/null, stdout and stderr to the log (rotated first when it is already past
/// the limit). Returns the log's size, where [`init_logging`]'s count starts.
pub fn redirect_stdio(log: &Path, max: u64) -> std::io::Result<u64> {
    if max > 0 && std::fs::metadata(log).is_ok_and(|m| m.len() >= max) {
        shift(log);
    }
    let null = std::fs::File::open("/dev/null")?;
    let out = open(log)?;
    nix::unistd::dup2_stdin(&null).map_err(std::io::Error::from)?;
    point_stdio_at(&out)?;
    Ok(out.metadata()?.len())
}

fn point_stdio_at(f: &std::fs::File) -> std::io::Result<()> {
    nix::unistd::dup2_stdout(f).map_err(std::io::Error::from)?;
    nix::unistd::dup2_stderr(f).map_err(std::io::Error::from)?;
    Ok(())
}

/// Logs to stderr (the log file, after [`redirect_stdio`]) through a [`RotatingStderr`];
/// level from `TETHER_LOG` (default `info`, also for a filter that does not parse). Then logs
/// the settings that were ignored ([`tether_settings::Settings::warnings`]), once.
pub fn init_logging(log: &Path, max: u64, size: u64) {
    let settings = tether_settings::get();
    let filter = settings
        .log
        .as_deref()
        .map(tracing_subscriber::EnvFilter::try_new);
    let bad_filter = matches!(filter, Some(Err(_)));
    let filter = filter
        .and_then(Result::ok)
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(RotatingStderr::new(log.to_path_buf(), max, size))
        .try_init();
    if bad_filter {
        tracing::warn!(
            "ignoring {}={:?}: not a log filter; logging at info",
            tether_settings::vars::LOG,
            settings.log.as_deref().unwrap_or_default()
        );
    }
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
}

#[derive(Debug)]
struct State {
    log: PathBuf,
    /// 0 = never rotate.
    max: u64,
    /// Bytes in the file as far as this writer knows (its own writes since the last check).
    written: u64,
}

impl State {
    fn note(&mut self, n: usize) {
        self.written = self.written.saturating_add(n as u64);
        if self.max == 0 || self.written < self.max {
            return;
        }
        // Others may have written too, or someone may have moved the file: ask the file.
        let real = std::fs::metadata(&self.log).map_or(self.written, |m| m.len());
        if real < self.max {
            self.written = real;
            return;
        }
        shift(&self.log);
        match open(&self.log).and_then(|f| point_stdio_at(&f)) {
            Ok(()) => self.written = 0,
            Err(e) => {
                // Keep writing to the old file; try again after another `max` bytes rather
                // than on every line.
                self.written = 0;
                let _ = writeln!(std::io::stderr(), "tether: cannot rotate the log: {e}");
            }
        }
    }
}

/// A tracing writer that writes to stderr and rotates the log when it grows past the limit.
#[derive(Clone, Debug)]
pub struct RotatingStderr {
    state: Arc<Mutex<State>>,
}

impl RotatingStderr {
    /// `size`: the log's current size; `max`: the rotation threshold (0 = never).
    pub fn new(log: PathBuf, max: u64, size: u64) -> RotatingStderr {
        RotatingStderr {
            state: Arc::new(Mutex::new(State {
                log,
                max,
                written: size,
            })),
        }
    }
}

/// One event's writer: tracing formats an event into a buffer and writes it in one go, so a
/// rotation always falls between two lines.
pub struct EventWriter<'a> {
    state: &'a Mutex<State>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Hold the lock across the write so a rotation on another thread never splits a line.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = std::io::stderr().write(buf)?;
        st.note(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingStderr {
    type Writer = EventWriter<'a>;
    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter { state: &self.state }
    }
}

/// Shows only the variant name of a value's `Debug` form (`New`, `Invoke`, …): enough to follow
/// requests in a debug log without writing scripts, arguments or environments into it.
pub struct Variant<'a, T: std::fmt::Debug>(pub &'a T);

impl<T: std::fmt::Debug> std::fmt::Display for Variant<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = format!("{:?}", self.0);
        let end = full
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(full.len());
        f.write_str(&full[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_keeps_three_old_files_and_drops_the_oldest() {
        let dir = std::env::temp_dir().join(format!("tether-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("daemon.log");
        for g in 0..5 {
            std::fs::write(&log, format!("gen{g}")).unwrap();
            shift(&log);
        }
        assert!(!log.exists());
        let read = |n| std::fs::read_to_string(numbered(&log, n)).unwrap();
        assert_eq!(
            (read(1), read(2), read(3)),
            ("gen4".into(), "gen3".into(), "gen2".into())
        );
        assert!(!numbered(&log, 4).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn variant_shows_the_name_only() {
        #[derive(Debug)]
        #[allow(dead_code)]
        enum R {
            Invoke { script: String },
            Stop,
        }
        let secret = R::Invoke {
            script: "echo secret".into(),
        };
        assert_eq!(Variant(&secret).to_string(), "Invoke");
        assert_eq!(Variant(&R::Stop).to_string(), "Stop");
    }

    #[test]
    fn numbered_appends_to_the_whole_name() {
        assert_eq!(
            numbered(Path::new("/h/daemon.log"), 2),
            PathBuf::from("/h/daemon.log.2")
        );
    }
}
