//! Disconnected sessions (SPEC §3.11–13, issue 4, first part): `disconnect` lets a running
//! command go on and keeps its output; `receive` returns it exactly once, in order, with the
//! exit status; a client that dies leaves the session Disconnected; the quota blocks a command
//! that writes more; the idle clock runs from the disconnect; another client (another home,
//! over ssh) finds and reattaches a session.

use crate::common::sshd::setup;
use crate::common::*;
use std::time::Duration;

/// A command printing 1..=n, one line every 20 ms, then exiting 3.
fn counter(n: u32) -> String {
    format!("i=1; while [ $i -le {n} ]; do echo $i; i=$((i+1)); sleep 0.02; done; (exit 3)")
}

fn expected(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

fn state(home: &Home, name: &str) -> String {
    home.session(name)["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn disconnect_keeps_the_command_running_and_receive_returns_the_rest_exactly_once() {
    let home = Home::new();
    home.new_session("d", &[]);
    let mut first = home.spawn(&["invoke", "-s", "d", &counter(60)], "first");
    wait_until(WAIT, "the command runs", || {
        home.session("d")["availability"] == "Busy"
    });
    let out = home.run(&["disconnect", "d", "--json"]).success();
    assert_eq!(single_session(&out)["state"], "Disconnected");
    let first = first.wait(WAIT).code_is(255).clear_error("receive d", 1);
    let s = home.session("d");
    assert_eq!(s["state"], "Disconnected");
    assert_eq!(s["availability"], "None");
    assert!(s["disconnected_on"].is_string(), "{s}");
    assert!(s["expires_on"].is_string(), "{s}");
    // While disconnected, invoke refuses clearly.
    home.invoke("d", "true")
        .code_is(3)
        .clear_error("Disconnected", 1);
    let rest = home.run(&["receive", "d"]).code_is(3);
    assert_eq!(first.out() + &rest.out(), expected(60));
    // Received: attached again, state intact, nothing left to receive.
    assert_eq!(state(&home, "d"), "Opened");
    home.invoke("d", "echo $i").success().stdout_is("61\n");
    home.run(&["receive", "d"])
        .code_is(3)
        .clear_error("no output", 1);
}

#[test]
fn a_client_that_dies_leaves_the_session_disconnected_with_its_output_kept() {
    let home = Home::new();
    home.new_session("k", &[]);
    let mut cli = home.spawn(&["invoke", "-s", "k", &counter(40)], "killed");
    wait_until(WAIT, "some output arrived", || {
        std::fs::read_to_string(&cli.stdout_path).is_ok_and(|s| s.lines().count() >= 3)
    });
    assert!(send_signal(cli.pid(), "KILL"));
    let seen = cli.wait(WAIT).out();
    wait_until(WAIT, "the session is Disconnected", || {
        state(&home, "k") == "Disconnected"
    });
    let rest = home.run(&["receive", "k"]).code_is(3).out();
    // The CLI acknowledges output once it has written it, so nothing it had not printed is
    // lost. A client killed between printing and acknowledging may see the last lines again at
    // the seam (there is no atomic print-and-acknowledge): nothing else repeats.
    let seen: Vec<&str> = seen.lines().collect();
    let rest: Vec<&str> = rest.lines().collect();
    let overlap = (0..=seen.len().min(rest.len()))
        .rev()
        .find(|k| seen[seen.len() - k..] == rest[..*k])
        .unwrap_or(0);
    let joined: String = seen
        .iter()
        .chain(&rest[overlap..])
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(joined, expected(40), "overlap {overlap}");
}

#[test]
fn an_idle_session_disconnects_and_connects_with_its_state() {
    let home = Home::new();
    home.new_session("i", &[]);
    home.invoke("i", "v=kept").success();
    home.run(&["disconnect", "i"]).success();
    assert_eq!(state(&home, "i"), "Disconnected");
    home.invoke("i", "true")
        .code_is(3)
        .clear_error("tether connect i", 1);
    let out = home.run(&["connect", "i", "--json"]).success();
    assert_eq!(single_session(&out)["state"], "Opened");
    home.invoke("i", "echo $v").success().stdout_is("kept\n");
    home.run(&["connect", "nope"])
        .code_is(3)
        .clear_error("nope", 1);
}

#[test]
fn several_sessions_with_one_disconnected_still_run_on_the_others() {
    let home = Home::new();
    home.new_session("a", &[]);
    home.new_session("b", &[]);
    home.run(&["disconnect", "a"]).success();
    let out = home.run(&["invoke", "-s", "a,b", "echo hi"]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert_eq!(out.out(), "b: hi\n", "{out}");
    assert!(out.err().contains("session a"), "{out}");
}

#[test]
fn a_full_quota_blocks_the_command_until_receive_drains_it() {
    let home = Home::new().env("TETHER_OUTPUT_QUOTA", "65536");
    home.new_session("q", &[]);
    let marker = home.scratch().join("started");
    let script = format!(
        "touch {m}; sleep 0.3; head -c 3000000 /dev/zero | tr '\\0' a; echo; echo done",
        m = marker.display()
    );
    let mut cli = home.spawn(&["invoke", "-s", "q", &script], "writer");
    wait_until(WAIT, "the command started", || marker.exists());
    home.run(&["disconnect", "q"]).success();
    cli.wait(WAIT);
    // Far more than the quota is written: the writer must end up blocked on its pipe, not
    // finished and not buffered whole.
    let shell = host_shell_members(&home, "q");
    wait_until(WAIT, "the writer blocks on a full pipe", || {
        shell().iter().any(|p| wchan(*p).contains("pipe_write"))
    });
    let out = home.run(&["receive", "q"]).success();
    let text = out.out();
    assert_eq!(text.len(), 3_000_000 + 1 + 5, "{} bytes", text.len());
    assert!(text.starts_with("aaa") && text.ends_with("\ndone\n"));
}

/// The processes of a session's shell (its process session), as a closure to poll.
fn host_shell_members(home: &Home, name: &str) -> impl Fn() -> Vec<u32> {
    let host = host_pid(&home.session(name));
    move || {
        let shell: Vec<u32> = children_of(host);
        let Some(sid) = shell.first().copied() else {
            return Vec::new();
        };
        session_of(sid)
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn session_of(sid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if stat_field(pid, 6).and_then(|s| s.parse::<u32>().ok()) == Some(sid) {
            v.push(pid);
        }
    }
    v
}

fn wchan(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

#[test]
fn the_idle_clock_runs_from_the_disconnect_even_while_a_command_runs() {
    let home = Home::with_min_idle().env("TETHER_OUTPUT_MEMORY", "4096");
    let iid = home.new_session("t", &["--idle-timeout", "3s"])["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let marker = home.scratch().join("go");
    let script = format!(
        "while [ ! -e {m} ]; do sleep 0.02; done; seq 1 30000; sleep 60",
        m = marker.display()
    );
    let mut cli = home.spawn(&["invoke", "-s", "t", &script], "long");
    wait_until(WAIT, "the command runs", || {
        home.session("t")["availability"] == "Busy"
    });
    home.run(&["disconnect", "t"]).success();
    cli.wait(WAIT);
    std::fs::write(&marker, "").unwrap();
    // ExpiresOn is the disconnect plus the idle timeout, running command or not.
    let s = home.session("t");
    let (from, to) = (
        timestamp(&s["disconnected_on"]),
        timestamp(&s["expires_on"]),
    );
    assert!((2..=4).contains(&(to - from)), "{s}");
    let spool = home.path().join("hosts").join(&iid).join("spool");
    wait_until(WAIT, "the output is spooled", || spool.exists());
    wait_until(Duration::from_secs(30), "the session closes", || {
        state(&home, "t") == "Closed"
    });
    wait_until(WAIT, "the spool is freed", || !spool.exists());
    let s = home.session("t");
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or("")
            .contains("while disconnected"),
        "{s}"
    );
}

#[test]
fn another_client_finds_reattaches_and_receives_a_remote_session() {
    let (sshd, remote, first) = setup();
    first.run(&["new", "tether-test", "--name", "r"]).success();
    remote.note_session(&remote.session("r"));
    first.invoke("r", "w=there").success();
    let mut cli = first.spawn(&["invoke", "-s", "r", &counter(50)], "remote");
    wait_until(WAIT, "the command runs", || {
        remote.session("r")["availability"] == "Busy"
    });
    first.run(&["disconnect", "r"]).success();
    let part1 = cli.wait(WAIT).code_is(255).out();
    // The first client goes away entirely.
    first.run(&["daemon", "stop"]).success();

    let second = sshd.client_for(&remote);
    let listed = second
        .run(&["get", "--computer", "tether-test", "--json"])
        .success()
        .json();
    assert_eq!(listed[0]["name"], "r", "{listed}");
    assert_eq!(listed[0]["state"], "Disconnected", "{listed}");
    let out = second
        .run(&[
            "connect",
            "--computer",
            "tether-test",
            "--name",
            "r",
            "--json",
        ])
        .success();
    assert_eq!(single_session(&out)["state"], "Opened");
    let part2 = second.run(&["receive", "r"]).code_is(3).out();
    assert_eq!(part1 + &part2, expected(50));
    second.invoke("r", "echo $w").success().stdout_is("there\n");
}

#[test]
fn drop_mode_keeps_the_newest_output_and_says_how_much_was_dropped() {
    let home = Home::new();
    home.new_session("dm", &["--output-mode", "drop", "--output-quota", "64K"]);
    let marker = home.scratch().join("go");
    let done = home.scratch().join("done");
    // Waits to be detached, then writes ~600 KB of numbered lines and exits 0.
    let script = format!(
        "while [ ! -e {m} ]; do sleep 0.02; done; seq 1 100000; echo end; touch {d}",
        m = marker.display(),
        d = done.display()
    );
    let mut cli = home.spawn(&["invoke", "-s", "dm", &script], "dropper");
    wait_until(WAIT, "the command runs", || {
        home.session("dm")["availability"] == "Busy"
    });
    home.run(&["disconnect", "dm"]).success();
    cli.wait(WAIT);
    std::fs::write(&marker, "").unwrap();
    // The command is never paused in drop mode: it finishes on its own.
    wait_until(WAIT, "the command finishes", || done.exists());
    let out = home.run(&["receive", "dm"]).success();
    let text = out.out();
    assert!(text.len() <= 64 * 1024 + 16, "kept {} bytes", text.len());
    assert!(
        text.ends_with("99999\n100000\nend\n"),
        "tail: {:?}",
        &text[text.len() - 30..]
    );
    assert!(out.err().contains("bytes of output were dropped"), "{out}");
}

/// Seconds since the epoch of an RFC 3339 UTC time stamp in a session object.
fn timestamp(v: &serde_json::Value) -> i64 {
    let t = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time stamp: {v}"));
    let num = |r: std::ops::Range<usize>| -> i64 {
        t.get(r)
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("bad time {t}"))
    };
    // Days matter only across midnight of the same month, which a test never spans twice.
    num(8..10) * 86400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19)
}

#[test]
fn kept_output_past_its_memory_share_is_spooled_privately_and_received_exactly() {
    let home = Home::new().env("TETHER_OUTPUT_MEMORY", "65536");
    let iid = home.new_session("sp", &[])["instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (marker, done) = (home.scratch().join("go"), home.scratch().join("done"));
    let script = format!(
        "while [ ! -e {m} ]; do sleep 0.02; done; seq 1 300000; seq 1 1000 >&2; touch {d}",
        m = marker.display(),
        d = done.display()
    );
    let mut cli = home.spawn(&["invoke", "-s", "sp", &script], "spooler");
    wait_until(WAIT, "the command runs", || {
        home.session("sp")["availability"] == "Busy"
    });
    home.run(&["disconnect", "sp"]).success();
    cli.wait(WAIT);
    std::fs::write(&marker, "").unwrap();
    wait_until(WAIT, "the command finishes", || done.exists());
    let spool = home.path().join("hosts").join(&iid).join("spool");
    let meta = std::fs::metadata(&spool).expect("a spool file while output is kept");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(meta.len() > 1_000_000, "spooled only {} bytes", meta.len());
    let out = home.run(&["receive", "sp"]).success();
    let want: String = (1..=300000).map(|i| format!("{i}\n")).collect();
    assert!(
        out.out() == want,
        "stdout differs ({} bytes)",
        out.out().len()
    );
    assert_eq!(out.err(), expected(1000));
    assert!(!spool.exists(), "spool file left after receive");
}

#[test]
fn a_remote_session_in_drop_mode_keeps_the_newest_output_for_another_client() {
    let (sshd, remote, first) = setup();
    first
        .run(&[
            "new",
            "tether-test",
            "--name",
            "rd",
            "--output-mode",
            "drop",
            "--output-quota",
            "64K",
        ])
        .success();
    remote.note_session(&remote.session("rd"));
    let (marker, done) = (remote.scratch().join("go"), remote.scratch().join("done"));
    let script = format!(
        "while [ ! -e {m} ]; do sleep 0.02; done; seq 1 100000; echo end; touch {d}",
        m = marker.display(),
        d = done.display()
    );
    let mut cli = first.spawn(&["invoke", "-s", "rd", &script], "remote dropper");
    wait_until(WAIT, "the command runs", || {
        first.session("rd")["availability"] == "Busy"
    });
    first.run(&["disconnect", "rd"]).success();
    cli.wait(WAIT);
    std::fs::write(&marker, "").unwrap();
    wait_until(WAIT, "the command finishes", || done.exists());
    let second = sshd.client_for(&remote);
    second
        .run(&["connect", "--computer", "tether-test", "--name", "rd"])
        .success();
    let out = second.run(&["receive", "rd"]).success();
    let text = out.out();
    assert!(text.len() <= 64 * 1024 + 16, "kept {} bytes", text.len());
    assert!(
        text.ends_with("99999\n100000\nend\n"),
        "{}",
        &text[text.len().saturating_sub(30)..]
    );
    assert!(out.err().contains("bytes of output were dropped"), "{out}");
}
