//! `tether invoke`: stdin, `--arg`, `--file`, exit statuses, `--json`, several targets,
//! temporary sessions, busy sessions and `--wait-timeout`, `--timeout`, and Ctrl-C
//! (SPEC §2, §3.3, §3.4).

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

#[test]
fn stdin_is_forwarded_byte_exact() {
    let home = Home::new();
    home.new_session("in", &[]);
    home.run_stdin(&["invoke", "-s", "in", "wc -l"], b"a\nb\n")
        .success()
        .stdout_is("2\n");
    let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let out = home
        .run_stdin(&["invoke", "-s", "in", "cat"], &all)
        .success();
    assert_eq!(out.stdout(), &all[..], "binary stdin round trip");
}

#[test]
fn without_stdin_the_command_reads_dev_null() {
    let home = Home::new();
    home.new_session("null", &[]);
    // stdin is /dev/null here (run() gives none): cat returns at once.
    home.invoke("null", "cat; echo \"rc=$?\"")
        .success()
        .stdout_is("rc=0\n");
}

#[test]
fn a_terminal_stdin_is_not_forwarded() {
    require_program("script", "bsdutils");
    let home = Home::new();
    home.new_session("tty", &[]);
    // Under `script`, tether's stdin is a terminal: the command must get /dev/null instead of
    // waiting for the terminal. Our end of script's stdin stays open and silent throughout.
    let inner = format!(
        "'{}' invoke -s tty 'cat; echo \"rc=$?\"'",
        tether_bin().display()
    );
    let mut c = std::process::Command::new("script");
    c.args(["-q", "-e", "-c", &inner, "/dev/null"])
        .env_remove("TETHER_MIN_IDLE_TIMEOUT")
        .env("TETHER_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn script");
    let _keep_stdin_open = child.stdin.take();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("invoke under a terminal did not finish: it waited on the terminal's stdin");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(_keep_stdin_open);
    let text = reader.join().unwrap();
    assert!(status.success(), "status {status}; output {text:?}");
    assert!(text.contains("rc=0"), "output {text:?}");
}

#[test]
fn args_become_positional_parameters_without_injection() {
    let home = Home::new();
    home.new_session("args", &[]);
    let canary = home.scratch().join("canary");
    let touch = format!("$(touch {})", canary.display());
    let args = [
        "a b",
        "$(echo x)",
        "`id`",
        "'\"",
        "",
        "*",
        "-n",
        "line1\nline2",
        ";echo injected",
        &touch,
    ];
    let expected: String = args.iter().map(|a| format!("{a}|")).collect();
    home.invoke_args("args", "printf '%s|' \"$@\"", &args)
        .success()
        .stdout_is(&expected);
    home.invoke_args("args", "echo $#", &args)
        .success()
        .stdout_is("10\n");
    assert!(!canary.exists(), "an --arg value was executed");
}

#[test]
fn file_runs_a_local_script_in_the_session() {
    let home = Home::new();
    home.new_session("file", &[]);
    let script = home.scratch().join("script.sh");
    fs::write(
        &script,
        "echo \"file:$1:$#\"\nfromfile=yes\necho err-from-file >&2\n(exit 6)",
    )
    .unwrap();
    let path = script.to_str().unwrap();
    home.run(&["invoke", "-s", "file", "--file", path, "--arg", "z"])
        .code_is(6)
        .stdout_is("file:z:1\n")
        .stderr_is("err-from-file\n");
    home.invoke("file", "echo \"$fromfile\"")
        .success()
        .stdout_is("yes\n");
    // A missing file is tether's own error, naming the file.
    let missing = home.scratch().join("missing.sh");
    home.run(&["invoke", "-s", "file", "--file", missing.to_str().unwrap()])
        .failure()
        .clear_error("missing.sh", 2);
}

