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

#[test]
fn an_entered_session_never_hands_its_terminal_to_later_commands() {
    let home = Home::new();
    home.new_session("t", &[]);
    let t = Tmux::start(&home, &["enter", "t"]);
    t.wait_for("[localhost:t] ");
    t.line("tty");
    t.wait_for("/dev/pts/");
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
    // A reader left waiting would be stopped by --timeout, with status 130, not 1.
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
        "a /dev/tty reader did not fail: {out}"
    );
    // The session's next terminal line still has its terminal.
    let t = Tmux::start(&home, &["enter", "t"]);
    t.wait_for("[localhost:t] ");
    t.line("read -p 'name? ' n; echo hello-$n");
    t.wait_for("name? ");
    t.line("bob");
    t.wait_for("hello-bob");
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}
