//! Other computers through a real sshd on 127.0.0.1 (the "remote" side is a second
//! `TETHER_HOME` on this machine): temporary sessions with `invoke --computer`, fan-out with
//! prefixes and a failing target, `get --computer` seeing sessions made by another client, and
//! computer names that try to inject ssh options.

use crate::common::sshd::{Sshd, setup};
use crate::common::*;

#[test]
fn invoke_on_a_computer_runs_in_a_temporary_session_with_separate_streams() {
    let (_sshd, remote, client) = setup();
    client
        .run(&[
            "invoke",
            "--computer",
            "tether-test",
            "echo hi; echo e >&2; (exit 3)",
        ])
        .code_is(3)
        .stdout_is("hi\n")
        .stderr_is("e\n");
    client
        .run(&[
            "invoke",
            "--computer",
            "tether-test",
            "--arg",
            "a b",
            "printf '[%s]' \"$1\"",
        ])
        .success()
        .stdout_is("[a b]");
    // Temporary: nothing is left listed on the target.
    assert!(remote.sessions().is_empty(), "{:?}", remote.sessions());
}

#[test]
fn fan_out_prefixes_lines_and_one_failing_computer_does_not_stop_the_others() {
    let (_sshd, _remote, client) = setup();
    client
        .run(&["invoke", "--computer", "tether-test,tether-test", "echo hi"])
        .success()
        .stdout_is("tether-test: hi\ntether-test: hi\n");
    client
        .run(&[
            "invoke",
            "--computer",
            "tether-test,tether-test",
            "--hide-computer-name",
            "echo hi",
        ])
        .success()
        .stdout_is("hi\nhi\n");
    // Port 1 on 127.0.0.1 refuses at once.
    let out = client.run(&[
        "invoke",
        "--computer",
        "tether-test,tether-test:1",
        "echo hi",
    ]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert_eq!(out.out(), "tether-test: hi\n", "{out}");
    assert!(out.err().contains("computer tether-test:1"), "{out}");
}

#[test]
fn get_on_a_computer_lists_sessions_made_by_another_client() {
    let sshd = Sshd::start();
    let remote = Home::new();
    remote.new_session("made-there", &[]);
    let client = sshd.client_for(&remote);
    let out = client
        .run(&["get", "--computer", "tether-test", "--json"])
        .success();
    let list = out.json();
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "made-there");
    assert_eq!(list[0]["computer_name"], "tether-test");
    assert_eq!(list[0]["computer_type"], "remote");
    assert_eq!(list[0]["state"], "Opened");
}

#[test]
fn computer_names_cannot_inject_ssh_options() {
    let (_sshd, _remote, client) = setup();
    let marker = client.scratch().join("injected");
    let m = marker.to_str().unwrap();
    for bad in [
        format!("-oProxyCommand=touch {m}"),
        format!("tether-test -oProxyCommand=touch {m}"),
        format!("x -o ProxyCommand=touch {m}@tether-test"),
        format!("tether-test:22 -oProxyCommand=touch {m}"),
        "tether-test;touch x".to_string(),
    ] {
        // `--computer=VALUE`, so the value reaches tether's own check even when it starts
        // with '-' (clap refuses `--computer -o…` by itself).
        client
            .run(&["invoke", &format!("--computer={bad}"), "true"])
            .code_is(2)
            .clear_error("computer", 1);
        assert!(!marker.exists(), "{bad:?} ran a command");
    }
    client
        .run(&[
            "invoke",
            "--ssh-option",
            "ProxyCommand",
            "--computer",
            "tether-test",
            "true",
        ])
        .code_is(2);
}

#[test]
fn stdin_json_and_ctrl_c_reach_a_computer() {
    let (_sshd, _remote, client) = setup();
    client
        .run_stdin(&["invoke", "--computer", "tether-test", "wc -c"], b"12345")
        .success()
        .stdout_is("5\n");
    let out = client
        .run(&[
            "invoke",
            "--computer",
            "tether-test",
            "--json",
            "echo hi; (exit 2)",
        ])
        .code_is(2);
    let lines = out.json_lines();
    assert_eq!(lines[0]["computer"], "tether-test");
    assert_eq!(lines[0]["stream"], "stdout");
    assert_eq!(lines[0]["data"], "hi\n");
    assert_eq!(lines.last().unwrap()["exit_code"], 2);

    let pid_file = client.scratch().join("remote.pid");
    let mut inv = client.spawn(
        &[
            "invoke",
            "--computer",
            "tether-test",
            "--arg",
            pid_file.to_str().unwrap(),
            "--",
            &pid_then_exec(1, "sleep 300"),
        ],
        "remote-ctrl-c",
    );
    let pid = wait_pid_file(&pid_file);
    assert!(send_signal(inv.pid(), "INT"), "send SIGINT");
    let out = inv.wait(std::time::Duration::from_secs(30));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.code() == Some(130) || out.status().signal() == Some(2),
        "Ctrl-C should end the remote command with 130:\n{out}"
    );
    wait_gone(pid, "the remote command stopped by Ctrl-C");
}

/// A host that accepts TCP but never answers (a hung sshd) fails within --connect-timeout with
/// status 5 and a line naming it, while the healthy computer beside it still runs.
#[test]
fn a_silent_host_fails_within_the_connect_timeout_without_stopping_the_others() {
    let (_sshd, _remote, client) = setup();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accept and hold connections without a word, on a thread that ends with the test.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().take(4) {
            held.push(conn);
        }
    });
    let hung = format!("tether-test:{port}");
    let out = client.run(&[
        "invoke",
        "--connect-timeout",
        "2s",
        "--computer",
        &format!("tether-test,{hung}"),
        "echo ok",
    ]);
    assert_eq!(out.code(), Some(5), "{out}");
    assert_eq!(out.out(), "tether-test: ok\n", "{out}");
    assert!(out.err().contains(&format!("computer {hung}")), "{out}");
}

#[test]
fn a_fan_out_on_a_terminal_shows_progress_on_stderr() {
    require_program("script", "util-linux");
    let (_sshd, _remote, client) = setup();
    // `script` gives the command a terminal; it records what the terminal showed.
    let tether = client.command();
    let line = format!(
        "{} invoke --computer tether-test,tether-test:1 'sleep 2; echo slow'",
        tether_bin().display()
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    for (k, v) in tether.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = run_command(c, None, std::time::Duration::from_secs(60));
    assert_ne!(out.code(), Some(0), "one target fails: {out}");
    let screen = out.out();
    assert!(screen.contains("tether-test: slow"), "{out}");
    assert!(screen.contains("1 failed"), "no progress shown: {out}");
    assert!(screen.contains("/2 done"), "no progress shown: {out}");
}
