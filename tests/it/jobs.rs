//! Jobs (SPEC §3.17, issue 5 points 6–7): `invoke --as-job` returns at once with a job whose
//! children run in the client daemon; `job list/wait/receive/stop/remove` manage them; a
//! session disconnect makes a child Disconnected and a connect resumes it. Local and through
//! the sshd harness.

use crate::common::sshd::setup;
use crate::common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn start_job(home: &Home, args: &[&str]) -> Value {
    let mut all = vec!["invoke", "--as-job", "--json"];
    all.extend_from_slice(args);
    let out = home.run(&all).success().json();
    out[0].clone()
}

fn job(home: &Home, id: u64) -> Value {
    let list = home
        .run(&["job", "list", &id.to_string(), "--json"])
        .success()
        .json();
    list[0].clone()
}

fn id_of(j: &Value) -> String {
    j["id"].as_u64().expect("a job id").to_string()
}

#[test]
fn as_job_returns_at_once_and_receive_returns_everything_exactly_once() {
    let home = Home::new();
    home.new_session("s", &[]);
    home.invoke("s", "greeting=hello").success();
    let marker = home.scratch().join("go");
    let script = format!(
        "echo $greeting; echo first-err >&2; while [ ! -e {m} ]; do sleep 0.02; done; \
         i=1; while [ $i -le 200 ]; do echo line $i; i=$((i+1)); done; echo last-err >&2",
        m = marker.display()
    );
    let t0 = Instant::now();
    let j = start_job(&home, &["-s", "s", &script]);
    assert!(t0.elapsed() < Duration::from_secs(10));
    let id = id_of(&j);
    assert_eq!(j["state"], "Running", "{j}");
    assert_eq!(j["location"], "s");
    assert_eq!(j["command"], script.as_str());
    assert_eq!(j["children"].as_array().map(|c| c.len()), Some(1));
    // The session is busy with the job: another job fails at once, naming it.
    home.run(&["invoke", "-s", "s", "--as-job", "true"])
        .code_is(4)
        .clear_error("session s is busy", 1);
    wait_until(WAIT, "the first output arrives", || {
        job(&home, j["id"].as_u64().unwrap())["has_more_data"] == true
    });
    // --keep shows it and leaves it; the next receive shows it again plus what is new.
    let kept = home.run(&["job", "receive", &id, "--keep"]).success();
    assert_eq!(kept.out(), "hello\n");
    assert_eq!(kept.err(), "first-err\n");
    std::fs::write(&marker, "").unwrap();
    home.run(&["job", "wait", &id]).success();
    let all = home.run(&["job", "receive", &id]).success();
    let lines: String = (1..=200).map(|i| format!("line {i}\n")).collect();
    assert_eq!(all.out(), format!("hello\n{lines}"));
    assert_eq!(all.err(), "first-err\nlast-err\n");
    // Received without --keep: nothing again.
    let again = home.run(&["job", "receive", &id]).success();
    assert_eq!(again.out(), "");
    let done = job(&home, j["id"].as_u64().unwrap());
    assert_eq!(done["state"], "Completed", "{done}");
    assert_eq!(done["has_more_data"], false);
    assert_eq!(done["children"][0]["exit_code"], 0);
    // The table shows the SPEC's columns.
    let table = home.run(&["job", "list"]).success().out();
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["Id", "Name", "State", "HasMoreData", "Location", "Command"]
    );
    home.run(&["job", "remove", &id]).success();
    home.run(&["job", "list", &id])
        .code_is(3)
        .clear_error(&format!("job {id}"), 1);
}

