//! Jobs survive a restart of the client daemon (issue 17 point 8): after `daemon stop` or a
//! `kill -9`, the next daemon lists every job, picks up the children that were running (an
//! invocation continues its stream from the first byte not received; a job inside a session
//! reads its files again), and `job wait` / `job receive` get the rest — nothing lost, nothing
//! repeated. Local sessions, and sessions on another computer through the sshd harness.

use crate::common::sshd::setup;
use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// `invoke --as-job -s SESSION SCRIPT`; returns the job's id.
fn invocation_job(home: &Home, session: &str, script: &str) -> String {
    let out = home
        .run(&["invoke", "--as-job", "--json", "-s", session, script])
        .success()
        .json();
    out[0]["id"].as_u64().expect("a job id").to_string()
}

/// `job start -s SESSION SCRIPT`; returns the job's id.
fn session_job(home: &Home, session: &str, script: &str) -> String {
    let out = home
        .run(&["job", "start", "-s", session, "--json", script])
        .success()
        .json();
    out[0]["id"].as_u64().expect("a job id").to_string()
}

fn job(home: &Home, id: &str) -> Value {
    home.run(&["job", "list", id, "--json"]).success().json()[0].clone()
}

/// Writes its first lines, waits for `go`, writes a middle line, waits for `end`, writes 300
/// more and ends with `code`.
fn gated(tag: &str, [go, end]: [&Path; 2], code: i32) -> String {
    format!(
        "echo {tag}-before; echo {tag}-before-err >&2; \
         while [ ! -e {go} ]; do sleep 0.02; done; echo {tag}-middle; \
         while [ ! -e {end} ]; do sleep 0.02; done; \
         i=1; while [ $i -le 300 ]; do echo {tag} $i; i=$((i+1)); done; \
         echo {tag}-after-err >&2; (exit {code})",
        go = go.display(),
        end = end.display()
    )
}

fn rest(tag: &str) -> String {
    (1..=300).map(|i| format!("{tag} {i}\n")).collect()
}

/// Waits until job `id` has its first lines, then takes them with `job receive`.
fn take_the_beginning(home: &Home, id: &str, tag: &str) {
    wait_until(WAIT, "the job's first lines", || {
        let out = home.run(&["job", "receive", id, "--keep"]);
        out.out() == format!("{tag}-before\n") && out.err() == format!("{tag}-before-err\n")
    });
    let got = home.run(&["job", "receive", id]).success();
    assert_eq!(got.out(), format!("{tag}-before\n"), "{got}");
}

fn stop_daemon(home: &Home) {
    let pid = home.running_daemon_pid();
    home.run(&["daemon", "stop"]).success();
    wait_gone(pid, "the stopped daemon");
}

fn kill_daemon(home: &Home) {
    let pid = home.running_daemon_pid();
    assert!(send_signal(pid, "KILL"));
    wait_gone(pid, "the killed daemon");
}

/// Starts both jobs; takes the invocation's first lines; lets both write their middle line,
/// which the daemon has received but nobody has taken when it goes.
fn before_restart(home: &Home, [go, end]: [&Path; 2], [s, t]: [&str; 2]) -> (String, String) {
    let inv = invocation_job(home, s, &gated("inv", [go, end], 3));
    let sj = session_job(home, t, &gated("sj", [go, end], 0));
    take_the_beginning(home, &inv, "inv");
    std::fs::write(go, "").unwrap();
    wait_until(WAIT, "the middle lines", || {
        let a = home.run(&["job", "receive", &inv, "--keep"]).out();
        let b = home.run(&["job", "receive", &sj, "--keep"]).out();
        a == "inv-middle\n" && b == "sj-before\nsj-middle\n"
    });
    (inv, sj)
}

/// After the restart (`job list` starts the next daemon): both jobs are listed, end, and
/// `job receive` returns exactly what had not been taken.
fn check_after_restart(home: &Home, inv: &str, sj: &str, marker: &Path) {
    let listed = home.run(&["job", "list", "--json"]).success().json();
    let ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].to_string())
        .collect();
    assert_eq!(ids, vec![inv.to_string(), sj.to_string()], "{listed}");
    std::fs::write(marker, "").unwrap();
    home.run(&["job", "wait", "--timeout", "60s"]).success();

    let a = job(home, inv);
    assert_eq!(a["state"], "Failed", "{a}");
    assert_eq!(a["children"][0]["exit_code"], 3, "{a}");
    let got = home.run(&["job", "receive", inv]).success();
    assert_eq!(got.out(), format!("inv-middle\n{}", rest("inv")), "{got}");
    assert_eq!(got.err(), "inv-after-err\n", "{got}");

    let b = job(home, sj);
    assert_eq!(b["state"], "Completed", "{b}");
    assert_eq!(b["children"][0]["exit_code"], 0, "{b}");
    let got = home.run(&["job", "receive", sj]).success();
    assert_eq!(
        got.out(),
        format!("sj-before\nsj-middle\n{}", rest("sj")),
        "{got}"
    );
    assert_eq!(got.err(), "sj-before-err\nsj-after-err\n", "{got}");

    for id in [inv, sj] {
        let again = home.run(&["job", "receive", id]).success();
        assert_eq!((again.out(), again.err()), (String::new(), String::new()));
        assert_eq!(job(home, id)["has_more_data"], false);
    }
}

