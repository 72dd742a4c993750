//! Hostile clients against lending (host protocols 8 and 9, tests/it/lend.rs). While one CLI
//! splices a command's stdout or stdin, or before it does, a second client of the same user (a
//! CLI naming the session by name or by Id, `receive`, raw `Lend`/`LendStdin` frames straight
//! at the host or on a connection the daemon handed over) and a second Unix user get no
//! descriptor and take or add no byte: the first client's output, and the command's input,
//! arrive whole and in order, and the session goes on.
//!
//! The second-user tests need root: they create accounts and act as them
//! (tests/it/common/system.rs).

use crate::common::system::{
    Conn, Reply, System, User, decode_responses, frames, mode, owner, pair, python_as, raw_as,
    unique,
};
use crate::common::*;
use crate::lend::{
    Piped, holds_stdin_fifo, lines, paused_reader, two_parts, wait_child, with_input,
};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tether_proto::host::HOST_PROTOCOL_VERSION;
use tether_proto::{ErrorKind, PROTOCOL_VERSION, Request, Response, SessionList};

/// A local session's FIFO directory and its host's socket (`TETHER_HOME/hosts/…`).
fn host_paths(home: &Home, session: &str) -> (PathBuf, PathBuf) {
    let s = home.session(session);
    let iid = s["instance_id"].as_str().expect("an instance id");
    let hosts = home.path().join("hosts");
    let sock = hosts.join(format!("{iid}.sock"));
    assert!(sock.exists(), "no host socket at {}", sock.display());
    (hosts.join(iid), sock)
}

/// The running invocation's number: the newest stdin FIFO `i.<n>` in `dir` (its client's
/// stdin is a pipe, so it has one).
fn running_invocation(dir: &Path) -> u64 {
    let mut found = None;
    wait_until(WAIT, "the command's stdin FIFO", || {
        found = std::fs::read_dir(dir).ok().and_then(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("i.")?.parse().ok())
                .max()
        });
        found.is_some()
    });
    found.unwrap()
}

/// The FIFOs in a session's FIFO directory (stdout, stderr, stdin, status).
fn fifos_in(dir: &Path) -> Vec<PathBuf> {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_fifo()))
        .map(|e| e.path())
        .collect()
}

/// What one connection of ours got back: the replies, and whether a descriptor came with any
/// of them (read through recvmsg, as the client reads a lent FIFO).
#[derive(Debug)]
struct Answer {
    frames: Vec<Response>,
    fd: bool,
}

/// `Hello` (of `version`), then `reqs`, on a new connection to `socket` as this process (the
/// sessions' own user); reads until `want` replies came, the connection ended, or 20 s passed
/// (an answer that never comes would fail the test, not hang it).
fn ask_raw(socket: &Path, version: u32, reqs: &[Request], want: usize) -> Answer {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let hello = Request::Hello {
        version,
        agent: "lend-hostile".into(),
        client: None,
    };
    let all: Vec<Request> = std::iter::once(hello).chain(reqs.iter().cloned()).collect();
    stream.write_all(&frames(&all)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut got, mut fd) = (Vec::new(), false);
    while Instant::now() < deadline && decode_responses(&got).0.len() < want {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        let n = match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), flags) {
            Ok(msg) => {
                for c in msg.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(v) = c {
                        // SAFETY: the kernel just made these descriptors ours; they close here.
                        v.into_iter()
                            .for_each(|f| drop(unsafe { OwnedFd::from_raw_fd(f) }));
                        fd = true;
                    }
                }
                msg.bytes
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(_) => 0,
        };
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Answer {
        frames: decode_responses(&got).0,
        fd,
    }
}

/// `answer` is a refusal: no descriptor, no `Ok` (the frame a descriptor travels with), no
/// `Lent`, and an `Error` last.
#[track_caller]
fn refused(what: &str, answer: &Answer) {
    assert!(
        !answer.fd,
        "{what}: a descriptor was handed over: {answer:?}"
    );
    let granted = |r: &Response| matches!(r, Response::Ok | Response::Lent);
    assert!(
        !answer.frames.iter().any(granted),
        "{what}: granted: {answer:?}"
    );
    assert!(
        matches!(answer.frames.last(), Some(Response::Error(_))),
        "{what}: no error last: {answer:?}"
    );
}