#[test]
fn wait_any_timeout_stop_and_remove() {
    let home = Home::new();
    let slow = start_job(&home, &["sleep 60"]);
    let quick = start_job(&home, &["exit 3"]);
    let (slow_id, quick_id) = (id_of(&slow), id_of(&quick));
    assert_eq!(slow["location"], "localhost");
    // --any returns with the quick one; waiting for both times out.
    let any = home
        .run(&["job", "wait", &slow_id, &quick_id, "--any", "--json"])
        .success()
        .json();
    assert_eq!(any[0]["id"].to_string(), quick_id, "{any}");
    assert_eq!(any[0]["state"], "Failed", "exit 3 fails the job: {any}");
    assert_eq!(any[0]["children"][0]["exit_code"], 3);
    home.run(&["job", "wait", &slow_id, "--timeout", "1s"])
        .code_is(4)
        .clear_error("still running", 1);
    // A running job is not removed without --force.
    home.run(&["job", "remove", &slow_id])
        .code_is(4)
        .clear_error("--force", 1);
    let stopped = home
        .run(&["job", "stop", &slow_id, "--json"])
        .success()
        .json();
    assert_eq!(stopped[0]["state"], "Stopped", "{stopped}");
    home.run(&["job", "wait", &slow_id, "--timeout", "20s"])
        .success();
    home.run(&["job", "remove", &slow_id]).success();
    let forced = start_job(&home, &["sleep 60"]);
    home.run(&["job", "remove", &id_of(&forced), "--force"])
        .success();
    let left = home.run(&["job", "list", "--json"]).success().json();
    assert_eq!(left.as_array().map(|l| l.len()), Some(1), "{left}");
}

#[test]
fn a_disconnect_makes_the_child_disconnected_and_connect_resumes_it() {
    let home = Home::new();
    home.new_session("d", &[]);
    let marker = home.scratch().join("go");
    let script = format!(
        "echo before; while [ ! -e {m} ]; do sleep 0.02; done; echo after",
        m = marker.display()
    );
    let j = start_job(&home, &["-s", "d", &script]);
    let id = j["id"].as_u64().unwrap();
    wait_until(WAIT, "the job's first line", || {
        job(&home, id)["has_more_data"] == true
    });
    home.run(&["disconnect", "d"]).success();
    wait_until(WAIT, "the child is Disconnected", || {
        job(&home, id)["state"] == "Disconnected"
    });
    std::fs::write(&marker, "").unwrap();
    home.run(&["connect", "d"]).success();
    home.run(&["job", "wait", &id.to_string(), "--timeout", "20s"])
        .success();
    let out = home.run(&["job", "receive", &id.to_string()]).success();
    assert_eq!(out.out(), "before\nafter\n");
    assert_eq!(job(&home, id)["state"], "Completed");
}

#[test]
fn jobs_on_other_computers_run_through_the_link() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-test", "--name", "r"]).success();
    remote.note_session(&remote.session("r"));
    client.invoke("r", "v=far").success();
    let on_session = start_job(&client, &["-s", "r", "echo $v; echo e >&2"]);
    let temporary = start_job(
        &client,
        &["--computer", "tether-test,tether-1", "echo $((20+22))"],
    );
    for j in [&on_session, &temporary] {
        client
            .run(&["job", "wait", &id_of(j), "--timeout", "30s"])
            .success();
    }
    let out = client
        .run(&["job", "receive", &id_of(&on_session)])
        .success();
    assert_eq!(out.out(), "far\n");
    assert_eq!(out.err(), "e\n");
    let out = client
        .run(&["job", "receive", &id_of(&temporary)])
        .success();
    let text = out.out();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines, ["tether-1: 42", "tether-test: 42"]);
}

/// The session's own functions named like the commands that start a job change nothing.
#[test]
fn a_session_job_starts_whatever_functions_the_session_defines() {
    let home = Home::new();
    home.new_session("f", &[]);
    home.invoke(
        "f",
        "echo() { :; }; printf() { :; }; mkdir() { return 1; }; umask() { return 1; }; \
         unset() { :; }; eval() { :; }",
    )
    .success();
    let out = home
        .run(&[
            "job",
            "start",
            "-s",
            "f",
            "command printf 'ran\\n'; exit 3",
            "--json",
        ])
        .success()
        .json();
    let id = out[0]["id"].as_u64().unwrap().to_string();
    home.run(&["job", "wait", &id, "--timeout", "20s"])
        .success();
    let got = home.run(&["job", "receive", &id]).success();
    assert_eq!(got.out(), "ran\n", "{got}");
    let j = job(&home, id.parse().unwrap());
    assert_eq!(j["children"][0]["exit_code"], 3, "{j}");
}

