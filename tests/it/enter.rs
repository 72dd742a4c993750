//! `tether enter` (SPEC §3.16, issue 5 points 1–5), driven through a private tmux server as a
//! person would: the prompt, state between lines, multi-line input, vim, window resizes,
//! Ctrl-C, `exit`, a busy session, and the same over ssh.

use crate::common::sshd::setup;
use crate::common::tmux::Tmux;
use crate::common::*;

#[test]
fn the_prompt_runs_lines_in_the_session_with_its_state() {
    let home = Home::new();
    home.new_session("e", &[]);
    let t = Tmux::start(&home, &["enter", "e"]);
    t.wait_for("[localhost:e] ");
    t.line("x=42; cd /usr");
    t.wait_for("[localhost:e] /usr$");
    t.line("false");
    t.wait_count("[localhost:e] /usr$", 2);
    t.line("echo value=$x status=$?");
    t.wait_for("value=42 status=1");
    t.wait_count("[localhost:e] /usr$", 3);
    // An incomplete line goes on on the next one.
    t.line("if true; then");
    t.line("echo multi-$x");
    t.line("fi");
    t.wait_for("multi-42");
    // A program reading the terminal.
    t.wait_count("[localhost:e] /usr$", 4);
    t.line("read -p 'name? ' n; echo hello-$n");
    t.wait_for("name? ");
    t.line("bob");
    t.wait_for("hello-bob");
    t.wait_count("[localhost:e] /usr$", 5);
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
    // The session stays, Opened, with its state.
    assert_eq!(home.session("e")["state"], "Opened");
    home.invoke("e", "echo $x $n $PWD")
        .success()
        .stdout_is("42 bob /usr\n");
    // History is kept per computer.
    let hist = std::fs::read_to_string(home.path().join("history").join("localhost"))
        .expect("a history file");
    assert!(hist.contains("x=42; cd /usr"), "{hist}");
}

#[test]
fn full_screen_programs_resizes_and_ctrl_c_work() {
    let home = Home::new();
    home.new_session("v", &[]);
    assert!(
        std::process::Command::new("vim")
            .arg("--version")
            .output()
            .is_ok(),
        "vim is needed for this test (apt-get install vim)"
    );
    let file = home.scratch().join("note.txt");
    let t = Tmux::start(&home, &["enter", "v"]);
    t.wait_for("[localhost:v] ");
    t.line(&format!("vim -u NONE {}", file.display()));
    t.wait_for("~");
    t.keys(&["i", "written in vim", "Escape"]);
    t.line(":wq");
    t.wait_count("[localhost:v] ", 2);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap_or_default(),
        "written in vim\n"
    );
    // The terminal's size, and a resize while a program runs (SIGWINCH reaches it). Each step
    // waits for its prompt: keys typed while a line ends would go to that line.
    t.line("stty size");
    t.wait_for("30 100");
    t.wait_count("[localhost:v] ", 3);
    // A program of its own (an `exit` in the session's shell would end the session).
    t.line("sh -c 'trap \"stty size; exit 0\" WINCH; echo trap-re\"\"ady; while :; do sleep 0.05; done'");
    t.wait_for("trap-ready");
    t.resize(120, 40);
    t.wait_for("40 120");
    t.wait_count("[localhost:v] ", 4);
    // Ctrl-C stops the program, not the prompt; the shell says so in $?.
    // Ctrl-Z is ignored (stopping the program would stop the session's shell with it).
    t.line("echo slee\"\"ping; sleep 100");
    t.wait_for("sleeping");
    t.keys(&["C-z"]);
    t.keys(&["C-c"]);
    t.wait_count("[localhost:v] ", 5);
    t.line("echo after-ctrl-c=$?");
    t.wait_for("after-ctrl-c=130");
    t.wait_count("[localhost:v] ", 6);
    // TERM comes from this terminal; a pager reads its keys from the terminal.
    t.line("echo term=$TERM");
    t.wait_for("term=xterm");
    t.wait_count("[localhost:v] ", 7);
    t.line("seq 1 500 | less");
    t.wait_for("\n29\n");
    t.keys(&["q"]);
    t.wait_count("[localhost:v] ", 8);
    // A REPL: Ctrl-C interrupts what it runs and it goes on.
    t.line("python3 -q");
    t.wait_for(">>>");
    t.line("import time; print('sle' + 'eping'); time.sleep(100)");
    t.wait_for("\nsleeping");
    t.keys(&["C-c"]);
    t.wait_for("KeyboardInterrupt");
    t.line("print(6*7)");
    t.wait_for("\n42\n");
    t.keys(&["C-d"]);
    t.wait_count("[localhost:v] ", 9);
    // top draws its screen and quits on q.
    t.line("top");
    t.wait_for("load average");
    t.keys(&["q"]);
    t.wait_count("[localhost:v] ", 10);
    t.keys(&["C-d"]);
    t.wait_for("ENTER-EXITED-0");
    home.invoke("v", "echo still here")
        .success()
        .stdout_is("still here\n");
}

