//! `tether enter` keeps every key (issue 18 points 1–3), driven through tmux as a person
//! would: keys typed while a line runs reach its program or the next prompt, in order; keys
//! typed while lines end are not lost; a paste of 200 lines runs 200 lines, bracketed or not;
//! Ctrl-C stops the rest of a line in bash, dash and zsh, here and on another computer.

use crate::common::tmux::Entered;
use crate::common::wait_until;
use std::time::Duration;

/// The lines of the pane that are exactly `text`, by position.
fn lines_equal(all: &str, text: &str) -> Vec<usize> {
    all.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end() == text)
        .map(|(i, _)| i)
        .collect()
}

fn file_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `file` has `n` lines; shows them and the pane otherwise.
#[track_caller]
fn wait_lines(e: &Entered, file: &std::path::Path, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while file_lines(file).len() < n {
        if std::time::Instant::now() > deadline {
            panic!(
                "{} of {n} lines ran: {:?}\nthe pane:\n{}",
                file_lines(file).len(),
                file_lines(file),
                e.t.history()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn type_ahead(remote: bool) {
    let e = Entered::start(remote, "bash", &[]);
    let t = &e.t;
    // Typed while `sleep` runs (or while its line starts): both lines run, in order.
    t.line("sleep 1");
    t.line("echo o\"\"ne");
    t.line("echo t\"\"wo");
    let all = e.prompts(4);
    let (one, two) = (lines_equal(&all, "one"), lines_equal(&all, "two"));
    assert!(
        one.len() == 1 && two.len() == 1 && one[0] < two[0],
        "one, then two: {all}"
    );
    // A program reading the terminal gets what was typed after its Enter.
    t.line("read x; echo got-$x");
    t.line("hello");
    t.wait_for("got-hello");
    e.prompts(5);
    t.line("sleep 0.3; read y; echo got-$y");
    t.line("world");
    t.wait_for("got-world");
    e.prompts(6);
    // Lines typed back to back, each while the one before is ending: none is lost.
    let file = e.client.scratch().join("burst");
    for i in 1..=30 {
        t.line(&format!("echo k{i} >> {}", file.display()));
    }
    let want: Vec<String> = (1..=30).map(|i| format!("k{i}")).collect();
    wait_lines(&e, &file, 30);
    e.prompts(36);
    assert_eq!(file_lines(&file), want);
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}

#[test]
fn keys_typed_ahead_reach_the_program_or_the_next_prompt_in_order() {
    type_ahead(false);
}

#[test]
fn keys_typed_ahead_reach_the_program_or_the_next_prompt_in_order_remotely() {
    type_ahead(true);
}

fn paste(remote: bool, bracketed: bool) {
    let e = Entered::start(remote, "bash", &[]);
    let file = e.client.scratch().join("pasted");
    let text: String = (1..=200)
        .map(|i| format!("echo line-{i} >> {}\n", file.display()))
        .collect();
    e.t.paste(&text, bracketed);
    if bracketed {
        // A bracketed paste is text at the prompt: Enter runs it.
        e.t.wait_for(&format!("line-200 >> {}", file.display()));
        e.t.keys(&["Enter"]);
    }
    wait_lines(&e, &file, 200);
    let want: Vec<String> = (1..=200).map(|i| format!("line-{i}")).collect();
    assert_eq!(file_lines(&file), want);
    // Each line once: the prompt is back and works.
    e.prompts(if bracketed { 2 } else { 201 });
    e.t.line("echo after-\"\"paste");
    e.t.wait_for("after-paste");
    assert_eq!(file_lines(&file).len(), 200);
}

#[test]
fn a_pasted_200_lines_run_200_lines() {
    paste(false, false);
}

#[test]
fn a_bracketed_paste_of_200_lines_runs_them_on_enter() {
    paste(false, true);
}

#[test]
fn a_paste_on_another_computer_runs_every_line() {
    paste(true, false);
}

/// Waits until a process runs `sleep SECONDS` (a duration no other test uses).
fn wait_sleeping(seconds: &str) {
    let want = format!("sleep {seconds} ");
    wait_until(Duration::from_secs(20), &want, || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .any(|pid| crate::common::cmdline(pid) == want)
    });
}

/// Ctrl-C while a line's program runs, and right after Enter: the rest of the line never runs.
fn ctrl_c(remote: bool, shell: &str) {
    let e = Entered::start(remote, shell, &[]);
    let t = &e.t;
    // The program is running when Ctrl-C comes (a duration no other test uses).
    let n = ["bash", "dash", "zsh"]
        .iter()
        .position(|s| *s == shell)
        .unwrap_or(9);
    let seconds = format!("20.{}{n}7", u8::from(remote));
    t.line(&format!("sleep {seconds}; echo X"));
    wait_sleeping(&seconds);
    t.keys(&["C-c"]);
    e.prompts(2);
    t.line("echo after-$?");
    t.wait_for("after-130");
    let all = e.prompts(3);
    assert!(
        lines_equal(&all, "X").is_empty(),
        "{shell}: the line went on: {all}"
    );
    // Ctrl-C right after Enter: the line does not run, or stops at once.
    t.line("sleep 20; echo X");
    t.keys(&["C-c"]);
    e.prompts(4);
    t.line("echo wor\"\"ks");
    t.wait_for("works");
    let all = e.prompts(5);
    assert!(
        lines_equal(&all, "X").is_empty(),
        "{shell}: the line went on: {all}"
    );
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}

#[test]
fn ctrl_c_stops_the_rest_of_a_bash_line() {
    ctrl_c(false, "bash");
}

#[test]
fn ctrl_c_stops_the_rest_of_a_bash_line_remotely() {
    ctrl_c(true, "bash");
}

#[test]
fn ctrl_c_stops_the_rest_of_a_dash_line() {
    ctrl_c(false, "dash");
}

#[test]
fn ctrl_c_stops_the_rest_of_a_dash_line_remotely() {
    ctrl_c(true, "dash");
}

#[test]
fn ctrl_c_stops_the_rest_of_a_zsh_line() {
    ctrl_c(false, "zsh");
}

#[test]
fn ctrl_c_stops_the_rest_of_a_zsh_line_remotely() {
    ctrl_c(true, "zsh");
}

/// Keys typed without pause while lines longer than the client's hold end: every key reaches
/// the line's terminal or the next prompt, in order, even those that reach the host after the
/// line's status (the `Exit` says how much the terminal took; the client keeps the rest).
fn keys_across_line_ends(remote: bool) {
    let e = Entered::start(remote, "bash", &[]);
    let t = &e.t;
    let file = e.client.scratch().join("across");
    let rounds = 12;
    for i in 1..=rounds {
        // A line that outlasts the hold (200 ms), then the next line typed key by key across
        // its end.
        t.line("sleep 0.3");
        let next = format!("echo a{i}b >> {}", file.display());
        for (n, ch) in next.chars().enumerate() {
            t.text(&ch.to_string());
            if n % 3 == 0 {
                std::thread::sleep(Duration::from_millis(4));
            }
        }
        t.keys(&["Enter"]);
        wait_lines(&e, &file, i);
    }
    let want: Vec<String> = (1..=rounds).map(|i| format!("a{i}b")).collect();
    assert_eq!(file_lines(&file), want, "pane:\n{}", t.history());
    t.line("exit");
    t.wait_for("ENTER-EXITED-0");
}

#[test]
fn keys_typed_while_long_lines_end_are_never_lost() {
    keys_across_line_ends(false);
}

#[test]
fn keys_typed_while_long_lines_end_are_never_lost_remotely() {
    keys_across_line_ends(true);
}
