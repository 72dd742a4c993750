//! The native transport (`--transport native`, issue 20): the in-process SSH client reaches a
//! real sshd with the same far-side bootstrap as ssh, and behaves as the ssh transport does
//! for sessions, streams, Ctrl-C and broken connections; it refuses what it cannot check
//! (unknown host keys) or follow (proxies) in one line naming the computer.

use crate::common::sshd::{Sshd, setup};
use crate::common::*;
use std::time::Duration;

/// `args` with `--transport native` in front (a global option).
fn native<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--transport", "native"];
    v.extend_from_slice(args);
    v
}

/// The sshd's processes serving connections (each connection's sshd and what it runs).
fn sshd_connections(sshd: &Sshd) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{}/task", sshd.pid()))
        .into_iter()
        .flatten()
    {
        let Ok(t) = t else { continue };
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            kids.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

#[test]
fn a_native_link_creates_a_session_and_invokes_in_it() {
    let (_sshd, remote, client) = setup();
    client
        .run(&native(&["new", "tether-test", "--name", "n"]))
        .success();
    remote.note_session(&remote.session("n"));
    // State persists, and stdout, stderr and the status come back apart.
    client.invoke("n", "x=41; cd /tmp").success();
    let out = client
        .invoke("n", "echo $((x+1)) $PWD; echo oops >&2; (exit 7)")
        .code_is(7);
    assert_eq!(out.out(), "42 /tmp\n", "{out}");
    assert_eq!(out.err(), "oops\n", "{out}");
    // The link is the daemon's own: no ssh process under it.
    let st = client.run(&["daemon", "status", "--json"]).success().json();
    assert_eq!(st["links"][0]["pid"], 0, "{st}");
    let plain = client.run(&["daemon", "status"]).success();
    assert!(
        plain.out().contains(": native ssh in the daemon, tether "),
        "{plain}"
    );
    let daemon = client.running_daemon_pid();
    let kids = std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
        .unwrap_or_default();
    for k in kids.split_whitespace() {
        let pid: u32 = k.parse().unwrap();
        assert!(
            !cmdline(pid).starts_with("ssh"),
            "an ssh child: {}",
            cmdline(pid)
        );
    }
    // A temporary session on the same computer, with stdin.
    client
        .run_stdin(
            &native(&["invoke", "--computer", "tether-test", "tr a-z A-Z"]),
            b"shout\n",
        )
        .success()
        .stdout_is("SHOUT\n");
}

#[test]
fn ctrl_c_stops_a_command_over_a_native_link() {
    let (_sshd, _remote, client) = setup();
    let scratch = client.scratch();
    let pid_file = scratch.join("pid");
    let mut inv = client.spawn(
        &native(&[
            "invoke",
            "--computer",
            "tether-test",
            "--arg",
            pid_file.to_str().unwrap(),
            "--",
            &pid_then_exec(1, "sleep 300"),
        ]),
        "native-ctrl-c",
    );
    let pid = wait_pid_file(&pid_file);
    assert!(send_signal(inv.pid(), "INT"), "send SIGINT");
    let out = inv.wait(Duration::from_secs(30));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.code() == Some(130) || out.status().signal() == Some(2),
        "Ctrl-C should end the remote command with 130:\n{out}"
    );
    wait_gone(pid, "the remote command stopped by Ctrl-C");
}

fn numbered(n: u32) -> String {
    format!("i=1; while [ $i -le {n} ]; do echo line $i; i=$((i+1)); sleep 0.01; done; (exit 5)")
}