#[test]
fn a_job_inside_a_session_sees_its_state_runs_beside_it_and_survives_a_disconnect() {
    let home = Home::new();
    home.new_session("s", &[]);
    home.invoke("s", "v=state; cd /tmp").success();
    let marker = home.scratch().join("go");
    let script = format!(
        "echo $v $PWD; while [ ! -e {m} ]; do sleep 0.02; done; echo done; echo e >&2; exit 4",
        m = marker.display()
    );
    let out = home
        .run(&["job", "start", "-s", "s", &script, "--json"])
        .success()
        .json();
    let id = out[0]["id"].as_u64().unwrap();
    // The session is not held by its job.
    home.invoke("s", "echo beside")
        .success()
        .stdout_is("beside\n");
    assert_eq!(home.session("s")["jobs"], 1);
    home.run(&["disconnect", "s"]).success();
    std::fs::write(&marker, "").unwrap();
    home.run(&["job", "wait", &id.to_string(), "--timeout", "20s"])
        .success();
    let got = home.run(&["job", "receive", &id.to_string()]).success();
    assert_eq!(got.out(), "state /tmp\ndone\n");
    assert_eq!(got.err(), "e\n");
    let j = job(&home, id);
    assert_eq!(j["state"], "Failed", "{j}");
    assert_eq!(j["children"][0]["exit_code"], 4);
    assert_eq!(home.session("s")["jobs"], 0);
    // Stopping one ends its processes.
    home.run(&["connect", "s"]).success();
    let out = home
        .run(&["job", "start", "-s", "s", "sleep 100", "--json"])
        .success()
        .json();
    let id = out[0]["id"].as_u64().unwrap().to_string();
    wait_until(WAIT, "the job runs", || home.session("s")["jobs"] == 1);
    let stopped = home.run(&["job", "stop", &id, "--json"]).success().json();
    assert_eq!(stopped[0]["state"], "Stopped");
    wait_until(WAIT, "the job's processes end", || {
        home.session("s")["jobs"] == 0
    });
}

#[test]
fn a_job_inside_a_session_on_another_computer() {
    let (_sshd, remote, client) = setup();
    client.run(&["new", "tether-test", "--name", "r"]).success();
    remote.note_session(&remote.session("r"));
    client.invoke("r", "w=far").success();
    let out = client
        .run(&[
            "job",
            "start",
            "-s",
            "r",
            "echo $w-$((6*7)); sleep 1",
            "--json",
        ])
        .success()
        .json();
    let id = out[0]["id"].as_u64().unwrap().to_string();
    let listed = client
        .run(&["get", "--computer", "tether-test", "--json"])
        .success()
        .json();
    assert_eq!(listed[0]["jobs"], 1, "{listed}");
    client
        .run(&["job", "wait", &id, "--timeout", "30s"])
        .success();
    let got = client.run(&["job", "receive", &id]).success();
    assert_eq!(got.out(), "far-42\n");
}

#[test]
fn receive_wait_streams_until_the_job_ends() {
    let home = Home::new();
    let j = start_job(
        &home,
        &["i=1; while [ $i -le 20 ]; do echo tick $i; i=$((i+1)); sleep 0.05; done"],
    );
    let out = home
        .run(&["job", "receive", &id_of(&j), "--wait"])
        .success();
    let want: String = (1..=20).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(out.out(), want);
    assert_eq!(job(&home, j["id"].as_u64().unwrap())["state"], "Completed");
}
