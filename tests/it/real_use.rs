//! Real use (issue 17 points 1-3): nothing a normal client does may break a session, lock out
//! another client, or hang. Two clients fanning out to one computer at once, pipes closed early
//! (`| head`), and a CLI killed at every step (SIGTERM, SIGHUP, SIGKILL) all leave sessions
//! usable with no command left running.

use crate::common::sshd::{ALIASES, setup};
use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Processes whose command line contains `marker` (a word no other process has).
fn running(marker: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id() && cmdline(*pid).contains(marker))
        .collect()
}

fn wait_none_running(marker: &str) {
    wait_until(
        Duration::from_secs(15),
        &format!("no process running {marker}"),
        || running(marker).is_empty(),
    );
}

/// `tether ARGS | head -1` through a real shell pipeline, with a deadline.
fn piped_to_head(home: &Home, args: &str) -> Out {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("\"$TETHER\" {args} | head -n 1"))
        .env("TETHER", tether_bin())
        .env("TETHER_HOME", home.path());
    run_command(c, None, Duration::from_secs(30))
}

#[test]
fn a_closed_pipe_ends_the_cli_at_once_and_stops_the_command() {
    let home = Home::new();
    home.new_session("s", &[]);
    let marker = format!("pipe-{}", std::process::id());
    let out = piped_to_head(&home, &format!("invoke -s s 'yes {marker}'"));
    assert_eq!(out.out(), format!("{marker}\n"), "{out}");
    wait_none_running(&marker);
    // The session is at once usable for the next command, and says what happened.
    let next = home
        .run(&["invoke", "-s", "s", "--wait-timeout", "10s", "echo next"])
        .success();
    assert_eq!(next.out(), "next\n", "{next}");
    assert_eq!(home.state_of("s").as_deref(), Some("Opened"));

    // A temporary session's command is stopped too.
    let temp = format!("temp-{}", std::process::id());
    let out = piped_to_head(&home, &format!("invoke 'yes {temp}'"));
    assert_eq!(out.out(), format!("{temp}\n"), "{out}");
    wait_none_running(&temp);
}

#[test]
fn receive_into_a_closed_pipe_ends_at_once_and_stops_the_command() {
    let home = Home::new();
    home.new_session("r", &[]);
    let marker = format!("recv-{}", std::process::id());
    let flag = home.scratch().join("started");
    let mut bg = home.spawn(
        &[
            "invoke",
            "-s",
            "r",
            &format!("touch {}; yes {marker}", flag.display()),
        ],
        "yes",
    );
    wait_until(Duration::from_secs(10), "the command to start", || {
        flag.exists()
    });
    home.run(&["disconnect", "r"]).success();
    let gone = bg.wait(Duration::from_secs(10));
    assert!(gone.err().contains("disconnected"), "{gone}");
    let out = piped_to_head(&home, "receive r");
    assert_eq!(out.out(), format!("{marker}\n"), "{out}");
    wait_none_running(&marker);
    home.run(&["invoke", "-s", "r", "--wait-timeout", "10s", "echo after"])
        .success()
        .stdout_is("after\n");
}

/// Starts `sleep` in session `s` through a CLI in the background and waits until it runs.
fn start_sleeper(home: &Home, session: &str, marker: &str, tail: &str) -> Background {
    let flag = home.scratch().join(format!("{marker}.started"));
    let script = format!("touch {}; sleep 60 # {marker}\n{tail}", flag.display());
    let bg = home.spawn(&["invoke", "-s", session, &script], marker);
    wait_until(Duration::from_secs(10), "the command to start", || {
        flag.exists() && !running(marker).is_empty()
    });
    bg
}

#[test]
fn sigterm_and_sighup_of_the_cli_stop_the_command_like_ctrl_c() {
    let home = Home::new();
    home.new_session("k", &[]);
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        let marker = format!("sig{sig}-{}", std::process::id());
        let mut bg = start_sleeper(&home, "k", &marker, "echo not-reached");
        assert!(send_signal(bg.pid(), sig));
        let out = bg.wait(Duration::from_secs(10));
        assert_eq!(out.code(), Some(code), "{out}");
        assert!(!out.out().contains("not-reached"), "{out}");
        wait_none_running(&marker);
        let t = Instant::now();
        home.run(&["invoke", "-s", "k", "--wait-timeout", "20s", "echo ok"])
            .success()
            .stdout_is("ok\n");
        assert!(t.elapsed() < Duration::from_secs(20));
        assert_eq!(home.state_of("k").as_deref(), Some("Opened"));
    }
    // `timeout 1 tether invoke …`, as a user would write it.
    let marker = format!("timeout-{}", std::process::id());
    let mut c = Command::new("timeout");
    c.args(["1"])
        .arg(tether_bin())
        .args(["invoke", "-s", "k", &format!("sleep 60 # {marker}")])
        .env("TETHER_HOME", home.path());
    let out = run_command(c, None, Duration::from_secs(20));
    assert_eq!(out.code(), Some(124), "{out}");
    wait_none_running(&marker);
    home.run(&["invoke", "-s", "k", "echo fine"])
        .success()
        .stdout_is("fine\n");
}

