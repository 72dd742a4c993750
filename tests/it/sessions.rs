//! Sessions as objects: `new`, `get`, `remove`, JSON and table output, names and ids,
//! not-found errors, Closed handles and idle timeouts (SPEC §2, §3.1, §3.5, §3.6).

use crate::common::*;
use serde_json::Value;

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Table cells: whitespace-separated words, ignoring any `|` borders.
fn cells(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || c == '|')
        .filter(|w| !w.is_empty())
        .collect()
}

const HEADER: [&str; 7] = [
    "Id",
    "Name",
    "ComputerName",
    "ComputerType",
    "State",
    "ConfigurationName",
    "Availability",
];

#[track_caller]
fn assert_table(out: &Out, name: &str, id: u64) {
    let text = out.out();
    let first = text.lines().next().unwrap_or("");
    // The SPEC's seven columns come first (an extra column such as Reason may follow).
    assert_eq!(
        cells(first).get(..7),
        Some(&HEADER[..]),
        "first line must be the header:\n{out}"
    );
    let row = text
        .lines()
        .find(|l| cells(l).get(1) == Some(&name))
        .unwrap_or_else(|| panic!("no table row for {name}:\n{out}"));
    let c = cells(row);
    assert!(c.len() >= 7, "row {row:?} should have 7 cells:\n{out}");
    assert_eq!(c[0], id.to_string(), "Id column of {row:?}");
    assert_eq!(
        [c[3], c[4], c[5], c[6]],
        ["local", "Opened", "default", "Available"],
        "row {row:?}"
    );
}

#[test]
fn new_json_has_every_spec_field() {
    let home = Home::new();
    let out = home.run(&["new", "--json"]).success();
    assert!(
        out.json().is_array(),
        "new --json prints an array of sessions:\n{out}"
    );
    let s = single_session(&out);
    for f in SESSION_FIELDS {
        assert!(s.get(f).is_some(), "field {f} missing from {s:#}");
    }
    assert_eq!(s["id"], 1, "{s:#}");
    assert_eq!(s["name"], "Session1", "{s:#}");
    assert_eq!(s["computer_type"], "local", "{s:#}");
    assert_eq!(s["configuration_name"], "default", "{s:#}");
    assert_eq!(s["state"], "Opened", "{s:#}");
    assert_eq!(s["availability"], "Available", "{s:#}");
    assert_eq!(s["idle_timeout_s"], 7200, "{s:#}");
    assert_eq!(s["disconnected_on"], Value::Null, "{s:#}");
    assert!(
        is_uuid(s["instance_id"].as_str().unwrap_or("")),
        "instance_id is a UUID: {s:#}"
    );
    for f in ["owner", "created_on", "computer_name"] {
        assert!(
            !s[f].as_str().unwrap_or("").is_empty(),
            "{f} should be a non-empty string: {s:#}"
        );
    }
    let pid = host_pid(&s);
    home.note_pid(pid);
    assert!(pid_alive(pid), "host process {pid} should be running");

    // get --json reports the same session.
    let listed = home.session("Session1");
    assert_eq!(listed["instance_id"], s["instance_id"]);
    assert_eq!(listed["id"], 1);
    assert_eq!(listed["host_pid"], s["host_pid"]);
}

#[test]
fn default_names_and_ids_count_from_one_per_home() {
    let a = Home::new();
    for i in 1..=3 {
        let s = single_session(&a.run(&["new", "--json"]).success());
        assert_eq!(s["id"], i, "{s:#}");
        assert_eq!(s["name"], format!("Session{i}"), "{s:#}");
    }
    // Sessions are named on the command line by name or by id.
    a.invoke("2", "echo by-id").success().stdout_is("by-id\n");
    a.invoke("Session2", "echo by-name")
        .success()
        .stdout_is("by-name\n");
    let named = a.new_session("web", &[]);
    assert_eq!(
        named["id"], 4,
        "a named session takes the next id: {named:#}"
    );
    assert_eq!(
        names(&a.sessions()),
        ["Session1", "Session2", "Session3", "web"]
    );

    // Another TETHER_HOME is another client: its ids start at 1 and it sees none of a's sessions.
    let b = Home::new();
    assert_eq!(b.sessions(), Vec::<Value>::new());
    let s = single_session(&b.run(&["new", "--json"]).success());
    assert_eq!(s["id"], 1, "{s:#}");
    assert_eq!(names(&b.sessions()), ["Session1"]);
}

