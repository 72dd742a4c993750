//! Session configurations (SPEC §3.19, issue 6 point 1): TOML files in
//! `$TETHER_HOME/configurations/` set the engine, environment, directory, start-up script,
//! idle timeout, output quota and buffering, and sessions per user; a bad file is reported with
//! its line and harms nothing else; `config list|show` shows them, here and on another computer.

use crate::common::sshd::setup;
use crate::common::*;

fn write_config(home: &Home, name: &str, text: &str) {
    let dir = home.path().join("configurations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

fn dash() -> &'static str {
    ["/bin/dash", "/usr/bin/dash"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("dash is needed for this test (apt-get install dash)")
}

#[test]
fn a_configuration_sets_how_sessions_start() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    write_config(
        &home,
        "ops",
        &format!(
            "engine = \"{}\"\nenvironment = {{ GREETING = \"hi\" }}\nworking_directory = \"/usr\"\n\
             startup_script = \"ops.sh\"\nidle_timeout = \"15m\"\n",
            dash()
        ),
    );
    std::fs::write(
        home.path().join("configurations/ops.sh"),
        "greet() { echo \"$GREETING from the profile\"; }\n",
    )
    .unwrap();
    let s = home.new_session("o", &["--configuration", "ops"]);
    assert_eq!(s["configuration_name"], "ops");
    assert_eq!(s["idle_timeout_s"], 900);
    home.invoke("o", "greet; echo $PWD; readlink /proc/$$/exe")
        .success()
        .stdout_is(&format!(
            "hi from the profile\n/usr\n{}\n",
            std::fs::canonicalize(dash()).unwrap().display()
        ));
    let table = home.run(&["get"]).success().out();
    assert!(table.contains(" ops "), "{table}");
    // --no-profile skips the start-up script, nothing else.
    home.new_session("plain", &["--configuration", "ops", "--no-profile"]);
    home.invoke("plain", "command -v greet || echo none; echo $GREETING")
        .success()
        .stdout_is("none\nhi\n");
    // A temporary session takes one too.
    home.run(&["invoke", "--configuration", "ops", "greet"])
        .success()
        .stdout_is("hi from the profile\n");
}

#[test]
fn a_bad_file_is_reported_with_its_line_and_harms_nothing_else() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    write_config(&home, "good", "idle_timeout = 600\n");
    write_config(&home, "typo", "engine = \"bash\"\n\nidle_timout = 5\n");
    write_config(&home, "broken", "engine = [\n");
    write_config(&home, "mode", "output_buffering = \"sometimes\"\n");
    let list = home.run(&["config", "list", "--json"]).success().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broken", "default", "good", "mode", "typo"]);
    let err = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .map(|c| c["error"].as_str().unwrap_or("").to_string())
            .unwrap()
    };
    assert!(err("typo").contains("typo.toml line 3") && err("typo").contains("idle_timout"));
    assert!(
        err("broken").contains("broken.toml line"),
        "{}",
        err("broken")
    );
    assert!(err("mode").contains("line 1") && err("mode").contains("sometimes"));
    assert_eq!(err("good"), "");
    let out = home
        .run(&["new", "--configuration", "typo"])
        .code_is(2)
        .clear_error("typo.toml line 3", 1);
    assert!(out.err().contains("idle_timout"));
    home.run(&["new", "--configuration", "absent"])
        .code_is(3)
        .clear_error("configuration absent not found", 1);
    // A directory that is not there is an error, not a silent start in $HOME.
    write_config(
        &home,
        "nodir",
        "working_directory = \"/nonexistent/tether-wd\"\n",
    );
    home.run(&["new", "--configuration", "nodir"])
        .code_is(2)
        .clear_error(
            "working_directory /nonexistent/tether-wd is not a directory",
            1,
        );
    home.run(&["config", "show", "typo"])
        .code_is(2)
        .clear_error("line 3", 1);
    // The daemon and the good configuration are unharmed.
    let s = home.new_session("g", &["--configuration", "good"]);
    assert_eq!(s["idle_timeout_s"], 600);
    let shown = home.run(&["config", "show", "good"]).success().out();
    assert!(shown.contains("idle_timeout = 600"), "{shown}");
}

#[test]
fn limits_from_a_configuration_are_enforced() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    write_config(
        &home,
        "small",
        "max_sessions_per_user = 1\noutput_quota = \"64K\"\noutput_buffering = \"drop\"\n",
    );
    home.new_session("one", &["--configuration", "small"]);
    home.run(&["new", "--name", "two", "--configuration", "small"])
        .code_is(4)
        .clear_error("at most 1 sessions", 1);
    // Kept output beyond the configuration's quota is dropped, and receive says so.
    let marker = home.scratch().join("go");
    let done = home.scratch().join("done");
    let script = format!(
        "while [ ! -e {m} ]; do sleep 0.02; done; seq 1 100000; touch {d}",
        m = marker.display(),
        d = done.display()
    );
    let mut cli = home.spawn(&["invoke", "-s", "one", &script], "writer");
    wait_until(WAIT, "the command runs", || {
        home.session("one")["availability"] == "Busy"
    });
    home.run(&["disconnect", "one"]).success();
    cli.wait(WAIT);
    std::fs::write(&marker, "").unwrap();
    wait_until(WAIT, "the command finishes", || done.exists());
    let out = home.run(&["receive", "one"]).success();
    assert!(out.out().len() <= 64 * 1024, "{} bytes", out.out().len());
    assert!(out.err().contains("dropped"), "{out}");
    // Removing it makes room.
    home.run(&["remove", "one"]).success();
    home.new_session("two", &["--configuration", "small"]);
}

#[test]
fn configurations_of_another_computer() {
    let (_sshd, remote, client) = setup();
    remote.run(&["daemon", "start"]).success();
    write_config(&remote, "far", "environment = { WHERE = \"far away\" }\n");
    let list = client
        .run(&["config", "list", "--computer", "tether-test", "--json"])
        .success()
        .json();
    assert!(
        list.as_array().unwrap().iter().any(|c| c["name"] == "far"),
        "{list}"
    );
    client
        .run(&[
            "new",
            "tether-test",
            "--name",
            "f",
            "--configuration",
            "far",
        ])
        .success();
    remote.note_session(&remote.session("f"));
    client
        .invoke("f", "echo $WHERE")
        .success()
        .stdout_is("far away\n");
    assert_eq!(client.session("f")["configuration_name"], "far");
}
