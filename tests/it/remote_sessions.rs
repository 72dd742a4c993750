//! Persistent sessions on another computer (`new COMPUTER`) through a real sshd, and the warm
//! connection under them: a remote session behaves like a local one (state, streams, exit
//! codes, args, stdin, byte-exact output, timeouts, busy waits, Ctrl-C, remove), one ssh
//! connection serves every call and closes when idle, tether copies itself to a computer that
//! lacks it, and a far side of another version is refused naming both versions.

use crate::common::sshd::setup;
use crate::common::*;
use std::time::Duration;

#[test]
fn a_remote_session_keeps_state_and_behaves_like_a_local_one() {
    let (_sshd, remote, client) = setup();
    let s = single_session(&client.run(&["new", "tether-test", "--name", "web", "--json"]));
    assert_eq!(s["name"], "web");
    assert_eq!(s["computer_name"], "tether-test");
    assert_eq!(s["computer_type"], "remote");
    assert_eq!(s["state"], "Opened");
    // The far daemon keeps it, under the same name and instance id.
    let there = remote.session("web");
    remote.note_session(&there);
    assert_eq!(there["instance_id"], s["instance_id"]);

    client.invoke("web", "cd /tmp; x=42").success();
    client.invoke("web", "echo $x $PWD").stdout_is("42 /tmp\n");
    client
        .invoke("web", "echo out; echo err >&2; (exit 7)")
        .code_is(7)
        .stdout_is("out\n")
        .stderr_is("err\n");
    client
        .invoke_args("web", "printf '[%s]' \"$@\"", &["a b", "$(id)", ""])
        .success()
        .stdout_is("[a b][$(id)][]");
    client
        .run_stdin(&["invoke", "-s", "web", "tr a-z A-Z"], b"hello\n")
        .success()
        .stdout_is("HELLO\n");
    let bytes = client.invoke("web", "printf 'a\\000\\377\\r\\n'").success();
    assert_eq!(bytes.stdout(), b"a\x00\xff\r\n");

    // `get` here shows the handle with this client's view of it.
    let listed = client.session("web");
    assert_eq!(listed["computer_type"], "remote");
    assert_eq!(listed["availability"], "Available");

    let out = client.run(&["invoke", "-s", "web", "--timeout", "1s", "sleep 30"]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.err().contains("timed out"), "{out}");
    client.invoke("web", "echo $x").stdout_is("42\n");

    client.run(&["remove", "web"]).success();
    assert!(
        remote.find_session("web").is_none(),
        "still on the far side"
    );
    client
        .invoke("web", "true")
        .code_is(3)
        .clear_error("web", 1);
}

#[test]
fn remote_busy_waits_and_ctrl_c_work_as_locally() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-test", "--name", "b"]).success();
    remote.note_session(&remote.session("b"));
    client.invoke("b", "y=kept").success();

    let mut first = client.spawn(&["invoke", "-s", "b", "sleep 1; echo first"], "first");
    wait_until(Duration::from_secs(20), "the session is busy", || {
        remote.session("b")["availability"] == "Busy"
    });
    client
        .run(&["invoke", "-s", "b", "--wait-timeout", "0", "true"])
        .code_is(4);
    // A synchronous invoke waits for the first one, then runs.
    client
        .invoke("b", "echo second")
        .success()
        .stdout_is("second\n");
    first
        .wait(Duration::from_secs(20))
        .success()
        .stdout_is("first\n");

    let mut long = client.spawn(&["invoke", "-s", "b", "sleep 60; echo never"], "long");
    wait_until(Duration::from_secs(20), "the command runs", || {
        remote.session("b")["availability"] == "Busy"
    });
    assert!(send_signal(long.pid(), "INT"));
    let out = long.wait(Duration::from_secs(20));
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(!out.out().contains("never"), "{out}");
    // The session survived with its state.
    client.invoke("b", "echo $y").success().stdout_is("kept\n");
}

