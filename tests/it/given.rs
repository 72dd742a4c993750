//! A CLI gives its stdin to the client daemon (`Request::GiveStdin`): once a megabyte of a
//! pipe went to a command on another computer in frames, the pipe itself goes to the relay,
//! which reads it straight onto the link. What a user must not notice: every byte arrives once
//! and in order; a CLI killed after giving still ends its command's input; a command that stops
//! reading ends the pipe for its writer, as it would locally. What a hostile process must not
//! do: give a stdin of its own to a relay that is not its CLI's (the daemon checks the process
//! at the other end, not the token).

use crate::common::sshd::{far_session, setup};
use crate::common::system::decode_responses;
use crate::common::*;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;
use tether_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response};

pub(crate) const MIB: usize = 1 << 20;
pub(crate) const LONG: Duration = Duration::from_secs(90);

/// `n` bytes that are not all alike, so a byte lost, doubled or moved shows.
pub(crate) fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 4093) % 251) as u8).collect()
}

/// The kernel's name of the pipe behind `fd` (`pipe:[N]`).
fn pipe_name(fd: &impl AsRawFd) -> String {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    let name = link.to_string_lossy().into_owned();
    assert!(name.starts_with("pipe:"), "{name}");
    name
}

/// Whether process `pid` holds the pipe named `name`.
fn holds(pid: u32, name: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    rd.flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == name))
}

/// A CLI running `script` in the remote session `name`, its stdin a pipe we write.
fn feeding(client: &Home, name: &str, script: &str) -> (Child, ChildStdin) {
    let mut cli = client.command();
    cli.args(["invoke", "-s", name, script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cli = cli.spawn().unwrap();
    let input = cli.stdin.take().unwrap();
    (cli, input)
}

/// Waits for `cli` to exit within [`LONG`]; its stdout.
pub(crate) fn finished(mut cli: Child) -> (std::process::ExitStatus, String) {
    let mut status = None;
    wait_until(LONG, "the CLI to exit", || {
        status = cli.try_wait().unwrap();
        status.is_some()
    });
    let mut out = String::new();
    if let Some(mut stdout) = cli.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    }
    (status.unwrap(), out)
}

#[test]
fn a_big_stdin_is_read_by_the_daemon_and_arrives_whole_and_in_order() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "in", &[]);
    let got = client.scratch().join("in.bin");
    let script = format!("cat > '{}'", got.display());
    let (cli, mut input) = feeding(&client, "in", &script);
    let name = pipe_name(&input);
    let all = data(6 * MIB);
    input.write_all(&all[..2 * MIB]).unwrap();
    // Past the first megabyte the CLI gives the pipe to its daemon, which reads it from then on.
    let daemon = client.running_daemon_pid();
    wait_until(LONG, "the daemon to hold the CLI's stdin", || {
        holds(daemon, &name)
    });
    input.write_all(&all[2 * MIB..]).unwrap();
    drop(input);
    let (status, _) = finished(cli);
    assert!(status.success(), "{status:?}");
    let written = std::fs::read(&got).unwrap();
    assert_eq!(written.len(), all.len());
    assert!(written == all, "the far file differs from what was sent");
    wait_until(WAIT, "the daemon to let the pipe go", || {
        !holds(daemon, &name)
    });
    client
        .invoke("in", "echo usable")
        .success()
        .stdout_is("usable\n");
}

/// SIGKILL to a CLI whose stdin the daemon reads: the daemon stops reading it, and the command
/// reads the end of its input (what came before is whole), so the session takes the next
/// command.
#[test]
fn a_cli_killed_after_giving_its_stdin_ends_its_commands_input() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "k", &[]);
    let got = client.scratch().join("k.bin");
    let done = client.scratch().join("k.done");
    let script = format!(
        "cat > '{}'; echo ended > '{}'",
        got.display(),
        done.display()
    );
    let (cli, mut input) = feeding(&client, "k", &script);
    let name = pipe_name(&input);
    let all = data(2 * MIB);
    input.write_all(&all).unwrap();
    let daemon = client.running_daemon_pid();
    wait_until(LONG, "the daemon to hold the CLI's stdin", || {
        holds(daemon, &name)
    });
    assert!(send_signal(cli.id(), "KILL"));
    // Our write end stays open: only the CLI's death can end the far stdin.
    wait_until(LONG, "the far command to end", || done.exists());
    wait_until(WAIT, "the daemon to let the pipe go", || {
        !holds(daemon, &name)
    });
    let written = std::fs::read(&got).unwrap();
    assert!(
        written.len() <= all.len() && written[..] == all[..written.len()],
        "the far file is not a prefix of what was sent ({} bytes)",
        written.len()
    );
    // Nobody reads the pipe any more: a writer learns it.
    let more = input.write_all(&all);
    assert!(more.is_err(), "a pipe with no reader took more bytes");
    client
        .invoke("k", "echo usable")
        .success()
        .stdout_is("usable\n");
}