/// The TCP connection under a streaming command is cut (the far sshd serving it is killed):
/// the client notices, connects again and the stream resumes with every line once.
#[test]
fn a_cut_native_connection_is_noticed_and_the_stream_resumes() {
    let (sshd, remote, client) = setup();
    client
        .run(&native(&["new", "tether-test", "--name", "s"]))
        .success();
    remote.note_session(&remote.session("s"));
    let mut cli = client.spawn(&["invoke", "-s", "s", &numbered(300)], "native-cut");
    let lines =
        |bg: &Background| std::fs::read_to_string(&bg.stdout_path).map_or(0, |s| s.lines().count());
    wait_until(WAIT, "output streams", || lines(&cli) >= 30);
    let conns = sshd_connections(&sshd);
    assert!(!conns.is_empty(), "no sshd connection to cut");
    for pid in &conns {
        send_signal(*pid, "KILL");
    }
    let out = cli.wait(Duration::from_secs(90)).code_is(5);
    let want: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    assert!(out.out() == want, "lines lost or repeated:\n{out}");
    assert!(out.err().contains("reconnecting"), "{out}");
    assert!(out.err().contains("restored"), "{out}");
    // A new connection carries the session now.
    assert!(sshd_connections(&sshd).iter().all(|p| !conns.contains(p)));
    client.invoke("s", "echo $i").success().stdout_is("301\n");
}

