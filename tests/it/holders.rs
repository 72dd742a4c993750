//! Who holds a session (SPEC §1 Availability, §3.11, §3.13–14, issue 4): a session connected
//! to one client is Busy for every other and refused to them until it is disconnected; a client
//! that vanishes leaves its idle sessions Disconnected and takes them back when it returns; a
//! client that closes (`daemon stop`) closes its idle sessions and disconnects running ones,
//! while closing an idle link keeps them. All through a real sshd, with two client homes.

use crate::common::sshd::setup;
use crate::common::*;
use serde_json::Value;

const C: &str = "tether-test";

fn far(remote: &Home, name: &str) -> Value {
    remote.session(name)
}

fn client_id(home: &Home) -> String {
    std::fs::read_to_string(home.path().join("client-id"))
        .expect("the client made its identity")
        .trim()
        .to_string()
}

#[test]
fn a_session_one_client_holds_is_busy_and_refused_to_another_until_disconnected() {
    let (sshd, remote, first) = setup();
    first.run(&["new", C, "--name", "h"]).success();
    remote.note_session(&far(&remote, "h"));
    first.invoke("h", "v=first").success();
    let second = sshd.client_for(&remote);

    let listed = second
        .run(&["get", "--computer", C, "--json"])
        .success()
        .json();
    assert_eq!(listed[0]["state"], "Opened", "{listed}");
    assert_eq!(listed[0]["availability"], "Busy", "{listed}");
    let id = client_id(&first);
    assert_eq!(listed[0]["held_by"]["id"], id.as_str(), "{listed}");

    let refused = second
        .run(&["connect", "--computer", C, "--name", "h"])
        .code_is(4)
        .clear_error("another client", 1);
    assert!(refused.err().contains("session h"), "{refused}");
    assert!(
        refused.err().contains(&id[..8]),
        "names the holder: {refused}"
    );
    // A refused connect leaves no handle behind.
    assert!(
        second.find_session("h").is_none(),
        "{:?}",
        second.sessions()
    );
    // The holder itself sees it Available.
    assert_eq!(first.session("h")["availability"], "Available");

    first.run(&["disconnect", "h"]).success();
    let out = second
        .run(&["connect", "--computer", C, "--name", "h", "--json"])
        .success();
    assert_eq!(single_session(&out)["state"], "Opened");
    second.invoke("h", "echo $v").success().stdout_is("first\n");
    // Now the first client is the other one.
    first
        .invoke("h", "echo no")
        .code_is(4)
        .clear_error("connected to another client", 1);
    first
        .run(&["disconnect", "h"])
        .code_is(4)
        .clear_error("another client", 1);
    assert_eq!(first.session("h")["availability"], "Busy");
    // …and cannot remove it either: the session stays with the client that holds it.
    first
        .run(&["remove", "h"])
        .code_is(4)
        .clear_error("connected to another client", 1);
    assert_eq!(far(&remote, "h")["state"], "Opened");
    second.invoke("h", "echo $v").success().stdout_is("first\n");
}

#[test]
fn a_killed_client_leaves_its_idle_sessions_disconnected_and_takes_them_back() {
    let (sshd, remote, first) = setup();
    first.run(&["new", C, "--name", "k"]).success();
    remote.note_session(&far(&remote, "k"));
    first.invoke("k", "x=kept").success();
    let pid = first.running_daemon_pid();
    assert!(send_signal(pid, "KILL"));
    wait_until(WAIT, "the far session is Disconnected", || {
        far(&remote, "k")["state"] == "Disconnected"
    });
    // Meanwhile another client sees it Disconnected, as `get --computer` should.
    let second = sshd.client_for(&remote);
    let listed = second
        .run(&["get", "--computer", C, "--json"])
        .success()
        .json();
    assert_eq!(listed[0]["state"], "Disconnected", "{listed}");
    // The same client, started again (same home), takes it back by using it.
    first.invoke("k", "echo $x").success().stdout_is("kept\n");
    assert_eq!(far(&remote, "k")["state"], "Opened");
    assert_eq!(first.session("k")["state"], "Opened");
}

#[test]
fn daemon_stop_closes_idle_remote_sessions_and_disconnects_running_ones() {
    let (sshd, remote, first) = setup();
    first.run(&["new", C, "--name", "idle"]).success();
    first.run(&["new", C, "--name", "run"]).success();
    remote.note_session(&far(&remote, "idle"));
    remote.note_session(&far(&remote, "run"));
    let marker = remote.scratch().join("started");
    let script = format!(
        "touch {m}; i=1; while [ $i -le 80 ]; do echo $i; i=$((i+1)); sleep 0.02; done; (exit 3)",
        m = marker.display()
    );
    let mut cli = first.spawn(&["invoke", "-s", "run", &script], "running");
    wait_until(WAIT, "the command started", || marker.exists());
    first.run(&["daemon", "stop"]).success();
    let part1 = cli.wait(WAIT).code_is(255).out();

    wait_until(WAIT, "the idle session is closed", || {
        remote.state_of("idle").is_none_or(|s| s == "Closed")
    });
    assert_eq!(far(&remote, "run")["state"], "Disconnected");
    // The running command went on: another client collects the rest.
    let second = sshd.client_for(&remote);
    second
        .run(&["connect", "--computer", C, "--name", "run"])
        .success();
    let part2 = second.run(&["receive", "run"]).code_is(3).out();
    let want: String = (1..=80).map(|i| format!("{i}\n")).collect();
    assert_eq!(part1 + &part2, want);
}

#[test]
fn closing_an_idle_link_keeps_the_sessions_held() {
    let (sshd, remote, first) = setup();
    let first = first.env("TETHER_CONNECTION_IDLE", "1");
    first.run(&["new", C, "--name", "w"]).success();
    remote.note_session(&far(&remote, "w"));
    wait_until(WAIT, "the idle link closes", || {
        let st = first.run(&["daemon", "status", "--json"]).success().json();
        st["links"].as_array().is_some_and(|l| l.is_empty())
    });
    // Another client asks after the link is gone; the session must still be held.
    let second = sshd.client_for(&remote);
    let listed = second
        .run(&["get", "--computer", C, "--json"])
        .success()
        .json();
    assert_eq!(listed[0]["state"], "Opened", "{listed}");
    assert_eq!(listed[0]["held_by"]["id"], client_id(&first).as_str());
    first.invoke("w", "true").success();
}
