//! ssh forced commands (SPEC §3.19, issue 6 point 4): a key whose authorized_keys line forces
//! `tether bridge --configuration ops` reaches that configuration and nothing else, not even
//! the listing of other configurations' sessions. Through the sshd harness.

use crate::common::sshd::setup;
use crate::common::*;

#[test]
fn a_pinned_key_reaches_one_configuration_and_nothing_else() {
    let (sshd, remote, client) = setup();
    remote.run(&["daemon", "start"]).success();
    let dir = remote.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ops.toml"),
        "engine = \"restricted\"\n[[allow]]\ncommand = \"echo\"\nrest = \"re:[a-z ]*\"\n",
    )
    .unwrap();
    // A session of another configuration, made with the ordinary key.
    client
        .run(&["new", "tether-test", "--name", "open"])
        .success();
    remote.note_session(&remote.session("open"));

    let pinned = sshd.pinned_alias(&remote, "ops");
    let pc = sshd.client_for(&remote);
    let s = pc.run(&["new", &pinned, "--name", "p", "--json"]).success();
    assert_eq!(single_session(&s)["configuration_name"], "ops");
    remote.note_session(&remote.session("p"));
    pc.invoke("p", "echo pinned")
        .success()
        .stdout_is("pinned\n");
    pc.invoke("p", "id")
        .code_is(6)
        .clear_error("not allowed in configuration ops", 1);
    // Only this configuration's sessions are visible or reachable.
    let listed = pc
        .run(&["get", "--computer", &pinned, "--json"])
        .success()
        .json();
    let names: Vec<String> = names(listed.as_array().unwrap());
    assert_eq!(names, ["p"], "{listed}");
    pc.run(&["connect", "--computer", &pinned, "--name", "open"])
        .code_is(3)
        .clear_error("no session named open", 1);
    pc.run(&["new", &pinned, "--configuration", "default"])
        .code_is(6)
        .clear_error("limited to configuration ops", 1);
    let configs = pc
        .run(&["config", "list", "--computer", &pinned, "--json"])
        .success()
        .json();
    assert_eq!(configs.as_array().map(|c| c.len()), Some(1), "{configs}");
    assert_eq!(configs[0]["name"], "ops");
    // A temporary session through the pinned key has that configuration too.
    pc.run(&["invoke", "--computer", &pinned, "echo temporary"])
        .success()
        .stdout_is("temporary\n");
    pc.run(&["invoke", "--computer", &pinned, "id"])
        .code_is(6)
        .clear_error("not allowed", 1);
    // The other session is untouched, and the ordinary key still sees both.
    client
        .invoke("open", "echo $((1+1))")
        .success()
        .stdout_is("2\n");
    let all = client
        .run(&["get", "--computer", "tether-test", "--json"])
        .success()
        .json();
    assert_eq!(all.as_array().map(|a| a.len()), Some(2), "{all}");
}

// ---------------------------------------------------------------------------------------------
// A hostile holder of a pinned key: no tether CLI, raw requests over the bridge's link
// ---------------------------------------------------------------------------------------------

use crate::common::mux::{self, block_on};

use std::path::{Path, PathBuf};
use tether_proto::{InvokeSpec, NewSession, Request, Response};