fn receive(word: &str) -> Request {
    Request::Receive(SessionList {
        sessions: vec![word.into()],
        ..Default::default()
    })
}

/// Every way a second client of the same user may ask for invocation `id`'s FIFOs: straight
/// at the host, and on connections the daemon hands to the host for a `receive` (by name and
/// by Id: the session is Id 1), and of the daemon itself. Each is refused.
fn borrowing_is_refused(home: &Home, session: &str, sock: &Path, id: u64) {
    let lend = Request::Lend { invocation: id };
    let lend_in = Request::LendStdin {
        invocation: id,
        after: 0,
    };
    let (h, daemon) = (HOST_PROTOCOL_VERSION, home.socket());
    let one = std::slice::from_ref;
    refused("Lend at the host", &ask_raw(sock, h, one(&lend), 2));
    refused("LendStdin at the host", &ask_raw(sock, h, one(&lend_in), 2));
    let by_name = [receive(session), lend.clone()];
    refused(
        "Lend after a receive by name",
        &ask_raw(&daemon, PROTOCOL_VERSION, &by_name, 3),
    );
    let by_id = [receive("1"), lend_in];
    refused(
        "LendStdin after a receive by Id",
        &ask_raw(&daemon, PROTOCOL_VERSION, &by_id, 3),
    );
    refused(
        "Lend at the daemon",
        &ask_raw(&daemon, PROTOCOL_VERSION, one(&lend), 2),
    );
}

#[test]
fn a_second_client_while_spliced_waits_or_is_refused_and_takes_no_byte() {
    let home = Home::new();
    assert_eq!(home.new_session("lent", &[])["id"], 1);
    let (dir, sock) = host_paths(&home, "lent");
    let flag = home.scratch().join("go");
    // Its stdin a pipe of ours that stays open: the command has a stdin FIFO too.
    let script = two_parts(300_000, 600_000, &flag);
    let mut p = Piped::start_with(&home, "lent", &script, Stdio::piped());
    wait_until(Duration::from_secs(60), "the first part", || {
        p.has("line 300000\n")
    });
    wait_until(Duration::from_secs(10), "the splicing thread", || {
        p.splicing()
    });
    let id = running_invocation(&dir);
    // A second invoke that waits runs once the first is done, and only then.
    let after = format!("test -e {} && echo second", flag.display());
    let mut queued = home.spawn(
        &["invoke", "-s", "1", "--wait-timeout", "60s", &after],
        "queued",
    );
    for (word, filter) in [("lent", "--name"), ("1", "--id")] {
        let s = single_session(&home.run(&["get", filter, word, "--json"]).success());
        assert_eq!(
            (s["state"].as_str(), s["availability"].as_str()),
            (Some("Opened"), Some("Busy")),
            "{s}"
        );
        let busy = ["invoke", "-s", word, "--wait-timeout", "0", "echo intruder"];
        home.run(&busy).code_is(4).clear_error("busy", 1);
        let got = home.run(&["receive", word]).failure();
        assert!(got.out().is_empty(), "receive took output: {got}");
    }
    borrowing_is_refused(&home, "lent", &sock, id);
    // While it is lent, a request for it is answered at once, saying why.
    let lend = Request::Lend { invocation: id };
    let again = ask_raw(&sock, HOST_PROTOCOL_VERSION, &[lend], 2);
    refused("Lend while lent", &again);
    let said = format!("{:?}", again.frames.last());
    assert!(said.contains("lent to its client already"), "{said}");
    assert!(p.splicing(), "the first client stopped splicing");
    assert!(!queued.finished(), "the queued invoke did not wait");
    drop(p.child.stdin.take());
    std::fs::write(&flag, "").unwrap();
    let (status, out) = p.finish();
    assert_eq!(status, Some(0));
    assert!(
        out == lines(1, 600_000),
        "the first client's output differs ({} bytes)",
        out.len()
    );
    let second = queued.wait(Duration::from_secs(60)).success();
    assert_eq!(second.out(), "second\n", "{second}");
    home.invoke("lent", "echo next")
        .success()
        .stdout_is("next\n");
}

