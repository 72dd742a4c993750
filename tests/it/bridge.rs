//! `tether bridge` over a real sshd: a client speaks the protocol on a channel of the bridge's
//! multiplexed link through `ssh … tether bridge`,
//! creates a session on the target, runs commands in it (the second one on the connection the
//! target's daemon handed to the session host), and the target's daemon outlives the ssh
//! connection.

use crate::common::sshd::Sshd;
use crate::common::*;
use tether_proto::{InvokeSpec, NewSession, PROTOCOL_VERSION, Request, Response, Stream};
use tether_transport::FrameReader;
use tether_transport::mux::{ChannelReader, ChannelWriter, Mux};
use tokio::io::AsyncBufReadExt;

async fn send(w: &mut ChannelWriter, req: &Request) {
    w.send(&tether_proto::encode(req).unwrap()).await.unwrap();
}

async fn invoke_over(
    r: &mut FrameReader<ChannelReader>,
    w: &mut ChannelWriter,
    script: &str,
) -> (Vec<u8>, i32) {
    let spec = InvokeSpec {
        session: "remote1".into(),
        script: script.into(),
        ..Default::default()
    };
    send(w, &Request::Invoke(spec)).await;
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
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("TETHER-MUX "), "no preamble: {line:?}");
        let (mux, _) = Mux::start(out, child.stdin.take().unwrap());
        let (r, mut w) = mux.split(mux.open().unwrap());
        let mut r = FrameReader::new(r);
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            agent: "test".into(),
            client: None,
        };
        send(&mut w, &hello).await;
        assert!(matches!(
            r.read::<Response>().await.unwrap(),
            Some(Response::Hello { .. })
        ));
        let new = NewSession {
            name: Some("remote1".into()),
            ..Default::default()
        };
        send(&mut w, &Request::New(new)).await;
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
        drop((r, w));
        // Ending the link ends the bridge, and with it ssh.
        mux.close();
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