#[test]
fn entering_a_busy_session_waits_and_says_so() {
    let home = Home::new();
    home.new_session("b", &[]);
    let marker = home.scratch().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.02; done", marker.display());
    let mut busy = home.spawn(&["invoke", "-s", "b", &script], "busy");
    wait_until(WAIT, "the session is busy", || {
        home.session("b")["availability"] == "Busy"
    });
    let t = Tmux::start(&home, &["enter", "b"]);
    t.wait_for("session b is busy; waiting");
    std::fs::write(&marker, "").unwrap();
    busy.wait(WAIT).success();
    t.wait_for("[localhost:b] ");
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}

#[test]
fn enter_works_on_other_computers_and_a_temporary_session_closes_on_exit() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-test", "--name", "r"]).success();
    remote.note_session(&remote.session("r"));
    let t = Tmux::start(&client, &["enter", "r"]);
    t.wait_for("[tether-test:r] ");
    t.line("y=far; stty size");
    t.wait_for("30 100");
    t.wait_count("[tether-test:r] ", 2);
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
    client.invoke("r", "echo $y").success().stdout_is("far\n");

    let t = Tmux::start(&client, &["enter", "--computer", "tether-test"]);
    t.wait_for("[tether-test:");
    assert_eq!(
        remote.sessions().len(),
        2,
        "the temporary session exists meanwhile"
    );
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
    wait_until(WAIT, "the temporary session is closed", || {
        remote.sessions().len() == 1
    });
}

#[test]
fn a_broken_connection_inside_enter_reconnects_and_loses_nothing() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-test", "--name", "n"]).success();
    remote.note_session(&remote.session("n"));
    let t = Tmux::start(&client, &["enter", "n"]);
    t.wait_for("[tether-test:n] ");
    t.line("i=1; while [ $i -le 300 ]; do echo n$i; i=$((i+1)); sleep 0.01; done");
    t.wait_for("n50");
    let st = client.run(&["daemon", "status", "--json"]).success().json();
    let ssh = st["links"][0]["pid"].as_u64().expect("a link") as u32;
    assert!(send_signal(ssh, "KILL"));
    t.wait_for("n300");
    t.wait_count("[tether-test:n] ", 2);
    let all = t.history();
    assert!(all.contains("reconnecting"), "{all}");
    assert!(all.contains("restored"), "{all}");
    let numbers: Vec<String> = all
        .lines()
        .filter(|l| l.starts_with('n') && l[1..].chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (1..=300).map(|i| format!("n{i}")).collect();
    assert!(numbers == want, "lost or repeated lines: {numbers:?}");
}

#[test]
fn enter_works_with_dash_and_zsh_too() {
    for shell in ["dash", "zsh"] {
        let path = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(shell))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{shell} is needed for this test (apt-get install {shell})"));
        let home = Home::new().env("TETHER_SHELL", path.to_str().unwrap());
        home.new_session("s", &[]);
        let t = Tmux::start(&home, &["enter", "s"]);
        t.wait_for("[localhost:s] ");
        t.line("x=7; cd /usr; false");
        t.wait_count("[localhost:s] /usr$", 1);
        t.line(
            "echo $shell-$x-$?; echo slee\"\"ping; sleep 100"
                .replace("$shell", shell)
                .as_str(),
        );
        t.wait_for(&format!("{shell}-7-1"));
        t.wait_for("sleeping");
        t.keys(&["C-c"]);
        t.wait_count("[localhost:s] /usr$", 2);
        t.line("echo after=$?");
        t.wait_for("after=130");
        t.wait_count("[localhost:s] /usr$", 3);
        t.line("exit");
        t.wait_for("ENTER-EXITED-0");
        home.invoke("s", "echo $x").success().stdout_is("7\n");
    }
}

#[test]
fn a_restricted_session_takes_checked_lines_at_the_prompt() {
    let home = Home::new();
    home.configuration(
        "ops",
        "engine = \"restricted\"\n[[allow]]\ncommand = \"echo\"\nrest = \"glob:*\"\n",
    );
    home.new_session("r", &["--configuration", "ops"]);
    let t = Tmux::start(&home, &["enter", "r"]);
    // Each line waits for its prompt: keys typed while a line is ending can be lost.
    t.wait_for("[localhost:r] ");
    t.line("echo allowed-line");
    t.wait_for("allowed-line");
    t.wait_count("[localhost:r] ", 2);
    t.line("uname -a");
    t.wait_for("command not allowed in configuration ops");
    t.wait_count("[localhost:r] ", 3);
    t.line("echo still-here");
    t.wait_for("still-here");
    t.wait_count("[localhost:r] ", 4);
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}
