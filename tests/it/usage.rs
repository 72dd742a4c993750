//! Bad targets are usage errors (issue 17 point 7): an empty session or computer name, in any
//! subcommand, is refused with exit status 2 and one line, and nothing runs or is created
//! (never "no target, so here"); `--file` reads at most the script limit; `get` lists by Id.
//! And `invoke --json` names the computer a session is on (point 8).

use crate::common::sshd::setup;
use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn empty_session_and_computer_names_are_usage_errors_everywhere() {
    let home = Home::new();
    home.new_session("s", &[]);
    let ran = home.scratch().join("ran");
    let touch = format!("touch {}", ran.display());
    let cases: Vec<Vec<&str>> = vec![
        vec!["invoke", "-s", "", &touch],
        vec!["invoke", "--session", "", &touch],
        vec!["invoke", "-s", "s,", &touch],
        vec!["invoke", "-s", "s", "-s", "", &touch],
        vec!["invoke", "--computer", "", &touch],
        vec!["invoke", "--computer", ",", &touch],
        vec!["invoke", "--computer", "a,,b", &touch],
        vec!["invoke", "--as-job", "-s", "", &touch],
        vec!["invoke", "--as-job", "--computer", ",", &touch],
        vec!["new", ""],
        vec!["new", ","],
        vec!["new", "a,,b"],
        vec!["remove", ""],
        vec!["remove", "s,,s"],
        vec!["disconnect", ""],
        vec!["connect", ""],
        vec!["connect", "--computer", "", "--name", "s"],
        vec!["connect", "--computer", "localhost", "--name", ""],
        vec!["receive", ""],
        vec!["enter", ""],
        vec!["enter", "--computer", ""],
        vec!["job", "start", "-s", "", &touch],
        vec!["get", "--computer", ""],
        vec!["get", "--computer", "localhost,"],
        vec!["config", "list", "--computer", ""],
        vec!["doctor", "--computer", ""],
    ];
    for args in &cases {
        let out = home.run(args).code_is(2);
        let lines = out.err_lines();
        assert_eq!(lines.len(), 1, "one line for {args:?}:\n{out}");
        assert!(lines[0].starts_with("tether: "), "{out}");
        assert!(
            lines[0].contains("empty session name") || lines[0].contains("empty computer name"),
            "{args:?} should say what is empty:\n{out}"
        );
    }
    assert!(!ran.exists(), "a command ran for an empty target");
    // Nothing was created, removed or disconnected.
    let list = home.sessions();
    assert_eq!(names(&list), vec!["s".to_string()], "{list:#?}");
    assert_eq!(list[0]["state"], "Opened");
    let jobs = home.run(&["job", "list", "--json"]).success().json();
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
    // Well-formed lists still work.
    home.new_session("t", &[]);
    home.run(&["invoke", "-s", "s,t", "--hide-computer-name", "echo x"])
        .success()
        .stdout_is("x\nx\n");
}

