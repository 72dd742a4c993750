//! The per-user daemon: start/stop/status, start on demand, privacy of its files and socket,
//! long `TETHER_HOME` paths, stale files, and adoption of sessions after `kill -9`
//! (issue 2 points 2-3; SPEC §3.15, §4).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;
use serde_json::Value;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{p:?}: {e}"))
        .mode()
        & 0o7777
}

#[test]
fn start_status_stop_cycle() {
    let home = Home::new();
    home.run(&["daemon", "status"]).failure();
    assert_eq!(home.daemon_pid(), None, "status must not start a daemon");

    home.run(&["daemon", "start"]).success();
    let pid = home.running_daemon_pid();
    let out = home.run(&["daemon", "status"]).success();
    assert!(
        out.out().to_lowercase().contains("pid") && out.out().contains(&pid.to_string()),
        "status should show the daemon's pid {pid}:\n{out}"
    );

    home.run(&["daemon", "start"]).success();
    assert_eq!(home.daemon_pid(), Some(pid), "start is idempotent");

    home.run(&["daemon", "stop"]).success();
    wait_gone(pid, "the stopped daemon");
    home.run(&["daemon", "status"]).failure();
    home.run(&["daemon", "stop"]).success();
}

#[test]
fn any_command_starts_the_daemon_which_outlives_it_in_its_own_session() {
    let home = Home::new();
    assert!(!home.path().exists());
    home.run(&["get", "--json"])
        .success()
        .assert()
        .stdout(predicates::str::is_match(r"^\s*\[\s*\]\s*$").unwrap());
    let pid = home.running_daemon_pid();
    assert!(
        fs::symlink_metadata(home.socket())
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false),
        "{:?} should be the daemon's socket",
        home.socket()
    );
    // Double-forked and setsid: not in our session, and alive after the CLI has exited.
    let our_sid = stat_field(std::process::id(), 6).unwrap();
    let its_sid = stat_field(pid, 6).unwrap();
    assert_ne!(our_sid, its_sid, "the daemon should run in its own session");
    home.new_session("s", &[]);
    assert_eq!(
        home.daemon_pid(),
        Some(pid),
        "the same daemon serves later calls"
    );
}

#[test]
fn home_socket_and_session_files_are_private() {
    let home = Home::new();
    home.new_session("priv", &[]);
    home.invoke("priv", "echo hi").success();
    assert_eq!(mode(home.path()), 0o700, "TETHER_HOME must be 0700");
    let sock = home.socket();
    assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(
        mode(&sock) & 0o002,
        0,
        "others must not be able to connect to {sock:?}"
    );
    let hosts = home.path().join("hosts");
    assert!(hosts.is_dir(), "session host metadata lives in {hosts:?}");
    // Everything under TETHER_HOME is private to the user (SPEC §4: 0700/0600).
    let mut exposed = Vec::new();
    let mut stack = vec![home.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let ft = fs::symlink_metadata(&p).unwrap().file_type();
            let m = mode(&p);
            // Sockets need only be closed to others; everything else to group and others.
            let mask = if ft.is_socket() { 0o002 } else { 0o077 };
            if m & mask != 0 {
                exposed.push(format!("{m:o} {}", p.display()));
            }
            if ft.is_dir() {
                stack.push(p);
            }
        }
    }
    assert!(
        exposed.is_empty(),
        "not private to the user:\n{}",
        exposed.join("\n")
    );
}

#[test]
fn another_user_cannot_use_the_daemon() {
    let home = Home::new();
    home.new_session("secret", &[]);
    if my_uid() != 0 {
        // Only root can switch users; the file modes are checked by the test above.
        assert_eq!(mode(home.path()) & 0o077, 0);
        return;
    }
    require_program("setpriv", "util-linux");
    // Open the file-system path so only the daemon's own peer check (SO_PEERCRED) stands in
    // the way of user `nobody`.
    let parent = home.path().parent().unwrap();
    for dir in [parent, home.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).unwrap();
    }
    fs::set_permissions(home.socket(), fs::Permissions::from_mode(0o777)).unwrap();
    let probe = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(tether_bin())
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        probe.success(),
        "user nobody cannot run {:?}; put the target directory somewhere world-readable",
        tether_bin()
    );
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(tether_bin())
        .args(["get", "--json"])
        .env("TETHER_HOME", home.path())
        .env("HOME", "/nonexistent");
    let out = run_command(c, None, CMD_TIMEOUT);
    assert!(
        !out.status().success() && !out.out().contains("secret"),
        "another user must be refused by the daemon:\n{out}"
    );
    for dir in [parent, home.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    }
    home.invoke("secret", "echo still-mine")
        .success()
        .stdout_is("still-mine\n");
}

