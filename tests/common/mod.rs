//! Shared helpers for tether's integration tests.
//!
//! Every test gets its own [`Home`]: a private `TETHER_HOME` in a temporary directory, so its
//! daemon and sessions are its own. Dropping the `Home` runs `tether remove --all` and
//! `tether daemon stop`, then makes sure no daemon or session host that the test caused is left
//! running (it kills leftovers by pid, after checking they are tether processes, and says so on
//! stderr).
//!
//! Commands run through [`run_command`], which never hangs: it has a deadline, and it notices when
//! tether exits but its stdout/stderr stay open (a daemon or session host that inherited the
//! caller's pipes), which would otherwise block a test forever.
//!
//! Waiting is always on a condition with a deadline ([`wait_until`]), never a fixed sleep.

#![allow(dead_code)]

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Default deadline for one tether command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for conditions the tests wait on.
pub const WAIT: Duration = Duration::from_secs(20);

/// The JSON fields every session object must have (SPEC §2), plus tether's extras.
pub const SESSION_FIELDS: &[&str] = &[
    "id",
    "name",
    "instance_id",
    "computer_name",
    "computer_type",
    "configuration_name",
    "state",
    "availability",
    "owner",
    "idle_timeout_s",
    "created_on",
    "disconnected_on",
    "expires_on",
    "reason",
    "host_pid",
];

/// Path of the tether binary under test.
pub fn tether_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("tether")
}

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

