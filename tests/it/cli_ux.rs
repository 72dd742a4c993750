//! The operator's side of the CLI (issue 8): shell completion (including session names),
//! manual pages, examples in every `--help`, tables that are plain when piped and fitted and
//! coloured on a terminal (unless `NO_COLOR`), `--json` wherever a table is printed, and `-v`.
//!
//! Terminal behaviour is checked on a real pseudo-terminal made by `script` (util-linux).

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `tether ARGS…` for `home`, as [`Home::run`] does, and asserts it succeeded.
#[track_caller]
fn ok(home: &Home, args: &[&str]) -> Out {
    home.run(args).success()
}

/// Whether a program is on PATH.
fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// `'…'` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs the shell command `cmd` on a fresh pseudo-terminal (`script`), `cols` wide, with
/// `home`'s environment plus `env`; returns what the terminal showed.
fn on_tty(home: &Home, cols: u16, env: &[(&str, &str)], cmd: &str) -> Out {
    let mut c = Command::new("script");
    c.args([
        "-qec",
        &format!("stty cols {cols} rows 40; {cmd}"),
        "/dev/null",
    ]);
    c.env("TETHER_HOME", home.path());
    c.env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    run_command(c, None, CMD_TIMEOUT)
}

/// `tether` as a shell word.
fn tether() -> String {
    quote(&tether_bin().to_string_lossy())
}

/// The text with ANSI escape sequences and carriage returns removed.
fn visible(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Completion
// ---------------------------------------------------------------------------------------------

#[test]
fn completion_scripts_are_generated_for_each_shell_and_parse() {
    let home = Home::new();
    let dir = home.scratch();
    for shell in ["bash", "zsh", "fish"] {
        let out = ok(&home, &["completions", shell]);
        let script = out.out();
        assert!(
            script.contains("TETHER_COMPLETE") && script.contains("tether"),
            "{shell} script does not call back into tether:\n{script}"
        );
        let file = dir.join(format!("tether.{shell}"));
        std::fs::write(&file, &script).unwrap();
        let checker = match shell {
            "fish" if !have("fish") => {
                eprintln!("note: fish is not installed; its script was generated but not parsed");
                continue;
            }
            s => s,
        };
        let check = run_command(
            {
                let mut c = Command::new(checker);
                c.arg("-n").arg(&file);
                c
            },
            None,
            CMD_TIMEOUT,
        );
        assert!(
            check.status().success(),
            "{checker} -n rejects the script:\n{check}"
        );
    }
    home.run(&["completions", "powershell-7"]).code_is(2);
}

/// Calls bash's completion function as bash would for the words typed so far (the last one is
/// the word being completed) and returns COMPREPLY.
fn bash_complete(home: &Home, script: &Path, words: &[&str]) -> Vec<String> {
    let typed: Vec<String> = words.iter().map(|w| quote(w)).collect();
    let cur = words.last().copied().unwrap_or("");
    let prev = words.len().checked_sub(2).map_or("", |i| words[i]);
    let body = format!(
        "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_TYPE=9; \
         _clap_complete_tether tether {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quote(&script.to_string_lossy()),
        typed.join(" "),
        words.len() - 1,
        quote(cur),
        quote(prev)
    );
    let mut c = Command::new("bash");
    c.args(["--norc", "--noprofile", "-c", &body]);
    c.env("TETHER_HOME", home.path());
    let out = run_command(c, None, CMD_TIMEOUT);
    assert!(out.status().success(), "bash completion failed:\n{out}");
    out.out().lines().map(str::to_owned).collect()
}

#[test]
fn bash_completes_session_names_subcommands_and_job_ids() {
    let home = Home::new();
    home.new_session("web", &[]);
    home.new_session("db", &[]);
    let script = home.scratch().join("tether.bash");
    std::fs::write(&script, ok(&home, &["completions", "bash"]).stdout()).unwrap();

    let got = bash_complete(&home, &script, &["tether", "enter", "w"]);
    assert_eq!(got, ["web"], "enter w<TAB>");
    let got = bash_complete(&home, &script, &["tether", "invoke", "-s", ""]);
    assert!(
        got.contains(&"web".to_string()) && got.contains(&"db".to_string()),
        "invoke -s <TAB> should offer both sessions: {got:?}"
    );
    let got = bash_complete(&home, &script, &["tether", "remove", "d"]);
    assert_eq!(got, ["db"], "remove d<TAB>");
    let got = bash_complete(&home, &script, &["tether", "com"]);
    assert_eq!(got, ["completions"], "com<TAB>");

    let job = ok(
        &home,
        &["invoke", "-s", "web", "--as-job", "--json", "true"],
    )
    .json();
    let id = job[0]["id"].as_u64().expect("job id").to_string();
    let got = bash_complete(&home, &script, &["tether", "job", "wait", ""]);
    assert!(
        got.contains(&id),
        "job wait <TAB> should offer job {id}: {got:?}"
    );
}

#[test]
fn zsh_and_fish_get_session_names_with_descriptions() {
    let home = Home::new();
    home.new_session("web", &[]);
    // What the zsh and fish scripts run on TAB (their shells' own machinery aside).
    let zsh = home.run_env(
        &[("TETHER_COMPLETE", "zsh"), ("_CLAP_COMPLETE_INDEX", "2")],
        &["--", "tether", "enter", ""],
    );
    assert!(
        zsh.out().lines().any(|l| l.starts_with("web:Id 1, Opened")),
        "zsh candidates:\n{zsh}"
    );
    let fish = home.run_env(
        &[("TETHER_COMPLETE", "fish")],
        &["--", "tether", "disconnect", "w"],
    );
    assert_eq!(
        fish.out().lines().next(),
        Some("web\tId 1, Opened on localhost")
    );
}

// ---------------------------------------------------------------------------------------------
// Manual pages and help
// ---------------------------------------------------------------------------------------------

/// Subcommand names listed under "Commands:" in a help text (clap's own `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_help_has_examples() {
    let home = Home::new();
    let mut todo = vec![Vec::<String>::new()];
    let mut checked = Vec::new();
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = ok(&home, &args).out();
        assert!(
            help.contains("Example"),
            "`tether {}` has no examples in --help:\n{help}",
            path.join(" ")
        );
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        checked.push(path.join(" "));
    }
    for must in [
        "job list",
        "config show",
        "daemon status",
        "completions",
        "man",
    ] {
        assert!(
            checked.iter().any(|c| c == must),
            "`{must}` was not reached: {checked:?}"
        );
    }
}