/// A far command that stops reading (`head`) ends the pipe for the process writing it, as it
/// would on this computer: nothing waits for input no one will read.
#[test]
fn a_command_that_stops_reading_ends_the_given_pipe_for_its_writer() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "h", &[]);
    let (cli, mut input) = feeding(&client, "h", "head -c 1500000 | wc -c");
    let writer = std::thread::spawn(move || {
        let chunk = data(MIB);
        // Bounded: 64 MiB at most; it should fail long before.
        for _ in 0..64 {
            if input.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    let (status, out) = finished(cli);
    assert!(status.success(), "{status:?}");
    assert_eq!(out.trim(), "1500000");
    let mut ended = false;
    wait_until(LONG, "the writer to see the pipe closed", || {
        ended = writer.is_finished();
        ended
    });
    assert!(
        writer.join().unwrap(),
        "the writer never saw the pipe closed"
    );
    client
        .invoke("h", "echo usable")
        .success()
        .stdout_is("usable\n");
}

/// A second process of the same user offers a pipe of its own to every token a relay could
/// have: each offer is refused alike, the daemon keeps none of them, and the command reads
/// only its own CLI's input.
#[test]
fn another_process_cannot_give_a_relay_its_stdin() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "g", &[]);
    let got = client.scratch().join("g.txt");
    let script = format!("cat > '{}'", got.display());
    let (cli, mut input) = feeding(&client, "g", &script);
    input.write_all(b"mine\n").unwrap();
    input.flush().unwrap();
    wait_until(LONG, "the far command to get a line", || {
        std::fs::read_to_string(&got).unwrap_or_default() == "mine\n"
    });
    let agent = format!("tether-client/{}", env!("CARGO_PKG_VERSION"));
    let offers: Vec<String> = (0..24u64)
        .map(|token| {
            let reqs = [
                Request::Hello {
                    version: PROTOCOL_VERSION,
                    agent: agent.clone(),
                    client: None,
                },
                Request::GiveStdin { token },
            ];
            let bytes: Vec<u8> = reqs
                .iter()
                .flat_map(|r| tether_proto::encode(r).unwrap())
                .collect();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect();
    // python3 sends each offer with a pipe of its own attached (SCM_RIGHTS), as a CLI would.
    const OFFER: &str = r#"
import os, socket, sys
r, w = os.pipe()
os.write(w, b'EVIL\n' * 100)
for hexed in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.settimeout(20)
    socket.send_fds(s, [bytes.fromhex(hexed)], [r])
    s.shutdown(socket.SHUT_WR)
    got = b''
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    print(got.hex())
    s.close()
"#;
    let mut py = std::process::Command::new("python3");
    py.args(["-c", OFFER, client.socket().to_str().unwrap()])
        .args(&offers);
    let out = run_command(py, None, LONG).success();
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), offers.len(), "{out}");
    for (token, line) in lines.iter().enumerate() {
        let bytes: Vec<u8> = (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect();
        let (replies, _) = decode_responses(&bytes);
        match replies.as_slice() {
            [Response::Hello { .. }, Response::Error(e)] => {
                assert_eq!(e.kind, ErrorKind::Permission, "token {token}: {e:?}");
            }
            other => panic!("token {token}: {other:?}"),
        }
    }
    input.write_all(b"more\n").unwrap();
    drop(input);
    let (status, _) = finished(cli);
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "mine\nmore\n");
}

