//! Temporary invocations from another computer run in spare hosts (daemon `pool`): each in a
//! subshell of a pristine shell that the far daemon keeps. The spare must be reused (that is
//! the point), yet no invocation may see another's state or find its leftovers running.

use crate::common::sshd::{ALIASES, setup};
use crate::common::{pid_alive, wait_gone, wait_until};
use std::time::Duration;

/// The far shell's pid (`$$`, which a subshell shares with its shell) from an output line.
fn shell_pid(out: &str) -> u32 {
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out:?}"))
}

/// The shell pid a temporary invocation on the first alias runs under (noted for cleanup).
fn far_shell(client: &crate::common::Home, remote: &crate::common::Home) -> u32 {
    let out = client
        .run(&["invoke", "--computer", ALIASES[0], "echo $$"])
        .success()
        .out();
    let pid = shell_pid(&out);
    remote.note_pid(pid);
    pid
}

#[test]
fn a_spare_is_reused_and_shares_no_state_or_processes() {
    let (_sshd, remote, client) = setup();
    let far = ALIASES[0];
    // Everything a script can change in a shell, plus a background job left running.
    let first = client
        .run(&[
            "invoke",
            "--computer",
            far,
            "echo $$; x=1; export Y=2; cd /; f() { :; }; alias ll=ls; set -- a b; \
             sleep 300 & echo $!",
        ])
        .success();
    let text = first.out();
    let pid = shell_pid(&text);
    remote.note_pid(pid);
    let job: u32 = text.lines().nth(1).and_then(|l| l.parse().ok()).unwrap();
    // The job is ended once the invocation is over, and reaped (no zombie left behind).
    wait_gone(job, "the background job of a finished temporary invocation");
    wait_until(
        Duration::from_secs(10),
        "the ended job to be reaped",
        || !std::path::Path::new(&format!("/proc/{job}")).exists(),
    );

    let second = client
        .run(&[
            "invoke",
            "--computer",
            far,
            "echo $$; echo \"$?|${x-unset}|${Y-unset}|$#|$(pwd)\"; \
             type f >/dev/null 2>&1 && echo f; alias ll >/dev/null 2>&1 && echo ll; echo end",
        ])
        .success();
    let text = second.out();
    assert_eq!(shell_pid(&text), pid, "the spare was not reused: {text}");
    let home = client
        .run(&["invoke", "--computer", far, "echo $HOME"])
        .success()
        .out();
    let want = format!("0|unset|unset|0|{}\nend\n", home.trim());
    assert_eq!(text.split_once('\n').unwrap().1, want, "{second}");

    // `exit` ends the invocation, not the spare; standard input still flows.
    client
        .run(&["invoke", "--computer", far, "exit 7"])
        .code_is(7);
    let echoed = client
        .run_stdin(&["invoke", "--computer", far, "echo $$; cat"], b"in\n")
        .success();
    assert_eq!(echoed.out(), format!("{pid}\nin\n"), "{echoed}");

    // Spares are not sessions: `get` on that computer lists none.
    let listed = remote.run(&["get", "--json"]).success().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    // A far daemon that stops closes its spares.
    remote.run(&["daemon", "stop"]).success();
    wait_gone(pid, "the spare's shell after its daemon stopped");
}

#[test]
fn a_spare_whose_shell_dies_is_not_reused() {
    let (_sshd, remote, client) = setup();
    let far = ALIASES[0];
    let pid = far_shell(&client, &remote);
    // The script kills the spare's own shell: that invocation fails, and the spare with it.
    let killed = client.run(&["invoke", "--computer", far, "kill -9 $$"]);
    assert_ne!(killed.code(), Some(0), "{killed}");
    wait_gone(pid, "the killed spare's shell");
    let fresh = far_shell(&client, &remote);
    assert_ne!(fresh, pid);
    assert!(pid_alive(fresh));
}

#[test]
fn local_temporary_invocations_get_a_new_shell_each() {
    // A local temporary session starts with the client's environment and directory, so it is
    // never a spare: two calls see two shells.
    let home = crate::common::Home::new();
    let a = home.run(&["invoke", "echo $$"]).success().out();
    let b = home.run(&["invoke", "echo $$"]).success().out();
    assert_ne!(a, b);
}

#[test]
fn an_edited_configuration_is_never_served_by_an_old_spare() {
    let (_sshd, remote, client) = setup();
    let far = ALIASES[0];
    let dir = remote.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.toml");
    std::fs::write(&file, "environment = { COLOUR = \"red\" }\n").unwrap();
    let run = || {
        client
            .run(&[
                "invoke",
                "--computer",
                far,
                "--configuration",
                "web",
                "echo $$ $COLOUR",
            ])
            .success()
            .out()
    };
    let first = run();
    let (pid, colour) = first.trim().split_once(' ').unwrap();
    remote.note_pid(pid.parse().unwrap());
    assert_eq!(colour, "red");
    // Unchanged: the same spare serves it.
    assert_eq!(run(), first);
    // Edited (a different size, so the change shows whatever the clock's resolution): a new
    // host with the new text.
    std::fs::write(&file, "environment = { COLOUR = \"green\" }\n").unwrap();
    let edited = run();
    let (new_pid, colour) = edited.trim().split_once(' ').unwrap();
    remote.note_pid(new_pid.parse().unwrap());
    assert_eq!(colour, "green");
    assert_ne!(new_pid, pid);
}