#[test]
fn a_script_file_is_read_up_to_the_hosts_limit_only() {
    let home = Home::new();
    let limit = 4 << 20;
    // /dev/zero never ends: refused after the limit, not read forever.
    let t0 = Instant::now();
    let out = home.run(&["invoke", "--file", "/dev/zero"]).code_is(2);
    let out = out.clear_error("/dev/zero", 1);
    assert!(out.err().contains("4 MiB"), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{out}");
    // One byte over: refused here, naming the file and the limit (not by the host).
    let dir = home.scratch();
    let big = dir.join("big.sh");
    let mut text = b"echo ran\n".to_vec();
    text.resize(limit + 1, b'#');
    std::fs::write(&big, &text).unwrap();
    let out = home
        .run(&["invoke", "--file", big.to_str().unwrap()])
        .code_is(2)
        .clear_error("big.sh", 1);
    assert!(out.err().contains("4 MiB"), "{out}");
    // Exactly the limit: the host takes it (its limit is the same).
    text.truncate(limit);
    let exact = dir.join("exact.sh");
    std::fs::write(&exact, &text).unwrap();
    home.run(&["invoke", "--file", exact.to_str().unwrap()])
        .success()
        .stdout_is("ran\n");
    // Not text, or not a file: one line, exit 2.
    let bin = dir.join("bin.sh");
    std::fs::write(&bin, b"echo \xff\n").unwrap();
    home.run(&["invoke", "--file", bin.to_str().unwrap()])
        .code_is(2)
        .clear_error("not UTF-8", 1);
    home.run(&["invoke", "--file", dir.to_str().unwrap()])
        .code_is(2)
        .clear_error("cannot read script file", 1);
}

fn ids(list: &serde_json::Value) -> Vec<u64> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn get_lists_local_sessions_by_id() {
    let home = Home::new();
    // The daemon keeps sessions by instance id (random): eight are all but never in Id
    // order by chance.
    for i in 0..8 {
        home.run(&["new", "--name", &format!("n{i}")]).success();
    }
    let list = home.run(&["get", "--json"]).success().json();
    let got = ids(&list);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "{list}");
    assert_eq!(got.len(), 8);
    let table = home.run(&["get"]).success().out();
    let column: Vec<u64> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(column, sorted, "{table}");
}

#[test]
fn get_lists_local_and_remote_sessions_by_id_and_invoke_json_names_their_computer() {
    let (_sshd, remote, client) = setup();
    client.new_session("a", &[]);
    let r = single_session(&client.run(&["new", "tether-test", "--name", "r", "--json"]));
    remote.note_session(&remote.session("r"));
    client.new_session("b", &[]);
    let r2 = single_session(&client.run(&["new", "tether-test", "--json"]));
    // A default name stays this client's: the far side knows it by its instance id.
    for s in remote.sessions() {
        assert!(s["instance_id"] == r["instance_id"] || s["instance_id"] == r2["instance_id"]);
    }
    for args in [
        &["get", "--json"][..],
        &["get", "--computer", "tether-test", "--json"],
        &["get", "--computer", "localhost,tether-test", "--json"],
    ] {
        let list = client.run(args).success().json();
        let got = ids(&list);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(got, sorted, "{args:?}: {list}");
    }
    let all = client.run(&["get", "--json"]).success().json();
    assert_eq!(ids(&all).len(), 4, "{all}");
    let mixed = client
        .run(&["get", "--computer", "localhost,tether-test", "--json"])
        .success()
        .json();
    assert_eq!(ids(&mixed), ids(&all), "{mixed}");

    // invoke --json names the computer as `get` does: by name, by Id, and among several.
    assert_eq!(r["computer_name"], "tether-test");
    let id = r["id"].to_string();
    for word in ["r", id.as_str()] {
        let out = client
            .run(&["invoke", "-s", word, "--json", "echo hi; echo oops >&2"])
            .success();
        let lines = out.json_lines();
        assert_eq!(lines.len(), 3, "{out}");
        for l in &lines {
            assert_eq!(l["computer"], "tether-test", "{out}");
            assert_eq!(l["session"], word, "{out}");
        }
        assert_eq!(lines[2]["exit_code"], 0);
    }
    let out = client
        .run(&["invoke", "-s", "a,r", "--json", "echo hi"])
        .success();
    let by_session = |s: &str| -> Vec<serde_json::Value> {
        out.json_lines()
            .into_iter()
            .filter(|l| l["session"] == s)
            .collect()
    };
    assert!(by_session("a").iter().all(|l| l["computer"] == "localhost"));
    assert!(
        by_session("r")
            .iter()
            .all(|l| l["computer"] == "tether-test")
    );
    assert_eq!(by_session("r").len(), 2, "{out}");
    // A local session stays localhost; a temporary one on a computer is named by it.
    let out = client
        .run(&["invoke", "-s", "b", "--json", "true"])
        .success();
    assert_eq!(out.json_lines()[0]["computer"], "localhost", "{out}");
    let out = client
        .run(&["invoke", "--computer", "tether-test", "--json", "true"])
        .success();
    assert_eq!(out.json_lines()[0]["computer"], "tether-test", "{out}");
}