#[test]
fn man_prints_tether_1_and_writes_one_page_per_subcommand() {
    let home = Home::new();
    let page = ok(&home, &["man"]).out();
    assert!(page.contains(".TH tether 1"), "no .TH:\n{page}");
    assert!(page.contains(".SH EXAMPLES"), "no EXAMPLES section");
    for sub in [
        "new",
        "get",
        "invoke",
        "enter",
        "job",
        "config",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!("{sub}(1)")) || page.contains(&format!("tether\\-{sub}")),
            "tether.1 does not mention {sub}:\n{page}"
        );
    }
    let dir = home.scratch().join("man1");
    let listed = ok(&home, &["man", "--dir", &dir.to_string_lossy()]).out();
    for file in [
        "tether.1",
        "tether-invoke.1",
        "tether-job-list.1",
        "tether-config-show.1",
        "tether-daemon-status.1",
    ] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{file} not written ({e}); listed:\n{listed}"));
        assert!(text.contains(".TH "), "{file} has no .TH");
        assert!(listed.contains(file), "{file} not listed:\n{listed}");
    }
    assert!(
        !dir.join("tether-__host.1").exists(),
        "hidden commands get no page"
    );
}

// ---------------------------------------------------------------------------------------------
// Tables, colour, JSON
// ---------------------------------------------------------------------------------------------

#[test]
fn piped_tables_have_no_escapes_even_when_colour_is_forced() {
    let home = Home::new();
    home.new_session("web", &[]);
    ok(&home, &["invoke", "--as-job", "exit 3"]);
    let forced = [
        ("CLICOLOR_FORCE", "1"),
        ("FORCE_COLOR", "1"),
        ("TERM", "xterm-256color"),
        ("COLUMNS", "20"),
        ("NO_COLOR", ""),
    ];
    ok(&home, &["job", "wait", "--timeout", "20s"]);
    for args in [&["get"][..], &["job", "list"], &["config", "list"]] {
        let out = home.run_env(&forced, args).success();
        let text = out.out();
        assert!(
            !text.contains('\x1b'),
            "escapes in piped {args:?}:\n{text:?}"
        );
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "trailing spaces in {args:?}"
        );
    }
    // Not wrapped to COLUMNS=20: one line per row, as before.
    let get = home.run_env(&forced, &["get"]).success().out();
    assert_eq!(get.lines().count(), 2, "{get}");
    assert!(get.lines().nth(1).is_some_and(|l| {
        l.split_whitespace().collect::<Vec<_>>()
            == [
                "1",
                "web",
                "localhost",
                "local",
                "Opened",
                "default",
                "Available",
            ]
    }));
}

