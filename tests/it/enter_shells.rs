//! `tether enter` asks the session's own shell (issue 18 points 4–5), driven through tmux:
//! Tab completes the session's files, commands, functions and variables, here and on another
//! computer; whether a line goes on is the session's shell's answer (bash, dash, zsh), in the
//! C locale whatever the session's language; a restricted session takes every line as it is.

use crate::common::tmux::{Entered, Tmux};
use crate::common::*;

/// A directory only the session is in (on its side: the far home's scratch for a remote
/// session), with a file, a directory and a command in it.
fn only_here(e: &Entered) -> std::path::PathBuf {
    let dir = e.session_scratch().join("only-here");
    std::fs::create_dir_all(dir.join("zqdir")).unwrap();
    std::fs::write(dir.join("zqfile-unique.txt"), "zq-content\n").unwrap();
    let cmd = dir.join("zqcmd-unique");
    std::fs::write(&cmd, "#!/bin/sh\necho cmd-ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn completion(remote: bool, shell: &str) {
    eprintln!("completion in a {shell} session (remote: {remote})");
    let e = Entered::start(remote, shell, &[]);
    let t = &e.t;
    let dir = only_here(&e);
    // The session, not this process, is in the directory and has the function and variable.
    t.line(&format!(
        "cd {d}; PATH=$PATH:{d}; zqfn() {{ echo fn-ran; }}; zqvar=val-7",
        d = dir.display()
    ));
    e.prompts(2);
    t.text("cat zqfi");
    t.keys(&["Tab"]);
    t.wait_for("cat zqfile-unique.txt");
    t.keys(&["Enter"]);
    t.wait_for("zq-content");
    e.prompts(3);
    t.text("ls -d zqd");
    t.keys(&["Tab"]);
    t.wait_for("ls -d zqdir/");
    t.keys(&["Enter"]);
    e.prompts(4);
    // Commands come from the session's PATH; `$` words are variables.
    t.text("zqcm");
    t.keys(&["Tab"]);
    t.wait_for("$ zqcmd-unique");
    t.text("; echo $zqv");
    t.keys(&["Tab"]);
    t.wait_for("echo $zqvar");
    t.keys(&["Enter"]);
    t.wait_for("cmd-ran");
    t.wait_for("val-7");
    e.prompts(5);
    // Asking changes nothing: the last line's status is still `$?`.
    t.line("false");
    e.prompts(6);
    t.text("echo st=$? $zqv");
    t.keys(&["Tab"]);
    t.wait_for("echo st=$? $zqvar");
    t.keys(&["Enter"]);
    t.wait_for("st=1 val-7");
    e.prompts(7);
    // dash has no way to list its functions.
    if shell != "dash" {
        t.text("zqf");
        t.keys(&["Tab"]);
        t.wait_for("$ zqfn");
        t.keys(&["Enter"]);
        t.wait_for("fn-ran");
        e.prompts(8);
    }
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}

#[test]
fn tab_completes_from_the_sessions_own_shell() {
    for shell in ["bash", "dash", "zsh"] {
        completion(false, shell);
    }
}

#[test]
fn tab_completes_from_the_sessions_own_shell_on_its_own_computer() {
    completion(true, "bash");
    completion(true, "zsh");
}

/// A compiled German locale in a private directory (`LOCPATH`), when this system can make one.
fn german(dir: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("localedef")
        .args(["-i", "de_DE", "-f", "UTF-8"])
        .arg(dir.join("de_DE.UTF-8"))
        .output()
        .ok()?;
    (out.status.success() || dir.join("de_DE.UTF-8").exists())
        .then(|| dir.to_string_lossy().into_owned())
}

/// `if` and an open quote go on on the next line; with `error`, a syntax error then runs and
/// the session's shell says so in a message containing `error`.
fn incomplete_lines(shell: &str, env: &[(&str, &str)], error: Option<&str>) {
    eprintln!("a {shell} session, {env:?}");
    let e = Entered::start(false, shell, env);
    let t = &e.t;
    t.line("if true; then");
    t.line("echo in-\"\"if");
    t.line("fi");
    t.wait_for("in-if");
    // One line in three: one more prompt, no complaint.
    let all = e.prompts(2);
    let low = all.to_lowercase();
    assert!(
        !low.contains("error") && !low.contains("fehler"),
        "{shell}: {all}"
    );
    t.line("echo \"x$((6*7))");
    t.line("y\"");
    t.wait_for("x42\ny");
    e.prompts(3);
    if let Some(said) = error {
        // Not "incomplete": the line runs and the shell says what is wrong.
        t.line("fi");
        let all = e.prompts(4);
        assert!(
            all.contains(said),
            "{shell}: no message from the shell: {all}"
        );
        t.line("echo still-\"\"here");
        t.wait_for("still-here");
    }
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}

#[test]
fn incomplete_lines_go_on_in_every_shell() {
    for shell in ["bash", "dash", "zsh"] {
        incomplete_lines(shell, &[], None);
    }
}

#[test]
fn a_syntax_error_runs_and_the_shell_says_so() {
    for (shell, said) in [
        ("bash", "syntax error"),
        ("zsh", "parse error"),
        ("dash", "Syntax error"),
    ] {
        incomplete_lines(shell, &[], Some(said));
    }
}

#[test]
fn incomplete_lines_go_on_whatever_the_sessions_language() {
    let dir = temp_dir();
    match german(dir.path()) {
        Some(locpath) => {
            let env = [
                ("LOCPATH", locpath.as_str()),
                ("LANG", "de_DE.UTF-8"),
                ("LANGUAGE", "de"),
            ];
            // The session speaks German (its own errors say so); the prompt still knows.
            incomplete_lines("bash", &env, Some("Syntaxfehler"));
            for shell in ["dash", "zsh"] {
                incomplete_lines(shell, &env, None);
            }
        }
        None => {
            eprintln!("no de_DE locale can be made here (localedef): LANGUAGE=de only");
            for shell in ["bash", "dash", "zsh"] {
                incomplete_lines(shell, &[("LANGUAGE", "de")], None);
            }
        }
    }
}

#[test]
fn a_restricted_session_takes_every_line_as_it_is() {
    let home = Home::new();
    home.configuration(
        "ops",
        "engine = \"restricted\"\n[[allow]]\ncommand = \"echo\"\nrest = \"glob:*\"\n",
    );
    home.new_session("r", &["--configuration", "ops"]);
    let t = Tmux::start(&home, &["enter", "r"]);
    t.wait_for("[localhost:r] ");
    // No shell to ask: the line does not go on, it is refused at once.
    t.line("if true; then");
    t.wait_for("command not allowed in configuration ops");
    t.wait_count("[localhost:r] ", 2);
    // Tab finds nothing to ask and changes nothing.
    t.text("echo zz");
    t.keys(&["Tab", "Enter"]);
    t.wait_for("\nzz\n");
    t.wait_count("[localhost:r] ", 3);
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}
