//! Many computers at once (several ssh aliases of one test sshd): one warm connection each,
//! the throttle honoured, and a connection that dies mid-command reported as lost (255) while
//! the command goes on in a Disconnected session.

mod common;
use common::sshd::{ALIASES, setup};
use common::*;
use std::time::Duration;

#[test]
fn fan_out_uses_one_connection_per_computer_and_honours_the_throttle() {
    let (_sshd, _remote, client) = setup();
    let log = client.scratch().join("concurrency.log");
    let script = format!(
        "echo start >> {log}; sleep 1; echo end >> {log}; echo hi",
        log = log.display()
    );
    let targets = ALIASES.join(",");
    let out = client
        .run(&[
            "invoke",
            "--computer",
            &targets,
            "--throttle-limit",
            "3",
            &script,
        ])
        .success();
    let text = out.out();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = ALIASES.iter().map(|a| format!("{a}: hi")).collect();
    expected.sort();
    assert_eq!(lines, expected, "{out}");

    let (mut running, mut most) = (0i32, 0i32);
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        running += if l == "start" { 1 } else { -1 };
        most = most.max(running);
    }
    assert!(most <= 3, "{most} ran at once with --throttle-limit 3");
    assert!(most >= 2, "targets never overlapped (most at once: {most})");

    let st = client.run(&["daemon", "status", "--json"]).success().json();
    let mut computers: Vec<String> = st["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["computer"].as_str().unwrap().to_string())
        .collect();
    computers.sort();
    let mut want: Vec<String> = ALIASES.iter().map(|a| a.to_string()).collect();
    want.sort();
    assert_eq!(computers, want);
}

#[test]
fn a_connection_lost_mid_command_exits_255_and_the_command_goes_on_disconnected() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-1", "--name", "l"]).success();
    remote.note_session(&remote.session("l"));
    client.invoke("l", "z=still-here").success();
    let marker = client.scratch().join("go-on");
    let script = format!(
        "echo before; while [ ! -e {m} ]; do sleep 0.05; done; echo after",
        m = marker.display()
    );
    let mut running = client.spawn(&["invoke", "-s", "l", &script], "running");
    wait_until(Duration::from_secs(20), "the command runs", || {
        std::fs::read_to_string(&running.stdout_path).is_ok_and(|s| s == "before\n")
    });
    let st = client.run(&["daemon", "status", "--json"]).success().json();
    let ssh_pid = st["links"][0]["pid"].as_u64().unwrap() as u32;
    assert!(cmdline(ssh_pid).contains("ssh"), "{}", cmdline(ssh_pid));
    assert!(send_signal(ssh_pid, "KILL"));
    let out = running.wait(Duration::from_secs(30));
    assert_eq!(out.code(), Some(255), "{out}");
    out.clear_error("connection lost", 1);
    // The far side keeps the session, Disconnected, and the command goes on (SPEC §3.13).
    wait_until(
        Duration::from_secs(20),
        "the session is Disconnected there",
        || remote.session("l")["state"] == "Disconnected",
    );
    std::fs::write(&marker, "").unwrap();
    // The next call reconnects: receive gets the rest, and the state is intact.
    client.run(&["receive", "l"]).success().stdout_is("after\n");
    client
        .invoke("l", "echo $z")
        .success()
        .stdout_is("still-here\n");
}