#[test]
fn new_and_get_print_the_spec_table() {
    let home = Home::new();
    let out = home.run(&["new", "--name", "tbl"]).success();
    assert_table(&out, "tbl", 1);
    home.run(&["new", "--name", "other"]).success();
    let out = home.run(&["get"]).success();
    assert_table(&out, "tbl", 1);
    assert_table(&out, "other", 2);
    // `get --name` filters the table too.
    let out = home.run(&["get", "--name", "tbl"]).success();
    assert_table(&out, "tbl", 1);
    assert!(!out.out().contains("other"), "filtered table:\n{out}");
}

#[test]
fn get_json_is_an_empty_array_without_sessions() {
    let home = Home::new();
    home.run(&["get", "--json"])
        .success()
        .assert()
        .stdout(predicates::str::is_match(r"^\s*\[\s*\]\s*$").unwrap());
    home.run(&["get"]).success();
}

#[test]
fn duplicate_name_is_refused_with_exit_2() {
    let home = Home::new();
    home.new_session("dup", &[]);
    home.run(&["new", "--name", "dup"])
        .code_is(2)
        .clear_error("dup", 1);
    assert_eq!(names(&home.sessions()), ["dup"]);
}

#[test]
fn invalid_names_are_refused_with_exit_2() {
    let home = Home::new();
    for bad in ["a;b", "12", "a b", "$(id)", "a/b", "", "-lead"] {
        let arg = format!("--name={bad}");
        let out = home.run(&["new", &arg]).code_is(2);
        let lower = out.err().to_lowercase();
        assert!(
            !out.err_lines().is_empty() && !lower.contains("panicked"),
            "a clear error for name {bad:?}:\n{out}"
        );
    }
    assert_eq!(home.sessions(), Vec::<Value>::new(), "nothing was created");
}

#[test]
fn get_filters_by_name_glob_id_instance_and_state() {
    let home = Home::new();
    let web1 = home.new_session("web1", &[]);
    let web2 = home.new_session("web2", &[]);
    let db1 = home.new_session("db1", &[]);
    let get = |args: &[&str]| {
        let mut v = vec!["get", "--json"];
        v.extend_from_slice(args);
        let out = home.run(&v).success();
        names(out.json().as_array().expect("array"))
    };
    assert_eq!(get(&["--name", "web*"]), ["web1", "web2"]);
    assert_eq!(get(&["--name", "db1"]), ["db1"]);
    assert_eq!(get(&["--name", "nomatch*"]), Vec::<String>::new());
    let id = db1["id"].to_string();
    assert_eq!(get(&["--id", &id]), ["db1"]);
    let inst = web2["instance_id"].as_str().unwrap();
    assert_eq!(get(&["--instance-id", inst]), ["web2"]);
    assert_eq!(get(&["--state", "Opened"]), ["db1", "web1", "web2"]);
    assert_eq!(get(&["--state", "Broken"]), Vec::<String>::new());

    home.invoke("web1", "exit 1").code_is(1);
    assert_eq!(get(&["--state", "Broken"]), ["web1"]);
    assert_eq!(get(&["--state", "Opened"]), ["db1", "web2"]);
    let _ = web1;
}

#[test]
fn sessions_do_not_share_state() {
    let home = Home::new();
    home.new_session("a", &[]);
    home.new_session("b", &[]);
    home.invoke("a", "v=A; f() { echo fa; }; export E=a; alias al='echo x'")
        .success();
    home.invoke(
        "b",
        "echo \"[${v-}][${E-}]\"; type f >/dev/null 2>&1 && echo has-f; alias al 2>/dev/null && echo has-alias; true",
    )
    .success()
    .stdout_is("[][]\n");
    home.invoke("a", "echo \"[$v][$E]\"; f")
        .success()
        .stdout_is("[A][a]\nfa\n");
}

#[test]
fn remove_by_name_and_by_id_ends_the_session_processes() {
    let home = Home::new();
    let r1 = home.new_session("r1", &[]);
    let r2 = home.new_session("r2", &[]);
    let r3 = home.new_session("r3", &[]);
    let shell = |name: &str| -> u32 {
        let out = home.invoke(name, "echo $$").success();
        out.out().trim().parse().expect("a pid")
    };
    let (sh1, sh2, sh3) = (shell("r1"), shell("r2"), shell("r3"));
    let id2 = r2["id"].to_string();

    home.run(&["remove", "r1", &id2]).success();
    wait_gone(host_pid(&r1), "host of removed session r1");
    wait_gone(host_pid(&r2), "host of removed session r2");
    wait_gone(sh1, "shell of removed session r1");
    wait_gone(sh2, "shell of removed session r2");
    assert!(pid_alive(host_pid(&r3)), "r3's host must survive");
    assert!(pid_alive(sh3), "r3's shell must survive");

    home.invoke("r1", "true").failure().clear_error("r1", 2);
    home.invoke(&id2, "true").failure().clear_error(&id2, 2);
    for s in home.sessions() {
        if s["name"] == "r1" || s["name"] == "r2" {
            assert_eq!(
                s["state"], "Closed",
                "a removed session listed must be Closed: {s:#}"
            );
        }
    }
    assert_eq!(home.session("r3")["state"], "Opened");
    home.invoke("r3", "echo ok").success().stdout_is("ok\n");
}