#[test]
fn a_terminal_gets_coloured_states_fitted_tables_and_no_color_turns_colour_off() {
    assert!(have("script"), "this test needs script(1) from util-linux");
    let home = Home::new();
    home.new_session("web", &[]);
    ok(&home, &["invoke", "--as-job", "true"]);
    ok(&home, &["job", "wait", "--timeout", "20s"]);
    let get = format!("{} get", tether());
    let jobs = format!("{} job list", tether());

    let coloured = on_tty(&home, 200, &[], &get).success().out();
    assert!(
        coloured.contains("\x1b[") && visible(&coloured).contains("Opened"),
        "no colour on a terminal:\n{coloured:?}"
    );
    let job_list = on_tty(&home, 200, &[], &jobs).success().out();
    assert!(
        job_list.contains("\x1b[") && visible(&job_list).contains("Completed"),
        "job states are not coloured:\n{job_list:?}"
    );
    let empty_no_color = on_tty(&home, 200, &[("NO_COLOR", "")], &get)
        .success()
        .out();
    assert!(
        empty_no_color.contains("\x1b["),
        "NO_COLOR= (empty) keeps colour"
    );

    for cmd in [&get, &jobs] {
        let plain = on_tty(&home, 200, &[("NO_COLOR", "1")], cmd)
            .success()
            .out();
        assert!(
            !plain.contains('\x1b'),
            "NO_COLOR=1 still coloured:\n{plain:?}"
        );
        assert!(plain.contains("Id"), "{plain:?}");
    }

    let narrow = visible(&on_tty(&home, 44, &[], &get).success().out());
    assert!(narrow.contains("web"), "{narrow}");
    for line in narrow.lines() {
        assert!(
            line.chars().count() <= 44,
            "line wider than the 44-column terminal: {line:?}\n{narrow}"
        );
    }
}

#[test]
fn every_table_command_has_json() {
    let home = Home::new();
    let new = ok(&home, &["new", "--name", "web", "--json"]).json();
    assert_eq!(new[0]["name"], "web");
    assert_eq!(ok(&home, &["get", "--json"]).json()[0]["state"], "Opened");
    let job = ok(
        &home,
        &["invoke", "-s", "web", "--as-job", "--json", "echo hi"],
    )
    .json();
    assert!(job[0]["id"].is_u64(), "{job}");
    let waited = ok(&home, &["job", "wait", "--timeout", "20s", "--json"]).json();
    assert_eq!(waited[0]["state"], "Completed", "{waited}");
    let listed = ok(&home, &["job", "list", "--json"]).json();
    assert_eq!(listed[0]["id"], job[0]["id"]);
    let stopped = ok(&home, &["job", "stop", "--json"]).json();
    assert!(stopped.is_array(), "{stopped}");
    let configs = ok(&home, &["config", "list", "--json"]).json();
    assert!(
        configs
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["name"] == "default")),
        "{configs}"
    );
    let shown = ok(&home, &["config", "show", "default", "--json"]).json();
    assert_eq!(shown[0]["name"], "default");
    let status: Value = ok(&home, &["daemon", "status", "--json"]).json();
    assert!(status["pid"].is_u64(), "{status}");
    let disc = ok(&home, &["disconnect", "web", "--json"]).json();
    assert_eq!(disc[0]["state"], "Disconnected");
    let conn = ok(&home, &["connect", "web", "--json"]).json();
    assert_eq!(conn[0]["state"], "Opened");
}

// ---------------------------------------------------------------------------------------------
// Verbosity and progress
// ---------------------------------------------------------------------------------------------

