//! Ending a session ends everything it started (issue 17, point 6): `remove` reaches background
//! jobs, `setsid`/`nohup` processes and double-forked daemons, through the session's cgroup
//! where the machine allows one and through the host's descendants (it is its shell's
//! subreaper) otherwise; the shell's EXIT trap runs first, SIGHUP comes next and SIGKILL after
//! the grace period; a host stopped with SIGTERM does the same; `invoke --isolated` runs in a
//! subshell whose changes (`set -e` among them) do not persist, and a session broken by a
//! `set -e` left on says so.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The grace period between SIGHUP and SIGKILL, plus a margin for a loaded machine.
const GRACE_AND_MARGIN: Duration = Duration::from_secs(9);

/// What every process this file starts runs: `sleep 4242`, recognisable in `/proc`.
const MARK: &str = "sleep 4242";

/// Processes a test started; those still alive at the end (a failed test) are killed, by pid,
/// after checking they are still ours.
#[derive(Default)]
struct Started(Vec<u32>);

impl Drop for Started {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if pid_alive(pid) && cmdline(pid).contains(MARK) {
                eprintln!("cleanup: process {pid} outlived its session; killing it");
                send_signal(pid, "KILL");
            }
        }
    }
}

/// A script in the test's scratch directory: `spawn.sh FILE [ignore-hup]` writes its pid to
/// FILE (atomically) and becomes `sleep 4242`, ignoring SIGHUP if asked.
fn spawner(home: &Home) -> PathBuf {
    let path = home.scratch().join("spawn.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$2\" = ignore-hup ] && trap '' HUP\n\
             echo $$ > \"$1.t\" && mv \"$1.t\" \"$1\" && exec {MARK}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn zsh() -> &'static str {
    ["/usr/bin/zsh", "/bin/zsh"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/usr/bin/zsh")
}

/// bash, dash and zsh, each with a home whose sessions run it.
fn shells() -> Vec<(&'static str, Home)> {
    require_program("dash", "dash");
    require_program("zsh", "zsh");
    vec![
        ("bash", Home::new()),
        ("dash", Home::new().env("TETHER_SHELL", "/bin/dash")),
        ("zsh", Home::new().env("TETHER_SHELL", zsh())),
    ]
}

fn shell_pid(home: &Home, session: &str) -> u32 {
    home.invoke(session, "echo $$")
        .success()
        .out()
        .trim()
        .parse()
        .unwrap()
}

/// Whether a process is in a session cgroup made by tether.
fn in_session_cgroup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| {
        c.lines()
            .any(|l| l.starts_with("0::") && l.contains("/tether-"))
    })
}

/// Waits until every pid is gone, at most `limit` after `since`; says which is left otherwise.
#[track_caller]
fn wait_all_gone(pids: &[(String, u32)], since: Instant, limit: Duration) {
    let left = limit.saturating_sub(since.elapsed());
    wait_until(left, "every process of the session has ended", || {
        pids.iter().all(|(_, p)| !pid_alive(*p))
    });
    for (what, p) in pids {
        assert!(!pid_alive(*p), "{what} ({p}) is still running");
    }
}

/// Starts one process of every kind that escapes a shell's job control, and returns them.
fn start_everything(home: &Home, session: &str, started: &mut Started) -> Vec<(String, u32)> {
    require_program("setsid", "util-linux");
    require_program("nohup", "coreutils");
    let spawn = spawner(home);
    let dir = home.scratch();
    let script = r#"s=$1; d=$2
"$s" "$d/job" &
( setsid "$s" "$d/double-forked-daemon" & ) &
nohup "$s" "$d/nohup" >/dev/null 2>&1 &
setsid -f "$s" "$d/setsid-f"
bash -c 'set -m; "$0" "$1" &' "$s" "$d/new-process-group" &
"$s" "$d/stopped" & p=$!; until [ -e "$d/stopped" ]; do sleep 0.01; done; kill -STOP $p
"$s" "$d/ignores-sighup" ignore-hup &
echo started"#;
    home.invoke_args(
        session,
        script,
        &[spawn.to_str().unwrap(), dir.to_str().unwrap()],
    )
    .success()
    .stdout_is("started\n");
    let names = [
        "job",
        "double-forked-daemon",
        "nohup",
        "setsid-f",
        "new-process-group",
        "stopped",
        "ignores-sighup",
    ];
    let pids: Vec<(String, u32)> = names
        .iter()
        .map(|n| (n.to_string(), wait_pid_file(&dir.join(n))))
        .collect();
    started.0.extend(pids.iter().map(|(_, p)| *p));
    pids
}

