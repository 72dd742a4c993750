//! `invoke -s NAME` goes straight to a local session's host through the daemon's name links
//! (`names/<name>`), and falls back to the daemon for anything the link cannot answer.

use crate::common::{Home, send_signal, stat_field, wait_until};
use std::time::Duration;

/// The daemon resumed on drop, so a failing assertion never leaves it stopped.
struct Stopped(u32);
impl Drop for Stopped {
    fn drop(&mut self) {
        send_signal(self.0, "CONT");
    }
}

#[test]
fn a_named_local_session_is_reached_without_the_daemon() {
    let home = Home::new();
    home.new_session("b", &[]);
    home.invoke("b", "x=kept").success();
    let link = home.path().join("names/b");
    let iid = std::fs::read_to_string(&link).expect("the daemon links the session's name");
    assert_eq!(iid, home.session("b")["instance_id"].as_str().unwrap());

    // With the daemon frozen, a call by name still runs (and sees the session's state)...
    let daemon = home.running_daemon_pid();
    assert!(send_signal(daemon, "STOP"));
    let frozen = Stopped(daemon);
    wait_until(Duration::from_secs(10), "the daemon to be stopped", || {
        stat_field(daemon, 3).as_deref() == Some("T")
    });
    home.run(&["invoke", "-s", "b", "echo $x"])
        .success()
        .stdout_is("kept\n");
    drop(frozen);
    // And the daemon still answers afterwards (its view of the session is intact).
    assert_eq!(home.state_of("b").as_deref(), Some("Opened"));
}

#[test]
fn a_stale_or_forged_link_falls_back_to_the_daemon() {
    let home = Home::new();
    home.new_session("b", &[]);
    home.run(&["remove", "b"]).success();
    assert!(
        !home.path().join("names/b").exists(),
        "remove must unlink the name"
    );
    // A link left behind (a daemon that died) or written by hand leads nowhere: the daemon
    // answers, with its own words.
    let names = home.path().join("names");
    std::fs::create_dir_all(&names).unwrap();
    std::fs::write(names.join("b"), "00000000-0000-0000-0000-000000000000").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", names.join("c")).unwrap();
    home.run(&["invoke", "-s", "b", "true"])
        .code_is(3)
        .clear_error("session b was removed", 1);
    home.run(&["invoke", "-s", "c", "true"])
        .code_is(3)
        .clear_error("no session named or numbered c", 1);
    // A new session of the same name takes the link over.
    home.new_session("b", &[]);
    home.run(&["invoke", "-s", "b", "echo new"])
        .success()
        .stdout_is("new\n");
}