#[test]
fn verbose_logs_on_stderr_only_when_asked() {
    let home = Home::new();
    let quiet = home
        .run_env(&[("TETHER_LOG", "trace")], &["invoke", "echo hi"])
        .success()
        .stdout_is("hi\n");
    assert_eq!(
        quiet.err(),
        "",
        "TETHER_LOG alone must not make the CLI log"
    );

    let v = ok(&home, &["-v", "invoke", "echo hi"]).stdout_is("hi\n");
    assert!(
        v.err().contains("INFO") && v.err().contains("command started"),
        "-v shows no info:\n{v}"
    );
    assert!(!v.err().contains("DEBUG"), "-v is info only:\n{v}");
    let vv = ok(&home, &["get", "-vv"]);
    assert!(vv.err().contains("DEBUG"), "-vv shows no debug:\n{vv}");
    let off = home
        .run_env(&[("TETHER_LOG", "off")], &["-v", "invoke", "true"])
        .success();
    assert!(
        off.err().contains("INFO"),
        "-v overrides TETHER_LOG:\n{off}"
    );
}

#[test]
fn fan_out_progress_stays_on_the_terminal_and_off_pipes() {
    assert!(have("script"), "this test needs script(1) from util-linux");
    let home = Home::new();
    let piped = ok(&home, &["invoke", "--computer", "localhost,.", "echo hi"]);
    assert_eq!(piped.err(), "", "nothing extra on a piped stderr");
    // stderr on a terminal, stdout to a file: the progress never reaches the output.
    let file = home.scratch().join("out");
    let cmd = format!(
        "{} invoke --computer localhost,. 'sleep 0.3; echo hi' > {}",
        tether(),
        quote(&file.to_string_lossy())
    );
    on_tty(&home, 100, &[], &cmd).success();
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, [".: hi", "localhost: hi"]);
}

/// tether starts at a C `main` of its own (src/main.rs), so what Rust's start-up did must still
/// hold: a CLI started with its standard descriptors closed gets them on /dev/null, so the
/// socket it opens to its daemon never becomes its stdout (a table printed into the protocol),
/// and printing to a closed stdout is no failure.
#[test]
fn a_cli_started_with_its_standard_descriptors_closed_still_works() {
    let home = Home::new();
    let sh = |script: String| {
        let mut c = home.command_with(Path::new("/bin/sh"));
        c.args(["-c", &script]);
        run_command(c, None, CMD_TIMEOUT)
    };
    // The first call starts the daemon, with nothing open on 0, 1 and 2.
    let t = tether();
    let made = sh(format!("{t} new --name shut <&- >&- 2>&-; echo status=$?"));
    assert_eq!(made.out(), "status=0\n", "{made}");
    let listed = sh(format!("{t} get --name shut >&- 2>&-; echo status=$?"));
    assert_eq!(listed.out(), "status=0\n", "{listed}");
    let ran = sh(format!("{t} invoke -s shut 'echo ok >&2; echo ok' <&-"));
    assert_eq!(
        (ran.out(), ran.err()),
        ("ok\n".into(), "ok\n".into()),
        "{ran}"
    );
    home.invoke("shut", "echo still")
        .success()
        .stdout_is("still\n");
}

/// Every command that prints, into a pipe whose reader is gone (`| grep -q`, `| head -1` that
/// already has its line): it ends as a process that SIGPIPE ends would, status 141, saying
/// nothing, instead of panicking with a backtrace; and the work it did is done. Errors into a
/// closed stderr keep their status.
#[test]
fn output_into_a_closed_pipe_ends_quietly_with_141() {
    let home = Home::new();
    home.new_session("p", &[]);
    let src = home.scratch().join("piped-src");
    std::fs::write(&src, "x").unwrap();
    let dest = home.scratch().join("piped-dest");
    let to = format!("p:{}", dest.display());
    let cases: [&[&str]; 6] = [
        &["get", "--json"],
        &["get"],
        &["daemon", "status"],
        &["job", "list", "--json"],
        &["config", "list"],
        &["copy", "--json", src.to_str().unwrap(), &to],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut c = home.command();
        c.args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped());
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "x");
    // An error said into a closed stderr (`2>&1 | head`): the message is lost, the status is
    // still the error's (3: no such session), not a panic's.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = home.command();
    c.args(["invoke", "-s", "nosuch", "true"]).stderr(writer);
    assert_eq!(c.output().unwrap().status.code(), Some(3));
}
