//! A session host's own log, `<TETHER_HOME>/hosts/<instance id>.log`.
//!
//! The daemon starts hosts with stderr on /dev/null, so without this their warnings, errors and
//! panics went nowhere. The level is `TETHER_LOG` (the daemon's environment, which hosts
//! inherit), `warn` by default. The file is created at the first line only, so a quiet host
//! leaves nothing behind, and it stops growing at [`MAX_BYTES`] (one line says so). Logs of
//! sessions that no longer have a record are removed after [`KEEP_ENDED`], by the next host
//! that starts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes one host writes to its log at most.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// How long the log of an ended session is kept.
pub const KEEP_ENDED: Duration = Duration::from_secs(7 * 24 * 3600);

/// The log file of one host: opened at the first write, bounded.
pub struct HostLog {
    path: PathBuf,
    max: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    file: Option<std::fs::File>,
    written: u64,
    /// Opening failed or the bound was reached: nothing more is written.
    done: bool,
}

impl HostLog {
    pub fn new(path: PathBuf, max: u64) -> Arc<HostLog> {
        Arc::new(HostLog {
            path,
            max,
            state: Mutex::default(),
        })
    }

    fn write(&self, buf: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.done {
            return;
        }
        if st.file.is_none() {
            let opened = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path);
            match opened {
                Ok(f) => {
                    st.written = f.metadata().map(|m| m.len()).unwrap_or(0);
                    st.file = Some(f);
                }
                Err(_) => {
                    st.done = true;
                    return;
                }
            }
        }
        let room = self.max.saturating_sub(st.written);
        let Some(f) = st.file.as_mut() else { return };
        if (buf.len() as u64) <= room {
            let _ = f.write_all(buf);
            st.written += buf.len() as u64;
        } else {
            let note = format!(
                "(log full at {} bytes: later lines are dropped)\n",
                self.max
            );
            let _ = f.write_all(note.as_bytes());
            st.done = true;
            st.file = None;
        }
    }
}

/// A writer for tracing: each event is one `write` to the shared [`HostLog`].
pub struct Writer(Arc<HostLog>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Routes this host's tracing and panics to `hosts/<instance id>.log` in `hosts_dir`, and
/// removes old logs of ended sessions.
pub fn init(hosts_dir: &Path, instance_id: &str) {
    let safe = !instance_id.is_empty()
        && instance_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !safe {
        return;
    }
    prune(hosts_dir, KEEP_ENDED);
    let log = HostLog::new(hosts_dir.join(format!("{instance_id}.log")), MAX_BYTES);
    let filter = tether_settings::get()
        .log
        .as_deref()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || Writer(log.clone()))
        .try_init();
    std::panic::set_hook(Box::new(|info| tracing::error!("panic: {info}")));
}

/// Removes `*.log` files in `dir` older than `age` whose session has no record (`<id>.json`).
pub fn prune(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "log") || path.with_extension("json").exists() {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a >= age);
        if old {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_made_at_the_first_line_and_stops_at_its_bound_with_a_note() {
        let dir = std::env::temp_dir().join(format!("tether-hostlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.log");
        let log = HostLog::new(path.clone(), 100);
        assert!(!path.exists(), "a quiet host leaves no file");
        let mut w = Writer(log.clone());
        for _ in 0..50 {
            w.write_all(b"0123456789\n").unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(text.starts_with("0123456789\n"), "{text}");
        assert!(text.ends_with("(log full at 100 bytes: later lines are dropped)\n"));
        assert!(text.len() < 200, "{}", text.len());
    }

    #[test]
    fn old_logs_of_ended_sessions_go_and_the_rest_stay() {
        let dir = std::env::temp_dir().join(format!("tether-hostprune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["ended.log", "live.log", "live.json", "other.txt"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        prune(&dir, Duration::ZERO);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(left, ["live.json", "live.log", "other.txt"]);
    }
}