#[test]
fn the_commands_exit_status_passes_through() {
    let home = Home::new();
    home.new_session("rc", &[]);
    for code in [0, 1, 2, 42, 126, 127, 255] {
        home.invoke("rc", &format!("(exit {code})")).code_is(code);
    }
    home.invoke("rc", "no-such-command-xyz")
        .code_is(127)
        .assert()
        .stderr(predicates::str::contains("no-such-command-xyz"));
    assert_eq!(home.state_of("rc").as_deref(), Some("Opened"));
}

#[test]
fn a_script_after_double_dash_may_start_with_a_dash() {
    let home = Home::new();
    home.new_session("dash", &[]);
    // `--json` here is the script (a command bash cannot find), not tether's flag.
    let out = home
        .run(&["invoke", "-s", "dash", "--", "--json"])
        .code_is(127);
    assert!(
        !out.out().trim_start().starts_with('{'),
        "must not be JSON output:\n{out}"
    );
}

#[test]
fn json_output_is_one_object_per_line_with_a_final_exit_code() {
    let home = Home::new();
    home.new_session("js", &[]);
    let out = home
        .run(&[
            "invoke",
            "-s",
            "js",
            "--json",
            "echo out; echo err >&2; echo out2; (exit 3)",
        ])
        .code_is(3);
    let lines = out.json_lines();
    assert!(lines.len() >= 2, "{out}");
    let (last, streams) = lines.split_last().unwrap();
    let mut so = String::new();
    let mut se = String::new();
    for l in streams {
        for k in ["computer", "session", "stream", "data"] {
            assert!(l.get(k).is_some(), "{k} missing in {l}");
        }
        assert_eq!(l["session"], "js", "{l}");
        match l["stream"].as_str() {
            Some("stdout") => so += l["data"].as_str().unwrap(),
            Some("stderr") => se += l["data"].as_str().unwrap(),
            _ => panic!("bad stream in {l}"),
        }
    }
    assert_eq!(so, "out\nout2\n");
    assert_eq!(se, "err\n");
    assert_eq!(last["exit_code"], 3, "{last}");
    assert_eq!(last["session"], "js", "{last}");
    assert!(last.get("computer").is_some(), "{last}");
}

