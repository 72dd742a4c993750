//! The far daemon restarts (SPEC §3.15): `kill -9` of a computer's daemon while a command
//! streams loses no session and no output, and the next request starts a daemon that adopts
//! the session.

use crate::common::sshd::setup;
use crate::common::*;

#[test]
fn killing_the_far_daemon_mid_stream_loses_neither_the_session_nor_output() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-test", "--name", "s"]).success();
    remote.note_session(&remote.session("s"));
    client.invoke("s", "kept=yes").success();
    let script = "i=1; while [ $i -le 80 ]; do echo $i; i=$((i+1)); sleep 0.02; done; (exit 3)";
    let mut cli = client.spawn(&["invoke", "-s", "s", script], "stream");
    wait_until(WAIT, "output streams", || {
        std::fs::read_to_string(&cli.stdout_path).is_ok_and(|s| s.lines().count() >= 5)
    });
    let old = remote.running_daemon_pid();
    assert!(send_signal(old, "KILL"));
    wait_gone(old, "the far daemon");
    let out = cli.wait(WAIT).code_is(3);
    let want: String = (1..=80).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.out(), want);
    // The next request reaches a new daemon, which adopted the session with its state.
    client
        .invoke("s", "echo $kept")
        .success()
        .stdout_is("yes\n");
    let new = remote.running_daemon_pid();
    assert_ne!(new, old);
}
