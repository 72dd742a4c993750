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

pub mod mux;
pub mod netns;
pub mod previous;
mod procs;
pub mod rng;
mod run;
pub mod sshd;
pub mod system;
pub mod tmux;

pub use procs::*;
pub use run::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
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
    "held_by",
];

/// Path of the tether binary under test.
pub fn tether_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("tether")
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

    /// Writes configuration `name` into this home's configuration directory.
    pub fn configuration(&self, name: &str, text: &str) {
        let dir = self.path().join("configurations");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("{name}.toml")), text).unwrap();
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
        self.command_with(&tether_bin())
    }

    /// Another tether program (another release's) with this home's environment.
    pub fn command_with(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_remove("TETHER_MIN_IDLE_TIMEOUT");
        c.env("TETHER_HOME", &self.home);
        for (k, v) in &self.env {
            c.env(k, v);
        }
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

/// A `tether` command running in the background (stdin null, stdout/stderr to files), for
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