#[test]
fn several_sessions_run_and_prefix_their_lines() {
    let home = Home::new();
    home.new_session("a", &[]);
    home.new_session("b", &[]);
    home.invoke("a", "v=A").success();
    home.invoke("b", "v=B").success();

    let out = home
        .run(&["invoke", "-s", "a,b", "echo \"v=$v\""])
        .success();
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for v in ["v=A", "v=B"] {
        let line = lines
            .iter()
            .find(|l| l.ends_with(v))
            .unwrap_or_else(|| panic!("no line ending {v}:\n{out}"));
        assert!(
            line.contains(": "),
            "line {line:?} should be prefixed 'COMPUTER: '"
        );
    }
    // The status is 0 only if every target exited 0; repeated -s works too.
    home.run(&["invoke", "-s", "a", "-s", "b", "[ \"$v\" = A ]"])
        .failure();
    home.run(&["invoke", "-s", "a", "-s", "b", "true"])
        .success();

    let out = home.run(&["invoke", "-s", "a,b", "--json", "echo $v; (exit 1)"]);
    let lines = out.json_lines();
    let mut exits: Vec<(String, Value)> = lines
        .iter()
        .filter(|l| l.get("exit_code").is_some())
        .map(|l| {
            (
                l["session"].as_str().unwrap_or("?").to_owned(),
                l["exit_code"].clone(),
            )
        })
        .collect();
    exits.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        exits,
        [
            ("a".to_string(), Value::from(1)),
            ("b".to_string(), Value::from(1))
        ],
        "{out}"
    );
    let a_data: String = lines
        .iter()
        .filter(|l| l["session"] == "a" && l["stream"] == "stdout")
        .map(|l| l["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(a_data, "A\n", "{out}");
}

#[test]
fn without_a_session_invoke_uses_a_temporary_one() {
    let home = Home::new();
    let out = home
        .run_env(
            &[("TMPVAR", "9")],
            &["invoke", "echo \"$$ $TMPVAR\"; echo e >&2"],
        )
        .success();
    assert_eq!(out.err(), "e\n", "{out}");
    let text = out.out();
    let (pid, var) = text.trim().split_once(' ').expect("pid and var");
    assert_eq!(
        var, "9",
        "the temporary session takes the caller's environment"
    );
    let pid: u32 = pid.parse().unwrap();
    wait_gone(pid, "the temporary session's shell");
    assert_eq!(
        home.sessions(),
        Vec::<Value>::new(),
        "not listed afterwards"
    );
    home.run(&["invoke", "(exit 5)"]).code_is(5);
    home.run_stdin(&["invoke", "tr a-z A-Z"], b"abc")
        .success()
        .stdout_is("ABC");
}

#[test]
fn durations_are_parsed() {
    let home = Home::new();
    home.new_session("dur", &[]);
    for d in ["90s", "15m", "2h", "0"] {
        home.run(&["invoke", "-s", "dur", "--timeout", d, "echo ok"])
            .success()
            .stdout_is("ok\n");
    }
    home.run(&["invoke", "-s", "dur", "--timeout", "bogus", "true"])
        .code_is(2);
    home.run(&["invoke", "-s", "dur", "--wait-timeout", "bogus", "true"])
        .code_is(2);
}

#[test]
fn a_busy_session_makes_the_second_invoke_wait_or_fail_with_4() {
    let home = Home::new();
    home.new_session("busy1", &[]);
    let dir = home.scratch();
    let (marker, release) = (dir.join("marker"), dir.join("release"));
    let (m, r) = (marker.to_str().unwrap(), release.to_str().unwrap());
    let mut first = home.spawn(
        &[
            "invoke",
            "-s",
            "busy1",
            "--arg",
            m,
            "--arg",
            r,
            "--",
            ": > \"$1\"; while [ ! -e \"$2\" ]; do sleep 0.05; done; echo first-done",
        ],
        "first",
    );
    wait_until(WAIT, "the first invocation is running", || marker.exists());
    assert_eq!(home.session("busy1")["availability"], "Busy");

    home.run(&["invoke", "-s", "busy1", "--wait-timeout", "0", "true"])
        .code_is(4)
        .clear_error("busy1", 1)
        .assert()
        .stderr(predicates::str::contains("busy"));
    let out = home
        .run(&["invoke", "-s", "busy1", "--wait-timeout", "1s", "true"])
        .code_is(4)
        .clear_error("busy1", 1);
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "waited ~1 s:\n{out}"
    );

    // With the default wait, the second invoke runs once the first is done.
    let mut second = home.spawn(
        &[
            "invoke",
            "-s",
            "busy1",
            "--arg",
            r,
            "--",
            "test -e \"$1\" && echo second-ran",
        ],
        "second",
    );
    fs::write(&release, "").unwrap();
    first.wait(WAIT).success().stdout_is("first-done\n");
    second.wait(WAIT).success().stdout_is("second-ran\n");
    assert_eq!(home.session("busy1")["availability"], "Available");
}

#[test]
fn timeout_stops_a_long_command_and_the_session_survives() {
    let home = Home::new();
    home.new_session("slow", &[]);
    home.invoke("slow", "v=kept; cd /").success();
    let pidfile = home.scratch().join("sleep.pid");
    let started = Instant::now();
    let out = home
        .run(&[
            "invoke",
            "-s",
            "slow",
            "--timeout",
            "1s",
            "--arg",
            pidfile.to_str().unwrap(),
            "--",
            &pid_then_exec(1, "sleep 30"),
        ])
        .failure();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "--timeout 1s took {:?}",
        started.elapsed()
    );
    let lower = out.err().to_lowercase();
    assert!(
        lower.contains("timeout") || lower.contains("timed out"),
        "stderr should say the command timed out:\n{out}"
    );
    let pid = read_pid(&pidfile).expect("the command had started");
    wait_gone(pid, "the timed-out sleep");
    assert_eq!(home.state_of("slow").as_deref(), Some("Opened"));
    home.invoke("slow", "echo \"$v$PWD\"")
        .success()
        .stdout_is("kept/\n");
}

