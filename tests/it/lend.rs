//! A local CLI whose stdout is a pipe borrows the command's stdout FIFO from the host once
//! more than 1 MiB came in frames, and splices it into its stdout (host protocol 8, issue 20).
//! Every byte must still arrive exactly once and in order, however the CLI ends: killed,
//! disconnected, its pipe closed, or Ctrl-C. Each test checks that the splicing thread ran,
//! so that the lent path, not the framed one, is what passed.

use crate::common::*;
use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lines `line 1` … `line N`, as `seq` would number them.
pub(crate) fn lines(from: u64, to: u64) -> String {
    (from..=to).map(|i| format!("line {i}\n")).collect()
}

/// A script printing lines 1..=`first` at once, then waiting for `flag`, then the rest
/// up to `last`.
pub(crate) fn two_parts(first: u64, last: u64, flag: &std::path::Path) -> String {
    format!(
        "seq -f 'line %.0f' 1 {first}; while [ ! -e {f} ]; do sleep 0.02; done; \
         seq -f 'line %.0f' {next} {last}",
        f = flag.display(),
        next = first + 1
    )
}

/// `tether invoke -s S SCRIPT` with stdout on a pipe read by a thread of ours.
pub(crate) struct Piped {
    pub(crate) child: Child,
    got: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Piped {
    pub(crate) fn start(home: &Home, session: &str, script: &str) -> Piped {
        Piped::start_with(home, session, script, Stdio::null())
    }

    /// As [`Piped::start`], with `stdin` as the CLI's stdin (a pipe stays in `child.stdin`).
    pub(crate) fn start_with(home: &Home, session: &str, script: &str, stdin: Stdio) -> Piped {
        let mut c = home.command();
        c.args(["invoke", "-s", session, script])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn tether invoke");
        home.note_pid(child.id());
        let mut out = child.stdout.take().expect("stdout pipe");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Piped {
            child,
            got,
            reader: Some(reader),
        }
    }

    /// Starts `two_parts(300_000, last)` in `session` and waits until its first part arrived
    /// and the CLI splices.
    pub(crate) fn spliced(home: &Home, session: &str, last: u64, flag: &std::path::Path) -> Piped {
        let p = Piped::start(home, session, &two_parts(300_000, last, flag));
        wait_until(Duration::from_secs(60), "the first part", || {
            p.has("line 300000\n")
        });
        wait_until(Duration::from_secs(10), "the splicing thread", || {
            p.splicing()
        });
        p
    }

    pub(crate) fn has(&self, tail: &str) -> bool {
        let got = self.got.lock().unwrap();
        got.ends_with(tail.as_bytes())
    }

    /// Whether the CLI runs its splicing thread now.
    pub(crate) fn splicing(&self) -> bool {
        let dir = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "tether-splice")
            })
        })
    }

    /// Waits for the CLI to exit and for its stdout to end; returns its status and output.
    pub(crate) fn finish(mut self) -> (Option<i32>, String) {
        let status = wait_child(&mut self.child, Duration::from_secs(60));
        if let Some(r) = self.reader.take() {
            r.join().expect("reader thread");
        }
        let got = std::mem::take(&mut *self.got.lock().unwrap());
        (status, String::from_utf8(got).expect("utf-8 output"))
    }
}

/// `receive` in `session` gets exactly what followed `before`: lines up to `last`, once each.
fn the_rest_is_received(home: &Home, session: &str, before: &str, last: u64) {
    let rest = home.run(&["receive", session]).success();
    let whole = format!("{before}{}", rest.out());
    assert!(
        whole == lines(1, last),
        "lost or repeated: {} bytes before, {} received",
        before.len(),
        rest.out().len()
    );
}

