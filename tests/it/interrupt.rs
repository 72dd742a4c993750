//! `Aside`: Ctrl-C (or an acknowledgement) for a far command, sent by a client daemon beside
//! the invocation's own connection (where a `Cancel` can wait behind stdin the command never
//! reads). Spoken here as a hostile client daemon would, straight at `tether bridge`: it must
//! touch only the command running now, only for the client that holds the session, and a
//! session word that is a path gets nowhere.

use crate::common::mux::{self, Conn, block_on};
use crate::common::*;
use tether_proto::{Aside, ErrorKind, InvokeSpec, NewSession, Request, Response};

/// Starts `script` in session `session` on a connection of its own; the connection, the far
/// session's instance id and the invocation's number.
async fn started(bridge: &mux::Bridge, session: &str, script: &str) -> (Conn, String, u64) {
    let mut conn = bridge.connect().await;
    conn.send(&Request::Invoke(InvokeSpec {
        session: session.into(),
        script: script.into(),
        ..Default::default()
    }))
    .await;
    match conn.recv().await {
        Some(Response::Started {
            session,
            invocation,
            ..
        }) => (conn, session, invocation),
        other => panic!("{script}: {other:?}; bridge stderr: {}", bridge.stderr()),
    }
}

/// What `conn`'s invocation printed and its exit status.
async fn ended(conn: &mut Conn) -> (String, i32) {
    let mut out = Vec::new();
    loop {
        match conn.recv().await {
            Some(Response::Output { data, .. }) => out.extend_from_slice(&data),
            Some(Response::Exit(e)) => return (String::from_utf8_lossy(&out).into(), e.code),
            Some(Response::Notice(_)) => {}
            other => panic!("the invocation did not exit: {other:?}"),
        }
    }
}

fn interrupt(session: &str, invocation: u64) -> Request {
    Request::Aside {
        session: session.into(),
        invocation,
        what: Aside::Cancel,
    }
}

#[track_caller]
fn refused(reply: Response, kind: ErrorKind, what: &str) {
    match reply {
        Response::Error(e) => assert_eq!(e.kind, kind, "{what}: {e:?}"),
        other => panic!("{what}: not refused: {other:?}"),
    }
}

#[test]
fn an_interrupt_stops_only_the_running_command_of_the_sessions_holder() {
    let remote = Home::new();
    let mut cmd = remote.command();
    cmd.arg("bridge");
    let stderr = remote.scratch().join("bridge.stderr");
    let marker = remote.scratch().join("ran-on");
    let script = format!("sleep 30; echo ran-on > '{}'", marker.display());
    block_on(async {
        let bridge = mux::Bridge::start(cmd, stderr).await;
        let mut control = bridge.connect().await;
        let reply = control
            .request(&Request::New(NewSession {
                name: Some("i".into()),
                ..Default::default()
            }))
            .await;
        assert!(matches!(reply, Response::Sessions(_)), "{reply:?}");
        let (mut first, iid, n) = started(&bridge, "i", "echo first").await;
        assert_eq!(ended(&mut first).await, ("first\n".into(), 0));

        let (mut running, iid2, m) = started(&bridge, "i", &script).await;
        assert_eq!(iid, iid2);
        assert_ne!(n, m);
        // A late Ctrl-C, for the command before, never stops this one.
        let late = control.request(&interrupt(&iid, n)).await;
        refused(late, ErrorKind::NotFound, "the previous invocation");
        // Another client daemon cannot stop a command of a session it does not hold.
        let mut stranger = bridge.connect_as("another-client-0002").await;
        let theirs = stranger.request(&interrupt(&iid, m)).await;
        refused(theirs, ErrorKind::Busy, "another client");
        let ack = Request::Aside {
            session: iid.clone(),
            invocation: m,
            what: Aside::Ack(1 << 40),
        };
        let theirs = stranger.request(&ack).await;
        refused(theirs, ErrorKind::Busy, "another client's acknowledgement");
        // A path never names a session; nor does a session that is not there.
        let path = control.request(&interrupt("../../0/hosts/x", m)).await;
        refused(path, ErrorKind::Usage, "a path");
        let none = control.request(&interrupt("nosuch", m)).await;
        refused(none, ErrorKind::NotFound, "no such session");

        // The holder's, for the command running now: it stops, although its own connection
        // has said nothing.
        let ok = control.request(&interrupt(&iid, m)).await;
        assert_eq!(ok, Response::Ok);
        let (_, code) = ended(&mut running).await;
        assert_eq!(code, 130, "stopped as by Ctrl-C");
        assert!(!marker.exists(), "the command ran on");

        // The session takes the next command.
        let (mut next, _, _) = started(&bridge, "i", "echo usable").await;
        assert_eq!(ended(&mut next).await, ("usable\n".into(), 0));
    });
    assert!(!marker.exists(), "the command ran on");
}