#[test]
fn remove_all_ends_every_session() {
    let home = Home::new();
    let list: Vec<Value> = ["x1", "x2", "x3"]
        .iter()
        .map(|n| home.new_session(n, &[]))
        .collect();
    home.run(&["remove", "--all"]).success();
    for s in &list {
        wait_gone(host_pid(s), "host after remove --all");
    }
    for s in home.sessions() {
        assert_eq!(s["state"], "Closed", "after remove --all: {s:#}");
    }
    home.invoke("x2", "true").failure().clear_error("x2", 2);
}

#[test]
fn remove_unknown_session_exits_3() {
    let home = Home::new();
    home.new_session("keep", &[]);
    home.run(&["remove", "nosuch"])
        .code_is(3)
        .clear_error("nosuch", 1);
    assert_eq!(home.session("keep")["state"], "Opened");
}

#[test]
fn invoke_unknown_session_exits_3_with_one_line() {
    let home = Home::new();
    home.invoke("no-such-session", "true")
        .code_is(3)
        .clear_error("no-such-session", 1);
    home.invoke("42", "true").code_is(3).clear_error("42", 1);
}

#[test]
fn idle_timeout_closes_the_session_and_its_handle_stays_closed() {
    let home = Home::with_min_idle();
    let idle = home.new_session("idle", &["--idle-timeout", "2s"]);
    assert_eq!(idle["idle_timeout_s"], 2, "{idle:#}");
    assert!(
        idle["expires_on"].is_string(),
        "expires_on should say when an idle session expires: {idle:#}"
    );
    let keep = home.new_session("keep", &["--idle-timeout", "0"]);
    assert_eq!(keep["idle_timeout_s"], 0, "{keep:#}");

    wait_until(WAIT, "the idle session is Closed", || {
        home.state_of("idle").as_deref() == Some("Closed")
    });
    let closed = home.session("idle");
    assert_eq!(closed["availability"], "None", "{closed:#}");
    wait_gone(host_pid(&idle), "host of the timed-out session");
    home.invoke("idle", "true").failure().clear_error("idle", 2);
    assert_eq!(home.state_of("idle").as_deref(), Some("Closed"));

    // --idle-timeout 0 never expires.
    assert_eq!(home.session("keep")["state"], "Opened");
    home.invoke("keep", "echo alive")
        .success()
        .stdout_is("alive\n");

    // Removing the Closed handle forgets it.
    home.run(&["remove", "idle"]).success();
    assert_eq!(names(&home.sessions()), ["keep"]);
}

#[test]
fn idle_clock_does_not_run_while_a_command_runs() {
    let home = Home::with_min_idle();
    home.new_session("worker", &["--idle-timeout", "2s"]);
    // Runs longer than the idle timeout; the session is in use, so it must not be closed.
    home.invoke("worker", "sleep 3; echo done")
        .success()
        .stdout_is("done\n");
    assert_eq!(home.state_of("worker").as_deref(), Some("Opened"));
    home.invoke("worker", "echo still-here")
        .success()
        .stdout_is("still-here\n");
}

#[test]
fn idle_timeout_below_the_minimum_and_bad_durations_are_refused() {
    let home = Home::new();
    home.run(&["new", "--name", "short", "--idle-timeout", "30s"])
        .code_is(2);
    home.run(&["new", "--name", "bad", "--idle-timeout", "soon"])
        .code_is(2);
    assert_eq!(home.sessions(), Vec::<Value>::new());
    for (dur, secs) in [("90s", 90), ("15m", 900), ("2h", 7200), ("0", 0)] {
        let name = format!("d{secs}");
        let s = home.new_session(&name, &["--idle-timeout", dur]);
        assert_eq!(s["idle_timeout_s"], secs, "--idle-timeout {dur}: {s:#}");
    }
}
