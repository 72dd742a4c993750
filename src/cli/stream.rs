//! How `invoke` puts output on the screen: raw bytes for one target, prefixed lines or JSON
//! lines for several, and a progress bar on a terminal's stderr while a fan-out runs.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::sync::OnceLock;
use tether_client::Stream;

/// The fan-out progress bar, when one is shown; output is written around it.
static PROGRESS: OnceLock<ProgressBar> = OnceLock::new();

/// Writes straight to fd 1/2: output is already chunked, and std's line buffering would only
/// add copies. A closed stdout (e.g. `| head`) is not an error; we keep draining to the exit.
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
        let _ = file.write_all(data);
    };
    match PROGRESS.get() {
        Some(pb) => pb.suspend(write),
        None => write(),
    }
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
