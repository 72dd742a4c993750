//! How `invoke` puts output on the screen: raw bytes for one target, prefixed lines or JSON
//! lines for several, and a progress bar on a terminal's stderr while a fan-out runs.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::sync::OnceLock;
use tether_client::Stream;

/// The fan-out progress bar, when one is shown; output is written around it.
static PROGRESS: OnceLock<ProgressBar> = OnceLock::new();

/// Set once our stdout is a pipe nobody reads any more (`| head`): the command's output has
/// nowhere to go, and we leave as `ssh host cmd | head` does.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether our stdout's reader has gone (a write failed with EPIPE).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes straight to fd 1/2: output is already chunked, and std's line buffering would only
/// add copies. A closed stdout (e.g. `| head`) is recorded ([`stdout_closed`]): the caller
/// stops the command and leaves. A closed stderr is ignored.
pub fn write_fd(stream: Stream, data: &[u8]) {
    use std::os::fd::FromRawFd;
    let fd = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    let write = || {
        // SAFETY: fds 1 and 2 stay open for the life of the process; ManuallyDrop never
        // closes them.
        let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        if let Err(e) = file.write_all(data)
            && fd == 1
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    };
    match PROGRESS.get() {
        Some(pb) => pb.suspend(write),
        None => write(),
    }
}

/// A duplicate of our stdout when it is a pipe (what `splice` can move a command's output
/// into, [`tether_client::Invocation::splice_stdout`]); `None` for a terminal, a file or
/// while a progress bar shares the screen.
pub fn stdout_pipe() -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileTypeExt;
    if PROGRESS.get().is_some() {
        return None;
    }
    let dup = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    let file = std::fs::File::from(dup);
    if !file.metadata().ok()?.file_type().is_fifo() {
        return None;
    }
    Some(file.into())
}

/// Writes to our stdout for [`out!`] and [`outln!`]. Its reader may have gone (`| head -1`,
/// `| grep -q`), and std's `print!` would panic then: like a process that SIGPIPE ends, the
/// command ends at once with status 141, saying nothing. Other errors are ignored, as `echo`
/// ignores them.
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(141);
    }
}

/// Writes to our stderr for [`err!`] and [`errln!`]. A stderr nobody reads any more
/// (`2>&1 | head`) loses the message, but never the command's status: std's `eprint!` would
/// panic there and turn every error's status into 101.
pub fn err(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// One line of `--json` output.
pub fn json_line(value: serde_json::Value) {
    let mut line = value.to_string();
    line.push('\n');
    write_fd(Stream::Stdout, line.as_bytes());
}

/// One line of tether's own on stderr (errors of one target among several).
pub fn note(msg: &str) {
    write_fd(Stream::Stderr, format!("tether: {msg}\n").as_bytes());
}

pub fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

/// Shows done/failed/total on stderr when it is a terminal.
pub struct Progress {
    bar: Option<&'static ProgressBar>,
    failed: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub fn start(total: usize, wanted: bool) -> Progress {
        use std::io::IsTerminal;
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let pb = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template("{bar:30} {pos}/{len} done, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_message("0 failed");
            PROGRESS.get_or_init(|| pb)
        });
        Progress {
            bar,
            failed: Default::default(),
        }
    }

    pub fn finished(&self, ok: bool) {
        use std::sync::atomic::Ordering;
        let failed = if ok {
            self.failed.load(Ordering::Relaxed)
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed) + 1
        };
        if let Some(pb) = self.bar {
            pb.set_message(format!("{failed} failed"));
            pb.inc(1);
        }
    }

    pub fn done(&self) {
        if let Some(pb) = self.bar {
            pb.finish_and_clear();
        }
    }
}

/// Splits output into lines and prefixes each with the target's label.
pub struct Prefixer {
    prefix: Vec<u8>,
    partial: [Vec<u8>; 2],
}

impl Prefixer {
    pub fn new(prefix: Vec<u8>) -> Prefixer {
        Prefixer {
            prefix,
            partial: [Vec::new(), Vec::new()],
        }
    }

    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        let i = stream as usize;
        self.partial[i].extend_from_slice(data);
        if let Some(last_nl) = self.partial[i].iter().rposition(|b| *b == b'\n') {
            let rest = self.partial[i].split_off(last_nl + 1);
            let lines = std::mem::replace(&mut self.partial[i], rest);
            let mut out = Vec::with_capacity(lines.len() + 32);
            for line in lines.split_inclusive(|b| *b == b'\n') {
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(line);
            }
            write_fd(stream, &out);
        }
    }

    pub fn finish(&mut self) {
        for (i, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if !self.partial[i].is_empty() {
                let mut out = self.prefix.clone();
                out.append(&mut self.partial[i]);
                out.push(b'\n');
                write_fd(stream, &out);
            }
        }
    }
}

/// True for the daemon's notices that a broken connection is being retried (`relay.rs`).
fn is_reconnecting(notice: &str) -> bool {
    notice.contains("interrupted; reconnecting")
}

/// Notices about the connection during one streamed invocation. Piped, each is a line on
/// stderr, as always. On a terminal the retries (one a second, for up to 4 minutes) become one
/// spinner line that counts down, cleared as soon as the stream resumes or ends.
#[derive(Default)]
pub struct Notices {
    spinner: Option<ProgressBar>,
}

impl Notices {
    pub fn show(&mut self, notice: &str) {
        use std::io::IsTerminal;
        if is_reconnecting(notice) && std::io::stderr().is_terminal() {
            let pb = self.spinner.get_or_insert_with(|| {
                let pb = ProgressBar::new_spinner();
                pb.enable_steady_tick(std::time::Duration::from_millis(120));
                pb
            });
            pb.set_message(format!("tether: {notice}"));
            return;
        }
        self.clear();
        note(notice);
    }

    /// Removes the spinner, if any, before output or the end is written.
    pub fn clear(&mut self) {
        if let Some(pb) = self.spinner.take() {
            pb.finish_and_clear();
        }
    }
}

/// An error return must not leave a spinner line behind.
impl Drop for Notices {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A spinner on a terminal's stderr while something that may take a while (reaching another
/// computer, perhaps copying tether there; waiting for a busy session) has not answered yet.
/// It appears only after `delay`, so fast calls never flicker, and it is gone when dropped.
pub struct Waiting {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: std::sync::Arc<OnceLock<ProgressBar>>,
}

impl Waiting {
    pub fn start(message: String, delay: std::time::Duration) -> Waiting {
        use std::io::IsTerminal;
        let bar = std::sync::Arc::new(OnceLock::new());
        if !std::io::stderr().is_terminal() {
            return Waiting { task: None, bar };
        }
        let slot = bar.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let pb = ProgressBar::new_spinner();
            pb.set_message(message);
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
            let _ = slot.set(pb);
        });
        Waiting {
            task: Some(task),
            bar,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(pb) = self.bar.get() {
            pb.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_reconnecting;

    #[test]
    fn only_retry_notices_become_the_spinner() {
        assert!(is_reconnecting(
            "network connection to db1 interrupted; reconnecting (240s left)…"
        ));
        assert!(!is_reconnecting("network connection to db1 restored"));
        assert!(!is_reconnecting(
            "computer db1: 12 bytes of standard input were lost while reconnecting"
        ));
    }
}
