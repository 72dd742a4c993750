//! Upgrading tether never strands running sessions (issue 19; SPEC §3.15): `tether daemon
//! restart` replaces the running daemon, of this release or of the previous one, and the new
//! daemon adopts every session; a client that meets a daemon of an older protocol replaces it
//! by itself, once, and says so; a newer one is a clear error.
//!
//! The first test builds the previous commit's tether from git (`common::previous`; minutes on
//! a cold target directory, then cached). The others play a daemon of another protocol with
//! a fake one: this test binary run again as a process of its own that answers every `Hello`
//! with the refusal line of an old release, so that retiring it signals that process.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::previous::previous_tether;
use crate::common::*;
use serde_json::Value;
use tether_proto::{ErrorInfo, ErrorKind, PROTOCOL_VERSION, Response};

const SIGUSR2: i32 = 12;

/// Runs `tether ARGS…` of another release (`bin`) with this home's environment.
fn run_with(home: &Home, bin: &Path, args: &[&str]) -> Out {
    run_command(older(home, bin, args), None, CMD_TIMEOUT)
}

fn older(home: &Home, bin: &Path, args: &[&str]) -> Command {
    let mut c = home.command_with(bin);
    // Whatever the caller's environment says, the old CLI starts its own daemon, which starts
    // its own hosts.
    c.env_remove("TETHER_EXE").env_remove("TETHER_HOST_EXE");
    c.args(args);
    c
}

fn by_name<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("session {name} not listed: {list:#?}"))
}

fn touch(p: &Path) {
    fs::write(p, b"").unwrap();
}

#[test]
fn a_new_daemon_adopts_the_sessions_of_the_previous_releases_daemon() {
    let prev = previous_tether();
    eprintln!("adopt: previous release is commit {}", prev.commit);
    let home = Home::new();
    let old = |args: &[&str]| run_with(&home, &prev.bin, args);
    let dir = home.scratch();
    let [started, go, said_one, end] = ["started", "go", "said-one", "end"].map(|f| dir.join(f));

    // The previous release: an idle session with state, and one whose command runs on with
    // nobody attached (its CLI killed), with output kept while we upgrade.
    old(&["new", "--name", "idle"]).success();
    old(&["invoke", "-s", "idle", "--", "x=41; cd /tmp"]).success();
    old(&["new", "--name", "busy"]).success();
    let wait_for = |f: &PathBuf| format!("while [ ! -e '{}' ]; do sleep 0.05; done", f.display());
    let script = format!(
        "touch '{}'; {}; echo one; touch '{}'; {}; echo two",
        started.display(),
        wait_for(&go),
        said_one.display(),
        wait_for(&end)
    );
    let mut cli = older(&home, &prev.bin, &["invoke", "-s", "busy", "--", &script]);
    let mut cli: Child = cli
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(WAIT, "the busy session's command to start", || {
        started.exists()
    });
    cli.kill().unwrap();
    cli.wait().unwrap();
    touch(&go);
    wait_until(WAIT, "the command to say one, unattached", || {
        said_one.exists()
    });

    let before = old(&["get", "--json"]).success().json();
    let before = before.as_array().unwrap().clone();
    for s in &before {
        home.note_session(s);
    }
    let (idle, busy) = (by_name(&before, "idle"), by_name(&before, "busy"));
    assert_eq!(idle["state"], "Opened", "{idle}");
    assert_eq!(busy["state"], "Disconnected", "its CLI is gone: {busy}");
    let hosts = [host_pid(idle), host_pid(busy)];
    let old_daemon = home.running_daemon_pid();

    // The upgrade.
    let out = home.run(&["daemon", "restart"]).success();
    assert!(
        out.out().contains(&format!("pid {old_daemon} exited")),
        "restart should name the old daemon:\n{out}"
    );
    assert!(!pid_alive(old_daemon), "the old daemon should be gone");
    let new_daemon = home.running_daemon_pid();
    assert_ne!(new_daemon, old_daemon);
    let after = home.sessions();
    for (name, pid) in [("idle", hosts[0]), ("busy", hosts[1])] {
        let s = by_name(&after, name);
        assert_eq!(host_pid(s), pid, "{name} keeps its host: {s}");
        let was = by_name(&before, name);
        for field in ["id", "instance_id", "state", "availability"] {
            assert_eq!(s[field], was[field], "{name}'s {field} after the upgrade");
        }
    }

    // The old hosts serve the new CLI: by name straight at the host, by id through the new
    // daemon's hand-off (whose `HandoffClient` frame an old host never reads), with stdin too.
    let id = by_name(&after, "idle")["id"].to_string();
    for session in ["idle", id.as_str()] {
        home.invoke(session, "echo $x $PWD")
            .success()
            .stdout_is("41 /tmp\n");
        home.run_stdin(&["invoke", "-s", session, "--", "cat; echo $x"], b"fed\n")
            .success()
            .stdout_is("fed\n41\n");
    }
    touch(&end);
    home.run(&["receive", "busy"])
        .success()
        .stdout_is("one\ntwo\n");
    home.invoke("busy", "echo $((1+1))")
        .success()
        .stdout_is("2\n");
    assert_eq!(home.daemon_pid(), Some(new_daemon));

    home.run(&["remove", "idle"]).success();
    home.run(&["remove", "busy"]).success();
    for pid in hosts {
        wait_gone(pid, "an old session's host after remove");
    }
}