/// The ssh process under a given stdin is killed twice while a producer goes on writing: the
/// relay resends from the far command's count as ever, so the command reads every byte once
/// and in order.
#[test]
fn a_given_stdin_goes_on_across_killed_transports_without_loss() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "r", &[]);
    let (mut cli, mut input) = feeding(&client, "r", "cat; exit 7");
    client.note_pid(cli.id());
    let name = pipe_name(&input);
    let line = |i: u32| format!("line {i}\n");
    // Past a megabyte at once, then one line every 5 ms across both outages.
    let (fast, slow) = (120_000u32, 400u32);
    let expected: String = (1..=fast + slow).map(line).collect();
    let writer = std::thread::spawn(move || {
        let first: String = (1..=fast).map(line).collect();
        if input.write_all(first.as_bytes()).is_err() {
            return false;
        }
        for i in fast + 1..=fast + slow {
            if input.write_all(line(i).as_bytes()).is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    });
    let echoed = Gathered::start(cli.stdout.take().unwrap());
    let lines = || echoed.lines() as u32;
    let daemon = client.running_daemon_pid();
    wait_until(LONG, "the daemon to hold the CLI's stdin", || {
        holds(daemon, &name)
    });
    for at in [fast + 50, fast + 200] {
        wait_until(LONG, "stdin to echo back", || lines() >= at);
        let st = client.run(&["daemon", "status", "--json"]).success().json();
        let ssh = st["links"][0]["pid"].as_u64().expect("a link") as u32;
        assert!(send_signal(ssh, "KILL"));
        wait_gone(ssh, "the killed ssh");
    }
    assert!(writer.join().unwrap(), "tether stopped reading its stdin");
    let (status, _) = finished(cli);
    let n_lines = lines();
    let got = String::from_utf8_lossy(&echoed.finish()).to_string();
    assert!(
        got == expected,
        "stdin lost or repeated: {n_lines} lines of {}",
        fast + slow
    );
    assert_eq!(status.code(), Some(7), "cat saw the end of its input");
}

/// A command that echoes a big input (`cat`) fills both directions at once. Neither the far
/// host nor the relay may wait for the command to read its input while it waits for its
/// output to be read: 16 MiB from a file (sent in frames, never given) come back whole, from
/// a remote session and from a local one (whose first megabyte goes in frames too).
#[test]
fn an_echoing_command_streams_a_big_input_both_ways() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "e", &[]);
    client.run(&["new", "--name", "here"]).success();
    let all = data(16 * MIB);
    let src = client.scratch().join("src.bin");
    std::fs::write(&src, &all).unwrap();
    for session in ["e", "here"] {
        echo_through(&client, session, &src, &all);
    }
}

fn echo_through(client: &Home, session: &str, src: &std::path::Path, all: &[u8]) {
    let mut cli = client.command();
    cli.args(["invoke", "-s", session, "cat"])
        .stdin(std::fs::File::open(src).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cli = cli.spawn().unwrap();
    client.note_pid(cli.id());
    let mut stdout = cli.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut got).unwrap();
        got
    });
    let (status, _) = finished(cli);
    assert!(status.success(), "session {session}: {status:?}");
    let got = reader.join().unwrap();
    assert_eq!(got.len(), all.len(), "session {session}");
    assert!(
        got == all,
        "session {session}: the echo differs from the input"
    );
}

/// Writes 1 MiB chunks into `input` (256 MiB at most) on a thread, counting what went in;
/// the thread returns whether a write failed (the pipe or socket closed for it).
pub(crate) fn pouring(
    mut input: impl Write + Send + 'static,
) -> (
    std::thread::JoinHandle<bool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = written.clone();
    let writer = std::thread::spawn(move || {
        let chunk = data(MIB);
        for _ in 0..256 {
            if input.write_all(&chunk).is_err() {
                return true;
            }
            count.fetch_add(MIB, std::sync::atomic::Ordering::SeqCst);
        }
        false
    });
    (writer, written)
}

/// Waits until more than 4 MiB went in and nothing more has for a second: every buffer
/// between the writer and the far command (which reads none of it) is full.
pub(crate) fn stalled(written: &std::sync::atomic::AtomicUsize) {
    stalled_past(written, 4 * MIB)
}

/// As [`stalled`], past `least` bytes.
pub(crate) fn stalled_past(written: &std::sync::atomic::AtomicUsize, least: usize) {
    let (mut last, mut same) = (0, 0);
    wait_until(LONG, "the command's input to fill up", || {
        std::thread::sleep(Duration::from_millis(200));
        let now = written.load(std::sync::atomic::Ordering::SeqCst);
        (last, same) = if now == last {
            (now, same + 1)
        } else {
            (now, 0)
        };
        now >= least && same >= 5
    });
}

/// A command that reads no stdin and would write a marker after a minute, started in a new
/// remote session `name` whose stdin we pour into until every buffer on the way is full; the
/// CLI, the pouring thread and the marker's path.
fn stuck(
    client: &Home,
    remote: &Home,
    name: &str,
) -> (Child, std::thread::JoinHandle<bool>, std::path::PathBuf) {
    far_session(client, remote, name, &[]);
    let never = client.scratch().join(format!("{name}.never"));
    let script = format!("sleep 60; echo never > '{}'", never.display());
    let (cli, input) = feeding(client, name, &script);
    let (writer, written) = pouring(input);
    stalled(&written);
    (cli, writer, never)
}

