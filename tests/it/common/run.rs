//! Running commands with a deadline, and their results.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// The result of one command: its output plus a description for failure messages.
pub struct Out {
    pub desc: String,
    pub output: Output,
    pub elapsed: Duration,
}

impl Out {
    pub fn status(&self) -> ExitStatus {
        self.output.status
    }
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn stdout(&self) -> &[u8] {
        &self.output.stdout
    }
    pub fn stderr(&self) -> &[u8] {
        &self.output.stderr
    }
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Non-empty stderr lines.
    pub fn err_lines(&self) -> Vec<String> {
        self.err()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// assert_cmd's assertion API on this output.
    pub fn assert(&self) -> assert_cmd::assert::Assert {
        use assert_cmd::assert::OutputAssertExt;
        self.output.clone().assert()
    }

    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.output.status.success(), "expected success:\n{self}");
        self
    }
    #[track_caller]
    pub fn failure(self) -> Self {
        assert!(!self.output.status.success(), "expected failure:\n{self}");
        self
    }
    #[track_caller]
    pub fn code_is(self, code: i32) -> Self {
        assert_eq!(self.code(), Some(code), "wrong exit status:\n{self}");
        self
    }
    #[track_caller]
    pub fn stdout_is(self, expected: &str) -> Self {
        assert_eq!(self.out(), expected, "wrong stdout:\n{self}");
        self
    }
    #[track_caller]
    pub fn stderr_is(self, expected: &str) -> Self {
        assert_eq!(self.err(), expected, "wrong stderr:\n{self}");
        self
    }

    /// A tether error: one clear line (at most `max_lines`), naming `what`, no panic or backtrace.
    #[track_caller]
    pub fn clear_error(self, what: &str, max_lines: usize) -> Self {
        let lines = self.err_lines();
        assert!(
            !lines.is_empty() && lines.len() <= max_lines,
            "expected 1..={max_lines} error line(s) on stderr:\n{self}"
        );
        assert!(
            self.err().contains(what),
            "stderr should name {what:?}:\n{self}"
        );
        let lower = self.err().to_lowercase();
        assert!(
            !lower.contains("panicked") && !lower.contains("backtrace"),
            "error must not be a panic/backtrace:\n{self}"
        );
        self
    }

    /// Parses stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }

    /// Parses stdout as JSON lines (for `invoke --json`).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.out()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}):\n{self}"))
            })
            .collect()
    }
}

fn clip(bytes: &[u8]) -> String {
    const MAX: usize = 3000;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{s}… ({} bytes in all)", bytes.len())
    } else {
        s
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = &self.output.status;
        let status = match (st.code(), st.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown".into(),
        };
        writeln!(f, "  command: {}", self.desc)?;
        writeln!(f, "  status:  {status} after {:?}", self.elapsed)?;
        writeln!(f, "  stdout:  {:?}", clip(&self.output.stdout))?;
        write!(f, "  stderr:  {:?}", clip(&self.output.stderr))
    }
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs `cmd` with `stdin` (None = /dev/null) and a deadline. Panics (after killing the child)
/// when the deadline passes, or when the child exits but something else keeps its pipes open.
pub fn run_command(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Out {
    try_run_command(cmd, stdin, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`run_command`], but returns the problem instead of panicking.
pub fn try_run_command(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Out, String> {
    let desc = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {desc}: {e}"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Errors (EPIPE when the command does not read everything) are fine.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = Collector::start(child.stdout.take().unwrap());
    let err = Collector::start(child.stderr.take().unwrap());
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {timeout:?}: {desc}\n  stdout so far: {:?}\n  stderr so far: {:?}",
                    clip(&out.take()),
                    clip(&err.take())
                ));
            }
            Err(e) => return Err(format!("waiting for {desc}: {e}")),
        }
    };
    let elapsed = start.elapsed();
    // After exit, the pipes must reach EOF promptly: nobody else may hold them.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while !(out.done() && err.done()) {
        if Instant::now() > drain_deadline {
            return Err(format!(
                "{desc} exited ({status}) but its stdout/stderr stayed open for 10 s: a daemon or \
                 session process inherited the caller's pipes\n  stdout: {:?}\n  stderr: {:?}",
                clip(&out.take()),
                clip(&err.take())
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
    Ok(Out {
        desc,
        output: Output {
            status,
            stdout: out.take(),
            stderr: err.take(),
        },
        elapsed,
    })
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        let k = k.to_string_lossy();
        if let (true, Some(v)) = (k != "TETHER_HOME", v) {
            s += &format!("{k}={} ", v.to_string_lossy());
        }
    }
    s += &Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    for a in cmd.get_args() {
        s += &format!(" {:?}", a.to_string_lossy());
    }
    s
}

/// Reads a pipe to EOF on a thread, keeping what it got so far readable.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
}

impl Collector {
    fn start<R: Read + Send + 'static>(mut r: R) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (b, d) = (buf.clone(), done.clone());
        thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
            d.store(true, Ordering::SeqCst);
        });
        Collector { buf, done }
    }
    fn done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap())
    }
}

/// What a stream read on a thread of its own has given so far ([`Gathered::start`]).
pub struct Gathered {
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Gathered {
    /// Reads `from` to its end on a thread.
    pub fn start(mut from: impl std::io::Read + Send + 'static) -> Gathered {
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(k) = from.read(&mut buf) {
                if k == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..k]);
            }
        });
        Gathered { bytes, thread }
    }

    /// Lines (newlines) read so far.
    pub fn lines(&self) -> usize {
        self.bytes
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    /// Everything, once the stream has ended.
    pub fn finish(self) -> Vec<u8> {
        self.thread.join().unwrap();
        std::mem::take(&mut *self.bytes.lock().unwrap())
    }
}