/// The harness's ssh config with `StrictHostKeyChecking strict` (plus `extra` lines) and
/// `known` as the user's known_hosts, written into `dir`.
fn strict_config(
    sshd: &Sshd,
    dir: &std::path::Path,
    known: &std::path::Path,
    strict: &str,
    extra: &str,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(sshd.config())
        .unwrap()
        .replace(
            "StrictHostKeyChecking no",
            &format!("StrictHostKeyChecking {strict}{extra}"),
        )
        .replace(
            "UserKnownHostsFile /dev/null",
            &format!("UserKnownHostsFile {}", known.display()),
        );
    let path = dir.join(format!("ssh_config_{strict}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// With `StrictHostKeyChecking yes` and an empty known_hosts, the key is refused, naming the
/// computer and its fingerprint; once known_hosts lists it (as `accept-new` writes it), the
/// same computer is reached.
#[test]
fn an_unknown_host_key_is_refused_and_accept_new_learns_it() {
    let (sshd, _remote, client) = setup();
    let dir = temp_dir();
    let known = dir.path().join("known_hosts");
    let cfg = |strict: &str| strict_config(&sshd, dir.path(), &known, strict, "");
    let strict = cfg("yes");
    let strict = strict.to_str().unwrap();
    let out = client
        .run(&native(&[
            "--ssh-config",
            strict,
            "invoke",
            "--computer",
            "tether-test",
            "true",
        ]))
        .code_is(5);
    let line = out.err_lines().join("\n");
    assert_eq!(out.err_lines().len(), 1, "{out}");
    assert!(line.contains("tether-test"), "{out}");
    assert!(
        line.contains("SHA256:") && line.contains("not in known_hosts"),
        "{out}"
    );
    assert!(!known.exists(), "a refused key was written down");

    let learn = cfg("accept-new");
    let learn = learn.to_str().unwrap();
    client
        .run(&native(&[
            "--ssh-config",
            learn,
            "invoke",
            "--computer",
            "tether-test",
            "true",
        ]))
        .success();
    let listed = std::fs::read_to_string(&known).unwrap();
    assert!(
        listed.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{listed}"
    );
    // Now strict checking finds it (a new daemon: no warm link to reuse).
    client.run(&["daemon", "stop"]).success();
    client
        .run(&native(&[
            "--ssh-config",
            strict,
            "invoke",
            "--computer",
            "tether-test",
            "echo ok",
        ]))
        .success()
        .stdout_is("ok\n");
    // A different key under that name is a changed key: refused even with accept-new.
    std::fs::write(
        &known,
        format!(
            "[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB\n",
            sshd.port
        ),
    )
    .unwrap();
    client.run(&["daemon", "stop"]).success();
    let out = client
        .run(&native(&[
            "--ssh-config",
            learn,
            "invoke",
            "--computer",
            "tether-test",
            "true",
        ]))
        .code_is(5);
    assert!(
        out.err().contains("is not the one known_hosts has"),
        "{out}"
    );
    assert!(out.err().contains("ssh-keygen -R"), "{out}");
}

/// With `HashKnownHosts yes`, a key learned by `accept-new` is written under a hashed name,
/// as ssh writes it: the file does not name the computer, and OpenSSH's own tools find the
/// line (`ssh-keygen -F`) and accept the key with strict checking (`ssh`).
#[test]
fn accept_new_writes_a_hashed_name_that_openssh_reads() {
    let (sshd, _remote, client) = setup();
    let dir = temp_dir();
    let known = dir.path().join("known_hosts");
    let cfg =
        |strict: &str| strict_config(&sshd, dir.path(), &known, strict, "\n  HashKnownHosts yes");
    let learn = cfg("accept-new");
    client
        .run(&native(&[
            "--ssh-config",
            learn.to_str().unwrap(),
            "invoke",
            "--computer",
            "tether-test",
            "true",
        ]))
        .success();
    let listed = std::fs::read_to_string(&known).unwrap();
    assert!(listed.starts_with("|1|"), "{listed}");
    assert!(!listed.contains("127.0.0.1"), "{listed}");
    let name = format!("[127.0.0.1]:{}", sshd.port);
    let found = std::process::Command::new("ssh-keygen")
        .args(["-F", &name, "-f"])
        .arg(&known)
        .output()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(
        found.status.success(),
        "ssh-keygen -F {name} did not find the line: {}",
        String::from_utf8_lossy(&found.stderr)
    );
    let strict = cfg("yes");
    let ssh = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&strict)
        .args(["tether-test", "echo ok"])
        .output()
        .expect("ssh (apt-get install openssh-client)");
    assert_eq!(
        (
            ssh.status.code(),
            String::from_utf8_lossy(&ssh.stdout).as_ref()
        ),
        (Some(0), "ok\n"),
        "{}",
        String::from_utf8_lossy(&ssh.stderr)
    );
}

#[test]
fn a_proxy_in_the_ssh_config_is_refused_clearly() {
    let (sshd, _remote, client) = setup();
    let dir = temp_dir();
    let cfg = dir.path().join("ssh_config");
    for (line, what) in [
        ("ProxyCommand nc %h %p", "ProxyCommand"),
        ("ProxyJump tether-1", "ProxyJump"),
    ] {
        let text = std::fs::read_to_string(sshd.config()).unwrap();
        std::fs::write(&cfg, format!("Host tether-test\n  {line}\n{text}")).unwrap();
        let out = client
            .run(&native(&[
                "--ssh-config",
                cfg.to_str().unwrap(),
                "invoke",
                "--computer",
                "tether-test",
                "true",
            ]))
            .failure();
        assert_eq!(out.err_lines().len(), 1, "{out}");
        let e = out.err();
        assert!(e.contains("tether-test") && e.contains(what), "{out}");
        assert!(e.contains("--transport ssh"), "{out}");
    }
    // The same config works with the ssh transport's own ProxyCommand handling untouched:
    // the default transport is still ssh.
    let out = client.run(&["invoke", "--computer", "tether-1", "echo via-ssh"]);
    out.success().stdout_is("via-ssh\n");
}

/// The user's `Ciphers` and `KexAlgorithms` hold over a native link as over ssh: a list the
/// native client can follow connects (here one cipher russh never offers by itself), and one
/// it cannot (3des-cbc only) is refused in one line, not replaced by other ciphers.
#[test]
fn the_ciphers_of_the_ssh_config_are_followed_or_refused() {
    let (sshd, _remote, client) = setup();
    let dir = temp_dir();
    let cfg = dir.path().join("ssh_config");
    let run = |lines: &str| {
        let text = std::fs::read_to_string(sshd.config()).unwrap();
        std::fs::write(&cfg, format!("Host tether-test\n{lines}{text}")).unwrap();
        client.run(&["daemon", "stop"]).success();
        client.run(&native(&[
            "--ssh-config",
            cfg.to_str().unwrap(),
            "invoke",
            "--computer",
            "tether-test",
            "echo ok",
        ]))
    };
    run("  Ciphers aes128-gcm@openssh.com\n  KexAlgorithms curve25519-sha256\n")
        .success()
        .stdout_is("ok\n");
    let out = run("  Ciphers 3des-cbc\n").failure();
    assert_eq!(out.err_lines().len(), 1, "{out}");
    let e = out.err();
    assert!(
        e.contains("tether-test") && e.contains("Ciphers 3des-cbc"),
        "{out}"
    );
    assert!(e.contains("--transport ssh"), "{out}");
}

/// An alias that names no key file logs in with the agent of the CLI call only, and with
/// `ForwardAgent` the far command reaches that agent through the native connection.
#[test]
fn the_agent_logs_in_and_is_forwarded_over_a_native_link() {
    use crate::agent::{Agent, run_with};
    let (sshd, _remote, client) = setup();
    let dir = temp_dir();
    let cfg = dir.path().join("ssh_config");
    let text = std::fs::read_to_string(sshd.config()).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "Host tether-agent\n  HostName 127.0.0.1\n  Port {port}\n  IdentitiesOnly no\n  \
             ForwardAgent yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             BatchMode yes\n{text}",
            port = sshd.port
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let args = native(&[
        "--ssh-config",
        cfg,
        "invoke",
        "--computer",
        "tether-agent",
        "ssh-add -l >/dev/null && echo agent-reached",
    ]);
    // No agent: refused, in one line naming the computer and what was tried.
    let out = run_with(&client, None, &args).code_is(5);
    assert_eq!(out.err_lines().len(), 1, "{out}");
    assert!(out.err().contains("tether-agent"), "{out}");
    assert!(out.err().contains("Permission denied"), "{out}");
    // With the agent: logged in, and the far command reaches it.
    let agent = Agent::start(&sshd.client_key());
    run_with(&client, Some(&agent.sock), &args)
        .success()
        .stdout_is("agent-reached\n");
}

/// The path to the computer goes silent for longer than the keepalives (no FIN, no RST): the
/// native client notices by its keepalives, as ssh does, retries, and the stream resumes with
/// every line once when the path is back.
#[test]
fn a_silent_native_connection_is_noticed_by_keepalives_and_resumed() {
    let ns = crate::common::netns::Netns::create();
    let sshd = Sshd::start_at(Some(&ns.name), &ns.inner);
    let remote = Home::new();
    let client = sshd.client_for(&remote);
    let fast = [
        "--transport",
        "native",
        "--ssh-option",
        "ServerAliveInterval=1",
        "--ssh-option",
        "ServerAliveCountMax=2",
        "--connect-timeout",
        "2s",
    ];
    let mut new = fast.to_vec();
    new.extend(["new", "tether-test", "--name", "k"]);
    client.run(&new).success();
    remote.note_session(&remote.session("k"));
    let cli = client.spawn(&["invoke", "-s", "k", &numbered(800)], "native-netns");
    let lines =
        |bg: &Background| std::fs::read_to_string(&bg.stdout_path).map_or(0, |s| s.lines().count());
    wait_until(WAIT, "output streams", || lines(&cli) >= 50);
    ns.link(false);
    wait_until(Duration::from_secs(30), "the client notices", || {
        std::fs::read_to_string(&cli.stderr_path).is_ok_and(|e| e.contains("reconnecting"))
    });
    ns.link(true);
    let mut cli = cli;
    let out = cli.wait(Duration::from_secs(90)).code_is(5);
    let want: String = (1..=800).map(|i| format!("line {i}\n")).collect();
    assert!(out.out() == want, "lines lost or repeated:\n{out}");
    assert!(out.err().contains("restored"), "{out}");
    drop(client);
    drop(sshd);
}

/// A computer without tether gets this binary over the native channel, as over ssh, checked
/// by its hash; the copy is what runs there.
#[test]
fn a_native_link_copies_tether_to_a_computer_without_it() {
    let (sshd, remote, _) = setup();
    let client = Home::new()
        .env("TETHER_SSH_CONFIG", sshd.config().to_str().unwrap())
        .env("TETHER_REMOTE_EXE", "tether-not-installed-here")
        .env("TETHER_REMOTE_HOME", remote.path().to_str().unwrap());
    client
        .run(&native(&[
            "invoke",
            "--computer",
            "tether-test",
            "echo copied",
        ]))
        .success()
        .stdout_is("copied\n");
    let copies: Vec<_> = std::fs::read_dir(remote.path().join("bin"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(copies.len(), 1, "one copy and no leftovers: {copies:?}");
    assert!(
        std::fs::read(&copies[0]).unwrap() == std::fs::read(tether_bin()).unwrap(),
        "the copy differs from this tether"
    );
    let daemon = remote.running_daemon_pid();
    assert_eq!(
        std::fs::read_link(format!("/proc/{daemon}/exe")).unwrap(),
        copies[0]
    );
}
