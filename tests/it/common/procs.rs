//! Processes and waiting: deadlines, /proc, signals, watchdogs.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::WAIT;

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

pub(crate) fn is_tether_process(pid: u32) -> bool {
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
    require_program("sh", "dash");
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
