//! Scale and memory (issue 2 point 7-8): many sequential invocations, 200 idle sessions, and
//! hundreds of megabytes through stdout and stdin with bounded memory in every process.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::*;

/// Memory bound for every tether process while large data streams through.
const MAX_HWM_KB: u64 = 100 * 1024;
const BIG: u64 = 300 * 1024 * 1024;

#[test]
fn hundred_sequential_invocations_return_exactly_their_own_output_and_status() {
    let home = Home::new();
    home.new_session("seq", &[]);
    for i in 0..100 {
        let n = i.to_string();
        let out = home.invoke_args(
            "seq",
            "echo \"$1\"; echo \"e$1\" >&2; (exit $(($1 % 7)))",
            &[&n],
        );
        assert_eq!(out.code(), Some(i % 7), "invocation {i}:\n{out}");
        assert_eq!(out.out(), format!("{i}\n"), "invocation {i}:\n{out}");
        assert_eq!(out.err(), format!("e{i}\n"), "invocation {i}:\n{out}");
    }
    assert_eq!(home.state_of("seq").as_deref(), Some("Opened"));
}

#[test]
fn two_hundred_idle_sessions_can_be_open_at_once() {
    let home = Home::new();
    home.run(&["daemon", "start"]).success();
    // Four clients create 50 sessions each, concurrently.
    let created: Vec<serde_json::Value> = thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let home = &home;
                s.spawn(move || {
                    (0..50)
                        .map(|i| home.new_session(&format!("idle-{t}-{i}"), &[]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut ids: Vec<u64> = created.iter().map(|s| s["id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(
        ids,
        (1..=200).collect::<Vec<u64>>(),
        "ids 1..=200, each once"
    );

    let listed = home.sessions();
    assert_eq!(listed.len(), 200);
    assert!(
        listed.iter().all(|s| s["state"] == "Opened"),
        "all 200 sessions are Opened"
    );
    let pids: HashSet<u32> = listed.iter().map(host_pid).collect();
    assert_eq!(pids.len(), 200, "each session is its own process");
    assert!(pids.iter().all(|&p| pid_alive(p)));

    home.invoke("idle-0-0", "echo first")
        .success()
        .stdout_is("first\n");
    home.invoke("idle-3-49", "echo last")
        .success()
        .stdout_is("last\n");
    let daemon = home.running_daemon_pid();
    let rss = proc_status_kb(daemon, "VmHWM").unwrap();
    assert!(rss < MAX_HWM_KB, "daemon VmHWM {rss} kB with 200 sessions");
}

/// Peak memory of the daemon and of a session host, in kB, asserted under the bound.
#[track_caller]
fn assert_bounded(home: &Home, host: u32, cli_peak: u64) {
    let daemon = home.running_daemon_pid();
    let d = proc_status_kb(daemon, "VmHWM").expect("daemon VmHWM");
    let h = proc_status_kb(host, "VmHWM").expect("host VmHWM");
    eprintln!("peak RSS: daemon {d} kB, session host {h} kB, tether invoke {cli_peak} kB");
    assert!(d < MAX_HWM_KB, "daemon peak RSS {d} kB");
    assert!(h < MAX_HWM_KB, "session host peak RSS {h} kB");
    assert!(
        cli_peak < MAX_HWM_KB,
        "tether invoke peak RSS {cli_peak} kB"
    );
}

#[test]
fn large_output_streams_through_with_bounded_memory() {
    let home = Home::new();
    let s = home.new_session("big", &[]);
    let pidfile = home.scratch().join("head.pid");
    let mut c = home.command();
    c.args([
        "invoke",
        "-s",
        "big",
        "--arg",
        pidfile.to_str().unwrap(),
        "--",
    ])
    .arg(pid_then_exec(1, "head -c 300M /dev/zero"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let cli = child.id();
    let _watchdog = Watchdog::new(cli, Duration::from_secs(150));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    let mut nonzero = false;
    let mut cli_peak = 0;

    // Read a little, then stop reading: a slow consumer must pause the producer, not fill memory.
    while total < 1 << 20 {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "output ended early after {total} bytes");
        nonzero |= buf[..n].iter().any(|&b| b != 0);
        total += n as u64;
    }
    let head = wait_pid_file(&pidfile);
    let mut last = (wchar(head), 0);
    wait_until(WAIT, "the producer is paused or finished", || {
        let now = wchar(head);
        last.1 = if now == last.0 { last.1 + 1 } else { 0 };
        last.0 = now;
        now.is_none() || last.1 >= 5
    });
    eprintln!(
        "after reading {total} bytes and pausing: producer wrote {:?} bytes",
        last.0
    );
    cli_peak = cli_peak.max(proc_status_kb(cli, "VmHWM").unwrap_or(0));
    assert_bounded(&home, host_pid(&s), cli_peak);

    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        nonzero |= buf[..n].iter().any(|&b| b != 0);
        total += n as u64;
        if total % (16 << 20) < n as u64 {
            cli_peak = cli_peak.max(proc_status_kb(cli, "VmHWM").unwrap_or(0));
        }
    }
    let status = child.wait().unwrap();
    let err = err_reader.join().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        String::from_utf8_lossy(&err)
    );
    assert_eq!(total, BIG, "byte count");
    assert!(!nonzero, "only zero bytes were sent");
    assert!(err.is_empty(), "stderr: {}", String::from_utf8_lossy(&err));
    assert_bounded(&home, host_pid(&s), cli_peak);
    home.invoke("big", "echo after")
        .success()
        .stdout_is("after\n");
}

#[test]
fn large_stdin_streams_through_with_bounded_memory() {
    let home = Home::new();
    let s = home.new_session("bigin", &[]);
    let mut c = home.command();
    c.args(["invoke", "-s", "bigin", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let cli = child.id();
    let _watchdog = Watchdog::new(cli, Duration::from_secs(150));
    let peak = Arc::new(AtomicU64::new(0));
    let mut stdin = child.stdin.take().unwrap();
    let p = peak.clone();
    let writer = thread::spawn(move || {
        let chunk = vec![0u8; 1 << 20];
        for i in 0..(BIG >> 20) {
            if stdin.write_all(&chunk).is_err() {
                return i << 20;
            }
            if i % 16 == 0 {
                p.fetch_max(proc_status_kb(cli, "VmHWM").unwrap_or(0), Ordering::SeqCst);
            }
        }
        BIG
    });
    let out = {
        let mut v = String::new();
        child.stdout.take().unwrap().read_to_string(&mut v).unwrap();
        v
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let written = writer.join().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(written, BIG, "all of stdin was accepted");
    assert!(status.success(), "{status}: {err}");
    assert_eq!(out.trim(), BIG.to_string(), "wc -c saw every byte");
    assert_bounded(&home, host_pid(&s), peak.load(Ordering::SeqCst));
}
