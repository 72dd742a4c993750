//! The engine driver's tricky cases (issue 2, point 4; SPEC §3.1, §3.2, §3.4): byte-exact
//! streams, state that persists, the environment captured at creation, and user code that tries
//! hard to confuse the driver.

use crate::common::*;

#[test]
fn output_is_binary_safe_and_byte_exact() {
    let home = Home::new();
    home.new_session("bin", &[]);
    let out = home.invoke("bin", r"printf 'a\0b\377'").success();
    assert_eq!(out.stdout(), b"a\0b\xff", "{out}");
    let out = home.invoke("bin", r"printf '\0\377x' >&2").success();
    assert_eq!(out.stderr(), b"\0\xffx", "{out}");
    assert_eq!(out.stdout(), b"", "{out}");
    // Every byte value, in order.
    let out = home
        .invoke("bin", r#"printf "$(printf '\\%03o' $(seq 0 255))""#)
        .success();
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(out.stdout(), &all[..], "{out}");
}

#[test]
fn output_without_trailing_newline_is_kept_as_is() {
    let home = Home::new();
    home.new_session("nl", &[]);
    let out = home.invoke("nl", "printf abc; printf xyz >&2").success();
    assert_eq!(out.stdout(), b"abc", "{out}");
    assert_eq!(out.stderr(), b"xyz", "{out}");
    // The next invocation starts clean: nothing carried over from the unterminated line.
    home.invoke("nl", "echo next")
        .success()
        .stdout_is("next\n")
        .stderr_is("");
}

#[test]
fn stdout_and_stderr_are_separate_streams() {
    let home = Home::new();
    home.new_session("sep", &[]);
    home.invoke(
        "sep",
        "echo o1; echo e1 >&2; echo o2; echo e2 >&2; (exit 3)",
    )
    .code_is(3)
    .stdout_is("o1\no2\n")
    .stderr_is("e1\ne2\n");
}

#[test]
fn state_persists_across_invocations() {
    let home = Home::new();
    home.new_session("st", &[]);
    let dir = home.scratch().join("cd-here");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_str().unwrap();
    home.invoke_args(
        "st",
        "v=42; f() { echo \"f:$1\"; }; cd \"$1\"; export EXP=yes; alias ll='echo aliased'",
        &[dir],
    )
    .success()
    .stdout_is("");
    home.invoke("st", "echo \"$v\"; f x; pwd; sh -c 'echo \"$EXP\"'")
        .success()
        .stdout_is(&format!("42\nf:x\n{dir}\nyes\n"));
    home.invoke("st", "ll").success().stdout_is("aliased\n");
}

#[test]
fn environment_is_captured_when_the_session_is_created() {
    let home = Home::new();
    // The daemon starts with yet another value, so the session cannot take it from there.
    home.run_env(&[("FOO", "daemon")], &["daemon", "start"])
        .success();
    home.run_env(
        &[("FOO", "1"), ("ONLY_AT_NEW", "x")],
        &["new", "--name", "env"],
    )
    .success();
    home.run_env(
        &[("FOO", "2"), ("ONLY_AT_INVOKE", "y")],
        &[
            "invoke",
            "-s",
            "env",
            "echo \"$FOO|${ONLY_AT_NEW-unset}|${ONLY_AT_INVOKE-unset}\"",
        ],
    )
    .success()
    .stdout_is("1|x|unset\n");
}

#[test]
fn redefining_printf_read_and_echo_does_not_confuse_the_driver() {
    let home = Home::new();
    home.new_session("redef", &[]);
    home.invoke(
        "redef",
        "printf() { builtin echo fake-printf; }; read() { return 1; }; echo() { builtin printf 'fake-echo\\n'; }",
    )
    .success()
    .stdout_is("");
    home.invoke("redef", "(exit 5)").code_is(5).stdout_is("");
    home.invoke("redef", "builtin echo real")
        .success()
        .stdout_is("real\n");
    home.invoke("redef", "echo hi")
        .success()
        .stdout_is("fake-echo\n");
    home.run_stdin(
        &[
            "invoke",
            "-s",
            "redef",
            "builtin read -r x; builtin printf '%s\\n' \"$x\"",
        ],
        b"line\n",
    )
    .success()
    .stdout_is("line\n");
    home.invoke_args("redef", "builtin printf '%s|' \"$@\"", &["a b", "c"])
        .success()
        .stdout_is("a b|c|");
}

/// Invoke arguments, stdin, expected status, stdout and stderr.
type Check<'a> = (
    &'a [&'a str],
    Option<&'a [u8]>,
    Option<i32>,
    &'a str,
    &'a str,
);