#[test]
fn sessions_survive_kill_9_of_the_daemon_and_are_adopted() {
    let home = Home::new();
    let s = home.new_session("survivor", &[]);
    home.invoke("survivor", "v=alive; cd /").success();
    let old = home.running_daemon_pid();
    assert!(send_signal(old, "KILL"));
    wait_gone(old, "the killed daemon");
    assert!(
        pid_alive(host_pid(&s)),
        "the session host outlives the daemon"
    );

    let listed = home.session("survivor");
    let new = home.running_daemon_pid();
    assert_ne!(new, old, "a new daemon was started");
    assert_eq!(listed["state"], "Opened", "{listed:#}");
    assert_eq!(listed["instance_id"], s["instance_id"]);
    assert_eq!(listed["id"], s["id"]);
    assert_eq!(listed["host_pid"], s["host_pid"]);
    home.invoke("survivor", "echo \"$v$PWD\"")
        .success()
        .stdout_is("alive/\n");
    // Ids are not handed out twice.
    let next = home.new_session("next", &[]);
    assert_ne!(next["id"], s["id"], "{next:#}");
}

#[test]
fn stale_socket_and_pid_file_from_a_killed_daemon_do_not_block_start() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    let old = home.running_daemon_pid();
    assert!(send_signal(old, "KILL"));
    wait_gone(old, "the killed daemon");
    assert!(
        home.pid_file().exists() && home.socket().exists(),
        "stale files left"
    );

    home.run(&["daemon", "status"]).failure();
    home.run(&["daemon", "start"]).success();
    let new = home.running_daemon_pid();
    assert_ne!(new, old);
    home.run(&["daemon", "status"]).success();
    home.new_session("after", &[]);
    home.invoke("after", "echo ok").success().stdout_is("ok\n");
}

#[test]
fn stale_files_naming_an_unrelated_live_process_are_not_trusted() {
    let home = Home::new();
    fs::create_dir_all(home.path()).unwrap();
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).unwrap();
    // A socket nobody listens on, and a pid file naming a live process that is not tether.
    drop(UnixListener::bind(home.socket()).unwrap());
    let mut bystander = Bystander(
        Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    fs::write(home.pid_file(), format!("{}\n", bystander.0.id())).unwrap();

    home.run(&["get", "--json"]).success();
    home.new_session("s", &[]);
    let pid = home.running_daemon_pid();
    assert_ne!(pid, bystander.0.id());
    home.run(&["daemon", "stop"]).success();
    wait_gone(pid, "the stopped daemon");
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "tether must not signal a process it did not start"
    );
}

/// A process the test started; killed when the test ends, whatever happens.
struct Bystander(std::process::Child);

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_long_tether_home_works() {
    let home = Home::long();
    assert!(home.socket().as_os_str().len() > 108);
    home.new_session("longhome", &[]);
    home.invoke("longhome", "v=1").success();
    home.run(&["daemon", "status"]).success();
    let old = home.running_daemon_pid();
    assert!(send_signal(old, "KILL"));
    wait_gone(old, "the killed daemon");
    // The session goes on without its daemon (a call by name goes straight to its host)...
    home.invoke("longhome", "echo \"v=$v\"")
        .success()
        .stdout_is("v=1\n");
    // ...and the stale (fallback) socket does not block the next daemon.
    home.run(&["get"]).success();
    assert_ne!(home.running_daemon_pid(), old);
    home.run(&["daemon", "stop"]).success();
    home.run(&["daemon", "status"]).failure();
}

#[test]
fn long_homes_with_a_common_prefix_are_independent() {
    let tmp = temp_dir();
    let prefix = tmp.path().join("p".repeat(120));
    let a = Home::at(prefix.join("a"));
    let b = Home::at(prefix.join("b"));
    a.new_session("only-a", &[]);
    assert_eq!(
        b.sessions(),
        Vec::<Value>::new(),
        "b must not see a's sessions"
    );
    b.new_session("only-b", &[]);
    assert_eq!(names(&a.sessions()), ["only-a"]);
    assert_eq!(names(&b.sessions()), ["only-b"]);
    assert_ne!(a.running_daemon_pid(), b.running_daemon_pid());
    a.run(&["daemon", "stop"]).success();
    b.invoke("only-b", "echo b").success().stdout_is("b\n");
}

#[test]
fn concurrent_first_calls_share_one_daemon() {
    let home = Home::new();
    let outs: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| s.spawn(|| home.run(&["new", "--json"])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids: Vec<u64> = outs
        .into_iter()
        .map(|o| single_session(&o.success())["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "ids are unique");
    assert_eq!(
        home.sessions().len(),
        6,
        "one daemon holds all six sessions"
    );
    let pid = home.running_daemon_pid();
    home.run(&["daemon", "status"])
        .success()
        .assert()
        .stdout(predicates::str::contains(pid.to_string()));
}

/// A daemon and session hosts whose `TETHER_HOME` is deleted cannot be reached any more: they
/// notice (their socket is gone) and exit instead of lingering forever.
#[test]
fn deleting_the_home_ends_its_daemon_and_idle_sessions() {
    let home = Home::new();
    let s = home.new_session("doomed", &[]);
    let host = host_pid(&s);
    let daemon = home.running_daemon_pid();
    std::fs::remove_dir_all(home.path()).unwrap();
    wait_gone(daemon, "the daemon of a deleted home");
    wait_gone(host, "the session host of a deleted home");
}