fn remove_ends_everything(home: Home, cgroup: bool) {
    let mut started = Started::default();
    home.new_session("all", &[]);
    let shell = shell_pid(&home, "all");
    assert_eq!(
        in_session_cgroup(shell),
        cgroup,
        "the shell's cgroup: {:?}",
        std::fs::read_to_string(format!("/proc/{shell}/cgroup"))
    );
    let pids = start_everything(&home, "all", &mut started);
    // They really left the shell's session and process groups behind.
    for (what, p) in &pids {
        assert!(pid_alive(*p), "{what} ({p}) should be running");
        if what == "double-forked-daemon" || what == "setsid-f" {
            assert_ne!(stat_field(*p, 6), Some(shell.to_string()), "{what}: sid");
        }
        if cgroup {
            assert!(in_session_cgroup(*p), "{what} is in the session's cgroup");
        }
    }
    let host = host_pid(&home.session("all"));
    let t0 = Instant::now();
    home.run(&["remove", "all"]).success();
    let mut all = pids.clone();
    all.push(("the shell".into(), shell));
    all.push(("the session host".into(), host));
    wait_all_gone(&all, t0, GRACE_AND_MARGIN);
}

#[test]
fn remove_ends_jobs_daemons_and_setsid_processes() {
    let home = Home::new();
    // Where the machine allows it (cgroup v2, ours to write) the session has a cgroup.
    let cgroup = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.contains(" - cgroup2 "))
        && probe_cgroup(&home);
    remove_ends_everything(home, cgroup);
}

/// Whether a session of this home gets a cgroup (the machine allows it).
fn probe_cgroup(home: &Home) -> bool {
    home.new_session("probe", &[]);
    let shell = shell_pid(home, "probe");
    let yes = in_session_cgroup(shell);
    home.run(&["remove", "probe"]).success();
    eprintln!("session cgroups on this machine: {yes}");
    yes
}

#[test]
fn remove_ends_everything_without_a_cgroup_through_the_subreaper() {
    remove_ends_everything(Home::new().env("TETHER_CGROUP", "0"), false);
}

#[test]
fn the_exit_trap_runs_first_then_sighup_then_sigkill() {
    for (shell, home) in shells() {
        let mut started = Started::default();
        let spawn = spawner(&home);
        let dir = home.scratch();
        home.new_session("t", &[]);
        // The trap reports whether the job was still alive when it ran: it must be (the shell
        // goes first), and the job must be gone afterwards.
        let script = r#"s=$1; d=$2
"$s" "$d/job" &
"$s" "$d/stubborn" ignore-hup &
trap 'if kill -0 "$(cat "$d/job")" 2>/dev/null; then r=alive; else r=gone; fi; echo "bye $r" > "$d/trap"' EXIT"#;
        home.invoke_args(
            "t",
            script,
            &[spawn.to_str().unwrap(), dir.to_str().unwrap()],
        )
        .success();
        let job = wait_pid_file(&dir.join("job"));
        let stubborn = wait_pid_file(&dir.join("stubborn"));
        started.0.extend([job, stubborn]);
        let t0 = Instant::now();
        home.run(&["remove", "t"]).success();
        wait_until(WAIT, &format!("{shell}: the EXIT trap ran"), || {
            std::fs::read_to_string(dir.join("trap")).is_ok_and(|t| t.ends_with('\n'))
        });
        assert_eq!(
            std::fs::read_to_string(dir.join("trap")).unwrap(),
            "bye alive\n",
            "{shell}: the trap runs before the session's processes are signalled"
        );
        wait_all_gone(
            &[
                ("job".into(), job),
                ("job ignoring SIGHUP".into(), stubborn),
            ],
            t0,
            GRACE_AND_MARGIN,
        );
    }
}