/// Defines `name` as a do-nothing function in a fresh session, then checks that statuses,
/// streams, stdin and arguments still work. Returns what went wrong, if anything.
fn check_override(home: &Home, name: &str) -> Option<String> {
    let session = format!("o-{name}");
    let quick = std::time::Duration::from_secs(10);
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = home.command();
        c.args(args);
        try_run_command(c, stdin.map(<[u8]>::to_vec), quick)
    };
    let checks: [Check; 4] = [
        (&["(builtin exit 6)"], None, Some(6), "", ""),
        (
            &["builtin echo out; builtin echo err >&2"],
            None,
            Some(0),
            "out\n",
            "err\n",
        ),
        (
            &["builtin read -r l; builtin echo \"got:$l\""],
            Some(b"in\n"),
            Some(0),
            "got:in\n",
            "",
        ),
        (
            &["--arg", "x", "--", "builtin echo \"$#:$1\""],
            None,
            Some(0),
            "1:x\n",
            "",
        ),
    ];
    home.new_session(&session, &[]);
    let def = format!("{name}() {{ :; }}");
    match run(&["invoke", "-s", &session, "--", &def], None) {
        Ok(o) if o.status().success() => {}
        Ok(o) => return Some(format!("defining {name}():\n{o}")),
        Err(e) => return Some(format!("defining {name}(): {e}")),
    }
    for (args, stdin, code, out, err) in checks {
        let mut v = vec!["invoke", "-s", &session];
        if args.len() == 1 {
            v.push("--");
        }
        v.extend_from_slice(args);
        match run(&v, stdin) {
            Ok(o) if o.code() == code && o.out() == out && o.err() == err => {}
            Ok(o) => return Some(format!("after {name}() {{ :; }}:\n{o}")),
            Err(e) => return Some(format!("after {name}() {{ :; }}: {e}")),
        }
    }
    None
}

#[test]
fn redefining_other_common_commands_does_not_confuse_the_driver() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    let names = [
        "cat", "wait", "trap", "kill", "eval", "source", "test", "exec", "command", "type", "set",
        "unset", "mkfifo", "rm", "mktemp", "sleep", "exit", "return", "shift", "cd", "local",
        "declare",
    ];
    let problems: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| {
                let home = &home;
                s.spawn(move || check_override(home, n))
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        problems.is_empty(),
        "user functions named like commands the driver uses confused it:\n{}",
        problems.join("\n")
    );
}

#[test]
fn an_empty_path_does_not_break_the_driver() {
    let home = Home::new();
    home.new_session("nopath", &[]);
    home.invoke("nopath", "PATH=/nonexistent-dir").success();
    home.invoke("nopath", "echo hi; (exit 3)")
        .code_is(3)
        .stdout_is("hi\n");
    home.run_stdin(
        &["invoke", "-s", "nopath", "read -r l; echo \"[$l]\""],
        b"xyz\n",
    )
    .success()
    .stdout_is("[xyz]\n");
}

#[test]
fn changed_ifs_and_noglob_do_not_change_argument_passing() {
    let home = Home::new();
    home.new_session("ifs", &[]);
    home.invoke("ifs", "IFS=x; set -f").success();
    home.invoke_args("ifs", "printf '%s|' \"$@\"", &["a b", "xx", "*"])
        .success()
        .stdout_is("a b|xx|*|");
}