/// The CLI has gone: its stdin's writer sees the pipe closed, the session takes the next
/// command, and the stuck one never finished.
pub(crate) fn stopped(
    client: &Home,
    name: &str,
    writer: std::thread::JoinHandle<bool>,
    never: &std::path::Path,
) {
    wait_until(LONG, "the writer to see the pipe closed", || {
        writer.is_finished()
    });
    assert!(
        writer.join().unwrap(),
        "the writer never saw the pipe closed"
    );
    // Were the command left running, this would wait for it, and it would finish first.
    client
        .invoke(name, "echo usable")
        .success()
        .stdout_is("usable\n");
    assert!(!never.exists(), "the command ran on");
}

/// Ctrl-C reaches a far command that reads no stdin while the link's window, the far host's
/// queue and every pipe between are full of it: before, the `Cancel` waited behind that
/// stdin, which the command would never read, so Ctrl-C did nothing.
#[test]
fn ctrl_c_reaches_a_far_command_whose_stdin_is_full() {
    let (_sshd, remote, client) = setup();
    let (cli, writer, never) = stuck(&client, &remote, "cc");
    assert!(send_signal(cli.id(), "INT"), "SIGINT to the CLI");
    let (status, _) = finished(cli);
    assert_eq!(status.code(), Some(130), "{status:?}");
    stopped(&client, "cc", writer, &never);
}

/// A CLI told to end (SIGTERM) while its far command's stdin is full leaves, and the command
/// is stopped as when its output is closed.
#[test]
fn a_cli_told_to_end_stops_a_far_command_whose_stdin_is_full() {
    let (_sshd, remote, client) = setup();
    let (cli, writer, never) = stuck(&client, &remote, "t");
    assert!(send_signal(cli.id(), "TERM"), "SIGTERM to the CLI");
    let (status, _) = finished(cli);
    assert!(!status.success(), "{status:?}");
    stopped(&client, "t", writer, &never);
}

/// A far command that writes more than its session's output quota and reads none of a big
/// stdin: its output is acknowledged as the CLI delivers it, and the host keeps only what is
/// not (the quota). The acknowledgements used to travel only behind the stdin, which the
/// command never reads, so the host stopped at the quota and everything hung.
#[test]
fn output_goes_on_past_the_quota_while_the_command_reads_no_stdin() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "a", &["--output-quota", "4M"]);
    let (mut cli, input) = feeding(&client, "a", "sleep 2; head -c 67108864 /dev/zero");
    let mut out = cli.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let (writer, _) = pouring(input);
    let (status, _) = finished(cli);
    assert!(status.success(), "{status:?}");
    assert_eq!(reader.join().unwrap().unwrap(), 64 * MIB as u64);
    wait_until(LONG, "the writer to see the pipe closed", || {
        writer.is_finished()
    });
    assert!(
        writer.join().unwrap(),
        "the writer never saw the pipe closed"
    );
}

/// Stdin from a file is given too, once a megabyte of it went in frames: a command that reads
/// none of it still hears Ctrl-C (the CLI no longer writes frames that a `Cancel` would wait
/// behind), and one that reads it gets every byte, in order.
#[test]
fn a_file_on_stdin_is_given_too() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "f", &[]);
    let src = client.scratch().join("f.in");
    let all = data(24 * MIB);
    std::fs::write(&src, &all).unwrap();
    let never = client.scratch().join("f.never");
    let mut cli = client.command();
    cli.args(["invoke", "-s", "f"])
        .arg(format!("sleep 60; echo never > '{}'", never.display()))
        .stdin(std::fs::File::open(&src).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cli = cli.spawn().unwrap();
    let daemon = client.running_daemon_pid();
    let name = src.display().to_string();
    wait_until(LONG, "the daemon to hold the CLI's stdin file", || {
        holds(daemon, &name)
    });
    assert!(send_signal(cli.id(), "INT"), "SIGINT to the CLI");
    let (status, _) = finished(cli);
    assert_eq!(status.code(), Some(130), "{status:?}");
    let got = client.scratch().join("f.out");
    let mut cat = client.command();
    cat.args(["invoke", "-s", "f"])
        .arg(format!("cat > '{}'", got.display()))
        .stdin(std::fs::File::open(&src).unwrap());
    let status = cat.status().unwrap();
    assert!(status.success(), "{status:?}");
    let written = std::fs::read(&got).unwrap();
    assert_eq!(written.len(), all.len());
    assert!(written == all, "the far file differs from what was sent");
    assert!(!never.exists(), "the command ran on past Ctrl-C");
}