/// What the client asks its sessions to start with: each would steer an allowed program.
fn hostile_env() -> Vec<(String, String)> {
    [
        ("LD_PRELOAD", "/x/evil.so"),
        ("GIT_DIR", "/x"),
        ("PATH", "/x/evil"),
        ("BASH_ENV", "/x/e"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The passwd entry's home of the user running the test.
fn passwd_home() -> PathBuf {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("the test's user has a passwd entry")
        .dir
}

/// PATH of a login of the user running the test.
fn login_path() -> &'static str {
    if nix::unistd::getuid().is_root() {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin"
    }
}

/// A restricted `ops` that allows `env` and `pwd` (no arguments), and marks its sessions.
fn write_ops(remote: &Home, working_directory: Option<&Path>) {
    let dir = remote.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    let wd = working_directory
        .map(|d| format!("working_directory = \"{}\"\n", d.display()))
        .unwrap_or_default();
    std::fs::write(
        dir.join("ops.toml"),
        format!(
            "engine = \"restricted\"\nenvironment = {{ OPS_MARK = \"1\" }}\n{wd}\
             [[allow]]\ncommand = \"env\"\n[[allow]]\ncommand = \"pwd\"\n"
        ),
    )
    .unwrap();
}

/// A directory the client claims to be in (the test made it; nothing should start there).
fn client_dir(remote: &Home) -> PathBuf {
    let d = remote.scratch().join("client-cwd");
    std::fs::create_dir_all(&d).unwrap();
    d.canonicalize().unwrap()
}

/// `tether bridge [--configuration C]` for `remote`'s home, as the forced command runs it.
fn bridge_command(remote: &Home, configuration: Option<&str>) -> std::process::Command {
    let mut c = remote.command();
    c.arg("bridge");
    if let Some(conf) = configuration {
        c.args(["--configuration", conf]);
    }
    for k in ["LD_PRELOAD", "GIT_DIR", "BASH_ENV"] {
        c.env_remove(k);
    }
    c
}

/// Creates session `name` with the hostile environment and directory; returns its
/// configuration's name.
async fn new_hostile(
    bridge: &mux::Bridge,
    name: &str,
    configuration: Option<&str>,
    cwd: &Path,
) -> String {
    let mut conn = bridge.connect().await;
    let reply = conn
        .request(&Request::New(NewSession {
            name: Some(name.into()),
            configuration: configuration.map(Into::into),
            env: hostile_env(),
            cwd: Some(cwd.display().to_string()),
            ..Default::default()
        }))
        .await;
    match reply {
        Response::Sessions(s) if s.len() == 1 && s[0].name == name => {
            s[0].configuration_name.clone()
        }
        other => panic!("new {name}: {other:?}\nbridge stderr: {}", bridge.stderr()),
    }
}

/// Runs `script` in session `session` (empty: a temporary session with the hostile
/// environment and directory).
async fn run(bridge: &mux::Bridge, session: &str, script: &str, cwd: &Path) -> mux::Ran {
    let temporary = session.is_empty();
    let ran = bridge
        .invoke(InvokeSpec {
            session: session.into(),
            script: script.into(),
            env: if temporary { hostile_env() } else { Vec::new() },
            cwd: temporary.then(|| cwd.display().to_string()),
            ..Default::default()
        })
        .await;
    let what = if temporary { "(temporary)" } else { session };
    eprintln!("--- {what} {script}:\n{ran}");
    ran
}

/// What `env` printed, checked line by line: none of the client's variables, nothing of the
/// daemon's `LD_PRELOAD`, the login PATH (and, pinned, the login HOME and the configuration's
/// variable).
#[track_caller]
fn assert_clean_env(ran: &mux::Ran, pinned: bool) {
    assert_eq!(ran.code(), 0, "{ran}");
    let out = ran.out();
    let lines: Vec<&str> = out.lines().collect();
    for k in ["LD_PRELOAD", "GIT_DIR", "BASH_ENV"] {
        assert!(
            !lines.iter().any(|l| l.starts_with(&format!("{k}="))),
            "{k} reached the session:\n{ran}"
        );
    }
    // Neither /x/evil… of the client nor the daemon's /nonexistent/evil.so (the dynamic
    // loader would complain about that one on stderr).
    assert!(
        !out.contains("evil") && !ran.err().contains("evil"),
        "an evil value came through:\n{ran}"
    );
    let path: Vec<&&str> = lines.iter().filter(|l| l.starts_with("PATH=")).collect();
    assert_eq!(path.len(), 1, "one PATH:\n{ran}");
    if pinned {
        assert_eq!(*path[0], format!("PATH={}", login_path()), "{ran}");
        let home = format!("HOME={}", passwd_home().display());
        assert!(lines.contains(&home.as_str()), "wanted {home}:\n{ran}");
        assert!(lines.contains(&"OPS_MARK=1"), "wanted OPS_MARK=1:\n{ran}");
    } else {
        assert_ne!(*path[0], "PATH=/x/evil", "{ran}");
    }
}

/// What `pwd` printed: exactly `want`.
#[track_caller]
fn assert_pwd(ran: &mux::Ran, want: &Path) {
    assert_eq!(ran.code(), 0, "{ran}");
    assert_eq!(ran.out(), format!("{}\n", want.display()), "{ran}");
}

#[test]
fn a_pinned_key_cannot_steer_the_environment_or_directory() {
    let remote = Home::new();
    write_ops(&remote, None);
    let cwd = client_dir(&remote);
    let home = passwd_home();
    assert_ne!(home, cwd);
    // No daemon yet: the bridge starts it, so the daemon's own environment has LD_PRELOAD.
    let mut cmd = bridge_command(&remote, Some("ops"));
    cmd.env("LD_PRELOAD", "/nonexistent/evil.so");
    let stderr = remote.scratch().join("bridge.stderr");
    let [env, pwd, temp_env, temp_pwd] = block_on(async {
        let bridge = mux::Bridge::start(cmd, stderr).await;
        let conf = new_hostile(&bridge, "p", Some("ops"), &cwd).await;
        assert_eq!(conf, "ops");
        [
            run(&bridge, "p", "env", &cwd).await,
            run(&bridge, "p", "pwd", &cwd).await,
            // A temporary session (no configuration named: the pin gives it `ops`).
            run(&bridge, "", "env", &cwd).await,
            run(&bridge, "", "pwd", &cwd).await,
        ]
    });
    assert_clean_env(&env, true);
    assert_pwd(&pwd, &home);
    assert_clean_env(&temp_env, true);
    assert_pwd(&temp_pwd, &home);
}

#[test]
fn a_pinned_configurations_working_directory_wins_over_the_clients() {
    let remote = Home::new();
    let wd = remote.scratch().join("ops-wd");
    std::fs::create_dir_all(&wd).unwrap();
    let wd = wd.canonicalize().unwrap();
    write_ops(&remote, Some(&wd));
    let cwd = client_dir(&remote);
    let mut cmd = bridge_command(&remote, Some("ops"));
    cmd.env("LD_PRELOAD", "/nonexistent/evil.so");
    let stderr = remote.scratch().join("bridge.stderr");
    let [pwd, env, temp_pwd, temp_env] = block_on(async {
        let bridge = mux::Bridge::start(cmd, stderr).await;
        new_hostile(&bridge, "p", Some("ops"), &cwd).await;
        [
            run(&bridge, "p", "pwd", &cwd).await,
            run(&bridge, "p", "env", &cwd).await,
            run(&bridge, "", "pwd", &cwd).await,
            run(&bridge, "", "env", &cwd).await,
        ]
    });
    assert_pwd(&pwd, &wd);
    assert_pwd(&temp_pwd, &wd);
    assert_clean_env(&env, true);
    assert_clean_env(&temp_env, true);
}

#[test]
fn an_unpinned_bridge_does_not_believe_the_clients_environment_or_directory() {
    let remote = Home::new();
    let cwd = client_dir(&remote);
    let stderr = remote.scratch().join("bridge.stderr");
    let cmd = bridge_command(&remote, None);
    // A shell session: `env` by its path, so a PATH of the client's cannot hide the rest.
    let [env, pwd, temp_env, temp_pwd] = block_on(async {
        let bridge = mux::Bridge::start(cmd, stderr).await;
        let conf = new_hostile(&bridge, "u", None, &cwd).await;
        assert_eq!(conf, "default");
        [
            run(&bridge, "u", "/usr/bin/env", &cwd).await,
            run(&bridge, "u", "pwd", &cwd).await,
            run(&bridge, "", "/usr/bin/env", &cwd).await,
            run(&bridge, "", "pwd", &cwd).await,
        ]
    });
    for ran in [&pwd, &temp_pwd] {
        assert_eq!(ran.code(), 0, "{ran}");
        let printed = PathBuf::from(ran.out().trim_end());
        assert_ne!(printed, cwd, "{ran}");
        assert_ne!(printed.canonicalize().ok().as_ref(), Some(&cwd), "{ran}");
    }
    assert_clean_env(&env, false);
    assert_clean_env(&temp_env, false);
}
