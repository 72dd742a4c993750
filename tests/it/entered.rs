//! After `enter` (issue 18 points 3 and 7): Ctrl-C of a line stops the rest of that line, and
//! a session that was once entered never leaves a later plain `invoke` of a `/dev/tty` reader
//! (sudo without -n) waiting for keys nobody will type: it fails at once, as without a
//! terminal. Driven through a private tmux server.

use crate::common::tmux::Tmux;
use crate::common::*;
use std::time::Duration;

#[test]
fn ctrl_c_stops_the_rest_of_a_bash_line() {
    let home = Home::new();
    home.new_session("c", &[]);
    let t = Tmux::start(&home, &["enter", "c"]);
    t.wait_for("[localhost:c] ");
    let flag = home.scratch().join("slept");
    t.line(&format!(
        "touch {}; sleep 30; echo REST-$((6*7))",
        flag.display()
    ));
    wait_until(Duration::from_secs(10), "the line to start", || {
        flag.exists()
    });
    t.keys(&["C-c"]);
    t.wait_count("[localhost:c] ", 2);
    t.line("echo after-$((7*6))");
    let screen = t.wait_for("after-42");
    assert!(
        !screen.contains("REST-42"),
        "the rest of the line ran:\n{screen}"
    );
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}

/// After `enter`, in a bash, dash or zsh session: a plain `invoke` of a `/dev/tty` reader fails
/// at once, and the next terminal line has its controlling terminal again (zsh too, though it
/// never takes a terminal by opening it).
fn never_hands_its_terminal_on(shell: &str) {
    let home = Home::new().env("TETHER_SHELL", &crate::common::tmux::shell_path(shell));
    home.new_session("t", &[]);
    let t = Tmux::start(&home, &["enter", "t"]);
    t.wait_for("[localhost:t] ");
    t.line("tty; : </dev/tty && echo has-c\"\"tty");
    t.wait_for("/dev/pts/");
    t.wait_for("has-ctty");
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
    for _ in 0..2 {
        tty_reader_fails_at_once(&home, shell);
    }
    // The session's next terminal line still has its terminal, twice.
    let t = Tmux::start(&home, &["enter", "t"]);
    t.wait_for("[localhost:t] ");
    for (i, name) in ["bob", "eve"].iter().enumerate() {
        t.line("printf 'name? '; read n </dev/tty; echo hello-$n");
        t.wait_count("name? ", i + 1);
        t.line(name);
        t.wait_for(&format!("hello-{name}"));
    }
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
    tty_reader_fails_at_once(&home, shell);
}

/// A plain `invoke` of a `/dev/tty` reader in session `t` fails at once (a reader left waiting
/// would be stopped by --timeout, with status 130, not 1).
fn tty_reader_fails_at_once(home: &Home, shell: &str) {
    let out = home
        .run(&[
            "invoke",
            "-s",
            "t",
            "--timeout",
            "20s",
            "head -c1 /dev/tty; echo status=$?",
        ])
        .success();
    assert!(
        out.out().contains("status=1"),
        "{shell}: a /dev/tty reader did not fail: {out}"
    );
}

#[test]
fn an_entered_session_never_hands_its_terminal_to_later_commands() {
    never_hands_its_terminal_on("bash");
}

#[test]
fn an_entered_dash_session_never_hands_its_terminal_to_later_commands() {
    never_hands_its_terminal_on("dash");
}

#[test]
fn a_zsh_session_has_a_controlling_terminal_only_for_its_terminal_lines() {
    never_hands_its_terminal_on("zsh");
}