pub(crate) fn wait_child(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tether invoke did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_large_output_is_spliced_whole_and_in_order_beside_stderr() {
    let home = Home::new();
    home.new_session("big", &[]);
    let flag = home.scratch().join("go");
    // stderr keeps coming in frames while stdout is lent.
    let script = format!(
        "{}; echo done >&2; seq -f 'err %.0f' 1 1000 >&2",
        two_parts(300_000, 600_000, &flag)
    );
    let p = Piped::start(&home, "big", &script);
    wait_until(Duration::from_secs(60), "the first part", || {
        p.has("line 300000\n")
    });
    wait_until(Duration::from_secs(10), "the splicing thread", || {
        p.splicing()
    });
    std::fs::write(&flag, "").unwrap();
    let (status, out) = p.finish();
    assert_eq!(status, Some(0));
    assert!(
        out == lines(1, 600_000),
        "stdout differs ({} bytes)",
        out.len()
    );
    // The next command of the session runs as ever, its small output in frames.
    home.invoke("big", "echo next")
        .success()
        .stdout_is("next\n");
}

#[test]
fn a_killed_cli_leaves_the_rest_for_receive_with_nothing_lost_or_repeated() {
    let home = Home::new();
    home.new_session("k", &[]);
    let flag = home.scratch().join("go");
    let p = Piped::spliced(&home, "k", 500_000, &flag);
    assert!(send_signal(p.child.id(), "KILL"));
    let (_, before) = p.finish();
    std::fs::write(&flag, "").unwrap();
    the_rest_is_received(&home, "k", &before, 500_000);
}

#[test]
fn a_disconnect_while_spliced_keeps_the_rest_for_receive() {
    let home = Home::new();
    home.new_session("d", &[]);
    let flag = home.scratch().join("go");
    let p = Piped::spliced(&home, "d", 500_000, &flag);
    home.run(&["disconnect", "d"]).success();
    let (status, before) = p.finish();
    assert_eq!(
        status,
        Some(255),
        "a disconnected invoke exits 255 (SPEC: lost)"
    );
    std::fs::write(&flag, "").unwrap();
    the_rest_is_received(&home, "d", &before, 500_000);
}

#[test]
fn ctrl_c_while_spliced_stops_the_command_and_the_session_goes_on() {
    let home = Home::new();
    home.new_session("c", &[]);
    let flag = home.scratch().join("never");
    let p = Piped::spliced(&home, "c", 400_000, &flag);
    assert!(send_signal(p.child.id(), "INT"));
    let (status, out) = p.finish();
    assert_eq!(status, Some(130));
    assert!(out == lines(1, 300_000), "{} bytes", out.len());
    home.invoke("c", "echo after")
        .success()
        .stdout_is("after\n");
}

#[test]
fn a_closed_pipe_while_spliced_ends_at_once_and_stops_the_command() {
    let home = Home::new();
    home.new_session("h", &[]);
    // `yes` outruns the framed first MiB at once; `head` then closes the lent pipe.
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg("\"$TETHER\" invoke -s h 'yes lend-head-marker' | head -c 8000000 | wc -c")
        .env("TETHER", tether_bin())
        .env("TETHER_HOME", home.path());
    let out = run_command(c, None, Duration::from_secs(60));
    assert_eq!(out.out().trim(), "8000000", "{out}");
    wait_until(Duration::from_secs(15), "yes to stop", || {
        !std::fs::read_dir("/proc").is_ok_and(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .any(|pid| {
                    cmdline(pid).contains("lend-head-marker") && !cmdline(pid).contains("invoke")
                })
        })
    });
    home.invoke("h", "echo fine").success().stdout_is("fine\n");
}

/// The CLI holds a write end of the command's stdin FIFO (`…/i.<n>`): its stdin is spliced.
pub(crate) fn holds_stdin_fifo(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| {
                l.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("i.") && n[2..].parse::<u64>().is_ok())
            })
        })
    })
}

/// Starts `invoke -s S SCRIPT` with `input` written to its stdin (a pipe) by a thread.
pub(crate) fn with_input(home: &Home, session: &str, script: &str, input: Vec<u8>) -> Child {
    use std::io::Write;
    let mut c = home.command();
    c.args(["invoke", "-s", session, script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn tether invoke");
    home.note_pid(child.id());
    let mut pipe = child.stdin.take().expect("stdin pipe");
    std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    child
}

/// The command reads 2 MiB, then stops reading until `go` exists, then reads the rest.
pub(crate) fn paused_reader(
    home: &Home,
    out: &std::path::Path,
) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let (wait, go) = (home.scratch().join("W"), home.scratch().join("G"));
    let script = format!(
        "{{ dd bs=65536 count=32 iflag=fullblock status=none; touch {w}; \
         while [ ! -e {g} ]; do sleep 0.02; done; cat; }} > {o}",
        w = wait.display(),
        g = go.display(),
        o = out.display()
    );
    (script, wait, go)
}

#[test]
fn a_large_stdin_is_spliced_into_the_command_whole_and_in_order() {
    let home = Home::new();
    home.new_session("in", &[]);
    let out = home.scratch().join("got.bin");
    let (script, wait, go) = paused_reader(&home, &out);
    let input = crate::common::rng::Rng(0x5eed_1e4d).bytes(8 << 20);
    let mut child = with_input(&home, "in", &script, input.clone());
    wait_until(Duration::from_secs(60), "the first 2 MiB read", || {
        wait.exists()
    });
    wait_until(
        Duration::from_secs(10),
        "the CLI to hold the stdin FIFO",
        || holds_stdin_fifo(child.id()),
    );
    std::fs::write(&go, "").unwrap();
    assert_eq!(wait_child(&mut child, Duration::from_secs(60)), Some(0));
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == input,
        "stdin differs: {} of {} bytes",
        got.len(),
        input.len()
    );
}

#[test]
fn a_cli_killed_while_its_stdin_is_spliced_ends_the_commands_input() {
    let home = Home::new();
    home.new_session("ik", &[]);
    let out = home.scratch().join("got.bin");
    let (script, wait, go) = paused_reader(&home, &out);
    let mut child = with_input(&home, "ik", &script, vec![b'x'; 8 << 20]);
    wait_until(Duration::from_secs(60), "the first 2 MiB read", || {
        wait.exists()
    });
    wait_until(
        Duration::from_secs(10),
        "the CLI to hold the stdin FIFO",
        || holds_stdin_fifo(child.id()),
    );
    assert!(send_signal(child.id(), "KILL"));
    let _ = child.wait();
    std::fs::write(&go, "").unwrap();
    // Our pipe into the dead CLI stays open; only the CLI's end can end the command's input.
    let next = home
        .run(&["invoke", "-s", "ik", "--wait-timeout", "30s", "echo next"])
        .success();
    assert_eq!(next.out(), "next\n", "{next}");
    let got = std::fs::read(&out).unwrap();
    assert!(
        got.len() >= 2 << 20 && got.iter().all(|b| *b == b'x'),
        "{} bytes",
        got.len()
    );
}