fn describe(cmd: &Command) -> String {
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

// ---------------------------------------------------------------------------------------------
// A private TETHER_HOME per test
// ---------------------------------------------------------------------------------------------

/// A private `TETHER_HOME`. Its Drop removes every session and stops the daemon.
pub struct Home {
    home: PathBuf,
    env: Vec<(String, String)>,
    /// Pids of daemons and session hosts seen by this test (checked again on drop).
    seen_pids: Mutex<Vec<u32>>,
    _tmp: Option<TempDir>,
}

impl Home {
    /// A fresh home at `<tmp>/home`; the directory itself is left for tether to create.
    pub fn new() -> Home {
        let tmp = temp_dir();
        let home = tmp.path().join("home");
        Home::with_tmp(tmp, home)
    }

    /// A fresh home whose commands all run with `TETHER_MIN_IDLE_TIMEOUT=1`.
    pub fn with_min_idle() -> Home {
        Home::new().env("TETHER_MIN_IDLE_TIMEOUT", "1")
    }

    /// A fresh home whose path is longer than a unix socket path may be (108 bytes).
    pub fn long() -> Home {
        let tmp = temp_dir();
        let home = tmp
            .path()
            .join("a-rather-long-directory-name-".repeat(3))
            .join("and-another-one-to-pass-the-sun_path-limit-".repeat(2))
            .join("home");
        assert!(home.as_os_str().len() > 120, "{home:?} should be long");
        Home::with_tmp(tmp, home)
    }

    /// A home at a path chosen by the test (the caller keeps the directory alive longer than
    /// this `Home`).
    pub fn at(path: PathBuf) -> Home {
        Home {
            home: path,
            env: Vec::new(),
            seen_pids: Mutex::new(Vec::new()),
            _tmp: None,
        }
    }

    fn with_tmp(tmp: TempDir, home: PathBuf) -> Home {
        Home {
            home,
            env: Vec::new(),
            seen_pids: Mutex::new(Vec::new()),
            _tmp: Some(tmp),
        }
    }

    /// Adds an environment variable to every command this home runs.
    pub fn env(mut self, k: &str, v: &str) -> Home {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn path(&self) -> &Path {
        &self.home
    }
    pub fn pid_file(&self) -> PathBuf {
        self.home.join("daemon.pid")
    }
    pub fn socket(&self) -> PathBuf {
        self.home.join("daemon.sock")
    }

    /// A scratch directory next to the home (not inside it), private to this test.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.home.parent().unwrap().join("scratch");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `tether` with this home's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(tether_bin());
        c.env_remove("TETHER_MIN_IDLE_TIMEOUT");
        c.env("TETHER_HOME", &self.home);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// `tether ARGS…` as an assert_cmd command (stdin: none given).
    pub fn assert_cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::from_std(self.command());
        c.args(args).timeout(CMD_TIMEOUT);
        c
    }

    /// Runs `tether ARGS…` with stdin /dev/null.
    pub fn run(&self, args: &[&str]) -> Out {
        let mut c = self.command();
        c.args(args);
        run_command(c, None, CMD_TIMEOUT)
    }

    /// Runs `tether ARGS…` with extra environment variables.
    pub fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut c = self.command();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run_command(c, None, CMD_TIMEOUT)
    }

    /// Runs `tether ARGS…` with `input` on a pipe as stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        let mut c = self.command();
        c.args(args);
        run_command(c, Some(input.to_vec()), CMD_TIMEOUT)
    }

    /// `tether invoke -s SESSION -- SCRIPT`.
    pub fn invoke(&self, session: &str, script: &str) -> Out {
        self.run(&["invoke", "-s", session, "--", script])
    }

    /// `tether invoke -s SESSION --arg A… -- SCRIPT`.
    pub fn invoke_args(&self, session: &str, script: &str, args: &[&str]) -> Out {
        let mut v = vec!["invoke", "-s", session];
        for a in args {
            v.push("--arg");
            v.push(a);
        }
        v.push("--");
        v.push(script);
        self.run(&v)
    }

    /// `tether new --name NAME --json EXTRA…`, asserted to succeed; returns the session object.
    #[track_caller]
    pub fn new_session(&self, name: &str, extra: &[&str]) -> Value {
        let mut v = vec!["new", "--name", name, "--json"];
        v.extend_from_slice(extra);
        let out = self.run(&v).success();
        let s = single_session(&out);
        assert_eq!(s["name"], name, "new returned another session:\n{out}");
        s
    }

    /// `tether get --json`, asserted to succeed and to be an array.
    #[track_caller]
    pub fn sessions(&self) -> Vec<Value> {
        let out = self.run(&["get", "--json"]).success();
        let v = out.json();
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("get --json must print an array:\n{out}"))
            .clone();
        for s in &list {
            self.note_session(s);
        }
        list
    }

    pub fn find_session(&self, name: &str) -> Option<Value> {
        self.sessions().into_iter().find(|s| s["name"] == name)
    }

    /// The session named `name` from `get --json`; panics when it is not listed.
    #[track_caller]
    pub fn session(&self, name: &str) -> Value {
        let all = self.sessions();
        all.iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("session {name} not listed by get --json: {all:#?}"))
    }

    /// State of session `name` (`None` when it is not listed).
    pub fn state_of(&self, name: &str) -> Option<String> {
        self.find_session(name)
            .map(|s| s["state"].as_str().unwrap_or("").to_owned())
    }

    /// Remembers a session's host pid so Drop can check it is gone.
    pub fn note_session(&self, s: &Value) {
        if let Some(p) = s["host_pid"].as_u64() {
            self.note_pid(p as u32);
        }
    }

    pub fn note_pid(&self, pid: u32) {
        if pid > 1 {
            let mut seen = self.seen_pids.lock().unwrap();
            if !seen.contains(&pid) {
                seen.push(pid);
            }
        }
    }

    /// The daemon's pid from `$TETHER_HOME/daemon.pid`, if that names a live process.
    pub fn daemon_pid(&self) -> Option<u32> {
        let pid = read_pid(&self.pid_file())?;
        self.note_pid(pid);
        pid_alive(pid).then_some(pid)
    }

    /// The daemon's pid; panics when it is not running.
    #[track_caller]
    pub fn running_daemon_pid(&self) -> u32 {
        self.daemon_pid().unwrap_or_else(|| {
            panic!(
                "no live daemon pid in {:?} (content: {:?})",
                self.pid_file(),
                fs::read_to_string(self.pid_file()).ok()
            )
        })
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Some(p) = read_pid(&self.pid_file()) {
            self.note_pid(p);
        }
        for args in [&["remove", "--all"][..], &["daemon", "stop"][..]] {
            let mut c = self.command();
            c.args(args);
            if let Err(e) = try_run_command(c, None, Duration::from_secs(30)) {
                eprintln!("cleanup: {e}");
            }
        }
        // Anything this test saw that is still a live tether process is a leftover.
        let seen = self.seen_pids.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        for pid in seen {
            while is_tether_process(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if is_tether_process(pid) {
                eprintln!(
                    "cleanup: tether process {pid} ({}) outlived remove --all + daemon stop; killing it",
                    cmdline(pid)
                );
                let _ = send_signal(pid, "KILL");
            }
        }
    }
}

pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("tether-test-")
        .tempdir()
        .expect("create temp dir")
}