#[test]
fn a_second_client_cannot_borrow_the_fifos_before_their_client_does() {
    let home = Home::new();
    assert_eq!(home.new_session("early", &[])["id"], 1);
    let (dir, sock) = host_paths(&home, "early");
    let flag = home.scratch().join("go");
    // Far below a megabyte: the CLI never asks, so nothing is lent when the others ask.
    let script = two_parts(1_000, 3_000, &flag);
    let mut p = Piped::start_with(&home, "early", &script, Stdio::piped());
    wait_until(Duration::from_secs(30), "the first part", || {
        p.has("line 1000\n")
    });
    let id = running_invocation(&dir);
    borrowing_is_refused(&home, "early", &sock, id);
    // Frames of a running invocation, on a connection that is not its own, change nothing.
    let stray = [
        Request::Returned,
        Request::Abandon,
        Request::Cancel,
        Request::StdinEof,
    ];
    let answer = ask_raw(&sock, HOST_PROTOCOL_VERSION, &stray, 1);
    assert!(!answer.fd, "{answer:?}");
    drop(p.child.stdin.take());
    std::fs::write(&flag, "").unwrap();
    let (status, out) = p.finish();
    assert_eq!(status, Some(0), "the command was stopped");
    assert!(
        out == lines(1, 3_000),
        "the first client's output differs ({} bytes)",
        out.len()
    );
}

#[test]
fn a_second_client_cannot_write_into_a_spliced_stdin() {
    let home = Home::new();
    home.new_session("in", &[]);
    let (dir, sock) = host_paths(&home, "in");
    let out = home.scratch().join("got.bin");
    let (script, wait, go) = paused_reader(&home, &out);
    let input = crate::common::rng::Rng(0x1e4d_0b0b).bytes(8 << 20);
    let mut child = with_input(&home, "in", &script, input.clone());
    wait_until(Duration::from_secs(60), "the first 2 MiB read", || {
        wait.exists()
    });
    wait_until(
        Duration::from_secs(10),
        "the CLI to hold the stdin FIFO",
        || holds_stdin_fifo(child.id()),
    );
    let id = running_invocation(&dir);
    let evil = b"INJECTED BY A SECOND CLIENT\n".to_vec();
    let lend_in = |after| Request::LendStdin {
        invocation: id,
        after,
    };
    for after in [0, 1 << 20] {
        let answer = ask_raw(&sock, HOST_PROTOCOL_VERSION, &[lend_in(after)], 2);
        refused("LendStdin at the host", &answer);
    }
    // Stdin frames on a connection of their own, or on one the daemon handed over, go
    // nowhere.
    let stray = [Request::Stdin(evil.clone()), Request::StdinEof];
    assert!(!ask_raw(&sock, HOST_PROTOCOL_VERSION, &stray, 1).fd);
    let handed = [receive("in"), Request::Stdin(evil.clone()), lend_in(0)];
    refused(
        "LendStdin after stdin on a handed connection",
        &ask_raw(&home.socket(), PROTOCOL_VERSION, &handed, 3),
    );
    for word in ["in", "1"] {
        let busy = ["invoke", "-s", word, "--wait-timeout", "0", "cat"];
        home.run_stdin(&busy, &evil)
            .code_is(4)
            .clear_error("busy", 1);
    }
    assert!(holds_stdin_fifo(child.id()), "the first client let go");
    std::fs::write(&go, "").unwrap();
    assert_eq!(wait_child(&mut child, Duration::from_secs(60)), Some(0));
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == input,
        "the command's stdin differs: {} of {} bytes",
        got.len(),
        input.len()
    );
}

