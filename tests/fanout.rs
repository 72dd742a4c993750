//! Many computers at once (several ssh aliases of one test sshd): one warm connection each,
//! the throttle honoured, and a connection that dies mid-command reported as lost (255)
//! without harming the session.

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
fn a_connection_lost_mid_command_exits_255_and_the_session_survives() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-1", "--name", "l"]).success();
    remote.note_session(&remote.session("l"));
    client.invoke("l", "z=still-here").success();
    let mut running = client.spawn(&["invoke", "-s", "l", "sleep 60"], "running");
    wait_until(Duration::from_secs(20), "the command runs", || {
        remote.session("l")["availability"] == "Busy"
    });
    let st = client.run(&["daemon", "status", "--json"]).success().json();
    let ssh_pid = st["links"][0]["pid"].as_u64().unwrap() as u32;
    assert!(cmdline(ssh_pid).contains("ssh"), "{}", cmdline(ssh_pid));
    assert!(send_signal(ssh_pid, "KILL"));
    let out = running.wait(Duration::from_secs(30));
    assert_eq!(out.code(), Some(255), "{out}");
    out.clear_error("connection lost", 1);
    // The next call reconnects; the session kept its state.
    wait_until(Duration::from_secs(20), "the session is free again", || {
        remote.session("l")["availability"] == "Available"
    });
    client
        .invoke("l", "echo $z")
        .success()
        .stdout_is("still-here\n");
}
