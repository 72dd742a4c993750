//! ssh agents follow the user (issue 17, point 4), through a real sshd on 127.0.0.1 and real
//! `ssh-agent`s: a link authenticates with the agent of the CLI call that opens it, whatever
//! the daemon's own environment; `tether doctor --computer` tests authentication the same way;
//! and with `ForwardAgent` a remote session reaches a working agent through a stable path for
//! as long as some link from its client is up.
//!
//! The computers here are ssh aliases that name no key file: only a key in the agent logs in.

use crate::common::sshd::Sshd;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running `ssh-agent` (our child, in the foreground) holding `key`; killed on drop.
pub(crate) struct Agent {
    child: std::process::Child,
    pub(crate) sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub(crate) fn start(key: &Path) -> Agent {
        require_program("ssh-agent", "openssh-client");
        let dir = temp_dir();
        let sock = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        wait_until(WAIT, "ssh-agent listens", || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &sock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-add: {out:?}");
        Agent {
            child,
            sock,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `tether ARGS…` for `home` with exactly this `SSH_AUTH_SOCK` (none with `None`).
pub(crate) fn run_with(home: &Home, agent: Option<&Path>, args: &[&str]) -> Out {
    let mut c = home.command();
    c.env_remove("SSH_AUTH_SOCK");
    if let Some(a) = agent {
        c.env("SSH_AUTH_SOCK", a);
    }
    c.args(args);
    run_command(c, None, CMD_TIMEOUT)
}

/// The client's links: (computer, ssh pid).
fn links(client: &Home) -> Vec<(String, u32)> {
    let st = run_with(client, None, &["daemon", "status", "--json"])
        .success()
        .json();
    st["links"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            (
                l["computer"].as_str().unwrap_or("").to_string(),
                l["pid"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect()
}

fn link_pid(client: &Home, computer: &str) -> Option<u32> {
    links(client)
        .into_iter()
        .find(|(c, _)| c == computer)
        .map(|(_, p)| p)
}

/// Kills the ssh process of the client's link to `computer` and waits until the link is gone.
fn kill_link(client: &Home, computer: &str) {
    let pid = link_pid(client, computer).unwrap_or_else(|| panic!("no link to {computer}"));
    assert!(send_signal(pid, "KILL"));
    wait_gone(pid, "the link's ssh");
    wait_until(WAIT, "the client daemon sees the link gone", || {
        link_pid(client, computer).is_none()
    });
}

#[test]
fn links_use_the_agent_of_the_call_that_opens_them() {
    let sshd = Sshd::start();
    let remote = Home::new();
    let c = sshd.agent_alias("tether-agent");
    let client = sshd.client_for(&remote);
    // The daemon starts with no agent at all.
    run_with(&client, None, &["daemon", "start"]).success();
    let daemon = client.running_daemon_pid();
    // No agent, no key file: refused, and the error says so.
    let out = run_with(&client, None, &["invoke", "--computer", &c, "true"])
        .code_is(5)
        .clear_error("computer tether-agent", 1);
    assert!(out.err().contains("Permission denied"), "{out}");
    assert!(out.err().contains("SSH_AUTH_SOCK"), "{out}");

    let mut first = Agent::start(&sshd.client_key());
    run_with(
        &client,
        Some(&first.sock),
        &["invoke", "--computer", &c, "echo first"],
    )
    .success()
    .stdout_is("first\n");
    let warm = link_pid(&client, &c).expect("a warm link");
    // A warm link does not need the agent again: a call without one uses it.
    run_with(&client, None, &["invoke", "--computer", &c, "echo warm"])
        .success()
        .stdout_is("warm\n");
    assert_eq!(link_pid(&client, &c), Some(warm));

    // The first agent goes; a second one comes, and the daemon (the same) uses it for the
    // next link.
    first.stop();
    kill_link(&client, &c);
    let second = Agent::start(&sshd.client_key());
    run_with(
        &client,
        Some(&second.sock),
        &["invoke", "--computer", &c, "echo second"],
    )
    .success()
    .stdout_is("second\n");
    assert_ne!(link_pid(&client, &c), Some(warm));
    assert_eq!(
        client.running_daemon_pid(),
        daemon,
        "the daemon was restarted"
    );
}

#[test]
fn an_idle_link_whose_agent_is_gone_makes_way_for_a_live_one() {
    let sshd = Sshd::start();
    let remote = Home::new();
    let c = sshd.agent_alias("tether-agent");
    let client = sshd.client_for(&remote);
    let mut first = Agent::start(&sshd.client_key());
    run_with(
        &client,
        Some(&first.sock),
        &["invoke", "--computer", &c, "true"],
    )
    .success();
    let old = link_pid(&client, &c).expect("a warm link");
    first.stop();
    let second = Agent::start(&sshd.client_key());
    run_with(
        &client,
        Some(&second.sock),
        &["invoke", "--computer", &c, "true"],
    )
    .success();
    let new = link_pid(&client, &c).expect("a warm link");
    assert_ne!(new, old, "the link of the dead agent was kept");
    wait_gone(old, "the replaced link's ssh");
}

#[test]
fn doctor_tests_authentication_with_the_agent_links_would_use() {
    let sshd = Sshd::start();
    let remote = Home::new();
    let c = sshd.agent_alias("tether-agent");
    let client = sshd.client_for(&remote);
    let out = run_with(&client, None, &["doctor", "--computer", &c]).code_is(1);
    let text = out.out();
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 1, "one problem:\n{out}");
    assert!(
        fails[0].starts_with("FAIL  tether-agent: ssh: authentication failed"),
        "{out}"
    );
    assert!(fails[0].contains("SSH_AUTH_SOCK is not set"), "{out}");

    let mut agent = Agent::start(&sshd.client_key());
    let out = run_with(&client, Some(&agent.sock), &["doctor", "--computer", &c]).success();
    assert!(
        out.out().contains("ok    tether-agent: ssh: reachable"),
        "{out}"
    );
    // An agent that is gone is named as such.
    agent.stop();
    let out = run_with(&client, Some(&agent.sock), &["doctor", "--computer", &c]).code_is(1);
    assert!(out.out().contains("does not answer"), "{out}");
}

/// The far side's stable agent path for `client`, and where it points now.
fn far_link(remote: &Home, client: &Home) -> (PathBuf, Option<PathBuf>) {
    let id = std::fs::read_to_string(client.path().join("client-id")).unwrap();
    let link = remote.path().join("agent").join(id.trim());
    let target = std::fs::read_link(&link).ok();
    (link, target)
}

#[test]
fn a_forwarded_agent_stays_reachable_in_a_session_while_a_link_is_up() {
    let sshd = Sshd::start();
    let remote = Home::new();
    let a = sshd.agent_alias("tether-agent");
    let b = sshd.agent_alias("tether-agent-b");
    let client = sshd.client_for(&remote);
    let agent = Agent::start(&sshd.client_key());
    let fwd = ["--ssh-option", "ForwardAgent=yes"];
    let ag = Some(agent.sock.as_path());
    let mut args = vec!["new", a.as_str(), "--name", "fwd"];
    args.extend(fwd);
    run_with(&client, ag, &args).success();
    let check = "printf '%s\\n' \"$SSH_AUTH_SOCK\"; ssh-add -l >/dev/null && echo agent-ok";
    let out = run_with(&client, ag, &["invoke", "-s", "fwd", "--", check]).success();
    let (link, via_a) = far_link(&remote, &client);
    assert_eq!(
        out.out(),
        format!("{}\nagent-ok\n", link.display()),
        "the session's SSH_AUTH_SOCK is the client's stable path"
    );
    let via_a = via_a.expect("the stable path is a link");
    assert_ne!(via_a, link);

    // A second link of the same client (another computer name) is the newest: the path
    // follows it; when it dies, the path goes back to the first, and the session never
    // notices.
    let mut args = vec!["invoke", "--computer", b.as_str()];
    args.extend(fwd);
    args.push("true");
    run_with(&client, ag, &args).success();
    wait_until(WAIT, "the path points at the newest link's agent", || {
        far_link(&remote, &client).1.is_some_and(|t| t != via_a)
    });
    kill_link(&client, &b);
    wait_until(
        WAIT,
        "the path points at the first link's agent again",
        || far_link(&remote, &client).1.as_ref() == Some(&via_a),
    );
    run_with(&client, ag, &["invoke", "-s", "fwd", "--", check])
        .success()
        .stdout_is(&format!("{}\nagent-ok\n", link.display()));

    // The last link dies: the path goes with its socket. The next call makes a new link
    // (ForwardAgent is part of the session's target), with a new forwarded socket, and the
    // same session reaches the agent through the same path.
    kill_link(&client, &a);
    wait_until(WAIT, "the path goes with the last link", || {
        far_link(&remote, &client).1.is_none()
    });
    run_with(&client, ag, &["invoke", "-s", "fwd", "--", check])
        .success()
        .stdout_is(&format!("{}\nagent-ok\n", link.display()));
    let (_, now) = far_link(&remote, &client);
    assert!(
        now.as_ref().is_some_and(|t| *t != via_a),
        "a new socket: {now:?}"
    );
}
