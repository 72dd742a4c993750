//! The driver on other POSIX shells: dash and zsh run the same core cases as bash (state,
//! separate streams, exit status, stdin, arguments, redefined builtins, a timeout that leaves the
//! session usable, and `exit` making the session Broken). The shell is chosen with
//! `TETHER_SHELL`, read by the daemon when it creates a session.

use crate::common::*;

fn engine_home(shell: &str, package: &str) -> Home {
    require_program(shell.rsplit('/').next().unwrap_or(shell), package);
    Home::new().env("TETHER_SHELL", shell)
}

fn core_cases(shell: &str, package: &str) {
    let home = engine_home(shell, package);
    home.new_session("e", &[]);
    home.invoke("e", "x=1; cd /tmp; f() { echo \"fn$1\"; }")
        .success();
    home.invoke("e", "f 2; echo \"$x $PWD\"; echo err >&2; false")
        .code_is(1)
        .stdout_is("fn2\n1 /tmp\n")
        .stderr_is("err\n");
    home.invoke_args("e", "printf '[%s]' \"$@\"", &["a b", "$(echo no)"])
        .success()
        .stdout_is("[a b][$(echo no)]");
    home.run_stdin(&["invoke", "-s", "e", "cat"], b"in\x00put")
        .success()
        .stdout_is("in\u{0}put");
    home.invoke("e", "printf() { :; }; echo() { :; }; read() { :; }")
        .success();
    home.invoke("e", "command printf '%s\\n' still; (exit 4)")
        .code_is(4)
        .stdout_is("still\n");
    // Stopping a command (Ctrl-C, a timeout) abandons the rest of its script, also inside a
    // loop.
    for script in [
        "sleep 30; echo REST",
        "for i in 1 2; do sleep 30; done; echo REST",
    ] {
        let out = home.run(&["invoke", "-s", "e", "--timeout", "1s", script]);
        assert_ne!(
            out.code(),
            Some(0),
            "{shell}: a timed-out command must fail"
        );
        assert!(
            !out.out().contains("REST"),
            "{shell}: the script went on: {out}"
        );
    }
    home.invoke("e", "command printf '%s\\n' \"$x\"")
        .success()
        .stdout_is("1\n");
    home.invoke("e", "exit 9").code_is(9);
    assert_eq!(home.state_of("e").as_deref(), Some("Broken"), "{shell}");
}

#[test]
fn bash_sessions_keep_state_and_report_status() {
    core_cases("/bin/bash", "bash");
}

#[test]
fn dash_sessions_keep_state_and_report_status() {
    core_cases("/bin/dash", "dash");
}

#[test]
fn zsh_sessions_keep_state_and_report_status() {
    let zsh = ["/usr/bin/zsh", "/bin/zsh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("/usr/bin/zsh");
    core_cases(zsh, "zsh");
}