#[test]
fn restart_replaces_a_daemon_of_this_release_and_touches_no_session() {
    let home = Home::new();
    let dir = home.scratch();
    let (started, end) = (dir.join("started"), dir.join("end"));
    home.new_session("idle", &[]);
    home.invoke("idle", "y=7").success();
    home.new_session("busy", &[]);
    let script = format!(
        "touch '{}'; echo one; while [ ! -e '{}' ]; do sleep 0.05; done; echo two",
        started.display(),
        end.display()
    );
    // A CLI attached to a running command all through the restart.
    let mut cli = home.spawn(&["invoke", "-s", "busy", "--", &script], "busy");
    wait_until(WAIT, "the command to start", || started.exists());
    let before = home.sessions();
    let old_daemon = home.running_daemon_pid();

    home.run(&["daemon", "restart"]).success();
    assert!(!pid_alive(old_daemon), "the old daemon should be gone");
    assert_ne!(home.running_daemon_pid(), old_daemon);
    // It caught the signal and retired, rather than dying of it as an older daemon does.
    let log = fs::read_to_string(home.path().join("daemon.log")).unwrap();
    assert!(log.contains("retire signal"), "daemon.log:\n{log}");
    let after = home.sessions();
    for name in ["idle", "busy"] {
        let (was, is) = (by_name(&before, name), by_name(&after, name));
        for field in ["host_pid", "state", "availability"] {
            assert_eq!(is[field], was[field], "{name}'s {field} after restart");
        }
    }
    home.invoke("idle", "echo $y").success().stdout_is("7\n");
    touch(&end);
    let out = cli.wait(WAIT).success();
    assert_eq!(out.out(), "one\ntwo\n", "{out}");

    // With no daemon running, restart starts one.
    home.run(&["daemon", "stop"]).success();
    let out = home.run(&["daemon", "restart"]).success();
    assert!(out.out().contains("not running"), "{out}");
    home.running_daemon_pid();
}

// ---------------------------------------------------------------------------------------------
// A daemon of another protocol, played by this test binary
// ---------------------------------------------------------------------------------------------