/// Python run as `user` opening each of `paths` for reading and for writing (non-blocking,
/// so that a FIFO never waits); one line per attempt: the path and `opened` or the errno name.
fn opens_as(user: &User, paths: &[PathBuf]) -> Vec<String> {
    const OPENS: &str = r#"
import errno, os, sys
for p in sys.argv[1:]:
    for how in (os.O_RDONLY, os.O_WRONLY):
        try:
            os.close(os.open(p, how | os.O_NONBLOCK))
            print(p, 'opened')
        except OSError as e:
            print(p, errno.errorcode.get(e.errno, str(e.errno)))
"#;
    let args: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
    let out = run_command(python_as(user, OPENS, &args), None, CMD_TIMEOUT).success();
    let lines: Vec<String> = out.out().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2 * paths.len(), "{out}");
    lines
}

#[track_caller]
fn none_opened(user: &User, paths: &[PathBuf]) {
    for line in opens_as(user, paths) {
        assert!(
            line.ends_with(" EACCES"),
            "{} could open a FIFO of another user's session: {line}",
            user.name
        );
    }
}

/// `Hello` (of `version`) and `reqs`, as the bytes of one raw connection.
fn asking(version: u32, reqs: &[Request]) -> Conn {
    let hello = Request::Hello {
        version,
        agent: "lend-hostile".into(),
        client: None,
    };
    Conn::once(frames(&[&[hello], reqs].concat()))
}

/// One raw connection per `Lend` and `LendStdin` of each invocation in `ids`.
fn lending(version: u32, ids: std::ops::RangeInclusive<u64>) -> Vec<Conn> {
    ids.flat_map(|id| {
        let lend_in = Request::LendStdin {
            invocation: id,
            after: 0,
        };
        let lend = Request::Lend { invocation: id };
        [asking(version, &[lend]), asking(version, &[lend_in])]
    })
    .collect()
}

/// No reply granted anything (an `Ok` carries the descriptor; a raw reader drops it).
#[track_caller]
fn nothing_granted(replies: &[Reply]) {
    for r in replies {
        assert!(
            !r.frames().iter().any(|f| matches!(f, Response::Ok)),
            "granted: {r:?}"
        );
    }
}

#[test]
fn another_user_cannot_borrow_from_my_session_or_open_its_fifos() {
    let sys = System::new(&[]);
    let bob = sys.user("lb", &[]);
    let home = Home::new();
    home.new_session("mine", &[]);
    let (dir, sock) = host_paths(&home, "mine");
    let flag = home.scratch().join("go");
    let script = two_parts(300_000, 500_000, &flag);
    let mut p = Piped::start_with(&home, "mine", &script, Stdio::piped());
    wait_until(Duration::from_secs(60), "the first part", || {
        p.has("line 300000\n")
    });
    wait_until(Duration::from_secs(10), "the splicing thread", || {
        p.splicing()
    });
    let id = running_invocation(&dir);
    let (at_host, at_daemon) = (
        lending(HOST_PROTOCOL_VERSION, id..=id),
        lending(PROTOCOL_VERSION, id..=id),
    );
    let quiet = Duration::from_secs(2);
    // Nothing of my home is within reach: the sockets and FIFOs lie in private directories.
    for (socket, conns) in [(&sock, &at_host), (&home.socket(), &at_daemon)] {
        for r in raw_as(&bob, socket, conns, quiet, 2) {
            assert!(matches!(&r, Reply::Refused(e) if e == "EACCES"), "{r:?}");
        }
    }
    assert_eq!((mode(&dir), owner(&dir)), (0o700, my_uid()), "{dir:?}");
    let fifos = fifos_in(&dir);
    let name = |f: &PathBuf| f.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        fifos.iter().any(|f| name(f) == format!("i.{id}")),
        "{fifos:?}"
    );
    assert!(fifos.iter().any(|f| name(f).starts_with("o.")), "{fifos:?}");
    for f in &fifos {
        assert_eq!(mode(f) & 0o077, 0, "{} is open to others", f.display());
    }
    none_opened(&bob, &fifos);

    // Even with the way to them opened, the host and the daemon answer nobody but me, and the
    // FIFO directory keeps bob out on its own.
    let opened: Vec<(PathBuf, u32)> = [
        (home.path().parent().unwrap().to_path_buf(), 0o711),
        (home.path().to_path_buf(), 0o711),
        (home.path().join("hosts"), 0o711),
        (sock.clone(), 0o666),
        (home.socket(), 0o666),
    ]
    .into_iter()
    .map(|(path, to)| {
        let was = mode(&path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(to)).unwrap();
        (path, was)
    })
    .collect();
    let at_host = raw_as(&bob, &sock, &at_host, quiet, 2);
    let at_daemon = raw_as(&bob, &home.socket(), &at_daemon, quiet, 2);
    none_opened(&bob, &fifos);
    for (path, was) in opened.iter().rev() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*was)).unwrap();
    }
    nothing_granted(&at_host);
    for r in &at_host {
        assert!(
            matches!(r, Reply::Got { frames, .. } if frames.is_empty()),
            "the host answered another user: {r:?}"
        );
    }
    for r in &at_daemon {
        assert!(
            matches!(r.frames(), [Response::Error(e)] if e.kind == ErrorKind::Permission),
            "the daemon did not refuse another user: {r:?}"
        );
    }
    assert!(p.splicing(), "the owner's CLI stopped splicing");
    drop(p.child.stdin.take());
    std::fs::write(&flag, "").unwrap();
    let (status, out) = p.finish();
    assert_eq!(status, Some(0));
    assert!(
        out == lines(1, 500_000),
        "the owner's output differs ({} bytes)",
        out.len()
    );
}