#[test]
fn a_host_stopped_with_sigterm_ends_its_busy_session_politely() {
    for (shell, home) in shells() {
        let mut started = Started::default();
        let spawn = spawner(&home);
        let dir = home.scratch();
        home.new_session("busy", &[]);
        let host = host_pid(&home.session("busy"));
        let shell_pid = shell_pid(&home, "busy");
        let trap = dir.join("trap");
        // ("$1" is expanded now: later invocations set their own positional parameters.)
        home.invoke_args(
            "busy",
            "trap \"echo bye > '$1'\" EXIT",
            &[trap.to_str().unwrap()],
        )
        .success();
        let script = format!(
            "'{s}' '{d}/job' & '{s}' '{d}/stubborn' ignore-hup & '{s}' '{d}/foreground'",
            s = spawn.display(),
            d = dir.display()
        );
        let mut running = home.spawn(&["invoke", "-s", "busy", "--", &script], "invoke");
        let pids: Vec<(String, u32)> = ["job", "stubborn", "foreground"]
            .iter()
            .map(|n| (n.to_string(), wait_pid_file(&dir.join(n))))
            .collect();
        started.0.extend(pids.iter().map(|(_, p)| *p));
        let t0 = Instant::now();
        assert!(send_signal(host, "TERM"), "{shell}: kill -TERM the host");
        let mut all = pids;
        all.push(("the shell".into(), shell_pid));
        all.push(("the session host".into(), host));
        wait_all_gone(&all, t0, GRACE_AND_MARGIN);
        let out = running.wait(CMD_TIMEOUT);
        assert_ne!(out.code(), Some(0), "{shell}: the command was ended: {out}");
        let s = home.session("busy");
        assert_eq!(s["state"], "Closed", "{shell}: {s:#}");
        assert!(
            s["reason"].as_str().unwrap_or("").contains("SIGTERM"),
            "{shell}: {s:#}"
        );
        if shell == "bash" {
            // bash runs its EXIT trap on SIGHUP (dash only on a trapped signal).
            assert_eq!(std::fs::read_to_string(&trap).unwrap_or_default(), "bye\n");
        }
    }
}

#[test]
fn a_host_stopped_with_sigterm_while_idle_runs_the_exit_trap() {
    for (shell, home) in shells() {
        home.new_session("idle", &[]);
        let host = host_pid(&home.session("idle"));
        let trap = home.scratch().join("trap");
        home.invoke_args(
            "idle",
            "trap 'echo bye > \"$1\"' EXIT",
            &[trap.to_str().unwrap()],
        )
        .success();
        assert!(send_signal(host, "TERM"));
        wait_gone(host, "the session host");
        assert_eq!(
            std::fs::read_to_string(&trap).unwrap_or_default(),
            "bye\n",
            "{shell}"
        );
        assert_eq!(home.state_of("idle").as_deref(), Some("Closed"), "{shell}");
    }
}

#[test]
fn a_killed_hosts_leftovers_are_ended_by_the_next_host_in_its_cgroup() {
    let home = Home::new();
    let mut started = Started::default();
    let spawn = spawner(&home);
    let dir = home.scratch();
    home.new_session("dead", &[]);
    let shell = shell_pid(&home, "dead");
    if !in_session_cgroup(shell) {
        eprintln!(
            "no session cgroups on this machine: SIGKILL of a host leaves its session to init"
        );
        return;
    }
    let host = host_pid(&home.session("dead"));
    home.invoke_args(
        "dead",
        "\"$1\" \"$2/job\" &",
        &[spawn.to_str().unwrap(), dir.to_str().unwrap()],
    )
    .success();
    let job = wait_pid_file(&dir.join("job"));
    started.0.extend([job, shell]);
    assert!(send_signal(host, "KILL"));
    wait_gone(host, "the killed host");
    // The next session's host finds the dead host's cgroup beside its own.
    home.new_session("next", &[]);
    wait_gone(job, "the dead session's job");
    wait_gone(shell, "the dead session's shell");
}