/// The fake daemon: a small python3 program (a process of its own, which the retire signal
/// may kill) that answers each connection's first frame as a daemon of another protocol
/// (tether 0.0.9) does, with the line such daemons have written since the first release, and
/// catches no signal.
const FAKE_DAEMON: &str = r#"
import os, socket, sys
home, frame = sys.argv[1], bytes.fromhex(sys.argv[2])
def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(home, "daemon.sock"))
s.listen(16)
with open(os.path.join(home, "daemon.pid.partial"), "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(os.path.join(home, "daemon.pid.partial"), os.path.join(home, "daemon.pid"))
while True:
    c, _ = s.accept()
    try:
        n = int.from_bytes(exact(c, 4), "big")
        exact(c, min(n, 1 << 20))
        c.sendall(frame)
    except Exception:
        pass
    c.close()
"#;

/// The fake daemon's process.
struct Fake {
    child: Child,
    pid: u32,
}

impl Fake {
    fn start(home: &Home, protocol: u32) -> Fake {
        fs::create_dir_all(home.path()).unwrap();
        fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let line = format!(
            "this tether daemon speaks protocol {protocol} (tether 0.0.9), the client speaks \
             {PROTOCOL_VERSION}: install the same tether version on both sides"
        );
        let refusal = Response::Error(ErrorInfo::new(ErrorKind::Connection, line));
        let frame: String = tether_proto::encode(&refusal)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let child = Command::new("python3")
            .args(["-c", FAKE_DAEMON])
            .arg(home.path())
            .arg(frame)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (package python3): {e}"));
        let pid = child.id();
        wait_until(WAIT, "the fake daemon to listen", || {
            read_pid(&home.pid_file()) == Some(pid)
        });
        Fake { child, pid }
    }

    /// How it ended, once it has (with a deadline).
    fn ended(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until(WAIT, "the fake daemon to end", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_client_replaces_an_older_daemon_once_and_says_so() {
    let older = PROTOCOL_VERSION - 1;
    let said = format!(
        "tether: replaced the running daemon (protocol {older}, tether 0.0.9) by this \
         release's; its sessions were kept\n"
    );
    // A control request, and an invocation (which has a path of its own).
    for args in [&["get", "--json"][..], &["invoke", "--", "echo hi"][..]] {
        let home = Home::new();
        let mut fake = Fake::start(&home, older);
        let out = home.run(args).success().stderr_is(&said);
        if args[0] == "invoke" {
            assert_eq!(out.out(), "hi\n", "{out}");
        }
        assert_eq!(
            fake.ended().signal(),
            Some(SIGUSR2),
            "the old daemon dies of the retire signal"
        );
        let daemon = home.running_daemon_pid();
        assert_ne!(daemon, fake.pid);
        // Once replaced, nothing more is said.
        home.run(&["get"]).success().stderr_is("");
        assert_eq!(home.daemon_pid(), Some(daemon));
    }
}

#[test]
fn daemon_restart_retires_an_older_daemon_that_knows_nothing_of_it() {
    let home = Home::new();
    let mut fake = Fake::start(&home, PROTOCOL_VERSION - 1);
    // `daemon status` replaces nothing, but says what to do.
    home.run(&["daemon", "status"])
        .code_is(5)
        .clear_error("tether daemon restart", 1);
    assert!(pid_alive(fake.pid), "status must not retire the daemon");
    let out = home.run(&["daemon", "restart"]).success();
    assert!(
        out.out().contains(&format!("pid {} exited", fake.pid)),
        "{out}"
    );
    assert_eq!(fake.ended().signal(), Some(SIGUSR2));
    assert_ne!(home.running_daemon_pid(), fake.pid);
}

#[test]
fn a_newer_daemon_is_a_clear_error_and_is_left_running() {
    let home = Home::new();
    let fake = Fake::start(&home, PROTOCOL_VERSION + 1);
    let out = home
        .run(&["get"])
        .code_is(5)
        .clear_error("is newer than this tether", 1);
    assert!(out.err().contains("tether 0.0.9"), "{out}");
    home.run(&["invoke", "--", "echo hi"])
        .code_is(5)
        .clear_error("is newer than this tether", 1);
    assert!(pid_alive(fake.pid), "a newer daemon is never retired");
    assert_eq!(read_pid(&home.pid_file()), Some(fake.pid));
}