#[test]
fn positional_parameters_do_not_leak_into_the_next_invocation() {
    let home = Home::new();
    home.new_session("pos", &[]);
    home.invoke_args("pos", "echo \"$#\"", &["a", "b"])
        .success()
        .stdout_is("2\n");
    home.invoke("pos", "echo \"$#:${1-none}\"")
        .success()
        .stdout_is("0:none\n");
}

#[test]
fn closing_standard_and_low_fds_does_not_break_later_invocations() {
    let home = Home::new();
    home.new_session("fds", &[]);
    home.invoke("fds", "exec 3>&-; exec 1>&-").success();
    home.invoke("fds", "echo out; echo err >&2; (exit 4)")
        .code_is(4)
        .stdout_is("out\n")
        .stderr_is("err\n");
    home.invoke(
        "fds",
        "exec 0<&- 1>&- 2>&- 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-",
    )
    .success();
    home.invoke("fds", "echo again; echo err2 >&2")
        .success()
        .stdout_is("again\n")
        .stderr_is("err2\n");
    home.run_stdin(&["invoke", "-s", "fds", "cat"], b"abc")
        .success()
        .stdout_is("abc");
}

#[test]
fn set_e_and_set_u_do_not_break_later_successful_invocations() {
    let home = Home::new();
    home.new_session("opts", &[]);
    home.invoke("opts", "set -eu; true").success();
    home.invoke("opts", "echo ok").success().stdout_is("ok\n");
    home.invoke("opts", "echo \"${NOT_SET_ANYWHERE:-dflt}\"")
        .success()
        .stdout_is("dflt\n");
    home.invoke_args("opts", "echo \"$1\"", &["arg"])
        .success()
        .stdout_is("arg\n");
    assert_eq!(home.state_of("opts").as_deref(), Some("Opened"));
}

#[test]
fn a_set_e_failure_ends_the_session_as_broken() {
    let home = Home::new();
    home.new_session("sete", &[]);
    home.invoke("sete", "set -e; false; echo unreachable")
        .code_is(1)
        .stdout_is("");
    let s = home.session("sete");
    assert_eq!(s["state"], "Broken", "{s:#}");
    assert!(!s["reason"].as_str().unwrap_or("").is_empty(), "{s:#}");
}

#[test]
fn trap_exit_does_not_disturb_later_invocations() {
    let home = Home::new();
    home.new_session("trap", &[]);
    home.invoke("trap", "trap 'echo bye' EXIT")
        .success()
        .stdout_is("");
    home.invoke("trap", "echo hi").success().stdout_is("hi\n");
    home.invoke("trap", "(exit 2)").code_is(2).stdout_is("");
    assert_eq!(home.state_of("trap").as_deref(), Some("Opened"));
}

#[test]
fn exit_trap_output_goes_to_the_invocation_that_exits() {
    let home = Home::new();
    home.new_session("trapx", &[]);
    home.invoke("trapx", "trap 'echo bye' EXIT").success();
    home.invoke("trapx", "exit 3").code_is(3).stdout_is("bye\n");
    assert_eq!(home.state_of("trapx").as_deref(), Some("Broken"));
}

#[test]
fn exit_reports_its_status_and_leaves_the_session_broken() {
    let home = Home::new();
    let s = home.new_session("brk", &[]);
    home.invoke("brk", "echo before; exit 7")
        .code_is(7)
        .stdout_is("before\n");
    let b = home.session("brk");
    assert_eq!(b["state"], "Broken", "{b:#}");
    assert_eq!(b["availability"], "None", "{b:#}");
    assert!(
        !b["reason"].as_str().unwrap_or("").is_empty(),
        "Broken needs a reason: {b:#}"
    );
    assert_eq!(b["instance_id"], s["instance_id"]);
    home.invoke("brk", "echo again")
        .failure()
        .clear_error("brk", 2);
    // Never reset silently.
    assert_eq!(home.state_of("brk").as_deref(), Some("Broken"));
    // A Broken session can be removed, and its host process ends.
    home.run(&["remove", "brk"]).success();
    wait_gone(host_pid(&s), "host of the removed Broken session");
    assert_ne!(home.state_of("brk").as_deref(), Some("Broken"));
}