#[test]
fn after_kill_9_of_the_cli_the_next_invoke_waits_for_the_command_and_runs() {
    let home = Home::new();
    home.new_session("n", &[]);
    let marker = format!("kill9-{}", std::process::id());
    let flag = home.scratch().join("k9.started");
    let script = format!("touch {}; echo first; sleep 3 # {marker}", flag.display());
    let mut bg = home.spawn(&["invoke", "-s", "n", &script], "k9");
    wait_until(Duration::from_secs(10), "the command to start", || {
        flag.exists() && !running(&marker).is_empty()
    });
    assert!(send_signal(bg.pid(), "KILL"));
    bg.wait(Duration::from_secs(10));
    // No connect, no receive: the next command waits for the one left behind, then runs.
    let out = home
        .run(&["invoke", "-s", "n", "echo second; echo \"$?\""])
        .success();
    assert_eq!(out.out(), "second\n0\n", "{out}");
    assert!(
        out.err().contains("earlier command") && out.err().contains("status 0"),
        "the discarded output is not mentioned: {out}"
    );
    assert!(running(&marker).is_empty());
    assert_eq!(home.state_of("n").as_deref(), Some("Opened"));
    // With --wait-timeout, a command still running is a clear Busy error naming what helps.
    let flag2 = home.scratch().join("k9b.started");
    let script = format!("touch {}; sleep 30 # {marker}b", flag2.display());
    let mut bg = home.spawn(&["invoke", "-s", "n", &script], "k9b");
    wait_until(
        Duration::from_secs(10),
        "the second command to start",
        || flag2.exists(),
    );
    assert!(send_signal(bg.pid(), "KILL"));
    bg.wait(Duration::from_secs(10));
    let busy = home
        .run(&["invoke", "-s", "n", "--wait-timeout", "1s", "true"])
        .code_is(4);
    assert!(
        busy.err().contains("tether receive n") && busy.err().contains("--wait-timeout"),
        "{busy}"
    );
    home.run(&["remove", "n"]).success();
    wait_none_running(&format!("{marker}b"));
}

#[test]
fn clients_of_one_computer_never_lock_each_other_out() {
    let (sshd, remote, a) = setup();
    let b = sshd.client_for(&remote);
    let far = ALIASES[0];
    a.run(&["invoke", "--computer", far, "echo a"])
        .success()
        .stdout_is("a\n");
    // At once, while A's spare is still warm: B's temporary invocation is B's.
    b.run(&["invoke", "--computer", far, "echo b"])
        .success()
        .stdout_is("b\n");
    a.run(&["invoke", "--computer", far, "echo a2"])
        .success()
        .stdout_is("a2\n");

    // Twenty clients fanning out to the same computers at the same time.
    let clients: Vec<Home> = (0..20).map(|_| sshd.client_for(&remote)).collect();
    let targets = ALIASES[..3].join(",");
    let mut runs: Vec<Background> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.spawn(
                &[
                    "invoke",
                    "--computer",
                    &targets,
                    "--hide-computer-name",
                    "echo ok",
                ],
                &format!("fan{i}"),
            )
        })
        .collect();
    for (i, r) in runs.iter_mut().enumerate() {
        let out = r.wait(Duration::from_secs(120));
        assert_eq!(out.code(), Some(0), "client {i}: {out}");
        assert_eq!(out.out(), "ok\nok\nok\n", "client {i}: {out}");
    }
    for c in clients.iter().chain([&a, &b]) {
        let _ = c.run(&["daemon", "stop"]);
    }
    let _ = Path::new(remote.path());
}

