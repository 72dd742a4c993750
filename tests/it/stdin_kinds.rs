//! A stdin that is neither a pipe nor a file (a socket, as a supervisor or `socat` gives; a
//! device such as `/dev/zero`) is lent to a local command's FIFO and given to a relay as
//! pipes and files are. Before, the CLI wrote it in frames itself, and a command that read
//! none of it never heard Ctrl-C: the `Cancel` waited behind those frames, and the CLI, stuck
//! handing it over, did not even leave on the third Ctrl-C. What must hold: Ctrl-C works, and
//! a command that reads its stdin gets every byte, in order.

use crate::common::sshd::{far_session, setup};
use crate::common::*;
use crate::given::{MIB, data, finished, pouring, stalled_past, stopped};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Stdio;

/// Starts `script` in `session` with its stdin a socket whose other end is returned.
fn on_socket(home: &Home, session: &str, script: &str) -> (std::process::Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut cli = home.command();
    cli.args(["invoke", "-s", session, script])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (cli.spawn().unwrap(), ours)
}

/// Ctrl-C reaches a command that reads none of a socket on its stdin, once every buffer on
/// the way is full; the session takes the next command.
fn ctrl_c_with_a_full_socket(home: &Home, session: &str) {
    let never = home.scratch().join(format!("{session}.never"));
    let script = format!("sleep 60; echo never > '{}'", never.display());
    let (cli, input) = on_socket(home, session, &script);
    let (writer, written) = pouring(input);
    // Locally less gets in: the host's queue and the FIFO, not a link's window.
    stalled_past(&written, MIB);
    assert!(send_signal(cli.id(), "INT"), "SIGINT to the CLI");
    let (status, _) = finished(cli);
    assert_eq!(status.code(), Some(130), "{status:?}");
    stopped(home, session, writer, &never);
}

/// Every byte of a socket on stdin arrives, in order.
fn a_socket_arrives_whole(home: &Home, session: &str) {
    let got = home.scratch().join(format!("{session}.got"));
    let (cli, mut input) = on_socket(home, session, &format!("cat > '{}'", got.display()));
    let all = data(6 * MIB);
    let sent = all.clone();
    let writer = std::thread::spawn(move || {
        input.write_all(&sent).unwrap();
        input.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (status, _) = finished(cli);
    writer.join().unwrap();
    assert!(status.success(), "{status:?}");
    let written = std::fs::read(&got).unwrap();
    assert_eq!(written.len(), all.len());
    assert!(
        written == all,
        "session {session}: the file differs from what was sent"
    );
}

#[test]
fn a_socket_on_stdin_in_a_local_session() {
    let home = Home::new();
    home.new_session("ls", &[]);
    a_socket_arrives_whole(&home, "ls");
    ctrl_c_with_a_full_socket(&home, "ls");
}

#[test]
fn a_socket_on_stdin_in_a_remote_session() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "rs", &[]);
    a_socket_arrives_whole(&client, "rs");
    ctrl_c_with_a_full_socket(&client, "rs");
}

/// A device on stdin: `/dev/zero` to a command that takes a few megabytes of it and ends,
/// locally (where the kernel may not splice from it, and it is copied) and far away.
#[test]
fn a_device_on_stdin_is_read_as_far_as_the_command_wants() {
    let (_sshd, remote, client) = setup();
    far_session(&client, &remote, "dv", &[]);
    client.new_session("dl", &[]);
    for session in ["dl", "dv"] {
        let mut cli = client.command();
        cli.args(["invoke", "-s", session, "head -c 5000000 | wc -c"])
            .stdin(std::fs::File::open("/dev/zero").unwrap())
            .stdout(Stdio::piped());
        let cli = cli.spawn().unwrap();
        let (status, out) = finished(cli);
        assert!(status.success(), "{session}: {status:?}");
        assert_eq!(out.trim(), "5000000", "{session}");
    }
}
