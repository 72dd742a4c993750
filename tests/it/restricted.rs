//! The restricted engine (SPEC §3.19, issue 6 point 3): no shell runs; a line runs only if an
//! allow rule matches its program and every argument. A battery of escape attempts, each of
//! which would create a marker file if anything beyond the allowed command ran, must all be
//! refused with "command not allowed in configuration NAME" and leave the session usable.

use crate::common::*;

const RULES: &str = r#"engine = "restricted"
path = ["/usr/bin", "/bin"]
[[allow]]
command = "echo"
rest = "re:[a-zA-Z0-9 ._-]*"
[[allow]]
command = "ls"
args = ["glob:/tmp/*"]
[[allow]]
command = "sleep"
args = ["re:[0-9]+"]
[[allow]]
command = "cat"
[[allow]]
command = "uptime"
"#;

fn restricted_home() -> Home {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    let dir = home.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ops.toml"), RULES).unwrap();
    home.new_session("r", &["--configuration", "ops"]);
    home
}

#[test]
fn allowed_commands_run_directly_with_their_streams_and_status() {
    let home = restricted_home();
    home.invoke("r", "echo hello world")
        .success()
        .stdout_is("hello world\n");
    home.invoke("r", "uptime").success();
    home.run_stdin(&["invoke", "-s", "r", "cat"], b"piped input\n")
        .success()
        .stdout_is("piped input\n");
    // The command's own status comes back.
    let out = home.invoke("r", "ls /tmp/no-such-file-here");
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.err().contains("no-such-file-here"), "{out}");
    // Ctrl-C stops the command; the session survives.
    let mut cli = home.spawn(&["invoke", "-s", "r", "sleep 30"], "sleeper");
    wait_until(WAIT, "the command runs", || {
        home.session("r")["availability"] == "Busy"
    });
    assert!(send_signal(cli.pid(), "INT"));
    cli.wait(WAIT).code_is(130);
    home.invoke("r", "echo still here")
        .success()
        .stdout_is("still here\n");
    let table = home.run(&["config", "list"]).success().out();
    assert!(table.contains("restricted"), "{table}");
}

#[test]
fn forty_escape_attempts_are_all_refused() {
    let home = restricted_home();
    let marker = home.scratch().join("marker");
    let m = marker.display().to_string();
    let attempts: Vec<String> = vec![
        format!("echo hi; touch {m}"),
        format!("echo hi && touch {m}"),
        format!("echo hi || touch {m}"),
        format!("echo hi | touch {m}"),
        format!("echo hi & touch {m}"),
        format!("echo $(touch {m})"),
        format!("echo `touch {m}`"),
        format!("echo \"$(touch {m})\""),
        format!("echo \"`touch {m}`\""),
        format!("echo hi > {m}"),
        format!("echo hi >> {m}"),
        format!("echo hi >{m}"),
        "cat < /etc/passwd".into(),
        "cat /etc/passwd".into(),
        format!("touch {m}"),
        format!("/usr/bin/touch {m}"),
        format!("'touch' {m}"),
        format!("FOO=bar touch {m}"),
        "PATH=/tmp echo hi".into(),
        format!("/bin/../usr/bin/touch {m}"),
        format!("../../usr/bin/touch {m}"),
        format!("./touch {m}"),
        format!("exec touch {m}"),
        format!("eval touch {m}"),
        format!("sh -c 'touch {m}'"),
        format!("bash -c touch\\ {m}"),
        format!("env touch {m}"),
        format!("echo hi\ntouch {m}"),
        format!("echo hi\rtouch {m}"),
        format!("sleep 1; touch {m}"),
        "sleep 1a".into(),
        "sleep -1".into(),
        "uptime --help".into(),
        "ls /etc/*".into(),
        "ls /tmp/../etc".into(),
        "ls /tmp/x /etc".into(),
        "echo {a,b}".into(),
        format!("echo hi #; touch {m}"),
        "echo ~root".into(),
        format!("echo 'hi; touch {m}'"),
        format!("echo hi\\;touch {m}"),
        "echo -e '\\x41'".into(),
        "ｅcho hi".into(),
        "echo $HOME".into(),
        "echo ${IFS}".into(),
        "(echo hi)".into(),
        "{ echo hi; }".into(),
        "!echo hi".into(),
        "".into(),
        "echo 'unterminated".into(),
    ];
    assert!(attempts.len() >= 40);
    for a in &attempts {
        let out = home.invoke("r", a);
        assert_eq!(out.code(), Some(6), "not refused: {a:?}\n{out}");
        assert!(
            out.err()
                .contains("command not allowed in configuration ops"),
            "unclear refusal for {a:?}: {out}"
        );
        assert_eq!(out.out(), "", "{a:?} printed something");
    }
    assert!(!marker.exists(), "an attempt ran something");
    // Refusals harm nothing: the session is open and serves an allowed command.
    assert_eq!(home.session("r")["state"], "Opened");
    home.invoke("r", "echo fine").success().stdout_is("fine\n");
}

#[test]
fn program_paths_with_dot_or_empty_parts_are_refused() {
    // A rule naming the program by its absolute path: before, `Path::components()` tidied
    // `/bin/./echo` and `/bin/echo/` into `/bin/echo` and let them through.
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    let dir = home.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("exact.toml"),
        "engine = \"restricted\"\npath = [\"/usr/bin\", \"/bin\"]\n\
         [[allow]]\ncommand = \"/bin/echo\"\nrest = \"re:[a-z]*\"\n\
         [[allow]]\ncommand = \"/usr/bin/echo\"\nrest = \"re:[a-z]*\"\n",
    )
    .unwrap();
    home.new_session("x", &["--configuration", "exact"]);
    home.invoke("x", "/bin/echo hi").success().stdout_is("hi\n");
    home.invoke("x", "/usr/bin/echo hi")
        .success()
        .stdout_is("hi\n");
    for line in [
        "/bin/./echo hi",
        "/bin//echo hi",
        "/bin/echo/ hi",
        "/usr/bin/../bin/echo hi",
        "//bin/echo hi",
        "/usr/bin/./echo hi",
    ] {
        let out = home.invoke("x", line);
        assert_eq!(out.code(), Some(6), "not refused: {line:?}\n{out}");
        assert!(
            out.err()
                .contains("command not allowed in configuration exact")
                && out.err().contains("is not an allowed program"),
            "unclear refusal for {line:?}: {out}"
        );
        assert_eq!(out.out(), "", "{line:?} ran something");
    }
    assert_eq!(home.session("x")["state"], "Opened");

    // The same parts in a rule or a path entry make the configuration an error naming the
    // file's line; nothing starts.
    for (name, text, line) in [
        (
            "rule",
            "engine = \"restricted\"\n[[allow]]\ncommand = \"/bin/./echo\"\n",
            2,
        ),
        (
            "entry",
            "engine = \"restricted\"\npath = [\"/usr/bin\",\n  \"/bin/\"]\n[[allow]]\ncommand = \"echo\"\n",
            3,
        ),
        (
            "relative",
            "engine = \"restricted\"\npath = [\"bin\"]\n[[allow]]\ncommand = \"echo\"\n",
            2,
        ),
    ] {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = home.run(&["new", "--name", name, "--configuration", name]);
        assert_eq!(out.code(), Some(2), "{name}: {out}");
        let want = format!("configuration {name}: {} line {line}: ", file.display());
        assert!(out.err().contains(&want), "{name}: wanted {want:?}\n{out}");
        assert!(home.find_session(name).is_none(), "{name} started");
    }
}