#[test]
fn isolated_invocations_see_the_session_and_keep_nothing() {
    for (shell, home) in shells() {
        home.new_session("iso", &[]);
        home.invoke("iso", "x=1; cd /tmp; f() { echo \"fn $1\"; }")
            .success();
        let out = home.run(&[
            "invoke",
            "-s",
            "iso",
            "--isolated",
            "--",
            "f a; echo \"$x $PWD\"; x=2; cd /; unset -f f; set -e; false; echo not reached",
        ]);
        out.code_is(1).stdout_is("fn a\n1 /tmp\n");
        home.run(&["invoke", "-s", "iso", "--isolated", "--", "exit 7"])
            .code_is(7);
        home.run(&[
            "invoke",
            "-s",
            "iso",
            "--isolated",
            "--arg",
            "a b",
            "--",
            "echo \"[$1]\"",
        ])
        .success()
        .stdout_is("[a b]\n");
        home.invoke(
            "iso",
            "f b; echo \"$x $PWD\"; case $- in *e*) echo errexit;; esac",
        )
        .success()
        .stdout_is("fn b\n1 /tmp\n");
        assert_eq!(home.state_of("iso").as_deref(), Some("Opened"), "{shell}");

        // With `set -e` left on in the session, an isolated failure still ends only its subshell,
        // and the session keeps its `set -e`.
        home.invoke("iso", "set -e").success();
        home.run(&[
            "invoke",
            "-s",
            "iso",
            "--isolated",
            "--",
            "case $- in *e*) echo on;; esac; false; echo not reached",
        ])
        .code_is(1)
        .stdout_is("on\n");
        home.invoke("iso", "case $- in *e*) echo errexit on;; esac")
            .success()
            .stdout_is("errexit on\n");
        assert_eq!(home.state_of("iso").as_deref(), Some("Opened"), "{shell}");
    }
}