#[test]
fn receive_keep_shows_the_output_without_consuming_it() {
    let home = Home::new();
    home.new_session("kp", &[]);
    let (started, go) = (
        home.scratch().join("kp.started"),
        home.scratch().join("kp.go"),
    );
    let script = format!(
        "touch {s}; while [ ! -e {g} ]; do sleep 0.05; done; echo one; echo two >&2; false",
        s = started.display(),
        g = go.display()
    );
    let mut bg = home.spawn(&["invoke", "-s", "kp", &script], "kp");
    wait_until(Duration::from_secs(10), "the command to start", || {
        started.exists()
    });
    home.run(&["disconnect", "kp"]).success();
    bg.wait(Duration::from_secs(10));
    std::fs::write(&go, "").unwrap();
    for _ in 0..2 {
        let look = home.run(&["receive", "kp", "--keep"]).code_is(1);
        assert_eq!(look.out(), "one\n", "{look}");
        assert!(look.err().contains("two"), "{look}");
        assert_eq!(home.state_of("kp").as_deref(), Some("Disconnected"));
    }
    let got = home.run(&["receive", "kp"]).code_is(1);
    assert_eq!(got.out(), "one\n", "{got}");
    assert_eq!(home.state_of("kp").as_deref(), Some("Opened"));
    home.run(&["receive", "kp", "--keep"])
        .code_is(3)
        .clear_error("no output to receive", 1);
}

/// A look's client acknowledges what it was shown (as every receiving client does); an
/// acknowledgement that reaches the session after the look ended must not consume the output
/// the look left for the next `receive` (CI saw the second look come back empty).
#[test]
fn a_late_acknowledgement_of_a_look_consumes_nothing() {
    use crate::common::system::{decode_responses, frames, hello};
    use std::io::{Read, Write};
    use tether_proto::{Request, Response, SessionList};
    let home = Home::new();
    home.new_session("ack", &[]);
    let started = home.scratch().join("ack.started");
    let script = format!("touch {}; sleep 0.3; echo kept", started.display());
    let mut bg = home.spawn(&["invoke", "-s", "ack", &script], "ack");
    wait_until(Duration::from_secs(10), "the command to start", || {
        started.exists()
    });
    home.run(&["disconnect", "ack"]).success();
    bg.wait(Duration::from_secs(10));
    // A raw look: Hello, Receive --keep, read to its Exit.
    let mut sock = std::os::unix::net::UnixStream::connect(home.socket()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let look = Request::Receive(SessionList {
        sessions: vec!["ack".into()],
        remote: None,
        keep: true,
    });
    let mut bytes = hello();
    bytes.extend(frames(&[look]));
    sock.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        assert!(Instant::now() < deadline, "no Exit for the look");
        let mut buf = [0u8; 4096];
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the look ended without an Exit");
        got.extend_from_slice(&buf[..n]);
        let (resp, _) = decode_responses(&got);
        if resp.iter().any(|r| matches!(r, Response::Exit(_))) {
            break resp;
        }
    };
    let shown: Vec<u8> = seen
        .iter()
        .filter_map(|r| match r {
            Response::Output { data, .. } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(shown, b"kept\n", "{seen:?}");
    // Now the late acknowledgement, and a request whose answer shows it was handled (or the
    // end of the connection, which shows it never will be).
    let _ = sock.write_all(&frames(&[Request::Ack(u64::MAX / 2), Request::HostInfo]));
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    let again = home.run(&["receive", "ack", "--keep"]).success();
    assert_eq!(again.out(), "kept\n", "{again}");
    let got = home.run(&["receive", "ack"]).success();
    assert_eq!(got.out(), "kept\n", "{got}");
}

/// A CLI killed while its command still reads stdin: that stdin ends with the CLI (nobody can
/// give it more), so the command finishes and the next invoke runs. Both ways to the host:
/// straight to it by name, and through the daemon by id.
#[test]
fn after_kill_9_of_a_cli_feeding_stdin_the_command_sees_its_end() {
    use std::io::Write;
    let home = Home::new();
    let created = home.new_session("c", &[]);
    let id = created["id"].as_u64().expect("session id").to_string();
    for (round, word) in ["c", id.as_str()].into_iter().enumerate() {
        let flag = home.scratch().join(format!("cat{round}.started"));
        let mut c = home.command();
        let script = format!("touch {}; cat; echo after-cat", flag.display());
        c.args(["invoke", "-s", word, &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut cli = c.spawn().expect("spawn tether");
        let mut feed = cli.stdin.take().expect("stdin pipe");
        feed.write_all(b"some input\n").expect("write stdin");
        wait_until(Duration::from_secs(10), "cat to start", || flag.exists());
        assert!(send_signal(cli.id(), "KILL"));
        let _ = cli.wait();
        // The pipe stays open on our side: only the CLI's death can end the command's input.
        let out = home
            .run(&["invoke", "-s", word, "--wait-timeout", "20s", "echo next"])
            .success();
        assert_eq!(out.out(), "next\n", "round {round} ({word}): {out}");
        assert!(
            out.err().contains("earlier command") && out.err().contains("status 0"),
            "round {round} ({word}): the command left behind did not end cleanly: {out}"
        );
        drop(feed);
    }
    assert_eq!(home.state_of("c").as_deref(), Some("Opened"));
}