#[test]
fn exec_ends_the_session_with_the_new_programs_status() {
    let home = Home::new();
    home.new_session("ex", &[]);
    home.invoke("ex", "exec sh -c 'echo from-exec; exit 9'")
        .code_is(9)
        .stdout_is("from-exec\n");
    assert_eq!(home.state_of("ex").as_deref(), Some("Broken"));
}

#[test]
fn a_shell_killed_from_outside_marks_the_session_broken() {
    let home = Home::new();
    home.new_session("victim", &[]);
    let pid: u32 = home
        .invoke("victim", "echo $$")
        .success()
        .out()
        .trim()
        .parse()
        .unwrap();
    assert!(
        send_signal(pid, "KILL"),
        "kill -9 the session's shell {pid}"
    );
    wait_until(WAIT, "session victim is Broken", || {
        home.state_of("victim").as_deref() == Some("Broken")
    });
    let s = home.session("victim");
    assert!(!s["reason"].as_str().unwrap_or("").is_empty(), "{s:#}");
    home.invoke("victim", "true")
        .failure()
        .clear_error("victim", 2);
}

#[test]
fn late_background_output_is_not_seen_by_the_next_invocation() {
    let home = Home::new();
    home.new_session("late", &[]);
    home.invoke("late", "(sleep 0.5; echo late; echo late-err >&2) &")
        .success();
    // By the time this prints, the background job has written; none of it may show up here.
    home.invoke("late", "sleep 1; echo now")
        .success()
        .stdout_is("now\n")
        .stderr_is("");
    home.invoke("late", "echo after")
        .success()
        .stdout_is("after\n")
        .stderr_is("");
}

#[test]
fn exit_status_comes_after_all_output() {
    let home = Home::new();
    home.new_session("seq", &[]);
    for _ in 0..3 {
        let out = home
            .invoke(
                "seq",
                "{ head -c 3000000 /dev/zero >&2 & head -c 5000000 /dev/zero | tr '\\0' x; wait; }; printf END; (exit 3)",
            )
            .code_is(3);
        assert_eq!(out.stdout().len(), 5_000_003, "stdout length");
        assert!(out.stdout().ends_with(b"xEND"), "stdout tail");
        assert_eq!(out.stderr().len(), 3_000_000, "stderr length");
    }
}

#[test]
fn stdin_is_per_invocation() {
    let home = Home::new();
    home.new_session("in", &[]);
    home.run_stdin(
        &["invoke", "-s", "in", "read -r a; echo \"[$a]\""],
        b"one\ntwo\n",
    )
    .success()
    .stdout_is("[one]\n");
    // What the first invocation left unread does not leak into the next one.
    home.invoke("in", "cat; echo end")
        .success()
        .stdout_is("end\n");
}

#[test]
fn the_shell_is_bash_and_has_no_controlling_terminal() {
    require_program("bash", "bash");
    let home = Home::new();
    home.new_session("tty", &[]);
    home.invoke("tty", "echo \"${BASH_VERSION:+bash}\"")
        .success()
        .stdout_is("bash\n");
    home.invoke(
        "tty",
        "if (: </dev/tty) 2>/dev/null; then echo tty; else echo notty; fi",
    )
    .success()
    .stdout_is("notty\n");
}

#[test]
fn a_command_killed_by_a_signal_reports_128_plus_n() {
    let home = Home::new();
    home.new_session("sig", &[]);
    home.invoke("sig", "sh -c 'kill -TERM $$'").code_is(143);
    home.invoke("sig", "echo fine")
        .success()
        .stdout_is("fine\n");
    assert_eq!(home.state_of("sig").as_deref(), Some("Opened"));
}