#[test]
fn a_set_e_left_on_breaks_the_session_and_the_reason_says_so() {
    for (shell, home) in shells() {
        home.new_session("e", &[]);
        home.invoke("e", "set -e").success();
        home.invoke("e", "echo fine").success().stdout_is("fine\n");
        home.invoke("e", "false").code_is(1);
        wait_until(WAIT, "the session is Broken", || {
            home.state_of("e").as_deref() == Some("Broken")
        });
        let reason = home.session("e")["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            reason.contains("exited with status 1") && reason.contains("errexit was on"),
            "{shell}: {reason}"
        );

        // `set -u` turned on by the failing script itself. (zsh does not exit on an unset
        // parameter inside `eval`, nor dash inside `command eval`, which keeps a syntax error
        // from ending its shell: the command fails and the session goes on.)
        if shell != "bash" {
            home.new_session("u", &[]);
            home.invoke("u", "set -u; echo $nowhere").failure();
            home.invoke("u", "echo alive")
                .success()
                .stdout_is("alive\n");
            continue;
        }
        home.new_session("u", &[]);
        home.invoke("u", "set -u; echo $nowhere").failure();
        wait_until(WAIT, "the session is Broken", || {
            home.state_of("u").as_deref() == Some("Broken")
        });
        let reason = home.session("u")["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(reason.contains("nounset was on"), "{shell}: {reason}");
    }
}

#[test]
fn what_a_start_up_script_starts_is_the_sessions_too() {
    let home = Home::new();
    let mut started = Started::default();
    let spawn = spawner(&home);
    let dir = home.scratch();
    let configs = home.path().join("configurations");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(
        configs.join("agent.toml"),
        "startup_script = \"agent.sh\"\n",
    )
    .unwrap();
    std::fs::write(
        configs.join("agent.sh"),
        format!(
            "setsid -f '{}' '{}/agent'\nagent=started\n",
            spawn.display(),
            dir.display()
        ),
    )
    .unwrap();
    home.new_session("a", &["--configuration", "agent"]);
    home.invoke("a", "echo $agent")
        .success()
        .stdout_is("started\n");
    let agent = wait_pid_file(&dir.join("agent"));
    started.0.push(agent);
    let shell = shell_pid(&home, "a");
    assert_eq!(
        in_session_cgroup(agent),
        in_session_cgroup(shell),
        "the start-up script runs once the shell is in the session's cgroup"
    );
    let t0 = Instant::now();
    home.run(&["remove", "a"]).success();
    wait_all_gone(
        &[("the start-up script's daemon".into(), agent)],
        t0,
        GRACE_AND_MARGIN,
    );
}

#[test]
fn a_temporary_invocation_leaves_nothing_running() {
    let home = Home::new();
    let mut started = Started::default();
    let spawn = spawner(&home);
    let dir = home.scratch();
    let t0 = Instant::now();
    home.run(&[
        "invoke",
        "--arg",
        spawn.to_str().unwrap(),
        "--arg",
        dir.to_str().unwrap(),
        "--",
        "setsid -f \"$1\" \"$2/daemon\"; \"$1\" \"$2/stubborn\" ignore-hup &
         until [ -e \"$2/daemon\" ] && [ -e \"$2/stubborn\" ]; do sleep 0.01; done; echo ran",
    ])
    .success()
    .stdout_is("ran\n");
    let pids: Vec<(String, u32)> = ["daemon", "stubborn"]
        .iter()
        .map(|n| (n.to_string(), wait_pid_file(&dir.join(n))))
        .collect();
    started.0.extend(pids.iter().map(|(_, p)| *p));
    wait_all_gone(&pids, t0, GRACE_AND_MARGIN);
}

#[test]
fn a_session_hosts_own_log_is_under_hosts_and_says_why_it_ended() {
    // Hosts inherit the daemon's TETHER_LOG; their stderr is /dev/null, so the file is all.
    let home = Home::new().env("TETHER_LOG", "info");
    let s = home.new_session("logged", &[]);
    let host = host_pid(&s);
    let id = s["instance_id"].as_str().unwrap().to_string();
    let log = home.path().join("hosts").join(format!("{id}.log"));
    assert!(send_signal(host, "TERM"));
    wait_gone(host, "the session host");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("SIGTERM: closing"),
        "{}:\n{text}",
        log.display()
    );
}

/// The bound socket of a session host, from the kernel's list of unix sockets.
fn host_socket_path(instance_id: &str) -> Option<std::path::PathBuf> {
    let name = format!("/hosts/{instance_id}.sock");
    std::fs::read_to_string("/proc/net/unix")
        .ok()?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .find(|p| p.ends_with(&name))
        .map(std::path::PathBuf::from)
}

/// A home whose path is too long for a socket keeps its sockets in a short directory under the
/// temporary directory. When the daemon stops before its last session, that session's host,
/// ending, removes the directory: nothing is left behind in /tmp.
#[test]
fn the_last_host_out_removes_the_short_socket_directory() {
    let home = Home::long();
    let s = home.new_session("last", &[]);
    let instance = s["instance_id"].as_str().unwrap().to_string();
    let host = host_pid(&s);
    let sock = host_socket_path(&instance).expect("the host's socket is bound");
    let run = sock
        .parent()
        .and_then(|h| h.parent())
        .unwrap()
        .to_path_buf();
    assert!(
        !run.starts_with(home.path()),
        "{run:?} should be outside the long home"
    );
    home.run(&["daemon", "stop"]).success();
    assert!(run.exists(), "the host still uses {run:?}");
    assert!(send_signal(host, "TERM"));
    wait_gone(host, "the session host");
    assert!(!run.exists(), "{run:?} was left behind");
}