fn local_jobs_come_back(restart: fn(&Home)) {
    let home = Home::new();
    home.new_session("s", &[]);
    home.new_session("t", &[]);
    home.invoke("s", "v=kept").success();
    let (go, end) = (home.scratch().join("go"), home.scratch().join("end"));
    let (inv, sj) = before_restart(&home, [&go, &end], ["s", "t"]);
    restart(&home);
    check_after_restart(&home, &inv, &sj, &end);
    // The sessions are usable, with their state.
    home.invoke("s", "echo $v").success().stdout_is("kept\n");
    home.invoke("t", "echo ok").success().stdout_is("ok\n");
}

#[test]
fn local_jobs_come_back_after_daemon_stop() {
    local_jobs_come_back(stop_daemon);
}

#[test]
fn local_jobs_come_back_after_the_daemon_is_killed() {
    local_jobs_come_back(kill_daemon);
}

fn remote_jobs_come_back(restart: fn(&Home)) {
    let (_sshd, remote, client) = setup();
    for name in ["r", "q"] {
        client
            .run(&["new", "tether-test", "--name", name])
            .success();
        remote.note_session(&remote.session(name));
    }
    let (go, end) = (client.scratch().join("go"), client.scratch().join("end"));
    let (inv, sj) = before_restart(&client, [&go, &end], ["r", "q"]);
    restart(&client);
    check_after_restart(&client, &inv, &sj, &end);
    client.invoke("r", "echo ok").success().stdout_is("ok\n");
}

#[test]
fn jobs_on_another_computer_come_back_after_daemon_stop() {
    remote_jobs_come_back(stop_daemon);
}

#[test]
fn jobs_on_another_computer_come_back_after_the_daemon_is_killed() {
    remote_jobs_come_back(kill_daemon);
}

#[test]
fn a_temporary_sessions_child_is_reported_and_removed_jobs_stay_removed() {
    let home = Home::new();
    let marker = home.scratch().join("go");
    let temp = home
        .run(&[
            "invoke",
            "--as-job",
            "--json",
            &format!("while [ ! -e {} ]; do sleep 0.02; done", marker.display()),
        ])
        .success()
        .json()[0]["id"]
        .to_string();
    let done = home
        .run(&["invoke", "--as-job", "--json", "echo done"])
        .success()
        .json()[0]["id"]
        .to_string();
    home.run(&["job", "wait", &done]).success();
    let gone = home
        .run(&["invoke", "--as-job", "--json", "echo gone"])
        .success()
        .json()[0]["id"]
        .to_string();
    home.run(&["job", "wait", &gone]).success();
    home.run(&["job", "remove", &gone]).success();
    kill_daemon(&home);
    std::fs::write(&marker, "").unwrap();

    let listed = home.run(&["job", "list", "--json"]).success().json();
    let ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].to_string())
        .collect();
    assert_eq!(ids, vec![temp.clone(), done.clone()], "{listed}");
    let t = job(&home, &temp);
    assert_eq!(t["state"], "Failed", "{t}");
    let why = t["children"][0]["reason"].as_str().unwrap_or("");
    assert!(why.contains("temporary session"), "{t}");
    // A finished job keeps its output across the restart.
    let out = home.run(&["job", "receive", &done]).success();
    assert_eq!(out.out(), "done\n");
    // New jobs do not take the ids of written-down ones.
    let next = home
        .run(&["invoke", "--as-job", "--json", "true"])
        .success()
        .json()[0]["id"]
        .as_u64()
        .unwrap();
    assert!(next > done.parse().unwrap(), "{next}");
}

#[test]
fn written_down_jobs_are_private_and_bad_records_are_left_out() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    home.new_session("s", &[]);
    let id = invocation_job(&home, "s", "echo hi");
    home.run(&["job", "wait", &id]).success();
    let dir = home.path().join("jobs");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(&id)), 0o700);
    for f in std::fs::read_dir(dir.join(&id)).unwrap().flatten() {
        assert_eq!(mode(&f.path()), 0o600, "{:?}", f.path());
    }
    kill_daemon(&home);
    // A record that does not parse, one that names another job, one out of bounds.
    for (n, text) in [
        ("900", "{not json".to_string()),
        (
            "901",
            r#"{"id":5,"name":"J","command":"","children":[]}"#.to_string(),
        ),
        (
            "902",
            format!(
                r#"{{"id":902,"name":"{}","command":"","children":[]}}"#,
                "x".repeat(100)
            ),
        ),
    ] {
        std::fs::create_dir_all(dir.join(n)).unwrap();
        std::fs::write(dir.join(n).join("job.json"), text).unwrap();
    }
    // A huge one is not read whole.
    std::fs::create_dir_all(dir.join("903")).unwrap();
    let big = std::fs::File::create(dir.join("903").join("job.json")).unwrap();
    big.set_len(1 << 30).unwrap();
    let listed = home.run(&["job", "list", "--json"]).success().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let out = home.run(&["job", "receive", &id]).success();
    assert_eq!(out.out(), "hi\n");
    home.run(&["daemon", "status"]).success();
}