/// Sends SIGINT to a running `tether invoke` whose script started the given sleeps.
fn ctrl_c_case(script: &str, nfiles: usize) {
    let home = Home::new();
    home.new_session("int", &[]);
    home.invoke("int", "v=kept").success();
    let files: Vec<_> = (0..nfiles)
        .map(|i| home.scratch().join(format!("p{i}.pid")))
        .collect();
    let mut args = vec!["invoke", "-s", "int"];
    for f in &files {
        args.extend(["--arg", f.to_str().unwrap()]);
    }
    args.extend(["--", script]);
    let mut inv = home.spawn(&args, "ctrl-c");
    let pids: Vec<u32> = files.iter().map(|f| wait_pid_file(f)).collect();
    assert!(send_signal(inv.pid(), "INT"), "send SIGINT");
    let out = inv.wait(WAIT);
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.code() == Some(130) || out.status().signal() == Some(2),
        "invoke should end with 130 after Ctrl-C:\n{out}"
    );
    for pid in pids {
        wait_gone(pid, "a process the interrupted command started");
    }
    assert_eq!(home.state_of("int").as_deref(), Some("Opened"));
    home.invoke("int", "echo \"$v\"")
        .success()
        .stdout_is("kept\n");
}

#[test]
fn ctrl_c_stops_the_command_and_the_session_survives() {
    let script = format!(
        "{} | {}",
        pid_then_exec(1, "sleep 300"),
        pid_then_exec(2, "sleep 301")
    );
    ctrl_c_case(&script, 2);
}

#[test]
fn ctrl_c_also_stops_background_jobs_the_command_started() {
    let script = format!(
        "{} & {}",
        pid_then_exec(1, "sleep 300"),
        pid_then_exec(2, "sleep 301")
    );
    ctrl_c_case(&script, 2);
}

/// Ctrl-C while waiting for a busy session gives up: that command must never start later.
#[test]
fn ctrl_c_while_waiting_for_a_busy_session_never_runs_the_command() {
    let home = Home::new();
    home.new_session("busy2", &[]);
    let dir = home.scratch();
    let (marker, release, never) = (dir.join("m"), dir.join("r"), dir.join("never"));
    let (m, r, n) = (
        marker.to_str().unwrap(),
        release.to_str().unwrap(),
        never.to_str().unwrap(),
    );
    let script = ": > \"$1\"; while [ ! -e \"$2\" ]; do sleep 0.05; done";
    let mut first = home.spawn(
        &[
            "invoke", "-s", "busy2", "--arg", m, "--arg", r, "--", script,
        ],
        "first",
    );
    wait_until(WAIT, "the first invocation is running", || marker.exists());
    let mut second = home.spawn(
        &["invoke", "-s", "busy2", "--arg", n, "--", ": > \"$1\""],
        "second",
    );
    // Blocked in epoll: connected and waiting for the session.
    let wchan = format!("/proc/{}/wchan", second.pid());
    wait_until(WAIT, "the second invoke waits for the session", || {
        std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("epoll"))
    });
    assert!(send_signal(second.pid(), "INT"), "send SIGINT");
    let out = second.wait(WAIT);
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.code() == Some(130) || out.status().signal() == Some(2),
        "the waiting invoke should end with 130 after Ctrl-C:\n{out}"
    );
    std::fs::write(&release, b"").unwrap();
    first.wait(WAIT).success();
    // The session is free again; had the abandoned command been queued, it would run now.
    home.invoke("busy2", "echo free")
        .success()
        .stdout_is("free\n");
    assert!(
        !never.exists(),
        "a command abandoned with Ctrl-C ran anyway"
    );
}