#[test]
fn in_system_mode_another_user_gets_nothing_of_a_running_command() {
    let p = pair(&[]);
    let flag = p.sys.shared_dir(&unique("flag")).join("go");
    let script = two_parts(300_000, 400_000, &flag);
    let mut run = p
        .sys
        .spawn_as_user(&p.alice, &["invoke", "-s", "vault", "--", &script], "alice");
    let so_far = run.stdout_path.clone();
    wait_until(Duration::from_secs(60), "alice's first part", || {
        std::fs::read(&so_far).is_ok_and(|b| b.ends_with(b"line 300000\n"))
    });
    let hosts = p.sys.area(&p.alice).join("hosts");
    let (dir, sock) = (hosts.join(&p.iid), hosts.join(format!("{}.sock", p.iid)));
    // Root's directory, passable so that alice's shell reaches its FIFOs by path; the FIFOs
    // are hers alone.
    assert_eq!((mode(&dir), owner(&dir)), (0o711, 0), "{dir:?}");
    let fifos = fifos_in(&dir);
    assert!(
        fifos
            .iter()
            .any(|f| f.file_name().unwrap().to_string_lossy().starts_with("o.")),
        "{fifos:?}"
    );
    for f in &fifos {
        assert_eq!((mode(f), owner(f)), (0o600, p.alice.uid), "{f:?}");
    }
    none_opened(&p.bob, &fifos);
    // Alice's second invocation is her command (the first set x); bob tries around it, at
    // her host and at the daemon, and after a `receive` of her session's name.
    let conns = lending(HOST_PROTOCOL_VERSION, 1..=3);
    for r in raw_as(&p.bob, &sock, &conns, Duration::from_secs(2), 6) {
        assert!(matches!(&r, Reply::Refused(e) if e == "EACCES"), "{r:?}");
    }
    let mut at_daemon = lending(PROTOCOL_VERSION, 1..=3);
    let handed = [receive("vault"), Request::Lend { invocation: 2 }];
    at_daemon.push(asking(PROTOCOL_VERSION, &handed));
    let replies = raw_as(
        &p.bob,
        &p.sys.socket(),
        &at_daemon,
        Duration::from_secs(2),
        4,
    );
    nothing_granted(&replies);
    for r in &replies {
        assert!(
            matches!(r.frames().last(), Some(Response::Error(_))),
            "the system daemon did not refuse bob: {r:?}"
        );
    }
    std::fs::write(&flag, "").unwrap();
    let done = run.wait(Duration::from_secs(60)).success();
    assert!(
        done.out() == lines(1, 400_000),
        "alice's output differs ({} bytes)",
        done.out().len()
    );
    p.assert_whole();
}
