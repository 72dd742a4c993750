//! `tether bridge` over a real sshd: a client speaks the protocol through `ssh … tether bridge`,
//! creates a session on the target, runs commands in it (the second one on the connection the
//! target's daemon handed to the session host), and the target's daemon outlives the ssh
//! connection.

mod common;
use common::sshd::Sshd;
use common::*;
use tether_proto::{InvokeSpec, NewSession, PROTOCOL_VERSION, Request, Response, Stream};
use tether_transport::{FrameReader, FrameWriter};

async fn invoke_over<R, W>(
    r: &mut FrameReader<R>,
    w: &mut FrameWriter<W>,
    script: &str,
) -> (Vec<u8>, i32)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let spec = InvokeSpec {
        session: "remote1".into(),
        script: script.into(),
        ..Default::default()
    };
    w.send(&Request::Invoke(spec)).await.unwrap();
    let mut out = Vec::new();
    loop {
        match r.read::<Response>().await.unwrap() {
            Some(Response::Started { .. }) => {}
            Some(Response::Output {
                stream: Stream::Stdout,
                data,
            }) => out.extend(data),
            Some(Response::Output { .. }) => {}
            Some(Response::Exit(e)) => return (out, e.code),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_client_reaches_the_target_daemon_through_ssh_and_the_daemon_outlives_it() {
    let sshd = Sshd::start();
    let remote = Home::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut child = tokio::process::Command::new("ssh")
            .arg("-F")
            .arg(sshd.config())
            .args(["-T", "tether-test", "env"])
            .arg(format!("TETHER_HOME={}", remote.path().display()))
            .arg(tether_bin())
            .arg("bridge")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ssh");
        let mut w = FrameWriter::new(child.stdin.take().unwrap());
        let mut r = FrameReader::new(child.stdout.take().unwrap());
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            agent: "test".into(),
        };
        w.send(&hello).await.unwrap();
        assert!(matches!(
            r.read::<Response>().await.unwrap(),
            Some(Response::Hello { .. })
        ));
        let new = NewSession {
            name: Some("remote1".into()),
            ..Default::default()
        };
        w.send(&Request::New(new)).await.unwrap();
        match r.read::<Response>().await.unwrap() {
            Some(Response::Sessions(v)) => assert_eq!(v[0].name, "remote1"),
            other => panic!("unexpected {other:?}"),
        }
        // The first invocation turns this connection into one to the session host...
        assert_eq!(
            invoke_over(&mut r, &mut w, "x=remote; echo hi").await,
            (b"hi\n".to_vec(), 0)
        );
        // ...which serves the next one directly, with the session's state.
        assert_eq!(
            invoke_over(&mut r, &mut w, "echo $x; (exit 4)").await,
            (b"remote\n".to_vec(), 4)
        );
        drop(w);
        let st = child.wait().await.unwrap();
        assert!(st.success(), "ssh exited with {st}");
    });
    // The target's daemon and the session are still there after ssh went away.
    remote.run(&["daemon", "status"]).success();
    assert_eq!(remote.state_of("remote1").as_deref(), Some("Opened"));
    remote
        .invoke("remote1", "echo $x")
        .success()
        .stdout_is("remote\n");
}