/// The single session object printed by `new --json` (an array of one, or a bare object).
#[track_caller]
pub fn single_session(out: &Out) -> Value {
    match out.json() {
        Value::Array(mut a) => {
            assert_eq!(a.len(), 1, "new --json should print one session:\n{out}");
            a.remove(0)
        }
        v @ Value::Object(_) => v,
        _ => panic!("new --json printed neither an array nor an object:\n{out}"),
    }
}

/// Names of the sessions in a `get --json` list, sorted.
pub fn names(list: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    v.sort();
    v
}

#[track_caller]
pub fn host_pid(s: &Value) -> u32 {
    let p = s["host_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("host_pid missing or not a number: {s}"));
    assert!(p > 1, "host_pid should be a real pid: {s}");
    p as u32
}

// ---------------------------------------------------------------------------------------------
// Processes and waiting
// ---------------------------------------------------------------------------------------------

/// Polls `cond` until it holds; panics with `what` when `timeout` passes first.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            !matches!(
                state.and_then(|r| r.chars().next()),
                Some('Z') | Some('X') | None
            )
        }
        Err(_) => false,
    }
}

#[track_caller]
pub fn wait_gone(pid: u32, what: &str) {
    wait_until(WAIT, &format!("{what} (pid {pid}) has ended"), || {
        !pid_alive(pid)
    });
}

pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn is_tether_process(pid: u32) -> bool {
    pid_alive(pid) && cmdline(pid).contains("tether")
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
pub fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// A `Key:` value in kB from /proc/PID/status (e.g. "VmHWM").
pub fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(&format!("{key}:")))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes written so far by `pid` (the `wchar` line of /proc/PID/io).
pub fn wchar(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find(|l| l.starts_with("wchar:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends signal `sig` (a name such as "INT") to `pid`, a process this test started.
pub fn send_signal(pid: u32, sig: &str) -> bool {
    Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until a pid file written by a test script exists, then returns the pid in it.
#[track_caller]
pub fn wait_pid_file(path: &Path) -> u32 {
    let mut pid = None;
    wait_until(WAIT, &format!("{path:?} holds a pid"), || {
        pid = read_pid(path);
        pid.is_some()
    });
    pid.unwrap()
}

/// A shell snippet that writes its own pid atomically to the file "$N" then becomes `cmd`.
/// Use inside scripts run with `--arg FILE`.
pub fn pid_then_exec(arg: usize, cmd: &str) -> String {
    format!(r#"sh -c 'echo $$ > "$1.t" && mv "$1.t" "$1" && exec {cmd}' sh "${arg}""#)
}

/// Fails with a clear message naming the Debian package when `prog` is not installed.
#[track_caller]
pub fn require_program(prog: &str, debian_package: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|d| d.join(prog).is_file());
    assert!(
        found,
        "this test needs `{prog}`: install the Debian package `{debian_package}` (apt-get install {debian_package})"
    );
}

/// Our own uid, from /proc/self/status.
pub fn my_uid() -> u32 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap()
}

/// Spawns `tether ARGS…` in the background (stdin null, stdout/stderr to files in `dir`), for
/// tests that signal it or run something beside it.
pub struct Background {
    pub child: std::process::Child,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub desc: String,
}

impl Home {
    pub fn spawn(&self, args: &[&str], tag: &str) -> Background {
        let dir = self.scratch();
        let stdout_path = dir.join(format!("{tag}.stdout"));
        let stderr_path = dir.join(format!("{tag}.stderr"));
        let mut c = self.command();
        c.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap());
        let desc = describe(&c);
        let child = c.spawn().expect("spawn tether");
        Background {
            child,
            stdout_path,
            stderr_path,
            desc,
        }
    }
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Waits (with a deadline) for the process to exit; kills it and panics on timeout.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> Out {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not finish within {timeout:?}; stderr: {:?}",
                    self.desc,
                    fs::read_to_string(&self.stderr_path).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        Out {
            desc: self.desc.clone(),
            output: Output {
                status,
                stdout: fs::read(&self.stdout_path).unwrap_or_default(),
                stderr: fs::read(&self.stderr_path).unwrap_or_default(),
            },
            elapsed: start.elapsed(),
        }
    }
    pub fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills a child process this test started if it is still running after `timeout`, so that a
/// blocking read or write on its pipes cannot hang the test forever. Disarmed on drop.
pub struct Watchdog {
    _disarm: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub fn new(pid: u32, timeout: Duration) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                eprintln!("watchdog: process {pid} still running after {timeout:?}; killing it");
                send_signal(pid, "KILL");
            }
        });
        Watchdog { _disarm: tx }
    }
}
