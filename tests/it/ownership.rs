//! Sessions belong to the Unix user whose daemon keeps them (SPEC §3.10). A second Unix user,
//! created here (the test runs as root), reaches the same computer through the same sshd and
//! sees none of the first user's sessions, and cannot reach the first user's daemon.

use crate::common::sshd::setup;
use crate::common::*;
use std::path::PathBuf;
use std::process::Command;

/// A throw-away Unix user with a home in /tmp, removed (with every process it still has) on
/// drop. Its password field is `*`: no password login, but not "locked" for sshd.
struct TestUser {
    name: String,
    home: PathBuf,
}

impl TestUser {
    fn create() -> TestUser {
        assert_eq!(
            my_uid(),
            0,
            "this test creates a Unix user, so it must run as root"
        );
        require_program("useradd", "passwd");
        require_program("userdel", "passwd");
        let name = format!("tethert{}", std::process::id() % 100_000);
        let home = PathBuf::from(format!("/tmp/{name}.home"));
        let st = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-p", "*", "-d"])
            .arg(&home)
            .arg(&name)
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name} failed");
        TestUser { name, home }
    }

    fn uid(&self) -> u32 {
        let out = Command::new("id")
            .args(["-u", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// The copy of tether that bootstrap put in this user's data directory.
    fn tether_copy(&self) -> Option<PathBuf> {
        let dir = self.home.join(".local/share/tether/bin");
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .next()
    }

    /// Processes running as this user (ours: started through the test's sshd).
    fn pids(&self) -> Vec<u32> {
        let uid = self.uid().to_string();
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            let real = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1));
            if real == Some(uid.as_str()) {
                v.push(pid);
            }
        }
        v
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for pid in self.pids() {
            send_signal(pid, "KILL");
        }
        let _ = Command::new("userdel").args(["-r", &self.name]).status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn names_in(out: &Out) -> Vec<String> {
    let v = out.json();
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn another_unix_user_sees_none_of_my_sessions() {
    let (sshd, remote, client) = setup();
    let user = TestUser::create();
    client
        .run(&["new", "tether-test", "--name", "mine"])
        .success();
    remote.note_session(&remote.session("mine"));

    // The other user's side: their own daemon (default home) and a copy of tether in their
    // data directory, since `tether` is not on their PATH.
    let other = Home::new()
        .env("TETHER_SSH_CONFIG", sshd.config().to_str().unwrap())
        .env("TETHER_REMOTE_EXE", "tether-not-installed-here");
    let computer = format!("{}@tether-test", user.name);
    let theirs = other
        .run(&["get", "--computer", &computer, "--json"])
        .success();
    assert!(names_in(&theirs).is_empty(), "{theirs}");
    other.run(&["new", &computer, "--name", "theirs"]).success();
    let theirs = other
        .run(&["get", "--computer", &computer, "--json"])
        .success();
    assert_eq!(names_in(&theirs), ["theirs"]);
    let mine = client
        .run(&["get", "--computer", "tether-test", "--json"])
        .success();
    assert_eq!(names_in(&mine), ["mine"]);

    // Their session runs as them.
    let uid = user.uid();
    assert!(
        user.pids().len() >= 2,
        "expected their daemon and session host to run as uid {uid}"
    );

    // Pointed at my daemon's home, their tether gets nothing.
    let copy = user.tether_copy().expect("tether was copied to their home");
    let out = Command::new("ssh")
        .arg("-F")
        .arg(sshd.config())
        .args(["-l", &user.name, "tether-test"])
        .arg(format!(
            "TETHER_HOME={} {} get --json",
            remote.path().display(),
            copy.display()
        ))
        .output()
        .unwrap();
    assert!(!out.status.success(), "their tether reached my daemon");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("mine"),
        "{out:?}"
    );
    drop(other);
}