/// A CLI killed (SIGKILL: no word to anyone) while it feeds a remote command's stdin: the
/// command reads the end of its input, as it would from a CLI on its own computer, so it ends
/// and the session takes the next command instead of waiting for a `receive`.
#[test]
fn a_remote_command_fed_by_a_killed_cli_reads_the_end_of_its_input() {
    use std::io::Write;
    let (_sshd, remote, client) = setup();
    client
        .run(&["new", "tether-test", "--name", "fed"])
        .success();
    remote.note_session(&remote.session("fed"));
    let got = client.scratch().join("fed.txt");
    let script = format!("cat > '{0}'; echo ended >> '{0}'", got.display());
    let mut cli = client.command();
    cli.args(["invoke", "-s", "fed", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut cli = cli.spawn().unwrap();
    // Held open here for the whole test: only the CLI's death can end the far stdin.
    let mut input = cli.stdin.take().unwrap();
    input.write_all(b"first\n").unwrap();
    input.flush().unwrap();
    let read = || std::fs::read_to_string(&got).unwrap_or_default();
    wait_until(
        Duration::from_secs(60),
        "the far command to get a line",
        || read() == "first\n",
    );
    assert!(send_signal(cli.id(), "KILL"));
    let _ = cli.wait();
    wait_until(Duration::from_secs(60), "the far command to end", || {
        read() == "first\nended\n"
    });
    client
        .invoke("fed", "echo usable")
        .success()
        .stdout_is("usable\n");
    drop(input);
}

fn links(client: &Home) -> Vec<serde_json::Value> {
    let st = client.run(&["daemon", "status", "--json"]).success().json();
    st["links"].as_array().cloned().unwrap_or_default()
}

#[test]
fn one_warm_connection_serves_every_call_and_closes_when_idle() {
    let (_sshd, remote, client) = setup();
    let client = client.env("TETHER_CONNECTION_IDLE", "3");
    client.run(&["new", "tether-test", "--name", "w"]).success();
    remote.note_session(&remote.session("w"));
    let first = links(&client);
    assert_eq!(first.len(), 1, "{first:?}");
    let ssh_pid = first[0]["pid"].as_u64().unwrap() as u32;
    client.invoke("w", "true").success();
    client
        .run(&["invoke", "--computer", "tether-test", "true"])
        .success();
    client.run(&["get", "--computer", "tether-test"]).success();
    let after = links(&client);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        after[0]["pid"].as_u64(),
        Some(ssh_pid as u64),
        "a second ssh connection was made"
    );
    assert_eq!(after[0]["channels"], 0, "{after:?}");
    // Unused, it closes; the session lives on and the next call reconnects.
    wait_until(
        Duration::from_secs(30),
        "the idle connection closes",
        || links(&client).is_empty(),
    );
    wait_gone(ssh_pid, "the idle ssh process");
    client
        .invoke("w", "echo back")
        .success()
        .stdout_is("back\n");
}

/// The status never misses the warm link while other calls open channels on it: each poll,
/// taken while two clients run calls in a loop, lists the same ssh process.
#[test]
fn the_status_lists_the_link_while_calls_open_channels_on_it() {
    let (_sshd, remote, client) = setup();
    client
        .run(&["new", "tether-test", "--name", "busy"])
        .success();
    remote.note_session(&remote.session("busy"));
    let first = links(&client);
    assert_eq!(first.len(), 1, "{first:?}");
    let pid = first[0]["pid"].as_u64();
    let done = std::sync::atomic::AtomicBool::new(false);
    let missed: Vec<String> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..200 {
                        if done.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        client
                            .run(&["invoke", "--computer", "tether-test", "true"])
                            .success();
                    }
                })
            })
            .collect();
        let mut missed = Vec::new();
        for _ in 0..60 {
            let now = links(&client);
            if now.len() != 1 || now[0]["pid"].as_u64() != pid {
                missed.push(format!("{now:?}"));
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in callers {
            c.join().unwrap();
        }
        missed
    });
    assert!(missed.is_empty(), "polls without the link: {missed:?}");
}

#[test]
fn tether_copies_itself_to_a_computer_without_it_and_reuses_the_copy() {
    let (sshd, remote, _) = setup();
    let client = Home::new()
        .env("TETHER_SSH_CONFIG", sshd.config().to_str().unwrap())
        .env("TETHER_REMOTE_EXE", "tether-not-installed-here")
        .env("TETHER_REMOTE_HOME", remote.path().to_str().unwrap());
    client
        .run(&["invoke", "--computer", "tether-test", "echo copied"])
        .success()
        .stdout_is("copied\n");
    let bin = remote.path().join("bin");
    let copies: Vec<_> = std::fs::read_dir(&bin).unwrap().flatten().collect();
    assert_eq!(
        copies.len(),
        1,
        "expected one copy and no leftovers: {copies:?}"
    );
    let copy = copies[0].path();
    assert!(
        copy.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("tether-"),
        "{copy:?}"
    );
    assert!(
        std::fs::read(&copy).unwrap() == std::fs::read(tether_bin()).unwrap(),
        "the copy differs from this tether"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&copy).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    // The far daemon runs from the copy.
    let daemon = remote.running_daemon_pid();
    assert_eq!(
        std::fs::read_link(format!("/proc/{daemon}/exe")).unwrap(),
        copy
    );
    // A new connection reuses it rather than copying again.
    client.run(&["daemon", "stop"]).success();
    client
        .run(&["invoke", "--computer", "tether-test", "echo again"])
        .success()
        .stdout_is("again\n");
    let again = std::fs::metadata(&copy).unwrap();
    assert_eq!((again.ino(), again.mtime()), (meta.ino(), meta.mtime()));
    assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 1);
}

/// A stand-in for the far side, written as a script the remote shell runs.
fn fake_remote(client: &Home, name: &str, body: &str) -> String {
    let path = client.scratch().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_far_side_of_another_version_is_refused_naming_both_versions() {
    let (sshd, _remote, probe) = setup();
    // Plays a future tether: announces protocol 999 and waits.
    let fake = fake_remote(
        &probe,
        "future-tether",
        "echo 'TETHER-MUX 1 999 9.9.9'; cat >/dev/null",
    );
    let client = Home::new()
        .env("TETHER_SSH_CONFIG", sshd.config().to_str().unwrap())
        .env("TETHER_REMOTE_EXE", &fake);
    let out = client
        .run(&["invoke", "--computer", "tether-test", "true"])
        .code_is(5)
        .clear_error("tether-test", 1);
    assert!(out.err().contains("9.9.9"), "{out}");
    assert!(out.err().contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn chatter_from_the_remote_shell_before_tether_starts_is_skipped() {
    let (sshd, remote, probe) = setup();
    let chatty = fake_remote(
        &probe,
        "chatty-tether",
        &format!(
            "echo 'Welcome to the machine'; echo 'motd line'; exec {} \"$@\"",
            tether_bin().display()
        ),
    );
    let client = Home::new()
        .env("TETHER_SSH_CONFIG", sshd.config().to_str().unwrap())
        .env("TETHER_REMOTE_EXE", &chatty)
        .env("TETHER_REMOTE_HOME", remote.path().to_str().unwrap());
    client
        .run(&["invoke", "--computer", "tether-test", "echo clean"])
        .success()
        .stdout_is("clean\n");
}
